//! Zero-copy packet views, checksums and a TCP segment builder for levee.
//!
//! This crate owns the wire formats levee reads and writes: one module per protocol, each with a
//! `Packet<T: AsRef<[u8]>>`-style view over borrowed bytes, a `field` table of byte ranges, and
//! where useful a `Repr` that parses the view into plain values and emits them back. The
//! [`parse`] module is the per-packet classifier the dataplane calls; [`checksum`] holds the
//! RFC 1071 / RFC 1624 arithmetic the views and the SYN-proxy share.
//!
//! Invariants every view keeps:
//! - `new_checked()` validates the buffer once; after it returns `Ok`, no accessor of that view
//!   can panic, whatever the bytes say. `new_unchecked()` exists for buffers the caller sized
//!   itself and documents what it needs.
//! - Nothing here allocates, and nothing here holds state: views are plain borrows and may be
//!   used from any thread.
//! - There is no `unsafe` code; byte ranges are read with safe slicing.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod parse;
pub mod siphash;
pub mod tcp;
pub mod udp;
pub mod vlan;

mod bytes;
#[cfg(test)]
mod fixtures;

pub use parse::{parse_frame, FlowTuple, FragKind, FrameInfo, IpFamily, IpInfo, L3Info, L4Info, ParseError};

/// IP protocol numbers (IANA "Assigned Internet Protocol Numbers"), shared by the IPv4
/// protocol field and the IPv6 next-header chain.
pub mod ip_protocol {
    /// IPv6 hop-by-hop options header.
    pub const HOP_BY_HOP: u8 = 0;
    /// Internet Control Message Protocol (IPv4).
    pub const ICMP: u8 = 1;
    /// Transmission Control Protocol.
    pub const TCP: u8 = 6;
    /// User Datagram Protocol.
    pub const UDP: u8 = 17;
    /// IPv6 routing header.
    pub const IPV6_ROUTING: u8 = 43;
    /// IPv6 fragment header.
    pub const IPV6_FRAGMENT: u8 = 44;
    /// Encapsulating security payload; opaque, so it ends an extension-header walk.
    pub const ESP: u8 = 50;
    /// Authentication header.
    pub const AH: u8 = 51;
    /// Internet Control Message Protocol for IPv6.
    pub const ICMPV6: u8 = 58;
    /// IPv6 "no next header".
    pub const IPV6_NO_NEXT: u8 = 59;
    /// IPv6 destination options header.
    pub const IPV6_DEST_OPTS: u8 = 60;
}

/// A byte range of a fixed-size header field, as used by every `field` table.
pub type Field = core::ops::Range<usize>;
/// The bytes from an offset to the end of the buffer, as used by every `field` table.
pub type Rest = core::ops::RangeFrom<usize>;
