//! Times and durations as users type them on the command line.

use std::time::Duration;

use chrono::{DateTime, FixedOffset, Local, NaiveDateTime, TimeZone};

use crate::error::{Error, Result};

/// `90s`, `15m`, `2h`, `1d`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| Error::Usage(format!("duration {s:?}: expected e.g. 90s, 15m, 2h")))?;
    let secs = match unit {
        "" | "s" => n,
        "m" | "min" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => {
            return Err(Error::Usage(format!(
                "duration {s:?}: unknown unit {unit:?}"
            )))
        }
    };
    Ok(Duration::from_secs(secs))
}

/// A moment as PostgreSQL's recovery_target_time takes it
/// (`2026-11-21 10:15:00+00`, with or without fractions and offset: local
/// time without one) or RFC 3339. `flag` names the option in the error.
pub fn parse_time(flag: &str, s: &str) -> Result<DateTime<FixedOffset>> {
    let t = s.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d);
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(d) = DateTime::parse_from_str(t, f) {
            return Ok(d);
        }
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M:%S"] {
        if let Ok(n) = NaiveDateTime::parse_from_str(t, f) {
            if let Some(d) = Local.from_local_datetime(&n).single() {
                return Ok(d.fixed_offset());
            }
        }
    }
    Err(Error::Usage(format!(
        "{flag} {s:?}: expected e.g. \"2026-11-21 10:15:00+00\" or RFC 3339"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert!(parse_duration("2 weeks").is_err());
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn times() {
        let a = parse_time("--since", "2026-11-21 10:15:00.123456+00").unwrap();
        let b = parse_time("--since", "2026-11-21T10:15:00.123456Z").unwrap();
        assert_eq!(a, b);
        let e = parse_time("--since", "yesterday").unwrap_err().to_string();
        assert!(e.contains("--since \"yesterday\""), "{e}");
    }
}
