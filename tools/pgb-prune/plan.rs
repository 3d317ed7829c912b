//! The plan: keep or delete for every artifact, with reasons. Pure: it sees
//! the records and what was found on disk, never the disk itself.
//!
//! Per group (cluster, kind, database):
//! - WAL segment records are never deleted here (`--wal-archive` expires
//!   WAL by what the kept base backups need).
//! - An artifact dated after `now` is kept and flagged "in the future"; it
//!   does not count. One dated more than the tolerance after `now`, or a
//!   verification recorded more than the tolerance after `now`, means the
//!   clock went backwards (or `--now` is wrong): nothing at all is deleted.
//! - An artifact counts when it is complete (see apply.rs) and, with
//!   `--require-verified`, verified. The policy is applied to the counted
//!   artifacts only.
//! - An artifact that does not count is kept when it is newer than the
//!   newest counted artifact (a fresh backup not verified yet), or when the
//!   group has no counted artifact at all; otherwise it is deleted.
//! - The newest verified artifact of the group is always kept.
//! - An empty policy keeps everything.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, FixedOffset, SecondsFormat};
use pgb_common::record::{Artifact, Kind};
use serde_json::Value;

use crate::policy::{self, Item, Policy};

/// How an artifact stands with its verifications: verified when it has at
/// least one `verified` entry and, for every method, the latest entry of
/// that method passed (`ok: true`).
pub fn is_verified(a: &Artifact) -> bool {
    let mut latest: HashMap<&str, bool> = HashMap::new();
    for v in &a.verified {
        let method = v.get("method").and_then(Value::as_str).unwrap_or("");
        let ok = v.get("ok").and_then(Value::as_bool).unwrap_or(false);
        latest.insert(method, ok);
    }
    !latest.is_empty() && latest.values().all(|&ok| ok)
}

/// The latest `when` of the artifact's verifications, when any parses.
pub fn last_verification(a: &Artifact) -> Option<DateTime<FixedOffset>> {
    a.verified
        .iter()
        .filter_map(|v| v.get("when").and_then(Value::as_str))
        .filter_map(|w| DateTime::parse_from_rfc3339(w).ok())
        .max()
}

/// What the plan needs to know of one artifact.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub cluster: String,
    pub kind: Kind,
    pub database: Option<String>,
    pub id: String,
    pub created: DateTime<FixedOffset>,
    pub verified: bool,
    pub last_verification: Option<DateTime<FixedOffset>>,
    /// Why the artifact is not complete, when it is not.
    pub incomplete: Option<String>,
    /// The backup an incremental was taken on (`incremental.parent`).
    pub parent: Option<String>,
}

impl Candidate {
    pub fn of(a: &Artifact, incomplete: Option<String>) -> Candidate {
        Candidate {
            cluster: a.cluster.clone(),
            kind: a.kind,
            database: a.database.clone(),
            id: a.id.clone(),
            created: a.created,
            verified: is_verified(a),
            last_verification: last_verification(a),
            incomplete,
            parent: a
                .extra
                .get("incremental")
                .and_then(|i| i.get("parent"))
                .and_then(Value::as_str)
                .map(str::to_string),
        }
    }
}

#[derive(Debug)]
pub struct Options {
    pub policy: Policy,
    pub require_verified: bool,
    pub now: DateTime<FixedOffset>,
    /// How far in the future an artifact or verification may be before the
    /// clock is taken to have gone backwards.
    pub tolerance: chrono::Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub delete: bool,
    pub reasons: Vec<String>,
}

#[derive(Debug)]
pub struct Plan {
    /// One decision per candidate, in the order given.
    pub decisions: Vec<Decision>,
    /// Set when the clock went backwards: nothing is deleted.
    pub clock: Option<String>,
}

impl Plan {
    pub fn deletes(&self) -> usize {
        self.decisions.iter().filter(|d| d.delete).count()
    }
}

fn stamp(t: &DateTime<FixedOffset>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn make(cands: &[Candidate], o: &Options) -> Plan {
    let mut decisions: Vec<Decision> = cands
        .iter()
        .map(|_| Decision {
            delete: false,
            reasons: Vec::new(),
        })
        .collect();
    // The clock.
    let limit = o.now + o.tolerance;
    // The latest offending time decides the message, whatever the order.
    let mut worst: Option<(DateTime<FixedOffset>, &str, &Candidate)> = None;
    for c in cands {
        let mut consider = |t: DateTime<FixedOffset>, what: &'static str| {
            let better = match &worst {
                None => true,
                Some((w, _, wc)) => t > *w || (t == *w && c.id < wc.id),
            };
            if t > limit && better {
                worst = Some((t, what, c));
            }
        };
        consider(c.created, "created");
        if let Some(v) = c.last_verification {
            consider(v, "verified");
        }
    }
    let clock = worst.map(|(t, what, c)| {
        format!(
            "{} {} was {what} at {}, after now ({}) plus the tolerance: the clock went backwards or --now is wrong",
            c.kind.as_str(),
            c.id,
            stamp(&t),
            stamp(&o.now)
        )
    });
    // Groups.
    let mut groups: BTreeMap<(&str, Kind, Option<&str>), Vec<usize>> = BTreeMap::new();
    for (i, c) in cands.iter().enumerate() {
        groups
            .entry((c.cluster.as_str(), c.kind, c.database.as_deref()))
            .or_default()
            .push(i);
    }
    let empty = o.policy.is_empty();
    for ((_, kind, _), members) in groups {
        if kind == Kind::Wal {
            for &i in &members {
                decisions[i]
                    .reasons
                    .push("WAL segment: expired only by --wal-archive".into());
            }
            continue;
        }
        let mut counted = Vec::new();
        let mut uncounted = Vec::new();
        for &i in &members {
            let c = &cands[i];
            if c.created > o.now {
                decisions[i].reasons.push(format!(
                    "in the future (created {}, now {}): not counted",
                    stamp(&c.created),
                    stamp(&o.now)
                ));
            } else if let Some(why) = &c.incomplete {
                uncounted.push((i, format!("incomplete ({why})")));
            } else if o.require_verified && !c.verified {
                uncounted.push((i, "not verified".to_string()));
            } else {
                counted.push(i);
            }
        }
        let items: Vec<Item> = counted
            .iter()
            .map(|&i| Item {
                created: cands[i].created,
                key: &cands[i].id,
            })
            .collect();
        let kept = policy::apply(&items, &o.policy);
        let newest_counted = counted.iter().map(|&i| cands[i].created).max();
        for (&i, reasons) in counted.iter().zip(kept) {
            if empty {
                decisions[i]
                    .reasons
                    .push("empty policy: nothing is deleted".into());
            } else if reasons.is_empty() {
                decisions[i].delete = true;
                decisions[i].reasons.push("kept by no rule".into());
            } else {
                decisions[i].reasons.extend(reasons);
            }
        }
        for (i, why) in uncounted {
            let d = &mut decisions[i];
            match newest_counted {
                _ if empty => {
                    d.reasons.push(format!("{why}: not counted"));
                    d.reasons.push("empty policy: nothing is deleted".into());
                }
                None => d.reasons.push(format!(
                    "{why}: not counted; kept, the group has no counted artifact"
                )),
                Some(n) if cands[i].created >= n => d.reasons.push(format!(
                    "{why}: not counted; kept, newer than the newest counted artifact"
                )),
                Some(_) => {
                    d.delete = true;
                    d.reasons.push(format!(
                        "{why}: not counted, older than the newest counted artifact"
                    ));
                }
            }
        }
        // The newest verified artifact is never deleted.
        let newest_verified = members
            .iter()
            .copied()
            .filter(|&i| cands[i].verified)
            .max_by(|&a, &b| {
                cands[a]
                    .created
                    .cmp(&cands[b].created)
                    .then_with(|| cands[b].id.cmp(&cands[a].id))
            });
        if let Some(i) = newest_verified {
            let d = &mut decisions[i];
            if d.delete {
                // What would have deleted it no longer applies.
                d.delete = false;
                d.reasons.clear();
            }
            d.reasons.push("newest verified".into());
        }
    }
    keep_chains(cands, &mut decisions);
    if let Some(why) = &clock {
        for d in &mut decisions {
            if d.delete {
                d.delete = false;
                d.reasons.push(format!("nothing is deleted: {why}"));
            }
        }
    }
    Plan { decisions, clock }
}

/// Every ancestor of a kept incremental is kept, `parent of CHILD`: an
/// incremental cannot be restored without its whole chain.
fn keep_chains(cands: &[Candidate], decisions: &mut [Decision]) {
    let index: HashMap<(&str, &str), usize> = cands
        .iter()
        .enumerate()
        .map(|(i, c)| ((c.cluster.as_str(), c.id.as_str()), i))
        .collect();
    let mut work: Vec<usize> = (0..cands.len()).filter(|&i| !decisions[i].delete).collect();
    while let Some(i) = work.pop() {
        let c = &cands[i];
        let Some(p) = c
            .parent
            .as_deref()
            .and_then(|p| index.get(&(c.cluster.as_str(), p)).copied())
        else {
            continue;
        };
        let why = format!("parent of {}", c.id);
        let d = &mut decisions[p];
        if d.reasons.contains(&why) {
            continue;
        }
        if d.delete {
            // What would have deleted it no longer applies.
            d.delete = false;
            d.reasons.clear();
        }
        d.reasons.push(why);
        work.push(p);
    }
    // The same reasons whatever the input order: children sorted.
    for d in decisions.iter_mut() {
        let (mut parents, rest): (Vec<String>, Vec<String>) = std::mem::take(&mut d.reasons)
            .into_iter()
            .partition(|r| r.starts_with("parent of "));
        parents.sort();
        d.reasons = rest;
        d.reasons.extend(parents);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Span;
    use proptest::prelude::*;
    use serde_json::json;

    fn t(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(s).unwrap()
    }

    fn cand(id: &str, created: &str, verified: bool) -> Candidate {
        Candidate {
            cluster: "main".into(),
            kind: Kind::Logical,
            database: Some("app".into()),
            id: id.into(),
            created: t(created),
            verified,
            last_verification: None,
            incomplete: None,
            parent: None,
        }
    }

    fn opts(p: Policy) -> Options {
        Options {
            policy: p,
            require_verified: false,
            now: t("2026-11-21T12:00:00Z"),
            tolerance: chrono::Duration::hours(1),
        }
    }

    fn last(n: u64) -> Policy {
        Policy {
            last: n,
            ..Default::default()
        }
    }

    #[test]
    fn verified_means_every_methods_latest_entry_passed() {
        let mut a: Artifact = serde_json::from_value(json!({
            "schema": "pgb.v1", "type": "artifact", "id": "x", "kind": "logical",
            "cluster": "main", "created": "2026-11-21T10:15:00+01:00",
            "repo": "/r", "path": "p", "files": []
        }))
        .unwrap();
        assert!(!is_verified(&a));
        a.verified = vec![
            json!({"method": "checksums", "ok": false, "when": "2026-11-20T00:00:00Z"}),
            json!({"method": "checksums", "ok": true, "when": "2026-11-21T00:00:00Z"}),
            json!({"method": "restore", "ok": true, "when": "2026-11-21T00:00:00Z"}),
        ];
        assert!(is_verified(&a));
        assert_eq!(last_verification(&a), Some(t("2026-11-21T00:00:00Z")));
        a.verified
            .push(json!({"method": "restore", "ok": false, "when": "2026-11-22T00:00:00Z"}));
        assert!(!is_verified(&a));
    }

    #[test]
    fn newest_verified_survives_any_policy() {
        let c = vec![
            cand("a", "2026-11-20T00:00:00Z", false),
            cand("b", "2026-11-19T00:00:00Z", true),
            cand("c", "2026-11-18T00:00:00Z", true),
        ];
        let p = make(&c, &opts(last(1)));
        assert!(!p.decisions[0].delete);
        assert!(!p.decisions[1].delete);
        assert!(p.decisions[1].reasons.contains(&"newest verified".into()));
        assert!(p.decisions[2].delete);
    }

    #[test]
    fn require_verified_keeps_fresh_unverified_and_deletes_old_unverified() {
        let c = vec![
            cand("new", "2026-11-21T00:00:00Z", false),
            cand("v1", "2026-11-20T00:00:00Z", true),
            cand("old", "2026-11-19T12:00:00Z", false),
            cand("v2", "2026-11-19T00:00:00Z", true),
        ];
        let mut o = opts(last(2));
        o.require_verified = true;
        let p = make(&c, &o);
        let del: Vec<bool> = p.decisions.iter().map(|d| d.delete).collect();
        assert_eq!(del, [false, false, true, false], "{:?}", p.decisions);
        assert!(p.decisions[2].reasons[0].starts_with("not verified"));
    }

    #[test]
    fn future_artifacts_are_kept_and_not_counted() {
        let c = vec![
            cand("f", "2026-11-21T12:30:00Z", false),
            cand("a", "2026-11-21T00:00:00Z", false),
            cand("b", "2026-11-20T00:00:00Z", false),
        ];
        let p = make(&c, &opts(last(1)));
        assert!(p.clock.is_none());
        assert!(p.decisions[0].reasons[0].starts_with("in the future"));
        let del: Vec<bool> = p.decisions.iter().map(|d| d.delete).collect();
        assert_eq!(del, [false, false, true]);
    }

    #[test]
    fn a_clock_gone_backwards_deletes_nothing() {
        let c = vec![
            cand("f", "2026-11-23T00:00:00Z", false),
            cand("a", "2026-11-21T00:00:00Z", false),
            cand("b", "2026-11-20T00:00:00Z", false),
        ];
        let p = make(&c, &opts(last(1)));
        assert!(p.clock.is_some());
        assert_eq!(p.deletes(), 0);
        // A verification recorded after now does the same.
        let mut c = vec![
            cand("a", "2026-11-21T00:00:00Z", true),
            cand("b", "2026-11-20T00:00:00Z", false),
        ];
        c[0].last_verification = Some(t("2026-11-22T00:00:00Z"));
        let p = make(&c, &opts(last(1)));
        assert!(p.clock.is_some() && p.deletes() == 0);
    }

    #[test]
    fn groups_are_separate() {
        let mut c = vec![
            cand("a", "2026-11-21T00:00:00Z", false),
            cand("b", "2026-11-20T00:00:00Z", false),
        ];
        let mut other = cand("c", "2026-11-19T00:00:00Z", false);
        other.database = Some("other".into());
        c.push(other);
        let p = make(&c, &opts(last(1)));
        let del: Vec<bool> = p.decisions.iter().map(|d| d.delete).collect();
        assert_eq!(del, [false, true, false]);
    }

    #[test]
    fn incomplete_old_artifacts_go_new_ones_stay() {
        let mut c = vec![
            cand("new", "2026-11-21T00:00:00Z", false),
            cand("a", "2026-11-20T00:00:00Z", false),
            cand("old", "2026-11-19T00:00:00Z", false),
        ];
        c[0].incomplete = Some("x missing".into());
        c[2].incomplete = Some("x missing".into());
        let p = make(&c, &opts(last(5)));
        let del: Vec<bool> = p.decisions.iter().map(|d| d.delete).collect();
        assert_eq!(del, [false, false, true]);
    }

    #[test]
    fn a_kept_incremental_keeps_its_chain_and_says_why() {
        let mut c = vec![
            cand("full", "2026-11-18T00:00:00Z", false),
            cand("i1", "2026-11-19T00:00:00Z", false),
            cand("i2", "2026-11-20T00:00:00Z", false),
            cand("old", "2026-11-17T00:00:00Z", false),
        ];
        for x in &mut c {
            x.kind = Kind::Physical;
            x.database = None;
        }
        c[1].parent = Some("full".into());
        c[2].parent = Some("i1".into());
        let p = make(&c, &opts(last(1)));
        let del: Vec<bool> = p.decisions.iter().map(|d| d.delete).collect();
        assert_eq!(del, [false, false, false, true], "{:?}", p.decisions);
        assert_eq!(p.decisions[1].reasons, ["parent of i2"]);
        assert_eq!(p.decisions[0].reasons, ["parent of i1"]);
        // A parent kept by a rule too says both.
        let p = make(&c, &opts(last(3)));
        assert!(p.decisions[0].reasons.contains(&"parent of i1".into()));
        assert!(
            p.decisions[0].reasons.iter().any(|r| r.starts_with("last")),
            "{:?}",
            p.decisions[0]
        );
    }

    fn arb_cands() -> impl Strategy<Value = Vec<Candidate>> {
        prop::collection::vec((0i64..40_000_000, any::<bool>(), 0u8..3, 0u8..6), 0..40)
            .prop_map(|v| {
                v.into_iter()
                    .enumerate()
                    .map(|(i, (s, ver, db, inc))| {
                        let base = t("2025-06-01T00:00:00Z");
                        let mut c = cand(&format!("id{i:03}"), "2025-06-01T00:00:00Z", ver);
                        c.created = base + chrono::Duration::seconds(s);
                        c.database = Some(format!("db{db}"));
                        if db == 2 {
                            c.kind = Kind::Physical;
                            c.database = None;
                        }
                        if inc == 0 {
                            c.incomplete = Some("gone".into());
                        }
                        c
                    })
                    .collect::<Vec<Candidate>>()
            })
            .prop_flat_map(|c| {
                let n = c.len();
                (Just(c), prop::collection::vec(0usize..n.max(1) * 2, n))
            })
            .prop_map(|(mut c, picks)| {
                // Physical backups on an older physical backup of the group,
                // chains of any depth (a pick beyond the list: a full backup).
                for (i, pick) in picks.into_iter().enumerate() {
                    if c[i].kind == Kind::Physical {
                        if let Some(p) = c
                            .get(pick)
                            .filter(|p| p.kind == Kind::Physical && p.created < c[i].created)
                        {
                            c[i].parent = Some(p.id.clone());
                        }
                    }
                }
                c
            })
    }

    fn arb_opts() -> impl Strategy<Value = Options> {
        (
            0u64..3,
            0u64..5,
            0u64..3,
            0u64..4,
            0i32..20,
            any::<bool>(),
            0i64..60_000_000,
        )
            .prop_map(|(last, daily, weekly, monthly, within, rv, now)| Options {
                policy: Policy {
                    last,
                    daily,
                    weekly,
                    monthly,
                    within: (within > 10).then_some(Span {
                        days: within - 10,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                require_verified: rv,
                now: t("2025-06-01T00:00:00Z") + chrono::Duration::seconds(now),
                tolerance: chrono::Duration::hours(1),
            })
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
        fn invariants(c in arb_cands(), o in arb_opts(), seed in any::<u64>()) {
            let p = make(&c, &o);
            // Every candidate has exactly one decision, with a reason.
            prop_assert_eq!(p.decisions.len(), c.len());
            for d in &p.decisions {
                prop_assert!(!d.reasons.is_empty());
            }
            // The newest verified of each group is kept.
            let mut newest: HashMap<(String, Kind, Option<String>), usize> = HashMap::new();
            for (i, x) in c.iter().enumerate().filter(|(_, x)| x.verified) {
                let k = (x.cluster.clone(), x.kind, x.database.clone());
                let e = newest.entry(k).or_insert(i);
                if (x.created, std::cmp::Reverse(&x.id)) > (c[*e].created, std::cmp::Reverse(&c[*e].id)) {
                    *e = i;
                }
            }
            for &i in newest.values() {
                prop_assert!(!p.decisions[i].delete);
            }
            // No kept backup is left without its chain.
            for (i, x) in c.iter().enumerate() {
                if p.decisions[i].delete {
                    continue;
                }
                let mut at = x;
                while let Some(pid) = &at.parent {
                    let j = c.iter().position(|y| &y.id == pid).expect("parents are in the list");
                    prop_assert!(!p.decisions[j].delete, "{} kept, its ancestor {} deleted", x.id, pid);
                    prop_assert!(
                        p.clock.is_some()
                            || p.decisions[j].reasons.contains(&format!("parent of {}", at.id)),
                        "{:?}", p.decisions[j]
                    );
                    at = &c[j];
                }
            }
            // An empty policy or a stopped clock deletes nothing.
            if o.policy.is_empty() || p.clock.is_some() {
                prop_assert_eq!(p.deletes(), 0);
            }
            // Nothing in the future is deleted.
            for (i, x) in c.iter().enumerate() {
                if x.created > o.now {
                    prop_assert!(!p.decisions[i].delete);
                }
            }
            // Input order does not matter.
            let mut idx: Vec<usize> = (0..c.len()).collect();
            let mut s = seed;
            for i in (1..idx.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                idx.swap(i, (s >> 33) as usize % (i + 1));
            }
            let shuffled: Vec<Candidate> = idx.iter().map(|&i| c[i].clone()).collect();
            let p2 = make(&shuffled, &o);
            for (j, &i) in idx.iter().enumerate() {
                prop_assert_eq!(&p.decisions[i], &p2.decisions[j]);
            }
            // Planning again over what is kept deletes nothing more.
            let kept: Vec<Candidate> = c.iter().zip(&p.decisions).filter(|(_, d)| !d.delete).map(|(x, _)| x.clone()).collect();
            let again = make(&kept, &o);
            prop_assert_eq!(again.deletes(), 0, "second pass: {:?}", again.decisions);
        }
    }
}
