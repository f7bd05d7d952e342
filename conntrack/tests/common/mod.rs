//! Shared by the integration tests: frame builders (levee-packet's `TcpRepr`, `Ipv4Repr`,
//! `Ipv6Repr`, `UdpRepr`, ICMP by hand) and the scenario corpus.
//!
//! The corpus is a list of packet sequences, each packet with the classification Linux gives it
//! and the kernel behaviour that decides it. `tests/scenarios.rs` replays it through a shard and
//! checks the expectations; `tests/kernel_diff.rs` replays it through a real kernel as well and
//! compares packet by packet.
#![allow(dead_code, clippy::too_many_arguments)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use levee_conntrack::{CtState, HashKey, Shard, ShardConfig, Tracked};
use levee_packet::checksum::PseudoHeader;
use levee_packet::ethernet::{ethertype, EthernetRepr, MacAddr};
use levee_packet::ip_protocol;
use levee_packet::ipv4::Ipv4Repr;
use levee_packet::ipv6::Ipv6Repr;
use levee_packet::parse::parse_frame;
use levee_packet::tcp::{SackBlocks, SeqNum, TcpFlags, TcpRepr, Timestamps};
use levee_packet::udp::UdpRepr;

pub const KEY: HashKey = HashKey([0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908]);

/// Which side of the router a packet enters from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The client network (198.18.10.0/23, 2001:2:0:10::/63).
    Client,
    /// The server network (198.18.20.0/24, 2001:2:0:20::/64).
    Server,
}

/// The transport part of a packet.
#[derive(Clone, Debug)]
pub enum L4 {
    Tcp {
        sp: u16,
        dp: u16,
        flags: u8,
        seq: u32,
        ack: u32,
        win: u16,
        len: usize,
        opts: Opts,
    },
    Udp {
        sp: u16,
        dp: u16,
        len: usize,
    },
    /// ICMP or ICMPv6 (by family) with type, code, the 4 header bytes after the checksum and
    /// the data.
    Icmp {
        msg_type: u8,
        code: u8,
        rest: [u8; 4],
        data: Vec<u8>,
    },
    /// Another protocol with raw payload.
    Raw {
        proto: u8,
        data: Vec<u8>,
    },
}

/// TCP options.
#[derive(Clone, Copy, Debug, Default)]
pub struct Opts {
    pub mss: Option<u16>,
    pub ws: Option<u8>,
    pub sack_perm: bool,
    pub ts: Option<(u32, u32)>,
    pub sack: Option<(u32, u32)>,
}

/// One packet of a scenario.
#[derive(Clone, Debug)]
pub struct Step {
    pub side: Side,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub l4: L4,
    /// What Linux classifies it as.
    pub expect: CtState,
    /// The kernel behaviour that decides it.
    pub why: &'static str,
}

/// A named packet sequence.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    pub steps: Vec<Step>,
}

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
pub const URG: u8 = 0x20;

/// Builds the Ethernet frame of a packet. `ident` goes into the IPv4 identification or the
/// IPv6 flow label (the kernel test uses it to find the packet again).
pub fn frame(src_mac: MacAddr, dst_mac: MacAddr, src: IpAddr, dst: IpAddr, l4: &L4, ident: u32) -> Vec<u8> {
    let (proto, body) = l4_bytes(src, dst, l4);
    let mut out = vec![0u8; 14];
    let v6 = src.is_ipv6();
    EthernetRepr {
        dst_addr: dst_mac,
        src_addr: src_mac,
        ethertype: if v6 { ethertype::IPV6 } else { ethertype::IPV4 },
    }
    .emit(&mut out)
    .unwrap();
    out.extend(ip_packet(src, dst, proto, &body, ident));
    // Pad to the Ethernet minimum like a NIC would.
    if out.len() < 60 {
        out.resize(60, 0);
    }
    out
}

/// An IP packet (header and payload) carrying `body`.
pub fn ip_packet(src: IpAddr, dst: IpAddr, proto: u8, body: &[u8], ident: u32) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut out = vec![0u8; 20];
            Ipv4Repr {
                src_addr: s,
                dst_addr: d,
                protocol: proto,
                payload_len: body.len(),
                ttl: 64,
                dscp: 0,
                ecn: 0,
                ident: ident as u16,
                dont_frag: false,
                more_frags: false,
                frag_offset: 0,
            }
            .emit(&mut out)
            .unwrap();
            out.extend_from_slice(body);
            out
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut out = vec![0u8; 40];
            Ipv6Repr {
                src_addr: s,
                dst_addr: d,
                next_header: proto,
                payload_len: body.len(),
                hop_limit: 64,
                traffic_class: 0,
                flow_label: ident & 0xf_ffff,
            }
            .emit(&mut out)
            .unwrap();
            out.extend_from_slice(body);
            out
        }
        _ => panic!("mixed families"),
    }
}

fn pseudo(src: IpAddr, dst: IpAddr) -> PseudoHeader {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PseudoHeader::V4 { src: s, dst: d },
        (IpAddr::V6(s), IpAddr::V6(d)) => PseudoHeader::V6 { src: s, dst: d },
        _ => panic!("mixed families"),
    }
}

/// The transport bytes of `l4` (checksums filled) and its protocol number.
pub fn l4_bytes(src: IpAddr, dst: IpAddr, l4: &L4) -> (u8, Vec<u8>) {
    let ph = pseudo(src, dst);
    match l4 {
        L4::Tcp {
            sp,
            dp,
            flags,
            seq,
            ack,
            win,
            len,
            opts,
        } => {
            let payload = vec![0x61u8; *len];
            let mut repr = TcpRepr::new(
                *sp,
                *dp,
                SeqNum(*seq),
                SeqNum(*ack),
                TcpFlags::from_bits(*flags),
                *win,
            );
            repr.max_seg_size = opts.mss;
            repr.window_scale = opts.ws;
            repr.sack_permitted = opts.sack_perm;
            repr.timestamps = opts.ts.map(|(tsval, tsecr)| Timestamps { tsval, tsecr });
            if let Some(b) = opts.sack {
                repr.sack_blocks = SackBlocks::from_slice(&[b]).unwrap();
            }
            repr.payload = &payload;
            let mut out = vec![0u8; repr.buffer_len()];
            repr.emit(&mut out, &ph).unwrap();
            (ip_protocol::TCP, out)
        }
        L4::Udp { sp, dp, len } => {
            let payload = vec![0x75u8; *len];
            let repr = UdpRepr {
                src_port: *sp,
                dst_port: *dp,
                payload: &payload,
            };
            let mut out = vec![0u8; repr.buffer_len()];
            repr.emit(&mut out, &ph).unwrap();
            (ip_protocol::UDP, out)
        }
        L4::Icmp {
            msg_type,
            code,
            rest,
            data,
        } => {
            let mut out = vec![*msg_type, *code, 0, 0, rest[0], rest[1], rest[2], rest[3]];
            out.extend_from_slice(data);
            let v6 = src.is_ipv6();
            let sum = if v6 {
                let pseudo_sum = ph.sum(ip_protocol::ICMPV6, out.len() as u32);
                levee_packet::checksum::combine(&[pseudo_sum, levee_packet::checksum::sum(&out)])
            } else {
                levee_packet::checksum::sum(&out)
            };
            let c = !sum;
            out[2..4].copy_from_slice(&c.to_be_bytes());
            (
                if v6 {
                    ip_protocol::ICMPV6
                } else {
                    ip_protocol::ICMP
                },
                out,
            )
        }
        L4::Raw { proto, data } => (*proto, data.clone()),
    }
}

/// Replays a scenario through `shard`, confirming every NEW packet (as a ruleset that accepts
/// everything would), and returns each packet's classification. Time advances 1 ms a packet.
pub fn replay(shard: &mut Shard, steps: &[Step], t0_ns: u64) -> Vec<CtState> {
    let mac = MacAddr([2, 0, 0, 0, 0, 1]);
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let now = t0_ns + i as u64 * 1_000_000;
            let f = frame(mac, mac, s.src, s.dst, &s.l4, i as u32 + 1);
            let info = parse_frame(&f).expect("scenario frames parse");
            match shard.track(&f, &info, now) {
                Tracked::New(p) => {
                    shard.confirm(p, now).expect("room for the scenario");
                    CtState::New
                }
                t => t.state(),
            }
        })
        .collect()
}

pub fn shard(loose: bool) -> Shard {
    Shard::new(
        ShardConfig {
            capacity: 4096,
            loose,
            ..ShardConfig::default()
        },
        KEY,
    )
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// The corpus.

/// Client and server addresses for flow number `n` (`run` keeps the two kernel runs apart).
pub fn hosts(v6: bool, run: u8, n: u8) -> (IpAddr, IpAddr) {
    if v6 {
        (
            IpAddr::V6(Ipv6Addr::new(
                0x2001,
                2,
                0,
                0x10 + u16::from(run),
                0,
                0,
                0,
                0x100 + u16::from(n),
            )),
            IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0x20, 0, 0, 0, 0x100 + u16::from(n))),
        )
    } else {
        (
            IpAddr::V4(Ipv4Addr::new(198, 18, 10 + run, n)),
            IpAddr::V4(Ipv4Addr::new(198, 18, 20, n)),
        )
    }
}

/// A router on the server side that sends ICMP errors.
pub fn server_router(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0x20, 0, 0, 0, 0x99))
    } else {
        IpAddr::V4(Ipv4Addr::new(198, 18, 20, 99))
    }
}

/// A TCP connection between a client and a server, with helpers for each segment.
#[derive(Clone, Copy)]
pub struct Conn {
    pub c: IpAddr,
    pub s: IpAddr,
    pub cp: u16,
    pub sp: u16,
}

impl Conn {
    pub fn c(
        &self,
        flags: u8,
        seq: u32,
        ack: u32,
        win: u16,
        len: usize,
        expect: CtState,
        why: &'static str,
    ) -> Step {
        self.co(flags, seq, ack, win, len, Opts::default(), expect, why)
    }

    pub fn s(
        &self,
        flags: u8,
        seq: u32,
        ack: u32,
        win: u16,
        len: usize,
        expect: CtState,
        why: &'static str,
    ) -> Step {
        self.so(flags, seq, ack, win, len, Opts::default(), expect, why)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn co(
        &self,
        flags: u8,
        seq: u32,
        ack: u32,
        win: u16,
        len: usize,
        opts: Opts,
        expect: CtState,
        why: &'static str,
    ) -> Step {
        Step {
            side: Side::Client,
            src: self.c,
            dst: self.s,
            l4: L4::Tcp {
                sp: self.cp,
                dp: self.sp,
                flags,
                seq,
                ack,
                win,
                len,
                opts,
            },
            expect,
            why,
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn so(
        &self,
        flags: u8,
        seq: u32,
        ack: u32,
        win: u16,
        len: usize,
        opts: Opts,
        expect: CtState,
        why: &'static str,
    ) -> Step {
        Step {
            side: Side::Server,
            src: self.s,
            dst: self.c,
            l4: L4::Tcp {
                sp: self.sp,
                dp: self.cp,
                flags,
                seq,
                ack,
                win,
                len,
                opts,
            },
            expect,
            why,
        }
    }

    /// SYN (isn 1000), SYN-ACK (isn 5000), ACK: the connection is ESTABLISHED and, after the
    /// ACK, ASSURED. Client next seq 1001, server next seq 5001.
    pub fn handshake(&self) -> Vec<Step> {
        vec![
            self.c(SYN, 1000, 0, 64240, 0, New, "tcp_new: SYN opens SYN_SENT"),
            self.s(
                SYN | ACK,
                5000,
                1001,
                65160,
                0,
                Est,
                "resolve_normal_ct: reply direction is ESTABLISHED",
            ),
            self.c(
                ACK,
                1001,
                5001,
                502,
                0,
                Est,
                "IPS_SEEN_REPLY set: original is ESTABLISHED",
            ),
        ]
    }
}

use CtState::{Established as Est, Invalid as Inv, New, Related as Rel, Untracked as Unt};

fn named(name: &str, steps: Vec<Step>) -> Scenario {
    Scenario {
        name: name.to_owned(),
        steps,
    }
}

/// Every scenario, with expectations for `loose` (nf_conntrack_tcp_loose). `run` separates the
/// address ranges of independent replays.
pub fn corpus(loose: bool, run: u8) -> Vec<Scenario> {
    let mut out = Vec::new();
    for v6 in [false, true] {
        let fam = if v6 { "v6" } else { "v4" };
        let mut n = 0u8;
        let mut conn = |port: u16| {
            n += 1;
            let (c, s) = hosts(v6, run, n);
            Conn {
                c,
                s,
                cp: port,
                sp: 80,
            }
        };

        // Normal open and close (tcp_conntracks: SYN_SENT, SYN_RECV, ESTABLISHED, FIN_WAIT,
        // CLOSE_WAIT, LAST_ACK, TIME_WAIT).
        let k = conn(40001);
        let mut s = k.handshake();
        s.extend([
            k.c(PSH | ACK, 1001, 5001, 502, 100, Est, "in window"),
            k.s(ACK, 5001, 1101, 509, 0, Est, "in window"),
            k.s(PSH | ACK, 5001, 1101, 509, 300, Est, "in window"),
            k.c(ACK, 1101, 5301, 501, 0, Est, "in window"),
            k.c(FIN | ACK, 1101, 5301, 501, 0, Est, "FIN: ESTABLISHED -> FIN_WAIT"),
            k.s(ACK, 5301, 1102, 509, 0, Est, "ACK: FIN_WAIT -> CLOSE_WAIT"),
            k.s(FIN | ACK, 5301, 1102, 509, 0, Est, "FIN: CLOSE_WAIT -> LAST_ACK"),
            k.c(ACK, 1102, 5302, 501, 0, Est, "ACK: LAST_ACK -> TIME_WAIT"),
            k.c(
                ACK,
                1102,
                5302,
                501,
                0,
                Est,
                "retransmitted last ACK: TIME_WAIT stays",
            ),
        ]);
        out.push(named(&format!("{fam} open and close"), s));

        // Simultaneous open (SYN_SENT2, IP_CT_TCP_SIMULTANEOUS_OPEN).
        let k = conn(40002);
        out.push(named(
            &format!("{fam} simultaneous open"),
            vec![
                k.c(SYN, 1000, 0, 64240, 0, New, "tcp_new"),
                k.s(SYN, 5000, 0, 65160, 0, Est, "reply SYN in SYN_SENT: sS2"),
                k.c(
                    SYN | ACK,
                    1000,
                    5001,
                    64240,
                    0,
                    Est,
                    "original SYN-ACK in SYN_SENT2: sSR",
                ),
                k.s(
                    SYN | ACK,
                    5000,
                    1001,
                    65160,
                    0,
                    Est,
                    "reply SYN-ACK in SYN_RECV: sIG, let through",
                ),
                k.c(ACK, 1001, 5001, 502, 0, Est, "original ACK in SYN_RECV: sES"),
                k.s(ACK, 5001, 1001, 509, 0, Est, "in window"),
            ],
        ));

        // Simultaneous close.
        let k = conn(40003);
        let mut s = k.handshake();
        s.extend([
            k.c(FIN | ACK, 1001, 5001, 502, 0, Est, "FIN: -> FIN_WAIT"),
            k.s(
                FIN | ACK,
                5001,
                1001,
                509,
                0,
                Est,
                "crossing FIN: FIN_WAIT -> LAST_ACK",
            ),
            k.c(ACK, 1002, 5002, 502, 0, Est, "ACK: LAST_ACK -> TIME_WAIT"),
            k.s(ACK, 5002, 1002, 509, 0, Est, "ACK in TIME_WAIT"),
        ]);
        out.push(named(&format!("{fam} simultaneous close"), s));

        // RST in every state.
        let k = conn(40010);
        out.push(named(
            &format!("{fam} RST answering SYN"),
            vec![
                k.c(SYN, 1000, 0, 64240, 0, New, "tcp_new"),
                k.s(
                    RST | ACK,
                    0,
                    1001,
                    0,
                    0,
                    Est,
                    "RST in SYN_SENT, seq 0 answering the SYN; entry killed",
                ),
                k.c(SYN, 1000, 0, 64240, 0, New, "the entry is gone: a new one"),
            ],
        ));
        let k = conn(40011);
        out.push(named(
            &format!("{fam} RST from client in SYN_SENT"),
            vec![
                k.c(SYN, 1000, 0, 64240, 0, New, "tcp_new"),
                k.c(RST, 1001, 0, 0, 0, New, "RST before any reply: NEW, entry killed"),
                k.s(
                    SYN | ACK,
                    5000,
                    1001,
                    65160,
                    0,
                    Inv,
                    "no entry: a SYN-ACK cannot open one",
                ),
            ],
        ));
        let k = conn(40012);
        out.push(named(
            &format!("{fam} RST in SYN_RECV"),
            vec![
                k.c(SYN, 1000, 0, 64240, 0, New, "tcp_new"),
                k.s(SYN | ACK, 5000, 1001, 65160, 0, Est, "SYN_RECV"),
                k.c(RST, 1001, 0, 0, 0, Est, "in-window RST: CLOSE"),
                k.c(ACK, 1001, 5001, 502, 0, Est, "CLOSE stays CLOSE on ACK"),
            ],
        ));
        let k = conn(40013);
        let mut s = k.handshake();
        s.extend([
            k.c(PSH | ACK, 1001, 5001, 502, 50, Est, "data"),
            k.s(RST, 5001, 0, 0, 0, Est, "RST at the expected sequence: CLOSE"),
            k.c(ACK, 1051, 5001, 502, 0, Est, "ACK in CLOSE"),
        ]);
        out.push(named(&format!("{fam} RST in ESTABLISHED"), s));
        let k = conn(40014);
        let mut s = k.handshake();
        s.extend([
            k.s(PSH | ACK, 5001, 1001, 509, 10, Est, "data"),
            k.c(ACK, 1001, 5011, 502, 0, Est, "ack"),
            k.s(RST, 4000, 0, 0, 0, Inv, "RST before td_maxack: invalid rst"),
            k.s(
                RST | ACK,
                900_000_000,
                1001,
                0,
                0,
                Inv,
                "RST far out of window: SEQ over upper bound",
            ),
            k.c(PSH | ACK, 1001, 5011, 502, 10, Est, "still ESTABLISHED"),
        ]);
        out.push(named(&format!("{fam} out-of-window RST in ESTABLISHED"), s));
        let k = conn(40015);
        let mut s = k.handshake();
        s.extend([
            k.c(FIN | ACK, 1001, 5001, 502, 0, Est, "FIN_WAIT"),
            k.s(
                RST,
                5001,
                0,
                0,
                0,
                Est,
                "RST in FIN_WAIT: closing, validation skipped",
            ),
        ]);
        out.push(named(&format!("{fam} RST in FIN_WAIT"), s));
        let k = conn(40016);
        let mut s = k.handshake();
        s.extend([
            k.c(FIN | ACK, 1001, 5001, 502, 0, Est, "FIN_WAIT"),
            k.s(ACK, 5001, 1002, 509, 0, Est, "CLOSE_WAIT"),
            k.s(RST, 5001, 0, 0, 0, Est, "RST in CLOSE_WAIT"),
            k.s(RST, 5001, 0, 0, 0, Est, "RST in CLOSE"),
        ]);
        out.push(named(&format!("{fam} RST in CLOSE_WAIT and CLOSE"), s));
        let k = conn(40017);
        let mut s = k.handshake();
        s.extend([
            k.c(FIN | ACK, 1001, 5001, 502, 0, Est, "FIN_WAIT"),
            k.s(FIN | ACK, 5001, 1002, 509, 0, Est, "LAST_ACK"),
            k.c(RST, 1002, 0, 0, 0, Est, "RST in LAST_ACK"),
        ]);
        out.push(named(&format!("{fam} RST in LAST_ACK"), s));
        let k = conn(40018);
        let mut s = k.handshake();
        s.extend([
            k.c(FIN | ACK, 1001, 5001, 502, 0, Est, "FIN_WAIT"),
            k.s(FIN | ACK, 5001, 1002, 509, 0, Est, "LAST_ACK"),
            k.c(ACK, 1002, 5002, 502, 0, Est, "TIME_WAIT"),
            k.s(RST, 5002, 0, 0, 0, Est, "RST in TIME_WAIT"),
        ]);
        out.push(named(&format!("{fam} RST in TIME_WAIT"), s));

        // Out-of-window segments (tcp_in_window checks I-IV).
        let k = conn(40020);
        let mut s = k.handshake();
        s.extend([
            k.c(
                PSH | ACK,
                1001 + 200_000,
                5001,
                502,
                10,
                Inv,
                "I: SEQ over upper bound",
            ),
            k.c(
                ACK,
                1001,
                9001,
                502,
                0,
                Inv,
                "III: ACK over upper bound (ACKs data not seen)",
            ),
            k.c(PSH | ACK, 1001, 5001, 502, 100, Est, "in window"),
            k.c(
                PSH | ACK,
                1001u32.wrapping_sub(200_000),
                5001,
                502,
                10,
                Est,
                "II: below the window: ignored, passes",
            ),
            k.s(ACK, 5001, 1101, 509, 0, Est, "in window"),
        ]);
        out.push(named(&format!("{fam} out-of-window data and acks"), s));

        // Retransmissions.
        let k = conn(40021);
        out.push(named(
            &format!("{fam} retransmissions"),
            vec![
                k.c(SYN, 1000, 0, 64240, 0, New, "tcp_new"),
                k.c(
                    SYN,
                    1000,
                    0,
                    64240,
                    0,
                    New,
                    "retransmitted SYN: SYN_SENT -> SYN_SENT, still NEW",
                ),
                k.s(SYN | ACK, 5000, 1001, 65160, 0, Est, "SYN_RECV"),
                k.s(SYN | ACK, 5000, 1001, 65160, 0, Est, "retransmitted SYN-ACK: sIG"),
                k.c(ACK, 1001, 5001, 502, 0, Est, "ESTABLISHED"),
                k.c(PSH | ACK, 1001, 5001, 502, 100, Est, "data"),
                k.c(PSH | ACK, 1001, 5001, 502, 100, Est, "retransmitted data"),
                k.c(PSH | ACK, 1001, 5001, 502, 100, Est, "retransmitted data"),
                k.s(ACK, 5001, 1101, 509, 0, Est, "ack"),
            ],
        ));

        // Window scaling (RFC 7323: only when both ends send the option).
        let k = conn(40022);
        let ws = Opts {
            mss: Some(1460),
            ws: Some(7),
            sack_perm: true,
            ..Opts::default()
        };
        out.push(named(
            &format!("{fam} window scaling"),
            vec![
                k.co(SYN, 1000, 0, 64240, 0, ws, New, "tcp_new, wscale 7"),
                k.so(SYN | ACK, 5000, 1001, 65160, 0, ws, Est, "wscale 7 both ways"),
                k.c(ACK, 1001, 5001, 502, 0, Est, "window 502 << 7"),
                k.s(
                    PSH | ACK,
                    5001 + 60_000,
                    1001,
                    509,
                    1000,
                    Est,
                    "inside 502 << 7 = 64256",
                ),
                k.s(
                    PSH | ACK,
                    5001 + 70_000,
                    1001,
                    509,
                    1000,
                    Est,
                    "a little beyond 64256: \"bytes more than expected\", ignored",
                ),
                k.s(
                    PSH | ACK,
                    5001 + 200_000,
                    1001,
                    509,
                    1000,
                    Inv,
                    "far beyond the scaled window: SEQ over upper bound",
                ),
                k.c(ACK, 1001, 5001 + 61_000, 600, 0, Est, "acks the data"),
                k.s(PSH | ACK, 5001 + 61_000, 1001, 509, 1000, Est, "in window"),
            ],
        ));
        let k = conn(40023);
        out.push(named(
            &format!("{fam} window scaling one-sided"),
            vec![
                k.co(SYN, 1000, 0, 64240, 0, ws, New, "tcp_new, wscale 7"),
                k.s(
                    SYN | ACK,
                    5000,
                    1001,
                    65160,
                    0,
                    Est,
                    "no wscale: scaling off both ways",
                ),
                k.c(ACK, 1001, 5001, 502, 0, Est, "window 502 unscaled"),
                k.s(
                    PSH | ACK,
                    5001 + 60_000,
                    1001,
                    509,
                    1000,
                    Est,
                    "beyond 502 unscaled but within the receiver's max window: ignored",
                ),
                k.s(
                    PSH | ACK,
                    5001 + 200_000,
                    1001,
                    509,
                    1000,
                    Inv,
                    "far beyond: SEQ over upper bound",
                ),
            ],
        ));

        // Port reuse after TIME_WAIT (RFC 1122 reopening; -NF_REPEAT).
        let k = conn(40024);
        let mut s = k.handshake();
        s.extend([
            k.c(FIN | ACK, 1001, 5001, 502, 0, Est, "FIN_WAIT"),
            k.s(FIN | ACK, 5001, 1002, 509, 0, Est, "LAST_ACK"),
            k.c(ACK, 1002, 5002, 502, 0, Est, "TIME_WAIT"),
            k.c(
                SYN,
                90_000,
                0,
                64240,
                0,
                New,
                "SYN in TIME_WAIT after a close: entry killed, new flow",
            ),
            k.s(
                SYN | ACK,
                70_000,
                90_001,
                65160,
                0,
                Est,
                "handshake of the new flow",
            ),
            k.c(ACK, 90_001, 70_001, 502, 0, Est, "ESTABLISHED again"),
        ]);
        out.push(named(&format!("{fam} port reuse after TIME_WAIT"), s));

        // A SYN in ESTABLISHED is ignored; the SYN-ACK answering it resynchronises (sIG b).
        let k = conn(40025);
        let mut s = k.handshake();
        s.extend([
            k.c(
                SYN,
                777_000,
                0,
                64240,
                0,
                Est,
                "SYN in ESTABLISHED: sIG, annotated",
            ),
            k.s(
                SYN | ACK,
                888_000,
                777_001,
                65160,
                0,
                Est,
                "SYN-ACK acking the ignored SYN: back in sync",
            ),
            k.c(
                ACK,
                777_001,
                888_001,
                502,
                0,
                Est,
                "ESTABLISHED on the new numbers",
            ),
        ]);
        out.push(named(&format!("{fam} resync after ignored SYN"), s));

        // Segments that open nothing or are malformed (tcp_error, tcp_new).
        let k = conn(40026);
        let pick = if loose { New } else { Inv };
        out.push(named(
            &format!("{fam} stray segments"),
            vec![
                k.c(
                    ACK,
                    1001,
                    5001,
                    502,
                    0,
                    pick,
                    "tcp_new: ACK picks up mid-stream only with tcp_loose",
                ),
                k.c(
                    PSH | ACK,
                    1001,
                    5001,
                    502,
                    10,
                    pick,
                    "mid-stream data (NEW until a reply with loose)",
                ),
            ],
        ));
        let k = conn(40027);
        out.push(named(
            &format!("{fam} segments that cannot open"),
            vec![
                k.c(
                    FIN | ACK,
                    1001,
                    5001,
                    502,
                    0,
                    Inv,
                    "tcp_new: FIN is sIV from NONE",
                ),
                k.c(RST, 1001, 0, 0, 0, Inv, "tcp_new: RST is sIV from NONE"),
                k.s(
                    SYN | ACK,
                    5000,
                    1001,
                    65160,
                    0,
                    Inv,
                    "tcp_new: SYN-ACK is sIV from NONE",
                ),
                k.c(SYN | FIN, 1000, 0, 64240, 0, Inv, "tcp_error: SYN+FIN"),
                k.c(0, 1000, 0, 64240, 0, Inv, "tcp_error: no flags"),
                k.c(FIN | PSH | URG, 1000, 0, 64240, 0, Inv, "tcp_error: XMAS"),
                k.c(FIN, 1000, 0, 64240, 0, Inv, "tcp_error: FIN without ACK"),
            ],
        ));
        let k = conn(40028);
        let mut s = k.handshake();
        s.extend([
            k.c(FIN, 1001, 0, 502, 0, Inv, "tcp_error: FIN without ACK in a flow"),
            k.c(
                SYN | ACK,
                1001,
                5001,
                502,
                0,
                Inv,
                "original SYN-ACK in ESTABLISHED: sIV",
            ),
            k.s(SYN, 5001, 0, 502, 0, Inv, "reply SYN in ESTABLISHED: sIV"),
            k.c(ACK, 1001, 5001, 502, 0, Est, "still ESTABLISHED"),
        ]);
        out.push(named(&format!("{fam} invalid segments in a flow"), s));
        let k = conn(40029);
        out.push(named(
            &format!("{fam} ACK before SYN-ACK"),
            vec![
                k.c(SYN, 1000, 0, 64240, 0, New, "tcp_new"),
                k.c(ACK, 1001, 5001, 502, 0, Inv, "original ACK in SYN_SENT: sIV"),
                k.s(
                    ACK,
                    5001,
                    1001,
                    509,
                    0,
                    Est,
                    "reply ACK in SYN_SENT: sIG (half-open?)",
                ),
                k.c(
                    SYN,
                    1000,
                    0,
                    64240,
                    0,
                    Est,
                    "after a reply was seen the SYN is ESTABLISHED",
                ),
            ],
        ));

        // SACK beyond the data seen is an ACK over the upper bound.
        let k = conn(40030);
        let sp = Opts {
            sack_perm: true,
            ..Opts::default()
        };
        out.push(named(
            &format!("{fam} sack"),
            vec![
                k.co(SYN, 1000, 0, 64240, 0, sp, New, "tcp_new, SACK-permitted"),
                k.so(SYN | ACK, 5000, 1001, 65160, 0, sp, Est, "SACK-permitted"),
                k.c(ACK, 1001, 5001, 502, 0, Est, "ESTABLISHED"),
                k.s(PSH | ACK, 5001, 1001, 509, 100, Est, "data"),
                k.s(PSH | ACK, 5201, 1001, 509, 100, Est, "data after a hole"),
                k.co(
                    ACK,
                    1001,
                    5101,
                    502,
                    0,
                    Opts {
                        sack: Some((5201, 5301)),
                        ..Opts::default()
                    },
                    Est,
                    "SACK within data seen",
                ),
                k.co(
                    ACK,
                    1001,
                    5101,
                    502,
                    0,
                    Opts {
                        sack: Some((5201, 9301)),
                        ..Opts::default()
                    },
                    Inv,
                    "tcp_sack: right edge beyond td_end: ACK over upper bound",
                ),
            ],
        ));

        // UDP: unreplied, replied.
        let (c, srv) = hosts(v6, run, 60);
        let udp = |side, sp, dp, expect, why| {
            let (src, dst) = if side == Side::Client { (c, srv) } else { (srv, c) };
            Step {
                side,
                src,
                dst,
                l4: L4::Udp { sp, dp, len: 20 },
                expect,
                why,
            }
        };
        out.push(named(
            &format!("{fam} udp"),
            vec![
                udp(Side::Client, 5353, 53, New, "udp: first packet opens"),
                udp(Side::Client, 5353, 53, New, "no reply yet: NEW"),
                udp(
                    Side::Server,
                    53,
                    5353,
                    Est,
                    "reply direction: ESTABLISHED, SEEN_REPLY",
                ),
                udp(Side::Client, 5353, 53, Est, "after a reply: ESTABLISHED"),
                udp(Side::Client, 5354, 53, New, "another port: another flow"),
            ],
        ));

        // ICMP echo and errors.
        let (c, srv) = hosts(v6, run, 61);
        let (echo_req, echo_rep) = if v6 { (128, 129) } else { (8, 0) };
        let icmp = |side, msg_type, code, rest: [u8; 4], data: Vec<u8>, src, dst, expect, why| Step {
            side,
            src,
            dst,
            l4: L4::Icmp {
                msg_type,
                code,
                rest,
                data,
            },
            expect,
            why,
        };
        out.push(named(
            &format!("{fam} icmp echo"),
            vec![
                icmp(
                    Side::Client,
                    echo_req,
                    0,
                    [0x12, 0x34, 0, 1],
                    vec![0; 16],
                    c,
                    srv,
                    New,
                    "echo request opens",
                ),
                icmp(
                    Side::Server,
                    echo_rep,
                    0,
                    [0x12, 0x34, 0, 1],
                    vec![0; 16],
                    srv,
                    c,
                    Est,
                    "echo reply",
                ),
                icmp(
                    Side::Client,
                    echo_req,
                    0,
                    [0x12, 0x34, 0, 2],
                    vec![0; 16],
                    c,
                    srv,
                    Est,
                    "next request",
                ),
                icmp(
                    Side::Server,
                    echo_rep,
                    0,
                    [0x43, 0x21, 0, 1],
                    vec![0; 16],
                    srv,
                    c,
                    Inv,
                    "reply to nothing: valid_new refuses",
                ),
                icmp(
                    Side::Server,
                    echo_req,
                    0,
                    [0x12, 0x34, 0, 1],
                    vec![0; 16],
                    srv,
                    c,
                    New,
                    "a request the other way is its own flow",
                ),
            ],
        ));
        if !v6 {
            out.push(named(
                "v4 icmp other types",
                vec![
                    icmp(
                        Side::Client,
                        13,
                        0,
                        [0, 9, 0, 1],
                        vec![0; 12],
                        c,
                        srv,
                        New,
                        "timestamp request opens",
                    ),
                    icmp(
                        Side::Server,
                        14,
                        0,
                        [0, 9, 0, 1],
                        vec![0; 12],
                        srv,
                        c,
                        Est,
                        "timestamp reply",
                    ),
                    icmp(
                        Side::Server,
                        9,
                        0,
                        [0; 4],
                        vec![0; 8],
                        srv,
                        c,
                        Inv,
                        "router advertisement: no invmap",
                    ),
                    icmp(
                        Side::Server,
                        30,
                        0,
                        [0; 4],
                        vec![0; 8],
                        srv,
                        c,
                        Inv,
                        "type above NR_ICMP_TYPES",
                    ),
                ],
            ));
        }

        // ICMP errors quoting tracked and untracked flows (nf_conntrack_inet_error).
        let (c, srv) = hosts(v6, run, 62);
        let r = server_router(v6);
        let (unreach, unreach_code, time_exceeded) = if v6 { (1, 4, 3) } else { (3, 3, 11) };
        let udp_out = L4::Udp {
            sp: 7000,
            dp: 7001,
            len: 8,
        };
        let quote = |src, dst, l4: &L4| {
            let (proto, body) = l4_bytes(src, dst, l4);
            ip_packet(src, dst, proto, &body, 0)
        };
        let tcp_syn = L4::Tcp {
            sp: 7100,
            dp: 443,
            flags: SYN,
            seq: 1,
            ack: 0,
            win: 1000,
            len: 0,
            opts: Opts::default(),
        };
        let ping = L4::Icmp {
            msg_type: echo_req,
            code: 0,
            rest: [0x55, 0x66, 0, 1],
            data: vec![0; 8],
        };
        let mtu = if v6 { [0, 0, 5, 0] } else { [0, 0, 2, 0] };
        let untracked_udp = L4::Udp {
            sp: 7200,
            dp: 7201,
            len: 8,
        };
        out.push(named(
            &format!("{fam} icmp errors"),
            vec![
                Step {
                    side: Side::Client,
                    src: c,
                    dst: srv,
                    l4: udp_out.clone(),
                    expect: New,
                    why: "udp opens",
                },
                icmp(
                    Side::Server,
                    unreach,
                    unreach_code,
                    [0; 4],
                    quote(c, srv, &udp_out),
                    srv,
                    c,
                    Rel,
                    "port unreachable quoting the flow, sent to its source: RELATED",
                ),
                icmp(
                    Side::Server,
                    unreach,
                    unreach_code,
                    [0; 4],
                    quote(c, srv, &untracked_udp),
                    srv,
                    c,
                    Inv,
                    "quoting an unknown flow: no conntrack found",
                ),
                icmp(
                    Side::Server,
                    unreach,
                    unreach_code,
                    [0; 4],
                    quote(c, srv, &udp_out)[..if v6 { 42 } else { 22 }].to_vec(),
                    srv,
                    c,
                    Inv,
                    "quote too short for the ports",
                ),
                Step {
                    side: Side::Client,
                    src: c,
                    dst: srv,
                    l4: tcp_syn.clone(),
                    expect: New,
                    why: "tcp opens",
                },
                icmp(
                    Side::Server,
                    time_exceeded,
                    0,
                    [0; 4],
                    quote(c, srv, &tcp_syn),
                    r,
                    c,
                    Rel,
                    "time exceeded from a router on the path: RELATED",
                ),
                icmp(
                    Side::Server,
                    if v6 { 2 } else { 3 },
                    if v6 { 0 } else { 4 },
                    mtu,
                    quote(c, srv, &tcp_syn),
                    r,
                    c,
                    Rel,
                    "packet too big / fragmentation needed: RELATED",
                ),
                Step {
                    side: Side::Client,
                    src: c,
                    dst: srv,
                    l4: ping.clone(),
                    expect: New,
                    why: "echo opens",
                },
                icmp(
                    Side::Server,
                    unreach,
                    unreach_code,
                    [0; 4],
                    quote(c, srv, &ping),
                    srv,
                    c,
                    Rel,
                    "error quoting an echo request: RELATED",
                ),
                icmp(
                    Side::Client,
                    unreach,
                    unreach_code,
                    [0; 4],
                    quote(
                        srv,
                        c,
                        &L4::Udp {
                            sp: 7001,
                            dp: 7000,
                            len: 8,
                        },
                    ),
                    c,
                    srv,
                    Rel,
                    "error from the client about a reply packet: RELATED in the original direction",
                ),
            ],
        ));

        if v6 {
            let (c, srv) = hosts(v6, run, 63);
            out.push(named(
                "v6 neighbour discovery",
                vec![icmp(
                    Side::Client,
                    135,
                    0,
                    [0; 4],
                    vec![0; 16],
                    c,
                    srv,
                    Unt,
                    "noct_valid_new: neighbour solicitation is UNTRACKED",
                )],
            ));
        }

        // Another protocol: generic tracking.
        let (c, srv) = hosts(v6, run, 64);
        let raw = |side, src, dst, expect, why| Step {
            side,
            src,
            dst,
            l4: L4::Raw {
                proto: 253,
                data: vec![1, 2, 3, 4, 5, 6, 7, 8],
            },
            expect,
            why,
        };
        out.push(named(
            &format!("{fam} generic protocol"),
            vec![
                raw(Side::Client, c, srv, New, "generic: opens"),
                raw(Side::Client, c, srv, New, "no reply yet"),
                raw(Side::Server, srv, c, Est, "reply"),
                raw(Side::Client, c, srv, Est, "after a reply"),
            ],
        ));
    }
    out
}

/// A small deterministic generator (xorshift64*), so random sequences replay identically.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// Random TCP conversations (plausible and broken segments mixed) with ICMP errors quoting
/// them, for the differential test. Expectations are not known in advance: only kernel and
/// levee are compared. Flow `i` uses client host `100 + i % 100` and port `41000 + i`.
pub fn random_tcp(seed: u64, run: u8, flows: usize, steps: usize) -> Vec<Scenario> {
    let mut rng = Rng(seed | 1);
    let mut out = Vec::new();
    for f in 0..flows {
        let v6 = f % 2 == 1;
        let (c, s) = hosts(v6, run, 100 + (f % 100) as u8);
        let k = Conn {
            c,
            s,
            cp: 41_000 + f as u16,
            sp: rng.pick(&[80, 443, 8080]),
        };
        let mut next = [rng.next() as u32, rng.next() as u32];
        let mut sent_any = [false, false];
        let mut last: Option<(Side, L4)> = None;
        let mut seq_steps = Vec::new();
        for _ in 0..steps {
            if rng.below(100) < 6 {
                if let Some((side, l4)) = &last {
                    // An ICMP error about the last segment, from its receiver or a router.
                    let (src, dst) = if *side == Side::Client { (c, s) } else { (s, c) };
                    let (proto, body) = l4_bytes(src, dst, l4);
                    let mut quoted = ip_packet(src, dst, proto, &body, 0);
                    quoted.truncate(rng.pick(&[28usize, 48, 60, 80]).min(quoted.len()));
                    let from = match rng.below(3) {
                        0 => dst,
                        1 => server_router(v6),
                        _ => src,
                    };
                    let mut to = if rng.below(4) == 0 { dst } else { src };
                    if from == server_router(v6) && to == s {
                        // Both on the server side: the router would not forward it across.
                        to = c;
                    }
                    let err_side = if from == c { Side::Client } else { Side::Server };
                    let (t, code) = if v6 { (1, 4) } else { (3, 3) };
                    if from != to {
                        seq_steps.push(Step {
                            side: err_side,
                            src: from,
                            dst: to,
                            l4: L4::Icmp {
                                msg_type: t,
                                code,
                                rest: [0; 4],
                                data: quoted,
                            },
                            expect: CtState::Untracked,
                            why: "random",
                        });
                        continue;
                    }
                }
            }
            let side = if rng.below(100) < 55 {
                Side::Client
            } else {
                Side::Server
            };
            let d = usize::from(side == Side::Server);
            let flags = rng.pick(&[
                SYN,
                SYN | ACK,
                ACK,
                ACK,
                ACK,
                PSH | ACK,
                PSH | ACK,
                PSH | ACK,
                FIN | ACK,
                RST,
                RST | ACK,
                FIN,
                SYN | FIN,
                0,
                ACK | URG,
            ]);
            if flags & SYN != 0 && (!sent_any[d] || rng.below(3) == 0) {
                next[d] = rng.next() as u32;
            }
            let jitter = |rng: &mut Rng, base: u32| -> u32 {
                match rng.below(20) {
                    0 => base.wrapping_sub(1),
                    1 => base.wrapping_add(rng.below(3000) as u32),
                    2 => base.wrapping_sub(rng.below(3000) as u32),
                    3 => base.wrapping_add(100_000 + rng.below(1_000_000) as u32),
                    4 => base.wrapping_sub(100_000 + rng.below(1_000_000) as u32),
                    5 => rng.next() as u32,
                    6 => 0,
                    _ => base,
                }
            };
            let seq = jitter(&mut rng, next[d]);
            let ack = if flags & ACK != 0 {
                jitter(&mut rng, next[1 - d])
            } else {
                0
            };
            let len = if flags & (SYN | RST) != 0 {
                0
            } else {
                rng.pick(&[0usize, 0, 0, 1, 100, 1400])
            };
            let win = rng.pick(&[502u16, 64240, 65535, 0, 1, 8192]);
            let opts = if flags & SYN != 0 {
                Opts {
                    mss: Some(1460),
                    ws: rng.pick(&[None, Some(0), Some(7), Some(14), Some(20)]),
                    sack_perm: rng.below(2) == 0,
                    ..Opts::default()
                }
            } else if rng.below(10) == 0 {
                let edge = next[1 - d].wrapping_add(rng.below(5000) as u32);
                Opts {
                    sack: Some((edge.wrapping_sub(100), edge)),
                    ..Opts::default()
                }
            } else {
                Opts::default()
            };
            let end = seq
                .wrapping_add(len as u32)
                .wrapping_add(u32::from(flags & SYN != 0))
                .wrapping_add(u32::from(flags & FIN != 0));
            if seq == next[d] || (end.wrapping_sub(next[d]) as i32) > 0 && rng.below(2) == 0 {
                next[d] = end;
            }
            sent_any[d] = true;
            let step = if side == Side::Client {
                k.co(flags, seq, ack, win, len, opts, CtState::Untracked, "random")
            } else {
                k.so(flags, seq, ack, win, len, opts, CtState::Untracked, "random")
            };
            last = Some((side, step.l4.clone()));
            seq_steps.push(step);
        }
        out.push(Scenario {
            name: format!("random tcp {f}"),
            steps: seq_steps,
        });
    }
    out
}

/// A scratch scenario for `LVCT_KDIFF_TRACE=custom` experiments: the reduced form of the
/// known difference in `kernel_diff.rs` (server SYN, ignored client ACK, second SYN, RST).
pub fn custom() -> Scenario {
    let (c, s) = hosts(false, 0, 250);
    let k = Conn {
        c,
        s,
        cp: 45000,
        sp: 80,
    };
    named(
        "custom",
        vec![
            k.s(SYN, 3_161_854_725, 0, 65535, 0, New, "server opens"),
            k.c(
                PSH | ACK,
                2_537_856_210,
                3_332_583_593,
                1,
                1400,
                Est,
                "reply ACK ignored (sIG)",
            ),
            k.s(SYN, 3_161_854_725, 0, 8192, 0, Est, "SYN again"),
            k.s(
                RST | ACK,
                3_161_854_726,
                2_537_857_610,
                0,
                0,
                Est,
                "RST acking the ignored ACK",
            ),
        ],
    )
}
