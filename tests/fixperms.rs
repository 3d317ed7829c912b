//! pgb-fixperms: repairs real data directories (the cluster starts
//! afterwards), keeps group access, follows tablespace links, and cannot be
//! turned against a root-owned canary outside the tree by symlinks, hard
//! links, FIFOs, devices or a directory swapped while it runs.

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::CommandFactory;
use serde_json::Value;

use crate::man::fixperms_cli as cli;
use crate::util::{bin, is_root, records, run, Cluster, Options, Scratch};

fn skip_unless_root(test: &str) -> bool {
    if !is_root() {
        eprintln!("{test}: skipped: needs root (chown to other users)");
    }
    !is_root()
}

/// Runs pgb-fixperms, killing it (and failing) if it hangs, as it would on
/// opening a FIFO.
fn fixperms(args: &[&str], path: &Path) -> Output {
    let child = Command::new(bin("pgb-fixperms"))
        .args(args)
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            panic!("pgb-fixperms {args:?} {} hung", path.display());
        }
    }
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited, not killed")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The change records, sorted (the walk runs on several threads).
fn changes(out: &Output) -> Vec<Value> {
    let mut v: Vec<Value> = records(&out.stdout)
        .into_iter()
        .filter(|r| r["type"] == "fixperms")
        .collect();
    for r in &v {
        assert_eq!(r["schema"], "pgb.v1");
        assert!(r["what"] == "owner" || r["what"] == "mode", "{r}");
    }
    v.sort_by_key(|r| r.to_string());
    v
}

fn errors(out: &Output) -> Vec<Value> {
    records(&out.stdout)
        .into_iter()
        .filter(|r| r["type"] == "error")
        .collect()
}

fn postgres_ids() -> (u32, u32) {
    let pg = nix::unistd::User::from_name("postgres").unwrap().unwrap();
    (pg.uid.as_raw(), pg.gid.as_raw())
}

/// Owner, group, mode bits and ctime of a path, not following a symlink.
/// Any chown or chmod, even to the same values, moves the ctime.
fn stamp(p: &Path) -> (u32, u32, u32, i64, i64) {
    let m = fs::symlink_metadata(p).unwrap();
    (
        m.uid(),
        m.gid(),
        m.mode() & 0o7777,
        m.ctime(),
        m.ctime_nsec(),
    )
}

/// As a root restore leaves it: everything root:root, directories 0755,
/// files 0644 (symlinks are not followed).
fn mess(p: &Path) {
    run(Command::new("chown").args(["-R", "root:root"]).arg(p));
    run(Command::new("chmod").args(["-R", "u=rwX,go=rX"]).arg(p));
}

/// Every directory and file below `p` (and `p`) has the owner and modes;
/// returns how many were checked.
fn assert_tree(p: &Path, dir_mode: u32, file_mode: u32) -> usize {
    let (uid, gid) = postgres_ids();
    let m = fs::symlink_metadata(p).unwrap();
    assert_eq!((m.uid(), m.gid()), (uid, gid), "owner of {}", p.display());
    let mut n = 1;
    if m.is_dir() {
        assert_eq!(m.mode() & 0o7777, dir_mode, "mode of {}", p.display());
        for e in fs::read_dir(p).unwrap() {
            n += assert_tree(&e.unwrap().path(), dir_mode, file_mode);
        }
    } else if m.is_file() {
        assert_eq!(m.mode() & 0o7777, file_mode, "mode of {}", p.display());
    }
    n
}

/// A canary outside the tree: a root-owned directory 0755 holding a
/// root-owned file 0600.
struct Canary {
    dir: PathBuf,
    file: PathBuf,
    before: Vec<(u32, u32, u32, i64, i64)>,
}

impl Canary {
    fn new(scratch: &Scratch) -> Canary {
        let dir = scratch.path.join("canary-dir");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let file = dir.join("canary");
        fs::write(&file, "secret\n").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        nix::unistd::chown(&dir, Some(0.into()), Some(0.into())).unwrap();
        nix::unistd::chown(&file, Some(0.into()), Some(0.into())).unwrap();
        let before = vec![stamp(&dir), stamp(&file)];
        Canary { dir, file, before }
    }

    /// Takes the reference state again (linking the canary moves its ctime).
    fn arm(&mut self) {
        self.before = vec![stamp(&self.dir), stamp(&self.file)];
    }

    fn assert_untouched(&self) {
        assert_eq!(
            vec![stamp(&self.dir), stamp(&self.file)],
            self.before,
            "the canary was changed"
        );
        assert_eq!(stamp(&self.file).0, 0);
    }
}

/// A small repository tree owned by root, 0755/0644.
fn repo_tree(scratch: &Scratch) -> PathBuf {
    let repo = scratch.path.join("repo");
    fs::create_dir_all(repo.join("main/logical/appdb")).unwrap();
    fs::create_dir_all(repo.join("main/physical/x")).unwrap();
    for f in [
        "main/logical/appdb/a.dump.zst",
        "main/physical/x/base.tar",
        ".pgb.lock",
    ] {
        fs::write(repo.join(f), "x").unwrap();
    }
    mess(&repo);
    repo
}

#[test]
fn clap_definitions_are_consistent() {
    cli::Args::command().debug_assert();
}

#[test]
fn help_lists_every_flag() {
    let out = run(Command::new(bin("pgb-fixperms")).arg("--help"));
    let help = String::from_utf8(out.stdout).unwrap();
    for arg in cli::Args::command().get_arguments() {
        if let Some(long) = arg.get_long() {
            assert!(help.contains(&format!("--{long}")), "--help lacks --{long}");
        }
    }
}

#[test]
fn data_directory_restored_as_root_is_repaired_and_starts() {
    if skip_unless_root("data_directory_restored_as_root_is_repaired_and_starts") {
        return;
    }
    let c = Cluster::new();
    let ts = c.scratch.owned_dir("ts");
    c.sql(
        "postgres",
        &format!(
            "CREATE TABLESPACE extra LOCATION '{}';
             CREATE TABLE spaced (n int) TABLESPACE extra;
             INSERT INTO spaced SELECT generate_series(1, 1000);
             CHECKPOINT;",
            ts.display()
        ),
    );
    c.stop();
    // A restore as root: the top directory made with umask 077, everything
    // in it 0755/0644 as the archive had it; the tablespace likewise.
    mess(&c.data);
    mess(&ts);
    fs::set_permissions(&c.data, fs::Permissions::from_mode(0o700)).unwrap();

    let check = fixperms(&["--check"], &c.data);
    assert_eq!(code(&check), 1, "{}", stderr(&check));
    let planned = changes(&check);
    let ts_canon = ts.canonicalize().unwrap();
    assert!(planned.iter().any(|r| r["path"]
        .as_str()
        .unwrap()
        .starts_with(ts_canon.to_str().unwrap())));
    assert!(planned.contains(&serde_json::json!({
        "schema": "pgb.v1", "type": "fixperms",
        "path": c.data.canonicalize().unwrap().join("PG_VERSION").to_str().unwrap(),
        "what": "mode", "from": "0644", "to": "0600"
    })));
    // The check changed nothing.
    assert_eq!(stamp(&c.data.join("PG_VERSION")).0, 0);

    let apply = fixperms(&[], &c.data);
    assert_eq!(code(&apply), 0, "{}", stderr(&apply));
    assert_eq!(
        changes(&apply),
        planned,
        "apply made exactly the planned changes"
    );
    assert!(assert_tree(&c.data, 0o700, 0o600) > 100);
    assert!(assert_tree(&ts, 0o700, 0o600) > 3);
    // The pg_tblspc link itself is postgres's too.
    let link = fs::read_dir(c.data.join("pg_tblspc"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(stamp(&link).0, postgres_ids().0);

    let again = fixperms(&[], &c.data);
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    assert!(again.stdout.is_empty(), "second run changed something");
    let clean = fixperms(&["--check"], &c.data);
    assert_eq!(code(&clean), 0);
    assert!(clean.stdout.is_empty());

    c.start();
    assert_eq!(c.sql("postgres", "SELECT count(*) FROM spaced"), "1000");
}

#[test]
fn group_access_cluster_keeps_0750_0640() {
    if skip_unless_root("group_access_cluster_keeps_0750_0640") {
        return;
    }
    let c = Cluster::with(Options {
        initdb_args: vec!["-g".into()],
        ..Options::default()
    });
    c.stop();
    assert_eq!(stamp(&c.data).2, 0o750);
    run(Command::new("chown").args(["-R", "root:root"]).arg(&c.data));
    fs::set_permissions(c.data.join("base"), fs::Permissions::from_mode(0o777)).unwrap();
    fs::set_permissions(c.data.join("PG_VERSION"), fs::Permissions::from_mode(0o666)).unwrap();

    let out = fixperms(&[], &c.data);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let modes: Vec<Value> = changes(&out)
        .into_iter()
        .filter(|r| r["what"] == "mode")
        .collect();
    assert_eq!(
        modes.len(),
        2,
        "only the two broken modes change: {modes:?}"
    );
    assert!(modes.iter().all(|r| r["to"] == "0750" || r["to"] == "0640"));
    assert_tree(&c.data, 0o750, 0o640);
    c.start();
    assert_eq!(c.sql("postgres", "SHOW data_directory_mode"), "0750");
}

#[test]
fn check_on_a_clean_repository_prints_nothing() {
    if skip_unless_root("check_on_a_clean_repository_prints_nothing") {
        return;
    }
    let s = Scratch::new("fixperms");
    let repo = repo_tree(&s);
    let check = fixperms(&["--check", "--repo"], &repo);
    assert_eq!(code(&check), 1);
    // 6 directories and 3 files, owner and mode each.
    assert_eq!(changes(&check).len(), 18, "{:?}", changes(&check));
    let apply = fixperms(&["--repo"], &repo);
    assert_eq!(code(&apply), 0, "{}", stderr(&apply));
    assert_eq!(changes(&apply), changes(&check));
    assert_tree(&repo, 0o700, 0o600);
    let clean = fixperms(&["--check", "--repo"], &repo);
    assert_eq!(code(&clean), 0, "{}", stderr(&clean));
    assert!(clean.stdout.is_empty() && clean.stderr.is_empty());
    // Another owner, given by name.
    let out = fixperms(&["--owner", "nobody:nogroup", "--repo"], &repo);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(changes(&out).iter().all(|r| r["to"] == "nobody:nogroup"));
}

#[test]
fn symlinks_and_hard_links_never_reach_the_canary() {
    if skip_unless_root("symlinks_and_hard_links_never_reach_the_canary") {
        return;
    }
    let s = Scratch::new("fixperms");
    let mut canary = Canary::new(&s);
    let repo = repo_tree(&s);
    symlink(&canary.file, repo.join("main/to-file")).unwrap();
    symlink(&canary.dir, repo.join("main/to-dir")).unwrap();
    fs::hard_link(&canary.file, repo.join("main/logical/hard")).unwrap();
    canary.arm();

    let out = fixperms(&["--repo"], &repo);
    assert_eq!(code(&out), 2, "the hard link is refused");
    assert!(stderr(&out).contains("hard links"), "{}", stderr(&out));
    assert_eq!(errors(&out).len(), 1);
    canary.assert_untouched();
    // The rest was repaired, the symlinks' own owner included.
    assert_eq!(stamp(&repo.join("main/to-dir")).0, postgres_ids().0);
    assert_eq!(stamp(&repo.join("main/logical/appdb/a.dump.zst")).2, 0o600);

    fs::remove_file(repo.join("main/logical/hard")).unwrap();
    canary.arm();
    let out = fixperms(&["--repo"], &repo);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    canary.assert_untouched();

    // In a data directory the allowlisted links are followed only to
    // targets that look like what they should be.
    let data = s.path.join("data");
    fs::create_dir_all(data.join("pg_tblspc")).unwrap();
    fs::write(data.join("PG_VERSION"), "15\n").unwrap();
    symlink(&canary.dir, data.join("pg_wal")).unwrap();
    symlink(&canary.dir, data.join("pg_tblspc/16384")).unwrap();
    symlink("relative/path", data.join("pg_tblspc/16385")).unwrap();
    symlink("/etc", data.join("pg_tblspc/16386")).unwrap();
    let out = fixperms(&[], &data);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(err.contains("no archive_status"), "{err}");
    assert!(err.contains("holds no PG_15_"), "{err}");
    assert!(err.contains("not an absolute path"), "{err}");
    assert!(err.contains("a system directory"), "{err}");
    assert_eq!(errors(&out).len(), 4);
    canary.assert_untouched();
}

#[test]
fn a_directory_swapped_for_a_symlink_mid_walk_never_reaches_the_canary() {
    if skip_unless_root("a_directory_swapped_for_a_symlink_mid_walk_never_reaches_the_canary") {
        return;
    }
    use nix::fcntl::{renameat2, RenameFlags};
    let s = Scratch::new("fixperms");
    let canary = Canary::new(&s);
    let repo = s.path.join("repo");
    let sub = repo.join("sub");
    fs::create_dir_all(sub.join("deeper")).unwrap();
    for i in 0..300 {
        fs::write(sub.join(format!("f{i}")), "x").unwrap();
        fs::write(sub.join(format!("deeper/g{i}")), "x").unwrap();
    }
    fs::write(repo.join("file"), "x").unwrap();
    symlink(&canary.dir, repo.join("evil")).unwrap();
    symlink(&canary.file, repo.join("flink")).unwrap();
    mess(&repo);
    // Descriptors of the real directory and file, to break them again
    // between runs whatever name they have at the moment.
    let real_dir = fs::File::open(&sub).unwrap();
    let real_file = fs::File::open(repo.join("file")).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let racer = {
        let (stop, repo) = (stop.clone(), repo.clone());
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for (a, b) in [("sub", "evil"), ("file", "flink")] {
                    renameat2(
                        None,
                        &repo.join(a),
                        None,
                        &repo.join(b),
                        RenameFlags::RENAME_EXCHANGE,
                    )
                    .unwrap();
                    swaps += 1;
                }
            }
            swaps
        })
    };
    let start = Instant::now();
    let mut runs = 0;
    let mut refused = 0;
    while start.elapsed() < Duration::from_secs(3) && runs < 200 {
        for fd in [real_dir.as_raw_fd(), real_file.as_raw_fd()] {
            nix::unistd::fchown(fd, Some(0.into()), Some(0.into())).unwrap();
            nix::sys::stat::fchmod(fd, nix::sys::stat::Mode::from_bits_truncate(0o755)).unwrap();
        }
        let out = fixperms(&["--repo"], &repo);
        let c = code(&out);
        assert!(c == 0 || c == 2, "exit {c}: {}", stderr(&out));
        if c == 2 {
            refused += 1;
            assert!(
                stderr(&out).contains("changed during the walk")
                    || stderr(&out).contains("vanished during the walk"),
                "{}",
                stderr(&out)
            );
        }
        runs += 1;
        canary.assert_untouched();
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = racer.join().unwrap();
    eprintln!("{runs} runs, {refused} saw a swap, {swaps} swaps");
    assert!(runs >= 5 && swaps > 1000);
    canary.assert_untouched();
}

#[test]
fn fifos_sockets_and_devices_are_refused_not_opened() {
    if skip_unless_root("fifos_sockets_and_devices_are_refused_not_opened") {
        return;
    }
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    let s = Scratch::new("fixperms");
    let repo = repo_tree(&s);
    nix::unistd::mkfifo(&repo.join("fifo"), Mode::from_bits_truncate(0o644)).unwrap();
    mknod(
        &repo.join("null"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(1, 3),
    )
    .unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(repo.join("sock")).unwrap();
    let before: Vec<_> = ["fifo", "null", "sock"]
        .iter()
        .map(|n| stamp(&repo.join(n)))
        .collect();

    // A FIFO opened for reading without a writer would hang the run.
    let out = fixperms(&["--repo"], &repo);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    for what in ["a FIFO", "a character device", "a socket"] {
        assert!(err.contains(&format!("{what}: not opened")), "{err}");
    }
    let after: Vec<_> = ["fifo", "null", "sock"]
        .iter()
        .map(|n| stamp(&repo.join(n)))
        .collect();
    assert_eq!(before, after, "special files were touched");
    assert_eq!(errors(&out).len(), 3);
    assert!(errors(&out)
        .iter()
        .all(|e| e["tool"] == "pgb-fixperms" && e["path"].is_string()));
    // Everything else was repaired.
    assert_eq!(stamp(&repo.join("main/physical/x/base.tar")).2, 0o600);
}

#[test]
fn refuses_root_homes_non_data_directories_and_a_running_postmaster() {
    for p in ["/", "/etc", "/var/lib/postgresql", "/root"] {
        if !Path::new(p).exists() {
            continue;
        }
        let out = fixperms(&["--repo"], Path::new(p));
        assert_eq!(code(&out), 2, "{p}");
        assert!(out.stdout.is_empty());
        assert!(
            stderr(&out).starts_with("pgb-fixperms: refuse: "),
            "{}",
            stderr(&out)
        );
    }

    let s = Scratch::new("fixperms");
    let plain = s.path.join("plain");
    fs::create_dir(&plain).unwrap();
    fs::write(plain.join("f"), "x").unwrap();
    fs::set_permissions(plain.join("f"), fs::Permissions::from_mode(0o644)).unwrap();
    let before = stamp(&plain.join("f"));
    let out = fixperms(&[], &plain);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("not a PostgreSQL data directory"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stamp(&plain.join("f")), before);

    let c = Cluster::new();
    let conf = c.data.join("postgresql.auto.conf");
    fs::set_permissions(&conf, fs::Permissions::from_mode(0o644)).unwrap();
    let before = stamp(&conf);
    let out = fixperms(&[], &c.data);
    assert_eq!(code(&out), 2);
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains("a postmaster (process "),
        "{}",
        stderr(&out)
    );
    let out = fixperms(&["--check"], &c.data);
    assert_eq!(code(&out), 2);
    assert_eq!(stamp(&conf), before, "nothing changed");
    // A data directory is not a repository.
    let out = fixperms(&["--repo"], &c.data);
    assert_eq!(code(&out), 2);
}

/// Unmounts when dropped, even after a failed assertion.
struct BindMount(PathBuf);

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_bind_mount_of_the_same_filesystem_is_not_crossed() {
    if skip_unless_root("a_bind_mount_of_the_same_filesystem_is_not_crossed") {
        return;
    }
    let s = Scratch::new("fixperms-bind");
    let canary = Canary::new(&s);
    let repo = repo_tree(&s);
    // The canary's directory bind-mounted inside the tree: same device
    // number, another mount.
    let inside = repo.join("main/bound");
    fs::create_dir(&inside).unwrap();
    run(Command::new("mount")
        .arg("--bind")
        .arg(&canary.dir)
        .arg(&inside));
    let _m = BindMount(inside.clone());
    // And a single file bind-mounted over one of the tree's.
    let file = repo.join("main/logical/appdb/a.dump.zst");
    run(Command::new("mount")
        .arg("--bind")
        .arg(&canary.file)
        .arg(&file));
    let _f = BindMount(file.clone());
    assert_eq!(
        fs::metadata(&inside).unwrap().dev(),
        fs::metadata(&repo).unwrap().dev()
    );
    let out = fixperms(&["--repo"], &repo);
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{err}");
    assert!(
        err.contains("bound") && err.contains("a mount point"),
        "{err}"
    );
    assert!(err.contains("a.dump.zst"), "{err}");
    canary.assert_untouched();
    // The rest of the tree was repaired.
    assert_eq!(stamp(&repo.join("main/physical/x/base.tar")).2, 0o600);
}

#[test]
fn a_wal_link_to_another_accounts_directory_is_not_taken_over() {
    if skip_unless_root("a_wal_link_to_another_accounts_directory_is_not_taken_over") {
        return;
    }
    let s = Scratch::new("fixperms-other");
    let data = s.path.join("data");
    fs::create_dir_all(data.join("pg_tblspc")).unwrap();
    fs::write(data.join("PG_VERSION"), "15\n").unwrap();
    // A WAL directory that looks right but belongs to `nobody`.
    let wal = s.path.join("elsewhere-wal");
    fs::create_dir_all(wal.join("archive_status")).unwrap();
    fs::write(wal.join("000000010000000000000001"), "x").unwrap();
    run(Command::new("chown")
        .args(["-R", "nobody:nogroup"])
        .arg(&wal));
    symlink(&wal, data.join("pg_wal")).unwrap();
    let before = stamp(&wal.join("000000010000000000000001"));
    let out = fixperms(&[], &data);
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{err}");
    assert!(err.contains("belongs to nobody"), "{err}");
    assert_eq!(stamp(&wal.join("000000010000000000000001")), before);
    assert_eq!(stamp(&wal).0, stamp(&wal.join("archive_status")).0);
    // Given to the cluster's owner first, it is followed and repaired.
    let (uid, gid) = postgres_ids();
    run(Command::new("chown").arg(format!("{uid}:{gid}")).arg(&wal));
    let out = fixperms(&[], &data);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stamp(&wal.join("000000010000000000000001")).0, uid);
}
