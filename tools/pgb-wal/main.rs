//! pgb-wal: durable archive_command and restore_command. See pgb-wal(1).

mod cli;
mod get;
mod push;

use std::process::ExitCode;

use clap::Parser;
use pgb_common::term::warn;
use pgb_common::ExitStatus;

fn main() -> ExitCode {
    pgb_common::set_umask();
    pgb_common::term::set_tool("pgb-wal");
    let args = match cli::Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            // As restore_command, a mistyped command line must stop
            // recovery, not pass for "file not in the archive".
            let is_get = std::env::args().nth(1).as_deref() == Some("get");
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ if is_get => ExitCode::from(get::FATAL),
                _ => ExitCode::from(ExitStatus::Error.code()),
            };
        }
    };
    match args.cmd {
        cli::Cmd::Push(a) => {
            let status = push::run(&a).unwrap_or_else(|e| {
                warn(e.to_string());
                e.exit_status()
            });
            ExitCode::from(status.code())
        }
        cli::Cmd::Get(a) => match get::run(&a) {
            Ok(get::Outcome::Fetched) => ExitCode::SUCCESS,
            Ok(get::Outcome::NotFound) => ExitCode::from(ExitStatus::No.code()),
            Err(e) => {
                warn(e.to_string());
                ExitCode::from(if a.soft_fail {
                    ExitStatus::Error.code()
                } else {
                    get::FATAL
                })
            }
        },
    }
}
