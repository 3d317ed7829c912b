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
use std::io::{self, Read, Write};

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

/// Longest header line accepted (stanza argument lines are short; body
/// lines are 64 columns).
const MAX_LINE: usize = 4096;
/// Largest header accepted: far above any real one, so that a large file
/// that is not age is refused early.
const MAX_HEADER: usize = 1 << 20;
/// Ciphertext read at a time: 16 sealed chunks.
const READ_BLOCK: usize = 16 * (CHUNK + TAG);

fn malformed(what: impl std::fmt::Display) -> Error {
    Error::msg(format!(
        "age: not an age file, or its header is damaged: {what}"
    ))
}

fn damaged(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Reads an age v1 file: the header is parsed and its MAC checked, the file
/// key unwrapped by the first identity that can (through the age crate),
/// and the payload opened chunk by chunk with ring as it is read. A wrong
/// key fails at [`Opener::new`]; a truncated or altered payload fails from
/// `read`, never with short or wrong bytes that count as good: the last
/// chunk must carry the last-chunk flag and nothing may follow it.
pub struct Opener<R: Read> {
    inner: R,
    key: LessSafeKey,
    /// Ciphertext read but not yet opened is `buf[pos..]`; the plaintext
    /// of the chunk opened last, not yet returned, is `buf[out..out_end]`.
    buf: Vec<u8>,
    pos: usize,
    out: usize,
    out_end: usize,
    eof: bool,
    counter: u64,
    /// Payload bytes opened so far.
    opened: u64,
    done: bool,
}

impl<R: Read> Opener<R> {
    pub fn new(identities: &[&dyn age::Identity], mut inner: R) -> Result<Opener<R>> {
        let mut buf = Vec::with_capacity(READ_BLOCK + CHUNK);
        let mut eof = false;
        let mut pos = 0;
        let mut next_line = |buf: &mut Vec<u8>, pos: &mut usize| -> Result<Vec<u8>> {
            loop {
                if *pos > MAX_HEADER {
                    return Err(malformed("the header is larger than 1 MiB"));
                }
                if let Some(i) = buf[*pos..].iter().position(|&b| b == b'\n') {
                    let line = buf[*pos..*pos + i].to_vec();
                    *pos += i + 1;
                    return Ok(line);
                }
                if buf.len() - *pos > MAX_LINE {
                    return Err(malformed("a header line is too long"));
                }
                if eof {
                    return Err(malformed("it ends inside the header"));
                }
                if fill_more(&mut inner, buf, MAX_LINE)
                    .map_err(|e| Error::msg(format!("age: reading the header: {e}")))?
                    == 0
                {
                    eof = true;
                }
            }
        };
        let version = next_line(&mut buf, &mut pos)?;
        if version != VERSION_LINE.as_bytes() {
            return Err(malformed("the first line is not age-encryption.org/v1"));
        }
        let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
        let mut stanzas = Vec::new();
        let (mac_input_end, mac) = loop {
            let start = pos;
            let line = next_line(&mut buf, &mut pos)?;
            if let Some(mac) = line.strip_prefix(b"--- ") {
                let mac = b64
                    .decode(mac)
                    .ok()
                    .filter(|m| m.len() == 32)
                    .ok_or_else(|| malformed("the header MAC is not 32 bytes of base64"))?;
                break (start + 3, mac);
            }
            let Some(rest) = line.strip_prefix(b"-> ") else {
                return Err(malformed("a line is neither a stanza nor the MAC"));
            };
            let rest = std::str::from_utf8(rest).map_err(|_| malformed("a stanza is not ASCII"))?;
            let mut args: Vec<String> = Vec::new();
            for a in rest.split(' ') {
                if a.is_empty() || !a.bytes().all(|b| (33..=126).contains(&b)) {
                    return Err(malformed("a stanza argument is empty or not printable"));
                }
                args.push(a.to_string());
            }
            let tag = args.remove(0);
            let mut body = Vec::new();
            loop {
                let l = next_line(&mut buf, &mut pos)?;
                if l.len() > COLUMNS {
                    return Err(malformed("a stanza body line is longer than 64 columns"));
                }
                b64.decode_vec(&l, &mut body)
                    .map_err(|_| malformed("a stanza body is not canonical base64"))?;
                if l.len() < COLUMNS {
                    break;
                }
            }
            stanzas.push(Stanza { tag, args, body });
        };
        let mut file_key = None;
        for id in identities {
            match id.unwrap_stanzas(&stanzas) {
                Some(Ok(k)) => {
                    file_key = Some(k);
                    break;
                }
                Some(Err(e)) => return Err(Error::msg(format!("age: {e}"))),
                None => {}
            }
        }
        let file_key = file_key.ok_or_else(|| {
            Error::msg(
                "age: No matching keys found (no identity given is a recipient of this file)",
            )
        })?;
        let mac_key = hkdf(&[], b"header", file_key.expose_secret());
        ring::hmac::verify(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &mac_key),
            &buf[..mac_input_end],
            &mac,
        )
        .map_err(|_| malformed("the header MAC does not match (altered header)"))?;
        while buf.len() - pos < 16 && !eof {
            if fill_more(&mut inner, &mut buf, 16)
                .map_err(|e| Error::msg(format!("age: reading the payload nonce: {e}")))?
                == 0
            {
                eof = true;
            }
        }
        if buf.len() - pos < 16 {
            return Err(Error::msg(
                "age: the file ends before its payload (truncated)",
            ));
        }
        let payload_key = hkdf(&buf[pos..pos + 16], b"payload", file_key.expose_secret());
        pos += 16;
        let key = LessSafeKey::new(
            UnboundKey::new(&CHACHA20_POLY1305, &payload_key).expect("a 32-byte key"),
        );
        Ok(Opener {
            inner,
            key,
            buf,
            pos,
            out: 0,
            out_end: 0,
            eof,
            counter: 0,
            opened: 0,
            done: false,
        })
    }

    /// Opens the next chunk into `buf[out..out_end]`. Returns false at the
    /// end (after checking nothing follows the last chunk).
    fn next_chunk(&mut self) -> io::Result<bool> {
        const SEALED: usize = CHUNK + TAG;
        // One byte past a full chunk tells whether it is the last.
        while !self.eof && self.buf.len() - self.pos <= SEALED {
            if self.pos > 0 {
                self.buf.drain(..self.pos);
                self.pos = 0;
            }
            if fill_more(&mut self.inner, &mut self.buf, READ_BLOCK)? == 0 {
                self.eof = true;
            }
        }
        let avail = self.buf.len() - self.pos;
        if self.done {
            if avail > 0 {
                return Err(damaged("age: data follows the last chunk (altered)"));
            }
            return Ok(false);
        }
        if avail == 0 {
            return Err(damaged(
                "age: the file ends without its last chunk (truncated)",
            ));
        }
        let (n, last) = if avail > SEALED {
            (SEALED, false)
        } else {
            (avail, true)
        };
        if n < TAG || (last && n == TAG && self.counter != 0) {
            return Err(damaged("age: the last chunk is cut short (truncated)"));
        }
        let nonce = |last: bool| {
            let mut b = [0u8; 12];
            b[3..11].copy_from_slice(&self.counter.to_be_bytes());
            b[11] = u8::from(last);
            Nonce::assume_unique_for_key(b)
        };
        let range = self.pos..self.pos + n;
        if self
            .key
            .open_in_place(nonce(last), Aad::empty(), &mut self.buf[range.clone()])
            .is_err()
        {
            // A whole chunk at the end that opens as a middle one: the file
            // was cut at a chunk boundary.
            let mut copy = self.buf[range].to_vec();
            let cut = n == SEALED
                && self
                    .key
                    .open_in_place(nonce(false), Aad::empty(), &mut copy)
                    .is_ok();
            return Err(damaged(if cut {
                "age: the file ends without its last chunk (truncated)"
            } else {
                "age: a chunk does not authenticate (wrong key, or the file is altered or truncated)"
            }));
        }
        self.out = self.pos;
        self.out_end = self.pos + n - TAG;
        self.pos += n;
        self.opened += n as u64;
        self.counter += 1;
        self.done = last;
        Ok(true)
    }
}

impl<R: Read + io::Seek> Opener<R> {
    /// The plaintext's length, from the file's size, authenticated by
    /// opening the last chunk (which must carry the last-chunk flag): a
    /// truncated file is an error here too. Only the last chunk is read;
    /// the opener is spent afterwards (reads return nothing).
    pub fn authenticated_len(&mut self) -> io::Result<u64> {
        use io::SeekFrom;
        const SEALED: u64 = (CHUNK + TAG) as u64;
        let here = self.inner.stream_position()?;
        let start = here - (self.buf.len() - self.pos) as u64 - self.opened;
        let end = self.inner.seek(SeekFrom::End(0))?;
        let len = end.saturating_sub(start);
        let chunks = len.div_ceil(SEALED);
        let last_len = len - chunks.saturating_sub(1) * SEALED;
        if len == 0 || last_len < TAG as u64 || (last_len == TAG as u64 && chunks > 1) {
            return Err(damaged(
                "age: the file ends without its last chunk (truncated)",
            ));
        }
        let mut last = vec![0u8; last_len as usize];
        self.inner
            .seek(SeekFrom::Start(start + (chunks - 1) * SEALED))?;
        self.inner.read_exact(&mut last)?;
        let mut b = [0u8; 12];
        b[3..11].copy_from_slice(&(chunks - 1).to_be_bytes());
        b[11] = 1;
        self.key
            .open_in_place(Nonce::assume_unique_for_key(b), Aad::empty(), &mut last)
            .map_err(|_| {
                damaged("age: the last chunk does not authenticate (truncated or altered)")
            })?;
        self.buf.clear();
        self.pos = 0;
        self.out = 0;
        self.out_end = 0;
        self.eof = true;
        self.done = true;
        Ok(len - chunks * TAG as u64)
    }
}

/// Reads into the spare room of `buf` (at least `want` bytes of room),
/// once; returns how many bytes came.
fn fill_more(r: &mut impl Read, buf: &mut Vec<u8>, want: usize) -> io::Result<usize> {
    let len = buf.len();
    buf.resize(len + want.max(CHUNK), 0);
    loop {
        match r.read(&mut buf[len..]) {
            Ok(n) => {
                buf.truncate(len + n);
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                buf.truncate(len);
                return Err(e);
            }
        }
    }
}

impl<R: Read> Read for Opener<R> {
    fn read(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        if dst.is_empty() {
            return Ok(0);
        }
        while self.out == self.out_end {
            if !self.next_chunk()? {
                return Ok(0);
            }
        }
        let n = dst.len().min(self.out_end - self.out);
        dst[..n].copy_from_slice(&self.buf[self.out..self.out + n]);
        self.out += n;
        Ok(n)
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

    /// Plaintext sizes on and around every boundary of the layout: empty,
    /// chunks, and 1 MiB blocks of 16 chunks.
    const SIZES: [usize; 9] = [
        0,
        1,
        CHUNK - 1,
        CHUNK,
        CHUNK + 1,
        2 * CHUNK,
        16 * CHUNK,
        16 * CHUNK + 7,
        17 * CHUNK + 5,
    ];

    /// `len` bytes of a pattern that repeats only every 251 bytes.
    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn the_age_crate_reads_every_size_around_chunk_boundaries() {
        let id = age::x25519::Identity::generate();
        let r = id.to_public();
        for len in SIZES {
            let plain = sample(len);
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
        for len in SIZES {
            let plain = sample(len);
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

    fn open_all(ct: &[u8], id: &dyn age::Identity) -> std::io::Result<Vec<u8>> {
        let mut r = Opener::new(&[id], ct).map_err(std::io::Error::other)?;
        let mut v = Vec::new();
        r.read_to_end(&mut v)?;
        Ok(v)
    }

    /// The age crate's own writer, as a reference for the opener.
    fn age_encrypt(plain: &[u8], r: &dyn age::Recipient) -> Vec<u8> {
        let e = age::Encryptor::with_recipients(std::iter::once(r)).unwrap();
        let mut ct = Vec::new();
        let mut w = e.wrap_output(&mut ct).unwrap();
        w.write_all(plain).unwrap();
        w.finish().unwrap();
        ct
    }

    #[test]
    fn the_opener_reads_both_writers_at_every_boundary() {
        let id = age::x25519::Identity::generate();
        let r = id.to_public();
        for len in SIZES {
            let plain = sample(len);
            for ct in [encrypt(&plain, &[&r], 16 * CHUNK), age_encrypt(&plain, &r)] {
                assert_eq!(open_all(&ct, &id).unwrap(), plain, "len {len}");
                let mut o = Opener::new(&[&id], std::io::Cursor::new(&ct)).unwrap();
                let mut first = [0u8; 10];
                let n = o.read(&mut first).unwrap();
                assert_eq!(&first[..n], &plain[..n]);
                assert_eq!(o.authenticated_len().unwrap(), len as u64);
            }
        }
    }

    #[test]
    fn the_opener_refuses_every_cut_every_flip_and_the_wrong_key() {
        let id = age::x25519::Identity::generate();
        let r = id.to_public();
        let plain: Vec<u8> = (0..2 * CHUNK + 100).map(|i| (i % 13) as u8).collect();
        let ct = encrypt(&plain, &[&r], CHUNK);
        let payload = ct.len() - payload_size(plain.len() as u64) as usize;
        // Cut anywhere (header, nonce, on and off chunk boundaries).
        let sealed = CHUNK + TAG;
        for cut in [
            0,
            10,
            payload - 20,
            payload - 1,
            payload,
            payload + 5,
            payload + sealed,
            payload + 2 * sealed,
            ct.len() - 1,
        ] {
            assert!(open_all(&ct[..cut], &id).is_err(), "cut at {cut}");
            if cut >= payload {
                let mut o = Opener::new(&[&id], std::io::Cursor::new(&ct[..cut])).unwrap();
                assert!(o.authenticated_len().is_err(), "len after cut at {cut}");
            }
        }
        // Any flipped bit, in the header, its MAC or the payload.
        for at in (0..ct.len())
            .step_by(997)
            .chain([payload - 1, ct.len() - 1])
        {
            let mut bad = ct.clone();
            bad[at] ^= 0x10;
            assert!(open_all(&bad, &id).is_err(), "byte {at} flipped");
        }
        // Bytes after the last chunk.
        let mut longer = ct.clone();
        longer.push(0);
        assert!(open_all(&longer, &id).is_err());
        // The wrong identity fails before any plaintext.
        let other = age::x25519::Identity::generate();
        let e = Opener::new(&[&other], &ct[..]).err().unwrap().to_string();
        assert!(e.contains("No matching keys found"), "{e}");
        // Not age at all.
        let e = Opener::new(&[&id], &b"hello\nworld\n"[..])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not an age file"), "{e}");
        let e = Opener::new(&[&id], &[b'x'; 100_000][..])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("too long"), "{e}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// Whatever the size and the write pattern, the opener gives back
        /// exactly the plaintext; cut anywhere or with any byte changed, it
        /// fails (reading through an error never yields the whole text).
        #[test]
        fn whole_or_refused(
            len in 0usize..(3 * CHUNK + 100),
            piece in 1usize..(2 * CHUNK),
            cut_at in 0.0f64..1.0,
            flip_at in 0.0f64..1.0,
            bit in 0u8..8,
        ) {
            let id = age::x25519::Identity::generate();
            let r = id.to_public();
            let plain = sample(len);
            let mut w = SealWriter::new(&[&r], Vec::new()).unwrap();
            for p in plain.chunks(piece) {
                w.write_all(p).unwrap();
            }
            let ct = w.finish().unwrap();
            proptest::prop_assert_eq!(open_all(&ct, &id).unwrap(), plain.clone());
            let cut = ((ct.len() as f64) * cut_at) as usize;
            proptest::prop_assert!(open_all(&ct[..cut], &id).is_err());
            let mut bad = ct.clone();
            let at = ((ct.len() as f64) * flip_at) as usize;
            bad[at] ^= 1 << bit;
            proptest::prop_assert!(open_all(&bad, &id).is_err());
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
