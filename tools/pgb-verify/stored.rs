//! An artifact's stored files read back as plaintext: age-encrypted files
//! (`*.age`, with an `encryption` object on the record) decrypted streaming
//! with the identities given by `-i`, and the decrypted bytes hashed on the
//! way so they can be compared with `encryption.plaintext`.

use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use pgb_common::crypt::{self, Identities};
use pgb_common::digest::Hasher;
use pgb_common::error::{Error, IoContext, Result};
use pgb_common::record::{Artifact, FileEntry};

/// The `-i` files, set once at start-up (identities are loaded per use:
/// age's identity objects are not `Sync`).
static IDENTITY_FILES: OnceLock<Vec<PathBuf>> = OnceLock::new();

/// Remembers the `-i` files after checking that they load.
pub fn set_identities(files: &[PathBuf]) -> Result<()> {
    if !files.is_empty() {
        Identities::load(files)?;
    }
    let _ = IDENTITY_FILES.set(files.to_vec());
    Ok(())
}

fn identities() -> Option<Result<Identities>> {
    let files = IDENTITY_FILES.get()?;
    (!files.is_empty()).then(|| Identities::load(files))
}

/// What the check that reads the plaintext should say when it cannot.
pub const NO_IDENTITY: &str = "encrypted, no identity (give -i FILE)";

/// True when the artifact's stored files are age ciphertext.
pub fn is_encrypted(a: &Artifact) -> bool {
    a.encryption.is_some() && a.files.iter().any(|f| f.name.ends_with(crypt::SUFFIX))
}

/// True when the plaintext of an encrypted artifact cannot be read.
pub fn lacks_identity(a: &Artifact) -> bool {
    is_encrypted(a) && identities().is_none()
}

/// The name a stored file had before encryption.
pub fn plain_name(name: &str) -> &str {
    name.strip_suffix(crypt::SUFFIX).unwrap_or(name)
}

/// `encryption.plaintext`: the files as they were before encryption.
pub fn plaintext_entries(a: &Artifact) -> Vec<FileEntry> {
    a.encryption
        .as_ref()
        .and_then(|e| e.get("plaintext"))
        .and_then(|p| serde_json::from_value::<Vec<FileEntry>>(p.clone()).ok())
        .unwrap_or_default()
}

/// A stored file being read as plaintext.
pub struct Stored {
    inner: Box<dyn Read + Send>,
    hasher: Option<Arc<Mutex<Hasher>>>,
}

impl Read for Stored {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self
            .inner
            .read(buf)
            .map_err(|e| io::Error::new(e.kind(), crypt::explain(&e)))?;
        if let Some(h) = &self.hasher {
            h.lock().expect("hasher").update(&buf[..n]);
        }
        Ok(n)
    }
}

/// Compares the decrypted bytes of one file with `encryption.plaintext`,
/// once they have all been read.
pub struct PlainCheck {
    hasher: Option<Arc<Mutex<Hasher>>>,
    expect: Option<FileEntry>,
    shown: String,
}

impl PlainCheck {
    /// True when the file is decrypted and its plaintext is being hashed.
    pub fn active(&self) -> bool {
        self.hasher.is_some()
    }

    /// None when the file is not encrypted or its plaintext matches.
    pub fn problem(self) -> Option<String> {
        let hasher = self.hasher?;
        let d = std::mem::take(&mut *hasher.lock().expect("hasher")).finish();
        let Some(want) = self.expect else {
            return Some(format!(
                "{}: not listed in encryption.plaintext",
                self.shown
            ));
        };
        if d.size != want.size {
            Some(format!(
                "{}: decrypts to {} bytes, encryption.plaintext says {}",
                self.shown, d.size, want.size
            ))
        } else if d.sha256 != want.sha256 {
            Some(format!(
                "{}: decrypted sha256 {} differs from encryption.plaintext {}",
                self.shown, d.sha256, want.sha256
            ))
        } else if d.blake3 != want.blake3 {
            Some(format!(
                "{}: decrypted blake3 {} differs from encryption.plaintext {}",
                self.shown, d.blake3, want.blake3
            ))
        } else {
            None
        }
    }
}

/// Opens `path`, one of `a`'s stored files: decrypted when the artifact is
/// encrypted and the name ends in `.age`. The check compares the decrypted
/// bytes with the record once the reader has been read to its end.
pub fn open(a: &Artifact, path: &Path) -> Result<(Stored, PlainCheck)> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let f = BufReader::with_capacity(
        1 << 16,
        // A local file or an object of a remote repository, streamed.
        pgb_common::progress::CountingCurrent(pgb_common::store::open(path)?),
    );
    let shown = path.display().to_string();
    if a.encryption.is_none() || !name.ends_with(crypt::SUFFIX) {
        return Ok((
            Stored {
                inner: Box::new(f),
                hasher: None,
            },
            PlainCheck {
                hasher: None,
                expect: None,
                shown,
            },
        ));
    }
    let ids = identities().ok_or_else(|| Error::msg(format!("{shown}: {NO_IDENTITY}")))??;
    let r = ids
        .decrypt(f)
        .map_err(|e| Error::msg(format!("{shown}: {e}")))?;
    let hasher = Arc::new(Mutex::new(Hasher::new()));
    let stem = plain_name(&name);
    let expect = plaintext_entries(a)
        .into_iter()
        .find(|p| p.name == stem || Path::new(&p.name).file_name().is_some_and(|n| n == stem));
    Ok((
        Stored {
            inner: Box::new(r),
            hasher: Some(hasher.clone()),
        },
        PlainCheck {
            hasher: Some(hasher),
            expect,
            shown,
        },
    ))
}

/// Reads what is left, so the plaintext hash covers the whole file.
pub fn drain(r: &mut dyn Read) -> io::Result<u64> {
    io::copy(r, &mut io::sink())
}

/// The plaintext as stored before pgb compressed it: zstd decompressed when
/// the record says pgb compressed with zstd.
pub fn decompressed(a: &Artifact, r: Stored, path: &Path) -> Result<Box<dyn Read + Send>> {
    let zstd = a
        .compression
        .as_ref()
        .is_some_and(|c| c.algorithm == "zstd" && c.by == "pgb");
    if zstd {
        Ok(Box::new(
            zstd::stream::read::Decoder::new(r).ctx("read", path)?,
        ))
    } else {
        Ok(Box::new(r))
    }
}
