//! Logical dumps: pg_dump custom format in the very snapshot the row counts
//! are taken in.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Instant;

use pgb_common::error::{Error, Result};
use pgb_common::pg::{self, quote_literal, Conn, Need, Psql};
use pgb_common::record::{Artifact, Kind};
use pgb_common::term::Progress;
use pgb_common::{redact, AtomicFile};

use crate::compress::{store, Method};
use crate::run::{
    artifact, file_entry, free_moment, now, session, stamp, write_sidecar, Ctx, Taken,
};

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
    // pg_dump of the server's major (or a newer one: pg_dump reads older
    // servers); --statistics needs 18.
    let (major, why) = info.need()?;
    let need = match ctx.statistics {
        true => Need::AtLeast(major.max(18)),
        false => Need::AtLeast(major),
    };
    let (conn, dumper) = conn.using("pg_dump", need, &why)?;
    let conn = &conn;
    // pg_dump 16+ writes zstd into the custom format itself: stock
    // `pg_restore -j` then restores the file as it is, with no decompressed
    // temp copy. Older ones get pgb's multi-threaded zstd around -Z0.
    let method = match ctx.method {
        Method::Zstd(l) if dumper.major >= 16 => Dumped::ByPgDump(format!("zstd:{l}")),
        Method::Zstd(_) => Dumped::ByPgb,
        Method::Native(l) => Dumped::ByPgDump(l.to_string()),
        Method::None => Dumped::ByPgDump("0".into()),
    };
    let dbname = info.database.clone();
    let what = format!("dump database {dbname}");
    let cluster = info.label(ctx.cluster.as_deref());

    // Export a snapshot and keep its transaction open until pg_dump is done
    // and the counts are taken in it.
    psql.query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")?;
    let snapshot = psql.value("SELECT pg_export_snapshot()")?;
    // The database's size, for the progress line's estimate (a dump is
    // smaller: no indexes, compressed).
    let estimate = match pgb_common::progress::wanted() {
        true => psql
            .value("SELECT pg_database_size(current_database())")?
            .parse()
            .ok(),
        false => None,
    };

    let dir = ctx.dir(&cluster, Kind::Logical, Some(&dbname))?;
    let ext = match method {
        Dumped::ByPgb => "dump.zst",
        Dumped::ByPgDump(_) => "dump",
    };
    let created = free_moment(created, &dir, |s| format!("{dbname}-{s}"));
    let file_name = format!("{dbname}-{}.{ext}", stamp(&created));
    let target = dir.join(&file_name);
    let file = AtomicFile::create(&target)?;

    let mut cmd = conn.command("pg_dump", true);
    cmd.args(["-Fc", "-w", "--snapshot", &snapshot])
        .arg(match &method {
            Dumped::ByPgDump(z) => format!("--compress={z}"),
            Dumped::ByPgb => "--compress=0".into(),
        })
        .stdout(Stdio::piped());
    if ctx.statistics {
        cmd.arg("--statistics");
    }
    let mut child = pg::spawn(cmd, &what)?;
    let stdout = child.take_stdout();
    let zstd = match method {
        Dumped::ByPgb => ctx.zstd(),
        Dumped::ByPgDump(_) => None,
    };
    let label = dbname.clone();
    let writer = std::thread::spawn(move || {
        let progress = Progress::estimated(label, estimate);
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

    let version = dumper.version;
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
    a.compression = Some(match method {
        Dumped::ByPgb => ctx.method.record("pgb", "pg_dump"),
        Dumped::ByPgDump(_) => ctx.method.record("pg_dump", "pg_dump"),
    });
    if ctx.statistics {
        a.extra.insert("statistics".into(), true.into());
    }
    if ctx.row_counts {
        a.row_counts = Some(counts);
    }
    a.extra.insert("snapshot".into(), snapshot.into());
    write_sidecar(&a)?;
    Ok(a)
}

/// Who compresses the dump: pgb's zstd around `pg_dump -Z0`, or pg_dump
/// itself with this `--compress` value.
enum Dumped {
    ByPgb,
    ByPgDump(String),
}

/// Exact row counts of every table pg_dump dumps, in the session's snapshot.
fn row_counts(psql: &mut Psql) -> Result<BTreeMap<String, u64>> {
    let tables: Vec<String> = psql
        .query(TABLES)?
        .into_iter()
        .filter_map(|r| r.into_iter().next())
        .collect();
    // The counts run beside pg_dump, whose COPY already keeps a core busy:
    // parallel workers would only take CPU from it. One process scans far
    // faster than the server writes COPY text, so the counts are still
    // done before the dump is (measured at pgbench scale 50 on 2 cores:
    // the snapshot's median 2.22 s with parallel counts, 2.02 s without).
    psql.query("SET LOCAL max_parallel_workers_per_gather = 0")?;
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
