//! Connection strings: recognise them, redact their passwords for messages,
//! and take the password out so it can travel in a private passfile instead
//! of a child's argv.

/// True when a `-d/--dbname` value is a connection string (key=value or a
/// postgres:// URI) rather than a plain database name, as libpq decides.
pub fn is_conninfo(s: &str) -> bool {
    s.starts_with("postgresql://") || s.starts_with("postgres://") || s.contains('=')
}

fn is_uri(s: &str) -> bool {
    s.starts_with("postgresql://") || s.starts_with("postgres://")
}

/// One `key=value` pair of a keyword/value conninfo, with its byte span.
struct Pair {
    key: String,
    value: String,
    start: usize,
    end: usize,
}

/// Parses keyword/value conninfo the way libpq does: whitespace around `=`
/// allowed, values single-quoted with `\'` and `\\` escapes.
fn parse_pairs(s: &str) -> Vec<Pair> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let start = i;
        while i < b.len() && b[i] != b'=' && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = s[start..i].to_string();
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= b.len() || b[i] != b'=' {
            out.push(Pair {
                key,
                value: String::new(),
                start,
                end: i,
            });
            continue;
        }
        i += 1;
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = Vec::new();
        if i < b.len() && b[i] == b'\'' {
            i += 1;
            while i < b.len() && b[i] != b'\'' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                value.push(b[i]);
                i += 1;
            }
            i = (i + 1).min(b.len());
        } else {
            while i < b.len() && !b[i].is_ascii_whitespace() {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                value.push(b[i]);
                i += 1;
            }
        }
        out.push(Pair {
            key,
            value: String::from_utf8_lossy(&value).into_owned(),
            start,
            end: i,
        });
    }
    out
}

/// Quotes a conninfo value for keyword/value syntax.
pub fn quote_value(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 2);
    s.push('\'');
    for c in v.chars() {
        if c == '\'' || c == '\\' {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('\'');
    s
}

/// Splits a URI into (before userinfo, userinfo, rest) when it has userinfo.
fn uri_userinfo(s: &str) -> Option<(usize, usize)> {
    let scheme_end = s.find("://")? + 3;
    let authority_end = s[scheme_end..]
        .find(['/', '?'])
        .map(|i| scheme_end + i)
        .unwrap_or(s.len());
    let at = s[scheme_end..authority_end].rfind('@')? + scheme_end;
    Some((scheme_end, at))
}

/// Removes the password from a connection string. Returns the string without
/// it and the password, if there was one. Plain names pass unchanged.
pub fn split_password(s: &str) -> (String, Option<String>) {
    if is_uri(s) {
        let mut out = s.to_string();
        let mut password = None;
        // Query parameter password=...
        if let Some(q) = out.find('?') {
            let (head, query) = out.split_at(q + 1);
            let mut kept = Vec::new();
            for part in query.split('&') {
                match part.strip_prefix("password=") {
                    Some(p) => password = Some(percent_decode(p)),
                    None => kept.push(part),
                }
            }
            let mut rebuilt = head.to_string();
            rebuilt.push_str(&kept.join("&"));
            if rebuilt.ends_with('?') {
                rebuilt.pop();
            }
            out = rebuilt;
        }
        if let Some((start, at)) = uri_userinfo(&out) {
            let userinfo = &out[start..at];
            if let Some(colon) = userinfo.find(':') {
                password = Some(percent_decode(&userinfo[colon + 1..]));
                out = format!("{}{}{}", &out[..start], &userinfo[..colon], &out[at..]);
            }
        }
        return (out, password);
    }
    if !s.contains('=') {
        return (s.to_string(), None);
    }
    let mut password = None;
    let mut out = String::new();
    let mut last = 0;
    for p in parse_pairs(s) {
        if p.key == "password" {
            out.push_str(&s[last..p.start]);
            last = p.end;
            password = Some(p.value);
        }
    }
    out.push_str(&s[last..]);
    (
        out.split_whitespace().collect::<Vec<_>>().join(" "),
        password,
    )
}

/// The value of `key` in a keyword/value conninfo, if present.
pub fn get(s: &str, key: &str) -> Option<String> {
    if is_uri(s) {
        return None;
    }
    parse_pairs(s)
        .into_iter()
        .rev()
        .find(|p| p.key == key)
        .map(|p| p.value)
}

/// A connection string fit for messages: any password replaced by `***`.
/// Applied to every message that quotes a child's argv or stderr.
pub fn redact(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    // Keyword/value passwords anywhere in the text.
    while let Some(i) = find_password_kw(rest) {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        let eq = after.find('=').unwrap();
        out.push_str(&after[..=eq]);
        let v = after[eq + 1..].trim_start();
        let skipped_ws = after[eq + 1..].len() - v.len();
        let vlen = if let Some(stripped) = v.strip_prefix('\'') {
            let mut n = 1;
            let mut chars = stripped.char_indices();
            while let Some((j, c)) = chars.next() {
                if c == '\\' {
                    chars.next();
                } else if c == '\'' {
                    n = j + 2;
                    break;
                }
                n = j + c.len_utf8() + 1;
            }
            n
        } else {
            v.find(|c: char| c.is_whitespace() || c == '&' || c == '"')
                .unwrap_or(v.len())
        };
        out.push_str("***");
        rest = &after[eq + 1 + skipped_ws + vlen..];
    }
    out.push_str(rest);
    // URI userinfo passwords: scheme://user:secret@host
    let mut result = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        result.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c == '?' || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                result.push_str(&authority[..colon]);
                result.push_str(":***");
                result.push_str(&authority[at..]);
            }
            _ => result.push_str(authority),
        }
        rest = &tail[end..];
    }
    result.push_str(rest);
    result
}

fn find_password_kw(s: &str) -> Option<usize> {
    let lower = s.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find("password") {
        let i = from + i;
        let before_ok = i == 0 || {
            let c = lower.as_bytes()[i - 1];
            !(c.is_ascii_alphanumeric() || c == b'_')
        };
        let after = lower[i + 8..].trim_start();
        if before_ok && after.starts_with('=') {
            return Some(i);
        }
        from = i + 8;
    }
    None
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 3 <= b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_conninfo() {
        assert!(is_conninfo("host=x dbname=y"));
        assert!(is_conninfo("postgresql://u@h/db"));
        assert!(!is_conninfo("appdb"));
    }

    #[test]
    fn splits_keyword_passwords() {
        let (s, p) = split_password("host=db1 password='s3 cr\\'et' dbname=app");
        assert_eq!(s, "host=db1 dbname=app");
        assert_eq!(p.as_deref(), Some("s3 cr'et"));
        let (s, p) = split_password("password = hunter2 user=u");
        assert_eq!((s.as_str(), p.as_deref()), ("user=u", Some("hunter2")));
        assert_eq!(split_password("app"), ("app".into(), None));
    }

    #[test]
    fn splits_uri_passwords() {
        let (s, p) = split_password("postgresql://bob:p%40ss@db1:5433/app?sslmode=require");
        assert_eq!(s, "postgresql://bob@db1:5433/app?sslmode=require");
        assert_eq!(p.as_deref(), Some("p@ss"));
        let (s, p) = split_password("postgres://db1/app?password=xyz&sslmode=disable");
        assert_eq!(s, "postgres://db1/app?sslmode=disable");
        assert_eq!(p.as_deref(), Some("xyz"));
    }

    #[test]
    fn redacts_everywhere() {
        let cases = [
            (
                "host=a password=hunter2 dbname=b",
                "host=a password=*** dbname=b",
            ),
            ("password='a b\\' c' x", "password=*** x"),
            (
                "could not connect: postgresql://u:hunter2@h/db failed",
                "could not connect: postgresql://u:***@h/db failed",
            ),
            (
                "postgresql://h/db?password=hunter2&x=1",
                "postgresql://h/db?password=***&x=1",
            ),
            ("PASSWORD=hunter2", "PASSWORD=***"),
            ("no secrets here", "no secrets here"),
        ];
        for (input, want) in cases {
            let got = redact(input);
            assert_eq!(got, want);
            assert!(!got.contains("hunter2"));
        }
    }

    #[test]
    fn reads_keys() {
        assert_eq!(
            get("host=a dbname='my db'", "dbname").as_deref(),
            Some("my db")
        );
        assert_eq!(get("host=a", "dbname"), None);
    }
}
