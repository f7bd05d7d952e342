//! IPv4 header view (RFC 791).
//!
//! Owns the IPv4 header: fixed fields, the options area, the header checksum and the fragment
//! fields. A checked view guarantees `20 <= header_len <= total_len <= buffer length`, so bytes
//! after `total_len` (Ethernet padding) are never taken for payload. Variable-length accessors
//! also clamp to the buffer, so even a setter that rewrites IHL or the total length cannot make
//! a later accessor panic. Plain borrows, usable from any thread.

use std::net::Ipv4Addr;

use thiserror::Error;

use crate::bytes::{read_array, read_u16, write_u16};
use crate::checksum;

/// Byte ranges of the IPv4 header.
pub mod field {
    use crate::Field;

    /// Version (high nibble) and IHL (low nibble, in 32-bit words).
    pub const VER_IHL: usize = 0;
    /// DSCP (high 6 bits) and ECN (low 2 bits).
    pub const DSCP_ECN: usize = 1;
    /// Total length of header and payload.
    pub const TOTAL_LEN: Field = 2..4;
    /// Identification, shared by the fragments of one datagram.
    pub const IDENT: Field = 4..6;
    /// Flags (reserved, DF, MF) and the fragment offset in 8-byte units.
    pub const FLAGS_FRAG: Field = 6..8;
    /// Time to live.
    pub const TTL: usize = 8;
    /// Upper-layer protocol.
    pub const PROTOCOL: usize = 9;
    /// Header checksum.
    pub const CHECKSUM: Field = 10..12;
    /// Source address.
    pub const SRC_ADDR: Field = 12..16;
    /// Destination address.
    pub const DST_ADDR: Field = 16..20;
}

/// Length of a header without options.
pub const HEADER_LEN: usize = field::DST_ADDR.end;

/// Largest header: IHL 15.
pub const MAX_HEADER_LEN: usize = 60;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1FFF;

/// Why an IPv4 header could not be read or written.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum Ipv4Error {
    /// The buffer cannot hold a 20-byte header.
    #[error("IPv4 packet of {len} bytes is shorter than the 20-byte header")]
    Truncated {
        /// Length of the buffer.
        len: usize,
    },
    /// The version nibble is not 4.
    #[error("IPv4 version field is {version}, not 4")]
    BadVersion {
        /// Version found.
        version: u8,
    },
    /// IHL below 5 words.
    #[error("IPv4 IHL {ihl} is below the minimum of 5 words")]
    IhlTooSmall {
        /// IHL found, in 32-bit words.
        ihl: u8,
    },
    /// The header (with options) runs past the buffer.
    #[error("IPv4 header length {header_len} exceeds the {len} bytes available")]
    HeaderBeyondBuffer {
        /// Header length from IHL, in bytes.
        header_len: usize,
        /// Length of the buffer.
        len: usize,
    },
    /// The total length does not cover the header.
    #[error("IPv4 total length {total_len} is shorter than its header length {header_len}")]
    TotalLenBelowHeader {
        /// Total length found.
        total_len: usize,
        /// Header length from IHL, in bytes.
        header_len: usize,
    },
    /// The total length runs past the buffer.
    #[error("IPv4 total length {total_len} exceeds the {len} bytes available")]
    TotalLenBeyondBuffer {
        /// Total length found.
        total_len: usize,
        /// Length of the buffer.
        len: usize,
    },
    /// The header checksum does not verify.
    #[error("IPv4 header checksum {found:#06x} is wrong, expected {expected:#06x}")]
    BadChecksum {
        /// Checksum in the header.
        found: u16,
        /// Checksum the header should carry.
        expected: u16,
    },
    /// A header plus payload cannot be described by the 16-bit total length.
    #[error("IPv4 payload of {payload_len} bytes does not fit the 16-bit total length")]
    PayloadTooLong {
        /// Payload length asked for.
        payload_len: usize,
    },
    /// A fragment offset is not a multiple of 8 or does not fit 13 bits of 8-byte units.
    #[error("IPv4 fragment offset {offset} is not a multiple of 8 below 65536")]
    BadFragOffset {
        /// Offset asked for, in bytes.
        offset: u32,
    },
    /// A DSCP or ECN value does not fit its bits.
    #[error("IPv4 {field} = {value} does not fit in {bits} bits")]
    FieldOutOfRange {
        /// Name of the field.
        field: &'static str,
        /// The value given.
        value: u8,
        /// Width of the field.
        bits: u8,
    },
}

/// A view of an IPv4 packet.
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

    /// Wraps a buffer after checking the header and length fields against it. The buffer may
    /// run past `total_len` (Ethernet padding); the version is not checked here.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Ipv4Error> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks `20 <= header_len <= total_len <= buffer length`.
    pub fn check_len(&self) -> Result<(), Ipv4Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Ipv4Error::Truncated { len });
        }
        let ihl = self.ihl();
        if ihl < 5 {
            return Err(Ipv4Error::IhlTooSmall { ihl });
        }
        let header_len = self.header_len();
        if header_len > len {
            return Err(Ipv4Error::HeaderBeyondBuffer { header_len, len });
        }
        let total_len = usize::from(self.total_len());
        if total_len < header_len {
            return Err(Ipv4Error::TotalLenBelowHeader {
                total_len,
                header_len,
            });
        }
        if total_len > len {
            return Err(Ipv4Error::TotalLenBeyondBuffer { total_len, len });
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version nibble (4 for a real IPv4 packet).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Internet header length in 32-bit words.
    pub fn ihl(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] & 0x0F
    }

    /// Header length in bytes, options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.ihl()) * 4
    }

    /// Differentiated services code point.
    pub fn dscp(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] >> 2
    }

    /// Explicit congestion notification bits.
    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] & 0x03
    }

    /// Total length of header and payload.
    pub fn total_len(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::TOTAL_LEN])
    }

    /// Identification.
    pub fn ident(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::IDENT])
    }

    fn flags_frag(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::FLAGS_FRAG])
    }

    /// Don't-fragment flag.
    pub fn dont_frag(&self) -> bool {
        self.flags_frag() & FLAG_DF != 0
    }

    /// More-fragments flag.
    pub fn more_frags(&self) -> bool {
        self.flags_frag() & FLAG_MF != 0
    }

    /// Fragment offset in bytes (the 13-bit field times 8).
    pub fn frag_offset(&self) -> u16 {
        (self.flags_frag() & FRAG_OFFSET_MASK) << 3
    }

    /// Whether this packet is a fragment: more fragments follow, or it is not the first.
    pub fn is_fragment(&self) -> bool {
        self.flags_frag() & (FLAG_MF | FRAG_OFFSET_MASK) != 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Upper-layer protocol number (see [`crate::ip_protocol`]).
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Header checksum.
    pub fn checksum(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(read_array::<4>(&self.buffer.as_ref()[field::SRC_ADDR]))
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(read_array::<4>(&self.buffer.as_ref()[field::DST_ADDR]))
    }

    /// The header bytes, options included, clamped to the buffer.
    fn header_range(&self) -> core::ops::Range<usize> {
        0..self.header_len().min(self.buffer.as_ref().len())
    }

    /// Whether the header checksum verifies.
    pub fn verify_checksum(&self) -> bool {
        checksum::verify(&self.buffer.as_ref()[self.header_range()])
    }

    /// The checksum the header should carry, computed with the checksum field taken as zero.
    pub fn compute_checksum(&self) -> u16 {
        let header = &self.buffer.as_ref()[self.header_range()];
        // Subtracting the stored field in one's complement equals summing with it zeroed.
        !checksum::add(checksum::sum(header), !self.checksum())
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The options area between the fixed header and `header_len`.
    pub fn options(&self) -> &'a [u8] {
        let data = self.buffer.as_ref();
        let end = self.header_len().min(data.len());
        &data[HEADER_LEN.min(end)..end]
    }

    /// The payload: from `header_len` to `total_len`, excluding any Ethernet padding.
    pub fn payload(&self) -> &'a [u8] {
        let data = self.buffer.as_ref();
        let end = usize::from(self.total_len()).min(data.len());
        &data[self.header_len().min(end)..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the version nibble.
    pub fn set_version(&mut self, version: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0F) | (version << 4);
    }

    /// Sets the IHL in 32-bit words; only the low 4 bits are stored.
    pub fn set_ihl(&mut self, ihl: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0xF0) | (ihl & 0x0F);
    }

    /// Sets the DSCP; only the low 6 bits are stored.
    pub fn set_dscp(&mut self, dscp: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & 0x03) | (dscp << 2);
    }

    /// Sets the ECN bits; only the low 2 bits are stored.
    pub fn set_ecn(&mut self, ecn: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & 0xFC) | (ecn & 0x03);
    }

    /// Sets the total length.
    pub fn set_total_len(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::TOTAL_LEN], value);
    }

    /// Sets the identification.
    pub fn set_ident(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::IDENT], value);
    }

    fn set_flags_frag(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::FLAGS_FRAG], value);
    }

    /// Sets the don't-fragment flag.
    pub fn set_dont_frag(&mut self, value: bool) {
        let v = (self.flags_frag() & !FLAG_DF) | if value { FLAG_DF } else { 0 };
        self.set_flags_frag(v);
    }

    /// Sets the more-fragments flag.
    pub fn set_more_frags(&mut self, value: bool) {
        let v = (self.flags_frag() & !FLAG_MF) | if value { FLAG_MF } else { 0 };
        self.set_flags_frag(v);
    }

    /// Sets the fragment offset in bytes; the low 3 bits are dropped (offsets count 8-byte
    /// units on the wire).
    pub fn set_frag_offset(&mut self, offset: u16) {
        let v = (self.flags_frag() & !FRAG_OFFSET_MASK) | (offset >> 3);
        self.set_flags_frag(v);
    }

    /// Sets the time to live.
    pub fn set_ttl(&mut self, value: u8) {
        self.buffer.as_mut()[field::TTL] = value;
    }

    /// Sets the protocol number.
    pub fn set_protocol(&mut self, value: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = value;
    }

    /// Sets the header checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::CHECKSUM], value);
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// Computes the header checksum and stores it.
    pub fn fill_checksum(&mut self) {
        let value = self.compute_checksum();
        self.set_checksum(value);
    }

    /// The options area, writable.
    pub fn options_mut(&mut self) -> &mut [u8] {
        let header_len = self.header_len();
        let data = self.buffer.as_mut();
        let end = header_len.min(data.len());
        &mut data[HEADER_LEN.min(end)..end]
    }

    /// The payload, writable (to `total_len`).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (header_len, total_len) = (self.header_len(), usize::from(self.total_len()));
        let data = self.buffer.as_mut();
        let end = total_len.min(data.len());
        &mut data[header_len.min(end)..end]
    }
}

/// A parsed IPv4 header without options: what levee needs to answer or forward a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Repr {
    /// Source address.
    pub src_addr: Ipv4Addr,
    /// Destination address.
    pub dst_addr: Ipv4Addr,
    /// Upper-layer protocol.
    pub protocol: u8,
    /// Payload length (total length minus the header, options included).
    pub payload_len: usize,
    /// Time to live.
    pub ttl: u8,
    /// DSCP, 0..=63.
    pub dscp: u8,
    /// ECN, 0..=3.
    pub ecn: u8,
    /// Identification.
    pub ident: u16,
    /// Don't-fragment flag.
    pub dont_frag: bool,
    /// More-fragments flag.
    pub more_frags: bool,
    /// Fragment offset in bytes, a multiple of 8.
    pub frag_offset: u16,
}

impl Ipv4Repr {
    /// Reads a checked packet, rejecting a version other than 4 or a bad header checksum.
    /// Options are skipped; `payload_len` counts only what follows them.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Ipv4Repr, Ipv4Error> {
        let version = packet.version();
        if version != 4 {
            return Err(Ipv4Error::BadVersion { version });
        }
        if !packet.verify_checksum() {
            return Err(Ipv4Error::BadChecksum {
                found: packet.checksum(),
                expected: packet.compute_checksum(),
            });
        }
        Ok(Ipv4Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            protocol: packet.protocol(),
            payload_len: usize::from(packet.total_len()).saturating_sub(packet.header_len()),
            ttl: packet.ttl(),
            dscp: packet.dscp(),
            ecn: packet.ecn(),
            ident: packet.ident(),
            dont_frag: packet.dont_frag(),
            more_frags: packet.more_frags(),
            frag_offset: packet.frag_offset(),
        })
    }

    /// Length of the header this emits (never any options).
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Header plus payload.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes the 20-byte header, checksum filled, at the start of `buffer` and returns its
    /// length. The payload is the caller's to write after it.
    pub fn emit(&self, buffer: &mut [u8]) -> Result<usize, Ipv4Error> {
        let total_len =
            u16::try_from(HEADER_LEN + self.payload_len).map_err(|_| Ipv4Error::PayloadTooLong {
                payload_len: self.payload_len,
            })?;
        if self.frag_offset & 0x7 != 0 {
            return Err(Ipv4Error::BadFragOffset {
                offset: u32::from(self.frag_offset),
            });
        }
        if self.dscp > 63 {
            return Err(Ipv4Error::FieldOutOfRange {
                field: "dscp",
                value: self.dscp,
                bits: 6,
            });
        }
        if self.ecn > 3 {
            return Err(Ipv4Error::FieldOutOfRange {
                field: "ecn",
                value: self.ecn,
                bits: 2,
            });
        }
        if buffer.len() < HEADER_LEN {
            return Err(Ipv4Error::Truncated { len: buffer.len() });
        }
        let mut packet = Packet::new_unchecked(&mut buffer[..HEADER_LEN]);
        packet.set_version(4);
        packet.set_ihl(5);
        packet.set_dscp(self.dscp);
        packet.set_ecn(self.ecn);
        packet.set_total_len(total_len);
        packet.set_ident(self.ident);
        packet.set_flags_frag(0);
        packet.set_dont_frag(self.dont_frag);
        packet.set_more_frags(self.more_frags);
        packet.set_frag_offset(self.frag_offset);
        packet.set_ttl(self.ttl);
        packet.set_protocol(self.protocol);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        packet.set_checksum(0);
        packet.fill_checksum();
        Ok(HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{fixtures, ip_protocol};

    const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
    const SERVER: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 80);

    fn syn_repr() -> Ipv4Repr {
        Ipv4Repr {
            src_addr: CLIENT,
            dst_addr: SERVER,
            protocol: ip_protocol::TCP,
            payload_len: 40,
            ttl: 64,
            dscp: 0,
            ecn: 0,
            ident: 0x1c46,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
        }
    }

    #[test]
    fn parse_syn_every_field() {
        let packet = Packet::new_checked(&fixtures::ETH_IPV4_TCP_SYN[14..]).unwrap();
        assert_eq!(packet.version(), 4);
        assert_eq!(packet.ihl(), 5);
        assert_eq!(packet.header_len(), 20);
        assert_eq!(packet.dscp(), 0);
        assert_eq!(packet.ecn(), 0);
        assert_eq!(packet.total_len(), 60);
        assert_eq!(packet.ident(), 0x1c46);
        assert!(packet.dont_frag());
        assert!(!packet.more_frags());
        assert_eq!(packet.frag_offset(), 0);
        assert!(!packet.is_fragment());
        assert_eq!(packet.ttl(), 64);
        assert_eq!(packet.protocol(), ip_protocol::TCP);
        assert_eq!(packet.checksum(), 0x91f6);
        assert!(packet.verify_checksum());
        assert_eq!(packet.compute_checksum(), 0x91f6);
        assert_eq!(packet.src_addr(), CLIENT);
        assert_eq!(packet.dst_addr(), SERVER);
        assert_eq!(packet.options(), &[] as &[u8]);
        assert_eq!(packet.payload(), &fixtures::ETH_IPV4_TCP_SYN[34..]);
        assert_eq!(Ipv4Repr::parse(&packet), Ok(syn_repr()));
    }

    #[test]
    fn parse_icmp_error_header() {
        let packet = Packet::new_checked(&fixtures::ETH_IPV4_ICMP_PORT_UNREACH[14..]).unwrap();
        // Linux sends ICMP errors with TOS 0xc0: DSCP 48 (CS6), ECN 0, and no DF.
        assert_eq!(packet.dscp(), 48);
        assert_eq!(packet.ecn(), 0);
        assert!(!packet.dont_frag());
        assert_eq!(packet.ident(), 0x7a11);
        assert_eq!(packet.protocol(), ip_protocol::ICMP);
        assert_eq!(packet.src_addr(), SERVER);
        assert_eq!(packet.dst_addr(), CLIENT);
        assert!(packet.verify_checksum());
    }

    #[test]
    fn padding_is_not_payload() {
        let frame = &fixtures::ETH_IPV4_UDP;
        let packet = Packet::new_checked(&frame[14..]).unwrap();
        assert_eq!(packet.total_len(), 34);
        assert_eq!(packet.payload().len(), 14);
        assert_eq!(frame.len() - 14, 46);
    }

    #[test]
    fn emit_matches_fixtures() {
        let mut buf = [0u8; 20];
        assert_eq!(syn_repr().emit(&mut buf), Ok(20));
        assert_eq!(buf, fixtures::ETH_IPV4_TCP_SYN[14..34]);
        let unreach = Ipv4Repr {
            src_addr: SERVER,
            dst_addr: CLIENT,
            protocol: ip_protocol::ICMP,
            payload_len: 42,
            dscp: 48,
            ident: 0x7a11,
            dont_frag: false,
            ..syn_repr()
        };
        assert_eq!(unreach.emit(&mut buf), Ok(20));
        assert_eq!(buf, fixtures::ETH_IPV4_ICMP_PORT_UNREACH[14..34]);
        assert_eq!(unreach.buffer_len(), 62);
        assert_eq!(unreach.header_len(), 20);
    }

    #[test]
    fn fragment_fields() {
        let mut buf = [0u8; 20];
        let first = Ipv4Repr {
            more_frags: true,
            dont_frag: false,
            ..syn_repr()
        };
        first.emit(&mut buf).unwrap();
        let err = Packet::new_checked(&buf[..]).unwrap_err();
        // total_len 60 exceeds these 20 bytes; a fragment view needs its payload.
        assert_eq!(
            err,
            Ipv4Error::TotalLenBeyondBuffer {
                total_len: 60,
                len: 20
            }
        );
        let mut buf = [0u8; 60];
        first.emit(&mut buf).unwrap();
        let packet = Packet::new_checked(&buf[..]).unwrap();
        assert!(packet.is_fragment() && packet.more_frags() && packet.frag_offset() == 0);
        let last = Ipv4Repr {
            more_frags: false,
            frag_offset: 1480,
            ..first
        };
        last.emit(&mut buf).unwrap();
        let packet = Packet::new_checked(&buf[..]).unwrap();
        assert!(packet.is_fragment() && !packet.more_frags());
        assert_eq!(packet.frag_offset(), 1480);
        assert_eq!(Ipv4Repr::parse(&packet), Ok(last));
        assert_eq!(
            Ipv4Repr {
                frag_offset: 1481,
                ..last
            }
            .emit(&mut buf),
            Err(Ipv4Error::BadFragOffset { offset: 1481 })
        );
    }

    #[test]
    fn options_and_setters() {
        // A header with a router-alert option (IHL 6), built with setters.
        let mut buf = [0u8; 28];
        let mut packet = Packet::new_unchecked(&mut buf[..]);
        packet.set_version(4);
        packet.set_ihl(6);
        packet.set_total_len(28);
        packet.set_ttl(1);
        packet.set_protocol(2);
        packet.set_dscp(46);
        packet.set_ecn(2);
        packet.set_ident(7);
        packet.set_dont_frag(true);
        packet.set_more_frags(true);
        packet.set_frag_offset(64);
        packet.set_src_addr(CLIENT);
        packet.set_dst_addr(Ipv4Addr::new(198, 18, 255, 255));
        packet.options_mut().copy_from_slice(&[0x94, 0x04, 0x00, 0x00]);
        packet.payload_mut().copy_from_slice(&[1, 2, 3, 4]);
        packet.fill_checksum();
        let packet = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(packet.header_len(), 24);
        assert_eq!(packet.options(), &[0x94, 0x04, 0x00, 0x00]);
        assert_eq!(packet.payload(), &[1, 2, 3, 4]);
        assert_eq!((packet.dscp(), packet.ecn()), (46, 2));
        assert!(packet.dont_frag() && packet.more_frags());
        assert_eq!(packet.frag_offset(), 64);
        assert!(packet.verify_checksum());
        let repr = Ipv4Repr::parse(&packet).unwrap();
        assert_eq!(repr.payload_len, 4);
        // Clearing a flag leaves the other and the offset alone.
        let mut buf2 = buf;
        let mut packet = Packet::new_checked(&mut buf2[..]).unwrap();
        packet.set_dont_frag(false);
        assert!(packet.more_frags() && !packet.dont_frag());
        assert_eq!(packet.frag_offset(), 64);
        packet.set_more_frags(false);
        assert!(packet.is_fragment());
        assert!(!packet.verify_checksum());
    }

    #[test]
    fn length_errors_name_values() {
        let header = &fixtures::ETH_IPV4_TCP_SYN[14..];
        for len in 0..HEADER_LEN {
            assert_eq!(
                Packet::new_checked(&header[..len]).unwrap_err(),
                Ipv4Error::Truncated { len }
            );
        }
        for len in HEADER_LEN..60 {
            assert_eq!(
                Packet::new_checked(&header[..len]).unwrap_err(),
                Ipv4Error::TotalLenBeyondBuffer { total_len: 60, len }
            );
        }
        let mut buf = [0u8; 60];
        buf.copy_from_slice(header);
        buf[0] = 0x44;
        assert_eq!(
            Packet::new_checked(&buf[..]).unwrap_err(),
            Ipv4Error::IhlTooSmall { ihl: 4 }
        );
        buf[0] = 0x4f;
        buf[2..4].copy_from_slice(&40u16.to_be_bytes());
        assert_eq!(
            Packet::new_checked(&buf[..]).unwrap_err(),
            Ipv4Error::TotalLenBelowHeader {
                total_len: 40,
                header_len: 60
            }
        );
        assert_eq!(
            Packet::new_checked(&buf[..40]).unwrap_err(),
            Ipv4Error::HeaderBeyondBuffer {
                header_len: 60,
                len: 40
            }
        );
        buf[0] = 0x45;
        buf[2..4].copy_from_slice(&0xFFFFu16.to_be_bytes());
        let err = Packet::new_checked(&buf[..]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "IPv4 total length 65535 exceeds the 60 bytes available"
        );
    }

    #[test]
    fn parse_errors() {
        let mut buf = [0u8; 60];
        buf.copy_from_slice(&fixtures::ETH_IPV4_TCP_SYN[14..]);
        buf[10] ^= 0x01;
        let packet = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(
            Ipv4Repr::parse(&packet),
            Err(Ipv4Error::BadChecksum {
                found: 0x90f6,
                expected: 0x91f6
            })
        );
        buf[0] = 0x65;
        let packet = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(
            Ipv4Repr::parse(&packet),
            Err(Ipv4Error::BadVersion { version: 6 })
        );
        let huge = Ipv4Repr {
            payload_len: 65516,
            ..syn_repr()
        };
        assert_eq!(
            huge.emit(&mut buf),
            Err(Ipv4Error::PayloadTooLong { payload_len: 65516 })
        );
        let bad_dscp = Ipv4Repr {
            dscp: 64,
            ..syn_repr()
        };
        assert!(matches!(
            bad_dscp.emit(&mut buf),
            Err(Ipv4Error::FieldOutOfRange {
                field: "dscp",
                value: 64,
                bits: 6
            })
        ));
        assert_eq!(
            syn_repr().emit(&mut buf[..19]),
            Err(Ipv4Error::Truncated { len: 19 })
        );
    }

    #[test]
    fn accessors_survive_corrupting_setters() {
        // A checked view whose length fields are then rewritten must not panic.
        let mut buf = [0u8; 60];
        buf.copy_from_slice(&fixtures::ETH_IPV4_TCP_SYN[14..]);
        let mut packet = Packet::new_checked(&mut buf[..]).unwrap();
        packet.set_ihl(15);
        packet.set_total_len(0xFFFF);
        assert_eq!(packet.options_mut().len(), 40);
        assert_eq!(packet.payload_mut().len(), 0);
        packet.set_ihl(0);
        assert_eq!(packet.options_mut().len(), 0);
        assert_eq!(packet.payload_mut().len(), 60);
        let _ = packet.verify_checksum();
        let view = Packet::new_unchecked(&buf[..]);
        assert_eq!(view.payload().len(), 60);
    }
}
