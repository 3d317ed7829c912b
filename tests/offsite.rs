//! WAL offsite: pgb-wal push and get, and pgb-check-archive, with archives
//! in a directory, on a real sshd and in a real S3-compatible server, some
//! of them down. What S3 must do is checked against two independent
//! servers, moto_server and s3s-fs: each such test is a function of the
//! server kind, run by one test in `moto` and one in `s3s_fs` below.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::servers::{free_port, S3Kind, Sshd, S3, S3_SECRET};
use crate::util::{code, stderr};
use crate::wal::{keypair, segment};

/// The three kinds of archive, running; the SSH one is a directory on this
/// machine reached through sshd.
struct Archives {
    sshd: Sshd,
    s3: S3,
    root: tempfile::TempDir,
}

impl Archives {
    fn start() -> Archives {
        Archives::start_with(S3Kind::Moto)
    }

    fn start_with(kind: S3Kind) -> Archives {
        let (sshd, s3) = std::thread::scope(|s| {
            let a = s.spawn(Sshd::start);
            let b = s.spawn(move || S3::start_kind(kind));
            (a.join().unwrap(), b.join().unwrap())
        });
        let root = tempfile::Builder::new()
            .prefix("pgb-offsite.")
            .tempdir()
            .unwrap();
        for d in ["local", "remote", "src", "out"] {
            fs::create_dir(root.path().join(d)).unwrap();
        }
        Archives { sshd, s3, root }
    }

    fn dir(&self, d: &str) -> PathBuf {
        self.root.path().join(d)
    }

    fn local(&self) -> String {
        self.dir("local").display().to_string()
    }

    fn ssh(&self) -> String {
        self.sshd.url(&self.dir("remote"))
    }

    fn s3(&self) -> String {
        format!("s3://{}/wal", self.s3.bucket)
    }

    /// A storage-layer destination for `url` set up as the tools set theirs
    /// up: the harness's ssh options and S3 endpoint, and its S3
    /// credentials in this process's environment (the same every S3 test
    /// hands its children).
    fn destination(&self, url: &str) -> pgb_common::dest::Destination {
        for (k, v) in self.s3.env() {
            if k != "AWS_ENDPOINT_URL" {
                std::env::set_var(k, v);
            }
        }
        let opts: Vec<String> = self
            .sshd
            .client_options()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let mut d = pgb_common::dest::Destination::parse_url(url).unwrap();
        d.add_ssh_options(&opts);
        d.set_s3_endpoint(Some(&self.s3.endpoint()));
        d
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        let mut e = self.s3.env();
        e.push(("PGB_SSH_OPTIONS", self.sshd.client_options()));
        e
    }

    fn run(&self, tool: &str, args: &[String]) -> Output {
        let o = Command::new(crate::util::bin(tool))
            .args(args)
            .envs(self.env())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains(S3_SECRET), "secret leaked: {err}");
        assert!(
            !String::from_utf8_lossy(&o.stdout).contains(S3_SECRET),
            "secret leaked"
        );
        o
    }

    fn wal(&self, args: &[String]) -> Output {
        self.run("pgb-wal", args)
    }

    /// A segment file named `name` in src/, its bytes.
    fn segment(&self, name: &str, sysid: u64) -> (PathBuf, Vec<u8>) {
        let p = self.dir("src").join(name);
        let b = segment(name, sysid);
        fs::write(&p, &b).unwrap();
        (p, b)
    }

    fn push(&self, seg: &Path, archives: &[String], extra: &[&str]) -> Output {
        let mut a = vec!["push".to_string(), seg.display().to_string()];
        for x in archives {
            a.push("--archive".into());
            a.push(x.clone());
        }
        a.extend(extra.iter().map(|s| s.to_string()));
        self.wal(&a)
    }

    fn get(&self, name: &str, archives: &[String], extra: &[&str]) -> (Output, PathBuf) {
        let out = self.dir("out").join("RECOVERYXLOG");
        let _ = fs::remove_file(&out);
        let mut a = vec!["get".to_string(), name.into(), out.display().to_string()];
        for x in archives {
            a.push("--archive".into());
            a.push(x.clone());
        }
        a.extend(extra.iter().map(|s| s.to_string()));
        (self.wal(&a), out)
    }
}

/// Visible file names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    v.sort();
    v
}

const A: &str = "000000010000000000000003";
const B: &str = "000000010000000000000004";
const C: &str = "000000010000000000000005";
const SYSID: u64 = 7_000_000_000_000_000_001;

fn push_to_a_directory_s3_and_ssh_then_get_from_each_alone(kind: S3Kind) {
    let t = Archives::start_with(kind);
    let all = [t.local(), t.s3(), t.ssh()];
    let (id, recipient) = keypair(t.root.path(), "wal");
    let id = id.display().to_string();

    // Compressed and encrypted into all three; the checksum file beside
    // each is the same.
    let (seg_a, bytes_a) = t.segment(A, SYSID);
    let o = t.push(&seg_a, &all, &["-Z", "zstd", "-r", &recipient]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let stored = format!("{A}.zst.age");
    let sums = format!("{A}.sha256");
    assert_eq!(names(&t.dir("local")), [sums.clone(), stored.clone()]);
    assert_eq!(names(&t.dir("remote")), [sums.clone(), stored.clone()]);
    let mut keys = t.s3.keys();
    keys.sort();
    assert_eq!(keys, [format!("wal/{sums}"), format!("wal/{stored}")]);
    // The same plaintext checksum everywhere (each archive holds its own
    // ciphertext: age encryption is randomised).
    let first_line = |b: Vec<u8>| {
        String::from_utf8(b)
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .to_string()
    };
    let local_sums = first_line(fs::read(t.dir("local").join(&sums)).unwrap());
    assert_eq!(
        first_line(fs::read(t.dir("remote").join(&sums)).unwrap()),
        local_sums
    );
    assert_eq!(
        first_line(t.s3.get(&format!("wal/{sums}")).unwrap()),
        local_sums
    );
    // And the same blake3 of the plaintext, in the line sha256sum skips,
    // with the blake3 of each archive's own stored file after it.
    let blake3_lines = |b: Vec<u8>| -> Vec<String> {
        String::from_utf8(b)
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("# blake3 "))
            .map(str::to_string)
            .collect()
    };
    let local_b3 = blake3_lines(fs::read(t.dir("local").join(&sums)).unwrap());
    assert!(local_b3[0].ends_with(&format!("  {A}")), "{local_b3:?}");
    assert!(
        local_b3[1].ends_with(&format!("  {stored}")),
        "{local_b3:?}"
    );
    for other in [
        fs::read(t.dir("remote").join(&sums)).unwrap(),
        t.s3.get(&format!("wal/{sums}")).unwrap(),
    ] {
        let b3 = blake3_lines(other);
        assert_eq!(b3.len(), 2, "{b3:?}");
        assert_eq!(b3[0], local_b3[0]);
    }
    // The reference age CLI decrypts what went to S3.
    let enc = t.dir("out").join("from-s3.zst.age");
    fs::write(&enc, t.s3.get(&format!("wal/{stored}")).unwrap()).unwrap();
    let dec = crate::util::run(Command::new("age").args(["-d", "-i", &id]).arg(&enc));
    assert!(!dec.stdout.is_empty());

    // Plain (no compression, no encryption) into all three.
    let (seg_b, bytes_b) = t.segment(B, SYSID);
    let o = t.push(&seg_b, &all, &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(t.s3.get(&format!("wal/{B}")).unwrap(), bytes_b);
    assert_eq!(fs::read(t.dir("remote").join(B)).unwrap(), bytes_b);

    // Checksum files of an older pgb-wal (no blake3 lines) in the directory
    // and on the SSH host (S3 goes through the same remote code): the
    // identical re-push below adds the lines back.
    let strip = |b: Vec<u8>| -> Vec<u8> {
        String::from_utf8(b)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            .into_bytes()
    };
    for n in [A, B] {
        let rel = format!("{n}.sha256");
        for d in ["local", "remote"] {
            let p = t.dir(d).join(&rel);
            fs::write(&p, strip(fs::read(&p).unwrap())).unwrap();
        }
    }
    // PostgreSQL repeating a push after a crash: identical content is done,
    // in every kind, encrypted ones without the key.
    for (seg, extra) in [
        (&seg_a, vec!["-Z", "zstd", "-r", recipient.as_str()]),
        (&seg_b, vec![]),
    ] {
        let o = t.push(seg, &all, &extra);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        assert_eq!(
            stderr(&o).matches("identical content").count(),
            3,
            "{}",
            stderr(&o)
        );
    }

    for (n, lines) in [(A, 2), (B, 1)] {
        let rel = format!("{n}.sha256");
        for text in [
            fs::read(t.dir("local").join(&rel)).unwrap(),
            fs::read(t.dir("remote").join(&rel)).unwrap(),
            t.s3.get(&format!("wal/{rel}")).unwrap(),
        ] {
            assert_eq!(blake3_lines(text).len(), lines, "{n}");
        }
    }

    // Each archive alone serves both, checked against NAME.sha256.
    for archive in &all {
        let one = [archive.clone()];
        let (o, out) = t.get(A, &one, &["-i", &id]);
        assert_eq!(code(&o), 0, "{archive}: {}", stderr(&o));
        assert_eq!(fs::read(&out).unwrap(), bytes_a, "{archive}");
        let (o, out) = t.get(B, &one, &[]);
        assert_eq!(code(&o), 0, "{archive}: {}", stderr(&o));
        assert_eq!(fs::read(&out).unwrap(), bytes_b, "{archive}");
        // Not there: 1, which ends recovery normally.
        let (o, out) = t.get(C, &one, &[]);
        assert_eq!(code(&o), 1, "{archive}: {}", stderr(&o));
        assert!(!out.exists());
        // Encrypted without the key: a failure, not "not there".
        let (o, _) = t.get(A, &one, &[]);
        assert_eq!(code(&o), 255, "{archive}: {}", stderr(&o));
    }

    // A flipped byte in an S3 copy is damage: named, and passed over for a
    // good copy later in the list; alone, 255 with nothing written.
    // (Planted under another prefix: moto lets the harness create objects,
    // not replace them.)
    let mut bad = bytes_b.clone();
    bad[700_000] ^= 1;
    t.s3.put(&format!("bad/{B}"), &bad);
    t.s3.put(
        &format!("bad/{B}.sha256"),
        &fs::read(t.dir("local").join(format!("{B}.sha256"))).unwrap(),
    );
    let damaged = format!("s3://{}/bad", t.s3.bucket);
    let (o, out) = t.get(B, &[damaged.clone(), t.local()], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(fs::read(&out).unwrap(), bytes_b);
    assert!(stderr(&o).contains("does not match"), "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!("s3://{}/bad/{B}", t.s3.bucket)));
    let (o, out) = t.get(B, &[damaged], &[]);
    assert_eq!(code(&o), 255, "{}", stderr(&o));
    assert!(stderr(&o).contains("does not match"), "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!("s3://{}/bad/{B}", t.s3.bucket)));
    assert!(!out.exists());
    // And on the SSH host (its file and checksum file come in one session).
    let on_host = t.dir("remote").join(B);
    let mut bad = fs::read(&on_host).unwrap();
    bad[123_456] ^= 0x40;
    fs::write(&on_host, &bad).unwrap();
    let (o, out) = t.get(B, &[t.ssh()], &[]);
    assert_eq!(code(&o), 255, "{}", stderr(&o));
    assert!(stderr(&o).contains("does not match"), "{}", stderr(&o));
    assert!(!out.exists());
}

#[test]
fn an_archive_that_is_down_fails_the_push_and_is_skipped_by_get() {
    let mut t = Archives::start();
    let (seg_a, bytes_a) = t.segment(A, SYSID);
    let o = t.push(&seg_a, &[t.local(), t.s3(), t.ssh()], &["-Z", "zstd"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let (seg_b, bytes_b) = t.segment(B, SYSID);

    // An SSH host that refuses connections: the push fails (PostgreSQL
    // retries), after the other archives got it; nothing on the host.
    let refused = format!(
        "ssh://{}@127.0.0.1:{}{}",
        t.sshd.user,
        free_port(),
        t.dir("remote").display()
    );
    let o = t.push(&seg_b, &[t.local(), refused.clone()], &["-Z", "zstd"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("could not connect"), "{}", stderr(&o));
    assert!(t.dir("local").join(format!("{B}.zst")).is_file());

    // A directory missing on the host (an unmounted disk there) is an
    // error, never created.
    let gone = t.dir("remote").join("unmounted");
    let o = t.push(&seg_b, &[t.sshd.url(&gone)], &[]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("no such directory"), "{}", stderr(&o));
    assert!(!gone.exists());

    // get skips it, with a message, and finds the file further on.
    let (o, out) = t.get(A, &[refused.clone(), t.local()], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("skipped"), "{}", stderr(&o));
    assert_eq!(fs::read(&out).unwrap(), bytes_a);
    // Not in the archives that answered, but one could not be asked: the
    // file might be there, so 255 (recovery stops), never 1.
    let (o, _) = t.get(C, &[refused.clone(), t.local()], &[]);
    assert_eq!(code(&o), 255, "{}", stderr(&o));
    assert!(stderr(&o).contains("may be there"), "{}", stderr(&o));
    let (o, _) = t.get(C, &[t.local(), t.s3(), t.ssh()], &[]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));

    // sshd stopped: the same, and nothing partial under a final name.
    t.sshd.stop();
    let o = t.push(&seg_b, &[t.local(), t.ssh()], &["-Z", "zstd"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(!t.dir("remote").join(format!("{B}.zst")).exists());
    let (o, out) = t.get(A, &[t.ssh(), t.s3()], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(fs::read(&out).unwrap(), bytes_a);

    // moto stopped: the push fails, get skips it.
    let s3 = t.s3();
    let port = t.s3.port;
    drop(std::mem::replace(&mut t.s3, S3::start()));
    let down = format!("s3://{}/wal", t.s3.bucket);
    let mut env_down = t.env();
    for (k, v) in env_down.iter_mut() {
        if *k == "AWS_ENDPOINT_URL" {
            *v = format!("http://127.0.0.1:{port}");
        }
    }
    let run_down = |args: &[String]| {
        Command::new(crate::util::bin("pgb-wal"))
            .args(args)
            .envs(env_down.clone())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let _ = s3;
    let o = run_down(&[
        "push".into(),
        seg_b.display().to_string(),
        "--archive".into(),
        t.local(),
        "--archive".into(),
        down.clone(),
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(!stderr(&o).contains(S3_SECRET));
    let out = t.dir("out").join("X");
    let o = run_down(&[
        "get".into(),
        B.into(),
        out.display().to_string(),
        "--archive".into(),
        down.clone(),
        "--archive".into(),
        t.local(),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("skipped"), "{}", stderr(&o));
    assert_eq!(fs::read(&out).unwrap(), bytes_b);
    let o = run_down(&[
        "get".into(),
        C.into(),
        out.display().to_string(),
        "--archive".into(),
        down,
    ]);
    assert_eq!(code(&o), 255, "{}", stderr(&o));
}

fn a_different_file_already_archived_remotely_is_refused_and_kept(kind: S3Kind) {
    let t = Archives::start_with(kind);
    let (seg, _) = t.segment(A, SYSID);
    let o = t.push(&seg, &[t.s3(), t.ssh()], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let in_s3 = t.s3.get(&format!("wal/{A}")).unwrap();
    let on_ssh = fs::read(t.dir("remote").join(A)).unwrap();
    let sums = fs::read(t.dir("remote").join(format!("{A}.sha256"))).unwrap();
    // Another cluster's segment of the same name.
    let (seg, _) = t.segment(A, SYSID + 1);
    for (archive, extra) in [
        (t.s3(), vec![]),
        (t.ssh(), vec![]),
        (t.s3(), vec!["-Z", "zstd"]),
    ] {
        let o = t.push(&seg, std::slice::from_ref(&archive), &extra);
        assert_eq!(code(&o), 2, "{archive}: {}", stderr(&o));
        assert!(stderr(&o).contains("different content"), "{}", stderr(&o));
    }
    assert_eq!(t.s3.get(&format!("wal/{A}")).unwrap(), in_s3, "kept");
    assert_eq!(fs::read(t.dir("remote").join(A)).unwrap(), on_ssh, "kept");
    assert_eq!(
        fs::read(t.dir("remote").join(format!("{A}.sha256"))).unwrap(),
        sums
    );
    assert_eq!(t.s3.get(&format!("wal/{A}.sha256")).unwrap(), sums);
    assert!(t.s3.get(&format!("wal/{A}.zst")).is_none());

    // An object planted without a checksum file (another tool): compared by
    // content, identical counts as done and gets its checksum file.
    let (seg_b, bytes_b) = t.segment(B, SYSID);
    t.s3.put(&format!("wal/{B}"), &bytes_b);
    let o = t.push(&seg_b, &[t.s3()], &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("identical"), "{}", stderr(&o));
    assert!(t.s3.get(&format!("wal/{B}.sha256")).is_some());
}

/// The archive-summary and archive-problem records of a check.
fn records(o: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn check_archive_checks_every_archive_and_counts_copies(kind: S3Kind) {
    let t = Archives::start_with(kind);
    let all = [t.local(), t.s3(), t.ssh()];
    let names3: Vec<String> = (3..=6)
        .map(|i| format!("0000000100000000000000{i:02X}"))
        .collect();
    for n in &names3 {
        let (seg, _) = t.segment(n, SYSID);
        let o = t.push(&seg, &all, &["-Z", "zstd"]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
    }
    let prom = t.dir("out").join("archive.prom");
    let mut args: Vec<String> = all.to_vec();
    args.extend([
        "--copies".into(),
        "3".into(),
        "--prom".into(),
        prom.display().to_string(),
    ]);
    let o = t.run("pgb-check-archive", &args);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let recs = records(&o);
    let summaries: Vec<&Value> = recs
        .iter()
        .filter(|r| r["type"] == "archive-summary")
        .collect();
    assert_eq!(summaries.len(), 3, "{recs:?}");
    for s in &summaries {
        assert_eq!(s["ok"], true, "{s}");
        assert_eq!(s["segments"], 4, "{s}");
        assert_eq!(s["checksum_verified_segments"], 4, "{s}");
    }
    let text = fs::read_to_string(&prom).unwrap();
    for a in &all {
        assert!(
            text.contains(&format!("pgb_archive_segments{{archive=\"{a}\"}} 4")),
            "{text}"
        );
    }

    // One segment lost from the SSH host: the copies count names which
    // segment is missing where.
    fs::remove_file(t.dir("remote").join(format!("{}.zst", names3[1]))).unwrap();
    let o = t.run("pgb-check-archive", &args);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let recs = records(&o);
    let few: Vec<&Value> = recs
        .iter()
        .filter(|r| r["problem"] == "too-few-copies")
        .collect();
    assert_eq!(few.len(), 1, "{recs:?}");
    assert_eq!(few[0]["file"], names3[1].as_str());
    assert_eq!(few[0]["copies"], 2);
    assert_eq!(few[0]["missing_from"], serde_json::json!([t.ssh()]));
    let text = fs::read_to_string(&prom).unwrap();
    assert!(
        text.contains("pgb_archive_copies_missing_segments{archive=\"") && text.contains("} 1"),
        "{text}"
    );

    // An archive that cannot be checked (a host refusing): exit 2, the
    // others still checked and reported, its success metric 0, and no
    // copies verdict drawn from the rest.
    let refused = format!(
        "ssh://{}@127.0.0.1:{}{}",
        t.sshd.user,
        free_port(),
        t.dir("remote").display()
    );
    let o = t.run(
        "pgb-check-archive",
        &[
            t.local(),
            refused.clone(),
            "--copies".into(),
            "2".into(),
            "--prom".into(),
            prom.display().to_string(),
        ],
    );
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let recs = records(&o);
    assert!(recs
        .iter()
        .any(|r| r["type"] == "archive-summary" && r["archive"] == t.local().as_str()));
    assert!(
        !recs.iter().any(|r| r["problem"] == "too-few-copies"),
        "{recs:?}"
    );
    let text = fs::read_to_string(&prom).unwrap();
    assert!(
        text.contains(&format!(
            "pgb_archive_check_success{{archive=\"{refused}\"}} 0"
        )),
        "{text}"
    );

    // 3-2-1 needs another medium and an offsite copy: three directories on
    // one machine do not make it, the labelled set does.
    let mut args: Vec<String> = vec![
        format!("{}#media=disk", t.local()),
        format!("{}#media=object-storage,site=offsite", t.s3()),
        format!("{}#media=disk,site=offsite", t.ssh()),
        "--require".into(),
        "3-2-1".into(),
    ];
    let o = t.run("pgb-check-archive", &args);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    // The lost segment back: 3-2-1 holds.
    let (seg, _) = t.segment(&names3[1], SYSID);
    let o = t.push(&seg, &[t.ssh()], &["-Z", "zstd"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = t.run("pgb-check-archive", &args);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    args[0] = format!("{}#media=disk", t.local());
    args[1] = format!("{}#media=disk", t.s3());
    args[2] = format!("{}#media=disk", t.ssh());
    let o = t.run("pgb-check-archive", &args);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let recs = records(&o);
    let p: Vec<&Value> = recs
        .iter()
        .filter(|r| r["type"] == "archive-problem")
        .collect();
    assert!(
        p.iter()
            .any(|r| r["problem"] == "not-3-2-1"
                && r["detail"].as_str().unwrap().contains("offsite")),
        "{p:?}"
    );
}

/// A real cluster archiving to S3 alone through `pgb-wal push`, compressed;
/// its data directory gone, a base backup recovers from S3 through
/// `pgb-wal get` as restore_command and finds every row written after the
/// backup.
#[test]
fn a_real_cluster_archives_to_s3_and_recovers_from_it() {
    use crate::util::{bin, run, Cluster, Options, Scratch};
    let t = Archives::start();
    let s = Scratch::new("offsite-pitr");
    // archive_command and restore_command run as the server's user, with
    // the S3 settings from a wrapper (as a systemd drop-in would give them).
    let wrapper = s.path.join("pgb-wal-s3");
    let mut text = String::from("#!/bin/sh\n");
    for (k, v) in t.s3.env() {
        text.push_str(&format!("export {k}='{v}'\n"));
    }
    text.push_str(&format!("exec {} \"$@\"\n", bin("pgb-wal").display()));
    fs::write(&wrapper, text).unwrap();
    run(Command::new("chmod").arg("755").arg(&wrapper));
    let archive = format!("s3://{}/pitr", t.s3.bucket);
    let c = Cluster::with(Options {
        archive_command: Some(format!(
            "{} push %p --archive {archive} -Z zstd",
            wrapper.display()
        )),
        initdb_args: vec!["--wal-segsize=1".into()],
        ..Default::default()
    });
    c.sql(
        "postgres",
        "CREATE TABLE t (i int); INSERT INTO t SELECT generate_series(1, 100);",
    );
    let base = s.path.join("base");
    run(c
        .pg("pg_basebackup")
        .arg("-D")
        .arg(&base)
        .args(["-X", "none", "-c", "fast"]));
    let mut last = String::new();
    for i in 0..3 {
        last = c.sql(
            "postgres",
            &format!(
                "INSERT INTO t SELECT generate_series({a}, {b}); SELECT pg_walfile_name(pg_switch_wal());",
                a = 101 + i * 100,
                b = 200 + i * 100
            ),
        );
    }
    let want = format!("pitr/{last}.zst");
    let t0 = std::time::Instant::now();
    while !t.s3.keys().contains(&want) {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(60),
            "{want} never reached S3: {:?}\n{}",
            t.s3.keys(),
            c.server_log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(t.s3.get(&format!("pitr/{last}.sha256")).is_some());
    c.stop();
    drop(c);

    // Recovery from S3 alone: every segment after the backup is fetched,
    // checked against its NAME.sha256, and replayed to the end of the
    // archive (get exits 1 there), then the server promotes.
    fs::write(base.join("recovery.signal"), "").unwrap();
    let r = Cluster::adopt(
        Scratch::new("offsite-restored"),
        base,
        5432,
        &format!(
            "archive_mode = off\nrestore_command = '{} get %f %p --archive {archive}'\n",
            wrapper.display()
        ),
    );
    r.wait_for("SELECT pg_is_in_recovery()", "f");
    assert_eq!(
        r.sql("postgres", "SELECT count(*), max(i) FROM t"),
        "400|400"
    );
    let log = r.server_log();
    assert!(
        log.contains(&format!("restored log file \"{last}\"")),
        "{log}"
    );
}

/// The storage layer every tool's archives go through, the same cases on
/// each kind: listing by prefix (with neighbours that must not show), small
/// reads of present and absent files, streaming reads, a create beside a
/// checksum file that never replaces (guards, conflicting content kept),
/// removal, and a root that is not there.
fn the_storage_layer_behaves_the_same_in_a_directory_on_ssh_and_in_s3(kind: S3Kind) {
    use pgb_common::dest::{Created, Destination, Readback};
    use std::io::Read;
    let t = Archives::start_with(kind);
    let kinds = [t.local(), t.ssh(), format!("s3://{}/conf", t.s3.bucket)];
    let src = t.dir("src");
    for (i, url) in kinds.iter().enumerate() {
        let d = t.destination(url);
        assert!(d.list("", "").unwrap().is_empty(), "{url}: empty at first");
        // Neighbours in name order on both sides of the prefix.
        for n in ["e1", "f", "f00", "f01", "f29", "fz", "g1"] {
            d.put_bytes_replace(n.as_bytes(), n).unwrap();
        }
        let mut got: Vec<String> = d
            .list("", "f")
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .collect();
        got.sort();
        assert_eq!(got, ["f", "f00", "f01", "f29", "fz"], "{url}");
        let l = d.list("", "f29").unwrap();
        assert_eq!(l.len(), 1, "{url}");
        assert_eq!((l[0].name.as_str(), l[0].size), ("f29", 3), "{url}");
        assert!(l[0].modified.is_some(), "{url}");
        assert_eq!(
            d.read_small("f01", 100).unwrap(),
            Some(b"f01".to_vec()),
            "{url}"
        );
        assert_eq!(d.read_small("nope", 100).unwrap(), None, "{url}");

        // A file created beside its checksum file, then refused.
        let body: Vec<u8> = (0..300_000u32).map(|x| (x * 31 + i as u32) as u8).collect();
        let file = src.join(format!("body{i}"));
        fs::write(&file, &body).unwrap();
        let dg = pgb_common::digest::hash_reader(&body[..]).unwrap();
        let c = d
            .create_beside(&file, "W", &dg, &["W", "W.zst"], "W.sha256", b"sums\n")
            .unwrap();
        assert_eq!(c, Created::Published, "{url}");
        let mut back = Vec::new();
        d.open_read("W").unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, body, "{url}");
        assert_eq!(
            d.read_small("W.sha256", 100).unwrap(),
            Some(b"sums\n".to_vec())
        );
        let c = d
            .create_beside(&file, "W", &dg, &["W", "W.zst"], "W.sha256", b"other\n")
            .unwrap();
        assert_eq!(c, Created::Exists("W".into()), "{url}");
        assert_eq!(
            d.read_small("W.sha256", 100).unwrap(),
            Some(b"sums\n".to_vec()),
            "{url}: untouched"
        );
        let other = src.join(format!("other{i}"));
        fs::write(&other, b"different").unwrap();
        let odg = pgb_common::digest::hash_reader(&b"different"[..]).unwrap();
        let e = d
            .put_file(&other, "W", &odg, &|_| {}, Readback::Cache)
            .unwrap_err();
        assert!(e.to_string().contains("different content"), "{url}: {e}");
        let mut back = Vec::new();
        d.open_read("W").unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, body, "{url}: kept");
        // The first of several names present, with the file beside it.
        let o = d
            .open_first(&["V", "W.zst", "W"], "W.sha256")
            .unwrap()
            .unwrap();
        assert_eq!((o.rel.as_str(), o.size), ("W", body.len() as u64), "{url}");
        assert_eq!(o.side.as_deref(), Some(&b"sums\n"[..]), "{url}");
        let mut back = Vec::new();
        { o.reader }.read_to_end(&mut back).unwrap();
        assert_eq!(back, body, "{url}");
        assert!(
            d.open_first(&["V", "W.zst"], "W.sha256").unwrap().is_none(),
            "{url}"
        );
        // No temp left where a listing would see it.
        let names: Vec<String> = d
            .list("", "")
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .collect();
        assert!(
            names.iter().all(|n| !n.contains(".pgb-tmp")),
            "{url}: {names:?}"
        );

        d.remove("W").unwrap();
        d.remove("W").unwrap();
        assert_eq!(d.size_of("W").unwrap(), None, "{url}");
        assert!(
            d.open_read("W")
                .and_then(|mut r| {
                    let mut v = Vec::new();
                    r.read_to_end(&mut v)
                        .map_err(|e| pgb_common::Error::msg(e.to_string()))
                })
                .is_err(),
            "{url}: reading what is gone fails"
        );
    }
    // A root that is not there: an error for a directory and on the host
    // (an unmounted disk), only empty for an S3 prefix.
    let gone = t.dir("gone");
    let ssh_gone = t.destination(&t.sshd.url(&gone));
    assert!(Destination::parse_url(&gone.display().to_string())
        .unwrap()
        .list("", "")
        .is_err());
    assert!(ssh_gone.list("", "").is_err());
    let s3_other = t.destination(&format!("s3://{}/none", t.s3.bucket));
    assert!(s3_other.list("", "").unwrap().is_empty());
}

/// How a remote repository's sidecars are read: every file below a root
/// (or one of its directories) ending in the suffix, recursively, with
/// hidden names and hidden directories skipped, each with its first bytes,
/// the same in a directory, on an SSH host and in S3; a root that is not
/// there is an error except for an S3 prefix.
#[test]
fn read_tree_finds_the_same_sidecars_in_a_directory_on_ssh_and_in_s3() {
    use pgb_common::dest::Destination;
    let t = Archives::start();
    let kinds = [t.local(), t.ssh(), format!("s3://{}/tree", t.s3.bucket)];
    let files = [
        ("main/physical/b1/base.tar.zst", "tar"),
        ("main/physical/b1.pgb.json", "{\"b\":1}"),
        (
            "main/logical/app db/app.dump.age.pgb.json",
            "{\"d\":\"a long sidecar\"}",
        ),
        ("main/logical/app db/.app.dump.pgb.json.pgb-tmp.7", "{}"),
        ("main/.hidden/x.pgb.json", "{}"),
        ("top.pgb.json", "{}"),
        ("top.pgb.json.old", "{}"),
    ];
    for url in &kinds {
        let d = t.destination(url);
        if let Destination::Dir(root) = &d {
            for (rel, _) in files {
                fs::create_dir_all(root.join(rel).parent().unwrap()).unwrap();
            }
        }
        if url.starts_with("ssh://") {
            for (rel, _) in files {
                fs::create_dir_all(t.dir("remote").join(rel).parent().unwrap()).unwrap();
            }
        }
        for (rel, body) in files {
            d.put_bytes_replace(body.as_bytes(), rel).unwrap();
        }
        let got = d.read_tree("", ".pgb.json", 8).unwrap();
        assert_eq!(
            got,
            vec![
                (
                    "main/logical/app db/app.dump.age.pgb.json".to_string(),
                    b"{\"d\":\"a ".to_vec()
                ),
                (
                    "main/physical/b1.pgb.json".to_string(),
                    b"{\"b\":1}".to_vec()
                ),
                ("top.pgb.json".to_string(), b"{}".to_vec()),
            ],
            "{url}"
        );
        let below: Vec<String> = d
            .read_tree("main/physical", ".pgb.json", 100)
            .unwrap()
            .into_iter()
            .map(|(rel, _)| rel)
            .collect();
        assert_eq!(below, ["main/physical/b1.pgb.json"], "{url}");
        assert!(d.read_tree("..", ".pgb.json", 100).is_err(), "{url}");
        let none = d.read_tree("nowhere", ".pgb.json", 100);
        if url.starts_with("s3://") {
            assert!(none.unwrap().is_empty(), "{url}");
        } else {
            assert!(none.is_err(), "{url}: a directory that is not there");
        }
    }
}

/// S3 settings from the shared AWS files of AWS_PROFILE, no key in the
/// environment, as an operator's ~/.aws holds them.
#[test]
fn s3_settings_come_from_aws_profile_too() {
    let t = Archives::start();
    let aws = t.dir("aws");
    fs::create_dir(&aws).unwrap();
    let env: std::collections::HashMap<_, _> = t.s3.env().into_iter().collect();
    fs::write(
        aws.join("credentials"),
        format!(
            "[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n\
             [pgb]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
        ),
    )
    .unwrap();
    fs::write(
        aws.join("config"),
        format!(
            "[profile pgb]\nregion = us-east-1\nendpoint_url = {}\n",
            t.s3.endpoint()
        ),
    )
    .unwrap();
    let (seg, bytes) = t.segment(A, SYSID);
    let out = t.dir("out").join("RECOVERYXLOG");
    let archive = format!("s3://{}/profile", t.s3.bucket);
    for args in [
        vec!["push".to_string(), seg.display().to_string()],
        vec!["get".to_string(), A.to_string(), out.display().to_string()],
    ] {
        let o = Command::new(crate::util::bin("pgb-wal"))
            .args(&args)
            .args(["--archive", &archive])
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_REGION")
            .env("AWS_PROFILE", "pgb")
            .env("AWS_SHARED_CREDENTIALS_FILE", aws.join("credentials"))
            .env("AWS_CONFIG_FILE", aws.join("config"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains(S3_SECRET));
    }
    assert_eq!(fs::read(&out).unwrap(), bytes);
    assert_eq!(t.s3.get(&format!("profile/{A}")).unwrap(), bytes);
}

/// A push killed at any moment leaves, under the final name on the SSH host
/// and in S3, either nothing or the whole file, never part of it; the next
/// push (PostgreSQL retrying) completes it or finds it identical.
fn a_push_killed_at_any_moment_leaves_nothing_partial_remotely(server: S3Kind) {
    let t = Archives::start_with(server);
    // 48 MB: several S3 parts (a multipart upload above 16 MB), and long
    // enough on the SSH host for the kills to land mid-transfer.
    let name = "00000001000000000000000A";
    let src = t.dir("src").join(name);
    let body = crate::wal::noise(48 << 20);
    fs::write(&src, &body).unwrap();
    let mut cut_short = std::collections::BTreeMap::new();
    // The SSH rounds once, with moto.
    let mut rounds = vec![("s3", 30u64), ("s3", 150), ("s3", 400)];
    if server == S3Kind::Moto {
        rounds.extend([("ssh", 30), ("ssh", 150), ("ssh", 400)]);
    }
    for (round, (kind, at)) in rounds.into_iter().enumerate() {
        // A fresh archive each round, so every kill meets an upload.
        let remote = t.dir("remote").join(format!("k{round}"));
        fs::create_dir(&remote).unwrap();
        let s3_key = format!("k{round}/{name}");
        let archive = if kind == "ssh" {
            t.sshd.url(&remote)
        } else {
            format!("s3://{}/k{round}", t.s3.bucket)
        };
        let mut child = Command::new(crate::util::bin("pgb-wal"))
            .args(["push"])
            .arg(&src)
            .args(["--archive", &archive])
            .envs(t.env())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(at));
        let finished = child.try_wait().unwrap().is_some();
        let _ = child.kill();
        let _ = child.wait();
        // Whatever the host or server still finishes of a killed client
        // comes to an end quickly; then the final name is whole or absent.
        std::thread::sleep(std::time::Duration::from_millis(300));
        let stored = if kind == "s3" {
            t.s3.get(&s3_key)
        } else {
            fs::read(remote.join(name)).ok()
        };
        match stored {
            Some(b) => assert!(
                b == body,
                "{archive} killed after {at} ms: a partial file ({} bytes)",
                b.len()
            ),
            None if !finished => *cut_short.entry(kind).or_insert(0) += 1,
            None => panic!("{archive}: the push finished and left nothing"),
        }
        // PostgreSQL retries: done, and the archive holds it whole.
        let o = t.push(&src, std::slice::from_ref(&archive), &[]);
        assert_eq!(code(&o), 0, "{archive}: {}", stderr(&o));
        let whole = if kind == "s3" {
            t.s3.get(&s3_key).unwrap()
        } else {
            fs::read(remote.join(name)).unwrap()
        };
        assert!(whole == body, "{archive}: not the file after the retry");
    }
    // The kills did land mid-push (not all after it finished).
    assert!(
        cut_short.contains_key("s3") && (server != S3Kind::Moto || cut_short.contains_key("ssh")),
        "{cut_short:?}"
    );
}

/// A server that goes away mid-upload, and then answers only errors, fails
/// the push (exit 2: PostgreSQL keeps the segment and retries) and loses
/// nothing: under the final name there is nothing or the very file, never
/// a part of it; once the server is back the retried push completes and
/// get returns the same bytes. Cut in the first requests, mid-way through
/// a 16 MiB segment's single PUT, and mid-way through a 32 MiB segment's
/// multipart upload (16 MiB parts).
fn a_server_failing_mid_upload_fails_the_push_and_loses_nothing(server: S3Kind) {
    use crate::servers::Proxy;
    let s3 = S3::start_kind(server);
    let proxy = Proxy::start(s3.port);
    let dir = tempfile::Builder::new()
        .prefix("pgb-offsite.")
        .tempdir()
        .unwrap();
    let env: Vec<(&str, String)> = s3
        .env()
        .into_iter()
        .map(|(k, v)| match k {
            "AWS_ENDPOINT_URL" => (k, proxy.endpoint()),
            _ => (k, v),
        })
        .collect();
    let wal = |args: &[&str]| {
        let o = Command::new(crate::util::bin("pgb-wal"))
            .args(args)
            .envs(env.clone())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!stderr(&o).contains(S3_SECRET), "secret leaked");
        o
    };
    let archive = format!("s3://{}/cut", s3.bucket);
    for (i, (size, cut)) in [
        (16usize << 20, 900u64),
        (16 << 20, 8 << 20),
        (32 << 20, 24 << 20),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("00000001000000000000001{i}");
        let src = dir.path().join(&name);
        let body = crate::wal::segment_sized(&name, SYSID, size);
        fs::write(&src, &body).unwrap();
        let src = src.display().to_string();
        let key = format!("cut/{name}");
        let what = format!("{size} bytes cut after {cut}");

        proxy.cut_after(cut);
        let o = wal(&["push", &src, "--archive", &archive]);
        assert!(proxy.was_cut(), "{what}: {}", stderr(&o));
        assert_eq!(code(&o), 2, "{what}: {}", stderr(&o));
        assert!(stderr(&o).contains(&archive), "{what}: {}", stderr(&o));
        if let Some(b) = s3.get(&key) {
            assert!(b == body, "{what}: {} bytes under the final name", b.len());
        }

        // The server back: PostgreSQL's retry completes the push.
        proxy.heal();
        let o = wal(&["push", &src, "--archive", &archive]);
        assert_eq!(code(&o), 0, "{what}: {}", stderr(&o));
        assert!(s3.get(&key).unwrap() == body, "{what}: not the file");
        let out = dir.path().join("RECOVERYXLOG");
        let o = wal(&[
            "get",
            &name,
            &out.display().to_string(),
            "--archive",
            &archive,
        ]);
        assert_eq!(code(&o), 0, "{what}: {}", stderr(&o));
        assert!(fs::read(&out).unwrap() == body, "{what}: get");
        fs::remove_file(&out).unwrap();
    }
}

/// The tests of what S3 must do, once against each server.
/// A repository in S3, on each server implementation: two logical dumps
/// shipped there and the local repository deleted; then pgb-list lists
/// them located in the bucket, pgb-verify checks and test-restores the
/// newest where it lies (its verdict lands in the sidecar in the bucket),
/// pgb-restore restores it into a new database with its row counts, and
/// pgb-prune --keep-last 1 --apply deletes the older one's objects and
/// sidecar and keeps the newest.
fn a_repository_in_s3_is_listed_verified_restored_and_pruned(kind: S3Kind) {
    use crate::util::{bin, pipe, snapshot_records, Cluster, Options, Scratch};
    let c = Cluster::with(Options {
        major: Some(15),
        ..Default::default()
    });
    c.sql("postgres", "CREATE DATABASE appdb");
    c.sql(
        "appdb",
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 300)",
    );
    let s3 = S3::start_kind(kind);
    let env = s3.env();
    let repo_url = format!("s3://{}/pg", s3.bucket);
    let local = Scratch::new("s3repo-local");
    let mut shipped = Vec::new();
    for _ in 0..2 {
        let recs = snapshot_records(&c, &local.path, &["-d", "appdb"]);
        let (status, out, err) = pipe(
            Command::new(bin("pgb-ship"))
                .args(["--to", &repo_url])
                .envs(env.iter().map(|(k, v)| (*k, v.as_str()))),
            &recs,
        );
        assert_eq!(status, 0, "{err}");
        shipped.extend(out);
        // Distinct ids: they carry the second.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    fs::remove_dir_all(&local.path).unwrap();
    let (old, new) = (&shipped[0], &shipped[1]);
    let run = |tool: &str, args: &[&str]| -> Output {
        let o = c
            .tool(tool)
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        assert!(!stderr(&o).contains(S3_SECRET), "secret leaked");
        o
    };

    let o = run("pgb-list", &["--repo", &repo_url, "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let listed = records(&o);
    let ids: Vec<&Value> = listed.iter().map(|r| &r["id"]).collect();
    assert!(
        ids.contains(&&old["id"]) && ids.contains(&&new["id"]),
        "{listed:?}"
    );
    assert!(
        listed.iter().all(|r| r["repo"] == repo_url.as_str()),
        "{listed:?}"
    );

    let o = run(
        "pgb-verify",
        &["--repo", &repo_url, "--checksums", "--restore", "--json"],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let sidecar: Value = serde_json::from_slice(
        &s3.get(&format!("pg/{}.pgb.json", new["path"].as_str().unwrap()))
            .expect("sidecar in the bucket"),
    )
    .unwrap();
    let methods: Vec<&str> = sidecar["verified"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["ok"] == true)
        .filter_map(|v| v["method"].as_str())
        .collect();
    assert!(
        methods.contains(&"checksums") && methods.contains(&"restore"),
        "{sidecar}"
    );

    let o = run(
        "pgb-restore",
        &[
            "--repo",
            &repo_url,
            "--database",
            "appdb",
            "-d",
            "copy",
            "-C",
            "--json",
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(c.sql("copy", "SELECT count(*) FROM t").trim(), "300");

    let o = run(
        "pgb-prune",
        &["--repo", &repo_url, "--keep-last", "1", "--apply", "--json"],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let left: Vec<String> = s3
        .keys()
        .into_iter()
        .filter(|k| k.starts_with("pg/"))
        .collect();
    let old_path = format!("pg/{}", old["path"].as_str().unwrap());
    let new_path = format!("pg/{}", new["path"].as_str().unwrap());
    assert!(!left.iter().any(|k| k.starts_with(&old_path)), "{left:?}");
    assert!(left.contains(&new_path), "{left:?}");
    assert!(left.contains(&format!("{new_path}.pgb.json")), "{left:?}");
}

macro_rules! on_each_s3_server {
    ($($name:ident),* $(,)?) => {
        mod moto {
            $(#[test]
            fn $name() {
                super::$name(super::S3Kind::Moto)
            })*
        }
        mod s3s_fs {
            $(#[test]
            fn $name() {
                super::$name(super::S3Kind::S3sFs)
            })*
        }
    };
}

on_each_s3_server!(
    push_to_a_directory_s3_and_ssh_then_get_from_each_alone,
    a_different_file_already_archived_remotely_is_refused_and_kept,
    check_archive_checks_every_archive_and_counts_copies,
    the_storage_layer_behaves_the_same_in_a_directory_on_ssh_and_in_s3,
    a_push_killed_at_any_moment_leaves_nothing_partial_remotely,
    a_server_failing_mid_upload_fails_the_push_and_loses_nothing,
    a_repository_in_s3_is_listed_verified_restored_and_pruned,
);
