//! Human output: on a terminal every tool prints a short line per record
//! instead of JSON lines; `--json` forces the records there, and a pipe
//! always gets them (the record contract). The terminal is a real one,
//! made by util-linux `script`.

use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::check_archive::{archiving_cluster, make_segments, segment_names};
use crate::util::*;

/// Lines that are pgb records; panics on a line that is JSON but not one.
fn record_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a record ({e}): {l}")))
        .collect()
}

/// A human summary: no record on it, each line short, and the words
/// wanted in it.
fn assert_human(text: &str, want: &[&str]) {
    eprintln!("on the terminal:\n{text}");
    assert!(
        !text.contains("{\"schema\""),
        "records on a terminal:\n{text}"
    );
    assert!(!text.trim().is_empty(), "nothing on the terminal");
    for l in text.lines() {
        assert!(
            l.chars().count() <= 240,
            "a line of {} characters:\n{l}",
            l.chars().count()
        );
    }
    for w in want {
        assert!(text.contains(w), "{w:?} not in:\n{text}");
    }
}

fn lines_with<'a>(text: &'a str, word: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(word)).collect()
}

fn cmd(tool: &str, args: &[&str]) -> String {
    let mut line = sh_quote(bin(tool));
    for a in args {
        line.push(' ');
        line.push_str(&sh_quote(a));
    }
    line
}

fn piped(env: &[(&'static str, String)], tool: &str, args: &[&str]) -> (i32, Vec<Value>) {
    let out = Command::new(bin(tool))
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("PGB_PG_BINDIR", all_bindirs())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), records(&out.stdout))
}

#[test]
fn snapshot_verify_ship_prune_and_check_archive_summarise_on_a_terminal() {
    let a = archiving_cluster("");
    let c = &a.cluster;
    let env = c.env();
    make_segments(c, &a.dir, 2);
    let repo = a.scratch.path.join("repo");
    let r = repo.to_str().unwrap();

    // pgb-snapshot: one line per artifact taken.
    let (code, text, err) = on_terminal(
        &env,
        &cmd(
            "pgb-snapshot",
            &["--out", r, "-d", "postgres", "--globals", "--physical"],
        ),
    );
    assert_eq!(code, 0, "{err}");
    assert_human(&text, &["taken", "logical-postgres-", "physical-", "ago"]);
    assert_eq!(lines_with(&text, "taken").len(), 3, "{text}");
    let logical = lines_with(&text, "taken")
        .into_iter()
        .find(|l| l.contains("logical-postgres-"))
        .unwrap();
    assert!(
        logical.contains(" B  ") && logical.contains("counted"),
        "{logical}"
    );
    // A second dump of the database, a second later (ids are to the
    // second): --json gives records on the terminal.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (code, text, err) = on_terminal(
        &env,
        &cmd("pgb-snapshot", &["--out", r, "-d", "postgres", "--json"]),
    );
    assert_eq!(code, 0, "{err}");
    let recs = record_lines(&text);
    assert_eq!(recs.len(), 1, "{text}");
    assert_eq!(recs[0]["schema"], "pgb.v1");
    assert_eq!(recs[0]["type"], "artifact");

    // pgb-list (its table now formatted by common::human): a table on
    // the terminal, listings with --json.
    let (code, text, err) = on_terminal(&env, &cmd("pgb-list", &["--repo", r]));
    assert_eq!(code, 0, "{err}");
    assert_human(&text, &["ID", "AGE", "SIZE", "MiB", "never verified"]);
    let (code, text, _) = on_terminal(&env, &cmd("pgb-list", &["--repo", r, "--json"]));
    assert_eq!(code, 0);
    assert!(record_lines(&text).iter().all(|r| r["type"] == "listing"));

    // pgb-verify --repo: ok and the checks run.
    let (code, text, err) = on_terminal(&env, &cmd("pgb-verify", &["--repo", r]));
    assert_eq!(code, 0, "{err}\n{text}");
    assert_human(&text, &["checksums", "structure", "manifest"]);
    assert_eq!(lines_with(&text, "ok ").len(), 4, "{text}");
    let (code, text, _) = on_terminal(
        &env,
        &cmd("pgb-verify", &["--repo", r, "--checksums", "--json"]),
    );
    assert_eq!(code, 0);
    assert_eq!(record_lines(&text).len(), 4, "{text}");
    let (code, recs) = piped(&env, "pgb-verify", &["--repo", r, "--checksums"]);
    assert_eq!(code, 0);
    assert_eq!(recs.len(), 4);
    assert!(recs.iter().all(|r| r["type"] == "artifact"));

    // pgb-ship: the copies made, and the 3-2-1 verdict.
    let nas = a.scratch.owned_dir("nas");
    let to = format!("{}#media=nas", nas.display());
    let (code, text, err) = on_terminal(
        &env,
        &cmd(
            "pgb-ship",
            &["--repo", r, "--to", &to, "--require", "3-2-1"],
        ),
    );
    assert_eq!(code, 1, "3-2-1 is not met without an offsite copy: {err}");
    assert_human(&text, &["nas@onsite", "3-2-1 not met", "offsite"]);
    assert_eq!(lines_with(&text, "NOT MET").len(), 4, "{text}");
    // Shipping again finds the copies there.
    let (code, text, err) = on_terminal(&env, &cmd("pgb-ship", &["--repo", r, "--to", &to]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(lines_with(&text, "copied").len(), 4, "{text}");
    assert!(text.contains("(already there)"), "{text}");
    let (code, recs) = piped(&env, "pgb-ship", &["--repo", r, "--to", &to]);
    assert_eq!(code, 0);
    assert!(recs
        .iter()
        .all(|r| r["copies"].as_array().unwrap().len() == 1));
    // An error record from an earlier stage is a readable line too, and
    // still fails the run.
    let errs = a.scratch.path.join("errors.jsonl");
    let bad = json!({"schema": "pgb.v1", "type": "error", "tool": "pgb-snapshot",
        "message": "dump: appdb: pg_dump exited with status 1", "kind": "logical",
        "database": "appdb"});
    fs::write(&errs, format!("{bad}\n")).unwrap();
    let (code, text, _) = on_terminal(
        &env,
        &format!("{} < {}", cmd("pgb-ship", &["--to", &to]), sh_quote(&errs)),
    );
    assert_eq!(code, 2);
    assert_eq!(
        text.trim(),
        "FAILED     logical appdb  pgb-snapshot: dump: appdb: pg_dump exited with status 1"
    );
    let (code, text, _) = on_terminal(
        &env,
        &format!(
            "{} < {}",
            cmd("pgb-ship", &["--to", &to, "--json"]),
            sh_quote(&errs)
        ),
    );
    assert_eq!(code, 2);
    assert_eq!(record_lines(&text), vec![bad]);

    // pgb-prune: keep or delete, with the reasons, a short line each
    // (the records carry the whole artifact: thousands of characters).
    let (code, text, err) =
        on_terminal(&env, &cmd("pgb-prune", &["--repo", r, "--keep-last", "1"]));
    assert_eq!(code, 0, "{err}");
    assert_human(&text, &["keep", "delete", "last"]);
    let deletes = lines_with(&text, "delete ");
    assert_eq!(deletes.len(), 1, "{text}");
    assert!(deletes[0].contains("logical-postgres-"), "{text}");
    assert_eq!(lines_with(&text, "keep ").len(), 3, "{text}");
    let (code, recs) = piped(&env, "pgb-prune", &["--repo", r, "--keep-last", "1"]);
    assert_eq!(code, 0);
    assert_eq!(recs.len(), 4);
    let longest = recs.iter().map(|r| r.to_string().len()).max().unwrap();
    let shown = text.lines().map(str::len).max().unwrap();
    eprintln!("pgb-prune: longest record {longest} characters, longest summary line {shown}");
    assert!(shown * 4 < longest, "{shown} vs {longest}");
    let (_, text, _) = on_terminal(
        &env,
        &cmd("pgb-prune", &["--repo", r, "--keep-last", "1", "--json"]),
    );
    assert_eq!(record_lines(&text).len(), 4);
    // Nothing was deleted: no --apply.
    assert_eq!(
        piped(&env, "pgb-verify", &["--repo", r, "--checksums"])
            .1
            .len(),
        4
    );

    // pgb-check-archive: the archive's health and each backup's WAL.
    let ar = a.dir.to_str().unwrap();
    let (code, text, err) = on_terminal(&env, &cmd("pgb-check-archive", &[ar, "--repo", r]));
    assert_eq!(code, 0, "{err}\n{text}");
    assert_human(
        &text,
        &[
            "healthy",
            "segments on timeline 1",
            "restorable",
            "physical-",
        ],
    );
    let (code, text, _) = on_terminal(
        &env,
        &cmd("pgb-check-archive", &[ar, "--repo", r, "--json"]),
    );
    assert_eq!(code, 0);
    let recs = record_lines(&text);
    assert_eq!(recs.last().unwrap()["type"], "archive-summary", "{text}");
    // A hole: a problem line, exit 1.
    let names = segment_names(&a.dir);
    assert!(names.len() >= 3, "{names:?}");
    let gone = names[1].as_str();
    for s in ["", ".zst"] {
        let _ = fs::remove_file(a.dir.join(format!("{gone}{s}")));
    }
    let (code, text, _) = on_terminal(&env, &cmd("pgb-check-archive", &[ar]));
    assert_eq!(code, 1, "{text}");
    assert_human(&text, &["PROBLEM    gap: ", gone, "UNHEALTHY"]);
    let (code, recs) = piped(&env, "pgb-check-archive", &[ar]);
    assert_eq!(code, 1);
    assert!(recs.iter().any(|r| r["problem"] == "gap"));

    // pgb-verify on a damaged dump: FAILED, naming the check and the file.
    let dump = recs_of(&repo)
        .into_iter()
        .find(|v| v["kind"] == "logical")
        .unwrap();
    let file = repo.join(dump["path"].as_str().unwrap());
    let mut bytes = fs::read(&file).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 1;
    fs::write(&file, bytes).unwrap();
    let (code, text, _) = on_terminal(&env, &cmd("pgb-verify", &["--repo", r, "--checksums"]));
    assert_eq!(code, 1, "{text}");
    eprintln!("on the terminal:\n{text}");
    let failed = lines_with(&text, "FAILED");
    assert_eq!(failed.len(), 1, "{text}");
    assert!(
        failed[0].contains(dump["id"].as_str().unwrap()) && failed[0].contains("checksums: "),
        "{text}"
    );
}

/// The records of a repository's sidecars.
fn recs_of(repo: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    let mut stack = vec![repo.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(".pgb.json") {
                out.push(serde_json::from_slice(&fs::read(&p).unwrap()).unwrap());
            }
        }
    }
    out
}

#[test]
fn encrypt_restore_and_fixperms_summarise_on_a_terminal() {
    let c = Cluster::new();
    let env = c.env();
    let s = Scratch::new("terminal");
    c.sql(
        "postgres",
        "CREATE DATABASE appdb; \\c appdb\nCREATE TABLE t AS SELECT g FROM generate_series(1, 500) g;",
    );
    let repo = s.path.join("repo");
    let r = repo.to_str().unwrap();
    snapshot_records(&c, &repo, &["-d", "appdb", "--globals"]);

    // pgb-restore: a dry run's plan, step by step, then the restore with
    // its row counts compared.
    c.sql("postgres", "DROP DATABASE appdb");
    let args = ["--repo", r, "--database", "appdb", "--create-database"];
    let (code, text, err) = on_terminal(
        &env,
        &cmd("pgb-restore", &[&args[..], &["--dry-run"]].concat()),
    );
    assert_eq!(code, 0, "{err}");
    assert_human(
        &text,
        &["plan ", "globals-", "logical-appdb-", "\n           - "],
    );
    assert_eq!(lines_with(&text, "plan ").len(), 2, "{text}");
    let (code, text, err) = on_terminal(&env, &cmd("pgb-restore", &args));
    assert_eq!(code, 0, "{err}");
    assert_human(
        &text,
        &["into database appdb", "row counts of 1 table compared"],
    );
    assert_eq!(lines_with(&text, "restored ").len(), 2, "{text}");
    assert_eq!(c.sql("appdb", "SELECT count(*) FROM t"), "500");

    // pgb-encrypt: encrypted for its recipient, then unchanged.
    let key = s.path.join("key.txt");
    run(Command::new("age-keygen").arg("-o").arg(&key));
    let recipient = fs::read_to_string(&key)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("# public key: ").map(String::from))
        .unwrap();
    let enc = ["--repo", r, "-r", recipient.as_str()];
    let (code, text, err) = on_terminal(&env, &cmd("pgb-encrypt", &enc));
    assert_eq!(code, 0, "{err}");
    assert_human(&text, &["age for 1 recipient"]);
    assert_eq!(lines_with(&text, "encrypted ").len(), 2, "{text}");
    let (code, text, err) = on_terminal(&env, &cmd("pgb-encrypt", &enc));
    assert_eq!(code, 0, "{err}");
    assert_eq!(lines_with(&text, "unchanged ").len(), 2, "{text}");
    let (code, text, _) = on_terminal(&env, &cmd("pgb-encrypt", &[&enc[..], &["--json"]].concat()));
    assert_eq!(code, 0);
    assert!(record_lines(&text)
        .iter()
        .all(|r| r["encryption"]["scheme"] == "age"));

    // pgb-fixperms: each change, then how many.
    if !is_root() {
        eprintln!("pgb-fixperms on a terminal: skipped: needs root");
        return;
    }
    let (code, text, err) = on_terminal(
        &env,
        &cmd(
            "pgb-fixperms",
            &["--repo", r, "--owner", "postgres", "--check"],
        ),
    );
    assert_eq!(code, 1, "{err}");
    assert_human(&text, &["owner      root:root -> postgres:postgres  ", r]);
    let n = lines_with(&text, "owner ").len();
    assert!(n >= 4, "{text}");
    assert_eq!(text.lines().last().unwrap(), format!("{n} changes needed"));
    let (code, text, _) = on_terminal(
        &env,
        &cmd(
            "pgb-fixperms",
            &["--repo", r, "--owner", "postgres", "--check", "--json"],
        ),
    );
    assert_eq!(code, 1);
    let recs = record_lines(&text);
    assert_eq!(recs.len(), n);
    assert!(recs.iter().all(|r| r["type"] == "fixperms"));
    let (code, text, _) = on_terminal(
        &env,
        &cmd("pgb-fixperms", &["--repo", r, "--owner", "postgres"]),
    );
    assert_eq!(code, 0);
    assert_eq!(text.lines().last().unwrap(), format!("{n} changes made"));
    let (code, text, _) = on_terminal(
        &env,
        &cmd("pgb-fixperms", &["--repo", r, "--owner", "postgres"]),
    );
    assert_eq!(code, 0);
    assert_eq!(text.trim(), "nothing to change");
}
