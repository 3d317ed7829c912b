//! The recovery window of a cluster: the moments a point-in-time recovery
//! reaches with a good physical backup and the WAL archived after it.

use std::path::PathBuf;

use chrono::{DateTime, DurationRound, Utc};
use pgb_common::crypt::Identities;
use pgb_common::error::{Error, Result};
use pgb_common::record::{Artifact, Kind, SCHEMA};
use pgb_common::walcov::{Coverage, TimelineGoal};
use serde_json::{json, Value};

use crate::listing::{ended, rfc3339, status, ChainInfo, Status};

/// A stretch of time recovery reaches without a hole.
#[derive(Debug, Clone, PartialEq)]
pub struct Range {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// The backups it can be reached from.
    pub backups: Vec<String>,
    /// The last segment of the unbroken run that ends it.
    pub last_segment: String,
    /// The segment missing after that run, when a hole ends it (rather
    /// than the end of the archive).
    pub first_missing: Option<String>,
    /// What its latest moment is taken from.
    pub basis: Basis,
}

/// Where a range's latest moment comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// One microsecond before the last commit (or abort) record in the
    /// WAL: the last recovery_target_time PostgreSQL reaches.
    Commit,
    /// When the last segment was archived (its modification time): the
    /// segments could not be read (encrypted), so this is an upper bound.
    Archived,
}

impl Basis {
    pub fn as_str(self) -> &'static str {
        match self {
            Basis::Commit => "commit",
            Basis::Archived => "archived",
        }
    }
}

impl Range {
    pub fn length(&self) -> chrono::Duration {
        self.to - self.from
    }
}

/// A cluster's window: its ranges, oldest first, and the physical backups
/// that open none, with why.
#[derive(Debug, Default)]
pub struct Window {
    pub cluster: String,
    pub archives: Vec<PathBuf>,
    pub ranges: Vec<Range>,
    pub counted: Vec<String>,
    pub not_counted: Vec<(String, String)>,
}

impl Window {
    /// The length of the newest range: how far back from its latest moment
    /// recovery reaches without a hole.
    pub fn length(&self) -> chrono::Duration {
        self.ranges
            .last()
            .map_or(chrono::Duration::zero(), Range::length)
    }

    pub fn record(&self, required: Option<(&str, bool)>) -> Value {
        let ts = |t: Option<DateTime<Utc>>| t.map(rfc3339);
        let ranges: Vec<Value> = self
            .ranges
            .iter()
            .map(|r| {
                json!({
                    "from": rfc3339(r.from),
                    "to": rfc3339(r.to),
                    "length_seconds": r.length().num_seconds(),
                    "backups": r.backups,
                    "last_segment": r.last_segment,
                    "first_missing": r.first_missing,
                    "basis": r.basis.as_str(),
                })
            })
            .collect();
        let holes: Vec<Value> = self
            .ranges
            .windows(2)
            .map(|w| {
                json!({
                    "from": rfc3339(w[0].to),
                    "to": rfc3339(w[1].from),
                    "first_missing": w[0].first_missing,
                })
            })
            .collect();
        let mut v = json!({
            "schema": SCHEMA,
            "type": "recovery-window",
            "cluster": self.cluster,
            "archives": self.archives.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "ok": !self.ranges.is_empty(),
            "earliest": ts(self.ranges.first().map(|r| r.from)),
            "latest": ts(self.ranges.last().map(|r| r.to)),
            "length_seconds": self.length().num_seconds(),
            "latest_basis": self.ranges.last().map(|r| r.basis.as_str()),
            "ranges": ranges,
            "holes": holes,
            "counted": self.counted,
            "not_counted": self
                .not_counted
                .iter()
                .map(|(id, why)| json!({"id": id, "reason": why}))
                .collect::<Vec<_>>(),
        });
        if let Some((window, ok)) = required {
            v["required"] = json!({"window": window, "ok": ok});
        }
        v
    }
}

/// The window of `cluster` from its physical backups among `all` and the
/// archives (each a directory, `s3://` or `ssh://` URL that must answer: an
/// archive that cannot be read is an error, not an empty window).
pub fn window(
    cluster: &str,
    all: &[&Artifact],
    archives: &[PathBuf],
    ids: Option<&Identities>,
    chains: &std::collections::BTreeMap<String, ChainInfo>,
) -> Result<Window> {
    let mut roots = Vec::with_capacity(archives.len());
    for dir in archives {
        let root = pgb_common::store::root_of(dir)?;
        // A listing of names no archive holds: cheap, and it fails as the
        // real listing would (a missing directory, an unreachable host, a
        // refused key or bucket).
        pgb_common::store::destination(&root)?
            .list("", "X")
            .map_err(|e| Error::msg(format!("read WAL archive: {e}")))?;
        roots.push(root);
    }
    let archives = &roots[..];
    let mut w = Window {
        cluster: cluster.to_string(),
        archives: archives.to_vec(),
        ..Default::default()
    };
    let mut pieces = Vec::new();
    for a in all
        .iter()
        .filter(|a| a.cluster == cluster && a.kind == Kind::Physical)
    {
        if let Some(why) = chains.get(&a.id).and_then(|c| c.broken.as_ref()) {
            w.not_counted
                .push((a.id.clone(), format!("not restorable: {why}")));
            continue;
        }
        match status(a) {
            Status::Ok => {}
            Status::Failed => {
                w.not_counted
                    .push((a.id.clone(), "its latest verification failed".into()));
                continue;
            }
            Status::Unverified => {
                w.not_counted
                    .push((a.id.clone(), "never verified (run pgb-verify)".into()));
                continue;
            }
        }
        match piece(a, archives, ids)? {
            Ok(p) => {
                w.counted.push(a.id.clone());
                pieces.push(p);
            }
            Err(why) => w.not_counted.push((a.id.clone(), why)),
        }
    }
    w.ranges = merge(pieces);
    Ok(w)
}

/// What one backup reaches: from where it ended to the last commit of the
/// unbroken run of WAL from its start; or why it reaches nothing. An error
/// when the WAL read belongs to another cluster.
fn piece(
    a: &Artifact,
    archives: &[PathBuf],
    ids: Option<&Identities>,
) -> Result<Result<Range, String>> {
    let cov = match Coverage::scan(a, archives, TimelineGoal::Latest) {
        Ok(c) => c,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let last = cov.last();
    let mut end = cov.stop;
    while end < last && cov.present(end + 1) {
        end += 1;
    }
    let from = ended(a);
    let Some(mtime) = cov.found(end).and_then(|(_, s)| s.mtime) else {
        return Ok(Err(format!(
            "the WAL archive does not hold {} yet, the backup's last segment",
            cov.name(end)
        )));
    };
    // The last commit before the end of the run: a target before it is
    // reached. Without one readable (encrypted segments), when the last
    // segment was archived, rounded down to PostgreSQL's microseconds.
    let micro = chrono::Duration::microseconds(1);
    let (to, basis) = match cov.last_commit(archives, end, ids)? {
        Some(commit) => (commit - micro, Basis::Commit),
        None => (
            DateTime::<Utc>::from(mtime)
                .duration_trunc(micro)
                .map_err(|e| Error::msg(e.to_string()))?,
            Basis::Archived,
        ),
    };
    if to < from {
        return Ok(Err(format!(
            "the archived WAL from it ends at {} ({}), before the backup ended ({})",
            cov.name(end),
            match basis {
                Basis::Commit => format!("its last commit at {}", rfc3339(to + micro)),
                Basis::Archived => format!("archived {}", rfc3339(to)),
            },
            rfc3339(from)
        )));
    }
    Ok(Ok(Range {
        from,
        to,
        backups: vec![a.id.clone()],
        last_segment: cov.name(end),
        first_missing: (end < last).then(|| cov.name(end + 1)),
        basis,
    }))
}

/// Overlapping pieces joined; the rest stay apart, oldest first.
fn merge(mut pieces: Vec<Range>) -> Vec<Range> {
    pieces.sort_by_key(|p| p.from);
    let mut out: Vec<Range> = Vec::new();
    for p in pieces {
        match out.last_mut() {
            Some(cur) if p.from <= cur.to => {
                if p.to > cur.to {
                    cur.to = p.to;
                    cur.last_segment = p.last_segment;
                    cur.first_missing = p.first_missing;
                    cur.basis = p.basis;
                }
                cur.backups.extend(p.backups);
            }
            _ => out.push(p),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(from: i64, to: i64, id: &str, missing: Option<&str>) -> Range {
        let t = |s: i64| DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
        Range {
            from: t(from),
            to: t(to),
            backups: vec![id.into()],
            last_segment: format!("seg-{to}"),
            first_missing: missing.map(String::from),
            basis: Basis::Commit,
        }
    }

    #[test]
    fn overlapping_pieces_join_and_holes_split() {
        // b1 reaches to 100 where a hole starts; b2 (taken later) to 300;
        // b3 (after the hole) to 500.
        let m = merge(vec![
            r(400, 500, "b3", None),
            r(10, 100, "b1", Some("gap")),
            r(50, 300, "b2", Some("gap2")),
        ]);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].backups, ["b1", "b2"]);
        assert_eq!(m[0].length().num_seconds(), 290);
        assert_eq!(m[0].first_missing.as_deref(), Some("gap2"));
        assert_eq!(m[1].backups, ["b3"]);
        let w = Window {
            cluster: "main".into(),
            ranges: m,
            ..Default::default()
        };
        assert_eq!(w.length().num_seconds(), 100);
        let v = w.record(Some(("7d", false)));
        assert_eq!(v["holes"].as_array().unwrap().len(), 1);
        assert_eq!(v["holes"][0]["first_missing"], "gap2");
        assert_eq!(v["earliest"], "2027-01-15T08:00:10+00:00");
        assert_eq!(v["required"]["ok"], false);
        // A piece inside another adds its backup only.
        let m = merge(vec![r(10, 100, "a", None), r(20, 50, "b", Some("x"))]);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].first_missing, None);
    }
}
