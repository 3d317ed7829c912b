//! Integration tests: the tools as users run them, against real PostgreSQL.

mod util;

mod man;
mod snapshot;
mod verify;
