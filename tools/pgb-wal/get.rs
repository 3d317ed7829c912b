//! `pgb-wal get`: fetch one WAL file for restore_command.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use pgb_common::error::{Error, IoContext, Result};
use pgb_common::term::warn;
use pgb_common::{AtomicFile, ExitStatus};

use crate::cli::GetArgs;

pub fn run(args: &GetArgs) -> Result<ExitStatus> {
    let name = &args.name;
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(Error::Usage(format!("{name:?}: not a WAL file name")));
    }
    for dir in &args.archive {
        // A missing archive directory (an unmounted disk) must not end
        // recovery as if the archive were simply exhausted.
        let md = fs::metadata(dir).ctx("archive", dir)?;
        if !md.is_dir() {
            return Err(Error::io(
                "archive",
                dir,
                io::Error::other("not a directory"),
            ));
        }
        if let Some((path, zst)) = find(dir, name)? {
            fetch(&path, zst, &args.dest)?;
            return Ok(ExitStatus::Ok);
        }
    }
    warn(format!("get: {name}: not in the archive"));
    Ok(ExitStatus::No)
}

fn find(dir: &Path, name: &str) -> Result<Option<(PathBuf, bool)>> {
    for (p, zst) in [
        (dir.join(name), false),
        (dir.join(format!("{name}.zst")), true),
    ] {
        match fs::metadata(&p) {
            Ok(_) => return Ok(Some((p, zst))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("stat", &p, e)),
        }
    }
    Ok(None)
}

fn fetch(src: &Path, zst: bool, dest: &Path) -> Result<()> {
    let mut input = File::open(src).ctx("open", src)?;
    let mut out = AtomicFile::create(dest)?;
    let temp = out.temp_path().to_path_buf();
    if zst {
        let mut dec = zstd::stream::read::Decoder::new(input).ctx("decompress", src)?;
        io::copy(&mut dec, &mut out).ctx("decompress", src)?;
    } else {
        io::copy(&mut input, &mut out).ctx("copy", &temp)?;
    }
    out.flush().ctx("write", &temp)?;
    out.commit_replace()
}
