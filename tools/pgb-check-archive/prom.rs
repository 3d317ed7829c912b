//! node_exporter textfile metrics, written atomically.

use std::fmt::Write as _;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use pgb_common::error::{IoContext, Result};
use pgb_common::AtomicFile;

use crate::check::{age_seconds, Analysis};

fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes the metrics of a check (`None`: the check could not run).
pub fn write(path: &Path, archive: &str, an: Option<&Analysis>, now: SystemTime) -> Result<()> {
    let l = format!("{{archive=\"{}\"}}", label(archive));
    let mut t = String::new();
    let mut metric = |name: &str, help: &str, v: f64| {
        let _ = writeln!(
            t,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{l} {v}"
        );
    };
    let ts = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    metric(
        "pgb_archive_check_success",
        "1 when the last check found the archive clean, 0 otherwise.",
        an.is_some_and(|a| a.problems.is_empty()) as u8 as f64,
    );
    metric(
        "pgb_archive_last_check_timestamp_seconds",
        "When the last check ran (Unix time).",
        ts.floor(),
    );
    if let Some(a) = an {
        if let Some(age) = age_seconds(a, now) {
            metric(
                "pgb_archive_age_seconds",
                "Age of the newest WAL segment in the archive.",
                age.round(),
            );
        }
        metric(
            "pgb_archive_segments",
            "WAL segments in the archive.",
            a.segments as f64,
        );
        metric(
            "pgb_archive_gaps",
            "Ranges of missing segments.",
            a.gaps as f64,
        );
        metric(
            "pgb_archive_missing_segments",
            "Segments missing in all gaps.",
            a.missing_segments as f64,
        );
        metric(
            "pgb_archive_bad_segments",
            "Segments with a problem (size, header, zero-filled, foreign).",
            a.bad_segments as f64,
        );
        metric(
            "pgb_archive_foreign_segments",
            "Segments of another cluster (system identifier).",
            a.foreign_segments as f64,
        );
        metric(
            "pgb_archive_problems",
            "Problems found by the check.",
            a.problems.len() as f64,
        );
    }
    let mut f = AtomicFile::create(path)?;
    f.write_all(t.as_bytes()).ctx("write", f.temp_path())?;
    // node_exporter runs as its own user; metrics hold no secret.
    fs::set_permissions(f.temp_path(), fs::Permissions::from_mode(0o644))
        .ctx("chmod", f.temp_path())?;
    f.commit_replace()
}
