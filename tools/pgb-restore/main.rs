//! pgb-restore: restore and point-in-time recovery from pgb's own
//! artifacts. See pgb-restore(1).

mod cli;
mod filter;
mod interrupt;
mod logical;
mod physical;
mod run;
mod summary;
mod walcheck;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    pgb_common::set_umask();
    pgb_common::term::set_tool("pgb-restore");
    run::run(cli::Args::parse()).into()
}
