//! pgb-fixperms: repair ownership and modes of data directories,
//! tablespaces and backup repositories, safely, as root. See pgb-fixperms(1).

mod cli;
mod guard;
mod run;
mod walk;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    pgb_common::set_umask();
    pgb_common::term::set_tool("pgb-fixperms");
    run::run(cli::Args::parse()).into()
}
