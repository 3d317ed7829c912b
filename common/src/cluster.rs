//! Throwaway clusters for test restores: a temp dir owned by the postgres
//! user when run as root, its own socket directory, no TCP; stopped and
//! removed when dropped, and on SIGINT/SIGTERM/SIGHUP once
//! [`cleanup_on_signals`] is installed. A run killed outright leaves
//! `PREFIX.PID.*`; the next run removes those whose PID is gone.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};
use crate::pg;
use crate::term::warn;
use crate::unpack::Owner;

/// The user a throwaway cluster runs as: postgres when we are root.
pub fn owner() -> Option<nix::unistd::User> {
    if nix::unistd::geteuid().is_root() {
        nix::unistd::User::from_name("postgres").ok().flatten()
    } else {
        None
    }
}

/// [`owner`] as uid/gid.
pub fn owner_ids() -> Option<Owner> {
    owner().map(|u| Owner {
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
    })
}

/// A command run as the cluster's owner.
pub fn as_owner(program: impl AsRef<OsStr>) -> Command {
    match owner() {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", &u.name, "--"]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

fn bin(bindir: &Option<PathBuf>, name: &str) -> PathBuf {
    pg::program_path(bindir.as_deref(), name)
}

/// `pg_ctl stop -m immediate`, quietly.
fn stop(bindir: &Option<PathBuf>, data: &Path) {
    if !data.join("postmaster.pid").exists() {
        return;
    }
    let _ = as_owner(bin(bindir, "pg_ctl"))
        .arg("-D")
        .arg(data)
        .args(["-m", "immediate", "-w", "-t", "30", "stop"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// True when `pid` has exited: no such process, or a zombie (the
/// container's init may never reap it).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
    }
}

/// Live processes whose working directory is inside `dir`. A postmaster
/// changes into its data directory before it writes anything there (and
/// before postmaster.pid exists), and its children inherit that, so this
/// finds a server even while `pg_ctl start` is still bringing it up.
fn processes_in(dir: &Path) -> Vec<i32> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            if pid == me {
                return None;
            }
            let cwd = std::fs::read_link(e.path().join("cwd")).ok()?;
            let cwd = cwd.to_string_lossy();
            let cwd = cwd.strip_suffix(" (deleted)").unwrap_or(&cwd);
            (Path::new(cwd).starts_with(&dir) && !gone(pid)).then_some(pid)
        })
        .collect()
}

/// Stops the throwaway cluster in `dir` and removes the directory:
/// `pg_ctl stop -m immediate` first; then whatever still runs inside (a
/// postmaster caught while starting, whose postmaster.pid `pg_ctl` could
/// not yet use, or one that did not stop in time) is SIGKILLed and waited
/// for, and the directory removed, again until nothing reappears.
/// Returns whether the directory is gone.
pub fn remove_cluster_dir(dir: &Path, bindir: &Option<PathBuf>) -> bool {
    use nix::sys::signal::{kill, Signal};
    stop(bindir, &dir.join("data"));
    for _ in 0..10 {
        let pids = processes_in(dir);
        for &p in &pids {
            let _ = kill(nix::unistd::Pid::from_raw(p), Signal::SIGKILL);
        }
        let t0 = Instant::now();
        while !pids.iter().all(|&p| gone(p)) && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir_all(dir);
        if !dir.exists() && processes_in(dir).is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    !dir.exists()
}

/// Throwaway directories alive in this process, for the signal handler.
static LIVE: Mutex<Vec<(PathBuf, Option<PathBuf>)>> = Mutex::new(Vec::new());
/// Temp files alive in this process ([`TempFile`]), for the signal handler.
static LIVE_FILES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static SIGNALLED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: nix::libc::c_int) {
    SIGNALLED.store(sig, Ordering::SeqCst);
}

/// True once SIGINT, SIGTERM or SIGHUP arrived (with [`cleanup_on_signals`]
/// installed): the run is ending, and a check that failed meanwhile failed
/// because of it, so it must not be recorded as a verdict.
pub fn interrupted() -> bool {
    SIGNALLED.load(Ordering::SeqCst) != 0
}

/// On SIGINT, SIGTERM or SIGHUP: stop every live throwaway cluster, remove
/// its directory and exit with 128+signal. Call once, early.
pub fn cleanup_on_signals() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let act = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        let _ = unsafe { sigaction(s, &act) };
    }
    std::thread::spawn(|| loop {
        let sig = SIGNALLED.load(Ordering::SeqCst);
        if sig != 0 {
            let live = LIVE.lock().map(|l| l.clone()).unwrap_or_default();
            for (dir, bindir) in live {
                if remove_cluster_dir(&dir, &bindir) {
                    warn(format!("interrupted: removed {}", dir.display()));
                } else {
                    warn(format!("interrupted: could not remove {}", dir.display()));
                }
            }
            let files = LIVE_FILES.lock().map(|l| l.clone()).unwrap_or_default();
            for f in files {
                if std::fs::remove_file(&f).is_ok() {
                    warn(format!("interrupted: removed {}", f.display()));
                }
            }
            std::process::exit(128 + sig);
        }
        std::thread::sleep(Duration::from_millis(50));
    });
}

/// Removes what killed runs left behind (`PREFIX.PID.*` whose PID is gone):
/// throwaway cluster directories (their servers stopped) and temp files.
pub fn clean_stale(prefix: &str, bindir: &Option<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        let pid: i32 = rest
            .split('.')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let alive =
            pid > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
        if alive {
            continue;
        }
        let path = e.path();
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && remove_cluster_dir(&path, bindir) {
            warn(format!(
                "removed a throwaway cluster left by a killed run: {}",
                path.display()
            ));
        } else if !is_dir && std::fs::remove_file(&path).is_ok() {
            warn(format!(
                "removed a temp file left by a killed run: {}",
                path.display()
            ));
        }
    }
}

pub struct TempCluster {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub port: u16,
    bindir: Option<PathBuf>,
}

impl TempCluster {
    /// A new temp directory `PREFIX.PID.N` (owned by the cluster owner)
    /// with a socket directory; `data` does not exist yet.
    pub fn create(prefix: &str, bindir: Option<PathBuf>) -> Result<TempCluster> {
        clean_stale(prefix, &bindir);
        let dir = std::env::temp_dir().join(format!("{prefix}{}.{}", std::process::id(), nanos()));
        std::fs::create_dir(&dir).ctx("create", &dir)?;
        let c = TempCluster {
            socket: dir.join("sock"),
            dir,
            port: 5432,
            bindir,
        };
        if let Ok(mut l) = LIVE.lock() {
            l.push((c.dir.clone(), c.bindir.clone()));
        }
        if let Some(o) = owner_ids() {
            o.apply(&c.dir)?;
        }
        std::fs::create_dir(&c.socket).ctx("create", &c.socket)?;
        if let Some(o) = owner_ids() {
            o.apply(&c.socket)?;
        }
        Ok(c)
    }

    /// initdb and start: an empty cluster.
    pub fn start(prefix: &str, bindir: Option<PathBuf>) -> Result<TempCluster> {
        let c = TempCluster::create(prefix, bindir)?;
        let data = c.data();
        pg::output(
            {
                let mut cmd = as_owner(bin(&c.bindir, "initdb"));
                cmd.args([
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
                .stdin(Stdio::null());
                cmd
            },
            "make a throwaway cluster: initdb",
        )?;
        let conf = c
            .settings()
            .into_iter()
            .chain([
                ("full_page_writes".to_string(), "off".to_string()),
                ("max_wal_size".to_string(), "'4GB'".to_string()),
            ])
            .map(|(k, v)| format!("{k} = {v}\n"))
            .collect::<String>();
        {
            use std::io::Write;
            let p = data.join("postgresql.conf");
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&p)
                .ctx("open", &p)?;
            f.write_all(format!("\n{conf}").as_bytes())
                .ctx("write", &p)?;
        }
        c.pg_start(Duration::from_secs(120))?;
        Ok(c)
    }

    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Settings that keep the cluster to itself: its own socket, no TCP,
    /// no archiving, no fsync, and dynamic shared memory in files under the
    /// data directory (not /dev/shm), so that a postmaster killed hard
    /// leaves nothing behind once the directory is removed.
    pub fn settings(&self) -> Vec<(String, String)> {
        [
            ("listen_addresses", "''".to_string()),
            (
                "unix_socket_directories",
                crate::physical::conf_quote(&self.socket.display().to_string()),
            ),
            ("port", self.port.to_string()),
            ("fsync", "off".into()),
            ("synchronous_commit", "off".into()),
            ("archive_mode", "off".into()),
            ("logging_collector", "off".into()),
            ("dynamic_shared_memory_type", "mmap".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// `pg_ctl start -w` on the data directory, logging to `server.log`.
    pub fn pg_start(&self, timeout: Duration) -> Result<()> {
        let mut cmd = as_owner(bin(&self.bindir, "pg_ctl"));
        cmd.arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", &timeout.as_secs().max(1).to_string(), "start"])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        pg::output(cmd, "start the throwaway cluster")
            .map_err(|e| Error::msg(format!("{e}\nserver log:\n{}", self.log_tail(20))))?;
        Ok(())
    }

    /// Connection flags for this cluster.
    pub fn conn_args(&self) -> pg::ConnArgs {
        pg::ConnArgs {
            host: Some(self.socket.display().to_string()),
            port: Some(self.port.to_string()),
            username: Some("postgres".into()),
            pg_bindir: self.bindir.clone(),
        }
    }

    /// Polls until the server accepts connections and has left recovery
    /// (promoted), or the timeout passes.
    pub fn wait_promoted(&self, timeout: Duration) -> Result<()> {
        let conn = pg::Conn::new(&self.conn_args(), Some("postgres"))?;
        let t0 = Instant::now();
        loop {
            let mut c = conn.command("psql", true);
            c.args(["-X", "-q", "-A", "-t", "-c", "SELECT pg_is_in_recovery()"])
                .stdin(Stdio::null());
            if let Ok(out) = pg::output(c, "ask whether recovery ended") {
                if String::from_utf8_lossy(&out).trim() == "f" {
                    return Ok(());
                }
            }
            if !self.data().join("postmaster.pid").exists() {
                return Err(Error::msg(format!(
                    "the restored server stopped during recovery; server log:\n{}",
                    self.log_tail(20)
                )));
            }
            if t0.elapsed() > timeout {
                return Err(Error::msg(format!(
                    "recovery did not end within {} s; server log:\n{}",
                    timeout.as_secs(),
                    self.log_tail(20)
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// The last `n` lines of the server log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// A scratch file location inside the cluster's temp directory.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        remove_cluster_dir(&self.dir, &self.bindir);
        if let Ok(mut l) = LIVE.lock() {
            l.retain(|(d, _)| d != &self.dir);
        }
    }
}

/// A temp file `PREFIX.PID.N` in the temp directory (not created here):
/// removed when dropped, on SIGINT/SIGTERM/SIGHUP once
/// [`cleanup_on_signals`] is installed, and by the next run with the same
/// prefix after a kill.
pub struct TempFile {
    pub path: PathBuf,
}

impl TempFile {
    pub fn new(prefix: &str) -> TempFile {
        clean_stale(prefix, &None);
        let path = std::env::temp_dir().join(format!("{prefix}{}.{}", std::process::id(), nanos()));
        if let Ok(mut l) = LIVE_FILES.lock() {
            l.push(path.clone());
        }
        TempFile { path }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Ok(mut l) = LIVE_FILES.lock() {
            l.retain(|p| p != &self.path);
        }
    }
}

fn nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}
