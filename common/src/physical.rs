//! Restoring a physical artifact (pg_basebackup tar format, as pgb-snapshot
//! stores it, optionally age-encrypted file by file) into a data directory:
//! base, tablespaces (relocatable) and pg_wal unpacked streaming, every file
//! checked against backup_manifest on the way and every stored byte against
//! the record's checksums, then the recovery settings.
//! Shared by pgb-restore and pgb-verify --restore.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::crypt::Identities;
use crate::error::{Error, IoContext, Result};
use crate::manifest::Manifest;
use crate::record::{Artifact, Kind};
use crate::unpack::{
    open_verified, unpack, unpack_holding, unpack_unhashed, OpenedVerified, Owner, HELD,
};

/// Which stored file holds what.
#[derive(Debug, Default)]
pub struct Layout {
    pub manifest: Option<String>,
    pub base: Option<String>,
    pub wal: Option<String>,
    /// Tablespace OID and its stored file name.
    pub tablespaces: Vec<(u32, String)>,
}

fn plain_name(name: &str) -> &str {
    name.strip_suffix(crate::crypt::SUFFIX).unwrap_or(name)
}

pub fn layout(a: &Artifact) -> Result<Layout> {
    if a.kind != Kind::Physical {
        return Err(Error::msg(format!("{}: not a physical backup", a.id)));
    }
    let mut l = Layout::default();
    for f in &a.files {
        let plain = plain_name(&f.name);
        let stem = plain
            .strip_suffix(".tar.zst")
            .or_else(|| plain.strip_suffix(".tar.gz"))
            .or_else(|| plain.strip_suffix(".tar"));
        match (plain, stem) {
            ("backup_manifest", _) => l.manifest = Some(f.name.clone()),
            (_, Some("base")) => l.base = Some(f.name.clone()),
            (_, Some("pg_wal")) => l.wal = Some(f.name.clone()),
            (_, Some(oid)) if !oid.is_empty() && oid.bytes().all(|b| b.is_ascii_digit()) => {
                l.tablespaces.push((
                    oid.parse()
                        .map_err(|_| Error::msg(format!("{}: bad tablespace OID", f.name)))?,
                    f.name.clone(),
                ))
            }
            _ => {
                return Err(Error::msg(format!(
                    "{}: {}: not a file pg_basebackup writes in tar format",
                    a.id, f.name
                )))
            }
        }
    }
    if l.base.is_none() {
        return Err(Error::msg(format!(
            "{}: the record lists no base tar",
            a.id
        )));
    }
    Ok(l)
}

/// True when the artifact's files are age-encrypted.
pub fn is_encrypted(a: &Artifact) -> bool {
    a.encryption.is_some()
        || a.files
            .iter()
            .any(|f| f.name.ends_with(crate::crypt::SUFFIX))
}

/// Written under a held-back name until the restore is complete, so a
/// half-restored directory cannot be started.
pub const PG_CONTROL: &str = "global/pg_control";

pub struct Options<'a> {
    pub owner: Option<Owner>,
    pub identities: Option<&'a Identities>,
    /// Tablespace OID -> new location; others go back where they were.
    pub tablespace_map: BTreeMap<u32, PathBuf>,
    /// Leave the WAL tar unread (a chain member before the newest: only
    /// the newest's WAL is used).
    pub skip_wal: bool,
}

#[derive(Debug, Default)]
pub struct Restored {
    pub files: u64,
    pub bytes: u64,
    pub tablespaces: Vec<(u32, PathBuf)>,
    pub group_access: bool,
    /// The manifest was present and every file matched it.
    pub manifest_checked: bool,
}

/// `tablespace_map` lines: `OID PATH`.
pub fn parse_tablespace_map(text: &str) -> Vec<(u32, String)> {
    text.lines()
        .filter_map(|l| {
            let (oid, path) = l.split_once(' ')?;
            Some((oid.parse().ok()?, path.to_string()))
        })
        .collect()
}

/// Unpacks the artifact into `dest` (an existing, empty directory). On
/// error the caller removes what was written (see [`clear_dir`]).
pub fn restore(a: &Artifact, dest: &Path, opts: &Options) -> Result<Restored> {
    let l = layout(a)?;
    let dir = a.location();
    let mut out = Restored::default();

    // The manifest first: its checksum is checked before any file is trusted.
    let manifest = match &l.manifest {
        Some(name) => {
            let path = dir.join(name);
            let mut o = open_stored_checked(a, &path, name, opts)?;
            let mut bytes = Vec::new();
            o.reader
                .read_to_end(&mut bytes)
                .map_err(|e| o.explain(Error::io("read", &path, e)))?;
            o.finish()?;
            let m = Manifest::parse(&bytes)
                .map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
            Some((m, bytes))
        }
        None => {
            crate::term::warn(format!(
                "{}: no backup_manifest in the record; files are not checked",
                a.id
            ));
            None
        }
    };
    let mut written: Vec<(String, u64, String)> = Vec::new();

    let base = l.base.as_deref().expect("layout checks base");
    let path = dir.join(base);
    let mut o = open_stored_checked(a, &path, base, opts)?;
    let u = unpack_holding(
        &mut o.reader,
        dest,
        opts.owner,
        &path.display().to_string(),
        &[PG_CONTROL],
    )
    .map_err(|e| o.explain(e))?;
    o.finish()?;
    out.group_access = u.group_access;
    out.bytes += u.bytes;
    written.extend(u.files.into_iter().map(|w| (w.path, w.size, w.sha256)));

    // Tablespaces: where tablespace_map says, unless relocated.
    let map_path = dest.join("tablespace_map");
    let original: BTreeMap<u32, String> = match std::fs::read_to_string(&map_path) {
        Ok(t) => parse_tablespace_map(&t).into_iter().collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => return Err(Error::io("read", &map_path, e)),
    };
    for oid in opts.tablespace_map.keys() {
        if !l.tablespaces.iter().any(|(o, _)| o == oid) {
            return Err(Error::Usage(format!(
                "--tablespace-map {oid}=...: the backup has no tablespace with OID {oid}"
            )));
        }
    }
    for (oid, name) in &l.tablespaces {
        let location = match opts.tablespace_map.get(oid) {
            Some(p) => p.clone(),
            None => PathBuf::from(original.get(oid).ok_or_else(|| {
                Error::msg(format!(
                    "{name}: tablespace {oid} is not in the backup's tablespace_map; relocate it with --tablespace-map {oid}=DIR"
                ))
            })?),
        };
        prepare_empty_dir(&location, opts.owner, "tablespace")?;
        let path = dir.join(name);
        let mut o = open_stored_checked(a, &path, name, opts)?;
        let u = unpack(
            &mut o.reader,
            &location,
            opts.owner,
            &path.display().to_string(),
        )
        .map_err(|e| o.explain(e))?;
        o.finish()?;
        out.bytes += u.bytes;
        written.extend(
            u.files
                .into_iter()
                .map(|w| (format!("pg_tblspc/{oid}/{}", w.path), w.size, w.sha256)),
        );
        out.tablespaces.push((*oid, location));
    }
    if !out.tablespaces.is_empty() {
        let mut text = String::new();
        for (oid, loc) in &out.tablespaces {
            text.push_str(&format!("{oid} {}\n", loc.display()));
            let link = dest.join("pg_tblspc").join(oid.to_string());
            std::os::unix::fs::symlink(loc, &link).ctx("symlink", &link)?;
            if let Some(o) = opts.owner {
                o.apply(&link)?;
            }
        }
        // The manifest lists the original tablespace_map; check that one,
        // then point it at the new locations (PostgreSQL makes the links
        // from it at startup).
        write_owned(&map_path, text.as_bytes(), opts.owner, true)?;
    }

    if let Some(name) = l.wal.as_ref().filter(|_| !opts.skip_wal) {
        let path = dir.join(name);
        let wal_dir = dest.join("pg_wal");
        if !wal_dir.is_dir() {
            std::fs::create_dir(&wal_dir).ctx("create directory", &wal_dir)?;
            if let Some(o) = opts.owner {
                o.apply(&wal_dir)?;
            }
        }
        let mut o = open_stored_checked(a, &path, name, opts)?;
        // pg_wal is not in the manifest; its segments are checked page by
        // page (pgb-verify) and by the server as it replays them.
        let u = unpack_unhashed(
            &mut o.reader,
            &wal_dir,
            opts.owner,
            &path.display().to_string(),
        )
        .map_err(|e| o.explain(e))?;
        o.finish()?;
        out.bytes += u.bytes;
        out.files += u.files.len() as u64;
    }

    if let Some((m, bytes)) = manifest {
        let problems = m.compare(written.iter().map(|(p, s, h)| (p.as_str(), *s, h.as_str())));
        if !problems.is_empty() {
            let n = problems.len();
            let shown: Vec<String> = problems.into_iter().take(10).collect();
            return Err(Error::msg(format!(
                "{}: the restored files do not match backup_manifest ({n} problem{}): {}",
                a.id,
                if n == 1 { "" } else { "s" },
                shown.join("; ")
            )));
        }
        // As pg_basebackup leaves it in a plain backup, for pg_verifybackup.
        write_owned(&dest.join("backup_manifest"), &bytes, opts.owner, false)?;
        out.manifest_checked = true;
    }
    out.files += written.len() as u64;
    // Everything is in place and checked: the directory may start now.
    let held = dest.join(format!("{PG_CONTROL}{HELD}"));
    let control = dest.join(PG_CONTROL);
    std::fs::rename(&held, &control).map_err(|e| {
        Error::io(
            "rename",
            &held,
            if e.kind() == std::io::ErrorKind::NotFound {
                std::io::Error::other("the base tar has no global/pg_control")
            } else {
                e
            },
        )
    })?;
    Ok(out)
}

/// Opens stored file `name` of `a`, every byte compared with the record's
/// checksums of it as it streams.
fn open_stored_checked(
    a: &Artifact,
    path: &Path,
    name: &str,
    opts: &Options,
) -> Result<OpenedVerified> {
    let want = a
        .files
        .iter()
        .find(|f| f.name == name)
        .ok_or_else(|| Error::msg(format!("{}: {name}: not in the record", a.id)))?;
    open_verified(path, opts.identities, want)
}

/// Creates `dir` (and parents) when missing; refuses a non-empty one.
fn prepare_empty_dir(dir: &Path, owner: Option<Owner>, what: &str) -> Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                return Err(Error::msg(format!(
                    "{what} location {} is not empty; relocate it with --tablespace-map OID=DIR",
                    dir.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Missing parents are created for the owner too, or the server
            // could not reach the tablespace.
            let mut missing = vec![dir.to_path_buf()];
            let mut p = dir.parent();
            while let Some(q) = p.filter(|q| !q.exists()) {
                missing.push(q.to_path_buf());
                p = q.parent();
            }
            for d in missing.iter().rev() {
                std::fs::create_dir(d).ctx("create directory", d)?;
                if let Some(o) = owner {
                    o.apply(d)?;
                }
            }
        }
        Err(e) => return Err(Error::io("read directory", dir, e)),
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).ctx("chmod", dir)?;
    if let Some(o) = owner {
        o.apply(dir)?;
    }
    Ok(())
}

/// Writes a file 0600 owned by `owner`; `replace` allows an existing one.
pub fn write_owned(path: &Path, bytes: &[u8], owner: Option<Owner>, replace: bool) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if replace {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", path, e)),
        }
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .mode(0o600)
        .open(path)
        .ctx("create", path)?;
    f.write_all(bytes).ctx("write", path)?;
    if let Some(o) = owner {
        std::os::unix::fs::fchown(&f, Some(o.uid), Some(o.gid)).ctx("chown", path)?;
    }
    Ok(())
}

/// What recovery should stop at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Replay all WAL available (no recovery_target setting).
    End,
    /// Stop as soon as the backup is consistent.
    Immediate,
    Time(String),
    Lsn(String),
    Xid(String),
    Name(String),
}

impl Target {
    /// `(kind, value)` for records and messages.
    pub fn describe(&self) -> (&'static str, Option<&str>) {
        match self {
            Target::End => ("end", None),
            Target::Immediate => ("immediate", None),
            Target::Time(v) => ("time", Some(v)),
            Target::Lsn(v) => ("lsn", Some(v)),
            Target::Xid(v) => ("xid", Some(v)),
            Target::Name(v) => ("name", Some(v)),
        }
    }
}

pub struct Recovery {
    pub restore_command: String,
    pub target: Target,
    /// promote, pause or shutdown.
    pub action: String,
    pub inclusive: bool,
    pub standby: bool,
    /// More settings appended as they are (a throwaway restore's port...).
    pub extra: Vec<(String, String)>,
}

/// A value quoted for postgresql.conf.
pub fn conf_quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "''"))
}

impl Recovery {
    /// The lines appended to postgresql.auto.conf.
    pub fn settings(&self) -> Vec<(String, String)> {
        let mut s = vec![(
            "restore_command".to_string(),
            conf_quote(&self.restore_command),
        )];
        let t = match &self.target {
            Target::End => None,
            Target::Immediate => Some(("recovery_target", "immediate".to_string())),
            Target::Time(v) => Some(("recovery_target_time", v.clone())),
            Target::Lsn(v) => Some(("recovery_target_lsn", v.clone())),
            Target::Xid(v) => Some(("recovery_target_xid", v.clone())),
            Target::Name(v) => Some(("recovery_target_name", v.clone())),
        };
        if let Some((k, v)) = t {
            s.push((k.to_string(), conf_quote(&v)));
            if !matches!(self.target, Target::Immediate) {
                s.push((
                    "recovery_target_inclusive".into(),
                    if self.inclusive { "on" } else { "off" }.into(),
                ));
            }
            s.push(("recovery_target_action".into(), conf_quote(&self.action)));
        }
        s.extend(self.extra.iter().cloned());
        s
    }

    /// Appends the settings to postgresql.auto.conf and creates
    /// recovery.signal (standby.signal with `standby`).
    pub fn write(&self, dest: &Path, owner: Option<Owner>) -> Result<()> {
        let conf = dest.join("postgresql.auto.conf");
        let mut text = match std::fs::read(&conf) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io("read", &conf, e)),
        };
        if !text.is_empty() && !text.ends_with(b"\n") {
            text.push(b'\n');
        }
        text.extend_from_slice(
            format!(
                "# Recovery settings added by {} at {}\n",
                crate::term::tool(),
                chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
            )
            .as_bytes(),
        );
        for (k, v) in self.settings() {
            text.extend_from_slice(format!("{k} = {v}\n").as_bytes());
        }
        write_owned(&conf, &text, owner, true)?;
        let signal = dest.join(if self.standby {
            "standby.signal"
        } else {
            "recovery.signal"
        });
        write_owned(&signal, b"", owner, true)?;
        Ok(())
    }
}

/// The PID of a postmaster running on `data`, from postmaster.pid, when
/// that process is alive.
pub fn running_postmaster(data: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    if pid <= 0 {
        return None;
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) | Err(nix::errno::Errno::EPERM) => Some(pid),
        Err(_) => None,
    }
}

/// Removes everything inside `dir` (not following symlinks), keeping `dir`.
pub fn clear_dir(dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir).ctx("read directory", dir)? {
        let e = e.ctx("read directory", dir)?;
        let p = e.path();
        let ft = e.file_type().ctx("stat", &p)?;
        if ft.is_dir() {
            std::fs::remove_dir_all(&p).ctx("remove", &p)?;
        } else {
            std::fs::remove_file(&p).ctx("remove", &p)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_settings_quote_and_pick_the_target() {
        let r = Recovery {
            restore_command: "/usr/bin/pgb-wal get %f %p --archive '/srv/wal'".into(),
            target: Target::Time("2026-11-21 10:00:00+00".into()),
            action: "promote".into(),
            inclusive: false,
            standby: false,
            extra: vec![],
        };
        let s = r.settings();
        assert_eq!(
            s[0].1,
            "'/usr/bin/pgb-wal get %f %p --archive ''/srv/wal'''"
        );
        assert!(s.contains(&(
            "recovery_target_time".into(),
            "'2026-11-21 10:00:00+00'".into()
        )));
        assert!(s.contains(&("recovery_target_inclusive".into(), "off".into())));
        let r = Recovery {
            target: Target::Immediate,
            ..r
        };
        assert!(r
            .settings()
            .contains(&("recovery_target".into(), "'immediate'".into())));
        assert!(!r
            .settings()
            .iter()
            .any(|(k, _)| k == "recovery_target_inclusive"));
    }

    #[test]
    fn tablespace_map_lines() {
        assert_eq!(
            parse_tablespace_map("16384 /srv/ts one\n16385 /x\n"),
            vec![(16384, "/srv/ts one".into()), (16385, "/x".into())]
        );
    }
}
