//! The commit timestamps in a WAL segment: what a `recovery_target_time`
//! can stop before.
//!
//! PostgreSQL stops a time-targeted recovery before the first commit or
//! abort record whose time is after the target (`recoveryStopsBefore` in
//! `src/backend/access/transam/xlogrecovery.c`) and refuses to end recovery
//! without reaching it ("recovery ended before configured recovery target
//! was reached"): a target needs a commit after it in the WAL recovery
//! reads. This walks the records of one segment as `xlogreader.c` does:
//! page headers (`XLogPageHeaderData`) skipped, records (`XLogRecord`,
//! MAXALIGNed) followed by their length and checked by their CRC-32C and
//! `xl_prev` link, and reads `xact_time` from the main data of `RM_XACT_ID`
//! commit and abort records (`xl_xact_commit`, `xl_xact_abort`).

use chrono::{DateTime, Utc};

use crate::walhdr::{PageHeader, LONG_HEADER_SIZE, SHORT_HEADER_SIZE, XLP_FIRST_IS_CONTRECORD};

const RECORD_HEADER: usize = 24;
const RM_XACT_ID: u8 = 1;
const XLOG_XACT_OPMASK: u8 = 0x70;
/// Commit, abort, commit prepared, abort prepared.
const XACT_ENDS: [u8; 4] = [0x00, 0x20, 0x30, 0x40];
const XLR_BLOCK_ID_DATA_SHORT: u8 = 255;
const XLR_BLOCK_ID_DATA_LONG: u8 = 254;
const XLR_BLOCK_ID_ORIGIN: u8 = 253;
const XLR_BLOCK_ID_TOPLEVEL_XID: u8 = 252;
/// 2000-01-01 00:00:00 UTC, PostgreSQL's epoch, in Unix seconds.
const POSTGRES_EPOCH: i64 = 946_684_800;

/// CRC-32C (Castagnoli), as `COMP_CRC32C`.
fn crc32c(mut crc: u32, data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let t = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    c >> 1 ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    for b in data {
        crc = t[((crc ^ *b as u32) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// A PostgreSQL `TimestampTz` (microseconds since 2000-01-01 UTC).
pub fn from_timestamptz(us: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros(us.checked_add(POSTGRES_EPOCH * 1_000_000)?)
}

/// The record bytes of a segment, page headers removed.
struct Payload {
    data: Vec<u8>,
    /// Where each page's records start: (offset in `data`, LSN).
    pages: Vec<(usize, u64)>,
    /// How much of `data` continues a record from the previous segment.
    skip: usize,
}

/// The record bytes of segment `seg` (its whole content). Stops at the
/// first page whose header does not belong to this segment (a recycled
/// file's old content).
fn payload(seg: &[u8], seg_start: u64) -> Option<Payload> {
    let first = PageHeader::parse(seg)?;
    let blcksz = first.long?.xlog_blcksz as usize;
    if blcksz < 1024 || !blcksz.is_power_of_two() || first.pageaddr != seg_start {
        return None;
    }
    let skip = if first.info & XLP_FIRST_IS_CONTRECORD != 0 {
        first.rem_len as usize
    } else {
        0
    };
    let mut out = Vec::with_capacity(seg.len());
    let mut pages = Vec::new();
    for (i, page) in seg.chunks(blcksz).enumerate() {
        let Some(h) = PageHeader::parse(page) else {
            break;
        };
        let addr = seg_start + (i * blcksz) as u64;
        if h.magic != first.magic || h.pageaddr != addr {
            break;
        }
        let hdr = if i == 0 {
            LONG_HEADER_SIZE
        } else {
            SHORT_HEADER_SIZE
        };
        pages.push((out.len(), addr + hdr as u64));
        out.extend_from_slice(&page[hdr.min(page.len())..]);
    }
    Some(Payload {
        data: out,
        pages,
        skip,
    })
}

fn lsn_of(pages: &[(usize, u64)], pos: usize) -> u64 {
    let i = pages.partition_point(|(o, _)| *o <= pos) - 1;
    pages[i].1 + (pos - pages[i].0) as u64
}

/// The system identifier in the long page header of segment `seg`.
pub fn system_identifier(seg: &[u8]) -> Option<u64> {
    Some(PageHeader::parse(seg)?.long?.sysid)
}

/// The `xact_time` of a commit or abort record, if `rec` is one.
fn xact_time(rec: &[u8]) -> Option<i64> {
    let (info, rmid) = (rec[16], rec[17]);
    if rmid != RM_XACT_ID || !XACT_ENDS.contains(&(info & XLOG_XACT_OPMASK)) {
        return None;
    }
    let mut off = RECORD_HEADER;
    let len = loop {
        match *rec.get(off)? {
            XLR_BLOCK_ID_DATA_SHORT => break *rec.get(off + 1)? as usize,
            XLR_BLOCK_ID_DATA_LONG => break u32_at(rec.get(..off + 5)?, off + 1) as usize,
            XLR_BLOCK_ID_ORIGIN => off += 3,
            XLR_BLOCK_ID_TOPLEVEL_XID => off += 5,
            // Block references: no commit or abort record has them.
            _ => return None,
        }
    };
    let data = rec.get(rec.len().checked_sub(len)?..)?;
    Some(i64::from_le_bytes(data.get(..8)?.try_into().ok()?))
}

/// The commit and abort times in segment `seg` (its whole, decompressed
/// content; `seg_start` its first LSN), in WAL order. Records are read up
/// to the first that does not check out (zeros after a switch, a record
/// continuing into the next segment, old content of a recycled file).
pub fn xact_times(seg: &[u8], seg_start: u64) -> Vec<DateTime<Utc>> {
    let mut out = Vec::new();
    let Some(Payload { data, pages, skip }) = payload(seg, seg_start) else {
        return out;
    };
    let mut pos = (skip + 7) & !7;
    let mut prev: Option<u64> = None;
    while pos + RECORD_HEADER <= data.len() {
        let tot = u32_at(&data, pos) as usize;
        if tot < RECORD_HEADER || pos + tot > data.len() {
            break;
        }
        let rec = &data[pos..pos + tot];
        let crc = crc32c(!0, &rec[RECORD_HEADER..]);
        let crc = !crc32c(crc, &rec[..20]);
        if crc != u32_at(rec, 20) {
            break;
        }
        let lsn = lsn_of(&pages, pos);
        if prev.is_some_and(|p| u64_at(rec, 8) != p) {
            break;
        }
        if let Some(t) = xact_time(rec).and_then(from_timestamptz) {
            out.push(t);
        }
        prev = Some(lsn);
        pos = (pos + tot + 7) & !7;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        assert_eq!(!crc32c(!0, b"123456789"), 0xE306_9283);
    }

    #[test]
    fn timestamptz_epoch() {
        assert_eq!(
            from_timestamptz(0).unwrap().to_rfc3339(),
            "2000-01-01T00:00:00+00:00"
        );
    }

    /// A segment of two 8 kB pages holding a commit record (time 1 s after
    /// the epoch) that spans the page boundary, then zeros.
    #[test]
    fn a_commit_record_across_a_page_is_read() {
        let seg_start = 0x100_0000u64;
        let mut seg = vec![0u8; 8192 * 2];
        seg[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        seg[2..4].copy_from_slice(&crate::walhdr::XLP_LONG_HEADER.to_le_bytes());
        seg[4..8].copy_from_slice(&1u32.to_le_bytes());
        seg[8..16].copy_from_slice(&seg_start.to_le_bytes());
        seg[24..32].copy_from_slice(&7u64.to_le_bytes());
        seg[32..36].copy_from_slice(&(1u32 << 20).to_le_bytes());
        seg[36..40].copy_from_slice(&8192u32.to_le_bytes());
        // Page 1's short header.
        seg[8192..8194].copy_from_slice(&0xD110u16.to_le_bytes());
        seg[8192 + 2..8192 + 4].copy_from_slice(&1u16.to_le_bytes());
        seg[8192 + 4..8192 + 8].copy_from_slice(&1u32.to_le_bytes());
        seg[8192 + 8..8192 + 16].copy_from_slice(&(seg_start + 8192).to_le_bytes());
        // One record filling page 0 up to its end and 64 bytes of page 1.
        let room = 8192 - LONG_HEADER_SIZE;
        let tot = room + 64;
        let mut rec = vec![0u8; tot];
        rec[0..4].copy_from_slice(&(tot as u32).to_le_bytes());
        rec[16] = 0x00;
        rec[17] = RM_XACT_ID;
        rec[24] = XLR_BLOCK_ID_DATA_LONG;
        let len = (tot - 29) as u32;
        rec[25..29].copy_from_slice(&len.to_le_bytes());
        rec[29..37].copy_from_slice(&1_000_000i64.to_le_bytes());
        let crc = !crc32c(crc32c(!0, &rec[24..]), &rec[..20]);
        rec[20..24].copy_from_slice(&crc.to_le_bytes());
        seg[LONG_HEADER_SIZE..8192].copy_from_slice(&rec[..room]);
        seg[8192 + 24..8192 + 24 + 64].copy_from_slice(&rec[room..]);
        let got = xact_times(&seg, seg_start);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].to_rfc3339(), "2000-01-01T00:00:01+00:00");
        assert_eq!(system_identifier(&seg), Some(7));
        // A flipped byte fails the CRC: nothing is read.
        seg[8192 + 24 + 10] ^= 1;
        assert!(xact_times(&seg, seg_start).is_empty());
    }
}
