//! Reads records, copies each artifact to every destination in parallel,
//! records the verified copies (stdout, local sidecar, sidecar beside each
//! copy), judges --require, and maps the outcome to an exit status.

use std::path::Path;

use pgb_common::dest::{file_rel, Destination, Labels, Readback};
use pgb_common::digest::Digests;
use pgb_common::error::{Error, Result};
use pgb_common::evidence;
use pgb_common::fs::remove_leftover_temps;
use pgb_common::jsonl::Input;
use pgb_common::record::{error_record, Artifact, Kind};
use pgb_common::repo::{catalog, check_present, read_in};
use pgb_common::term::{warn, Progress};
use pgb_common::{ExitStatus, RecordReader, RecordWriter, RepoLock};
use serde_json::{json, Map, Value};

use crate::cli::Args;

/// One `--to`: where, and its labels filled in with the defaults.
struct Target {
    dest: Destination,
    media: String,
    site: String,
    /// How a directory copy is read back (--verify).
    readback: Readback,
    /// Why this destination cannot be used at all (a directory that is not
    /// there): every artifact fails on it.
    broken: Option<String>,
    _lock: Option<RepoLock>,
}

pub fn run(args: Args) -> ExitStatus {
    pgb_common::term::finish(try_run(args))
}

fn targets(args: &Args) -> Result<Vec<Target>> {
    let ssh_args: Vec<String> = args
        .ssh_option
        .iter()
        .flat_map(|o| ["-o".to_string(), o.clone()])
        .collect();
    let mut out: Vec<Target> = Vec::new();
    for spec in &args.to {
        let (mut dest, Labels { media, site }) = Destination::parse(spec)?;
        dest.add_ssh_options(&ssh_args);
        dest.set_s3_endpoint(args.s3_endpoint.as_deref());
        dest.set_s3_region(args.s3_region.as_deref());
        if out.iter().any(|t| t.dest.root_url() == dest.root_url()) {
            return Err(Error::Usage(format!(
                "--to {}: given twice",
                dest.root_url()
            )));
        }
        let (mut broken, mut lock) = (None, None);
        if let Destination::Dir(root) = &dest {
            if !root.is_dir() {
                broken = Some(format!(
                    "{}: no such directory (not mounted?); pgb-ship does not create it",
                    root.display()
                ));
            } else {
                lock = Some(RepoLock::acquire(
                    root,
                    args.lock_wait.map(std::time::Duration::from_secs),
                )?);
            }
        }
        out.push(Target {
            media: media.unwrap_or_else(|| dest.default_media().to_string()),
            site: site.unwrap_or_else(|| "onsite".to_string()),
            readback: match args.verify.as_str() {
                "disk" => Readback::Disk,
                _ => Readback::Cache,
            },
            dest,
            broken,
            _lock: lock,
        });
    }
    Ok(out)
}

fn now() -> String {
    chrono::Local::now()
        .fixed_offset()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

fn try_run(args: Args) -> Result<ExitStatus> {
    let targets = targets(&args)?;
    let roots = targets.iter().map(|t| t.dest.root_url()).collect();
    let mut out = RecordWriter::stdout_for(
        args.json,
        crate::summary::renderer(roots, args.require.is_some()),
    );
    let mut status = ExitStatus::Ok;
    let mut handle =
        |input: Result<Input>, out: &mut RecordWriter<std::io::Stdout>| -> Result<()> {
            match input {
                Err(e) => {
                    warn(e.to_string());
                    status = status.worst(ExitStatus::Error);
                }
                Ok(Input::Artifact { artifact, .. }) => {
                    let (record, s) = ship(&args, &targets, *artifact);
                    status = status.worst(s);
                    out.write(&record)?;
                }
                Ok(Input::Error { raw, .. }) => {
                    out.forward(&raw)?;
                    status = status.worst(ExitStatus::Error);
                }
                Ok(Input::Other { raw, .. }) => out.forward(&raw)?,
            }
            Ok(())
        };
    match &args.repo {
        Some(repo) => {
            let repo = pgb_common::repo::absolute(repo)?;
            for sidecar in catalog(&repo)? {
                handle(read_in(&repo, &sidecar), &mut out)?;
            }
        }
        None => {
            pgb_common::term::refuse_terminal_stdin(
                "pgb-snapshot -d appdb --out /srv/backups/pg | pgb-ship --to /mnt/nas/pg",
            )?;
            let stdin = std::io::stdin().lock();
            for input in RecordReader::new(stdin, "stdin") {
                handle(input, &mut out)?;
            }
        }
    }
    Ok(status)
}

/// Refuses a directory destination that is the repository itself: its
/// "copy" would be the original.
fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Copies every file of `a` to `t`; the copies entry on success.
fn ship_to(t: &Target, a: &Artifact, progress: &Progress) -> Result<Value> {
    if let Some(why) = &t.broken {
        return Err(Error::msg(why.clone()));
    }
    if let Destination::Dir(root) = &t.dest {
        if same_dir(root, Path::new(&a.repo)) {
            return Err(Error::msg(format!(
                "{}: is the artifact's own repository, not another copy",
                root.display()
            )));
        }
    }
    let loc = a.location();
    let mut verified = "readback";
    let mut all_existed = true;
    for f in &a.files {
        let src = if a.kind == Kind::Physical {
            loc.join(&f.name)
        } else {
            loc.clone()
        };
        let expect = Digests {
            size: f.size,
            sha256: f.sha256.clone(),
            blake3: f.blake3.clone(),
        };
        let rel = file_rel(a, f);
        if let Destination::Dir(root) = &t.dest {
            // Under the destination's lock: temps of killed runs are garbage.
            let dir = root.join(&rel);
            for p in remove_leftover_temps(dir.parent().unwrap_or(root))? {
                warn(format!("removed {}, left by a killed run", p.display()));
            }
        }
        let c = t
            .dest
            .put_file(&src, &rel, &expect, &|n| progress.add(n), t.readback)?;
        verified = c.verified;
        all_existed &= c.existed;
    }
    let files: Vec<Value> = a
        .files
        .iter()
        .map(|f| json!({"name": f.name, "size": f.size, "sha256": f.sha256, "blake3": f.blake3}))
        .collect();
    let mut entry = Map::new();
    entry.insert("to".into(), t.dest.root_url().into());
    entry.insert("url".into(), t.dest.url_of(&a.path).into());
    entry.insert("media".into(), t.media.clone().into());
    entry.insert("site".into(), t.site.clone().into());
    if let Destination::S3(s) = &t.dest {
        if let Some(e) = &s.endpoint {
            entry.insert("endpoint".into(), e.clone().into());
        }
        if let Some(r) = &s.region {
            entry.insert("region".into(), r.clone().into());
        }
    }
    entry.insert("files".into(), files.into());
    entry.insert("verified".into(), verified.into());
    entry.insert("when".into(), now().into());
    if all_existed {
        entry.insert("existing".into(), true.into());
    }
    Ok(Value::Object(entry))
}

/// 3-2-1 for an incremental holds only when it holds for every member of
/// its chain (read from the repository's sidecars, where the members
/// shipped before it have their copies recorded): a member that fails it,
/// or a chain that does not resolve, fails the artifact's `policy`, named
/// in `failed`; `chain` lists the members.
fn chain_policy(args: &Args, a: &Artifact, p: &mut Value) {
    if !matches!(pgb_common::chain::incremental_of(a), Ok(Some(_))) {
        return;
    }
    let repo = std::path::Path::new(&a.repo);
    let chain = pgb_common::chain::load_physical(repo, repo)
        .and_then(|all| pgb_common::chain::resolve(a, &all));
    let mut failed: Vec<String> = Vec::new();
    match chain {
        Err(e) => failed.push(format!("chain: {e}")),
        Ok(chain) => {
            for m in &chain[..chain.len() - 1] {
                let mp = pgb_common::policy::three_two_one(&m.copies, &args.media, &args.site, "");
                if mp["ok"] != true {
                    let why: Vec<&str> = mp["failed"]
                        .as_array()
                        .map(|v| v.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    failed.push(format!("chain member {}: {}", m.id, why.join("; ")));
                }
            }
            p["chain"] = json!(chain.iter().map(|m| m.id.as_str()).collect::<Vec<_>>());
        }
    }
    if !failed.is_empty() {
        p["ok"] = false.into();
        if let Some(f) = p["failed"].as_array_mut() {
            f.extend(failed.into_iter().map(Value::from));
        }
    }
}

/// Ships one artifact; the record to print and the outcome.
fn ship(args: &Args, targets: &[Target], a: Artifact) -> (Value, ExitStatus) {
    let label = format!("{} {}", a.kind.as_str(), a.id);
    // The sidecar on disk is the source of truth: a record from stdin (an
    // old one replayed, too) is merged into it before anything is judged.
    let mut a = match check_present(&a).and_then(|()| evidence::adopt(a.clone())) {
        Ok(merged) => merged,
        Err(e) => {
            warn(format!("{label}: {e}"));
            let record = serde_json::to_value(&a).unwrap_or(Value::Null);
            return (
                error_record("pgb-ship", &e.to_string(), Some(&record), Map::new()),
                ExitStatus::Error,
            );
        }
    };
    let results: Vec<Result<Value>> = {
        let bytes: u64 = a.files.iter().map(|f| f.size).sum();
        let progress = Progress::with_total(
            format!("{label}: copying"),
            bytes.saturating_mul(targets.len() as u64),
        );
        std::thread::scope(|s| {
            let handles: Vec<_> = targets
                .iter()
                .map(|t| {
                    let (a, progress) = (&a, &progress);
                    s.spawn(move || ship_to(t, a, progress))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::msg("copy thread panicked")))
                })
                .collect()
        })
    };
    let mut failed: Vec<(String, String)> = Vec::new();
    let mut done: Vec<&Target> = Vec::new();
    for (t, r) in targets.iter().zip(results) {
        match r {
            Ok(entry) => {
                let url = entry["url"].clone();
                a.copies.retain(|c| c.get("url") != Some(&url));
                a.copies.push(entry);
                done.push(t);
            }
            Err(e) => failed.push((t.dest.root_url(), e.to_string())),
        }
    }
    let mut status = ExitStatus::Ok;
    if args.require.is_some() {
        let mut p = pgb_common::policy::three_two_one(&a.copies, &args.media, &args.site, &now());
        chain_policy(args, &a, &mut p);
        if p["ok"] != true {
            let why: Vec<&str> = p["failed"]
                .as_array()
                .map(|v| v.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            warn(format!("{label}: 3-2-1 not met: {}", why.join("; ")));
            status = ExitStatus::No;
        }
        a.extra.insert("policy".into(), p);
    }
    // The record is merged into the local sidecar, then travels with every
    // copy, merged into the sidecar there.
    if let Err(e) = evidence::add_evidence(&mut a) {
        failed.push((a.sidecar().display().to_string(), e.to_string()));
    }
    for t in done {
        if let Err(e) = evidence::update_copy(&t.dest, &a, false) {
            failed.push((t.dest.root_url(), format!("sidecar: {e}")));
        }
    }
    let record = serde_json::to_value(&a).unwrap_or(Value::Null);
    if failed.is_empty() {
        return (record, status);
    }
    for (to, e) in &failed {
        warn(format!("{label}: {to}: {e}"));
    }
    let message = failed
        .iter()
        .map(|(to, e)| format!("copy to {to} failed: {e}"))
        .collect::<Vec<_>>()
        .join("; ");
    let mut ctx = Map::new();
    ctx.insert(
        "failed".into(),
        failed
            .iter()
            .map(|(to, e)| json!({"to": to, "error": e}))
            .collect::<Vec<_>>()
            .into(),
    );
    (
        error_record("pgb-ship", &message, Some(&record), ctx),
        ExitStatus::Error,
    )
}
