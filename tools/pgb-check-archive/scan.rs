//! Lists an archive directory and reads what each file needs checking:
//! the size and the first page of segments (decoded for .zst), the text of
//! history files. Segments are read on several threads.

use pgb_common::fs::read_full;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;
use std::time::SystemTime;

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
}

pub fn scan(dir: &Path) -> Result<Listing> {
    let mut todo = Vec::new();
    let mut others = Vec::new();
    for e in fs::read_dir(dir).ctx("read directory", dir)? {
        let e = e.ctx("read directory", dir)?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        match classify(&name) {
            Some((kind, zst)) => todo.push((name, kind, zst)),
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
                    part.iter()
                        .map(|(name, kind, zst)| read_entry(dir, name, *kind, *zst))
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
    Ok(Listing { entries, others })
}

fn read_entry(dir: &Path, name: &str, kind: WalFile, zst: bool) -> Entry {
    let path = dir.join(name);
    let mut entry = Entry {
        name: name.to_string(),
        kind,
        zst,
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
        match kind {
            WalFile::Segment { .. } => {
                let (size, page) = first_page(f, md.len(), zst)?;
                entry.size = size;
                entry.data = Ok(page);
            }
            WalFile::History { .. } => {
                let mut text = Vec::new();
                if zst {
                    zstd::stream::read::Decoder::new(f)?.read_to_end(&mut text)?;
                } else {
                    (&f).take(1 << 20).read_to_end(&mut text)?;
                }
                entry.size = Some(md.len());
                entry.data = Ok(text);
            }
            WalFile::Partial { .. } | WalFile::Backup { .. } => entry.size = Some(md.len()),
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
    let mut page = vec![0u8; FIRST_PAGE];
    if !zst {
        let n = read_full(&mut f, &mut page)?;
        page.truncate(n);
        return Ok((Some(len), page));
    }
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
