//! ARP packet view for Ethernet/IPv4 (RFC 826).
//!
//! Owns the 28-byte ARP body that follows an Ethernet header with EtherType 0x0806. Only the
//! Ethernet/IPv4 shape exists on levee's ports, so `new_checked` insists on 6-byte hardware and
//! 4-byte protocol addresses; the hardware and protocol *types* are left to [`ArpRepr::parse`]
//! so a view can still show an odd packet. Plain borrows, usable from any thread.

use std::net::Ipv4Addr;

use thiserror::Error;

use crate::bytes::{read_array, read_u16, write_u16};
use crate::ethernet::{ethertype, MacAddr};

/// Byte ranges of an Ethernet/IPv4 ARP packet.
pub mod field {
    use crate::Field;

    /// Hardware type (1 for Ethernet).
    pub const HTYPE: Field = 0..2;
    /// Protocol type (0x0800 for IPv4).
    pub const PTYPE: Field = 2..4;
    /// Hardware address length.
    pub const HLEN: usize = 4;
    /// Protocol address length.
    pub const PLEN: usize = 5;
    /// Operation.
    pub const OPER: Field = 6..8;
    /// Sender hardware address.
    pub const SHA: Field = 8..14;
    /// Sender protocol address.
    pub const SPA: Field = 14..18;
    /// Target hardware address.
    pub const THA: Field = 18..24;
    /// Target protocol address.
    pub const TPA: Field = 24..28;
}

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = field::TPA.end;

/// Hardware type of Ethernet.
pub const HTYPE_ETHERNET: u16 = 1;

/// ARP operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Who has the target protocol address?
    Request,
    /// The sender has the sender protocol address.
    Reply,
    /// Any other operation code (RARP, InARP, ...).
    Unknown(u16),
}

impl From<u16> for Operation {
    fn from(value: u16) -> Self {
        match value {
            1 => Operation::Request,
            2 => Operation::Reply,
            other => Operation::Unknown(other),
        }
    }
}

impl From<Operation> for u16 {
    fn from(value: Operation) -> Self {
        match value {
            Operation::Request => 1,
            Operation::Reply => 2,
            Operation::Unknown(other) => other,
        }
    }
}

/// Why an ARP packet could not be read or written.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum ArpError {
    /// The buffer cannot hold a 28-byte Ethernet/IPv4 ARP packet.
    #[error("ARP packet of {len} bytes is shorter than the 28 bytes of Ethernet/IPv4 ARP")]
    Truncated {
        /// Length of the buffer.
        len: usize,
    },
    /// The address lengths are not those of Ethernet and IPv4.
    #[error("ARP address lengths hlen={hlen} plen={plen} are not Ethernet/IPv4 (6/4)")]
    AddressLengths {
        /// Hardware address length found.
        hlen: u8,
        /// Protocol address length found.
        plen: u8,
    },
    /// The hardware or protocol type is not Ethernet/IPv4.
    #[error("ARP types htype={htype:#06x} ptype={ptype:#06x} are not Ethernet/IPv4")]
    Types {
        /// Hardware type found.
        htype: u16,
        /// Protocol type found.
        ptype: u16,
    },
}

/// A view of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it. Accessors panic if it is shorter than
    /// [`PACKET_LEN`].
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after checking its length and address sizes. Bytes after the 28 ARP bytes
    /// (Ethernet padding) are allowed and ignored.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, ArpError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the buffer length and the address-length fields.
    pub fn check_len(&self) -> Result<(), ArpError> {
        let data = self.buffer.as_ref();
        if data.len() < PACKET_LEN {
            return Err(ArpError::Truncated { len: data.len() });
        }
        let (hlen, plen) = (data[field::HLEN], data[field::PLEN]);
        if hlen != 6 || plen != 4 {
            return Err(ArpError::AddressLengths { hlen, plen });
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Hardware type.
    pub fn htype(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::HTYPE])
    }

    /// Protocol type.
    pub fn ptype(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::PTYPE])
    }

    /// Hardware address length (6 in a checked view).
    pub fn hlen(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    /// Protocol address length (4 in a checked view).
    pub fn plen(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    /// Operation.
    pub fn operation(&self) -> Operation {
        Operation::from(read_u16(&self.buffer.as_ref()[field::OPER]))
    }

    /// Sender hardware address.
    pub fn sender_hw_addr(&self) -> MacAddr {
        MacAddr(read_array(&self.buffer.as_ref()[field::SHA]))
    }

    /// Sender protocol address.
    pub fn sender_ip_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(read_array::<4>(&self.buffer.as_ref()[field::SPA]))
    }

    /// Target hardware address.
    pub fn target_hw_addr(&self) -> MacAddr {
        MacAddr(read_array(&self.buffer.as_ref()[field::THA]))
    }

    /// Target protocol address.
    pub fn target_ip_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(read_array::<4>(&self.buffer.as_ref()[field::TPA]))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the hardware type.
    pub fn set_htype(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::HTYPE], value);
    }

    /// Sets the protocol type.
    pub fn set_ptype(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::PTYPE], value);
    }

    /// Sets the hardware address length.
    pub fn set_hlen(&mut self, value: u8) {
        self.buffer.as_mut()[field::HLEN] = value;
    }

    /// Sets the protocol address length.
    pub fn set_plen(&mut self, value: u8) {
        self.buffer.as_mut()[field::PLEN] = value;
    }

    /// Sets the operation.
    pub fn set_operation(&mut self, value: Operation) {
        write_u16(&mut self.buffer.as_mut()[field::OPER], value.into());
    }

    /// Sets the sender hardware address.
    pub fn set_sender_hw_addr(&mut self, value: MacAddr) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&value.0);
    }

    /// Sets the sender protocol address.
    pub fn set_sender_ip_addr(&mut self, value: Ipv4Addr) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&value.octets());
    }

    /// Sets the target hardware address.
    pub fn set_target_hw_addr(&mut self, value: MacAddr) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&value.0);
    }

    /// Sets the target protocol address.
    pub fn set_target_ip_addr(&mut self, value: Ipv4Addr) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&value.octets());
    }
}

/// A parsed Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArpRepr {
    /// Operation.
    pub operation: Operation,
    /// Sender hardware address.
    pub sender_hw_addr: MacAddr,
    /// Sender protocol address.
    pub sender_ip_addr: Ipv4Addr,
    /// Target hardware address (zero in a request).
    pub target_hw_addr: MacAddr,
    /// Target protocol address.
    pub target_ip_addr: Ipv4Addr,
}

impl ArpRepr {
    /// Reads a checked packet, rejecting hardware/protocol types other than Ethernet/IPv4.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<ArpRepr, ArpError> {
        let (htype, ptype) = (packet.htype(), packet.ptype());
        if htype != HTYPE_ETHERNET || ptype != ethertype::IPV4 {
            return Err(ArpError::Types { htype, ptype });
        }
        Ok(ArpRepr {
            operation: packet.operation(),
            sender_hw_addr: packet.sender_hw_addr(),
            sender_ip_addr: packet.sender_ip_addr(),
            target_hw_addr: packet.target_hw_addr(),
            target_ip_addr: packet.target_ip_addr(),
        })
    }

    /// Length of the packet this emits.
    pub const fn buffer_len(&self) -> usize {
        PACKET_LEN
    }

    /// Writes the packet at the start of `buffer` and returns its length.
    pub fn emit(&self, buffer: &mut [u8]) -> Result<usize, ArpError> {
        if buffer.len() < PACKET_LEN {
            return Err(ArpError::Truncated { len: buffer.len() });
        }
        let mut packet = Packet::new_unchecked(buffer);
        packet.set_htype(HTYPE_ETHERNET);
        packet.set_ptype(ethertype::IPV4);
        packet.set_hlen(6);
        packet.set_plen(4);
        packet.set_operation(self.operation);
        packet.set_sender_hw_addr(self.sender_hw_addr);
        packet.set_sender_ip_addr(self.sender_ip_addr);
        packet.set_target_hw_addr(self.target_hw_addr);
        packet.set_target_ip_addr(self.target_ip_addr);
        Ok(PACKET_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    const CLIENT: MacAddr = MacAddr([0x52, 0x54, 0x00, 0xa1, 0xb2, 0xc3]);

    fn request() -> ArpRepr {
        ArpRepr {
            operation: Operation::Request,
            sender_hw_addr: CLIENT,
            sender_ip_addr: Ipv4Addr::new(198, 18, 0, 10),
            target_hw_addr: MacAddr([0; 6]),
            target_ip_addr: Ipv4Addr::new(198, 18, 0, 1),
        }
    }

    #[test]
    fn parse_request_every_field() {
        let packet = Packet::new_checked(&fixtures::ETH_ARP_REQUEST[14..]).unwrap();
        assert_eq!(packet.htype(), 1);
        assert_eq!(packet.ptype(), 0x0800);
        assert_eq!(packet.hlen(), 6);
        assert_eq!(packet.plen(), 4);
        assert_eq!(packet.operation(), Operation::Request);
        assert_eq!(packet.sender_hw_addr(), CLIENT);
        assert_eq!(packet.sender_ip_addr(), Ipv4Addr::new(198, 18, 0, 10));
        assert_eq!(packet.target_hw_addr(), MacAddr([0; 6]));
        assert_eq!(packet.target_ip_addr(), Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(ArpRepr::parse(&packet), Ok(request()));
    }

    #[test]
    fn emit_matches_fixture() {
        let mut buf = [0u8; PACKET_LEN];
        assert_eq!(request().emit(&mut buf), Ok(28));
        assert_eq!(buf, fixtures::ETH_ARP_REQUEST[14..42]);
        assert_eq!(request().buffer_len(), 28);
    }

    #[test]
    fn operation_codes_round_trip() {
        for code in [1u16, 2, 3, 4, 0xFFFF] {
            assert_eq!(u16::from(Operation::from(code)), code);
        }
        assert_eq!(Operation::from(2), Operation::Reply);
    }

    #[test]
    fn rejects_bad_lengths_and_types() {
        let body = &fixtures::ETH_ARP_REQUEST[14..42];
        for len in 0..PACKET_LEN {
            assert_eq!(
                Packet::new_checked(&body[..len]).unwrap_err(),
                ArpError::Truncated { len }
            );
        }
        let mut odd = [0u8; PACKET_LEN];
        odd.copy_from_slice(body);
        odd[field::HLEN] = 8;
        let err = Packet::new_checked(&odd[..]).unwrap_err();
        assert_eq!(err, ArpError::AddressLengths { hlen: 8, plen: 4 });
        assert_eq!(
            err.to_string(),
            "ARP address lengths hlen=8 plen=4 are not Ethernet/IPv4 (6/4)"
        );
        odd[field::HLEN] = 6;
        odd[1] = 6; // IEEE 802 hardware type
        let packet = Packet::new_checked(&odd[..]).unwrap();
        assert_eq!(
            ArpRepr::parse(&packet),
            Err(ArpError::Types {
                htype: 6,
                ptype: 0x0800
            })
        );
        assert!(request().emit(&mut [0u8; 27]).is_err());
    }
}
