//! Command-line interface of pgb-encrypt. Uses only clap, std and
//! pgb_common, so the man-page generator can include it.

use std::path::PathBuf;

use clap::Parser;

/// Encrypt backup artifacts with age, and decrypt them back.
///
/// Reads pgb.v1 artifact records on stdin (or the sidecars of a repository
/// with --repo) and encrypts every file of each artifact to the given
/// recipients, file by file, streaming: the plaintext's size and blake3 are
/// re-checked against the record as it is read (a corrupted artifact is never
/// encrypted), the ciphertext is written under a temp name, hashed (sha256,
/// blake3) on the way, fsynced and renamed to NAME.age. The record's `files`
/// then describe the ciphertext and its `encryption` keeps the scheme, the
/// recipients' fingerprints and the plaintext files; a single-file artifact's
/// `path` gains `.age` and gets its own sidecar, a physical backup keeps its
/// directory and sidecar. A sidecar that is there already is merged with
/// the new record, never replaced, and a record on stdin (an old one
/// replayed, too) is merged with its sidecar first: no copy or verification
/// recorded there is lost (see pgb(7)). Artifacts already encrypted, other
/// records and error records pass through untouched.
///
/// With -d, encrypted artifacts are decrypted back beside their ciphertext,
/// each plaintext file checked against the recorded size and blake3 before
/// it is published, and the record printed in its plaintext form.
///
/// With --file, one file is encrypted or decrypted as the age command does,
/// without records. The output is readable by `age -d`, and files made by
/// `age -r` decrypt with -d.
#[derive(Parser, Debug)]
#[command(
    name = "pgb-encrypt",
    version,
    disable_help_flag = true,
    after_help = "Recipients: age1... (age-keygen -y) or ssh-ed25519/ssh-rsa public keys.\n\
                  Identities: age identity files or unencrypted OpenSSH private keys, mode 0600, owned by the running user.\n\
                  See pgb-encrypt(1) and pgb(7) for the record fields."
)]
pub struct Args {
    /// Encrypt to this recipient: an age public key (age1...) or an SSH
    /// public key line (repeatable)
    #[arg(short = 'r', long = "recipient", value_name = "RECIPIENT")]
    pub recipient: Vec<String>,

    /// Encrypt to the recipients listed in this file, one per line, `#`
    /// comments allowed; a file without any recipient is refused (repeatable)
    #[arg(short = 'R', long = "recipients-file", value_name = "FILE")]
    pub recipients_file: Vec<PathBuf>,

    /// Decrypt instead of encrypt
    #[arg(short = 'd', long = "decrypt", conflicts_with_all = ["recipient", "recipients_file", "remove_plaintext"])]
    pub decrypt: bool,

    /// Decrypt with the identities in this file: age identities
    /// (AGE-SECRET-KEY-1...) or an unencrypted OpenSSH private key; refused
    /// when readable by group or others or owned by another user (repeatable)
    #[arg(
        short = 'i',
        long = "identity",
        value_name = "FILE",
        requires = "decrypt"
    )]
    pub identity: Vec<PathBuf>,

    /// Act on the artifacts of this repository (their .pgb.json sidecars)
    /// instead of reading records on stdin; the records' repo is DIR (a repository moved or copied elsewhere is read where it lies)
    #[arg(long = "repo", value_name = "DIR", conflicts_with = "file")]
    pub repo: Option<PathBuf>,

    /// After an artifact's ciphertext is fsynced and its checksums are
    /// recorded in its sidecar, delete its plaintext files (and, for a
    /// single-file artifact, the plaintext's sidecar). For an artifact
    /// already encrypted, plaintext left beside it is deleted once the
    /// ciphertext is re-read and matches its record
    #[arg(long = "remove-plaintext", conflicts_with = "file")]
    pub remove_plaintext: bool,

    /// Encrypt (or with -d decrypt) this one file instead of artifacts, like
    /// the age command; `-` reads stdin
    #[arg(long = "file", value_name = "IN")]
    pub file: Option<PathBuf>,

    /// With --file: write here, atomically (temp name, fsync, rename; an
    /// existing file is never replaced); `-` writes to stdout [default:
    /// IN.age when encrypting, IN without .age when decrypting]
    #[arg(short = 'o', long = "output", value_name = "OUT", requires = "file")]
    pub output: Option<PathBuf>,

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
Take a dump, encrypt it to the recipients of a file, keep only the ciphertext:
.PP
.nf
.RS 4
set \-o pipefail
pgb\-snapshot \-d appdb \-\-globals \-o /srv/backups/pg \\
  | pgb\-encrypt \-R /etc/pgb/recipients.txt \-\-remove\-plaintext \\
  | pgb\-ship \-\-to /mnt/nas/pg:media=nas
.RE
.fi
.PP
Encrypt everything in a repository that is not encrypted yet (already
encrypted artifacts pass through):
.PP
.nf
.RS 4
pgb\-encrypt \-\-repo /srv/backups/pg \\
  \-r age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p
.RE
.fi
.PP
Decrypt one file by hand, as \fBage \-d\fR would (an SSH key works too):
.PP
.nf
.RS 4
pgb\-encrypt \-d \-i ~/.config/pgb/backup.key \\
  \-\-file appdb\-20261121T020000Z.dump.zst.age \-o \- \\
  | zstd \-dc | pg_restore \-d appdb
.RE
.fi
.PP
The reference \fBage\fR command reads what pgb\-encrypt writes, and the other
way round:
.PP
.nf
.RS 4
age \-d \-i backup.key \-o base.tar.zst base.tar.zst.age
age \-R ~/.ssh/id_ed25519.pub \-o notes.txt.age notes.txt
pgb\-encrypt \-d \-i ~/.ssh/id_ed25519 \-\-file notes.txt.age \-o notes.txt
.RE
.fi
.PP
Nothing is ever published under a final name unless it is complete: a wrong
identity, a truncated or altered ciphertext, or plaintext that no longer
matches its recorded checksums is an error, the temp file is removed, and the
artifact becomes an \fBerror\fR record. With \fB\-o \-\fR the plaintext is
streamed to stdout as it is authenticated, chunk by chunk, so a consumer may
have read part of it before a late error; check the exit status.
"#;

/// The ENVIRONMENT section of the man page, in roff.
#[allow(dead_code)]
pub const ENVIRONMENT: &str = r#".TP
\fBNO_COLOR\fR, \fBPGB_NO_PROGRESS\fR, \fBTERM\fR=dumb
No progress line on stderr even when it is a terminal. Otherwise one is drawn there, at most ten times a second, with the bytes done and, where known or estimated, the total, percent and ETA; never when stderr is a file or a pipe.
"#;
