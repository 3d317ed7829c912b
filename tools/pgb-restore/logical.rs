//! Logical restores into a server: globals (roles) first, leaving roles that
//! already exist as they are; then a database with pg_restore -j, and the
//! row counts recorded at backup time compared.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use pgb_common::conninfo;
use pgb_common::crypt::Identities;
use pgb_common::error::{Error, IoContext, Result};
use pgb_common::pg::{self, quote_ident, quote_literal, Conn};
use pgb_common::record::Artifact;
use pgb_common::term::warn;
use pgb_common::unpack::{open_verified, OpenedVerified};
use serde_json::{json, Value};

use crate::cli::Args;
use crate::run::{record, Done};

/// The server connection (to `db`, or to the -d database).
fn server(args: &Args, db: Option<&str>) -> Result<Conn> {
    let c = Conn::new(&args.conn, args.dbname.as_deref())?;
    match db {
        Some(d) => c.with_database(d),
        None => Ok(c),
    }
}

/// Where the server is, for the record (no password).
fn describe(args: &Args) -> Value {
    json!({
        "host": args.conn.host.clone().or_else(|| std::env::var("PGHOST").ok()),
        "port": args.conn.port.clone().or_else(|| std::env::var("PGPORT").ok()),
        "dbname": args.dbname.as_deref().map(pgb_common::redact),
    })
}

/// The dump file, opened as plaintext with every stored byte compared with
/// the record's checksums as it streams.
fn plaintext(a: &Artifact, ids: Option<&Identities>) -> Result<(OpenedVerified, PathBuf)> {
    let path = a.location();
    if path.is_dir() {
        return Err(Error::msg(format!(
            "{}: a directory, not a dump file",
            path.display()
        )));
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let want = a
        .files
        .iter()
        .find(|f| Some(&f.name) == name.as_ref())
        .or_else(|| (a.files.len() == 1).then(|| &a.files[0]))
        .ok_or_else(|| {
            Error::msg(format!(
                "{}: the record lists no checksums for it; nothing was restored",
                path.display()
            ))
        })?;
    Ok((open_verified(&path, ids, want)?, path))
}

/// True when the stored file is a pg_dump archive as pg_dump wrote it (not
/// encrypted, not compressed by pgb), which pg_restore -j reads directly.
fn as_stored(a: &Artifact) -> bool {
    // pg_restore -j reads a local file; a remote dump is streamed into the
    // private temp file.
    if pgb_common::store::is_url(&a.location()) {
        return false;
    }
    let encrypted = a.encryption.is_some() || a.location().to_string_lossy().ends_with(".age");
    let by_pgb = a
        .compression
        .as_ref()
        .is_some_and(|c| c.by == "pgb" && c.algorithm != "none");
    !encrypted && !by_pgb
}

/// Copies a stored file's plaintext to `out` (`dest` in messages); then
/// compares every stored byte with the record ([`Error::Damaged`] naming the
/// file when they differ).
fn read_verified(
    o: &mut OpenedVerified,
    path: &Path,
    out: &mut impl Write,
    dest: &Path,
) -> Result<()> {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match o.reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(o.explain(Error::io("read", path, e))),
        };
        out.write_all(&buf[..n]).ctx("write", dest)?;
    }
    o.finish()
}

/// The role a `CREATE ROLE name;` or `ALTER ROLE name WITH ...` line names.
fn role_of(line: &str) -> Option<String> {
    let rest = line
        .strip_prefix("CREATE ROLE ")
        .or_else(|| line.strip_prefix("ALTER ROLE "))?;
    if let Some(q) = rest.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = q.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    name.push('"');
                } else {
                    return Some(name);
                }
            } else {
                name.push(c);
            }
        }
        None
    } else {
        Some(
            rest.split([' ', ';'])
                .next()
                .unwrap_or_default()
                .to_string(),
        )
    }
}

/// Filters pg_dumpall --globals-only output for a server that may already
/// have some of the roles: their CREATE ROLE and ALTER ROLE lines are left
/// out (existing roles keep their attributes and passwords); tablespaces are
/// left out (their locations belong to the source host).
pub fn filter_globals(
    sql: &str,
    existing: &BTreeSet<String>,
) -> (String, Vec<String>, Vec<String>) {
    let mut out = String::new();
    let mut kept_roles = Vec::new();
    let mut skipped = Vec::new();
    for l in sql.lines() {
        if l.starts_with("CREATE TABLESPACE") || l.starts_with("ALTER TABLESPACE") {
            skipped.push(l.to_string());
            continue;
        }
        if let Some(r) = role_of(l) {
            if existing.contains(&r) {
                if l.starts_with("CREATE ROLE") {
                    kept_roles.push(r);
                }
                continue;
            }
        }
        out.push_str(l);
        out.push('\n');
    }
    (out, kept_roles, skipped)
}

pub fn globals(args: &Args, a: &Artifact, ids: Option<&Identities>) -> Result<Done> {
    let admin = server(args, Some("postgres"))?;
    let (mut o, path) = plaintext(a, ids)?;
    let mut bytes = Vec::new();
    read_verified(&mut o, &path, &mut bytes, Path::new("memory"))?;
    let sql = String::from_utf8(bytes)
        .map_err(|_| Error::msg(format!("{}: not UTF-8 text", path.display())))?;
    let existing: BTreeSet<String> =
        pg::query(&admin, "SELECT rolname FROM pg_roles", "list roles")?
            .lines()
            .map(str::to_string)
            .collect();
    let (filtered, kept, skipped) = filter_globals(&sql, &existing);
    let mut rec = record(a);
    rec.insert("server".into(), describe(args));
    rec.insert("existing_roles_kept".into(), json!(kept));
    if !kept.is_empty() {
        warn(format!(
            "roles that already exist are left as they are: {}",
            kept.join(", ")
        ));
    }
    if !skipped.is_empty() {
        warn(format!(
            "{} tablespace statement(s) left out (locations belong to the source host); objects go to the default tablespace",
            skipped.len()
        ));
        rec.insert("tablespaces_skipped".into(), skipped.len().into());
    }
    if args.dry_run {
        rec.insert("dry_run".into(), true.into());
        rec.insert(
            "plan".into(),
            json!([format!(
                "run {} ({} lines) with psql, roles that exist skipped",
                path.display(),
                filtered.lines().count()
            )]),
        );
        return Ok(Done {
            record: rec,
            ok: true,
        });
    }
    let mut c = admin.command("psql", true);
    c.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    let mut child = pg::spawn(c, &format!("restore globals {}", path.display()))?;
    let mut stdin = child.take_stdin();
    let wrote = stdin.write_all(filtered.as_bytes());
    drop(stdin);
    child.wait()?;
    wrote.ctx("write to psql", &path)?;
    Ok(Done {
        record: rec,
        ok: true,
    })
}

/// The database to restore into: from -d (a name or a conninfo's dbname),
/// else the dump's own.
fn target_db(args: &Args, a: &Artifact) -> Result<String> {
    if let Some(d) = &args.dbname {
        if conninfo::is_conninfo(d) {
            if let Some(n) = conninfo::get(d, "dbname") {
                return Ok(n);
            }
        } else {
            return Ok(d.clone());
        }
    }
    a.database
        .clone()
        .ok_or_else(|| Error::Usage(format!("{}: the record names no database; give -d", a.id)))
}

/// Drops database `db` after a failed restore into it; when that fails
/// too, renames it `<db>_pgb_failed_<time>` so it cannot pass for a good
/// one. Says which on stderr.
fn undo_created(admin: &Conn, db: &str) {
    let dropped = pg::query(
        admin,
        &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(db)),
        "drop the half-restored database",
    );
    match dropped {
        Ok(_) => warn(format!(
            "database {db}: created by this run and not restored whole; dropped"
        )),
        Err(e) => {
            let new = format!(
                "{db}_pgb_failed_{}",
                chrono::Local::now().format("%Y%m%d%H%M%S")
            );
            match pg::query(
                admin,
                &format!(
                    "ALTER DATABASE {} RENAME TO {}",
                    quote_ident(db),
                    quote_ident(&new)
                ),
                "rename the half-restored database",
            ) {
                Ok(_) => warn(format!(
                    "database {db}: not restored whole and could not be dropped ({e}); renamed {new}"
                )),
                Err(e2) => warn(format!(
                    "database {db}: NOT RESTORED WHOLE; could neither drop it ({e}) nor rename it ({e2}): drop it by hand"
                )),
            }
        }
    }
}

/// A private temp directory, removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn database(args: &Args, a: &Artifact, ids: Option<&Identities>) -> Result<Done> {
    let db = target_db(args, a)?;
    let admin = server(args, Some("postgres"))?;
    let target = server(args, None)?.with_database(&db)?;
    let mut rec = record(a);
    rec.insert("server".into(), describe(args));
    rec.insert("database".into(), db.clone().into());
    let selective = !args.table.is_empty() || !args.schema.is_empty();
    // What was typed, checked before anything is read or written.
    let (tables, schemas, names) = crate::filter::pg_restore_filters(&args.table, &args.schema)?;
    if args.dry_run {
        let mut plan = Vec::new();
        if args.create_database {
            plan.push(format!("CREATE DATABASE {}", quote_ident(&db)));
        }
        plan.push(format!(
            "pg_restore -j {} {} into {db}",
            args.jobs.max(1),
            a.location().display()
        ));
        if a.row_counts.is_some() {
            plan.push("compare the recorded row counts".into());
        }
        rec.insert("dry_run".into(), true.into());
        rec.insert("plan".into(), json!(plan));
        return Ok(Done {
            record: rec,
            ok: true,
        });
    }
    // pg_restore -j needs a seekable plaintext file. A dump pg_dump wrote
    // as it is (its own zstd on 16+, gzip, none) and pgb did not encrypt is
    // one already: its checksums are settled by one read, then pg_restore
    // reads it in place. Otherwise the plaintext is written to a private
    // temp file first, which settles the checksums on the way. Either way
    // nothing reaches the server before the stored bytes match the record.
    let reading = pgb_common::progress::Progress::with_total(
        format!("restore {}: read and check", a.id),
        a.files.iter().map(|f| f.size).sum(),
    );
    let (mut o, path) = plaintext(a, ids)?;
    let tmp = TempDir(std::env::temp_dir().join(format!(
        "pgb-restore.{}.{}",
        std::process::id(),
        a.id.replace('/', "_")
    )));
    let dump = if as_stored(a) {
        read_verified(&mut o, &path, &mut std::io::sink(), &path)?;
        path.clone()
    } else {
        std::fs::create_dir(&tmp.0).ctx("create", &tmp.0)?;
        let dump = tmp.0.join("dump");
        let mut f = std::fs::File::create(&dump).ctx("create", &dump)?;
        read_verified(&mut o, &path, &mut f, &dump)?;
        f.flush().ctx("write", &dump)?;
        dump
    };
    drop(reading);
    // Every -t must name something in the dump: a filter that matches
    // nothing would restore nothing and compare no rows, and pass.
    if !tables.is_empty() {
        let mut l = for_dump(&target, a)?.command("pg_restore", false);
        l.arg("-l").arg(&dump).stdout(Stdio::piped());
        let toc = pg::output(l, &format!("list {}", path.display()))?;
        let toc = String::from_utf8_lossy(&toc);
        for t in &tables {
            if !crate::filter::listed(&toc, t) {
                let what = match &t.schema {
                    Some(s) => format!("{}.{}", quote_ident(s), quote_ident(&t.name)),
                    None => format!("{} (in any schema)", quote_ident(&t.name)),
                };
                return Err(Error::msg(format!(
                    "-t {}: the dump {} holds no table, view, sequence or foreign table {what}; \
                     nothing was restored (pg_restore -l lists what it holds)",
                    t.typed,
                    path.display()
                )));
            }
        }
    }
    // From here the target database changes: an interrupt (Ctrl-C) stops
    // pg_restore and says what it left behind instead of leaving silently.
    let guard = crate::interrupt::Guard::new();
    if args.create_database {
        pg::query(
            &admin,
            &format!("CREATE DATABASE {}", quote_ident(&db)),
            "create the target database",
        )?;
    }
    // A database this run created and could not fill is removed, so that
    // nobody takes it for a restored one.
    let undo = |e: Error| -> Error {
        if args.create_database {
            undo_created(&admin, &db);
        }
        e
    };
    let mut c = for_dump(&target, a)?.command("pg_restore", true);
    c.arg("-j")
        .arg(args.jobs.max(1).to_string())
        .args(["--exit-on-error", "--no-tablespaces"]);
    if args.no_owner {
        c.arg("--no-owner");
    }
    for t in &names {
        c.arg("-t").arg(t);
    }
    for n in &schemas {
        c.arg("-n").arg(n);
    }
    c.arg(&dump).stdin(Stdio::null()).stdout(Stdio::null());
    let _progress = pgb_common::progress::Progress::spinner(format!("pg_restore into {db}"));
    let started = guard.signalled().is_none();
    let restored = if !started {
        Err(Error::msg("interrupted before pg_restore started"))
    } else {
        pg::spawn(c, &format!("restore {} into {db}", path.display())).and_then(|r| {
            guard.child(r.id());
            if guard.signalled().is_some() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(r.id() as i32),
                    nix::sys::signal::Signal::SIGINT,
                );
            }
            r.wait()
        })
    };
    guard.child(0);
    if let Some(sig) = guard.signalled() {
        let left = match (&restored, args.create_database) {
            (Err(_), false) if !started => {
                format!("pg_restore did not start; database {db} was not changed")
            }
            (Ok(_), _) => {
                format!("database {db} was restored whole, but its row counts were not compared")
            }
            (Err(_), true) => {
                undo_created(&admin, &db);
                format!("database {db}, created by this run, was not restored whole")
            }
            (Err(_), false) => format!(
                "database {db} is HALF-FILLED: pg_restore was stopped part-way through {}; \
                 drop it (or empty it) before restoring into it again",
                path.display()
            ),
        };
        return Err(Error::msg(format!("interrupted by {sig}: {left}")));
    }
    drop(guard);
    restored.map_err(undo)?;
    drop(tmp);

    let mut problems = Vec::new();
    let mut compared = 0u64;
    if let Some(counts) = &a.row_counts {
        let keys: Vec<&String> = counts.keys().collect();
        let present: BTreeSet<String> = if keys.is_empty() {
            BTreeSet::new()
        } else {
            let arr = keys
                .iter()
                .map(|k| quote_literal(k))
                .collect::<Vec<_>>()
                .join(",");
            pg::query(
                &target,
                &format!(
                    "SELECT k FROM unnest(ARRAY[{arr}]::text[]) k WHERE to_regclass(k) IS NOT NULL"
                ),
                "find the restored tables",
            )?
            .lines()
            .map(str::to_string)
            .collect()
        };
        for k in &keys {
            if !present.contains(k.as_str()) && !selective {
                problems.push(format!("table {k}: missing after the restore"));
            }
        }
        let todo: Vec<&&String> = keys
            .iter()
            .filter(|k| present.contains(k.as_str()))
            .collect();
        for chunk in todo.chunks(100) {
            let sql = chunk
                .iter()
                .map(|t| format!("SELECT {}, count(*) FROM ONLY {t}", quote_literal(t)))
                .collect::<Vec<_>>()
                .join(" UNION ALL ");
            for line in pg::query(&target, &sql, "count rows")?.lines() {
                let Some((t, n)) = line.rsplit_once('\t') else {
                    continue;
                };
                compared += 1;
                let n: u64 = n.parse().unwrap_or(u64::MAX);
                if let Some(want) = counts.get(t) {
                    if *want != n {
                        problems.push(format!(
                            "table {t}: {n} rows after restore, {want} recorded"
                        ));
                    }
                }
            }
        }
    }
    for p in &problems {
        warn(format!("{}: {p}", a.id));
    }
    rec.insert(
        "row_counts".into(),
        json!({"compared": compared, "ok": problems.is_empty(), "problems": problems}),
    );
    let ok = problems.is_empty();
    Ok(Done { record: rec, ok })
}

/// `conn` running the pg_restore that reads `a`: of the major of the pg_dump
/// that wrote it, else the oldest newer one.
fn for_dump(conn: &pg::Conn, a: &Artifact) -> Result<pg::Conn> {
    let m = pgb_common::pgbin::writer_major(a)?;
    let why = format!("{} was written by PostgreSQL {m}", a.id);
    Ok(conn.using("pg_restore", pg::Need::AtLeast(m), &why)?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn existing_roles_and_tablespaces_are_left_out() {
        let sql = "CREATE ROLE app;\nALTER ROLE app WITH NOLOGIN;\nCREATE ROLE \"Odd \"\"x\";\nALTER ROLE \"Odd \"\"x\" WITH LOGIN;\nCREATE ROLE postgres;\nALTER ROLE postgres WITH SUPERUSER PASSWORD 'x';\nCREATE TABLESPACE ts OWNER app LOCATION '/x';\nGRANT app TO \"Odd \"\"x\";\n";
        let existing: BTreeSet<String> = ["postgres".to_string(), "Odd \"x".to_string()].into();
        let (out, kept, skipped) = filter_globals(sql, &existing);
        assert_eq!(
            out,
            "CREATE ROLE app;\nALTER ROLE app WITH NOLOGIN;\nGRANT app TO \"Odd \"\"x\";\n"
        );
        assert_eq!(kept, vec!["Odd \"x".to_string(), "postgres".to_string()]);
        assert_eq!(skipped.len(), 1);
    }
}
