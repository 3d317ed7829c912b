//! An incremental backup checked as a chain: every parent link (the
//! records', see pgb_common::chain) and every ancestor's stored files
//! against its record. The backup's own files are the checksums check's.

use std::path::Path;

use pgb_common::chain::{load_physical, resolve};
use pgb_common::error::Result;
use pgb_common::record::Artifact;
use serde_json::json;

use crate::run::{Ctx, Verdict};

/// The chain ending in `a`, oldest first, from the sidecars of its
/// repository; `Err` of the problem (a verdict) when it cannot be formed.
pub fn members(a: &Artifact) -> Result<std::result::Result<Vec<Artifact>, String>> {
    let repo = Path::new(&a.repo);
    let all = load_physical(repo, repo)?;
    Ok(resolve(a, &all).map_err(|e| e.to_string()))
}

pub fn check(_ctx: &Ctx, a: &Artifact) -> Result<Verdict> {
    if a.extra
        .get("incremental")
        .is_none_or(serde_json::Value::is_null)
    {
        return Ok(Verdict::skip());
    }
    let chain = match members(a)? {
        Ok(c) => c,
        Err(why) => return Ok(Verdict::fail(why)),
    };
    // The ancestors' files in this repository (their copies are their own
    // checksums verdicts').
    let mut problems = Vec::new();
    for m in &chain[..chain.len() - 1] {
        let (found, _) = crate::checksums::local(m, 0);
        problems.extend(
            found
                .into_iter()
                .map(|p| format!("chain member {}: {p}", m.id)),
        );
    }
    let ids: Vec<&str> = chain.iter().map(|m| m.id.as_str()).collect();
    Ok(Verdict::new(problems).with("members", json!(ids)))
}
