//! pgb-check-archive: bad, foreign and missing WAL segments, staleness and
//! metrics. See pgb-check-archive(1).

mod backups;
mod check;
mod cli;
mod prom;
mod scan;
mod server;
mod summary;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    pgb_common::set_umask();
    pgb_common::term::set_tool("pgb-check-archive");
    check::run(cli::Args::parse()).into()
}
