//! Every supported PostgreSQL major, 14 to 18, through the whole toolkit:
//! each snapshot kind, every verify level, WAL push and get, the archive
//! check with a damaged and a foreign segment, a physical restore with PITR
//! to a time between two writes, and a logical restore with row counts.
//!
//! The tools are given every installed major at once (`PGB_PG_BINDIR` lists
//! them newest first, as on a host in the middle of an upgrade), so each
//! case also proves that a backup taken on one version is verified and
//! restored with that version's programs on a host that has newer ones.
//! The majors this host lacks come from `scripts/install-pg`.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

/// The segment files of an archive (no checksum or other side files).
fn segments(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 24 && n.chars().all(|c| c.is_ascii_hexdigit()))
        .collect();
    v.sort();
    v
}

fn wait_archived(c: &Cluster, dir: &Path, name: &str) {
    let t0 = Instant::now();
    while !dir.join(name).exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{name} not archived:\n{}",
            c.server_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes a little (a switch with nothing written since the last one
/// finishes no segment), switches WAL and waits for the segment.
fn switch(c: &Cluster, dir: &Path) {
    let name = c.sql(
        "postgres",
        "CREATE TABLE IF NOT EXISTS filler (i int);
         INSERT INTO filler VALUES (1);
         SELECT pg_walfile_name(pg_switch_wal());",
    );
    wait_archived(c, dir, &name);
}

fn major_of(version: &str) -> u32 {
    version.split('.').next().unwrap().parse().unwrap()
}

fn whole_toolkit_on(major: u32) {
    let s = Scratch::new(&format!("pg{major}"));
    let archive = s.owned_dir("archive");
    let c = Cluster::with(Options {
        major: Some(major),
        archive_command: Some(format!(
            "{} push %p --archive {}",
            bin("pgb-wal").display(),
            archive.display()
        )),
        initdb_args: vec!["--wal-segsize=1".into()],
        ..Default::default()
    });
    let version = c.sql("postgres", "SHOW server_version");
    assert_eq!(major_of(&version), major, "{version}");
    c.sql(
        "postgres",
        "CREATE DATABASE appdb;
         CREATE ROLE app LOGIN;",
    );
    c.sql(
        "appdb",
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT i, 'before backup' FROM generate_series(1, 500) i;
         CREATE TABLE u (id int);
         INSERT INTO u SELECT generate_series(1, 77);
         ALTER TABLE u OWNER TO app;",
    );

    // Every kind of snapshot, each made by this major's programs.
    let repo = s.path.join("repo");
    fs::create_dir(&repo).unwrap();
    let recs = snapshot_records(
        &c,
        &repo,
        &[
            "-d",
            "appdb",
            "--globals",
            "--physical",
            "--cluster",
            "main",
        ],
    );
    assert_eq!(recs.len(), 3, "{recs:?}");
    let by_kind = |k: &str| recs.iter().find(|r| r["kind"] == k).unwrap().clone();
    let (logical, globals, physical) =
        (by_kind("logical"), by_kind("globals"), by_kind("physical"));
    for r in &recs {
        assert_eq!(r["pg_version"], version.as_str(), "{r}");
        assert_eq!(
            major_of(r["tool"]["version"].as_str().unwrap()),
            major,
            "made by this major's program: {r}"
        );
    }
    assert_eq!(logical["row_counts"]["public.t"], 500);

    // Compression says what was really done.
    if major >= 16 {
        // pg_dump's own zstd: the file is a custom-format archive that
        // stock pg_restore reads (in parallel too), not a zstd stream.
        assert_eq!(logical["compression"]["by"], "pg_dump", "{logical}");
        assert_eq!(logical["compression"]["algorithm"], "zstd");
        let file = repo.join(logical["path"].as_str().unwrap());
        assert!(!file.to_string_lossy().ends_with(".zst"), "{file:?}");
        let head = fs::read(&file).unwrap();
        assert_eq!(&head[..5], b"PGDMP");
        let out = run(Command::new(c.bindir.join("pg_restore"))
            .arg("--list")
            .arg(&file));
        assert!(String::from_utf8_lossy(&out.stdout).contains("Compression: zstd"));
    } else {
        assert_eq!(logical["compression"]["by"], "pgb", "{logical}");
    }
    let phys_files: Vec<&str> = physical["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(
        phys_files.contains(&"base.tar.zst") && phys_files.contains(&"pg_wal.tar.zst"),
        "{phys_files:?}"
    );
    let base = repo
        .join(physical["path"].as_str().unwrap())
        .join("base.tar.zst");
    let head = fs::read(&base).unwrap();
    assert_eq!(
        &head[..4],
        &[0x28, 0xB5, 0x2F, 0xFD],
        "base.tar.zst is zstd"
    );
    let expect_by = if major == 14 { "pgb" } else { "pg_basebackup" };
    assert_eq!(physical["compression"]["by"], expect_by, "{physical}");
    assert_eq!(physical["compression"]["algorithm"], "zstd");

    // Every verify level passes, run with this major's programs among all.
    let (code, out, err) = pipe(
        c.tool("pgb-verify")
            .args(["--checksums", "--structure", "--manifest", "--restore"]),
        &recs,
    );
    assert_eq!(code, 0, "{err}");
    for r in &out {
        for v in r["verified"].as_array().unwrap() {
            assert_eq!(v["ok"], true, "{} {v}", r["kind"]);
        }
        let methods: Vec<&str> = r["verified"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["method"].as_str().unwrap())
            .collect();
        match r["kind"].as_str().unwrap() {
            "logical" | "physical" => assert!(methods.contains(&"restore"), "{methods:?}"),
            _ => assert!(methods.contains(&"structure"), "{methods:?}"),
        }
        if r["kind"] == "physical" {
            let m = r["verified"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["method"] == "manifest")
                .unwrap();
            if major >= 18 {
                // pg_verifybackup 18 reads tar backups: its verdict too.
                assert_eq!(m["pg_verifybackup"]["ok"], true, "{m}");
            }
        }
    }
    let _ = globals;

    // Writes after the backup, a moment between them, and more writes.
    c.sql(
        "appdb",
        "INSERT INTO t SELECT i, 'after backup' FROM generate_series(501, 600) i;",
    );
    let noted = c.sql("postgres", "SELECT now()");
    std::thread::sleep(Duration::from_millis(1100));
    c.sql("appdb", "DELETE FROM t WHERE id <= 300");
    for _ in 0..4 {
        switch(&c, &archive);
    }

    // The archive this major wrote is healthy by pgb-check-archive...
    let (code, recs_a, err) = run_check_archive(&[&archive]);
    assert_eq!(code, 0, "{recs_a:?} {err}");
    let segs = segments(&archive);
    assert!(segs.len() >= 5, "{segs:?}");
    // ...and a damaged and a foreign segment in a copy of it are named.
    let copy = s.path.join("archive-copy");
    fs::create_dir(&copy).unwrap();
    for e in fs::read_dir(&archive).unwrap().flatten() {
        fs::copy(e.path(), copy.join(e.file_name())).unwrap();
    }
    let damaged = segs[2].clone();
    let mut b = fs::read(copy.join(&damaged)).unwrap();
    b[1] ^= 0x40; // the page magic
    fs::write(copy.join(&damaged), b).unwrap();
    let foreign = segs[3].clone();
    let mut b = fs::read(copy.join(&foreign)).unwrap();
    b[24] ^= 0x01; // xlp_sysid in the long header
    fs::write(copy.join(&foreign), b).unwrap();
    let (code, recs_b, err) = run_check_archive(&[&copy]);
    assert_eq!(code, 1, "{recs_b:?} {err}");
    let named = |file: &str| {
        recs_b
            .iter()
            .any(|r| r["type"] == "archive-problem" && r["file"] == file)
    };
    assert!(named(&damaged), "{damaged} not named: {recs_b:?}");
    assert!(named(&foreign), "{foreign} not named: {recs_b:?}");

    // PITR to the moment between the writes, through pgb-wal get.
    let dest = s.path.join("restored");
    let out = Command::new(bin("pgb-restore"))
        .arg("--repo")
        .arg(&repo)
        .args(["--select", "reach", "--target-time", &noted])
        .arg("--wal-archive")
        .arg(&archive)
        .arg("-D")
        .arg(&dest)
        .env("PGB_PG_BINDIR", all_bindirs())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = Cluster::adopt_as(
        c.bindir.clone(),
        Scratch::new(&format!("pg{major}-pitr")),
        dest,
        5432,
        "archive_mode = off",
    );
    r.wait_for("SELECT pg_is_in_recovery()", "f");
    assert_eq!(r.sql("appdb", "SELECT count(*) FROM t"), "600");
    assert_eq!(
        r.sql("appdb", "SELECT count(*) FROM t WHERE id <= 300"),
        "300",
        "the rows deleted after the target are there"
    );
    assert!(
        r.server_log().contains("recovery stopping before commit"),
        "{}",
        r.server_log()
    );
    drop(r);

    // A logical restore into a new database, row counts compared.
    let out = c
        .tool("pgb-restore")
        .arg("--repo")
        .arg(&repo)
        .args([
            "--database",
            "appdb",
            "--select",
            "latest",
            "-d",
            "appcopy",
            "-C",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec = records(&out.stdout).pop().unwrap();
    assert_eq!(rec["ok"], true, "{rec}");
    assert_eq!(c.sql("appcopy", "SELECT count(*) FROM t"), "500");
    assert_eq!(c.sql("appcopy", "SELECT count(*) FROM u"), "77");
}

#[test]
fn pg14() {
    whole_toolkit_on(14);
}

#[test]
fn pg16() {
    whole_toolkit_on(16);
}

#[test]
fn pg17() {
    whole_toolkit_on(17);
}

#[test]
fn pg18() {
    whole_toolkit_on(18);
}

/// The tools refuse, naming the version, when the programs an artifact
/// needs are not installed.
#[test]
fn a_missing_major_is_named_not_half_run() {
    let c = Cluster::new();
    let repo = Scratch::new("vrepo");
    let recs = snapshot_records(&c, &repo.path, &["--physical", "--cluster", "main"]);
    // The record says it is a PostgreSQL 13 backup: no 13 here.
    let mut rec = recs[0].clone();
    rec["pg_version"] = "13.9".into();
    let (code, out, err) = pipe(c.tool("pgb-verify").arg("--restore"), &[rec]);
    assert_eq!(code, 2, "{out:?} {err}");
    assert!(err.contains("postgres of PostgreSQL 13 is needed"), "{err}");
    assert!(out.iter().all(|r| r["type"] != "artifact"), "{out:?}");
}
