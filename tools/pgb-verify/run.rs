//! Reads records, runs the asked-for checks on each artifact, records the
//! verdicts on it (stdout and sidecar) and maps the outcome to an exit
//! status.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pgb_common::dest::Destination;
use pgb_common::error::{Error, Result};
use pgb_common::jsonl::Input;
use pgb_common::record::{error_record, Artifact, FileEntry, Kind};
use pgb_common::repo::catalog;
use pgb_common::store;
use pgb_common::term::warn;
use pgb_common::{ExitStatus, RecordReader, RecordWriter};
use serde_json::{json, Map, Value};

use crate::cli::Args;

/// The outcome of one check: ok when no problem was found.
pub struct Verdict {
    pub problems: Vec<String>,
    pub extra: Map<String, Value>,
    /// The check does not apply (e.g. a manifest check on a dump).
    pub skipped: bool,
}

/// Whether a check applies to an artifact of this kind at all.
fn applies(method: &str, kind: Kind) -> bool {
    match method {
        "structure" => matches!(kind, Kind::Logical | Kind::Globals),
        "manifest" | "chain" => kind == Kind::Physical,
        "restore" => matches!(kind, Kind::Logical | Kind::Physical),
        _ => true,
    }
}

impl Verdict {
    pub fn new(problems: Vec<String>) -> Verdict {
        Verdict {
            problems,
            extra: Map::new(),
            skipped: false,
        }
    }

    pub fn skip() -> Verdict {
        Verdict {
            problems: Vec::new(),
            extra: Map::new(),
            skipped: true,
        }
    }

    pub fn fail(problem: impl Into<String>) -> Verdict {
        Verdict::new(vec![problem.into()])
    }

    pub fn with(mut self, key: &str, v: Value) -> Verdict {
        self.extra.insert(key.into(), v);
        self
    }
}

/// Where one of an artifact's files is: on disk, or an `s3://`/`ssh://`
/// URL when the repository is remote (a physical backup is a directory of
/// files there too; any other artifact is its one file).
pub fn file_path(a: &Artifact, f: &FileEntry) -> PathBuf {
    let loc = a.location();
    let dir = if store::is_url(&loc) {
        a.kind == Kind::Physical
    } else {
        loc.is_dir()
    };
    if dir {
        loc.join(&f.name)
    } else {
        loc
    }
}

/// For an artifact in a remote repository, whether its storage still
/// answers (its sidecar is there to be asked about): when it does not, a
/// check that found problems says nothing about the backup (the server
/// went down, the network went away) and records no verdict.
fn storage_answers(a: &Artifact) -> Result<()> {
    let repo = Path::new(&a.repo);
    if !store::is_url(repo) {
        return Ok(());
    }
    store::size_of(&a.sidecar())
        .map(|_| ())
        .map_err(|e| Error::msg(format!("repository {} does not answer: {e}", a.repo)))
}

pub struct Ctx {
    pub checksums: bool,
    pub structure: bool,
    pub manifest: bool,
    pub restore: bool,
    pub args: Args,
    pub rto: Option<Duration>,
}

pub use pgb_common::when::parse_duration;

pub fn run(args: Args) -> ExitStatus {
    pgb_common::term::finish(try_run(args))
}

fn try_run(args: Args) -> Result<ExitStatus> {
    pass_ssh_options(&args)?;
    let any = args.checksums || args.structure || args.manifest || args.restore;
    let rto = args.rto.as_deref().map(parse_duration).transpose()?;
    crate::stored::set_identities(&args.identity)?;
    let mut prom = crate::metrics::Collector::default();
    let ctx = Ctx {
        checksums: args.checksums || !any,
        structure: args.structure || !any,
        manifest: args.manifest || !any,
        restore: args.restore,
        rto,
        args,
    };
    let mut out = RecordWriter::stdout_for(ctx.args.json, |_| None);
    let mut status = ExitStatus::Ok;
    let mut handle =
        |input: Result<Input>, out: &mut RecordWriter<std::io::Stdout>| -> Result<()> {
            match input {
                Err(e) => {
                    warn(e.to_string());
                    status = status.worst(ExitStatus::Error);
                }
                Ok(Input::Artifact { artifact, raw, .. }) => {
                    // The sidecar on disk is the source of truth: a record
                    // from stdin (an old one replayed, too) is merged into it.
                    let adopted = pgb_common::repo::check_present(&artifact)
                        .and_then(|()| pgb_common::evidence::adopt(*artifact.clone()));
                    let mut a = match adopted {
                        Ok(a) => a,
                        Err(e) => {
                            let msg = format!("{} {}: {e}", artifact.kind.as_str(), artifact.id);
                            warn(&msg);
                            let original: Value =
                                serde_json::from_str(&raw).unwrap_or(Value::String(raw));
                            out.write(&error_record(
                                "pgb-verify",
                                &msg,
                                Some(&original),
                                Map::new(),
                            ))?;
                            status = status.worst(ExitStatus::Error);
                            return Ok(());
                        }
                    };
                    let before = a.verified.len();
                    let (all_ok, failed_run) = verify(&ctx, &mut a);
                    if !all_ok {
                        status = status.worst(ExitStatus::No);
                    }
                    if pgb_common::cluster::interrupted() {
                        // A check cut short by Ctrl-C or SIGTERM proves
                        // nothing: record no verdict; the signal handler is
                        // removing the throwaway cluster and ends the run.
                        std::thread::sleep(Duration::from_secs(120));
                        return Err(Error::msg("interrupted"));
                    }
                    prom.note(&a, &a.verified[before..]);
                    let checked = a.verified[before..].to_vec();
                    if a.verified.len() > before || failed_run.is_none() {
                        if let Err(e) = pgb_common::evidence::add_evidence(&mut a) {
                            warn(e.to_string());
                            status = status.worst(ExitStatus::Error);
                        }
                        if !ctx.args.no_copies && !update_copies(&ctx, &a) {
                            status = status.worst(ExitStatus::Error);
                        }
                    }
                    match failed_run {
                        // The run could not check the backup: an error about
                        // the run, with no verdict for the check it cut short.
                        Some(e) => {
                            status = status.worst(ExitStatus::Error);
                            let raw = serde_json::to_value(&a)
                                .map_err(|e| Error::msg(format!("encode record: {e}")))?;
                            out.write(&pgb_common::record::error_record(
                                "pgb-verify",
                                &pgb_common::redact(&e),
                                Some(&raw),
                                Map::new(),
                            ))?;
                        }
                        None => out.write_summarised(&a, |v| crate::summary::line(v, &checked))?,
                    }
                }
                Ok(Input::Error { raw, .. }) => {
                    out.forward(&raw)?;
                    status = status.worst(ExitStatus::Error);
                }
                Ok(Input::Other { raw, .. }) => out.forward(&raw)?,
            }
            Ok(())
        };
    match &ctx.args.repo {
        Some(repo) => {
            let repo = pgb_common::repo::absolute(repo)?;
            for sidecar in catalog(&repo)? {
                handle(pgb_common::repo::read_in(&repo, &sidecar), &mut out)?;
            }
        }
        None => {
            pgb_common::term::refuse_terminal_stdin(
                "pgb-snapshot -d appdb --out /srv/backups/pg | pgb-verify",
            )?;
            let stdin = std::io::stdin().lock();
            for input in RecordReader::new(stdin, "stdin") {
                handle(input, &mut out)?;
            }
        }
    }
    if let Some(path) = &ctx.args.prom {
        if let Err(e) = prom.write(path) {
            warn(e.to_string());
            status = status.worst(ExitStatus::Error);
        }
    }
    Ok(status)
}

/// `--ssh-option` reaches an `ssh://` repository too: the storage layer
/// reads its ssh arguments from PGB_SSH_OPTIONS (split at whitespace), so
/// they are added there before anything is read.
fn pass_ssh_options(args: &Args) -> Result<()> {
    let ssh_repo = args
        .repo
        .as_deref()
        .and_then(Path::to_str)
        .is_some_and(|r| r.starts_with("ssh://"));
    if !ssh_repo || args.ssh_option.is_empty() {
        return Ok(());
    }
    let mut opts = std::env::var("PGB_SSH_OPTIONS").unwrap_or_default();
    for o in &args.ssh_option {
        if o.contains(char::is_whitespace) {
            return Err(Error::Usage(format!(
                "--ssh-option {o:?}: an option for an ssh:// repository cannot contain spaces"
            )));
        }
        opts.push_str(&format!(" -o {o}"));
    }
    std::env::set_var("PGB_SSH_OPTIONS", opts.trim_start());
    Ok(())
}

/// Runs the checks; appends one `verified` entry per check that applies.
/// Returns false when any failed, and the error that stopped a check from
/// reaching a verdict (a server down, a program missing, a full disk): that
/// check and those after it record nothing.
fn verify(ctx: &Ctx, a: &mut Artifact) -> (bool, Option<String>) {
    let mut all_ok = true;
    type Check<'a> = Box<dyn Fn(&Artifact) -> Result<Verdict> + 'a>;
    let mut checks: Vec<(&str, Check)> = Vec::new();
    if ctx.checksums {
        checks.push((
            "checksums",
            Box::new(|a: &Artifact| Ok(crate::checksums::check(ctx, a))),
        ));
    }
    if ctx.checksums && a.kind == Kind::Physical {
        checks.push((
            "chain",
            Box::new(|a: &Artifact| crate::chain::check(ctx, a)),
        ));
    }
    if ctx.structure {
        checks.push((
            "structure",
            Box::new(|a: &Artifact| crate::structure::check(ctx, a)),
        ));
    }
    if ctx.manifest {
        checks.push((
            "manifest",
            Box::new(|a: &Artifact| Ok(crate::manifest::check(ctx, a))),
        ));
    }
    if ctx.restore {
        checks.push((
            "restore",
            Box::new(|a: &Artifact| crate::restore::check(ctx, a)),
        ));
    }
    for (method, check) in checks {
        if !matches!(method, "checksums" | "chain")
            && applies(method, a.kind)
            && crate::stored::lacks_identity(a)
        {
            warn(format!(
                "{} {}: {method}: skipped: {}",
                a.kind.as_str(),
                a.id,
                crate::stored::NO_IDENTITY
            ));
            continue;
        }
        let started = Instant::now();
        let when = chrono::Local::now()
            .fixed_offset()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
        // The stored bytes read back (stored::open counts them) against
        // the backup's recorded size; checksums draws its own, copies too.
        let _progress = matches!(method, "manifest" | "restore").then(|| {
            pgb_common::progress::Progress::with_total(
                format!("{} {}: {method}", a.kind.as_str(), a.id),
                a.files.iter().map(|f| f.size).sum(),
            )
        });
        let v = match check(a) {
            Ok(v) => v,
            Err(e) => {
                let m = format!("{} {}: {method}: not checked: {e}", a.kind.as_str(), a.id);
                warn(&m);
                return (all_ok, Some(m));
            }
        };
        if v.skipped {
            continue;
        }
        let ok = v.problems.is_empty();
        if !ok {
            if let Err(e) = storage_answers(a) {
                let m = format!("{} {}: {method}: not checked: {e}", a.kind.as_str(), a.id);
                warn(&m);
                return (all_ok, Some(m));
            }
        }
        for p in &v.problems {
            warn(format!("{} {}: {method}: {p}", a.kind.as_str(), a.id));
        }
        let mut entry = Map::new();
        entry.insert("method".into(), method.into());
        entry.insert("ok".into(), ok.into());
        entry.insert("when".into(), when.into());
        entry.insert(
            "duration_ms".into(),
            (started.elapsed().as_millis() as u64).into(),
        );
        entry.insert("tool".into(), json!("pgb-verify"));
        if !ok {
            entry.insert("problems".into(), json!(v.problems));
        }
        for (k, val) in v.extra {
            entry.insert(k, val);
        }
        a.verified.push(Value::Object(entry));
        all_ok &= ok;
    }
    if a.kind == Kind::Wal && ctx.restore {
        warn(format!(
            "{}: WAL segments are checked by pgb-check-archive",
            a.id
        ));
    }
    (all_ok, None)
}

/// Carries the record's evidence to the sidecar beside each of its copies
/// (merged with what is there). A copy whose sidecar cannot be updated is
/// reported; the verdict stays as it is. Returns false when any failed.
fn update_copies(ctx: &Ctx, a: &Artifact) -> bool {
    let ssh: Vec<String> = ctx
        .args
        .ssh_option
        .iter()
        .flat_map(|o| ["-o".to_string(), o.clone()])
        .collect();
    // The repository as a storage root: a directory (canonical, so that
    // another spelling of it is recognised) or a URL.
    let repo = Path::new(&a.repo);
    let here = if store::is_url(repo) {
        store::destination(repo)
            .ok()
            .map(|d| PathBuf::from(d.root_url()))
    } else {
        repo.canonicalize().ok()
    };
    let mut all = true;
    for copy in &a.copies {
        let url = copy["url"].as_str().or(copy["to"].as_str()).unwrap_or("?");
        let done = Destination::from_copy(copy).and_then(|mut dest| {
            dest.add_ssh_options(&ssh);
            // The copy read as the repository itself (--repo COPY): its
            // sidecar is the one add_evidence wrote.
            let there = match &dest {
                Destination::Dir(root) => root.canonicalize().ok(),
                remote => Some(PathBuf::from(remote.root_url())),
            };
            if there.is_some() && there == here {
                return Ok(());
            }
            if copy.get("url").and_then(Value::as_str) != Some(&dest.url_of(&a.path)) {
                // A copy of the artifact as it was under another path (a
                // dump shipped before pgb-encrypt gave it .age).
                warn(format!(
                    "{} {}: copy {url}: holds the artifact under another path; its sidecar \
                     is left as it is",
                    a.kind.as_str(),
                    a.id
                ));
                return Ok(());
            }
            pgb_common::evidence::update_copy(&dest, a, true).map(|_| ())
        });
        if let Err(e) = done {
            warn(format!(
                "{} {}: copy {url}: its sidecar is not updated: {e}",
                a.kind.as_str(),
                a.id
            ));
            all = false;
        }
    }
    all
}

/// Reads a stream as it was before pgb encrypted and compressed it:
/// decrypted with the `-i` identities when it is age ciphertext, zstd
/// decompressed when pgb compressed it.
pub fn open_plain(a: &Artifact, path: &Path) -> Result<Box<dyn std::io::Read + Send>> {
    let (r, _) = crate::stored::open(a, path)?;
    crate::stored::decompressed(a, r, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("2 weeks").is_err());
        assert!(parse_duration("m").is_err());
    }
}
