//! Copies to a local directory: temp file, fsync, re-read (through the
//! page cache, or from the disk with [`Readback::Disk`]), rename without
//! replacing, fsync the directory.

use std::fs::File;
use std::io::{self, Read, Write};

use std::path::Path;

use super::{check_digests, Copied, Readback};
use crate::digest::{hash_reader_parallel, Digests};
use crate::error::{Error, IoContext, Result};
use crate::fs::{create_dir_all_durable, sync_range, AtomicFile};

const BUF: usize = 8 << 20;

/// Asks the kernel to drop `f`'s cached pages (after fsync they are clean),
/// so the next read comes from the disk.
fn drop_cache(f: &File) {
    use std::os::fd::AsRawFd;
    // Advice only: when the kernel ignores it, the re-read comes from the cache.
    let _ = nix::fcntl::posix_fadvise(
        f.as_raw_fd(),
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
}

/// Hashes `path`: as it is on the disk now ([`Readback::Disk`]: its pages
/// dropped from the cache first) or as the kernel serves it.
fn hash_copy(path: &Path, mode: Readback) -> Result<Digests> {
    let f = File::open(path).ctx("open", path)?;
    if mode == Readback::Disk {
        drop_cache(&f);
    }
    hash_reader_parallel(io::BufReader::with_capacity(BUF, f)).ctx("read back", path)
}

/// The copy as the verifier sees it: bytes up to the end of the ranges
/// reported written back, read in order from the disk. With `direct`
/// (O_DIRECT) the reads bypass the page cache and are 4 KiB-aligned;
/// otherwise the writer drops each range from the cache before reporting it.
struct ReadBack {
    file: File,
    direct: bool,
    rx: std::sync::mpsc::Receiver<(u64, u64)>,
    avail: u64,
    closed: bool,
    pos: u64,
    buf: Vec<u8>,
    start: usize,
    have: (usize, usize),
}

const ALIGN: u64 = 4096;

impl ReadBack {
    fn new(
        file: File,
        direct: bool,
        rx: std::sync::mpsc::Receiver<(u64, u64)>,
        chunk: usize,
    ) -> ReadBack {
        let buf = vec![0u8; chunk + ALIGN as usize];
        let start = buf.as_ptr().align_offset(ALIGN as usize);
        ReadBack {
            file,
            direct,
            rx,
            avail: 0,
            closed: false,
            pos: 0,
            buf,
            start,
            have: (0, 0),
        }
    }

    /// Reads the next block into the buffer; false at the end.
    fn fill(&mut self) -> io::Result<bool> {
        use std::os::unix::fs::FileExt;
        let ready = |s: &ReadBack| {
            let n = s.avail - s.pos;
            if s.direct && !s.closed {
                n / ALIGN * ALIGN
            } else {
                n
            }
        };
        while ready(self) == 0 {
            if self.closed {
                return Ok(false);
            }
            match self.rx.recv() {
                Ok((o, l)) => self.avail = self.avail.max(o + l),
                Err(_) => self.closed = true,
            }
        }
        let chunk = (self.buf.len() - ALIGN as usize) as u64;
        let mut len = ready(self).min(chunk);
        let want = len;
        if self.direct {
            len = len.div_ceil(ALIGN) * ALIGN;
        }
        let block = &mut self.buf[self.start..self.start + len as usize];
        let mut got = 0usize;
        while (got as u64) < want {
            let n = self
                .file
                .read_at(&mut block[got..], self.pos + got as u64)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the copy is shorter than what was written",
                ));
            }
            got += n;
            if self.direct && got as u64 % ALIGN != 0 {
                break;
            }
        }
        let got = (got as u64).min(want) as usize;
        self.pos += got as u64;
        self.have = (self.start, self.start + got);
        Ok(true)
    }

    /// Size and blake3 of everything read back, hashed straight from the
    /// read buffer.
    fn blake3(mut self) -> io::Result<(u64, String)> {
        let mut h = blake3::Hasher::new();
        while self.fill()? {
            h.update(&self.buf[self.have.0..self.have.1]);
            self.have.0 = self.have.1;
        }
        Ok((self.pos, h.finalize().to_hex().to_string()))
    }
}

impl Read for ReadBack {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.have.0 == self.have.1 && !self.fill()? {
            return Ok(0);
        }
        let n = out.len().min(self.have.1 - self.have.0);
        out[..n].copy_from_slice(&self.buf[self.have.0..self.have.0 + n]);
        self.have.0 += n;
        Ok(n)
    }
}

/// Tells the kernel `f` is read sequentially (a larger readahead), as cp does.
fn sequential(f: &File) {
    use std::os::fd::AsRawFd;
    let _ = nix::fcntl::posix_fadvise(
        f.as_raw_fd(),
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL,
    );
}

fn drop_range(f: &File, off: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let _ = nix::fcntl::posix_fadvise(
        f.as_raw_fd(),
        off as i64,
        len as i64,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
}

/// Ranges written but not yet handed to the verifier.
const LAG: usize = 32;

/// Copies `src` into the temp file and verifies it from the disk in one
/// pipeline: each range written is pushed to the device
/// (`sync_file_range`), dropped from the page cache once it is there, and
/// re-read and hashed by a verifier thread while later ranges are written.
/// Then fsync. Returns the digests of the bytes read back.
fn copy_and_read_back(
    input: &mut File,
    src: &Path,
    out: &mut AtomicFile,
    expect_size: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Digests> {
    let temp = out.temp_path().to_path_buf();
    // O_DIRECT where the file system has it (not tmpfs): the re-read
    // bypasses the page cache without dropping it.
    let (reader, direct) = {
        use std::os::unix::fs::OpenOptionsExt;
        match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(&temp)
        {
            Ok(f) => (f, true),
            Err(_) => (File::open(&temp).ctx("open", &temp)?, false),
        }
    };
    let (tx, rx) = std::sync::mpsc::channel::<(u64, u64)>();
    let verifier =
        std::thread::spawn(move || hash_reader_parallel(ReadBack::new(reader, direct, rx, BUF)));
    let result = (|| -> Result<()> {
        let mut buf = Vec::new();
        let mut in_kernel = true;
        let mut pending = std::collections::VecDeque::new();
        let mut off = 0u64;
        loop {
            // The kernel copies (no trip through user space) when it can;
            // otherwise read and write.
            let mut n = 0;
            if in_kernel {
                match crate::fs::copy_range(input, out.file(), BUF) {
                    Ok(k) => n = k,
                    Err(e) if crate::fs::kernel_cannot_copy(&e) => in_kernel = false,
                    Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                        return Err(Error::io("write", &temp, e))
                    }
                    Err(e) => return Err(Error::io("copy", &temp, e)),
                }
            }
            if !in_kernel {
                buf.resize(BUF, 0);
                n = crate::fs::read_full(input, &mut buf).ctx("read", src)?;
                out.write_all(&buf[..n]).ctx("write", &temp)?;
            }
            if n == 0 {
                break;
            }
            progress(n as u64);
            let f = out.file();
            sync_range(f, off, n as u64, false).ctx("write back", &temp)?;
            pending.push_back((off, n as u64));
            off += n as u64;
            if pending.len() > LAG {
                let (o, l) = pending.pop_front().expect("not empty");
                sync_range(f, o, l, true).ctx("write back", &temp)?;
                if !direct {
                    drop_range(f, o, l);
                }
                let _ = tx.send((o, l));
            }
        }
        if off != expect_size {
            return Err(Error::msg(format!(
                "copy: {}: {off} bytes read where the record says {expect_size}: the source changed",
                src.display(),
            )));
        }
        let f = out.file();
        f.sync_all().ctx("fsync", &temp)?;
        for (o, l) in pending {
            if !direct {
                drop_range(f, o, l);
            }
            let _ = tx.send((o, l));
        }
        Ok(())
    })();
    drop(tx);
    let digests = verifier
        .join()
        .map_err(|_| Error::msg("verifier thread panicked"))?;
    result?;
    digests.ctx("read back", &temp)
}

/// Blocks of the default pipeline: small enough that a block is still in
/// the CPU cache when it is written and hashed, or read back and hashed.
const BLOCK: usize = 1 << 20;
/// Source blocks in flight between the copying thread and the sha256 one.
const BLOCKS: usize = 16;
/// Writeback is started in ranges of this size, each handed to the
/// verifier then.
const RANGE: u64 = 8 << 20;

/// The default copy ([`Readback::Cache`]), three stages on their own
/// threads: (1) the source is read in blocks and each is written to the temp
/// file, writeback started range by range, then fsync; (2) each block read
/// is hashed with sha256 while the next is read and written, and the whole
/// compared with the record, so a source that no longer matches is never
/// published; (3) each range, once completely written, is read back through
/// the page cache (the last one after fsync) and hashed with blake3. Nothing
/// writes a range of the temp file after it is handed to the verifier, and
/// fsync comes before the result counts, so the bytes read back are the
/// bytes fsync made durable (as the kernel holds them; `--verify=disk`
/// reads them from the device).
/// Returns the size and sha256 of the source as read and the blake3 of the
/// copy as read back, for [`check_digests`].
fn copy_hashing_source(
    input: &mut File,
    src: &Path,
    out: &mut AtomicFile,
    expect: &Digests,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Digests> {
    use sha2::{Digest, Sha256};
    use std::sync::mpsc::{channel, sync_channel};
    let temp = out.temp_path().to_path_buf();
    let reader = File::open(&temp).ctx("open", &temp)?;
    let (to_verifier, ranges) = channel::<(u64, u64)>();
    let (free_tx, free_rx) = sync_channel::<Vec<u8>>(BLOCKS);
    for _ in 0..BLOCKS {
        let _ = free_tx.send(vec![0u8; BLOCK]);
    }
    let (to_sha, blocks) = sync_channel::<(Vec<u8>, usize)>(BLOCKS);
    let (copied, sha256, readback) = std::thread::scope(|s| {
        let sha = s.spawn(move || {
            let mut h = Sha256::new();
            for (b, n) in blocks {
                h.update(&b[..n]);
                let _ = free_tx.send(b);
            }
            crate::digest::hex(&h.finalize())
        });
        let verifier = s.spawn(move || ReadBack::new(reader, false, ranges, BLOCK).blake3());
        let copied = (|| -> Result<u64> {
            sequential(input);
            let (mut off, mut started) = (0u64, 0u64);
            loop {
                let mut buf = free_rx
                    .recv()
                    .map_err(|_| Error::msg("sha256 thread stopped"))?;
                let n = crate::fs::read_full(input, &mut buf).ctx("read", src)?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n]).ctx("write", &temp)?;
                to_sha
                    .send((buf, n))
                    .map_err(|_| Error::msg("sha256 thread stopped"))?;
                progress(n as u64);
                off += n as u64;
                if off - started >= RANGE {
                    // Writeback starts now, so fsync has little left to do;
                    // the range is complete and read back while the next
                    // ones are copied.
                    let f = out.file();
                    sync_range(f, started, off - started, false).ctx("write back", &temp)?;
                    let _ = to_verifier.send((started, off - started));
                    started = off;
                }
            }
            out.file().sync_all().ctx("fsync", &temp)?;
            let _ = to_verifier.send((started, off - started));
            Ok(off)
        })();
        drop(to_sha);
        drop(to_verifier);
        let sha256 = sha.join();
        let readback = verifier.join();
        (copied, sha256, readback)
    });
    let size = copied?;
    let sha256 = sha256.map_err(|_| Error::msg("sha256 thread panicked"))?;
    let (read_back, blake3) = readback
        .map_err(|_| Error::msg("verifier thread panicked"))?
        .ctx("read back", &temp)?;
    if size != expect.size || sha256 != expect.sha256 {
        return Err(Error::msg(format!(
            "copy: {}: {size} bytes with sha256 {sha256} where the record says {} bytes \
             with sha256 {}: the source changed or is damaged; not shipped",
            src.display(),
            expect.size,
            expect.sha256,
        )));
    }
    if read_back != size {
        return Err(Error::msg(format!(
            "verify: {}: {read_back} bytes read back where {size} were written",
            temp.display()
        )));
    }
    Ok(Digests {
        size,
        sha256,
        blake3,
    })
}

pub(super) fn put_file(
    root: &Path,
    src: &Path,
    rel: &str,
    expect: &Digests,
    progress: &(dyn Fn(u64) + Sync),
    mode: Readback,
) -> Result<Copied> {
    let target = root.join(rel);
    let url = target.display().to_string();
    if let Some(c) = existing(&target, expect, mode)? {
        return Ok(c);
    }
    create_dir_all_durable(target.parent().unwrap_or(root))?;
    let mut input = File::open(src).ctx("open", src)?;
    let mut out = AtomicFile::create(&target)?;
    let got = match mode {
        Readback::Cache => copy_hashing_source(&mut input, src, &mut out, expect, progress)?,
        Readback::Disk => copy_and_read_back(&mut input, src, &mut out, expect.size, progress)?,
    };
    check_digests(&url, &got, expect, false)?;
    match out.commit() {
        Ok(()) => Ok(Copied {
            existed: false,
            verified: mode.label(),
        }),
        // Someone else published it meanwhile: the same rule as before.
        Err(e) => match existing(&target, expect, mode)? {
            Some(c) => Ok(c),
            None => Err(e),
        },
    }
}

/// When `target` exists: Ok(Some) if it holds the expected bytes, an error
/// if it holds others (kept as it is).
fn existing(target: &Path, expect: &Digests, mode: Readback) -> Result<Option<Copied>> {
    match std::fs::metadata(target) {
        Ok(m) if m.is_file() => {
            let url = target.display().to_string();
            if m.len() == expect.size {
                let got = hash_copy(target, mode)?;
                if check_digests(&url, &got, expect, false).is_ok() {
                    return Ok(Some(Copied {
                        existed: true,
                        verified: mode.label(),
                    }));
                }
            }
            Err(Error::msg(format!(
                "copy: {url}: exists with different content; kept, not overwritten"
            )))
        }
        Ok(_) => Err(Error::msg(format!(
            "copy: {}: exists and is not a regular file",
            target.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("stat", target, e)),
    }
}

pub(super) fn verify(
    root: &Path,
    rel: &str,
    expect: &Digests,
    mode: Readback,
) -> Result<&'static str> {
    let p = root.join(rel);
    let got = hash_copy(&p, mode)?;
    check_digests(&p.display().to_string(), &got, expect, false)?;
    Ok(mode.label())
}
