//! One line per record when stdout is a terminal (`--json` for records).

use chrono::Utc;
use pgb_common::human::{artifact_row, cut, row, s, span};
use serde_json::Value;

/// `PROBLEM   gap: 00000001000000000000000A: 2 segment(s) missing …`, a
/// backup's WAL as `restorable` or `BROKEN`, and the archive summary:
/// `healthy   /srv/wal: 120 segments on timeline 1, newest … archived 2m ago`.
pub fn render(v: &Value) -> Option<String> {
    match v.get("type").and_then(Value::as_str) {
        Some("archive-problem") => Some(row(
            "PROBLEM",
            &format!(
                "{}: {}: {}",
                s(v, "problem"),
                s(v, "file"),
                cut(s(v, "detail"), 160)
            ),
        )),
        Some("archive-summary") => {
            let ok = v.get("ok") == Some(&Value::Bool(true));
            let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
            let tlis: Vec<String> = v
                .get("timelines")
                .and_then(Value::as_array)
                .map(|t| {
                    t.iter()
                        .filter_map(|t| t.get("timeline").and_then(Value::as_u64))
                        .map(|t| t.to_string())
                        .collect()
                })
                .unwrap_or_default();
            let mut text = format!("{}: {} segments", s(v, "archive"), n("segments"));
            match tlis.len() {
                0 => {}
                1 => text.push_str(&format!(" on timeline {}", tlis[0])),
                _ => text.push_str(&format!(" on timelines {}", tlis.join(", "))),
            }
            if let (Some(seg), Some(age)) = (
                v.get("newest_segment").and_then(Value::as_str),
                v.get("age_seconds").and_then(Value::as_f64),
            ) {
                text.push_str(&format!(
                    ", newest {seg} archived {} ago",
                    span(chrono::Duration::seconds(age as i64))
                ));
            }
            if let Some(sv) = v.get("server").filter(|x| x.is_object()) {
                if let Some(b) = sv
                    .get("segments_behind")
                    .and_then(Value::as_u64)
                    .filter(|b| *b > 0)
                {
                    text.push_str(&format!(
                        "; {b} finished segment(s) of the server not yet archived"
                    ));
                }
            }
            match n("problems") {
                0 => {}
                1 => text.push_str("; 1 problem"),
                p => text.push_str(&format!("; {p} problems")),
            }
            Some(row(if ok { "healthy" } else { "UNHEALTHY" }, &text))
        }
        Some("artifact") => {
            let c = v.get("archive_check").filter(|c| c.is_object())?;
            let now = Utc::now();
            if c.get("restorable") == Some(&Value::Bool(true)) {
                Some(artifact_row(
                    "restorable",
                    v,
                    now,
                    &format!("WAL archived through {}", s(c, "wal_end_segment")),
                ))
            } else {
                let len = |k: &str| c.get(k).and_then(Value::as_array).map_or(0, Vec::len);
                Some(artifact_row(
                    "BROKEN",
                    v,
                    now,
                    &format!(
                        "unrestorable: {} segment(s) of its WAL missing, {} bad",
                        len("missing"),
                        len("bad")
                    ),
                ))
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_backup_without_its_wal_is_broken() {
        let a = json!({"type": "artifact", "id": "physical-main-1", "kind": "physical",
            "files": [{"size": 2048}],
            "archive_check": {"restorable": false, "missing": ["A", "B"], "bad": ["C"]}});
        assert_eq!(
            render(&a).unwrap(),
            "BROKEN     physical-main-1  2.0 KiB  unrestorable: 2 segment(s) of its WAL missing, 1 bad"
        );
        let s = json!({"type": "archive-summary", "archive": "/w", "ok": false,
            "segments": 9, "timelines": [{"timeline": 1}, {"timeline": 2}],
            "newest_segment": "000000020000000000000009", "age_seconds": 7300.5,
            "problems": 2, "server": {"segments_behind": 3}});
        assert_eq!(
            render(&s).unwrap(),
            "UNHEALTHY  /w: 9 segments on timelines 1, 2, newest 000000020000000000000009 archived 2h 1m ago; 3 finished segment(s) of the server not yet archived; 2 problems"
        );
        // A logical dump passed through is the writer's default.
        assert_eq!(render(&json!({"type": "artifact", "id": "x"})), None);
    }
}
