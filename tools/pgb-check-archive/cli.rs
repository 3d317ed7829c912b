//! Command-line interface of pgb-check-archive. Uses only clap, std and
//! pgb_common, so the man-page generator can include it.

use std::path::PathBuf;

use clap::Parser;

/// Check a WAL archive before an incident does: bad, foreign and missing
/// segments, staleness, and which backups it can restore.
///
/// Every segment is validated from its size and its first page only, as
/// PostgreSQL's XLogReaderValidatePageHeader would: the size equals the
/// segment size of the long page header (never assumed 16 MB), the page
/// magic belongs to a known major version and is the same across the
/// archive, page 0 carries the long header, xlp_sysid is the same across the
/// archive (and equals --system-identifier), xlp_seg_size and
/// xlp_xlog_blcksz are valid, xlp_pageaddr matches the file name, and
/// xlp_tli fits the name's timeline. Zero-filled files are reported; .zst
/// segments are checked after decoding their first page. Continuity is
/// checked per timeline, following .history files across timeline switches;
/// .partial and .backup files are understood and not counted as segments.
/// Prints one pgb.v1 `archive-problem` record per problem (naming the file)
/// and one `archive-summary` record.
#[derive(Parser, Debug)]
#[command(
    name = "pgb-check-archive",
    version,
    after_help = "Exit status: 0 the archive is clean, 1 something is wrong (see the records), 2 error.\n\
                  See pgb-check-archive(1) for the record fields and metrics."
)]
pub struct Args {
    /// The WAL archive directory (as written by pgb-wal push or cp)
    #[arg(value_name = "ARCHIVE_DIR")]
    pub archive: PathBuf,

    /// The cluster's system identifier (pg_controldata, or `SELECT
    /// system_identifier FROM pg_control_system()`): every segment must carry
    /// it [default: the most common one in the archive]
    #[arg(long = "system-identifier", value_name = "ID")]
    pub system_identifier: Option<u64>,

    /// Fail (exit 1, problem `stale`) when the newest segment was archived
    /// more than SECONDS ago
    #[arg(long = "max-age", value_name = "SECONDS")]
    pub max_age: Option<u64>,

    /// Write node_exporter textfile metrics to FILE atomically (mode 0644,
    /// also when the check cannot run)
    #[arg(long = "prom", value_name = "FILE")]
    pub prom: Option<PathBuf>,

    /// Read pgb.v1 records on stdin: each physical backup artifact is
    /// written out again with an `archive_check` field saying whether every
    /// segment from its start to its stop is in the archive; other records
    /// are forwarded untouched
    #[arg(long = "backups")]
    pub backups: bool,
}

/// The EXAMPLES section of the man page, in roff.
#[allow(dead_code)]
pub const EXAMPLES: &str = r#".PP
From cron every five minutes, failing when nothing was archived for 15 minutes, with metrics for node_exporter:
.PP
.nf
.RS 4
pgb\-check\-archive /srv/wal\-archive \-\-max\-age 900 \-\-prom /var/lib/node_exporter/textfile/pgb_archive.prom
.RE
.fi
.PP
Pin the cluster, so an archive filled by another cluster cannot pass:
.PP
.nf
.RS 4
pgb\-check\-archive /srv/wal\-archive \-\-system\-identifier $(psql \-Atc 'SELECT system_identifier FROM pg_control_system()')
.RE
.fi
.PP
Which backups can be restored from the archive:
.PP
.nf
.RS 4
cat /srv/backups/pg/main/physical/*.pgb.json | jq \-c . | pgb\-check\-archive /srv/wal\-archive \-\-backups
.RE
.fi
.PP
Problems (field \fBproblem\fR of \fBarchive\-problem\fR records): \fBgap\fR (fields \fBtimeline\fR, \fBfirst\fR, \fBlast\fR, \fBmissing\fR: a range of missing segments), \fBbad\-size\fR, \fBzero\fR, \fBbad\-magic\fR, \fBbad\-info\fR, \fBno\-long\-header\fR, \fBbad\-seg\-size\fR, \fBbad\-blcksz\fR, \fBbad\-pageaddr\fR, \fBbad\-timeline\fR, \fBforeign\fR (another system identifier), \fBunreadable\fR, \fBbad\-name\fR, \fBbad\-history\fR, \fBmissing\-history\fR, \fBstale\fR, \fBempty\fR, \fBbackup\-unrestorable\fR.
.PP
Metrics: pgb_archive_check_success, pgb_archive_last_check_timestamp_seconds, pgb_archive_age_seconds, pgb_archive_segments, pgb_archive_gaps, pgb_archive_missing_segments, pgb_archive_bad_segments, pgb_archive_foreign_segments, pgb_archive_problems, each labelled with archive="DIR".
"#;
