//! A repository read as its own catalog: the sidecars below its root.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, IoContext, Result};
use crate::jsonl::{Input, RecordReader};

/// Every `*.pgb.json` below `repo`, sorted. Symlinks are not followed and
/// hidden names (temp files, `.pgb.lock`) are skipped.
pub fn sidecars(repo: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![repo.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).ctx("read directory", &dir)? {
            let e = e.ctx("read directory", &dir)?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            let p = e.path();
            let ft = e.file_type().ctx("stat", &p)?;
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() && name.ends_with(".pgb.json") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
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
    let text = std::fs::read_to_string(sidecar).ctx("read", sidecar)?;
    parse_sidecar(sidecar, &text)
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
}
