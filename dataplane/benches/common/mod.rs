//! Frames and the SYN-proxy ruleset shared by the worker benchmark and the `worker_loop`
//! profiling example (`#[path]`-included by both), built with `levee-packet`'s emitters.

#![allow(dead_code)]

use levee_packet::checksum::PseudoHeader;
use levee_packet::ethernet::{EthernetRepr, MacAddr};
use levee_packet::ipv4::Ipv4Repr;
use levee_packet::tcp::{SeqNum, TcpFlags, TcpRepr};
use std::net::Ipv4Addr;

/// The ruleset of `perf/bench-synproxy.sh`: raw-chain notrack of SYNs, then the synproxy rule.
pub const SYNPROXY_RULESET: &str = "table inet bench {
  chain raw { type filter hook prerouting priority raw; policy accept;
    tcp flags & (syn | ack) == syn notrack
  }
  chain pre { type filter hook prerouting priority filter; policy accept;
    ip daddr 198.19.255.1 tcp dport 80 ct state invalid,untracked synproxy mss 1460 wscale 7 timestamp sack-perm
    ct state invalid drop
  }
}";

/// Where the benchmark traffic goes.
pub const SERVER: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 1);

/// A 54-byte Ethernet + IPv4 + TCP frame (no options, checksums right) with room for 128
/// bytes, as an mbuf has for the proxy's SYN-ACK options.
pub fn tcp_frame(src: Ipv4Addr, sport: u16, seq: u32, flags: TcpFlags) -> Vec<u8> {
    let mut f = vec![0u8; 54];
    f.reserve(128 - 54);
    EthernetRepr {
        dst_addr: MacAddr([2, 0, 0, 0, 0, 2]),
        src_addr: MacAddr([2, 0, 0, 0, 0, 1]),
        ethertype: 0x0800,
    }
    .emit(&mut f)
    .expect("ethernet");
    Ipv4Repr {
        src_addr: src,
        dst_addr: SERVER,
        protocol: 6,
        payload_len: 20,
        ttl: 64,
        dscp: 0,
        ecn: 0,
        ident: 0,
        dont_frag: false,
        more_frags: false,
        frag_offset: 0,
    }
    .emit(&mut f[14..])
    .expect("ipv4");
    TcpRepr::new(sport, 80, SeqNum(seq), SeqNum(0), flags, 64240)
        .emit(&mut f[34..], &PseudoHeader::V4 { src, dst: SERVER })
        .expect("tcp");
    f
}

/// Bare SYN number `i` from a random-looking source in 198.18.0.0/15, port and ISN.
pub fn syn_frame(i: u32) -> Vec<u8> {
    let x = i.wrapping_mul(2_654_435_761);
    let src = Ipv4Addr::new(198, 18 | (x >> 31) as u8, (x >> 8) as u8, x as u8);
    tcp_frame(src, 1024 + (x >> 16) as u16, x.rotate_left(7), TcpFlags::SYN)
}

/// An ACK of flow `i` (198.18.x.y:1024+i -> 198.19.255.1:80).
pub fn ack_frame(i: u32) -> Vec<u8> {
    let src = Ipv4Addr::new(198, 18, (i >> 8) as u8, i as u8);
    tcp_frame(src, 1024 + i as u16, 1, TcpFlags::ACK)
}
