//! Command-line interface of pgb-snapshot. Uses only clap, std and
//! pgb_common, so the man-page generator can include it.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use pgb_common::pg::ConnArgs;

/// Take PostgreSQL backups that carry their own evidence.
///
/// Logical dumps (pg_dump custom format, one artifact per database), globals
/// (pg_dumpall --globals-only) and physical base backups (pg_basebackup),
/// streamed to the repository with sha256 and blake3 computed on the way,
/// published atomically, each with a `.pgb.json` sidecar, and printed as one
/// pgb.v1 JSON record per artifact on stdout (on a terminal, a line per
/// artifact unless --json).
#[derive(Parser, Debug)]
#[command(
    name = "pgb-snapshot",
    version,
    disable_help_flag = true,
    after_help = "Connections follow libpq: -h/-p/-U/-d, the PG* environment variables and ~/.pgpass.\n\
                  See pgb-snapshot(1) for the repository layout and how to restore each format."
)]
pub struct Args {
    /// Dump this database: a name or a connection string (repeatable)
    #[arg(short = 'd', long = "dbname", value_name = "DBNAME|CONNINFO")]
    pub dbname: Vec<String>,

    /// Dump every database that accepts connections, except templates, one
    /// artifact each
    #[arg(short = 'a', long = "all-databases")]
    pub all_databases: bool,

    /// Dump roles, memberships and tablespaces (pg_dumpall --globals-only)
    /// into their own artifact
    #[arg(short = 'g', long = "globals")]
    pub globals: bool,

    /// Take a physical base backup with pg_basebackup (tar, WAL streamed in,
    /// backup_manifest with SHA256 checksums)
    #[arg(long = "physical")]
    pub physical: bool,

    /// With --physical on PostgreSQL 17 or newer: an incremental backup
    /// (pg_basebackup --incremental), holding only the blocks changed since
    /// its parent: the newest complete physical backup of the same cluster
    /// (system identifier) and timeline in the repository (auto), or the
    /// backup with id ID. pgb hands pg_basebackup the parent's
    /// backup_manifest itself (decrypted with -i when the parent is
    /// encrypted). A full backup is taken instead, saying why on stderr,
    /// when the server is older than 17, there is no parent, the parent's
    /// own chain is broken (a member missing or not matching), the timeline
    /// changed, the chain is --max-chain long, or the server lacks the WAL
    /// summaries (summarize_wal = on) since the parent. The record names
    /// the parent and the depth: "incremental": {"parent": ID, "depth": N}.
    /// pgb-restore rebuilds the chain with pg_combinebackup. Needs
    /// --compress zstd (the default) or none
    #[arg(
        long = "incremental",
        value_name = "auto|ID",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "auto"
    )]
    pub incremental: Option<String>,

    /// Longest chain of backups (the full one included) that --incremental
    /// builds; when the parent is the chain's last allowed member, a full
    /// backup starts a new chain
    #[arg(long = "max-chain", value_name = "N", default_value_t = 7,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_chain: u32,

    /// age identity file to decrypt an encrypted parent's backup_manifest
    /// for --incremental (repeatable)
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    pub identity: Vec<PathBuf>,

    /// Repository directory the artifacts are written under
    #[arg(short = 'o', long = "out", value_name = "DIR", env = "PGB_REPO")]
    pub out: PathBuf,

    /// Cluster label used in the layout and records [default: the server's
    /// cluster_name, else its system identifier]
    #[arg(long = "cluster", value_name = "LABEL", env = "PGB_CLUSTER")]
    pub cluster: Option<String>,

    /// Compression: zstd[:LEVEL] has pg_dump 16+ write zstd into the custom
    /// format itself (restorable by stock pg_restore, in parallel too), and
    /// streams older pg_dumps' uncompressed output through multi-threaded
    /// zstd (restore with zstd -dc FILE | pg_restore ...); pg_dump[:LEVEL]
    /// uses pg_dump's own gzip; none stores it as is. Physical backups:
    /// pg_basebackup compresses (14's only gzip; pgb compresses 14's tars
    /// with zstd itself)
    #[arg(
        short = 'Z',
        long = "compress",
        value_name = "METHOD[:LEVEL]",
        default_value = "zstd:3"
    )]
    pub compress: String,

    /// Include planner statistics in logical dumps (pg_dump --statistics,
    /// PostgreSQL 18's pg_dump; an older server is dumped with pg_dump 18
    /// when it is installed, and its dumps then need pg_restore 18)
    #[arg(long = "statistics")]
    pub statistics: bool,

    /// zstd worker threads [default: the number of CPUs]
    #[arg(long = "threads", value_name = "N")]
    pub threads: Option<u32>,

    /// Skip the exact per-table row counts (for very large databases; the
    /// counts read every table once more)
    #[arg(long = "no-row-counts")]
    pub no_row_counts: bool,

    /// Database to connect to for --all-databases and metadata queries
    #[arg(
        long = "maintenance-db",
        value_name = "DBNAME",
        default_value = "postgres"
    )]
    pub maintenance_db: String,

    /// Checkpoint mode for --physical: fast starts at once, spread waits for
    /// the next regular checkpoint
    #[arg(long = "checkpoint", value_enum, default_value_t = Checkpoint::Fast)]
    pub checkpoint: Checkpoint,

    /// Wait up to this many seconds for the repository lock held by another
    /// run, instead of exiting with status 3 at once
    #[arg(long = "lock-wait", value_name = "SECONDS")]
    pub lock_wait: Option<u64>,

    /// Write node_exporter textfile metrics to FILE (atomically, mode 0644)
    /// after the run: per cluster, kind and database the time, size and
    /// duration of the last successful backup and whether the last attempt
    /// succeeded. Series already in FILE for other clusters, kinds or
    /// databases are kept, so one file serves several runs. Give --cluster
    /// too, so a failure that happens before the server is reached is
    /// labelled with the right cluster. See pgb-metrics(7)
    #[arg(long = "prom", value_name = "FILE")]
    pub prom: Option<PathBuf>,

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

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkpoint {
    Fast,
    Spread,
}

impl Checkpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Checkpoint::Fast => "fast",
            Checkpoint::Spread => "spread",
        }
    }
}

/// The EXAMPLES section of the man page, in roff.
#[allow(dead_code)]
pub const EXAMPLES: &str = r#".PP
Dump one database, the globals and a base backup into a repository:
.PP
.nf
.RS 4
pgb\-snapshot \-d appdb \-\-globals \-\-physical \-\-out /srv/backups/pg
.RE
.fi
.PP
Every database of a remote server, as user backup (password in ~/.pgpass):
.PP
.nf
.RS 4
pgb\-snapshot \-h db1.example.com \-U backup \-\-all\-databases \-o /srv/backups/pg
.RE
.fi
.PP
Restore a dump of PostgreSQL 16 or newer (pg_dump's own zstd, the default there) with stock pg_restore, in parallel:
.PP
.nf
.RS 4
pg_restore \-j 4 \-d appdb_restored appdb\-20261121T020000Z.dump
.RE
.fi
.PP
Restore a zstd dump of PostgreSQL 14 or 15 (pgb's zstd) with stock tools; pg_restore \-j needs a seekable file, so decompress first for a parallel restore:
.PP
.nf
.RS 4
zstd \-dc appdb\-20261121T020000Z.dump.zst | pg_restore \-d appdb_restored
zstd \-d appdb\-20261121T020000Z.dump.zst \-o /tmp/appdb.dump
pg_restore \-j 4 \-d appdb_restored /tmp/appdb.dump
.RE
.fi
.PP
Restore the globals, then a physical backup into an empty data directory:
.PP
.nf
.RS 4
zstd \-dc globals\-20261121T020000Z.sql.zst | psql \-d postgres
zstd \-dc base.tar.zst | tar \-x \-C $PGDATA
zstd \-dc pg_wal.tar.zst | tar \-x \-C $PGDATA/pg_wal
.RE
.fi
.PP
Nightly incremental base backups on PostgreSQL 17 or newer (summarize_wal = on in postgresql.conf): a full backup when there is none yet, then incrementals on the newest, a new full one every seventh night; restore the newest with pgb\-restore, which rebuilds the chain with pg_combinebackup:
.PP
.nf
.RS 4
pgb\-snapshot \-\-physical \-\-incremental \-\-max\-chain 7 \-o /srv/backups/pg
pgb\-restore \-\-repo /srv/backups/pg \-\-target\-immediate \\
  \-D /var/lib/postgresql/17/restored
.RE
.fi
.PP
From cron, with metrics for node_exporter's textfile collector (alert on them with the rules in scripts/prometheus/pgb\-alerts.yml):
.PP
.nf
.RS 4
pgb\-snapshot \-\-cluster main \-d appdb \-\-globals \-o /srv/backups/pg \\
  \-\-prom /var/lib/node_exporter/textfile/pgb_backup.prom
.RE
.fi
.PP
Repository layout: CLUSTER/logical/DBNAME/DBNAME\-TIMESTAMP.dump (pg_dump 16+) or .dump.zst, CLUSTER/globals/CLUSTER\-TIMESTAMP.sql.zst, CLUSTER/physical/CLUSTER\-TIMESTAMP/ (base.tar.zst, one OID.tar.zst per tablespace, pg_wal.tar.zst, backup_manifest), each with a .pgb.json sidecar beside it; TIMESTAMP is UTC. An incremental backup has the same layout (its tars hold INCREMENTAL.* files) and restores only with its chain. Nothing is ever overwritten.
"#;
