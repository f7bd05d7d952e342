//! Best-of-N timing loop for the conntrack packet path, next to the criterion benches: on a
//! shared machine the fastest of many short runs shows what the code costs when the other
//! cores leave the caches and memory alone, where criterion's medians show it under load.
//!
//! Run: `cargo run --release -p levee-conntrack --example burst_timing -- FLOWS [REPS] [BURST]
//! [MODE]`, e.g. `… -- 1048576 40 32 lookup_burst`. Modes: `track` (one packet at a time),
//! `track_burst`, `lookup_burst` (`prepare_lookup` + `lookup_prepared`), `prepare`; all of
//! them by default. Each run is 32 768 packets of scattered established flows; prints the
//! best and the median ns per packet.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Instant;

use levee_conntrack::{Burst, HashKey, Shard, ShardConfig, TcpEndpoint, BURST_MAX};
use levee_packet::checksum::PseudoHeader;
use levee_packet::ipv4::Ipv4Repr;
use levee_packet::parse::{parse_frame, FlowTuple, FrameInfo, L3Info, L4Info};
use levee_packet::tcp::{SeqNum, TcpFlags, TcpRepr};

/// Client address and port of flow `i` (up to 2^32 flows).
fn client(i: u32) -> (Ipv4Addr, u16) {
    let a = 0xc612_0000u32.wrapping_add(i >> 14); // 198.18.0.0/15 and up
    (Ipv4Addr::from(a), 1024 + (i & 0x3fff) as u16)
}

const SERVER: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 1);

/// An ACK from the client of flow 0; `packet_of` patches it for another flow.
fn template(flags: TcpFlags) -> (Vec<u8>, FrameInfo) {
    let (src, sp) = client(0);
    let r = TcpRepr::new(sp, 443, SeqNum(1001), SeqNum(5001), flags, 502);
    let mut seg = vec![0u8; r.buffer_len()];
    r.emit(&mut seg, &PseudoHeader::V4 { src, dst: SERVER }).unwrap();
    let mut f = vec![0u8; 34];
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    Ipv4Repr {
        src_addr: src,
        dst_addr: SERVER,
        protocol: 6,
        payload_len: seg.len(),
        ttl: 64,
        dscp: 0,
        ecn: 0,
        ident: 0,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
    }
    .emit(&mut f[14..])
    .unwrap();
    f.extend_from_slice(&seg);
    let info = parse_frame(&f).unwrap();
    (f, info)
}

/// Rewrites the template for flow `i` (addresses and ports only: conntrack reads no checksum).
fn packet_of(frame: &mut [u8], info: &mut FrameInfo, i: u32) {
    let (src, sp) = client(i);
    frame[26..30].copy_from_slice(&src.octets());
    frame[34..36].copy_from_slice(&sp.to_be_bytes());
    if let L3Info::Ipv4(ip) = &mut info.l3 {
        ip.src = src;
        if let L4Info::Tcp { src_port, .. } = &mut ip.l4 {
            *src_port = sp;
        }
    }
}

/// A shard holding `n` established flows (inserted as the SYN proxy would).
fn established(n: u32) -> Shard {
    let mut sh: Shard = Shard::new(
        ShardConfig {
            capacity: n.next_power_of_two().max(1024),
            ..ShardConfig::default()
        },
        HashKey([0x1234, 0x5678]),
    )
    .unwrap();
    let c = TcpEndpoint {
        isn: 1000,
        window: 502,
        wscale: None,
        sack_perm: false,
    };
    let s = TcpEndpoint { isn: 5000, ..c };
    for i in 0..n {
        let (src, sp) = client(i);
        let t = FlowTuple::v4(src, SERVER, 6, sp, 443);
        sh.insert_tcp(&t, &c, &s, true, (), 1_000_000_000).unwrap();
    }
    sh
}

/// Visits flows in a scattered order (an odd stride modulo `n` is a permutation when `n` is a
/// power of two; otherwise close enough).
fn scatter(k: u64, n: u32) -> u32 {
    (k.wrapping_mul(0x9e37_79b1) % u64::from(n)) as u32
}

/// Packets per timed run.
const PER_RUN: usize = 1 << 15;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: burst_timing FLOWS [REPS] [BURST] [MODE]";
    let n: u32 = args.get(1).and_then(|s| s.parse().ok()).expect(usage);
    let reps: usize = args.get(2).map_or(20, |s| s.parse().expect(usage));
    let size: usize = args.get(3).map_or(32, |s| s.parse().expect(usage));
    assert!((1..=BURST_MAX).contains(&size), "BURST is 1..={BURST_MAX}");
    let modes: Vec<&str> = match args.get(4) {
        Some(m) => vec![m.as_str()],
        None => vec!["track", "track_burst", "lookup_burst", "prepare"],
    };
    let mut sh = established(n);
    let mut frames: Vec<(Vec<u8>, FrameInfo)> = (0..size).map(|_| template(TcpFlags::ACK)).collect();
    let mut burst = Burst::new();
    let mut out = Vec::with_capacity(size);
    let mut k = 0u64;
    let now = 2_000_000_000;
    for mode in modes {
        let mut runs = Vec::with_capacity(reps);
        for _ in 0..reps {
            let t = Instant::now();
            for _ in 0..PER_RUN / size {
                for (f, info) in frames.iter_mut() {
                    k += 1;
                    packet_of(f, info, scatter(k, n));
                }
                match mode {
                    "track" => {
                        for (f, info) in &frames {
                            black_box(sh.track(f, info, now));
                        }
                    }
                    "track_burst" => {
                        let refs: [(&[u8], &FrameInfo); BURST_MAX] =
                            core::array::from_fn(|j| (&frames[j % size].0[..], &frames[j % size].1));
                        out.clear();
                        sh.track_burst(&mut burst, &refs[..size], now, &mut out);
                        black_box(&out);
                    }
                    "lookup_burst" => {
                        sh.prepare_lookup(&mut burst, frames.iter().map(|(f, info)| Some((&f[..], info))));
                        for (i, (f, info)) in frames.iter().enumerate() {
                            black_box(sh.lookup_prepared(&burst, i, f, info, now));
                        }
                    }
                    "prepare" => {
                        sh.prepare(&mut burst, frames.iter().map(|(f, info)| Some((&f[..], info))));
                        black_box(&burst);
                    }
                    other => panic!("unknown mode {other}; {usage}"),
                }
            }
            runs.push(t.elapsed().as_nanos() as f64 / (PER_RUN / size * size) as f64);
        }
        runs.sort_by(f64::total_cmp);
        println!(
            "{n} flows, bursts of {size}, {mode}: best {:.1} ns, median {:.1} ns a packet",
            runs[0],
            runs[runs.len() / 2]
        );
    }
}
