//! Copies to S3-compatible object storage through `object_store`, on one
//! small tokio runtime per process; the connection (its HTTP client and
//! connection pool) of each bucket is made once and reused, so a tool that
//! touches many objects pays the TCP and TLS set-up once. Small files are
//! one PUT; larger ones a multipart upload that is completed only once
//! every part is in (aborted on any failure), so the key never names a
//! partial object. Verified by reading the object back and hashing it.
//!
//! Never replacing a different object: a HEAD first (an object already
//! there is compared, never overwritten), then a PUT with `If-None-Match:
//! *`, which servers with conditional writes (AWS S3 since 2024, MinIO,
//! R2, moto) refuse when the key appeared meanwhile. A server that ignores
//! the header leaves the window between the HEAD and the PUT open to a
//! concurrent writer of the same key (documented check-then-write). A
//! multipart upload (above 16 MiB) is check-then-write.
//!
//! Credentials come only from the environment (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`) or, when those are unset,
//! from the shared files of `AWS_PROFILE` (or `default`):
//! `~/.aws/credentials` (`AWS_SHARED_CREDENTIALS_FILE`) and `~/.aws/config`
//! (`AWS_CONFIG_FILE`, for `region` and `endpoint_url`); they never appear
//! in arguments, records or messages.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload, WriteMultipart};

use super::{check_digests, s3_key, Copied, Listed, S3Target as Target};
use crate::digest::{Digests, Hasher};
use crate::error::{Error, IoContext, Result};

/// Files up to this size go up in one PUT; above, in parts of this size.
const PART: usize = 16 << 20;

struct Conn {
    rt: Arc<tokio::runtime::Runtime>,
    store: Arc<dyn ObjectStore>,
}

fn url(t: &Target, rel: &str) -> String {
    format!("s3://{}/{}", t.bucket, s3_key(t, rel))
}

/// An object_store error as a message without anything secret (it names the
/// bucket, key and HTTP status; credentials are sent in headers only).
fn s3_err(op: &str, url: &str, e: object_store::Error) -> Error {
    Error::msg(format!(
        "{op}: {url}: {}",
        explain(&one_line(&e.to_string()))
    ))
}

/// The cause of an S3 failure as a person reads it: a server's XML error
/// body (`<Error><Code>NoSuchBucket</Code>...`) becomes its code and
/// message, with the HTTP status; anything else is kept as it is.
fn explain(text: &str) -> String {
    // No credentials in the environment or ~/.aws: object_store then asks
    // the EC2 instance metadata service, whose failure says nothing useful.
    if text.contains("169.254.169.254") {
        return "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or \
                AWS_PROFILE with ~/.aws/credentials (the EC2 instance metadata service, \
                tried last, did not answer)"
            .to_string();
    }
    let Some(code) = xml_tag(text, "Code") else {
        return text.to_string();
    };
    let status = text
        .split_once("status code: ")
        .map(|(_, rest)| rest.split(':').next().unwrap_or(rest).trim())
        .map(|s| format!(", HTTP {s}"))
        .unwrap_or_default();
    if code == "NoSuchBucket" {
        if let Some(bucket) = xml_tag(text, "BucketName") {
            return format!("bucket {bucket} does not exist (S3 {code}{status})");
        }
    }
    match xml_tag(text, "Message") {
        Some(msg) => format!("S3 error {code}: {msg}{status}"),
        None => format!("S3 error {code}{status}"),
    }
}

/// The text of the first `<tag>...</tag>` in `s`.
fn xml_tag<'a>(s: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = s.find(&open)? + open.len();
    let len = s[start..].find(&format!("</{tag}>"))?;
    Some(s[start..start + len].trim())
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The process's I/O runtime: two worker threads drive every bucket's
/// requests; callers block on them from any thread.
fn runtime() -> Result<Arc<tokio::runtime::Runtime>> {
    static RT: OnceLock<Arc<tokio::runtime::Runtime>> = OnceLock::new();
    if let Some(rt) = RT.get() {
        return Ok(rt.clone());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("pgb-s3")
        .enable_all()
        .build()
        .map_err(|e| Error::msg(format!("s3: start the I/O runtime: {e}")))?;
    Ok(RT.get_or_init(|| Arc::new(rt)).clone())
}

/// `key = value` settings of `[section]` in an INI-style AWS file.
fn ini_section(path: &Path, section: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let Ok(text) = std::fs::read_to_string(path) else {
        return out;
    };
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(h) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = h.trim() == section;
            continue;
        }
        if inside {
            if let Some((k, v)) = line.split_once('=') {
                out.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
    }
    out
}

/// Settings of the shared AWS files for `AWS_PROFILE` (or `default`):
/// credentials, region and endpoint_url.
fn profile() -> HashMap<String, String> {
    let name = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let file = |var: &str, rel: &str| {
        std::env::var_os(var)
            .map(std::path::PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(rel)))
    };
    let mut out = HashMap::new();
    if let Some(c) = file("AWS_CONFIG_FILE", ".aws/config") {
        let section = if name == "default" {
            "default".to_string()
        } else {
            format!("profile {name}")
        };
        out.extend(ini_section(&c, &section));
    }
    if let Some(c) = file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials") {
        out.extend(ini_section(&c, &name));
    }
    out
}

fn connect(t: &Target) -> Result<Conn> {
    static CONNS: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
    let rt = runtime()?;
    let prof = profile();
    let endpoint = t
        .endpoint
        .clone()
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
        .or_else(|| prof.get("endpoint_url").cloned());
    let region = t
        .region
        .clone()
        .or_else(|| std::env::var("AWS_REGION").ok())
        .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
        .or_else(|| prof.get("region").cloned());
    let id = format!("{}\0{endpoint:?}\0{region:?}", t.bucket);
    let conns = CONNS.get_or_init(Default::default);
    if let Some(store) = conns.lock().expect("s3 connections").get(&id) {
        return Ok(Conn {
            rt,
            store: store.clone(),
        });
    }
    let mut b = AmazonS3Builder::from_env().with_bucket_name(&t.bucket);
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        if let (Some(k), Some(s)) = (
            prof.get("aws_access_key_id"),
            prof.get("aws_secret_access_key"),
        ) {
            b = b.with_access_key_id(k).with_secret_access_key(s);
            if let Some(tok) = prof.get("aws_session_token") {
                b = b.with_token(tok);
            }
        }
    }
    if let Some(e) = &endpoint {
        b = b.with_endpoint(e);
        if let Some(rest) = e.strip_prefix("http://") {
            let host = rest.split(['/', ':']).next().unwrap_or_default();
            let loopback = host == "localhost"
                || host == "[::1]"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|a| a.is_loopback());
            if loopback || std::env::var_os("PGB_S3_ALLOW_HTTP").is_some() {
                b = b.with_allow_http(true);
            }
        }
    }
    if let Some(r) = region {
        b = b.with_region(r);
    }
    let store: Arc<dyn ObjectStore> = Arc::new(
        b.build()
            .map_err(|e| s3_err("s3: configure", &format!("s3://{}", t.bucket), e))?,
    );
    conns
        .lock()
        .expect("s3 connections")
        .insert(id, store.clone());
    Ok(Conn { rt, store })
}

fn key(t: &Target, rel: &str) -> Key {
    Key::from(s3_key(t, rel))
}

/// Hashes the object as stored.
fn read_back(c: &Conn, k: &Key, u: &str) -> Result<Digests> {
    c.rt.block_on(async {
        let r = c
            .store
            .get(k)
            .await
            .map_err(|e| s3_err("read back", u, e))?;
        let mut s = r.into_stream();
        let mut h = Hasher::new();
        while let Some(chunk) = s.next().await {
            let chunk = chunk.map_err(|e| s3_err("read back", u, e))?;
            h.update(&chunk);
        }
        Ok(h.finish())
    })
}

fn head_size(c: &Conn, k: &Key, u: &str) -> Result<Option<u64>> {
    match c.rt.block_on(c.store.head(k)) {
        Ok(m) => Ok(Some(m.size)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(s3_err("check", u, e)),
    }
}

pub(super) fn put_file(
    t: &Target,
    src: &Path,
    rel: &str,
    expect: &Digests,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Copied> {
    let u = url(t, rel);
    let c = connect(t)?;
    let k = key(t, rel);
    if let Some(size) = head_size(&c, &k, &u)? {
        return compare_existing(&c, &k, &u, size, expect);
    }
    let mut f = std::fs::File::open(src).ctx("open", src)?;
    let sent = if expect.size <= PART as u64 {
        let mut buf = Vec::with_capacity(expect.size as usize);
        f.read_to_end(&mut buf).ctx("read", src)?;
        let n = buf.len() as u64;
        if n == expect.size {
            if let Some(existed) = put_new(&c, &k, &u, buf)? {
                return compare_existing(&c, &k, &u, existed, expect);
            }
            progress(n);
        }
        n
    } else {
        c.rt.block_on(async {
            let up = c
                .store
                .put_multipart(&k)
                .await
                .map_err(|e| s3_err("copy", &u, e))?;
            let mut w = WriteMultipart::new_with_chunk_size(up, PART);
            let mut buf = vec![0u8; PART];
            let mut sent = 0u64;
            loop {
                let n = match crate::fs::read_full(&mut f, &mut buf) {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = w.abort().await;
                        return Err(Error::io("read", src, e));
                    }
                };
                if n == 0 {
                    break;
                }
                if let Err(e) = w.wait_for_capacity(2).await {
                    let _ = w.abort().await;
                    return Err(s3_err("copy", &u, e));
                }
                w.write(&buf[..n]);
                sent += n as u64;
                progress(n as u64);
            }
            if sent != expect.size {
                let _ = w.abort().await;
                return Ok(sent);
            }
            w.finish().await.map_err(|e| s3_err("copy", &u, e))?;
            Ok(sent)
        })?
    };
    if sent != expect.size {
        return Err(Error::msg(format!(
            "copy: {}: {sent} bytes read where the record says {}: the source changed",
            src.display(),
            expect.size
        )));
    }
    let got = read_back(&c, &k, &u)?;
    check_digests(&u, &got, expect, false)?;
    Ok(Copied {
        existed: false,
        verified: "readback",
    })
}

/// The object already there: the same bytes are a copy done, others an
/// error that keeps them.
fn compare_existing(c: &Conn, k: &Key, u: &str, size: u64, expect: &Digests) -> Result<Copied> {
    if size == expect.size {
        let got = read_back(c, k, u)?;
        if check_digests(u, &got, expect, false).is_ok() {
            return Ok(Copied {
                existed: true,
                verified: "readback",
            });
        }
    }
    Err(Error::msg(format!(
        "copy: {u}: exists with different content; kept, not overwritten"
    )))
}

/// One PUT that creates `k` only when absent (`If-None-Match: *`). Returns
/// the size of the object found instead when the server refused because
/// one appeared since the HEAD.
fn put_new(c: &Conn, k: &Key, u: &str, bytes: Vec<u8>) -> Result<Option<u64>> {
    let opts = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    match c
        .rt
        .block_on(c.store.put_opts(k, PutPayload::from(bytes), opts))
    {
        Ok(_) => Ok(None),
        Err(e) => {
            // moto answers 403 rather than 412 to a refused conditional
            // write: whatever the error, an object now under the key is
            // compared, never overwritten.
            if let Ok(Some(size)) = head_size(c, k, u) {
                return Ok(Some(size));
            }
            Err(s3_err("copy", u, e))
        }
    }
}

/// Lists the objects directly in `dir` (no deeper) whose names start with
/// `start`: a listing that starts after the key just before them, and
/// stops at the first key past them.
pub(super) fn list(t: &Target, dir: &str, start: &str) -> Result<Vec<Listed>> {
    let base = match (t.prefix.is_empty(), dir.is_empty()) {
        (true, true) => String::new(),
        (false, true) => t.prefix.clone(),
        (_, false) => s3_key(t, dir),
    };
    let u = if base.is_empty() {
        format!("s3://{}", t.bucket)
    } else {
        format!("s3://{}/{base}", t.bucket)
    };
    let c = connect(t)?;
    let pre = (!base.is_empty()).then(|| Key::from(base.as_str()));
    let dir_key = if base.is_empty() {
        String::new()
    } else {
        format!("{base}/")
    };
    let want = format!("{dir_key}{start}");
    c.rt.block_on(async {
        let mut s = if start.is_empty() {
            c.store.list(pre.as_ref())
        } else {
            // Strictly after the key one character shorter: every key that
            // starts with `want` comes after it.
            let mut off = want.clone();
            off.pop();
            c.store
                .list_with_offset(pre.as_ref(), &Key::from(off.as_str()))
        };
        let mut out = Vec::new();
        while let Some(m) = s.next().await {
            let m = m.map_err(|e| s3_err("list", &u, e))?;
            let loc = m.location.to_string();
            if !loc.starts_with(&want) {
                if loc.as_str() > want.as_str() && !start.is_empty() {
                    break;
                }
                continue;
            }
            let name = &loc[dir_key.len()..];
            if name.contains('/') {
                continue;
            }
            out.push(Listed {
                name: name.to_string(),
                size: m.size,
                modified: Some(m.last_modified.into()),
            });
        }
        Ok(out)
    })
}

/// Every object below `dir` (recursively) whose name ends in `suffix` and
/// has no hidden (`.`-prefixed) part: its path relative to the root and its
/// first `max` bytes. One listing, then a GET each on the same connection.
pub(super) fn read_tree(
    t: &Target,
    dir: &str,
    suffix: &str,
    max: u64,
) -> Result<Vec<(String, Vec<u8>)>> {
    let root = if t.prefix.is_empty() {
        String::new()
    } else {
        format!("{}/", t.prefix)
    };
    let base = if dir.is_empty() {
        t.prefix.clone()
    } else {
        s3_key(t, dir)
    };
    let u = if base.is_empty() {
        format!("s3://{}", t.bucket)
    } else {
        format!("s3://{}/{base}", t.bucket)
    };
    let c = connect(t)?;
    let pre = (!base.is_empty()).then(|| Key::from(base.as_str()));
    let rels: Vec<String> = c.rt.block_on(async {
        let mut s = c.store.list(pre.as_ref());
        let mut v = Vec::new();
        while let Some(m) = s.next().await {
            let m = m.map_err(|e| s3_err("list", &u, e))?;
            let loc = m.location.to_string();
            let Some(rel) = loc.strip_prefix(&root) else {
                continue;
            };
            if rel.ends_with(suffix) && !rel.split('/').any(|p| p.starts_with('.')) {
                v.push(rel.to_string());
            }
        }
        Ok::<_, Error>(v)
    })?;
    let mut out = Vec::with_capacity(rels.len());
    for rel in rels {
        // Gone between the listing and the read (pruned meanwhile): skipped.
        if let Some(b) = read_small(t, &rel, max)? {
            out.push((rel, b));
        }
    }
    Ok(out)
}

pub(super) fn read_small(t: &Target, rel: &str, max: u64) -> Result<Option<Vec<u8>>> {
    let u = url(t, rel);
    let c = connect(t)?;
    let k = key(t, rel);
    c.rt.block_on(async {
        let r = match c.store.get(&k).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(s3_err("read", &u, e)),
        };
        let mut s = r.into_stream();
        let mut out = Vec::new();
        while let Some(chunk) = s.next().await {
            let chunk = chunk.map_err(|e| s3_err("read", &u, e))?;
            let room = (max as usize).saturating_sub(out.len());
            out.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if out.len() as u64 >= max {
                break;
            }
        }
        Ok(Some(out))
    })
}

pub(super) fn put_bytes_replace(t: &Target, bytes: &[u8], rel: &str) -> Result<()> {
    let u = url(t, rel);
    let c = connect(t)?;
    c.rt.block_on(c.store.put(&key(t, rel), PutPayload::from(bytes.to_vec())))
        .map_err(|e| s3_err("write", &u, e))?;
    Ok(())
}

/// Creates the object `rel` with `bytes` unless one is there (a PUT with
/// `If-None-Match: *`, the answer checked with a HEAD). `true` when created.
pub(super) fn create_new(t: &Target, bytes: &[u8], rel: &str) -> Result<bool> {
    let u = url(t, rel);
    let c = connect(t)?;
    let k = key(t, rel);
    if head_size(&c, &k, &u)?.is_some() {
        return Ok(false);
    }
    Ok(put_new(&c, &k, &u, bytes.to_vec())?.is_none())
}

pub(super) fn verify(t: &Target, rel: &str, expect: &Digests) -> Result<&'static str> {
    let u = url(t, rel);
    let c = connect(t)?;
    let got = read_back(&c, &key(t, rel), &u)?;
    check_digests(&u, &got, expect, false)?;
    Ok("readback")
}

pub(super) fn size_of(t: &Target, rel: &str) -> Result<Option<u64>> {
    let u = url(t, rel);
    let c = connect(t)?;
    head_size(&c, &key(t, rel), &u)
}

/// Deletes the object `rel` and every object beneath `rel/` (a physical
/// artifact's files).
/// Removes each object (and what is below it as a prefix) on one
/// connection, in order.
pub(super) fn remove_many(t: &Target, rels: &[&str]) -> Result<()> {
    let c = connect(t)?;
    c.rt.block_on(async {
        for rel in rels {
            let u = url(t, rel);
            let k = key(t, rel);
            // What lies below it as a prefix (a directory's files), or
            // else the object itself (a directory's own name is no object;
            // servers that keep objects as files refuse to delete it).
            let mut keys = Vec::new();
            let mut list = c.store.list(Some(&k));
            while let Some(m) = list.next().await {
                keys.push(m.map_err(|e| s3_err("list", &u, e))?.location);
            }
            if keys.is_empty() {
                keys.push(k.clone());
            }
            for k in keys {
                match c.store.delete(&k).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(s3_err("remove", &u, e)),
                }
            }
        }
        Ok(())
    })
}

/// The object's bytes, pulled chunk by chunk on the reader's own runtime.
struct ObjectReader {
    conn: Conn,
    stream: futures::stream::BoxStream<'static, object_store::Result<bytes::Bytes>>,
    chunk: bytes::Bytes,
    url: String,
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.conn.rt.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(c)) => self.chunk = c,
                Some(Err(e)) => {
                    return Err(io::Error::other(s3_err("read", &self.url, e).to_string()))
                }
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        let _ = self.chunk.split_to(n);
        Ok(n)
    }
}

pub(super) fn open_read(t: &Target, rel: &str) -> Result<Box<dyn Read + Send>> {
    let u = url(t, rel);
    let conn = connect(t)?;
    let k = key(t, rel);
    let r = conn
        .rt
        .block_on(conn.store.get(&k))
        .map_err(|e| s3_err("read", &u, e))?;
    Ok(Box::new(ObjectReader {
        stream: r.into_stream(),
        conn,
        chunk: bytes::Bytes::new(),
        url: u,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_credentials_are_named_not_the_metadata_service() {
        let raw = "Generic S3 error: Error performing PUT \
                   http://169.254.169.254/latest/api/token in 2ms - Server returned non-2xx \
                   status code: 403 Forbidden";
        let e = super::explain(raw);
        assert!(
            e.starts_with("no S3 credentials: set AWS_ACCESS_KEY_ID"),
            "{e}"
        );
    }

    #[test]
    fn s3_error_bodies_read_as_sentences() {
        let raw = "Object at location pg/x.dump not found: Error performing PUT \
                   http://127.0.0.1:1/no-such-bucket/pg/x.dump in 5ms - Server returned \
                   non-2xx status code: 404 Not Found: <?xml version=\"1.0\"?> <Error>\
                   <Code>NoSuchBucket</Code><Message>The specified bucket does not exist\
                   </Message><BucketName>no-such-bucket</BucketName><RequestId>x</RequestId>\
                   </Error>";
        assert_eq!(
            super::explain(raw),
            "bucket no-such-bucket does not exist (S3 NoSuchBucket, HTTP 404 Not Found)"
        );
        let denied = "Server returned non-2xx status code: 403 Forbidden: <Error>\
                      <Code>AccessDenied</Code><Message>Access Denied</Message></Error>";
        assert_eq!(
            super::explain(denied),
            "S3 error AccessDenied: Access Denied, HTTP 403 Forbidden"
        );
        assert_eq!(super::explain("connection refused"), "connection refused");
    }

    #[test]
    fn shared_aws_files_are_read_by_section() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config");
        std::fs::write(
            &p,
            "# comment\n[default]\nregion = eu-west-1\n\n[profile pgb]\nRegion=us-east-2\n\
             endpoint_url = http://127.0.0.1:9000\n; other\n[profile x]\nregion = nope\n",
        )
        .unwrap();
        let m = ini_section(&p, "profile pgb");
        assert_eq!(m.get("region").map(String::as_str), Some("us-east-2"));
        assert_eq!(
            m.get("endpoint_url").map(String::as_str),
            Some("http://127.0.0.1:9000")
        );
        assert_eq!(
            ini_section(&p, "default").get("region").map(String::as_str),
            Some("eu-west-1")
        );
        assert!(ini_section(&d.path().join("absent"), "default").is_empty());
    }
}
