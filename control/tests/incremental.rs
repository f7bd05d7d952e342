//! Property test of the incremental compiler through the store: after any sequence of
//! transactions (rules added at any position, replaced, deleted, ensured, chains flushed, set
//! elements added and deleted, some transactions failing part-way), the generation built
//! incrementally judges packets exactly as the same ruleset compiled from scratch (from its
//! listing), keeps per-rule counters in the right places, and lists exactly the rules a simple
//! model expects, in order. A failing transaction changes nothing.

use levee_control::rules::{Family, Op, OpResult, RuleStore, Transaction};
use levee_filter_vm::incremental::Position;
use levee_filter_vm::nft::{self, ast::Hook};
use levee_filter_vm::vm::State;
use levee_filter_vm::{compile, PacketMeta};
use proptest::prelude::*;

const CHAINS: [&str; 2] = ["input", "sub"];

/// Rules of the base chain (index 0) and of the regular chain (index 1).
const POOL: [&[&str]; 2] = [
    &[
        "ip saddr 198.18.0.1 drop",
        "ip saddr 198.18.0.2 drop",
        "ip saddr 198.18.0.3 drop",
        "ip saddr 198.18.1.0/24 drop",
        "ip saddr 198.18.0.4 accept",
        "tcp dport 22 counter accept",
        "tcp dport { 80, 443 } counter packets 0 bytes 0",
        "ip saddr @bl drop",
        "ip saddr != @bl meta mark set 0x00000007",
        "tcp dport 8080 jump sub",
        "udp dport 53 goto sub",
        "ip daddr 198.18.255.1 tcp dport 25 accept",
        "ip daddr 198.18.255.2 tcp dport 25 accept",
        "tcp dport vmap { 23 : drop, 24 : jump sub }",
        "meta l4proto udp counter",
    ],
    &[
        "ip saddr 198.18.0.5 drop",
        "ip saddr 198.18.0.6 drop",
        "tcp dport 8080 counter accept",
        "meta mark set 0x00000003",
        "udp dport 53 return",
        "ip saddr @bl counter drop",
    ],
];

const BASE: &str = "table ip t {
    set bl { type ipv4_addr; flags interval; elements = { 198.18.7.0/24 } }
    chain input { type filter hook prerouting priority 0; policy accept; }
    chain sub { }
}";

fn frame(src: [u8; 4], dst: [u8; 4], proto: u8, dport: u16) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[12] = 0x08;
    f[14] = 0x45;
    f[16..18].copy_from_slice(&40u16.to_be_bytes());
    f[22] = 64;
    f[23] = proto;
    f[26..30].copy_from_slice(&src);
    f[30..34].copy_from_slice(&dst);
    f[34..36].copy_from_slice(&40000u16.to_be_bytes());
    f[36..38].copy_from_slice(&dport.to_be_bytes());
    if proto == 6 {
        f[46] = 0x50;
        f[47] = 0x02;
    } else {
        f[38..40].copy_from_slice(&20u16.to_be_bytes());
    }
    f
}

fn frames() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    for src in [
        [198, 18, 0, 1],
        [198, 18, 0, 4],
        [198, 18, 1, 9],
        [198, 18, 7, 7],
        [198, 18, 8, 1],
        [198, 18, 16, 1],
        [198, 18, 17, 1],
        [198, 18, 20, 9],
        [198, 19, 0, 5],
        [198, 19, 0, 150],
        [198, 19, 1, 30],
        [198, 18, 0, 6],
    ] {
        for (proto, dport) in [(6, 22), (6, 80), (6, 8080), (17, 53), (6, 23), (6, 24), (6, 25)] {
            v.push(frame(src, [198, 18, 255, 1], proto, dport));
        }
    }
    v
}

#[derive(Clone, Debug)]
enum Step {
    Add {
        chain: usize,
        pos: u8,
        pick: usize,
        rule: usize,
    },
    Ensure {
        chain: usize,
        rule: usize,
    },
    Replace {
        pick: usize,
        rule: usize,
    },
    Delete {
        pick: usize,
    },
    Flush {
        chain: usize,
    },
    AddElem {
        net: u8,
    },
    DelElem {
        pick: usize,
    },
    /// An operation that fails (a rule that does not parse).
    Bad,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0usize..2, 0u8..4, any::<usize>(), any::<usize>())
            .prop_map(|(chain, pos, pick, rule)| Step::Add { chain, pos, pick, rule }),
        1 => (0usize..2, any::<usize>()).prop_map(|(chain, rule)| Step::Ensure { chain, rule }),
        2 => (any::<usize>(), any::<usize>()).prop_map(|(pick, rule)| Step::Replace { pick, rule }),
        3 => any::<usize>().prop_map(|pick| Step::Delete { pick }),
        1 => (0usize..2).prop_map(|chain| Step::Flush { chain }),
        1 => (0u8..16).prop_map(|net| Step::AddElem { net }),
        1 => any::<usize>().prop_map(|pick| Step::DelElem { pick }),
        1 => Just(Step::Bad),
    ]
}

/// The expected rules: per chain, (handle, normalized text), in order.
#[derive(Clone, Debug, Default)]
struct Model {
    chains: [Vec<(u64, String)>; 2],
    elems: Vec<u8>,
}

fn norm(text: &str) -> String {
    nft::print_rule(&nft::parse_rule(text, Family::Ip).unwrap())
}

fn pool(chain: usize, i: usize) -> &'static str {
    POOL[chain][i % POOL[chain].len()]
}

/// Turns a step into an operation against the current model, and what the model becomes if
/// it applies (with the handle the store will hand out).
fn plan(step: &Step, m: &Model, next_handle: u64) -> (Op, Option<Model>) {
    let mut m2 = m.clone();
    let all: Vec<(usize, u64)> = (0..2)
        .flat_map(|c| m.chains[c].iter().map(move |(h, _)| (c, *h)))
        .collect();
    let op = match step {
        Step::Add {
            chain,
            pos,
            pick,
            rule,
        } => {
            let text = pool(*chain, *rule);
            let rules = &m.chains[*chain];
            let (position, at) = match (pos, rules.is_empty()) {
                (0, _) | (_, true) => (Position::Append, rules.len()),
                (1, _) => (Position::Prepend, 0),
                (2, _) => {
                    let i = pick % rules.len();
                    (Position::Before(rules[i].0), i)
                }
                _ => {
                    let i = pick % rules.len();
                    (Position::After(rules[i].0), i + 1)
                }
            };
            m2.chains[*chain].insert(at, (next_handle, norm(text)));
            Op::AddRule {
                family: Family::Ip,
                table: "t".into(),
                chain: CHAINS[*chain].into(),
                position,
                rule: text.into(),
            }
        }
        Step::Ensure { chain, rule } => {
            let text = pool(*chain, *rule);
            if !m.chains[*chain].iter().any(|(_, t)| *t == norm(text)) {
                m2.chains[*chain].push((next_handle, norm(text)));
            }
            Op::EnsureRule {
                family: Family::Ip,
                table: "t".into(),
                chain: CHAINS[*chain].into(),
                position: Position::Append,
                rule: text.into(),
            }
        }
        Step::Replace { pick, rule } if !all.is_empty() => {
            let (c, h) = all[pick % all.len()];
            let text = pool(c, *rule);
            let i = m2.chains[c].iter().position(|(x, _)| *x == h).unwrap();
            m2.chains[c][i].1 = norm(text);
            Op::ReplaceRule {
                handle: h,
                rule: text.into(),
            }
        }
        Step::Delete { pick } if !all.is_empty() => {
            let (c, h) = all[pick % all.len()];
            m2.chains[c].retain(|(x, _)| *x != h);
            Op::DeleteRule { handle: h }
        }
        Step::Flush { chain } => {
            m2.chains[*chain].clear();
            Op::FlushChain {
                family: Family::Ip,
                table: "t".into(),
                name: CHAINS[*chain].into(),
            }
        }
        Step::AddElem { net } if !m.elems.contains(net) => {
            m2.elems.push(*net);
            Op::AddElements {
                family: Family::Ip,
                table: "t".into(),
                set: "bl".into(),
                elements: format!("{{ 198.18.{}.0/24 }}", 16 + net),
            }
        }
        Step::DelElem { pick } if !m.elems.is_empty() => {
            let net = m.elems[pick % m.elems.len()];
            m2.elems.retain(|x| *x != net);
            Op::DeleteElements {
                family: Family::Ip,
                table: "t".into(),
                set: "bl".into(),
                elements: format!("{{ 198.18.{}.0/24 }}", 16 + net),
            }
        }
        _ => {
            return (
                Op::AddRule {
                    family: Family::Ip,
                    table: "t".into(),
                    chain: "input".into(),
                    position: Position::Append,
                    rule: "tcp dport 99999 accept".into(),
                },
                None,
            )
        }
    };
    (op, Some(m2))
}

fn check(
    store: &RuleStore,
    compiled: &levee_filter_vm::Compiled,
    model: &Model,
) -> Result<(), TestCaseError> {
    for (c, name) in CHAINS.iter().enumerate() {
        let got: Vec<(u64, String)> = store
            .image()
            .chain_rules(Family::Ip, "t", name)
            .unwrap()
            .iter()
            .map(|v| (v.handle, nft::print_rule(v.rule)))
            .collect();
        prop_assert_eq!(&got, &model.chains[c], "chain {}", name);
    }
    let listing = store.list_ruleset(false);
    let fresh = compile(&nft::parse_ruleset(&listing).unwrap(), 0).unwrap();
    let (mut a, mut b) = (State::new(&compiled.program), State::new(&fresh.program));
    let meta = PacketMeta::default();
    for f in frames() {
        let info = levee_packet::parse::parse_frame(&f).ok();
        let got = compiled.evaluate_hooks(&mut a, &[Hook::Prerouting], &f, info.as_ref(), &meta);
        let want = fresh.evaluate_hooks(&mut b, &[Hook::Prerouting], &f, info.as_ref(), &meta);
        prop_assert_eq!(got, want, "{:?}", f);
    }
    let totals = |c: &levee_filter_vm::Compiled, s: &State| c.rule_counter_totals(&[&s.counters]);
    prop_assert_eq!(totals(compiled, &a), totals(&fresh, &b));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn incremental_generations_match_a_fresh_compile(
        seed_rules in 100usize..300,
        long_runs in any::<bool>(),
        txns in proptest::collection::vec(proptest::collection::vec(step(), 1..4), 1..25),
    ) {
        let mut store = RuleStore::new();
        store.commit_local(&Transaction::new(vec![Op::Load { text: BASE.into(), flush: true }]), 0).unwrap();
        let mut model = Model { elems: Vec::new(), ..Default::default() };
        // Enough rules for several chunks (and chunk splits) in the base chain.
        let mut seed = Vec::new();
        for i in 0..seed_rules {
            let text = if i % 10 == 9 && !long_runs { "tcp dport 22 counter accept".to_string() } else { format!("ip saddr 198.19.{}.{} drop", i / 250, i % 250 + 1) };
            seed.push(Op::AddRule { family: Family::Ip, table: "t".into(), chain: "input".into(), position: Position::Append, rule: text.clone() });
        }
        let (_, results) = store.commit_local(&Transaction::new(seed.clone()), 0).unwrap();
        for (r, op) in results.iter().zip(&seed) {
            let (OpResult::Rule { handle, .. }, Op::AddRule { rule, .. }) = (r, op) else { unreachable!() };
            model.chains[0].push((*handle, norm(rule)));
        }
        let mut next_handle = model.chains[0].last().unwrap().0 + 1;
        for steps in txns {
            let before = store.list_ruleset(true);
            let generation = store.generation();
            let mut ops = Vec::new();
            let mut m = model.clone();
            let mut ok = true;
            let mut handle = next_handle;
            for s in &steps {
                let (op, after) = plan(s, &m, handle);
                let added = |x: &Model| x.chains.iter().map(Vec::len).sum::<usize>();
                if matches!(op, Op::AddRule { .. } | Op::EnsureRule { .. })
                    && after.as_ref().is_some_and(|a| added(a) > added(&m))
                {
                    handle += 1;
                }
                match after {
                    Some(after) => m = after,
                    None => ok = false,
                }
                ops.push(op);
            }
            match store.commit_local(&Transaction::new(ops), 0) {
                Ok((compiled, results)) => {
                    prop_assert!(ok, "a transaction with a bad operation was accepted");
                    // Ensure of an existing rule hands out no handle the model counted on.
                    for r in &results {
                        if let OpResult::Rule { handle: h, .. } = r { next_handle = next_handle.max(h + 1); }
                    }
                    model = m;
                    check(&store, &compiled, &model)?;
                }
                Err(e) => {
                    prop_assert!(!ok, "a good transaction failed: {}", e);
                    prop_assert_eq!(store.list_ruleset(true), before);
                    prop_assert_eq!(store.generation(), generation);
                }
            }
        }
    }
}

/// A merged run of 300 rules spans several chunks; breaking it at every position (a rule of
/// another shape in its place) and joining it again must lower exactly what a fresh compile
/// does, at chunk boundaries too (the chunk after a broken boundary no longer skips the run).
#[test]
fn breaking_and_joining_a_run_at_every_position() {
    let mut store = RuleStore::new();
    store
        .commit_local(
            &Transaction::new(vec![Op::Load {
                text: BASE.into(),
                flush: true,
            }]),
            0,
        )
        .unwrap();
    let ops: Vec<Op> = (0..300)
        .map(|i| Op::AddRule {
            family: Family::Ip,
            table: "t".into(),
            chain: "input".into(),
            position: Position::Append,
            rule: format!("ip saddr 198.19.{}.{} drop", i / 250, i % 250 + 1),
        })
        .collect();
    let (_, results) = store.commit_local(&Transaction::new(ops), 0).unwrap();
    let handles: Vec<u64> = results
        .iter()
        .map(|r| match r {
            OpResult::Rule { handle, .. } => *handle,
            _ => unreachable!(),
        })
        .collect();
    let sources: Vec<Vec<u8>> = (0..300)
        .map(|i| {
            frame(
                [198, 19, (i / 250) as u8, (i % 250 + 1) as u8],
                [198, 18, 255, 1],
                6,
                22,
            )
        })
        .collect();
    let same = |store: &RuleStore, compiled: &levee_filter_vm::Compiled| {
        let fresh = compile(&nft::parse_ruleset(&store.list_ruleset(false)).unwrap(), 0).unwrap();
        let (mut a, mut b) = (State::new(&compiled.program), State::new(&fresh.program));
        for f in &sources {
            let info = levee_packet::parse::parse_frame(f).ok();
            let meta = PacketMeta::default();
            let got = compiled.evaluate_hooks(&mut a, &[Hook::Prerouting], f, info.as_ref(), &meta);
            let want = fresh.evaluate_hooks(&mut b, &[Hook::Prerouting], f, info.as_ref(), &meta);
            assert_eq!(got, want, "{f:?}");
        }
    };
    for (i, h) in handles.iter().enumerate() {
        let (c, _) = store
            .commit_local(
                &Transaction::new(vec![Op::ReplaceRule {
                    handle: *h,
                    rule: "tcp dport 23 counter accept".into(),
                }]),
                0,
            )
            .unwrap();
        same(&store, &c);
        let (c, _) = store
            .commit_local(
                &Transaction::new(vec![Op::ReplaceRule {
                    handle: *h,
                    rule: format!("ip saddr 198.19.{}.{} drop", i / 250, i % 250 + 1),
                }]),
                0,
            )
            .unwrap();
        same(&store, &c);
        assert_eq!(c.exec.lowered_rules(0), 1, "the run is whole again");
    }
}
