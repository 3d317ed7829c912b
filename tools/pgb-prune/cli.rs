//! Command-line interface of pgb-prune. Uses only clap, std and pgb_common,
//! so the man-page generator can include it.

use std::path::PathBuf;

use clap::Parser;

/// Retention with restic's rules, and WAL expiry that never breaks a kept
/// backup.
///
/// Reads pgb.v1 artifact records on stdin (or the sidecars of a repository
/// with --repo), decides for each artifact whether to keep or delete it, and
/// prints every artifact record with a `prune` object: `action` (`keep` or
/// `delete`) and `reasons` (which rules kept it, e.g. "daily 2026-11-20",
/// "newest verified", "in the future (...)"). Nothing is deleted without
/// --apply. The whole input is read and checked before anything is
/// deleted: a malformed line, a duplicate artifact, or a path that leaves
/// the repository (absolute, `..`, or through a symlink) stops the run with
/// exit status 2 and nothing deleted.
///
/// The rules are restic's `forget` rules, so they can be checked against
/// restic: artifacts are grouped by (cluster, kind, database); in each group,
/// taken newest first (ties broken by id), each --keep-COUNT rule keeps the
/// newest artifact of each of the N most recent periods (hours, days, ISO
/// 8601 weeks, months, years; --keep-last: every artifact is a period of its
/// own) that have artifacts. Periods are read in each timestamp's own UTC
/// offset. When a rule's count is not used up by the oldest artifact, the
/// oldest artifact is kept too ("oldest daily ..."), as restic does since
/// 0.16. --keep-within keeps everything made strictly after the newest
/// artifact's time minus the duration (years and months subtracted on the
/// calendar, as restic's Go AddDate does: March 31 minus one month is March
/// 3). The rules are unioned. An empty policy deletes nothing.
///
/// Only complete artifacts count: the record lists at least one file, and
/// every file is a regular file below the repository with its recorded
/// size. With --require-verified only verified artifacts count: at least one
/// `verified` entry, and for every method the latest entry passed. An
/// artifact that does not count is kept when it is newer than the newest
/// counted artifact of its group (a backup not verified yet) or when the
/// group has no counted artifact, and deleted otherwise. Whatever the
/// policy, the newest verified artifact of each group is kept, and so is
/// every ancestor of a kept incremental backup (pgb-snapshot
/// --incremental), with the reason "parent of ID": an incremental restores
/// only with its whole chain, and --wal-archive then keeps WAL from the
/// oldest kept member's start. A record
/// read on stdin must match the sidecar beside its artifact (same id and
/// path); one with no sidecar there is left alone. An artifact dated in the
/// future is kept, flagged and not counted; one dated, or
/// verified, more than --clock-tolerance in the future means the clock went
/// backwards: nothing is deleted and the exit status is 2. WAL segment
/// records are never deleted by the policy (see --wal-archive). Error
/// records in the input are forwarded and make --apply delete nothing.
///
/// --apply takes the repository lock (the one pgb-snapshot takes), reads
/// the input again under it (with --repo; for stdin, the disk state),
/// plans again, and deletes only what both plans delete: the artifact's file
/// (a physical backup's directory, removed entry by entry by directory
/// descriptor, never through a symlink or across a mount point), then its
/// sidecar, then fsyncs the directory. A deletion that fails turns the
/// record into an error record and the exit status into 2.
///
/// A repository may be remote: --repo ssh://[user@]host[:port]/path or
/// s3://bucket/prefix (the root pgb-ship copied to), read from its sidecars
/// (all read in one go: one SSH session, one S3 listing), and so may
/// --wal-archive. The plan is the same; an artifact counts when each of its
/// files is at its place with its recorded size (one listing per
/// directory). Paths are checked before anything is read or removed: a
/// sidecar whose path is absolute or has a `.` or `..` part stops the run
/// with exit status 2 and nothing deleted. --apply deletes through the
/// storage layer in the same order as in a directory: the artifact's files,
/// then what is left below a physical backup's directory (its prefix in
/// S3), then its sidecar last, so a prune stopped half-way never leaves
/// files without the record saying they are to go, and a second run
/// finishes the job. Each artifact goes in one batch (one session on an
/// SSH host, the paths on its input, each component checked first: a path
/// through a symlink is refused, as in a directory, and a symlink is
/// removed as the link it is). WAL expiry of a remote archive lists it,
/// reads its history files in one go and removes all the planned files in
/// one batch, oldest first per timeline.
///
/// The lock of a remote repository is the file or object `.pgb.lock` at
/// its root, created only when absent (in S3 a PUT with If-None-Match: *;
/// on an SSH host the shell's noclobber, an O_EXCL open) and holding
/// `host=H pid=P time=T` of the run that took it; it is removed when the
/// run ends, also on an error. While it exists another pgb-prune exits 3
/// (or waits with --lock-wait), naming the lock, its holder, and how to
/// remove a stale one left by a run that was killed (`aws s3 rm
/// s3://bucket/prefix/.pgb.lock`, `ssh host rm /path/.pgb.lock`) once that
/// run is surely gone. Other tools do not take it: run pgb-ship to a
/// remote repository and pgb-prune on it at different times.
#[derive(Parser, Debug)]
#[command(name = "pgb-prune", version, disable_help_flag = true)]
pub struct Args {
    /// Prune the artifacts of this repository (their .pgb.json sidecars)
    /// instead of reading records on stdin; every record must sit where its
    /// sidecar is; the records' repo is DIR (a repository moved or copied elsewhere is read where it lies).
    /// A directory, ssh://[user@]host[:port]/path or s3://bucket/prefix
    #[arg(long = "repo", value_name = "DIR|URL")]
    pub repo: Option<PathBuf>,

    /// Keep the N newest artifacts (N or `unlimited`)
    #[arg(long = "keep-last", value_name = "N", value_parser = parse_count)]
    pub keep_last: Option<u64>,

    /// Keep the newest artifact of each of the N most recent hours that have
    /// artifacts
    #[arg(long = "keep-hourly", value_name = "N", value_parser = parse_count)]
    pub keep_hourly: Option<u64>,

    /// Keep the newest artifact of each of the N most recent days that have
    /// artifacts
    #[arg(long = "keep-daily", value_name = "N", value_parser = parse_count)]
    pub keep_daily: Option<u64>,

    /// Keep the newest artifact of each of the N most recent ISO weeks
    /// (Monday to Sunday) that have artifacts
    #[arg(long = "keep-weekly", value_name = "N", value_parser = parse_count)]
    pub keep_weekly: Option<u64>,

    /// Keep the newest artifact of each of the N most recent months that
    /// have artifacts
    #[arg(long = "keep-monthly", value_name = "N", value_parser = parse_count)]
    pub keep_monthly: Option<u64>,

    /// Keep the newest artifact of each of the N most recent years that have
    /// artifacts
    #[arg(long = "keep-yearly", value_name = "N", value_parser = parse_count)]
    pub keep_yearly: Option<u64>,

    /// Keep every artifact made within DURATION of the group's newest
    /// artifact. restic's syntax: NUMBER UNIT pairs, units y (years), m
    /// (MONTHS), d (days), h (hours): 1y6m, 30d, 2d12h
    #[arg(long = "keep-within", value_name = "DURATION")]
    pub keep_within: Option<String>,

    /// Count only artifacts that passed verification (pgb-verify)
    #[arg(long = "require-verified")]
    pub require_verified: bool,

    /// Delete what the plan says, under the repository lock (without it,
    /// only the plan is printed)
    #[arg(long = "apply")]
    pub apply: bool,

    /// With --apply, also delete the recorded copies (`copies`, written by
    /// pgb-ship) of each deleted artifact, on local, SSH and S3
    /// destinations
    #[arg(long = "copies")]
    pub copies: bool,

    /// Wait up to this many seconds for the repository lock held by another
    /// run (default: exit 3 at once)
    #[arg(long = "lock-wait", value_name = "SECONDS")]
    pub lock_wait: Option<u64>,

    /// Expire this WAL archive: remove, per timeline, the segments,
    /// .partial and .backup files older than the start segment of the
    /// oldest kept physical backup on that timeline or its ancestors
    /// (following .history files; the oldest kept physical backup at all for
    /// other timelines). .history files are always kept. Nothing is removed
    /// when no physical backup is kept. The plan lists the ranges as
    /// `wal-expiry` records. With stdin input, the input must hold every
    /// physical backup of the cluster. A directory, ssh://... or s3://...
    #[arg(long = "wal-archive", value_name = "DIR|URL")]
    pub wal_archive: Option<PathBuf>,

    /// Take this as the current time (RFC 3339, e.g.
    /// 2026-11-21T03:00:00Z), for tests and for replaying a plan
    #[arg(long = "now", value_name = "RFC3339")]
    pub now: Option<String>,

    /// How many seconds in the future an artifact or verification may be
    /// dated before the clock is taken to have gone backwards
    #[arg(
        long = "clock-tolerance",
        value_name = "SECONDS",
        default_value_t = 3600
    )]
    pub clock_tolerance: u64,

    /// Write pgb.v1 records (JSON lines) even when stdout is a terminal.
    /// Without it a terminal gets one short line per record (sizes in
    /// binary units, times as ages, the outcome); a pipe or a file always
    /// gets the records
    #[arg(long = "json")]
    pub json: bool,

    /// Print help
    #[arg(long = "help", action = clap::ArgAction::Help)]
    pub help: Option<bool>,
}

/// A count: a number, or `unlimited`.
pub fn parse_count(s: &str) -> Result<u64, String> {
    if s == "unlimited" {
        return Ok(u64::MAX);
    }
    s.parse::<u64>()
        .map_err(|_| format!("{s:?}: expected a number or `unlimited`"))
}

/// The EXAMPLES section of the man page, in roff.
#[allow(dead_code)]
pub const EXAMPLES: &str = r#".PP
See what a policy would delete (nothing is deleted without \fB\-\-apply\fR):
.PP
.nf
.RS 4
pgb\-prune \-\-repo /srv/backups/pg \\
  \-\-keep\-daily 7 \-\-keep\-weekly 4 \-\-keep\-monthly 12 \\
  | jq \-r 'select(.prune.action == "delete") | .path'
.RE
.fi
.PP
Nightly from cron, counting only verified backups, also expiring the WAL archive and the copies:
.PP
.nf
.RS 4
pgb\-prune \-\-repo /srv/backups/pg \-\-require\-verified \\
  \-\-keep\-daily 7 \-\-keep\-weekly 4 \\
  \-\-keep\-monthly 12 \-\-keep\-yearly 3 \-\-wal\-archive /srv/wal\-archive \-\-copies \\
  \-\-apply \-\-lock\-wait 600 >> /var/log/pgb/prune.jsonl
.RE
.fi
.PP
Check the plan against restic: given the timestamps of the counted artifacts (complete, verified with \fB\-\-require\-verified\fR, none in the future), \fBrestic forget \-\-dry\-run\fR with the same \fB\-\-keep\-*\fR flags keeps the same set; pgb\-prune adds the newest verified artifact and the uncounted ones newer than the newest counted. Reasons read \fBlast #1\fR, \fBhourly 2026\-11\-20T13\fR, \fBdaily 2026\-11\-20\fR, \fBweekly 2026\-W47\fR, \fBmonthly 2026\-11\fR, \fByearly 2026\fR, \fBoldest daily 2025\-11\-23\fR, \fBwithin 30d of the newest\fR, \fBnewest verified\fR.
.PP
Records: each artifact as read, plus \fBprune\fR: \fB{"action": "keep"|"delete", "reasons": [...]}\fR, and with \fB\-\-apply\fR \fB"deleted": true\fR once its files are gone. \fBwal\-expiry\fR records: \fBarchive\fR, \fBtimeline\fR, \fBfirst\fR, \fBlast\fR, \fBfiles\fR (how many), \fBaction\fR, \fBreason\fR.
"#;
