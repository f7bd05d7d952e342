//! Dumping and counting: what `levee ctl conntrack list` and `conntrack -C` need.
//!
//! Owns [`DumpFilter`], [`EntrySnapshot`] and [`StateCounts`]. A dump borrows the shard, so on
//! the owning worker thread it is a consistent snapshot; a batched dump (`Shard::dump_batch`)
//! spreads the walk over several loop iterations, with the semantics of a netlink dump: an
//! entry present for the whole dump appears exactly once, one created or removed meanwhile may
//! or may not. Counts per state are kept incrementally, so reading them costs nothing.

use std::net::IpAddr;

use levee_packet::parse::{FlowTuple, IpFamily};

use crate::tcp::TcpState;
use crate::types::{EntryId, L4State, PolicyId};

/// Which entries a dump returns; every `Some` must match.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DumpFilter {
    /// IP version.
    pub family: Option<IpFamily>,
    /// IP protocol number.
    pub protocol: Option<u8>,
    /// An address at either end.
    pub addr: Option<IpAddr>,
    /// A port at either end (TCP and UDP).
    pub port: Option<u16>,
    /// Protocol state (for TCP, the exact state).
    pub state: Option<L4State>,
    /// `(value, mask)`: entries whose `mark & mask == value`.
    pub mark: Option<(u32, u32)>,
}

/// One entry as a dump shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntrySnapshot {
    /// Handle.
    pub id: EntryId,
    /// Original-direction tuple.
    pub original: FlowTuple,
    /// Reply-direction tuple.
    pub reply: FlowTuple,
    /// Protocol state.
    pub l4: L4State,
    /// `ct status` bits.
    pub status: u32,
    /// ct mark.
    pub mark: u32,
    /// ct label.
    pub label: u128,
    /// Milliseconds left.
    pub expires_in_ms: u32,
    /// Attached timeout policy.
    pub policy: PolicyId,
}

/// Entries per state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateCounts {
    /// TCP entries per [`TcpState`] (indexed by its value).
    pub tcp: [u32; 10],
    /// UDP entries that have seen no reply.
    pub udp_unreplied: u32,
    /// UDP entries that have seen a reply but are not a stream yet.
    pub udp_replied: u32,
    /// UDP streams (assured).
    pub udp_assured: u32,
    /// ICMP and ICMPv6 query flows.
    pub icmp: u32,
    /// Other protocols.
    pub generic: u32,
}

impl StateCounts {
    /// All entries.
    pub fn total(&self) -> u32 {
        self.tcp.iter().sum::<u32>()
            + self.udp_unreplied
            + self.udp_replied
            + self.udp_assured
            + self.icmp
            + self.generic
    }

    /// TCP entries in `state`.
    pub fn tcp_state(&self, state: TcpState) -> u32 {
        self.tcp[state as usize]
    }

    pub(crate) fn slot(&mut self, bucket: Bucket) -> &mut u32 {
        match bucket {
            Bucket::Tcp(s) => &mut self.tcp[s as usize],
            Bucket::UdpUnreplied => &mut self.udp_unreplied,
            Bucket::UdpReplied => &mut self.udp_replied,
            Bucket::UdpAssured => &mut self.udp_assured,
            Bucket::Icmp => &mut self.icmp,
            Bucket::Generic => &mut self.generic,
        }
    }
}

/// The [`StateCounts`] cell an entry is counted in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bucket {
    Tcp(TcpState),
    UdpUnreplied,
    UdpReplied,
    UdpAssured,
    Icmp,
    Generic,
}

impl DumpFilter {
    /// Whether `e` passes.
    pub fn matches(&self, e: &EntrySnapshot) -> bool {
        let t = &e.original;
        if self.family.is_some_and(|f| f != t.family) || self.protocol.is_some_and(|p| p != t.protocol) {
            return false;
        }
        if let Some(a) = self.addr {
            if t.src_ip() != a && t.dst_ip() != a {
                return false;
            }
        }
        if let Some(p) = self.port {
            let has_ports = matches!(e.l4, L4State::Tcp(_) | L4State::Udp);
            if !has_ports || (t.src_port != p && t.dst_port != p) {
                return false;
            }
        }
        if self.state.is_some_and(|s| s != e.l4) {
            return false;
        }
        if let Some((value, mask)) = self.mark {
            if e.mark & mask != value {
                return false;
            }
        }
        true
    }
}
