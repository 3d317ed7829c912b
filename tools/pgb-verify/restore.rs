//! Real test restores. Logical dumps: into a throwaway cluster (or
//! `--target`), globals first, `pg_restore -j`, then every recorded table's
//! exact row count compared, smoke queries run, and the time measured.
//! Physical backups: unpacked into a throwaway directory (as pgb-restore
//! does, manifest checked on the way), started with recovery to the end of
//! the included WAL (`recovery_target = 'immediate'`), promoted, queried in
//! every database, smoke queries run, timed, and removed.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use pgb_common::error::{Error, IoContext, Result};
use pgb_common::pg::{self, quote_ident, quote_literal, Conn, ConnArgs};
use pgb_common::pgbin;
use pgb_common::record::{Artifact, Kind};
use pgb_common::term::warn;
use serde_json::Value;

use crate::cluster::TempCluster;

use crate::run::{file_path, open_plain, Ctx, Verdict};

/// A verdict on the backup, or `Err` when the run could not reach one: the
/// server to restore into is down or unreachable, a program is missing, the
/// temp disk is full. Such an error is no verdict and is recorded as none.
pub fn check(ctx: &Ctx, a: &Artifact) -> Result<Verdict> {
    match a.kind {
        Kind::Logical => logical(ctx, a),
        Kind::Physical => physical(ctx, a),
        _ => Ok(Verdict::skip()),
    }
}

/// Compares a stored file, read whole, with the record's size and
/// checksums: the problem when they differ or it cannot be read.
fn stored_problem(a: &Artifact, f: &pgb_common::record::FileEntry) -> Option<String> {
    let path = file_path(a, f);
    let want = pgb_common::digest::Expected {
        shown: path.display().to_string(),
        size: f.size,
        sha256: f.sha256.clone(),
        blake3: f.blake3.clone(),
    };
    // A local file or an object of a remote repository, streamed.
    let read = pgb_common::store::open(&path).and_then(|r| {
        pgb_common::digest::hash_reader_parallel(r)
            .map_err(|e| Error::msg(pgb_common::error::io_cause(&e)))
    });
    match read {
        Ok(d) => want.mismatch(&d),
        Err(Error::Io { source, .. }) => Some(format!(
            "{}: {}",
            path.display(),
            pgb_common::error::io_cause(&source)
        )),
        Err(e) if e.to_string().contains(&want.shown) => Some(e.to_string()),
        Err(e) => Some(format!("{}: {e}", path.display())),
    }
}

/// Whether the server behind `admin` still answers: when it does not, a
/// failed step says nothing about the backup.
fn answers(admin: &Conn) -> Result<()> {
    pg::query(admin, "SELECT 1", "reach the server").map(|_| ())
}

/// The newest globals artifact of the same cluster in the same repository
/// (a directory or a remote one), as the repository's sidecars say.
fn globals_for(a: &Artifact) -> Option<(PathBuf, Artifact)> {
    let repo = Path::new(&a.repo);
    let dir = repo.join(&a.cluster).join("globals");
    let mut found: Vec<Artifact> = pgb_common::repo::sidecars(&dir)
        .ok()?
        .into_iter()
        .filter_map(|p| match pgb_common::repo::read_in(repo, &p).ok()? {
            pgb_common::jsonl::Input::Artifact { artifact, .. } => Some(*artifact),
            _ => None,
        })
        .filter(|g| g.kind == Kind::Globals)
        .collect();
    found.sort_by_key(|g| g.created);
    let g = found.pop()?;
    let f = g.files.first()?.clone();
    Some((file_path(&g, &f), g))
}

fn logical(ctx: &Ctx, a: &Artifact) -> Result<Verdict> {
    let db = a.database.clone().unwrap_or_else(|| "restored".into());
    // A server and pg_restore that read what the dump's pg_dump wrote.
    let program = if ctx.args.target.is_some() {
        "pg_restore"
    } else {
        "postgres"
    };
    let bindir = Some(pgbin::for_dump(ctx.args.pg_bindir.as_deref(), a, program)?.bindir());
    let client = ConnArgs {
        pg_bindir: bindir.clone(),
        ..ConnArgs::default()
    };
    // Where to restore: a throwaway cluster, or a scratch database on --target.
    let (cluster, admin, scratch_db) = match &ctx.args.target {
        Some(t) => {
            let c = Conn::new(&client, Some(t))?;
            (None, c, format!("pgb_verify_{}_{}", std::process::id(), db))
        }
        None => {
            let tc = crate::cluster::start(bindir.clone())?;
            let args = ConnArgs {
                host: Some(tc.socket.display().to_string()),
                port: Some(tc.port.to_string()),
                username: Some("postgres".into()),
                pg_bindir: bindir.clone(),
            };
            let c = Conn::new(&args, Some("postgres"))?;
            // A fresh cluster has postgres, template0 and template1 already:
            // a dump of one of them goes into a database of its own.
            let exists = pg::query(
                &c,
                &format!(
                    "SELECT count(*) FROM pg_database WHERE datname = {}",
                    quote_literal(&db)
                ),
                "list databases",
            )?;
            let name = if exists.trim() == "0" {
                db.clone()
            } else {
                format!("pgb_verify_{db}")
            };
            (Some(tc), c, name)
        }
    };
    let mut details = serde_json::Map::new();
    let result = restore_and_compare(ctx, a, cluster.as_ref(), &admin, &scratch_db, &mut details);
    if ctx.args.target.is_some() {
        let drop = format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(&scratch_db)
        );
        if let Err(e) = pg::query(&admin, &drop, "drop the scratch database") {
            warn(e.to_string());
        }
    }
    drop(cluster);
    let mut v = result?;
    if scratch_db != db && ctx.args.target.is_none() {
        v.extra
            .insert("restored_as".into(), scratch_db.clone().into());
    }
    for (k, val) in details {
        v.extra.insert(k, val);
    }
    Ok(v)
}

fn restore_and_compare(
    ctx: &Ctx,
    a: &Artifact,
    cluster: Option<&TempCluster>,
    admin: &Conn,
    db: &str,
    details: &mut serde_json::Map<String, Value>,
) -> Result<Verdict> {
    // Extensions the dump needs must be installable on the target.
    let available = pg::query(
        admin,
        "SELECT name FROM pg_available_extensions",
        "list extensions",
    )?;
    let available: std::collections::BTreeSet<&str> = available.lines().collect();
    let missing: Vec<String> = a
        .extra
        .get("extensions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e["name"].as_str())
        .filter(|n| !available.contains(n))
        .map(str::to_string)
        .collect();
    if !missing.is_empty() {
        return Ok(Verdict::fail(format!(
            "extensions the dump needs are not available on the target: {}",
            missing.join(", ")
        )));
    }

    // Every stored byte matches the record before anything is restored.
    if let Some(p) = a.files.iter().find_map(|f| stored_problem(a, f)) {
        return Ok(Verdict::fail(p));
    }
    let started = Instant::now();
    let mut have_roles = cluster.is_none();
    // Globals first, so owners and grantees exist (throwaway cluster only;
    // tablespaces are left out: their locations belong to the source host).
    if cluster.is_some() {
        match globals_for(a) {
            Some((path, g)) => {
                if let Some(p) = g.files.iter().find_map(|f| stored_problem(&g, f)) {
                    return Ok(Verdict::fail(format!("globals {}: {p}", g.id)));
                }
                let mut sql = String::new();
                let read = open_plain(&g, &path)
                    .and_then(|mut r| r.read_to_string(&mut sql).map(|_| ()).ctx("read", &path));
                match read {
                    Err(e) if e.is_infrastructure() => return Err(e),
                    Err(e) => return Ok(Verdict::fail(format!("globals {}: {e}", g.id))),
                    Ok(()) => {}
                }
                let filtered: String = sql
                    .lines()
                    .filter(|l| {
                        !l.starts_with("CREATE TABLESPACE") && !l.starts_with("ALTER TABLESPACE")
                    })
                    .map(|l| format!("{l}\n"))
                    .collect();
                let mut c = admin.command("psql", true);
                c.args(["-X", "-q", "-f", "-"])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null());
                let mut child = pg::spawn(c, "restore globals")?;
                let mut stdin = child.take_stdin();
                let _ = stdin.write_all(filtered.as_bytes());
                drop(stdin);
                child.wait()?;
                details.insert("globals".into(), g.id.clone().into());
                have_roles = true;
            }
            None => warn(format!(
                "{}: no globals artifact in the repository: restoring without owners and grants",
                a.id
            )),
        }
    }

    // pg_restore -j needs a seekable plaintext file: a dump pgb compressed,
    // one in a remote repository, or any encrypted one (whatever its compression: pg_dump's own gzip is
    // read by pg_restore after decryption) is written out in the clear next
    // to the cluster, or to a private temp file for --target.
    let f = a
        .files
        .first()
        .ok_or_else(|| Error::msg("the record lists no file"))?;
    let src = file_path(a, f);
    let pgb_zstd = a
        .compression
        .as_ref()
        .is_some_and(|c| c.algorithm == "zstd" && c.by == "pgb");
    let mut temp = None;
    let mut cleanup = Cleanup(None);
    // A dump in a remote repository is streamed into that file too.
    let remote = pgb_common::store::is_url(&src);
    let plain = if pgb_zstd || remote || crate::stored::is_encrypted(a) {
        let dst = match cluster {
            Some(tc) => {
                cleanup = Cleanup(Some(tc.scratch("dump")));
                tc.scratch("dump")
            }
            None => temp.insert(crate::cluster::dump_temp()).path.clone(),
        };
        match decompress(a, &src, &dst) {
            Err(e) if e.is_infrastructure() => return Err(e),
            Err(e) => return Ok(Verdict::fail(e.to_string())),
            Ok(()) => {}
        }
        dst
    } else {
        src.clone()
    };

    pg::query(
        admin,
        &format!("CREATE DATABASE {}", quote_ident(db)),
        "create the restore database",
    )?;
    let target = admin.with_database(db)?;
    let mut c = target.command("pg_restore", true);
    c.arg("-j")
        .arg(ctx.args.jobs.max(1).to_string())
        .args(["--no-tablespaces", "--exit-on-error"])
        .args(if have_roles {
            &[][..]
        } else {
            &["--no-owner", "--no-acl"][..]
        })
        .arg(&plain)
        .stdout(Stdio::null());
    let restored = pg::spawn(c, &format!("restore {}", src.display())).and_then(|r| r.wait());
    drop(cleanup);
    drop(temp);
    let restore_ms = started.elapsed().as_millis() as u64;
    details.insert("restore_ms".into(), restore_ms.into());
    if let Err(e) = restored {
        // pg_restore fails for the dump's sake, or because the server went
        // away or ran out of room: only the first is a verdict.
        if e.is_infrastructure() {
            return Err(e);
        }
        answers(admin)?;
        return Ok(Verdict::fail(e.to_string()));
    }

    let mut problems = Vec::new();
    let mut compared = 0u64;
    if let Some(counts) = &a.row_counts {
        let tables: Vec<&String> = counts.keys().collect();
        for chunk in tables.chunks(100) {
            let sql = chunk
                .iter()
                .map(|t| format!("SELECT {}, count(*) FROM ONLY {t}", quote_literal(t)))
                .collect::<Vec<_>>()
                .join(" UNION ALL ");
            let out = match pg::query(&target, &sql, "count rows") {
                Ok(o) => o,
                Err(e) => {
                    answers(admin)?;
                    problems.push(e.to_string());
                    continue;
                }
            };
            for line in out.lines() {
                let Some((t, n)) = line.rsplit_once('\t') else {
                    continue;
                };
                let n: u64 = n.parse().unwrap_or(u64::MAX);
                compared += 1;
                match counts.get(t) {
                    Some(want) if *want == n => {}
                    Some(want) => problems.push(format!(
                        "table {t}: {n} rows after restore, {want} recorded"
                    )),
                    None => {}
                }
            }
        }
    }
    details.insert("tables_compared".into(), compared.into());

    if let Some(sql) = &ctx.args.sql {
        let mut cmd = target.command("psql", true);
        cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f"])
            .arg(sql)
            .stdout(Stdio::null());
        if let Err(e) = pg::output(cmd, &format!("smoke queries {}", sql.display())) {
            if e.is_infrastructure() {
                return Err(e);
            }
            answers(admin)?;
            problems.push(e.to_string());
        }
    }
    if let Some(rto) = ctx.rto {
        if restore_ms > rto.as_millis() as u64 {
            problems.push(format!(
                "restore took {:.1} s, more than the RTO of {} s",
                restore_ms as f64 / 1000.0,
                rto.as_secs()
            ));
        }
    }
    Ok(Verdict::new(problems))
}

/// A physical test restore: unpack, recover to consistency, promote, query.
fn physical(ctx: &Ctx, a: &Artifact) -> Result<Verdict> {
    use pgb_common::physical::{self, Recovery, Target};
    let ids = if ctx.args.identity.is_empty() {
        None
    } else {
        Some(pgb_common::crypt::Identities::load(&ctx.args.identity)?)
    };
    if physical::is_encrypted(a) && ids.is_none() {
        warn(format!(
            "{}: restore: skipped: encrypted, no identity (give -i FILE)",
            a.id
        ));
        return Ok(Verdict::skip());
    }
    let layout = match physical::layout(a) {
        Ok(l) => l,
        Err(e) => return Ok(Verdict::fail(e.to_string())),
    };
    // An incremental is restored through its whole chain.
    let chain = match pgb_common::chain::incremental_of(a) {
        Ok(None) => None,
        Ok(Some(_)) => match crate::chain::members(a)? {
            Ok(c) => Some(c),
            Err(why) => return Ok(Verdict::fail(why)),
        },
        Err(e) => return Ok(Verdict::fail(e.to_string())),
    };
    if let Some(chain) = &chain {
        if let Some(m) = chain
            .iter()
            .find(|m| physical::is_encrypted(m) && ids.is_none())
        {
            warn(format!(
                "{}: restore: skipped: chain member {} is encrypted, no identity (give -i FILE)",
                a.id, m.id
            ));
            return Ok(Verdict::skip());
        }
    }
    let bindir = Some(pgbin::for_physical(ctx.args.pg_bindir.as_deref(), a, "postgres")?.bindir());
    if chain.is_some() {
        pgbin::for_physical(ctx.args.pg_bindir.as_deref(), a, "pg_combinebackup")?;
    }
    let started = Instant::now();
    let tc = crate::cluster::create(bindir.clone())?;
    let owner = pgb_common::cluster::owner_ids();
    let data = tc.data();
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&data)
            .ctx("create", &data)?;
    }
    if let Some(o) = owner {
        o.apply(&data)?;
    }
    // Tablespaces inside the throwaway directory, never where the source has
    // them.
    let tablespace_map = layout
        .tablespaces
        .iter()
        .map(|(oid, _)| (*oid, tc.dir.join("tblspc").join(oid.to_string())))
        .collect();
    let opts = physical::Options {
        owner,
        identities: ids.as_ref(),
        tablespace_map,
        skip_wal: false,
    };
    let restored = match &chain {
        Some(chain) => {
            let bin = bindir.clone().unwrap_or_default();
            pgb_common::combine::restore_chain(chain, &data, &opts, &bin)
        }
        None => physical::restore(a, &data, &opts),
    };
    let restored = match restored {
        Ok(r) => r,
        // A full temp disk or a missing program is no verdict.
        Err(e) if e.is_infrastructure() => return Err(e),
        Err(e) => return Ok(Verdict::fail(e.to_string())),
    };
    Recovery {
        restore_command: "false".into(),
        target: Target::Immediate,
        action: "promote".into(),
        inclusive: true,
        standby: false,
        extra: tc.settings(),
    }
    .write(&data, owner)?;
    let limit = std::time::Duration::from_secs(600);
    if let Err(e) = tc.pg_start(limit).and_then(|_| tc.wait_promoted(limit)) {
        return Ok(Verdict::fail(format!(
            "the restored backup did not start: {e}"
        )));
    }
    let admin = Conn::new(&tc.conn_args(), Some("postgres"))?;
    let mut problems = Vec::new();
    // The restored server not answering is about the backup.
    let dbs = match pg::query(
        &admin,
        "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1",
        "list databases",
    ) {
        Ok(d) => d,
        Err(e) => {
            problems.push(e.to_string());
            String::new()
        }
    };
    let mut queried = 0u64;
    for db in dbs.lines() {
        match admin
            .with_database(db)
            .and_then(|c| pg::query(&c, "SELECT count(*) FROM pg_class", &format!("query {db}")))
        {
            Ok(_) => queried += 1,
            Err(e) => problems.push(e.to_string()),
        }
    }
    if let Some(sql) = &ctx.args.sql {
        let db = a.database.as_deref().unwrap_or("postgres");
        let mut cmd = admin.with_database(db)?.command("psql", true);
        cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f"])
            .arg(sql)
            .stdout(Stdio::null());
        if let Err(e) = pg::output(cmd, &format!("smoke queries {}", sql.display())) {
            problems.push(e.to_string());
        }
    }
    let restore_ms = started.elapsed().as_millis() as u64;
    drop(tc);
    if let Some(rto) = ctx.rto {
        if restore_ms > rto.as_millis() as u64 {
            problems.push(format!(
                "restore took {:.1} s, more than the RTO of {} s",
                restore_ms as f64 / 1000.0,
                rto.as_secs()
            ));
        }
    }
    let mut v = Verdict::new(problems);
    if let Some(chain) = &chain {
        let ids: Vec<&str> = chain.iter().map(|m| m.id.as_str()).collect();
        v = v.with("chain", serde_json::json!(ids));
    }
    Ok(v.with("restore_ms", restore_ms.into())
        .with("files_restored", restored.files.into())
        .with("manifest_checked", restored.manifest_checked.into())
        .with("databases_queried", queried.into()))
}

struct Cleanup(Option<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn decompress(a: &Artifact, src: &Path, dst: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut r = open_plain(a, src)?;
    // Plaintext of a possibly encrypted dump: readable by us only.
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(dst)
        .ctx("create", dst)?;
    std::io::copy(&mut r, &mut out).ctx("decompress", src)?;
    Ok(())
}
