//! One line per artifact when stdout is a terminal (`--json` for records).

use chrono::Utc;
use pgb_common::human::{artifact_row, brief, cut, millis, s};
use serde_json::Value;

/// An artifact and the checks this run made (`checked`, the `verified`
/// entries it appended): `ok        logical-appdb-…  1.2 MiB  2d 1h ago  checksums 0.1s, structure 0.3s`,
/// or `FAILED` with the first problem of each check that failed.
pub fn line(v: &Value, checked: &[Value]) -> String {
    let now = Utc::now();
    if checked.is_empty() {
        return artifact_row("unchecked", v, now, "no check ran");
    }
    let failed: Vec<String> = checked
        .iter()
        .filter(|e| e.get("ok") != Some(&Value::Bool(true)))
        .map(|e| {
            let p = e
                .get("problems")
                .and_then(Value::as_array)
                .and_then(|p| p.first())
                .and_then(Value::as_str)
                .unwrap_or("failed");
            let p = brief(p, v.get("repo").and_then(Value::as_str));
            format!("{}: {}", s(e, "method"), cut(&p, 160))
        })
        .collect();
    if !failed.is_empty() {
        return artifact_row("FAILED", v, now, &failed.join("; "));
    }
    let done: Vec<String> = checked
        .iter()
        .map(|e| match e.get("duration_ms").and_then(Value::as_u64) {
            Some(ms) => format!("{} {}", s(e, "method"), millis(ms)),
            None => s(e, "method").to_string(),
        })
        .collect();
    artifact_row("ok", v, now, &done.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_checks_of_this_run_decide() {
        let a = json!({"type": "artifact", "id": "logical-x-1", "kind": "logical",
            "database": "x", "files": [{"size": 2048}]});
        let ok = json!({"method": "checksums", "ok": true, "duration_ms": 120});
        let bad =
            json!({"method": "restore", "ok": false, "problems": ["public.t: 3 rows, 4 recorded"]});
        assert_eq!(
            line(&a, std::slice::from_ref(&ok)),
            "ok         logical-x-1  2.0 KiB  checksums 0.1s"
        );
        assert_eq!(
            line(&a, &[ok, bad]),
            "FAILED     logical-x-1  2.0 KiB  restore: public.t: 3 rows, 4 recorded"
        );
        assert!(line(&a, &[]).starts_with("unchecked"));
    }
}
