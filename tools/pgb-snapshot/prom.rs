//! `--prom FILE`: node_exporter textfile metrics of a run, merged into what
//! the file already holds. Names and meanings: pgb-metrics(7).

use std::path::Path;

use pgb_common::error::Result;
use pgb_common::prom::{labels, Metrics};
use pgb_common::record::{Artifact, Kind};

/// How one job of the run ended.
pub struct Outcome {
    /// Known for a success; for a failure only when --cluster was given or
    /// another job of the run learned it.
    pub cluster: Option<String>,
    pub kind: Kind,
    /// Empty for globals and physical backups.
    pub database: String,
    pub ok: bool,
    /// `Some` for a successful backup.
    pub artifact: Option<Summary>,
}

/// What a successful job's metrics say.
pub struct Summary {
    pub created: f64,
    pub size: u64,
    pub duration: f64,
}

impl Outcome {
    pub fn success(a: &Artifact) -> Outcome {
        let duration_ms = a
            .extra
            .get("duration_ms")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        Outcome {
            cluster: Some(a.cluster.clone()),
            kind: a.kind,
            database: a.database.clone().unwrap_or_default(),
            ok: true,
            artifact: Some(Summary {
                created: a.created.timestamp() as f64,
                size: a.files.iter().map(|f| f.size).sum(),
                duration: duration_ms as f64 / 1000.0,
            }),
        }
    }

    pub fn failure(cluster: Option<&str>, kind: Kind, database: &str) -> Outcome {
        Outcome {
            cluster: cluster.map(str::to_string),
            kind,
            database: database.to_string(),
            ok: false,
            artifact: None,
        }
    }

    /// Listing the databases for --all-databases: `database=""`, kind
    /// logical.
    pub fn listed(cluster: Option<&str>, ok: bool) -> Outcome {
        Outcome {
            ok,
            ..Outcome::failure(cluster, Kind::Logical, "")
        }
    }
}

/// The database name a `-d` value names, for the `database` label of a
/// failed dump (a success uses the name the server reported).
pub fn database_label(given: &str) -> String {
    if given.starts_with("postgresql://") || given.starts_with("postgres://") {
        let rest = given.split_once("://").map(|x| x.1).unwrap_or("");
        let path = rest.split_once('/').map(|x| x.1).unwrap_or("");
        return path.split('?').next().unwrap_or("").to_string();
    }
    if pgb_common::conninfo::is_conninfo(given) {
        return pgb_common::conninfo::get(given, "dbname").unwrap_or_default();
    }
    given.to_string()
}

/// Writes the run's metrics into `path`, keeping the other series there.
/// A failure whose cluster is unknown takes the cluster label learned from
/// the run's successes, else `""`.
pub fn write(path: &Path, outcomes: &[Outcome]) -> Result<()> {
    let learned = outcomes
        .iter()
        .find(|o| o.artifact.is_some())
        .and_then(|o| o.cluster.clone())
        .unwrap_or_default();
    let mut m = Metrics::new();
    for o in outcomes {
        let cluster = o.cluster.clone().unwrap_or_else(|| learned.clone());
        let l = labels(&[
            ("cluster", &cluster),
            ("kind", o.kind.as_str()),
            ("database", &o.database),
        ]);
        m.gauge(
            "pgb_backup_last_run_success",
            "1 when the last pgb-snapshot attempt for this cluster, kind and database succeeded, 0 when it failed.",
            &l,
            o.ok as u8 as f64,
        );
        if let Some(s) = &o.artifact {
            m.gauge(
                "pgb_backup_last_success_timestamp_seconds",
                "When the last successful backup was taken (its created time, Unix seconds).",
                &l,
                s.created,
            );
            m.gauge(
                "pgb_backup_last_size_bytes",
                "Bytes stored by the last successful backup (all its files, as written).",
                &l,
                s.size as f64,
            );
            m.gauge(
                "pgb_backup_last_duration_seconds",
                "How long the last successful backup took.",
                &l,
                s.duration,
            );
        }
    }
    m.merge_existing(path)?;
    m.write(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_labels() {
        assert_eq!(database_label("appdb"), "appdb");
        assert_eq!(database_label("host=x dbname='a b' user=u"), "a b");
        assert_eq!(
            database_label("postgresql://u:pw@h:5/app?sslmode=require"),
            "app"
        );
        assert_eq!(database_label("host=x"), "");
    }
}
