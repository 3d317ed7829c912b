//! WAL page headers, WAL archive file names and timeline history files.
//!
//! The header layout is `XLogPageHeaderData` / `XLogLongPageHeaderData` of
//! PostgreSQL's `src/include/access/xlog_internal.h` (little-endian, as on
//! the platforms pgb runs on); the checks mirror
//! `XLogReaderValidatePageHeader` in `src/backend/access/transam/xlogreader.c`.

/// Size of the short page header (`SizeOfXLogShortPHD`, MAXALIGNed).
pub const SHORT_HEADER_SIZE: usize = 24;
/// Size of the long page header on the first page of a segment.
pub const LONG_HEADER_SIZE: usize = 40;

pub const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
pub const XLP_LONG_HEADER: u16 = 0x0002;
pub const XLP_BKP_REMOVABLE: u16 = 0x0004;
pub const XLP_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;
pub const XLP_ALL_FLAGS: u16 = 0x000F;

/// Smallest and largest segment sizes initdb accepts (`--wal-segsize`).
pub const MIN_SEG_SIZE: u32 = 1 << 20;
pub const MAX_SEG_SIZE: u32 = 1 << 30;

/// `XLOG_PAGE_MAGIC` of each supported major version.
pub const PAGE_MAGICS: &[(u16, u32)] = &[
    (0xD101, 12),
    (0xD106, 13),
    (0xD10D, 14),
    (0xD110, 15),
    (0xD113, 16),
    (0xD116, 17),
    (0xD118, 18),
];

/// The major version whose WAL carries `magic`.
pub fn major_for_magic(magic: u16) -> Option<u32> {
    PAGE_MAGICS
        .iter()
        .find(|(m, _)| *m == magic)
        .map(|(_, v)| *v)
}

/// The extra fields of the long header on page 0 of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongHeader {
    pub sysid: u64,
    pub seg_size: u32,
    pub xlog_blcksz: u32,
}

/// A WAL page header as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageHeader {
    pub magic: u16,
    pub info: u16,
    pub tli: u32,
    pub pageaddr: u64,
    pub rem_len: u32,
    /// Present when `info` has [`XLP_LONG_HEADER`] and the buffer holds it.
    pub long: Option<LongHeader>,
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

impl PageHeader {
    /// Parses the header at the start of `page`; `None` when `page` is
    /// shorter than the header it announces.
    pub fn parse(page: &[u8]) -> Option<PageHeader> {
        if page.len() < SHORT_HEADER_SIZE {
            return None;
        }
        let info = u16_at(page, 2);
        let long = if info & XLP_LONG_HEADER != 0 {
            if page.len() < LONG_HEADER_SIZE {
                return None;
            }
            Some(LongHeader {
                sysid: u64_at(page, 24),
                seg_size: u32_at(page, 32),
                xlog_blcksz: u32_at(page, 36),
            })
        } else {
            None
        };
        Some(PageHeader {
            magic: u16_at(page, 0),
            info,
            tli: u32_at(page, 4),
            pageaddr: u64_at(page, 8),
            rem_len: u32_at(page, 16),
            long,
        })
    }
}

/// One thing wrong with the first page of a segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderProblem {
    /// Short stable name: `bad-magic`, `bad-info`, `no-long-header`,
    /// `bad-seg-size`, `bad-blcksz`, `bad-pageaddr`, `bad-timeline`.
    pub problem: &'static str,
    pub detail: String,
}

fn problem(problem: &'static str, detail: String) -> HeaderProblem {
    HeaderProblem { problem, detail }
}

/// True for the segment sizes initdb accepts: a power of two, 1 MB..1 GB.
pub fn valid_seg_size(s: u32) -> bool {
    s.is_power_of_two() && (MIN_SEG_SIZE..=MAX_SEG_SIZE).contains(&s)
}

/// True for the block sizes PostgreSQL can be built with: 1 kB..64 kB.
pub fn valid_blcksz(b: u32) -> bool {
    b.is_power_of_two() && (1024..=65536).contains(&b)
}

/// Checks the header of page 0 of the segment file named for `name_tli`
/// and `segno` in an archive of `seg_size`-byte segments, as
/// `XLogReaderValidatePageHeader` would, without the system identifier
/// (compared by the caller across the archive). `xlp_tli` may be lower
/// than the name's timeline only when `tli_may_be_lower` (the first segment
/// of a timeline, copied from its parent at the switch point).
pub fn check_first_page(
    hdr: &PageHeader,
    name_tli: u32,
    segno: u64,
    seg_size: u64,
    tli_may_be_lower: bool,
) -> Vec<HeaderProblem> {
    let mut out = Vec::new();
    if major_for_magic(hdr.magic).is_none() {
        out.push(problem(
            "bad-magic",
            format!("invalid magic number {:04X}", hdr.magic),
        ));
        // Nothing else in the page can be trusted.
        return out;
    }
    if hdr.info & !XLP_ALL_FLAGS != 0 {
        out.push(problem(
            "bad-info",
            format!("invalid info bits {:04X}", hdr.info),
        ));
    }
    match hdr.long {
        None => out.push(problem(
            "no-long-header",
            format!(
                "invalid info bits {:04X}: page 0 has no long header",
                hdr.info
            ),
        )),
        Some(l) => {
            if !valid_seg_size(l.seg_size) {
                out.push(problem(
                    "bad-seg-size",
                    format!(
                        "xlp_seg_size {} is not a power of two in 1MB..1GB",
                        l.seg_size
                    ),
                ));
            } else if l.seg_size as u64 != seg_size {
                out.push(problem(
                    "bad-seg-size",
                    format!(
                        "xlp_seg_size {} differs from the archive's {seg_size}",
                        l.seg_size
                    ),
                ));
            }
            if !valid_blcksz(l.xlog_blcksz) {
                out.push(problem(
                    "bad-blcksz",
                    format!(
                        "xlp_xlog_blcksz {} is not a valid block size",
                        l.xlog_blcksz
                    ),
                ));
            }
        }
    }
    let expected = segno.wrapping_mul(seg_size);
    if hdr.pageaddr != expected {
        out.push(problem(
            "bad-pageaddr",
            format!(
                "unexpected pageaddr {} (the file name says {})",
                crate::wal::format_lsn(hdr.pageaddr),
                crate::wal::format_lsn(expected)
            ),
        ));
    }
    if hdr.tli > name_tli || (hdr.tli < name_tli && !tli_may_be_lower) || hdr.tli == 0 {
        out.push(problem(
            "bad-timeline",
            format!(
                "xlp_tli {} does not fit timeline {name_tli} of the file name",
                hdr.tli
            ),
        ));
    }
    out
}

/// What a file in a WAL archive is, from its name (a `.zst` suffix is
/// stripped first by [`classify`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalFile {
    /// `TTTTTTTTXXXXXXXXYYYYYYYY`: a complete segment.
    Segment { tli: u32, log: u32, seg: u32 },
    /// `...YYYYYYYY.partial`: the last, incomplete segment of a timeline
    /// archived at promotion; not a segment.
    Partial { tli: u32, log: u32, seg: u32 },
    /// `...YYYYYYYY.OOOOOOOO.backup`: a backup history file.
    Backup { tli: u32, log: u32, seg: u32 },
    /// `TTTTTTTT.history`: a timeline history file.
    History { tli: u32 },
}

fn hex8(s: &str) -> Option<u32> {
    if s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        u32::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

fn seg_name(s: &str) -> Option<(u32, u32, u32)> {
    if s.len() != 24 {
        return None;
    }
    Some((hex8(&s[0..8])?, hex8(&s[8..16])?, hex8(&s[16..24])?))
}

/// Classifies an archive file name; returns what it is and whether it
/// carries a `.zst` suffix. `None` for names that are no WAL file.
pub fn classify(name: &str) -> Option<(WalFile, bool)> {
    let (base, zst) = match name.strip_suffix(".zst") {
        Some(b) => (b, true),
        None => (name, false),
    };
    if let Some((tli, log, seg)) = seg_name(base) {
        return Some((WalFile::Segment { tli, log, seg }, zst));
    }
    if let Some(b) = base.strip_suffix(".partial") {
        let (tli, log, seg) = seg_name(b)?;
        return Some((WalFile::Partial { tli, log, seg }, zst));
    }
    if let Some(b) = base.strip_suffix(".backup") {
        let (s, off) = b.split_once('.')?;
        hex8(off)?;
        let (tli, log, seg) = seg_name(s)?;
        return Some((WalFile::Backup { tli, log, seg }, zst));
    }
    if let Some(b) = base.strip_suffix(".history") {
        return Some((WalFile::History { tli: hex8(b)? }, zst));
    }
    None
}

/// The segment number of a name's `log`/`seg` halves, `None` when `seg`
/// is out of range for `seg_size` (no such file name exists).
pub fn segno_of(log: u32, seg: u32, seg_size: u64) -> Option<u64> {
    let per_id = 0x1_0000_0000u64 / seg_size;
    ((seg as u64) < per_id).then(|| log as u64 * per_id + seg as u64)
}

/// One line of a timeline history file: the parent timeline and the LSN
/// where the next timeline switched off it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub parent_tli: u32,
    pub switchpoint: u64,
    pub reason: String,
}

/// Parses a `.history` file (`parentTLI<TAB>X/Y<TAB>reason` lines, `#`
/// comments and blank lines skipped), as readTimeLineHistory does; the
/// parent timelines must increase.
pub fn parse_history(text: &str) -> Result<Vec<HistoryEntry>, String> {
    let mut out: Vec<HistoryEntry> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let mut parts = l.splitn(3, |c: char| c.is_ascii_whitespace());
        let tli = parts
            .next()
            .and_then(|t| t.parse::<u32>().ok())
            .ok_or_else(|| format!("line {}: syntax error: expected a timeline ID", i + 1))?;
        let lsn = parts
            .next()
            .map(str::trim)
            .and_then(crate::wal::parse_lsn)
            .ok_or_else(|| format!("line {}: syntax error: expected a switchpoint", i + 1))?;
        if let Some(prev) = out.last() {
            if tli <= prev.parent_tli {
                return Err(format!(
                    "line {}: timeline IDs must be in increasing sequence",
                    i + 1
                ));
            }
        }
        out.push(HistoryEntry {
            parent_tli: tli,
            switchpoint: lsn,
            reason: parts.next().unwrap_or("").trim().to_string(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A long page header as PostgreSQL writes it on page 0.
    pub fn page0(tli: u32, pageaddr: u64, sysid: u64, seg_size: u32) -> Vec<u8> {
        let mut p = vec![0u8; 8192];
        p[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        p[2..4].copy_from_slice(&(XLP_LONG_HEADER | XLP_BKP_REMOVABLE).to_le_bytes());
        p[4..8].copy_from_slice(&tli.to_le_bytes());
        p[8..16].copy_from_slice(&pageaddr.to_le_bytes());
        p[24..32].copy_from_slice(&sysid.to_le_bytes());
        p[32..36].copy_from_slice(&seg_size.to_le_bytes());
        p[36..40].copy_from_slice(&8192u32.to_le_bytes());
        p
    }

    #[test]
    fn parses_the_long_header() {
        let h = PageHeader::parse(&page0(2, 0x300_0000, 7, 1 << 24)).unwrap();
        assert_eq!(h.magic, 0xD110);
        assert_eq!(h.tli, 2);
        assert_eq!(h.pageaddr, 0x300_0000);
        assert_eq!(
            h.long,
            Some(LongHeader {
                sysid: 7,
                seg_size: 1 << 24,
                xlog_blcksz: 8192
            })
        );
        assert_eq!(major_for_magic(h.magic), Some(15));
        assert!(PageHeader::parse(&[0u8; 10]).is_none());
    }

    #[test]
    fn clean_first_page_has_no_problems() {
        let h = PageHeader::parse(&page0(1, 3 << 20, 7, 1 << 20)).unwrap();
        assert!(check_first_page(&h, 1, 3, 1 << 20, false).is_empty());
    }

    #[test]
    fn each_fault_is_named() {
        let names = |p: Vec<u8>, tli: u32, segno: u64, lower: bool| -> Vec<&'static str> {
            let h = PageHeader::parse(&p).unwrap();
            check_first_page(&h, tli, segno, 1 << 20, lower)
                .into_iter()
                .map(|p| p.problem)
                .collect()
        };
        let mut p = page0(1, 3 << 20, 7, 1 << 20);
        p[0] ^= 1;
        assert_eq!(names(p, 1, 3, false), ["bad-magic"]);
        let mut p = page0(1, 3 << 20, 7, 1 << 20);
        p[2] = 0; // no long header
        assert_eq!(names(p, 1, 3, false), ["no-long-header"]);
        let mut p = page0(1, 3 << 20, 7, 1 << 20);
        p[3] = 0x10;
        assert_eq!(names(p, 1, 3, false), ["bad-info"]);
        assert_eq!(
            names(page0(1, 3 << 20, 7, 3 << 20), 1, 3, false),
            ["bad-seg-size"]
        );
        assert_eq!(
            names(page0(1, 3 << 20, 7, 1 << 24), 1, 3, false),
            ["bad-seg-size"]
        );
        assert_eq!(
            names(page0(1, 4 << 20, 7, 1 << 20), 1, 3, false),
            ["bad-pageaddr"]
        );
        assert_eq!(
            names(page0(3, 3 << 20, 7, 1 << 20), 2, 3, false),
            ["bad-timeline"]
        );
        // The first segment of timeline 2 starts with its parent's pages.
        assert_eq!(
            names(page0(1, 3 << 20, 7, 1 << 20), 2, 3, false),
            ["bad-timeline"]
        );
        assert!(names(page0(1, 3 << 20, 7, 1 << 20), 2, 3, true).is_empty());
    }

    #[test]
    fn archive_names_are_classified() {
        assert_eq!(
            classify("00000002000000010000000A"),
            Some((
                WalFile::Segment {
                    tli: 2,
                    log: 1,
                    seg: 10
                },
                false
            ))
        );
        assert_eq!(
            classify("00000002000000010000000A.zst").map(|c| c.1),
            Some(true)
        );
        assert!(matches!(
            classify("000000010000000000000003.partial"),
            Some((WalFile::Partial { seg: 3, .. }, false))
        ));
        assert!(matches!(
            classify("000000010000000000000003.00000028.backup"),
            Some((WalFile::Backup { seg: 3, .. }, false))
        ));
        assert_eq!(
            classify("00000002.history"),
            Some((WalFile::History { tli: 2 }, false))
        );
        for bad in [
            "README",
            "0000000100000000000000G3",
            "1.history",
            ".x.pgb-tmp.1.0",
        ] {
            assert_eq!(classify(bad), None, "{bad}");
        }
        // 16 MB segments: 256 per log id; 1 MB: 4096.
        assert_eq!(segno_of(1, 3, 1 << 24), Some(259));
        assert_eq!(segno_of(0, 256, 1 << 24), None);
        assert_eq!(segno_of(0, 256, 1 << 20), Some(256));
    }

    #[test]
    fn history_files_parse() {
        let h = parse_history(
            "1\t0/3000000\tno recovery target specified\n\n# c\n2\t0/5000A28\tat restore point \"x\"\n",
        )
        .unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[1].parent_tli, 2);
        assert_eq!(h[1].switchpoint, 0x5000A28);
        assert_eq!(h[1].reason, "at restore point \"x\"");
        assert!(parse_history("2\t0/1\tx\n1\t0/2\ty\n").is_err());
        assert!(parse_history("x\t0/1\n").is_err());
    }
}
