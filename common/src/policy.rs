//! The 3-2-1 rule, judged from an artifact's recorded copies (pgb-ship
//! --require 3-2-1, pgb-list).

use std::collections::BTreeSet;

use serde_json::{json, Value};

/// Judges `copies` (plus the original, with its media and site) against
/// 3-2-1: at least 3 copies counting the original, at least 2 media, at
/// least 1 offsite. Returns the `policy` value to record; `ok` false names
/// each failed rule in `failed`.
pub fn three_two_one(copies: &[Value], media: &str, site: &str, when: &str) -> Value {
    let mut urls = BTreeSet::new();
    let mut medias = BTreeSet::from([media.to_string()]);
    let mut offsite = usize::from(site == "offsite");
    for c in copies {
        let Some(url) = c.get("url").and_then(Value::as_str) else {
            continue;
        };
        if !urls.insert(url.to_string()) {
            continue;
        }
        if let Some(m) = c.get("media").and_then(Value::as_str) {
            medias.insert(m.to_string());
        }
        if c.get("site").and_then(Value::as_str) == Some("offsite") {
            offsite += 1;
        }
    }
    let count = urls.len() + 1;
    let mut failed = Vec::new();
    if count < 3 {
        failed.push(format!("3 copies: only {count} counting the original"));
    }
    if medias.len() < 2 {
        failed.push(format!(
            "2 media: all copies on {}",
            medias.iter().next().map(String::as_str).unwrap_or("")
        ));
    }
    if offsite < 1 {
        failed.push("1 offsite: no copy has site=offsite".to_string());
    }
    json!({
        "rule": "3-2-1",
        "ok": failed.is_empty(),
        "copies": count,
        "media": medias,
        "offsite": offsite,
        "failed": failed,
        "when": when,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(url: &str, media: &str, site: &str) -> Value {
        json!({"url": url, "media": media, "site": site})
    }

    #[test]
    fn each_rule_is_named() {
        let ok = three_two_one(
            &[
                copy("/nas/a", "nas", "onsite"),
                copy("s3://b/a", "s3", "offsite"),
            ],
            "local",
            "onsite",
            "t",
        );
        assert_eq!(ok["ok"], true, "{ok}");
        let two = three_two_one(&[copy("/nas/a", "nas", "onsite")], "local", "onsite", "t");
        assert_eq!(two["ok"], false);
        let f: Vec<String> = serde_json::from_value(two["failed"].clone()).unwrap();
        assert!(f[0].starts_with("3 copies: only 2"), "{f:?}");
        assert!(f[1].starts_with("1 offsite"), "{f:?}");
        let same = three_two_one(
            &[
                copy("/d1/a", "local", "onsite"),
                copy("/d2/a", "local", "offsite"),
            ],
            "local",
            "onsite",
            "t",
        );
        assert_eq!(same["failed"], json!(["2 media: all copies on local"]));
        // The same url twice counts once.
        let dup = three_two_one(
            &[
                copy("/nas/a", "nas", "offsite"),
                copy("/nas/a", "nas", "offsite"),
            ],
            "local",
            "onsite",
            "t",
        );
        assert_eq!(dup["copies"], 2);
    }
}
