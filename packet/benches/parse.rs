//! Cost of the per-packet classifier and the SYN-proxy's hot helpers.
//!
//! `parse_frame` runs once per received packet, so its nanoseconds are the budget every other
//! stage is measured against. Run: `cargo bench -p levee-packet --bench parse`.

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use levee_packet::checksum::PseudoHeader;
use levee_packet::ethernet::{ethertype, EthernetRepr, MacAddr};
use levee_packet::ipv4::Ipv4Repr;
use levee_packet::parse_frame;
use levee_packet::tcp::{self, SeqNum, TcpFlags, TcpOption, TcpOptions, TcpRepr, Timestamps};

#[allow(dead_code)]
#[path = "../src/fixtures.rs"]
mod fixtures;

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const SERVER: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 80);

/// The minimum-size SYN of a flood: 64 bytes on the wire, 60 without the FCS.
fn min_size_syn() -> [u8; 60] {
    let mut frame = [0u8; 60];
    let tcp = TcpRepr::new(40000, 80, SeqNum(0x1234_5678), SeqNum(0), TcpFlags::SYN, 1024);
    let ip = Ipv4Repr {
        src_addr: CLIENT,
        dst_addr: SERVER,
        protocol: 6,
        payload_len: tcp.buffer_len(),
        ttl: 64,
        dscp: 0,
        ecn: 0,
        ident: 1,
        dont_frag: false,
        more_frags: false,
        frag_offset: 0,
    };
    EthernetRepr {
        dst_addr: MacAddr([0x02, 0, 0, 0, 0, 1]),
        src_addr: MacAddr([0x02, 0, 0, 0, 0, 2]),
        ethertype: ethertype::IPV4,
    }
    .emit(&mut frame)
    .unwrap();
    ip.emit(&mut frame[14..]).unwrap();
    let pseudo = PseudoHeader::V4 {
        src: CLIENT,
        dst: SERVER,
    };
    tcp.emit(&mut frame[34..], &pseudo).unwrap();
    frame
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_frame");
    group.throughput(Throughput::Elements(1));
    let syn = min_size_syn();
    assert!(parse_frame(&syn).is_ok());
    group.bench_function("ipv4_tcp_syn_64B", |b| b.iter(|| parse_frame(black_box(&syn))));
    let v6 = fixtures::ETH_IPV6_TCP_SACK;
    group.bench_function("ipv6_tcp", |b| b.iter(|| parse_frame(black_box(&v6))));
    let vlan = fixtures::ETH_VLAN_IPV4_UDP;
    group.bench_function("vlan_ipv4_udp", |b| b.iter(|| parse_frame(black_box(&vlan))));
    group.finish();

    let options = &fixtures::ETH_IPV4_TCP_SYN[54..74];
    c.bench_function("tcp_options_iter_syn", |b| {
        b.iter(|| {
            // Fold what a SYN-proxy extracts so the iterator cannot be optimised away.
            let mut mss = 0u16;
            let mut wscale = 0u8;
            for option in TcpOptions::new(black_box(options)).flatten() {
                match option {
                    TcpOption::Mss(v) => mss = v,
                    TcpOption::WindowScale(v) => wscale = v,
                    _ => {}
                }
            }
            (mss, wscale)
        })
    });

    let syn_ack = TcpRepr {
        max_seg_size: Some(1460),
        window_scale: Some(7),
        sack_permitted: true,
        timestamps: Some(Timestamps {
            tsval: 0x9e3779b9,
            tsecr: 0x0017a1f0,
        }),
        ..TcpRepr::new(
            80,
            51234,
            SeqNum(0x2f5a1c3e),
            SeqNum(0x6b8b4568),
            TcpFlags::SYN | TcpFlags::ACK,
            65160,
        )
    };
    let pseudo = PseudoHeader::V4 {
        src: SERVER,
        dst: CLIENT,
    };
    let mut out = [0u8; tcp::MAX_HEADER_LEN];
    c.bench_function("tcp_emit_syn_ack", |b| {
        b.iter(|| black_box(&syn_ack).emit(black_box(&mut out), &pseudo))
    });
}

criterion_group!(benches, parse);
criterion_main!(benches);
