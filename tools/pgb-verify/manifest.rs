//! A physical backup's backup_manifest verified natively where the backup
//! is: inside the tar or tar.zst files pgb-snapshot stored (age-encrypted
//! ones decrypted streaming), without extracting anything to disk, or in a
//! plain-format data directory: the manifest's own checksum, every listed
//! file present with its size and checksum (in whichever algorithm the
//! manifest names: CRC32C, SHA224/256/384/512), nothing unexpected, the system
//! identifier in pg_control, and the WAL the backup needs present in
//! pg_wal and checked page by page from its start to its stop LSN
//! (walpages.rs). For a plain-format directory stock `pg_verifybackup` runs as
//! well and its verdict is recorded beside pgb's.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use pgb_common::manifest::{Manifest, WalRangeEntry};
use pgb_common::pgbin::{self, Need};
use pgb_common::record::{Artifact, Kind};
use pgb_common::wal::segment_name_for_segno;
use serde_json::{json, Value};

use crate::run::{Ctx, Verdict};
use crate::stored;

/// What the walk over the backup's files found, compared as it goes.
#[derive(Default)]
struct Walk {
    manifest: Manifest,
    seen: BTreeSet<String>,
    wal_files: BTreeSet<String>,
    sysid_in_control: Option<String>,
    members: u64,
    /// The record's WAL segment size, and the WAL pages checked.
    seg_size: Option<u64>,
    wal_pages: u64,
    problems: Vec<String>,
}

impl Walk {
    /// One regular file of the backup, `full` relative to the data
    /// directory; `shown` names where it is (a tar, or the directory).
    fn visit(&mut self, shown: &str, full: &str, data: &mut dyn Read) -> std::io::Result<()> {
        self.members += 1;
        if let Some(seg) = full.strip_prefix("pg_wal/") {
            self.wal_files.insert(seg.to_string());
            let c = crate::walpages::check(seg, data, &self.manifest.wal_ranges, self.seg_size)?;
            self.wal_pages += c.pages;
            if let Some(p) = c.problem {
                self.problems.push(format!("{shown}: {full}: {p}"));
            }
            return Ok(());
        }
        let mut h = self.manifest.hasher_for(full);
        let mut size = 0u64;
        let mut head = [0u8; 8];
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = data.read(&mut buf)?;
            if n == 0 {
                break;
            }
            if size < 8 {
                let k = (8 - size as usize).min(n);
                head[size as usize..size as usize + k].copy_from_slice(&buf[..k]);
            }
            h.update(&buf[..n]);
            size += n as u64;
        }
        if full == "global/pg_control" && size >= 8 {
            self.sysid_in_control = Some(u64::from_le_bytes(head).to_string());
        }
        if self.manifest.files.contains_key(full) {
            self.seen.insert(full.to_string());
        }
        if let Some(p) = self.manifest.check_file(full, size, &h.finish()) {
            self.problems.push(format!("{shown}: {p}"));
        }
        Ok(())
    }
}

/// True when the artifact's directory holds a plain-format data directory
/// (pg_basebackup -Fp) rather than tars.
pub fn is_plain(a: &Artifact) -> bool {
    let tars = a.files.iter().any(|f| {
        let n = stored::plain_name(&f.name);
        n.ends_with(".tar") || n.ends_with(".tar.zst") || n.ends_with(".tar.gz")
    });
    // A remote repository holds tars (pgb-ship copies files, not data
    // directories).
    let loc = a.location();
    !tars && !pgb_common::store::is_url(&loc) && loc.join("PG_VERSION").is_file()
}

/// Reads the manifest, decrypting `backup_manifest.age` when the artifact
/// is encrypted. Returns the bytes and the path shown in messages.
fn read_manifest(
    a: &Artifact,
    dir: &Path,
    problems: &mut Vec<String>,
) -> Option<(Vec<u8>, String)> {
    let enc = dir.join("backup_manifest.age");
    let enc_there = || pgb_common::store::size_of(&enc).ok().flatten().is_some();
    let path = if stored::is_encrypted(a) && enc_there() {
        enc
    } else {
        dir.join("backup_manifest")
    };
    let shown = path.display().to_string();
    let read = stored::open(a, &path).and_then(|(mut r, check)| {
        let mut bytes = Vec::new();
        r.read_to_end(&mut bytes)
            .map_err(|e| pgb_common::Error::io("read", &path, e))?;
        problems.extend(check.problem());
        Ok(bytes)
    });
    match read {
        Ok(b) => Some((b, shown)),
        Err(e) => {
            problems.push(e.to_string());
            None
        }
    }
}

pub fn check(ctx: &Ctx, a: &Artifact) -> Verdict {
    if a.kind != Kind::Physical {
        return Verdict::skip();
    }
    let plain = is_plain(a);
    let mut v = native(a, plain);
    // Stock pg_verifybackup checks plain backups, and from 18 on tars too
    // (the WAL is left to pgb: it cannot parse WAL inside tars, -n).
    if plain || !pgb_common::physical::is_encrypted(a) {
        let stock = pg_verifybackup(ctx, a, plain);
        if stock.is_null() {
            return v.with("format", "tar".into());
        }
        if stock["ok"] == false {
            v.problems.push(format!(
                "pg_verifybackup: {}",
                stock["message"].as_str().unwrap_or("failed")
            ));
        }
        v = v.with("pg_verifybackup", stock);
    }
    v.with("format", (if plain { "plain" } else { "tar" }).into())
}

/// pgb's own verification, on tars or on a plain directory.
fn native(a: &Artifact, plain: bool) -> Verdict {
    let dir = a.location();
    let mut w = Walk {
        seg_size: a.wal.as_ref().map(|w| w.segment_size),
        ..Walk::default()
    };
    let Some((bytes, manifest_shown)) = read_manifest(a, &dir, &mut w.problems) else {
        return Verdict::new(w.problems);
    };
    match Manifest::parse_lenient(&bytes) {
        Ok((m, problems)) => {
            w.manifest = m;
            w.problems
                .extend(problems.iter().map(|p| format!("{manifest_shown}: {p}")));
        }
        Err(p) => {
            w.problems.push(format!("{manifest_shown}: {p}"));
            return Verdict::new(w.problems);
        }
    }

    if plain {
        let shown = dir.display().to_string();
        if let Err(e) = walk_dir(&dir, &dir, &shown, &mut w) {
            w.problems.push(format!("{shown}: {e}"));
        }
    } else {
        for f in &a.files {
            walk_tar(a, &dir, &f.name, &mut w);
        }
    }

    let missing: Vec<String> = w.manifest.missing(&w.seen).collect();
    w.problems.extend(missing);
    match (&w.sysid_in_control, &a.system_identifier) {
        (Some(got), Some(want)) if got != want => w.problems.push(format!(
            "global/pg_control: system identifier {got}, the record says {want}"
        )),
        (None, _) => w
            .problems
            .push("global/pg_control: not found in the backup".into()),
        _ => {}
    }
    let wal = missing_wal(&w.manifest.wal_ranges, &w.wal_files, a);
    w.problems.extend(wal);
    let algorithms: BTreeSet<&str> = w
        .manifest
        .files
        .values()
        .map(|l| l.algorithm.name())
        .collect();
    Verdict::new(w.problems)
        .with("files_checked", (w.seen.len() as u64).into())
        .with("checksum_algorithms", json!(algorithms))
        .with("wal_pages_checked", w.wal_pages.into())
        .with(
            if plain { "files_read" } else { "tar_members" },
            w.members.into(),
        )
}

/// Reads one stored file of a tar-format backup; files that are not tars
/// (the manifest) are passed over.
fn walk_tar(a: &Artifact, dir: &Path, name: &str, w: &mut Walk) {
    let plain_name = stored::plain_name(name);
    if plain_name.ends_with(".tar.gz") {
        w.problems.push(format!(
            "{name}: gzip tars are not verified natively yet; use --compress zstd"
        ));
        return;
    }
    let Some(stem) = plain_name
        .strip_suffix(".tar.zst")
        .or_else(|| plain_name.strip_suffix(".tar"))
    else {
        return;
    };
    let prefix = match stem {
        "base" => String::new(),
        "pg_wal" => "pg_wal/".to_string(),
        oid if oid.chars().all(|c| c.is_ascii_digit()) => format!("pg_tblspc/{oid}/"),
        _ => {
            w.problems
                .push(format!("{name}: not a tar pg_basebackup writes"));
            return;
        }
    };
    let path = dir.join(name);
    let (src, check) = match stored::open(a, &path) {
        Ok(s) => s,
        Err(e) => {
            w.problems.push(e.to_string());
            return;
        }
    };
    let result = (|| -> std::io::Result<()> {
        let r: Box<dyn Read> = if plain_name.ends_with(".zst") {
            Box::new(zstd::stream::read::Decoder::new(src)?)
        } else {
            Box::new(src)
        };
        let mut archive = tar::Archive::new(r);
        for entry in archive.entries()? {
            let mut entry = entry?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let member = entry.path()?.to_string_lossy().into_owned();
            w.visit(name, &format!("{prefix}{member}"), &mut entry)?;
        }
        // What follows the end-of-archive blocks still counts for the
        // plaintext checksum.
        stored::drain(&mut archive.into_inner())?;
        Ok(())
    })();
    match result {
        Err(e) => w.problems.push(format!("{}: {e}", path.display())),
        Ok(()) => w.problems.extend(check.problem()),
    }
}

/// Walks a plain-format data directory; follows the tablespace links in
/// pg_tblspc (as pg_verifybackup does), no other symlink.
fn walk_dir(root: &Path, dir: &Path, shown: &str, w: &mut Walk) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let rel = p
            .strip_prefix(root)
            .map_err(std::io::Error::other)?
            .to_string_lossy()
            .into_owned();
        let mut ft = e.file_type()?;
        let in_tblspc = Path::new(&rel).parent() == Some(Path::new("pg_tblspc"));
        if ft.is_symlink() && in_tblspc {
            ft = std::fs::metadata(&p)?.file_type();
        }
        if ft.is_dir() {
            walk_dir(root, &p, shown, w)?;
        } else if ft.is_file() {
            if rel == "backup_manifest" {
                continue;
            }
            let mut f = std::fs::File::open(&p)?;
            w.visit(shown, &rel, &mut f)?;
        } else {
            w.problems
                .push(format!("{shown}: {rel}: not a regular file or directory"));
        }
    }
    Ok(())
}

/// Stock pg_verifybackup on a plain-format backup: `{"ok", "status",
/// "message"}`, or `{"ok": null, "message"}` when it could not run.
fn pg_verifybackup(ctx: &Ctx, a: &Artifact, plain: bool) -> Value {
    let dir = a.location();
    if pgb_common::store::is_url(&dir) {
        // pg_verifybackup reads a local directory; pgb's own check read
        // the remote tars.
        return Value::Null;
    }
    // Its own major: pg_control and the manifest change between majors
    // (pg_verifybackup 18 calls a 17 backup's pg_control corrupt).
    // The record's major, else the one a plain backup names (PG_VERSION,
    // when it is a plausible one); with neither, the first pg_verifybackup
    // found (a damaged PG_VERSION is pg_verifybackup's to report).
    let own = std::fs::read_to_string(dir.join("PG_VERSION"))
        .ok()
        .and_then(|v| pgbin::major_of(&v))
        .filter(|m| (10..100).contains(m));
    let major = pgbin::server_major(a).ok().or(own);
    let given = ctx.args.pg_bindir.as_deref();
    let found = match (plain, major) {
        (_, Some(m)) if plain || m >= 18 => {
            pgbin::find(given, "pg_verifybackup", Need::Exact(m), "")
        }
        (true, None) => pgbin::find(given, "pg_verifybackup", Need::Any, ""),
        _ => Err(pgb_common::Error::msg("no stock check of tars before 18")),
    };
    let prog = match found {
        Ok(f) => f.path,
        Err(e) if plain => return json!({"ok": null, "message": e.to_string()}),
        // Before 18 there is no stock check of tars to record.
        Err(_) => return Value::Null,
    };
    let mut cmd = Command::new(&prog);
    if !plain {
        cmd.arg("-n");
    }
    let out = cmd.arg(&dir).stdin(Stdio::null()).output();
    match out {
        Err(e) => json!({
            "ok": null,
            "message": format!("{}: {}", prog.display(), pgb_common::error::io_cause(&e)),
        }),
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stderr);
            let stdout = String::from_utf8_lossy(&o.stdout);
            let first = text
                .lines()
                .find(|l| l.contains("error"))
                .or_else(|| text.lines().next())
                .or_else(|| stdout.lines().next())
                .unwrap_or("")
                .trim();
            json!({
                "ok": o.status.success(),
                "status": o.status.code(),
                "message": first.strip_prefix("pg_verifybackup: ").unwrap_or(first),
            })
        }
    }
}

/// Segments from the manifest's WAL start to its end that pg_wal lacks.
fn missing_wal(ranges: &[WalRangeEntry], present: &BTreeSet<String>, a: &Artifact) -> Vec<String> {
    let seg_size = a.wal.as_ref().map(|w| w.segment_size).unwrap_or(16 << 20);
    let mut problems = Vec::new();
    for r in ranges {
        let last = r.end.saturating_sub(1).max(r.start) / seg_size;
        for segno in r.start / seg_size..=last {
            let name = segment_name_for_segno(r.timeline, segno, seg_size);
            if !present.contains(&name) {
                problems.push(format!(
                    "pg_wal: WAL segment {name} the backup needs is missing"
                ));
            }
        }
    }
    problems
}
