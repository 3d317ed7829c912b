//! Streams a child's output to a file in the repository: compressed (or
//! not), hashed on the way, under a temp name until committed.

use std::io::{Read, Write};

use pgb_common::digest::{Digests, HashingWriter};
use pgb_common::error::{Error, Result};
use pgb_common::record::Compression;
use pgb_common::term::Progress;
use pgb_common::AtomicFile;

/// How a stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// pgb compresses with multi-threaded zstd at this level.
    Zstd(i32),
    /// The PostgreSQL program compresses (pg_dump -Z, pg_basebackup gzip).
    Native(i32),
    /// Stored as produced.
    None,
}

impl Method {
    pub fn parse(s: &str) -> Result<Method> {
        let (name, level) = match s.split_once(':') {
            Some((n, l)) => {
                let l: i32 = l
                    .parse()
                    .map_err(|_| Error::Usage(format!("--compress {s}: level must be a number")))?;
                (n, Some(l))
            }
            None => (s, None),
        };
        match name {
            "zstd" => {
                let l = level.unwrap_or(3);
                if !(1..=19).contains(&l) {
                    return Err(Error::Usage(format!(
                        "--compress {s}: zstd levels are 1 to 19"
                    )));
                }
                Ok(Method::Zstd(l))
            }
            "pg_dump" | "gzip" => {
                let l = level.unwrap_or(6);
                if !(1..=9).contains(&l) {
                    return Err(Error::Usage(format!(
                        "--compress {s}: gzip levels are 1 to 9"
                    )));
                }
                Ok(Method::Native(l))
            }
            "none" if level.is_none() => Ok(Method::None),
            _ => Err(Error::Usage(format!(
                "--compress {s}: expected zstd[:LEVEL], pg_dump[:LEVEL] or none"
            ))),
        }
    }
}

impl Method {
    /// The record's `compression`: zstd is pgb's own unless `zstd_by` says
    /// the PostgreSQL program did it (pg_basebackup); gzip is always the
    /// program's (`native_by`).
    pub fn record(self, zstd_by: &str, native_by: &str) -> Compression {
        let (algorithm, level, by) = match self {
            Method::Zstd(l) => ("zstd", Some(l), zstd_by),
            Method::Native(l) => ("gzip", Some(l), native_by),
            Method::None => ("none", None, zstd_by),
        };
        Compression {
            algorithm: algorithm.into(),
            level,
            by: by.into(),
        }
    }
}

/// Copies everything `src` yields into `dst`, through zstd when `zstd` is
/// given, hashing the bytes as they are written. Returns the file, not yet
/// committed, and the digests of its bytes.
pub fn store(
    mut src: impl Read,
    dst: AtomicFile,
    zstd: Option<(i32, u32)>,
    progress: &Progress,
) -> Result<(AtomicFile, Digests)> {
    let target = dst.target().to_path_buf();
    let werr = |e: std::io::Error| Error::io("write", &target, e);
    let mut buf = vec![0u8; 1 << 20];
    let mut pump = |out: &mut dyn Write| -> Result<()> {
        loop {
            let n = match src.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("read", "child output", e)),
            };
            progress.add(n as u64);
            out.write_all(&buf[..n]).map_err(werr)?;
        }
    };
    let hashing = HashingWriter::new(dst);
    let hashing = match zstd {
        Some((level, threads)) => {
            let mut enc = zstd::stream::write::Encoder::new(hashing, level).map_err(werr)?;
            if threads > 1 {
                enc.multithread(threads).map_err(werr)?;
            }
            pump(&mut enc)?;
            enc.finish().map_err(werr)?
        }
        None => {
            let mut h = hashing;
            pump(&mut h)?;
            h
        }
    };
    let (mut file, digests) = hashing.finish();
    file.flush().map_err(werr)?;
    Ok((file, digests))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_methods() {
        assert_eq!(Method::parse("zstd").unwrap(), Method::Zstd(3));
        assert_eq!(Method::parse("zstd:9").unwrap(), Method::Zstd(9));
        assert_eq!(Method::parse("pg_dump").unwrap(), Method::Native(6));
        assert_eq!(Method::parse("pg_dump:1").unwrap(), Method::Native(1));
        assert_eq!(Method::parse("none").unwrap(), Method::None);
        for bad in ["zstd:0", "zstd:x", "lz4", "pg_dump:10", "none:1"] {
            assert!(Method::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stores_what_it_hashes() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("x.zst");
        let data: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let f = AtomicFile::create(&target).unwrap();
        let (f, digests) = store(&data[..], f, Some((3, 2)), &Progress::new("t")).unwrap();
        f.commit().unwrap();
        let on_disk = std::fs::read(&target).unwrap();
        assert_eq!(
            digests,
            pgb_common::digest::hash_reader(&on_disk[..]).unwrap()
        );
        assert_eq!(zstd::decode_all(&on_disk[..]).unwrap(), data);
    }
}
