//! Streams a tar (plain, zstd, age-encrypted) into a directory: modes
//! 0700/0600 (0750/0640 where the archive carries group access), owned by
//! the given user, every regular file hashed (SHA256) on the way so a
//! manifest can be checked without reading the files again. Absolute
//! paths, `..`, links escaping the target, hard links, devices and FIFOs
//! are refused; nothing is ever written through a symlink.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::crypt::{self, Identities};
use crate::digest::{verifying, Expected, Verification};
use crate::error::{Error, IoContext, Result};

/// Who will own what is unpacked (`None`: the running user).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    /// The user owning an existing path, with that user's primary group
    /// (the path's group when the user is unknown).
    pub fn of(path: &Path) -> Result<Owner> {
        use std::os::unix::fs::MetadataExt;
        let md = fs::metadata(path).ctx("stat", path)?;
        let gid = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(md.uid()))
            .ok()
            .flatten()
            .map(|u| u.gid.as_raw())
            .unwrap_or(md.gid());
        Ok(Owner { uid: md.uid(), gid })
    }

    /// A user by name, with its primary group.
    pub fn named(name: &str) -> Result<Owner> {
        let u = nix::unistd::User::from_name(name)
            .map_err(|e| Error::msg(format!("look up user {name}: {e}")))?
            .ok_or_else(|| Error::Usage(format!("no user named {name:?}")))?;
        Ok(Owner {
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
        })
    }

    /// Applies to `path` without following a symlink.
    pub fn apply(self, path: &Path) -> Result<()> {
        std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid)).ctx("chown", path)
    }
}

/// One regular file written: its path relative to the target, size and
/// SHA256 (hex).
#[derive(Debug, Clone)]
pub struct Written {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Default)]
pub struct Unpacked {
    pub files: Vec<Written>,
    pub dirs: u64,
    pub bytes: u64,
    /// A directory in the archive carried group permissions.
    pub group_access: bool,
}

/// Opens one stored file as plaintext: `.age` decrypted with `ids`, `.zst`
/// decompressed. Returns the reader and the name without those suffixes.
/// Nothing checks the stored bytes; restores use [`open_verified`].
pub fn open_stored(path: &Path, ids: Option<&Identities>) -> Result<(Box<dyn Read>, String)> {
    let f = BufReader::with_capacity(1 << 16, crate::store::open(path)?);
    let (r, name) = decode_stored(Box::new(f), path, ids)?;
    Ok((r, name))
}

/// A stored file being read back, and the check of its bytes against the
/// record.
pub struct OpenedVerified {
    /// The plaintext (decrypted, decompressed); fails at the end of the
    /// stored file when its bytes differ from the record.
    pub reader: Box<dyn Read + Send>,
    /// The name without `.age` and `.zst`.
    pub name: String,
    check: Verification<BufReader<crate::progress::CountingCurrent<Box<dyn Read + Send>>>>,
    check_shown: String,
}

impl OpenedVerified {
    /// Reads whatever the consumer left of the stored file and compares it
    /// with the record: [`Error::Damaged`] naming the file when it differs.
    /// Call it before trusting what was read, and after any error while
    /// reading (a damaged file makes decoders fail in their own words; this
    /// says what happened).
    pub fn finish(&self) -> Result<()> {
        match self.check.finish() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(Error::Damaged(why)),
            Err(e) => Err(Error::io("read", self.path(), e)),
        }
    }

    /// `err`, unless the stored bytes are damaged: then that, the cause.
    pub fn explain(&self, err: Error) -> Error {
        match self.finish() {
            Err(d @ Error::Damaged(_)) => d,
            _ => err,
        }
    }

    fn path(&self) -> String {
        self.check_shown.clone()
    }
}

/// Opens a stored file as [`open_stored`] does, with every stored byte
/// (ciphertext and compressed bytes as they are on disk) compared with the
/// record's size and blake3 (sha256 when it has no blake3) as it streams.
pub fn open_verified(
    path: &Path,
    ids: Option<&Identities>,
    want: &crate::record::FileEntry,
) -> Result<OpenedVerified> {
    let f = BufReader::with_capacity(
        1 << 16,
        crate::progress::CountingCurrent(crate::store::open(path)?),
    );
    let shown = path.display().to_string();
    let (raw, check) = verifying(
        f,
        Expected {
            shown: shown.clone(),
            size: want.size,
            sha256: want.sha256.clone(),
            blake3: want.blake3.clone(),
        },
    );
    let opened = OpenedVerified {
        reader: Box::new(std::io::empty()),
        name: String::new(),
        check,
        check_shown: shown,
    };
    match decode_stored(Box::new(raw), path, ids) {
        Ok((reader, name)) => Ok(OpenedVerified {
            reader,
            name,
            ..opened
        }),
        // A damaged header fails here already.
        Err(e) => Err(opened.explain(e)),
    }
}

fn decode_stored(
    f: Box<dyn Read + Send>,
    path: &Path,
    ids: Option<&Identities>,
) -> Result<(Box<dyn Read + Send>, String)> {
    let mut name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut r: Box<dyn Read + Send> = match name.strip_suffix(crypt::SUFFIX) {
        Some(stem) => {
            let ids = ids.ok_or_else(|| {
                Error::Usage(format!(
                    "{}: encrypted; give the identity with -i FILE",
                    path.display()
                ))
            })?;
            let d = ids
                .decrypt(f)
                .map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
            name = stem.to_string();
            Box::new(Decrypted(d))
        }
        None => f,
    };
    if let Some(stem) = name.strip_suffix(".zst") {
        r = Box::new(zstd::stream::read::Decoder::new(r).ctx("decompress", path)?);
        name = stem.to_string();
    } else if name.ends_with(".gz") {
        return Err(Error::msg(format!(
            "{}: gzip-compressed tars are not supported; back up with --compress zstd",
            path.display()
        )));
    }
    Ok((r, name))
}

/// An age stream whose read errors say what they mean.
struct Decrypted<R: Read>(R);

impl<R: Read> Read for Decrypted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0
            .read(buf)
            .map_err(|e| io::Error::new(e.kind(), crypt::explain(&e)))
    }
}

/// A tar member's path made safe: relative, no `..`, `./` dropped.
/// `None` for the archive's own root (`.` or `./`).
pub fn safe_relative(raw: &Path) -> std::result::Result<Option<PathBuf>, String> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("{}: absolute path in the archive", raw.display()))
            }
            Component::ParentDir => return Err(format!("{}: `..` in the archive", raw.display())),
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Unpacks the tar read from `r` into the existing directory `target`.
/// `what` names the archive in messages.
pub fn unpack(r: impl Read, target: &Path, owner: Option<Owner>, what: &str) -> Result<Unpacked> {
    unpack_holding(r, target, owner, what, &[])
}

/// As [`unpack`], without hashing the files (their `sha256` is empty): for
/// what no manifest lists (`pg_wal/`, checked page by page elsewhere).
pub fn unpack_unhashed(
    r: impl Read,
    target: &Path,
    owner: Option<Owner>,
    what: &str,
) -> Result<Unpacked> {
    unpack_inner(r, target, owner, what, &[], false)
}

/// SHA256 of each file unpacked, computed on a thread of its own from the
/// very buffers the files were written from (handed over, not copied), so
/// the manifest check costs the unpacking thread almost nothing when a
/// second core is free.
struct FileHasher {
    to_hash: Option<std::sync::mpsc::SyncSender<Option<Vec<u8>>>>,
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
}

/// Size of the buffers files are unpacked through.
const UNPACK_BUF: usize = 1 << 18;

impl FileHasher {
    fn new() -> FileHasher {
        use std::sync::mpsc::{channel, sync_channel};
        let (to_hash, rx) = sync_channel::<Option<Vec<u8>>>(16);
        let (recycle, spare) = channel::<Vec<u8>>();
        let thread = std::thread::Builder::new()
            .name("pgb-file-sha256".into())
            .spawn(move || {
                let mut sums = Vec::new();
                let mut h = Sha256::new();
                // `None` ends a file.
                for msg in rx {
                    match msg {
                        Some(buf) => {
                            h.update(&buf);
                            let _ = recycle.send(buf);
                        }
                        None => sums.push(crate::digest::hex(&h.finalize_reset())),
                    }
                }
                sums
            })
            .ok();
        FileHasher {
            to_hash: thread.as_ref().map(|_| to_hash),
            spare,
            thread,
        }
    }

    /// A buffer to read into (a recycled one when the thread returned one).
    fn buffer(&self) -> Vec<u8> {
        let mut b = self.spare.try_recv().unwrap_or_default();
        b.resize(UNPACK_BUF, 0);
        b
    }

    /// Hands `buf` (filled to its length) over; `false` when the thread is
    /// gone.
    fn send(&self, buf: Vec<u8>) -> bool {
        self.to_hash
            .as_ref()
            .is_some_and(|t| t.send(Some(buf)).is_ok())
    }

    fn end_file(&self) -> bool {
        self.to_hash.as_ref().is_some_and(|t| t.send(None).is_ok())
    }

    /// The files' SHA256s in the order they ended.
    fn finish(mut self) -> Option<Vec<String>> {
        drop(self.to_hash.take());
        self.thread.take()?.join().ok()
    }
}

/// Suffix of a file [`unpack_holding`] writes under a held-back name.
pub const HELD: &str = ".pgb-partial";

/// As [`unpack`], but the members named in `hold` (relative paths) are
/// written as `NAME.pgb-partial`, for the caller to rename once everything
/// else is in place (a data directory without `global/pg_control` cannot be
/// started half-restored).
pub fn unpack_holding(
    r: impl Read,
    target: &Path,
    owner: Option<Owner>,
    what: &str,
    hold: &[&str],
) -> Result<Unpacked> {
    unpack_inner(r, target, owner, what, hold, true)
}

fn unpack_inner(
    r: impl Read,
    target: &Path,
    owner: Option<Owner>,
    what: &str,
    hold: &[&str],
    hash: bool,
) -> Result<Unpacked> {
    let hasher = hash.then(FileHasher::new);
    let mut out = unpack_files(r, target, owner, what, hold, hasher.as_ref())?;
    if let Some(h) = hasher {
        let sums = h
            .finish()
            .filter(|s| s.len() == out.files.len())
            .ok_or_else(|| Error::msg(format!("{what}: the hashing thread stopped")))?;
        for (w, sum) in out.files.iter_mut().zip(sums) {
            w.sha256 = sum;
        }
    }
    Ok(out)
}

fn unpack_files(
    r: impl Read,
    target: &Path,
    owner: Option<Owner>,
    what: &str,
    hold: &[&str],
    hasher: Option<&FileHasher>,
) -> Result<Unpacked> {
    let fail = |m: String| Error::msg(format!("{what}: {m}"));
    let mut out = Unpacked::default();
    let mut links: BTreeSet<PathBuf> = BTreeSet::new();
    let mut archive = tar::Archive::new(r);
    let entries = archive.entries().ctx("read", what)?;
    let mut buf = vec![0u8; UNPACK_BUF];
    for entry in entries {
        let mut entry = entry.map_err(|e| fail(format!("read: {e}")))?;
        let raw = entry
            .path()
            .map_err(|e| fail(format!("member name: {e}")))?
            .into_owned();
        let Some(rel) = safe_relative(&raw).map_err(fail)? else {
            continue;
        };
        if let Some(l) = links.iter().find(|l| rel.starts_with(l)) {
            return Err(fail(format!(
                "{}: would be written through the symlink {}",
                rel.display(),
                l.display()
            )));
        }
        let held = hold.iter().any(|h| Path::new(h) == rel);
        let dest = if held {
            target.join(format!("{}{HELD}", rel.display()))
        } else {
            target.join(&rel)
        };
        let mode = entry.header().mode().unwrap_or(0o600);
        let kind = entry.header().entry_type();
        if let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) {
            make_dirs(target, parent, owner, false)?;
        }
        if kind.is_dir() {
            let group = mode & 0o050 != 0;
            out.group_access |= group;
            make_dirs(target, &rel, owner, group)?;
            out.dirs += 1;
        } else if kind.is_file() || kind == tar::EntryType::Continuous {
            let fmode = if mode & 0o040 != 0 { 0o640 } else { 0o600 };
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .mode(fmode)
                .open(&dest)
                .ctx("create", &dest)?;
            if let Some(o) = owner {
                std::os::unix::fs::fchown(&f, Some(o.uid), Some(o.gid)).ctx("chown", &dest)?;
            }
            let mut size = 0u64;
            let gone = || fail("the hashing thread stopped".into());
            loop {
                let mut b = match hasher {
                    Some(h) => h.buffer(),
                    None => std::mem::take(&mut buf),
                };
                let n = crate::fs::read_full(&mut entry, &mut b)
                    .map_err(|e| fail(format!("{}: {}", rel.display(), io_msg(&e))))?;
                if n > 0 {
                    f.write_all(&b[..n]).ctx("write", &dest)?;
                    size += n as u64;
                }
                match hasher {
                    Some(h) => {
                        b.truncate(n);
                        if n > 0 && !h.send(b) {
                            return Err(gone());
                        }
                    }
                    None => buf = b,
                }
                if n == 0 {
                    break;
                }
            }
            if hasher.is_some_and(|h| !h.end_file()) {
                return Err(gone());
            }
            out.bytes += size;
            out.files.push(Written {
                path: rel.to_string_lossy().into_owned(),
                size,
                sha256: String::new(),
            });
        } else if kind.is_symlink() {
            let to = entry
                .link_name()
                .map_err(|e| fail(format!("{}: link target: {e}", rel.display())))?
                .ok_or_else(|| fail(format!("{}: symlink without a target", rel.display())))?
                .into_owned();
            if !link_stays_inside(&rel, &to) {
                return Err(fail(format!(
                    "{}: symlink to {} leads outside the target; refused",
                    rel.display(),
                    to.display()
                )));
            }
            std::os::unix::fs::symlink(&to, &dest).ctx("symlink", &dest)?;
            if let Some(o) = owner {
                o.apply(&dest)?;
            }
            links.insert(rel);
        } else if kind.is_hard_link() {
            return Err(fail(format!(
                "{}: hard link in the archive; refused",
                rel.display()
            )));
        } else if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader | tar::EntryType::GNULongName
        ) {
            continue;
        } else {
            return Err(fail(format!(
                "{}: {:?} entries are refused (device, FIFO or unknown)",
                rel.display(),
                kind
            )));
        }
    }
    Ok(out)
}

fn io_msg(e: &io::Error) -> String {
    crate::error::io_cause(e)
}

/// True when a relative symlink at `at` pointing to `to` resolves inside the
/// target (by its text; absolute targets never do).
fn link_stays_inside(at: &Path, to: &Path) -> bool {
    if to.is_absolute() {
        return false;
    }
    let mut depth: i64 = at.components().count() as i64 - 1;
    for c in to.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            _ => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

/// Creates `rel` and its missing parents below `target`, none of them a
/// symlink; sets mode and owner on the ones it creates (and on `rel`).
fn make_dirs(target: &Path, rel: &Path, owner: Option<Owner>, group: bool) -> Result<()> {
    let mut cur = target.to_path_buf();
    let n = rel.components().count();
    for (i, c) in rel.components().enumerate() {
        cur.push(c);
        let last = i + 1 == n;
        match fs::symlink_metadata(&cur) {
            Ok(md) if md.is_dir() => {
                if last {
                    set_dir_mode(&cur, group)?;
                }
            }
            Ok(_) => {
                return Err(Error::msg(format!(
                    "{}: exists and is not a directory",
                    cur.display()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .mode(if group { 0o750 } else { 0o700 })
                    .create(&cur)
                    .ctx("create directory", &cur)?;
                set_dir_mode(&cur, group)?;
                if let Some(o) = owner {
                    o.apply(&cur)?;
                }
            }
            Err(e) => return Err(Error::io("stat", &cur, e)),
        }
    }
    Ok(())
}

fn set_dir_mode(p: &Path, group: bool) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(
        p,
        fs::Permissions::from_mode(if group { 0o750 } else { 0o700 }),
    )
    .ctx("chmod", p)
}

/// Flushes everything written on the file system holding `dir` (syncfs).
pub fn sync_fs(dir: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let f = File::open(dir).ctx("open", dir)?;
    if unsafe { nix::libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(Error::io("sync", dir, io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        h.set_entry_type(tar::EntryType::Regular);
        // set_path refuses `..`; write the raw name.
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    fn link(b: &mut tar::Builder<Vec<u8>>, name: &str, to: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, name, to).unwrap();
    }

    #[test]
    fn unpacks_with_private_modes_and_hashes() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let data = tar_with(|b| {
            file(b, "./global/pg_control", b"abc");
            link(b, "pg_wal_link", "global");
        });
        let u = unpack(&data[..], t.path(), None, "test.tar").unwrap();
        assert_eq!(u.files.len(), 1);
        assert_eq!(u.files[0].path, "global/pg_control");
        assert_eq!(
            u.files[0].sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let md = fs::metadata(t.path().join("global/pg_control")).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o600);
        let md = fs::metadata(t.path().join("global")).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o700);
    }

    #[test]
    fn refuses_escapes() {
        for (build, want) in [
            (
                Box::new(|b: &mut tar::Builder<Vec<u8>>| file(b, "../evil", b"x"))
                    as Box<dyn FnOnce(&mut tar::Builder<Vec<u8>>)>,
                "`..`",
            ),
            (Box::new(|b| file(b, "/etc/evil", b"x")), "absolute"),
            (Box::new(|b| link(b, "l", "/etc")), "outside"),
            (Box::new(|b| link(b, "a/l", "../../x")), "outside"),
            (
                Box::new(|b| {
                    link(b, "l", "sub");
                    file(b, "l/x", b"x");
                }),
                "through the symlink",
            ),
        ] {
            let t = tempfile::tempdir().unwrap();
            let inner = t.path().join("target");
            fs::create_dir(&inner).unwrap();
            let data = tar_with(build);
            let e = unpack(&data[..], &inner, None, "t.tar")
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e}");
            assert!(!t.path().join("evil").exists());
        }
    }
}
