//! One line per artifact when stdout is a terminal (`--json` for records).

use chrono::Utc;
use pgb_common::human::{artifact_row, s};
use serde_json::Value;

/// `encrypted logical-appdb-…  1.2 MiB  5m ago  age for 2 recipients`,
/// `decrypted`, or `unchanged` when this run (`changed` false) left the
/// artifact as it was.
pub fn line(v: &Value, decrypt: bool, changed: bool) -> String {
    let now = Utc::now();
    let how = match v.get("encryption").filter(|e| e.is_object()) {
        Some(e) => {
            let n = e
                .get("recipients")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            format!(
                "{} for {n} recipient{}",
                s(e, "scheme"),
                if n == 1 { "" } else { "s" }
            )
        }
        None => "plaintext".to_string(),
    };
    let word = match (changed, decrypt) {
        (false, _) => "unchanged",
        (true, false) => "encrypted",
        (true, true) => "decrypted",
    };
    artifact_row(word, v, now, &how)
}
