//! Building the VM's view of a packet ([`PacketCtx`]) from a frame and what the caller knows
//! about it ([`PacketMeta`]).
//!
//! Lengths follow the kernel hook the chain is attached to (measured against the kernel in
//! `tests/kernel_diff.rs`): at `ingress` (netdev) the packet is everything after the Ethernet
//! header and VLAN tags, Ethernet padding included; at the IP hooks (prerouting, input,
//! forward, output, postrouting) it is the IP packet, trimmed to the IP header's length.

use crate::vm::{CtView, PacketCtx};
use levee_packet::parse::{parse_frame, FragKind, FrameInfo, L3Info};

/// What the dataplane (or a test) knows about a packet besides its bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PacketMeta {
    pub iif: u32,
    pub iifname: IfName,
    pub oif: u32,
    pub oifname: IfName,
    pub mark: u32,
    pub cpu: u32,
    /// Wall clock, ns since the Unix epoch (meta time/hour/day).
    pub wall_ns: u64,
    /// Monotonic ns (limits, quotas, timeouts).
    pub now_ns: u64,
    /// 0 host, 1 broadcast, 2 multicast, 3 other host.
    pub pkttype: u8,
    pub ct_state: CtState,
    pub ct_mark: u32,
    pub ct_label: u128,
    /// 0 original, 1 reply.
    pub ct_direction: u8,
    pub ct_status: u32,
    pub ct_expiration_ms: u32,
    pub ct_zone: u16,
}

/// The conntrack classification of a packet (nft's `ct state`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CtState {
    New,
    Established,
    Related,
    Invalid,
    #[default]
    Untracked,
}

impl CtState {
    /// nft's state bit.
    pub fn bit(self) -> u32 {
        match self {
            CtState::Invalid => CtView::INVALID,
            CtState::Established => CtView::ESTABLISHED,
            CtState::Related => CtView::RELATED,
            CtState::New => CtView::NEW,
            CtState::Untracked => CtView::UNTRACKED,
        }
    }
}

/// Which kind of hook evaluates the packet (decides `meta length` and counter bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookKind {
    /// netdev/bridge ingress: L2 payload as received.
    Ingress,
    /// An IP hook: the IP packet.
    Ip,
}

/// An interface name as the kernel stores it: at most 15 bytes, NUL padded to 16 (what
/// `meta iifname` loads). Fixed size, so building a packet's context copies 16 bytes instead
/// of a string.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IfName(pub [u8; 16]);

impl IfName {
    /// The name (up to the first NUL).
    pub fn as_bytes(&self) -> &[u8] {
        let n = self.0.iter().position(|b| *b == 0).unwrap_or(16);
        &self.0[..n]
    }
}

impl From<&str> for IfName {
    /// Longer names are cut to 15 bytes, as `IFNAMSIZ` does.
    fn from(s: &str) -> IfName {
        let mut b = [0u8; 16];
        let n = s.len().min(15);
        b[..n].copy_from_slice(&s.as_bytes()[..n]);
        IfName(b)
    }
}

impl From<String> for IfName {
    fn from(s: String) -> IfName {
        IfName::from(s.as_str())
    }
}

/// Builds the VM's view of `frame`. A frame whose IP headers do not parse is presented as
/// non-IP (network and transport loads break), which is what an ingress hook sees of it; the
/// IP hooks never see such frames (the kernel drops them first), see [`crate::Filter`].
pub fn packet_ctx<'a>(frame: &'a [u8], meta: &PacketMeta, hook: HookKind) -> PacketCtx<'a> {
    packet_ctx_from(frame, parse_frame(frame).ok().as_ref(), meta, hook)
}

/// [`packet_ctx`] for a frame the caller already parsed (the dataplane parses every frame
/// once, for steering, and reuses the result here).
pub fn packet_ctx_from<'a>(
    frame: &'a [u8],
    info: Option<&FrameInfo>,
    meta: &PacketMeta,
    hook: HookKind,
) -> PacketCtx<'a> {
    let l = Layout::of(frame.len(), info, hook);
    PacketCtx {
        frame,
        l3_offset: l.l3_offset,
        l4_offset: l.l4_offset,
        l3_end: l.l3_end,
        nfproto: l.nfproto,
        l4proto: l.l4proto,
        ethertype: l.ethertype,
        len: l.len,
        iif: meta.iif,
        oif: meta.oif,
        iifname: meta.iifname.0,
        oifname: meta.oifname.0,
        mark: meta.mark,
        cpu: meta.cpu,
        wall_ns: meta.wall_ns,
        now_ns: meta.now_ns,
        pkttype: meta.pkttype,
        ct: CtView::of(meta),
    }
}

/// Where a frame's headers are as the VM sees them: the packet-derived part of a
/// [`PacketCtx`] (what payload loads and the family and protocol guards use).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub l3_offset: usize,
    pub l4_offset: Option<usize>,
    pub l3_end: usize,
    pub nfproto: u8,
    pub l4proto: u8,
    pub ethertype: u16,
    pub len: u32,
}

impl Layout {
    /// The layout of a `frame_len`-byte frame parsed as `info`, at a hook of kind `hook`.
    #[inline(always)]
    pub(crate) fn of(frame_len: usize, info: Option<&FrameInfo>, hook: HookKind) -> Layout {
        let mut l = Layout {
            l3_offset: 14.min(frame_len),
            l4_offset: None,
            l3_end: frame_len,
            nfproto: 0,
            l4proto: 0,
            ethertype: 0,
            len: frame_len.saturating_sub(14) as u32,
        };
        let Some(info) = info else { return l };
        l.ethertype = info.ethertype;
        l.l3_offset = info.l3_offset as usize;
        l.len = (frame_len - l.l3_offset) as u32;
        let (nfproto, proto, l4_offset, l4_len, frag) = match info.l3 {
            L3Info::Ipv4(ip) => (2u8, ip.protocol, ip.l4_offset, ip.l4_len, ip.frag),
            L3Info::Ipv6(ip) => (10u8, ip.protocol, ip.l4_offset, ip.l4_len, ip.frag),
            L3Info::Arp | L3Info::Other => return l,
        };
        l.nfproto = nfproto;
        l.l4proto = proto;
        l.l3_end = l4_offset as usize + l4_len as usize;
        // Non-first fragments have no transport header (nft: pkt->tprot_set is false).
        if frag != FragKind::NonFirst {
            l.l4_offset = Some(l4_offset as usize);
        }
        if hook == HookKind::Ip {
            l.len = (l.l3_end - l.l3_offset) as u32;
        }
        l
    }

    /// Where `len` bytes at `offset` from `base` start in a `frame_len`-byte frame, if the
    /// packet has them ([`crate::vm::field_at`] on a context with this layout).
    #[inline(always)]
    pub(crate) fn field(
        &self,
        frame_len: usize,
        base: crate::vm::Base,
        offset: u16,
        len: u8,
    ) -> Option<usize> {
        crate::vm::field_span(
            base,
            self.nfproto,
            self.l3_offset,
            self.l4_offset,
            self.l3_end,
            frame_len,
            offset,
            len,
        )
    }
}
