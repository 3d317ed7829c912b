//! Where copies of artifacts go: a local directory, an SSH host or an
//! S3-compatible bucket (see `pgb-ship(1)`).
//!
//! A destination is a root; artifacts keep their repository-relative path
//! beneath it (`DEST/<artifact.path>`), with the sidecar beside them. All
//! `rel` arguments are paths relative to that root, `/`-separated, without
//! `..` components.
//!
//! The same roots hold WAL archives (`pgb-wal --archive`,
//! `pgb-check-archive`): [`Destination::list`], [`Destination::open_read`],
//! [`Destination::put_file`] (durable, never a partial object under the
//! final name, never replacing a different one) and
//! [`Destination::remove`] are the storage layer every kind implements;
//! [`Destination::remove_many`], [`Destination::read_heads`] and
//! [`Destination::read_each`] do the same for many files at once, in one
//! session on an SSH host.
//!
//! Spec syntax for `--to`: `DEST[#LABELS]` where DEST is a directory,
//! `ssh://[user@]host[:port]/path` or `s3://bucket[/prefix]`, and LABELS is
//! `key=value[,key=value...]` with keys `media` and `site`. For the form
//! shown in pgb(7), a trailing `:media=...,site=...` is accepted too when
//! everything after the last `:` is such a label list.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, IoContext, Result};

mod dir;
mod s3;
mod ssh;

/// Labels carried by a destination: what kind of storage (`media`) and where
/// it is (`site`; `offsite` counts for the 3-2-1 rule).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    pub media: Option<String>,
    pub site: Option<String>,
}

impl Labels {
    /// Parses `media=nas,site=offsite`.
    pub fn parse(s: &str) -> Result<Labels> {
        let mut l = Labels::default();
        for part in s.split(',') {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                Error::Usage(format!(
                    "label {part:?}: expected key=value (keys: media, site)"
                ))
            })?;
            if v.is_empty() || v.contains(['/', ':', '#', ',']) {
                return Err(Error::Usage(format!("label {part:?}: bad value")));
            }
            match k {
                "media" => l.media = Some(v.to_string()),
                "site" => l.site = Some(v.to_string()),
                _ => {
                    return Err(Error::Usage(format!(
                        "label {part:?}: unknown key {k:?} (keys: media, site)"
                    )))
                }
            }
        }
        Ok(l)
    }

    fn looks_like_labels(s: &str) -> bool {
        !s.is_empty()
            && s.split(',').all(|p| {
                p.split_once('=').is_some_and(|(k, v)| {
                    (k == "media" || k == "site") && !v.is_empty() && !v.contains(['/', ':', '#'])
                })
            })
    }
}

/// An SSH destination: reached through the system `ssh` with
/// `BatchMode=yes`. Extra client arguments come from `PGB_SSH_OPTIONS`
/// (whitespace-separated `ssh` arguments, e.g. `-i KEY -o
/// UserKnownHostsFile=FILE`) and [`Destination::add_ssh_options`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    /// Absolute path of the root on the remote host.
    pub path: String,
    /// Extra arguments for `ssh` placed before the host.
    pub args: Vec<String>,
}

/// An S3 destination: bucket and key prefix (no leading or trailing `/`).
/// Endpoint, region and credentials come from `AWS_ENDPOINT_URL`,
/// `AWS_REGION` (or `AWS_DEFAULT_REGION`), `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`), or the overrides set
/// with [`Destination::set_s3_endpoint`] / [`Destination::set_s3_region`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Target {
    pub bucket: String,
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A local directory (absolute).
    Dir(PathBuf),
    Ssh(SshTarget),
    S3(S3Target),
}

/// How a directory copy is read back before it counts (`pgb-ship
/// --verify`). SSH hosts and S3 buckets have their own ways and ignore it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Readback {
    /// The source is hashed as it is copied (sha256, compared with the
    /// record); each range of the copy, once written, is read back through
    /// the page cache (the last after fsync) and the blake3 of the whole
    /// compared with the record: the bytes the kernel accepted and fsynced
    /// are the recorded ones. Recorded as `readback`.
    #[default]
    Cache,
    /// The copy is read back from the device, bypassing the page cache
    /// (O_DIRECT, or its pages dropped first), sha256 and blake3 compared:
    /// also proves the device returned the bytes. Recorded as
    /// `readback-disk`.
    Disk,
}

impl Readback {
    /// The `copies[].verified` value for this method.
    pub fn label(self) -> &'static str {
        match self {
            Readback::Cache => "readback",
            Readback::Disk => "readback-disk",
        }
    }
}

/// What [`Destination::put_file`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// True when identical bytes were already there (nothing copied).
    pub existed: bool,
    /// How the copy was checked: `readback`, `readback-disk` or
    /// `server-checksum`.
    pub verified: &'static str,
}

/// An object or file found by [`Destination::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The name inside the listed directory.
    pub name: String,
    pub size: u64,
    pub modified: Option<std::time::SystemTime>,
}

/// One file as [`Destination::read_heads`] found it: its size and first
/// bytes, `None` when it is not there.
pub type Head = Option<(u64, Vec<u8>)>;

/// What [`Destination::create_beside`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The file and the one beside it are in place, durable and checked.
    Published,
    /// This name (one of the guards, or the file itself, created meanwhile)
    /// exists: nothing was published; compare it.
    Exists(String),
}

/// What [`Destination::open_first`] found.
pub struct Opened {
    /// Which candidate.
    pub rel: String,
    pub size: u64,
    /// The file beside it (its first 64 KiB), when present.
    pub side: Option<Vec<u8>>,
    /// Its bytes.
    pub reader: Box<dyn Read + Send>,
}

/// Checks a relative path: non-empty, no absolute or `..` parts.
pub fn check_rel(rel: &str) -> Result<()> {
    if rel.is_empty()
        || rel.starts_with('/')
        || rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(Error::msg(format!(
            "{rel:?}: not a plain relative path (no leading /, no . or .. parts)"
        )));
    }
    Ok(())
}

/// Names sent to a host one a line must hold no newline (nor NUL).
fn check_line(rel: &str) -> Result<()> {
    if rel.contains(['\n', '\r', '\0']) {
        return Err(Error::msg(format!("{rel:?}: a name with a line break")));
    }
    Ok(())
}

/// The destination-relative path of one file of an artifact: `path` itself
/// for single-file artifacts, `path/name` for directories (physical).
pub fn file_rel(artifact: &crate::record::Artifact, file: &crate::record::FileEntry) -> String {
    if artifact.kind == crate::record::Kind::Physical {
        format!("{}/{}", artifact.path, file.name)
    } else {
        artifact.path.clone()
    }
}

impl Destination {
    /// Parses a `--to` spec into the destination and its labels.
    pub fn parse(spec: &str) -> Result<(Destination, Labels)> {
        let (dest, labels) = split_labels(spec)?;
        Ok((Destination::parse_url(dest)?, labels))
    }

    /// Parses a destination without labels (a directory, `ssh://...`,
    /// `s3://...`). Relative directories are made absolute.
    pub fn parse_url(dest: &str) -> Result<Destination> {
        if dest.is_empty() {
            return Err(Error::Usage("empty destination".into()));
        }
        if let Some(rest) = dest.strip_prefix("ssh://") {
            return parse_ssh(dest, rest).map(Destination::Ssh);
        }
        if let Some(rest) = dest.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::Usage(format!("{dest}: no bucket name")));
            }
            let prefix = prefix.trim_matches('/').to_string();
            if !prefix.is_empty() {
                check_rel(&prefix).map_err(|_| Error::Usage(format!("{dest}: bad key prefix")))?;
            }
            return Ok(Destination::S3(S3Target {
                bucket: bucket.to_string(),
                prefix,
                endpoint: None,
                region: None,
            }));
        }
        if let Some((scheme, _)) = dest.split_once("://") {
            return Err(Error::Usage(format!(
                "{dest}: unknown scheme {scheme:?} (a directory, ssh:// or s3://)"
            )));
        }
        let p = Path::new(dest);
        let abs = if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir()
                .ctx("current directory", ".")?
                .join(p)
        };
        Ok(Destination::Dir(abs))
    }

    /// The destination root of a `copies` entry: its `to` (the root, as
    /// recorded by pgb-ship). `rel` arguments are then the artifact's `path`
    /// (or `path/name` for a physical artifact's files, see [`file_rel`]).
    pub fn from_copy(copy: &Value) -> Result<Destination> {
        let to = copy
            .get("to")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::msg(format!("copies entry without \"to\": {copy}")))?;
        let mut d = Destination::parse_url(to)?;
        if let Destination::S3(s) = &mut d {
            if let Some(e) = copy.get("endpoint").and_then(Value::as_str) {
                s.endpoint = Some(e.to_string());
            }
            if let Some(r) = copy.get("region").and_then(Value::as_str) {
                s.region = Some(r.to_string());
            }
        }
        Ok(d)
    }

    /// Adds `ssh` client arguments (`-o Option=value` pairs, `-i FILE`).
    pub fn add_ssh_options(&mut self, args: &[String]) {
        if let Destination::Ssh(s) = self {
            s.args.extend(args.iter().cloned());
        }
    }

    /// Overrides the S3 endpoint (`AWS_ENDPOINT_URL`).
    pub fn set_s3_endpoint(&mut self, endpoint: Option<&str>) {
        if let (Destination::S3(s), Some(e)) = (self, endpoint) {
            s.endpoint = Some(e.to_string());
        }
    }

    /// Overrides the S3 region (`AWS_REGION`).
    pub fn set_s3_region(&mut self, region: Option<&str>) {
        if let (Destination::S3(s), Some(r)) = (self, region) {
            s.region = Some(r.to_string());
        }
    }

    /// The destination root as a string (what `to` records): an absolute
    /// directory, `ssh://user@host:port/path` or `s3://bucket/prefix`.
    pub fn root_url(&self) -> String {
        match self {
            Destination::Dir(p) => p.display().to_string(),
            Destination::Ssh(s) => ssh_url(s, &s.path),
            Destination::S3(s) => {
                if s.prefix.is_empty() {
                    format!("s3://{}", s.bucket)
                } else {
                    format!("s3://{}/{}", s.bucket, s.prefix)
                }
            }
        }
    }

    /// Where `rel` is at this destination, as a URL or absolute path.
    pub fn url_of(&self, rel: &str) -> String {
        match self {
            Destination::Dir(p) => p.join(rel).display().to_string(),
            Destination::Ssh(s) => ssh_url(s, &join_remote(&s.path, rel)),
            Destination::S3(s) => format!("s3://{}/{}", s.bucket, s3_key(s, rel)),
        }
    }

    /// Default media label when none is given: `local` for a directory (the
    /// same as the original's default, so a second local disk only counts as
    /// another medium when labelled), `ssh` for an SSH host, `object-storage`
    /// for S3.
    pub fn default_media(&self) -> &'static str {
        match self {
            Destination::Dir(_) => "local",
            Destination::Ssh(_) => "ssh",
            Destination::S3(_) => "object-storage",
        }
    }

    /// Opens `rel` for reading.
    pub fn open_read(&self, rel: &str) -> Result<Box<dyn Read + Send>> {
        check_rel(rel)?;
        match self {
            Destination::Dir(root) => {
                let p = root.join(rel);
                Ok(Box::new(std::fs::File::open(&p).ctx("open", &p)?))
            }
            Destination::Ssh(s) => ssh::open_read(s, rel),
            Destination::S3(s) => s3::open_read(s, rel),
        }
    }

    /// True for an SSH host or an S3 bucket.
    pub fn is_remote(&self) -> bool {
        !matches!(self, Destination::Dir(_))
    }

    /// The regular files (objects) directly in the directory `dir` (`""`:
    /// the root) whose names start with `start`, in no particular order.
    /// A directory or SSH root that does not exist is an error (an
    /// unmounted disk is not an empty archive); an S3 prefix is never
    /// missing, only empty.
    pub fn list(&self, dir: &str, start: &str) -> Result<Vec<Listed>> {
        if !dir.is_empty() {
            check_rel(dir)?;
        }
        match self {
            Destination::Dir(root) => {
                let d = if dir.is_empty() {
                    root.clone()
                } else {
                    root.join(dir)
                };
                let mut out = Vec::new();
                for e in std::fs::read_dir(&d).ctx("list", &d)? {
                    let e = e.ctx("list", &d)?;
                    let Ok(name) = e.file_name().into_string() else {
                        continue;
                    };
                    if !name.starts_with(start) {
                        continue;
                    }
                    let m = match std::fs::metadata(e.path()) {
                        Ok(m) => m,
                        Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                        Err(err) => return Err(Error::io("stat", e.path(), err)),
                    };
                    if m.is_file() {
                        out.push(Listed {
                            name,
                            size: m.len(),
                            modified: m.modified().ok(),
                        });
                    }
                }
                Ok(out)
            }
            Destination::Ssh(s) => ssh::list(s, dir, start),
            Destination::S3(s) => s3::list(s, dir, start),
        }
    }

    /// The whole of a small file (at most `max` bytes are read), or `None`
    /// when it does not exist.
    pub fn read_small(&self, rel: &str, max: u64) -> Result<Option<Vec<u8>>> {
        check_rel(rel)?;
        if let Destination::Dir(root) = self {
            let p = root.join(rel);
            return match std::fs::File::open(&p) {
                Ok(f) => {
                    let mut v = Vec::new();
                    f.take(max).read_to_end(&mut v).ctx("read", &p)?;
                    Ok(Some(v))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::io("read", &p, e)),
            };
        }
        match self {
            Destination::Dir(_) => unreachable!("handled above"),
            Destination::Ssh(s) => ssh::read_small(s, rel, max),
            Destination::S3(s) => s3::read_small(s, rel, max),
        }
    }

    /// Size of `rel` when it exists.
    pub fn size_of(&self, rel: &str) -> Result<Option<u64>> {
        check_rel(rel)?;
        match self {
            Destination::Dir(root) => {
                let p = root.join(rel);
                match std::fs::metadata(&p) {
                    Ok(m) => Ok(Some(m.len())),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(Error::io("stat", &p, e)),
                }
            }
            Destination::Ssh(s) => ssh::size_of(s, rel),
            Destination::S3(s) => s3::size_of(s, rel),
        }
    }

    /// Removes `rel` (a file or object, or a directory with what it holds);
    /// removing what is absent is Ok. See [`Destination::remove_many`].
    pub fn remove(&self, rel: &str) -> Result<()> {
        self.remove_many(&[rel])
    }

    /// Removes each of `rels`, in order (a checksum file listed after its
    /// WAL file goes after it): a file, a symlink (the link, never what it
    /// points to) or a directory with what it holds (never descending into
    /// a symlink inside). What is absent is fine. A path through a symlink
    /// or a non-directory below the root is refused: an error, and nothing
    /// from that path on is removed. On an SSH host it all happens in one
    /// session, the names sent on its input; in S3 on one connection.
    pub fn remove_many(&self, rels: &[&str]) -> Result<()> {
        for r in rels {
            check_rel(r)?;
            check_line(r)?;
        }
        if rels.is_empty() {
            return Ok(());
        }
        match self {
            Destination::Dir(root) => {
                let mut parents: Vec<PathBuf> = Vec::new();
                for rel in rels {
                    let p = root.join(rel);
                    let mut at = root.clone();
                    let mut gone = false;
                    let comps: Vec<&str> = rel.split('/').collect();
                    for c in &comps[..comps.len() - 1] {
                        at.push(c);
                        match std::fs::symlink_metadata(&at) {
                            Ok(m) if m.file_type().is_symlink() => {
                                return Err(Error::msg(format!(
                                    "refused: {} is a symlink: refusing a path through it",
                                    at.display()
                                )))
                            }
                            Ok(m) if m.is_dir() => {}
                            Ok(_) => {
                                return Err(Error::msg(format!(
                                    "refused: {} is not a directory",
                                    at.display()
                                )))
                            }
                            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                                gone = true;
                                break;
                            }
                            Err(e) => return Err(Error::io("stat", &at, e)),
                        }
                    }
                    if gone {
                        continue;
                    }
                    let r = match std::fs::symlink_metadata(&p) {
                        Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p),
                        Ok(_) => std::fs::remove_file(&p),
                        Err(e) => Err(e),
                    };
                    match r {
                        Ok(()) => {
                            let parent = p.parent().unwrap_or(root).to_path_buf();
                            if !parents.contains(&parent) {
                                parents.push(parent);
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(Error::io("remove", &p, e)),
                    }
                }
                // Each directory that held what was removed (unless it
                // went too).
                for d in parents {
                    if d.is_dir() {
                        crate::fs::fsync_dir(&d)?;
                    }
                }
                Ok(())
            }
            Destination::Ssh(s) => ssh::remove_many(s, rels),
            Destination::S3(s) => s3::remove_many(s, rels),
        }
    }

    /// The size and first bytes of each `(rel, max)`: `None` for one that
    /// is not there (or not a regular file), otherwise its size and its
    /// first `max` bytes, in the order asked. On an SSH host one session
    /// answers for all (the names on its input; `head -c` and `base64` on
    /// the host); elsewhere a listing per directory and reads.
    pub fn read_heads(&self, items: &[(&str, u64)]) -> Result<Vec<Head>> {
        for (r, _) in items {
            check_rel(r)?;
            check_line(r)?;
        }
        if items.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Destination::Ssh(s) => ssh::read_heads(s, items),
            _ => items
                .iter()
                .map(|(rel, max)| {
                    let Some(size) = self.size_of(rel)? else {
                        return Ok(None);
                    };
                    Ok(self.read_small(rel, *max)?.map(|b| (size, b)))
                })
                .collect(),
        }
    }

    /// Reads each of `rels` whole, in one go: `f` is called with each
    /// file's name, size and bytes as they arrive (what it leaves unread is
    /// skipped). The answer, in the order asked, is what `f` returned, or
    /// why that file could not be read (removed since it was listed, not a
    /// regular file, changed while being read: then whatever `f` made of
    /// it is dropped). An error when the storage could not be read at all.
    /// On an SSH host it is one session: `tar` on the host (GNU tar or
    /// bsdtar) sends the files as one stream, their names on its input.
    pub fn read_each<T>(
        &self,
        rels: &[&str],
        mut f: impl FnMut(&str, u64, &mut dyn Read) -> T,
    ) -> Result<Vec<std::result::Result<T, String>>> {
        for r in rels {
            check_rel(r)?;
            check_line(r)?;
        }
        if rels.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Destination::Ssh(s) => ssh::read_each(s, rels, &mut f),
            Destination::Dir(root) => Ok(rels
                .iter()
                .map(|rel| {
                    let p = root.join(rel);
                    let mut file =
                        std::fs::File::open(&p).map_err(|e| crate::error::io_cause(&e))?;
                    let md = file.metadata().map_err(|e| crate::error::io_cause(&e))?;
                    if !md.is_file() {
                        return Err("not a regular file".to_string());
                    }
                    Ok(f(rel, md.len(), &mut file))
                })
                .collect()),
            Destination::S3(_) => rels
                .iter()
                .map(|rel| {
                    let Some(size) = self.size_of(rel)? else {
                        return Ok(Err("No such file or directory".to_string()));
                    };
                    let mut r = self.open_read(rel)?;
                    Ok(Ok(f(rel, size, &mut r)))
                })
                .collect(),
        }
    }

    /// Copies the local file `src` to `rel` atomically (temp name then
    /// rename; a multipart upload completed only when whole) and verifies the
    /// copy before returning (see [`Destination::verify`] for how). Never
    /// replaces a different file: when `rel` exists with the expected size and
    /// sha256 the result says `existed`, otherwise an error that keeps the
    /// existing file. `progress` is called with byte counts as they go out.
    /// `readback` chooses how a directory copy is read back.
    pub fn put_file(
        &self,
        src: &Path,
        rel: &str,
        expect: &crate::digest::Digests,
        progress: &(dyn Fn(u64) + Sync),
        readback: Readback,
    ) -> Result<Copied> {
        check_rel(rel)?;
        match self {
            Destination::Dir(root) => dir::put_file(root, src, rel, expect, progress, readback),
            Destination::Ssh(s) => ssh::put_file(s, src, rel, expect, progress),
            Destination::S3(s) => s3::put_file(s, src, rel, expect, progress),
        }
    }

    /// Creates `rel` from the local file `src` as [`Destination::put_file`]
    /// does, after writing `side` (replacing it) with `side_bytes`, unless
    /// one of `guard` (names relative to the root, `rel` among them)
    /// exists: then nothing is written and the name is returned. On an SSH
    /// host it all happens in one session (one connection per file instead
    /// of five); elsewhere it is a listing, a write and a copy. Used for WAL
    /// files and their checksum files.
    pub fn create_beside(
        &self,
        src: &Path,
        rel: &str,
        expect: &crate::digest::Digests,
        guard: &[&str],
        side: &str,
        side_bytes: &[u8],
    ) -> Result<Created> {
        check_rel(rel)?;
        check_rel(side)?;
        for g in guard {
            check_rel(g)?;
        }
        if let Destination::Ssh(s) = self {
            return ssh::create_beside(s, src, rel, expect, guard, side, side_bytes);
        }
        for g in guard {
            if self.size_of(g)?.is_some() {
                return Ok(Created::Exists(g.to_string()));
            }
        }
        self.put_bytes_replace(side_bytes, side)?;
        let c = self.put_file(src, rel, expect, &|_| {}, Readback::Cache)?;
        Ok(if c.existed {
            Created::Exists(rel.to_string())
        } else {
            Created::Published
        })
    }

    /// Opens the first of `candidates` (names directly in the root) that
    /// exists, with the small file `side` read beside it: a WAL file and its
    /// checksum file. `None` when the archive answered that none is there;
    /// an error when it could not answer. On an SSH host one session does
    /// it all; elsewhere a listing and reads.
    pub fn open_first(&self, candidates: &[&str], side: &str) -> Result<Option<Opened>> {
        for c in candidates {
            check_rel(c)?;
        }
        check_rel(side)?;
        if let Destination::Ssh(s) = self {
            return ssh::open_first(s, candidates, side);
        }
        // Listed by their common prefix: the WAL file's name.
        let mut prefix = side.to_string();
        for c in candidates {
            let n = prefix
                .chars()
                .zip(c.chars())
                .take_while(|(a, b)| a == b)
                .count();
            prefix = prefix.chars().take(n).collect();
        }
        let (dir, start) = match prefix.rsplit_once('/') {
            Some((d, s)) => (d.to_string(), s.to_string()),
            None => (String::new(), prefix),
        };
        if !dir.is_empty() {
            return Err(Error::msg("open_first: names directly in the root only"));
        }
        let listed = self.list("", &start)?;
        let Some((c, size)) = candidates.iter().find_map(|c| {
            listed
                .iter()
                .find(|l| l.name == *c)
                .map(|l| (c.to_string(), l.size))
        }) else {
            return Ok(None);
        };
        let side = if listed.iter().any(|l| l.name == side) {
            self.read_small(side, 65536)?
        } else {
            None
        };
        Ok(Some(Opened {
            reader: self.open_read(&c)?,
            rel: c,
            size,
            side,
        }))
    }

    /// The first `max` bytes of every file directly in the root whose name
    /// ends in `suffix` (checksum files), by name: on an SSH host in one
    /// session, elsewhere a listing and reads.
    pub fn read_suffix(
        &self,
        suffix: &str,
        max: u64,
    ) -> Result<std::collections::HashMap<String, Vec<u8>>> {
        if let Destination::Ssh(s) = self {
            return ssh::read_suffix(s, suffix, max);
        }
        let mut m = std::collections::HashMap::new();
        for l in self.list("", "")? {
            if l.name.ends_with(suffix) && !l.name.starts_with('.') {
                if let Some(b) = self.read_small(&l.name, max)? {
                    m.insert(l.name, b);
                }
            }
        }
        Ok(m)
    }

    /// Every file below the directory `dir` (`""`: the root), recursively,
    /// whose name ends in `suffix`, with hidden names (temp files, locks)
    /// and hidden directories skipped: its path relative to the root and
    /// its first `max` bytes, sorted by path. How a remote repository's
    /// sidecars are read: one session on an SSH host, a listing and reads
    /// on one connection in S3. A directory that is not there is an error.
    pub fn read_tree(&self, dir: &str, suffix: &str, max: u64) -> Result<Vec<(String, Vec<u8>)>> {
        if !dir.is_empty() {
            check_rel(dir)?;
        }
        let mut v = match self {
            Destination::Dir(root) => {
                let base = if dir.is_empty() {
                    root.clone()
                } else {
                    root.join(dir)
                };
                let mut v = Vec::new();
                for p in crate::fs::files_below(&base, suffix)? {
                    let rel = p
                        .strip_prefix(root)
                        .map(|r| r.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    if let Some(b) = self.read_small(&rel, max)? {
                        v.push((rel, b));
                    }
                }
                v
            }
            Destination::Ssh(s) => ssh::read_tree(s, dir, suffix, max)?,
            Destination::S3(s) => s3::read_tree(s, dir, suffix, max)?,
        };
        v.sort();
        Ok(v)
    }

    /// Creates `rel` holding `bytes` only when nothing is there: `true` when
    /// created, `false` when something already was (it is left as it is).
    /// Atomic against a concurrent creator: `O_EXCL` in a directory, the
    /// shell's noclobber (`set -C`, an `O_EXCL` open) on an SSH host, a PUT
    /// with `If-None-Match: *` in S3. How the remote repository lock is taken.
    pub fn create_new(&self, bytes: &[u8], rel: &str) -> Result<bool> {
        check_rel(rel)?;
        match self {
            Destination::Dir(root) => {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let p = root.join(rel);
                let mut f = match std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&p)
                {
                    Ok(f) => f,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
                    Err(e) => return Err(Error::io("create", &p, e)),
                };
                f.write_all(bytes).ctx("write", &p)?;
                f.sync_all().ctx("fsync", &p)?;
                crate::fs::fsync_dir(p.parent().unwrap_or(root))?;
                Ok(true)
            }
            Destination::Ssh(s) => ssh::create_new(s, bytes, rel),
            Destination::S3(s) => s3::create_new(s, bytes, rel),
        }
    }

    /// Writes `bytes` to `rel` atomically, replacing what is there (sidecars).
    pub fn put_bytes_replace(&self, bytes: &[u8], rel: &str) -> Result<()> {
        check_rel(rel)?;
        match self {
            Destination::Dir(root) => {
                let p = root.join(rel);
                crate::fs::create_dir_all_durable(p.parent().unwrap_or(root))?;
                crate::fs::write_atomic(&p, bytes, true)
            }
            Destination::Ssh(s) => ssh::put_bytes_replace(s, bytes, rel),
            Destination::S3(s) => s3::put_bytes_replace(s, bytes, rel),
        }
    }

    /// Checks the copy of `rel` against `expect`, by the honest way each
    /// destination allows: a directory re-reads the file (through the page
    /// cache, or with [`Readback::Disk`] after dropping it from the cache,
    /// so the bytes come from the disk), an SSH host runs `sha256sum` on the
    /// file, S3 reads the object back. Returns the method recorded in
    /// `copies[].verified`.
    pub fn verify(
        &self,
        rel: &str,
        expect: &crate::digest::Digests,
        readback: Readback,
    ) -> Result<&'static str> {
        check_rel(rel)?;
        match self {
            Destination::Dir(root) => dir::verify(root, rel, expect, readback),
            Destination::Ssh(s) => ssh::verify(s, rel, expect),
            Destination::S3(s) => s3::verify(s, rel, expect),
        }
    }
}

/// Compares what was found with what was expected; the error names `url`.
pub(crate) fn check_digests(
    url: &str,
    got: &crate::digest::Digests,
    expect: &crate::digest::Digests,
    sha_only: bool,
) -> Result<()> {
    if got.size != expect.size {
        return Err(Error::msg(format!(
            "verify: {url}: size {} where {} was copied",
            got.size, expect.size
        )));
    }
    if got.sha256 != expect.sha256 {
        return Err(Error::msg(format!(
            "verify: {url}: sha256 {} where {} was copied",
            got.sha256, expect.sha256
        )));
    }
    if !sha_only && got.blake3 != expect.blake3 {
        return Err(Error::msg(format!(
            "verify: {url}: blake3 {} where {} was copied",
            got.blake3, expect.blake3
        )));
    }
    Ok(())
}

pub fn split_labels(spec: &str) -> Result<(&str, Labels)> {
    if let Some((d, l)) = spec.rsplit_once('#') {
        return Ok((d, Labels::parse(l)?));
    }
    if let Some((d, l)) = spec.rsplit_once(':') {
        if Labels::looks_like_labels(l) {
            return Ok((d, Labels::parse(l)?));
        }
    }
    Ok((spec, Labels::default()))
}

fn parse_ssh(dest: &str, rest: &str) -> Result<SshTarget> {
    let bad = |why: &str| Error::Usage(format!("{dest}: {why} (ssh://[user@]host[:port]/path)"));
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => return Err(bad("no path")),
    };
    let (user, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u.to_string()), h),
        None => (None, authority),
    };
    if user
        .as_deref()
        .is_some_and(|u| u.is_empty() || u.contains(':'))
    {
        return Err(bad("bad user (passwords are not accepted; use keys)"));
    }
    let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
        let (h, after) = h.split_once(']').ok_or_else(|| bad("bad host"))?;
        match after.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if after.is_empty() => (h, None),
            None => return Err(bad("bad host")),
        }
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() || host.starts_with('-') {
        return Err(bad("bad host"));
    }
    let port = match port {
        Some(p) => Some(p.parse::<u16>().map_err(|_| bad("bad port"))?),
        None => None,
    };
    let path = path.trim_end_matches('/');
    let path = if path.is_empty() { "/" } else { path };
    if path.split('/').any(|c| c == "..") {
        return Err(bad("path with .."));
    }
    let args = std::env::var("PGB_SSH_OPTIONS")
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    Ok(SshTarget {
        user,
        host: host.to_string(),
        port,
        path: path.to_string(),
        args,
    })
}

fn ssh_url(s: &SshTarget, path: &str) -> String {
    let mut u = String::from("ssh://");
    if let Some(user) = &s.user {
        u.push_str(user);
        u.push('@');
    }
    if s.host.contains(':') {
        u.push_str(&format!("[{}]", s.host));
    } else {
        u.push_str(&s.host);
    }
    if let Some(p) = s.port {
        u.push_str(&format!(":{p}"));
    }
    u.push_str(path);
    u
}

pub(crate) fn join_remote(root: &str, rel: &str) -> String {
    if root.ends_with('/') {
        format!("{root}{rel}")
    } else {
        format!("{root}/{rel}")
    }
}

pub(crate) fn s3_key(s: &S3Target, rel: &str) -> String {
    if s.prefix.is_empty() {
        rel.to_string()
    } else {
        format!("{}/{}", s.prefix, rel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_and_labels() {
        let (d, l) = Destination::parse("/mnt/nas/pg#media=nas,site=offsite").unwrap();
        assert_eq!(d, Destination::Dir("/mnt/nas/pg".into()));
        assert_eq!(l.media.as_deref(), Some("nas"));
        assert_eq!(l.site.as_deref(), Some("offsite"));
        let (d, l) = Destination::parse("/mnt/nas/pg:media=nas").unwrap();
        assert_eq!(d, Destination::Dir("/mnt/nas/pg".into()));
        assert_eq!(l.media.as_deref(), Some("nas"));
        let (d, l) = Destination::parse("ssh://bk@host:2222/srv/pg:site=offsite").unwrap();
        let Destination::Ssh(s) = &d else { panic!() };
        assert_eq!(
            (s.user.as_deref(), s.host.as_str(), s.port, s.path.as_str()),
            (Some("bk"), "host", Some(2222), "/srv/pg")
        );
        assert_eq!(l.site.as_deref(), Some("offsite"));
        assert_eq!(d.root_url(), "ssh://bk@host:2222/srv/pg");
        assert_eq!(d.url_of("a/b"), "ssh://bk@host:2222/srv/pg/a/b");
        let (d, l) = Destination::parse("ssh://host:22/x").unwrap();
        assert_eq!(l, Labels::default());
        assert_eq!(d.root_url(), "ssh://host:22/x");
        let (d, _) = Destination::parse("s3://bk/pg/prod/#media=s3").unwrap();
        assert_eq!(d.root_url(), "s3://bk/pg/prod");
        assert_eq!(d.url_of("c/x.dump"), "s3://bk/pg/prod/c/x.dump");
        assert!(Destination::parse("/x#color=red").is_err());
        assert!(Destination::parse("ftp://x/y").is_err());
        assert!(Destination::parse("ssh://host").is_err());
        assert!(Destination::parse("ssh://u:pw@host/x").is_err());
        let (d, _) = Destination::parse("/odd:name").unwrap();
        assert_eq!(d, Destination::Dir("/odd:name".into()));
    }

    #[test]
    fn from_copy_uses_the_root() {
        let c = serde_json::json!({"to": "s3://b/p", "url": "s3://b/p/x"});
        assert_eq!(Destination::from_copy(&c).unwrap().root_url(), "s3://b/p");
    }

    #[test]
    fn directory_copies_are_verified_idempotent_and_never_overwrite() {
        let src_dir = tempfile::tempdir().unwrap();
        let dest_dir = tempfile::tempdir().unwrap();
        let src = src_dir.path().join("x.dump");
        let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&src, &bytes).unwrap();
        let expect = crate::digest::hash_reader(&bytes[..]).unwrap();
        let d = Destination::Dir(dest_dir.path().to_path_buf());
        let sent = std::sync::atomic::AtomicU64::new(0);
        let count = |n| {
            sent.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        };
        let c = d
            .put_file(&src, "c/x.dump", &expect, &count, Readback::Cache)
            .unwrap();
        assert_eq!((c.existed, c.verified), (false, "readback"));
        assert_eq!(sent.into_inner(), bytes.len() as u64);
        assert_eq!(
            std::fs::read(dest_dir.path().join("c/x.dump")).unwrap(),
            bytes
        );
        let again = d
            .put_file(&src, "c/x.dump", &expect, &|_| {}, Readback::Cache)
            .unwrap();
        assert!(again.existed);
        assert_eq!(
            d.verify("c/x.dump", &expect, Readback::Cache).unwrap(),
            "readback"
        );
        assert_eq!(
            d.verify("c/x.dump", &expect, Readback::Disk).unwrap(),
            "readback-disk"
        );
        // The disk read-back copies too, and says so.
        let c = d
            .put_file(&src, "c/z.dump", &expect, &|_| {}, Readback::Disk)
            .unwrap();
        assert_eq!((c.existed, c.verified), (false, "readback-disk"));
        assert_eq!(
            std::fs::read(dest_dir.path().join("c/z.dump")).unwrap(),
            bytes
        );
        d.remove("c/z.dump").unwrap();
        // A source of the right size whose bytes differ from the record is
        // caught by the source pass and not published.
        let mut damaged = bytes.clone();
        damaged[1_234_567] ^= 1;
        let bad_src = src_dir.path().join("damaged.dump");
        std::fs::write(&bad_src, &damaged).unwrap();
        let e = d
            .put_file(&bad_src, "c/d.dump", &expect, &|_| {}, Readback::Cache)
            .unwrap_err();
        assert!(
            e.to_string().contains("the source changed or is damaged"),
            "{e}"
        );
        assert!(!dest_dir.path().join("c/d.dump").exists());
        std::fs::write(&src, b"other").unwrap();
        let other = crate::digest::hash_reader(&b"other"[..]).unwrap();
        let e = d
            .put_file(&src, "c/x.dump", &other, &|_| {}, Readback::Cache)
            .unwrap_err();
        assert!(
            e.to_string().contains("exists with different content"),
            "{e}"
        );
        let mut kept = Vec::new();
        d.open_read("c/x.dump")
            .unwrap()
            .read_to_end(&mut kept)
            .unwrap();
        assert_eq!(kept, bytes, "the existing copy is kept");
        assert_eq!(d.size_of("c/x.dump").unwrap(), Some(bytes.len() as u64));
        // A source that no longer matches the record is not published.
        for mode in [Readback::Cache, Readback::Disk] {
            let e = d
                .put_file(&src, "c/y.dump", &expect, &|_| {}, mode)
                .unwrap_err();
            assert!(e.to_string().contains("the source changed"), "{e}");
            assert!(!dest_dir.path().join("c/y.dump").exists());
        }
        d.remove("c/x.dump").unwrap();
        d.remove("c/x.dump").unwrap();
        assert_eq!(d.size_of("c/x.dump").unwrap(), None);
        assert_eq!(
            std::fs::read_dir(dest_dir.path().join("c"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn rel_paths_stay_inside() {
        assert!(check_rel("a/b").is_ok());
        for bad in ["", "/a", "a/../b", "..", "a//b", "./a"] {
            assert!(check_rel(bad).is_err(), "{bad}");
        }
    }
}
