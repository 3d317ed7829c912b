//! How a WAL file is stored in an archive directory: its four possible
//! names (plain, `.zst`, `.age`, `.zst.age`) and the checksum file
//! `NAME.sha256` that `pgb-wal push` keeps beside every file it archives.
//!
//! The checksum file is what makes WAL checked end to end: zstd frames and
//! age chunks only prove that a stored file decodes, not that it holds the
//! segment PostgreSQL wrote, and a page header check sees nothing of a
//! flipped byte in the middle of a segment. `push` writes `NAME.sha256`,
//! durably, before it publishes the stored file, in the format of
//! `sha256sum`:
//!
//! ```text
//! <sha256 of the file as PostgreSQL wrote it>  NAME
//! <sha256 of the stored, compressed and/or encrypted file>  NAME.zst.age
//! ```
//!
//! with the second line only when the stored file is not the plain one. It
//! is a small object of its own beside the segment, so it works wherever a
//! file can be stored. `get` compares what it streams to PostgreSQL with
//! it, `pgb-check-archive` with what it reads in full, and `push` uses it
//! to recognise an identical re-push of an encrypted file without the key.
//!
//! The second line ties the first to the stored file: a checksum file that
//! names another stored form (left by a push killed between the two
//! renames, or an archive recompressed by hand) still vouches for the
//! plaintext, not for the stored bytes.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::digest::hex;
use crate::error::{IoContext, Result};
use crate::fs::write_atomic;
use sha2::{Digest, Sha256};

/// Suffix of the checksum file of an archived WAL file.
pub const CHECKSUM_SUFFIX: &str = ".sha256";

/// One way a WAL file may be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub path: PathBuf,
    pub file_name: String,
    pub zst: bool,
    pub age: bool,
}

/// The name of `name` stored compressed and/or encrypted.
pub fn stored_name(name: &str, zst: bool, age: bool) -> String {
    format!(
        "{name}{}{}",
        if zst { ".zst" } else { "" },
        if age { crate::crypt::SUFFIX } else { "" }
    )
}

/// Every name `name` may be stored under in `dir`, in the order `get`
/// looks for them.
pub fn forms(dir: &Path, name: &str) -> Vec<Stored> {
    [(false, false), (true, false), (false, true), (true, true)]
        .into_iter()
        .map(|(zst, age)| {
            let file_name = stored_name(name, zst, age);
            Stored {
                path: dir.join(&file_name),
                file_name,
                zst,
                age,
            }
        })
        .collect()
}

/// The first form of `name` present in `dir`. A stat error other than "not
/// found" is an error: an unreadable archive is not an empty one.
pub fn find(dir: &Path, name: &str) -> Result<Option<Stored>> {
    for s in forms(dir, name) {
        match fs::symlink_metadata(&s.path) {
            Ok(_) => return Ok(Some(s)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(crate::Error::io("stat", &s.path, e)),
        }
    }
    Ok(None)
}

pub fn checksum_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}{CHECKSUM_SUFFIX}"))
}

/// What a checksum file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksums {
    /// sha256 of the file as PostgreSQL wrote it.
    pub plain: String,
    /// The stored file's name and sha256 (the name itself and `plain` for
    /// a file stored as it is).
    pub stored_name: String,
    pub stored: String,
}

impl Checksums {
    /// The checksums of `name` stored as it is.
    pub fn plain(name: &str, sha256: String) -> Checksums {
        Checksums {
            plain: sha256.clone(),
            stored_name: name.to_string(),
            stored: sha256,
        }
    }

    /// Compares what was read with what was recorded: the stored file's
    /// sha256 when the checksum file describes that form, and the
    /// plaintext's when it was read (`None`: encrypted, no key). Returns
    /// what differs.
    pub fn mismatch(&self, stored_name: &str, stored: &str, plain: Option<&str>) -> Option<String> {
        let mut why = Vec::new();
        if self.stored_name == stored_name && self.stored != stored {
            why.push(format!(
                "sha256 of {stored_name} is {stored}, recorded {}",
                self.stored
            ));
        }
        // A plain file's one checksum is said once.
        let said = !why.is_empty() && self.plain == self.stored && plain == Some(stored);
        if let Some(p) = plain.filter(|p| *p != self.plain && !said) {
            why.push(format!(
                "sha256 of its content is {p}, recorded {}",
                self.plain
            ));
        }
        (!why.is_empty()).then(|| why.join("; "))
    }
}

/// A checksum file as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// None: a file archived by another tool, or before pgb recorded one.
    Absent,
    /// Present but unreadable or not in the expected form: something
    /// damaged the archive.
    Bad(String),
    Present(Checksums),
}

/// A stored form of a WAL file found in an archive of any kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub file_name: String,
    pub zst: bool,
    pub age: bool,
    pub size: u64,
}

/// The first stored form of `name` in the archive `dest` (a directory, an
/// SSH host or an S3 prefix), in the order `get` looks for them, and
/// whether `NAME.sha256` is there: one listing. An archive that cannot be
/// listed (unreachable, a missing directory) is an error, never "absent".
pub fn find_in(dest: &crate::dest::Destination, name: &str) -> Result<(Option<Found>, bool)> {
    let listed = dest.list("", name)?;
    let sums = format!("{name}{CHECKSUM_SUFFIX}");
    let has_sums = listed.iter().any(|l| l.name == sums);
    for (zst, age) in [(false, false), (true, false), (false, true), (true, true)] {
        let file_name = stored_name(name, zst, age);
        if let Some(l) = listed.iter().find(|l| l.name == file_name) {
            return Ok((
                Some(Found {
                    file_name,
                    zst,
                    age,
                    size: l.size,
                }),
                has_sums,
            ));
        }
    }
    Ok((None, has_sums))
}

/// Reads `NAME.sha256` from an archive of any kind, as [`load_checksums`].
pub fn load_checksums_in(dest: &crate::dest::Destination, name: &str) -> Result<Recorded> {
    let rel = format!("{name}{CHECKSUM_SUFFIX}");
    Ok(parse_recorded(dest.read_small(&rel, 4096)?, name))
}

/// What the bytes of a checksum file (`None`: absent) say.
pub fn parse_recorded(bytes: Option<Vec<u8>>, name: &str) -> Recorded {
    let Some(b) = bytes else {
        return Recorded::Absent;
    };
    let Ok(text) = String::from_utf8(b) else {
        return Recorded::Bad("not UTF-8".into());
    };
    match parse_checksums(&text, name) {
        Some(c) => Recorded::Present(c),
        None => Recorded::Bad(format!("not a checksum file of {name}")),
    }
}

/// The text of `NAME.sha256`.
pub fn checksums_text(name: &str, c: &Checksums) -> String {
    let mut text = format!("{}  {name}\n", c.plain);
    if c.stored_name != name {
        text.push_str(&format!("{}  {}\n", c.stored, c.stored_name));
    }
    text
}

/// Reads `NAME.sha256`; `None` when absent or not in the expected form.
pub fn read_checksums(dir: &Path, name: &str) -> Result<Option<Checksums>> {
    Ok(match load_checksums(dir, name)? {
        Recorded::Present(c) => Some(c),
        Recorded::Absent | Recorded::Bad(_) => None,
    })
}

/// Reads `NAME.sha256`, telling a missing one from a damaged one. An I/O
/// error other than "not found" is an error.
pub fn load_checksums(dir: &Path, name: &str) -> Result<Recorded> {
    let p = checksum_path(dir, name);
    let text = match fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Recorded::Absent),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            return Ok(Recorded::Bad("not UTF-8".into()))
        }
        Err(e) => return Err(crate::Error::io("read", &p, e)),
    };
    Ok(match parse_checksums(&text, name) {
        Some(c) => Recorded::Present(c),
        None => Recorded::Bad(format!("not a checksum file of {name}")),
    })
}

fn parse_checksums(text: &str, name: &str) -> Option<Checksums> {
    let mut plain = None;
    let mut stored = None;
    for line in text.lines() {
        let (sum, file) = line.split_once("  ")?;
        if sum.len() != 64 || !sum.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        if file == name && plain.is_none() {
            plain = Some(sum.to_ascii_lowercase());
        } else if file.starts_with(name) && file != name && stored.is_none() {
            stored = Some((file.to_string(), sum.to_ascii_lowercase()));
        } else {
            return None;
        }
    }
    let plain = plain?;
    let (stored_name, stored) = stored.unwrap_or_else(|| (name.to_string(), plain.clone()));
    Some(Checksums {
        plain,
        stored_name,
        stored,
    })
}

/// Writes `NAME.sha256` durably (replacing a stale one).
pub fn write_checksums(dir: &Path, name: &str, c: &Checksums) -> Result<()> {
    let text = checksums_text(name, c);
    write_atomic(&checksum_path(dir, name), text.as_bytes(), true)
}

/// sha256 of a file's bytes.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).ctx("open", path)?;
    let mut h = HashReader::new(&mut f);
    io::copy(&mut h, &mut io::sink()).ctx("read", path)?;
    Ok(h.hex())
}

/// A reader that hashes (sha256) what passes through it, when enabled.
pub struct HashReader<R> {
    inner: R,
    hasher: Option<Sha256>,
}

impl<R: Read> HashReader<R> {
    pub fn new(inner: R) -> Self {
        Self::with(inner, true)
    }

    pub fn with(inner: R, enabled: bool) -> Self {
        HashReader {
            inner,
            hasher: enabled.then(Sha256::new),
        }
    }

    /// The hex sha256 (of nothing when disabled).
    pub fn hex(self) -> String {
        hex(&self.hasher.unwrap_or_default().finalize())
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// A writer that hashes (sha256) what it passes on, when enabled.
pub struct HashWriter<W> {
    inner: W,
    hasher: Option<Sha256>,
}

impl<W: io::Write> HashWriter<W> {
    pub fn with(inner: W, enabled: bool) -> Self {
        HashWriter {
            inner,
            hasher: enabled.then(Sha256::new),
        }
    }

    pub fn hex(self) -> String {
        hex(&self.hasher.unwrap_or_default().finalize())
    }
}

impl<W: io::Write> io::Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_checksum_file() {
        assert_eq!(stored_name("A", true, true), "A.zst.age");
        assert_eq!(stored_name("A", false, true), "A.age");
        let d = tempfile::tempdir().unwrap();
        let c = Checksums {
            plain: "a".repeat(64),
            stored_name: "000000010000000000000003.zst.age".into(),
            stored: "b".repeat(64),
        };
        write_checksums(d.path(), "000000010000000000000003", &c).unwrap();
        assert_eq!(
            read_checksums(d.path(), "000000010000000000000003").unwrap(),
            Some(c)
        );
        assert_eq!(parse_checksums("junk", "X"), None);
        // A plain file: one line, which vouches for the stored bytes too.
        let n = "000000010000000000000005";
        let p = Checksums::plain(n, "c".repeat(64));
        write_checksums(d.path(), n, &p).unwrap();
        assert_eq!(
            fs::read_to_string(checksum_path(d.path(), n)).unwrap(),
            format!("{}  {n}\n", "c".repeat(64))
        );
        assert_eq!(
            load_checksums(d.path(), n).unwrap(),
            Recorded::Present(p.clone())
        );
        assert_eq!(p.mismatch(n, &"c".repeat(64), None), None);
        assert!(p
            .mismatch(n, &"d".repeat(64), None)
            .unwrap()
            .contains("recorded"));
        // Another form than recorded: only the content is compared.
        assert_eq!(
            p.mismatch(&format!("{n}.zst"), &"d".repeat(64), Some(&"c".repeat(64))),
            None
        );
        assert!(p
            .mismatch(&format!("{n}.zst"), &"d".repeat(64), Some(&"d".repeat(64)))
            .is_some());
        fs::write(checksum_path(d.path(), n), "garbage\n").unwrap();
        assert!(matches!(
            load_checksums(d.path(), n).unwrap(),
            Recorded::Bad(_)
        ));
        let other = format!("{}  000000010000000000000006\n", "c".repeat(64));
        assert_eq!(parse_checksums(&other, n), None, "another file's");
        assert_eq!(
            read_checksums(d.path(), "000000010000000000000004").unwrap(),
            None
        );
    }
}
