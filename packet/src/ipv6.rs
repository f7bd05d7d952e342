//! IPv6 header view (RFC 8200) and the extension-header walker.
//!
//! Owns the 40-byte fixed header and the chain of extension headers after it: hop-by-hop,
//! routing, fragment, authentication (AH) and destination options. The walk stops at the first
//! header that is not one of those (the upper layer: TCP, UDP, ICMPv6, ESP, "no next header",
//! or anything unknown) or right after a fragment header whose offset is not zero, because what
//! follows such a header is the middle of a datagram, not a header.
//!
//! Invariants: a checked view guarantees `40 + payload_len <= buffer length`, so Ethernet
//! padding after the payload is never walked. The walk is bounded by [`MAX_EXT_HEADERS`] and by
//! the payload, checks every length before it reads, and yields an error (then stops) on any
//! inconsistency, so garbage never panics and never loops. Plain borrows, usable from any
//! thread.

use std::net::Ipv6Addr;

use thiserror::Error;

use crate::bytes::{read_array, read_u16, read_u32, write_u16, write_u32};
use crate::ip_protocol;

/// Byte ranges of the IPv6 fixed header.
pub mod field {
    use crate::Field;

    /// Version (4 bits), traffic class (8 bits), flow label (20 bits).
    pub const VER_TC_FLOW: Field = 0..4;
    /// Length of everything after the fixed header.
    pub const PAYLOAD_LEN: Field = 4..6;
    /// Protocol of the first extension header or the upper layer.
    pub const NEXT_HEADER: usize = 6;
    /// Hop limit.
    pub const HOP_LIMIT: usize = 7;
    /// Source address.
    pub const SRC_ADDR: Field = 8..24;
    /// Destination address.
    pub const DST_ADDR: Field = 24..40;
}

/// Length of the fixed header.
pub const HEADER_LEN: usize = field::DST_ADDR.end;

/// Most extension headers a walk accepts before giving up. A real packet carries at most a
/// handful (RFC 8200 §4.1 recommends an order with each type at most once or twice); a longer
/// chain is an attack on parsers like this one.
pub const MAX_EXT_HEADERS: usize = 8;

/// Length of a fragment header.
pub const FRAGMENT_HEADER_LEN: usize = 8;

/// Why an IPv6 header or its extension headers could not be read or written.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum Ipv6Error {
    /// The buffer cannot hold the 40-byte fixed header.
    #[error("IPv6 packet of {len} bytes is shorter than the 40-byte header")]
    Truncated {
        /// Length of the buffer.
        len: usize,
    },
    /// The version nibble is not 6.
    #[error("IPv6 version field is {version}, not 6")]
    BadVersion {
        /// Version found.
        version: u8,
    },
    /// The payload length runs past the buffer.
    #[error("IPv6 payload length {payload_len} exceeds the {available} bytes after the header")]
    PayloadBeyondBuffer {
        /// Payload length found.
        payload_len: usize,
        /// Bytes in the buffer after the fixed header.
        available: usize,
    },
    /// An extension header runs past the payload.
    #[error("IPv6 extension header {kind} at offset {offset} needs {needed} bytes, {available} available")]
    ExtHeaderTruncated {
        /// Protocol number of the extension header.
        kind: u8,
        /// Offset of the extension header from the start of the IPv6 header.
        offset: usize,
        /// Bytes the header needs (2 until its length byte could be read).
        needed: usize,
        /// Bytes left in the payload at that offset.
        available: usize,
    },
    /// More extension headers than [`MAX_EXT_HEADERS`].
    #[error("IPv6 packet has more than {limit} extension headers")]
    TooManyExtHeaders {
        /// The limit that was passed.
        limit: usize,
    },
    /// A hop-by-hop header that is not the first header after the fixed header.
    #[error("IPv6 hop-by-hop header at offset {offset} is not the first extension header")]
    HopByHopNotFirst {
        /// Offset of the misplaced header from the start of the IPv6 header.
        offset: usize,
    },
    /// A payload too long for the 16-bit payload length (jumbograms are not supported).
    #[error("IPv6 payload of {payload_len} bytes does not fit the 16-bit payload length")]
    PayloadTooLong {
        /// Payload length asked for.
        payload_len: usize,
    },
    /// A flow label wider than 20 bits.
    #[error("IPv6 flow label {flow_label:#x} does not fit in 20 bits")]
    FlowLabelOutOfRange {
        /// Flow label asked for.
        flow_label: u32,
    },
    /// A fragment offset that is not a multiple of 8.
    #[error("IPv6 fragment offset {offset} is not a multiple of 8")]
    BadFragOffset {
        /// Offset asked for, in bytes.
        offset: u16,
    },
    /// The output buffer is too short for an extension header.
    #[error("IPv6 output buffer of {len} bytes is shorter than the {needed} bytes needed")]
    BufferTooShort {
        /// Bytes needed.
        needed: usize,
        /// Length of the buffer.
        len: usize,
    },
}

/// Whether `next_header` names an extension header this walker steps over.
pub const fn is_ext_header(next_header: u8) -> bool {
    matches!(
        next_header,
        ip_protocol::HOP_BY_HOP
            | ip_protocol::IPV6_ROUTING
            | ip_protocol::IPV6_FRAGMENT
            | ip_protocol::AH
            | ip_protocol::IPV6_DEST_OPTS
    )
}

/// A view of an IPv6 packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it. Fixed-field accessors panic if it is shorter than
    /// [`HEADER_LEN`]; use this only on a buffer you sized yourself.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after checking that it holds the fixed header and the whole payload.
    /// The buffer may run past the payload (Ethernet padding); the version is not checked here.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Ipv6Error> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks `40 + payload_len <= buffer length`.
    pub fn check_len(&self) -> Result<(), Ipv6Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Ipv6Error::Truncated { len });
        }
        let payload_len = usize::from(self.payload_len());
        let available = len - HEADER_LEN;
        if payload_len > available {
            return Err(Ipv6Error::PayloadBeyondBuffer {
                payload_len,
                available,
            });
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn ver_tc_flow(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::VER_TC_FLOW])
    }

    /// Version nibble (6 for a real IPv6 packet).
    pub fn version(&self) -> u8 {
        (self.ver_tc_flow() >> 28) as u8
    }

    /// Traffic class (DSCP in the high 6 bits, ECN in the low 2).
    pub fn traffic_class(&self) -> u8 {
        (self.ver_tc_flow() >> 20) as u8
    }

    /// Flow label, 20 bits.
    pub fn flow_label(&self) -> u32 {
        self.ver_tc_flow() & 0x000F_FFFF
    }

    /// Length of everything after the fixed header.
    pub fn payload_len(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::PAYLOAD_LEN])
    }

    /// Protocol of the first extension header or of the upper layer.
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(read_array::<16>(&self.buffer.as_ref()[field::SRC_ADDR]))
    }

    /// Destination address (the next segment when a routing header is present).
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(read_array::<16>(&self.buffer.as_ref()[field::DST_ADDR]))
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// Everything after the fixed header up to `payload_len`, excluding Ethernet padding.
    pub fn payload(&self) -> &'a [u8] {
        let data = self.buffer.as_ref();
        let end = (HEADER_LEN + usize::from(self.payload_len())).min(data.len());
        &data[HEADER_LEN.min(end)..end]
    }

    /// Walks the extension headers of the payload.
    pub fn ext_headers(&self) -> ExtHeaders<'a> {
        ExtHeaders::new(self.next_header(), self.payload(), HEADER_LEN)
    }

    /// Walks the extension headers to the upper layer (or to a non-first fragment's data).
    pub fn upper_layer(&self) -> Result<UpperLayer, Ipv6Error> {
        self.ext_headers().upper_layer()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn set_ver_tc_flow(&mut self, value: u32) {
        write_u32(&mut self.buffer.as_mut()[field::VER_TC_FLOW], value);
    }

    /// Sets the version nibble; only its low 4 bits are stored.
    pub fn set_version(&mut self, version: u8) {
        let v = (self.ver_tc_flow() & 0x0FFF_FFFF) | (u32::from(version & 0x0F) << 28);
        self.set_ver_tc_flow(v);
    }

    /// Sets the traffic class.
    pub fn set_traffic_class(&mut self, tc: u8) {
        let v = (self.ver_tc_flow() & 0xF00F_FFFF) | (u32::from(tc) << 20);
        self.set_ver_tc_flow(v);
    }

    /// Sets the flow label; only its low 20 bits are stored.
    pub fn set_flow_label(&mut self, label: u32) {
        let v = (self.ver_tc_flow() & 0xFFF0_0000) | (label & 0x000F_FFFF);
        self.set_ver_tc_flow(v);
    }

    /// Sets the payload length.
    pub fn set_payload_len(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::PAYLOAD_LEN], value);
    }

    /// Sets the next header.
    pub fn set_next_header(&mut self, value: u8) {
        self.buffer.as_mut()[field::NEXT_HEADER] = value;
    }

    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, value: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = value;
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// The payload, writable (to `payload_len`).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let payload_len = usize::from(self.payload_len());
        let data = self.buffer.as_mut();
        let end = (HEADER_LEN + payload_len).min(data.len());
        &mut data[HEADER_LEN.min(end)..end]
    }
}

/// The fields of an IPv6 fragment header (RFC 8200 §4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FragmentHeader {
    /// Protocol of the fragmentable part (the upper layer in the first fragment).
    pub next_header: u8,
    /// Offset of this fragment's data in the original payload, in bytes (a multiple of 8).
    pub offset: u16,
    /// More fragments follow.
    pub more_frags: bool,
    /// Identification shared by all fragments of the datagram.
    pub ident: u32,
}

impl FragmentHeader {
    /// Reads a fragment header from its 8 bytes; `None` if fewer are given.
    pub fn parse(bytes: &[u8]) -> Option<FragmentHeader> {
        if bytes.len() < FRAGMENT_HEADER_LEN {
            return None;
        }
        let off_flags = read_u16(&bytes[2..4]);
        Some(FragmentHeader {
            next_header: bytes[0],
            offset: off_flags & 0xFFF8,
            more_frags: off_flags & 0x0001 != 0,
            ident: read_u32(&bytes[4..8]),
        })
    }

    /// Whether this is the first fragment, the only one that carries the upper-layer header.
    pub const fn is_first(&self) -> bool {
        self.offset == 0
    }

    /// Writes the 8-byte header at the start of `buffer` and returns its length.
    pub fn emit(&self, buffer: &mut [u8]) -> Result<usize, Ipv6Error> {
        if self.offset & 0x7 != 0 {
            return Err(Ipv6Error::BadFragOffset { offset: self.offset });
        }
        let len = buffer.len();
        let out = buffer
            .get_mut(..FRAGMENT_HEADER_LEN)
            .ok_or(Ipv6Error::BufferTooShort {
                needed: FRAGMENT_HEADER_LEN,
                len,
            })?;
        out[0] = self.next_header;
        out[1] = 0;
        write_u16(&mut out[2..4], self.offset | u16::from(self.more_frags));
        write_u32(&mut out[4..8], self.ident);
        Ok(FRAGMENT_HEADER_LEN)
    }
}

/// One extension header met by the walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtHeader<'a> {
    /// Which header this is: its protocol number (0, 43, 44, 51 or 60).
    pub kind: u8,
    /// Protocol of what follows it.
    pub next_header: u8,
    /// Offset of this header from the start of the IPv6 header.
    pub offset: usize,
    /// The whole header, next-header and length bytes included.
    pub data: &'a [u8],
}

impl ExtHeader<'_> {
    /// The fragment fields, if this is a fragment header.
    pub fn fragment(&self) -> Option<FragmentHeader> {
        if self.kind == ip_protocol::IPV6_FRAGMENT {
            FragmentHeader::parse(self.data)
        } else {
            None
        }
    }

    /// The options area of a hop-by-hop or destination-options header (after its first two
    /// bytes); empty for other kinds.
    pub fn options(&self) -> &[u8] {
        match self.kind {
            ip_protocol::HOP_BY_HOP | ip_protocol::IPV6_DEST_OPTS => self.data.get(2..).unwrap_or(&[]),
            _ => &[],
        }
    }
}

/// An iterator over the extension headers of an IPv6 payload.
///
/// Yields each header in order, then ends; after yielding an error it ends too. When it has
/// ended without error, [`ExtHeaders::next_header`] and [`ExtHeaders::offset`] say where the
/// upper layer begins.
#[derive(Debug, Clone)]
pub struct ExtHeaders<'a> {
    payload: &'a [u8],
    /// Offset of `payload[0]` from the start of the IPv6 header, so offsets read naturally.
    base: usize,
    next_header: u8,
    /// Position of the next header to read, relative to `payload`.
    pos: usize,
    count: usize,
    fragment: Option<FragmentHeader>,
    done: bool,
}

impl<'a> ExtHeaders<'a> {
    /// Starts a walk over `payload`, whose first header is `next_header`. `base` is the offset
    /// of `payload` from the start of the IPv6 header (40 for a whole packet); offsets in
    /// results and errors count from there. Use this directly for a packet quoted in an
    /// ICMPv6 error, whose payload may be cut short.
    pub fn new(next_header: u8, payload: &'a [u8], base: usize) -> ExtHeaders<'a> {
        ExtHeaders {
            payload,
            base,
            next_header,
            pos: 0,
            count: 0,
            fragment: None,
            done: false,
        }
    }

    /// The protocol of the header the walk would read next: once the walk has ended without
    /// error, the upper-layer protocol (or a non-first fragment's payload protocol).
    pub fn next_header(&self) -> u8 {
        self.next_header
    }

    /// The offset, from the start of the IPv6 header, of what the walk would read next.
    pub fn offset(&self) -> usize {
        self.base + self.pos
    }

    /// Runs the walk to its end and summarises it.
    pub fn upper_layer(mut self) -> Result<UpperLayer, Ipv6Error> {
        for header in self.by_ref() {
            header?;
        }
        Ok(UpperLayer {
            protocol: self.next_header,
            offset: self.offset(),
            fragment: self.fragment,
            ext_header_count: self.count as u8,
        })
    }

    fn fail(&mut self, err: Ipv6Error) -> Option<Result<ExtHeader<'a>, Ipv6Error>> {
        self.done = true;
        Some(Err(err))
    }
}

impl<'a> Iterator for ExtHeaders<'a> {
    type Item = Result<ExtHeader<'a>, Ipv6Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let kind = self.next_header;
        if self.done || !is_ext_header(kind) {
            self.done = true;
            return None;
        }
        let offset = self.offset();
        if self.count == MAX_EXT_HEADERS {
            return self.fail(Ipv6Error::TooManyExtHeaders {
                limit: MAX_EXT_HEADERS,
            });
        }
        if kind == ip_protocol::HOP_BY_HOP && self.count != 0 {
            return self.fail(Ipv6Error::HopByHopNotFirst { offset });
        }
        // `pos` never exceeds the payload length: it only advances by a length checked below.
        let rest = &self.payload[self.pos..];
        let truncated = |needed| Ipv6Error::ExtHeaderTruncated {
            kind,
            offset,
            needed,
            available: rest.len(),
        };
        if rest.len() < 2 {
            return self.fail(truncated(2));
        }
        let len = match kind {
            ip_protocol::IPV6_FRAGMENT => FRAGMENT_HEADER_LEN,
            // AH counts 4-byte words, minus 2 (RFC 4302 §2.2).
            ip_protocol::AH => (usize::from(rest[1]) + 2) * 4,
            // Hop-by-hop, routing and destination options count 8-byte units after the first.
            _ => (usize::from(rest[1]) + 1) * 8,
        };
        if rest.len() < len {
            return self.fail(truncated(len));
        }
        let header = ExtHeader {
            kind,
            next_header: rest[0],
            offset,
            data: &rest[..len],
        };
        self.pos += len;
        self.count += 1;
        self.next_header = header.next_header;
        if let Some(fragment) = header.fragment() {
            self.fragment = Some(fragment);
            // A later fragment's data is the middle of the datagram: nothing after this
            // header can be read as a header.
            if !fragment.is_first() {
                self.done = true;
            }
        }
        Some(Ok(header))
    }
}

/// Where the extension-header walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpperLayer {
    /// Upper-layer protocol; for a non-first fragment, the protocol its data belongs to.
    pub protocol: u8,
    /// Offset of the upper-layer header (or of a non-first fragment's data) from the start of
    /// the IPv6 header.
    pub offset: usize,
    /// The fragment header, if the packet is a fragment.
    pub fragment: Option<FragmentHeader>,
    /// How many extension headers were stepped over.
    pub ext_header_count: u8,
}

impl UpperLayer {
    /// Whether this is a fragment other than the first, so `offset` points at data, not at an
    /// upper-layer header.
    pub fn is_non_first_fragment(&self) -> bool {
        self.fragment.is_some_and(|f| !f.is_first())
    }
}

/// A parsed IPv6 fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Repr {
    /// Source address.
    pub src_addr: Ipv6Addr,
    /// Destination address.
    pub dst_addr: Ipv6Addr,
    /// Next header.
    pub next_header: u8,
    /// Payload length (extension headers included).
    pub payload_len: usize,
    /// Hop limit.
    pub hop_limit: u8,
    /// Traffic class.
    pub traffic_class: u8,
    /// Flow label, 20 bits.
    pub flow_label: u32,
}

impl Ipv6Repr {
    /// Reads a checked packet, rejecting a version other than 6.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Ipv6Repr, Ipv6Error> {
        let version = packet.version();
        if version != 6 {
            return Err(Ipv6Error::BadVersion { version });
        }
        Ok(Ipv6Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: usize::from(packet.payload_len()),
            hop_limit: packet.hop_limit(),
            traffic_class: packet.traffic_class(),
            flow_label: packet.flow_label(),
        })
    }

    /// Length of the header this emits.
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Header plus payload.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes the 40-byte fixed header at the start of `buffer` and returns its length.
    pub fn emit(&self, buffer: &mut [u8]) -> Result<usize, Ipv6Error> {
        let payload_len = u16::try_from(self.payload_len).map_err(|_| Ipv6Error::PayloadTooLong {
            payload_len: self.payload_len,
        })?;
        if self.flow_label > 0x000F_FFFF {
            return Err(Ipv6Error::FlowLabelOutOfRange {
                flow_label: self.flow_label,
            });
        }
        if buffer.len() < HEADER_LEN {
            return Err(Ipv6Error::Truncated { len: buffer.len() });
        }
        let mut packet = Packet::new_unchecked(&mut buffer[..HEADER_LEN]);
        packet.set_ver_tc_flow(0);
        packet.set_version(6);
        packet.set_traffic_class(self.traffic_class);
        packet.set_flow_label(self.flow_label);
        packet.set_payload_len(payload_len);
        packet.set_next_header(self.next_header);
        packet.set_hop_limit(self.hop_limit);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        Ok(HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    fn client() -> Ipv6Addr {
        "2001:2::10".parse().unwrap()
    }

    fn server() -> Ipv6Addr {
        "2001:2:0:1::80".parse().unwrap()
    }

    #[test]
    fn parse_tcp_every_field() {
        let packet = Packet::new_checked(&fixtures::ETH_IPV6_TCP_SACK[14..]).unwrap();
        assert_eq!(packet.version(), 6);
        assert_eq!(packet.traffic_class(), 0x28);
        assert_eq!(packet.flow_label(), 0x3c8a1);
        assert_eq!(packet.payload_len(), 52);
        assert_eq!(packet.next_header(), ip_protocol::TCP);
        assert_eq!(packet.hop_limit(), 64);
        assert_eq!(packet.src_addr(), client());
        assert_eq!(packet.dst_addr(), server());
        assert_eq!(packet.payload(), &fixtures::ETH_IPV6_TCP_SACK[54..]);
        assert_eq!(packet.ext_headers().count(), 0);
        assert_eq!(
            packet.upper_layer(),
            Ok(UpperLayer {
                protocol: ip_protocol::TCP,
                offset: 40,
                fragment: None,
                ext_header_count: 0
            })
        );
    }

    #[test]
    fn emit_matches_fixture() {
        let repr = Ipv6Repr {
            src_addr: client(),
            dst_addr: server(),
            next_header: ip_protocol::TCP,
            payload_len: 52,
            hop_limit: 64,
            traffic_class: 0x28,
            flow_label: 0x3c8a1,
        };
        let mut buf = [0u8; 40];
        assert_eq!(repr.emit(&mut buf), Ok(40));
        assert_eq!(buf, fixtures::ETH_IPV6_TCP_SACK[14..54]);
        let packet = Packet::new_unchecked(&fixtures::ETH_IPV6_TCP_SACK[14..]);
        assert_eq!(Ipv6Repr::parse(&packet), Ok(repr));
        assert_eq!((repr.header_len(), repr.buffer_len()), (40, 92));
    }

    #[test]
    fn walk_hop_by_hop_and_first_fragment() {
        let frame = &fixtures::ETH_IPV6_HBH_FRAG_FIRST;
        let packet = Packet::new_checked(&frame[14..]).unwrap();
        assert_eq!(packet.next_header(), ip_protocol::HOP_BY_HOP);
        assert_eq!(packet.payload_len(), 56);
        assert_eq!(packet.flow_label(), 0x0a1b2);
        let headers: Vec<_> = packet.ext_headers().map(Result::unwrap).collect();
        assert_eq!(headers.len(), 2);
        assert_eq!(headers[0].kind, ip_protocol::HOP_BY_HOP);
        assert_eq!(headers[0].next_header, ip_protocol::IPV6_FRAGMENT);
        assert_eq!(headers[0].offset, 40);
        assert_eq!(headers[0].data, &frame[54..62]);
        // Router alert (type 5, len 2, value 0 = MLD) and a PadN of length 0.
        assert_eq!(headers[0].options(), &[0x05, 0x02, 0x00, 0x00, 0x01, 0x00]);
        assert_eq!(headers[0].fragment(), None);
        assert_eq!(headers[1].kind, ip_protocol::IPV6_FRAGMENT);
        assert_eq!(headers[1].offset, 48);
        assert_eq!(headers[1].options(), &[] as &[u8]);
        let fragment = FragmentHeader {
            next_header: ip_protocol::UDP,
            offset: 0,
            more_frags: true,
            ident: 0x5f3a9c01,
        };
        assert_eq!(headers[1].fragment(), Some(fragment));
        let upper = packet.upper_layer().unwrap();
        assert_eq!(
            upper,
            UpperLayer {
                protocol: ip_protocol::UDP,
                offset: 56,
                fragment: Some(fragment),
                ext_header_count: 2
            }
        );
        assert!(!upper.is_non_first_fragment());
        let mut buf = [0u8; 8];
        assert_eq!(fragment.emit(&mut buf), Ok(8));
        assert_eq!(buf, frame[62..70]);
    }

    #[test]
    fn walk_stops_at_non_first_fragment() {
        let frame = &fixtures::ETH_IPV6_HBH_FRAG_SECOND;
        let packet = Packet::new_checked(&frame[14..]).unwrap();
        let upper = packet.upper_layer().unwrap();
        assert!(upper.is_non_first_fragment());
        assert_eq!(upper.protocol, ip_protocol::UDP);
        assert_eq!(upper.offset, 56);
        assert_eq!(
            upper.fragment,
            Some(FragmentHeader {
                next_header: ip_protocol::UDP,
                offset: 40,
                more_frags: false,
                ident: 0x5f3a9c01
            })
        );
        // Even if the fragment data looks like more headers, the walk does not read it.
        let mut buf = [0u8; 102];
        buf.copy_from_slice(frame);
        buf[14 + 48] = ip_protocol::IPV6_DEST_OPTS;
        buf[14 + 56] = 0xFF;
        let packet = Packet::new_checked(&buf[14..]).unwrap();
        let upper = packet.upper_layer().unwrap();
        assert_eq!(upper.protocol, ip_protocol::IPV6_DEST_OPTS);
        assert_eq!(upper.offset, 56);
    }

    /// Builds an IPv6 packet whose payload is `ext` followed by `tail`.
    fn with_ext(first: u8, ext: &[u8], tail: &[u8]) -> Vec<u8> {
        let repr = Ipv6Repr {
            src_addr: client(),
            dst_addr: server(),
            next_header: first,
            payload_len: ext.len() + tail.len(),
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
        };
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&mut buf).unwrap();
        buf[40..40 + ext.len()].copy_from_slice(ext);
        buf[40 + ext.len()..].copy_from_slice(tail);
        buf
    }

    #[test]
    fn walk_routing_dest_opts_and_ah() {
        let mut ext = Vec::new();
        // Routing header, segment routing type 4, 1 unit of 8 bytes beyond the first 8.
        ext.extend_from_slice(&[ip_protocol::IPV6_DEST_OPTS, 1, 4, 0, 0, 0, 0, 0]);
        ext.extend_from_slice(&[0; 8]);
        // Destination options: PadN filling 8 bytes.
        ext.extend_from_slice(&[ip_protocol::AH, 0, 1, 4, 0, 0, 0, 0]);
        // AH with payload length 4: (4 + 2) * 4 = 24 bytes.
        ext.extend_from_slice(&[ip_protocol::TCP, 4]);
        ext.extend_from_slice(&[0; 22]);
        let buf = with_ext(ip_protocol::IPV6_ROUTING, &ext, &[0; 20]);
        let packet = Packet::new_checked(&buf[..]).unwrap();
        let kinds: Vec<(u8, usize, usize)> = packet
            .ext_headers()
            .map(|h| h.map(|h| (h.kind, h.offset, h.data.len())).unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                (ip_protocol::IPV6_ROUTING, 40, 16),
                (ip_protocol::IPV6_DEST_OPTS, 56, 8),
                (ip_protocol::AH, 64, 24)
            ]
        );
        let upper = packet.upper_layer().unwrap();
        assert_eq!((upper.protocol, upper.offset, upper.ext_header_count), (6, 88, 3));
        assert_eq!(upper.fragment, None);
    }

    #[test]
    fn walk_errors_name_values() {
        // Too many destination-options headers.
        let mut ext = Vec::new();
        for _ in 0..=MAX_EXT_HEADERS {
            ext.extend_from_slice(&[ip_protocol::IPV6_DEST_OPTS, 0, 1, 4, 0, 0, 0, 0]);
        }
        let buf = with_ext(ip_protocol::IPV6_DEST_OPTS, &ext, &[]);
        let packet = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(
            packet.upper_layer(),
            Err(Ipv6Error::TooManyExtHeaders { limit: 8 })
        );
        let mut walk = packet.ext_headers();
        assert_eq!(walk.by_ref().filter(Result::is_ok).count(), MAX_EXT_HEADERS);
        assert_eq!(walk.next(), None, "fused after the error");

        // A hop-by-hop header after another extension header.
        let ext = [0u8, 0, 1, 4, 0, 0, 0, 0, 59, 0, 1, 4, 0, 0, 0, 0];
        let buf = with_ext(ip_protocol::IPV6_DEST_OPTS, &ext, &[]);
        let packet = Packet::new_checked(&buf[..]).unwrap();
        let err = packet.upper_layer().unwrap_err();
        assert_eq!(err, Ipv6Error::HopByHopNotFirst { offset: 48 });
        assert_eq!(
            err.to_string(),
            "IPv6 hop-by-hop header at offset 48 is not the first extension header"
        );

        // A header whose length runs past the payload.
        let buf = with_ext(ip_protocol::HOP_BY_HOP, &[6, 3, 0, 0, 0, 0, 0, 0], &[0; 8]);
        let packet = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(
            packet.upper_layer(),
            Err(Ipv6Error::ExtHeaderTruncated {
                kind: 0,
                offset: 40,
                needed: 32,
                available: 16
            })
        );

        // Too short to hold even the length byte, and a short fragment header.
        let buf = with_ext(ip_protocol::IPV6_ROUTING, &[6], &[]);
        let packet = Packet::new_checked(&buf[..]).unwrap();
        assert!(matches!(
            packet.upper_layer(),
            Err(Ipv6Error::ExtHeaderTruncated {
                needed: 2,
                available: 1,
                ..
            })
        ));
        let buf = with_ext(ip_protocol::IPV6_FRAGMENT, &[6, 0, 0, 0], &[]);
        let packet = Packet::new_checked(&buf[..]).unwrap();
        assert!(matches!(
            packet.upper_layer(),
            Err(Ipv6Error::ExtHeaderTruncated {
                kind: 44,
                needed: 8,
                available: 4,
                ..
            })
        ));
    }

    #[test]
    fn no_next_header_and_esp_end_the_walk() {
        for last in [ip_protocol::IPV6_NO_NEXT, ip_protocol::ESP, 135] {
            let buf = with_ext(
                ip_protocol::IPV6_DEST_OPTS,
                &[last, 0, 1, 4, 0, 0, 0, 0],
                &[0xAA; 8],
            );
            let packet = Packet::new_checked(&buf[..]).unwrap();
            let upper = packet.upper_layer().unwrap();
            assert_eq!((upper.protocol, upper.offset), (last, 48));
        }
    }

    #[test]
    fn length_errors_name_values() {
        let packet = &fixtures::ETH_IPV6_TCP_SACK[14..];
        for len in 0..HEADER_LEN {
            assert_eq!(
                Packet::new_checked(&packet[..len]).unwrap_err(),
                Ipv6Error::Truncated { len }
            );
        }
        for len in HEADER_LEN..packet.len() {
            assert_eq!(
                Packet::new_checked(&packet[..len]).unwrap_err(),
                Ipv6Error::PayloadBeyondBuffer {
                    payload_len: 52,
                    available: len - 40
                }
            );
        }
        let mut buf = packet.to_vec();
        buf[0] = 0x40;
        let view = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(Ipv6Repr::parse(&view), Err(Ipv6Error::BadVersion { version: 4 }));
        let repr = Ipv6Repr::parse(&Packet::new_checked(packet).unwrap()).unwrap();
        assert_eq!(
            Ipv6Repr {
                payload_len: 65536,
                ..repr
            }
            .emit(&mut buf),
            Err(Ipv6Error::PayloadTooLong { payload_len: 65536 })
        );
        assert_eq!(
            Ipv6Repr {
                flow_label: 0x100000,
                ..repr
            }
            .emit(&mut buf),
            Err(Ipv6Error::FlowLabelOutOfRange { flow_label: 0x100000 })
        );
        assert_eq!(repr.emit(&mut buf[..39]), Err(Ipv6Error::Truncated { len: 39 }));
        let frag = FragmentHeader {
            next_header: 6,
            offset: 3,
            more_frags: false,
            ident: 1,
        };
        assert_eq!(frag.emit(&mut buf), Err(Ipv6Error::BadFragOffset { offset: 3 }));
        assert_eq!(
            FragmentHeader { offset: 8, ..frag }.emit(&mut buf[..7]),
            Err(Ipv6Error::BufferTooShort { needed: 8, len: 7 })
        );
        assert_eq!(FragmentHeader::parse(&[0; 7]), None);
    }

    #[test]
    fn setters_touch_only_their_bits() {
        let mut buf = [0xFFu8; 40];
        let mut packet = Packet::new_unchecked(&mut buf[..]);
        packet.set_flow_label(0);
        assert_eq!(
            (packet.version(), packet.traffic_class(), packet.flow_label()),
            (15, 0xFF, 0)
        );
        packet.set_traffic_class(0);
        packet.set_version(6);
        packet.set_flow_label(0xFFF_FFFF);
        assert_eq!(
            (packet.version(), packet.traffic_class(), packet.flow_label()),
            (6, 0, 0xF_FFFF)
        );
        packet.set_payload_len(0xFFFF);
        // A corrupting setter leaves accessors total.
        assert_eq!(packet.payload_mut().len(), 0);
        let view = Packet::new_unchecked(&buf[..]);
        assert_eq!(view.payload().len(), 0);
        // Whatever the walk concludes, it must conclude without panicking.
        let _ = view.upper_layer();
    }
}
