//! The values a shard hands to its caller: classification, direction, status bits, the
//! per-packet conntrack view the filter VM reads, handles, and the reasons for INVALID and
//! UNTRACKED. Plain `Copy` data; no behaviour beyond encoding helpers.

use crate::tcp::{TcpInvalid, TcpState};

/// Handle of an entry in its shard: valid until the next call that may remove entries
/// (`track`, `confirm`, `insert_tcp`, `expire`, `remove`). Methods taking one check it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryId(pub(crate) u32);

impl EntryId {
    /// The slot number (stable for the entry's life; for dumps and logs).
    pub fn index(self) -> u32 {
        self.0
    }
}

/// Handle of a registered timeout policy; [`PolicyId::DEFAULT`] is the shard's own timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct PolicyId(pub(crate) u8);

impl PolicyId {
    /// The shard's default timeouts.
    pub const DEFAULT: PolicyId = PolicyId(0);
}

/// nft's `ct state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CtState {
    /// The packet opens a flow (or the flow has seen no reply yet).
    New,
    /// Traffic was seen both ways (or the packet is a reply).
    Established,
    /// An ICMP error about a tracked flow.
    Related,
    /// The tracker refused the packet.
    Invalid,
    /// Deliberately not tracked.
    Untracked,
}

impl CtState {
    /// nft's bit for this state (`ct state` is a bitmask): invalid 1, established 2,
    /// related 4, new 8, untracked 64.
    pub const fn nft_bit(self) -> u32 {
        match self {
            CtState::Invalid => 1,
            CtState::Established => 2,
            CtState::Related => 4,
            CtState::New => 8,
            CtState::Untracked => 64,
        }
    }
}

/// `ct direction`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    /// From the end that opened the flow.
    #[default]
    Original = 0,
    /// Towards it.
    Reply = 1,
}

/// `ct status` bits, with Linux's `IPS_*` values so nft rules read them unchanged.
pub mod status {
    /// `IPS_EXPECTED` (never set: levee has no helpers).
    pub const EXPECTED: u32 = 1 << 0;
    /// `IPS_SEEN_REPLY`: a packet was seen in the reply direction.
    pub const SEEN_REPLY: u32 = 1 << 1;
    /// `IPS_ASSURED`: the flow is established enough never to be evicted.
    pub const ASSURED: u32 = 1 << 2;
    /// `IPS_CONFIRMED`: the entry is in the table.
    pub const CONFIRMED: u32 = 1 << 3;
}

/// What the filter VM reads of a packet's flow (`ct state`, `ct status`, `ct direction`,
/// `ct mark`, `ct label`, `ct expiration`, `ct zone`), plus the entry's handle for setting
/// mark, label, timeout policy or extension after the VM ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtInfo {
    /// Classification.
    pub state: CtState,
    /// Direction of the packet in its flow.
    pub direction: Direction,
    /// [`status`] bits.
    pub status: u32,
    /// ct mark.
    pub mark: u32,
    /// ct label (128 bits; zero when the shard keeps no labels).
    pub label: u128,
    /// Milliseconds until the entry expires.
    pub expiration_ms: u32,
    /// Zone (always 0: one zone per shard).
    pub zone: u16,
    /// The entry, when the packet belongs to one that still exists.
    pub entry: Option<EntryId>,
}

impl CtInfo {
    /// The view for a packet that belongs to no entry.
    pub const fn without_entry(state: CtState) -> CtInfo {
        CtInfo {
            state,
            direction: Direction::Original,
            status: 0,
            mark: 0,
            label: 0,
            expiration_ms: 0,
            zone: 0,
            entry: None,
        }
    }
}

/// Why a packet was classified INVALID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InvalidReason {
    /// TCP: see [`TcpInvalid`].
    Tcp(TcpInvalid),
    /// The transport header could not be read.
    Truncated,
    /// ICMP: a type above 18 (`nf_conntrack_icmpv4_error`).
    IcmpType,
    /// ICMP/ICMPv6 query type that cannot open a flow and belongs to none (an echo reply
    /// without a request, a router advertisement…).
    IcmpCannotOpen,
    /// ICMP/ICMPv6 error whose quoted packet cannot be read or has no inverse.
    IcmpBadQuote,
    /// ICMP/ICMPv6 error about a flow the shard does not track (or whose outer destination
    /// is not the quoted packet's source).
    IcmpNoFlow,
    /// ICMPv6 redirect that fails `nf_conntrack_icmpv6_redirect`'s checks.
    Redirect,
    /// ICMP carried over the other IP version.
    WrongFamily,
}

/// Why a packet was classified UNTRACKED.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UntrackedReason {
    /// Not IPv4 or IPv6.
    NotIp,
    /// An IP fragment: the kernel reassembles before tracking; a shard does not (see the
    /// crate documentation).
    Fragment,
    /// ICMPv6 neighbour discovery and multicast listener messages (`noct_valid_new[]` in
    /// `nf_conntrack_proto_icmpv6.c`).
    Icmpv6NoTrack,
}

/// The per-protocol state of an entry, as dumps and events show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum L4State {
    /// TCP, with its conntrack state.
    Tcp(TcpState),
    /// UDP.
    Udp,
    /// ICMP or ICMPv6 query flow.
    Icmp,
    /// Any other protocol.
    Generic,
}

impl L4State {
    /// The TCP state, for TCP.
    pub fn tcp(self) -> Option<TcpState> {
        match self {
            L4State::Tcp(s) => Some(s),
            _ => None,
        }
    }
}
