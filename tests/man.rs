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

#[path = "../tools/pgb-prune/cli.rs"]
#[allow(dead_code)]
mod prune_cli;

#[path = "../tools/pgb-ship/cli.rs"]
#[allow(dead_code)]
mod ship_cli;

#[path = "../tools/pgb-restore/cli.rs"]
#[allow(dead_code)]
mod restore_cli;

#[path = "../tools/pgb-check-archive/cli.rs"]
#[allow(dead_code)]
mod check_archive_cli;

#[path = "../tools/pgb-encrypt/cli.rs"]
#[allow(dead_code)]
mod encrypt_cli;

#[path = "../tools/pgb-list/cli.rs"]
#[allow(dead_code)]
mod list_cli;

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
        bin: "pgb-encrypt",
        cmd: encrypt_cli::Args::command,
        examples: encrypt_cli::EXAMPLES,
        environment: Some(encrypt_cli::ENVIRONMENT),
        see_also: "\\fBage\\fR(1), \\fBage\\-keygen\\fR(1), \\fBpgb\\-snapshot\\fR(1), \\fBpgb\\-ship\\fR(1), \\fBpgb\\-verify\\fR(1)",
    },
    Page {
        bin: "pgb-check-archive",
        cmd: check_archive_cli::Args::command,
        examples: check_archive_cli::EXAMPLES,
        environment: Some(LIBPQ_ENVIRONMENT),
        see_also: "\\fBpgb\\-wal\\fR(1), \\fBpgb\\-metrics\\fR(7), \\fBpg_waldump\\fR(1), \\fBpg_controldata\\fR(1)",
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
        bin: "pgb-prune",
        cmd: prune_cli::Args::command,
        examples: prune_cli::EXAMPLES,
        environment: None,
        see_also: "\\fBpgb\\-verify\\fR(1), \\fBpgb\\-ship\\fR(1), \\fBpgb\\-check\\-archive\\fR(1), \\fBrestic\\-forget\\fR(1)",
    },
    Page {
        bin: "pgb-ship",
        cmd: ship_cli::Args::command,
        examples: ship_cli::EXAMPLES,
        environment: Some(ship_cli::ENVIRONMENT),
        see_also: "\\fBpgb\\-snapshot\\fR(1), \\fBpgb\\-verify\\fR(1), \\fBpgb\\-prune\\fR(1), \\fBpgb\\fR(7), \\fBssh\\fR(1)",
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
        bin: "pgb-restore",
        cmd: restore_cli::Args::command,
        examples: restore_cli::EXAMPLES,
        environment: Some(LIBPQ_ENVIRONMENT),
        see_also: "\\fBpgb\\-wal\\fR(1), \\fBpgb\\-snapshot\\fR(1), \\fBpgb\\-verify\\fR(1), \\fBpg_restore\\fR(1), \\fBpg_ctl\\fR(1)",
    },
    Page {
        bin: "pgb-list",
        cmd: list_cli::Args::command,
        examples: list_cli::EXAMPLES,
        environment: None,
        see_also: "\\fBpgb\\-restore\\fR(1), \\fBpgb\\-verify\\fR(1), \\fBpgb\\-ship\\fR(1), \\fBpgb\\-check\\-archive\\fR(1), \\fBpgb\\-wal\\fR(1)",
    },
    Page {
        bin: "pgb-verify",
        cmd: verify_cli::Args::command,
        examples: verify_cli::EXAMPLES,
        environment: Some(PROGRESS_ENVIRONMENT),
        see_also: "\\fBpgb\\-snapshot\\fR(1), \\fBpgb\\-encrypt\\fR(1), \\fBpgb\\-ship\\fR(1), \\fBpgb\\-metrics\\fR(7), \\fBpg_restore\\fR(1), \\fBpg_verifybackup\\fR(1), \\fBage\\fR(1)",
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
    // The subcommands take no --version (pgb-wal --version does): the page
    // must not list one.
    sub.name(page)
        .bin_name(bin)
        .version(env!("CARGO_PKG_VERSION"))
        .disable_version_flag(true)
}

/// The doc comments' `code` spans as bold, as man pages show literals
/// (clap_mangen would print the backticks).
fn code_spans(roff: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(roff.to_vec()).unwrap();
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if line.matches('`').count() % 2 != 0 {
            out.push_str(line);
            continue;
        }
        let mut open = false;
        for c in line.chars() {
            if c == '`' {
                out.push_str(if open { "\\fR" } else { "\\fB" });
                open = !open;
            } else {
                out.push(c);
            }
        }
    }
    out.into_bytes()
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
    let mut clap_text = Vec::new();
    man.render_description_section(&mut clap_text).unwrap();
    man.render_options_section(&mut clap_text).unwrap();
    out.extend_from_slice(&code_spans(&clap_text));
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
\fBNO_COLOR\fR, \fBPGB_NO_PROGRESS\fR, \fBTERM\fR=dumb
No progress line on stderr even when it is a terminal. Otherwise one is drawn there, at most ten times a second, with the bytes done and, where known or estimated, the total, percent and ETA; never when stderr is a file or a pipe.
"#;

const PROGRESS_ENVIRONMENT: &str = r#".TP
\fBNO_COLOR\fR, \fBPGB_NO_PROGRESS\fR, \fBTERM\fR=dumb
No progress line on stderr even when it is a terminal. Otherwise one is drawn there, at most ten times a second, with the bytes done and, where known or estimated, the total, percent and ETA; never when stderr is a file or a pipe.
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

/// Shell completions for every binary (bash, zsh, fish), generated from the
/// same clap definitions as the man pages and committed under completions/;
/// `scripts/update-man` rewrites them too.
#[test]
fn completions_are_fresh() {
    use clap_complete::Shell;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("completions");
    let update = std::env::var_os("PGB_UPDATE_MAN").is_some();
    let mut stale = Vec::new();
    let mut expected = std::collections::BTreeSet::new();
    // Pages of subcommands (pgb-wal-push) are not binaries.
    let bins = pages()
        .into_iter()
        .filter(|p| !(p.cmd)().get_bin_name().is_some_and(|b| b.contains(' ')));
    for page in bins {
        for (shell, sub, file) in [
            (Shell::Bash, "bash", page.bin.to_string()),
            (Shell::Zsh, "zsh", format!("_{}", page.bin)),
            (Shell::Fish, "fish", format!("{}.fish", page.bin)),
        ] {
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut (page.cmd)(), page.bin, &mut text);
            let rel = format!("{sub}/{file}");
            let path = dir.join(&rel);
            if update {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &text).unwrap();
            } else if std::fs::read(&path).ok().as_deref() != Some(&text[..]) {
                stale.push(rel.clone());
            }
            expected.insert(rel);
        }
    }
    // A completion left behind by a removed or renamed tool is stale too.
    for sub in ["bash", "zsh", "fish"] {
        for e in std::fs::read_dir(dir.join(sub))
            .into_iter()
            .flatten()
            .flatten()
        {
            let rel = format!("{sub}/{}", e.file_name().to_string_lossy());
            if !expected.contains(&rel) {
                if update {
                    std::fs::remove_file(e.path()).unwrap();
                } else {
                    stale.push(rel);
                }
            }
        }
    }
    assert!(
        stale.is_empty(),
        "stale completions {stale:?}: run scripts/update-man and commit"
    );
}

#[test]
fn clap_definitions_are_consistent() {
    snapshot_cli::Args::command().debug_assert();
    wal_cli::Args::command().debug_assert();
    check_archive_cli::Args::command().debug_assert();
    encrypt_cli::Args::command().debug_assert();
    prune_cli::Args::command().debug_assert();
    list_cli::Args::command().debug_assert();
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

/// The text of a roff line as a terminal shows it: `\-` is `-`, `\\` is
/// `\`, font changes take no room.
fn shown(line: &str) -> String {
    let mut out = String::new();
    let mut it = line.chars().peekable();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('f') => {
                it.next();
            }
            Some('&') => {}
            Some('(') => {
                let name: String = it.by_ref().take(2).collect();
                out.push(match name.as_str() {
                    "aq" => '\'',
                    "dq" => '"',
                    _ => '?',
                });
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// Example lines (no-fill blocks, `.nf` to `.fi`) are never refilled by
/// man, so a line wider than 80 columns runs off a standard terminal.
#[test]
fn no_example_line_is_wider_than_80_columns() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let mut wide = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for path in names {
        let text = std::fs::read_to_string(&path).unwrap();
        let mut nofill = false;
        for (n, line) in text.lines().enumerate() {
            if line.starts_with(".nf") {
                nofill = true;
            } else if line.starts_with(".fi") {
                nofill = false;
            } else if nofill && !line.starts_with('.') {
                let cols = shown(line).chars().count();
                if cols > 80 {
                    wide.push(format!("{}:{}: {cols} columns", path.display(), n + 1));
                }
            }
        }
    }
    assert!(
        wide.is_empty(),
        "example lines wider than 80 columns (wrap them with a backslash \
         continuation in the tool's cli.rs EXAMPLES, then scripts/update-man):\n{}",
        wide.join("\n")
    );
}
