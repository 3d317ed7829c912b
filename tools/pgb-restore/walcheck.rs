//! Before anything is written: does the WAL archive hold every segment
//! recovery will ask for, from the backup's start to the target? The scan
//! and the timeline following are pgb_common::walcov, shared with pgb-list.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use pgb_common::crypt::Identities;
use pgb_common::error::{Error, Result};
use pgb_common::physical::Target;
use pgb_common::record::Artifact;
use serde_json::Value;

pub use pgb_common::walcov::{Coverage, TimelineGoal};

/// Whether `a` can reach the target: it ended before it and the archive
/// holds WAL from its start to (at least) the target, without a gap; for a
/// time, a commit after it.
pub fn reaches(
    a: &Artifact,
    archives: &[PathBuf],
    tgt: &Target,
    goal: TimelineGoal,
    ids: Option<&Identities>,
) -> Result<()> {
    if archives.is_empty() && !matches!(tgt, Target::Immediate) {
        return Err(Error::Usage("--select reach needs --wal-archive".into()));
    }
    let cov = Coverage::scan(a, archives, goal)?;
    cov.check(a, tgt)?;
    reaches_time(&cov, a, tgt, archives, ids)
}

/// For a time target: the backup ended before the target, and the WAL the
/// archive holds after it has a commit (or abort) record stamped after the
/// target, read from the WAL itself: with recovery_target_inclusive (the
/// default) PostgreSQL stops before the first such record, and without one
/// recovery ends short of the target (a commit stamped exactly at the
/// target is replayed and does not stop it). When the
/// last segments cannot be read (encrypted, no identity) or hold no commit,
/// the newest segment's file time stands in. Other targets pass
/// ([`Coverage::check`] covers them).
pub fn reaches_time(
    cov: &Coverage,
    a: &Artifact,
    tgt: &Target,
    archives: &[PathBuf],
    ids: Option<&Identities>,
) -> Result<()> {
    let Target::Time(t) = tgt else {
        return Ok(());
    };
    let t = crate::run::parse_time(t)?;
    let took = a
        .extra
        .get("duration_ms")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let stopped = a.created + chrono::Duration::milliseconds(took);
    if stopped > t {
        return Err(Error::msg(format!(
            "backup {} ended at {stopped}, after the target time {t}: it cannot recover to \
             a moment before it ended; pick an older backup (--select reach); nothing was written",
            a.id
        )));
    }
    let short = |what: String| {
        Err(Error::msg(format!(
            "{what}, before the target time {t}, so recovery from backup {} would end \
             before reaching it; nothing was written",
            a.id
        )))
    };
    match cov.last_commit(archives, cov.last(), ids)? {
        Some(at) if at > t => Ok(()),
        Some(at) => short(format!(
            "the archive's last commit is at {} (in or before {})",
            at.with_timezone(t.offset()),
            cov.name(cov.last())
        )),
        None => match cov.last_mtime() {
            Some(m) if DateTime::<Utc>::from(m) >= t => Ok(()),
            _ => short(format!(
                "the archive's WAL ends at {} (archived before the target time)",
                cov.name(cov.last())
            )),
        },
    }
}
