//! Encrypting and decrypting whole artifacts: every file, the record, the
//! sidecars, and the plaintext removed only once the ciphertext is durable
//! and recorded.

use std::fs::{self, File};
use std::path::{Component, Path, PathBuf};

use pgb_common::crypt::{Identities, Recipients, SCHEME, SUFFIX};
use pgb_common::digest::hash_reader_parallel;
use pgb_common::error::{Error, IoContext, Result};
use pgb_common::fs::{fsync_dir, write_atomic};
use pgb_common::record::{sidecar_for, Artifact, FileEntry};
use pgb_common::term::Progress;
use pgb_common::AtomicFile;
use serde_json::{json, Value};

use crate::stream;

/// What became of one artifact.
pub enum Outcome {
    /// Nothing to do: print the record as it came.
    Untouched,
    /// The artifact's new record (also written to its sidecar).
    Record(Box<Artifact>),
}

pub struct Ctx {
    pub recipients: Option<Recipients>,
    pub identities: Option<Identities>,
    pub remove_plaintext: bool,
}

/// A relative path that stays below where it is joined: no root, no `..`.
fn check_relative(p: &str, what: &str) -> Result<()> {
    let path = Path::new(p);
    let ok = !p.is_empty()
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if ok {
        Ok(())
    } else {
        Err(Error::msg(format!(
            "{what} {p:?} escapes the repository; refusing it"
        )))
    }
}

/// The artifact's location, after checking that the record's paths stay
/// inside its repository and that the location is not a symlink.
/// Returns (location, is a directory).
fn locate(a: &Artifact) -> Result<(PathBuf, bool)> {
    if !Path::new(&a.repo).is_absolute() {
        return Err(Error::msg(format!(
            "repo {:?} is not an absolute path",
            a.repo
        )));
    }
    check_relative(&a.path, "path")?;
    let loc = a.location();
    let md = fs::symlink_metadata(&loc).ctx("stat", &loc)?;
    if md.file_type().is_symlink() {
        return Err(Error::msg(format!(
            "{}: is a symlink; refusing to follow it",
            loc.display()
        )));
    }
    Ok((loc, md.is_dir()))
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_os_string();
    s.push(suffix);
    s.into()
}

fn now() -> String {
    chrono::Local::now()
        .fixed_offset()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

fn exists(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}

/// Writes a record to its sidecar, pretty-printed as pgb-snapshot writes it.
/// A sidecar that may be there already (`replace`) is merged, not replaced:
/// the evidence it holds stays, and `a` becomes the merged record.
pub fn write_sidecar(a: &mut Artifact, replace: bool) -> Result<()> {
    if replace {
        return pgb_common::evidence::update_local(a, true).map(|_| ());
    }
    write_atomic(&a.sidecar(), &pgb_common::evidence::sidecar_text(a)?, false)
}

/// Reads the record a sidecar holds.
pub fn read_sidecar(path: &Path) -> Result<Artifact> {
    let text = fs::read_to_string(path).ctx("read", path)?;
    serde_json::from_str(&text).map_err(|e| Error::Input {
        source: path.display().to_string(),
        line: e.line(),
        msg: format!("not an artifact record: {e}"),
    })
}

/// The plaintext entries an encrypted record keeps.
fn plaintext_of(a: &Artifact) -> Result<Vec<FileEntry>> {
    let enc = a.encryption.as_ref().expect("encrypted record");
    match enc.get("scheme").and_then(Value::as_str) {
        Some(SCHEME) => {}
        other => {
            return Err(Error::msg(format!(
                "encryption scheme {other:?} is not {SCHEME:?}"
            )))
        }
    }
    serde_json::from_value(enc.get("plaintext").cloned().unwrap_or(Value::Null))
        .map_err(|e| Error::msg(format!("encryption.plaintext: {e}")))
}

fn same_files(a: &[FileEntry], b: &[FileEntry]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.name == y.name && x.size == y.size && x.sha256 == y.sha256 && x.blake3 == y.blake3
        })
}

/// Removes files published by a run that then failed, so the next run
/// starts clean.
fn unpublish(published: &[PathBuf]) {
    for p in published {
        let _ = fs::remove_file(p);
    }
    if let Some(dir) = published.first().and_then(|p| p.parent()) {
        let _ = fsync_dir(dir);
    }
}

fn remove_file(p: &Path) -> Result<()> {
    match fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove plaintext", p, e)),
    }
}

/// Re-reads every file of an encrypted artifact and checks it against the
/// record: the proof needed before its plaintext may go.
fn recheck(a: &Artifact, loc: &Path, is_dir: bool) -> Result<()> {
    for f in &a.files {
        let p = if is_dir {
            check_relative(&f.name, "file name")?;
            loc.join(&f.name)
        } else {
            loc.to_path_buf()
        };
        let d = hash_reader_parallel(File::open(&p).ctx("open", &p)?).ctx("read", &p)?;
        stream::check_expected(&d, f, &p)?;
    }
    Ok(())
}

fn encrypt_one(ctx: &Ctx, from: &Path, to: &Path, expect: &FileEntry) -> Result<FileEntry> {
    let recipients = ctx.recipients.as_ref().expect("recipients");
    let mut input = File::open(from).ctx("open", from)?;
    let target = AtomicFile::create(to)?.write_behind();
    let label = format!(
        "encrypt {}",
        from.file_name().unwrap_or_default().to_string_lossy()
    );
    let progress = Progress::with_total(label, expect.size);
    let done = stream::encrypt(
        recipients,
        &mut input,
        from,
        target,
        to,
        Some(expect),
        true,
        &progress,
    )?;
    done.out.commit()?;
    Ok(FileEntry {
        name: format!("{}{SUFFIX}", expect.name),
        size: done.output.size,
        sha256: done.output.sha256,
        blake3: done.output.blake3,
        extra: Default::default(),
    })
}

/// Decrypts `from` to `to`, or, when `to` already holds exactly the
/// recorded plaintext, leaves it. Returns whether it published `to`.
fn decrypt_one(ctx: &Ctx, from: &Path, to: &Path, expect: &FileEntry) -> Result<bool> {
    if exists(to) {
        let d = hash_reader_parallel(File::open(to).ctx("open", to)?).ctx("read", to)?;
        stream::check_expected(&d, expect, to)
            .map_err(|e| Error::msg(format!("{e}; it exists already and is not overwritten")))?;
        return Ok(false);
    }
    let identities = ctx.identities.as_ref().expect("identities");
    let mut input = File::open(from).ctx("open", from)?;
    let target = AtomicFile::create(to)?;
    let label = format!(
        "decrypt {}",
        from.file_name().unwrap_or_default().to_string_lossy()
    );
    let progress = Progress::with_total(label, expect.size);
    let done = stream::decrypt(
        identities,
        &mut input,
        from,
        target,
        to,
        Some(expect),
        &progress,
    )?;
    done.commit()?;
    Ok(true)
}

/// Encrypts one artifact.
pub fn encrypt(ctx: &Ctx, a: &Artifact) -> Result<Outcome> {
    if a.encryption.is_some() {
        if ctx.remove_plaintext {
            remove_leftover_plaintext(a)?;
        }
        return Ok(Outcome::Untouched);
    }
    let (loc, is_dir) = match locate(a) {
        Ok(l) => l,
        // The plaintext is gone but its ciphertext is here: encrypted (and
        // the plaintext removed) by an earlier run.
        Err(e) => {
            let loc = a.location();
            let ct = with_suffix(&loc, SUFFIX);
            if !exists(&loc) && exists(&ct) {
                return encrypted_before(ctx, a, &loc, &ct);
            }
            return Err(e);
        }
    };
    let fingerprints = ctx.recipients.as_ref().expect("recipients").fingerprints();
    let mut new = a.clone();
    new.encryption = Some(json!({
        "scheme": SCHEME,
        "recipients": fingerprints,
        "plaintext": a.files,
        "when": now(),
    }));
    if is_dir {
        for f in &a.files {
            check_relative(&f.name, "file name")?;
            let ct = with_suffix(&loc.join(&f.name), SUFFIX);
            if exists(&ct) {
                return Err(Error::msg(format!(
                    "{}: exists but the record does not list it (left by an \
                     interrupted run?); not overwritten: remove it and run again",
                    ct.display()
                )));
            }
        }
        let mut published = Vec::new();
        let mut files = Vec::new();
        for f in &a.files {
            let pt = loc.join(&f.name);
            let ct = with_suffix(&pt, SUFFIX);
            match encrypt_one(ctx, &pt, &ct, f) {
                Ok(entry) => {
                    published.push(ct);
                    files.push(entry);
                }
                Err(e) => {
                    unpublish(&published);
                    return Err(e);
                }
            }
        }
        new.files = files;
        if let Err(e) = write_sidecar(&mut new, true) {
            unpublish(&published);
            return Err(e);
        }
        if ctx.remove_plaintext {
            for f in &a.files {
                remove_file(&loc.join(&f.name))?;
            }
            fsync_dir(&loc)?;
        }
        return Ok(Outcome::Record(Box::new(new)));
    }

    // A single-file artifact: X becomes X.age with its own sidecar.
    let [entry] = &a.files[..] else {
        return Err(Error::msg(format!(
            "{}: a file artifact must list exactly one file, the record lists {}",
            loc.display(),
            a.files.len()
        )));
    };
    let ct = with_suffix(&loc, SUFFIX);
    if exists(&ct) {
        return encrypted_before(ctx, a, &loc, &ct);
    }
    let file = encrypt_one(ctx, &loc, &ct, entry)?;
    new.path = format!("{}{SUFFIX}", a.path);
    new.files = vec![file];
    if let Err(e) = write_sidecar(&mut new, false) {
        unpublish(&[ct]);
        return Err(e);
    }
    if ctx.remove_plaintext {
        remove_plaintext_single(&loc)?;
    }
    Ok(Outcome::Record(Box::new(new)))
}

/// A single-file artifact whose ciphertext `ct` exists already: encrypted
/// before (the plaintext was kept, or removed). The same artifact is success
/// and its encrypted record is the result; anything else is an error and is
/// left alone.
fn encrypted_before(ctx: &Ctx, a: &Artifact, loc: &Path, ct: &Path) -> Result<Outcome> {
    let sc = sidecar_for(ct);
    let done = if exists(&sc) {
        Some(read_sidecar(&sc)?)
    } else {
        None
    };
    let same = match &done {
        Some(d) if d.encryption.is_some() => same_files(&plaintext_of(d)?, &a.files),
        _ => false,
    };
    let Some(done) = done.filter(|_| same) else {
        return Err(Error::msg(format!(
            "{}: exists and is not the encrypted form of this artifact \
             (no sidecar recording it); not overwritten",
            ct.display()
        )));
    };
    if ctx.remove_plaintext && (exists(loc) || exists(&sidecar_for(loc))) {
        recheck(&done, ct, false)?;
        remove_plaintext_single(loc)?;
    }
    Ok(Outcome::Record(Box::new(done)))
}

/// Removes a single-file artifact's plaintext, then its sidecar (in that
/// order: a sidecar left by a crash in between names a missing file, which
/// the next --remove-plaintext run completes).
fn remove_plaintext_single(loc: &Path) -> Result<()> {
    remove_file(loc)?;
    remove_file(&sidecar_for(loc))?;
    fsync_dir(loc.parent().unwrap_or(Path::new(".")))
}

/// For an artifact encrypted earlier: deletes plaintext still beside its
/// ciphertext, once the ciphertext re-reads as recorded.
fn remove_leftover_plaintext(a: &Artifact) -> Result<()> {
    let (loc, is_dir) = locate(a)?;
    let plain = plaintext_of(a)?;
    let leftovers: Vec<PathBuf> = if is_dir {
        let mut v = Vec::new();
        for p in &plain {
            check_relative(&p.name, "file name")?;
            let f = loc.join(&p.name);
            if exists(&f) {
                v.push(f);
            }
        }
        v
    } else {
        let Some(stem) = a.path.strip_suffix(SUFFIX) else {
            return Ok(());
        };
        let f = Path::new(&a.repo).join(stem);
        if exists(&f) || exists(&sidecar_for(&f)) {
            vec![f]
        } else {
            vec![]
        }
    };
    if leftovers.is_empty() {
        return Ok(());
    }
    recheck(a, &loc, is_dir)?;
    if is_dir {
        for f in &leftovers {
            remove_file(f)?;
        }
        fsync_dir(&loc)
    } else {
        remove_plaintext_single(&leftovers[0])
    }
}

/// Decrypts one artifact back to its plaintext form, beside the ciphertext.
pub fn decrypt(ctx: &Ctx, a: &Artifact) -> Result<Outcome> {
    if a.encryption.is_none() {
        return Ok(Outcome::Untouched);
    }
    let plain = plaintext_of(a)?;
    let (loc, is_dir) = locate(a)?;
    let mut new = a.clone();
    new.encryption = None;
    new.files = plain.clone();
    if is_dir {
        let mut published = Vec::new();
        for p in &plain {
            check_relative(&p.name, "file name")?;
            let ct_name = format!("{}{SUFFIX}", p.name);
            if !a.files.iter().any(|f| f.name == ct_name) {
                return Err(Error::msg(format!(
                    "{}: the record lists plaintext {} but no ciphertext {ct_name}",
                    loc.display(),
                    p.name
                )));
            }
        }
        for p in &plain {
            let pt = loc.join(&p.name);
            let ct = with_suffix(&pt, SUFFIX);
            match decrypt_one(ctx, &ct, &pt, p) {
                Ok(true) => published.push(pt),
                Ok(false) => {}
                Err(e) => {
                    unpublish(&published);
                    return Err(e);
                }
            }
        }
        if let Err(e) = write_sidecar(&mut new, true) {
            unpublish(&published);
            return Err(e);
        }
        return Ok(Outcome::Record(Box::new(new)));
    }
    let Some(stem) = a.path.strip_suffix(SUFFIX) else {
        return Err(Error::msg(format!(
            "{}: an encrypted file artifact's path should end in {SUFFIX}",
            loc.display()
        )));
    };
    let [p] = &plain[..] else {
        return Err(Error::msg(format!(
            "{}: encryption.plaintext should list one file, it lists {}",
            loc.display(),
            plain.len()
        )));
    };
    new.path = stem.to_string();
    let pt = new.location();
    let published = decrypt_one(ctx, &loc, &pt, p)?;
    if let Err(e) = write_sidecar(&mut new, true) {
        if published {
            unpublish(&[pt]);
        }
        return Err(e);
    }
    Ok(Outcome::Record(Box::new(new)))
}
