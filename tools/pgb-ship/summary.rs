//! One line per record when stdout is a terminal (`--json` for records).

use chrono::Utc;
use pgb_common::human::{artifact_row, copies, s};
use serde_json::Value;

/// The copies at this run's destinations (`roots`, as their `to`), by
/// media and site, and with `--require` (`judged`) the verdict:
/// `copied    logical-appdb-…  1.2 MiB  5m ago  to nas@onsite, s3@offsite; 3-2-1 ok`
pub fn renderer(roots: Vec<String>, judged: bool) -> impl FnMut(&Value) -> Option<String> {
    move |v| {
        if v.get("type").and_then(Value::as_str) != Some("artifact") {
            return None;
        }
        let copies = copies(v, &roots);
        let mut word = if copies.is_empty() {
            "no copy"
        } else {
            "copied"
        };
        let mut parts = Vec::new();
        if !copies.is_empty() {
            parts.push(format!("to {}", copies.join(", ")));
        }
        // The verdict of this run's --require, not one recorded earlier.
        if let Some(p) = v.get("policy").filter(|p| judged && p.is_object()) {
            if p.get("ok") == Some(&Value::Bool(true)) {
                parts.push(format!("{} ok", s(p, "rule")));
            } else {
                word = "NOT MET";
                let why: Vec<&str> = p
                    .get("failed")
                    .and_then(Value::as_array)
                    .map(|f| f.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                parts.push(format!("{} not met ({})", s(p, "rule"), why.join("; ")));
            }
        }
        Some(artifact_row(word, v, Utc::now(), &parts.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn this_runs_copies_and_verdict() {
        let a = json!({"type": "artifact", "id": "globals-main-1", "kind": "globals",
            "files": [{"size": 100}],
            "copies": [
                {"to": "/old", "media": "usb", "site": "onsite"},
                {"to": "/nas", "media": "nas", "site": "onsite", "existing": true}],
            "policy": {"rule": "3-2-1", "ok": false,
                "failed": ["1 offsite: no copy has site=offsite"]}});
        let mut r = renderer(vec!["/nas".into()], true);
        assert_eq!(
            r(&a).unwrap(),
            "NOT MET    globals-main-1  100 B  to nas@onsite (already there); \
             3-2-1 not met (1 offsite: no copy has site=offsite)"
        );
        // Without --require, a verdict recorded earlier is not this run's.
        let mut r = renderer(vec!["/nas".into()], false);
        assert_eq!(
            r(&a).unwrap(),
            "copied     globals-main-1  100 B  to nas@onsite (already there)"
        );
    }
}
