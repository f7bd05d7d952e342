//! The TCP options the proxy reads: a single bounded pass over the options area of one segment.
//!
//! Owns [`scan`], used by every path of the crate on the worker thread. It reads what the SYN
//! proxy needs (MSS, window scale, SACK-permitted, timestamps) and remembers where the timestamp
//! and SACK options lie, so the translator can rewrite them in place. Like Linux's
//! `synproxy_parse_options`, it stops at end-of-list or at the first malformed option and keeps
//! what it found before; it never reads outside the slice and takes at most 40 steps.

use levee_packet::tcp::option_kind;

/// What one pass over an options area found. Offsets are from the start of the options area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScannedOptions {
    /// MSS option.
    pub mss: Option<u16>,
    /// Window scale shift, clamped to 14 as RFC 7323 (and Linux) require.
    pub wscale: Option<u8>,
    /// SACK-permitted option.
    pub sack_perm: bool,
    /// Timestamps: (TSval, TSecr).
    pub ts: Option<(u32, u32)>,
    /// Offset of the timestamp option's kind byte.
    pub ts_at: u8,
    /// Offset of the SACK option's kind byte, when there is one.
    pub sack_at: Option<u8>,
    /// Length byte of that SACK option (2 + 8 per block).
    pub sack_len: u8,
    /// The walk stopped at a malformed option.
    pub malformed: bool,
}

#[inline]
fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

#[inline]
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Walks an options area (at most 40 bytes; a longer slice is cut at 40).
#[inline]
pub fn scan(area: &[u8]) -> ScannedOptions {
    let area = &area[..area.len().min(40)];
    let mut out = ScannedOptions::default();
    let mut at = 0usize;
    while let Some(&kind) = area.get(at) {
        match kind {
            option_kind::END_OF_LIST => break,
            option_kind::NO_OP => {
                at += 1;
                continue;
            }
            _ => {}
        }
        let Some(&len) = area.get(at + 1) else {
            out.malformed = true;
            break;
        };
        let len = usize::from(len);
        let Some(option) = area.get(at..at + len).filter(|_| len >= 2) else {
            out.malformed = true;
            break;
        };
        let body = &option[2..];
        match (kind, len) {
            (option_kind::MSS, 4) => out.mss = Some(be16(body)),
            (option_kind::WINDOW_SCALE, 3) => out.wscale = Some(body[0].min(crate::cookie::MAX_WSCALE)),
            (option_kind::SACK_PERMITTED, 2) => out.sack_perm = true,
            (option_kind::TIMESTAMPS, 10) => {
                out.ts = Some((be32(body), be32(&body[4..])));
                // `at` < 40, so it fits.
                out.ts_at = at as u8;
            }
            (option_kind::SACK, 10 | 18 | 26 | 34) => {
                out.sack_at = Some(at as u8);
                out.sack_len = len as u8;
            }
            // Known kinds with a wrong length are ignored, as Linux does.
            _ => {}
        }
        at += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_syn_options() {
        // MSS 1460, SACK-permitted, TS, NOP, WS 7: what a Linux client sends.
        let area = [2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 9, 0, 0, 0, 0, 1, 3, 3, 7];
        let o = scan(&area);
        assert_eq!(o.mss, Some(1460));
        assert!(o.sack_perm);
        assert_eq!(o.ts, Some((9, 0)));
        assert_eq!(o.ts_at, 6);
        assert_eq!(o.wscale, Some(7));
        assert!(!o.malformed);
    }

    #[test]
    fn sack_blocks_and_odd_offsets() {
        // NOP TS at an odd offset, then NOP NOP SACK with two blocks.
        let mut area = vec![1, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8, 1, 1, 5, 18];
        area.extend_from_slice(&[0; 16]);
        let o = scan(&area);
        assert_eq!(o.ts, Some((0x0102_0304, 0x0506_0708)));
        assert_eq!(o.ts_at, 1);
        assert_eq!(o.sack_at, Some(13));
        assert_eq!(o.sack_len, 18);
    }

    #[test]
    fn stops_at_eol_and_malformed_but_keeps_what_it_found() {
        let o = scan(&[2, 4, 1, 0, 0, 3, 3, 7]);
        assert_eq!(o.mss, Some(256));
        assert_eq!(o.wscale, None, "nothing after end-of-list");
        let o = scan(&[2, 4, 1, 0, 3, 1, 0]);
        assert!(o.malformed);
        assert_eq!(o.mss, Some(256));
        let o = scan(&[8, 10, 0, 0]);
        assert!(o.malformed);
        assert_eq!(o.ts, None);
        let o = scan(&[3]);
        assert!(o.malformed);
        // Wrong lengths for known kinds are skipped; a huge shift is clamped.
        let o = scan(&[2, 5, 0, 0, 0, 3, 3, 200, 8, 6, 0, 0, 0, 0]);
        assert_eq!(o.mss, None);
        assert_eq!(o.wscale, Some(14));
        assert_eq!(o.ts, None);
        assert!(!o.malformed);
    }

    #[test]
    fn total_on_every_short_input() {
        for len in 0..=48usize {
            for fill in [0u8, 1, 2, 3, 4, 5, 8, 255] {
                let area = vec![fill; len];
                let o = scan(&area);
                assert!(o.ts_at < 40);
            }
        }
    }
}
