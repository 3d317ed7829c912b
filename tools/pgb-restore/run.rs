//! Reads records (stdin) or picks them from a repository, restores what was
//! picked — globals, then databases, then a physical backup — and writes one
//! `restore` record per artifact, or an error record.

use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, FixedOffset, Local};
use pgb_common::crypt::Identities;
use pgb_common::error::{Error, IoContext, Result};
use pgb_common::jsonl::Input;
use pgb_common::physical::Target;
use pgb_common::record::{error_record, Artifact, Kind, SCHEMA};
use pgb_common::term::warn;
use pgb_common::wal::parse_lsn;
use pgb_common::{ExitStatus, RecordReader, RecordWriter};
use serde_json::{json, Map, Value};

use crate::cli::Args;
use crate::walcheck::TimelineGoal;

pub fn run(args: Args) -> ExitStatus {
    pgb_common::term::finish(try_run(args))
}

/// The recovery target the flags ask for.
pub fn target(args: &Args) -> Result<Target> {
    Ok(if let Some(t) = &args.target_time {
        parse_time(t)?;
        Target::Time(t.clone())
    } else if let Some(l) = &args.target_lsn {
        parse_lsn(l)
            .ok_or_else(|| Error::Usage(format!("--target-lsn {l:?}: not an LSN (X/Y)")))?;
        Target::Lsn(l.clone())
    } else if let Some(x) = &args.target_xid {
        if x.parse::<u64>().is_err() {
            return Err(Error::Usage(format!(
                "--target-xid {x:?}: not a transaction id"
            )));
        }
        Target::Xid(x.clone())
    } else if let Some(n) = &args.target_name {
        Target::Name(n.clone())
    } else if args.target_immediate {
        Target::Immediate
    } else {
        Target::End
    })
}

/// The timeline recovery follows (--target-timeline; latest when not
/// given).
pub fn timeline_goal(args: &Args) -> Result<TimelineGoal> {
    args.target_timeline
        .as_deref()
        .map_or(Ok(TimelineGoal::Latest), TimelineGoal::parse)
}

/// A recovery target time as PostgreSQL reads it: RFC 3339, or
/// `YYYY-MM-DD HH:MM:SS[.ffffff][+TZ]` (local time without a zone).
pub fn parse_time(s: &str) -> Result<DateTime<FixedOffset>> {
    pgb_common::when::parse_time("--target-time", s)
}

pub fn now() -> String {
    Local::now()
        .fixed_offset()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// The start of a `restore` record.
pub fn record(a: &Artifact) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("schema".into(), SCHEMA.into());
    m.insert("type".into(), "restore".into());
    m.insert("tool".into(), "pgb-restore".into());
    m.insert(
        "artifact".into(),
        json!({"id": a.id, "kind": a.kind.as_str(), "cluster": a.cluster,
               "database": a.database, "created": a.created, "repo": a.repo, "path": a.path}),
    );
    m
}

/// What one restore produced: its record and whether every check passed.
pub struct Done {
    pub record: Map<String, Value>,
    pub ok: bool,
}

fn try_run(args: Args) -> Result<ExitStatus> {
    let ids = if args.identity.is_empty() {
        None
    } else {
        Some(Identities::load(&args.identity)?)
    };
    let tgt = target(&args)?;
    let goal = timeline_goal(&args)?;
    let mut out = RecordWriter::stdout_for(args.json, crate::summary::render);
    let mut status = ExitStatus::Ok;
    let picked: Vec<(Artifact, Value)> = match &args.repo {
        Some(repo) => select(&args, repo, &tgt, goal, ids.as_ref())?,
        None => {
            pgb_common::term::refuse_terminal_stdin(
                "grep '\"id\":\"ID\"' /var/log/pgb/2026-11-21.jsonl | pgb-restore -d appdb_copy",
            )?;
            let mut v = Vec::new();
            for input in RecordReader::new(std::io::stdin().lock(), "stdin") {
                match input? {
                    Input::Artifact { artifact, raw, .. } => {
                        let val = serde_json::from_str(&raw).unwrap_or(Value::Null);
                        if let Err(e) = refuse_failed(&args, &artifact) {
                            warn(e.to_string());
                            status = status.worst(e.exit_status());
                            out.write(&error_record(
                                "pgb-restore",
                                &e.to_string(),
                                Some(&val),
                                Map::new(),
                            ))?;
                            continue;
                        }
                        v.push((*artifact, val));
                    }
                    Input::Error { raw, .. } => {
                        out.forward(&raw)?;
                        status = status.worst(ExitStatus::Error);
                    }
                    Input::Other { raw, .. } => out.forward(&raw)?,
                }
            }
            v
        }
    };
    // Validate the whole set before the first side effect.
    let physical: Vec<&Artifact> = picked
        .iter()
        .map(|p| &p.0)
        .filter(|a| a.kind == Kind::Physical)
        .collect();
    if physical.len() > 1 {
        return Err(Error::Usage(format!(
            "{} physical backups in the input; a data directory takes one (pick with --repo/--select)",
            physical.len()
        )));
    }
    if !physical.is_empty() && args.pgdata.is_none() {
        return Err(Error::Usage(
            "a physical restore needs -D/--pgdata DIR".into(),
        ));
    }
    if let Some(w) = picked.iter().find(|p| p.0.kind == Kind::Wal) {
        return Err(Error::Usage(format!(
            "{}: WAL segments are not restored on their own; give --wal-archive to a physical restore",
            w.0.id
        )));
    }
    if picked.is_empty() {
        warn("nothing to restore");
        return Ok(status);
    }
    // Every file there, as recorded, before anything is written (also for
    // --dry-run: a plan for files that cannot be read is no plan). A file
    // of another size than recorded is a verdict on that artifact (and so
    // on its set), given below in set order; a file that cannot be read
    // stops the run.
    let mut wrong_size: std::collections::BTreeMap<String, String> = Default::default();
    for (a, _) in &picked {
        match present(a) {
            Ok(()) => {}
            Err(Error::Damaged(why)) => {
                wrong_size.insert(a.id.clone(), why);
            }
            Err(e) => return Err(Error::msg(format!("{} {}: {e}", a.kind.as_str(), a.id))),
        }
    }
    let mut ordered: Vec<&(Artifact, Value)> = Vec::new();
    for k in [Kind::Globals, Kind::Logical, Kind::Physical] {
        ordered.extend(
            picked
                .iter()
                .filter(|p| p.0.kind == k && !(k == Kind::Globals && args.no_globals)),
        );
    }
    // After a damaged artifact the rest of the set is not restored: a
    // database without its roles, or roles without their database, is a
    // half-restore nobody asked for.
    let mut damaged: Option<String> = None;
    for (a, raw) in ordered {
        if let Some(d) = &damaged {
            let m = format!("not restored: the set's {d} is damaged");
            warn(format!("{} {}: {m}", a.kind.as_str(), a.id));
            let mut rec = record(a);
            rec.insert("ok".into(), false.into());
            rec.insert("when".into(), now().into());
            rec.insert("problems".into(), json!([m]));
            rec.insert("restored".into(), false.into());
            out.write(&Value::Object(rec))?;
            continue;
        }
        let started = Instant::now();
        let result = match a.kind {
            _ if wrong_size.contains_key(&a.id) => Err(Error::Damaged(wrong_size[&a.id].clone())),
            Kind::Globals => crate::logical::globals(&args, a, ids.as_ref()),
            Kind::Logical => crate::logical::database(&args, a, ids.as_ref()),
            Kind::Physical => crate::physical::restore(&args, a, ids.as_ref(), &tgt, goal),
            Kind::Wal => unreachable!("refused above"),
        };
        match result {
            Ok(mut done) => {
                done.record.insert("ok".into(), done.ok.into());
                done.record.insert("when".into(), now().into());
                done.record.insert(
                    "duration_ms".into(),
                    (started.elapsed().as_millis() as u64).into(),
                );
                if !done.ok {
                    status = status.worst(ExitStatus::No);
                }
                out.write(&Value::Object(done.record))?;
            }
            Err(Error::Damaged(why)) => {
                // A verdict on the backup: its stored bytes are not the
                // ones recorded. Nothing restored from them is kept.
                let e = Error::Damaged(why);
                warn(format!(
                    "{} {}: {e}; nothing was restored",
                    a.kind.as_str(),
                    a.id
                ));
                status = status.worst(ExitStatus::No);
                let mut rec = record(a);
                rec.insert("ok".into(), false.into());
                rec.insert("when".into(), now().into());
                rec.insert("problems".into(), json!([e.to_string()]));
                rec.insert("restored".into(), false.into());
                out.write(&Value::Object(rec))?;
                damaged = Some(format!("{} {}", a.kind.as_str(), a.id));
            }
            Err(e) => {
                warn(format!("{} {}: {e}", a.kind.as_str(), a.id));
                status = status.worst(e.exit_status());
                out.write(&error_record(
                    "pgb-restore",
                    &e.to_string(),
                    Some(raw),
                    Map::new(),
                ))?;
            }
        }
    }
    Ok(status)
}

/// Checks that the artifact's repository is there and holds each of its
/// files with the recorded size ([`Error::Damaged`] when one differs).
pub fn present(a: &Artifact) -> Result<()> {
    pgb_common::repo::check_present(a)?;
    let loc = a.location();
    // A remote physical backup's sizes come from one listing of its
    // directory (one session on an SSH host), not one question per file.
    let listed: Option<std::collections::HashMap<String, u64>> =
        if a.kind == Kind::Physical && pgb_common::store::is_url(&loc) {
            let d = pgb_common::store::destination(&loc)?;
            Some(
                d.list("", "")?
                    .into_iter()
                    .map(|l| (l.name, l.size))
                    .collect(),
            )
        } else {
            None
        };
    for f in &a.files {
        let p = if a.kind == Kind::Physical {
            loc.join(&f.name)
        } else {
            loc.clone()
        };
        let len = if let Some(listed) = listed.as_ref().filter(|_| !f.name.contains('/')) {
            *listed
                .get(&f.name)
                .ok_or_else(|| Error::msg(format!("{}: no such file or object", p.display())))?
        } else if pgb_common::store::is_url(&p) {
            pgb_common::store::size_of(&p)?
                .ok_or_else(|| Error::msg(format!("{}: no such file or object", p.display())))?
        } else {
            let md = std::fs::metadata(&p).ctx("open", &p)?;
            if !md.is_file() {
                return Err(Error::msg(format!("{}: not a file", p.display())));
            }
            md.len()
        };
        if len != f.size {
            return Err(Error::Damaged(format!(
                "{}: {} bytes, the record says {}",
                p.display(),
                len,
                f.size
            )));
        }
    }
    Ok(())
}

/// Every artifact record in a repository's sidecars, located in it.
fn load_repo(repo: &Path) -> Result<Vec<(Artifact, Value)>> {
    let repo = pgb_common::repo::absolute(repo)?;
    let mut out = Vec::new();
    for p in pgb_common::repo::catalog(&repo)? {
        if let Input::Artifact { artifact, raw, .. } = pgb_common::repo::read_in(&repo, &p)? {
            let v: Value = serde_json::from_str(&raw).expect("a record parsed once parses again");
            out.push((*artifact, v));
        }
    }
    out.sort_by_key(|(a, _)| a.created);
    Ok(out)
}

/// Picks from a repository: a physical backup (latest, by id, or the newest
/// that reaches the target), or with --database a dump plus its globals.
fn select(
    args: &Args,
    repo: &Path,
    tgt: &Target,
    goal: TimelineGoal,
    ids: Option<&Identities>,
) -> Result<Vec<(Artifact, Value)>> {
    let all = load_repo(repo)?;
    let in_cluster = |a: &Artifact| args.cluster.as_deref().is_none_or(|c| a.cluster == c);
    // Artifacts whose latest verification failed are passed over, each
    // named once on stderr.
    let skipped = std::cell::RefCell::new(std::collections::BTreeSet::new());
    let usable = |a: &Artifact| -> bool {
        if args.allow_failed {
            return true;
        }
        let failed = a.failed_verifications();
        if failed.is_empty() {
            return true;
        }
        if skipped.borrow_mut().insert(a.id.clone()) {
            warn(format!(
                "skipping {} {}: its latest verification failed ({}); --allow-failed restores it anyway",
                a.kind.as_str(),
                a.id,
                failed.join("; ")
            ));
        }
        false
    };
    // An incremental restores only with its whole chain: one whose chain
    // is broken, or has a member whose latest verification failed, is
    // passed over too.
    let physical_all: Vec<Artifact> = all
        .iter()
        .filter(|(a, _)| a.kind == Kind::Physical)
        .map(|(a, _)| a.clone())
        .collect();
    let chain_usable = |a: &Artifact| -> bool {
        if a.kind != Kind::Physical || !matches!(pgb_common::chain::incremental_of(a), Ok(Some(_)))
        {
            return true;
        }
        let why = match pgb_common::chain::resolve(a, &physical_all) {
            Err(e) => Some(e.to_string()),
            Ok(chain) => chain[..chain.len() - 1]
                .iter()
                .find(|m| !args.allow_failed && !m.failed_verifications().is_empty())
                .map(|m| {
                    format!(
                        "chain member {}: its latest verification failed ({}); --allow-failed \
                         restores it anyway",
                        m.id,
                        m.failed_verifications().join("; ")
                    )
                }),
        };
        match why {
            None => true,
            Some(why) => {
                if skipped.borrow_mut().insert(a.id.clone()) {
                    warn(format!("skipping physical {}: {why}", a.id));
                }
                false
            }
        }
    };
    let sel = args.select.as_str();
    let mut chosen: Vec<(Artifact, Value)> = Vec::new();
    if !matches!(sel, "latest" | "reach") {
        let found = all
            .iter()
            .find(|(a, _)| a.id == sel && in_cluster(a))
            .ok_or_else(|| {
                Error::Usage(format!("{}: no artifact with id {sel:?}", repo.display()))
            })?;
        refuse_failed(args, &found.0)?;
        chosen.push(found.clone());
    } else if let Some(db) = &args.database {
        if sel == "reach" {
            return Err(Error::Usage(
                "--select reach picks physical backups; not with --database".into(),
            ));
        }
        let found = all
            .iter()
            .rev()
            .find(|(a, _)| {
                a.kind == Kind::Logical
                    && a.database.as_deref() == Some(db)
                    && in_cluster(a)
                    && usable(a)
            })
            .ok_or_else(|| {
                Error::Usage(format!(
                    "{}: no logical dump of database {db:?}{}",
                    repo.display(),
                    if skipped.borrow().is_empty() {
                        ""
                    } else {
                        " whose latest verification passed"
                    }
                ))
            })?;
        chosen.push(found.clone());
    } else {
        let candidates: Vec<&(Artifact, Value)> = all
            .iter()
            .rev()
            .filter(|(a, _)| {
                a.kind == Kind::Physical && in_cluster(a) && usable(a) && chain_usable(a)
            })
            .collect();
        let first = candidates.first().ok_or_else(|| {
            Error::Usage(format!(
                "{}: no physical backup{}{}",
                repo.display(),
                args.cluster
                    .as_deref()
                    .map(|c| format!(" of cluster {c}"))
                    .unwrap_or_default(),
                if skipped.borrow().is_empty() {
                    ""
                } else {
                    " whose latest verification passed"
                }
            ))
        })?;
        if sel == "latest" {
            chosen.push((*first).clone());
        } else {
            let mut why = Vec::new();
            let found = candidates.iter().find(|(a, _)| {
                match crate::walcheck::reaches(a, &args.wal_archive, tgt, goal, ids) {
                    Ok(()) => true,
                    Err(e) => {
                        why.push(format!("{}: {e}", a.id));
                        false
                    }
                }
            });
            match found {
                Some(f) => chosen.push((*f).clone()),
                None => {
                    return Err(Error::msg(format!(
                        "no physical backup reaches the target: {}",
                        why.join("; ")
                    )))
                }
            }
        }
    }
    // A dump comes with its cluster's globals: the set taken closest to it.
    if chosen[0].0.kind == Kind::Logical && !args.no_globals {
        let t = chosen[0].0.created;
        let cluster = chosen[0].0.cluster.clone();
        if let Some(g) = all
            .iter()
            .filter(|(g, _)| g.kind == Kind::Globals && g.cluster == cluster && usable(g))
            .min_by_key(|(g, _)| (g.created - t).num_seconds().abs())
        {
            chosen.insert(0, g.clone());
        }
    }
    Ok(chosen)
}

/// Refuses an artifact whose latest verification failed, unless
/// --allow-failed.
fn refuse_failed(args: &Args, a: &Artifact) -> Result<()> {
    let failed = a.failed_verifications();
    if args.allow_failed || failed.is_empty() {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "{} {}: its latest verification failed ({}); not restored (--allow-failed restores it anyway)",
        a.kind.as_str(),
        a.id,
        failed.join("; ")
    )))
}

/// The pgb-wal binary next to this one.
pub fn pgb_wal() -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(|e| Error::io("locate", "pgb-restore", e))?;
    let exe = exe.canonicalize().unwrap_or(exe);
    let p = exe.with_file_name("pgb-wal");
    if !p.is_file() {
        return Err(Error::msg(format!(
            "{}: pgb-wal is not installed next to pgb-restore; restore_command needs it",
            p.display()
        )));
    }
    Ok(p)
}

/// Quotes a word for the shell restore_command runs in.
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:,=@".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_postgresql_writes_them() {
        let a = parse_time("2026-11-21 10:15:00.123456+00").unwrap();
        let b = parse_time("2026-11-21T10:15:00.123456Z").unwrap();
        assert_eq!(a, b);
        assert!(
            parse_time("2026-11-21 12:15:00+02").unwrap()
                < parse_time("2026-11-21 10:15:01+00").unwrap()
        );
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(sh_quote("/srv/wal"), "/srv/wal");
        assert_eq!(sh_quote("/srv/my wal"), "'/srv/my wal'");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
    }
}
