//! pgb-restore: point-in-time recovery drills on real clusters (plain and
//! encrypted backups; time, restore point and LSN targets), refusal when
//! the archive lacks WAL, logical restores of a set into a fresh cluster,
//! and pgb-verify's physical test restore.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::check_archive::{archiving_cluster, wait_archived, Archived};
use crate::util::*;

/// Runs a tool with `input` on stdin.
fn piped(mut cmd: Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// A physical backup of `c` into `repo`; returns its record.
fn physical_backup(c: &Cluster, repo: &Path) -> Value {
    let out = run(c
        .tool("pgb-snapshot")
        .args(["--physical", "--cluster", "main", "-o"])
        .arg(repo));
    let recs = records(&out.stdout);
    assert_eq!(recs.len(), 1, "{recs:?}");
    recs.into_iter().next().unwrap()
}

/// Switches to a new WAL segment and waits until the finished one is
/// archived.
fn switch_and_archive(a: &Archived) {
    let name = a
        .cluster
        .sql("postgres", "SELECT pg_walfile_name(pg_switch_wal())");
    wait_archived(&a.cluster, &a.dir, &name);
}

/// A restored data directory started as the cluster owner on its own
/// socket, stopped when dropped.
struct Restored {
    data: PathBuf,
    sock: PathBuf,
    log: PathBuf,
}

impl Restored {
    fn start(data: &Path, s: &Scratch, tag: &str) -> Restored {
        Self::start_with(data, s, tag, "-c archive_mode=off")
    }

    /// Starts it with `opts` for the server (the backed-up cluster's own
    /// archive_command stays in force without `-c archive_mode=off`).
    fn start_with(data: &Path, s: &Scratch, tag: &str, opts: &str) -> Restored {
        let sock = s.owned_dir(&format!("sock-{tag}"));
        let log = s.path.join(format!("{tag}.log"));
        let r = Restored {
            data: data.to_path_buf(),
            sock,
            log,
        };
        let o = as_owner(pg_bin("pg_ctl"))
            .arg("-D")
            .arg(data)
            .arg("-l")
            .arg(&r.log)
            .arg("-o")
            .arg(format!(
                "-c unix_socket_directories={} {opts} -c log_min_messages=log",
                r.sock.display()
            ))
            .args(["-w", "-t", "120", "start"])
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "pg_ctl start: {}\n{}",
            stderr(&o),
            r.log()
        );
        r
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn try_sql(&self, sql: &str) -> Option<String> {
        let o = Command::new(pg_bin("psql"))
            .args(["-X", "-A", "-t", "-U", "postgres", "-d", "postgres", "-h"])
            .arg(&self.sock)
            .args(["-c", sql])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
    }

    fn sql(&self, sql: &str) -> String {
        self.try_sql(sql)
            .unwrap_or_else(|| panic!("{sql} failed on the restored cluster:\n{}", self.log()))
    }

    /// Waits until recovery reached its target and the server promoted.
    fn wait_promoted(&self) {
        let t0 = Instant::now();
        while self.try_sql("SELECT pg_is_in_recovery()").as_deref() != Some("f") {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "not promoted in 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Restored {
    fn drop(&mut self) {
        let _ = as_owner(pg_bin("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn restore(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut c = Command::new(bin("pgb-restore"));
    for a in args {
        c.arg(a);
    }
    c.env("PGB_PG_BINDIR", pg_bindir())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(o: &Output) -> Value {
    assert_eq!(code(o), 0, "{}", stderr(o));
    let recs = records(&o.stdout);
    assert_eq!(recs.len(), 1, "{recs:?}");
    let r = recs.into_iter().next().unwrap();
    assert_eq!(r["type"], "restore", "{r}");
    assert_eq!(r["ok"], true, "{r}");
    r
}

/// Table `t` with rows 1..=100 ('before backup').
fn table_t(c: &Cluster) {
    c.sql(
        "postgres",
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT i, 'before backup' FROM generate_series(1, 100) i;",
    );
}

/// Rows 101..=200 ('after backup'), then the server's time, then a second
/// more, so that what is written next is after the time noted.
fn write_then_note_the_time(c: &Cluster) -> String {
    c.sql(
        "postgres",
        "INSERT INTO t SELECT i, 'after backup' FROM generate_series(101, 200) i;",
    );
    let noted = c.sql("postgres", "SELECT now()");
    std::thread::sleep(Duration::from_millis(1100));
    noted
}

/// An age key pair in `dir`: (identity file, recipient).
fn age_key(dir: &Path) -> (PathBuf, String) {
    let id = dir.join("identity.txt");
    run(Command::new("age-keygen").arg("-o").arg(&id));
    let out = run(Command::new("age-keygen").arg("-y").arg(&id));
    let recipient = String::from_utf8(out.stdout).unwrap().trim().to_string();
    (id, recipient)
}

#[test]
fn pitr_drill_to_a_time_before_a_destructive_delete_plain_and_encrypted() {
    let a = archiving_cluster("");
    let c = &a.cluster;
    let s = Scratch::new("restore-pitr");
    let repo = s.path.join("repo");
    fs::create_dir(&repo).unwrap();
    table_t(c);
    let rec = physical_backup(c, &repo);
    let noted = write_then_note_the_time(c);
    c.sql("postgres", "DELETE FROM t WHERE id <= 150");
    c.sql(
        "postgres",
        "INSERT INTO t SELECT i, 'later' FROM generate_series(1000, 1009) i;",
    );
    switch_and_archive(&a);

    // The plan first: nothing is written.
    let dest = s.path.join("restored");
    let o = restore(&[
        &"--repo",
        &repo,
        &"--select",
        &"reach",
        &"--target-time",
        &noted,
        &"--wal-archive",
        &a.dir,
        &"-D",
        &dest,
        &"--dry-run",
    ]);
    let plan = ok(&o);
    assert_eq!(plan["dry_run"], true);
    assert!(
        plan["plan"].to_string().contains("recovery_target_time"),
        "{plan}"
    );
    assert!(!dest.exists());

    let o = restore(&[
        &"--repo",
        &repo,
        &"--select",
        &"reach",
        &"--target-time",
        &noted,
        &"--wal-archive",
        &a.dir,
        &"-D",
        &dest,
    ]);
    let r = ok(&o);
    assert_eq!(r["artifact"]["id"], rec["id"]);
    assert_eq!(r["target"]["type"], "time");
    assert_eq!(r["target"]["value"], noted.as_str());
    assert_eq!(r["manifest_checked"], true);
    assert!(r["duration_ms"].as_u64().is_some(), "{r}");
    let running = check_pitr_result(&dest, &s, "plain");

    // Never over a running server, even with --force.
    let o = restore(&[
        &"--repo",
        &repo,
        &"--target-immediate",
        &"-D",
        &dest,
        &"--force",
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("postmaster"), "{}", stderr(&o));
    drop(running);
    // A second restore over it is refused without --force, done with it.
    let o = restore(&[&"--repo", &repo, &"--target-immediate", &"-D", &dest]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("not empty"), "{}", stderr(&o));
    let o = restore(&[
        &"--repo",
        &repo,
        &"--target-immediate",
        &"-D",
        &dest,
        &"--force",
        &"--standby",
    ]);
    assert_eq!(ok(&o)["target"]["type"], "immediate");
    assert!(!fs::read_to_string(dest.join("postgresql.auto.conf"))
        .unwrap()
        .contains("recovery_target_time"));
    assert!(dest.join("standby.signal").is_file());
    assert!(!dest.join("recovery.signal").exists());
    assert!(dest.join("global/pg_control").is_file());
    assert!(!dest.join("global/pg_control.pgb-partial").exists());

    // The same backup encrypted (pgb-encrypt), restored with the identity.
    let (id, recipient) = age_key(&s.path);
    let encrypt = bin("pgb-restore").with_file_name("pgb-encrypt");
    let o = piped(
        {
            let mut cmd = Command::new(&encrypt);
            cmd.args(["-r", &recipient, "--remove-plaintext"]);
            cmd
        },
        format!("{rec}\n").as_bytes(),
    );
    assert_eq!(code(&o), 0, "pgb-encrypt: {}", stderr(&o));
    let enc = records(&o.stdout).remove(0);
    assert!(enc["encryption"].is_object(), "{enc}");
    let loc = Path::new(enc["repo"].as_str().unwrap()).join(enc["path"].as_str().unwrap());
    assert!(loc.join("base.tar.zst.age").is_file());
    assert!(!loc.join("base.tar.zst").exists());

    let dest2 = s.path.join("restored-enc");
    // Without the identity: refused before anything is written.
    let o = piped(
        {
            let mut cmd = Command::new(bin("pgb-restore"));
            cmd.args(["--target-time", &noted, "--wal-archive"])
                .arg(&a.dir)
                .arg("-D")
                .arg(&dest2);
            cmd
        },
        format!("{enc}\n").as_bytes(),
    );
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("identity"), "{}", stderr(&o));
    assert!(!dest2.exists());
    let o = piped(
        {
            let mut cmd = Command::new(bin("pgb-restore"));
            cmd.arg("-i")
                .arg(&id)
                .args(["--target-time", &noted, "--wal-archive"])
                .arg(&a.dir)
                .arg("-D")
                .arg(&dest2);
            cmd
        },
        format!("{enc}\n").as_bytes(),
    );
    let r = ok(&o);
    assert_eq!(r["manifest_checked"], true);
    drop(check_pitr_result(&dest2, &s, "encrypted"));
}

/// The restored cluster starts as the owner, reaches the target, promotes,
/// and holds the deleted rows and none of the later writes.
fn check_pitr_result(dest: &Path, s: &Scratch, tag: &str) -> Restored {
    check_pitr_result_with(dest, s, tag, "-c archive_mode=off")
}

/// [`check_pitr_result`], the server started with `opts`.
fn check_pitr_result_with(dest: &Path, s: &Scratch, tag: &str, opts: &str) -> Restored {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let md = fs::metadata(dest).unwrap();
    assert_eq!(md.permissions().mode() & 0o777, 0o700);
    let pg_control = fs::metadata(dest.join("global/pg_control")).unwrap();
    assert_eq!(pg_control.permissions().mode() & 0o777, 0o600);
    if is_root() {
        let pg = nix::unistd::User::from_name("postgres").unwrap().unwrap();
        assert_eq!(md.uid(), pg.uid.as_raw());
        assert_eq!(pg_control.uid(), pg.uid.as_raw());
    }
    assert!(dest.join("recovery.signal").is_file());
    let auto = fs::read_to_string(dest.join("postgresql.auto.conf")).unwrap();
    assert!(
        auto.contains("pgb-wal") && auto.contains(" get %f %p --archive "),
        "{auto}"
    );
    assert!(
        auto.contains("recovery_target_action = 'promote'"),
        "{auto}"
    );

    let r = Restored::start_with(dest, s, tag, opts);
    r.wait_promoted();
    assert_eq!(
        r.sql("SELECT count(*) FROM t WHERE id <= 150"),
        "150",
        "the deleted rows are back"
    );
    assert_eq!(r.sql("SELECT count(*) FROM t"), "200");
    assert_eq!(
        r.sql("SELECT count(*) FROM t WHERE id >= 1000"),
        "0",
        "no later writes"
    );
    assert!(
        r.log().contains("recovery stopping before commit"),
        "{}",
        r.log()
    );
    r
}

#[test]
fn restore_point_and_lsn_targets_and_missing_wal_is_refused_first() {
    let a = archiving_cluster("");
    let c = &a.cluster;
    let s = Scratch::new("restore-targets");
    let repo = s.path.join("repo");
    fs::create_dir(&repo).unwrap();
    c.sql("postgres", "CREATE TABLE t (v text)");
    let rec = physical_backup(c, &repo);
    c.sql(
        "postgres",
        "INSERT INTO t VALUES ('a'); SELECT pg_create_restore_point('before_b');",
    );
    // Enough WAL between the points that the archive has several segments.
    c.sql(
        "postgres",
        "SELECT pg_switch_wal(); INSERT INTO t VALUES ('b');",
    );
    let lsn = c.sql("postgres", "SELECT pg_current_wal_insert_lsn()");
    c.sql(
        "postgres",
        "SELECT pg_switch_wal(); INSERT INTO t VALUES ('c');",
    );
    switch_and_archive(&a);
    let recfile = format!("{rec}\n");

    // A named restore point.
    let dest = s.path.join("at-name");
    let o = restore(&[
        &"--repo",
        &repo,
        &"--target-name",
        &"before_b",
        &"--wal-archive",
        &a.dir,
        &"-D",
        &dest,
    ]);
    let r = ok(&o);
    assert_eq!(r["target"]["type"], "name");
    let started = Restored::start(&dest, &s, "name");
    started.wait_promoted();
    assert_eq!(
        started.sql("SELECT string_agg(v, ',' ORDER BY v) FROM t"),
        "a"
    );
    drop(started);

    // An LSN, from the record on stdin.
    let dest = s.path.join("at-lsn");
    let o = piped(
        {
            let mut cmd = Command::new(bin("pgb-restore"));
            cmd.args(["--target-lsn", &lsn, "--wal-archive"])
                .arg(&a.dir)
                .arg("-D")
                .arg(&dest);
            cmd
        },
        recfile.as_bytes(),
    );
    let r = ok(&o);
    assert_eq!(r["target"]["value"], lsn.as_str());
    let started = Restored::start(&dest, &s, "lsn");
    started.wait_promoted();
    assert_eq!(
        started.sql("SELECT string_agg(v, ',' ORDER BY v) FROM t"),
        "a,b"
    );
    drop(started);

    // An archive with a hole after the backup: refused before anything is
    // written, the missing segment named; an existing empty destination is
    // left as it was, a missing one is not created.
    let holed = s.owned_dir("holed");
    let mut segs: Vec<String> = fs::read_dir(&a.dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 24)
        .collect();
    segs.sort();
    for n in &segs {
        fs::copy(a.dir.join(n), holed.join(n)).unwrap();
    }
    let stop = rec["wal"]["stop_segment"].as_str().unwrap();
    let gap = segs
        .iter()
        .find(|n| n.as_str() > stop && *n != segs.last().unwrap())
        .expect("a segment after the backup and before the archive's end")
        .clone();
    fs::remove_file(holed.join(&gap)).unwrap();
    let empty = s.owned_dir("empty-dest");
    for (flag, value) in [
        ("--target-name", "before_b"),
        ("--target-lsn", lsn.as_str()),
    ] {
        for dest in [&empty, &s.path.join("never-created")] {
            let o = restore(&[
                &"--repo",
                &repo,
                &flag,
                &value,
                &"--wal-archive",
                &holed,
                &"-D",
                dest,
            ]);
            assert_eq!(code(&o), 2, "{flag}: {}", stderr(&o));
            assert!(stderr(&o).contains(&gap), "{flag}: {}", stderr(&o));
            assert!(stderr(&o).contains("nothing was written"), "{}", stderr(&o));
            let recs = records(&o.stdout);
            assert_eq!(recs.len(), 1);
            assert_eq!(recs[0]["type"], "error");
            assert!(recs[0]["message"].as_str().unwrap().contains(&gap));
        }
        assert_eq!(fs::read_dir(&empty).unwrap().count(), 0);
        assert!(!s.path.join("never-created").exists());
    }
    // A target LSN before the backup's end cannot be consistent.
    let o = restore(&[
        &"--repo",
        &repo,
        &"--target-lsn",
        &"0/1000",
        &"--wal-archive",
        &a.dir,
        &"-D",
        &empty,
    ]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("before the end of backup"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn logical_set_into_a_fresh_cluster_whose_roles_did_not_exist() {
    let src = Cluster::new();
    src.load_sample();
    let s = Scratch::new("restore-logical");
    let repo = s.path.join("repo");
    fs::create_dir(&repo).unwrap();
    let out = run(src
        .tool("pgb-snapshot")
        .args(["-d", "appdb", "--globals", "--cluster", "main", "-o"])
        .arg(&repo));
    let recs = records(&out.stdout);
    let dump = recs
        .iter()
        .find(|r| r["kind"] == "logical")
        .unwrap()
        .clone();
    let counts = dump["row_counts"].as_object().unwrap().clone();
    assert!(!counts.is_empty());
    let roles = src.sql(
        "postgres",
        "SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_roles WHERE rolname !~ '^pg_' AND rolname <> 'postgres'",
    );
    assert!(!roles.is_empty());

    let dst = Cluster::new();
    assert_eq!(
        dst.sql(
            "postgres",
            "SELECT count(*) FROM pg_roles WHERE rolname !~ '^pg_' AND rolname <> 'postgres'"
        ),
        "0"
    );
    // From the repository: the dump of a database and its cluster's
    // globals, planned.
    let o = dst
        .tool("pgb-restore")
        .arg("--repo")
        .arg(&repo)
        .args(["--database", "appdb", "--dry-run"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let plan = records(&o.stdout);
    let kinds: Vec<&Value> = plan.iter().map(|r| &r["artifact"]["kind"]).collect();
    assert_eq!(kinds, ["globals", "logical"]);
    assert!(plan.iter().all(|r| r["dry_run"] == true));

    let o = piped(
        {
            let mut cmd = dst.tool("pgb-restore");
            cmd.args(["--create-database", "-j", "2"]);
            cmd
        },
        &out.stdout,
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let done = records(&o.stdout);
    assert_eq!(done.len(), 2, "{done:?}");
    assert_eq!(done[0]["artifact"]["kind"], "globals");
    assert_eq!(
        done[0]["existing_roles_kept"],
        serde_json::json!(["postgres"])
    );
    assert_eq!(done[1]["artifact"]["kind"], "logical");
    assert_eq!(done[1]["database"], "appdb");
    assert_eq!(done[1]["row_counts"]["ok"], true, "{}", done[1]);
    assert_eq!(
        done[1]["row_counts"]["compared"].as_u64().unwrap() as usize,
        counts.len()
    );
    assert_eq!(
        dst.sql(
            "postgres",
            "SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_roles WHERE rolname !~ '^pg_' AND rolname <> 'postgres'"
        ),
        roles
    );
    for (t, n) in &counts {
        assert_eq!(
            dst.sql("appdb", &format!("SELECT count(*) FROM ONLY {t}")),
            n.to_string(),
            "{t}"
        );
    }
    // Objects keep their owners (the roles came first).
    let owners = dst.sql("appdb", "SELECT count(*) FROM pg_tables WHERE tableowner <> 'postgres' AND schemaname !~ '^pg_|information_schema'");
    assert_ne!(owners, "0");

    // Again into the same server: the database exists now, so
    // --create-database fails, with an error record, and the roles are kept.
    let o = piped(
        {
            let mut cmd = dst.tool("pgb-restore");
            cmd.args(["--create-database"]);
            cmd
        },
        &out.stdout,
    );
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let done = records(&o.stdout);
    assert_eq!(done[0]["type"], "restore");
    assert_eq!(done[1]["type"], "error");
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
}

/// Waits up to 10 s for a process to end (an immediate shutdown removes
/// postmaster.pid a moment before the process is gone).
fn gone(pid: i32) -> bool {
    let t0 = Instant::now();
    while alive(pid) {
        if t0.elapsed() > Duration::from_secs(10) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Starts pgb-verify --restore on `rec`, waits until its restored server
/// runs; returns the child, its temp dir and the postmaster's PID.
#[allow(clippy::zombie_processes)] // the caller waits for the child it gets
fn verify_until_running(c: &Cluster, rec: &str, sql: &Path) -> (std::process::Child, PathBuf, i32) {
    let mut child = c
        .tool("pgb-verify")
        .args(["--restore", "--sql"])
        .arg(sql)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(rec.as_bytes())
        .unwrap();
    let t0 = Instant::now();
    loop {
        if let Some(dir) = verify_temp_dirs(child.id()).into_iter().next() {
            // The smoke query holds the server up: wait for it to run.
            if let Ok(text) = fs::read_to_string(dir.join("server.log")) {
                if text.contains("ready to accept connections") {
                    let pid = fs::read_to_string(dir.join("data/postmaster.pid"))
                        .ok()
                        .and_then(|t| t.lines().next().and_then(|l| l.trim().parse().ok()));
                    if let Some(pid) = pid {
                        return (child, dir, pid);
                    }
                }
            }
        }
        if t0.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!("the test restore never ran: {}", stderr(&o));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn verify_restores_a_physical_backup_and_cleans_up_even_when_killed() {
    let c = Cluster::new();
    c.sql(
        "postgres",
        "CREATE TABLE t AS SELECT i FROM generate_series(1, 1000) i",
    );
    let s = Scratch::new("restore-verify");
    let repo = s.path.join("repo");
    fs::create_dir(&repo).unwrap();
    let rec = physical_backup(&c, &repo);
    let line = format!("{rec}\n");

    // A good backup passes: started, promoted, queried, timed.
    let sql = s.path.join("smoke.sql");
    fs::write(&sql, "SELECT count(*) FROM t;\n").unwrap();
    let (pid, code0, mut out, err) = pipe_pid(
        c.tool("pgb-verify").args(["--restore", "--sql"]).arg(&sql),
        std::slice::from_ref(&rec),
    );
    assert_eq!(code0, 0, "{err}");
    let out = out.remove(0);
    let v = out["verified"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(v["method"], "restore", "{v}");
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["restore_ms"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["manifest_checked"], true, "{v}");
    assert!(v["databases_queried"].as_u64().unwrap() >= 2, "{v}");
    assert!(
        verify_temp_dirs(pid).is_empty(),
        "temp dirs left: {:?}",
        verify_temp_dirs(pid)
    );

    // Ctrl-C while the restored server runs: stopped and removed.
    let slow = s.path.join("slow.sql");
    fs::write(&slow, "SELECT pg_sleep(30);\n").unwrap();
    let (child, dir, pm) = verify_until_running(&c, &line, &slow);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_ne!(code(&o), 0);
    assert!(!dir.exists(), "{} survived Ctrl-C", dir.display());
    assert!(gone(pm), "postmaster {pm} survived Ctrl-C");

    // Killed outright: the next run removes what it left.
    let (mut child, dir, pm) = verify_until_running(&c, &line, &slow);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(dir.exists() && alive(pm));
    let o = piped(
        {
            let mut cmd = c.tool("pgb-verify");
            cmd.arg("--restore");
            cmd
        },
        line.as_bytes(),
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        !dir.exists(),
        "{} left by a killed run survived the next run",
        dir.display()
    );
    assert!(gone(pm));

    // A damaged backup fails, naming what is wrong, and leaves nothing.
    let base = Path::new(rec["repo"].as_str().unwrap())
        .join(rec["path"].as_str().unwrap())
        .join("base.tar.zst");
    let mut bytes = fs::read(&base).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&base, &bytes).unwrap();
    let (pid, code1, mut out, err) = pipe_pid(
        c.tool("pgb-verify").arg("--restore"),
        std::slice::from_ref(&rec),
    );
    assert_eq!(code1, 1, "{err}");
    let out = out.remove(0);
    let v = out["verified"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(v["ok"], false, "{v}");
    // A decompression error names the tar; a file that decompressed to
    // different bytes is named with the manifest.
    let problems = v["problems"].to_string();
    assert!(
        problems.contains("base.tar.zst") || problems.contains("backup_manifest"),
        "{v}"
    );
    assert!(verify_temp_dirs(pid).is_empty());

    // pgb-restore on the same damaged backup: a verdict naming the tar
    // (its bytes are not the recorded ones), and no half-restored
    // directory left behind.
    let dest = s.path.join("restored");
    let o = piped(
        {
            let mut cmd = Command::new(bin("pgb-restore"));
            cmd.args(["--target-immediate", "-D"]).arg(&dest);
            cmd
        },
        line.as_bytes(),
    );
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let recs = records(&o.stdout);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["type"], "restore");
    assert_eq!(recs[0]["ok"], false);
    assert!(recs[0]["problems"].to_string().contains("base.tar.zst"));
    assert_eq!(recs[0]["artifact"]["id"], rec["id"]);
    assert!(!dest.exists(), "a damaged restore left {}", dest.display());
}

/// Copies the WAL files of archive `from` into a new archive, leaving out
/// `skip`.
fn copy_archive_without(s: &Scratch, from: &Path, name: &str, skip: &str) -> PathBuf {
    let to = s.owned_dir(name);
    for e in fs::read_dir(from).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if !n.starts_with('.') && n != skip && e.file_type().unwrap().is_file() {
            fs::copy(e.path(), to.join(&n)).unwrap();
        }
    }
    to
}

/// The archived names (with their suffixes) of timeline `tli`'s segments.
fn archived_segments(dir: &Path, tli: u32) -> Vec<String> {
    let prefix = format!("{tli:08X}");
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix) && n.len() > 24 && &n[24..] == ".zst.age")
        .collect();
    v.sort();
    v
}

fn wait_for_file(p: &Path, log: impl Fn() -> String) {
    let t0 = Instant::now();
    while !p.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{} not there in 60 s:\n{}",
            p.display(),
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn encrypted_backup_and_encrypted_wal_archive_across_a_timeline_switch() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new("restore-encwal");
    // The backup key: root's (pgb-restore runs as root); the server's copy
    // for restore_command: the cluster owner's, mode 0600.
    let (id, recipient) = age_key(&s.path);
    fs::set_permissions(&id, fs::Permissions::from_mode(0o600)).unwrap();
    let recipients = s.path.join("recipients.txt");
    fs::write(&recipients, format!("{recipient}\n")).unwrap();
    let keys = s.owned_dir("keys");
    let wal_key = keys.join("wal key's.txt");
    fs::copy(&id, &wal_key).unwrap();
    if is_root() {
        let pg = nix::unistd::User::from_name("postgres").unwrap().unwrap();
        nix::unistd::chown(&wal_key, Some(pg.uid), Some(pg.gid)).unwrap();
    }
    fs::set_permissions(&wal_key, fs::Permissions::from_mode(0o600)).unwrap();

    let a = archiving_cluster(&format!("-Z zstd -R {}", recipients.display()));
    let c = &a.cluster;
    let repo = s.path.join("repo");
    fs::create_dir(&repo).unwrap();
    table_t(c);
    let rec = physical_backup(c, &repo);
    let o = piped(
        {
            let mut cmd = Command::new(bin("pgb-restore").with_file_name("pgb-encrypt"));
            cmd.args(["-r", &recipient, "--remove-plaintext"]);
            cmd
        },
        format!("{rec}\n").as_bytes(),
    );
    assert_eq!(code(&o), 0, "pgb-encrypt: {}", stderr(&o));
    let enc = format!("{}\n", records(&o.stdout).remove(0));
    c.sql(
        "postgres",
        "INSERT INTO t SELECT i, 'after backup' FROM generate_series(101, 200) i;
         SELECT pg_switch_wal();",
    );
    let noted = c.sql("postgres", "SELECT now()");
    std::thread::sleep(Duration::from_millis(1100));
    c.sql("postgres", "DELETE FROM t WHERE id <= 150");
    c.sql(
        "postgres",
        "INSERT INTO t SELECT i, 'later' FROM generate_series(1000, 1009) i;",
    );
    switch_and_archive(&a);
    let tl1 = archived_segments(&a.dir, 1);
    assert!(tl1.len() >= 2, "{tl1:?}");
    assert!(!fs::read_dir(&a.dir).unwrap().flatten().any(|e| {
        let n = e.file_name().to_string_lossy().into_owned();
        n.len() == 24 || n.ends_with(".zst") && n.len() == 28
    }));

    let with_stdin = |extra: &[&dyn AsRef<std::ffi::OsStr>]| {
        let mut cmd = Command::new(bin("pgb-restore"));
        cmd.arg("-i").arg(&id);
        for x in extra {
            cmd.arg(x);
        }
        piped(cmd, enc.as_bytes())
    };

    // A hole in the encrypted archive is named, by its segment name.
    let stop = rec["wal"]["stop_segment"].as_str().unwrap();
    let gap = tl1
        .iter()
        .find(|n| &n[..24] > stop && *n != tl1.last().unwrap())
        .expect("an encrypted segment after the backup, before the archive's end")
        .clone();
    let holed = copy_archive_without(&s, &a.dir, "holed", &gap);
    let dest = s.path.join("restored");
    let o = with_stdin(&[
        &"--target-time",
        &noted,
        &"--wal-archive",
        &holed,
        &"--wal-identity",
        &wal_key,
        &"-D",
        &dest,
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("missing {}", &gap[..24])),
        "{}",
        stderr(&o)
    );
    assert!(!dest.exists());

    // The identity restore_command gets must be the server's own: root's
    // (the -i default) and a loose mode are refused, saying what to do.
    if is_root() {
        let o = with_stdin(&[
            &"--target-time",
            &noted,
            &"--wal-archive",
            &a.dir,
            &"-D",
            &dest,
        ]);
        assert_eq!(code(&o), 2, "{}", stderr(&o));
        let e = stderr(&o);
        assert!(
            e.contains("owned by root") && e.contains("install -o postgres -m 600"),
            "{e}"
        );
        assert!(e.contains("--wal-identity"), "{e}");
        assert!(!dest.exists());
    }
    fs::set_permissions(&wal_key, fs::Permissions::from_mode(0o640)).unwrap();
    let o = with_stdin(&[
        &"--target-time",
        &noted,
        &"--wal-archive",
        &a.dir,
        &"--wal-identity",
        &wal_key,
        &"-D",
        &dest,
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("chmod 600"), "{}", stderr(&o));
    assert!(!dest.exists());
    fs::set_permissions(&wal_key, fs::Permissions::from_mode(0o600)).unwrap();

    // The point-in-time restore: encrypted base backup, encrypted WAL.
    let o = with_stdin(&[
        &"--target-time",
        &noted,
        &"--wal-archive",
        &a.dir,
        &"--wal-identity",
        &wal_key,
        &"-D",
        &dest,
    ]);
    let r = ok(&o);
    assert_eq!(r["wal"]["encrypted"], true, "{r}");
    let auto = fs::read_to_string(dest.join("postgresql.auto.conf")).unwrap();
    // Shell-quoted, then quoted for postgresql.conf.
    assert!(
        auto.contains(r"-i ''") && auto.contains(r"wal key''\\''''s.txt"),
        "{auto}"
    );
    // Promoted on timeline 2, still archiving (encrypted) into the same
    // archive, as the backed-up cluster's archive_command says.
    let running = {
        let r = check_pitr_result_with(&dest, &s, "tl2", "");
        // Two segments on timeline 2, so that the first can go missing.
        r.sql("INSERT INTO t SELECT i, 'timeline 2' FROM generate_series(5000, 5004) i");
        r.sql("SELECT pg_switch_wal()");
        r.sql("INSERT INTO t SELECT i, 'timeline 2' FROM generate_series(5005, 5009) i");
        let seg = r.sql("SELECT pg_walfile_name(pg_switch_wal())");
        assert!(seg.starts_with("00000002"), "{seg}");
        wait_for_file(&a.dir.join("00000002.history"), || r.log());
        wait_for_file(&a.dir.join(format!("{seg}.zst.age")), || r.log());
        r
    };
    drop(running);
    let tl2 = archived_segments(&a.dir, 2);

    // Without a target, recovery follows timeline 1 to the switch, then
    // timeline 2; the check follows it too, and names a missing segment
    // of timeline 2.
    let holed2 = copy_archive_without(&s, &a.dir, "holed2", &tl2[0]);
    let dest2 = s.path.join("restored-latest");
    let o = with_stdin(&[
        &"--wal-archive",
        &holed2,
        &"--wal-identity",
        &wal_key,
        &"-D",
        &dest2,
    ]);
    assert_eq!(code(&o), 2, "{}", String::from_utf8_lossy(&o.stdout));
    assert!(stderr(&o).contains(&tl2[0][..24]), "{}", stderr(&o));
    assert!(stderr(&o).contains("timelines 1 → 2"), "{}", stderr(&o));
    let o = with_stdin(&[
        &"--wal-archive",
        &a.dir,
        &"--wal-identity",
        &wal_key,
        &"-D",
        &dest2,
    ]);
    let r = ok(&o);
    assert_eq!(r["wal"]["target_timeline"], 2, "{r}");
    assert_eq!(r["wal"]["timelines"].as_array().unwrap().len(), 2, "{r}");
    let started = Restored::start(&dest2, &s, "latest");
    started.wait_promoted();
    assert_eq!(started.sql("SELECT count(*) FROM t WHERE id >= 5000"), "10");
    assert_eq!(
        started.sql("SELECT count(*) FROM t WHERE id BETWEEN 1000 AND 1009"),
        "0"
    );
    assert_eq!(started.sql("SELECT count(*) FROM t"), "210");
}

#[test]
fn target_timeline_goes_back_along_the_original_timeline_after_a_pitr_went_too_far() {
    let a = archiving_cluster("");
    let c = &a.cluster;
    let s = Scratch::new("restore-tli");
    let repo = s.path.join("repo");
    fs::create_dir(&repo).unwrap();
    table_t(c);
    physical_backup(c, &repo);
    let noted = write_then_note_the_time(c);
    // Written on timeline 1 after the point the PITR below stops at.
    c.sql(
        "postgres",
        "INSERT INTO t SELECT i, 'timeline 1, past the fork' FROM generate_series(1000, 1009) i;",
    );
    switch_and_archive(&a);
    let restore_to = |dest: &Path, extra: &[&dyn AsRef<std::ffi::OsStr>]| {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
            vec![&"--repo", &repo, &"--wal-archive", &a.dir, &"-D", &dest];
        args.extend_from_slice(extra);
        restore(&args)
    };

    // A point-in-time recovery to `noted`: promoted onto timeline 2, it
    // writes its own rows and archives into the same archive.
    let pitr = s.path.join("pitr");
    ok(&restore_to(&pitr, &[&"--target-time", &noted]));
    {
        let r = Restored::start_with(&pitr, &s, "pitr", "");
        r.wait_promoted();
        r.sql("INSERT INTO t SELECT i, 'timeline 2' FROM generate_series(5000, 5009) i");
        let seg = r.sql("SELECT pg_walfile_name(pg_switch_wal())");
        assert!(seg.starts_with("00000002"), "{seg}");
        wait_for_file(&a.dir.join("00000002.history"), || r.log());
        wait_for_file(&a.dir.join(&seg), || r.log());
    }

    // The plans: latest (the default) follows timeline 2 and writes no
    // setting; current and 1 stay on timeline 1 and say so.
    let dest1 = s.path.join("along-1");
    let plan = ok(&restore_to(&dest1, &[&"--dry-run"]));
    assert_eq!(plan["wal"]["target_timeline"], 2, "{plan}");
    assert_eq!(plan["target"]["timeline"], "latest", "{plan}");
    assert!(
        !plan["plan"]
            .to_string()
            .contains("recovery_target_timeline"),
        "{plan}"
    );
    for (value, setting) in [("current", "current"), ("00000001", "1")] {
        let plan = ok(&restore_to(
            &dest1,
            &[&"--target-timeline", &value, &"--dry-run"],
        ));
        assert_eq!(plan["wal"]["target_timeline"], 1, "{plan}");
        assert_eq!(plan["wal"]["timelines"].as_array().unwrap().len(), 1);
        assert_eq!(plan["target"]["timeline"], setting, "{plan}");
        assert!(
            plan["plan"]
                .to_string()
                .contains(&format!("recovery_target_timeline = '{setting}'")),
            "{plan}"
        );
    }
    // A timeline the archive has no history of: refused, named.
    let o = restore_to(&dest1, &[&"--target-timeline", &"3"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("00000003.history is not in the WAL archive"),
        "{}",
        stderr(&o)
    );
    assert!(!dest1.exists());

    // Along the original timeline 1: its rows past the fork are back, and
    // none of timeline 2's; the server promotes onto a new timeline
    // branching off timeline 1.
    let r = ok(&restore_to(&dest1, &[&"--target-timeline", &"1"]));
    assert_eq!(r["wal"]["target_timeline"], 1, "{r}");
    let auto = fs::read_to_string(dest1.join("postgresql.auto.conf")).unwrap();
    assert!(auto.contains("recovery_target_timeline = '1'"), "{auto}");
    let started = Restored::start(&dest1, &s, "along-1");
    started.wait_promoted();
    assert_eq!(
        started.sql("SELECT count(*) FROM t WHERE id BETWEEN 1000 AND 1009"),
        "10"
    );
    assert_eq!(started.sql("SELECT count(*) FROM t WHERE id >= 5000"), "0");
    assert_eq!(started.sql("SELECT count(*) FROM t"), "210");
    let tli = started.sql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)");
    assert_eq!(tli, "00000003", "2 is taken");
    let history = started.sql(&format!("SELECT pg_read_file('pg_wal/{tli}.history')"));
    let parents: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split('\t').next())
        .collect();
    assert_eq!(parents, ["1"], "{history}");
    drop(started);

    // Along timeline 2: the recovered state and what was written on it.
    let dest2 = s.path.join("along-2");
    let r = ok(&restore_to(&dest2, &[&"--target-timeline", &"2"]));
    assert_eq!(r["wal"]["target_timeline"], 2, "{r}");
    let spans = r["wal"]["timelines"].as_array().unwrap();
    assert_eq!(spans.len(), 2, "{r}");
    assert_eq!(spans[0]["timeline"], 1);
    assert!(spans[0]["switchpoint"].is_string(), "{r}");
    let started = Restored::start(&dest2, &s, "along-2");
    started.wait_promoted();
    assert_eq!(started.sql("SELECT count(*) FROM t WHERE id >= 5000"), "10");
    assert_eq!(
        started.sql("SELECT count(*) FROM t WHERE id BETWEEN 1000 AND 1009"),
        "0"
    );
    assert_eq!(started.sql("SELECT count(*) FROM t"), "210");
}

/// A tiny `appdb` owned by role `app_owner`: table `app.items` with `rows`
/// rows.
pub(crate) fn tiny_appdb(c: &Cluster, rows: u32) {
    c.sql(
        "postgres",
        "CREATE ROLE app_owner LOGIN; CREATE DATABASE appdb OWNER app_owner;",
    );
    c.sql(
        "appdb",
        &format!(
            "SET ROLE app_owner;
             CREATE SCHEMA app;
             CREATE TABLE app.items (id int PRIMARY KEY, label text);
             INSERT INTO app.items SELECT g, 'item ' || g FROM generate_series(1, {rows}) g;"
        ),
    );
}

pub(crate) fn db_exists(c: &Cluster, db: &str) -> bool {
    c.sql(
        "postgres",
        &format!("SELECT count(*) FROM pg_database WHERE datname = '{db}'"),
    ) != "0"
}

#[test]
fn damaged_dumps_and_globals_are_refused_naming_the_file() {
    damaged_dumps_refused(&[]);
}

/// The same table on a dump pg_restore reads in place (pg_dump's own
/// compression, as pgb writes on 16+): its bytes are settled before
/// pg_restore opens it.
#[test]
fn a_damaged_dump_read_in_place_is_refused_before_pg_restore() {
    damaged_dumps_refused(&["-Z", "pg_dump:6"]);
}

fn damaged_dumps_refused(compress: &[&str]) {
    let c = Cluster::new();
    tiny_appdb(&c, 100);
    let s = Scratch::new("restore-damage");
    let repo = s.path.join("repo");
    fs::create_dir(&repo).unwrap();
    let recs = snapshot_records(
        &c,
        &repo,
        &[&["-d", "appdb", "--globals", "--cluster", "main"], compress].concat(),
    );
    assert_eq!(recs.len(), 2, "{recs:?}");
    let path_of = |kind: &str| {
        let r = recs.iter().find(|r| r["kind"] == kind).unwrap();
        Path::new(r["repo"].as_str().unwrap()).join(r["path"].as_str().unwrap())
    };
    type Damage = Box<dyn Fn(&mut Vec<u8>)>;
    let damages: Vec<(&str, Damage)> = vec![
        (
            "flip",
            Box::new(|b| {
                let n = b.len();
                b[n / 2] ^= 0x01
            }),
        ),
        ("truncate", Box::new(|b| b.truncate(b.len() / 2))),
        ("append", Box::new(|b| b.extend_from_slice(b"\0"))),
        (
            "zero",
            Box::new(|b| {
                let n = b.len();
                b[n / 4..n / 4 + 32.min(n / 2)].fill(0)
            }),
        ),
    ];
    let mut i = 0;
    for kind in ["logical", "globals"] {
        let file = path_of(kind);
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let sidecar = fs::read(format!("{}.pgb.json", file.display())).unwrap();
        let original = fs::read(&file).unwrap();
        for (what, damage) in &damages {
            i += 1;
            let mut bytes = original.clone();
            damage(&mut bytes);
            assert_ne!(bytes, original);
            fs::write(&file, &bytes).unwrap();
            let db = format!("copy{i}");
            let (pid, code, out, err) =
                pipe_pid(c.tool("pgb-restore").args(["-d", &db, "-C"]), &recs);
            let case = format!("{kind} {what}");
            assert_eq!(code, 1, "{case}: {err}");
            assert!(err.contains(&name), "{case}: {err}");
            // The damaged artifact's record says so; nothing of it or after
            // it passes for restored.
            let bad = out
                .iter()
                .find(|r| r["type"] == "restore" && r["artifact"]["kind"] == kind)
                .unwrap_or_else(|| panic!("{case}: {out:?}"));
            assert_eq!(bad["ok"], false, "{case}: {bad}");
            assert!(bad["problems"].to_string().contains(&name), "{case}: {bad}");
            assert!(
                !out.iter()
                    .any(|r| r["artifact"]["kind"] == "logical" && r["ok"] == true),
                "{case}: {out:?}"
            );
            assert!(!db_exists(&c, &db), "{case}: database {db} left behind");
            assert!(
                temp_dirs("pgb-restore", pid).is_empty(),
                "{case}: temp left"
            );
            // Restoring never touches the sidecar.
            assert_eq!(
                fs::read(format!("{}.pgb.json", file.display())).unwrap(),
                sidecar
            );
        }
        fs::write(&file, &original).unwrap();
    }
    // Untouched, the same set restores.
    let (code, out, err) = pipe(c.tool("pgb-restore").args(["-d", "good", "-C"]), &recs);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(
        out.iter()
            .all(|r| r["type"] == "restore" && r["ok"] == true),
        "{out:?}"
    );
    assert_eq!(c.sql("good", "SELECT count(*) FROM app.items"), "100");

    // A database created (-C) that pg_restore then fails to fill (here:
    // the dump without its globals, on a server lacking its owner role)
    // is dropped, not left looking restored.
    let dst = Cluster::new();
    let dump = recs
        .iter()
        .find(|r| r["kind"] == "logical")
        .unwrap()
        .clone();
    let (code, out, err) = pipe(dst.tool("pgb-restore").args(["-C"]), &[dump]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("app_owner") && err.contains("dropped"),
        "{err}"
    );
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0]["type"], "error");
    assert!(!db_exists(&dst, "appdb"), "a half-restored appdb was left");
}

#[test]
fn select_latest_passes_over_a_failed_dump_and_restores_the_previous_good_one() {
    let c = Cluster::new();
    tiny_appdb(&c, 100);
    let s = Scratch::new("restore-failed");
    let repo = s.path.join("repo");
    fs::create_dir(&repo).unwrap();
    let old = snapshot_records(&c, &repo, &["-d", "appdb", "--cluster", "main"]);
    std::thread::sleep(Duration::from_millis(1100));
    c.sql(
        "appdb",
        "INSERT INTO app.items SELECT g, 'new' FROM generate_series(101, 150) g;",
    );
    let new = snapshot_records(&c, &repo, &["-d", "appdb", "--cluster", "main"]);
    let (old_id, new_id) = (
        old[0]["id"].as_str().unwrap(),
        new[0]["id"].as_str().unwrap(),
    );
    assert_ne!(old_id, new_id);
    // The newer dump is damaged, and pgb-verify records it.
    let file = Path::new(new[0]["repo"].as_str().unwrap()).join(new[0]["path"].as_str().unwrap());
    let mut bytes = fs::read(&file).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x01;
    fs::write(&file, &bytes).unwrap();
    let o = c
        .tool("pgb-verify")
        .arg("--repo")
        .arg(&repo)
        .arg("--checksums")
        .output()
        .unwrap();
    assert_eq!(code(&o), 1, "{}", stderr(&o));

    let pick = |extra: &[&str], db: &str| {
        c.tool("pgb-restore")
            .arg("--repo")
            .arg(&repo)
            .args(["--database", "appdb", "-d", db, "-C"])
            .args(extra)
            .output()
            .unwrap()
    };
    // latest: the failed one is named and passed over; the older one is
    // restored.
    let o = pick(&["--select", "latest"], "copy");
    let r = ok(&o);
    assert_eq!(r["artifact"]["id"], old_id, "{r}");
    let e = stderr(&o);
    assert!(
        e.contains(&format!("skipping logical {new_id}")) && e.contains("checksums"),
        "{e}"
    );
    assert_eq!(c.sql("copy", "SELECT count(*) FROM app.items"), "100");

    // By id, the failed one is refused unless asked for explicitly ...
    let o = pick(&["--select", new_id], "copy2");
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("--allow-failed"), "{}", stderr(&o));
    assert!(records(&o.stdout).is_empty());
    assert!(!db_exists(&c, "copy2"));
    // ... and then its damage stops the restore all the same.
    let o = pick(&["--select", "latest", "--allow-failed"], "copy3");
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let recs = records(&o.stdout);
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["artifact"]["id"], new_id);
    assert_eq!(recs[0]["ok"], false);
    assert!(!db_exists(&c, "copy3"));
}

#[test]
fn a_target_time_the_archive_does_not_reach_is_refused_before_anything_is_written() {
    let a = archiving_cluster("");
    let c = &a.cluster;
    let s = Scratch::new("restore-short");
    let repo = s.path.join("repo");
    fs::create_dir(&repo).unwrap();
    table_t(c);
    let before_backup = c.sql("postgres", "SELECT now()");
    std::thread::sleep(Duration::from_millis(1100));
    physical_backup(c, &repo);
    let noted = write_then_note_the_time(c);
    // A commit after the time noted, which recovery stops at.
    c.sql("postgres", "INSERT INTO t VALUES (1000, 'after noted')");
    switch_and_archive(&a);
    // After the archive's last commit: PostgreSQL would end recovery short
    // of it. The archive's files are touched to look newer than the target:
    // the WAL itself says where it ends.
    std::thread::sleep(Duration::from_millis(1100));
    let later = c.sql("postgres", "SELECT now()");
    for e in fs::read_dir(&a.dir).unwrap().flatten() {
        run(Command::new("touch").args(["-d", "+2 hours"]).arg(e.path()));
    }
    let dest = s.path.join("restored");
    for (select, time, expect) in [
        ("latest", &later, "last commit is at"),
        ("latest", &before_backup, "after the target time"),
        ("reach", &later, "last commit is at"),
    ] {
        let o = restore(&[
            &"--repo",
            &repo,
            &"--select",
            &select,
            &"--target-time",
            time,
            &"--wal-archive",
            &a.dir,
            &"-D",
            &dest,
        ]);
        assert_eq!(code(&o), 2, "{select} {time}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(expect),
            "{select} {time}: {}",
            stderr(&o)
        );
        assert!(
            !records(&o.stdout).iter().any(|r| r["type"] == "restore"),
            "{select} {time}"
        );
        assert!(!dest.exists(), "{select} {time}: wrote {}", dest.display());
    }
    // A target the archive reaches is restored.
    let r = ok(&restore(&[
        &"--repo",
        &repo,
        &"--target-time",
        &noted,
        &"--wal-archive",
        &a.dir,
        &"-D",
        &dest,
        &"--dry-run",
    ]));
    assert_eq!(r["dry_run"], true);
}

#[test]
fn damage_to_a_physical_backups_stored_files_stops_the_restore_naming_the_file() {
    let c = Cluster::new();
    table_t(&c);
    let s = Scratch::new("restore-phys-damage");
    let repo = s.path.join("repo");
    fs::create_dir(&repo).unwrap();
    let rec = physical_backup(&c, &repo);
    let dir = Path::new(rec["repo"].as_str().unwrap()).join(rec["path"].as_str().unwrap());
    let file = |prefix: &str| {
        let f = rec["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .find(|n| n.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {rec}"));
        dir.join(f)
    };
    let dest = s.path.join("restored");
    type Damage = Box<dyn Fn(&mut Vec<u8>)>;
    // Bytes after the tar's end-of-archive blocks are never read by a tar
    // reader; a changed pg_wal.tar is not in the manifest.
    let cases: Vec<(&str, Damage)> = vec![
        ("base.tar", Box::new(|b| b.extend_from_slice(b"\0\0\0\0"))),
        (
            "pg_wal.tar",
            Box::new(|b| {
                let n = b.len();
                b[n / 2] ^= 0x01
            }),
        ),
        ("backup_manifest", Box::new(|b| b.extend_from_slice(b"\n"))),
    ];
    for (prefix, damage) in &cases {
        let f = file(prefix);
        let original = fs::read(&f).unwrap();
        let mut bytes = original.clone();
        damage(&mut bytes);
        fs::write(&f, &bytes).unwrap();
        let o = restore(&[&"--repo", &repo, &"--target-immediate", &"-D", &dest]);
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(code(&o), 1, "{prefix}: {}", stderr(&o));
        assert!(stderr(&o).contains(&name), "{prefix}: {}", stderr(&o));
        let recs = records(&o.stdout);
        assert_eq!(recs.len(), 1, "{prefix}: {recs:?}");
        assert_eq!(recs[0]["ok"], false, "{prefix}");
        assert!(!dest.exists(), "{prefix}: a restored directory was left");
        fs::write(&f, &original).unwrap();
    }
    // Untouched, it restores.
    ok(&restore(&[
        &"--repo",
        &repo,
        &"--target-immediate",
        &"-D",
        &dest,
    ]));
    assert!(dest.join("global/pg_control").exists());
}

/// A repository moved elsewhere (mv) restores and verifies where it lies
/// with --repo; a record naming the old place fails with that path, also
/// with --dry-run, and --dry-run refuses a file that is not as recorded.
#[test]
fn a_moved_repository_restores_and_verifies_where_it_lies() {
    let c = Cluster::new();
    c.sql("postgres", "CREATE DATABASE mvsrc");
    c.sql(
        "mvsrc",
        "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 100) g",
    );
    let s = Scratch::new("restore-moved");
    let old = s.path.join("old");
    fs::create_dir(&old).unwrap();
    let recs = snapshot_records(&c, &old, &["-d", "mvsrc", "--cluster", "main"]);
    let input = format!("{}\n", recs[0]);
    let new = s.path.join("new");
    fs::rename(&old, &new).unwrap();

    let o = c
        .tool("pgb-restore")
        .arg("--repo")
        .arg(&new)
        .args(["--database", "mvsrc", "--no-globals", "-d", "mvdst"])
        .arg("--create-database")
        .output()
        .unwrap();
    let r = ok(&o);
    assert_eq!(r["artifact"]["repo"], new.display().to_string(), "{r}");
    assert_eq!(r["row_counts"]["ok"], true, "{r}");
    assert_eq!(c.sql("mvdst", "SELECT count(*) FROM t"), "100");

    let o = c
        .tool("pgb-verify")
        .arg("--repo")
        .arg(&new)
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = records(&o.stdout);
    assert_eq!(v[0]["repo"], new.display().to_string());
    let verified = v[0]["verified"].as_array().unwrap();
    assert!(
        verified.len() >= 2 && verified.iter().all(|x| x["ok"] == true),
        "{}",
        v[0]
    );

    // Shipped from where it lies, too.
    let nas = s.path.join("nas");
    fs::create_dir(&nas).unwrap();
    let o = c
        .tool("pgb-ship")
        .arg("--repo")
        .arg(&new)
        .arg("--to")
        .arg(&nas)
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let rel = recs[0]["path"].as_str().unwrap();
    assert_eq!(
        fs::read(nas.join(rel)).unwrap(),
        fs::read(new.join(rel)).unwrap()
    );

    // The record as logged names the old place: a clear error, no verdict.
    let gone = format!("repository: {}: No such file or directory", old.display());
    for (tool, args) in [
        ("pgb-restore", vec!["--dry-run", "--no-globals", "-d", "x"]),
        ("pgb-verify", vec![]),
    ] {
        let mut cmd = c.tool(tool);
        cmd.args(&args);
        let o = piped(cmd, input.as_bytes());
        assert_eq!(code(&o), 2, "{tool}: {}", stderr(&o));
        assert!(stderr(&o).contains(&gone), "{tool}: {}", stderr(&o));
        assert!(records(&o.stdout).iter().all(|r| r["ok"] != true), "{tool}");
    }

    // A dump one byte short: --dry-run does not plan it, and says no.
    let dump = new.join(recs[0]["path"].as_str().unwrap());
    let len = fs::metadata(&dump).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&dump)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    let o = c
        .tool("pgb-restore")
        .arg("--repo")
        .arg(&new)
        .args(["--database", "mvsrc", "--no-globals", "--dry-run"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let recs = records(&o.stdout);
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["ok"], false, "{recs:?}");
    assert!(recs[0].get("plan").is_none(), "{recs:?}");
    assert!(
        stderr(&o).contains(&format!(
            "{}: {} bytes, the record says {len}",
            dump.display(),
            len - 1
        )),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_schema_qualified_table_is_restored_and_a_filter_matching_nothing_is_an_error() {
    let c = Cluster::new();
    c.load_sample();
    let repo = c.scratch.owned_dir("repo");
    let dump = snapshot_records(&c, &repo, &["-d", "appdb", "--cluster", "main"])
        .into_iter()
        .find(|r| r["kind"] == "logical")
        .unwrap();
    let input = format!("{dump}\n");
    let exists = |db: &str| {
        c.sql(
            "postgres",
            &format!("SELECT count(*) FROM pg_database WHERE datname = '{db}'"),
        )
    };
    // Into a database that has the table's schema (pg_restore -t restores
    // the table alone, not its schema), or with --create-database.
    let restore_t = |db: &str, filters: &[&str]| {
        let mut cmd = c.tool("pgb-restore");
        cmd.args(["-d", db, "--no-owner"]);
        if exists(db) == "0" {
            cmd.arg("--create-database");
        }
        for f in filters {
            cmd.args(["-t", f]);
        }
        piped(cmd, input.as_bytes())
    };

    // As users type it: schema.table, that table alone, its rows compared.
    c.sql("postgres", "CREATE DATABASE one_table");
    c.sql("one_table", "CREATE SCHEMA app");
    let o = restore_t("one_table", &["app.accounts"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let rec = records(&o.stdout).pop().unwrap();
    assert_eq!(rec["row_counts"]["compared"], 1, "{rec}");
    assert_eq!(rec["row_counts"]["ok"], true, "{rec}");
    assert_eq!(
        c.sql("one_table", "SELECT count(*) FROM app.accounts"),
        "300000"
    );
    assert_eq!(
        c.sql("one_table", "SELECT to_regclass('app.orders') IS NULL"),
        "t"
    );
    // Quoted identifiers as in SQL.
    c.sql("postgres", "CREATE DATABASE odd_table");
    c.sql("odd_table", "CREATE SCHEMA \"Mixed Case\"");
    let o = restore_t("odd_table", &["\"Mixed Case\".\"Odd Table\""]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        c.sql(
            "odd_table",
            "SELECT to_regclass('\"Mixed Case\".\"Odd Table\"') IS NOT NULL"
        ),
        "t"
    );

    // A filter that matches nothing: an error naming it, nothing created.
    for (db, filters, want) in [
        ("typo", &["app.acounts"][..], "-t app.acounts: the dump"),
        (
            "wrong_schema",
            &["public.accounts"][..],
            "-t public.accounts: the dump",
        ),
        ("bare_typo", &["acounts"][..], "-t acounts: the dump"),
        (
            "two_schemas",
            &["app.accounts", "\"Mixed Case\".\"Odd Table\""][..],
            "more than one schema",
        ),
        (
            "mixed",
            &["app.accounts", "orders"][..],
            "qualify every table or none",
        ),
    ] {
        let o = restore_t(db, filters);
        assert_eq!(code(&o), 2, "{filters:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{filters:?}: {}", stderr(&o));
        let out = records(&o.stdout);
        assert!(out.iter().all(|r| r["type"] == "error"), "{out:?}");
        assert_eq!(exists(db), "0", "{filters:?} created {db}");
    }
}

/// Starts pgb-restore of `dump` into `db`, interrupts it with SIGINT once
/// pg_restore is writing into `db`, and returns what it printed.
fn interrupted_restore(c: &Cluster, dump: &Value, db: &str, create: bool) -> Output {
    let mut cmd = c.tool("pgb-restore");
    cmd.args(["-d", db, "--no-owner", "-j", "1"]);
    if create {
        cmd.arg("--create-database");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{dump}").unwrap();
    let t0 = Instant::now();
    loop {
        let busy = c.sql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' \
                 AND application_name = 'pg_restore' AND query ~* '^COPY'"
            ),
        );
        if busy != "0" {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "pg_restore never started copying into {db}"
        );
        if let Ok(Some(s)) = child.try_wait() {
            panic!("pgb-restore ended before it could be interrupted: {s}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn an_interrupted_logical_restore_says_what_it_left_behind() {
    let c = Cluster::new();
    c.sql("postgres", "CREATE DATABASE big");
    c.sql(
        "big",
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS a, md5((g + 1)::text) AS b \
         FROM generate_series(1, 2000000) g",
    );
    let repo = c.scratch.owned_dir("repo");
    let dump = snapshot_records(&c, &repo, &["-d", "big", "--cluster", "main"])
        .into_iter()
        .find(|r| r["kind"] == "logical")
        .unwrap();

    // Into a database it created: dropped, and said so.
    let o = interrupted_restore(&c, &dump, "big_copy", true);
    let err = stderr(&o);
    assert_eq!(code(&o), 2, "{err}");
    assert!(
        err.contains("interrupted by SIGINT: database big_copy, created by this run"),
        "{err}"
    );
    assert!(
        err.contains("database big_copy: created by this run and not restored whole; dropped"),
        "{err}"
    );
    assert_eq!(
        c.sql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'big_copy'"
        ),
        "0"
    );
    assert!(records(&o.stdout).iter().all(|r| r["type"] == "error"));

    // Into one that existed: named as half-filled, left for the user.
    c.sql("postgres", "CREATE DATABASE big_into");
    let o = interrupted_restore(&c, &dump, "big_into", false);
    let err = stderr(&o);
    assert_eq!(code(&o), 2, "{err}");
    assert!(
        err.contains("interrupted by SIGINT: database big_into is HALF-FILLED"),
        "{err}"
    );
    assert!(records(&o.stdout).iter().all(|r| r["type"] == "error"));
    // No pg_restore left writing into it.
    let t0 = Instant::now();
    while c.sql(
        "postgres",
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_restore'",
    ) != "0"
    {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "pg_restore still runs"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
