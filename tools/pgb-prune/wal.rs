//! WAL expiry: which files of a WAL archive no kept physical backup needs.
//!
//! A kept base backup needs the WAL from its start segment onwards, on its
//! own timeline and on every timeline descending from it. So, per timeline
//! T of the archive, the cutoff is the lowest start segment number of the
//! kept backups whose timeline is T or an ancestor of T (from `T.history`);
//! when no kept backup is on T or its ancestors, the cutoff is the lowest
//! start of all kept backups. Files of T whose segment number is below the
//! cutoff go: segments, `.partial` files and `.backup` labels, each judged
//! by the segment in its name, with `.zst` and `.age` suffixes understood;
//! the checksum file `NAME.sha256` pgb-wal push keeps beside each goes with
//! it, after it.
//! `.history` files are always kept, as is anything not named like WAL.
//! With no kept physical backup nothing is removed.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::unistd::{fsync, unlinkat, UnlinkatFlags};
use pgb_common::dest::Destination;
use pgb_common::error::{Error, IoContext, Result};
use pgb_common::wal::segment_name_for_segno;
use pgb_common::walhdr::{classify, parse_history, segno_of, PageHeader, WalFile};

/// A kept physical backup, as WAL expiry sees it.
#[derive(Debug, Clone)]
pub struct Needs {
    pub id: String,
    pub timeline: u32,
    pub start_segno: u64,
}

/// What an archive file name is, once `.age` and `.zst` are taken off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Named {
    /// A segment, `.partial` or `.backup` file of `tli` at `segno`.
    Wal {
        tli: u32,
        segno: u64,
    },
    History(u32),
    Other,
}

pub fn name_of(name: &str, seg_size: u64) -> Named {
    let name = name
        .strip_suffix(pgb_common::walarchive::CHECKSUM_SUFFIX)
        .unwrap_or(name);
    let base = name.strip_suffix(".age").unwrap_or(name);
    match classify(base) {
        Some((WalFile::Segment { tli, log, seg }, _))
        | Some((WalFile::Partial { tli, log, seg }, _))
        | Some((WalFile::Backup { tli, log, seg }, _)) => match segno_of(log, seg, seg_size) {
            Some(segno) => Named::Wal { tli, segno },
            None => Named::Other,
        },
        Some((WalFile::History { tli }, _)) => Named::History(tli),
        None => Named::Other,
    }
}

/// One contiguous run of files to remove on a timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub timeline: u32,
    pub first: String,
    pub last: String,
    pub files: Vec<String>,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct WalPlan {
    /// Files to remove, oldest first per timeline.
    pub ranges: Vec<Range>,
    /// Why nothing is removed, when nothing is.
    pub nothing: Option<String>,
}

impl WalPlan {
    #[cfg(test)]
    pub fn files(&self) -> impl Iterator<Item = &String> {
        self.ranges.iter().flat_map(|r| r.files.iter())
    }
}

/// Plans the expiry of `names` (the archive's file names). `ancestors`
/// maps a timeline to its ancestors, from its history file.
pub fn plan(
    names: &[String],
    kept: &[Needs],
    ancestors: &HashMap<u32, Vec<u32>>,
    seg_size: u64,
) -> WalPlan {
    if kept.is_empty() {
        return WalPlan {
            ranges: Vec::new(),
            nothing: Some("no physical backup is kept: the WAL archive is left alone".into()),
        };
    }
    let oldest = kept
        .iter()
        .min_by(|a, b| a.start_segno.cmp(&b.start_segno).then(a.id.cmp(&b.id)))
        .expect("non-empty");
    // Files per timeline, by segment number.
    let mut per_tli: BTreeMap<u32, BTreeMap<u64, Vec<String>>> = BTreeMap::new();
    for n in names {
        if let Named::Wal { tli, segno } = name_of(n, seg_size) {
            per_tli
                .entry(tli)
                .or_default()
                .entry(segno)
                .or_default()
                .push(n.clone());
        }
    }
    // A checksum file is removed after the file it describes, never before.
    for segs in per_tli.values_mut() {
        for files in segs.values_mut() {
            files.sort_by_key(|n| n.ends_with(pgb_common::walarchive::CHECKSUM_SUFFIX));
        }
    }
    let mut ranges = Vec::new();
    for (tli, segs) in per_tli {
        let line: Vec<u32> = std::iter::once(tli)
            .chain(ancestors.get(&tli).into_iter().flatten().copied())
            .collect();
        let own = kept
            .iter()
            .filter(|b| line.contains(&b.timeline))
            .min_by(|a, b| a.start_segno.cmp(&b.start_segno).then(a.id.cmp(&b.id)));
        let (cut, reason) = match own {
            Some(b) => (
                b.start_segno,
                format!(
                    "before {}, the start of backup {}, the oldest kept physical backup on timeline {tli} or its ancestors",
                    segment_name_for_segno(b.timeline, b.start_segno, seg_size),
                    b.id
                ),
            ),
            None => (
                oldest.start_segno,
                format!(
                    "before {}, the start of backup {}, the oldest kept physical backup (none is on timeline {tli} or its ancestors)",
                    segment_name_for_segno(oldest.timeline, oldest.start_segno, seg_size),
                    oldest.id
                ),
            ),
        };
        let mut cur: Option<(u64, Range)> = None;
        for (segno, mut files) in segs.range(..cut).map(|(s, f)| (*s, f.clone())) {
            files.sort();
            let name = segment_name_for_segno(tli, segno, seg_size);
            match &mut cur {
                Some((prev, r)) if *prev + 1 == segno => {
                    r.last = name;
                    r.files.extend(files);
                    *prev = segno;
                }
                _ => {
                    if let Some((_, r)) = cur.take() {
                        ranges.push(r);
                    }
                    cur = Some((
                        segno,
                        Range {
                            timeline: tli,
                            first: name.clone(),
                            last: name,
                            files,
                            reason: reason.clone(),
                        },
                    ));
                }
            }
        }
        if let Some((_, r)) = cur {
            ranges.push(r);
        }
    }
    let nothing = ranges
        .is_empty()
        .then(|| "nothing in the archive is older than what the kept backups need".to_string());
    WalPlan { ranges, nothing }
}

/// A WAL archive: a directory, or an `ssh://` or `s3://` archive reached
/// through the storage layer.
pub enum Archive {
    Local(PathBuf),
    Remote(Destination),
}

impl Archive {
    pub fn of(dir: &Path) -> Result<Archive> {
        if pgb_common::store::is_url(dir) {
            let url = dir.to_str().unwrap_or_default();
            Ok(Archive::Remote(Destination::parse_url(url)?))
        } else {
            Ok(Archive::Local(dir.to_path_buf()))
        }
    }

    /// The archive as records name it.
    pub fn name(&self) -> String {
        match self {
            Archive::Local(d) => d.display().to_string(),
            Archive::Remote(d) => d.root_url(),
        }
    }
}

/// The archive's file names (regular files only, sorted).
pub fn list(archive: &Archive) -> Result<Vec<String>> {
    let dir = match archive {
        Archive::Local(d) => d,
        Archive::Remote(d) => {
            let mut out: Vec<String> = d.list("", "")?.into_iter().map(|l| l.name).collect();
            out.sort();
            return Ok(out);
        }
    };
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).ctx("read directory", dir)? {
        let e = e.ctx("read directory", dir)?;
        if !e.file_type().ctx("stat", e.path())?.is_file() {
            continue;
        }
        if let Some(n) = e.file_name().to_str() {
            out.push(n.to_string());
        }
    }
    out.sort();
    Ok(out)
}

/// Ancestors of each timeline with a readable plain history file.
pub fn ancestors(archive: &Archive, names: &[String]) -> Result<HashMap<u32, Vec<u32>>> {
    let mut out = HashMap::new();
    // A remote archive's history files are read together (one session on
    // an SSH host).
    let remote = match archive {
        Archive::Remote(d) if names.iter().any(|n| n.ends_with(".history")) => {
            Some(d.read_suffix(".history", 1 << 20)?)
        }
        _ => None,
    };
    for n in names {
        let Some(h) = n.strip_suffix(".history") else {
            continue;
        };
        let Ok(tli) = u32::from_str_radix(h, 16) else {
            continue;
        };
        let (text, p) = match archive {
            Archive::Local(dir) => {
                let p = dir.join(n);
                (
                    std::fs::read_to_string(&p).ctx("read", &p)?,
                    p.display().to_string(),
                )
            }
            Archive::Remote(d) => {
                let u = d.url_of(n);
                let b = remote
                    .as_ref()
                    .and_then(|m| m.get(n).cloned())
                    .ok_or_else(|| Error::msg(format!("{u}: gone while being read")))?;
                let t =
                    String::from_utf8(b).map_err(|_| Error::msg(format!("{u}: not UTF-8 text")))?;
                (t, u)
            }
        };
        let entries = parse_history(&text).map_err(|e| Error::msg(format!("{p}: {e}")))?;
        out.insert(tli, entries.iter().map(|e| e.parent_tli).collect());
    }
    Ok(out)
}

/// The system identifier and segment size in the long header of the
/// newest readable segment (plain or `.zst`), if any.
pub fn archive_identity(archive: &Archive, names: &[String]) -> Option<(u64, u64)> {
    for n in names.iter().rev() {
        let (kind, zst) = match classify(n) {
            Some(k) => k,
            None => continue,
        };
        if !matches!(kind, WalFile::Segment { .. }) {
            continue;
        }
        let opened: std::io::Result<Box<dyn Read + Send>> = match archive {
            Archive::Local(dir) => {
                std::fs::File::open(dir.join(n)).map(|f| Box::new(f) as Box<dyn Read + Send>)
            }
            Archive::Remote(d) => d
                .open_read(n)
                .map_err(|e| std::io::Error::other(e.to_string())),
        };
        let Ok(f) = opened else {
            continue;
        };
        let mut head = [0u8; 40];
        let ok = if zst {
            zstd::stream::read::Decoder::new(f)
                .and_then(|mut d| d.read_exact(&mut head))
                .is_ok()
        } else {
            let mut f = f;
            f.read_exact(&mut head).is_ok()
        };
        if !ok {
            continue;
        }
        if let Some(l) = PageHeader::parse(&head).and_then(|h| h.long) {
            return Some((l.sysid, l.seg_size as u64));
        }
    }
    None
}

/// Removes the planned files, oldest first, by name in the archive
/// directory (never through a symlink; fsyncs the directory), or through
/// the storage layer in a remote archive.
pub fn remove(archive: &Archive, files: &[&String]) -> Result<usize> {
    let dir = match archive {
        Archive::Local(d) => d,
        Archive::Remote(d) => {
            // One batch (one session on an SSH host), in order.
            let rels: Vec<&str> = files.iter().map(|f| f.as_str()).collect();
            d.remove_many(&rels)?;
            return Ok(files.len());
        }
    };
    let d = std::fs::File::open(dir).ctx("open", dir)?;
    let fd = d.as_raw_fd();
    let mut n = 0;
    for f in files {
        let p = dir.join(f);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_file() => {}
            Ok(_) => {
                return Err(Error::msg(format!(
                    "refused: {} is not a regular file",
                    p.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("stat", &p, e)),
        }
        match unlinkat(Some(fd), f.as_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) => n += 1,
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(Error::io("remove", &p, e.into())),
        }
    }
    fsync(fd).map_err(|e| Error::io("fsync", dir, e.into()))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const M: u64 = 1 << 20;

    fn seg(tli: u32, segno: u64) -> String {
        segment_name_for_segno(tli, segno, M)
    }

    fn removed(p: &WalPlan) -> Vec<String> {
        p.files().cloned().collect()
    }

    #[test]
    fn names_with_suffixes() {
        assert_eq!(
            name_of(&format!("{}.zst", seg(1, 5)), M),
            Named::Wal { tli: 1, segno: 5 }
        );
        assert_eq!(
            name_of(&format!("{}.zst.age", seg(2, 300)), M),
            Named::Wal { tli: 2, segno: 300 }
        );
        assert_eq!(
            name_of(&format!("{}.00000028.backup", seg(1, 7)), M),
            Named::Wal { tli: 1, segno: 7 }
        );
        assert_eq!(
            name_of(&format!("{}.partial", seg(1, 7)), M),
            Named::Wal { tli: 1, segno: 7 }
        );
        assert_eq!(
            name_of(&format!("{}.sha256", seg(1, 7)), M),
            Named::Wal { tli: 1, segno: 7 }
        );
        assert_eq!(name_of("00000002.history", M), Named::History(2));
        assert_eq!(name_of("00000002.history.sha256", M), Named::History(2));
        assert_eq!(name_of("README", M), Named::Other);
    }

    #[test]
    fn nothing_without_a_kept_backup() {
        let names = vec![seg(1, 1), seg(1, 2)];
        let p = plan(&names, &[], &HashMap::new(), M);
        assert!(p.ranges.is_empty() && p.nothing.is_some());
    }

    #[test]
    fn removes_before_the_oldest_kept_start_and_keeps_history() {
        let names = vec![
            seg(1, 1),
            format!("{}.zst", seg(1, 2)),
            format!("{}.00000028.backup", seg(1, 3)),
            seg(1, 3),
            seg(1, 4),
            seg(1, 6),
            "00000002.history".into(),
            seg(2, 6),
        ];
        let kept = [Needs {
            id: "b".into(),
            timeline: 1,
            start_segno: 4,
        }];
        let mut anc = HashMap::new();
        anc.insert(2, vec![1]);
        let p = plan(&names, &kept, &anc, M);
        assert_eq!(
            removed(&p),
            [
                seg(1, 1),
                format!("{}.zst", seg(1, 2)),
                seg(1, 3),
                format!("{}.00000028.backup", seg(1, 3)),
            ]
        );
        assert_eq!(p.ranges.len(), 1);
        assert_eq!(p.ranges[0].first, seg(1, 1));
        assert_eq!(p.ranges[0].last, seg(1, 3));
    }

    #[test]
    fn per_timeline_cutoffs_follow_history() {
        // Backup on timeline 2 at 10, timeline 2 branched off 1; timeline 3
        // branched off 2. Timeline 1's tail past the switch stays only
        // below the global cutoff rule.
        let names = vec![seg(1, 5), seg(1, 12), seg(2, 8), seg(2, 11), seg(3, 9)];
        let kept = [Needs {
            id: "b".into(),
            timeline: 2,
            start_segno: 10,
        }];
        let mut anc = HashMap::new();
        anc.insert(2, vec![1]);
        anc.insert(3, vec![1, 2]);
        let p = plan(&names, &kept, &anc, M);
        assert_eq!(removed(&p), [seg(1, 5), seg(2, 8), seg(3, 9)]);
    }

    /// Archive files and kept backups, as (timeline, segment number).
    type Case = (Vec<(u32, u64)>, Vec<(u32, u64)>);

    fn arb_case() -> impl Strategy<Value = Case> {
        (
            prop::collection::vec((1u32..4, 0u64..60), 0..80),
            prop::collection::vec((1u32..4, 0u64..60), 0..4),
        )
    }

    proptest! {
        // Failing cases are saved beside this file (NAME.regressions).
        #![proptest_config(ProptestConfig {
            failure_persistence: Some(Box::new(
                proptest::test_runner::FileFailurePersistence::WithSource("regressions"),
            )),
            ..ProptestConfig::default()
        })]

        #[test]
        fn every_kept_backups_wal_survives((files, backups) in arb_case()) {
            let names: Vec<String> = files.iter().map(|&(t, s)| seg(t, s)).collect();
            let kept: Vec<Needs> = backups.iter().enumerate().map(|(i, &(t, s))| Needs { id: format!("b{i}"), timeline: t, start_segno: s }).collect();
            // Timelines 2 and 3 descend from 1 (and 3 from 2).
            let mut anc = HashMap::new();
            anc.insert(2, vec![1]);
            anc.insert(3, vec![1, 2]);
            let p = plan(&names, &kept, &anc, M);
            let gone: Vec<&String> = p.files().collect();
            if kept.is_empty() {
                prop_assert!(gone.is_empty());
            }
            for b in &kept {
                for (t, s) in &files {
                    let descends = *t == b.timeline || anc.get(t).is_some_and(|a| a.contains(&b.timeline));
                    if descends && *s >= b.start_segno {
                        prop_assert!(!gone.contains(&&seg(*t, *s)), "{} needed by {:?}", seg(*t, *s), b);
                    }
                }
            }
            // Nothing removed is newer than every kept backup's start.
            if let Some(min) = kept.iter().map(|b| b.start_segno).min() {
                for g in gone {
                    if let Named::Wal { segno, .. } = name_of(g, M) {
                        prop_assert!(segno < kept.iter().map(|b| b.start_segno).max().unwrap().max(min));
                    }
                }
            }
        }
    }
}
