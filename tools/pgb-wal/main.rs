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
    let status = match cli::Args::parse().cmd {
        cli::Cmd::Push(a) => push::run(&a),
        cli::Cmd::Get(a) => get::run(&a),
    };
    let status = status.unwrap_or_else(|e| {
        warn(e.to_string());
        e.exit_status()
    });
    ExitCode::from(ExitStatus::code(status))
}
