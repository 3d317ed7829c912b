//! Real servers for destination tests: an OpenSSH sshd and two independent
//! S3-compatible servers (moto_server and s3s-fs), each on a free loopback
//! port, with throwaway keys and credentials, stopped when dropped.

#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::run;

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    let start = Instant::now();
    loop {
        // (A connection to itself, which TCP allows when the port asked
        // for is free and picked as the local one, is nobody listening.)
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
            if s.local_addr().ok() != s.peer_addr().ok() {
                return;
            }
        }
        if let Ok(Some(st)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("{what} exited before listening ({st}): {err}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what} did not listen on port {port} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The program's path, or a panic saying how to install it.
fn need(program: &str, install: &str) -> PathBuf {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .unwrap();
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        !p.is_empty(),
        "{program} not found: {install} (scripts/install-deps)"
    );
    PathBuf::from(p)
}

/// sshd on a loopback port, accepting one throwaway client key for the
/// running user, with a throwaway host key the client trusts through its own
/// known_hosts file.
pub struct Sshd {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    pub user: String,
}

impl Sshd {
    pub fn start() -> Sshd {
        let sshd = if Path::new("/usr/sbin/sshd").exists() {
            PathBuf::from("/usr/sbin/sshd")
        } else {
            need("sshd", "apt-get install openssh-server")
        };
        need("ssh", "apt-get install openssh-client");
        // The privilege separation directory sshd insists on.
        let _ = fs::create_dir_all("/run/sshd");
        let dir = tempfile::Builder::new()
            .prefix("pgb-sshd.")
            .tempdir()
            .unwrap();
        let d = dir.path();
        for key in ["host_key", "client_key"] {
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "pgb-test", "-f"])
                .arg(d.join(key)));
        }
        fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        let port = free_port();
        let host_pub = fs::read_to_string(d.join("host_key.pub")).unwrap();
        let mut parts = host_pub.split_whitespace();
        let (kt, kb) = (parts.next().unwrap(), parts.next().unwrap());
        fs::write(
            d.join("known_hosts"),
            format!("[127.0.0.1]:{port} {kt} {kb}\n"),
        )
        .unwrap();
        let config = format!(
            "ListenAddress 127.0.0.1\n\
             HostKey {d}/host_key\n\
             PidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\n\
             PermitRootLogin prohibit-password\n\
             StrictModes no\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             UsePAM no\n\
             MaxStartups 100\n\
             MaxSessions 100\n\
             Subsystem sftp internal-sftp\n",
            d = d.display()
        );
        fs::write(d.join("sshd_config"), config).unwrap();
        let mut child = Command::new(sshd)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(d.join("sshd_config"))
            .arg("-p")
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sshd");
        wait_for_port(port, &mut child, "sshd");
        let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .unwrap()
            .unwrap()
            .name;
        Sshd {
            port,
            dir,
            child: Some(child),
            user,
        }
    }

    /// `PGB_SSH_OPTIONS` for the client: the throwaway key and known_hosts.
    pub fn client_options(&self) -> String {
        let d = self.dir.path().display();
        format!(
            "-i {d}/client_key -o IdentitiesOnly=yes -o UserKnownHostsFile={d}/known_hosts \
             -o StrictHostKeyChecking=yes -o LogLevel=ERROR"
        )
    }

    /// `ssh://user@127.0.0.1:PORT/PATH`.
    pub fn url(&self, path: &Path) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            path.display()
        )
    }

    /// Stops the server (a destination that is down).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Which S3-compatible server: moto_server (Python, in memory, accepts
/// unsigned requests) or s3s-fs (Rust, a directory on disk served as S3,
/// SigV4-signed requests only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum S3Kind {
    Moto,
    S3sFs,
}

/// An S3-compatible server on a loopback port, with one bucket.
pub struct S3 {
    pub port: u16,
    pub bucket: String,
    pub kind: S3Kind,
    /// s3s-fs's root: the bucket is the directory root/BUCKET, an object
    /// the file root/BUCKET/KEY (its own temp, metadata and multipart files
    /// live directly in root).
    root: Option<tempfile::TempDir>,
    child: Option<Child>,
}

/// The secret key the tests hand the tools: it must never show up in their
/// output.
pub const S3_SECRET: &str = "pgbTestSecret0123456789SHOULDnotLEAK";
const S3_KEY_ID: &str = "pgbtestkeyid";

/// s3s-fs's path: on PATH or where scripts/install-deps caches it.
fn s3s_fs() -> PathBuf {
    let cached = Path::new("/var/cache/pgb/s3s-fs/bin/s3s-fs");
    if cached.is_file() {
        return cached.to_path_buf();
    }
    need(
        "s3s-fs",
        "cargo install s3s-fs --version 0.14.1 --features binary --locked --root /var/cache/pgb/s3s-fs",
    )
}

impl S3 {
    /// moto_server.
    pub fn start() -> S3 {
        S3::start_kind(S3Kind::Moto)
    }

    /// s3s-fs.
    pub fn start_s3s() -> S3 {
        S3::start_kind(S3Kind::S3sFs)
    }

    pub fn start_kind(kind: S3Kind) -> S3 {
        match kind {
            S3Kind::Moto => S3::start_moto(),
            S3Kind::S3sFs => {
                let root = tempfile::Builder::new()
                    .prefix("pgb-s3s.")
                    .tempdir()
                    .unwrap();
                let mut s3 = S3 {
                    port: free_port(),
                    bucket: "pgb-test".into(),
                    kind,
                    root: Some(root),
                    child: None,
                };
                // A bucket is a directory of the root.
                fs::create_dir(s3.bucket_dir()).unwrap();
                s3.spawn_s3s();
                s3
            }
        }
    }

    fn spawn_s3s(&mut self) {
        let root = self.root.as_ref().expect("s3s-fs root").path();
        let mut child = Command::new(s3s_fs())
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", S3_KEY_ID, "--secret-key", S3_SECRET])
            .arg(root)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start s3s-fs");
        wait_for_port(self.port, &mut child, "s3s-fs");
        // Its log is drained, never filling the pipe.
        if let Some(mut e) = child.stderr.take() {
            std::thread::spawn(move || std::io::copy(&mut e, &mut std::io::sink()));
        }
        self.child = Some(child);
    }

    /// The directory holding the bucket's objects (s3s-fs only).
    pub fn bucket_dir(&self) -> PathBuf {
        self.root
            .as_ref()
            .expect("only s3s-fs keeps its objects in a directory")
            .path()
            .join(&self.bucket)
    }

    fn start_moto() -> S3 {
        let moto = need("moto_server", "pip install 'moto[server]'");
        let port = free_port();
        let mut child = Command::new(moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        wait_for_port(port, &mut child, "moto_server");
        let s3 = S3 {
            port,
            bucket: "pgb-test".into(),
            kind: S3Kind::Moto,
            root: None,
            child: Some(child),
        };
        let (status, body) = s3.http("PUT", &format!("/{}", s3.bucket), b"");
        assert_eq!(
            status,
            200,
            "create bucket: {}",
            String::from_utf8_lossy(&body)
        );
        // Objects the tools put are owned by their (signed) account; let the
        // harness's unsigned requests read them.
        let policy = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::{}/*"}}]}}"#,
            s3.bucket
        );
        let (status, body) = s3.http("PUT", &format!("/{}?policy", s3.bucket), policy.as_bytes());
        assert!(
            status < 300,
            "bucket policy: {}",
            String::from_utf8_lossy(&body)
        );
        s3
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment the tools read for S3 destinations.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", S3_KEY_ID.into()),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET.into()),
        ]
    }

    fn try_http(&self, method: &str, path: &str, body: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        )?;
        s.write_all(body)?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp)?;
        Ok(resp)
    }

    /// One plain HTTP request (moto accepts unsigned ones); status and body.
    pub fn http(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        assert_eq!(
            self.kind,
            S3Kind::Moto,
            "s3s-fs takes signed requests only: read its directory"
        );
        // A server just started may reset the first connections on a busy
        // machine: a few tries before the harness gives up.
        let mut tries = 0;
        let resp = loop {
            match self.try_http(method, path, body) {
                Ok(r) => break r,
                Err(e) if tries < 20 => {
                    tries += 1;
                    eprintln!("moto_server: {method} {path}: {e}; trying again");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("moto_server: {method} {path}: {e}"),
            }
        };
        let split = resp
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("an HTTP response");
        let head = String::from_utf8_lossy(&resp[..split]).to_string();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut body = resp[split + 4..].to_vec();
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            body = dechunk(&body);
        }
        (status, body)
    }

    /// The object's bytes, or None when absent.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        if self.kind == S3Kind::S3sFs {
            let p = self.bucket_dir().join(key);
            return match fs::read(&p) {
                Ok(b) => Some(b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => panic!("read {}: {e}", p.display()),
            };
        }
        let (status, body) = self.http("GET", &format!("/{}/{key}", self.bucket), b"");
        match status {
            200 => Some(body),
            404 => None,
            s => panic!("GET {key}: HTTP {s}: {}", String::from_utf8_lossy(&body)),
        }
    }

    /// Puts an object directly (to plant a conflicting one).
    pub fn put(&self, key: &str, body: &[u8]) {
        if self.kind == S3Kind::S3sFs {
            // As s3s-fs itself writes one: a temp file in its root, renamed.
            let p = self.bucket_dir().join(key);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            let tmp = self.root.as_ref().unwrap().path().join(".pgb-test-plant");
            fs::write(&tmp, body).unwrap();
            fs::rename(&tmp, &p).unwrap();
            return;
        }
        let (status, b) = self.http("PUT", &format!("/{}/{key}", self.bucket), body);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&b));
    }

    /// Keys in the bucket (ListObjectsV2, first page; every file beneath
    /// the bucket's directory for s3s-fs).
    pub fn keys(&self) -> Vec<String> {
        if self.kind == S3Kind::S3sFs {
            fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
                for e in fs::read_dir(dir).unwrap().flatten() {
                    let p = e.path();
                    if e.file_type().unwrap().is_dir() {
                        walk(&p, base, out);
                    } else {
                        let rel = p.strip_prefix(base).unwrap();
                        out.push(rel.to_string_lossy().into_owned());
                    }
                }
            }
            let mut out = Vec::new();
            walk(&self.bucket_dir(), &self.bucket_dir(), &mut out);
            out.sort();
            return out;
        }
        let (status, body) = self.http("GET", &format!("/{}?list-type=2", self.bucket), b"");
        assert_eq!(status, 200);
        let text = String::from_utf8_lossy(&body);
        text.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_string)
            .collect()
    }

    /// Uploads begun but neither completed nor aborted (s3s-fs keeps one
    /// `.upload-ID.json` in its root for each).
    pub fn pending_uploads(&self) -> usize {
        if self.kind == S3Kind::S3sFs {
            return fs::read_dir(self.root.as_ref().unwrap().path())
                .unwrap()
                .flatten()
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.starts_with(".upload-") && n.ends_with(".json")
                })
                .count();
        }
        let (_, body) = self.http("GET", &format!("/{}?uploads", self.bucket), b"");
        String::from_utf8_lossy(&body).matches("<UploadId>").count()
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(i) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..i]).trim(), 16).unwrap_or(0);
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + n]);
        b = &b[i + 2 + n + 2..];
    }
}

impl S3 {
    /// Stops the server (a destination that is down); s3s-fs's objects stay
    /// on disk for `restart`.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback TCP proxy in front of a server, to fail it on demand: it
/// passes everything until `cut_after(n)` bytes from clients have gone
/// through, then cuts every open connection mid-stream (the server gone
/// away) and answers every new request with `503 Service Unavailable` (a
/// server returning errors) until `heal()`.
pub struct Proxy {
    pub port: u16,
    state: std::sync::Arc<ProxyState>,
}

struct ProxyState {
    upstream: u16,
    /// Client bytes allowed through before the cut; u64::MAX for no cut.
    limit: std::sync::atomic::AtomicU64,
    sent: std::sync::atomic::AtomicU64,
    cut: std::sync::atomic::AtomicBool,
    stop: std::sync::atomic::AtomicBool,
    conns: std::sync::Mutex<Vec<TcpStream>>,
}

impl ProxyState {
    fn cut_all(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Proxy {
    pub fn start(upstream: u16) -> Proxy {
        use std::sync::atomic::Ordering::SeqCst;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = std::sync::Arc::new(ProxyState {
            upstream,
            limit: u64::MAX.into(),
            sent: 0.into(),
            cut: false.into(),
            stop: false.into(),
            conns: Default::default(),
        });
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stop.load(SeqCst) {
                    return;
                }
                let Ok(client) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || {
                    if st.cut.load(SeqCst) {
                        answer_503(client);
                    } else {
                        forward(client, &st);
                    }
                });
            }
        });
        Proxy { port, state }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Cuts once `n` more bytes from clients have gone through.
    pub fn cut_after(&self, n: u64) {
        use std::sync::atomic::Ordering::SeqCst;
        self.state.sent.store(0, SeqCst);
        self.state.limit.store(n, SeqCst);
    }

    /// Whether the cut happened.
    pub fn was_cut(&self) -> bool {
        self.state.cut.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Passes everything again.
    pub fn heal(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        self.state.limit.store(u64::MAX, SeqCst);
        self.state.cut.store(false, SeqCst);
    }
}

/// Reads a request's head and answers 503, closing the connection.
fn answer_503(mut client: TcpStream) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match client.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let _ = client.write_all(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    let _ = client.shutdown(std::net::Shutdown::Both);
}

/// Pumps a connection both ways, counting the client's bytes against the
/// limit; the byte past it cuts everything.
fn forward(client: TcpStream, st: &ProxyState) {
    use std::sync::atomic::Ordering::SeqCst;
    let Ok(server) = TcpStream::connect(("127.0.0.1", st.upstream)) else {
        return;
    };
    {
        let mut conns = st.conns.lock().unwrap();
        conns.push(client.try_clone().unwrap());
        conns.push(server.try_clone().unwrap());
    }
    let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let back = std::thread::spawn(move || {
        let (mut s_in, mut c_out) = (server, client);
        let _ = std::io::copy(&mut s_in, &mut c_out);
        let _ = c_out.shutdown(std::net::Shutdown::Write);
    });
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match c_in.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = s_out.shutdown(std::net::Shutdown::Write);
                break;
            }
            Ok(n) => n as u64,
        };
        let before = st.sent.fetch_add(n, SeqCst);
        let limit = st.limit.load(SeqCst);
        if before + n > limit {
            let pass = limit.saturating_sub(before) as usize;
            let _ = s_out.write_all(&buf[..pass]);
            st.cut_all();
            break;
        }
        if s_out.write_all(&buf[..n as usize]).is_err() {
            break;
        }
    }
    let _ = back.join();
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state
            .stop
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.state.cut_all();
        // Wakes the accepting thread, which then ends.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}
