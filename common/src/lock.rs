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

impl RepoLock {
    /// Takes the lock of repository `repo`, waiting at most `wait`
    /// (`None`: do not wait). Fails with [`Error::Locked`] when it stays held.
    pub fn acquire(repo: &Path, wait: Option<Duration>) -> Result<RepoLock> {
        let path = repo.join(LOCK_FILE);
        let deadline = Instant::now() + wait.unwrap_or(Duration::ZERO);
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .ctx("open lock", &path)?;
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
