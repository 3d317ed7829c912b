//! Command-line interface of pgb-ship. Uses only clap, std and pgb_common,
//! so the man-page generator can include it.

use std::path::PathBuf;

use clap::Parser;

/// Copy artifacts to other disks, SSH hosts and S3-compatible object
/// storage, verify every copy, record it, and check the 3-2-1 rule.
///
/// Reads pgb.v1 artifact records on stdin (or the sidecars of a repository
/// with --repo) and copies each artifact's files to every --to destination,
/// in parallel, keeping the artifact's repository-relative path
/// (DEST/PATH). Each copy is atomic (a temp name then a rename that never
/// replaces; an S3 multipart upload completed only when whole) and verified
/// against the record's checksums before it counts: a directory copy is
/// read back (see --verify), an SSH host computes sha256sum of the file,
/// an S3 object is read back. Every source file is hashed as it is read and
/// must match the record, so a damaged artifact is never shipped. An identical copy already there is success; a
/// different one is an error and is kept. Each copy is added to the
/// artifact's `copies` (to, url, media, site, files, verified, when); the
/// updated record is merged into the local sidecar and into the sidecar
/// beside every copy, then printed. The sidecar is the source of truth: a
/// record on stdin (an old one replayed, too) is merged with it, so copies
/// and verifications recorded since are kept and count for --require (see
/// pgb(7)). When a destination fails the others still complete, and
/// the artifact comes out as an error record naming the destination that
/// failed (exit 2). A directory destination must exist (an unmounted
/// disk is a failed destination, not a new directory on the root file
/// system); it is locked like a repository while pgb-ship runs, and temp
/// files left there by killed runs are removed. An SSH host has no lock
/// pgb can take: a temp left by a run killed between upload and publish is
/// removed by the next upload to its directory once it has stood unchanged
/// for an hour. An S3 multipart upload that was never completed stays
/// invisible but billed until a bucket lifecycle rule
/// (AbortIncompleteMultipartUpload) removes it; set one. Records it does not
/// act on pass through untouched; error records are forwarded and make the
/// exit status 2.
#[derive(Parser, Debug)]
#[command(name = "pgb-ship", version, disable_help_flag = true)]
pub struct Args {
    /// Destination, repeatable: a directory, ssh://[user@]host[:port]/path
    /// or s3://bucket[/prefix], optionally followed by #LABELS, where LABELS
    /// is media=NAME,site=NAME (e.g. /mnt/nas/pg#media=nas or
    /// s3://pgb-backups/pg#media=s3,site=offsite). The form DEST:media=...,site=...
    /// is accepted too. Without labels a directory's media is `local`, an
    /// SSH host's `ssh`, a bucket's `object-storage`; the site is `onsite`
    #[arg(long = "to", value_name = "DEST[#LABELS]", required = true)]
    pub to: Vec<String>,

    /// Ship the artifacts of this repository (their .pgb.json sidecars)
    /// instead of reading records on stdin; the records' repo is DIR (a repository moved or copied elsewhere is read where it lies)
    #[arg(long = "repo", value_name = "DIR")]
    pub repo: Option<PathBuf>,

    /// Exit 1 unless every artifact now meets the policy: `3-2-1` means at
    /// least 3 copies counting the original, on at least 2 kinds of media,
    /// at least 1 of them offsite (site=offsite). The verdict is recorded in
    /// the artifact's `policy` field, naming each rule that failed. An
    /// incremental backup meets it only when every member of its chain does
    /// (their copies as their sidecars record them, so ship a chain oldest
    /// first, as --repo does); a member that does not is named, and
    /// `policy.chain` lists the members
    #[arg(long = "require", value_name = "POLICY", value_parser = ["3-2-1"])]
    pub require: Option<String>,

    /// Media label of the original (the repository) for --require
    #[arg(long = "media", value_name = "NAME", default_value = "local")]
    pub media: String,

    /// Site label of the original (the repository) for --require
    #[arg(long = "site", value_name = "NAME", default_value = "onsite")]
    pub site: String,

    /// Option for ssh, as `ssh -o` takes it (repeatable), e.g.
    /// `IdentityFile=/etc/pgb/ship_key` or
    /// `UserKnownHostsFile=/etc/pgb/known_hosts`. BatchMode=yes is always
    /// set: only key authentication, never a password prompt
    #[arg(long = "ssh-option", value_name = "OPTION")]
    pub ssh_option: Vec<String>,

    /// S3 endpoint URL (default: AWS_ENDPOINT_URL, else AWS). Plain http is
    /// allowed only for loopback endpoints (or with PGB_S3_ALLOW_HTTP set)
    #[arg(long = "s3-endpoint", value_name = "URL")]
    pub s3_endpoint: Option<String>,

    /// S3 region (default: AWS_REGION or AWS_DEFAULT_REGION)
    #[arg(long = "s3-region", value_name = "REGION")]
    pub s3_region: Option<String>,

    /// How a copy in a directory is checked before it counts. `cache` (the
    /// default): the source is hashed with sha256 as it is read and must
    /// match the record's size and sha256 (a damaged artifact is never
    /// shipped); the copy is written and fsynced, and each range of it,
    /// once completely written, is read back through the page cache (the
    /// last after fsync) and its blake3 must match the record's. Nothing
    /// writes a range after it is read back, so this proves that the bytes
    /// the kernel accepted and fsynced are the recorded ones: it catches
    /// truncation, a wrong or changed file, copy bugs and write errors
    /// reported by the kernel, but not a device that returns other bytes
    /// than it was given, since the pages read are the ones written. The
    /// sha256 in the copy's record is the one computed from the source.
    /// Recorded as verified "readback". `disk`: after fsync the copy is
    /// re-read from the device, bypassing the page cache (O_DIRECT, or its
    /// cached pages dropped where O_DIRECT is unavailable, e.g. tmpfs), and
    /// both sha256 and blake3 must match the record: this also proves the
    /// device returned the bytes (short of a cache in the device itself), at
    /// the cost of a second full read from it. Recorded as
    /// "readback-disk". A copy already there is re-read whole, through the
    /// page cache (`cache`) or from the device (`disk`), and counts only when
    /// its size, sha256 and blake3 match. SSH and S3 destinations have their
    /// own checks and ignore this
    #[arg(
        long = "verify",
        value_name = "HOW",
        value_parser = ["cache", "disk"],
        default_value = "cache"
    )]
    pub verify: String,

    /// Wait up to this many seconds for the lock of a directory destination
    /// (its .pgb.lock, shared with the other pgb writers) held by another
    /// run, instead of exiting with status 3 at once
    #[arg(long = "lock-wait", value_name = "SECONDS")]
    pub lock_wait: Option<u64>,

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
Take a dump, copy it to a NAS and an offsite bucket, and insist on 3\-2\-1:
.PP
.nf
.RS 4
set \-o pipefail
pgb\-snapshot \-d appdb \-o /srv/backups/pg \\
  | pgb\-ship \-\-to '/mnt/nas/pg#media=nas' \\
      \-\-to 's3://pgb-backups/pg#media=s3,site=offsite' \-\-require 3\-2\-1
.RE
.fi
.PP
Copy a whole repository to a backup host with a dedicated key (copies
already there are checked, not copied again):
.PP
.nf
.RS 4
pgb\-ship \-\-repo /srv/backups/pg \\
  \-\-to 'ssh://pgb@backup1.example.net/srv/pg#media=disk,site=offsite' \\
  \-\-ssh\-option IdentityFile=/etc/pgb/ship_key
.RE
.fi
.PP
A destination that fails is named on stderr and in the error record that
replaces the artifact; the copies that succeeded are recorded in its
sidecar.
"#;

/// The ENVIRONMENT section of the man page, in roff.
#[allow(dead_code)]
pub const ENVIRONMENT: &str = r#".TP
\fBAWS_ACCESS_KEY_ID\fR, \fBAWS_SECRET_ACCESS_KEY\fR, \fBAWS_SESSION_TOKEN\fR
Credentials for s3:// destinations. They are read from the environment only
and never appear in arguments, records or messages.
.TP
\fBAWS_ENDPOINT_URL\fR, \fBAWS_REGION\fR, \fBAWS_DEFAULT_REGION\fR
Endpoint and region for s3:// destinations (\-\-s3\-endpoint and
\-\-s3\-region override them).
.TP
\fBPGB_S3_ALLOW_HTTP\fR
Allow a plain http:// endpoint that is not on the loopback interface.
.TP
\fBPGB_SSH_OPTIONS\fR
Extra arguments for ssh, separated by white space (e.g. \fB\-i /etc/pgb/key
\-o UserKnownHostsFile=/etc/pgb/known_hosts\fR); also used by pgb\-verify and
pgb\-prune when they reach copies.
.TP
\fBNO_COLOR\fR, \fBPGB_NO_PROGRESS\fR, \fBTERM\fR=dumb
No progress line on stderr even when it is a terminal. Otherwise one is drawn there, at most ten times a second, with the bytes done and, where known or estimated, the total, percent and ETA; never when stderr is a file or a pipe.
"#;
