//! One table of damages (issue 14): every kind of data pgb writes or reads
//! back, damaged four ways (a byte flipped, cut short, bytes appended,
//! bytes zeroed), and each damage run through every path that reads that
//! data: `pgb-verify --checksums` and `--manifest`, `pgb-restore`,
//! `pgb-wal get`, `pgb-check-archive`. Every path must say no (exit 1, or
//! 255 for `get`, which PostgreSQL takes as fatal) naming what is damaged,
//! and leave nothing at its destination; the untouched data passes every
//! path. The data is made once on one small cluster; each case puts the
//! original bytes (and sidecars) back after it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::restore::{db_exists, tiny_appdb};
use crate::util::*;
use crate::verify::{location, plain_backup_with};
use crate::wal::{keypair, FATAL};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Damage {
    Flip,
    Truncate,
    Append,
    Zero,
}

impl Damage {
    fn apply(self, b: &mut Vec<u8>) {
        let n = b.len();
        match self {
            Damage::Flip => b[n / 2] ^= 0x01,
            Damage::Truncate => b.truncate(n / 2),
            Damage::Append => b.extend_from_slice(b"\0\0\0\0"),
            // 512 bytes from the first one that is not zero at or after
            // the middle (the start, when the second half is all zeros).
            Damage::Zero => {
                let at = b[n / 2..]
                    .iter()
                    .position(|&x| x != 0)
                    .map_or(0, |i| n / 2 + i);
                let end = (at + 512).min(n);
                b[at..end].fill(0);
            }
        }
    }
}

/// Where the damaged bytes lie.
#[derive(Clone)]
enum Spot {
    /// A file as stored.
    File(PathBuf),
    /// A member of a stored tar.zst.
    Member { tar_zst: PathBuf, member: String },
}

/// A path that reads the data back.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Reader {
    /// `pgb-verify --checksums` on the artifact's record.
    Checksums,
    /// `pgb-verify --manifest`, with stock pg_verifybackup where it runs.
    Manifest,
    /// `pgb-verify --manifest` with no pg_verifybackup: pgb's own check.
    NativeManifest,
    /// `pgb-restore` of the dump and globals into a fresh cluster.
    RestoreLogical,
    /// `pgb-restore --target-immediate` into a new data directory.
    RestorePhysical,
    /// `pgb-wal get` of the segment, as restore_command.
    WalGet,
    /// `pgb-check-archive` of the archive.
    CheckArchive,
}

use Reader::*;

/// One kind of data, and every path that reads it: the exit status each
/// gives on damage and what its message must contain (`{file}`: the name
/// of the damaged file, `{member}`: of the tar member).
struct Data {
    what: &'static str,
    spot: Spot,
    /// The artifact records the verify and restore paths are given.
    records: Vec<Value>,
    /// A WAL archive and the segment in it, for `get` and the archive check.
    archive: Option<(PathBuf, String)>,
    /// Each reader, with its exit status for each of [`DAMAGES`].
    readers: Vec<(Reader, [i32; 4], &'static str)>,
}

const DAMAGES: [Damage; 4] = [Damage::Flip, Damage::Truncate, Damage::Append, Damage::Zero];
const NO: [i32; 4] = [1; 4];

struct Outcome {
    code: i32,
    stderr: String,
    /// What was left at the destination, when something was.
    left: Option<String>,
}

struct World<'a> {
    c: &'a Cluster,
    /// A fresh cluster the logical restores go into.
    dst: &'a Cluster,
    s: &'a Scratch,
    identity: PathBuf,
    no_stock: PathBuf,
}

impl World<'_> {
    fn read(&self, r: Reader, d: &Data) -> Outcome {
        let (code, stderr, left) = match r {
            Checksums | Manifest | NativeManifest => {
                let mut cmd = self.c.tool("pgb-verify");
                match r {
                    Checksums => cmd.arg("--checksums"),
                    Manifest => cmd.arg("--manifest"),
                    _ => cmd.arg("--manifest").arg("--pg-bindir").arg(&self.no_stock),
                };
                cmd.arg("-i").arg(&self.identity);
                let (code, out, err) = pipe(&mut cmd, &d.records);
                // A verdict of no is recorded as one.
                let left = (code == 1
                    && !out.iter().any(|r| {
                        r["verified"]
                            .as_array()
                            .is_some_and(|v| v.iter().any(|e| e["ok"] == false))
                    }))
                .then(|| format!("no ok:false verdict in {out:?}"));
                (code, err, left)
            }
            RestoreLogical => {
                let (code, out, err) = pipe(self.dst.tool("pgb-restore").arg("-C"), &d.records);
                let role = self.dst.sql(
                    "postgres",
                    "SELECT count(*) FROM pg_roles WHERE rolname = 'app_owner'",
                );
                // Roles may be left only by globals that restored whole.
                let globals_ok = out.iter().any(|r| {
                    r["type"] == "restore" && r["artifact"]["kind"] == "globals" && r["ok"] == true
                });
                let left = if code != 0 && db_exists(self.dst, "appdb") {
                    Some("database appdb in the target".to_string())
                } else if code != 0 && role != "0" && !globals_ok {
                    Some("role app_owner in the target".to_string())
                } else {
                    None
                };
                if code != 0 && role != "0" {
                    self.dst.sql("postgres", "DROP ROLE app_owner");
                }
                (code, err, left)
            }
            RestorePhysical => {
                let dest = self.s.path.join("restored");
                let o = Command::new(bin("pgb-restore"))
                    .arg("--repo")
                    .arg(d.records[0]["repo"].as_str().unwrap())
                    .arg("--target-immediate")
                    .arg("-D")
                    .arg(&dest)
                    .env("PGB_PG_BINDIR", all_bindirs())
                    .stdin(Stdio::null())
                    .output()
                    .unwrap();
                let code = o.status.code().unwrap_or(-1);
                let left = if code == 0 {
                    assert!(dest.join("global/pg_control").is_file());
                    fs::remove_dir_all(&dest).unwrap();
                    None
                } else {
                    dest.exists().then(|| format!("{} exists", dest.display()))
                };
                (code, String::from_utf8_lossy(&o.stderr).into_owned(), left)
            }
            WalGet => {
                let (archive, seg) = d.archive.as_ref().unwrap();
                let pg_wal = self.s.path.join("pg_wal");
                let target = pg_wal.join("RECOVERYXLOG");
                let o = Command::new(bin("pgb-wal"))
                    .arg("get")
                    .arg(seg)
                    .arg(&target)
                    .arg("--archive")
                    .arg(archive)
                    .arg("-i")
                    .arg(&self.identity)
                    .stdin(Stdio::null())
                    .output()
                    .unwrap();
                let code = o.status.code().unwrap_or(-1);
                let mut left = None;
                if code == 0 {
                    fs::remove_file(&target).unwrap();
                }
                let files = files_below(&pg_wal);
                if !files.is_empty() {
                    left = Some(format!("left in pg_wal: {files:?}"));
                }
                (code, String::from_utf8_lossy(&o.stderr).into_owned(), left)
            }
            CheckArchive => {
                let (archive, _) = d.archive.as_ref().unwrap();
                let o = Command::new(bin("pgb-check-archive"))
                    .arg(archive)
                    .arg("-i")
                    .arg(&self.identity)
                    .stdin(Stdio::null())
                    .output()
                    .unwrap();
                // Problems are records on stdout; the messages on stderr.
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
                (o.status.code().unwrap_or(-1), text, None)
            }
        };
        Outcome { code, stderr, left }
    }
}

/// Reads `spot`'s bytes, lets `damage` change them, writes them back.
fn inflict(spot: &Spot, damage: Damage) {
    match spot {
        Spot::File(p) => {
            let mut b = fs::read(p).unwrap();
            let before = b.clone();
            damage.apply(&mut b);
            assert_ne!(b, before, "{damage:?} changes {}", p.display());
            fs::write(p, b).unwrap();
        }
        Spot::Member { tar_zst, member } => damage_member(tar_zst, member, damage),
    }
}

/// Damages one member of a tar.zst, every other member left as it was,
/// byte for byte (headers copied raw), and the member's header carrying
/// its new size.
fn damage_member(tar_zst: &Path, member: &str, damage: Damage) {
    let plain = zstd::decode_all(fs::File::open(tar_zst).unwrap()).unwrap();
    let mut out = tar::Builder::new(Vec::new());
    let mut archive = tar::Archive::new(&plain[..]);
    let mut entries = archive.entries().unwrap().raw(true);
    let mut found = false;
    for e in entries.by_ref() {
        let mut e = e.unwrap();
        let mut header = e.header().clone();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        if e.path().unwrap() == Path::new(member) {
            let before = data.clone();
            damage.apply(&mut data);
            assert_ne!(data, before, "{damage:?} changes {member}");
            header.set_size(data.len() as u64);
            header.set_cksum();
            found = true;
        }
        out.append(&header, &data[..]).unwrap();
    }
    assert!(found, "no {member} in {}", tar_zst.display());
    let tar = out.into_inner().unwrap();
    fs::write(tar_zst, zstd::encode_all(&tar[..], 3).unwrap()).unwrap();
}

/// Every file below the repositories and archives, to put back after each
/// case (the damaged file, and sidecars a verdict was written into).
fn keep(dirs: &[&Path]) -> BTreeMap<PathBuf, Vec<u8>> {
    dirs.iter()
        .flat_map(|d| {
            files_below(d)
                .into_iter()
                .map(move |rel| d.join(rel))
                .collect::<Vec<_>>()
        })
        .map(|p| {
            let b = fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

fn put_back(kept: &BTreeMap<PathBuf, Vec<u8>>) {
    for (p, b) in kept {
        if fs::read(p).ok().as_ref() != Some(b) {
            fs::write(p, b).unwrap();
        }
    }
}

fn put_back_sidecars(kept: &BTreeMap<PathBuf, Vec<u8>>) {
    for (p, b) in kept {
        if p.to_string_lossy().ends_with(".pgb.json") && fs::read(p).ok().as_ref() != Some(b) {
            fs::write(p, b).unwrap();
        }
    }
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn every_damage_is_caught_by_every_path_that_reads_the_data() {
    let c = Cluster::new();
    tiny_appdb(&c, 2000);
    let s = Scratch::new("damage");
    let (identity, recipient) = keypair(&s.path, "k");
    let no_stock = s.path.join("no-pg-bindir");
    fs::create_dir(&no_stock).unwrap();
    let pg_wal = s.path.join("pg_wal");
    fs::create_dir(&pg_wal).unwrap();

    // A logical dump and the globals.
    let dumps = s.path.join("dumps");
    fs::create_dir(&dumps).unwrap();
    let set = snapshot_records(
        &c,
        &dumps,
        &["-d", "appdb", "--globals", "--cluster", "main"],
    );
    let of = |kind: &str| set.iter().find(|r| r["kind"] == kind).unwrap().clone();
    let (dump, globals) = (of("logical"), of("globals"));

    // A physical backup (tar.zst).
    let phys = s.path.join("physical");
    fs::create_dir(&phys).unwrap();
    let backup = snapshot_records(&c, &phys, &["--physical", "--cluster", "main"]);
    let bdir = location(&backup[0]);
    let base = bdir.join("base.tar.zst");
    let wal_tar = bdir.join("pg_wal.tar.zst");
    let seg = backup[0]["wal"]["start_segment"]
        .as_str()
        .unwrap()
        .to_string();

    // Plain backups by stock pg_basebackup, with CRC32C and SHA256
    // manifests (pgb-verify checks them; pgb-restore restores only the tar
    // format pgb-snapshot writes).
    let plain = s.path.join("plain");
    fs::create_dir(&plain).unwrap();
    let crc = plain_backup_with(&c, &plain, "crc32c", "CRC32C");
    let sha = plain_backup_with(&c, &plain, "sha256", "SHA256");

    // The backup's first WAL segment, archived by pgb-wal push plain,
    // compressed and encrypted.
    let src = s.path.join("src");
    fs::create_dir(&src).unwrap();
    run(Command::new("tar")
        .arg("--zstd")
        .arg("-xf")
        .arg(&wal_tar)
        .arg("-C")
        .arg(&src)
        .arg(&seg));
    let mut archives = Vec::new();
    for (form, flags) in [
        ("plain", vec![]),
        ("zst", vec!["-Z", "zstd"]),
        ("age", vec!["-r", recipient.as_str()]),
    ] {
        let a = s.path.join(format!("archive-{form}"));
        fs::create_dir(&a).unwrap();
        run(Command::new(bin("pgb-wal"))
            .arg("push")
            .arg(src.join(&seg))
            .arg("--archive")
            .arg(&a)
            .args(&flags)
            .stdin(Stdio::null()));
        let suffix = match form {
            "plain" => "",
            f => f,
        };
        let stored = a.join(format!(
            "{seg}{}{suffix}",
            if suffix.is_empty() { "" } else { "." }
        ));
        assert!(stored.is_file(), "{}", stored.display());
        archives.push((form, a, stored));
    }

    let dest_files = |r: &Value| location(r).join("global/pg_control");
    let mut table: Vec<Data> = vec![
        Data {
            what: "logical dump",
            spot: Spot::File(location(&dump)),
            records: set.clone(),
            archive: None,
            readers: vec![(Checksums, NO, "{file}"), (RestoreLogical, NO, "{file}")],
        },
        Data {
            what: "globals dump",
            spot: Spot::File(location(&globals)),
            records: set.clone(),
            archive: None,
            readers: vec![(Checksums, NO, "{file}"), (RestoreLogical, NO, "{file}")],
        },
        Data {
            what: "physical backup's base.tar.zst as stored",
            spot: Spot::File(base.clone()),
            records: backup.clone(),
            archive: None,
            readers: vec![
                (Checksums, NO, "{file}"),
                (Manifest, NO, "{file}"),
                (RestorePhysical, NO, "{file}"),
            ],
        },
        Data {
            what: "physical tar member",
            spot: Spot::Member {
                tar_zst: base.clone(),
                member: "global/pg_control".into(),
            },
            records: backup.clone(),
            archive: None,
            readers: vec![
                (Checksums, NO, "base.tar.zst"),
                (Manifest, NO, "{member}"),
                (RestorePhysical, NO, "base.tar.zst"),
            ],
        },
        Data {
            what: "WAL segment in a backup's pg_wal.tar.zst",
            spot: Spot::Member {
                tar_zst: wal_tar.clone(),
                member: seg.clone(),
            },
            records: backup.clone(),
            archive: None,
            readers: vec![
                (Checksums, NO, "pg_wal.tar.zst"),
                // The flipped byte lies in the middle of the segment, past
                // the backup's stop LSN: no recovery reads it, and the
                // manifest check, like pg_verifybackup, judges the WAL
                // from start to stop only. The stored bytes' checksums
                // catch it all the same.
                (Manifest, [0, 1, 1, 1], "{member}"),
                (RestorePhysical, NO, "pg_wal.tar.zst"),
            ],
        },
    ];
    for (rec, alg) in [(&crc, "CRC32C"), (&sha, "SHA256")] {
        let what = if alg == "CRC32C" {
            "plain backup file, CRC32C manifest"
        } else {
            "plain backup file, SHA256 manifest"
        };
        table.push(Data {
            what,
            spot: Spot::File(dest_files(rec)),
            records: vec![rec.clone()],
            archive: None,
            readers: vec![
                (Checksums, NO, "global/pg_control"),
                (Manifest, NO, "global/pg_control"),
                (NativeManifest, NO, "global/pg_control"),
            ],
        });
    }
    for (form, a, stored) in &archives {
        table.push(Data {
            what: match *form {
                "plain" => "archived WAL segment, plain",
                "zst" => "archived WAL segment, .zst",
                _ => "archived WAL segment, .age",
            },
            spot: Spot::File(stored.clone()),
            records: vec![],
            archive: Some((a.clone(), seg.clone())),
            readers: vec![(WalGet, [FATAL; 4], "{file}"), (CheckArchive, NO, "{file}")],
        });
    }

    let dst = Cluster::new();
    let w = World {
        c: &c,
        dst: &dst,
        s: &s,
        identity: identity.clone(),
        no_stock: no_stock.clone(),
    };
    let roots: Vec<&Path> = vec![&dumps, &phys, &plain];
    let arch: Vec<&Path> = archives.iter().map(|(_, a, _)| a.as_path()).collect();
    let kept = keep(&[roots.as_slice(), arch.as_slice()].concat());

    let mut failures = Vec::new();
    for d in &table {
        let (file, member) = match &d.spot {
            Spot::File(p) => (file_name(p), String::new()),
            Spot::Member { tar_zst, member } => (file_name(tar_zst), member.clone()),
        };
        for (i, damage) in DAMAGES.into_iter().enumerate() {
            inflict(&d.spot, damage);
            for (reader, exits, msg) in &d.readers {
                let exit = exits[i];
                let want = msg.replace("{file}", &file).replace("{member}", &member);
                // Each reader sees the sidecars as the backup left them
                // (an earlier reader's verdict makes --select pass over it).
                put_back_sidecars(&kept);
                let o = w.read(*reader, d);
                let case = format!("{} / {damage:?} / {reader:?}", d.what);
                let named = exit == 0 || o.stderr.contains(&want);
                if o.code != exit || !named || o.left.is_some() {
                    failures.push(format!(
                        "{case}: exit {} (want {exit}), want {want:?}, left {:?}:\n{}",
                        o.code, o.left, o.stderr
                    ));
                } else {
                    eprintln!("ok: {case}: {}", o.stderr.lines().next().unwrap_or(""));
                }
            }
            put_back(&kept);
        }
    }
    // Untouched, everything passes every path.
    for d in &table {
        for (reader, _, _) in &d.readers {
            let o = w.read(*reader, d);
            let case = format!("{} / untouched / {reader:?}", d.what);
            if o.code != 0 || o.left.is_some() {
                failures.push(format!("{case}: exit {}:\n{}", o.code, o.stderr));
            }
            if *reader == RestoreLogical {
                assert_eq!(dst.sql("appdb", "SELECT count(*) FROM app.items"), "2000");
                dst.sql("postgres", "DROP DATABASE appdb; DROP ROLE app_owner");
            }
            put_back(&kept);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of the cases went wrong:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
