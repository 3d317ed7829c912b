//! Incremental physical backups (PostgreSQL 17+): pgb-snapshot
//! --incremental builds chains on the newest backup, pgb-restore rebuilds
//! them with pg_combinebackup and recovers to a time, and refuses a chain
//! with a member deleted, damaged or swapped before writing the target.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::check_archive::wait_archived;
use crate::util::*;

/// A cluster of PostgreSQL `major` archiving with pgb-wal, with WAL
/// summaries when `summarize`, and a repository.
struct Source {
    cluster: Cluster,
    archive: PathBuf,
    repo: PathBuf,
    _scratch: Scratch,
}

fn source(major: u32, summarize: bool) -> Source {
    let scratch = Scratch::new("incr");
    let archive = scratch.owned_dir("archive");
    let repo = scratch.path.join("repo");
    fs::create_dir(&repo).unwrap();
    let mut extra_conf = vec![];
    if summarize {
        extra_conf.push("summarize_wal = on".to_string());
    }
    let cluster = Cluster::with(Options {
        archive_command: Some(format!(
            "{} push %p --archive {}",
            bin("pgb-wal").display(),
            archive.display()
        )),
        initdb_args: vec!["--wal-segsize=1".into()],
        extra_conf,
        major: Some(major),
        ..Default::default()
    });
    Source {
        cluster,
        archive,
        repo,
        _scratch: scratch,
    }
}

/// pgb-snapshot --physical with `args`, which must succeed: the record and
/// stderr.
fn snap(s: &Source, args: &[&str]) -> (Value, String) {
    let o = s
        .cluster
        .tool("pgb-snapshot")
        .args(["--physical", "--cluster", "main", "-o"])
        .arg(&s.repo)
        .args(args)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let mut recs = records(&o.stdout);
    assert_eq!(recs.len(), 1, "{recs:?}");
    (recs.remove(0), stderr(&o))
}

/// A full backup, then `changes[0]`, an incremental, `changes[1]` and a
/// second incremental: the three records, oldest first.
fn chain_of_three(s: &Source, changes: [&str; 2]) -> (Value, Value, Value) {
    let (full, _) = snap(s, &[]);
    s.cluster.sql("postgres", changes[0]);
    let (i1, _) = snap(s, &["--incremental"]);
    s.cluster.sql("postgres", changes[1]);
    let (i2, _) = snap(s, &["--incremental"]);
    (full, i1, i2)
}

fn restore(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut c = Command::new(bin("pgb-restore"));
    for a in args {
        c.arg(a);
    }
    c.env("PGB_PG_BINDIR", all_bindirs())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn location(rec: &Value) -> PathBuf {
    Path::new(rec["repo"].as_str().unwrap()).join(rec["path"].as_str().unwrap())
}

fn size_of(rec: &Value, file: &str) -> u64 {
    rec["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == file)
        .unwrap_or_else(|| panic!("no {file} in {rec}"))["size"]
        .as_u64()
        .unwrap()
}

/// Full + two incrementals (one after rows changed, one after a table was
/// dropped and another created), later writes, then a PITR through
/// pgb-restore to a time between two writes: the restored cluster starts
/// and has the source's rows at that time.
fn chain_restored_with_pitr(major: u32) {
    let s = source(major, true);
    let c = &s.cluster;
    c.sql(
        "postgres",
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT i, 'full' FROM generate_series(1, 100) i;
         CREATE TABLE gone (i int); INSERT INTO gone VALUES (1), (2);",
    );
    // A second tablespace, changed between the full backup and the first
    // incremental.
    let ts = s._scratch.owned_dir("tblspc");
    c.sql(
        "postgres",
        &format!(
            "CREATE TABLESPACE ts LOCATION '{}';
             CREATE TABLE tt (i int) TABLESPACE ts; INSERT INTO tt SELECT generate_series(1, 30);",
            ts.display()
        ),
    );
    let ts_oid = c.sql(
        "postgres",
        "SELECT oid FROM pg_tablespace WHERE spcname = 'ts'",
    );
    let (full, err) = snap(&s, &["--incremental"]);
    assert!(
        err.contains("no earlier physical backup") && err.contains("taking a full backup"),
        "{err}"
    );
    assert!(full.get("incremental").is_none(), "{full}");

    c.sql(
        "postgres",
        "INSERT INTO t SELECT i, 'i1' FROM generate_series(101, 200) i;
         UPDATE t SET v = 'changed' WHERE id <= 10;
         INSERT INTO tt SELECT generate_series(31, 40); DELETE FROM tt WHERE i <= 5;",
    );
    let (i1, err) = snap(&s, &["--incremental"]);
    assert!(!err.contains("full backup"), "{err}");
    assert_eq!(
        i1["incremental"],
        json!({"parent": full["id"], "depth": 1, "from_lsn": full["wal"]["start_lsn"]})
    );
    assert!(
        size_of(&i1, "base.tar.zst") < size_of(&full, "base.tar.zst") / 2,
        "an incremental holds only what changed: {} vs {} bytes",
        size_of(&i1, "base.tar.zst"),
        size_of(&full, "base.tar.zst")
    );

    c.sql(
        "postgres",
        "DROP TABLE gone;
         CREATE TABLE fresh (i int); INSERT INTO fresh SELECT generate_series(1, 50);",
    );
    let (i2, _) = snap(&s, &["--incremental=auto"]);
    assert_eq!(i2["incremental"]["parent"], i1["id"]);
    assert_eq!(i2["incremental"]["depth"], 2);

    c.sql(
        "postgres",
        "INSERT INTO t SELECT i, 'after' FROM generate_series(201, 250) i;
         INSERT INTO fresh SELECT generate_series(51, 60);",
    );
    let noted = c.sql("postgres", "SELECT now()");
    let want_t = c.sql("postgres", "SELECT count(*) FROM t");
    let want_fresh = c.sql("postgres", "SELECT count(*) FROM fresh");
    let want_tt = c.sql("postgres", "SELECT count(*) FROM tt");
    std::thread::sleep(Duration::from_millis(1100));
    c.sql("postgres", "DELETE FROM t WHERE id > 5; DROP TABLE fresh;");
    let seg = c.sql("postgres", "SELECT pg_walfile_name(pg_switch_wal())");
    wait_archived(c, &s.archive, &seg);

    let rs = Scratch::new("incr-restored");
    let dest = rs.path.join("data");
    let new_ts = rs.path.join("ts");
    let ts_map = format!("{ts_oid}={}", new_ts.display());
    // The plan first: the chain, pg_combinebackup, nothing written.
    let o = restore(&[
        &"--repo",
        &s.repo,
        &"--target-time",
        &noted,
        &"--wal-archive",
        &s.archive,
        &"-D",
        &dest,
        &"--tablespace-map",
        &ts_map,
        &"--dry-run",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let plan = records(&o.stdout).remove(0);
    assert_eq!(plan["chain"], json!([full["id"], i1["id"], i2["id"]]));
    assert!(
        plan["plan"].to_string().contains("pg_combinebackup"),
        "{plan}"
    );
    assert!(!dest.exists() && !new_ts.exists());
    let o = restore(&[
        &"--repo",
        &s.repo,
        &"--target-time",
        &noted,
        &"--wal-archive",
        &s.archive,
        &"-D",
        &dest,
        &"--tablespace-map",
        &ts_map,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = records(&o.stdout).remove(0);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["artifact"]["id"], i2["id"]);
    assert_eq!(r["chain"], json!([full["id"], i1["id"], i2["id"]]));
    assert_eq!(r["manifest_checked"], true);
    // The temp area beside the target is gone.
    let left: Vec<String> = fs::read_dir(&rs.path)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "data" && n != "ts")
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(
        fs::read_link(dest.join("pg_tblspc").join(&ts_oid)).unwrap(),
        new_ts
    );
    assert_eq!(
        r["tablespaces"],
        json!({ts_oid.clone(): new_ts.display().to_string()})
    );
    // Everything pg_combinebackup wrote belongs to the cluster's owner,
    // with private modes.
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let owner = fs::metadata(&rs.path).unwrap().uid();
        for p in [
            dest.clone(),
            dest.join("global/pg_control"),
            dest.join("base"),
            dest.join("PG_VERSION"),
            dest.join("tablespace_map"),
            new_ts.clone(),
        ] {
            let md = fs::symlink_metadata(&p).unwrap();
            assert_eq!(md.uid(), owner, "{}", p.display());
            assert_eq!(md.mode() & 0o077, 0, "{}: {:o}", p.display(), md.mode());
        }
        assert_eq!(
            fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }

    let restored = Cluster::adopt_as(bindir_of(major), rs, dest, 5432, "archive_mode = off");
    restored.wait_for("SELECT pg_is_in_recovery()", "f");
    assert_eq!(restored.sql("postgres", "SELECT count(*) FROM t"), want_t);
    assert_eq!(want_t, "250");
    assert_eq!(
        restored.sql("postgres", "SELECT count(*) FROM fresh"),
        want_fresh
    );
    assert_eq!(want_fresh, "60");
    assert_eq!(
        restored.sql("postgres", "SELECT count(*) FROM t WHERE v = 'changed'"),
        "10"
    );
    assert_eq!(
        restored.sql("postgres", "SELECT to_regclass('gone') IS NULL"),
        "t"
    );
    assert_eq!(restored.sql("postgres", "SELECT count(*) FROM tt"), want_tt);
    assert_eq!(want_tt, "35");
    assert_eq!(
        restored.sql(
            "postgres",
            "SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'ts'"
        ),
        new_ts.display().to_string()
    );

    // The restored cluster promoted onto a new timeline: an incremental
    // of it on the source's last backup (same system identifier) is not
    // taken, a full one is, saying why.
    let o = restored
        .tool("pgb-snapshot")
        .args(["--physical", "--cluster", "main", "--incremental", "-o"])
        .arg(&s.repo)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let after = records(&o.stdout).remove(0);
    assert!(after.get("incremental").is_none(), "{after}");
    assert_eq!(after["wal"]["timeline"], 2);
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "the server is on timeline 2, its last backup {} on timeline 1",
            i2["id"].as_str().unwrap()
        )) && err.contains("taking a full backup"),
        "{err}"
    );
}

#[test]
fn chain_restored_with_pitr_17() {
    chain_restored_with_pitr(17);
}

#[test]
fn chain_restored_with_pitr_18() {
    chain_restored_with_pitr(18);
}

/// `cp -a` of a repository, for one refusal each.
fn copy_repo(from: &Path, to: &Path) {
    run(Command::new("cp").arg("-a").arg(from).arg(to));
}

/// `rec` as found in the repository copy `repo`.
fn in_copy(rec: &Value, repo: &Path) -> PathBuf {
    repo.join(rec["path"].as_str().unwrap())
}

#[test]
fn a_deleted_damaged_or_swapped_member_stops_the_restore_naming_it() {
    let s = source(17, true);
    let c = &s.cluster;
    c.sql(
        "postgres",
        "CREATE TABLE t (i int); INSERT INTO t SELECT generate_series(1, 100);",
    );
    let (full, i1, i2) = chain_of_three(
        &s,
        ["INSERT INTO t VALUES (101)", "INSERT INTO t VALUES (102)"],
    );
    assert_eq!(i2["incremental"]["depth"], 2);
    // Another full backup, to swap in for the first.
    let (other, _) = snap(&s, &[]);
    let work = Scratch::new("incr-refusals");
    let i2_id = i2["id"].as_str().unwrap();

    let try_restore = |repo: &Path, tag: &str| -> (Output, PathBuf) {
        let dest = work.path.join(format!("dest-{tag}"));
        let o = restore(&[
            &"--repo",
            &repo,
            &"--select",
            &i2_id,
            &"--target-immediate",
            &"-D",
            &dest,
        ]);
        (o, dest)
    };

    // The intact chain restores.
    let (o, dest) = try_restore(&s.repo, "good");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(dest.join("global/pg_control").is_file());

    // A member deleted: exit 2, naming it and the member that needs it.
    let deleted = work.path.join("deleted");
    copy_repo(&s.repo, &deleted);
    let loc = in_copy(&i1, &deleted);
    fs::remove_dir_all(&loc).unwrap();
    fs::remove_file(pgb_common::record::sidecar_for(&loc)).unwrap();
    let (o, dest) = try_restore(&deleted, "deleted");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let want = format!(
        "member {} (parent of {i2_id}) is missing",
        i1["id"].as_str().unwrap()
    );
    assert!(stderr(&o).contains(&want), "{}", stderr(&o));
    assert!(records(&o.stdout).iter().all(|r| r["type"] == "error"));
    assert!(!dest.exists());
    // --select latest passes over the broken chain to the newest backup
    // that restores (the other full one gone too, the first).
    let loc = in_copy(&other, &deleted);
    fs::remove_dir_all(&loc).unwrap();
    fs::remove_file(pgb_common::record::sidecar_for(&loc)).unwrap();
    let dest = work.path.join("dest-latest");
    let o = restore(&[&"--repo", &deleted, &"--target-immediate", &"-D", &dest]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(records(&o.stdout)[0]["artifact"]["id"], full["id"]);
    assert!(
        stderr(&o).contains(&format!(
            "skipping physical {i2_id}: chain of {i2_id}: member"
        )),
        "{}",
        stderr(&o)
    );

    // A member's stored bytes damaged: a verdict (exit 1), naming the file.
    let damaged = work.path.join("damaged");
    copy_repo(&s.repo, &damaged);
    let base = in_copy(&full, &damaged).join("base.tar.zst");
    let mut bytes = fs::read(&base).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    fs::write(&base, bytes).unwrap();
    let (o, dest) = try_restore(&damaged, "damaged");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(full["id"].as_str().unwrap()) && err.contains(&base.display().to_string()),
        "{err}"
    );
    let recs = records(&o.stdout);
    assert_eq!(recs[0]["ok"], false, "{recs:?}");
    assert!(!dest.exists());

    // The first member swapped for another full backup of the same
    // cluster, its record rewritten to the old id: every checksum matches,
    // the chain does not.
    let swapped = work.path.join("swapped");
    copy_repo(&s.repo, &swapped);
    let (fl, ol) = (in_copy(&full, &swapped), in_copy(&other, &swapped));
    fs::remove_dir_all(&fl).unwrap();
    fs::rename(&ol, &fl).unwrap();
    let mut rec: Value =
        serde_json::from_slice(&fs::read(pgb_common::record::sidecar_for(&ol)).unwrap()).unwrap();
    rec["id"] = full["id"].clone();
    rec["path"] = full["path"].clone();
    fs::write(
        pgb_common::record::sidecar_for(&fl),
        serde_json::to_vec_pretty(&rec).unwrap(),
    )
    .unwrap();
    fs::remove_file(pgb_common::record::sidecar_for(&ol)).unwrap();
    let (o, dest) = try_restore(&swapped, "swapped");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let want = format!(
        "member {} does not match its child {}",
        full["id"].as_str().unwrap(),
        i1["id"].as_str().unwrap()
    );
    assert!(stderr(&o).contains(&want), "{}", stderr(&o));
    assert!(!dest.exists());
}

#[test]
fn full_backups_instead_say_why() {
    // PostgreSQL 16: no incremental backups.
    let s16 = source(16, false);
    snap(&s16, &[]);
    let (r, err) = snap(&s16, &["--incremental"]);
    assert!(r.get("incremental").is_none(), "{r}");
    assert!(
        err.contains("incremental backups need PostgreSQL 17 or newer")
            && err.contains("taking a full backup"),
        "{err}"
    );
    drop(s16);

    // PostgreSQL 17 without WAL summaries: pg_basebackup refuses, pgb
    // takes a full backup and says so.
    let off = source(17, false);
    snap(&off, &[]);
    let (r, err) = snap(&off, &["--incremental"]);
    assert!(r.get("incremental").is_none(), "{r}");
    assert!(
        err.contains("WAL summar") && err.contains("taking a full backup"),
        "{err}"
    );
    assert_eq!(files_below(&off.repo).len(), 2 * 4, "no leftovers");
    drop(off);

    // --max-chain, and a parent named by id.
    let s = source(17, true);
    let (full, _) = snap(&s, &[]);
    let (i1, _) = snap(&s, &["--incremental", "--max-chain", "2"]);
    assert_eq!(i1["incremental"]["depth"], 1);
    let (r, err) = snap(&s, &["--incremental", "--max-chain", "2"]);
    assert!(r.get("incremental").is_none(), "{r}");
    assert!(err.contains("(--max-chain 2)"), "{err}");
    let id = full["id"].as_str().unwrap();
    let (r, _) = snap(&s, &[&format!("--incremental={id}")]);
    assert_eq!(r["incremental"]["parent"], full["id"]);
    assert_eq!(r["incremental"]["depth"], 1);
    // The newest backup's parent deleted by hand: no incremental on a
    // chain that cannot be restored.
    let loc = location(&full);
    fs::remove_dir_all(&loc).unwrap();
    fs::remove_file(pgb_common::record::sidecar_for(&loc)).unwrap();
    let (after, err) = snap(&s, &["--incremental"]);
    assert!(after.get("incremental").is_none(), "{after}");
    assert!(
        err.contains("whose own chain is broken")
            && err.contains(&format!("member {id} (parent of")),
        "{err}"
    );
    let o = s
        .cluster
        .tool("pgb-snapshot")
        .args([
            "--physical",
            "--cluster",
            "main",
            "--incremental=nope",
            "-o",
        ])
        .arg(&s.repo)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--incremental=nope: no physical backup with that id"));
    let o = s
        .cluster
        .tool("pgb-snapshot")
        .args(["--physical", "--incremental", "-Z", "pg_dump", "-o"])
        .arg(&s.repo)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--incremental needs --compress zstd"),
        "{}",
        stderr(&o)
    );
}

/// The archive's segment names (without .zst, .age), sorted.
fn segments(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .map(|n| n.split('.').next().unwrap().to_string())
        .filter(|n| n.len() == 24 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    v.sort();
    v.dedup();
    v
}

#[test]
fn prune_keeps_every_ancestor_of_a_kept_incremental_and_their_wal() {
    let s = source(17, true);
    let c = &s.cluster;
    c.sql(
        "postgres",
        "CREATE TABLE t (i int); INSERT INTO t VALUES (1);",
    );
    let (old, _) = snap(&s, &[]);
    c.sql(
        "postgres",
        "INSERT INTO t VALUES (2); SELECT pg_switch_wal();",
    );
    let (full, i1, i2) =
        chain_of_three(&s, ["INSERT INTO t VALUES (3)", "INSERT INTO t VALUES (4)"]);
    assert_eq!(i2["incremental"]["depth"], 2);
    c.sql("postgres", "INSERT INTO t VALUES (5)");
    let seg = c.sql("postgres", "SELECT pg_walfile_name(pg_switch_wal())");
    wait_archived(c, &s.archive, &seg);
    let old_start = old["wal"]["start_segment"].as_str().unwrap().to_string();
    let full_start = full["wal"]["start_segment"].as_str().unwrap().to_string();
    assert!(segments(&s.archive).contains(&old_start));

    let o = Command::new(bin("pgb-prune"))
        .arg("--repo")
        .arg(&s.repo)
        .args(["--keep-last", "1", "--apply", "--wal-archive"])
        .arg(&s.archive)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let recs = records(&o.stdout);
    let decision = |rec: &Value| -> (String, Vec<String>) {
        let r = recs
            .iter()
            .find(|r| r["id"] == rec["id"])
            .unwrap_or_else(|| panic!("no record of {} in {recs:?}", rec["id"]));
        (
            r["prune"]["action"].as_str().unwrap().to_string(),
            serde_json::from_value(r["prune"]["reasons"].clone()).unwrap(),
        )
    };
    assert_eq!(decision(&old).0, "delete");
    assert_eq!(
        decision(&full),
        (
            "keep".into(),
            vec![format!("parent of {}", i1["id"].as_str().unwrap())]
        )
    );
    assert_eq!(
        decision(&i1),
        (
            "keep".into(),
            vec![format!("parent of {}", i2["id"].as_str().unwrap())]
        )
    );
    assert_eq!(decision(&i2).0, "keep");
    assert!(!location(&old).exists());
    assert!(location(&full).is_dir() && location(&i1).is_dir());
    // WAL expiry follows the oldest kept member of the chain.
    let left = segments(&s.archive);
    assert_eq!(left.first(), Some(&full_start), "{left:?}");

    // And the chain still restores.
    let work = Scratch::new("incr-pruned");
    let dest = work.path.join("data");
    let o = restore(&[&"--repo", &s.repo, &"--target-immediate", &"-D", &dest]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        records(&o.stdout)[0]["chain"],
        json!([full["id"], i1["id"], i2["id"]])
    );
}

/// The latest `verified` entry of `method` in the record of `id` among
/// `recs`.
fn verdict(recs: &[Value], id: &Value, method: &str) -> Value {
    let r = recs
        .iter()
        .find(|r| &r["id"] == id)
        .unwrap_or_else(|| panic!("no record of {id} in {recs:?}"));
    r["verified"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|v| v["method"] == method)
        .cloned()
        .unwrap_or_else(|| panic!("no {method} verdict on {id}: {r}"))
}

#[test]
fn verify_checks_a_chain_and_test_restores_through_it() {
    let s = source(18, true);
    let c = &s.cluster;
    c.sql(
        "postgres",
        "CREATE TABLE t (i int); INSERT INTO t SELECT generate_series(1, 100);",
    );
    let (full, i1, i2) = chain_of_three(
        &s,
        [
            "INSERT INTO t VALUES (101)",
            "DROP TABLE t; CREATE TABLE u (i int);",
        ],
    );

    // The cheap levels (checksums, structure, manifest: INCREMENTAL.*
    // files are listed in an incremental's manifest like any other).
    let o = c
        .tool("pgb-verify")
        .arg("--repo")
        .arg(&s.repo)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let recs = records(&o.stdout);
    for inc in [&i1, &i2] {
        let m = verdict(&recs, &inc["id"], "manifest");
        assert_eq!(m["ok"], true, "{m}");
    }

    let o = c
        .tool("pgb-verify")
        .arg("--repo")
        .arg(&s.repo)
        .args(["--checksums", "--restore"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let recs = records(&o.stdout);
    let chain = verdict(&recs, &i2["id"], "chain");
    assert_eq!(chain["ok"], true, "{chain}");
    assert_eq!(chain["members"], json!([full["id"], i1["id"], i2["id"]]));
    let r = verdict(&recs, &i2["id"], "restore");
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["chain"], json!([full["id"], i1["id"], i2["id"]]));
    assert_eq!(r["manifest_checked"], true, "{r}");
    // A full backup has no chain verdict.
    let f = recs.iter().find(|r| r["id"] == full["id"]).unwrap();
    assert!(
        f["verified"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["method"] != "chain"),
        "{f}"
    );

    // One flipped byte in the full backup fails every incremental on it,
    // naming the member and the file.
    let base = location(&full).join("base.tar.zst");
    let mut bytes = fs::read(&base).unwrap();
    let n = bytes.len() / 2;
    bytes[n] ^= 0x01;
    fs::write(&base, bytes).unwrap();
    let o = c
        .tool("pgb-verify")
        .arg("--repo")
        .arg(&s.repo)
        .args(["--checksums", "--restore"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let recs = records(&o.stdout);
    for inc in [&i1, &i2] {
        let v = verdict(&recs, &inc["id"], "chain");
        assert_eq!(v["ok"], false, "{v}");
        let p = v["problems"][0].as_str().unwrap();
        assert!(
            p.contains(&format!("chain member {}", full["id"].as_str().unwrap()))
                && p.contains(&base.display().to_string()),
            "{p}"
        );
        let r = verdict(&recs, &inc["id"], "restore");
        assert_eq!(r["ok"], false, "{r}");
        assert!(
            r["problems"][0].as_str().unwrap().contains("base.tar.zst"),
            "{r}"
        );
    }
    assert_eq!(verdict(&recs, &full["id"], "checksums")["ok"], false);
}

#[test]
fn an_encrypted_parent_needs_its_identity_and_the_chain_restores_with_it_also_from_a_copy() {
    let s = source(17, true);
    let c = &s.cluster;
    c.sql(
        "postgres",
        "CREATE TABLE t (i int); INSERT INTO t SELECT generate_series(1, 100);",
    );
    let (full, _) = snap(&s, &[]);
    let keys = Scratch::new("incr-keys");
    let id = keys.path.join("identity.txt");
    run(Command::new("age-keygen").arg("-o").arg(&id));
    let recipient = String::from_utf8(run(Command::new("age-keygen").arg("-y").arg(&id)).stdout)
        .unwrap()
        .trim()
        .to_string();
    let (code, out, err) = pipe(
        Command::new(bin("pgb-encrypt")).args(["-r", &recipient, "--remove-plaintext"]),
        std::slice::from_ref(&full),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out[0]["encryption"].is_object());
    assert!(location(&full).join("backup_manifest.age").is_file());

    c.sql("postgres", "INSERT INTO t VALUES (101)");
    // Without the identity: refused, saying what to give, nothing written.
    let o = c
        .tool("pgb-snapshot")
        .args(["--physical", "--cluster", "main", "--incremental", "-o"])
        .arg(&s.repo)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "the parent {} is encrypted: give its identity with -i FILE",
            full["id"].as_str().unwrap()
        )),
        "{err}"
    );
    let sidecars = |repo: &Path| {
        files_below(repo)
            .into_iter()
            .filter(|f| f.ends_with(".pgb.json"))
            .count()
    };
    assert_eq!(sidecars(&s.repo), 1);
    // With it: an incremental on the encrypted full backup.
    let (i1, _) = snap(&s, &["--incremental", "-i", id.to_str().unwrap()]);
    assert_eq!(i1["incremental"]["parent"], full["id"]);
    let want = c.sql("postgres", "SELECT count(*) FROM t");

    let rs = Scratch::new("incr-enc-restored");
    let dest = rs.path.join("data");
    let o = restore(&[&"--repo", &s.repo, &"--target-immediate", &"-D", &dest]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "chain member {}: encrypted; give the identity with -i FILE",
            full["id"].as_str().unwrap()
        )),
        "{}",
        stderr(&o)
    );
    assert!(!dest.exists());
    let o = restore(&[
        &"--repo",
        &s.repo,
        &"-i",
        &id,
        &"--target-immediate",
        &"-D",
        &dest,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let restored = Cluster::adopt_as(bindir_of(17), rs, dest, 5432, "archive_mode = off");
    restored.wait_for("SELECT pg_is_in_recovery()", "f");
    assert_eq!(restored.sql("postgres", "SELECT count(*) FROM t"), want);
    drop(restored);

    // The chain shipped to another directory restores from the copy,
    // without the original repository.
    let copy = keys.path.join("nas");
    fs::create_dir(&copy).unwrap();
    let o = Command::new(bin("pgb-ship"))
        .arg("--repo")
        .arg(&s.repo)
        .arg("--to")
        .arg(&copy)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let moved = keys.path.join("original-gone");
    fs::rename(&s.repo, &moved).unwrap();
    let rs = Scratch::new("incr-copy-restored");
    let dest = rs.path.join("data");
    let o = restore(&[
        &"--repo",
        &copy,
        &"-i",
        &id,
        &"--target-immediate",
        &"-D",
        &dest,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = records(&o.stdout).remove(0);
    assert_eq!(r["chain"], json!([full["id"], i1["id"]]));
    assert_eq!(r["artifact"]["repo"], copy.display().to_string());
    let restored = Cluster::adopt_as(bindir_of(17), rs, dest, 5432, "archive_mode = off");
    restored.wait_for("SELECT pg_is_in_recovery()", "f");
    assert_eq!(restored.sql("postgres", "SELECT count(*) FROM t"), want);
    drop(restored);
    fs::rename(&moved, &s.repo).unwrap();

    // Shipped to S3, the chain restores from the bucket alone: each member
    // streamed from there, checked, unpacked, then combined.
    let s3 = crate::servers::S3::start();
    let url = format!("s3://{}/pg", s3.bucket);
    let o = Command::new(bin("pgb-ship"))
        .arg("--repo")
        .arg(&s.repo)
        .args(["--to", &url])
        .envs(s3.env())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    fs::rename(&s.repo, &moved).unwrap();
    let rs = Scratch::new("incr-s3-restored");
    let dest = rs.path.join("data");
    let o = Command::new(bin("pgb-restore"))
        .args(["--repo", &url, "-i"])
        .arg(&id)
        .args(["--target-immediate", "-D"])
        .arg(&dest)
        .env("PGB_PG_BINDIR", all_bindirs())
        .envs(s3.env())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = records(&o.stdout).remove(0);
    assert_eq!(r["chain"], json!([full["id"], i1["id"]]));
    assert_eq!(r["artifact"]["repo"], url.as_str());
    let restored = Cluster::adopt_as(bindir_of(17), rs, dest, 5432, "archive_mode = off");
    restored.wait_for("SELECT pg_is_in_recovery()", "f");
    assert_eq!(restored.sql("postgres", "SELECT count(*) FROM t"), want);
    fs::rename(&moved, &s.repo).unwrap();
}

#[test]
fn three_two_one_holds_for_an_incremental_only_when_it_holds_for_its_chain() {
    let s = source(17, true);
    let c = &s.cluster;
    c.sql(
        "postgres",
        "CREATE TABLE t (i int); INSERT INTO t VALUES (1);",
    );
    let (full, _) = snap(&s, &[]);
    c.sql("postgres", "INSERT INTO t VALUES (2)");
    let (i1, _) = snap(&s, &["--incremental"]);
    let d = Scratch::new("incr-ship");
    let (nas, off) = (d.path.join("nas"), d.path.join("offsite"));
    fs::create_dir(&nas).unwrap();
    fs::create_dir(&off).unwrap();
    let to = [
        "--to".to_string(),
        format!("{}#media=nas", nas.display()),
        "--to".to_string(),
        format!("{}#media=usb,site=offsite", off.display()),
        "--require".to_string(),
        "3-2-1".to_string(),
    ];

    // The incremental alone: its own copies meet the rule, its parent has
    // none.
    let (code, out, err) = pipe(
        Command::new(bin("pgb-ship")).args(&to),
        std::slice::from_ref(&i1),
    );
    assert_eq!(code, 1, "{err}");
    let p = &out[0]["policy"];
    assert_eq!(p["ok"], false, "{p}");
    assert_eq!(p["copies"], 3, "{p}");
    assert_eq!(p["chain"], json!([full["id"], i1["id"]]));
    let failed = p["failed"].to_string();
    assert!(
        failed.contains(&format!(
            "chain member {}: 3 copies",
            full["id"].as_str().unwrap()
        )),
        "{failed}"
    );

    // The whole repository, oldest first: the chain meets it.
    let (code, out, err) = pipe(
        Command::new(bin("pgb-ship"))
            .arg("--repo")
            .arg(&s.repo)
            .args(&to),
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let inc = out.iter().find(|r| r["id"] == i1["id"]).unwrap();
    assert_eq!(inc["policy"]["ok"], true, "{inc}");
    assert_eq!(inc["policy"]["chain"], json!([full["id"], i1["id"]]));
}

#[test]
fn check_archive_shows_a_chain_and_a_broken_one_is_unrestorable() {
    let s = source(17, true);
    let c = &s.cluster;
    c.sql(
        "postgres",
        "CREATE TABLE t (i int); INSERT INTO t VALUES (1);",
    );
    let (full, _) = snap(&s, &[]);
    c.sql("postgres", "INSERT INTO t VALUES (2)");
    let (i1, _) = snap(&s, &["--incremental"]);
    c.sql("postgres", "INSERT INTO t VALUES (3)");
    let seg = c.sql("postgres", "SELECT pg_walfile_name(pg_switch_wal())");
    wait_archived(c, &s.archive, &seg);
    let check = |repo: &Path| {
        let o = Command::new(bin("pgb-check-archive"))
            .arg(&s.archive)
            .arg("--repo")
            .arg(repo)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (o.status.code(), records(&o.stdout), stderr(&o))
    };
    let (code, recs, err) = check(&s.repo);
    assert_eq!(code, Some(0), "{err}");
    let inc = recs.iter().find(|r| r["id"] == i1["id"]).unwrap();
    assert_eq!(inc["archive_check"]["restorable"], true, "{inc}");
    assert_eq!(inc["archive_check"]["chain"], json!([full["id"], i1["id"]]));

    // The full backup gone: the incremental cannot be restored.
    let loc = location(&full);
    fs::remove_dir_all(&loc).unwrap();
    fs::remove_file(pgb_common::record::sidecar_for(&loc)).unwrap();
    let (code, recs, err) = check(&s.repo);
    assert_eq!(code, Some(1), "{err}");
    let inc = recs.iter().find(|r| r["id"] == i1["id"]).unwrap();
    assert_eq!(inc["archive_check"]["restorable"], false, "{inc}");
    assert!(
        inc["archive_check"]["chain_broken"]
            .as_str()
            .unwrap()
            .contains(&format!(
                "member {} (parent of",
                full["id"].as_str().unwrap()
            )),
        "{inc}"
    );
    assert!(
        recs.iter()
            .any(|r| r["problem"] == "backup-unrestorable" && r["backup"] == i1["id"]),
        "{recs:?}"
    );
}

#[test]
fn a_failure_after_pg_combinebackup_leaves_no_target_no_tablespace_no_temp_area() {
    let s = source(17, true);
    let c = &s.cluster;
    let ts = s._scratch.owned_dir("tblspc");
    c.sql(
        "postgres",
        &format!(
            "CREATE TABLESPACE ts LOCATION '{}';
             CREATE TABLE tt (i int) TABLESPACE ts; INSERT INTO tt VALUES (1);",
            ts.display()
        ),
    );
    let oid = c.sql(
        "postgres",
        "SELECT oid FROM pg_tablespace WHERE spcname = 'ts'",
    );
    snap(&s, &[]);
    c.sql("postgres", "INSERT INTO tt VALUES (2)");
    snap(&s, &["--incremental"]);

    // PostgreSQL 17's programs, but a pg_verifybackup that fails (a fault
    // a real one cannot be made to produce on demand).
    let work = Scratch::new("incr-fault");
    let bin17 = work.path.join("bin");
    fs::create_dir(&bin17).unwrap();
    for e in fs::read_dir(bindir_of(17)).unwrap().flatten() {
        if e.file_name() != "pg_verifybackup" {
            std::os::unix::fs::symlink(e.path(), bin17.join(e.file_name())).unwrap();
        }
    }
    let stub = bin17.join("pg_verifybackup");
    fs::write(
        &stub,
        "#!/bin/sh\n[ \"$1\" = --version ] && { echo 'pg_verifybackup (PostgreSQL) 17.0'; exit 0; }\n\
         echo 'pg_verifybackup: error: injected fault' >&2; exit 1\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&stub, fs::Permissions::from_mode(0o755)).unwrap();

    let dest = work.path.join("data");
    let new_ts = work.path.join("ts");
    // The temp area of a restore killed earlier (its process gone) is
    // removed by the next one.
    let mut gone = Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let leftover = work.path.join(format!(".data.pgb-tmp.chain.{dead}"));
    fs::create_dir_all(leftover.join("0/base")).unwrap();
    let o = Command::new(bin("pgb-restore"))
        .arg("--repo")
        .arg(&s.repo)
        .args(["--target-immediate", "-D"])
        .arg(&dest)
        .arg("--tablespace-map")
        .arg(format!("{oid}={}", new_ts.display()))
        .env("PGB_PG_BINDIR", &bin17)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the chain did not combine into a valid backup")
            && stderr(&o).contains("injected fault"),
        "{}",
        stderr(&o)
    );
    assert!(!dest.exists(), "the target was left");
    let left: Vec<_> = fs::read_dir(&new_ts)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "the tablespace was left: {left:?}");
    let temps: Vec<_> = fs::read_dir(&work.path)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("pgb-tmp"))
        .collect();
    assert!(temps.is_empty(), "{temps:?}");
    assert!(
        stderr(&o).contains("removing the temp area of an interrupted restore"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn list_shows_each_chain_and_a_broken_one_as_unrestorable() {
    let s = source(18, true);
    let c = &s.cluster;
    c.sql(
        "postgres",
        "CREATE TABLE t (i int); INSERT INTO t VALUES (1);",
    );
    let (full, i1, i2) =
        chain_of_three(&s, ["INSERT INTO t VALUES (2)", "INSERT INTO t VALUES (3)"]);
    let o = c
        .tool("pgb-verify")
        .arg("--repo")
        .arg(&s.repo)
        .arg("--checksums")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    c.sql("postgres", "INSERT INTO t VALUES (4)");
    let seg = c.sql("postgres", "SELECT pg_walfile_name(pg_switch_wal())");
    wait_archived(c, &s.archive, &seg);
    let id = |r: &Value| r["id"].as_str().unwrap().to_string();
    let list = || {
        let o = Command::new(bin("pgb-list"))
            .arg("--repo")
            .arg(&s.repo)
            .arg("--wal-archive")
            .arg(&s.archive)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        records(&o.stdout)
    };
    let on_tty = || {
        let cmd = format!(
            "{} --repo {} --wal-archive {}",
            bin("pgb-list").display(),
            sh_quote(&s.repo),
            sh_quote(&s.archive)
        );
        let (code, text, err) = on_terminal(&[], &cmd);
        assert_eq!(code, 0, "{err}");
        text
    };
    let recs = list();
    let of = |recs: &[Value], r: &Value| recs.iter().find(|l| l["id"] == r["id"]).cloned().unwrap();
    let l = of(&recs, &i2);
    assert_eq!(l["chain"], i1["id"], "{l}");
    assert_eq!(l["depth"], 2, "{l}");
    assert_eq!(l["chain_members"], json!([full["id"], i1["id"], i2["id"]]));
    assert_eq!(l["restorable"], true, "{l}");
    assert_eq!(l["chain_broken"], Value::Null, "{l}");
    let f = of(&recs, &full);
    assert_eq!(
        (f["depth"].clone(), f["chain"].clone()),
        (json!(0), Value::Null)
    );
    let w = recs
        .iter()
        .find(|r| r["type"] == "recovery-window")
        .unwrap();
    assert_eq!(w["counted"], json!([full["id"], i1["id"], i2["id"]]), "{w}");
    let text = on_tty();
    for want in [
        "CHAIN".to_string(),
        format!("incr 1 of chain from {}", id(&full)),
        format!("incr 2 of chain from {}", id(&full)),
        format!("{} (incr 2 of chain from {})", id(&i2), id(&full)),
    ] {
        assert!(text.contains(&want), "{want:?} not in:\n{text}");
    }

    // The middle member gone: the newest cannot be restored, and says why;
    // it opens no recovery window.
    let loc = location(&i1);
    fs::remove_dir_all(&loc).unwrap();
    fs::remove_file(pgb_common::record::sidecar_for(&loc)).unwrap();
    let recs = list();
    let l = of(&recs, &i2);
    assert_eq!(l["restorable"], false, "{l}");
    assert_eq!(l["depth"], 2, "{l}");
    let why = l["chain_broken"].as_str().unwrap();
    assert!(
        why.contains(&format!(
            "member {} (parent of {}) is missing",
            id(&i1),
            id(&i2)
        )),
        "{why}"
    );
    let w = recs
        .iter()
        .find(|r| r["type"] == "recovery-window")
        .unwrap();
    assert_eq!(w["counted"], json!([full["id"]]), "{w}");
    let nc = &w["not_counted"][0];
    assert_eq!(nc["id"], i2["id"], "{w}");
    assert!(
        nc["reason"].as_str().unwrap().contains("not restorable"),
        "{w}"
    );
    let text = on_tty();
    for want in [
        "incr 2, chain BROKEN".to_string(),
        "UNRESTORABLE".to_string(),
        format!("not restorable: {}: chain of", id(&i2)),
    ] {
        assert!(text.contains(&want), "{want:?} not in:\n{text}");
    }
}
