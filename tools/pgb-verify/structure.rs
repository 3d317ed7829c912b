//! Structure: a logical dump's table of contents reads with stock
//! `pg_restore --list` and lists every table whose rows were counted; a
//! globals dump decompresses whole and ends as pg_dumpall ends it.

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use pgb_common::pg;
use pgb_common::pgbin;
use pgb_common::record::{Artifact, Kind};

use crate::run::{file_path, Ctx, Verdict};
use crate::stored;

/// `Err` when the check could not run (pg_restore missing): no verdict.
pub fn check(ctx: &Ctx, a: &Artifact) -> pgb_common::Result<Verdict> {
    Ok(match a.kind {
        Kind::Logical => logical(ctx, a)?,
        Kind::Globals => globals(a),
        _ => Verdict::skip(),
    })
}

/// Splits `schema.table` as written in row_counts (identifiers quoted where
/// SQL needs it) into its two names.
pub fn split_qualified(s: &str) -> Option<(String, String)> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            '"' => quoted = !quoted,
            '.' if !quoted => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    parts.push(cur);
    match parts.as_slice() {
        [s, t] => Some((s.clone(), t.clone())),
        _ => None,
    }
}

fn logical(ctx: &Ctx, a: &Artifact) -> pgb_common::Result<Verdict> {
    let Some(f) = a.files.first() else {
        return Ok(Verdict::fail("the record lists no file"));
    };
    let path = file_path(a, f);
    let (mut src, plain_check) = match stored::open(a, &path)
        .and_then(|(r, check)| Ok((stored::decompressed(a, r, &path)?, check)))
    {
        Ok(r) => r,
        Err(e) => return Ok(Verdict::fail(e.to_string())),
    };
    let whole = plain_check.active();
    // No pg_restore that reads this dump is an error about the host, not
    // a verdict about the dump.
    let pg_restore = pgbin::for_dump(ctx.args.pg_bindir.as_deref(), a, "pg_restore")?.path;
    let mut cmd = Command::new(pg_restore);
    cmd.arg("--list")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    // pg_restore that cannot start says nothing about the dump.
    let mut child = pg::spawn(cmd, &format!("list {}", path.display()))?;
    let mut stdin = child.take_stdin();
    // pg_restore stops reading after the table of contents: a broken pipe
    // then is expected, not a fault.
    let feeder = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match src.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) => return Err(e),
            };
            if stdin.write_all(&buf[..n]).is_err() {
                // The plaintext checksum needs every byte.
                return if whole {
                    stored::drain(&mut src).map(|_| ())
                } else {
                    Ok(())
                };
            }
        }
    });
    let mut listing = String::new();
    let _ = child.take_stdout().read_to_string(&mut listing);
    let waited = child.wait();
    let fed = feeder
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("reader thread panicked")));
    if let Err(e) = waited {
        return Ok(Verdict::fail(format!(
            "{}: pg_restore --list: {e}",
            path.display()
        )));
    }
    if let Err(e) = fed {
        return Ok(Verdict::fail(format!(
            "{}: {}",
            path.display(),
            pgb_common::error::io_cause(&e)
        )));
    }
    let mut problems: Vec<String> = plain_check.problem().into_iter().collect();
    let entries = listing
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .count();
    for table in a.row_counts.iter().flat_map(|c| c.keys()) {
        let Some((schema, name)) = split_qualified(table) else {
            problems.push(format!("row_counts key {table:?} is not schema.table"));
            continue;
        };
        let needle = format!(" TABLE DATA {schema} {name} ");
        if !listing.lines().any(|l| l.contains(&needle)) {
            problems.push(format!(
                "{}: table {table} has no TABLE DATA entry",
                path.display()
            ));
        }
    }
    Ok(Verdict::new(problems).with("toc_entries", entries.into()))
}

fn globals(a: &Artifact) -> Verdict {
    let Some(f) = a.files.first() else {
        return Verdict::fail("the record lists no file");
    };
    let path = file_path(a, f);
    let mut text = String::new();
    let read = stored::open(a, &path).and_then(|(r, check)| {
        let mut r = stored::decompressed(a, r, &path)?;
        r.read_to_string(&mut text)
            .map_err(|e| pgb_common::Error::io("read", &path, e))?;
        stored::drain(&mut r).map_err(|e| pgb_common::Error::io("read", &path, e))?;
        Ok(check)
    });
    let plain_problem = match read {
        Err(e) => return Verdict::fail(e.to_string()),
        Ok(check) => check.problem(),
    };
    if let Some(p) = plain_problem {
        return Verdict::fail(p);
    }
    if !text
        .trim_end()
        .ends_with("-- PostgreSQL database cluster dump complete\n--")
    {
        return Verdict::fail(format!(
            "{}: incomplete: pg_dumpall's closing line is missing",
            path.display()
        ));
    }
    Verdict::new(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::split_qualified;

    #[test]
    fn qualified_names_split_like_sql() {
        assert_eq!(
            split_qualified("app.accounts"),
            Some(("app".into(), "accounts".into()))
        );
        assert_eq!(
            split_qualified("\"Mixed Case\".\"Odd \"\"T\"\".x\""),
            Some(("Mixed Case".into(), "Odd \"T\".x".into()))
        );
        assert_eq!(split_qualified("nodot"), None);
    }
}
