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
//! # blake3 <blake3 of the file as PostgreSQL wrote it>  NAME
//! # blake3 <blake3 of the stored file>  NAME.zst.age
//! ```
//!
//! with the lines of the stored file only when it is not the plain one.
//! The blake3 lines are comments to `sha256sum -c` (which skips lines
//! starting with `#`); `sed -n 's/^# blake3 //p' NAME.sha256 | b3sum -c`
//! checks them. `get` compares blake3 alone when it is recorded (a third
//! of sha256's cost), sha256 in a checksum file of an older pgb-wal. It
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

/// Which hashes to compute of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Algos {
    pub sha256: bool,
    pub blake3: bool,
}

impl Algos {
    pub const NONE: Algos = Algos {
        sha256: false,
        blake3: false,
    };
    pub const BOTH: Algos = Algos {
        sha256: true,
        blake3: true,
    };
    pub const SHA256: Algos = Algos {
        sha256: true,
        blake3: false,
    };
    pub const BLAKE3: Algos = Algos {
        sha256: false,
        blake3: true,
    };

    pub fn any(self) -> bool {
        self.sha256 || self.blake3
    }
}

/// Hex digests computed of a stream, those asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hashes {
    pub sha256: Option<String>,
    pub blake3: Option<String>,
}

impl From<&crate::Digests> for Hashes {
    fn from(d: &crate::Digests) -> Hashes {
        Hashes {
            sha256: Some(d.sha256.clone()).filter(|s| !s.is_empty()),
            blake3: Some(d.blake3.clone()).filter(|s| !s.is_empty()),
        }
    }
}

/// The hashers of [`Algos`], fed by whatever passes through.
pub struct MultiHasher {
    sha256: Option<Sha256>,
    blake3: Option<Box<blake3::Hasher>>,
}

impl MultiHasher {
    pub fn new(algos: Algos) -> MultiHasher {
        MultiHasher {
            sha256: algos.sha256.then(Sha256::new),
            blake3: algos.blake3.then(|| Box::new(blake3::Hasher::new())),
        }
    }

    pub fn update(&mut self, buf: &[u8]) {
        if let Some(h) = &mut self.sha256 {
            h.update(buf);
        }
        if let Some(h) = &mut self.blake3 {
            h.update(buf);
        }
    }

    pub fn finish(self) -> Hashes {
        Hashes {
            sha256: self.sha256.map(|h| hex(&h.finalize())),
            blake3: self.blake3.map(|h| h.finalize().to_hex().to_string()),
        }
    }
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
    /// blake3 of the same two, when recorded (both or neither; a checksum
    /// file of an older pgb-wal has none).
    pub plain_blake3: Option<String>,
    pub stored_blake3: Option<String>,
}

impl Checksums {
    /// The checksums of `name` stored as it is, from its hashes (sha256
    /// and blake3: `push` computes both).
    pub fn plain(name: &str, h: &Hashes) -> Checksums {
        Checksums::encoded(name, h, h)
    }

    /// The checksums of a file stored as `stored_name` (the name itself:
    /// stored as it is, and then `plain` and `stored` are the same).
    pub fn encoded(stored_name: &str, plain: &Hashes, stored: &Hashes) -> Checksums {
        let sha = |h: &Hashes| {
            h.sha256
                .clone()
                .expect("sha256 computed for the checksum file")
        };
        let (plain_blake3, stored_blake3) = match (&plain.blake3, &stored.blake3) {
            (Some(p), Some(s)) => (Some(p.clone()), Some(s.clone())),
            _ => (None, None),
        };
        Checksums {
            plain: sha(plain),
            stored_name: stored_name.to_string(),
            stored: sha(stored),
            plain_blake3,
            stored_blake3,
        }
    }

    /// What `get` computes to compare with these: blake3 alone when it is
    /// recorded, else sha256.
    pub fn cheapest(&self) -> Algos {
        if self.plain_blake3.is_some() && self.stored_blake3.is_some() {
            Algos::BLAKE3
        } else {
            Algos::SHA256
        }
    }

    /// Every hash recorded: what a full audit computes.
    pub fn recorded(&self) -> Algos {
        Algos {
            sha256: true,
            blake3: self.plain_blake3.is_some(),
        }
    }

    /// Compares what was read with what was recorded: the stored file's
    /// hashes when the checksum file describes that form, and the
    /// plaintext's when it was read (`None`: encrypted, no key), for each
    /// algorithm that was both computed and recorded. Returns what differs.
    pub fn mismatch(
        &self,
        stored_name: &str,
        stored: &Hashes,
        plain: Option<&Hashes>,
    ) -> Option<String> {
        let mut why = Vec::new();
        let algos = [
            (
                "sha256",
                Some(&self.plain),
                Some(&self.stored),
                &stored.sha256,
                plain.map(|p| &p.sha256),
            ),
            (
                "blake3",
                self.plain_blake3.as_ref(),
                self.stored_blake3.as_ref(),
                &stored.blake3,
                plain.map(|p| &p.blake3),
            ),
        ];
        for (algo, rec_plain, rec_stored, got_stored, got_plain) in algos {
            let (Some(rec_plain), Some(rec_stored)) = (rec_plain, rec_stored) else {
                continue;
            };
            let got_plain = got_plain.and_then(|p| p.as_deref());
            let mut said = false;
            if let Some(s) = got_stored.as_deref() {
                if self.stored_name == stored_name && rec_stored != s {
                    why.push(format!(
                        "{algo} of {stored_name} is {s}, recorded {rec_stored}"
                    ));
                    // A plain file's one checksum is said once.
                    said = rec_plain == rec_stored && got_plain == Some(s);
                }
            }
            if let Some(p) = got_plain.filter(|p| p != rec_plain && !said) {
                why.push(format!(
                    "{algo} of its content is {p}, recorded {rec_plain}"
                ));
            }
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
    if let (Some(p), Some(s)) = (&c.plain_blake3, &c.stored_blake3) {
        text.push_str(&format!("{BLAKE3_MARK}{p}  {name}\n"));
        if c.stored_name != name {
            text.push_str(&format!("{BLAKE3_MARK}{s}  {}\n", c.stored_name));
        }
    }
    text
}

/// How a blake3 line of `NAME.sha256` starts: a comment to `sha256sum -c`.
pub const BLAKE3_MARK: &str = "# blake3 ";

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
    // (plaintext, stored form) of sha256 and of blake3.
    type Lines = (Option<String>, Option<(String, String)>);
    let mut sums: [Lines; 2] = [(None, None), (None, None)];
    for line in text.lines() {
        let (i, line) = match line.strip_prefix(BLAKE3_MARK) {
            Some(rest) => (1, rest),
            None => (0, line),
        };
        let (sum, file) = line.split_once("  ")?;
        if sum.len() != 64 || !sum.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let (plain, stored) = &mut sums[i];
        if file == name && plain.is_none() {
            *plain = Some(sum.to_ascii_lowercase());
        } else if file.starts_with(name) && file != name && stored.is_none() {
            *stored = Some((file.to_string(), sum.to_ascii_lowercase()));
        } else {
            return None;
        }
    }
    let [(plain, stored), (plain_b3, stored_b3)] = sums;
    let plain = plain?;
    let (stored_name, stored) = stored.unwrap_or_else(|| (name.to_string(), plain.clone()));
    // blake3 is recorded for the same files as sha256, or not at all.
    let (plain_blake3, stored_blake3) = match (plain_b3, stored_b3) {
        (None, None) => (None, None),
        (Some(p), None) if stored_name == name => (Some(p.clone()), Some(p)),
        (Some(p), Some((n, s))) if n == stored_name => (Some(p), Some(s)),
        _ => return None,
    };
    Some(Checksums {
        plain,
        stored_name,
        stored,
        plain_blake3,
        stored_blake3,
    })
}

/// Writes `NAME.sha256` durably (replacing a stale one).
pub fn write_checksums(dir: &Path, name: &str, c: &Checksums) -> Result<()> {
    let text = checksums_text(name, c);
    write_atomic(&checksum_path(dir, name), text.as_bytes(), true)
}

/// sha256 and blake3 of a file's bytes.
pub fn hash_file(path: &Path) -> Result<crate::Digests> {
    let f = File::open(path).ctx("open", path)?;
    crate::digest::hash_reader(f).ctx("read", path)
}

/// A reader that hashes what passes through it ([`Algos`]: none, one or
/// both).
pub struct HashReader<R> {
    inner: R,
    hasher: MultiHasher,
}

impl<R: Read> HashReader<R> {
    pub fn new(inner: R, algos: Algos) -> Self {
        HashReader {
            inner,
            hasher: MultiHasher::new(algos),
        }
    }

    pub fn finish(self) -> Hashes {
        self.hasher.finish()
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A writer that hashes what it passes on ([`Algos`]).
pub struct HashWriter<W> {
    inner: W,
    hasher: MultiHasher,
}

impl<W: io::Write> HashWriter<W> {
    pub fn new(inner: W, algos: Algos) -> Self {
        HashWriter {
            inner,
            hasher: MultiHasher::new(algos),
        }
    }

    pub fn finish(self) -> Hashes {
        self.hasher.finish()
    }
}

impl<W: io::Write> io::Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(sha: char, b3: Option<char>) -> Hashes {
        Hashes {
            sha256: Some(sha.to_string().repeat(64)),
            blake3: b3.map(|c| c.to_string().repeat(64)),
        }
    }

    #[test]
    fn names_and_checksum_file() {
        assert_eq!(stored_name("A", true, true), "A.zst.age");
        assert_eq!(stored_name("A", false, true), "A.age");
        let d = tempfile::tempdir().unwrap();
        let c = Checksums::encoded(
            "000000010000000000000003.zst.age",
            &h('a', Some('e')),
            &h('b', Some('f')),
        );
        write_checksums(d.path(), "000000010000000000000003", &c).unwrap();
        assert_eq!(
            fs::read_to_string(checksum_path(d.path(), "000000010000000000000003")).unwrap(),
            format!(
                "{a}  000000010000000000000003\n{b}  000000010000000000000003.zst.age\n\
                 # blake3 {e}  000000010000000000000003\n\
                 # blake3 {f}  000000010000000000000003.zst.age\n",
                a = "a".repeat(64),
                b = "b".repeat(64),
                e = "e".repeat(64),
                f = "f".repeat(64)
            )
        );
        assert_eq!(
            read_checksums(d.path(), "000000010000000000000003").unwrap(),
            Some(c.clone())
        );
        assert_eq!(c.cheapest(), Algos::BLAKE3);
        assert_eq!(parse_checksums("junk", "X"), None);
        // A plain file: one line each, which vouch for the stored bytes too.
        let n = "000000010000000000000005";
        let p = Checksums::plain(n, &h('c', Some('e')));
        write_checksums(d.path(), n, &p).unwrap();
        assert_eq!(
            fs::read_to_string(checksum_path(d.path(), n)).unwrap(),
            format!(
                "{}  {n}\n# blake3 {}  {n}\n",
                "c".repeat(64),
                "e".repeat(64)
            )
        );
        assert_eq!(
            load_checksums(d.path(), n).unwrap(),
            Recorded::Present(p.clone())
        );
        let b3 = |c: char| Hashes {
            sha256: None,
            blake3: Some(c.to_string().repeat(64)),
        };
        assert_eq!(p.mismatch(n, &b3('e'), Some(&b3('e'))), None);
        assert_eq!(
            p.mismatch(n, &b3('d'), Some(&b3('d'))).unwrap(),
            format!(
                "blake3 of {n} is {}, recorded {}",
                "d".repeat(64),
                "e".repeat(64)
            )
        );
        assert!(p
            .mismatch(n, &h('d', None), None)
            .unwrap()
            .starts_with("sha256 of"));
        // Another form than recorded: only the content is compared.
        assert_eq!(
            p.mismatch(&format!("{n}.zst"), &b3('d'), Some(&b3('e'))),
            None
        );
        assert!(p
            .mismatch(&format!("{n}.zst"), &b3('d'), Some(&b3('d')))
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

    #[test]
    fn blake3_lines_are_optional_but_never_malformed() {
        let n = "000000010000000000000007";
        let (a, b, e, f) = (
            "a".repeat(64),
            "b".repeat(64),
            "e".repeat(64),
            "f".repeat(64),
        );
        // A checksum file of an older pgb-wal: sha256 only.
        let old = parse_checksums(&format!("{a}  {n}\n{b}  {n}.zst\n"), n).unwrap();
        assert_eq!(old.plain_blake3, None);
        assert_eq!(old.cheapest(), Algos::SHA256);
        assert_eq!(old.recorded(), Algos::SHA256);
        // Only the algorithms computed and recorded are compared.
        assert_eq!(
            old.mismatch(&format!("{n}.zst"), &Hashes::default(), None),
            None
        );
        let good = format!("{a}  {n}\n{b}  {n}.zst\n# blake3 {e}  {n}\n# blake3 {f}  {n}.zst\n");
        let c = parse_checksums(&good, n).unwrap();
        assert_eq!(c.recorded(), Algos::BOTH);
        assert_eq!(c.stored_blake3.as_deref(), Some(f.as_str()));
        for bad in [
            format!("{a}  {n}\n# blake3 {}  {n}\n", "e".repeat(63)),
            format!("{a}  {n}\n# blake3 {}  {n}\n", "g".repeat(64)),
            format!("{a}  {n}\n# blake3 {e} {n}\n"),
            format!("{a}  {n}\n# blake3 {e}  {n}\n# blake3 {e}  {n}\n"),
            format!("{a}  {n}\n# blake3 {e}  000000010000000000000008\n"),
            // blake3 of the plaintext only, for a stored form.
            format!("{a}  {n}\n{b}  {n}.zst\n# blake3 {e}  {n}\n"),
            // blake3 of another stored form than sha256's.
            format!("{a}  {n}\n{b}  {n}.zst\n# blake3 {e}  {n}\n# blake3 {f}  {n}.age\n"),
            format!("{a}  {n}\n# blake3 {f}  {n}.zst\n"),
            format!("# blake3 {e}  {n}\n"),
            format!("{a}  {n}\n#blake3 {e}  {n}\n"),
        ] {
            assert_eq!(
                parse_recorded(Some(bad.clone().into_bytes()), n),
                Recorded::Bad(format!("not a checksum file of {n}")),
                "{bad}"
            );
        }
        // Recorded as written.
        assert_eq!(checksums_text(n, &c), good);
    }
}
