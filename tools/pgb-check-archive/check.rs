//! Drives one check: scan the archive, validate every segment, follow the
//! timelines, find gaps and staleness, print the records and the metrics.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::SystemTime;

use chrono::{DateTime, Local, SecondsFormat};
use pgb_common::dest::{split_labels, Destination, Labels};
use pgb_common::error::Result;
use pgb_common::record::SCHEMA;
use pgb_common::term::warn;
use pgb_common::wal::{format_lsn, segment_name_for_segno};
use pgb_common::walhdr::{
    check_first_page, major_for_magic, parse_history, segno_of, valid_seg_size, HistoryEntry,
    PageHeader, WalFile,
};
use pgb_common::{ExitStatus, RecordWriter};
use serde_json::{json, Map, Value};

use crate::cli::Args;
use crate::scan::{scan, Listing, Sums};

/// One thing wrong with the archive.
pub struct Problem {
    pub problem: &'static str,
    pub file: String,
    pub detail: String,
    pub extra: Map<String, Value>,
}

impl Problem {
    pub fn new(problem: &'static str, file: impl Into<String>, detail: impl Into<String>) -> Self {
        Problem {
            problem,
            file: file.into(),
            detail: detail.into(),
            extra: Map::new(),
        }
    }

    pub fn record(&self, archive: &str) -> Value {
        let mut m = Map::new();
        m.insert("schema".into(), SCHEMA.into());
        m.insert("type".into(), "archive-problem".into());
        m.insert("archive".into(), archive.into());
        m.insert("problem".into(), self.problem.into());
        m.insert("file".into(), self.file.clone().into());
        m.insert("detail".into(), self.detail.clone().into());
        for (k, v) in &self.extra {
            m.insert(k.clone(), v.clone());
        }
        Value::Object(m)
    }
}

/// A timeline as the archive holds it.
pub struct Timeline {
    pub tli: u32,
    pub parent: Option<u32>,
    pub switchpoint: Option<u64>,
    pub segments: usize,
    /// Contiguous runs of present segment numbers.
    pub ranges: Vec<(u64, u64)>,
}

/// What the check found.
pub struct Analysis {
    pub problems: Vec<Problem>,
    pub seg_size: Option<u64>,
    pub sysid: Option<u64>,
    pub major: Option<u32>,
    pub segments: usize,
    pub compressed_segments: usize,
    /// Encrypted (.age) segments, and those of them not decrypted (no -i).
    pub encrypted_segments: usize,
    pub unchecked_segments: usize,
    /// Segments read to the end and equal to their checksum file, and
    /// segments without one (or none comparable): checked by header only.
    pub checksum_verified_segments: usize,
    pub header_only_segments: usize,
    pub checksum_files: usize,
    pub bad_segments: usize,
    pub foreign_segments: usize,
    pub gaps: usize,
    pub missing_segments: u64,
    pub timelines: Vec<Timeline>,
    pub newest: Option<(String, SystemTime)>,
    pub partial_files: usize,
    pub backup_files: usize,
    pub history_files: usize,
    pub other_files: Vec<String>,
    /// Segment base name (without .zst/.age) -> no problem found in it.
    pub good: HashMap<String, bool>,
    /// Base names of every WAL file in the archive.
    pub stored_names: HashSet<String>,
    /// What the server said, with -d.
    pub server: Option<crate::server::State>,
}

fn most_common<T: Ord + Copy>(it: impl Iterator<Item = T>) -> Option<T> {
    let mut counts: BTreeMap<T, usize> = BTreeMap::new();
    for v in it {
        *counts.entry(v).or_default() += 1;
    }
    // Highest count; the smallest value among equals, so the choice is stable.
    counts
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(v, _)| *v)
}

pub fn base_name(name: &str) -> &str {
    let name = name.strip_suffix(pgb_common::crypt::SUFFIX).unwrap_or(name);
    name.strip_suffix(".zst").unwrap_or(name)
}

pub fn analyze(
    listing: Listing,
    want_sysid: Option<u64>,
    want_seg_size: Option<u64>,
    max_age: Option<u64>,
    now: SystemTime,
    archive: &str,
) -> Analysis {
    let mut problems = Vec::new();

    // Parsed first pages of the segments.
    let headers: Vec<Option<PageHeader>> = listing
        .entries
        .iter()
        .map(|e| match (&e.kind, &e.data) {
            (WalFile::Segment { .. }, Ok(page)) => PageHeader::parse(page),
            _ => None,
        })
        .collect();
    let sane = || {
        headers
            .iter()
            .flatten()
            .filter(|h| major_for_magic(h.magic).is_some())
            .filter_map(|h| h.long)
    };
    let seg_size = want_seg_size.or_else(|| {
        most_common(sane().map(|l| l.seg_size).filter(|s| valid_seg_size(*s))).map(u64::from)
    });
    let sysid = want_sysid.or_else(|| most_common(sane().map(|l| l.sysid)));
    let magic = most_common(
        headers
            .iter()
            .flatten()
            .map(|h| h.magic)
            .filter(|m| major_for_magic(*m).is_some()),
    );
    let major = magic.and_then(major_for_magic);

    // Timeline history files.
    let mut history: BTreeMap<u32, Vec<HistoryEntry>> = BTreeMap::new();
    let mut history_files = 0;
    let mut partial_files = 0;
    let mut backup_files = 0;
    for e in &listing.entries {
        match e.kind {
            WalFile::History { tli } => {
                history_files += 1;
                let parsed = match &e.data {
                    Err(m) => Err(m.clone()),
                    Ok(t) => std::str::from_utf8(t)
                        .map_err(|_| "not UTF-8".to_string())
                        .and_then(parse_history),
                };
                match parsed {
                    Ok(h) if h.last().is_some_and(|l| l.parent_tli >= tli) => {
                        problems.push(Problem::new(
                            "bad-history",
                            &e.name,
                            format!(
                                "lists timeline {} as a parent of timeline {tli}",
                                h.last().unwrap().parent_tli
                            ),
                        ));
                    }
                    Ok(h) => {
                        history.insert(tli, h);
                    }
                    Err(m) => problems.push(Problem::new("bad-history", &e.name, m)),
                }
            }
            WalFile::Partial { .. } => partial_files += 1,
            WalFile::Backup { .. } => backup_files += 1,
            WalFile::Segment { .. } => {}
        }
    }

    // Every segment.
    let mut present: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
    let mut good = HashMap::new();
    let mut segments = 0;
    let mut compressed_segments = 0;
    let mut encrypted_segments = 0;
    let mut unchecked_segments = 0;
    let mut checksum_verified_segments = 0;
    let mut header_only_segments = 0;
    let stored_names: HashSet<String> = listing
        .entries
        .iter()
        .map(|e| base_name(&e.name).to_string())
        .collect();
    let mut bad_segments = 0;
    let mut foreign_segments = 0;
    let mut newest: Option<(String, SystemTime)> = None;
    let mut seen_tlis = BTreeSet::new();
    for (e, hdr) in listing.entries.iter().zip(&headers) {
        let WalFile::Segment { tli, log, seg } = e.kind else {
            continue;
        };
        segments += 1;
        compressed_segments += e.zst as usize;
        encrypted_segments += e.age as usize;
        seen_tlis.insert(tli);
        if let Some(m) = e.mtime {
            if newest.as_ref().is_none_or(|(_, t)| m > *t) {
                newest = Some((e.name.clone(), m));
            }
        }
        let mut mine: Vec<Problem> = Vec::new();
        let mut p = |problem, detail: String| mine.push(Problem::new(problem, &e.name, detail));
        let segno = seg_size.and_then(|ss| segno_of(log, seg, ss));
        if let (Some(ss), None) = (seg_size, segno) {
            p(
                "bad-name",
                format!("no such segment number for {ss}-byte segments"),
            );
        }
        if let Some(s) = segno {
            present.entry(tli).or_default().insert(s);
        }
        match &e.sums {
            Sums::Verified => checksum_verified_segments += 1,
            Sums::NotRecorded | Sums::NotCompared if !e.unchecked && e.data.is_ok() => {
                header_only_segments += 1
            }
            Sums::NotRecorded | Sums::NotCompared => {}
            Sums::Problem(problem, detail) => p(problem, detail.clone()),
        }
        match &e.data {
            // Encrypted, no identity: present (continuity), not checked.
            _ if e.unchecked => unchecked_segments += 1,
            Err(m) => p("unreadable", m.clone()),
            Ok(page) => {
                match (e.size, seg_size) {
                    (Some(0), _) => p("bad-size", "empty file (0 bytes)".into()),
                    (Some(n), Some(ss)) if n != ss => p(
                        "bad-size",
                        format!(
                            "{n} bytes, expected {ss}{}",
                            if n < ss { " (truncated)" } else { "" }
                        ),
                    ),
                    _ => {}
                }
                if !page.is_empty() && page.iter().all(|b| *b == 0) {
                    p("zero", "zero-filled: the first page is all zeros".into());
                } else if !page.is_empty() {
                    match hdr {
                        None => p(
                            "bad-size",
                            format!(
                                "truncated: {} bytes, shorter than its page header",
                                page.len()
                            ),
                        ),
                        // WAL of a version pgb does not know (or no WAL at
                        // all): a problem, never a pass, whatever else is
                        // known about the archive.
                        Some(h) if major_for_magic(h.magic).is_none() => {
                            p("bad-magic", format!("invalid magic number {:04X}", h.magic))
                        }
                        Some(h) => {
                            if let (Some(ss), Some(s)) = (seg_size, segno) {
                                let lower_ok = match history.get(&tli).and_then(|v| v.last()) {
                                    Some(last) => {
                                        s == last.switchpoint / ss
                                            && history[&tli].iter().any(|x| x.parent_tli == h.tli)
                                    }
                                    // Without its history file (reported
                                    // below), do not guess.
                                    None => tli > 1,
                                };
                                for hp in check_first_page(h, tli, s, ss, lower_ok) {
                                    p(hp.problem, hp.detail);
                                }
                            }
                            if let (Some(m), Some(v)) = (magic, major) {
                                if let Some(fv) = major_for_magic(h.magic) {
                                    if h.magic != m {
                                        p(
                                            "bad-magic",
                                            format!("WAL of PostgreSQL {fv} (magic {:04X}) in an archive of PostgreSQL {v}", h.magic),
                                        );
                                    }
                                }
                            }
                            if let (Some(l), Some(want)) = (h.long, sysid) {
                                if major_for_magic(h.magic).is_some() && l.sysid != want {
                                    p(
                                        "foreign",
                                        format!(
                                            "from another cluster: system identifier {}, expected {want}{}",
                                            l.sysid,
                                            if want_sysid.is_some() { " (--system-identifier, or the server's with -d)" } else { " (the archive's)" }
                                        ),
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
        if mine.iter().any(|p| p.problem == "foreign") {
            foreign_segments += 1;
        }
        if !mine.is_empty() {
            bad_segments += 1;
        }
        good.insert(base_name(&e.name).to_string(), mine.is_empty());
        problems.extend(mine);
    }

    if seg_size.is_none() && unchecked_segments > 0 {
        problems.push(Problem::new(
            "unknown-segment-size",
            archive,
            "every segment is encrypted and none was decrypted: continuity cannot be \
             checked without the segment size (give --segment-size, -d or -i)",
        ));
    }

    for &tli in seen_tlis.iter().filter(|t| **t > 1) {
        if !history.contains_key(&tli) {
            problems.push(Problem::new(
                "missing-history",
                format!("{tli:08X}.history"),
                format!("timeline {tli} has segments but no history file"),
            ));
        }
    }

    // Continuity per timeline, following the history files.
    let mut timelines = Vec::new();
    let mut gaps = 0;
    let mut missing_segments = 0;
    if let Some(ss) = seg_size {
        // Where each parent must reach: the segment before each switchpoint.
        let mut must_reach: BTreeMap<u32, u64> = BTreeMap::new();
        for h in history.values() {
            for e in h {
                if let Some(need) = (e.switchpoint / ss).checked_sub(1) {
                    let v = must_reach.entry(e.parent_tli).or_insert(need);
                    *v = (*v).max(need);
                }
            }
        }
        let empty = BTreeSet::new();
        let tlis: BTreeSet<u32> = present.keys().copied().collect();
        for tli in tlis {
            let segs = present.get(&tli).unwrap_or(&empty);
            let (Some(&first), Some(&last)) = (segs.first(), segs.last()) else {
                continue;
            };
            let own = history.get(&tli).and_then(|h| h.last());
            let mut lo = first;
            if let Some(sw) = own {
                // The timeline starts in the segment of its switchpoint, when
                // the archive still holds its parent around there.
                let begin = sw.switchpoint / ss;
                let parent_covers = present
                    .get(&sw.parent_tli)
                    .and_then(|p| p.last())
                    .is_some_and(|&pl| pl + 1 >= begin);
                if parent_covers {
                    lo = lo.min(begin);
                }
            }
            let hi = must_reach
                .get(&tli)
                .map_or(last, |&r| if r >= first { r.max(last) } else { last });
            let mut ranges = Vec::new();
            let mut holes = Vec::new();
            let mut run_start = None;
            let mut prev: Option<u64> = None;
            if lo < first {
                holes.push((lo, first - 1));
            }
            for &s in segs {
                match prev {
                    Some(pv) if s == pv + 1 => {}
                    Some(pv) => {
                        ranges.push((run_start.unwrap(), pv));
                        holes.push((pv + 1, s - 1));
                        run_start = Some(s);
                    }
                    None => run_start = Some(s),
                }
                prev = Some(s);
            }
            ranges.push((run_start.unwrap(), last));
            if hi > last {
                holes.push((last + 1, hi));
            }
            for (a, b) in holes {
                gaps += 1;
                let n = b - a + 1;
                missing_segments += n;
                let fa = segment_name_for_segno(tli, a, ss);
                let fb = segment_name_for_segno(tli, b, ss);
                let mut pr = Problem::new(
                    "gap",
                    fa.clone(),
                    format!("{n} segment(s) missing on timeline {tli}: {fa}..{fb}"),
                );
                pr.extra.insert("timeline".into(), tli.into());
                pr.extra.insert("first".into(), fa.into());
                pr.extra.insert("last".into(), fb.into());
                pr.extra.insert("missing".into(), n.into());
                problems.push(pr);
            }
            timelines.push(Timeline {
                tli,
                parent: own.map(|o| o.parent_tli),
                switchpoint: own.map(|o| o.switchpoint),
                segments: segs.len(),
                ranges,
            });
        }
    }

    match (&newest, max_age) {
        (None, _) => problems.push(Problem::new(
            "empty",
            archive,
            "no WAL segment in the archive",
        )),
        (Some((name, t)), Some(max)) => {
            let age = now
                .duration_since(*t)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            if age > max as f64 {
                problems.push(Problem::new(
                    "stale",
                    name.clone(),
                    format!("the newest segment was archived {age:.0} s ago (--max-age {max})"),
                ));
            }
        }
        _ => {}
    }

    Analysis {
        problems,
        seg_size,
        sysid,
        major,
        segments,
        compressed_segments,
        encrypted_segments,
        unchecked_segments,
        checksum_verified_segments,
        header_only_segments,
        checksum_files: listing.checksum_files,
        bad_segments,
        foreign_segments,
        gaps,
        missing_segments,
        timelines,
        newest,
        partial_files,
        backup_files,
        history_files,
        other_files: listing.others,
        good,
        stored_names,
        server: None,
    }
}

pub fn rfc3339(t: SystemTime) -> String {
    DateTime::<Local>::from(t)
        .fixed_offset()
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

pub fn age_seconds(an: &Analysis, now: SystemTime) -> Option<f64> {
    an.newest.as_ref().map(|(_, t)| {
        now.duration_since(*t)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    })
}

fn summary(an: &Analysis, archive: &str, now: SystemTime) -> Value {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &an.problems {
        *counts.entry(p.problem).or_default() += 1;
    }
    let name = |tli: u32, s: u64| segment_name_for_segno(tli, s, an.seg_size.unwrap_or(1 << 24));
    let timelines: Vec<Value> = an
        .timelines
        .iter()
        .map(|t| {
            json!({
                "timeline": t.tli,
                "parent": t.parent,
                "switchpoint": t.switchpoint.map(format_lsn),
                "segments": t.segments,
                "first": name(t.tli, t.ranges.first().map_or(0, |r| r.0)),
                "last": name(t.tli, t.ranges.last().map_or(0, |r| r.1)),
            })
        })
        .collect();
    let ranges: Vec<Value> = an
        .timelines
        .iter()
        .flat_map(|t| {
            t.ranges.iter().map(move |(a, b)| {
                json!({"timeline": t.tli, "first": name(t.tli, *a), "last": name(t.tli, *b), "segments": b - a + 1})
            })
        })
        .collect();
    json!({
        "schema": SCHEMA,
        "type": "archive-summary",
        "archive": archive,
        "ok": an.problems.is_empty(),
        "checked_at": rfc3339(now),
        "segments": an.segments,
        "compressed_segments": an.compressed_segments,
        "encrypted_segments": an.encrypted_segments,
        "unchecked_segments": an.unchecked_segments,
        "checksum_files": an.checksum_files,
        "checksum_verified_segments": an.checksum_verified_segments,
        "header_only_segments": an.header_only_segments,
        "bad_segments": an.bad_segments,
        "foreign_segments": an.foreign_segments,
        "gaps": an.gaps,
        "missing_segments": an.missing_segments,
        "problems": an.problems.len(),
        "counts": counts,
        "segment_size": an.seg_size,
        "system_identifier": an.sysid.map(|s| s.to_string()),
        "pg_version": an.major.map(|v| v.to_string()),
        "timelines": timelines,
        "ranges": ranges,
        "partial_files": an.partial_files,
        "backup_files": an.backup_files,
        "history_files": an.history_files,
        "other_files": an.other_files,
        "newest_segment": an.newest.as_ref().map(|n| n.0.clone()),
        "newest_mtime": an.newest.as_ref().map(|n| rfc3339(n.1)),
        "age_seconds": age_seconds(an, now).map(|a| (a * 1000.0).round() / 1000.0),
        "server": an.server.as_ref().map(|s| s.record()),
    })
}

/// One archive named on the command line.
pub struct Named {
    pub dest: Destination,
    pub labels: Labels,
    /// As records and metrics name it: a directory as given, a URL as
    /// pgb writes it.
    pub name: String,
}

fn parse_archive(spec: &str) -> Result<Named> {
    // A directory whose name holds '#' or ':' is a directory, not labels.
    let (text, labels) = if std::path::Path::new(spec).is_dir() {
        (spec, Labels::default())
    } else {
        split_labels(spec)?
    };
    let dest = Destination::parse_url(text)?;
    let name = if dest.is_remote() {
        dest.root_url()
    } else {
        text.to_string()
    };
    Ok(Named { dest, labels, name })
}

pub fn run(args: Args) -> ExitStatus {
    let now = SystemTime::now();
    let archives = match args
        .archive
        .iter()
        .map(|a| parse_archive(a))
        .collect::<Result<Vec<_>>>()
    {
        Ok(a) => a,
        Err(e) => {
            warn(e.to_string());
            return e.exit_status();
        }
    };
    if archives.len() > 1 && (args.backups || args.repo.is_some() || args.dbname.is_some()) {
        warn("--backups, --repo and -d judge one archive: give only one");
        return ExitStatus::Error;
    }
    let mut status = ExitStatus::Ok;
    let mut results: Vec<(&Named, Option<Analysis>)> = Vec::new();
    for a in &archives {
        match check(&args, &a.dest, &a.name, now) {
            Ok((st, an)) => {
                status = status.worst(st);
                results.push((a, Some(an)));
            }
            Err(e) => {
                warn(e.to_string());
                status = status.worst(e.exit_status());
                results.push((a, None));
            }
        }
    }
    let mut copies = None;
    if args.copies.is_some() || args.require.is_some() {
        if results.iter().any(|(_, an)| an.is_none()) {
            warn("copies not counted: an archive could not be checked");
        } else {
            let c = count_copies(&results, args.copies, args.require.is_some());
            let mut out = RecordWriter::stdout();
            for p in &c.problems {
                if let Err(e) = out.write(&p.record("*")) {
                    warn(e.to_string());
                    return ExitStatus::Error;
                }
            }
            if !c.problems.is_empty() {
                status = status.worst(ExitStatus::No);
            }
            copies = Some(c);
        }
    }
    if let Some(p) = &args.prom {
        let per: Vec<(&str, Option<&Analysis>)> = results
            .iter()
            .map(|(a, an)| (a.name.as_str(), an.as_ref()))
            .collect();
        if let Err(e) = crate::prom::write(p, &per, copies.as_ref(), now) {
            warn(e.to_string());
            return ExitStatus::Error;
        }
    }
    status
}

/// How many archives hold each segment in good condition.
pub struct Copies {
    pub problems: Vec<Problem>,
    /// Archive -> segments held (in good condition) elsewhere but not here.
    pub missing: BTreeMap<String, usize>,
    /// Segments that fail the rule.
    pub short: usize,
}

/// Counts, for every segment any archive holds, the archives that hold it
/// without a problem, and judges `--copies N` and `--require 3-2-1` (at
/// least 3 archives, 2 media, 1 offsite). Segments that fail in the same
/// way (the same archives holding them) make one problem record naming
/// them.
fn count_copies(results: &[(&Named, Option<Analysis>)], want: Option<usize>, rule: bool) -> Copies {
    let all: BTreeSet<&String> = results
        .iter()
        .flat_map(|(_, an)| an.iter().flat_map(|a| a.good.keys()))
        .collect();
    let mut missing: BTreeMap<String, usize> =
        results.iter().map(|(a, _)| (a.name.clone(), 0)).collect();
    // Holders (indices) -> segments.
    let mut groups: BTreeMap<Vec<usize>, Vec<&String>> = BTreeMap::new();
    for seg in all {
        let holders: Vec<usize> = results
            .iter()
            .enumerate()
            .filter(|(_, (_, an))| an.as_ref().is_some_and(|a| a.good.get(seg) == Some(&true)))
            .map(|(i, _)| i)
            .collect();
        for (i, (a, _)) in results.iter().enumerate() {
            if !holders.contains(&i) {
                *missing.entry(a.name.clone()).or_default() += 1;
            }
        }
        groups.entry(holders).or_default().push(seg);
    }
    let mut problems = Vec::new();
    let mut short = 0;
    for (holders, segs) in groups {
        let media: BTreeSet<String> = holders
            .iter()
            .map(|i| {
                let a = results[*i].0;
                a.labels
                    .media
                    .clone()
                    .unwrap_or_else(|| a.dest.default_media().to_string())
            })
            .collect();
        let offsite = holders
            .iter()
            .filter(|i| results[**i].0.labels.site.as_deref() == Some("offsite"))
            .count();
        let mut failed = Vec::new();
        let need = want.unwrap_or(0).max(if rule { 3 } else { 0 });
        if holders.len() < need {
            failed.push(format!("{need} copies: only {}", holders.len()));
        }
        if rule && media.len() < 2 {
            failed.push(format!(
                "2 media: all copies on {}",
                media.iter().next().map(String::as_str).unwrap_or("none")
            ));
        }
        if rule && offsite < 1 {
            failed.push("1 offsite: no archive holding it has site=offsite".to_string());
        }
        if failed.is_empty() {
            continue;
        }
        short += segs.len();
        let name = |i: &usize| Value::from(results[*i].0.name.clone());
        let missing_from: Vec<Value> = (0..results.len())
            .filter(|i| !holders.contains(i))
            .map(|i| name(&i))
            .collect();
        let problem = if holders.len() < need {
            "too-few-copies"
        } else {
            "not-3-2-1"
        };
        let first = segs[0].clone();
        let mut p = Problem::new(
            problem,
            first.clone(),
            format!(
                "{} segment(s) from {first} to {}: {}",
                segs.len(),
                segs[segs.len() - 1],
                failed.join("; ")
            ),
        );
        p.extra
            .insert("last".into(), segs[segs.len() - 1].clone().into());
        p.extra.insert("segments".into(), segs.len().into());
        p.extra.insert(
            "files".into(),
            segs.iter()
                .take(1000)
                .map(|s| Value::from(s.as_str()))
                .collect(),
        );
        p.extra.insert("copies".into(), holders.len().into());
        p.extra
            .insert("present_in".into(), holders.iter().map(name).collect());
        p.extra.insert("missing_from".into(), missing_from.into());
        p.extra.insert(
            "failed".into(),
            failed.into_iter().map(Value::from).collect(),
        );
        problems.push(p);
    }
    Copies {
        problems,
        missing,
        short,
    }
}

fn check(
    args: &Args,
    dest: &Destination,
    archive: &str,
    now: SystemTime,
) -> Result<(ExitStatus, Analysis)> {
    // Read and validate the backups before anything is printed.
    let input = match (&args.repo, args.backups) {
        (Some(repo), _) => Some(crate::backups::read_repo(repo)?),
        (None, true) => {
            pgb_common::term::refuse_terminal_stdin(
                "pgb-snapshot --physical --out /srv/backups/pg \\\n    | pgb-check-archive /srv/wal-archive --backups",
            )?;
            Some(crate::backups::read_stdin()?)
        }
        (None, false) => None,
    };
    // The server first: whatever it says it archived must then be in the
    // listing taken after it.
    let server = match &args.dbname {
        Some(d) => Some(crate::server::query(&args.conn, d)?),
        None => None,
    };
    let listing = scan(dest, &args.identity, args.headers_only)?;
    let want_sysid = args
        .system_identifier
        .or(server.as_ref().map(|s| s.system_identifier));
    let want_seg_size = args.segment_size.or(server.as_ref().map(|s| s.seg_size));
    let mut an = analyze(
        listing,
        want_sysid,
        want_seg_size,
        args.max_age,
        now,
        archive,
    );
    if let Some(s) = server {
        crate::server::judge(s, &mut an, args.max_behind);
    }
    let mut out = RecordWriter::stdout_for(args.json, crate::summary::render);
    for p in &an.problems {
        out.write(&p.record(archive))?;
    }
    let mut status = ExitStatus::Ok;
    if let Some(input) = input {
        status = crate::backups::process(input, &mut an, archive, now, &mut out)?;
    }
    out.write(&summary(&an, archive, now))?;
    if !an.problems.is_empty() {
        status = status.worst(ExitStatus::No);
    }
    Ok((status, an))
}
