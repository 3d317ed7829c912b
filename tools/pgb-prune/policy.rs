//! The retention policy: which artifacts of one group to keep, with the same
//! semantics as restic's `forget` (`ApplyPolicy` in restic's
//! internal/data/snapshot_policy.go), so operators who know restic can
//! predict it.
//!
//! - Artifacts are taken newest first (ties: by id, so the result does not
//!   depend on input order).
//! - Each count rule (`last`, `hourly`, `daily`, `weekly`, `monthly`,
//!   `yearly`) keeps the newest artifact of each of its N most recent
//!   periods that have artifacts: walking newest first, an artifact whose
//!   period differs from the previous artifact's is kept and uses up one of
//!   the count. `last` gives every artifact a period of its own.
//! - Periods are calendar periods in each timestamp's own UTC offset
//!   (`2026-11-20T23:30:00-05:00` is on the 20th); weeks are ISO 8601 weeks
//!   (Monday to Sunday, the year of the week's Thursday).
//! - A count not used up when the oldest artifact is reached keeps the
//!   oldest artifact too ("oldest daily ..."), as restic does since 0.16.
//! - `within` keeps every artifact strictly after the newest artifact's time
//!   minus the span; the span is subtracted as restic does it (Go's
//!   `AddDate(-y, -m, -d)` with month and day overflow normalised, then
//!   `-h` hours), in the newest artifact's own offset.
//! - The rules are unioned: an artifact is kept when any rule keeps it, and
//!   it carries every reason that applies.

use chrono::{DateTime, Datelike, Duration, FixedOffset, NaiveDate, Timelike};

/// `unlimited` for a count: keep one per period, for every period.
pub const UNLIMITED: u64 = u64::MAX;

/// A `--keep-within` span: years, months, days and hours, as restic writes
/// it (`1y2m3d4h`; `m` is months).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    pub years: i32,
    pub months: i32,
    pub days: i32,
    pub hours: i32,
}

impl Span {
    /// Parses restic's duration syntax: one or more NUMBER UNIT pairs, units
    /// `y` (years), `m` (months), `d` (days), `h` (hours), e.g. `1y6m`,
    /// `30d`, `36h`. A unit given twice: the last one counts (as in restic).
    pub fn parse(s: &str) -> Result<Span, String> {
        let mut rest = s.trim();
        if rest.is_empty() {
            return Err(format!("duration {s:?}: empty"));
        }
        let mut d = Span::default();
        while !rest.is_empty() {
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if end == 0 {
                return Err(format!(
                    "duration {s:?}: expected a number at {rest:?} (e.g. 1y6m, 30d, 36h)"
                ));
            }
            let n: i32 = rest[..end]
                .parse()
                .map_err(|_| format!("duration {s:?}: number too large"))?;
            let unit = rest[end..].chars().next().ok_or_else(|| {
                format!("duration {s:?}: no unit after {n} (y, m for months, d, h)")
            })?;
            match unit {
                'y' => d.years = n,
                'm' => d.months = n,
                'd' => d.days = n,
                'h' => d.hours = n,
                u => {
                    return Err(format!(
                        "duration {s:?}: unknown unit {u:?} (y, m for months, d, h)"
                    ))
                }
            }
            rest = &rest[end + unit.len_utf8()..];
        }
        Ok(d)
    }

    pub fn is_zero(&self) -> bool {
        *self == Span::default()
    }

    /// `t` minus this span, as restic computes it with Go's time package.
    pub fn before(&self, t: DateTime<FixedOffset>) -> DateTime<FixedOffset> {
        go_add_date(t, -self.years, -self.months, -self.days) - Duration::hours(self.hours as i64)
    }
}

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (n, u) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if n != 0 {
                write!(f, "{n}{u}")?;
            }
        }
        Ok(())
    }
}

/// Go's `Time.AddDate`: add to the calendar fields, then normalise
/// (October 31 minus one month is October 1, not September 30), keeping the
/// clock time and the offset.
fn go_add_date(
    t: DateTime<FixedOffset>,
    years: i32,
    months: i32,
    days: i32,
) -> DateTime<FixedOffset> {
    let local = t.naive_local();
    let m0 = local.month0() as i64 + months as i64;
    let year = local.year() as i64 + years as i64 + m0.div_euclid(12);
    let month = m0.rem_euclid(12) as u32 + 1;
    let first = NaiveDate::from_ymd_opt(year as i32, month, 1).unwrap_or(NaiveDate::MIN);
    let date = first + Duration::days(local.day() as i64 - 1 + days as i64);
    let naive = date.and_time(local.time());
    naive.and_local_timezone(*t.offset()).single().unwrap_or(t)
}

/// A retention policy. A count of 0 means the rule is not used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub last: u64,
    pub hourly: u64,
    pub daily: u64,
    pub weekly: u64,
    pub monthly: u64,
    pub yearly: u64,
    pub within: Option<Span>,
}

impl Policy {
    /// No rule given: nothing is to be deleted.
    pub fn is_empty(&self) -> bool {
        self.last == 0
            && self.hourly == 0
            && self.daily == 0
            && self.weekly == 0
            && self.monthly == 0
            && self.yearly == 0
            && self.within.is_none_or(|w| w.is_zero())
    }
}

/// The period label of `t` for a rule, in `t`'s own offset.
fn period(rule: usize, t: &DateTime<FixedOffset>) -> String {
    match rule {
        1 => format!(
            "{:04}-{:02}-{:02}T{:02}",
            t.year(),
            t.month(),
            t.day(),
            t.hour()
        ),
        2 => format!("{:04}-{:02}-{:02}", t.year(), t.month(), t.day()),
        3 => {
            let w = t.iso_week();
            format!("{:04}-W{:02}", w.year(), w.week())
        }
        4 => format!("{:04}-{:02}", t.year(), t.month()),
        _ => format!("{:04}", t.year()),
    }
}

const RULES: [&str; 6] = ["last", "hourly", "daily", "weekly", "monthly", "yearly"];

/// One artifact as the policy sees it: when it was made and a tiebreak key
/// (its id) for artifacts made at the same instant.
#[derive(Debug, Clone)]
pub struct Item<'a> {
    pub created: DateTime<FixedOffset>,
    pub key: &'a str,
}

/// Applies `p` to the artifacts of one group. Returns, for each item in the
/// order given, the reasons it is kept; an empty list means not kept.
pub fn apply(items: &[Item], p: &Policy) -> Vec<Vec<String>> {
    let mut reasons = vec![Vec::new(); items.len()];
    if items.is_empty() {
        return reasons;
    }
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| {
        items[b]
            .created
            .cmp(&items[a].created)
            .then_with(|| items[a].key.cmp(items[b].key))
    });
    let counts = [p.last, p.hourly, p.daily, p.weekly, p.monthly, p.yearly];
    let mut left = counts;
    let mut prev: [Option<String>; 6] = Default::default();
    let newest = items[order[0]].created;
    let within = p.within.filter(|w| !w.is_zero());
    let threshold = within.map(|w| w.before(newest));
    let n = order.len();
    for (nr, &i) in order.iter().enumerate() {
        let t = &items[i].created;
        if let (Some(w), Some(th)) = (within, threshold) {
            if *t > th {
                reasons[i].push(format!("within {w} of the newest"));
            }
        }
        for r in 0..6 {
            if left[r] == 0 {
                continue;
            }
            let val = if r == 0 {
                format!("#{}", nr + 1)
            } else {
                period(r, t)
            };
            let oldest = nr == n - 1;
            if prev[r].as_deref() != Some(val.as_str()) || oldest {
                let label = if r == 0 {
                    format!("last {val}")
                } else {
                    format!("{} {val}", RULES[r])
                };
                if prev[r].as_deref() == Some(val.as_str()) {
                    reasons[i].push(format!("oldest {label}"));
                } else {
                    reasons[i].push(label);
                }
                prev[r] = Some(val);
                if left[r] != UNLIMITED {
                    left[r] -= 1;
                }
            }
        }
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(s).unwrap()
    }

    /// One item per RFC 3339 time, keyed by it.
    fn items<'a>(times: &[&'a str]) -> Vec<Item<'a>> {
        times
            .iter()
            .map(|s| Item {
                created: t(s),
                key: s,
            })
            .collect()
    }

    fn kept(times: &[&str], p: &Policy) -> Vec<String> {
        let keys: Vec<String> = (0..times.len()).map(|i| format!("{i:04}")).collect();
        let items: Vec<Item> = times
            .iter()
            .zip(&keys)
            .map(|(s, k)| Item {
                created: t(s),
                key: k,
            })
            .collect();
        let r = apply(&items, p);
        times
            .iter()
            .zip(r)
            .filter(|(_, r)| !r.is_empty())
            .map(|(s, _)| s.to_string())
            .collect()
    }

    #[test]
    fn spans_parse_like_restic() {
        assert_eq!(
            Span::parse("1y2m3d4h").unwrap(),
            Span {
                years: 1,
                months: 2,
                days: 3,
                hours: 4
            }
        );
        assert_eq!(Span::parse("30d").unwrap().to_string(), "30d");
        assert!(Span::parse("2w").is_err());
        assert!(Span::parse("5").is_err());
        assert!(Span::parse("d").is_err());
        assert!(Span::parse("").is_err());
    }

    #[test]
    fn add_date_normalises_like_go() {
        // Go: time.Date(2026,3,31,...).AddDate(0,-1,0) is 2026-03-03.
        let s = Span {
            months: 1,
            ..Default::default()
        };
        assert_eq!(
            s.before(t("2026-03-31T10:00:00+02:00")),
            t("2026-03-03T10:00:00+02:00")
        );
        let s = Span {
            years: 1,
            days: 1,
            hours: 3,
            ..Default::default()
        };
        assert_eq!(
            s.before(t("2026-01-01T02:00:00Z")),
            t("2024-12-30T23:00:00Z")
        );
    }

    #[test]
    fn daily_keeps_the_newest_of_each_day() {
        let times = [
            "2026-11-20T23:00:00Z",
            "2026-11-20T01:00:00Z",
            "2026-11-19T12:00:00Z",
            "2026-11-18T12:00:00Z",
        ];
        let p = Policy {
            daily: 2,
            ..Default::default()
        };
        assert_eq!(
            kept(&times, &p),
            ["2026-11-20T23:00:00Z", "2026-11-19T12:00:00Z"]
        );
    }

    #[test]
    fn unused_count_keeps_the_oldest() {
        // Three days of artifacts, daily 5: two counts left at the oldest.
        let times = [
            "2026-11-20T10:00:00Z",
            "2026-11-20T09:00:00Z",
            "2026-11-19T10:00:00Z",
            "2026-11-19T09:00:00Z",
        ];
        let p = Policy {
            daily: 5,
            ..Default::default()
        };
        let items = items(&times);
        let r = apply(&items, &p);
        assert_eq!(r[0], ["daily 2026-11-20"]);
        assert!(r[1].is_empty());
        assert_eq!(r[2], ["daily 2026-11-19"]);
        assert_eq!(r[3], ["oldest daily 2026-11-19"]);
    }

    #[test]
    fn periods_use_each_timestamps_own_offset() {
        // The same instant, seen at -05:00, is still the 20th.
        let times = ["2026-11-21T01:00:00+00:00", "2026-11-20T19:30:00-05:00"];
        let p = Policy {
            daily: 1,
            ..Default::default()
        };
        let items = items(&times);
        let r = apply(&items, &p);
        assert_eq!(r[0], ["daily 2026-11-21"]);
        assert!(r[1].is_empty(), "count used up: {:?}", r[1]);
        let p = Policy {
            daily: 2,
            ..Default::default()
        };
        assert_eq!(apply(&items, &p)[1], ["daily 2026-11-20"]);
    }

    #[test]
    fn iso_weeks_span_new_year() {
        // 2026-12-31 (Thu) and 2027-01-03 (Sun) are both in 2026-W53.
        let times = [
            "2027-01-04T10:00:00Z",
            "2027-01-03T10:00:00Z",
            "2026-12-31T10:00:00Z",
            "2026-12-27T10:00:00Z",
        ];
        let p = Policy {
            weekly: 3,
            ..Default::default()
        };
        let items = items(&times);
        let r = apply(&items, &p);
        assert_eq!(r[0], ["weekly 2027-W01"]);
        assert_eq!(r[1], ["weekly 2026-W53"]);
        assert!(r[2].is_empty());
        assert_eq!(r[3], ["weekly 2026-W52"]);
    }

    #[test]
    fn within_is_measured_from_the_newest() {
        let times = [
            "2026-11-20T00:00:00Z",
            "2026-11-18T00:00:01Z",
            "2026-11-18T00:00:00Z",
        ];
        let p = Policy {
            within: Some(Span::parse("2d").unwrap()),
            ..Default::default()
        };
        // Strictly after newest - 2d.
        assert_eq!(
            kept(&times, &p),
            ["2026-11-20T00:00:00Z", "2026-11-18T00:00:01Z"]
        );
    }

    #[test]
    fn last_and_union() {
        let times = [
            "2026-11-20T00:00:00Z",
            "2026-11-19T00:00:00Z",
            "2026-10-01T00:00:00Z",
            "2026-09-01T00:00:00Z",
        ];
        let p = Policy {
            last: 1,
            monthly: 2,
            ..Default::default()
        };
        assert_eq!(
            kept(&times, &p),
            ["2026-11-20T00:00:00Z", "2026-10-01T00:00:00Z"]
        );
    }

    #[test]
    fn empty_policy_keeps_nothing_by_itself() {
        assert!(Policy::default().is_empty());
        assert!(kept(&["2026-11-20T00:00:00Z"], &Policy::default()).is_empty());
    }

    fn arb_times() -> impl Strategy<Value = Vec<(i64, i32)>> {
        // Seconds over three years, offsets in quarter hours.
        prop::collection::vec((0i64..94_608_000, -48i32..=56), 0..60)
    }

    fn items_of(v: &[(i64, i32)], keys: &[String]) -> Vec<(DateTime<FixedOffset>, String)> {
        v.iter()
            .zip(keys)
            .map(|((s, o), k)| {
                let off = FixedOffset::east_opt(o * 900).unwrap();
                let base = t("2025-01-01T00:00:00Z");
                (
                    (base + Duration::seconds(*s)).with_timezone(&off),
                    k.clone(),
                )
            })
            .collect()
    }

    fn arb_policy() -> impl Strategy<Value = Policy> {
        (
            0u64..4,
            0u64..4,
            0u64..8,
            0u64..5,
            0u64..13,
            0u64..3,
            0i32..40,
        )
            .prop_map(
                |(last, hourly, daily, weekly, monthly, yearly, days)| Policy {
                    last,
                    hourly,
                    daily,
                    weekly,
                    monthly,
                    yearly,
                    within: (days > 30).then_some(Span {
                        days: days - 30,
                        ..Default::default()
                    }),
                },
            )
    }

    proptest! {
        // Failing cases are saved beside this file (NAME.regressions).
        #![proptest_config(ProptestConfig {
            failure_persistence: Some(Box::new(
                proptest::test_runner::FileFailurePersistence::WithSource("regressions"),
            )),
            ..ProptestConfig::default()
        })]

        #[test]
        fn order_does_not_matter(v in arb_times(), p in arb_policy(), seed in any::<u64>()) {
            let keys: Vec<String> = (0..v.len()).map(|i| format!("id{i}")).collect();
            let its = items_of(&v, &keys);
            let items: Vec<Item> = its.iter().map(|(c, k)| Item { created: *c, key: k }).collect();
            let r = apply(&items, &p);
            // A shuffled copy.
            let mut idx: Vec<usize> = (0..items.len()).collect();
            let mut s = seed;
            for i in (1..idx.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                idx.swap(i, (s >> 33) as usize % (i + 1));
            }
            let shuffled: Vec<Item> = idx.iter().map(|&i| items[i].clone()).collect();
            let r2 = apply(&shuffled, &p);
            for (j, &i) in idx.iter().enumerate() {
                prop_assert_eq!(&r[i], &r2[j]);
            }
        }

        #[test]
        fn counts_bound_what_is_kept(v in arb_times(), p in arb_policy()) {
            let keys: Vec<String> = (0..v.len()).map(|i| format!("id{i}")).collect();
            let its = items_of(&v, &keys);
            let items: Vec<Item> = its.iter().map(|(c, k)| Item { created: *c, key: k }).collect();
            let r = apply(&items, &p);
            let kept = r.iter().filter(|x| !x.is_empty()).count() as u64;
            if p.within.is_none() {
                let sum = p.last + p.hourly + p.daily + p.weekly + p.monthly + p.yearly;
                prop_assert!(kept <= sum);
            }
            if !items.is_empty() && !p.is_empty() {
                // The newest is always kept by a non-empty policy.
                let newest = (0..items.len()).min_by(|&a, &b| items[b].created.cmp(&items[a].created).then(items[a].key.cmp(items[b].key))).unwrap();
                prop_assert!(!r[newest].is_empty());
            }
            if p.is_empty() {
                prop_assert_eq!(kept, 0);
            }
        }
    }
}
