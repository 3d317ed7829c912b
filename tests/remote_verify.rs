//! pgb-verify on a repository that lies in S3 (moto_server) or on an SSH
//! host (a real sshd), with no local original: checksums and test restores
//! read the copy there and the verdict lands in the sidecar beside it; a
//! damaged object fails naming its URL; a server that is down is an error
//! that records nothing.

use std::fs;
use std::process::{Command, Output};

use serde_json::Value;

use crate::servers::{Sshd, S3, S3_SECRET};
use crate::util::*;

/// The latest `verified` entry of `method` in a record.
fn latest<'a>(a: &'a Value, method: &str) -> Option<&'a Value> {
    a["verified"]
        .as_array()?
        .iter()
        .rev()
        .find(|v| v["method"] == method)
}

/// Flips one byte in the middle of `bytes`.
fn flip(mut bytes: Vec<u8>) -> Vec<u8> {
    let i = bytes.len() / 2;
    bytes[i] ^= 0x5a;
    bytes
}

#[test]
fn a_repository_in_s3_or_on_ssh_is_verified_and_test_restored_where_it_lies() {
    let c = Cluster::with(Options {
        major: Some(15),
        ..Default::default()
    });
    c.sql("postgres", "CREATE DATABASE appdb");
    c.sql(
        "appdb",
        "CREATE TABLE items (id int PRIMARY KEY, label text);
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 500) g;",
    );
    let repo = Scratch::new("repo");
    let recs = snapshot_records(&c, &repo.path, &["-d", "appdb", "--globals", "--physical"]);
    assert_eq!(recs.len(), 3);

    let (mut sshd, s3) = std::thread::scope(|s| {
        let a = s.spawn(Sshd::start);
        let b = s.spawn(S3::start);
        (a.join().unwrap(), b.join().unwrap())
    });
    let remote = Scratch::new("remote");
    let mut env = s3.env();
    env.push(("PGB_SSH_OPTIONS", sshd.client_options()));
    let ssh_repo = sshd.url(&remote.path);
    let s3_repo = format!("s3://{}/pg", s3.bucket);
    let (status, shipped, err) = pipe(
        Command::new(bin("pgb-ship"))
            .args(["--to", &ssh_repo, "--to", &s3_repo])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str()))),
        &recs,
    );
    assert_eq!(status, 0, "{err}");
    assert_eq!(shipped.len(), 3);
    // No local original: only the remote copies are left.
    fs::remove_dir_all(&repo.path).unwrap();

    let verify = |repo: &str, extra: &[&str]| -> Output {
        let o = c
            .tool("pgb-verify")
            .args(["--repo", repo, "--json"])
            .args(extra)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        assert!(!stderr(&o).contains(S3_SECRET), "secret leaked");
        o
    };
    let by_kind = |recs: &[Value], kind: &str| -> Value {
        recs.iter()
            .find(|r| r["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} record in {recs:?}"))
            .clone()
    };
    let physical = by_kind(&shipped, "physical");
    let logical = by_kind(&shipped, "logical");
    let globals = by_kind(&shipped, "globals");
    let s3_sidecar = |a: &Value| -> Value {
        let key = format!("pg/{}.pgb.json", a["path"].as_str().unwrap());
        serde_json::from_slice(&s3.get(&key).expect("sidecar in S3")).unwrap()
    };
    let ssh_sidecar_path = |a: &Value| {
        remote
            .path
            .join(format!("{}.pgb.json", a["path"].as_str().unwrap()))
    };
    let ssh_sidecar = |a: &Value| -> Value {
        serde_json::from_slice(&fs::read(ssh_sidecar_path(a)).unwrap()).unwrap()
    };

    // Every check, real test restores too, read from each remote copy alone.
    for (repo, sidecar) in [
        (&s3_repo, &s3_sidecar as &dyn Fn(&Value) -> Value),
        (&ssh_repo, &ssh_sidecar),
    ] {
        let o = verify(
            repo,
            &["--checksums", "--structure", "--manifest", "--restore"],
        );
        assert_eq!(code(&o), 0, "{repo}: {}", stderr(&o));
        let out = records(&o.stdout);
        assert_eq!(out.len(), 3, "{repo}: {out:?}");
        for a in [&physical, &logical, &globals] {
            let got = sidecar(a);
            let sums = latest(&got, "checksums").unwrap_or_else(|| panic!("{repo}: {got}"));
            assert_eq!(sums["ok"], true, "{repo}: {got}");
            // Both copies read back (the one read as --repo among them).
            let copies = sums["copies"].as_array().unwrap();
            assert_eq!(copies.len(), 2, "{repo}: {sums}");
            assert!(copies.iter().all(|c| c["ok"] == true), "{repo}: {sums}");
            assert_eq!(got["copies"].as_array().unwrap().len(), 2, "{repo}: {got}");
        }
        for (a, method) in [(&logical, "structure"), (&globals, "structure")] {
            let got = sidecar(a);
            let v = latest(&got, method).unwrap_or_else(|| panic!("{repo}: {got}"));
            assert_eq!(v["ok"], true, "{repo}: {v}");
        }
        let p = sidecar(&physical);
        let m = latest(&p, "manifest").unwrap_or_else(|| panic!("{repo}: {p}"));
        assert_eq!(m["ok"], true, "{repo}: {m}");
        assert!(m["files_checked"].as_u64().unwrap() > 100, "{m}");
        assert!(m["wal_pages_checked"].as_u64().unwrap() > 0, "{m}");
        let r = latest(&p, "restore").unwrap_or_else(|| panic!("{repo}: {p}"));
        assert_eq!(r["ok"], true, "{repo}: {r}");
        assert_eq!(r["manifest_checked"], true, "{repo}: {r}");
        assert!(r["databases_queried"].as_u64().unwrap() >= 2, "{r}");
        let l = sidecar(&logical);
        let r = latest(&l, "restore").unwrap_or_else(|| panic!("{repo}: {l}"));
        assert_eq!(r["ok"], true, "{repo}: {r}");
        assert_eq!(r["tables_compared"], 1, "{repo}: {r}");
        // The globals came from the same remote repository.
        assert_eq!(r["globals"], globals["id"], "{repo}: {r}");
    }
    // Evidence is only added: both runs' verdicts are in each sidecar.
    for got in [s3_sidecar(&logical), ssh_sidecar(&logical)] {
        let restores = got["verified"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["method"] == "restore" && v["ok"] == true)
            .count();
        assert_eq!(restores, 2, "{got}");
    }

    // A flipped byte in an S3 object: the check fails naming its URL.
    let name = physical["files"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|f| f["size"].as_u64())
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    let key = format!("pg/{}/{name}", physical["path"].as_str().unwrap());
    let good = s3.get(&key).unwrap();
    // Let the harness's unsigned requests overwrite the tool's object.
    let policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":"*","Action":["s3:GetObject","s3:PutObject"],"Resource":"arn:aws:s3:::{}/*"}}]}}"#,
        s3.bucket
    );
    let (st, body) = s3.http("PUT", &format!("/{}?policy", s3.bucket), policy.as_bytes());
    assert!(st < 300, "{}", String::from_utf8_lossy(&body));
    s3.put(&key, &flip(good.clone()));
    let o = verify(&s3_repo, &["--checksums", "--no-copies"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let url = format!("s3://{}/{key}", s3.bucket);
    assert!(stderr(&o).contains(&url), "{}", stderr(&o));
    let got = s3_sidecar(&physical);
    let sums = latest(&got, "checksums").unwrap();
    assert_eq!(sums["ok"], false, "{got}");
    assert!(
        sums["problems"][0].as_str().unwrap().contains(&url),
        "{sums}"
    );
    // The test restore streams the damaged object and fails too.
    let o = verify(&s3_repo, &["--restore", "--no-copies"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert_eq!(
        latest(&s3_sidecar(&physical), "restore").unwrap()["ok"],
        false
    );
    s3.put(&key, &good);

    // A flipped byte in the dump behind the ssh path.
    let dump = remote.path.join(logical["path"].as_str().unwrap());
    let good = fs::read(&dump).unwrap();
    fs::write(&dump, flip(good.clone())).unwrap();
    // The ssh settings given as --ssh-option this time.
    let d = sshd.dir.path().display();
    let o = c
        .tool("pgb-verify")
        .args(["--repo", &ssh_repo, "--json", "--checksums", "--no-copies"])
        .args(["--ssh-option", &format!("IdentityFile={d}/client_key")])
        .args(["--ssh-option", "IdentitiesOnly=yes"])
        .args([
            "--ssh-option",
            &format!("UserKnownHostsFile={d}/known_hosts"),
        ])
        .args(["--ssh-option", "StrictHostKeyChecking=yes"])
        .env_remove("PGB_SSH_OPTIONS")
        .output()
        .unwrap();
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let url = sshd.url(&dump);
    assert!(stderr(&o).contains(&url), "{}", stderr(&o));
    let got = ssh_sidecar(&logical);
    assert_eq!(latest(&got, "checksums").unwrap()["ok"], false, "{got}");
    fs::write(&dump, &good).unwrap();

    // Servers down: errors (exit 2), no record, no verdict written.
    let before: Vec<Vec<u8>> = [&physical, &logical, &globals]
        .iter()
        .map(|a| fs::read(ssh_sidecar_path(a)).unwrap())
        .collect();
    sshd.stop();
    let o = verify(&ssh_repo, &["--checksums", "--restore"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        o.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let after: Vec<Vec<u8>> = [&physical, &logical, &globals]
        .iter()
        .map(|a| fs::read(ssh_sidecar_path(a)).unwrap())
        .collect();
    assert!(
        before == after,
        "a sidecar changed while its server was down"
    );
    drop(s3);
    let o = verify(&s3_repo, &["--checksums"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        o.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(stderr(&o).contains(&s3_repo), "{}", stderr(&o));
}
