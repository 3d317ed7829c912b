//! pgb-verify: prove backups restorable. See pgb-verify(1).

mod chain;
mod checksums;
mod cli;
mod cluster;
mod manifest;
mod metrics;
mod restore;
mod run;
mod stored;
mod structure;
mod summary;
mod walpages;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    pgb_common::set_umask();
    pgb_common::term::set_tool("pgb-verify");
    run::run(cli::Args::parse()).into()
}
