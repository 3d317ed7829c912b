//! age encryption shared by the tools: recipients and identities loaded with
//! the checks pgb promises, and streaming encrypt/decrypt wrappers.
//!
//! Recipients: X25519 (`age1...`) and SSH public keys (`ssh-ed25519`,
//! `ssh-rsa`). Identities: age identity files (`AGE-SECRET-KEY-1...` lines)
//! and unencrypted OpenSSH private keys. An identity file readable by group
//! or others, or owned by another user, is refused before it is read.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The record's `encryption.scheme`.
pub const SCHEME: &str = "age";
/// Suffix of an encrypted file.
pub const SUFFIX: &str = ".age";

/// One recipient, as given, with the fingerprint the record keeps.
pub struct Recipient {
    inner: Box<dyn age::Recipient + Send>,
    /// `age1...` for X25519 keys (already public), `ssh-ed25519 SHA256:...`
    /// for SSH keys (as `ssh-keygen -l` prints them).
    pub fingerprint: String,
}

impl Recipient {
    /// Parses one recipient string. `origin` names where it came from, for
    /// the error message.
    pub fn parse(s: &str, origin: &str) -> Result<Recipient> {
        let s = s.trim();
        // age's post-quantum recipients have their own bech32 prefix,
        // `age1pq`, so they read `age1pq1...` ('1' is the separator and never
        // a data character). An X25519 key whose data merely begins with
        // "pq" (about 1 in 1,024) is `age1pq` followed by another character.
        if s.to_ascii_lowercase().starts_with("age1pq1") {
            return Err(Error::Usage(format!(
                "{origin}: a post-quantum age recipient (age1pq1...); pgb encrypts to X25519 (age1...) and SSH keys"
            )));
        }
        if s.starts_with("age1") {
            let r = age::x25519::Recipient::from_str(s)
                .map_err(|e| Error::Usage(format!("{origin}: not an age recipient: {e}")))?;
            return Ok(Recipient {
                inner: Box::new(r),
                fingerprint: s.to_string(),
            });
        }
        if s.starts_with("ssh-") {
            let r = age::ssh::Recipient::from_str(s).map_err(|e| {
                Error::Usage(format!("{origin}: not a supported SSH public key: {e:?}"))
            })?;
            return Ok(Recipient {
                inner: Box::new(r),
                fingerprint: ssh_fingerprint(s).unwrap_or_else(|| s.to_string()),
            });
        }
        Err(Error::Usage(format!(
            "{origin}: not a recipient (expected age1... or an ssh-ed25519/ssh-rsa public key)"
        )))
    }
}

/// `ssh-ed25519 SHA256:<base64 of sha256(key blob)>`.
fn ssh_fingerprint(line: &str) -> Option<String> {
    let mut parts = line.split_whitespace();
    let algo = parts.next()?;
    let blob = base64::engine::general_purpose::STANDARD
        .decode(parts.next()?)
        .ok()?;
    let sum = Sha256::digest(&blob);
    Some(format!(
        "{algo} SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(sum)
    ))
}

/// A set of recipients; never empty.
pub struct Recipients(Vec<Recipient>);

impl Recipients {
    /// From `-r` strings and `-R` files (one recipient per line, `#`
    /// comments and blank lines ignored). Refuses an empty result: pgb never
    /// falls back to plaintext.
    pub fn load(args: &[String], files: &[PathBuf]) -> Result<Recipients> {
        let mut v = Vec::new();
        for (i, a) in args.iter().enumerate() {
            v.push(Recipient::parse(a, &format!("recipient #{}", i + 1))?);
        }
        for f in files {
            let text = std::fs::read_to_string(f)
                .map_err(|e| Error::Usage(format!("{}: {e}", f.display())))?;
            let before = v.len();
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                v.push(Recipient::parse(
                    line,
                    &format!("{}:{}", f.display(), n + 1),
                )?);
            }
            if v.len() == before {
                return Err(Error::Usage(format!(
                    "{}: recipients file has no recipients; refusing to go on",
                    f.display()
                )));
            }
        }
        if v.is_empty() {
            return Err(Error::Usage(
                "no recipients (-r or -R); refusing to write plaintext".into(),
            ));
        }
        Ok(Recipients(v))
    }

    pub fn fingerprints(&self) -> Vec<String> {
        self.0.iter().map(|r| r.fingerprint.clone()).collect()
    }

    /// Starts an age file for these recipients: the header (payload nonce
    /// included) and the sealer for the payload; see [`crate::seal`].
    pub fn begin(&self) -> Result<(Vec<u8>, crate::seal::Sealer)> {
        crate::seal::begin(&self.as_age())
    }

    fn as_age(&self) -> Vec<&dyn age::Recipient> {
        self.0
            .iter()
            .map(|r| &*r.inner as &dyn age::Recipient)
            .collect()
    }

    /// Wraps `out`; the caller must call `finish()` on the result.
    pub fn encrypt<W: Write>(&self, out: W) -> Result<crate::seal::SealWriter<W>> {
        crate::seal::SealWriter::new(&self.as_age(), out)
    }
}

/// Identities for decryption, from one or more identity files.
pub struct Identities(Vec<Box<dyn age::Identity>>);

impl Identities {
    /// Loads identity files, refusing loose permissions or a foreign owner.
    pub fn load(files: &[PathBuf]) -> Result<Identities> {
        if files.is_empty() {
            return Err(Error::Usage("no identity file (-i)".into()));
        }
        let mut v: Vec<Box<dyn age::Identity>> = Vec::new();
        for f in files {
            check_identity_file(f)?;
            let mut text = Vec::new();
            File::open(f)
                .and_then(|mut h| h.read_to_end(&mut text))
                .map_err(|e| Error::Usage(format!("{}: {e}", f.display())))?;
            if text.starts_with(b"-----BEGIN OPENSSH PRIVATE KEY-----") {
                let id = age::ssh::Identity::from_buffer(&text[..], Some(f.display().to_string()))
                    .map_err(|e| Error::Usage(format!("{}: {e}", f.display())))?;
                match id {
                    age::ssh::Identity::Unencrypted(_) => v.push(Box::new(id)),
                    age::ssh::Identity::Encrypted(_) => {
                        return Err(Error::Usage(format!(
                            "{}: passphrase-protected SSH keys are not supported \
                             (pgb runs unattended)",
                            f.display()
                        )))
                    }
                    age::ssh::Identity::Unsupported(_) => {
                        return Err(Error::Usage(format!(
                            "{}: unsupported SSH key type",
                            f.display()
                        )))
                    }
                }
                continue;
            }
            let idf = age::IdentityFile::from_buffer(BufReader::new(&text[..]))
                .map_err(|e| Error::Usage(format!("{}: {e}", f.display())))?;
            let ids = idf
                .into_identities()
                .map_err(|e| Error::Usage(format!("{}: {e}", f.display())))?;
            if ids.is_empty() {
                return Err(Error::Usage(format!(
                    "{}: identity file has no identities",
                    f.display()
                )));
            }
            v.extend(ids);
        }
        Ok(Identities(v))
    }

    /// Wraps an age stream: reads and checks the header, unwraps the file
    /// key (see [`crate::seal::Opener`]). The plaintext's integrity is
    /// checked chunk by chunk as it is read; a truncated or altered file
    /// gives an error from `read`, never short data.
    pub fn decrypt<R: Read>(&self, input: R) -> Result<crate::seal::Opener<R>> {
        let ids: Vec<&dyn age::Identity> = self.0.iter().map(|i| &**i).collect();
        crate::seal::Opener::new(&ids, input)
    }
}

/// Refuses an identity file that is group- or world-accessible, or owned by
/// someone other than the running user (root may read files it owns only).
pub fn check_identity_file(f: &Path) -> Result<()> {
    let md = std::fs::metadata(f).map_err(|e| Error::Usage(format!("{}: {e}", f.display())))?;
    if !md.is_file() {
        return Err(Error::Usage(format!("{}: not a regular file", f.display())));
    }
    let uid = nix::unistd::geteuid().as_raw();
    if md.uid() != uid {
        return Err(Error::Usage(format!(
            "{}: identity file is owned by uid {}, not by the running user (uid {uid}); refusing it",
            f.display(),
            md.uid()
        )));
    }
    if md.mode() & 0o077 != 0 {
        return Err(Error::Usage(format!(
            "{}: identity file has mode {:04o}, readable beyond its owner; \
             refusing it (chmod 600 {})",
            f.display(),
            md.mode() & 0o7777,
            f.display()
        )));
    }
    Ok(())
}

/// True when `r` starts with the age v1 header line.
pub fn looks_encrypted(head: &[u8]) -> bool {
    head.starts_with(b"age-encryption.org/v1\n")
}

/// Maps an age read error into an `io::Error` message that says what it
/// means for the operator.
pub fn explain(e: &io::Error) -> String {
    format!("decryption failed (wrong key, or the file is truncated or altered): {e}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn x25519_keys_that_begin_with_pq_are_accepted_and_real_pq_refused() {
        // About 1 in 1,024 X25519 keys reads age1pq...; the age CLI takes
        // them, and so must pgb.
        let mut found = 0;
        for _ in 0..200_000 {
            let r = age::x25519::Identity::generate().to_public().to_string();
            if r.starts_with("age1pq") {
                Recipient::parse(&r, "test").unwrap_or_else(|e| panic!("{r}: {e}"));
                found += 1;
                if found == 2 {
                    break;
                }
            }
        }
        assert_eq!(found, 2, "no age1pq X25519 key in 200,000 tries");
        let pq = "age1pq1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq";
        let e = Recipient::parse(pq, "recipients.txt")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("post-quantum"), "{e}");
    }

    fn keypair() -> (String, String) {
        let id = age::x25519::Identity::generate();
        use age::secrecy::ExposeSecret;
        (
            id.to_string().expose_secret().to_string(),
            id.to_public().to_string(),
        )
    }

    #[test]
    fn round_trip_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let (secret, public) = keypair();
        let idf = dir.path().join("id.txt");
        std::fs::write(&idf, format!("# test\n{secret}\n")).unwrap();
        std::fs::set_permissions(&idf, std::fs::Permissions::from_mode(0o600)).unwrap();

        let rs = Recipients::load(std::slice::from_ref(&public), &[]).unwrap();
        assert_eq!(rs.fingerprints(), vec![public.clone()]);
        let mut ct = Vec::new();
        let mut w = rs.encrypt(&mut ct).unwrap();
        w.write_all(b"hello world").unwrap();
        w.finish().unwrap();
        assert!(looks_encrypted(&ct));

        let ids = Identities::load(std::slice::from_ref(&idf)).unwrap();
        let mut pt = Vec::new();
        ids.decrypt(&ct[..]).unwrap().read_to_end(&mut pt).unwrap();
        assert_eq!(pt, b"hello world");

        // Truncated ciphertext: an error, not short data.
        let cut = &ct[..ct.len() - 1];
        let mut pt = Vec::new();
        assert!(ids.decrypt(cut).unwrap().read_to_end(&mut pt).is_err());

        // Wrong identity.
        let (other, _) = keypair();
        let idf2 = dir.path().join("other.txt");
        std::fs::write(&idf2, format!("{other}\n")).unwrap();
        std::fs::set_permissions(&idf2, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Identities::load(&[idf2]).unwrap().decrypt(&ct[..]).is_err());

        // Loose mode.
        std::fs::set_permissions(&idf, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = Identities::load(&[idf]).err().unwrap().to_string();
        assert!(e.contains("0640"), "{e}");

        // No recipients; empty recipients file.
        assert!(Recipients::load(&[], &[]).is_err());
        let empty = dir.path().join("empty.txt");
        std::fs::write(&empty, "# nobody\n\n").unwrap();
        let e = Recipients::load(&[], &[empty]).err().unwrap().to_string();
        assert!(e.contains("no recipients"), "{e}");
        assert!(Recipients::load(&["age1nope".into()], &[]).is_err());
    }

    #[test]
    fn ssh_fingerprint_matches_ssh_keygen_format() {
        // Key from ssh-keygen -t ed25519; fingerprint as ssh-keygen -l shows it.
        let k = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN comment";
        let f = ssh_fingerprint(k).unwrap();
        assert!(f.starts_with("ssh-ed25519 SHA256:"), "{f}");
        assert_eq!(f.len(), "ssh-ed25519 SHA256:".len() + 43);
    }
}
