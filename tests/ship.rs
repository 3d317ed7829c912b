//! pgb-ship against a real cluster, a real sshd and a real S3-compatible
//! server (moto_server), with destinations that are down, full, conflicting
//! or killed mid-copy.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::servers::{Sshd, S3, S3_SECRET};
use crate::util::*;

/// Runs pgb-ship with `recs` on stdin and `envs` set.
fn ship(recs: &[Value], args: &[String], envs: &[(&str, String)]) -> (i32, Vec<Value>, String) {
    pipe(
        Command::new(bin("pgb-ship"))
            .args(args)
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str()))),
        recs,
    )
}

/// Starts pgb-ship on artifact `a` and SIGKILLs it as soon as
/// `under_way()` holds (polled every `poll`); it must not finish first.
fn ship_killed_when(
    a: &Value,
    args: &[String],
    envs: &[(&str, String)],
    poll: Duration,
    under_way: impl Fn() -> bool,
) {
    let mut child = Command::new(bin("pgb-ship"))
        .args(args)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{a}").unwrap();
    let start = Instant::now();
    while !under_way() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the copy never got under way"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before the kill"
        );
        std::thread::sleep(poll);
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The three kinds of destination, running.
struct Dests {
    sshd: Sshd,
    s3: S3,
    root: tempfile::TempDir,
}

impl Dests {
    fn start() -> Dests {
        let (sshd, s3) = std::thread::scope(|s| {
            let a = s.spawn(Sshd::start);
            let b = s.spawn(S3::start);
            (a.join().unwrap(), b.join().unwrap())
        });
        let root = tempfile::Builder::new()
            .prefix("pgb-ship.")
            .tempdir()
            .unwrap();
        fs::create_dir(root.path().join("nas")).unwrap();
        Dests { sshd, s3, root }
    }

    fn nas(&self) -> PathBuf {
        self.root.path().join("nas")
    }

    /// The SSH destination's root (sshd runs here, so it is a local path).
    fn remote(&self) -> PathBuf {
        self.root.path().join("remote")
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        let mut e = self.s3.env();
        e.push(("PGB_SSH_OPTIONS", self.sshd.client_options()));
        e
    }

    /// `--to` arguments: NAS directory, SSH host, bucket, with labels.
    fn to_all(&self) -> Vec<String> {
        vec![
            "--to".into(),
            format!("{}#media=nas", self.nas().display()),
            "--to".into(),
            format!("{}#media=disk,site=offsite", self.sshd.url(&self.remote())),
            "--to".into(),
            format!("s3://{}/pg#media=s3,site=offsite", self.s3.bucket),
        ]
    }
}

/// A logical-dump artifact of `size` bytes (content varies with `seed`) in
/// `repo`, with its sidecar; its record.
fn fake_artifact(repo: &Path, name: &str, size: usize, seed: u64) -> Value {
    let rel = format!("main/logical/app/{name}.dump.zst");
    let path = repo.join(&rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut buf = Vec::with_capacity(size + 8);
    while buf.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf.extend_from_slice(&x.to_le_bytes());
    }
    buf.truncate(size);
    fs::write(&path, &buf).unwrap();
    let (sha256, blake3) = stock_sums(&path);
    let file_name = path.file_name().unwrap().to_string_lossy().into_owned();
    let rec = json!({
        "schema": "pgb.v1", "type": "artifact", "id": format!("logical-app-{name}"),
        "kind": "logical", "cluster": "main", "database": "app",
        "created": "2026-11-21T10:15:00+01:00",
        "repo": repo.display().to_string(), "path": rel,
        "files": [{"name": file_name, "size": size, "sha256": sha256, "blake3": blake3}],
        "copies": [], "verified": []
    });
    fs::write(
        repo.join(format!("{rel}.pgb.json")),
        serde_json::to_vec_pretty(&rec).unwrap(),
    )
    .unwrap();
    rec
}

fn file_paths(a: &Value) -> Vec<(String, String)> {
    let path = a["path"].as_str().unwrap();
    a["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let name = f["name"].as_str().unwrap();
            let rel = if a["kind"] == "physical" {
                format!("{path}/{name}")
            } else {
                path.to_string()
            };
            (rel, f["sha256"].as_str().unwrap().to_string())
        })
        .collect()
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    pgb_common::digest::hex(&sha2::Sha256::digest(bytes))
}

fn temps_below(dir: &Path) -> Vec<String> {
    files_below(dir)
        .into_iter()
        .filter(|p| p.contains(".pgb-tmp."))
        .collect()
}

#[test]
fn snapshot_ships_to_a_directory_an_ssh_host_and_s3_and_meets_3_2_1() {
    let c = Cluster::new();
    c.load_sample();
    let repo = Scratch::new("repo");
    let out = c
        .tool("pgb-snapshot")
        .arg("--out")
        .arg(&repo.path)
        .args(["-d", "appdb", "--globals", "--physical"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recs = records(&out.stdout);
    assert_eq!(recs.len(), 3);
    let d = Dests::start();
    let mut args = d.to_all();
    args.extend(["--require".into(), "3-2-1".into()]);
    let (code, shipped, err) = ship(&recs, &args, &d.env());
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains(S3_SECRET));
    assert_eq!(shipped.len(), 3);
    for a in &shipped {
        assert_eq!(a["type"], "artifact", "{a}");
        assert_eq!(a["policy"]["ok"], true, "{a}");
        assert_eq!(a["policy"]["copies"], 4);
        let copies = a["copies"].as_array().unwrap();
        let summary: Vec<(&str, &str, &str)> = copies
            .iter()
            .map(|c| {
                (
                    c["media"].as_str().unwrap(),
                    c["site"].as_str().unwrap(),
                    c["verified"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("nas", "onsite", "readback"),
                ("disk", "offsite", "server-checksum"),
                ("s3", "offsite", "readback")
            ]
        );
        let path = a["path"].as_str().unwrap();
        assert_eq!(
            copies[0]["url"],
            json!(d.nas().join(path).display().to_string())
        );
        assert_eq!(copies[1]["url"], json!(d.sshd.url(&d.remote().join(path))));
        assert_eq!(copies[2]["url"], json!(format!("s3://pgb-test/pg/{path}")));
        assert_eq!(copies[0]["files"], a["files"]);
        // The bytes at every destination are the original's.
        for (rel, sha) in file_paths(a) {
            assert_eq!(sha256(&fs::read(d.nas().join(&rel)).unwrap()), sha, "{rel}");
            assert_eq!(
                sha256(&fs::read(d.remote().join(&rel)).unwrap()),
                sha,
                "{rel}"
            );
            assert_eq!(
                sha256(&d.s3.get(&format!("pg/{rel}")).unwrap()),
                sha,
                "{rel}"
            );
        }
        // The updated record travels with every copy and replaces the
        // local sidecar.
        let side = format!("{path}.pgb.json");
        let local: Value =
            serde_json::from_slice(&fs::read(repo.path.join(&side)).unwrap()).unwrap();
        assert_eq!(&local, a);
        for copy in [
            fs::read(d.nas().join(&side)).unwrap(),
            fs::read(d.remote().join(&side)).unwrap(),
            d.s3.get(&format!("pg/{side}")).unwrap(),
        ] {
            let v: Value = serde_json::from_slice(&copy).unwrap();
            assert_eq!(v["copies"].as_array().unwrap().len(), 3);
        }
    }
    // The secret is nowhere: not in records, sidecars or messages.
    let everything = format!("{shipped:?}{err}");
    assert!(!everything.contains(S3_SECRET));
    for f in files_below(d.root.path()) {
        let bytes = fs::read(d.root.path().join(&f)).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(S3_SECRET), "{f}");
    }
    // pgb-verify re-reads every copy and agrees.
    let (code, _, err) = pipe(
        c.tool("pgb-verify").arg("--checksums").envs(d.env()),
        &shipped,
    );
    assert_eq!(code, 0, "{err}");

    // Only the NAS: 2 copies counting the original, none offsite (an
    // artifact not shipped yet: the others' copies stay recorded).
    let repo2 = tempfile::tempdir().unwrap();
    let fresh = [fake_artifact(repo2.path(), "fresh", 1000, 5)];
    let nas2 = d.root.path().join("nas2");
    fs::create_dir(&nas2).unwrap();
    let (code, two, err) = ship(
        &fresh,
        &[
            "--to".into(),
            format!("{}#media=nas", nas2.display()),
            "--require".into(),
            "3-2-1".into(),
        ],
        &d.env(),
    );
    assert_eq!(code, 1, "{err}");
    assert_eq!(two[0]["type"], "artifact");
    assert_eq!(
        two[0]["policy"]["failed"],
        json!([
            "3 copies: only 2 counting the original",
            "1 offsite: no copy has site=offsite"
        ])
    );
    assert!(err.contains("3-2-1 not met: 3 copies: only 2"), "{err}");
    // Two destinations, both on site: the offsite rule fails alone.
    let nas3 = d.root.path().join("nas3");
    fs::create_dir(&nas3).unwrap();
    let (code, two, err) = ship(
        &fresh,
        &[
            "--to".into(),
            format!("{}#media=nas", nas3.display()),
            "--to".into(),
            format!("s3://{}/onsite#media=s3", d.s3.bucket),
            "--require".into(),
            "3-2-1".into(),
        ],
        &d.env(),
    );
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        two[0]["policy"]["failed"],
        json!(["1 offsite: no copy has site=offsite"])
    );
}

#[test]
fn a_second_run_finds_its_copies_and_a_conflicting_copy_is_kept() {
    let repo = tempfile::tempdir().unwrap();
    let d = Dests::start();
    // Big enough for a multipart upload (parts of 16 MiB).
    let a = fake_artifact(repo.path(), "big", (16 << 20) + 12345, 1);
    let (code, first, err) = ship(&[a], &d.to_all(), &d.env());
    assert_eq!(code, 0, "{err}");
    assert_eq!(d.s3.pending_uploads(), 0);
    let path = first[0]["path"].as_str().unwrap().to_string();
    let mtime = || {
        fs::metadata(d.nas().join(&path))
            .unwrap()
            .modified()
            .unwrap()
    };
    let before = mtime();
    let (code, second, err) = ship(&first, &d.to_all(), &d.env());
    assert_eq!(code, 0, "{err}");
    let copies = second[0]["copies"].as_array().unwrap();
    assert_eq!(copies.len(), 3, "not recorded twice: {copies:?}");
    assert!(copies.iter().all(|c| c["existing"] == true), "{copies:?}");
    assert_eq!(mtime(), before, "not copied again");

    // Different bytes under the same names at every destination.
    let b = fake_artifact(repo.path(), "other", 1000, 2);
    let rel = b["path"].as_str().unwrap();
    for root in [d.nas(), d.remote()] {
        fs::create_dir_all(root.join(rel).parent().unwrap()).unwrap();
        fs::write(root.join(rel), b"someone else's").unwrap();
    }
    d.s3.put(&format!("pg/{rel}"), b"someone else's");
    let (code, out, err) = ship(std::slice::from_ref(&b), &d.to_all(), &d.env());
    assert_eq!(code, 2, "{err}");
    assert_eq!(out[0]["type"], "error");
    let failed = out[0]["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 3, "{failed:?}");
    for f in failed {
        assert!(
            f["error"]
                .as_str()
                .unwrap()
                .contains("exists with different content; kept"),
            "{f}"
        );
    }
    for root in [d.nas(), d.remote()] {
        assert_eq!(fs::read(root.join(rel)).unwrap(), b"someone else's");
    }
    assert_eq!(d.s3.get(&format!("pg/{rel}")).unwrap(), b"someone else's");
}

#[test]
fn one_destination_down_does_not_stop_the_others() {
    let repo = tempfile::tempdir().unwrap();
    let mut d = Dests::start();
    d.sshd.stop();
    let a = fake_artifact(repo.path(), "a", 300_000, 3);
    let (code, out, err) = ship(std::slice::from_ref(&a), &d.to_all(), &d.env());
    assert_eq!(code, 2, "{err}");
    assert_eq!(out.len(), 1);
    let e = &out[0];
    assert_eq!(e["type"], "error");
    assert_eq!(e["tool"], "pgb-ship");
    let ssh_root = d.sshd.url(&d.remote());
    assert!(e["message"].as_str().unwrap().contains(&ssh_root), "{e}");
    assert_eq!(e["failed"][0]["to"], json!(ssh_root));
    // The other two completed and are recorded, here and in the sidecar.
    let copies = e["artifact"]["copies"].as_array().unwrap();
    assert_eq!(copies.len(), 2, "{copies:?}");
    let rel = a["path"].as_str().unwrap();
    let sha = a["files"][0]["sha256"].as_str().unwrap();
    assert_eq!(sha256(&fs::read(d.nas().join(rel)).unwrap()), sha);
    assert_eq!(sha256(&d.s3.get(&format!("pg/{rel}")).unwrap()), sha);
    let side: Value =
        serde_json::from_slice(&fs::read(repo.path().join(format!("{rel}.pgb.json"))).unwrap())
            .unwrap();
    assert_eq!(side["copies"].as_array().unwrap().len(), 2);
    assert!(!d.remote().join(rel).exists());

    // A bucket that does not exist: the error says so, without the secret.
    let (code, out, err) = ship(
        &[a],
        &["--to".into(), "s3://no-such-bucket/pg".into()],
        &d.env(),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("s3://no-such-bucket/pg/"), "{err}");
    assert!(
        err.contains("bucket no-such-bucket does not exist"),
        "{err}"
    );
    // Said as a sentence, not the server's XML body.
    assert!(!err.contains("<?xml") && !err.contains("<Code>"), "{err}");
    assert!(!format!("{out:?}{err}").contains(S3_SECRET));
}

#[test]
fn an_unmounted_destination_directory_is_not_created() {
    let repo = tempfile::tempdir().unwrap();
    let a = fake_artifact(repo.path(), "a", 1000, 4);
    let gone = repo.path().join("mnt/nas");
    let (code, out, err) = ship(&[a], &["--to".into(), gone.display().to_string()], &[]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(out[0]["type"], "error");
    assert!(err.contains("not mounted?"), "{err}");
    assert!(!gone.exists());
}

#[test]
fn disk_full_at_the_destination_leaves_nothing_behind() {
    let repo = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "pgb-test"])
        .arg(mnt.path())
        .stderr(Stdio::null())
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        eprintln!("SKIP disk_full_at_the_destination_leaves_nothing_behind: cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _u = Unmount(mnt.path().to_path_buf());
    let a = fake_artifact(repo.path(), "a", 3 << 20, 5);
    let (code, out, err) = ship(
        std::slice::from_ref(&a),
        &["--to".into(), mnt.path().display().to_string()],
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert_eq!(out[0]["type"], "error");
    assert!(
        out[0]["message"]
            .as_str()
            .unwrap()
            .contains("No space left on device"),
        "{err}"
    );
    assert_eq!(
        files_below(mnt.path()),
        Vec::<String>::new(),
        "no file, no temp"
    );
    // stdout on a full device is an error too.
    let full = fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin("pgb-ship"))
        .args(["--to".to_string(), dir.path().display().to_string()])
        .stdin(Stdio::piped())
        .stdout(full)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{a}").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn killed_mid_copy_leaves_no_final_name_and_the_next_run_completes() {
    let repo = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let a = fake_artifact(repo.path(), "big", 48 << 20, 6);
    let rel = a["path"].as_str().unwrap();
    let args = ["--to".to_string(), dest.path().display().to_string()];
    ship_killed_when(&a, &args, &[], Duration::from_millis(1), || {
        !temps_below(dest.path()).is_empty()
    });
    assert!(
        !dest.path().join(rel).exists(),
        "no file under the final name"
    );
    assert_eq!(temps_below(dest.path()).len(), 1);
    let (code, out, err) = ship(std::slice::from_ref(&a), &args, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("left by a killed run"), "{err}");
    assert_eq!(out[0]["copies"].as_array().unwrap().len(), 1);
    assert_eq!(temps_below(dest.path()), Vec::<String>::new());
    assert_eq!(
        sha256(&fs::read(dest.path().join(rel)).unwrap()),
        a["files"][0]["sha256"].as_str().unwrap()
    );
}

#[test]
fn ssh_copy_killed_mid_stream_leaves_nothing_on_the_host() {
    let repo = tempfile::tempdir().unwrap();
    let d = Dests::start();
    let a = fake_artifact(repo.path(), "big", 24 << 20, 7);
    let rel = a["path"].as_str().unwrap();
    let to = vec!["--to".to_string(), d.sshd.url(&d.remote())];
    // SIGKILL pgb-ship: its ssh child sees the input end early.
    ship_killed_when(&a, &to, &d.env(), Duration::from_millis(1), || {
        !temps_below(&d.remote()).is_empty()
    });
    let start = Instant::now();
    while !temps_below(&d.remote()).is_empty() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        temps_below(&d.remote()),
        Vec::<String>::new(),
        "the host removed the short temp"
    );
    assert!(!d.remote().join(rel).exists());
    let (code, _, err) = ship(std::slice::from_ref(&a), &to, &d.env());
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        sha256(&fs::read(d.remote().join(rel)).unwrap()),
        a["files"][0]["sha256"].as_str().unwrap()
    );
}

/// A run killed between upload and publish leaves a whole temp on the host
/// (nothing there can tell it from a live upload): the next upload to that
/// directory removes it once it has stood for an hour, and says so; a
/// fresh one (a concurrent upload) is left alone.
#[test]
fn ssh_temps_of_killed_runs_go_once_an_hour_old() {
    let repo = tempfile::tempdir().unwrap();
    let d = Dests::start();
    let a = fake_artifact(repo.path(), "next", 1 << 20, 3);
    let rel = a["path"].as_str().unwrap();
    let dir = d.remote().join(rel).parent().unwrap().to_path_buf();
    fs::create_dir_all(&dir).unwrap();
    let old = dir.join(".prev.dump.zst.pgb-tmp.4242.0");
    let fresh = dir.join(".other.dump.zst.pgb-tmp.4343.0");
    fs::write(&old, b"left by a killed run").unwrap();
    fs::write(&fresh, b"being uploaded").unwrap();
    run(Command::new("touch").args(["-d", "2 hours ago"]).arg(&old));
    let to = vec!["--to".to_string(), d.sshd.url(&d.remote())];
    let (code, _, err) = ship(std::slice::from_ref(&a), &to, &d.env());
    assert_eq!(code, 0, "{err}");
    assert!(!old.exists(), "the hour-old temp was removed");
    assert!(fresh.exists(), "a recent temp is never touched");
    assert!(
        err.contains("removed ssh://") && err.contains(".prev.dump.zst.pgb-tmp.4242.0"),
        "{err}"
    );
    assert!(d.remote().join(rel).exists());
}

#[test]
fn bad_destinations_are_usage_errors() {
    for (spec, why) in [
        ("ftp://host/x", "unknown scheme"),
        ("ssh://host", "no path"),
        ("/x#colour=red", "unknown key"),
        ("ssh://u:pw@host/x", "passwords are not accepted"),
    ] {
        let (code, out, err) = ship(&[], &["--to".into(), spec.into()], &[]);
        assert_eq!(code, 2, "{spec}: {err}");
        assert!(out.is_empty());
        assert!(err.contains(why), "{spec}: {err}");
    }
}

#[test]
fn s3_upload_killed_mid_way_publishes_no_object() {
    let repo = tempfile::tempdir().unwrap();
    let s3 = S3::start();
    // Several parts, so the multipart upload is under way for a while.
    let a = fake_artifact(repo.path(), "big", 40 << 20, 8);
    let key = format!("pg/{}", a["path"].as_str().unwrap());
    let to = vec!["--to".to_string(), format!("s3://{}/pg", s3.bucket)];
    ship_killed_when(&a, &to, &s3.env(), Duration::from_millis(5), || {
        s3.pending_uploads() > 0
    });
    assert!(!s3.keys().contains(&key), "no object under the final key");
    let (code, out, err) = ship(std::slice::from_ref(&a), &to, &s3.env());
    assert_eq!(code, 0, "{err}");
    assert_eq!(out[0]["copies"][0]["verified"], "readback");
    assert_eq!(
        sha256(&s3.get(&key).unwrap()),
        a["files"][0]["sha256"].as_str().unwrap()
    );
}

#[test]
fn verify_disk_re_reads_from_the_device_and_says_so_and_damaged_sources_stay_home() {
    let repo = tempfile::tempdir().unwrap();
    // Under the repository's parent, so on a disk (O_DIRECT), not tmpfs.
    let nas = tempfile::tempdir_in(repo.path().parent().unwrap()).unwrap();
    let to = |extra: &[&str]| {
        let mut v: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        v.extend(["--to".into(), format!("{}#media=nas", nas.path().display())]);
        v
    };
    let a = fake_artifact(repo.path(), "a", (9 << 20) + 4321, 11);
    let rel = a["path"].as_str().unwrap().to_string();
    let sha = a["files"][0]["sha256"].as_str().unwrap().to_string();
    let (code, out, err) = ship(std::slice::from_ref(&a), &to(&["--verify=disk"]), &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out[0]["copies"][0]["verified"], "readback-disk");
    assert_eq!(sha256(&fs::read(nas.path().join(&rel)).unwrap()), sha);
    let beside: Value =
        serde_json::from_slice(&fs::read(nas.path().join(format!("{rel}.pgb.json"))).unwrap())
            .unwrap();
    assert_eq!(beside["copies"][0]["verified"], "readback-disk");
    // Found again, checked from the device again.
    let (code, again, err) = ship(std::slice::from_ref(&a), &to(&["--verify", "disk"]), &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(again[0]["copies"][0]["verified"], "readback-disk");
    assert_eq!(again[0]["copies"][0]["existing"], true);
    // The default re-reads through the page cache and says so.
    let other = tempfile::tempdir_in(repo.path().parent().unwrap()).unwrap();
    let (code, out, err) = ship(
        std::slice::from_ref(&a),
        &["--to".into(), other.path().display().to_string()],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    // Recorded beside the NAS copy, which stays recorded.
    assert_eq!(out[0]["copies"][0]["verified"], "readback-disk");
    assert_eq!(out[0]["copies"][1]["verified"], "readback");
    assert_eq!(sha256(&fs::read(other.path().join(&rel)).unwrap()), sha);

    // One flipped byte in the source, size unchanged: neither mode ships it.
    let b = fake_artifact(repo.path(), "b", (5 << 20) + 7, 12);
    let brel = b["path"].as_str().unwrap().to_string();
    let src = repo.path().join(&brel);
    let mut bytes = fs::read(&src).unwrap();
    bytes[3 << 20] ^= 0x40;
    fs::write(&src, &bytes).unwrap();
    for (mode, why) in [
        ("--verify=cache", "the source changed or is damaged"),
        ("--verify=disk", "sha256"),
    ] {
        let (code, out, err) = ship(std::slice::from_ref(&b), &to(&[mode]), &[]);
        assert_eq!(code, 2, "{mode}: {err}");
        assert_eq!(out[0]["type"], "error", "{mode}");
        assert!(err.contains(why), "{mode}: {err}");
        assert!(!nas.path().join(&brel).exists(), "{mode}: published");
        assert!(temps_below(nas.path()).is_empty(), "{mode}");
    }
}

/// The sidecar beside `rel` under `root`, parsed.
fn sidecar_at(root: &Path, rel: &str) -> Value {
    serde_json::from_slice(&fs::read(root.join(format!("{rel}.pgb.json"))).unwrap()).unwrap()
}

fn urls(a: &Value) -> Vec<String> {
    let mut v: Vec<String> = a["copies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["url"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// An old record (yesterday's log) replayed through pgb-ship and then
/// pgb-verify loses no copy and no verification recorded since, here or
/// beside the copies; verify's verdicts reach every copy's sidecar.
#[test]
fn a_replayed_record_keeps_every_copy_and_verification() {
    let repo = tempfile::tempdir().unwrap();
    let dests = tempfile::tempdir().unwrap();
    let (nas, usb) = (dests.path().join("nas"), dests.path().join("usb"));
    fs::create_dir(&nas).unwrap();
    fs::create_dir(&usb).unwrap();
    let old = fake_artifact(repo.path(), "replayed", 5000, 21);
    let rel = old["path"].as_str().unwrap().to_string();
    let to = |d: &Path| vec!["--to".to_string(), d.display().to_string()];
    let (code, _, err) = ship(std::slice::from_ref(&old), &to(&nas), &[]);
    assert_eq!(code, 0, "{err}");
    // Verified since, from the repository: the verdict is recorded here and
    // beside the NAS copy.
    let verify_repo = Command::new(bin("pgb-verify"))
        .args(["--checksums", "--repo"])
        .arg(repo.path())
        .output()
        .unwrap();
    assert_eq!(verify_repo.status.code(), Some(0), "{verify_repo:?}");
    let since = sidecar_at(repo.path(), &rel);
    assert_eq!(since["verified"].as_array().unwrap().len(), 1, "{since}");
    assert_eq!(sidecar_at(&nas, &rel)["verified"], since["verified"]);

    // Yesterday's record through pgb-ship to another destination.
    let (code, out, err) = ship(std::slice::from_ref(&old), &to(&usb), &[]);
    assert_eq!(code, 0, "{err}");
    let both = vec![
        nas.join(&rel).display().to_string(),
        usb.join(&rel).display().to_string(),
    ];
    assert_eq!(urls(&out[0]), both, "{}", out[0]);
    assert_eq!(out[0]["verified"], since["verified"]);
    for side in [sidecar_at(repo.path(), &rel), sidecar_at(&usb, &rel)] {
        assert_eq!(urls(&side), both, "{side}");
        assert_eq!(side["verified"], since["verified"], "{side}");
    }
    assert_eq!(sidecar_at(&nas, &rel)["verified"], since["verified"]);

    // Yesterday's record through pgb-verify: its verdict is added to what
    // the sidecar holds, here and beside both copies.
    std::thread::sleep(Duration::from_millis(1100));
    let (code, out, err) = pipe(
        Command::new(bin("pgb-verify")).arg("--checksums"),
        std::slice::from_ref(&old),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(urls(&out[0]), both, "{}", out[0]);
    let verified = out[0]["verified"].as_array().unwrap();
    assert_eq!(verified.len(), 2, "{}", out[0]);
    assert_eq!(verified[0], since["verified"][0]);
    for root in [repo.path(), nas.as_path(), usb.as_path()] {
        let side = sidecar_at(root, &rel);
        assert_eq!(urls(&side), both, "{}: {side}", root.display());
        assert_eq!(side["verified"], out[0]["verified"], "{}", root.display());
    }
}
