//! Copies to S3-compatible object storage through `object_store`, on a
//! current-thread tokio runtime. Small files are one PUT; larger ones a
//! multipart upload that is completed only once every part is in (aborted on
//! any failure), so the key never names a partial object. Verified by
//! reading the object back and hashing it.
//!
//! Credentials come only from the environment (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`); they never appear in
//! arguments, records or messages.

use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;

use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::{ObjectStore, PutPayload, WriteMultipart};

use super::{check_digests, s3_key, Copied, S3Target as Target};
use crate::digest::{Digests, Hasher};
use crate::error::{Error, IoContext, Result};

/// Files up to this size go up in one PUT; above, in parts of this size.
const PART: usize = 16 << 20;

struct Conn {
    rt: tokio::runtime::Runtime,
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

fn connect(t: &Target) -> Result<Conn> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::msg(format!("s3: start the I/O runtime: {e}")))?;
    let mut b = AmazonS3Builder::from_env().with_bucket_name(&t.bucket);
    let endpoint = t
        .endpoint
        .clone()
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
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
    let region = t
        .region
        .clone()
        .or_else(|| std::env::var("AWS_REGION").ok())
        .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok());
    if let Some(r) = region {
        b = b.with_region(r);
    }
    let store = b
        .build()
        .map_err(|e| s3_err("s3: configure", &format!("s3://{}", t.bucket), e))?;
    Ok(Conn {
        rt,
        store: Arc::new(store),
    })
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
        if size == expect.size {
            let got = read_back(&c, &k, &u)?;
            if check_digests(&u, &got, expect, false).is_ok() {
                return Ok(Copied {
                    existed: true,
                    verified: "readback",
                });
            }
        }
        return Err(Error::msg(format!(
            "copy: {u}: exists with different content; kept, not overwritten"
        )));
    }
    let mut f = std::fs::File::open(src).ctx("open", src)?;
    let sent = if expect.size <= PART as u64 {
        let mut buf = Vec::with_capacity(expect.size as usize);
        f.read_to_end(&mut buf).ctx("read", src)?;
        let n = buf.len() as u64;
        if n == expect.size {
            c.rt.block_on(c.store.put(&k, PutPayload::from(buf)))
                .map_err(|e| s3_err("copy", &u, e))?;
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

pub(super) fn put_bytes_replace(t: &Target, bytes: &[u8], rel: &str) -> Result<()> {
    let u = url(t, rel);
    let c = connect(t)?;
    c.rt.block_on(c.store.put(&key(t, rel), PutPayload::from(bytes.to_vec())))
        .map_err(|e| s3_err("write", &u, e))?;
    Ok(())
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
pub(super) fn remove(t: &Target, rel: &str) -> Result<()> {
    let u = url(t, rel);
    let c = connect(t)?;
    let k = key(t, rel);
    c.rt.block_on(async {
        let mut keys = vec![k.clone()];
        let mut list = c.store.list(Some(&k));
        while let Some(m) = list.next().await {
            keys.push(m.map_err(|e| s3_err("list", &u, e))?.location);
        }
        for k in keys {
            match c.store.delete(&k).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(s3_err("remove", &u, e)),
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
}
