//! sha256 and blake3 in one pass, computed while the bytes stream.

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

/// Size and checksums of a byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub size: u64,
    pub sha256: String,
    pub blake3: String,
}

/// Both hashers and a byte count, fed by whatever passes through.
#[derive(Clone, Default)]
pub struct Hasher {
    sha256: Sha256,
    blake3: blake3::Hasher,
    size: u64,
}

impl Hasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, buf: &[u8]) {
        self.sha256.update(buf);
        self.blake3.update(buf);
        self.size += buf.len() as u64;
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn finish(self) -> Digests {
        Digests {
            size: self.size,
            sha256: hex(&self.sha256.finalize()),
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
}
