//! A physical backup into a data directory, with recovery set up: checks
//! first (WAL archive, destination, owner), then the unpack (shared with
//! pgb-verify), the recovery settings, modes and a sync.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pgb_common::crypt::Identities;
use pgb_common::error::{Error, IoContext, Result};
use pgb_common::physical::{self, clear_dir, conf_quote, running_postmaster, Recovery, Target};
use pgb_common::record::Artifact;
use pgb_common::unpack::{sync_fs, Owner};
use serde_json::{json, Value};

use crate::cli::Args;
use crate::run::{pgb_wal, record, sh_quote, Done};
use crate::walcheck::{Coverage, TimelineGoal};

fn tablespace_map(args: &Args) -> Result<BTreeMap<u32, PathBuf>> {
    let mut m = BTreeMap::new();
    for s in &args.tablespace_map {
        let (oid, dir) = s
            .split_once('=')
            .ok_or_else(|| Error::Usage(format!("--tablespace-map {s:?}: expected OID=DIR")))?;
        let oid: u32 = oid
            .parse()
            .map_err(|_| Error::Usage(format!("--tablespace-map {s:?}: {oid:?} is not an OID")))?;
        let dir = PathBuf::from(dir);
        if !dir.is_absolute() {
            return Err(Error::Usage(format!(
                "--tablespace-map {s:?}: the directory must be absolute"
            )));
        }
        m.insert(oid, dir);
    }
    Ok(m)
}

/// The environment restore_command passes on for remote archives: where
/// and how, never who (no key or secret).
const REMOTE_SETTINGS: &[&str] = &[
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "PGB_SSH_OPTIONS",
];

/// restore_command for the archives: pgb-wal get, by absolute path, with
/// the identity files for encrypted segments. Every word is quoted for the
/// shell and `%` doubled, as PostgreSQL expands `%f`/`%p`.
fn restore_command(archives: &[PathBuf], identities: &[PathBuf]) -> Result<String> {
    if archives.is_empty() {
        // Archive recovery needs a restore_command; with none to offer,
        // one that finds nothing makes PostgreSQL read pg_wal.
        return Ok("false".into());
    }
    let word = |p: &Path| sh_quote(&p.display().to_string()).replace('%', "%%");
    // A remote archive is reached by the server's pgb-wal get with the
    // settings this run has (never a secret: credentials stay in the
    // server user's ~/.aws/credentials, ssh keys in its ~/.ssh or in
    // files PGB_SSH_OPTIONS names).
    let mut cmd = String::new();
    if archives.iter().any(|a| pgb_common::store::is_url(a)) {
        for var in REMOTE_SETTINGS {
            if let Ok(v) = std::env::var(var) {
                if !v.is_empty() {
                    cmd.push_str(&format!("{var}={} ", word(Path::new(&v))));
                }
            }
        }
    }
    cmd.push_str(&format!("{} get %f %p", word(&pgb_wal()?)));
    for a in archives {
        let abs = pgb_common::store::root_of(a)?;
        cmd.push_str(&format!(" --archive {}", word(&abs)));
    }
    for i in identities {
        cmd.push_str(&format!(" -i {}", word(i)));
    }
    Ok(cmd)
}

/// The name of `uid`, or `uid N`.
fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map_or_else(|| format!("uid {uid}"), |u| u.name)
}

/// Whether the user `uid` (in `groups`) may search directory `md`.
fn searchable(md: &std::fs::Metadata, uid: u32, groups: &[u32]) -> bool {
    use std::os::unix::fs::MetadataExt;
    let m = md.mode();
    if md.uid() == uid {
        m & 0o100 != 0
    } else if groups.contains(&md.gid()) {
        m & 0o010 != 0
    } else {
        m & 0o001 != 0
    }
}

/// Checks that `pgb-wal get`, run by the server as `owner`, will accept and
/// read identity file `f`: owned by `owner`, mode 0600 (nothing for group
/// or others), in directories `owner` can enter. Returns its absolute path.
/// Nothing is changed or copied: the message says what to do.
fn check_wal_identity(f: &Path, owner: Owner, from_i: bool) -> Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let abs = std::path::absolute(f).ctx("resolve", f)?;
    let user = user_name(owner.uid);
    let flag = if from_i {
        format!(
            "{} (given with -i, used for the WAL archive as no --wal-identity was given)",
            abs.display()
        )
    } else {
        format!("{} (--wal-identity)", abs.display())
    };
    let md = std::fs::metadata(&abs).map_err(|e| Error::Usage(format!("{flag}: {e}")))?;
    if !md.is_file() {
        return Err(Error::Usage(format!("{flag}: not a regular file")));
    }
    let after = "; nothing was written";
    if md.uid() != owner.uid {
        let home = nix::unistd::User::from_uid(owner.uid.into())
            .ok()
            .flatten()
            .map_or_else(|| PathBuf::from("/var/lib/postgresql"), |u| u.dir);
        let dir = home.join(".pgb");
        let key = dir.join("wal.key");
        return Err(Error::Usage(format!(
            "{flag}: owned by {}, but restore_command runs pgb-wal get as {user}, the restored \
             cluster's owner, and it refuses an identity file it does not own. Give {user} its own \
             copy and name it: install -d -o {user} -m 700 {dir} && install -o {user} -m 600 {} {key}, \
             then --wal-identity {key}{after}",
            user_name(md.uid()),
            sh_quote(&abs.display().to_string()),
            dir = sh_quote(&dir.display().to_string()),
            key = sh_quote(&key.display().to_string()),
        )));
    }
    if md.mode() & 0o077 != 0 || md.mode() & 0o400 == 0 {
        return Err(Error::Usage(format!(
            "{flag}: mode {:04o}; pgb-wal get needs it readable by {user} alone: chmod 600 {}{after}",
            md.mode() & 0o7777,
            sh_quote(&abs.display().to_string())
        )));
    }
    let groups: Vec<u32> = match nix::unistd::User::from_uid(owner.uid.into()).ok().flatten() {
        Some(u) => std::ffi::CString::new(u.name)
            .ok()
            .and_then(|n| nix::unistd::getgrouplist(&n, u.gid).ok())
            .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
            .unwrap_or_else(|| vec![u.gid.as_raw()]),
        None => vec![owner.gid],
    };
    for d in abs.ancestors().skip(1) {
        let dm = std::fs::metadata(d).ctx("stat", d)?;
        if !searchable(&dm, owner.uid, &groups) {
            return Err(Error::Usage(format!(
                "{flag}: {user} cannot enter {} (mode {:04o}, owner {}), so the server could not read \
                 the identity at recovery time: keep {user}'s copy in a directory {user} can reach, \
                 e.g. its home{after}",
                d.display(),
                dm.mode() & 0o7777,
                user_name(dm.uid())
            )));
        }
    }
    Ok(abs)
}

pub fn restore(
    args: &Args,
    a: &Artifact,
    ids: Option<&Identities>,
    tgt: &Target,
    goal: TimelineGoal,
) -> Result<Done> {
    let dest = std::path::absolute(args.pgdata.as_ref().expect("checked in run"))
        .ctx("resolve", "--pgdata")?;
    let layout = physical::layout(a)?;
    if physical::is_encrypted(a) && ids.is_none() {
        return Err(Error::Usage(format!(
            "{}: encrypted; give the identity with -i FILE",
            a.id
        )));
    }
    let ts_map = tablespace_map(args)?;

    // An incremental: its whole chain, every link checked and every
    // member's files there, and pg_combinebackup of its major, before
    // anything is written.
    let chain = match pgb_common::chain::incremental_of(a)? {
        None => None,
        Some(_) => {
            let repo = Path::new(&a.repo);
            let all = pgb_common::chain::load_physical(repo, repo)?;
            let chain = pgb_common::chain::resolve(a, &all)?;
            for m in &chain {
                crate::run::present(m)
                    .map_err(|e| Error::msg(format!("chain member {}: {e}", m.id)))?;
                if physical::is_encrypted(m) && ids.is_none() {
                    return Err(Error::Usage(format!(
                        "chain member {}: encrypted; give the identity with -i FILE",
                        m.id
                    )));
                }
            }
            let bindir = pgb_common::pgbin::for_physical(
                args.conn.pg_bindir.as_deref(),
                a,
                "pg_combinebackup",
            )?
            .bindir();
            Some((chain, bindir))
        }
    };

    // The WAL archive, before anything is written.
    let (wal, wal_encrypted) = if args.wal_archive.is_empty() {
        if !matches!(tgt, Target::Immediate) {
            return Err(Error::Usage(
                "recovery past the end of the backup needs --wal-archive DIR (or --target-immediate)".into(),
            ));
        }
        if let (TimelineGoal::Id(n), Some(w)) = (goal, &a.wal) {
            if n != w.timeline {
                return Err(Error::Usage(format!(
                    "--target-timeline {n}: the backup is on timeline {}; reaching another \
                     timeline needs its history and WAL: give --wal-archive DIR",
                    w.timeline
                )));
            }
        }
        (Value::Null, None)
    } else {
        let cov = Coverage::scan(a, &args.wal_archive, goal)?;
        let wal = cov.check(a, tgt)?;
        // A time target the archive does not reach is refused here, as
        // --select reach refuses it, not left for recovery to miss.
        crate::walcheck::reaches_time(&cov, a, tgt, &args.wal_archive, ids)?;
        (wal, cov.encrypted_example)
    };

    // The destination: no running server, empty unless --force.
    if let Some(pid) = running_postmaster(&dest) {
        return Err(Error::msg(format!(
            "{}: a postmaster (PID {pid}) is running on it; stop it first",
            dest.display()
        )));
    }
    let parent = dest
        .parent()
        .ok_or_else(|| Error::Usage(format!("{}: not a data directory", dest.display())))?;
    if !parent.is_dir() {
        return Err(Error::Usage(format!(
            "{}: no such directory",
            parent.display()
        )));
    }
    let exists = match std::fs::symlink_metadata(&dest) {
        Ok(md) if md.is_dir() => true,
        Ok(_) => {
            return Err(Error::msg(format!(
                "{}: exists and is not a directory",
                dest.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(Error::io("stat", &dest, e)),
    };
    let nonempty = exists
        && std::fs::read_dir(&dest)
            .ctx("read directory", &dest)?
            .next()
            .is_some();
    if nonempty && !args.force {
        return Err(Error::msg(format!(
            "{}: not empty; refusing to restore over it (--force empties it first; an interrupted restore leaves a directory that cannot start, global/pg_control held back)",
            dest.display()
        )));
    }
    let owner = match &args.owner {
        Some(name) => Owner::named(name)?,
        None => Owner::of(parent)?,
    };
    if owner.uid == 0 {
        return Err(Error::Usage(format!(
            "{} is owned by root, and PostgreSQL refuses to run as root: give --owner postgres",
            parent.display()
        )));
    }

    // The identity restore_command decrypts the archive's WAL with.
    if args.wal_archive.is_empty() && !args.wal_identity.is_empty() {
        return Err(Error::Usage(
            "--wal-identity is for restore_command: give --wal-archive DIR".into(),
        ));
    }
    let (wal_ids, from_i) = if !args.wal_identity.is_empty() {
        (args.wal_identity.clone(), false)
    } else if wal_encrypted.is_some() {
        (args.identity.clone(), true)
    } else {
        (Vec::new(), false)
    };
    if let (Some(example), true) = (&wal_encrypted, wal_ids.is_empty()) {
        return Err(Error::Usage(format!(
            "the WAL archive holds encrypted segments ({example}): restore_command needs an age \
             identity that {} (the restored cluster's owner) owns with mode 0600: give \
             --wal-identity FILE; nothing was written",
            user_name(owner.uid)
        )));
    }
    let wal_ids = wal_ids
        .iter()
        .map(|f| check_wal_identity(f, owner, from_i))
        .collect::<Result<Vec<_>>>()?;
    let command = restore_command(&args.wal_archive, &wal_ids)?;

    let recovery = Recovery {
        restore_command: command,
        target: tgt.clone(),
        action: args.target_action.clone(),
        inclusive: !args.exclusive,
        standby: args.standby,
        // Only when asked for: PostgreSQL's default is latest.
        extra: args
            .target_timeline
            .as_ref()
            .map(|_| {
                (
                    "recovery_target_timeline".to_string(),
                    conf_quote(&goal.setting()),
                )
            })
            .into_iter()
            .collect(),
    };
    let (kind, value) = tgt.describe();
    let mut rec = record(a);
    rec.insert("pgdata".into(), dest.display().to_string().into());
    rec.insert(
        "target".into(),
        json!({"type": kind, "value": value, "inclusive": !args.exclusive,
               "action": args.target_action, "standby": args.standby,
               "timeline": goal.setting()}),
    );
    rec.insert("wal".into(), wal);
    rec.insert("owner".into(), json!({"uid": owner.uid, "gid": owner.gid}));
    if let Some((chain, _)) = &chain {
        let ids: Vec<&str> = chain.iter().map(|m| m.id.as_str()).collect();
        rec.insert("chain".into(), json!(ids));
    }
    if args.dry_run {
        let mut plan = vec![];
        if nonempty {
            plan.push(format!("empty {}", dest.display()));
        }
        if let Some((chain, bindir)) = &chain {
            let ids: Vec<&str> = chain.iter().map(|m| m.id.as_str()).collect();
            plan.push(format!(
                "unpack and check each member of the chain {} into {}, then {} into {} and \
                 pg_verifybackup it",
                ids.join(" <- "),
                pgb_common::combine::work_dir(&dest).display(),
                bindir.join("pg_combinebackup").display(),
                dest.display()
            ));
        } else if let Some(f) = &layout.base {
            plan.push(format!("unpack {f} into {}", dest.display()));
        }
        if let Some(f) = &layout.wal {
            plan.push(format!("unpack {f} into {}", dest.join("pg_wal").display()));
        }
        for (oid, f) in &layout.tablespaces {
            let to = ts_map
                .get(oid)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "its original location (tablespace_map)".into());
            plan.push(format!("unpack {f} (tablespace {oid}) into {to}"));
        }
        if layout.manifest.is_some() {
            plan.push("check every file against backup_manifest".into());
        }
        for (k, v) in recovery.settings() {
            plan.push(format!("postgresql.auto.conf: {k} = {v}"));
        }
        plan.push(format!(
            "create {}",
            if args.standby {
                "standby.signal"
            } else {
                "recovery.signal"
            }
        ));
        plan.push(format!(
            "owner uid {} gid {}, modes 0700/0600",
            owner.uid, owner.gid
        ));
        rec.insert("dry_run".into(), true.into());
        rec.insert("plan".into(), json!(plan));
        return Ok(Done {
            record: rec,
            ok: true,
        });
    }

    if nonempty {
        clear_dir(&dest)?;
    }
    if !exists {
        std::fs::create_dir(&dest).ctx("create directory", &dest)?;
    }
    let result = (|| -> Result<physical::Restored> {
        // Every stored byte is read once (open_verified counts them).
        let _progress = pgb_common::progress::Progress::with_total(
            format!("restore {}", a.id),
            a.files.iter().map(|f| f.size).sum(),
        );
        owner.apply(&dest)?;
        let opts = physical::Options {
            owner: Some(owner),
            identities: ids,
            tablespace_map: ts_map.clone(),
            skip_wal: false,
        };
        let r = match &chain {
            Some((chain, bindir)) => {
                pgb_common::combine::restore_chain(chain, &dest, &opts, bindir)?
            }
            None => physical::restore(a, &dest, &opts)?,
        };
        use std::os::unix::fs::PermissionsExt;
        let mode = if r.group_access { 0o750 } else { 0o700 };
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))
            .ctx("chmod", &dest)?;
        recovery.write(&dest, Some(owner))?;
        sync_fs(&dest)?;
        Ok(r)
    })();
    let r = match result {
        Ok(r) => r,
        Err(e) => {
            // Leave no half-restored directory that could be started.
            let cleaned = if exists {
                clear_dir(&dest)
            } else {
                std::fs::remove_dir_all(&dest).ctx("remove", &dest)
            };
            if let Err(c) = cleaned {
                pgb_common::term::warn(format!("cleaning up after the failure: {c}"));
            }
            return Err(e);
        }
    };
    rec.insert("files".into(), r.files.into());
    rec.insert("bytes".into(), r.bytes.into());
    rec.insert("manifest_checked".into(), r.manifest_checked.into());
    if !r.tablespaces.is_empty() {
        let ts: serde_json::Map<String, Value> = r
            .tablespaces
            .iter()
            .map(|(o, p)| (o.to_string(), p.display().to_string().into()))
            .collect();
        rec.insert("tablespaces".into(), Value::Object(ts));
    }
    rec.insert(
        "next".into(),
        format!(
            "start the server on {} as its owner; it recovers to the target and {}s",
            dest.display(),
            args.target_action
        )
        .into(),
    );
    Ok(Done {
        record: rec,
        ok: true,
    })
}
