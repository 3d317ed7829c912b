//! One line per record when stdout is a terminal (`--json` for records).

use chrono::Utc;
use pgb_common::human::{artifact, brief, bytes, cut, millis, row, s};
use serde_json::Value;

/// `restored  physical-main-…  2h ago  into /srv/restore: 1.2 GiB, 1,024 files in 14s; target time …`,
/// a logical one with the row counts compared, `FAILED` with the first
/// problem, and a dry run's plan, one step per line.
pub fn render(v: &Value) -> Option<String> {
    if v.get("type").and_then(Value::as_str) != Some("restore") {
        return None;
    }
    let a = v.get("artifact").cloned().unwrap_or(Value::Null);
    let head = artifact(&a, Utc::now());
    if v.get("dry_run") == Some(&Value::Bool(true)) {
        let mut text = row("plan", &head);
        for step in v
            .get("plan")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            text.push_str("\n           - ");
            text.push_str(step);
        }
        return Some(text);
    }
    let mut parts = Vec::new();
    if let Some(p) = v.get("pgdata").and_then(Value::as_str) {
        let mut t = format!("into {p}");
        if let (Some(b), Some(f)) = (
            v.get("bytes").and_then(Value::as_u64),
            v.get("files").and_then(Value::as_u64),
        ) {
            t.push_str(&format!(": {}, {f} files", bytes(b)));
        }
        parts.push(t);
        if let Some(t) = v.get("target").filter(|t| t.is_object()) {
            match t.get("value").and_then(Value::as_str) {
                Some(x) => parts.push(format!("target {} {x}", s(t, "type"))),
                None => parts.push(format!("target {}", s(t, "type"))),
            }
        }
    }
    if let Some(d) = v.get("database").and_then(Value::as_str) {
        parts.push(format!("into database {d}"));
    } else if v.get("existing_roles_kept").is_some() {
        parts.push("globals".to_string());
    }
    if let Some(rc) = v.get("row_counts").filter(|r| r.is_object()) {
        let n = rc.get("compared").and_then(Value::as_u64).unwrap_or(0);
        let t = if n == 1 { "table" } else { "tables" };
        parts.push(format!("row counts of {n} {t} compared"));
    }
    if let Some(ms) = v.get("duration_ms").and_then(Value::as_u64) {
        parts.push(format!("in {}", millis(ms)));
    }
    let ok = v.get("ok") == Some(&Value::Bool(true));
    let word = if ok {
        "restored"
    } else {
        if let Some(p) = v
            .get("problems")
            .or_else(|| v.get("row_counts").and_then(|r| r.get("problems")))
            .and_then(Value::as_array)
            .and_then(|p| p.first())
            .and_then(Value::as_str)
        {
            let repo = a.get("repo").and_then(Value::as_str);
            parts.insert(0, cut(&brief(p, repo), 160));
        }
        "FAILED"
    };
    Some(row(word, &format!("{head}  {}", parts.join("; "))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_dry_run_lists_its_steps_and_a_failure_its_problem() {
        let a = json!({"id": "logical-appdb-1", "kind": "logical", "database": "appdb"});
        let plan = json!({"type": "restore", "artifact": a, "dry_run": true, "ok": true,
            "plan": ["CREATE DATABASE appdb", "pg_restore -j 1 /r/x into appdb"]});
        assert_eq!(
            render(&plan).unwrap(),
            "plan       logical-appdb-1\n           - CREATE DATABASE appdb\n           - pg_restore -j 1 /r/x into appdb"
        );
        let p = json!({"type": "restore", "ok": true, "duration_ms": 14200,
            "artifact": {"id": "physical-main-1", "kind": "physical"},
            "pgdata": "/srv/restore", "files": 1024, "bytes": 3u64 << 30,
            "target": {"type": "time", "value": "2026-12-01 10:00:00+00"}});
        assert_eq!(
            render(&p).unwrap(),
            "restored   physical-main-1  into /srv/restore: 3.0 GiB, 1024 files; \
             target time 2026-12-01 10:00:00+00; in 14s"
        );
        let damaged = json!({"type": "restore", "ok": false, "restored": false,
            "artifact": {"id": "physical-main-1", "kind": "physical", "repo": "/r"},
            "problems": [format!("/r/main/physical/x/base.tar.zst: sha256 {} differs", "ab".repeat(32))]});
        assert_eq!(
            render(&damaged).unwrap(),
            "FAILED     physical-main-1  main/physical/x/base.tar.zst: sha256 abababababab… differs"
        );
        let bad = json!({"type": "restore", "artifact": a, "ok": false, "database": "appdb",
            "row_counts": {"compared": 2, "ok": false, "problems": ["public.t: 3 rows, 4 recorded"]}});
        assert_eq!(
            render(&bad).unwrap(),
            "FAILED     logical-appdb-1  public.t: 3 rows, 4 recorded; into database appdb; row counts of 2 tables compared"
        );
    }
}
