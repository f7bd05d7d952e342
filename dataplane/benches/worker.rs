//! ns per packet of the worker loop itself (parse, steer, buffer, flush, counters) over the
//! in-memory port, with one and with two workers (the second case pays hand-offs), and with
//! conntrack on (established flows picked at random out of 2k, 100k and 1M tracked flows).
//! The DPDK figure including the driver is `perf/bench-forward.sh`.

#[path = "common/mod.rs"]
mod common;

use common::{syn_frame, SYNPROXY_RULESET};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use levee_conntrack::{HashKey, ShardConfig};
use levee_dataplane::flow::Steering;
use levee_dataplane::{CtShard, HandoffMesh, MemPacket, MemPort, Side, Worker, WorkerConfig};

/// A TCP ACK of flow `i` (source address and port from `i`).
fn flow_frame(i: u32) -> MemPacket {
    let mut p = frame(i & 0xffff);
    p.0[34..36].copy_from_slice(&(1024 + (i >> 16) as u16).to_be_bytes());
    p
}

fn frame(i: u32) -> MemPacket {
    let mut f = vec![0u8; 60];
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[12] = 0x08;
    f[14] = 0x45;
    f[16..18].copy_from_slice(&40u16.to_be_bytes());
    f[22] = 64;
    f[23] = 6;
    f[26..30].copy_from_slice(&[198, 18, (i >> 8) as u8, i as u8]);
    f[30..34].copy_from_slice(&[198, 19, 255, 1]);
    let sum = levee_packet::checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&sum.to_be_bytes());
    f[34..36].copy_from_slice(&(1024 + i as u16).to_be_bytes());
    f[36..38].copy_from_slice(&80u16.to_be_bytes());
    f[46] = 0x50;
    f[47] = 0x10;
    MemPacket(f)
}

fn bench(c: &mut Criterion) {
    const BURSTS: usize = 64;
    let frames: Vec<MemPacket> = (0..(BURSTS * 32) as u32).map(frame).collect();
    let mut g = c.benchmark_group("worker");
    g.throughput(Throughput::Elements(frames.len() as u64));
    for workers in [1u16, 2] {
        g.bench_function(format!("poll_once_64B_tcp_{workers}_worker"), |b| {
            let steering = Steering::new(workers, 128);
            let mesh = HandoffMesh::new(workers as usize, 4096);
            let mut ws: Vec<Worker<MemPort>> = (0..workers)
                .map(|id| {
                    let cap = frames.len() * 2;
                    Worker::new(
                        id,
                        MemPort::new(cap, cap),
                        MemPort::new(cap, cap),
                        WorkerConfig::default(),
                        steering,
                        mesh.clone(),
                    )
                })
                .collect();
            b.iter_batched(
                || frames.clone(),
                |batch| {
                    let inject = &ws[0].port_mut(Side::Outside).wire_in;
                    for f in batch {
                        let _ = inject.push(f);
                    }
                    for _ in 0..BURSTS + 2 {
                        for w in ws.iter_mut() {
                            w.poll_once(0);
                        }
                    }
                    for w in ws.iter_mut() {
                        let p = w.port_mut(Side::Inside);
                        while p.wire_out.pop().is_some() {}
                    }
                },
                BatchSize::LargeInput,
            );
        });
    }
    // Conntrack on: `flows` flows tracked first, then bursts of established packets from
    // flows picked at random (a fixed LCG, so every run measures the same packets).
    for flows in [2_048u32, 100_000, 1_000_000] {
        let steering = Steering::new(1, 128);
        let mesh = HandoffMesh::new(1, 4096);
        let cap = frames.len() * 2;
        let shard = CtShard::new(
            ShardConfig {
                capacity: flows.next_power_of_two(),
                ..Default::default()
            },
            HashKey([7, 11]),
        )
        .expect("shard");
        let mut w = Worker::new(
            0,
            MemPort::new(cap, cap),
            MemPort::new(cap, cap),
            WorkerConfig::default(),
            steering,
            mesh.clone(),
        )
        .with_conntrack(shard);
        for chunk in (0..flows).collect::<Vec<_>>().chunks(1024) {
            for &i in chunk {
                let _ = w.port_mut(Side::Outside).wire_in.push(flow_frame(i));
            }
            for _ in 0..34 {
                w.poll_once(0);
            }
            let p = w.port_mut(Side::Inside);
            while p.wire_out.pop().is_some() {}
        }
        assert_eq!(w.conntrack().map(|c| c.len()), Some(flows), "every flow tracked");
        let mut x = 12345u32;
        let picked: Vec<MemPacket> = (0..frames.len())
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                flow_frame((x >> 4) % flows)
            })
            .collect();
        g.bench_function(
            format!("poll_once_64B_tcp_1_worker_conntrack_{flows}_flows"),
            |b| {
                b.iter_batched(
                    || picked.clone(),
                    |batch| {
                        let inject = &w.port_mut(Side::Outside).wire_in;
                        for f in batch {
                            let _ = inject.push(f);
                        }
                        for _ in 0..BURSTS + 2 {
                            w.poll_once(0);
                        }
                        let p = w.port_mut(Side::Inside);
                        while p.wire_out.pop().is_some() {}
                    },
                    BatchSize::LargeInput,
                );
            },
        );
    }
    // The SYN proxy under a SYN flood: the ruleset of `perf/bench-synproxy.sh` (raw-chain
    // notrack, synproxy rule), every SYN answered with a cookie SYN-ACK out of its port.
    let compiled = std::sync::Arc::new(
        levee_filter_vm::compile_ruleset(SYNPROXY_RULESET)
            .expect("ruleset")
            .compiled,
    );
    let shard = CtShard::new(
        ShardConfig {
            capacity: 1 << 16,
            loose: false,
            ..Default::default()
        },
        HashKey([7, 11]),
    )
    .expect("shard");
    let proxy = levee_synproxy::SynProxy::new(
        levee_synproxy::Config::default(),
        &levee_synproxy::MasterSecret::from_bytes([9; 16]),
    )
    .expect("proxy");
    let cap = frames.len() * 2;
    let mut w = Worker::new(
        0,
        MemPort::new(cap, cap),
        MemPort::new(cap, cap),
        WorkerConfig::default(),
        Steering::new(1, 128),
        HandoffMesh::new(1, 4096),
    )
    .with_filter(levee_dataplane::worker::WorkerFilter::new(compiled, 0))
    .with_conntrack(shard)
    .with_synproxy(proxy);
    let syns: Vec<MemPacket> = (0..frames.len() as u32)
        .map(|i| MemPacket(syn_frame(i)))
        .collect();
    g.bench_function("poll_once_64B_syn_1_worker_synproxy", |b| {
        b.iter_batched(
            // Room for the SYN-ACK's options, as an mbuf has (no reallocation timed).
            || {
                syns.iter()
                    .map(|p| {
                        let mut v = Vec::with_capacity(128);
                        v.extend_from_slice(&p.0);
                        MemPacket(v)
                    })
                    .collect::<Vec<_>>()
            },
            |batch| {
                let inject = &w.port_mut(Side::Outside).wire_in;
                for f in batch {
                    let _ = inject.push(f);
                }
                for _ in 0..BURSTS + 2 {
                    w.poll_once(1);
                }
                let p = w.port_mut(Side::Outside);
                let mut answered = 0;
                while p.wire_out.pop().is_some() {
                    answered += 1;
                }
                assert_eq!(answered, syns.len(), "every SYN answered");
            },
            BatchSize::LargeInput,
        );
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
