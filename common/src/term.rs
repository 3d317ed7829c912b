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

/// A byte counter drawn on stderr once a second while work runs, only when
/// [`progress_wanted`]; the line is cleared when dropped.
pub struct Progress {
    bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    pub fn new(label: impl Into<String>) -> Progress {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::Arc;
        let bytes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = progress_wanted().then(|| {
            let (bytes, stop, label) = (bytes.clone(), stop.clone(), label.into());
            std::thread::spawn(move || {
                let start = std::time::Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(250));
                    let n = bytes.load(Ordering::Relaxed);
                    let secs = start.elapsed().as_secs_f64().max(0.001);
                    eprint!(
                        "\r\x1b[K{}: {label}: {} ({}/s)",
                        tool(),
                        human_bytes(n),
                        human_bytes((n as f64 / secs) as u64)
                    );
                }
                eprint!("\r\x1b[K");
            })
        });
        Progress {
            bytes,
            stop,
            thread,
        }
    }

    /// Adds `n` bytes to the count shown.
    pub fn add(&self, n: u64) {
        self.bytes
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

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
