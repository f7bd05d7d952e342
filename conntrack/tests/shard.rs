//! Shard behaviour beyond classification: timeouts (Linux's `tcp_timeouts[]`, `udp_timeouts[]`),
//! expiry, eviction at capacity, events, marks, labels, timeout policies, dumps, the SYN-proxy
//! insert and the packets a shard does not track.

mod common;

use std::net::IpAddr;

use common::{frame, hosts, Conn, Opts, ACK, FIN, L4, PSH, RST, SYN};
use crossbeam_channel::bounded;
use levee_conntrack::{
    CtState, DestroyReason, Direction, DumpFilter, EntryError, EventKind, HashKey, InsertError, L4State,
    Outcome, Shard, ShardConfig, TcpEndpoint, TcpState, TimeoutPolicy, Tracked, UntrackedReason,
};
use levee_packet::ethernet::MacAddr;
use levee_packet::parse::{parse_frame, FlowTuple};

const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const SEC: u64 = 1_000_000_000;

fn shard_with(cfg: ShardConfig) -> Shard<u32> {
    Shard::new(cfg, HashKey([7, 9])).unwrap()
}

/// Tracks one step at `now`, confirming NEW packets.
fn send(sh: &mut Shard<u32>, step: &common::Step, now: u64) -> Tracked {
    let f = frame(MAC, MAC, step.src, step.dst, &step.l4, 1);
    let t = sh.track(&f, &parse_frame(&f).unwrap(), now);
    if let Tracked::New(p) = t {
        let _ = sh.confirm(p, now);
    }
    t
}

fn conn(n: u8) -> Conn {
    let (c, s) = hosts(false, 0, n);
    Conn {
        c,
        s,
        cp: 40000,
        sp: 80,
    }
}

fn expires_in(sh: &Shard<u32>, k: &Conn, now: u64) -> u32 {
    let t = FlowTuple::v4(v4(k.c), v4(k.s), 6, k.cp, k.sp);
    let (id, _) = sh.lookup_tuple(&t, now).expect("tracked");
    sh.snapshot(id, now).unwrap().expires_in_ms
}

fn v4(a: IpAddr) -> std::net::Ipv4Addr {
    match a {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => unreachable!(),
    }
}

#[test]
fn tcp_timeouts_follow_tcp_timeouts_table() {
    let mut sh = shard_with(ShardConfig::default());
    let k = conn(1);
    let hs = k.handshake();
    send(&mut sh, &hs[0], SEC);
    // SYN_SENT: 2 minutes.
    assert_eq!(expires_in(&sh, &k, SEC), 120_000);
    // A retransmitted SYN does not renew the timeout (nf_conntrack_tcp_packet, !SEEN_REPLY).
    send(&mut sh, &hs[0], 11 * SEC);
    assert_eq!(expires_in(&sh, &k, 11 * SEC), 110_000);
    send(&mut sh, &hs[1], 12 * SEC);
    assert_eq!(expires_in(&sh, &k, 12 * SEC), 60_000, "SYN_RECV: 60 s");
    send(&mut sh, &hs[2], 13 * SEC);
    assert_eq!(expires_in(&sh, &k, 13 * SEC), 432_000_000, "ESTABLISHED: 5 days");
    // Data in flight: the unacknowledged timeout (5 minutes) applies.
    send(
        &mut sh,
        &k.c(PSH | ACK, 1001, 5001, 502, 10, CtState::Established, ""),
        14 * SEC,
    );
    assert_eq!(expires_in(&sh, &k, 14 * SEC), 300_000);
    send(
        &mut sh,
        &k.s(ACK, 5001, 1011, 509, 0, CtState::Established, ""),
        15 * SEC,
    );
    assert_eq!(expires_in(&sh, &k, 15 * SEC), 432_000_000);
    // RST: CLOSE, 10 s; the wheel removes it after that and not before.
    send(
        &mut sh,
        &k.s(RST, 5001, 0, 0, 0, CtState::Established, ""),
        16 * SEC,
    );
    assert_eq!(expires_in(&sh, &k, 16 * SEC), 10_000);
    assert_eq!(sh.state_counts().tcp_state(TcpState::Close), 1);
    assert_eq!(sh.expire(25 * SEC, 1000).expired, 0);
    assert_eq!(sh.len(), 1);
    let r = sh.expire(27 * SEC, 1000);
    assert_eq!((r.expired, sh.len()), (1, 0));
    assert_eq!(sh.counters().expired, 1);
}

#[test]
fn rst_before_any_reply_deletes_the_entry() {
    let (tx, rx) = bounded(16);
    let mut sh = shard_with(ShardConfig::default());
    sh.set_event_sender(Some(tx));
    let k = conn(2);
    send(&mut sh, &k.handshake()[0], SEC);
    let t = send(
        &mut sh,
        &k.s(RST | ACK, 0, 1001, 0, 0, CtState::Established, ""),
        SEC,
    );
    // nf_ct_kill_acct: the RST is ESTABLISHED (reply) and the entry is gone.
    assert_eq!(t.state(), CtState::Established);
    assert_eq!(t.info().entry, None);
    assert_eq!(sh.len(), 0);
    let kinds: Vec<EventKind> = rx.try_iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::New,
            EventKind::Update,
            EventKind::Destroy(DestroyReason::Reset)
        ]
    );
}

/// The brief API on the same sequence: the SYN's flow waits in the shard with the mark the
/// filter gave it; the RST's outcome says its entry ended, and its view is still the entry's
/// last one (the mark, the reply seen) without a handle.
#[test]
fn brief_outcomes_keep_the_pending_flow_and_the_ended_entry() {
    assert!(
        core::mem::size_of::<Outcome>() <= 8,
        "an outcome no longer fits a register"
    );
    let mut sh = shard_with(ShardConfig::default());
    let k = conn(3);
    let classify = |sh: &mut Shard<u32>, step: &common::Step| {
        let f = frame(MAC, MAC, step.src, step.dst, &step.l4, 1);
        sh.classify(&f, &parse_frame(&f).unwrap(), SEC)
    };
    let o = classify(&mut sh, &k.handshake()[0]);
    assert_eq!(o, Outcome::New);
    assert_eq!(sh.info(o, SEC).mark, 0);
    sh.pending_mut()
        .expect("a NEW packet leaves its flow pending")
        .set_mark(77);
    assert_eq!(sh.info(o, SEC).mark, 77);
    let id = sh.confirm_pending(SEC).unwrap();
    assert_eq!(sh.confirm_pending(SEC), Err(InsertError::NothingPending));
    let o = classify(&mut sh, &k.s(RST | ACK, 0, 1001, 0, 0, CtState::Established, ""));
    assert_eq!(
        o,
        Outcome::Ended {
            state: CtState::Established,
            direction: Direction::Reply
        }
    );
    assert_eq!(sh.len(), 0);
    assert!(sh.snapshot(id, SEC).is_err());
    let info = sh.info(o, SEC);
    assert_eq!(
        (info.state, info.mark, info.entry),
        (CtState::Established, 77, None)
    );
    assert_ne!(info.status & levee_conntrack::status::SEEN_REPLY, 0);
}

#[test]
fn udp_becomes_a_stream_after_two_seconds() {
    let mut sh = shard_with(ShardConfig::default());
    let (c, s) = hosts(false, 0, 3);
    let out = common::Step {
        side: common::Side::Client,
        src: c,
        dst: s,
        l4: L4::Udp {
            sp: 5000,
            dp: 53,
            len: 4,
        },
        expect: CtState::New,
        why: "",
    };
    let back = common::Step {
        src: s,
        dst: c,
        l4: L4::Udp {
            sp: 53,
            dp: 5000,
            len: 4,
        },
        ..out.clone()
    };
    send(&mut sh, &out, SEC);
    send(&mut sh, &back, SEC + 1);
    let snap = sh.iter(&DumpFilter::default(), SEC + 1).next().unwrap();
    assert_eq!(snap.status & levee_conntrack::status::ASSURED, 0);
    assert_eq!(snap.expires_in_ms, 30_000, "replied but young: UDP_CT_UNREPLIED");
    assert_eq!(sh.state_counts().udp_replied, 1);
    // nf_conntrack_udp_packet: still active after stream_ts (2 s): ASSURED, 120 s.
    send(&mut sh, &out, 4 * SEC);
    let snap = sh.iter(&DumpFilter::default(), 4 * SEC).next().unwrap();
    assert_ne!(snap.status & levee_conntrack::status::ASSURED, 0);
    assert_eq!(snap.expires_in_ms, 120_000);
    assert_eq!(sh.state_counts().udp_assured, 1);
}

/// At capacity, a not-assured entry is evicted (the one closest to expiry); assured flows never.
#[test]
fn eviction_spares_assured_flows() {
    let mut sh = shard_with(ShardConfig {
        capacity: 4,
        ..ShardConfig::default()
    });
    for n in 10..13 {
        for s in conn(n).handshake() {
            send(&mut sh, &s, SEC);
        }
    }
    // One half-open flow, then a younger one: the older (closer to expiry) goes.
    send(&mut sh, &conn(20).handshake()[0], SEC);
    send(&mut sh, &conn(21).handshake()[0], 2 * SEC);
    assert_eq!(sh.counters().early_drop, 1);
    assert_eq!(sh.len(), 4);
    let syn_sent = DumpFilter {
        state: Some(L4State::Tcp(TcpState::SynSent)),
        ..DumpFilter::default()
    };
    let left: Vec<_> = sh.iter(&syn_sent, 2 * SEC).collect();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].original.src_port, 40000);
    assert_eq!(left[0].original.src_ip(), conn(21).c);
    // Make that one assured too: now nothing can be evicted and new flows are refused.
    let k = conn(21);
    send(&mut sh, &k.handshake()[1], 2 * SEC);
    send(&mut sh, &k.handshake()[2], 2 * SEC);
    let f = frame(MAC, MAC, conn(22).c, conn(22).s, &conn(22).handshake()[0].l4, 1);
    let Tracked::New(p) = sh.track(&f, &parse_frame(&f).unwrap(), 3 * SEC) else {
        panic!("SYN is NEW");
    };
    assert!(matches!(
        sh.confirm(p, 3 * SEC),
        Err(InsertError::TableFull { capacity: 4, .. })
    ));
    assert_eq!(sh.counters().insert_failed, 1);
    assert_eq!(sh.state_counts().tcp_state(TcpState::Established), 4);
}

#[test]
fn events_are_dropped_and_counted_when_the_channel_is_full() {
    let (tx, rx) = bounded(2);
    let mut sh = shard_with(ShardConfig::default());
    sh.set_event_sender(Some(tx));
    for s in conn(30).handshake() {
        send(&mut sh, &s, SEC);
    }
    // NEW, UPDATE (SYN_RECV + reply), UPDATE (ESTABLISHED, assured): two fit.
    let c = sh.counters();
    assert_eq!((c.events_sent, c.events_dropped), (2, 1));
    assert_eq!(rx.try_recv().unwrap().kind, EventKind::New);
    let e = rx.try_recv().unwrap();
    assert_eq!(
        (e.kind, e.l4),
        (EventKind::Update, L4State::Tcp(TcpState::SynRecv))
    );

    let (tx, rx) = bounded(64);
    let mut sampled = shard_with(ShardConfig {
        event_sample: 2,
        ..ShardConfig::default()
    });
    sampled.set_event_sender(Some(tx));
    for s in conn(31).handshake() {
        send(&mut sampled, &s, SEC);
    }
    assert_eq!(rx.try_iter().count(), 1);
    assert_eq!(sampled.counters().events_sampled_out, 2);
}

#[test]
fn mark_label_and_policy_apply_to_the_flow() {
    let mut sh = shard_with(ShardConfig {
        labels: true,
        ..ShardConfig::default()
    });
    let short = sh
        .add_timeout_policy(
            "short",
            &TimeoutPolicy {
                tcp_syn_sent: Some(5_000),
                tcp_established: Some(60_000),
                ..TimeoutPolicy::default()
            },
        )
        .unwrap();
    assert_eq!(sh.timeout_policy("short"), Some(short));
    let k = conn(40);
    let hs = k.handshake();
    let f = frame(MAC, MAC, k.c, k.s, &hs[0].l4, 1);
    let Tracked::New(mut p) = sh.track(&f, &parse_frame(&f).unwrap(), SEC) else {
        panic!("NEW");
    };
    // ct mark set / ct label set / ct timeout set on the NEW packet, before confirmation.
    p.set_mark(0x42);
    p.set_label(1 << 100);
    p.set_timeout_policy(short);
    let id = sh.confirm(p, SEC).unwrap();
    assert_eq!(sh.snapshot(id, SEC).unwrap().expires_in_ms, 5_000);
    let t = send(&mut sh, &hs[1], SEC);
    let info = t.info();
    assert_eq!((info.mark, info.label, info.entry), (0x42, 1 << 100, Some(id)));
    send(&mut sh, &hs[2], SEC);
    assert_eq!(sh.snapshot(id, SEC).unwrap().expires_in_ms, 60_000);
    sh.set_mark(id, 7).unwrap();
    *sh.ext_mut(id).unwrap() = 99;
    let t = send(
        &mut sh,
        &k.c(ACK, 1001, 5001, 502, 0, CtState::Established, ""),
        SEC,
    );
    assert_eq!(t.info().mark, 7);
    assert_eq!(*sh.ext(id).unwrap(), 99);
    let filtered: Vec<_> = sh
        .iter(
            &DumpFilter {
                mark: Some((7, 0xff)),
                ..DumpFilter::default()
            },
            SEC,
        )
        .collect();
    assert_eq!(filtered.len(), 1);

    let mut plain = shard_with(ShardConfig::default());
    let id = {
        let f = frame(MAC, MAC, k.c, k.s, &hs[0].l4, 1);
        let Tracked::New(p) = plain.track(&f, &parse_frame(&f).unwrap(), SEC) else {
            panic!("NEW");
        };
        plain.confirm(p, SEC).unwrap()
    };
    assert_eq!(
        plain.set_label(id, 3),
        Err(EntryError::LabelsDisabled { label: 3 })
    );
    plain.remove(id, SEC).unwrap();
    assert_eq!(
        plain.set_mark(id, 1),
        Err(EntryError::NoEntry { index: id.index() })
    );
}

#[test]
fn synproxy_insert_starts_established() {
    let mut sh = shard_with(ShardConfig {
        loose: false,
        ..ShardConfig::default()
    });
    let k = conn(50);
    let orig = FlowTuple::v4(v4(k.c), v4(k.s), 6, k.cp, k.sp);
    let client = TcpEndpoint {
        isn: 1000,
        window: 502,
        wscale: Some(7),
        sack_perm: true,
    };
    let cookie = TcpEndpoint {
        isn: 5000,
        window: 509,
        wscale: Some(7),
        sack_perm: true,
    };
    let id = sh.insert_tcp(&orig, &client, &cookie, true, 0xabcd, SEC).unwrap();
    assert_eq!(*sh.ext(id).unwrap(), 0xabcd);
    let snap = sh.snapshot(id, SEC).unwrap();
    assert_eq!(snap.l4, L4State::Tcp(TcpState::Established));
    assert_eq!(snap.original, orig);
    // Both ends carry on in window, with scaled windows.
    let steps = [
        k.c(PSH | ACK, 1001, 5001, 502, 1000, CtState::Established, ""),
        k.s(PSH | ACK, 5001, 2001, 509, 30_000, CtState::Established, ""),
        k.c(ACK, 2001, 35_001, 502, 0, CtState::Established, ""),
        k.s(PSH | ACK, 5001 + 200_000, 2001, 509, 10, CtState::Invalid, ""),
        k.c(FIN | ACK, 2001, 35_001, 502, 0, CtState::Established, ""),
    ];
    for s in &steps {
        let t = send(&mut sh, s, SEC);
        assert_eq!(t.state(), s.expect, "{:?}", s.l4);
        if s.expect == CtState::Established {
            assert_eq!(t.info().entry, Some(id));
        }
    }
    assert!(matches!(
        sh.insert_tcp(&orig, &client, &cookie, true, 0, SEC),
        Err(InsertError::Exists { .. })
    ));
}

#[test]
fn fragments_and_non_ip_are_untracked() {
    let mut sh = shard_with(ShardConfig::default());
    let k = conn(60);
    let mut f = frame(MAC, MAC, k.c, k.s, &k.handshake()[0].l4, 1);
    // More-fragments bit: a first fragment.
    f[20] |= 0x20;
    let sum = levee_packet::checksum::checksum(&{
        let mut h = f[14..34].to_vec();
        h[10] = 0;
        h[11] = 0;
        h
    });
    f[24..26].copy_from_slice(&sum.to_be_bytes());
    let t = sh.track(&f, &parse_frame(&f).unwrap(), SEC);
    assert_eq!(t, Tracked::Untracked(UntrackedReason::Fragment));
    let mut arp = f.clone();
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    let t = sh.track(&arp, &parse_frame(&arp).unwrap(), SEC);
    assert_eq!(t, Tracked::Untracked(UntrackedReason::NotIp));
    assert_eq!(sh.counters().untracked, 2);
}

#[test]
fn icmpv6_redirect_quoting_a_flow_is_related_only_from_link_local() {
    let mut sh = shard_with(ShardConfig::default());
    let (c, s) = hosts(true, 0, 70);
    let udp = L4::Udp {
        sp: 9000,
        dp: 9001,
        len: 8,
    };
    let f = frame(MAC, MAC, c, s, &udp, 1);
    if let Tracked::New(p) = sh.track(&f, &parse_frame(&f).unwrap(), SEC) {
        sh.confirm(p, SEC).unwrap();
    }
    let (proto, body) = common::l4_bytes(c, s, &udp);
    let quoted = common::ip_packet(c, s, proto, &body, 0);
    // nf_conntrack_icmpv6_redirect: target (16) and destination (16), then the
    // redirected-header option (type 4, length in 8-byte units, 6 reserved bytes).
    let mut data = vec![0u8; 32];
    let units = (8 + quoted.len()).div_ceil(8);
    data.extend_from_slice(&[4, units as u8, 0, 0, 0, 0, 0, 0]);
    data.extend_from_slice(&quoted);
    data.resize(32 + units * 8, 0);
    let redirect = L4::Icmp {
        msg_type: 137,
        code: 0,
        rest: [0; 4],
        data,
    };
    let router: IpAddr = "fe80::1".parse().unwrap();
    let mut f = frame(MAC, MAC, router, c, &redirect, 1);
    f[14 + 7] = 255; // hop limit
    let t = sh.track(&f, &parse_frame(&f).unwrap(), SEC);
    assert_eq!(t.state(), CtState::Related);
    let global: IpAddr = "2001:2:0:20::1".parse().unwrap();
    let mut f = frame(MAC, MAC, global, c, &redirect, 1);
    f[14 + 7] = 255;
    assert_eq!(
        sh.track(&f, &parse_frame(&f).unwrap(), SEC).state(),
        CtState::Invalid
    );
}

#[test]
fn dumps_filter_and_batch_without_repeats() {
    let mut sh = shard_with(ShardConfig::default());
    for n in 0..40u8 {
        let k = Conn {
            cp: 30000 + u16::from(n),
            ..conn(80 + n % 4)
        };
        send(
            &mut sh,
            &k.co(SYN, 1, 0, 1000, 0, Opts::default(), CtState::New, ""),
            SEC,
        );
    }
    let all = DumpFilter::default();
    assert_eq!(sh.iter(&all, SEC).count(), 40);
    let by_port = DumpFilter {
        port: Some(30007),
        ..DumpFilter::default()
    };
    assert_eq!(sh.iter(&by_port, SEC).count(), 1);
    let by_addr = DumpFilter {
        addr: Some(conn(81).c),
        ..DumpFilter::default()
    };
    assert_eq!(sh.iter(&by_addr, SEC).count(), 10);
    let udp_only = DumpFilter {
        protocol: Some(17),
        ..DumpFilter::default()
    };
    assert_eq!(sh.iter(&udp_only, SEC).count(), 0);
    let mut out = Vec::new();
    let mut cursor = Some(0);
    let mut calls = 0;
    while let Some(c) = cursor {
        cursor = sh.dump_batch(c, &all, 7, SEC, &mut out);
        calls += 1;
    }
    assert_eq!(out.len(), 40);
    assert!(calls >= 6);
    let mut ids: Vec<_> = out.iter().map(|s| s.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 40);
    assert_eq!(sh.state_counts().total(), 40);
}

#[test]
fn fin_reopen_and_bad_config() {
    assert!(Shard::<()>::new(
        ShardConfig {
            capacity: 0,
            ..ShardConfig::default()
        },
        HashKey::default()
    )
    .is_err());
    let err = Shard::<()>::new(
        ShardConfig {
            timeouts: levee_conntrack::Timeouts {
                icmp: 0,
                ..levee_conntrack::Timeouts::LINUX
            },
            ..ShardConfig::default()
        },
        HashKey::default(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "conntrack timeout icmp of 0 ms is outside 1..=1728000000 ms"
    );
}

/// The presence filter of flagged entries: no false negatives in either direction, IPv4 and
/// IPv6, and an entry leaves it when it is removed (or reopened, expired: every removal goes
/// through one place).
#[test]
fn flagged_entries_are_found_in_both_directions_until_removed() {
    let mut sh = shard_with(ShardConfig {
        capacity: 4096,
        ..ShardConfig::default()
    });
    let probe = |sh: &Shard<u32>, step: &common::Step| {
        let f = frame(MAC, MAC, step.src, step.dst, &step.l4, 1);
        sh.may_be_flagged(&f, &parse_frame(&f).unwrap())
    };
    let mut ids = Vec::new();
    let mut conns = Vec::new();
    for v6 in [false, true] {
        for n in 0..200u8 {
            let (c, s) = hosts(v6, 1, n);
            let k = Conn {
                c,
                s,
                cp: 40000 + u16::from(n),
                sp: 80,
            };
            for st in k.handshake() {
                send(&mut sh, &st, SEC);
            }
            let syn = k.c(SYN, 1, 0, 1000, 0, CtState::New, "");
            let f = frame(MAC, MAC, syn.src, syn.dst, &syn.l4, 1);
            let t = parse_frame(&f).unwrap().flow_tuple().expect("tuple");
            let (id, _) = sh.lookup_tuple(&t, SEC).expect("tracked");
            conns.push(k);
            ids.push(id);
        }
    }
    // Nothing flagged: always "no", without a lookup.
    assert!(conns
        .iter()
        .all(|k| !probe(&sh, &k.c(ACK, 5, 5, 100, 0, CtState::Established, ""))));
    for (i, id) in ids.iter().enumerate() {
        if i % 2 == 0 {
            sh.flag(*id).unwrap();
            sh.flag(*id).unwrap();
        }
    }
    assert_eq!(sh.flagged_len(), 200);
    let mut false_pos = 0;
    for (i, (k, id)) in conns.iter().zip(&ids).enumerate() {
        let c = probe(&sh, &k.c(ACK, 5, 5, 100, 0, CtState::Established, ""));
        let s = probe(&sh, &k.s(ACK, 5, 5, 100, 0, CtState::Established, ""));
        assert_eq!(c, s, "both directions probe the same counter");
        if i % 2 == 0 {
            assert!(c, "a flagged flow is never ruled out");
            assert!(sh.is_flagged(*id).unwrap());
        } else {
            false_pos += usize::from(c);
            assert!(!sh.is_flagged(*id).unwrap());
        }
    }
    // 200 keys in 16k counters: a handful of collisions at most.
    assert!(false_pos < 20, "{false_pos} false positives");
    for (i, id) in ids.iter().enumerate() {
        if i % 2 == 0 {
            sh.remove(*id, SEC).unwrap();
        }
    }
    assert_eq!(sh.flagged_len(), 0);
    assert!(conns
        .iter()
        .all(|k| !probe(&sh, &k.c(ACK, 5, 5, 100, 0, CtState::Established, ""))));
    assert!(sh.flag(ids[0]).is_err(), "a removed entry cannot be flagged");
}
