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

use pgb_common::dest::Destination;

use crate::servers::{S3Kind, Sshd, S3};

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

/// An `ssh` first on PATH that notes each invocation (the remote command's
/// first words) in `log` and runs the real client: sessions are counted,
/// the real sshd does the work.
pub fn counting_ssh(dir: &Path, log: &Path) -> String {
    let real = ["/usr/bin/ssh", "/bin/ssh", "/usr/local/bin/ssh"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("ssh");
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let script = format!(
        "#!/bin/sh\nfor a; do last=$a; done\n\
         printf '%s\\n' \"$(printf '%s' \"$last\" | tr '\\n' ' ' | cut -c1-60)\" >> '{log}'\n\
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
pub fn take_sessions(log: &Path) -> Vec<String> {
    let s = fs::read_to_string(log).unwrap_or_default();
    let _ = fs::remove_file(log);
    s.lines().map(str::to_string).collect()
}
