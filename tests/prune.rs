//! pgb-prune: golden retention results over two years of synthetic
//! artifacts, and real repositories made by pgb-snapshot: apply, lock,
//! refusals, malformed input, WAL expiry checked by pgb-check-archive.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use chrono::{DateTime, Duration as Days, FixedOffset, NaiveDate, TimeZone, Utc};
use serde_json::{json, Value};

use crate::check_archive::{archiving_cluster, make_segments, segment_names};
use crate::util::*;

fn prune(args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = Command::new(bin("pgb-prune"));
    c.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

// ---------------------------------------------------------------- golden

/// Writes one synthetic artifact (a 1-byte file and its sidecar).
fn put(repo: &Path, db: &str, id: &str, created: DateTime<FixedOffset>, verified: bool) {
    let rel = format!("main/logical/{db}/{id}.dump.zst");
    let p = repo.join(&rel);
    fs::write(&p, b"x").unwrap();
    let when = created.to_rfc3339();
    let rec = json!({
        "schema": "pgb.v1", "type": "artifact", "id": id, "kind": "logical",
        "cluster": "main", "database": db, "created": created.to_rfc3339(),
        "repo": repo.display().to_string(), "path": rel,
        "files": [{"name": format!("{id}.dump.zst"), "size": 1,
                   "sha256": "0".repeat(64), "blake3": "0".repeat(64)}],
        "copies": [],
        "verified": if verified { json!([{"method": "checksums", "ok": true, "when": when}]) } else { json!([]) },
    });
    fs::write(
        repo.join(format!("{rel}.pgb.json")),
        serde_json::to_vec_pretty(&rec).unwrap(),
    )
    .unwrap();
}

/// Central European offsets: +02:00 in summer time, +01:00 otherwise.
fn cet(d: NaiveDate) -> FixedOffset {
    let summer = |a: (i32, u32, u32), b: (i32, u32, u32)| {
        d >= NaiveDate::from_ymd_opt(a.0, a.1, a.2).unwrap()
            && d < NaiveDate::from_ymd_opt(b.0, b.1, b.2).unwrap()
    };
    if summer((2025, 3, 30), (2025, 10, 26)) || summer((2026, 3, 29), (2026, 10, 25)) {
        FixedOffset::east_opt(7200).unwrap()
    } else {
        FixedOffset::east_opt(3600).unwrap()
    }
}

/// Two years of artifacts, 2024-11-21 to 2026-11-20, in one repository:
/// - `daily`: one a day at 00:30 local Central European time (so 23:30 or
///   22:30 UTC the day before), days 2025-12-24..26 and 2026-11-15..17
///   missing, Sundays verified;
/// - `hourly`: one every hour on the hour, UTC, midnights verified.
fn synthetic_repo(repo: &Path) {
    for db in ["daily", "hourly"] {
        fs::create_dir_all(repo.join(format!("main/logical/{db}"))).unwrap();
    }
    let first = NaiveDate::from_ymd_opt(2024, 11, 21).unwrap();
    let last = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    let gaps = [
        (2025, 12, 24),
        (2025, 12, 25),
        (2025, 12, 26),
        (2026, 11, 15),
        (2026, 11, 16),
        (2026, 11, 17),
    ]
    .map(|(y, m, d)| NaiveDate::from_ymd_opt(y, m, d).unwrap());
    let mut d = first;
    while d <= last {
        if !gaps.contains(&d) {
            let off = cet(d);
            let t = off
                .from_local_datetime(&d.and_hms_opt(0, 30, 0).unwrap())
                .unwrap();
            let sunday = d.format("%u").to_string() == "7";
            put(
                repo,
                "daily",
                &format!("daily-{}", d.format("%Y%m%d")),
                t,
                sunday,
            );
        }
        for h in 0..24 {
            let t = Utc
                .from_utc_datetime(&d.and_hms_opt(h, 0, 0).unwrap())
                .fixed_offset();
            put(
                repo,
                "hourly",
                &format!("hourly-{}T{h:02}", d.format("%Y%m%d")),
                t,
                h == 0,
            );
        }
        d += Days::days(1);
    }
}

const GOLDEN_NOW: &str = "2026-11-21T06:00:00Z";

/// The policies with a golden result each (tests/golden/prune/NAME.txt).
const GOLDEN: &[(&str, &[&str])] = &[
    (
        "gfs",
        &[
            "--keep-daily",
            "7",
            "--keep-weekly",
            "4",
            "--keep-monthly",
            "12",
            "--keep-yearly",
            "3",
        ],
    ),
    (
        "last-within",
        &["--keep-last", "3", "--keep-within", "1m10d"],
    ),
    ("hourly", &["--keep-hourly", "36", "--keep-daily", "3"]),
    ("oldest", &["--keep-monthly", "36"]),
    ("weekly", &["--keep-weekly", "60"]),
    (
        "verified",
        &[
            "--require-verified",
            "--keep-daily",
            "4",
            "--keep-monthly",
            "3",
        ],
    ),
];

/// The kept ids per group, newest first, with their reasons, as text.
fn golden_text(name: &str, policy: &[&str], recs: &[Value]) -> String {
    let mut groups: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for r in recs {
        groups
            .entry(r["database"].as_str().unwrap().to_string())
            .or_default()
            .push(r);
    }
    let mut s = format!(
        "# pgb-prune golden result '{name}': pgb-prune --repo R --now {GOLDEN_NOW} {}\n\
         # over tests/prune.rs synthetic_repo (two years of daily and hourly artifacts).\n\
         # Regenerate with PGB_UPDATE_GOLDEN=1 only after checking by hand.\n",
        policy.join(" ")
    );
    for (db, mut rs) in groups {
        rs.sort_by_cached_key(|r| {
            std::cmp::Reverse(DateTime::parse_from_rfc3339(r["created"].as_str().unwrap()).unwrap())
        });
        let kept: Vec<&&Value> = rs
            .iter()
            .filter(|r| r["prune"]["action"] == "keep")
            .collect();
        s.push_str(&format!("\n[{db}] kept {} of {}\n", kept.len(), rs.len()));
        for r in kept {
            let reasons: Vec<&str> = r["prune"]["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap())
                .collect();
            s.push_str(&format!(
                "{} {}  {}\n",
                r["id"].as_str().unwrap(),
                r["created"].as_str().unwrap(),
                reasons.join("; ")
            ));
        }
    }
    s
}

#[test]
fn golden_policies_over_two_years() {
    let scratch = Scratch::new("prune-golden");
    let repo = scratch.path.join("repo");
    synthetic_repo(&repo);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/prune");
    let update = std::env::var_os("PGB_UPDATE_GOLDEN").is_some();
    let mut stale = Vec::new();
    // Two runs at a time (each reads 18,244 sidecars).
    let outs: Vec<Output> = GOLDEN
        .chunks(2)
        .flat_map(|pair| {
            std::thread::scope(|s| {
                let hs: Vec<_> = pair
                    .iter()
                    .map(|(_, policy)| {
                        let repo = &repo;
                        s.spawn(move || {
                            let mut args =
                                vec!["--repo", repo.to_str().unwrap(), "--now", GOLDEN_NOW];
                            args.extend_from_slice(policy);
                            prune(&args, None)
                        })
                    })
                    .collect();
                hs.into_iter()
                    .map(|h| h.join().unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for ((name, policy), out) in GOLDEN.iter().zip(outs) {
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
        let recs = records(&out.stdout);
        assert_eq!(
            recs.len(),
            730 - 6 + 730 * 24,
            "{name}: one record per artifact"
        );
        let text = golden_text(name, policy, &recs);
        let path = dir.join(format!("{name}.txt"));
        if update {
            fs::create_dir_all(&dir).unwrap();
            fs::write(&path, &text).unwrap();
        } else if fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(name.to_string());
        }
    }
    // Nothing was deleted by the dry runs.
    assert_eq!(files_below(&repo).len(), 2 * (730 - 6 + 730 * 24));
    assert!(
        stale.is_empty(),
        "golden results differ for {stale:?} (got: see a fresh run with PGB_UPDATE_GOLDEN=1 and git diff)"
    );
}

/// Spot checks of the golden files, worked out by hand from restic's rules
/// (internal/data/snapshot_policy.go), so the files cannot drift unnoticed.
#[test]
fn golden_results_hold_against_restic_rules_checked_by_hand() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/prune");
    let read = |n: &str| fs::read_to_string(dir.join(format!("{n}.txt"))).unwrap();
    let has = |text: &str, line: &str| {
        assert!(
            text.lines().any(|l| l.starts_with(line)),
            "missing {line:?}"
        )
    };
    let gfs = read("gfs");
    // Daily 7 over days that have artifacts: Nov 15..17 are missing, so
    // 20, 19, 18, 14, 13, 12, 11; the 10th would be an eighth.
    for day in ["20", "19", "18", "14", "13", "12", "11"] {
        has(&gfs, &format!("daily-202611{day} "));
    }
    assert!(!gfs.contains("daily-20261110 "));
    // ISO week 2026-W46 is Nov 9..15; the 15th is missing, the 14th is
    // its newest. W45 is Nov 2..8.
    has(
        &gfs,
        "daily-20261114 2026-11-14T00:30:00+01:00  daily 2026-11-14; weekly 2026-W46",
    );
    has(
        &gfs,
        "daily-20261108 2026-11-08T00:30:00+01:00  weekly 2026-W45; newest verified",
    );
    // Own offset: 2026-11-01T00:30+01:00 is Oct 31 in UTC, but November in
    // its own offset, so October's newest is Oct 31.
    has(
        &gfs,
        "daily-20261031 2026-10-31T00:30:00+01:00  monthly 2026-10",
    );
    has(
        &gfs,
        "daily-20260930 2026-09-30T00:30:00+02:00  monthly 2026-09",
    );
    // Yearly 3 is used up by 2026, 2025 and 2024's newest (Dec 31): no
    // oldest rule.
    has(
        &gfs,
        "daily-20241231 2024-12-31T00:30:00+01:00  yearly 2024",
    );
    assert!(!gfs.contains("daily-20241121 "));
    // hourly: midnight of the 20th is kept only as the newest verified.
    has(
        &gfs,
        "hourly-20261120T00 2026-11-20T00:00:00Z  newest verified",
    );
    assert!(gfs.contains("[daily] kept 21 of 724") && gfs.contains("[hourly] kept 22 of 17520"));

    let oldest = read("oldest");
    // 25 months have artifacts; monthly 36 is not used up at the oldest
    // artifact, which is kept too (restic >= 0.16).
    has(
        &oldest,
        "daily-20241130 2024-11-30T00:30:00+01:00  monthly 2024-11",
    );
    has(
        &oldest,
        "daily-20241121 2024-11-21T00:30:00+01:00  oldest monthly 2024-11",
    );
    assert!(
        oldest.contains("[daily] kept 27 of 724"),
        "25 months, the oldest, the newest verified"
    );

    let weekly = read("weekly");
    // 2025-12-29 (Mon) .. 2026-01-04 (Sun) is ISO week 2026-W01: Dec 31
    // belongs to it and is not its newest.
    has(
        &weekly,
        "daily-20260104 2026-01-04T00:30:00+01:00  weekly 2026-W01",
    );
    has(
        &weekly,
        "daily-20251228 2025-12-28T00:30:00+01:00  weekly 2025-W52",
    );
    assert!(!weekly.contains("daily-20251231 "));

    let hourly = read("hourly");
    // 36 hours: the 20th's 24 and the 19th's 12..23; daily 3 adds the
    // 18th's 23:00.
    assert!(hourly.contains("[hourly] kept 37 of 17520"));
    has(
        &hourly,
        "hourly-20261120T23 2026-11-20T23:00:00Z  hourly 2026-11-20T23; daily 2026-11-20",
    );
    has(
        &hourly,
        "hourly-20261119T12 2026-11-19T12:00:00Z  hourly 2026-11-19T12",
    );
    has(
        &hourly,
        "hourly-20261118T23 2026-11-18T23:00:00Z  daily 2026-11-18",
    );
    assert!(!hourly.contains("hourly-20261119T11 "));

    let within = read("last-within");
    // 1m10d before 2026-11-20T00:30+01:00 is 2026-10-10T00:30+01:00
    // (Go AddDate, in the newest's offset); strictly after it: Oct 10 at
    // 00:30+02:00 is an hour earlier, Oct 11 is the oldest kept.
    has(
        &within,
        "daily-20261011 2026-10-11T00:30:00+02:00  within 1m10d of the newest",
    );
    assert!(!within.contains("daily-20261010 "));
    assert!(
        within.contains("[daily] kept 38 of 724") && within.contains("[hourly] kept 984 of 17520")
    );

    let verified = read("verified");
    // Only Sundays count in [daily]: Nov 15 is missing, so Nov 8 is the
    // newest counted; the unverified days after it are kept, older ones go.
    has(&verified, "daily-20261120 2026-11-20T00:30:00+01:00  not verified: not counted; kept, newer than the newest counted artifact");
    has(&verified, "daily-20261108 2026-11-08T00:30:00+01:00  daily 2026-11-08; monthly 2026-11; newest verified");
    has(
        &verified,
        "daily-20260927 2026-09-27T00:30:00+02:00  monthly 2026-09",
    );
    assert!(!verified.contains("daily-20261107 "));
}

// ------------------------------------------------------ real repositories

/// Sets `created` in an artifact's sidecar (the input prune reads).
fn set_created(rec: &Value, created: &str) -> Value {
    let side = PathBuf::from(format!(
        "{}/{}.pgb.json",
        rec["repo"].as_str().unwrap(),
        rec["path"].as_str().unwrap()
    ));
    let mut v: Value = serde_json::from_slice(&fs::read(&side).unwrap()).unwrap();
    v["created"] = created.into();
    fs::write(&side, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    v
}

/// A repository with three logical dumps of `postgres` and three globals,
/// dated 2026-11-18, -19 and -20.
fn three_days(c: &Cluster, repo: &Path) -> Vec<Value> {
    let mut all = Vec::new();
    for (n, day) in ["2026-11-18", "2026-11-19", "2026-11-20"]
        .iter()
        .enumerate()
    {
        if n > 0 {
            // Names carry the UTC second.
            std::thread::sleep(Duration::from_millis(1100));
        }
        for r in snapshot_records(c, repo, &["-d", "postgres", "--globals"]) {
            all.push(set_created(&r, &format!("{day}T02:00:00Z")));
        }
    }
    all
}

fn actions(recs: &[Value]) -> BTreeMap<String, String> {
    recs.iter()
        .filter(|r| r["type"] == "artifact")
        .map(|r| {
            (
                r["path"].as_str().unwrap().to_string(),
                r["prune"]["action"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn apply_removes_exactly_the_planned_files() {
    let c = Cluster::new();
    let repo = Scratch::new("prune-repo");
    let all = three_days(&c, &repo.path);
    let before = files_below(&repo.path);
    let r = repo.path.to_str().unwrap();
    let now = ["--now", "2026-11-21T03:00:00Z"];
    let plan = prune(
        &[&["--repo", r, "--keep-last", "2"][..], &now].concat(),
        None,
    );
    assert_eq!(plan.status.code(), Some(0), "{}", stderr(&plan));
    let planned = actions(&records(&plan.stdout));
    assert_eq!(planned.len(), 6);
    let doomed: Vec<&String> = planned
        .iter()
        .filter(|(_, a)| *a == "delete")
        .map(|(p, _)| p)
        .collect();
    // The oldest dump and the oldest globals.
    let oldest: Vec<String> = all
        .iter()
        .filter(|v| v["created"] == "2026-11-18T02:00:00Z")
        .map(|v| v["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(doomed.len(), 2);
    for p in &oldest {
        assert!(doomed.contains(&p), "{p} planned for deletion");
    }
    assert_eq!(files_below(&repo.path), before, "a plan deletes nothing");

    let applied = prune(
        &[&["--repo", r, "--keep-last", "2", "--apply"][..], &now].concat(),
        None,
    );
    assert_eq!(applied.status.code(), Some(0), "{}", stderr(&applied));
    let recs = records(&applied.stdout);
    assert_eq!(actions(&recs), planned, "apply did what the plan said");
    for r in recs.iter().filter(|r| r["prune"]["action"] == "delete") {
        assert_eq!(r["prune"]["deleted"], true);
    }
    let mut expect: Vec<String> = before
        .iter()
        .filter(|f| {
            !oldest
                .iter()
                .any(|p| *f == p || **f == format!("{p}.pgb.json"))
        })
        .cloned()
        .collect();
    expect.sort();
    assert_eq!(files_below(&repo.path), expect);
    assert_eq!(before.len() - expect.len(), 4, "two files and two sidecars");

    // Applying again deletes nothing more.
    let again = prune(
        &[&["--repo", r, "--keep-last", "2", "--apply"][..], &now].concat(),
        None,
    );
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert!(actions(&records(&again.stdout))
        .values()
        .all(|a| a == "keep"));
    assert_eq!(files_below(&repo.path), expect);

    // An empty policy deletes nothing, even with --apply.
    let empty = prune(&[&["--repo", r, "--apply"][..], &now].concat(), None);
    assert_eq!(empty.status.code(), Some(0));
    assert!(stderr(&empty).contains("policy is empty"));
    assert_eq!(files_below(&repo.path), expect);
    // Nor does empty input.
    let none = prune(&["--keep-last", "1", "--apply"], Some(""));
    assert_eq!(none.status.code(), Some(0), "{}", stderr(&none));
    assert!(none.stdout.is_empty());
}

#[test]
fn a_held_lock_means_exit_3_or_a_wait() {
    let c = Cluster::new();
    let repo = Scratch::new("prune-lock");
    three_days(&c, &repo.path);
    let before = files_below(&repo.path);
    let r = repo.path.to_str().unwrap();
    let args = [
        "--repo",
        r,
        "--keep-last",
        "1",
        "--apply",
        "--now",
        "2026-11-21T03:00:00Z",
    ];
    let lock = pgb_common::RepoLock::acquire(&repo.path, None).unwrap();
    let out = prune(&args, None);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("held by another run"),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty());
    assert_eq!(files_below(&repo.path), before);
    // With --lock-wait, prune waits for the holder to let go.
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        drop(lock);
    });
    let waited = prune(&[&args[..], &["--lock-wait", "60"]].concat(), None);
    releaser.join().unwrap();
    assert_eq!(waited.status.code(), Some(0), "{}", stderr(&waited));
    assert_eq!(before.len() - files_below(&repo.path).len(), 8);
}

/// One artifact record per line, from the sidecars.
fn stdin_of(recs: &[Value]) -> String {
    recs.iter().map(|r| format!("{r}\n")).collect()
}

#[test]
fn paths_leaving_the_repository_are_refused_before_any_delete() {
    let c = Cluster::new();
    let repo = Scratch::new("prune-escape");
    let all = three_days(&c, &repo.path);
    let before = files_below(&repo.path);
    let outside = Scratch::new("prune-outside");
    fs::write(outside.path.join("victim"), b"x").unwrap();
    // The cluster's directory, as pgb-snapshot named it.
    let cl = all[0]["path"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    // A symlinked directory inside the repository pointing outside.
    std::os::unix::fs::symlink(&outside.path, repo.path.join(&cl).join("escape")).unwrap();
    let mk = |path: &str| {
        let mut v = all[0].clone();
        v["path"] = path.into();
        v["id"] = format!("evil-{}", path.len()).into();
        v["created"] = "2020-01-01T00:00:00Z".into();
        v["files"][0]["size"] = 1.into();
        v
    };
    for bad in [
        "../prune-outside/victim".to_string(),
        format!("{cl}/escape/victim"),
        format!("{}/victim", outside.path.display()),
        format!("{cl}/./logical"),
    ] {
        let mut input = all.clone();
        input.push(mk(&bad));
        let out = prune(
            &[
                "--keep-last",
                "1",
                "--apply",
                "--now",
                "2026-11-21T03:00:00Z",
            ],
            Some(&stdin_of(&input)),
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        assert!(
            err.contains("line 7") && err.contains("nothing deleted"),
            "{bad}: {err}"
        );
        assert!(out.stdout.is_empty(), "{bad}: no plan printed");
        assert_eq!(files_below(&repo.path), before, "{bad}");
        assert!(outside.path.join("victim").exists());
    }
    // A record whose sidecar does not exist is no artifact of the
    // repository: left alone whatever the policy.
    let mut stray = all[0].clone();
    stray["path"] = format!("{cl}/stray.dump").into();
    stray["id"] = "stray".into();
    stray["created"] = "2020-01-01T00:00:00Z".into();
    fs::write(
        repo.path.join(&cl).join("stray.dump"),
        vec![0u8; stray["files"][0]["size"].as_u64().unwrap() as usize],
    )
    .unwrap();
    let mut input = all.clone();
    input.push(stray);
    let out = prune(
        &[
            "--keep-last",
            "1",
            "--apply",
            "--now",
            "2026-11-21T03:00:00Z",
        ],
        Some(&stdin_of(&input)),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let recs = records(&out.stdout);
    let s = recs.iter().find(|r| r["id"] == "stray").unwrap();
    assert_eq!(s["prune"]["action"], "keep");
    assert!(repo.path.join(&cl).join("stray.dump").exists());
}

#[test]
fn a_malformed_line_aborts_before_any_delete_naming_it() {
    let c = Cluster::new();
    let repo = Scratch::new("prune-malformed");
    let all = three_days(&c, &repo.path);
    let before = files_below(&repo.path);
    let mut input = stdin_of(&all[..3]);
    input.push_str("{\"schema\": \"pgb.v1\", \"type\": \"artifact\", oops\n");
    input.push_str(&stdin_of(&all[3..]));
    let out = prune(
        &[
            "--keep-last",
            "1",
            "--apply",
            "--now",
            "2026-11-21T03:00:00Z",
        ],
        Some(&input),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("stdin: line 4: malformed JSON"),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty());
    assert_eq!(files_below(&repo.path), before);
    // A truncated last line, too.
    let mut cut = stdin_of(&all);
    cut.pop();
    let out = prune(&["--keep-last", "1", "--apply"], Some(&cut));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("line 6"), "{}", stderr(&out));
    assert_eq!(files_below(&repo.path), before);
    // The same records, well formed, in another order: the same plan.
    let now = ["--keep-last", "1", "--now", "2026-11-21T03:00:00Z"];
    let a = prune(&now, Some(&stdin_of(&all)));
    let mut rev = all.clone();
    rev.reverse();
    let b = prune(&now, Some(&stdin_of(&rev)));
    assert_eq!(actions(&records(&a.stdout)), actions(&records(&b.stdout)));
    // A clock gone backwards deletes nothing.
    let out = prune(
        &[
            "--keep-last",
            "1",
            "--apply",
            "--now",
            "2026-11-10T00:00:00Z",
        ],
        Some(&stdin_of(&all)),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("clock went backwards"),
        "{}",
        stderr(&out)
    );
    assert!(actions(&records(&out.stdout)).values().all(|a| a == "keep"));
    assert_eq!(files_below(&repo.path), before);
}

#[test]
fn copies_are_deleted_with_the_artifact() {
    let c = Cluster::new();
    let repo = Scratch::new("prune-copies");
    let all = three_days(&c, &repo.path);
    // A copy of every artifact in a local destination, recorded as pgb-ship
    // records it.
    let dest = Scratch::new("prune-dest");
    for v in &all {
        let path = v["path"].as_str().unwrap();
        let src = repo.path.join(path);
        let dst = dest.path.join(path);
        fs::create_dir_all(dst.parent().unwrap()).unwrap();
        fs::copy(&src, &dst).unwrap();
        fs::write(format!("{}.pgb.json", dst.display()), b"{}").unwrap();
        let side = repo.path.join(format!("{path}.pgb.json"));
        let mut rec: Value = serde_json::from_slice(&fs::read(&side).unwrap()).unwrap();
        rec["copies"] = json!([{
            "to": dest.path.display().to_string(),
            "url": dst.display().to_string(),
            "media": "local", "site": "local",
            "files": rec["files"].clone(),
            "verified": "readback", "when": "2026-11-20T03:00:00Z"
        }]);
        fs::write(&side, serde_json::to_vec_pretty(&rec).unwrap()).unwrap();
    }
    let r = repo.path.to_str().unwrap();
    let out = prune(
        &[
            "--repo",
            r,
            "--keep-last",
            "2",
            "--apply",
            "--copies",
            "--now",
            "2026-11-21T03:00:00Z",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let in_repo = files_below(&repo.path);
    let in_dest = files_below(&dest.path);
    assert_eq!(in_repo, in_dest, "the copies mirror what is kept");
    assert_eq!(in_dest.len(), 8);
}

// ------------------------------------------------------------ WAL expiry

#[test]
fn wal_expiry_keeps_the_kept_backup_restorable() {
    let a = archiving_cluster("--compress zstd");
    make_segments(&a.cluster, &a.dir, 3);
    let repo = Scratch::new("prune-wal");
    let old = snapshot_records(&a.cluster, &repo.path, &["--physical"]);
    make_segments(&a.cluster, &a.dir, 3);
    std::thread::sleep(Duration::from_millis(1100));
    let new = snapshot_records(&a.cluster, &repo.path, &["--physical"]);
    let last = make_segments(&a.cluster, &a.dir, 3);
    let old = set_created(&old[0], "2026-11-19T02:00:00Z");
    let new = set_created(&new[0], "2026-11-20T02:00:00Z");
    let start_new = new["wal"]["start_segment"].as_str().unwrap().to_string();
    let segs_before = segment_names(&a.dir);
    assert!(segs_before.iter().any(|s| *s < start_new));
    // Something that is not WAL, and the history, stay.
    fs::write(a.dir.join("README"), b"not wal").unwrap();
    fs::write(
        a.dir.join("00000002.history"),
        b"1\t0/9000000\tno recovery target specified\n",
    )
    .unwrap();

    let r = repo.path.to_str().unwrap();
    let d = a.dir.to_str().unwrap();
    let args = [
        "--repo",
        r,
        "--keep-last",
        "1",
        "--wal-archive",
        d,
        "--now",
        "2026-11-21T03:00:00Z",
    ];
    // An empty policy deletes nothing, the WAL included, as it says.
    let empty = prune(&["--repo", r, "--wal-archive", d, "--apply"], None);
    assert_eq!(empty.status.code(), Some(0), "{}", stderr(&empty));
    assert!(
        stderr(&empty).contains("nothing will be deleted, WAL included"),
        "{}",
        stderr(&empty)
    );
    assert_eq!(
        segment_names(&a.dir),
        segs_before,
        "an empty policy expired WAL"
    );

    let plan = prune(&args, None);
    assert_eq!(plan.status.code(), Some(0), "{}", stderr(&plan));
    let recs = records(&plan.stdout);
    let ranges: Vec<&Value> = recs.iter().filter(|r| r["type"] == "wal-expiry").collect();
    assert_eq!(ranges.len(), 1, "{ranges:?}");
    assert_eq!(ranges[0]["action"], "delete");
    assert_eq!(ranges[0]["timeline"], 1);
    assert_eq!(ranges[0]["first"], json!(segs_before[0]));
    assert!(ranges[0]["last"].as_str().unwrap() < start_new.as_str());
    assert!(ranges[0]["reason"]
        .as_str()
        .unwrap()
        .contains(new["id"].as_str().unwrap()));
    assert_eq!(segment_names(&a.dir), segs_before, "a plan removes nothing");

    let out = prune(&[&args[..], &["--apply"]].concat(), None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let after = segment_names(&a.dir);
    let expect: Vec<String> = segs_before
        .iter()
        .filter(|s| s.as_str() >= start_new.as_str())
        .cloned()
        .collect();
    assert_eq!(
        after, expect,
        "exactly the segments before the kept start are gone"
    );
    assert!(a.dir.join("README").exists() && a.dir.join("00000002.history").exists());
    fs::remove_file(a.dir.join("00000002.history")).unwrap();
    assert!(!repo.path.join(old["path"].as_str().unwrap()).exists());
    assert!(repo.path.join(new["path"].as_str().unwrap()).exists());

    // pgb-check-archive agrees: the kept backup is restorable, and the
    // archive reaches past it to the last segment (PITR from it).
    let mut child = Command::new(bin("pgb-check-archive"))
        .arg(&a.dir)
        .arg("--backups")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let kept: Value = serde_json::from_slice(
        &fs::read(
            repo.path
                .join(format!("{}.pgb.json", new["path"].as_str().unwrap())),
        )
        .unwrap(),
    )
    .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{kept}\n").as_bytes())
        .unwrap();
    let chk = child.wait_with_output().unwrap();
    let recs = records(&chk.stdout);
    let b = recs.iter().find(|r| r["type"] == "artifact").unwrap();
    assert_eq!(b["archive_check"]["restorable"], true, "{recs:?}");
    assert!(
        b["archive_check"]["wal_end_segment"].as_str().unwrap() >= last.last().unwrap().as_str(),
        "{recs:?}"
    );
    assert!(
        !recs.iter().any(|r| r["problem"] == "gap"),
        "no gap after expiry: {recs:?}"
    );

    // With no physical backup kept, nothing is removed.
    let now_segs = segment_names(&a.dir);
    let logical_only = prune(
        &[
            "--keep-last",
            "1",
            "--wal-archive",
            d,
            "--apply",
            "--now",
            "2026-11-21T03:00:00Z",
        ],
        Some(""),
    );
    assert_eq!(
        logical_only.status.code(),
        Some(0),
        "{}",
        stderr(&logical_only)
    );
    let recs = records(&logical_only.stdout);
    assert_eq!(recs[0]["action"], "keep");
    assert_eq!(segment_names(&a.dir), now_segs);
}
