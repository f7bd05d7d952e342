//! ICMPv6 message view and builder (RFC 4443).
//!
//! Owns the ICMPv6 header (type, code, checksum, the 4-byte rest-of-header) and the message
//! body: echo identifier and sequence number for echo messages, and for error messages (types
//! below 128) the quoted packet that caused them. Unlike ICMPv4, the checksum covers an IPv6
//! pseudo-header, so checksum methods take a [`PseudoHeader`]. Neighbour discovery messages
//! pass through as [`Icmpv6Repr::Other`]; levee does not answer them itself.
//!
//! Invariants: a checked view holds at least the 8-byte header. The buffer is the message as
//! delimited by the IPv6 payload (Ethernet padding trimmed). Plain borrows, usable from any
//! thread.

use thiserror::Error;

use crate::bytes::{read_array, read_u16, read_u32, write_u16};
use crate::checksum::{self, PseudoHeader};
use crate::ip_protocol;

/// Byte ranges of the ICMPv6 header.
pub mod field {
    use crate::{Field, Rest};

    /// Message type.
    pub const TYPE: usize = 0;
    /// Message code.
    pub const CODE: usize = 1;
    /// Checksum over pseudo-header and message.
    pub const CHECKSUM: Field = 2..4;
    /// Type-specific rest of the header.
    pub const REST_OF_HEADER: Field = 4..8;
    /// Echo identifier.
    pub const ECHO_IDENT: Field = 4..6;
    /// Echo sequence number.
    pub const ECHO_SEQ_NO: Field = 6..8;
    /// MTU of a packet-too-big message, or pointer of a parameter problem.
    pub const MTU_OR_POINTER: Field = 4..8;
    /// Echo payload or quoted packet.
    pub const DATA: Rest = 8..;
}

/// Length of the ICMPv6 header.
pub const HEADER_LEN: usize = field::DATA.start;

/// ICMPv6 message types levee names.
pub mod msg_type {
    /// Destination unreachable.
    pub const DST_UNREACHABLE: u8 = 1;
    /// Packet too big (carries the MTU).
    pub const PACKET_TOO_BIG: u8 = 2;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 3;
    /// Parameter problem (carries a pointer).
    pub const PARAM_PROBLEM: u8 = 4;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 128;
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 129;
    /// Router solicitation.
    pub const ROUTER_SOLICIT: u8 = 133;
    /// Router advertisement.
    pub const ROUTER_ADVERT: u8 = 134;
    /// Neighbour solicitation.
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    /// Neighbour advertisement.
    pub const NEIGHBOR_ADVERT: u8 = 136;
    /// Redirect.
    pub const REDIRECT: u8 = 137;
}

/// Whether a message type is an error that quotes the offending packet (RFC 4443 §2.1: the
/// high bit of the type is clear).
pub const fn is_error_type(msg_type: u8) -> bool {
    msg_type < 128
}

/// Whether a message type is an echo request or reply.
pub const fn is_echo_type(msg_type: u8) -> bool {
    matches!(msg_type, msg_type::ECHO_REQUEST | msg_type::ECHO_REPLY)
}

/// Why an ICMPv6 message could not be read or written.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum Icmpv6Error {
    /// The buffer cannot hold the 8-byte header.
    #[error("ICMPv6 message of {len} bytes is shorter than the 8-byte header")]
    Truncated {
        /// Length of the buffer.
        len: usize,
    },
    /// The checksum does not verify.
    #[error("ICMPv6 checksum {found:#06x} is wrong, expected {expected:#06x}")]
    BadChecksum {
        /// Checksum in the header.
        found: u16,
        /// Checksum the message should carry.
        expected: u16,
    },
    /// The output buffer is too short.
    #[error("ICMPv6 output buffer of {len} bytes is shorter than the {needed} bytes needed")]
    BufferTooShort {
        /// Bytes needed.
        needed: usize,
        /// Length of the buffer.
        len: usize,
    },
}

/// A view of an ICMPv6 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it. Accessors panic if it is shorter than
    /// [`HEADER_LEN`].
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after checking it holds the 8-byte header.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Icmpv6Error> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the buffer holds the 8-byte header.
    pub fn check_len(&self) -> Result<(), Icmpv6Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Icmpv6Error::Truncated { len });
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Message type.
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// Message code.
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum.
    pub fn checksum(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// Echo identifier (meaningful for echo messages).
    pub fn echo_ident(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::ECHO_IDENT])
    }

    /// Echo sequence number (meaningful for echo messages).
    pub fn echo_seq_no(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::ECHO_SEQ_NO])
    }

    /// MTU of a packet-too-big message.
    pub fn mtu(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::MTU_OR_POINTER])
    }

    /// Pointer of a parameter-problem message.
    pub fn pointer(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::MTU_OR_POINTER])
    }

    /// The 4 type-specific bytes after the checksum.
    pub fn rest_of_header(&self) -> [u8; 4] {
        read_array(&self.buffer.as_ref()[field::REST_OF_HEADER])
    }

    /// Whether this is an error message quoting another packet.
    pub fn is_error(&self) -> bool {
        is_error_type(self.msg_type())
    }

    /// Whether this is an echo request or reply.
    pub fn is_echo(&self) -> bool {
        is_echo_type(self.msg_type())
    }

    /// Whether the checksum verifies over `pseudo` and the whole message.
    pub fn verify_checksum(&self, pseudo: &PseudoHeader) -> bool {
        let data = self.buffer.as_ref();
        let ph = pseudo.sum(ip_protocol::ICMPV6, data.len() as u32);
        checksum::add(ph, checksum::sum(data)) == 0xFFFF
    }

    /// The checksum the message should carry, computed with the checksum field taken as zero.
    pub fn compute_checksum(&self, pseudo: &PseudoHeader) -> u16 {
        let data = self.buffer.as_ref();
        let ph = pseudo.sum(ip_protocol::ICMPV6, data.len() as u32);
        !checksum::combine(&[ph, checksum::sum(data), !self.checksum()])
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// Everything after the 8-byte header: echo payload or quoted packet.
    pub fn data(&self) -> &'a [u8] {
        let data = self.buffer.as_ref();
        &data[HEADER_LEN.min(data.len())..]
    }

    /// For an error message, the quoted packet (an IPv6 header and as much of its payload as
    /// fit, usually cut short); `None` for other messages.
    pub fn quoted_packet(&self) -> Option<&'a [u8]> {
        self.is_error().then(|| self.data())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the message type.
    pub fn set_msg_type(&mut self, value: u8) {
        self.buffer.as_mut()[field::TYPE] = value;
    }

    /// Sets the message code.
    pub fn set_msg_code(&mut self, value: u8) {
        self.buffer.as_mut()[field::CODE] = value;
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::CHECKSUM], value);
    }

    /// Sets the echo identifier.
    pub fn set_echo_ident(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::ECHO_IDENT], value);
    }

    /// Sets the echo sequence number.
    pub fn set_echo_seq_no(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::ECHO_SEQ_NO], value);
    }

    /// Sets the 4 type-specific bytes after the checksum.
    pub fn set_rest_of_header(&mut self, value: [u8; 4]) {
        self.buffer.as_mut()[field::REST_OF_HEADER].copy_from_slice(&value);
    }

    /// Computes the checksum over `pseudo` and the message and stores it.
    pub fn fill_checksum(&mut self, pseudo: &PseudoHeader) {
        let value = self.compute_checksum(pseudo);
        self.set_checksum(value);
    }

    /// Everything after the header, writable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        let data = self.buffer.as_mut();
        let start = HEADER_LEN.min(data.len());
        &mut data[start..]
    }
}

/// An ICMPv6 message as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Icmpv6Repr<'a> {
    /// Echo request.
    EchoRequest {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq_no: u16,
        /// Payload.
        data: &'a [u8],
    },
    /// Echo reply.
    EchoReply {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq_no: u16,
        /// Payload.
        data: &'a [u8],
    },
    /// Destination unreachable.
    DstUnreachable {
        /// Reason (1: administratively prohibited, 4: port unreachable, ...).
        code: u8,
        /// The quoted packet.
        quoted: &'a [u8],
    },
    /// Packet too big.
    PacketTooBig {
        /// MTU of the next hop.
        mtu: u32,
        /// The quoted packet.
        quoted: &'a [u8],
    },
    /// Time exceeded.
    TimeExceeded {
        /// 0: hop limit exceeded; 1: reassembly time exceeded.
        code: u8,
        /// The quoted packet.
        quoted: &'a [u8],
    },
    /// Any other message, kept as its raw parts.
    Other {
        /// Message type.
        msg_type: u8,
        /// Message code.
        code: u8,
        /// The 4 type-specific header bytes.
        rest_of_header: [u8; 4],
        /// Everything after the header.
        data: &'a [u8],
    },
}

impl<'a> Icmpv6Repr<'a> {
    /// Reads a checked message after verifying its checksum over `pseudo`.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &Packet<&'a T>,
        pseudo: &PseudoHeader,
    ) -> Result<Icmpv6Repr<'a>, Icmpv6Error> {
        if !packet.verify_checksum(pseudo) {
            return Err(Icmpv6Error::BadChecksum {
                found: packet.checksum(),
                expected: packet.compute_checksum(pseudo),
            });
        }
        let data = packet.data();
        Ok(match packet.msg_type() {
            msg_type::ECHO_REQUEST if packet.msg_code() == 0 => Icmpv6Repr::EchoRequest {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data,
            },
            msg_type::ECHO_REPLY if packet.msg_code() == 0 => Icmpv6Repr::EchoReply {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data,
            },
            msg_type::DST_UNREACHABLE if packet.rest_of_header() == [0; 4] => Icmpv6Repr::DstUnreachable {
                code: packet.msg_code(),
                quoted: data,
            },
            msg_type::PACKET_TOO_BIG if packet.msg_code() == 0 => Icmpv6Repr::PacketTooBig {
                mtu: packet.mtu(),
                quoted: data,
            },
            msg_type::TIME_EXCEEDED if packet.rest_of_header() == [0; 4] => Icmpv6Repr::TimeExceeded {
                code: packet.msg_code(),
                quoted: data,
            },
            other => Icmpv6Repr::Other {
                msg_type: other,
                code: packet.msg_code(),
                rest_of_header: packet.rest_of_header(),
                data,
            },
        })
    }

    fn parts(&self) -> (u8, u8, [u8; 4], &'a [u8]) {
        let echo = |ident: u16, seq_no: u16| {
            let [a, b] = ident.to_be_bytes();
            let [c, d] = seq_no.to_be_bytes();
            [a, b, c, d]
        };
        match *self {
            Icmpv6Repr::EchoRequest { ident, seq_no, data } => {
                (msg_type::ECHO_REQUEST, 0, echo(ident, seq_no), data)
            }
            Icmpv6Repr::EchoReply { ident, seq_no, data } => {
                (msg_type::ECHO_REPLY, 0, echo(ident, seq_no), data)
            }
            Icmpv6Repr::DstUnreachable { code, quoted } => (msg_type::DST_UNREACHABLE, code, [0; 4], quoted),
            Icmpv6Repr::PacketTooBig { mtu, quoted } => {
                (msg_type::PACKET_TOO_BIG, 0, mtu.to_be_bytes(), quoted)
            }
            Icmpv6Repr::TimeExceeded { code, quoted } => (msg_type::TIME_EXCEEDED, code, [0; 4], quoted),
            Icmpv6Repr::Other {
                msg_type,
                code,
                rest_of_header,
                data,
            } => (msg_type, code, rest_of_header, data),
        }
    }

    /// Header plus data.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.parts().3.len()
    }

    /// Writes the message at the start of `buffer`, checksum filled over `pseudo`, and returns
    /// its length.
    pub fn emit(&self, buffer: &mut [u8], pseudo: &PseudoHeader) -> Result<usize, Icmpv6Error> {
        let (msg_type, code, rest, data) = self.parts();
        let total = HEADER_LEN + data.len();
        let len = buffer.len();
        let out = buffer
            .get_mut(..total)
            .ok_or(Icmpv6Error::BufferTooShort { needed: total, len })?;
        let mut packet = Packet::new_unchecked(out);
        packet.set_msg_type(msg_type);
        packet.set_msg_code(code);
        packet.set_checksum(0);
        packet.set_rest_of_header(rest);
        packet.data_mut().copy_from_slice(data);
        packet.fill_checksum(pseudo);
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;
    use crate::fixtures;

    fn to_server() -> PseudoHeader {
        PseudoHeader::V6 {
            src: "2001:2::10".parse::<Ipv6Addr>().unwrap(),
            dst: "2001:2:0:1::80".parse::<Ipv6Addr>().unwrap(),
        }
    }

    #[test]
    fn parse_echo_request_every_field() {
        let message = &fixtures::ETH_IPV6_ICMPV6_ECHO[54..];
        let packet = Packet::new_checked(message).unwrap();
        assert_eq!(packet.msg_type(), msg_type::ECHO_REQUEST);
        assert_eq!(packet.msg_code(), 0);
        assert_eq!(packet.echo_ident(), 0x3b2a);
        assert_eq!(packet.echo_seq_no(), 7);
        assert!(packet.is_echo() && !packet.is_error());
        assert_eq!(packet.quoted_packet(), None);
        assert_eq!(packet.data(), b"levee-ping-1234!");
        assert!(packet.verify_checksum(&to_server()));
        assert_eq!(packet.compute_checksum(&to_server()), packet.checksum());
        let repr = Icmpv6Repr::parse(&packet, &to_server()).unwrap();
        assert_eq!(
            repr,
            Icmpv6Repr::EchoRequest {
                ident: 0x3b2a,
                seq_no: 7,
                data: b"levee-ping-1234!"
            }
        );
        let mut out = [0u8; 24];
        assert_eq!(repr.emit(&mut out, &to_server()), Ok(24));
        assert_eq!(out, *message);
    }

    #[test]
    fn error_messages_quote_and_round_trip() {
        // A packet-too-big quoting the start of the IPv6 TCP fixture.
        let quoted = &fixtures::ETH_IPV6_TCP_SACK[14..74];
        let reprs = [
            Icmpv6Repr::PacketTooBig { mtu: 1280, quoted },
            Icmpv6Repr::DstUnreachable { code: 1, quoted },
            Icmpv6Repr::TimeExceeded { code: 0, quoted },
            Icmpv6Repr::EchoReply {
                ident: 1,
                seq_no: 2,
                data: b"",
            },
            Icmpv6Repr::Other {
                msg_type: msg_type::PARAM_PROBLEM,
                code: 0,
                rest_of_header: [0, 0, 0, 6],
                data: quoted,
            },
            Icmpv6Repr::Other {
                msg_type: msg_type::NEIGHBOR_SOLICIT,
                code: 0,
                rest_of_header: [0; 4],
                data: &[0x20, 0x01, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x80],
            },
        ];
        for repr in reprs {
            let mut out = [0u8; 80];
            let len = repr.emit(&mut out, &to_server()).unwrap();
            assert_eq!(len, repr.buffer_len());
            let packet = Packet::new_checked(&out[..len]).unwrap();
            assert!(packet.verify_checksum(&to_server()));
            assert_eq!(Icmpv6Repr::parse(&packet, &to_server()), Ok(repr));
            if packet.is_error() {
                assert_eq!(packet.quoted_packet(), Some(quoted));
            }
            if packet.msg_type() == msg_type::PACKET_TOO_BIG {
                assert_eq!(packet.mtu(), 1280);
            }
            if packet.msg_type() == msg_type::PARAM_PROBLEM {
                assert_eq!(packet.pointer(), 6);
            }
        }
    }

    #[test]
    fn errors_name_values() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                Packet::new_checked(&[0u8; 8][..len]).unwrap_err(),
                Icmpv6Error::Truncated { len }
            );
        }
        let mut buf = [0u8; 24];
        buf.copy_from_slice(&fixtures::ETH_IPV6_ICMPV6_ECHO[54..]);
        buf[9] ^= 1;
        let packet = Packet::new_checked(&buf[..]).unwrap();
        assert!(matches!(
            Icmpv6Repr::parse(&packet, &to_server()),
            Err(Icmpv6Error::BadChecksum { .. })
        ));
        let mut packet = Packet::new_checked(&mut buf[..]).unwrap();
        packet.set_echo_ident(0x3b2a);
        packet.set_echo_seq_no(8);
        packet.fill_checksum(&to_server());
        assert!(packet.verify_checksum(&to_server()));
        let repr = Icmpv6Repr::EchoRequest {
            ident: 0,
            seq_no: 0,
            data: b"abc",
        };
        assert_eq!(
            repr.emit(&mut buf[..10], &to_server()),
            Err(Icmpv6Error::BufferTooShort { needed: 11, len: 10 })
        );
    }
}
