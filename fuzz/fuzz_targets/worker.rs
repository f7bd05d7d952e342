//! Fuzz target: the whole worker (two-stage ruleset, conntrack, SYN proxy, translation) on
//! the in-memory port, driven by a script of segments that the input chooses.
//!
//! Four clients talk to a server through a worker running the lab's SYN-proxy ruleset. The
//! input is read as steps: client SYNs with chosen ISNs and options, the cookie ACK built from
//! the last SYN-ACK the client saw (so the proxy's valid-cookie path is reached), the server's
//! SYN-ACK to the last SYN the proxy sent it, data, FIN and RST both ways with sequence
//! numbers near or far from the expected ones, arbitrary raw frames, single-byte mutations of
//! the last frame, and jumps of the clock. Nothing may panic; the shard never holds more than
//! its capacity; every frame the worker emits is at least an Ethernet header and every TCP
//! segment the proxy built (SYN-ACKs, server SYNs, ACKs, window updates) has valid checksums.
#![no_main]

use levee_dataplane::flow::Steering;
use levee_dataplane::worker::WorkerFilter;
use levee_dataplane::{CtShard, HandoffMesh, MemPacket, MemPort, Side, Worker, WorkerConfig};
use levee_packet::checksum;
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};

const RULESET: &str = "table inet lab {
    chain raw {
        type filter hook prerouting priority raw; policy accept;
        iifname \"outside\" tcp flags & (syn | ack) == syn notrack
    }
    chain pre {
        type filter hook prerouting priority filter; policy accept;
        iifname \"outside\" ip daddr 198.18.0.2 tcp dport 8080 ct state invalid,untracked synproxy mss 1460 wscale 7 timestamp sack-perm
        ct state invalid drop
        iifname \"outside\" tcp flags & (syn | ack) == syn drop
    }
}";
const SERVER: [u8; 4] = [198, 18, 0, 2];
const CAPACITY: u32 = 16;

fn compiled() -> Arc<levee_filter_vm::Compiled> {
    static C: OnceLock<Arc<levee_filter_vm::Compiled>> = OnceLock::new();
    C.get_or_init(|| Arc::new(levee_filter_vm::compile_ruleset(RULESET).unwrap().compiled))
        .clone()
}

/// Ethernet + IPv4 + TCP with correct checksums.
#[allow(clippy::too_many_arguments)]
fn seg(client: u8, to_server: bool, flags: u8, seq: u32, ack: u32, opts: &[u8], payload: usize) -> Vec<u8> {
    let c = [198, 18, 1, 10 + client];
    let cport = 40000 + client as u16;
    let (src, dst, sport, dport) = if to_server {
        (c, SERVER, cport, 8080)
    } else {
        (SERVER, c, 8080, cport)
    };
    let opts = &opts[..opts.len() / 4 * 4];
    let tcp_len = 20 + opts.len() + payload;
    let mut f = vec![0u8; 34 + tcp_len];
    f[12] = 0x08;
    f[14] = 0x45;
    f[16..18].copy_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
    f[22] = 64;
    f[23] = 6;
    f[26..30].copy_from_slice(&src);
    f[30..34].copy_from_slice(&dst);
    let s = checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&s.to_be_bytes());
    let t = &mut f[34..];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12] = ((5 + opts.len() / 4) as u8) << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&502u16.to_be_bytes());
    t[20..20 + opts.len()].copy_from_slice(opts);
    let ph = checksum::pseudo_header_v4(src.into(), dst.into(), 6, tcp_len as u16);
    let c = !checksum::add(ph, checksum::sum(&f[34..]));
    f[50..52].copy_from_slice(&c.to_be_bytes());
    f
}

/// (seq, tsval, TCP checksum verifies, flags) of an IPv4/TCP frame.
fn tcp_fields(f: &[u8]) -> Option<(u32, Option<u32>, bool, u8)> {
    if f.len() < 54 || f[12..14] != [8, 0] || f[14] != 0x45 || f[23] != 6 {
        return None;
    }
    let ip_len = u16::from_be_bytes([f[16], f[17]]) as usize;
    let t = f.get(34..14 + ip_len)?;
    if t.len() < 20 {
        return None;
    }
    let doff = ((t[12] >> 4) as usize * 4).min(t.len());
    let u32at = |i: usize| u32::from_be_bytes([t[i], t[i + 1], t[i + 2], t[i + 3]]);
    let mut ts = None;
    let mut i = 20;
    while i + 1 < doff {
        match t[i] {
            0 => break,
            1 => i += 1,
            8 if i + 10 <= doff => {
                ts = Some(u32at(i + 2));
                i += 10;
            }
            _ => i += t[i + 1].max(2) as usize,
        }
    }
    let ph = checksum::pseudo_header_v4(
        [f[26], f[27], f[28], f[29]].into(),
        [f[30], f[31], f[32], f[33]].into(),
        6,
        t.len() as u16,
    );
    let ok = checksum::add(ph, checksum::sum(t)) == 0xffff;
    Some((u32at(4), ts, ok, t[13]))
}

#[derive(Default, Clone, Copy)]
struct Client {
    isn: u32,
    /// The last SYN-ACK's (seq, tsval) the client saw.
    synack: Option<(u32, Option<u32>)>,
    /// What the client sends next and acknowledges.
    next_seq: u32,
    next_ack: u32,
    /// The last SYN the server saw for this client (its seq) and what it answered with.
    server_syn: Option<u32>,
    server_isn: u32,
}

fuzz_target!(|data: &[u8]| {
    let shard = CtShard::new(
        levee_conntrack::ShardConfig {
            capacity: CAPACITY,
            loose: false,
            ..Default::default()
        },
        levee_conntrack::HashKey([1, 2]),
    )
    .unwrap();
    let proxy = levee_synproxy::SynProxy::new(
        levee_synproxy::Config::default(),
        &levee_synproxy::MasterSecret::from_bytes([7; 16]),
    )
    .unwrap();
    let mut w = Worker::new(
        0,
        MemPort::new(64, 256),
        MemPort::new(64, 256),
        WorkerConfig::default(),
        Steering::new(1, 128),
        HandoffMesh::new(1, 16),
    )
    .with_filter(WorkerFilter::new(compiled(), 0))
    .with_conntrack(shard)
    .with_synproxy(proxy)
    // The first byte picks the direct or the staged (prepared-burst) path.
    .with_stage_min(if data.first().is_some_and(|b| b & 1 == 1) {
        0
    } else {
        u32::MAX
    });
    let mut clients = [Client::default(); 4];
    let mut now = 1_000_000_000u64;
    let mut last: Vec<u8> = Vec::new();
    let mut i = 0;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = data.get(i..i + n)?;
        i += n;
        Some(s)
    };
    while let Some(&[op, arg]) = take(2) {
        let c = (arg & 3) as usize;
        let cl = clients[c];
        let frame_side = match op % 10 {
            0 => {
                let Some(b) = take(4) else { break };
                let isn = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                clients[c] = Client { isn, ..cl };
                let mut o = vec![2, 4, 5, 180];
                if arg & 4 != 0 {
                    o.extend_from_slice(&[4, 2, 8, 10, 0, 0, 0, 9, 0, 0, 0, 0]);
                }
                if arg & 8 != 0 {
                    o.extend_from_slice(&[1, 3, 3, (arg >> 4) & 15]);
                }
                Some((seg(c as u8, true, 0x02, isn, 0, &o, 0), Side::Outside))
            }
            1 => cl.synack.map(|(cookie, ts)| {
                let o: Vec<u8> = ts.map_or(Vec::new(), |v| {
                    let mut o = vec![1, 1, 8, 10, 0, 0, 0, 10];
                    o.extend_from_slice(&v.to_be_bytes());
                    o
                });
                clients[c].next_seq = cl.isn.wrapping_add(1);
                clients[c].next_ack = cookie.wrapping_add(1);
                (
                    seg(
                        c as u8,
                        true,
                        0x10,
                        cl.isn.wrapping_add(1),
                        cookie.wrapping_add(1),
                        &o,
                        0,
                    ),
                    Side::Outside,
                )
            }),
            2 | 3 => {
                // Data or FIN/RST from the client, near the expected numbers.
                let Some(b) = take(2) else { break };
                let flags = [0x18, 0x11, 0x04, 0x14][(b[0] & 3) as usize];
                let skew = (b[1] as i8 as i32) * if op % 10 == 3 { 70_000 } else { 1 };
                let seq = cl.next_seq.wrapping_add(skew as u32);
                let len = if flags == 0x18 {
                    (b[0] >> 2) as usize * 8
                } else {
                    0
                };
                clients[c].next_seq = seq.wrapping_add(len as u32);
                Some((
                    seg(c as u8, true, flags, seq, cl.next_ack, &[], len),
                    Side::Outside,
                ))
            }
            4 => cl.server_syn.map(|syn_seq| {
                let s_isn = u32::from(arg).wrapping_mul(0x0101_0101) ^ 0x8000_0000;
                clients[c].server_isn = s_isn;
                (
                    seg(
                        c as u8,
                        false,
                        0x12,
                        s_isn,
                        syn_seq.wrapping_add(1),
                        &[2, 4, 5, 180],
                        0,
                    ),
                    Side::Inside,
                )
            }),
            5 | 6 => {
                // Data or FIN/RST from the server.
                let Some(b) = take(2) else { break };
                let flags = [0x18, 0x11, 0x04, 0x14][(b[0] & 3) as usize];
                let seq = cl.server_isn.wrapping_add(1).wrapping_add(b[1] as u32 * 100);
                let len = if flags == 0x18 {
                    (b[0] >> 2) as usize * 8
                } else {
                    0
                };
                Some((
                    seg(c as u8, false, flags, seq, cl.next_seq, &[], len),
                    Side::Inside,
                ))
            }
            7 => {
                let Some(&[n]) = take(1) else { break };
                let Some(raw) = take(n as usize) else { break };
                let side = if arg & 1 == 0 { Side::Outside } else { Side::Inside };
                Some((raw.to_vec(), side))
            }
            8 if !last.is_empty() => {
                let Some(&[at, x]) = take(2) else { break };
                let mut f = last.clone();
                let k = at as usize % f.len();
                f[k] ^= x;
                Some((f, if arg & 1 == 0 { Side::Outside } else { Side::Inside }))
            }
            _ => {
                now += u64::from(arg) * 50_000_000;
                None
            }
        };
        if let Some((f, side)) = frame_side {
            last = f.clone();
            let _ = w.port_mut(side).wire_in.push(MemPacket(f));
        }
        now += 1_000_000;
        w.poll_once(now);
        for side in [Side::Outside, Side::Inside] {
            while let Some(p) = w.port_mut(side).wire_out.pop() {
                let f = p.0;
                assert!(f.len() >= 14, "a runt frame left the worker");
                let Some((seq, ts, ok, flags)) = tcp_fields(&f) else {
                    continue;
                };
                let dst = [f[30], f[31], f[32], f[33]];
                let to_client = dst != SERVER && dst[..3] == [198, 18, 1];
                let k = (dst[3].wrapping_sub(10) & 3) as usize;
                // The proxy's SYN-ACKs advertise window 0; a server's SYN-ACK that the
                // worker forwarded (translated, checksum adjusted incrementally) keeps whatever
                // checksum it came with.
                let window = u16::from_be_bytes([f[48], f[49]]);
                if side == Side::Outside && to_client && flags == 0x12 && window == 0 {
                    assert!(ok, "the proxy's SYN-ACK has a bad TCP checksum: {f:02x?}");
                    clients[k].synack = Some((seq, ts));
                }
                // What reaches the server as a SYN on the protected port, unfragmented, is the
                // proxy's (a non-first fragment has no TCP header for a rule to match: levee
                // does not reassemble, so such fragments pass as the ruleset allows).
                let frag = u16::from_be_bytes([f[20], f[21]]) & 0x3fff;
                let dport = u16::from_be_bytes([f[36], f[37]]);
                if side == Side::Inside && dst == SERVER && flags & 0x12 == 0x02 && frag == 0 && dport == 8080
                {
                    assert!(
                        ok,
                        "the proxy's SYN to the server has a bad TCP checksum: {f:02x?}"
                    );
                    let src = f[29].wrapping_sub(10) & 3;
                    clients[src as usize].server_syn = Some(seq);
                }
            }
        }
        let ct = w.conntrack().unwrap();
        assert!(ct.len() <= CAPACITY, "the shard outgrew its capacity");
    }
});
