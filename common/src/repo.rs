//! A repository read as its own catalog: the sidecars below its root.
//!
//! A record's `path` is relative to its repository, and a repository is
//! read where it lies: a record read from the sidecars of `--repo DIR` has
//! `DIR` (made absolute) as its `repo`, whatever the sidecar says, so a
//! repository moved, copied or downloaded elsewhere restores and verifies
//! there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::Value;

use crate::error::{Error, IoContext, Result};
use crate::jsonl::{Input, RecordReader};

/// Sidecars of remote repositories read by [`sidecars`] in one go, waiting
/// to be taken by [`read_sidecar`] (each once: a later read, after a tool
/// has added evidence, goes to the storage again).
static PREFETCHED: Mutex<BTreeMap<PathBuf, Vec<u8>>> = Mutex::new(BTreeMap::new());

/// Largest sidecar read.
const SIDECAR_MAX: u64 = 64 << 20;

/// Every `*.pgb.json` below `repo`, sorted. Symlinks are not followed and
/// hidden names (temp files, `.pgb.lock`) are skipped. Below an `s3://` or
/// `ssh://` root (see [`crate::store`]) the sidecars are listed and read in
/// one go (one SSH session, one S3 connection).
pub fn sidecars(repo: &Path) -> Result<Vec<PathBuf>> {
    if crate::store::is_url(repo) {
        let found = crate::store::destination(repo)?.read_tree("", ".pgb.json", SIDECAR_MAX)?;
        let mut pre = PREFETCHED.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::with_capacity(found.len());
        for (rel, bytes) in found {
            let p = repo.join(rel);
            pre.insert(p.clone(), bytes);
            out.push(p);
        }
        return Ok(out);
    }
    let mut out = crate::fs::files_below(repo, ".pgb.json")?;
    out.sort();
    Ok(out)
}

/// The sidecars of a repository named by `--repo`: like [`sidecars`], but a
/// repository that is not there, is not a directory, or holds no sidecar
/// at all is an error (exit 2) saying so, never an empty run that exits 0
/// (a mistyped path would otherwise "verify" nothing and pass).
pub fn catalog(repo: &Path) -> Result<Vec<PathBuf>> {
    if crate::store::is_url(repo) {
        let found = sidecars(repo)?;
        if found.is_empty() {
            return Err(Error::msg(format!(
                "repository {}: nothing there: no backups (no .pgb.json sidecar below it; \
                 an empty or mistyped repository?)",
                repo.display()
            )));
        }
        return Ok(found);
    }
    match std::fs::metadata(repo) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Error::msg(format!(
                "repository {}: not a directory",
                repo.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::msg(format!(
                "repository {}: does not exist (mistyped?)",
                repo.display()
            )))
        }
        Err(e) => return Err(Error::io("repository", repo, e)),
    }
    let found = sidecars(repo)?;
    if found.is_empty() {
        return Err(Error::msg(format!(
            "repository {}: nothing there: no backups (no .pgb.json sidecar below it; \
             an empty or mistyped repository?)",
            repo.display()
        )));
    }
    Ok(found)
}

/// A sidecar's text (one pretty-printed record) as an input record, with
/// errors naming the sidecar and line.
pub fn parse_sidecar(sidecar: &Path, text: &str) -> Result<Input> {
    let line = serde_json::from_str::<Value>(text)
        .map(|v| v.to_string() + "\n")
        .map_err(|e| Error::Input {
            source: sidecar.display().to_string(),
            line: e.line(),
            msg: format!("malformed JSON: {e}"),
        })?;
    RecordReader::new(line.as_bytes(), sidecar.display().to_string())
        .next()
        .unwrap_or_else(|| Err(Error::msg(format!("{}: empty sidecar", sidecar.display()))))
}

/// Reads and parses one sidecar.
pub fn read_sidecar(sidecar: &Path) -> Result<Input> {
    let pre = PREFETCHED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(sidecar);
    let bytes = match pre {
        Some(b) => b,
        None if crate::store::is_url(sidecar) => crate::store::read_small(sidecar, SIDECAR_MAX)?
            .ok_or_else(|| Error::msg(format!("{}: no such sidecar", sidecar.display())))?,
        None => std::fs::read(sidecar).ctx("read", sidecar)?,
    };
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::msg(format!("{}: not UTF-8 text", sidecar.display())))?;
    parse_sidecar(sidecar, &text)
}

/// `--repo` as records carry it: a directory made absolute, or an
/// `s3://`/`ssh://` URL in canonical form (see [`crate::store`]).
pub fn absolute(repo: &Path) -> Result<PathBuf> {
    crate::store::root_of(repo)
}

/// An input record read from the sidecars of `repo` (absolute): an
/// artifact's `repo` becomes `repo`, in the parsed record and in its raw
/// text (which tools forward).
pub fn in_repo(input: Input, repo: &Path) -> Input {
    match input {
        Input::Artifact {
            line,
            raw,
            mut artifact,
        } => {
            let here = repo.display().to_string();
            if artifact.repo == here {
                return Input::Artifact {
                    line,
                    raw,
                    artifact,
                };
            }
            artifact.repo = here.clone();
            let raw = match serde_json::from_str::<Value>(&raw) {
                Ok(mut v) => {
                    v["repo"] = here.into();
                    v.to_string()
                }
                Err(_) => raw,
            };
            Input::Artifact {
                line,
                raw,
                artifact,
            }
        }
        other => other,
    }
}

/// Reads one sidecar of repository `repo` (absolute, see [`absolute`]),
/// located in `repo` (see [`in_repo`]).
pub fn read_in(repo: &Path, sidecar: &Path) -> Result<Input> {
    read_sidecar(sidecar).map(|i| in_repo(i, repo))
}

/// Checks that an artifact's repository is there before a tool works on
/// its files: a record (from stdin) naming a repository that was moved or
/// never was here fails with the path and the way out.
pub fn check_present(a: &crate::record::Artifact) -> Result<()> {
    let repo = Path::new(&a.repo);
    if crate::store::is_url(repo) {
        // Reached when its files are read; a URL that does not parse is
        // said now.
        return crate::store::destination(repo).map(|_| ());
    }
    if !repo.is_absolute() {
        return Err(Error::msg(format!(
            "repository {:?}: not an absolute path",
            a.repo
        )));
    }
    match std::fs::metadata(repo) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::msg(format!(
            "repository: {}: not a directory",
            repo.display()
        ))),
        Err(e) => Err(Error::msg(format!(
            "repository: {}: {}; a repository moved or copied elsewhere is read where it \
             lies with --repo DIR",
            repo.display(),
            crate::error::io_cause(&e)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sidecars_skipping_hidden_and_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("c/logical/db")).unwrap();
        std::fs::write(r.join("c/logical/db/x.dump.zst.pgb.json"), "{}").unwrap();
        std::fs::write(r.join("c/logical/db/.x.pgb.json.pgb-tmp.1"), "{}").unwrap();
        std::fs::write(r.join("c/.hidden.pgb.json"), "{}").unwrap();
        std::os::unix::fs::symlink(r.join("c"), r.join("link")).unwrap();
        let found = sidecars(r).unwrap();
        assert_eq!(found, vec![r.join("c/logical/db/x.dump.zst.pgb.json")]);
        let e = parse_sidecar(&found[0], "{ nope")
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("x.dump.zst.pgb.json") && e.contains("line 1"),
            "{e}"
        );
    }

    #[test]
    fn records_read_from_a_repository_are_located_in_it() {
        let d = tempfile::tempdir().unwrap();
        let sidecar = d.path().join("x.dump.pgb.json");
        let rec = serde_json::json!({
            "schema": "pgb.v1", "type": "artifact", "id": "x", "kind": "logical",
            "cluster": "main", "created": "2026-11-21T10:15:00+01:00",
            "repo": "/old/place", "path": "x.dump",
            "files": [], "copies": [], "verified": []
        });
        std::fs::write(&sidecar, serde_json::to_vec_pretty(&rec).unwrap()).unwrap();
        let here = absolute(d.path()).unwrap();
        let Input::Artifact { raw, artifact, .. } = read_in(&here, &sidecar).unwrap() else {
            panic!("an artifact")
        };
        assert_eq!(Path::new(&artifact.repo), here);
        let v: Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(v["repo"], here.display().to_string());
        check_present(&artifact).unwrap();
        let mut gone = *artifact;
        gone.repo = "/old/place".into();
        let e = check_present(&gone).unwrap_err().to_string();
        assert!(
            e.starts_with("repository: /old/place: No such file or directory")
                && e.contains("--repo"),
            "{e}"
        );
    }
}
