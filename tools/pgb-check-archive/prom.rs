//! node_exporter textfile metrics of a check, through pgb_common::prom
//! (atomic, mode 0644). Names and meanings: pgb-metrics(7). The file is
//! rewritten whole: one file per archive.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use pgb_common::error::Result;
use pgb_common::prom::{labels, Metrics};

use crate::check::{age_seconds, Analysis, Copies};

/// Writes the metrics of the checks of every archive (`None`: the check
/// could not run; then only the success and the time of the check), and
/// the copies counted across them.
pub fn write(
    path: &Path,
    archives: &[(&str, Option<&Analysis>)],
    copies: Option<&Copies>,
    now: SystemTime,
) -> Result<()> {
    let mut m = Metrics::new();
    for (archive, an) in archives {
        one(&mut m, archive, *an, now);
    }
    if let Some(c) = copies {
        for (archive, n) in &c.missing {
            m.gauge(
                "pgb_archive_copies_missing_segments",
                "Segments another archive holds that this one lacks or holds damaged (--copies, --require).",
                &labels(&[("archive", archive)]),
                *n as f64,
            );
        }
        m.gauge(
            "pgb_archive_copies_short_segments",
            "Segments held by fewer archives than --copies, or not meeting --require 3-2-1.",
            "",
            c.short as f64,
        );
    }
    m.write(path)
}

fn one(m: &mut Metrics, archive: &str, an: Option<&Analysis>, now: SystemTime) {
    let l = labels(&[("archive", archive)]);
    let mut g = |name: &str, help: &str, v: f64| m.gauge(name, help, &l, v);
    let ts = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    g(
        "pgb_archive_check_success",
        "1 when the last check found the archive clean, 0 otherwise.",
        an.is_some_and(|a| a.problems.is_empty()) as u8 as f64,
    );
    g(
        "pgb_archive_last_check_timestamp_seconds",
        "When the last check ran (Unix time).",
        ts.floor(),
    );
    if let Some(a) = an {
        if let Some(age) = age_seconds(a, now) {
            g(
                "pgb_archive_age_seconds",
                "Age of the newest WAL segment in the archive.",
                age.round(),
            );
        }
        for (name, help, v) in [
            (
                "pgb_archive_segments",
                "WAL segments in the archive.",
                a.segments as f64,
            ),
            (
                "pgb_archive_gaps",
                "Ranges of missing segments.",
                a.gaps as f64,
            ),
            (
                "pgb_archive_missing_segments",
                "Segments missing in all gaps.",
                a.missing_segments as f64,
            ),
            (
                "pgb_archive_bad_segments",
                "Segments with a problem (size, header, zero-filled, foreign).",
                a.bad_segments as f64,
            ),
            (
                "pgb_archive_foreign_segments",
                "Segments of another cluster (system identifier).",
                a.foreign_segments as f64,
            ),
            (
                "pgb_archive_unchecked_segments",
                "Encrypted segments whose header was not checked (no identity given).",
                a.unchecked_segments as f64,
            ),
            (
                "pgb_archive_checksum_verified_segments",
                "Segments read in full and equal to the checksum recorded when they were archived.",
                a.checksum_verified_segments as f64,
            ),
            (
                "pgb_archive_header_only_segments",
                "Segments with no checksum recorded (archived by another tool): checked by header and size only.",
                a.header_only_segments as f64,
            ),
            (
                "pgb_archive_problems",
                "Problems found by the check.",
                a.problems.len() as f64,
            ),
        ] {
            g(name, help, v);
        }
        if let Some(s) = &a.server {
            g(
                "pgb_archive_server_archived_files",
                "pg_stat_archiver.archived_count of the server (-d).",
                s.archived_count as f64,
            );
            g(
                "pgb_archive_server_failed_attempts",
                "pg_stat_archiver.failed_count of the server (-d).",
                s.failed_count as f64,
            );
            if let Some(t) = s.last_archived_time {
                g(
                    "pgb_archive_server_last_archived_timestamp_seconds",
                    "pg_stat_archiver.last_archived_time of the server (-d).",
                    t.floor(),
                );
            }
            if let Some(t) = s.last_failed_time {
                g(
                    "pgb_archive_server_last_failed_timestamp_seconds",
                    "pg_stat_archiver.last_failed_time of the server (-d).",
                    t.floor(),
                );
            }
            if let Some(b) = s.segments_behind {
                g(
                    "pgb_archive_server_segments_behind",
                    "Finished segments of the server's timeline not in the archive yet (-d).",
                    b as f64,
                );
            }
        }
    }
}
