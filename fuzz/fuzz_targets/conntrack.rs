//! Random packet sequences through a small conntrack shard: the input is a program of
//! operations (a TCP segment of one of a few flows with fuzzed sequence numbers, flags, window
//! and options; a raw frame; an ICMP error quoting a segment; a clock step; a wheel step).
//! Packets gather into bursts (ended by a clock or wheel step, or at `BURST_MAX`), and a second
//! shard tracks each burst through the burst path and the brief results the worker uses
//! (`prepare`, sometimes for the wrong packets, then `classify_prepared` and `info`, confirming
//! between packets with `confirm_pending`): it must answer exactly like the first, tracked
//! packet by packet with the whole results. Nothing may panic, the table may never exceed its capacity and the
//! per-state counts must match a recount.
#![no_main]

use std::net::Ipv4Addr;

use levee_conntrack::{Burst, CtState, Direction, HashKey, Outcome, Shard, ShardConfig, Tracked, BURST_MAX};
use levee_packet::checksum::PseudoHeader;
use levee_packet::ipv4::Ipv4Repr;
use levee_packet::parse::parse_frame;
use levee_packet::tcp::{SeqNum, TcpFlags, TcpRepr};
use libfuzzer_sys::fuzz_target;

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
}

fn ip_frame(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, body: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 34];
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        protocol: proto,
        payload_len: body.len(),
        ttl: 64,
        dscp: 0,
        ecn: 0,
        ident: 0,
        dont_frag: false,
        more_frags: false,
        frag_offset: 0,
    }
    .emit(&mut f[14..])
    .unwrap();
    f.extend_from_slice(body);
    f
}

fn tcp(b: &mut Bytes<'_>, flow: u8, reverse: bool) -> (Ipv4Addr, Ipv4Addr, Vec<u8>) {
    let (mut src, mut dst) = (Ipv4Addr::new(198, 18, 0, flow % 4), Ipv4Addr::new(198, 19, 0, 1));
    let (mut sp, mut dp) = (40000 + u16::from(flow % 4), 80);
    if reverse {
        std::mem::swap(&mut src, &mut dst);
        std::mem::swap(&mut sp, &mut dp);
    }
    let mut r = TcpRepr::new(
        sp,
        dp,
        SeqNum(b.u32()),
        SeqNum(b.u32()),
        TcpFlags::from_bits(b.u8()),
        b.u16(),
    );
    let o = b.u8();
    if o & 1 != 0 {
        r.window_scale = Some(o >> 4);
    }
    r.sack_permitted = o & 2 != 0;
    let payload = vec![0u8; usize::from(b.u8() % 4) * 200];
    r.payload = &payload;
    let mut out = vec![0u8; r.buffer_len()];
    r.emit(&mut out, &PseudoHeader::V4 { src, dst }).unwrap();
    (src, dst, out)
}

/// A frame waiting in the current burst, with whether a NEW verdict gets confirmed.
struct Queued {
    frame: Vec<u8>,
    confirm: bool,
}

/// Runs the queued burst through both shards: `one` packet by packet with `track`, `many`
/// with `prepare` (for a rotated list of the frames when `rotate` is set, so hints belong to
/// other packets), `classify_prepared` and `info`. Both must answer alike.
fn flush(
    one: &mut Shard,
    many: &mut Shard,
    burst: &mut Burst,
    queue: &mut Vec<Queued>,
    now: u64,
    rotate: usize,
) {
    let parsed: Vec<_> = queue
        .drain(..)
        .filter_map(|q| parse_frame(&q.frame).ok().map(|info| (q.frame, info, q.confirm)))
        .collect();
    let n = parsed.len();
    many.prepare(
        burst,
        (0..n).map(|i| {
            let (f, info, _) = &parsed[(i + rotate) % n.max(1)];
            Some((&f[..], info))
        }),
    );
    for (i, (frame, info, confirm)) in parsed.iter().enumerate() {
        let a = one.track(frame, info, now);
        let b = many.classify_prepared(burst, i, frame, info, now);
        assert_eq!(a.state(), b.state(), "packet {i} of a burst of {n}");
        assert_eq!(a.info(), many.info(b, now), "packet {i} of a burst of {n}");
        assert_eq!(matches!(a, Tracked::New(_)), b == Outcome::New);
        if let Some(id) = b.entry().filter(|_| b.state() != CtState::Related) {
            // The direction against the entry's own record (its original tuple).
            let from_opener =
                many.snapshot(id, now).unwrap().original.src_addr == info.flow_tuple().unwrap().src_addr;
            let want = if from_opener {
                Direction::Original
            } else {
                Direction::Reply
            };
            assert_eq!(many.info(b, now).direction, want, "packet {i} of a burst of {n}");
        }
        if let Tracked::Known(k) = a {
            if let Some(id) = k.entry {
                // Flag every other flow (as the SYN proxy flags its own): the presence
                // filter never rules a flagged flow's packet out.
                if frame.len() % 2 == 0 {
                    one.flag(id).unwrap();
                }
                // (An ICMP error is RELATED to the flow it quotes; the filter answers for the
                // packet's own flow, which is what the proxy asks about.)
                if one.is_flagged(id).unwrap() && k.state != CtState::Related {
                    assert!(one.may_be_flagged(frame, info), "flagged flow ruled out");
                }
                assert!(one.flagged_len() <= one.len());
            }
        }
        if let Tracked::New(a) = a {
            if *confirm {
                assert_eq!(one.confirm(a, now), many.confirm_pending(now));
            }
        }
    }
    assert_eq!(one.counters(), many.counters());
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let cap = u32::from(b.u8() % 16) + 1;
    let cfg = ShardConfig {
        capacity: cap,
        loose: b.u8() & 1 == 1,
        liberal: b.u8() & 1 == 1,
        early_drop_scan: 4,
        ..ShardConfig::default()
    };
    let mut sh: Shard = Shard::new(cfg, HashKey([1, 2])).unwrap();
    let mut many: Shard = Shard::new(cfg, HashKey([1, 2])).unwrap();
    let mut burst = Burst::new();
    let mut queue: Vec<Queued> = Vec::new();
    let mut now = 1_000_000_000u64;
    let mut last: Option<Vec<u8>> = None;
    let mut steps = 0;
    while !b.0.is_empty() && steps < 512 {
        steps += 1;
        let op = b.u8();
        let frame = match op % 8 {
            0..=3 => {
                let (src, dst, seg) = tcp(&mut b, op >> 4, op & 8 != 0);
                let f = ip_frame(src, dst, 6, &seg);
                last = Some(f[14..].to_vec());
                f
            }
            4 => {
                // An ICMP error quoting (part of) the last segment, to its source or elsewhere.
                let Some(q) = &last else { continue };
                let cut = usize::from(b.u8()).min(q.len());
                let mut body = vec![3, 3, 0, 0, 0, 0, 0, 0];
                body.extend_from_slice(&q[..cut]);
                let dst = if b.u8() & 1 == 0 {
                    Ipv4Addr::new(q[12], q[13], q[14], q[15])
                } else {
                    Ipv4Addr::new(198, 18, 0, 9)
                };
                ip_frame(Ipv4Addr::new(198, 19, 0, 99), dst, 1, &body)
            }
            5 => {
                let len = usize::from(b.u8());
                let raw: Vec<u8> = (0..len).map(|_| b.u8()).collect();
                raw
            }
            6 => {
                // The burst ends here; then the clock moves.
                let rotate = usize::from(op >> 7);
                flush(&mut sh, &mut many, &mut burst, &mut queue, now, rotate);
                now += u64::from(b.u16()) * 10_000_000;
                continue;
            }
            _ => {
                flush(&mut sh, &mut many, &mut burst, &mut queue, now, 0);
                let budget = u32::from(b.u8() % 32);
                sh.expire(now, budget);
                many.expire(now, budget);
                continue;
            }
        };
        queue.push(Queued {
            frame,
            confirm: b.u8() & 3 != 0,
        });
        if queue.len() == BURST_MAX {
            flush(&mut sh, &mut many, &mut burst, &mut queue, now, 0);
        }
        assert!(sh.len() <= cap);
    }
    flush(&mut sh, &mut many, &mut burst, &mut queue, now, 0);
    assert!(sh.len() <= cap);
    assert_eq!(sh.recount(), sh.state_counts());
    assert_eq!(many.recount(), many.state_counts());
    assert_eq!(sh.state_counts(), many.state_counts());
});
