//! What pgb-fixperms refuses to touch: `/`, system directories, home
//! directories and their parents, and symlink targets that are not what an
//! allowlisted link of a data directory should lead to.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;

/// Directories that are never a data directory, a repository or a link
/// target, nor is anything beneath them.
const SYSTEM_TREES: &[&str] = &[
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/sbin",
    "/sys", "/usr",
];

/// Directories that are refused themselves (things beneath them are fine).
const SYSTEM_DIRS: &[&str] = &[
    "/", "/home", "/media", "/mnt", "/opt", "/root", "/run", "/srv", "/tmp", "/var", "/var/lib",
    "/var/tmp",
];

/// Home directories listed in /etc/passwd, canonical where they exist.
pub fn home_dirs() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let mut homes: Vec<PathBuf> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(':').nth(5))
        .filter(|h| h.starts_with('/'))
        .map(|h| {
            let p = PathBuf::from(h);
            p.canonicalize().unwrap_or(p)
        })
        .collect();
    homes.sort();
    homes.dedup();
    homes
}

/// Why a canonical path may not be repaired (or followed to), if it may not.
pub fn forbidden(path: &Path, homes: &[PathBuf]) -> Option<String> {
    if path.parent().is_none() {
        return Some("the root directory".into());
    }
    for t in SYSTEM_TREES {
        if path.starts_with(t) {
            return Some(format!("a system directory ({t})"));
        }
    }
    if SYSTEM_DIRS.iter().any(|d| path == Path::new(d)) {
        return Some("a system directory".into());
    }
    for h in homes {
        if h == path {
            return Some("a home directory".into());
        }
        if h.starts_with(path) && h.parent().is_some() {
            return Some(format!("a parent of the home directory {}", h.display()));
        }
    }
    None
}

/// Opens a canonical absolute directory path one component at a time with
/// O_NOFOLLOW, so that a component swapped for a symlink after the path was
/// resolved makes the open fail instead of leading elsewhere.
pub fn open_dir_nofollow(path: &Path) -> nix::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let raw = openat(None, "/", flags, Mode::empty())?;
    // SAFETY: openat returned a new descriptor that nothing else owns.
    let mut fd = unsafe { OwnedFd::from_raw_fd(raw) };
    for c in path.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(name) => {
                let raw = openat(Some(fd.as_raw_fd()), name, flags, Mode::empty())?;
                // SAFETY: as above.
                fd = unsafe { OwnedFd::from_raw_fd(raw) };
            }
            _ => return Err(nix::errno::Errno::EINVAL),
        }
    }
    Ok(fd)
}

/// True for names of tablespace links: an OID.
pub fn is_oid(name: &OsStr) -> bool {
    let b = name.as_bytes();
    !b.is_empty() && b.len() <= 10 && b.iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_root_system_and_homes() {
        let homes = vec![
            PathBuf::from("/home/alice"),
            PathBuf::from("/var/lib/postgresql"),
        ];
        for p in [
            "/",
            "/etc",
            "/etc/ssl",
            "/usr/lib",
            "/home",
            "/home/alice",
            "/var",
            "/var/lib",
        ] {
            assert!(forbidden(Path::new(p), &homes).is_some(), "{p}");
        }
        assert!(forbidden(Path::new("/var/lib/postgresql"), &homes).is_some());
        for p in [
            "/var/lib/postgresql/15/main",
            "/srv/backups/pg",
            "/home/alice/pgdata",
            "/tmp/x",
        ] {
            assert_eq!(forbidden(Path::new(p), &homes), None, "{p}");
        }
    }

    #[test]
    fn oids() {
        assert!(is_oid(OsStr::new("16390")));
        assert!(!is_oid(OsStr::new("x1")));
        assert!(!is_oid(OsStr::new("")));
    }
}
