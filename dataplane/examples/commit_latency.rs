//! Commit latency with a real DPDK worker (issue 6's benchmark, measured end to end): one
//! worker busy-polls two `net_null` ports on lcore 1 while the control thread (this one, the
//! EAL main lcore) loads rulesets of N rules and then commits one-rule transactions into them
//! (add a rule, then delete it). A commit's latency runs from the start of the transaction
//! until the worker has picked up the new generation (`Committed::latency`); so it includes
//! parsing, compiling, verifying and lowering the change, publishing, and the worker's next
//! poll.
//!
//! `cargo run --release -p levee-dataplane --example commit_latency -- [COMMITS] [N...]`
//! (defaults: 200 commits per size, sizes 10 1000 100000; run as root: DPDK needs it for its
//! runtime directory). Prints one line per size: load time of the N-rule file, listing time,
//! and the median / p99 / max of the one-rule commits.

use levee_control::generation::Committer;
use levee_control::rules::{Family, Op, OpResult, Transaction};
use levee_dataplane::{DataplaneSpec, Running};
use levee_filter_vm::incremental::Position;
use std::time::{Duration, Instant};

// The benchmark rulesets' addresses (shared with the control benches and `kernel_compare.sh`).
#[path = "../../control/benches/common/ruleset.rs"]
mod ruleset;
use ruleset::addr;

/// `n` rules in a prerouting chain (every worker evaluates it), each with a counter so no
/// two rules merge.
fn ruleset(n: usize) -> String {
    let mut s = String::from(
        "table ip filter {\n\tchain pre {\n\t\ttype filter hook prerouting priority filter; policy accept;\n",
    );
    for i in 0..n {
        s += &format!(
            "\t\tip saddr {} tcp dport {} counter accept\n",
            addr(i),
            1000 + i % 1000
        );
    }
    s + "\t}\n}\n"
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let commits: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let mut sizes: Vec<usize> = args.filter_map(|a| a.parse().ok()).collect();
    if sizes.is_empty() {
        sizes = vec![10, 1000, 100_000];
    }
    let prefix = format!("levee-commit-{}", std::process::id());
    let eal_args: Vec<String> = [
        "--no-huge",
        "-m",
        "512",
        "--no-pci",
        "-l",
        "0,1",
        "--log-level",
        "lib.eal:warning",
        "--file-prefix",
        &prefix,
        "--vdev",
        "net_null0",
        "--vdev",
        "net_null1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let spec = DataplaneSpec {
        eal_args,
        port_names: ["net_null0".into(), "net_null1".into()],
        worker_cores: vec![1],
        mbufs_per_worker: 4095,
        mempool_cache: 256,
        rx_desc: 512,
        tx_desc: 512,
        burst: 32,
        tx_buffer: 512,
        drain_us: 100,
        handoff_ring: 1024,
        filter: None,
        conntrack: None,
        synproxy: None,
    };
    let started = Instant::now();
    let clock = move || started.elapsed().as_nanos() as u64;
    let empty = Transaction::new(vec![Op::Load {
        text: "table ip filter {\n\tchain pre {\n\t\ttype filter hook prerouting priority filter; policy accept;\n\t}\n}\n"
            .into(),
        flush: true,
    }]);
    let (mut committer, readers) = Committer::start(&empty, 1, Box::new(clock)).expect("empty ruleset");
    committer.timeout = Duration::from_secs(30);
    let mut running = Running::start_with(&spec, Some(readers)).expect("dataplane start");
    println!("size load_ms list_ms commits p50_us p99_us max_us worker_rx_mpps");
    for n in sizes {
        let text = ruleset(n);
        let t = Instant::now();
        committer
            .commit(&Transaction::new(vec![Op::Load { text, flush: true }]))
            .expect("load");
        let load = t.elapsed();
        let t = Instant::now();
        let listing = committer.store().list_ruleset(false);
        let list = t.elapsed();
        assert!(listing.lines().count() >= n);
        let rx0 = running.totals().rx_packets.iter().sum::<u64>();
        let t0 = Instant::now();
        let mut lat = Vec::with_capacity(commits);
        for i in 0..commits {
            let add = Transaction::new(vec![Op::AddRule {
                family: Family::Ip,
                table: "filter".into(),
                chain: "pre".into(),
                position: Position::Index(n / 2),
                rule: format!("ip saddr 198.19.255.{} tcp dport 9 counter drop", i % 250 + 1),
            }]);
            let c = committer.commit(&add).expect("add");
            lat.push(c.latency);
            let Some(OpResult::Rule { handle, .. }) = c.results.first() else {
                panic!("no handle")
            };
            committer
                .commit(&Transaction::new(vec![Op::DeleteRule { handle: *handle }]))
                .expect("delete");
        }
        let rx = running.totals().rx_packets.iter().sum::<u64>() - rx0;
        lat.sort();
        println!(
            "{n} {:.1} {:.1} {} {:.1} {:.1} {:.1} {:.2}",
            load.as_secs_f64() * 1e3,
            list.as_secs_f64() * 1e3,
            commits,
            pct(&lat, 0.5).as_secs_f64() * 1e6,
            pct(&lat, 0.99).as_secs_f64() * 1e6,
            lat.last().unwrap().as_secs_f64() * 1e6,
            rx as f64 / t0.elapsed().as_secs_f64() / 1e6
        );
    }
    running.shutdown();
}
