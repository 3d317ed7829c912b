//! age v1 files written at full speed: the header is built from the age
//! crate's recipients (the key wrapping stays theirs), the payload is sealed
//! with ring's ChaCha20-Poly1305, which is about twice as fast as the pure
//! Rust one the age crate streams through.
//!
//! The format (age-encryption.org/v1, C2SP): a random 16-byte file key is
//! wrapped by every recipient into stanzas; the header is the version line,
//! the stanzas, and `---` followed by an HMAC-SHA256 of everything before it
//! under `HKDF(file key, "header")`. The payload starts with a random
//! 16-byte nonce; its key is `HKDF(file key, salt = nonce, "payload")`. The
//! plaintext goes in 64 KiB chunks, each sealed with a 12-byte nonce made of
//! an 11-byte big-endian counter and a last-chunk flag; only the final chunk
//! may be shorter, and it is empty only when the whole plaintext is.
//!
//! Files written here decrypt with the age CLI and the age crate (tests in
//! this module and tests/encrypt.rs prove both).

use std::collections::HashSet;
use std::io::{self, Write};

use age_core::format::{FileKey, Stanza};
use age_core::primitives::hkdf;
use age_core::secrecy::ExposeSecret;
use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::{Error, Result};

/// Plaintext bytes per STREAM chunk.
pub const CHUNK: usize = 64 * 1024;
/// Bytes the seal adds to each chunk.
pub const TAG: usize = 16;

const VERSION_LINE: &str = "age-encryption.org/v1";
/// Base64 columns per line of a stanza body.
const COLUMNS: usize = 64;

/// Seals the payload chunk by chunk, in order.
pub struct Sealer {
    key: LessSafeKey,
    counter: u64,
    done: bool,
}

fn random<const N: usize>(rng: &SystemRandom) -> Result<[u8; N]> {
    let mut b = [0u8; N];
    rng.fill(&mut b)
        .map_err(|_| Error::msg("the system random number generator failed"))?;
    Ok(b)
}

/// Starts an age file for `recipients`: returns the header (with the payload
/// nonce, so it is everything before the first chunk) and the sealer for
/// the payload.
pub fn begin(recipients: &[&dyn age::Recipient]) -> Result<(Vec<u8>, Sealer)> {
    if recipients.is_empty() {
        return Err(Error::msg("age: no recipients"));
    }
    let rng = SystemRandom::new();
    let file_key = FileKey::new(Box::new(random::<16>(&rng)?));
    let mut stanzas: Vec<Stanza> = Vec::new();
    // The age crate's rule: recipients that carry labels (plugins,
    // post-quantum) mix only with recipients carrying the same labels.
    let mut labels: Option<HashSet<String>> = None;
    for r in recipients {
        let (s, l) = r
            .wrap_file_key(&file_key)
            .map_err(|e| Error::msg(format!("age: {e}")))?;
        match &labels {
            Some(first) if *first != l => {
                return Err(Error::msg(
                    "age: these recipients cannot be mixed in one file (different labels)",
                ))
            }
            Some(_) => {}
            None => labels = Some(l),
        }
        stanzas.extend(s);
    }
    let mut header = Vec::with_capacity(256);
    header.extend_from_slice(VERSION_LINE.as_bytes());
    header.push(b'\n');
    for s in &stanzas {
        write_stanza(&mut header, s);
    }
    header.extend_from_slice(b"---");
    let mac_key = hkdf(&[], b"header", file_key.expose_secret());
    let mac = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &mac_key),
        &header,
    );
    header.push(b' ');
    header.extend_from_slice(
        base64::engine::general_purpose::STANDARD_NO_PAD
            .encode(mac.as_ref())
            .as_bytes(),
    );
    header.push(b'\n');
    let nonce = random::<16>(&rng)?;
    header.extend_from_slice(&nonce);
    let payload_key = hkdf(&nonce, b"payload", file_key.expose_secret());
    let key =
        LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &payload_key).expect("a 32-byte key"));
    Ok((
        header,
        Sealer {
            key,
            counter: 0,
            done: false,
        },
    ))
}

/// `-> tag args...` then the body in base64 (no padding), 64 columns per
/// line, ending with a line shorter than 64 (empty if need be).
fn write_stanza(out: &mut Vec<u8>, s: &Stanza) {
    out.extend_from_slice(b"->");
    for part in std::iter::once(&s.tag).chain(s.args.iter()) {
        out.push(b' ');
        out.extend_from_slice(part.as_bytes());
    }
    out.push(b'\n');
    let body = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&s.body);
    let mut rest = body.as_bytes();
    loop {
        let n = rest.len().min(COLUMNS);
        out.extend_from_slice(&rest[..n]);
        out.push(b'\n');
        rest = &rest[n..];
        if n < COLUMNS {
            break;
        }
    }
}

impl Sealer {
    /// Appends the sealed `chunk` to `out`. Every chunk but the last must be
    /// exactly [`CHUNK`] bytes; the last is 1..=CHUNK bytes, or empty when
    /// the plaintext is. Nothing may follow the last.
    pub fn seal(&mut self, chunk: &[u8], last: bool, out: &mut Vec<u8>) -> Result<()> {
        let bad = self.done
            || chunk.len() > CHUNK
            || (!last && chunk.len() != CHUNK)
            || (last && chunk.is_empty() && self.counter != 0);
        if bad {
            return Err(Error::msg(format!(
                "age: chunk {} of {} bytes (last: {last}) breaks the STREAM layout",
                self.counter,
                chunk.len()
            )));
        }
        let mut n = [0u8; 12];
        n[3..11].copy_from_slice(&self.counter.to_be_bytes());
        n[11] = u8::from(last);
        let start = out.len();
        out.extend_from_slice(chunk);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(n),
                Aad::empty(),
                &mut out[start..],
            )
            .map_err(|_| Error::msg("age: sealing a chunk failed"))?;
        out.extend_from_slice(tag.as_ref());
        self.counter += 1;
        self.done = last;
        Ok(())
    }

    /// Seals a block of whole chunks (the last one possibly short when
    /// `last`), appending to `out`: a convenience over [`Sealer::seal`].
    pub fn seal_block(&mut self, block: &[u8], last: bool, out: &mut Vec<u8>) -> Result<()> {
        if block.is_empty() {
            return if last {
                self.seal(&[], true, out)
            } else {
                Ok(())
            };
        }
        let mut chunks = block.chunks(CHUNK).peekable();
        while let Some(c) = chunks.next() {
            self.seal(c, last && chunks.peek().is_none(), out)?;
        }
        Ok(())
    }

    /// Whether the last chunk has been sealed.
    pub fn finished(&self) -> bool {
        self.done
    }
}

/// An age file written through `Write`: the header goes out at once, each
/// chunk when the next byte arrives (the last chunk is sealed differently),
/// the last by [`SealWriter::finish`]. For small files (WAL segments);
/// pgb-encrypt drives a [`Sealer`] itself to spread the work over threads.
pub struct SealWriter<W: Write> {
    inner: W,
    sealer: Sealer,
    pending: Vec<u8>,
    sealed: Vec<u8>,
}

impl<W: Write> SealWriter<W> {
    pub fn new(recipients: &[&dyn age::Recipient], mut inner: W) -> Result<SealWriter<W>> {
        let (header, sealer) = begin(recipients)?;
        inner
            .write_all(&header)
            .map_err(|e| Error::msg(format!("age: writing the header: {e}")))?;
        Ok(SealWriter {
            inner,
            sealer,
            pending: Vec::with_capacity(CHUNK),
            sealed: Vec::with_capacity(CHUNK + TAG),
        })
    }

    fn seal_pending(&mut self, last: bool) -> io::Result<()> {
        self.sealed.clear();
        self.sealer
            .seal(&self.pending, last, &mut self.sealed)
            .map_err(io::Error::other)?;
        self.pending.clear();
        self.inner.write_all(&self.sealed)
    }

    /// Seals the last chunk and returns the inner writer (not flushed).
    pub fn finish(mut self) -> io::Result<W> {
        self.seal_pending(true)?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for SealWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        if self.pending.len() == CHUNK {
            // More follows, so this chunk is not the last.
            self.seal_pending(false)?;
        }
        let n = data.len().min(CHUNK - self.pending.len());
        self.pending.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Ciphertext size for `plaintext` bytes, header excluded.
pub fn payload_size(plaintext: u64) -> u64 {
    let chunks = plaintext.div_ceil(CHUNK as u64).max(1);
    plaintext + chunks * TAG as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::str::FromStr;

    fn encrypt(plain: &[u8], rs: &[&dyn age::Recipient], block: usize) -> Vec<u8> {
        let (mut out, mut s) = begin(rs).unwrap();
        let header_len = out.len();
        if plain.is_empty() {
            s.seal_block(&[], true, &mut out).unwrap();
        }
        let mut blocks = plain.chunks(block).peekable();
        while let Some(b) = blocks.next() {
            s.seal_block(b, blocks.peek().is_none(), &mut out).unwrap();
        }
        assert!(s.finished());
        assert_eq!(
            (out.len() - header_len) as u64,
            payload_size(plain.len() as u64)
        );
        out
    }

    fn decrypt(ct: &[u8], id: &dyn age::Identity) -> std::io::Result<Vec<u8>> {
        let d = age::Decryptor::new(ct).map_err(std::io::Error::other)?;
        let mut r = d
            .decrypt(std::iter::once(id))
            .map_err(std::io::Error::other)?;
        let mut v = Vec::new();
        r.read_to_end(&mut v)?;
        Ok(v)
    }

    #[test]
    fn the_age_crate_reads_every_size_around_chunk_boundaries() {
        let id = age::x25519::Identity::generate();
        let r = id.to_public();
        for len in [
            0,
            1,
            CHUNK - 1,
            CHUNK,
            CHUNK + 1,
            2 * CHUNK,
            16 * CHUNK,
            16 * CHUNK + 7,
        ] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            for block in [CHUNK, 16 * CHUNK] {
                let ct = encrypt(&plain, &[&r], block);
                assert_eq!(decrypt(&ct, &id).unwrap(), plain, "len {len} block {block}");
            }
        }
    }

    #[test]
    fn several_recipients_each_decrypt_and_others_do_not() {
        let a = age::x25519::Identity::generate();
        let b = age::x25519::Identity::generate();
        let c = age::x25519::Identity::generate();
        let (ra, rb) = (a.to_public(), b.to_public());
        let ct = encrypt(b"two keys", &[&ra, &rb], CHUNK);
        assert_eq!(decrypt(&ct, &a).unwrap(), b"two keys");
        assert_eq!(decrypt(&ct, &b).unwrap(), b"two keys");
        assert!(decrypt(&ct, &c).is_err());
    }

    #[test]
    fn ssh_recipients_wrap_the_key_too() {
        // A fixed test key (generated for this test, not used anywhere else).
        let public =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdihSYSyhHosm06nbacIs/ae34kzbM0w0X9YVo0zZ5R";
        let r = age::ssh::Recipient::from_str(public).unwrap();
        let ct = encrypt(b"ssh", &[&r], CHUNK);
        let text = String::from_utf8_lossy(&ct);
        assert!(text.starts_with("age-encryption.org/v1\n-> ssh-ed25519 "));
    }

    #[test]
    fn a_changed_header_or_payload_byte_is_refused() {
        let id = age::x25519::Identity::generate();
        let r = id.to_public();
        let plain = vec![5u8; 3 * CHUNK + 10];
        let ct = encrypt(&plain, &[&r], CHUNK);
        for at in [25, ct.len() / 2, ct.len() - 1] {
            let mut bad = ct.clone();
            bad[at] ^= 1;
            assert!(decrypt(&bad, &id).is_err(), "byte {at} altered");
        }
        // Cut at a chunk boundary: the last chunk flag is missing.
        let header = ct.len() - payload_size(plain.len() as u64) as usize;
        let cut = header + CHUNK + TAG;
        assert!(decrypt(&ct[..cut], &id).is_err());
    }

    #[test]
    fn the_writer_matches_the_layout_whatever_the_write_sizes() {
        let id = age::x25519::Identity::generate();
        let r = id.to_public();
        for len in [0, 5, CHUNK, CHUNK + 1, 3 * CHUNK] {
            let plain: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            for piece in [1000, CHUNK, CHUNK + 3] {
                let mut w = SealWriter::new(&[&r], Vec::new()).unwrap();
                for p in plain.chunks(piece) {
                    w.write_all(p).unwrap();
                }
                let ct = w.finish().unwrap();
                assert_eq!(decrypt(&ct, &id).unwrap(), plain, "len {len} piece {piece}");
            }
        }
    }

    #[test]
    fn out_of_layout_chunks_are_refused() {
        let r = age::x25519::Identity::generate().to_public();
        let (_, mut s) = begin(&[&r]).unwrap();
        let mut out = Vec::new();
        assert!(s.seal(&[1; 10], false, &mut out).is_err());
        s.seal(&[1; CHUNK], false, &mut out).unwrap();
        assert!(s.seal(&[], true, &mut out).is_err());
        s.seal(&[1; 3], true, &mut out).unwrap();
        assert!(s.seal(&[1; 3], true, &mut out).is_err());
    }

    #[test]
    fn stanza_bodies_wrap_at_64_columns_with_a_short_last_line() {
        let mut out = Vec::new();
        let s = Stanza {
            tag: "t".into(),
            args: vec!["a".into()],
            body: vec![0; 48], // exactly 64 base64 columns
        };
        write_stanza(&mut out, &s);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.split('\n').collect();
        assert_eq!(lines[0], "-> t a");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines[2], "");
    }
}
