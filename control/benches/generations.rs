//! Rule generations: commit latency of a one-rule change (until every simulated worker runs
//! the new generation) on rulesets of 10, 1k and 100k rules; loading and listing 100k rules.
//!
//! `cargo bench -p levee-control --bench generations`. The rulesets are those of
//! `benches/common/ruleset.rs` (also used by `kernel_compare.sh` for nft and iptables).

#[path = "common/ruleset.rs"]
mod ruleset;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use levee_control::generation::Committer;
use levee_control::rules::{Family, Op, OpResult, RuleStore, Transaction};
use levee_filter_vm::incremental::Position;
use levee_filter_vm::vm::State;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn load(n: usize) -> Transaction {
    Transaction::new(vec![Op::Load {
        text: ruleset::nft(n),
        flush: true,
    }])
}

fn add_one(i: usize) -> Transaction {
    Transaction::new(vec![Op::AddRule {
        family: Family::Ip,
        table: "filter".into(),
        chain: "input".into(),
        position: Position::Append,
        rule: format!("ip saddr 198.19.255.{} tcp dport 9 counter accept", i % 250),
    }])
}

/// A committer with one simulated worker thread that picks up generations as a dataplane
/// worker does (once per poll); returns it and the worker's stop flag.
fn with_worker(n: usize) -> (Committer, Arc<AtomicBool>, std::thread::JoinHandle<u64>) {
    let t0 = Instant::now();
    let (mut c, mut readers) =
        Committer::start(&load(n), 1, Box::new(move || t0.elapsed().as_nanos() as u64)).unwrap();
    c.timeout = Duration::from_secs(5);
    let stop = Arc::new(AtomicBool::new(false));
    let mut reader = readers.pop().unwrap();
    let s = stop.clone();
    let worker = std::thread::spawn(move || {
        let mut state = State::new(&reader.current().compiled.program);
        let mut polls = 0u64;
        while !s.load(Ordering::Relaxed) {
            let _ = reader.refresh(&mut state);
            polls += 1;
            // This box has fewer free cores than threads (a real worker owns its core):
            // give the core back between polls so the committer is not preempted for a tick.
            std::thread::yield_now();
        }
        polls
    });
    (c, stop, worker)
}

fn commit_one_rule(c: &mut Criterion) {
    let mut g = c.benchmark_group("commit_one_rule");
    g.sample_size(50).measurement_time(Duration::from_secs(4));
    for n in [10usize, 1_000, 100_000] {
        let (mut committer, stop, worker) = with_worker(n);
        let mut k = 0usize;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    k += 1;
                    let t = Instant::now();
                    let done = committer.commit(&add_one(k)).unwrap();
                    total += t.elapsed();
                    // Back to n rules, untimed.
                    let OpResult::Rule { handle, .. } = done.results[0] else {
                        unreachable!()
                    };
                    committer
                        .commit(&Transaction::new(vec![Op::DeleteRule { handle }]))
                        .unwrap();
                }
                total
            })
        });
        stop.store(true, Ordering::Relaxed);
        worker.join().unwrap();
    }
    g.finish();
}

/// The compute part of a commit alone (parse, compile, verify, lower the one changed chunk,
/// snapshot), without publication or any worker: what does not depend on scheduling.
fn prepare_one_rule(c: &mut Criterion) {
    let mut g = c.benchmark_group("prepare_one_rule");
    g.sample_size(50).measurement_time(Duration::from_secs(3));
    for n in [10usize, 1_000, 100_000] {
        let mut store = RuleStore::new();
        store.commit_local(&load(n), 0).unwrap();
        let mut k = 0usize;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                k += 1;
                store.prepare(&add_one(k), 0).unwrap()
            })
        });
    }
    g.finish();
}

fn load_and_list(c: &mut Criterion) {
    let mut g = c.benchmark_group("ruleset_100k");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    let txn = load(100_000);
    g.bench_function("load", |b| {
        b.iter(|| {
            let mut s = RuleStore::new();
            s.commit_local(&txn, 0).unwrap();
            s
        })
    });
    let mut s = RuleStore::new();
    s.commit_local(&txn, 0).unwrap();
    g.bench_function("list", |b| b.iter(|| s.list_ruleset(false)));
    g.finish();
}

criterion_group!(benches, prepare_one_rule, commit_one_rule, load_and_list);
criterion_main!(benches);
