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

/// File names in `dir`, sorted, hidden temps included, the lock file
/// (`.pgb.lock`, held by each push) excluded.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".pgb.lock")
        .collect();
    v.sort();
    v
}

/// Bytes that do not compress, so sizes are predictable.
pub fn noise(n: usize) -> Vec<u8> {
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
const SEG_SIZE: usize = 1 << 20;

/// A 1 MB WAL segment named `name` (timeline 1): a real long page header
/// (PostgreSQL 15's magic, xlp_pageaddr matching the name), then noise.
pub fn segment(name: &str, sysid: u64) -> Vec<u8> {
    segment_sized(name, sysid, SEG_SIZE)
}

/// A WAL segment of `size` bytes (a power of two from 1 MB to 1 GB), as
/// `segment` makes them.
pub fn segment_sized(name: &str, sysid: u64, size: usize) -> Vec<u8> {
    let segno = u64::from_str_radix(&name[8..16], 16).unwrap() * (0x1_0000_0000 / size as u64)
        + u64::from_str_radix(&name[16..], 16).unwrap();
    let mut p = noise(size);
    p[..40].fill(0);
    p[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
    p[2..4].copy_from_slice(&0x0006u16.to_le_bytes()); // long header, removable
    p[4..8].copy_from_slice(&1u32.to_le_bytes());
    p[8..16].copy_from_slice(&(segno * size as u64).to_le_bytes());
    p[24..32].copy_from_slice(&sysid.to_le_bytes());
    p[32..36].copy_from_slice(&(size as u32).to_le_bytes());
    p[36..40].copy_from_slice(&8192u32.to_le_bytes());
    p
}

/// An age key pair made by the reference `age-keygen`: (identity file,
/// recipient).
pub fn keypair(dir: &Path, tag: &str) -> (std::path::PathBuf, String) {
    let id = dir.join(format!("{tag}.key"));
    let out = run(Command::new("age-keygen").arg("-o").arg(&id));
    let _ = out;
    let text = fs::read_to_string(&id).unwrap();
    let public = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .to_string();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&id, fs::Permissions::from_mode(0o600)).unwrap();
    (id, public)
}

/// The exit status `get` gives a real failure: above 125, so PostgreSQL
/// aborts recovery instead of ending it.
pub(crate) const FATAL: i32 = 255;

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
    assert_eq!(names(&a2), [format!("{SEG}.sha256"), format!("{SEG}.zst")]);
    let out = run(Command::new("zstd")
        .arg("-dc")
        .arg(a2.join(format!("{SEG}.zst"))));
    assert_eq!(out.stdout, bytes, "the reference zstd reads it");

    // Identical re-push: success, in either form and to both at once.
    let o = wal(&[&"push", &seg, &"--archive", &a1, &"--archive", &a2]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("identical"), "{}", stderr(&o));
    assert_eq!(names(&a1), [SEG.to_string(), format!("{SEG}.sha256")]);
    assert_eq!(names(&a2), [format!("{SEG}.sha256"), format!("{SEG}.zst")]);

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
    assert_eq!(names(&a1), [SEG.to_string(), format!("{SEG}.sha256")]);
    assert_eq!(names(&a2), [format!("{SEG}.sha256"), format!("{SEG}.zst")]);

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
    let plain = "000000010000000000000004";
    let bytes = segment(plain, 42);
    let zbytes = segment(SEG, 42);
    fs::write(src_dir.join(plain), &bytes).unwrap();
    fs::write(src_dir.join(SEG), &zbytes).unwrap();
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
    assert_eq!(fs::read(&target).unwrap(), zbytes);
    assert_eq!(names(&dest), ["RECOVERYXLOG"], "no temp left");

    // Not in the archive: 1, which ends recovery normally.
    let o = wal(&[&"get", &"00000002.history", &target, &"--archive", &a]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("not in the archive"));

    // Real failures: above 125, so PostgreSQL stops instead of ending
    // recovery early. A missing archive directory must not look like the
    // end of the archive; nor must a corrupt compressed file, a truncated
    // or zero-filled segment, a segment under another's name, or a
    // mistyped command line. --soft-fail turns them into 2.
    let unmounted = s.path.join("unmounted");
    let o = wal(&[&"get", &plain, &target, &"--archive", &unmounted]);
    assert_eq!(code(&o), FATAL, "{}", stderr(&o));
    let o = wal(&[
        &"get",
        &plain,
        &target,
        &"--archive",
        &unmounted,
        &"--soft-fail",
    ]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let o = wal(&[&"get", &plain, &target]);
    assert_eq!(code(&o), FATAL, "usage error: {}", stderr(&o));

    let z = a.join(format!("{SEG}.zst"));
    let mut zb = fs::read(&z).unwrap();
    let n = zb.len();
    zb.truncate(n / 2);
    fs::write(&z, zb).unwrap();
    type Mutilate<'a> = Box<dyn Fn(&Path) + 'a>;
    let bad: [(&str, Mutilate); 3] = [
        (SEG, Box::new(|_: &Path| {})),
        (
            "000000010000000000000005",
            Box::new(|p: &Path| fs::write(p, vec![0u8; SEG_SIZE]).unwrap()),
        ),
        (
            "000000010000000000000006",
            Box::new(|p: &Path| fs::write(p, &bytes[..SEG_SIZE / 2]).unwrap()),
        ),
    ];
    let renamed = "000000010000000000000007";
    fs::copy(a.join(plain), a.join(renamed)).unwrap();
    for (name, make) in bad {
        make(&a.join(name));
        let o = wal(&[&"get", &name, &dest.join("x"), &"--archive", &a]);
        assert_eq!(code(&o), FATAL, "{name}: {}", stderr(&o));
        assert!(stderr(&o).contains(name), "{}", stderr(&o));
        assert!(!dest.join("x").exists());
    }
    let o = wal(&[&"get", &renamed, &dest.join("x"), &"--archive", &a]);
    assert_eq!(code(&o), FATAL, "{}", stderr(&o));
    assert!(stderr(&o).contains("pageaddr"), "{}", stderr(&o));
    assert!(!dest.join("x").exists());
    assert_eq!(names(&dest), ["RECOVERYXLOG"], "no temp left");
}

#[test]
fn encrypted_push_and_get_interoperate_with_age() {
    let s = Scratch::new("walage");
    let (src_dir, a, dest) = (s.path.join("src"), s.path.join("a"), s.path.join("pg_wal"));
    for d in [&src_dir, &a, &dest] {
        fs::create_dir(d).unwrap();
    }
    let (id, public) = keypair(&s.path, "me");
    let (other_id, _) = keypair(&s.path, "other");
    let rfile = s.path.join("recipients.txt");
    fs::write(&rfile, format!("# the backup key\n{public}\n")).unwrap();
    let seg = src_dir.join(SEG);
    let bytes = segment(SEG, 7);
    fs::write(&seg, &bytes).unwrap();

    // Compressed and encrypted: NAME.zst.age and NAME.sha256, and the
    // reference age and zstd read it back.
    let o = wal(&[
        &"push",
        &seg,
        &"--archive",
        &a,
        &"-Z",
        &"zstd",
        &"-R",
        &rfile,
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let stored = a.join(format!("{SEG}.zst.age"));
    assert_eq!(
        names(&a),
        [format!("{SEG}.sha256"), format!("{SEG}.zst.age")]
    );
    let out = run(Command::new("sh").arg("-c").arg(format!(
        "age -d -i {} {} | zstd -dc",
        id.display(),
        stored.display()
    )));
    assert!(out.stdout == bytes, "age | zstd gives the segment back");
    // The checksum file is sha256sum's format: the stored line checks.
    let sums = fs::read_to_string(a.join(format!("{SEG}.sha256"))).unwrap();
    assert!(
        sums.starts_with(&format!("{}  {SEG}\n", stock_sums(&seg).0)),
        "{sums}"
    );
    run(Command::new("sha256sum")
        .args(["-c", "--ignore-missing", &format!("{SEG}.sha256")])
        .current_dir(&a));

    // PostgreSQL retrying after a crash (archived, not acknowledged): an
    // identical re-push succeeds without the key.
    let push_to_key = || {
        wal(&[
            &"push",
            &seg,
            &"--archive",
            &a,
            &"-Z",
            &"zstd",
            &"-r",
            &public,
        ])
    };
    let o = push_to_key();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("identical"), "{}", stderr(&o));
    // Different content: refused, original and checksum file kept.
    let mut other = bytes.clone();
    other[700_000] ^= 1;
    fs::write(&seg, &other).unwrap();
    let before = fs::read(&stored).unwrap();
    let o = push_to_key();
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("different content"), "{}", stderr(&o));
    assert_eq!(fs::read(&stored).unwrap(), before);
    fs::write(&seg, &bytes).unwrap();

    // Without its checksum file, identity cannot be proven without the
    // key: an error, nothing overwritten; with -i it is compared by
    // decrypting, and the checksum file is written again.
    fs::remove_file(a.join(format!("{SEG}.sha256"))).unwrap();
    let o = push_to_key();
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot tell"), "{}", stderr(&o));
    assert_eq!(fs::read(&stored).unwrap(), before);
    let o = wal(&[
        &"push",
        &seg,
        &"--archive",
        &a,
        &"-Z",
        &"zstd",
        &"-r",
        &public,
        &"-i",
        &id,
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        fs::read_to_string(a.join(format!("{SEG}.sha256"))).unwrap(),
        sums
    );
    // A stale checksum file (of a push killed before its rename) that does
    // not describe the stored file is not trusted.
    let (l1, l2) = sums.trim_end().split_once('\n').unwrap();
    let flipped = if l2.starts_with('0') { '1' } else { '0' };
    fs::write(
        a.join(format!("{SEG}.sha256")),
        format!("{l1}\n{flipped}{}\n", &l2[1..]),
    )
    .unwrap();
    let o = wal(&[&"push", &seg, &"--archive", &a, &"-r", &public]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    fs::write(a.join(format!("{SEG}.sha256")), &sums).unwrap();

    // get: decrypts and decompresses with -i; without it, with the wrong
    // key, or from an altered file: a real failure, nothing written.
    let target = dest.join("RECOVERYXLOG");
    let o = wal(&[&"get", &SEG, &target, &"--archive", &a, &"-i", &id]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(fs::read(&target).unwrap() == bytes);
    fs::remove_file(&target).unwrap();
    let o = wal(&[&"get", &SEG, &target, &"--archive", &a]);
    assert_eq!(code(&o), FATAL, "{}", stderr(&o));
    assert!(stderr(&o).contains("-i"), "{}", stderr(&o));
    let o = wal(&[&"get", &SEG, &target, &"--archive", &a, &"-i", &other_id]);
    assert_eq!(code(&o), FATAL, "{}", stderr(&o));
    let mut altered = before.clone();
    let k = altered.len() - 100;
    altered[k] ^= 1;
    fs::write(&stored, &altered).unwrap();
    let o = wal(&[&"get", &SEG, &target, &"--archive", &a, &"-i", &id]);
    assert_eq!(code(&o), FATAL, "{}", stderr(&o));
    // A valid encryption of other content swapped in: age cannot tell (it
    // does not authenticate the sender), the checksum file does.
    let swapped = s.path.join("swapped");
    fs::create_dir(&swapped).unwrap();
    fs::write(&seg, &other).unwrap();
    assert_eq!(
        code(&wal(&[
            &"push",
            &seg,
            &"--archive",
            &swapped,
            &"-Z",
            &"zstd",
            &"-r",
            &public
        ])),
        0
    );
    fs::copy(swapped.join(format!("{SEG}.zst.age")), &stored).unwrap();
    let o = wal(&[&"get", &SEG, &target, &"--archive", &a, &"-i", &id]);
    assert_eq!(code(&o), FATAL, "{}", stderr(&o));
    assert!(stderr(&o).contains("does not match"), "{}", stderr(&o));
    assert!(!target.exists());
    assert!(names(&dest).is_empty(), "no temp left: {:?}", names(&dest));

    // A file encrypted by the reference age (no checksum file): get reads it.
    let seg4 = "000000010000000000000004";
    let b4 = segment(seg4, 7);
    fs::write(src_dir.join(seg4), &b4).unwrap();
    run(Command::new("age")
        .args(["-r", &public, "-o"])
        .arg(a.join(format!("{seg4}.age")))
        .arg(src_dir.join(seg4)));
    let o = wal(&[&"get", &seg4, &target, &"--archive", &a, &"-i", &id]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(fs::read(&target).unwrap() == b4);

    // Refusals before anything is written: an empty recipients file, an
    // identity file others can read. .history files stay plaintext.
    let empty = s.path.join("empty.txt");
    fs::write(&empty, "# nobody\n").unwrap();
    let fresh = s.path.join("fresh");
    fs::create_dir(&fresh).unwrap();
    let o = wal(&[&"push", &seg, &"--archive", &fresh, &"-R", &empty]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("no recipients"), "{}", stderr(&o));
    assert!(names(&fresh).is_empty(), "{:?}", names(&fresh));
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&other_id, fs::Permissions::from_mode(0o644)).unwrap();
    let o = wal(&[&"get", &seg4, &target, &"--archive", &a, &"-i", &other_id]);
    assert_eq!(code(&o), FATAL, "{}", stderr(&o));
    assert!(stderr(&o).contains("0644"), "{}", stderr(&o));
    let hist = src_dir.join("00000002.history");
    fs::write(&hist, "1\t0/3000000\tno recovery target specified\n").unwrap();
    let o = wal(&[&"push", &hist, &"--archive", &fresh, &"-r", &public]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        names(&fresh),
        ["00000002.history", "00000002.history.sha256"]
    );
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

/// Mounts a small tmpfs at `dir`; unmounted when dropped. `None` (with a
/// message) where mounting is not permitted.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            eprintln!(
                "skipped: mounting a tmpfs is not permitted here (needs root or CAP_SYS_ADMIN)"
            );
            return None;
        }
        Some(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A full disk at write or close: non-zero exit, no file under the final
/// name, no temp left; plain, compressed and encrypted alike.
#[test]
fn push_to_a_full_disk_fails_and_leaves_nothing() {
    let s = Scratch::new("walfull");
    let mnt = s.path.join("small");
    let Some(_guard) = Tmpfs::mount(&mnt, "512k") else {
        return;
    };
    let seg = s.path.join(SEG);
    fs::write(&seg, noise(1 << 20)).unwrap();
    let (_, public) = keypair(&s.path, "k");
    for extra in [
        &[][..],
        &["-Z", "zstd"][..],
        &["-Z", "zstd", "-r", &public][..],
    ] {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"push", &seg, &"--archive", &mnt];
        for e in extra {
            args.push(e);
        }
        let o = wal(&args);
        assert_eq!(code(&o), 2, "{extra:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("No space left"), "{}", stderr(&o));
        assert!(names(&mnt).is_empty(), "{extra:?}: {:?}", names(&mnt));
    }
}

/// Polls until a push's temp file appears in `dir`.
fn wait_for_temp(dir: &Path, child: &mut std::process::Child) -> String {
    let t0 = std::time::Instant::now();
    loop {
        if let Some(n) = names(dir).into_iter().find(|n| n.contains(".pgb-tmp.")) {
            return n;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "push ended before its temp file was seen"
        );
        assert!(t0.elapsed() < Duration::from_secs(60), "no temp file");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Killed while writing, a push leaves no file under the final name (nor a
/// checksum file); the next push succeeds and removes the stale temp.
#[test]
fn a_killed_push_leaves_no_partial_segment() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let s = Scratch::new("walkill");
    let seg = s.path.join(SEG);
    // Incompressible and slow to compress at level 19: seconds of writing.
    let bytes = noise(8 << 20);
    fs::write(&seg, &bytes).unwrap();
    let (id, public) = keypair(&s.path, "k");
    for (tag, enc) in [("zstd", &[][..]), ("age", &["-r", public.as_str()][..])] {
        let a = s.path.join(tag);
        fs::create_dir(&a).unwrap();
        let mut child = Command::new(bin("pgb-wal"))
            .arg("push")
            .arg(&seg)
            .arg("--archive")
            .arg(&a)
            .args(["-Z", "zstd:19"])
            .args(enc)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        let temp = wait_for_temp(&a, &mut child);
        kill(pid, Signal::SIGSTOP).unwrap();
        kill(pid, Signal::SIGKILL).unwrap();
        let _ = child.wait();
        assert_eq!(names(&a), [temp], "{tag}: only the temp is left");

        // The next push (PostgreSQL retrying) succeeds and cleans up.
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
            vec![&"push", &seg, &"--archive", &a, &"-Z", &"zstd:1"];
        for e in enc {
            args.push(e);
        }
        let o = wal(&args);
        assert_eq!(code(&o), 0, "{tag}: {}", stderr(&o));
        assert!(stderr(&o).contains("killed push"), "{}", stderr(&o));
        let got = names(&a);
        assert!(got.iter().all(|n| !n.contains(".pgb-tmp.")), "{got:?}");
        let o = wal(&[
            &"get",
            &SEG,
            &s.path.join("back"),
            &"--archive",
            &a,
            &"-i",
            &id,
        ]);
        // Noise is no WAL: get refuses it after decoding it whole, which
        // is enough to know the stored file decodes.
        assert!(
            stderr(&o).contains("no valid long page header"),
            "{}",
            stderr(&o)
        );
        let stored = a.join(format!(
            "{SEG}.zst{}",
            if enc.is_empty() { "" } else { ".age" }
        ));
        let out = if enc.is_empty() {
            run(Command::new("zstd").arg("-dc").arg(&stored))
        } else {
            run(Command::new("sh").arg("-c").arg(format!(
                "age -d -i {} {} | zstd -dc",
                id.display(),
                stored.display()
            )))
        };
        assert!(out.stdout == bytes, "{tag}: the stored segment is whole");
    }
}

#[test]
fn subcommand_help_lists_its_flags() {
    for (sub, flags) in [
        (
            "push",
            &[
                "--archive",
                "--compress",
                "--recipient",
                "--recipients-file",
                "--identity",
                "--lock-wait",
            ][..],
        ),
        ("get", &["--archive", "--identity", "--soft-fail"][..]),
    ] {
        let o = wal(&[&sub, &"--help"]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let help = String::from_utf8(o.stdout).unwrap();
        for f in flags {
            assert!(help.contains(f), "pgb-wal {sub} --help lacks {f}");
        }
    }
}

/// `pg_ctl start` as the cluster owner; true when the server came up.
fn pg_ctl_start(data: &Path, log: &Path) -> bool {
    let mut c = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(pg_bin("pg_ctl"));
        c
    } else {
        Command::new(pg_bin("pg_ctl"))
    };
    c.arg("-D")
        .arg(data)
        .arg("-l")
        .arg(log)
        .args(["-w", "-t", "60", "start"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// A point-in-time restore through `pgb-wal get` that meets a zero-filled
/// segment after the backup's end: PostgreSQL stops (get exits 255)
/// instead of taking the bad segment for the end of the archive and
/// promoting a database that silently lacks everything after it. With
/// --soft-fail it does promote there: the danger the default avoids.
#[test]
fn recovery_stops_at_a_corrupt_segment_instead_of_ending_early() {
    let a = archiving_cluster("");
    make_segments(&a.cluster, &a.dir, 2);
    let s2 = Scratch::new("pitr");
    let base = s2.path.join("base");
    run(a
        .cluster
        .pg("pg_basebackup")
        .arg("-D")
        .arg(&base)
        .args(["-X", "none", "-c", "fast"]));
    let after = make_segments(&a.cluster, &a.dir, 4);
    a.cluster.stop();
    // A segment written after the backup ended, so the backup itself is
    // consistent before it.
    let victim = after[2].clone();
    fs::write(a.dir.join(&victim), vec![0u8; SEG_SIZE]).unwrap();

    let wal = bin("pgb-wal");
    let restore = |tag: &str, get_args: &str| -> (std::path::PathBuf, std::path::PathBuf) {
        let data = s2.path.join(tag);
        run(Command::new("cp").arg("-a").arg(&base).arg(&data));
        let sock = s2.owned_dir(&format!("{tag}-sock"));
        let mut text = fs::read_to_string(data.join("postgresql.conf")).unwrap();
        text.push_str(&format!(
            "\nunix_socket_directories = '{}'\narchive_mode = off\n\
             restore_command = '{} get %f %p --archive {} {get_args}'\n",
            sock.display(),
            wal.display(),
            a.dir.display()
        ));
        fs::write(data.join("postgresql.conf"), text).unwrap();
        fs::write(data.join("recovery.signal"), "").unwrap();
        if is_root() {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&data));
        }
        run(Command::new("chmod").arg("700").arg(&data));
        (data, s2.path.join(format!("{tag}.log")))
    };

    // Default: the server refuses to go on.
    let (data, log) = restore("strict", "");
    let started = pg_ctl_start(&data, &log);
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !started,
        "the server came up past a corrupt segment:\n{text}"
    );
    assert!(
        text.contains(&format!("{victim} is zero-filled")),
        "pgb-wal's reason is in the server log:\n{text}"
    );
    assert!(text.contains("255"), "{text}");
    assert!(
        text.contains(&format!("restored log file \"{}\"", after[1])),
        "replay got as far as the segment before:\n{text}"
    );
    assert!(!data.join("postmaster.pid").exists(), "{text}");
    assert!(
        !fs::read_dir(data.join("pg_wal"))
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".history")),
        "no new timeline was created"
    );

    // --soft-fail: PostgreSQL takes the failure for the end of the archive
    // and promotes with everything after the bad segment missing.
    let (data, log) = restore("soft", "--soft-fail");
    let started = pg_ctl_start(&data, &log);
    let text = fs::read_to_string(&log).unwrap_or_default();
    let c = Cluster {
        scratch: Scratch::new("soft"),
        data: data.clone(),
        socket: s2.path.join("soft-sock"),
        port: 5432,
        archive: None,
        bindir: pg_bindir().to_path_buf(),
    };
    assert!(started, "{text}");
    let t0 = std::time::Instant::now();
    while c.sql("postgres", "SELECT pg_is_in_recovery()") != "f" {
        assert!(t0.elapsed() < Duration::from_secs(60), "{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("selected new timeline ID: 2"),
        "promoted early:\n{text}"
    );
}

/// The issue's table of damage, on a WAL segment archived by `pgb-wal push`
/// plain, `.zst` and `.age`: a byte flipped in the middle, a truncation,
/// bytes appended, the file zeroed. Each is caught by pgb-check-archive
/// (naming the file) and makes `pgb-wal get` exit 255 with nothing written;
/// an untouched segment passes both. Beside them, archived by other tools
/// (no checksum file): a plain segment is served and counted as checked by
/// header only, and a truncated `.zst` is reported; a damaged checksum file
/// stops `get` too.
#[test]
fn every_damage_to_an_archived_segment_is_caught_by_get_and_the_archive_check() {
    let s = Scratch::new("waldamage");
    let (id, public) = keypair(&s.path, "k");
    let src = s.path.join("src");
    let dest = s.path.join("pg_wal");
    fs::create_dir(&src).unwrap();
    fs::create_dir(&dest).unwrap();
    type Damage = fn(&mut Vec<u8>);
    let damages: [(&str, Damage); 5] = [
        ("untouched", |_| {}),
        ("byte flipped mid-file", |b| {
            let i = b.len() / 2 + 7;
            b[i] ^= 0x40
        }),
        ("truncated", |b| b.truncate(b.len() * 2 / 3)),
        ("bytes appended", |b| b.extend_from_slice(b"appended")),
        ("zeroed", |b| b.iter_mut().for_each(|x| *x = 0)),
    ];
    let seg_name = |i: usize| format!("0000000100000000{i:08X}");
    for (form, suffix, flags) in [
        ("plain", "", vec![]),
        ("zst", ".zst", vec!["-Z", "zstd"]),
        ("age", ".age", vec!["-r", public.as_str()]),
    ] {
        let a = s.path.join(form);
        fs::create_dir(&a).unwrap();
        let mut expected_bad = Vec::new();
        let mut cases = Vec::new();
        for (i, (what, damage)) in damages.iter().enumerate() {
            let name = seg_name(i + 1);
            let bytes = segment(&name, 42);
            let path = src.join(&name);
            fs::write(&path, &bytes).unwrap();
            let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"push", &path, &"--archive", &a];
            for f in &flags {
                args.push(f);
            }
            let o = wal(&args);
            assert_eq!(code(&o), 0, "{form} {what}: {}", stderr(&o));
            assert!(a.join(format!("{name}.sha256")).is_file(), "{form}");
            let stored = a.join(format!("{name}{suffix}"));
            let mut b = fs::read(&stored).unwrap();
            damage(&mut b);
            fs::write(&stored, b).unwrap();
            if *what != "untouched" {
                expected_bad.push(format!("{name}{suffix}"));
            }
            cases.push((what.to_string(), name, Some(bytes)));
        }
        // Archived by other tools: no checksum file.
        let name = seg_name(6);
        let bytes = segment(&name, 42);
        match form {
            "plain" => {
                fs::write(a.join(&name), &bytes).unwrap();
                cases.push(("no checksum file".into(), name, Some(bytes)));
                // A checksum file damaged: get cannot vouch for the segment.
                let name = seg_name(7);
                let bytes = segment(&name, 42);
                fs::write(src.join(&name), &bytes).unwrap();
                assert_eq!(
                    code(&wal(&[&"push", &src.join(&name), &"--archive", &a])),
                    0
                );
                fs::write(a.join(format!("{name}.sha256")), "garbage\n").unwrap();
                expected_bad.push(name.clone());
                cases.push(("damaged checksum file".into(), name, None));
            }
            "zst" => {
                fs::write(src.join(&name), &bytes).unwrap();
                let z = a.join(format!("{name}.zst"));
                run(Command::new("zstd")
                    .args(["-q", "-3"])
                    .arg(src.join(&name))
                    .arg("-o")
                    .arg(&z));
                let mut b = fs::read(&z).unwrap();
                b.truncate(b.len() / 2);
                fs::write(&z, b).unwrap();
                expected_bad.push(format!("{name}.zst"));
                cases.push(("truncated by another tool".into(), name, None));
            }
            _ => {}
        }

        for (what, name, bytes) in &cases {
            let target = dest.join("RECOVERYXLOG");
            let o = wal(&[&"get", name, &target, &"--archive", &a, &"-i", &id]);
            let good = what == "untouched" || what == "no checksum file";
            if good {
                assert_eq!(code(&o), 0, "{form} {what}: {}", stderr(&o));
                assert!(
                    fs::read(&target).unwrap() == *bytes.as_ref().unwrap(),
                    "{form} {what}"
                );
                fs::remove_file(&target).unwrap();
            } else {
                assert_eq!(code(&o), FATAL, "{form} {what}: {}", stderr(&o));
                assert!(stderr(&o).contains(name.as_str()), "{}", stderr(&o));
                assert!(!target.exists(), "{form} {what}: nothing written");
            }
            assert!(names(&dest).is_empty(), "{form} {what}: no temp left");
        }

        let (status, recs, err) = run_check_archive(&[&a, &"-i", &id]);
        assert_eq!(status, 1, "{form}: {err} {recs:?}");
        let mut bad: Vec<String> = recs
            .iter()
            .filter(|r| r["type"] == "archive-problem")
            .map(|r| r["file"].as_str().unwrap().to_string())
            .collect();
        bad.sort();
        bad.dedup();
        expected_bad.sort();
        assert_eq!(bad, expected_bad, "{form}: {recs:?}");
        let sum = recs.last().unwrap();
        assert_eq!(sum["type"], "archive-summary");
        assert_eq!(sum["checksum_verified_segments"], 1, "{form}: {sum}");
        let header_only = if form == "plain" { 1 } else { 0 };
        assert_eq!(sum["header_only_segments"], header_only, "{form}: {sum}");

        // --headers-only (the five-minute watch) reads no segment in full:
        // nothing is compared, and it says so.
        let (_, recs, _) = run_check_archive(&[&a, &"--headers-only", &"-i", &id]);
        let sum = recs.last().unwrap();
        assert_eq!(sum["checksum_verified_segments"], 0, "{form}: {sum}");
        if form == "plain" {
            let flipped = seg_name(2);
            let named = recs.iter().any(|r| r["file"] == flipped.as_str());
            assert!(!named, "a flipped byte needs the full read: {recs:?}");
        }
    }
}

/// NAME.sha256 records blake3 beside sha256, in lines that are comments to
/// sha256sum: `sha256sum -c --strict` and `b3sum -c` check a freshly pushed
/// segment by hand. `get` compares blake3 alone when it is there, so a
/// checksum file whose blake3 line alone is altered stops it, and the
/// archive check reports it too; a checksum file of an older pgb-wal (no
/// blake3 lines) still catches a flipped byte by sha256 and passes an
/// untouched segment, and an identical re-push adds the blake3 lines.
#[test]
fn checksum_files_record_blake3_and_get_compares_it() {
    let s = Scratch::new("walblake3");
    let (src, dest) = (s.path.join("src"), s.path.join("pg_wal"));
    fs::create_dir(&src).unwrap();
    fs::create_dir(&dest).unwrap();
    let target = dest.join("RECOVERYXLOG");
    let seg_name = |i: u32| format!("0000000100000000{i:08X}");
    for (form, suffix, flags) in [("plain", "", vec![]), ("zst", ".zst", vec!["-Z", "zstd"])] {
        let a = s.path.join(form);
        fs::create_dir(&a).unwrap();
        let push = |name: &str| {
            let path = src.join(name);
            let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"push", &path, &"--archive", &a];
            for f in &flags {
                args.push(f);
            }
            wal(&args)
        };
        let get = |name: &str| wal(&[&"get", &name, &target, &"--archive", &a]);
        let mut bytes = Vec::new();
        for i in 1..=4 {
            let name = seg_name(i);
            bytes.push(segment(&name, 42));
            fs::write(src.join(&name), &bytes[i as usize - 1]).unwrap();
            let o = push(&name);
            assert_eq!(code(&o), 0, "{form}: {}", stderr(&o));
        }
        let sums_of = |name: &str| a.join(format!("{name}.sha256"));
        let text = |name: &str| fs::read_to_string(sums_of(name)).unwrap();

        // The exact lines, checked by hand with the stock tools.
        let n1 = seg_name(1);
        let (sha, b3) = stock_sums(&src.join(&n1));
        let mut want = format!("{sha}  {n1}\n");
        if form == "zst" {
            let (zsha, zb3) = stock_sums(&a.join(format!("{n1}.zst")));
            want.push_str(&format!(
                "{zsha}  {n1}.zst\n# blake3 {b3}  {n1}\n# blake3 {zb3}  {n1}.zst\n"
            ));
        } else {
            want.push_str(&format!("# blake3 {b3}  {n1}\n"));
        }
        assert_eq!(text(&n1), want, "{form}");
        let mut sha256sum = Command::new("sha256sum");
        sha256sum.args(["-c", "--strict"]);
        if form == "zst" {
            sha256sum.arg("--ignore-missing");
        }
        run(sha256sum.arg(format!("{n1}.sha256")).current_dir(&a));
        if form == "plain" {
            run(Command::new("sh")
                .arg("-c")
                .arg(format!("sed -n 's/^# blake3 //p' {n1}.sha256 | b3sum -c"))
                .current_dir(&a));
        }

        // Segment 2: its last blake3 line altered (the stored file's), and
        // nothing else: get stops.
        let n2 = seg_name(2);
        let t = text(&n2);
        let (head, last) = t.trim_end().rsplit_once('\n').unwrap();
        let (mark, rest) = last.split_at("# blake3 ".len());
        let flipped = if rest.starts_with('0') { '1' } else { '0' };
        fs::write(
            sums_of(&n2),
            format!("{head}\n{mark}{flipped}{}\n", &rest[1..]),
        )
        .unwrap();
        let o = get(&n2);
        assert_eq!(code(&o), FATAL, "{form}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(&format!("blake3 of {n2}{suffix} is")),
            "{form}: {}",
            stderr(&o)
        );
        assert!(!target.exists(), "{form}: nothing written");

        // Segments 3 and 4: checksum files of an older pgb-wal, sha256
        // lines only. A flipped byte is still caught; an untouched segment
        // passes.
        let (n3, n4) = (seg_name(3), seg_name(4));
        for n in [&n3, &n4] {
            let old: String = text(n)
                .lines()
                .filter(|l| !l.starts_with('#'))
                .map(|l| format!("{l}\n"))
                .collect();
            fs::write(sums_of(n), old).unwrap();
        }
        let old4 = text(&n4);
        let stored3 = a.join(format!("{n3}{suffix}"));
        let mut b = fs::read(&stored3).unwrap();
        let i = b.len() / 2 + 3;
        b[i] ^= 0x10;
        fs::write(&stored3, b).unwrap();
        let o = get(&n3);
        assert_eq!(code(&o), FATAL, "{form}: {}", stderr(&o));
        // (zstd's own frame checksum may see it first in a .zst.)
        let seen = ["sha256 of", "decompress"];
        let n = if form == "zst" { 2 } else { 1 };
        assert!(
            seen[..n].iter().any(|w| stderr(&o).contains(w)),
            "{form}: {}",
            stderr(&o)
        );
        assert!(!target.exists(), "{form}: nothing written");
        for (n, b) in [(&n1, &bytes[0]), (&n4, &bytes[3])] {
            let o = get(n);
            assert_eq!(code(&o), 0, "{form} {n}: {}", stderr(&o));
            assert!(fs::read(&target).unwrap() == *b, "{form} {n}");
            fs::remove_file(&target).unwrap();
        }

        // The full audit compares every checksum recorded.
        let (status, recs, _) = run_check_archive(&[&a]);
        assert_eq!(status, 1, "{form}: {recs:?}");
        let bad: Vec<&serde_json::Value> = recs
            .iter()
            .filter(|r| r["type"] == "archive-problem")
            .collect();
        let files: Vec<&str> = bad.iter().map(|r| r["file"].as_str().unwrap()).collect();
        assert_eq!(
            files,
            [format!("{n2}{suffix}"), format!("{n3}{suffix}")],
            "{form}: {recs:?}"
        );
        assert_eq!(bad[0]["problem"], "checksum-mismatch", "{form}: {recs:?}");
        let detail = bad[0]["detail"].as_str().unwrap();
        assert!(
            detail.contains(&format!("blake3 of {n2}{suffix}")),
            "{detail}"
        );
        let sum = recs.last().unwrap();
        assert_eq!(sum["checksum_verified_segments"], 2, "{form}: {sum}");

        // An identical re-push brings the older checksum file up to date.
        let o = push(&n4);
        assert_eq!(code(&o), 0, "{form}: {}", stderr(&o));
        assert!(stderr(&o).contains("identical"), "{form}: {}", stderr(&o));
        let t4 = text(&n4);
        assert!(t4.starts_with(&old4), "{form}: {t4}");
        assert_eq!(
            t4.matches("\n# blake3 ").count(),
            if form == "zst" { 2 } else { 1 },
            "{t4}"
        );
        let o = get(&n4);
        assert_eq!(code(&o), 0, "{form}: {}", stderr(&o));
        fs::remove_file(&target).unwrap();
    }
}

/// `get` copies a plain segment in the kernel where it can and hashes what
/// it wrote; from an archive on another file system (tmpfs here, where
/// the kernel copy is refused) it copies through a buffer, checked alike:
/// an untouched segment arrives whole, a flipped byte stops it.
#[test]
fn get_checks_a_segment_from_another_file_system() {
    let Ok(shm) = tempfile::Builder::new()
        .prefix("pgb-walshm.")
        .tempdir_in("/dev/shm")
    else {
        eprintln!("no /dev/shm: skipped");
        return;
    };
    let s = Scratch::new("walxfs");
    let (src, a) = (s.path.join("src"), shm.path().join("a"));
    fs::create_dir(&src).unwrap();
    fs::create_dir(&a).unwrap();
    let target = s.path.join("RECOVERYXLOG");
    let (n1, n2) = ("000000010000000000000001", "000000010000000000000002");
    let mut bytes = Vec::new();
    for n in [n1, n2] {
        bytes.push(segment(n, 9));
        fs::write(src.join(n), bytes.last().unwrap()).unwrap();
        let o = wal(&[&"push", &src.join(n), &"--archive", &a]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
    }
    let o = wal(&[&"get", &n1, &target, &"--archive", &a]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(fs::read(&target).unwrap() == bytes[0]);
    fs::remove_file(&target).unwrap();
    let mut b = fs::read(a.join(n2)).unwrap();
    b[SEG_SIZE / 2] ^= 1;
    fs::write(a.join(n2), b).unwrap();
    let o = wal(&[&"get", &n2, &target, &"--archive", &a]);
    assert_eq!(code(&o), FATAL, "{}", stderr(&o));
    assert!(stderr(&o).contains("blake3 of"), "{}", stderr(&o));
    assert!(!target.exists());
}

/// A point-in-time restore with no target over an archive where one byte
/// in the middle of a segment full of committed rows was flipped after it
/// was archived. PostgreSQL alone would find the record's CRC wrong, take
/// it for the end of WAL and promote, silently without every later
/// transaction; `pgb-wal get` compares the segment with the checksum file
/// written at push time and exits 255, so the server stops instead, and the
/// server log says which file and why.
#[test]
fn recovery_stops_at_a_flipped_byte_in_the_middle_of_a_segment() {
    let a = archiving_cluster("");
    let c = &a.cluster;
    c.sql("postgres", "CREATE TABLE big (i int, pad text)");
    make_segments(c, &a.dir, 1);
    let s2 = Scratch::new("pitrflip");
    let base = s2.path.join("base");
    run(c
        .pg("pg_basebackup")
        .arg("-D")
        .arg(&base)
        .args(["-X", "none", "-c", "fast"]));
    let before = c.sql("postgres", "SELECT pg_walfile_name(pg_current_wal_lsn())");
    c.sql(
        "postgres",
        "INSERT INTO big SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g",
    );
    let after = c.sql("postgres", "SELECT pg_walfile_name(pg_current_wal_lsn())");
    make_segments(c, &a.dir, 1);
    c.stop();
    // A segment the insert filled from its first page to its last.
    let first = u64::from_str_radix(&before[16..], 16).unwrap();
    let last = u64::from_str_radix(&after[16..], 16).unwrap();
    assert!(
        last >= first + 2,
        "the insert spans whole segments: {before}..{after}"
    );
    let victim = format!("{}{:08X}", &before[..16], first + 1);
    let path = a.dir.join(&victim);
    let mut b = fs::read(&path).unwrap();
    b[SEG_SIZE / 2 + 100] ^= 0x01;
    fs::write(&path, b).unwrap();

    let data = s2.path.join("data");
    run(Command::new("cp").arg("-a").arg(&base).arg(&data));
    let sock = s2.owned_dir("sock");
    let mut text = fs::read_to_string(data.join("postgresql.conf")).unwrap();
    text.push_str(&format!(
        "\nunix_socket_directories = '{}'\narchive_mode = off\n\
         restore_command = '{} get %f %p --archive {}'\n",
        sock.display(),
        bin("pgb-wal").display(),
        a.dir.display()
    ));
    fs::write(data.join("postgresql.conf"), text).unwrap();
    fs::write(data.join("recovery.signal"), "").unwrap();
    if is_root() {
        run(Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&data));
    }
    run(Command::new("chmod").arg("700").arg(&data));
    let log = s2.path.join("server.log");
    let started = pg_ctl_start(&data, &log);
    let text = fs::read_to_string(&log).unwrap_or_default();
    if started {
        let _ = as_owner(pg_bin("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
    assert!(!started, "the server promoted past the damage:\n{text}");
    assert!(
        text.contains(&victim) && text.contains("does not match"),
        "pgb-wal's reason, naming the segment, is in the server log:\n{text}"
    );
    assert!(!data.join("postmaster.pid").exists(), "{text}");
    assert!(
        !fs::read_dir(data.join("pg_wal"))
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".history")),
        "no new timeline was created"
    );
}

/// WAL whose page magic pgb does not know (a newer major, or no WAL at all)
/// is a problem, never a pass: even an archive holding nothing else, where
/// no segment size can be learnt from the headers, is reported segment by
/// segment, and `get` refuses it.
#[test]
fn an_archive_of_unknown_page_magic_is_a_problem_never_a_pass() {
    let s = Scratch::new("walmagic");
    let a = s.path.join("a");
    fs::create_dir(&a).unwrap();
    let names: Vec<String> = (1..=3)
        .map(|i| format!("0000000100000000{i:08X}"))
        .collect();
    for n in &names {
        let mut b = segment(n, 42);
        b[0..2].copy_from_slice(&0xD1FFu16.to_le_bytes());
        fs::write(s.path.join(n), b).unwrap();
        assert_eq!(code(&wal(&[&"push", &s.path.join(n), &"--archive", &a])), 0);
    }
    let (status, recs, _) = run_check_archive(&[&a]);
    assert_eq!(status, 1, "{recs:?}");
    let bad: Vec<(&str, &str)> = recs
        .iter()
        .filter(|r| r["type"] == "archive-problem")
        .map(|r| (r["problem"].as_str().unwrap(), r["file"].as_str().unwrap()))
        .collect();
    for n in &names {
        assert!(bad.contains(&("bad-magic", n.as_str())), "{n}: {bad:?}");
    }
    let o = wal(&[&"get", &names[0], &s.path.join("x"), &"--archive", &a]);
    assert_eq!(code(&o), FATAL, "{}", stderr(&o));
    assert!(stderr(&o).contains("D1FF"), "{}", stderr(&o));
}

/// With two archives, a damaged copy in the first is passed over for the
/// good one in the second (exit 0, the bad copy named on stderr, the
/// right bytes written); damaged in both, get exits 255 naming both and
/// writes nothing.
#[test]
fn get_passes_over_a_damaged_copy_for_a_good_one_in_the_next_archive() {
    let s = Scratch::new("walnext");
    let (a, b, src, dest) = (
        s.path.join("a"),
        s.path.join("b"),
        s.path.join("src"),
        s.path.join("pg_wal"),
    );
    for d in [&a, &b, &src, &dest] {
        fs::create_dir(d).unwrap();
    }
    let name = "000000010000000000000009";
    let bytes = segment(name, 42);
    let path = src.join(name);
    fs::write(&path, &bytes).unwrap();
    let o = wal(&[&"push", &path, &"--archive", &a, &"--archive", &b]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let flip = |dir: &Path| {
        let p = dir.join(name);
        let mut x = fs::read(&p).unwrap();
        x[bytes.len() / 2 + 3] ^= 0x10;
        fs::write(&p, x).unwrap();
    };
    flip(&a);
    let target = dest.join("RECOVERYXLOG");
    let o = wal(&[&"get", &name, &target, &"--archive", &a, &"--archive", &b]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(fs::read(&target).unwrap(), bytes);
    let err = stderr(&o);
    assert!(
        err.contains(&a.join(name).display().to_string()) && err.contains("fetched from"),
        "{err}"
    );
    fs::remove_file(&target).unwrap();
    flip(&b);
    let o = wal(&[&"get", &name, &target, &"--archive", &a, &"--archive", &b]);
    assert_eq!(code(&o), 255, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&a.join(name).display().to_string())
            && err.contains(&b.join(name).display().to_string()),
        "{err}"
    );
    assert!(!target.exists());
    assert_eq!(names(&dest), Vec::<String>::new(), "nothing left behind");
}
