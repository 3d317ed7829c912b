//! pgb-snapshot against real clusters.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::util::*;

fn snapshot(c: &Cluster, repo: &Path, args: &[&str]) -> (i32, Vec<Value>, String) {
    let out = c
        .tool("pgb-snapshot")
        .arg("--out")
        .arg(repo)
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (
        out.status.code().unwrap_or(-1),
        records(&out.stdout),
        stderr,
    )
}

fn artifact_files(a: &Value) -> Vec<PathBuf> {
    let loc = Path::new(a["repo"].as_str().unwrap()).join(a["path"].as_str().unwrap());
    a["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            if loc.is_dir() {
                loc.join(f["name"].as_str().unwrap())
            } else {
                loc.clone()
            }
        })
        .collect()
}

/// The recorded size and checksums equal what stock sha256sum and b3sum
/// say; files are 0600; the sidecar holds the same record.
fn assert_evidence(a: &Value) {
    for (f, rec) in artifact_files(a).iter().zip(a["files"].as_array().unwrap()) {
        let (sha, b3) = stock_sums(f);
        assert_eq!(rec["sha256"], json!(sha), "{}", f.display());
        assert_eq!(rec["blake3"], json!(b3), "{}", f.display());
        let md = fs::metadata(f).unwrap();
        assert_eq!(rec["size"], json!(md.len()));
        assert_eq!(md.permissions().mode() & 0o777, 0o600, "{}", f.display());
    }
    let loc = Path::new(a["repo"].as_str().unwrap()).join(a["path"].as_str().unwrap());
    let sidecar = PathBuf::from(format!("{}.pgb.json", loc.display()));
    let on_disk: Value = serde_json::from_slice(&fs::read(&sidecar).unwrap()).unwrap();
    assert_eq!(
        &on_disk,
        a,
        "sidecar {} differs from the record",
        sidecar.display()
    );
}

fn count(c: &Cluster, db: &str, table: &str) -> u64 {
    c.sql(db, &format!("SELECT count(*) FROM ONLY {table}"))
        .parse()
        .unwrap()
}

#[test]
fn logical_dump_restores_with_stock_pg_restore_and_matches_row_counts() {
    let c = Cluster::new();
    c.load_sample();
    let repo = Scratch::new("repo");
    let (code, recs, err) = snapshot(&c, &repo.path, &["-d", "appdb", "--cluster", "main"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(recs.len(), 1);
    let a = &recs[0];
    assert_eq!(a["schema"], "pgb.v1");
    assert_eq!(a["type"], "artifact");
    assert_eq!(a["kind"], "logical");
    assert_eq!(a["database"], "appdb");
    assert_eq!(a["cluster"], "main");
    assert_eq!(a["format"], "pg_dump-custom");
    assert_eq!(a["compression"]["algorithm"], "zstd");
    assert_eq!(
        a["system_identifier"],
        json!(c.sql(
            "postgres",
            "SELECT system_identifier FROM pg_control_system()"
        ))
    );
    assert!(
        a["path"]
            .as_str()
            .unwrap()
            .starts_with("main/logical/appdb/appdb-"),
        "{}",
        a["path"]
    );
    assert!(a["extensions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["name"] == "pg_trgm" && e["version"].is_string()));
    assert!(a["tablespaces"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"] == "extra"));
    assert_eq!(a["locale"]["encoding"], "UTF8");
    assert_eq!(a["tool"]["name"], "pg_dump");
    assert!(chrono::DateTime::parse_from_rfc3339(a["created"].as_str().unwrap()).is_ok());
    let counts: BTreeMap<String, u64> = serde_json::from_value(a["row_counts"].clone()).unwrap();
    assert_eq!(counts["app.accounts"], 300_000);
    assert_eq!(counts["app.orders"], 5_000);
    assert_eq!(counts["app.empty_table"], 0);
    assert_eq!(counts["\"Mixed Case\".\"Odd Table\""], 3);
    assert_evidence(a);

    // Stock tools restore it: zstd, then pg_restore -j into a new database.
    let dump = &artifact_files(a)[0];
    let plain = repo.path.join("plain.dump");
    run(Command::new("zstd")
        .arg("-q")
        .arg("-d")
        .arg(dump)
        .arg("-o")
        .arg(&plain));
    c.sql("postgres", "CREATE DATABASE restored");
    run(c
        .pg("pg_restore")
        .args(["-j", "2", "-d", "restored"])
        .arg(&plain));
    for (table, n) in &counts {
        assert_eq!(count(&c, "restored", table), *n, "{table}");
    }
    assert_eq!(
        c.sql("restored", "SELECT last_value FROM app.invoice_no"),
        "42"
    );
    assert_eq!(
        c.sql(
            "restored",
            "SELECT tableowner FROM pg_tables WHERE tablename = 'accounts'"
        ),
        "app_owner"
    );
}

#[test]
fn row_counts_come_from_the_dumps_own_snapshot() {
    // Rows committed while the dump runs belong to neither the dump nor the
    // counts: a writer inserting in a loop must not make them disagree.
    let c = Cluster::new();
    c.load_sample();
    let repo = Scratch::new("repo");
    let mut writer = c
        .pg("psql")
        .args(["-X", "-q", "-d", "appdb", "-c"])
        .arg(
            "DO $$ BEGIN FOR i IN 1..400 LOOP
               INSERT INTO app.accounts (name, balance) SELECT 'late', 1 FROM generate_series(1, 500);
               COMMIT; PERFORM pg_sleep(0.005); END LOOP; END $$",
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    let (code, recs, err) = snapshot(&c, &repo.path, &["-d", "appdb", "--compress", "none"]);
    writer.wait().unwrap();
    assert_eq!(code, 0, "{err}");
    let a = &recs[0];
    assert_eq!(a["compression"]["algorithm"], "none");
    let recorded = a["row_counts"]["app.accounts"].as_u64().unwrap();
    c.sql("postgres", "CREATE DATABASE restored");
    run(c
        .pg("pg_restore")
        .args(["-d", "restored"])
        .arg(&artifact_files(a)[0]));
    assert_eq!(count(&c, "restored", "app.accounts"), recorded);
}

#[test]
fn pg_dump_compression_is_restorable_by_pg_restore_directly() {
    let c = Cluster::new();
    c.load_sample();
    let repo = Scratch::new("repo");
    let (code, recs, err) = snapshot(
        &c,
        &repo.path,
        &["-d", "appdb", "--compress", "pg_dump:1", "--no-row-counts"],
    );
    assert_eq!(code, 0, "{err}");
    let a = &recs[0];
    assert_eq!(
        a["compression"],
        json!({"algorithm": "gzip", "level": 1, "by": "pg_dump"})
    );
    assert!(a.get("row_counts").is_none());
    assert!(a["path"].as_str().unwrap().ends_with(".dump"));
    assert_evidence(a);
    let list = run(c.pg("pg_restore").arg("--list").arg(&artifact_files(a)[0]));
    assert!(String::from_utf8_lossy(&list.stdout).contains("TABLE DATA app accounts"));
}

#[test]
fn globals_recreate_the_roles_in_a_fresh_cluster() {
    let c = Cluster::new();
    c.load_sample();
    let repo = Scratch::new("repo");
    let (code, recs, err) = snapshot(&c, &repo.path, &["--globals"]);
    assert_eq!(code, 0, "{err}");
    let a = &recs[0];
    assert_eq!(a["kind"], "globals");
    assert!(a.get("database").is_none());
    assert_evidence(a);
    let sql = repo.path.join("globals.sql");
    run(Command::new("zstd")
        .arg("-q")
        .arg("-d")
        .arg(&artifact_files(a)[0])
        .arg("-o")
        .arg(&sql));
    let fresh = Cluster::new();
    // The tablespace's directory belongs to the first cluster; psql goes on
    // past that statement, as an operator's restore would.
    let _ = fresh
        .pg("psql")
        .args(["-X", "-q", "-d", "postgres", "-f"])
        .arg(&sql)
        .output()
        .unwrap();
    assert_eq!(
        fresh.sql("postgres", "SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_roles WHERE rolname IN ('app_owner', 'reporter')"),
        "app_owner,reporter"
    );
    assert_eq!(
        fresh.sql(
            "postgres",
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'app_owner'"
        ),
        "t"
    );
}

#[test]
fn physical_backup_passes_stock_pg_verifybackup() {
    let c = Cluster::new();
    c.load_sample();
    let repo = Scratch::new("repo");
    let (code, recs, err) = snapshot(&c, &repo.path, &["--physical"]);
    assert_eq!(code, 0, "{err}");
    let a = &recs[0];
    assert_eq!(a["kind"], "physical");
    assert_evidence(a);
    let names: Vec<&str> = a["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    let ts_oid = c.sql(
        "postgres",
        "SELECT oid FROM pg_tablespace WHERE spcname = 'extra'",
    );
    let mut want = vec![
        "backup_manifest".to_string(),
        "base.tar.zst".into(),
        format!("{ts_oid}.tar.zst"),
        "pg_wal.tar.zst".into(),
    ];
    want.sort();
    assert_eq!(names, want);
    let wal = &a["wal"];
    assert_eq!(wal["timeline"], 1);
    assert_eq!(wal["segment_size"], 16 << 20);
    assert!(a["backup_label"].as_str().unwrap().contains(&format!(
        "START WAL LOCATION: {}",
        wal["start_lsn"].as_str().unwrap()
    )));
    assert!(a["backup_label"]
        .as_str()
        .unwrap()
        .contains(wal["start_segment"].as_str().unwrap()));

    // Extract as an operator would, tablespace into pg_tblspc/OID, and let
    // pg_verifybackup check files and WAL.
    let dir = Path::new(a["repo"].as_str().unwrap()).join(a["path"].as_str().unwrap());
    let restore = Scratch::new("restore");
    let pgdata = restore.path.join("data");
    fs::create_dir(&pgdata).unwrap();
    let untar = |archive: &Path, into: &Path| {
        fs::create_dir_all(into).unwrap();
        run(Command::new("sh")
            .arg("-c")
            .arg("zstd -dc \"$1\" | tar -x -C \"$2\"")
            .arg("sh")
            .arg(archive)
            .arg(into));
    };
    untar(&dir.join("base.tar.zst"), &pgdata);
    let link = pgdata.join("pg_tblspc").join(&ts_oid);
    // Tar-format backups list tablespaces in tablespace_map, not as links.
    assert!(!link.exists());
    untar(&dir.join(format!("{ts_oid}.tar.zst")), &link);
    untar(&dir.join("pg_wal.tar.zst"), &pgdata.join("pg_wal"));
    assert!(pgdata
        .join("pg_wal")
        .join(wal["start_segment"].as_str().unwrap())
        .exists());
    fs::copy(dir.join("backup_manifest"), pgdata.join("backup_manifest")).unwrap();
    let out = run(Command::new(pg_bin("pg_verifybackup")).arg(&pgdata));
    assert!(String::from_utf8_lossy(&out.stdout).contains("successfully verified"));
}

/// Nothing but the lock file and empty directories is left in the repository.
fn assert_nothing_left(repo: &Path) {
    assert_eq!(
        files_below(repo),
        Vec::<String>::new(),
        "files left in the repository"
    );
}

fn assert_failed(code: i32, recs: &[Value], err: &str, needle: &str) {
    assert_eq!(code, 2, "{err}");
    assert!(!recs.is_empty(), "an error record is printed");
    for r in recs {
        assert_eq!(r["type"], "error", "no success record: {r}");
        assert_eq!(r["tool"], "pgb-snapshot");
        assert!(r["message"].as_str().unwrap().contains(needle), "{r}");
    }
    assert!(err.contains(needle), "stderr names it: {err}");
}

#[test]
fn failures_leave_no_artifact_and_name_the_database() {
    let c = Cluster::new();
    c.load_sample();
    c.sql("postgres", "CREATE ROLE nobody LOGIN");
    let repo = Scratch::new("repo");

    let (code, recs, err) = snapshot(&c, &repo.path, &["-d", "no_such_db"]);
    assert_failed(code, &recs, &err, "no_such_db");
    assert_nothing_left(&repo.path);

    // A role that may not read the tables: pg_dump refuses.
    let (code, recs, err) = snapshot(
        &c,
        &repo.path,
        &["-d", "appdb", "-U", "nobody", "--no-row-counts"],
    );
    assert_failed(code, &recs, &err, "dump database appdb");
    assert!(err.contains("permission denied"), "{err}");
    assert_nothing_left(&repo.path);

    // No replication privilege: pg_basebackup refuses.
    let (code, recs, err) = snapshot(&c, &repo.path, &["--physical", "-U", "nobody"]);
    assert_failed(code, &recs, &err, "physical backup");
    assert_nothing_left(&repo.path);

    // One failure does not stop the others, and still fails the run.
    let (code, recs, _) = snapshot(&c, &repo.path, &["-d", "no_such_db", "-d", "postgres"]);
    assert_eq!(code, 2);
    assert_eq!(
        recs.iter()
            .map(|r| r["type"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["error", "artifact"]
    );
}

#[test]
fn unreachable_server_leaves_nothing() {
    let repo = Scratch::new("repo");
    let out = Command::new(bin("pgb-snapshot"))
        .env("PGB_PG_BINDIR", pg_bindir())
        .args([
            "-h",
            "/nonexistent/socket/dir",
            "-p",
            "5999",
            "-U",
            "postgres",
            "-d",
            "appdb",
            "--globals",
            "--physical",
            "--out",
        ])
        .arg(&repo.path)
        .output()
        .unwrap();
    let recs = records(&out.stdout);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(recs.len(), 3);
    assert!(recs.iter().all(|r| r["type"] == "error"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/socket/dir"));
    assert_nothing_left(&repo.path);
}

#[test]
fn backend_terminated_mid_dump_leaves_no_artifact() {
    let c = Cluster::new();
    c.load_sample();
    let repo = Scratch::new("repo");
    // A server-side watcher kills pg_dump's backend as soon as it is copying
    // table data, i.e. after the archive header and TOC have been written.
    let watcher = c
        .pg("psql")
        .args(["-X", "-q", "-t", "-A", "-d", "postgres", "-c"])
        .arg(
            "DO $$ DECLARE n int := 0; BEGIN
               FOR i IN 1..60000 LOOP
                 PERFORM pg_stat_clear_snapshot();
                 SELECT count(pg_terminate_backend(pid)) INTO n FROM pg_stat_activity
                  WHERE application_name = 'pg_dump' AND query LIKE 'COPY %';
                 EXIT WHEN n > 0;
                 PERFORM pg_sleep(0.001);
               END LOOP;
               RAISE NOTICE 'terminated %', n;
             END $$",
        )
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let (code, recs, err) = snapshot(&c, &repo.path, &["-d", "appdb"]);
    let w = watcher.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&w.stderr).contains("terminated 1"),
        "watcher: {:?}",
        w
    );
    assert_failed(code, &recs, &err, "dump database appdb");
    assert!(err.contains("pg_dump exited with status 1"), "{err}");
    assert_nothing_left(&repo.path);
}

#[test]
fn full_disk_leaves_no_partial_file() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let c = Cluster::new();
    c.load_sample();
    let mnt = Scratch::new("tmpfs");
    run(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt.path));
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _u = Unmount(&mnt.path);
    let (code, recs, err) = snapshot(
        &c,
        &mnt.path,
        &["-d", "appdb", "--compress", "none", "--physical"],
    );
    assert_failed(code, &recs, &err, "No space left on device");
    assert_nothing_left(&mnt.path);
}

#[test]
fn closed_or_full_stdout_is_a_failure() {
    let c = Cluster::new();
    let repo = Scratch::new("repo");
    let full = fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = c
        .tool("pgb-snapshot")
        .args(["-d", "postgres", "--out"])
        .arg(&repo.path)
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("write: stdout: No space left on device"));

    let mut child = c
        .tool("pgb-snapshot")
        .args(["-d", "postgres", "--out"])
        .arg(&repo.path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("Broken pipe"));
}

#[test]
fn passwords_stay_out_of_argv_records_and_messages() {
    let secret = "s3cret-Horse-Battery";
    let c = Cluster::with(Options {
        hba_first: vec!["local all pwuser scram-sha-256".into()],
        ..Options::default()
    });
    c.sql(
        "postgres",
        &format!("CREATE ROLE pwuser LOGIN SUPERUSER PASSWORD '{secret}'"),
    );
    // Wrap the real client programs to record the argv and environment they
    // are given.
    let wrap = Scratch::new("wrap");
    let log = wrap.path.join("argv.log");
    for prog in ["pg_dump", "psql", "pg_dumpall", "pg_basebackup"] {
        let p = wrap.path.join(prog);
        fs::write(
            &p,
            format!(
                "#!/bin/sh\necho \"{prog} $* PGPASSWORD=${{PGPASSWORD:-}}\" >> {}\nexec {} \"$@\"\n",
                log.display(),
                pg_bin(prog).display()
            ),
        )
        .unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let repo = Scratch::new("repo");
    let conninfo = format!("dbname=postgres user=pwuser password={secret}");
    let out = c
        .tool("pgb-snapshot")
        .env("PGB_PG_BINDIR", &wrap.path)
        .env_remove("PGUSER")
        .args(["-d", &conninfo, "--globals", "--physical", "--out"])
        .arg(&repo.path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the password reached the server: {stderr}"
    );
    let argv = fs::read_to_string(&log).unwrap();
    assert!(
        argv.contains("pg_dump ") && argv.contains("pg_basebackup "),
        "{argv}"
    );
    // A wrong password: the error is quoted, the password is not.
    let bad = format!(
        "postgresql://pwuser:{secret}X@/postgres?host={}",
        c.socket.display()
    );
    let out2 = c
        .tool("pgb-snapshot")
        .env("PGB_PG_BINDIR", &wrap.path)
        .args(["-d", &bad, "--out"])
        .arg(&repo.path)
        .output()
        .unwrap();
    assert_eq!(out2.status.code(), Some(2));
    let stderr2 = String::from_utf8_lossy(&out2.stderr);
    assert!(
        stderr2.contains("password authentication failed"),
        "{stderr2}"
    );
    let everything = format!(
        "{argv}{stderr}{}{stderr2}{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out2.stdout),
        files_below(&repo.path)
            .iter()
            .filter(|f| f.ends_with(".pgb.json"))
            .map(|f| fs::read_to_string(repo.path.join(f)).unwrap())
            .collect::<String>()
    );
    assert!(!everything.contains(secret), "the password leaked");
}

#[test]
fn a_held_lock_is_status_3_and_leftovers_are_cleaned_by_the_next_run() {
    let c = Cluster::new();
    let repo = Scratch::new("repo");
    let lockfile = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(repo.path.join(".pgb.lock"))
        .unwrap();
    let held = nix::fcntl::Flock::lock(lockfile, nix::fcntl::FlockArg::LockExclusive).unwrap();
    let (code, recs, err) = snapshot(&c, &repo.path, &["-d", "postgres", "--cluster", "main"]);
    assert_eq!(code, 3, "{err}");
    assert!(recs.is_empty());
    assert!(err.contains("held by another run"), "{err}");
    drop(held);

    // A temp left by a killed run is removed by the next run holding the lock.
    let dir = repo.path.join("main/logical/postgres");
    fs::create_dir_all(&dir).unwrap();
    let leftover = dir.join(".postgres-20200101T000000Z.dump.zst.pgb-tmp.999999.0");
    fs::write(&leftover, b"half a dump").unwrap();
    let (code, recs, err) = snapshot(&c, &repo.path, &["-d", "postgres", "--cluster", "main"]);
    assert_eq!(code, 0, "{err}");
    assert!(!leftover.exists());
    assert_eq!(recs[0]["type"], "artifact");
    assert_evidence(&recs[0]);
}

#[test]
fn usage_errors_are_status_2() {
    let repo = Scratch::new("repo");
    for args in [
        vec![],
        vec!["--compress", "lz4", "-d", "x"],
        vec!["-d", "x", "--cluster", "../up"],
    ] {
        let out = Command::new(bin("pgb-snapshot"))
            .args(&args)
            .arg("--out")
            .arg(&repo.path)
            .env("PGHOST", "/nonexistent")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
}

#[test]
fn all_databases_gives_one_artifact_each_and_skips_templates() {
    let c = Cluster::new();
    c.sql("postgres", "CREATE DATABASE one; CREATE DATABASE \"two words\"; CREATE DATABASE closed ALLOW_CONNECTIONS false;");
    let repo = Scratch::new("repo");
    let (code, recs, err) = snapshot(&c, &repo.path, &["--all-databases", "-d", "one"]);
    assert_eq!(code, 0, "{err}");
    let mut dbs: Vec<&str> = recs
        .iter()
        .map(|r| r["database"].as_str().unwrap())
        .collect();
    dbs.sort();
    assert_eq!(
        dbs,
        ["one", "postgres", "two words"],
        "each once, no templates, no closed database"
    );
    for r in &recs {
        assert_evidence(r);
    }
}

#[test]
fn physical_backup_with_postgresqls_own_gzip() {
    let c = Cluster::new();
    let repo = Scratch::new("repo");
    let (code, recs, err) = snapshot(&c, &repo.path, &["--physical", "--compress", "pg_dump:1"]);
    assert_eq!(code, 0, "{err}");
    let a = &recs[0];
    let names: Vec<&str> = a["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["backup_manifest", "base.tar.gz", "pg_wal.tar.gz"]);
    assert_eq!(
        a["compression"],
        json!({"algorithm": "gzip", "level": 1, "by": "pg_basebackup"})
    );
    assert_evidence(a);
}

#[test]
fn two_dumps_of_one_database_in_one_second_do_not_collide() {
    let c = Cluster::new();
    c.sql("postgres", "CREATE DATABASE appdb");
    let repo = Scratch::new("same-second");
    // -d appdb, then --all-databases, which dumps appdb again at once.
    let (code, recs, err) = snapshot(&c, &repo.path, &["-d", "appdb", "--all-databases"]);
    assert_eq!(code, 0, "{err}");
    let appdb: Vec<&Value> = recs.iter().filter(|r| r["database"] == "appdb").collect();
    assert_eq!(appdb.len(), 1, "one dump per database: {recs:?}");
    // The same database twice in a row, in two runs within one second.
    let (c1, r1, e1) = snapshot(&c, &repo.path, &["-d", "appdb"]);
    let (c2, r2, e2) = snapshot(&c, &repo.path, &["-d", "appdb"]);
    assert_eq!((c1, c2), (0, 0), "{e1}{e2}");
    let ids = [&appdb[0]["id"], &r1[0]["id"], &r2[0]["id"]];
    assert!(
        ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2],
        "{ids:?}"
    );
    for r in [&r1[0], &r2[0]] {
        assert!(repo.path.join(r["path"].as_str().unwrap()).is_file());
    }
}

#[test]
fn a_lock_left_by_a_run_as_root_does_not_lock_out_the_service_account() {
    assert!(is_root(), "the tests run as root (initdb runs as postgres)");
    let c = Cluster::new();
    // A repository owned by postgres, as the systemd unit runs.
    let repo = Scratch::new("lock-owner");
    // A snapshot as root, then a pruning run as postgres (both lock).
    let run_as = |root: bool| {
        let mut cmd = if root {
            let mut r = Command::new(bin("pgb-snapshot"));
            r.args(["--globals", "-o"]);
            r
        } else {
            let mut r = Command::new("runuser");
            r.args(["-u", "postgres", "--"])
                .arg(bin("pgb-prune"))
                .args(["--keep-last", "1", "--apply", "--repo"]);
            r
        };
        cmd.envs(c.env())
            .env("PGB_PG_BINDIR", pg_bindir())
            .arg(&repo.path)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let o = run_as(true);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    use std::os::unix::fs::MetadataExt;
    let pg = nix::unistd::User::from_name("postgres").unwrap().unwrap();
    let lock = repo.path.join(".pgb.lock");
    assert_eq!(fs::metadata(&lock).unwrap().uid(), pg.uid.as_raw());
    let o = run_as(false);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // A root-owned 0600 lock from an older run: the message names the fix.
    nix::unistd::chown(&lock, Some(0.into()), Some(0.into())).unwrap();
    let o = run_as(false);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("chown postgres"), "{err}");
}

#[test]
fn no_password_prompt_on_a_terminal_and_the_message_names_the_ways_to_give_one() {
    let c = Cluster::with(Options {
        hba_first: vec!["local all pwuser scram-sha-256".into()],
        ..Options::default()
    });
    c.sql(
        "postgres",
        "CREATE ROLE pwuser LOGIN SUPERUSER PASSWORD 'secret-pw'",
    );
    let repo = Scratch::new("noprompt");
    // On a terminal (script gives it one), psql would prompt; a password
    // typed there never reached pg_dump. Now nothing prompts.
    let cmd = format!(
        "{} -U pwuser -d postgres --globals -o {}",
        bin("pgb-snapshot").display(),
        repo.path.display()
    );
    let out = Command::new("timeout")
        .args(["30", "script", "-qec", &cmd, "/dev/null"])
        .envs(c.env())
        .env_remove("PGUSER")
        .env("PGPASSFILE", "/nonexistent")
        .env("PGB_PG_BINDIR", pg_bindir())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(!text.contains("Password"), "a prompt appeared: {text}");
    assert!(text.contains("no password supplied"), "{text}");
    assert!(
        text.contains("~/.pgpass") && text.contains("PGPASSWORD"),
        "{text}"
    );
}
