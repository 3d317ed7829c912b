//! Durable, atomic file writing: never a partial file under a final name.
//!
//! Write to a temp name in the same directory, fsync, rename without
//! replacing, fsync the directory. A failed fsync is reported, never retried:
//! after a failed fsync the page cache may already have dropped the data.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, IoContext, Result};

/// Marks temporary names: `.<name>.pgb-tmp.<pid>.<n>`. A later run holding
/// the repository lock may remove leftovers carrying it.
pub const TEMP_MARK: &str = ".pgb-tmp.";

/// Sets the process umask to 077: files 0600, directories 0700.
pub fn set_umask() {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temp name next to `path` that no other process or call uses.
pub fn temp_path_for(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}{TEMP_MARK}{}.{n}", std::process::id()))
}

/// fsync a directory, so a rename or create inside it is durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    let d = File::open(dir).ctx("open directory", dir)?;
    d.sync_all().ctx("fsync directory", dir)
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Renames `from` to `to` only if `to` does not exist (files or directories).
pub fn rename_noreplace(from: &Path, to: &Path) -> Result<()> {
    use nix::fcntl::{renameat2, RenameFlags};
    match renameat2(None, from, None, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EEXIST) => Err(Error::io(
            "rename",
            to,
            io::Error::new(
                io::ErrorKind::AlreadyExists,
                "already exists, not overwritten",
            ),
        )),
        // Filesystems without RENAME_NOREPLACE: a hard link fails if the
        // target exists; files only.
        Err(nix::errno::Errno::EINVAL) if from.is_file() => {
            fs::hard_link(from, to).ctx("link", to)?;
            fs::remove_file(from).ctx("remove", from)
        }
        Err(e) => Err(Error::io("rename", to, io::Error::from(e))),
    }
}

/// Starts writeback of a range (`wait`: and waits until it is on the
/// device), as `sync_file_range(2)`.
pub fn sync_range(f: &File, off: u64, len: u64, wait: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let flags = if wait {
        libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER
    } else {
        libc::SYNC_FILE_RANGE_WRITE
    };
    // SAFETY: plain syscall on a descriptor `f` keeps open.
    let r = unsafe { libc::sync_file_range(f.as_raw_fd(), off as i64, len as i64, flags) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// With [`AtomicFile::write_behind`], writeback is started each time this
/// much more has been written.
const WRITE_BEHIND: u64 = 8 << 20;

/// A file being written under a temp name, published by [`AtomicFile::commit`].
/// Dropped without commit, the temp file is removed.
pub struct AtomicFile {
    file: Option<File>,
    temp: PathBuf,
    target: PathBuf,
    written: u64,
    /// With write-behind: where the range not yet handed to writeback starts.
    behind: Option<u64>,
}

/// The account that owns the repository this run writes to, when the run
/// is root's and the repository is someone else's (set by [`RepoLock`]):
/// everything pgb creates there is handed to that account, so one run as
/// root does not lock the service account (postgres) out of its own
/// repository.
///
/// [`RepoLock`]: crate::lock::RepoLock
static REPO_OWNER: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();

/// Records `repo`'s owner as the owner of what pgb creates, when running as
/// root in a repository that root does not own.
pub fn adopt_repo_owner(repo: &Path) {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    if let Ok(m) = fs::metadata(repo) {
        if m.uid() != 0 {
            let _ = REPO_OWNER.set((m.uid(), m.gid()));
        }
    }
}

/// Hands `path` (not following a symlink) to the repository's owner, when
/// [`adopt_repo_owner`] set one.
pub fn give_to_repo_owner(path: &Path) -> Result<()> {
    if let Some((uid, gid)) = REPO_OWNER.get() {
        nix::unistd::fchownat(
            None,
            path,
            Some(nix::unistd::Uid::from_raw(*uid)),
            Some(nix::unistd::Gid::from_raw(*gid)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| Error::io("chown", path, e.into()))?;
    }
    Ok(())
}

impl AtomicFile {
    /// Creates the temp file for `target` (mode 0600, never an existing file).
    pub fn create(target: impl AsRef<Path>) -> Result<AtomicFile> {
        let target = target.as_ref().to_path_buf();
        let temp = temp_path_for(&target);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .ctx("create", &temp)?;
        give_to_repo_owner(&temp)?;
        Ok(AtomicFile {
            file: Some(file),
            temp,
            target,
            written: 0,
            behind: None,
        })
    }

    /// Starts writeback of every 8 MiB as soon as it is written
    /// (`sync_file_range`), so the device works while the writer computes
    /// and the final fsync has little left to do, as with a large stream
    /// written then fsynced. An error starting writeback is a write error.
    pub fn write_behind(mut self) -> AtomicFile {
        self.behind = Some(self.written);
        self
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("file used after commit")
    }

    fn sync(&mut self) -> Result<()> {
        let f = self.file.take().expect("committed twice");
        f.sync_all().ctx("fsync", &self.temp)
    }

    /// fsync, rename to the target unless it exists, fsync the directory.
    pub fn commit(mut self) -> Result<()> {
        self.sync()?;
        rename_noreplace(&self.temp, &self.target)?;
        self.temp = PathBuf::new();
        fsync_dir(parent_of(&self.target))
    }

    /// Rename over the target, without fsync: for a file whose reader
    /// makes it durable itself. restore_command's file is one: PostgreSQL
    /// reads it, and what it keeps it moves into pg_wal with its own
    /// durable_rename (fsync of file and directory); after a crash it asks
    /// again. The rename still means the name never holds a partial file.
    pub fn commit_replace_unsynced(mut self) -> Result<()> {
        fs::rename(&self.temp, &self.target).ctx("rename", &self.target)?;
        self.temp = PathBuf::new();
        Ok(())
    }

    /// fsync, rename over the target (for sidecars, which hold the latest
    /// record), fsync the directory.
    pub fn commit_replace(mut self) -> Result<()> {
        self.sync()?;
        fs::rename(&self.temp, &self.target).ctx("rename", &self.target)?;
        self.temp = PathBuf::new();
        fsync_dir(parent_of(&self.target))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file().write(buf)?;
        self.written += n as u64;
        if let Some(started) = self.behind {
            if self.written - started >= WRITE_BEHIND {
                let f = self.file.as_ref().expect("file used after commit");
                match sync_range(f, started, self.written - started, false) {
                    Ok(()) => self.behind = Some(self.written),
                    // A file system without it: fsync does it all at the end.
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP | libc::ESPIPE)
                        ) =>
                    {
                        self.behind = None
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file().flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Writes `bytes` to `target` atomically; `replace` allows an existing target
/// to be replaced (sidecars), otherwise an existing target is an error.
pub fn write_atomic(target: &Path, bytes: &[u8], replace: bool) -> Result<()> {
    let mut f = AtomicFile::create(target)?;
    f.write_all(bytes).ctx("write", f.temp_path())?;
    if replace {
        f.commit_replace()
    } else {
        f.commit()
    }
}

/// A directory being filled under a temp name, published whole by
/// [`AtomicDir::commit`]. Dropped without commit, it is removed.
pub struct AtomicDir {
    temp: PathBuf,
    target: PathBuf,
}

impl AtomicDir {
    pub fn create(target: impl AsRef<Path>) -> Result<AtomicDir> {
        let target = target.as_ref().to_path_buf();
        let temp = temp_path_for(&target);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&temp)
            .ctx("create directory", &temp)?;
        give_to_repo_owner(&temp)?;
        Ok(AtomicDir { temp, target })
    }

    pub fn path(&self) -> &Path {
        &self.temp
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    /// fsyncs every file in the directory and the directory, renames it to
    /// the target unless that exists, fsyncs the parent.
    pub fn commit(mut self) -> Result<()> {
        for entry in fs::read_dir(&self.temp).ctx("read directory", &self.temp)? {
            let entry = entry.ctx("read directory", &self.temp)?;
            let p = entry.path();
            if entry.file_type().ctx("stat", &p)?.is_file() {
                // Written by a child (pg_basebackup) as whoever we are.
                give_to_repo_owner(&p)?;
                File::open(&p).and_then(|f| f.sync_all()).ctx("fsync", &p)?;
            }
        }
        fsync_dir(&self.temp)?;
        rename_noreplace(&self.temp, &self.target)?;
        self.temp = PathBuf::new();
        fsync_dir(parent_of(&self.target))
    }
}

impl Drop for AtomicDir {
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            let _ = fs::remove_dir_all(&self.temp);
        }
    }
}

/// Creates `dir` and its missing parents with mode 0700, fsyncing each new
/// directory's parent.
pub fn create_dir_all_durable(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = parent_of(dir);
    if parent != dir {
        create_dir_all_durable(parent)?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {
            give_to_repo_owner(dir)?;
            fsync_dir(parent)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(Error::io("create directory", dir, e)),
    }
}

/// The regular files below `root` whose names end in `suffix`, unsorted.
/// Hidden names (temp files, locks) and hidden directories are skipped and
/// symlinks are not followed. How repositories are read as catalogues.
pub fn files_below(root: &Path, suffix: &str) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).ctx("read directory", &dir)? {
            let e = e.ctx("read directory", &dir)?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            let p = e.path();
            let ft = e.file_type().ctx("stat", &p)?;
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() && name.ends_with(suffix) {
                out.push(p);
            }
        }
    }
    Ok(out)
}

/// `copy_file_range(2)` of up to `len` bytes from `from`'s offset to
/// `to`'s; how many were copied (0 at the end of `from`).
pub fn copy_range(from: &File, to: &File, len: usize) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: plain syscall on descriptors both files keep open; null
        // offsets mean the files' own positions, which it advances.
        let r = unsafe {
            libc::copy_file_range(
                from.as_raw_fd(),
                std::ptr::null_mut(),
                to.as_raw_fd(),
                std::ptr::null_mut(),
                len,
                0,
            )
        };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Whether `copy_range` failed because the kernel cannot copy between
/// these two files (other file systems, an old kernel, a file system or
/// descriptor that does not support it): nothing was copied, and a copy
/// through a buffer will do.
pub fn kernel_cannot_copy(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EXDEV
                | libc::ENOSYS
                | libc::EINVAL
                | libc::EOPNOTSUPP
                | libc::EPERM
                | libc::EBADF
        )
    )
}

/// Reads until `buf` is full or the stream ends; returns how much was read.
pub fn read_full(r: &mut impl io::Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Removes temp files and directories left in `dir` by killed runs (names
/// carrying [`TEMP_MARK`]). Call only while holding the repository lock, so
/// no live writer's temp is touched. Returns what was removed.
pub fn remove_leftover_temps(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(Error::io("read directory", dir, e)),
    };
    for entry in entries {
        let entry = entry.ctx("read directory", dir)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with('.') && name.contains(TEMP_MARK)) {
            continue;
        }
        let p = entry.path();
        let ft = entry.file_type().ctx("stat", &p)?;
        if ft.is_dir() {
            fs::remove_dir_all(&p).ctx("remove leftover", &p)?;
        } else {
            fs::remove_file(&p).ctx("remove leftover", &p)?;
        }
        removed.push(p);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn commit_publishes_and_never_overwrites() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("a.dump");
        write_atomic(&target, b"one", false).unwrap();
        let e = write_atomic(&target, b"two", false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("already exists"), "{e}");
        assert_eq!(fs::read(&target).unwrap(), b"one");
        write_atomic(&target, b"three", true).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"three");
        assert_eq!(
            fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temp left behind"
        );
    }

    #[test]
    fn dropped_file_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("a.dump");
        {
            let mut f = AtomicFile::create(&target).unwrap();
            f.write_all(b"partial").unwrap();
            assert_eq!(
                fs::metadata(f.temp_path()).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn directories_publish_whole_or_not_at_all() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("base");
        let a = AtomicDir::create(&target).unwrap();
        fs::write(a.path().join("base.tar"), b"x").unwrap();
        assert!(!target.exists());
        a.commit().unwrap();
        assert_eq!(fs::read(target.join("base.tar")).unwrap(), b"x");
        {
            let b = AtomicDir::create(d.path().join("other")).unwrap();
            fs::write(b.path().join("f"), b"x").unwrap();
        }
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
