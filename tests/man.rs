//! Man pages are generated from the clap definitions and committed; this
//! test fails when one is stale. `scripts/update-man` rewrites them.

use std::path::Path;

#[path = "../tools/pgb-verify/cli.rs"]
#[allow(dead_code)]
mod verify_cli;

#[path = "../tools/pgb-snapshot/cli.rs"]
#[allow(dead_code)]
mod snapshot_cli;

#[path = "../tools/pgb-fixperms/cli.rs"]
#[allow(dead_code)]
pub(crate) mod fixperms_cli;

#[path = "../tools/pgb-wal/cli.rs"]
#[allow(dead_code)]
mod wal_cli;

#[path = "../tools/pgb-check-archive/cli.rs"]
#[allow(dead_code)]
mod check_archive_cli;

use clap::CommandFactory;

/// One tool's man page: its clap definition plus hand-written sections.
struct Page {
    bin: &'static str,
    cmd: fn() -> clap::Command,
    examples: &'static str,
    /// The ENVIRONMENT section, when the tool reads variables.
    environment: Option<&'static str>,
    see_also: &'static str,
}

/// Every tool's page. A new tool adds its `cli.rs` as a module above and a
/// line here.
fn pages() -> Vec<Page> {
    vec![
    Page {
        bin: "pgb-check-archive",
        cmd: check_archive_cli::Args::command,
        examples: check_archive_cli::EXAMPLES,
        environment: None,
        see_also: "\\fBpgb\\-wal\\fR(1), \\fBpg_waldump\\fR(1), \\fBpg_controldata\\fR(1)",
    },
    Page {
        bin: "pgb-wal",
        cmd: wal_cli::Args::command,
        examples: wal_cli::EXAMPLES,
        environment: None,
        see_also: "\\fBpgb\\-wal\\-push\\fR(1), \\fBpgb\\-wal\\-get\\fR(1), \\fBpgb\\-check\\-archive\\fR(1)",
    },
    Page {
        bin: "pgb-wal-push",
        cmd: || wal_sub("push"),
        examples: wal_cli::EXAMPLES,
        environment: None,
        see_also: "\\fBpgb\\-wal\\fR(1), \\fBpgb\\-wal\\-get\\fR(1), \\fBpgb\\-check\\-archive\\fR(1)",
    },
    Page {
        bin: "pgb-wal-get",
        cmd: || wal_sub("get"),
        examples: wal_cli::EXAMPLES,
        environment: None,
        see_also: "\\fBpgb\\-wal\\fR(1), \\fBpgb\\-wal\\-push\\fR(1)",
    },
    Page {
        bin: "pgb-fixperms",
        cmd: fixperms_cli::Args::command,
        examples: fixperms_cli::EXAMPLES,
        environment: None,
        see_also: "\\fBchown\\fR(1), \\fBchmod\\fR(1), \\fBinitdb\\fR(1), \\fBpg_upgrade\\fR(1)",
    },
    Page {
        bin: "pgb-snapshot",
        cmd: snapshot_cli::Args::command,
        examples: snapshot_cli::EXAMPLES,
        environment: Some(LIBPQ_ENVIRONMENT),
        see_also: "\\fBpg_dump\\fR(1), \\fBpg_basebackup\\fR(1), \\fBpg_restore\\fR(1)",
    },
    Page {
        bin: "pgb-verify",
        cmd: verify_cli::Args::command,
        examples: verify_cli::EXAMPLES,
        environment: None,
        see_also: "\\fBpgb\\-snapshot\\fR(1), \\fBpg_restore\\fR(1), \\fBpg_verifybackup\\fR(1)",
    }]
}

/// A subcommand of pgb-wal as a page of its own (`pgb-wal-push`), so its
/// options are documented.
fn wal_sub(name: &'static str) -> clap::Command {
    let (page, bin) = match name {
        "push" => ("pgb-wal-push", "pgb-wal push"),
        _ => ("pgb-wal-get", "pgb-wal get"),
    };
    let cmd = wal_cli::Args::command();
    let sub = cmd.find_subcommand(name).unwrap().clone();
    sub.name(page)
        .bin_name(bin)
        .version(env!("CARGO_PKG_VERSION"))
}

/// Renders a tool's page: clap's sections, then EXAMPLES, EXIT STATUS,
/// ENVIRONMENT and SEE ALSO written by hand.
fn render(page: &Page) -> Vec<u8> {
    let man = clap_mangen::Man::new((page.cmd)())
        .section("1")
        .manual("pgb manual");
    let mut out = Vec::new();
    man.render_title(&mut out).unwrap();
    man.render_name_section(&mut out).unwrap();
    man.render_synopsis_section(&mut out).unwrap();
    man.render_description_section(&mut out).unwrap();
    man.render_options_section(&mut out).unwrap();
    out.extend_from_slice(b".SH EXAMPLES\n");
    out.extend_from_slice(page.examples.as_bytes());
    out.extend_from_slice(b".SH \"EXIT STATUS\"\n");
    out.extend_from_slice(pgb_common::exit::EXIT_STATUS_MAN.as_bytes());
    if let Some(env) = page.environment {
        out.extend_from_slice(b".SH ENVIRONMENT\n");
        out.extend_from_slice(env.as_bytes());
    }
    out.extend_from_slice(b".SH \"SEE ALSO\"\n");
    out.extend_from_slice(format!("\\fBpgb\\fR(7), {}\n", page.see_also).as_bytes());
    man.render_version_section(&mut out).unwrap();
    out
}

const LIBPQ_ENVIRONMENT: &str = r#".TP
\fBPGHOST\fR, \fBPGPORT\fR, \fBPGUSER\fR, \fBPGDATABASE\fR, \fBPGPASSFILE\fR, \fBPGSERVICE\fR, ...
Read by libpq in the PostgreSQL programs pgb runs, as they read them in pg_dump. Passwords belong in ~/.pgpass; a password given in a connection string is handed to the programs in a private, temporary passfile, never on their command line.
.TP
\fBNO_COLOR\fR, \fBPGB_NO_PROGRESS\fR
Suppress the progress line drawn on stderr when it is a terminal.
"#;

#[test]
fn man_pages_are_fresh() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let update = std::env::var_os("PGB_UPDATE_MAN").is_some();
    let mut stale = Vec::new();
    for page in pages() {
        let name = format!("{}.1", page.bin);
        let text = render(&page);
        let path = dir.join(&name);
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
    wal_cli::Args::command().debug_assert();
    check_archive_cli::Args::command().debug_assert();
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
