//! The operations kit: scripts/pgb-daily run twice against a throwaway
//! cluster with WAL archiving (encryption with a key from age-keygen, two
//! labelled destinations, verification, pruning, the archive check, metrics);
//! its lock; pgb-snapshot --prom; the Ansible role against localhost
//! (idempotent, check mode changes nothing); the systemd units; the alert
//! rules; the shell completions.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::util::{
    bin, files_below, is_root, pg_bin, pg_bindir, records, run, Cluster, Options, Scratch,
};

fn source() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Where cargo put this package's binaries (all of them, built for the
/// test run).
fn bin_dir() -> PathBuf {
    bin("pgb-snapshot").parent().unwrap().to_path_buf()
}

/// True when the root Cargo.toml builds this tool; its binary must then be
/// there. Stages of the pipeline whose tool does not exist yet are left
/// unconfigured (pgb-daily skips them), and the test says so.
fn has_tool(name: &str) -> bool {
    let toml = fs::read_to_string(source().join("Cargo.toml")).unwrap();
    let listed = toml.contains(&format!("name = \"{name}\"\npath = \"tools/"));
    if listed {
        assert!(
            bin_dir().join(name).exists(),
            "{name} is in Cargo.toml but not built"
        );
    }
    listed
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Writes a pgb.env for pgb-daily: `KEY='value'` lines, as bash sources them.
fn write_env(path: &Path, vars: &[(&str, String)]) {
    let mut t = String::new();
    for (k, v) in vars {
        t.push_str(&format!("{k}='{}'\n", v.replace('\'', r"'\''")));
    }
    fs::write(path, t).unwrap();
}

fn pgb_daily(env_file: &Path) -> Output {
    Command::new(source().join("scripts/pgb-daily"))
        .env("PGB_ENV", env_file)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Every record in the dated logs of `dir`, in order.
fn log_records(dir: &Path) -> Vec<Value> {
    let mut names: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    names.sort();
    names
        .iter()
        .flat_map(|p| records(&fs::read(p).unwrap()))
        .collect()
}

/// Samples of a textfile: `name{labels}` -> value.
fn prom_samples(path: &Path) -> BTreeMap<String, f64> {
    let t = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    t.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (s, v) = l.rsplit_once(' ').unwrap();
            (s.to_string(), v.parse().unwrap())
        })
        .collect()
}

/// The metric names pgb-metrics(7) documents (its `.TP` items).
fn documented_metrics() -> Vec<String> {
    let page = fs::read_to_string(source().join("man/pgb-metrics.7")).unwrap();
    let lines: Vec<&str> = page.lines().collect();
    lines
        .windows(2)
        .filter(|w| w[0] == ".TP" && w[1].starts_with("\\fBpgb_"))
        .map(|w| {
            w[1].trim_start_matches("\\fB")
                .trim_end_matches("\\fR")
                .to_string()
        })
        .collect()
}

/// Every metric in `path` is documented, with HELP and TYPE gauge.
fn assert_documented(path: &Path) {
    let t = fs::read_to_string(path).unwrap();
    let doc = documented_metrics();
    for l in t.lines().filter(|l| !l.starts_with('#')) {
        let name = l.split(['{', ' ']).next().unwrap();
        assert!(
            doc.iter().any(|d| d == name),
            "{name} ({}) is not in man/pgb-metrics.7",
            path.display()
        );
        assert!(
            t.contains(&format!("# TYPE {name} gauge\n")),
            "{name}: no TYPE line"
        );
        assert!(
            t.contains(&format!("# HELP {name} ")),
            "{name}: no HELP line"
        );
    }
    let mode = fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode,
        0o644,
        "{} must be readable by node_exporter",
        path.display()
    );
}

/// Artifacts as the backup pipeline printed them (pgb-prune's plan records
/// carry a `prune` field).
fn backed_up(recs: &[Value]) -> Vec<&Value> {
    recs.iter()
        .filter(|r| r["type"] == "artifact" && r.get("prune").is_none())
        .collect()
}

fn ids(recs: &[Value]) -> Vec<String> {
    backed_up(recs)
        .into_iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn daily_pipeline_twice_encrypts_ships_verifies_and_prunes() {
    let wal = Scratch::new("ops-wal");
    let archive = wal.owned_dir("archive");
    let c = Cluster::with(Options {
        archive_command: Some(format!(
            "{} push %p --archive {}",
            bin("pgb-wal").display(),
            archive.display()
        )),
        initdb_args: vec!["--wal-segsize".into(), "1".into()],
        ..Options::default()
    });
    c.sql("postgres", "CREATE DATABASE appdb");
    c.sql(
        "appdb",
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 2000) g;",
    );
    let work = Scratch::new("ops-daily");
    let repo = work.path.join("repo");
    let logs = work.path.join("log");
    let promd = work.path.join("prom");
    let nas = work.path.join("nas");
    let offsite = work.path.join("offsite");
    for d in [&promd, &nas, &offsite] {
        fs::create_dir(d).unwrap();
    }
    let key = work.path.join("key.txt");
    run(Command::new("age-keygen")
        .arg("-o")
        .arg(&key)
        .stderr(Stdio::null()));
    let recipient = text(&run(Command::new("age-keygen").arg("-y").arg(&key)).stdout)
        .trim()
        .to_string();

    let encrypt = has_tool("pgb-encrypt");
    let ship = has_tool("pgb-ship");
    let prune = has_tool("pgb-prune");
    let mut vars: Vec<(&str, String)> = c.env();
    vars.extend([
        ("PGB_PG_BINDIR", pg_bindir().display().to_string()),
        ("PGB_BIN_DIR", bin_dir().display().to_string()),
        ("PGB_REPO", repo.display().to_string()),
        ("PGB_CLUSTER", "main".into()),
        ("PGB_DATABASES", "appdb".into()),
        ("PGB_GLOBALS", "yes".into()),
        ("PGB_PHYSICAL", "yes".into()),
        (
            "PGB_VERIFY_ARGS",
            "--checksums --structure --manifest --restore".into(),
        ),
        ("PGB_WAL_ARCHIVE", archive.display().to_string()),
        ("PGB_ARCHIVE_CHECK_ARGS", "-d postgres".into()),
        ("PGB_PROM_DIR", promd.display().to_string()),
        ("PGB_LOG_DIR", logs.display().to_string()),
    ]);
    let mut stages = vec!["snapshot"];
    if encrypt {
        stages.push("encrypt");
        vars.push(("PGB_RECIPIENTS", recipient.clone()));
        vars.push(("PGB_IDENTITY", key.display().to_string()));
    }
    if ship {
        stages.push("ship");
        vars.push((
            "PGB_SHIP_TO",
            format!(
                "{}#media=nas {}#media=usb,site=offsite",
                nas.display(),
                offsite.display()
            ),
        ));
        vars.push(("PGB_SHIP_REQUIRE", "3-2-1".into()));
    }
    stages.push("verify --restore");
    if prune {
        stages.push("prune --keep-last 1 --copies --wal-archive");
        vars.push(("PGB_PRUNE_POLICY", "--keep-last 1".into()));
        vars.push(("PGB_PRUNE_ARGS", "--copies".into()));
        vars.push(("PGB_PRUNE_WAL", "yes".into()));
    }
    stages.push("check-archive");
    eprintln!("ops: pgb-daily stages exercised: {}", stages.join(", "));
    let env_file = work.path.join("pgb.env");
    write_env(&env_file, &vars);

    // --- first run ---
    let out = pgb_daily(&env_file);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "first run failed:\n{err}");
    assert!(
        out.stdout.is_empty(),
        "pgb-daily prints records only to its log"
    );
    assert!(err.contains("pgb-daily: done in"), "{err}");
    let first = log_records(&logs);
    assert!(first.iter().all(|r| r["type"] != "error"), "{first:?}");
    let arts = backed_up(&first);
    let kinds: Vec<&str> = arts.iter().map(|a| a["kind"].as_str().unwrap()).collect();
    for k in ["logical", "globals", "physical"] {
        assert_eq!(kinds.iter().filter(|x| **x == k).count(), 1, "{kinds:?}");
    }
    for a in &arts {
        let verified = a["verified"].as_array().unwrap();
        assert!(
            !verified.is_empty() && verified.iter().all(|v| v["ok"] == true),
            "{a}"
        );
        if encrypt {
            assert_eq!(a["encryption"]["scheme"], "age", "{a}");
            for f in a["files"].as_array().unwrap() {
                assert!(f["name"].as_str().unwrap().ends_with(".age"), "{a}");
            }
        }
        if ship {
            let copies = a["copies"].as_array().unwrap();
            assert_eq!(copies.len(), 2, "{a}");
            assert!(
                copies
                    .iter()
                    .any(|c| c["site"] == "offsite" && c["media"] == "usb"),
                "{a}"
            );
            assert!(copies.iter().any(|c| c["media"] == "nas"), "{a}");
            let path = a["path"].as_str().unwrap();
            for d in [&nas, &offsite] {
                assert!(
                    d.join(path).exists(),
                    "no copy of {path} in {}",
                    d.display()
                );
            }
        }
    }
    if encrypt {
        // --remove-plaintext (pgb-daily's default): only ciphertext is left.
        for f in files_below(&repo) {
            assert!(
                f.ends_with(".age") || f.ends_with(".pgb.json"),
                "plaintext left: {f}"
            );
        }
    }
    let logical = arts.iter().find(|a| a["kind"] == "logical").unwrap();
    assert!(
        logical["verified"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["method"] == "restore"),
        "{logical}"
    );
    if encrypt {
        // The reference age CLI decrypts what the pipeline stored: a pg_dump
        // custom archive under zstd.
        let stored = repo.join(logical["path"].as_str().unwrap());
        let plain = run(Command::new("sh").arg("-c").arg(format!(
            "age -d -i '{}' '{}' | zstd -dc | head -c 5",
            key.display(),
            stored.display()
        )));
        assert_eq!(plain.stdout, b"PGDMP");
    }

    // Metrics: last backup per (cluster, kind, database), archive health,
    // verification and restore recency; every name documented.
    let backup = prom_samples(&promd.join("pgb_backup.prom"));
    for l in [
        r#"{cluster="main",kind="logical",database="appdb"}"#,
        r#"{cluster="main",kind="globals",database=""}"#,
        r#"{cluster="main",kind="physical",database=""}"#,
    ] {
        assert_eq!(
            backup[&format!("pgb_backup_last_run_success{l}")],
            1.0,
            "{backup:?}"
        );
        assert!(backup[&format!("pgb_backup_last_success_timestamp_seconds{l}")] > 1.7e9);
        assert!(backup[&format!("pgb_backup_last_size_bytes{l}")] > 0.0);
    }
    let arch = prom_samples(&promd.join("pgb_archive.prom"));
    let al = format!("{{archive=\"{}\"}}", archive.display());
    assert_eq!(
        arch[&format!("pgb_archive_check_success{al}")],
        1.0,
        "{arch:?}"
    );
    assert!(arch[&format!("pgb_archive_segments{al}")] > 0.0);
    let verify = prom_samples(&promd.join("pgb_verify.prom"));
    let vl = r#"{cluster="main",kind="logical",database="appdb"}"#;
    assert_eq!(
        verify[&format!("pgb_verify_success{vl}")],
        1.0,
        "{verify:?}"
    );
    assert!(verify.contains_key(&format!("pgb_restore_last_success_timestamp_seconds{vl}")));
    for f in ["pgb_backup.prom", "pgb_archive.prom", "pgb_verify.prom"] {
        assert_documented(&promd.join(f));
    }
    let stamp1 = backup[&format!("pgb_backup_last_success_timestamp_seconds{vl}")];

    // --- second run: new artifacts, the first run's pruned (keep-last 1) ---
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = pgb_daily(&env_file);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "second run failed:\n{err}");
    let all = log_records(&logs);
    let second = &all[first.len()..];
    let ids1 = ids(&first);
    let backup = prom_samples(&promd.join("pgb_backup.prom"));
    assert!(backup[&format!("pgb_backup_last_success_timestamp_seconds{vl}")] > stamp1);
    let sidecars: Vec<String> = files_below(&repo)
        .into_iter()
        .filter(|f| f.ends_with(".pgb.json"))
        .collect();
    let new_paths: Vec<&str> = backed_up(second)
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert!(ids(second).iter().all(|i| !ids1.contains(i)), "{ids1:?}");
    assert_eq!(new_paths.len(), 3, "{second:?}");
    if prune {
        // The plan: the first run's three deleted, the second's kept.
        let plan: Vec<(&str, &str, bool)> = second
            .iter()
            .filter(|r| r.get("prune").is_some())
            .map(|r| {
                (
                    r["id"].as_str().unwrap(),
                    r["prune"]["action"].as_str().unwrap(),
                    r["prune"]["deleted"] == true,
                )
            })
            .collect();
        assert_eq!(plan.len(), 6, "{plan:?}");
        for (id, action, deleted) in &plan {
            let old = ids1.iter().any(|i| i == id);
            assert_eq!(
                (*action, *deleted),
                if old {
                    ("delete", true)
                } else {
                    ("keep", false)
                },
                "{plan:?}"
            );
        }
        // Only the second run's three artifacts are left, here and at both
        // destinations; the first run's files are gone everywhere.
        assert_eq!(sidecars.len(), 3, "{sidecars:?}");
        for a in arts.iter() {
            let p = a["path"].as_str().unwrap();
            assert!(!repo.join(p).exists(), "{p} survived keep-last 1");
            if ship {
                for d in [&nas, &offsite] {
                    assert!(
                        !d.join(p).exists(),
                        "copy of {p} in {} survived --copies",
                        d.display()
                    );
                }
            }
        }
        for p in &new_paths {
            assert!(repo.join(p).exists(), "{p} was pruned");
        }
        // WAL older than the kept base backup is expired; the archive still
        // restores it (the check in the run passed, status 0).
        let kept = backed_up(second)
            .into_iter()
            .find(|r| r["kind"] == "physical")
            .unwrap();
        let start = kept["wal"]["start_segment"].as_str().unwrap();
        let segs: Vec<String> = files_below(&archive)
            .into_iter()
            .filter(|f| f.len() == 24 && f.chars().all(|c| c.is_ascii_hexdigit()))
            .collect();
        assert!(
            segs.iter().any(|f| f.as_str() == start),
            "{start} not in {segs:?}"
        );
        for f in &segs {
            assert!(
                f.as_str() >= start,
                "{f} is older than the kept backup's {start}"
            );
        }
    } else {
        assert_eq!(sidecars.len(), 6, "{sidecars:?}");
    }

    // --- a third run whose offsite destination is gone (an unmounted
    // disk): the failed artifacts come out as error records, nothing
    // downstream acts on them, nothing is pruned, the archive is still
    // checked, and the exit status says so.
    if !(ship && prune) {
        return;
    }
    let before = files_below(&repo);
    let broken = work.path.join("broken.env");
    let mut bad = vars.clone();
    bad.retain(|(k, _)| *k != "PGB_SHIP_TO");
    bad.push((
        "PGB_SHIP_TO",
        format!(
            "{}#media=nas {}#media=usb,site=offsite",
            nas.display(),
            work.path.join("unmounted").display()
        ),
    ));
    write_env(&broken, &bad);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let seen = log_records(&logs).len();
    let out = pgb_daily(&broken);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("ship exited 2"), "{err}");
    assert!(err.contains("prune skipped"), "{err}");
    assert!(err.contains("check-archive:"), "{err}");
    let third = log_records(&logs);
    let third = &third[seen..];
    let errors: Vec<&Value> = third.iter().filter(|r| r["type"] == "error").collect();
    assert_eq!(errors.len(), 3, "{third:?}");
    assert!(
        backed_up(third).is_empty(),
        "a failed artifact went on: {third:?}"
    );
    assert!(
        third.iter().all(|r| r.get("prune").is_none()),
        "pruned after a failure"
    );
    // Everything the second run left is still there.
    let after = files_below(&repo);
    for f in &before {
        assert!(after.contains(f), "{f} disappeared after a failed run");
    }
}

fn lock_env(work: &Scratch, extra: &[(&str, String)]) -> PathBuf {
    let mut vars = vec![
        ("PGB_REPO", work.path.join("repo").display().to_string()),
        ("PGB_LOG_DIR", work.path.join("log").display().to_string()),
        ("PGB_DATABASES", "appdb".to_string()),
        // Nothing listens there: a run that got past its checks would fail.
        ("PGHOST", work.path.join("nosocket").display().to_string()),
        ("PGB_BIN_DIR", bin_dir().display().to_string()),
    ];
    vars.extend(extra.iter().cloned());
    let p = work.path.join("pgb.env");
    write_env(&p, &vars);
    p
}

#[test]
fn daily_refuses_overlap_bad_config_and_missing_encryption() {
    let work = Scratch::new("ops-lock");
    let env_file = lock_env(&work, &[]);
    fs::create_dir_all(work.path.join("log")).unwrap();
    let lock = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(work.path.join("log/pgb-daily.lock"))
        .unwrap();
    let held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
    let out = pgb_daily(&env_file);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("another run holds"),
        "{}",
        text(&out.stderr)
    );
    // With PGB_LOCK_WAIT it waits, then gives up the same way.
    let waiting = lock_env(&work, &[("PGB_LOCK_WAIT", "1".into())]);
    let out = pgb_daily(&waiting);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("waited 1s"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !work.path.join("repo").exists(),
        "a locked-out run touched the repository"
    );
    drop(held);

    // Encryption configured but pgb-encrypt not installed: nothing runs, so
    // nothing can leave unencrypted.
    let empty = work.path.join("empty-bin");
    fs::create_dir(&empty).unwrap();
    let no_tool = lock_env(
        &work,
        &[
            ("PGB_RECIPIENTS", "age1qqqq".into()),
            ("PATH", format!("{}:/usr/bin:/bin", empty.display())),
            ("PGB_BIN_DIR", empty.display().to_string()),
        ],
    );
    let out = pgb_daily(&no_tool);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("pgb-encrypt is not installed"),
        "{}",
        text(&out.stderr)
    );
    assert!(!work.path.join("repo").exists());

    // Nothing to back up; a missing configuration file.
    let nothing = lock_env(
        &work,
        &[("PGB_DATABASES", "".into()), ("PGB_GLOBALS", "no".into())],
    );
    let out = pgb_daily(&nothing);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("nothing to back up"),
        "{}",
        text(&out.stderr)
    );
    let out = pgb_daily(&work.path.join("absent.env"));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("absent.env"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn snapshot_prom_keeps_the_last_success_when_a_run_fails() {
    let c = Cluster::new();
    let work = Scratch::new("ops-prom");
    let repo = work.path.join("repo");
    let prom = work.path.join("pgb_backup.prom");
    // A series of another cluster, already in the file, is kept.
    let other =
        "pgb_backup_last_run_success{cluster=\"other\",kind=\"logical\",database=\"x\"} 1\n";
    fs::write(&prom, other).unwrap();
    let snap = |args: &[&str]| {
        c.tool("pgb-snapshot")
            .args(["--cluster", "c1", "-o"])
            .arg(&repo)
            .arg("--prom")
            .arg(&prom)
            .args(args)
            .output()
            .unwrap()
    };
    let out = snap(&["-d", "postgres", "--globals"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let recs = records(&out.stdout);
    let m = prom_samples(&prom);
    let db = r#"{cluster="c1",kind="logical",database="postgres"}"#;
    let gl = r#"{cluster="c1",kind="globals",database=""}"#;
    assert_eq!(m[&format!("pgb_backup_last_run_success{db}")], 1.0);
    assert_eq!(m[&format!("pgb_backup_last_run_success{gl}")], 1.0);
    let dump = recs.iter().find(|r| r["kind"] == "logical").unwrap();
    let size: u64 = dump["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["size"].as_u64().unwrap())
        .sum();
    assert_eq!(m[&format!("pgb_backup_last_size_bytes{db}")], size as f64);
    let created = chrono::DateTime::parse_from_rfc3339(dump["created"].as_str().unwrap()).unwrap();
    let stamp = m[&format!("pgb_backup_last_success_timestamp_seconds{db}")];
    assert_eq!(stamp, created.timestamp() as f64);
    assert!(m.contains_key(&format!("pgb_backup_last_duration_seconds{db}")));
    assert_eq!(
        m[r#"pgb_backup_last_run_success{cluster="other",kind="logical",database="x"}"#],
        1.0
    );
    assert_documented(&prom);

    // A database that does not exist: its own series says 0.
    let out = snap(&["-d", "dbname=nosuchdb"]);
    assert_eq!(out.status.code(), Some(2));
    let m = prom_samples(&prom);
    assert_eq!(
        m[r#"pgb_backup_last_run_success{cluster="c1",kind="logical",database="nosuchdb"}"#],
        0.0
    );
    // The server down: the failure is recorded, the last success kept.
    c.stop();
    let out = snap(&["-d", "postgres"]);
    assert_eq!(out.status.code(), Some(2));
    let m = prom_samples(&prom);
    assert_eq!(m[&format!("pgb_backup_last_run_success{db}")], 0.0);
    assert_eq!(
        m[&format!("pgb_backup_last_success_timestamp_seconds{db}")],
        stamp
    );
    assert_eq!(m[&format!("pgb_backup_last_run_success{gl}")], 1.0);
    assert_documented(&prom);
}

#[test]
fn alert_rules_are_valid_yaml_and_use_documented_metrics() {
    let rules = source().join("scripts/prometheus/pgb-alerts.yml");
    // PyYAML parses it (promtool is not available here); the structure is
    // checked from its JSON.
    let py = "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))";
    let parsed = ["python3", "/usr/bin/python3"].iter().find_map(|p| {
        let o = Command::new(p).args(["-c", py]).arg(&rules).output().ok()?;
        o.status.success().then_some(o.stdout)
    });
    let Some(json) = parsed else {
        eprintln!("ops: skipped the alert rules check: no python3 with PyYAML (apt-get install python3-yaml)");
        return;
    };
    let doc: Value = serde_json::from_slice(&json).unwrap();
    let rules = doc["groups"][0]["rules"].as_array().unwrap();
    let documented = documented_metrics();
    let mut alerts = Vec::new();
    for r in rules {
        let alert = r["alert"].as_str().unwrap();
        let expr = r["expr"].as_str().unwrap();
        assert!(r["labels"]["severity"].is_string(), "{alert}: no severity");
        assert!(
            r["annotations"]["summary"].is_string(),
            "{alert}: no summary"
        );
        let names: Vec<&str> = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("pgb_"))
            .collect();
        assert!(!names.is_empty(), "{alert}: uses no pgb metric");
        for n in names {
            assert!(
                documented.iter().any(|d| d == n),
                "{alert}: {n} is not in pgb-metrics(7)"
            );
        }
        alerts.push((alert.to_string(), expr.to_string()));
    }
    // The four the operators are told to watch.
    let has = |metric: &str, threshold: &str| {
        alerts
            .iter()
            .any(|(_, e)| e.contains(metric) && e.contains(threshold))
    };
    assert!(
        has("pgb_backup_last_success_timestamp_seconds", "3600"),
        "{alerts:?}"
    );
    assert!(has("pgb_archive_age_seconds", "300"), "{alerts:?}");
    assert!(
        has("pgb_restore_last_success_timestamp_seconds", "7 * 86400"),
        "{alerts:?}"
    );
    assert!(has("pgb_archive_check_success", "== 0"), "{alerts:?}");
}

/// Every metric name a tool's metrics code writes is documented in
/// pgb-metrics(7), and every documented name is written by some tool.
#[test]
fn every_metric_in_the_code_is_documented() {
    let mut written = std::collections::BTreeSet::new();
    for tool in fs::read_dir(source().join("tools")).unwrap().flatten() {
        for f in fs::read_dir(tool.path()).unwrap().flatten() {
            let t = fs::read_to_string(f.path()).unwrap_or_default();
            if !(t.contains("Metrics::new()") || t.contains("# TYPE")) {
                continue;
            }
            for piece in t.split('"').skip(1).step_by(2) {
                if piece.starts_with("pgb_")
                    && piece.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                {
                    written.insert(piece.to_string());
                }
            }
        }
    }
    let documented: std::collections::BTreeSet<String> = documented_metrics().into_iter().collect();
    let undocumented: Vec<_> = written.difference(&documented).collect();
    let unwritten: Vec<_> = documented.difference(&written).collect();
    assert!(
        undocumented.is_empty(),
        "add to man/pgb-metrics.7: {undocumented:?}"
    );
    assert!(
        unwritten.is_empty(),
        "documented but written by no tool: {unwritten:?}"
    );
}

#[test]
fn systemd_units_verify() {
    let dir = Scratch::new("ops-units");
    let unit = fs::read_to_string(source().join("scripts/systemd/pgb-daily.service")).unwrap();
    let timer = fs::read_to_string(source().join("scripts/systemd/pgb-daily.timer")).unwrap();
    for want in [
        "Type=oneshot",
        "User=postgres",
        "ProtectSystem=strict",
        "ReadWritePaths=",
        "PrivateTmp=true",
        "NoNewPrivileges=true",
        "ExecStart=/usr/local/bin/pgb-daily",
    ] {
        assert!(
            unit.contains(&format!("\n{want}")),
            "pgb-daily.service lacks {want}"
        );
    }
    for want in ["OnCalendar=", "RandomizedDelaySec=", "Persistent=true"] {
        assert!(
            timer.contains(&format!("\n{want}")),
            "pgb-daily.timer lacks {want}"
        );
    }
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("ops: skipped systemd-analyze verify: systemd-analyze is not installed");
        return;
    }
    // verify wants ExecStart to exist: point it at the script in the tree.
    let unit = unit.replace(
        "ExecStart=/usr/local/bin/pgb-daily",
        &format!("ExecStart={}", source().join("scripts/pgb-daily").display()),
    );
    fs::write(dir.path.join("pgb-daily.service"), unit).unwrap();
    fs::write(dir.path.join("pgb-daily.timer"), timer).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["--man=no", "verify"])
        .arg(dir.path.join("pgb-daily.service"))
        .arg(dir.path.join("pgb-daily.timer"))
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {err}");
    // Unknown or misspelt settings are only warnings: none allowed.
    let ours: Vec<&str> = err.lines().filter(|l| l.contains("pgb-daily")).collect();
    assert!(ours.is_empty(), "systemd-analyze verify: {ours:?}");
}

#[test]
fn bash_completions_load() {
    for e in fs::read_dir(source().join("completions/bash"))
        .unwrap()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let out = run(Command::new("bash").arg("-c").arg(format!(
            "source '{}' && complete -p {name}",
            e.path().display()
        )));
        assert!(
            text(&out.stdout).contains(&name),
            "{name}: {}",
            text(&out.stdout)
        );
    }
}

// --- Ansible ------------------------------------------------------------------

/// `ansible-playbook`, installed from PyPI with pip when missing (as
/// scripts/install-deps does); `None` when that is impossible.
fn ansible_playbook() -> Option<PathBuf> {
    let find = || -> Option<PathBuf> {
        let o = Command::new("sh")
            .args(["-c", "command -v ansible-playbook"])
            .output()
            .ok()?;
        let p = text(&o.stdout).trim().to_string();
        if o.status.success() && !p.is_empty() {
            return Some(PathBuf::from(p));
        }
        let o = Command::new("python3")
            .args([
                "-c",
                "import sysconfig; print(sysconfig.get_path('scripts'))",
            ])
            .output()
            .ok()?;
        let p = PathBuf::from(text(&o.stdout).trim()).join("ansible-playbook");
        p.exists().then_some(p)
    };
    if let Some(p) = find() {
        return Some(p);
    }
    eprintln!("ops: ansible-playbook missing: pip install ansible-core");
    let ok = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "ansible-core"])
        .stdin(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        return None;
    }
    find()
}

/// The Python that runs ansible-playbook, for the modules on localhost.
fn ansible_python(playbook: &Path) -> String {
    let out = run(Command::new(playbook).arg("--version"));
    let v = text(&out.stdout);
    let line = v.lines().find(|l| l.contains("python version")).unwrap();
    line.rsplit_once('(')
        .unwrap()
        .1
        .trim_end_matches(')')
        .to_string()
}

/// `changed` and `failed` from the PLAY RECAP.
fn recap(out: &str) -> (u32, u32) {
    let line = out
        .lines()
        .skip_while(|l| !l.starts_with("PLAY RECAP"))
        .find(|l| l.starts_with("localhost"))
        .unwrap_or_else(|| panic!("no PLAY RECAP:\n{out}"));
    let get = |k: &str| -> u32 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .unwrap()
            .parse()
            .unwrap()
    };
    (get("changed"), get("failed"))
}

struct Target {
    root: Scratch,
}

impl Target {
    fn new(tag: &str) -> Target {
        let root = Scratch::new(tag);
        fs::set_permissions(&root.path, fs::Permissions::from_mode(0o755)).unwrap();
        Target { root }
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.root.path.join(rel)
    }
    fn vars(&self, c: &Cluster, scheduler: &str, python: &str, build: &Path) -> Value {
        serde_json::json!({
            "pgb_hosts": "all",
            "pgb_become": false,
            "ansible_python_interpreter": python,
            "pgb_source_dir": source(),
            "pgb_build_dir": build,
            "pgb_prefix": self.p("prefix"),
            "pgb_repo": self.p("repo"),
            "pgb_log_dir": self.p("log"),
            "pgb_wal_archive": self.p("wal"),
            "pgb_prom_dir": self.p("prom"),
            "pgb_env_file": self.p("etc/pgb/pgb.env"),
            "pgb_env": {"PGB_CLUSTER": "test", "PGHOST": c.socket, "PGPORT": c.port.to_string()},
            "pgb_archive_command": format!("{}/pgb-wal push %p --archive {}", self.p("prefix/bin").display(), self.p("wal").display()),
            "pgb_psql": pg_bin("psql"),
            "pgb_psql_become": false,
            "pgb_pg_environment": {"PGHOST": c.socket, "PGPORT": c.port.to_string(), "PGUSER": "postgres"},
            "pgb_scheduler": scheduler,
            "pgb_systemd_dir": self.p("systemd"),
            "pgb_systemd_enable": false,
            "pgb_cron_file": self.p("cron.d/pgb"),
        })
    }
    /// Every path below the target with its mode, owner and size.
    fn state(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![self.root.path.clone()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap().flatten() {
                let m = fs::symlink_metadata(e.path()).unwrap();
                if m.is_dir() {
                    stack.push(e.path());
                }
                out.push(format!(
                    "{} {:o} {}:{} {}",
                    e.path().display(),
                    m.mode(),
                    m.uid(),
                    m.gid(),
                    if m.is_file() { m.len() } else { 0 }
                ));
            }
        }
        out.sort();
        out
    }
}

/// Runs site.yml on localhost; `dir` holds the variables and Ansible's temp
/// files (outside the target).
fn playbook(ap: &Path, vars: &Value, dir: &Path, check: bool) -> (u32, u32, String) {
    let vf = dir.join(format!("vars-{}.json", if check { "check" } else { "run" }));
    fs::write(&vf, serde_json::to_vec(vars).unwrap()).unwrap();
    let mut cmd = Command::new(ap);
    cmd.args(["-i", "localhost,", "-c", "local", "-e"])
        .arg(format!("@{}", vf.display()))
        .arg(source().join("scripts/ansible/site.yml"))
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_PIPELINING", "1")
        .env("ANSIBLE_LOCAL_TEMP", dir.join("ansible-tmp"))
        .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
        .stdin(Stdio::null());
    if check {
        cmd.args(["--check", "--diff"]);
    }
    let out = cmd.output().unwrap();
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    let (changed, failed) = recap(&all);
    assert!(
        out.status.success() && failed == 0,
        "ansible-playbook failed:\n{all}"
    );
    (changed, failed, all)
}

#[test]
fn ansible_role_is_idempotent_and_check_mode_changes_nothing() {
    if !is_root() {
        eprintln!("ops: skipped the Ansible test: the role sets owners, run the tests as root");
        return;
    }
    let Some(ap) = ansible_playbook() else {
        eprintln!("ops: skipped the Ansible test: ansible-playbook is missing and `python3 -m pip install ansible-core` failed (scripts/install-deps installs it)");
        return;
    };
    let python = ansible_python(&ap);
    let c = Cluster::with(Options {
        archive: true,
        ..Options::default()
    });
    let ctl = Scratch::new("ops-ansible-ctl");
    // A build directory with the two tools the role itself runs (debug
    // builds are large, and the role archives what it installs).
    let build = ctl.path.join("build");
    fs::create_dir(&build).unwrap();
    for b in ["pgb-fixperms", "pgb-wal"] {
        fs::hard_link(bin(b), build.join(b))
            .or_else(|_| fs::copy(bin(b), build.join(b)).map(drop))
            .unwrap();
    }
    let t = Target::new("ops-ansible");
    // A repository copied in by root, with a loose file for pgb-fixperms.
    fs::create_dir(t.p("repo")).unwrap();
    fs::write(t.p("repo/stray.dump"), "x").unwrap();
    fs::set_permissions(t.p("repo/stray.dump"), fs::Permissions::from_mode(0o644)).unwrap();
    let vars = t.vars(&c, "systemd", &python, &build);

    let (changed, _, log) = playbook(&ap, &vars, &ctl.path, false);
    assert!(changed > 0, "{log}");
    let want = vars["pgb_archive_command"].as_str().unwrap();
    assert_eq!(c.sql("postgres", "SHOW archive_command"), want);
    for f in [
        "prefix/bin/pgb-fixperms",
        "prefix/bin/pgb-wal",
        "prefix/bin/pgb-daily",
        "prefix/share/man/man7/pgb-metrics.7",
        "prefix/share/bash-completion/completions/pgb-snapshot",
        "prefix/share/zsh/site-functions/_pgb-snapshot",
        "prefix/share/fish/vendor_completions.d/pgb-snapshot.fish",
        "systemd/pgb-daily.service",
        "systemd/pgb-daily.timer",
        "systemd/pgb-daily.service.d/pgb.conf",
    ] {
        assert!(t.p(f).exists(), "{f} not installed\n{log}");
    }
    let env = fs::read_to_string(t.p("etc/pgb/pgb.env")).unwrap();
    assert!(
        env.contains(&format!("PGB_REPO={}\n", t.p("repo").display())),
        "{env}"
    );
    assert!(env.contains("PGB_CLUSTER=test\n"), "{env}");
    let pg = nix::unistd::User::from_name("postgres").unwrap().unwrap();
    let stray = fs::metadata(t.p("repo/stray.dump")).unwrap();
    assert_eq!(
        (stray.uid(), stray.mode() & 0o777),
        (pg.uid.as_raw(), 0o600),
        "pgb-fixperms did not run"
    );
    assert!(log.contains("Repair ownership and modes"), "{log}");

    // Idempotent.
    let (changed, _, log) = playbook(&ap, &vars, &ctl.path, false);
    assert_eq!(changed, 0, "second run changed something:\n{log}");

    // Check mode asks pgb-fixperms --check, reports the change and makes none.
    fs::write(t.p("repo/stray2.dump"), "y").unwrap();
    let before = t.state();
    let (changed, _, log) = playbook(&ap, &vars, &ctl.path, true);
    assert!(changed > 0, "check mode saw no loose file:\n{log}");
    let fixperms = log
        .split("TASK [")
        .find(|t| t.starts_with("pgb : Repair ownership"))
        .unwrap();
    assert!(
        fixperms.contains(&format!(
            "changed: [localhost] => (item={})",
            t.p("repo").display()
        )),
        "pgb-fixperms --check did not report the loose file:\n{fixperms}"
    );
    assert_eq!(t.state(), before, "check mode changed the target");
    assert_eq!(fs::metadata(t.p("repo/stray2.dump")).unwrap().uid(), 0);

    // Check mode on a fresh target, scheduled by cron: changes reported,
    // nothing created, archive_command untouched.
    let fresh = Target::new("ops-ansible-fresh");
    let vars = fresh.vars(&c, "cron", &python, &build);
    let before = fresh.state();
    let (changed, _, log) = playbook(&ap, &vars, &ctl.path, true);
    assert!(changed > 0, "{log}");
    assert_eq!(
        fresh.state(),
        before,
        "check mode created files on a fresh target"
    );
    // --diff shows the cron entry it would write.
    let entry = format!(
        "17 1 * * *  postgres  PGB_ENV={} {}/pgb-daily",
        fresh.p("etc/pgb/pgb.env").display(),
        fresh.p("prefix/bin").display()
    );
    assert!(log.contains(&entry), "no cron entry {entry:?} in:\n{log}");
    assert_eq!(c.sql("postgres", "SHOW archive_command"), want);
}
