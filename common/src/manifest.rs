//! PostgreSQL's `backup_manifest`: its own checksum, the files it lists
//! with sizes and SHA256, its WAL ranges; comparing what a restore wrote
//! with it. Shared by pgb-verify (inside tars) and pgb-restore (on the way
//! to disk).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::wal::parse_lsn;

/// Files pg_verifybackup does not expect in the manifest either.
pub const IGNORED: [&str; 4] = [
    "backup_manifest",
    "postgresql.auto.conf",
    "recovery.signal",
    "standby.signal",
];

#[derive(Debug, Clone)]
pub struct Listed {
    pub size: u64,
    /// Hex SHA256 when the manifest was made with SHA256 checksums.
    pub sha256: Option<String>,
}

#[derive(Debug, Clone)]
pub struct WalRangeEntry {
    pub timeline: u32,
    pub start: u64,
    pub end: u64,
}

#[derive(Debug, Clone)]
pub struct Manifest {
    pub files: BTreeMap<String, Listed>,
    pub wal_ranges: Vec<WalRangeEntry>,
}

/// The manifest's own checksum: SHA256 of everything before the line
/// holding "Manifest-Checksum".
pub fn check_checksum(bytes: &[u8]) -> Result<(), String> {
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
    let got = crate::digest::hex(&Sha256::digest(&bytes[..line_start]));
    if got == want.to_ascii_lowercase() {
        Ok(())
    } else {
        Err("manifest checksum mismatch: the manifest was altered".into())
    }
}

impl Manifest {
    /// Parses a manifest after checking its own checksum. Errors are phrased
    /// without the file name; the caller adds it.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, String> {
        check_checksum(bytes)?;
        let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
        let mut files = BTreeMap::new();
        for f in v["Files"].as_array().into_iter().flatten() {
            let path = f["Path"].as_str().ok_or("a file entry without Path")?;
            let sha256 = (f["Checksum-Algorithm"].as_str() == Some("SHA256"))
                .then(|| f["Checksum"].as_str().map(str::to_string))
                .flatten();
            files.insert(
                path.to_string(),
                Listed {
                    size: f["Size"].as_u64().unwrap_or(u64::MAX),
                    sha256,
                },
            );
        }
        let mut wal_ranges = Vec::new();
        for r in v["WAL-Ranges"].as_array().into_iter().flatten() {
            let (Some(start), Some(end)) = (
                r["Start-LSN"].as_str().and_then(parse_lsn),
                r["End-LSN"].as_str().and_then(parse_lsn),
            ) else {
                return Err("WAL-Ranges with a bad LSN".into());
            };
            wal_ranges.push(WalRangeEntry {
                timeline: r["Timeline"].as_u64().unwrap_or(0) as u32,
                start,
                end,
            });
        }
        Ok(Manifest { files, wal_ranges })
    }

    /// Compares the files a restore wrote (path relative to the data
    /// directory, size, hex SHA256) with the manifest; returns the problems.
    /// `pg_wal/` files are not listed in manifests and are skipped.
    pub fn compare<'a>(
        &self,
        written: impl IntoIterator<Item = (&'a str, u64, &'a str)>,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        let mut seen = BTreeSet::new();
        for (path, size, sha) in written {
            if path.starts_with("pg_wal/") {
                continue;
            }
            match self.files.get(path) {
                None if IGNORED.contains(&path) => {}
                None => problems.push(format!(
                    "{path}: present in the backup but not in the manifest"
                )),
                Some(l) => {
                    seen.insert(path.to_string());
                    if l.size != size {
                        problems.push(format!("{path}: {size} bytes, manifest says {}", l.size));
                    } else if l.sha256.as_deref().is_some_and(|w| w != sha) {
                        problems.push(format!("{path}: SHA256 does not match the manifest"));
                    }
                }
            }
        }
        for p in self.files.keys().filter(|p| !seen.contains(*p)) {
            problems.push(format!("{p}: in the manifest but missing from the backup"));
        }
        problems
    }
}
