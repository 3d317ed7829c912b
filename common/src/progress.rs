//! Progress on stderr for long operations, drawn with `indicatif` only when
//! stderr is a terminal and neither `NO_COLOR`, `TERM=dumb` nor
//! `PGB_NO_PROGRESS` says otherwise; at most 10 redraws a second, so a
//! streaming loop may report every buffer it moves.
//!
//! A tool starts a [`Progress`] for an operation, with the total in bytes
//! where it is known (the backup's recorded size, a file's size) or can be
//! estimated (`pg_database_size` for a dump). Loops deep in common code
//! that do not know which operation they serve (the verifying reader of a
//! restore, say) report to the one started last with [`add`].

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The progress started last, for [`add`]; its id, 0 for none.
static CURRENT: Mutex<Option<(u64, ProgressBar)>> = Mutex::new(None);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
/// The current progress's id (0: none), read without the lock on every add.
static CURRENT_ID: AtomicU64 = AtomicU64::new(0);

/// True when progress may be drawn: stderr is a terminal, `NO_COLOR` and
/// `PGB_NO_PROGRESS` are unset, and `TERM` is not `dumb`.
pub fn wanted() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none()
        && std::env::var_os("PGB_NO_PROGRESS").is_none()
        && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
}

/// One operation's progress line; cleared when dropped.
pub struct Progress {
    id: u64,
    bar: Option<ProgressBar>,
    estimate: bool,
}

fn style(total: Option<u64>, estimate: bool) -> ProgressStyle {
    let t = match (total, estimate) {
        (Some(_), false) => {
            "{prefix}: {msg} [{bar:20}] {bytes}/{total_bytes} {percent}% {binary_bytes_per_sec} ETA {eta}"
        }
        (Some(_), true) => {
            "{prefix}: {msg} [{bar:20}] {bytes} of ~{total_bytes} {percent}% {binary_bytes_per_sec} ETA ~{eta}"
        }
        (None, _) => "{prefix}: {msg} {bytes} {binary_bytes_per_sec} {elapsed}",
    };
    ProgressStyle::with_template(t)
        .expect("a valid template")
        .progress_chars("=> ")
}

impl Progress {
    /// Progress with no total: bytes, rate and elapsed time.
    pub fn new(label: impl Into<String>) -> Progress {
        Progress::start(label.into(), None, false, style(None, false))
    }

    /// Progress towards `total` bytes: percent and ETA.
    pub fn with_total(label: impl Into<String>, total: u64) -> Progress {
        Progress::start(label.into(), Some(total), false, style(Some(total), false))
    }

    /// Progress towards an estimated total (shown with `~`; the bar stops
    /// short of or at the end when the estimate was off).
    pub fn estimated(label: impl Into<String>, total: Option<u64>) -> Progress {
        Progress::start(label.into(), total, true, style(total, true))
    }

    /// A line for work measured in time alone (pg_restore into a server):
    /// what runs and for how long.
    pub fn spinner(label: impl Into<String>) -> Progress {
        let style = ProgressStyle::with_template("{prefix}: {msg} {spinner} {elapsed}")
            .expect("a valid template");
        Progress::start(label.into(), None, false, style)
    }

    fn start(label: String, total: Option<u64>, estimate: bool, style: ProgressStyle) -> Progress {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let bar = wanted().then(|| {
            let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::hidden());
            bar.set_style(style);
            bar.set_prefix(crate::term::tool());
            bar.set_message(label);
            bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(10));
            // Redrawn while nothing moves (a dump waiting on a lock), so
            // the elapsed time and rate stay true.
            bar.enable_steady_tick(Duration::from_millis(500));
            bar
        });
        if let Some(b) = &bar {
            if let Ok(mut cur) = CURRENT.lock() {
                *cur = Some((id, b.clone()));
                CURRENT_ID.store(id, Ordering::Relaxed);
            }
        }
        Progress { id, bar, estimate }
    }

    /// Adds `n` bytes done.
    pub fn add(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
            if self.estimate && b.length().is_some_and(|l| b.position() > l) {
                b.set_length(b.position());
            }
        }
    }

    /// Sets (or corrects) the total.
    pub fn set_total(&self, total: u64) {
        if let Some(b) = &self.bar {
            if b.length().is_none() {
                b.set_style(style(Some(total), self.estimate));
            }
            b.set_length(total);
        }
    }

    /// `r`, counting what is read from it here.
    pub fn reader<R: Read>(&self, r: R) -> Counting<'_, R> {
        Counting { inner: r, to: self }
    }

    /// Runs `f` with the line cleared, for a message that must not be
    /// overdrawn.
    pub fn suspend<T>(&self, f: impl FnOnce() -> T) -> T {
        match &self.bar {
            Some(b) => b.suspend(f),
            None => f(),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
            if let Ok(mut cur) = CURRENT.lock() {
                if cur.as_ref().is_some_and(|(id, _)| *id == self.id) {
                    *cur = None;
                    CURRENT_ID.store(0, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Adds `n` bytes to the progress started last, if one is drawn: for loops
/// in common code (reading a stored file back) that serve whichever
/// operation runs. Costs one atomic load when no progress is drawn.
pub fn add(n: u64) {
    if CURRENT_ID.load(Ordering::Relaxed) == 0 {
        return;
    }
    if let Ok(cur) = CURRENT.lock() {
        if let Some((_, b)) = cur.as_ref() {
            b.inc(n);
        }
    }
}

/// Runs `f` with the current progress line (if any) cleared, so that a
/// message printed meanwhile is not overdrawn.
pub fn suspend<T>(f: impl FnOnce() -> T) -> T {
    if CURRENT_ID.load(Ordering::Relaxed) == 0 {
        return f();
    }
    let bar = CURRENT
        .lock()
        .ok()
        .and_then(|c| c.as_ref().map(|(_, b)| b.clone()));
    match bar {
        Some(b) => b.suspend(f),
        None => f(),
    }
}

/// A reader that reports what it reads to a [`Progress`].
pub struct Counting<'a, R> {
    inner: R,
    to: &'a Progress,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.to.add(n as u64);
        Ok(n)
    }
}

/// A reader that reports what it reads to the current progress ([`add`]).
pub struct CountingCurrent<R>(pub R);

impl<R: Read> Read for CountingCurrent<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.0.read(buf)?;
        add(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn nothing_is_drawn_without_a_terminal() {
        // cargo test's stderr is captured, never a terminal here.
        let p = super::Progress::with_total("t", 10);
        assert!(p.bar.is_none());
        p.add(5);
        super::add(5);
        let mut r = p.reader(&b"abc"[..]);
        let mut s = String::new();
        std::io::Read::read_to_string(&mut r, &mut s).unwrap();
        assert_eq!(s, "abc");
    }
}
