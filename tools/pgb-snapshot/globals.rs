//! Globals: roles, memberships and tablespaces, from pg_dumpall
//! --globals-only, in their own artifact.

use std::process::Stdio;
use std::time::Instant;

use pgb_common::error::{Error, Result};
use pgb_common::pg::{self, Conn, Need};
use pgb_common::record::{Artifact, Kind};
use pgb_common::term::Progress;
use pgb_common::AtomicFile;

use crate::compress::{store, Method};
use crate::run::{
    artifact, file_entry, free_moment, now, session, stamp, write_sidecar, Ctx, Taken,
};

pub fn dump(ctx: &Ctx, server: &Conn) -> Result<Artifact> {
    let started = Instant::now();
    let created = now();
    let (psql, info) = session(server, "connect for globals")?;
    psql.close()?;
    let (major, why) = info.need()?;
    let (server, dumper) = server.using("pg_dumpall", Need::AtLeast(major), &why)?;
    let server = &server;
    let cluster = info.label(ctx.cluster.as_deref());
    let dir = ctx.dir(&cluster, Kind::Globals, None)?;
    let created = free_moment(created, &dir, |s| format!("{cluster}-{s}"));
    let file_name = match ctx.zstd() {
        Some(_) => format!("{cluster}-{}.sql.zst", stamp(&created)),
        None => format!("{cluster}-{}.sql", stamp(&created)),
    };
    let target = dir.join(&file_name);
    let file = AtomicFile::create(&target)?;
    let what = "dump globals";
    let mut cmd = server.command("pg_dumpall", true);
    cmd.args(["--globals-only", "-w", "-l", &info.database])
        .stdout(Stdio::piped());
    let mut child = pg::spawn(cmd, what)?;
    let stored = store(
        child.take_stdout(),
        file,
        ctx.zstd(),
        &Progress::new("globals"),
    );
    let dumped = child.wait();
    let (file, digests) = stored.map_err(|e| Error::msg(format!("{what}: {e}")))?;
    dumped?;
    file.commit()?;
    let version = dumper.version;
    let mut a = artifact(
        ctx,
        Taken {
            kind: Kind::Globals,
            name: &cluster,
            info: &info,
            cluster: &cluster,
            created,
            location: &target,
            files: vec![file_entry(&file_name, digests)],
            started,
        },
        ("pg_dumpall", &version),
    );
    a.format = Some("sql".into());
    // pg_dumpall has no compression of its own: pg_dump:N stores it plain.
    let method = match ctx.method {
        Method::Zstd(l) => Method::Zstd(l),
        _ => Method::None,
    };
    a.compression = Some(method.record("pgb", "pgb"));
    write_sidecar(&a)?;
    Ok(a)
}
