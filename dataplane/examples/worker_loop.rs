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

#[path = "../benches/common/mod.rs"]
mod common;

use common::{ack_frame, syn_frame, SYNPROXY_RULESET};

fn syn(i: u32) -> MemPacket {
    MemPacket(syn_frame(i))
}

fn ack(i: u32) -> MemPacket {
    MemPacket(ack_frame(i))
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "syn".into());
    let batches: u32 = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(20);
    if mode == "ct" || mode == "plain" {
        return forward(batches, mode == "ct");
    }
    let compiled = Arc::new(
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
