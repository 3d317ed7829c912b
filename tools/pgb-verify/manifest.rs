//! A physical backup's backup_manifest verified natively, inside the tar or
//! tar.zst files pgb-snapshot stored, without extracting anything to disk:
//! the manifest's own checksum, every listed file present with its size and
//! SHA256, nothing unexpected, the system identifier in pg_control, and the
//! WAL segments the backup needs present in pg_wal.tar.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Read;
use std::path::Path;

use pgb_common::record::{Artifact, Kind};
use pgb_common::wal::{parse_lsn, segment_name_for_segno};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::run::Verdict;

/// Files pg_verifybackup does not expect in the manifest either.
const IGNORED: [&str; 4] = [
    "backup_manifest",
    "postgresql.auto.conf",
    "recovery.signal",
    "standby.signal",
];

struct Listed {
    size: u64,
    sha256: Option<String>,
}

pub fn check(a: &Artifact) -> Verdict {
    if a.kind != Kind::Physical {
        return Verdict::skip();
    }
    let dir = a.location();
    let manifest_path = dir.join("backup_manifest");
    let bytes = match std::fs::read(&manifest_path) {
        Ok(b) => b,
        Err(e) => {
            return Verdict::fail(format!(
                "{}: {}",
                manifest_path.display(),
                pgb_common::error::io_cause(&e)
            ))
        }
    };
    let mut problems = Vec::new();
    if let Err(p) = manifest_checksum(&bytes) {
        problems.push(format!("{}: {p}", manifest_path.display()));
        return Verdict::new(problems);
    }
    let manifest: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return Verdict::fail(format!("{}: not valid JSON: {e}", manifest_path.display()))
        }
    };
    let mut listed: BTreeMap<String, Listed> = BTreeMap::new();
    for f in manifest["Files"].as_array().into_iter().flatten() {
        let Some(path) = f["Path"].as_str() else {
            problems.push(format!(
                "{}: a file entry without Path",
                manifest_path.display()
            ));
            continue;
        };
        let sha256 = (f["Checksum-Algorithm"].as_str() == Some("SHA256"))
            .then(|| f["Checksum"].as_str().map(str::to_string))
            .flatten();
        listed.insert(
            path.to_string(),
            Listed {
                size: f["Size"].as_u64().unwrap_or(u64::MAX),
                sha256,
            },
        );
    }

    let mut seen = BTreeSet::new();
    let mut wal_files = BTreeSet::new();
    let mut sysid_in_control = None;
    let mut members = 0u64;
    for f in &a.files {
        let name = f.name.as_str();
        if name.ends_with(".tar.gz") {
            problems.push(format!(
                "{name}: gzip tars are not verified natively yet; use --compress zstd"
            ));
            continue;
        }
        let Some(stem) = name
            .strip_suffix(".tar.zst")
            .or_else(|| name.strip_suffix(".tar"))
        else {
            continue;
        };
        let prefix = match stem {
            "base" => String::new(),
            "pg_wal" => "pg_wal/".to_string(),
            oid if oid.chars().all(|c| c.is_ascii_digit()) => format!("pg_tblspc/{oid}/"),
            _ => {
                problems.push(format!("{name}: not a tar pg_basebackup writes"));
                continue;
            }
        };
        let path = dir.join(name);
        let result = read_tar(&path, |member, data| {
            members += 1;
            let full = format!("{prefix}{member}");
            if full.starts_with("pg_wal/") {
                if let Some(seg) = full.strip_prefix("pg_wal/") {
                    wal_files.insert(seg.to_string());
                }
                return Ok(());
            }
            let mut h = Sha256::new();
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
                sysid_in_control = Some(u64::from_le_bytes(head).to_string());
            }
            match listed.get(&full) {
                None if IGNORED.contains(&full.as_str()) => {}
                None => problems.push(format!(
                    "{name}: {full}: present in the backup but not in the manifest"
                )),
                Some(l) => {
                    seen.insert(full.clone());
                    if l.size != size {
                        problems.push(format!(
                            "{name}: {full}: {size} bytes, manifest says {}",
                            l.size
                        ));
                    } else if let Some(want) = &l.sha256 {
                        let got = pgb_common::digest::hex(&h.finalize());
                        if &got != want {
                            problems.push(format!(
                                "{name}: {full}: SHA256 does not match the manifest"
                            ));
                        }
                    }
                }
            }
            Ok(())
        });
        if let Err(e) = result {
            problems.push(format!("{}: {e}", path.display()));
        }
    }
    for (p, _) in listed.iter().filter(|(p, _)| !seen.contains(*p)) {
        problems.push(format!("{p}: in the manifest but missing from the backup"));
    }
    match (&sysid_in_control, &a.system_identifier) {
        (Some(got), Some(want)) if got != want => problems.push(format!(
            "global/pg_control: system identifier {got}, the record says {want}"
        )),
        (None, _) => problems.push("global/pg_control: not found in the base tar".into()),
        _ => {}
    }
    problems.extend(missing_wal(&manifest, &wal_files, a));
    Verdict::new(problems)
        .with("files_checked", (seen.len() as u64).into())
        .with("tar_members", members.into())
}

/// The manifest's own checksum: SHA256 of everything before the line
/// holding "Manifest-Checksum".
fn manifest_checksum(bytes: &[u8]) -> Result<(), String> {
    let key = b"\"Manifest-Checksum\"";
    let pos = bytes
        .windows(key.len())
        .rposition(|w| w == key)
        .ok_or("no Manifest-Checksum")?;
    let line_start = bytes[..pos]
        .iter()
        .rposition(|&b| b == b'\n')
        .map(|i| i + 1)
        .unwrap_or(0);
    let rest = std::str::from_utf8(&bytes[pos + key.len()..]).map_err(|_| "not UTF-8")?;
    let want: String = rest
        .trim_start_matches([':', ' '])
        .trim_start_matches('"')
        .chars()
        .take_while(|c| c.is_ascii_hexdigit())
        .collect();
    let got = pgb_common::digest::hex(&Sha256::digest(&bytes[..line_start]));
    if got == want.to_ascii_lowercase() {
        Ok(())
    } else {
        Err("manifest checksum mismatch: the manifest was altered".into())
    }
}

/// Segments from the manifest's WAL start to its end that pg_wal.tar lacks.
fn missing_wal(manifest: &Value, present: &BTreeSet<String>, a: &Artifact) -> Vec<String> {
    let seg_size = a.wal.as_ref().map(|w| w.segment_size).unwrap_or(16 << 20);
    let mut problems = Vec::new();
    for r in manifest["WAL-Ranges"].as_array().into_iter().flatten() {
        let tli = r["Timeline"].as_u64().unwrap_or(0) as u32;
        let (Some(s), Some(e)) = (
            r["Start-LSN"].as_str().and_then(parse_lsn),
            r["End-LSN"].as_str().and_then(parse_lsn),
        ) else {
            problems.push("backup_manifest: WAL-Ranges with a bad LSN".into());
            continue;
        };
        let last = e.saturating_sub(1).max(s) / seg_size;
        for segno in s / seg_size..=last {
            let name = segment_name_for_segno(tli, segno, seg_size);
            if !present.contains(&name) {
                problems.push(format!(
                    "pg_wal.tar: WAL segment {name} the backup needs is missing"
                ));
            }
        }
    }
    problems
}

/// Calls `each` with every regular file of a tar (plain or zstd), by path.
fn read_tar(
    path: &Path,
    mut each: impl FnMut(&str, &mut dyn Read) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let f = File::open(path)?;
    let r: Box<dyn Read> = if path.to_string_lossy().ends_with(".zst") {
        Box::new(zstd::stream::read::Decoder::new(f)?)
    } else {
        Box::new(std::io::BufReader::new(f))
    };
    let mut archive = tar::Archive::new(r);
    for entry in archive.entries()? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path()?.to_string_lossy().into_owned();
        each(&name, &mut entry)?;
    }
    Ok(())
}
