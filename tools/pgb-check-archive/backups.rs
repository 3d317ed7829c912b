//! `--backups` / `--repo`: for each physical backup artifact read on stdin
//! (or from a repository's sidecars), whether the archive holds every
//! segment from its start to its stop, and how far the contiguous archive
//! reaches past its stop (the point-in-time window).

use std::io;
use std::path::Path;
use std::time::SystemTime;

use pgb_common::error::Result;
use pgb_common::repo::catalog;
use pgb_common::wal::segment_name_for_segno;
use pgb_common::walhdr::{classify, segno_of, WalFile};
use pgb_common::{ExitStatus, Input, Kind, RecordReader, RecordWriter};
use serde_json::{json, Value};

use crate::check::{rfc3339, Analysis, Problem};

/// Every record on stdin, validated before anything is acted on.
pub fn read_stdin() -> Result<Vec<Input>> {
    RecordReader::new(io::stdin().lock(), "stdin").collect()
}

/// The physical backup artifacts of a repository, from their sidecars,
/// all read and validated before anything is acted on. Sidecars of other
/// kinds are skipped: nothing of theirs depends on the archive.
pub fn read_repo(repo: &Path) -> Result<Vec<Input>> {
    // Read where it lies: the records' repo is this directory.
    let repo = pgb_common::repo::absolute(repo)?;
    let mut out = Vec::new();
    for sidecar in catalog(&repo)? {
        let input = pgb_common::repo::read_in(&repo, &sidecar)?;
        if matches!(&input, Input::Artifact { artifact, .. } if artifact.kind == Kind::Physical) {
            out.push(input);
        }
    }
    Ok(out)
}

fn segno(name: &str, seg_size: u64) -> Option<(u32, u64)> {
    match classify(name) {
        Some((WalFile::Segment { tli, log, seg }, false)) => {
            Some((tli, segno_of(log, seg, seg_size)?))
        }
        _ => None,
    }
}

pub fn process(
    input: Vec<Input>,
    an: &mut Analysis,
    archive: &str,
    now: SystemTime,
    out: &mut RecordWriter<io::Stdout>,
) -> Result<ExitStatus> {
    let mut status = ExitStatus::Ok;
    for rec in input {
        let (raw, mut artifact) = match rec {
            Input::Artifact { raw, artifact, .. } => (raw, artifact),
            Input::Error { raw, .. } => {
                out.forward(&raw)?;
                status = status.worst(ExitStatus::Error);
                continue;
            }
            Input::Other { raw, .. } => {
                out.forward(&raw)?;
                continue;
            }
        };
        let Some(w) = artifact
            .wal
            .clone()
            .filter(|_| artifact.kind == Kind::Physical)
        else {
            out.forward(&raw)?;
            continue;
        };
        let ss = w.segment_size;
        let range = match (segno(&w.start_segment, ss), segno(&w.stop_segment, ss)) {
            (Some((_, a)), Some((_, b))) if ss.is_power_of_two() && a <= b => Some((a, b)),
            _ => None,
        };
        let Some((start, stop)) = range else {
            let mut p = Problem::new(
                "backup-unrestorable",
                w.start_segment.clone(),
                format!("backup {}: its WAL range cannot be read", artifact.id),
            );
            p.extra.insert("backup".into(), artifact.id.clone().into());
            out.write(&p.record(archive))?;
            an.problems.push(p);
            out.forward(&raw)?;
            continue;
        };
        let mut missing: Vec<String> = Vec::new();
        let mut bad: Vec<String> = Vec::new();
        for s in start..=stop {
            let n = segment_name_for_segno(w.timeline, s, ss);
            match an.good.get(&n) {
                Some(true) => {}
                Some(false) => bad.push(n),
                None => missing.push(n),
            }
        }
        // The contiguous archive past the stop, on the backup's timeline.
        let mut end = stop;
        while an
            .good
            .get(&segment_name_for_segno(w.timeline, end + 1, ss))
            == Some(&true)
        {
            end += 1;
        }
        // An incremental restores only with its chain (its WAL is all it
        // needs of the archive: pg_combinebackup rebuilds its start).
        let chain = match pgb_common::chain::incremental_of(&artifact) {
            Ok(None) => Ok(None),
            Ok(Some(_)) => {
                let repo = Path::new(&artifact.repo);
                pgb_common::chain::load_physical(repo, repo)
                    .and_then(|all| pgb_common::chain::resolve(&artifact, &all))
                    .map(|c| Some(c.into_iter().map(|m| m.id).collect::<Vec<_>>()))
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        let restorable = missing.is_empty() && bad.is_empty() && chain.is_ok();
        let mut check = json!({
            "archive": archive,
            "checked": rfc3339(now),
            "restorable": restorable,
            "missing": missing,
            "bad": bad,
            "wal_end_segment": restorable.then(|| segment_name_for_segno(w.timeline, end, ss)),
        });
        match &chain {
            Ok(Some(ids)) => check["chain"] = json!(ids),
            Ok(None) => {}
            Err(why) => {
                check["chain_broken"] = why.clone().into();
                let mut p = Problem::new(
                    "backup-unrestorable",
                    w.start_segment.clone(),
                    format!("backup {}: {why}", artifact.id),
                );
                p.extra
                    .insert("backup".into(), Value::from(artifact.id.clone()));
                out.write(&p.record(archive))?;
                an.problems.push(p);
            }
        }
        artifact.extra.insert("archive_check".into(), check);
        let wal_ok = missing.is_empty() && bad.is_empty();
        if !wal_ok {
            let first = missing.first().or(bad.first()).cloned().unwrap_or_default();
            let mut p = Problem::new(
                "backup-unrestorable",
                first,
                format!(
                    "backup {} needs {}..{}: {} segment(s) missing, {} bad",
                    artifact.id,
                    w.start_segment,
                    w.stop_segment,
                    missing.len(),
                    bad.len()
                ),
            );
            p.extra
                .insert("backup".into(), Value::from(artifact.id.clone()));
            out.write(&p.record(archive))?;
            an.problems.push(p);
        }
        out.write(&artifact)?;
    }
    Ok(status)
}
