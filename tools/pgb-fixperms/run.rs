//! Drives one pgb-fixperms run: resolve the owner, check the directory is
//! one we may repair (and that no postmaster runs on it), pick the modes,
//! walk, and map the outcome to an exit status.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::signal::kill;
use nix::sys::stat::{fstat, fstatat, Mode, SFlag};
use nix::unistd::{Group, Pid, User};
use pgb_common::error::{Error, IoContext, Result};
use pgb_common::term::warn;
use pgb_common::ExitStatus;

use crate::cli::Args;
use crate::guard::{forbidden, home_dirs, open_dir_nofollow};
use crate::walk::{Plan, Walker};

pub fn run(args: Args) -> ExitStatus {
    pgb_common::term::finish(try_run(args))
}

fn refuse(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::msg(format!("refuse: {}: {why}", path.display()))
}

fn try_run(args: Args) -> Result<ExitStatus> {
    let (given, repo) = match (&args.dir, &args.repo) {
        (Some(d), None) => (d.clone(), false),
        (None, Some(r)) => (r.clone(), true),
        _ => return Err(Error::Usage("give a data directory or --repo DIR".into())),
    };
    let (uid, gid) = resolve_owner(args.owner.as_deref())?;

    let canon = given.canonicalize().ctx("resolve", &given)?;
    let homes = home_dirs();
    if let Some(why) = forbidden(&canon, &homes) {
        return Err(refuse(&canon, format!("{why}: never repaired")));
    }
    let root = open_dir_nofollow(&canon).map_err(|e| Error::io("open", &canon, e.into()))?;
    let st = fstat(root.as_raw_fd()).map_err(|e| Error::io("stat", &canon, e.into()))?;

    let is_data = fstatat(
        Some(root.as_raw_fd()),
        "PG_VERSION",
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map(|s| s.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFREG.bits())
    .unwrap_or(false);
    let data = match (is_data, repo) {
        (false, false) => {
            return Err(refuse(
                &canon,
                "not a PostgreSQL data directory (no PG_VERSION); give --repo DIR to repair a backup repository",
            ))
        }
        (true, true) => {
            return Err(refuse(
                &canon,
                "a PostgreSQL data directory, not a backup repository: give it without --repo",
            ))
        }
        (true, false) => {
            let version = read_small(&root, "PG_VERSION", &canon)?;
            let major = version.trim().to_string();
            if major.is_empty() || !major.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                return Err(refuse(
                    &canon.join("PG_VERSION"),
                    format!("not a PostgreSQL version: {major:?}"),
                ));
            }
            check_postmaster(&root, &canon, args.force)?;
            Some((canon.clone(), major))
        }
        (false, true) => None,
    };

    // PostgreSQL's own rule (miscinit.c): group access when the data
    // directory's mode grants the group read and search.
    let group = data.is_some()
        && (args.group_access || (!args.no_group_access && st.st_mode & 0o050 == 0o050));
    let (dir_mode, file_mode) = if group {
        (0o750, 0o640)
    } else {
        (0o700, 0o600)
    };
    let threads = args.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(8)
    });
    let plan = Plan {
        uid,
        gid,
        dir_mode,
        file_mode,
        check: args.check,
        allow_hardlinks: args.allow_hardlinks,
        data,
        homes,
        threads,
        human: pgb_common::human_wanted(args.json),
    };
    let outcome = Walker::new(&plan).run(root, canon);
    if let Some(e) = outcome.output {
        return Err(e);
    }
    if plan.human {
        // The last line on a terminal: what the run came to.
        let verb = if plan.check { "needed" } else { "made" };
        let mut line = match outcome.changes {
            0 => "nothing to change".to_string(),
            1 => format!("1 change {verb}"),
            n => format!("{n} changes {verb}"),
        };
        if outcome.errors > 0 {
            line.push_str(&format!("; {} entries refused or failed", outcome.errors));
        }
        use std::io::Write;
        let mut so = std::io::stdout().lock();
        writeln!(so, "{line}")
            .and_then(|_| so.flush())
            .map_err(|e| Error::io("write", "stdout", e))?;
    }
    Ok(if outcome.errors > 0 {
        ExitStatus::Error
    } else if plan.check && outcome.changes > 0 {
        ExitStatus::No
    } else {
        ExitStatus::Ok
    })
}

/// `USER[:GROUP]`, names or numbers; USER alone means its primary group.
fn resolve_owner(spec: Option<&str>) -> Result<(u32, u32)> {
    let spec = spec.unwrap_or("postgres");
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let bad = |m: String| Error::Usage(format!("--owner {spec}: {m}"));
    let user = match User::from_name(u) {
        Ok(Some(user)) => Some(user),
        _ => match u.parse::<u32>() {
            Ok(n) => User::from_uid(n.into()).ok().flatten(),
            Err(_) => {
                return Err(bad(format!(
                    "no user {u:?} on this system{}",
                    if spec == "postgres" && g.is_none() {
                        " (give --owner USER[:GROUP])"
                    } else {
                        ""
                    }
                )))
            }
        },
    };
    let uid = match (&user, u.parse::<u32>()) {
        (Some(user), _) => user.uid.as_raw(),
        (None, Ok(n)) => n,
        (None, Err(_)) => unreachable!("names were resolved above"),
    };
    let gid = match g {
        None | Some("") => match &user {
            Some(user) => user.gid.as_raw(),
            None => {
                return Err(bad(format!(
                    "uid {uid} has no passwd entry: give its group"
                )))
            }
        },
        Some(g) => match Group::from_name(g) {
            Ok(Some(grp)) => grp.gid.as_raw(),
            _ => g
                .parse::<u32>()
                .map_err(|_| bad(format!("no group {g:?} on this system")))?,
        },
    };
    Ok((uid, gid))
}

/// Reads a small regular file of the directory `dir` without following a
/// symlink.
fn read_small(dir: &OwnedFd, name: &str, dir_path: &Path) -> Result<String> {
    let path = dir_path.join(name);
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let raw = openat(Some(dir.as_raw_fd()), name, flags, Mode::empty())
        .map_err(|e| Error::io("open", &path, e.into()))?;
    // SAFETY: openat returned a new descriptor owned by nobody else.
    let f = unsafe { std::fs::File::from_raw_fd(raw) };
    let meta = f.metadata().ctx("stat", &path)?;
    if !meta.is_file() {
        return Err(refuse(&path, "not a regular file"));
    }
    let mut s = String::new();
    f.take(4096).read_to_string(&mut s).ctx("read", &path)?;
    Ok(s)
}

/// Refuses a data directory a live postmaster runs on: postmaster.pid's
/// first line names a process that exists.
fn check_postmaster(dir: &OwnedFd, dir_path: &Path, force: bool) -> Result<()> {
    let path: PathBuf = dir_path.join("postmaster.pid");
    let text = match read_small(dir, "postmaster.pid", dir_path) {
        Ok(t) => t,
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(())
        }
        Err(e) => return Err(e),
    };
    let pid = text.lines().next().unwrap_or("").trim().parse::<i32>();
    let live = match pid {
        Ok(n) if n > 0 => match kill(Pid::from_raw(n), None) {
            Ok(()) | Err(Errno::EPERM) => Some(n),
            Err(_) => None,
        },
        _ => {
            let why = "names no process ID; if no postmaster runs here, remove it or use --force";
            if force {
                warn(format!("{}: {why}: going on (--force)", path.display()));
                return Ok(());
            }
            return Err(refuse(&path, why));
        }
    };
    match live {
        Some(n) if force => {
            warn(format!(
                "{}: process {n} is alive; going on because of --force",
                path.display()
            ));
            Ok(())
        }
        Some(n) => Err(refuse(
            &path,
            format!("a postmaster (process {n}) runs on this data directory: stop it first (--force only for a stale pid file whose number was reused)"),
        )),
        None => {
            warn(format!(
                "{}: stale (no process {}); going on",
                path.display(),
                text.lines().next().unwrap_or("").trim()
            ));
            Ok(())
        }
    }
}
