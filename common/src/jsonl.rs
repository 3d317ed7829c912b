//! JSON lines in and out: one compact object per line, flushed per record.
//!
//! The reader names the source and line of anything malformed, treats a last
//! line without `\n` as a truncated producer, and keeps every record's raw
//! text so records a tool does not act on (and error records) are forwarded
//! byte for byte.
//!
//! The writer has two modes: JSON lines (a pipe or a file, or `--json`),
//! and on a terminal a short human summary of each record, rendered by
//! the tool (see [`RecordWriter::stdout_for`] and [`crate::human`]).

use std::io::{self, BufRead, IsTerminal, Write};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::record::{Artifact, SCHEMA};

/// One record read from a stream.
#[derive(Debug)]
pub enum Input {
    /// An artifact record, parsed; `raw` is the line as read.
    Artifact {
        line: usize,
        raw: String,
        artifact: Box<Artifact>,
    },
    /// An error record from an earlier stage: forward it untouched.
    Error { line: usize, raw: String },
    /// Any other record type: forward it untouched.
    Other { line: usize, raw: String },
}

impl Input {
    pub fn raw(&self) -> &str {
        match self {
            Input::Artifact { raw, .. } | Input::Error { raw, .. } | Input::Other { raw, .. } => {
                raw
            }
        }
    }

    pub fn line(&self) -> usize {
        match self {
            Input::Artifact { line, .. }
            | Input::Error { line, .. }
            | Input::Other { line, .. } => *line,
        }
    }
}

/// Reads `pgb.v1` records from a buffered reader.
pub struct RecordReader<R> {
    inner: R,
    source: String,
    line: usize,
    buf: Vec<u8>,
}

impl<R: BufRead> RecordReader<R> {
    /// `source` names the stream in errors (`stdin`, a sidecar's path).
    pub fn new(inner: R, source: impl Into<String>) -> Self {
        RecordReader {
            inner,
            source: source.into(),
            line: 0,
            buf: Vec::new(),
        }
    }

    fn bad(&self, msg: impl Into<String>) -> Error {
        Error::Input {
            source: self.source.clone(),
            line: self.line,
            msg: msg.into(),
        }
    }

    /// Parses one line of text as a record.
    pub fn parse_line(&self, text: &str) -> Result<Input> {
        let line = self.line;
        let v: Value =
            serde_json::from_str(text).map_err(|e| self.bad(format!("malformed JSON: {e}")))?;
        let obj = v.as_object().ok_or_else(|| self.bad("not a JSON object"))?;
        match obj.get("schema").and_then(Value::as_str) {
            Some(SCHEMA) => {}
            Some(other) => {
                return Err(self.bad(format!("unknown schema {other:?} (expected {SCHEMA:?})")))
            }
            None => return Err(self.bad("not a pgb record (no \"schema\" field)")),
        }
        let raw = text.to_string();
        match obj.get("type").and_then(Value::as_str) {
            Some("artifact") => {
                let artifact: Artifact = serde_json::from_value(v)
                    .map_err(|e| self.bad(format!("invalid artifact record: {e}")))?;
                Ok(Input::Artifact {
                    line,
                    raw,
                    artifact: Box::new(artifact),
                })
            }
            Some("error") => Ok(Input::Error { line, raw }),
            Some(_) => Ok(Input::Other { line, raw }),
            None => Err(self.bad("record has no \"type\"")),
        }
    }
}

impl<R: BufRead> Iterator for RecordReader<R> {
    type Item = Result<Input>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.buf.clear();
            let n = match self.inner.read_until(b'\n', &mut self.buf) {
                Ok(n) => n,
                Err(e) => return Some(Err(Error::io("read", &self.source, e))),
            };
            if n == 0 {
                return None;
            }
            self.line += 1;
            if self.buf.last() != Some(&b'\n') {
                return Some(Err(
                    self.bad("last line has no newline: the producer was cut off")
                ));
            }
            self.buf.pop();
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
            let text = match std::str::from_utf8(&self.buf) {
                Ok(t) => t,
                Err(_) => return Some(Err(self.bad("not UTF-8"))),
            };
            if text.trim().is_empty() {
                continue;
            }
            let text = text.to_string();
            return Some(self.parse_line(&text));
        }
    }
}

/// How a tool renders one record for a person: `None` for the default
/// summary ([`crate::human::default_line`]), an empty string to print
/// nothing for it. Error records are always rendered by
/// [`crate::human::error`].
pub type Render = Box<dyn FnMut(&Value) -> Option<String>>;

/// True when stdout gets a human summary: it is a terminal and `--json`
/// was not given.
pub fn human_wanted(json: bool) -> bool {
    !json && io::stdout().is_terminal()
}

/// Writes records, one compact line each, flushed after every record; or,
/// in human mode, each record's summary.
pub struct RecordWriter<W: Write> {
    inner: W,
    name: String,
    human: Option<Render>,
}

impl RecordWriter<io::Stdout> {
    /// JSON lines on stdout, whatever it is.
    pub fn stdout() -> Self {
        RecordWriter::new(io::stdout(), "stdout")
    }

    /// JSON lines on stdout when it is a pipe or a file or `json` is set
    /// (`--json`); on a terminal, each record as `render` summarises it.
    pub fn stdout_for(json: bool, render: impl FnMut(&Value) -> Option<String> + 'static) -> Self {
        let w = RecordWriter::stdout();
        if human_wanted(json) {
            w.human(render)
        } else {
            w
        }
    }
}

impl<W: Write> RecordWriter<W> {
    pub fn new(inner: W, name: impl Into<String>) -> Self {
        RecordWriter {
            inner,
            name: name.into(),
            human: None,
        }
    }

    /// Switches to human mode: each record is written as `render` says.
    pub fn human(mut self, render: impl FnMut(&Value) -> Option<String> + 'static) -> Self {
        self.human = Some(Box::new(render));
        self
    }

    /// True in human mode.
    pub fn is_human(&self) -> bool {
        self.human.is_some()
    }

    /// Serialises and writes one record.
    pub fn write<T: serde::Serialize>(&mut self, record: &T) -> Result<()> {
        if self.human.is_some() {
            let v = serde_json::to_value(record)
                .map_err(|e| Error::msg(format!("encode record: {e}")))?;
            return self.write_human(&v);
        }
        let mut line =
            serde_json::to_vec(record).map_err(|e| Error::msg(format!("encode record: {e}")))?;
        line.push(b'\n');
        self.write_bytes(&line)
    }

    /// Writes one record; in human mode, `summary` of it instead of the
    /// tool's renderer, for what the run knows and the record does not
    /// say (which checks this run made, whether it changed anything).
    pub fn write_summarised<T: serde::Serialize>(
        &mut self,
        record: &T,
        summary: impl FnOnce(&Value) -> String,
    ) -> Result<()> {
        if self.human.is_none() {
            return self.write(record);
        }
        let v =
            serde_json::to_value(record).map_err(|e| Error::msg(format!("encode record: {e}")))?;
        let line = summary(&v);
        self.write_text(&line)
    }

    /// Writes a line read earlier, unchanged (a trailing newline is added).
    pub fn forward(&mut self, raw: &str) -> Result<()> {
        if self.human.is_some() {
            if let Ok(v) = serde_json::from_str::<Value>(raw) {
                return self.write_human(&v);
            }
        }
        let mut line = Vec::with_capacity(raw.len() + 1);
        line.extend_from_slice(raw.as_bytes());
        line.push(b'\n');
        self.write_bytes(&line)
    }

    fn write_human(&mut self, v: &Value) -> Result<()> {
        let now = chrono::Utc::now();
        let text = match v.get("type").and_then(Value::as_str) {
            Some("error") => crate::human::error(v),
            _ => match self.human.as_mut().and_then(|r| r(v)) {
                Some(t) => t,
                None => crate::human::default_line(v, now),
            },
        };
        self.write_text(&text)
    }

    fn write_text(&mut self, text: &str) -> Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        // What records carry (paths, names, messages) reaches a terminal:
        // control characters are shown escaped, never interpreted.
        let mut out = crate::human::clean(text.trim_end_matches('\n'));
        out.push('\n');
        self.write_bytes(out.as_bytes())
    }

    fn write_bytes(&mut self, line: &[u8]) -> Result<()> {
        self.inner
            .write_all(line)
            .and_then(|_| self.inner.flush())
            .map_err(|e| Error::io("write", &self.name, e))
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn artifact_line() -> String {
        json!({
            "schema": "pgb.v1", "type": "artifact", "id": "x", "kind": "globals",
            "cluster": "main", "created": "2026-11-21T10:15:00Z", "repo": "/r", "path": "p",
            "files": []
        })
        .to_string()
    }

    fn read_all(input: &str) -> Vec<Result<Input>> {
        RecordReader::new(input.as_bytes(), "stdin").collect()
    }

    #[test]
    fn malformed_line_is_named_by_number() {
        let input = format!("{}\n{{not json\n", artifact_line());
        let out = read_all(&input);
        assert!(out[0].is_ok());
        let e = out[1].as_ref().unwrap_err().to_string();
        assert!(e.starts_with("stdin: line 2: malformed JSON"), "{e}");
    }

    #[test]
    fn missing_final_newline_is_a_truncated_producer() {
        let out = read_all(&artifact_line());
        let e = out[0].as_ref().unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("cut off"), "{e}");
    }

    #[test]
    fn error_and_unknown_records_keep_their_bytes() {
        let err = r#"{"schema":"pgb.v1","type":"error","tool":"t","message":"m",  "z":1}"#;
        let other = r#"{"type":"note","schema":"pgb.v1"}"#;
        let out = read_all(&format!("{err}\n{other}\n"));
        match &out[0] {
            Ok(Input::Error { raw, line: 1 }) => assert_eq!(raw, err),
            o => panic!("{o:?}"),
        }
        match &out[1] {
            Ok(Input::Other { raw, line: 2 }) => assert_eq!(raw, other),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn foreign_json_is_refused() {
        let out = read_all("{\"a\":1}\n[1]\n{\"schema\":\"pgb.v9\",\"type\":\"artifact\"}\n");
        assert!(out.iter().all(|r| r.is_err()));
    }

    #[test]
    fn writer_flushes_one_line_per_record() {
        let mut w = RecordWriter::new(Vec::new(), "buf");
        w.write(&json!({"a": 1})).unwrap();
        w.forward("{\"b\":2}").unwrap();
        assert_eq!(
            String::from_utf8(w.into_inner()).unwrap(),
            "{\"a\":1}\n{\"b\":2}\n"
        );
    }

    #[test]
    fn human_mode_renders_each_record_and_escapes_control_characters() {
        let mut w = RecordWriter::new(Vec::new(), "buf").human(|v| match v["type"].as_str() {
            Some("artifact") => Some(format!("art {}", v["id"].as_str().unwrap())),
            Some("quiet") => Some(String::new()),
            _ => None,
        });
        assert!(w.is_human());
        w.write(&json!({"schema": "pgb.v1", "type": "artifact", "id": "a\u{1b}[2J"}))
            .unwrap();
        w.forward(r#"{"schema":"pgb.v1","type":"error","tool":"t","message":"m"}"#)
            .unwrap();
        w.write(&json!({"type": "quiet"})).unwrap();
        w.write(&json!({"type": "note", "n": 1})).unwrap();
        w.write_summarised(&json!({"type": "artifact", "id": "b"}), |v| {
            format!("known {}", v["id"].as_str().unwrap())
        })
        .unwrap();
        assert_eq!(
            String::from_utf8(w.into_inner()).unwrap(),
            "art a\\u{1b}[2J\nFAILED     t: m\nnote       n=1\nknown b\n"
        );
        let mut w = RecordWriter::new(Vec::new(), "buf");
        w.write_summarised(&json!({"a": 1}), |_| "never".into())
            .unwrap();
        assert_eq!(String::from_utf8(w.into_inner()).unwrap(), "{\"a\":1}\n");
    }

    #[test]
    fn writer_reports_a_full_disk() {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let mut w = RecordWriter::new(f, "stdout");
        let e = w.write(&json!({"a": 1})).unwrap_err().to_string();
        assert_eq!(e, "write: stdout: No space left on device");
    }
}
