//! Restoring a chain of incremental backups: every member unpacked (its
//! stored bytes checked against its record, its files against its
//! backup_manifest; the WAL tar only of the newest, the only one
//! pg_combinebackup uses) into a temp area next to the target, then
//! pg_combinebackup of the chain's major writes the target data directory
//! (with `--link` on 18, `--copy-file-range` on 17, where the target
//! shares the temp area's file system: the inputs are this run's private
//! copies, never the repository's; no checksums in its manifest, so that
//! it never reads what it writes), and pg_verifybackup checks that the result holds every
//! file of the manifest pg_combinebackup wrote, with its size. Shared by pgb-restore and
//! pgb-verify --restore.
//!
//! Tablespaces: each member's tablespaces are unpacked beside it and linked
//! from its `pg_tblspc` (pg_combinebackup finds them only through those
//! links, and without them it leaves the tablespace out and still exits 0);
//! the result's go where `tablespace_map` (or the caller's map) says.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::physical::{self, layout, Options, Restored};
use crate::record::Artifact;
use crate::unpack::Owner;

/// A directory removed (with everything in it) when dropped.
struct Work(PathBuf);

impl Drop for Work {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The temp area for restoring into `dest`: a hidden directory beside it.
pub fn work_dir(dest: &Path) -> PathBuf {
    dest.with_file_name(format!("{}{}", work_prefix(dest), std::process::id()))
}

fn work_prefix(dest: &Path) -> String {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pgdata".into());
    format!(".{name}{}chain.", crate::fs::TEMP_MARK)
}

/// Removes the temp areas beside `dest` left by chain restores that were
/// killed (their process is gone), naming each on stderr.
fn remove_leftovers(dest: &Path) {
    let (Some(parent), prefix) = (dest.parent(), work_prefix(dest)) else {
        return;
    };
    for e in std::fs::read_dir(parent).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(&prefix)
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let alive = pid > 0
            && matches!(
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
                Ok(()) | Err(nix::errno::Errno::EPERM)
            );
        if !alive && e.file_type().is_ok_and(|t| t.is_dir()) {
            crate::term::warn(format!(
                "removing the temp area of an interrupted restore: {}",
                e.path().display()
            ));
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Where each tablespace of the newest member goes: the caller's map, else
/// the location the record (taken from the server) gives.
fn final_locations(newest: &Artifact, map: &BTreeMap<u32, PathBuf>) -> Result<Vec<(u32, PathBuf)>> {
    let l = layout(newest)?;
    for oid in map.keys() {
        if !l.tablespaces.iter().any(|(o, _)| o == oid) {
            return Err(Error::Usage(format!(
                "--tablespace-map {oid}=...: the backup has no tablespace with OID {oid}"
            )));
        }
    }
    let recorded: BTreeMap<u64, String> = newest
        .extra
        .get("tablespaces")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| {
            Some((
                t.get("oid")?.as_u64()?,
                t.get("location")?.as_str()?.to_string(),
            ))
        })
        .collect();
    l.tablespaces
        .iter()
        .map(|(oid, name)| {
            let to = match map.get(oid) {
                Some(p) => p.clone(),
                None => recorded
                    .get(&u64::from(*oid))
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
                    .ok_or_else(|| {
                        Error::msg(format!(
                            "{}: {name}: the record does not say where tablespace {oid} was; \
                             give --tablespace-map {oid}=DIR",
                            newest.id
                        ))
                    })?,
            };
            let nonempty = std::fs::read_dir(&to).is_ok_and(|mut rd| rd.next().is_some());
            if nonempty {
                return Err(Error::msg(format!(
                    "tablespace location {} is not empty; relocate it with --tablespace-map {oid}=DIR",
                    to.display()
                )));
            }
            Ok((*oid, to))
        })
        .collect()
}

/// Restores `chain` (oldest first, as [`crate::chain::resolve`] gives it)
/// into `dest`, an existing empty directory. `bindir` holds the chain's
/// major's pg_combinebackup and pg_verifybackup. On error the caller
/// removes what was written in `dest`; the temp area is always removed.
pub fn restore_chain(
    chain: &[Artifact],
    dest: &Path,
    opts: &Options,
    bindir: &Path,
) -> Result<Restored> {
    let newest = chain.last().ok_or_else(|| Error::msg("an empty chain"))?;
    let finals = final_locations(newest, &opts.tablespace_map)?;
    remove_leftovers(dest);
    let work = Work(work_dir(dest));
    if work.0.exists() {
        std::fs::remove_dir_all(&work.0).ctx("remove", &work.0)?;
    }
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&work.0)
            .ctx("create directory", &work.0)?;
    }
    // Every member unpacked (and checked) into its own directory, by a few
    // threads at once: one takes the full backup, the largest, the others
    // the incrementals meanwhile. A failure stops the threads at their
    // next member; the oldest member that failed is the one named. Age
    // identities cannot be shared between threads (the age crate's are not
    // Sync): an encrypted chain is unpacked one member at a time.
    let dirs: Vec<(PathBuf, BTreeMap<u32, PathBuf>)> = chain
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let ts_map = layout(m)?
                .tablespaces
                .iter()
                .map(|(oid, _)| (*oid, work.0.join(format!("{i}-tblspc-{oid}"))))
                .collect();
            Ok((work.0.join(format!("{i}")), ts_map))
        })
        .collect::<Result<_>>()?;
    let unpack_one = |i: usize, ids: Option<&crate::crypt::Identities>| -> Result<Restored> {
        let (m, (dir, ts_map)) = (&chain[i], &dirs[i]);
        std::fs::create_dir(dir).ctx("create directory", dir)?;
        physical::restore(
            m,
            dir,
            &Options {
                owner: None,
                identities: ids,
                tablespace_map: ts_map.clone(),
                skip_wal: i + 1 < chain.len(),
            },
        )
        .map_err(|e| match e {
            Error::Damaged(why) => Error::Damaged(format!("chain member {}: {why}", m.id)),
            other => Error::msg(format!("chain member {}: {other}", m.id)),
        })
    };
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4)
        .min(chain.len());
    let mut results: Vec<(usize, Result<Restored>)> = Vec::new();
    if let Some(ids) = opts.identities {
        for i in 0..chain.len() {
            let r = unpack_one(i, Some(ids));
            let stop = r.is_err();
            results.push((i, r));
            if stop {
                break;
            }
        }
    } else {
        results = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        use std::sync::atomic::Ordering;
                        let mut done = Vec::new();
                        while !failed.load(Ordering::Relaxed) {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= chain.len() {
                                break;
                            }
                            let r = unpack_one(i, None);
                            if r.is_err() {
                                failed.store(true, Ordering::Relaxed);
                            }
                            done.push((i, r));
                        }
                        done
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().expect("an unpacking thread panicked"))
                .collect()
        });
    }
    results.sort_by_key(|(i, _)| *i);
    let results_len = results.len();
    let mut out = Restored::default();
    for (i, r) in results {
        let r = r?;
        out.files += r.files;
        out.bytes += r.bytes;
        out.group_access = r.group_access;
        out.manifest_checked = if i == 0 {
            r.manifest_checked
        } else {
            out.manifest_checked && r.manifest_checked
        };
    }
    if failed.into_inner() || results_len < chain.len() {
        return Err(Error::msg("a chain member was not unpacked"));
    }
    let inputs: Vec<PathBuf> = dirs.iter().map(|(d, _)| d.clone()).collect();
    let last_ts: Vec<(u32, PathBuf)> = dirs
        .last()
        .map(|(_, t)| t.clone().into_iter().collect())
        .unwrap_or_default();

    let combine = bindir.join("pg_combinebackup");
    let mut cmd = std::process::Command::new(&combine);
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .arg("--no-sync")
        // No checksums in the combined manifest: pg_combinebackup would
        // otherwise read every byte it writes to compute them (CRC32C by
        // default, where the members' manifests carry SHA256), and a file
        // needing a checksum is always copied byte by byte, never linked
        // or copied by the kernel. Nothing reads them: every byte was
        // checked against its member's record and manifest as it was
        // unpacked, and the result is checked below for every file and
        // its size (pg_verifybackup --skip-checksums).
        .arg("--manifest-checksums=NONE")
        .arg("-o")
        .arg(dest);
    // The inputs are this run's private temp copies, removed afterwards:
    // pg_combinebackup 18 may hard-link their unchanged files into the
    // target instead of copying every byte a second time (--link may leave
    // the inputs modified, which is why it is never used on a repository's
    // own copies); 17 (and 18 where linking is not possible) copies them
    // in the kernel (copy_file_range: no pass through user space, and a
    // clone on file systems that share extents). Only where every output
    // lies on the temp area's file system: neither works across two.
    let major = crate::pgbin::version_of(&combine).and_then(|v| crate::pgbin::major_of(&v));
    if same_file_system(&work.0, dest, &finals) {
        match major {
            Some(m) if m >= 18 => {
                cmd.arg("--link");
            }
            Some(17) => {
                cmd.arg("--copy-file-range");
            }
            _ => {}
        }
    }
    for (oid, tmp) in &last_ts {
        let to = finals
            .iter()
            .find(|(o, _)| o == oid)
            .map(|(_, p)| p)
            .ok_or_else(|| Error::msg(format!("tablespace {oid}: no location")))?;
        let esc = |p: &Path| p.display().to_string().replace('=', "\\=");
        cmd.arg("-T").arg(format!("{}={}", esc(tmp), esc(to)));
    }
    cmd.args(&inputs);
    crate::pg::spawn(cmd, "combine the chain")?.wait()?;
    // From here on a failure leaves no combined tablespace behind (the
    // caller empties the target; the locations were empty or absent).
    // The inputs are no longer needed: they are removed (a full backup's
    // worth of files) while the result is checked and handed over.
    let r = std::thread::scope(|s| {
        let cleaner = s.spawn(move || drop(work));
        let r = finish(dest, &finals, opts, bindir);
        let _ = cleaner.join();
        r
    });
    if r.is_err() {
        for (_, loc) in &finals {
            if loc.is_dir() {
                let _ = physical::clear_dir(loc);
            }
        }
    }
    r?;
    out.tablespaces = finals;
    Ok(out)
}

/// Whether `work`, `dest` and every tablespace location (or, for one not
/// made yet, its parent) are on one file system.
fn same_file_system(work: &Path, dest: &Path, finals: &[(u32, PathBuf)]) -> bool {
    use std::os::unix::fs::MetadataExt;
    let dev = |p: &Path| {
        p.ancestors()
            .find_map(|a| std::fs::metadata(a).ok())
            .map(|m| m.dev())
    };
    let Some(d) = dev(work) else {
        return false;
    };
    std::iter::once(dest)
        .chain(finals.iter().map(|(_, p)| p.as_path()))
        .all(|p| dev(p) == Some(d))
}

/// After pg_combinebackup: verify the result, point tablespace_map at the
/// real locations, give everything to the owner, sync the tablespaces.
fn finish(dest: &Path, finals: &[(u32, PathBuf)], opts: &Options, bindir: &Path) -> Result<()> {
    let mut verify = std::process::Command::new(bindir.join("pg_verifybackup"));
    verify
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        // Every file the combined manifest lists is there with its size
        // (a tablespace pg_combinebackup left out is caught here); the
        // bytes were checked against each member's record and manifest as
        // they were unpacked, so they are not read a third time.
        .args(["--no-parse-wal", "--quiet", "--skip-checksums"])
        .arg(dest);
    crate::pg::spawn(verify, "verify the combined backup")?
        .wait()
        .map_err(|e| {
            Error::msg(format!(
                "the chain did not combine into a valid backup: {e}"
            ))
        })?;

    // The combined tablespace_map is the newest member's, pointing into the
    // temp area: point it at the real locations (PostgreSQL makes the
    // links from it at startup).
    if !finals.is_empty() {
        let mut text = String::new();
        for (oid, loc) in finals {
            text.push_str(&format!("{oid} {}\n", loc.display()));
        }
        physical::write_owned(&dest.join("tablespace_map"), text.as_bytes(), None, true)?;
    }
    if let Some(o) = opts.owner {
        chown_tree(dest, o)?;
        for (_, loc) in finals {
            chown_tree(loc, o)?;
        }
    }
    // pg_combinebackup ran with --no-sync: the caller syncs the target's
    // file system; a tablespace may live on another.
    for (_, loc) in finals {
        crate::unpack::sync_fs(loc)?;
    }
    Ok(())
}

/// Gives `root` and everything below it (symlinks not followed) to `o`.
fn chown_tree(root: &Path, o: Owner) -> Result<()> {
    o.apply(root)?;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).ctx("read directory", &d)? {
            let e = e.ctx("read directory", &d)?;
            let p = e.path();
            o.apply(&p)?;
            if e.file_type().ctx("stat", &p)?.is_dir() {
                stack.push(p);
            }
        }
    }
    Ok(())
}
