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

#[derive(Debug, Clone, Default)]
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
    /// Parses a manifest after checking its own checksum, stopping at the
    /// first bad entry. Errors are phrased without the file name; the
    /// caller adds it.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, String> {
        let (m, problems) = Manifest::parse_lenient(bytes)?;
        match problems.into_iter().next() {
            Some(p) => Err(p),
            None => Ok(m),
        }
    }

    /// Like [`Manifest::parse`], but a bad file entry or WAL range is left
    /// out and noted in the returned problems instead of ending the parse.
    /// A bad checksum or invalid JSON is still an error.
    pub fn parse_lenient(bytes: &[u8]) -> Result<(Manifest, Vec<String>), String> {
        check_checksum(bytes)?;
        let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
        let mut problems = Vec::new();
        let mut files = BTreeMap::new();
        for f in v["Files"].as_array().into_iter().flatten() {
            let Some(path) = f["Path"].as_str() else {
                problems.push("a file entry without Path".to_string());
                continue;
            };
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
                problems.push("WAL-Ranges with a bad LSN".to_string());
                continue;
            };
            wal_ranges.push(WalRangeEntry {
                timeline: r["Timeline"].as_u64().unwrap_or(0) as u32,
                start,
                end,
            });
        }
        Ok((Manifest { files, wal_ranges }, problems))
    }

    /// Compares one file of the backup (path relative to the data
    /// directory, size, hex SHA256) with the manifest. The problem names
    /// the path; files in [`IGNORED`] may be absent from the manifest.
    pub fn check_file(&self, path: &str, size: u64, sha256: &str) -> Option<String> {
        match self.files.get(path) {
            None if IGNORED.contains(&path) => None,
            None => Some(format!(
                "{path}: present in the backup but not in the manifest"
            )),
            Some(l) if l.size != size => {
                Some(format!("{path}: {size} bytes, manifest says {}", l.size))
            }
            Some(l) if l.sha256.as_deref().is_some_and(|w| w != sha256) => {
                Some(format!("{path}: SHA256 does not match the manifest"))
            }
            Some(_) => None,
        }
    }

    /// The listed files not in `seen`, one problem each.
    pub fn missing<'a>(&'a self, seen: &'a BTreeSet<String>) -> impl Iterator<Item = String> + 'a {
        self.files
            .keys()
            .filter(|p| !seen.contains(*p))
            .map(|p| format!("{p}: in the manifest but missing from the backup"))
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
            if self.files.contains_key(path) {
                seen.insert(path.to_string());
            }
            problems.extend(self.check_file(path, size, sha));
        }
        problems.extend(self.missing(&seen));
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest with a valid checksum around `files` and `ranges`.
    fn manifest(files: &str, ranges: &str) -> Vec<u8> {
        let body = format!(
            "{{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [{files}],\n\"WAL-Ranges\": [{ranges}],\n"
        );
        let sum = crate::digest::hex(&Sha256::digest(body.as_bytes()));
        format!("{body}\"Manifest-Checksum\": \"{sum}\"}}\n").into_bytes()
    }

    const GOOD: &str =
        r#"{ "Path": "PG_VERSION", "Size": 3, "Checksum-Algorithm": "SHA256", "Checksum": "ab" }"#;
    const RANGE: &str = r#"{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" }"#;

    #[test]
    fn lenient_parse_notes_bad_entries_and_keeps_the_rest() {
        let bad_range = r#"{ "Timeline": 1, "Start-LSN": "x", "End-LSN": "0/1" }"#;
        let bytes = manifest(
            &format!(r#"{GOOD}, {{ "Size": 1 }}"#),
            &format!("{bad_range}, {RANGE}"),
        );
        let (m, problems) = Manifest::parse_lenient(&bytes).unwrap();
        assert_eq!(
            problems,
            ["a file entry without Path", "WAL-Ranges with a bad LSN"]
        );
        assert_eq!(m.files.len(), 1);
        assert_eq!(m.wal_ranges.len(), 1);
        assert_eq!(m.wal_ranges[0].start, 0x2000028);
        assert_eq!(
            Manifest::parse(&bytes).unwrap_err(),
            "a file entry without Path"
        );
    }

    #[test]
    fn parse_rejects_an_altered_manifest() {
        let mut bytes = manifest(GOOD, RANGE);
        assert!(Manifest::parse(&bytes).is_ok());
        let i = bytes.iter().position(|&b| b == b'3').unwrap();
        bytes[i] = b'4';
        let e = Manifest::parse_lenient(&bytes).unwrap_err();
        assert!(e.contains("checksum mismatch"), "{e}");
    }

    #[test]
    fn check_file_and_missing() {
        let m = Manifest::parse(&manifest(GOOD, RANGE)).unwrap();
        assert_eq!(m.check_file("PG_VERSION", 3, "ab"), None);
        assert_eq!(m.check_file("recovery.signal", 0, ""), None);
        assert_eq!(
            m.check_file("PG_VERSION", 1, "ab").unwrap(),
            "PG_VERSION: 1 bytes, manifest says 3"
        );
        assert_eq!(
            m.check_file("PG_VERSION", 3, "cd").unwrap(),
            "PG_VERSION: SHA256 does not match the manifest"
        );
        assert_eq!(
            m.check_file("planted", 1, "").unwrap(),
            "planted: present in the backup but not in the manifest"
        );
        let missing: Vec<_> = m.missing(&BTreeSet::new()).collect();
        assert_eq!(
            missing,
            ["PG_VERSION: in the manifest but missing from the backup"]
        );
    }
}
