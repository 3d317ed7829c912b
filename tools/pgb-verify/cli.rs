//! Command-line interface of pgb-verify. Uses only clap, std and pgb_common,
//! so the man-page generator can include it.

use std::path::PathBuf;

use clap::Parser;

/// Prove backups restorable: checksums, structure, manifests and real test
/// restores, recorded on each artifact.
///
/// Reads pgb.v1 artifact records on stdin (or the sidecars of a repository
/// with --repo), checks each one, appends a `verified` entry (method, ok,
/// when, duration_ms, details) to its record, rewrites its sidecar and prints
/// the record. Records it does not act on, and error records, pass through
/// untouched. Without a level flag the cheap levels run: --checksums,
/// --structure and --manifest.
#[derive(Parser, Debug)]
#[command(name = "pgb-verify", version, disable_help_flag = true)]
pub struct Args {
    /// Verify the artifacts of this repository (their .pgb.json sidecars)
    /// instead of reading records on stdin
    #[arg(long = "repo", value_name = "DIR")]
    pub repo: Option<PathBuf>,

    /// Re-read every file of the artifact, computing sha256 and blake3 in one
    /// pass, and compare sizes and sums with the record
    #[arg(long = "checksums")]
    pub checksums: bool,

    /// Check the structure: a logical dump's table of contents reads with
    /// stock pg_restore --list and lists every table whose rows were counted;
    /// a globals dump is complete
    #[arg(long = "structure")]
    pub structure: bool,

    /// Verify a physical backup's backup_manifest natively, inside its tar or
    /// tar.zst files: its own checksum, every listed file present with the
    /// right size and SHA256, no unexpected file, the system identifier
    #[arg(long = "manifest")]
    pub manifest: bool,

    /// Restore logical dumps for real, into a throwaway cluster (or
    /// --target), and compare every recorded table's row count
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

    /// Directory holding the PostgreSQL programs (initdb, pg_ctl, pg_restore,
    /// psql); by default the newest /usr/lib/postgresql/N/bin, else PATH
    #[arg(long = "pg-bindir", value_name = "DIR", env = "PGB_PG_BINDIR")]
    pub pg_bindir: Option<PathBuf>,

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
A failed check leaves \fB"ok": false\fR in the record's \fBverified\fR list, names the file or table at fault on stderr and in \fBdetails\fR, and makes the exit status 1.
"#;
