//! Shared parts of the pgb tools: the `pgb.v1` record contract, JSON-lines
//! I/O, exit statuses, durable file writing, streaming digests, repository
//! locks, connection-string redaction and running PostgreSQL programs.
//!
//! Re-exported flat, so a tool writes `pgb_common::AtomicFile`.

pub mod chain;
pub mod cluster;
pub mod combine;
pub mod conninfo;
pub mod crypt;
pub mod dest;
pub mod digest;
pub mod error;
pub mod evidence;
pub mod exit;
pub mod fs;
pub mod human;
pub mod jsonl;
pub mod lock;
pub mod manifest;
pub mod pg;
pub mod pgbin;
pub mod physical;
pub mod policy;
pub mod progress;
pub mod prom;
pub mod record;
pub mod repo;
pub mod seal;
pub mod store;
pub mod term;
pub mod unpack;
pub mod wal;
pub mod walarchive;
pub mod walcov;
pub mod walhdr;
pub mod walrec;
pub mod when;

pub use conninfo::{redact, split_password};
pub use digest::{Digests, HashingWriter};
pub use error::{Error, IoContext, Result};
pub use exit::ExitStatus;
pub use fs::{fsync_dir, rename_noreplace, set_umask, AtomicFile};
pub use jsonl::{human_wanted, Input, RecordReader, RecordWriter};
pub use lock::{RemoteLock, RepoLock};
pub use record::{Artifact, FileEntry, Kind, SCHEMA};
