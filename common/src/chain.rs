//! Chains of incremental physical backups (PostgreSQL 17+): a full backup
//! and the incrementals taken on it, each naming its parent in the record
//! (`"incremental": {"parent": ID, "depth": N, "from_lsn": LSN}`).
//!
//! PostgreSQL's pg_combinebackup rebuilds a full backup from a chain but
//! does not keep track of which backup depends on which; the records do.
//! Here a chain is resolved from a repository's sidecars and checked link
//! by link before any member is used: every parent present, of the same
//! cluster (system identifier) and timeline, and the child's backup_label
//! `INCREMENTAL FROM LSN` equal to the parent's start LSN (a member swapped
//! for another backup breaks that).

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::jsonl::Input;
use crate::record::{Artifact, Kind};

/// The `incremental` field of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incremental {
    pub parent: String,
    /// 1 for an incremental on a full backup, 2 on that one, ...
    pub depth: u32,
    /// The parent's start LSN as the child's backup_label gives it.
    pub from_lsn: Option<String>,
}

/// The record's `incremental` field; `None` for a full backup.
pub fn incremental_of(a: &Artifact) -> Result<Option<Incremental>> {
    let Some(v) = a.extra.get("incremental") else {
        return Ok(None);
    };
    if v.is_null() {
        return Ok(None);
    }
    let parent = v.get("parent").and_then(Value::as_str);
    let depth = v.get("depth").and_then(Value::as_u64);
    match (parent, depth) {
        (Some(p), Some(d)) if !p.is_empty() && d >= 1 => Ok(Some(Incremental {
            parent: p.to_string(),
            depth: d as u32,
            from_lsn: v
                .get("from_lsn")
                .and_then(Value::as_str)
                .map(str::to_string),
        })),
        _ => Err(Error::msg(format!(
            "{}: malformed \"incremental\" field in the record: {v}",
            a.id
        ))),
    }
}

/// The depth of a backup in its chain: 0 for a full one.
pub fn depth_of(a: &Artifact) -> Result<u32> {
    Ok(incremental_of(a)?.map_or(0, |i| i.depth))
}

/// A backup_label line's value (`INCREMENTAL FROM LSN: 0/3000028`).
pub fn label_value<'a>(label: &'a str, key: &str) -> Option<&'a str> {
    label.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|r| r.strip_prefix(':'))
            .map(str::trim)
    })
}

/// The record's backup_label text.
pub fn backup_label(a: &Artifact) -> Option<&str> {
    a.extra.get("backup_label").and_then(Value::as_str)
}

/// Every physical backup recorded in the sidecars below `dir` (`repo`
/// itself or a directory in it), located in repository `repo` (absolute).
pub fn load_physical(repo: &Path, dir: &Path) -> Result<Vec<Artifact>> {
    let mut out = Vec::new();
    for p in crate::repo::sidecars(dir)? {
        if let Input::Artifact { artifact, .. } = crate::repo::read_in(repo, &p)? {
            if artifact.kind == Kind::Physical {
                out.push(*artifact);
            }
        }
    }
    out.sort_by_key(|a| a.created);
    Ok(out)
}

/// The chain ending in `a`, oldest (the full backup) first, its parents
/// looked up among `all` (same cluster label). Each link is checked: see
/// [`check_link`]. A missing parent names itself and the member that
/// needs it.
pub fn resolve(a: &Artifact, all: &[Artifact]) -> Result<Vec<Artifact>> {
    let mut chain = vec![a.clone()];
    let mut seen = std::collections::BTreeSet::new();
    seen.insert(a.id.clone());
    while let Some(inc) = incremental_of(chain.last().expect("not empty"))? {
        let child = chain.last().expect("not empty");
        let parent = all
            .iter()
            .find(|p| p.id == inc.parent && p.cluster == child.cluster)
            .ok_or_else(|| {
                Error::msg(format!(
                    "chain of {}: member {} (parent of {}) is missing from the repository {}; \
                     the chain cannot be restored",
                    a.id, inc.parent, child.id, child.repo
                ))
            })?;
        if !seen.insert(parent.id.clone()) {
            return Err(Error::msg(format!(
                "chain of {}: {} appears twice; the records form a loop",
                a.id, parent.id
            )));
        }
        check_link(parent, child, &inc)?;
        chain.push(parent.clone());
    }
    chain.reverse();
    Ok(chain)
}

/// Checks that `child` (whose record says `inc`) was taken on `parent`:
/// same system identifier and timeline, depths that follow, and the
/// child's backup_label `INCREMENTAL FROM LSN` at the parent's start.
pub fn check_link(parent: &Artifact, child: &Artifact, inc: &Incremental) -> Result<()> {
    let broken = |why: String| {
        Err(Error::msg(format!(
            "chain of {}: member {} does not match its child {}: {why}; was a member replaced?",
            child.id, parent.id, child.id
        )))
    };
    if parent.kind != Kind::Physical {
        return broken("not a physical backup".into());
    }
    if parent.system_identifier != child.system_identifier {
        return broken(format!(
            "system identifier {} but the child's is {}",
            parent.system_identifier.as_deref().unwrap_or("unknown"),
            child.system_identifier.as_deref().unwrap_or("unknown")
        ));
    }
    let pd = depth_of(parent)?;
    if pd + 1 != inc.depth {
        return broken(format!(
            "depth {pd}, but the child's record says depth {}",
            inc.depth
        ));
    }
    let (Some(pw), Some(cw)) = (&parent.wal, &child.wal) else {
        return broken("a record without its WAL range".into());
    };
    let from = backup_label(child)
        .and_then(|l| label_value(l, "INCREMENTAL FROM LSN"))
        .map(str::to_string)
        .or_else(|| inc.from_lsn.clone());
    match from {
        Some(f) if f == pw.start_lsn => {}
        Some(f) => {
            return broken(format!(
                "it starts at LSN {}, but the child was taken on a backup that starts at {f}",
                pw.start_lsn
            ))
        }
        None => return broken("the child's record has no INCREMENTAL FROM LSN".into()),
    }
    if let Some(tli) = backup_label(child)
        .and_then(|l| label_value(l, "INCREMENTAL FROM TLI"))
        .and_then(|t| t.parse::<u32>().ok())
    {
        if tli != pw.timeline {
            return broken(format!(
                "it is on timeline {}, the child was taken on timeline {tli}",
                pw.timeline
            ));
        }
    }
    if crate::wal::parse_lsn(&cw.start_lsn) < crate::wal::parse_lsn(&pw.stop_lsn) {
        return broken(format!(
            "it stops at {} after the child starts at {}",
            pw.stop_lsn, cw.start_lsn
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(id: &str, start: &str, stop: &str, inc: Option<(&str, u32, &str)>) -> Artifact {
        let mut v = json!({
            "schema": "pgb.v1", "type": "artifact", "id": id, "kind": "physical",
            "cluster": "main", "system_identifier": "42",
            "created": "2026-11-21T10:15:00+00:00", "repo": "/r", "path": id,
            "files": [], "copies": [], "verified": [],
            "wal": {"timeline": 1, "start_lsn": start, "stop_lsn": stop,
                    "start_segment": "x", "stop_segment": "y", "segment_size": 1048576},
        });
        if let Some((p, d, from)) = inc {
            v["incremental"] = json!({"parent": p, "depth": d});
            v["backup_label"] =
                format!("START WAL LOCATION: {start}\nINCREMENTAL FROM LSN: {from}\nINCREMENTAL FROM TLI: 1\n")
                    .into();
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn resolves_oldest_first_and_names_what_is_wrong() {
        let full = rec("f", "0/2000028", "0/2000100", None);
        let i1 = rec("i1", "0/4000028", "0/4000100", Some(("f", 1, "0/2000028")));
        let i2 = rec("i2", "0/6000028", "0/6000100", Some(("i1", 2, "0/4000028")));
        let all = vec![full.clone(), i1.clone(), i2.clone()];
        let ids: Vec<String> = resolve(&i2, &all)
            .unwrap()
            .into_iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(ids, ["f", "i1", "i2"]);
        assert_eq!(resolve(&full, &all).unwrap().len(), 1);

        let e = resolve(&i2, &[full.clone(), i2.clone()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("member i1 (parent of i2) is missing"), "{e}");

        // Another full backup in the parent's place.
        let other = rec("f", "0/3000028", "0/3000100", None);
        let e = resolve(&i2, &[other, i1.clone(), i2.clone()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("member f does not match its child i1"), "{e}");
        assert!(e.contains("0/2000028"), "{e}");

        let mut stranger = full.clone();
        stranger.system_identifier = Some("7".into());
        let e = resolve(&i1, &[stranger, i1.clone()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("system identifier 7"), "{e}");

        let bad_depth = rec("i2", "0/6000028", "0/6000100", Some(("i1", 3, "0/4000028")));
        let e = resolve(&bad_depth, &all).unwrap_err().to_string();
        assert!(e.contains("depth"), "{e}");
    }
}
