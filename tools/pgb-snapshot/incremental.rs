//! --incremental: choosing the parent of an incremental base backup
//! (PostgreSQL 17+) and handing pg_basebackup its backup_manifest, or
//! saying why a full backup is taken instead.

use std::io::Read;
use std::path::{Path, PathBuf};

use pgb_common::chain::{depth_of, load_physical};
use pgb_common::error::{Error, Result};
use pgb_common::pg::Psql;
use pgb_common::record::Artifact;
use pgb_common::term::warn;
use pgb_common::unpack::open_verified;

use crate::meta::ServerInfo;
use crate::run::Ctx;

/// The parent an incremental is taken on.
pub struct Parent {
    pub id: String,
    /// The new backup's depth (the parent's + 1).
    pub depth: u32,
    /// The parent's backup_manifest, in a temp file removed on drop.
    pub manifest: TempFile,
}

/// A temp file (with the repository's temp mark, so an interrupted run's
/// leftover is cleaned by the next one) removed when dropped.
pub struct TempFile(pub PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The server's current timeline, when it can be read: a primary's from
/// its WAL insert position (pg_control's lags until the checkpoint after a
/// promotion), a standby's from its last checkpoint.
pub fn current_timeline(psql: &mut Psql) -> Result<Option<u32>> {
    let rows = psql.query(
        "SELECT CASE WHEN NOT pg_is_in_recovery()
                     THEN (('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int)::text
                     WHEN has_function_privilege('pg_control_checkpoint()', 'execute')
                     THEN (SELECT timeline_id FROM pg_control_checkpoint())::text
                END",
    )?;
    Ok(rows
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next())
        .and_then(|t| t.parse().ok()))
}

fn full(why: String) -> Result<Option<Parent>> {
    warn(format!("--incremental: {why}; taking a full backup"));
    Ok(None)
}

/// The parent for `--incremental=WANT` (`auto` or an id), or `None` (a
/// full backup, the reason said on stderr). `dir` is the cluster's
/// physical directory in the repository.
pub fn choose(
    ctx: &Ctx,
    info: &ServerInfo,
    major: u32,
    timeline: Option<u32>,
    dir: &Path,
    want: &str,
) -> Result<Option<Parent>> {
    if major < 17 {
        return full(format!(
            "the server runs PostgreSQL {}; incremental backups need PostgreSQL 17 or newer",
            info.version
        ));
    }
    let Some(sysid) = info.system_identifier.as_deref() else {
        return full(
            "the server's system identifier cannot be read (pg_control_system() is not \
             granted), so no parent can be matched to this cluster"
                .into(),
        );
    };
    let all = load_physical(&ctx.repo, dir)?;
    let parent: &Artifact = if want == "auto" {
        let found = all.iter().rev().find(|a| {
            a.system_identifier.as_deref() == Some(sysid) && a.failed_verifications().is_empty()
        });
        match found {
            Some(p) => p,
            None => {
                return full(format!(
                    "no earlier physical backup of this cluster (system identifier {sysid}) \
                     whose verifications passed in {}",
                    dir.display()
                ))
            }
        }
    } else {
        let p = all.iter().find(|a| a.id == want).ok_or_else(|| {
            Error::Usage(format!(
                "--incremental={want}: no physical backup with that id in {}",
                dir.display()
            ))
        })?;
        if p.system_identifier.as_deref() != Some(sysid) {
            return Err(Error::Usage(format!(
                "--incremental={want}: that backup is of another cluster (system identifier {}, \
                 the server's is {sysid})",
                p.system_identifier.as_deref().unwrap_or("unknown")
            )));
        }
        p
    };
    if let (Some(now), Some(w)) = (timeline, &parent.wal) {
        if now != w.timeline {
            return full(format!(
                "the server is on timeline {now}, its last backup {} on timeline {}",
                parent.id, w.timeline
            ));
        }
    }
    // An incremental on a parent whose own chain is broken could never be
    // restored.
    if let Err(e) = pgb_common::chain::resolve(parent, &all) {
        return full(format!(
            "not on {}, whose own chain is broken: {e}",
            parent.id
        ));
    }
    let depth = depth_of(parent)? + 1;
    if depth + 1 > ctx.max_chain {
        return full(format!(
            "the chain ending in {} has {depth} member{} (--max-chain {})",
            parent.id,
            if depth == 1 { "" } else { "s" },
            ctx.max_chain
        ));
    }
    let manifest = parent_manifest(ctx, parent, dir)?;
    Ok(Some(Parent {
        id: parent.id.clone(),
        depth,
        manifest,
    }))
}

/// The parent's backup_manifest, checked against its record (and
/// decrypted), in a temp file next to the backups.
fn parent_manifest(ctx: &Ctx, parent: &Artifact, dir: &Path) -> Result<TempFile> {
    let entry = parent
        .files
        .iter()
        .find(|f| {
            f.name == "backup_manifest"
                || f.name == format!("backup_manifest{}", pgb_common::crypt::SUFFIX)
        })
        .ok_or_else(|| {
            Error::msg(format!(
                "--incremental: {}: the record lists no backup_manifest",
                parent.id
            ))
        })?;
    if entry.name.ends_with(pgb_common::crypt::SUFFIX) && ctx.identities.is_none() {
        return Err(Error::Usage(format!(
            "--incremental: the parent {} is encrypted: give its identity with -i FILE to read \
             its backup_manifest (or take a full backup without --incremental)",
            parent.id
        )));
    }
    let path = parent.location().join(&entry.name);
    let mut o = open_verified(&path, ctx.identities.as_ref(), entry)?;
    let mut bytes = Vec::new();
    o.reader
        .read_to_end(&mut bytes)
        .map_err(|e| o.explain(Error::io("read", &path, e)))?;
    o.finish()?;
    let tmp = TempFile(pgb_common::fs::temp_path_for(&dir.join("parent_manifest")));
    pgb_common::physical::write_owned(&tmp.0, &bytes, None, false)?;
    Ok(tmp)
}

/// True when pg_basebackup refused the incremental for want of WAL
/// summaries (summarize_wal off, or summaries missing for the parent's
/// range): a full backup is taken instead.
pub fn wants_summaries(e: &Error) -> bool {
    match e {
        Error::Child { stderr, .. } => {
            stderr.contains("WAL summar") || stderr.contains("summarize_wal")
        }
        _ => false,
    }
}
