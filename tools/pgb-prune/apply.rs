//! The repository on disk: where an artifact's files are, whether they are
//! all there, and deleting them, all without following a symlink.
//!
//! Every path is walked from a descriptor of the repository root, one
//! component at a time: each component is looked at with
//! `fstatat(AT_SYMLINK_NOFOLLOW)` and opened with `O_NOFOLLOW|O_DIRECTORY`,
//! so a symlink anywhere below the root (a component swapped for a link
//! included) is refused rather than followed. Directories of physical
//! backups are removed by descriptor, entry by entry, never crossing a mount
//! point and never descending into a symlink (a symlink inside is unlinked
//! as the link it is).
//!
//! An artifact is complete when its record lists at least one file, every
//! listed file is a regular file (not a symlink) at its place below the
//! repository root, and each file's size equals the recorded `size`.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, FileStat, Mode, SFlag};
use nix::unistd::{fsync, unlinkat, UnlinkatFlags};
use pgb_common::error::{Error, Result};
use pgb_common::record::{Artifact, Kind};

/// A record that must not be acted on: its path leaves the repository.
#[derive(Debug)]
pub struct Refused(pub String);

/// Checks a record's relative path lexically: not empty, not absolute, no
/// `.`, `..` or empty components.
pub fn check_rel(rel: &str) -> std::result::Result<(), Refused> {
    if rel.is_empty()
        || rel.starts_with('/')
        || rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        || rel.contains('\0')
    {
        return Err(Refused(format!(
            "path {rel:?} escapes the repository (absolute, empty, or with . or .. components)"
        )));
    }
    Ok(())
}

/// The repository root, opened once.
pub struct Root {
    pub path: PathBuf,
    fd: OwnedFd,
    dev: u64,
    /// Directories already walked to while inspecting (relative path to
    /// descriptor); deleting always walks afresh.
    cache: std::cell::RefCell<std::collections::HashMap<String, OwnedFd>>,
}

fn own(raw: RawFd) -> OwnedFd {
    // SAFETY: `raw` was just returned by openat and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

fn io(op: &str, path: &Path, e: Errno) -> Error {
    Error::io(op, path, std::io::Error::from(e))
}

/// What is at a name, looked at without following it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Missing,
    File(u64),
    Dir,
    Symlink,
    Other,
}

fn classify(st: &FileStat) -> Entry {
    match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
        SFlag::S_IFREG => Entry::File(st.st_size as u64),
        SFlag::S_IFDIR => Entry::Dir,
        SFlag::S_IFLNK => Entry::Symlink,
        _ => Entry::Other,
    }
}

fn look(dir: RawFd, name: &OsStr, path: &Path) -> Result<Entry> {
    match fstatat(Some(dir), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(classify(&st)),
        Err(Errno::ENOENT) => Ok(Entry::Missing),
        Err(e) => Err(io("stat", path, e)),
    }
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Where a relative path ends: the open parent directory and the last name.
pub struct Place {
    pub parent: OwnedFd,
    pub name: std::ffi::OsString,
    pub path: PathBuf,
}

/// The outcome of walking to a path.
pub enum Walk {
    /// The parent exists; the last component may or may not.
    Found(Place),
    /// A directory on the way does not exist.
    Missing,
}

impl Root {
    pub fn open(path: &Path) -> Result<Root> {
        // The root itself is the operator's choice and may be a symlink.
        let raw = openat(
            None,
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io("open repository", path, e))?;
        let fd = own(raw);
        let st =
            nix::sys::stat::fstat(fd.as_raw_fd()).map_err(|e| io("stat repository", path, e))?;
        Ok(Root {
            path: path.to_path_buf(),
            fd,
            dev: st.st_dev,
            cache: Default::default(),
        })
    }

    /// Walks to `rel` (already lexically checked), refusing symlinked or
    /// non-directory components and mount points on the way.
    pub fn walk(&self, rel: &str) -> Result<std::result::Result<Walk, Refused>> {
        self.walk_with(rel, false)
    }

    fn walk_with(&self, rel: &str, cached: bool) -> Result<std::result::Result<Walk, Refused>> {
        let comps: Vec<&str> = rel.split('/').collect();
        let (last, dirs) = comps.split_last().expect("non-empty path");
        let mut fd = self
            .fd
            .try_clone()
            .map_err(|e| Error::io("dup", &self.path, e))?;
        let mut path = self.path.clone();
        let mut done = 0;
        if cached {
            // The longest prefix already walked to.
            let cache = self.cache.borrow();
            for k in (1..=dirs.len()).rev() {
                if let Some(f) = cache.get(&dirs[..k].join("/")) {
                    fd = f.try_clone().map_err(|e| Error::io("dup", &self.path, e))?;
                    done = k;
                    for c in &dirs[..k] {
                        path.push(c);
                    }
                    break;
                }
            }
        }
        for (k, c) in dirs.iter().enumerate().skip(done) {
            path.push(c);
            match look(fd.as_raw_fd(), OsStr::new(c), &path)? {
                Entry::Missing => return Ok(Ok(Walk::Missing)),
                Entry::Dir => {}
                Entry::Symlink => {
                    return Ok(Err(Refused(format!(
                        "{} is a symlink: refusing a path through it",
                        path.display()
                    ))))
                }
                _ => {
                    return Ok(Err(Refused(format!(
                        "{} is not a directory",
                        path.display()
                    ))))
                }
            }
            let raw = match openat(
                Some(fd.as_raw_fd()),
                OsStr::new(c),
                DIR_FLAGS,
                Mode::empty(),
            ) {
                Ok(r) => r,
                Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => {
                    return Ok(Err(Refused(format!(
                        "{} changed into a symlink while being opened",
                        path.display()
                    ))))
                }
                Err(Errno::ENOENT) => return Ok(Ok(Walk::Missing)),
                Err(e) => return Err(io("open", &path, e)),
            };
            fd = own(raw);
            let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(|e| io("stat", &path, e))?;
            if st.st_dev != self.dev {
                return Ok(Err(Refused(format!(
                    "{} is another file system (a mount point): refusing to cross it",
                    path.display()
                ))));
            }
            if cached {
                let dup = fd.try_clone().map_err(|e| Error::io("dup", &path, e))?;
                self.cache.borrow_mut().insert(dirs[..=k].join("/"), dup);
            }
        }
        path.push(last);
        Ok(Ok(Walk::Found(Place {
            parent: fd,
            name: OsStr::new(last).to_os_string(),
            path,
        })))
    }

    /// What is at `rel`, without following any symlink.
    pub fn entry(&self, rel: &str) -> Result<std::result::Result<Entry, Refused>> {
        Ok(match self.walk_with(rel, true)? {
            Err(r) => Err(r),
            Ok(Walk::Missing) => Ok(Entry::Missing),
            Ok(Walk::Found(p)) => Ok(look(p.parent.as_raw_fd(), &p.name, &p.path)?),
        })
    }
}

/// The repository-relative paths of an artifact's files.
pub fn file_rels(a: &Artifact) -> std::result::Result<Vec<String>, Refused> {
    check_rel(&a.path)?;
    if a.kind == Kind::Physical {
        a.files
            .iter()
            .map(|f| {
                check_rel(&f.name)?;
                Ok(format!("{}/{}", a.path, f.name))
            })
            .collect()
    } else {
        Ok(vec![a.path.clone()])
    }
}

/// The sidecar's path relative to the root.
pub fn sidecar_rel(a: &Artifact) -> String {
    format!("{}.pgb.json", a.path)
}

/// Looks at an artifact on disk: `Err(Refused)` when any of its paths leaves
/// the repository; otherwise `None` when complete, or why it is not.
pub fn inspect(root: &Root, a: &Artifact) -> Result<std::result::Result<Option<String>, Refused>> {
    let rels = match file_rels(a) {
        Ok(r) => r,
        Err(r) => return Ok(Err(r)),
    };
    // The artifact's own path and its sidecar must not be links either.
    let own = match root.entry(&a.path)? {
        Err(r) => return Ok(Err(r)),
        Ok(e) => e,
    };
    let want_dir = a.kind == Kind::Physical;
    match own {
        Entry::Symlink => {
            return Ok(Err(Refused(format!(
                "{} is a symlink",
                root.path.join(&a.path).display()
            ))))
        }
        Entry::Dir if !want_dir => {
            return Ok(Err(Refused(format!(
                "{} is a directory, the record says a file",
                root.path.join(&a.path).display()
            ))))
        }
        Entry::File(_) | Entry::Other if want_dir => {
            return Ok(Err(Refused(format!(
                "{} is not a directory, the record says a physical backup",
                root.path.join(&a.path).display()
            ))))
        }
        Entry::Other => {
            return Ok(Err(Refused(format!(
                "{} is not a regular file",
                root.path.join(&a.path).display()
            ))))
        }
        _ => {}
    }
    match root.entry(&sidecar_rel(a))? {
        Err(r) => return Ok(Err(r)),
        Ok(Entry::Symlink) => {
            return Ok(Err(Refused(format!(
                "{} is a symlink",
                root.path.join(sidecar_rel(a)).display()
            ))))
        }
        Ok(_) => {}
    }
    if a.files.is_empty() {
        return Ok(Ok(Some("the record lists no files".into())));
    }
    let mut problem = None;
    for (f, rel) in a.files.iter().zip(rels.iter().cycle()) {
        let e = match root.entry(rel)? {
            Err(r) => return Ok(Err(r)),
            Ok(e) => e,
        };
        let p = match e {
            Entry::File(size) if size == f.size => None,
            Entry::File(size) => Some(format!(
                "{} has {size} bytes, the record says {}",
                f.name, f.size
            )),
            Entry::Missing => Some(format!("{} is missing", f.name)),
            Entry::Symlink => {
                return Ok(Err(Refused(format!(
                    "{} is a symlink",
                    root.path.join(rel).display()
                ))))
            }
            _ => Some(format!("{} is not a regular file", f.name)),
        };
        if problem.is_none() {
            problem = p;
        }
    }
    Ok(Ok(problem))
}

/// Deletes an artifact below `root`: its file or directory, then its
/// sidecar, then fsyncs the parent directory. What is already gone is
/// fine (a second run, or a run resumed after a crash). Returns the paths
/// removed.
pub fn delete(root: &Root, a: &Artifact) -> Result<Vec<PathBuf>> {
    let refused = |r: Refused| Error::msg(format!("refused: {}", r.0));
    check_rel(&a.path).map_err(refused)?;
    let mut removed = Vec::new();
    let place = match root.walk(&a.path)?.map_err(refused)? {
        Walk::Missing => return Ok(removed),
        Walk::Found(p) => p,
    };
    let pfd = place.parent.as_raw_fd();
    match look(pfd, &place.name, &place.path)? {
        Entry::Missing => {}
        Entry::File(_) if a.kind != Kind::Physical => {
            unlink(pfd, &place.name, &place.path, false)?;
            removed.push(place.path.clone());
        }
        Entry::Dir if a.kind == Kind::Physical => {
            let raw = openat(Some(pfd), place.name.as_os_str(), DIR_FLAGS, Mode::empty())
                .map_err(|e| io("open", &place.path, e))?;
            let dfd = own(raw);
            remove_tree(dfd, &place.path, root.dev, &mut removed)?;
            unlink(pfd, &place.name, &place.path, true)?;
            removed.push(place.path.clone());
        }
        other => {
            return Err(Error::msg(format!(
                "refused: {} is {other:?}, not what the record describes",
                place.path.display()
            )))
        }
    }
    let mut side = place.name.clone();
    side.push(".pgb.json");
    let side_path = place.path.with_file_name(&side);
    match look(pfd, &side, &side_path)? {
        Entry::File(_) => {
            unlink(pfd, &side, &side_path, false)?;
            removed.push(side_path);
        }
        Entry::Missing => {}
        other => {
            return Err(Error::msg(format!(
                "refused: sidecar {} is {other:?}",
                side_path.display()
            )))
        }
    }
    fsync(pfd).map_err(|e| io("fsync", place.path.parent().unwrap_or(&root.path), e))?;
    Ok(removed)
}

fn unlink(dir: RawFd, name: &OsStr, path: &Path, is_dir: bool) -> Result<()> {
    let flag = if is_dir {
        UnlinkatFlags::RemoveDir
    } else {
        UnlinkatFlags::NoRemoveDir
    };
    match unlinkat(Some(dir), name, flag) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(io("remove", path, e)),
    }
}

/// Empties the directory open as `dfd`: files and symlinks are unlinked,
/// directories on the same device are emptied the same way and removed.
fn remove_tree(dfd: OwnedFd, path: &Path, dev: u64, removed: &mut Vec<PathBuf>) -> Result<()> {
    let raw = dfd.as_raw_fd();
    let st = nix::sys::stat::fstat(raw).map_err(|e| io("stat", path, e))?;
    if st.st_dev != dev {
        return Err(Error::msg(format!(
            "refused: {} is a mount point",
            path.display()
        )));
    }
    let dup = dfd.try_clone().map_err(|e| Error::io("dup", path, e))?;
    let mut dir = Dir::from(dup).map_err(|e| io("read directory", path, e))?;
    let mut names = Vec::new();
    for ent in dir.iter() {
        let ent = ent.map_err(|e| io("read directory", path, e))?;
        let n = ent.file_name().to_bytes();
        if n == b"." || n == b".." {
            continue;
        }
        names.push(OsStr::from_bytes(n).to_os_string());
    }
    names.sort();
    for n in names {
        let p = path.join(&n);
        match look(raw, &n, &p)? {
            Entry::Missing => {}
            Entry::Dir => {
                let sub = openat(Some(raw), n.as_os_str(), DIR_FLAGS, Mode::empty())
                    .map_err(|e| io("open", &p, e))?;
                remove_tree(own(sub), &p, dev, removed)?;
                unlink(raw, &n, &p, true)?;
                removed.push(p);
            }
            _ => {
                unlink(raw, &n, &p, false)?;
                removed.push(p);
            }
        }
    }
    fsync(raw).map_err(|e| io("fsync", path, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn artifact(kind: &str, path: &str, files: &[(&str, u64)]) -> Artifact {
        let files: Vec<_> = files
            .iter()
            .map(|(n, s)| json!({"name": n, "size": s, "sha256": "", "blake3": ""}))
            .collect();
        serde_json::from_value(json!({
            "schema": "pgb.v1", "type": "artifact", "id": "x", "kind": kind,
            "cluster": "main", "created": "2026-11-21T10:15:00Z",
            "repo": "/r", "path": path, "files": files
        }))
        .unwrap()
    }

    #[test]
    fn lexical_escapes_are_refused() {
        for bad in ["", "/etc/passwd", "../x", "a/../b", "a//b", "a/./b", "a/"] {
            assert!(check_rel(bad).is_err(), "{bad:?}");
        }
        assert!(check_rel("main/logical/app/a.dump.zst").is_ok());
    }

    #[test]
    fn completeness_and_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("c/logical/app")).unwrap();
        std::fs::write(r.join("c/logical/app/a.dump"), b"abc").unwrap();
        std::fs::write(r.join("c/logical/app/a.dump.pgb.json"), b"{}").unwrap();
        std::os::unix::fs::symlink(outside.path(), r.join("c/link")).unwrap();
        std::fs::write(outside.path().join("v"), b"abc").unwrap();
        let root = Root::open(r).unwrap();
        let ok = artifact("logical", "c/logical/app/a.dump", &[("a.dump", 3)]);
        assert_eq!(inspect(&root, &ok).unwrap().unwrap(), None);
        let short = artifact("logical", "c/logical/app/a.dump", &[("a.dump", 4)]);
        assert!(inspect(&root, &short)
            .unwrap()
            .unwrap()
            .unwrap()
            .contains("3 bytes"));
        let gone = artifact("logical", "c/logical/app/b.dump", &[("b.dump", 3)]);
        assert!(inspect(&root, &gone)
            .unwrap()
            .unwrap()
            .unwrap()
            .contains("missing"));
        let through = artifact("logical", "c/link/v", &[("v", 3)]);
        assert!(inspect(&root, &through).unwrap().is_err());
        assert!(delete(&root, &through).is_err());
        assert!(outside.path().join("v").exists());
    }

    #[test]
    fn a_physical_directory_is_removed_without_following_links() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), b"x").unwrap();
        let r = d.path();
        let b = r.join("c/physical/c-1");
        std::fs::create_dir_all(b.join("sub")).unwrap();
        std::fs::write(b.join("base.tar.zst"), b"12").unwrap();
        std::fs::write(b.join("sub/x"), b"1").unwrap();
        std::os::unix::fs::symlink(outside.path(), b.join("evil")).unwrap();
        std::fs::write(r.join("c/physical/c-1.pgb.json"), b"{}").unwrap();
        let root = Root::open(r).unwrap();
        let a = artifact("physical", "c/physical/c-1", &[("base.tar.zst", 2)]);
        let removed = delete(&root, &a).unwrap();
        assert!(removed.len() >= 5, "{removed:?}");
        assert!(!b.exists() && !r.join("c/physical/c-1.pgb.json").exists());
        assert!(outside.path().join("keep").exists());
        // Again: nothing left to do, no error.
        assert!(delete(&root, &a).unwrap().is_empty());
    }
}
