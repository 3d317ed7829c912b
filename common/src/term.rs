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
    eprintln!("{}: {}", tool(), crate::conninfo::redact(msg.as_ref()));
}

/// True when progress may be drawn: stderr is a terminal, and neither
/// `NO_COLOR` nor `PGB_NO_PROGRESS` is set.
pub fn progress_wanted() -> bool {
    std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none()
        && std::env::var_os("PGB_NO_PROGRESS").is_none()
}

/// `1.5 GiB`-style sizes for messages.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
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
