//! pgb-prune and pgb-check-archive on remote repositories: physical
//! backups of a real cluster shipped by pgb-ship to a real S3-compatible
//! server (moto_server) and a real sshd, then planned, locked, pruned and
//! checked there, with WAL expiry of an archive in S3.

use std::fs;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::check_archive::{archiving_cluster, make_segments, segment_names};
use crate::servers::{Sshd, S3, S3_SECRET};
use crate::util::*;

struct Remotes {
    sshd: Sshd,
    s3: S3,
    root: tempfile::TempDir,
}

impl Remotes {
    fn start() -> Remotes {
        let (sshd, s3) = std::thread::scope(|s| {
            let a = s.spawn(Sshd::start);
            let b = s.spawn(S3::start);
            (a.join().unwrap(), b.join().unwrap())
        });
        let root = tempfile::Builder::new()
            .prefix("pgb-remote-prune.")
            .tempdir()
            .unwrap();
        fs::create_dir(root.path().join("remote")).unwrap();
        // The harness's unsigned requests may read and (here) also delete
        // what the tools wrote: a stale lock is removed by hand.
        let policy = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":"*","Action":["s3:GetObject","s3:DeleteObject"],"Resource":"arn:aws:s3:::{}/*"}}]}}"#,
            s3.bucket
        );
        let (status, _) = s3.http("PUT", &format!("/{}?policy", s3.bucket), policy.as_bytes());
        assert!(status < 300, "bucket policy: {status}");
        Remotes { sshd, s3, root }
    }

    /// The SSH repository's directory (sshd runs on this machine).
    fn remote(&self) -> std::path::PathBuf {
        self.root.path().join("remote")
    }

    fn ssh_repo(&self) -> String {
        self.sshd.url(&self.remote())
    }

    fn s3_repo(&self) -> String {
        format!("s3://{}/pg", self.s3.bucket)
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        let mut e = self.s3.env();
        e.push(("PGB_SSH_OPTIONS", self.sshd.client_options()));
        e
    }

    fn run(&self, tool: &str, args: &[&str]) -> Output {
        let o = Command::new(bin(tool))
            .args(args)
            .envs(self.env())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!stderr(&o).contains(S3_SECRET), "secret leaked");
        o
    }

    /// Keys below `pg/` in the bucket, relative to it.
    fn s3_files(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .s3
            .keys()
            .into_iter()
            .filter_map(|k| k.strip_prefix("pg/").map(str::to_string))
            .collect();
        v.sort();
        v
    }

    fn delete_key(&self, key: &str) {
        let (status, _) = self
            .s3
            .http("DELETE", &format!("/{}/{key}", self.s3.bucket), b"");
        assert!(status < 300, "delete {key}: {status}");
    }
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    pgb_common::digest::hex(&sha2::Sha256::digest(bytes))
}

/// `(path/name, sha256)` of each file of an artifact record.
fn file_paths(a: &Value) -> Vec<(String, String)> {
    let path = a["path"].as_str().unwrap();
    a["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                format!("{path}/{}", f["name"].as_str().unwrap()),
                f["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn actions(recs: &[Value]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = recs
        .iter()
        .filter(|r| r["type"] == "artifact")
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["prune"]["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

/// What belongs to artifact `a` in a repository's file list.
fn owned_by<'a>(files: &'a [String], a: &Value) -> Vec<&'a String> {
    let p = a["path"].as_str().unwrap();
    files
        .iter()
        .filter(|f| f.as_str() == format!("{p}.pgb.json") || f.starts_with(&format!("{p}/")))
        .collect()
}

#[test]
fn remote_repositories_are_planned_locked_pruned_and_checked() {
    let a = archiving_cluster("--compress zstd");
    make_segments(&a.cluster, &a.dir, 2);
    let repo = Scratch::new("remote-prune-repo");
    let mut backups = Vec::new();
    for n in 0..3 {
        if n > 0 {
            // Names carry the UTC second.
            std::thread::sleep(Duration::from_millis(1100));
        }
        backups.extend(snapshot_records(&a.cluster, &repo.path, &["--physical"]));
        make_segments(&a.cluster, &a.dir, 2);
    }
    assert_eq!(backups.len(), 3);
    let (old, kept) = (&backups[..2], &backups[2]);
    let t = Remotes::start();
    let (shipped_code, shipped, err) = pipe(
        Command::new(bin("pgb-ship"))
            .args(["--to", &t.s3_repo(), "--to", &t.ssh_repo()])
            .envs(t.env()),
        &backups,
    );
    assert_eq!(shipped_code, 0, "{err}");
    assert_eq!(shipped.len(), 3);
    // The WAL archive, in S3 as pgb-wal push left it in the directory.
    for e in fs::read_dir(&a.dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        t.s3.put(&format!("wal/{name}"), &fs::read(e.path()).unwrap());
    }
    t.s3.put(
        "wal/00000002.history",
        b"1\t0/9000000\tno recovery target\n",
    );
    let wal = format!("s3://{}/wal", t.s3.bucket);
    let wal_keys = || -> Vec<String> {
        let mut v: Vec<String> =
            t.s3.keys()
                .into_iter()
                .filter_map(|k| k.strip_prefix("wal/").map(str::to_string))
                .collect();
        v.sort();
        v
    };
    let segs_before: Vec<String> = segment_names(&a.dir);
    let start_kept = kept["wal"]["start_segment"].as_str().unwrap().to_string();
    assert!(segs_before.iter().any(|s| *s < start_kept));

    // pgb-check-archive judges the remote repository's backups against the
    // S3 archive: all three restorable before the prune.
    let chk = t.run(
        "pgb-check-archive",
        &[&wal, "--repo", &t.s3_repo(), "--json"],
    );
    let recs = records(&chk.stdout);
    let judged: Vec<&Value> = recs.iter().filter(|r| r["type"] == "artifact").collect();
    assert_eq!(judged.len(), 3, "{}\n{recs:?}", stderr(&chk));
    for b in &judged {
        assert_eq!(b["archive_check"]["restorable"], true, "{b}");
        assert_eq!(b["repo"], json!(t.s3_repo()));
    }

    let ssh_files = || files_below(&t.remote());
    for (repo_url, listing) in [
        (t.s3_repo(), &(|| t.s3_files()) as &dyn Fn() -> Vec<String>),
        (t.ssh_repo(), &ssh_files as &dyn Fn() -> Vec<String>),
    ] {
        let before = listing();
        assert_eq!(
            before.len(),
            3 * (kept["files"].as_array().unwrap().len() + 1)
        );
        let mut args = vec!["--repo", &repo_url, "--keep-last", "1", "--json"];
        let s3 = repo_url.starts_with("s3://");
        if s3 {
            args.extend(["--wal-archive", &wal]);
        }

        // The plan deletes nothing.
        let plan = t.run("pgb-prune", &args);
        assert_eq!(code(&plan), 0, "{}", stderr(&plan));
        let precs = records(&plan.stdout);
        let mut expect: Vec<(String, String)> = backups
            .iter()
            .map(|b| {
                let id = b["id"].as_str().unwrap().to_string();
                let act = if id == kept["id"] { "keep" } else { "delete" };
                (id, act.to_string())
            })
            .collect();
        expect.sort();
        assert_eq!(actions(&precs), expect, "{}", stderr(&plan));
        assert!(precs
            .iter()
            .filter(|r| r["type"] == "artifact")
            .all(|r| r["repo"] == json!(repo_url)));
        assert_eq!(listing(), before, "a plan deletes nothing");
        if s3 {
            let w: Vec<&Value> = precs.iter().filter(|r| r["type"] == "wal-expiry").collect();
            assert_eq!(w.len(), 1, "{w:?}");
            assert_eq!(w[0]["archive"], json!(wal));
            assert_eq!(w[0]["action"], "delete");
            assert!(w[0]["last"].as_str().unwrap() < start_kept.as_str());
        }

        // A lock held on the remote side: exit 3, naming it and how to
        // remove a stale one; nothing deleted.
        let lock_body = b"host=elsewhere pid=4242 time=2026-11-21T03:00:00Z\n";
        if s3 {
            t.s3.put("pg/.pgb.lock", lock_body);
        } else {
            fs::write(t.remote().join(".pgb.lock"), lock_body).unwrap();
        }
        let apply: Vec<&str> = args.iter().copied().chain(["--apply"]).collect();
        let held = t.run("pgb-prune", &apply);
        let err = stderr(&held);
        assert_eq!(code(&held), 3, "{err}");
        assert!(err.contains(&format!("{repo_url}/.pgb.lock")), "{err}");
        assert!(err.contains("held by another run"), "{err}");
        assert!(err.contains("pid=4242") && err.contains("stale"), "{err}");
        if s3 {
            assert!(
                err.contains(&format!("aws s3 rm {repo_url}/.pgb.lock")),
                "{err}"
            );
        } else {
            assert!(
                err.contains(&format!("rm {}/.pgb.lock", t.remote().display())),
                "{err}"
            );
        }
        assert!(held.stdout.is_empty());
        if s3 {
            assert_eq!(segment_names_of(&wal_keys()), segs_before);
            t.delete_key("pg/.pgb.lock");
            assert!(!t.s3.keys().contains(&"pg/.pgb.lock".to_string()));
        } else {
            fs::remove_file(t.remote().join(".pgb.lock")).unwrap();
        }
        assert_eq!(listing(), before);

        // A sidecar whose path leaves the repository stops the run before
        // anything is deleted.
        let evil = json!({
            "schema": "pgb.v1", "type": "artifact", "id": "evil", "kind": "logical",
            "cluster": "main", "created": "2020-01-01T00:00:00Z",
            "repo": "/x", "path": "main/../../victim",
            "files": [{"name": "victim", "size": 1, "sha256": "0".repeat(64), "blake3": "0".repeat(64)}],
            "copies": [], "verified": []
        });
        let evil_bytes = serde_json::to_vec_pretty(&evil).unwrap();
        if s3 {
            t.s3.put("pg/main/evil.pgb.json", &evil_bytes);
        } else {
            fs::create_dir_all(t.remote().join("main")).unwrap();
            fs::write(t.remote().join("main/evil.pgb.json"), &evil_bytes).unwrap();
        }
        let refused = t.run("pgb-prune", &apply);
        let err = stderr(&refused);
        assert_eq!(code(&refused), 2, "{err}");
        assert!(err.contains("escapes the repository"), "{err}");
        assert!(err.contains("nothing deleted"), "{err}");
        if s3 {
            t.delete_key("pg/main/evil.pgb.json");
        } else {
            fs::remove_file(t.remote().join("main/evil.pgb.json")).unwrap();
        }
        assert_eq!(listing(), before);

        // Applied: the older backups' objects and sidecars are gone, the
        // kept one is whole, and the lock was removed.
        let out = t.run("pgb-prune", &apply);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let arecs = records(&out.stdout);
        assert_eq!(actions(&arecs), expect);
        for r in arecs.iter().filter(|r| r["type"] == "artifact") {
            if r["prune"]["action"] == "delete" {
                assert_eq!(r["prune"]["deleted"], true, "{r}");
            }
        }
        let after = listing();
        assert!(!after.iter().any(|f| f.ends_with(".pgb.lock")), "{after:?}");
        for b in old {
            assert!(owned_by(&after, b).is_empty(), "{after:?}");
        }
        assert_eq!(owned_by(&after, kept).len(), after.len(), "{after:?}");
        for (rel, sha) in file_paths(kept) {
            let bytes = if s3 {
                t.s3.get(&format!("pg/{rel}")).unwrap()
            } else {
                fs::read(t.remote().join(&rel)).unwrap()
            };
            assert_eq!(sha256(&bytes), sha, "{rel}");
        }
        let side: Value = serde_json::from_slice(&if s3 {
            t.s3.get(&format!("pg/{}.pgb.json", kept["path"].as_str().unwrap()))
                .unwrap()
        } else {
            fs::read(
                t.remote()
                    .join(format!("{}.pgb.json", kept["path"].as_str().unwrap())),
            )
            .unwrap()
        })
        .unwrap();
        assert_eq!(side["id"], kept["id"]);
        if s3 {
            // WAL expiry: exactly the segments before the kept backup's
            // start are gone (with their checksum files); the history stays.
            let keys = wal_keys();
            let want: Vec<String> = segs_before
                .iter()
                .filter(|s| s.as_str() >= start_kept.as_str())
                .cloned()
                .collect();
            assert_eq!(segment_names_of(&keys), want);
            assert!(!keys
                .iter()
                .any(|k| k.ends_with(".sha256") && k.as_str() < start_kept.as_str()));
            assert!(keys.contains(&"00000002.history".to_string()));
            // (Made up for the expiry: a timeline the checker would look for.)
            t.delete_key("wal/00000002.history");
            let w: Vec<&Value> = arecs.iter().filter(|r| r["type"] == "wal-expiry").collect();
            assert_eq!(w[0]["deleted"], true, "{w:?}");
        }

        // Again: nothing more to delete.
        let again = t.run("pgb-prune", &apply);
        assert_eq!(code(&again), 0, "{}", stderr(&again));
        assert_eq!(listing(), after);
    }

    // The kept backup, read from the pruned remote repository, is still
    // restorable from the expired S3 archive, and the pruned ones are gone
    // from the check.
    let chk = t.run(
        "pgb-check-archive",
        &[&wal, "--repo", &t.s3_repo(), "--json"],
    );
    assert_eq!(
        code(&chk),
        0,
        "{}\n{}",
        stderr(&chk),
        String::from_utf8_lossy(&chk.stdout)
    );
    let recs = records(&chk.stdout);
    let judged: Vec<&Value> = recs.iter().filter(|r| r["type"] == "artifact").collect();
    assert_eq!(judged.len(), 1, "{recs:?}");
    assert_eq!(judged[0]["id"], kept["id"]);
    assert_eq!(judged[0]["archive_check"]["restorable"], true, "{recs:?}");
    // The SSH repository against the local archive (not expired): the same.
    let chk = t.run(
        "pgb-check-archive",
        &[a.dir.to_str().unwrap(), "--repo", &t.ssh_repo(), "--json"],
    );
    assert_eq!(code(&chk), 0, "{}", stderr(&chk));
    let recs = records(&chk.stdout);
    let judged: Vec<&Value> = recs.iter().filter(|r| r["type"] == "artifact").collect();
    assert_eq!(judged.len(), 1, "{recs:?}");
    assert_eq!(judged[0]["repo"], json!(t.ssh_repo()));
    assert_eq!(judged[0]["archive_check"]["restorable"], true, "{recs:?}");
}

/// Segment names (without .zst) among archive file names, sorted.
fn segment_names_of(names: &[String]) -> Vec<String> {
    let mut v: Vec<String> = names
        .iter()
        .map(|n| n.trim_end_matches(".zst").to_string())
        .filter(|n| n.len() == 24 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    v.sort();
    v
}
