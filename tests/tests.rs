//! Integration tests: the tools as users run them, against real PostgreSQL.

mod servers;
mod util;

mod batched;
mod check_archive;
mod damage;
mod drill;
mod encrypt;
mod fixperms;
mod incremental;
mod list;
mod man;
mod offsite;
mod ops;
mod prune;
mod remote_prune;
mod remote_verify;
mod restore;
mod ship;
mod snapshot;
mod terminal;
mod usage;
mod verify;
mod versions;
mod wal;
