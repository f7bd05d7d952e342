//! Frame plumbing shared by every path: where the TCP segment of a parsed frame lies (Ethernet,
//! up to two VLAN tags, IPv4 or IPv6), checksum verification, and writing a fresh IP header and
//! TCP segment after an existing link header.
//!
//! Owns [`Segment`] (the facts of one frame the proxy acts on) and the emit helpers; used by
//! [`crate::reply`], [`crate::handshake`] and [`crate::translate`] on the worker thread. The
//! link header (MAC addresses, VLAN tags, EtherType) is never rebuilt: replies swap the MAC
//! addresses in place and keep the tags, so an answer leaves on the VLAN it came from. IP headers
//! are always written fresh (IPv4 without options, IPv6 without extension headers), as Linux's
//! `synproxy_build_ip` does.
//!
//! Every offset taken from a [`FrameInfo`] is checked against the buffer here, so a caller that
//! passes an info of another frame gets [`DropReason::Malformed`], never a panic.

use std::net::{Ipv4Addr, Ipv6Addr};

use levee_packet::checksum::{self, PseudoHeader};
use levee_packet::ethernet::MIN_FRAME_LEN;
use levee_packet::ip_protocol;
use levee_packet::ipv4::{self, Ipv4Error, Ipv4Repr};
use levee_packet::ipv6::{self, Ipv6Error, Ipv6Repr};
use levee_packet::parse::{FragKind, FrameInfo, IpInfo, L3Info, L4Info};
use levee_packet::tcp::{self, TcpError, TcpFlags, TcpRepr};
use thiserror::Error;

use crate::DropReason;

/// Why a packet could not be written.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum RewriteError {
    /// The buffer cannot hold the packet.
    #[error("the {len}-byte buffer cannot hold the {needed}-byte packet")]
    BufferTooShort {
        /// Bytes the packet needs.
        needed: usize,
        /// Bytes the buffer has.
        len: usize,
    },
    /// The TCP builder refused the segment.
    #[error(transparent)]
    Tcp(#[from] TcpError),
    /// The IPv4 builder refused the header.
    #[error(transparent)]
    Ipv4(#[from] Ipv4Error),
    /// The IPv6 builder refused the header.
    #[error(transparent)]
    Ipv6(#[from] Ipv6Error),
}

impl From<RewriteError> for DropReason {
    fn from(_: RewriteError) -> DropReason {
        DropReason::BufferTooShort
    }
}

/// The two addresses of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Addrs {
    /// IPv4.
    V4 {
        /// Source.
        src: Ipv4Addr,
        /// Destination.
        dst: Ipv4Addr,
    },
    /// IPv6.
    V6 {
        /// Source.
        src: Ipv6Addr,
        /// Destination.
        dst: Ipv6Addr,
    },
}

impl Addrs {
    /// Source and destination exchanged.
    pub fn reversed(&self) -> Addrs {
        match *self {
            Addrs::V4 { src, dst } => Addrs::V4 { src: dst, dst: src },
            Addrs::V6 { src, dst } => Addrs::V6 { src: dst, dst: src },
        }
    }

    /// The transport pseudo-header addresses.
    pub fn pseudo(&self) -> PseudoHeader {
        match *self {
            Addrs::V4 { src, dst } => PseudoHeader::V4 { src, dst },
            Addrs::V6 { src, dst } => PseudoHeader::V6 { src, dst },
        }
    }

    /// Whether this is IPv6.
    pub fn is_v6(&self) -> bool {
        matches!(self, Addrs::V6 { .. })
    }

    fn header_len(&self) -> usize {
        match self {
            Addrs::V4 { .. } => ipv4::HEADER_LEN,
            Addrs::V6 { .. } => ipv6::HEADER_LEN,
        }
    }
}

/// The facts of a TCP segment in a frame, every offset checked against the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Offset of the IP header (the link header is `..l3`).
    pub l3: usize,
    /// Offset of the TCP header.
    pub l4: usize,
    /// TCP header plus payload, Ethernet padding excluded.
    pub tcp_len: usize,
    /// TCP header length, options included (20..=60, at most `tcp_len`).
    pub hdr_len: usize,
    /// Addresses.
    pub addrs: Addrs,
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Flags.
    pub flags: TcpFlags,
    /// Window field.
    pub window: u16,
    /// TTL or hop limit.
    pub ttl: u8,
    /// DSCP (the traffic class without its ECN bits for IPv6).
    pub dscp: u8,
    /// IPv6 flow label (0 for IPv4).
    pub flow_label: u32,
}

impl Segment {
    /// Finds the TCP segment of `frame` as `info` (from `parse_frame` on the same bytes)
    /// describes it. Refuses non-TCP packets and fragments.
    #[inline(always)]
    pub fn locate(frame: &[u8], info: &FrameInfo) -> Result<Segment, DropReason> {
        match &info.l3 {
            L3Info::Ipv4(ip) => {
                let addrs = Addrs::V4 {
                    src: ip.src,
                    dst: ip.dst,
                };
                Self::locate_ip(frame, usize::from(info.l3_offset), ip, addrs)
            }
            L3Info::Ipv6(ip) => {
                let addrs = Addrs::V6 {
                    src: ip.src,
                    dst: ip.dst,
                };
                Self::locate_ip(frame, usize::from(info.l3_offset), ip, addrs)
            }
            L3Info::Arp | L3Info::Other => Err(DropReason::Malformed),
        }
    }

    #[inline(always)]
    fn locate_ip<A>(frame: &[u8], l3: usize, ip: &IpInfo<A>, addrs: Addrs) -> Result<Segment, DropReason> {
        if ip.protocol != ip_protocol::TCP
            || ip.frag != FragKind::Unfragmented
            || !matches!(ip.l4, L4Info::Tcp { .. })
        {
            return Err(DropReason::Malformed);
        }
        let l4 = usize::from(ip.l4_offset);
        let tcp_len = usize::from(ip.l4_len);
        if l4 < l3 + addrs.header_len() || l4 + tcp_len > frame.len() || tcp_len < tcp::HEADER_LEN {
            return Err(DropReason::Malformed);
        }
        let t = &frame[l4..l4 + tcp_len];
        let hdr_len = usize::from(t[12] >> 4) * 4;
        if !(tcp::HEADER_LEN..=tcp_len).contains(&hdr_len) {
            return Err(DropReason::Malformed);
        }
        let (ttl, dscp, flow_label) = if addrs.is_v6() {
            let h = &frame[l3..l3 + 4];
            let tc = (h[0] << 4) | (h[1] >> 4);
            let flow = u32::from_be_bytes([0, h[1] & 0x0F, h[2], h[3]]);
            (frame[l3 + 7], tc >> 2, flow)
        } else {
            (frame[l3 + 8], frame[l3 + 1] >> 2, 0)
        };
        Ok(Segment {
            l3,
            l4,
            tcp_len,
            hdr_len,
            addrs,
            src_port: be16(&t[0..]),
            dst_port: be16(&t[2..]),
            seq: be32(&t[4..]),
            ack: be32(&t[8..]),
            flags: TcpFlags::from_bits(t[13]),
            window: be16(&t[14..]),
            ttl,
            dscp,
            flow_label,
        })
    }

    /// The options area of this segment in `frame`.
    #[inline]
    pub fn options<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        &frame[self.l4 + tcp::HEADER_LEN..self.l4 + self.hdr_len]
    }

    /// Bytes of payload.
    pub fn payload_len(&self) -> usize {
        self.tcp_len - self.hdr_len
    }

    /// Whether the IPv4 header checksum (for IPv4) and the TCP checksum verify.
    #[inline]
    pub fn checksums_ok(&self, frame: &[u8]) -> bool {
        if !self.addrs.is_v6() && !checksum::verify(&frame[self.l3..self.l4]) {
            return false;
        }
        tcp::Packet::new_unchecked(&frame[self.l4..self.l4 + self.tcp_len])
            .verify_checksum(&self.addrs.pseudo())
    }
}

#[inline(always)]
pub(crate) fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

#[inline(always)]
pub(crate) fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// The IP header of a packet to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpOut {
    /// Source and destination of the new packet.
    pub addrs: Addrs,
    /// TTL or hop limit.
    pub ttl: u8,
    /// DSCP (ECN bits are always written as not-ECT).
    pub dscp: u8,
    /// IPv6 flow label.
    pub flow_label: u32,
}

/// Writes a fresh IP header at `l3` and the TCP segment `tcp` after it, checksums filled;
/// the link header `buf[..l3]` is left as it is. Returns the frame length, padded with zeros to
/// the 60-byte Ethernet minimum when the buffer has room.
pub fn emit(buf: &mut [u8], l3: usize, ip: &IpOut, tcp: &TcpRepr<'_>) -> Result<usize, RewriteError> {
    let ip_len = ip.addrs.header_len();
    let tcp_len = tcp.buffer_len();
    let l4 = l3 + ip_len;
    let end = l4 + tcp_len;
    if buf.len() < end {
        return Err(RewriteError::BufferTooShort {
            needed: end,
            len: buf.len(),
        });
    }
    match ip.addrs {
        Addrs::V4 { src, dst } => {
            Ipv4Repr {
                src_addr: src,
                dst_addr: dst,
                protocol: ip_protocol::TCP,
                payload_len: tcp_len,
                ttl: ip.ttl,
                dscp: ip.dscp & 0x3F,
                ecn: 0,
                ident: 0,
                dont_frag: true,
                more_frags: false,
                frag_offset: 0,
            }
            .emit(&mut buf[l3..l4])?;
        }
        Addrs::V6 { src, dst } => {
            Ipv6Repr {
                src_addr: src,
                dst_addr: dst,
                next_header: ip_protocol::TCP,
                payload_len: tcp_len,
                hop_limit: ip.ttl,
                traffic_class: (ip.dscp & 0x3F) << 2,
                flow_label: ip.flow_label & 0x000F_FFFF,
            }
            .emit(&mut buf[l3..l4])?;
        }
    }
    tcp.emit(&mut buf[l4..end], &ip.addrs.pseudo())?;
    Ok(pad(buf, end))
}

/// Zero-fills `buf[end..60]` when the frame is shorter than the Ethernet minimum and the buffer
/// has room; returns the frame length.
pub fn pad(buf: &mut [u8], end: usize) -> usize {
    if end < MIN_FRAME_LEN && buf.len() >= MIN_FRAME_LEN {
        buf[end..MIN_FRAME_LEN].fill(0);
        MIN_FRAME_LEN
    } else {
        end
    }
}

/// Exchanges the destination and source MAC addresses, for a reply out of the incoming port.
pub fn swap_macs(buf: &mut [u8]) {
    if let Some(macs) = buf.get_mut(..12) {
        // Both read before either is written (interleaved loads and stores of the two halves
        // stalled the SYN path).
        let (mut dst, mut src) = ([0u8; 6], [0u8; 6]);
        dst.copy_from_slice(&macs[..6]);
        src.copy_from_slice(&macs[6..]);
        macs[..6].copy_from_slice(&src);
        macs[6..].copy_from_slice(&dst);
    }
}

/// Copies the link header `frame[..l3]` to the start of `out`.
pub fn copy_link(frame: &[u8], l3: usize, out: &mut [u8]) -> Result<(), RewriteError> {
    let len = out.len();
    out.get_mut(..l3)
        .ok_or(RewriteError::BufferTooShort { needed: l3, len })?
        .copy_from_slice(&frame[..l3]);
    Ok(())
}
