//! Property tests of `parse_frame` through the public API: frames built with the crate's own
//! builders parse back to the values they were built from, and no byte string panics.
//!
//! Generated addresses stay inside the benchmarking ranges 198.18.0.0/15 and 2001:2::/48.

use std::net::{Ipv4Addr, Ipv6Addr};

use levee_packet::checksum::PseudoHeader;
use levee_packet::ethernet::{ethertype, EthernetRepr, MacAddr};
use levee_packet::icmp::IcmpRepr;
use levee_packet::icmpv6::Icmpv6Repr;
use levee_packet::ip_protocol;
use levee_packet::ipv4::Ipv4Repr;
use levee_packet::ipv6::{FragmentHeader, Ipv6Repr};
use levee_packet::tcp::{SackBlocks, SeqNum, TcpFlags, TcpRepr, Timestamps};
use levee_packet::udp::UdpRepr;
use levee_packet::vlan::VlanRepr;
use levee_packet::{parse_frame, FlowTuple, FragKind, L3Info, L4Info};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Transport {
    Tcp {
        ports: (u16, u16),
        flags: u8,
        mss: Option<u16>,
        wscale: Option<u8>,
        sack_permitted: bool,
        timestamps: Option<(u32, u32)>,
    },
    Udp {
        ports: (u16, u16),
    },
    Echo {
        ident: u16,
        reply: bool,
    },
    /// GRE, which `parse_frame` does not look into.
    Opaque,
}

#[derive(Debug, Clone)]
enum Network {
    V4 {
        src: Ipv4Addr,
        dst: Ipv4Addr,
    },
    V6 {
        src: Ipv6Addr,
        dst: Ipv6Addr,
        hop_by_hop: bool,
        dest_opts: bool,
    },
}

#[derive(Debug, Clone)]
struct Spec {
    vids: Vec<u16>,
    network: Network,
    /// `None`: unfragmented; `Some(0)`: first fragment; `Some(n)`: later fragment at n*8.
    fragment: Option<u16>,
    transport: Transport,
    payload: Vec<u8>,
    padding: usize,
}

fn v4_addr() -> impl Strategy<Value = Ipv4Addr> {
    (0u32..1 << 17).prop_map(|low| Ipv4Addr::from(0xC612_0000 | low))
}

fn v6_addr() -> impl Strategy<Value = Ipv6Addr> {
    any::<u128>().prop_map(|low| {
        let prefix = 0x2001_0002_0000u128 << 80;
        Ipv6Addr::from(prefix | (low & ((1u128 << 80) - 1)))
    })
}

fn network() -> impl Strategy<Value = Network> {
    prop_oneof![
        (v4_addr(), v4_addr()).prop_map(|(src, dst)| Network::V4 { src, dst }),
        (v6_addr(), v6_addr(), any::<bool>(), any::<bool>()).prop_map(|(src, dst, hop_by_hop, dest_opts)| {
            Network::V6 {
                src,
                dst,
                hop_by_hop,
                dest_opts,
            }
        }),
    ]
}

fn transport() -> impl Strategy<Value = Transport> {
    prop_oneof![
        (
            any::<(u16, u16)>(),
            any::<u8>(),
            proptest::option::of(any::<u16>()),
            proptest::option::of(0u8..15),
            any::<bool>(),
            proptest::option::of(any::<(u32, u32)>()),
        )
            .prop_map(|(ports, flags, mss, wscale, sack_permitted, timestamps)| {
                Transport::Tcp {
                    ports,
                    flags,
                    mss,
                    wscale,
                    sack_permitted,
                    timestamps,
                }
            }),
        any::<(u16, u16)>().prop_map(|ports| Transport::Udp { ports }),
        (any::<u16>(), any::<bool>()).prop_map(|(ident, reply)| Transport::Echo { ident, reply }),
        Just(Transport::Opaque),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        proptest::collection::vec(0u16..4096, 0..=2),
        network(),
        proptest::option::of(prop_oneof![Just(0u16), 1u16..200]),
        transport(),
        proptest::collection::vec(any::<u8>(), 0..64),
        0usize..24,
    )
        .prop_map(|(vids, network, fragment, transport, payload, padding)| Spec {
            vids,
            network,
            fragment,
            transport,
            payload,
            padding,
        })
}

const MAC_A: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 1]);
const MAC_B: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 2]);

impl Spec {
    fn pseudo(&self) -> PseudoHeader {
        match self.network {
            Network::V4 { src, dst } => PseudoHeader::V4 { src, dst },
            Network::V6 { src, dst, .. } => PseudoHeader::V6 { src, dst },
        }
    }

    fn protocol(&self) -> u8 {
        match (&self.transport, &self.network) {
            (Transport::Tcp { .. }, _) => ip_protocol::TCP,
            (Transport::Udp { .. }, _) => ip_protocol::UDP,
            (Transport::Echo { .. }, Network::V4 { .. }) => ip_protocol::ICMP,
            (Transport::Echo { .. }, Network::V6 { .. }) => ip_protocol::ICMPV6,
            (Transport::Opaque, _) => 47,
        }
    }

    fn frag_kind(&self) -> FragKind {
        match self.fragment {
            None => FragKind::Unfragmented,
            Some(0) => FragKind::First,
            Some(_) => FragKind::NonFirst,
        }
    }

    /// The transport bytes: a whole message, or for a later fragment just the payload.
    fn l4_bytes(&self) -> Vec<u8> {
        if self.frag_kind() == FragKind::NonFirst {
            return self.payload.clone();
        }
        let mut out = vec![0u8; 200];
        let pseudo = self.pseudo();
        let len = match &self.transport {
            Transport::Tcp {
                ports,
                flags,
                mss,
                wscale,
                sack_permitted,
                timestamps,
            } => TcpRepr {
                max_seg_size: *mss,
                window_scale: *wscale,
                sack_permitted: *sack_permitted,
                timestamps: timestamps.map(|(tsval, tsecr)| Timestamps { tsval, tsecr }),
                sack_blocks: SackBlocks::new(),
                payload: &self.payload,
                ..TcpRepr::new(
                    ports.0,
                    ports.1,
                    SeqNum(1),
                    SeqNum(2),
                    TcpFlags::from_bits(*flags),
                    1024,
                )
            }
            .emit(&mut out, &pseudo)
            .unwrap(),
            Transport::Udp { ports } => UdpRepr {
                src_port: ports.0,
                dst_port: ports.1,
                payload: &self.payload,
            }
            .emit(&mut out, &pseudo)
            .unwrap(),
            Transport::Echo { ident, reply } => match (&self.network, reply) {
                (Network::V4 { .. }, false) => IcmpRepr::EchoRequest {
                    ident: *ident,
                    seq_no: 1,
                    data: &self.payload,
                }
                .emit(&mut out)
                .unwrap(),
                (Network::V4 { .. }, true) => IcmpRepr::EchoReply {
                    ident: *ident,
                    seq_no: 1,
                    data: &self.payload,
                }
                .emit(&mut out)
                .unwrap(),
                (Network::V6 { .. }, false) => Icmpv6Repr::EchoRequest {
                    ident: *ident,
                    seq_no: 1,
                    data: &self.payload,
                }
                .emit(&mut out, &pseudo)
                .unwrap(),
                (Network::V6 { .. }, true) => Icmpv6Repr::EchoReply {
                    ident: *ident,
                    seq_no: 1,
                    data: &self.payload,
                }
                .emit(&mut out, &pseudo)
                .unwrap(),
            },
            Transport::Opaque => {
                out[..self.payload.len()].copy_from_slice(&self.payload);
                self.payload.len()
            }
        };
        out.truncate(len);
        out
    }

    /// Builds the frame and returns it with the offset of the transport bytes.
    fn build(&self) -> (Vec<u8>, usize) {
        let mut frame = vec![0u8; 14];
        let first_type = match self.vids.len() {
            0 => self.l3_ethertype(),
            1 => ethertype::VLAN,
            _ => ethertype::QINQ,
        };
        EthernetRepr {
            dst_addr: MAC_A,
            src_addr: MAC_B,
            ethertype: first_type,
        }
        .emit(&mut frame)
        .unwrap();
        for (i, &vid) in self.vids.iter().enumerate() {
            let next = if i + 1 < self.vids.len() {
                ethertype::VLAN
            } else {
                self.l3_ethertype()
            };
            let mut tag = [0u8; 4];
            VlanRepr {
                pcp: 3,
                dei: false,
                vid,
                ethertype: next,
            }
            .emit(&mut tag)
            .unwrap();
            frame.extend_from_slice(&tag);
        }
        let l4 = self.l4_bytes();
        let l4_offset;
        match self.network {
            Network::V4 { src, dst } => {
                let mut header = [0u8; 20];
                Ipv4Repr {
                    src_addr: src,
                    dst_addr: dst,
                    protocol: self.protocol(),
                    payload_len: l4.len(),
                    ttl: 64,
                    dscp: 0,
                    ecn: 0,
                    ident: 0x1234,
                    dont_frag: self.fragment.is_none(),
                    more_frags: self.fragment.is_some(),
                    frag_offset: self.fragment.unwrap_or(0) * 8,
                }
                .emit(&mut header)
                .unwrap();
                frame.extend_from_slice(&header);
                l4_offset = frame.len();
            }
            Network::V6 {
                src,
                dst,
                hop_by_hop,
                dest_opts,
            } => {
                // Chain: [hop-by-hop] [destination options] [fragment] upper layer.
                let mut chain: Vec<(u8, Vec<u8>)> = Vec::new();
                if hop_by_hop {
                    chain.push((ip_protocol::HOP_BY_HOP, vec![0, 0, 1, 4, 0, 0, 0, 0]));
                }
                if dest_opts {
                    chain.push((ip_protocol::IPV6_DEST_OPTS, vec![0, 0, 1, 4, 0, 0, 0, 0]));
                }
                if let Some(offset) = self.fragment {
                    let mut bytes = vec![0u8; 8];
                    FragmentHeader {
                        next_header: 0,
                        offset: offset * 8,
                        more_frags: true,
                        ident: 0xabcdef,
                    }
                    .emit(&mut bytes)
                    .unwrap();
                    chain.push((ip_protocol::IPV6_FRAGMENT, bytes));
                }
                let ext_len: usize = chain.iter().map(|(_, b)| b.len()).sum();
                let first = chain.first().map_or(self.protocol(), |(kind, _)| *kind);
                let mut header = [0u8; 40];
                Ipv6Repr {
                    src_addr: src,
                    dst_addr: dst,
                    next_header: first,
                    payload_len: ext_len + l4.len(),
                    hop_limit: 64,
                    traffic_class: 0,
                    flow_label: 0x12345,
                }
                .emit(&mut header)
                .unwrap();
                frame.extend_from_slice(&header);
                for i in 0..chain.len() {
                    let next = chain.get(i + 1).map_or(self.protocol(), |(kind, _)| *kind);
                    let mut bytes = chain[i].1.clone();
                    bytes[0] = next;
                    frame.extend_from_slice(&bytes);
                }
                l4_offset = frame.len();
            }
        }
        frame.extend_from_slice(&l4);
        let padded = (frame.len() + self.padding).max(60);
        frame.resize(padded, 0);
        (frame, l4_offset)
    }

    fn l3_ethertype(&self) -> u16 {
        match self.network {
            Network::V4 { .. } => ethertype::IPV4,
            Network::V6 { .. } => ethertype::IPV6,
        }
    }

    fn expected_l4(&self) -> L4Info {
        if self.frag_kind() == FragKind::NonFirst {
            return L4Info::None;
        }
        match &self.transport {
            Transport::Tcp { ports, flags, .. } => L4Info::Tcp {
                src_port: ports.0,
                dst_port: ports.1,
                flags: TcpFlags::from_bits(*flags),
            },
            Transport::Udp { ports } => L4Info::Udp {
                src_port: ports.0,
                dst_port: ports.1,
            },
            Transport::Echo { ident, reply } => {
                let msg_type = match (&self.network, reply) {
                    (Network::V4 { .. }, false) => 8,
                    (Network::V4 { .. }, true) => 0,
                    (Network::V6 { .. }, false) => 128,
                    (Network::V6 { .. }, true) => 129,
                };
                L4Info::Icmp {
                    msg_type,
                    code: 0,
                    echo_ident: Some(*ident),
                }
            }
            Transport::Opaque => L4Info::None,
        }
    }

    fn expected_flow(&self) -> FlowTuple {
        let (sp, dp) = match (self.frag_kind(), &self.transport) {
            (FragKind::First | FragKind::NonFirst, _) => (0, 0),
            (_, Transport::Tcp { ports, .. } | Transport::Udp { ports }) => *ports,
            (_, Transport::Echo { ident, .. }) => (*ident, *ident),
            (_, Transport::Opaque) => (0, 0),
        };
        match self.network {
            Network::V4 { src, dst } => FlowTuple::v4(src, dst, self.protocol(), sp, dp),
            Network::V6 { src, dst, .. } => FlowTuple::v6(src, dst, self.protocol(), sp, dp),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn built_frames_parse_to_their_fields(spec in spec()) {
        let (frame, l4_offset) = spec.build();
        let info = parse_frame(&frame).unwrap();
        prop_assert_eq!(usize::from(info.vlan_count), spec.vids.len());
        prop_assert_eq!(info.vlans(), &spec.vids[..]);
        prop_assert_eq!(info.ethertype, spec.l3_ethertype());
        prop_assert_eq!(usize::from(info.l3_offset), 14 + 4 * spec.vids.len());
        let l4_len = spec.l4_bytes().len();
        match (info.l3, &spec.network) {
            (L3Info::Ipv4(ip), Network::V4 { src, dst }) => {
                prop_assert_eq!((ip.src, ip.dst), (*src, *dst));
                prop_assert_eq!(ip.protocol, spec.protocol());
                prop_assert_eq!(usize::from(ip.l4_offset), l4_offset);
                prop_assert_eq!(usize::from(ip.l4_len), l4_len);
                prop_assert_eq!(ip.frag, spec.frag_kind());
                prop_assert_eq!(ip.l4, spec.expected_l4());
            }
            (L3Info::Ipv6(ip), Network::V6 { src, dst, .. }) => {
                prop_assert_eq!((ip.src, ip.dst), (*src, *dst));
                prop_assert_eq!(ip.protocol, spec.protocol());
                prop_assert_eq!(usize::from(ip.l4_offset), l4_offset);
                prop_assert_eq!(usize::from(ip.l4_len), l4_len);
                prop_assert_eq!(ip.frag, spec.frag_kind());
                prop_assert_eq!(ip.l4, spec.expected_l4());
            }
            (l3, _) => prop_assert!(false, "wrong family {:?}", l3),
        }
        prop_assert_eq!(info.flow_tuple(), Some(spec.expected_flow()));
    }

    #[test]
    fn arbitrary_bytes_never_panic(frame in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_frame(&frame);
    }

    /// Random bytes rarely get past the Ethernet header; mutating valid frames does.
    #[test]
    fn mutated_frames_never_panic(
        spec in spec(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let (mut frame, _) = spec.build();
        for (at, value) in edits {
            let i = at.index(frame.len());
            frame[i] = value;
        }
        let len = cut.index(frame.len() + 1);
        if let Ok(info) = parse_frame(&frame[..len]) {
            let l3 = usize::from(info.l3_offset);
            prop_assert!(l3 <= len);
            match info.l3 {
                L3Info::Ipv4(ip) => {
                    prop_assert!(usize::from(ip.l4_offset) + usize::from(ip.l4_len) <= len);
                }
                L3Info::Ipv6(ip) => {
                    prop_assert!(usize::from(ip.l4_offset) + usize::from(ip.l4_len) <= len);
                }
                L3Info::Arp | L3Info::Other => {}
            }
        }
    }
}
