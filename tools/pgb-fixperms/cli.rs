//! Command-line interface of pgb-fixperms. Uses only clap, std and
//! pgb_common, so the man-page generator can include it.

use std::path::PathBuf;

use clap::Parser;

/// Repair the ownership and modes of a PostgreSQL data directory, its
/// tablespaces, or a backup repository, safely, as root.
///
/// Given a data directory (it has PG_VERSION), every directory becomes 0700
/// and every file 0600, owned by the cluster owner; when the cluster uses
/// group access (the data directory's own mode has g+rx, as PostgreSQL
/// decides it, or --group-access) 0750 and 0640. The pg_wal symlink and the
/// pg_tblspc/OID symlinks are followed, and only they, after their targets are
/// checked; the tablespace directories are repaired too. Given --repo DIR, a
/// backup repository becomes 0700/0600.
///
/// The walk goes by directory file descriptor and changes each entry through
/// a descriptor opened with O_NOFOLLOW and checked against what was listed, so
/// a user who controls the tree cannot redirect it with symlinks, hard links,
/// FIFOs, devices or a swapped directory. Symlinks are never followed (except
/// the allowlisted ones) and never chmodded; their own owner is set without
/// following them. Mount points are not crossed; FIFOs, sockets and devices
/// are reported, never opened; files with several hard links are refused.
///
/// Every change is printed as one pgb.v1 JSON record on stdout ("type":
/// "fixperms", "path", "what": "owner" or "mode", "from", "to"); --check
/// prints the changes it would make and changes nothing. On a terminal
/// each change is a line (owner root:root -> postgres:postgres PATH),
/// then how many there were; --json prints the records there too.
#[derive(Parser, Debug)]
#[command(
    name = "pgb-fixperms",
    version,
    disable_help_flag = true,
    group(clap::ArgGroup::new("target").required(true).args(["dir", "repo"])),
    after_help = "Refuses /, home directories and their parents, system directories, anything that is\n\
                  neither a data directory nor given with --repo, and a data directory a live postmaster\n\
                  runs on. See pgb-fixperms(1)."
)]
pub struct Args {
    /// The data directory (PGDATA) to repair, or with --repo a backup repository
    #[arg(value_name = "PGDATA")]
    pub dir: Option<PathBuf>,

    /// Repair this backup repository instead of a data directory: directories
    /// 0700, files 0600
    #[arg(long = "repo", value_name = "DIR", conflicts_with = "dir")]
    pub repo: Option<PathBuf>,

    /// Owner and group to give everything [default: postgres and its primary
    /// group]; names or numeric ids; USER alone means USER's primary group
    #[arg(long = "owner", value_name = "USER[:GROUP]")]
    pub owner: Option<String>,

    /// Use the group-access modes 0750/0640 whatever the data directory's mode
    /// says
    #[arg(long = "group-access", conflicts_with_all = ["no_group_access", "repo"])]
    pub group_access: bool,

    /// Use 0700/0600 whatever the data directory's mode says (a data
    /// directory restored as root with umask 022 looks like group access)
    #[arg(long = "no-group-access", conflicts_with = "repo")]
    pub no_group_access: bool,

    /// Dry run: print every change that is needed, change nothing; exit 1 when
    /// any is needed
    #[arg(long = "check", visible_alias = "dry-run")]
    pub check: bool,

    /// Accept regular files with more than one hard link (clusters upgraded
    /// with pg_upgrade --link have them); by default they are refused, since a
    /// hard link may lead to a file outside the tree
    #[arg(long = "allow-hardlinks")]
    pub allow_hardlinks: bool,

    /// Work even though postmaster.pid names a live process (a stale pid file
    /// whose number was reused); never use it on a running cluster
    #[arg(long = "force")]
    pub force: bool,

    /// Worker threads [default: the number of CPUs, at most 8]
    #[arg(short = 'j', long = "jobs", value_name = "N")]
    pub jobs: Option<usize>,

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
See what a data directory restored as root needs, then repair it and start the cluster:
.PP
.nf
.RS 4
pgb\-fixperms \-\-check /var/lib/postgresql/15/main
pgb\-fixperms /var/lib/postgresql/15/main
pg_ctlcluster 15 main start
.RE
.fi
.PP
A cluster run by another account, with group access kept for a backup group:
.PP
.nf
.RS 4
pgb\-fixperms \-\-owner pgsql:pgbackup \-\-group\-access /srv/pgsql/data
.RE
.fi
.PP
A backup repository, after files were copied in by root:
.PP
.nf
.RS 4
pgb\-fixperms \-\-repo /srv/backups/pg \-\-owner backup
.RE
.fi
.PP
A cluster upgraded with pg_upgrade \-\-link shares files with the old one:
.PP
.nf
.RS 4
pgb\-fixperms \-\-allow\-hardlinks /var/lib/postgresql/16/main
.RE
.fi
.PP
In Ansible or cron, fail when a repair was needed and keep the list of changes:
.PP
.nf
.RS 4
pgb\-fixperms \-\-check /var/lib/postgresql/15/main > /var/log/pgb/fixperms.jsonl
.RE
.fi
.PP
Each change is one record, one line (wrapped here), for example:
.PP
.nf
.RS 4
{"schema":"pgb.v1","type":"fixperms","path":"/var/lib/postgresql/15/main/base",
 "what":"owner","from":"root:root","to":"postgres:postgres"}
{"schema":"pgb.v1","type":"fixperms","path":"/var/lib/postgresql/15/main/base",
 "what":"mode","from":"0755","to":"0700"}
.RE
.fi
.PP
A refused entry (a FIFO, a device, a socket, a mount point, a hard\-linked file, an entry swapped during the walk, a symlink target that fails its checks) is left alone, named on stderr and in a \fB"type": "error"\fR record with its \fBpath\fR, and the run exits 2 after repairing everything else.
.PP
The pg_wal symlink is followed only to an absolute, existing directory outside the data directory that holds archive_status; a pg_tblspc/OID symlink only to one that holds a PG_MAJOR_ directory of the cluster's version. Neither may be /, a system directory, a home directory or a parent of one, or a parent of the data directory, and the target must belong to the cluster's owner or to root (what a restore as root leaves); one owned by another account is not taken over. Those targets, and a pg_wal directory that is a mount point, may be other file systems; no other mount point is crossed, bind mounts of the same file system included (told apart by their mount ID, statx STATX_MNT_ID, since they share the device number).
"#;
