//! pgb-verify against real backups, real damage and real restores.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::util::*;

fn snapshot(c: &Cluster, repo: &Path, args: &[&str]) -> Vec<Value> {
    let out = c
        .tool("pgb-snapshot")
        .arg("--out")
        .arg(repo)
        .args(args)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    records(&out.stdout)
}

/// Runs pgb-verify with `records` on stdin.
fn verify(c: &Cluster, recs: &[Value], args: &[&str]) -> (i32, Vec<Value>, String) {
    let mut child = c
        .tool("pgb-verify")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for r in recs {
        writeln!(stdin, "{r}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        records(&out.stdout),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn location(a: &Value) -> PathBuf {
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
    let recs = snapshot(&c, &repo.path, &["-d", "appdb", "--globals", "--physical"]);
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
    let recs = snapshot(&c, &repo.path, &["-d", "appdb", "--no-row-counts"]);
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

#[test]
fn damage_inside_a_physical_backups_tars_is_caught_without_extracting() {
    let c = Cluster::new();
    c.load_sample();
    let repo = Scratch::new("repo");
    let recs = snapshot(&c, &repo.path, &["--physical", "--cluster", "main"]);
    let other = snapshot(&c, &repo.path, &["--physical", "--cluster", "other"]);
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
    type Damage<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(&str, Damage, &str)> = vec![
        (
            "changed file",
            Box::new(|| {
                edit_tar(&base, |t, w| {
                    tar(&["--delete", "PG_VERSION"], t, w);
                    fs::write(w.join("PG_VERSION"), "14\n").unwrap();
                    tar(&["-r", "PG_VERSION"], t, w);
                })
            }),
            "PG_VERSION: SHA256 does not match the manifest",
        ),
        (
            "missing file",
            Box::new(|| {
                edit_tar(&base, |t, w| {
                    tar(&["--delete", "global/pg_filenode.map"], t, w)
                })
            }),
            "global/pg_filenode.map: in the manifest but missing",
        ),
        (
            "extra file",
            Box::new(|| {
                edit_tar(&base, |t, w| {
                    fs::write(w.join("planted"), "x").unwrap();
                    tar(&["-r", "planted"], t, w);
                })
            }),
            "planted: present in the backup but not in the manifest",
        ),
        (
            "truncated file",
            Box::new(|| {
                edit_tar(&base, |t, w| {
                    tar(&["--delete", "PG_VERSION"], t, w);
                    fs::write(w.join("PG_VERSION"), "1").unwrap();
                    tar(&["-r", "PG_VERSION"], t, w);
                })
            }),
            "PG_VERSION: 1 bytes, manifest says 3",
        ),
        (
            "tampered manifest",
            Box::new(|| {
                let p = dir.join("backup_manifest");
                let text =
                    fs::read_to_string(&p)
                        .unwrap()
                        .replacen("\"Size\": 3,", "\"Size\": 4,", 1);
                fs::write(&p, text).unwrap();
            }),
            "manifest checksum mismatch",
        ),
        (
            "manifest of another backup",
            Box::new(|| {
                fs::copy(
                    location(&other[0]).join("backup_manifest"),
                    dir.join("backup_manifest"),
                )
                .unwrap();
            }),
            "global/pg_control: SHA256 does not match the manifest",
        ),
    ];
    for (what, damage, expect) in cases {
        reset();
        damage();
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

fn verify_dirs_of(pid: u32) -> Vec<PathBuf> {
    fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("pgb-verify.{pid}."))
        })
        .collect()
}

#[test]
fn restore_test_compares_row_counts_taken_in_the_dumps_snapshot() {
    let c = Cluster::new();
    c.load_sample();
    let repo = Scratch::new("repo");
    let recs = snapshot(&c, &repo.path, &["--globals", "-d", "appdb"]);
    // Rows deleted after the snapshot do not matter: the counts were taken
    // in the dump's own snapshot.
    c.sql("appdb", "DELETE FROM app.orders WHERE id > 100");
    let smoke = repo.path.join("smoke.sql");
    fs::write(
        &smoke,
        "SELECT count(*) FROM app.rich;\nSELECT 'acct 7' % name FROM app.accounts LIMIT 1;\n",
    )
    .unwrap();
    let (code, out, err) = verify(
        &c,
        &recs,
        &[
            "--restore",
            "--sql",
            smoke.to_str().unwrap(),
            "--rto",
            "10m",
        ],
    );
    assert_eq!(code, 0, "{err}");
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
    let mut child = c
        .tool("pgb-verify")
        .args(["--restore"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    writeln!(child.stdin.take().unwrap(), "{lying}").unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("table app.orders: 5000 rows after restore, 4999 recorded"),
        "{err}"
    );
    assert!(
        verify_dirs_of(pid).is_empty(),
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

#[test]
fn a_killed_restore_leaves_nothing_after_the_next_run() {
    let c = Cluster::new();
    c.load_sample();
    let repo = Scratch::new("repo");
    let recs = snapshot(&c, &repo.path, &["-d", "appdb"]);
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
    // Wait for its throwaway cluster to be running, then kill it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let dir = loop {
        if let Some(d) = verify_dirs_of(pid)
            .into_iter()
            .find(|d| d.join("data/postmaster.pid").exists())
        {
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
    child.kill().unwrap();
    child.wait().unwrap();
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
}
