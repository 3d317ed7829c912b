//! Reads the repository, filters, computes the windows, prints records or
//! a table, and judges --require-window.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::{DateTime, Utc};
use pgb_common::error::{Error, Result};
use pgb_common::jsonl::Input;
use pgb_common::record::{error_record, Artifact, Kind};
use pgb_common::repo::{absolute, read_in, sidecars};
use pgb_common::term::warn;
use pgb_common::when::{parse_duration, parse_time};
use pgb_common::{ExitStatus, RecordWriter};
use serde_json::{Map, Value};

use crate::cli::Args;
use crate::listing::{chains, listing, status, Status};
use crate::window::{window, Window};

pub fn run(args: Args) -> ExitStatus {
    pgb_common::term::finish(try_run(args))
}

/// `--since`: a duration back from `now`, or a time.
fn since(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    match parse_duration(s) {
        Ok(d) => Ok(now - chrono::Duration::from_std(d).map_err(|e| Error::Usage(e.to_string()))?),
        Err(_) => parse_time("--since", s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| {
                Error::Usage(format!(
                    "--since {s:?}: expected a duration (90s, 15m, 2h, 7d) or a time \
                     (\"2026-11-21 10:15:00+00\", RFC 3339)"
                ))
            }),
    }
}

/// Sidecars that could not be read as an artifact record: (path, why).
type Unreadable = Vec<(String, String)>;

/// Every artifact of the repository, located in it (their `repo` is the
/// directory or URL they were read from, wherever they were written), and
/// the sidecars that could not be read as one.
fn load(repo: &Path) -> Result<(Vec<Artifact>, Unreadable)> {
    let repo = absolute(repo)?;
    let mut arts = Vec::new();
    let mut bad = Vec::new();
    for p in sidecars(&repo)? {
        match read_in(&repo, &p) {
            Ok(Input::Artifact { artifact, .. }) => arts.push(*artifact),
            Ok(_) => bad.push((
                p.display().to_string(),
                "not an artifact record".to_string(),
            )),
            Err(e) => bad.push((p.display().to_string(), e.to_string())),
        }
    }
    Ok((arts, bad))
}

fn try_run(args: Args) -> Result<ExitStatus> {
    let now = Utc::now();
    let since = args.since.as_deref().map(|s| since(s, now)).transpose()?;
    let required = args
        .require_window
        .as_deref()
        .map(parse_duration)
        .transpose()?;
    let json = !pgb_common::human_wanted(args.json);
    let (all, bad) = load(&args.repo)?;
    if all.is_empty() && bad.is_empty() {
        return Err(Error::msg(format!(
            "{}: no artifacts: no .pgb.json sidecar below it (an empty or mistyped repository?)",
            args.repo.display()
        )));
    }
    let chain_of = chains(&all);
    let mut status_out = ExitStatus::Ok;
    for (p, why) in &bad {
        warn(format!("read: {p}: {why}"));
        status_out = ExitStatus::Error;
    }
    let in_cluster = |a: &&Artifact| args.cluster.as_deref().is_none_or(|c| a.cluster == c);
    let clustered: Vec<&Artifact> = all.iter().filter(in_cluster).collect();
    if clustered.is_empty() {
        if let Some(c) = &args.cluster {
            return Err(Error::Usage(format!(
                "--cluster {c:?}: no artifact of that cluster in {} (clusters: {})",
                args.repo.display(),
                all.iter()
                    .map(|a| a.cluster.as_str())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let mut shown: Vec<&Artifact> = clustered
        .iter()
        .copied()
        .filter(|a| {
            args.database
                .as_deref()
                .is_none_or(|d| a.database.as_deref() == Some(d))
        })
        .filter(|a| args.kind.as_deref().is_none_or(|k| a.kind.as_str() == k))
        .filter(|a| since.is_none_or(|t| a.created.with_timezone(&Utc) >= t))
        .filter(|a| {
            let s = status(a);
            match (args.failed, args.unverified) {
                (false, false) => true,
                (f, u) => (f && s == Status::Failed) || (u && s == Status::Unverified),
            }
        })
        .collect();
    shown.sort_by(|a, b| {
        (&a.cluster, a.kind, &a.database, a.created).cmp(&(
            &b.cluster,
            b.kind,
            &b.database,
            b.created,
        ))
    });

    let mut windows: Vec<Window> = Vec::new();
    if !args.wal_archive.is_empty() {
        let physical: BTreeSet<&str> = clustered
            .iter()
            .filter(|a| a.kind == Kind::Physical)
            .map(|a| a.cluster.as_str())
            .collect();
        if physical.len() > 1 {
            return Err(Error::Usage(format!(
                "--wal-archive: {} holds physical backups of several clusters ({}); \
                 name the one the archive belongs to with --cluster",
                args.repo.display(),
                physical.into_iter().collect::<Vec<_>>().join(", ")
            )));
        }
        let cluster = match (physical.into_iter().next(), &args.cluster) {
            (Some(c), _) => Some(c.to_string()),
            (None, Some(c)) => Some(c.clone()),
            (None, None) => clustered.first().map(|a| a.cluster.clone()),
        };
        if let Some(c) = cluster {
            let ids = if args.wal_identity.is_empty() {
                None
            } else {
                Some(pgb_common::crypt::Identities::load(&args.wal_identity)?)
            };
            windows.push(window(
                &c,
                &clustered,
                &args.wal_archive,
                ids.as_ref(),
                &chain_of,
            )?);
        }
    }
    let mut verdicts = Vec::new();
    for w in &windows {
        let verdict = required.map(|d| {
            let ok = !w.ranges.is_empty()
                && w.length() >= chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
            if !ok {
                warn(format!(
                    "{}: recovery window {} is shorter than the {} required",
                    w.cluster,
                    pgb_common::human::span(w.length()),
                    args.require_window.as_deref().unwrap_or_default()
                ));
                status_out = status_out.worst(ExitStatus::No);
            }
            ok
        });
        verdicts.push(verdict);
    }

    if json {
        let mut out = RecordWriter::stdout();
        for (p, why) in &bad {
            let mut ctx = Map::new();
            ctx.insert("sidecar".into(), p.clone().into());
            out.write(&error_record(
                "pgb-list",
                &format!("read: {p}: {why}"),
                None,
                ctx,
            ))?;
        }
        for a in &shown {
            out.write(&listing(
                a,
                now,
                &args.media,
                &args.site,
                chain_of.get(&a.id),
            ))?;
        }
        for (w, v) in windows.iter().zip(&verdicts) {
            let req = args.require_window.as_deref().zip(*v);
            out.write(&w.record(req))?;
        }
    } else {
        let rows: Vec<Value> = shown
            .iter()
            .map(|a| listing(a, now, &args.media, &args.site, chain_of.get(&a.id)))
            .collect();
        let text = crate::table::render(&rows, &windows, now, &chain_of);
        use std::io::Write;
        let mut o = std::io::stdout().lock();
        o.write_all(text.as_bytes())
            .and_then(|_| o.flush())
            .map_err(|e| Error::io("write", "stdout", e))?;
    }
    Ok(status_out)
}
