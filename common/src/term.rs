//! Human messages on stderr, prefixed with the tool's name; progress only
//! when stderr is a terminal.

use std::io::IsTerminal;
use std::sync::OnceLock;

static TOOL: OnceLock<&'static str> = OnceLock::new();

/// Names the running tool for [`warn`] and error records.
pub fn set_tool(name: &'static str) {
    let _ = TOOL.set(name);
}

pub fn tool() -> &'static str {
    TOOL.get().copied().unwrap_or("pgb")
}

/// Prints `tool: message` on stderr, with any password redacted.
pub fn warn(msg: impl AsRef<str>) {
    let line = format!("{}: {}", tool(), crate::conninfo::redact(msg.as_ref()));
    crate::progress::suspend(|| eprintln!("{line}"));
}

/// True when progress may be drawn; see [`crate::progress::wanted`].
pub fn progress_wanted() -> bool {
    crate::progress::wanted()
}

/// Refuses at once (exit 2) when records would be read from stdin and
/// stdin is a terminal: nobody types JSON lines, and waiting silently looks
/// like a hang. `example` is a pipeline that feeds the tool.
pub fn refuse_terminal_stdin(example: &str) -> crate::error::Result<()> {
    if std::io::stdin().is_terminal() {
        return Err(crate::error::Error::Usage(format!(
            "no records: without --repo, records are read from stdin, which is a terminal; \
             give --repo DIR (a repository's sidecars) or pipe records in, e.g.\n  {example}"
        )));
    }
    Ok(())
}

/// `1.5 GiB`-style sizes for messages: [`crate::human::bytes`].
pub fn human_bytes(n: u64) -> String {
    crate::human::bytes(n)
}

pub use crate::progress::Progress;

/// A tool's exit status: its run's own, or after an error, the error
/// printed (prefixed with the tool name) and its status.
pub fn finish(r: crate::error::Result<crate::exit::ExitStatus>) -> crate::exit::ExitStatus {
    r.unwrap_or_else(|e| {
        warn(e.to_string());
        e.exit_status()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_bytes_reads_well() {
        assert_eq!(super::human_bytes(512), "512 B");
        assert_eq!(super::human_bytes(1536), "1.5 KiB");
        assert_eq!(super::human_bytes(3 << 30), "3.0 GiB");
    }
}
