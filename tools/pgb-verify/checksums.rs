//! Re-read every file of an artifact, and of each copy recorded in
//! `copies` that can be reached, and compare size, sha256 and blake3 with
//! the record. Encrypted artifacts are compared as stored: the ciphertext
//! against `files`.

use std::io::Read;

use pgb_common::dest::{file_rel, Destination};
use pgb_common::digest::{hash_reader_parallel, Digests};
use pgb_common::progress::{CountingCurrent, Progress};
use pgb_common::record::{Artifact, FileEntry};
use serde_json::{json, Value};

use crate::run::{file_path, Ctx, Verdict};

/// How one file compares with what the record says; `None` when it agrees.
fn compare(shown: &str, d: &Digests, f: &FileEntry) -> Option<String> {
    if d.size != f.size {
        Some(format!("{shown}: {} bytes, recorded {}", d.size, f.size))
    } else if d.sha256 != f.sha256 {
        Some(format!(
            "{shown}: sha256 {} differs from the recorded {}",
            d.sha256, f.sha256
        ))
    } else if d.blake3 != f.blake3 {
        Some(format!(
            "{shown}: blake3 {} differs from the recorded {}",
            d.blake3, f.blake3
        ))
    } else {
        None
    }
}

pub fn check(ctx: &Ctx, a: &Artifact) -> Verdict {
    // The progress line counts the copies read back after the files.
    let copies = if ctx.args.no_copies {
        0
    } else {
        a.copies.iter().filter(|c| !is_the_repository(a, c)).count()
    };
    let (problems, bytes) = local(a, copies);
    let repo_ok = problems.is_empty();
    let mut v = Verdict::new(problems).with("bytes", bytes.into());
    if !ctx.args.no_copies && !a.copies.is_empty() {
        let mut results = Vec::new();
        for copy in &a.copies {
            if is_the_repository(a, copy) {
                // A remote repository read as --repo is one of the copies:
                // its files were just read, not downloaded twice.
                let url = copy["url"].as_str().or(copy["to"].as_str()).unwrap_or("?");
                results.push(json!({"url": url, "ok": repo_ok, "bytes": bytes}));
                continue;
            }
            let (entry, problems) = check_copy(ctx, a, copy);
            v.problems.extend(problems);
            results.push(entry);
        }
        v = v.with("copies", Value::Array(results));
    }
    v
}

/// True when `copy` is the remote repository the artifact was read from.
fn is_the_repository(a: &Artifact, copy: &Value) -> bool {
    let repo = std::path::Path::new(&a.repo);
    pgb_common::store::is_url(repo)
        && Destination::from_copy(copy).is_ok_and(|d| d.root_url() == repo.to_string_lossy())
}

/// The artifact's files in its repository compared with the record: the
/// problems and the bytes read. `copies`: how many copies are read back
/// after it, for the progress line's total.
pub fn local(a: &Artifact, copies: usize) -> (Vec<String>, u64) {
    let mut problems = Vec::new();
    let mut bytes = 0u64;
    let recorded: u64 = a.files.iter().map(|f| f.size).sum();
    let _progress = Progress::with_total(
        format!("{} {}: checksums", a.kind.as_str(), a.id),
        recorded.saturating_mul(1 + copies as u64),
    );
    for f in &a.files {
        let path = file_path(a, f);
        let shown = path.display().to_string();
        // A local file or an object of a remote repository, streamed.
        let read = pgb_common::store::open(&path).and_then(|r| {
            hash_reader_parallel(CountingCurrent(r))
                .map_err(|e| pgb_common::Error::msg(pgb_common::error::io_cause(&e)))
        });
        match read {
            Ok(d) => {
                bytes += d.size;
                problems.extend(compare(&shown, &d, f));
            }
            Err(pgb_common::Error::Io { source, .. }) => {
                problems.push(format!("{shown}: {}", pgb_common::error::io_cause(&source)))
            }
            Err(e) => problems.push(if e.to_string().contains(&shown) {
                e.to_string()
            } else {
                format!("{shown}: {e}")
            }),
        }
    }
    (problems, bytes)
}

/// Reads one recorded copy back. Returns its entry for the verdict and the
/// problems that fail the check.
fn check_copy(ctx: &Ctx, a: &Artifact, copy: &Value) -> (Value, Vec<String>) {
    let to = copy["to"].as_str().unwrap_or("?").to_string();
    let url = copy["url"].as_str().unwrap_or(&to).to_string();
    let unreachable = |why: String| {
        let problems = if ctx.args.copies_required {
            vec![format!("copy {url}: unreachable: {why}")]
        } else {
            pgb_common::term::warn(format!(
                "{} {}: copy {url}: unreachable, not checked: {why}",
                a.kind.as_str(),
                a.id
            ));
            Vec::new()
        };
        (
            json!({"url": url, "ok": null, "unreachable": why}),
            problems,
        )
    };
    let mut dest = match Destination::from_copy(copy) {
        Ok(d) => d,
        Err(e) => return unreachable(e.to_string()),
    };
    dest.add_ssh_options(
        &ctx.args
            .ssh_option
            .iter()
            .flat_map(|o| ["-o".to_string(), o.clone()])
            .collect::<Vec<_>>(),
    );
    // A local copy whose location is gone entirely (an unmounted disk) is
    // unreachable; a file missing inside a copy that is there fails.
    if let Destination::Dir(root) = &dest {
        if !root.join(&a.path).exists() {
            return unreachable(format!("{} does not exist", root.join(&a.path).display()));
        }
    }
    // The copy's own file list is what pgb-ship checked; both it and the
    // artifact's must match the bytes there.
    let listed: Vec<FileEntry> = copy
        .get("files")
        .and_then(|f| serde_json::from_value(f.clone()).ok())
        .unwrap_or_else(|| a.files.clone());
    let mut problems = Vec::new();
    let mut bytes = 0u64;
    for f in &a.files {
        let rel = file_rel(a, f);
        let shown = format!("copy {}", dest.url_of(&rel));
        let read = dest.open_read(&rel).and_then(|r| {
            hash_reader_parallel(CountingCurrent(r as Box<dyn Read + Send>))
                .map_err(|e| pgb_common::Error::msg(pgb_common::error::io_cause(&e)))
        });
        let d = match read {
            Ok(d) => d,
            Err(e) if matches!(dest, Destination::Dir(_)) => {
                let cause = match &e {
                    pgb_common::Error::Io { source, .. } => pgb_common::error::io_cause(source),
                    other => other.to_string(),
                };
                problems.push(format!("{shown}: {cause}"));
                continue;
            }
            Err(e) => return unreachable(e.to_string()),
        };
        bytes += d.size;
        if let Some(p) = compare(&shown, &d, f) {
            problems.push(p);
        } else if let Some(l) = listed.iter().find(|l| l.name == f.name) {
            problems.extend(compare(&format!("{shown} (copies entry)"), &d, l));
        }
    }
    let ok = problems.is_empty();
    (json!({"url": url, "ok": ok, "bytes": bytes}), problems)
}
