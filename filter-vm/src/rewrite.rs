//! Applying a ruleset's payload writes to the packet, with incremental checksum fix-ups
//! (RFC 1624): the IPv4 header checksum for header fields, the transport checksum for
//! transport fields, and the transport checksum's pseudo-header part for address writes.
//! A write to a checksum field itself is taken as meant and not "fixed".

use crate::vm::PendingWrite;
use levee_packet::checksum::update_bytes;
use levee_packet::parse::{FragKind, FrameInfo, L3Info};

/// Where the headers of a parsed frame are.
struct Layout {
    l3: usize,
    l3_hdr_end: usize,
    v4: bool,
    l4: Option<usize>,
    proto: u8,
}

fn layout(info: &FrameInfo) -> Option<Layout> {
    let (v4, l4_offset, proto, frag) = match &info.l3 {
        L3Info::Ipv4(ip) => (true, ip.l4_offset as usize, ip.protocol, ip.frag),
        L3Info::Ipv6(ip) => (false, ip.l4_offset as usize, ip.protocol, ip.frag),
        _ => return None,
    };
    let l3 = info.l3_offset as usize;
    Some(Layout {
        l3,
        l3_hdr_end: if v4 { l4_offset } else { l3 + 40 },
        v4,
        l4: (frag == FragKind::Unfragmented).then_some(l4_offset),
        proto,
    })
}

/// Widest checksum region one write touches: 16 bytes widened to 16-bit boundaries.
const REGION_MAX: usize = 18;

/// Up to three (checksum offset, region start, region end, is UDP) fix-ups of one write.
#[derive(Default)]
struct Fixes {
    items: [(usize, usize, usize, bool); 3],
    n: usize,
}

impl Fixes {
    fn push(&mut self, f: (usize, usize, usize, bool)) {
        if self.n < self.items.len() && f.2 - f.1 <= REGION_MAX {
            self.items[self.n] = f;
            self.n += 1;
        }
    }
    fn as_slice(&self) -> &[(usize, usize, usize, bool)] {
        &self.items[..self.n]
    }
}

/// The even-aligned region (relative to `base`) that covers `[at, at + len)`.
fn aligned(base: usize, at: usize, len: usize) -> (usize, usize) {
    let a0 = base + ((at - base) & !1);
    let a1 = base + (at + len - base).div_ceil(2) * 2;
    (a0, a1)
}

fn overlaps(at: usize, len: usize, lo: usize, hi: usize) -> bool {
    at < hi && lo < at + len
}

/// Applies `writes` (in order) to `frame`, whose parse result is `info`.
pub fn apply_writes(frame: &mut [u8], writes: &[PendingWrite], info: Option<&FrameInfo>) {
    let lay = info.and_then(layout);
    for w in writes {
        let (at, len) = (w.offset, w.len);
        if at + len > frame.len() {
            continue;
        }
        let Some(lay) = &lay else {
            frame[at..at + len].copy_from_slice(&w.data[..len]);
            continue;
        };
        // Regions whose 16-bit words feed a checksum, captured before and after the write: at
        // most three (IPv4 header, pseudo-header, transport), each at most 18 bytes (a 16-byte
        // write widened to word boundaries). Fixed arrays: this runs per rewritten packet.
        let mut fixes = Fixes::default();
        if lay.v4 && at >= lay.l3 && at < lay.l3_hdr_end && !overlaps(at, len, lay.l3 + 10, lay.l3 + 12) {
            let (a0, a1) = aligned(lay.l3, at, len);
            fixes.push((lay.l3 + 10, a0, a1.min(lay.l3_hdr_end), false));
        }
        if let Some(l4) = lay.l4 {
            let csum_off = match (lay.proto, lay.v4) {
                (6, _) => Some(16),
                (17, _) => Some(6),
                (58, false) => Some(2),
                (1, true) => Some(2),
                _ => None,
            };
            if let Some(c) = csum_off {
                let csum_at = l4 + c;
                let udp = lay.proto == 17;
                // Addresses are in the pseudo-header (not for ICMPv4, which has none).
                let (alo, ahi) = if lay.v4 {
                    (lay.l3 + 12, lay.l3 + 20)
                } else {
                    (lay.l3 + 8, lay.l3 + 40)
                };
                if overlaps(at, len, alo, ahi) && lay.proto != 1 {
                    let (a0, a1) = aligned(lay.l3, at.max(alo), (at + len).min(ahi) - at.max(alo));
                    fixes.push((csum_at, a0, a1, udp));
                }
                if at >= l4 && !overlaps(at, len, csum_at, csum_at + 2) {
                    let (a0, a1) = aligned(l4, at, len);
                    fixes.push((csum_at, a0, a1.min(frame.len()), udp));
                }
            }
        }
        let mut before = [[0u8; REGION_MAX]; 3];
        for (i, &(_, a0, a1, _)) in fixes.as_slice().iter().enumerate() {
            before[i][..a1 - a0].copy_from_slice(&frame[a0..a1]);
        }
        frame[at..at + len].copy_from_slice(&w.data[..len]);
        for (i, &(csum_at, a0, a1, udp)) in fixes.as_slice().iter().enumerate() {
            let old = &before[i][..a1 - a0];
            if csum_at + 2 > frame.len() {
                continue;
            }
            let hc = u16::from_be_bytes([frame[csum_at], frame[csum_at + 1]]);
            if udp && lay.v4 && hc == 0 {
                continue; // IPv4 UDP without a checksum stays without one
            }
            let mut new_sum = update_bytes(hc, old, &frame[a0..a1]);
            if udp && new_sum == 0 {
                new_sum = 0xffff;
            }
            frame[csum_at..csum_at + 2].copy_from_slice(&new_sum.to_be_bytes());
        }
    }
}
