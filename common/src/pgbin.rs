//! Finding the PostgreSQL programs that match a server or an artifact.
//!
//! A host often has several majors side by side (Debian and PGDG keep each in
//! `/usr/lib/postgresql/N/bin`, the normal state during an upgrade), and the
//! wrong one gives wrong answers: pg_dump refuses a newer server, a server
//! refuses another major's data directory, pg_restore refuses a newer
//! archive. So every tool asks for a program by the major it needs and
//! searches the directories given by `--pg-bindir` or `PGB_PG_BINDIR` (a
//! list separated by `:`) and only those when given (an installation named
//! is the one meant; a host without some program is tested that way),
//! otherwise the Debian/PGDG layouts (`/usr/lib/postgresql/N/bin`,
//! `/usr/pgsql-N/bin`), then PATH. Each
//! candidate's version is read from its own `--version`; when none matches,
//! the error names the version needed and what was found.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::record::Artifact;

/// Which majors of a program will do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Exactly this major: a server for a data directory, pg_combinebackup.
    Exact(u32),
    /// This major, else the oldest newer one: pg_dump and pg_basebackup for
    /// a server (they read older servers), pg_restore for an archive.
    AtLeast(u32),
    /// Any version; the first found.
    Any,
}

impl Need {
    fn accepts(self, major: u32) -> bool {
        match self {
            Need::Exact(m) => major == m,
            Need::AtLeast(m) => major >= m,
            Need::Any => true,
        }
    }

    fn describe(self) -> String {
        match self {
            Need::Exact(m) => format!("PostgreSQL {m}"),
            Need::AtLeast(m) => format!("PostgreSQL {m} or newer"),
            Need::Any => "any PostgreSQL".into(),
        }
    }
}

/// A program found, with the version it reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub path: PathBuf,
    /// As the program prints it: `15.18`, `18.6`, `18beta1`.
    pub version: String,
    pub major: u32,
}

impl Found {
    /// The directory holding the program (its installation's bin).
    pub fn bindir(&self) -> PathBuf {
        self.path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }
}

/// The major version in a version string: `15.18` -> 15, `18beta1` -> 18,
/// `9.6.24` -> 9.
pub fn major_of(version: &str) -> Option<u32> {
    let digits: String = version
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// Directories to search, in order, without duplicates: `given` (a list
/// separated by `:`) alone when there is one, otherwise the Debian/PGDG
/// layouts newest first, then PATH.
pub fn search_dirs(given: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(g) = given {
        dirs.extend(std::env::split_paths(g.as_os_str()).filter(|p| !p.as_os_str().is_empty()));
    }
    if !dirs.is_empty() {
        let mut seen = std::collections::HashSet::new();
        dirs.retain(|d| seen.insert(d.canonicalize().unwrap_or_else(|_| d.clone())));
        return dirs;
    }
    let mut layouts: Vec<(u32, PathBuf)> = Vec::new();
    for (parent, prefix) in [("/usr/lib/postgresql", ""), ("/usr", "pgsql-")] {
        for e in std::fs::read_dir(parent).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(prefix) else {
                continue;
            };
            if let Ok(v) = rest.parse::<u32>() {
                layouts.push((v, e.path().join("bin")));
            }
        }
    }
    layouts.sort_by_key(|l| std::cmp::Reverse(l.0));
    dirs.extend(layouts.into_iter().map(|(_, d)| d));
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| seen.insert(d.canonicalize().unwrap_or_else(|_| d.clone())));
    dirs
}

/// `program --version`, parsed; cached per path for the life of the process.
pub fn version_of(path: &Path) -> Option<String> {
    static CACHE: Mutex<Option<HashMap<PathBuf, Option<String>>>> = Mutex::new(None);
    let mut guard = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let cache = guard.get_or_insert_with(HashMap::new);
    if let Some(v) = cache.get(path) {
        return v.clone();
    }
    let v = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| crate::pg::parse_version(&String::from_utf8_lossy(&o.stdout)))
        .filter(|v| major_of(v).is_some());
    cache.insert(path.to_path_buf(), v.clone());
    v
}

/// Every copy of `program` in the search directories, with its version.
pub fn candidates(given: Option<&Path>, program: &str) -> Vec<Found> {
    search_dirs(given)
        .into_iter()
        .map(|d| d.join(program))
        .filter(|p| is_executable(p))
        .filter_map(|path| {
            let version = version_of(&path)?;
            let major = major_of(&version)?;
            Some(Found {
                path,
                version,
                major,
            })
        })
        .collect()
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Picks from `found` what `need` asks: the exact major when present, else
/// (for `AtLeast`) the oldest newer one, else (for `Any`) the first.
pub fn pick(found: &[Found], need: Need) -> Option<&Found> {
    match need {
        Need::Any => found.first(),
        Need::Exact(m) => found.iter().find(|f| f.major == m),
        Need::AtLeast(m) => found.iter().find(|f| f.major == m).or_else(|| {
            found
                .iter()
                .filter(|f| need.accepts(f.major))
                .min_by_key(|f| f.major)
        }),
    }
}

/// Finds `program` as `need` asks. `why` says what the version is for, for
/// the message when none matches ("the server runs 17.2").
pub fn find(given: Option<&Path>, program: &str, need: Need, why: &str) -> Result<Found> {
    let found = candidates(given, program);
    if let Some(f) = pick(&found, need) {
        return Ok(f.clone());
    }
    let seen = if found.is_empty() {
        "none was found".to_string()
    } else {
        let list: Vec<String> = found
            .iter()
            .map(|f| format!("{} is {}", f.path.display(), f.version))
            .collect();
        format!("found only: {}", list.join(", "))
    };
    let why = if why.is_empty() {
        String::new()
    } else {
        format!(" ({why})")
    };
    Err(Error::Missing(format!(
        "{program} of {} is needed{why}; {seen}; install that version's programs or name their \
         directory with --pg-bindir or PGB_PG_BINDIR (several separated by ':')",
        need.describe()
    )))
}

/// The major of the server an artifact was taken from (its `pg_version`).
pub fn server_major(a: &Artifact) -> Result<u32> {
    a.pg_version
        .as_deref()
        .and_then(major_of)
        .ok_or_else(|| Error::msg(format!("{}: the record has no pg_version", a.id)))
}

/// The major of the program that wrote an artifact (`tool.version`: a
/// pg_dump newer than the server writes an archive only its own pg_restore
/// reads), else the server's.
pub fn writer_major(a: &Artifact) -> Result<u32> {
    let server = server_major(a)?;
    let tool = a
        .extra
        .get("tool")
        .and_then(|t| t.get("version"))
        .and_then(|v| v.as_str())
        .and_then(major_of);
    Ok(tool.map_or(server, |t| t.max(server)))
}

/// A program that reads a dump (pg_restore, or a server to restore it
/// into): of the writer's major, else the oldest newer one.
pub fn for_dump(given: Option<&Path>, a: &Artifact, program: &str) -> Result<Found> {
    let m = writer_major(a)?;
    find(
        given,
        program,
        Need::AtLeast(m),
        &format!("{} was written by PostgreSQL {m}", a.id),
    )
}

/// A program for a physical backup (the server that runs it,
/// pg_combinebackup): exactly its major.
pub fn for_physical(given: Option<&Path>, a: &Artifact, program: &str) -> Result<Found> {
    let m = server_major(a)?;
    find(
        given,
        program,
        Need::Exact(m),
        &format!("{} is a PostgreSQL {m} backup", a.id),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(major: u32) -> Found {
        Found {
            path: PathBuf::from(format!("/pg/{major}/bin/pg_dump")),
            version: format!("{major}.1"),
            major,
        }
    }

    #[test]
    fn majors() {
        assert_eq!(major_of("15.18"), Some(15));
        assert_eq!(major_of("18beta1"), Some(18));
        assert_eq!(major_of("9.6.24"), Some(9));
        assert_eq!(major_of("devel"), None);
    }

    #[test]
    fn exact_wins_over_order_and_newer_is_oldest_newer() {
        let found = [f(18), f(15), f(16), f(14)];
        assert_eq!(pick(&found, Need::Exact(16)).unwrap().major, 16);
        assert_eq!(pick(&found, Need::Exact(17)), None);
        assert_eq!(pick(&found, Need::AtLeast(15)).unwrap().major, 15);
        assert_eq!(pick(&found, Need::AtLeast(17)).unwrap().major, 18);
        assert_eq!(pick(&found, Need::AtLeast(19)), None);
        assert_eq!(pick(&found, Need::Any).unwrap().major, 18);
    }

    #[test]
    fn given_dirs_come_first_and_once() {
        let d = search_dirs(Some(Path::new("/opt/a/bin:/opt/b/bin:/opt/a/bin")));
        assert_eq!(d[0], PathBuf::from("/opt/a/bin"));
        assert_eq!(d[1], PathBuf::from("/opt/b/bin"));
        assert_eq!(d.iter().filter(|p| p.ends_with("a/bin")).count(), 1);
    }

    #[test]
    fn no_match_names_what_is_needed_and_found() {
        let e = find(
            Some(Path::new("/nonexistent/bin")),
            "pg_nothing_like_this",
            Need::Exact(17),
            "the server runs 17.2",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("pg_nothing_like_this of PostgreSQL 17 is needed"),
            "{e}"
        );
        assert!(e.contains("the server runs 17.2"), "{e}");
        assert!(e.contains("PGB_PG_BINDIR"), "{e}");
    }
}
