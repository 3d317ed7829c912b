//! Lists an archive directory and reads what each file needs checking:
//! the size and the first page of segments (decoded for .zst, decrypted for
//! .age when identities are given), the text of history files. Segments are
//! read on several threads.

use pgb_common::fs::read_full;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use pgb_common::crypt::{Identities, SUFFIX as AGE_SUFFIX};

use pgb_common::error::{IoContext, Result};
use pgb_common::walhdr::{classify, WalFile};

/// How much of a segment is read: one WAL page of the default block size
/// (the long header needs 40 bytes; the rest tells a zero-filled file).
pub const FIRST_PAGE: usize = 8192;

/// One file of the archive.
pub struct Entry {
    pub name: String,
    pub kind: WalFile,
    pub zst: bool,
    /// Encrypted with age (`.age`).
    pub age: bool,
    /// Encrypted and no identity given: present, but its size and header
    /// were not checked.
    pub unchecked: bool,
    pub mtime: Option<SystemTime>,
    /// The segment's size: of the file, or for .zst the content size its
    /// frame header declares (`None` when it declares none).
    pub size: Option<u64>,
    /// The first page (segments), or the whole text (history files), or why
    /// it could not be read.
    pub data: Result<Vec<u8>, String>,
}

pub struct Listing {
    pub entries: Vec<Entry>,
    /// Names that are no WAL file (hidden temps excluded).
    pub others: Vec<String>,
    /// `NAME.sha256` files written by `pgb-wal push` beside encrypted files.
    pub checksum_files: usize,
}

/// A file name as (kind, zst, age); `None` for names that are no WAL file.
pub fn classify_stored(name: &str) -> Option<(WalFile, bool, bool)> {
    let (base, age) = match name.strip_suffix(AGE_SUFFIX) {
        Some(b) => (b, true),
        None => (name, false),
    };
    classify(base).map(|(k, zst)| (k, zst, age))
}

pub fn scan(dir: &Path, identities: &[PathBuf]) -> Result<Listing> {
    // Loaded (and checked) once up front, so a bad identity file is an
    // error before anything is read; each thread loads its own copy below.
    if !identities.is_empty() {
        Identities::load(identities)?;
    }
    let mut todo = Vec::new();
    let mut others = Vec::new();
    let mut checksum_files = 0;
    for e in fs::read_dir(dir).ctx("read directory", dir)? {
        let e = e.ctx("read directory", dir)?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        match classify_stored(&name) {
            Some((kind, zst, age)) => todo.push((name, kind, zst, age)),
            None if name
                .strip_suffix(".sha256")
                .is_some_and(|b| classify(b).is_some_and(|(_, zst)| !zst)) =>
            {
                checksum_files += 1
            }
            None => others.push(name),
        }
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 16);
    let chunk = todo.len().div_ceil(threads).max(1);
    let mut entries = Vec::with_capacity(todo.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = todo
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    let ids = if identities.is_empty() {
                        None
                    } else {
                        Identities::load(identities).ok()
                    };
                    part.iter()
                        .map(|(name, kind, zst, age)| {
                            read_entry(dir, name, *kind, *zst, *age, ids.as_ref())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            entries.extend(h.join().expect("scan thread"));
        }
    });
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    others.sort();
    Ok(Listing {
        entries,
        others,
        checksum_files,
    })
}

fn read_entry(
    dir: &Path,
    name: &str,
    kind: WalFile,
    zst: bool,
    age: bool,
    ids: Option<&Identities>,
) -> Entry {
    let path = dir.join(name);
    let mut entry = Entry {
        name: name.to_string(),
        kind,
        zst,
        age,
        unchecked: false,
        mtime: None,
        size: None,
        data: Ok(Vec::new()),
    };
    let res = (|| -> io::Result<()> {
        let f = open_noatime(&path)?;
        let md = f.metadata()?;
        entry.mtime = md.modified().ok();
        if !md.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        match (kind, age, ids) {
            (WalFile::Segment { .. }, true, None) => {
                // Without the key, at least the age header must be there.
                let mut head = [0u8; 32];
                let n = read_full(&mut &f, &mut head)?;
                let head = &head[..n];
                if pgb_common::crypt::looks_encrypted(head) {
                    entry.unchecked = true;
                } else {
                    let what = if n == 0 {
                        "empty"
                    } else if head.iter().all(|b| *b == 0) {
                        "zero-filled"
                    } else {
                        "no age header"
                    };
                    return Err(io::Error::other(format!("not an age file ({what})")));
                }
            }
            (WalFile::Segment { .. }, true, Some(ids)) => {
                let (size, page) = first_page_encrypted(f, zst, ids)?;
                entry.size = size;
                entry.data = Ok(page);
            }
            (WalFile::Segment { .. }, false, _) => {
                let (size, page) = first_page(f, md.len(), zst)?;
                entry.size = size;
                entry.data = Ok(page);
            }
            (WalFile::History { .. }, true, None) => {
                return Err(io::Error::other("encrypted; give -i to read it"))
            }
            (WalFile::History { .. }, true, Some(ids)) => {
                let mut text = Vec::new();
                let dec = ids.decrypt(f).map_err(io::Error::other)?;
                if zst {
                    zstd::stream::read::Decoder::new(dec)?.read_to_end(&mut text)?;
                } else {
                    dec.take(1 << 20).read_to_end(&mut text)?;
                }
                entry.size = Some(md.len());
                entry.data = Ok(text);
            }
            (WalFile::History { .. }, false, _) => {
                let mut text = Vec::new();
                if zst {
                    zstd::stream::read::Decoder::new(f)?.read_to_end(&mut text)?;
                } else {
                    (&f).take(1 << 20).read_to_end(&mut text)?;
                }
                entry.size = Some(md.len());
                entry.data = Ok(text);
            }
            (WalFile::Partial { .. } | WalFile::Backup { .. }, _, _) => entry.size = Some(md.len()),
        }
        Ok(())
    })();
    if let Err(e) = res {
        entry.data = Err(pgb_common::error::io_cause(&e));
    }
    entry
}

/// Opens for reading without updating the access time where allowed (the
/// owner, or root): after a segment is written, the first read would
/// otherwise cost a metadata write per file.
fn open_noatime(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    match fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOATIME)
        .open(path)
    {
        Err(e) if e.raw_os_error() == Some(nix::libc::EPERM) => File::open(path),
        r => r,
    }
}

/// The segment's size and its first page.
fn first_page(mut f: File, len: u64, zst: bool) -> io::Result<(Option<u64>, Vec<u8>)> {
    if !zst {
        let mut page = vec![0u8; FIRST_PAGE];
        let n = read_full(&mut f, &mut page)?;
        page.truncate(n);
        return Ok((Some(len), page));
    }
    first_page_zst(f)
}

/// The size and first page of an encrypted segment: only its first chunk
/// (64 kB) is decrypted, and for a plain .age its last one, which
/// authenticates the length.
fn first_page_encrypted(
    f: File,
    zst: bool,
    ids: &Identities,
) -> io::Result<(Option<u64>, Vec<u8>)> {
    let mut dec = ids
        .decrypt(f)
        .map_err(|e| io::Error::other(format!("decryption failed: {e}")))?;
    let explain = |e: io::Error| io::Error::other(pgb_common::crypt::explain(&e));
    if zst {
        return first_page_zst(dec).map_err(explain);
    }
    let mut page = vec![0u8; FIRST_PAGE];
    let n = read_full(&mut dec, &mut page).map_err(explain)?;
    page.truncate(n);
    let len = dec.authenticated_len().map_err(explain)?;
    Ok((Some(len), page))
}

/// The declared size and the first page of a zstd stream.
fn first_page_zst(mut f: impl Read) -> io::Result<(Option<u64>, Vec<u8>)> {
    let mut page = vec![0u8; FIRST_PAGE];
    // The frame header (at most 18 bytes) declares the content size when
    // the writer knew it (pgb-wal push always does).
    let mut head = [0u8; 18];
    let n = read_full(&mut f, &mut head)?;
    let size = zstd::zstd_safe::get_frame_content_size(&head[..n])
        .ok()
        .flatten();
    let chained = io::Cursor::new(head[..n].to_vec()).chain(f);
    let mut dec = zstd::stream::read::Decoder::new(chained)?;
    let n = read_full(&mut dec, &mut page)?;
    page.truncate(n);
    Ok((size, page))
}
