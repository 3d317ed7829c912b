//! pgb-check-archive against archives filled by real clusters through
//! `pgb-wal push`, clean and with each fault, cross-checked with pg_waldump.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::*;

/// A cluster with 1 MB segments archiving through pgb-wal into `dir`.
pub struct Archived {
    pub cluster: Cluster,
    pub scratch: Scratch,
    pub dir: PathBuf,
}

pub fn archiving_cluster(push_args: &str) -> Archived {
    let scratch = Scratch::new("walarchive");
    let dir = scratch.owned_dir("archive");
    let cluster = Cluster::with(Options {
        archive_command: Some(format!(
            "{} push %p --archive {} {push_args}",
            bin("pgb-wal").display(),
            dir.display()
        )),
        initdb_args: vec!["--wal-segsize=1".into()],
        ..Default::default()
    });
    Archived {
        cluster,
        scratch,
        dir,
    }
}

/// Writes a little and switches WAL `n` times; waits until the last
/// finished segment is archived; returns the finished segments' names.
pub fn make_segments(c: &Cluster, dir: &Path, n: usize) -> Vec<String> {
    let mut sql = String::from("CREATE TABLE IF NOT EXISTS t (i int);\n");
    for i in 0..n {
        sql.push_str(&format!(
            "INSERT INTO t VALUES ({i});\nSELECT pg_walfile_name(pg_switch_wal());\n"
        ));
    }
    let names: Vec<String> = c.sql("postgres", &sql).lines().map(String::from).collect();
    wait_archived(c, dir, names.last().unwrap());
    names
}

pub fn wait_archived(c: &Cluster, dir: &Path, name: &str) {
    let t0 = Instant::now();
    let archived = || {
        ["", ".zst", ".age", ".zst.age"]
            .iter()
            .any(|s| dir.join(format!("{name}{s}")).exists())
    };
    while !archived() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{name} not archived in 60 s:\n{}",
            c.server_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Segment file names in an archive (without .zst or .age), sorted.
pub fn segment_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .map(|n| {
            n.trim_end_matches(".age")
                .trim_end_matches(".zst")
                .to_string()
        })
        .filter(|n| n.len() == 24 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    v.sort();
    v
}

fn check(dir: &Path, args: &[&str]) -> (i32, Vec<Value>, String) {
    let out = Command::new(bin("pgb-check-archive"))
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        records(&out.stdout),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn summary(recs: &[Value]) -> &Value {
    let s = recs.last().expect("a summary record");
    assert_eq!(s["type"], "archive-summary", "{recs:?}");
    assert_eq!(s["schema"], "pgb.v1");
    s
}

fn problems(recs: &[Value]) -> Vec<(String, String)> {
    recs.iter()
        .filter(|r| r["type"] == "archive-problem")
        .map(|r| {
            (
                r["problem"].as_str().unwrap().to_string(),
                r["file"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// pg_waldump reading every record from `first` to `last` in `dir`.
fn waldump_ok(dir: &Path, first: &str, last: &str) -> bool {
    Command::new(pg_bin("pg_waldump"))
        .arg("-p")
        .arg(dir)
        .args([first, last])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

fn copy_dir(from: &Path, to: &Path) {
    run(Command::new("cp").arg("-a").arg(from).arg(to));
}

#[test]
fn clean_archive_passes_and_each_fault_is_named() {
    let a = archiving_cluster("");
    make_segments(&a.cluster, &a.dir, 16);
    let segs = segment_names(&a.dir);
    assert!(segs.len() >= 16, "{segs:?}");
    let (first, last) = (segs[0].clone(), segs[segs.len() - 1].clone());

    // A second cluster, for a segment of another system.
    let other = archiving_cluster("");
    make_segments(&other.cluster, &other.dir, 8);
    let theirs = segment_names(&other.dir);
    let shared = segs[2..segs.len() - 2]
        .iter()
        .find(|s| theirs.contains(s))
        .unwrap_or_else(|| panic!("no common segment name: {segs:?} {theirs:?}"))
        .clone();

    let (code, recs, err) = check(&a.dir, &[]);
    assert_eq!(code, 0, "{recs:?} {err}");
    let s = summary(&recs);
    assert_eq!(s["ok"], true);
    assert_eq!(s["segments"], json!(segs.len()));
    assert_eq!(s["segment_size"], 1 << 20);
    assert_eq!(s["pg_version"], json!(pg_major()));
    assert_eq!(s["gaps"], 0);
    assert_eq!(s["newest_segment"], json!(last));
    assert_eq!(
        s["ranges"],
        json!([{"timeline": 1, "first": first, "last": last, "segments": segs.len()}])
    );
    assert!(
        waldump_ok(&a.dir, &first, &last),
        "pg_waldump fails on the clean archive"
    );
    let sysid = s["system_identifier"].as_str().unwrap().to_string();
    let (code, _, _) = check(&a.dir, &["--system-identifier", &sysid]);
    assert_eq!(code, 0);
    let (code, recs, _) = check(&a.dir, &["--system-identifier", "42"]);
    assert_eq!(code, 1);
    assert_eq!(summary(&recs)["foreign_segments"], json!(segs.len()));

    type Mutilate = Box<dyn Fn(&Path)>;
    let seg = |i: usize| segs[i].clone();
    let truncate = |x: String, len: u64| -> Mutilate {
        Box::new(move |d: &Path| {
            let f = fs::OpenOptions::new().write(true).open(d.join(&x)).unwrap();
            f.set_len(len).unwrap();
        })
    };
    // (fault, mutilation, expected problems, whether pg_waldump notices).
    type Case<'a> = (&'a str, Mutilate, Vec<(&'a str, String)>, bool);
    let cases: Vec<Case> = vec![
        (
            "deleted segments",
            Box::new({
                let (x, y) = (seg(5), seg(6));
                move |d| {
                    fs::remove_file(d.join(&x)).unwrap();
                    fs::remove_file(d.join(&y)).unwrap();
                }
            }),
            vec![("gap", seg(5))],
            true,
        ),
        (
            "zero-filled",
            Box::new({
                let x = seg(4);
                move |d| fs::write(d.join(&x), vec![0u8; 1 << 20]).unwrap()
            }),
            vec![("zero", seg(4))],
            true,
        ),
        (
            "truncated",
            truncate(seg(7), 4000),
            vec![("bad-size", seg(7))],
            true,
        ),
        // Cut after its last record: pg_waldump follows the WAL switch
        // record past the missing tail and says nothing, but PostgreSQL
        // refuses to restore it ("archive file has wrong size").
        (
            "truncated after its records",
            truncate(seg(11), 600_000),
            vec![("bad-size", seg(11))],
            false,
        ),
        (
            "flipped header byte",
            Box::new({
                let x = seg(8);
                move |d| {
                    let mut b = fs::read(d.join(&x)).unwrap();
                    b[1] ^= 0x40;
                    fs::write(d.join(&x), b).unwrap();
                }
            }),
            vec![("bad-magic", seg(8))],
            true,
        ),
        (
            "segment of another cluster",
            Box::new({
                let (x, src) = (shared.clone(), other.dir.join(&shared));
                move |d| {
                    fs::remove_file(d.join(&x)).unwrap();
                    fs::copy(&src, d.join(&x)).unwrap();
                }
            }),
            vec![("foreign", shared.clone())],
            // pg_waldump has no pg_control to compare xlp_sysid with, and the
            // twin workloads chain alike; recovery refuses the file ("WAL
            // file is from different database system").
            false,
        ),
        (
            "segments swapped",
            Box::new({
                let (x, y) = (seg(9), seg(10));
                move |d| {
                    let tmp = d.join("swap");
                    fs::rename(d.join(&x), &tmp).unwrap();
                    fs::rename(d.join(&y), d.join(&x)).unwrap();
                    fs::rename(&tmp, d.join(&y)).unwrap();
                }
            }),
            vec![("bad-pageaddr", seg(9)), ("bad-pageaddr", seg(10))],
            true,
        ),
    ];
    for (what, mutilate, expected, waldump_fails) in cases {
        let copy = a.scratch.path.join(what.replace(' ', "-"));
        copy_dir(&a.dir, &copy);
        mutilate(&copy);
        let (code, recs, err) = check(&copy, &[]);
        assert_eq!(code, 1, "{what}: {recs:?} {err}");
        let got = problems(&recs);
        for (p, f) in &expected {
            assert!(
                got.iter().any(|(gp, gf)| gp == p && gf == f),
                "{what}: expected {p} naming {f}, got {got:?}"
            );
        }
        assert_eq!(summary(&recs)["ok"], false);
        assert_eq!(
            !waldump_ok(&copy, &first, &last),
            waldump_fails,
            "{what}: pg_waldump's verdict"
        );
    }

    // The gap is one range, both ends named.
    let copy = a.scratch.path.join("deleted-segments");
    let (_, recs, _) = check(&copy, &[]);
    let gap = recs.iter().find(|r| r["problem"] == "gap").unwrap();
    assert_eq!(gap["first"], json!(seg(5)));
    assert_eq!(gap["last"], json!(seg(6)));
    assert_eq!(gap["missing"], 2);
    assert_eq!(gap["timeline"], 1);
    assert_eq!(summary(&recs)["gaps"], 1);
}

fn pg_major() -> String {
    let out = run(Command::new(pg_bin("pg_ctl")).arg("--version"));
    let v = String::from_utf8(out.stdout).unwrap();
    v.split_whitespace()
        .last()
        .unwrap()
        .split('.')
        .next()
        .unwrap()
        .to_string()
}

fn set_mtime(path: &Path, ago: &str) {
    run(Command::new("touch").arg("-d").arg(ago).arg(path));
}

#[test]
fn compressed_archive_staleness_and_metrics() {
    let a = archiving_cluster("--compress zstd:3");
    make_segments(&a.cluster, &a.dir, 4);
    let segs = segment_names(&a.dir);
    let prom = a.scratch.path.join("pgb.prom");
    let (code, recs, err) = check(
        &a.dir,
        &["--max-age", "3600", "--prom", prom.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{recs:?} {err}");
    let s = summary(&recs);
    assert_eq!(s["compressed_segments"], json!(segs.len()));
    assert_eq!(s["segments"], json!(segs.len()));
    let text = fs::read_to_string(&prom).unwrap();
    let label = format!("{{archive=\"{}\"}}", a.dir.display());
    for line in [
        format!("pgb_archive_check_success{label} 1"),
        format!("pgb_archive_segments{label} {}", segs.len()),
        format!("pgb_archive_gaps{label} 0"),
        format!("pgb_archive_bad_segments{label} 0"),
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
    }
    assert!(text.contains("pgb_archive_age_seconds{"));
    assert!(text.contains("pgb_archive_last_check_timestamp_seconds{"));

    // Stale: every segment two hours old.
    let stale = a.scratch.path.join("stale");
    copy_dir(&a.dir, &stale);
    for e in fs::read_dir(&stale).unwrap().flatten() {
        set_mtime(&e.path(), "2 hours ago");
    }
    let (code, recs, _) = check(
        &stale,
        &["--max-age", "3600", "--prom", prom.to_str().unwrap()],
    );
    assert_eq!(code, 1);
    let newest = format!("{}.zst", segs.last().unwrap());
    assert!(
        problems(&recs).contains(&("stale".into(), newest)),
        "{recs:?}"
    );
    assert!(summary(&recs)["age_seconds"].as_f64().unwrap() > 7000.0);
    let text = fs::read_to_string(&prom).unwrap();
    assert!(text.contains(&format!(
        "pgb_archive_check_success{{archive=\"{}\"}} 0",
        stale.display()
    )));

    // A truncated compressed segment: its declared size, then its page.
    let bad = a.scratch.path.join("bad-zst");
    copy_dir(&a.dir, &bad);
    let victim = bad.join(format!("{}.zst", segs[1]));
    let f = fs::OpenOptions::new().write(true).open(&victim).unwrap();
    f.set_len(30).unwrap();
    let (code, recs, _) = check(&bad, &[]);
    assert_eq!(code, 1);
    assert!(
        problems(&recs)
            .iter()
            .any(|(_, f)| f == &format!("{}.zst", segs[1])),
        "{recs:?}"
    );

    // Records cannot be written (stdout on a full disk): status 2.
    let full = Command::new(bin("pgb-check-archive"))
        .arg(&a.dir)
        .stdout(
            fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap(),
        )
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(full.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&full.stderr).contains("No space left"),
        "{}",
        String::from_utf8_lossy(&full.stderr)
    );

    // An unreadable archive: status 2, and metrics saying so.
    let (code, recs, err) = check(
        &a.scratch.path.join("nope"),
        &["--prom", prom.to_str().unwrap()],
    );
    assert_eq!(code, 2, "{recs:?}");
    assert!(err.contains("nope"), "{err}");
    assert!(fs::read_to_string(&prom)
        .unwrap()
        .contains("pgb_archive_check_success{"));
}

#[test]
fn backups_on_stdin_are_judged_restorable_or_not() {
    let a = archiving_cluster("");
    make_segments(&a.cluster, &a.dir, 8);
    let segs = segment_names(&a.dir);
    let artifact = |id: &str, start: &str, stop: &str| {
        json!({
            "schema": "pgb.v1", "type": "artifact", "id": id, "kind": "physical",
            "cluster": "main", "created": "2026-11-21T10:15:00Z", "repo": "/r", "path": "p",
            "files": [],
            "wal": {"timeline": 1, "start_lsn": "0/0", "stop_lsn": "0/0",
                    "start_segment": start, "stop_segment": stop, "segment_size": 1 << 20}
        })
    };
    fs::remove_file(a.dir.join(&segs[5])).unwrap();
    let note_value = json!({"schema": "pgb.v1", "type": "note", "x": 1});
    let note = note_value.to_string();
    let input = format!(
        "{}\n{}\n{note}\n",
        artifact("good", &segs[1], &segs[3]),
        artifact("broken", &segs[4], &segs[6])
    );
    let mut child = Command::new(bin("pgb-check-archive"))
        .arg(&a.dir)
        .arg("--backups")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let recs = records(&out.stdout);
    let by_id = |id: &str| {
        recs.iter()
            .find(|r| r["type"] == "artifact" && r["id"] == id)
            .unwrap()
            .clone()
    };
    let good = by_id("good");
    assert_eq!(good["archive_check"]["restorable"], true);
    assert_eq!(good["archive_check"]["wal_end_segment"], json!(segs[4]));
    let broken = by_id("broken");
    assert_eq!(broken["archive_check"]["restorable"], false);
    assert_eq!(broken["archive_check"]["missing"], json!([segs[5]]));
    assert!(problems(&recs).contains(&("backup-unrestorable".into(), segs[5].clone())));
    assert!(recs.contains(&note_value), "note forwarded");

    // The same from a repository's sidecars: physical artifacts only, the
    // sidecars left as they were.
    let repo = a.scratch.path.join("repo");
    let phys = repo.join("main/physical");
    let logical = repo.join("main/logical/appdb");
    fs::create_dir_all(&phys).unwrap();
    fs::create_dir_all(&logical).unwrap();
    let sidecar = |dir: &Path, name: &str, v: &Value| {
        let p = dir.join(format!("{name}.pgb.json"));
        fs::write(&p, serde_json::to_string_pretty(v).unwrap()).unwrap();
        p
    };
    let good_sidecar = sidecar(&phys, "main-good", &artifact("good", &segs[1], &segs[3]));
    sidecar(
        &phys,
        "main-broken",
        &artifact("broken", &segs[4], &segs[6]),
    );
    let mut dump = artifact("dump", &segs[1], &segs[1]);
    dump["kind"] = json!("logical");
    sidecar(&logical, "appdb.dump.zst", &dump);
    let before = fs::read(&good_sidecar).unwrap();
    let (code, recs, err) = check(&a.dir, &["--repo", repo.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    let ids: Vec<&str> = recs
        .iter()
        .filter(|r| r["type"] == "artifact")
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["broken", "good"], "physical artifacts only");
    assert_eq!(by_id("good")["archive_check"]["restorable"], true);
    assert!(problems(&recs).contains(&("backup-unrestorable".into(), segs[5].clone())));
    assert_eq!(
        fs::read(&good_sidecar).unwrap(),
        before,
        "sidecar untouched"
    );
    // A malformed sidecar is an error naming it, before any record.
    fs::write(phys.join("main-bad.pgb.json"), "{ nope").unwrap();
    let (code, recs, err) = check(&a.dir, &["--repo", repo.to_str().unwrap()]);
    assert_eq!(code, 2, "{recs:?}");
    assert!(recs.is_empty(), "{recs:?}");
    assert!(err.contains("main-bad.pgb.json"), "{err}");
}

/// Restores a base backup through `pgb-wal get`, which ends recovery on
/// timeline 2 archiving into the same archive: the archive with its
/// .history file checks clean.
#[test]
fn promoted_restore_on_timeline_2_checks_clean() {
    let a = archiving_cluster("--compress zstd");
    make_segments(&a.cluster, &a.dir, 3);
    let s2 = Scratch::new("restore");
    let data2 = s2.path.join("data");
    run(a
        .cluster
        .pg("pg_basebackup")
        .arg("-D")
        .arg(&data2)
        .args(["-X", "none", "-c", "fast"]));
    make_segments(&a.cluster, &a.dir, 3);
    a.cluster.stop();
    let wal = bin("pgb-wal");
    let conf = format!(
        "restore_command = '{} get %f %p --archive {}'\n\
         archive_command = '{} push %p --archive {} --compress zstd'",
        wal.display(),
        a.dir.display(),
        wal.display(),
        a.dir.display()
    );
    fs::write(data2.join("recovery.signal"), "").unwrap();
    let c2 = Cluster::adopt(s2, data2, a.cluster.port, &conf);
    c2.wait_for("SELECT pg_is_in_recovery()", "f");
    let tl2 = make_segments(&c2, &a.dir, 3);
    assert!(tl2.iter().all(|n| n.starts_with("00000002")), "{tl2:?}");
    wait_archived(&c2, &a.dir, "00000002.history");

    let (code, recs, err) = check(&a.dir, &[]);
    assert_eq!(code, 0, "{recs:?} {err}\n{}", c2.server_log());
    let s = summary(&recs);
    assert_eq!(s["history_files"], 1);
    let tls: Vec<u64> = s["timelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["timeline"].as_u64().unwrap())
        .collect();
    assert_eq!(tls, [1, 2]);
    assert_eq!(s["timelines"][1]["parent"], 1);

    // Without the history file, timeline 2 cannot be followed.
    let copy = c2.scratch.path.join("nohistory");
    copy_dir(&a.dir, &copy);
    fs::remove_file(copy.join("00000002.history")).unwrap();
    let (code, recs, _) = check(&copy, &[]);
    assert_eq!(code, 1);
    assert!(problems(&recs).contains(&("missing-history".into(), "00000002.history".into())));
}

/// An age key pair made by `age-keygen`: (identity file, recipient).
fn keypair(dir: &Path) -> (PathBuf, String) {
    use std::os::unix::fs::PermissionsExt;
    let id = dir.join("archive.key");
    run(Command::new("age-keygen")
        .arg("-o")
        .arg(&id)
        .stderr(Stdio::null()));
    fs::set_permissions(&id, fs::Permissions::from_mode(0o600)).unwrap();
    let text = fs::read_to_string(&id).unwrap();
    let public = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .to_string();
    (id, public)
}

#[test]
fn encrypted_archive_is_counted_without_a_key_and_checked_with_one() {
    let keys = Scratch::new("archivekeys");
    let (id, public) = keypair(&keys.path);
    let a = archiving_cluster(&format!("--compress zstd -r {public}"));
    make_segments(&a.cluster, &a.dir, 6);
    let segs = segment_names(&a.dir);
    let n = segs.len();
    let id_s = id.to_str().unwrap();

    // Without the key: every segment present (continuity), none checked,
    // none failed; the segment size must then be given.
    let (code, recs, _) = check(&a.dir, &[]);
    assert_eq!(code, 1);
    assert_eq!(problems(&recs)[0].0, "unknown-segment-size", "{recs:?}");
    let (code, recs, err) = check(&a.dir, &["--segment-size", "1MB"]);
    assert_eq!(code, 0, "{recs:?} {err}");
    let s = summary(&recs);
    assert_eq!(s["segments"], json!(n));
    assert_eq!(s["encrypted_segments"], json!(n));
    assert_eq!(s["unchecked_segments"], json!(n));
    assert_eq!(s["checksum_files"], json!(n));
    assert_eq!(s["other_files"], json!([]));
    // With it: every first page decrypted and checked.
    let (code, recs, err) = check(&a.dir, &["-i", id_s]);
    assert_eq!(code, 0, "{recs:?} {err}");
    let s = summary(&recs);
    assert_eq!(s["unchecked_segments"], 0);
    assert_eq!(s["segment_size"], 1 << 20);
    assert!(s["system_identifier"].is_string());

    let enc = |i: usize| format!("{}.zst.age", segs[i]);
    // A deleted encrypted segment is a gap, key or not.
    let gap = a.scratch.path.join("gap");
    copy_dir(&a.dir, &gap);
    fs::remove_file(gap.join(enc(2))).unwrap();
    let (code, recs, _) = check(&gap, &["--segment-size", "1048576"]);
    assert_eq!(code, 1);
    assert!(
        problems(&recs).contains(&("gap".into(), segs[2].clone())),
        "{recs:?}"
    );
    assert_eq!(problems(&recs).len(), 1, "{recs:?}");
    // Zero-filled: seen without the key (no age header).
    let zero = a.scratch.path.join("zero");
    copy_dir(&a.dir, &zero);
    fs::write(zero.join(enc(5)), vec![0u8; 4096]).unwrap();
    let (code, recs, _) = check(&zero, &["--segment-size", "1MB"]);
    assert_eq!(code, 1);
    assert_eq!(
        problems(&recs),
        [("unreadable".to_string(), enc(5))],
        "{recs:?}"
    );
    // Renamed to another position: seen once decrypted.
    let moved = a.scratch.path.join("moved");
    copy_dir(&a.dir, &moved);
    fs::remove_file(moved.join(enc(3))).unwrap();
    fs::copy(moved.join(enc(1)), moved.join(enc(3))).unwrap();
    let (code, recs, _) = check(&moved, &["-i", id_s]);
    assert_eq!(code, 1);
    assert!(
        problems(&recs).contains(&("bad-pageaddr".into(), enc(3))),
        "{recs:?}"
    );
    // Truncated ciphertext: named with the key.
    let cut = a.scratch.path.join("cut");
    copy_dir(&a.dir, &cut);
    let f = fs::OpenOptions::new()
        .write(true)
        .open(cut.join(enc(4)))
        .unwrap();
    f.set_len(300).unwrap();
    let (code, recs, _) = check(&cut, &["-i", id_s]);
    assert_eq!(code, 1);
    assert!(
        problems(&recs).iter().any(|(_, f)| f == &enc(4)),
        "{recs:?}"
    );
    // A wrong key cannot decrypt anything: every segment is reported.
    let other = Scratch::new("otherkey");
    let (other_id, _) = keypair(&other.path);
    let (code, recs, _) = check(&a.dir, &["-i", other_id.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert_eq!(summary(&recs)["bad_segments"], json!(n));
}

/// -d: pg_stat_archiver and the server's WAL position beside the archive.
#[test]
fn server_view_with_dbname() {
    let a = archiving_cluster("");
    make_segments(&a.cluster, &a.dir, 3);
    let prom = a.scratch.path.join("a.prom");
    let with_server = |extra: &[&str]| {
        let out = a
            .cluster
            .tool("pgb-check-archive")
            .arg(&a.dir)
            .args(["-d", "postgres", "--prom"])
            .arg(&prom)
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            records(&out.stdout),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, recs, err) = with_server(&["--max-behind", "0"]);
    assert_eq!(code, 0, "{recs:?} {err}");
    let s = summary(&recs);
    let srv = &s["server"];
    assert_eq!(srv["in_recovery"], false);
    assert_eq!(srv["archive_mode"], "on");
    assert_eq!(srv["segment_size"], 1 << 20);
    assert_eq!(srv["system_identifier"], s["system_identifier"]);
    assert_eq!(srv["segments_behind"], 0);
    assert!(srv["archived_count"].as_u64().unwrap() >= 3);
    assert_eq!(srv["last_archived_wal"], s["newest_segment"]);
    assert_eq!(srv["failed_count"], 0);
    let text = fs::read_to_string(&prom).unwrap();
    assert!(
        text.contains("pgb_archive_server_segments_behind{"),
        "{text}"
    );
    assert!(text.contains("pgb_archive_server_last_archived_timestamp_seconds{"));

    // A streaming standby answers with its receive position.
    let s2 = Scratch::new("standby");
    let data2 = s2.path.join("data");
    run(a
        .cluster
        .pg("pg_basebackup")
        .arg("-D")
        .arg(&data2)
        .args(["-R", "-X", "stream", "-c", "fast"]));
    let standby = Cluster::adopt(s2, data2, a.cluster.port, "archive_mode = on");
    standby.wait_for("SELECT count(*) FROM pg_stat_wal_receiver", "1");
    let out = standby
        .tool("pgb-check-archive")
        .arg(&a.dir)
        .args(["-d", "postgres"])
        .output()
        .unwrap();
    let recs = records(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{recs:?}");
    let on_standby = &summary(&recs)["server"];
    assert_eq!(on_standby["in_recovery"], true, "{on_standby}");
    assert_eq!(on_standby["timeline"], 1);
    assert_eq!(on_standby["segments_behind"], 0, "{on_standby}");
    assert_eq!(on_standby["system_identifier"], srv["system_identifier"]);
    drop(standby);

    // The last archived file (after the base backup: a segment or its
    // .backup file) removed from the archive.
    let (_, recs, _) = with_server(&[]);
    let srv = &summary(&recs)["server"];
    let last = srv["last_archived_wal"].as_str().unwrap().to_string();
    let kept = a.scratch.path.join("kept");
    fs::rename(a.dir.join(&last), &kept).unwrap();
    let (code, recs, _) = with_server(&[]);
    assert_eq!(code, 1);
    assert!(
        problems(&recs).contains(&("archived-missing".into(), last.clone())),
        "{recs:?}"
    );
    fs::rename(&kept, a.dir.join(&last)).unwrap();

    // archive_command starts failing: the failure is newer than the last
    // success, and finished segments pile up on the server.
    a.cluster.sql(
        "postgres",
        "ALTER SYSTEM SET archive_command = 'false'; SELECT pg_reload_conf();",
    );
    std::thread::sleep(Duration::from_millis(300));
    a.cluster.sql(
        "postgres",
        "INSERT INTO t VALUES (1); SELECT pg_switch_wal(); INSERT INTO t VALUES (2); SELECT pg_switch_wal();",
    );
    let t0 = Instant::now();
    while a
        .cluster
        .sql("postgres", "SELECT failed_count FROM pg_stat_archiver")
        == "0"
    {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{}",
            a.cluster.server_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, recs, err) = with_server(&["--max-behind", "1"]);
    assert_eq!(code, 1, "{err}");
    let got: Vec<String> = problems(&recs).into_iter().map(|p| p.0).collect();
    assert!(got.contains(&"archiver-failing".to_string()), "{got:?}");
    assert!(got.contains(&"behind".to_string()), "{got:?}");
    let srv = &summary(&recs)["server"];
    assert!(srv["failed_count"].as_u64().unwrap() >= 1);
    assert!(srv["segments_behind"].as_u64().unwrap() >= 2, "{srv}");
    let text = fs::read_to_string(&prom).unwrap();
    assert!(text.contains("pgb_archive_check_success{"), "{text}");
    let failed = text
        .lines()
        .find(|l| l.starts_with("pgb_archive_server_failed_attempts{"))
        .unwrap_or_else(|| panic!("{text}"));
    assert_ne!(failed.rsplit(' ').next(), Some("0"), "{failed}");
    let line = format!(
        "pgb_archive_check_success{{archive=\"{}\"}} 0",
        a.dir.display()
    );
    assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
    assert!(
        text.contains("pgb_archive_server_last_failed_timestamp_seconds{"),
        "{text}"
    );

    // An unreachable server: status 2, nothing judged.
    let out = Command::new(bin("pgb-check-archive"))
        .arg(&a.dir)
        .args(["-d", "host=/nonexistent dbname=postgres"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
