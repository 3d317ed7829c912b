//! Command-line interface of pgb-list. Uses only clap, std and pgb_common,
//! so the man-page generator can include it.

use std::path::PathBuf;

use clap::Parser;

/// What backups there are, whether they are good, and to which moments
/// the cluster can be recovered.
///
/// Reads the sidecars (.pgb.json) of a repository and prints, per cluster,
/// kind and database, each artifact: its id, when it was taken and its
/// age, its size (the sum of its files as stored), whether it is
/// encrypted, its parent when the record names one (chain), for physical
/// backups where it stands in its chain of incrementals (full, or "incr 3
/// of chain from ID"; the chain resolved and checked link by link as
/// pgb-restore does, so an incremental whose chain has a member missing or
/// not matching its child is shown UNRESTORABLE with why, and opens no
/// recovery window), its copies by
/// media and site with the 3-2-1 verdict (3 copies counting the original,
/// 2 media, 1 offsite; as pgb-ship --require 3-2-1 judges it), the last
/// verification of each method (checksums, structure, manifest, restore)
/// with its result and when, and the duration of the last test restore.
///
/// With --wal-archive, also the recovery window of each cluster: from the
/// earliest to the latest moment a point-in-time recovery can reach with a
/// physical backup whose last checks passed (at least one verification,
/// the latest of each method ok) and WAL archived without a gap from that
/// backup's start onward. A backup opens the window where it ended (its
/// record's created time plus its duration_ms: where recovery from it
/// becomes consistent); the unbroken run of segments from its start,
/// following .history files to the newest timeline as recovery does,
/// closes it at its last commit: PostgreSQL stops a --target-time recovery
/// before the first commit (or abort) after the target and refuses to end
/// without one, so the latest moment is one microsecond before the last
/// commit record in that run (read from the WAL records of its last
/// segments, plain or .zst, or .age with --wal-identity). Encrypted
/// segments without it are not read: their range ends when its last
/// segment was archived (its modification time), an upper bound (basis
/// archived instead of commit). A missing
/// segment (a hole) ends a backup's run; the WAL after it is reachable only
/// from a backup taken after the hole, so holes split the window into
/// ranges. pgb-restore --select reach wants the archive unbroken from the
/// backup to the archive's end, so it refuses a target in a range a hole
/// ends, though PostgreSQL would reach it.
///
/// When stdout is a terminal a table is printed (sizes in human units,
/// times as ages); otherwise, or with --json, pgb.v1 records: one listing
/// per artifact and one recovery-window per cluster (see pgb(7)).
/// Nothing is written to the repository.
#[derive(Parser, Debug)]
#[command(name = "pgb-list", version, disable_help_flag = true)]
pub struct Args {
    /// The repository to list (its .pgb.json sidecars): a directory,
    /// s3://bucket/prefix (the AWS variables and files, as pgb-ship) or
    /// ssh://[user@]host[:port]/path (the system ssh, PGB_SSH_OPTIONS), e.g.
    /// a copy pgb-ship made; the listings' repo is DIR, wherever the
    /// records were written. An empty directory, or one holding no sidecar,
    /// is an error
    #[arg(long = "repo", value_name = "DIR", required = true)]
    pub repo: PathBuf,

    /// A WAL archive as pgb-wal push writes it: a directory, s3://... or
    /// ssh://... (repeatable, as pgb-restore takes them): adds each
    /// cluster's recovery window; an archive that cannot be read is an
    /// error. The
    /// archives must belong to the listed cluster; with physical backups of
    /// several clusters in the repository, name one with --cluster
    #[arg(long = "wal-archive", value_name = "DIR")]
    pub wal_archive: Vec<PathBuf>,

    /// age identity file for an archive of encrypted segments (pgb-wal push
    /// -r/-R; repeatable): the last segments of each run are decrypted to
    /// read their commit times. Without it, a range of encrypted WAL ends
    /// when its last segment was archived
    #[arg(long = "wal-identity", value_name = "FILE", requires = "wal_archive")]
    pub wal_identity: Vec<PathBuf>,

    /// Only this cluster label
    #[arg(long = "cluster", value_name = "NAME")]
    pub cluster: Option<String>,

    /// Only artifacts of this database (logical dumps)
    #[arg(long = "database", value_name = "NAME")]
    pub database: Option<String>,

    /// Only artifacts of this kind
    #[arg(long = "kind", value_name = "KIND", value_parser = ["logical", "globals", "physical", "wal"])]
    pub kind: Option<String>,

    /// Only artifacts taken since then: a duration back from now (90s,
    /// 15m, 2h, 7d) or a time (RFC 3339, or 2026-11-21 10:15:00+00)
    #[arg(long = "since", value_name = "DURATION|TIME")]
    pub since: Option<String>,

    /// Only artifacts whose latest verification of some method failed
    #[arg(long = "failed")]
    pub failed: bool,

    /// Only artifacts never verified (with --failed: either)
    #[arg(long = "unverified")]
    pub unverified: bool,

    /// Exit 1 unless each cluster's recovery window, its newest unbroken
    /// range, spans at least DURATION (e.g. 7d); needs --wal-archive
    #[arg(
        long = "require-window",
        value_name = "DURATION",
        requires = "wal_archive"
    )]
    pub require_window: Option<String>,

    /// Media label of the original (the repository) for the 3-2-1 verdict
    #[arg(long = "media", value_name = "NAME", default_value = "local")]
    pub media: String,

    /// Site label of the original (the repository) for the 3-2-1 verdict
    #[arg(long = "site", value_name = "NAME", default_value = "onsite")]
    pub site: String,

    /// Print pgb.v1 records even when stdout is a terminal
    #[arg(long = "json")]
    pub json: bool,

    /// Print help
    #[arg(long = "help", action = clap::ArgAction::Help)]
    pub help: Option<bool>,
}

/// The EXAMPLES section of the man page, in roff.
#[allow(dead_code)]
pub const EXAMPLES: &str = r#".PP
What there is, on a terminal, with the recovery window the archive gives:
.PP
.nf
.RS 4
pgb\-list \-\-repo /srv/backups/pg \-\-wal\-archive /srv/wal\-archive
.RE
.fi
.PP
From cron or a monitoring check: fail unless a week of point\-in\-time recovery is possible:
.PP
.nf
.RS 4
pgb\-list \-\-repo /srv/backups/pg \-\-wal\-archive /srv/wal\-archive \e
  \-\-require\-window 7d > /dev/null
.RE
.fi
.PP
The dumps of one database taken in the last two days, and what failed its checks:
.PP
.nf
.RS 4
pgb\-list \-\-repo /srv/backups/pg \-\-kind logical \-\-database appdb \e
  \-\-since 2d
pgb\-list \-\-repo /srv/backups/pg \-\-failed \-\-unverified
.RE
.fi
.PP
The window as timestamps, for a script:
.PP
.nf
.RS 4
pgb\-list \-\-repo /srv/backups/pg \-\-wal\-archive /srv/wal\-archive |
  jq \-r 'select(.type == "recovery\-window") | "\e(.earliest) \e(.latest)"'
.RE
.fi
.PP
Restore to the two ends of the window, as the tests do (pgb\-restore refuses a target outside it):
.PP
.nf
.RS 4
pgb\-restore \-\-repo /srv/backups/pg \-\-select reach \e
  \-\-target\-time "$EARLIEST" \-\-wal\-archive /srv/wal\-archive \-D /srv/restore
.RE
.fi
.PP
A \fBlisting\fR record holds: cluster, kind, database, id, created, age_seconds, size, files, encrypted, chain (the record's parent id, or null), for physical backups depth (0 for a full backup, N for the Nth incremental on it), chain_members (the chain's ids, the full backup first, or null when broken), chain_broken (why the chain cannot be restored, or null) and restorable (false when the chain is broken; true says only that every member is there and matches its child, not that their bytes were checked), copies (counting the original), copies_by_media, copies_by_site, policy (as pgb\-ship records it: rule, ok, copies, media, offsite, failed), verified (per method the latest: ok, when, duration_ms), last_restore (when, ok, duration_ms, restore_ms), status (\fBok\fR, \fBfailed\fR or \fBunverified\fR), repo, path, and for physical backups wal (timeline, start_lsn, stop_lsn) and ended (created plus duration_ms). A \fBrecovery\-window\fR record holds: cluster, archives, ok (some moment is recoverable), earliest, latest, length_seconds (of the newest range), latest_basis (the newest range's basis), ranges (from, to, length_seconds, backups, last_segment, basis: \fBcommit\fR, one microsecond before the last commit, or \fBarchived\fR, the last segment's modification time, and first_missing when a hole ends it), holes (from, to, first_missing), counted (the physical backups that open ranges), not_counted (id and reason), and with \-\-require\-window required (window, ok).
"#;
