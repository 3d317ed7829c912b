//! Drives one pgb-snapshot run: lock the repository, take each artifact,
//! print its record (or an error record) and map the outcome to an exit
//! status.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset, Timelike};
use pgb_common::error::{Error, IoContext, Result};
use pgb_common::fs::{create_dir_all_durable, remove_leftover_temps, write_atomic};
use pgb_common::pg::{Conn, Psql};
use pgb_common::record::{error_record, Artifact, FileEntry, Kind, SCHEMA};
use pgb_common::term::warn;
use pgb_common::{Digests, ExitStatus, RecordWriter, RepoLock};
use serde_json::{json, Map, Value};

use crate::cli::Args;
use crate::compress::Method;
use crate::meta::ServerInfo;
use crate::prom::{database_label, Outcome};

/// What every artifact of this run shares.
pub struct Ctx {
    pub repo: PathBuf,
    pub cluster: Option<String>,
    pub method: Method,
    pub threads: u32,
    pub row_counts: bool,
    pub maintenance_db: String,
    pub checkpoint: &'static str,
    /// pg_dump --statistics (PostgreSQL 18's pg_dump).
    pub statistics: bool,
    /// --incremental: `auto` or a parent's id.
    pub incremental: Option<String>,
    pub max_chain: u32,
    pub identities: Option<pgb_common::crypt::Identities>,
}

impl Ctx {
    /// zstd settings when pgb compresses.
    pub fn zstd(&self) -> Option<(i32, u32)> {
        match self.method {
            Method::Zstd(l) => Some((l, self.threads)),
            _ => None,
        }
    }

    /// `CLUSTER/KIND[/NAME]`, created with 0700 and cleaned of leftover temps
    /// (the repository lock is held).
    pub fn dir(&self, cluster: &str, kind: Kind, name: Option<&str>) -> Result<PathBuf> {
        check_component(cluster, "cluster label")?;
        let mut d = self.repo.join(cluster).join(kind.as_str());
        if let Some(n) = name {
            check_component(n, "database name")?;
            d.push(n);
        }
        create_dir_all_durable(&d)?;
        for p in remove_leftover_temps(&d)? {
            warn(format!(
                "removed leftover of an interrupted run: {}",
                p.display()
            ));
        }
        Ok(d)
    }
}

/// A name used as one path component must not climb or nest.
fn check_component(s: &str, what: &str) -> Result<()> {
    if s.is_empty()
        || s == "."
        || s == ".."
        || s.contains('/')
        || s.contains('\0')
        || s.starts_with('.')
    {
        return Err(Error::msg(format!(
            "{what} {s:?} cannot be used as a directory name in the repository"
        )));
    }
    Ok(())
}

/// Now, to the millisecond, with the local UTC offset.
pub fn now() -> DateTime<FixedOffset> {
    let t = chrono::Local::now().fixed_offset();
    t.with_nanosecond(t.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap_or(t)
}

/// `created`, or a later moment when its second is already taken in `dir`
/// by an artifact named `prefix(stamp)` (with any extension: the id does
/// not carry it). Two artifacts of one database in one second (`-d appdb`
/// and `--all-databases` on a small cluster) would otherwise collide; the
/// second waits for the next second (the repository lock is held).
pub fn free_moment(
    created: DateTime<FixedOffset>,
    dir: &Path,
    prefix: impl Fn(&str) -> String,
) -> DateTime<FixedOffset> {
    let taken = |t: &DateTime<FixedOffset>| {
        let p = prefix(&stamp(t));
        let dotted = format!("{p}.");
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n == p || n.starts_with(&dotted)
            })
    };
    let mut t = created;
    while taken(&t) {
        let left = 1000 - t.timestamp_subsec_millis().min(999);
        std::thread::sleep(Duration::from_millis(u64::from(left) + 1));
        t = now();
    }
    t
}

/// `20261121T020000Z`: the UTC timestamp in artifact names.
pub fn stamp(t: &DateTime<FixedOffset>) -> String {
    t.with_timezone(&chrono::Utc)
        .format("%Y%m%dT%H%M%SZ")
        .to_string()
}

pub fn file_entry(name: &str, d: Digests) -> FileEntry {
    FileEntry {
        name: name.to_string(),
        size: d.size,
        sha256: d.sha256,
        blake3: d.blake3,
        extra: Map::new(),
    }
}

/// The record fields every kind shares.
pub struct Taken<'a> {
    pub kind: Kind,
    pub name: &'a str,
    pub info: &'a ServerInfo,
    pub cluster: &'a str,
    pub created: DateTime<FixedOffset>,
    pub location: &'a Path,
    pub files: Vec<FileEntry>,
    pub started: Instant,
}

pub fn artifact(ctx: &Ctx, t: Taken<'_>, tool: (&str, &str)) -> Artifact {
    let path = t
        .location
        .strip_prefix(&ctx.repo)
        .unwrap_or(t.location)
        .to_string_lossy()
        .into_owned();
    let mut extra = Map::new();
    extra.insert("pgb_version".into(), env!("CARGO_PKG_VERSION").into());
    extra.insert("tool".into(), json!({"name": tool.0, "version": tool.1}));
    extra.insert(
        "duration_ms".into(),
        (t.started.elapsed().as_millis() as u64).into(),
    );
    extra.insert("locale".into(), t.info.locale());
    extra.insert("extensions".into(), Value::Array(t.info.extensions.clone()));
    extra.insert(
        "tablespaces".into(),
        Value::Array(t.info.tablespaces.clone()),
    );
    if t.info.in_recovery {
        extra.insert("from_standby".into(), true.into());
    }
    Artifact {
        schema: SCHEMA.into(),
        record_type: "artifact".into(),
        id: format!("{}-{}-{}", t.kind.as_str(), t.name, stamp(&t.created)),
        kind: t.kind,
        cluster: t.cluster.to_string(),
        system_identifier: t.info.system_identifier.clone(),
        pg_version: Some(t.info.version.clone()),
        database: (t.kind == Kind::Logical).then(|| t.info.database.clone()),
        created: t.created,
        repo: ctx.repo.to_string_lossy().into_owned(),
        path,
        files: t.files,
        format: None,
        compression: None,
        row_counts: None,
        wal: None,
        encryption: None,
        copies: Vec::new(),
        verified: Vec::new(),
        extra,
    }
}

/// Writes the record's sidecar next to the artifact.
pub fn write_sidecar(a: &Artifact) -> Result<()> {
    let mut text =
        serde_json::to_vec_pretty(a).map_err(|e| Error::msg(format!("encode record: {e}")))?;
    text.push(b'\n');
    write_atomic(&a.sidecar(), &text, false)
}

/// Opens a psql session, naming what it is for in errors.
pub fn session(conn: &Conn, what: &str) -> Result<(Psql, ServerInfo)> {
    let mut psql = Psql::start(conn, what)?;
    let info = crate::meta::query(&mut psql)?;
    Ok((psql, info))
}

enum Job {
    Logical(Conn, String),
    Globals,
    Physical,
}

pub fn run(args: Args) -> ExitStatus {
    pgb_common::term::finish(try_run(args))
}

fn try_run(args: Args) -> Result<ExitStatus> {
    if args.dbname.is_empty() && !args.all_databases && !args.globals && !args.physical {
        return Err(Error::Usage(
            "nothing to back up: give -d DBNAME, --all-databases, --globals or --physical".into(),
        ));
    }
    if args.incremental.is_some() && !args.physical {
        return Err(Error::Usage("--incremental needs --physical".into()));
    }
    let identities = match args.identity.is_empty() {
        true => None,
        false => Some(pgb_common::crypt::Identities::load(&args.identity)?),
    };
    let method = Method::parse(&args.compress)?;
    if args.incremental.is_some() && matches!(method, Method::Native(_)) {
        // The chain is linked through the backup_label, which pgb reads
        // from zstd or plain tars only.
        return Err(Error::Usage(
            "--incremental needs --compress zstd[:LEVEL] or none, not pg_basebackup's gzip".into(),
        ));
    }
    let threads = args
        .threads
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1)
        })
        .max(1);
    create_dir_all_durable(&args.out)?;
    let repo = args.out.canonicalize().ctx("resolve", &args.out)?;
    let _lock = RepoLock::acquire(&repo, args.lock_wait.map(Duration::from_secs))?;
    let ctx = Ctx {
        repo,
        cluster: args.cluster.clone(),
        method,
        threads,
        row_counts: !args.no_row_counts,
        maintenance_db: args.maintenance_db.clone(),
        checkpoint: args.checkpoint.as_str(),
        statistics: args.statistics,
        incremental: args.incremental.clone(),
        max_chain: args.max_chain,
        identities,
    };

    // The first -d says how to reach the server; without one, libpq's
    // defaults and the maintenance database.
    let base = Conn::new(&args.conn, args.dbname.first().map(String::as_str))?;
    let server = match args.dbname.first() {
        Some(_) => base.clone(),
        None => base.with_database(&ctx.maintenance_db)?,
    };

    let mut out = RecordWriter::stdout_for(args.json, crate::summary::render);
    let mut status = ExitStatus::Ok;
    let mut outcomes = Vec::new();
    let mut jobs = Vec::new();
    if args.globals {
        jobs.push(Job::Globals);
    }
    let mut seen = std::collections::BTreeSet::new();
    for d in &args.dbname {
        if seen.insert(d.clone()) {
            jobs.push(Job::Logical(Conn::new(&args.conn, Some(d))?, d.clone()));
        }
    }
    if args.all_databases {
        let list = Conn::new(&args.conn, args.dbname.first().map(String::as_str))
            .and_then(|c| c.with_database(&ctx.maintenance_db))
            .and_then(|c| list_databases(&c));
        match list {
            Ok(names) => {
                outcomes.push(Outcome::listed(args.cluster.as_deref(), true));
                for n in names {
                    if seen.insert(n.clone()) {
                        jobs.push(Job::Logical(base.with_database(&n)?, n));
                    }
                }
            }
            Err(e) => {
                let msg = format!("list databases: {e}");
                warn(&msg);
                out.write(&error_record("pgb-snapshot", &msg, None, Map::new()))?;
                outcomes.push(Outcome::listed(args.cluster.as_deref(), false));
                status = ExitStatus::Error;
            }
        }
    }
    if args.physical {
        jobs.push(Job::Physical);
    }

    for job in jobs {
        let (result, ctx_fields) = match &job {
            Job::Logical(conn, given) => (
                crate::logical::dump(&ctx, conn, given),
                json!({"kind": "logical", "database": pgb_common::redact(given)}),
            ),
            Job::Globals => (
                crate::globals::dump(&ctx, &server),
                json!({"kind": "globals"}),
            ),
            Job::Physical => (
                crate::physical::backup(&ctx, &server),
                json!({"kind": "physical"}),
            ),
        };
        match result {
            Ok(a) => {
                outcomes.push(Outcome::success(&a));
                out.write(&a)?
            }
            Err(e) => {
                let (kind, database) = match &job {
                    Job::Logical(_, given) => (Kind::Logical, database_label(given)),
                    Job::Globals => (Kind::Globals, String::new()),
                    Job::Physical => (Kind::Physical, String::new()),
                };
                outcomes.push(Outcome::failure(args.cluster.as_deref(), kind, &database));
                let msg = e.to_string();
                warn(&msg);
                let fields = ctx_fields.as_object().cloned().unwrap_or_default();
                out.write(&error_record(
                    "pgb-snapshot",
                    &pgb_common::redact(&msg),
                    None,
                    fields,
                ))?;
                status = status.worst(ExitStatus::Error);
            }
        }
    }
    if let Some(path) = &args.prom {
        if let Err(e) = crate::prom::write(path, &outcomes) {
            warn(format!("metrics not written: {e}"));
            status = status.worst(ExitStatus::Error);
        }
    }
    Ok(status)
}

fn list_databases(conn: &Conn) -> Result<Vec<String>> {
    let mut psql = Psql::start(conn, "list databases")?;
    let rows = psql.query(
        "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname",
    )?;
    psql.close()?;
    Ok(rows
        .into_iter()
        .filter_map(|r| r.into_iter().next())
        .collect())
}
