//! What a person reads on a terminal: sizes in binary units, times as
//! ages, columns, and the one-line summaries of records that every tool
//! prints instead of JSON lines when stdout is a terminal (see
//! [`crate::jsonl::RecordWriter::stdout_for`]).
//!
//! Records are rendered from their JSON (`serde_json::Value`), as they
//! cross the pipe, so the summary shows what a consumer would read.

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

/// `512 B`, `1.5 KiB`, `3.0 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `45s`, `12m`, `3h 5m`, `2d 4h`.
pub fn span(d: Duration) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86399 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

/// A duration in milliseconds: `0.4s` below ten seconds, else as [`span`].
pub fn millis(ms: u64) -> String {
    if ms < 10_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        span(Duration::milliseconds(ms as i64))
    }
}

/// `3h 5m ago` for an RFC 3339 time; the text itself when it is not one.
pub fn age(when: &str, now: DateTime<Utc>) -> String {
    DateTime::parse_from_rfc3339(when)
        .map(|t| span(now - t.with_timezone(&Utc)) + " ago")
        .unwrap_or_else(|_| when.to_string())
}

/// Lays `rows` out in columns, left-aligned, two spaces apart, each line
/// starting with `indent`.
pub fn columns(rows: &[Vec<String>], indent: &str) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = indent.to_string();
        for (i, c) in r.iter().enumerate() {
            line.push_str(c);
            if i + 1 < r.len() {
                line.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A string field, or `?`.
pub fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("?")
}

/// An artifact record in a few words: its id (with its kind and database
/// first when the id does not already say them), its size as stored and
/// its age: `logical-appdb-20261201T101500Z  1.2 MiB  3h 5m ago` (no
/// size when the record lists no `files`).
pub fn artifact(v: &Value, now: DateTime<Utc>) -> String {
    let id = s(v, "id");
    let kind = s(v, "kind");
    let db = v.get("database").and_then(Value::as_str);
    let mut named = match db {
        Some(d) if !id.starts_with(&format!("{kind}-{d}-")) => format!("{kind} {d} {id}"),
        None if !id.starts_with(&format!("{kind}-")) => format!("{kind} {id}"),
        _ => id.to_string(),
    };
    if let Some(files) = v.get("files").and_then(Value::as_array) {
        let size: u64 = files
            .iter()
            .filter_map(|f| f.get("size").and_then(Value::as_u64))
            .sum();
        named.push_str("  ");
        named.push_str(&bytes(size));
    }
    if let Some(c) = v.get("created").and_then(Value::as_str) {
        named.push_str("  ");
        named.push_str(&age(c, now));
    }
    named
}

/// A summary line: an outcome word in a column of its own, then the rest.
pub fn row(word: &str, rest: &str) -> String {
    format!("{word:<10} {rest}")
}

/// An artifact's summary line: [`row`] of `word`, [`artifact`] and, when
/// not empty, `detail`.
pub fn artifact_row(word: &str, v: &Value, now: DateTime<Utc>, detail: &str) -> String {
    let mut rest = artifact(v, now);
    if !detail.is_empty() {
        rest.push_str("  ");
        rest.push_str(detail);
    }
    row(word, &rest)
}

/// An error record as one line: `FAILED    ID  tool: message`, the id
/// (or kind and database) taken from the artifact it carries or its
/// context, when there is one.
pub fn error(v: &Value) -> String {
    let what = match v.get("artifact").filter(|a| a.is_object()) {
        Some(a) => format!("{}  ", s(a, "id")),
        None => match (
            v.get("kind").and_then(Value::as_str),
            v.get("database").and_then(Value::as_str),
        ) {
            (Some(k), Some(d)) => format!("{k} {d}  "),
            (Some(k), None) => format!("{k}  "),
            _ => String::new(),
        },
    };
    row(
        "FAILED",
        &format!("{what}{}: {}", s(v, "tool"), s(v, "message")),
    )
}

/// Any other record: its type, then its short scalar fields as
/// `key=value`, cut to one line.
pub fn other(v: &Value) -> String {
    let mut fields = Vec::new();
    if let Some(m) = v.as_object() {
        for (k, x) in m {
            if k == "schema" || k == "type" {
                continue;
            }
            match x {
                Value::String(t) => fields.push(format!("{k}={t}")),
                Value::Number(_) | Value::Bool(_) => fields.push(format!("{k}={x}")),
                _ => {}
            }
        }
    }
    cut(&row(s(v, "type"), &fields.join(" ")), 200)
}

/// `text` with its control characters (escape sequences a path or a name
/// may carry) shown escaped, never interpreted by the terminal; newlines
/// are kept.
pub fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\n' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A message made short for a summary line: paths below `repo` given
/// relative to it, and digests (runs of 32 or more hex digits) cut to
/// their first 12, as git abbreviates commits.
pub fn brief(text: &str, repo: Option<&str>) -> String {
    let text = match repo.filter(|r| !r.is_empty()) {
        Some(r) => text.replace(&format!("{}/", r.trim_end_matches('/')), ""),
        None => text.to_string(),
    };
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= 32 {
            out.push_str(&run[..12]);
            out.push('…');
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_hexdigit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// `text` cut to `max` characters, with `…` when cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut t: String = text.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// The summary of a record when the tool renders it no other way: an
/// error, an artifact the tool passed on untouched (`forwarded`), or any
/// other record's short fields.
pub fn default_line(v: &Value, now: DateTime<Utc>) -> String {
    match v.get("type").and_then(Value::as_str) {
        Some("error") => error(v),
        Some("artifact") => artifact_row("forwarded", v, now, ""),
        _ => other(v),
    }
}

/// The copies of an artifact record as `media@site`, with `(already
/// there)` when the bytes were found in place; only those whose `to` is in
/// `roots` when that is not empty.
pub fn copies(v: &Value, roots: &[String]) -> Vec<String> {
    v.get("copies")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter(|c| roots.is_empty() || roots.iter().any(|r| r == s(c, "to")))
                .map(|c| {
                    let mut t = format!("{}@{}", s(c, "media"), s(c, "site"));
                    if c.get("existing") == Some(&Value::Bool(true)) {
                        t.push_str(" (already there)");
                    }
                    t
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        "2026-12-01T13:20:00Z".parse().unwrap()
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 << 20), "5.0 MiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn spans_and_ages_read_well() {
        assert_eq!(span(Duration::seconds(45)), "45s");
        assert_eq!(span(Duration::seconds(125)), "2m");
        assert_eq!(span(Duration::seconds(3 * 3600 + 300)), "3h 5m");
        assert_eq!(span(Duration::seconds(2 * 86400 + 4 * 3600)), "2d 4h");
        assert_eq!(millis(420), "0.4s");
        assert_eq!(millis(125_000), "2m");
        assert_eq!(age("2026-12-01T11:15:00+01:00", now()), "3h 5m ago");
        assert_eq!(age("yesterday", now()), "yesterday");
    }

    #[test]
    fn columns_line_up() {
        let t = columns(
            &[
                vec!["ID".into(), "AGE".into()],
                vec!["long-id".into(), "2m".into()],
            ],
            "  ",
        );
        assert_eq!(t, "  ID       AGE\n  long-id  2m\n");
    }

    #[test]
    fn an_artifact_in_a_few_words() {
        let a = json!({
            "schema": "pgb.v1", "type": "artifact", "id": "logical-appdb-20261201T101500Z",
            "kind": "logical", "database": "appdb", "created": "2026-12-01T10:15:00Z",
            "files": [{"name": "a", "size": 1048576}, {"name": "b", "size": 524288}],
        });
        assert_eq!(
            artifact(&a, now()),
            "logical-appdb-20261201T101500Z  1.5 MiB  3h 5m ago"
        );
        // An id that does not say its kind and database gets them first.
        let mut b = a.clone();
        b["id"] = "x1".into();
        assert!(artifact(&b, now()).starts_with("logical appdb x1  1.5 MiB"));
    }

    #[test]
    fn errors_and_other_records_are_one_line() {
        let e = json!({"schema": "pgb.v1", "type": "error", "tool": "pgb-ship",
            "message": "copy: /mnt/x: No space left on device",
            "artifact": {"id": "globals-main-1"}});
        assert_eq!(
            error(&e),
            "FAILED     globals-main-1  pgb-ship: copy: /mnt/x: No space left on device"
        );
        let e = json!({"type": "error", "tool": "pgb-snapshot", "message": "m",
            "kind": "logical", "database": "appdb"});
        assert_eq!(
            default_line(&e, now()),
            "FAILED     logical appdb  pgb-snapshot: m"
        );
        let o = json!({"schema": "pgb.v1", "type": "note", "a": 1, "b": "x", "c": [1]});
        assert_eq!(default_line(&o, now()), "note       a=1 b=x");
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(clean("a\u{1b}[2Jb\nc"), "a\\u{1b}[2Jb\nc");
        let a = json!({"copies": [
            {"to": "/nas", "media": "nas", "site": "onsite", "existing": true},
            {"to": "s3://b/p", "media": "s3", "site": "offsite"}]});
        assert_eq!(
            copies(&a, &[]),
            ["nas@onsite (already there)", "s3@offsite"]
        );
        assert_eq!(copies(&a, &["s3://b/p".into()]), ["s3@offsite"]);
        let h = "a7fc8b8e".repeat(8);
        assert_eq!(
            brief(&format!("/r/main/x.dump: sha256 {h} differs"), Some("/r")),
            "main/x.dump: sha256 a7fc8b8ea7fc… differs"
        );
        assert_eq!(
            brief("public.t: 3 rows, 4 recorded", None),
            "public.t: 3 rows, 4 recorded"
        );
    }
}
