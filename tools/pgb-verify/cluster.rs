//! Throwaway clusters for test restores, shared with pgb-restore's code in
//! pgb_common::cluster: `pgb-verify.PID.*` temp directories, removed when
//! dropped, on SIGINT/SIGTERM/SIGHUP, and by the next run after a kill;
//! the same for the plaintext dump of a `--target` restore.

use std::path::PathBuf;
use std::sync::Once;

use pgb_common::error::Result;

pub use pgb_common::cluster::{TempCluster, TempFile};

/// Temp directories of pgb-verify start with this.
pub const PREFIX: &str = "pgb-verify.";

/// The plaintext dump of a `--target` restore starts with this.
pub const DUMP_PREFIX: &str = "pgb-verify-dump.";

fn install_signal_cleanup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(pgb_common::cluster::cleanup_on_signals);
}

/// initdb and start an empty throwaway cluster.
pub fn start(bindir: Option<PathBuf>) -> Result<TempCluster> {
    install_signal_cleanup();
    TempCluster::start(PREFIX, bindir)
}

/// A throwaway directory for a physical restore (no data directory yet).
pub fn create(bindir: Option<PathBuf>) -> Result<TempCluster> {
    install_signal_cleanup();
    TempCluster::create(PREFIX, bindir)
}

/// Where the plaintext dump of a `--target` restore goes:
/// `pgb-verify-dump.PID.N` in the temp directory, removed after use, on
/// SIGINT/SIGTERM/SIGHUP, and by the next run after a kill.
pub fn dump_temp() -> TempFile {
    install_signal_cleanup();
    TempFile::new(DUMP_PREFIX)
}
