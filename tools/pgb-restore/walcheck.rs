//! Before anything is written: does the WAL archive hold every segment
//! recovery will ask for, from the backup's start to the target? The scan
//! and the timeline following are pgb_common::walcov, shared with pgb-list.

use std::path::PathBuf;

use pgb_common::error::{Error, Result};
use pgb_common::physical::Target;
use pgb_common::record::Artifact;
use serde_json::Value;

pub use pgb_common::walcov::{Coverage, TimelineGoal};

/// Whether `a` can reach the target: it ended before it and the archive
/// holds WAL from its start to (at least) the target, without a gap; for a
/// time, a commit after it.
pub fn reaches(a: &Artifact, archives: &[PathBuf], tgt: &Target, goal: TimelineGoal) -> Result<()> {
    if archives.is_empty() && !matches!(tgt, Target::Immediate) {
        return Err(Error::Usage("--select reach needs --wal-archive".into()));
    }
    let cov = Coverage::scan(a, archives, goal)?;
    match tgt {
        Target::Time(t) => {
            let t = crate::run::parse_time(t)?;
            let took = a
                .extra
                .get("duration_ms")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let stopped = a.created + chrono::Duration::milliseconds(took);
            if stopped > t {
                return Err(Error::msg(format!("ended at {stopped}, after the target")));
            }
            cov.check(a, tgt)?;
            // PostgreSQL stops before the first commit after the target and
            // refuses to end recovery without one: the archive must hold a
            // commit after the target.
            if let Some(last) = cov.last_commit(archives, cov.last(), None)? {
                return if last > t {
                    Ok(())
                } else {
                    Err(Error::msg(format!(
                        "the archive's last commit from it (in or before {}) is at {}, not after the target: \
                         recovery would end before reaching it",
                        cov.name(cov.last()),
                        last.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
                    )))
                };
            }
            // Segments not read (encrypted): the newest must have been
            // archived after the target time, or the WAL ends before it.
            match cov.last_mtime() {
                Some(m) if chrono::DateTime::<chrono::Utc>::from(m) >= t => Ok(()),
                _ => Err(Error::msg(format!(
                    "the archive's WAL from it ends at {} (archived before the target)",
                    cov.name(cov.last())
                ))),
            }
        }
        _ => cov.check(a, tgt).map(|_| ()),
    }
}
