//! Logical dumps: pg_dump custom format in the very snapshot the row counts
//! are taken in.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Instant;

use pgb_common::error::{Error, Result};
use pgb_common::pg::{self, quote_literal, Conn, Psql};
use pgb_common::record::{Artifact, Kind};
use pgb_common::term::Progress;
use pgb_common::{redact, AtomicFile};

use crate::compress::{store, Method};
use crate::run::{artifact, file_entry, now, session, stamp, write_sidecar, Ctx, Taken};

/// Tables whose rows pg_dump writes: ordinary tables outside the system
/// schemas that no extension owns, named as `schema.table` with identifiers
/// quoted where SQL needs it.
const TABLES: &str = "SELECT format('%I.%I', n.nspname, c.relname)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'r' AND c.relpersistence <> 't'
   AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'
   AND NOT EXISTS (SELECT 1 FROM pg_depend d
                    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
 ORDER BY 1";

pub fn dump(ctx: &Ctx, conn: &Conn, given: &str) -> Result<Artifact> {
    let shown = redact(given);
    let started = Instant::now();
    let created = now();
    let (mut psql, info) = session(conn, &format!("connect to database {shown}"))?;
    let dbname = info.database.clone();
    let what = format!("dump database {dbname}");
    let cluster = info.label(ctx.cluster.as_deref());

    // Export a snapshot and keep its transaction open until pg_dump is done
    // and the counts are taken in it.
    psql.query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")?;
    let snapshot = psql.value("SELECT pg_export_snapshot()")?;

    let dir = ctx.dir(&cluster, Kind::Logical, Some(&dbname))?;
    let ext = match ctx.method {
        Method::Zstd(_) => "dump.zst",
        _ => "dump",
    };
    let file_name = format!("{dbname}-{}.{ext}", stamp(&created));
    let target = dir.join(&file_name);
    let file = AtomicFile::create(&target)?;

    let mut cmd = conn.command("pg_dump", true);
    cmd.args(["-Fc", "-w", "--snapshot", &snapshot])
        .arg(match ctx.method {
            Method::Native(l) => format!("-Z{l}"),
            _ => "-Z0".into(),
        })
        .stdout(Stdio::piped());
    let mut child = pg::spawn(cmd, &what)?;
    let stdout = child.take_stdout();
    let zstd = ctx.zstd();
    let label = dbname.clone();
    let writer = std::thread::spawn(move || {
        let progress = Progress::new(label);
        store(stdout, file, zstd, &progress)
    });

    let counts = if ctx.row_counts {
        row_counts(&mut psql)
    } else {
        Ok(BTreeMap::new())
    };
    let stored = writer
        .join()
        .map_err(|_| Error::msg(format!("{what}: writer thread panicked")))?;
    // Both must succeed: a dump that died half-way must not count, whatever
    // was written. A failed write is reported first: it is what made
    // pg_dump's pipe break.
    let dumped = child.wait();
    let (file, digests) = stored.map_err(|e| Error::msg(format!("{what}: {e}")))?;
    dumped?;
    let counts = counts.map_err(|e| Error::msg(format!("{what}: row counts: {e}")))?;
    psql.query("ROLLBACK")?;
    psql.close()?;
    file.commit()?;

    let version = pg::program_version(ctx_bindir(conn), "pg_dump")?;
    let mut a = artifact(
        ctx,
        Taken {
            kind: Kind::Logical,
            name: &dbname,
            info: &info,
            cluster: &cluster,
            created,
            location: &target,
            files: vec![file_entry(&file_name, digests)],
            started,
        },
        ("pg_dump", &version),
    );
    a.format = Some("pg_dump-custom".into());
    a.compression = Some(ctx.method.record("pgb", "pg_dump"));
    if ctx.row_counts {
        a.row_counts = Some(counts);
    }
    a.extra.insert("snapshot".into(), snapshot.into());
    write_sidecar(&a)?;
    Ok(a)
}

pub fn ctx_bindir(conn: &Conn) -> Option<&std::path::Path> {
    conn.args().pg_bindir.as_deref()
}

/// Exact row counts of every table pg_dump dumps, in the session's snapshot.
fn row_counts(psql: &mut Psql) -> Result<BTreeMap<String, u64>> {
    let tables: Vec<String> = psql
        .query(TABLES)?
        .into_iter()
        .filter_map(|r| r.into_iter().next())
        .collect();
    let mut counts = BTreeMap::new();
    for chunk in tables.chunks(100) {
        let sql = chunk
            .iter()
            .map(|t| format!("SELECT {}, count(*) FROM ONLY {t}", quote_literal(t)))
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        for r in psql.query(&sql)? {
            let n = r
                .get(1)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| Error::msg(format!("unexpected count row {r:?}")))?;
            counts.insert(r[0].clone(), n);
        }
    }
    Ok(counts)
}
