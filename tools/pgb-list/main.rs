//! pgb-list: the catalogue of a repository, with the recovery window its
//! physical backups and WAL archives give. See pgb-list(1).

mod cli;
mod listing;
mod run;
mod table;
mod window;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    pgb_common::set_umask();
    pgb_common::term::set_tool("pgb-list");
    run::run(cli::Args::parse()).into()
}
