//! One artifact as the catalogue shows it: the `listing` record.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use pgb_common::record::{Artifact, SCHEMA};
use serde_json::{json, Map, Value};

/// What the checks recorded on an artifact say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Verified, and the latest check of every method passed.
    Ok,
    /// The latest check of some method failed.
    Failed,
    /// Never verified.
    Unverified,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Failed => "failed",
            Status::Unverified => "unverified",
        }
    }
}

/// The latest `verified` entry of each method (entries are appended oldest
/// first).
pub fn latest_checks(a: &Artifact) -> BTreeMap<String, &Value> {
    let mut out = BTreeMap::new();
    for v in &a.verified {
        if let Some(m) = v.get("method").and_then(Value::as_str) {
            out.insert(m.to_string(), v);
        }
    }
    out
}

pub fn status(a: &Artifact) -> Status {
    let checks = latest_checks(a);
    if checks.is_empty() {
        Status::Unverified
    } else if checks
        .values()
        .all(|v| v.get("ok").and_then(Value::as_bool) == Some(true))
    {
        Status::Ok
    } else {
        Status::Failed
    }
}

/// Where recovery from a physical backup becomes consistent, as
/// pgb-restore --select reach takes it: created plus duration_ms.
pub fn ended(a: &Artifact) -> DateTime<Utc> {
    let took = a
        .extra
        .get("duration_ms")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    a.created.with_timezone(&Utc) + Duration::milliseconds(took)
}

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

/// Where a physical backup stands in its chain of incrementals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainInfo {
    /// 0 for a full backup, N for the Nth incremental on it.
    pub depth: u32,
    /// The chain's ids, the full backup first and this one last, when
    /// every member is there and matches its child.
    pub members: Vec<String>,
    /// Why the chain cannot be restored (a member missing, a loop, a
    /// member that does not match its child).
    pub broken: Option<String>,
}

impl ChainInfo {
    /// "full", "incr 3 of chain from ID", or why it is broken.
    pub fn describe(&self) -> String {
        match (&self.broken, self.depth, self.members.first()) {
            (Some(_), d, _) => format!("incr {d}, chain BROKEN"),
            (None, 0, _) => "full".into(),
            (None, d, Some(full)) => format!("incr {d} of chain from {full}"),
            (None, d, None) => format!("incr {d}"),
        }
    }
}

/// The chain of every physical backup among `all`, by id: resolved and
/// checked link by link as pgb-restore does before restoring it.
pub fn chains(all: &[Artifact]) -> BTreeMap<String, ChainInfo> {
    let physical: Vec<Artifact> = all
        .iter()
        .filter(|a| a.kind == pgb_common::record::Kind::Physical)
        .cloned()
        .collect();
    let mut out = BTreeMap::new();
    for a in &physical {
        let info = match pgb_common::chain::incremental_of(a) {
            Ok(None) => ChainInfo {
                depth: 0,
                members: vec![a.id.clone()],
                broken: None,
            },
            Ok(Some(inc)) => match pgb_common::chain::resolve(a, &physical) {
                Ok(c) => ChainInfo {
                    depth: inc.depth,
                    members: c.into_iter().map(|m| m.id).collect(),
                    broken: None,
                },
                Err(e) => ChainInfo {
                    depth: inc.depth,
                    members: Vec::new(),
                    broken: Some(e.to_string()),
                },
            },
            Err(e) => ChainInfo {
                depth: 0,
                members: Vec::new(),
                broken: Some(e.to_string()),
            },
        };
        out.insert(a.id.clone(), info);
    }
    out
}

/// The parent a record names (incremental backups: pgb-snapshot writes
/// `incremental.parent`), if any.
fn chain(a: &Artifact) -> Option<&str> {
    a.extra
        .get("incremental")
        .and_then(|i| i.get("parent"))
        .and_then(Value::as_str)
        .or_else(|| {
            ["parent", "parent_id"]
                .iter()
                .find_map(|k| a.extra.get(*k).and_then(Value::as_str))
        })
}

/// The `listing` record of `a` at `now`; `media` and `site` label the
/// original for the 3-2-1 verdict; `chain` where it stands in its chain
/// (physical backups).
pub fn listing(
    a: &Artifact,
    now: DateTime<Utc>,
    media: &str,
    site: &str,
    chain_info: Option<&ChainInfo>,
) -> Value {
    let size: u64 = a.files.iter().map(|f| f.size).sum();
    let mut by_media: BTreeMap<String, u64> = BTreeMap::from([(media.to_string(), 1)]);
    let mut by_site: BTreeMap<String, u64> = BTreeMap::from([(site.to_string(), 1)]);
    for c in &a.copies {
        let label = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
        *by_media.entry(label("media")).or_default() += 1;
        *by_site.entry(label("site")).or_default() += 1;
    }
    let when = now.to_rfc3339_opts(SecondsFormat::Secs, true);
    let policy = pgb_common::policy::three_two_one(&a.copies, media, site, &when);
    let mut verified = Map::new();
    for (method, v) in latest_checks(a) {
        verified.insert(
            method,
            json!({"ok": v.get("ok"), "when": v.get("when"), "duration_ms": v.get("duration_ms")}),
        );
    }
    let last_restore = latest_checks(a).get("restore").map(|v| {
        json!({
            "when": v.get("when"),
            "ok": v.get("ok"),
            "duration_ms": v.get("duration_ms"),
            "restore_ms": v.get("restore_ms"),
        })
    });
    let mut m = Map::new();
    m.insert("schema".into(), SCHEMA.into());
    m.insert("type".into(), "listing".into());
    m.insert("cluster".into(), a.cluster.clone().into());
    m.insert("kind".into(), a.kind.as_str().into());
    m.insert("database".into(), a.database.clone().into());
    m.insert("id".into(), a.id.clone().into());
    m.insert(
        "created".into(),
        a.created
            .to_rfc3339_opts(SecondsFormat::AutoSi, false)
            .into(),
    );
    m.insert(
        "age_seconds".into(),
        (now - a.created.with_timezone(&Utc)).num_seconds().into(),
    );
    m.insert("size".into(), size.into());
    m.insert("files".into(), a.files.len().into());
    m.insert("encrypted".into(), a.encryption.is_some().into());
    m.insert("chain".into(), chain(a).into());
    if let Some(c) = chain_info {
        m.insert("depth".into(), c.depth.into());
        m.insert(
            "chain_members".into(),
            if c.broken.is_some() {
                Value::Null
            } else {
                json!(c.members)
            },
        );
        m.insert("chain_broken".into(), c.broken.clone().into());
        m.insert("restorable".into(), c.broken.is_none().into());
    }
    m.insert("copies".into(), policy["copies"].clone());
    m.insert("copies_by_media".into(), json!(by_media));
    m.insert("copies_by_site".into(), json!(by_site));
    m.insert("policy".into(), policy);
    m.insert("verified".into(), Value::Object(verified));
    m.insert("last_restore".into(), last_restore.into());
    m.insert("status".into(), status(a).as_str().into());
    m.insert("repo".into(), a.repo.clone().into());
    m.insert("path".into(), a.path.clone().into());
    if let Some(w) = &a.wal {
        m.insert(
            "wal".into(),
            json!({"timeline": w.timeline, "start_lsn": w.start_lsn, "stop_lsn": w.stop_lsn}),
        );
        m.insert("ended".into(), rfc3339(ended(a)).into());
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(extra: Value) -> Artifact {
        let mut v = json!({
            "schema": "pgb.v1", "type": "artifact", "id": "x", "kind": "physical",
            "cluster": "main", "created": "2026-11-21T10:15:00+01:00",
            "repo": "/r", "path": "main/physical/x",
            "files": [
                {"name": "base.tar.zst", "size": 1000, "sha256": "s", "blake3": "b"},
                {"name": "pg_wal.tar.zst", "size": 24, "sha256": "s", "blake3": "b"}
            ],
            "wal": {"timeline": 1, "start_lsn": "0/2000028", "stop_lsn": "0/2000100",
                    "start_segment": "000000010000000000000002",
                    "stop_segment": "000000010000000000000002", "segment_size": 16777216},
            "duration_ms": 2500,
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_latest_check_of_each_method_decides() {
        let now = "2026-11-21T12:15:00Z".parse().unwrap();
        let a = artifact(json!({}));
        assert_eq!(status(&a), Status::Unverified);
        let l = listing(&a, now, "local", "onsite", None);
        assert_eq!(l["size"], 1024);
        assert_eq!(l["age_seconds"], 3 * 3600);
        assert_eq!(l["ended"], "2026-11-21T09:15:02.500+00:00");
        assert_eq!(l["copies"], 1);
        assert_eq!(l["policy"]["ok"], false);
        assert_eq!(l["chain"], Value::Null);
        let a = artifact(json!({
            "verified": [
                {"method": "checksums", "ok": false, "when": "t1"},
                {"method": "restore", "ok": true, "when": "t2", "duration_ms": 9000, "restore_ms": 7000},
                {"method": "checksums", "ok": true, "when": "t3"}
            ],
            "copies": [
                {"url": "/nas/x", "media": "nas", "site": "onsite"},
                {"url": "s3://b/x", "media": "s3", "site": "offsite"}
            ],
            "encryption": {"scheme": "age"},
            "parent": "physical-main-1"
        }));
        assert_eq!(status(&a), Status::Ok);
        let l = listing(&a, now, "local", "onsite", None);
        assert_eq!(l["verified"]["checksums"]["when"], "t3");
        assert_eq!(l["last_restore"]["restore_ms"], 7000);
        assert_eq!(l["copies_by_site"], json!({"offsite": 1, "onsite": 2}));
        assert_eq!(l["policy"]["ok"], true);
        assert_eq!(l["encrypted"], true);
        assert_eq!(l["chain"], "physical-main-1");
        let inc = artifact(json!({"incremental": {"parent": "physical-main-0", "depth": 1}}));
        assert_eq!(
            listing(&inc, now, "local", "onsite", None)["chain"],
            "physical-main-0"
        );
        let a = artifact(json!({"verified": [
            {"method": "checksums", "ok": true}, {"method": "manifest", "ok": false}
        ]}));
        assert_eq!(status(&a), Status::Failed);
    }
}
