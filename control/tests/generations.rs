//! Swap under load: simulated workers judge packets in bursts while the control thread commits
//! thousands of generations. Every packet must be judged by exactly one generation (two rules
//! in two chains, changed together by each transaction, must both show that generation), no
//! generation may be let go before every worker has moved past it, per-rule counters of a rule
//! that survives every generation must count every packet, and no packet may go missing.

use levee_control::generation::{Committer, SEEN_GONE};
use levee_control::rules::{Family, Op, OpResult, Transaction};
use levee_filter_vm::nft::ast::Hook;
use levee_filter_vm::vm::{Actions, State, Verdict};
use levee_filter_vm::PacketMeta;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Ethernet + IPv4 + TCP SYN to port `dport`, 60 bytes.
fn tcp(dport: u16) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[12] = 0x08;
    f[14] = 0x45;
    f[16..18].copy_from_slice(&40u16.to_be_bytes());
    f[22] = 64;
    f[23] = 6;
    f[26..30].copy_from_slice(&[198, 18, 0, 1]);
    f[30..34].copy_from_slice(&[198, 18, 0, 2]);
    f[34..36].copy_from_slice(&40000u16.to_be_bytes());
    f[36..38].copy_from_slice(&dport.to_be_bytes());
    f[46] = 0x50;
    f[47] = 0x02;
    f
}

const RULESET: &str = "table ip t {
    chain pre {
        type filter hook prerouting priority 0; policy accept;
        tcp dport 22 counter
        meta mark set 1 jump sub
    }
    chain sub {
        ct mark set 1
    }
}";

const WORKERS: usize = 3;
const COMMITS: u64 = 2_000;
const BURST: usize = 32;

#[test]
fn every_packet_is_judged_by_exactly_one_generation() {
    let start = std::time::Instant::now();
    let clock = Box::new(move || start.elapsed().as_nanos() as u64);
    let load = Transaction::new(vec![Op::Load {
        text: RULESET.into(),
        flush: true,
    }]);
    let (mut committer, readers) = Committer::start(&load, WORKERS, clock).unwrap();
    committer.timeout = Duration::from_secs(10);
    let handles: Vec<u64> = committer.store().image().rules().map(|v| v.handle).collect();
    let (ha, hb) = (handles[1], handles[2]);
    let counter_slot = committer
        .store()
        .image()
        .rule(handles[0])
        .unwrap()
        .counter
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let frames = [tcp(22), tcp(80)];
    let infos: Vec<_> = frames
        .iter()
        .map(|f| levee_packet::parse::parse_frame(f).unwrap())
        .collect();
    let mut threads = Vec::new();
    for mut reader in readers {
        let stop = stop.clone();
        let (frames, infos) = (frames.clone(), infos.clone());
        threads.push(std::thread::spawn(move || {
            let mut state = State::new(&reader.current().compiled.program);
            let bank = state.counters.clone();
            let mut actions = Actions::default();
            let meta = PacketMeta::default();
            let (mut packets, mut port22, mut generations) = (0u64, 0u64, 0u64);
            let mut last = 0;
            while !stop.load(Ordering::Relaxed) {
                // Once per burst, as the dataplane does.
                let gen = reader.refresh(&mut state).clone();
                assert!(gen.id >= last, "generations only move forward");
                if gen.id != last {
                    generations += 1;
                    last = gen.id;
                }
                for i in 0..BURST {
                    let k = i % 2;
                    let v = gen.compiled.evaluate_hooks_into(
                        &mut state,
                        &[Hook::Prerouting],
                        &frames[k],
                        Some(&infos[k]),
                        &meta,
                        &mut actions,
                    );
                    assert_eq!(v, Verdict::Accept);
                    // Both rules, in two chains, from the one generation this packet saw.
                    assert_eq!(
                        actions.mark,
                        Some(gen.id as u32),
                        "packet judged by two generations"
                    );
                    assert_eq!(
                        actions.ct_mark,
                        Some(gen.id as u32),
                        "packet judged by two generations"
                    );
                    packets += 1;
                    port22 += (k == 0) as u64;
                }
                // More threads than cores here: let the control thread run between bursts
                // (a real worker owns its core and never yields).
                std::thread::yield_now();
            }
            (packets, port22, generations, bank)
        }));
    }

    let mut weak: Vec<(u64, Weak<levee_control::generation::Generation>)> = Vec::new();
    let mut worst = Duration::ZERO;
    for _ in 0..COMMITS {
        let next = committer.generation() + 1;
        let txn = Transaction::new(vec![
            Op::ReplaceRule {
                handle: ha,
                rule: format!("meta mark set {next} jump sub"),
            },
            Op::ReplaceRule {
                handle: hb,
                rule: format!("ct mark set {next}"),
            },
        ])
        .expect_generation(next - 1);
        let c = committer.commit(&txn).unwrap();
        assert_eq!(c.generation, next);
        assert_eq!(c.results, vec![OpResult::Done, OpResult::Done]);
        worst = worst.max(c.latency);
        // Every worker runs `next`: everything older may go, and has gone.
        let p = committer.publisher();
        assert!(p.seen().iter().all(|s| *s >= next));
        assert_eq!(p.retired(), 0);
        weak.push((next, Arc::downgrade(&p.current())));
        // A generation let go was past every worker when it went (seen only grows).
        let min = p.min_seen();
        for (g, w) in &weak {
            if w.upgrade().is_none() {
                assert!(min > *g, "generation {g} freed while a worker could still run it");
            }
        }
    }
    // A refused transaction publishes nothing.
    let g = committer.generation();
    let bad = Transaction::new(vec![Op::ReplaceRule {
        handle: ha,
        rule: "jump nowhere".into(),
    }]);
    assert!(committer.commit(&bad).is_err());
    assert_eq!(committer.publisher().current().id, g);

    stop.store(true, Ordering::Relaxed);
    let mut total22 = 0;
    let mut counted = 0;
    for t in threads {
        let (packets, port22, generations, bank) = t.join().unwrap();
        assert!(packets > 0);
        assert!(generations > 1, "each worker saw the ruleset change");
        total22 += port22;
        counted += bank.get(counter_slot as usize).unwrap().get().0;
    }
    // The counter rule survived every generation: its per-worker counters kept counting.
    assert_eq!(
        counted, total22,
        "per-rule counters survived {COMMITS} generation swaps"
    );
    assert_eq!(committer.publisher().seen(), vec![SEEN_GONE; WORKERS]);
    let m = committer.metrics();
    assert_eq!(m.commits.load(Ordering::Relaxed), COMMITS);
    assert_eq!(m.refused.load(Ordering::Relaxed), 1);
    assert!(m.max_ns.load(Ordering::Relaxed) >= worst.as_nanos() as u64);
    eprintln!(
        "{COMMITS} commits with {WORKERS} workers, worst latency {worst:?}, mean {} ns",
        m.total_ns.load(Ordering::Relaxed) / COMMITS
    );
}

#[test]
fn a_stuck_worker_times_the_commit_out_with_a_clear_error() {
    let load = Transaction::new(vec![Op::Load {
        text: RULESET.into(),
        flush: true,
    }]);
    let (mut committer, readers) = Committer::start(&load, 2, Box::new(|| 0)).unwrap();
    committer.timeout = Duration::from_millis(20);
    let txn = Transaction::new(vec![Op::AddTable {
        family: Family::Ip,
        name: "more".into(),
        comment: None,
        create: true,
    }]);
    // Nobody polls: both workers are stuck.
    let e = committer.commit(&txn).unwrap_err();
    assert_eq!(
        e.to_string(),
        "generation 2 is published, but worker(s) [0, 1] did not pick it up within 20 ms"
    );
    // A stopped worker (its reader dropped) never holds a commit up.
    drop(readers);
    committer.commit(&Transaction::new(vec![])).unwrap();
}

/// A check refuses a prepared ruleset the dataplane cannot run: nothing is published, the
/// store and the generation stay, and the refusal is counted.
#[test]
fn a_failed_check_publishes_nothing() {
    let load = Transaction::new(vec![Op::Load {
        text: RULESET.into(),
        flush: true,
    }]);
    let (mut committer, _readers) = Committer::start(&load, 0, Box::new(|| 0)).unwrap();
    committer.check = Some(Box::new(|c| {
        if c.program.chains.iter().any(|ch| ch.name.contains("forbidden")) {
            Err("no chain called forbidden here".to_owned())
        } else {
            Ok(())
        }
    }));
    let before = committer.store().list_ruleset(true);
    let generation = committer.generation();
    let (family, table) = committer.store().image().tables()[0].clone();
    let txn = Transaction::new(vec![Op::AddChain {
        family,
        table,
        name: "forbidden".into(),
        spec: None,
        create: true,
    }]);
    let e = committer.commit(&txn).unwrap_err();
    assert!(e.to_string().contains("no chain called forbidden here"), "{e}");
    assert_eq!(committer.store().list_ruleset(true), before);
    assert_eq!(committer.generation(), generation);
    assert_eq!(committer.publisher().current().id, generation);
    assert_eq!(
        committer
            .metrics()
            .refused
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // Anything else still commits.
    let ok = Transaction::new(vec![Op::AddTable {
        family: Family::Ip,
        name: "more".into(),
        comment: None,
        create: true,
    }]);
    committer.commit(&ok).unwrap();
}

/// `ensure` of rules that are all there publishes nothing (a frontend re-asserting its rules
/// costs no generation); an `ensure` that adds publishes as usual.
#[test]
fn an_ensure_that_finds_its_rule_publishes_nothing() {
    let load = Transaction::new(vec![Op::Load {
        text: RULESET.into(),
        flush: true,
    }]);
    let (mut committer, _readers) = Committer::start(&load, 0, Box::new(|| 0)).unwrap();
    let ensure = |rule: &str| {
        Transaction::new(vec![Op::EnsureRule {
            family: Family::Ip,
            table: "t".into(),
            chain: "pre".into(),
            position: levee_filter_vm::incremental::Position::Append,
            rule: rule.into(),
        }])
    };
    let g = committer.generation();
    let c = committer.commit(&ensure("tcp dport 22 counter")).unwrap();
    assert_eq!((c.generation, committer.generation()), (g, g));
    assert_eq!(committer.publisher().current().id, g, "nothing published");
    assert!(matches!(c.results[..], [OpResult::Rule { added: false, .. }]));
    let c = committer.commit(&ensure("tcp dport 23 drop")).unwrap();
    assert_eq!(c.generation, g + 1);
    assert!(matches!(c.results[..], [OpResult::Rule { added: true, .. }]));
}
