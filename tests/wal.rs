//! pgb-wal push and get: PostgreSQL's archive_command contract and
//! restore_command semantics.

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::check_archive::{archiving_cluster, make_segments};
use crate::util::*;

fn wal(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut c = Command::new(bin("pgb-wal"));
    for a in args {
        c.arg(a);
    }
    c.stdin(Stdio::null()).output().unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// File names in `dir`, sorted, hidden temps included.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Bytes that do not compress, so sizes are predictable.
fn noise(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

const SEG: &str = "000000010000000000000003";

#[test]
fn push_follows_the_archive_command_contract() {
    let s = Scratch::new("walpush");
    let src_dir = s.path.join("pg_wal");
    let (a1, a2) = (s.path.join("a1"), s.path.join("a2"));
    for d in [&src_dir, &a1, &a2] {
        fs::create_dir(d).unwrap();
    }
    let seg = src_dir.join(SEG);
    let bytes = noise(1 << 20);
    fs::write(&seg, &bytes).unwrap();

    // Into two archives, the second compressed.
    let o = wal(&[&"push", &seg, &"--archive", &a1]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = wal(&[&"push", &seg, &"--archive", &a2, &"-Z", &"zstd:5"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(fs::read(a1.join(SEG)).unwrap(), bytes);
    assert_eq!(names(&a2), [format!("{SEG}.zst")]);
    let out = run(Command::new("zstd")
        .arg("-dc")
        .arg(a2.join(format!("{SEG}.zst"))));
    assert_eq!(out.stdout, bytes, "the reference zstd reads it");

    // Identical re-push: success, in either form and to both at once.
    let o = wal(&[&"push", &seg, &"--archive", &a1, &"--archive", &a2]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("identical"), "{}", stderr(&o));
    assert_eq!(names(&a1), [SEG]);
    assert_eq!(names(&a2), [format!("{SEG}.zst")]);

    // Conflicting re-push: status 2, originals kept, nothing else left.
    let mut other = bytes.clone();
    other[5000] ^= 1;
    fs::write(&seg, &other).unwrap();
    for (dir, z) in [(&a1, "none"), (&a2, "zstd")] {
        let o = wal(&[&"push", &seg, &"--archive", dir, &"-Z", &z]);
        assert_eq!(code(&o), 2, "{}", stderr(&o));
        assert!(stderr(&o).contains("different content"), "{}", stderr(&o));
    }
    assert_eq!(fs::read(a1.join(SEG)).unwrap(), bytes);
    assert_eq!(names(&a1), [SEG]);
    assert_eq!(names(&a2), [format!("{SEG}.zst")]);

    // History files are never compressed.
    let hist = src_dir.join("00000002.history");
    fs::write(&hist, "1\t0/3000000\tno recovery target specified\n").unwrap();
    let o = wal(&[&"push", &hist, &"--archive", &a2, &"-Z", &"zstd"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(a2.join("00000002.history").is_file());

    // A missing archive directory (an unmounted disk) is not created.
    let gone = s.path.join("unmounted");
    let o = wal(&[&"push", &seg, &"--archive", &gone]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("unmounted"), "{}", stderr(&o));
    assert!(!gone.exists());

    // Something that is no WAL file name is refused.
    let junk = src_dir.join("notes.txt");
    fs::write(&junk, "x").unwrap();
    assert_eq!(code(&wal(&[&"push", &junk, &"--archive", &a1])), 2);
}

#[test]
fn get_fetches_plain_and_compressed_and_tells_missing_from_failure() {
    let s = Scratch::new("walget");
    let (src_dir, a, dest) = (s.path.join("src"), s.path.join("a"), s.path.join("pg_wal"));
    for d in [&src_dir, &a, &dest] {
        fs::create_dir(d).unwrap();
    }
    let bytes = noise(1 << 20);
    let plain = "000000010000000000000004";
    fs::write(src_dir.join(plain), &bytes).unwrap();
    fs::write(src_dir.join(SEG), &bytes[..4096]).unwrap();
    assert_eq!(
        code(&wal(&[&"push", &src_dir.join(plain), &"--archive", &a])),
        0
    );
    assert_eq!(
        code(&wal(&[
            &"push",
            &src_dir.join(SEG),
            &"--archive",
            &a,
            &"-Z",
            &"zstd"
        ])),
        0
    );

    // As restore_command: %p is a fixed name that may already exist.
    let target = dest.join("RECOVERYXLOG");
    fs::write(&target, "stale").unwrap();
    let o = wal(&[&"get", &plain, &target, &"--archive", &a]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(fs::read(&target).unwrap(), bytes);
    let o = wal(&[&"get", &SEG, &target, &"--archive", &a]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(fs::read(&target).unwrap(), &bytes[..4096]);
    assert_eq!(names(&dest), ["RECOVERYXLOG"], "no temp left");

    // Not in the archive: 1, which ends recovery normally.
    let o = wal(&[&"get", &"00000002.history", &target, &"--archive", &a]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("not in the archive"));

    // Real failures: 2. A missing archive directory must not look like the
    // end of the archive; nor must a corrupt compressed file.
    let o = wal(&[
        &"get",
        &plain,
        &target,
        &"--archive",
        &s.path.join("unmounted"),
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let z = a.join(format!("{SEG}.zst"));
    let mut zb = fs::read(&z).unwrap();
    let n = zb.len();
    zb.truncate(n / 2);
    fs::write(&z, zb).unwrap();
    let o = wal(&[&"get", &SEG, &dest.join("x"), &"--archive", &a]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(!dest.join("x").exists());
    assert_eq!(names(&dest), ["RECOVERYXLOG"], "no temp left");
}

#[test]
fn a_real_cluster_archives_through_push() {
    let a = archiving_cluster("--compress zstd");
    let made = make_segments(&a.cluster, &a.dir, 3);
    for n in &made {
        assert!(a.dir.join(format!("{n}.zst")).is_file(), "{n}");
    }
    // Identical re-push of what the server archived: success.
    let seg = a.cluster.data.join("pg_wal").join(&made[0]);
    if seg.exists() {
        let o = wal(&[&"push", &seg, &"--archive", &a.dir, &"-Z", &"zstd"]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
    }
    // Fetched back, the bytes equal the server's own segment.
    let dest = a.scratch.path.join("fetched");
    let last = made.last().unwrap();
    let o = wal(&[&"get", last, &dest, &"--archive", &a.dir]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let server = a.cluster.data.join("pg_wal").join(last);
    if server.exists() {
        assert_eq!(fs::read(&dest).unwrap(), fs::read(&server).unwrap());
    }
    assert_eq!(fs::metadata(&dest).unwrap().len(), 1 << 20);
}

/// A full disk at write or close: non-zero exit, no file under the final
/// name, no temp left.
#[test]
fn push_to_a_full_disk_fails_and_leaves_nothing() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let s = Scratch::new("walfull");
    let mnt = s.path.join("small");
    fs::create_dir(&mnt).unwrap();
    run(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=512k", "tmpfs"])
        .arg(&mnt));
    struct Umount<'a>(&'a Path);
    impl Drop for Umount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _guard = Umount(&mnt);
    let seg = s.path.join(SEG);
    fs::write(&seg, noise(1 << 20)).unwrap();
    let o = wal(&[&"push", &seg, &"--archive", &mnt]);
    assert_ne!(code(&o), 0);
    assert!(stderr(&o).contains("No space left"), "{}", stderr(&o));
    assert!(names(&mnt).is_empty(), "{:?}", names(&mnt));
    let o = wal(&[&"push", &seg, &"--archive", &mnt, &"-Z", &"zstd"]);
    assert_ne!(code(&o), 0);
    assert!(names(&mnt).is_empty(), "{:?}", names(&mnt));
}

/// Killed at any moment, a push leaves the final name absent or complete.
#[test]
fn a_killed_push_leaves_no_partial_segment() {
    let s = Scratch::new("walkill");
    let a = s.path.join("a");
    fs::create_dir(&a).unwrap();
    let seg = s.path.join(SEG);
    let bytes = noise(64 << 20);
    fs::write(&seg, &bytes).unwrap();
    for delay in [0u64, 5, 20, 60] {
        let mut child = Command::new(bin("pgb-wal"))
            .arg("push")
            .arg(&seg)
            .arg("--archive")
            .arg(&a)
            .args(["-Z", "zstd:1"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
        let fin = a.join(format!("{SEG}.zst"));
        if fin.exists() {
            let out = run(Command::new("zstd").arg("-dc").arg(&fin));
            assert!(
                out.stdout == bytes,
                "a partial segment under the final name"
            );
            fs::remove_file(&fin).unwrap();
        }
        for n in names(&a) {
            assert!(n.starts_with('.') && n.contains(".pgb-tmp."), "{n}");
        }
    }
}

#[test]
fn subcommand_help_lists_its_flags() {
    for (sub, flags) in [
        ("push", &["--archive", "--compress"][..]),
        ("get", &["--archive"][..]),
    ] {
        let o = wal(&[&sub, &"--help"]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let help = String::from_utf8(o.stdout).unwrap();
        for f in flags {
            assert!(help.contains(f), "pgb-wal {sub} --help lacks {f}");
        }
    }
}
