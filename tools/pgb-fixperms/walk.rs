//! The walk: by directory file descriptor, on several threads.
//!
//! Every entry is first looked at with `fstatat(AT_SYMLINK_NOFOLLOW)`
//! relative to the descriptor of the directory that listed it. Directories
//! and regular files that need a change are then opened with `O_NOFOLLOW`,
//! the descriptor is `fstat`ed and compared (device, inode, type, link count)
//! with what was listed, and only then changed through that descriptor
//! (`fchown`, `fchmod`). A symlink is never followed (except the allowlisted
//! `pg_wal` and `pg_tblspc/OID`, whose targets are checked first) nor
//! chmodded; its own owner is set through an `O_PATH|O_NOFOLLOW` descriptor.
//! FIFOs, sockets and devices are reported and never opened. A name swapped
//! for something else between the look and the open is left alone and
//! reported.

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, OsStr};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, FileStat, Mode, SFlag};
use nix::unistd::{fchown, fchownat, Gid, Group, Uid, User};
use pgb_common::error::{io_cause, Error};
use pgb_common::record::{error_record, SCHEMA};
use pgb_common::term::warn;

use crate::guard::{forbidden, is_oid, open_dir_nofollow};

/// What to make of the tree.
pub struct Plan {
    pub uid: u32,
    pub gid: u32,
    pub dir_mode: u32,
    pub file_mode: u32,
    pub check: bool,
    pub allow_hardlinks: bool,
    /// Data-directory mode: its canonical path and PG_VERSION.
    pub data: Option<(PathBuf, String)>,
    pub homes: Vec<PathBuf>,
    pub threads: usize,
    /// Print each change as a line for a person, not a record.
    pub human: bool,
}

/// Where a directory sits, for the allowlisted links.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    DataRoot,
    Tblspc,
    Plain,
}

struct Job {
    dir: Dir,
    path: PathBuf,
    /// The device the directory's entries must be on (no mount crossing).
    dev: u64,
    /// Its mount (statx's mount ID): a bind mount of the same filesystem
    /// has the same device but another mount.
    mnt: Option<u64>,
    place: Place,
}

/// The mount ID (`STATX_MNT_ID`) of `name` in `dfd`, a link not followed;
/// with an empty name, of `dfd` itself. `None` on kernels without it.
fn mnt_id(dfd: RawFd, name: &CStr) -> Option<u64> {
    let mut flags = libc::AT_SYMLINK_NOFOLLOW | libc::AT_STATX_DONT_SYNC;
    if name.to_bytes().is_empty() {
        flags |= libc::AT_EMPTY_PATH;
    }
    // SAFETY: statx writes only into `stx`, a plain C struct we own; `name`
    // is a NUL-terminated string that outlives the call.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::statx(dfd, name.as_ptr(), flags, libc::STATX_MNT_ID, &mut stx) };
    (r == 0 && stx.stx_mask & libc::STATX_MNT_ID != 0).then_some(stx.stx_mnt_id)
}

fn fd_mnt_id(fd: RawFd) -> Option<u64> {
    mnt_id(fd, c"")
}

/// True when both mounts are known and differ.
fn other_mount(a: Option<u64>, b: Option<u64>) -> bool {
    matches!((a, b), (Some(x), Some(y)) if x != y)
}

struct Queue {
    jobs: Vec<Job>,
    busy: usize,
}

/// Directories kept open in the queue at most; beyond, a worker descends
/// itself, so open descriptors stay bounded by the tree's depth.
const MAX_QUEUED: usize = 256;

/// What the run did.
pub struct Outcome {
    pub changes: u64,
    pub errors: u64,
    /// Writing the records failed (a closed pipe, a full disk).
    pub output: Option<Error>,
}

pub struct Walker<'p> {
    plan: &'p Plan,
    queue: Mutex<Queue>,
    cv: Condvar,
    out: Mutex<Option<Error>>,
    stop: AtomicBool,
    changes: AtomicU64,
    errors: AtomicU64,
    seen_targets: Mutex<HashSet<(u64, u64)>>,
    owner_label: String,
}

/// One worker's buffers.
struct Local {
    buf: Vec<u8>,
    names: HashMap<(bool, u32), String>,
    /// Lines for a person (stdout is a terminal) instead of records.
    human: bool,
}

const FLUSH_AT: usize = 32 * 1024;

fn own(raw: RawFd) -> OwnedFd {
    // SAFETY: `raw` was just returned by openat and is owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

fn err_cause(e: Errno) -> String {
    io_cause(&io::Error::from(e))
}

fn file_type(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

fn same(a: &FileStat, b: &FileStat) -> bool {
    a.st_dev == b.st_dev && a.st_ino == b.st_ino && file_type(a) == file_type(b)
}

fn user_name(uid: u32) -> String {
    match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(u)) => u.name,
        _ => uid.to_string(),
    }
}

fn group_name(gid: u32) -> String {
    match Group::from_gid(Gid::from_raw(gid)) {
        Ok(Some(g)) => g.name,
        _ => gid.to_string(),
    }
}

pub fn owner_label(uid: u32, gid: u32) -> String {
    format!("{}:{}", user_name(uid), group_name(gid))
}

impl Local {
    fn label(&mut self, uid: u32, gid: u32) -> String {
        let u = self
            .names
            .entry((true, uid))
            .or_insert_with(|| user_name(uid))
            .clone();
        let g = self
            .names
            .entry((false, gid))
            .or_insert_with(|| group_name(gid));
        format!("{u}:{g}")
    }

    fn record(&mut self, path: &Path, what: &str, from: &str, to: &str) {
        if self.human {
            // `owner     root:root -> postgres:postgres  /path`
            let line = pgb_common::human::clean(&pgb_common::human::row(
                what,
                &format!(
                    "{from} -> {to}  {}",
                    path.to_string_lossy().replace('\n', "\\n")
                ),
            ));
            self.buf.extend_from_slice(line.as_bytes());
            self.buf.push(b'\n');
            return;
        }
        let b = &mut self.buf;
        b.extend_from_slice(br#"{"schema":""#);
        b.extend_from_slice(SCHEMA.as_bytes());
        b.extend_from_slice(br#"","type":"fixperms","path":"#);
        // Writing JSON into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *b, &path.to_string_lossy());
        b.extend_from_slice(br#","what":""#);
        b.extend_from_slice(what.as_bytes());
        b.extend_from_slice(br#"","from":"#);
        let _ = serde_json::to_writer(&mut *b, from);
        b.extend_from_slice(br#","to":"#);
        let _ = serde_json::to_writer(&mut *b, to);
        b.extend_from_slice(b"}\n");
    }
}

/// The mode bits compared and set: permissions plus setuid, setgid, sticky.
const MODE_BITS: u32 = 0o7777;

impl<'p> Walker<'p> {
    pub fn new(plan: &'p Plan) -> Walker<'p> {
        Walker {
            plan,
            queue: Mutex::new(Queue {
                jobs: Vec::new(),
                busy: 0,
            }),
            cv: Condvar::new(),
            out: Mutex::new(None),
            stop: AtomicBool::new(false),
            changes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            seen_targets: Mutex::new(HashSet::new()),
            owner_label: owner_label(plan.uid, plan.gid),
        }
    }

    /// Repairs the directory `root` (already opened and checked by the
    /// caller) and everything beneath it.
    pub fn run(self, root: OwnedFd, path: PathBuf) -> Outcome {
        let mut local = Local {
            buf: Vec::new(),
            names: HashMap::new(),
            human: self.plan.human,
        };
        let place = if self.plan.data.is_some() {
            Place::DataRoot
        } else {
            Place::Plain
        };
        match fstat(root.as_raw_fd()) {
            Ok(st) => {
                self.fix(root.as_raw_fd(), &st, &path, self.plan.dir_mode, &mut local);
                match Dir::from(root) {
                    Ok(dir) => self.queue.lock().unwrap().jobs.push(Job {
                        mnt: fd_mnt_id(dir.as_raw_fd()),
                        dir,
                        path,
                        dev: st.st_dev,
                        place,
                    }),
                    Err(e) => self.error(&mut local, "read directory", &path, err_cause(e)),
                }
            }
            Err(e) => self.error(&mut local, "stat", &path, err_cause(e)),
        }
        self.flush(&mut local);
        std::thread::scope(|s| {
            for _ in 0..self.plan.threads.max(1) {
                s.spawn(|| self.worker());
            }
        });
        Outcome {
            changes: self.changes.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            output: self.out.into_inner().unwrap(),
        }
    }

    fn worker(&self) {
        let mut local = Local {
            buf: Vec::with_capacity(FLUSH_AT * 2),
            names: HashMap::new(),
            human: self.plan.human,
        };
        loop {
            let job = {
                let mut q = self.queue.lock().unwrap();
                loop {
                    if self.stop.load(Ordering::Relaxed) {
                        break None;
                    }
                    if let Some(j) = q.jobs.pop() {
                        q.busy += 1;
                        break Some(j);
                    }
                    if q.busy == 0 {
                        break None;
                    }
                    q = self.cv.wait(q).unwrap();
                }
            };
            let Some(job) = job else {
                self.cv.notify_all();
                break;
            };
            self.process(job, &mut local);
            self.flush(&mut local);
            let mut q = self.queue.lock().unwrap();
            q.busy -= 1;
            if q.busy == 0 && q.jobs.is_empty() {
                self.cv.notify_all();
            }
        }
    }

    /// Hands a directory to the pool, or walks it here when the queue is full.
    fn schedule(&self, job: Job, local: &mut Local) {
        let mut q = self.queue.lock().unwrap();
        if q.jobs.len() < MAX_QUEUED {
            q.jobs.push(job);
            drop(q);
            self.cv.notify_one();
        } else {
            drop(q);
            self.process(job, local);
        }
    }

    fn process(&self, job: Job, local: &mut Local) {
        let Job {
            mut dir,
            path,
            dev,
            mnt,
            place,
        } = job;
        let dfd = dir.as_raw_fd();
        for entry in dir.iter() {
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    self.error(local, "read directory", &path, err_cause(e));
                    return;
                }
            };
            let name = entry.file_name();
            let bytes = name.to_bytes();
            if bytes == b"." || bytes == b".." {
                continue;
            }
            let p = path.join(OsStr::from_bytes(bytes));
            self.entry(dfd, name, &p, (dev, mnt), place, local);
            if local.buf.len() >= FLUSH_AT {
                self.flush(local);
            }
        }
    }

    fn entry(
        &self,
        dfd: RawFd,
        name: &CStr,
        p: &Path,
        (dev, mnt): (u64, Option<u64>),
        place: Place,
        local: &mut Local,
    ) {
        let st = match fstatat(Some(dfd), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => {
                return self.error(local, "stat", p, "vanished during the walk".into())
            }
            Err(e) => return self.error(local, "stat", p, err_cause(e)),
        };
        let name_os = OsStr::from_bytes(name.to_bytes());
        match file_type(&st) {
            SFlag::S_IFDIR => {
                // pg_wal may be a mount point of its own.
                let own_fs = place == Place::DataRoot && name_os == "pg_wal";
                if st.st_dev != dev && !own_fs {
                    return self.error(
                        local,
                        "refuse",
                        p,
                        "a mount point: not crossed, left alone".into(),
                    );
                }
                let flags =
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
                let fd = match openat(Some(dfd), name, flags, Mode::empty()) {
                    Ok(fd) => own(fd),
                    Err(e) => return self.swapped_or(local, "open", p, e),
                };
                let st2 = match fstat(fd.as_raw_fd()) {
                    Ok(s) => s,
                    Err(e) => return self.error(local, "stat", p, err_cause(e)),
                };
                if !same(&st, &st2) {
                    return self.swapped(local, p);
                }
                let child_mnt = fd_mnt_id(fd.as_raw_fd());
                if other_mount(child_mnt, mnt) && !own_fs {
                    return self.error(
                        local,
                        "refuse",
                        p,
                        "a mount point (a bind mount): not crossed, left alone".into(),
                    );
                }
                self.fix(fd.as_raw_fd(), &st2, p, self.plan.dir_mode, local);
                let child = if place == Place::DataRoot && name_os == "pg_tblspc" {
                    Place::Tblspc
                } else {
                    Place::Plain
                };
                match Dir::from(fd) {
                    Ok(dir) => self.schedule(
                        Job {
                            dir,
                            path: p.to_path_buf(),
                            dev: st2.st_dev,
                            mnt: child_mnt,
                            place: child,
                        },
                        local,
                    ),
                    Err(e) => self.error(local, "read directory", p, err_cause(e)),
                }
            }
            SFlag::S_IFREG => {
                if st.st_dev != dev || other_mount(mnt_id(dfd, name), mnt) {
                    return self.error(
                        local,
                        "refuse",
                        p,
                        "a mount point: not crossed, left alone".into(),
                    );
                }
                if st.st_nlink > 1 && !self.plan.allow_hardlinks {
                    return self.hardlinked(local, p, st.st_nlink as u64);
                }
                if !self.needs(&st, self.plan.file_mode) {
                    return;
                }
                if self.plan.check {
                    return self.fix(-1, &st, p, self.plan.file_mode, local);
                }
                let flags = OFlag::O_RDONLY
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_NONBLOCK
                    | OFlag::O_NOCTTY
                    | OFlag::O_CLOEXEC;
                let fd = match openat(Some(dfd), name, flags, Mode::empty()) {
                    Ok(fd) => own(fd),
                    Err(e) => return self.swapped_or(local, "open", p, e),
                };
                let st2 = match fstat(fd.as_raw_fd()) {
                    Ok(s) => s,
                    Err(e) => return self.error(local, "stat", p, err_cause(e)),
                };
                if !same(&st, &st2) {
                    return self.swapped(local, p);
                }
                if st2.st_nlink > 1 && !self.plan.allow_hardlinks {
                    return self.hardlinked(local, p, st2.st_nlink as u64);
                }
                self.fix(fd.as_raw_fd(), &st2, p, self.plan.file_mode, local);
            }
            SFlag::S_IFLNK => {
                self.fix_link_owner(dfd, name, &st, p, local);
                if place == Place::DataRoot && name_os == "pg_wal" {
                    self.follow(dfd, name, p, Link::Wal, local);
                } else if place == Place::Tblspc && is_oid(name_os) {
                    self.follow(dfd, name, p, Link::Tablespace, local);
                }
            }
            t => {
                let what = match t {
                    SFlag::S_IFIFO => "a FIFO",
                    SFlag::S_IFSOCK => "a socket",
                    SFlag::S_IFCHR => "a character device",
                    SFlag::S_IFBLK => "a block device",
                    _ => "of an unknown type",
                };
                self.error(
                    local,
                    "refuse",
                    p,
                    format!("{what}: not opened, left alone"),
                );
            }
        }
    }

    fn needs(&self, st: &FileStat, mode: u32) -> bool {
        st.st_uid != self.plan.uid || st.st_gid != self.plan.gid || st.st_mode & MODE_BITS != mode
    }

    /// Sets owner and mode through `fd` (ignored in check mode), printing a
    /// record for each change made or, in check mode, needed.
    fn fix(&self, fd: RawFd, st: &FileStat, p: &Path, mode: u32, local: &mut Local) {
        let plan = self.plan;
        if st.st_uid != plan.uid || st.st_gid != plan.gid {
            if !plan.check {
                if let Err(e) = fchown(
                    fd,
                    Some(Uid::from_raw(plan.uid)),
                    Some(Gid::from_raw(plan.gid)),
                ) {
                    return self.error(local, "chown", p, err_cause(e));
                }
            }
            let from = local.label(st.st_uid, st.st_gid);
            local.record(p, "owner", &from, &self.owner_label);
            self.changes.fetch_add(1, Ordering::Relaxed);
        }
        let old = st.st_mode & MODE_BITS;
        if old != mode {
            if !plan.check {
                if let Err(e) = fchmod(fd, Mode::from_bits_truncate(mode)) {
                    return self.error(local, "chmod", p, err_cause(e));
                }
            }
            local.record(p, "mode", &format!("{old:04o}"), &format!("{mode:04o}"));
            self.changes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sets a symlink's own owner, never its target's.
    fn fix_link_owner(&self, dfd: RawFd, name: &CStr, st: &FileStat, p: &Path, local: &mut Local) {
        let plan = self.plan;
        if st.st_uid == plan.uid && st.st_gid == plan.gid {
            return;
        }
        if !plan.check {
            let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let fd = match openat(Some(dfd), name, flags, Mode::empty()) {
                Ok(fd) => own(fd),
                Err(e) => return self.swapped_or(local, "open", p, e),
            };
            match fstat(fd.as_raw_fd()) {
                Ok(st2) if same(st, &st2) => {}
                Ok(_) => return self.swapped(local, p),
                Err(e) => return self.error(local, "stat", p, err_cause(e)),
            }
            if let Err(e) = fchownat(
                Some(fd.as_raw_fd()),
                "",
                Some(Uid::from_raw(plan.uid)),
                Some(Gid::from_raw(plan.gid)),
                AtFlags::AT_EMPTY_PATH | AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                return self.error(local, "chown", p, err_cause(e));
            }
        }
        let from = local.label(st.st_uid, st.st_gid);
        local.record(p, "owner", &from, &self.owner_label);
        self.changes.fetch_add(1, Ordering::Relaxed);
    }

    /// Follows an allowlisted link of a data directory after checking its
    /// target, and repairs the target directory and what it holds.
    fn follow(&self, dfd: RawFd, name: &CStr, p: &Path, link: Link, local: &mut Local) {
        match self.open_target(dfd, name, p, link) {
            Ok(Some((fd, st, target))) => {
                self.fix(fd.as_raw_fd(), &st, &target, self.plan.dir_mode, local);
                let mnt = fd_mnt_id(fd.as_raw_fd());
                match Dir::from(fd) {
                    Ok(dir) => self.schedule(
                        Job {
                            dir,
                            mnt,
                            path: target,
                            dev: st.st_dev,
                            place: Place::Plain,
                        },
                        local,
                    ),
                    Err(e) => self.error(local, "read directory", &target, err_cause(e)),
                }
            }
            Ok(None) => {}
            Err(why) => self.error(local, "follow", p, why),
        }
    }

    fn open_target(
        &self,
        dfd: RawFd,
        name: &CStr,
        p: &Path,
        link: Link,
    ) -> Result<Option<(OwnedFd, FileStat, PathBuf)>, String> {
        let target = PathBuf::from(readlinkat(Some(dfd), name).map_err(err_cause)?);
        let shown = target.display();
        if !target.is_absolute() {
            return Err(format!(
                "the link target {shown} is not an absolute path: not followed"
            ));
        }
        let canon = target
            .canonicalize()
            .map_err(|e| format!("the link target {shown}: {}", io_cause(&e)))?;
        let shown = canon.display();
        if let Some(why) = forbidden(&canon, &self.plan.homes) {
            return Err(format!("the link target {shown} is {why}: not followed"));
        }
        if let Some((data, _)) = &self.plan.data {
            if data.starts_with(&canon) {
                return Err(format!(
                    "the link target {shown} holds the data directory: not followed"
                ));
            }
            if canon.starts_with(data) {
                return Err(format!(
                    "the link target {shown} is inside the data directory: not followed"
                ));
            }
        }
        let fd = open_dir_nofollow(&canon)
            .map_err(|e| format!("the link target {shown}: {}", err_cause(e)))?;
        let st = fstat(fd.as_raw_fd()).map_err(err_cause)?;
        // A target another account owns is not the cluster's to take over
        // (root's is what a restore as root leaves, and is repaired).
        if st.st_uid != self.plan.uid && st.st_uid != 0 {
            return Err(format!(
                "the link target {shown} belongs to {}, not to the cluster's owner: not followed (give it to {} first if it is the cluster's)",
                user_name(st.st_uid),
                self.owner_label
            ));
        }
        match link {
            Link::Wal => {
                let ok = fstatat(
                    Some(fd.as_raw_fd()),
                    "archive_status",
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map(|s| file_type(&s) == SFlag::S_IFDIR)
                .unwrap_or(false);
                if !ok {
                    return Err(format!(
                        "the link target {shown} holds no archive_status directory: not a WAL directory, not followed"
                    ));
                }
            }
            Link::Tablespace => {
                let major = self.plan.data.as_ref().map(|d| d.1.as_str()).unwrap_or("");
                let prefix = format!("PG_{major}_");
                let found = has_version_dir(fd.as_raw_fd(), &prefix).map_err(err_cause)?;
                if !found {
                    return Err(format!(
                        "the link target {shown} holds no {prefix}* directory: not a tablespace of this cluster, not followed"
                    ));
                }
            }
        }
        if !self
            .seen_targets
            .lock()
            .unwrap()
            .insert((st.st_dev, st.st_ino))
        {
            return Ok(None);
        }
        let _ = p;
        Ok(Some((fd, st, canon)))
    }

    fn hardlinked(&self, local: &mut Local, p: &Path, n: u64) {
        self.error(
            local,
            "refuse",
            p,
            format!("{n} hard links, so it may be a file outside the tree: left alone (--allow-hardlinks accepts them)"),
        );
    }

    fn swapped(&self, local: &mut Local, p: &Path) {
        self.error(
            local,
            "open",
            p,
            "changed during the walk: left alone".into(),
        );
    }

    fn swapped_or(&self, local: &mut Local, op: &str, p: &Path, e: Errno) {
        match e {
            // O_NOFOLLOW met a symlink, O_DIRECTORY a non-directory, or the
            // name went away: swapped after it was listed.
            Errno::ELOOP | Errno::ENOTDIR | Errno::ENOENT => self.swapped(local, p),
            e => self.error(local, op, p, err_cause(e)),
        }
    }

    /// Reports a refused or failed entry on stderr and as an error record.
    fn error(&self, local: &mut Local, op: &str, p: &Path, cause: String) {
        let msg = format!("{op}: {}: {cause}", p.display());
        warn(&msg);
        let mut ctx = serde_json::Map::new();
        ctx.insert("path".into(), p.to_string_lossy().into());
        let rec = error_record("pgb-fixperms", &msg, None, ctx);
        if local.human {
            let line = pgb_common::human::clean(&pgb_common::human::error(&rec));
            local.buf.extend_from_slice(line.as_bytes());
        } else {
            let _ = serde_json::to_writer(&mut local.buf, &rec);
        }
        local.buf.push(b'\n');
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes the worker's records (whole lines) to stdout and flushes.
    fn flush(&self, local: &mut Local) {
        if local.buf.is_empty() {
            return;
        }
        let mut failed = self.out.lock().unwrap();
        if failed.is_none() {
            let mut so = io::stdout().lock();
            if let Err(e) = so.write_all(&local.buf).and_then(|_| so.flush()) {
                *failed = Some(Error::io("write", "stdout", e));
                self.stop.store(true, Ordering::Relaxed);
                self.cv.notify_all();
            }
        }
        local.buf.clear();
    }
}

#[derive(Clone, Copy)]
enum Link {
    Wal,
    Tablespace,
}

/// True when the directory `fd` holds a directory whose name starts with
/// `prefix`.
fn has_version_dir(fd: RawFd, prefix: &str) -> nix::Result<bool> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut dir = Dir::from(own(openat(Some(fd), ".", flags, Mode::empty())?))?;
    for e in dir.iter() {
        let e = e?;
        if e.file_name().to_bytes().starts_with(prefix.as_bytes()) {
            let st = fstatat(Some(fd), e.file_name(), AtFlags::AT_SYMLINK_NOFOLLOW)?;
            if file_type(&st) == SFlag::S_IFDIR {
                return Ok(true);
            }
        }
    }
    Ok(false)
}
