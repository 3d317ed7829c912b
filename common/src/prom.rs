//! node_exporter textfile metrics, shared by every tool's `--prom FILE`.
//!
//! Metric names are documented in one place, `pgb-metrics(7)`. A file is
//! written atomically (temp, fsync, rename), so node_exporter never reads
//! half a file. With [`Metrics::merge_existing`] the series already in the
//! file that this run did not touch are kept: a file shared by runs for
//! several clusters or databases keeps each one's last result.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::error::{IoContext, Result};
use std::io::Write as _;

use crate::fs::AtomicFile;

/// Escapes a label value per the exposition format.
pub fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `{a="x",b="y"}` from pairs, in the order given; empty pairs give "".
pub fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", label_value(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

#[derive(Default)]
struct Family {
    help: String,
    kind: &'static str,
    /// label string (with braces, or empty) -> value text
    samples: BTreeMap<String, String>,
}

/// A set of metric families, rendered sorted by name and labels.
#[derive(Default)]
pub struct Metrics {
    families: BTreeMap<String, Family>,
}

fn fmt_value(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Sets a gauge sample.
    pub fn gauge(&mut self, name: &str, help: &str, labels: &str, value: f64) {
        let f = self.families.entry(name.to_string()).or_default();
        f.help = help.to_string();
        f.kind = "gauge";
        f.samples.insert(labels.to_string(), fmt_value(value));
    }

    /// Keeps the samples of `path` (when it exists) that this set does not
    /// replace: same metric name and same labels are replaced, the rest stay.
    /// Unparsable lines are dropped (the file is ours; a broken one is
    /// rewritten whole).
    pub fn merge_existing(&mut self, path: &Path) -> Result<()> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).ctx("read", path),
        };
        let mut helps: BTreeMap<String, String> = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                if let Some((n, h)) = rest.split_once(' ') {
                    helps.insert(n.to_string(), h.to_string());
                }
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = match line.rsplit_once(' ') {
                Some(x) => x,
                None => continue,
            };
            let (name, lbl) = match series.find('{') {
                Some(i) => (&series[..i], &series[i..]),
                None => (series, ""),
            };
            let f = self.families.entry(name.to_string()).or_default();
            if f.kind.is_empty() {
                f.kind = "gauge";
                f.help = helps.get(name).cloned().unwrap_or_default();
            }
            f.samples
                .entry(lbl.to_string())
                .or_insert_with(|| value.to_string());
        }
        Ok(())
    }

    pub fn render(&self) -> String {
        let mut t = String::new();
        for (name, f) in &self.families {
            let _ = writeln!(t, "# HELP {name} {}", f.help);
            let _ = writeln!(t, "# TYPE {name} {}", f.kind);
            for (l, v) in &f.samples {
                let _ = writeln!(t, "{name}{l} {v}");
            }
        }
        t
    }

    /// Writes the file atomically, mode 0644 so node_exporter (another
    /// user) can read it: metrics hold no secrets.
    pub fn write(&self, path: &Path) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let mut f = AtomicFile::create(path)?;
        f.write_all(self.render().as_bytes())
            .ctx("write", f.temp_path())?;
        f.file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .ctx("chmod", f.temp_path())?;
        f.commit_replace()
    }
}

/// Seconds since the Unix epoch, for `*_timestamp_seconds` gauges.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as f64)
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_other_series_and_replaces_same() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.prom");
        let mut a = Metrics::new();
        a.gauge("pgb_x", "X.", &labels(&[("cluster", "a")]), 1.0);
        a.gauge("pgb_x", "X.", &labels(&[("cluster", "b")]), 2.0);
        a.write(&p).unwrap();
        let mut b = Metrics::new();
        b.gauge("pgb_x", "X.", &labels(&[("cluster", "b")]), 5.0);
        b.merge_existing(&p).unwrap();
        b.write(&p).unwrap();
        let t = std::fs::read_to_string(&p).unwrap();
        assert!(t.contains("pgb_x{cluster=\"a\"} 1\n"), "{t}");
        assert!(t.contains("pgb_x{cluster=\"b\"} 5\n"), "{t}");
        assert_eq!(t.matches("# TYPE pgb_x gauge").count(), 1, "{t}");
        assert_eq!(labels(&[("a", "q\"x")]), "{a=\"q\\\"x\"}");
    }
}
