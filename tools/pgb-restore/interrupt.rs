//! Ctrl-C (SIGINT), SIGTERM or SIGHUP while a logical restore writes into a
//! database: instead of dying at once and leaving a half-filled database
//! without a word, the restore stops pg_restore, then says what it left
//! behind (a database it created is dropped; one that existed is named as
//! half-filled) and exits non-zero.

use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

static SIGNALLED: AtomicI32 = AtomicI32::new(0);
static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: nix::libc::c_int) {
    SIGNALLED.store(sig, Ordering::SeqCst);
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // kill(2) is async-signal-safe. A Ctrl-C on a terminal reaches
        // pg_restore too; a signal sent to pgb-restore alone must stop it.
        // SAFETY: a plain system call on a pid this process spawned.
        unsafe {
            nix::libc::kill(pid, nix::libc::SIGINT);
        }
    }
}

/// While alive, SIGINT, SIGTERM and SIGHUP are caught (and passed on to the
/// child named with [`Guard::child`]); the default actions come back when
/// dropped.
pub struct Guard {
    old: Vec<(Signal, SigAction)>,
}

impl Guard {
    pub fn new() -> Guard {
        SIGNALLED.store(0, Ordering::SeqCst);
        let act = SigAction::new(
            SigHandler::Handler(on_signal),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        let mut old = Vec::new();
        for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
            // SAFETY: the handler only touches atomics and calls kill(2).
            if let Ok(prev) = unsafe { sigaction(s, &act) } {
                old.push((s, prev));
            }
        }
        Guard { old }
    }

    /// The child to pass a signal on to (0: none).
    pub fn child(&self, pid: u32) {
        CHILD.store(pid as i32, Ordering::SeqCst);
    }

    /// The signal that arrived, if one did.
    pub fn signalled(&self) -> Option<Signal> {
        match SIGNALLED.load(Ordering::SeqCst) {
            0 => None,
            n => Signal::try_from(n).ok(),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        CHILD.store(0, Ordering::SeqCst);
        for (s, prev) in self.old.drain(..) {
            // SAFETY: restores the action that was there before.
            let _ = unsafe { sigaction(s, &prev) };
        }
    }
}
