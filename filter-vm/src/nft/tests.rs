//! Front-end tests: fixtures, round trips, error positions, and no-panic properties.

use super::ast::*;
use super::*;

const FIXTURES: &[(&str, &str)] = &[
    ("everything.nft", include_str!("fixtures/everything.nft")),
    ("nft_listing_a.nft", include_str!("fixtures/nft_listing_a.nft")),
    ("nft_listing_b.nft", include_str!("fixtures/nft_listing_b.nft")),
];

/// parse → print → parse gives an equal tree, and printing is a fixed point.
fn assert_round_trip(name: &str, text: &str) -> Ruleset {
    let first = parse_ruleset(text).unwrap_or_else(|e| panic!("{name}: {e}"));
    let listing = print_ruleset(&first);
    let second =
        parse_ruleset(&listing).unwrap_or_else(|e| panic!("{name}: listing does not parse: {e}\n{listing}"));
    assert_eq!(first, second, "{name}: listing changes the ruleset:\n{listing}");
    assert_eq!(print_ruleset(&second), listing, "{name}: listing is not stable");
    first
}

#[test]
fn fixtures_round_trip() {
    for (name, text) in FIXTURES {
        assert_round_trip(name, text);
    }
}

/// Parses one rule in an inet table (plus the named objects some rules refer to).
fn rule_of(text: &str) -> Rule {
    let src = format!(
        "table inet t {{\n\tset s4 {{ type ipv4_addr; flags dynamic; }}\n\tmap vm {{ type inet_service : verdict; }}\n\
         \tchain other {{ }}\n\tchain c {{\n{text}\n\t}}\n}}\n"
    );
    let rs = parse_ruleset(&src).unwrap_or_else(|e| panic!("{text}: {e}"));
    assert_round_trip(text, &src);
    let rules = &rs.tables[0].chains[1].rules;
    assert_eq!(rules.len(), 1, "{text}");
    rules[0].clone()
}

fn stmts_of(text: &str) -> Vec<Stmt> {
    rule_of(text).stmts
}

fn one_match(text: &str) -> Match {
    match stmts_of(text).as_slice() {
        [Stmt::Match(m)] => m.clone(),
        other => panic!("{text}: not one match: {other:?}"),
    }
}

fn tcp(f: TcpField) -> Expr {
    Expr::Payload(Payload::Tcp(f))
}

fn int(n: u64) -> Rhs {
    Rhs::Const(Const::Value(Value::Int(n)))
}

#[test]
fn equality_is_normalized_to_the_implicit_form() {
    let m = one_match("tcp dport == 22");
    assert_eq!(
        m,
        Match {
            left: tcp(TcpField::Dport),
            op: RelOp::Implicit,
            right: int(22)
        }
    );
    assert_eq!(one_match("tcp dport eq ssh"), m);
    assert_eq!(one_match("tcp dport 0x16"), m);
    // On a bitmask, `==` is exact equality and the implicit form a flag test: both stay.
    assert_eq!(one_match("tcp flags == syn").op, RelOp::Eq);
    assert_eq!(one_match("tcp flags syn").op, RelOp::Implicit);
    // With a set the two mean the same again.
    assert_eq!(one_match("tcp flags == { syn, ack }").op, RelOp::Implicit);
}

#[test]
fn flag_lists_and_masks() {
    let m = one_match("ct state established,related");
    assert_eq!(
        m,
        Match {
            left: Expr::Ct(CtKey::State),
            op: RelOp::Implicit,
            right: int(6)
        }
    );
    let masked = Match {
        left: Expr::Bitwise {
            expr: Box::new(tcp(TcpField::Flags)),
            op: BitOp::And,
            value: Value::Int(0x12),
        },
        op: RelOp::Eq,
        right: int(0x02),
    };
    assert_eq!(one_match("tcp flags & (syn|ack) == syn"), masked);
    assert_eq!(one_match("tcp flags & (syn | ack) == syn"), masked);
    assert_eq!(one_match("tcp flags syn / syn,ack"), masked);
    assert_eq!(one_match("ct state != established | related").right, int(6));
    assert_eq!(one_match("tcp flags { syn, ack }").right, {
        let e = |n| SetElem {
            key: Const::Value(Value::Int(n)),
            timeout: None,
            expires: None,
            counter: None,
            comment: None,
            data: None,
        };
        Rhs::Set(SetRef::Anonymous(vec![e(2), e(0x10)]))
    });
}

#[test]
fn bitwise_precedence_follows_nft() {
    // `|` binds looser than `&`: mark | (0x1 & 0x3).
    let m = one_match("meta mark | 0x1 & 0x3 == 0x1");
    assert_eq!(
        m.left,
        Expr::Bitwise {
            expr: Box::new(Expr::Meta(MetaKey::Mark)),
            op: BitOp::Or,
            value: Value::Int(1)
        }
    );
    let m = one_match("(meta mark | 0x1) & 0x3 == 0x1");
    let inner = Expr::Bitwise {
        expr: Box::new(Expr::Meta(MetaKey::Mark)),
        op: BitOp::Or,
        value: Value::Int(1),
    };
    assert_eq!(
        m.left,
        Expr::Bitwise {
            expr: Box::new(inner),
            op: BitOp::And,
            value: Value::Int(3)
        }
    );
    assert_eq!(one_match("meta mark and 0xff 0x1").op, RelOp::Implicit);
}

#[test]
fn register_compare_is_a_levee_extension() {
    let m = one_match("tcp sport == tcp dport");
    assert_eq!(
        m,
        Match {
            left: tcp(TcpField::Sport),
            op: RelOp::Eq,
            right: Rhs::Expr(tcp(TcpField::Dport))
        }
    );
    let m = one_match("ip saddr != ip daddr");
    assert_eq!(m.op, RelOp::Ne);
    assert!(matches!(
        m.right,
        Rhs::Expr(Expr::Payload(Payload::Ip(IpField::Daddr)))
    ));
    let e = parse_ruleset("table ip t { chain c { tcp sport == ip saddr } }").unwrap_err();
    assert!(e.message.contains("same width"), "{e}");
    // Without an operator the right side is a value, never an expression.
    assert!(parse_ruleset("table ip t { chain c { meta l4proto tcp tcp dport 22 } }").is_ok());
}

#[test]
fn addresses_prefixes_and_ranges() {
    let m = one_match("ip saddr 10.1.2.3/8");
    assert_eq!(
        m.right,
        Rhs::Const(Const::Prefix {
            addr: Value::Ipv4([10, 0, 0, 0].into()),
            len: 8
        })
    );
    assert_eq!(
        one_match("ip saddr 1.2.3.4/32").right,
        Rhs::Const(Const::Value(Value::Ipv4([1, 2, 3, 4].into())))
    );
    let m = one_match("ip6 daddr fe80::1/64");
    assert_eq!(
        m.right,
        Rhs::Const(Const::Prefix {
            addr: Value::Ipv6("fe80::".parse().unwrap()),
            len: 64
        })
    );
    let range = Rhs::Const(Const::Range {
        low: Value::Int(1024),
        high: Value::Int(65535),
    });
    assert_eq!(one_match("tcp dport 1024-65535").right, range);
    assert_eq!(one_match("tcp dport 1024 - 65535").right, range);
    assert_eq!(one_match("tcp dport != 1024-65535").op, RelOp::Ne);
    let m = one_match("ip saddr 10.0.0.1-10.0.0.9");
    assert!(matches!(m.right, Rhs::Const(Const::Range { .. })));
    let m = one_match("icmp type echo-reply-echo-request");
    assert_eq!(
        m.right,
        Rhs::Const(Const::Range {
            low: Value::Int(0),
            high: Value::Int(8)
        })
    );
    let m = one_match("ether saddr 00:11:22:aa:bb:cc");
    assert_eq!(
        m.right,
        Rhs::Const(Const::Value(Value::Ether([0, 0x11, 0x22, 0xaa, 0xbb, 0xcc])))
    );
    let m = one_match("meta hour \"17:00\"-\"19:30\"");
    assert_eq!(
        m.right,
        Rhs::Const(Const::Range {
            low: Value::Int(61200),
            high: Value::Int(70200)
        })
    );
}

#[test]
fn concatenations_sets_and_maps() {
    let m = one_match("ip saddr . tcp dport { 198.18.0.1 . 22, 198.18.0.0/16 . 1024-2048 }");
    assert!(matches!(&m.left, Expr::Concat(p) if p.len() == 2));
    let Rhs::Set(SetRef::Anonymous(elems)) = &m.right else {
        panic!("{m:?}")
    };
    assert_eq!(elems.len(), 2);
    assert!(matches!(&elems[1].key, Const::Concat(p) if matches!(p[1], Const::Range { .. })));
    assert_eq!(
        one_match("ip saddr @s4").right,
        Rhs::Set(SetRef::Named("s4".into()))
    );
    match stmts_of("tcp dport vmap { 22 : accept, 80:drop, 8080 : jump other }").as_slice() {
        [Stmt::Vmap {
            map: SetRef::Anonymous(e),
            ..
        }] => {
            assert_eq!(e[1].data, Some(ElemData::Verdict(Verdict::Drop)));
            assert_eq!(e[2].data, Some(ElemData::Verdict(Verdict::Jump("other".into()))));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        stmts_of("tcp dport vmap @vm").as_slice(),
        [Stmt::Vmap {
            map: SetRef::Named(_),
            ..
        }]
    ));
    match stmts_of("meta mark set ip saddr map { 10.0.0.0/8 : 0x1, 1.2.3.4 : 2 }").as_slice() {
        [Stmt::MetaSet {
            key: MetaKey::Mark,
            value: Expr::Map {
                map: SetRef::Anonymous(e),
                ..
            },
        }] => {
            assert_eq!(e[1].data, Some(ElemData::Const(Const::Value(Value::Int(2)))));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn statements() {
    let s = stmts_of(
        "counter packets 3 bytes 4 limit rate over 10/second burst 20 packets quota until 2 mbytes \
         log prefix \"x \" level info notrack meta mark set 0x10 ct mark set meta mark | 0x1 \
         ct label set 3 synproxy mss 1460 wscale 7 timestamp sack-perm reject with tcp reset",
    );
    assert_eq!(s[0], Stmt::Counter(Counter { packets: 3, bytes: 4 }));
    assert_eq!(
        s[1],
        Stmt::Limit(Limit {
            over: true,
            rate: 10,
            per: RateUnit::Second,
            bytes: false,
            burst: 20
        })
    );
    assert_eq!(
        s[2],
        Stmt::Quota(Quota {
            over: false,
            bytes: 2 << 20,
            used: 0
        })
    );
    assert_eq!(
        s[3],
        Stmt::Log(Log {
            prefix: Some("x ".into()),
            level: LogLevel::Info,
            flags: LogFlags::default(),
        })
    );
    assert_eq!(s[4], Stmt::Notrack);
    assert_eq!(
        s[5],
        Stmt::MetaSet {
            key: MetaKey::Mark,
            value: Expr::Const(Value::Int(16))
        }
    );
    assert!(matches!(
        &s[6],
        Stmt::CtSet {
            key: CtKey::Mark,
            value: Expr::Bitwise { .. }
        }
    ));
    assert_eq!(
        s[7],
        Stmt::CtSet {
            key: CtKey::Label,
            value: Expr::Const(Value::Int(3))
        }
    );
    assert_eq!(
        s[8],
        Stmt::Synproxy(Synproxy {
            mss: Some(1460),
            wscale: Some(7),
            timestamp: true,
            sack_perm: true
        })
    );
    assert_eq!(s[9], Stmt::Reject(Reject::TcpReset));
    assert_eq!(
        stmts_of("limit rate 2 kbytes/minute")[0],
        Stmt::Limit(Limit {
            over: false,
            rate: 2048,
            per: RateUnit::Minute,
            bytes: true,
            burst: 0
        })
    );
    assert_eq!(
        stmts_of("limit rate 10 / hour"),
        stmts_of("limit rate 10/hour burst 5 packets")
    );
    assert_eq!(
        stmts_of("reject with icmp type port-unreachable"),
        vec![Stmt::Reject(Reject::Icmp(3))]
    );
    assert_eq!(
        stmts_of("reject with icmpx admin-prohibited"),
        vec![Stmt::Reject(Reject::Icmpx(3))]
    );
    assert_eq!(stmts_of("log level warn"), stmts_of("log"));
}

#[test]
fn meters() {
    let s = stmts_of("add @s4 { ip saddr timeout 10s limit rate over 10/second counter } drop");
    let Stmt::Dynset(d) = &s[0] else { panic!("{s:?}") };
    assert_eq!(
        (d.op, d.set.as_str(), d.timeout),
        (DynsetOp::Add, "s4", Some(std::time::Duration::from_secs(10)))
    );
    assert_eq!(d.stmts.len(), 2);
    assert_eq!(s[1], Stmt::Verdict(Verdict::Drop));
    let s = stmts_of("meter flood size 1024 { ip saddr limit rate over 10/second } drop");
    let Stmt::Meter(m) = &s[0] else { panic!("{s:?}") };
    assert_eq!((m.name.as_str(), m.size), ("flood", Some(1024)));
}

#[test]
fn base_chains_and_priorities() {
    let prio = |family: &str, hook: &str, p: &str| {
        let dev = if hook == "ingress" { " device \"eth0\"" } else { "" };
        let src = format!(
            "table {family} t {{ chain c {{ type filter hook {hook}{dev} priority {p}; policy drop; }} }}"
        );
        let rs = parse_ruleset(&src).unwrap_or_else(|e| panic!("{src}: {e}"));
        assert_round_trip(&src, &src);
        let b = rs.tables[0].chains[0].base.clone().unwrap();
        assert_eq!(b.policy, Policy::Drop);
        b.priority
    };
    assert_eq!(prio("inet", "input", "filter"), 0);
    assert_eq!(prio("inet", "input", "filter + 5"), 5);
    assert_eq!(prio("inet", "input", "raw - 10"), -310);
    assert_eq!(prio("inet", "input", "raw-10"), -310);
    assert_eq!(prio("ip", "prerouting", "dstnat"), -100);
    assert_eq!(prio("ip", "postrouting", "srcnat"), 100);
    assert_eq!(prio("bridge", "forward", "filter"), -200);
    assert_eq!(prio("netdev", "ingress", "-500"), -500);
    assert_eq!(prio("inet", "ingress", "0"), 0);
    let e = parse_ruleset("table ip t { chain c { type filter hook input priority srcnat; } }").unwrap_err();
    assert_eq!((e.line, e.col), (1, 56), "{e}");
    let e = parse_ruleset("table netdev t { chain c { type filter hook input priority 0; } }").unwrap_err();
    assert!(e.message.contains("not available"), "{e}");
}

#[test]
fn commands_apply_in_order() {
    let src = "\
        table inet old { }\n\
        flush ruleset\n\
        add table inet t\n\
        add chain inet t c { type filter hook input priority 0; policy drop; }\n\
        add rule inet t c tcp dport 22 accept\n\
        add rule inet t c tcp dport 80 accept\n\
        insert rule inet t c ct state invalid drop\n\
        add set inet t s { type ipv4_addr; }\n\
        add element inet t s { 10.0.0.1, 10.0.0.2 }\n\
        table inet t { set s { type ipv4_addr; elements = { 10.0.0.3 } } }\n\
        add rule inet t c ip saddr @s drop; add rule t2 c2 accept\n";
    let e = parse_ruleset(src).unwrap_err();
    assert_eq!((e.line, e.col), (11, 46), "{e}");
    let rs = parse_ruleset(src.trim_end().trim_end_matches("; add rule t2 c2 accept")).unwrap();
    assert_eq!(rs.tables.len(), 1);
    let t = &rs.tables[0];
    assert_eq!(t.sets[0].elements.len(), 3);
    let listing = print_ruleset(&rs);
    assert!(
        listing.contains("\t\tct state invalid drop\n\t\ttcp dport 22 accept\n\t\ttcp dport 80 accept\n"),
        "{listing}"
    );
    let flushed = parse_ruleset("table ip a { chain c { accept } }\nflush table ip a\n").unwrap();
    assert!(flushed.tables[0].chains[0].rules.is_empty());
}

#[test]
fn comments_separators_and_layout() {
    let a = parse_ruleset(
        "# header\ntable inet t { # trailing\n  chain c {\n    tcp dport 22 accept # why\n\n    udp dport 53 accept; udp dport 123 accept\n  }\n}\n",
    )
    .unwrap();
    let b = parse_ruleset(
        "table inet t { chain c { tcp dport 22 accept; udp dport 53 accept; udp dport 123 accept; } }",
    )
    .unwrap();
    assert_eq!(a, b);
    assert_eq!(
        a.tables[0].chains[0].rules[1].span,
        Span { line: 0, col: 0 },
        "spans do not count for equality"
    );
    assert_eq!(a.tables[0].chains[0].rules[1].span.line, 6);
    assert_eq!(a.tables[0].chains[0].rules[1].span.col, 5);
}

#[test]
fn printer_uses_nft_spellings() {
    let src = "table inet filter {\n\tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n\
               \t\ttcp dport ssh counter accept\n\t\tmeta mark 1 ct mark set 0x10 iif \"lo\"\n\t}\n}\n";
    let rs = parse_ruleset(src).unwrap();
    assert_eq!(
        print_ruleset(&rs),
        "table inet filter {\n\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n\
         \t\ttcp dport 22 counter packets 0 bytes 0 accept\n\
         \t\tmeta mark 0x00000001 ct mark set 0x00000010 iif \"lo\"\n\t}\n}\n"
    );
}

#[test]
fn handles_are_printed_on_request() {
    let mut rs = parse_ruleset("table ip t { chain c { accept; drop } }").unwrap();
    rs.tables[0].chains[0].rules[0].handle = Some(4);
    let with = print_ruleset_with(&rs, PrintOptions { handles: true });
    assert!(with.contains("\t\taccept # handle 4\n\t\tdrop\n"), "{with}");
    assert!(!print_ruleset(&rs).contains("handle"));
    let json = ruleset_json(&rs);
    assert_eq!(json["nftables"][3]["rule"]["handle"], 4);
}

#[test]
fn json_has_the_libnftables_shape() {
    let rs = parse_ruleset(
        "table inet t {\n set s { type ipv4_addr . inet_service; flags interval; elements = { 10.0.0.0/8 . 22 } }\n\
         chain c { type filter hook input priority 0; policy drop;\n\
         ct state established,related accept\n tcp dport { 22, 80 } counter accept comment \"web\"\n } }",
    )
    .unwrap();
    let j = ruleset_json(&rs);
    let items = j["nftables"].as_array().unwrap();
    assert_eq!(items[0]["metainfo"]["json_schema_version"], 1);
    assert_eq!(
        items[1]["table"],
        serde_json::json!({"family": "inet", "name": "t"})
    );
    assert_eq!(
        items[2]["set"]["type"],
        serde_json::json!(["ipv4_addr", "inet_service"])
    );
    assert_eq!(
        items[2]["set"]["elem"][0],
        serde_json::json!({"concat": [{"prefix": {"addr": "10.0.0.0", "len": 8}}, 22]})
    );
    assert_eq!(
        items[3]["chain"],
        serde_json::json!({"family": "inet", "table": "t", "name": "c", "type": "filter", "hook": "input", "prio": 0, "policy": "drop"})
    );
    assert_eq!(
        items[4]["rule"]["expr"],
        serde_json::json!([
            {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}},
            {"accept": null}
        ])
    );
    assert_eq!(items[5]["rule"]["comment"], "web");
    assert_eq!(
        items[5]["rule"]["expr"][0]["match"]["right"],
        serde_json::json!({"set": [22, 80]})
    );
    assert_eq!(
        items[5]["rule"]["expr"][1],
        serde_json::json!({"counter": {"packets": 0, "bytes": 0}})
    );
}

/// Every error names line, column and what was wrong.
#[test]
fn errors_point_at_line_and_column() {
    let cases: &[(&str, u32, u32, &str)] = &[
        (
            "table inet t { chain c { tcp dport 70000 accept } }",
            1,
            36,
            "out of range",
        ),
        (
            "table inet t {\n chain c {\n  ip saddr 10.0.0.0/33 drop\n }\n}",
            3,
            12,
            "prefix length",
        ),
        (
            "table inet t { chain c { tcp dport 2000-1000 drop } }",
            1,
            36,
            "low end above",
        ),
        (
            "table inet t { chain c { counter foo } }",
            1,
            34,
            "expected a verdict or statement after 'counter', found 'foo'",
        ),
        (
            "table inet t { chain c { foo } }",
            1,
            26,
            "expected a statement or verdict, found 'foo'",
        ),
        (
            "table inet t { chain c { tcp dport 22 accept\n",
            2,
            1,
            "never closed",
        ),
        (
            "table inet t { chain c { log prefix \"abc } }",
            1,
            37,
            "unterminated string",
        ),
        ("include \"other.nft\"", 1, 1, "'include' is not supported"),
        (
            "table inet t { chain c { ip saddr 1.2.3 drop } }",
            1,
            35,
            "not a valid ipv4_addr",
        ),
        ("table inet t { chain c { ip foo 1 } }", 1, 29, "header field"),
        (
            "table inet t { chain c { jump nowhere } }",
            1,
            26,
            "chain 'nowhere' does not exist",
        ),
        (
            "table inet t { chain c { ip saddr @nope } }",
            1,
            26,
            "set 'nope' does not exist",
        ),
        ("table inet t { chain c { accept drop } }", 1, 33, "end of rule"),
        (
            "table inet t { set s { type ipv4_addr; elements = { 10.0.0.0/8 } } }",
            1,
            53,
            "flags interval",
        ),
        ("table inet t { chain c { limit rate 10 } }", 1, 40, "time unit"),
        (
            "table inet t { chain c { tcp dport } }",
            1,
            36,
            "expected a value",
        ),
        ("table inet t { chain c { ct state foo } }", 1, 35, "ct_state"),
        ("add rule inet t c accept", 1, 10, "does not exist"),
        (
            "table ip t { chain c { reject with icmpv6 type no-route } }",
            1,
            36,
            "not possible in family ip",
        ),
        (
            "table inet t { chain c { meta mark set 0x100000000 } }",
            1,
            40,
            "out of range for mark",
        ),
        (
            "table inet t { chain c { tcp dport { } accept } }",
            1,
            36,
            "must not be empty",
        ),
        (
            "table inet t { chain c { ip saddr . tcp dport { 1.2.3.4 } } }",
            1,
            57,
            "concatenation",
        ),
        ("table inet t { chain c { $x } }", 1, 26, "variables"),
        ("define x = 1", 1, 1, "'define'"),
        (
            "table inet t { chain c { type nat hook input priority 0; } }",
            1,
            31,
            "only 'filter'",
        ),
        (
            "table inet t { chain c { tcp dport 22 accept } ",
            1,
            48,
            "never closed",
        ),
        ("table inet t { chain c { } } }", 1, 30, "unexpected '}'"),
        (
            "table inet t { set s { type ipv4_addr; flags bogus; } }",
            1,
            46,
            "set flag",
        ),
        (
            "table inet t { set s { type nonsense; } }",
            1,
            29,
            "unknown data type",
        ),
        ("table inet t { set s { flags interval; } }", 1, 20, "no 'type'"),
        (
            "table inet t { chain c { tcp dport vmap { 22 : frobnicate } } }",
            1,
            48,
            "verdict",
        ),
        (
            "table inet t { chain c { udp sport 1 € } }",
            1,
            38,
            "unexpected character",
        ),
        (
            "table inet t { chain c { tcp dport < { 1, 2 } } }",
            1,
            38,
            "single value",
        ),
        (
            "table inet t { chain c { meta hour \"25:00\" } }",
            1,
            36,
            "time of day",
        ),
        (
            "table inet t { chain c { ip6 saddr ::1/129 } }",
            1,
            36,
            "prefix length",
        ),
        (
            "table inet t { chain c { synproxy wscale 15 } }",
            1,
            42,
            "at most 14",
        ),
        ("table inet t { chain c { policy drop } }", 1, 26, "base chain"),
        (
            "table inet t { chain c { jump c2 } chain c2 { type filter hook input priority 0; } }",
            1,
            26,
            "base chain",
        ),
        (
            "table inet t { chain c { iifname \"a-very-long-interface-name\" } }",
            1,
            34,
            "1 to 15 bytes",
        ),
        (
            "table inet t { chain c { ip saddr 1.2.3.4 comment \"x\" accept } }",
            1,
            55,
            "end of rule",
        ),
    ];
    for &(src, line, col, needle) in cases {
        match parse_ruleset(src) {
            Ok(rs) => panic!(
                "{src}: parsed, expected an error ({needle}):\n{}",
                print_ruleset(&rs)
            ),
            Err(e) => {
                assert!(
                    e.message.contains(needle),
                    "{src}: message {e:?} lacks {needle:?}"
                );
                assert_eq!((e.line, e.col), (line, col), "{src}: {e}");
                assert!(e.to_string().starts_with(&format!("{line}:{col}: ")), "{e}");
            }
        }
    }
}

/// Statements that parse in `SKELETON`'s chain `c`, none of them terminal.
const SNIPPETS: &[&str] = &[
    "tcp dport 22",
    "tcp dport != 22",
    "tcp dport { 22, 80, 443, 8000-8999 }",
    "tcp sport 1024-65535",
    "tcp flags syn",
    "tcp flags syn,ack",
    "tcp flags & (syn | ack) == syn",
    "tcp flags syn / fin,syn,rst,ack",
    "tcp flags == 0x12",
    "tcp flags { syn, ack, rst }",
    "tcp sequence > 1000",
    "tcp window <= 1024",
    "tcp doff 5",
    "tcp urgptr != 0",
    "udp dport 53",
    "udp length < 100",
    "udp checksum 0",
    "th dport { 53, 123 }",
    "ip saddr 198.18.0.0/15",
    "ip daddr != 10.0.0.0/8",
    "ip saddr { 10.0.0.0/8, 192.168.0.0/16, 1.2.3.4 }",
    "ip saddr 10.0.0.1-10.0.0.200",
    "ip saddr @blocklist",
    "ip saddr != @blocklist",
    "ip protocol { tcp, udp, icmp }",
    "ip ttl < 5",
    "ip length > 1400",
    "ip dscp { cs1, af41, ef }",
    "ip frag-off & 0x1fff != 0",
    "ip version 4 ip hdrlength 5",
    "ip ecn ce",
    "ip ecn { not-ect, ect0 }",
    "ip saddr . tcp dport { 198.18.0.1 . 22, 198.18.0.0/24 . 80 }",
    "ip saddr . tcp dport @pairs",
    "ip6 saddr fe80::/10",
    "ip6 daddr { ::1, 2001:db8::/32 }",
    "ip6 nexthdr ipv6-icmp",
    "ip6 hoplimit 255",
    "ip6 flowlabel 12345",
    "ip6 ecn != not-ect",
    "ip6 version 6",
    "@nh,96,32 & 0xffffff00 == 0xc6120000",
    "@th,16,16 { 22, 80 }",
    "@ll,0,48 0x020000000002",
    "@nh,4,6 3",
    "meta mark set @nh,96,32",
    "icmp type { echo-request, echo-reply }",
    "icmp type echo-request icmp code 0",
    "icmpv6 type { nd-neighbor-solicit, nd-router-advert }",
    "ether saddr 00:11:22:33:44:55",
    "ether type { ip, ip6, arp }",
    "vlan id 100",
    "meta l4proto tcp",
    "meta l4proto { tcp, udp }",
    "meta nfproto ipv6",
    "meta protocol ip",
    "meta mark 0x1",
    "meta mark & 0xff00 == 0x100",
    "meta length > 1000",
    "iifname \"eth0\"",
    "oifname { \"eth1\", \"wan*\" }",
    "iif \"lo\"",
    "meta cpu 3",
    "meta pkttype { broadcast, multicast }",
    "meta hour \"08:00\"-\"17:30\"",
    "meta day { \"Monday\", \"Friday\" }",
    "meta time < \"2030-01-01 00:00:00\"",
    "ct state established,related",
    "ct state new",
    "ct state != invalid",
    "ct state { established, related }",
    "ct status dnat",
    "ct mark 0x10",
    "ct direction reply",
    "ct expiration < 1m30s",
    "ct zone 7",
    "ct label 3",
    "tcp sport == tcp dport",
    "ip saddr != ip daddr",
    "counter",
    "counter packets 10 bytes 1000",
    "limit rate 10/second",
    "limit rate over 100/minute burst 50 packets",
    "limit rate 1 mbytes/second burst 64 kbytes",
    "quota over 10 mbytes",
    "quota 500 kbytes used 10 kbytes",
    "log",
    "log prefix \"levee: \" level info",
    "log flags all",
    "log prefix \"x\" level info flags tcp sequence,options flags ip options",
    "log flags skuid flags ether",
    "synproxy mss 1460 wscale 7 timestamp sack-perm",
    "notrack",
    "meta mark set 0x2",
    "meta mark set meta mark | 0x10",
    "meta mark set ip saddr map { 10.0.0.0/8 : 0x1, 192.168.0.1 : 0x2 }",
    "meta mark set ip saddr map @marks",
    "ct mark set meta mark",
    "ct mark set 0xff",
    "ct label set 5",
    "add @meter4 { ip saddr timeout 10s limit rate over 10/second }",
    "update @meter4 { ip saddr counter }",
    "meter flood { ip saddr limit rate over 20/second }",
];

/// Terminal statements (may end a rule).
const TERMINALS: &[&str] = &[
    "accept",
    "drop",
    "continue",
    "return",
    "jump other",
    "goto other",
    "reject",
    "reject with tcp reset",
    "reject with icmpx admin-prohibited",
    "tcp dport vmap { 22 : accept, 80 : drop, 443 : jump other }",
    "tcp dport vmap @ports",
];

/// A table with the named objects the snippets use; `{}` is replaced by the rules.
const SKELETON: &str = "table inet t {
\tset blocklist { type ipv4_addr; flags interval; elements = { 10.0.0.0/8, 1.2.3.4 } }
\tset pairs { type ipv4_addr . inet_service; flags interval; }
\tset meter4 { type ipv4_addr; flags dynamic,timeout; timeout 1m; }
\tmap marks { type ipv4_addr : mark; elements = { 1.1.1.1 : 0x1 } }
\tmap ports { type inet_service : verdict; elements = { 22 : accept } }
\tchain other { return }
\tchain c {
\t\ttype filter hook input priority filter; policy drop;
{}
\t}
}
";

fn skeleton(rules: &str) -> String {
    SKELETON.replace("{}", rules)
}

/// A large, varied ruleset built from the snippets: many rules, a big set, every construct.
fn large_sample() -> String {
    let mut rules = String::new();
    for i in 0..4000usize {
        let a = SNIPPETS[i % SNIPPETS.len()];
        let b = SNIPPETS[(i * 7 + 3) % SNIPPETS.len()];
        let t = TERMINALS[i % TERMINALS.len()];
        let port = 1 + i % 65535;
        rules.push_str(&format!(
            "\t\t{a} {b} tcp dport {port} {t} comment \"rule {i}\"\n"
        ));
    }
    let mut elems = Vec::new();
    for i in 0..5000u32 {
        let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i * 256);
        elems.push(format!("{ip}/24"));
    }
    skeleton(&rules).replace(
        "elements = { 10.0.0.0/8, 1.2.3.4 }",
        &format!("elements = {{ {} }}", elems.join(", ")),
    )
}

#[test]
fn every_snippet_parses_and_round_trips() {
    for s in SNIPPETS.iter().chain(TERMINALS) {
        assert_round_trip(s, &skeleton(s));
    }
}

#[test]
fn large_sample_round_trips() {
    let text = large_sample();
    let rs = assert_round_trip("large sample", &text);
    assert_eq!(rs.tables[0].chains[1].rules.len(), 4000);
    assert_eq!(rs.tables[0].sets[0].elements.len(), 5000);
    // Comments and handles survive the listing as well.
    assert!(print_ruleset(&rs).contains("comment \"rule 3999\""));
}

mod props {
    use super::*;
    use proptest::prelude::*;

    /// Tokens of the language, for soups that get past the lexer often.
    const VOCAB: &[&str] = &[
        "table",
        "chain",
        "set",
        "map",
        "inet",
        "ip",
        "ip6",
        "netdev",
        "bridge",
        "t",
        "c",
        "other",
        "{",
        "}",
        "(",
        ")",
        ";",
        "\n",
        ",",
        ".",
        ":",
        "-",
        "/",
        "@",
        "=",
        "==",
        "!=",
        "<",
        "<=",
        ">",
        ">=",
        "&",
        "|",
        "^",
        "<<",
        ">>",
        "+",
        "type",
        "typeof",
        "filter",
        "hook",
        "input",
        "ingress",
        "device",
        "priority",
        "policy",
        "accept",
        "drop",
        "return",
        "continue",
        "jump",
        "goto",
        "tcp",
        "udp",
        "th",
        "icmp",
        "icmpv6",
        "ether",
        "vlan",
        "meta",
        "ct",
        "dport",
        "sport",
        "flags",
        "saddr",
        "daddr",
        "protocol",
        "type",
        "id",
        "state",
        "mark",
        "label",
        "l4proto",
        "iifname",
        "hour",
        "day",
        "time",
        "expiration",
        "syn",
        "ack",
        "fin",
        "established",
        "related",
        "new",
        "invalid",
        "tcp",
        "22",
        "0",
        "5",
        "-300",
        "65536",
        "0xff",
        "1024-65535",
        "10.0.0.0/8",
        "1.2.3.4",
        "::1",
        "fe80::/10",
        "00:11:22:33:44:55",
        "\"eth0\"",
        "\"17:00\"",
        "\"Monday\"",
        "10s",
        "1m30s",
        "10/second",
        "mbytes/second",
        "counter",
        "packets",
        "bytes",
        "limit",
        "rate",
        "over",
        "burst",
        "quota",
        "used",
        "log",
        "prefix",
        "level",
        "info",
        "reject",
        "with",
        "reset",
        "icmpx",
        "admin-prohibited",
        "synproxy",
        "mss",
        "wscale",
        "timestamp",
        "sack-perm",
        "notrack",
        "vmap",
        "elements",
        "interval",
        "timeout",
        "dynamic",
        "size",
        "comment",
        "\"x\"",
        "add",
        "update",
        "meter",
        "rule",
        "element",
        "flush",
        "ruleset",
        "insert",
        "create",
        "blocklist",
        "pairs",
        "meter4",
        "marks",
        "ports",
        "ipv4_addr",
        "inet_service",
        "verdict",
        "#",
        "echo-request",
        "22:accept",
        "syn/syn,ack",
    ];

    fn soup() -> impl Strategy<Value = String> {
        prop::collection::vec(
            (
                prop::sample::select(VOCAB),
                prop::sample::select(&[" ", " ", "", "\n"][..]),
            ),
            0..60,
        )
        .prop_map(|v| v.into_iter().map(|(t, sep)| format!("{t}{sep}")).collect())
    }

    /// Whatever parses also round-trips; nothing panics.
    fn check(text: &str) {
        if let Ok(first) = parse_ruleset(text) {
            let listing = print_ruleset(&first);
            let second = parse_ruleset(&listing);
            prop_assert_eq_helper(&first, second, text, &listing);
            let _ = ruleset_json(&first);
        }
    }

    fn prop_assert_eq_helper(
        first: &Ruleset,
        second: Result<Ruleset, ParseError>,
        text: &str,
        listing: &str,
    ) {
        match second {
            Ok(second) => assert_eq!(first, &second, "input:\n{text}\nlisting:\n{listing}"),
            Err(e) => panic!("listing does not parse: {e}\ninput:\n{text}\nlisting:\n{listing}"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn random_text_never_panics(text in "\\PC{0,200}") {
            check(&text);
        }

        #[test]
        fn random_ascii_never_panics(text in "[ -~\n\t]{0,300}") {
            check(&text);
        }

        #[test]
        fn token_soup_never_panics(s in soup()) {
            check(&s);
        }

        #[test]
        fn token_soup_in_a_chain_never_panics(s in soup()) {
            check(&skeleton(&s));
        }

        #[test]
        fn single_object_parsers_never_panic_and_rules_round_trip(s in soup(), map in any::<bool>()) {
            use crate::nft::{parse_chain, parse_elements, parse_rule, parse_set, print_rule};
            if let Ok(r) = parse_rule(&s, Family::Inet) {
                let text = print_rule(&r);
                match parse_rule(&text, Family::Inet) {
                    Ok(again) => prop_assert_eq!(&again, &r, "{} -> {}", s, text),
                    Err(e) => prop_assert!(false, "printed rule does not parse: {} ({})", text, e),
                }
            }
            let _ = parse_chain(&s, Family::Inet, "c");
            if let Ok(decl) = parse_set(&s, Family::Inet, "s", map) {
                let _ = parse_elements(&s, Family::Inet, &decl);
            }
            let rs = parse_ruleset(&skeleton("")).unwrap();
            for d in &rs.tables[0].sets {
                let _ = parse_elements(&s, Family::Inet, d);
                let _ = parse_elements(&format!("{{ {s} }}"), Family::Inet, d);
            }
        }

        #[test]
        fn rules_parse_alone_as_in_a_ruleset(
            stmts in prop::collection::vec(prop::sample::select(SNIPPETS), 0..5),
            term in prop::option::of(prop::sample::select(TERMINALS)),
        ) {
            use crate::nft::{check_rule, parse_rule, print_rule};
            let mut line: Vec<&str> = stmts.clone();
            line.extend(term.iter());
            if line.is_empty() {
                line.push("counter");
            }
            let line = line.join(" ");
            let rs = parse_ruleset(&skeleton(&format!("\t\t{line}\n")));
            let alone = parse_rule(&line, Family::Inet);
            if let Ok(rs) = &rs {
                let t = &rs.tables[0];
                let in_file = t.chains.iter().flat_map(|c| &c.rules).last().unwrap();
                let alone = alone.expect("a rule of a valid file parses alone");
                prop_assert_eq!(&alone, in_file);
                prop_assert!(check_rule(&alone, t).is_ok());
                let again = parse_rule(&print_rule(&alone), Family::Inet);
                prop_assert_eq!(again.as_ref(), Ok(&alone));
            }
        }

        #[test]
        fn composed_rules_parse_and_round_trip(
            rules in prop::collection::vec(
                (prop::collection::vec(prop::sample::select(SNIPPETS), 0..5), prop::option::of(prop::sample::select(TERMINALS))),
                1..8,
            )
        ) {
            let mut body = String::new();
            for (stmts, term) in &rules {
                let mut line: Vec<&str> = stmts.clone();
                line.extend(term.iter());
                if line.is_empty() {
                    line.push("counter");
                }
                body.push_str(&format!("\t\t{}\n", line.join(" ")));
            }
            let text = skeleton(&body);
            prop_assert!(parse_ruleset(&text).is_ok(), "{}", text);
            check(&text);
        }
    }
}

#[test]
fn awkward_values_survive_the_listing() {
    for text in [
        "ct state 0x3-0x6",
        "ct state . tcp dport established | related . 22",
        "ct state . tcp dport { established | related . 22 }",
        "tcp flags 0x0 / syn",
        "tcp flags syn,ack / syn,ack,fin",
        "tcp flags & (syn | ack) syn",
        "tcp flags == syn | ack",
        "icmp type echo-reply-echo-request",
        "meta mark << 2 == 0x4",
        "meta day \"Sunday\"-\"Saturday\"",
        "meta time 1700000000",
        "ip saddr 0.0.0.0/0",
        "tcp dport 22-22",
        "ct expiration 0",
        "iifname \"a b#{}\"",
        "ip saddr & 255.255.0.0 == 10.1.0.0",
        "meta mark . ip saddr { 0x1 . 10.0.0.0/8 }",
        "ct label set foo",
        "ct mark == meta mark & 0xff",
        "ct mark == (meta mark | 0x1) & 0x3",
        "meta mark set (meta mark | 0x1) & 0x3",
    ] {
        assert_round_trip(text, &skeleton(text));
    }
}

#[test]
fn hostile_nesting_is_an_error_not_a_crash() {
    let deep = format!("{}meta mark{} 1", "(".repeat(10_000), ")".repeat(10_000));
    assert!(parse_ruleset(&skeleton(&deep))
        .unwrap_err()
        .message
        .contains("nested too deeply"));
    let slashes = format!("tcp flags syn{}", "/".repeat(100_000));
    assert!(parse_ruleset(&skeleton(&slashes)).is_err());
    let colons = format!("tcp dport vmap {{ 1-2{}accept }}", ":".repeat(100_000));
    assert!(parse_ruleset(&skeleton(&colons)).is_err());
    let dashes = format!("tcp dport 1{}", "-".repeat(100_000));
    assert!(parse_ruleset(&skeleton(&dashes)).is_err());
}

#[test]
fn repeated_blocks_merge() {
    let rs = parse_ruleset(
        "table ip t { chain c { type filter hook input priority 0; } }\n\
         table ip t { chain c { policy drop; accept } }\n\
         table ip t { set s { type ipv4_addr; elements = { 1.1.1.1 } } }\n\
         table ip t { set s { type ipv4_addr; elements = { 2.2.2.2 } } }\n",
    )
    .unwrap();
    let t = &rs.tables[0];
    assert_eq!(t.chains[0].base.as_ref().map(|b| b.policy), Some(Policy::Drop));
    assert_eq!(t.chains[0].rules.len(), 1);
    assert_eq!(t.sets[0].elements.len(), 2);
    let e =
        parse_ruleset("table ip t { set s { type ipv4_addr; } }\ntable ip t { set s { type ipv6_addr; } }")
            .unwrap_err();
    assert_eq!((e.line, e.col), (2, 18), "{e}");
}

#[test]
fn new_header_fields() {
    let ip = |f| Expr::Payload(Payload::Ip(f));
    let ip6 = |f| Expr::Payload(Payload::Ip6(f));
    // ECN names: not-ect 0, ect1 1, ect0 2, ce 3; numbers list by name.
    assert_eq!(one_match("ip ecn ce").left, ip(IpField::Ecn));
    assert_eq!(one_match("ip ecn ce").right, int(3));
    assert_eq!(one_match("ip ecn not-ect").right, int(0));
    assert_eq!(one_match("ip ecn ect0"), one_match("ip ecn 2"));
    assert_eq!(one_match("ip6 ecn ect1").left, ip6(Ip6Field::Ecn));
    assert_eq!(one_match("ip6 ecn ect1").right, int(1));
    assert_eq!(one_match("ip6 version 6").left, ip6(Ip6Field::Version));
    assert_eq!(one_match("tcp urgptr 7").left, tcp(TcpField::Urgptr));
    assert_eq!(
        one_match("udp checksum 0").left,
        Expr::Payload(Payload::Udp(UdpField::Checksum))
    );
    assert!(parse_ruleset("table ip t { chain c { ip ecn 4 } }").is_err());
    assert!(parse_ruleset("table ip t { chain c { ip ecn ef } }").is_err());
    // Where the fields lie (bit offset, width) and their types.
    assert_eq!(Payload::Ip(IpField::Ecn).layout(), (HeaderBase::Network, 14, 2));
    assert_eq!(Payload::Ip6(Ip6Field::Ecn).layout(), (HeaderBase::Network, 10, 2));
    assert_eq!(
        Payload::Ip6(Ip6Field::Version).layout(),
        (HeaderBase::Network, 0, 4)
    );
    assert_eq!(
        Payload::Tcp(TcpField::Urgptr).layout(),
        (HeaderBase::Transport, 144, 16)
    );
    assert_eq!(
        Payload::Udp(UdpField::Checksum).layout(),
        (HeaderBase::Transport, 48, 16)
    );
    assert_eq!(Payload::Ip(IpField::Ecn).data_type(), DataType::Ecn);
    assert_eq!(Payload::Ip6(Ip6Field::Ecn).data_type(), DataType::Ecn);
    // The listing spells them as nft does; `ecn` is also a set type.
    let src = "table inet t {\n\tset e {\n\t\ttype ecn\n\t\telements = { ect1, ce }\n\t}\n\n\tchain c {\n\
               \t\tip ecn 3 ip6 ecn { 0, 2 } tcp urgptr 1 udp checksum 0 ip6 version 6\n\t\tip ecn @e\n\t}\n}\n";
    let rs = assert_round_trip("fields", src);
    assert_eq!(
        print_ruleset(&rs),
        src.replace("ip ecn 3 ip6 ecn { 0, 2 }", "ip ecn ce ip6 ecn { not-ect, ect0 }")
    );
    let j = ruleset_json(&rs);
    assert_eq!(
        j["nftables"][4]["rule"]["expr"][0]["match"],
        serde_json::json!({"op": "==", "left": {"payload": {"protocol": "ip", "field": "ecn"}}, "right": "ce"})
    );
    assert_eq!(
        j["nftables"][4]["rule"]["expr"][2]["match"]["left"],
        serde_json::json!({"payload": {"protocol": "tcp", "field": "urgptr"}})
    );
    assert_eq!(
        j["nftables"][4]["rule"]["expr"][3]["match"]["left"],
        serde_json::json!({"payload": {"protocol": "udp", "field": "checksum"}})
    );
}

#[test]
fn raw_payloads() {
    let m = one_match("@nh,96,32 & 0xffffff00 == 0xc6120000");
    let raw = Expr::Raw {
        base: HeaderBase::Network,
        offset: 96,
        len: 32,
    };
    assert_eq!(
        m,
        Match {
            left: Expr::Bitwise {
                expr: Box::new(raw.clone()),
                op: BitOp::And,
                value: Value::Int(0xffff_ff00),
            },
            op: RelOp::Implicit,
            right: int(0xc612_0000),
        }
    );
    assert_eq!(raw.data_type(), Some(DataType::Integer { bits: 32 }));
    assert_eq!(
        one_match("@ll,96,16 0x0800").left,
        Expr::Raw {
            base: HeaderBase::Link,
            offset: 96,
            len: 16
        }
    );
    assert_eq!(one_match("@ll,96,16 0x0800").right, int(0x800));
    let m = one_match("@th,7,3 5");
    assert_eq!(
        m.left,
        Expr::Raw {
            base: HeaderBase::Transport,
            offset: 7,
            len: 3
        }
    );
    assert_eq!(m.left.data_type(), Some(DataType::Integer { bits: 3 }));
    // Constants are integers of `len` bits: names and wider values are refused.
    assert!(parse_ruleset("table inet t { chain c { @th,7,3 8 } }").is_err());
    assert!(parse_ruleset("table inet t { chain c { @nh,72,8 tcp } }").is_err());
    // A raw payload compares with another expression of its width (levee extension), and a
    // set reference `@name` still parses where a raw payload could start.
    let m = one_match("@th,0,16 == @th,16,16");
    assert!(matches!(m.right, Rhs::Expr(Expr::Raw { offset: 16, .. })));
    assert_eq!(
        one_match("ip saddr @s4").right,
        Rhs::Set(SetRef::Named("s4".into()))
    );
    // Printed as nft does; JSON as libnftables.
    let src = "table inet t {\n\tchain c {\n\t\t@nh,96,32 & 4294967040 == 3323068416 @th,16,16 { 22, 80 } drop\n\t}\n}\n";
    let rs = assert_round_trip("raw", src);
    assert_eq!(print_ruleset(&rs), src);
    let j = ruleset_json(&rs);
    assert_eq!(
        j["nftables"][3]["rule"]["expr"][0]["match"],
        serde_json::json!({"op": "==", "left": {"&": [{"payload": {"base": "nh", "offset": 96, "len": 32}}, 4294967040u64]}, "right": 3323068416u64})
    );
    // Errors: length 0 or above 64 bits, an end beyond the packet model, a missing part.
    for (src, col, needle) in [
        ("table inet t { chain c { @nh,0,0 1 } }", 32, "1 to 64 bits"),
        ("table inet t { chain c { @nh,0,128 1 } }", 32, "1 to 64 bits"),
        (
            "table inet t { chain c { @nh,524279,8 1 } }",
            26,
            "beyond the first 65535 bytes",
        ),
        (
            "table inet t { chain c { @nh,8 1 } }",
            32,
            "',' and the length in bits",
        ),
        (
            "table inet t { chain c { @nh,x,8 1 } }",
            30,
            "a raw payload offset in bits",
        ),
    ] {
        let e = parse_ruleset(src).expect_err(src);
        assert!(e.message.contains(needle), "{src}: {e}");
        assert_eq!((e.line, e.col), (1, col), "{src}: {e}");
    }
}

#[test]
fn log_flags() {
    let log = |text: &str| match stmts_of(text).as_slice() {
        [Stmt::Log(l)] => l.clone(),
        other => panic!("{text}: {other:?}"),
    };
    assert_eq!(log("log flags all").flags, LogFlags::ALL);
    assert_eq!(
        log("log flags tcp sequence,options flags ip options flags skuid flags ether"),
        log("log flags all")
    );
    assert_eq!(
        log("log flags tcp options").flags,
        LogFlags {
            tcp_options: true,
            ..LogFlags::default()
        }
    );
    assert_eq!(
        log("log prefix \"p\" flags tcp sequence level info"),
        Log {
            prefix: Some("p".into()),
            level: LogLevel::Info,
            flags: LogFlags {
                tcp_sequence: true,
                ..LogFlags::default()
            },
        }
    );
    // nft's order on listing: prefix, level, then the flags clauses.
    let src = "table inet t {\n\tchain c {\n\t\tlog flags ether flags ip options level info prefix \"p\"\n\
               \t\tlog flags tcp options,sequence flags ip options flags skuid flags ether\n\
               \t\tlog flags tcp sequence\n\t}\n}\n";
    let rs = assert_round_trip("log flags", src);
    let listing = print_ruleset(&rs);
    assert!(
        listing.contains("\t\tlog prefix \"p\" level info flags ip options flags ether\n"),
        "{listing}"
    );
    assert!(listing.contains("\t\tlog flags all\n"), "{listing}");
    assert!(listing.contains("\t\tlog flags tcp sequence\n"), "{listing}");
    let j = ruleset_json(&rs);
    let expr = |i: usize| j["nftables"][3 + i]["rule"]["expr"][0].clone();
    assert_eq!(
        expr(0),
        serde_json::json!({"log": {"prefix": "p", "level": "info", "flags": ["ip options", "ether"]}})
    );
    assert_eq!(expr(1), serde_json::json!({"log": {"flags": "all"}}));
    assert_eq!(expr(2), serde_json::json!({"log": {"flags": "tcp sequence"}}));
    for (src, col, needle) in [
        ("table inet t { chain c { log flags } }", 36, "a log flag"),
        (
            "table inet t { chain c { log flags tcp } }",
            40,
            "'sequence' or 'options'",
        ),
        (
            "table inet t { chain c { log flags ip } }",
            39,
            "'options' after 'log flags ip'",
        ),
        ("table inet t { chain c { log flags group } }", 36, "a log flag"),
    ] {
        let e = parse_ruleset(src).expect_err(src);
        assert!(e.message.contains(needle), "{src}: {e}");
        assert_eq!((e.line, e.col), (1, col), "{src}: {e}");
    }
}
