//! The burst path classifies exactly like packet-at-a-time tracking: the scenario corpus in
//! bursts still gets Linux's answers, and random packet sequences (several packets of one flow
//! in a burst, confirms, wheel steps and mark changes between the packets of a prepared burst,
//! bursts prepared for other packets) give two shards, one driven by `track` and one by
//! `prepare` + `track_prepared` or `track_burst`, the same results, counters, events and
//! entries; `lookup_prepared` finds what `lookup_tuple` finds.

mod common;

use common::{corpus, frame, hosts, random_tcp, shard, Conn, Opts, Step, L4};
use common::{ACK, FIN, PSH, RST, SYN};
use crossbeam_channel::{unbounded, Receiver};
use levee_conntrack::{Burst, CtState, DumpFilter, Event, HashKey, Shard, ShardConfig, Tracked, BURST_MAX};
use levee_packet::ethernet::MacAddr;
use levee_packet::parse::{parse_frame, FrameInfo};
use proptest::prelude::*;

const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);

fn frames_of(steps: &[Step], first_ident: u32) -> Vec<(Vec<u8>, FrameInfo)> {
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let f = frame(MAC, MAC, s.src, s.dst, &s.l4, first_ident + i as u32);
            let info = parse_frame(&f).expect("scenario frames parse");
            (f, info)
        })
        .collect()
}

/// Replays steps in bursts of `sizes` (cycled), the way a worker does: prepare a burst, then
/// per packet `track_prepared`, and `confirm` at once when it is NEW. 1 ms a packet.
fn replay_in_bursts(sh: &mut Shard, steps: &[Step], sizes: &[usize], t0_ns: u64) -> Vec<CtState> {
    let frames = frames_of(steps, 1);
    let mut burst = Burst::new();
    let mut out = Vec::new();
    let mut at = 0;
    for &size in sizes.iter().cycle() {
        if at >= frames.len() {
            break;
        }
        let chunk = &frames[at..(at + size).min(frames.len())];
        sh.prepare(&mut burst, chunk.iter().map(|(f, info)| Some((&f[..], info))));
        for (i, (f, info)) in chunk.iter().enumerate() {
            let now = t0_ns + (at + i) as u64 * 1_000_000;
            out.push(match sh.track_prepared(&burst, i, f, info, now) {
                Tracked::New(p) => {
                    sh.confirm(p, now).expect("room for the scenario");
                    CtState::New
                }
                t => t.state(),
            });
        }
        at += chunk.len();
    }
    out
}

#[test]
fn corpus_in_bursts_matches_linux_expectations() {
    for loose in [false, true] {
        for sizes in [&[BURST_MAX][..], &[3, 1, 7, 2], &[2]] {
            for sc in corpus(loose, 0) {
                let mut sh = shard(loose);
                let got = replay_in_bursts(&mut sh, &sc.steps, sizes, 1_000_000_000);
                let want: Vec<CtState> = sc.steps.iter().map(|s| s.expect).collect();
                assert_eq!(got, want, "{} (loose={loose}, bursts {sizes:?})", sc.name);
                assert_eq!(sh.recount(), sh.state_counts(), "{}", sc.name);
            }
        }
    }
}

/// Two shards, one tracked packet by packet and one in bursts, compared after every step.
struct Pair {
    one: Shard,
    many: Shard,
    events: [Receiver<Event>; 2],
    burst: Burst,
}

impl Pair {
    fn new(cfg: ShardConfig) -> Pair {
        let mut one = Shard::new(cfg, HashKey([11, 12])).unwrap();
        let mut many = Shard::new(cfg, HashKey([11, 12])).unwrap();
        let (t1, r1) = unbounded();
        let (t2, r2) = unbounded();
        one.set_event_sender(Some(t1));
        many.set_event_sender(Some(t2));
        Pair {
            one,
            many,
            events: [r1, r2],
            burst: Burst::new(),
        }
    }

    fn same(&self, now: u64) -> Result<(), TestCaseError> {
        prop_assert_eq!(self.one.counters(), self.many.counters());
        prop_assert_eq!(self.one.state_counts(), self.many.state_counts());
        prop_assert_eq!(self.many.recount(), self.many.state_counts());
        let a: Vec<Event> = self.events[0].try_iter().collect();
        let b: Vec<Event> = self.events[1].try_iter().collect();
        prop_assert_eq!(a, b);
        let f = DumpFilter::default();
        let a: Vec<_> = self.one.iter(&f, now).collect();
        let b: Vec<_> = self.many.iter(&f, now).collect();
        prop_assert_eq!(a, b);
        Ok(())
    }
}

/// Random deterministic replays of the differential test's TCP conversations (with ICMP
/// errors quoting them), interleaved, in bursts of random sizes: `track_burst` against
/// `track`, confirming the NEW ones after each burst.
#[test]
fn random_conversations_in_bursts_match_packet_at_a_time() {
    for seed in 1..=6u64 {
        let mut steps: Vec<Step> = Vec::new();
        let scenarios = random_tcp(seed * 7919, 0, 24, 30);
        let mut cursors = vec![0usize; scenarios.len()];
        let mut rng = common::Rng(seed);
        // Interleave the conversations so one burst mixes flows and repeats some.
        while cursors.iter().zip(&scenarios).any(|(c, s)| *c < s.steps.len()) {
            let k = rng.below(scenarios.len() as u64) as usize;
            let take = 1 + rng.below(4) as usize;
            for _ in 0..take {
                if let Some(s) = scenarios[k].steps.get(cursors[k]) {
                    steps.push(s.clone());
                    cursors[k] += 1;
                }
            }
        }
        let frames = frames_of(&steps, 1);
        let mut pair = Pair::new(ShardConfig {
            capacity: 64,
            ..ShardConfig::default()
        });
        let mut at = 0;
        let mut now = 1_000_000_000u64;
        let mut out = Vec::new();
        while at < frames.len() {
            let n = (1 + rng.below(2 * BURST_MAX as u64) as usize).min(frames.len() - at);
            let chunk = &frames[at..at + n];
            let refs: Vec<(&[u8], &FrameInfo)> = chunk.iter().map(|(f, i)| (&f[..], i)).collect();
            let one: Vec<Tracked> = refs.iter().map(|(f, i)| pair.one.track(f, i, now)).collect();
            out.clear();
            pair.many.track_burst(&mut pair.burst, &refs, now, &mut out);
            assert_eq!(one, out, "seed {seed}, packets {at}..{}", at + n);
            for (a, b) in one.into_iter().zip(out.drain(..)) {
                if let (Tracked::New(a), Tracked::New(b)) = (a, b) {
                    assert_eq!(pair.one.confirm(a, now), pair.many.confirm(b, now));
                }
            }
            pair.same(now).unwrap();
            at += n;
            now += 3_000_000 * n as u64;
            if rng.below(4) == 0 {
                pair.one.expire(now, 8);
                pair.many.expire(now, 8);
            }
        }
        assert!(
            pair.one.counters().found > 100,
            "seed {seed}: {:?}",
            pair.one.counters()
        );
    }
}

/// One packet of a random sequence: a scripted segment of one of a few connections (so
/// flows get established and then see data, FINs and RSTs), or a random packet from a small
/// address space.
#[derive(Clone, Debug)]
enum Pkt {
    Scripted {
        conn: u8,
        step: u8,
    },
    Random {
        v6: bool,
        host: u8,
        reverse: bool,
        l4: L4,
    },
}

/// What happens after a packet, to both shards alike.
#[derive(Clone, Debug)]
enum After {
    Nothing,
    /// Confirm it if NEW (most packets of a worker are accepted).
    Confirm,
    /// Confirm if NEW, then run the wheel.
    ConfirmExpire(u8),
    /// Set a mark on its entry.
    Mark(u32),
}

#[derive(Clone, Debug)]
struct Step2 {
    pkt: Pkt,
    after: After,
}

/// A burst: its packets, the clock step before it, and whether it is prepared for a rotated
/// list of its packets (every hint then belongs to another packet).
#[derive(Clone, Debug)]
struct BurstPlan {
    steps: Vec<Step2>,
    sleep_ms: u32,
    misprepared: bool,
}

fn conn(n: u8) -> Conn {
    let (c, s) = hosts(n % 2 == 1, 0, n);
    Conn {
        c,
        s,
        cp: 40000,
        sp: 80,
    }
}

/// The scripted segments of connection `n`: handshake, data both ways, FINs, then a RST.
fn script(n: u8) -> Vec<Step> {
    use CtState::Established as E;
    let k = conn(n);
    let mut v = k.handshake();
    v.extend([
        k.c(PSH | ACK, 1001, 5001, 502, 100, E, ""),
        k.s(ACK, 5001, 1101, 509, 0, E, ""),
        k.s(PSH | ACK, 5001, 1101, 509, 1000, E, ""),
        k.c(ACK, 1101, 6001, 502, 0, E, ""),
        k.c(FIN | ACK, 1101, 6001, 502, 0, E, ""),
        k.s(FIN | ACK, 6001, 1102, 509, 0, E, ""),
        k.c(ACK, 1102, 6002, 502, 0, E, ""),
        k.c(RST, 1102, 0, 0, 0, E, ""),
    ]);
    v
}

fn random_l4() -> impl Strategy<Value = L4> {
    prop_oneof![
        3 => (0u16..2, prop::sample::select(vec![SYN, ACK, SYN | ACK, RST, FIN | ACK, PSH | ACK]), 0u32..3, 0u32..3)
            .prop_map(|(p, flags, seq, ack)| L4::Tcp {
                sp: 40000 + p,
                dp: 80,
                flags,
                seq: [1000u32, 1001, 5001][seq as usize],
                ack: [0u32, 1001, 5001][ack as usize],
                win: 502,
                len: 0,
                opts: Opts::default(),
            }),
        2 => (0u16..2).prop_map(|p| L4::Udp { sp: 5000 + p, dp: 53, len: 4 }),
        1 => (prop::sample::select(vec![0u8, 3, 8, 128, 129]), any::<[u8; 4]>())
            .prop_map(|(msg_type, rest)| L4::Icmp { msg_type, code: 0, rest, data: vec![0; 28] }),
        1 => Just(L4::Raw { proto: 47, data: vec![0; 8] }),
    ]
}

fn step2() -> impl Strategy<Value = Step2> {
    let pkt = prop_oneof![
        3 => (0u8..4, 0u8..11).prop_map(|(conn, step)| Pkt::Scripted { conn, step }),
        2 => (any::<bool>(), 0u8..3, any::<bool>(), random_l4())
            .prop_map(|(v6, host, reverse, l4)| Pkt::Random { v6, host, reverse, l4 }),
    ];
    let after = prop_oneof![
        2 => Just(After::Nothing),
        6 => Just(After::Confirm),
        1 => (0u8..8).prop_map(After::ConfirmExpire),
        1 => any::<u32>().prop_map(After::Mark),
    ];
    (pkt, after).prop_map(|(pkt, after)| Step2 { pkt, after })
}

fn burst_plan() -> impl Strategy<Value = BurstPlan> {
    (
        prop::collection::vec(step2(), 1..=BURST_MAX + 4),
        prop_oneof![4 => Just(0u32), 1 => 0u32..40_000],
        prop::bool::weighted(0.1),
    )
        .prop_map(|(steps, sleep_ms, misprepared)| BurstPlan {
            steps,
            sleep_ms,
            misprepared,
        })
}

fn build(pkt: &Pkt, ident: u32) -> Option<(Vec<u8>, FrameInfo)> {
    let f = match pkt {
        Pkt::Scripted { conn: c, step } => {
            let steps = script(*c);
            let s = &steps[usize::from(*step) % steps.len()];
            frame(MAC, MAC, s.src, s.dst, &s.l4, ident)
        }
        Pkt::Random {
            v6,
            host,
            reverse,
            l4,
        } => {
            if *v6 && matches!(l4, L4::Icmp { msg_type, .. } if *msg_type < 128) {
                return None;
            }
            let (c, s) = hosts(*v6, 1, *host);
            let (src, dst) = if *reverse { (s, c) } else { (c, s) };
            frame(MAC, MAC, src, dst, l4, ident)
        }
    };
    let info = parse_frame(&f).ok()?;
    Some((f, info))
}

fn after(sh: &mut Shard, t: Tracked, a: &After, now: u64) {
    match (a, t) {
        (After::Confirm | After::ConfirmExpire(_), Tracked::New(p)) => {
            let _ = sh.confirm(p, now);
        }
        (After::Mark(m), Tracked::Known(info)) => {
            if let Some(id) = info.entry {
                let _ = sh.set_mark(id, *m);
            }
        }
        _ => {}
    }
    if let After::ConfirmExpire(budget) = a {
        sh.expire(now, u32::from(*budget));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    /// A worker's burst loop (prepare, then per packet `track_prepared` and whatever the
    /// filter does) against `track` per packet.
    #[test]
    fn prepared_bursts_track_like_packet_at_a_time(
        plans in prop::collection::vec(burst_plan(), 1..24),
        cap in prop_oneof![Just(4u32), Just(64)],
        labels in any::<bool>(),
    ) {
        let mut pair = Pair::new(ShardConfig { capacity: cap, labels, early_drop_scan: 4, ..ShardConfig::default() });
        let mut now = 1_000_000_000u64;
        let mut ident = 1;
        for plan in &plans {
            now += u64::from(plan.sleep_ms) * 1_000_000;
            let mut frames: Vec<(Vec<u8>, FrameInfo)> = Vec::new();
            let mut afters: Vec<&After> = Vec::new();
            for s in &plan.steps {
                ident += 1;
                if let Some(fi) = build(&s.pkt, ident) {
                    frames.push(fi);
                    afters.push(&s.after);
                }
            }
            let rotate = usize::from(plan.misprepared && frames.len() > 1);
            pair.many.prepare(
                &mut pair.burst,
                (0..frames.len()).map(|i| {
                    let (f, info) = &frames[(i + rotate) % frames.len()];
                    // Every fifth packet is one the worker does not track here.
                    (i % 5 != 4).then_some((&f[..], info))
                }),
            );
            for (i, ((f, info), a)) in frames.iter().zip(&afters).enumerate() {
                if let Some(t) = info.flow_tuple().filter(|t| t.protocol != 1 && t.protocol != 58) {
                    prop_assert_eq!(
                        pair.many.lookup_prepared(&pair.burst, i, f, info, now),
                        pair.one.lookup_tuple(&t, now)
                    );
                }
                let x = pair.one.track(f, info, now);
                let y = pair.many.track_prepared(&pair.burst, i, f, info, now);
                prop_assert_eq!(x, y, "packet {} of the burst", i);
                after(&mut pair.one, x, a, now);
                after(&mut pair.many, y, a, now);
            }
            pair.same(now)?;
        }
    }

    /// `track_burst` returns what `track` returns packet by packet, for any burst length.
    #[test]
    fn track_burst_is_sequential_track(
        plans in prop::collection::vec(burst_plan(), 1..16),
        cap in prop_oneof![Just(3u32), Just(64)],
    ) {
        let mut pair = Pair::new(ShardConfig { capacity: cap, early_drop_scan: 4, ..ShardConfig::default() });
        let mut now = 1_000_000_000u64;
        let mut out = Vec::new();
        for (n, plan) in plans.iter().enumerate() {
            now += u64::from(plan.sleep_ms) * 1_000_000;
            let frames: Vec<(Vec<u8>, FrameInfo)> = plan
                .steps
                .iter()
                .enumerate()
                .filter_map(|(i, s)| build(&s.pkt, (n * 100 + i) as u32))
                .collect();
            let refs: Vec<(&[u8], &FrameInfo)> = frames.iter().map(|(f, i)| (&f[..], i)).collect();
            let one: Vec<Tracked> = refs.iter().map(|(f, i)| pair.one.track(f, i, now)).collect();
            out.clear();
            pair.many.track_burst(&mut pair.burst, &refs, now, &mut out);
            prop_assert_eq!(&one, &out);
            for (a, b) in one.into_iter().zip(out.drain(..)) {
                if let (Tracked::New(a), Tracked::New(b)) = (a, b) {
                    prop_assert_eq!(pair.one.confirm(a, now), pair.many.confirm(b, now));
                }
            }
            pair.same(now)?;
        }
    }
}
