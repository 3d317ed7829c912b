//! Throwaway clusters for test restores: initdb in a temp dir (as the
//! postgres user when run as root), its own socket directory, no TCP;
//! stopped and removed when dropped. A run killed before it could clean up
//! leaves `pgb-verify.PID.*`; the next run removes those whose PID is gone.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use pgb_common::error::{Error, IoContext, Result};
use pgb_common::pg;
use pgb_common::term::warn;

pub struct TempCluster {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub port: u16,
    bindir: Option<PathBuf>,
}

const PREFIX: &str = "pgb-verify.";

fn owner() -> Option<nix::unistd::User> {
    if nix::unistd::geteuid().is_root() {
        nix::unistd::User::from_name("postgres").ok().flatten()
    } else {
        None
    }
}

/// A command run as the cluster's owner.
fn as_owner(program: PathBuf) -> Command {
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

/// Removes what killed runs left behind.
pub fn clean_stale(bindir: &Option<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
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
        let dir = e.path();
        if dir.join("data/postmaster.pid").exists() {
            let _ = as_owner(bin(bindir, "pg_ctl"))
                .arg("-D")
                .arg(dir.join("data"))
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if std::fs::remove_dir_all(&dir).is_ok() {
            warn(format!(
                "removed a throwaway cluster left by a killed run: {}",
                dir.display()
            ));
        }
    }
}

impl TempCluster {
    pub fn start(bindir: Option<PathBuf>) -> Result<TempCluster> {
        clean_stale(&bindir);
        let dir = std::env::temp_dir().join(format!("{PREFIX}{}.{}", std::process::id(), nanos()));
        std::fs::create_dir(&dir).ctx("create", &dir)?;
        let c = TempCluster {
            socket: dir.join("sock"),
            dir,
            port: 5432,
            bindir,
        };
        if let Some(u) = owner() {
            nix::unistd::chown(&c.dir, Some(u.uid), Some(u.gid))
                .map_err(|e| Error::io("chown", &c.dir, e.into()))?;
        }
        let data = c.dir.join("data");
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
        pg::output(
            {
                let mut cmd = as_owner("mkdir".into());
                cmd.arg(&c.socket).stdin(Stdio::null());
                cmd
            },
            "make a throwaway cluster: socket directory",
        )?;
        let conf = format!(
            "\nlisten_addresses = ''\nunix_socket_directories = '{}'\nport = {}\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_wal_size = 4GB\n",
            c.socket.display(),
            c.port
        );
        {
            use std::io::Write;
            let p = data.join("postgresql.conf");
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&p)
                .ctx("open", &p)?;
            f.write_all(conf.as_bytes()).ctx("write", &p)?;
        }
        let mut cmd = as_owner(bin(&c.bindir, "pg_ctl"));
        cmd.arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(c.dir.join("server.log"))
            .args(["-w", "-t", "120", "start"])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        pg::output(cmd, "start the throwaway cluster")?;
        Ok(c)
    }

    /// A scratch file location inside the cluster's temp directory.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        let _ = as_owner(bin(&self.bindir, "pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}
