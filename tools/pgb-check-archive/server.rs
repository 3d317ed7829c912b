//! `-d`: what the server archiving into the archive says about it
//! (pg_stat_archiver, its current WAL position), compared with what the
//! archive holds.

use pgb_common::error::{Error, Result};
use pgb_common::pg::{Conn, ConnArgs, Psql};
use pgb_common::wal::{format_lsn, parse_lsn, segment_name_for_segno};
use pgb_common::walhdr::classify;
use serde_json::{json, Value};

use crate::check::{Analysis, Problem};

/// The server's state, as read before the archive is listed.
pub struct State {
    pub in_recovery: bool,
    pub lsn: u64,
    pub timeline: u32,
    pub seg_size: u64,
    pub system_identifier: u64,
    pub archive_mode: String,
    pub archived_count: u64,
    pub last_archived_wal: Option<String>,
    pub last_archived_time: Option<f64>,
    pub failed_count: u64,
    pub last_failed_wal: Option<String>,
    pub last_failed_time: Option<f64>,
    /// Filled by [`judge`].
    pub segments_behind: Option<u64>,
    pub archive_newest: Option<String>,
}

const SQL: &str = "SELECT pg_is_in_recovery(), \
  CASE WHEN pg_is_in_recovery() \
       THEN coalesce(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()) \
       ELSE pg_current_wal_lsn() END, \
  CASE WHEN pg_is_in_recovery() \
       THEN coalesce((SELECT received_tli FROM pg_stat_wal_receiver), \
                     (SELECT timeline_id FROM pg_control_checkpoint()))::text \
       ELSE pg_walfile_name(pg_current_wal_lsn()) END, \
  (SELECT bytes_per_wal_segment FROM pg_control_init()), \
  (SELECT system_identifier FROM pg_control_system()), \
  current_setting('archive_mode'), \
  a.archived_count, a.last_archived_wal, extract(epoch FROM a.last_archived_time), \
  a.failed_count, a.last_failed_wal, extract(epoch FROM a.last_failed_time) \
  FROM pg_stat_archiver a";

pub fn query(args: &ConnArgs, dbname: &str) -> Result<State> {
    let conn = Conn::new(args, Some(dbname))?;
    let mut psql = Psql::start(&conn, "-d: read pg_stat_archiver")?;
    let rows = psql.query(SQL)?;
    psql.close()?;
    let row = rows
        .into_iter()
        .next()
        .filter(|r| r.len() == 12)
        .ok_or_else(|| Error::msg("-d: unexpected answer from pg_stat_archiver"))?;
    parse(&row)
}

fn parse(r: &[String]) -> Result<State> {
    let bad =
        |what: &str, v: &str| Error::msg(format!("-d: unexpected {what} {v:?} from the server"));
    let opt = |v: &String| (!v.is_empty()).then(|| v.clone());
    let num = |what: &str, v: &String| v.parse::<u64>().map_err(|_| bad(what, v));
    let time = |what: &str, v: &String| -> Result<Option<f64>> {
        opt(v)
            .map(|t| t.parse::<f64>().map_err(|_| bad(what, &t)))
            .transpose()
    };
    let in_recovery = r[0] == "t";
    let lsn = parse_lsn(&r[1]).ok_or_else(|| bad("WAL position", &r[1]))?;
    let timeline = if in_recovery {
        r[2].parse::<u32>().map_err(|_| bad("timeline", &r[2]))?
    } else {
        r[2].get(..8)
            .and_then(|t| u32::from_str_radix(t, 16).ok())
            .ok_or_else(|| bad("WAL file name", &r[2]))?
    };
    Ok(State {
        in_recovery,
        lsn,
        timeline,
        seg_size: num("segment size", &r[3])?,
        system_identifier: num("system identifier", &r[4])?,
        archive_mode: r[5].clone(),
        archived_count: num("archived_count", &r[6])?,
        last_archived_wal: opt(&r[7]),
        last_archived_time: time("last_archived_time", &r[8])?,
        failed_count: num("failed_count", &r[9])?,
        last_failed_wal: opt(&r[10]),
        last_failed_time: time("last_failed_time", &r[11])?,
        segments_behind: None,
        archive_newest: None,
    })
}

fn rfc3339(epoch: f64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(epoch.max(0.0));
    crate::check::rfc3339(t)
}

impl State {
    pub fn current_segment(&self) -> String {
        segment_name_for_segno(self.timeline, self.lsn / self.seg_size, self.seg_size)
    }

    pub fn record(&self) -> Value {
        json!({
            "in_recovery": self.in_recovery,
            "wal_lsn": format_lsn(self.lsn),
            "current_segment": self.current_segment(),
            "timeline": self.timeline,
            "segment_size": self.seg_size,
            "system_identifier": self.system_identifier.to_string(),
            "archive_mode": self.archive_mode,
            "archived_count": self.archived_count,
            "last_archived_wal": self.last_archived_wal,
            "last_archived_time": self.last_archived_time.map(rfc3339),
            "failed_count": self.failed_count,
            "last_failed_wal": self.last_failed_wal,
            "last_failed_time": self.last_failed_time.map(rfc3339),
            "archive_newest_segment": self.archive_newest,
            "segments_behind": self.segments_behind,
        })
    }
}

/// Adds the server's view to the analysis: problems `archive-mode-off`,
/// `archiver-failing`, `archived-missing` and (with --max-behind)
/// `behind`.
pub fn judge(mut s: State, an: &mut Analysis, max_behind: Option<u64>) {
    let ss = s.seg_size;
    let current = s.lsn / ss;
    // The newest segment of the server's timeline in the archive.
    let newest = if an.seg_size == Some(ss) {
        an.timelines
            .iter()
            .find(|t| t.tli == s.timeline)
            .and_then(|t| t.ranges.last())
            .map(|r| r.1)
    } else {
        None
    };
    s.archive_newest = newest.map(|n| segment_name_for_segno(s.timeline, n, ss));
    // Every segment before the one being written is finished.
    s.segments_behind = newest.map(|n| current.saturating_sub(1).saturating_sub(n));
    let cur_name = s.current_segment();
    if s.archive_mode == "off" && !s.in_recovery {
        an.problems.push(Problem::new(
            "archive-mode-off",
            cur_name.clone(),
            "the server does not archive (archive_mode = off)",
        ));
    }
    let failing = s.failed_count > 0
        && match (s.last_failed_time, s.last_archived_time) {
            (Some(f), Some(a)) => f > a,
            (Some(_), None) => true,
            _ => false,
        };
    if failing {
        let file = s.last_failed_wal.clone().unwrap_or_default();
        let mut p = Problem::new(
            "archiver-failing",
            file.clone(),
            format!(
                "the server's archive_command last failed on {file} at {}, after its last success{}",
                s.last_failed_time.map(rfc3339).unwrap_or_default(),
                s.last_archived_time
                    .map(|t| format!(" ({})", rfc3339(t)))
                    .unwrap_or_default()
            ),
        );
        p.extra.insert("failed_count".into(), s.failed_count.into());
        an.problems.push(p);
    }
    if let Some(w) = &s.last_archived_wal {
        // Segments, .partial, .history and .backup files alike, in any
        // stored form.
        if classify(w).is_some() && !an.stored_names.contains(w) {
            an.problems.push(Problem::new(
                "archived-missing",
                w.clone(),
                format!(
                    "the server reports {w} archived (pg_stat_archiver.last_archived_wal) \
                     but it is not in this archive: archive_command writes elsewhere, or \
                     the file was removed"
                ),
            ));
        }
    }
    if let (Some(max), Some(b)) = (max_behind, s.segments_behind) {
        if b > max {
            let mut p = Problem::new(
                "behind",
                cur_name.clone(),
                format!(
                    "{b} finished segment(s) of timeline {} are not archived yet: \
                     the server writes {cur_name}, the archive ends at {} (--max-behind {max})",
                    s.timeline,
                    s.archive_newest.clone().unwrap_or_default()
                ),
            );
            p.extra.insert("segments_behind".into(), b.into());
            an.problems.push(p);
        }
    }
    an.server = Some(s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_primary_and_a_standby_row() {
        let row = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let p = parse(&row(&[
            "f",
            "0/300060",
            "000000020000000000000003",
            "1048576",
            "7311",
            "on",
            "5",
            "000000020000000000000002",
            "1763700000.5",
            "0",
            "",
            "",
        ]))
        .unwrap();
        assert_eq!(p.timeline, 2);
        assert_eq!(p.current_segment(), "000000020000000000000003");
        assert_eq!(p.last_failed_time, None);
        let s = parse(&row(&[
            "t",
            "0/5000000",
            "3",
            "16777216",
            "1",
            "always",
            "0",
            "",
            "",
            "0",
            "",
            "",
        ]))
        .unwrap();
        assert_eq!(s.timeline, 3);
        assert!(s.in_recovery);
    }
}
