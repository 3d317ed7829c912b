//! Lists an archive directory and reads what each file needs checking:
//! the size and the first page of segments, the text of history files.
//! Segments are read on several threads; an SSH archive is read in a few
//! sessions, not one per file (see [`streamed`]). A segment is read in full when it
//! can be: `.zst` decoded to the end (its real size, not the one its frame
//! header declares), `.age` decrypted to the end when identities are given,
//! and any segment with a checksum file (`NAME.sha256`, written by
//! `pgb-wal push`) hashed to the end and compared with it; a plain segment
//! without one is checked by its header and size only.

use pgb_common::fs::read_full;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use pgb_common::crypt::{Identities, SUFFIX as AGE_SUFFIX};

use pgb_common::dest::{Destination, Listed};
use pgb_common::error::{IoContext, Result};
use pgb_common::walarchive::{
    load_checksums, load_checksums_in, parse_recorded, Algos, HashReader, Hashes, MultiHasher,
    Recorded, CHECKSUM_SUFFIX,
};
use pgb_common::walhdr::{classify, WalFile};
use std::collections::HashMap;

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
    /// The file compared with its checksum file.
    pub sums: Sums,
}

/// A file compared with the checksum file `pgb-wal push` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sums {
    /// No checksum file (another tool archived it): header checks only.
    NotRecorded,
    /// Read to the end and equal to the recorded checksums.
    Verified,
    /// Recorded, but nothing that could be read was comparable (an
    /// encrypted file without -i whose checksum file names another form).
    NotCompared,
    /// A problem (`checksum-mismatch`, `bad-checksum-file`) and its detail.
    Problem(&'static str, String),
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

/// Where the archive is: a directory read directly, or an SSH host or S3
/// prefix read through the storage layer (its listing gives each file's
/// size and modification time).
#[derive(Clone, Copy)]
enum Src<'a> {
    Dir(&'a Path),
    /// With the checksum files when they were read up front.
    Remote(
        &'a Destination,
        &'a HashMap<String, Listed>,
        Option<&'a HashMap<String, Vec<u8>>>,
    ),
}

/// Lists and reads the archive; with `headers_only`, each segment's first
/// page and size only (no full reads, no checksum comparison).
pub fn scan(dest: &Destination, identities: &[PathBuf], headers_only: bool) -> Result<Listing> {
    // Loaded (and checked) once up front, so a bad identity file is an
    // error before anything is read; each thread loads its own copy below.
    if !identities.is_empty() {
        Identities::load(identities)?;
    }
    let (names, listed): (Vec<String>, HashMap<String, Listed>) = match dest {
        Destination::Dir(dir) => {
            let mut v = Vec::new();
            for e in fs::read_dir(dir).ctx("read directory", dir)? {
                let e = e.ctx("read directory", dir)?;
                v.push(e.file_name().to_string_lossy().into_owned());
            }
            (v, HashMap::new())
        }
        _ => {
            let l = dest.list("", "")?;
            (
                l.iter().map(|l| l.name.clone()).collect(),
                l.into_iter().map(|l| (l.name.clone(), l)).collect(),
            )
        }
    };
    // An SSH host sends every checksum file in one session, rather than
    // one session per segment (with `headers_only`, only history files'
    // are used).
    let ssh = matches!(dest, Destination::Ssh(_));
    let need_sums = !headers_only
        || names.iter().any(|n| {
            matches!(classify_stored(n), Some((WalFile::History { .. }, _, _)))
                && listed.contains_key(&format!(
                    "{}{CHECKSUM_SUFFIX}",
                    n.strip_suffix(AGE_SUFFIX)
                        .unwrap_or(n)
                        .trim_end_matches(".zst")
                ))
        });
    let sums = if ssh && need_sums {
        Some(dest.read_suffix(CHECKSUM_SUFFIX, 4096)?)
    } else {
        None
    };
    let src = match dest {
        Destination::Dir(dir) => Src::Dir(dir),
        _ => Src::Remote(dest, &listed, sums.as_ref()),
    };
    let mut todo = Vec::new();
    let mut others = Vec::new();
    let mut checksum_files = 0;
    for name in names {
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
    if ssh {
        let ids = if identities.is_empty() {
            None
        } else {
            Some(Identities::load(identities)?)
        };
        let mut entries = streamed(src, &listed, &todo, identities, ids.as_ref(), headers_only)?;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        others.sort();
        return Ok(Listing {
            entries,
            others,
            checksum_files,
        });
    }
    let most = 16;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, most);
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
                            read_entry(src, name, *kind, *zst, *age, ids.as_ref(), headers_only)
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

/// Files of up to this size are taken whole from an SSH stream and
/// checked on another thread.
const BUFFERED: u64 = 32 << 20;

/// Compressed bytes enough for a zstd frame header and its first block
/// (at most 128 KiB), so its first page decodes.
const ZST_HEAD: u64 = 128 * 1024 + 64;

/// An SSH archive read in a bounded number of sessions, not one per file:
/// with `headers_only`, the size and first bytes of every segment in one
/// session ([`Destination::read_heads`]); the files read in full (all of
/// them without `headers_only`; history files and, with -i, encrypted
/// segments with it) as one `tar` stream ([`Destination::read_each`]).
/// `.partial` and `.backup` files need only the listing. A file removed
/// after the listing (pruned meanwhile) is unreadable, as in a directory.
fn streamed(
    src: Src,
    listed: &HashMap<String, Listed>,
    todo: &[(String, WalFile, bool, bool)],
    identities: &[PathBuf],
    ids: Option<&Identities>,
    headers_only: bool,
) -> Result<Vec<Entry>> {
    let Src::Remote(dest, ..) = src else {
        unreachable!("remote archives only")
    };
    let gone = || "No such file or directory (removed since the archive was listed)".to_string();
    let mut entries = Vec::with_capacity(todo.len());
    let mut heads = Vec::new();
    let mut whole = Vec::new();
    for item @ (name, kind, zst, age) in todo {
        match kind {
            WalFile::Partial { .. } | WalFile::Backup { .. } => {
                let mut e = new_entry(name, *kind, *zst, *age);
                e.mtime = listed[name].modified;
                e.size = Some(listed[name].size);
                entries.push(e);
            }
            WalFile::Segment { .. } if headers_only && !(*age && ids.is_some()) => heads.push(item),
            _ => whole.push(item),
        }
    }
    let asked: Vec<(&str, u64)> = heads
        .iter()
        .map(|(name, _, zst, age)| {
            let max = if *zst && !*age {
                ZST_HEAD
            } else {
                FIRST_PAGE as u64
            };
            (name.as_str(), max)
        })
        .collect();
    for ((name, kind, zst, age), got) in heads.iter().zip(dest.read_heads(&asked)?) {
        let mut e = new_entry(name, *kind, *zst, *age);
        e.mtime = listed[name].modified;
        match got {
            Some((size, bytes)) => {
                let recorded = recorded_for(src, name, *kind, headers_only);
                if let Err(x) = check(
                    &mut e,
                    &mut io::Cursor::new(bytes),
                    size,
                    &recorded,
                    ids,
                    headers_only,
                    None,
                ) {
                    e.data = Err(pgb_common::error::io_cause(&x));
                }
            }
            None => e.data = Err(gone()),
        }
        entries.push(e);
    }
    let names: Vec<&str> = whole.iter().map(|(n, ..)| n.as_str()).collect();
    let by_name: HashMap<&str, &(String, WalFile, bool, bool)> =
        whole.iter().map(|w| (w.0.as_str(), *w)).collect();
    let checked = |name: &str, size: u64, r: &mut dyn Read, ids: Option<&Identities>| {
        let (_, kind, zst, age) = by_name[name];
        let mut e = new_entry(name, *kind, *zst, *age);
        let recorded = recorded_for(src, name, *kind, headers_only);
        if let Err(x) = check(&mut e, r, size, &recorded, ids, headers_only, None) {
            e.data = Err(pgb_common::error::io_cause(&x));
        }
        e
    };
    // The stream arrives in one session; files of up to BUFFERED bytes are
    // taken whole from it and checked on other threads (decoding and
    // hashing keep pace with the network), larger ones as they stream.
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4);
    let mut done: HashMap<String, Entry> = HashMap::new();
    let (tx, rx) = std::sync::mpsc::sync_channel::<(String, u64, Vec<u8>)>(threads);
    let rx = std::sync::Mutex::new(rx);
    let read = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (rx, checked) = (&rx, &checked);
                s.spawn(move || {
                    // Each thread its own copy of the keys.
                    let ids = if identities.is_empty() {
                        None
                    } else {
                        Identities::load(identities).ok()
                    };
                    let mut out = Vec::new();
                    loop {
                        let job = rx.lock().expect("queue").recv();
                        let Ok((name, size, bytes)) = job else { break };
                        out.push(checked(
                            &name,
                            size,
                            &mut io::Cursor::new(bytes),
                            ids.as_ref(),
                        ));
                    }
                    out
                })
            })
            .collect();
        let read = dest.read_each(&names, |name, size, r| {
            if size > BUFFERED {
                return Some(checked(name, size, r, ids));
            }
            let mut v = Vec::with_capacity(size as usize);
            match r.read_to_end(&mut v) {
                Ok(_) => {
                    // A worker that died leaves the file unchecked here.
                    let _ = tx.send((name.to_string(), size, v));
                    None
                }
                Err(x) => {
                    let (_, kind, zst, age) = by_name[name];
                    let mut e = new_entry(name, *kind, *zst, *age);
                    e.data = Err(pgb_common::error::io_cause(&x));
                    Some(e)
                }
            }
        });
        drop(tx);
        for w in workers {
            for e in w.join().expect("check thread") {
                done.insert(e.name.clone(), e);
            }
        }
        read
    })?;
    for ((name, kind, zst, age), got) in whole.iter().zip(read) {
        let got = match got {
            Ok(Some(e)) => Ok(e),
            Ok(None) => done.remove(name).ok_or_else(|| "not checked".to_string()),
            Err(why) => Err(why),
        };
        let mut e = got.unwrap_or_else(|why| {
            let mut e = new_entry(name, *kind, *zst, *age);
            e.data = Err(if why.contains("No such file") {
                gone()
            } else {
                why
            });
            e
        });
        e.mtime = listed[name].modified;
        entries.push(e);
    }
    Ok(entries)
}

fn new_entry(name: &str, kind: WalFile, zst: bool, age: bool) -> Entry {
    Entry {
        name: name.to_string(),
        kind,
        zst,
        age,
        unchecked: false,
        mtime: None,
        size: None,
        data: Ok(Vec::new()),
        sums: Sums::NotRecorded,
    }
}

/// What the checksum file beside `name` records (nothing read for a
/// segment with `headers_only`).
fn recorded_for(src: Src, name: &str, kind: WalFile, headers_only: bool) -> Recorded {
    let base = name.strip_suffix(AGE_SUFFIX).unwrap_or(name);
    let base = base.strip_suffix(".zst").unwrap_or(base);
    match kind {
        WalFile::Segment { .. } if headers_only => Recorded::Absent,
        WalFile::Segment { .. } | WalFile::History { .. } => {
            let r = match src {
                Src::Dir(dir) => load_checksums(dir, base),
                Src::Remote(d, listed, sums) => {
                    let rel = format!("{base}{CHECKSUM_SUFFIX}");
                    match sums {
                        Some(m) => Ok(parse_recorded(m.get(&rel).cloned(), base)),
                        None if listed.contains_key(&rel) => load_checksums_in(d, base),
                        None => Ok(Recorded::Absent),
                    }
                }
            };
            r.unwrap_or_else(|e| Recorded::Bad(e.to_string()))
        }
        WalFile::Partial { .. } | WalFile::Backup { .. } => Recorded::Absent,
    }
}

fn read_entry(
    src: Src,
    name: &str,
    kind: WalFile,
    zst: bool,
    age: bool,
    ids: Option<&Identities>,
    headers_only: bool,
) -> Entry {
    let mut entry = new_entry(name, kind, zst, age);
    let recorded = recorded_for(src, name, kind, headers_only);
    let res = (|| -> io::Result<()> {
        let (mut f, len, local): (Box<dyn Read + Send>, u64, Option<PathBuf>) = match src {
            Src::Dir(dir) => {
                let f = open_noatime(&dir.join(name))?;
                let md = f.metadata()?;
                entry.mtime = md.modified().ok();
                if !md.is_file() {
                    return Err(io::Error::other("not a regular file"));
                }
                (Box::new(f), md.len(), Some(dir.join(name)))
            }
            Src::Remote(d, listed, _) => {
                let l = &listed[name];
                entry.mtime = l.modified;
                let f = d
                    .open_read(name)
                    .map_err(|e| io::Error::other(e.to_string()))?;
                (f, l.size, None)
            }
        };
        check(
            &mut entry,
            &mut f,
            len,
            &recorded,
            ids,
            headers_only,
            local.as_deref(),
        )
    })();
    if let Err(e) = res {
        entry.data = Err(pgb_common::error::io_cause(&e));
    }
    entry
}

/// The checks of one file, on its bytes from `f` (`len` of them as stored):
/// size, first page, a full read where one is due (zstd decoded, age
/// decrypted), the checksum file compared. `local` is the file's path when
/// it can be opened again (an encrypted segment's length is then
/// authenticated by a seek to its last chunk rather than a full read).
fn check(
    entry: &mut Entry,
    mut f: &mut dyn Read,
    len: u64,
    recorded: &Recorded,
    ids: Option<&Identities>,
    headers_only: bool,
    local: Option<&Path>,
) -> io::Result<()> {
    let name = entry.name.clone();
    let name = name.as_str();
    let (kind, zst, age) = (entry.kind, entry.zst, entry.age);
    let base = name.strip_suffix(AGE_SUFFIX).unwrap_or(name);
    let base = base.strip_suffix(".zst").unwrap_or(base);
    let sums_name = format!("{base}{}", pgb_common::walarchive::CHECKSUM_SUFFIX);
    let sums = match recorded {
        Recorded::Absent => None,
        Recorded::Bad(why) => {
            entry.sums = Sums::Problem("bad-checksum-file", format!("{sums_name}: {why}"));
            None
        }
        Recorded::Present(c) => Some(c),
    };
    // Every hash the checksum file records is computed and compared.
    let algos = sums.map_or(Algos::NONE, |c| c.recorded());
    // Compares what was read in full with the checksum file.
    let compare = |entry: &mut Entry, stored: &Hashes, plain: Option<&Hashes>| {
        if let Some(c) = sums {
            entry.sums = match c.mismatch(name, stored, plain) {
                Some(why) => Sums::Problem(
                    "checksum-mismatch",
                    format!("does not match {sums_name}: {why}"),
                ),
                None if plain.is_some() || c.stored_name == name => Sums::Verified,
                None => Sums::NotCompared,
            };
        }
    };
    match (kind, age, ids) {
        (WalFile::Segment { .. }, true, None) => {
            // Without the key, at least the age header must be there,
            // and the stored bytes must be the ones recorded.
            let mut head = [0u8; 32];
            let n = read_full(&mut f, &mut head)?;
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
            if sums.is_some() {
                let mut h = HashReader::new(io::Cursor::new(head.to_vec()).chain(f), algos);
                io::copy(&mut h, &mut io::sink())?;
                compare(entry, &h.finish(), None);
            }
        }
        (WalFile::Segment { .. }, true, Some(ids)) if headers_only => match local {
            // The length is authenticated by the last chunk, read by a
            // seek: a file only.
            Some(path) => {
                let f = open_noatime(path)?;
                let (size, page) = first_page_encrypted(f, zst, ids)?;
                entry.size = size;
                entry.data = Ok(page);
            }
            None => {
                let r = read_whole(f, zst, Some(ids), Algos::NONE)?;
                entry.size = Some(r.size);
                entry.data = Ok(r.first_page);
            }
        },
        (WalFile::Segment { .. }, false, _) if headers_only && zst => {
            let (size, page) = first_page_zst(f)?;
            entry.size = size;
            entry.data = Ok(page);
        }
        (WalFile::Segment { .. }, true, Some(_)) | (WalFile::Segment { .. }, false, _)
            if zst || age || sums.is_some() =>
        {
            let r = read_whole(f, zst, age.then_some(ids).flatten(), algos)?;
            entry.size = Some(r.size);
            entry.data = Ok(r.first_page);
            let stored = r.stored.unwrap_or_else(|| r.plain.clone());
            compare(entry, &stored, Some(&r.plain));
            if let Some(declared) = r.declared.filter(|d| *d != r.size) {
                return Err(io::Error::other(format!(
                    "its zstd frame declares {declared} bytes, {} decode",
                    r.size
                )));
            }
        }
        (WalFile::Segment { .. }, false, _) => {
            let (size, page) = first_page(f, len)?;
            entry.size = size;
            entry.data = Ok(page);
        }
        (WalFile::Segment { .. }, true, Some(_)) => unreachable!("read whole above"),
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
            entry.size = Some(len);
            entry.data = Ok(text);
        }
        (WalFile::History { .. }, false, _) => {
            let mut text = Vec::new();
            let mut raw = HashReader::new(f, if zst { algos } else { Algos::NONE });
            if zst {
                zstd::stream::read::Decoder::new(&mut raw)?.read_to_end(&mut text)?;
            } else {
                (&mut raw).take(1 << 20).read_to_end(&mut text)?;
            }
            io::copy(&mut raw, &mut io::sink())?;
            let mut h = MultiHasher::new(algos);
            h.update(&text);
            let plain = h.finish();
            let stored = if zst { raw.finish() } else { plain.clone() };
            compare(entry, &stored, Some(&plain));
            entry.size = Some(len);
            entry.data = Ok(text);
        }
        (WalFile::Partial { .. } | WalFile::Backup { .. }, _, _) => entry.size = Some(len),
    }
    Ok(())
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

/// The size and the first page of a plain segment.
fn first_page(mut f: impl Read, len: u64) -> io::Result<(Option<u64>, Vec<u8>)> {
    let mut page = vec![0u8; FIRST_PAGE];
    let n = read_full(&mut f, &mut page)?;
    page.truncate(n);
    Ok((Some(len), page))
}

/// A segment read to the end.
struct Whole {
    /// The decoded size, and the one a zstd frame header declared.
    size: u64,
    declared: Option<u64>,
    first_page: Vec<u8>,
    /// The hashes of the decoded segment, and of the stored bytes when
    /// they differ from it.
    plain: Hashes,
    stored: Option<Hashes>,
}

/// Reads a stored segment to the end: decrypted with `ids` when given (an
/// encrypted one), zstd-decoded when `zst`, hashed on the way. A decoding
/// error (a truncated or altered stream) is an error naming what failed.
fn read_whole(
    f: impl Read,
    zst: bool,
    ids: Option<&Identities>,
    algos: Algos,
) -> io::Result<Whole> {
    let encoded = zst || ids.is_some();
    let mut raw = HashReader::new(
        io::BufReader::with_capacity(1 << 16, f),
        if encoded { algos } else { Algos::NONE },
    );
    let mut declared = None;
    let explain = |e: io::Error| io::Error::other(pgb_common::crypt::explain(&e));
    let (plain, size, first_page) = {
        let mut dec: Box<dyn Read + '_> = match ids {
            Some(ids) => Box::new(
                ids.decrypt(&mut raw)
                    .map_err(|e| io::Error::other(format!("decryption failed: {e}")))?,
            ),
            None => Box::new(&mut raw),
        };
        let mut dec: Box<dyn Read + '_> = if zst {
            let mut head = [0u8; 18];
            let n = read_full(&mut dec, &mut head).map_err(explain)?;
            declared = zstd::zstd_safe::get_frame_content_size(&head[..n])
                .ok()
                .flatten();
            let chained = io::Cursor::new(head[..n].to_vec()).chain(dec);
            Box::new(zstd::stream::read::Decoder::new(chained)?)
        } else {
            dec
        };
        let mut h = MultiHasher::new(algos);
        let mut buf = vec![0u8; 1 << 16];
        let mut first_page = Vec::with_capacity(FIRST_PAGE);
        let mut size = 0u64;
        loop {
            let n = match read_full(&mut dec, &mut buf) {
                Ok(n) => n,
                Err(e) if zst && ids.is_none() => {
                    return Err(io::Error::other(format!(
                        "zstd: {e} after {size} decoded bytes{}",
                        declared.map_or(String::new(), |d| format!(" of {d}"))
                    )))
                }
                Err(e) => return Err(explain(e)),
            };
            if n == 0 {
                break;
            }
            if first_page.len() < FIRST_PAGE {
                let k = (FIRST_PAGE - first_page.len()).min(n);
                first_page.extend_from_slice(&buf[..k]);
            }
            h.update(&buf[..n]);
            size += n as u64;
        }
        (h.finish(), size, first_page)
    };
    // What follows the stream counts for the stored checksum.
    io::copy(&mut raw, &mut io::sink())?;
    Ok(Whole {
        size,
        declared,
        first_page,
        plain,
        stored: encoded.then(|| raw.finish()),
    })
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
