//! Drives a run: records from stdin or a repository's sidecars, or one file
//! with --file; maps the outcome to an exit status.

use std::collections::HashSet;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use pgb_common::crypt::{Identities, Recipients, SUFFIX};
use pgb_common::error::{Error, IoContext, Result};
use pgb_common::evidence::adopt;
use pgb_common::jsonl::Input;
use pgb_common::record::error_record;
use pgb_common::repo::{absolute, catalog, check_present, in_repo, parse_sidecar};
use pgb_common::term::{warn, Progress};
use pgb_common::{AtomicFile, ExitStatus, RecordReader, RecordWriter};
use serde_json::{Map, Value};

use crate::artifact::{self, Ctx, Outcome};
use crate::cli::Args;
use crate::stream;

const TOOL: &str = "pgb-encrypt";

pub fn run(args: Args) -> ExitStatus {
    pgb_common::term::finish(try_run(args))
}

fn try_run(args: Args) -> Result<ExitStatus> {
    let ctx = Ctx {
        recipients: if args.decrypt {
            None
        } else {
            Some(Recipients::load(&args.recipient, &args.recipients_file)?)
        },
        identities: if args.decrypt {
            Some(Identities::load(&args.identity)?)
        } else {
            None
        },
        remove_plaintext: args.remove_plaintext,
    };
    if let Some(file) = &args.file {
        one_file(&ctx, file, args.output.as_deref())?;
        return Ok(ExitStatus::Ok);
    }
    let mut out = RecordWriter::stdout_for(args.json, |_| None);
    let mut status = ExitStatus::Ok;
    // With --repo, an artifact reached through two sidecars (plaintext kept
    // beside its ciphertext) is printed once.
    let mut printed: Option<HashSet<PathBuf>> = args.repo.as_ref().map(|_| HashSet::new());
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
                    let adopted = check_present(&artifact).and_then(|()| adopt(*artifact.clone()));
                    let (result, merged) = match adopted {
                        Ok(a) if args.decrypt => (artifact::decrypt(&ctx, &a), a),
                        Ok(a) => (artifact::encrypt(&ctx, &a), a),
                        Err(e) => (Err(e), *artifact.clone()),
                    };
                    match result {
                        Ok(outcome) => {
                            let sidecar = match &outcome {
                                Outcome::Untouched => artifact.sidecar(),
                                Outcome::Record(a) => a.sidecar(),
                            };
                            if let Some(seen) = printed.as_mut() {
                                if !seen.insert(sidecar) {
                                    return Ok(());
                                }
                            }
                            match outcome {
                                Outcome::Untouched if merged == *artifact && !out.is_human() => {
                                    out.forward(&raw)?
                                }
                                Outcome::Untouched => out.write_summarised(&merged, |v| {
                                    crate::summary::line(v, args.decrypt, false)
                                })?,
                                Outcome::Record(a) => out.write_summarised(&a, |v| {
                                    crate::summary::line(v, args.decrypt, true)
                                })?,
                            }
                        }
                        Err(e) => {
                            let msg = format!("{} {}: {e}", artifact.kind.as_str(), artifact.id);
                            warn(&msg);
                            let original: Value =
                                serde_json::from_str(&raw).unwrap_or_else(|_| Value::String(raw));
                            let mut context = Map::new();
                            context.insert("kind".into(), artifact.kind.as_str().into());
                            out.write(&error_record(TOOL, &msg, Some(&original), context))?;
                            status = status.worst(ExitStatus::Error);
                        }
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
    match &args.repo {
        Some(repo) => {
            let repo = absolute(repo)?;
            for sidecar in catalog(&repo)? {
                let text = match std::fs::read_to_string(&sidecar) {
                    Ok(t) => t,
                    // Removed while this run went (a plaintext sidecar
                    // deleted by --remove-plaintext).
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => Err(e).ctx("read", &sidecar)?,
                };
                let input = parse_sidecar(&sidecar, &text).map(|i| in_repo(i, &repo));
                handle(input, &mut out)?;
            }
        }
        None => {
            pgb_common::term::refuse_terminal_stdin(
                "pgb-snapshot -d appdb --out /srv/backups/pg | pgb-encrypt -R recipients.txt",
            )?;
            let stdin = std::io::stdin().lock();
            for input in RecordReader::new(stdin, "stdin") {
                handle(input, &mut out)?;
            }
        }
    }
    Ok(status)
}

/// --file: one file encrypted or decrypted, like the age command.
fn one_file(ctx: &Ctx, input: &Path, output: Option<&Path>) -> Result<()> {
    let decrypting = ctx.identities.is_some();
    let dash = Path::new("-");
    let output: PathBuf = match output {
        Some(o) => o.to_path_buf(),
        None if input == dash => {
            return Err(Error::Usage(
                "--file - (stdin) needs --output (-o - for stdout)".into(),
            ))
        }
        None if decrypting => {
            let s = input.to_string_lossy();
            match s.strip_suffix(SUFFIX) {
                Some(stem) if !stem.is_empty() => PathBuf::from(stem),
                _ => {
                    return Err(Error::Usage(format!(
                        "{}: name does not end in {SUFFIX}; give --output",
                        input.display()
                    )))
                }
            }
        }
        None => {
            let mut s = input.as_os_str().to_os_string();
            s.push(SUFFIX);
            s.into()
        }
    };
    if output != dash && std::fs::symlink_metadata(&output).is_ok() {
        return Err(Error::msg(format!(
            "{}: exists; not overwritten",
            output.display()
        )));
    }
    let mut reader: Box<dyn Read> = if input == dash {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(input).ctx("open", input)?)
    };
    let in_name = if input == dash {
        Path::new("stdin")
    } else {
        input
    };
    let label = format!(
        "{} {}",
        if decrypting { "decrypt" } else { "encrypt" },
        in_name.display()
    );
    // The file's size: the plaintext's when encrypting; about it (less the
    // age header and tags) when decrypting.
    let size = (input != dash)
        .then(|| std::fs::metadata(input).ok())
        .flatten()
        .filter(|m| m.is_file())
        .map(|m| m.len());
    let progress = match (size, decrypting) {
        (Some(n), false) => Progress::with_total(label, n),
        (size, _) => Progress::estimated(label, size),
    };
    if output == dash {
        let stdout = std::io::stdout();
        if !decrypting && stdout.is_terminal() {
            return Err(Error::Usage(
                "refusing to write ciphertext to a terminal; use -o FILE or a pipe".into(),
            ));
        }
        let name = Path::new("stdout");
        if let Some(ids) = &ctx.identities {
            stream::decrypt(ids, &mut reader, in_name, stdout, name, None, &progress)?;
        } else {
            let rs = ctx.recipients.as_ref().expect("recipients");
            stream::encrypt(
                rs,
                &mut reader,
                in_name,
                stdout,
                name,
                None,
                false,
                &progress,
            )?;
        }
        return Ok(());
    }
    let target = AtomicFile::create(&output)?.write_behind();
    let target = if let Some(ids) = &ctx.identities {
        stream::decrypt(ids, &mut reader, in_name, target, &output, None, &progress)?
    } else {
        let rs = ctx.recipients.as_ref().expect("recipients");
        stream::encrypt(
            rs,
            &mut reader,
            in_name,
            target,
            &output,
            None,
            false,
            &progress,
        )?
        .out
    };
    target.commit()
}
