//! Reads records, runs the asked-for checks on each artifact, records the
//! verdicts on it (stdout and sidecar) and maps the outcome to an exit
//! status.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pgb_common::error::{Error, IoContext, Result};
use pgb_common::fs::write_atomic;
use pgb_common::jsonl::Input;
use pgb_common::record::{Artifact, FileEntry, Kind};
use pgb_common::repo::sidecars;
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
        "manifest" => kind == Kind::Physical,
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

/// Where one of an artifact's files is on disk.
pub fn file_path(a: &Artifact, f: &FileEntry) -> PathBuf {
    let loc = a.location();
    if loc.is_dir() {
        loc.join(&f.name)
    } else {
        loc
    }
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
    let mut out = RecordWriter::stdout();
    let mut status = ExitStatus::Ok;
    let mut handle =
        |input: Result<Input>, out: &mut RecordWriter<std::io::Stdout>| -> Result<()> {
            match input {
                Err(e) => {
                    warn(e.to_string());
                    status = status.worst(ExitStatus::Error);
                }
                Ok(Input::Artifact { artifact, .. }) => {
                    let mut a = *artifact;
                    let before = a.verified.len();
                    if !verify(&ctx, &mut a) {
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
                    if let Err(e) = update_sidecar(&a) {
                        warn(e.to_string());
                        status = status.worst(ExitStatus::Error);
                    }
                    out.write(&a)?;
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
            for sidecar in sidecars(repo)? {
                let f = std::fs::File::open(&sidecar).ctx("open", &sidecar)?;
                let text = {
                    let mut s = String::new();
                    std::io::Read::read_to_string(&mut std::io::BufReader::new(f), &mut s)
                        .ctx("read", &sidecar)?;
                    s
                };
                // A sidecar is one pretty-printed record.
                let compact = serde_json::from_str::<Value>(&text)
                    .map(|v| v.to_string() + "\n")
                    .map_err(|e| Error::Input {
                        source: sidecar.display().to_string(),
                        line: e.line(),
                        msg: format!("malformed JSON: {e}"),
                    });
                let input = compact.and_then(|line| {
                    RecordReader::new(line.as_bytes(), sidecar.display().to_string())
                        .next()
                        .unwrap_or_else(|| {
                            Err(Error::msg(format!("{}: empty sidecar", sidecar.display())))
                        })
                });
                handle(input, &mut out)?;
            }
        }
        None => {
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

/// Runs the checks; appends one `verified` entry per check that applies.
/// Returns false when any failed.
fn verify(ctx: &Ctx, a: &mut Artifact) -> bool {
    let mut all_ok = true;
    type Check<'a> = Box<dyn Fn(&Artifact) -> Verdict + 'a>;
    let mut checks: Vec<(&str, Check)> = Vec::new();
    if ctx.checksums {
        checks.push((
            "checksums",
            Box::new(|a: &Artifact| crate::checksums::check(ctx, a)),
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
            Box::new(|a: &Artifact| crate::manifest::check(ctx, a)),
        ));
    }
    if ctx.restore {
        checks.push((
            "restore",
            Box::new(|a: &Artifact| crate::restore::check(ctx, a)),
        ));
    }
    for (method, check) in checks {
        if method != "checksums" && applies(method, a.kind) && crate::stored::lacks_identity(a) {
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
        let v = check(a);
        if v.skipped {
            continue;
        }
        let ok = v.problems.is_empty();
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
    all_ok
}

/// Rewrites the sidecar with the enriched record, when the artifact's
/// sidecar exists where the record says.
fn update_sidecar(a: &Artifact) -> Result<()> {
    let path = a.sidecar();
    if !path.exists() {
        return Ok(());
    }
    let mut text =
        serde_json::to_vec_pretty(a).map_err(|e| Error::msg(format!("encode record: {e}")))?;
    text.push(b'\n');
    write_atomic(&path, &text, true)
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
