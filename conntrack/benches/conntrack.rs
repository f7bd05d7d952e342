//! Conntrack shard costs: `track` of a packet of an established TCP flow (random flow order, so
//! the table's memory is touched as in a busy worker) at 10 k, 1 M and 10 M entries, one packet
//! at a time and in bursts of 32 and 64 (`track_burst`; `prepare`, the staged loads alone); a
//! bare lookup by tuple, one at a time and in bursts (`prepare_lookup` + `lookup_prepared`); inserting new flows (SYN + confirm); the timer wheel per loop iteration;
//! and memory per entry (printed).
//!
//! Run: `cargo bench -p levee-conntrack`.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use levee_conntrack::{Burst, HashKey, Shard, ShardConfig, TcpEndpoint, Tracked};
use levee_packet::checksum::PseudoHeader;
use levee_packet::ipv4::Ipv4Repr;
use levee_packet::parse::{parse_frame, FlowTuple, FrameInfo, L3Info, L4Info};
use levee_packet::tcp::{SeqNum, TcpFlags, TcpRepr};

const BATCH: u64 = 1024;
/// Packets per burst (an rx burst).
const BURST: usize = 32;

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

fn bench_lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("track_established");
    g.throughput(Throughput::Elements(BATCH));
    for (n, label) in [(10_000u32, "10k"), (1 << 20, "1M"), (10_000_000, "10M")] {
        let mut sh = established(n);
        eprintln!(
            "{label}: {} entries, {} bytes/entry slab, {:.1} bytes/entry in all at this capacity ({} MB)",
            sh.len(),
            Shard::<()>::entry_size(),
            sh.memory_bytes() as f64 / f64::from(sh.config().capacity),
            sh.memory_bytes() >> 20
        );
        let (mut f, mut info) = template(TcpFlags::ACK);
        let mut k = 0u64;
        if n >= 10_000_000 {
            g.sample_size(10);
        }
        g.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter(|| {
                for _ in 0..BATCH {
                    k += 1;
                    packet_of(&mut f, &mut info, scatter(k, n));
                    let t = sh.track(&f, &info, 2_000_000_000);
                    debug_assert!(matches!(t, Tracked::Known(_)));
                    black_box(t);
                }
            })
        });
        // The brief form the worker calls: the same tracking, an eight-byte result.
        g.bench_function(BenchmarkId::new("classify", label), |b| {
            b.iter(|| {
                for _ in 0..BATCH {
                    k += 1;
                    packet_of(&mut f, &mut info, scatter(k, n));
                    let o = sh.classify(&f, &info, 2_000_000_000);
                    debug_assert!(matches!(o, levee_conntrack::Outcome::Known { .. }));
                    black_box(o);
                }
            })
        });
        let mut g2_k = 0u64;
        let tuples: Vec<FlowTuple> = (0..4096u32)
            .map(|i| {
                let (src, sp) = client(scatter(u64::from(i) + 1, n));
                FlowTuple::v4(src, SERVER, 6, sp, 443)
            })
            .collect();
        g.bench_function(BenchmarkId::new("lookup_tuple", label), |b| {
            b.iter(|| {
                for _ in 0..BATCH {
                    g2_k += 1;
                    let mut t = tuples[(g2_k & 4095) as usize];
                    let (src, sp) = client(scatter(g2_k, n));
                    t.src_addr[..4].copy_from_slice(&src.octets());
                    t.src_port = sp;
                    black_box(sh.lookup_tuple(&t, 2_000_000_000));
                }
            })
        });
        // Bursts of 32 packets of 32 scattered flows, as one rx burst of a busy worker; and of
        // 64, as the bursts of both ports prepared together.
        let mut frames: Vec<(Vec<u8>, FrameInfo)> = (0..64).map(|_| template(TcpFlags::ACK)).collect();
        let mut burst = Burst::new();
        let mut out = Vec::with_capacity(64);
        let mut k = 0u64;
        for (size, suffix) in [(BURST, ""), (64, "64")] {
            let frames = &mut frames[..size];
            g.bench_function(BenchmarkId::new(format!("track_burst{suffix}"), label), |b| {
                b.iter(|| {
                    for _ in 0..BATCH / size as u64 {
                        for (f, info) in frames.iter_mut() {
                            k += 1;
                            packet_of(f, info, scatter(k, n));
                        }
                        let refs: [(&[u8], &FrameInfo); 64] =
                            core::array::from_fn(|j| (&frames[j % size].0[..], &frames[j % size].1));
                        out.clear();
                        sh.track_burst(&mut burst, &refs[..size], 2_000_000_000, &mut out);
                        debug_assert!(out.iter().all(|t| matches!(t, Tracked::Known(_))));
                        black_box(&out);
                    }
                })
            });
            g.bench_function(BenchmarkId::new(format!("lookup_burst{suffix}"), label), |b| {
                b.iter(|| {
                    for _ in 0..BATCH / size as u64 {
                        for (f, info) in frames.iter_mut() {
                            k += 1;
                            packet_of(f, info, scatter(k, n));
                        }
                        sh.prepare_lookup(&mut burst, frames.iter().map(|(f, info)| Some((&f[..], info))));
                        for (i, (f, info)) in frames.iter().enumerate() {
                            let found = sh.lookup_prepared(&burst, i, f, info, 2_000_000_000);
                            debug_assert!(found.is_some());
                            black_box(found);
                        }
                    }
                })
            });
        }
        let frames = &mut frames[..BURST];
        g.bench_function(BenchmarkId::new("prepare", label), |b| {
            b.iter(|| {
                for _ in 0..BATCH / BURST as u64 {
                    for (f, info) in frames.iter_mut() {
                        k += 1;
                        packet_of(f, info, scatter(k, n));
                    }
                    sh.prepare(&mut burst, frames.iter().map(|(f, info)| Some((&f[..], info))));
                    black_box(&burst);
                }
            })
        });
        g.sample_size(100);
    }
    g.finish();
}

fn bench_insert(c: &mut Criterion) {
    let mut g = c.benchmark_group("insert");
    g.throughput(Throughput::Elements(1));
    g.bench_function("syn_track_confirm", |b| {
        b.iter_custom(|iters| {
            let n = iters.min(1 << 22) as u32;
            let mut sh: Shard = Shard::new(
                ShardConfig {
                    capacity: n.next_power_of_two().max(1024),
                    ..ShardConfig::default()
                },
                HashKey([9, 9]),
            )
            .unwrap();
            let (mut f, mut info) = template(TcpFlags::SYN);
            let start = Instant::now();
            for i in 0..iters {
                packet_of(&mut f, &mut info, (i % u64::from(n)) as u32);
                if let Tracked::New(p) = sh.track(&f, &info, 1_000_000_000) {
                    black_box(sh.confirm(p, 1_000_000_000).ok());
                }
            }
            start.elapsed()
        })
    });
    g.finish();
}

fn bench_wheel(c: &mut Criterion) {
    let mut g = c.benchmark_group("expire");
    // 1 M UDP-like flows created over 30 s; each loop iteration advances 1 µs and calls
    // expire with a budget of 64, as a worker would.
    g.bench_function("loop_iteration_idle_1M", |b| {
        let mut sh = established(1 << 20);
        let mut now = 2_000_000_000u64;
        b.iter(|| {
            now += 1_000;
            black_box(sh.expire(now, 64))
        })
    });
    g.bench_function("loop_iteration_expiring", |b| {
        b.iter_custom(|iters| {
            let mut sh: Shard = Shard::new(
                ShardConfig {
                    capacity: 1 << 20,
                    timeouts: levee_conntrack::Timeouts {
                        tcp_established: 1_000,
                        ..levee_conntrack::Timeouts::LINUX
                    },
                    ..ShardConfig::default()
                },
                HashKey([1, 2]),
            )
            .unwrap();
            let c = TcpEndpoint {
                isn: 1,
                window: 100,
                wscale: None,
                sack_perm: false,
            };
            for i in 0..(1u32 << 20) {
                let (src, sp) = client(i);
                let t = FlowTuple::v4(src, SERVER, 6, sp, 443);
                // Spread creation over 10 s so that about 100 k expire per second.
                let at = 1_000_000_000 + u64::from(i) * 10_000;
                sh.insert_tcp(&t, &c, &c, true, (), at).unwrap();
            }
            let mut now = 12_000_000_000u64;
            let start = Instant::now();
            for _ in 0..iters {
                now += 10_000;
                black_box(sh.expire(now, 64));
            }
            start.elapsed()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3)).sample_size(30);
    targets = bench_lookup, bench_insert, bench_wheel
}
criterion_main!(benches);
