//! One line per record when stdout is a terminal (`--json` for records).

use chrono::Utc;
use pgb_common::human::{artifact_row, millis};
use serde_json::Value;

/// `taken     logical-appdb-…  1.2 MiB  3s ago  in 2.1s, 12 tables counted`
pub fn render(v: &Value) -> Option<String> {
    if v.get("type").and_then(Value::as_str) != Some("artifact") {
        return None;
    }
    let mut d = Vec::new();
    if let Some(ms) = v.get("duration_ms").and_then(Value::as_u64) {
        d.push(format!("in {}", millis(ms)));
    }
    if let Some(rc) = v.get("row_counts").and_then(Value::as_object) {
        let n = rc.len();
        d.push(format!(
            "{n} table{} counted",
            if n == 1 { "" } else { "s" }
        ));
    }
    if let Some(w) = v.get("wal").filter(|w| w.is_object()) {
        d.push(format!(
            "WAL {}..{}",
            pgb_common::human::s(w, "start_segment"),
            pgb_common::human::s(w, "stop_segment")
        ));
    }
    Some(artifact_row("taken", v, Utc::now(), &d.join(", ")))
}
