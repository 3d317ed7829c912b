//! The `pgb.v1` record types. See `pgb(7)` for the schema.
//!
//! Fields this version does not know are kept in `extra` and written back
//! unchanged, so a record passes through any tool without losing what a newer
//! tool added (the schema only grows within `pgb.v1`).

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub const SCHEMA: &str = "pgb.v1";

/// What an artifact holds.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// One database, pg_dump custom format.
    Logical,
    /// Roles, memberships and tablespaces: pg_dumpall --globals-only.
    Globals,
    /// A pg_basebackup base backup (several files).
    Physical,
    /// One archived WAL segment.
    Wal,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Logical => "logical",
            Kind::Globals => "globals",
            Kind::Physical => "physical",
            Kind::Wal => "wal",
        }
    }
}

/// One file of an artifact, with the checksums of its bytes as stored.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Path relative to the artifact's `path` (for a single-file artifact, its
    /// own file name).
    pub name: String,
    pub size: u64,
    pub sha256: String,
    pub blake3: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A backup artifact record (`"type": "artifact"`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Artifact {
    pub schema: String,
    #[serde(rename = "type")]
    pub record_type: String,
    /// Stable identifier, unique within a cluster label.
    pub id: String,
    pub kind: Kind,
    /// The operator's label for the cluster (`--cluster`).
    pub cluster: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_identifier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// When the backup was taken (RFC 3339 with its UTC offset).
    pub created: DateTime<FixedOffset>,
    /// Absolute path of the repository root holding the artifact.
    pub repo: String,
    /// The artifact's file or directory, relative to `repo`.
    pub path: String,
    pub files: Vec<FileEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    /// Exact row counts per table (`schema.table`), taken in the dump's own
    /// snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_counts: Option<BTreeMap<String, u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal: Option<WalRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Value>,
    #[serde(default)]
    pub copies: Vec<Value>,
    #[serde(default)]
    pub verified: Vec<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Compression {
    /// `zstd`, `gzip` (pg_dump's own) or `none`.
    pub algorithm: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<i32>,
    /// `pgb` when pgb compressed the stream, `pg_dump` or `pg_basebackup`
    /// when the PostgreSQL tool did.
    pub by: String,
}

/// The WAL a physical backup needs: from its start to its stop location.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WalRange {
    pub timeline: u32,
    pub start_lsn: String,
    pub stop_lsn: String,
    pub start_segment: String,
    pub stop_segment: String,
    pub segment_size: u64,
}

impl Artifact {
    /// The artifact's location on disk: `repo/path`.
    pub fn location(&self) -> std::path::PathBuf {
        std::path::Path::new(&self.repo).join(&self.path)
    }

    /// The sidecar that holds this record next to the artifact.
    pub fn sidecar(&self) -> std::path::PathBuf {
        sidecar_for(&self.location())
    }

    /// The methods whose latest `verified` entry failed (`ok` not true),
    /// each as `METHOD at WHEN: first problem`; empty when none did. Entries
    /// are appended in order, so the last of a method is its latest.
    pub fn failed_verifications(&self) -> Vec<String> {
        let mut latest: BTreeMap<&str, &Value> = BTreeMap::new();
        for v in &self.verified {
            latest.insert(v.get("method").and_then(Value::as_str).unwrap_or("?"), v);
        }
        latest
            .into_iter()
            .filter(|(_, v)| v.get("ok").and_then(Value::as_bool) != Some(true))
            .map(|(m, v)| {
                let when = v.get("when").and_then(Value::as_str).unwrap_or("?");
                match v
                    .get("problems")
                    .and_then(Value::as_array)
                    .and_then(|p| p.first())
                    .and_then(Value::as_str)
                {
                    Some(p) => format!("{m} at {when}: {p}"),
                    None => format!("{m} at {when}"),
                }
            })
            .collect()
    }
}

/// `<artifact>.pgb.json`, next to the artifact file or directory.
pub fn sidecar_for(artifact: &std::path::Path) -> std::path::PathBuf {
    let mut s = artifact.as_os_str().to_os_string();
    s.push(".pgb.json");
    s.into()
}

/// An error record (`"type": "error"`): a tool failed on an artifact or could
/// not produce one. `artifact` is the record as it was, when there was one.
pub fn error_record(
    tool: &str,
    message: &str,
    artifact: Option<&Value>,
    context: Map<String, Value>,
) -> Value {
    let mut m = Map::new();
    m.insert("schema".into(), SCHEMA.into());
    m.insert("type".into(), "error".into());
    m.insert("tool".into(), tool.into());
    m.insert("message".into(), message.into());
    m.insert(
        "time".into(),
        chrono::Local::now()
            .fixed_offset()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
            .into(),
    );
    for (k, v) in context {
        m.insert(k, v);
    }
    if let Some(a) = artifact {
        m.insert("artifact".into(), a.clone());
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({
            "schema": "pgb.v1", "type": "artifact", "id": "x", "kind": "logical",
            "cluster": "main", "created": "2026-11-21T10:15:00+01:00",
            "repo": "/r", "path": "main/logical/app/a.dump.zst",
            "files": [{"name": "a.dump.zst", "size": 3, "sha256": "s", "blake3": "b", "later": 1}],
            "copies": [], "verified": [],
            "added_by_a_newer_tool": {"k": [1, 2]}
        })
    }

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let a: Artifact = serde_json::from_value(sample()).unwrap();
        assert_eq!(serde_json::to_value(&a).unwrap(), sample());
    }

    #[test]
    fn created_keeps_its_offset() {
        let a: Artifact = serde_json::from_value(sample()).unwrap();
        assert_eq!(a.created.offset().local_minus_utc(), 3600);
    }

    #[test]
    fn a_methods_latest_verification_decides() {
        let mut a: Artifact = serde_json::from_value(sample()).unwrap();
        assert!(a.failed_verifications().is_empty());
        a.verified = vec![
            serde_json::json!({"method": "checksums", "ok": false, "when": "t1", "problems": ["x: sha256"]}),
            serde_json::json!({"method": "restore", "ok": true, "when": "t1"}),
        ];
        assert_eq!(a.failed_verifications(), ["checksums at t1: x: sha256"]);
        a.verified
            .push(serde_json::json!({"method": "checksums", "ok": true, "when": "t2"}));
        assert!(a.failed_verifications().is_empty());
        a.verified
            .push(serde_json::json!({"method": "restore", "ok": false, "when": "t3"}));
        assert_eq!(a.failed_verifications(), ["restore at t3"]);
    }

    #[test]
    fn sidecar_sits_next_to_the_artifact() {
        let a: Artifact = serde_json::from_value(sample()).unwrap();
        assert_eq!(
            a.sidecar(),
            std::path::Path::new("/r/main/logical/app/a.dump.zst.pgb.json")
        );
    }
}
