//! Times levee's rule store on the benchmark ruleset, for `benches/kernel_compare.sh`, which
//! runs the kernel's tools on the same rules in the same run:
//!
//! ```text
//! ruleset_timing nft N        # the N-rule nft file on stdout
//! ruleset_timing iptables N   # the same rules for iptables-legacy-restore
//! ruleset_timing time N [R]   # medians over R runs (default 5): load, one-rule commit, list
//! ```

#[path = "../benches/common/ruleset.rs"]
mod ruleset;

use levee_control::generation::Committer;
use levee_control::rules::{Family, Op, OpResult, RuleStore, Transaction};
use levee_filter_vm::incremental::Position;
use levee_filter_vm::vm::State;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    match args.get(1).map(String::as_str) {
        Some("nft") => print!("{}", ruleset::nft(n)),
        Some("iptables") => print!("{}", ruleset::iptables(n)),
        Some("time") => {
            let runs: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5);
            time(n, runs);
        }
        _ => {
            eprintln!("usage: ruleset_timing nft|iptables|time N [RUNS]");
            std::process::exit(2);
        }
    }
}

fn time(n: usize, runs: usize) {
    let text = ruleset::nft(n);
    let txn = Transaction::new(vec![Op::Load { text, flush: true }]);
    let mut loads = Vec::new();
    let mut lists = Vec::new();
    let mut store = RuleStore::new();
    for _ in 0..runs {
        let t = Instant::now();
        let mut s = RuleStore::new();
        s.commit_local(&txn, 0).unwrap();
        loads.push(t.elapsed());
        let t = Instant::now();
        let l = s.list_ruleset(false);
        lists.push(t.elapsed());
        assert!(l.len() > n * 30);
        store = s;
    }
    drop(store);
    // One-rule commits with a simulated worker picking generations up.
    let t0 = Instant::now();
    let (mut c, mut readers) =
        Committer::start(&txn, 1, Box::new(move || t0.elapsed().as_nanos() as u64)).unwrap();
    c.timeout = Duration::from_secs(5);
    let stop = Arc::new(AtomicBool::new(false));
    let mut reader = readers.pop().unwrap();
    let s = stop.clone();
    let w = std::thread::spawn(move || {
        let mut state = State::new(&reader.current().compiled.program);
        while !s.load(Ordering::Relaxed) {
            let _ = reader.refresh(&mut state);
            // This box has fewer free cores than threads (a real worker owns its core):
            // give the core back between polls so the committer is not preempted for a tick.
            std::thread::yield_now();
        }
    });
    let mut commits = Vec::new();
    for i in 0..200 {
        let add = Transaction::new(vec![Op::AddRule {
            family: Family::Ip,
            table: "filter".into(),
            chain: "input".into(),
            position: Position::Append,
            rule: format!("ip saddr 198.19.255.{} tcp dport 9 counter accept", i % 250),
        }]);
        let t = Instant::now();
        let done = c.commit(&add).unwrap();
        commits.push(t.elapsed());
        let OpResult::Rule { handle, .. } = done.results[0] else {
            unreachable!()
        };
        c.commit(&Transaction::new(vec![Op::DeleteRule { handle }]))
            .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    w.join().unwrap();
    let mut sorted = commits.clone();
    sorted.sort();
    let p90 = sorted[sorted.len() * 9 / 10];
    // The compute part alone (no publication, no worker).
    let store = c.store().clone();
    let mut prepares = Vec::new();
    for i in 0..200 {
        let add = Transaction::new(vec![Op::AddRule {
            family: Family::Ip,
            table: "filter".into(),
            chain: "input".into(),
            position: Position::Index(i * 397 % n.max(1)),
            rule: format!("ip saddr 198.19.255.{} tcp dport 9 counter accept", i % 250),
        }]);
        let t = Instant::now();
        let p = store.prepare(&add, 0).unwrap();
        prepares.push(t.elapsed());
        drop(p);
    }
    println!(
        "levee rules={n} prepare_one_rule_anywhere_ms={} commit_one_rule_p90_ms={}",
        ms(median(prepares)),
        ms(p90)
    );
    println!(
        "levee rules={n} load_ms={} commit_one_rule_ms={} list_ms={}",
        ms(median(loads)),
        ms(median(commits)),
        ms(median(lists))
    );
}
