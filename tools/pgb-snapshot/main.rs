//! pgb-snapshot: logical, globals and physical PostgreSQL backups that carry
//! their own evidence. See pgb-snapshot(1).

mod cli;
mod compress;
mod globals;
mod incremental;
mod logical;
mod meta;
mod physical;
mod prom;
mod run;
mod summary;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    pgb_common::set_umask();
    pgb_common::term::set_tool("pgb-snapshot");
    run::run(cli::Args::parse()).into()
}
