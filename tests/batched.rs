//! Whole-archive work on an SSH host in a bounded number of sessions: the
//! storage layer's batched calls (`remove_many`, `read_heads`,
//! `read_each`) behave the same in a directory, on a real sshd and in S3
//! (each S3 case against moto_server and s3s-fs), and the tools that use
//! them (pgb-check-archive, pgb-prune, pgb-restore) do one session per
//! batch on an SSH host, not one per file: counted by an `ssh` on PATH that
//! notes each invocation and hands it to the real client.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use pgb_common::dest::Destination;
use serde_json::{json, Value};

use crate::check_archive::{archiving_cluster, make_segments, segment_names};
use crate::servers::{S3Kind, Sshd, S3};
use crate::util::*;

/// A destination of each kind, empty: a directory, the same kind of
/// directory reached through sshd, and a prefix in S3.
struct Kinds {
    sshd: Sshd,
    s3: S3,
    root: tempfile::TempDir,
}

impl Kinds {
    fn start(kind: S3Kind) -> Kinds {
        let (sshd, s3) = std::thread::scope(|s| {
            let a = s.spawn(Sshd::start);
            let b = s.spawn(move || S3::start_kind(kind));
            (a.join().unwrap(), b.join().unwrap())
        });
        let root = tempfile::Builder::new()
            .prefix("pgb-batched.")
            .tempdir()
            .unwrap();
        for d in ["local", "remote"] {
            fs::create_dir(root.path().join(d)).unwrap();
        }
        // The tools read credentials from the environment; these are the
        // harness's, the same every S3 test hands its children.
        for (k, v) in s3.env() {
            if k != "AWS_ENDPOINT_URL" {
                std::env::set_var(k, v);
            }
        }
        Kinds { sshd, s3, root }
    }

    /// (destination, its directory on this machine when it has one).
    fn each(&self) -> Vec<(Destination, Option<PathBuf>)> {
        let opts: Vec<String> = self
            .sshd
            .client_options()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let local = self.root.path().join("local");
        let remote = self.root.path().join("remote");
        let mut ssh = Destination::parse_url(&self.sshd.url(&remote)).unwrap();
        ssh.add_ssh_options(&opts);
        let mut s3 = Destination::parse_url(&format!("s3://{}/batch", self.s3.bucket)).unwrap();
        s3.set_s3_endpoint(Some(&self.s3.endpoint()));
        vec![
            (Destination::Dir(local.clone()), Some(local)),
            (ssh, Some(remote)),
            (s3, None),
        ]
    }
}

fn body(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32 * 31 + seed as u32) as u8)
        .collect()
}

/// Heads, whole reads and removals of many files at once, the same on each
/// kind: answers in the order asked, absent files told apart (a file
/// removed since it was listed is an answer, not a failure of the whole),
/// unread rests skipped, removal in order with directories and absent
/// names, and (where there are symlinks) a path through a symlinked
/// directory refused, a symlink removed as the link it is.
fn batched_calls_behave_the_same_in_a_directory_on_ssh_and_in_s3(kind: S3Kind) {
    let t = Kinds::start(kind);
    let big = body(300_000, 7);
    for (d, dir) in t.each() {
        let url = d.root_url();
        d.put_bytes_replace(b"bee", "b").unwrap();
        d.put_bytes_replace(&big, "a/1").unwrap();
        d.put_bytes_replace(b"two", "a/2").unwrap();
        d.put_bytes_replace(b"three", "a/sub/3").unwrap();
        d.put_bytes_replace(b"name with spaces", "c d").unwrap();

        let heads = d
            .read_heads(&[("b", 2), ("a/1", 10), ("nope", 5), ("c d", 100)])
            .unwrap();
        assert_eq!(
            heads,
            vec![
                Some((3, b"be".to_vec())),
                Some((big.len() as u64, big[..10].to_vec())),
                None,
                Some((16, b"name with spaces".to_vec())),
            ],
            "{url}"
        );

        // The big one only half read: the next still arrives whole.
        let got = d
            .read_each(&["a/1", "nope", "b", "a/2", "c d"], |name, size, r| {
                let mut v = Vec::new();
                if name == "a/1" {
                    r.take(1000).read_to_end(&mut v).unwrap();
                } else {
                    r.read_to_end(&mut v).unwrap();
                }
                (name.to_string(), size, v)
            })
            .unwrap();
        assert_eq!(got.len(), 5, "{url}");
        assert_eq!(
            got[0].as_ref().unwrap(),
            &("a/1".to_string(), big.len() as u64, big[..1000].to_vec()),
            "{url}"
        );
        let why = got[1].as_ref().unwrap_err();
        assert!(why.contains("No such file"), "{url}: {why}");
        assert_eq!(
            got[2].as_ref().unwrap(),
            &("b".to_string(), 3, b"bee".to_vec())
        );
        assert_eq!(got[3].as_ref().unwrap().2, b"two", "{url}");
        assert_eq!(got[4].as_ref().unwrap().2, b"name with spaces", "{url}");
        assert!(d.read_each(&[], |_, _, _| ()).unwrap().is_empty());
        assert!(d.read_each(&["../x"], |_, _, _| ()).is_err(), "{url}");
        assert!(d.read_each(&["a\nb"], |_, _, _| ()).is_err(), "{url}");

        // Removal: files, a directory with what it holds, absent names.
        d.remove_many(&["a/2", "a", "nope", "x/y", "c d"]).unwrap();
        let left: Vec<String> = d
            .list("", "")
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .collect();
        assert_eq!(left, ["b"], "{url}");
        assert!(
            d.list("a", "").map(|l| l.is_empty()).unwrap_or(true),
            "{url}"
        );
        assert_eq!(d.size_of("a/sub/3").unwrap(), None, "{url}");
        assert!(d.remove_many(&["b", "/etc/passwd"]).is_err(), "{url}");
        assert_eq!(
            d.size_of("b").unwrap(),
            Some(3),
            "checked before anything goes"
        );
        d.remove_many(&["b"]).unwrap();
        assert!(d.list("", "").unwrap().is_empty(), "{url}");

        let Some(dir) = dir else { continue };
        // A symlinked directory below the root is never gone through: the
        // removal is refused and what it points to stays; the link itself
        // is removed as a link.
        let outside = t.root.path().join(format!("outside-{}", url.len()));
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("precious"), b"keep me").unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();
        fs::write(dir.join("first"), b"1").unwrap();
        let e = d.remove_many(&["first", "link/precious"]).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{url}: {e}");
        assert!(outside.join("precious").exists(), "{url}");
        assert!(!dir.join("first").exists(), "{url}: removed in order");
        let e = d.remove("link/precious").unwrap_err();
        assert!(e.to_string().contains("refus"), "{url}: {e}");
        d.remove_many(&["link"]).unwrap();
        assert!(fs::symlink_metadata(dir.join("link")).is_err(), "{url}");
        assert_eq!(fs::read(outside.join("precious")).unwrap(), b"keep me");
        // A symlink inside a removed directory is unlinked, not followed.
        fs::create_dir(dir.join("tree")).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("tree/in")).unwrap();
        d.remove_many(&["tree"]).unwrap();
        assert!(!dir.join("tree").exists(), "{url}");
        assert_eq!(fs::read(outside.join("precious")).unwrap(), b"keep me");
    }
}

/// The tests of what S3 must do, once against each server.
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

on_each_s3_server!(batched_calls_behave_the_same_in_a_directory_on_ssh_and_in_s3);

/// An `ssh` first on PATH that notes each invocation (the remote command,
/// on one line) in `log` and runs the real client: sessions are counted,
/// the real sshd does the work. When `PGB_TEST_VANISH` names a file, it is
/// removed as a session that streams files starts: a prune running
/// meanwhile, between the listing and the reads.
fn counting_ssh(dir: &Path, log: &Path) -> String {
    let real = ["/usr/bin/ssh", "/bin/ssh", "/usr/local/bin/ssh"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("ssh");
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let script = format!(
        "#!/bin/sh\nfor a; do last=$a; done\n\
         printf '%s\\n' \"$(printf '%s' \"$last\" | tr '\\n' ' ')\" >> '{log}'\n\
         case $last in *'exec tar'*) [ -n \"$PGB_TEST_VANISH\" ] && rm -f -- \"$PGB_TEST_VANISH\";; esac\n\
         exec {real} \"$@\"\n",
        log = log.display()
    );
    let p = bin.join("ssh");
    fs::write(&p, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// The sessions noted in `log` since it was last taken (emptied).
fn take_sessions(log: &Path) -> Vec<String> {
    let s = fs::read_to_string(log).unwrap_or_default();
    let _ = fs::remove_file(log);
    s.lines().map(str::to_string).collect()
}

/// Sessions whose remote command contains `what`.
fn count(sessions: &[String], what: &str) -> usize {
    sessions.iter().filter(|s| s.contains(what)).count()
}

/// What a check found, without where and when: the summary's counts and
/// each problem as (problem, file).
fn verdict(recs: &[Value]) -> (Value, Vec<(String, String)>) {
    let mut summary = recs
        .iter()
        .find(|r| r["type"] == "archive-summary")
        .unwrap_or_else(|| panic!("no summary in {recs:?}"))
        .clone();
    for k in ["archive", "checked_at", "age_seconds", "newest_mtime"] {
        summary.as_object_mut().unwrap().remove(k);
    }
    let mut problems: Vec<(String, String)> = recs
        .iter()
        .filter(|r| r["type"] == "archive-problem")
        .map(|r| {
            (
                r["problem"].as_str().unwrap().to_string(),
                r["file"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    problems.sort();
    (summary, problems)
}

/// A real cluster's WAL archive and physical backups on an SSH host:
/// pgb-check-archive reads the whole archive in three sessions (listing,
/// checksum files, one tar stream; --headers-only: listing and the first
/// pages) and finds exactly what it finds in the same directory read
/// locally, damage and a file pruned meanwhile included; pgb-restore sizes
/// a physical backup's files from one listing; pgb-prune removes an
/// expired backup and the WAL it no longer needs in one session each.
#[test]
fn whole_archive_work_on_an_ssh_host_takes_a_few_sessions_not_one_per_file() {
    let a = archiving_cluster("--compress zstd");
    make_segments(&a.cluster, &a.dir, 3);
    let repo = Scratch::new("batched-repo");
    let old = snapshot_records(&a.cluster, &repo.path, &["--physical"]);
    make_segments(&a.cluster, &a.dir, 3);
    // Names carry the UTC second.
    std::thread::sleep(Duration::from_millis(1100));
    let new = snapshot_records(&a.cluster, &repo.path, &["--physical"]);
    make_segments(&a.cluster, &a.dir, 3);
    let sshd = Sshd::start();
    let remote = Scratch::new("batched-remote");
    let (rrepo, rwal) = (remote.path.join("repo"), remote.path.join("wal"));
    fs::create_dir(&rrepo).unwrap();
    fs::create_dir(&rwal).unwrap();
    for e in fs::read_dir(&a.dir).unwrap().flatten() {
        fs::copy(e.path(), rwal.join(e.file_name())).unwrap();
    }
    // A later timeline's history, branching off in the last segment.
    let last = segment_names(&rwal).pop().unwrap();
    let segno = u64::from_str_radix(&last[8..16], 16).unwrap() * 4096
        + u64::from_str_radix(&last[16..], 16).unwrap();
    fs::write(
        rwal.join("00000002.history"),
        format!(
            "1\t0/{:X}\tno recovery target specified\n",
            (segno << 20) + 0x80000
        ),
    )
    .unwrap();
    let ssh_repo = sshd.url(&rrepo);
    let ssh_wal = sshd.url(&rwal);
    let opts = sshd.client_options();
    let (shipped_code, shipped, err) = pipe(
        Command::new(bin("pgb-ship"))
            .args(["--to", &ssh_repo])
            .env("PGB_SSH_OPTIONS", &opts),
        &[old.clone(), new.clone()].concat(),
    );
    assert_eq!(shipped_code, 0, "{err}");
    assert_eq!(shipped.len(), 2);

    let log = remote.path.join("sessions.log");
    let path = counting_ssh(&remote.path, &log);
    let run = |tool: &str, args: &[&str], vanish: Option<&Path>| -> Output {
        let mut c = Command::new(bin(tool));
        c.args(args)
            .env("PGB_SSH_OPTIONS", &opts)
            .env("PATH", &path)
            .env("PGB_PG_BINDIR", all_bindirs())
            .stdin(Stdio::null());
        if let Some(v) = vanish {
            c.env("PGB_TEST_VANISH", v);
        }
        c.output().unwrap()
    };
    let local_wal = rwal.to_str().unwrap();
    let segments = segment_names(&rwal).len();
    assert!(segments >= 9, "{segments}");

    // The whole archive, read in full: the same verdict as locally.
    let here = run("pgb-check-archive", &[local_wal, "--json"], None);
    assert_eq!(
        code(&here),
        0,
        "{}\n{}",
        stderr(&here),
        String::from_utf8_lossy(&here.stdout)
    );
    take_sessions(&log);
    let there = run("pgb-check-archive", &[&ssh_wal, "--json"], None);
    assert_eq!(code(&there), 0, "{}", stderr(&there));
    let sessions = take_sessions(&log);
    assert_eq!(sessions.len(), 3, "{sessions:#?}");
    assert_eq!(count(&sessions, "exec tar -cf"), 1, "{sessions:#?}");
    let (summary, problems) = verdict(&records(&there.stdout));
    assert_eq!((summary.clone(), problems), verdict(&records(&here.stdout)));
    assert_eq!(
        summary["checksum_verified_segments"],
        json!(segments),
        "{summary}"
    );
    assert_eq!(summary["history_files"], json!(1), "{summary}");

    let heads = run(
        "pgb-check-archive",
        &[&ssh_wal, "--json", "--headers-only"],
        None,
    );
    assert_eq!(code(&heads), 0, "{}", stderr(&heads));
    let sessions = take_sessions(&log);
    // The listing, the first pages, the history file (with no checksum
    // file, none read).
    assert_eq!(sessions.len(), 3, "{sessions:#?}");
    assert_eq!(count(&sessions, "head -c"), 1, "{sessions:#?}");
    let local_heads = run(
        "pgb-check-archive",
        &[local_wal, "--json", "--headers-only"],
        None,
    );
    assert_eq!(
        verdict(&records(&heads.stdout)),
        verdict(&records(&local_heads.stdout))
    );

    // A flipped byte in one segment, a truncated other: found over SSH as
    // they are found locally.
    let mut zst: Vec<PathBuf> = fs::read_dir(&rwal)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_str().unwrap().ends_with(".zst"))
        .collect();
    zst.sort();
    let mut b = fs::read(&zst[2]).unwrap();
    let i = b.len() / 2;
    b[i] ^= 0x20;
    fs::write(&zst[2], &b).unwrap();
    let b = fs::read(&zst[4]).unwrap();
    fs::write(&zst[4], &b[..b.len() - 100]).unwrap();
    let here = run("pgb-check-archive", &[local_wal, "--json"], None);
    assert_eq!(code(&here), 1, "{}", stderr(&here));
    let there = run("pgb-check-archive", &[&ssh_wal, "--json"], None);
    assert_eq!(code(&there), 1, "{}", stderr(&there));
    let (_, problems) = verdict(&records(&there.stdout));
    assert_eq!(problems, verdict(&records(&here.stdout)).1);
    let name = |p: &Path| p.file_name().unwrap().to_str().unwrap().to_string();
    let named: Vec<&String> = problems.iter().map(|(_, f)| f).collect();
    assert!(
        named.contains(&&name(&zst[2])) && named.contains(&&name(&zst[4])),
        "{problems:?}"
    );
    fs::remove_file(&zst[2]).unwrap();
    fs::remove_file(&zst[4]).unwrap();
    fs::remove_file(rwal.join(format!("{}.sha256", name(&zst[2]).trim_end_matches(".zst")))).ok();
    fs::remove_file(rwal.join(format!("{}.sha256", name(&zst[4]).trim_end_matches(".zst")))).ok();

    // A segment pruned between the listing and the reads: unreadable,
    // named, and the rest still checked.
    take_sessions(&log);
    let gone = &zst[6];
    let there = run("pgb-check-archive", &[&ssh_wal, "--json"], Some(gone));
    assert_eq!(code(&there), 1, "{}", stderr(&there));
    assert!(!gone.exists());
    assert_eq!(take_sessions(&log).len(), 3);
    let recs = records(&there.stdout);
    let unreadable: Vec<&Value> = recs
        .iter()
        .filter(|r| r["type"] == "archive-problem" && r["problem"] == "unreadable")
        .collect();
    assert_eq!(unreadable.len(), 1, "{recs:?}");
    assert_eq!(unreadable[0]["file"], json!(name(gone)));
    assert!(
        unreadable[0]["detail"]
            .as_str()
            .unwrap()
            .contains("removed since"),
        "{recs:?}"
    );
    let (summary, _) = verdict(&recs);
    assert_eq!(
        summary["checksum_verified_segments"],
        json!(segment_names(&rwal).len()),
        "{summary}"
    );

    // pgb-restore: the backup's sizes from one listing, then its files.
    let dest = remote.path.join("restored");
    let o = run(
        "pgb-restore",
        &[
            "--repo",
            &ssh_repo,
            "--target-immediate",
            "-D",
            dest.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(dest.join("global/pg_control").is_file());
    let sessions = take_sessions(&log);
    let files = new[0]["files"].as_array().unwrap().len();
    assert!(files >= 2, "{new:?}");
    assert_eq!(
        count(&sessions, "wc -c <"),
        0,
        "no size asked file by file: {sessions:#?}"
    );
    assert!(sessions.len() <= files + 3, "{sessions:#?}");

    // pgb-prune: the older backup (all its files, its directory, its
    // sidecar) in one session, the WAL before the kept backup in another.
    let wal_before = segment_names(&rwal);
    let start_new = new[0]["wal"]["start_segment"].as_str().unwrap().to_string();
    let expired = wal_before.iter().filter(|s| **s < start_new).count();
    assert!(expired >= 3, "{wal_before:?} {start_new}");
    let o = run(
        "pgb-prune",
        &[
            "--repo",
            &ssh_repo,
            "--keep-last",
            "1",
            "--wal-archive",
            &ssh_wal,
            "--apply",
            "--json",
        ],
        None,
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let sessions = take_sessions(&log);
    // The lock's release is the third.
    let removals: Vec<&String> = sessions
        .iter()
        .filter(|s| s.contains("read -r rel"))
        .collect();
    assert_eq!(removals.len(), 3, "{sessions:#?}");
    assert_eq!(
        count(&sessions, &format!("r='{}'", rwal.display())),
        1,
        "{sessions:#?}"
    );
    // The history files in one read, no stat of each planned file.
    assert_eq!(count(&sessions, ".history"), 1, "{sessions:#?}");
    let recs = records(&o.stdout);
    assert!(
        recs.iter()
            .any(|r| r["type"] == "wal-expiry" && r["deleted"] == true),
        "{recs:?}"
    );
    let kept: Vec<String> = wal_before
        .iter()
        .filter(|s| **s >= start_new)
        .cloned()
        .collect();
    assert_eq!(segment_names(&rwal), kept);
    assert!(rwal.join("00000002.history").exists());
    let old_path = old[0]["path"].as_str().unwrap();
    let new_path = new[0]["path"].as_str().unwrap();
    assert!(!rrepo.join(old_path).exists());
    assert!(!rrepo.join(format!("{old_path}.pgb.json")).exists());
    assert!(rrepo.join(new_path).is_dir());
    assert!(rrepo.join(format!("{new_path}.pgb.json")).exists());
}

/// A mixed archive (plain, zstd, age, zstd+age segments of poorly
/// compressible bytes, with their checksum files, and a history file) on
/// an SSH host checks exactly as the same directory checked locally, in
/// every mode (full, --headers-only, each with and without -i), in at most
/// four sessions each.
#[test]
fn a_mixed_archive_on_ssh_checks_as_it_does_locally_in_every_mode() {
    let sshd = Sshd::start();
    let root = Scratch::new("batched-mixed");
    let (wal, src) = (root.path.join("wal"), root.path.join("src"));
    fs::create_dir(&wal).unwrap();
    fs::create_dir(&src).unwrap();
    let (id, recipient) = crate::wal::keypair(&root.path, "mixed");
    const SYSID: u64 = 7_000_000_000_000_000_002;
    for (n, extra) in [
        (&[][..], 1),
        (&["-Z", "zstd"][..], 2),
        (&["-r", &recipient][..], 3),
        (&["-Z", "zstd", "-r", &recipient][..], 4),
        (&["-Z", "zstd"][..], 5),
    ]
    .iter()
    .map(|(a, n)| (*n, *a))
    {
        let name = format!("0000000100000000000000{n:02X}");
        let p = src.join(&name);
        fs::write(&p, crate::wal::segment(&name, SYSID)).unwrap();
        let o = Command::new(bin("pgb-wal"))
            .arg("push")
            .arg(&p)
            .arg("--archive")
            .arg(&wal)
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(code(&o), 0, "{}", stderr(&o));
    }
    fs::write(
        wal.join("00000002.history"),
        b"1\t0/580000\tno recovery target specified\n",
    )
    .unwrap();
    let log = root.path.join("sessions.log");
    let path = counting_ssh(&root.path, &log);
    let url = sshd.url(&wal);
    let id = id.to_str().unwrap();
    for mode in [
        &[][..],
        &["--headers-only"][..],
        &["-i", id][..],
        &["-i", id, "--headers-only"][..],
    ] {
        let run = |archive: &str| {
            Command::new(bin("pgb-check-archive"))
                .arg(archive)
                .arg("--json")
                .args(mode)
                .env("PGB_SSH_OPTIONS", sshd.client_options())
                .env("PATH", &path)
                .stdin(Stdio::null())
                .output()
                .unwrap()
        };
        let here = run(wal.to_str().unwrap());
        take_sessions(&log);
        let there = run(&url);
        let sessions = take_sessions(&log);
        assert!(sessions.len() <= 4, "{mode:?}: {sessions:#?}");
        assert_eq!(code(&there), code(&here), "{mode:?}: {}", stderr(&there));
        let (summary, problems) = verdict(&records(&there.stdout));
        assert_eq!(
            (summary.clone(), problems),
            verdict(&records(&here.stdout)),
            "{mode:?}"
        );
        assert_eq!(summary["segments"], json!(5), "{mode:?}: {summary}");
        if mode.len() == 2 {
            assert_eq!(summary["unchecked_segments"], json!(0), "{mode:?}");
        }
        if mode.is_empty() || mode == ["-i", id] {
            assert_eq!(summary["ok"], json!(true), "{mode:?}: {summary}");
        }
    }
}
