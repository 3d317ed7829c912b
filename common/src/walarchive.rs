//! How a WAL file is stored in an archive directory: its four possible
//! names (plain, `.zst`, `.age`, `.zst.age`) and the checksum file kept
//! beside an encrypted one.
//!
//! An encrypted file cannot be compared with a re-pushed segment without
//! the private key, which the database server should not hold. So `push`
//! writes `NAME.sha256` before it publishes `NAME[.zst].age`, in the format
//! of `sha256sum`:
//!
//! ```text
//! <sha256 of the segment as PostgreSQL wrote it>  NAME
//! <sha256 of the stored, encrypted file>  NAME.zst.age
//! ```
//!
//! The second line ties the first to the stored file: a checksum file that
//! does not describe the file beside it (left by a push killed between the
//! two renames, or edited) is not trusted.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::digest::hex;
use crate::error::{IoContext, Result};
use crate::fs::write_atomic;
use sha2::{Digest, Sha256};

/// Suffix of the checksum file of an encrypted WAL file.
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
    /// sha256 of the plaintext segment.
    pub plain: String,
    /// The stored file's name and sha256.
    pub stored_name: String,
    pub stored: String,
}

/// Reads `NAME.sha256`; `None` when absent or not in the expected form.
pub fn read_checksums(dir: &Path, name: &str) -> Result<Option<Checksums>> {
    let p = checksum_path(dir, name);
    let text = match fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => return Ok(None),
        Err(e) => return Err(crate::Error::io("read", &p, e)),
    };
    Ok(parse_checksums(&text, name))
}

fn parse_checksums(text: &str, name: &str) -> Option<Checksums> {
    let mut plain = None;
    let mut stored = None;
    for line in text.lines() {
        let (sum, file) = line.split_once("  ")?;
        if sum.len() != 64 || !sum.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        if file == name {
            plain = Some(sum.to_ascii_lowercase());
        } else if file.starts_with(name) {
            stored = Some((file.to_string(), sum.to_ascii_lowercase()));
        }
    }
    let (stored_name, stored) = stored?;
    Some(Checksums {
        plain: plain?,
        stored_name,
        stored,
    })
}

/// Writes `NAME.sha256` durably (replacing a stale one).
pub fn write_checksums(dir: &Path, name: &str, c: &Checksums) -> Result<()> {
    let text = format!("{}  {name}\n{}  {}\n", c.plain, c.stored, c.stored_name);
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
        assert_eq!(
            read_checksums(d.path(), "000000010000000000000004").unwrap(),
            None
        );
    }
}
