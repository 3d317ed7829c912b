//! Command-line interface of pgb-restore. Uses only clap, std and
//! pgb_common, so the man-page generator can include it.

use std::path::PathBuf;

use clap::{ArgGroup, Parser};
use pgb_common::pg::ConnArgs;

/// Restore pgb artifacts: a physical backup into a data directory with
/// point-in-time recovery set up, or a logical dump (globals first) into a
/// server.
///
/// Reads pgb.v1 artifact records on stdin, or picks one from a repository
/// with --repo and --select. A physical backup is decrypted (-i) and
/// decompressed as it streams, unpacked into --pgdata (base, tablespaces,
/// pg_wal), every file checked against backup_manifest on the way; then
/// restore_command (pgb-wal get), the recovery target and recovery.signal
/// (or standby.signal) are written and ownership and modes set as
/// pgb-fixperms sets them. An incremental backup (pgb-snapshot
/// --incremental, PostgreSQL 17+) is restored with its whole chain, found
/// through the records' parent links in its repository: every link checked
/// (same system identifier, depths that follow, each child's INCREMENTAL
/// FROM LSN at its parent's start), every member's stored bytes and
/// manifest checked as it is unpacked into a temp area beside --pgdata
/// (tablespaces as pg_tblspc links there; several members at once unless
/// encrypted), then pg_combinebackup of the backup's major writes
/// --pgdata (tablespaces where tablespace_map or --tablespace-map says;
/// on the temp area's file system it hard-links the temp copies' unchanged
/// files on 18, copies them with copy_file_range on 17; its manifest
/// without checksums, as every byte was checked already) and
/// pg_verifybackup checks that every file is there with its size; a missing,
/// damaged or swapped member stops the restore naming it before --pgdata
/// is written, and the record lists the `chain`. Before anything is written it checks that the
/// WAL archive holds every segment from the backup's start to the target
/// and names what is missing (those the backup carries itself count),
/// following .history files from the backup's timeline to the target
/// timeline as PostgreSQL does (--target-timeline; the newest by default).
/// Encrypted WAL (pgb-wal push -r/-R) is fetched with --wal-identity. At
/// recovery time pgb-wal get exits 1 for a segment the archive lacks, which
/// ends recovery there, and 255 on a real failure (unreadable archive, wrong
/// key, damaged segment), which stops the server instead of promoting it
/// short of the target. With --target-time, the backup must have ended
/// before the target and the archived WAL after it must hold a commit (or
/// abort) record stamped after the target, read from the WAL itself
/// (by file time when it cannot be read), or nothing is written; --select
/// reach makes the same check. Every stored byte
/// read back (dumps, globals, tar members, manifest) is compared with the
/// size and blake3 the record holds (sha256 when a record has no blake3)
/// as it streams; a mismatch stops
/// the restore, names the file and exits 1, and a data directory or a
/// database (-C) this run created is removed again. Logical dumps are
/// restored into the server given by -d/-h/-p/-U: the set's globals first
/// (roles that already exist are left alone), then each database with
/// pg_restore -j, and the row counts recorded at backup time are compared.
/// Interrupted (Ctrl-C, SIGTERM) while pg_restore writes, it stops
/// pg_restore and says what is left: a database it created (-C) is
/// dropped, one that existed is named as half-filled; exit status 2.
/// A repository and a WAL archive may be remote: `--repo` and
/// `--wal-archive` take `s3://bucket/prefix` (the AWS variables and files,
/// as pgb-ship) and `ssh://[user@]host[:port]/path` (the system ssh) as
/// well as a directory. A physical backup then streams from there into
/// --pgdata, checked as it comes, with no local copy (its files' sizes are
/// checked first against one listing of its directory); a logical dump goes
/// to a private temp file for pg_restore -j. restore_command reaches a
/// remote archive with the AWS_ENDPOINT_URL, AWS_REGION, AWS_PROFILE,
/// AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE and PGB_SSH_OPTIONS this run
/// has (never a key): the server's user must be able to read the
/// credentials (its ~/.aws/credentials) or ssh key.
/// One `restore` record per restored artifact goes to stdout (`ok: false`
/// with the problems when the checks fail); failures of the run are error
/// records.
#[derive(Parser, Debug)]
#[command(
    name = "pgb-restore",
    version,
    disable_help_flag = true,
    group(ArgGroup::new("target").args(["target_time", "target_lsn", "target_xid", "target_name", "target_immediate"]))
)]
pub struct Args {
    /// Pick the artifact from this repository's sidecars instead of reading
    /// records on stdin; the records' repo is DIR (a repository moved or copied elsewhere is read where it lies).
    /// DIR may be s3://bucket/prefix or ssh://[user@]host[:port]/path
    #[arg(long = "repo", value_name = "DIR")]
    pub repo: Option<PathBuf>,

    /// With --repo: `latest` (the newest backup), an artifact id, or `reach`
    /// (the newest physical backup that ended before the recovery target
    /// and whose WAL in --wal-archive reaches it without a gap; for a time
    /// target, up to a commit after the target, where PostgreSQL
    /// stops: read from the WAL of plain, .zst and, with --wal-identity,
    /// encrypted segments, else the newest archived after the target).
    /// Artifacts whose latest verification failed are never picked (see
    /// --allow-failed), nor incrementals whose chain is broken (a member
    /// missing or not matching) or holds such a member
    #[arg(
        long = "select",
        value_name = "latest|ID|reach",
        default_value = "latest"
    )]
    pub select: String,

    /// Restore an artifact whose latest verification failed (pgb-verify
    /// wrote `ok: false`). Without it, --select latest and reach pass over
    /// such artifacts (naming each on stderr) and one picked by id or read
    /// on stdin is refused
    #[arg(long = "allow-failed")]
    pub allow_failed: bool,

    /// With --repo: only artifacts of this cluster label
    #[arg(long = "cluster", value_name = "LABEL")]
    pub cluster: Option<String>,

    /// With --repo: restore the logical dump of this source database (and
    /// the cluster's globals) instead of a physical backup
    #[arg(long = "database", value_name = "NAME")]
    pub database: Option<String>,

    /// age identity file for encrypted artifacts (repeatable); refused when
    /// readable by group or others
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    pub identity: Vec<PathBuf>,

    /// Physical: the data directory to restore into; created when missing,
    /// refused when not empty (unless --force) or while a postmaster runs
    /// there
    #[arg(short = 'D', long = "pgdata", value_name = "DIR")]
    pub pgdata: Option<PathBuf>,

    /// Physical: WAL archive restore_command fetches from: a directory,
    /// s3://... or ssh://... (repeatable, searched in order, as pgb-wal get
    /// takes it); checked for gaps before anything is written
    #[arg(long = "wal-archive", value_name = "DIR")]
    pub wal_archive: Vec<PathBuf>,

    /// Physical: age identity file restore_command passes to pgb-wal get
    /// (-i) to decrypt encrypted segments (NAME.age, NAME.zst.age;
    /// repeatable). Default, when the archive holds encrypted WAL: the -i
    /// files. pgb-wal get runs as the server's user and refuses a file it
    /// does not own or that others can read, so each file must be owned by
    /// the restored cluster's owner with mode 0600, in directories that user
    /// can enter; checked before anything is written, never copied
    #[arg(long = "wal-identity", value_name = "FILE")]
    pub wal_identity: Vec<PathBuf>,

    /// Recover up to this time (recovery_target_time), e.g.
    /// "2026-11-21 10:15:00+00" or RFC 3339
    #[arg(long = "target-time", value_name = "TIME")]
    pub target_time: Option<String>,

    /// Recover up to this WAL location (recovery_target_lsn), e.g. 0/3000028
    #[arg(long = "target-lsn", value_name = "LSN")]
    pub target_lsn: Option<String>,

    /// Recover up to this transaction id (recovery_target_xid)
    #[arg(long = "target-xid", value_name = "XID")]
    pub target_xid: Option<String>,

    /// Recover up to this restore point, made with pg_create_restore_point
    /// (recovery_target_name)
    #[arg(long = "target-name", value_name = "NAME")]
    pub target_name: Option<String>,

    /// Stop as soon as the backup is consistent (recovery_target =
    /// 'immediate'); needs no WAL archive. Without any target, recovery
    /// replays all the WAL the archive holds
    #[arg(long = "target-immediate")]
    pub target_immediate: bool,

    /// What the server does at the target: promote, pause or shutdown
    /// (recovery_target_action)
    #[arg(long = "target-action", value_name = "ACTION", default_value = "promote",
          value_parser = ["promote", "pause", "shutdown"])]
    pub target_action: String,

    /// Physical: the timeline recovery follows (recovery_target_timeline):
    /// `latest` (PostgreSQL's default, also when not given) follows every
    /// timeline switch to the newest timeline in the archive; `current`
    /// stays on the backup's own timeline; a timeline ID (3, 0x3, or
    /// 00000003 as in WAL file names; written in decimal) follows the path
    /// from the backup's timeline to that one, through its .history file,
    /// and ignores timelines off that path. After a point-in-time recovery
    /// that went too far, the archive holds both histories: restore the
    /// backup again with `--target-timeline 1` to follow the original
    /// timeline past the fork, or with the new timeline's ID to follow the
    /// recovered one. The WAL check follows the same path; a timeline that
    /// does not descend from the backup's, or whose .history file the
    /// archive lacks, is refused before anything is written
    #[arg(long = "target-timeline", value_name = "current|latest|TLI")]
    pub target_timeline: Option<String>,

    /// Stop just before the target instead of just after it
    /// (recovery_target_inclusive = off); for time, LSN and xid targets
    #[arg(long = "exclusive")]
    pub exclusive: bool,

    /// Write standby.signal instead of recovery.signal: the server keeps
    /// following the archive as a standby
    #[arg(long = "standby")]
    pub standby: bool,

    /// Put tablespace OID in DIR instead of its original location
    /// (repeatable)
    #[arg(long = "tablespace-map", value_name = "OID=DIR")]
    pub tablespace_map: Vec<String>,

    /// Physical: owner of the restored files; by default the owner of the
    /// data directory's parent directory
    #[arg(long = "owner", value_name = "USER")]
    pub owner: Option<String>,

    /// Physical: empty a non-empty data directory first (never while a
    /// postmaster runs there)
    #[arg(long = "force")]
    pub force: bool,

    /// Print the plan as records and change nothing (every file must still
    /// be there with its recorded size, as for a restore: a file of another
    /// size gives `ok: false` and exit status 1)
    #[arg(long = "dry-run")]
    pub dry_run: bool,

    /// Logical: the database to restore into, a name or a connection string
    /// (default: the dump's own database name; PGDATABASE is not used)
    #[arg(short = 'd', long = "dbname", value_name = "DBNAME")]
    pub dbname: Option<String>,

    #[command(flatten)]
    pub conn: ConnArgs,

    /// Logical: create the target database first (it must not exist)
    #[arg(short = 'C', long = "create-database")]
    pub create_database: bool,

    /// Logical: parallel jobs for pg_restore
    #[arg(short = 'j', long = "jobs", value_name = "N", default_value_t = 2)]
    pub jobs: u32,

    /// Logical: do not restore ownership (pg_restore --no-owner)
    #[arg(short = 'O', long = "no-owner")]
    pub no_owner: bool,

    /// Logical: restore only this table, NAME or SCHEMA.NAME ("quoted" parts
    /// as in SQL; repeatable; qualified names all of one schema). Becomes
    /// pg_restore -n SCHEMA -t NAME; a name the dump does not hold is an
    /// error before anything is restored
    #[arg(short = 't', long = "table", value_name = "NAME")]
    pub table: Vec<String>,

    /// Logical: restore only this schema (repeatable; pg_restore -n)
    #[arg(short = 'n', long = "schema", value_name = "NAME")]
    pub schema: Vec<String>,

    /// Logical: skip the globals (roles) even when the set has them
    #[arg(long = "no-globals")]
    pub no_globals: bool,

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
Point-in-time recovery to just before a bad DELETE, from the newest backup that reaches it:
.PP
.nf
.RS 4
pgb\-restore \-\-repo /srv/backups/pg \-\-select reach \-\-cluster main \\
  \-\-target\-time '2026\-11\-21 10:14:00+00' \-\-wal\-archive /srv/wal\-archive \\
  \-D /var/lib/postgresql/15/main \-\-force
pg_ctlcluster 15 main start
.RE
.fi
.PP
An encrypted backup, to a restore point, with a tablespace relocated; see the plan first:
.PP
.nf
.RS 4
pgb\-restore \-\-repo /srv/backups/pg \-i /etc/pgb/identity.txt \\
  \-\-target\-name before_upgrade \-\-wal\-archive /srv/wal\-archive \\
  \-\-tablespace\-map 16384=/srv/ts \-D /srv/pg/restored \-\-dry\-run
.RE
.fi
.PP
An encrypted backup and a WAL archive pushed encrypted (pgb\-wal push \-R): root decrypts the backup with its key, the server's restore_command with the postgres user's own copy (refused unless owned by postgres, mode 0600):
.PP
.nf
.RS 4
install \-d \-o postgres \-m 700 /var/lib/postgresql/.pgb
install \-o postgres \-m 600 /root/pgb/identity.txt \\
  /var/lib/postgresql/.pgb/wal.key
pgb\-restore \-\-repo /srv/backups/pg \-i /root/pgb/identity.txt \\
  \-\-wal\-archive /srv/wal\-archive \\
  \-\-wal\-identity /var/lib/postgresql/.pgb/wal.key \\
  \-\-target\-time '2026\-11\-21 10:14:00+00' \-D /srv/pg/restored
.RE
.fi
.PP
A point-in-time recovery went too far and the restored server, promoted to timeline 2, has been archiving into the same archive; go back along the original timeline 1, past the fork (\-\-target\-timeline 2 or latest follows the recovered one):
.PP
.nf
.RS 4
pgb\-restore \-\-repo /srv/backups/pg \-\-target\-timeline 1 \\
  \-\-target\-time '2026\-11\-21 10:20:00+00' \\
  \-\-wal\-archive /srv/wal\-archive \-D /var/lib/postgresql/15/main \-\-force
.RE
.fi
.PP
A database and its roles into another server, four jobs:
.PP
.nf
.RS 4
pgb\-restore \-\-repo /srv/backups/pg \-\-database appdb \\
  \-h db2 \-U postgres \-\-create\-database \-j 4
.RE
.fi
.PP
When the archive lacks WAL between the backup and the target, nothing is written and the missing segments are named; exit status 2.
"#;
