//! ns per packet of the worker loop itself (parse, steer, buffer, flush, counters) over the
//! in-memory port, with one and with two workers (the second case pays hand-offs). The DPDK
//! figure including the driver is `perf/bench-forward.sh`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use levee_dataplane::flow::Steering;
use levee_dataplane::{HandoffMesh, MemPacket, MemPort, Side, Worker, WorkerConfig};

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
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
