//! `pgb-wal get`: fetch one WAL file for restore_command.
//!
//! Exit statuses are chosen for PostgreSQL, which reads any status from 1 to
//! 125 as "not in the archive" (and then ends recovery, or falls back to
//! streaming), and aborts recovery on a status above 125: "not in the
//! archive" is 1; a real failure is [`FATAL`], so that an unmounted archive,
//! a corrupt or undecryptable file never ends a point-in-time recovery early
//! as if the archive were exhausted.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::Path;

use pgb_common::crypt::Identities;
use pgb_common::error::{Error, IoContext, Result};
use pgb_common::fs::read_full;
use pgb_common::term::warn;
use pgb_common::walhdr::{
    check_first_page, classify, segno_of, valid_seg_size, PageHeader, WalFile,
};
use pgb_common::AtomicFile;

use crate::cli::GetArgs;
use pgb_common::dest::Destination;
use pgb_common::walarchive::{
    self as archive, Algos, Found, HashReader, Hashes, MultiHasher, Recorded,
};

/// Exit status of a real failure of `get`: above 125, so PostgreSQL aborts
/// recovery instead of taking it for the end of the archive.
pub const FATAL: u8 = 255;

/// How a `get` ended.
pub enum Outcome {
    Fetched,
    NotFound,
}

pub fn run(args: &GetArgs) -> Result<Outcome> {
    let name = &args.name;
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(Error::Usage(format!("{name:?}: not a WAL file name")));
    }
    let archives = args
        .archive
        .iter()
        .map(|a| Destination::parse_url(a))
        .collect::<Result<Vec<_>>>()?;
    let identities = if args.identity.is_empty() {
        None
    } else {
        Some(Identities::load(&args.identity)?)
    };
    let mut unasked = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    for dest in &archives {
        // An archive that cannot answer (an unmounted disk, a host down)
        // is skipped; it must not end recovery as if the archive were
        // simply exhausted, so it counts below.
        let found = match locate(dest, name) {
            Ok(f) => f,
            Err(e) => {
                warn(format!(
                    "get: {}: skipped, could not be asked: {e}",
                    dest.root_url()
                ));
                unasked.push(dest.root_url());
                continue;
            }
        };
        if let Some((found, recorded, reader)) = found {
            // A copy that is damaged (or cannot be read whole) is passed
            // over for the next archive's: that is what several archives
            // are for. Nothing reaches PostgreSQL unless it checked out.
            match fetch(
                dest,
                &found,
                name,
                recorded,
                reader,
                identities.as_ref(),
                &args.dest,
            ) {
                Ok(()) => {
                    if !failed.is_empty() {
                        warn(format!(
                            "get: {name}: fetched from {} after {} other cop{} failed; replace the bad one: {}",
                            dest.root_url(),
                            failed.len(),
                            if failed.len() == 1 { "y" } else { "ies" },
                            failed.join("; ")
                        ));
                    }
                    return Ok(Outcome::Fetched);
                }
                Err(e @ Error::Usage(_)) => return Err(e),
                Err(e) => {
                    if archives.len() > 1 {
                        warn(format!(
                            "get: {}: {e}; trying the next archive",
                            dest.root_url()
                        ));
                    }
                    failed.push(e.to_string());
                }
            }
        }
    }
    if !failed.is_empty() {
        return Err(Error::msg(if failed.len() == 1 {
            failed.remove(0)
        } else {
            format!(
                "get: {name}: no archive holds a good copy: {}",
                failed.join("; ")
            )
        }));
    }
    if !unasked.is_empty() {
        return Err(Error::msg(format!(
            "get: {name}: not in the archives that answered, and {} could not be asked, so it \
             may be there: {}",
            unasked.len(),
            unasked.join(", ")
        )));
    }
    warn(format!("get: {name}: not in the archive"));
    Ok(Outcome::NotFound)
}

/// The stored form of `name` in `dest` and its checksum file, or `None`
/// when the archive answered that it holds neither form.
type Located = (Found, Recorded, Option<Box<dyn Read + Send>>);

fn locate(dest: &Destination, name: &str) -> Result<Option<Located>> {
    if let Destination::Dir(dir) = dest {
        let md = fs::metadata(dir).ctx("archive", dir)?;
        if !md.is_dir() {
            return Err(Error::io(
                "archive",
                dir,
                io::Error::other("not a directory"),
            ));
        }
        let Some(s) = archive::find(dir, name)? else {
            return Ok(None);
        };
        let size = fs::symlink_metadata(&s.path).map(|m| m.len()).unwrap_or(0);
        let recorded = archive::load_checksums(dir, name)?;
        return Ok(Some((
            Found {
                file_name: s.file_name,
                zst: s.zst,
                age: s.age,
                size,
            },
            recorded,
            None,
        )));
    }
    // One request or session for the file and its checksum file.
    let forms: Vec<(String, bool, bool)> =
        [(false, false), (true, false), (false, true), (true, true)]
            .into_iter()
            .map(|(z, a)| (archive::stored_name(name, z, a), z, a))
            .collect();
    let names: Vec<&str> = forms.iter().map(|f| f.0.as_str()).collect();
    let side = format!("{name}{}", archive::CHECKSUM_SUFFIX);
    let Some(o) = dest.open_first(&names, &side)? else {
        return Ok(None);
    };
    let (_, zst, age) = forms
        .iter()
        .find(|f| f.0 == o.rel)
        .cloned()
        .expect("one of the candidates");
    Ok(Some((
        Found {
            file_name: o.rel,
            zst,
            age,
            size: o.size,
        },
        archive::parse_recorded(o.side, name),
        Some(o.reader),
    )))
}

/// The first page and the size of what was written.
struct Written {
    first_page: Vec<u8>,
    size: u64,
    hashes: Hashes,
}

/// Decodes the stored file (decrypt, then decompress) as it streams from
/// the archive into a temp file beside `dest`, checks it, and renames it
/// into place.
fn fetch(
    archive_dest: &Destination,
    src: &Found,
    name: &str,
    recorded: Recorded,
    reader: Option<Box<dyn Read + Send>>,
    ids: Option<&Identities>,
    dest: &Path,
) -> Result<()> {
    let shown = archive_dest.url_of(&src.file_name);
    let path = Path::new(&shown);
    // What the checksum file records is compared: blake3 alone when it is
    // there, else sha256; nothing without a checksum file (or with a
    // damaged one, an error below whatever is read). The stored bytes are
    // hashed apart from the plaintext only when they differ from it.
    let algos = match &recorded {
        Recorded::Present(c) => c.cheapest(),
        Recorded::Absent | Recorded::Bad(_) => Algos::NONE,
    };
    let local = matches!(archive_dest, Destination::Dir(_)) && reader.is_none();
    let (written, stored, mut out) = if local && !src.zst && !src.age {
        // A plain file in a directory: copied by the kernel, and what was
        // written hashed where it lies.
        let f = File::open(path).ctx("open", path)?;
        let mut out = AtomicFile::create(dest)?;
        let temp = out.temp_path().to_path_buf();
        let w = copy_local(&f, &mut out, algos).map_err(|e| match e {
            CopyError::Read(e) => Error::io("read", path, e),
            CopyError::Write(e) => Error::io("write", &temp, e),
        })?;
        let stored = w.hashes.clone();
        (w, stored, out)
    } else {
        decode(archive_dest, src, path, algos, reader, ids, dest)?
    };
    // A segment that is visibly not the one asked for (zero-filled, cut
    // short, renamed) is named as such; anything else wrong is for the
    // checksum file to find.
    if let Some((WalFile::Segment { tli, log, seg }, false)) = classify(name) {
        check_segment(name, tli, log, seg, &written, path)?;
    }
    let sums_path = archive_dest.url_of(&format!("{name}{}", archive::CHECKSUM_SUFFIX));
    match recorded {
        Recorded::Absent => {}
        Recorded::Bad(why) => {
            return Err(Error::msg(format!(
                "get: {}: {why}: cannot check {} against it (remove it to fetch the file \
                 with header checks only)",
                sums_path,
                path.display()
            )))
        }
        Recorded::Present(c) => {
            if let Some(why) = c.mismatch(&src.file_name, &stored, Some(&written.hashes)) {
                return Err(Error::msg(format!(
                    "get: {}: does not match {} ({why}): the file was damaged, replaced \
                     or altered after it was archived",
                    path.display(),
                    sums_path,
                )));
            }
        }
    }
    out.flush().ctx("write", out.temp_path())?;
    // PostgreSQL fsyncs what it keeps of a restored file (durable_rename
    // into pg_wal) and fetches again after a crash: a second fsync here
    // would only slow recovery down.
    out.commit_replace_unsynced()
}

/// Reads the stored file (from `reader`, the file in a directory, or a
/// remote archive), decrypts and decompresses it into a temp file beside
/// `dest`, hashing what it reads and what it writes (`algos`).
fn decode(
    archive_dest: &Destination,
    src: &Found,
    path: &Path,
    algos: Algos,
    reader: Option<Box<dyn Read + Send>>,
    ids: Option<&Identities>,
    dest: &Path,
) -> Result<(Written, Hashes, AtomicFile)> {
    let file: Box<dyn Read + Send> = match (reader, archive_dest) {
        (Some(r), _) => r,
        (None, Destination::Dir(_)) => Box::new(File::open(path).ctx("open", path)?),
        (None, _) => archive_dest.open_read(&src.file_name)?,
    };
    let mut raw = HashReader::new(
        BufReader::with_capacity(1 << 20, file),
        if src.zst || src.age {
            algos
        } else {
            Algos::NONE
        },
    );
    let mut out = AtomicFile::create(dest)?;
    let temp = out.temp_path().to_path_buf();
    let written = {
        let fail = |op: &str, e: io::Error| -> Error {
            if src.age {
                Error::msg(format!(
                    "{op}: {}: {}",
                    path.display(),
                    pgb_common::crypt::explain(&e)
                ))
            } else {
                Error::io(op, path, e)
            }
        };
        let mut decoded: Box<dyn Read + '_> = if src.age {
            let ids = ids.ok_or_else(|| {
                Error::msg(format!(
                    "get: {}: encrypted; give the identity file with -i",
                    path.display()
                ))
            })?;
            let dec = ids
                .decrypt(&mut raw)
                .map_err(|e| Error::msg(format!("decrypt: {}: {e}", path.display())))?;
            if src.zst {
                Box::new(zstd::stream::read::Decoder::new(dec).map_err(|e| fail("decompress", e))?)
            } else {
                Box::new(dec)
            }
        } else if src.zst {
            Box::new(zstd::stream::read::Decoder::new(&mut raw).ctx("decompress", path)?)
        } else {
            Box::new(&mut raw)
        };
        let op = if src.age {
            "decrypt"
        } else if src.zst {
            "decompress"
        } else {
            "read"
        };
        copy_out(&mut decoded, &mut out, algos).map_err(|e| match e {
            CopyError::Read(e) => fail(op, e),
            CopyError::Write(e) => Error::io("write", &temp, e),
        })?
    };
    // Read to the end of the stored file (what follows a zstd frame or the
    // last age chunk counts too), then compare with the checksum file
    // written at push time, when there is one: before the file is renamed
    // into place, so a damaged segment never reaches PostgreSQL.
    io::copy(&mut raw, &mut io::sink()).ctx("read", path)?;
    let stored = if src.zst || src.age {
        raw.finish()
    } else {
        written.hashes.clone()
    };
    Ok((written, stored, out))
}

/// A read-only mapping of part of a file, unmapped on drop.
struct Mapped {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Mapped {
    /// Maps the first `len` bytes of `f` (at least one). Pages are faulted
    /// in as they are read; none past the end of the file may be read,
    /// which [`copy_local`] never does.
    fn new(f: &File, len: usize) -> io::Result<Mapped> {
        use std::os::fd::AsRawFd;
        let len = len.max(1);
        // SAFETY: a new read-only mapping of an open file, only read
        // through `range` and unmapped on drop. The file is the temp file
        // this process created (0600) and no one else writes it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapped { ptr, len })
    }

    /// Bytes `from..to` of the file, which must be within it (written).
    fn range(&self, from: usize, to: usize) -> &[u8] {
        assert!(from <= to && to <= self.len, "within the mapping");
        // SAFETY: in the mapping (checked above), and within the file:
        // the caller reads only what the copy wrote.
        unsafe { std::slice::from_raw_parts((self.ptr as *const u8).add(from), to - from) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, no longer borrowed.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// Bytes copied at a time: each is handed to the hash as soon as it is
/// written, and the last one is all the hash has left to do at the end.
const CHUNK: usize = 256 << 10;

/// Copies a plain file from an archive directory into the temp file: in
/// the kernel (`copy_file_range`, as cp does), while a second thread
/// hashes (`algos`) each chunk where it was written, through a mapping of
/// the temp file, so the hashes are of exactly the bytes PostgreSQL will
/// read and cost little time when a second core is free. Between file
/// systems that cannot copy in the kernel, through a buffer that is hashed
/// as it is written.
fn copy_local(src: &File, out: &mut AtomicFile, algos: Algos) -> Result<Written, CopyError> {
    use std::sync::mpsc::channel;
    let reader = File::open(out.temp_path()).map_err(CopyError::Write)?;
    let expected = src.metadata().map_err(CopyError::Read)?.len() as usize;
    let (written, rx) = channel::<(usize, usize)>();
    let (copied, hashes) = std::thread::scope(|s| {
        let reader = &reader;
        let hasher = algos
            .any()
            .then(|| s.spawn(move || hash_written(reader, expected, rx, algos)));
        let copied = copy_chunks(src, out.file(), |off, n| {
            // A hash thread that stopped (an error) says why at its join.
            let _ = written.send((off, n));
        });
        drop(written);
        let hashes = hasher.map(|h| h.join().expect("hash thread"));
        (copied, hashes)
    });
    let size = match copied? {
        Some(size) => size,
        None => return copy_out(&mut &*src, out, algos),
    };
    let hashes = hashes.transpose().map_err(CopyError::Read)?;
    let mut first_page = vec![0u8; 8192];
    let n = read_full(&mut &reader, &mut first_page).map_err(CopyError::Read)?;
    first_page.truncate(n);
    Ok(Written {
        first_page,
        size: size as u64,
        hashes: hashes.unwrap_or_default(),
    })
}

/// `copy_file_range` of `src` into `out` to the end, chunk by chunk, each
/// one told to `done` (offset, length) once written. The size copied, or
/// `None` when the kernel cannot copy between these files (nothing was
/// written then).
fn copy_chunks(
    src: &File,
    out: &File,
    mut done: impl FnMut(usize, usize),
) -> Result<Option<usize>, CopyError> {
    let mut size = 0usize;
    loop {
        let n = match pgb_common::fs::copy_range(src, out, CHUNK) {
            Ok(0) => return Ok(Some(size)),
            Ok(n) => n,
            Err(e) if size == 0 && pgb_common::fs::kernel_cannot_copy(&e) => return Ok(None),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG | libc::EROFS)
                ) =>
            {
                return Err(CopyError::Write(e))
            }
            Err(e) => return Err(CopyError::Read(e)),
        };
        done(size, n);
        size += n;
    }
}

/// Hashes the ranges of `file` named on `ranges` as they are written, in
/// order, through one mapping of it (made again larger should the file
/// grow past the `expected` size).
fn hash_written(
    file: &File,
    expected: usize,
    ranges: std::sync::mpsc::Receiver<(usize, usize)>,
    algos: Algos,
) -> io::Result<Hashes> {
    let mut h = MultiHasher::new(algos);
    let mut map: Option<Mapped> = None;
    for (off, n) in ranges {
        if map.as_ref().is_none_or(|m| m.len < off + n) {
            drop(map.take());
            map = Some(Mapped::new(file, expected.max((off + n) * 2))?);
        }
        h.update(map.as_ref().expect("mapped above").range(off, off + n));
    }
    Ok(h.finish())
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// Copies the decoded stream into the temp file, hashing (`algos`) each
/// buffer between reading and writing it, while it is in the CPU's cache.
/// (A hash thread was measured slower on two cores.)
fn copy_out(r: &mut dyn Read, out: &mut AtomicFile, algos: Algos) -> Result<Written, CopyError> {
    let mut h = MultiHasher::new(algos);
    let mut buf = vec![0u8; CHUNK];
    let mut first_page = Vec::new();
    let mut size = 0u64;
    loop {
        let n = read_full(&mut &mut *r, &mut buf).map_err(CopyError::Read)?;
        if n == 0 {
            break;
        }
        if first_page.len() < 8192 {
            let take = (8192 - first_page.len()).min(n);
            first_page.extend_from_slice(&buf[..take]);
        }
        h.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(CopyError::Write)?;
        size += n as u64;
    }
    Ok(Written {
        first_page,
        size,
        hashes: h.finish(),
    })
}

/// The system identifier in `global/pg_control` of the data directory
/// PostgreSQL runs restore_command in, when there is one.
fn cluster_sysid() -> Option<u64> {
    let mut f = File::open("global/pg_control").ok()?;
    let mut b = [0u8; 8];
    f.read_exact(&mut b).ok()?;
    Some(u64::from_le_bytes(b))
}

/// A segment handed to PostgreSQL must be whole and the one asked for: its
/// size, its first page header and, inside a data directory, its system
/// identifier. PostgreSQL would otherwise stop replay at it and, during a
/// point-in-time recovery, end recovery there.
fn check_segment(name: &str, tli: u32, log: u32, seg: u32, w: &Written, path: &Path) -> Result<()> {
    let bad = |why: String| Err(Error::msg(format!("get: {}: {why}", path.display())));
    if w.first_page.iter().all(|b| *b == 0) {
        return bad(format!("{name} is zero-filled ({} bytes)", w.size));
    }
    let Some(h) = PageHeader::parse(&w.first_page) else {
        return bad(format!("{name} is truncated ({} bytes)", w.size));
    };
    let Some(l) = h.long.filter(|l| valid_seg_size(l.seg_size)) else {
        let mut why = format!("{name}: no valid long page header");
        for p in check_first_page(&h, tli, 0, 1 << 24, true) {
            why.push_str(&format!("; {}", p.detail));
        }
        return bad(why);
    };
    let ss = l.seg_size as u64;
    if w.size != ss {
        return bad(format!("{name} has {} bytes, its header says {ss}", w.size));
    }
    let Some(segno) = segno_of(log, seg, ss) else {
        return bad(format!("{name} is no segment name for {ss}-byte segments"));
    };
    let problems = check_first_page(&h, tli, segno, ss, true);
    if !problems.is_empty() {
        let v: Vec<String> = problems.into_iter().map(|p| p.detail).collect();
        return bad(format!("{name}: {}", v.join("; ")));
    }
    if let Some(want) = cluster_sysid() {
        if l.sysid != want {
            return bad(format!(
                "{name} is from another cluster: system identifier {}, this data directory's is {want}",
                l.sysid
            ));
        }
    }
    Ok(())
}
