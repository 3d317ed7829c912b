//! pgb-verify against real backups, real damage and real restores.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::util::*;

/// Runs pgb-verify with `records` on stdin; the records it printed carry
/// only this run's verdicts (the earlier ones, which the sidecars keep and
/// the printed records carry too, are left out).
fn verify(c: &Cluster, recs: &[Value], args: &[&str]) -> (i32, Vec<Value>, String) {
    let earlier: Vec<Value> = recs
        .iter()
        .filter_map(|r| {
            let side = format!("{}.pgb.json", location(r).display());
            let v: Value = serde_json::from_slice(&fs::read(side).ok()?).ok()?;
            v["verified"].as_array().cloned()
        })
        .flatten()
        .collect();
    let (code, mut out, err) = pipe(c.tool("pgb-verify").args(args), recs);
    for r in out.iter_mut() {
        if let Some(v) = r["verified"].as_array_mut() {
            // Each once: two runs in the same second may record equal entries.
            for e in &earlier {
                if let Some(i) = v.iter().position(|x| x == e) {
                    v.remove(i);
                }
            }
        }
    }
    (code, out, err)
}

pub(crate) fn location(a: &Value) -> PathBuf {
    Path::new(a["repo"].as_str().unwrap()).join(a["path"].as_str().unwrap())
}

fn methods(a: &Value) -> Vec<(String, bool)> {
    a["verified"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["method"].as_str().unwrap().to_string(),
                v["ok"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn untouched_artifacts_pass_and_the_verdict_is_recorded() {
    let c = Cluster::new();
    c.load_sample();
    let repo = Scratch::new("repo");
    let recs = snapshot_records(&c, &repo.path, &["-d", "appdb", "--globals", "--physical"]);
    let (code, out, err) = verify(&c, &recs, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.len(), 3);
    let by_kind = |k: &str| out.iter().find(|r| r["kind"] == k).unwrap();
    let ok = |m: &str| (m.to_string(), true);
    assert_eq!(
        methods(by_kind("globals")),
        [ok("checksums"), ok("structure")]
    );
    assert_eq!(
        methods(by_kind("logical")),
        [ok("checksums"), ok("structure")]
    );
    assert_eq!(
        methods(by_kind("physical")),
        [ok("checksums"), ok("manifest")]
    );
    let m = &by_kind("physical")["verified"][1];
    assert!(m["files_checked"].as_u64().unwrap() > 900, "{m}");
    // The sidecar carries the same evidence.
    for r in &out {
        let sidecar: Value = serde_json::from_slice(
            &fs::read(format!("{}.pgb.json", location(r).display())).unwrap(),
        )
        .unwrap();
        assert_eq!(&sidecar, r);
    }
    // --repo reads the sidecars: a second pass appends a second verdict.
    let out2 = c
        .tool("pgb-verify")
        .arg("--repo")
        .arg(&repo.path)
        .arg("--checksums")
        .output()
        .unwrap();
    assert_eq!(out2.status.code(), Some(0));
    let again = records(&out2.stdout);
    assert_eq!(again.len(), 3);
    assert!(again
        .iter()
        .all(|r| r["verified"].as_array().unwrap().len() == 3));
}

#[test]
fn every_kind_of_damage_to_a_dump_fails_and_names_the_file() {
    let c = Cluster::new();
    c.load_sample();
    let repo = Scratch::new("repo");
    let recs = snapshot_records(&c, &repo.path, &["-d", "appdb", "--no-row-counts"]);
    let dump = location(&recs[0]);
    let original = fs::read(&dump).unwrap();
    let n = original.len();
    type Mutilate = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Mutilate, &str)> = vec![
        ("flip first byte", Box::new(|b| b[0] ^= 1), "sha256"),
        (
            "flip middle byte",
            Box::new(move |b| b[n / 2] ^= 0x80),
            "sha256",
        ),
        ("flip last byte", Box::new(move |b| b[n - 1] ^= 1), "sha256"),
        (
            "truncated",
            Box::new(move |b| b.truncate(n - 1000)),
            "bytes, recorded",
        ),
        ("zero bytes", Box::new(|b| b.clear()), "0 bytes, recorded"),
        ("appended byte", Box::new(|b| b.push(0)), "bytes, recorded"),
    ];
    let name = dump.file_name().unwrap().to_string_lossy().into_owned();
    for (what, mutilate, expect) in cases {
        let mut bytes = original.clone();
        mutilate(&mut bytes);
        fs::write(&dump, &bytes).unwrap();
        let (code, out, err) = verify(&c, &recs, &["--checksums"]);
        assert_eq!(code, 1, "{what}: {err}");
        assert!(err.contains(&name) && err.contains(expect), "{what}: {err}");
        assert_eq!(
            methods(&out[0]),
            [("checksums".to_string(), false)],
            "{what}"
        );
        let problems = out[0]["verified"][0]["problems"].to_string();
        assert!(problems.contains(&name), "{what}: {problems}");
    }
    fs::write(&dump, &original).unwrap();
    let (code, _, err) = verify(&c, &recs, &[]);
    assert_eq!(code, 0, "restored bytes pass again: {err}");
}

/// Decompresses a tar.zst to a plain tar next to it, lets `edit` change
/// it with the tar CLI, and compresses it back.
fn edit_tar(tar_zst: &Path, edit: impl FnOnce(&Path, &Path)) {
    let dir = tar_zst.parent().unwrap();
    let tar = dir.join("edit.tar");
    let _ = fs::remove_file(&tar);
    run(Command::new("zstd")
        .arg("-q")
        .arg("-d")
        .arg(tar_zst)
        .arg("-o")
        .arg(&tar));
    let work = dir.join("edit.d");
    fs::create_dir_all(&work).unwrap();
    edit(&tar, &work);
    run(Command::new("zstd")
        .arg("-q")
        .arg("-f")
        .arg(&tar)
        .arg("-o")
        .arg(tar_zst));
    fs::remove_file(&tar).unwrap();
    fs::remove_dir_all(&work).unwrap();
}

fn tar(args: &[&str], tar: &Path, cwd: &Path) {
    run(Command::new("tar")
        .args(args)
        .arg("-f")
        .arg(tar)
        .current_dir(cwd)
        .args(std::iter::empty::<&str>()));
}

/// One way the manifest tests damage a backup, and what pgb-verify must say.
enum Damage {
    /// A data file given new contents.
    Replace(&'static str, &'static str),
    /// A data file removed.
    Remove(&'static str),
    /// A file the manifest does not list.
    Add(&'static str, &'static str),
    /// backup_manifest edited (its own checksum no longer matches).
    TamperManifest,
    /// backup_manifest of another backup of the same cluster.
    ForeignManifest,
}

/// The damage both manifest tests (tar.zst and plain backups) inflict,
/// with the message each must produce.
fn manifest_damage() -> Vec<(&'static str, Damage, &'static str)> {
    vec![
        (
            "changed file",
            Damage::Replace("PG_VERSION", "14\n"),
            "PG_VERSION: SHA256 does not match the manifest",
        ),
        (
            "missing file",
            Damage::Remove("global/pg_filenode.map"),
            "global/pg_filenode.map: in the manifest but missing",
        ),
        (
            "extra file",
            Damage::Add("planted", "x"),
            "planted: present in the backup but not in the manifest",
        ),
        (
            "truncated file",
            Damage::Replace("PG_VERSION", "1"),
            "PG_VERSION: 1 bytes, manifest says 3",
        ),
        (
            "tampered manifest",
            Damage::TamperManifest,
            "manifest checksum mismatch",
        ),
        (
            "manifest of another backup",
            Damage::ForeignManifest,
            "global/pg_control: SHA256 does not match the manifest",
        ),
    ]
}

/// Applies the manifest cases of [`Damage`] to the backup in `dir`; file
/// damage is the caller's (it depends on the format). Returns whether it
/// applied `d`.
fn damage_manifest(d: &Damage, dir: &Path, other: &Path) -> bool {
    let manifest = dir.join("backup_manifest");
    match d {
        Damage::TamperManifest => {
            let text =
                fs::read_to_string(&manifest)
                    .unwrap()
                    .replacen("\"Size\": 3,", "\"Size\": 4,", 1);
            fs::write(&manifest, text).unwrap();
        }
        Damage::ForeignManifest => {
            fs::copy(other.join("backup_manifest"), &manifest).unwrap();
        }
        _ => return false,
    }
    true
}

#[test]
fn damage_inside_a_physical_backups_tars_is_caught_without_extracting() {
    let c = Cluster::new();
    c.load_sample();
    let repo = Scratch::new("repo");
    let recs = snapshot_records(&c, &repo.path, &["--physical", "--cluster", "main"]);
    let other = snapshot_records(&c, &repo.path, &["--physical", "--cluster", "other"]);
    let dir = location(&recs[0]);
    let pristine = Scratch::new("pristine");
    run(Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", dir.display()))
        .arg(&pristine.path));
    let base = dir.join("base.tar.zst");
    let reset = || {
        run(Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", pristine.path.display()))
            .arg(&dir));
    };
    let other = location(&other[0]);
    for (what, damage, expect) in manifest_damage() {
        reset();
        if !damage_manifest(&damage, &dir, &other) {
            edit_tar(&base, |t, w| match damage {
                Damage::Replace(name, text) => {
                    tar(&["--delete", name], t, w);
                    fs::write(w.join(name), text).unwrap();
                    tar(&["-r", name], t, w);
                }
                Damage::Remove(name) => tar(&["--delete", name], t, w),
                Damage::Add(name, text) => {
                    fs::write(w.join(name), text).unwrap();
                    tar(&["-r", name], t, w);
                }
                _ => unreachable!(),
            });
        }
        let (code, out, err) = verify(&c, &recs, &["--manifest"]);
        assert_eq!(code, 1, "{what}: {err}");
        assert!(
            err.contains(expect),
            "{what}: expected {expect:?} in: {err}"
        );
        assert_eq!(
            methods(&out[0]),
            [("manifest".to_string(), false)],
            "{what}"
        );
    }
    reset();
    let (code, _, err) = verify(&c, &recs, &["--manifest"]);
    assert_eq!(code, 0, "{err}");
}

/// The WAL inside pg_wal.tar.zst is checked page by page from the start to
/// the stop LSN, not only for presence: a zeroed segment fails --manifest
/// even when the record's checksums of the tar were rewritten to match it
/// (so --checksums passes).
#[test]
fn a_zeroed_wal_segment_in_pg_wal_tar_fails_even_with_rewritten_checksums() {
    let c = Cluster::new();
    let repo = Scratch::new("repo");
    let mut recs = snapshot_records(&c, &repo.path, &["--physical", "--cluster", "main"]);
    let (code, out, err) = verify(&c, &recs, &["--checksums", "--manifest"]);
    assert_eq!(code, 0, "{err}");
    let m = &out[0]["verified"][1];
    assert_eq!(m["method"], "manifest", "{m}");
    assert!(m["wal_pages_checked"].as_u64().unwrap() > 0, "{m}");

    let dir = location(&recs[0]);
    let seg = recs[0]["wal"]["start_segment"]
        .as_str()
        .unwrap()
        .to_string();
    let size = recs[0]["wal"]["segment_size"].as_u64().unwrap() as usize;
    let wal_tar = dir.join("pg_wal.tar.zst");
    edit_tar(&wal_tar, |t, w| {
        tar(&["--delete", &seg], t, w);
        fs::write(w.join(&seg), vec![0u8; size]).unwrap();
        tar(&["-r", &seg], t, w);
    });
    // Someone who can write the repository rewrites the record to match.
    let d = pgb_common::digest::hash_reader(fs::File::open(&wal_tar).unwrap()).unwrap();
    for f in recs[0]["files"].as_array_mut().unwrap() {
        if f["name"] == "pg_wal.tar.zst" {
            f["size"] = json!(d.size);
            f["sha256"] = json!(d.sha256);
            f["blake3"] = json!(d.blake3);
        }
    }
    fs::write(
        format!("{}.pgb.json", dir.display()),
        serde_json::to_vec_pretty(&recs[0]).unwrap(),
    )
    .unwrap();
    let (code, out, err) = verify(&c, &recs, &["--checksums", "--manifest"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        methods(&out[0]),
        [
            ("checksums".to_string(), true),
            ("manifest".to_string(), false)
        ]
    );
    let want = format!("pg_wal.tar.zst: pg_wal/{seg}: page at ");
    assert!(err.contains(&want), "{want:?} in {err}");
    assert!(err.contains("zero-filled page"), "{err}");
}

#[test]
fn restore_test_compares_row_counts_taken_in_the_dumps_snapshot() {
    let c = Cluster::new();
    c.load_sample();
    let repo = Scratch::new("repo");
    let recs = snapshot_records(&c, &repo.path, &["--globals", "-d", "appdb"]);
    // Rows deleted after the snapshot do not matter: the counts were taken
    // in the dump's own snapshot.
    c.sql("appdb", "DELETE FROM app.orders WHERE id > 100");
    let smoke = repo.path.join("smoke.sql");
    fs::write(
        &smoke,
        "SELECT count(*) FROM app.rich;\nSELECT 'acct 7' % name FROM app.accounts LIMIT 1;\n",
    )
    .unwrap();
    let prom = repo.path.join("pgb.prom");
    let (code, out, err) = verify(
        &c,
        &recs,
        &[
            "--restore",
            "--sql",
            smoke.to_str().unwrap(),
            "--rto",
            "10m",
            "--prom",
            prom.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let text = fs::read_to_string(&prom).unwrap();
    let l = format!(
        "{{cluster=\"{}\",kind=\"logical\",database=\"appdb\"}}",
        recs[0]["cluster"].as_str().unwrap()
    );
    for name in [
        "pgb_restore_duration_seconds",
        "pgb_restore_last_success_timestamp_seconds",
        "pgb_verify_success",
    ] {
        assert!(text.contains(&format!("{name}{l} ")), "{name}: {text}");
    }
    let logical = out.iter().find(|r| r["kind"] == "logical").unwrap();
    let v = &logical["verified"][0];
    assert_eq!(v["method"], "restore");
    assert_eq!(v["ok"], true);
    assert_eq!(v["tables_compared"], 4);
    assert!(v["restore_ms"].as_u64().unwrap() > 0);
    assert!(v["globals"].as_str().unwrap().starts_with("globals-"));

    // A dump that does not hold what its record claims fails, naming the table.
    let mut lying = logical.clone();
    lying["row_counts"]["app.orders"] = json!(4999);
    let (pid, code, _, err) = pipe_pid(c.tool("pgb-verify").args(["--restore"]), &[lying]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("table app.orders: 5000 rows after restore, 4999 recorded"),
        "{err}"
    );
    assert!(
        verify_temp_dirs(pid).is_empty(),
        "the throwaway cluster was removed"
    );

    // An RTO the restore cannot meet fails the check.
    let (code, _, err) = verify(
        &c,
        std::slice::from_ref(logical),
        &["--restore", "--rto", "0s"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("more than the RTO"), "{err}");
}

/// PostgreSQL's dynamic shared memory segments in /dev/shm.
fn dsm_segments() -> std::collections::BTreeSet<String> {
    fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("PostgreSQL."))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_killed_restore_leaves_nothing_after_the_next_run() {
    let shm_before = dsm_segments();
    let c = Cluster::new();
    c.load_sample();
    let repo = Scratch::new("repo");
    let recs = snapshot_records(&c, &repo.path, &["-d", "appdb"]);
    let mut child = c
        .tool("pgb-verify")
        .args(["--restore"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    writeln!(child.stdin.take().unwrap(), "{}", recs[0]).unwrap();
    // Wait for its throwaway cluster to be running (a postmaster that is
    // ready, not initdb's standalone backend, whose lock file holds a
    // negated pid), then kill it.
    let ready = |d: &PathBuf| {
        let text = fs::read_to_string(d.join("data/postmaster.pid")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines.len() >= 8
            && lines[7].trim() == "ready"
            && lines[0].parse::<i32>().is_ok_and(|p| p > 0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let dir = loop {
        if let Some(d) = verify_temp_dirs(pid).into_iter().find(ready) {
            break d;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no throwaway cluster appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let postmaster: i32 = fs::read_to_string(dir.join("data/postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // pgb-verify and its postmaster killed hard, as the OOM killer would.
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(postmaster),
        nix::sys::signal::Signal::SIGKILL,
    );
    assert!(dir.exists());
    // The next run (this one, or a concurrent test's) stops and removes it.
    let (code, _, err) = verify(&c, &recs, &["--restore"]);
    assert_eq!(code, 0, "{err}");
    assert!(!dir.exists(), "the killed run's cluster was removed");
    // Gone, or a zombie nobody reaps (the container's init may not).
    let alive = fs::read_to_string(format!("/proc/{postmaster}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false);
    assert!(!alive, "the killed run's postmaster was stopped");
    // Its shared memory went with its directory. No test cluster keeps
    // segments in /dev/shm, but a concurrent test's initdb has some for a
    // moment: a new one still there after 20 s is a leak.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let leaked: Vec<String> = dsm_segments().difference(&shm_before).cloned().collect();
        if leaked.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left in /dev/shm: {leaked:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// A small `appdb` (much quicker than the full sample): a table of 1,000
/// rows in schema app, one in a second tablespace `extra` at
/// `<scratch>/tblspc`, and a role owning them.
fn small_sample(c: &Cluster) {
    let ts = c.scratch.owned_dir("tblspc");
    c.sql(
        "postgres",
        &format!(
            "CREATE ROLE app_owner LOGIN;
             CREATE TABLESPACE extra OWNER app_owner LOCATION '{}';
             CREATE DATABASE appdb OWNER app_owner;",
            ts.display()
        ),
    );
    c.sql(
        "appdb",
        "SET ROLE app_owner;
         CREATE SCHEMA app;
         CREATE TABLE app.items (id int PRIMARY KEY, label text);
         INSERT INTO app.items SELECT g, 'item ' || g FROM generate_series(1, 1000) g;
         CREATE TABLE app.far (v int) TABLESPACE extra;
         INSERT INTO app.far SELECT generate_series(1, 10);",
    );
}

/// A record field as a string.
fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_else(|| panic!("no {k} in {v}"))
}

/// `{"name","size","sha256","blake3"}` of a file, by the stock tools.
fn file_entry(name: &str, path: &Path) -> Value {
    let (sha256, blake3) = stock_sums(path);
    json!({"name": name, "size": fs::metadata(path).unwrap().len(), "sha256": sha256, "blake3": blake3})
}

#[test]
fn prom_metrics_keep_other_series_and_the_last_success() {
    let c = Cluster::new();
    small_sample(&c);
    let repo = Scratch::new("repo");
    let recs = snapshot_records(&c, &repo.path, &["-d", "appdb", "--no-row-counts"]);
    let prom = repo.path.join("pgb.prom");
    // A series of another cluster, written by an earlier run.
    fs::write(
        &prom,
        "# HELP pgb_verify_success x\n# TYPE pgb_verify_success gauge\n\
         pgb_verify_success{cluster=\"elsewhere\",kind=\"logical\",database=\"x\"} 1\n",
    )
    .unwrap();
    let p = prom.to_str().unwrap();
    let (code, _, err) = verify(&c, &recs, &["--checksums", "--prom", p]);
    assert_eq!(code, 0, "{err}");
    let text = fs::read_to_string(&prom).unwrap();
    let cluster = s(&recs[0], "cluster");
    let l = format!("{{cluster=\"{cluster}\",kind=\"logical\",database=\"appdb\"}}");
    let value = |text: &str, name: &str| -> Option<f64> {
        text.lines()
            .find(|line| line.starts_with(&format!("{name}{l} ")))
            .map(|line| line.rsplit(' ').next().unwrap().parse().unwrap())
    };
    assert_eq!(value(&text, "pgb_verify_success"), Some(1.0), "{text}");
    let first_success = value(&text, "pgb_verify_last_success_timestamp_seconds").unwrap();
    assert!(first_success > 1.7e9, "{text}");
    assert!(
        text.contains("pgb_verify_success{cluster=\"elsewhere\""),
        "{text}"
    );
    assert_eq!(text.matches("# TYPE pgb_verify_success gauge").count(), 1);
    assert_eq!(
        fs::metadata(&prom).unwrap().permissions().mode() & 0o777,
        0o644
    );

    // A failed run: success 0, the last success time is the earlier one.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let dump = location(&recs[0]);
    let good = fs::read(&dump).unwrap();
    let mut bad = good.clone();
    bad[100] ^= 1;
    fs::write(&dump, &bad).unwrap();
    let (code, _, _) = verify(&c, &recs, &["--checksums", "--prom", p]);
    assert_eq!(code, 1);
    let text = fs::read_to_string(&prom).unwrap();
    assert_eq!(value(&text, "pgb_verify_success"), Some(0.0), "{text}");
    assert_eq!(
        value(&text, "pgb_verify_last_success_timestamp_seconds"),
        Some(first_success),
        "{text}"
    );
    assert!(value(&text, "pgb_verify_last_timestamp_seconds").unwrap() > first_success);
    assert!(text.contains("cluster=\"elsewhere\""), "{text}");
    fs::write(&dump, &good).unwrap();
}

/// Copies an artifact (and its sidecar) to `dest` as pgb-ship would lay it
/// out, and returns its `copies` entry.
fn copy_to(a: &Value, dest: &Path) -> Value {
    let src = location(a);
    let there = dest.join(s(a, "path"));
    fs::create_dir_all(there.parent().unwrap()).unwrap();
    run(Command::new("cp").arg("-a").arg(&src).arg(&there));
    json!({
        "to": dest.display().to_string(),
        "url": there.display().to_string(),
        "media": "disk",
        "site": "local",
        "files": a["files"].clone(),
        "verified": "readback",
        "when": "2026-11-21T10:00:00+00:00",
    })
}

#[test]
fn copies_are_read_back_and_a_differing_copy_fails_naming_it() {
    let c = Cluster::new();
    small_sample(&c);
    let repo = Scratch::new("repo");
    let nas = Scratch::new("nas");
    let gone = Scratch::new("gone");
    let mut recs = snapshot_records(&c, &repo.path, &["-d", "appdb", "--physical"]);
    for r in recs.iter_mut() {
        let copies = vec![
            copy_to(r, &nas.path),
            // A destination that is not mounted: unreachable, not a failure.
            json!({"to": gone.path.join("absent").display().to_string(),
                   "url": gone.path.join("absent").join(s(r, "path")).display().to_string(),
                   "files": r["files"].clone()}),
            // An SSH host that refuses connections.
            json!({"to": "ssh://nobody@127.0.0.1:1/srv/pg",
                   "url": format!("ssh://nobody@127.0.0.1:1/srv/pg/{}", s(r, "path")),
                   "files": r["files"].clone()}),
        ];
        r["copies"] = json!(copies);
    }
    // The unreachable copies pass the check, but their sidecars cannot be
    // given the verdict: an error about the run (2), the verdict unchanged.
    let (code, out, err) = verify(&c, &recs, &["--checksums"]);
    assert_eq!(code, 2, "{err}");
    for r in &out {
        let v = &r["verified"][0];
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["copies"][0]["ok"], true, "{v}");
        assert!(v["copies"][1]["unreachable"].is_string(), "{v}");
        assert!(v["copies"][2]["unreachable"].is_string(), "{v}");
        assert!(v["copies"][0]["bytes"].as_u64().unwrap() > 0);
        // The verdict reached the sidecar beside the NAS copy.
        let beside: Value = serde_json::from_slice(
            &fs::read(nas.path.join(format!("{}.pgb.json", s(r, "path")))).unwrap(),
        )
        .unwrap();
        assert_eq!(beside["verified"], r["verified"], "{beside}");
    }
    assert!(err.contains("unreachable, not checked"), "{err}");
    assert!(
        err.contains(&format!(
            "copy {}: its sidecar is not updated",
            gone.path.join("absent").join(s(&recs[0], "path")).display()
        )),
        "{err}"
    );
    assert_eq!(
        err.matches("its sidecar is not updated").count(),
        4,
        "{err}"
    );

    // --copies-required: an unreachable copy fails the check.
    let (code, out, err) = verify(&c, &recs[..1], &["--checksums", "--copies-required"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        out[0]["verified"].as_array().unwrap().last().unwrap()["ok"],
        false
    );
    assert!(err.contains("unreachable"), "{err}");

    // One flipped byte in the NAS copy of the dump, a file missing from the
    // copy of the base backup: each fails, naming the copy and the file.
    let logical = recs.iter().find(|r| r["kind"] == "logical").unwrap();
    let physical = recs.iter().find(|r| r["kind"] == "physical").unwrap();
    let copy = nas.path.join(s(logical, "path"));
    let mut bytes = fs::read(&copy).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    fs::write(&copy, &bytes).unwrap();
    let wal = nas.path.join(s(physical, "path")).join("pg_wal.tar.zst");
    fs::remove_file(&wal).unwrap();
    let (code, out, err) = verify(&c, &recs, &["--checksums"]);
    assert_eq!(code, 2, "unreachable copies' sidecars: {err}");
    assert!(
        err.contains(&format!("copy {}: sha256", copy.display())),
        "{err}"
    );
    assert!(
        err.contains(&format!("copy {}: No such file", wal.display())),
        "{err}"
    );
    for r in &out {
        let last = r["verified"].as_array().unwrap().last().unwrap();
        assert_eq!(last["ok"], false, "{last}");
        assert_eq!(last["copies"][0]["ok"], false, "{last}");
    }
    // The originals are fine, and --no-copies checks only them.
    let (code, _, err) = verify(&c, &recs, &["--checksums", "--no-copies"]);
    assert_eq!(code, 0, "{err}");
}

/// An age key pair made by the stock age-keygen: (identity file, recipient).
fn age_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    let out = run(Command::new("age-keygen").arg("-o").arg(&key));
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let text = fs::read_to_string(&key).unwrap() + &String::from_utf8_lossy(&out.stderr);
    let public = text
        .lines()
        .find_map(|l| l.split("public key: ").nth(1))
        .unwrap()
        .trim()
        .to_string();
    (key, public)
}

/// Encrypts an artifact with the stock age CLI the way pgb-encrypt records
/// it: every stored file becomes `<name>.age`, `files` describe the
/// ciphertext, `encryption.plaintext` what was there before; a single-file
/// artifact's path gains `.age` and its sidecar moves with it.
fn encrypt_with_age(a: &Value, recipient: &str) -> Value {
    let mut e = a.clone();
    let loc = location(a);
    let single = a["kind"] != "physical";
    let mut files = Vec::new();
    for f in a["files"].as_array().unwrap() {
        let name = s(f, "name");
        let plain = if single { loc.clone() } else { loc.join(name) };
        let enc = PathBuf::from(format!("{}.age", plain.display()));
        run(Command::new("age")
            .arg("-r")
            .arg(recipient)
            .arg("-o")
            .arg(&enc)
            .arg(&plain));
        fs::remove_file(&plain).unwrap();
        files.push(file_entry(&format!("{name}.age"), &enc));
    }
    e["files"] = json!(files);
    e["encryption"] = json!({
        "scheme": "age",
        "recipients": [recipient],
        "plaintext": a["files"].clone(),
        "when": "2026-11-21T10:00:00+00:00",
    });
    if single {
        e["path"] = json!(format!("{}.age", s(a, "path")));
        fs::remove_file(format!("{}.pgb.json", loc.display())).unwrap();
    }
    fs::write(
        format!("{}.pgb.json", location(&e).display()),
        serde_json::to_vec_pretty(&e).unwrap(),
    )
    .unwrap();
    e
}

#[test]
fn encrypted_artifacts_are_checked_as_ciphertext_and_decrypted_with_an_identity() {
    let c = Cluster::new();
    small_sample(&c);
    let repo = Scratch::new("repo");
    let keys = Scratch::new("keys");
    let (key, public) = age_key(&keys.path, "id.txt");
    let (other_key, _) = age_key(&keys.path, "other.txt");
    let plain = snapshot_records(&c, &repo.path, &["-d", "appdb", "--globals", "--physical"]);
    let recs: Vec<Value> = plain.iter().map(|a| encrypt_with_age(a, &public)).collect();
    let key_arg = key.to_str().unwrap();

    // Without an identity: the ciphertext checksums pass; structure and
    // manifest say they were skipped and record nothing.
    let (code, out, err) = verify(&c, &recs, &[]);
    assert_eq!(code, 0, "{err}");
    for r in &out {
        assert_eq!(methods(r), [("checksums".to_string(), true)], "{r}");
    }
    assert_eq!(
        err.matches("skipped: encrypted, no identity").count(),
        3,
        "{err}"
    );

    // With one: decrypted streaming, plaintext compared with the record.
    let (code, out, err) = verify(&c, &recs, &["-i", key_arg]);
    assert_eq!(code, 0, "{err}");
    let by_kind = |k: &str| out.iter().find(|r| r["kind"] == k).unwrap().clone();
    let ok = |m: &str| (m.to_string(), true);
    assert_eq!(
        methods(&by_kind("logical")),
        [ok("checksums"), ok("structure")]
    );
    assert_eq!(
        methods(&by_kind("globals")),
        [ok("checksums"), ok("structure")]
    );
    assert_eq!(
        methods(&by_kind("physical")),
        [ok("checksums"), ok("manifest")]
    );
    assert!(
        by_kind("physical")["verified"][1]["files_checked"]
            .as_u64()
            .unwrap()
            > 900
    );
    assert!(
        by_kind("logical")["verified"][1]["toc_entries"]
            .as_u64()
            .unwrap()
            >= 5
    );

    // A test restore decrypts the dump (and the globals) as it goes.
    let (code, out, err) = verify(&c, &[by_kind("logical")], &["--restore", "-i", key_arg]);
    assert_eq!(code, 0, "{err}");
    let v = out[0]["verified"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(v["method"], "restore", "{v}");
    assert_eq!(v["tables_compared"], 2, "{v}");
    assert!(v["globals"].is_string(), "{v}");

    // The wrong identity: the checks that need plaintext fail, saying so.
    let (code, _, err) = verify(
        &c,
        &recs,
        &["--structure", "-i", other_key.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("No matching keys found"), "{err}");

    // A record whose plaintext checksum does not match what decrypts.
    let mut lying = by_kind("logical");
    lying["encryption"]["plaintext"][0]["sha256"] = json!("0".repeat(64));
    let (code, _, err) = verify(&c, &[lying], &["--structure", "-i", key_arg]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("decrypted sha256") && err.contains("differs from encryption.plaintext"),
        "{err}"
    );

    // A tampered base.tar.zst, encrypted again and with checksums that
    // match its new ciphertext and plaintext (someone who can write the
    // repository and the sidecar): only the manifest can tell, and does.
    let phys = by_kind("physical");
    let dir = location(&phys);
    let enc = dir.join("base.tar.zst.age");
    let work = Scratch::new("tamper");
    let tar_zst = work.path.join("base.tar.zst");
    run(Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&key)
        .arg("-o")
        .arg(&tar_zst)
        .arg(&enc));
    edit_tar(&tar_zst, |t, w| {
        tar(&["--delete", "PG_VERSION"], t, w);
        fs::write(w.join("PG_VERSION"), "14\n").unwrap();
        tar(&["-r", "PG_VERSION"], t, w);
    });
    run(Command::new("age")
        .arg("-r")
        .arg(&public)
        .arg("-o")
        .arg(&enc)
        .arg(&tar_zst));
    let mut forged = phys.clone();
    for (list, path) in [("files", &enc), ("plaintext", &tar_zst)] {
        let entries = if list == "files" {
            forged["files"].as_array_mut().unwrap()
        } else {
            forged["encryption"]["plaintext"].as_array_mut().unwrap()
        };
        let e = entries
            .iter_mut()
            .find(|e| s(e, "name").starts_with("base.tar.zst"))
            .unwrap();
        let name = s(e, "name").to_string();
        *e = file_entry(&name, path);
    }
    // Whoever can write the repository forges the sidecar too (a record on
    // stdin that contradicts its sidecar is refused before any check).
    let side = format!("{}.pgb.json", dir.display());
    fs::write(&side, serde_json::to_vec_pretty(&forged).unwrap()).unwrap();
    let (code, out, err) = verify(&c, &[forged], &["-i", key_arg]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("base.tar.zst.age: PG_VERSION: SHA256 does not match the manifest"),
        "{err}"
    );
    assert_eq!(
        methods(&out[0]),
        [
            ("checksums".to_string(), true),
            ("manifest".to_string(), false)
        ]
    );
}

/// Runs pgb-encrypt `-r recipient` over `recs`; its output records.
fn pgb_encrypt(recs: &[Value], recipient: &str) -> Vec<Value> {
    let (code, out, err) = pipe(
        Command::new(bin("pgb-encrypt")).args(["-r", recipient]),
        recs,
    );
    assert_eq!(code, 0, "{err}");
    out
}

/// A pid that no process has now (a child that has exited and been reaped).
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn encrypted_dumps_of_every_compression_are_decrypted_before_pg_restore() {
    let c = Cluster::new();
    small_sample(&c);
    let keys = Scratch::new("keys");
    let (key, public) = age_key(&keys.path, "id.txt");
    let key_arg = key.to_str().unwrap();
    // What a killed --target restore left: the next run removes it.
    let stale = std::env::temp_dir().join(format!("pgb-verify-dump.{}.1", dead_pid()));
    fs::write(&stale, "plaintext left by a killed run").unwrap();
    for z in ["none", "pg_dump:6"] {
        let repo = Scratch::new("repo");
        let plain = snapshot_records(&c, &repo.path, &["-d", "appdb", "-Z", z]);
        let recs = pgb_encrypt(&plain, &public);
        assert!(s(&recs[0], "path").ends_with(".age"), "{z}: {}", recs[0]);
        for target in [None, Some("postgres")] {
            let mut args = vec!["--restore", "-i", key_arg];
            if let Some(t) = target {
                args.extend(["--target", t]);
            }
            let (pid, code, out, err) = pipe_pid(c.tool("pgb-verify").args(&args), &recs[..1]);
            assert_eq!(code, 0, "{z} {target:?}: {err}");
            let v = out[0]["verified"].as_array().unwrap().last().unwrap();
            assert_eq!(v["method"], "restore", "{z} {target:?}: {v}");
            assert_eq!(v["ok"], true, "{z} {target:?}: {v}");
            assert_eq!(v["tables_compared"], 2, "{z} {target:?}: {v}");
            // No plaintext left behind.
            let left: Vec<_> = fs::read_dir(std::env::temp_dir())
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    n.starts_with(&format!("pgb-verify-dump.{pid}."))
                        || n.starts_with(&format!("pgb-verify.{pid}."))
                })
                .collect();
            assert!(left.is_empty(), "{z} {target:?}: left {left:?}");
            if target.is_some() && z == "none" {
                assert!(!stale.exists(), "the stale plaintext dump was removed");
                assert!(
                    err.contains(&format!(
                        "removed a temp file left by a killed run: {}",
                        stale.display()
                    )),
                    "{err}"
                );
            }
        }
    }
}

/// A plain-format base backup taken by stock pg_basebackup, with a record
/// for it as pgb would write one (every file listed with its checksums).
fn plain_backup(c: &Cluster, repo: &Path, name: &str) -> Value {
    plain_backup_with(c, repo, name, "SHA256")
}

/// [`plain_backup`] with the manifest's checksums in `algorithm`.
pub(crate) fn plain_backup_with(c: &Cluster, repo: &Path, name: &str, algorithm: &str) -> Value {
    let rel = format!("main/physical/{name}");
    let dir = repo.join(&rel);
    fs::create_dir_all(dir.parent().unwrap()).unwrap();
    let ts = repo.join(format!("tblspc-{name}"));
    run(c
        .pg("pg_basebackup")
        .arg("-D")
        .arg(&dir)
        .args(["-Fp", "-X", "stream", "-c", "fast"])
        .arg(format!("--manifest-checksums={algorithm}"))
        .arg(format!(
            "--tablespace-mapping={}={}",
            c.scratch.path.join("tblspc").display(),
            ts.display()
        )));
    let mut files = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<Value>) {
        let mut entries: Vec<_> = fs::read_dir(dir).unwrap().flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            if fs::metadata(&p).unwrap().is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                let d = pgb_common::digest::hash_reader(fs::File::open(&p).unwrap()).unwrap();
                out.push(
                    json!({"name": rel, "size": d.size, "sha256": d.sha256, "blake3": d.blake3}),
                );
            }
        }
    }
    walk(&dir, &dir, &mut files);
    let sysid = c.sql(
        "postgres",
        "SELECT system_identifier FROM pg_control_system()",
    );
    let a = json!({
        "schema": "pgb.v1", "type": "artifact", "id": format!("main-{name}"),
        "kind": "physical", "cluster": "main", "system_identifier": sysid,
        "created": "2026-11-21T10:00:00+00:00",
        "repo": repo.display().to_string(), "path": rel, "files": files,
        "format": "pg_basebackup-plain", "copies": [], "verified": [],
    });
    fs::write(
        format!("{}.pgb.json", dir.display()),
        serde_json::to_vec_pretty(&a).unwrap(),
    )
    .unwrap();
    a
}

#[test]
fn on_plain_backups_the_verdict_agrees_with_pg_verifybackup() {
    let c = Cluster::new();
    small_sample(&c);
    let repo = Scratch::new("repo");
    let rec = plain_backup(&c, &repo.path, "plain1");
    let other = plain_backup(&c, &repo.path, "plain2");
    let dir = location(&rec);
    let pristine = repo.path.join("pristine");
    run(Command::new("cp").arg("-a").arg(&dir).arg(&pristine));
    let reset = || {
        fs::remove_dir_all(&dir).unwrap();
        run(Command::new("cp").arg("-a").arg(&pristine).arg(&dir));
    };
    let stock_ok = || {
        Command::new(pg_bin("pg_verifybackup"))
            .arg(&dir)
            .output()
            .unwrap()
            .status
            .success()
    };
    let (code, out, err) = verify(&c, std::slice::from_ref(&rec), &[]);
    assert_eq!(code, 0, "{err}");
    let m = &out[0]["verified"][1];
    assert_eq!(m["method"], "manifest");
    assert_eq!(m["format"], "plain");
    assert_eq!(m["pg_verifybackup"]["ok"], true, "{m}");
    assert!(m["files_checked"].as_u64().unwrap() > 900, "{m}");
    assert!(stock_ok());

    let other = location(&other);
    for (what, damage, expect) in manifest_damage() {
        reset();
        if !damage_manifest(&damage, &dir, &other) {
            match damage {
                Damage::Replace(name, text) | Damage::Add(name, text) => {
                    fs::write(dir.join(name), text).unwrap()
                }
                Damage::Remove(name) => fs::remove_file(dir.join(name)).unwrap(),
                _ => unreachable!(),
            }
        }
        let (code, out, err) = verify(&c, std::slice::from_ref(&rec), &["--manifest"]);
        assert_eq!(code, 1, "{what}: {err}");
        assert!(
            err.contains(expect),
            "{what}: expected {expect:?} in: {err}"
        );
        let v = &out[0]["verified"][0];
        let native_failed = v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| !p.as_str().unwrap().starts_with("pg_verifybackup:"));
        let recorded_stock = v["pg_verifybackup"]["ok"].as_bool().unwrap();
        let stock = stock_ok();
        assert!(native_failed, "{what}: {v}");
        assert_eq!(recorded_stock, stock, "{what}: {v}");
        assert!(!stock, "{what}: pg_verifybackup agrees that it is damaged");
    }
    reset();
    let (code, _, err) = verify(&c, std::slice::from_ref(&rec), &[]);
    assert_eq!(code, 0, "{err}");
}

/// PostgreSQL's own list of damage (pg_verifybackup/t/003_corruption.pl,
/// less the permission cases, which root reads through), plus a byte
/// changed in the middle of a relation file: on plain backups made with the
/// default CRC32C manifest and with SHA512, pgb-verify without stock
/// pg_verifybackup reaches pg_verifybackup's verdict case by case, never by
/// size alone.
#[test]
fn without_pg_verifybackup_the_native_verdict_agrees_with_it_in_every_algorithm() {
    let c = Cluster::new();
    small_sample(&c);
    let repo = Scratch::new("repo");
    let no_stock = repo.path.join("no-pg-bindir");
    fs::create_dir(&no_stock).unwrap();
    type Mutilate = fn(&Path);
    fn tblspc_dir(d: &Path) -> PathBuf {
        let ts = fs::read_dir(d.join("pg_tblspc"))
            .unwrap()
            .flatten()
            .next()
            .unwrap()
            .path();
        let cat = fs::read_dir(&ts).unwrap().flatten().next().unwrap().path();
        fs::read_dir(&cat).unwrap().flatten().next().unwrap().path()
    }
    /// The largest file under base/: a relation file of appdb's sample.
    fn relation(d: &Path) -> PathBuf {
        let mut best = (0, PathBuf::new());
        for db in fs::read_dir(d.join("base")).unwrap().flatten() {
            for f in fs::read_dir(db.path()).unwrap().flatten() {
                let n = f.metadata().unwrap().len();
                if n > best.0 {
                    best = (n, f.path());
                }
            }
        }
        best.1
    }
    let cases: [(&str, Mutilate, &str); 10] = [
        ("clean", |_| {}, ""),
        (
            "extra_file",
            |d| fs::write(d.join("extra_file"), "This is an extra file.\n").unwrap(),
            "extra_file: present in the backup but not in the manifest",
        ),
        (
            "extra_tablespace_file",
            |d| fs::write(tblspc_dir(d).join("extra_ts_file"), "x\n").unwrap(),
            "extra_ts_file: present in the backup but not in the manifest",
        ),
        (
            "missing_file",
            |d| fs::remove_file(d.join("pg_xact/0000")).unwrap(),
            "pg_xact/0000: in the manifest but missing",
        ),
        (
            "missing_tablespace",
            |d| {
                let ts = fs::read_dir(d.join("pg_tblspc")).unwrap().flatten().next();
                fs::remove_file(ts.unwrap().path()).unwrap()
            },
            "in the manifest but missing",
        ),
        (
            "append_to_file",
            |d| {
                let mut f = fs::OpenOptions::new()
                    .append(true)
                    .open(d.join("global/pg_control"))
                    .unwrap();
                std::io::Write::write_all(&mut f, b"x").unwrap()
            },
            "global/pg_control: 8193 bytes, manifest says 8192",
        ),
        (
            "truncate_file",
            |d| fs::write(d.join("global/pg_control"), "").unwrap(),
            "global/pg_control: 0 bytes, manifest says 8192",
        ),
        (
            "replace_file",
            |d| fs::write(d.join("PG_VERSION"), "qq\n").unwrap(),
            "PG_VERSION: ALG does not match the manifest",
        ),
        (
            "byte changed in a relation file",
            |d| {
                let p = relation(d);
                let mut b = fs::read(&p).unwrap();
                let mid = b.len() / 2 + 100;
                b[mid] ^= 0x20;
                fs::write(&p, b).unwrap()
            },
            "does not match the manifest",
        ),
        (
            "bad_manifest",
            |d| {
                let mut f = fs::OpenOptions::new()
                    .append(true)
                    .open(d.join("backup_manifest"))
                    .unwrap();
                std::io::Write::write_all(&mut f, b"\n").unwrap()
            },
            "manifest checksum mismatch",
        ),
    ];
    for alg in ["CRC32C", "SHA512"] {
        let name = format!("plain-{}", alg.to_lowercase());
        let rec = plain_backup_with(&c, &repo.path, &name, alg);
        let dir = location(&rec);
        let pristine = repo.path.join(format!("{name}-pristine"));
        run(Command::new("cp").arg("-a").arg(&dir).arg(&pristine));
        for (what, mutilate, expect) in cases {
            fs::remove_dir_all(&dir).unwrap();
            run(Command::new("cp").arg("-a").arg(&pristine).arg(&dir));
            mutilate(&dir);
            let stock = Command::new(pg_bin("pg_verifybackup"))
                .arg("-n")
                .arg(&dir)
                .output()
                .unwrap();
            let (code, out, err) = verify(
                &c,
                std::slice::from_ref(&rec),
                &["--manifest", "--pg-bindir", no_stock.to_str().unwrap()],
            );
            let v = &out[0]["verified"][0];
            assert!(v["pg_verifybackup"]["ok"].is_null(), "{alg} {what}: {v}");
            if what != "bad_manifest" {
                assert_eq!(v["checksum_algorithms"], json!([alg]), "{alg} {what}: {v}");
            }
            let stock_ok = stock.status.success();
            assert_eq!(
                code == 0,
                stock_ok,
                "{alg} {what}: pgb-verify exits {code} ({err}); pg_verifybackup {}",
                String::from_utf8_lossy(&stock.stderr)
            );
            assert_eq!(stock_ok, what == "clean", "{alg} {what}");
            if !expect.is_empty() {
                let expect = expect.replace("ALG", alg);
                assert!(err.contains(&expect), "{alg} {what}: {expect:?} in {err}");
                assert_eq!(code, 1, "{alg} {what}: {err}");
            }
        }
    }
}

#[test]
fn a_dump_whose_table_data_was_altered_fails_the_restore_naming_the_table() {
    let c = Cluster::new();
    c.load_sample();
    let repo = Scratch::new("repo");
    let recs = snapshot_records(&c, &repo.path, &["-d", "appdb"]);
    let dump = location(&recs[0]);
    // Inside the dump (pg_dump -Z0, compressed by pgb) one row of
    // app.orders becomes COPY's end-of-data marker, the same number of bytes:
    // the archive stays well-formed, pg_restore succeeds, and the rows after
    // it are silently gone. Only comparing row counts notices.
    let work = Scratch::new("alter");
    let plain = work.path.join("dump");
    run(Command::new("zstd")
        .arg("-q")
        .arg("-d")
        .arg(&dump)
        .arg("-o")
        .arg(&plain));
    let mut bytes = fs::read(&plain).unwrap();
    // pg_dump writes each COPY row as its own length-prefixed chunk.
    let row = b"2500\t2500\t2026-";
    let at = bytes
        .windows(row.len())
        .position(|w| w == row)
        .expect("row 2500 of app.orders in the dump");
    bytes[at..at + 3].copy_from_slice(b"\\.\n");
    fs::write(&plain, &bytes).unwrap();
    run(Command::new("zstd")
        .arg("-q")
        .arg("-f")
        .arg(&plain)
        .arg("-o")
        .arg(&dump));
    // The test restore compares the stored bytes first, and stops there.
    let name = dump.file_name().unwrap().to_string_lossy().into_owned();
    let (code, out, err) = verify(&c, &recs, &["--restore"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&name) && err.contains("recorded"), "{err}");
    assert_eq!(methods(&out[0]), [("restore".to_string(), false)]);
    // The checksums catch it too.
    let (code, _, err) = verify(&c, &recs, &["--checksums"]);
    assert_eq!(code, 1, "{err}");
    // With the record (and its sidecar, the source of truth) rewritten to
    // match the altered bytes, only comparing row counts notices.
    let mut lying = recs[0].clone();
    lying["files"][0] = file_entry(&name, &dump);
    fs::write(format!("{}.pgb.json", dump.display()), format!("{lying}\n")).unwrap();
    let (code, out, err) = verify(&c, &[lying], &["--restore"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("table app.orders: 2499 rows after restore, 5000 recorded"),
        "{err}"
    );
    assert_eq!(methods(&out[0]), [("restore".to_string(), false)]);
}

#[test]
fn a_dump_of_the_postgres_database_passes_the_restore_test() {
    let c = Cluster::new();
    c.sql(
        "postgres",
        "CREATE TABLE kept (id int PRIMARY KEY);
         INSERT INTO kept SELECT generate_series(1, 50);",
    );
    let repo = Scratch::new("repo");
    let recs = snapshot_records(&c, &repo.path, &["-d", "postgres"]);
    assert_eq!(recs[0]["database"], "postgres");
    let (code, out, err) = verify(&c, &recs, &["--restore"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(methods(&out[0]), [("restore".to_string(), true)]);
    let v = &out[0]["verified"][0];
    assert!(v["tables_compared"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(v["restored_as"], "pgb_verify_postgres", "{v}");
}

#[test]
fn an_outage_is_an_error_and_records_no_verdict() {
    let c = Cluster::new();
    c.sql("postgres", "CREATE DATABASE appdb;");
    c.sql("appdb", "CREATE TABLE t (i int); INSERT INTO t VALUES (1);");
    let repo = Scratch::new("repo");
    let recs = snapshot_records(&c, &repo.path, &["-d", "appdb"]);
    let sidecar = PathBuf::from(format!("{}.pgb.json", location(&recs[0]).display()));
    let before = fs::read(&sidecar).unwrap();
    // A --target whose server is down (no server on that socket), and a
    // dump whose programs are not installed (a major this host lacks: pgb
    // searches the PGB_PG_BINDIR list the tests give it).
    let nowhere = Scratch::new("down");
    let down = format!("host={} port=5432 dbname=postgres", nowhere.path.display());
    let mut future = recs.clone();
    future[0]["pg_version"] = "99.0".into();
    future[0]["tool"]["version"] = "99.0".into();
    for (what, args, input) in [
        (
            "target down",
            vec!["--restore", "--target", down.as_str()],
            &recs,
        ),
        ("no programs", vec!["--restore"], &future),
        ("no pg_restore", vec!["--structure"], &future),
    ] {
        let (code, out, err) = verify(&c, input, &args);
        assert_eq!(code, 2, "{what}: {err}");
        assert!(err.contains("not checked"), "{what}: {err}");
        assert_eq!(out.len(), 1, "{what}: {out:?}");
        assert_eq!(out[0]["type"], "error", "{what}: {}", out[0]);
        assert!(
            !out.iter().any(|r| r["type"] == "artifact"),
            "{what}: {out:?}"
        );
        assert_eq!(
            fs::read(&sidecar).unwrap(),
            before,
            "{what}: the sidecar changed"
        );
    }
    // The same run with the server up records its verdict.
    let (code, out, err) = verify(&c, &recs, &["--restore"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(methods(&out[0]), [("restore".to_string(), true)]);
    assert_ne!(fs::read(&sidecar).unwrap(), before);
}

/// Waits for the throwaway cluster of pgb-verify `pid` to be up and
/// accepting connections (postmaster.pid says "ready"); returns its
/// directory and the postmaster's pid.
fn running_cluster_of(pid: u32) -> (PathBuf, i32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let ready = |d: &Path| {
        fs::read_to_string(d.join("data/postmaster.pid"))
            .map(|t| t.lines().nth(7).is_some_and(|l| l.trim() == "ready"))
            .unwrap_or(false)
    };
    let dir = loop {
        if let Some(d) = verify_temp_dirs(pid).into_iter().find(|d| ready(d)) {
            break d;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no throwaway cluster appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let postmaster = loop {
        let text = fs::read_to_string(dir.join("data/postmaster.pid")).unwrap_or_default();
        if let Some(Ok(p)) = text.lines().next().map(str::parse::<i32>) {
            break p;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    (dir, postmaster)
}

#[test]
fn an_interrupted_restore_removes_its_cluster_and_records_nothing() {
    let c = Cluster::new();
    // The full sample: its restore takes long enough to be interrupted.
    c.load_sample();
    let repo = Scratch::new("repo");
    let recs = snapshot_records(&c, &repo.path, &["-d", "appdb"]);
    let sidecar = format!("{}.pgb.json", location(&recs[0]).display());
    let before = fs::read(&sidecar).unwrap();
    for (sig, code) in [
        (nix::sys::signal::Signal::SIGINT, 130),
        (nix::sys::signal::Signal::SIGTERM, 143),
    ] {
        let mut child = c
            .tool("pgb-verify")
            .args(["--restore"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        writeln!(child.stdin.take().unwrap(), "{}", recs[0]).unwrap();
        let (dir, postmaster) = running_cluster_of(pid);
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).unwrap();
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{sig}: {err}");
        assert!(
            out.stdout.is_empty(),
            "{sig}: no record for an interrupted check"
        );
        assert!(
            !dir.exists(),
            "{sig}: {} removed: {err}\nleft: {:?}",
            dir.display(),
            files_below(&dir)
        );
        assert!(!alive(postmaster), "{sig}: the postmaster was stopped");
        assert_eq!(
            fs::read(&sidecar).unwrap(),
            before,
            "{sig}: sidecar untouched"
        );
    }
}

/// Live processes whose working directory is inside `dir` (a postmaster
/// and its children work in the data directory).
fn processes_in(dir: &Path) -> Vec<i32> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cwd = fs::read_link(e.path().join("cwd")).ok()?;
            let cwd = cwd.to_string_lossy();
            let cwd = cwd.strip_suffix(" (deleted)").unwrap_or(&cwd);
            (Path::new(cwd).starts_with(dir) && alive(pid)).then_some(pid)
        })
        .collect()
}

#[test]
fn a_signal_while_the_throwaway_cluster_starts_leaves_no_server_behind() {
    let c = Cluster::new();
    small_sample(&c);
    let repo = Scratch::new("repo");
    let recs = snapshot_records(&c, &repo.path, &["-d", "appdb"]);
    for (sig, code) in [
        (nix::sys::signal::Signal::SIGINT, 130),
        (nix::sys::signal::Signal::SIGTERM, 143),
    ] {
        let mut child = c
            .tool("pgb-verify")
            .args(["--restore"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        writeln!(child.stdin.take().unwrap(), "{}", recs[0]).unwrap();
        let (dir, postmaster) = if sig == nix::sys::signal::Signal::SIGINT {
            // As the postmaster appears: pg_ctl start has begun (server.log
            // exists once initdb is done) and postmaster.pid is there.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
            let dir = loop {
                if let Some(d) = verify_temp_dirs(pid).into_iter().find(|d| {
                    d.join("server.log").exists() && d.join("data/postmaster.pid").exists()
                }) {
                    break d;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "no throwaway cluster started"
                );
                std::thread::sleep(std::time::Duration::from_millis(1));
            };
            (dir, None)
        } else {
            // The state a postmaster is in for an instant while it starts,
            // made to last: postmaster.pid created but not yet written, so
            // `pg_ctl stop` cannot tell whom to stop.
            let (dir, postmaster) = running_cluster_of(pid);
            fs::write(dir.join("data/postmaster.pid"), "").unwrap();
            (dir, Some(postmaster))
        };
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).unwrap();
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{sig}: {err}");
        assert!(out.stdout.is_empty(), "{sig}: no record: {err}");
        if let Some(p) = postmaster {
            assert!(!alive(p), "{sig}: the postmaster was stopped: {err}");
        }
        assert_eq!(
            processes_in(&dir),
            Vec::<i32>::new(),
            "{sig}: no server left running in {}",
            dir.display()
        );
        assert!(
            !dir.exists(),
            "{sig}: {} removed: {err}\nleft: {:?}",
            dir.display(),
            files_below(&dir)
        );
    }
}

#[test]
fn copies_on_an_ssh_host_and_in_s3_are_read_back() {
    use crate::servers::{Sshd, S3};
    let c = Cluster::new();
    small_sample(&c);
    let repo = Scratch::new("repo");
    let (mut sshd, s3) = std::thread::scope(|s| {
        let a = s.spawn(Sshd::start);
        let b = s.spawn(S3::start);
        (a.join().unwrap(), b.join().unwrap())
    });
    let remote = Scratch::new("remote");
    let mut env = s3.env();
    env.push(("PGB_SSH_OPTIONS", sshd.client_options()));
    let recs = snapshot_records(&c, &repo.path, &["-d", "appdb"]);
    let mut ship = Command::new(bin("pgb-ship"))
        .args(["--to", &sshd.url(&remote.path)])
        .args(["--to", &format!("s3://{}/pg", s3.bucket)])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(ship.stdin.take().unwrap(), "{}", recs[0]).unwrap();
    let out = ship.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shipped = records(&out.stdout);
    assert_eq!(shipped[0]["copies"].as_array().unwrap().len(), 2);

    let run_verify = |extra: &[&str]| {
        let mut child = c
            .tool("pgb-verify")
            .arg("--checksums")
            .args(extra)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{}", shipped[0]).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap(),
            records(&out.stdout),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run_verify(&[]);
    assert_eq!(code, 0, "{err}");
    let copies = &out[0]["verified"][0]["copies"];
    assert_eq!(copies[0]["ok"], true, "{copies}");
    assert_eq!(copies[1]["ok"], true, "{copies}");
    // The verdict reached the sidecar beside the copy on the SSH host (and
    // in S3, read below once the bucket lets the harness read it).
    let side = format!("{}.pgb.json", s(&recs[0], "path"));
    let beside: Value =
        serde_json::from_slice(&fs::read(remote.path.join(&side)).unwrap()).unwrap();
    assert_eq!(beside["verified"], out[0]["verified"], "{beside}");
    assert_eq!(beside["copies"], out[0]["copies"], "{beside}");

    // One flipped byte in each copy: both fail, each named by its URL.
    let rel = s(&recs[0], "path");
    let ssh_file = remote.path.join(rel);
    let mut b = fs::read(&ssh_file).unwrap();
    b[10] ^= 1;
    fs::write(&ssh_file, &b).unwrap();
    let key = format!("pg/{rel}");
    // Let the harness's unsigned requests overwrite the tool's object.
    let policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":"*","Action":["s3:GetObject","s3:PutObject"],"Resource":"arn:aws:s3:::{}/*"}}]}}"#,
        s3.bucket
    );
    let (status, body) = s3.http("PUT", &format!("/{}?policy", s3.bucket), policy.as_bytes());
    assert!(status < 300, "{}", String::from_utf8_lossy(&body));
    let beside: Value =
        serde_json::from_slice(&s3.get(&format!("pg/{side}")).expect("the S3 sidecar")).unwrap();
    assert_eq!(beside["verified"], out[0]["verified"], "{beside}");
    let mut o = s3.get(&key).expect("the S3 copy");
    let last = o.len() - 1;
    o[last] ^= 1;
    s3.put(&key, &o);
    let (code, _, err) = run_verify(&[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("copy {}: sha256", sshd.url(&ssh_file))),
        "{err}"
    );
    assert!(
        err.contains(&format!("copy s3://{}/{key}: sha256", s3.bucket)),
        "{err}"
    );

    // The SSH host down: unreachable; a failure only with --copies-required.
    sshd.stop();
    s3.put(&key, &fs::read(location(&recs[0])).unwrap());
    let (code, out, err) = run_verify(&[]);
    // Its sidecar cannot be given the verdict: an error about the run.
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("its sidecar is not updated"), "{err}");
    let last = out[0]["verified"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["ok"], true, "{last}");
    assert!(last["copies"][0]["unreachable"].is_string());
    let (code, out, err) = run_verify(&["--copies-required"]);
    assert_eq!(code, 2, "{err}");
    let last = out[0]["verified"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["ok"], false, "{last}");
    // --no-copies leaves the copies alone.
    let (code, _, err) = run_verify(&["--no-copies"]);
    assert_eq!(code, 0, "{err}");
}

/// A tmpfs of `kib` KiB mounted on a new directory in `s`, unmounted when
/// dropped; `None` where this test run may not mount.
struct TinyDisk(PathBuf);

impl TinyDisk {
    fn mount(s: &Scratch, kib: u32) -> Option<TinyDisk> {
        let dir = s.path.join("tiny");
        fs::create_dir(&dir).unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={kib}k,mode=1777"))
            .arg("tmpfs")
            .arg(&dir)
            .stderr(Stdio::piped())
            .output()
            .ok()?;
        o.status.success().then_some(TinyDisk(dir))
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_temp_disk_is_an_error_not_a_verdict() {
    let s = Scratch::new("tinydisk");
    let Some(disk) = TinyDisk::mount(&s, 64) else {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    };
    let c = Cluster::new();
    c.sql("postgres", "CREATE DATABASE appdb;");
    // Far more than 64 KiB as plaintext, little once compressed.
    c.sql(
        "appdb",
        "CREATE TABLE t AS SELECT g AS i, repeat('x', 100) AS pad FROM generate_series(1, 20000) g;",
    );
    let repo = Scratch::new("repo");
    let recs = snapshot_records(&c, &repo.path, &["-d", "appdb"]);
    let sidecar = PathBuf::from(format!("{}.pgb.json", location(&recs[0]).display()));
    let before = fs::read(&sidecar).unwrap();
    let target = format!(
        "host={} port={} dbname=postgres",
        c.socket.display(),
        c.port
    );
    for (what, args) in [
        ("throwaway cluster", vec!["--restore"]),
        ("--target", vec!["--restore", "--target", target.as_str()]),
    ] {
        let (code, out, err) = pipe(
            c.tool("pgb-verify").env("TMPDIR", &disk.0).args(&args),
            &recs,
        );
        assert_eq!(code, 2, "{what}: {err}");
        assert_eq!(out.len(), 1, "{what}: {out:?}");
        assert_eq!(out[0]["type"], "error", "{what}: {}", out[0]);
        assert_eq!(
            fs::read(&sidecar).unwrap(),
            before,
            "{what}: sidecar changed"
        );
    }
    // pgb-restore: the plaintext dump does not fit; an error, and no
    // database created.
    let (code, out, err) = pipe(
        c.tool("pgb-restore")
            .env("TMPDIR", &disk.0)
            .args(["-d", "copy", "-C"]),
        &recs,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0]["type"], "error", "{}", out[0]);
    assert_eq!(
        c.sql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'copy'"
        ),
        "0"
    );
    assert_eq!(fs::read_dir(&disk.0).unwrap().count(), 0, "temp files left");
}
