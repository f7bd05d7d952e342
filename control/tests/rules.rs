//! The rule store: transactions all or nothing, handles, owners, search, ensure, listings.

use levee_control::rules::{Family, Op, OpResult, Query, RuleStore, Transaction, TxnError};
use levee_filter_vm::incremental::Position;

const BASE: &str = "table inet filter {
\tset blocked {
\t\ttype ipv4_addr
\t\tflags interval
\t\telements = { 198.18.9.0/24 }
\t}

\tchain input {
\t\ttype filter hook input priority filter; policy accept;
\t\tip saddr @blocked drop
\t\ttcp dport 22 counter packets 0 bytes 0 accept
\t\tjump extra
\t}

\tchain extra {
\t\tudp dport 53 accept
\t}
}
";

fn loaded() -> RuleStore {
    let mut s = RuleStore::new();
    s.commit_local(
        &Transaction::new(vec![Op::Load {
            text: BASE.into(),
            flush: true,
        }]),
        0,
    )
    .unwrap();
    s
}

fn add(chain: &str, rule: &str) -> Op {
    Op::AddRule {
        family: Family::Inet,
        table: "filter".into(),
        chain: chain.into(),
        position: Position::Append,
        rule: rule.into(),
    }
}

#[test]
fn listing_round_trips() {
    let s = loaded();
    let text = s.list_ruleset(false);
    assert_eq!(text, BASE);
    let mut again = RuleStore::new();
    again
        .commit_local(
            &Transaction::new(vec![Op::Load {
                text: text.clone(),
                flush: true,
            }]),
            0,
        )
        .unwrap();
    assert_eq!(again.list_ruleset(false), text);
    assert!(s
        .list_ruleset(true)
        .contains("tcp dport 22 counter packets 0 bytes 0 accept # handle 2"));
}

#[test]
fn a_failing_operation_changes_nothing_and_says_where() {
    let mut s = loaded();
    let before = s.list_ruleset(true);
    let g = s.generation();
    let txn = Transaction::new(vec![
        add("input", "tcp dport 80 accept"),
        add("input", "tcp dport 70000 accept"),
    ]);
    let e = s.commit_local(&txn, 0).unwrap_err();
    match &e {
        TxnError::Op { index, line, col, .. } => {
            assert_eq!((*index, *line, *col), (1, 1, 11), "{e}");
        }
        other => panic!("{other}"),
    }
    assert!(
        e.to_string()
            .starts_with("operation 1 (add rule inet filter input): 1:11:"),
        "{e}"
    );
    assert_eq!(s.list_ruleset(true), before);
    assert_eq!(s.generation(), g);
}

#[test]
fn handles_are_stable_and_never_reused() {
    let mut s = loaded();
    let (_, r) = s
        .commit_local(&Transaction::new(vec![add("input", "tcp dport 80 accept")]), 0)
        .unwrap();
    let OpResult::Rule {
        handle: h80,
        added: true,
    } = r[0]
    else {
        panic!("{r:?}")
    };
    s.commit_local(&Transaction::new(vec![Op::DeleteRule { handle: h80 }]), 0)
        .unwrap();
    let (_, r) = s
        .commit_local(&Transaction::new(vec![add("input", "tcp dport 81 accept")]), 0)
        .unwrap();
    let OpResult::Rule { handle: h81, .. } = r[0] else {
        panic!()
    };
    assert!(h81 > h80);
    // Insert before and after by handle, replace keeps the handle.
    s.commit_local(
        &Transaction::new(vec![
            Op::AddRule {
                family: Family::Inet,
                table: "filter".into(),
                chain: "input".into(),
                position: Position::Before(h81),
                rule: "tcp dport 79 accept".into(),
            },
            Op::ReplaceRule {
                handle: h81,
                rule: "tcp dport 82 drop".into(),
            },
        ]),
        0,
    )
    .unwrap();
    let l = s.list_chain(Family::Inet, "filter", "input", true).unwrap();
    let at79 = l.find("tcp dport 79 accept").unwrap();
    let at82 = l.find(&format!("tcp dport 82 drop # handle {h81}")).unwrap();
    assert!(at79 < at82, "{l}");
}

#[test]
fn optimistic_concurrency_refuses_a_stale_transaction() {
    let mut s = loaded();
    let g = s.generation();
    let a = Transaction::new(vec![add("input", "tcp dport 80 accept")]).expect_generation(g);
    let b = Transaction::new(vec![add("input", "tcp dport 81 accept")]).expect_generation(g);
    s.commit_local(&a, 0).unwrap();
    assert_eq!(
        s.commit_local(&b, 0).unwrap_err(),
        TxnError::Conflict {
            expected: g,
            current: g + 1
        }
    );
}

#[test]
fn owners_search_and_ensure() {
    let mut s = loaded();
    let nm = Transaction::new(vec![
        add("input", "ip saddr 198.18.0.7 tcp dport 443 accept"),
        add("input", "ip saddr 198.18.0.8 tcp dport 443 accept"),
    ])
    .owner("netmanager");
    s.commit_local(&nm, 0).unwrap();
    let found = s
        .search(&Query {
            owner: Some("netmanager".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(found.len(), 2);
    let found = s
        .search(&Query {
            expr: Some("ip saddr 198.18.0.8".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].text, "ip saddr 198.18.0.8 tcp dport 443 accept");
    assert_eq!(found[0].owner.as_deref(), Some("netmanager"));
    // Ensure: the same rule written differently is found, not added twice.
    let ensure = |rule: &str| Op::EnsureRule {
        family: Family::Inet,
        table: "filter".into(),
        chain: "input".into(),
        position: Position::Append,
        rule: rule.into(),
    };
    let (_, r) = s
        .commit_local(
            &Transaction::new(vec![ensure("ip saddr == 198.18.0.8 tcp dport https accept")]),
            0,
        )
        .unwrap();
    assert!(matches!(r[0], OpResult::Rule { added: false, .. }), "{r:?}");
    let (_, r) = s
        .commit_local(
            &Transaction::new(vec![ensure("tcp dport 8080 accept")]).owner("docker"),
            0,
        )
        .unwrap();
    assert!(matches!(r[0], OpResult::Rule { added: true, .. }), "{r:?}");
    let (_, r) = s
        .commit_local(
            &Transaction::new(vec![ensure("tcp dport 8080 accept")]).owner("docker"),
            0,
        )
        .unwrap();
    assert!(matches!(r[0], OpResult::Rule { added: false, .. }), "{r:?}");
    let docker = s
        .search(&Query {
            owner: Some("docker".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(docker.len(), 1);
}

#[test]
fn sets_chains_and_tables() {
    let mut s = loaded();
    s.commit_local(
        &Transaction::new(vec![
            Op::AddElements {
                family: Family::Inet,
                table: "filter".into(),
                set: "blocked".into(),
                elements: "{ 198.18.10.0/24, 198.18.11.1 }".into(),
            },
            Op::AddChain {
                family: Family::Inet,
                table: "filter".into(),
                name: "fwd".into(),
                spec: Some(
                    "{ type filter hook forward priority 0; policy drop; ct state established accept }"
                        .into(),
                ),
                create: true,
            },
        ]),
        0,
    )
    .unwrap();
    let set = s.list_set(Family::Inet, "filter", "blocked").unwrap();
    assert!(
        set.contains("198.18.9.0/24, 198.18.10.0/24, 198.18.11.1"),
        "{set}"
    );
    // A set in use cannot go; a chain jumped to cannot go.
    let e = s
        .commit_local(
            &Transaction::new(vec![Op::DeleteSet {
                family: Family::Inet,
                table: "filter".into(),
                name: "blocked".into(),
            }]),
            0,
        )
        .unwrap_err();
    assert!(e.to_string().contains("used by rule handle 1"), "{e}");
    let e = s
        .commit_local(
            &Transaction::new(vec![
                Op::FlushChain {
                    family: Family::Inet,
                    table: "filter".into(),
                    name: "extra".into(),
                },
                Op::DeleteChain {
                    family: Family::Inet,
                    table: "filter".into(),
                    name: "extra".into(),
                },
            ]),
            0,
        )
        .unwrap_err();
    assert!(e.to_string().contains("target of a jump"), "{e}");
    // A jump loop is refused by the global check, after every operation applied.
    let e = s
        .commit_local(&Transaction::new(vec![add("extra", "jump extra")]), 0)
        .unwrap_err();
    assert!(matches!(e, TxnError::Verify(_)), "{e}");
    s.commit_local(
        &Transaction::new(vec![Op::DeleteTable {
            family: Family::Inet,
            name: "filter".into(),
        }]),
        0,
    )
    .unwrap();
    assert_eq!(s.list_ruleset(false), "");
}

/// A transaction of many kinds of operation, failing at each step in turn: the error names
/// that step, and nothing of the steps before it stays.
#[test]
fn a_failure_at_any_step_leaves_everything_as_it_was() {
    let good = || -> Vec<Op> {
        vec![
            Op::AddTable {
                family: Family::Ip,
                name: "extra".into(),
                comment: None,
                create: true,
            },
            Op::AddChain {
                family: Family::Ip,
                table: "extra".into(),
                name: "c".into(),
                spec: Some("{ type filter hook forward priority 0; policy accept; }".into()),
                create: true,
            },
            add("input", "tcp dport 80 accept"),
            Op::AddElements {
                family: Family::Inet,
                table: "filter".into(),
                set: "blocked".into(),
                elements: "{ 198.18.10.0/24 }".into(),
            },
            Op::ReplaceRule {
                handle: 2,
                rule: "tcp dport 2222 counter accept".into(),
            },
            Op::DeleteRule { handle: 4 },
            Op::FlushChain {
                family: Family::Inet,
                table: "filter".into(),
                name: "extra".into(),
            },
            Op::AddSet {
                family: Family::Inet,
                table: "filter".into(),
                name: "ports".into(),
                map: false,
                spec: "{ type inet_service; elements = { 22, 80 } }".into(),
                create: true,
            },
        ]
    };
    let mut s = loaded();
    let before = s.list_ruleset(true);
    let g = s.generation();
    for k in 0..good().len() {
        let mut ops = good();
        ops[k] = add("input", "tcp dport 22 jump nowhere");
        let e = s.commit_local(&Transaction::new(ops), 0).unwrap_err();
        assert!(matches!(e, TxnError::Op { index, .. } if index == k), "{e}");
        assert_eq!(s.list_ruleset(true), before);
        assert_eq!(s.generation(), g);
    }
    // All good: all applied, one generation later.
    s.commit_local(&Transaction::new(good()), 0).unwrap();
    assert_eq!(s.generation(), g + 1);
    assert!(s.list_ruleset(false).contains("tcp dport 2222"));
}

/// Clients racing with generation ids: every transaction either applies against the
/// generation it was built on or is refused; none is lost or applied twice.
#[test]
fn concurrent_clients_with_generation_ids_never_lose_an_update() {
    let store = std::sync::Arc::new(std::sync::Mutex::new(loaded()));
    let start = store.lock().unwrap().rule_count();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let (mut ok, mut refused) = (0, 0);
                for i in 0..100 {
                    let g = store.lock().unwrap().generation();
                    let txn = Transaction::new(vec![add(
                        "input",
                        &format!("tcp dport {} accept", 10000 + t * 1000 + i),
                    )])
                    .owner(&format!("client{t}"))
                    .expect_generation(g);
                    std::thread::yield_now();
                    match store.lock().unwrap().commit_local(&txn, 0) {
                        Ok(_) => ok += 1,
                        Err(TxnError::Conflict { expected, .. }) => {
                            assert_eq!(expected, g);
                            refused += 1
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                (ok, refused)
            })
        })
        .collect();
    let mut applied = 0;
    for t in threads {
        let (ok, refused) = t.join().unwrap();
        assert_eq!(ok + refused, 100);
        applied += ok;
    }
    let s = store.lock().unwrap();
    assert_eq!(s.rule_count(), start + applied);
    let owned: usize = (0..4)
        .map(|t| {
            s.search(&Query {
                owner: Some(format!("client{t}")),
                ..Default::default()
            })
            .unwrap()
            .len()
        })
        .sum();
    assert_eq!(owned, applied);
}

#[test]
fn tables_carry_the_owner_that_made_them() {
    let mut s = loaded();
    s.commit_local(
        &Transaction::new(vec![Op::AddTable {
            family: Family::Ip,
            name: "nat_helper".into(),
            comment: None,
            create: true,
        }])
        .owner("netmanager"),
        0,
    )
    .unwrap();
    assert_eq!(s.table_owner(Family::Ip, "nat_helper"), Some("netmanager"));
    // Adding to it later from another frontend does not change its owner.
    s.commit_local(
        &Transaction::new(vec![Op::AddTable {
            family: Family::Ip,
            name: "nat_helper".into(),
            comment: Some("shared".into()),
            create: false,
        }])
        .owner("docker"),
        0,
    )
    .unwrap();
    assert_eq!(s.table_owner(Family::Ip, "nat_helper"), Some("netmanager"));
    assert_eq!(s.table_owner(Family::Inet, "filter"), None);
}
