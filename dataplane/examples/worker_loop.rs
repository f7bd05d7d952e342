//! The worker's hot paths in a loop, for instruction-level profiling
//! (`valgrind --tool=callgrind target/release/examples/worker_loop syn 20`), over the
//! in-memory port, in batches of 2048 packets:
//! - `syn`: one worker with the ruleset of `perf/bench-synproxy.sh` answering bare SYNs from
//!   random sources (prints SYNs answered);
//! - `ct`: one worker with conntrack on and no ruleset forwarding ACKs of 2048 established
//!   flows (prints packets forwarded);
//! - `plain`: the same ACKs with conntrack off.
//!
//! Instruction counts, unlike times, do not depend on what else this shared machine runs.

use levee_conntrack::{HashKey, ShardConfig};
use levee_dataplane::flow::Steering;
use levee_dataplane::worker::WorkerFilter;
use levee_dataplane::{CtShard, HandoffMesh, MemPacket, MemPort, Side, Worker, WorkerConfig};
use std::sync::Arc;

const RULESET: &str = "table inet bench {
  chain raw { type filter hook prerouting priority raw; policy accept;
    tcp flags & (syn | ack) == syn notrack
  }
  chain pre { type filter hook prerouting priority filter; policy accept;
    ip daddr 198.19.255.1 tcp dport 80 ct state invalid,untracked synproxy mss 1460 wscale 7 timestamp sack-perm
    ct state invalid drop
  }
}";

fn syn(i: u32) -> MemPacket {
    let x = i.wrapping_mul(2_654_435_761);
    let mut f = vec![0u8; 54];
    f.reserve(74);
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[12] = 0x08;
    f[14] = 0x45;
    f[16..18].copy_from_slice(&40u16.to_be_bytes());
    f[22] = 64;
    f[23] = 6;
    f[26..30].copy_from_slice(&[198, 18 | (x >> 31) as u8, (x >> 8) as u8, x as u8]);
    f[30..34].copy_from_slice(&[198, 19, 255, 1]);
    let sum = levee_packet::checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&sum.to_be_bytes());
    f[34..36].copy_from_slice(&(1024 + (x >> 16) as u16).to_be_bytes());
    f[36..38].copy_from_slice(&80u16.to_be_bytes());
    f[38..42].copy_from_slice(&x.rotate_left(7).to_be_bytes());
    f[46] = 0x50;
    f[47] = 0x02;
    f[48..50].copy_from_slice(&64240u16.to_be_bytes());
    let ph = levee_packet::checksum::pseudo_header_v4(
        [f[26], f[27], f[28], f[29]].into(),
        [198, 19, 255, 1].into(),
        6,
        20,
    );
    let c = !levee_packet::checksum::add(ph, levee_packet::checksum::sum(&f[34..54]));
    f[50..52].copy_from_slice(&c.to_be_bytes());
    MemPacket(f)
}

/// An ACK of flow `i` (198.18.x.y:1024+i -> 198.19.255.1:80).
fn ack(i: u32) -> MemPacket {
    let mut p = syn(i);
    p.0[26..30].copy_from_slice(&[198, 18, (i >> 8) as u8, i as u8]);
    p.0[34..36].copy_from_slice(&(1024 + i as u16).to_be_bytes());
    p.0[47] = 0x10;
    p
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "syn".into());
    let batches: u32 = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(20);
    if mode == "ct" || mode == "plain" {
        return forward(batches, mode == "ct");
    }
    let compiled = Arc::new(
        levee_filter_vm::compile_ruleset(RULESET)
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
    let mut w = Worker::new(
        0,
        MemPort::new(4096, 4096),
        MemPort::new(4096, 4096),
        WorkerConfig::default(),
        Steering::new(1, 128),
        HandoffMesh::new(1, 4096),
    )
    .with_filter(WorkerFilter::new(compiled, 0))
    .with_conntrack(shard)
    .with_synproxy(proxy);
    let mut answered = 0u64;
    for b in 0..batches {
        for i in 0..2048 {
            let _ = w.port_mut(Side::Outside).wire_in.push(syn(b * 2048 + i));
        }
        for _ in 0..70 {
            w.poll_once(1);
        }
        while w.port_mut(Side::Outside).wire_out.pop().is_some() {
            answered += 1;
        }
    }
    println!("{answered}");
}

fn forward(batches: u32, conntrack: bool) {
    let shard = CtShard::new(
        ShardConfig {
            capacity: 4096,
            ..Default::default()
        },
        HashKey([7, 11]),
    )
    .expect("shard");
    let w = Worker::new(
        0,
        MemPort::new(4096, 4096),
        MemPort::new(4096, 4096),
        WorkerConfig::default(),
        Steering::new(1, 128),
        HandoffMesh::new(1, 4096),
    );
    let mut w = if conntrack { w.with_conntrack(shard) } else { w };
    let mut forwarded = 0u64;
    for _ in 0..=batches {
        for i in 0..2048 {
            let _ = w.port_mut(Side::Outside).wire_in.push(ack(i));
        }
        for _ in 0..70 {
            w.poll_once(1);
        }
        while w.port_mut(Side::Inside).wire_out.pop().is_some() {
            forwarded += 1;
        }
    }
    println!("{forwarded}");
}
