//! Test harness: throwaway PostgreSQL clusters made by initdb in a temp dir
//! (as the `postgres` user when the tests run as root, since initdb and
//! postgres refuse root), each with its own socket directory, so tests run in
//! parallel without clashing; torn down when dropped, even after a failed
//! assertion.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Directory of the PostgreSQL server programs: `PGB_TEST_PG_BINDIR`, else
/// the newest `/usr/lib/postgresql/N/bin`, else whatever PATH has.
pub fn pg_bindir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let given = std::env::var_os("PGB_TEST_PG_BINDIR").map(PathBuf::from);
        match pgb_common::pg::server_bindir(given.as_deref()) {
            Some(bin) => bin,
            None => {
                let out = Command::new("sh")
                    .args(["-c", "command -v initdb"])
                    .output()
                    .expect("sh");
                let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
                assert!(
                    !p.is_empty(),
                    "initdb not found: install the PostgreSQL server (apt-get install postgresql)"
                );
                Path::new(&p).parent().unwrap().to_path_buf()
            }
        }
    })
}

pub fn pg_bin(name: &str) -> PathBuf {
    pg_bindir().join(name)
}

/// Where `scripts/install-pg` caches the official builds of the majors this
/// host lacks (the same rule as the script).
pub fn pg_cache() -> PathBuf {
    if let Some(c) = std::env::var_os("PGB_PG_CACHE") {
        return PathBuf::from(c);
    }
    if is_root() {
        return PathBuf::from("/var/cache/pgb/postgresql");
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"));
    base.join("pgb/postgresql")
}

/// The server programs of PostgreSQL `major`: Debian's layout, else the
/// cache `scripts/install-pg` fills (scripts/test runs it).
pub fn bindir_of(major: u32) -> PathBuf {
    let candidates = [
        PathBuf::from(format!("/usr/lib/postgresql/{major}/bin")),
        pg_cache().join(major.to_string()).join("bin"),
    ];
    candidates
        .iter()
        .find(|d| d.join("postgres").exists())
        .cloned()
        .unwrap_or_else(|| {
            panic!("PostgreSQL {major} is not installed: run scripts/install-pg {major}")
        })
}

/// Every supported major's bin directory present on this host, newest
/// first, as one `PGB_PG_BINDIR` list: the tools must pick the one that
/// matches each server and artifact, as on a host in the middle of an
/// upgrade.
pub fn all_bindirs() -> String {
    let mut dirs: Vec<String> = (14..=18)
        .rev()
        .flat_map(|m| {
            [
                PathBuf::from(format!("/usr/lib/postgresql/{m}/bin")),
                pg_cache().join(m.to_string()).join("bin"),
            ]
        })
        .filter(|d| d.join("postgres").exists())
        .map(|d| d.display().to_string())
        .collect();
    if dirs.is_empty() {
        dirs.push(pg_bindir().display().to_string());
    }
    dirs.join(":")
}

/// A command run as the cluster owner: `postgres` when we are root.
pub fn as_owner(program: impl AsRef<OsStr>) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Runs a command, panicking with its output when it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A temp dir the cluster owner can use, removed when dropped.
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let t = tempfile::Builder::new()
            .prefix(&format!("pgb-{tag}."))
            .tempdir()
            .unwrap();
        let path = t.keep();
        if is_root() {
            let pg = nix::unistd::User::from_name("postgres")
                .unwrap()
                .expect("a postgres user");
            nix::unistd::chown(&path, Some(pg.uid), Some(pg.gid)).unwrap();
        }
        Scratch { path }
    }

    /// A subdirectory owned by the cluster owner.
    pub fn owned_dir(&self, name: &str) -> PathBuf {
        let p = self.path.join(name);
        run(as_owner("mkdir").arg("-p").arg(&p));
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

#[derive(Default)]
pub struct Options {
    /// Turn on WAL archiving into `<scratch>/archive` with this command
    /// (`%p`, `%f` as PostgreSQL substitutes them); `None`: a plain cp.
    pub archive: bool,
    pub archive_command: Option<String>,
    /// Lines put first in pg_hba.conf.
    pub hba_first: Vec<String>,
    pub extra_conf: Vec<String>,
    /// Extra initdb arguments (`-g` for group access).
    pub initdb_args: Vec<String>,
    /// The PostgreSQL major to run [default: the host's newest, Debian's].
    pub major: Option<u32>,
}

/// A running throwaway cluster.
pub struct Cluster {
    pub scratch: Scratch,
    pub data: PathBuf,
    pub socket: PathBuf,
    pub port: u16,
    pub archive: Option<PathBuf>,
    /// The server programs it runs.
    pub bindir: PathBuf,
}

impl Cluster {
    pub fn new() -> Cluster {
        Self::with(Options::default())
    }

    pub fn with(opts: Options) -> Cluster {
        let scratch = Scratch::new("cluster");
        let data = scratch.path.join("data");
        let socket = scratch.owned_dir("sock");
        let bindir = match opts.major {
            Some(m) => bindir_of(m),
            None => pg_bindir().to_path_buf(),
        };
        run(as_owner(bindir.join("initdb"))
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "-N",
                "-D",
            ])
            .arg(&data)
            .args(&opts.initdb_args)
            .stdout(Stdio::null()));
        let port = 5432;
        let mut conf = vec![
            "listen_addresses = ''".to_string(),
            format!("unix_socket_directories = '{}'", socket.display()),
            format!("port = {port}"),
            "wal_level = replica".into(),
            "max_wal_senders = 4".into(),
            "shared_buffers = 32MB".into(),
            "fsync = off".into(),
            "synchronous_commit = off".into(),
            "log_min_messages = warning".into(),
            // Segments in the data directory: a cluster killed by a test
            // leaves nothing in /dev/shm.
            "dynamic_shared_memory_type = mmap".into(),
        ];
        let archive =
            (opts.archive || opts.archive_command.is_some()).then(|| scratch.owned_dir("archive"));
        if let Some(a) = &archive {
            conf.push("archive_mode = on".into());
            let cmd = opts
                .archive_command
                .clone()
                .unwrap_or_else(|| format!("test ! -f {0}/%f && cp %p {0}/%f", a.display()));
            conf.push(format!("archive_command = '{}'", cmd.replace('\'', "''")));
        }
        conf.extend(opts.extra_conf.iter().cloned());
        append(&data.join("postgresql.conf"), &conf.join("\n"));
        if !opts.hba_first.is_empty() {
            let hba = data.join("pg_hba.conf");
            let old = fs::read_to_string(&hba).unwrap();
            write_as_owner(&hba, &format!("{}\n{old}", opts.hba_first.join("\n")));
        }
        let c = Cluster {
            scratch,
            data,
            socket,
            port,
            archive,
            bindir,
        };
        c.start();
        c
    }

    /// A data directory made elsewhere (a base backup) run as a harness
    /// cluster on `port`: its own socket in `scratch`, `conf` appended to its
    /// postgresql.conf, owned by postgres with mode 0700, started.
    pub fn adopt(scratch: Scratch, data: PathBuf, port: u16, conf: &str) -> Cluster {
        Self::adopt_as(pg_bindir().to_path_buf(), scratch, data, port, conf)
    }

    /// [`Cluster::adopt`] with the server programs in `bindir`.
    pub fn adopt_as(
        bindir: PathBuf,
        scratch: Scratch,
        data: PathBuf,
        port: u16,
        conf: &str,
    ) -> Cluster {
        let socket = scratch.owned_dir("sock");
        append(
            &data.join("postgresql.conf"),
            &format!(
                "\nunix_socket_directories = '{}'\n{conf}\n",
                socket.display()
            ),
        );
        if is_root() {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&data));
        }
        run(Command::new("chmod").arg("700").arg(&data));
        let c = Cluster {
            scratch,
            data,
            socket,
            port,
            archive: None,
            bindir,
        };
        c.start();
        c
    }

    /// Polls `sql` until it answers `want`; fails with the server log after
    /// a minute.
    pub fn wait_for(&self, sql: &str, want: &str) {
        let t0 = std::time::Instant::now();
        while self.sql("postgres", sql) != want {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(60),
                "{sql} never gave {want}:\n{}",
                self.server_log()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    pub fn start(&self) {
        run(as_owner(self.bindir.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.scratch.path.join("server.log"))
            .args(["-w", "-t", "60", "start"])
            .stdout(Stdio::null()));
    }

    pub fn stop(&self) {
        let _ = as_owner(self.bindir.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// The environment that points libpq programs at this cluster.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PGHOST", self.socket.display().to_string()),
            ("PGPORT", self.port.to_string()),
            ("PGUSER", "postgres".into()),
            ("PGDATABASE", "postgres".into()),
        ]
    }

    /// A command for one of our binaries, pointed at this cluster.
    pub fn tool(&self, name: &str) -> Command {
        let mut c = Command::new(bin(name));
        c.envs(self.env())
            .env("PGB_PG_BINDIR", all_bindirs())
            .stdin(Stdio::null());
        c
    }

    /// A PostgreSQL client program pointed at this cluster.
    pub fn pg(&self, name: &str) -> Command {
        let mut c = Command::new(self.bindir.join(name));
        c.envs(self.env()).stdin(Stdio::null());
        c
    }

    /// Runs SQL (one or several statements) in `db`; returns psql's
    /// unaligned, tuples-only output.
    /// Statements run one by one (not in one transaction), as psql -f does.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let mut child = self
            .pg("psql")
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                db,
                "-f",
                "-",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(sql.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "psql -d {db} failed on:\n{sql}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .trim_end()
            .to_string()
    }

    /// Fills database `appdb` with something worth backing up: several
    /// tables (300,000 rows in one), a sequence, a view, pg_trgm from contrib,
    /// a non-superuser owner, a grant, a second tablespace and an identifier
    /// that needs quoting: `scripts/sample-data.sql`, shared with the demo.
    pub fn load_sample(&self) {
        let ts = self.scratch.owned_dir("tblspc");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/sample-data.sql");
        run(self
            .pg("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "postgres", "-v"])
            .arg(format!("tblspc={}", ts.display()))
            .arg("-f")
            .arg(script)
            .stdout(Stdio::null()));
    }

    pub fn server_log(&self) -> String {
        fs::read_to_string(self.scratch.path.join("server.log")).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn append(path: &Path, text: &str) {
    let mut f = fs::OpenOptions::new().append(true).open(path).unwrap();
    writeln!(f, "\n{text}").unwrap();
}

fn write_as_owner(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    if is_root() {
        let pg = nix::unistd::User::from_name("postgres").unwrap().unwrap();
        nix::unistd::chown(path, Some(pg.uid), Some(pg.gid)).unwrap();
    }
}

/// Path of one of our binaries.
pub fn bin(name: &str) -> PathBuf {
    let p = match name {
        "pgb-snapshot" => env!("CARGO_BIN_EXE_pgb-snapshot"),
        "pgb-wal" => env!("CARGO_BIN_EXE_pgb-wal"),
        "pgb-check-archive" => env!("CARGO_BIN_EXE_pgb-check-archive"),
        "pgb-fixperms" => env!("CARGO_BIN_EXE_pgb-fixperms"),
        "pgb-verify" => env!("CARGO_BIN_EXE_pgb-verify"),
        "pgb-encrypt" => env!("CARGO_BIN_EXE_pgb-encrypt"),
        "pgb-restore" => env!("CARGO_BIN_EXE_pgb-restore"),
        "pgb-prune" => env!("CARGO_BIN_EXE_pgb-prune"),
        "pgb-ship" => env!("CARGO_BIN_EXE_pgb-ship"),
        "pgb-list" => env!("CARGO_BIN_EXE_pgb-list"),
        other => panic!("unknown binary {other}"),
    };
    PathBuf::from(p)
}

/// The JSON records a tool printed on stdout; every line must be one.
/// Runs pgb-check-archive with `args`: its exit status (-1 when killed),
/// its records and its stderr.
pub fn run_check_archive(args: &[&dyn AsRef<OsStr>]) -> (i32, Vec<Value>, String) {
    let out = Command::new(bin("pgb-check-archive"))
        .args(args.iter().map(|a| a.as_ref()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        records(&out.stdout),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn records(stdout: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(stdout).expect("stdout is UTF-8");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "stdout ends without a newline: {text:?}"
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON record ({e}): {l}")))
        .collect()
}

/// Runs `cmd` with `recs` as JSON lines on stdin: its exit code (-1 when
/// killed), the records it printed and its stderr.
pub fn pipe(cmd: &mut Command, recs: &[Value]) -> (i32, Vec<Value>, String) {
    let (_, code, out, err) = pipe_pid(cmd, recs);
    (code, out, err)
}

/// [`pipe`], also returning the process id it ran as (to look for what it
/// may have left behind).
pub fn pipe_pid(cmd: &mut Command, recs: &[Value]) -> (u32, i32, Vec<Value>, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    for r in recs {
        writeln!(stdin, "{r}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    (
        pid,
        out.status.code().unwrap_or(-1),
        records(&out.stdout),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `pgb-snapshot --out REPO ARGS` against `c`, which must succeed: its records.
pub fn snapshot_records(c: &Cluster, repo: &Path, args: &[&str]) -> Vec<Value> {
    let out = c
        .tool("pgb-snapshot")
        .arg("--out")
        .arg(repo)
        .args(args)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    records(&out.stdout)
}

/// The temp directories that run `pid` of `tool` made (named
/// `TOOL.PID.*` in the temp dir).
pub fn temp_dirs(tool: &str, pid: u32) -> Vec<PathBuf> {
    let prefix = format!("{tool}.{pid}.");
    fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&prefix)
        })
        .collect()
}

/// The temp directories (throwaway clusters) that pgb-verify run `pid` made.
pub fn verify_temp_dirs(pid: u32) -> Vec<PathBuf> {
    temp_dirs("pgb-verify", pid)
}

/// A finished program's exit code (-1 when a signal ended it).
pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// A finished program's stderr, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// True while `pid` runs; a zombie does not count (the container's init
/// may never reap a daemonized postmaster).
pub fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_none_or(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Every file below `dir` (relative paths), sorted; the lock file excluded.
pub fn files_below(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = walk(dir)
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| p.strip_prefix(dir).unwrap().to_string_lossy().into_owned())
        .filter(|p| p != ".pgb.lock")
        .collect();
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                out.extend(walk(&p));
            }
            out.push(p);
        }
    }
    out
}

/// `sha256sum` and `b3sum` of a file, as the stock tools print them.
pub fn stock_sums(path: &Path) -> (String, String) {
    let first = |prog: &str| {
        let out = run(Command::new(prog).arg(path));
        String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    (first("sha256sum"), first("b3sum"))
}

/// `s` quoted for sh.
pub fn sh_quote(s: impl AsRef<OsStr>) -> String {
    format!("'{}'", s.as_ref().to_string_lossy().replace('\'', r"'\''"))
}

/// What a person sees: runs the shell command line `cmd` with its stdout
/// on a terminal (util-linux `script`), its stdin on that terminal unless
/// `cmd` redirects it, and its stderr in a file (so the terminal shows
/// stdout alone). Returns the exit code, the terminal's text (carriage
/// returns removed) and stderr.
pub fn on_terminal(env: &[(&str, String)], cmd: &str) -> (i32, String, String) {
    let err = tempfile::NamedTempFile::new().unwrap();
    let line = format!("{cmd} 2>{}", sh_quote(err.path()));
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("PGB_PG_BINDIR", all_bindirs())
        .env("NO_COLOR", "1")
        .env("PGB_NO_PROGRESS", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("script: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).replace('\r', ""),
        fs::read_to_string(err.path()).unwrap_or_default(),
    )
}
