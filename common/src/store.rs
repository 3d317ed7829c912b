//! Locations in a repository that may be remote.
//!
//! `--repo` names a directory, `ssh://[user@]host[:port]/path` or
//! `s3://bucket[/prefix]`, and a record read from it carries that as its
//! `repo`. An artifact's location is `repo/path` joined as text (see
//! [`crate::record::Artifact::location`]), so for a remote repository it is
//! a URL held in a `Path`: `s3://bucket/prefix/main/physical/ID`. The
//! functions here take such a location and do what `std::fs` does for a
//! local one, through the storage layer ([`crate::dest`]) for a URL: the
//! file's directory is the root and its name the relative path. Files are
//! streamed, never copied to a local temporary first.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::dest::Destination;
use crate::error::{Error, IoContext, Result};

/// True when `p` is an `s3://` or `ssh://` URL rather than a local path.
pub fn is_url(p: &Path) -> bool {
    p.to_str()
        .is_some_and(|s| s.starts_with("s3://") || s.starts_with("ssh://"))
}

/// The storage root holding `p` (its parent) and `p`'s name in it.
fn split(p: &Path) -> Result<(Destination, String)> {
    let s = p
        .to_str()
        .ok_or_else(|| Error::msg(format!("{}: not UTF-8", p.display())))?;
    let (parent, name) = s
        .rsplit_once('/')
        .filter(|(d, n)| !n.is_empty() && !d.ends_with('/'))
        .ok_or_else(|| Error::msg(format!("{s}: names no file")))?;
    Ok((Destination::parse_url(parent)?, name.to_string()))
}

/// `--repo` as records carry it: a directory made absolute, or a URL in
/// its canonical form (no trailing `/`).
pub fn root_of(repo: &Path) -> Result<PathBuf> {
    if is_url(repo) {
        let s = repo.to_str().unwrap_or_default();
        return Ok(PathBuf::from(Destination::parse_url(s)?.root_url()));
    }
    std::path::absolute(repo).ctx("resolve", repo)
}

/// The storage layer's view of a repository root (local or remote).
pub fn destination(root: &Path) -> Result<Destination> {
    if is_url(root) {
        Destination::parse_url(root.to_str().unwrap_or_default())
    } else {
        Ok(Destination::Dir(
            std::path::absolute(root).ctx("resolve", root)?,
        ))
    }
}

/// Opens `p` for reading, streaming.
pub fn open(p: &Path) -> Result<Box<dyn Read + Send>> {
    if is_url(p) {
        let (d, name) = split(p)?;
        return d.open_read(&name);
    }
    Ok(Box::new(std::fs::File::open(p).ctx("open", p)?))
}

/// The whole of a small file (at most `max` bytes), `None` when absent.
pub fn read_small(p: &Path, max: u64) -> Result<Option<Vec<u8>>> {
    if is_url(p) {
        let (d, name) = split(p)?;
        return d.read_small(&name, max);
    }
    match std::fs::File::open(p) {
        Ok(f) => {
            let mut v = Vec::new();
            f.take(max).read_to_end(&mut v).ctx("read", p)?;
            Ok(Some(v))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", p, e)),
    }
}

/// The size of `p`, `None` when absent.
pub fn size_of(p: &Path) -> Result<Option<u64>> {
    if is_url(p) {
        let (d, name) = split(p)?;
        return d.size_of(&name);
    }
    match std::fs::metadata(p) {
        Ok(m) => Ok(Some(m.len())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("stat", p, e)),
    }
}

/// Replaces `p` with `bytes` atomically (a sidecar): a temp file renamed
/// and fsynced locally, one PUT in S3, a temp file renamed over SSH.
pub fn write_replace(p: &Path, bytes: &[u8]) -> Result<()> {
    if is_url(p) {
        let (d, name) = split(p)?;
        return d.put_bytes_replace(bytes, &name);
    }
    crate::fs::write_atomic(p, bytes, true)
}

/// Removes the file or object `p` (a local directory with what it holds);
/// what is absent is Ok.
pub fn remove(p: &Path) -> Result<()> {
    if is_url(p) {
        let (d, name) = split(p)?;
        return d.remove(&name);
    }
    let r = match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) => Err(e),
    };
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", p, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_paths_are_told_apart_and_joined_as_text() {
        let root = root_of(Path::new("s3://bkt/pg/")).unwrap();
        assert_eq!(root, PathBuf::from("s3://bkt/pg"));
        let loc = root.join("main/physical/ID/base.tar.zst");
        assert!(is_url(&loc));
        assert_eq!(
            loc.to_str().unwrap(),
            "s3://bkt/pg/main/physical/ID/base.tar.zst"
        );
        let (d, name) = split(&loc).unwrap();
        assert_eq!(d.root_url(), "s3://bkt/pg/main/physical/ID");
        assert_eq!(name, "base.tar.zst");
        let ssh = root_of(Path::new("ssh://u@h:2222/srv/pgb")).unwrap();
        let (d, name) = split(&ssh.join("c/x.dump.pgb.json")).unwrap();
        assert_eq!(d.root_url(), "ssh://u@h:2222/srv/pgb/c");
        assert_eq!(name, "x.dump.pgb.json");
        assert!(!is_url(Path::new("/srv/s3://x")));
        assert!(split(Path::new("s3://bkt")).is_err());
    }

    #[test]
    fn local_locations_use_the_filesystem() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.pgb.json");
        assert_eq!(read_small(&p, 10).unwrap(), None);
        write_replace(&p, b"hello world").unwrap();
        assert_eq!(read_small(&p, 5).unwrap().unwrap(), b"hello");
        assert_eq!(size_of(&p).unwrap(), Some(11));
        let mut s = String::new();
        open(&p).unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello world");
        remove(&p).unwrap();
        remove(&p).unwrap();
        assert_eq!(size_of(&p).unwrap(), None);
    }
}
