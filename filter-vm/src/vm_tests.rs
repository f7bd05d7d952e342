//! Unit tests of every instruction and of the verifier's refusals, on hand-built programs.

use crate::ctx::{packet_ctx, CtState, HookKind, PacketMeta};
use crate::sets::{encode_verdict, ElemSpec, Set, SetId, SetSpec};
use crate::verify::{verify, VerifyError};
use crate::vm::*;

/// Ethernet + IPv4 + TCP SYN 198.18.0.1:40000 -> 198.18.0.2:80, 60 bytes.
fn syn() -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[12] = 0x08;
    f[14] = 0x45;
    f[16..18].copy_from_slice(&40u16.to_be_bytes());
    f[22] = 64;
    f[23] = 6;
    f[26..30].copy_from_slice(&[198, 18, 0, 1]);
    f[30..34].copy_from_slice(&[198, 18, 0, 2]);
    f[34..36].copy_from_slice(&40000u16.to_be_bytes());
    f[36..38].copy_from_slice(&80u16.to_be_bytes());
    f[46] = 0x50;
    f[47] = 0x02;
    f
}

fn imm(bytes: &[u8]) -> [u8; MAX_DATA_LEN] {
    let mut d = [0u8; MAX_DATA_LEN];
    d[..bytes.len()].copy_from_slice(bytes);
    d
}

fn base_chain(rules: Vec<Vec<Insn>>, policy: Verdict) -> Chain {
    Chain {
        name: "base".into(),
        rules: rules.into_iter().map(|insns| Rule { insns }).collect(),
        policy: Some(policy),
    }
}

fn prog(chains: Vec<Chain>) -> Program {
    Program {
        chains,
        counters: 8,
        limits: 4,
        quotas: 4,
        log_prefixes: vec!["p".into()].into(),
        ..Default::default()
    }
}

fn run_on(p: &Program, frame: &[u8], meta: &PacketMeta) -> (Outcome, State) {
    verify(p).expect("test programs are valid");
    let mut st = State::new(p);
    let ctx = packet_ctx(frame, meta, HookKind::Ip);
    let o = evaluate(p, &mut st, 0, &ctx);
    // The lowered form workers run must agree with the reference interpreter.
    let mut fast = State::new(p);
    let exec = crate::exec::lower(p);
    assert_eq!(
        crate::exec::evaluate(&exec, p, &mut fast, 0, &ctx),
        o,
        "lowered program differs"
    );
    crate::exec::tests::assert_same_state(&st, &fast);
    (o, st)
}

fn verdict_of(rules: Vec<Vec<Insn>>) -> Verdict {
    run_on(
        &prog(vec![base_chain(rules, Verdict::Accept)]),
        &syn(),
        &PacketMeta::default(),
    )
    .0
    .verdict
}

const DROP: Insn = Insn::Verdict(Verdict::Drop);

fn load(base: Base, offset: u16, len: u8) -> Insn {
    Insn::PayloadLoad {
        base,
        offset,
        len,
        dreg: 0,
    }
}
fn eq(bytes: &[u8]) -> Insn {
    Insn::Cmp {
        op: CmpOp::Eq,
        sreg: 0,
        len: bytes.len() as u8,
        rhs: Operand::Imm(imm(bytes)),
    }
}

#[test]
fn payload_loads_from_each_base_and_breaks_past_the_end() {
    assert_eq!(
        verdict_of(vec![vec![load(Base::Link, 12, 2), eq(&[8, 0]), DROP]]),
        Verdict::Drop
    );
    assert_eq!(
        verdict_of(vec![vec![load(Base::Network, 12, 4), eq(&[198, 18, 0, 1]), DROP]]),
        Verdict::Drop
    );
    assert_eq!(
        verdict_of(vec![vec![
            load(Base::Transport, 2, 2),
            eq(&80u16.to_be_bytes()),
            DROP
        ]]),
        Verdict::Drop
    );
    // Beyond the IP packet (padding is not payload): the rule breaks.
    assert_eq!(
        verdict_of(vec![vec![load(Base::Transport, 19, 2), DROP]]),
        Verdict::Accept
    );
    assert_eq!(
        verdict_of(vec![vec![load(Base::Link, 59, 2), DROP]]),
        Verdict::Accept
    );
}

#[test]
fn cmp_operators_and_register_to_register() {
    let port = |op, v: u16| {
        vec![
            load(Base::Transport, 2, 2),
            Insn::Cmp {
                op,
                sreg: 0,
                len: 2,
                rhs: Operand::Imm(imm(&v.to_be_bytes())),
            },
            DROP,
        ]
    };
    for (op, v, hit) in [
        (CmpOp::Eq, 80, true),
        (CmpOp::Eq, 81, false),
        (CmpOp::Ne, 81, true),
        (CmpOp::Ne, 80, false),
        (CmpOp::Lt, 81, true),
        (CmpOp::Lt, 80, false),
        (CmpOp::Lte, 80, true),
        (CmpOp::Gt, 79, true),
        (CmpOp::Gt, 80, false),
        (CmpOp::Gte, 80, true),
        (CmpOp::Gte, 81, false),
        (CmpOp::Lt, 256, true),
    ] {
        let want = if hit { Verdict::Drop } else { Verdict::Accept };
        assert_eq!(verdict_of(vec![port(op, v)]), want, "{op:?} {v}");
    }
    // sport == dport: two loads and a register compare (levee's extension).
    let same = vec![
        Insn::PayloadLoad {
            base: Base::Transport,
            offset: 0,
            len: 2,
            dreg: 0,
        },
        Insn::PayloadLoad {
            base: Base::Transport,
            offset: 2,
            len: 2,
            dreg: 1,
        },
        Insn::Cmp {
            op: CmpOp::Eq,
            sreg: 0,
            len: 2,
            rhs: Operand::Reg(1),
        },
        DROP,
    ];
    assert_eq!(verdict_of(vec![same.clone()]), Verdict::Accept);
    let mut f = syn();
    f[34..36].copy_from_slice(&80u16.to_be_bytes());
    let p = prog(vec![base_chain(vec![same], Verdict::Accept)]);
    assert_eq!(run_on(&p, &f, &PacketMeta::default()).0.verdict, Verdict::Drop);
}

#[test]
fn bitwise_byteorder_range_immediate() {
    // tcp flags & (syn|ack) == syn
    let flags = vec![
        load(Base::Transport, 13, 1),
        Insn::Bitwise {
            sreg: 0,
            dreg: 1,
            len: 1,
            op: BitOp::MaskXor {
                mask: imm(&[0x12]),
                xor: imm(&[0]),
            },
        },
        Insn::Cmp {
            op: CmpOp::Eq,
            sreg: 1,
            len: 1,
            rhs: Operand::Imm(imm(&[0x02])),
        },
        DROP,
    ];
    assert_eq!(verdict_of(vec![flags]), Verdict::Drop);
    // ip version via shift: first byte >> 4 == 4
    let version = vec![
        load(Base::Network, 0, 1),
        Insn::Bitwise {
            sreg: 0,
            dreg: 0,
            len: 1,
            op: BitOp::Shr(4),
        },
        eq(&[4]),
        DROP,
    ];
    assert_eq!(verdict_of(vec![version]), Verdict::Drop);
    let shl = vec![
        Insn::Immediate {
            dreg: 2,
            len: 2,
            data: imm(&[0x01, 0x80]),
        },
        Insn::Bitwise {
            sreg: 2,
            dreg: 0,
            len: 2,
            op: BitOp::Shl(1),
        },
        eq(&[0x03, 0x00]),
        DROP,
    ];
    assert_eq!(verdict_of(vec![shl]), Verdict::Drop);
    // byteorder: 80 big-endian swapped is 0x5000
    let swap = vec![
        load(Base::Transport, 2, 2),
        Insn::Byteorder {
            sreg: 0,
            dreg: 0,
            len: 2,
            size: 2,
        },
        eq(&[0x50, 0x00]),
        DROP,
    ];
    assert_eq!(verdict_of(vec![swap]), Verdict::Drop);
    let range = |lo: u16, hi: u16, negate| {
        vec![
            load(Base::Transport, 2, 2),
            Insn::Range {
                sreg: 0,
                len: 2,
                from: imm(&lo.to_be_bytes()),
                to: imm(&hi.to_be_bytes()),
                negate,
            },
            DROP,
        ]
    };
    assert_eq!(verdict_of(vec![range(1, 1024, false)]), Verdict::Drop);
    assert_eq!(verdict_of(vec![range(81, 1024, false)]), Verdict::Accept);
    assert_eq!(verdict_of(vec![range(81, 1024, true)]), Verdict::Drop);
}

#[test]
fn meta_and_ct_loads() {
    let meta = PacketMeta {
        iifname: "eth0".into(),
        mark: 7,
        cpu: 3,
        ct_state: CtState::Established,
        ct_mark: 0x42,
        wall_ns: 3600 * 1_000_000_000 * 25,
        ..Default::default()
    };
    let p = |insns: Vec<Insn>| prog(vec![base_chain(vec![insns], Verdict::Accept)]);
    let check = |insns: Vec<Insn>, want: Verdict| {
        assert_eq!(
            run_on(&p(insns.clone()), &syn(), &meta).0.verdict,
            want,
            "{insns:?}"
        )
    };
    check(
        vec![
            Insn::Meta {
                key: MetaKey::L4Proto,
                dreg: 0,
            },
            eq(&[6]),
            DROP,
        ],
        Verdict::Drop,
    );
    check(
        vec![
            Insn::Meta {
                key: MetaKey::NfProto,
                dreg: 0,
            },
            eq(&[2]),
            DROP,
        ],
        Verdict::Drop,
    );
    check(
        vec![
            Insn::Meta {
                key: MetaKey::Protocol,
                dreg: 0,
            },
            eq(&[8, 0]),
            DROP,
        ],
        Verdict::Drop,
    );
    check(
        vec![
            Insn::Meta {
                key: MetaKey::Len,
                dreg: 0,
            },
            eq(&40u32.to_be_bytes()),
            DROP,
        ],
        Verdict::Drop,
    );
    check(
        vec![
            Insn::Meta {
                key: MetaKey::Mark,
                dreg: 0,
            },
            eq(&7u32.to_be_bytes()),
            DROP,
        ],
        Verdict::Drop,
    );
    check(
        vec![
            Insn::Meta {
                key: MetaKey::Cpu,
                dreg: 0,
            },
            eq(&3u32.to_be_bytes()),
            DROP,
        ],
        Verdict::Drop,
    );
    check(
        vec![
            Insn::Meta {
                key: MetaKey::IifName,
                dreg: 0,
            },
            Insn::Cmp {
                op: CmpOp::Eq,
                sreg: 0,
                len: 16,
                rhs: Operand::Imm(imm(b"eth0")),
            },
            DROP,
        ],
        Verdict::Drop,
    );
    check(
        vec![
            Insn::Meta {
                key: MetaKey::Hour,
                dreg: 0,
            },
            eq(&3600u32.to_be_bytes()),
            DROP,
        ],
        Verdict::Drop,
    );
    // 1970-01-02 is a Friday (5).
    check(
        vec![
            Insn::Meta {
                key: MetaKey::Day,
                dreg: 0,
            },
            eq(&[5]),
            DROP,
        ],
        Verdict::Drop,
    );
    check(
        vec![
            Insn::Ct {
                key: CtKey::State,
                dreg: 0,
            },
            eq(&CtView::ESTABLISHED.to_be_bytes()),
            DROP,
        ],
        Verdict::Drop,
    );
    check(
        vec![
            Insn::Ct {
                key: CtKey::Mark,
                dreg: 0,
            },
            eq(&0x42u32.to_be_bytes()),
            DROP,
        ],
        Verdict::Drop,
    );
    // No conntrack entry: ct mark breaks.
    let untracked = PacketMeta::default();
    assert_eq!(
        run_on(
            &p(vec![
                Insn::Ct {
                    key: CtKey::Mark,
                    dreg: 0
                },
                DROP
            ]),
            &syn(),
            &untracked
        )
        .0
        .verdict,
        Verdict::Accept
    );
}

#[test]
fn set_writes_and_actions() {
    let p = prog(vec![base_chain(
        vec![vec![
            Insn::Immediate {
                dreg: 0,
                len: 4,
                data: imm(&9u32.to_be_bytes()),
            },
            Insn::MetaSetMark { sreg: 0 },
            Insn::CtSet {
                key: CtKey::Mark,
                sreg: 0,
            },
            Insn::Notrack,
            Insn::Log { prefix: 0 },
            Insn::Reject(RejectKind::TcpReset),
        ]],
        Verdict::Accept,
    )]);
    let (o, st) = run_on(&p, &syn(), &PacketMeta::default());
    assert_eq!(o.verdict, Verdict::Drop);
    assert_eq!(o.actions.mark, Some(9));
    assert_eq!(o.actions.ct_mark, Some(9));
    assert!(o.actions.notrack);
    assert_eq!(o.actions.reject, Some(RejectKind::TcpReset));
    assert_eq!(st.log_events, vec![0]);
    let sp = prog(vec![base_chain(
        vec![vec![Insn::Synproxy {
            mss: 1460,
            wscale: 7,
            timestamp: true,
            sack_perm: true,
        }]],
        Verdict::Accept,
    )]);
    let (o, _) = run_on(&sp, &syn(), &PacketMeta::default());
    assert_eq!(o.actions.synproxy, Some((1460, 7, true, true)));
}

#[test]
fn counters_limits_and_quotas() {
    let p = prog(vec![base_chain(
        vec![
            vec![Insn::Counter { id: 0 }],
            // 2 packets per second, burst 2: the 3rd packet in the same instant is over.
            vec![
                Insn::Limit {
                    id: 0,
                    rate: 2,
                    per_ns: 1_000_000_000,
                    burst: 2,
                    bytes: false,
                    over: true,
                },
                Insn::Counter { id: 1 },
                DROP,
            ],
        ],
        Verdict::Accept,
    )]);
    verify(&p).unwrap();
    let mut st = State::new(&p);
    let f = syn();
    let mut verdicts = Vec::new();
    for i in 0..4u64 {
        let meta = PacketMeta {
            now_ns: if i < 3 { 0 } else { 1_000_000_000 },
            ..Default::default()
        };
        verdicts.push(evaluate(&p, &mut st, 0, &packet_ctx(&f, &meta, HookKind::Ip)).verdict);
    }
    assert_eq!(
        verdicts,
        [Verdict::Accept, Verdict::Accept, Verdict::Drop, Verdict::Accept]
    );
    assert_eq!(st.counters[0].get(), (4, 160));
    assert_eq!(st.counters[1].get().0, 1);

    let q = prog(vec![base_chain(
        vec![vec![
            Insn::Quota {
                id: 0,
                bytes: 100,
                over: true,
            },
            DROP,
        ]],
        Verdict::Accept,
    )]);
    let mut st = State::new(&q);
    let v: Vec<Verdict> = (0..4)
        .map(|_| {
            evaluate(
                &q,
                &mut st,
                0,
                &packet_ctx(&f, &PacketMeta::default(), HookKind::Ip),
            )
            .verdict
        })
        .collect();
    // 40-byte packets: 40, 80 fit in 100; the third and later are over.
    assert_eq!(
        v,
        [Verdict::Accept, Verdict::Accept, Verdict::Drop, Verdict::Drop]
    );
}

fn chain(name: &str, rules: Vec<Vec<Insn>>) -> Chain {
    Chain {
        name: name.into(),
        rules: rules.into_iter().map(|insns| Rule { insns }).collect(),
        policy: None,
    }
}

#[test]
fn jump_return_goto_and_policies() {
    // base: jump 1; counter 0; (policy drop). chain 1: return. => counter 0 runs, then drop.
    let p = prog(vec![
        base_chain(
            vec![
                vec![Insn::Verdict(Verdict::Jump(1))],
                vec![Insn::Counter { id: 0 }],
            ],
            Verdict::Drop,
        ),
        chain(
            "sub",
            vec![
                vec![Insn::Verdict(Verdict::Return)],
                vec![Insn::Counter { id: 1 }],
            ],
        ),
    ]);
    let (o, st) = run_on(&p, &syn(), &PacketMeta::default());
    assert_eq!(o.verdict, Verdict::Drop);
    assert_eq!(st.counters[0].get().0, 1);
    assert_eq!(st.counters[1].get().0, 0);
    // goto: no return to the base chain; falling off the goto'd chain applies the policy.
    let p = prog(vec![
        base_chain(
            vec![
                vec![Insn::Verdict(Verdict::Goto(1))],
                vec![Insn::Counter { id: 0 }],
            ],
            Verdict::Accept,
        ),
        chain("sub", vec![vec![Insn::Counter { id: 1 }]]),
    ]);
    let (o, st) = run_on(&p, &syn(), &PacketMeta::default());
    assert_eq!(o.verdict, Verdict::Accept);
    assert_eq!(st.counters[0].get().0, 0);
    assert_eq!(st.counters[1].get().0, 1);
    // accept in a called chain ends everything.
    let p = prog(vec![
        base_chain(
            vec![vec![Insn::Verdict(Verdict::Jump(1))], vec![DROP]],
            Verdict::Drop,
        ),
        chain("sub", vec![vec![Insn::Verdict(Verdict::Accept)]]),
    ]);
    assert_eq!(
        run_on(&p, &syn(), &PacketMeta::default()).0.verdict,
        Verdict::Accept
    );
}

#[test]
fn lookups_in_sets_maps_and_verdict_maps() {
    let mut p = prog(vec![
        base_chain(vec![], Verdict::Accept),
        chain("ssh", vec![vec![Insn::Counter { id: 3 }, DROP]]),
    ]);
    let e = |k: &[u8], v: &[u8]| ElemSpec {
        lo: k.to_vec(),
        hi: k.to_vec(),
        value: v.to_vec(),
        ..Default::default()
    };
    let ports = p.sets.push(
        Set::build(
            &SetSpec {
                name: "ports".into(),
                key_len: 2,
                ..Default::default()
            },
            &[e(&[0, 80], &[]), e(&[1, 187], &[])],
            0,
        )
        .unwrap(),
    );
    let marks = p.sets.push(
        Set::build(
            &SetSpec {
                name: "marks".into(),
                key_len: 2,
                data_len: 4,
                ..Default::default()
            },
            &[e(&[0, 80], &5u32.to_be_bytes())],
            0,
        )
        .unwrap(),
    );
    let vmap = p.sets.push(
        Set::build(
            &SetSpec {
                name: "vm".into(),
                key_len: 2,
                data_len: 8,
                verdict_map: true,
                ..Default::default()
            },
            &[
                e(&[0, 80], &encode_verdict(Verdict::Jump(1))),
                e(&[0, 22], &encode_verdict(Verdict::Accept)),
            ],
            0,
        )
        .unwrap(),
    );
    let lookup = |set: SetId, dreg, vm, invert| Insn::Lookup {
        set,
        sreg: 0,
        len: 2,
        dreg,
        verdict_map: vm,
        invert,
    };
    p.chains[0].rules = vec![
        Rule {
            insns: vec![
                load(Base::Transport, 2, 2),
                lookup(ports, None, false, false),
                Insn::Counter { id: 0 },
            ],
        },
        Rule {
            insns: vec![
                load(Base::Transport, 2, 2),
                lookup(ports, None, false, true),
                Insn::Counter { id: 1 },
            ],
        },
        Rule {
            insns: vec![
                load(Base::Transport, 2, 2),
                lookup(marks, Some(1), false, false),
                Insn::MetaSetMark { sreg: 1 },
            ],
        },
        Rule {
            insns: vec![load(Base::Transport, 2, 2), lookup(vmap, None, true, false)],
        },
    ]
    .into();
    let (o, st) = run_on(&p, &syn(), &PacketMeta::default());
    assert_eq!(st.counters[0].get().0, 1, "80 is in the set");
    assert_eq!(st.counters[1].get().0, 0, "negated lookup does not match");
    assert_eq!(o.actions.mark, Some(5), "the map value reached a register");
    assert_eq!(st.counters[3].get().0, 1, "the vmap jumped to chain ssh");
    assert_eq!(o.verdict, Verdict::Drop);
}

#[test]
fn meters_limit_each_source_separately() {
    let mut p = prog(vec![base_chain(vec![], Verdict::Accept)]);
    let m = p.sets.push(
        Set::build(
            &SetSpec {
                name: "m".into(),
                key_len: 4,
                size: Some(1000),
                ..Default::default()
            },
            &[],
            0,
        )
        .unwrap(),
    );
    p.chains[0].rules = vec![Rule {
        insns: vec![
            Insn::PayloadLoad {
                base: Base::Network,
                offset: 12,
                len: 4,
                dreg: 0,
            },
            Insn::Dynset {
                set: m,
                sreg: 0,
                len: 4,
                op: DynsetOp::Add,
                timeout_ns: 0,
                stmt: DynStmt::Limit {
                    rate: 1,
                    per_ns: 1_000_000_000,
                    burst: 1,
                    over: true,
                },
            },
            DROP,
        ],
    }]
    .into();
    verify(&p).unwrap();
    let mut st = State::new(&p);
    let mut f = syn();
    let mut run = |f: &[u8]| {
        evaluate(
            &p,
            &mut st,
            0,
            &packet_ctx(f, &PacketMeta::default(), HookKind::Ip),
        )
        .verdict
    };
    assert_eq!(run(&f), Verdict::Accept);
    assert_eq!(
        run(&f),
        Verdict::Drop,
        "second packet from the same source is over 1/s"
    );
    f[29] = 9; // another source
    assert_eq!(run(&f), Verdict::Accept);
}

#[test]
fn verifier_refuses_bad_programs() {
    let bad = |rules: Vec<Vec<Insn>>| verify(&prog(vec![base_chain(rules, Verdict::Accept)])).unwrap_err();
    let e = bad(vec![vec![eq(&[1])]]);
    assert!(
        matches!(&e, VerifyError::Insn { problem, .. } if problem.contains("before anything wrote")),
        "{e}"
    );
    // Registers do not carry over between rules.
    let e = bad(vec![vec![load(Base::Network, 12, 4)], vec![eq(&[1, 2, 3, 4])]]);
    assert!(e.to_string().contains("before anything wrote"), "{e}");
    let e = bad(vec![vec![Insn::PayloadLoad {
        base: Base::Network,
        offset: 65530,
        len: 16,
        dreg: 0,
    }]]);
    assert!(e.to_string().contains("beyond the packet model"), "{e}");
    let e = bad(vec![vec![Insn::PayloadLoad {
        base: Base::Network,
        offset: 0,
        len: 16,
        dreg: 14,
    }]]);
    assert!(e.to_string().contains("register file"), "{e}");
    let e = bad(vec![vec![Insn::Counter { id: 99 }]]);
    assert!(e.to_string().contains("counter 99"), "{e}");
    let e = bad(vec![vec![DROP, Insn::Counter { id: 0 }]]);
    assert!(e.to_string().contains("after a terminal"), "{e}");
    let e = bad(vec![vec![Insn::Verdict(Verdict::Jump(5))]]);
    assert!(e.to_string().contains("does not exist"), "{e}");
    let e = bad(vec![vec![Insn::Lookup {
        set: SetId(3),
        sreg: 0,
        len: 4,
        dreg: None,
        verdict_map: false,
        invert: false,
    }]]);
    assert!(e.to_string().contains("no set"), "{e}");
    // A jump loop a -> b -> a.
    let p = prog(vec![
        base_chain(vec![vec![Insn::Verdict(Verdict::Jump(1))]], Verdict::Accept),
        chain("a", vec![vec![Insn::Verdict(Verdict::Jump(2))]]),
        chain("b", vec![vec![Insn::Verdict(Verdict::Goto(1))]]),
    ]);
    assert!(matches!(verify(&p), Err(VerifyError::Loop(path)) if path.contains("a -> b -> a")));
    // Jumping into a base chain.
    let p = prog(vec![
        base_chain(vec![vec![Insn::Verdict(Verdict::Jump(1))]], Verdict::Accept),
        base_chain(vec![], Verdict::Accept),
    ]);
    assert!(verify(&p).unwrap_err().to_string().contains("base chain"));
    // 17 nested jumps exceed the stack.
    let mut chains = vec![base_chain(
        vec![vec![Insn::Verdict(Verdict::Jump(1))]],
        Verdict::Accept,
    )];
    for i in 1..=17u16 {
        let next = if i < 17 {
            vec![vec![Insn::Verdict(Verdict::Jump(i + 1))]]
        } else {
            vec![]
        };
        chains.push(chain(&format!("c{i}"), next));
    }
    assert!(matches!(verify(&prog(chains)), Err(VerifyError::TooDeep { .. })));
}

#[test]
fn counter_banks_grow_without_moving_and_keep_their_values() {
    let bank = std::sync::Arc::new(Counters::with_len(10));
    let reader = bank.clone();
    for i in 0..10 {
        bank.get(i).unwrap().add(100);
    }
    assert!(bank.get(64).is_none());
    for n in [64, 65, 191, 192, 5_000, 70_000] {
        bank.grow(n);
        assert!(bank.len() >= n);
        assert!(bank.get(n - 1).is_some());
        bank.get(n - 1).unwrap().add(1);
    }
    // The control thread's clone sees the same cells, old and new.
    assert_eq!(reader.get(3).unwrap().get(), (1, 100));
    assert_eq!(reader.get(69_999).unwrap().get(), (1, 1));
    // Every index maps to its own cell.
    let mut seen = std::collections::HashSet::new();
    for i in 0..reader.len() {
        assert!(seen.insert(reader.get(i).unwrap() as *const CounterCell));
    }
}

#[test]
fn a_state_adopts_a_later_program_keeping_what_exists() {
    let mut p = prog(vec![base_chain(
        vec![vec![
            Insn::Counter { id: 0 },
            Insn::Quota {
                id: 0,
                bytes: 100,
                over: false,
            },
        ]],
        Verdict::Accept,
    )]);
    p.counters = 1;
    p.quotas = 1;
    p.quota_used = vec![0].into();
    let mut st = State::new(&p);
    let bank = st.counters.clone();
    let ctx_frame = syn();
    let meta = PacketMeta::default();
    evaluate(&p, &mut st, 0, &packet_ctx(&ctx_frame, &meta, HookKind::Ip));
    assert_eq!(bank[0].get().0, 1);
    // A later generation: one more counter and quota (new slots), same old ones.
    let mut q = p.clone();
    q.counters = 2;
    q.quotas = 2;
    q.quota_used.push(40);
    st.adopt(&q);
    assert!(
        std::sync::Arc::ptr_eq(&bank, &st.counters),
        "the bank does not move"
    );
    assert_eq!(bank[0].get().0, 1, "the surviving rule's counter kept its value");
    assert_eq!(bank[1].get().0, 0, "a new counter starts at zero");
}
