//! pgb-ship: verified 3-2-1 copies of artifacts to directories, SSH hosts
//! and S3-compatible object storage. See pgb-ship(1).

mod cli;
mod run;
mod summary;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    pgb_common::set_umask();
    pgb_common::term::set_tool("pgb-ship");
    run::run(cli::Args::parse()).into()
}
