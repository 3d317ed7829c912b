//! What every tool that reads records does with the first mistakes of a
//! first day: a mistyped or empty `--repo`, no input at all on a terminal;
//! and progress drawn only on a terminal.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::util::*;

/// The record-reading tools, each with the flags it needs to get as far as
/// reading its input.
fn readers(scratch: &Path) -> Vec<(&'static str, Vec<String>)> {
    let key = String::from_utf8(run(&mut Command::new("age-keygen")).stdout).unwrap();
    let recipient = key
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .expect("age-keygen prints the public key")
        .to_string();
    let s = |p: &str| scratch.join(p).display().to_string();
    vec![
        ("pgb-encrypt", vec!["-r".into(), recipient]),
        (
            "pgb-ship",
            vec!["--to".into(), s("nas"), "--require".into(), "3-2-1".into()],
        ),
        ("pgb-verify", vec![]),
        ("pgb-prune", vec!["--keep-daily".into(), "7".into()]),
        ("pgb-restore", vec!["-d".into(), "appdb_copy".into()]),
        ("pgb-check-archive", vec![s("archive"), "--backups".into()]),
    ]
}

#[test]
fn an_empty_or_mistyped_repository_is_said_and_exits_2() {
    let s = tempfile::tempdir().unwrap();
    let empty = s.path().join("repo");
    std::fs::create_dir_all(empty.join("main/logical")).unwrap();
    std::fs::create_dir(s.path().join("archive")).unwrap();
    let typo = s.path().join("rpeo");
    for (tool, mut args) in readers(s.path()) {
        // --repo stands for --backups (stdin).
        args.retain(|a| a != "--backups");
        for (repo, want) in [(&empty, "nothing there"), (&typo, "does not exist")] {
            let o = Command::new(bin(tool))
                .args(&args)
                .arg("--repo")
                .arg(repo)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(2), "{tool} --repo {repo:?}: {err}");
            assert!(
                err.contains(&format!("{tool}: repository {}: {want}", repo.display())),
                "{tool} --repo {repo:?}: {err}"
            );
            assert!(o.stdout.is_empty(), "{tool}: {:?}", o.stdout);
        }
    }
    assert!(!s.path().join("nas").exists(), "nothing shipped anywhere");
}

/// Runs `cmd` (a shell command line) under `script`, so that its stdin,
/// stdout and stderr are a terminal: its exit code and what it printed.
pub fn on_terminal(cmd: &str, env: &[(&str, &str)]) -> (i32, String) {
    let mut c = Command::new("script");
    c.args(["-qec", cmd, "/dev/null"])
        .stdin(Stdio::null())
        .env_remove("NO_COLOR")
        .env("TERM", "xterm");
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

#[test]
fn records_are_not_awaited_from_a_terminal() {
    let s = tempfile::tempdir().unwrap();
    std::fs::create_dir(s.path().join("archive")).unwrap();
    for (tool, args) in readers(s.path()) {
        let cmd = format!("{} {}", bin(tool).display(), args.join(" "));
        let started = std::time::Instant::now();
        let (code, text) = on_terminal(&cmd, &[]);
        assert_eq!(code, 2, "{tool}: {text}");
        assert!(
            text.contains(&format!("{tool}: usage: no records"))
                && text.contains("give --repo DIR")
                && text.contains(&format!("| {tool}")),
            "{tool}: {text}"
        );
        assert!(started.elapsed().as_secs() < 10, "{tool} waited");
    }
}

/// A repository holding one logical "dump" of `size` random bytes.
fn one_artifact_repo(repo: &Path, size: usize) {
    let rel = "main/logical/app/app-20261121T101500Z.dump";
    let path = repo.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut bytes = vec![0u8; size];
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for chunk in bytes.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(&path, &bytes).unwrap();
    let (sha256, blake3) = stock_sums(&path);
    let rec = serde_json::json!({
        "schema": "pgb.v1", "type": "artifact", "id": "logical-app-20261121T101500Z",
        "kind": "logical", "cluster": "main", "database": "app",
        "created": "2026-11-21T10:15:00+01:00",
        "repo": repo.display().to_string(), "path": rel,
        "files": [{"name": "app-20261121T101500Z.dump", "size": size,
                   "sha256": sha256, "blake3": blake3}],
        "copies": [], "verified": []
    });
    std::fs::write(
        repo.join(format!("{rel}.pgb.json")),
        serde_json::to_vec_pretty(&rec).unwrap(),
    )
    .unwrap();
}

#[test]
fn progress_is_drawn_on_a_terminal_only() {
    let s = tempfile::tempdir().unwrap();
    let repo = s.path().join("repo");
    one_artifact_repo(&repo, 16 << 20);
    let nas = s.path().join("nas");
    std::fs::create_dir(&nas).unwrap();
    let (_, recipient) = readers(s.path()).remove(0);
    let r = repo.display();
    let out = s.path().join("one.age");
    let out = out.display();
    let runs = [
        (
            "pgb-ship",
            format!("--repo {r} --to {}", nas.display()),
            "copying [",
        ),
        (
            "pgb-verify",
            format!("--repo {r} --checksums"),
            ": checksums [",
        ),
        (
            "pgb-encrypt",
            format!(
                "-r {} --file {r}/main/logical/app/app-20261121T101500Z.dump -o {out}",
                recipient[1]
            ),
            ": encrypt /",
        ),
    ];
    for (tool, args, label) in runs {
        let cmd = format!("rm -f {out}; {} {args}", bin(tool).display());
        // On a terminal: the label, a bar, the total, percent and ETA.
        let (code, text) = on_terminal(&cmd, &[]);
        assert_eq!(code, 0, "{tool}: {text}");
        assert!(
            text.contains(&format!("{tool}: ")) && text.contains(label),
            "{tool}: no progress line in {text:?}"
        );
        // The total: the file's size, twice for verify (the file and the
        // copy ship made).
        let total = match tool {
            "pgb-verify" => "/32.00 MiB",
            _ => "/16.00 MiB",
        };
        for want in [total, "%", "ETA"] {
            assert!(text.contains(want), "{tool}: {want:?} not in {text:?}");
        }
        // Asked not to: nothing drawn.
        for env in [("NO_COLOR", "1"), ("TERM", "dumb")] {
            let (code, text) = on_terminal(&cmd, &[env]);
            assert_eq!(code, 0, "{tool} {env:?}: {text}");
            assert!(!text.contains("ETA"), "{tool} {env:?}: {text:?}");
        }
        // stderr to a file: nothing but messages, no progress.
        let err = s.path().join(format!("{tool}.err"));
        let o = Command::new("sh")
            .args(["-c", &format!("{cmd} 2>{} >/dev/null", err.display())])
            .stdin(Stdio::null())
            .env_remove("NO_COLOR")
            .status()
            .unwrap();
        assert!(o.success(), "{tool}");
        let text = std::fs::read_to_string(&err).unwrap();
        assert!(
            !text.contains('\r') && !text.contains("ETA") && !text.contains('%'),
            "{tool}: {text:?}"
        );
    }
}

#[test]
fn snapshot_and_restore_draw_progress_with_their_totals() {
    let c = Cluster::new();
    c.sql("postgres", "CREATE DATABASE app");
    c.sql(
        "app",
        "CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 200000) g",
    );
    let repo = c.scratch.owned_dir("repo");
    let mut env: Vec<(&str, String)> = c.env();
    env.push(("PGB_PG_BINDIR", all_bindirs()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    // A dump: pg_database_size as the estimate.
    let (code, text) = on_terminal(
        &format!(
            "{} -d app --cluster main -o {}",
            bin("pgb-snapshot").display(),
            repo.display()
        ),
        &env,
    );
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("pgb-snapshot: app [") && text.contains(" of ~") && text.contains('%'),
        "no estimated progress in {text:?}"
    );

    // Its restore: the recorded size, then pg_restore's elapsed time.
    let (code, text) = on_terminal(
        &format!(
            "{} --repo {} --database app -d app_copy --create-database",
            bin("pgb-restore").display(),
            repo.display()
        ),
        &env,
    );
    assert_eq!(code, 0, "{text}");
    for want in [": read and check [", "%", "ETA", "pg_restore into app_copy"] {
        assert!(text.contains(want), "{want:?} not in {text:?}");
    }
    assert_eq!(c.sql("app_copy", "SELECT count(*) FROM t"), "200000");
}
