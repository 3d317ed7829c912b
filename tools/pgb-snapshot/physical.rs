//! Physical base backups: pg_basebackup in tar format with the WAL streamed
//! in and a SHA256 backup_manifest. The compressed tars are hashed while
//! pg_basebackup writes them (they are append-only); the WAL tar, whose
//! headers pg_basebackup rewrites in place, is compressed and hashed in one
//! read once it is complete.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset};
use pgb_common::chain::label_value;
use pgb_common::digest::{Digests, Hasher};
use pgb_common::error::{Error, IoContext, Result};
use pgb_common::fs::AtomicDir;
use pgb_common::pg::{self, Conn, Need};
use pgb_common::record::{Artifact, Kind, WalRange};
use pgb_common::term::warn;
use pgb_common::term::Progress;
use pgb_common::wal::{parse_lsn, prev_segment_name, segment_name};
use pgb_common::AtomicFile;
use serde_json::{json, Value};

use crate::compress::{store, Method};
use crate::incremental::{choose, current_timeline, wants_summaries, Parent};
use crate::meta::ServerInfo;
use crate::run::{
    artifact, file_entry, free_moment, now, session, stamp, write_sidecar, Ctx, Taken,
};

pub fn backup(ctx: &Ctx, server: &Conn) -> Result<Artifact> {
    let started = Instant::now();
    let created = now();
    let (mut psql, info) = session(server, "connect for physical backup")?;
    // The cluster's size, for the progress line's estimate (the tars hold
    // about that much, less with compression).
    let estimate = match pgb_common::progress::wanted() {
        true => psql
            .value("SELECT sum(pg_database_size(oid))::bigint FROM pg_database")?
            .parse()
            .ok(),
        false => None,
    };
    let timeline = match ctx.incremental {
        Some(_) => current_timeline(&mut psql)?,
        None => None,
    };
    psql.close()?;
    let (major, _) = info.need()?;
    let cluster = info.label(ctx.cluster.as_deref());
    let dir = ctx.dir(&cluster, Kind::Physical, None)?;
    let parent = match &ctx.incremental {
        Some(want) => choose(ctx, &info, major, timeline, &dir, want)?,
        None => None,
    };
    match take(
        ctx,
        server,
        &info,
        &dir,
        (started, created),
        parent.as_ref(),
        estimate,
    ) {
        Err(e) if parent.is_some() && wants_summaries(&e) => {
            warn(format!(
                "--incremental: pg_basebackup refused an incremental backup for want of WAL \
                 summaries (summarize_wal = on must have run since the parent {} was taken): {e}; \
                 taking a full backup",
                parent.as_ref().map_or("", |p| p.id.as_str())
            ));
            take(
                ctx,
                server,
                &info,
                &dir,
                (Instant::now(), now()),
                None,
                estimate,
            )
        }
        r => r,
    }
}

/// Takes one base backup into `parent` (the cluster's physical directory,
/// cleaned already): incremental on `incremental` when given.
fn take(
    ctx: &Ctx,
    server: &Conn,
    info: &ServerInfo,
    parent: &Path,
    (started, created): (Instant, DateTime<FixedOffset>),
    incremental: Option<&Parent>,
    estimate: Option<u64>,
) -> Result<Artifact> {
    // pg_basebackup of the server's major, or a newer one (it reads older
    // servers).
    let (major, why) = info.need()?;
    let (server, taker) = server.using("pg_basebackup", Need::AtLeast(major), &why)?;
    let server = &server;
    let cluster = info.label(ctx.cluster.as_deref());
    let moved = free_moment(created, parent, |s| format!("{cluster}-{s}"));
    // A backup that waited for a free second starts then: `created` plus
    // the duration is when it ended (the time a PITR target is checked
    // against).
    let started = if moved != created {
        Instant::now()
    } else {
        started
    };
    let created = moved;
    let name = format!("{cluster}-{}", stamp(&created));
    let target = parent.join(&name);
    let dir = AtomicDir::create(&target)?;
    let what = "physical backup";

    // pg_basebackup 15 learnt zstd and the method:detail syntax; 14 reads
    // any other text as level 0 and silently writes plain tars. There pgb
    // compresses the finished tars itself, and the record says so.
    let old = taker.major < 15;
    let compress = match ctx.method {
        Method::Zstd(_) if old => "0".into(),
        Method::Zstd(l) => format!("client-zstd:level={l},workers={}", ctx.threads),
        Method::Native(l) if old => l.to_string(),
        Method::Native(l) => format!("client-gzip:{l}"),
        Method::None if old => "0".into(),
        Method::None => "none".into(),
    };
    let mut cmd = server.command("pg_basebackup", true);
    cmd.arg("-D")
        .arg(dir.path())
        .args(["-Ft", "-X", "stream", "-w", "--manifest-checksums=SHA256"])
        .arg(format!("--compress={compress}"))
        .arg(format!("--checkpoint={}", ctx.checkpoint))
        .arg(format!("--label=pgb {name}"));
    if let Some(p) = incremental {
        cmd.arg(format!("--incremental={}", p.manifest.0.display()));
    }
    let child = pg::spawn(cmd, what)?;

    let done = Arc::new(AtomicBool::new(false));
    let follower = {
        let (path, done) = (dir.path().to_path_buf(), done.clone());
        std::thread::spawn(move || follow(&path, &done, estimate))
    };
    let result = child.wait();
    done.store(true, Ordering::SeqCst);
    let streamed = follower
        .join()
        .map_err(|_| Error::msg("physical backup: hashing thread panicked"))?;
    result?;
    let mut digests = streamed?;

    // The WAL tar: compress (when asked) and hash in one read. With gzip,
    // pg_basebackup compressed it itself.
    let wal_gz = dir.path().join("pg_wal.tar.gz");
    if wal_gz.exists() {
        digests.insert("pg_wal.tar.gz".into(), hash_file(&wal_gz)?);
    }
    // Plain tars left: the WAL tar (whose headers pg_basebackup rewrites,
    // so it is never compressed by it) and, from pg_basebackup 14, all.
    let mut plain: Vec<String> = fs::read_dir(dir.path())
        .ctx("read directory", dir.path())?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tar"))
        .collect();
    plain.sort();
    for tar in plain {
        if ctx.zstd().is_none() && digests.contains_key(&tar) {
            continue; // hashed as it was written
        }
        let path = dir.path().join(&tar);
        digests.remove(&tar);
        let (name, d) = match ctx.zstd() {
            Some(z) => {
                let name = format!("{tar}.zst");
                let out = AtomicFile::create(dir.path().join(&name))?;
                let src = File::open(&path).ctx("open", &path)?;
                let (out, d) = store(src, out, Some(z), &Progress::new(&tar))?;
                out.commit()?;
                fs::remove_file(&path).ctx("remove", &path)?;
                (name, d)
            }
            None => (tar.clone(), hash_file(&path)?),
        };
        digests.insert(name, d);
    }

    // The manifest: hashed and parsed from one read.
    let manifest_path = dir.path().join("backup_manifest");
    let manifest_bytes = fs::read(&manifest_path).ctx("read", &manifest_path)?;
    let mut h = Hasher::new();
    h.update(&manifest_bytes);
    digests.insert("backup_manifest".into(), h.finish());
    let manifest: Value = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| Error::msg(format!("{}: not valid JSON: {e}", manifest_path.display())))?;

    // Every file of the backup must have been hashed, whole.
    for entry in fs::read_dir(dir.path()).ctx("read directory", dir.path())? {
        let entry = entry.ctx("read directory", dir.path())?;
        let n = entry.file_name().to_string_lossy().into_owned();
        let size = entry.metadata().ctx("stat", entry.path())?.len();
        match digests.get(&n) {
            Some(d) if d.size == size => {}
            Some(d) => {
                return Err(Error::msg(format!(
                    "{what}: {n}: {size} bytes on disk but {} hashed; the file changed while it was written",
                    d.size
                )))
            }
            None => return Err(Error::msg(format!("{what}: {n}: unexpected file from pg_basebackup"))),
        }
    }
    let wal = wal_range(&manifest, info.wal_segment_size)?;
    let label = backup_label(&dir.path().join(base_name(&digests)?))?;
    let label = (!label.is_empty()).then_some(label);
    let incremental = match incremental {
        Some(p) => {
            let from = label
                .as_deref()
                .and_then(|l| label_value(l, "INCREMENTAL FROM LSN"))
                .ok_or_else(|| {
                    Error::msg(format!(
                        "{what}: pg_basebackup --incremental wrote a backup_label without \
                         INCREMENTAL FROM LSN"
                    ))
                })?;
            Some(json!({"parent": p.id, "depth": p.depth, "from_lsn": from}))
        }
        None => None,
    };
    dir.commit()?;

    let version = taker.version.clone();
    let files = digests
        .into_iter()
        .map(|(n, d)| file_entry(&n, d))
        .collect();
    let mut a = artifact(
        ctx,
        Taken {
            kind: Kind::Physical,
            name: &cluster,
            info,
            cluster: &cluster,
            created,
            location: &target,
            files,
            started,
        },
        ("pg_basebackup", &version),
    );
    a.format = Some("pg_basebackup-tar".into());
    a.compression = Some(match old {
        true => ctx.method.record("pgb", "pg_basebackup"),
        false => ctx.method.record("pg_basebackup", "pg_basebackup"),
    });
    a.wal = Some(wal);
    if let Some(label) = label {
        a.extra.insert("backup_label".into(), label.into());
    }
    a.extra.insert("checkpoint".into(), ctx.checkpoint.into());
    if let Some(inc) = incremental {
        a.extra.insert("incremental".into(), inc);
    }
    write_sidecar(&a)?;
    Ok(a)
}

/// The base tar's name among the files.
fn base_name(d: &BTreeMap<String, Digests>) -> Result<String> {
    d.keys()
        .find(|n| n.starts_with("base.tar"))
        .cloned()
        .ok_or_else(|| Error::msg("physical backup: pg_basebackup wrote no base.tar"))
}

/// Tars pg_basebackup writes front to back and never revisits.
fn is_stream(name: &str) -> bool {
    !name.starts_with("pg_wal.")
        && (name.ends_with(".tar") || name.ends_with(".tar.zst") || name.ends_with(".tar.gz"))
}

/// Hashes the tars as pg_basebackup appends to them, until `done` is set
/// and a last pass has read every file to its end.
fn follow(
    dir: &Path,
    done: &AtomicBool,
    estimate: Option<u64>,
) -> Result<BTreeMap<String, Digests>> {
    struct Tail {
        file: File,
        hasher: Hasher,
    }
    let mut tails: BTreeMap<String, Tail> = BTreeMap::new();
    let mut buf = vec![0u8; 1 << 20];
    let progress = Progress::estimated("base backup", estimate);
    loop {
        let last_pass = done.load(Ordering::SeqCst);
        let mut moved = false;
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => return Err(Error::io("read directory", dir, e)),
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_stream(&name) {
                continue;
            }
            if !tails.contains_key(&name) {
                let p = entry.path();
                let file = File::open(&p).ctx("open", &p)?;
                tails.insert(
                    name.clone(),
                    Tail {
                        file,
                        hasher: Hasher::new(),
                    },
                );
            }
            let t = tails.get_mut(&name).expect("just inserted");
            loop {
                let n = t.file.read(&mut buf).ctx("read", entry.path())?;
                if n == 0 {
                    break;
                }
                t.hasher.update(&buf[..n]);
                progress.add(n as u64);
                moved = true;
            }
        }
        if last_pass {
            break;
        }
        if !moved {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(tails
        .into_iter()
        .map(|(n, t)| (n, t.hasher.finish()))
        .collect())
}

fn hash_file(p: &Path) -> Result<Digests> {
    let f = File::open(p).ctx("open", p)?;
    pgb_common::digest::hash_reader(f).ctx("read", p)
}

/// Start and stop of the WAL the backup needs, from the manifest.
fn wal_range(manifest: &Value, seg_size: u64) -> Result<WalRange> {
    let ranges = manifest["WAL-Ranges"]
        .as_array()
        .filter(|r| !r.is_empty())
        .ok_or_else(|| Error::msg("backup_manifest has no WAL-Ranges"))?;
    let first = &ranges[0];
    let last = &ranges[ranges.len() - 1];
    let field = |v: &Value, k: &str| v[k].as_str().map(str::to_string);
    let (start, stop) = match (field(first, "Start-LSN"), field(last, "End-LSN")) {
        (Some(a), Some(b)) => (a, b),
        _ => {
            return Err(Error::msg(
                "backup_manifest: WAL-Ranges without Start-LSN/End-LSN",
            ))
        }
    };
    let start_tli = first["Timeline"].as_u64().unwrap_or(1) as u32;
    let stop_tli = last["Timeline"].as_u64().unwrap_or(1) as u32;
    let (s, e) = match (parse_lsn(&start), parse_lsn(&stop)) {
        (Some(s), Some(e)) => (s, e),
        _ => {
            return Err(Error::msg(format!(
                "backup_manifest: bad LSN {start} or {stop}"
            )))
        }
    };
    Ok(WalRange {
        timeline: stop_tli,
        start_lsn: start,
        stop_lsn: stop,
        start_segment: segment_name(start_tli, s, seg_size),
        stop_segment: prev_segment_name(stop_tli, e.max(s + 1), seg_size),
        segment_size: seg_size,
    })
}

/// The backup_label from the base tar: pg_basebackup sends it first, so
/// only the head of the tar is decompressed.
fn backup_label(base: &PathBuf) -> Result<String> {
    let mut f = File::open(base).ctx("open", base)?;
    f.seek(SeekFrom::Start(0)).ctx("read", base)?;
    let name = base.to_string_lossy();
    let mut r: Box<dyn Read> = if name.ends_with(".zst") {
        Box::new(zstd::stream::read::Decoder::new(f).ctx("read", base)?)
    } else if name.ends_with(".gz") {
        // gzip is pg_basebackup's; pgb has no gzip decoder: no label text.
        return Ok(String::new());
    } else {
        Box::new(f)
    };
    let mut header = [0u8; 512];
    r.read_exact(&mut header).ctx("read tar header", base)?;
    let entry = String::from_utf8_lossy(&header[..100])
        .trim_end_matches('\0')
        .to_string();
    if entry != "backup_label" {
        return Err(Error::msg(format!(
            "{}: first entry is {entry:?}, not backup_label",
            base.display()
        )));
    }
    let size_field = String::from_utf8_lossy(&header[124..136]);
    let size = u64::from_str_radix(size_field.trim_matches(|c: char| c == '\0' || c == ' '), 8)
        .map_err(|_| Error::msg(format!("{}: bad tar size field", base.display())))?;
    if size > 1 << 20 {
        return Err(Error::msg(format!(
            "{}: backup_label of {size} bytes",
            base.display()
        )));
    }
    let mut label = vec![0u8; size as usize];
    r.read_exact(&mut label).ctx("read backup_label", base)?;
    Ok(String::from_utf8_lossy(&label).into_owned())
}
