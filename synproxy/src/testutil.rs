//! Test helpers: real frames built with levee-packet's builders, and a parser that checks every
//! checksum of what the proxy wrote.

use std::net::{IpAddr, Ipv4Addr};

use levee_packet::checksum::PseudoHeader;
use levee_packet::ethernet::{ethertype, EthernetRepr, MacAddr};
use levee_packet::ip_protocol;
use levee_packet::ipv4::{self, Ipv4Repr};
use levee_packet::ipv6::{self, Ipv6Repr};
use levee_packet::parse::{parse_frame, FrameInfo, L3Info};
use levee_packet::tcp::{self, SeqNum, TcpFlags, TcpRepr, Timestamps};
use levee_packet::vlan::VlanRepr;

use crate::cookie::{CookieAddrs, CookieTuple};
use crate::{AckVerdict, Config, MasterSecret, ProxyConn, ServerVerdict, SynProxy, SynRule, SynVerdict};

pub const CLIENT_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xc1]);
pub const SERVER_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x5e]);
pub const MASTER: MasterSecret = MasterSecret::from_bytes(*b"levee-unit-tests");
/// 2026-11-26T00:00:00Z plus a bit.
pub const NOW_NS: u64 = 1_795_651_200_123_456_789;

/// Where a test flow lives: family, VLAN tags, endpoints.
#[derive(Debug, Clone, Copy)]
pub struct Flow {
    pub client: IpAddr,
    pub server: IpAddr,
    pub client_port: u16,
    pub server_port: u16,
    /// VLAN ids, outer first; 0..=2 of them.
    pub vlans: [Option<u16>; 2],
}

impl Flow {
    pub fn v4() -> Flow {
        Flow {
            client: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 10)),
            server: IpAddr::V4(Ipv4Addr::new(198, 19, 0, 80)),
            client_port: 51234,
            server_port: 80,
            vlans: [None, None],
        }
    }

    pub fn v6() -> Flow {
        Flow {
            client: IpAddr::V6("2001:2::10".parse().unwrap()),
            server: IpAddr::V6("2001:2:0:1::80".parse().unwrap()),
            ..Flow::v4()
        }
    }

    pub fn with_vlans(mut self, count: usize) -> Flow {
        self.vlans = match count {
            0 => [None, None],
            1 => [Some(100), None],
            _ => [Some(200), Some(300)],
        };
        self
    }

    /// Every family × tag-count combination.
    pub fn all() -> Vec<Flow> {
        let mut out = Vec::new();
        for base in [Flow::v4(), Flow::v6()] {
            for tags in 0..=2 {
                out.push(base.with_vlans(tags));
            }
        }
        out
    }

    /// The cookie tuple of the client's SYN.
    pub fn cookie_tuple(&self) -> CookieTuple {
        let addrs = match (self.client, self.server) {
            (IpAddr::V4(c), IpAddr::V4(s)) => CookieAddrs::V4 {
                client: c.octets(),
                server: s.octets(),
            },
            (IpAddr::V6(c), IpAddr::V6(s)) => CookieAddrs::V6 {
                client: c.octets(),
                server: s.octets(),
            },
            _ => unreachable!("mixed families"),
        };
        CookieTuple {
            addrs,
            client_port: self.client_port,
            server_port: self.server_port,
        }
    }

    pub fn is_v6(&self) -> bool {
        self.server.is_ipv6()
    }

    pub fn link_len(&self) -> usize {
        14 + 4 * self.vlans.iter().flatten().count()
    }

    /// A frame from the client (`to_server`) or from the server, with `tcp` as the segment.
    pub fn frame(&self, to_server: bool, tcp: &TcpRepr<'_>) -> Vec<u8> {
        self.frame_with(to_server, tcp, 64, &[])
    }

    /// As [`Flow::frame`], with a TTL and IPv4 options (ignored for IPv6).
    pub fn frame_with(&self, to_server: bool, tcp: &TcpRepr<'_>, ttl: u8, ip_options: &[u8]) -> Vec<u8> {
        let (src_mac, dst_mac, src, dst) = if to_server {
            (CLIENT_MAC, SERVER_MAC, self.client, self.server)
        } else {
            (SERVER_MAC, CLIENT_MAC, self.server, self.client)
        };
        let ip_type = if self.is_v6() {
            ethertype::IPV6
        } else {
            ethertype::IPV4
        };
        let tags: Vec<u16> = self.vlans.iter().flatten().copied().collect();
        let mut out = vec![0u8; 14 + 4 * tags.len()];
        let first = match tags.len() {
            0 => ip_type,
            1 => ethertype::VLAN,
            _ => ethertype::QINQ,
        };
        EthernetRepr {
            dst_addr: dst_mac,
            src_addr: src_mac,
            ethertype: first,
        }
        .emit(&mut out)
        .unwrap();
        for (i, &vid) in tags.iter().enumerate() {
            let next = if i + 1 < tags.len() {
                ethertype::VLAN
            } else {
                ip_type
            };
            VlanRepr {
                pcp: 0,
                dei: false,
                vid,
                ethertype: next,
            }
            .emit(&mut out[14 + 4 * i..])
            .unwrap();
        }
        let tcp_len = tcp.buffer_len();
        let l3 = out.len();
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let hl = 20 + ip_options.len();
                out.resize(l3 + hl + tcp_len, 0);
                Ipv4Repr {
                    src_addr: s,
                    dst_addr: d,
                    protocol: ip_protocol::TCP,
                    payload_len: tcp_len + ip_options.len(),
                    ttl,
                    dscp: 10,
                    ecn: 0,
                    ident: 0x1234,
                    dont_frag: true,
                    more_frags: false,
                    frag_offset: 0,
                }
                .emit(&mut out[l3..])
                .unwrap();
                if !ip_options.is_empty() {
                    let mut p = ipv4::Packet::new_unchecked(&mut out[l3..l3 + hl]);
                    p.set_ihl((hl / 4) as u8);
                    p.options_mut().copy_from_slice(ip_options);
                    p.set_checksum(0);
                    p.fill_checksum();
                }
                let pseudo = PseudoHeader::V4 { src: s, dst: d };
                tcp.emit(&mut out[l3 + hl..], &pseudo).unwrap();
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                out.resize(l3 + 40 + tcp_len, 0);
                Ipv6Repr {
                    src_addr: s,
                    dst_addr: d,
                    next_header: ip_protocol::TCP,
                    payload_len: tcp_len,
                    hop_limit: ttl,
                    traffic_class: 0x28,
                    flow_label: 0x12345,
                }
                .emit(&mut out[l3..])
                .unwrap();
                let pseudo = PseudoHeader::V6 { src: s, dst: d };
                tcp.emit(&mut out[l3 + 40..], &pseudo).unwrap();
            }
            _ => unreachable!("mixed families"),
        }
        if out.len() < 60 {
            out.resize(60, 0);
        }
        out
    }

    /// A client SYN with the given options.
    pub fn syn(&self, isn: u32, opts: SynOpts) -> TcpRepr<'static> {
        let mut flags = TcpFlags::SYN;
        if opts.ecn {
            flags |= TcpFlags::ECE | TcpFlags::CWR;
        }
        let mut r = TcpRepr::new(
            self.client_port,
            self.server_port,
            SeqNum(isn),
            SeqNum(0),
            flags,
            64240,
        );
        r.max_seg_size = opts.mss;
        r.window_scale = opts.wscale;
        r.sack_permitted = opts.sack;
        r.timestamps = opts.tsval.map(|tsval| Timestamps { tsval, tsecr: 0 });
        r
    }
}

/// The options of a client SYN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SynOpts {
    pub mss: Option<u16>,
    pub wscale: Option<u8>,
    pub sack: bool,
    pub tsval: Option<u32>,
    pub ecn: bool,
}

impl SynOpts {
    /// What a Linux client sends.
    pub fn linux() -> SynOpts {
        SynOpts {
            mss: Some(1460),
            wscale: Some(7),
            sack: true,
            tsval: Some(0x0102_0304),
            ecn: false,
        }
    }

    /// A spread of option combinations.
    pub fn combinations() -> Vec<SynOpts> {
        let mut out = Vec::new();
        for mss in [None, Some(500), Some(1300), Some(1460), Some(9000)] {
            for wscale in [None, Some(0), Some(7), Some(14), Some(15)] {
                for sack in [false, true] {
                    for tsval in [None, Some(0xfeed_0000)] {
                        for ecn in [false, true] {
                            out.push(SynOpts {
                                mss,
                                wscale,
                                sack,
                                tsval,
                                ecn,
                            });
                        }
                    }
                }
            }
        }
        out
    }
}

/// A frame the proxy wrote, parsed back with every checksum verified.
#[derive(Debug)]
pub struct Parsed<'a> {
    pub info: FrameInfo,
    pub dst_mac: MacAddr,
    pub src_mac: MacAddr,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ttl: u8,
    pub tcp: TcpRepr<'a>,
}

/// Parses `frame` as levee-packet would and checks the IPv4 header checksum and the TCP
/// checksum; panics with a description otherwise.
pub fn parse(frame: &[u8]) -> Parsed<'_> {
    let info = parse_frame(frame).unwrap_or_else(|e| panic!("unparsable frame: {e}"));
    let l3 = usize::from(info.l3_offset);
    let (src, dst, l4, len, ttl, pseudo) = match info.l3 {
        L3Info::Ipv4(ip) => {
            let p = ipv4::Packet::new_checked(&frame[l3..]).unwrap();
            assert!(p.verify_checksum(), "IPv4 header checksum");
            assert_eq!(p.header_len(), ipv4::HEADER_LEN, "no IPv4 options");
            assert!(p.dont_frag());
            let pseudo = PseudoHeader::V4 {
                src: ip.src,
                dst: ip.dst,
            };
            (
                IpAddr::V4(ip.src),
                IpAddr::V4(ip.dst),
                ip.l4_offset,
                ip.l4_len,
                p.ttl(),
                pseudo,
            )
        }
        L3Info::Ipv6(ip) => {
            let p = ipv6::Packet::new_checked(&frame[l3..]).unwrap();
            assert_eq!(p.next_header(), ip_protocol::TCP);
            let pseudo = PseudoHeader::V6 {
                src: ip.src,
                dst: ip.dst,
            };
            (
                IpAddr::V6(ip.src),
                IpAddr::V6(ip.dst),
                ip.l4_offset,
                ip.l4_len,
                p.hop_limit(),
                pseudo,
            )
        }
        other => panic!("not IP: {other:?}"),
    };
    let seg = &frame[usize::from(l4)..usize::from(l4) + usize::from(len)];
    let packet = tcp::Packet::new_checked(seg).unwrap();
    let tcp = TcpRepr::parse(&packet, &pseudo).unwrap_or_else(|e| panic!("TCP: {e}"));
    Parsed {
        info,
        dst_mac: MacAddr(frame[0..6].try_into().unwrap()),
        src_mac: MacAddr(frame[6..12].try_into().unwrap()),
        src,
        dst,
        ttl,
        tcp,
    }
}

/// The TCP checksum of the segment in `frame`, recomputed from scratch.
pub fn full_tcp_checksum(frame: &[u8]) -> (u16, u16) {
    let info = parse_frame(frame).unwrap();
    let (l4, len, pseudo) = match info.l3 {
        L3Info::Ipv4(ip) => (
            ip.l4_offset,
            ip.l4_len,
            PseudoHeader::V4 {
                src: ip.src,
                dst: ip.dst,
            },
        ),
        L3Info::Ipv6(ip) => (
            ip.l4_offset,
            ip.l4_len,
            PseudoHeader::V6 {
                src: ip.src,
                dst: ip.dst,
            },
        ),
        _ => panic!("not IP"),
    };
    let seg = &frame[usize::from(l4)..usize::from(l4) + usize::from(len)];
    let packet = tcp::Packet::new_checked(seg).unwrap();
    (packet.checksum(), packet.compute_checksum(&pseudo))
}

/// Checks that the stored TCP checksum equals a full recomputation.
pub fn assert_tcp_checksum_exact(frame: &[u8]) {
    let (stored, full) = full_tcp_checksum(frame);
    assert_eq!(
        stored, full,
        "incremental checksum {stored:#06x} vs full {full:#06x}"
    );
}

/// A proxy with the default config (or `config`), at [`NOW_NS`].
pub fn proxy_with(config: Config) -> SynProxy {
    let mut p = SynProxy::new(config, &MASTER).unwrap();
    p.set_now(NOW_NS);
    p
}

pub fn proxy() -> SynProxy {
    proxy_with(Config::default())
}

/// `parse_frame` of a frame built here.
pub fn info(frame: &[u8]) -> FrameInfo {
    parse_frame(frame).unwrap()
}

/// The server's options in its SYN-ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerOpts {
    pub mss: u16,
    pub wscale: Option<u8>,
    pub sack: bool,
    pub tsval: Option<u32>,
    pub window: u16,
}

impl Default for ServerOpts {
    fn default() -> Self {
        ServerOpts {
            mss: 1460,
            wscale: Some(7),
            sack: true,
            tsval: Some(0x7000_0000),
            window: 65160,
        }
    }
}

/// A handshake driven through the proxy step by step.
#[derive(Debug, Clone)]
pub struct Handshake {
    pub flow: Flow,
    pub rule: SynRule,
    pub client_isn: u32,
    pub cookie: u32,
    /// TSval of our SYN-ACK.
    pub synack_ts: Option<u32>,
    /// Window scale we advertised.
    pub adv_wscale: Option<u8>,
    pub conn: Option<ProxyConn>,
}

impl Handshake {
    /// Sends the client's SYN through `proxy` and reads the SYN-ACK.
    pub fn syn(proxy: &mut SynProxy, flow: Flow, opts: SynOpts, rule: SynRule, client_isn: u32) -> Handshake {
        let syn = flow.frame(true, &flow.syn(client_isn, opts));
        let mut buf = syn.clone();
        buf.resize(256, 0);
        let verdict = proxy.answer_syn(&mut buf, syn.len(), &info(&syn), &rule);
        let SynVerdict::Reply { len } = verdict else {
            panic!("SYN not answered: {verdict:?}");
        };
        let p = parse(&buf[..len]);
        Handshake {
            flow,
            rule,
            client_isn,
            cookie: p.tcp.seq_number.0,
            synack_ts: p.tcp.timestamps.map(|t| t.tsval),
            adv_wscale: p.tcp.window_scale,
            conn: None,
        }
    }

    /// A client segment after the handshake: `seq` and `ack` relative to the ISNs (1 = first
    /// byte), our TSval echoed when timestamps are on.
    pub fn client_segment(
        &self,
        flags: TcpFlags,
        rel_seq: u32,
        rel_ack: u32,
        tsval: u32,
        window: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut r = TcpRepr::new(
            self.flow.client_port,
            self.flow.server_port,
            SeqNum(self.client_isn.wrapping_add(rel_seq)),
            SeqNum(self.cookie.wrapping_add(rel_ack)),
            flags,
            window,
        );
        r.timestamps = self.synack_ts.map(|ecr| Timestamps { tsval, tsecr: ecr });
        r.payload = payload;
        self.flow.frame(true, &r)
    }

    /// The client's ACK of our SYN-ACK.
    pub fn ack(&self) -> Vec<u8> {
        self.client_segment(TcpFlags::ACK, 1, 1, 0x0102_0400, 502, &[])
    }

    /// Sends the client's ACK; returns the server SYN frame.
    pub fn open(&mut self, proxy: &mut SynProxy) -> Vec<u8> {
        let ack = self.ack();
        let mut buf = ack.clone();
        buf.resize(256, 0);
        let verdict = proxy.client_ack(&mut buf, ack.len(), &info(&ack), &self.rule);
        let AckVerdict::Open { conn, len } = verdict else {
            panic!("cookie ACK refused: {verdict:?}");
        };
        self.conn = Some(conn);
        buf.truncate(len);
        buf
    }

    /// The server's SYN-ACK to our SYN.
    pub fn server_synack(&self, server_isn: u32, o: ServerOpts) -> Vec<u8> {
        let mut r = TcpRepr::new(
            self.flow.server_port,
            self.flow.client_port,
            SeqNum(server_isn),
            SeqNum(self.client_isn.wrapping_add(1)),
            TcpFlags::SYN | TcpFlags::ACK,
            o.window,
        );
        r.max_seg_size = Some(o.mss);
        r.window_scale = o.wscale;
        r.sack_permitted = o.sack;
        r.timestamps = o.tsval.map(|tsval| Timestamps {
            tsval,
            tsecr: 0x0102_0400,
        });
        self.flow.frame(false, &r)
    }

    /// Feeds the server's SYN-ACK; returns (window update for the client, ACK for the server).
    pub fn establish(&mut self, proxy: &mut SynProxy, server_isn: u32, o: ServerOpts) -> (Vec<u8>, Vec<u8>) {
        let synack = self.server_synack(server_isn, o);
        let mut buf = synack.clone();
        buf.resize(256, 0);
        let mut to_server = vec![0u8; 256];
        let conn = self.conn.as_mut().expect("open first");
        let verdict = proxy.server_segment(conn, &mut buf, synack.len(), &info(&synack), &mut to_server);
        let ServerVerdict::Established {
            to_client,
            to_server_len,
        } = verdict
        else {
            panic!("SYN-ACK not taken: {verdict:?}");
        };
        buf.truncate(to_client);
        to_server.truncate(to_server_len);
        (buf, to_server)
    }
}
