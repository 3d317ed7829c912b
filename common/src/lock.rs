//! The repository lock: an exclusive flock on `<repo>/.pgb.lock`, shared by
//! every writer (snapshot, ship, prune). A held lock is exit status 3, or a
//! bounded wait when asked.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, IoContext, Result};

pub const LOCK_FILE: &str = ".pgb.lock";

/// Held until dropped.
pub struct RepoLock {
    _lock: Flock<File>,
    path: PathBuf,
}

/// Opens (creating it if need be) the lock file. flock needs only a
/// readable descriptor, so a lock file another account made (a run as root
/// before the service's runs as postgres) is still usable; one pgb creates
/// as root is handed to the repository directory's owner, so later runs as
/// that owner can open it.
fn open_lock(repo: &Path, path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::MetadataExt;
    let created = !path.exists();
    match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
    {
        Ok(f) => {
            if created && nix::unistd::geteuid().is_root() {
                let dir = std::fs::metadata(repo).ctx("stat", repo)?;
                if dir.uid() != 0 {
                    use std::os::fd::AsRawFd;
                    nix::unistd::fchown(
                        f.as_raw_fd(),
                        Some(nix::unistd::Uid::from_raw(dir.uid())),
                        Some(nix::unistd::Gid::from_raw(dir.gid())),
                    )
                    .map_err(|e| Error::io("chown lock", path, e.into()))?;
                }
            }
            Ok(f)
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => OpenOptions::new()
            .read(true)
            .open(path)
            .map_err(|e2| {
                let owner = std::fs::metadata(path)
                    .map(|m| format!("uid {}", m.uid()))
                    .unwrap_or_else(|_| "another account".into());
                Error::msg(format!(
                    "open lock: {}: {} (it belongs to {owner}; give it to the account pgb runs as, e.g. chown postgres: {})",
                    path.display(),
                    crate::error::io_cause(&e2),
                    path.display()
                ))
            }),
        Err(e) => Err(Error::io("open lock", path, e)),
    }
}

impl RepoLock {
    /// Takes the lock of repository `repo`, waiting at most `wait`
    /// (`None`: do not wait). Fails with [`Error::Locked`] when it stays held.
    pub fn acquire(repo: &Path, wait: Option<Duration>) -> Result<RepoLock> {
        crate::fs::adopt_repo_owner(repo);
        let path = repo.join(LOCK_FILE);
        let deadline = Instant::now() + wait.unwrap_or(Duration::ZERO);
        loop {
            let file = open_lock(repo, &path)?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(RepoLock { _lock: lock, path }),
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                    if Instant::now() >= deadline {
                        return Err(Error::Locked(path));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err((_, e)) => return Err(Error::io("lock", &path, e.into())),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The lock of a remote repository (`ssh://` or `s3://`): an object or
/// file `.pgb.lock` at its root, created only when absent (S3 PUT with
/// `If-None-Match: *`, noclobber on an SSH host) and removed when dropped.
/// It holds `host=H pid=P time=T`, the run that made it. A run killed
/// before it could remove it leaves a stale lock: remove it by hand once no
/// run holds it (see [`RemoteLock::stale_hint`]).
pub struct RemoteLock {
    dest: crate::dest::Destination,
    content: Vec<u8>,
    url: String,
}

impl RemoteLock {
    /// Takes the lock of the remote repository `dest`, waiting at most
    /// `wait` (`None`: do not wait). Fails with [`Error::Locked`] (naming
    /// the lock's URL) when it stays held.
    pub fn acquire(dest: &crate::dest::Destination, wait: Option<Duration>) -> Result<RemoteLock> {
        let url = dest.url_of(LOCK_FILE);
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown".into());
        let content = format!(
            "host={host} pid={} time={}\n",
            std::process::id(),
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
        .into_bytes();
        let deadline = Instant::now() + wait.unwrap_or(Duration::ZERO);
        loop {
            if dest.create_new(&content, LOCK_FILE)? {
                return Ok(RemoteLock {
                    dest: dest.clone(),
                    content,
                    url,
                });
            }
            if Instant::now() >= deadline {
                return Err(Error::Locked(PathBuf::from(url)));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Who holds the lock of `dest` (its content), and how to remove it when
    /// that run is gone: for the message that goes with exit status 3.
    pub fn stale_hint(dest: &crate::dest::Destination) -> String {
        let url = dest.url_of(LOCK_FILE);
        let holder = match dest.read_small(LOCK_FILE, 4096) {
            Ok(Some(b)) => String::from_utf8_lossy(&b).trim().to_string(),
            Ok(None) => "gone since".into(),
            Err(e) => format!("unreadable: {e}"),
        };
        let how = match dest {
            crate::dest::Destination::S3(_) => format!("aws s3 rm {url}"),
            crate::dest::Destination::Ssh(s) => format!(
                "ssh {}{} rm {}",
                s.user.as_ref().map(|u| format!("{u}@")).unwrap_or_default(),
                s.host,
                crate::dest::join_remote(&s.path, LOCK_FILE)
            ),
            crate::dest::Destination::Dir(p) => format!("rm {}", p.join(LOCK_FILE).display()),
        };
        format!(
            "lock {url} is held ({holder}); if that run is no longer running (a stale lock \
             left by a run that was killed), remove it: {how}"
        )
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for RemoteLock {
    fn drop(&mut self) {
        // Removed only while it is still ours (not removed by hand as stale
        // and taken by another run meanwhile).
        match self.dest.read_small(LOCK_FILE, 4096) {
            Ok(Some(b)) if b == self.content => {
                if let Err(e) = self.dest.remove(LOCK_FILE) {
                    crate::term::warn(format!("lock {}: not removed: {e}", self.url));
                }
            }
            Ok(_) => crate::term::warn(format!(
                "lock {}: no longer this run's (removed by hand?); left as it is",
                self.url
            )),
            Err(e) => crate::term::warn(format!("lock {}: not removed: {e}", self.url)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_then_waits() {
        let d = tempfile::tempdir().unwrap();
        let first = RepoLock::acquire(d.path(), None).unwrap();
        let e = RepoLock::acquire(d.path(), None).err().unwrap();
        assert!(matches!(e, Error::Locked(_)));
        let t0 = Instant::now();
        let e = RepoLock::acquire(d.path(), Some(Duration::from_millis(300)))
            .err()
            .unwrap();
        assert!(matches!(e, Error::Locked(_)) && t0.elapsed() >= Duration::from_millis(300));
        drop(first);
        RepoLock::acquire(d.path(), None).unwrap();
    }

    #[test]
    fn a_lock_object_is_created_only_when_absent_and_removed_when_dropped() {
        // The remote lock through the storage layer, on its directory kind.
        let d = tempfile::tempdir().unwrap();
        let dest = crate::dest::Destination::Dir(d.path().to_path_buf());
        let first = RemoteLock::acquire(&dest, None).unwrap();
        let body = std::fs::read_to_string(d.path().join(LOCK_FILE)).unwrap();
        assert!(body.starts_with("host=") && body.contains(&format!("pid={}", std::process::id())));
        let e = RemoteLock::acquire(&dest, None).err().unwrap();
        assert!(matches!(e, Error::Locked(_)), "{e}");
        let hint = RemoteLock::stale_hint(&dest);
        assert!(
            hint.contains(body.trim()) && hint.contains("stale"),
            "{hint}"
        );
        drop(first);
        assert!(!d.path().join(LOCK_FILE).exists());
        // A lock removed by hand and taken by another is not removed.
        let mine = RemoteLock::acquire(&dest, None).unwrap();
        std::fs::write(d.path().join(LOCK_FILE), "host=other pid=1\n").unwrap();
        drop(mine);
        assert!(d.path().join(LOCK_FILE).exists());
    }
}
