//! One line per record when stdout is a terminal (`--json` for records).

use chrono::Utc;
use pgb_common::human::{artifact_row, cut, row, s};
use serde_json::Value;

/// `keep      logical-appdb-…  1.2 MiB  2d 1h ago  daily 2026-11-29, weekly 2026-W48`,
/// `delete` (the plan) or `deleted` (done), with the reasons; WAL expiry
/// as `delete    WAL 000000010000000000000001..000000010000000000000004 (4 files): …`.
pub fn render(v: &Value) -> Option<String> {
    match v.get("type").and_then(Value::as_str) {
        Some("artifact") => {
            let p = v.get("prune").filter(|p| p.is_object())?;
            let deleted = p.get("deleted") == Some(&Value::Bool(true));
            let word = match (s(p, "action"), deleted) {
                ("delete", true) => "deleted",
                (a, _) => a,
            };
            let reasons: Vec<&str> = p
                .get("reasons")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            Some(artifact_row(
                word,
                v,
                Utc::now(),
                &cut(&reasons.join(", "), 100),
            ))
        }
        Some("wal-expiry") => {
            let deleted = v.get("deleted") == Some(&Value::Bool(true));
            let word = match (s(v, "action"), deleted) {
                ("delete", true) => "deleted",
                (a, _) => a,
            };
            let files = v.get("files").and_then(Value::as_u64).unwrap_or(0);
            let what = match (v.get("first"), v.get("last")) {
                (Some(f), Some(l)) => format!(
                    "WAL {}..{} ({files} file{})",
                    f.as_str().unwrap_or("?"),
                    l.as_str().unwrap_or("?"),
                    if files == 1 { "" } else { "s" }
                ),
                _ => format!("WAL in {}", s(v, "archive")),
            };
            Some(row(word, &format!("{what}: {}", cut(s(v, "reason"), 100))))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn artifacts_and_wal_ranges_in_a_line() {
        let a = json!({"type": "artifact", "id": "logical-x-1", "kind": "logical",
            "database": "x", "files": [{"size": 10}],
            "prune": {"action": "delete", "reasons": ["kept by no rule"], "deleted": true}});
        assert_eq!(
            render(&a).unwrap(),
            "deleted    logical-x-1  10 B  kept by no rule"
        );
        let w = json!({"type": "wal-expiry", "archive": "/a", "timeline": 1,
            "first": "000000010000000000000001", "last": "000000010000000000000004",
            "files": 4, "action": "delete", "reason": "before physical-main-2"});
        assert_eq!(
            render(&w).unwrap(),
            "delete     WAL 000000010000000000000001..000000010000000000000004 (4 files): before physical-main-2"
        );
        let k = json!({"type": "wal-expiry", "archive": "/a", "files": 0,
            "action": "keep", "reason": "no kept physical backup"});
        assert_eq!(
            render(&k).unwrap(),
            "keep       WAL in /a: no kept physical backup"
        );
    }
}
