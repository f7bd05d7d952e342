//! SYN-proxy hot paths: SYN → SYN-ACK in place, an invalid (forged) ACK, and data-segment
//! translation in each direction. Run with `cargo bench -p levee-synproxy`.
//!
//! Each iteration takes the next frame of a pool of 4096 (random client addresses, ports and
//! ISNs, so the cookie hashes different inputs and the branch predictor sees no pattern). The
//! SYN benches copy the SYN (a fixed 128-byte copy) into a scratch buffer first (the rewrite
//! consumes it);
//! the other paths leave or keep the frame's length, so they work on the pool in place.

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use levee_packet::checksum::PseudoHeader;
use levee_packet::ethernet::{ethertype, EthernetRepr, MacAddr};
use levee_packet::ip_protocol;
use levee_packet::ipv4::Ipv4Repr;
use levee_packet::parse::{parse_frame, FrameInfo};
use levee_packet::tcp::{SackBlocks, SeqNum, TcpFlags, TcpRepr, Timestamps};
use levee_synproxy::{
    AckVerdict, ClientVerdict, Config, MasterSecret, ProxyConn, ServerVerdict, SynProxy, SynRule, SynVerdict,
};

const POOL: usize = 4096;
const NOW_NS: u64 = 1_795_651_200_000_000_000;
const SERVER: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 80);

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// An untagged IPv4 frame from `src` to `dst` carrying `tcp`, padded to 60 bytes.
fn frame(src: Ipv4Addr, dst: Ipv4Addr, tcp: &TcpRepr<'_>) -> Vec<u8> {
    let tcp_len = tcp.buffer_len();
    let mut out = vec![0u8; 34 + tcp_len];
    EthernetRepr {
        dst_addr: MacAddr([2, 0, 0, 0, 0, 2]),
        src_addr: MacAddr([2, 0, 0, 0, 0, 1]),
        ethertype: ethertype::IPV4,
    }
    .emit(&mut out)
    .unwrap();
    Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        protocol: ip_protocol::TCP,
        payload_len: tcp_len,
        ttl: 64,
        dscp: 0,
        ecn: 0,
        ident: 0,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
    }
    .emit(&mut out[14..])
    .unwrap();
    tcp.emit(&mut out[34..], &PseudoHeader::V4 { src, dst }).unwrap();
    if out.len() < 60 {
        out.resize(60, 0);
    }
    out
}

fn proxy() -> SynProxy {
    proxy_with(true)
}

/// `verify_checksums: false` is the setting for ports whose NIC verifies checksums.
fn proxy_with(verify_checksums: bool) -> SynProxy {
    let config = Config {
        verify_checksums,
        ..Config::default()
    };
    let mut p = SynProxy::new(config, &MasterSecret::from_bytes(*b"levee-bench-key!")).unwrap();
    p.set_now(NOW_NS);
    p
}

/// Random-source SYNs: `linux` adds Linux's 20 option bytes (MSS, SACK-permitted, timestamps,
/// window scale); otherwise only MSS, a 58-byte frame padded to 60 (64 on the wire).
fn syns(linux: bool) -> Vec<([u8; 128], usize, FrameInfo)> {
    let mut rng = Rng(1);
    (0..POOL)
        .map(|_| {
            let r = rng.next();
            let src = Ipv4Addr::from((r as u32) | 0x0100_0000);
            let mut tcp = TcpRepr::new(
                (r >> 32) as u16,
                80,
                SeqNum((r >> 16) as u32),
                SeqNum(0),
                TcpFlags::SYN,
                64240,
            );
            tcp.max_seg_size = Some(1460);
            if linux {
                tcp.sack_permitted = true;
                tcp.window_scale = Some(7);
                tcp.timestamps = Some(Timestamps {
                    tsval: (r >> 8) as u32,
                    tsecr: 0,
                });
            }
            let f = frame(src, SERVER, &tcp);
            let info = parse_frame(&f).unwrap();
            let mut fixed = [0u8; 128];
            fixed[..f.len()].copy_from_slice(&f);
            (fixed, f.len(), info)
        })
        .collect()
}

fn bench_syn(c: &mut Criterion) {
    let mut g = c.benchmark_group("synproxy");
    g.throughput(Throughput::Elements(1));
    for (name, linux, verify) in [
        ("syn_to_synack_64B", false, true),
        ("syn_to_synack_linux_74B", true, true),
        ("syn_to_synack_64B_nic_csum", false, false),
    ] {
        let pool = syns(linux);
        let mut proxy = proxy_with(verify);
        let rule = SynRule::default();
        // The rewrite consumes the SYN: each iteration copies a fresh one into the scratch
        // buffer (a fixed 128-byte copy, a few vector moves).
        let mut scratch = [0u8; 128];
        let mut i = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                let (f, len, info) = &pool[i % POOL];
                i += 1;
                scratch = *f;
                let v = proxy.answer_syn(&mut scratch, *len, info, &rule);
                debug_assert!(matches!(v, SynVerdict::Reply { .. }));
                black_box(v)
            })
        });
        if !verify {
            continue;
        }
        // The same with parse_frame included: what the worker spends per SYN.
        let mut i = 0;
        g.bench_function(format!("{name}_with_parse"), |b| {
            b.iter(|| {
                let (f, len, _) = &pool[i % POOL];
                i += 1;
                scratch = *f;
                let info = parse_frame(&scratch[..*len]).unwrap();
                black_box(proxy.answer_syn(&mut scratch, *len, &info, &rule))
            })
        });
    }
    g.finish();
}

fn bench_invalid_ack(c: &mut Criterion) {
    let mut rng = Rng(2);
    let pool: Vec<(Vec<u8>, FrameInfo)> = (0..POOL)
        .map(|_| {
            let r = rng.next();
            let s = rng.next();
            let src = Ipv4Addr::from((r as u32) | 0x0100_0000);
            let mut tcp = TcpRepr::new(
                (r >> 32) as u16,
                80,
                SeqNum(s as u32),
                SeqNum((s >> 32) as u32),
                TcpFlags::ACK,
                502,
            );
            tcp.timestamps = Some(Timestamps {
                tsval: (r >> 8) as u32,
                tsecr: (r >> 24) as u32,
            });
            let f = frame(src, SERVER, &tcp);
            let info = parse_frame(&f).unwrap();
            (f, info)
        })
        .collect();
    let rule = SynRule::default();
    let mut frames: Vec<Vec<u8>> = pool.iter().map(|(f, _)| f.clone()).collect();
    let mut g = c.benchmark_group("synproxy");
    g.throughput(Throughput::Elements(1));
    for (name, verify) in [("invalid_ack", true), ("invalid_ack_nic_csum", false)] {
        let mut proxy = proxy_with(verify);
        let mut i = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                let k = i % POOL;
                i += 1;
                let len = frames[k].len();
                let v = proxy.client_ack(&mut frames[k], len, &pool[k].1, &rule);
                debug_assert!(matches!(v, AckVerdict::Drop(_)));
                black_box(v)
            })
        });
        assert_eq!(proxy.counters().cookie_valid, 0);
    }
    g.finish();
}

/// An established connection per pool entry and its data segments in both directions.
struct Translated {
    conns: Vec<ProxyConn>,
    to_server: Vec<(Vec<u8>, FrameInfo)>,
    to_client: Vec<(Vec<u8>, FrameInfo)>,
}

fn establish(proxy: &mut SynProxy) -> Translated {
    let mut rng = Rng(3);
    let rule = SynRule::default();
    let mut out = Translated {
        conns: Vec::new(),
        to_server: Vec::new(),
        to_client: Vec::new(),
    };
    for _ in 0..POOL {
        let r = rng.next();
        let client = Ipv4Addr::from((r as u32) | 0x0100_0000);
        let (cport, isn) = ((r >> 32) as u16, (r >> 16) as u32);
        let mut syn = TcpRepr::new(cport, 80, SeqNum(isn), SeqNum(0), TcpFlags::SYN, 64240);
        syn.max_seg_size = Some(1460);
        syn.sack_permitted = true;
        syn.window_scale = Some(7);
        syn.timestamps = Some(Timestamps {
            tsval: 1000,
            tsecr: 0,
        });
        let mut buf = frame(client, SERVER, &syn);
        buf.resize(256, 0);
        let info = parse_frame(&buf[..74]).unwrap();
        let SynVerdict::Reply { len } = proxy.answer_syn(&mut buf, 74, &info, &rule) else {
            panic!("SYN")
        };
        let synack = parse_frame(&buf[..len]).unwrap();
        let l4 = match synack.l3 {
            levee_packet::L3Info::Ipv4(ip) => usize::from(ip.l4_offset),
            _ => unreachable!(),
        };
        let cookie = u32::from_be_bytes(buf[l4 + 4..l4 + 8].try_into().unwrap());
        let our_ts = u32::from_be_bytes(buf[l4 + 28..l4 + 32].try_into().unwrap());
        // The client's ACK.
        let mut ack = TcpRepr::new(cport, 80, SeqNum(isn + 1), SeqNum(cookie + 1), TcpFlags::ACK, 502);
        ack.timestamps = Some(Timestamps {
            tsval: 1001,
            tsecr: our_ts,
        });
        let mut buf = frame(client, SERVER, &ack);
        let alen = buf.len();
        buf.resize(256, 0);
        let info = parse_frame(&buf[..alen]).unwrap();
        let AckVerdict::Open { mut conn, .. } = proxy.client_ack(&mut buf, alen, &info, &rule) else {
            panic!("ACK")
        };
        // The server's SYN-ACK.
        let server_isn = rng.next() as u32;
        let mut sa = TcpRepr::new(
            80,
            cport,
            SeqNum(server_isn),
            SeqNum(isn + 1),
            TcpFlags::SYN | TcpFlags::ACK,
            65160,
        );
        sa.max_seg_size = Some(1460);
        sa.sack_permitted = true;
        sa.window_scale = Some(7);
        sa.timestamps = Some(Timestamps {
            tsval: 777,
            tsecr: 1001,
        });
        let mut buf = frame(SERVER, client, &sa);
        let slen = buf.len();
        buf.resize(256, 0);
        let info = parse_frame(&buf[..slen]).unwrap();
        let mut to_server = [0u8; 128];
        let v = proxy.server_segment(&mut conn, &mut buf, slen, &info, &mut to_server);
        assert!(matches!(v, ServerVerdict::Established { .. }));
        out.conns.push(conn);
        // Client data with timestamps and two SACK blocks; server data with timestamps.
        let mut c2s = TcpRepr::new(cport, 80, SeqNum(isn + 1), SeqNum(cookie + 1), TcpFlags::ACK, 502);
        c2s.timestamps = Some(Timestamps {
            tsval: 1002,
            tsecr: our_ts,
        });
        c2s.sack_blocks =
            SackBlocks::from_slice(&[(cookie + 2000, cookie + 3000), (cookie + 5000, cookie + 6000)])
                .unwrap();
        let f = frame(client, SERVER, &c2s);
        let info = parse_frame(&f).unwrap();
        out.to_server.push((f, info));
        let payload = [0x42u8; 1448];
        let mut s2c = TcpRepr::new(
            80,
            cport,
            SeqNum(server_isn + 1),
            SeqNum(isn + 1),
            TcpFlags::ACK,
            502,
        );
        s2c.timestamps = Some(Timestamps {
            tsval: 800,
            tsecr: 1002,
        });
        s2c.payload = &payload;
        let f = frame(SERVER, client, &s2c);
        let info = parse_frame(&f).unwrap();
        out.to_client.push((f, info));
    }
    out
}

fn bench_translate(c: &mut Criterion) {
    let mut proxy = proxy();
    let mut t = establish(&mut proxy);
    let rule = SynRule::default();
    let mut g = c.benchmark_group("synproxy");
    g.throughput(Throughput::Elements(1));
    let mut i = 0;
    g.bench_function("translate_to_server_ts_sack", |b| {
        b.iter(|| {
            let k = i % POOL;
            i += 1;
            let (f, info) = &mut t.to_server[k];
            let len = f.len();
            let v = proxy.client_segment(&mut t.conns[k], f, len, info, &rule);
            debug_assert_eq!(v, ClientVerdict::Forward);
            black_box(v)
        })
    });
    let mut i = 0;
    let mut spare = [0u8; 128];
    g.bench_function("translate_to_client_ts_1448B", |b| {
        b.iter(|| {
            let k = i % POOL;
            i += 1;
            let (f, info) = &mut t.to_client[k];
            let len = f.len();
            let v = proxy.server_segment(&mut t.conns[k], f, len, info, &mut spare);
            debug_assert_eq!(v, ServerVerdict::Forward);
            black_box(v)
        })
    });
    g.finish();
}

criterion_group!(benches, bench_syn, bench_invalid_ack, bench_translate);
criterion_main!(benches);
