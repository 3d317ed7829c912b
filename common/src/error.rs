//! The one error type of the pgb tools. Messages read
//! `operation: path: cause`; the tool prefixes its own name when printing.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::exit::ExitStatus;

#[derive(Debug)]
pub enum Error {
    /// Bad usage: flags that contradict each other, a missing argument.
    Usage(String),
    /// An I/O operation failed on a path.
    Io {
        op: String,
        path: PathBuf,
        source: io::Error,
    },
    /// Bad input on a stream (stdin, a sidecar): names the source and line.
    Input {
        source: String,
        line: usize,
        msg: String,
    },
    /// A child program failed: its exit status and what it said on stderr.
    Child {
        program: String,
        what: String,
        status: String,
        stderr: String,
    },
    /// The repository lock is held by another run.
    Locked(PathBuf),
    /// A verdict, not a failure of the run: stored bytes differ from the
    /// checksums recorded when they were written (names the file).
    Damaged(String),
    /// Something the host lacks (a PostgreSQL program of the major an
    /// artifact needs): an error about the run, never a verdict.
    Missing(String),
    /// Anything else, already phrased for the user.
    Msg(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn msg(m: impl Into<String>) -> Error {
        Error::Msg(m.into())
    }

    pub fn io(op: impl Into<String>, path: impl AsRef<Path>, source: io::Error) -> Error {
        Error::Io {
            op: op.into(),
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// The exit status this error maps to.
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            Error::Locked(_) => ExitStatus::Locked,
            Error::Damaged(_) => ExitStatus::No,
            _ => ExitStatus::Error,
        }
    }

    /// True when the run itself failed for want of something outside the
    /// backup: a full or read-only disk, no memory, a program that is not
    /// installed. Such a failure is an error (exit 2), never a verdict.
    pub fn is_infrastructure(&self) -> bool {
        match self {
            Error::Io { op, source, .. } => {
                let resource = matches!(
                    source.raw_os_error(),
                    Some(
                        nix::libc::ENOSPC
                            | nix::libc::EDQUOT
                            | nix::libc::EROFS
                            | nix::libc::ENOMEM
                            | nix::libc::EMFILE
                            | nix::libc::ENFILE
                    )
                );
                // pg::spawn names a program it could not start `WHAT: start`.
                resource || op.ends_with(": start")
            }
            Error::Child { stderr, .. } => {
                stderr.contains("No space left on device") || stderr.contains("Disk quota exceeded")
            }
            Error::Missing(_) => true,
            _ => false,
        }
    }

    /// True when the error is a closed stdout (the consumer went away).
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == io::ErrorKind::BrokenPipe)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(m) => write!(f, "usage: {m}"),
            Error::Io { op, path, source } => {
                write!(
                    f,
                    "{op}: {}: {}",
                    path.display(),
                    crate::error::io_cause(source)
                )
            }
            Error::Input { source, line, msg } => write!(f, "{source}: line {line}: {msg}"),
            Error::Child {
                program,
                what,
                status,
                stderr,
            } => {
                write!(f, "{what}: {program} {status}")?;
                let said = stderr.trim();
                if !said.is_empty() {
                    write!(f, ": {}", said.replace('\n', " | "))?;
                }
                Ok(())
            }
            Error::Locked(p) => write!(
                f,
                "lock: {}: held by another run (use --lock-wait to wait for it)",
                p.display()
            ),
            Error::Damaged(m) => write!(f, "checksum: {m}"),
            Error::Missing(m) | Error::Msg(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

/// An io::Error as a short cause, without Rust's "(os error N)" suffix.
pub fn io_cause(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Attach an operation and a path to an `io::Result`.
pub trait IoContext<T> {
    fn ctx(self, op: &str, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, op: &str, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(op, path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_read_op_path_cause() {
        let e = Error::io(
            "copy",
            "/mnt/nas/pg/x.dump",
            io::Error::from_raw_os_error(28),
        );
        assert_eq!(
            e.to_string(),
            "copy: /mnt/nas/pg/x.dump: No space left on device"
        );
    }

    #[test]
    fn locked_maps_to_status_3() {
        assert_eq!(Error::Locked("/x".into()).exit_status(), ExitStatus::Locked);
        assert_eq!(Error::msg("x").exit_status(), ExitStatus::Error);
        assert_eq!(Error::Damaged("f".into()).exit_status(), ExitStatus::No);
    }
}
