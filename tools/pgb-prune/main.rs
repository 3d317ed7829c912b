//! pgb-prune: retention and WAL expiry. See pgb-prune(1).

mod apply;
mod cli;
mod plan;
mod policy;
mod remote;
mod run;
mod summary;
mod wal;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    pgb_common::set_umask();
    pgb_common::term::set_tool("pgb-prune");
    run::run(cli::Args::parse()).into()
}
