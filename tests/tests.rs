//! Integration tests: the tools as users run them, against real PostgreSQL.

mod util;

mod check_archive;
mod fixperms;
mod man;
mod snapshot;
mod verify;
mod wal;
