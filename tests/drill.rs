//! The lost-host drill: a PostgreSQL 15 primary archives its WAL to a
//! directory, S3 and an SSH host, and its daily pipeline (snapshot, age
//! encryption, copies to S3 and to the SSH host) runs once. Then the host
//! is lost: the data directory, the local repository, the local WAL
//! archive and the configuration are deleted. From S3 alone, and again
//! from the SSH host alone, with nothing but the storage's credentials and
//! the age identity, a handful of commands list the backups, restore the
//! cluster to a moment between two writes, start it, and restore one
//! database from its logical dump.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::servers::{Sshd, S3, S3_SECRET};
use crate::util::{
    all_bindirs, as_owner, bin, bindir_of, code, is_root, records, run, sh_quote, stderr, Cluster,
    Options, Scratch,
};
use crate::wal::keypair;

/// Gives `p` (a file or a directory, recursively) to the cluster owner.
fn give_to_owner(p: &Path) {
    if is_root() {
        run(Command::new("chown").arg("-R").arg("postgres:").arg(p));
    }
}

/// What survives the host: the storage servers, the age identity and the
/// harness's own ssh key (the operator's, kept elsewhere).
struct Offsite {
    sshd: Sshd,
    s3: S3,
    /// The SSH host's storage (a directory behind sshd).
    remote: tempfile::TempDir,
    /// The age identity, kept off the host.
    vault: tempfile::TempDir,
    identity: PathBuf,
    recipient: String,
}

impl Offsite {
    fn s3_url(&self, what: &str) -> String {
        format!("s3://{}/{what}", self.s3.bucket)
    }

    fn ssh_url(&self, what: &str) -> String {
        self.sshd.url(&self.remote.path().join(what))
    }
}

/// The time the primary's clock says, to the microsecond, as
/// recovery_target_time takes it.
fn server_now(c: &Cluster) -> String {
    c.sql(
        "postgres",
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'",
    )
}

/// Waits until every archive holds WAL segment `seg`.
fn wait_archived(o: &Offsite, local: &Path, seg: &str, c: &Cluster) {
    let t0 = Instant::now();
    loop {
        let in_dir = |d: &Path| {
            fs::read_dir(d)
                .map(|rd| {
                    rd.flatten()
                        .any(|e| e.file_name().to_string_lossy().starts_with(seg))
                })
                .unwrap_or(false)
        };
        let in_s3 =
            o.s3.keys()
                .iter()
                .any(|k| k.starts_with(&format!("wal/{seg}")));
        if in_dir(local) && in_s3 && in_dir(&o.remote.path().join("wal")) {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{seg} never reached every archive\n{}",
            c.server_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The primary's history, as the drill needs it: the rows before and after
/// the target time.
struct History {
    target: String,
    /// Rows of appdb.t at the backup (the logical dump holds them).
    at_backup: String,
    /// Rows of appdb.t at the target time.
    at_target: String,
}

/// Builds the primary, runs the daily pipeline, writes around the target
/// time, then loses the host.
fn primary_then_lost(o: &Offsite) -> History {
    let t0 = Instant::now();
    let lap = |what: &str| eprintln!("drill: {:.1}s {what}", t0.elapsed().as_secs_f64());
    let host = Scratch::new("drill-host");
    let repo = host.owned_dir("repo");
    let local_wal = host.owned_dir("wal");
    let conf = host.owned_dir("conf");
    // The server's ssh key and known_hosts (postgres owns them) and the S3
    // settings, in the wrapper archive_command runs (as a systemd drop-in
    // would give them).
    let ssh_dir = conf.join("ssh");
    fs::create_dir(&ssh_dir).unwrap();
    for f in ["client_key", "known_hosts"] {
        fs::copy(o.sshd.dir.path().join(f), ssh_dir.join(f)).unwrap();
    }
    let ssh_options = o.sshd.client_options().replace(
        &o.sshd.dir.path().display().to_string(),
        &ssh_dir.display().to_string(),
    );
    let wrapper = conf.join("pgb-wal");
    let mut text = String::from("#!/bin/sh\n");
    for (k, v) in o.s3.env() {
        text.push_str(&format!("export {k}={}\n", sh_quote(v)));
    }
    text.push_str(&format!(
        "export PGB_SSH_OPTIONS={}\n",
        sh_quote(&ssh_options)
    ));
    text.push_str(&format!("exec {} \"$@\"\n", bin("pgb-wal").display()));
    fs::write(&wrapper, text).unwrap();
    run(Command::new("chmod").arg("700").arg(&wrapper));
    run(Command::new("chmod").args(["-R", "go-rwx"]).arg(&ssh_dir));
    give_to_owner(&conf);

    let c = Cluster::with(Options {
        archive_command: Some(format!(
            "{} push %p --archive {} --archive {} --archive {}",
            wrapper.display(),
            local_wal.display(),
            o.s3_url("wal"),
            o.ssh_url("wal")
        )),
        initdb_args: vec!["--wal-segsize=1".into()],
        major: Some(15),
        ..Default::default()
    });
    lap("primary up");
    c.sql("postgres", "CREATE DATABASE appdb; CREATE ROLE app LOGIN;");
    c.sql(
        "appdb",
        "CREATE TABLE t (i int PRIMARY KEY, note text) ; ALTER TABLE t OWNER TO app; \
         INSERT INTO t SELECT g, 'at backup' FROM generate_series(1, 100) g;",
    );

    // The daily pipeline, as README shows it: snapshot, encrypt, ship to
    // both offsite stores.
    let pipeline = format!(
        "set -o pipefail; {snap} --out {repo} --physical --dbname appdb --globals \
         | {enc} -r {rcpt} --remove-plaintext \
         | {ship} --to {s3} --to {ssh} \
         | {verify} --checksums",
        snap = bin("pgb-snapshot").display(),
        enc = bin("pgb-encrypt").display(),
        ship = bin("pgb-ship").display(),
        verify = bin("pgb-verify").display(),
        repo = repo.display(),
        rcpt = o.recipient,
        s3 = o.s3_url("repo"),
        ssh = o.ssh_url("repo"),
    );
    let out = Command::new("bash")
        .args(["-c", &pipeline])
        .envs(c.env())
        .envs(o.s3.env())
        .env("PGB_SSH_OPTIONS", o.sshd.client_options())
        .env("PGB_PG_BINDIR", all_bindirs())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "daily pipeline: {}", stderr(&out));
    lap("daily pipeline");
    let shipped = records(&out.stdout);
    assert_eq!(shipped.len(), 3, "{shipped:?}");
    for r in &shipped {
        assert_eq!(r["type"], "artifact", "{r}");
        assert_eq!(r["copies"].as_array().unwrap().len(), 2, "{r}");
        assert!(r["encryption"].is_object(), "{r}");
    }

    // Rows before the target, the target, rows after it; a commit after
    // the target archived everywhere.
    c.sql(
        "appdb",
        "INSERT INTO t SELECT g, 'before T' FROM generate_series(101, 200) g;",
    );
    std::thread::sleep(Duration::from_millis(1100));
    let target = server_now(&c);
    std::thread::sleep(Duration::from_millis(1100));
    c.sql(
        "appdb",
        "INSERT INTO t SELECT g, 'after T' FROM generate_series(201, 300) g;",
    );
    let seg = c.sql("postgres", "SELECT pg_walfile_name(pg_switch_wal())");
    wait_archived(o, &local_wal, &seg, &c);
    lap("archived");

    // The host is lost.
    c.stop();
    for gone in [&c.data, &repo, &local_wal, &conf] {
        fs::remove_dir_all(gone).unwrap();
    }
    drop(c);
    drop(host);
    History {
        target,
        at_backup: "100|1|100".into(),
        at_target: "200|1|200".into(),
    }
}

/// One offsite store and what reaching it takes: the environment of every
/// command (no key in it) and the repository and archive URLs.
struct Store {
    name: &'static str,
    env: Vec<(&'static str, String)>,
    repo: String,
    wal: String,
    /// Files the server's user needs (credentials, ssh key).
    _owned: Scratch,
}

/// S3 alone: the endpoint and region, and a credentials file the server's
/// user can read (restore_command runs as that user).
fn s3_store(o: &Offsite) -> Store {
    let owned = Scratch::new("drill-aws");
    let creds = owned.path.join("credentials");
    let env: std::collections::HashMap<_, _> = o.s3.env().into_iter().collect();
    fs::write(
        &creds,
        format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
        ),
    )
    .unwrap();
    run(Command::new("chmod").arg("600").arg(&creds));
    give_to_owner(&owned.path);
    Store {
        name: "s3",
        env: vec![
            ("AWS_ENDPOINT_URL", o.s3.endpoint()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_SHARED_CREDENTIALS_FILE", creds.display().to_string()),
        ],
        repo: o.s3_url("repo"),
        wal: o.s3_url("wal"),
        _owned: owned,
    }
}

/// The SSH host alone: the operator's key and known_hosts, copied where
/// the server's user can read them.
fn ssh_store(o: &Offsite) -> Store {
    let owned = Scratch::new("drill-ssh");
    for f in ["client_key", "known_hosts"] {
        fs::copy(o.sshd.dir.path().join(f), owned.path.join(f)).unwrap();
    }
    run(Command::new("chmod")
        .args(["-R", "go-rwx"])
        .arg(&owned.path));
    give_to_owner(&owned.path);
    let opts = o.sshd.client_options().replace(
        &o.sshd.dir.path().display().to_string(),
        &owned.path.display().to_string(),
    );
    Store {
        name: "ssh",
        env: vec![("PGB_SSH_OPTIONS", opts)],
        repo: o.ssh_url("repo"),
        wal: o.ssh_url("wal"),
        _owned: owned,
    }
}

/// A command of the drill: a pgb tool or a server program, with the
/// store's environment and nothing else of ours (no AWS key).
fn command(store: &Store, argv: &[String]) -> Command {
    let mut c = match argv[0].as_str() {
        "pg_ctl" => as_owner(bindir_of(15).join("pg_ctl")),
        tool => Command::new(bin(tool)),
    };
    c.args(&argv[1..])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_CONFIG_FILE")
        .env_remove("PGHOST")
        .env_remove("PGPORT")
        .envs(store.env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("PGB_PG_BINDIR", all_bindirs())
        .stdin(Stdio::null());
    c
}

/// Recovers the lost host from `store` alone and checks what it finds.
fn recover(o: &Offsite, store: &Store, h: &History) {
    let s = &store.name;
    let new = Scratch::new(&format!("drill-new-{s}"));
    let pgdata = new.path.join("data");
    let socket = new.owned_dir("sock");
    let id = o.identity.display().to_string();
    let v = |x: &str| x.to_string();
    // The whole recovery, as an operator types it.
    let pitr: Vec<Vec<String>> = vec![
        vec![
            v("pgb-list"),
            v("--repo"),
            store.repo.clone(),
            v("--wal-archive"),
            store.wal.clone(),
            v("--json"),
        ],
        vec![
            v("pgb-restore"),
            v("--repo"),
            store.repo.clone(),
            v("--pgdata"),
            pgdata.display().to_string(),
            v("--wal-archive"),
            store.wal.clone(),
            v("--target-time"),
            h.target.clone(),
            v("-i"),
            id.clone(),
        ],
        vec![
            v("pg_ctl"),
            v("-D"),
            pgdata.display().to_string(),
            v("-l"),
            new.path.join("server.log").display().to_string(),
            v("-o"),
            format!("-k {} -c archive_mode=off", socket.display()),
            v("-w"),
            v("start"),
        ],
    ];
    let logical = vec![
        v("pgb-restore"),
        v("--repo"),
        store.repo.clone(),
        v("--database"),
        v("appdb"),
        v("-C"),
        v("-d"),
        v("appdb_from_dump"),
        v("-h"),
        socket.display().to_string(),
        v("-U"),
        v("postgres"),
        v("-i"),
        id.clone(),
    ];
    let commands = pitr.len() + 1;
    assert!(
        commands <= 4,
        "{s}: a point-in-time recovery takes {commands} commands"
    );
    let mut outputs = Vec::new();
    // The restored server, stopped and removed when dropped.
    let mut server: Option<Cluster> = None;
    for argv in pitr.iter().chain([&logical]) {
        let t0 = Instant::now();
        let out = command(store, argv).output().unwrap();
        let err = stderr(&out);
        assert_eq!(
            code(&out),
            0,
            "{s}: {argv:?}: {err}\n{}",
            fs::read_to_string(new.path.join("server.log")).unwrap_or_default()
        );
        assert!(!err.contains(S3_SECRET), "{s}: secret leaked: {err}");
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains(S3_SECRET),
            "{s}: secret leaked"
        );
        eprintln!(
            "drill {s}: {:.1}s {}",
            t0.elapsed().as_secs_f64(),
            argv.join(" ")
        );
        outputs.push(out);
        if argv[0] == "pg_ctl" {
            // (3) the server recovers to the target and promotes.
            let r = server.insert(Cluster {
                scratch: Scratch {
                    path: new.path.clone(),
                },
                data: pgdata.clone(),
                socket: socket.clone(),
                port: 5432,
                archive: None,
                bindir: bindir_of(15),
            });
            r.wait_for("SELECT pg_is_in_recovery()", "f");
            assert_eq!(
                r.sql("appdb", "SELECT count(*), min(i), max(i) FROM t"),
                h.at_target,
                "{s}: exactly the rows written before the target"
            );
            assert_eq!(
                r.sql("appdb", "SELECT count(*) FROM t WHERE note = 'after T'"),
                "0"
            );
        }
    }

    // (1) the listing names the physical backup and the logical dump, in
    // the repository it was read from.
    let listed = records(&outputs[0].stdout);
    for kind in ["physical", "logical", "globals"] {
        let l = listed
            .iter()
            .find(|r| r["type"] == "listing" && r["kind"] == kind)
            .unwrap_or_else(|| panic!("{s}: no {kind} listed: {listed:?}"));
        assert_eq!(l["repo"], Value::from(store.repo.clone()), "{s}: {l}");
        assert_eq!(l["encrypted"], true, "{s}: {l}");
    }
    // ... and the moments it can be recovered to, from the archive there:
    // the target among them.
    let w = listed
        .iter()
        .find(|r| r["type"] == "recovery-window")
        .unwrap_or_else(|| panic!("{s}: no recovery window: {listed:?}"));
    assert_eq!(w["ok"], true, "{s}: {w}");
    assert_eq!(w["archives"], serde_json::json!([store.wal]), "{s}: {w}");
    let time = |x: &Value| pgb_common::when::parse_time("", x.as_str().unwrap()).unwrap();
    let target = time(&Value::from(h.target.clone()));
    assert!(
        time(&w["earliest"]) < target && target < time(&w["latest"]),
        "{s}: the target {} is not in the window {w}",
        h.target
    );
    // (2) one restore record, its checks passed.
    let restored = records(&outputs[1].stdout);
    assert_eq!(restored.len(), 1, "{s}: {restored:?}");
    assert_eq!(restored[0]["ok"], true, "{s}: {}", restored[0]);
    // restore_command reaches the store with where and how, never a key.
    let conf = fs::read_to_string(pgdata.join("postgresql.auto.conf")).unwrap();
    assert!(conf.contains(&store.wal), "{s}: {conf}");
    assert!(!conf.contains(S3_SECRET), "{s}: a secret in {conf}");
    // (4) the dump's rows, as they were at the backup.
    let r = server.expect("the server started");
    assert_eq!(
        r.sql("appdb_from_dump", "SELECT count(*), min(i), max(i) FROM t"),
        h.at_backup,
        "{s}"
    );
    assert_eq!(
        r.sql(
            "appdb_from_dump",
            "SELECT tableowner FROM pg_tables WHERE tablename = 't'"
        ),
        "app",
        "{s}: the owner, a role from the globals"
    );
    drop(r);
    drop(new);
}

/// The drill: one primary lost, recovered from S3 alone and from the SSH
/// host alone, each in at most four commands.
#[test]
fn a_lost_host_is_recovered_from_s3_alone_and_from_ssh_alone() {
    let t0 = Instant::now();
    let (sshd, s3) = std::thread::scope(|s| {
        let a = s.spawn(Sshd::start);
        let b = s.spawn(S3::start);
        (a.join().unwrap(), b.join().unwrap())
    });
    let remote = tempfile::Builder::new()
        .prefix("pgb-drill-remote.")
        .tempdir()
        .unwrap();
    for d in ["wal", "repo"] {
        fs::create_dir(remote.path().join(d)).unwrap();
    }
    let vault = tempfile::Builder::new()
        .prefix("pgb-drill-vault.")
        .tempdir()
        .unwrap();
    let (identity, recipient) = keypair(vault.path(), "drill");
    let o = Offsite {
        sshd,
        s3,
        remote,
        vault,
        identity,
        recipient,
    };
    let h = primary_then_lost(&o);
    eprintln!(
        "drill: primary lost after {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    let _ = &o.vault;
    // The two drills share nothing on this side (their own data directory
    // and socket each): run side by side.
    let (s3, ssh) = (s3_store(&o), ssh_store(&o));
    std::thread::scope(|sc| {
        let a = sc.spawn(|| recover(&o, &s3, &h));
        let b = sc.spawn(|| recover(&o, &ssh, &h));
        let (a, b) = (a.join(), b.join());
        if let Err(e) = a.and(b) {
            std::panic::resume_unwind(e);
        }
    });
    eprintln!("drill: done in {:.1}s", t0.elapsed().as_secs_f64());
}
