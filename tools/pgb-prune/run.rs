//! One pgb-prune run: read and check all input, plan, and with --apply
//! lock, plan again, delete what both plans delete, expire WAL.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::DateTime;
use pgb_common::dest::{file_rel, Destination};
use pgb_common::error::{Error, IoContext, Result};
use pgb_common::jsonl::Input;
use pgb_common::record::{error_record, Artifact, Kind, SCHEMA};
use pgb_common::repo::catalog;
use pgb_common::term::warn;
use pgb_common::{ExitStatus, RecordReader, RecordWriter, RemoteLock, RepoLock};
use serde_json::{json, Map, Value};

use crate::apply::{self, Refused};
use crate::cli::Args;
use crate::plan::{self, Candidate, Decision, Options, Plan};
use crate::policy::{Policy, Span};
use crate::remote::Place;
use crate::wal;

/// One artifact read and checked.
struct Item {
    /// Where it came from, for messages: `stdin: line 3` or a sidecar path.
    source: String,
    artifact: Artifact,
    root: PathBuf,
    /// Why it is incomplete, when it is.
    incomplete: Option<String>,
    /// Set when the artifact is not to be touched whatever the policy.
    hands_off: Option<String>,
}

enum Rec {
    Artifact(Box<Item>),
    Forward { raw: String, error: bool },
}

pub fn run(args: Args) -> ExitStatus {
    pgb_common::term::finish(try_run(&args))
}

fn options(args: &Args) -> Result<Options> {
    let within = args
        .keep_within
        .as_deref()
        .map(Span::parse)
        .transpose()
        .map_err(|e| Error::Usage(format!("--keep-within: {e}")))?;
    let now = match &args.now {
        Some(s) => DateTime::parse_from_rfc3339(s)
            .map_err(|e| Error::Usage(format!("--now {s:?}: not RFC 3339: {e}")))?,
        None => chrono::Local::now().fixed_offset(),
    };
    Ok(Options {
        policy: Policy {
            last: args.keep_last.unwrap_or(0),
            hourly: args.keep_hourly.unwrap_or(0),
            daily: args.keep_daily.unwrap_or(0),
            weekly: args.keep_weekly.unwrap_or(0),
            monthly: args.keep_monthly.unwrap_or(0),
            yearly: args.keep_yearly.unwrap_or(0),
            within,
        },
        require_verified: args.require_verified,
        now,
        tolerance: chrono::Duration::seconds(args.clock_tolerance.min(i64::MAX as u64) as i64),
    })
}

fn try_run(args: &Args) -> Result<ExitStatus> {
    if args.copies && !args.apply {
        return Err(Error::Usage("--copies needs --apply".into()));
    }
    let opts = options(args)?;
    if opts.policy.is_empty() {
        warn(match args.wal_archive {
            Some(_) => "no --keep-* rule given: the policy is empty and nothing will be deleted, WAL included",
            None => "no --keep-* rule given: the policy is empty and nothing will be deleted",
        });
    }
    let stdin_records = match &args.repo {
        Some(_) => None,
        None => {
            pgb_common::term::refuse_terminal_stdin(
                "cat /var/log/pgb/*.jsonl | pgb-prune --keep-daily 7",
            )?;
            Some(read_stdin()?)
        }
    };
    let recs = load(args, stdin_records.as_deref())?;
    let first = make_plan(&recs, &opts);
    let upstream_errors = recs
        .iter()
        .any(|r| matches!(r, Rec::Forward { error: true, .. }));
    let mut out = RecordWriter::stdout_for(args.json, crate::summary::render);
    let mut status = ExitStatus::Ok;
    if let Some(c) = &first.clock {
        warn(format!("nothing is deleted: {c}"));
        status = ExitStatus::Error;
    }
    for (r, d) in recs.iter().zip(&first.decisions) {
        if let (Rec::Artifact(i), Some(why)) =
            (r, d.reasons.iter().find(|x| x.starts_with("in the future")))
        {
            warn(format!(
                "{}: {} {}: {why}",
                i.source,
                i.artifact.kind.as_str(),
                i.artifact.id
            ));
        }
    }
    if upstream_errors {
        warn("the input holds error records from an earlier stage: nothing is deleted");
        status = ExitStatus::Error;
    }
    if !args.apply {
        warn(format!(
            "plan: {} of {} artifact(s) to delete (dry run: nothing is deleted without --apply)",
            first.deletes(),
            first.decisions.len()
                - recs
                    .iter()
                    .filter(|r| matches!(r, Rec::Forward { .. }))
                    .count()
        ));
    }
    let may_delete = args.apply && first.clock.is_none() && !upstream_errors;
    if !may_delete {
        print(&mut out, &recs, &first, &HashMap::new())?;
        let w = wal_expiry(args, &recs, &first, false, &mut out);
        return Ok(status.worst(w));
    }

    // Under the lock: read again, plan again, delete what both plans delete.
    let roots: BTreeSet<PathBuf> = recs
        .iter()
        .filter_map(|r| match r {
            Rec::Artifact(i) => Some(i.root.clone()),
            _ => None,
        })
        .chain(
            args.repo
                .as_deref()
                .map(pgb_common::repo::absolute)
                .transpose()?,
        )
        .collect();
    let mut _locks = Vec::new();
    let mut _remote_locks = Vec::new();
    let wait = args.lock_wait.map(Duration::from_secs);
    for r in &roots {
        if pgb_common::store::is_url(r) {
            let dest = pgb_common::store::destination(r)?;
            match RemoteLock::acquire(&dest, wait) {
                Ok(l) => _remote_locks.push(l),
                Err(e @ Error::Locked(_)) => {
                    warn(RemoteLock::stale_hint(&dest));
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        } else {
            _locks.push(RepoLock::acquire(r, wait)?);
        }
    }
    let recs2 = load(args, stdin_records.as_deref())?;
    let mut second = make_plan(&recs2, &opts);
    if let Some(c) = &second.clock {
        warn(format!("nothing is deleted: {c}"));
        status = ExitStatus::Error;
    }
    let planned: HashSet<(PathBuf, String)> = recs
        .iter()
        .zip(&first.decisions)
        .filter_map(|(r, d)| match r {
            Rec::Artifact(i) if d.delete => Some((i.root.clone(), i.artifact.path.clone())),
            _ => None,
        })
        .collect();
    for (r, d) in recs2.iter().zip(second.decisions.iter_mut()) {
        if let Rec::Artifact(i) = r {
            if d.delete && !planned.contains(&(i.root.clone(), i.artifact.path.clone())) {
                d.delete = false;
                d.reasons
                    .push("kept: the plan made before the lock was taken kept it".into());
            }
        }
    }
    let mut results: HashMap<usize, std::result::Result<(), String>> = HashMap::new();
    let mut opened: HashMap<PathBuf, Place> = HashMap::new();
    for (n, (r, d)) in recs2.iter().zip(&second.decisions).enumerate() {
        let Rec::Artifact(i) = r else { continue };
        if !d.delete {
            continue;
        }
        let res = delete_one(args, i, &mut opened);
        if let Err(e) = &res {
            warn(format!(
                "{}: {} {}: {e}",
                i.source,
                i.artifact.kind.as_str(),
                i.artifact.id
            ));
            status = status.worst(ExitStatus::Error);
        }
        results.insert(n, res.map_err(|e| e.to_string()));
    }
    print(&mut out, &recs2, &second, &results)?;
    let w = wal_expiry(args, &recs2, &second, true, &mut out);
    Ok(status.worst(w))
}

fn delete_one(args: &Args, i: &Item, opened: &mut HashMap<PathBuf, Place>) -> Result<()> {
    let a = &i.artifact;
    if args.copies {
        for copy in &a.copies {
            let d = Destination::from_copy(copy)?;
            let mut rels: Vec<String> = a.files.iter().map(|f| file_rel(a, f)).collect();
            if a.kind == Kind::Physical {
                rels.push(a.path.clone());
            }
            rels.push(apply::sidecar_rel(a));
            let rels: Vec<&str> = rels.iter().map(String::as_str).collect();
            d.remove_many(&rels)
                .map_err(|e| Error::msg(format!("copy at {}: {e}", d.url_of(&a.path))))?;
        }
    }
    if !opened.contains_key(&i.root) {
        opened.insert(i.root.clone(), Place::open(&i.root)?);
    }
    opened[&i.root].delete(a)
}

fn read_stdin() -> Result<Vec<Input>> {
    RecordReader::new(std::io::stdin().lock(), "stdin").collect()
}

fn read_sidecar(path: &Path) -> Result<Input> {
    if pgb_common::store::is_url(path) {
        // Read with the others in one go by the catalog, or fetched now.
        return match pgb_common::repo::read_sidecar(path)? {
            Input::Artifact { artifact, .. } => Ok(Input::Artifact {
                line: 1,
                raw: String::new(),
                artifact,
            }),
            _ => Err(Error::Input {
                source: path.display().to_string(),
                line: 1,
                msg: "a sidecar holds an artifact record; this is not one".into(),
            }),
        };
    }
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .ctx("read", path)?;
    let source = path.display().to_string();
    let bad = |line: usize, msg: String| Error::Input {
        source: source.clone(),
        line,
        msg,
    };
    let v: Value =
        serde_json::from_str(&text).map_err(|e| bad(e.line(), format!("malformed JSON: {e}")))?;
    if v.get("schema").and_then(Value::as_str) != Some(SCHEMA) {
        return Err(bad(1, format!("not a {SCHEMA} record")));
    }
    if v.get("type").and_then(Value::as_str) != Some("artifact") {
        return Err(bad(
            1,
            "a sidecar holds an artifact record; this is not one".into(),
        ));
    }
    let artifact: Artifact =
        serde_json::from_value(v).map_err(|e| bad(1, format!("invalid artifact record: {e}")))?;
    Ok(Input::Artifact {
        line: 1,
        raw: String::new(),
        artifact: Box::new(artifact),
    })
}

/// Reads and checks the whole input: records parse, no artifact twice,
/// every path stays inside its repository. Any failure aborts the run.
fn load(args: &Args, stdin: Option<&[Input]>) -> Result<Vec<Rec>> {
    let mut recs = Vec::new();
    let mut inputs: Vec<(String, Input, Option<PathBuf>)> = Vec::new();
    match (&args.repo, stdin) {
        (Some(repo), _) => {
            // Read where it lies: the records' repo is this directory.
            let repo = pgb_common::repo::absolute(repo)?;
            for s in catalog(&repo)? {
                let input = pgb_common::repo::in_repo(read_sidecar(&s)?, &repo);
                inputs.push((s.display().to_string(), input, Some(s)));
            }
        }
        (None, Some(stdin)) => {
            for input in stdin {
                let copy = match input {
                    Input::Artifact {
                        line,
                        raw,
                        artifact,
                    } => Input::Artifact {
                        line: *line,
                        raw: raw.clone(),
                        artifact: artifact.clone(),
                    },
                    Input::Error { line, raw } => Input::Error {
                        line: *line,
                        raw: raw.clone(),
                    },
                    Input::Other { line, raw } => Input::Other {
                        line: *line,
                        raw: raw.clone(),
                    },
                };
                inputs.push((format!("stdin: line {}", input.line()), copy, None));
            }
        }
        (None, None) => unreachable!("stdin is read when --repo is not given"),
    }
    let mut seen: HashMap<(PathBuf, String), String> = HashMap::new();
    let mut ids: HashMap<(String, String), String> = HashMap::new();
    let mut roots: HashMap<PathBuf, Place> = HashMap::new();
    for (source, input, sidecar) in inputs {
        let artifact = match input {
            Input::Artifact { artifact, .. } => *artifact,
            Input::Error { raw, .. } => {
                recs.push(Rec::Forward { raw, error: true });
                continue;
            }
            Input::Other { raw, .. } => {
                recs.push(Rec::Forward { raw, error: false });
                continue;
            }
        };
        let refuse = |why: String| {
            Error::msg(format!(
                "{source}: {} {}: {why}; nothing deleted",
                artifact.kind.as_str(),
                artifact.id
            ))
        };
        let root = PathBuf::from(&artifact.repo);
        if !root.is_absolute() && !pgb_common::store::is_url(&root) {
            return Err(refuse(format!(
                "repository {:?} is neither an absolute path nor an s3:// or ssh:// URL",
                artifact.repo
            )));
        }
        apply::check_rel(&artifact.path).map_err(|Refused(r)| refuse(r))?;
        if let Some(s) = &sidecar {
            // The record must describe the artifact beside its sidecar.
            if *s != root.join(apply::sidecar_rel(&artifact)) {
                return Err(refuse(format!(
                    "its path {:?} does not lead to this sidecar",
                    artifact.path
                )));
            }
        }
        let key = (root.clone(), artifact.path.clone());
        if let Some(prev) = seen.insert(key, source.clone()) {
            return Err(refuse(format!("the same artifact as {prev}")));
        }
        if let Some(prev) = ids.insert(
            (artifact.cluster.clone(), artifact.id.clone()),
            source.clone(),
        ) {
            return Err(refuse(format!("the same cluster and id as {prev}")));
        }
        if !roots.contains_key(&root) {
            pgb_common::repo::check_present(&artifact).map_err(|e| refuse(e.to_string()))?;
            let r = Place::open(&root).map_err(|e| refuse(e.to_string()))?;
            roots.insert(root.clone(), r);
        }
        let r = &roots[&root];
        let mut incomplete = r.inspect(&artifact)?.map_err(|Refused(x)| refuse(x))?;
        let mut hands_off = None;
        if sidecar.is_none() {
            // A record from a stream must match the sidecar in the
            // repository: anything else is not a pgb artifact there.
            let side = root.join(apply::sidecar_rel(&artifact));
            match r
                .has_file(&apply::sidecar_rel(&artifact))?
                .map_err(|Refused(x)| refuse(x))?
            {
                true => {
                    let on_disk = match read_sidecar(&side)? {
                        Input::Artifact { artifact: a, .. } => a,
                        _ => {
                            return Err(refuse(format!(
                                "{} is not an artifact record",
                                side.display()
                            )))
                        }
                    };
                    if on_disk.id != artifact.id || on_disk.path != artifact.path {
                        return Err(refuse(format!(
                            "{} holds another artifact ({})",
                            side.display(),
                            on_disk.id
                        )));
                    }
                }
                false => {
                    hands_off = Some(format!(
                        "no sidecar at {}: not an artifact of the repository, left alone",
                        side.display()
                    ));
                    incomplete.get_or_insert_with(|| "its sidecar is missing".into());
                }
            }
        }
        recs.push(Rec::Artifact(Box::new(Item {
            source,
            artifact,
            root,
            incomplete,
            hands_off,
        })));
    }
    Ok(recs)
}

fn make_plan(recs: &[Rec], opts: &Options) -> Plan {
    let items: Vec<&Item> = recs
        .iter()
        .filter_map(|r| match r {
            Rec::Artifact(i) => Some(&**i),
            _ => None,
        })
        .collect();
    let cands: Vec<Candidate> = items
        .iter()
        .map(|i| Candidate::of(&i.artifact, i.incomplete.clone()))
        .collect();
    let p = plan::make(&cands, opts);
    // Spread back over all records (forwarded ones get a dummy keep).
    let mut it = p.decisions.into_iter().zip(items);
    let mut decisions = Vec::with_capacity(recs.len());
    for r in recs {
        match r {
            Rec::Artifact(_) => {
                let (mut d, i) = it.next().expect("one decision per artifact");
                if let Some(h) = &i.hands_off {
                    if d.delete {
                        d.delete = false;
                    }
                    d.reasons.push(h.clone());
                }
                decisions.push(d);
            }
            Rec::Forward { .. } => decisions.push(Decision {
                delete: false,
                reasons: Vec::new(),
            }),
        }
    }
    Plan {
        decisions,
        clock: p.clock,
    }
}

fn print(
    out: &mut RecordWriter<std::io::Stdout>,
    recs: &[Rec],
    plan: &Plan,
    results: &HashMap<usize, std::result::Result<(), String>>,
) -> Result<()> {
    for (n, (r, d)) in recs.iter().zip(&plan.decisions).enumerate() {
        match r {
            Rec::Forward { raw, .. } => out.forward(raw)?,
            Rec::Artifact(i) => {
                let mut v = serde_json::to_value(&i.artifact)
                    .map_err(|e| Error::msg(format!("encode record: {e}")))?;
                let mut p = Map::new();
                p.insert(
                    "action".into(),
                    if d.delete { "delete" } else { "keep" }.into(),
                );
                p.insert("reasons".into(), json!(d.reasons));
                match results.get(&n) {
                    Some(Ok(())) => {
                        p.insert("deleted".into(), true.into());
                    }
                    Some(Err(e)) => {
                        let mut ctx = Map::new();
                        ctx.insert("kind".into(), i.artifact.kind.as_str().into());
                        let rec = error_record("pgb-prune", &format!("delete: {e}"), Some(&v), ctx);
                        out.write(&rec)?;
                        continue;
                    }
                    None => {}
                }
                v["prune"] = Value::Object(p);
                out.write(&v)?;
            }
        }
    }
    Ok(())
}

/// Plans (and with `apply`, does) the WAL expiry; prints its records.
fn wal_expiry(
    args: &Args,
    recs: &[Rec],
    plan: &Plan,
    apply: bool,
    out: &mut RecordWriter<std::io::Stdout>,
) -> ExitStatus {
    let Some(dir) = &args.wal_archive else {
        return ExitStatus::Ok;
    };
    // An empty policy deletes nothing: the archive is not expired either,
    // though WAL older than every backup is needed by none of them.
    if options(args).map_or(true, |o| o.policy.is_empty()) {
        return ExitStatus::Ok;
    }
    match wal_expiry_inner(dir, recs, plan, apply, out) {
        Ok(s) => s,
        Err(e) => {
            warn(format!("WAL expiry: {e}"));
            ExitStatus::Error
        }
    }
}

fn wal_expiry_inner(
    dir: &Path,
    recs: &[Rec],
    plan: &Plan,
    apply: bool,
    out: &mut RecordWriter<std::io::Stdout>,
) -> Result<ExitStatus> {
    let dir = &wal::Archive::of(dir)?;
    let names = wal::list(dir)?;
    let identity = wal::archive_identity(dir, &names);
    let mut kept = Vec::new();
    let mut seg_size: Option<u64> = None;
    let mut sysids = BTreeSet::new();
    for (r, d) in recs.iter().zip(&plan.decisions) {
        let Rec::Artifact(i) = r else { continue };
        let a = &i.artifact;
        if a.kind != Kind::Physical || d.delete {
            continue;
        }
        if let (Some((sysid, _)), Some(s)) = (identity, &a.system_identifier) {
            if *s != sysid.to_string() {
                continue;
            }
        }
        let w = a.wal.as_ref().ok_or_else(|| {
            Error::msg(format!(
                "{}: physical backup {} has no `wal` range; the archive is left alone",
                i.source, a.id
            ))
        })?;
        if *seg_size.get_or_insert(w.segment_size) != w.segment_size {
            return Err(Error::msg(
                "kept physical backups disagree on the WAL segment size; the archive is left alone"
                    .to_string(),
            ));
        }
        let (tli, segno) = match wal::name_of(&w.start_segment, w.segment_size) {
            wal::Named::Wal { tli, segno } => (tli, segno),
            _ => {
                return Err(Error::msg(format!(
                    "{}: backup {}: start segment {:?} is not a WAL segment name; the archive is left alone",
                    i.source, a.id, w.start_segment
                )))
            }
        };
        if let Some(s) = &a.system_identifier {
            sysids.insert(s.clone());
        }
        kept.push(wal::Needs {
            id: a.id.clone(),
            timeline: tli,
            start_segno: segno,
        });
    }
    if identity.is_none() && sysids.len() > 1 {
        return Err(Error::msg(format!(
            "no segment of {} could be read to tell its cluster, and the kept physical backups come from several ({}); the archive is left alone",
            dir.name(),
            sysids.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    if let (Some((_, arch)), Some(s)) = (identity, seg_size) {
        if arch != s {
            return Err(Error::msg(format!(
                "the archive's segments are {arch} bytes, the backups say {s}; the archive is left alone"
            )));
        }
    }
    let seg_size = seg_size.or(identity.map(|i| i.1)).unwrap_or(16 << 20);
    let anc = wal::ancestors(dir, &names)?;
    let p = wal::plan(&names, &kept, &anc, seg_size);
    let archive = dir.name();
    // Every range's files in one batch, oldest first per timeline (one
    // session on an SSH host).
    let removed = if apply && !p.ranges.is_empty() {
        let files: Vec<&String> = p.ranges.iter().flat_map(|r| r.files.iter()).collect();
        Some(wal::remove(dir, &files))
    } else {
        None
    };
    if let Some(Err(e)) = &removed {
        warn(format!("WAL expiry: {e}"));
        let rec = error_record("pgb-prune", &format!("WAL expiry: {e}"), None, Map::new());
        out.write(&rec)?;
        return Ok(ExitStatus::Error);
    }
    for r in &p.ranges {
        let mut rec = json!({
            "schema": SCHEMA, "type": "wal-expiry", "archive": archive,
            "timeline": r.timeline, "first": r.first, "last": r.last,
            "files": r.files.len(), "action": "delete", "reason": r.reason,
        });
        if removed.is_some() {
            rec["deleted"] = true.into();
        }
        out.write(&rec)?;
    }
    if let Some(why) = &p.nothing {
        out.write(&json!({
            "schema": SCHEMA, "type": "wal-expiry", "archive": archive,
            "files": 0, "action": "keep", "reason": why,
        }))?;
    }
    Ok(ExitStatus::Ok)
}
