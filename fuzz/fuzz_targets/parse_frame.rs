//! Fuzz target: `parse_frame` and every view it leads to, plus checksum arithmetic.
//!
//! For any input this must not panic, and it asserts invariants that tie the layers together:
//! offsets `parse_frame` reports lie inside the frame and agree with the views, every walk
//! ends, a parsed TCP header re-emits to an equal repr, and RFC 1624 incremental checksum
//! updates equal a full recomputation of the modified input.
#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr};

use levee_packet::checksum::{self, PseudoHeader};
use levee_packet::ipv6::ExtHeaders;
use levee_packet::parse::{quoted_flow_v4, quoted_flow_v6};
use levee_packet::tcp::{TcpOptions, TcpRepr};
use levee_packet::{
    arp, ethernet, icmp, icmpv6, ip_protocol, ipv4, ipv6, parse_frame, tcp, udp, vlan, FragKind,
    L3Info,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check_frame(data);
    check_raw_views(data);
    check_incremental_checksum(data);
});

/// Parses the frame and walks every view the result points at.
fn check_frame(data: &[u8]) {
    let Ok(info) = parse_frame(data) else {
        return;
    };
    let frame = ethernet::Frame::new_checked(data).expect("parse_frame accepted the frame");
    let _ = (frame.dst_addr(), frame.src_addr(), frame.payload());
    assert!(usize::from(info.vlan_count) <= 2);
    let l3_offset = usize::from(info.l3_offset);
    assert!(l3_offset <= data.len());
    let _ = info.vlans();
    if let Some(tuple) = info.flow_tuple() {
        assert_eq!(tuple.reversed().reversed(), tuple);
        let _ = (tuple.to_bytes(), tuple.src_ip(), tuple.dst_ip());
    }
    match info.l3 {
        L3Info::Ipv4(ip) => {
            let packet = ipv4::Packet::new_checked(&data[l3_offset..]).expect("IPv4 accepted");
            assert_eq!(packet.src_addr(), ip.src);
            assert_eq!(l3_offset + packet.header_len(), usize::from(ip.l4_offset));
            assert_eq!(packet.payload().len(), usize::from(ip.l4_len));
            let _ = (
                packet.options(),
                packet.verify_checksum(),
                packet.is_fragment(),
            );
            let l4 = packet.payload();
            let pseudo = PseudoHeader::V4 {
                src: ip.src,
                dst: ip.dst,
            };
            if ip.frag == FragKind::Unfragmented {
                check_transport(ip.protocol, l4, &pseudo);
            }
        }
        L3Info::Ipv6(ip) => {
            let packet = ipv6::Packet::new_checked(&data[l3_offset..]).expect("IPv6 accepted");
            let upper = packet.upper_layer().expect("extension headers accepted");
            assert_eq!(upper.protocol, ip.protocol);
            assert_eq!(l3_offset + upper.offset, usize::from(ip.l4_offset));
            for header in packet.ext_headers() {
                let header = header.expect("walk succeeded once");
                let _ = (header.fragment(), header.options());
            }
            let start = usize::from(ip.l4_offset);
            let l4 = &data[start..start + usize::from(ip.l4_len)];
            let pseudo = PseudoHeader::V6 {
                src: ip.src,
                dst: ip.dst,
            };
            if ip.frag == FragKind::Unfragmented {
                check_transport(ip.protocol, l4, &pseudo);
            }
        }
        L3Info::Arp => {
            if let Ok(packet) = arp::Packet::new_checked(&data[l3_offset..]) {
                let _ = arp::ArpRepr::parse(&packet);
            }
        }
        L3Info::Other => {}
    }
}

/// The transport views of an unfragmented packet, which `parse_frame` has length-checked.
fn check_transport(protocol: u8, l4: &[u8], pseudo: &PseudoHeader) {
    match (protocol, pseudo) {
        (ip_protocol::TCP, _) => {
            let segment = tcp::Packet::new_checked(l4).expect("TCP accepted");
            let steps = segment.options_iter().count();
            assert!(steps <= tcp::MAX_OPTIONS_LEN);
            let _ = segment.verify_checksum(pseudo);
            if let Ok(repr) = TcpRepr::parse_unverified(&segment) {
                let mut out = vec![0u8; repr.buffer_len()];
                if let Ok(len) = repr.emit(&mut out, pseudo) {
                    let again = tcp::Packet::new_checked(&out[..len]).expect("emitted TCP");
                    assert!(again.verify_checksum(pseudo));
                    assert_eq!(TcpRepr::parse(&again, pseudo).expect("re-parse"), repr);
                }
            }
        }
        (ip_protocol::UDP, _) => {
            let datagram = udp::Packet::new_checked(l4).expect("UDP accepted");
            let _ = (datagram.payload(), datagram.verify_checksum(pseudo));
        }
        (ip_protocol::ICMP, PseudoHeader::V4 { .. }) => {
            let message = icmp::Packet::new_checked(l4).expect("ICMP accepted");
            let _ = icmp::IcmpRepr::parse(&message);
            if let Some(quoted) = message.quoted_packet() {
                let _ = quoted_flow_v4(quoted);
                if let Ok(inner) = ipv4::Packet::new_checked(quoted) {
                    let _ = (inner.options(), inner.payload());
                }
            }
        }
        (ip_protocol::ICMPV6, PseudoHeader::V6 { .. }) => {
            let message = icmpv6::Packet::new_checked(l4).expect("ICMPv6 accepted");
            let _ = icmpv6::Icmpv6Repr::parse(&message, pseudo);
            if let Some(quoted) = message.quoted_packet() {
                let _ = quoted_flow_v6(quoted);
            }
        }
        _ => {}
    }
}

/// Every view straight over the input, whatever `parse_frame` thought of it.
fn check_raw_views(data: &[u8]) {
    let options = &data[..data.len().min(tcp::MAX_OPTIONS_LEN)];
    for option in TcpOptions::new(options) {
        if option.is_err() {
            break;
        }
    }
    if let Some((&first, rest)) = data.split_first() {
        let mut walk = ExtHeaders::new(first, rest, 40);
        let mut steps = 0;
        for header in walk.by_ref() {
            steps += 1;
            assert!(steps <= ipv6::MAX_EXT_HEADERS + 1);
            if header.is_err() {
                break;
            }
        }
        let _ = (walk.next_header(), walk.offset());
    }
    if let Ok(tag) = vlan::Tag::new_checked(data) {
        let _ = (tag.pcp(), tag.dei(), tag.vid(), tag.payload());
    }
    if let Ok(packet) = ipv4::Packet::new_checked(data) {
        let _ = ipv4::Ipv4Repr::parse(&packet);
    }
    if let Ok(packet) = ipv6::Packet::new_checked(data) {
        let _ = (ipv6::Ipv6Repr::parse(&packet), packet.upper_layer());
    }
    let _ = quoted_flow_v4(data);
    let _ = quoted_flow_v6(data);
    if let Ok(segment) = tcp::Packet::new_checked(data) {
        let _ = TcpRepr::parse_unverified(&segment);
    }
    let v4 = PseudoHeader::V4 {
        src: Ipv4Addr::new(198, 18, 0, 1),
        dst: Ipv4Addr::new(198, 19, 0, 1),
    };
    let v6 = PseudoHeader::V6 {
        src: Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1),
        dst: Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 1),
    };
    if let Ok(datagram) = udp::Packet::new_checked(data) {
        let _ = (
            udp::UdpRepr::parse(&datagram, &v4),
            datagram.verify_checksum(&v6),
        );
    }
    if let Ok(message) = icmpv6::Packet::new_checked(data) {
        let _ = icmpv6::Icmpv6Repr::parse(&message, &v6);
    }
}

/// RFC 1624 on the input: change one 16-bit word, one 32-bit field and one 16-byte address
/// (chosen by the input's first bytes) and compare with recomputing over the changed bytes.
fn check_incremental_checksum(data: &[u8]) {
    // Summed data: an even number of bytes after a 4-byte selector.
    if data.len() < 8 {
        return;
    }
    let (selector, body) = data.split_at(4);
    let body = &body[..body.len() & !1];
    let hc = checksum::checksum(body);
    let words = body.len() / 2;
    let at = usize::from(selector[0]) % words * 2;
    let new16 = u16::from_be_bytes([selector[1], selector[2]]);
    let mut changed = body.to_vec();
    let old16 = u16::from_be_bytes([changed[at], changed[at + 1]]);
    changed[at..at + 2].copy_from_slice(&new16.to_be_bytes());
    assert_same(checksum::update_u16(hc, old16, new16), &changed);

    if words >= 2 {
        let at = usize::from(selector[3]) % (words - 1) * 2;
        let mut changed = body.to_vec();
        let old = u32::from_be_bytes([
            changed[at],
            changed[at + 1],
            changed[at + 2],
            changed[at + 3],
        ]);
        let new = old.rotate_left(u32::from(selector[0]) % 32) ^ u32::from(new16);
        changed[at..at + 4].copy_from_slice(&new.to_be_bytes());
        assert_same(checksum::update_u32(hc, old, new), &changed);
    }
    if body.len() >= 32 {
        // Swap the first two 16-byte blocks, as a translator swaps source and destination.
        let mut changed = body.to_vec();
        let old: [u8; 16] = body[..16].try_into().expect("16 bytes");
        let new: [u8; 16] = body[16..32].try_into().expect("16 bytes");
        changed[..16].copy_from_slice(&new);
        let updated = checksum::update_ipv6_addr(hc, &Ipv6Addr::from(old), &Ipv6Addr::from(new));
        assert_same(updated, &changed);
    }
}

/// Incremental and full results agree, except that an all-zero buffer may come out as
/// either representation of one's-complement zero.
fn assert_same(incremental: u16, changed: &[u8]) {
    let full = checksum::checksum(changed);
    if changed.iter().all(|&b| b == 0) {
        assert!(incremental == 0 || incremental == 0xFFFF);
    } else {
        assert_eq!(
            incremental, full,
            "incremental update diverged from recomputation"
        );
    }
}
