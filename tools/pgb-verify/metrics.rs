//! `--prom FILE`: node_exporter textfile metrics per (cluster, kind,
//! database), merged into what the file already holds, so runs for other
//! clusters and databases keep their series, and a failed run keeps the
//! time of the last success. Names are documented in pgb-metrics(7).

use std::collections::BTreeMap;
use std::path::Path;

use pgb_common::error::Result;
use pgb_common::prom::{labels, unix_now, Metrics};
use pgb_common::record::Artifact;
use serde_json::Value;

#[derive(Default)]
struct Agg {
    all_ok: bool,
    /// (created, seconds, ok) of the newest artifact that was restored.
    restore: Option<(i64, f64, bool)>,
    restores_ok: bool,
}

/// What this run verified, per (cluster, kind, database).
#[derive(Default)]
pub struct Collector {
    keys: BTreeMap<(String, String, String), Agg>,
}

impl Collector {
    /// Notes the `verified` entries this run appended to `a`.
    pub fn note(&mut self, a: &Artifact, new_entries: &[Value]) {
        if new_entries.is_empty() {
            return;
        }
        let key = (
            a.cluster.clone(),
            a.kind.as_str().to_string(),
            a.database.clone().unwrap_or_default(),
        );
        let agg = self.keys.entry(key).or_insert(Agg {
            all_ok: true,
            restore: None,
            restores_ok: true,
        });
        for e in new_entries {
            let ok = e["ok"] == true;
            agg.all_ok &= ok;
            if e["method"] == "restore" {
                agg.restores_ok &= ok;
                let ms = e["restore_ms"]
                    .as_u64()
                    .or_else(|| e["duration_ms"].as_u64())
                    .unwrap_or(0);
                let created = a.created.timestamp();
                if agg.restore.is_none_or(|(c, _, _)| created >= c) {
                    agg.restore = Some((created, ms as f64 / 1000.0, ok));
                }
            }
        }
    }

    /// Writes the file: this run's series replace the same series in it,
    /// the rest are kept.
    pub fn write(&self, path: &Path) -> Result<()> {
        let now = unix_now();
        let mut m = Metrics::new();
        for ((cluster, kind, database), agg) in &self.keys {
            let l = labels(&[("cluster", cluster), ("kind", kind), ("database", database)]);
            m.gauge(
                "pgb_verify_last_timestamp_seconds",
                "When pgb-verify last checked artifacts of this cluster, kind and database.",
                &l,
                now,
            );
            m.gauge(
                "pgb_verify_success",
                "1 when every check of the last pgb-verify run passed, 0 when one failed.",
                &l,
                if agg.all_ok { 1.0 } else { 0.0 },
            );
            if agg.all_ok {
                m.gauge(
                    "pgb_verify_last_success_timestamp_seconds",
                    "When a pgb-verify run last passed every check.",
                    &l,
                    now,
                );
            }
            if let Some((_, secs, _)) = agg.restore {
                m.gauge(
                    "pgb_restore_duration_seconds",
                    "How long the last test restore by pgb-verify --restore took.",
                    &l,
                    secs,
                );
                if agg.restores_ok {
                    m.gauge(
                        "pgb_restore_last_success_timestamp_seconds",
                        "When a test restore by pgb-verify --restore last passed.",
                        &l,
                        now,
                    );
                }
            }
        }
        m.merge_existing(path)?;
        m.write(path)
    }
}
