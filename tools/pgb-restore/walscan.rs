//! Reads the commit times out of archived WAL: how far in time an archive
//! really reaches. PostgreSQL stops a recovery to a time target at the
//! first commit or abort record stamped at or after it; when the WAL holds
//! none, recovery ends short of the target ("recovery ended before
//! configured recovery target was reached"). File times say nothing once an
//! archive has been copied; the records themselves do.
//!
//! The layout (src/include/access/xlogrecord.h, xlog_internal.h, the same
//! in PostgreSQL 14 to 18): pages of `xlp_xlog_blcksz` bytes, each with a
//! header (40 bytes on a segment's first page, 24 on the others) whose
//! `xlp_pageaddr` is the page's own LSN; records MAXALIGNed (8), each
//! starting with `XLogRecord` (`xl_tot_len` u32, `xl_xid` u32, `xl_prev`
//! u64, `xl_info` u8, `xl_rmid` u8, 2 pad, `xl_crc` u32) and spanning page
//! headers. Transaction records (`RM_XACT_ID` 1; COMMIT 0x00, ABORT 0x20,
//! COMMIT_PREPARED 0x30, ABORT_PREPARED 0x40 under `XLOG_XACT_OPMASK`
//! 0x70) carry no block references; their main data starts with
//! `xact_time`, microseconds since 2000-01-01 UTC.

use chrono::{DateTime, Utc};
use pgb_common::walhdr::{PageHeader, XLP_FIRST_IS_CONTRECORD, XLP_LONG_HEADER};

const RECORD_HEADER: usize = 24;
const RM_XLOG_ID: u8 = 0;
const XLOG_SWITCH: u8 = 0x40;
const RM_XACT_ID: u8 = 1;
const XLOG_XACT_OPMASK: u8 = 0x70;
const XACT_OPS: [u8; 4] = [0x00, 0x20, 0x30, 0x40];
const XLR_BLOCK_ID_DATA_SHORT: u8 = 255;
const XLR_BLOCK_ID_DATA_LONG: u8 = 254;
const XLR_BLOCK_ID_ORIGIN: u8 = 253;
const XLR_BLOCK_ID_TOPLEVEL_XID: u8 = 252;
/// 2000-01-01T00:00:00Z in Unix seconds (PostgreSQL's epoch).
const PG_EPOCH: i64 = 946_684_800;

fn maxalign(n: usize) -> usize {
    (n + 7) & !7
}

/// The record bytes of one segment file (`seg_lsn`: the LSN it starts at),
/// page headers taken out, up to the first page that is not this segment's
/// (a recycled or zeroed tail). Also the length of the record continued
/// from the previous segment, which comes first.
fn record_stream(seg: &[u8], seg_lsn: u64) -> Option<(Vec<u8>, usize)> {
    let first = PageHeader::parse(seg)?;
    let blcksz = first.long?.xlog_blcksz as usize;
    if blcksz < 1024 || blcksz % 8 != 0 || first.pageaddr != seg_lsn {
        return None;
    }
    let cont = if first.info & XLP_FIRST_IS_CONTRECORD != 0 {
        first.rem_len as usize
    } else {
        0
    };
    let mut out = Vec::with_capacity(seg.len());
    for (i, page) in seg.chunks(blcksz).enumerate() {
        let Some(h) = PageHeader::parse(page) else {
            break;
        };
        if h.pageaddr != seg_lsn + (i * blcksz) as u64 {
            break;
        }
        let size = if h.info & XLP_LONG_HEADER != 0 {
            40
        } else {
            24
        };
        if page.len() < size {
            break;
        }
        out.extend_from_slice(&page[size..]);
    }
    Some((out, cont))
}

/// The `xact_time` of a transaction record, when `rec` is one.
fn xact_time(rec: &[u8]) -> Option<i64> {
    let info = rec[16];
    if rec[17] != RM_XACT_ID || !XACT_OPS.contains(&(info & XLOG_XACT_OPMASK)) {
        return None;
    }
    let mut p = RECORD_HEADER;
    let main_len = loop {
        match *rec.get(p)? {
            XLR_BLOCK_ID_DATA_SHORT => break *rec.get(p + 1)? as usize,
            XLR_BLOCK_ID_DATA_LONG => {
                break u32::from_le_bytes(rec.get(p + 1..p + 5)?.try_into().ok()?) as usize
            }
            XLR_BLOCK_ID_ORIGIN => p += 3,
            XLR_BLOCK_ID_TOPLEVEL_XID => p += 5,
            // A block reference: not a transaction record as written here.
            _ => return None,
        }
    };
    if main_len < 8 || main_len > rec.len() {
        return None;
    }
    let main = &rec[rec.len() - main_len..];
    Some(i64::from_le_bytes(main[..8].try_into().ok()?))
}

/// The commit and abort times in one archived segment (its plaintext),
/// in the order written; empty when it holds none or is not the segment
/// starting at `seg_lsn`.
pub fn xact_times(seg: &[u8], seg_lsn: u64) -> Vec<DateTime<Utc>> {
    let Some((s, cont)) = record_stream(seg, seg_lsn) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut pos = maxalign(cont);
    while pos + RECORD_HEADER <= s.len() {
        let len = u32::from_le_bytes(s[pos..pos + 4].try_into().unwrap()) as usize;
        if len < RECORD_HEADER || pos + len > s.len() {
            // The end of the WAL, or a record going on in the next segment.
            break;
        }
        let rec = &s[pos..pos + len];
        if rec[17] == RM_XLOG_ID && rec[16] & 0xF0 == XLOG_SWITCH {
            break;
        }
        if let Some(us) = xact_time(rec) {
            let secs = us.div_euclid(1_000_000);
            let micros = us.rem_euclid(1_000_000);
            if let Some(t) = DateTime::from_timestamp(PG_EPOCH + secs, (micros * 1000) as u32) {
                out.push(t);
            }
        }
        pos += maxalign(len);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLCKSZ: usize = 8192;

    /// A page header: long on the first page.
    fn header(first: bool, pageaddr: u64, info: u16, rem_len: u32) -> Vec<u8> {
        let mut h = vec![0u8; if first { 40 } else { 24 }];
        h[0..2].copy_from_slice(&0xD10Du16.to_le_bytes());
        let info = info | if first { XLP_LONG_HEADER } else { 0 };
        h[2..4].copy_from_slice(&info.to_le_bytes());
        h[4..8].copy_from_slice(&1u32.to_le_bytes());
        h[8..16].copy_from_slice(&pageaddr.to_le_bytes());
        h[16..20].copy_from_slice(&rem_len.to_le_bytes());
        if first {
            h[32..36].copy_from_slice(&(1u32 << 20).to_le_bytes());
            h[36..40].copy_from_slice(&(BLCKSZ as u32).to_le_bytes());
        }
        h
    }

    /// A record with an origin header and `main` as its main data.
    fn record(rmid: u8, info: u8, main: &[u8]) -> Vec<u8> {
        let mut r = vec![0u8; RECORD_HEADER];
        r[16] = info;
        r[17] = rmid;
        r.extend_from_slice(&[XLR_BLOCK_ID_ORIGIN, 0, 0]);
        if main.len() < 256 {
            r.extend_from_slice(&[XLR_BLOCK_ID_DATA_SHORT, main.len() as u8]);
        } else {
            r.push(XLR_BLOCK_ID_DATA_LONG);
            r.extend_from_slice(&(main.len() as u32).to_le_bytes());
        }
        r.extend_from_slice(main);
        let len = r.len() as u32;
        r[0..4].copy_from_slice(&len.to_le_bytes());
        r
    }

    /// A commit at `us`, its main data `size` bytes long (subtransactions,
    /// invalidations... follow xact_time).
    fn commit(us: i64, size: usize) -> Vec<u8> {
        let mut main = us.to_le_bytes().to_vec();
        main.resize(size.max(16), 0);
        record(RM_XACT_ID, 0x00, &main)
    }

    /// Lays `stream` (MAXALIGNed records) out in pages from `lsn`.
    fn segment(lsn: u64, cont: u32, stream: &[u8], pages: usize) -> Vec<u8> {
        let mut seg = Vec::new();
        let mut rest = stream;
        for i in 0..pages {
            let h = header(
                i == 0,
                lsn + (i * BLCKSZ) as u64,
                if i == 0 && cont > 0 {
                    XLP_FIRST_IS_CONTRECORD
                } else {
                    0
                },
                if i == 0 { cont } else { 0 },
            );
            let room = BLCKSZ - h.len();
            seg.extend_from_slice(&h);
            let n = room.min(rest.len());
            seg.extend_from_slice(&rest[..n]);
            seg.resize(seg.len() + room - n, 0);
            rest = &rest[n..];
        }
        seg
    }

    fn aligned(mut r: Vec<u8>) -> Vec<u8> {
        r.resize(maxalign(r.len()), 0);
        r
    }

    #[test]
    fn commit_times_are_read_across_page_boundaries() {
        let lsn = 5 << 20;
        let t1 = 817_000_000_000_000i64; // 2025-11-21 ...
        let mut stream = vec![0xAB; 13]; // the end of a record from before
        stream.resize(16, 0);
        stream.extend(aligned(record(9, 0x10, b"not a commit")));
        stream.extend(aligned(commit(t1, 0)));
        // A commit that straddles the first page boundary.
        let here = stream.len() + 40;
        stream.extend(aligned(commit(t1 + 5_000_000, BLCKSZ - here + 100)));
        assert!(stream.len() + 40 > BLCKSZ);
        stream.extend(aligned(commit(t1 + 9_000_000, 0)));
        let seg = segment(lsn, 13, &stream, 3);
        let got = xact_times(&seg, lsn);
        let want: Vec<DateTime<Utc>> = [t1, t1 + 5_000_000, t1 + 9_000_000]
            .iter()
            .map(|us| DateTime::from_timestamp(PG_EPOCH + us / 1_000_000, 0).unwrap())
            .collect();
        assert_eq!(got, want);
        // Another segment's file, or a page from an older use: nothing, or
        // nothing past it.
        assert!(xact_times(&seg, lsn + (1 << 20)).is_empty());
        let mut stale = seg.clone();
        stale[BLCKSZ + 8] ^= 0x01; // page 1's xlp_pageaddr
        assert_eq!(xact_times(&stale, lsn).len(), 1);
    }

    #[test]
    fn a_switch_ends_the_segment() {
        let lsn = 5 << 20;
        let mut stream = aligned(record(RM_XLOG_ID, XLOG_SWITCH, b""));
        stream.extend(aligned(commit(817_000_000_000_000, 0)));
        assert!(xact_times(&segment(lsn, 0, &stream, 1), lsn).is_empty());
    }
}
