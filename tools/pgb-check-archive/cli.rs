//! Command-line interface of pgb-check-archive. Uses only clap, std and
//! pgb_common, so the man-page generator can include it.

use std::path::PathBuf;

use clap::Parser;
use pgb_common::pg::ConnArgs;

/// Check a WAL archive before an incident does: bad, foreign and missing
/// segments, staleness, and which backups it can restore.
///
/// Every segment is read to the end when it can be and compared with the
/// checksum file pgb-wal push wrote beside it (NAME.sha256: its sha256
/// lines, and its blake3 lines when it has them): .zst segments
/// are decoded to the end, .age ones decrypted to the end with -i (without
/// it, the stored bytes are still compared). A segment without a checksum
/// file (archived by another tool) is checked by its header and size only,
/// and counted so. Every segment's first page is validated as PostgreSQL's
/// XLogReaderValidatePageHeader would: the size equals the
/// segment size of the long page header (never assumed 16 MB), the page
/// magic belongs to a known major version and is the same across the
/// archive, page 0 carries the long header, xlp_sysid is the same across the
/// archive (and equals --system-identifier), xlp_seg_size and
/// xlp_xlog_blcksz are valid, xlp_pageaddr matches the file name, and
/// xlp_tli fits the name's timeline; a page magic pgb does not know is a
/// problem, never a pass. Zero-filled files are reported; encrypted (.age)
/// segments without -i are counted as present but unchecked, not failed.
/// Continuity is
/// checked per timeline, following .history files across timeline switches;
/// .partial and .backup files are understood and not counted as segments.
/// Prints one pgb.v1 `archive-problem` record per problem (naming the file)
/// and one `archive-summary` record, per archive. Archives may be
/// directories, SSH hosts (ssh://[user@]host[:port]/path) or S3 prefixes
/// (s3://bucket/prefix); with several, --copies or --require 3-2-1 count
/// in how many of them each segment is held.
#[derive(Parser, Debug)]
#[command(
    name = "pgb-check-archive",
    version,
    disable_help_flag = true,
    after_help = "Exit status: 0 the archive is clean, 1 something is wrong (see the records), 2 error.\n\
                  See pgb-check-archive(1) for the record fields and pgb-metrics(7) for the metrics."
)]
pub struct Args {
    /// The WAL archive: a directory (as written by pgb-wal push or cp),
    /// ssh://[user@]host[:port]/path or s3://bucket/prefix (as written by
    /// pgb-wal push), optionally with labels for --require:
    /// ARCHIVE#media=nas,site=offsite. Several archives are each checked
    /// on their own (records and metrics name each), and their copies
    /// counted with --copies or --require
    #[arg(value_name = "ARCHIVE", required = true)]
    pub archive: Vec<String>,

    /// Fail (exit 1, problem `too-few-copies`) when a segment that any of
    /// the archives holds is not held, without a problem, by at least N of
    /// them; the problem names the segments and the archives lacking them
    #[arg(long = "copies", value_name = "N")]
    pub copies: Option<usize>,

    /// Fail (exit 1) unless every segment meets RULE across the archives:
    /// 3-2-1 is at least 3 archives holding it (problem `too-few-copies`),
    /// on at least 2 media and at least 1 of them offsite (problem
    /// `not-3-2-1`). Media and site come from labels (#media=...,site=...);
    /// an archive without a media label counts as local, ssh or
    /// object-storage by its kind, and as offsite only when labelled so
    #[arg(long = "require", value_name = "RULE", value_parser = ["3-2-1"])]
    pub require: Option<String>,

    /// The cluster's system identifier (pg_controldata, or `SELECT
    /// system_identifier FROM pg_control_system()`): every segment must carry
    /// it [default: the most common one in the archive]
    #[arg(long = "system-identifier", value_name = "ID")]
    pub system_identifier: Option<u64>,

    /// The cluster's WAL segment size in bytes (`SHOW wal_segment_size`,
    /// pg_controldata's "Bytes per WAL segment") [default: the server's
    /// with -d, else the one the segments' headers carry]. Needed to check
    /// the continuity of an archive of encrypted segments without -i
    #[arg(long = "segment-size", value_name = "BYTES", value_parser = parse_seg_size)]
    pub segment_size: Option<u64>,

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
    /// are forwarded untouched. An incremental backup's `archive_check`
    /// lists its `chain` (the records' parent links, read from its
    /// repository); a chain that is broken (a member missing or not
    /// matching) makes it unrestorable, said in `chain_broken` and a
    /// backup-unrestorable problem
    #[arg(long = "backups", conflicts_with = "repo")]
    pub backups: bool,

    /// Judge the physical backups of this repository (their .pgb.json
    /// sidecars) as --backups does for stdin; their records, with
    /// `archive_check`, go to stdout and the sidecars are left unchanged;
    /// the records' repo is DIR (a repository moved or copied elsewhere is
    /// read where it lies). A directory, ssh://[user@]host[:port]/path or
    /// s3://bucket/prefix (a repository pgb-ship copied to): its sidecars are
    /// read in one go (one SSH session, one S3 listing), nothing of the
    /// backups' files is read
    #[arg(long = "repo", value_name = "DIR|URL")]
    pub repo: Option<PathBuf>,

    /// Read only each segment's size and first page, as before checksums
    /// were recorded: no full reads, nothing compared with NAME.sha256
    /// (every segment counts as header-only), a .zst judged by the size its
    /// frame declares. For a frequent watch of a large archive (staleness,
    /// gaps, the server's view) between full checks
    #[arg(long = "headers-only")]
    pub headers_only: bool,

    /// Identity file to decrypt encrypted (.age) segments (repeatable; mode
    /// 0600, owned by the running user). Without it they are counted as
    /// present (continuity) and unchecked, their stored bytes still compared
    /// with NAME.sha256
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    pub identity: Vec<PathBuf>,

    /// Also ask the server archiving into ARCHIVE_DIR (a database name or a
    /// connection string): pg_stat_archiver (a failure newer than the last
    /// success is a problem; so is a last archived file missing from the
    /// archive), and its current WAL position (pg_current_wal_lsn, or
    /// pg_last_wal_receive_lsn on a standby) against the archive's newest
    /// segment. Its system identifier is what every segment must carry
    /// unless --system-identifier is given. Any role will do: what is read
    /// is readable by PUBLIC by default
    #[arg(short = 'd', long = "dbname", value_name = "DBNAME|CONNINFO")]
    pub dbname: Option<String>,

    /// With -d: fail (problem `behind`) when more than SEGMENTS finished
    /// segments of the server's timeline are not in the archive yet
    #[arg(long = "max-behind", value_name = "SEGMENTS", requires = "dbname")]
    pub max_behind: Option<u64>,

    #[command(flatten)]
    pub conn: ConnArgs,

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

/// A WAL segment size: bytes, or with a kB/MB/GB suffix; a power of two
/// from 1 MB to 1 GB.
fn parse_seg_size(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.trim() {
        t if t.ends_with("GB") => (&t[..t.len() - 2], 1u64 << 30),
        t if t.ends_with("MB") => (&t[..t.len() - 2], 1 << 20),
        t if t.ends_with("kB") => (&t[..t.len() - 2], 1 << 10),
        t => (t, 1),
    };
    let n = num
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{s:?}: not a size (bytes, or a number with kB, MB or GB)"))?;
    if n.is_power_of_two() && ((1 << 20)..=(1 << 30)).contains(&n) {
        Ok(n)
    } else {
        Err(format!(
            "{s:?}: a WAL segment size is a power of two from 1MB to 1GB"
        ))
    }
}

/// The EXAMPLES section of the man page, in roff.
#[allow(dead_code)]
pub const EXAMPLES: &str = r#".PP
From cron every five minutes, failing when nothing was archived for 15 minutes, with metrics for node_exporter:
.PP
.nf
.RS 4
pgb\-check\-archive /srv/wal\-archive \-\-max\-age 900 \\
  \-\-prom /var/lib/node_exporter/textfile/pgb_archive.prom
.RE
.fi
.PP
Pin the cluster, so an archive filled by another cluster cannot pass:
.PP
.nf
.RS 4
pgb\-check\-archive /srv/wal\-archive \-\-system\-identifier \\
  "$(psql \-Atc 'SELECT system_identifier FROM pg_control_system()')"
.RE
.fi
.PP
Every copy of the archive, local and offsite, each checked, and the 3\-2\-1 rule for WAL: every segment in three archives, on two media, one offsite (a segment missing from one is named, with the archives lacking it):
.PP
.nf
.RS 4
pgb\-check\-archive /srv/wal s3://pgb\-backups/wal/main#site=offsite \\
  ssh://backup@backup1/srv/wal/main#media=disk,site=offsite \\
  \-\-require 3\-2\-1 \-\-prom /var/lib/node_exporter/textfile/pgb_archive.prom
.RE
.fi
.PP
Which backups can be restored from the archive:
.PP
.nf
.RS 4
cat /srv/backups/pg/main/physical/*.pgb.json | jq \-c . \\
  | pgb\-check\-archive /srv/wal\-archive \-\-backups
.RE
.fi
.PP
An archive of encrypted segments, checked without the key on the monitoring host, and with it where the key lives:
.PP
.nf
.RS 4
pgb\-check\-archive /srv/wal\-archive \-\-segment\-size 16MB \-\-max\-age 900
pgb\-check\-archive /srv/wal\-archive \-i /root/.pgb/wal.key
.RE
.fi
.PP
With the server's own view (pg_stat_archiver, its WAL position), and the physical backups of a repository:
.PP
.nf
.RS 4
pgb\-check\-archive /srv/wal\-archive \-d 'host=/run/postgresql dbname=postgres' \\
  \-\-max\-behind 2 \-\-repo /srv/backups/pg
.RE
.fi
.PP
Problems (field \fBproblem\fR of \fBarchive\-problem\fR records, each naming its \fBfile\fR): \fBgap\fR (fields \fBtimeline\fR, \fBfirst\fR, \fBlast\fR, \fBmissing\fR: a range of missing segments), \fBbad\-size\fR, \fBzero\fR, \fBbad\-magic\fR, \fBbad\-info\fR, \fBno\-long\-header\fR, \fBbad\-seg\-size\fR, \fBbad\-blcksz\fR, \fBbad\-pageaddr\fR, \fBbad\-timeline\fR, \fBforeign\fR (another system identifier), \fBchecksum\-mismatch\fR (the file read in full differs from its NAME.sha256: a flipped byte, a truncation, bytes appended, a swapped file), \fBbad\-checksum\-file\fR (a NAME.sha256 that is not one), \fBunreadable\fR (including a .zst that does not decode to its end, such as a truncated one, and an encrypted segment that does not decrypt with \-i), \fBbad\-name\fR, \fBbad\-history\fR, \fBmissing\-history\fR, \fBstale\fR, \fBempty\fR, \fBunknown\-segment\-size\fR (only encrypted segments, no \-i, no \-\-segment\-size or \-d), \fBbackup\-unrestorable\fR; with \-\-copies or \-\-require, across the archives (field \fBarchive\fR is \fB*\fR): \fBtoo\-few\-copies\fR and \fBnot\-3\-2\-1\fR, one record per set of segments held by the same archives (fields \fBfile\fR, the first segment, \fBlast\fR, \fBsegments\fR, \fBfiles\fR (up to 1000 names), \fBcopies\fR, \fBpresent_in\fR, \fBmissing_from\fR, \fBfailed\fR); segments are counted over every archive of the run, so archives pruned on different schedules differ in their oldest segments; with \-d: \fBarchiver\-failing\fR (pg_stat_archiver's last failure is newer than its last success; field \fBfailed_count\fR), \fBarchived\-missing\fR (the server's last_archived_wal is not in this archive), \fBbehind\fR (more than \-\-max\-behind finished segments not archived; field \fBsegments_behind\fR), \fBarchive\-mode\-off\fR.
.PP
Checksums: \fBpgb\-wal push\fR writes NAME.sha256 beside every file it archives (the sha256 of the file as PostgreSQL wrote it, and of the stored file when that is compressed or encrypted, in sha256sum's format, then their blake3 in lines \fB# blake3 <hex>  NAME\fR that sha256sum skips; see \fBpgb\-wal\fR(1)). Each segment that has one is read in full and compared with every checksum it records (sha256, and blake3 when recorded: a checksum file whose blake3 line alone was altered is a \fBchecksum\-mismatch\fR too; one without blake3 lines, of an older pgb\-wal, is compared by sha256), and counted in \fBchecksum_verified_segments\fR when it matches; segments without one (archived by cp, another tool or an older pgb\-wal) are counted in \fBheader_only_segments\fR: their size and first page are checked, a byte changed further in cannot be seen. The NAME.sha256 files are counted (\fBchecksum_files\fR), not reported as foreign files. Reading in full costs a read of the whole archive (an archive without checksum files is read as fast as before); \fB\-\-headers\-only\fR skips it for a frequent watch between full checks.
.PP
Encrypted segments (NAME.age, NAME.zst.age from \fBpgb\-wal push \-r\fR): without \-i each counts as present, so continuity and staleness are checked, and as unchecked (\fBunchecked_segments\fR), not failed, while its stored bytes are still compared with NAME.sha256; with \-i it is decrypted to the end and checked like any segment.
.PP
The \fBarchive\-summary\fR record holds: ok, checked_at, segments, compressed_segments, encrypted_segments, unchecked_segments, checksum_files, checksum_verified_segments, header_only_segments, bad_segments, foreign_segments, gaps, missing_segments, problems, counts (per problem), segment_size, system_identifier, pg_version, timelines (timeline, parent, switchpoint, segments, first, last), ranges, partial_files, backup_files, history_files, other_files, newest_segment, newest_mtime, age_seconds, and with \-d \fBserver\fR: in_recovery, wal_lsn, current_segment, timeline, segment_size, system_identifier, archive_mode, archived_count, last_archived_wal, last_archived_time, failed_count, last_failed_wal, last_failed_time, archive_newest_segment, segments_behind.
.PP
Metrics (\-\-prom; described in \fBpgb\-metrics\fR(7)): pgb_archive_check_success, pgb_archive_last_check_timestamp_seconds, pgb_archive_age_seconds, pgb_archive_segments, pgb_archive_gaps, pgb_archive_missing_segments, pgb_archive_bad_segments, pgb_archive_foreign_segments, pgb_archive_unchecked_segments, pgb_archive_checksum_verified_segments, pgb_archive_header_only_segments, pgb_archive_problems, and with \-d pgb_archive_server_archived_count, pgb_archive_server_failed_count, pgb_archive_server_last_archived_timestamp_seconds, pgb_archive_server_last_failed_timestamp_seconds, pgb_archive_server_segments_behind; each labelled archive="ARCHIVE" (a directory as given, or the URL), and with \-\-copies or \-\-require pgb_archive_copies_missing_segments (per archive) and pgb_archive_copies_short_segments. The file is rewritten whole: one file per run.
.PP
Remote archives are listed through the storage layer (one \fBfind\fR on the SSH host, S3 ListObjectsV2) and every file is read through it and checked as in a directory. An SSH host is read in at most four sessions, however many files it holds: the listing, every checksum file at once, the files read in full as one \fBtar\fR stream (GNU tar or bsdtar on the host, the names on its input), and with \-\-headers\-only the first page of each segment at once (\fBhead \-c\fR, \fBbase64\fR); a file removed between the listing and the reads (a prune meanwhile) is \fBunreadable\fR, as in a directory. S3 objects are read by GETs, sixteen at a time. \-\-backups, \-\-repo and \-d judge one archive; give only one with them.
"#;
