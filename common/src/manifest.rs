//! PostgreSQL's `backup_manifest`: its own checksum, the files it lists
//! with sizes and checksums (every algorithm PostgreSQL writes: CRC32C,
//! SHA224, SHA256, SHA384, SHA512 or none), its WAL ranges; comparing what a
//! restore wrote with it. Shared by pgb-verify (inside tars and in plain
//! directories) and pgb-restore (on the way to disk).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};

use crate::wal::parse_lsn;

/// Files pg_verifybackup does not expect in the manifest either.
pub const IGNORED: [&str; 4] = [
    "backup_manifest",
    "postgresql.auto.conf",
    "recovery.signal",
    "standby.signal",
];

/// A file checksum algorithm of backup_manifest (pg_checksum_type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    None,
    Crc32c,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl Algorithm {
    /// The manifest's `Checksum-Algorithm` value (pg_checksum_parse_type:
    /// case-insensitive).
    pub fn parse(s: &str) -> Option<Algorithm> {
        Some(match s.to_ascii_uppercase().as_str() {
            "NONE" => Algorithm::None,
            "CRC32C" => Algorithm::Crc32c,
            "SHA224" => Algorithm::Sha224,
            "SHA256" => Algorithm::Sha256,
            "SHA384" => Algorithm::Sha384,
            "SHA512" => Algorithm::Sha512,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::None => "NONE",
            Algorithm::Crc32c => "CRC32C",
            Algorithm::Sha224 => "SHA224",
            Algorithm::Sha256 => "SHA256",
            Algorithm::Sha384 => "SHA384",
            Algorithm::Sha512 => "SHA512",
        }
    }

    /// Length of the checksum in bytes (its hex form is twice as long).
    pub fn digest_len(self) -> usize {
        match self {
            Algorithm::None => 0,
            Algorithm::Crc32c => 4,
            Algorithm::Sha224 => 28,
            Algorithm::Sha256 => 32,
            Algorithm::Sha384 => 48,
            Algorithm::Sha512 => 64,
        }
    }

    pub fn hasher(self) -> FileHasher {
        match self {
            Algorithm::None => FileHasher::None,
            Algorithm::Crc32c => FileHasher::Crc32c(0),
            Algorithm::Sha224 => FileHasher::Sha224(Sha224::new()),
            Algorithm::Sha256 => FileHasher::Sha256(Sha256::new()),
            Algorithm::Sha384 => FileHasher::Sha384(Sha384::new()),
            Algorithm::Sha512 => FileHasher::Sha512(Sha512::new()),
        }
    }
}

/// A file's checksum in the manifest's algorithm, computed as it streams.
pub enum FileHasher {
    None,
    Crc32c(u32),
    Sha224(Sha224),
    Sha256(Sha256),
    Sha384(Sha384),
    Sha512(Sha512),
}

impl FileHasher {
    pub fn update(&mut self, b: &[u8]) {
        match self {
            FileHasher::None => {}
            FileHasher::Crc32c(c) => *c = crc32c::crc32c_append(*c, b),
            FileHasher::Sha224(h) => h.update(b),
            FileHasher::Sha256(h) => h.update(b),
            FileHasher::Sha384(h) => h.update(b),
            FileHasher::Sha512(h) => h.update(b),
        }
    }

    /// The hex form the manifest holds. pg_checksum_final copies the
    /// CRC32C's uint32 as it lies in memory: little-endian bytes.
    pub fn finish(self) -> String {
        use crate::digest::hex;
        match self {
            FileHasher::None => String::new(),
            FileHasher::Crc32c(c) => hex(&c.to_le_bytes()),
            FileHasher::Sha224(h) => hex(&h.finalize()),
            FileHasher::Sha256(h) => hex(&h.finalize()),
            FileHasher::Sha384(h) => hex(&h.finalize()),
            FileHasher::Sha512(h) => hex(&h.finalize()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Listed {
    pub size: u64,
    pub algorithm: Algorithm,
    /// Lower-case hex checksum in `algorithm` (empty for NONE).
    pub checksum: String,
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

/// The manifest's own checksum, as pg_verifybackup checks it
/// (verify_manifest_checksum in parse_manifest.c): the file must end with a
/// newline, and the SHA256 of everything up to and including the
/// second-to-last newline must equal `Manifest-Checksum`. The checksum line
/// is therefore the last line: anything after it, even one more newline,
/// is a mismatch.
pub fn check_checksum(bytes: &[u8], v: &Value) -> Result<(), String> {
    if bytes.last() != Some(&b'\n') {
        return Err("last line not newline-terminated".into());
    }
    let penultimate = bytes[..bytes.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .filter(|&i| i > 0)
        .ok_or("expected at least 2 lines")?;
    let want = v["Manifest-Checksum"]
        .as_str()
        .ok_or("no Manifest-Checksum")?;
    if want.len() != 64 || !want.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("invalid manifest checksum".into());
    }
    let got = crate::digest::hex(&Sha256::digest(&bytes[..=penultimate]));
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
        let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
        check_checksum(bytes, &v)?;
        let mut problems = Vec::new();
        let mut files = BTreeMap::new();
        for f in v["Files"].as_array().into_iter().flatten() {
            let Some(path) = f["Path"].as_str() else {
                problems.push("a file entry without Path".to_string());
                continue;
            };
            // As pg_verifybackup: no algorithm means NONE; an algorithm it
            // does not know, or a checksum of the wrong length, is an error,
            // never a file checked by size alone.
            let algorithm = match f.get("Checksum-Algorithm") {
                None => Algorithm::None,
                Some(a) => match a.as_str().and_then(Algorithm::parse) {
                    Some(a) => a,
                    None => {
                        problems.push(format!("{path}: unrecognized checksum algorithm {a}"));
                        continue;
                    }
                },
            };
            let checksum = f["Checksum"].as_str().unwrap_or("").to_ascii_lowercase();
            if checksum.len() != 2 * algorithm.digest_len()
                || !checksum.bytes().all(|b| b.is_ascii_hexdigit())
            {
                problems.push(format!("{path}: invalid checksum for file"));
                continue;
            }
            files.insert(
                path.to_string(),
                Listed {
                    size: f["Size"].as_u64().unwrap_or(u64::MAX),
                    algorithm,
                    checksum,
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

    /// A hasher for `path` in the algorithm its entry names (NONE for a
    /// file the manifest does not list).
    pub fn hasher_for(&self, path: &str) -> FileHasher {
        self.files
            .get(path)
            .map_or(Algorithm::None, |l| l.algorithm)
            .hasher()
    }

    /// Compares one file of the backup (path relative to the data
    /// directory, size, hex checksum from [`Manifest::hasher_for`]) with
    /// the manifest. The problem names the path; files in [`IGNORED`] may
    /// be absent from the manifest.
    pub fn check_file(&self, path: &str, size: u64, checksum: &str) -> Option<String> {
        match self.files.get(path) {
            None if IGNORED.contains(&path) => None,
            None => Some(format!(
                "{path}: present in the backup but not in the manifest"
            )),
            Some(l) if l.size != size => {
                Some(format!("{path}: {size} bytes, manifest says {}", l.size))
            }
            Some(l) if l.checksum != checksum => Some(format!(
                "{path}: {} does not match the manifest",
                l.algorithm.name()
            )),
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
    /// `pg_wal/` files are not listed in manifests and are skipped. Entries
    /// in another algorithm than SHA256 are compared by size here (the
    /// restore hashes SHA256 only; pgb-snapshot's manifests are SHA256).
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
            let sum = match self.files.get(path) {
                Some(l) if l.algorithm != Algorithm::Sha256 => l.checksum.as_str(),
                _ => sha,
            };
            problems.extend(self.check_file(path, size, sum));
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

    /// SHA256 of "15\n".
    const SUM: &str = "238903180cc104ec2c5d8b3f20c5bc61b389ec0a967df8cc208cdc7cd454174f";

    fn good() -> String {
        format!(
            r#"{{ "Path": "PG_VERSION", "Size": 3, "Checksum-Algorithm": "SHA256", "Checksum": "{}" }}"#,
            hash(Algorithm::Sha256, b"15\n")
        )
    }
    const RANGE: &str = r#"{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" }"#;

    fn hash(a: Algorithm, b: &[u8]) -> String {
        let mut h = a.hasher();
        h.update(b);
        h.finish()
    }

    #[test]
    fn lenient_parse_notes_bad_entries_and_keeps_the_rest() {
        let bad_range = r#"{ "Timeline": 1, "Start-LSN": "x", "End-LSN": "0/1" }"#;
        let bytes = manifest(
            &format!(r#"{}, {{ "Size": 1 }}"#, good()),
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
        let mut bytes = manifest(&good(), RANGE);
        assert!(Manifest::parse(&bytes).is_ok());
        let i = bytes.iter().position(|&b| b == b'3').unwrap();
        bytes[i] = b'4';
        let e = Manifest::parse_lenient(&bytes).unwrap_err();
        assert!(e.contains("checksum mismatch"), "{e}");
    }

    #[test]
    fn check_file_and_missing() {
        let m = Manifest::parse(&manifest(&good(), RANGE)).unwrap();
        let sum = hash(Algorithm::Sha256, b"15\n");
        assert_eq!(sum, SUM);
        assert_eq!(m.check_file("PG_VERSION", 3, &sum), None);
        assert_eq!(m.check_file("recovery.signal", 0, ""), None);
        assert_eq!(
            m.check_file("PG_VERSION", 1, &sum).unwrap(),
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

    #[test]
    fn crc32c_matches_the_known_vector_in_postgresqls_byte_order() {
        // The CRC-32C check value (RFC 3720, iSCSI): 0xE3069283 for
        // "123456789"; the manifest holds its bytes as they lie in memory.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(hash(Algorithm::Crc32c, b"123456789"), "839206e3");
        // Fed in pieces, the same.
        let mut h = Algorithm::Crc32c.hasher();
        h.update(b"1234");
        h.update(b"56789");
        assert_eq!(h.finish(), "839206e3");
        assert_eq!(hash(Algorithm::Crc32c, b""), "00000000");
    }

    #[test]
    fn every_algorithm_postgresql_writes_is_checked() {
        for a in [
            Algorithm::Crc32c,
            Algorithm::Sha224,
            Algorithm::Sha256,
            Algorithm::Sha384,
            Algorithm::Sha512,
            Algorithm::None,
        ] {
            let sum = hash(a, b"15\n");
            assert_eq!(sum.len(), 2 * a.digest_len(), "{a:?}");
            let alg = if a == Algorithm::None {
                String::new()
            } else {
                format!(
                    r#", "Checksum-Algorithm": "{}", "Checksum": "{}""#,
                    a.name(),
                    sum.to_uppercase()
                )
            };
            let entry = format!(r#"{{ "Path": "PG_VERSION", "Size": 3{alg} }}"#);
            let m = Manifest::parse(&manifest(&entry, RANGE)).unwrap();
            let mut h = m.hasher_for("PG_VERSION");
            h.update(b"15\n");
            assert_eq!(m.check_file("PG_VERSION", 3, &h.finish()), None, "{a:?}");
            let mut h = m.hasher_for("PG_VERSION");
            h.update(b"16\n");
            let got = m.check_file("PG_VERSION", 3, &h.finish());
            if a == Algorithm::None {
                assert_eq!(got, None, "NONE: size only, as PostgreSQL");
            } else {
                assert_eq!(
                    got.unwrap(),
                    format!("PG_VERSION: {} does not match the manifest", a.name())
                );
            }
        }
        let bad = manifest(
            r#"{ "Path": "x", "Size": 1, "Checksum-Algorithm": "MD5", "Checksum": "00" },
               { "Path": "y", "Size": 1, "Checksum-Algorithm": "CRC32C", "Checksum": "0" }"#,
            RANGE,
        );
        let (m, problems) = Manifest::parse_lenient(&bad).unwrap();
        assert_eq!(
            problems,
            [
                "x: unrecognized checksum algorithm \"MD5\"",
                "y: invalid checksum for file"
            ]
        );
        assert!(m.files.is_empty(), "never checked by size alone");
    }

    /// pg_verifybackup's 003_corruption.pl (bad_manifest) and
    /// 005_bad_manifest.pl: the checksum line is the last line.
    #[test]
    fn anything_after_the_checksum_line_is_a_mismatch() {
        let bytes = manifest(&good(), RANGE);
        for (tail, want) in [
            (&b"\n"[..], "checksum mismatch"),
            (&b"\n\n"[..], "checksum mismatch"),
            (&b" \n"[..], "checksum mismatch"),
        ] {
            let mut b = bytes.clone();
            b.extend_from_slice(tail);
            let e = Manifest::parse(&b).unwrap_err();
            assert!(e.contains(want), "{tail:?}: {e}");
        }
        let mut b = bytes.clone();
        b.extend_from_slice(b"garbage\n");
        assert!(Manifest::parse(&b).is_err());
        let mut b = bytes.clone();
        b.pop();
        assert_eq!(
            Manifest::parse(&b).unwrap_err(),
            "last line not newline-terminated"
        );
        let one_line = b"{\"PostgreSQL-Backup-Manifest-Version\": 1, \"Files\": [], \"Manifest-Checksum\": null}\n";
        assert_eq!(
            Manifest::parse(one_line).unwrap_err(),
            "expected at least 2 lines"
        );
    }
}
