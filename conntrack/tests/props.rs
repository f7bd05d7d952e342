//! Property tests: random packet sequences never panic and keep the table's invariants;
//! established flows survive floods of new SYN-only flows; the timer wheel expires every entry
//! eventually and never early.

mod common;

use common::{frame, hosts, Conn, Opts, L4};
use levee_conntrack::{
    CtState, DestroyReason, Direction, DumpFilter, EventKind, HashKey, Outcome, Shard, ShardConfig, Tracked,
};
use levee_packet::ethernet::MacAddr;
use levee_packet::parse::{parse_frame, FlowTuple};
use proptest::prelude::*;

const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);

/// One random action: a packet (from a small space of addresses and ports, so flows collide
/// and reply), a clock step, or a wheel step.
#[derive(Clone, Debug)]
enum Action {
    Packet {
        v6: bool,
        host: u8,
        reverse: bool,
        l4: L4,
        confirm: bool,
    },
    Sleep(u32),
    Expire(u16),
}

fn l4() -> impl Strategy<Value = L4> {
    prop_oneof![
        4 => (0u16..3, any::<u8>(), 0u32..4, 0u32..4, prop::sample::select(vec![0u16, 1, 502, 65535]), 0usize..3, any::<bool>())
            .prop_map(|(p, flags, seq, ack, win, len, ws)| L4::Tcp {
                sp: 40000 + p,
                dp: 80,
                flags,
                seq: [0u32, 1000, 1001, 0x8000_0000][seq as usize],
                ack: [0u32, 5001, 1001, 0xffff_ffff][ack as usize],
                win,
                len: [0usize, 1, 1400][len],
                opts: Opts { ws: ws.then_some(7), sack_perm: ws, ..Opts::default() },
            }),
        2 => (0u16..3).prop_map(|p| L4::Udp { sp: 5000 + p, dp: 53, len: 4 }),
        1 => (prop::sample::select(vec![0u8, 3, 8, 11, 13, 14, 30, 128, 129, 1, 135]), any::<[u8; 4]>(), prop::collection::vec(any::<u8>(), 0..60))
            .prop_map(|(msg_type, rest, data)| L4::Icmp { msg_type, code: 0, rest, data }),
        1 => Just(L4::Raw { proto: 253, data: vec![0; 8] }),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        8 => (any::<bool>(), 0u8..6, any::<bool>(), l4(), prop::bool::weighted(0.9))
            .prop_map(|(v6, host, reverse, l4, confirm)| Action::Packet { v6, host, reverse, l4, confirm }),
        1 => (0u32..200_000).prop_map(Action::Sleep),
        1 => (0u16..64).prop_map(Action::Expire),
    ]
}

/// The frame of a random packet action and its parse (None when the packet cannot be built
/// or parsed: an ICMP type of the other family, a frame `parse_frame` refuses).
fn packet(v6: bool, host: u8, reverse: bool, l4: &L4) -> Option<(Vec<u8>, levee_packet::parse::FrameInfo)> {
    if !icmp_fits(v6, l4) {
        return None;
    }
    let (c, s) = hosts(v6, 0, host);
    let (src, dst) = if reverse { (s, c) } else { (c, s) };
    let f = frame(MAC, MAC, src, dst, l4, 1);
    let info = parse_frame(&f).ok()?;
    Some((f, info))
}

/// The source address of a parsed IP frame, as a tuple holds it.
fn parsed_src(info: &levee_packet::parse::FrameInfo) -> [u8; 16] {
    info.flow_tuple().expect("an IP frame").src_addr
}

fn icmp_fits(v6: bool, l4: &L4) -> bool {
    // ICMP types are per family; an ICMPv6 type in IPv4 is just another ICMP message.
    !matches!(l4, L4::Icmp { msg_type, .. } if v6 && *msg_type < 128 && *msg_type != 1 && *msg_type != 3)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_sequences_keep_invariants(actions in prop::collection::vec(action(), 1..250), cap in 1u32..24, loose in any::<bool>()) {
        let mut sh: Shard = Shard::new(ShardConfig { capacity: cap, loose, early_drop_scan: 4, ..ShardConfig::default() }, HashKey([3, 4])).unwrap();
        let mut now = 1_000_000_000u64;
        for a in actions {
            match a {
                Action::Packet { v6, host, reverse, l4, confirm } => {
                    let Some((f, info)) = packet(v6, host, reverse, &l4) else { continue };
                    match sh.track(&f, &info, now) {
                        Tracked::New(p) if confirm => { let _ = sh.confirm(p, now); }
                        Tracked::Known(i) => {
                            prop_assert!(i.state != CtState::Invalid);
                            if let Some(id) = i.entry {
                                prop_assert!(sh.snapshot(id, now).is_ok());
                                // Flag some flows (as the SYN proxy flags its own): a flagged
                                // flow's packets are never ruled out by the presence filter.
                                if host % 2 == 0 { sh.flag(id).unwrap(); }
                                if sh.is_flagged(id).unwrap() { prop_assert!(sh.may_be_flagged(&f, &info)); }
                            }
                        }
                        _ => {}
                    }
                }
                Action::Sleep(ms) => now += u64::from(ms) * 1_000_000,
                Action::Expire(budget) => { sh.expire(now, u32::from(budget)); }
            }
            prop_assert!(sh.len() <= cap);
            prop_assert!(sh.flagged_len() <= sh.len());
            prop_assert_eq!(sh.recount(), sh.state_counts());
            prop_assert_eq!(sh.state_counts().total(), sh.len());
        }
        // Every flow expired: the presence filter's count of flagged entries went with them.
        for _ in 0..8 {
            now += 6 * 86_400 * 1_000_000_000;
            sh.expire(now, u32::MAX);
        }
        prop_assert_eq!((sh.len(), sh.flagged_len()), (0, 0));
    }

    /// The brief API (`classify`, `info`, `pending_mut`, `confirm_pending`) and the whole one
    /// (`track`, `Pending::set_mark`, `confirm`) on two shards fed the same packets: the same
    /// view for every packet, the same confirm results, the same tables and counters.
    #[test]
    fn brief_and_whole_results_agree(actions in prop::collection::vec(action(), 1..200), cap in 1u32..24, loose in any::<bool>()) {
        let cfg = ShardConfig { capacity: cap, loose, early_drop_scan: 4, ..ShardConfig::default() };
        let mut whole: Shard = Shard::new(cfg, HashKey([5, 6])).unwrap();
        let mut brief: Shard = Shard::new(cfg, HashKey([5, 6])).unwrap();
        let mut now = 1_000_000_000u64;
        for (n, a) in actions.into_iter().enumerate() {
            match a {
                Action::Packet { v6, host, reverse, l4, confirm } => {
                    let Some((f, info)) = packet(v6, host, reverse, &l4) else { continue };
                    let t = whole.track(&f, &info, now);
                    let o = brief.classify(&f, &info, now);
                    prop_assert_eq!(t.state(), o.state());
                    prop_assert_eq!(t.info(), brief.info(o, now), "packet {}: {:?}", n, o);
                    prop_assert_eq!(t.info().entry, o.entry());
                    if let Some(id) = o.entry().filter(|_| o.state() != CtState::Related) {
                        // The view against the entry's own record: direction from its original
                        // tuple (an ICMP error's comes from the packet it quotes), and its
                        // status, mark and expiry.
                        let i = brief.info(o, now);
                        let snap = brief.snapshot(id, now).unwrap();
                        let from_opener = snap.original.src_addr == parsed_src(&info);
                        let want = if from_opener { Direction::Original } else { Direction::Reply };
                        prop_assert_eq!(i.direction, want, "packet {}: {:?}", n, snap);
                        prop_assert_eq!((i.status, i.mark, i.expiration_ms), (snap.status, snap.mark, snap.expires_in_ms));
                    }
                    let mark = n as u32;
                    match (t, o) {
                        (Tracked::New(mut p), Outcome::New) if confirm => {
                            p.set_mark(mark);
                            brief.pending_mut().expect("pending").set_mark(mark);
                            prop_assert_eq!(brief.info(o, now).mark, mark);
                            prop_assert_eq!(whole.confirm(p, now), brief.confirm_pending(now));
                            // Confirmed once: nothing is pending any more.
                            prop_assert!(brief.confirm_pending(now).is_err());
                        }
                        (Tracked::New(_), Outcome::New) => {}
                        (Tracked::New(_), o) => prop_assert!(false, "whole NEW, brief {:?}", o),
                        (_, Outcome::New) => prop_assert!(false, "brief NEW, whole {:?}", t),
                        _ => {}
                    }
                }
                Action::Sleep(ms) => now += u64::from(ms) * 1_000_000,
                Action::Expire(budget) => {
                    prop_assert_eq!(whole.expire(now, u32::from(budget)), brief.expire(now, u32::from(budget)));
                }
            }
            prop_assert_eq!(whole.len(), brief.len());
            prop_assert_eq!(whole.state_counts(), brief.state_counts());
        }
        prop_assert_eq!(whole.counters(), brief.counters());
        let dump = |sh: &Shard| {
            let mut v: Vec<_> = sh.iter(&DumpFilter::default(), now).collect();
            v.sort_by_key(|e| e.id.index());
            v
        };
        prop_assert_eq!(dump(&whole), dump(&brief));
    }

    /// An assured flow is never evicted, however many half-open flows arrive.
    #[test]
    fn established_flows_survive_a_syn_flood(established in 1u8..8, spare in 0u32..4, flood in 1usize..300) {
        let cap = u32::from(established) + spare;
        let mut sh: Shard = Shard::new(ShardConfig { capacity: cap, ..ShardConfig::default() }, HashKey([5, 6])).unwrap();
        let mut now = 1_000_000_000u64;
        let mut tuples = Vec::new();
        for n in 0..established {
            let (c, s) = hosts(false, 0, n);
            let k = Conn { c, s, cp: 40000, sp: 80 };
            for st in k.handshake() {
                let f = frame(MAC, MAC, st.src, st.dst, &st.l4, 1);
                if let Tracked::New(p) = sh.track(&f, &parse_frame(&f).unwrap(), now) {
                    sh.confirm(p, now).unwrap();
                }
            }
            if let (std::net::IpAddr::V4(a), std::net::IpAddr::V4(b)) = (c, s) {
                tuples.push(FlowTuple::v4(a, b, 6, 40000, 80));
            }
        }
        for i in 0..flood {
            now += 1_000_000;
            let (c, s) = hosts(false, 1, (i % 200) as u8);
            let k = Conn { c, s, cp: 1024 + i as u16, sp: 80 };
            let st = &k.handshake()[0];
            let f = frame(MAC, MAC, st.src, st.dst, &st.l4, 1);
            if let Tracked::New(p) = sh.track(&f, &parse_frame(&f).unwrap(), now) {
                let _ = sh.confirm(p, now);
            }
            if i % 16 == 0 { sh.expire(now, 8); }
        }
        for t in &tuples {
            prop_assert!(sh.lookup_tuple(t, now).is_some(), "established flow {:?} evicted", t);
        }
        prop_assert!(sh.len() <= cap);
        if spare == 0 {
            prop_assert_eq!(sh.counters().insert_failed, flood as u64);
        }
    }

    /// Every entry leaves through the wheel at or after its expiry, and none is left once the
    /// clock is past every expiry.
    #[test]
    fn wheel_expires_everything_and_nothing_early(
        flows in prop::collection::vec((0u8..50, 0u32..3_000_000), 1..60),
        budget in 1u32..16,
        step_ms in 1u32..5000,
    ) {
        let (tx, rx) = crossbeam_channel::bounded(10_000);
        let policy = levee_conntrack::TimeoutPolicy { udp_unreplied: Some(7_000), ..Default::default() };
        let mut sh: Shard = Shard::new(ShardConfig { capacity: 64, ..ShardConfig::default() }, HashKey([1, 1])).unwrap();
        let short = sh.add_timeout_policy("short", &policy).unwrap();
        sh.set_event_sender(Some(tx));
        let base = 5_000_000_000u64;
        let mut last_seen = std::collections::HashMap::new();
        let mut ordered = flows.clone();
        ordered.sort_by_key(|f| f.1);
        for (host, at_ms) in ordered {
            let now = base + u64::from(at_ms) * 1_000_000;
            let (c, s) = hosts(false, 0, host);
            let f = frame(MAC, MAC, c, s, &L4::Udp { sp: 7, dp: 7, len: 0 }, 1);
            match sh.track(&f, &parse_frame(&f).unwrap(), now) {
                Tracked::New(mut p) => {
                    if host % 2 == 0 { p.set_timeout_policy(short); }
                    sh.confirm(p, now).unwrap();
                }
                Tracked::Known(_) => {}
                other => prop_assert!(false, "unexpected {:?}", other),
            }
            let lifetime = if host % 2 == 0 { 7_000 } else { 30_000 };
            // One expiry per life of the flow: a packet after the expiry starts a new life.
            let lives: &mut Vec<u64> = last_seen.entry(host).or_default();
            match lives.last_mut() {
                Some(e) if *e > u64::from(at_ms) => *e = u64::from(at_ms) + lifetime,
                _ => lives.push(u64::from(at_ms) + lifetime),
            }
            sh.expire(now, budget);
        }
        let mut now_ms = 0u64;
        while now_ms <= 3_000_000 + 40_000 + u64::from(step_ms) {
            sh.expire(base + now_ms * 1_000_000, budget);
            now_ms += u64::from(step_ms);
        }
        for _ in 0..1000 {
            if sh.is_empty() { break; }
            sh.expire(base + now_ms * 1_000_000, budget);
        }
        prop_assert!(sh.is_empty(), "{} entries left", sh.len());
        let mut next_life = std::collections::HashMap::new();
        for e in rx.try_iter() {
            if e.kind == EventKind::Destroy(DestroyReason::Expired) {
                let host = match e.tuple.src_ip() { std::net::IpAddr::V4(a) => a.octets()[3], _ => unreachable!() };
                let life: &mut usize = next_life.entry(host).or_default();
                let expiry = last_seen[&host][*life];
                *life += 1;
                prop_assert!(e.at_ms - base / 1_000_000 >= expiry, "host {} expired at {} before {}", host, e.at_ms - base / 1_000_000, expiry);
            }
        }
        prop_assert_eq!(sh.iter(&DumpFilter::default(), base + now_ms * 1_000_000).count(), 0);
    }
}
