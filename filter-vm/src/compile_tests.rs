//! The compiler end to end: nft text in, verdicts and counters out.

use crate::{compile_ruleset, CtState, PacketMeta};

fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 14];
    f[12] = 0x08;
    let total = 20 + l4.len();
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let sum = levee_packet::checksum::checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(l4);
    f.resize(f.len().max(60), 0);
    f
}

fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[12] = 0x50;
    t[13] = flags;
    t
}

fn udp(sport: u16, dport: u16) -> Vec<u8> {
    let mut u = vec![0u8; 8];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&8u16.to_be_bytes());
    u
}

fn ipv6_icmp(src: [u8; 16], dst: [u8; 16]) -> Vec<u8> {
    let mut f = vec![0u8; 14];
    f[12] = 0x86;
    f[13] = 0xdd;
    let mut ip = [0u8; 40];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&8u16.to_be_bytes());
    ip[6] = 58;
    ip[7] = 64;
    ip[8..24].copy_from_slice(&src);
    ip[24..40].copy_from_slice(&dst);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&[128, 0, 0, 0, 0, 1, 0, 1]);
    f
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const RULESET: &str = r#"
table inet filter {
  set blk { type ipv4_addr; flags interval; elements = { 198.18.5.0/24, 198.18.9.9 } }
  chain pre {
    type filter hook prerouting priority filter; policy accept;
    ct state established,related accept
    ip saddr @blk counter drop
    tcp dport { 22, 80, 443 } counter accept
    tcp sport == tcp dport counter drop
    tcp flags & (syn|ack) == syn counter
    udp dport 53 limit rate over 2/second burst 1 packets counter drop
    ip6 saddr 2001:2::/48 counter jump six
    counter
  }
  chain six {
    ip6 nexthdr icmpv6 counter accept
    return
  }
}
"#;

fn counts(f: &crate::Filter) -> Vec<u64> {
    f.rule_counters().into_iter().map(|c| c.3).collect()
}

#[test]
fn a_realistic_ruleset_decides_and_counts_like_nft() {
    let mut f = compile_ruleset(RULESET).unwrap_or_else(|e| panic!("{e}"));
    let new = PacketMeta {
        ct_state: CtState::New,
        ..Default::default()
    };
    let est = PacketMeta {
        ct_state: CtState::Established,
        ..Default::default()
    };
    let (cli, srv, bad) = ([198, 18, 0, 1], [198, 18, 0, 2], [198, 18, 5, 7]);
    let mut run = |frame: Vec<u8>, meta: &PacketMeta| f.evaluate("prerouting", &frame, meta);
    assert!(
        run(ipv4(cli, srv, 6, &tcp(4000, 9999, ACK)), &est),
        "established passes first"
    );
    assert!(
        !run(ipv4(bad, srv, 6, &tcp(4000, 22, SYN)), &new),
        "blocklisted prefix"
    );
    assert!(
        !run(ipv4([198, 18, 9, 9], srv, 6, &tcp(4000, 22, SYN)), &new),
        "blocklisted host"
    );
    assert!(run(ipv4(cli, srv, 6, &tcp(4000, 443, SYN)), &new), "allowed port");
    assert!(
        !run(ipv4(cli, srv, 6, &tcp(7777, 7777, SYN)), &new),
        "sport == dport"
    );
    assert!(
        run(ipv4(cli, srv, 6, &tcp(4000, 8080, SYN)), &new),
        "flags rule only counts"
    );
    // UDP 53: burst 1 (the kernel's bucket holds `burst` packets) → one passes in the same
    // instant, then drops.
    let dns: Vec<bool> = (0..5)
        .map(|_| run(ipv4(cli, srv, 17, &udp(5000, 53)), &new))
        .collect();
    assert_eq!(dns, [true, false, false, false, false]);
    let v6src = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let v6dst = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    assert!(run(ipv6_icmp(v6src, v6dst), &new));
    // Rule counters, in declaration order of rules that have one:
    // blk, ports, sport==dport, flags, dns, v6 jump, final counter (pre), icmpv6 (six).
    assert_eq!(counts(&f), [2, 1, 1, 1, 4, 1, 2, 1]);
    let c = f.rule_counters();
    assert_eq!((c[0].0.as_str(), c[0].1.as_str(), c[0].2), ("filter", "pre", 1));
    assert_eq!((c[7].1.as_str(), c[7].2), ("six", 0));
}

#[test]
fn runs_of_blocklist_rules_become_one_lookup_with_the_same_verdicts() {
    let mut text =
        String::from("table ip t {\n chain c {\n  type filter hook prerouting priority 0; policy accept;\n");
    for i in 0..200u32 {
        text += &format!("  ip saddr 198.18.{}.{} drop\n", i / 200, i % 200 + 1);
    }
    text += "  ip saddr 198.19.0.0/16 drop\n  tcp dport 22 counter accept\n }\n}\n";
    let mut f = compile_ruleset(&text).unwrap();
    // 200 host rules + the prefix rule (same field, same verdict) run as one lookup, across
    // the chunks of the chain; then the counter rule.
    assert_eq!(f.compiled.program.chains[0].rules.len(), 202);
    assert_eq!(f.compiled.exec.lowered_rules(0), 2);
    let meta = PacketMeta::default();
    for (src, want) in [
        ([198, 18, 0, 1], false),
        ([198, 18, 0, 200], false),
        ([198, 18, 0, 201], true),
        ([198, 19, 7, 7], false),
        ([198, 20, 0, 1], true),
    ] {
        assert_eq!(
            f.evaluate(
                "prerouting",
                &ipv4(src, [198, 18, 255, 1], 6, &tcp(1, 22, SYN)),
                &meta
            ),
            want,
            "{src:?}"
        );
    }
    // The counter rule kept its own counter and its index (rule 201 of the chain).
    assert_eq!(f.rule_counters(), vec![("t".into(), "c".into(), 201, 2, 80)]);
}

#[test]
fn sub_byte_fields_and_families() {
    let text = r#"
table ip t {
  chain c {
    type filter hook prerouting priority 0; policy accept;
    ip version 4 ip hdrlength 5 counter
    ip dscp 0 counter
    tcp doff 5 counter
    ip ttl 64 ip protocol tcp counter
    ip length 40 counter
    ip6 nexthdr tcp counter
  }
}
table ip6 t6 {
  chain c { type filter hook prerouting priority 0; policy drop; }
}
"#;
    let err = compile_ruleset(text).err();
    // `ip6 …` in an `ip` table cannot match: refused with its position.
    let e = err.expect("ip6 field in an ip table is refused");
    assert_eq!(e.line, 10, "{e}");
    let text = text.replace("    ip6 nexthdr tcp counter\n", "");
    let mut f = compile_ruleset(&text).unwrap();
    let meta = PacketMeta::default();
    assert!(f.evaluate(
        "prerouting",
        &ipv4([198, 18, 0, 1], [198, 18, 0, 2], 6, &tcp(1, 2, SYN)),
        &meta
    ));
    assert_eq!(counts(&f), [1, 1, 1, 1, 1]);
    // The ip6 table's drop policy applies to IPv6 only.
    let v6 = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    assert!(!f.evaluate("prerouting", &ipv6_icmp(v6, v6), &meta));
}

#[test]
fn errors_point_at_line_and_column() {
    let cases = [
        ("table ip t {\n chain c {\n  jump nowhere\n }\n}\n", 3, "nowhere"),
        (
            "table ip t {\n chain c {\n  ip saddr @nope drop\n }\n}\n",
            3,
            "nope",
        ),
        (
            "table ip t {\n chain a { jump b }\n chain b { jump a }\n}\n",
            0,
            "loop",
        ),
    ];
    for (text, line, needle) in cases {
        let e = compile_ruleset(text)
            .err()
            .unwrap_or_else(|| panic!("accepted:\n{text}"));
        assert!(e.to_string().contains(needle), "{e}");
        if line > 0 {
            assert_eq!(e.line, line, "{e}");
            assert!(e.col > 0, "{e}");
        }
    }
}

#[test]
fn meters_vmaps_maps_and_marks() {
    let text = r#"
table inet t {
  set m { type ipv4_addr; size 100; flags dynamic; }
  map marks { type inet_service : mark; elements = { 80 : 0x10, 443 : 0x20 } }
  chain pre {
    type filter hook prerouting priority 0; policy accept;
    meta mark set tcp dport map @marks
    add @m { ip saddr limit rate over 1/second burst 1 packets } counter drop
    tcp dport vmap { 22 : drop, 80 : jump web }
  }
  chain web { counter accept }
}
"#;
    let mut f = compile_ruleset(text).unwrap_or_else(|e| panic!("{e}"));
    let meta = PacketMeta::default();
    let o = f.evaluate_outcome(
        "prerouting",
        &ipv4([198, 18, 0, 1], [198, 18, 0, 2], 6, &tcp(1, 80, SYN)),
        &meta,
    );
    assert_eq!(o.actions.mark, Some(0x10));
    assert_eq!(o.verdict, crate::vm::Verdict::Accept);
    assert!(!f.evaluate(
        "prerouting",
        &ipv4([198, 18, 0, 3], [198, 18, 0, 2], 6, &tcp(1, 22, SYN)),
        &meta
    ));
    // Per-source meter: burst 1 → the second packet from one source in an instant is over.
    let from = |last: u8| ipv4([198, 18, 1, last], [198, 18, 0, 2], 6, &tcp(1, 9, SYN));
    let v: Vec<bool> = (0..3)
        .map(|_| f.evaluate("prerouting", &from(1), &meta))
        .collect();
    assert_eq!(v, [true, false, false]);
    assert!(
        f.evaluate("prerouting", &from(2), &meta),
        "another source has its own bucket"
    );
}

#[test]
fn multi_field_runs_merge_into_a_concatenated_lookup() {
    let mut text =
        String::from("table inet t {\n chain c {\n  type filter hook prerouting priority 0; policy drop;\n");
    for p in 0..100u16 {
        text += &format!(
            "  ip daddr 198.18.255.{} tcp dport {} accept\n",
            1 + p % 2,
            1000 + p
        );
    }
    text += "  ip daddr 198.18.255.1 tcp dport 1-999 accept\n }\n}\n";
    let mut f = compile_ruleset(&text).unwrap();
    assert_eq!(
        f.compiled.exec.lowered_rules(0),
        2,
        "100 exact rules merged (one chunk); the range rule stays"
    );
    let meta = PacketMeta::default();
    let mut go = |dst: u8, port: u16, proto: u8| {
        let l4 = if proto == 6 {
            tcp(5000, port, SYN)
        } else {
            udp(5000, port)
        };
        f.evaluate(
            "prerouting",
            &ipv4([198, 18, 0, 1], [198, 18, 255, dst], proto, &l4),
            &meta,
        )
    };
    assert!(go(1, 1000, 6));
    assert!(go(2, 1001, 6));
    assert!(!go(1, 1001, 6), "port 1001 is only open on .2");
    assert!(!go(1, 1000, 17), "UDP does not match a tcp rule");
    assert!(go(1, 500, 6), "the range rule");
    assert!(!go(3, 1000, 6));
}

#[test]
fn payload_writes_rewrite_the_packet_and_keep_checksums_valid() {
    use levee_packet::checksum::PseudoHeader;
    let text = r#"
table ip t {
  chain c {
    type filter hook prerouting priority 0; policy accept;
    ip ttl set 10 tcp dport set 8080 ip saddr set 198.18.0.9
    ip ttl 10 tcp dport 8080 counter
  }
}
"#;
    let mut f = compile_ruleset(text).unwrap_or_else(|e| panic!("{e}"));
    let mut frame = ipv4([198, 18, 0, 1], [198, 18, 0, 2], 6, &tcp(40000, 22, SYN));
    // Start from valid checksums.
    let ph = PseudoHeader::V4 {
        src: [198, 18, 0, 1].into(),
        dst: [198, 18, 0, 2].into(),
    };
    let sum = levee_packet::tcp::Packet::new_checked(&frame[34..54])
        .unwrap()
        .compute_checksum(&ph);
    frame[50..52].copy_from_slice(&sum.to_be_bytes());
    assert!(f.evaluate_mut("prerouting", &mut frame, &PacketMeta::default()));
    assert_eq!(counts(&f), [1], "the later rule saw the rewritten fields");
    let ip = levee_packet::ipv4::Packet::new_checked(&frame[14..]).unwrap();
    assert_eq!((ip.ttl(), ip.src_addr().octets()), (10, [198, 18, 0, 9]));
    assert!(ip.verify_checksum(), "IPv4 header checksum fixed");
    let seg = levee_packet::tcp::Packet::new_checked(&frame[34..54]).unwrap();
    assert_eq!(seg.dst_port(), 8080);
    let ph = PseudoHeader::V4 {
        src: ip.src_addr(),
        dst: ip.dst_addr(),
    };
    assert!(
        seg.verify_checksum(&ph),
        "TCP checksum fixed, pseudo-header included"
    );
    // Sub-byte fields take constants only; anything else is refused with a position.
    let e = compile_ruleset("table ip t {\n chain c {\n  ip dscp set ip ttl\n }\n}\n")
        .err()
        .unwrap();
    assert_eq!(e.line, 3, "{e}");
}

#[test]
fn sub_byte_writes_keep_the_neighbouring_bits() {
    let text = r#"
table inet t {
  chain c {
    type filter hook prerouting priority 0; policy accept;
    ip dscp set cs1
    ip6 dscp set ef ip6 flowlabel set 0x12345
    ip dscp cs1 ip ecn ce counter
    ip6 dscp ef ip6 flowlabel 0x12345 counter
  }
}
"#;
    let mut f = compile_ruleset(text).unwrap_or_else(|e| panic!("{e}"));
    // IPv4 with ECN CE (the low two bits of the TOS byte) set: the DSCP bits change, ECN stays.
    let mut frame = ipv4([198, 18, 0, 1], [198, 18, 0, 2], 6, &tcp(40000, 22, SYN));
    frame[15] = 0x03;
    let ip = &mut frame[14..34];
    ip[10..12].fill(0);
    let sum = levee_packet::checksum::checksum(ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    assert!(f.evaluate_mut("prerouting", &mut frame, &PacketMeta::default()));
    assert_eq!(frame[15], (8 << 2) | 3, "cs1 is DSCP 8, ECN kept");
    let ip = levee_packet::ipv4::Packet::new_checked(&frame[14..]).unwrap();
    assert!(ip.verify_checksum(), "IPv4 header checksum fixed");
    // IPv6: version 6, traffic class 0x01 (ECN ECT(1)), flow label 0xfffff.
    let mut v6 = ipv6_icmp(
        [0x20, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        [0x20, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
    );
    v6[14..18].copy_from_slice(&[0x60, 0x1f, 0xff, 0xff]);
    assert!(f.evaluate_mut("prerouting", &mut v6, &PacketMeta::default()));
    // Version 6 | DSCP 46 (ef) | ECN 01 | flow label 0x12345.
    let tc = (46u32 << 2) | 1;
    let want = (6u32 << 28) | (tc << 20) | 0x12345;
    assert_eq!(v6[14..18], want.to_be_bytes());
    assert_eq!(counts(&f), [1, 1], "later rules saw the rewritten fields");
}

mod tracked_pass {
    //! `evaluate_tracked_into` (one pass around conntrack) against the two stage calls with
    //! the tracking between them: same verdict, actions, tracking calls and counters.
    use super::*;
    use crate::nft::ast::Hook;
    use crate::vm::{Actions, CtView, Verdict};
    use crate::Stage;
    use proptest::prelude::*;

    fn stmt() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "counter",
            "notrack",
            "meta mark set 7",
            "ct mark set 9",
            "meta mark 7 counter drop",
            "ct mark 9 counter accept",
            "ct state invalid counter",
            "ct state untracked counter drop",
            "ct state established counter accept",
            "ct state new counter",
            "tcp dport 80 counter drop",
            "tcp flags & (syn | ack) == syn notrack",
            "meta l4proto udp meta mark set 3",
            "ip saddr 198.18.0.1 counter accept",
            "ip6 saddr 2001:2::1 counter drop",
            "meta mark 3 ct mark set 4",
            "ct mark 4 counter drop",
        ])
        .prop_map(str::to_owned)
    }

    /// A base chain of this module's statements.
    pub(super) fn chain_of(
        stmt: impl Strategy<Value = String>,
    ) -> impl Strategy<Value = (String, String, i32, Vec<String>)> {
        (
            prop::sample::select(vec!["ip", "ip6", "inet"]),
            prop::sample::select(vec!["prerouting", "forward"]),
            prop::sample::select(vec![-300i32, -250, -200, 0, 10]),
            prop::collection::vec(stmt, 0..4),
        )
            .prop_map(|(f, h, p, r)| (f.to_owned(), h.to_owned(), p, r))
    }

    fn chain() -> impl Strategy<Value = (String, String, i32, Vec<String>)> {
        chain_of(stmt())
    }

    /// One table per chain.
    pub(super) fn ruleset(chains: &[(String, String, i32, Vec<String>)]) -> String {
        let mut s = String::new();
        for (i, (family, hook, prio, rules)) in chains.iter().enumerate() {
            s += &format!(
                "table {family} t{i} {{\n chain c {{\n  type filter hook {hook} priority {prio}; policy accept;\n{}\n }}\n}}\n",
                rules.join("\n")
            );
        }
        s
    }

    fn frame(kind: u8, flags: u8) -> Vec<u8> {
        match kind {
            0 => ipv4([198, 18, 0, 1], [198, 19, 0, 1], 6, &tcp(1234, 80, flags)),
            1 => ipv4([198, 18, 0, 2], [198, 19, 0, 1], 17, &udp(53, 53)),
            _ => {
                let mut f = vec![0u8; 14];
                f[12] = 0x86;
                f[13] = 0xdd;
                let l4 = tcp(1234, 443, flags);
                let mut ip = [0u8; 40];
                ip[0] = 0x60;
                ip[4..6].copy_from_slice(&(l4.len() as u16).to_be_bytes());
                ip[6] = 6;
                ip[7] = 64;
                ip[8..24].copy_from_slice(&"2001:2::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
                ip[24..40].copy_from_slice(&"2001:2::2".parse::<std::net::Ipv6Addr>().unwrap().octets());
                f.extend_from_slice(&ip);
                f.extend_from_slice(&l4);
                f
            }
        }
    }

    /// The tracker both sides use: untracked after `notrack`, else an established flow with a
    /// ct mark that depends on the mark the raw chains set.
    fn track(actions: &Actions, calls: &mut u32) -> CtView {
        *calls += 1;
        if actions.notrack {
            CtView::default()
        } else {
            CtView {
                state: CtView::ESTABLISHED,
                status: 8,
                direction: 0,
                mark: 100 + actions.mark.unwrap_or(0),
                label: 1,
                expiration_ms: 5000,
                zone: 0,
            }
        }
    }

    /// What the raw chains set is what the chains after tracking see, in the same hook and
    /// in later hooks.
    #[test]
    fn raw_chain_changes_reach_later_chains() {
        let text = "table inet t {
 chain raw { type filter hook prerouting priority raw; policy accept; ct mark set 9; meta mark set 7; }
 chain pre { type filter hook prerouting priority 0; policy accept; ct mark 9 meta mark 7 counter; }
 chain fw { type filter hook forward priority 0; policy accept; ct mark 9 meta mark 7 counter drop; }
}";
        let mut f = compile_ruleset(text).unwrap();
        let frame = frame(0, 0x10);
        let info = levee_packet::parse::parse_frame(&frame).ok();
        let meta = PacketMeta {
            ct_state: CtState::Invalid,
            ..Default::default()
        };
        let mut actions = Actions::default();
        let mut calls = 0;
        let v = f.compiled.evaluate_tracked_into(
            &mut f.state,
            &[Hook::Prerouting, Hook::Forward],
            &frame,
            info.as_ref(),
            &meta,
            &mut actions,
            |a| Some(track(a, &mut calls)),
        );
        assert_eq!((v, calls), (Verdict::Drop, 1));
        let counted: Vec<u64> = f
            .compiled
            .rule_counter_totals(&[&f.state.counters])
            .iter()
            .map(|c| c.3)
            .collect();
        assert_eq!(counted, vec![1, 1], "both later chains matched once");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]
        #[test]
        fn one_pass_equals_two_stages(
            chains in prop::collection::vec(chain(), 1..5),
            kind in 0u8..3,
            flags in prop::sample::select(vec![0x02u8, 0x10, 0x12, 0x04]),
        ) {
            let text = ruleset(&chains);
            // Only statements of another family are refused (`ip6 saddr` in an `ip` table).
            let Ok(mut a) = compile_ruleset(&text) else { return Ok(()) };
            let mut b = compile_ruleset(&text).unwrap();
            let f = frame(kind, flags);
            let info = levee_packet::parse::parse_frame(&f).ok();
            let hooks = [Hook::Prerouting, Hook::Forward];
            let meta = PacketMeta { ct_state: CtState::Invalid, ..Default::default() };

            let (mut act_a, mut calls_a) = (Actions::default(), 0);
            let mut verdict_a = a.compiled.evaluate_stage_into(
                &mut a.state, &hooks, &f, info.as_ref(), &meta, &mut act_a, Stage::BeforeConntrack,
            );
            if verdict_a != Verdict::Drop {
                let v = track(&act_a, &mut calls_a);
                let meta2 = PacketMeta {
                    ct_state: match v.state {
                        CtView::ESTABLISHED => CtState::Established,
                        _ => CtState::Untracked,
                    },
                    ct_status: v.status,
                    ct_mark: v.mark,
                    ct_label: v.label,
                    ct_expiration_ms: v.expiration_ms,
                    ..meta
                };
                verdict_a = a.compiled.evaluate_stage_into(
                    &mut a.state, &hooks, &f, info.as_ref(), &meta2, &mut act_a, Stage::AfterConntrack,
                );
            }

            let (mut act_b, mut calls_b) = (Actions::default(), 0);
            let verdict_b = b.compiled.evaluate_tracked_into(
                &mut b.state, &hooks, &f, info.as_ref(), &meta, &mut act_b,
                |act| Some(track(act, &mut calls_b)),
            );
            prop_assert_eq!(verdict_a, verdict_b, "{}", text);
            prop_assert_eq!(act_a, act_b, "{}", text);
            prop_assert_eq!(calls_a, calls_b, "{}", text);
            let ca = a.compiled.rule_counter_totals(&[&a.state.counters]);
            let cb = b.compiled.rule_counter_totals(&[&b.state.counters]);
            prop_assert_eq!(ca, cb, "{}", text);
        }
    }
}

mod outcome_cache {
    //! `evaluate_cached_into` (the outcome cache) against plain evaluation over sequences of
    //! packets: same verdicts, actions, tracking calls and counters (packets and bytes),
    //! whatever the ruleset
    //! (uncacheable ones just run uncached) and whichever packets repeat.
    use super::*;
    use crate::cache::{Probe, VerdictCache, BYPASS};
    use crate::nft::ast::Hook;
    use crate::vm::{Actions, Base, CtKey, CtView, Verdict};
    use crate::Stage;
    use proptest::prelude::*;

    fn stmt() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            // Cacheable: matches, verdicts, actions.
            "tcp dport 80 accept",
            "tcp dport 443 drop",
            "ip daddr 198.19.0.1 notrack",
            "tcp flags & (syn | ack) == syn notrack",
            "ct state invalid,untracked synproxy mss 1460 wscale 7 timestamp sack-perm",
            "ct state established accept",
            "ct state new drop",
            "ct state untracked tcp dport 22 drop",
            "ct mark 105 drop",
            "ct mark 5 accept",
            "meta mark set 7",
            "ct mark set 5",
            "meta mark 7 tcp dport 80 drop",
            "meta l4proto udp drop",
            "ip saddr 198.18.0.0/30 drop",
            "ip6 daddr 2001:2::2 accept",
            "udp dport 53 reject",
            "tcp dport { 22, 80, 8080 } accept",
            "meta iifname \"outside\" tcp dport 8080 drop",
            "meta length 40 drop",
            "tcp sport 1000-1003 drop",
            // Two one-byte fields that share a key word with the TCP flags.
            "ip ttl 63 tcp flags syn drop",
            "ip protocol udp ip ttl 64 accept",
            // Counted: cached, the counters bumped again on each hit.
            "counter",
            "tcp dport 443 counter drop",
            // Not cacheable: the whole ruleset is then evaluated every time.
            "tcp dport 80 limit rate 1/second accept",
        ])
        .prop_map(str::to_owned)
    }

    fn chain() -> impl Strategy<Value = (String, String, i32, Vec<String>)> {
        super::tracked_pass::chain_of(stmt())
    }

    use super::tracked_pass::ruleset;

    /// A packet from a small space (so keys repeat): TCP/UDP over IPv4 or IPv6, a few
    /// sources, ports and flags, sometimes cut short.
    fn packet() -> impl Strategy<Value = Vec<u8>> {
        (
            0u8..4,
            0u8..4,
            0u16..6,
            prop::sample::select(vec![0x02u8, 0x10, 0x12, 0x04]),
            0u8..8,
        )
            .prop_map(|(kind, src, port, flags, cut)| {
                let dport = [22u16, 80, 443, 53, 8080, 9][port as usize];
                let sport = 1000 + u16::from(src);
                let mut f = match kind {
                    0 | 1 => ipv4(
                        [198, 18, 0, src],
                        [198, 19, 0, 1 + kind],
                        6,
                        &tcp(sport, dport, flags),
                    ),
                    2 => ipv4([198, 18, 0, src], [198, 19, 0, 1], 17, &udp(sport, dport)),
                    _ => {
                        let l4 = tcp(sport, dport, flags);
                        let mut f = vec![0u8; 14];
                        f[12] = 0x86;
                        f[13] = 0xdd;
                        let mut ip = [0u8; 40];
                        ip[0] = 0x60;
                        ip[4..6].copy_from_slice(&(l4.len() as u16).to_be_bytes());
                        ip[6] = 6;
                        ip[7] = 64;
                        ip[8..24].copy_from_slice(&[0x20, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, src]);
                        ip[24..40].copy_from_slice(&[0x20, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
                        f.extend_from_slice(&ip);
                        f.extend_from_slice(&l4);
                        f
                    }
                };
                if kind < 3 && cut & 2 == 2 {
                    // TTL 63 instead of 64 (header checksum fixed).
                    f[22] = 63;
                    let c = u16::from_be_bytes([f[24], f[25]]);
                    let c = levee_packet::checksum::update_u16(
                        c,
                        64 << 8 | u16::from(f[23]),
                        63 << 8 | u16::from(f[23]),
                    );
                    f[24..26].copy_from_slice(&c.to_be_bytes());
                }
                if cut == 0 {
                    f.truncate(30);
                }
                f
            })
    }

    /// Conntrack as the worker does it: nothing after `notrack`, else facts that depend on
    /// the packet (so a cached outcome that had consulted them would be wrong for others).
    fn track(frame: &[u8], actions: &Actions, calls: &mut u32) -> Option<CtView> {
        *calls += 1;
        if actions.notrack {
            return None;
        }
        let odd = frame.len() > 35 && frame[35] & 1 == 1;
        Some(CtView {
            state: if odd { CtView::ESTABLISHED } else { CtView::NEW },
            status: 8,
            direction: 0,
            mark: if odd { 105 } else { 5 },
            label: 1,
            expiration_ms: 5000,
            zone: 0,
        })
    }

    fn meta(side: u8) -> PacketMeta {
        meta_with(side, CtState::Invalid)
    }

    fn meta_with(side: u8, ct_state: CtState) -> PacketMeta {
        PacketMeta {
            ct_state,
            // The facts a table would give with it (the rules read the mark too).
            ct_mark: if ct_state == CtState::Established { 105 } else { 5 },
            iifname: if side == 0 { "outside" } else { "inside" }.into(),
            iif: u32::from(side) + 1,
            ..Default::default()
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]
        #[test]
        fn cached_equals_interpreted(
            chains in prop::collection::vec(chain(), 1..4),
            packets in prop::collection::vec((packet(), 0u8..2, 0usize..3), 1..40),
            tracking in any::<bool>(),
        ) {
            let text = ruleset(&chains);
            let Ok(mut a) = compile_ruleset(&text) else { return Ok(()) };
            let mut b = compile_ruleset(&text).unwrap();
            let mut cache = VerdictCache::new(42);
            let hooks = [Hook::Prerouting, Hook::Forward];
            for (f, side, ct) in &packets {
                let info = levee_packet::parse::parse_frame(f).ok();
                // Without tracking the caller's facts are what the rules see (the key holds
                // them); with it, the facts before tracking are always "no entry".
                let ct = if tracking {
                    CtState::Invalid
                } else {
                    [CtState::Invalid, CtState::New, CtState::Established][*ct]
                };
                let m = meta_with(*side, ct);
                let (mut act_a, mut calls_a) = (Actions::default(), 0);
                let verdict_a = if tracking {
                    a.compiled.evaluate_tracked_into(
                        &mut a.state, &hooks, f, info.as_ref(), &m, &mut act_a,
                        |act| track(f, act, &mut calls_a),
                    )
                } else {
                    a.compiled.evaluate_stage_into(
                        &mut a.state, &hooks, f, info.as_ref(), &m, &mut act_a, Stage::All,
                    )
                };
                let (mut act_b, mut calls_b) = (Actions::default(), 0);
                let verdict_b = b.compiled.evaluate_cached_into(
                    &mut cache, *side, &mut b.state, &hooks, f, info.as_ref(), &m, &mut act_b,
                    tracking.then_some(|act: &Actions| track(f, act, &mut calls_b)),
                );
                prop_assert_eq!(verdict_a, verdict_b, "{}", text);
                prop_assert_eq!(act_a, act_b, "{}", text);
                // A hit skips the tracking call only where it was for a notracked packet.
                prop_assert!(calls_b <= calls_a, "{}", text);
            }
            let ca = a.compiled.rule_counter_totals(&[&a.state.counters]);
            let cb = b.compiled.rule_counter_totals(&[&b.state.counters]);
            prop_assert_eq!(ca, cb, "{}", text);
            if b.compiled.cache_plan.is_none() {
                prop_assert_eq!(cache.stats.hits + cache.stats.misses, 0);
            }
        }
    }

    /// Rulesets whose fields fit three key words (small payload fields and `ct state`), and
    /// so are keyed in registers; and some that do not.
    const FAST: [&str; 4] = [
        SYNPROXY,
        "table inet t { chain c { type filter hook prerouting priority 0; policy accept; tcp dport 22 drop; udp dport 53 accept; } }",
        "table inet t { chain c { type filter hook forward priority 0; policy accept; ip ttl 63 tcp flags syn drop; ip protocol udp ip ttl 64 accept; } }",
        "table inet t { chain c { type filter hook prerouting priority 0; policy accept; ip saddr 198.18.0.0/30 ip daddr 198.19.0.1 tcp sport 1000-1003 tcp dport 80 ct state new drop; } }",
    ];
    const NOT_FAST: [&str; 2] = [
        "table inet t { chain c { type filter hook prerouting priority 0; policy accept; ip6 daddr 2001:2::2 accept; } }",
        "table inet t { chain c { type filter hook prerouting priority 0; policy accept; meta mark 7 tcp dport 80 drop; } }",
    ];

    #[test]
    fn which_plans_are_keyed_in_registers() {
        for (texts, fast) in [(&FAST[..], true), (&NOT_FAST[..], false)] {
            for text in texts {
                let plan = compile_ruleset(text)
                    .unwrap()
                    .compiled
                    .cache_plan
                    .expect("cacheable");
                assert_eq!(plan.fast(), fast, "{text}");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// The register-built key is the stored key's first three words (the rest zero), with
        /// the same packet length and the same slot.
        #[test]
        fn register_keys_equal_stored_keys(
            which in 0usize..FAST.len(),
            f in packet(),
            side in 0u8..2,
            ct in 0usize..3,
        ) {
            let plan = compile_ruleset(FAST[which]).unwrap().compiled.cache_plan.unwrap();
            prop_assert!(plan.fast());
            let info = levee_packet::parse::parse_frame(&f).ok();
            let m = meta_with(side, [CtState::Invalid, CtState::New, CtState::Established][ct]);
            let mut key = crate::cache::Key::default();
            let len = plan.key_into(side, &f, info.as_ref(), &m, &mut key);
            let (w, len3) = plan.key3(side, &f, info.as_ref(), &m);
            prop_assert_eq!(crate::cache::Key::from3(w), key);
            prop_assert_eq!(len3, len);
            let mut cache = VerdictCache::new(0x5eed);
            prop_assert!(cache.active(&plan));
            let (general, registers) = cache.slots_of(&key, &w);
            prop_assert_eq!(general, registers);
        }
    }

    /// The previous lookup's slot answers only its own key: once another key takes that slot,
    /// the old key misses there (and in its hashed slot) instead of getting the new outcome.
    #[test]
    fn the_last_slot_shortcut_compares_the_whole_key() {
        let plan = compile_ruleset(FAST[0]).unwrap().compiled.cache_plan.unwrap();
        let mut cache = VerdictCache::new(0x5eed);
        assert!(cache.active(&plan));
        let a = [1u64, 2, 3];
        let ka = crate::cache::Key::from3(a);
        let slot_a = cache.slots_of(&ka, &a).1;
        // Another key in A's slot, found by search (256 slots: a few hundred tries).
        let b = (4u64..)
            .map(|x| [x, 2, 3])
            .find(|b| cache.slots_of(&crate::cache::Key::from3(*b), b).1 == slot_a)
            .unwrap();
        let kb = crate::cache::Key::from3(b);
        let (accept, drop) = (Verdict::Accept, Verdict::Drop);
        assert!(cache.get3(&a).is_none());
        cache.put(&ka, accept, Actions::default(), &[]);
        // Hit twice: through the hashed slot, then through the remembered one.
        assert_eq!(cache.get3(&a).map(|o| o.verdict), Some(accept));
        assert_eq!(cache.get3(&a).map(|o| o.verdict), Some(accept));
        cache.put(&kb, drop, Actions::default(), &[1]);
        assert!(cache.get3(&a).is_none(), "A must not get B's outcome");
        assert_eq!(cache.get3(&b).map(|o| o.verdict), Some(drop));
        assert_eq!(cache.get3(&b).map(|o| o.counted().to_vec()), Some(vec![1]));
        // A key in another slot after B: hashed there, B's slot no longer remembered.
        let c = (b[0] + 1..)
            .map(|x| [x, 2, 3])
            .find(|c| cache.slots_of(&crate::cache::Key::from3(*c), c).1 != slot_a)
            .unwrap();
        assert!(cache.get3(&c).is_none());
        cache.put(&crate::cache::Key::from3(c), accept, Actions::default(), &[]);
        assert_eq!(cache.get3(&c).map(|o| o.verdict), Some(accept));
        assert_eq!(cache.get3(&b).map(|o| o.verdict), Some(drop));
        assert_eq!(cache.stats.hits, 6);
        assert_eq!(cache.stats.misses, 3);
    }

    const SYNPROXY: &str = "table inet t {
 chain raw { type filter hook prerouting priority raw; policy accept; tcp flags & (syn | ack) == syn notrack; }
 chain pre { type filter hook prerouting priority filter; policy accept;
  ip daddr 198.19.0.1 tcp dport 80 ct state invalid,untracked synproxy mss 1460 wscale 7
  ct state invalid drop
 }
}";

    /// The SYN proxy's ruleset reads four fields; a SYN flood from random sources hits the
    /// one outcome after the first SYN, and tracked packets (ACKs) are never cached.
    #[test]
    fn a_syn_flood_is_answered_from_one_entry() {
        let mut f = compile_ruleset(SYNPROXY).unwrap();
        let plan = f.compiled.cache_plan.clone().expect("cacheable");
        let probes: Vec<Probe> = plan.probes().collect();
        assert_eq!(probes.len(), 4, "{probes:?}");
        assert!(probes.contains(&Probe::Ct(CtKey::State)));
        assert!(probes.contains(&Probe::Payload {
            base: Base::Network,
            offset: 16,
            len: 4
        }));
        let mut cache = VerdictCache::new(7);
        let hooks = [Hook::Prerouting];
        let m = meta(0);
        for i in 0..1000u32 {
            let syn = ipv4(
                [198, 18, (i >> 8) as u8, i as u8],
                [198, 19, 0, 1],
                6,
                &tcp(i as u16, 80, 0x02),
            );
            let info = levee_packet::parse::parse_frame(&syn).ok();
            let mut actions = Actions::default();
            let mut calls = 0;
            let v = f.compiled.evaluate_cached_into(
                &mut cache,
                0,
                &mut f.state,
                &hooks,
                &syn,
                info.as_ref(),
                &m,
                &mut actions,
                Some(|a: &Actions| track(&syn, a, &mut calls)),
            );
            assert_eq!(v, Verdict::Drop);
            assert!(actions.notrack);
            assert_eq!(actions.synproxy, Some((1460, 7, false, false)));
            assert_eq!(calls, u32::from(i == 0), "tracking ran only for the first SYN");
        }
        assert_eq!((cache.stats.hits, cache.stats.misses), (999, 1));
        let ack = ipv4([198, 18, 0, 1], [198, 19, 0, 1], 6, &tcp(1, 80, 0x10));
        let info = levee_packet::parse::parse_frame(&ack).ok();
        for _ in 0..3 {
            let (mut actions, mut calls) = (Actions::default(), 0);
            f.compiled.evaluate_cached_into(
                &mut cache,
                0,
                &mut f.state,
                &hooks,
                &ack,
                info.as_ref(),
                &m,
                &mut actions,
                Some(|a: &Actions| track(&ack, a, &mut calls)),
            );
            assert_eq!(calls, 1, "a tracked packet is evaluated every time");
        }
        assert_eq!(cache.stats.hits, 999);
    }

    /// What makes a ruleset uncacheable, and what does not.
    #[test]
    fn impure_rules_turn_the_cache_off() {
        let plan = |rules: &str| {
            let text = format!(
                "table inet t {{ set tm {{ type ipv4_addr; flags timeout; elements = {{ 198.18.0.1 timeout 1h }}; }}
 set st {{ type ipv4_addr; flags timeout; }}
 chain c {{ type filter hook prerouting priority 0; policy accept; {rules} }} }}"
            );
            compile_ruleset(&text)
                .unwrap_or_else(|e| panic!("{rules}: {e}"))
                .compiled
                .cache_plan
                .is_some()
        };
        for pure in [
            "tcp dport 80 drop",
            "ip saddr { 198.18.0.1, 198.18.0.2 } drop",
            "meta mark set 1",
            "ct state established accept",
            // A timeout set with no element that expires answers the same at any time.
            "ip saddr @st drop",
            // Counters are bumped again on each hit.
            "counter",
            "tcp dport 80 counter drop",
        ] {
            assert!(plan(pure), "{pure}");
        }
        // No base chain: nothing is evaluated, so there is nothing to cache.
        for empty in ["", "table inet t { chain c { tcp dport 80 drop; } }"] {
            assert!(
                compile_ruleset(empty).unwrap().compiled.cache_plan.is_none(),
                "{empty}"
            );
        }
        for impure in [
            "limit rate 5/second accept",
            "log prefix \"x\"",
            "meta hour \"10:00\"-\"11:00\" drop",
            "ip saddr @tm drop",
            "tcp dport set 81",
            "quota 10 mbytes drop",
        ] {
            assert!(!plan(impure), "{impure}");
        }
    }

    /// Keys that never repeat (a rule on the source address under a random-source flood):
    /// after a window of misses the worker stops looking for a while.
    #[test]
    fn a_cache_that_does_not_hit_steps_aside() {
        let mut f = compile_ruleset(
            "table ip t { chain c { type filter hook prerouting priority 0; policy accept; ip saddr 198.18.0.0/16 drop; } }",
        )
        .unwrap();
        let mut cache = VerdictCache::new(1);
        let m = meta(0);
        let n = 5000u32;
        for i in 0..n {
            let p = ipv4(
                [198, 19, (i >> 8) as u8, i as u8],
                [198, 19, 0, 1],
                6,
                &tcp(1, 80, 0x10),
            );
            let info = levee_packet::parse::parse_frame(&p).ok();
            let mut actions = Actions::default();
            let v = f.compiled.evaluate_cached_into(
                &mut cache,
                0,
                &mut f.state,
                &[Hook::Prerouting],
                &p,
                info.as_ref(),
                &m,
                &mut actions,
                None::<fn(&Actions) -> Option<CtView>>,
            );
            assert_eq!(v, Verdict::Accept);
        }
        assert_eq!(cache.stats.hits, 0);
        assert_eq!(cache.stats.misses, 1024, "one window of misses");
        assert_eq!(cache.stats.bypassed, u64::from(n) - 1024);
        assert!(u64::from(n) - 1024 < u64::from(BYPASS));
    }

    /// Counters stay exact: a hit bumps what the evaluation it stands for bumped, by the
    /// packet's own length.
    #[test]
    fn hits_count_packets_and_bytes() {
        let mut f = compile_ruleset(
            "table ip t { chain c { type filter hook prerouting priority 0; policy accept; counter; tcp dport 80 counter drop; } }",
        )
        .unwrap();
        let mut cache = VerdictCache::new(5);
        let m = meta(0);
        let mut bytes = 0u64;
        for i in 0..100u32 {
            // Different sources and lengths (options), one outcome.
            let mut seg = tcp(1, 80, 0x10);
            seg.resize(20 + 4 * (i as usize % 3), 1);
            seg[12] = ((seg.len() / 4) as u8) << 4;
            let p = ipv4([198, 18, 0, i as u8], [198, 19, 0, 1], 6, &seg);
            bytes += 20 + seg.len() as u64;
            let info = levee_packet::parse::parse_frame(&p).ok();
            let mut a = Actions::default();
            let v = f.compiled.evaluate_cached_into(
                &mut cache,
                0,
                &mut f.state,
                &[Hook::Prerouting],
                &p,
                info.as_ref(),
                &m,
                &mut a,
                None::<fn(&Actions) -> Option<CtView>>,
            );
            assert_eq!(v, Verdict::Drop);
        }
        assert_eq!(
            cache.stats.misses, 1,
            "lengths and sources are not read by the rules"
        );
        let totals: Vec<(u64, u64)> = f
            .compiled
            .rule_counter_totals(&[&f.state.counters])
            .iter()
            .map(|c| (c.3, c.4))
            .collect();
        assert_eq!(totals, vec![(100, bytes), (100, bytes)]);
    }

    /// A new generation (another plan) starts from an empty cache.
    #[test]
    fn a_new_generation_starts_empty() {
        let mut old = compile_ruleset(
            "table ip t { chain c { type filter hook prerouting priority 0; policy accept; tcp dport 80 drop; } }",
        )
        .unwrap();
        let mut new = compile_ruleset(
            "table ip t { chain c { type filter hook prerouting priority 0; policy accept; tcp dport 80 accept; } }",
        )
        .unwrap();
        let mut cache = VerdictCache::new(3);
        let m = meta(0);
        let p = ipv4([198, 18, 0, 1], [198, 19, 0, 1], 6, &tcp(1, 80, 0x10));
        let info = levee_packet::parse::parse_frame(&p).ok();
        let none = None::<fn(&Actions) -> Option<CtView>>;
        let mut a = Actions::default();
        for _ in 0..2 {
            let v = old.compiled.evaluate_cached_into(
                &mut cache,
                0,
                &mut old.state,
                &[Hook::Prerouting],
                &p,
                info.as_ref(),
                &m,
                &mut a,
                none,
            );
            assert_eq!(v, Verdict::Drop);
        }
        let v = new.compiled.evaluate_cached_into(
            &mut cache,
            0,
            &mut new.state,
            &[Hook::Prerouting],
            &p,
            info.as_ref(),
            &m,
            &mut a,
            none,
        );
        assert_eq!(v, Verdict::Accept);
        assert_eq!((cache.stats.hits, cache.stats.misses), (1, 2));
    }
}

/// `Compiled::reads_ct` says whether any rule (a jump target's too) reads a conntrack fact, and
/// follows rules added and deleted one at a time.
#[test]
fn reads_ct_follows_the_rules_that_read_conntrack() {
    let ct = |body: &str| {
        let text = format!(
            "table inet t {{ chain x {{ }} chain c {{ type filter hook forward priority 0; {body} }} }}"
        );
        compile_ruleset(&text).unwrap().compiled.reads_ct
    };
    assert!(!ct(""));
    assert!(!ct("tcp dport 80 counter accept"));
    assert!(!ct("ct mark set 5 accept"), "writing a mark reads nothing");
    assert!(ct("ct state established accept"));
    assert!(ct("tcp dport 80 ct state new counter accept"));
    assert!(ct("ct mark 5 accept"));
    assert!(ct("ct direction original accept"));
    assert!(ct("ct mark set ct mark or 1 accept"));
    let jump = "table inet t { chain x { ct state new drop } \
                chain c { type filter hook forward priority 0; tcp dport 80 jump x } }";
    assert!(compile_ruleset(jump).unwrap().compiled.reads_ct);

    // Incrementally: a ct rule added to a ruleset without one, then deleted again.
    let base = crate::nft::parse_ruleset(
        "table inet t { chain c { type filter hook forward priority 0; tcp dport 80 accept } }",
    )
    .unwrap();
    let mut img = crate::incremental::Image::new(0);
    img.add_ruleset(base, 1).unwrap();
    assert!(!img.snapshot().unwrap().reads_ct);
    let rule = crate::nft::parse_ruleset(
        "table inet t { chain c { type filter hook forward priority 0; ct state invalid drop } }",
    )
    .unwrap()
    .tables
    .remove(0)
    .chains
    .remove(0)
    .rules
    .remove(0);
    img.insert_rule(
        crate::nft::ast::Family::Inet,
        "t",
        "c",
        crate::incremental::Position::Prepend,
        100,
        rule,
    )
    .unwrap();
    assert!(img.snapshot().unwrap().reads_ct);
    img.delete_rule(100).unwrap();
    assert!(!img.snapshot().unwrap().reads_ct);
}
