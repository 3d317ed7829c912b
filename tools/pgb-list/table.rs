//! The table printed when stdout is a terminal: one block per cluster,
//! kind and database, sizes in human units, times as ages, then each
//! cluster's recovery window.

use chrono::{DateTime, Duration, DurationRound, Utc};
use pgb_common::human::{age, bytes, columns, millis, span};
use serde_json::Value;

use std::collections::BTreeMap;

use crate::listing::ChainInfo;
use crate::window::{Basis, Window};

/// A moment to the second in local time (RFC 3339), rounded into the
/// window (`up` for its start).
fn second(t: DateTime<Utc>, up: bool) -> String {
    let s = t.duration_trunc(Duration::seconds(1)).unwrap_or(t);
    let s = if up && s < t {
        s + Duration::seconds(1)
    } else {
        s
    };
    s.with_timezone(&chrono::Local)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

fn checks(l: &Value, now: DateTime<Utc>) -> String {
    let Some(v) = l["verified"].as_object().filter(|v| !v.is_empty()) else {
        return "never verified".into();
    };
    v.iter()
        .map(|(method, c)| {
            let ok = if c["ok"] == true { "ok" } else { "FAILED" };
            let when = c["when"].as_str().map(|w| age(w, now));
            match when {
                Some(w) => format!("{method} {ok} {w}"),
                None => format!("{method} {ok}"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn copies(l: &Value) -> String {
    let media: Vec<String> = l["copies_by_media"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let offsite = l["policy"]["offsite"].as_u64().unwrap_or(0);
    format!("{} ({}; {offsite} offsite)", l["copies"], media.join(","))
}

fn ms(v: &Value) -> String {
    v.as_u64().map(millis).unwrap_or_else(|| "-".into())
}

/// A backup's id, with where it stands in its chain when it is an
/// incremental ("ID (incr 3 of chain from FULL)").
fn with_chain(id: &str, chains: &BTreeMap<String, ChainInfo>) -> String {
    match chains.get(id) {
        Some(c) if c.depth > 0 => format!("{id} ({})", c.describe()),
        _ => id.to_string(),
    }
}

pub fn render(
    listings: &[Value],
    windows: &[Window],
    now: DateTime<Utc>,
    chains: &BTreeMap<String, ChainInfo>,
) -> String {
    let mut out = String::new();
    if listings.is_empty() {
        out.push_str("No artifact matches.\n");
    }
    let mut i = 0;
    while i < listings.len() {
        let key = |l: &Value| {
            (
                l["cluster"].clone(),
                l["kind"].clone(),
                l["database"].clone(),
            )
        };
        let k = key(&listings[i]);
        let group: Vec<&Value> = listings[i..].iter().take_while(|l| key(l) == k).collect();
        i += group.len();
        let db = k.2.as_str().map(|d| format!(" {d}")).unwrap_or_default();
        out.push_str(&format!(
            "{} {}{db} ({})\n",
            k.0.as_str().unwrap_or("?"),
            k.1.as_str().unwrap_or("?"),
            group.len()
        ));
        // Physical backups: where each stands in its chain.
        let chained = group
            .iter()
            .any(|l| l["depth"].as_u64().is_some_and(|d| d > 0));
        let mut head = vec![
            "ID", "AGE", "SIZE", "ENC", "COPIES", "3-2-1", "STATUS", "RESTORE", "CHECKS",
        ];
        if chained {
            head.insert(1, "CHAIN");
        }
        let mut rows = vec![head.into_iter().map(String::from).collect::<Vec<_>>()];
        let mut broken = Vec::new();
        for l in &group {
            let id = l["id"].as_str().unwrap_or("?");
            let chain = chains.get(id);
            if let Some(why) = chain.and_then(|c| c.broken.as_ref()) {
                broken.push(format!("  not restorable: {id}: {why}\n"));
            }
            let status = match chain {
                Some(c) if c.broken.is_some() => "UNRESTORABLE".to_string(),
                _ => l["status"].as_str().unwrap_or("?").to_string(),
            };
            let mut row = vec![
                l["id"].as_str().unwrap_or("?").to_string(),
                span(Duration::seconds(l["age_seconds"].as_i64().unwrap_or(0))),
                bytes(l["size"].as_u64().unwrap_or(0)),
                if l["encrypted"] == true { "yes" } else { "no" }.into(),
                copies(l),
                if l["policy"]["ok"] == true {
                    "ok"
                } else {
                    "no"
                }
                .into(),
                status,
                ms(&l["last_restore"]["duration_ms"]),
                checks(l, now),
            ];
            if chained {
                let where_ = chain.map_or_else(|| "-".to_string(), ChainInfo::describe);
                row.insert(1, where_);
            }
            rows.push(row);
        }
        out.push_str(&columns(&rows, "  "));
        for b in broken {
            out.push_str(&b);
        }
        out.push('\n');
    }
    for w in windows {
        let archives: Vec<String> = w.archives.iter().map(|p| p.display().to_string()).collect();
        out.push_str(&format!(
            "Recovery window of {} (WAL archive {}):\n",
            w.cluster,
            archives.join(", ")
        ));
        if w.ranges.is_empty() {
            out.push_str("  none: no verified physical backup with its WAL archived\n");
        }
        for (n, r) in w.ranges.iter().enumerate() {
            out.push_str(&format!(
                "  {} .. {}  ({}, until {} ago; from {})\n",
                second(r.from, true),
                second(r.to, false),
                span(r.length()),
                span(now - r.to),
                r.backups
                    .iter()
                    .map(|b| with_chain(b, chains))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            if let Some(m) = &r.first_missing {
                let next = w.ranges.get(n + 1).map_or_else(
                    || "no backup after it".to_string(),
                    |x| format!("resumes {}", second(x.from, true)),
                );
                out.push_str(&format!("  hole: {m} is missing; {next}\n"));
            }
        }
        if w.ranges.iter().any(|r| r.basis == Basis::Archived) {
            out.push_str(
                "  (encrypted WAL: the latest moment is when the last segment was \
                 archived; recovery reaches the last commit before it)\n",
            );
        }
        for (id, why) in &w.not_counted {
            out.push_str(&format!("  not counted: {id}: {why}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_ends_round_inward() {
        let t: DateTime<Utc> = "2026-12-01T16:00:35.25Z".parse().unwrap();
        let (up, down) = (second(t, true), second(t, false));
        let secs = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().timestamp();
        assert_eq!(secs(&up), t.timestamp() + 1);
        assert_eq!(secs(&down), t.timestamp());
    }
}
