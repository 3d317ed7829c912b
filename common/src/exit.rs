//! The exit statuses shared by every pgb tool.

/// What a pgb tool reports through its exit status. The table is the same for
/// every tool and is printed in every man page ([`EXIT_STATUS_MAN`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExitStatus {
    /// 0: everything asked for was done.
    Ok = 0,
    /// 1: a definite "no": a verification failed, the archive is unhealthy,
    /// fixes are needed in check mode, a policy such as 3-2-1 is not met.
    No = 1,
    /// 2: an error: bad usage, bad input, a failed artifact, or an error
    /// record received from an earlier stage of the pipeline.
    Error = 2,
    /// 3: the repository lock is held by another run.
    Locked = 3,
}

impl ExitStatus {
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Combines two outcomes: the more serious one wins
    /// (`Locked` > `Error` > `No` > `Ok`).
    pub fn worst(self, other: ExitStatus) -> ExitStatus {
        self.max(other)
    }
}

impl From<ExitStatus> for std::process::ExitCode {
    fn from(s: ExitStatus) -> Self {
        std::process::ExitCode::from(s.code())
    }
}

/// The EXIT STATUS section of every man page, in roff.
pub const EXIT_STATUS_MAN: &str = "\
.TP
\\fB0\\fR
Everything asked for was done.
.TP
\\fB1\\fR
A definite \"no\": a verification failed, the archive is unhealthy, fixes are needed in check mode, or a required policy (such as 3\\-2\\-1) is not met.
.TP
\\fB2\\fR
An error: bad usage, bad input (the line or path is named on stderr), a failed artifact (an \\fBerror\\fR record was written), or an error record received from an earlier stage and forwarded.
.TP
\\fB3\\fR
The repository lock is held by another run (after \\fB\\-\\-lock\\-wait\\fR, if given, ran out).
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_documented_table() {
        assert_eq!(ExitStatus::Ok.code(), 0);
        assert_eq!(ExitStatus::No.code(), 1);
        assert_eq!(ExitStatus::Error.code(), 2);
        assert_eq!(ExitStatus::Locked.code(), 3);
    }

    #[test]
    fn worst_prefers_the_more_serious() {
        assert_eq!(ExitStatus::Ok.worst(ExitStatus::No), ExitStatus::No);
        assert_eq!(ExitStatus::Error.worst(ExitStatus::No), ExitStatus::Error);
        assert_eq!(
            ExitStatus::Error.worst(ExitStatus::Locked),
            ExitStatus::Locked
        );
    }
}
