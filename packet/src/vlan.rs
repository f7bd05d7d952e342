//! IEEE 802.1Q / 802.1ad VLAN tag view.
//!
//! Owns one 4-byte tag as it sits after the TPID: the tag control information (PCP, DEI, VID)
//! and the EtherType of what follows. The TPID itself (0x8100 for 802.1Q, 0x88A8 for an
//! 802.1ad service tag) is the EtherType field of the header before the tag, so a view starts
//! at the TCI. A QinQ frame is two of these in a row. Plain borrows, usable from any thread.

use thiserror::Error;

use crate::bytes::{read_u16, write_u16};
use crate::ethernet::ethertype;

/// Byte ranges of a VLAN tag, starting after the TPID.
pub mod field {
    use crate::{Field, Rest};

    /// Tag control information: PCP (3 bits), DEI (1 bit), VID (12 bits).
    pub const TCI: Field = 0..2;
    /// EtherType of the encapsulated payload (or the TPID of an inner tag).
    pub const ETHERTYPE: Field = 2..4;
    /// Everything after the tag.
    pub const PAYLOAD: Rest = 4..;
}

/// Length of a tag after its TPID.
pub const TAG_LEN: usize = field::PAYLOAD.start;

/// Largest VLAN identifier (12 bits); 0xFFF itself is reserved by the standard.
pub const MAX_VID: u16 = 0x0FFF;

/// Whether an EtherType announces a VLAN tag levee understands (802.1Q or 802.1ad).
pub const fn is_tpid(value: u16) -> bool {
    value == ethertype::VLAN || value == ethertype::QINQ
}

/// Why a VLAN tag could not be read or written.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum VlanError {
    /// The buffer cannot hold the 4-byte tag.
    #[error("VLAN tag of {len} bytes is shorter than 4 bytes")]
    Truncated {
        /// Length of the buffer.
        len: usize,
    },
    /// A field value does not fit its bits.
    #[error("VLAN tag field {field} = {value} does not fit in {bits} bits")]
    FieldOutOfRange {
        /// Name of the field.
        field: &'static str,
        /// The value that was given.
        value: u16,
        /// Width of the field on the wire.
        bits: u8,
    },
}

/// A view of one VLAN tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Tag<T> {
    /// Wraps a buffer without checking it. Accessors panic if it is shorter than [`TAG_LEN`].
    pub const fn new_unchecked(buffer: T) -> Tag<T> {
        Tag { buffer }
    }

    /// Wraps a buffer after checking it holds a whole tag.
    pub fn new_checked(buffer: T) -> Result<Tag<T>, VlanError> {
        let tag = Self::new_unchecked(buffer);
        tag.check_len()?;
        Ok(tag)
    }

    /// Checks that the buffer holds a whole tag.
    pub fn check_len(&self) -> Result<(), VlanError> {
        let len = self.buffer.as_ref().len();
        if len < TAG_LEN {
            return Err(VlanError::Truncated { len });
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn tci(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::TCI])
    }

    /// Priority code point (802.1p class of service), 0..=7.
    pub fn pcp(&self) -> u8 {
        (self.tci() >> 13) as u8
    }

    /// Drop eligible indicator.
    pub fn dei(&self) -> bool {
        self.tci() & 0x1000 != 0
    }

    /// VLAN identifier, 0..=4095.
    pub fn vid(&self) -> u16 {
        self.tci() & MAX_VID
    }

    /// EtherType of what follows the tag.
    pub fn ethertype(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::ETHERTYPE])
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Tag<&'a T> {
    /// Everything after the tag.
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Tag<T> {
    fn set_tci(&mut self, tci: u16) {
        write_u16(&mut self.buffer.as_mut()[field::TCI], tci);
    }

    /// Sets the priority code point; only its low 3 bits are stored.
    pub fn set_pcp(&mut self, pcp: u8) {
        let tci = (self.tci() & 0x1FFF) | (u16::from(pcp & 0x07) << 13);
        self.set_tci(tci);
    }

    /// Sets the drop eligible indicator.
    pub fn set_dei(&mut self, dei: bool) {
        let tci = (self.tci() & !0x1000) | if dei { 0x1000 } else { 0 };
        self.set_tci(tci);
    }

    /// Sets the VLAN identifier; only its low 12 bits are stored.
    pub fn set_vid(&mut self, vid: u16) {
        let tci = (self.tci() & !MAX_VID) | (vid & MAX_VID);
        self.set_tci(tci);
    }

    /// Sets the EtherType of what follows the tag.
    pub fn set_ethertype(&mut self, ethertype: u16) {
        write_u16(&mut self.buffer.as_mut()[field::ETHERTYPE], ethertype);
    }
}

/// A parsed VLAN tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VlanRepr {
    /// Priority code point, 0..=7.
    pub pcp: u8,
    /// Drop eligible indicator.
    pub dei: bool,
    /// VLAN identifier, 0..=4095.
    pub vid: u16,
    /// EtherType of what follows the tag.
    pub ethertype: u16,
}

impl VlanRepr {
    /// Reads a checked tag.
    pub fn parse<T: AsRef<[u8]>>(tag: &Tag<T>) -> VlanRepr {
        VlanRepr {
            pcp: tag.pcp(),
            dei: tag.dei(),
            vid: tag.vid(),
            ethertype: tag.ethertype(),
        }
    }

    /// Writes the tag (without its TPID) at the start of `buffer` and returns its length.
    /// Fails rather than silently masking a PCP or VID that does not fit.
    pub fn emit(&self, buffer: &mut [u8]) -> Result<usize, VlanError> {
        if self.pcp > 7 {
            return Err(VlanError::FieldOutOfRange {
                field: "pcp",
                value: u16::from(self.pcp),
                bits: 3,
            });
        }
        if self.vid > MAX_VID {
            return Err(VlanError::FieldOutOfRange {
                field: "vid",
                value: self.vid,
                bits: 12,
            });
        }
        let mut tag = Tag::new_checked(buffer)?;
        tag.set_pcp(self.pcp);
        tag.set_dei(self.dei);
        tag.set_vid(self.vid);
        tag.set_ethertype(self.ethertype);
        Ok(TAG_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn parse_dot1q_tag() {
        let frame = &fixtures::ETH_VLAN_IPV4_UDP;
        assert!(is_tpid(u16::from_be_bytes([frame[12], frame[13]])));
        let tag = Tag::new_checked(&frame[14..]).unwrap();
        assert_eq!(tag.pcp(), 5);
        assert!(!tag.dei());
        assert_eq!(tag.vid(), 100);
        assert_eq!(tag.ethertype(), ethertype::IPV4);
        assert_eq!(tag.payload(), &frame[18..]);
    }

    #[test]
    fn parse_qinq_tags() {
        let frame = &fixtures::ETH_QINQ_IPV4_TCP_SYN;
        let outer = Tag::new_checked(&frame[14..]).unwrap();
        let outer_repr = VlanRepr::parse(&outer);
        assert_eq!(
            outer_repr,
            VlanRepr {
                pcp: 1,
                dei: false,
                vid: 200,
                ethertype: ethertype::VLAN
            }
        );
        let inner = Tag::new_checked(outer.payload()).unwrap();
        assert_eq!(
            VlanRepr::parse(&inner),
            VlanRepr {
                pcp: 0,
                dei: true,
                vid: 300,
                ethertype: ethertype::IPV4
            }
        );
    }

    #[test]
    fn emit_matches_fixture() {
        let frame = &fixtures::ETH_QINQ_IPV4_TCP_SYN;
        let mut buf = [0u8; 8];
        let outer = VlanRepr {
            pcp: 1,
            dei: false,
            vid: 200,
            ethertype: ethertype::VLAN,
        };
        let inner = VlanRepr {
            pcp: 0,
            dei: true,
            vid: 300,
            ethertype: ethertype::IPV4,
        };
        assert_eq!(outer.emit(&mut buf[..4]), Ok(4));
        assert_eq!(inner.emit(&mut buf[4..]), Ok(4));
        assert_eq!(buf, frame[14..22]);
    }

    #[test]
    fn setters_touch_only_their_bits() {
        let mut buf = [0xFFu8; 4];
        let mut tag = Tag::new_unchecked(&mut buf[..]);
        tag.set_vid(0);
        assert_eq!((tag.pcp(), tag.dei(), tag.vid()), (7, true, 0));
        tag.set_dei(false);
        assert_eq!((tag.pcp(), tag.dei(), tag.vid()), (7, false, 0));
        tag.set_pcp(2);
        tag.set_vid(0xABCD);
        assert_eq!((tag.pcp(), tag.dei(), tag.vid()), (2, false, 0x0BCD));
        assert_eq!(tag.ethertype(), 0xFFFF);
    }

    #[test]
    fn errors_name_the_value() {
        for len in 0..TAG_LEN {
            assert_eq!(
                Tag::new_checked(&[0u8; 4][..len]).unwrap_err(),
                VlanError::Truncated { len }
            );
        }
        let mut buf = [0u8; 4];
        let bad_vid = VlanRepr {
            pcp: 0,
            dei: false,
            vid: 4096,
            ethertype: 0,
        };
        let err = bad_vid.emit(&mut buf).unwrap_err();
        assert_eq!(
            err.to_string(),
            "VLAN tag field vid = 4096 does not fit in 12 bits"
        );
        let bad_pcp = VlanRepr { pcp: 8, ..bad_vid };
        assert!(matches!(
            bad_pcp.emit(&mut buf),
            Err(VlanError::FieldOutOfRange {
                field: "pcp",
                value: 8,
                ..
            })
        ));
    }
}
