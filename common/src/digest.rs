//! sha256 and blake3 in one pass, computed while the bytes stream; and the
//! one verifying reader every read-back goes through.

use std::io::{self, Read, Write};
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

/// Size and checksums of a byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub size: u64,
    pub sha256: String,
    pub blake3: String,
}

/// Both hashers and a byte count, fed by whatever passes through.
#[derive(Clone)]
pub struct Hasher {
    /// `None` when only blake3 is wanted (see [`Hasher::blake3_only`]).
    sha256: Option<Sha256>,
    blake3: blake3::Hasher,
    size: u64,
}

impl Default for Hasher {
    fn default() -> Self {
        Self::new()
    }
}

impl Hasher {
    pub fn new() -> Self {
        Hasher {
            sha256: Some(Sha256::new()),
            blake3: blake3::Hasher::new(),
            size: 0,
        }
    }

    /// blake3 and the size only; the result's `sha256` is empty. For
    /// read-backs that compare with a record holding both: one 256-bit
    /// cryptographic hash settles it at a third of the cost of both.
    pub fn blake3_only() -> Self {
        Hasher {
            sha256: None,
            ..Self::new()
        }
    }

    pub fn update(&mut self, buf: &[u8]) {
        if let Some(h) = &mut self.sha256 {
            h.update(buf);
        }
        self.blake3.update(buf);
        self.size += buf.len() as u64;
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn finish(self) -> Digests {
        Digests {
            size: self.size,
            sha256: self.sha256.map(|h| hex(&h.finalize())).unwrap_or_default(),
            blake3: self.blake3.finalize().to_hex().to_string(),
        }
    }
}

/// Lower-case hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// A writer that hashes every byte it passes on to `inner`.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Hasher::new(),
        }
    }

    pub fn bytes_written(&self) -> u64 {
        self.hasher.size()
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The inner writer and the digests of what was written.
    pub fn finish(self) -> (W, Digests) {
        (self.inner, self.hasher.finish())
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes everything a reader yields.
pub fn hash_reader(mut r: impl Read) -> io::Result<Digests> {
    let mut h = Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(h.finish()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
    }
}

/// Like [`hash_reader`], with sha256 and blake3 computed on two threads
/// while the next buffer is read, so the slower hash sets the pace instead of
/// the sum of both. Used for re-reading large artifacts.
pub fn hash_reader_parallel(mut r: impl Read) -> io::Result<Digests> {
    use std::sync::mpsc::sync_channel;
    use std::sync::Arc;
    const BUF: usize = 1 << 20;
    let (to_sha, sha_rx) = sync_channel::<Arc<Vec<u8>>>(4);
    let (to_b3, b3_rx) = sync_channel::<Arc<Vec<u8>>>(4);
    std::thread::scope(|s| {
        let sha = s.spawn(move || {
            let mut h = Sha256::new();
            for buf in sha_rx {
                h.update(&buf[..]);
            }
            hex(&h.finalize())
        });
        let b3 = s.spawn(move || {
            let mut h = blake3::Hasher::new();
            for buf in b3_rx {
                h.update(&buf[..]);
            }
            h.finalize().to_hex().to_string()
        });
        let mut size = 0u64;
        let read_result = loop {
            let mut buf = vec![0u8; BUF];
            let mut filled = 0;
            let eof = loop {
                match r.read(&mut buf[filled..]) {
                    Ok(0) => break Ok(true),
                    Ok(n) => {
                        filled += n;
                        if filled == BUF {
                            break Ok(false);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            buf.truncate(filled);
            size += filled as u64;
            let buf = Arc::new(buf);
            if filled > 0 && (to_sha.send(buf.clone()).is_err() || to_b3.send(buf).is_err()) {
                break Err(io::Error::other("hash thread stopped"));
            }
            match eof {
                Ok(true) => break Ok(()),
                Ok(false) => {}
                Err(e) => break Err(e),
            }
        };
        drop(to_sha);
        drop(to_b3);
        let sha256 = sha.join().expect("sha256 thread");
        let blake3 = b3.join().expect("blake3 thread");
        read_result.map(|_| Digests {
            size,
            sha256,
            blake3,
        })
    })
}

/// What a stored file should be: its recorded size and checksums, and the
/// name to use in messages.
#[derive(Debug, Clone)]
pub struct Expected {
    pub shown: String,
    pub size: u64,
    pub sha256: String,
    pub blake3: String,
}

impl Expected {
    /// How `got` differs from what was recorded; `None` when it agrees.
    pub fn mismatch(&self, got: &Digests) -> Option<String> {
        let shown = &self.shown;
        if got.size != self.size {
            Some(format!(
                "{shown}: {} bytes, recorded {}",
                got.size, self.size
            ))
        } else if !got.sha256.is_empty() && got.sha256 != self.sha256 {
            Some(format!(
                "{shown}: sha256 {} differs from the recorded {}",
                got.sha256, self.sha256
            ))
        } else if got.blake3 != self.blake3 {
            Some(format!(
                "{shown}: blake3 {} differs from the recorded {}",
                got.blake3, self.blake3
            ))
        } else {
            None
        }
    }
}

/// Hashes the bytes handed to it on a thread of its own, so the reader that
/// feeds it (and whatever decodes what it reads: zstd, age, tar) goes on
/// while the previous chunk is hashed. On two cores, checking what a
/// restore reads costs its wall time next to nothing; where no thread can
/// be started, it hashes inline.
enum Background {
    Inline(Box<Hasher>),
    Thread {
        /// Bytes gathered until a chunk is worth sending.
        pending: Vec<u8>,
        to_hash: SyncSender<Vec<u8>>,
        /// Chunks hashed already, back for reuse.
        spare: Receiver<Vec<u8>>,
        hasher: std::thread::JoinHandle<Digests>,
    },
}

/// Bytes sent to the hashing thread at a time.
const CHUNK: usize = 256 << 10;

impl Background {
    /// sha256 and blake3 of what is handed over, on a thread of its own
    /// (inline where no thread can be started).
    fn new() -> Background {
        let (to_hash, rx) = sync_channel::<Vec<u8>>(4);
        let (recycle, spare) = channel::<Vec<u8>>();
        let spawned = std::thread::Builder::new()
            .name("pgb-hash".into())
            .spawn(move || {
                let mut h = Hasher::new();
                for buf in rx {
                    h.update(&buf);
                    // The reader may be gone already: nothing to do.
                    let _ = recycle.send(buf);
                }
                h.finish()
            });
        match spawned {
            Ok(hasher) => Background::Thread {
                pending: Vec::with_capacity(CHUNK),
                to_hash,
                spare,
                hasher,
            },
            Err(_) => Background::Inline(Box::default()),
        }
    }

    fn update(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Background::Inline(h) => h.update(buf),
            Background::Thread {
                pending,
                to_hash,
                spare,
                ..
            } => {
                pending.extend_from_slice(buf);
                if pending.len() >= CHUNK {
                    let mut next = spare.try_recv().unwrap_or_default();
                    next.clear();
                    next.reserve(CHUNK);
                    let full = std::mem::replace(pending, next);
                    if to_hash.send(full).is_err() {
                        return Err(io::Error::other("the hashing thread stopped"));
                    }
                }
            }
        }
        Ok(())
    }

    fn finish(self) -> io::Result<Digests> {
        match self {
            Background::Inline(h) => Ok((*h).finish()),
            Background::Thread {
                pending,
                to_hash,
                hasher,
                ..
            } => {
                let sent = pending.is_empty() || to_hash.send(pending).is_ok();
                drop(to_hash);
                match hasher.join() {
                    Ok(d) if sent => Ok(d),
                    _ => Err(io::Error::other("the hashing thread stopped")),
                }
            }
        }
    }
}

struct Verifying<R> {
    inner: R,
    /// `None` once the end was reached.
    hashing: Option<Background>,
    /// Bytes read so far.
    size: u64,
    want: Expected,
    /// Set once the end was reached (or a mismatch seen): the verdict.
    outcome: Option<Result<(), String>>,
}

impl<R: Read> Verifying<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(Err(m)) = &self.outcome {
            return Err(io::Error::new(io::ErrorKind::InvalidData, m.clone()));
        }
        if self.outcome.is_some() {
            return Ok(0);
        }
        let n = loop {
            match self.inner.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r?,
            }
        };
        if n == 0 {
            let d = match self.hashing.take() {
                Some(h) => h.finish()?,
                None => return Err(io::Error::other("the hashing thread stopped")),
            };
            self.outcome = Some(self.want.mismatch(&d).map_or(Ok(()), Err));
            return self.read(buf);
        }
        self.size += n as u64;
        if self.size > self.want.size {
            // Longer than recorded: no need to read on to know.
            self.hashing = None;
            self.outcome = Some(Err(format!(
                "{}: more than the recorded {} bytes",
                self.want.shown, self.want.size
            )));
            return self.read(buf);
        }
        match &mut self.hashing {
            Some(h) => h.update(&buf[..n])?,
            None => return Err(io::Error::other("the hashing thread stopped")),
        }
        Ok(n)
    }
}

/// A reader that hashes every byte of a stored file as it streams and
/// fails at the end of the stream (never with a clean end of file) when the
/// bytes differ from the record. Hand it to whatever decodes the file; the
/// matching [`Verification`] settles the question even when that consumer
/// stops before the end (a tar reader stops at its end-of-archive blocks, a
/// zstd decoder at its last frame).
pub struct VerifyingReader<R> {
    shared: Arc<Mutex<Verifying<R>>>,
}

/// The other end of a [`VerifyingReader`]: reads what the consumer left and
/// says whether the whole file matched its record.
pub struct Verification<R> {
    shared: Arc<Mutex<Verifying<R>>>,
}

/// A verifying reader over `inner` and the handle that checks it.
///
/// The bytes are compared with the record's blake3 (and size); sha256 is
/// computed and compared too only when the record holds no blake3. Both
/// are 256-bit cryptographic hashes: either one catches any damage, and
/// blake3 costs a third of sha256 (pgb-verify --checksums compares both).
pub fn verifying<R: Read>(inner: R, want: Expected) -> (VerifyingReader<R>, Verification<R>) {
    // blake3 alone is hashed where the bytes are read: handing them to a
    // thread costs a copy of every byte and a wake-up per chunk, about
    // what blake3 itself costs (measured on restores); sha256, three times
    // dearer, is worth a thread.
    let hashing = if want.blake3.is_empty() {
        Background::new()
    } else {
        Background::Inline(Box::new(Hasher::blake3_only()))
    };
    let shared = Arc::new(Mutex::new(Verifying {
        inner,
        hashing: Some(hashing),
        size: 0,
        want,
        outcome: None,
    }));
    (
        VerifyingReader {
            shared: shared.clone(),
        },
        Verification { shared },
    )
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .read(buf)
    }
}

impl<R: Read> Verification<R> {
    /// Reads the rest of the file (what the consumer did not) and compares.
    /// `Ok(Err(why))` when the stored bytes differ from the record;
    /// `Err` when the file could not be read to its end.
    pub fn finish(&self) -> io::Result<Result<(), String>> {
        let mut v = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let mut buf = vec![0u8; 1 << 16];
        loop {
            if let Some(o) = &v.outcome {
                return Ok(o.clone());
            }
            // A mismatch found by this read is an error from it, and the
            // outcome says it.
            if let Err(e) = v.read(&mut buf) {
                if v.outcome.is_none() {
                    return Err(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        let d = hash_reader(&b"abc"[..]).unwrap();
        assert_eq!(d.size, 3);
        assert_eq!(
            d.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            d.blake3,
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
    }

    #[test]
    fn parallel_hashing_agrees() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        assert_eq!(
            hash_reader_parallel(&data[..]).unwrap(),
            hash_reader(&data[..]).unwrap()
        );
        assert_eq!(
            hash_reader_parallel(&b""[..]).unwrap(),
            hash_reader(&b""[..]).unwrap()
        );
    }

    #[test]
    fn writer_hashes_what_it_writes() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"ab").unwrap();
        w.write_all(b"c").unwrap();
        let (out, d) = w.finish();
        assert_eq!(out, b"abc");
        assert_eq!(d, hash_reader(&b"abc"[..]).unwrap());
    }

    fn expect(data: &[u8]) -> Expected {
        let d = hash_reader(data).unwrap();
        Expected {
            shown: "f".into(),
            size: d.size,
            sha256: d.sha256,
            blake3: d.blake3,
        }
    }

    #[test]
    fn verifying_reader_fails_at_the_end_on_any_damage() {
        // Several chunks of the hashing thread, and a part of one.
        let good: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
        let want = expect(&good);
        // Untouched: reads whole, ends cleanly, and the check agrees.
        let (mut r, check) = verifying(&good[..], want.clone());
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, good);
        assert_eq!(check.finish().unwrap(), Ok(()));
        let mut flipped = good.clone();
        flipped[600_000] ^= 1;
        let mut appended = good.clone();
        appended.push(0);
        let mut zeroed = good.clone();
        zeroed[..4096].fill(0);
        for (what, bad, msg) in [
            ("flip", flipped, "blake3"),
            ("truncate", good[..750_000].to_vec(), "bytes, recorded"),
            ("append", appended, "more than the recorded"),
            ("zero", zeroed, "blake3"),
        ] {
            let (mut r, check) = verifying(&bad[..], want.clone());
            let e = r.read_to_end(&mut Vec::new()).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{what}");
            assert!(e.to_string().starts_with("f: "), "{what}: {e}");
            let why = check.finish().unwrap().unwrap_err();
            assert!(why.contains(msg), "{what}: {why}");
            // A consumer that stops early: the check reads the rest.
            let (mut r, check) = verifying(&bad[..], want.clone());
            r.read_exact(&mut [0u8; 10]).unwrap();
            assert!(check.finish().unwrap().is_err(), "{what}");
        }
    }
}
