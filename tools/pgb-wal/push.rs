//! `pgb-wal push`: archive one WAL file durably into every archive.

use pgb_common::fs::read_full;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use pgb_common::error::{Error, IoContext, Result};
use pgb_common::term::warn;
use pgb_common::walhdr::{classify, WalFile};
use pgb_common::{fsync_dir, AtomicFile, ExitStatus};

use crate::cli::PushArgs;

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
    let level = match kind {
        WalFile::Segment { .. } | WalFile::Partial { .. } => level,
        WalFile::History { .. } | WalFile::Backup { .. } => None,
    };
    let meta = fs::metadata(&args.path).ctx("push", &args.path)?;
    if !meta.is_file() {
        return Err(Error::msg(format!(
            "push: {}: not a regular file",
            args.path.display()
        )));
    }
    let mut status = ExitStatus::Ok;
    for dir in &args.archive {
        if let Err(e) = push_one(&args.path, meta.len(), &name, dir, level) {
            warn(e.to_string());
            status = status.worst(e.exit_status());
        }
    }
    Ok(status)
}

/// The two names a file may be archived under: as chosen now, and in the
/// other form (plain or .zst), for segments.
fn names(
    dir: &Path,
    name: &str,
    level: Option<i32>,
    compressible: bool,
) -> (PathBuf, Option<PathBuf>) {
    let plain = dir.join(name);
    let zst = dir.join(format!("{name}.zst"));
    match (level, compressible) {
        (Some(_), _) => (zst, Some(plain)),
        (None, true) => (plain, Some(zst)),
        (None, false) => (plain, None),
    }
}

fn push_one(src: &Path, len: u64, name: &str, dir: &Path, level: Option<i32>) -> Result<()> {
    let md = fs::metadata(dir).ctx("archive", dir)?;
    if !md.is_dir() {
        return Err(Error::io(
            "archive",
            dir,
            io::Error::other("not a directory"),
        ));
    }
    let compressible = !(name.ends_with(".history") || name.ends_with(".backup"));
    let (target, other) = names(dir, name, level, compressible);
    for existing in std::iter::once(&target).chain(other.as_ref()) {
        if fs::symlink_metadata(existing).is_ok() {
            return settle_existing(src, existing, dir);
        }
    }
    let mut out = AtomicFile::create(&target)?;
    let temp = out.temp_path().to_path_buf();
    let mut input = File::open(src).ctx("open", src)?;
    match level {
        None => {
            io::copy(&mut input, &mut out).ctx("copy", &temp)?;
        }
        Some(l) => {
            let mut enc = zstd::stream::Encoder::new(&mut out, l).ctx("compress", &temp)?;
            enc.include_checksum(true).ctx("compress", &temp)?;
            enc.include_contentsize(true).ctx("compress", &temp)?;
            enc.set_pledged_src_size(Some(len)).ctx("compress", &temp)?;
            io::copy(&mut input, &mut enc).ctx("compress", &temp)?;
            enc.finish().ctx("compress", &temp)?;
        }
    }
    out.flush().ctx("write", &temp)?;
    match out.commit() {
        Ok(()) => Ok(()),
        // Another push of the same file won the race: same rule as above.
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists => {
            settle_existing(src, &target, dir)
        }
        Err(e) => Err(e),
    }
}

/// An archived file of that name exists: identical content is success once
/// it is durable; different content is an error, and the file is kept.
fn settle_existing(src: &Path, existing: &Path, dir: &Path) -> Result<()> {
    let zst = existing.extension().is_some_and(|e| e == "zst");
    if !same_content(src, existing, zst)? {
        return Err(Error::msg(format!(
            "push: {}: already archived with different content (kept, not overwritten)",
            existing.display()
        )));
    }
    File::open(existing)
        .and_then(|f| f.sync_all())
        .ctx("fsync", existing)?;
    fsync_dir(dir)?;
    warn(format!(
        "{}: already archived with identical content",
        existing.display()
    ));
    Ok(())
}

/// True when `archived` (decompressed when `zst`) holds the bytes of `src`.
fn same_content(src: &Path, archived: &Path, zst: bool) -> Result<bool> {
    let mut a = File::open(src).ctx("open", src)?;
    let f = File::open(archived).ctx("open", archived)?;
    let mut b: Box<dyn Read> = if zst {
        Box::new(zstd::stream::read::Decoder::new(f).ctx("decompress", archived)?)
    } else {
        Box::new(f)
    };
    let mut ba = vec![0u8; 1 << 16];
    let mut bb = vec![0u8; 1 << 16];
    loop {
        let na = read_full(&mut a, &mut ba).ctx("read", src)?;
        let nb = match read_full(&mut b, &mut bb) {
            Ok(n) => n,
            // A corrupt archived copy is not the same content.
            Err(_) if zst => return Ok(false),
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
