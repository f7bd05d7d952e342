//! ICMPv4 message view and builder (RFC 792).
//!
//! Owns the ICMP header (type, code, checksum, the 4-byte rest-of-header) and the message body:
//! echo identifier and sequence number for echo messages, and for error messages the quoted
//! packet that caused them (an IPv4 header plus at least 8 bytes of its payload, possibly cut
//! short), which the dataplane maps back to a connection.
//!
//! Invariants: a checked view holds at least the 8-byte header. The buffer is the ICMP message
//! as delimited by the IPv4 total length (Ethernet padding trimmed), because the checksum runs
//! to its end. Plain borrows, usable from any thread.

use thiserror::Error;

use crate::bytes::{read_u16, write_u16};
use crate::checksum;

/// Byte ranges of the ICMPv4 header.
pub mod field {
    use crate::{Field, Rest};

    /// Message type.
    pub const TYPE: usize = 0;
    /// Message code.
    pub const CODE: usize = 1;
    /// Checksum over the whole message.
    pub const CHECKSUM: Field = 2..4;
    /// Type-specific rest of the header.
    pub const REST_OF_HEADER: Field = 4..8;
    /// Echo identifier (echo request/reply).
    pub const ECHO_IDENT: Field = 4..6;
    /// Echo sequence number (echo request/reply).
    pub const ECHO_SEQ_NO: Field = 6..8;
    /// Next-hop MTU (destination unreachable, code 4, RFC 1191).
    pub const NEXT_HOP_MTU: Field = 6..8;
    /// Echo payload or quoted packet.
    pub const DATA: Rest = 8..;
}

/// Length of the ICMP header.
pub const HEADER_LEN: usize = field::DATA.start;

/// ICMPv4 message types levee names.
pub mod msg_type {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable.
    pub const DST_UNREACHABLE: u8 = 3;
    /// Source quench (deprecated, still an error message).
    pub const SOURCE_QUENCH: u8 = 4;
    /// Redirect.
    pub const REDIRECT: u8 = 5;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 11;
    /// Parameter problem.
    pub const PARAM_PROBLEM: u8 = 12;
    /// Timestamp request.
    pub const TIMESTAMP: u8 = 13;
    /// Timestamp reply.
    pub const TIMESTAMP_REPLY: u8 = 14;
}

/// Codes of destination-unreachable messages levee names.
pub mod unreachable_code {
    /// Network unreachable.
    pub const NET: u8 = 0;
    /// Host unreachable.
    pub const HOST: u8 = 1;
    /// Protocol unreachable.
    pub const PROTOCOL: u8 = 2;
    /// Port unreachable.
    pub const PORT: u8 = 3;
    /// Fragmentation needed and DF set (carries the next-hop MTU).
    pub const FRAG_NEEDED: u8 = 4;
    /// Communication administratively prohibited (what a filter sends).
    pub const ADMIN_PROHIBITED: u8 = 13;
}

/// Whether a message type is an error that quotes the offending packet.
pub const fn is_error_type(msg_type: u8) -> bool {
    matches!(
        msg_type,
        msg_type::DST_UNREACHABLE
            | msg_type::SOURCE_QUENCH
            | msg_type::REDIRECT
            | msg_type::TIME_EXCEEDED
            | msg_type::PARAM_PROBLEM
    )
}

/// Whether a message type is an echo request or reply.
pub const fn is_echo_type(msg_type: u8) -> bool {
    matches!(msg_type, msg_type::ECHO_REQUEST | msg_type::ECHO_REPLY)
}

/// Why an ICMP message could not be read or written.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum IcmpError {
    /// The buffer cannot hold the 8-byte header.
    #[error("ICMP message of {len} bytes is shorter than the 8-byte header")]
    Truncated {
        /// Length of the buffer.
        len: usize,
    },
    /// The checksum does not verify.
    #[error("ICMP checksum {found:#06x} is wrong, expected {expected:#06x}")]
    BadChecksum {
        /// Checksum in the header.
        found: u16,
        /// Checksum the message should carry.
        expected: u16,
    },
    /// The output buffer is too short.
    #[error("ICMP output buffer of {len} bytes is shorter than the {needed} bytes needed")]
    BufferTooShort {
        /// Bytes needed.
        needed: usize,
        /// Length of the buffer.
        len: usize,
    },
}

/// A view of an ICMPv4 message.
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
    pub fn new_checked(buffer: T) -> Result<Packet<T>, IcmpError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the buffer holds the 8-byte header.
    pub fn check_len(&self) -> Result<(), IcmpError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(IcmpError::Truncated { len });
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

    /// Next-hop MTU (meaningful for "fragmentation needed").
    pub fn next_hop_mtu(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::NEXT_HOP_MTU])
    }

    /// The 4 type-specific bytes after the checksum.
    pub fn rest_of_header(&self) -> [u8; 4] {
        crate::bytes::read_array(&self.buffer.as_ref()[field::REST_OF_HEADER])
    }

    /// Whether this is an error message quoting another packet.
    pub fn is_error(&self) -> bool {
        is_error_type(self.msg_type())
    }

    /// Whether this is an echo request or reply.
    pub fn is_echo(&self) -> bool {
        is_echo_type(self.msg_type())
    }

    /// Whether the checksum verifies over the whole message.
    pub fn verify_checksum(&self) -> bool {
        checksum::verify(self.buffer.as_ref())
    }

    /// The checksum the message should carry, computed with the checksum field taken as zero.
    pub fn compute_checksum(&self) -> u16 {
        !checksum::add(checksum::sum(self.buffer.as_ref()), !self.checksum())
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// Everything after the 8-byte header: echo payload or quoted packet.
    pub fn data(&self) -> &'a [u8] {
        let data = self.buffer.as_ref();
        &data[HEADER_LEN.min(data.len())..]
    }

    /// For an error message, the quoted packet (an IPv4 header and the start of its payload,
    /// whose total length usually exceeds what was quoted); `None` for other messages.
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

    /// Computes the checksum over the whole message and stores it.
    pub fn fill_checksum(&mut self) {
        let value = self.compute_checksum();
        self.set_checksum(value);
    }

    /// Everything after the header, writable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        let data = self.buffer.as_mut();
        let start = HEADER_LEN.min(data.len());
        &mut data[start..]
    }
}

/// An ICMPv4 message as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IcmpRepr<'a> {
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
        /// Reason (see [`unreachable_code`]).
        code: u8,
        /// Next-hop MTU for "fragmentation needed", else zero.
        next_hop_mtu: u16,
        /// The quoted packet.
        quoted: &'a [u8],
    },
    /// Time exceeded.
    TimeExceeded {
        /// 0: TTL exceeded in transit; 1: reassembly time exceeded.
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

impl<'a> IcmpRepr<'a> {
    /// Reads a checked message after verifying its checksum.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&'a T>) -> Result<IcmpRepr<'a>, IcmpError> {
        if !packet.verify_checksum() {
            return Err(IcmpError::BadChecksum {
                found: packet.checksum(),
                expected: packet.compute_checksum(),
            });
        }
        let data = packet.data();
        Ok(match packet.msg_type() {
            msg_type::ECHO_REQUEST if packet.msg_code() == 0 => IcmpRepr::EchoRequest {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data,
            },
            msg_type::ECHO_REPLY if packet.msg_code() == 0 => IcmpRepr::EchoReply {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data,
            },
            msg_type::DST_UNREACHABLE => IcmpRepr::DstUnreachable {
                code: packet.msg_code(),
                next_hop_mtu: packet.next_hop_mtu(),
                quoted: data,
            },
            msg_type::TIME_EXCEEDED => IcmpRepr::TimeExceeded {
                code: packet.msg_code(),
                quoted: data,
            },
            other => IcmpRepr::Other {
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
            IcmpRepr::EchoRequest { ident, seq_no, data } => {
                (msg_type::ECHO_REQUEST, 0, echo(ident, seq_no), data)
            }
            IcmpRepr::EchoReply { ident, seq_no, data } => {
                (msg_type::ECHO_REPLY, 0, echo(ident, seq_no), data)
            }
            IcmpRepr::DstUnreachable {
                code,
                next_hop_mtu,
                quoted,
            } => (msg_type::DST_UNREACHABLE, code, echo(0, next_hop_mtu), quoted),
            IcmpRepr::TimeExceeded { code, quoted } => (msg_type::TIME_EXCEEDED, code, [0; 4], quoted),
            IcmpRepr::Other {
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

    /// Writes the message at the start of `buffer`, checksum filled, and returns its length.
    pub fn emit(&self, buffer: &mut [u8]) -> Result<usize, IcmpError> {
        let (msg_type, code, rest, data) = self.parts();
        let total = HEADER_LEN + data.len();
        let len = buffer.len();
        let out = buffer
            .get_mut(..total)
            .ok_or(IcmpError::BufferTooShort { needed: total, len })?;
        let mut packet = Packet::new_unchecked(out);
        packet.set_msg_type(msg_type);
        packet.set_msg_code(code);
        packet.set_checksum(0);
        packet.set_rest_of_header(rest);
        packet.data_mut().copy_from_slice(data);
        packet.fill_checksum();
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use crate::ipv4;

    #[test]
    fn parse_echo_request_every_field() {
        let message = &fixtures::ETH_IPV4_ICMP_ECHO[34..];
        let packet = Packet::new_checked(message).unwrap();
        assert_eq!(packet.msg_type(), msg_type::ECHO_REQUEST);
        assert_eq!(packet.msg_code(), 0);
        assert!(packet.verify_checksum());
        assert_eq!(packet.compute_checksum(), packet.checksum());
        assert_eq!(packet.echo_ident(), 0x1f2e);
        assert_eq!(packet.echo_seq_no(), 1);
        assert!(packet.is_echo() && !packet.is_error());
        assert_eq!(packet.quoted_packet(), None);
        assert_eq!(packet.data().len(), 56);
        assert_eq!(&packet.data()[16..], &(0x10..0x38).collect::<Vec<u8>>()[..]);
        let repr = IcmpRepr::parse(&packet).unwrap();
        assert_eq!(
            repr,
            IcmpRepr::EchoRequest {
                ident: 0x1f2e,
                seq_no: 1,
                data: &message[8..]
            }
        );
        let mut out = [0u8; 64];
        assert_eq!(repr.emit(&mut out), Ok(64));
        assert_eq!(out, *message);
    }

    #[test]
    fn parse_port_unreachable_and_quoted_udp() {
        let message = &fixtures::ETH_IPV4_ICMP_PORT_UNREACH[34..];
        let packet = Packet::new_checked(message).unwrap();
        assert_eq!(packet.msg_type(), msg_type::DST_UNREACHABLE);
        assert_eq!(packet.msg_code(), unreachable_code::PORT);
        assert_eq!(packet.rest_of_header(), [0; 4]);
        assert_eq!(packet.next_hop_mtu(), 0);
        assert!(packet.is_error() && !packet.is_echo());
        assert!(packet.verify_checksum());
        // The quote is the original datagram exactly as the client sent it.
        let quoted = packet.quoted_packet().unwrap();
        assert_eq!(quoted, &fixtures::ETH_IPV4_UDP[14..48]);
        let inner = ipv4::Packet::new_checked(quoted).unwrap();
        assert_eq!(inner.src_addr(), std::net::Ipv4Addr::new(198, 18, 0, 10));
        assert_eq!(inner.protocol(), crate::ip_protocol::UDP);
        let repr = IcmpRepr::parse(&packet).unwrap();
        assert_eq!(
            repr,
            IcmpRepr::DstUnreachable {
                code: 3,
                next_hop_mtu: 0,
                quoted
            }
        );
        assert_eq!(repr.buffer_len(), 42);
        let mut out = [0u8; 42];
        repr.emit(&mut out).unwrap();
        assert_eq!(out, *message);
    }

    #[test]
    fn other_messages_round_trip() {
        let reprs = [
            IcmpRepr::EchoReply {
                ident: 7,
                seq_no: 9,
                data: b"x",
            },
            IcmpRepr::TimeExceeded {
                code: 0,
                quoted: &[0x45; 28],
            },
            IcmpRepr::DstUnreachable {
                code: unreachable_code::FRAG_NEEDED,
                next_hop_mtu: 1400,
                quoted: &[0x45; 28],
            },
            IcmpRepr::Other {
                msg_type: msg_type::PARAM_PROBLEM,
                code: 0,
                rest_of_header: [20, 0, 0, 0],
                data: &[0x45; 28],
            },
        ];
        for repr in reprs {
            let mut out = [0u8; 64];
            let len = repr.emit(&mut out).unwrap();
            let packet = Packet::new_checked(&out[..len]).unwrap();
            assert_eq!(IcmpRepr::parse(&packet), Ok(repr));
        }
        let mut out = [0u8; 36];
        reprs[2].emit(&mut out).unwrap();
        assert_eq!(Packet::new_unchecked(&out[..]).next_hop_mtu(), 1400);
    }

    #[test]
    fn errors_name_values() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                Packet::new_checked(&fixtures::ETH_IPV4_ICMP_ECHO[34..34 + len]).unwrap_err(),
                IcmpError::Truncated { len }
            );
        }
        let mut buf = [0u8; 64];
        buf.copy_from_slice(&fixtures::ETH_IPV4_ICMP_ECHO[34..]);
        buf[63] ^= 0xFF;
        let packet = Packet::new_checked(&buf[..]).unwrap();
        let found = packet.checksum();
        let err = IcmpRepr::parse(&packet).unwrap_err();
        assert!(
            matches!(err, IcmpError::BadChecksum { found: f, expected } if f == found && expected != found)
        );
        let mut fix = Packet::new_checked(&mut buf[..]).unwrap();
        fix.fill_checksum();
        assert!(fix.verify_checksum());
        let repr = IcmpRepr::EchoRequest {
            ident: 1,
            seq_no: 1,
            data: b"abc",
        };
        assert_eq!(
            repr.emit(&mut buf[..10]),
            Err(IcmpError::BufferTooShort { needed: 11, len: 10 })
        );
        assert_eq!(
            IcmpError::Truncated { len: 3 }.to_string(),
            "ICMP message of 3 bytes is shorter than the 8-byte header"
        );
    }

    #[test]
    fn setters() {
        let mut buf = [0u8; 8];
        let mut packet = Packet::new_checked(&mut buf[..]).unwrap();
        packet.set_msg_type(msg_type::ECHO_REPLY);
        packet.set_msg_code(0);
        packet.set_echo_ident(0xabcd);
        packet.set_echo_seq_no(0x0102);
        packet.fill_checksum();
        assert_eq!(buf[..], [0, 0, 0x53, 0x30, 0xab, 0xcd, 0x01, 0x02]);
    }
}
