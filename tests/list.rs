//! pgb-list: the catalogue of a real repository (JSON lines on a pipe, a
//! table on a terminal), its filters, and the recovery window checked
//! against what pgb-restore and a real point-in-time recovery reach.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use chrono::{DateTime, Duration, FixedOffset};
use serde_json::Value;

use crate::check_archive::{archiving_cluster, wait_archived, Archived};
use crate::util::*;

fn list(repo: &Path, args: &[&str]) -> Output {
    Command::new(bin("pgb-list"))
        .arg("--repo")
        .arg(repo)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// The records of a run that must exit 0.
fn listed(repo: &Path, args: &[&str]) -> Vec<Value> {
    let o = list(repo, args);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    records(&o.stdout)
}

fn of_type<'a>(recs: &'a [Value], t: &str) -> Vec<&'a Value> {
    recs.iter().filter(|r| r["type"] == t).collect()
}

fn time(v: &Value) -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}"))).unwrap()
}

/// Switches WAL and waits until the finished segment is archived: its name.
fn switch(a: &Archived) -> String {
    let name = a
        .cluster
        .sql("postgres", "SELECT pg_walfile_name(pg_switch_wal())");
    wait_archived(&a.cluster, &a.dir, &name);
    name
}

/// A verified physical backup of the archiving cluster: its record.
fn verified_backup(a: &Archived, repo: &Path) -> Value {
    let recs = snapshot_records(&a.cluster, repo, &["--physical", "--cluster", "main"]);
    let (code, out, err) = pipe(a.cluster.tool("pgb-verify").arg("--checksums"), &recs);
    assert_eq!(code, 0, "{err}");
    out.into_iter().next().unwrap()
}

/// pgb-restore --select reach to `target`: its output.
fn restore_to(
    a: &Archived,
    repo: &Path,
    archive: &Path,
    target: &str,
    dest: &Path,
    dry: bool,
) -> Output {
    let mut cmd = a.cluster.tool("pgb-restore");
    cmd.arg("--repo")
        .arg(repo)
        .args([
            "--select",
            "reach",
            "--target-time",
            target,
            "--wal-archive",
        ])
        .arg(archive)
        .arg("-D")
        .arg(dest);
    if dry {
        cmd.arg("--dry-run");
    }
    cmd.output().unwrap()
}

fn rfc3339(t: DateTime<FixedOffset>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
}

/// Starts the restored data directory `dest` and waits until it promoted:
/// the rows of `t` then, and the server log. Stopped before returning.
fn recover(s: &Scratch, tag: &str, dest: &Path) -> (String, String) {
    let log = s.path.join(format!("{tag}.log"));
    let sock = s.owned_dir(&format!("sock-{tag}"));
    if is_root() {
        run(Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dest));
    }
    let started = as_owner(pg_bin("pg_ctl"))
        .arg("-D")
        .arg(dest)
        .arg("-l")
        .arg(&log)
        .arg("-o")
        .arg(format!(
            "-c unix_socket_directories={} -c archive_mode=off -c port=5432",
            sock.display()
        ))
        .args(["-w", "-t", "120", "start"])
        .output()
        .unwrap();
    let server_log = || fs::read_to_string(&log).unwrap_or_default();
    let stop = || {
        let _ = as_owner(pg_bin("pg_ctl"))
            .arg("-D")
            .arg(dest)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    };
    if !started.status.success() {
        stop();
        panic!("{}", server_log());
    }
    let psql = |sql: &str| {
        Command::new(pg_bin("psql"))
            .args(["-X", "-A", "-t", "-U", "postgres", "-d", "postgres", "-h"])
            .arg(&sock)
            .args(["-c", sql])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let t0 = std::time::Instant::now();
    while psql("SELECT pg_is_in_recovery()").as_deref() != Some("f") {
        if t0.elapsed().as_secs() > 60 {
            stop();
            panic!("not promoted in 60 s: {}", server_log());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let count = psql("SELECT count(*) FROM t").unwrap_or_default();
    stop();
    (count, server_log())
}

#[test]
fn recovery_window_is_what_pitr_reaches_with_holes_splitting_it() {
    let a = archiving_cluster("--compress zstd");
    let c = &a.cluster;
    let s = Scratch::new("list");
    let repo = s.path.join("repo");
    fs::create_dir(&repo).unwrap();
    c.sql(
        "postgres",
        "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 100);",
    );
    let b1 = verified_backup(&a, &repo);
    c.sql("postgres", "INSERT INTO t SELECT generate_series(101, 200)");
    switch(&a);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    c.sql("postgres", "INSERT INTO t SELECT generate_series(201, 300)");
    let hole = switch(&a);
    let b2 = verified_backup(&a, &repo);
    c.sql("postgres", "INSERT INTO t SELECT generate_series(301, 400)");
    let last = switch(&a);

    // Piped: JSON lines, a listing per artifact and the cluster's window.
    let recs = listed(&repo, &["--wal-archive", a.dir.to_str().unwrap()]);
    let listings = of_type(&recs, "listing");
    assert_eq!(listings.len(), 2, "{recs:?}");
    let l1 = listings[0];
    assert_eq!(l1["schema"], "pgb.v1");
    assert_eq!(l1["id"], b1["id"]);
    assert_eq!(l1["kind"], "physical");
    assert_eq!(l1["cluster"], "main");
    assert_eq!(l1["status"], "ok");
    assert_eq!(l1["encrypted"], false);
    assert_eq!(l1["copies"], 1);
    assert_eq!(l1["policy"]["ok"], false);
    assert_eq!(l1["verified"]["checksums"]["ok"], true);
    let size: u64 = b1["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["size"].as_u64().unwrap())
        .sum();
    assert_eq!(l1["size"], size);
    let ended = time(&b1["created"]) + Duration::milliseconds(b1["duration_ms"].as_i64().unwrap());
    assert_eq!(time(&l1["ended"]), ended);

    let w = of_type(&recs, "recovery-window");
    assert_eq!(w.len(), 1, "{recs:?}");
    let w = w[0];
    assert_eq!(w["cluster"], "main");
    assert_eq!(w["ok"], true);
    assert_eq!(w["ranges"].as_array().unwrap().len(), 1, "{w}");
    assert_eq!(w["holes"], serde_json::json!([]));
    assert_eq!(
        w["ranges"][0]["backups"],
        serde_json::json!([b1["id"], b2["id"]])
    );
    assert_eq!(w["ranges"][0]["last_segment"], last.as_str());
    assert_eq!(w["not_counted"], serde_json::json!([]));
    assert_eq!(time(&w["earliest"]), ended);
    assert_eq!(w["latest_basis"], "commit");
    let (earliest, latest) = (time(&w["earliest"]), time(&w["latest"]));
    assert!(latest - earliest > Duration::seconds(1), "{w}");
    assert_eq!(w["length_seconds"], (latest - earliest).num_seconds());

    // The window's two ends are reached; outside either is refused: a
    // second before the backup ended, a microsecond after the latest.
    let us = Duration::microseconds(1);
    let dest = s.path.join("dest");
    for (t, ok) in [
        (earliest, true),
        (latest, true),
        (earliest - Duration::seconds(1), false),
        (latest + us, false),
    ] {
        let o = restore_to(&a, &repo, &a.dir, &rfc3339(t), &dest, true);
        assert_eq!(code(&o) == 0, ok, "{t}: {}", stderr(&o));
        if !ok {
            assert!(
                stderr(&o).contains("no physical backup reaches"),
                "{}",
                stderr(&o)
            );
        }
    }
    assert!(!dest.exists());
    // Real recoveries to both ends. At the earliest moment: consistent,
    // holding what was committed before it, nothing after.
    let o = restore_to(&a, &repo, &a.dir, &rfc3339(earliest), &dest, false);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let (count, log) = recover(&s, "early", &dest);
    assert_eq!(count, "100", "{log}");
    assert!(log.contains("recovery stopping before commit"), "{log}");
    // At the latest: it stops before the archive's last commit, a
    // microsecond later.
    let dest = s.path.join("dest-late");
    let o = restore_to(&a, &repo, &a.dir, &rfc3339(latest), &dest, false);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let (count, log) = recover(&s, "late", &dest);
    assert!(count.parse::<u32>().unwrap() >= 300, "{count}\n{log}");
    let stop = log
        .lines()
        .find_map(|l| l.split_once("recovery stopping before commit of transaction "))
        .and_then(|(_, rest)| rest.split_once(", time "))
        .unwrap_or_else(|| panic!("{log}"))
        .1;
    let stop = DateTime::parse_from_str(stop.trim(), "%Y-%m-%d %H:%M:%S%.f%#z").unwrap();
    assert_eq!(stop, latest + us, "{log}");

    // --require-window: exit 1 when the window is shorter.
    let o = list(
        &repo,
        &[
            "--wal-archive",
            a.dir.to_str().unwrap(),
            "--require-window",
            "1h",
        ],
    );
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("shorter than the 1h required"),
        "{}",
        stderr(&o)
    );
    let w = of_type(&records(&o.stdout), "recovery-window")[0].clone();
    assert_eq!(
        w["required"],
        serde_json::json!({"window": "1h", "ok": false})
    );
    let o = list(
        &repo,
        &[
            "--wal-archive",
            a.dir.to_str().unwrap(),
            "--require-window",
            "1s",
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));

    // A hole after the first backup's run: two ranges, the hole between.
    let holed = s.path.join("holed");
    fs::create_dir(&holed).unwrap();
    for e in fs::read_dir(&a.dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(&hole) {
            run(Command::new("cp").arg("-p").arg(e.path()).arg(&holed));
        }
    }
    let recs = listed(&repo, &["--wal-archive", holed.to_str().unwrap()]);
    let w = of_type(&recs, "recovery-window")[0];
    let ranges = w["ranges"].as_array().unwrap();
    assert_eq!(ranges.len(), 2, "{w}");
    assert_eq!(ranges[0]["backups"], serde_json::json!([b1["id"]]));
    assert_eq!(ranges[0]["first_missing"], hole.as_str());
    assert_eq!(ranges[1]["backups"], serde_json::json!([b2["id"]]));
    assert_eq!(w["holes"][0]["first_missing"], hole.as_str());
    assert_eq!(w["holes"][0]["from"], ranges[0]["to"]);
    assert_eq!(w["holes"][0]["to"], ranges[1]["from"]);
    assert_eq!(time(&w["earliest"]), ended);
    assert_eq!(time(&w["latest"]), latest);
    // The window's length is its newest range's.
    assert_eq!(
        w["length_seconds"],
        (time(&ranges[1]["to"]) - time(&ranges[1]["from"])).num_seconds()
    );

    // WAL of another cluster (its system identifier in the last segment's
    // page header): an error, for pgb-list as for pgb-restore.
    let foreign = s.path.join("foreign");
    run(Command::new("cp").arg("-rp").arg(&a.dir).arg(&foreign));
    let seg = foreign.join(format!("{last}.zst"));
    let mut bytes = zstd::decode_all(&fs::read(&seg).unwrap()[..]).unwrap();
    bytes[24] ^= 1;
    fs::write(&seg, zstd::encode_all(&bytes[..], 1).unwrap()).unwrap();
    let o = list(&repo, &["--wal-archive", foreign.to_str().unwrap()]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("WAL of another cluster"),
        "{}",
        stderr(&o)
    );
    let o = restore_to(&a, &repo, &foreign, &rfc3339(latest), &dest, true);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("WAL of another cluster"),
        "{}",
        stderr(&o)
    );

    // On a terminal: a table, and the window.
    let cmd = format!(
        "{} --repo {} --wal-archive {}",
        bin("pgb-list").display(),
        repo.display(),
        holed.display()
    );
    let o = run(Command::new("script").args(["-qec", &cmd, "/dev/null"]));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(!text.contains("\"schema\""), "{text}");
    for want in [
        "main physical (2)",
        "ID",
        "AGE",
        "SIZE",
        "3-2-1",
        b1["id"].as_str().unwrap(),
        "MiB",
        "checksums ok",
        "Recovery window of main",
        &format!("hole: {hole} is missing"),
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
    // --json forces records on a terminal.
    let o = run(Command::new("script").args(["-qec", &format!("{cmd} --json"), "/dev/null"]));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("\"type\":\"recovery-window\""), "{text}");
}

#[test]
fn filters_and_an_empty_or_mistyped_repository() {
    let c = Cluster::new();
    let s = Scratch::new("list-filters");
    let repo = s.path.join("repo");
    fs::create_dir(&repo).unwrap();

    // Empty, then mistyped: said so, exit 2.
    let o = list(&repo, &[]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("no artifacts"), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    let o = list(&s.path.join("nope"), &[]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("No such file or directory"),
        "{}",
        stderr(&o)
    );
    // --require-window needs an archive.
    let o = list(&repo, &["--require-window", "7d"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));

    let recs = snapshot_records(
        &c,
        &repo,
        &["-d", "postgres", "--globals", "--cluster", "main"],
    );
    let globals = recs
        .iter()
        .find(|r| r["kind"] == "globals")
        .unwrap()
        .clone();
    let dump = recs
        .iter()
        .find(|r| r["kind"] == "logical")
        .unwrap()
        .clone();
    // The dump verified, the globals damaged and verified (failed).
    let (code_v, _, err) = pipe(
        c.tool("pgb-verify").arg("--checksums"),
        std::slice::from_ref(&dump),
    );
    assert_eq!(code_v, 0, "{err}");
    let gfile =
        Path::new(globals["repo"].as_str().unwrap()).join(globals["path"].as_str().unwrap());
    let mut bytes = fs::read(&gfile).unwrap();
    bytes[0] ^= 1;
    fs::write(&gfile, bytes).unwrap();
    let (code_v, _, _) = pipe(
        c.tool("pgb-verify").arg("--checksums"),
        std::slice::from_ref(&globals),
    );
    assert_eq!(code_v, 1);

    let ids = |args: &[&str]| -> Vec<String> {
        listed(&repo, args)
            .iter()
            .map(|r| {
                assert_eq!(r["type"], "listing", "{r}");
                r["id"].as_str().unwrap().to_string()
            })
            .collect()
    };
    let (d, g) = (
        dump["id"].as_str().unwrap(),
        globals["id"].as_str().unwrap(),
    );
    let mut both = ids(&[]);
    both.sort();
    let mut want = vec![d.to_string(), g.to_string()];
    want.sort();
    assert_eq!(both, want);
    assert_eq!(ids(&["--kind", "logical"]), [d]);
    assert_eq!(ids(&["--kind", "globals"]), [g]);
    assert_eq!(ids(&["--database", "postgres"]), [d]);
    assert_eq!(ids(&["--cluster", "main", "--failed"]), [g]);
    assert_eq!(ids(&["--unverified"]), Vec::<String>::new());
    assert_eq!(ids(&["--since", "1h"]).len(), 2);
    assert_eq!(ids(&["--since", "2000-01-01 00:00:00+00"]).len(), 2);
    assert_eq!(ids(&["--since", "2099-01-01T00:00:00Z"]).len(), 0);
    let l = listed(&repo, &["--kind", "logical"]).remove(0);
    assert_eq!(l["database"], "postgres");
    assert_eq!(l["status"], "ok");
    assert_eq!(l["verified"]["checksums"]["ok"], true);
    let l = listed(&repo, &["--kind", "globals"]).remove(0);
    assert_eq!(l["status"], "failed");
    // A sidecar that does not parse: named, an error record, exit 2; the
    // others are still listed.
    fs::write(repo.join("junk.pgb.json"), "{ nope").unwrap();
    let o = list(&repo, &[]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("junk.pgb.json"), "{}", stderr(&o));
    let recs = records(&o.stdout);
    assert_eq!(recs[0]["type"], "error", "{recs:?}");
    assert_eq!(recs[0]["tool"], "pgb-list");
    assert_eq!(of_type(&recs, "listing").len(), 2);
    fs::remove_file(repo.join("junk.pgb.json")).unwrap();
    // A cluster that is not there, and a bad --since: exit 2.
    let o = list(&repo, &["--cluster", "other"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("clusters: main"), "{}", stderr(&o));
    let o = list(&repo, &["--since", "last tuesday"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("--since"), "{}", stderr(&o));
}

/// An age key pair made by age-keygen in `dir`: (identity file, recipient).
fn age_key(dir: &Path, name: &str) -> (std::path::PathBuf, String) {
    use std::os::unix::fs::PermissionsExt;
    let id = dir.join(name);
    run(Command::new("age-keygen")
        .arg("-o")
        .arg(&id)
        .stderr(std::process::Stdio::null()));
    fs::set_permissions(&id, fs::Permissions::from_mode(0o600)).unwrap();
    let out = run(Command::new("age-keygen").arg("-y").arg(&id));
    (
        id,
        String::from_utf8(out.stdout).unwrap().trim().to_string(),
    )
}

#[test]
fn encrypted_wal_gives_commit_times_with_its_key() {
    let s = Scratch::new("list-age");
    let (key, recipient) = age_key(&s.path, "wal.key");
    let (other, _) = age_key(&s.path, "other.key");
    let a = archiving_cluster(&format!("--compress zstd -r {recipient}"));
    let repo = s.path.join("repo");
    fs::create_dir(&repo).unwrap();
    a.cluster.sql("postgres", "CREATE TABLE t (id int)");
    verified_backup(&a, &repo);
    a.cluster
        .sql("postgres", "INSERT INTO t SELECT generate_series(1, 10)");
    let last = switch(&a);
    let dir = a.dir.to_str().unwrap();

    // Without the key: when the last segment was archived.
    let recs = listed(&repo, &["--wal-archive", dir]);
    let w = of_type(&recs, "recovery-window")[0];
    assert_eq!(w["latest_basis"], "archived", "{w}");
    let mtime: DateTime<chrono::Utc> = fs::metadata(a.dir.join(format!("{last}.zst.age")))
        .unwrap()
        .modified()
        .unwrap()
        .into();
    let archived = time(&w["latest"]).with_timezone(&chrono::Utc);
    assert!(
        archived <= mtime && mtime - archived < Duration::microseconds(1),
        "{w}"
    );
    // With it: before the last commit, which came before the archiving.
    let recs = listed(
        &repo,
        &[
            "--wal-archive",
            dir,
            "--wal-identity",
            key.to_str().unwrap(),
        ],
    );
    let w = of_type(&recs, "recovery-window")[0];
    assert_eq!(w["latest_basis"], "commit", "{w}");
    assert!(time(&w["latest"]) < archived, "{w}");
    assert!(time(&w["latest"]) > time(&w["earliest"]), "{w}");
    // The wrong key: an error naming the segment.
    let o = list(
        &repo,
        &[
            "--wal-archive",
            dir,
            "--wal-identity",
            other.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains(&last), "{}", stderr(&o));
}
