//! Building the answer to a `reject`: a TCP RST or an ICMP/ICMPv6 destination-unreachable
//! that the dataplane sends back out of the port the packet came in on.
//!
//! As Linux's nf_reject does: the answer comes from the rejected packet's destination (for a
//! bump in the wire, the server the client tried to reach), never answers an RST, an ICMP error
//! or a non-first fragment, and for TCP follows RFC 793's reset generation (an incoming ACK
//! gives `seq = ack`; otherwise `RST|ACK` acknowledging everything the segment occupied).
//! The Ethernet header is the incoming one with the addresses swapped, VLAN tags kept.

use crate::vm::RejectKind;
use levee_packet::checksum;
use levee_packet::parse::{parse_frame, FragKind, L3Info, L4Info};

/// Largest IPv4 answer (RFC 1812: quote as much as fits in 576 bytes).
const ICMP_MAX: usize = 576;
/// Largest IPv6 answer (RFC 4443: must not exceed the minimum IPv6 MTU).
const ICMPV6_MAX: usize = 1280;

/// The frame to send for `kind`, or None when nothing must be sent (allocates; the dataplane
/// uses [`build_reject_into`]).
pub fn build_reject(frame: &[u8], kind: RejectKind) -> Option<Vec<u8>> {
    let mut out = vec![0u8; REJECT_MAX];
    let n = build_reject_into(frame, kind, &mut out)?;
    out.truncate(n);
    Some(out)
}

/// Largest answer [`build_reject_into`] writes: two VLAN tags, an IPv6 header and an ICMPv6
/// error of at most 1280 bytes.
pub const REJECT_MAX: usize = 22 + ICMPV6_MAX;

/// Writes the frame to send for `kind` into `out` (no allocation) and returns its length, or
/// None when nothing must be sent or `out` is shorter than needed ([`REJECT_MAX`] always
/// suffices).
pub fn build_reject_into(frame: &[u8], kind: RejectKind, out: &mut [u8]) -> Option<usize> {
    let info = parse_frame(frame).ok()?;
    let l3 = info.l3_offset as usize;
    // Ethernet (+ tags) with the addresses swapped.
    out.get_mut(..l3)?.copy_from_slice(&frame[..l3]);
    out[..6].copy_from_slice(&frame[6..12]);
    out[6..12].copy_from_slice(&frame[..6]);
    let end = match info.l3 {
        L3Info::Ipv4(ip) => {
            if ip.frag == FragKind::NonFirst {
                return None;
            }
            let l4 = ip.l4_offset as usize;
            let (src, dst) = (ip.dst.octets(), ip.src.octets());
            let at = l3 + 20;
            let (proto, len) = match (kind, ip.l4) {
                (RejectKind::TcpReset, L4Info::Tcp { .. }) => {
                    let seg = out.get_mut(at..at + 20)?;
                    tcp_reset(&frame[l4..l4 + ip.l4_len as usize], seg)?;
                    let sum = !checksum::combine(&[
                        checksum::pseudo_header_v4(src.into(), dst.into(), 6, 20),
                        checksum::sum(seg),
                    ]);
                    seg[16..18].copy_from_slice(&sum.to_be_bytes());
                    (6, 20)
                }
                (RejectKind::TcpReset, _) => return None,
                (k, l4info) => {
                    if is_icmp_error(l4info, false) {
                        return None;
                    }
                    let code = match k {
                        RejectKind::Icmp(c) => c,
                        RejectKind::Icmpx(c) => icmpx_to_icmp(c),
                        _ => return None,
                    };
                    let qend = (ip.l4_offset as usize + ip.l4_len as usize).min(frame.len());
                    let quote = &frame[l3..qend];
                    let quote = &quote[..quote.len().min(ICMP_MAX - 28)];
                    let icmp = out.get_mut(at..at + 8 + quote.len())?;
                    icmp[..8].copy_from_slice(&[3, code, 0, 0, 0, 0, 0, 0]);
                    icmp[8..].copy_from_slice(quote);
                    let sum = checksum::checksum(icmp);
                    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
                    (1, icmp.len())
                }
            };
            out[l3..at].copy_from_slice(&ipv4_header(src, dst, proto, len));
            at + len
        }
        L3Info::Ipv6(ip) => {
            if ip.frag == FragKind::NonFirst {
                return None;
            }
            let l4 = ip.l4_offset as usize;
            let (src, dst) = (ip.dst.octets(), ip.src.octets());
            let at = l3 + 40;
            let (next, len) = match (kind, ip.l4) {
                (RejectKind::TcpReset, L4Info::Tcp { .. }) => {
                    let seg = out.get_mut(at..at + 20)?;
                    tcp_reset(&frame[l4..l4 + ip.l4_len as usize], seg)?;
                    let sum = !checksum::combine(&[
                        checksum::pseudo_header_v6(src.into(), dst.into(), 6, 20),
                        checksum::sum(seg),
                    ]);
                    seg[16..18].copy_from_slice(&sum.to_be_bytes());
                    (6u8, 20)
                }
                (RejectKind::TcpReset, _) => return None,
                (k, l4info) => {
                    if is_icmp_error(l4info, true) {
                        return None;
                    }
                    let code = match k {
                        RejectKind::Icmpv6(c) => c,
                        RejectKind::Icmpx(c) => icmpx_to_icmpv6(c),
                        _ => return None,
                    };
                    let qend = (ip.l4_offset as usize + ip.l4_len as usize).min(frame.len());
                    let quote = &frame[l3..qend];
                    let quote = &quote[..quote.len().min(ICMPV6_MAX - 48)];
                    let icmp = out.get_mut(at..at + 8 + quote.len())?;
                    icmp[..8].copy_from_slice(&[1, code, 0, 0, 0, 0, 0, 0]);
                    icmp[8..].copy_from_slice(quote);
                    let sum = !checksum::combine(&[
                        checksum::pseudo_header_v6(src.into(), dst.into(), 58, icmp.len() as u32),
                        checksum::sum(icmp),
                    ]);
                    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
                    (58u8, icmp.len())
                }
            };
            let hdr = &mut out[l3..at];
            hdr.fill(0);
            hdr[0] = 0x60;
            hdr[4..6].copy_from_slice(&(len as u16).to_be_bytes());
            hdr[6] = next;
            hdr[7] = 64;
            hdr[8..24].copy_from_slice(&src);
            hdr[24..40].copy_from_slice(&dst);
            at + len
        }
        L3Info::Arp | L3Info::Other => return None,
    };
    // Ethernet minimum frame size.
    if end < 60 {
        out.get_mut(end..60)?.fill(0);
        return Some(60);
    }
    Some(end)
}

/// ICMP errors (and, for IPv6, anything below type 128) are never answered.
fn is_icmp_error(l4: L4Info, v6: bool) -> bool {
    match l4 {
        L4Info::Icmp { msg_type, .. } if v6 => msg_type < 128,
        L4Info::Icmp { msg_type, .. } => !matches!(msg_type, 0 | 8 | 13 | 14 | 15 | 16 | 17 | 18),
        _ => false,
    }
}

fn icmpx_to_icmp(c: u8) -> u8 {
    match c {
        0 => 0,  // no-route -> net unreachable
        1 => 3,  // port unreachable
        2 => 1,  // host unreachable
        _ => 13, // admin prohibited
    }
}

fn icmpx_to_icmpv6(c: u8) -> u8 {
    match c {
        0 => 0, // no route
        1 => 4, // port unreachable
        2 => 3, // address unreachable
        _ => 1, // administratively prohibited
    }
}

fn ipv4_header(src: [u8; 4], dst: [u8; 4], proto: u8, payload: usize) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&((20 + payload) as u16).to_be_bytes());
    h[6] = 0x40; // DF, as Linux's nf_reject
    h[8] = 64;
    h[9] = proto;
    h[12..16].copy_from_slice(&src);
    h[16..20].copy_from_slice(&dst);
    let sum = checksum::checksum(&h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h
}

/// Writes the RST answering TCP segment `seg` into `r` (20 bytes, checksum left zero); None
/// for an incoming RST.
fn tcp_reset(seg: &[u8], r: &mut [u8]) -> Option<()> {
    if seg.len() < 20 || r.len() < 20 {
        return None;
    }
    let flags = seg[13];
    if flags & 0x04 != 0 {
        return None; // never answer a reset
    }
    let seq = u32::from_be_bytes([seg[4], seg[5], seg[6], seg[7]]);
    let ack = u32::from_be_bytes([seg[8], seg[9], seg[10], seg[11]]);
    let doff = ((seg[12] >> 4) as usize * 4).clamp(20, seg.len());
    r[..20].fill(0);
    r[0..2].copy_from_slice(&seg[2..4]);
    r[2..4].copy_from_slice(&seg[0..2]);
    r[12] = 5 << 4;
    if flags & 0x10 != 0 {
        // An ACK told us where the peer is: reset exactly there.
        r[4..8].copy_from_slice(&ack.to_be_bytes());
        r[13] = 0x04;
    } else {
        // Acknowledge everything the segment occupied (SYN and FIN count one each).
        let len = (seg.len() - doff) as u32 + (flags & 0x02 != 0) as u32 + (flags & 0x01 != 0) as u32;
        r[8..12].copy_from_slice(&seq.wrapping_add(len).to_be_bytes());
        r[13] = 0x14;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use levee_packet::checksum::PseudoHeader;
    use levee_packet::{icmp, ipv4, tcp};

    fn syn_v4(flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 8, 0];
        let total = 40 + payload.len();
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&[198, 18, 0, 1]);
        ip[16..20].copy_from_slice(&[198, 18, 0, 2]);
        let s = checksum::checksum(&ip);
        ip[10..12].copy_from_slice(&s.to_be_bytes());
        f.extend_from_slice(&ip);
        let mut t = [0u8; 20];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&22u16.to_be_bytes());
        t[4..8].copy_from_slice(&1000u32.to_be_bytes());
        t[8..12].copy_from_slice(&5555u32.to_be_bytes());
        t[12] = 0x50;
        t[13] = flags;
        f.extend_from_slice(&t);
        f.extend_from_slice(payload);
        f.resize(f.len().max(60), 0);
        f
    }

    fn parts(out: &[u8]) -> (ipv4::Packet<&[u8]>, &[u8]) {
        let ip = ipv4::Packet::new_checked(&out[14..]).expect("valid IPv4");
        assert!(ip.verify_checksum(), "IP header checksum");
        let l4 = &out[14 + 20..14 + ip.total_len() as usize];
        (ip, l4)
    }

    #[test]
    fn rst_for_a_syn_acknowledges_it_from_the_server() {
        let out = build_reject(&syn_v4(0x02, &[]), RejectKind::TcpReset).unwrap();
        assert_eq!(&out[..6], &[2, 0, 0, 0, 0, 1], "back to the client's MAC");
        let (ip, l4) = parts(&out);
        assert_eq!(
            ip.src_addr().octets(),
            [198, 18, 0, 2],
            "from the server's address"
        );
        assert_eq!(ip.dst_addr().octets(), [198, 18, 0, 1]);
        let t = tcp::Packet::new_checked(l4).unwrap();
        let ph = PseudoHeader::V4 {
            src: ip.src_addr(),
            dst: ip.dst_addr(),
        };
        assert!(t.verify_checksum(&ph));
        assert_eq!((t.src_port(), t.dst_port()), (22, 40000));
        assert!(t.rst() && t.ack());
        assert_eq!(t.ack_number().0, 1001, "SYN counts one");
        assert_eq!(t.seq_number().0, 0);
    }

    #[test]
    fn rst_for_an_ack_uses_its_ack_number_and_rst_is_never_answered() {
        let out = build_reject(&syn_v4(0x18, b"hello"), RejectKind::TcpReset).unwrap();
        let (_, l4) = parts(&out);
        let t = tcp::Packet::new_checked(l4).unwrap();
        assert!(t.rst() && !t.ack());
        assert_eq!(t.seq_number().0, 5555);
        assert!(build_reject(&syn_v4(0x04, &[]), RejectKind::TcpReset).is_none());
    }

    #[test]
    fn icmp_port_unreachable_quotes_the_packet() {
        let f = syn_v4(0x02, &[]);
        let out = build_reject(&f, RejectKind::Icmp(3)).unwrap();
        let (ip, l4) = parts(&out);
        assert_eq!(ip.protocol(), 1);
        let m = icmp::Packet::new_checked(l4).unwrap();
        assert_eq!((m.msg_type(), m.msg_code()), (3, 3));
        assert!(m.verify_checksum());
        assert_eq!(&l4[8..], &f[14..54], "the rejected IP packet, quoted");
        // icmpx maps to the family's code.
        let out = build_reject(&f, RejectKind::Icmpx(3)).unwrap();
        assert_eq!(parts(&out).1[1], 13);
        // An ICMP error is never answered.
        let mut err = out.clone();
        err[..6].copy_from_slice(&f[..6]);
        assert!(build_reject(&err, RejectKind::Icmp(3)).is_none());
    }

    #[test]
    fn icmpv6_unreachable_has_a_valid_checksum() {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
        let mut ip = [0u8; 40];
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&8u16.to_be_bytes());
        ip[6] = 17;
        ip[7] = 64;
        ip[8..10].copy_from_slice(&[0x20, 0x01]);
        ip[10..12].copy_from_slice(&[0, 2]);
        ip[23] = 1;
        ip[24..26].copy_from_slice(&[0x20, 0x01]);
        ip[26..28].copy_from_slice(&[0, 2]);
        ip[39] = 2;
        f.extend_from_slice(&ip);
        f.extend_from_slice(&[0x9c, 0x40, 0, 53, 0, 8, 0, 0]);
        let out = build_reject(&f, RejectKind::Icmpx(1)).unwrap();
        let len = u16::from_be_bytes([out[18], out[19]]) as usize;
        let icmp = &out[54..54 + len];
        assert_eq!((out[20], icmp[0], icmp[1]), (58, 1, 4));
        let src: [u8; 16] = out[22..38].try_into().unwrap();
        let dst: [u8; 16] = out[38..54].try_into().unwrap();
        assert_eq!(src[15], 2, "answered from the destination");
        let sum = checksum::combine(&[
            checksum::pseudo_header_v6(src.into(), dst.into(), 58, len as u32),
            checksum::sum(icmp),
        ]);
        assert_eq!(sum, 0xffff, "checksum verifies");
        assert_eq!(&icmp[8..], &f[14..], "quoted");
    }

    proptest::proptest! {
        /// Any frame (a real SYN with random bytes written over it, or pure noise) and any
        /// reject kind: no panic, an answer fits REJECT_MAX, is at least an Ethernet minimum
        /// frame, parses, and never answers a frame that does not parse.
        #[test]
        fn answers_to_arbitrary_frames_are_bounded_and_parse(
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            at in 0usize..80,
            kind in 0u8..6,
            code in 0u8..4,
        ) {
            let mut f = syn_v4(0x02, &[1, 2, 3]);
            for (i, b) in noise.iter().enumerate() {
                if let Some(x) = f.get_mut(at + i) {
                    *x = *b;
                }
            }
            let frames = [f, noise.clone()];
            let kind = match kind {
                0 => RejectKind::TcpReset,
                1 => RejectKind::Icmp(code),
                2 => RejectKind::Icmpv6(code),
                _ => RejectKind::Icmpx(code),
            };
            for frame in &frames {
                let mut out = [0u8; REJECT_MAX];
                if let Some(n) = build_reject_into(frame, kind, &mut out) {
                    proptest::prop_assert!((60..=REJECT_MAX).contains(&n));
                    proptest::prop_assert!(parse_frame(frame).is_ok());
                    proptest::prop_assert!(parse_frame(&out[..n]).is_ok(), "answer does not parse");
                    let owned = build_reject(frame, kind);
                    proptest::prop_assert_eq!(owned.as_deref(), Some(&out[..n]));
                }
            }
        }
    }
}
