//! What a WAL archive offers a physical backup: does it hold every segment
//! recovery will ask for, from the backup's start to the target (pgb-restore
//! asks before anything is written), and how far does it reach without a
//! gap (pgb-list's recovery window)? A small,
//! focused scan of file names (pgb-check-archive checks the contents):
//! segments stored plain, `.zst`, `.age` or `.zst.age`, in any of the
//! archive directories. The segments the backup carries in its own
//! pg_wal.tar (start to stop) count as present.
//!
//! Timelines are followed as PostgreSQL follows them for
//! `recovery_target_timeline` ([`TimelineGoal`]): `current` stays on the
//! backup's timeline; `latest` (the default) finds the newest timeline by
//! probing `.history` files upward from the backup's timeline; a timeline
//! ID names the target itself. The target timeline's history says where
//! each timeline on the way switched off its parent. Segments of the
//! backup's timeline are needed up to that switch point, then those of the
//! next timeline (its first segment, which holds a copy of the parent's WAL
//! up to the switch, or the parent's own). Timelines off that path, and
//! those descending from the target, are not read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::{Error, IoContext, Result};
use crate::physical::Target;
use crate::record::Artifact;
use crate::wal::{format_lsn, parse_lsn, segment_name_for_segno};
use crate::walhdr::{classify, parse_history, segno_of, WalFile};
use serde_json::{json, Value};

/// Which timeline recovery follows: PostgreSQL's `recovery_target_timeline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimelineGoal {
    /// The backup's own timeline; no switch is followed.
    Current,
    /// The newest timeline in the archive (PostgreSQL's default).
    Latest,
    /// This timeline, reached through its `.history` file.
    Id(u32),
}

impl TimelineGoal {
    /// `current`, `latest`, or a timeline ID: decimal (`3`), hexadecimal
    /// with `0x` (as PostgreSQL's strtoul reads it), or the 8 hex digits of
    /// WAL file names (`00000003`). Other numbers with a leading zero are
    /// refused: PostgreSQL would read them as octal.
    pub fn parse(s: &str) -> Result<TimelineGoal> {
        let bad = || {
            Error::Usage(format!(
                "--target-timeline {s:?}: expected current, latest or a timeline ID \
                 (3, 0x3, or 00000003 as in WAL file names)"
            ))
        };
        match s {
            "current" => return Ok(TimelineGoal::Current),
            "latest" => return Ok(TimelineGoal::Latest),
            _ => {}
        }
        let hex = |h: &str| {
            if !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()) {
                u64::from_str_radix(h, 16).map_err(|_| bad())
            } else {
                Err(bad())
            }
        };
        let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let n = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            hex(h)?
        } else if s.len() == 8 && s.starts_with('0') {
            hex(s)?
        } else if digits && (s == "0" || !s.starts_with('0')) {
            s.parse::<u64>().map_err(|_| bad())?
        } else if digits {
            return Err(Error::Usage(format!(
                "--target-timeline {s:?}: PostgreSQL reads a leading zero as octal; \
                 write the timeline ID in decimal, or as the 8 hex digits of WAL file names"
            )));
        } else {
            return Err(bad());
        };
        match u32::try_from(n) {
            Ok(n) if n >= 1 => Ok(TimelineGoal::Id(n)),
            _ => Err(Error::Usage(format!(
                "--target-timeline {s:?}: a timeline ID is between 1 and {}",
                u32::MAX
            ))),
        }
    }

    /// The value for recovery_target_timeline (IDs in decimal).
    pub fn setting(&self) -> String {
        match self {
            TimelineGoal::Current => "current".into(),
            TimelineGoal::Latest => "latest".into(),
            TimelineGoal::Id(n) => n.to_string(),
        }
    }
}

/// How many segments [`Coverage::last_commit`] reads back at most.
pub const COMMIT_SEARCH: u64 = 8;

/// One archived segment.
#[derive(Debug, Clone, Copy)]
pub struct Seg {
    pub mtime: Option<SystemTime>,
    pub encrypted: bool,
}

/// A stretch of WAL recovery reads from one timeline: segments
/// `begin..=end` (`end` open on the target timeline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub tli: u32,
    pub begin: u64,
    pub end: Option<u64>,
    /// Where the next timeline switched off this one.
    pub switchpoint: Option<u64>,
}

/// What the archive offers for one backup.
pub struct Coverage {
    pub tli: u32,
    pub seg_size: u64,
    /// The backup's first and last segment (carried in pg_wal.tar).
    pub start: u64,
    pub stop: u64,
    /// Archived segments per timeline.
    pub have: BTreeMap<u32, BTreeMap<u64, Seg>>,
    /// The timelines recovery follows, from the backup's to the target
    /// timeline.
    pub spans: Vec<Span>,
    /// An encrypted WAL file (`.age`) in the archives, when there is one.
    pub encrypted_example: Option<String>,
    /// The backup's system identifier, which the WAL read must carry.
    pub sysid: Option<u64>,
}

/// Splits a stored name into the WAL file it holds and whether it is
/// encrypted (`NAME.age`, `NAME.zst.age`).
pub fn stored(name: &str) -> Option<(WalFile, bool, bool)> {
    let (base, age) = match name.strip_suffix(crate::crypt::SUFFIX) {
        Some(b) => (b, true),
        None => (name, false),
    };
    classify(base).map(|(w, zst)| (w, zst, age))
}

fn read_history(path: &Path, zst: bool) -> Result<String> {
    let bytes = crate::store::read_small(path, 16 << 20)?
        .ok_or_else(|| Error::msg(format!("{}: gone while read", path.display())))?;
    let bytes = if zst {
        zstd::stream::decode_all(&bytes[..]).ctx("decompress", path)?
    } else {
        bytes
    };
    String::from_utf8(bytes).map_err(|_| Error::msg(format!("{}: not text", path.display())))
}

impl Coverage {
    pub fn scan(a: &Artifact, archives: &[PathBuf], goal: TimelineGoal) -> Result<Coverage> {
        let w = a
            .wal
            .as_ref()
            .ok_or_else(|| Error::msg(format!("{}: the record has no WAL range (wal)", a.id)))?;
        let lsn = |s: &str| {
            parse_lsn(s).ok_or_else(|| Error::msg(format!("{}: bad LSN {s:?} in the record", a.id)))
        };
        let (start, stop) = (lsn(&w.start_lsn)?, lsn(&w.stop_lsn)?);
        let seg_size = w.segment_size;
        let mut have: BTreeMap<u32, BTreeMap<u64, Seg>> = BTreeMap::new();
        let mut histories: BTreeMap<u32, (PathBuf, bool, bool)> = BTreeMap::new();
        let mut encrypted_example = None;
        for dir in archives {
            // A directory, or an ssh:// or s3:// archive (pgb-wal get
            // reads them all).
            let listed = crate::store::destination(dir)?
                .list("", "")
                .map_err(|e| Error::msg(format!("read WAL archive: {e}")))?;
            for e in listed {
                let name = e.name;
                let Some((file, zst, age)) = stored(&name) else {
                    continue;
                };
                if age && encrypted_example.is_none() {
                    encrypted_example = Some(dir.join(&name).display().to_string());
                }
                match file {
                    WalFile::Segment { tli, log, seg } => {
                        if let Some(n) = segno_of(log, seg, seg_size) {
                            let mtime = e.modified;
                            // The first archive holding it is the one
                            // pgb-wal get reads.
                            have.entry(tli).or_default().entry(n).or_insert(Seg {
                                mtime,
                                encrypted: age,
                            });
                        }
                    }
                    WalFile::History { tli } => {
                        histories.entry(tli).or_insert((dir.join(&name), zst, age));
                    }
                    _ => {}
                }
            }
        }
        let mut cov = Coverage {
            tli: w.timeline,
            seg_size,
            start: start / seg_size,
            stop: stop.saturating_sub(1).max(start) / seg_size,
            have,
            spans: Vec::new(),
            encrypted_example,
            sysid: a.system_identifier.as_deref().and_then(|s| s.parse().ok()),
        };
        cov.spans = cov.follow(&histories, stop, goal, archives)?;
        Ok(cov)
    }

    /// The timelines from the backup's to the one `goal` names, as
    /// recovery_target_timeline does: `latest` is the newest one the
    /// archive's history files lead to.
    fn follow(
        &self,
        histories: &BTreeMap<u32, (PathBuf, bool, bool)>,
        stop_lsn: u64,
        goal: TimelineGoal,
        archives: &[PathBuf],
    ) -> Result<Vec<Span>> {
        let target = match goal {
            TimelineGoal::Current => self.tli,
            TimelineGoal::Latest => {
                let mut newest = self.tli;
                while histories.contains_key(&(newest + 1)) {
                    newest += 1;
                }
                newest
            }
            TimelineGoal::Id(n) => n,
        };
        if target == self.tli {
            return Ok(vec![Span {
                tli: self.tli,
                begin: self.start,
                end: None,
                switchpoint: None,
            }]);
        }
        let requested = format!("--target-timeline {target}");
        if target < self.tli {
            return Err(Error::msg(format!(
                "{requested} is older than the backup's timeline {}, so it cannot be reached from it: \
                 PostgreSQL would refuse to start (\"requested timeline {target} is not a child of this \
                 server's history\"); restore a backup taken on timeline {target} or before; nothing was written",
                self.tli
            )));
        }
        let Some((path, zst, age)) = histories.get(&target) else {
            let dirs: Vec<String> = archives.iter().map(|d| d.display().to_string()).collect();
            return Err(Error::msg(format!(
                "{requested}: {target:08X}.history is not in the WAL archive ({}): PostgreSQL would \
                 refuse to start (\"recovery target timeline {target} does not exist\"); nothing was written",
                dirs.join(", ")
            )));
        };
        let which = match goal {
            TimelineGoal::Latest => format!(
                "timeline {target}, the newest in the WAL archive ({}),",
                path.display()
            ),
            _ => format!("{requested}: timeline {target} ({})", path.display()),
        };
        if *age {
            return Err(Error::msg(format!(
                "{}: an encrypted history file; pgb-wal push stores them plaintext and recovery needs it readable",
                path.display()
            )));
        }
        let entries = parse_history(&read_history(path, *zst)?)
            .map_err(|m| Error::msg(format!("{}: {m}", path.display())))?;
        let Some(pos) = entries.iter().position(|e| e.parent_tli == self.tli) else {
            return Err(Error::msg(format!(
                "{which} does not descend from the backup's timeline {}: \
                 PostgreSQL would refuse to start (\"requested timeline {target} is not a child of this server's history\"); nothing was written",
                self.tli
            )));
        };
        if entries[pos].switchpoint < stop_lsn {
            return Err(Error::msg(format!(
                "{which} forked off the backup's timeline {} at {}, \
                 before the backup ended ({}): recovery following it cannot become consistent; \
                 use an older backup; nothing was written",
                self.tli,
                format_lsn(entries[pos].switchpoint),
                format_lsn(stop_lsn)
            )));
        }
        let ss = self.seg_size;
        let mut spans = Vec::new();
        let mut begin = self.start;
        for e in &entries[pos..] {
            spans.push(Span {
                tli: e.parent_tli,
                begin,
                // The segment holding the switch point is read from the
                // new timeline, whose copy holds this one's WAL up to it:
                // this timeline's own (complete, diverged past the switch
                // when its server went on writing) is not the same WAL.
                end: Some((e.switchpoint / ss).saturating_sub(1)),
                switchpoint: Some(e.switchpoint),
            });
            begin = e.switchpoint / ss;
        }
        spans.push(Span {
            tli: target,
            begin,
            end: None,
            switchpoint: None,
        });
        Ok(spans)
    }

    fn covers(s: &Span, n: u64) -> bool {
        s.begin <= n && s.end.is_none_or(|e| n <= e)
    }

    /// The archived segment recovery reads for segment number `n`: the
    /// newest timeline covering it first, as PostgreSQL tries them.
    pub fn found(&self, n: u64) -> Option<(u32, Seg)> {
        self.spans
            .iter()
            .rev()
            .filter(|s| Self::covers(s, n))
            .find_map(|s| self.have.get(&s.tli)?.get(&n).map(|g| (s.tli, *g)))
    }

    /// The timeline recovery reads segment number `n` from.
    pub fn tli_of(&self, n: u64) -> u32 {
        self.spans
            .iter()
            .rev()
            .find(|s| Self::covers(s, n))
            .map_or(self.tli, |s| s.tli)
    }

    pub fn present(&self, n: u64) -> bool {
        ((self.start..=self.stop).contains(&n) && self.tli_of(n) == self.tli)
            || self.found(n).is_some()
    }

    /// The name recovery asks for segment number `n`.
    pub fn name(&self, n: u64) -> String {
        segment_name_for_segno(self.tli_of(n), n, self.seg_size)
    }

    /// Missing segments in `from..=to`, as ranges of names.
    pub fn missing(&self, from: u64, to: u64) -> Vec<String> {
        let mut out = Vec::new();
        let mut run: Option<(u64, u64)> = None;
        for n in from..=to {
            if self.present(n) {
                if let Some((a, b)) = run.take() {
                    out.push(self.range(a, b));
                }
            } else {
                run = Some(match run {
                    Some((a, _)) => (a, n),
                    None => (n, n),
                });
            }
        }
        if let Some((a, b)) = run {
            out.push(self.range(a, b));
        }
        out
    }

    fn range(&self, a: u64, b: u64) -> String {
        if a == b {
            self.name(a)
        } else {
            format!(
                "{}..{} ({} segments)",
                self.name(a),
                self.name(b),
                b - a + 1
            )
        }
    }

    /// The newest segment present (archive or backup) on the timelines
    /// recovery follows.
    pub fn last(&self) -> u64 {
        let mut last = self.stop;
        for s in &self.spans {
            if let Some(m) = self.have.get(&s.tli) {
                if let Some((n, _)) = m.iter().rev().find(|(n, _)| Self::covers(s, **n)) {
                    last = last.max(*n);
                }
            }
        }
        last
    }

    /// When the newest segment was archived.
    pub fn last_mtime(&self) -> Option<SystemTime> {
        self.found(self.last()).and_then(|(_, g)| g.mtime)
    }

    /// The time of the last commit or abort record in the archived WAL
    /// recovery reads up to segment `end`, searching back from it (at most
    /// [`COMMIT_SEARCH`] segments, not before the backup's start): a
    /// recovery_target_time before it is reached, one at or after it is
    /// not. `None` when the segments that would hold it are encrypted
    /// (`.age`) and `ids` is `None`, or hold none; an error when one does
    /// not read whole or belongs to another cluster than the backup.
    pub fn last_commit(
        &self,
        archives: &[PathBuf],
        end: u64,
        ids: Option<&crate::crypt::Identities>,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        use std::io::Read;
        let from = self.start.max(end.saturating_sub(COMMIT_SEARCH - 1));
        for n in (from..=end).rev() {
            let Some((tli, seg)) = self.found(n) else {
                continue;
            };
            let ids = match (seg.encrypted, ids) {
                (true, None) => return Ok(None),
                (true, Some(ids)) => Some(ids),
                (false, _) => None,
            };
            let name = segment_name_for_segno(tli, n, self.seg_size);
            let age = if ids.is_some() { ".age" } else { "" };
            let Some((path, zst)) = archives.iter().find_map(|d| {
                [
                    (d.join(format!("{name}{age}")), false),
                    (d.join(format!("{name}.zst{age}")), true),
                ]
                .into_iter()
                .find(|(p, _)| crate::store::size_of(p).ok().flatten().is_some())
            }) else {
                return Ok(None);
            };
            let file = crate::store::open(&path)?;
            let mut bytes = Vec::new();
            let stream: Box<dyn Read> = match ids {
                Some(ids) => Box::new(
                    ids.decrypt(file)
                        .map_err(|e| Error::msg(format!("read: {}: {e}", path.display())))?,
                ),
                None => Box::new(file),
            };
            let done = if zst {
                zstd::stream::read::Decoder::new(stream).and_then(|mut d| d.read_to_end(&mut bytes))
            } else {
                stream.take(u64::MAX).read_to_end(&mut bytes)
            };
            done.map_err(|e| {
                let cause = match ids {
                    Some(_) => crate::crypt::explain(&e),
                    None => crate::error::io_cause(&e),
                };
                Error::msg(format!("read: {}: {cause}", path.display()))
            })?;
            let theirs = crate::walrec::system_identifier(&bytes);
            if let (Some(ours), Some(theirs)) = (self.sysid, theirs) {
                if ours != theirs {
                    return Err(Error::msg(format!(
                        "{}: WAL of another cluster (system identifier {theirs}, the backup's {ours})",
                        path.display()
                    )));
                }
            }
            if let Some(t) = crate::walrec::xact_times(&bytes, n * self.seg_size)
                .into_iter()
                .max()
            {
                return Ok(Some(t));
            }
        }
        Ok(None)
    }

    pub fn timelines(&self) -> String {
        let v: Vec<String> = self.spans.iter().map(|s| s.tli.to_string()).collect();
        if v.len() == 1 {
            format!("timeline {}", v[0])
        } else {
            format!("timelines {}", v.join(" → "))
        }
    }

    /// Checks the archive against the target; returns what recovery will
    /// read, for the record.
    pub fn check(&self, a: &Artifact, tgt: &Target) -> Result<Value> {
        let end = match tgt {
            Target::Immediate => self.stop,
            Target::Lsn(l) => {
                let l = parse_lsn(l).unwrap_or(0);
                let stop_lsn = a
                    .wal
                    .as_ref()
                    .and_then(|w| parse_lsn(&w.stop_lsn))
                    .unwrap_or(0);
                if l < stop_lsn {
                    return Err(Error::msg(format!(
                        "target LSN {} is before the end of backup {} ({}): it is not consistent there; pick an older backup",
                        format_lsn(l),
                        a.id,
                        format_lsn(stop_lsn)
                    )));
                }
                l / self.seg_size
            }
            _ => self.last(),
        };
        let missing = self.missing(self.start, end);
        if !missing.is_empty() {
            let (what, hint) = match tgt {
                Target::Lsn(_) => ("between the backup's start and the target", ""),
                _ => (
                    "between the backup's start and the archive's end",
                    "; recovery would stop at the gap, short of the target",
                ),
            };
            return Err(Error::msg(format!(
                "WAL archive lacks segments on {} {what}: missing {}{hint}; nothing was written",
                self.timelines(),
                missing.join(", ")
            )));
        }
        let spans: Vec<Value> = self
            .spans
            .iter()
            .filter(|s| s.begin <= end)
            .map(|s| {
                json!({
                    "timeline": s.tli,
                    "first_segment": segment_name_for_segno(s.tli, s.begin, self.seg_size),
                    "switchpoint": s.switchpoint.map(format_lsn),
                })
            })
            .collect();
        let target_tli = self.spans.last().map_or(self.tli, |s| s.tli);
        let encrypted = (self.start..=end).any(|n| self.found(n).is_some_and(|(_, g)| g.encrypted));
        Ok(json!({
            "timeline": self.tli,
            "target_timeline": target_tli,
            "timelines": spans,
            "first_segment": self.name(self.start),
            "last_segment": self.name(end),
            "encrypted": encrypted,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cov(spans: Vec<Span>, have: &[(u32, u64, bool)]) -> Coverage {
        let mut m: BTreeMap<u32, BTreeMap<u64, Seg>> = BTreeMap::new();
        for (t, n, enc) in have {
            m.entry(*t).or_default().insert(
                *n,
                Seg {
                    mtime: None,
                    encrypted: *enc,
                },
            );
        }
        Coverage {
            tli: 1,
            seg_size: 1 << 20,
            start: 2,
            stop: 2,
            have: m,
            spans,
            encrypted_example: None,
            sysid: None,
        }
    }

    /// History files written into `dir`, as `scan` finds them.
    fn histories(dir: &Path, files: &[(u32, &str)]) -> BTreeMap<u32, (PathBuf, bool, bool)> {
        files
            .iter()
            .map(|(t, text)| {
                let p = dir.join(format!("{t:08X}.history"));
                std::fs::write(&p, text).unwrap();
                (*t, (p, false, false))
            })
            .collect()
    }

    const MB: u64 = 1 << 20;

    /// Timeline 2 forked off 1 in segment 5, timeline 3 off 2 in segment
    /// 8; timeline 4 off 1 in segment 10 (a sibling of 2).
    fn forked(dir: &Path) -> BTreeMap<u32, (PathBuf, bool, bool)> {
        histories(
            dir,
            &[
                (2, "1\t0/500064\tbefore transaction 740\n"),
                (3, "1\t0/500064\tbefore transaction 740\n2\t0/8000C8\tno recovery target specified\n"),
                (4, "1\t0/A00000\tno recovery target specified\n"),
            ],
        )
    }

    fn tlis(spans: &[Span]) -> Vec<u32> {
        spans.iter().map(|s| s.tli).collect()
    }

    #[test]
    fn timeline_goals_parse_as_postgresql_reads_them() {
        use TimelineGoal::*;
        for (s, g) in [
            ("current", Current),
            ("latest", Latest),
            ("3", Id(3)),
            ("12", Id(12)),
            ("0x1A", Id(26)),
            ("00000003", Id(3)),
            ("0000001A", Id(26)),
            ("4294967295", Id(u32::MAX)),
        ] {
            assert_eq!(TimelineGoal::parse(s).unwrap(), g, "{s}");
        }
        for s in [
            "",
            "0",
            "Latest",
            "-1",
            "3x",
            "0x",
            "010",
            "4294967296",
            "00000000",
        ] {
            assert!(TimelineGoal::parse(s).is_err(), "{s}");
        }
        assert!(TimelineGoal::parse("010")
            .unwrap_err()
            .to_string()
            .contains("octal"));
        assert_eq!(Id(26).setting(), "26");
        assert_eq!(Current.setting(), "current");
    }

    #[test]
    fn current_stays_on_the_backups_timeline_past_every_switch() {
        let d = tempfile::tempdir().unwrap();
        let h = forked(d.path());
        let mut c = cov(vec![], &[]);
        c.spans = c
            .follow(&h, 2 * MB + 8, TimelineGoal::Current, &[])
            .unwrap();
        assert_eq!(
            c.spans,
            vec![Span {
                tli: 1,
                begin: 2,
                end: None,
                switchpoint: None
            }]
        );
        // Timeline 1 went on past the fork; its own segments are read,
        // timeline 2's copy of the switch segment is not.
        let have = [
            (1, 3, false),
            (1, 4, false),
            (1, 5, false),
            (1, 6, false),
            (2, 5, false),
            (2, 7, false),
        ];
        let c = cov(c.spans, &have);
        assert_eq!(c.last(), 6);
        assert!(c.missing(2, 6).is_empty());
        assert_eq!(c.found(5).unwrap().0, 1);
        // A hole on timeline 1 past the fork is a hole, whatever timeline 2 holds.
        let c = cov(
            c.spans.clone(),
            &[(1, 3, false), (1, 4, false), (1, 6, false), (2, 5, false)],
        );
        assert_eq!(
            c.missing(2, 6),
            vec!["000000010000000000000005".to_string()]
        );
    }

    #[test]
    fn an_id_follows_the_path_to_it_and_no_further() {
        let d = tempfile::tempdir().unwrap();
        let h = forked(d.path());
        let c = cov(vec![], &[]);
        let to2 = c.follow(&h, 2 * MB + 8, TimelineGoal::Id(2), &[]).unwrap();
        assert_eq!(
            to2,
            vec![
                Span {
                    tli: 1,
                    begin: 2,
                    end: Some(4),
                    switchpoint: Some(0x500064)
                },
                Span {
                    tli: 2,
                    begin: 5,
                    end: None,
                    switchpoint: None
                },
            ]
        );
        // Timeline 3's segments are not read; timeline 2 is followed past
        // where 3 forked off it.
        let have = [
            (1, 3, false),
            (1, 4, false),
            (2, 5, false),
            (2, 6, false),
            (2, 7, false),
            (2, 8, false),
            (2, 9, false),
            (3, 8, false),
            (3, 10, false),
        ];
        let c2 = cov(to2, &have);
        assert_eq!(c2.last(), 9);
        assert!(c2.missing(2, 9).is_empty());
        assert_eq!(c2.found(8).unwrap().0, 2);

        let to3 = c.follow(&h, 2 * MB + 8, TimelineGoal::Id(3), &[]).unwrap();
        assert_eq!(tlis(&to3), [1, 2, 3]);
        assert_eq!(to3[1].end, Some(7));
        assert_eq!(to3[2].begin, 8);
        let c3 = cov(to3, &have);
        assert_eq!(c3.last(), 10);
        assert_eq!(c3.found(8).unwrap().0, 3);
        assert_eq!(
            c3.missing(2, 10),
            vec!["000000030000000000000009".to_string()]
        );

        // A sibling: timeline 4 forked off 1 in segment 10; timelines 2
        // and 3 are off its path.
        let to4 = c.follow(&h, 2 * MB + 8, TimelineGoal::Id(4), &[]).unwrap();
        assert_eq!(tlis(&to4), [1, 4]);
        assert_eq!(to4[0].end, Some(9));
        // The backup's own timeline as an ID is `current`.
        assert_eq!(
            tlis(&c.follow(&h, 2 * MB + 8, TimelineGoal::Id(1), &[]).unwrap()),
            [1]
        );
    }

    #[test]
    fn latest_follows_the_history_files_upward() {
        let d = tempfile::tempdir().unwrap();
        let c = cov(vec![], &[]);
        // 2 and 3 present, 4 absent: the newest is 3.
        let h = histories(
            d.path(),
            &[
                (2, "1\t0/500064\tx\n"),
                (3, "1\t0/500064\tx\n2\t0/8000C8\tx\n"),
            ],
        );
        assert_eq!(
            tlis(&c.follow(&h, 2 * MB + 8, TimelineGoal::Latest, &[]).unwrap()),
            [1, 2, 3]
        );
        let none = BTreeMap::new();
        assert_eq!(
            tlis(
                &c.follow(&none, 2 * MB + 8, TimelineGoal::Latest, &[])
                    .unwrap()
            ),
            [1]
        );
    }

    #[test]
    fn unreachable_timelines_are_refused_naming_the_history() {
        let d = tempfile::tempdir().unwrap();
        let h = forked(d.path());
        let archive = [d.path().to_path_buf()];
        // A backup taken on timeline 2 (segment 6): timeline 4 forked off
        // 1, not 2.
        let mut c = cov(vec![], &[]);
        c.tli = 2;
        c.start = 6;
        c.stop = 6;
        let e = c
            .follow(&h, 6 * MB + 8, TimelineGoal::Id(4), &archive)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("does not descend from the backup's timeline 2"),
            "{e}"
        );
        assert!(e.contains("00000004.history"), "{e}");
        assert!(e.contains("nothing was written"), "{e}");
        // An older timeline than the backup's.
        let e = c
            .follow(&h, 6 * MB + 8, TimelineGoal::Id(1), &archive)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not a child"), "{e}");
        // Timeline 3 from the backup on 2 is fine.
        assert_eq!(
            tlis(
                &c.follow(&h, 6 * MB + 8, TimelineGoal::Id(3), &archive)
                    .unwrap()
            ),
            [2, 3]
        );
        // A timeline whose history the archive lacks.
        let c = cov(vec![], &[]);
        let e = c
            .follow(&h, 2 * MB + 8, TimelineGoal::Id(26), &archive)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("0000001A.history is not in the WAL archive"),
            "{e}"
        );
        assert!(e.contains(&d.path().display().to_string()), "{e}");
        assert!(e.contains("does not exist"), "{e}");
        // A fork before the backup ended cannot become consistent.
        let e = c
            .follow(&h, 5 * MB + 200, TimelineGoal::Id(2), &archive)
            .unwrap_err()
            .to_string();
        assert!(e.contains("before the backup ended"), "{e}");
    }

    #[test]
    fn stored_names() {
        let n = "000000010000000000000003";
        for (s, zst, age) in [
            ("", false, false),
            (".zst", true, false),
            (".age", false, true),
            (".zst.age", true, true),
        ] {
            let (w, z, a) = stored(&format!("{n}{s}")).unwrap();
            assert_eq!(
                w,
                WalFile::Segment {
                    tli: 1,
                    log: 0,
                    seg: 3
                }
            );
            assert_eq!((z, a), (zst, age));
        }
        assert!(stored(&format!("{n}.sha256")).is_none());
        assert!(stored("00000002.history").is_some());
    }

    #[test]
    fn follows_the_switch_to_the_next_timeline() {
        // Timeline 2 forked off 1 in segment 5 (not on a boundary).
        let spans = vec![
            Span {
                tli: 1,
                begin: 2,
                end: Some(4),
                switchpoint: Some(5 * (1 << 20) + 100),
            },
            Span {
                tli: 2,
                begin: 5,
                end: None,
                switchpoint: None,
            },
        ];
        let c = cov(
            spans.clone(),
            &[
                (1, 3, false),
                (1, 4, false),
                (2, 5, true),
                (2, 6, true),
                (1, 6, false),
            ],
        );
        assert_eq!(c.last(), 6);
        assert!(c.missing(2, 6).is_empty());
        assert_eq!(
            c.found(6).unwrap().0,
            2,
            "timeline 1 past its switch is not read"
        );
        assert_eq!(c.name(5), "000000020000000000000005");
        assert_eq!(c.name(4), "000000010000000000000004");
        // Timeline 2's copy of the switch segment missing: timeline 1's
        // own one, diverged past the switch, does not serve.
        let c = cov(
            spans,
            &[(1, 3, false), (1, 4, false), (1, 5, false), (2, 6, false)],
        );
        assert_eq!(
            c.missing(2, 6),
            vec!["000000020000000000000005".to_string()]
        );
    }
}
