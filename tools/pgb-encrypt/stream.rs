//! Streaming encryption and decryption of one file, with the checksums of
//! both sides computed on the way.
//!
//! Work is spread over threads so age's ChaCha20-Poly1305 and the hashes
//! overlap: the caller's thread reads and encrypts (or decrypts); when
//! encrypting, one thread checks the plaintext (size, blake3) and one hashes
//! the ciphertext (sha256, blake3, both recorded) and writes it out; when
//! decrypting, one thread checks the plaintext and writes it out. Buffers of 1 MiB travel through bounded
//! channels and come back for reuse, so memory stays flat whatever the size.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use pgb_common::crypt::{explain, Identities, Recipients};
use pgb_common::digest::{Digests, Hasher};
use pgb_common::error::{Error, Result};
use pgb_common::record::FileEntry;
use pgb_common::term::Progress;

const BUF: usize = 1 << 20;
const DEPTH: usize = 4;

/// A pool of reusable buffers: buffers come back through `back`.
struct Pool {
    back: Receiver<Vec<u8>>,
}

impl Pool {
    /// A buffer as it came back (its bytes are overwritten by the next
    /// fill, never zeroed again), or a new one.
    fn get(&self) -> Vec<u8> {
        self.back
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BUF))
    }
}

/// Reads until `buf` holds BUF bytes or the input ends.
fn fill(r: &mut dyn Read, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.resize(BUF, 0);
    let mut filled = 0;
    while filled < BUF {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                buf.truncate(filled);
                return Err(e);
            }
        }
    }
    buf.truncate(filled);
    Ok(filled)
}

/// Hashes bytes either fully (sha256 and blake3, for what is recorded) or
/// lightly (size and blake3, to check bytes against a record: blake3 is a
/// 256-bit cryptographic hash, so a match proves the bytes are the recorded
/// ones, at a fraction of sha256's cost).
enum Hashing {
    Full(Hasher),
    Light(blake3::Hasher, u64),
}

impl Hashing {
    fn update(&mut self, buf: &[u8]) {
        match self {
            Hashing::Full(h) => h.update(buf),
            Hashing::Light(h, n) => {
                h.update(buf);
                *n += buf.len() as u64;
            }
        }
    }

    /// The digests; `sha256` is empty when hashed lightly.
    fn finish(self) -> Digests {
        match self {
            Hashing::Full(h) => h.finish(),
            Hashing::Light(h, size) => Digests {
                size,
                sha256: String::new(),
                blake3: h.finalize().to_hex().to_string(),
            },
        }
    }
}

fn light() -> Hashing {
    Hashing::Light(blake3::Hasher::new(), 0)
}

/// A thread that hashes the buffers it receives and hands them back.
fn spawn_hasher<'s>(
    s: &'s std::thread::Scope<'s, '_>,
    rx: Receiver<Vec<u8>>,
    back: SyncSender<Vec<u8>>,
    mut h: Hashing,
) -> std::thread::ScopedJoinHandle<'s, Digests> {
    s.spawn(move || {
        for buf in rx {
            h.update(&buf);
            let _ = back.try_send(buf);
        }
        h.finish()
    })
}

/// A thread that hashes and writes the buffers it receives. On a write error
/// it stops (the sender then sees a closed channel) and returns the error.
fn spawn_sink<'s, W: Write + Send + 's>(
    s: &'s std::thread::Scope<'s, '_>,
    rx: Receiver<Vec<u8>>,
    back: SyncSender<Vec<u8>>,
    mut out: W,
    mut h: Hashing,
) -> std::thread::ScopedJoinHandle<'s, io::Result<(W, Digests)>> {
    s.spawn(move || {
        for buf in rx {
            h.update(&buf);
            out.write_all(&buf)?;
            let _ = back.try_send(buf);
        }
        out.flush()?;
        Ok((out, h.finish()))
    })
}

/// A `Write` that gathers bytes into 1 MiB buffers and sends them on.
struct ChanWriter {
    tx: SyncSender<Vec<u8>>,
    pool: Pool,
    buf: Vec<u8>,
}

impl ChanWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut next = self.pool.get();
        next.clear();
        let full = std::mem::replace(&mut self.buf, next);
        self.tx
            .send(full)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "writer thread stopped"))
    }
}

impl Write for ChanWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = BUF - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == BUF {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Checks the digests of what was read against the record's entry (sha256
/// only when it was computed).
pub fn check_expected(got: &Digests, want: &FileEntry, what: &Path) -> Result<()> {
    let mut bad = Vec::new();
    if got.size != want.size {
        bad.push(format!("size {} (recorded {})", got.size, want.size));
    }
    if !got.sha256.is_empty() && got.sha256 != want.sha256 {
        bad.push(format!("sha256 {} (recorded {})", got.sha256, want.sha256));
    }
    if got.blake3 != want.blake3 {
        bad.push(format!("blake3 {} (recorded {})", got.blake3, want.blake3));
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(Error::msg(format!(
            "{}: does not match its record: {}",
            what.display(),
            bad.join(", ")
        )))
    }
}

/// What one encrypted file came to.
pub struct Encrypted<W> {
    pub out: W,
    /// Digests of the ciphertext written.
    pub output: Digests,
}

/// Encrypts `input` (named `in_name`) to `out` (named `out_name`), hashing
/// both sides. With `expect`, the plaintext must match it or nothing counts.
pub fn encrypt<W: Write + Send>(
    recipients: &Recipients,
    input: &mut dyn Read,
    in_name: &Path,
    out: W,
    out_name: &Path,
    expect: Option<&FileEntry>,
    progress: &Progress,
) -> Result<Encrypted<W>> {
    let (pt_tx, pt_rx) = sync_channel::<Vec<u8>>(DEPTH);
    let (pt_back_tx, pt_back) = sync_channel::<Vec<u8>>(DEPTH + 2);
    let (ct_tx, ct_rx) = sync_channel::<Vec<u8>>(DEPTH);
    let (ct_back_tx, ct_back) = sync_channel::<Vec<u8>>(DEPTH + 2);
    let pt_pool = Pool { back: pt_back };
    std::thread::scope(|s| {
        let pt_hash = spawn_hasher(s, pt_rx, pt_back_tx, light());
        let sink = spawn_sink(s, ct_rx, ct_back_tx, out, Hashing::Full(Hasher::new()));
        let chan = ChanWriter {
            tx: ct_tx,
            pool: Pool { back: ct_back },
            buf: Vec::with_capacity(BUF),
        };
        // The body runs in a closure so that every channel is closed (and
        // the threads end) before they are joined, whatever happened.
        let body = move || -> Result<()> {
            let mut w = recipients.encrypt(chan)?;
            loop {
                let mut buf = pt_pool.get();
                let n = fill(input, &mut buf).map_err(|e| Error::io("read", in_name, e))?;
                if n == 0 {
                    break;
                }
                progress.add(n as u64);
                if let Err(e) = w.write_all(&buf) {
                    return Err(Error::io("write", out_name, e));
                }
                if pt_tx.send(buf).is_err() {
                    return Err(Error::msg("hash thread stopped"));
                }
            }
            let mut chan = w.finish().map_err(|e| Error::io("write", out_name, e))?;
            chan.send().map_err(|e| Error::io("write", out_name, e))?;
            Ok(())
        };
        let result = body();
        let input_digests = pt_hash.join().expect("hash thread");
        let sunk = sink.join().expect("writer thread");
        // A write error in the sink thread is the cause of a failed send.
        let (out, output) = match (result, sunk) {
            (_, Err(e)) => return Err(Error::io("write", out_name, e)),
            (Err(e), _) => return Err(e),
            (Ok(()), Ok(v)) => v,
        };
        if let Some(want) = expect {
            check_expected(&input_digests, want, in_name)?;
        }
        Ok(Encrypted { out, output })
    })
}

/// Decrypts `input` to `out`, hashing the plaintext; with `expect`, the
/// plaintext must match it. A wrong identity, a truncated or an altered
/// ciphertext is an error, never short or wrong output that counts.
pub fn decrypt<W: Write + Send>(
    identities: &Identities,
    input: &mut dyn Read,
    in_name: &Path,
    out: W,
    out_name: &Path,
    expect: Option<&FileEntry>,
    progress: &Progress,
) -> Result<W> {
    let (tx, rx) = sync_channel::<Vec<u8>>(DEPTH);
    let (back_tx, back) = sync_channel::<Vec<u8>>(DEPTH + 2);
    let pool = Pool { back };
    std::thread::scope(|s| {
        let sink = spawn_sink(s, rx, back_tx, out, light());
        let body = move || -> Result<()> {
            let buffered = io::BufReader::with_capacity(BUF, input);
            let mut r = identities.decrypt_buffered(buffered).map_err(|e| {
                Error::msg(format!(
                    "{}: {}",
                    in_name.display(),
                    e.to_string().replace("age: ", "age header: ")
                ))
            })?;
            loop {
                let mut buf = pool.get();
                let n = fill(&mut r, &mut buf)
                    .map_err(|e| Error::msg(format!("{}: {}", in_name.display(), explain(&e))))?;
                if n == 0 {
                    break;
                }
                progress.add(n as u64);
                if tx.send(buf).is_err() {
                    return Err(Error::msg("writer thread stopped"));
                }
            }
            drop(tx);
            Ok(())
        };
        let result = body();
        let sunk = sink.join().expect("writer thread");
        let (out, output) = match (result, sunk) {
            (Err(e), _) => return Err(e),
            (_, Err(e)) => return Err(Error::io("write", out_name, e)),
            (Ok(()), Ok(v)) => v,
        };
        if let Some(want) = expect {
            check_expected(&output, want, out_name)?;
        }
        Ok(out)
    })
}
