//! Man pages are generated from the clap definitions and committed; this
//! test fails when one is stale. `scripts/update-man` rewrites them.

use std::path::Path;

#[path = "../tools/pgb-snapshot/cli.rs"]
#[allow(dead_code)]
mod snapshot_cli;

use clap::CommandFactory;

/// Renders a tool's page: clap's sections, then EXAMPLES, EXIT STATUS and
/// SEE ALSO written by hand.
fn render(cmd: clap::Command, examples: &str) -> Vec<u8> {
    let man = clap_mangen::Man::new(cmd.clone())
        .section("1")
        .manual("pgb manual");
    let mut out = Vec::new();
    man.render_title(&mut out).unwrap();
    man.render_name_section(&mut out).unwrap();
    man.render_synopsis_section(&mut out).unwrap();
    man.render_description_section(&mut out).unwrap();
    man.render_options_section(&mut out).unwrap();
    out.extend_from_slice(b".SH EXAMPLES\n");
    out.extend_from_slice(examples.as_bytes());
    out.extend_from_slice(b".SH \"EXIT STATUS\"\n");
    out.extend_from_slice(pgb_common::exit::EXIT_STATUS_MAN.as_bytes());
    out.extend_from_slice(b".SH ENVIRONMENT\n");
    out.extend_from_slice(ENVIRONMENT.as_bytes());
    out.extend_from_slice(b".SH \"SEE ALSO\"\n");
    out.extend_from_slice(
        b"\\fBpgb\\fR(7), \\fBpg_dump\\fR(1), \\fBpg_basebackup\\fR(1), \\fBpg_restore\\fR(1)\n",
    );
    man.render_version_section(&mut out).unwrap();
    out
}

const ENVIRONMENT: &str = r#".TP
\fBPGHOST\fR, \fBPGPORT\fR, \fBPGUSER\fR, \fBPGDATABASE\fR, \fBPGPASSFILE\fR, \fBPGSERVICE\fR, ...
Read by libpq in the PostgreSQL programs pgb runs, as they read them in pg_dump. Passwords belong in ~/.pgpass; a password given in a connection string is handed to the programs in a private, temporary passfile, never on their command line.
.TP
\fBNO_COLOR\fR, \fBPGB_NO_PROGRESS\fR
Suppress the progress line drawn on stderr when it is a terminal.
"#;

fn pages() -> Vec<(&'static str, Vec<u8>)> {
    vec![(
        "pgb-snapshot.1",
        render(snapshot_cli::Args::command(), snapshot_cli::EXAMPLES),
    )]
}

#[test]
fn man_pages_are_fresh() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let update = std::env::var_os("PGB_UPDATE_MAN").is_some();
    let mut stale = Vec::new();
    for (name, text) in pages() {
        let path = dir.join(name);
        if update {
            std::fs::write(&path, &text).unwrap();
        } else if std::fs::read(&path).ok().as_deref() != Some(&text[..]) {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "stale man pages {stale:?}: run scripts/update-man and commit"
    );
}

#[test]
fn clap_definitions_are_consistent() {
    snapshot_cli::Args::command().debug_assert();
}

#[test]
fn help_lists_every_flag_of_the_man_page() {
    let out = std::process::Command::new(crate::util::bin("pgb-snapshot"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for arg in snapshot_cli::Args::command().get_arguments() {
        if let Some(long) = arg.get_long() {
            assert!(help.contains(&format!("--{long}")), "--help lacks --{long}");
        }
    }
}
