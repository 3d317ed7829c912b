//! WAL locations and segment file names.

/// Parses an LSN written as `X/Y` (hexadecimal halves).
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    if hi > u32::MAX as u64 || lo > u32::MAX as u64 {
        return None;
    }
    Some(hi << 32 | lo)
}

pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// The segment file name holding byte `lsn` on `timeline`.
pub fn segment_name(timeline: u32, lsn: u64, seg_size: u64) -> String {
    segment_name_for_segno(timeline, lsn / seg_size, seg_size)
}

/// The file name of segment number `segno`, as XLogFileName() builds it.
pub fn segment_name_for_segno(timeline: u32, segno: u64, seg_size: u64) -> String {
    let per_id = 0x1_0000_0000u64 / seg_size;
    format!(
        "{:08X}{:08X}{:08X}",
        timeline,
        segno / per_id,
        segno % per_id
    )
}

/// The segment holding the last byte before `lsn` (XLByteToPrevSeg): the
/// last segment a backup stopping at `lsn` needs.
pub fn prev_segment_name(timeline: u32, lsn: u64, seg_size: u64) -> String {
    segment_name(timeline, lsn.saturating_sub(1), seg_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_round_trip() {
        assert_eq!(parse_lsn("0/4000028"), Some(0x4000028));
        assert_eq!(parse_lsn("1A/FF000000"), Some(0x1A_FF00_0000));
        assert_eq!(format_lsn(0x1A_FF00_0000), "1A/FF000000");
        assert_eq!(parse_lsn("nope"), None);
        assert_eq!(parse_lsn("100000000/0"), None);
    }

    #[test]
    fn segment_names_follow_xlogfilename() {
        let m16 = 16 << 20;
        assert_eq!(segment_name(1, 0x4000028, m16), "000000010000000000000004");
        assert_eq!(
            segment_name(2, 0x1_0300_0000, m16),
            "000000020000000100000003"
        );
        // 1 GiB segments: four per xlogid.
        assert_eq!(
            segment_name(1, 0x1_C000_0000, 1 << 30),
            "000000010000000100000003"
        );
        assert_eq!(
            prev_segment_name(1, 0x5000000, m16),
            "000000010000000000000004"
        );
        assert_eq!(
            prev_segment_name(1, 0x4000100, m16),
            "000000010000000000000004"
        );
    }
}
