//! pgb-encrypt: age encryption of backup artifacts, interoperable with the
//! age command. See pgb-encrypt(1).

mod artifact;
mod cli;
mod run;
mod stream;
mod summary;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    pgb_common::set_umask();
    pgb_common::term::set_tool("pgb-encrypt");
    run::run(cli::Args::parse()).into()
}
