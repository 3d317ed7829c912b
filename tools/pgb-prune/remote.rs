//! A repository root that is local (walked by descriptor, see
//! [`crate::apply`]) or remote (`s3://`, `ssh://`, reached through the
//! storage layer): the same questions (is an artifact complete, is its
//! sidecar there) and the same deletion order (the artifact's files, then
//! its sidecar last, so a prune stopped half-way never leaves files without
//! the record that says they are to go).
//!
//! Remotely, paths are checked lexically (no absolute path, no `.` or `..`
//! part, see [`apply::check_rel`]) before anything is read or removed;
//! sizes come from one listing per directory.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;

use pgb_common::dest::Destination;
use pgb_common::error::Result;
use pgb_common::record::{Artifact, Kind};

use crate::apply::{self, Refused, Root};

/// A remote repository root.
pub struct Remote {
    pub dest: Destination,
    /// Sizes of the files directly in a directory (relative to the root),
    /// `None` when it could not be listed (not there).
    dirs: RefCell<HashMap<String, Option<HashMap<String, u64>>>>,
}

/// Where an artifact's repository is.
pub enum Place {
    Local(Root),
    Remote(Remote),
}

fn split_rel(rel: &str) -> (&str, &str) {
    rel.rsplit_once('/').unwrap_or(("", rel))
}

impl Remote {
    fn open(url: &Path) -> Result<Remote> {
        Ok(Remote {
            dest: pgb_common::store::destination(url)?,
            dirs: Default::default(),
        })
    }

    /// The size of the file at `rel`, `None` when absent.
    fn size(&self, rel: &str) -> Result<Option<u64>> {
        let (dir, name) = split_rel(rel);
        if !self.dirs.borrow().contains_key(dir) {
            // A directory that cannot be listed (an SSH directory that is
            // not there) is asked about file by file.
            let listed = self.dest.list(dir, "").ok().map(|v| {
                v.into_iter()
                    .map(|l| (l.name, l.size))
                    .collect::<HashMap<_, _>>()
            });
            self.dirs.borrow_mut().insert(dir.to_string(), listed);
        }
        if let Some(Some(files)) = self.dirs.borrow().get(dir) {
            return Ok(files.get(name).copied());
        }
        self.dest.size_of(rel)
    }
}

impl Place {
    pub fn open(root: &Path) -> Result<Place> {
        if pgb_common::store::is_url(root) {
            Ok(Place::Remote(Remote::open(root)?))
        } else {
            Ok(Place::Local(Root::open(root)?))
        }
    }

    /// `None` when the artifact is complete, or why it is not;
    /// `Err(Refused)` when one of its paths leaves the repository.
    pub fn inspect(&self, a: &Artifact) -> Result<std::result::Result<Option<String>, Refused>> {
        let r = match self {
            Place::Local(root) => return apply::inspect(root, a),
            Place::Remote(r) => r,
        };
        let rels = match apply::file_rels(a) {
            Ok(rels) => rels,
            Err(x) => return Ok(Err(x)),
        };
        if a.files.is_empty() {
            return Ok(Ok(Some("the record lists no files".into())));
        }
        for (f, rel) in a.files.iter().zip(rels.iter().cycle()) {
            match r.size(rel)? {
                Some(size) if size == f.size => {}
                Some(size) => {
                    return Ok(Ok(Some(format!(
                        "{} has {size} bytes, the record says {}",
                        f.name, f.size
                    ))))
                }
                None => return Ok(Ok(Some(format!("{} is missing", f.name)))),
            }
        }
        Ok(Ok(None))
    }

    /// True when a regular file is at `rel` (lexically checked already).
    pub fn has_file(&self, rel: &str) -> Result<std::result::Result<bool, Refused>> {
        match self {
            Place::Local(root) => Ok(root.entry(rel)?.map(|e| matches!(e, apply::Entry::File(_)))),
            Place::Remote(r) => Ok(Ok(r.size(rel)?.is_some())),
        }
    }

    /// Deletes the artifact: its files, then (a physical backup) what is
    /// left of its directory, then its sidecar, in one batch. What is gone
    /// already is fine; a path through a symlink is refused.
    pub fn delete(&self, a: &Artifact) -> Result<()> {
        let r = match self {
            Place::Local(root) => return apply::delete(root, a).map(|_| ()),
            Place::Remote(r) => r,
        };
        let refused = |x: Refused| pgb_common::error::Error::msg(format!("refused: {}", x.0));
        let mut rels = apply::file_rels(a).map_err(refused)?;
        if a.kind == Kind::Physical {
            rels.push(a.path.clone());
        }
        rels.push(apply::sidecar_rel(a));
        // One batch, in this order (one session on an SSH host).
        let rels: Vec<&str> = rels.iter().map(String::as_str).collect();
        r.dest.remove_many(&rels)
    }
}
