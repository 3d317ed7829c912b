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
