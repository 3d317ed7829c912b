//! The WAL a physical backup carries (its pg_wal), checked page by page as
//! it streams past: every page from the backup's start LSN to its stop LSN
//! (the manifest's WAL-Ranges) must be a WAL page of this segment, as
//! `XLogReaderValidatePageHeader` would accept it: a known magic, the same
//! as page 0's; valid info bits, the long header on page 0 only; an
//! xlp_pageaddr equal to the page's own address (so a page from another
//! segment, or a recycled one, is caught); an xlp_tli of the range's
//! timeline or an ancestor, never decreasing. A zeroed segment, or a page
//! zeroed inside one, fails even when the record's checksums of the tar
//! were rewritten to match it. Pages after the stop LSN may hold anything
//! (zeros from streaming, old WAL from a recycled file) and are not judged.

use std::io::{self, Read};

use pgb_common::fs::read_full;
use pgb_common::manifest::WalRangeEntry;
use pgb_common::wal::format_lsn;
use pgb_common::walhdr::{
    classify, major_for_magic, segno_of, valid_blcksz, valid_seg_size, PageHeader, WalFile,
    LONG_HEADER_SIZE, XLP_ALL_FLAGS, XLP_LONG_HEADER,
};

/// What reading one file of pg_wal found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Checked {
    /// Pages whose header was checked.
    pub pages: u64,
    /// The first problem, with a count of the others.
    pub problem: Option<String>,
}

/// Reads one file of pg_wal (`name`, relative to pg_wal) to its end; a
/// segment is checked against `ranges`. `seg_size` is the record's, when
/// it has one; otherwise page 0's long header says.
pub fn check(
    name: &str,
    data: &mut dyn Read,
    ranges: &[WalRangeEntry],
    seg_size: Option<u64>,
) -> io::Result<Checked> {
    let mut out = Checked::default();
    let Some((WalFile::Segment { tli, log, seg }, false)) = classify(name) else {
        io::copy(data, &mut io::sink())?;
        return Ok(out);
    };
    let mut bad: Vec<String> = Vec::new();
    let mut head = [0u8; LONG_HEADER_SIZE];
    let n = read_full(&mut &mut *data, &mut head)?;
    let long = PageHeader::parse(&head[..n]).and_then(|h| h.long);
    // The page size and segment size page 0 declares, when they are sane.
    let declared = long.filter(|l| valid_blcksz(l.xlog_blcksz) && valid_seg_size(l.seg_size));
    let (blcksz, ss) = match (declared, seg_size) {
        (Some(l), _) => (
            l.xlog_blcksz as usize,
            seg_size.unwrap_or(l.seg_size as u64),
        ),
        (None, Some(ss)) => (8192, ss),
        (None, None) => (8192, 16 << 20),
    };
    if let (Some(l), Some(want)) = (declared, seg_size) {
        if l.seg_size as u64 != want {
            bad.push(format!(
                "xlp_seg_size {} differs from the record's segment size {want}",
                l.seg_size
            ));
        }
    }
    let Some(segno) = segno_of(log, seg, ss) else {
        io::copy(data, &mut io::sink())?;
        out.problem = Some(format!("no segment name for {ss}-byte segments"));
        return Ok(out);
    };
    let seg_start = segno * ss;
    // The ranges of this segment's timeline (any, if none names it).
    let mine: Vec<&WalRangeEntry> = ranges.iter().filter(|r| r.timeline == tli).collect();
    let mine = if mine.is_empty() {
        ranges.iter().collect()
    } else {
        mine
    };
    let max_tli = mine
        .iter()
        .map(|r| r.timeline)
        .max()
        .unwrap_or(tli)
        .max(tli);
    let needed = |start: u64| {
        let end = start + blcksz as u64;
        mine.iter()
            .any(|r| end > r.start && start < r.end.max(r.start + 1))
    };

    let mut page = vec![0u8; blcksz];
    page[..n].copy_from_slice(&head[..n]);
    let mut filled = n;
    let mut size = n as u64;
    let mut magic0: Option<u16> = None;
    let mut prev_tli = 0u32;
    let mut index = 0u64;
    loop {
        let k = read_full(&mut &mut *data, &mut page[filled..])?;
        filled += k;
        size += k as u64;
        if filled == 0 {
            break;
        }
        let addr = seg_start + index * blcksz as u64;
        if index == 0 || needed(addr) {
            out.pages += 1;
            let p = &page[..filled];
            if let Some(why) =
                page_problem(p, addr, index == 0, max_tli, &mut magic0, &mut prev_tli)
            {
                bad.push(format!("page at {}: {why}", format_lsn(addr)));
            }
        }
        if filled < blcksz {
            break;
        }
        filled = 0;
        index += 1;
    }
    if size != ss {
        bad.push(format!("{size} bytes, expected {ss}"));
    }
    if let Some(first) = bad.first() {
        out.problem = Some(match bad.len() {
            1 => first.clone(),
            n => format!("{first} (and {} more problems)", n - 1),
        });
    }
    Ok(out)
}

/// What is wrong with one page, as XLogReaderValidatePageHeader sees it.
fn page_problem(
    p: &[u8],
    addr: u64,
    first: bool,
    max_tli: u32,
    magic0: &mut Option<u16>,
    prev_tli: &mut u32,
) -> Option<String> {
    if p.iter().all(|b| *b == 0) {
        return Some("zero-filled page".into());
    }
    let Some(h) = PageHeader::parse(p) else {
        return Some(format!("truncated: {} bytes", p.len()));
    };
    if major_for_magic(h.magic).is_none() {
        return Some(format!("invalid magic number {:04X}", h.magic));
    }
    match *magic0 {
        None => *magic0 = Some(h.magic),
        Some(m) if m != h.magic => {
            return Some(format!("magic number {:04X}, page 0 has {m:04X}", h.magic))
        }
        Some(_) => {}
    }
    if h.info & !XLP_ALL_FLAGS != 0 {
        return Some(format!("invalid info bits {:04X}", h.info));
    }
    if first != (h.info & XLP_LONG_HEADER != 0) {
        return Some(format!(
            "invalid info bits {:04X}: {}",
            h.info,
            if first {
                "page 0 has no long header"
            } else {
                "a long header after page 0"
            }
        ));
    }
    if h.pageaddr != addr {
        return Some(format!("unexpected pageaddr {}", format_lsn(h.pageaddr)));
    }
    if h.tli == 0 || h.tli > max_tli {
        return Some(format!("xlp_tli {} does not fit timeline {max_tli}", h.tli));
    }
    if h.tli < *prev_tli {
        return Some(format!(
            "out-of-sequence timeline ID {} (after {})",
            h.tli, prev_tli
        ));
    }
    *prev_tli = h.tli;
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SS: u64 = 1 << 20;
    const NAME: &str = "000000010000000000000003";

    /// A 1 MB segment 3 of timeline 1 whose every page has a valid header.
    fn segment() -> Vec<u8> {
        let mut s = vec![0u8; SS as usize];
        for (i, p) in s.chunks_mut(8192).enumerate() {
            p[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
            let info: u16 = if i == 0 { XLP_LONG_HEADER } else { 1 };
            p[2..4].copy_from_slice(&info.to_le_bytes());
            p[4..8].copy_from_slice(&1u32.to_le_bytes());
            p[8..16].copy_from_slice(&(3 * SS + i as u64 * 8192).to_le_bytes());
            if i == 0 {
                p[24..32].copy_from_slice(&7u64.to_le_bytes());
                p[32..36].copy_from_slice(&(SS as u32).to_le_bytes());
                p[36..40].copy_from_slice(&8192u32.to_le_bytes());
            }
            p[100] = 0xAB;
        }
        s
    }

    fn range(start: u64, end: u64) -> Vec<WalRangeEntry> {
        vec![WalRangeEntry {
            timeline: 1,
            start,
            end,
        }]
    }

    fn run(b: &[u8], r: &[WalRangeEntry]) -> Checked {
        check(NAME, &mut &b[..], r, Some(SS)).unwrap()
    }

    #[test]
    fn a_whole_segment_passes_page_by_page() {
        let r = range(3 * SS + 40, 3 * SS + SS);
        let c = run(&segment(), &r);
        assert_eq!(c.problem, None);
        assert_eq!(c.pages, 128);
        // Other files of pg_wal are read and passed over.
        let c = check("00000002.history", &mut &b"1\t0/1\tx\n"[..], &r, Some(SS)).unwrap();
        assert_eq!(c, Checked::default());
    }

    #[test]
    fn damage_between_start_and_stop_is_found_and_after_stop_ignored() {
        let r = range(3 * SS + 40, 3 * SS + 10 * 8192 + 5);
        let mut s = segment();
        s[20 * 8192..].fill(0);
        assert_eq!(run(&s, &r).problem, None, "past the stop LSN");
        assert_eq!(run(&s, &r).pages, 11);
        type Damage = fn(&mut Vec<u8>);
        let cases: [(&str, Damage); 6] = [
            ("zero-filled page", |s| s[5 * 8192..6 * 8192].fill(0)),
            ("invalid magic number", |s| s[0] ^= 0xFF),
            ("unexpected pageaddr", |s| s[4 * 8192 + 9] ^= 1),
            ("does not fit timeline", |s| s[7 * 8192 + 4] = 2),
            ("a long header after page 0", |s| s[2 * 8192 + 2] |= 2),
            ("bytes, expected", |s| s.truncate(SS as usize - 10)),
        ];
        for (want, damage) in cases {
            let mut s = segment();
            damage(&mut s);
            let p = run(&s, &range(3 * SS, 4 * SS)).problem.unwrap_or_default();
            assert!(p.contains(want), "{want}: {p}");
        }
        let p = run(&vec![0u8; SS as usize], &r).problem.unwrap();
        assert!(p.starts_with("page at 0/300000: zero-filled page"), "{p}");
    }
}
