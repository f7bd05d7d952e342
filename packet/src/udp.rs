//! UDP header view and builder (RFC 768).
//!
//! Owns the 8-byte UDP header and the checksum rules that differ by IP version: over IPv4 a
//! zero checksum means "none was computed" and verifies; over IPv6 it is mandatory (RFC 8200
//! §8.1) and zero fails. A computed checksum of zero is sent as 0xFFFF, its one's-complement
//! twin, so it is never mistaken for "none".
//!
//! Invariants: a checked view guarantees `8 <= length field <= buffer length`; bytes after the
//! length field's end are not payload. The view is for a whole datagram; the first fragment of
//! a fragmented datagram fails the length check, and [`crate::parse`] reads its ports directly.
//! Plain borrows, usable from any thread.

use thiserror::Error;

use crate::bytes::{read_u16, write_u16};
use crate::checksum::{self, PseudoHeader};
use crate::ip_protocol;

/// Byte ranges of the UDP header.
pub mod field {
    use crate::Field;

    /// Source port.
    pub const SRC_PORT: Field = 0..2;
    /// Destination port.
    pub const DST_PORT: Field = 2..4;
    /// Length of header and payload.
    pub const LENGTH: Field = 4..6;
    /// Checksum over pseudo-header, header and payload; zero means none (IPv4 only).
    pub const CHECKSUM: Field = 6..8;
}

/// Length of the UDP header.
pub const HEADER_LEN: usize = field::CHECKSUM.end;

/// Why a UDP datagram could not be read or written.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum UdpError {
    /// The buffer cannot hold the 8-byte header.
    #[error("UDP datagram of {len} bytes is shorter than the 8-byte header")]
    Truncated {
        /// Length of the buffer.
        len: usize,
    },
    /// A length field below the header length.
    #[error("UDP length field {length} is below the 8-byte header")]
    LengthTooSmall {
        /// Length field found.
        length: u16,
    },
    /// A length field past the end of the buffer.
    #[error("UDP length field {length} exceeds the {len} bytes available")]
    LengthBeyondBuffer {
        /// Length field found.
        length: u16,
        /// Length of the buffer.
        len: usize,
    },
    /// The checksum does not verify.
    #[error("UDP checksum {found:#06x} is wrong, expected {expected:#06x}")]
    BadChecksum {
        /// Checksum in the header.
        found: u16,
        /// Checksum the datagram should carry.
        expected: u16,
    },
    /// The output buffer is too short.
    #[error("UDP output buffer of {len} bytes is shorter than the {needed} bytes needed")]
    BufferTooShort {
        /// Bytes needed.
        needed: usize,
        /// Length of the buffer.
        len: usize,
    },
    /// A payload the 16-bit length field cannot describe.
    #[error("UDP payload of {payload_len} bytes does not fit the 16-bit length field")]
    PayloadTooLong {
        /// Payload length asked for.
        payload_len: usize,
    },
}

/// A view of a UDP datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it. Fixed-field accessors panic if it is shorter than
    /// [`HEADER_LEN`].
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after checking `8 <= length field <= buffer length`.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, UdpError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks `8 <= length field <= buffer length`.
    pub fn check_len(&self) -> Result<(), UdpError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(UdpError::Truncated { len });
        }
        let length = self.len();
        if usize::from(length) < HEADER_LEN {
            return Err(UdpError::LengthTooSmall { length });
        }
        if usize::from(length) > len {
            return Err(UdpError::LengthBeyondBuffer { length, len });
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::SRC_PORT])
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::DST_PORT])
    }

    /// Length field: header plus payload.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::LENGTH])
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// The datagram as the length field delimits it, clamped to the buffer.
    fn datagram(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        &data[..usize::from(self.len()).min(data.len())]
    }

    /// Whether the checksum verifies over `pseudo`, header and payload. A zero checksum
    /// verifies over IPv4 (none was computed) and fails over IPv6.
    pub fn verify_checksum(&self, pseudo: &PseudoHeader) -> bool {
        if self.checksum() == 0 {
            return matches!(pseudo, PseudoHeader::V4 { .. });
        }
        let datagram = self.datagram();
        let ph = pseudo.sum(ip_protocol::UDP, datagram.len() as u32);
        checksum::add(ph, checksum::sum(datagram)) == 0xFFFF
    }

    /// The checksum the datagram should carry, computed with the checksum field taken as zero;
    /// never zero (a computed zero is returned as 0xFFFF).
    pub fn compute_checksum(&self, pseudo: &PseudoHeader) -> u16 {
        let datagram = self.datagram();
        let ph = pseudo.sum(ip_protocol::UDP, datagram.len() as u32);
        let value = !checksum::combine(&[ph, checksum::sum(datagram), !self.checksum()]);
        if value == 0 {
            0xFFFF
        } else {
            value
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload, from the header to the end the length field gives.
    pub fn payload(&self) -> &'a [u8] {
        let data = self.buffer.as_ref();
        let end = usize::from(self.len()).min(data.len());
        &data[HEADER_LEN.min(end)..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the source port.
    pub fn set_src_port(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::SRC_PORT], value);
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::DST_PORT], value);
    }

    /// Sets the length field.
    pub fn set_len(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::LENGTH], value);
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::CHECKSUM], value);
    }

    /// Computes the checksum over `pseudo` and stores it.
    pub fn fill_checksum(&mut self, pseudo: &PseudoHeader) {
        let value = self.compute_checksum(pseudo);
        self.set_checksum(value);
    }

    /// The payload, writable (to the end the length field gives).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let length = usize::from(self.len());
        let data = self.buffer.as_mut();
        let end = length.min(data.len());
        &mut data[HEADER_LEN.min(end)..end]
    }
}

/// A UDP datagram as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpRepr<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Payload.
    pub payload: &'a [u8],
}

impl<'a> UdpRepr<'a> {
    /// Reads a checked datagram after verifying its checksum over `pseudo`.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &Packet<&'a T>,
        pseudo: &PseudoHeader,
    ) -> Result<UdpRepr<'a>, UdpError> {
        if !packet.verify_checksum(pseudo) {
            return Err(UdpError::BadChecksum {
                found: packet.checksum(),
                expected: packet.compute_checksum(pseudo),
            });
        }
        Ok(UdpRepr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            payload: packet.payload(),
        })
    }

    /// Header plus payload.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// Writes the datagram at the start of `buffer`, checksum filled over `pseudo`, and
    /// returns its length.
    pub fn emit(&self, buffer: &mut [u8], pseudo: &PseudoHeader) -> Result<usize, UdpError> {
        let total = self.buffer_len();
        let length = u16::try_from(total).map_err(|_| UdpError::PayloadTooLong {
            payload_len: self.payload.len(),
        })?;
        let len = buffer.len();
        let out = buffer
            .get_mut(..total)
            .ok_or(UdpError::BufferTooShort { needed: total, len })?;
        let mut packet = Packet::new_unchecked(out);
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_len(length);
        packet.set_checksum(0);
        packet.payload_mut().copy_from_slice(self.payload);
        packet.fill_checksum(pseudo);
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::fixtures;

    const TO_SERVER: PseudoHeader = PseudoHeader::V4 {
        src: Ipv4Addr::new(198, 18, 0, 10),
        dst: Ipv4Addr::new(198, 19, 0, 80),
    };

    fn v6_pseudo() -> PseudoHeader {
        PseudoHeader::V6 {
            src: "2001:2::10".parse::<Ipv6Addr>().unwrap(),
            dst: "2001:2:0:1::80".parse::<Ipv6Addr>().unwrap(),
        }
    }

    #[test]
    fn parse_padded_datagram_every_field() {
        // The frame is padded to 60 bytes; hand the view exactly the IP payload.
        let datagram = &fixtures::ETH_IPV4_UDP[34..48];
        let packet = Packet::new_checked(datagram).unwrap();
        assert_eq!(packet.src_port(), 40001);
        assert_eq!(packet.dst_port(), 7);
        assert_eq!(packet.len(), 14);
        assert_eq!(packet.checksum(), 0x8f34);
        assert_eq!(packet.payload(), b"levee\n");
        assert!(packet.verify_checksum(&TO_SERVER));
        assert_eq!(packet.compute_checksum(&TO_SERVER), 0x8f34);
        let repr = UdpRepr::parse(&packet, &TO_SERVER).unwrap();
        assert_eq!(
            repr,
            UdpRepr {
                src_port: 40001,
                dst_port: 7,
                payload: b"levee\n"
            }
        );
        // Padding after the length field's end is not payload.
        let padded = Packet::new_checked(&fixtures::ETH_IPV4_UDP[34..]).unwrap();
        assert_eq!(padded.payload(), b"levee\n");
        assert!(padded.verify_checksum(&TO_SERVER));
    }

    #[test]
    fn emit_matches_fixtures() {
        let repr = UdpRepr {
            src_port: 40001,
            dst_port: 7,
            payload: b"levee\n",
        };
        let mut out = [0u8; 14];
        assert_eq!(repr.emit(&mut out, &TO_SERVER), Ok(14));
        assert_eq!(out, fixtures::ETH_IPV4_UDP[34..48]);
        let repr = UdpRepr {
            src_port: 33434,
            dst_port: 514,
            payload: b"<13>levee: hello",
        };
        let mut out = [0u8; 24];
        repr.emit(&mut out, &TO_SERVER).unwrap();
        assert_eq!(out, fixtures::ETH_VLAN_IPV4_UDP[38..]);
    }

    #[test]
    fn reassembled_ipv6_datagram_verifies() {
        // The two fragments' UDP bytes joined give the datagram the checksum was made over.
        let mut datagram = fixtures::ETH_IPV6_HBH_FRAG_FIRST[70..].to_vec();
        datagram.extend_from_slice(&fixtures::ETH_IPV6_HBH_FRAG_SECOND[70..]);
        let packet = Packet::new_checked(&datagram[..]).unwrap();
        assert_eq!(
            (packet.src_port(), packet.dst_port(), packet.len()),
            (40000, 5001, 72)
        );
        assert!(packet.verify_checksum(&v6_pseudo()));
        // The first fragment alone is too short for its own length field.
        assert_eq!(
            Packet::new_checked(&fixtures::ETH_IPV6_HBH_FRAG_FIRST[70..]).unwrap_err(),
            UdpError::LengthBeyondBuffer { length: 72, len: 40 }
        );
    }

    #[test]
    fn zero_checksum_rules() {
        let mut out = [0u8; 14];
        out.copy_from_slice(&fixtures::ETH_IPV4_UDP[34..48]);
        let mut packet = Packet::new_checked(&mut out[..]).unwrap();
        packet.set_checksum(0);
        assert!(packet.verify_checksum(&TO_SERVER));
        assert!(!packet.verify_checksum(&v6_pseudo()));
        // A datagram whose checksum computes to zero carries 0xFFFF instead.
        let mut data = [0u8; 10];
        let mut packet = Packet::new_unchecked(&mut data[..]);
        packet.set_len(10);
        let ph = TO_SERVER.sum(ip_protocol::UDP, 10);
        // Choose the payload word so that everything sums to 0xFFFF.
        let partial = checksum::add(ph, checksum::sum(&[0, 0, 0, 0, 0, 10, 0, 0]));
        packet.payload_mut().copy_from_slice(&(!partial).to_be_bytes());
        packet.fill_checksum(&TO_SERVER);
        assert_eq!(packet.checksum(), 0xFFFF);
        assert!(packet.verify_checksum(&TO_SERVER));
    }

    #[test]
    fn errors_name_values() {
        let datagram = &fixtures::ETH_IPV4_UDP[34..48];
        for len in 0..HEADER_LEN {
            assert_eq!(
                Packet::new_checked(&datagram[..len]).unwrap_err(),
                UdpError::Truncated { len }
            );
        }
        for len in HEADER_LEN..14 {
            assert_eq!(
                Packet::new_checked(&datagram[..len]).unwrap_err(),
                UdpError::LengthBeyondBuffer { length: 14, len }
            );
        }
        let mut buf = [0u8; 14];
        buf.copy_from_slice(datagram);
        buf[5] = 7;
        assert_eq!(
            Packet::new_checked(&buf[..]).unwrap_err(),
            UdpError::LengthTooSmall { length: 7 }
        );
        buf[5] = 14;
        buf[13] ^= 1;
        let packet = Packet::new_checked(&buf[..]).unwrap();
        let err = UdpRepr::parse(&packet, &TO_SERVER).unwrap_err();
        assert!(matches!(err, UdpError::BadChecksum { found: 0x8f34, .. }));
        let repr = UdpRepr {
            src_port: 1,
            dst_port: 2,
            payload: b"xy",
        };
        assert_eq!(
            repr.emit(&mut buf[..9], &TO_SERVER),
            Err(UdpError::BufferTooShort { needed: 10, len: 9 })
        );
        let big = vec![0u8; 65528];
        let repr = UdpRepr {
            payload: &big,
            ..repr
        };
        assert_eq!(
            repr.emit(&mut vec![0u8; 70000], &TO_SERVER),
            Err(UdpError::PayloadTooLong { payload_len: 65528 })
        );
        assert_eq!(
            UdpError::LengthTooSmall { length: 7 }.to_string(),
            "UDP length field 7 is below the 8-byte header"
        );
    }
}
