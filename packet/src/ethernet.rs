//! Ethernet II header view.
//!
//! Owns the 14-byte Ethernet II header: destination, source and EtherType. The frame check
//! sequence is never part of the buffer (the NIC strips it). VLAN tags that may follow the
//! source address belong to [`crate::vlan`]; this view reports the EtherType field as it is on
//! the wire (0x8100 for a tagged frame). Views are plain borrows, usable from any thread.

use core::fmt;

use thiserror::Error;

use crate::bytes::{read_array, read_u16, write_u16};

/// Byte ranges of the Ethernet II header.
pub mod field {
    use crate::{Field, Rest};

    /// Destination MAC address.
    pub const DESTINATION: Field = 0..6;
    /// Source MAC address.
    pub const SOURCE: Field = 6..12;
    /// EtherType of the payload (or of the first VLAN tag).
    pub const ETHERTYPE: Field = 12..14;
    /// Everything after the header.
    pub const PAYLOAD: Rest = 14..;
}

/// Length of the Ethernet II header.
pub const HEADER_LEN: usize = field::PAYLOAD.start;

/// Shortest frame on the wire without its FCS; shorter frames are padded to it.
pub const MIN_FRAME_LEN: usize = 60;

/// EtherType values levee recognises.
pub mod ethertype {
    /// Internet Protocol version 4.
    pub const IPV4: u16 = 0x0800;
    /// Address Resolution Protocol.
    pub const ARP: u16 = 0x0806;
    /// IEEE 802.1Q customer VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// Internet Protocol version 6.
    pub const IPV6: u16 = 0x86DD;
    /// IEEE 802.1ad service VLAN tag (the outer tag of a QinQ frame).
    pub const QINQ: u16 = 0x88A8;
}

/// A 48-bit IEEE MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xFF; 6]);

    /// The address bytes in wire order.
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// Whether this is the broadcast address.
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// Whether the group bit is set (multicast, including broadcast).
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Whether the address is locally administered rather than vendor-assigned.
    pub const fn is_local(&self) -> bool {
        self.0[0] & 0x02 != 0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why an Ethernet header could not be read or written.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum EthernetError {
    /// The buffer cannot hold the 14-byte header.
    #[error("ethernet frame of {len} bytes is shorter than the 14-byte header")]
    Truncated {
        /// Length of the buffer.
        len: usize,
    },
}

/// A view of an Ethernet II frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps a buffer without checking it. Accessors panic if it is shorter than
    /// [`HEADER_LEN`]; use this only on a buffer you sized yourself.
    pub const fn new_unchecked(buffer: T) -> Frame<T> {
        Frame { buffer }
    }

    /// Wraps a buffer after checking it holds a whole header.
    pub fn new_checked(buffer: T) -> Result<Frame<T>, EthernetError> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// Checks that the buffer holds a whole header.
    pub fn check_len(&self) -> Result<(), EthernetError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(EthernetError::Truncated { len });
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Destination MAC address.
    pub fn dst_addr(&self) -> MacAddr {
        MacAddr(read_array(&self.buffer.as_ref()[field::DESTINATION]))
    }

    /// Source MAC address.
    pub fn src_addr(&self) -> MacAddr {
        MacAddr(read_array(&self.buffer.as_ref()[field::SOURCE]))
    }

    /// EtherType as on the wire; a VLAN TPID for tagged frames.
    pub fn ethertype(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::ETHERTYPE])
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Frame<&'a T> {
    /// Everything after the header, including any VLAN tags and Ethernet padding.
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Sets the destination MAC address.
    pub fn set_dst_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&addr.0);
    }

    /// Sets the source MAC address.
    pub fn set_src_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&addr.0);
    }

    /// Sets the EtherType.
    pub fn set_ethertype(&mut self, ethertype: u16) {
        write_u16(&mut self.buffer.as_mut()[field::ETHERTYPE], ethertype);
    }

    /// Everything after the header, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

/// A parsed Ethernet II header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EthernetRepr {
    /// Destination MAC address.
    pub dst_addr: MacAddr,
    /// Source MAC address.
    pub src_addr: MacAddr,
    /// EtherType (or the TPID of the first VLAN tag).
    pub ethertype: u16,
}

impl EthernetRepr {
    /// Reads the header of a checked frame.
    pub fn parse<T: AsRef<[u8]>>(frame: &Frame<T>) -> EthernetRepr {
        EthernetRepr {
            dst_addr: frame.dst_addr(),
            src_addr: frame.src_addr(),
            ethertype: frame.ethertype(),
        }
    }

    /// Length of the header this emits.
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header at the start of `buffer` and returns its length.
    pub fn emit(&self, buffer: &mut [u8]) -> Result<usize, EthernetError> {
        let mut frame = Frame::new_checked(buffer)?;
        frame.set_dst_addr(self.dst_addr);
        frame.set_src_addr(self.src_addr);
        frame.set_ethertype(self.ethertype);
        Ok(HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    const CLIENT: MacAddr = MacAddr([0x52, 0x54, 0x00, 0xa1, 0xb2, 0xc3]);
    const SERVER: MacAddr = MacAddr([0x52, 0x54, 0x00, 0xd4, 0xe5, 0xf6]);

    #[test]
    fn parse_syn_frame() {
        let frame = Frame::new_checked(&fixtures::ETH_IPV4_TCP_SYN[..]).unwrap();
        assert_eq!(frame.dst_addr(), SERVER);
        assert_eq!(frame.src_addr(), CLIENT);
        assert_eq!(frame.ethertype(), ethertype::IPV4);
        assert_eq!(frame.payload(), &fixtures::ETH_IPV4_TCP_SYN[14..]);
        assert_eq!(frame.dst_addr().to_string(), "52:54:00:d4:e5:f6");
        assert!(!frame.dst_addr().is_multicast());
        // 52:54:00 (QEMU's prefix) has the locally-administered bit set.
        assert!(frame.dst_addr().is_local());
    }

    #[test]
    fn parse_arp_broadcast() {
        let frame = Frame::new_checked(&fixtures::ETH_ARP_REQUEST[..]).unwrap();
        assert!(frame.dst_addr().is_broadcast());
        assert!(frame.dst_addr().is_multicast());
        assert_eq!(frame.ethertype(), ethertype::ARP);
        assert_eq!(fixtures::ETH_ARP_REQUEST.len(), MIN_FRAME_LEN);
    }

    #[test]
    fn tagged_frames_report_tpid() {
        let vlan = Frame::new_checked(&fixtures::ETH_VLAN_IPV4_UDP[..]).unwrap();
        assert_eq!(vlan.ethertype(), ethertype::VLAN);
        let qinq = Frame::new_checked(&fixtures::ETH_QINQ_IPV4_TCP_SYN[..]).unwrap();
        assert_eq!(qinq.ethertype(), ethertype::QINQ);
        let v6 = Frame::new_checked(&fixtures::ETH_IPV6_TCP_SACK[..]).unwrap();
        assert_eq!(v6.ethertype(), ethertype::IPV6);
    }

    #[test]
    fn emit_matches_fixture() {
        let repr = EthernetRepr {
            dst_addr: CLIENT,
            src_addr: SERVER,
            ethertype: ethertype::IPV4,
        };
        let mut buf = [0u8; 14];
        assert_eq!(repr.emit(&mut buf), Ok(14));
        assert_eq!(buf, fixtures::ETH_IPV4_TCP_SYNACK[..14]);
        let parsed = EthernetRepr::parse(&Frame::new_checked(&buf[..]).unwrap());
        assert_eq!(parsed, repr);
        assert_eq!(repr.header_len(), 14);
    }

    #[test]
    fn setters_round_trip() {
        let mut buf = fixtures::ETH_IPV4_TCP_SYN;
        let mut frame = Frame::new_checked(&mut buf[..]).unwrap();
        frame.set_dst_addr(CLIENT);
        frame.set_src_addr(SERVER);
        frame.set_ethertype(ethertype::IPV6);
        frame.payload_mut()[0] = 0x60;
        assert_eq!(frame.dst_addr(), CLIENT);
        assert_eq!(frame.src_addr(), SERVER);
        assert_eq!(frame.ethertype(), 0x86dd);
        assert_eq!(buf[14], 0x60);
    }

    #[test]
    fn truncated_at_every_length() {
        for len in 0..HEADER_LEN {
            let err = Frame::new_checked(&fixtures::ETH_IPV4_TCP_SYN[..len]).unwrap_err();
            assert_eq!(err, EthernetError::Truncated { len });
        }
        assert!(Frame::new_checked(&fixtures::ETH_IPV4_TCP_SYN[..HEADER_LEN]).is_ok());
        let mut short = [0u8; 13];
        assert!(EthernetRepr {
            dst_addr: CLIENT,
            src_addr: SERVER,
            ethertype: 0
        }
        .emit(&mut short)
        .is_err());
        assert_eq!(
            EthernetError::Truncated { len: 3 }.to_string(),
            "ethernet frame of 3 bytes is shorter than the 14-byte header"
        );
    }
}
