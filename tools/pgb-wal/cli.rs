//! Command-line interface of pgb-wal. Uses only clap, std and pgb_common,
//! so the man-page generator can include it.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Archive and fetch WAL durably: PostgreSQL's archive_command and
/// restore_command.
///
/// `push` copies a WAL segment (or a .history, .backup or .partial file)
/// into one or more archives: directories, SSH hosts
/// (ssh://[user@]host[:port]/path) and S3-compatible buckets
/// (s3://bucket/prefix). In a directory it is written under a temp name in
/// the same directory, fsynced, renamed without replacing, and the
/// directory fsynced; on an SSH host it streams into a temp name, is synced
/// and checked there, then linked to its final name (never replacing); in
/// S3 it is one PUT with If-None-Match (or a multipart upload completed
/// only whole), read back and checked. It exits 0 only once the file is
/// durable in every archive. A
/// file already archived with identical content (compared after
/// decompression) is fsynced again and counts as success; different
/// content is an error and the archived file is kept. Segments may be
/// compressed (NAME.zst) and encrypted with age (NAME.age, NAME.zst.age).
/// Every archived file gets a checksum file, NAME.sha256 (sha256 and
/// blake3), written before the file appears. `get` fetches a file from the first archive holding
/// it (an archive that cannot be asked is skipped with a message), decrypting and decompressing it to a temp name next to the
/// destination, compares it with NAME.sha256 as it streams, checks a
/// segment's size and first page header, and only then renames it into
/// place; it exits 1 when no archive holds the file, which ends recovery
/// normally, and 255 on a real failure (a checksum mismatch included, or
/// no archive holding it while one could not be asked), which makes
/// PostgreSQL stop instead of ending recovery early.
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

    /// Archive: a directory, ssh://[user@]host[:port]/path or
    /// s3://bucket/prefix (repeatable: the file is made durable in every
    /// one before the exit status is 0). A directory or the SSH host's
    /// directory must exist: a missing one (an unmounted disk) is an error,
    /// never created. S3 is configured by AWS_ENDPOINT_URL, AWS_REGION,
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or AWS_PROFILE; SSH uses
    /// the system ssh (BatchMode, keys and ~/.ssh/config; more arguments in
    /// PGB_SSH_OPTIONS)
    #[arg(long = "archive", value_name = "ARCHIVE", required = true)]
    pub archive: Vec<String>,

    /// Compress segments and .partial files: zstd[:LEVEL] (stored as
    /// NAME.zst) or none; .history and .backup files are never compressed
    #[arg(
        short = 'Z',
        long = "compress",
        value_name = "METHOD[:LEVEL]",
        default_value = "none"
    )]
    pub compress: String,

    /// Encrypt segments and .partial files to this age recipient (age1...,
    /// ssh-ed25519 or ssh-rsa public key; repeatable). Stored as NAME.age
    /// or NAME.zst.age; NAME.sha256 beside it holds the sha256 and blake3
    /// of the plaintext and of the stored file, so an identical re-push
    /// (PostgreSQL retrying after a crash) is recognised without the
    /// private key. .history and .backup files stay plaintext, so
    /// pgb-check-archive can follow timelines without a key
    #[arg(short = 'r', long = "recipient", value_name = "RECIPIENT")]
    pub recipient: Vec<String>,

    /// Encrypt to the recipients listed in FILE, one per line (repeatable;
    /// a file without recipients is refused, never a fallback to plaintext)
    #[arg(short = 'R', long = "recipients-file", value_name = "FILE")]
    pub recipients_file: Vec<PathBuf>,

    /// Identity file used only to compare a re-pushed segment with an
    /// encrypted one whose NAME.sha256 is missing or does not describe it
    /// (repeatable; mode 0600, owned by the running user). Without it such a
    /// re-push fails and the archived file is kept
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    pub identity: Vec<PathBuf>,

    /// Wait at most SECONDS for another push into the same archive (each
    /// push holds DIR/.pgb.lock, and removes the temp files a killed push
    /// left behind); exit 3 when it stays held
    #[arg(long = "lock-wait", value_name = "SECONDS", default_value_t = 60)]
    pub lock_wait: u64,
}

#[derive(Parser, Debug)]
pub struct GetArgs {
    /// The WAL file name wanted: PostgreSQL's %f
    #[arg(value_name = "WALFILE")]
    pub name: String,

    /// Where to put it: PostgreSQL's %p
    #[arg(value_name = "DEST_PATH")]
    pub dest: PathBuf,

    /// Archive to look in: a directory, ssh://[user@]host[:port]/path or
    /// s3://bucket/prefix (repeatable: searched in order; NAME, NAME.zst,
    /// NAME.age and NAME.zst.age are looked for in each). An archive that
    /// cannot be asked (a host down, a missing directory) is skipped with a
    /// message; when none holds the file and one was skipped, the exit
    /// status is 255, since the file may be there. A copy that fails its
    /// checks (damaged, undecryptable) is passed over, named on stderr,
    /// for the next archive's; 255 when no archive holds a good one
    #[arg(long = "archive", value_name = "ARCHIVE", required = true)]
    pub archive: Vec<String>,

    /// Identity file to decrypt .age files (repeatable; mode 0600, owned by
    /// the running user). The decrypted segment is checked against the
    /// NAME.sha256 written at push time (its blake3 lines, or sha256 in one
    /// written by an older pgb-wal), as every fetched file is
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    pub identity: Vec<PathBuf>,

    /// Exit 2 instead of 255 on a real failure. PostgreSQL then treats the
    /// failure like a missing file: a standby falls back to streaming and
    /// retries later, but a point-in-time recovery ends (and promotes) at
    /// that segment. Only for standbys that also stream
    #[arg(long = "soft-fail")]
    pub soft_fail: bool,
}

/// The EXAMPLES section of the man page, in roff.
#[allow(dead_code)]
pub const EXAMPLES: &str = r#".PP
In postgresql.conf, archive into a local directory, compressed:
.PP
.nf
.RS 4
archive_mode = on
archive_command = 'pgb\-wal push %p \-\-archive /srv/wal \-Z zstd'
.RE
.fi
.PP
Into a local directory and a mounted NAS, set from the shell (a value in postgresql.conf cannot go on over two lines; the shell joins these):
.PP
.nf
.RS 4
psql \-U postgres \-c "ALTER SYSTEM SET archive_command = \\
  'pgb\-wal push %p \-\-archive /srv/wal \-\-archive /mnt/nas/wal \-Z zstd'"
.RE
.fi
.PP
Compressed and encrypted to the backup key (the server holds only the public key):
.PP
.nf
.RS 4
psql \-U postgres \-c "ALTER SYSTEM SET archive_command = \\
  'pgb\-wal push %p \-\-archive /srv/wal \-Z zstd \-R /etc/pgb/recipients.txt'"
.RE
.fi
.PP
Offsite as well: a local directory, an S3 bucket and an SSH host, compressed and encrypted; the push succeeds only once all three hold the segment (S3 settings from the environment PostgreSQL runs in, e.g. a systemd drop\-in with AWS_ENDPOINT_URL, AWS_REGION and AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; SSH through the postgres user's keys and ~/.ssh/config):
.PP
.nf
.RS 4
psql \-U postgres \-c "ALTER SYSTEM SET archive_command = \\
  'pgb\-wal push %p \-\-archive /srv/wal \\
  \-\-archive s3://pgb\-wal \\
  \-\-archive ssh://backup@backup1/srv/wal/main \\
  \-Z zstd \-R /etc/pgb/recipients.txt'\"
.RE
.fi
.PP
Recovering on a new host from S3 alone (or the SSH host alone):
.PP
.nf
.RS 4
restore_command = 'pgb\-wal get %f %p \-\-archive s3://pgb\-wal \-i /etc/pgb/key'
.RE
.fi
.PP
For a restore or a standby (plain, .zst, .age and .zst.age files are all found; \-i is needed only for encrypted ones, and must be readable by the server's user alone):
.PP
.nf
.RS 4
restore_command = 'pgb\-wal get %f %p \-\-archive /srv/wal \-i /etc/pgb/wal.key'
.RE
.fi
.SS "Exit status of get, and why it departs from the pgb table"
PostgreSQL reads a restore_command's exit status in three ways: 0, the file was restored; 1 to 125, the file is not in the archive, so recovery ends (a point\-in\-time restore promotes there) or a standby falls back to streaming; above 125, or killed by a signal, a real failure: the startup process stops with FATAL and the server does not start. A real failure reported as 1 or 2 would therefore end a point\-in\-time recovery early, at an unmounted archive or a corrupt segment, and promote a database silently missing everything after it. (pgBackRest and WAL\-G report most failures with statuses below 126; WAL\-G added a distinct status for "not found" for this reason.) So \fBget\fR exits:
.TP
\fB0\fR
The file was fetched, decoded and checked, and renamed into place.
.TP
\fB1\fR
Every archive answered, and none holds the file (in any of its four forms). This ends recovery normally.
.TP
\fB255\fR
A real failure, named on stderr (PostgreSQL writes it to its log): an archive directory missing or unreadable, a file that cannot be read, decompressed or decrypted (no \-i, wrong key, truncated or altered ciphertext), a file that does not match the NAME.sha256 written when it was pushed (a flipped byte, a truncation, bytes appended, a file swapped for another), a NAME.sha256 that is present but damaged, or a segment that is not the one asked for: zero\-filled, of the wrong size for the segment size its long page header carries, a bad page header, an xlp_pageaddr that does not match its name (a renamed segment), or, when run in a data directory as PostgreSQL runs it, a system identifier other than the one in global/pg_control. An archive that cannot be asked (a directory missing, an SSH host refusing or unreachable, an S3 endpoint down) is skipped with a message and the next one searched; when none of the others holds the file, the status is 255 too, since the file may be in the one that did not answer. A copy that fails any of these checks is named on stderr and the next archive's copy fetched instead; the status is 255 only when no archive holds one that passes. A mistyped command line is also 255. Nothing is written to the destination.
.TP
\fB2\fR
Instead of 255 with \fB\-\-soft\-fail\fR: for a standby that also streams, so that a bad archive makes it stream rather than stop. Never for a point\-in\-time restore.
.PP
The general table below holds for \fBpush\fR (and for \fBget\fR's \-\-help; \fBpgb\-wal \-\-version\fR prints the version).
.SS push
\fBpush\fR exits 0 only once the file is durable in every archive; 2 otherwise, including when an archive already holds a file of that name with different content (the archived file is kept; PostgreSQL retries and logs the message); 3 when another push into the same archive holds its lock longer than \-\-lock\-wait. A push killed at any moment leaves at most a hidden temp file (.NAME.pgb\-tmp.PID.N), never a partial file under the final name; the next push into that archive, holding its lock (DIR/.pgb.lock), removes it.
.PP
.SS "Remote archives"
An archive is a directory, \fBssh://[user@]host[:port]/path\fR or \fBs3://bucket/prefix\fR; every kind holds the same files (NAME, NAME.zst, NAME.age or NAME.zst.age, and NAME.sha256) and works with compression, encryption and checksums alike. \fBpush\fR encodes the file once for all remote archives (into a private temp file under TMPDIR), writes NAME.sha256, then creates the stored file where no file of that name is: on an SSH host a temp name beside it, synced, its sha256 computed there and compared, then \fBln\fR (which never replaces) and a sync of the directory; in S3 a HEAD, then a PUT with \fBIf\-None\-Match: *\fR, so that a server with conditional writes refuses to replace an object that appeared meanwhile (with a server that ignores the header, a concurrent writer of the same key between the HEAD and the PUT is not detected: a documented check\-then\-write), and the object read back and compared. A file already there is compared through NAME.sha256 (or by reading it back and decoding it): identical is success, different an error that keeps it. The SSH host needs a POSIX shell and GNU coreutils and findutils; its directory must exist. S3 is configured by AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (AWS_SESSION_TOKEN), or AWS_PROFILE with ~/.aws/credentials and ~/.aws/config; no secret is ever written to an argument, a record or a message. PGB_SSH_OPTIONS adds ssh arguments (e.g. \-i KEY, or \-o ControlMaster=auto \-o ControlPath=... \-o ControlPersist=60 to reuse one connection across pushes). A remote archive has no lock (a directory has DIR/.pgb.lock): PostgreSQL pushes one file at a time, and two servers must never push into the same archive.
.PP
.SS "Checksum files"
Every file \fBpush\fR archives (segments, .partial, .history and .backup files, in any form) gets a checksum file NAME.sha256 beside it, a small object of its own that any storage can hold, in sha256sum's format: the sha256 of the file as PostgreSQL wrote it, and for a file stored compressed or encrypted a second line with the sha256 of the stored file; then the blake3 of the same files, in lines that start with \fB#\fR, which sha256sum skips:
.PP
.nf
.RS 4
<sha256 of the segment>  000000010000000000000003
<sha256 of the stored file>  000000010000000000000003.zst.age
# blake3 <blake3 of the segment>  000000010000000000000003
# blake3 <blake3 of the stored file>  000000010000000000000003.zst.age
.RE
.fi
.PP
It is written, fsynced and renamed before the archived file is renamed into place, so a published file always has one. \fBget\fR hashes what it reads while it streams it to the temp file beside PostgreSQL's destination (a plain file in a directory is copied by the kernel, as cp does, and hashed where it was written, on a second thread), with blake3, a third of sha256's cost (sha256 in a checksum file without blake3 lines, written by an older pgb\-wal; nothing without a checksum file), and renames it into place only when the checksums of the stored file and of its content match (without an fsync: PostgreSQL fsyncs what it keeps of a restored file itself, and fetches again after a crash); on a mismatch it exits 255, so a point\-in\-time recovery stops at the damage instead of promoting there. A zstd frame or an age chunk proves only that a file decodes, and a page header check sees nothing of a byte changed in the middle of a segment: the checksum file is what catches those. A file with no checksum file (archived by another tool, or by an older pgb\-wal) is still served after the size and page header checks, unhashed; an identical re\-push records its checksums, and adds the blake3 lines to a checksum file without them. A malformed blake3 line makes the checksum file damaged, as a malformed sha256 line does. A checksum file that names another stored form than the one found (a file recompressed by hand) vouches for the content only. \fBpgb\-check\-archive\fR(1) verifies every file against it too, every checksum recorded. In the archive, \fBsha256sum \-c \-\-ignore\-missing NAME.sha256\fR checks a stored file by hand, and \fBsed \-n 's/^# blake3 //p' NAME.sha256 | b3sum \-c\fR its blake3 (for a compressed or encrypted file, whose plain NAME is not in the archive, add \fB| grep \-v 'NAME$'\fR before b3sum, or decode it to NAME first).
.PP
An encrypted segment is stored as NAME.age or NAME.zst.age. Its checksum file is written before the encrypted file is renamed into place, so a push that PostgreSQL repeats after a crash (the segment was archived but the success was never acknowledged) finds it and succeeds without the private key, as it must. Without it (removed, left behind by a copy of the archive that skipped it, or not describing the stored file) \fBpush\fR cannot tell identical from different: it fails, keeps the archived file, and says so, unless \fB\-i\fR lets it decrypt and compare (and then writes NAME.sha256 again). The checksum of the plaintext lets someone who can guess a whole segment confirm the guess; it reveals nothing else (pgb records keep plaintext checksums of encrypted artifacts likewise).
.PP
\&.history and .backup files are never compressed or encrypted: they hold timeline numbers, LSNs and labels, and pgb\-check\-archive follows timelines with them without a key.
.PP
Check the archive afterwards with \fBpgb\-check\-archive\fR(1).
"#;
