//! Command-line interface of pgb-verify. Uses only clap, std and pgb_common,
//! so the man-page generator can include it.

use std::path::PathBuf;

use clap::Parser;

/// Prove backups restorable: checksums, structure, manifests and real test
/// restores, recorded on each artifact.
///
/// Reads pgb.v1 artifact records on stdin (or the sidecars of a repository
/// with --repo), checks each one, appends a `verified` entry (method, ok,
/// when, duration_ms, details) to its record, merges the record into its
/// sidecar and into the sidecar beside each of its copies, and prints the
/// merged record. The sidecar is the source of truth: a record on stdin
/// (an old one replayed, too) is merged with it, never replaces it, so no
/// copy or verification recorded since is lost (see pgb(7)). A copy whose
/// sidecar cannot be updated is named on stderr and makes the exit status
/// 2; the verdict stays as it is. A record whose repository is not there
/// is an error naming it. Records it does not act on, and error records,
/// pass through untouched. Without a level flag the cheap levels run:
/// --checksums, --structure and --manifest.
///
/// A repository may be remote: --repo takes `s3://bucket/prefix` (the AWS
/// variables and files, as pgb-ship) and `ssh://[user@]host[:port]/path`
/// (the system ssh, PGB_SSH_OPTIONS and --ssh-option) as well as a
/// directory, and every check runs on the copy where it lies, with no local
/// original: files are streamed from there and hashed as they come, a
/// physical test restore unpacks straight from the stream, and a logical
/// one streams the dump into a private temp file for pg_restore -j. The
/// verdict is merged into the sidecar beside that copy. A damaged object
/// fails the check naming its URL (exit 1); a server that does not answer
/// (down, unreachable) is an error that records no verdict (exit 2).
#[derive(Parser, Debug)]
#[command(name = "pgb-verify", version, disable_help_flag = true)]
pub struct Args {
    /// Verify the artifacts of this repository (their .pgb.json sidecars)
    /// instead of reading records on stdin; the records' repo is DIR (a repository moved or copied elsewhere is read where it lies).
    /// DIR may be s3://bucket/prefix or ssh://[user@]host[:port]/path
    #[arg(long = "repo", value_name = "DIR")]
    pub repo: Option<PathBuf>,

    /// Re-read every file of the artifact, and of each copy in its `copies`
    /// that can be reached (directories, SSH hosts, S3), computing sha256 and
    /// blake3 in one pass, and compare sizes and sums with the record (the
    /// ciphertext, for an encrypted artifact). A copy that differs fails,
    /// naming its URL and file; the copy a remote --repo names is read once,
    /// as the repository. An incremental physical backup (pgb-snapshot
    /// --incremental) also gets a `chain` verdict: its parent links followed
    /// through the repository's records and checked (system identifier,
    /// depth, INCREMENTAL FROM LSN at the parent's start), and every
    /// ancestor's files compared with its record; a missing, damaged or
    /// swapped member fails it, naming the member (`members` lists the chain)
    #[arg(long = "checksums")]
    pub checksums: bool,

    /// Check the structure: a logical dump's table of contents reads with
    /// stock pg_restore --list and lists every table whose rows were counted;
    /// a globals dump is complete
    #[arg(long = "structure")]
    pub structure: bool,

    /// Verify a physical backup's backup_manifest natively, inside its tar or
    /// tar.zst files (age-encrypted ones too, with -i) or in a plain-format
    /// data directory: its own checksum (nothing may follow its line), every
    /// listed file present with the right size and checksum in the
    /// manifest's algorithm (CRC32C, pg_basebackup's default, SHA224, SHA256,
    /// SHA384 or SHA512), no unexpected file, the system identifier, and
    /// the WAL the backup needs, present and checked page by page from its
    /// start to its stop LSN (headers, page addresses, timeline). For a
    /// plain-format backup stock pg_verifybackup runs too and its verdict is
    /// recorded beside pgb's
    #[arg(long = "manifest")]
    pub manifest: bool,

    /// Restore for real and time it; the stored bytes are compared with the
    /// record first. Logical dumps: into a throwaway cluster (a dump of
    /// postgres as pgb_verify_postgres) or --target, comparing every
    /// recorded table's row count. Physical backups: unpacked into a
    /// throwaway directory (manifest checked on the way), started as
    /// postgres on a private socket with recovery to the end of the
    /// included WAL (recovery_target = 'immediate'), promoted and queried in
    /// every database; an incremental is rebuilt from its whole chain with
    /// pg_combinebackup first (every member checked as it is unpacked, see
    /// pgb-restore(1)); removed afterwards, also on Ctrl-C, and by the next
    /// run after a kill. A restore the run cannot complete (--target down,
    /// a program missing, a full temp disk) records no verdict: an error
    /// record, exit 2
    #[arg(long = "restore")]
    pub restore: bool,

    /// Restore into a database on this existing server instead of a
    /// throwaway cluster (a connection string; a scratch database is created
    /// and dropped)
    #[arg(long = "target", value_name = "CONNINFO")]
    pub target: Option<String>,

    /// Parallel jobs for pg_restore
    #[arg(short = 'j', long = "jobs", value_name = "N", default_value_t = 2)]
    pub jobs: u32,

    /// SQL smoke queries run after a logical restore; any error fails the
    /// check
    #[arg(long = "sql", value_name = "FILE")]
    pub sql: Option<PathBuf>,

    /// Fail a restore check that takes longer than this (e.g. 90s, 15m, 2h)
    #[arg(long = "rto", value_name = "DURATION")]
    pub rto: Option<String>,

    /// age identity file for encrypted artifacts (repeatable; mode 0600,
    /// owned by the running user). Checksums compare the ciphertext without
    /// it; --structure and --manifest decrypt streaming with it and compare
    /// the plaintext with encryption.plaintext. Without one they report
    /// "skipped: encrypted, no identity" and record nothing
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    pub identity: Vec<PathBuf>,

    /// Fail the checksum check when a recorded copy cannot be reached
    /// (SSH host or bucket unavailable, copy directory absent); by default
    /// such a copy is reported as unreachable and the check still passes.
    /// A copy that is reached and differs always fails
    #[arg(long = "copies-required")]
    pub copies_required: bool,

    /// Option for ssh when reading copies on SSH hosts, and an ssh://
    /// --repo, as `ssh -o` takes it (repeatable), e.g.
    /// `IdentityFile=/etc/pgb/ship_key`
    #[arg(long = "ssh-option", value_name = "OPTION")]
    pub ssh_option: Vec<String>,

    /// Do not read the recorded copies, only the artifact itself, and leave
    /// the sidecars beside them as they are
    #[arg(long = "no-copies", conflicts_with = "copies_required")]
    pub no_copies: bool,

    /// Write node_exporter textfile metrics to FILE (atomically; series of
    /// other clusters, databases and kinds already in it are kept): last
    /// verification time and result, last success, last restore duration.
    /// See pgb-metrics(7)
    #[arg(long = "prom", value_name = "FILE")]
    pub prom: Option<PathBuf>,

    /// Directories holding PostgreSQL programs (initdb, pg_ctl, pg_restore,
    /// psql, pg_verifybackup), separated by ':'. Each artifact is checked
    /// with the programs of its own major (a dump: its pg_dump's major or
    /// newer), searched only here when given, otherwise in
    /// /usr/lib/postgresql/N/bin, /usr/pgsql-N/bin and PATH; none matching
    /// is an error naming the version needed
    #[arg(long = "pg-bindir", value_name = "DIRS", env = "PGB_PG_BINDIR")]
    pub pg_bindir: Option<PathBuf>,

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

/// The EXAMPLES section of the man page, in roff.
#[allow(dead_code)]
pub const EXAMPLES: &str = r#".PP
Check the checksums, structure and manifests of everything in a repository:
.PP
.nf
.RS 4
pgb\-verify \-\-repo /srv/backups/pg
.RE
.fi
.PP
Take a dump and prove it restores, within 15 minutes, with smoke queries:
.PP
.nf
.RS 4
pgb\-snapshot \-d appdb \-\-globals \-o /srv/backups/pg \\
  | pgb\-verify \-\-restore \-\-rto 15m \-\-sql /etc/pgb/smoke.sql
.RE
.fi
.PP
Check encrypted artifacts with their plaintext, and keep node_exporter
metrics for alerting on the age of the last good verification:
.PP
.nf
.RS 4
pgb\-verify \-\-repo /srv/backups/pg \-i /etc/pgb/identity.txt \\
  \-\-prom /var/lib/node_exporter/textfile/pgb_verify.prom
.RE
.fi
.PP
Check and test-restore the offsite copy in S3 where it lies, recording the
verdict beside it:
.PP
.nf
.RS 4
pgb\-verify \-\-repo s3://bk/pg \-\-checksums \-\-restore
.RE
.fi
.PP
A failed check leaves \fB"ok": false\fR in the record's \fBverified\fR list, names the file or table at fault on stderr and in \fBdetails\fR, and makes the exit status 1.
"#;
