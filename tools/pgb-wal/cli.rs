//! Command-line interface of pgb-wal. Uses only clap, std and pgb_common,
//! so the man-page generator can include it.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Archive and fetch WAL durably: PostgreSQL's archive_command and
/// restore_command.
///
/// `push` copies a WAL segment (or a .history, .backup or .partial file)
/// into one or more archive directories: written under a temp name in the
/// same directory, fsynced, renamed without replacing, and the directory
/// fsynced; it exits 0 only once the file is durable in every archive. A
/// file already archived with identical content (compared after
/// decompression) is fsynced again and counts as success; different
/// content is an error and the archived file is kept. `get` fetches a file
/// from the first archive holding it (plain or .zst), decompressing it to a
/// temp name next to the destination and renaming it into place; it exits 1
/// when no archive holds the file, which ends recovery normally, and 2 on a
/// real failure (an unreadable or missing archive directory, a corrupt
/// file), with the reason on stderr, which PostgreSQL writes to its log.
#[derive(Parser, Debug)]
#[command(
    name = "pgb-wal",
    version,
    after_help = "archive_command = 'pgb-wal push %p --archive /srv/wal-archive'\n\
                  restore_command = 'pgb-wal get %f %p --archive /srv/wal-archive'\n\
                  See pgb-wal(1)."
)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Archive one WAL file (archive_command: pgb-wal push %p --archive DIR)
    Push(PushArgs),
    /// Fetch one WAL file (restore_command: pgb-wal get %f %p --archive DIR)
    Get(GetArgs),
}

#[derive(Parser, Debug)]
pub struct PushArgs {
    /// The file to archive: PostgreSQL's %p (relative to the data
    /// directory, where the archiver runs)
    #[arg(value_name = "SEGMENT_PATH")]
    pub path: PathBuf,

    /// Archive directory (repeatable: the file is made durable in every
    /// one before the exit status is 0). It must exist: a missing directory
    /// (an unmounted disk) is an error, never created
    #[arg(long = "archive", value_name = "DIR", required = true)]
    pub archive: Vec<PathBuf>,

    /// Compress segments and .partial files: zstd[:LEVEL] (stored as
    /// NAME.zst) or none; .history and .backup files are never compressed
    #[arg(
        short = 'Z',
        long = "compress",
        value_name = "METHOD[:LEVEL]",
        default_value = "none"
    )]
    pub compress: String,
}

#[derive(Parser, Debug)]
pub struct GetArgs {
    /// The WAL file name wanted: PostgreSQL's %f
    #[arg(value_name = "WALFILE")]
    pub name: String,

    /// Where to put it: PostgreSQL's %p
    #[arg(value_name = "DEST_PATH")]
    pub dest: PathBuf,

    /// Archive directory to look in (repeatable: searched in order)
    #[arg(long = "archive", value_name = "DIR", required = true)]
    pub archive: Vec<PathBuf>,
}

/// The EXAMPLES section of the man page, in roff.
#[allow(dead_code)]
pub const EXAMPLES: &str = r#".PP
In postgresql.conf, archive into a local directory and a mounted NAS, compressed:
.PP
.nf
.RS 4
archive_mode = on
archive_command = 'pgb\-wal push %p \-\-archive /srv/wal\-archive \-\-archive /mnt/nas/wal \-Z zstd'
.RE
.fi
.PP
For a restore or a standby (plain and .zst files are both found):
.PP
.nf
.RS 4
restore_command = 'pgb\-wal get %f %p \-\-archive /srv/wal\-archive \-\-archive /mnt/nas/wal'
.RE
.fi
.PP
Exit status of \fBget\fR: 0 fetched; 1 the file is in no archive (PostgreSQL ends recovery, or keeps streaming, as with any restore_command reporting a missing file); 2 a real failure (a missing or unreadable archive directory, a corrupt compressed file), with the reason on stderr. PostgreSQL itself treats every exit status from 1 to 125 alike, as "not in the archive", and aborts recovery only on a status above 125 or a signal: after a restore, look for \fBpgb\-wal\fR messages in the server log, and check the archive with \fBpgb\-check\-archive\fR(1) before restoring from it.
.PP
Exit status of \fBpush\fR: 0 only once the file is durable in every archive; 2 otherwise, including when an archive already holds a file of that name with different content (the archived file is kept; PostgreSQL retries and logs the message). A push killed at any moment leaves at most a hidden temp file (.NAME.pgb\-tmp.PID.N), never a partial file under the final name.
.PP
Check the archive afterwards with \fBpgb\-check\-archive\fR(1).
"#;
