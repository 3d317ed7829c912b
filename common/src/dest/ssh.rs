//! Copies to an SSH host through the system `ssh` (key authentication,
//! `BatchMode=yes`, so it never waits for a password). The remote side needs
//! a POSIX shell and coreutils (`cat`, `wc`, `sha256sum`, `ln`, `sync`,
//! `head`, `base64`), GNU find, and `tar` (GNU tar or bsdtar) for reading
//! many files in one session. Each call is one session (a connection and a
//! login, a tenth of a second or more): work on many files is batched, the
//! names sent on the session's input.
//!
//! A copy streams into a temp name beside the final one; the remote script
//! checks the byte count (a client killed mid-copy leaves a short file,
//! which the script removes), fsyncs it with `sync FILE`, prints its
//! sha256 and, only when that is the record's, hard-links the temp to the
//! final name (`ln` fails when that exists: never overwritten) and fsyncs
//! the directory, all in one session.

use std::io::{self, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

use super::{join_remote, Copied, Listed, SshTarget as Target};
use crate::digest::Digests;
use crate::error::{Error, IoContext, Result};
use crate::fs::TEMP_MARK;

/// Single-quotes `s` for a POSIX shell.
fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn url(t: &Target, rel: &str) -> String {
    super::ssh_url(t, &join_remote(&t.path, rel))
}

fn command(t: &Target, script: &str) -> Command {
    let mut c = Command::new("ssh");
    c.args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=15"]);
    c.args([
        "-o",
        "ServerAliveInterval=15",
        "-o",
        "ServerAliveCountMax=4",
    ]);
    if let Some(p) = t.port {
        c.arg("-p").arg(p.to_string());
    }
    c.args(&t.args);
    c.arg("--");
    match &t.user {
        Some(u) => c.arg(format!("{u}@{}", t.host)),
        None => c.arg(&t.host),
    };
    c.arg(script);
    c
}

fn child_error(op: &str, url: &str, status: std::process::ExitStatus, stderr: &[u8]) -> Error {
    let status = match status.code() {
        Some(255) => "could not connect or log in (exit status 255)".to_string(),
        Some(c) => format!("exited with status {c}"),
        None => format!("was killed ({status})"),
    };
    Error::Child {
        program: "ssh".into(),
        what: format!("{op}: {url}"),
        status,
        stderr: String::from_utf8_lossy(stderr).into_owned(),
    }
}

/// Runs `script` remotely with no input; its stdout on success.
fn run(t: &Target, op: &str, url: &str, script: &str) -> Result<String> {
    let out = command(t, script)
        .stdin(Stdio::null())
        .output()
        .ctx("run ssh for", url)?;
    if !out.status.success() {
        return Err(child_error(op, url, out.status, &out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) => "/",
        Some(i) => &path[..i],
        None => ".",
    }
}

fn temp_for(path: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = parent(path);
    let name = &path[dir.len()..].trim_start_matches('/');
    let n = N.fetch_add(1, Ordering::Relaxed);
    join_remote(
        dir,
        &format!(".{name}{TEMP_MARK}{}.{n}", std::process::id()),
    )
}

/// `(size, sha256)` parsed from `SIZE SHA256` lines.
fn parse_size_sha(url: &str, out: &str) -> Result<(u64, String)> {
    let mut it = out.split_whitespace();
    let size = it.next().and_then(|s| s.parse().ok());
    let sha = it.next().filter(|s| s.len() == 64);
    match (size, sha) {
        (Some(s), Some(h)) => Ok((s, h.to_string())),
        _ => Err(Error::msg(format!(
            "{url}: unexpected answer from the remote host: {:?}",
            out.trim()
        ))),
    }
}

fn stat_script(f: &str) -> String {
    format!(
        "f={}; if [ -f \"$f\" ]; then echo \"$(wc -c < \"$f\") $(sha256sum < \"$f\")\"; \
         elif [ -e \"$f\" ]; then echo notfile; else echo absent; fi",
        q(f)
    )
}

/// Ok(Some) when identical bytes are there, an error when different ones.
fn existing(t: &Target, rel: &str, expect: &Digests) -> Result<Option<Copied>> {
    let u = url(t, rel);
    let out = run(t, "check", &u, &stat_script(&join_remote(&t.path, rel)))?;
    match out.trim() {
        "absent" => Ok(None),
        "notfile" => Err(Error::msg(format!(
            "copy: {u}: exists and is not a regular file"
        ))),
        other => {
            let (size, sha) = parse_size_sha(&u, other)?;
            if size == expect.size && sha == expect.sha256 {
                Ok(Some(Copied {
                    existed: true,
                    verified: "server-checksum",
                }))
            } else {
                Err(Error::msg(format!(
                    "copy: {u}: exists with different content; kept, not overwritten"
                )))
            }
        }
    }
}

/// Minutes a temp on the host must have stood unchanged before an upload to
/// its directory removes it.
const STALE_MINUTES: u32 = 60;
/// What the upload script prints on stderr for each leftover it removed.
const LEFTOVER: &str = "pgb-removed-leftover";

/// Streams `src` into a fresh temp (`$t` in the script) beside
/// `final_path`, checks its size, fsyncs it and has the host compute its
/// sha256; when that is `want`, runs `publish` in the same session (one
/// connection per file: an SSH login costs more than a small file). The
/// temp is removed unless `publish` took it over. Returns the sha256 the
/// host computed and what `publish` printed (`None`: the sha256 differed,
/// nothing was published).
#[allow(clippy::too_many_arguments)]
fn upload(
    t: &Target,
    u: &str,
    src: &mut dyn Read,
    src_name: &Path,
    size: u64,
    final_path: &str,
    progress: &(dyn Fn(u64) + Sync),
    want: &str,
    publish: &str,
) -> Result<(String, Option<String>)> {
    let tmp = temp_for(final_path);
    // Temps of runs killed between upload and publish are removed once they
    // have not changed for an hour (an upload in progress writes to its temp
    // all the time; the host has no lock pgb could take).
    let script = format!(
        "set -e; umask 077; t={t}; mkdir -p -- {d}; \
         find {d} -maxdepth 1 -type f -name '.*{TEMP_MARK}*' -mmin +{STALE_MINUTES} \
           -exec sh -c 'for f; do rm -f -- \"$f\" && echo \"{LEFTOVER} $f\" >&2; done' sh {{}} + || true; \
         trap 'rm -f -- \"$t\"' EXIT; \
         cat > \"$t\"; n=$(wc -c < \"$t\"); \
         if [ \"$n\" != {size} ]; then echo \"got $n bytes of {size}: input cut short\" >&2; exit 3; fi; \
         sync \"$t\" 2>/dev/null || sync; s=$(sha256sum < \"$t\"); s=${{s%% *}}; \
         echo \"sha256 $s\"; [ \"$s\" = {want} ] || exit 0; trap - EXIT; {publish}",
        t = q(&tmp),
        d = q(parent(final_path)),
        want = q(want),
    );
    let out = stream_script(t, u, &script, src, src_name, size, progress)?;
    let out = String::from_utf8_lossy(&out).into_owned();
    let (first, rest) = out.split_once('\n').unwrap_or((&out, ""));
    let sha = first
        .strip_prefix("sha256 ")
        .unwrap_or("")
        .trim()
        .to_string();
    let published = (sha == want).then(|| rest.to_string());
    Ok((sha, published))
}

/// Runs `script` on the host with `src` (`size` bytes) on its stdin; its
/// stdout once it succeeded and every byte was sent.
fn stream_script(
    t: &Target,
    u: &str,
    script: &str,
    src: &mut dyn Read,
    src_name: &Path,
    size: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Vec<u8>> {
    let mut child = command(t, script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ctx("run ssh for", u)?;
    let mut stdin = child.stdin.take().expect("piped");
    let stderr = drain(child.stderr.take().expect("piped"));
    let stdout = drain(child.stdout.take().expect("piped"));
    let mut buf = vec![0u8; 1 << 20];
    let mut sent = 0u64;
    let mut write_err = None;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::io("read", src_name, e));
            }
        };
        if let Err(e) = stdin.write_all(&buf[..n]) {
            write_err = Some(e);
            break;
        }
        sent += n as u64;
        progress(n as u64);
    }
    drop(stdin);
    let status = child.wait().ctx("wait for ssh for", u)?;
    let err = stderr.join().unwrap_or_default();
    let out = stdout.join().unwrap_or_default();
    if !status.success() {
        return Err(child_error("copy", u, status, &err));
    }
    if let Some(e) = write_err {
        return Err(Error::io("send", u, e));
    }
    if sent != size {
        return Err(Error::msg(format!(
            "copy: {}: {sent} bytes read where the record says {size}: the source changed",
            src_name.display()
        )));
    }
    for line in String::from_utf8_lossy(&err).lines() {
        if let Some(f) = line.strip_prefix(LEFTOVER).map(str::trim) {
            crate::term::warn(format!(
                "removed {}, left by a run killed over {STALE_MINUTES} minutes ago",
                super::ssh_url(t, f)
            ));
        }
    }
    Ok(out)
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

pub(super) fn put_file(
    t: &Target,
    src: &Path,
    rel: &str,
    expect: &Digests,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Copied> {
    let u = url(t, rel);
    if let Some(c) = existing(t, rel, expect)? {
        return Ok(c);
    }
    let final_path = join_remote(&t.path, rel);
    let mut f = std::fs::File::open(src).ctx("open", src)?;
    // Published by a hard link, which never replaces a file there.
    let publish = format!(
        "f={}; if ln -- \"$t\" \"$f\" 2>/dev/null; then rm -f -- \"$t\"; \
         sync {} 2>/dev/null || sync; echo published; \
         else rm -f -- \"$t\"; if [ -e \"$f\" ]; then echo exists; else echo \"cannot link $t to $f\" >&2; exit 3; fi; fi",
        q(&final_path),
        q(parent(&final_path))
    );
    let (sha, published) = upload(
        t,
        &u,
        &mut f,
        src,
        expect.size,
        &final_path,
        progress,
        &expect.sha256,
        &publish,
    )?;
    let Some(out) = published else {
        return Err(Error::msg(format!(
            "verify: {u}: sha256 {sha} on the host where {} was copied",
            expect.sha256
        )));
    };
    if out.trim() == "exists" {
        // Published by someone else meanwhile: the same rule as before.
        return match existing(t, rel, expect)? {
            Some(c) => Ok(c),
            None => Err(Error::msg(format!("copy: {u}: vanished while publishing"))),
        };
    }
    Ok(Copied {
        existed: false,
        verified: "server-checksum",
    })
}

pub(super) fn put_bytes_replace(t: &Target, bytes: &[u8], rel: &str) -> Result<()> {
    let u = url(t, rel);
    let final_path = join_remote(&t.path, rel);
    let want = {
        let mut h = crate::digest::Hasher::new();
        h.update(bytes);
        h.finish().sha256
    };
    let publish = format!(
        "mv -f -- \"$t\" {} && {{ sync {} 2>/dev/null || sync; }}",
        q(&final_path),
        q(parent(&final_path))
    );
    let (_, published) = upload(
        t,
        &u,
        &mut &bytes[..],
        Path::new("(record)"),
        bytes.len() as u64,
        &final_path,
        &|_| {},
        &want,
        &publish,
    )?;
    match published {
        Some(_) => Ok(()),
        None => Err(Error::msg(format!(
            "write: {u}: sha256 differs after upload"
        ))),
    }
}

/// Creates `rel` with `bytes` (small text) unless something is there,
/// with the shell's noclobber: `set -C` makes `>` an `O_EXCL` open, so of
/// two creators one fails. `true` when created.
pub(super) fn create_new(t: &Target, bytes: &[u8], rel: &str) -> Result<bool> {
    let u = url(t, rel);
    let p = join_remote(&t.path, rel);
    let text = String::from_utf8_lossy(bytes);
    let out = run(
        t,
        "create",
        &u,
        &format!(
            "f={}; if (set -C; printf '%s' {} > \"$f\") 2>/dev/null; then \
             {{ sync \"$f\" 2>/dev/null || sync; }}; echo created; \
             elif [ -e \"$f\" ]; then echo exists; else echo \"$f: cannot create\" >&2; exit 3; fi",
            q(&p),
            q(&text)
        ),
    )?;
    match out.trim() {
        "created" => Ok(true),
        "exists" => Ok(false),
        other => Err(Error::msg(format!(
            "{u}: unexpected answer from the remote host: {other:?}"
        ))),
    }
}

pub(super) fn verify(t: &Target, rel: &str, expect: &Digests) -> Result<&'static str> {
    let u = url(t, rel);
    let out = run(t, "verify", &u, &stat_script(&join_remote(&t.path, rel)))?;
    match out.trim() {
        "absent" => Err(Error::msg(format!("verify: {u}: missing"))),
        "notfile" => Err(Error::msg(format!("verify: {u}: not a regular file"))),
        other => {
            let (size, sha) = parse_size_sha(&u, other)?;
            if size != expect.size {
                return Err(Error::msg(format!(
                    "verify: {u}: size {size} where {} was copied",
                    expect.size
                )));
            }
            if sha != expect.sha256 {
                return Err(Error::msg(format!(
                    "verify: {u}: sha256 {sha} where {} was copied",
                    expect.sha256
                )));
            }
            Ok("server-checksum")
        }
    }
}

pub(super) fn size_of(t: &Target, rel: &str) -> Result<Option<u64>> {
    let u = url(t, rel);
    let f = q(&join_remote(&t.path, rel));
    let out = run(
        t,
        "stat",
        &u,
        &format!("if [ -e {f} ]; then wc -c < {f}; else echo absent; fi"),
    )?;
    match out.trim() {
        "absent" => Ok(None),
        n => n
            .parse()
            .map(Some)
            .map_err(|_| Error::msg(format!("{u}: unexpected answer: {n:?}"))),
    }
}

/// Runs `script` with `input` on its stdin (written from a thread, so a
/// host answering while it reads never stalls on a full pipe); its stdout
/// once it succeeded.
fn run_with_input(
    t: &Target,
    op: &str,
    url: &str,
    script: &str,
    input: Vec<u8>,
) -> Result<Vec<u8>> {
    let mut child = command(t, script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ctx("run ssh for", url)?;
    let mut stdin = child.stdin.take().expect("piped");
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let stderr = drain(child.stderr.take().expect("piped"));
    let stdout = drain(child.stdout.take().expect("piped"));
    let status = child.wait().ctx("wait for ssh for", url)?;
    let _ = writer.join();
    let err = stderr.join().unwrap_or_default();
    let out = stdout.join().unwrap_or_default();
    if !status.success() {
        return Err(child_error(op, url, status, &err));
    }
    Ok(out)
}

/// Each name on a line of its own (checked to hold no line break).
fn lines_of<'a>(names: impl Iterator<Item = &'a str>, prefix: &str) -> Vec<u8> {
    let mut v = Vec::new();
    for n in names {
        v.extend_from_slice(prefix.as_bytes());
        v.extend_from_slice(n.as_bytes());
        v.push(b'\n');
    }
    v
}

/// [`super::Destination::remove_many`] on an SSH host: one session, the
/// paths on its input. Each component of a path below the root is looked
/// at first (`[ -L ]`, `[ -d ]`): a symlink or a file there is refused
/// (exit 4), a missing one means nothing to remove. The last component is
/// removed with `rm -f` unless it is a directory that is no symlink, with
/// `rm -rf` then (which unlinks symlinks inside, never follows them). The
/// directories that held what was removed are synced at the end.
pub(super) fn remove_many(t: &Target, rels: &[&str]) -> Result<()> {
    let root_url = super::ssh_url(t, &t.path);
    let u = match rels {
        [one] => url(t, one),
        _ => root_url,
    };
    let mut parents: Vec<String> = Vec::new();
    for r in rels {
        let p = parent(&join_remote(&t.path, r)).to_string();
        if !parents.contains(&p) {
            parents.push(p);
        }
    }
    let sync = if parents.len() <= 64 {
        let qs: Vec<String> = parents.iter().map(|p| q(p)).collect();
        format!("sync -- {} 2>/dev/null || sync", qs.join(" "))
    } else {
        "sync".to_string()
    };
    let script = format!(
        "r={r}; \
         while IFS= read -r rel; do \
           p=$r; rest=$rel; gone=; \
           while :; do \
             case $rest in */*) ;; *) break;; esac; \
             p=$p/${{rest%%/*}}; rest=${{rest#*/}}; \
             if [ -L \"$p\" ]; then echo \"refused: $p is a symlink: refusing a path through it\" >&2; exit 4; fi; \
             if [ ! -e \"$p\" ]; then gone=1; break; fi; \
             if [ ! -d \"$p\" ]; then echo \"refused: $p is not a directory\" >&2; exit 4; fi; \
           done; \
           [ -n \"$gone\" ] && continue; \
           p=$p/$rest; \
           if [ -d \"$p\" ] && [ ! -L \"$p\" ]; then rm -rf -- \"$p\" || exit 3; \
           else rm -f -- \"$p\" || exit 3; fi; \
         done; \
         {{ {sync}; }}",
        r = q(t.path.trim_end_matches('/')),
    );
    run_with_input(t, "remove", &u, &script, lines_of(rels.iter().copied(), "")).map(|_| ())
}

/// [`super::Destination::read_heads`] on an SSH host: one session, a
/// `MAX NAME` line each on its input, an answer line each: `F SIZE BASE64`
/// or `A` (absent or not a regular file).
pub(super) fn read_heads(t: &Target, items: &[(&str, u64)]) -> Result<Vec<super::Head>> {
    use base64::Engine as _;
    let u = super::ssh_url(t, &t.path);
    let script = format!(
        "cd -- {d} || exit 3; \
         while IFS= read -r l; do m=${{l%% *}}; f=./${{l#* }}; \
           if [ -f \"$f\" ] && [ ! -L \"$f\" ]; then \
             printf 'F %s %s\\n' \"$(wc -c < \"$f\" | tr -d ' ')\" \"$(head -c \"$m\" -- \"$f\" | base64 -w0)\"; \
           else echo A; fi; done",
        d = q(&t.path),
    );
    let mut input = Vec::new();
    for (rel, max) in items {
        input.extend_from_slice(format!("{max} {rel}\n").as_bytes());
    }
    let out = run_with_input(t, "read", &u, &script, input)?;
    let out = String::from_utf8_lossy(&out);
    let bad = |line: &str| {
        Error::msg(format!(
            "{u}: unexpected answer from the remote host: {line:?}"
        ))
    };
    let mut v = Vec::with_capacity(items.len());
    for line in out.lines() {
        let mut it = line.split(' ');
        match (it.next(), it.next(), it.next()) {
            (Some("A"), None, None) => v.push(None),
            (Some("F"), Some(size), b64) => {
                let size = size.parse().map_err(|_| bad(line))?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64.unwrap_or(""))
                    .map_err(|_| bad(line))?;
                v.push(Some((size, bytes)));
            }
            _ => return Err(bad(line)),
        }
    }
    if v.len() != items.len() {
        return Err(Error::msg(format!(
            "{u}: the remote host answered for {} of {} files",
            v.len(),
            items.len()
        )));
    }
    Ok(v)
}

/// Kills the child when dropped before it was waited for.
struct Reap(Option<Child>);

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// [`super::Destination::read_each`] on an SSH host: one session in which
/// `tar` archives the files named on its input (`./NAME` lines, relative to
/// the root, no recursion) to its stdout, read here member by member. What
/// tar says about a file on stderr (`Cannot stat`, `File shrank`, `file
/// changed as we read it`) makes that file's answer an error; tar's exit
/// status 1 or 2 is then no failure of the whole.
pub(super) fn read_each<T>(
    t: &Target,
    rels: &[&str],
    f: &mut dyn FnMut(&str, u64, &mut dyn Read) -> T,
) -> Result<Vec<std::result::Result<T, String>>> {
    let u = super::ssh_url(t, &t.path);
    let script = format!(
        "cd -- {d} || exit 3; exec tar -cf - --no-recursion -T -",
        d = q(&t.path)
    );
    let mut child = command(t, &script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ctx("run ssh for", &u)?;
    let mut stdin = child.stdin.take().expect("piped");
    let input = lines_of(rels.iter().copied(), "./");
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let stderr = drain(child.stderr.take().expect("piped"));
    let out = child.stdout.take().expect("piped");
    let mut child = Reap(Some(child));
    let asked: std::collections::HashSet<&str> = rels.iter().copied().collect();
    let mut got: std::collections::HashMap<String, std::result::Result<T, String>> =
        std::collections::HashMap::new();
    let stream_err = (|| -> io::Result<()> {
        let mut ar = tar::Archive::new(io::BufReader::with_capacity(1 << 20, out));
        for e in ar.entries()? {
            let mut e = e?;
            let path = e.path()?.to_string_lossy().into_owned();
            let name = path.strip_prefix("./").unwrap_or(&path).to_string();
            let Some(rel) = asked.get(name.as_str()).copied() else {
                continue;
            };
            if got.contains_key(&name) {
                continue;
            }
            let r = if e.header().entry_type().is_file() {
                let size = e.header().size()?;
                Ok(f(rel, size, &mut e))
            } else {
                Err("not a regular file".to_string())
            };
            got.insert(name, r);
        }
        Ok(())
    })()
    .err();
    let status = child
        .0
        .take()
        .expect("not waited for")
        .wait()
        .ctx("wait for ssh for", &u)?;
    let _ = writer.join();
    let err = stderr.join().unwrap_or_default();
    let err_text = String::from_utf8_lossy(&err);
    // What tar said about each file.
    let mut said = 0;
    for line in err_text.lines() {
        let line = line.trim();
        for rel in rels {
            let tag = format!("./{rel}: ");
            if let Some(i) = line.find(&tag) {
                said += 1;
                got.insert(rel.to_string(), Err(line[i + tag.len()..].to_string()));
            }
        }
    }
    let tar_status = status.code();
    // tar's 1 (a file changed) and 2 (one could not be read) are answers
    // about the files it named.
    let answered = status.success() || (matches!(tar_status, Some(1) | Some(2)) && said > 0);
    if !answered {
        return Err(child_error("read", &u, status, &err));
    }
    if let Some(e) = stream_err {
        return Err(Error::msg(format!(
            "read: {u}: the stream of files from the host is damaged: {e}"
        )));
    }
    Ok(rels
        .iter()
        .map(|r| {
            got.remove(*r)
                .unwrap_or_else(|| Err("not sent by the remote host".to_string()))
        })
        .collect())
}

/// The remote file's bytes as they arrive; the end of the stream checks
/// that `ssh cat` succeeded, so a failed read is an error, not a short file.
struct ChildReader {
    child: Child,
    out: ChildStdout,
    stderr: Option<std::thread::JoinHandle<Vec<u8>>>,
    url: String,
    done: bool,
}

impl Read for ChildReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        let n = self.out.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.done = true;
            let status = self.child.wait()?;
            if !status.success() {
                let err = self
                    .stderr
                    .take()
                    .map(|h| h.join().unwrap_or_default())
                    .unwrap_or_default();
                return Err(io::Error::other(
                    child_error("read", &self.url, status, &err).to_string(),
                ));
            }
        }
        Ok(n)
    }
}

impl Drop for ChildReader {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub(super) fn open_read(t: &Target, rel: &str) -> Result<Box<dyn Read + Send>> {
    let u = url(t, rel);
    let mut child = command(t, &format!("cat -- {}", q(&join_remote(&t.path, rel))))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ctx("run ssh for", &u)?;
    let out = child.stdout.take().expect("piped");
    let stderr = Some(drain(child.stderr.take().expect("piped")));
    Ok(Box::new(ChildReader {
        child,
        out,
        stderr,
        url: u,
        done: false,
    }))
}

/// Escapes the glob characters of `s` for `find -name`.
fn glob_escape(s: &str) -> String {
    let mut o = String::new();
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            o.push('\\');
        }
        o.push(c);
    }
    o
}

/// Regular files directly in `dir` whose names start with `start`, with
/// their sizes and modification times, from one `find` on the host (GNU
/// find's `-printf`). A missing directory is an error.
pub(super) fn list(t: &Target, dir: &str, start: &str) -> Result<Vec<Listed>> {
    let d = if dir.is_empty() {
        t.path.clone()
    } else {
        join_remote(&t.path, dir)
    };
    let u = super::ssh_url(t, &d);
    let script = format!(
        "d={}; if [ -d \"$d\" ]; then find \"$d\" -mindepth 1 -maxdepth 1 -type f -name {} \
         -printf '%s %T@ %f\\n'; else echo \"$d: no such directory\" >&2; exit 3; fi",
        q(&d),
        q(&format!("{}*", glob_escape(start)))
    );
    let out = run(t, "list", &u, &script)?;
    let mut v = Vec::new();
    for line in out.lines() {
        let mut it = line.splitn(3, ' ');
        let (Some(size), Some(mtime), Some(name)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let (Ok(size), Ok(mtime)) = (size.parse::<u64>(), mtime.parse::<f64>()) else {
            return Err(Error::msg(format!(
                "{u}: unexpected answer from the remote host: {line:?}"
            )));
        };
        v.push(Listed {
            name: name.to_string(),
            size,
            modified: (mtime >= 0.0)
                .then(|| std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(mtime)),
        });
    }
    Ok(v)
}

/// A small file whole (at most `max` bytes), `None` when absent: one `ssh`.
pub(super) fn read_small(t: &Target, rel: &str, max: u64) -> Result<Option<Vec<u8>>> {
    let u = url(t, rel);
    let script = format!(
        "f={}; if [ -f \"$f\" ]; then printf P; head -c {max} -- \"$f\"; \
         elif [ -e \"$f\" ]; then echo \"$f: not a regular file\" >&2; exit 3; else printf A; fi",
        q(&join_remote(&t.path, rel))
    );
    let out = command(t, &script)
        .stdin(Stdio::null())
        .output()
        .ctx("run ssh for", &u)?;
    if !out.status.success() {
        return Err(child_error("read", &u, out.status, &out.stderr));
    }
    match out.stdout.split_first() {
        Some((b'P', rest)) => Ok(Some(rest.to_vec())),
        Some((b'A', _)) => Ok(None),
        _ => Err(Error::msg(format!(
            "{u}: unexpected answer from the remote host"
        ))),
    }
}

/// [`super::Destination::create_beside`] on an SSH host, in one session: the
/// host checks that none of `guard` exists (else answers which, and takes
/// nothing), receives `src` into a temp name, checks its size and sha256,
/// syncs it, replaces `side` with `side_bytes` (temp, sync, mv), then links
/// the temp to `rel` (never replacing) and syncs the directory.
pub(super) fn create_beside(
    t: &Target,
    src: &Path,
    rel: &str,
    expect: &Digests,
    guard: &[&str],
    side: &str,
    side_bytes: &[u8],
) -> Result<super::Created> {
    let u = url(t, rel);
    let final_path = join_remote(&t.path, rel);
    let dir = parent(&final_path).to_string();
    let tmp = temp_for(&final_path);
    let side_path = join_remote(&t.path, side);
    let side_tmp = temp_for(&side_path);
    let side_text = std::str::from_utf8(side_bytes)
        .ok()
        .filter(|s| !s.contains('\0'))
        .ok_or_else(|| Error::msg(format!("{u}: the file beside it is not text")))?;
    let guards: Vec<String> = guard.iter().map(|g| q(&join_remote(&t.path, g))).collect();
    let script = format!(
        "set -e; umask 077; d={d}; t={t}; s={st}; \
         if [ ! -d \"$d\" ]; then echo \"$d: no such directory\" >&2; exit 3; fi; \
         for g in {guards}; do if [ -e \"$g\" ]; then echo \"exists $g\"; cat > /dev/null; exit 0; fi; done; \
         find \"$d\" -maxdepth 1 -type f -name '.*{TEMP_MARK}*' -mmin +{STALE_MINUTES} \
           -exec sh -c 'for f; do rm -f -- \"$f\" && echo \"{LEFTOVER} $f\" >&2; done' sh {{}} + || true; \
         trap 'rm -f -- \"$t\" \"$s\"' EXIT; \
         cat > \"$t\"; n=$(wc -c < \"$t\"); \
         if [ \"$n\" != {size} ]; then echo \"got $n bytes of {size}: input cut short\" >&2; exit 3; fi; \
         sync \"$t\" 2>/dev/null || sync; h=$(sha256sum < \"$t\"); h=${{h%% *}}; \
         if [ \"$h\" != {sha} ]; then echo \"sha256 $h on the host where {sha} was sent\" >&2; exit 3; fi; \
         printf '%s' {text} > \"$s\"; sync \"$s\" 2>/dev/null || sync; mv -f -- \"$s\" {side}; \
         if ln -- \"$t\" {f} 2>/dev/null; then rm -f -- \"$t\"; sync \"$d\" 2>/dev/null || sync; echo published; \
         else echo raced; fi",
        d = q(&dir),
        t = q(&tmp),
        st = q(&side_tmp),
        guards = guards.join(" "),
        size = expect.size,
        sha = expect.sha256,
        text = q(side_text),
        side = q(&side_path),
        f = q(&final_path),
    );
    let mut f = std::fs::File::open(src).ctx("open", src)?;
    let out = stream_script(t, &u, &script, &mut f, src, expect.size, &|_| {})?;
    let out = String::from_utf8_lossy(&out);
    let out = out.trim();
    if out == "published" {
        return Ok(super::Created::Published);
    }
    if out == "raced" {
        return Ok(super::Created::Exists(rel.to_string()));
    }
    if let Some(p) = out.strip_prefix("exists ") {
        let p = p.trim_matches('\'');
        let name = p.rsplit('/').next().unwrap_or(p);
        let dir_rel = rel
            .rsplit_once('/')
            .map(|(d, _)| format!("{d}/"))
            .unwrap_or_default();
        return Ok(super::Created::Exists(format!("{dir_rel}{name}")));
    }
    Err(Error::msg(format!(
        "{u}: unexpected answer from the remote host: {out:?}"
    )))
}

/// [`super::Destination::open_first`] on an SSH host, in one session: the
/// host looks for each of `candidates` in order, and for the first one
/// present sends a header line (its name, size and `side`, base64, or `-`)
/// then its bytes.
pub(super) fn open_first(
    t: &Target,
    candidates: &[&str],
    side: &str,
) -> Result<Option<super::Opened>> {
    let root_url = super::ssh_url(t, &t.path);
    let paths: Vec<String> = candidates
        .iter()
        .map(|c| q(&join_remote(&t.path, c)))
        .collect();
    let script = format!(
        "d={d}; if [ ! -d \"$d\" ]; then echo \"$d: no such directory\" >&2; exit 3; fi; \
         for f in {paths}; do if [ -f \"$f\" ]; then \
           if [ -f {side} ]; then s=$(head -c 65536 -- {side} | base64 -w0); else s=-; fi; \
           printf 'F %s %s %s\\n' \"$(wc -c < \"$f\")\" \"$s\" \"${{f##*/}}\"; exec cat -- \"$f\"; fi; done; echo A",
        d = q(&t.path),
        paths = paths.join(" "),
        side = q(&join_remote(&t.path, side)),
    );
    let mut child = command(t, &script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ctx("run ssh for", &root_url)?;
    let mut out = child.stdout.take().expect("piped");
    let stderr = drain(child.stderr.take().expect("piped"));
    // The header line, read a byte at a time so nothing of the file is
    // taken with it.
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match out.read(&mut b) {
            Ok(0) => break,
            Ok(_) if b[0] == b'\n' => break,
            Ok(_) => line.push(b[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read", Path::new(&root_url), e)),
        }
        if line.len() > 200_000 {
            break;
        }
    }
    let line = String::from_utf8_lossy(&line).into_owned();
    if line == "A" || line.is_empty() {
        let status = child.wait().ctx("wait for ssh for", &root_url)?;
        let err = stderr.join().unwrap_or_default();
        if !status.success() {
            return Err(child_error("read", &root_url, status, &err));
        }
        if line.is_empty() {
            return Err(Error::msg(format!(
                "{root_url}: no answer from the remote host"
            )));
        }
        return Ok(None);
    }
    let bad = || {
        Error::msg(format!(
            "{root_url}: unexpected answer from the remote host: {line:?}"
        ))
    };
    let mut it = line.splitn(4, ' ');
    let (Some("F"), Some(size), Some(side_b64), Some(name)) =
        (it.next(), it.next(), it.next(), it.next())
    else {
        return Err(bad());
    };
    let size: u64 = size.parse().map_err(|_| bad())?;
    let side_bytes = if side_b64 == "-" {
        None
    } else {
        use base64::Engine as _;
        Some(
            base64::engine::general_purpose::STANDARD
                .decode(side_b64)
                .map_err(|_| bad())?,
        )
    };
    let rel = candidates
        .iter()
        .find(|c| c.rsplit('/').next() == Some(name))
        .ok_or_else(bad)?
        .to_string();
    Ok(Some(super::Opened {
        reader: Box::new(ChildReader {
            child,
            out,
            stderr: Some(stderr),
            url: url(t, &rel),
            done: false,
        }),
        rel,
        size,
        side: side_bytes,
    }))
}

/// Every regular file directly in the root whose name ends in `suffix`
/// (first `max` bytes of each), in one session: base64 lines.
/// Every file below `dir` (recursively, hidden names and directories
/// skipped) whose name ends in `suffix`: its path relative to the root and
/// its first `max` bytes, in one session.
pub(super) fn read_tree(
    t: &Target,
    dir: &str,
    suffix: &str,
    max: u64,
) -> Result<Vec<(String, Vec<u8>)>> {
    let d = if dir.is_empty() {
        t.path.clone()
    } else {
        join_remote(&t.path, dir)
    };
    let u = super::ssh_url(t, &d);
    if suffix.contains(['*', '?', '[', '/', '\'', '\\']) {
        return Err(Error::msg(format!("{suffix:?}: not a plain suffix")));
    }
    let script = format!(
        "r={r}; d={d}; if [ ! -d \"$d\" ]; then echo \"$d: no such directory\" >&2; exit 3; fi; \
         find \"$d\" -mindepth 1 -name '.*' -prune -o -type f -name '*{suffix}' -print | \
         while IFS= read -r f; do \
           printf '%s %s\\n' \"$(head -c {max} -- \"$f\" | base64 -w0)\" \"${{f#\"$r\"/}}\"; done",
        r = q(t.path.trim_end_matches('/')),
        d = q(&d),
    );
    named_contents(&u, &run(t, "read", &u, &script)?)
}

/// Lines `BASE64 NAME` (a file's first bytes, then its name) as the remote
/// scripts of [`read_tree`] and [`read_suffix`] print them.
fn named_contents(u: &str, out: &str) -> Result<Vec<(String, Vec<u8>)>> {
    use base64::Engine as _;
    let mut v = Vec::new();
    for line in out.lines() {
        let Some((b64, name)) = line.split_once(' ') else {
            continue;
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| {
                Error::msg(format!(
                    "{u}: unexpected answer from the remote host: {line:?}"
                ))
            })?;
        v.push((name.to_string(), bytes));
    }
    Ok(v)
}

pub(super) fn read_suffix(
    t: &Target,
    suffix: &str,
    max: u64,
) -> Result<std::collections::HashMap<String, Vec<u8>>> {
    let root_url = super::ssh_url(t, &t.path);
    if suffix.contains(['*', '?', '[', '/', '\'', '\\']) {
        return Err(Error::msg(format!("{suffix:?}: not a plain suffix")));
    }
    let script = format!(
        "d={d}; if [ ! -d \"$d\" ]; then echo \"$d: no such directory\" >&2; exit 3; fi; \
         for f in \"$d\"/*{suffix}; do if [ -f \"$f\" ]; then \
           printf '%s %s\\n' \"$(head -c {max} -- \"$f\" | base64 -w0)\" \"${{f##*/}}\"; fi; done",
        d = q(&t.path),
    );
    let out = run(t, "read", &root_url, &script)?;
    Ok(named_contents(&root_url, &out)?.into_iter().collect())
}
