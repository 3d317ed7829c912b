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
}
