//! `pgb-wal push`: archive one WAL file durably into every archive.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::Duration;

use pgb_common::crypt::{Identities, Recipients};
use pgb_common::dest::{Destination, Readback};
use pgb_common::error::{Error, IoContext, Result};
use pgb_common::fs::{read_full, TEMP_MARK};
use pgb_common::term::warn;
use pgb_common::walhdr::{classify, WalFile};
use pgb_common::{fsync_dir, AtomicFile, ExitStatus, RepoLock};

use crate::cli::PushArgs;
use pgb_common::walarchive::{
    self as archive, Algos, Checksums, HashReader, HashWriter, Hashes, Stored,
};

/// zstd level, or no compression.
fn parse_compress(s: &str) -> Result<Option<i32>> {
    let bad = || {
        Error::Usage(format!(
            "--compress {s:?}: expected none, zstd or zstd:LEVEL (1..22)"
        ))
    };
    match s.split_once(':') {
        None if s == "none" => Ok(None),
        None if s == "zstd" => Ok(Some(3)),
        Some(("zstd", l)) => match l.parse::<i32>() {
            Ok(l) if (1..=22).contains(&l) => Ok(Some(l)),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// What one push does to the file's bytes.
struct Plan<'a> {
    level: Option<i32>,
    recipients: Option<&'a Recipients>,
    identities: Option<&'a Identities>,
    lock_wait: Duration,
}

pub fn run(args: &PushArgs) -> Result<ExitStatus> {
    let level = parse_compress(&args.compress)?;
    let name = args
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Usage(format!("{}: not a file name", args.path.display())))?
        .to_string();
    let kind = match classify(&name) {
        Some((k, false)) => k,
        _ => {
            return Err(Error::Usage(format!(
                "{}: not a WAL segment, .partial, .history or .backup file name",
                args.path.display()
            )))
        }
    };
    // Recipients are loaded (and refused when empty) before anything is
    // written, whatever the file: a bad -R must fail every push.
    let recipients = if args.recipient.is_empty() && args.recipients_file.is_empty() {
        None
    } else {
        Some(Recipients::load(&args.recipient, &args.recipients_file)?)
    };
    let identities = if args.identity.is_empty() {
        None
    } else {
        Some(Identities::load(&args.identity)?)
    };
    // .history and .backup files are tiny and are what pgb-check-archive
    // needs to follow timelines without a key: stored as they are.
    let segment_like = matches!(kind, WalFile::Segment { .. } | WalFile::Partial { .. });
    let plan = Plan {
        level: level.filter(|_| segment_like),
        recipients: recipients.as_ref().filter(|_| segment_like),
        identities: identities.as_ref(),
        lock_wait: Duration::from_secs(args.lock_wait),
    };
    let archives = args
        .archive
        .iter()
        .map(|a| Destination::parse_url(a))
        .collect::<Result<Vec<_>>>()?;
    let meta = fs::metadata(&args.path).ctx("push", &args.path)?;
    if !meta.is_file() {
        return Err(Error::msg(format!(
            "push: {}: not a regular file",
            args.path.display()
        )));
    }
    let mut status = ExitStatus::Ok;
    // Encoded once, for every remote archive.
    let mut encoded = None;
    for dest in &archives {
        let r = match dest {
            Destination::Dir(dir) => push_one(&args.path, meta.len(), &name, dir, &plan),
            _ => push_remote(&args.path, meta.len(), &name, dest, &plan, &mut encoded),
        };
        if let Err(e) = r {
            warn(e.to_string());
            status = status.worst(e.exit_status());
        }
    }
    Ok(status)
}

/// The file as it is stored (compressed and/or encrypted, or the source
/// itself), with its digests and checksum file.
struct Encoded {
    /// The temp file holding the stored bytes (none: the source is stored
    /// as it is).
    _temp: Option<tempfile::NamedTempFile>,
    path: std::path::PathBuf,
    stored: String,
    digests: pgb_common::Digests,
    sums: Checksums,
}

/// Compresses and/or encrypts `src` into a private temp file (TMPDIR).
fn encode(src: &Path, len: u64, name: &str, plan: &Plan) -> Result<Encoded> {
    let zst = plan.level.is_some();
    let age = plan.recipients.is_some();
    let stored = archive::stored_name(name, zst, age);
    if !zst && !age {
        let f = File::open(src).ctx("open", src)?;
        let digests = pgb_common::digest::hash_reader(io::BufReader::new(f)).ctx("read", src)?;
        return Ok(Encoded {
            _temp: None,
            path: src.to_path_buf(),
            sums: Checksums::plain(name, &(&digests).into()),
            stored,
            digests,
        });
    }
    let temp = tempfile::Builder::new()
        .prefix(".pgb-wal-push.")
        .tempfile()
        .map_err(|e| Error::msg(format!("push: create a temp file in TMPDIR: {e}")))?;
    let tpath = temp.path().to_path_buf();
    let mut input = HashReader::new(File::open(src).ctx("open", src)?, Algos::BOTH);
    {
        let out = io::BufWriter::new(temp.as_file());
        let w = match (plan.level, plan.recipients) {
            (Some(l), None) => {
                let mut enc = zstd_encoder(out, l, len).ctx("compress", &tpath)?;
                io::copy(&mut input, &mut enc).ctx("compress", &tpath)?;
                enc.finish().ctx("compress", &tpath)?
            }
            (None, Some(r)) => {
                let mut enc = r.encrypt(out)?;
                io::copy(&mut input, &mut enc).ctx("encrypt", &tpath)?;
                enc.finish().ctx("encrypt", &tpath)?
            }
            (Some(l), Some(r)) => {
                let mut enc = zstd_encoder(r.encrypt(out)?, l, len).ctx("compress", &tpath)?;
                io::copy(&mut input, &mut enc).ctx("compress", &tpath)?;
                enc.finish()
                    .ctx("compress", &tpath)?
                    .finish()
                    .ctx("encrypt", &tpath)?
            }
            (None, None) => unreachable!("handled above"),
        };
        w.into_inner()
            .map_err(|e| Error::io("write", &tpath, e.into_error()))?;
    }
    let plain = input.finish();
    let f = File::open(&tpath).ctx("open", &tpath)?;
    let digests = pgb_common::digest::hash_reader(io::BufReader::new(f)).ctx("read", &tpath)?;
    Ok(Encoded {
        _temp: Some(temp),
        path: tpath,
        sums: Checksums::encoded(&stored, &plain, &(&digests).into()),
        stored,
        digests,
    })
}

/// Pushes into an SSH host or S3 archive: the checksum file first, then
/// the stored file, created only where no object of that name is (see
/// [`Destination::put_file`]: a temp name then a link on the host; one PUT
/// with If-None-Match on S3) and checked there (sha256 on the host, read
/// back from S3) before this returns.
fn push_remote(
    src: &Path,
    len: u64,
    name: &str,
    dest: &Destination,
    plan: &Plan,
    encoded: &mut Option<Encoded>,
) -> Result<()> {
    let sums_rel = format!("{name}{}", archive::CHECKSUM_SUFFIX);
    if let Destination::Ssh(_) = dest {
        // One session: the host checks that no form is there, takes the
        // file, checks it, writes NAME.sha256, then links the file.
        if encoded.is_none() {
            *encoded = Some(encode(src, len, name, plan)?);
        }
        let e = encoded.as_ref().expect("encoded above");
        let forms: Vec<String> = [(false, false), (true, false), (false, true), (true, true)]
            .into_iter()
            .map(|(z, a)| archive::stored_name(name, z, a))
            .collect();
        let guard: Vec<&str> = forms.iter().map(String::as_str).collect();
        let text = archive::checksums_text(name, &e.sums);
        let created = dest
            .create_beside(
                &e.path,
                &e.stored,
                &e.digests,
                &guard,
                &sums_rel,
                text.as_bytes(),
            )
            .map_err(|err| Error::msg(format!("push: {err}")))?;
        return match created {
            pgb_common::dest::Created::Published => Ok(()),
            pgb_common::dest::Created::Exists(_) => match archive::find_in(dest, name)?.0 {
                Some(found) => settle_remote(src, &found, name, dest, plan),
                None => Err(Error::msg(format!(
                    "push: {}: vanished while publishing",
                    dest.url_of(&e.stored)
                ))),
            },
        };
    }
    let (found, _) = archive::find_in(dest, name)?;
    if let Some(found) = found {
        return settle_remote(src, &found, name, dest, plan);
    }
    if encoded.is_none() {
        *encoded = Some(encode(src, len, name, plan)?);
    }
    let e = encoded.as_ref().expect("encoded above");
    dest.put_bytes_replace(archive::checksums_text(name, &e.sums).as_bytes(), &sums_rel)?;
    let copied = dest
        .put_file(&e.path, &e.stored, &e.digests, &|_| {}, Readback::Cache)
        .map_err(|err| Error::msg(format!("push: {err}")))?;
    if copied.existed {
        warn(format!(
            "{}: already archived with identical content",
            dest.url_of(&e.stored)
        ));
    }
    Ok(())
}

/// The remote counterpart of [`settle_existing`]: identical content (by the
/// checksum file when it describes the stored object and the object's bytes
/// match it, else by reading it back, decoding and comparing) is success;
/// anything else an error that keeps the object.
fn settle_remote(
    src: &Path,
    found: &archive::Found,
    name: &str,
    dest: &Destination,
    plan: &Plan,
) -> Result<()> {
    let url = dest.url_of(&found.file_name);
    let read = |what: &str| -> Result<Box<dyn Read + Send>> {
        dest.open_read(&found.file_name)
            .map_err(|e| Error::msg(format!("push: {what}: {e}")))
    };
    let sums = match archive::load_checksums_in(dest, name)? {
        archive::Recorded::Present(c) => Some(c),
        _ => None,
    };
    let hash_stored = || -> Result<Hashes> {
        let mut h = HashReader::new(read(&url)?, Algos::BOTH);
        io::copy(&mut h, &mut io::sink())
            .map_err(|e| Error::msg(format!("push: read: {url}: {e}")))?;
        Ok(h.finish())
    };
    let mut same = None;
    // The hashes of the object and of the source, when computed.
    let mut stored = None;
    let mut plain = None;
    if let Some(c) = sums.as_ref().filter(|c| c.stored_name == found.file_name) {
        let got = hash_stored()?;
        if got.sha256.as_deref() == Some(c.stored.as_str()) {
            let p = archive::hash_file(src)?;
            same = Some(p.sha256 == c.plain);
            plain = Some(Hashes::from(&p));
            stored = Some(got);
        }
    }
    // The checksum file describes the object: only blake3 may be missing.
    let described = same.is_some();
    let same = match same {
        Some(s) => s,
        None if !found.age => {
            let r = read(&url)?;
            let mut r: Box<dyn Read> = if found.zst {
                Box::new(zstd::stream::read::Decoder::new(r).ctx("decompress", Path::new(&url))?)
            } else {
                r
            };
            same_streams(src, &mut r, Path::new(&url), true)?
        }
        None => {
            let Some(ids) = plan.identities else {
                return Err(Error::msg(format!(
                    "push: {url}: already archived, encrypted, and its {name}{} does not describe \
                     it: cannot tell whether the content is identical without the key (give -i, \
                     or compare by hand); kept, not overwritten",
                    archive::CHECKSUM_SUFFIX
                )));
            };
            let dec = ids
                .decrypt(read(&url)?)
                .map_err(|e| Error::msg(format!("push: {url}: {e}")))?;
            let mut r: Box<dyn Read> = if found.zst {
                Box::new(zstd::stream::read::Decoder::new(dec).ctx("decompress", Path::new(&url))?)
            } else {
                Box::new(dec)
            };
            same_streams(src, &mut r, Path::new(&url), true)?
        }
    };
    if !same {
        return Err(Error::msg(format!(
            "push: {url}: already archived with different content (kept, not overwritten)"
        )));
    }
    // Identical: record its checksums when they are missing, describe
    // another form or lack blake3 (an older pgb-wal's), so get and the
    // archive check can compare.
    let needs = !described || sums.as_ref().is_none_or(|c| c.plain_blake3.is_none());
    if needs {
        let plain = match plain {
            Some(p) => p,
            None => Hashes::from(&archive::hash_file(src)?),
        };
        let want = if found.zst || found.age {
            let stored = match stored {
                Some(s) => s,
                None => hash_stored()?,
            };
            Checksums::encoded(&found.file_name, &plain, &stored)
        } else {
            Checksums::plain(name, &plain)
        };
        let rel = format!("{name}{}", archive::CHECKSUM_SUFFIX);
        dest.put_bytes_replace(archive::checksums_text(name, &want).as_bytes(), &rel)?;
    }
    warn(format!("{url}: already archived with identical content"));
    Ok(())
}

/// Removes temp files of `name` left in `dir` by killed pushes. Called
/// while holding the archive's lock, so no live push owns them.
fn remove_stale_temps(dir: &Path, name: &str) -> Result<()> {
    let prefix = format!(".{name}.");
    let prefix_plain = format!(".{name}{TEMP_MARK}");
    for e in fs::read_dir(dir).ctx("read directory", dir)? {
        let e = e.ctx("read directory", dir)?;
        let n = e.file_name().to_string_lossy().into_owned();
        if (n.starts_with(&prefix) || n.starts_with(&prefix_plain)) && n.contains(TEMP_MARK) {
            let p = e.path();
            if e.file_type().ctx("stat", &p)?.is_file() {
                fs::remove_file(&p).ctx("remove leftover", &p)?;
                warn(format!(
                    "{}: removed the temp file of a killed push",
                    p.display()
                ));
            }
        }
    }
    Ok(())
}

fn push_one(src: &Path, len: u64, name: &str, dir: &Path, plan: &Plan) -> Result<()> {
    let md = fs::metadata(dir).ctx("archive", dir)?;
    if !md.is_dir() {
        return Err(Error::io(
            "archive",
            dir,
            io::Error::other("not a directory"),
        ));
    }
    // One push at a time per archive: a later push may then remove what a
    // killed one left behind.
    let _lock = RepoLock::acquire(dir, Some(plan.lock_wait))?;
    remove_stale_temps(dir, name)?;
    if let Some(existing) = archive::find(dir, name)? {
        return settle_existing(src, &existing, name, dir, plan);
    }
    let zst = plan.level.is_some();
    let age = plan.recipients.is_some();
    let stored = archive::stored_name(name, zst, age);
    let target = dir.join(&stored);
    let mut out = AtomicFile::create(&target)?;
    let temp = out.temp_path().to_path_buf();
    let input = File::open(src).ctx("open", src)?;
    // The checksum file records the plaintext's sha256 and blake3 and, for
    // a file stored compressed or encrypted, the stored bytes'.
    let mut input = HashReader::new(input, Algos::BOTH);
    let w = HashWriter::new(&mut out, if zst || age { Algos::BOTH } else { Algos::NONE });
    let w = match (plan.level, plan.recipients) {
        (None, None) => {
            let mut w = w;
            io::copy(&mut input, &mut w).ctx("copy", &temp)?;
            w
        }
        (Some(l), None) => {
            let mut enc = zstd_encoder(w, l, len).ctx("compress", &temp)?;
            io::copy(&mut input, &mut enc).ctx("compress", &temp)?;
            enc.finish().ctx("compress", &temp)?
        }
        (None, Some(r)) => {
            let mut enc = r.encrypt(w)?;
            io::copy(&mut input, &mut enc).ctx("encrypt", &temp)?;
            enc.finish().ctx("encrypt", &temp)?
        }
        (Some(l), Some(r)) => {
            let mut enc = zstd_encoder(r.encrypt(w)?, l, len).ctx("compress", &temp)?;
            io::copy(&mut input, &mut enc).ctx("compress", &temp)?;
            enc.finish()
                .ctx("compress", &temp)?
                .finish()
                .ctx("encrypt", &temp)?
        }
    };
    let stored_hashes = w.finish();
    let plain = input.finish();
    out.flush().ctx("write", &temp)?;
    // Durable before the stored file appears, so that a published file
    // always has it (unless someone removed it): get and the archive check
    // compare what they read with it.
    let sums = if zst || age {
        Checksums::encoded(&stored, &plain, &stored_hashes)
    } else {
        Checksums::plain(name, &plain)
    };
    archive::write_checksums(dir, name, &sums)?;
    match out.commit() {
        Ok(()) => Ok(()),
        // Another push of the same file won the race: same rule as above.
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists => {
            let existing = archive::find(dir, name)?
                .ok_or_else(|| Error::msg(format!("push: {}: vanished", target.display())))?;
            settle_existing(src, &existing, name, dir, plan)
        }
        Err(e) => {
            // No checksum file for a file that never appeared.
            let _ = fs::remove_file(archive::checksum_path(dir, name));
            Err(e)
        }
    }
}

fn zstd_encoder<W: Write>(
    w: W,
    level: i32,
    len: u64,
) -> io::Result<zstd::stream::Encoder<'static, W>> {
    let mut enc = zstd::stream::Encoder::new(w, level)?;
    enc.include_checksum(true)?;
    enc.include_contentsize(true)?;
    enc.set_pledged_src_size(Some(len))?;
    Ok(enc)
}

/// An archived file of that name exists: identical content is success once
/// it is durable; different content is an error, and the file is kept; an
/// encrypted file whose content cannot be proven identical is an error too
/// (never a false success, never an overwrite).
fn settle_existing(
    src: &Path,
    existing: &Stored,
    name: &str,
    dir: &Path,
    plan: &Plan,
) -> Result<()> {
    let path = &existing.path;
    let same = if existing.age {
        same_encrypted(src, existing, name, dir, plan.identities)?
    } else {
        same_content(src, path, existing.zst)?
    };
    if !same {
        return Err(Error::msg(format!(
            "push: {}: already archived with different content (kept, not overwritten)",
            path.display()
        )));
    }
    if !existing.age {
        // The content is PostgreSQL's: record its checksums when the file
        // has none (archived by another tool, or by an older pgb-wal) or
        // ones that do not describe it.
        let plain = Hashes::from(&archive::hash_file(src)?);
        let want = if existing.zst {
            let stored = Hashes::from(&archive::hash_file(path)?);
            Checksums::encoded(&existing.file_name, &plain, &stored)
        } else {
            Checksums::plain(name, &plain)
        };
        if archive::read_checksums(dir, name)?.as_ref() != Some(&want) {
            archive::write_checksums(dir, name, &want)?;
        }
    }
    File::open(path)
        .and_then(|f| f.sync_all())
        .ctx("fsync", path)?;
    let c = archive::checksum_path(dir, name);
    File::open(&c).and_then(|f| f.sync_all()).ctx("fsync", &c)?;
    fsync_dir(dir)?;
    warn(format!(
        "{}: already archived with identical content",
        path.display()
    ));
    Ok(())
}

/// Compares `src` with an encrypted archived file: through its checksum
/// file when that describes the stored file, else by decrypting with -i.
fn same_encrypted(
    src: &Path,
    existing: &Stored,
    name: &str,
    dir: &Path,
    ids: Option<&Identities>,
) -> Result<bool> {
    let path = &existing.path;
    let sums = archive::read_checksums(dir, name)?;
    if let Some(c) = sums.filter(|c| c.stored_name == existing.file_name) {
        let stored = archive::hash_file(path)?;
        if stored.sha256 == c.stored {
            let plain = archive::hash_file(src)?;
            let same = plain.sha256 == c.plain;
            if same && c.plain_blake3.is_none() {
                // Written by an older pgb-wal: blake3 added, for get.
                let want = Checksums::encoded(
                    &existing.file_name,
                    &Hashes::from(&plain),
                    &Hashes::from(&stored),
                );
                archive::write_checksums(dir, name, &want)?;
            }
            return Ok(same);
        }
    }
    let Some(ids) = ids else {
        return Err(Error::msg(format!(
            "push: {}: already archived, encrypted, and {} does not describe it: \
             cannot tell whether the content is identical without the key (give -i, \
             or compare by hand); kept, not overwritten",
            path.display(),
            archive::checksum_path(dir, name).display()
        )));
    };
    let f = File::open(path).ctx("open", path)?;
    let dec = ids
        .decrypt(f)
        .map_err(|e| Error::msg(format!("push: {}: {e}", path.display())))?;
    let mut reader: Box<dyn Read> = if existing.zst {
        Box::new(zstd::stream::read::Decoder::new(dec).ctx("decompress", path)?)
    } else {
        Box::new(dec)
    };
    let same = same_streams(src, &mut reader, path, true)?;
    if same {
        // Repair the checksum file, so the next comparison needs no key.
        let want = Checksums::encoded(
            &existing.file_name,
            &Hashes::from(&archive::hash_file(src)?),
            &Hashes::from(&archive::hash_file(path)?),
        );
        archive::write_checksums(dir, name, &want)?;
    }
    Ok(same)
}

/// True when `archived` (decompressed when `zst`) holds the bytes of `src`.
fn same_content(src: &Path, archived: &Path, zst: bool) -> Result<bool> {
    let f = File::open(archived).ctx("open", archived)?;
    let mut b: Box<dyn Read> = if zst {
        Box::new(zstd::stream::read::Decoder::new(f).ctx("decompress", archived)?)
    } else {
        Box::new(f)
    };
    same_streams(src, &mut b, archived, zst)
}

/// Compares `src` with a stream read from `archived`. When `decoded`, a
/// read error of the stream (a corrupt compressed or encrypted copy) means
/// "not the same content".
fn same_streams(src: &Path, b: &mut dyn Read, archived: &Path, decoded: bool) -> Result<bool> {
    let mut a = File::open(src).ctx("open", src)?;
    let mut ba = vec![0u8; 1 << 16];
    let mut bb = vec![0u8; 1 << 16];
    loop {
        let na = read_full(&mut a, &mut ba).ctx("read", src)?;
        let nb = match read_full(&mut &mut *b, &mut bb) {
            Ok(n) => n,
            Err(_) if decoded => return Ok(false),
            Err(e) => return Err(Error::io("read", archived, e)),
        };
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_flag() {
        assert_eq!(parse_compress("none").unwrap(), None);
        assert_eq!(parse_compress("zstd").unwrap(), Some(3));
        assert_eq!(parse_compress("zstd:19").unwrap(), Some(19));
        assert!(parse_compress("zstd:0").is_err());
        assert!(parse_compress("gzip").is_err());
    }
}
