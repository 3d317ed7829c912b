//! Streaming encryption and decryption of one file, with the checksums of
//! both sides computed on the way.
//!
//! Work is spread over threads so ChaCha20-Poly1305 and the hashes overlap:
//! the caller's thread reads and encrypts (or decrypts); when encrypting,
//! one thread checks the plaintext (size, blake3), one hashes the ciphertext
//! (sha256, blake3, both recorded) and one writes it out; when decrypting,
//! one thread checks the plaintext and writes it out. Buffers of 1 MiB
//! travel through bounded channels and come back for reuse, so memory stays
//! flat whatever the size.

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
    /// No hash: the size only.
    Size(u64),
}

impl Hashing {
    fn update(&mut self, buf: &[u8]) {
        match self {
            Hashing::Full(h) => h.update(buf),
            Hashing::Light(h, n) => {
                h.update(buf);
                *n += buf.len() as u64;
            }
            Hashing::Size(n) => *n += buf.len() as u64,
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
            Hashing::Size(size) => Digests {
                size,
                sha256: String::new(),
                blake3: String::new(),
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
    /// Digests of the ciphertext written (sha256 and blake3 empty when not
    /// asked for).
    pub output: Digests,
}

/// A thread that hashes the buffers it receives and passes them on.
fn spawn_relay<'s>(
    s: &'s std::thread::Scope<'s, '_>,
    rx: Receiver<Vec<u8>>,
    next: SyncSender<Vec<u8>>,
    mut h: Hashing,
) -> std::thread::ScopedJoinHandle<'s, Digests> {
    s.spawn(move || {
        for buf in rx {
            h.update(&buf);
            if next.send(buf).is_err() {
                break;
            }
        }
        h.finish()
    })
}

/// Encrypts `input` (named `in_name`) to `out` (named `out_name`). With
/// `expect`, the plaintext must match it (size, blake3) or nothing counts;
/// with `hash_output`, the ciphertext's sha256 and blake3 are computed for
/// the record.
///
/// Four threads share the work so it spreads over the cores: this one reads
/// the plaintext in 1 MiB blocks and seals them (age STREAM, see
/// `pgb_common::seal`); one hashes the plaintext; one hashes the
/// ciphertext; one writes it. A block is sealed only once the next one is
/// read, because the last chunk of the file is sealed differently.
#[allow(clippy::too_many_arguments)]
pub fn encrypt<W: Write + Send>(
    recipients: &Recipients,
    input: &mut dyn Read,
    in_name: &Path,
    out: W,
    out_name: &Path,
    expect: Option<&FileEntry>,
    hash_output: bool,
    progress: &Progress,
) -> Result<Encrypted<W>> {
    let (header, mut sealer) = recipients.begin()?;
    let (pt_tx, pt_rx) = sync_channel::<Vec<u8>>(DEPTH);
    let (pt_back_tx, pt_back) = sync_channel::<Vec<u8>>(2 * DEPTH + 2);
    let (ct_tx, ct_rx) = sync_channel::<Vec<u8>>(DEPTH);
    let (ct_back_tx, ct_back) = sync_channel::<Vec<u8>>(2 * DEPTH + 2);
    let pt_pool = Pool { back: pt_back };
    let ct_pool = Pool { back: ct_back };
    std::thread::scope(|s| {
        // Plaintext: checked against the record, or straight back to the pool.
        let (pt_send, pt_hash) = if expect.is_some() {
            (pt_tx, Some(spawn_hasher(s, pt_rx, pt_back_tx, light())))
        } else {
            drop(pt_rx);
            (pt_back_tx, None)
        };
        // Ciphertext: hashed on its own thread, then written.
        let (ct_send, ct_hash, sink) = if hash_output {
            let (w_tx, w_rx) = sync_channel::<Vec<u8>>(DEPTH);
            let relay = spawn_relay(s, ct_rx, w_tx, Hashing::Full(Hasher::new()));
            let sink = spawn_sink(s, w_rx, ct_back_tx, out, Hashing::Size(0));
            (ct_tx, Some(relay), sink)
        } else {
            let sink = spawn_sink(s, ct_rx, ct_back_tx, out, Hashing::Size(0));
            (ct_tx, None, sink)
        };
        let gone = || Error::msg("a worker thread stopped");
        // The body runs in a closure so that every channel is closed (and
        // the threads end) before they are joined, whatever happened.
        let body = move || -> Result<()> {
            let mut read = |buf: &mut Vec<u8>| -> Result<usize> {
                fill(input, buf).map_err(|e| Error::io("read", in_name, e))
            };
            let mut header = Some(header);
            let mut cur = pt_pool.get();
            read(&mut cur)?;
            loop {
                let mut next = None;
                let last = if cur.len() < BUF {
                    true
                } else {
                    let mut nx = pt_pool.get();
                    let n = read(&mut nx)?;
                    next = Some(nx);
                    n == 0
                };
                progress.add(cur.len() as u64);
                let mut ct = ct_pool.get();
                ct.clear();
                if let Some(h) = header.take() {
                    ct.extend_from_slice(&h);
                }
                sealer.seal_block(&cur, last, &mut ct)?;
                ct_send.send(ct).map_err(|_| gone())?;
                pt_send.send(cur).map_err(|_| gone())?;
                match next {
                    Some(nx) if !last => cur = nx,
                    _ => return Ok(()),
                }
            }
        };
        let result = body();
        let input_digests = pt_hash.map(|h| h.join().expect("hash thread"));
        let output_digests = ct_hash.map(|h| h.join().expect("hash thread"));
        let sunk = sink.join().expect("writer thread");
        // A write error in the sink thread is the cause of a failed send.
        let (out, written) = match (result, sunk) {
            (_, Err(e)) => return Err(Error::io("write", out_name, e)),
            (Err(e), _) => return Err(e),
            (Ok(()), Ok(v)) => v,
        };
        if let (Some(want), Some(got)) = (expect, &input_digests) {
            check_expected(got, want, in_name)?;
        }
        let output = output_digests.unwrap_or(written);
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
            let mut r = identities
                .decrypt(input)
                .map_err(|e| Error::msg(format!("{}: {e}", in_name.display())))?;
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
        // A write error in the sink thread (a full disk) is the cause of a
        // failed send: it is the one to report.
        let (out, output) = match (result, sunk) {
            (_, Err(e)) => return Err(Error::io("write", out_name, e)),
            (Err(e), _) => return Err(e),
            (Ok(()), Ok(v)) => v,
        };
        if let Some(want) = expect {
            check_expected(&output, want, out_name)?;
        }
        Ok(out)
    })
}
