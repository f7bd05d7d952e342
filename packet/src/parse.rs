//! Per-packet classification: the one call the dataplane makes for every received frame.
//!
//! Owns [`parse_frame`], which walks Ethernet, up to two VLAN tags, IPv4 or IPv6 (with its
//! extension headers) and the start of TCP, UDP, ICMP or ICMPv6, and returns a small `Copy`
//! summary, [`FrameInfo`]: offsets, addresses, ports, TCP flags and fragment status. It also
//! owns [`FlowTuple`], the key the dataplane hashes to pick a shard, and [`quoted_flow_v4`] /
//! [`quoted_flow_v6`], which recover the flow an ICMP error is about.
//!
//! Contract:
//! - No allocation, no panics, no loops longer than the fixed bounds (2 VLAN tags,
//!   [`crate::ipv6::MAX_EXT_HEADERS`]). Any byte string is either classified or rejected with
//!   a [`ParseError`] naming the field and value at fault.
//! - Length fields are checked against the frame. Ethernet padding after the IP packet is
//!   allowed and ignored (`l4_len` stops at the IP packet's end).
//! - Checksums are *not* verified here; the NIC usually has, and the views offer it where the
//!   dataplane needs it (for instance before answering a SYN).
//! - Transport headers are read only where they exist: in an unfragmented packet (where a
//!   truncated header is an error) and in a first fragment that holds the whole fixed header
//!   (where a short one just yields [`L4Info::None`]).
//!
//! Pure function; callable from any thread.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use thiserror::Error;

use crate::bytes::read_u16;
use crate::ethernet::{self, ethertype, EthernetError};
use crate::icmp::{self, IcmpError};
use crate::icmpv6::{self, Icmpv6Error};
use crate::ip_protocol;
use crate::ipv4::{self, Ipv4Error};
use crate::ipv6::{self, ExtHeaders, Ipv6Error};
use crate::tcp::{self, TcpError, TcpFlags};
use crate::udp::{self, UdpError};
use crate::vlan;

/// Most VLAN tags a frame may carry: an 802.1ad service tag and an 802.1Q customer tag.
pub const MAX_VLAN_TAGS: usize = 2;

/// Why a frame could not be classified.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// The frame is longer than the 16-bit offsets of [`FrameInfo`] can describe.
    #[error("frame of {len} bytes exceeds the 65535-byte maximum")]
    FrameTooLong {
        /// Length of the frame.
        len: usize,
    },
    /// The Ethernet header is truncated.
    #[error(transparent)]
    Ethernet(#[from] EthernetError),
    /// A VLAN TPID is not followed by a whole tag.
    #[error("VLAN tag {index} at offset {offset} needs 4 bytes, {available} available")]
    VlanTruncated {
        /// Which tag (0 = outer).
        index: u8,
        /// Offset of the tag (after its TPID) in the frame.
        offset: usize,
        /// Bytes left in the frame at that offset.
        available: usize,
    },
    /// A third VLAN tag.
    #[error("third VLAN TPID {tpid:#06x} at offset {offset}: at most 2 tags are accepted")]
    TooManyVlanTags {
        /// The TPID that would start the third tag.
        tpid: u16,
        /// Offset of that TPID in the frame.
        offset: usize,
    },
    /// The IPv4 header or its length fields are invalid.
    #[error(transparent)]
    Ipv4(#[from] Ipv4Error),
    /// The IPv6 header, its payload length or its extension headers are invalid.
    #[error(transparent)]
    Ipv6(#[from] Ipv6Error),
    /// The TCP header of an unfragmented packet is invalid.
    #[error(transparent)]
    Tcp(#[from] TcpError),
    /// The UDP header of an unfragmented packet is invalid.
    #[error(transparent)]
    Udp(#[from] UdpError),
    /// The ICMP header of an unfragmented packet is truncated.
    #[error(transparent)]
    Icmp(#[from] IcmpError),
    /// The ICMPv6 header of an unfragmented packet is truncated.
    #[error(transparent)]
    Icmpv6(#[from] Icmpv6Error),
}

/// Where a packet stands with respect to IP fragmentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FragKind {
    /// A whole datagram (including an IPv6 "atomic fragment" with offset 0 and M=0).
    Unfragmented,
    /// The first fragment (offset 0, more to come): it carries the transport header.
    First,
    /// A later fragment: its data is the middle or end of the datagram.
    NonFirst,
}

impl FragKind {
    fn from_fields(offset: u16, more_frags: bool) -> FragKind {
        match (offset, more_frags) {
            (0, false) => FragKind::Unfragmented,
            (0, true) => FragKind::First,
            _ => FragKind::NonFirst,
        }
    }

    /// Whether the packet is any kind of fragment.
    pub const fn is_fragment(self) -> bool {
        !matches!(self, FragKind::Unfragmented)
    }
}

/// What was read of the transport header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L4Info {
    /// Nothing: an unknown protocol, a non-first fragment, or a first fragment too short for
    /// the fixed transport header.
    None,
    /// TCP.
    Tcp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
        /// Flag bits.
        flags: TcpFlags,
    },
    /// UDP.
    Udp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
    },
    /// ICMP over IPv4 or ICMPv6 over IPv6.
    Icmp {
        /// Message type.
        msg_type: u8,
        /// Message code.
        code: u8,
        /// Echo identifier, for echo requests and replies.
        echo_ident: Option<u16>,
    },
}

/// What [`parse_frame`] learnt about an IP packet. `A` is [`Ipv4Addr`] or [`Ipv6Addr`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpInfo<A> {
    /// Source address.
    pub src: A,
    /// Destination address (for IPv6, as in the fixed header even with a routing header).
    pub dst: A,
    /// Upper-layer protocol: for IPv6, the one after the extension headers.
    pub protocol: u8,
    /// Offset in the frame of the transport header (of the fragment data for a non-first
    /// fragment).
    pub l4_offset: u16,
    /// Bytes from `l4_offset` to the end of the IP packet, Ethernet padding excluded.
    pub l4_len: u16,
    /// Fragment status.
    pub frag: FragKind,
    /// What was read of the transport header.
    pub l4: L4Info,
}

impl<A> IpInfo<A> {
    /// Source and destination ports for TCP and UDP.
    pub fn ports(&self) -> Option<(u16, u16)> {
        match self.l4 {
            L4Info::Tcp {
                src_port, dst_port, ..
            }
            | L4Info::Udp { src_port, dst_port } => Some((src_port, dst_port)),
            L4Info::Icmp { .. } | L4Info::None => None,
        }
    }

    /// TCP flags, for TCP.
    pub fn tcp_flags(&self) -> Option<TcpFlags> {
        match self.l4 {
            L4Info::Tcp { flags, .. } => Some(flags),
            _ => None,
        }
    }

    /// Echo identifier, for ICMP and ICMPv6 echo requests and replies.
    pub fn echo_ident(&self) -> Option<u16> {
        match self.l4 {
            L4Info::Icmp { echo_ident, .. } => echo_ident,
            _ => None,
        }
    }

    /// The port pair that goes into the flow tuple.
    ///
    /// Every fragment gets `(0, 0)` so the fragments of one datagram hash alike whether or
    /// not they carry the transport header. An echo gets its identifier on both sides, so a
    /// request and its reply are mirror images of each other.
    fn flow_ports(&self) -> (u16, u16) {
        if self.frag.is_fragment() {
            return (0, 0);
        }
        match self.l4 {
            L4Info::Tcp {
                src_port, dst_port, ..
            }
            | L4Info::Udp { src_port, dst_port } => (src_port, dst_port),
            L4Info::Icmp {
                echo_ident: Some(ident),
                ..
            } => (ident, ident),
            L4Info::Icmp { .. } | L4Info::None => (0, 0),
        }
    }
}

impl IpInfo<Ipv4Addr> {
    /// The flow key of this packet.
    pub fn flow_tuple(&self) -> FlowTuple {
        let (src_port, dst_port) = self.flow_ports();
        FlowTuple::v4(self.src, self.dst, self.protocol, src_port, dst_port)
    }
}

impl IpInfo<Ipv6Addr> {
    /// The flow key of this packet.
    pub fn flow_tuple(&self) -> FlowTuple {
        let (src_port, dst_port) = self.flow_ports();
        FlowTuple::v6(self.src, self.dst, self.protocol, src_port, dst_port)
    }
}

/// What [`parse_frame`] learnt about the network layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L3Info {
    /// An EtherType levee does not look into.
    Other,
    /// ARP; recognised by EtherType only, validate it with [`crate::arp::Packet`].
    Arp,
    /// IPv4.
    Ipv4(IpInfo<Ipv4Addr>),
    /// IPv6.
    Ipv6(IpInfo<Ipv6Addr>),
}

/// The summary of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameInfo {
    /// VLAN tags seen, 0..=2.
    pub vlan_count: u8,
    /// VLAN identifiers, outer first; unused entries are zero.
    pub vlan_ids: [u16; 2],
    /// The innermost EtherType, after any tags.
    pub ethertype: u16,
    /// Offset of the network-layer header (IP, ARP, ...) in the frame.
    pub l3_offset: u16,
    /// What was read of the network layer.
    pub l3: L3Info,
}

impl FrameInfo {
    /// The flow key, for IP packets.
    pub fn flow_tuple(&self) -> Option<FlowTuple> {
        match &self.l3 {
            L3Info::Ipv4(ip) => Some(ip.flow_tuple()),
            L3Info::Ipv6(ip) => Some(ip.flow_tuple()),
            L3Info::Arp | L3Info::Other => None,
        }
    }

    /// The VLAN identifiers actually present, outer first.
    pub fn vlans(&self) -> &[u16] {
        &self.vlan_ids[..usize::from(self.vlan_count).min(MAX_VLAN_TAGS)]
    }
}

/// IP version of a [`FlowTuple`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpFamily {
    /// IPv4.
    V4 = 4,
    /// IPv6.
    V6 = 6,
}

/// The key that identifies a flow: what the dataplane hashes and conntrack looks up.
///
/// Addresses are stored as 16 bytes in wire order whatever the family; an IPv4 address fills
/// the first 4 and the rest stay zero, and `family` keeps the two apart. Ports are zero for
/// fragments and for protocols without ports; an ICMP echo carries its identifier in both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowTuple {
    /// IP version.
    pub family: IpFamily,
    /// Upper-layer protocol.
    pub protocol: u8,
    /// Source address bytes.
    pub src_addr: [u8; 16],
    /// Destination address bytes.
    pub dst_addr: [u8; 16],
    /// Source port (or echo identifier, or zero).
    pub src_port: u16,
    /// Destination port (or echo identifier, or zero).
    pub dst_port: u16,
}

/// Length of [`FlowTuple::to_bytes`].
pub const FLOW_TUPLE_BYTES: usize = 38;

impl FlowTuple {
    /// An IPv4 flow.
    pub fn v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, src_port: u16, dst_port: u16) -> Self {
        let widen = |a: Ipv4Addr| {
            let mut out = [0u8; 16];
            out[..4].copy_from_slice(&a.octets());
            out
        };
        FlowTuple {
            family: IpFamily::V4,
            protocol,
            src_addr: widen(src),
            dst_addr: widen(dst),
            src_port,
            dst_port,
        }
    }

    /// An IPv6 flow.
    pub fn v6(src: Ipv6Addr, dst: Ipv6Addr, protocol: u8, src_port: u16, dst_port: u16) -> Self {
        FlowTuple {
            family: IpFamily::V6,
            protocol,
            src_addr: src.octets(),
            dst_addr: dst.octets(),
            src_port,
            dst_port,
        }
    }

    fn addr(&self, bytes: &[u8; 16]) -> IpAddr {
        match self.family {
            IpFamily::V4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
            IpFamily::V6 => IpAddr::V6(Ipv6Addr::from(*bytes)),
        }
    }

    /// Source address.
    pub fn src_ip(&self) -> IpAddr {
        self.addr(&self.src_addr)
    }

    /// Destination address.
    pub fn dst_ip(&self) -> IpAddr {
        self.addr(&self.dst_addr)
    }

    /// The tuple of the opposite direction.
    pub fn reversed(&self) -> FlowTuple {
        FlowTuple {
            src_addr: self.dst_addr,
            dst_addr: self.src_addr,
            src_port: self.dst_port,
            dst_port: self.src_port,
            ..*self
        }
    }

    /// A fixed byte layout for hash functions that take bytes (Toeplitz, SipHash over a
    /// slice): family, protocol, source address, destination address, source port,
    /// destination port, all big-endian.
    pub fn to_bytes(&self) -> [u8; FLOW_TUPLE_BYTES] {
        let mut out = [0u8; FLOW_TUPLE_BYTES];
        out[0] = self.family as u8;
        out[1] = self.protocol;
        out[2..18].copy_from_slice(&self.src_addr);
        out[18..34].copy_from_slice(&self.dst_addr);
        out[34..36].copy_from_slice(&self.src_port.to_be_bytes());
        out[36..38].copy_from_slice(&self.dst_port.to_be_bytes());
        out
    }
}

/// Classifies one Ethernet frame (without FCS).
///
/// See the module documentation for what is checked. Cost: about 16 ns per frame for a
/// minimum-size IPv4 SYN, an IPv6 TCP segment or a tagged IPv4 UDP datagram alike (one core of
/// the 2-core development VM; `cargo bench -p levee-packet --bench parse`).
pub fn parse_frame(frame: &[u8]) -> Result<FrameInfo, ParseError> {
    if frame.len() > usize::from(u16::MAX) {
        return Err(ParseError::FrameTooLong { len: frame.len() });
    }
    let eth = ethernet::Frame::new_checked(frame)?;
    let mut ethertype = eth.ethertype();
    let mut offset = ethernet::HEADER_LEN;
    let mut vlan_ids = [0u16; MAX_VLAN_TAGS];
    let mut vlan_count = 0usize;
    while vlan::is_tpid(ethertype) {
        if vlan_count == MAX_VLAN_TAGS {
            return Err(ParseError::TooManyVlanTags {
                tpid: ethertype,
                offset: offset - 2,
            });
        }
        let tag = vlan::Tag::new_checked(&frame[offset..]).map_err(|_| ParseError::VlanTruncated {
            index: vlan_count as u8,
            offset,
            available: frame.len() - offset,
        })?;
        vlan_ids[vlan_count] = tag.vid();
        ethertype = tag.ethertype();
        vlan_count += 1;
        offset += vlan::TAG_LEN;
    }
    let l3 = &frame[offset..];
    let l3_info = match ethertype {
        ethertype::IPV4 => L3Info::Ipv4(parse_ipv4(l3, offset)?),
        ethertype::IPV6 => L3Info::Ipv6(parse_ipv6(l3, offset)?),
        ethertype::ARP => L3Info::Arp,
        _ => L3Info::Other,
    };
    // Offsets are at most the frame length, checked above to fit u16.
    Ok(FrameInfo {
        vlan_count: vlan_count as u8,
        vlan_ids,
        ethertype,
        l3_offset: offset as u16,
        l3: l3_info,
    })
}

/// Checks the IPv4 version and lengths the way `parse_frame` does, except that a quoted
/// packet may be cut short of its total length when `quoted` is set.
fn ipv4_view(l3: &[u8], quoted: bool) -> Result<ipv4::Packet<&[u8]>, Ipv4Error> {
    if l3.len() < ipv4::HEADER_LEN {
        return Err(Ipv4Error::Truncated { len: l3.len() });
    }
    let packet = ipv4::Packet::new_unchecked(l3);
    let version = packet.version();
    if version != 4 {
        return Err(Ipv4Error::BadVersion { version });
    }
    match packet.check_len() {
        Err(Ipv4Error::TotalLenBeyondBuffer { .. }) if quoted => Ok(packet),
        other => other.map(|()| packet),
    }
}

fn parse_ipv4(l3: &[u8], l3_offset: usize) -> Result<IpInfo<Ipv4Addr>, ParseError> {
    let packet = ipv4_view(l3, false)?;
    let frag = FragKind::from_fields(packet.frag_offset(), packet.more_frags());
    let protocol = packet.protocol();
    let l4 = packet.payload();
    let l4_info = transport(protocol, ip_protocol::ICMP, l4, frag)?;
    Ok(IpInfo {
        src: packet.src_addr(),
        dst: packet.dst_addr(),
        protocol,
        l4_offset: (l3_offset + packet.header_len()) as u16,
        l4_len: l4.len() as u16,
        frag,
        l4: l4_info,
    })
}

/// Checks the IPv6 version and payload length; a quoted packet may be cut short.
fn ipv6_view(l3: &[u8], quoted: bool) -> Result<ipv6::Packet<&[u8]>, Ipv6Error> {
    if l3.len() < ipv6::HEADER_LEN {
        return Err(Ipv6Error::Truncated { len: l3.len() });
    }
    let packet = ipv6::Packet::new_unchecked(l3);
    let version = packet.version();
    if version != 6 {
        return Err(Ipv6Error::BadVersion { version });
    }
    match packet.check_len() {
        Err(Ipv6Error::PayloadBeyondBuffer { .. }) if quoted => Ok(packet),
        other => other.map(|()| packet),
    }
}

fn parse_ipv6(l3: &[u8], l3_offset: usize) -> Result<IpInfo<Ipv6Addr>, ParseError> {
    let packet = ipv6_view(l3, false)?;
    let upper = packet.upper_layer()?;
    let frag = match upper.fragment {
        Some(f) => FragKind::from_fields(f.offset, f.more_frags),
        None => FragKind::Unfragmented,
    };
    // The walk never goes past the payload, so `upper.offset` is inside it.
    let end = ipv6::HEADER_LEN + packet.payload().len();
    let l4 = &l3[upper.offset.min(end)..end];
    let l4_info = transport(upper.protocol, ip_protocol::ICMPV6, l4, frag)?;
    Ok(IpInfo {
        src: packet.src_addr(),
        dst: packet.dst_addr(),
        protocol: upper.protocol,
        l4_offset: (l3_offset + upper.offset) as u16,
        l4_len: l4.len() as u16,
        frag,
        l4: l4_info,
    })
}

/// Reads the transport header. `icmp` is the ICMP protocol number of this IP version.
///
/// Always inlined: returned through memory, its result was stored field by field and read
/// back as one wider load, which the CPU cannot forward from the stores (a stall of about a
/// dozen cycles per frame in `perf annotate`); inlined, the fields stay in registers.
#[inline(always)]
fn transport(protocol: u8, icmp: u8, l4: &[u8], frag: FragKind) -> Result<L4Info, ParseError> {
    match frag {
        FragKind::NonFirst => return Ok(L4Info::None),
        // A first fragment's transport length fields describe the whole datagram, so only the
        // fixed fields are read, and only when they are all there.
        FragKind::First => return Ok(fixed_transport_fields(protocol, icmp, l4)),
        FragKind::Unfragmented => {}
    }
    Ok(match protocol {
        ip_protocol::TCP => {
            let segment = tcp::Packet::new_checked(l4)?;
            L4Info::Tcp {
                src_port: segment.src_port(),
                dst_port: segment.dst_port(),
                flags: segment.flags(),
            }
        }
        ip_protocol::UDP => {
            let datagram = udp::Packet::new_checked(l4)?;
            L4Info::Udp {
                src_port: datagram.src_port(),
                dst_port: datagram.dst_port(),
            }
        }
        p if p == icmp => {
            if icmp == ip_protocol::ICMP {
                icmp::Packet::new_checked(l4)?;
            } else {
                icmpv6::Packet::new_checked(l4)?;
            }
            icmp_fields(icmp, l4)
        }
        _ => L4Info::None,
    })
}

/// The transport fields of a first fragment, or `None` if its fixed header is incomplete.
fn fixed_transport_fields(protocol: u8, icmp: u8, l4: &[u8]) -> L4Info {
    match protocol {
        ip_protocol::TCP if l4.len() >= tcp::HEADER_LEN => {
            let segment = tcp::Packet::new_unchecked(l4);
            L4Info::Tcp {
                src_port: segment.src_port(),
                dst_port: segment.dst_port(),
                flags: segment.flags(),
            }
        }
        ip_protocol::UDP if l4.len() >= udp::HEADER_LEN => L4Info::Udp {
            src_port: read_u16(&l4[0..2]),
            dst_port: read_u16(&l4[2..4]),
        },
        p if p == icmp && l4.len() >= icmp::HEADER_LEN => icmp_fields(icmp, l4),
        _ => L4Info::None,
    }
}

/// ICMP or ICMPv6 type, code and echo identifier. Reads bytes 0..6, so callers pass at least
/// 6 bytes (a whole 8-byte header everywhere but in a cut-short quote).
fn icmp_fields(icmp: u8, l4: &[u8]) -> L4Info {
    let (msg_type, code) = (l4[0], l4[1]);
    let is_echo = if icmp == ip_protocol::ICMP {
        icmp::is_echo_type(msg_type)
    } else {
        icmpv6::is_echo_type(msg_type)
    };
    L4Info::Icmp {
        msg_type,
        code,
        echo_ident: is_echo.then(|| read_u16(&l4[4..6])),
    }
}

/// Ports for a quoted packet's flow: read from whatever was quoted, zero when cut too short.
/// RFC 792 guarantees 8 quoted bytes, which hold both ports of TCP and UDP and an echo's
/// identifier.
fn quoted_ports(protocol: u8, icmp: u8, l4: &[u8]) -> (u16, u16) {
    match protocol {
        ip_protocol::TCP | ip_protocol::UDP if l4.len() >= 4 => (read_u16(&l4[0..2]), read_u16(&l4[2..4])),
        p if p == icmp && l4.len() >= 6 => match icmp_fields(icmp, l4) {
            L4Info::Icmp {
                echo_ident: Some(ident),
                ..
            } => (ident, ident),
            _ => (0, 0),
        },
        _ => (0, 0),
    }
}

/// The flow an ICMP error is about, from the IPv4 packet it quotes
/// ([`crate::icmp::Packet::quoted_packet`]), as that packet's sender saw it.
///
/// The quote may stop short of the packet's total length; everything else is checked as in
/// [`parse_frame`]. Ports come from the quoted transport header when at least 4 bytes of it
/// were quoted, and are zero for fragments, as in [`IpInfo::flow_tuple`], so the result
/// matches the tuple of the packet that triggered the error.
pub fn quoted_flow_v4(quoted: &[u8]) -> Result<FlowTuple, ParseError> {
    let packet = ipv4_view(quoted, true)?;
    let frag = FragKind::from_fields(packet.frag_offset(), packet.more_frags());
    let protocol = packet.protocol();
    let (src_port, dst_port) = if frag.is_fragment() {
        (0, 0)
    } else {
        quoted_ports(protocol, ip_protocol::ICMP, packet.payload())
    };
    Ok(FlowTuple::v4(
        packet.src_addr(),
        packet.dst_addr(),
        protocol,
        src_port,
        dst_port,
    ))
}

/// The flow an ICMPv6 error is about, from the IPv6 packet it quotes
/// ([`crate::icmpv6::Packet::quoted_packet`]); see [`quoted_flow_v4`]. Extension headers are
/// walked as far as they were quoted; one cut short is an error.
pub fn quoted_flow_v6(quoted: &[u8]) -> Result<FlowTuple, ParseError> {
    let packet = ipv6_view(quoted, true)?;
    let payload = packet.payload();
    let upper = ExtHeaders::new(packet.next_header(), payload, ipv6::HEADER_LEN).upper_layer()?;
    let frag = match upper.fragment {
        Some(f) => FragKind::from_fields(f.offset, f.more_frags),
        None => FragKind::Unfragmented,
    };
    let (src_port, dst_port) = if frag.is_fragment() {
        (0, 0)
    } else {
        let end = ipv6::HEADER_LEN + payload.len();
        let l4 = &quoted[upper.offset.min(end)..end];
        quoted_ports(upper.protocol, ip_protocol::ICMPV6, l4)
    };
    Ok(FlowTuple::v6(
        packet.src_addr(),
        packet.dst_addr(),
        upper.protocol,
        src_port,
        dst_port,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
    const SERVER: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 80);

    fn client6() -> Ipv6Addr {
        "2001:2::10".parse().unwrap()
    }

    fn server6() -> Ipv6Addr {
        "2001:2:0:1::80".parse().unwrap()
    }

    fn v4(info: &FrameInfo) -> IpInfo<Ipv4Addr> {
        match info.l3 {
            L3Info::Ipv4(ip) => ip,
            other => panic!("not IPv4: {other:?}"),
        }
    }

    fn v6(info: &FrameInfo) -> IpInfo<Ipv6Addr> {
        match info.l3 {
            L3Info::Ipv6(ip) => ip,
            other => panic!("not IPv6: {other:?}"),
        }
    }

    #[test]
    fn ipv4_tcp_syn() {
        let info = parse_frame(&fixtures::ETH_IPV4_TCP_SYN).unwrap();
        let syn = TcpFlags::SYN;
        assert_eq!(
            info,
            FrameInfo {
                vlan_count: 0,
                vlan_ids: [0, 0],
                ethertype: ethertype::IPV4,
                l3_offset: 14,
                l3: L3Info::Ipv4(IpInfo {
                    src: CLIENT,
                    dst: SERVER,
                    protocol: ip_protocol::TCP,
                    l4_offset: 34,
                    l4_len: 40,
                    frag: FragKind::Unfragmented,
                    l4: L4Info::Tcp {
                        src_port: 51234,
                        dst_port: 80,
                        flags: syn
                    },
                }),
            }
        );
        let ip = v4(&info);
        assert_eq!(ip.ports(), Some((51234, 80)));
        assert_eq!(ip.tcp_flags(), Some(syn));
        assert_eq!(ip.echo_ident(), None);
        assert_eq!(info.vlans(), &[] as &[u16]);
        let tuple = info.flow_tuple().unwrap();
        assert_eq!(tuple, FlowTuple::v4(CLIENT, SERVER, 6, 51234, 80));
        assert_eq!(tuple.src_ip(), IpAddr::V4(CLIENT));
        assert_eq!(tuple.dst_ip(), IpAddr::V4(SERVER));
        assert_eq!(&tuple.src_addr[4..], &[0; 12]);
        let bytes = tuple.to_bytes();
        assert_eq!(bytes[..2], [4, 6]);
        assert_eq!(bytes[2..6], [198, 18, 0, 10]);
        assert_eq!(bytes[18..22], [198, 19, 0, 80]);
        assert_eq!(bytes[34..], [0xc8, 0x22, 0x00, 0x50]);
    }

    #[test]
    fn syn_ack_is_the_reversed_flow() {
        let syn = parse_frame(&fixtures::ETH_IPV4_TCP_SYN).unwrap();
        let syn_ack = parse_frame(&fixtures::ETH_IPV4_TCP_SYNACK).unwrap();
        assert_eq!(v4(&syn_ack).tcp_flags(), Some(TcpFlags::SYN | TcpFlags::ACK));
        assert_eq!(
            syn_ack.flow_tuple().unwrap(),
            syn.flow_tuple().unwrap().reversed()
        );
    }

    #[test]
    fn ipv6_tcp() {
        let info = parse_frame(&fixtures::ETH_IPV6_TCP_SACK).unwrap();
        assert_eq!(
            (info.vlan_count, info.ethertype, info.l3_offset),
            (0, ethertype::IPV6, 14)
        );
        assert_eq!(
            v6(&info),
            IpInfo {
                src: client6(),
                dst: server6(),
                protocol: ip_protocol::TCP,
                l4_offset: 54,
                l4_len: 52,
                frag: FragKind::Unfragmented,
                l4: L4Info::Tcp {
                    src_port: 51300,
                    dst_port: 443,
                    flags: TcpFlags::ACK
                },
            }
        );
        let tuple = info.flow_tuple().unwrap();
        assert_eq!(tuple.family, IpFamily::V6);
        assert_eq!(tuple.src_ip(), IpAddr::V6(client6()));
        assert_eq!(tuple.dst_addr, server6().octets());
        assert_eq!((tuple.src_port, tuple.dst_port, tuple.protocol), (51300, 443, 6));
    }

    #[test]
    fn ipv6_fragments_share_a_flow() {
        let first = parse_frame(&fixtures::ETH_IPV6_HBH_FRAG_FIRST).unwrap();
        let ip = v6(&first);
        assert_eq!(ip.protocol, ip_protocol::UDP);
        assert_eq!(ip.frag, FragKind::First);
        assert_eq!((ip.l4_offset, ip.l4_len), (70, 40));
        assert_eq!(
            ip.l4,
            L4Info::Udp {
                src_port: 40000,
                dst_port: 5001
            }
        );
        let second = parse_frame(&fixtures::ETH_IPV6_HBH_FRAG_SECOND).unwrap();
        let ip2 = v6(&second);
        assert_eq!(ip2.protocol, ip_protocol::UDP);
        assert_eq!(ip2.frag, FragKind::NonFirst);
        assert_eq!((ip2.l4_offset, ip2.l4_len), (70, 32));
        assert_eq!(ip2.l4, L4Info::None);
        let tuple = first.flow_tuple().unwrap();
        assert_eq!((tuple.src_port, tuple.dst_port), (0, 0));
        assert_eq!(tuple, second.flow_tuple().unwrap());
    }

    #[test]
    fn ipv4_udp_with_padding() {
        let info = parse_frame(&fixtures::ETH_IPV4_UDP).unwrap();
        let ip = v4(&info);
        assert_eq!((ip.src, ip.dst, ip.protocol), (CLIENT, SERVER, ip_protocol::UDP));
        // 46 bytes after the Ethernet header, of which 12 are padding.
        assert_eq!((ip.l4_offset, ip.l4_len), (34, 14));
        assert_eq!(ip.frag, FragKind::Unfragmented);
        assert_eq!(ip.ports(), Some((40001, 7)));
        assert_eq!(ip.tcp_flags(), None);
    }

    #[test]
    fn ipv4_fragments_share_a_flow() {
        let mut first = fixtures::ETH_IPV4_UDP;
        let mut packet = ipv4::Packet::new_checked(&mut first[14..]).unwrap();
        packet.set_more_frags(true);
        let first_info = parse_frame(&first).unwrap();
        assert_eq!(v4(&first_info).frag, FragKind::First);
        assert_eq!(v4(&first_info).ports(), Some((40001, 7)));
        let mut later = first;
        let mut packet = ipv4::Packet::new_checked(&mut later[14..]).unwrap();
        packet.set_more_frags(false);
        packet.set_frag_offset(1480);
        let later_info = parse_frame(&later).unwrap();
        assert_eq!(v4(&later_info).frag, FragKind::NonFirst);
        assert_eq!(v4(&later_info).l4, L4Info::None);
        assert_eq!(first_info.flow_tuple(), later_info.flow_tuple());
        assert_eq!(first_info.flow_tuple().unwrap().src_port, 0);
        // A first fragment too short for the UDP header yields no ports, not an error.
        let mut tiny = first;
        tiny[16..18].copy_from_slice(&24u16.to_be_bytes());
        let info = parse_frame(&tiny).unwrap();
        assert_eq!((v4(&info).l4_len, v4(&info).l4), (4, L4Info::None));
    }

    #[test]
    fn icmp_echo_and_port_unreachable() {
        let echo = parse_frame(&fixtures::ETH_IPV4_ICMP_ECHO).unwrap();
        let ip = v4(&echo);
        assert_eq!(ip.protocol, ip_protocol::ICMP);
        assert_eq!((ip.l4_offset, ip.l4_len), (34, 64));
        assert_eq!(
            ip.l4,
            L4Info::Icmp {
                msg_type: 8,
                code: 0,
                echo_ident: Some(0x1f2e)
            }
        );
        assert_eq!(ip.echo_ident(), Some(0x1f2e));
        assert_eq!(ip.ports(), None);
        let tuple = echo.flow_tuple().unwrap();
        assert_eq!((tuple.src_port, tuple.dst_port), (0x1f2e, 0x1f2e));

        let frame = &fixtures::ETH_IPV4_ICMP_PORT_UNREACH;
        let error = parse_frame(frame).unwrap();
        let ip = v4(&error);
        assert_eq!((ip.src, ip.dst), (SERVER, CLIENT));
        assert_eq!(
            ip.l4,
            L4Info::Icmp {
                msg_type: 3,
                code: 3,
                echo_ident: None
            }
        );
        assert_eq!(error.flow_tuple().unwrap().src_port, 0);
        // The quoted datagram leads back to the flow of the UDP fixture.
        let message = icmp::Packet::new_checked(&frame[34..]).unwrap();
        let quoted = message.quoted_packet().unwrap();
        let udp_flow = parse_frame(&fixtures::ETH_IPV4_UDP).unwrap().flow_tuple();
        assert_eq!(quoted_flow_v4(quoted).ok(), udp_flow);
        // Linux quotes the whole datagram; RFC 792 only promises 8 bytes past the header.
        assert_eq!(quoted_flow_v4(&quoted[..28]).ok(), udp_flow);
        let portless = quoted_flow_v4(&quoted[..23]).unwrap();
        assert_eq!((portless.src_port, portless.dst_port), (0, 0));
        assert_eq!(
            quoted_flow_v4(&quoted[..19]),
            Err(ParseError::Ipv4(Ipv4Error::Truncated { len: 19 }))
        );
    }

    #[test]
    fn icmpv6_echo_and_quote() {
        let frame = &fixtures::ETH_IPV6_ICMPV6_ECHO;
        let info = parse_frame(frame).unwrap();
        let ip = v6(&info);
        assert_eq!((ip.src, ip.dst, ip.protocol), (client6(), server6(), 58));
        assert_eq!((ip.l4_offset, ip.l4_len), (54, 24));
        assert_eq!(
            ip.l4,
            L4Info::Icmp {
                msg_type: 128,
                code: 0,
                echo_ident: Some(0x3b2a)
            }
        );
        // An echo quoted in an ICMPv6 error maps to the echo's flow.
        assert_eq!(quoted_flow_v6(&frame[14..]).ok(), info.flow_tuple());
        assert_eq!(quoted_flow_v6(&frame[14..60]).ok(), info.flow_tuple());
        // So does a quoted first fragment, with its ports zeroed.
        let first = &fixtures::ETH_IPV6_HBH_FRAG_FIRST;
        let flow = parse_frame(first).unwrap().flow_tuple();
        assert_eq!(quoted_flow_v6(&first[14..80]).ok(), flow);
        assert_eq!(
            quoted_flow_v6(&first[14..68]),
            Err(ParseError::Ipv6(Ipv6Error::ExtHeaderTruncated {
                kind: 44,
                offset: 48,
                needed: 8,
                available: 6
            }))
        );
        let tcp = &fixtures::ETH_IPV6_TCP_SACK;
        assert_eq!(
            quoted_flow_v6(&tcp[14..62]).ok(),
            parse_frame(tcp).unwrap().flow_tuple()
        );
    }

    #[test]
    fn arp_and_other_ethertypes() {
        let info = parse_frame(&fixtures::ETH_ARP_REQUEST).unwrap();
        assert_eq!(
            info,
            FrameInfo {
                vlan_count: 0,
                vlan_ids: [0, 0],
                ethertype: ethertype::ARP,
                l3_offset: 14,
                l3: L3Info::Arp
            }
        );
        assert_eq!(info.flow_tuple(), None);
        let mut lldp = fixtures::ETH_ARP_REQUEST;
        lldp[12..14].copy_from_slice(&0x88ccu16.to_be_bytes());
        let info = parse_frame(&lldp).unwrap();
        assert_eq!((info.ethertype, info.l3), (0x88cc, L3Info::Other));
    }

    #[test]
    fn dot1q_tagged_udp() {
        let info = parse_frame(&fixtures::ETH_VLAN_IPV4_UDP).unwrap();
        assert_eq!(info.vlan_count, 1);
        assert_eq!(info.vlan_ids, [100, 0]);
        assert_eq!(info.vlans(), &[100]);
        assert_eq!(info.ethertype, ethertype::IPV4);
        assert_eq!(info.l3_offset, 18);
        let ip = v4(&info);
        assert_eq!((ip.l4_offset, ip.l4_len), (38, 24));
        assert_eq!(ip.ports(), Some((33434, 514)));
    }

    #[test]
    fn qinq_tagged_syn() {
        let info = parse_frame(&fixtures::ETH_QINQ_IPV4_TCP_SYN).unwrap();
        assert_eq!(info.vlan_count, 2);
        assert_eq!(info.vlan_ids, [200, 300]);
        assert_eq!(info.ethertype, ethertype::IPV4);
        assert_eq!(info.l3_offset, 22);
        let ip = v4(&info);
        assert_eq!((ip.l4_offset, ip.l4_len), (42, 20));
        assert_eq!(ip.ports(), Some((40002, 22)));
        assert_eq!(ip.tcp_flags(), Some(TcpFlags::SYN));
    }

    const IP_FIXTURES: [&[u8]; 11] = [
        &fixtures::ETH_IPV4_TCP_SYN,
        &fixtures::ETH_IPV4_TCP_SYNACK,
        &fixtures::ETH_IPV6_TCP_SACK,
        &fixtures::ETH_IPV6_HBH_FRAG_FIRST,
        &fixtures::ETH_IPV6_HBH_FRAG_SECOND,
        &fixtures::ETH_IPV4_UDP,
        &fixtures::ETH_IPV4_ICMP_ECHO,
        &fixtures::ETH_IPV4_ICMP_PORT_UNREACH,
        &fixtures::ETH_IPV6_ICMPV6_ECHO,
        &fixtures::ETH_VLAN_IPV4_UDP,
        &fixtures::ETH_QINQ_IPV4_TCP_SYN,
    ];

    /// Every prefix shorter than the IP packet is rejected; longer ones (padding) parse alike.
    #[test]
    fn truncated_at_every_length() {
        for frame in IP_FIXTURES {
            let full = parse_frame(frame).unwrap();
            let ip_end = match full.l3 {
                L3Info::Ipv4(ip) => ip.l4_offset + ip.l4_len,
                L3Info::Ipv6(ip) => ip.l4_offset + ip.l4_len,
                _ => unreachable!(),
            };
            for len in 0..frame.len() {
                let result = parse_frame(&frame[..len]);
                if len < usize::from(ip_end) {
                    assert!(result.is_err(), "prefix {len} of {frame:02x?} parsed");
                } else {
                    assert_eq!(result, Ok(full));
                }
            }
        }
        let arp = &fixtures::ETH_ARP_REQUEST;
        for len in 0..14 {
            assert_eq!(
                parse_frame(&arp[..len]),
                Err(ParseError::Ethernet(EthernetError::Truncated { len }))
            );
        }
    }

    #[test]
    fn vlan_errors() {
        let frame = &fixtures::ETH_QINQ_IPV4_TCP_SYN;
        assert_eq!(
            parse_frame(&frame[..16]),
            Err(ParseError::VlanTruncated {
                index: 0,
                offset: 14,
                available: 2
            })
        );
        assert_eq!(
            parse_frame(&frame[..21]),
            Err(ParseError::VlanTruncated {
                index: 1,
                offset: 18,
                available: 3
            })
        );
        let mut three = frame.to_vec();
        three[20..22].copy_from_slice(&0x8100u16.to_be_bytes());
        let err = parse_frame(&three).unwrap_err();
        assert_eq!(
            err,
            ParseError::TooManyVlanTags {
                tpid: 0x8100,
                offset: 20
            }
        );
        assert_eq!(
            err.to_string(),
            "third VLAN TPID 0x8100 at offset 20: at most 2 tags are accepted"
        );
    }

    fn with(frame: &[u8], at: usize, bytes: &[u8]) -> Vec<u8> {
        let mut out = frame.to_vec();
        out[at..at + bytes.len()].copy_from_slice(bytes);
        out
    }

    #[test]
    fn invalid_ipv4_fields_name_values() {
        let syn = &fixtures::ETH_IPV4_TCP_SYN;
        let cases: [(Vec<u8>, ParseError); 6] = [
            (with(syn, 14, &[0x44]), Ipv4Error::IhlTooSmall { ihl: 4 }.into()),
            (
                with(syn, 14, &[0x65]),
                Ipv4Error::BadVersion { version: 6 }.into(),
            ),
            (
                with(syn, 16, &75u16.to_be_bytes()),
                Ipv4Error::TotalLenBeyondBuffer {
                    total_len: 75,
                    len: 60,
                }
                .into(),
            ),
            (
                with(syn, 14, &[0x47, 0, 0, 24]),
                Ipv4Error::TotalLenBelowHeader {
                    total_len: 24,
                    header_len: 28,
                }
                .into(),
            ),
            (
                with(syn, 46, &[0x40]),
                TcpError::DataOffsetTooSmall { data_offset: 4 }.into(),
            ),
            (
                with(syn, 46, &[0xb0]),
                TcpError::DataOffsetBeyondSegment {
                    header_len: 44,
                    len: 40,
                }
                .into(),
            ),
        ];
        for (frame, expected) in cases {
            assert_eq!(parse_frame(&frame), Err(expected), "{expected}");
        }
        let udp = &fixtures::ETH_IPV4_UDP;
        assert_eq!(
            parse_frame(&with(udp, 38, &[0, 15])),
            Err(UdpError::LengthBeyondBuffer { length: 15, len: 14 }.into())
        );
        // An ICMP message of 4 bytes in an unfragmented packet.
        let echo = &fixtures::ETH_IPV4_ICMP_ECHO;
        let short = with(echo, 16, &24u16.to_be_bytes());
        assert_eq!(parse_frame(&short), Err(IcmpError::Truncated { len: 4 }.into()));
        assert_eq!(
            ParseError::from(Ipv4Error::IhlTooSmall { ihl: 4 }).to_string(),
            "IPv4 IHL 4 is below the minimum of 5 words"
        );
    }

    #[test]
    fn invalid_ipv6_fields_name_values() {
        let tcp = &fixtures::ETH_IPV6_TCP_SACK;
        assert_eq!(
            parse_frame(&with(tcp, 18, &[0, 53])),
            Err(Ipv6Error::PayloadBeyondBuffer {
                payload_len: 53,
                available: 52
            }
            .into())
        );
        assert_eq!(
            parse_frame(&with(tcp, 14, &[0x40])),
            Err(Ipv6Error::BadVersion { version: 4 }.into())
        );
        let icmp = &fixtures::ETH_IPV6_ICMPV6_ECHO;
        let short = with(icmp, 18, &[0, 6]);
        assert_eq!(parse_frame(&short), Err(Icmpv6Error::Truncated { len: 6 }.into()));
        // Nine destination-options headers.
        let mut frame = fixtures::ETH_IPV6_TCP_SACK[..54].to_vec();
        for _ in 0..9 {
            frame.extend_from_slice(&[ip_protocol::IPV6_DEST_OPTS, 0, 1, 4, 0, 0, 0, 0]);
        }
        frame[18..20].copy_from_slice(&72u16.to_be_bytes());
        frame[20] = ip_protocol::IPV6_DEST_OPTS;
        assert_eq!(
            parse_frame(&frame),
            Err(Ipv6Error::TooManyExtHeaders { limit: 8 }.into())
        );
    }

    #[test]
    fn frame_too_long() {
        let big = vec![0u8; 65536];
        assert_eq!(parse_frame(&big), Err(ParseError::FrameTooLong { len: 65536 }));
        assert!(parse_frame(&big[..65535]).is_ok());
    }

    #[test]
    fn info_is_small_and_copy() {
        // The dataplane keeps one per packet in a burst; keep it within a cache line.
        assert!(
            core::mem::size_of::<FrameInfo>() <= 64,
            "{}",
            core::mem::size_of::<FrameInfo>()
        );
        assert!(core::mem::size_of::<FlowTuple>() <= 40);
    }
}
