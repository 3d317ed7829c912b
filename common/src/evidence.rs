//! Evidence is only ever added: the one merge of an artifact's records.
//!
//! The sidecar on disk is the source of truth. A record fed to a tool (even
//! an old one replayed from a log) is merged with it, and every sidecar a
//! tool writes (beside the artifact, beside each copy) is read again and
//! merged just before it is replaced, so copies and verifications recorded
//! by any run are never dropped. See pgb(7), "Evidence".

use std::fs::File;
use std::io::Read;
use std::path::Path;

use chrono::{DateTime, FixedOffset};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde_json::Value;

use crate::dest::Destination;
use crate::error::{Error, IoContext, Result};
use crate::record::Artifact;

/// When a `copies` or `verified` entry (or an extra value such as `policy`
/// or `archive_check`) was made, when it says so.
fn when(v: &Value) -> Option<DateTime<FixedOffset>> {
    ["when", "checked"]
        .iter()
        .find_map(|k| v.get(*k).and_then(Value::as_str))
        .and_then(|w| DateTime::parse_from_rfc3339(w).ok())
}

/// What identifies a copy: the place it is (`url`, else its root `to`),
/// else the whole entry.
fn copy_key(c: &Value) -> String {
    match (
        c.get("url").and_then(Value::as_str),
        c.get("to").and_then(Value::as_str),
    ) {
        (Some(u), _) => format!("url {u}"),
        (None, Some(t)) => format!("to {t}"),
        _ => format!("entry {c}"),
    }
}

/// True when `b` is provably newer than `a` (both carry a time).
fn newer(b: &Value, a: &Value) -> bool {
    matches!((when(a), when(b)), (Some(x), Some(y)) if y > x)
}

/// Merges the evidence of `other` into `base`, a record of the same
/// artifact; `base` keeps its own description (files, path, repo ...).
///
/// - `copies`: one entry per destination (`url`); an entry only `other`
///   has is added; when both have one, the later (`when`) is kept.
/// - `verified`: every entry of either side is kept (an entry equal to one
///   already there is not repeated: a side holding it n times gives n), in
///   the order of their `when`, so the last entry of a method is its latest
///   verification.
/// - other fields a tool added (`policy`, `archive_check`, fields of newer
///   tools): those only `other` has are added; when both have one, `other`'s
///   replaces `base`'s only when it is provably newer (`when`/`checked`).
///
/// Refuses records of different artifacts (id, kind or cluster differ).
pub fn merge(base: &mut Artifact, other: &Artifact) -> Result<()> {
    if base.id != other.id || base.kind != other.kind || base.cluster != other.cluster {
        return Err(Error::msg(format!(
            "records of different artifacts: {} {} of cluster {} and {} {} of cluster {}",
            base.kind.as_str(),
            base.id,
            base.cluster,
            other.kind.as_str(),
            other.id,
            other.cluster
        )));
    }
    for c in &other.copies {
        let key = copy_key(c);
        match base.copies.iter_mut().find(|b| copy_key(b) == key) {
            Some(b) => {
                if newer(c, b) {
                    *b = c.clone();
                }
            }
            None => base.copies.push(c.clone()),
        }
    }
    // A multiset union: an entry `other` holds n times is there n times
    // (two runs in the same second may record equal entries).
    for (i, v) in other.verified.iter().enumerate() {
        let wanted = other.verified[..=i].iter().filter(|x| *x == v).count();
        if base.verified.iter().filter(|x| *x == v).count() < wanted {
            base.verified.push(v.clone());
        }
    }
    // Stable: entries without a time keep their place before the others.
    base.verified.sort_by_key(when);
    for (k, v) in &other.extra {
        match base.extra.get_mut(k) {
            Some(b) => {
                if newer(v, b) {
                    *b = v.clone();
                }
            }
            None => {
                base.extra.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(())
}

/// A record as a sidecar holds it: pretty-printed, newline-terminated.
pub fn sidecar_text(a: &Artifact) -> Result<Vec<u8>> {
    let mut text =
        serde_json::to_vec_pretty(a).map_err(|e| Error::msg(format!("encode record: {e}")))?;
    text.push(b'\n');
    Ok(text)
}

/// Parses a sidecar's text as an artifact record; errors name `source`.
pub fn parse_record(source: &str, text: &[u8]) -> Result<Artifact> {
    serde_json::from_slice(text).map_err(|e| Error::Input {
        source: source.to_string(),
        line: e.line(),
        msg: format!("not an artifact record: {e}"),
    })
}

/// The record of a local sidecar, `None` when there is no sidecar.
/// A sidecar in a remote repository (an `s3://` or `ssh://` location, see
/// [`crate::store`]) is read the same way.
pub fn read_local(sidecar: &Path) -> Result<Option<Artifact>> {
    match crate::store::read_small(sidecar, 64 << 20)? {
        Some(text) => parse_record(&sidecar.display().to_string(), &text).map(Some),
        None => Ok(None),
    }
}

/// An exclusive flock on a sidecar's directory, held while a sidecar in it
/// is read, merged and replaced, so two tools updating the same sidecar do
/// not lose each other's evidence. Short-lived: never held across a check
/// or a copy. Where directories cannot be flocked (NFS emulates flock with
/// byte-range locks, which need a file open for writing) the update goes
/// on without it, still replacing the sidecar atomically: `None`.
pub fn lock_dir(dir: &Path) -> Result<Option<Flock<File>>> {
    let f = File::open(dir).ctx("open directory", dir)?;
    match Flock::lock(f, FlockArg::LockExclusive) {
        Ok(l) => Ok(Some(l)),
        Err((_, Errno::EBADF | Errno::ENOLCK | Errno::EINVAL | Errno::EOPNOTSUPP)) => Ok(None),
        Err((_, e)) => Err(Error::io("lock", dir, std::io::Error::from(e))),
    }
}

/// The record a tool acts on for `incoming` (a record read on stdin or
/// from a sidecar): `incoming` with the evidence its sidecar holds merged
/// in. A record whose files are not the ones its sidecar describes (the
/// artifact was encrypted or decrypted since, or the record is not the
/// artifact's) is refused: a verdict on other bytes must not reach the
/// sidecar.
pub fn adopt(mut incoming: Artifact) -> Result<Artifact> {
    let path = incoming.sidecar();
    if let Some(on_disk) = read_local(&path)? {
        same_files(&incoming, &on_disk, &path)?;
        merge(&mut incoming, &on_disk)
            .map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
    }
    Ok(incoming)
}

fn same_files(a: &Artifact, on_disk: &Artifact, path: &Path) -> Result<()> {
    if a.files == on_disk.files {
        return Ok(());
    }
    Err(Error::msg(format!(
        "{}: describes other files than this record (encrypted or decrypted since, or \
         not this record's artifact); the sidecar is the artifact's record: read it with --repo",
        path.display()
    )))
}

/// Writes `a` to its sidecar beside the artifact, merged with what the
/// sidecar holds at that moment (read under the directory's lock, replaced
/// atomically); `a` becomes the merged record and describes the artifact
/// as it is now (pgb-encrypt's new files). Without `create`, nothing is
/// written when there is no sidecar (returns false).
pub fn update_local(a: &mut Artifact, create: bool) -> Result<bool> {
    write_local(a, create, false)
}

/// Adds the evidence of `a` (a copy, a verdict) to its sidecar, as
/// [`update_local`] without `create`, refusing when the sidecar describes
/// other files than `a` by then.
pub fn add_evidence(a: &mut Artifact) -> Result<bool> {
    write_local(a, false, true)
}

fn write_local(a: &mut Artifact, create: bool, same: bool) -> Result<bool> {
    let path = a.sidecar();
    let dir = path.parent().unwrap_or(Path::new("/"));
    // A remote sidecar is read, merged and replaced without a lock (S3 and
    // a remote shell have no flock): the window is the merge's milliseconds.
    let _lock = match crate::store::is_url(&path) {
        true => None,
        false => lock_dir(dir)?,
    };
    match read_local(&path)? {
        Some(on_disk) => {
            if same {
                same_files(a, &on_disk, &path)?;
            }
            merge(a, &on_disk).map_err(|e| Error::msg(format!("{}: {e}", path.display())))?
        }
        None if !create => return Ok(false),
        None => {}
    }
    crate::store::write_replace(&path, &sidecar_text(a)?)?;
    Ok(true)
}

/// The sidecar beside the copy of `a` at `dest`: `<path>.pgb.json`.
pub fn copy_sidecar_rel(a: &Artifact) -> String {
    format!("{}.pgb.json", a.path)
}

/// Writes `a` to the sidecar beside its copy at `dest`, merged with what
/// that sidecar holds (read, merged, replaced atomically; a directory's
/// under its lock). A missing sidecar is written only when the copy's first
/// file is there. With `same`, a sidecar there that describes other files
/// (a copy made before the artifact was encrypted in place) is refused
/// rather than made to describe files the copy does not hold; pgb-ship,
/// which has just copied `a`'s files there, passes false. Returns the
/// merged record written.
pub fn update_copy(dest: &Destination, a: &Artifact, same: bool) -> Result<Artifact> {
    let rel = copy_sidecar_rel(a);
    let url = dest.url_of(&rel);
    let _lock = match dest {
        Destination::Dir(root) => {
            let p = root.join(&rel);
            let dir = p.parent().unwrap_or(root);
            // A directory that is not there holds no copy (said below).
            dir.is_dir().then(|| lock_dir(dir)).transpose()?.flatten()
        }
        _ => None,
    };
    let mut merged = a.clone();
    match dest.size_of(&rel)? {
        Some(_) => {
            let mut text = Vec::new();
            dest.open_read(&rel)?
                .read_to_end(&mut text)
                .map_err(|e| Error::msg(format!("read: {url}: {e}")))?;
            let there = parse_record(&url, &text)?;
            if same && there.files != a.files {
                return Err(Error::msg(format!(
                    "{url}: describes other files than the record (a copy of the artifact \
                     as it was before it was encrypted or decrypted?); left as it is"
                )));
            }
            merge(&mut merged, &there).map_err(|e| Error::msg(format!("{url}: {e}")))?;
        }
        None => {
            if let Some(f) = a.files.first() {
                let file = crate::dest::file_rel(a, f);
                if dest.size_of(&file)?.is_none() {
                    return Err(Error::msg(format!(
                        "{}: no such file: the copy is gone; its sidecar is not written",
                        dest.url_of(&file)
                    )));
                }
            }
        }
    }
    dest.put_bytes_replace(&sidecar_text(&merged)?, &rel)?;
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn record(copies: Vec<Value>, verified: Vec<Value>) -> Artifact {
        serde_json::from_value(json!({
            "schema": "pgb.v1", "type": "artifact", "id": "x", "kind": "logical",
            "cluster": "main", "created": "2026-11-21T10:15:00+01:00",
            "repo": "/r", "path": "main/logical/app/a.dump.zst",
            "files": [{"name": "a.dump.zst", "size": 3, "sha256": "s", "blake3": "b"}],
            "copies": copies, "verified": verified
        }))
        .unwrap()
    }

    fn copy(url: &str, hour: u32) -> Value {
        json!({"to": "/nas", "url": url, "media": "nas",
               "when": format!("2026-11-21T{hour:02}:00:00+00:00")})
    }

    fn check(method: &str, ok: bool, hour: u32) -> Value {
        json!({"method": method, "ok": ok,
               "when": format!("2026-11-21T{hour:02}:00:00+00:00")})
    }

    #[test]
    fn a_replayed_record_loses_nothing_recorded_since() {
        // Yesterday's record, replayed: no copies, one verification.
        let old = record(vec![], vec![check("checksums", true, 1)]);
        // The sidecar since: a NAS copy and a restore test.
        let disk = record(
            vec![copy("/nas/a", 2)],
            vec![check("checksums", true, 1), check("restore", true, 3)],
        );
        let mut a = old.clone();
        a.verified.push(check("checksums", false, 4));
        merge(&mut a, &disk).unwrap();
        assert_eq!(a.copies, vec![copy("/nas/a", 2)]);
        assert_eq!(
            a.verified,
            vec![
                check("checksums", true, 1),
                check("restore", true, 3),
                check("checksums", false, 4)
            ]
        );
    }

    #[test]
    fn the_later_entry_of_a_copy_is_kept_and_other_artifacts_are_refused() {
        let mut a = record(vec![copy("/nas/a", 5)], vec![]);
        merge(&mut a, &record(vec![copy("/nas/a", 2)], vec![])).unwrap();
        assert_eq!(a.copies, vec![copy("/nas/a", 5)]);
        let mut b = record(vec![copy("/nas/a", 2)], vec![]);
        merge(&mut b, &record(vec![copy("/nas/a", 5)], vec![])).unwrap();
        assert_eq!(b.copies, vec![copy("/nas/a", 5)]);
        let mut other = record(vec![], vec![]);
        other.id = "y".into();
        let e = merge(&mut a, &other).unwrap_err().to_string();
        assert!(e.contains("different artifacts"), "{e}");
    }

    #[test]
    fn newer_extra_fields_win_and_missing_ones_are_added() {
        let mut a = record(vec![], vec![]);
        a.extra.insert(
            "policy".into(),
            json!({"ok": false, "when": "2026-11-21T01:00:00+00:00"}),
        );
        let mut b = record(vec![], vec![]);
        b.extra.insert(
            "policy".into(),
            json!({"ok": true, "when": "2026-11-21T02:00:00+00:00"}),
        );
        b.extra
            .insert("archive_check".into(), json!({"restorable": true}));
        let mut m = a.clone();
        merge(&mut m, &b).unwrap();
        assert_eq!(m.extra["policy"]["ok"], true);
        assert_eq!(m.extra["archive_check"]["restorable"], true);
        let mut m = b.clone();
        merge(&mut m, &a).unwrap();
        assert_eq!(m.extra["policy"]["ok"], true);
    }

    #[test]
    fn local_sidecars_are_merged_not_replaced() {
        let d = tempfile::tempdir().unwrap();
        let mut disk = record(vec![copy("/nas/a", 2)], vec![check("restore", true, 3)]);
        disk.repo = d.path().display().to_string();
        std::fs::create_dir_all(disk.location().parent().unwrap()).unwrap();
        // No sidecar: nothing written unless asked.
        let mut a = disk.clone();
        assert!(!update_local(&mut a, false).unwrap());
        assert!(update_local(&mut a, true).unwrap());
        let mut replayed = record(vec![], vec![check("checksums", true, 4)]);
        replayed.repo = disk.repo.clone();
        let adopted = adopt(replayed.clone()).unwrap();
        assert_eq!(adopted.copies.len(), 1);
        assert_eq!(adopted.verified.len(), 2);
        // A record of other bytes than the sidecar describes is refused.
        let mut other = replayed.clone();
        other.files[0].sha256 = "other".into();
        let e = adopt(other.clone()).unwrap_err().to_string();
        assert!(e.contains("describes other files"), "{e}");
        assert!(add_evidence(&mut other).is_err());
        add_evidence(&mut replayed).unwrap();
        let now = read_local(&disk.sidecar()).unwrap().unwrap();
        assert_eq!(now.copies, vec![copy("/nas/a", 2)]);
        assert_eq!(
            now.verified,
            vec![check("restore", true, 3), check("checksums", true, 4)]
        );
        assert_eq!(replayed, now, "the caller gets the merged record");
        // A directory copy: merged beside it; a copy that is gone is not
        // given a sidecar.
        let nas = tempfile::tempdir().unwrap();
        let dest = Destination::Dir(nas.path().to_path_buf());
        let e = update_copy(&dest, &now, true).unwrap_err().to_string();
        assert!(e.contains("the copy is gone"), "{e}");
        let there = nas.path().join(&now.path);
        std::fs::create_dir_all(there.parent().unwrap()).unwrap();
        std::fs::write(&there, b"abc").unwrap();
        let mut at_copy = record(vec![], vec![check("restore", false, 1)]);
        at_copy.repo = nas.path().display().to_string();
        std::fs::write(at_copy.sidecar(), sidecar_text(&at_copy).unwrap()).unwrap();
        update_copy(&dest, &now, true).unwrap();
        let merged = read_local(&at_copy.sidecar()).unwrap().unwrap();
        assert_eq!(merged.verified.len(), 3);
        assert_eq!(merged.copies.len(), 1);
        // A copy of other bytes is left as it is, unless they were just
        // copied there.
        let mut other = now.clone();
        other.files[0].sha256 = "encrypted since".into();
        let e = update_copy(&dest, &other, true).unwrap_err().to_string();
        assert!(e.contains("describes other files"), "{e}");
        update_copy(&dest, &other, false).unwrap();
    }

    #[test]
    fn concurrent_updates_of_one_sidecar_lose_nothing() {
        let d = tempfile::tempdir().unwrap();
        let mut a = record(vec![], vec![]);
        a.repo = d.path().display().to_string();
        std::fs::create_dir_all(a.location().parent().unwrap()).unwrap();
        update_local(&mut a, true).unwrap();
        std::thread::scope(|s| {
            for i in 0..16u32 {
                let mut mine = a.clone();
                s.spawn(move || {
                    mine.verified.push(check(&format!("m{i}"), true, i));
                    mine.copies.push(copy(&format!("/d{i}/a"), i));
                    add_evidence(&mut mine).unwrap();
                });
            }
        });
        let now = read_local(&a.sidecar()).unwrap().unwrap();
        assert_eq!((now.verified.len(), now.copies.len()), (16, 16));
    }

    fn entries(max: usize) -> impl Strategy<Value = Vec<(u8, u8, bool)>> {
        prop::collection::vec((0u8..6, 0u8..24, any::<bool>()), 0..max)
    }

    /// A record with one copy per destination and any verifications.
    fn build(copies: &[(u8, u8, bool)], checks: &[(u8, u8, bool)]) -> Artifact {
        let mut seen = std::collections::BTreeSet::new();
        record(
            copies
                .iter()
                .filter(|(d, _, _)| seen.insert(*d))
                .map(|(d, h, _)| copy(&format!("/d{d}/a"), u32::from(*h)))
                .collect(),
            checks
                .iter()
                .map(|(m, h, ok)| check(&format!("m{}", m % 3), *ok, u32::from(*h)))
                .collect(),
        )
    }

    proptest! {
        /// Merging never loses an entry of either side (a copy's
        /// destination, a verification), and merging again changes nothing.
        #[test]
        fn merging_loses_nothing_and_is_idempotent(
            ac in entries(6), av in entries(8), bc in entries(6), bv in entries(8),
        ) {
            let a = build(&ac, &av);
            let b = build(&bc, &bv);
            let mut m = a.clone();
            merge(&mut m, &b).unwrap();
            for side in [&a, &b] {
                for c in &side.copies {
                    let kept = m.copies.iter().find(|x| x["url"] == c["url"]);
                    prop_assert!(kept.is_some(), "copy {c} lost");
                    prop_assert!(when(kept.unwrap()) >= when(c));
                }
                for v in &side.verified {
                    let count = |x: &Artifact| x.verified.iter().filter(|e| *e == v).count();
                    prop_assert!(count(&m) >= count(side), "verification {v} lost");
                }
            }
            let urls: std::collections::BTreeSet<_> =
                m.copies.iter().map(|c| c["url"].to_string()).collect();
            prop_assert_eq!(urls.len(), m.copies.len(), "one entry per destination");
            prop_assert!(m.verified.windows(2).all(|w| when(&w[0]) <= when(&w[1])));
            let mut again = m.clone();
            merge(&mut again, &b).unwrap();
            merge(&mut again, &a).unwrap();
            prop_assert_eq!(&again, &m);
            // The other way round: the same evidence.
            let mut n = b.clone();
            merge(&mut n, &a).unwrap();
            let set = |x: &Artifact| {
                let mut v: Vec<String> = x.verified.iter().map(Value::to_string).collect();
                v.sort();
                v
            };
            prop_assert_eq!(set(&n), set(&m));
        }
    }
}
