//! Running PostgreSQL's client programs: libpq connection conventions
//! (`-h`, `-p`, `-U`, `-d` as a name or conninfo, PG* variables, .pgpass),
//! passwords kept out of argv, every exit status checked, stderr drained on
//! its own thread and quoted (redacted) on failure.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::conninfo::{self, quote_value, redact, split_password};
use crate::error::{Error, IoContext, Result};
use crate::pgbin;
pub use crate::pgbin::{Found, Need};

/// The connection flags every tool that talks to PostgreSQL takes, named as
/// pg_dump names them. Unset flags fall back to libpq's PG* variables.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ConnArgs {
    /// Database server host or socket directory [env: PGHOST]
    #[arg(short = 'h', long = "host", value_name = "HOSTNAME")]
    pub host: Option<String>,
    /// Database server port [env: PGPORT]
    #[arg(short = 'p', long = "port", value_name = "PORT")]
    pub port: Option<String>,
    /// Connect as this database user [env: PGUSER]
    #[arg(short = 'U', long = "username", value_name = "NAME")]
    pub username: Option<String>,
    /// Directories holding PostgreSQL programs (pg_dump, pg_basebackup,
    /// psql...), separated by ':'. pgb runs the ones matching the server's
    /// major version, searching only these when given, otherwise
    /// /usr/lib/postgresql/N/bin, /usr/pgsql-N/bin and PATH; none matching
    /// is an error naming the version needed.
    #[arg(long = "pg-bindir", value_name = "DIRS", env = "PGB_PG_BINDIR")]
    pub pg_bindir: Option<PathBuf>,
}

/// A private passfile holding a password taken out of a connection string,
/// handed to children through PGPASSFILE; removed when dropped.
#[derive(Debug)]
struct Passfile {
    dir: PathBuf,
    path: PathBuf,
}

impl Passfile {
    fn new(password: &str) -> Result<Passfile> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let dir =
            std::env::temp_dir().join(format!("pgb-pass.{}.{}", std::process::id(), unique()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .ctx("create", &dir)?;
        let path = dir.join("pgpass");
        let escaped = password.replace('\\', "\\\\").replace(':', "\\:");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .ctx("create", &path)?;
        f.write_all(format!("*:*:*:*:{escaped}\n").as_bytes())
            .ctx("write", &path)?;
        Ok(Passfile { dir, path })
    }
}

impl Drop for Passfile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Where and how to connect: the flags, plus a database (a name or a
/// conninfo without its password).
#[derive(Debug, Clone)]
pub struct Conn {
    args: ConnArgs,
    dbname: Option<String>,
    passfile: Option<Arc<Passfile>>,
}

impl Conn {
    /// `dbname` is what the user gave to `-d`: a name or a connection string.
    /// A password in it is moved to a private passfile.
    pub fn new(args: &ConnArgs, dbname: Option<&str>) -> Result<Conn> {
        let (dbname, password) = match dbname {
            Some(d) => {
                let (d, p) = split_password(d);
                (Some(d), p)
            }
            None => (None, None),
        };
        let passfile = match password {
            Some(p) => Some(Arc::new(Passfile::new(&p)?)),
            None => None,
        };
        Ok(Conn {
            args: args.clone(),
            dbname,
            passfile,
        })
    }

    /// The same connection, to database `name`.
    pub fn with_database(&self, name: &str) -> Result<Conn> {
        let dbname = match &self.dbname {
            Some(d) if d.starts_with("postgres://") || d.starts_with("postgresql://") => {
                return Err(Error::Usage(
                    "a postgresql:// URI names one database; use keyword=value form or -h/-p/-U to reach several".into(),
                ))
            }
            // In a keyword/value string the last value of a key wins.
            Some(d) if conninfo::is_conninfo(d) => format!("{d} dbname={}", quote_value(name)),
            _ => format!("dbname={}", quote_value(name)),
        };
        Ok(Conn {
            args: self.args.clone(),
            dbname: Some(dbname),
            passfile: self.passfile.clone(),
        })
    }

    /// The database as given (password removed), for messages.
    pub fn dbname(&self) -> Option<&str> {
        self.dbname.as_deref()
    }

    pub fn args(&self) -> &ConnArgs {
        &self.args
    }

    /// Path of a PostgreSQL program, in `--pg-bindir` when given.
    pub fn program(&self, name: &str) -> PathBuf {
        program_path(self.args.pg_bindir.as_deref(), name)
    }

    /// The same connection, running its programs from the installation
    /// where `program` is found as `need` asks (the server's major, for
    /// pg_dump and pg_basebackup); `why` explains the version in the error
    /// when there is none.
    pub fn using(&self, program: &str, need: Need, why: &str) -> Result<(Conn, Found)> {
        let found = pgbin::find(self.args.pg_bindir.as_deref(), program, need, why)?;
        let mut c = self.clone();
        c.args.pg_bindir = Some(found.bindir());
        Ok((c, found))
    }

    /// A command for `program` with stdin closed, the connection flags set
    /// and any password in PGPASSFILE. `-d` is added only when `with_db`.
    pub fn command(&self, program: &str, with_db: bool) -> Command {
        let mut c = Command::new(self.program(program));
        c.stdin(Stdio::null());
        // Never a password prompt: one typed into psql's would not reach the
        // pg_dump that follows. The message on failure names the ways to
        // give one (NO_PASSWORD_HINT).
        c.arg("-w");
        if let Some(h) = &self.args.host {
            c.arg("-h").arg(h);
        }
        if let Some(p) = &self.args.port {
            c.arg("-p").arg(p);
        }
        if let Some(u) = &self.args.username {
            c.arg("-U").arg(u);
        }
        if with_db {
            // pg_dumpall and pg_basebackup take only a connection string
            // here; every libpq program understands one.
            match &self.dbname {
                Some(d) if conninfo::is_conninfo(d) => {
                    c.arg("-d").arg(d);
                }
                Some(d) => {
                    c.arg("-d").arg(format!("dbname={}", quote_value(d)));
                }
                None => {}
            }
        }
        if let Some(pf) = &self.passfile {
            c.env("PGPASSFILE", &pf.path);
        }
        c
    }
}

/// Where the server programs of major `major` (initdb, pg_ctl, postgres)
/// are, or an error naming the version needed; `why` says what needs it.
pub fn server_bindir_for(given: Option<&Path>, major: u32, why: &str) -> Result<PathBuf> {
    pgbin::find(given, "postgres", Need::Exact(major), why).map(|f| f.bindir())
}

/// Where the newest PostgreSQL server programs (initdb, pg_ctl, postgres)
/// are: the first of `given` holding them, else the newest
/// `/usr/lib/postgresql/N/bin` (Debian keeps them off PATH), else `None`
/// (search PATH).
pub fn server_bindir(given: Option<&Path>) -> Option<PathBuf> {
    if let Some(g) = given {
        let dirs: Vec<PathBuf> = std::env::split_paths(g.as_os_str()).collect();
        return dirs
            .iter()
            .find(|d| d.join("initdb").exists())
            .or(dirs.first())
            .cloned();
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b)
}

/// `bindir/name`, or `name` to be found on PATH. `bindir` may be a list
/// separated by ':'; the first directory holding `name` wins.
pub fn program_path(bindir: Option<&Path>, name: &str) -> PathBuf {
    match bindir {
        Some(d) => {
            let dirs: Vec<PathBuf> = std::env::split_paths(d.as_os_str()).collect();
            match dirs.iter().find(|d| d.join(name).exists()) {
                Some(d) => d.join(name),
                None if dirs.len() == 1 => dirs[0].join(name),
                None => PathBuf::from(name),
            }
        }
        None => PathBuf::from(name),
    }
}

/// Said when the server wants a password and none was given.
pub const NO_PASSWORD_HINT: &str = "hint: pgb never prompts for a password; give it in ~/.pgpass (or the file PGPASSFILE names), a service file entry (PGSERVICE), PGPASSWORD, or password= in the -d connection string (kept out of argv)";

/// A child whose stderr is drained on its own thread.
pub struct Running {
    pub child: Child,
    program: String,
    what: String,
    stderr: Option<JoinHandle<String>>,
}

/// The last 16 KiB a child wrote to stderr are kept for the error message.
const STDERR_KEEP: usize = 16 * 1024;

fn drain(mut r: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut kept: Vec<u8> = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    kept.extend_from_slice(&buf[..n]);
                    if kept.len() > 2 * STDERR_KEEP {
                        kept.drain(..kept.len() - STDERR_KEEP);
                    }
                }
            }
        }
        if kept.len() > STDERR_KEEP {
            kept.drain(..kept.len() - STDERR_KEEP);
        }
        redact(&String::from_utf8_lossy(&kept))
    })
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => "failed".into(),
    }
}

/// Starts `cmd` with stderr drained; `what` says what it was doing, for
/// messages ("dump database appdb").
pub fn spawn(mut cmd: Command, what: &str) -> Result<Running> {
    let program = Path::new(cmd.get_program())
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    cmd.stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| {
        Error::io(
            format!("{what}: start"),
            cmd.get_program(),
            if e.kind() == std::io::ErrorKind::NotFound {
                std::io::Error::new(
                    e.kind(),
                    "not found (install the PostgreSQL client programs or set --pg-bindir)",
                )
            } else {
                e
            },
        )
    })?;
    let stderr = child.stderr.take().map(drain);
    Ok(Running {
        child,
        program,
        what: what.to_string(),
        stderr,
    })
}

impl Running {
    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn take_stdout(&mut self) -> ChildStdout {
        self.child.stdout.take().expect("stdout was not piped")
    }

    pub fn take_stdin(&mut self) -> ChildStdin {
        self.child.stdin.take().expect("stdin was not piped")
    }

    /// Waits; a non-zero status is an error quoting the child's stderr.
    pub fn wait(mut self) -> Result<String> {
        let status = self
            .child
            .wait()
            .ctx(&format!("{}: wait", self.what), &self.program)?;
        let stderr = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        if status.success() {
            Ok(stderr)
        } else {
            let stderr = if stderr.contains("no password supplied") {
                format!("{}\n{NO_PASSWORD_HINT}", stderr.trim_end())
            } else {
                stderr
            };
            Err(Error::Child {
                program: self.program.clone(),
                what: self.what.clone(),
                status: describe(status),
                stderr,
            })
        }
    }

    /// Stops the child (SIGTERM, then reaps it), for cleanup after an error
    /// elsewhere in the pipeline.
    pub fn kill(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
        if let Some(h) = self.stderr.take() {
            let _ = h.join();
        }
    }
}

/// Runs `cmd` to completion and returns its stdout.
pub fn output(mut cmd: Command, what: &str) -> Result<Vec<u8>> {
    cmd.stdout(Stdio::piped());
    let mut r = spawn(cmd, what)?;
    let mut out = Vec::new();
    let read = r.take_stdout().read_to_end(&mut out);
    r.wait()?;
    read.map_err(|e| Error::io(format!("{what}: read output"), "stdout", e))?;
    Ok(out)
}

/// `pg_dump --version` and the like: the version number printed last.
pub fn program_version(bindir: Option<&Path>, name: &str) -> Result<String> {
    let mut c = Command::new(program_path(bindir, name));
    c.arg("--version").stdin(Stdio::null());
    let out = output(c, &format!("{name} --version"))?;
    Ok(parse_version(&String::from_utf8_lossy(&out)))
}

/// `pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)` -> `15.18`.
pub fn parse_version(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    match words.iter().position(|w| *w == "(PostgreSQL)") {
        Some(i) if i + 1 < words.len() => words[i + 1].to_string(),
        _ => words.get(2).or(words.last()).unwrap_or(&"").to_string(),
    }
}

/// psql as pgb runs it: no psqlrc, quiet, unaligned, tuples only, fields
/// separated by `sep`, stopping at the first error.
fn psql_command(conn: &Conn, sep: &str) -> Command {
    let mut c = conn.command("psql", true);
    c.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-F", sep]);
    c
}

/// Runs one SQL command through psql (fields separated by a tab); returns
/// its output without the trailing newline. `what` names the step in errors.
pub fn query(conn: &Conn, sql: &str, what: &str) -> Result<String> {
    let mut c = psql_command(conn, "\t");
    c.args(["-c", sql]).stdin(Stdio::null());
    let out = output(c, what)?;
    Ok(String::from_utf8_lossy(&out).trim_end().to_string())
}

/// A psql session kept open for several queries (one transaction can span
/// them, as the exported snapshot and the row counts need).
pub struct Psql {
    running: Option<Running>,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    marker: String,
    what: String,
}

const FIELD_SEP: char = '\u{1f}';

impl Psql {
    pub fn start(conn: &Conn, what: &str) -> Result<Psql> {
        let mut c = psql_command(conn, &FIELD_SEP.to_string());
        c.args(["-P", "pager=off"])
            .env("PGAPPNAME", "pgb")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut running = spawn(c, what)?;
        let stdin = running.take_stdin();
        let stdout = BufReader::new(running.take_stdout());
        Ok(Psql {
            running: Some(running),
            stdin,
            stdout,
            marker: format!("__pgb_end_{}_{}__", std::process::id(), unique()),
            what: what.to_string(),
        })
    }

    fn failed(&mut self) -> Error {
        match self.running.take() {
            Some(r) => match r.wait() {
                Err(e) => e,
                Ok(stderr) => Error::msg(format!(
                    "{}: psql ended early: {}",
                    self.what,
                    stderr.trim()
                )),
            },
            None => Error::msg(format!("{}: psql session already closed", self.what)),
        }
    }

    /// Runs one SQL statement and returns its rows, fields split. Values must
    /// not contain newlines.
    pub fn query(&mut self, sql: &str) -> Result<Vec<Vec<String>>> {
        let script = format!(
            "{}\n\\echo {}\n",
            sql.trim_end().trim_end_matches(';').to_string() + ";",
            self.marker
        );
        if self
            .stdin
            .write_all(script.as_bytes())
            .and_then(|_| self.stdin.flush())
            .is_err()
        {
            return Err(self.failed());
        }
        let mut rows = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            match self.stdout.read_line(&mut line) {
                Ok(0) | Err(_) => return Err(self.failed()),
                Ok(_) => {}
            }
            let l = line.trim_end_matches('\n');
            if l == self.marker {
                return Ok(rows);
            }
            rows.push(l.split(FIELD_SEP).map(str::to_string).collect());
        }
    }

    /// One value: the first field of the first row.
    pub fn value(&mut self, sql: &str) -> Result<String> {
        let rows = self.query(sql)?;
        rows.into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .ok_or_else(|| Error::msg(format!("{}: no result from: {sql}", self.what)))
    }

    /// Ends the session (closing stdin lets psql quit) and checks its status.
    pub fn close(mut self) -> Result<()> {
        let _ = self.stdin.write_all(b"\\q\n");
        drop(self.stdin);
        match self.running.take() {
            Some(r) => r.wait().map(|_| ()),
            None => Ok(()),
        }
    }
}

/// Quotes an SQL identifier.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quotes an SQL string literal.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_moves_from_argv_to_a_private_passfile() {
        let c = Conn::new(
            &ConnArgs::default(),
            Some("host=db password=hunter2 dbname=app"),
        )
        .unwrap();
        let cmd = c.command("pg_dump", true);
        let argv: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(!argv.join(" ").contains("hunter2"), "{argv:?}");
        let pf = cmd
            .get_envs()
            .find(|(k, _)| *k == "PGPASSFILE")
            .and_then(|(_, v)| v)
            .unwrap()
            .to_owned();
        let text = std::fs::read_to_string(&pf).unwrap();
        assert_eq!(text, "*:*:*:*:hunter2\n");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&pf).unwrap().permissions().mode() & 0o777,
            0o600
        );
        drop(cmd);
        drop(c);
        assert!(
            !Path::new(&pf).exists(),
            "passfile removed with the connection"
        );
    }

    #[test]
    fn versions_are_the_number_after_postgresql() {
        assert_eq!(
            parse_version("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n"),
            "15.18"
        );
        assert_eq!(
            parse_version("pg_basebackup (PostgreSQL) 17devel"),
            "17devel"
        );
    }

    #[test]
    fn plain_names_become_connection_strings() {
        let c = Conn::new(&ConnArgs::default(), Some("app db")).unwrap();
        let argv: Vec<String> = c
            .command("pg_basebackup", true)
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        // -w: never a password prompt (pgb runs unattended).
        assert_eq!(argv, ["-w", "-d", "dbname='app db'"]);
    }

    #[test]
    fn another_database_keeps_the_other_keywords() {
        let c = Conn::new(&ConnArgs::default(), Some("host=db sslmode=require")).unwrap();
        let d = c.with_database("it's").unwrap();
        assert_eq!(d.dbname(), Some("host=db sslmode=require dbname='it\\'s'"));
    }

    #[test]
    fn a_failing_child_is_quoted_and_redacted() {
        let mut c = Command::new("sh");
        c.args(["-c", "echo 'FATAL: password=hunter2 rejected' >&2; exit 3"]);
        let e = spawn(c, "dump database app")
            .unwrap()
            .wait()
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "dump database app: sh exited with status 3: FATAL: password=*** rejected"
        );
    }
}
