//! One worker's conntrack table: lookups, new flows, expiry, eviction, events and dumps.
//!
//! Owns [`Shard`]: a fixed-capacity slab of entries, a flow index of slab indices
//! (`crate::index`, open addressing keyed by SipHash under the caller's secret key), a timer
//! wheel that reclaims expired entries with bounded work, per-shard counters and an optional
//! event channel. Each worker owns one shard and is the only thread that touches it (no locks,
//! no atomics); the control thread talks to it only through the event channel and through
//! whatever request/response path the dataplane gives it for dumps.
//!
//! The kernel's split between unconfirmed and confirmed entries is kept: [`Shard::track`] updates
//! an existing entry at once, but for a packet that would open a flow it returns
//! [`Tracked::New`] with a [`Pending`] value and inserts nothing. The caller runs its filter and
//! calls [`Shard::confirm`] only if the packet was accepted (`nf_conntrack_confirm` at the last
//! hook), so dropped packets never create entries.
//!
//! The packet path uses the brief form of the same call: [`Shard::classify`] returns an
//! [`Outcome`] of eight bytes (in a register) and keeps the pending flow in the shard
//! ([`Shard::pending_mut`], [`Shard::confirm_pending`]); [`Shard::info`] builds the filter's
//! view only when a ruleset wants it.
//!
//! Bursts: [`burst`] tracks up to [`burst::BURST_MAX`] packets with their cache misses
//! overlapped ([`Shard::prepare`], then [`Shard::track_prepared`] per packet); each packet is
//! classified exactly as [`Shard::track`] would at that moment.
//!
//! Memory: an entry is 116 bytes whatever `X` is (key 38, status and policy 2, expiry, wheel
//! links and mark 16, TCP state 56, the slot of its extension 4); the flow index adds 11.5
//! bytes per entry of capacity (a 64-byte line per 5.6 entries: it is at most 56% full);
//! labels, when enabled, 16 bytes per entry in a parallel array; the wheel 16.9 kB per shard:
//! 127.5 bytes per flow at 1 M. An owner's extension (the SYN proxy's per-connection state,
//! 36 bytes in the dataplane) lives in a slab of its own, only for the entries given one
//! ([`Shard::ext_mut`]): inline it made every flow pay for it (160.8 bytes per flow). Once an
//! owner flags an entry ([`Shard::flag`]: the SYN proxy flags its connections) a presence
//! filter of flagged entries is allocated: four one-byte counters per entry of capacity,
//! at most 1 Mi of them (4 bytes per flow for small tables, 1 byte at 1 M).
//!
//! Time: callers pass a monotonic `now_ns`. Entries keep their expiry as a wrapping 32-bit
//! millisecond clock, so `expire` must run at least every few days (the dataplane calls it every
//! loop iteration) and no timeout may exceed [`crate::timeout::MAX_TIMEOUT_MS`].

pub mod burst;

use core::fmt;

use crossbeam_channel::{Sender, TrySendError};
use levee_packet::ip_protocol;
use levee_packet::parse::{FlowTuple, FrameInfo, IpFamily, L3Info};
use thiserror::Error;

use crate::dump::{Bucket, DumpFilter, EntrySnapshot, StateCounts};
use crate::event::{DestroyReason, Event, EventKind};
use crate::icmp;
use crate::index::{FlowIndex, Home};
use crate::key::{v4_addr, HashKey, Key, PackedKey};
use crate::tcp::{self, Segment, TcpConfig, TcpEndpoint, TcpState, TcpStatus, TcpTrack, TcpVerdict};
use crate::timeout::{TimeoutPolicy, Timeouts, MAX_TIMEOUT_MS};
use crate::types::{
    status, CtInfo, CtState, Direction, EntryId, InvalidReason, L4State, PolicyId, UntrackedReason,
};
use burst::Probe;

/// Length of one timer-wheel tick.
const TICK_MS: u64 = 1000;
/// Slots in the timer wheel; entries further out than `SLOTS - 1` ticks are re-examined when
/// their slot comes round (about every 68 minutes).
const SLOTS: usize = 4096;
const NIL: u32 = u32::MAX;
/// Marks a `prev` link as "head of slot N" (the slot number in the low bits).
const HEAD: u32 = 1 << 31;
/// Largest capacity: slot indices must stay below `HEAD`.
pub const MAX_CAPACITY: u32 = 1 << 30;
/// Most timeout policies per shard, the default included.
const MAX_POLICIES: usize = 256;

// Entry status bits (internal; `CtInfo::status` uses `IPS_*` values).
const ST_SEEN_REPLY: u8 = 1;
const ST_ASSURED: u8 = 2;
/// The flow was opened from key end 1.
const ST_ORIG_SIDE1: u8 = 4;
/// The slot is free (on the free list).
const ST_FREE: u8 = 8;
/// The owner flagged the entry ([`Shard::flag`]); it is counted in the presence filter.
const ST_FLAGGED: u8 = 16;

/// Counters in the presence filter of flagged entries, at most (one byte each).
const FLAG_FILTER_MAX: usize = 1 << 20;

/// A counting filter over the keys of flagged entries: "certainly not flagged" for most keys
/// at the cost of a multiply-shift hash and one byte load, where the table itself costs a
/// SipHash and a probe. The hash is keyed (multipliers from the shard's secret) but not a
/// PRF: a key an attacker steers into a busy counter only costs the full lookup the caller
/// would have made anyway. Counters saturate at 255 and then never go down (still no false
/// negatives).
#[derive(Debug)]
struct FlagFilter {
    counts: Vec<u8>,
    shift: u32,
    mult: [u64; 3],
    live: u32,
}

impl FlagFilter {
    fn new(capacity: u32, key: &HashKey) -> FlagFilter {
        // Four counters per entry the shard may hold, so a full table of flagged flows
        // still answers "no" for most other keys; allocated on the first flag.
        let n = (capacity as usize * 4)
            .next_power_of_two()
            .clamp(1024, FLAG_FILTER_MAX);
        let odd = |x: u64| x | 1;
        FlagFilter {
            counts: Vec::new(),
            shift: 64 - n.trailing_zeros(),
            mult: [
                odd(key.0[0] ^ 0x9e37_79b9_7f4a_7c15),
                odd(key.0[1] ^ 0xc2b2_ae3d_27d4_eb4f),
                odd(key.0[0].rotate_left(29) ^ key.0[1] ^ 0x1656_67b1_9e37_79f9),
            ],
            live: 0,
        }
    }

    #[inline]
    fn slot(&self, key: &Key) -> usize {
        let [a, b] = key.addr;
        let x = ((a >> 64) as u64 ^ a as u64).wrapping_mul(self.mult[0]);
        let y = ((b >> 64) as u64 ^ b as u64 ^ x).wrapping_mul(self.mult[1]);
        let rest = u64::from(key.port[0]) | u64::from(key.port[1]) << 16 | u64::from(key.proto) << 32;
        ((y ^ rest).wrapping_mul(self.mult[2]) >> self.shift) as usize
    }

    fn add(&mut self, key: &Key) {
        if self.counts.is_empty() {
            self.counts = vec![0; 1usize << (64 - self.shift)];
        }
        let i = self.slot(key);
        self.counts[i] = self.counts[i].saturating_add(1);
        self.live += 1;
    }

    fn remove(&mut self, key: &Key) {
        let i = self.slot(key);
        if let Some(c) = self.counts.get_mut(i) {
            if *c != u8::MAX {
                *c = c.saturating_sub(1);
            }
        }
        self.live = self.live.saturating_sub(1);
    }

    #[inline]
    fn may_hold(&self, key: &Key) -> bool {
        self.live != 0 && self.counts.get(self.slot(key)).is_some_and(|&c| c != 0)
    }
}

/// Configuration of one shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardConfig {
    /// Most entries (1..=2^30). A capacity at or just below a power of two wastes the least
    /// hash-table memory.
    pub capacity: u32,
    /// Default timeouts.
    pub timeouts: Timeouts,
    /// `nf_conntrack_tcp_be_liberal`: window checks never make a TCP packet INVALID.
    pub liberal: bool,
    /// `nf_conntrack_tcp_loose`: a TCP ACK without a tracked SYN may open an entry
    /// (mid-stream pickup). Linux's default is on.
    pub loose: bool,
    /// `nf_conntrack_tcp_max_retrans`: retransmissions before the shorter retrans timeout.
    pub max_retrans: u8,
    /// `nf_conntrack_tcp_ignore_invalid_rst`.
    pub ignore_invalid_rst: bool,
    /// Keep a 128-bit ct label per entry (16 bytes each). Like Linux's connlabel extension,
    /// only needed when the ruleset uses `ct label`.
    pub labels: bool,
    /// Entries examined when looking for one to evict at capacity (Linux's early_drop looks
    /// at 8 hash buckets).
    pub early_drop_scan: u32,
    /// Send one event in this many (1: all; 0: none).
    pub event_sample: u32,
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig {
            capacity: 65_536,
            timeouts: Timeouts::LINUX,
            liberal: false,
            loose: true,
            max_retrans: 3,
            ignore_invalid_rst: false,
            labels: false,
            early_drop_scan: 8,
            event_sample: 1,
        }
    }
}

/// A configuration the shard cannot run with.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// Capacity out of range.
    #[error("conntrack capacity {capacity} is outside 1..={max}")]
    Capacity {
        /// Requested.
        capacity: u32,
        /// Largest allowed.
        max: u32,
    },
    /// A timeout out of range.
    #[error("conntrack timeout {name} of {ms} ms is outside 1..={max} ms")]
    Timeout {
        /// Field name.
        name: &'static str,
        /// Requested.
        ms: u32,
        /// Largest allowed.
        max: u32,
    },
    /// Too many policies.
    #[error("conntrack timeout policy {name:?} would be number {count}; at most {max} fit")]
    TooManyPolicies {
        /// The refused policy.
        name: String,
        /// Policies including it.
        count: usize,
        /// Limit, the default included.
        max: usize,
    },
    /// A policy name used twice.
    #[error("conntrack timeout policy {name:?} is already defined")]
    DuplicatePolicy {
        /// The name.
        name: String,
    },
}

/// Why [`Shard::confirm`] or [`Shard::insert_tcp`] could not insert.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum InsertError {
    /// At capacity and no entry among those examined could be evicted.
    #[error("conntrack table full: {capacity} entries, none evictable among {scanned} examined")]
    TableFull {
        /// Capacity of the shard.
        capacity: u32,
        /// Entries examined for eviction.
        scanned: u32,
    },
    /// The flow is tracked already.
    #[error("flow {tuple} is already tracked (entry {index})")]
    Exists {
        /// The flow.
        tuple: TupleDisplay,
        /// Its entry.
        index: u32,
    },
    /// `confirm_pending` without a packet classified NEW since the last confirm.
    #[error("no flow is pending: the last packet classified was not NEW")]
    NothingPending,
    /// `insert_tcp` got a tuple of another protocol.
    #[error("insert_tcp needs a TCP tuple, got protocol {protocol}")]
    NotTcp {
        /// The tuple's protocol.
        protocol: u8,
    },
}

/// Why an entry operation failed.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum EntryError {
    /// The handle names no live entry.
    #[error("no conntrack entry in slot {index}")]
    NoEntry {
        /// The slot.
        index: u32,
    },
    /// Labels were not enabled (`ShardConfig::labels`).
    #[error("ct label {label:#x} cannot be stored: this shard keeps no labels (ShardConfig::labels)")]
    LabelsDisabled {
        /// The refused label.
        label: u128,
    },
    /// No such timeout policy.
    #[error("no conntrack timeout policy number {id}")]
    UnknownPolicy {
        /// The id.
        id: u8,
    },
}

/// A [`FlowTuple`] printed as `proto src:port -> dst:port` (for error messages).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TupleDisplay(pub FlowTuple);

impl fmt::Display for TupleDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.0;
        write!(
            f,
            "proto {} {}:{} -> {}:{}",
            t.protocol,
            t.src_ip(),
            t.src_port,
            t.dst_ip(),
            t.dst_port
        )
    }
}

impl fmt::Debug for TupleDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Per-shard counters, added up by the control side across workers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets that belonged to an existing entry (any classification but INVALID).
    pub found: u64,
    /// Packets classified NEW that would open a flow (pending values handed out).
    pub new: u64,
    /// Entries inserted (`confirm` and `insert_tcp`).
    pub inserted: u64,
    /// Packets classified INVALID.
    pub invalid: u64,
    /// TCP packets let through without a state change (`sIG`, ignorable window failures).
    pub ignored: u64,
    /// ICMP errors classified RELATED.
    pub related: u64,
    /// Packets classified UNTRACKED (fragments, non-IP, ICMPv6 neighbour discovery).
    pub untracked: u64,
    /// Entries evicted to make room (`early_drop`).
    pub early_drop: u64,
    /// Inserts refused because the table was full and nothing could be evicted.
    pub insert_failed: u64,
    /// `confirm` found the flow already inserted (two packets of a new flow confirmed late).
    pub clash: u64,
    /// Entries removed by the timer wheel or found expired on lookup.
    pub expired: u64,
    /// Entries deleted by the protocol (RST before a reply, reopened TIME_WAIT) or `remove`.
    pub deleted: u64,
    /// Events delivered to the channel.
    pub events_sent: u64,
    /// Events dropped because the channel was full or closed.
    pub events_dropped: u64,
    /// Events skipped by sampling.
    pub events_sampled_out: u64,
    /// Entries the timer wheel examined.
    pub wheel_examined: u64,
}

/// Per-protocol entry state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum L4 {
    Tcp(TcpTrack),
    /// `stream_at`: the shard clock (ms, wrapping) after which a replied flow becomes a stream.
    Udp {
        stream_at: u32,
    },
    Icmp,
    Other,
}

impl L4 {
    fn state(&self) -> L4State {
        match self {
            L4::Tcp(t) => L4State::Tcp(t.state()),
            L4::Udp { .. } => L4State::Udp,
            L4::Icmp => L4State::Icmp,
            L4::Other => L4State::Generic,
        }
    }
}

/// One flow. `repr(C)` fixes the layout so that a burst knows which fields to read to bring
/// every cache line of an entry in (`burst::touch_entry`): entries sit 116 bytes apart, so one
/// starts at a multiple of 4 bytes into a line and spans two or three lines; `key` (offset 0),
/// `next` (48) and `mark` (108) lie on each of those tracking reads (all but `ext`, at 112,
/// which only the owner reads). What a lookup reads (key, status,
/// expiry) is the first 44 bytes. The owner's extension (`X`) is not here: `ext` is its slot
/// in the shard's extension slab, so flows without one (most) do not pay its size.
#[repr(C)]
struct Entry {
    key: PackedKey,
    status: u8,
    policy: u8,
    /// Expiry on the wrapping millisecond clock.
    expires: u32,
    /// Timer-wheel links: previous entry or `HEAD | slot`, next entry or `NIL`. On a free
    /// slot, `next` links the free list.
    prev: u32,
    next: u32,
    l4: L4,
    mark: u32,
    /// Slot of the entry's extension in `Shard::exts`, or `NIL`.
    ext: u32,
}

impl Entry {
    fn is_free(&self) -> bool {
        self.status & ST_FREE != 0
    }

    fn orig_side(&self) -> u8 {
        u8::from(self.status & ST_ORIG_SIDE1 != 0)
    }

    fn seen_reply(&self) -> bool {
        self.status & ST_SEEN_REPLY != 0
    }

    fn assured(&self) -> bool {
        self.status & ST_ASSURED != 0
    }

    fn ct_status(&self) -> u32 {
        let mut s = status::CONFIRMED;
        if self.seen_reply() {
            s |= status::SEEN_REPLY;
        }
        if self.assured() {
            s |= status::ASSURED;
        }
        s
    }

    fn bucket(&self) -> Bucket {
        match &self.l4 {
            L4::Tcp(t) => Bucket::Tcp(t.state()),
            L4::Udp { .. } if self.assured() => Bucket::UdpAssured,
            L4::Udp { .. } if self.seen_reply() => Bucket::UdpReplied,
            L4::Udp { .. } => Bucket::UdpUnreplied,
            L4::Icmp => Bucket::Icmp,
            L4::Other => Bucket::Generic,
        }
    }

    /// Entries `early_drop` may evict: not assured, or TCP that is over (TIME_WAIT, CLOSE).
    fn evictable(&self) -> bool {
        !self.assured()
            || matches!(&self.l4, L4::Tcp(t) if matches!(t.state(), TcpState::TimeWait | TcpState::Close))
    }
}

/// A flow a packet would open: insert it with [`Shard::confirm`] once the filter accepted the
/// packet, or drop it. Ct mark, label and timeout policy set by the filter on a NEW packet go
/// here, as in Linux they go to the unconfirmed entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pending {
    key: PackedKey,
    hash: u64,
    orig_side: u8,
    policy: u8,
    l4: L4,
    timeout_ms: u32,
    mark: u32,
    label: u128,
}

impl Pending {
    /// The original-direction tuple of the flow.
    pub fn tuple(&self) -> FlowTuple {
        self.key.tuple(self.orig_side)
    }

    /// Protocol state the entry will start in.
    pub fn l4_state(&self) -> L4State {
        self.l4.state()
    }

    /// `ct mark set` on the NEW packet.
    pub fn set_mark(&mut self, mark: u32) {
        self.mark = mark;
    }

    /// `ct label set` on the NEW packet (kept only if the shard keeps labels).
    pub fn set_label(&mut self, label: u128) {
        self.label = label;
    }

    /// `ct timeout set`: the entry starts with this policy.
    pub fn set_timeout_policy(&mut self, policy: PolicyId) {
        self.policy = policy.0;
    }

    /// The view the filter VM gets for this packet.
    pub fn info(&self) -> CtInfo {
        CtInfo {
            state: CtState::New,
            direction: Direction::Original,
            status: 0,
            mark: self.mark,
            label: self.label,
            expiration_ms: self.timeout_ms,
            zone: 0,
            entry: None,
        }
    }
}

/// The classification of one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tracked {
    /// The packet belongs to a tracked flow: NEW (original direction, no reply yet),
    /// ESTABLISHED or RELATED.
    Known(CtInfo),
    /// The packet would open a flow.
    New(Pending),
    /// The tracker refused it (`ct state invalid`).
    Invalid(InvalidReason),
    /// Not tracked (`ct state untracked`).
    Untracked(UntrackedReason),
}

impl Tracked {
    /// What the filter VM reads for this packet.
    pub fn info(&self) -> CtInfo {
        match self {
            Tracked::Known(info) => *info,
            Tracked::New(p) => p.info(),
            Tracked::Invalid(_) => CtInfo::without_entry(CtState::Invalid),
            Tracked::Untracked(_) => CtInfo::without_entry(CtState::Untracked),
        }
    }

    /// The classification alone.
    pub fn state(&self) -> CtState {
        match self {
            Tracked::Known(info) => info.state,
            Tracked::New(_) => CtState::New,
            Tracked::Invalid(_) => CtState::Invalid,
            Tracked::Untracked(_) => CtState::Untracked,
        }
    }
}

/// [`Tracked`] in brief: what [`Shard::classify`] returns. Eight bytes, so it comes back in a
/// register; a result the size of [`Tracked`] came back through memory and the caller's first
/// look at it waited on store forwarding. The rest of the classification stays in the shard
/// until the next call that tracks a packet: the flow an [`Outcome::New`] packet would open
/// ([`Shard::confirm_pending`], [`Shard::pending_mut`]) and the last view of an entry the packet
/// ended. [`Shard::info`] gives the filter's view of any outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The packet belongs to the live entry `entry` (NEW: original direction, no reply yet;
    /// ESTABLISHED; RELATED).
    Known {
        /// Classification.
        state: CtState,
        /// Direction of the packet in the flow.
        direction: Direction,
        /// The entry.
        entry: EntryId,
    },
    /// The packet belonged to an entry and ended it (an RST): the entry is gone.
    Ended {
        /// Classification.
        state: CtState,
        /// Direction of the packet in the flow.
        direction: Direction,
    },
    /// The packet would open a flow; the shard holds it pending.
    New,
    /// The tracker refused it (`ct state invalid`).
    Invalid(InvalidReason),
    /// Not tracked (`ct state untracked`).
    Untracked(UntrackedReason),
}

impl Outcome {
    /// The classification alone.
    pub fn state(self) -> CtState {
        match self {
            Outcome::Known { state, .. } | Outcome::Ended { state, .. } => state,
            Outcome::New => CtState::New,
            Outcome::Invalid(_) => CtState::Invalid,
            Outcome::Untracked(_) => CtState::Untracked,
        }
    }

    /// The live entry the packet belongs to.
    pub fn entry(self) -> Option<EntryId> {
        match self {
            Outcome::Known { entry, .. } => Some(entry),
            _ => None,
        }
    }
}

/// What one [`Shard::expire`] call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExpireReport {
    /// Entries examined.
    pub examined: u32,
    /// Entries removed.
    pub expired: u32,
    /// Whether the wheel is behind `now` (the budget ran out first).
    pub behind: bool,
}

/// The timer wheel: one list per tick, linked through the entries. Lazy: a refreshed entry
/// stays in its slot and is moved when the slot comes due; a lifetime that shrinks below the
/// slot moves it at once (TCP keeps the slot's tick, see [`TcpTrack`]).
struct Wheel {
    heads: Vec<u32>,
    /// One bit per slot with a non-empty list.
    occupied: Vec<u64>,
    /// The next tick to process; every linked entry sits at a tick in
    /// `[cursor, cursor + SLOTS - 1]`.
    cursor: u64,
    started: bool,
}

impl Wheel {
    fn new() -> Wheel {
        Wheel {
            heads: vec![NIL; SLOTS],
            occupied: vec![0; SLOTS / 64],
            cursor: 0,
            started: false,
        }
    }

    fn start(&mut self, now_ms: u64) {
        if !self.started {
            self.started = true;
            self.cursor = now_ms / TICK_MS;
        }
    }

    /// The tick to link an entry expiring at `expiry_ms` at, kept within the wheel.
    fn target(&self, expiry_ms: u64, floor: u64) -> u64 {
        (expiry_ms / TICK_MS).clamp(floor, self.cursor + SLOTS as u64 - 1)
    }

    fn link(&mut self, entries: &mut [Entry], idx: u32, tick: u64) {
        let slot = (tick % SLOTS as u64) as usize;
        let head = self.heads[slot];
        let e = &mut entries[idx as usize];
        e.prev = HEAD | slot as u32;
        e.next = head;
        if let L4::Tcp(t) = &mut e.l4 {
            t.wheel_tick = tick as u16;
        }
        if head == NIL {
            self.occupied[slot / 64] |= 1 << (slot % 64);
        } else {
            entries[head as usize].prev = idx;
        }
        self.heads[slot] = idx;
    }

    fn unlink(&mut self, entries: &mut [Entry], idx: u32) {
        let (prev, next) = {
            let e = &entries[idx as usize];
            (e.prev, e.next)
        };
        if prev & HEAD != 0 {
            let slot = (prev & !HEAD) as usize;
            self.heads[slot] = next;
            if next == NIL {
                self.occupied[slot / 64] &= !(1 << (slot % 64));
            }
        } else {
            entries[prev as usize].next = next;
        }
        if next != NIL {
            entries[next as usize].prev = prev;
        }
        let e = &mut entries[idx as usize];
        e.prev = NIL;
        e.next = NIL;
    }

    /// The first tick at or after `from` (and before `from + SLOTS`) whose slot is occupied.
    fn next_occupied(&self, from: u64) -> Option<u64> {
        let start = (from % SLOTS as u64) as usize;
        let mut offset = 0usize;
        while offset < SLOTS {
            let slot = (start + offset) % SLOTS;
            let word = self.occupied[slot / 64] >> (slot % 64);
            if word != 0 {
                let skip = word.trailing_zeros() as usize;
                // Bits past the end of the word were shifted out, so `skip` stays in it.
                return Some(from + (offset + skip) as u64);
            }
            offset += 64 - slot % 64;
        }
        None
    }
}

/// Clock helpers: the wrapping 32-bit millisecond clock entries keep their expiry on.
#[derive(Clone, Copy, Debug)]
struct Now {
    ms: u64,
}

impl Now {
    fn new(now_ns: u64) -> Now {
        Now {
            ms: now_ns / 1_000_000,
        }
    }

    fn clock(self) -> u32 {
        self.ms as u32
    }

    /// Milliseconds left until `expires` (negative once past).
    fn left(self, expires: u32) -> i64 {
        i64::from(expires.wrapping_sub(self.clock()) as i32)
    }

    fn after(self, ms: u32) -> u32 {
        self.clock().wrapping_add(ms)
    }
}

/// One worker's conntrack table. `X` is an extension stored in every entry (the SYN proxy keeps
/// its sequence and timestamp offsets there); it must be `Default` so slots can be reused.
pub struct Shard<X = ()> {
    cfg: ShardConfig,
    tcp: TcpConfig,
    hash_key: HashKey,
    index: FlowIndex,
    entries: Vec<Entry>,
    labels: Vec<u128>,
    /// Extensions of the entries that have one (`Entry::ext`), and the free slots among them.
    /// Grows with the flows that get one (amortized; only an owner's `ext_mut` adds one).
    exts: Vec<X>,
    exts_free: Vec<u32>,
    /// What `ext` shows for an entry without an extension.
    no_ext: X,
    free: u32,
    live: u32,
    wheel: Wheel,
    /// Index 0 is the default.
    policies: Vec<(String, Timeouts)>,
    counts: StateCounts,
    counters: Counters,
    events: Option<Sender<Event>>,
    event_seq: u64,
    flagged: FlagFilter,
    /// The flow the last packet classified [`Outcome::New`] would open.
    pending: Option<Pending>,
    /// The last view of the entry the last packet classified [`Outcome::Ended`] ended.
    ended: CtInfo,
}

impl<X> fmt::Debug for Shard<X> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shard")
            .field("capacity", &self.cfg.capacity)
            .field("live", &self.live)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// The parts of an IP packet the trackers read.
struct Pkt<'a> {
    v6: bool,
    /// Addresses in the form [`Key`] keeps them.
    src: u128,
    dst: u128,
    proto: u8,
    l4: &'a [u8],
    /// IPv6 hop limit and whether the source is link-local (for redirects).
    hop_limit: u8,
}

/// Why a frame never reaches a protocol tracker.
enum Early {
    Untracked(UntrackedReason),
    Invalid(InvalidReason),
}

impl<'a> Pkt<'a> {
    /// The IP packet in `frame` (`info` is its `parse_frame`).
    #[inline(always)]
    fn of(frame: &'a [u8], info: &FrameInfo) -> Result<Pkt<'a>, Early> {
        // The addresses are read from the header bytes (where `info` found them): one load
        // each, where copying them out of `info` (at an odd offset in it) took the compiler
        // a handful of pieces that later wide loads could not be forwarded from.
        let l3 = usize::from(info.l3_offset);
        let (v6, src, dst, proto, frag, l4_offset, l4_len, hop_limit) = match &info.l3 {
            L3Info::Ipv4(ip) => {
                let (src, dst) = match frame.get(l3 + 12..l3 + 20) {
                    Some(&[a, b, c, d, e, f, g, h]) => (v4_addr([a, b, c, d]), v4_addr([e, f, g, h])),
                    _ => (v4_addr(ip.src.octets()), v4_addr(ip.dst.octets())),
                };
                (false, src, dst, ip.protocol, ip.frag, ip.l4_offset, ip.l4_len, 0)
            }
            L3Info::Ipv6(ip) => {
                let addr = |at: usize, or: std::net::Ipv6Addr| {
                    frame
                        .get(at..at + 16)
                        .and_then(|b| <[u8; 16]>::try_from(b).ok())
                        .map_or(u128::from(or), u128::from_be_bytes)
                };
                let hop = frame.get(l3 + 7).copied().unwrap_or(0);
                (
                    true,
                    addr(l3 + 8, ip.src),
                    addr(l3 + 24, ip.dst),
                    ip.protocol,
                    ip.frag,
                    ip.l4_offset,
                    ip.l4_len,
                    hop,
                )
            }
            L3Info::Arp | L3Info::Other => return Err(Early::Untracked(UntrackedReason::NotIp)),
        };
        if frag.is_fragment() {
            return Err(Early::Untracked(UntrackedReason::Fragment));
        }
        let start = usize::from(l4_offset);
        let Some(l4) = frame.get(start..start + usize::from(l4_len)) else {
            return Err(Early::Invalid(InvalidReason::Truncated));
        };
        Ok(Pkt {
            v6,
            src,
            dst,
            proto,
            l4,
            hop_limit,
        })
    }

    /// The key of a TCP or UDP packet (ports from the first four bytes; the caller has checked
    /// the length) and which end sent it.
    #[inline]
    fn ports_key(&self) -> (Key, u8) {
        let sp = u16::from_be_bytes([self.l4[0], self.l4[1]]);
        let dp = u16::from_be_bytes([self.l4[2], self.l4[3]]);
        Key::ports(self.v6, self.proto, self.src, self.dst, sp, dp)
    }

    /// The key of an ICMP query or answer (the caller has checked the message is 8 bytes or
    /// more), which end sent it (0: the requester) and whether it is a request; `None` for a
    /// message type that is not a query.
    #[inline]
    fn icmp_query_key(&self) -> Option<(Key, u8, bool)> {
        let msg = self.l4;
        let (msg_type, code) = (msg[0], msg[1]);
        let (is_request, request_type) = if self.v6 {
            icmp::query_v6(msg_type)
        } else {
            icmp::query_v4(msg_type)
        }?;
        let id = u16::from_be_bytes([msg[4], msg[5]]);
        let (requester, responder, side) = if is_request {
            (self.src, self.dst, 0u8)
        } else {
            (self.dst, self.src, 1u8)
        };
        let key = Key::icmp(self.v6, self.proto, requester, responder, id, request_type, code);
        Some((key, side, is_request))
    }

    /// The key of the packet's own flow (the one its tracker looks up first) and which end
    /// sent it, for a burst to probe ahead. Lenient: a packet the tracker refuses, or one
    /// whose lookup uses another key (ICMP errors), just gets a key nobody asks for.
    #[inline]
    fn own_key(&self) -> Option<(Key, u8)> {
        match self.proto {
            ip_protocol::TCP | ip_protocol::UDP if self.l4.len() >= 4 => Some(self.ports_key()),
            ip_protocol::TCP | ip_protocol::UDP => None,
            ip_protocol::ICMP | ip_protocol::ICMPV6 => {
                let family_ok = (self.proto == ip_protocol::ICMPV6) == self.v6;
                if family_ok && self.l4.len() >= 8 {
                    self.icmp_query_key().map(|(key, side, _)| (key, side))
                } else {
                    None
                }
            }
            p => Some(Key::ports(self.v6, p, self.src, self.dst, 0, 0)),
        }
    }
}

impl<X: Default> Shard<X> {
    /// A shard with `cfg`, hashing with the secret `key`. Allocates the flow index and reserves
    /// the slab for `cfg.capacity` entries; afterwards only the extension slab grows (doubling,
    /// when more entries than ever before hold an extension at once).
    pub fn new(cfg: ShardConfig, key: HashKey) -> Result<Shard<X>, ConfigError> {
        if cfg.capacity == 0 || cfg.capacity > MAX_CAPACITY {
            return Err(ConfigError::Capacity {
                capacity: cfg.capacity,
                max: MAX_CAPACITY,
            });
        }
        cfg.timeouts
            .validate()
            .map_err(|(name, ms)| ConfigError::Timeout {
                name,
                ms,
                max: MAX_TIMEOUT_MS,
            })?;
        let cap = cfg.capacity as usize;
        Ok(Shard {
            tcp: TcpConfig {
                liberal: cfg.liberal,
                loose: cfg.loose,
                max_retrans: cfg.max_retrans,
                ignore_invalid_rst: cfg.ignore_invalid_rst,
            },
            hash_key: key,
            index: FlowIndex::with_capacity(cfg.capacity),
            entries: Vec::with_capacity(cap),
            labels: if cfg.labels { vec![0; cap] } else { Vec::new() },
            exts: Vec::new(),
            exts_free: Vec::new(),
            no_ext: X::default(),
            free: NIL,
            live: 0,
            wheel: Wheel::new(),
            policies: vec![("default".to_owned(), cfg.timeouts)],
            counts: StateCounts::default(),
            counters: Counters::default(),
            events: None,
            event_seq: 0,
            flagged: FlagFilter::new(cfg.capacity, &key),
            pending: None,
            ended: CtInfo::without_entry(CtState::Invalid),
            cfg,
        })
    }

    /// Attaches (or with `None` detaches) the event channel.
    pub fn set_event_sender(&mut self, tx: Option<Sender<Event>>) {
        self.events = tx;
    }

    /// Registers a named timeout policy (`ct timeout` object).
    pub fn add_timeout_policy(
        &mut self,
        name: &str,
        policy: &TimeoutPolicy,
    ) -> Result<PolicyId, ConfigError> {
        if self.policies.iter().any(|(n, _)| n == name) {
            return Err(ConfigError::DuplicatePolicy {
                name: name.to_owned(),
            });
        }
        if self.policies.len() >= MAX_POLICIES {
            return Err(ConfigError::TooManyPolicies {
                name: name.to_owned(),
                count: self.policies.len() + 1,
                max: MAX_POLICIES,
            });
        }
        let timeouts = policy.resolve(&self.cfg.timeouts);
        timeouts.validate().map_err(|(field, ms)| ConfigError::Timeout {
            name: field,
            ms,
            max: MAX_TIMEOUT_MS,
        })?;
        self.policies.push((name.to_owned(), timeouts));
        Ok(PolicyId((self.policies.len() - 1) as u8))
    }

    /// The id of a registered policy.
    pub fn timeout_policy(&self, name: &str) -> Option<PolicyId> {
        self.policies
            .iter()
            .position(|(n, _)| n == name)
            .map(|i| PolicyId(i as u8))
    }

    /// The configuration.
    pub fn config(&self) -> &ShardConfig {
        &self.cfg
    }

    /// Live entries.
    pub fn len(&self) -> u32 {
        self.live
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Counters since creation.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Entries per state (kept incrementally).
    pub fn state_counts(&self) -> StateCounts {
        self.counts
    }

    /// Bytes this shard holds for its capacity: slab, flow index, labels and wheel.
    pub fn memory_bytes(&self) -> usize {
        self.entries.capacity() * core::mem::size_of::<Entry>()
            + self.exts.capacity() * core::mem::size_of::<X>()
            + self.exts_free.capacity() * 4
            + self.index.memory_bytes()
            + self.labels.capacity() * 16
            + SLOTS * 4
            + SLOTS / 8
            + self.flagged.counts.capacity()
    }

    /// Size of one entry of this shard, in bytes.
    pub const fn entry_size() -> usize {
        core::mem::size_of::<Entry>()
    }

    // ---------------------------------------------------------------------------------------
    // The packet path.

    /// Classifies one packet and updates its flow. `info` is `parse_frame(frame)`; `now_ns` is
    /// the caller's monotonic clock.
    pub fn track(&mut self, frame: &[u8], info: &FrameInfo, now_ns: u64) -> Tracked {
        let o = self.classify(frame, info, now_ns);
        self.expand(o, now_ns)
    }

    /// [`Shard::track`] in brief (see [`Outcome`]): the same classification, counters, events
    /// and table changes.
    pub fn classify(&mut self, frame: &[u8], info: &FrameInfo, now_ns: u64) -> Outcome {
        self.track_hinted(frame, info, now_ns, None)
    }

    /// The whole result of a packet `classify` just classified `o` at `now_ns` (the pending
    /// flow of an [`Outcome::New`] is taken out of the shard).
    fn expand(&mut self, o: Outcome, now_ns: u64) -> Tracked {
        match o {
            Outcome::New => Tracked::New(
                self.pending
                    .take()
                    .expect("classify leaves a NEW packet's flow pending"),
            ),
            Outcome::Invalid(why) => Tracked::Invalid(why),
            Outcome::Untracked(why) => Tracked::Untracked(why),
            Outcome::Known { .. } | Outcome::Ended { .. } => Tracked::Known(self.info(o, now_ns)),
        }
    }

    /// The filter's view of a packet just classified `o` at `now_ns`: valid until the next call
    /// that tracks a packet or changes the entry.
    pub fn info(&self, o: Outcome, now_ns: u64) -> CtInfo {
        match o {
            Outcome::Known {
                state,
                direction,
                entry,
            } => self.view(entry.0, state, direction as usize, Now::new(now_ns)),
            Outcome::Ended { .. } => self.ended,
            Outcome::New => self
                .pending
                .as_ref()
                .map_or(CtInfo::without_entry(CtState::New), Pending::info),
            Outcome::Invalid(_) => CtInfo::without_entry(CtState::Invalid),
            Outcome::Untracked(_) => CtInfo::without_entry(CtState::Untracked),
        }
    }

    /// The flow the last packet classified [`Outcome::New`] would open (to set its mark,
    /// label or timeout policy before [`Shard::confirm_pending`]).
    pub fn pending_mut(&mut self) -> Option<&mut Pending> {
        self.pending.as_mut()
    }

    /// [`Shard::confirm`] of the flow the last packet classified [`Outcome::New`] would open.
    pub fn confirm_pending(&mut self, now_ns: u64) -> Result<EntryId, InsertError> {
        match self.pending.take() {
            Some(p) => self.confirm(p, now_ns),
            None => Err(InsertError::NothingPending),
        }
    }

    /// [`Shard::track`], using what a burst's probe found when it was prepared for the key the
    /// packet's tracker looks up (see [`burst`]).
    #[inline]
    fn track_hinted(&mut self, frame: &[u8], info: &FrameInfo, now_ns: u64, hint: Option<&Probe>) -> Outcome {
        let now = Now::new(now_ns);
        self.wheel.start(now.ms);
        let pkt = match Pkt::of(frame, info) {
            Ok(pkt) => pkt,
            Err(Early::Untracked(why)) => return self.untracked(why),
            Err(Early::Invalid(why)) => return self.invalid(why),
        };
        match pkt.proto {
            ip_protocol::TCP => self.track_tcp(&pkt, now, hint),
            ip_protocol::UDP => self.track_udp(&pkt, now, hint),
            ip_protocol::ICMP if !pkt.v6 => self.track_icmp(&pkt, now, hint),
            ip_protocol::ICMPV6 if pkt.v6 => self.track_icmp(&pkt, now, hint),
            ip_protocol::ICMP | ip_protocol::ICMPV6 => self.invalid(InvalidReason::WrongFamily),
            _ => self.track_generic(&pkt, now, hint),
        }
    }

    fn untracked(&mut self, why: UntrackedReason) -> Outcome {
        self.counters.untracked += 1;
        Outcome::Untracked(why)
    }

    fn invalid(&mut self, why: InvalidReason) -> Outcome {
        self.counters.invalid += 1;
        Outcome::Invalid(why)
    }

    fn new_flow(&mut self, key: Key, hash: u64, orig_side: u8, l4: L4, timeout_ms: u32) -> Outcome {
        self.counters.new += 1;
        self.pending = Some(Pending {
            key: key.pack(),
            hash,
            orig_side,
            policy: 0,
            l4,
            timeout_ms,
            mark: 0,
            label: 0,
        });
        Outcome::New
    }

    /// Finds a live entry; one found expired is removed (`nf_ct_gc_expired` on lookup).
    fn lookup(&mut self, key: &Key, hash: u64, now: Now) -> Option<u32> {
        self.lookup_hinted(*key, hash, now, None)
    }

    /// The hash of `key`, and what a burst's probe said about it if the probe was for `key`.
    #[inline(always)]
    fn hashed(&self, key: Key, hint: Option<&Probe>) -> (u64, Option<Home>) {
        match hint {
            Some(p) if p.key == key => (p.hash, Some(p.home)),
            _ => (key.hash(&self.hash_key), None),
        }
    }

    /// [`Shard::lookup`], trusting a burst probe's `home` as far as it still holds: a candidate
    /// entry that is live and has the key is the flow's entry (keys are unique in the index);
    /// `Absent` is only passed in while no insert happened since the probe.
    #[inline(always)]
    fn lookup_hinted(&mut self, key: Key, hash: u64, now: Now, home: Option<Home>) -> Option<u32> {
        let idx = self.find_hinted(key, hash, home)?;
        if now.left(self.entries[idx as usize].expires) <= 0 {
            self.destroy(idx, DestroyReason::Expired, now);
            return None;
        }
        Some(idx)
    }

    /// The entry holding `key`, expired or not (see [`Shard::lookup_hinted`]).
    #[inline(always)]
    fn find_hinted(&self, key: Key, hash: u64, home: Option<Home>) -> Option<u32> {
        match home {
            Some(Home::Absent) => None,
            Some(Home::Candidate(i))
                if self
                    .entries
                    .get(i as usize)
                    .is_some_and(|e| !e.is_free() && e.key.is(&key)) =>
            {
                Some(i)
            }
            _ => {
                let entries = &self.entries;
                self.index.find(hash, |i| entries[i as usize].key.is(&key))
            }
        }
    }

    /// The outcome of a packet in `dir` of live entry `idx`, classified `state`.
    #[inline(always)]
    fn known(idx: u32, state: CtState, dir: usize) -> Outcome {
        Outcome::Known {
            state,
            direction: if dir == 0 {
                Direction::Original
            } else {
                Direction::Reply
            },
            entry: EntryId(idx),
        }
    }

    /// The view of entry `idx` for a packet in `dir` classified `state`.
    fn view(&self, idx: u32, state: CtState, dir: usize, now: Now) -> CtInfo {
        let e = &self.entries[idx as usize];
        CtInfo {
            state,
            direction: if dir == 0 {
                Direction::Original
            } else {
                Direction::Reply
            },
            status: e.ct_status(),
            mark: e.mark,
            label: self.labels.get(idx as usize).copied().unwrap_or(0),
            expiration_ms: now.left(e.expires).max(0) as u32,
            zone: 0,
            entry: Some(EntryId(idx)),
        }
    }

    /// `resolve_normal_ct`'s classification: replies are ESTABLISHED, original packets are
    /// ESTABLISHED once a reply was seen, NEW before.
    fn ctinfo(seen_reply: bool, dir: usize) -> CtState {
        if dir == 1 || seen_reply {
            CtState::Established
        } else {
            CtState::New
        }
    }

    /// Sets a new lifetime; moves the entry in the wheel when it now expires before its slot.
    /// Inline up to the move (every tracked packet comes here; few move).
    #[inline(always)]
    fn refresh(&mut self, idx: u32, ms: u32, now: Now) {
        let new_expires = now.after(ms);
        let e = &mut self.entries[idx as usize];
        let old_left = now.left(e.expires);
        e.expires = new_expires;
        let expiry_ms = now.ms + u64::from(ms);
        let relink = match &e.l4 {
            L4::Tcp(t) => {
                let tick = self.wheel.target(expiry_ms, self.wheel.cursor) as u16;
                (tick.wrapping_sub(t.wheel_tick) as i16) < 0
            }
            _ => i64::from(ms) < old_left,
        };
        if relink {
            self.relink(idx, expiry_ms);
        }
    }

    /// Moves entry `idx` to the wheel slot of `expiry_ms`.
    #[inline(never)]
    fn relink(&mut self, idx: u32, expiry_ms: u64) {
        let tick = self.wheel.target(expiry_ms, self.wheel.cursor);
        self.wheel.unlink(&mut self.entries, idx);
        self.wheel.link(&mut self.entries, idx, tick);
    }

    /// Applies a status/state change's bookkeeping: counts and an UPDATE event. Inline up to
    /// the change (most packets change nothing).
    #[inline(always)]
    fn changed(&mut self, idx: u32, before: Bucket, before_status: u8, now: Now) {
        let e = &self.entries[idx as usize];
        if e.status != before_status || e.bucket() != before {
            self.record_change(idx, before, now);
        }
    }

    /// [`Shard::changed`] for a TCP entry whose state went from `states[0]` to `states[1]`.
    #[inline(always)]
    fn tcp_changed(&mut self, idx: u32, states: [TcpState; 2], before_status: u8, now: Now) {
        if states[0] != states[1] || self.entries[idx as usize].status != before_status {
            self.record_change(idx, Bucket::Tcp(states[0]), now);
        }
    }

    /// [`Shard::changed`] for an entry whose state or status changed.
    #[inline(never)]
    fn record_change(&mut self, idx: u32, before: Bucket, now: Now) {
        let after = self.entries[idx as usize].bucket();
        if after != before {
            *self.counts.slot(before) -= 1;
            *self.counts.slot(after) += 1;
        }
        self.emit(idx, EventKind::Update, now);
    }

    fn track_tcp(&mut self, pkt: &Pkt<'_>, now: Now, hint: Option<&Probe>) -> Outcome {
        let Some(seg) = tcp::segment(pkt.l4) else {
            return self.invalid(InvalidReason::Truncated);
        };
        let (key, side) = pkt.ports_key();
        let (hash, home) = self.hashed(key, hint);
        if let Some(idx) = self.lookup_hinted(key, hash, now, home) {
            if let Some(t) = self.tcp_existing(idx, side, &seg, now) {
                return t;
            }
            // Reopened: the old entry is gone, track the SYN as a new flow.
        }
        match TcpTrack::new_flow(&seg, &self.tcp, &self.policies[0].1) {
            Ok((t, timeout)) => self.new_flow(key, hash, side, L4::Tcp(t), timeout),
            Err(why) => self.invalid(InvalidReason::Tcp(why)),
        }
    }

    /// `nf_conntrack_tcp_packet` on an existing entry; `None` when the entry was deleted for a
    /// reopening SYN.
    fn tcp_existing(&mut self, idx: u32, side: u8, seg: &Segment<'_>, now: Now) -> Option<Outcome> {
        let tcp_cfg = self.tcp;
        let e = &mut self.entries[idx as usize];
        let dir = usize::from(side != e.orig_side());
        let before_status = e.status;
        let class = Self::ctinfo(e.seen_reply(), dir);
        let timeouts = &self.policies[usize::from(e.policy)].1;
        let mut st = TcpStatus {
            seen_reply: e.seen_reply(),
            assured: e.assured(),
        };
        let remaining = now.left(e.expires).clamp(0, i64::from(u32::MAX)) as u32;
        let L4::Tcp(t) = &mut e.l4 else {
            unreachable!("a TCP key always holds TCP state");
        };
        // The TCP state before and after, compared directly: an entry's count bucket is its TCP
        // state (`Entry::bucket`), whose general form cost a dispatch per packet.
        let before_state = t.state;
        let verdict = t.packet_with_remaining(dir, seg, &mut st, &tcp_cfg, timeouts, remaining);
        let after_state = t.state;
        match verdict {
            TcpVerdict::Reopen => {
                self.destroy(idx, DestroyReason::Reopened, now);
                None
            }
            TcpVerdict::Invalid { why, shrink_ms } => {
                if let Some(ms) = shrink_ms {
                    self.refresh(idx, ms, now);
                }
                Some(self.invalid(InvalidReason::Tcp(why)))
            }
            TcpVerdict::Ignore => {
                self.counters.found += 1;
                self.counters.ignored += 1;
                if dir == 1 {
                    self.entries[idx as usize].status |= ST_SEEN_REPLY;
                    self.tcp_changed(idx, [before_state, after_state], before_status, now);
                }
                Some(Self::known(idx, class, dir))
            }
            TcpVerdict::Accept { timeout_ms, kill, .. } => {
                self.counters.found += 1;
                {
                    let e = &mut self.entries[idx as usize];
                    if st.assured {
                        e.status |= ST_ASSURED;
                    }
                    if dir == 1 {
                        e.status |= ST_SEEN_REPLY;
                    }
                }
                if let Some(ms) = timeout_ms {
                    self.refresh(idx, ms, now);
                }
                self.tcp_changed(idx, [before_state, after_state], before_status, now);
                if kill {
                    let mut info = self.view(idx, class, dir, now);
                    info.entry = None;
                    self.ended = info;
                    self.destroy(idx, DestroyReason::Reset, now);
                    return Some(Outcome::Ended {
                        state: class,
                        direction: info.direction,
                    });
                }
                Some(Self::known(idx, class, dir))
            }
        }
    }

    fn track_udp(&mut self, pkt: &Pkt<'_>, now: Now, hint: Option<&Probe>) -> Outcome {
        // `udp_error`: header and length (parse_frame has checked both for whole packets).
        if pkt.l4.len() < 8 {
            return self.invalid(InvalidReason::Truncated);
        }
        let len = usize::from(u16::from_be_bytes([pkt.l4[4], pkt.l4[5]]));
        if len > pkt.l4.len() || len < 8 {
            return self.invalid(InvalidReason::Truncated);
        }
        let (key, side) = pkt.ports_key();
        let (hash, home) = self.hashed(key, hint);
        if let Some(idx) = self.lookup_hinted(key, hash, now, home) {
            // `nf_conntrack_udp_packet`.
            let e = &mut self.entries[idx as usize];
            let dir = usize::from(side != e.orig_side());
            let (before_bucket, before_status) = (e.bucket(), e.status);
            let class = Self::ctinfo(e.seen_reply(), dir);
            let t = &self.policies[usize::from(e.policy)].1;
            let timeout = if e.seen_reply() {
                let stream_at = match e.l4 {
                    L4::Udp { stream_at } => stream_at,
                    _ => now.clock(),
                };
                if now.left(stream_at) < 0 {
                    // Still active two seconds after it began: a stream.
                    e.status |= ST_ASSURED;
                    t.udp_replied
                } else {
                    t.udp_unreplied
                }
            } else {
                t.udp_unreplied
            };
            if dir == 1 {
                e.status |= ST_SEEN_REPLY;
            }
            self.refresh(idx, timeout, now);
            self.changed(idx, before_bucket, before_status, now);
            self.counters.found += 1;
            return Self::known(idx, class, dir);
        }
        let timeout = self.policies[0].1.udp_unreplied;
        let l4 = L4::Udp {
            stream_at: now.after(2000),
        };
        self.new_flow(key, hash, side, l4, timeout)
    }

    fn track_generic(&mut self, pkt: &Pkt<'_>, now: Now, hint: Option<&Probe>) -> Outcome {
        let (key, side) = Key::ports(pkt.v6, pkt.proto, pkt.src, pkt.dst, 0, 0);
        let (hash, home) = self.hashed(key, hint);
        if let Some(idx) = self.lookup_hinted(key, hash, now, home) {
            // `generic_packet`: refresh, nothing else.
            let e = &mut self.entries[idx as usize];
            let dir = usize::from(side != e.orig_side());
            let (before_bucket, before_status) = (e.bucket(), e.status);
            let class = Self::ctinfo(e.seen_reply(), dir);
            if dir == 1 {
                e.status |= ST_SEEN_REPLY;
            }
            let timeout = self.policies[usize::from(e.policy)].1.generic;
            self.refresh(idx, timeout, now);
            self.changed(idx, before_bucket, before_status, now);
            self.counters.found += 1;
            return Self::known(idx, class, dir);
        }
        let timeout = self.policies[0].1.generic;
        self.new_flow(key, hash, side, L4::Other, timeout)
    }

    fn track_icmp(&mut self, pkt: &Pkt<'_>, now: Now, hint: Option<&Probe>) -> Outcome {
        let msg = pkt.l4;
        if msg.len() < 8 {
            return self.invalid(InvalidReason::Truncated);
        }
        let msg_type = msg[0];
        if pkt.v6 {
            // `nf_conntrack_icmpv6_error`.
            if icmp::untracked_v6(msg_type) {
                return self.untracked(UntrackedReason::Icmpv6NoTrack);
            }
            if msg_type == icmp::NDISC_REDIRECT {
                let link_local = (pkt.src >> 118) as u16 == 0xfe80 >> 6; // fe80::/10
                return match icmp::redirect_quote(msg, pkt.hop_limit, link_local) {
                    Ok(quoted) => self.related(pkt, quoted, now),
                    Err(()) => self.invalid(InvalidReason::Redirect),
                };
            }
            if msg_type < 128 {
                return self.related(pkt, &msg[8..], now);
            }
        } else {
            // `nf_conntrack_icmpv4_error`.
            if msg_type > icmp::NR_ICMP_TYPES {
                return self.invalid(InvalidReason::IcmpType);
            }
            if icmp::is_error_v4(msg_type) {
                return self.related(pkt, &msg[8..], now);
            }
        }
        let Some((key, side, is_request)) = pkt.icmp_query_key() else {
            // No inverse: `init_conntrack` cannot build a reply tuple.
            return self.invalid(InvalidReason::IcmpCannotOpen);
        };
        let (hash, home) = self.hashed(key, hint);
        let timeout_of = |t: &Timeouts| if pkt.v6 { t.icmpv6 } else { t.icmp };
        if let Some(idx) = self.lookup_hinted(key, hash, now, home) {
            // `nf_conntrack_icmp_packet`: refresh on every packet, both ways.
            let e = &mut self.entries[idx as usize];
            let dir = usize::from(side);
            let (before_bucket, before_status) = (e.bucket(), e.status);
            let class = Self::ctinfo(e.seen_reply(), dir);
            if dir == 1 {
                e.status |= ST_SEEN_REPLY;
            }
            let timeout = timeout_of(&self.policies[usize::from(e.policy)].1);
            self.refresh(idx, timeout, now);
            self.changed(idx, before_bucket, before_status, now);
            self.counters.found += 1;
            return Self::known(idx, class, dir);
        }
        if !is_request {
            // `valid_new[]`: only requests open a flow.
            return self.invalid(InvalidReason::IcmpCannotOpen);
        }
        let timeout = timeout_of(&self.policies[0].1);
        self.new_flow(key, hash, 0, L4::Icmp, timeout)
    }

    /// `nf_conntrack_inet_error`: an ICMP error is RELATED to the flow of the packet it quotes
    /// when that flow exists and the error goes to the quoted packet's source.
    fn related(&mut self, pkt: &Pkt<'_>, quoted: &[u8], now: Now) -> Outcome {
        let inner = if pkt.v6 {
            icmp::inner_v6(quoted)
        } else {
            icmp::inner_v4(quoted)
        };
        let Some(inner) = inner else {
            return self.invalid(InvalidReason::IcmpBadQuote);
        };
        let (inner_src, inner_dst) = (u128::from_be_bytes(inner.src), u128::from_be_bytes(inner.dst));
        // The inverse of the quoted packet's tuple: what a packet of the flow going back to
        // the quoted packet's source looks like.
        let (key, side) = match inner.proto {
            ip_protocol::TCP | ip_protocol::UDP => {
                if inner.l4.len() < 4 {
                    return self.invalid(InvalidReason::IcmpBadQuote);
                }
                let sp = u16::from_be_bytes([inner.l4[0], inner.l4[1]]);
                let dp = u16::from_be_bytes([inner.l4[2], inner.l4[3]]);
                Key::ports(pkt.v6, inner.proto, inner_dst, inner_src, dp, sp)
            }
            p if (p == ip_protocol::ICMP && !pkt.v6) || (p == ip_protocol::ICMPV6 && pkt.v6) => {
                if inner.l4.len() < 8 {
                    return self.invalid(InvalidReason::IcmpBadQuote);
                }
                let (t, code) = (inner.l4[0], inner.l4[1]);
                let Some(inverse) = icmp::inverse(pkt.v6, t) else {
                    return self.invalid(InvalidReason::IcmpBadQuote);
                };
                let id = u16::from_be_bytes([inner.l4[4], inner.l4[5]]);
                let query = if pkt.v6 {
                    icmp::query_v6(inverse)
                } else {
                    icmp::query_v4(inverse)
                };
                let Some((is_request, request_type)) = query else {
                    return self.invalid(InvalidReason::IcmpBadQuote);
                };
                // The virtual packet goes from the quoted packet's destination to its source.
                if is_request {
                    (
                        Key::icmp(pkt.v6, p, inner_dst, inner_src, id, request_type, code),
                        0,
                    )
                } else {
                    (
                        Key::icmp(pkt.v6, p, inner_src, inner_dst, id, request_type, code),
                        1,
                    )
                }
            }
            p => Key::ports(pkt.v6, p, inner_dst, inner_src, 0, 0),
        };
        let hash = key.hash(&self.hash_key);
        let Some(idx) = self.lookup(&key, hash, now) else {
            return self.invalid(InvalidReason::IcmpNoFlow);
        };
        // The found tuple's destination is the quoted packet's source; the error must go there.
        if pkt.dst != inner_src {
            return self.invalid(InvalidReason::IcmpNoFlow);
        }
        let e = &self.entries[idx as usize];
        let dir = if key.is_icmp() {
            usize::from(side)
        } else {
            usize::from(side != e.orig_side())
        };
        self.counters.found += 1;
        self.counters.related += 1;
        Self::known(idx, CtState::Related, dir)
    }

    // ---------------------------------------------------------------------------------------
    // Inserting.

    /// Inserts the flow a NEW packet opens, after the filter accepted the packet
    /// (`nf_conntrack_confirm`). At capacity, evicts an entry that is not assured (the one
    /// closest to expiring among those examined) or refuses.
    pub fn confirm(&mut self, pending: Pending, now_ns: u64) -> Result<EntryId, InsertError> {
        let now = Now::new(now_ns);
        self.wheel.start(now.ms);
        if let Some(idx) = self.lookup(&pending.key.unpack(), pending.hash, now) {
            self.counters.clash += 1;
            return Ok(EntryId(idx));
        }
        let mut status = 0;
        if pending.orig_side == 1 {
            status |= ST_ORIG_SIDE1;
        }
        let timeout = if pending.policy == 0 || usize::from(pending.policy) >= self.policies.len() {
            pending.timeout_ms
        } else {
            let t = &self.policies[usize::from(pending.policy)].1;
            lifetime(&pending.l4, t, false).unwrap_or(pending.timeout_ms)
        };
        let idx = self.insert(
            pending.key,
            pending.hash,
            status,
            pending.policy,
            pending.l4,
            timeout,
            pending.mark,
            pending.label,
            None,
            now,
        )?;
        Ok(EntryId(idx))
    }

    /// Inserts a TCP flow whose handshake the SYN proxy completed with the client: `orig` is
    /// the client-to-server tuple, `client` what the client's SYN said, `server` what the
    /// SYN-ACK the client accepted said (the proxy's cookie ISN and options). The entry starts
    /// in SYN_RECV (the proxy has not finished with the server yet) or, with `established`,
    /// in ESTABLISHED and ASSURED. `ext` is stored with it.
    pub fn insert_tcp(
        &mut self,
        orig: &FlowTuple,
        client: &TcpEndpoint,
        server: &TcpEndpoint,
        established: bool,
        ext: X,
        now_ns: u64,
    ) -> Result<EntryId, InsertError> {
        if orig.protocol != ip_protocol::TCP {
            return Err(InsertError::NotTcp {
                protocol: orig.protocol,
            });
        }
        let now = Now::new(now_ns);
        self.wheel.start(now.ms);
        let v6 = orig.family == IpFamily::V6;
        let (key, side) = Key::ports(
            v6,
            orig.protocol,
            u128::from_be_bytes(orig.src_addr),
            u128::from_be_bytes(orig.dst_addr),
            orig.src_port,
            orig.dst_port,
        );
        let hash = key.hash(&self.hash_key);
        if let Some(idx) = self.lookup(&key, hash, now) {
            return Err(InsertError::Exists {
                tuple: TupleDisplay(*orig),
                index: idx,
            });
        }
        let t = TcpTrack::seeded(client, server, established);
        let mut status = ST_SEEN_REPLY;
        if established {
            status |= ST_ASSURED;
        }
        if side == 1 {
            status |= ST_ORIG_SIDE1;
        }
        let timeouts = &self.policies[0].1;
        let timeout = timeouts.tcp(t.state()).unwrap_or(timeouts.tcp_syn_recv);
        let idx = self.insert(
            key.pack(),
            hash,
            status,
            0,
            L4::Tcp(t),
            timeout,
            0,
            0,
            Some(ext),
            now,
        )?;
        Ok(EntryId(idx))
    }

    #[allow(clippy::too_many_arguments)]
    fn insert(
        &mut self,
        key: PackedKey,
        hash: u64,
        status: u8,
        policy: u8,
        l4: L4,
        timeout_ms: u32,
        mark: u32,
        label: u128,
        ext: Option<X>,
        now: Now,
    ) -> Result<u32, InsertError> {
        if self.live >= self.cfg.capacity {
            let scanned = self.early_drop(now);
            if self.live >= self.cfg.capacity {
                self.counters.insert_failed += 1;
                return Err(InsertError::TableFull {
                    capacity: self.cfg.capacity,
                    scanned,
                });
            }
        }
        let entry = Entry {
            key,
            status,
            policy,
            expires: now.after(timeout_ms),
            prev: NIL,
            next: NIL,
            mark,
            l4,
            ext: NIL,
        };
        let idx = if self.free != NIL {
            let idx = self.free;
            self.free = self.entries[idx as usize].next;
            self.entries[idx as usize] = entry;
            idx
        } else {
            self.entries.push(entry);
            (self.entries.len() - 1) as u32
        };
        if let Some(l) = self.labels.get_mut(idx as usize) {
            *l = label;
        }
        if let Some(x) = ext {
            *self.ext_slot(idx) = x;
        }
        self.index.insert(hash, idx);
        let tick = self
            .wheel
            .target(now.ms + u64::from(timeout_ms), self.wheel.cursor);
        self.wheel.link(&mut self.entries, idx, tick);
        self.live += 1;
        let bucket = self.entries[idx as usize].bucket();
        *self.counts.slot(bucket) += 1;
        self.counters.inserted += 1;
        self.emit(idx, EventKind::New, now);
        Ok(idx)
    }

    /// `early_drop`: walks the wheel from the current tick (entries closest to expiring
    /// first), examines up to `early_drop_scan` entries and evicts the evictable one with the
    /// least time left. Returns how many were examined.
    fn early_drop(&mut self, now: Now) -> u32 {
        let budget = self.cfg.early_drop_scan.max(1);
        let mut examined = 0u32;
        let mut best: Option<(i64, u32)> = None;
        let mut tick = self.wheel.cursor;
        let end = self.wheel.cursor + SLOTS as u64;
        'walk: while tick < end {
            let Some(t) = self.wheel.next_occupied(tick) else {
                break;
            };
            if t >= end {
                break;
            }
            let mut idx = self.wheel.heads[(t % SLOTS as u64) as usize];
            while idx != NIL {
                let e = &self.entries[idx as usize];
                examined += 1;
                if e.evictable() {
                    let left = now.left(e.expires);
                    if best.is_none_or(|(l, _)| left < l) {
                        best = Some((left, idx));
                    }
                }
                if examined >= budget {
                    break 'walk;
                }
                idx = e.next;
            }
            tick = t + 1;
        }
        if let Some((_, idx)) = best {
            self.counters.early_drop += 1;
            self.destroy(idx, DestroyReason::EarlyDrop, now);
        }
        examined
    }

    // ---------------------------------------------------------------------------------------
    // Removing and expiring.

    /// Unlinks, counts, reports and frees entry `idx`.
    fn destroy(&mut self, idx: u32, reason: DestroyReason, now: Now) {
        self.emit(idx, EventKind::Destroy(reason), now);
        if self.entries[idx as usize].status & ST_FLAGGED != 0 {
            let key = self.entries[idx as usize].key.unpack();
            self.flagged.remove(&key);
        }
        let hash = self.entries[idx as usize].key.hash(&self.hash_key);
        self.index.remove(hash, idx);
        self.wheel.unlink(&mut self.entries, idx);
        let bucket = self.entries[idx as usize].bucket();
        *self.counts.slot(bucket) -= 1;
        match reason {
            DestroyReason::Expired => self.counters.expired += 1,
            DestroyReason::EarlyDrop => {}
            DestroyReason::Reset | DestroyReason::Reopened | DestroyReason::Removed => {
                self.counters.deleted += 1
            }
        }
        let e = &mut self.entries[idx as usize];
        e.status = ST_FREE;
        let ext = core::mem::replace(&mut e.ext, NIL);
        e.next = self.free;
        self.free = idx;
        self.live -= 1;
        if ext != NIL {
            self.exts[ext as usize] = X::default();
            self.exts_free.push(ext);
        }
    }

    /// The extension of entry `idx`, given one (a default value) if it has none.
    fn ext_slot(&mut self, idx: u32) -> &mut X {
        let mut slot = self.entries[idx as usize].ext;
        if slot == NIL {
            slot = match self.exts_free.pop() {
                Some(free) => free,
                None => {
                    self.exts.push(X::default());
                    (self.exts.len() - 1) as u32
                }
            };
            self.entries[idx as usize].ext = slot;
        }
        &mut self.exts[slot as usize]
    }

    /// Removes an entry (`conntrack -D`).
    pub fn remove(&mut self, id: EntryId, now_ns: u64) -> Result<(), EntryError> {
        self.check(id)?;
        self.destroy(id.0, DestroyReason::Removed, Now::new(now_ns));
        Ok(())
    }

    /// Advances the timer wheel to `now_ns`, examining at most `budget` entries: expired ones
    /// are removed (with a DESTROY event), refreshed ones move to the slot of their new expiry.
    /// Never removes an entry before its expiry.
    pub fn expire(&mut self, now_ns: u64, budget: u32) -> ExpireReport {
        let now = Now::new(now_ns);
        self.wheel.start(now.ms);
        let now_tick = now.ms / TICK_MS;
        let mut report = ExpireReport::default();
        while self.wheel.cursor < now_tick {
            if report.examined >= budget {
                report.behind = true;
                break;
            }
            let slot = (self.wheel.cursor % SLOTS as u64) as usize;
            let idx = self.wheel.heads[slot];
            if idx == NIL {
                // Skip to the next occupied tick, or to now.
                let next = self.wheel.next_occupied(self.wheel.cursor).unwrap_or(now_tick);
                self.wheel.cursor = next.clamp(self.wheel.cursor + 1, now_tick);
                continue;
            }
            report.examined += 1;
            self.counters.wheel_examined += 1;
            let left = now.left(self.entries[idx as usize].expires);
            if left <= 0 {
                report.expired += 1;
                self.destroy(idx, DestroyReason::Expired, now);
            } else {
                let tick = self.wheel.target(now.ms + left as u64, self.wheel.cursor + 1);
                self.wheel.unlink(&mut self.entries, idx);
                self.wheel.link(&mut self.entries, idx, tick);
            }
        }
        report
    }

    // ---------------------------------------------------------------------------------------
    // Entries.

    fn check(&self, id: EntryId) -> Result<&Entry, EntryError> {
        match self.entries.get(id.0 as usize) {
            Some(e) if !e.is_free() => Ok(e),
            _ => Err(EntryError::NoEntry { index: id.0 }),
        }
    }

    /// `ct mark set`.
    pub fn set_mark(&mut self, id: EntryId, mark: u32) -> Result<(), EntryError> {
        self.check(id)?;
        self.entries[id.0 as usize].mark = mark;
        Ok(())
    }

    /// `ct label set`.
    pub fn set_label(&mut self, id: EntryId, label: u128) -> Result<(), EntryError> {
        self.check(id)?;
        match self.labels.get_mut(id.0 as usize) {
            Some(l) => {
                *l = label;
                Ok(())
            }
            None => Err(EntryError::LabelsDisabled { label }),
        }
    }

    /// `ct timeout set` on a confirmed entry: attaches the policy and re-arms the lifetime of
    /// the entry's current state under it.
    pub fn set_timeout_policy(
        &mut self,
        id: EntryId,
        policy: PolicyId,
        now_ns: u64,
    ) -> Result<(), EntryError> {
        self.check(id)?;
        let Some((_, t)) = self.policies.get(usize::from(policy.0)) else {
            return Err(EntryError::UnknownPolicy { id: policy.0 });
        };
        let e = &self.entries[id.0 as usize];
        let ms = lifetime(&e.l4, t, e.assured());
        self.entries[id.0 as usize].policy = policy.0;
        if let Some(ms) = ms {
            self.refresh(id.0, ms, Now::new(now_ns));
        }
        Ok(())
    }

    /// The extension of an entry.
    pub fn ext(&self, id: EntryId) -> Result<&X, EntryError> {
        let slot = self.check(id)?.ext;
        Ok(self.exts.get(slot as usize).unwrap_or(&self.no_ext))
    }

    /// The extension of an entry, to change (an entry gets a slot in the extension slab the
    /// first time; it keeps it until it is removed).
    pub fn ext_mut(&mut self, id: EntryId) -> Result<&mut X, EntryError> {
        self.check(id)?;
        Ok(self.ext_slot(id.0))
    }

    /// Flags an entry for its owner (the SYN proxy flags the connections it set up), so that
    /// [`Shard::may_be_flagged`] can rule most other packets out without a lookup. Idempotent;
    /// the flag goes with the entry.
    pub fn flag(&mut self, id: EntryId) -> Result<(), EntryError> {
        self.check(id)?;
        let e = &mut self.entries[id.0 as usize];
        if e.status & ST_FLAGGED == 0 {
            e.status |= ST_FLAGGED;
            let key = e.key.unpack();
            self.flagged.add(&key);
        }
        Ok(())
    }

    /// Whether the entry is flagged.
    pub fn is_flagged(&self, id: EntryId) -> Result<bool, EntryError> {
        Ok(self.check(id)?.status & ST_FLAGGED != 0)
    }

    /// Live flagged entries.
    pub fn flagged_len(&self) -> u32 {
        self.flagged.live
    }

    /// False when the flow of the packet in `frame` (parsed as `info`) certainly has no
    /// flagged entry: no SipHash, no probe of the table (a multiply-shift hash and one byte,
    /// nothing at all while no entry is flagged). True means "look it up".
    #[inline]
    pub fn may_be_flagged(&self, frame: &[u8], info: &FrameInfo) -> bool {
        if self.flagged.live == 0 {
            return false;
        }
        match Pkt::of(frame, info).ok().and_then(|p| p.own_key()) {
            Some((key, _)) => self.flagged.may_hold(&key),
            None => false,
        }
    }

    /// Finds the entry of a flow by either direction's tuple, with the tuple's direction.
    pub fn lookup_tuple(&self, tuple: &FlowTuple, now_ns: u64) -> Option<(EntryId, Direction)> {
        let now = Now::new(now_ns);
        let v6 = tuple.family == IpFamily::V6;
        let (key, side) = Key::ports(
            v6,
            tuple.protocol,
            u128::from_be_bytes(tuple.src_addr),
            u128::from_be_bytes(tuple.dst_addr),
            tuple.src_port,
            tuple.dst_port,
        );
        let hash = key.hash(&self.hash_key);
        let idx = self.index.find(hash, |i| self.entries[i as usize].key.is(&key))?;
        let e = &self.entries[idx as usize];
        if now.left(e.expires) <= 0 {
            return None;
        }
        let dir = if side == e.orig_side() {
            Direction::Original
        } else {
            Direction::Reply
        };
        Some((EntryId(idx), dir))
    }

    /// A snapshot of one entry.
    pub fn snapshot(&self, id: EntryId, now_ns: u64) -> Result<EntrySnapshot, EntryError> {
        self.check(id)?;
        Ok(self.snap(id.0, Now::new(now_ns)))
    }

    fn snap(&self, idx: u32, now: Now) -> EntrySnapshot {
        let e = &self.entries[idx as usize];
        let orig = e.orig_side();
        EntrySnapshot {
            id: EntryId(idx),
            original: e.key.tuple(orig),
            reply: e.key.tuple(1 - orig),
            l4: e.l4.state(),
            status: e.ct_status(),
            mark: e.mark,
            label: self.labels.get(idx as usize).copied().unwrap_or(0),
            expires_in_ms: now.left(e.expires).max(0) as u32,
            policy: PolicyId(e.policy),
        }
    }

    /// Every live, unexpired entry that passes `filter`, in slot order. Borrowing the shard
    /// makes it a consistent snapshot.
    pub fn iter<'a>(
        &'a self,
        filter: &'a DumpFilter,
        now_ns: u64,
    ) -> impl Iterator<Item = EntrySnapshot> + 'a {
        let now = Now::new(now_ns);
        (0..self.entries.len() as u32)
            .filter(move |&i| {
                let e = &self.entries[i as usize];
                !e.is_free() && now.left(e.expires) > 0
            })
            .map(move |i| self.snap(i, now))
            .filter(move |s| filter.matches(s))
    }

    /// A bounded piece of a dump: appends up to `max` matching entries from slot `cursor` on
    /// and returns the cursor to continue from, or `None` when the walk is complete.
    pub fn dump_batch(
        &self,
        cursor: u32,
        filter: &DumpFilter,
        max: usize,
        now_ns: u64,
        out: &mut Vec<EntrySnapshot>,
    ) -> Option<u32> {
        let now = Now::new(now_ns);
        let mut i = cursor as usize;
        let mut taken = 0;
        while i < self.entries.len() {
            if taken >= max {
                return Some(i as u32);
            }
            let e = &self.entries[i];
            if !e.is_free() && now.left(e.expires) > 0 {
                let s = self.snap(i as u32, now);
                if filter.matches(&s) {
                    out.push(s);
                    taken += 1;
                }
            }
            i += 1;
        }
        None
    }

    // ---------------------------------------------------------------------------------------
    // Events.

    fn emit(&mut self, idx: u32, kind: EventKind, now: Now) {
        let Some(tx) = &self.events else {
            return;
        };
        let sample = u64::from(self.cfg.event_sample);
        self.event_seq += 1;
        if sample == 0 || self.event_seq % sample != 0 {
            self.counters.events_sampled_out += 1;
            return;
        }
        let e = &self.entries[idx as usize];
        let event = Event {
            kind,
            tuple: e.key.tuple(e.orig_side()),
            l4: e.l4.state(),
            status: e.ct_status(),
            mark: e.mark,
            at_ms: now.ms,
        };
        match tx.try_send(event) {
            Ok(()) => self.counters.events_sent += 1,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.counters.events_dropped += 1,
        }
    }

    /// Recounts entries per state by walking the slab (for tests and audits; O(capacity)).
    pub fn recount(&self) -> StateCounts {
        let mut c = StateCounts::default();
        for e in self.entries.iter().filter(|e| !e.is_free()) {
            *c.slot(e.bucket()) += 1;
        }
        c
    }
}

/// The lifetime an entry's current state has under `t` (used when a policy is attached).
fn lifetime(l4: &L4, t: &Timeouts, assured: bool) -> Option<u32> {
    match l4 {
        L4::Tcp(tr) => t.tcp(tr.state()),
        L4::Udp { .. } if assured => Some(t.udp_replied),
        L4::Udp { .. } => Some(t.udp_unreplied),
        L4::Icmp => Some(t.icmp),
        L4::Other => Some(t.generic),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fields `burst::touch_entry` reads lie on every line of what tracking reads of an
    /// entry.
    #[test]
    fn entry_layout_is_what_bursts_touch() {
        use core::mem::offset_of;
        assert_eq!(offset_of!(Entry, key), 0);
        assert_eq!(offset_of!(Entry, expires), 40);
        assert_eq!(offset_of!(Entry, next), 48);
        assert_eq!(offset_of!(Entry, mark), 108);
        assert_eq!(Shard::<()>::entry_size() % 4, 0);
        for start in (0usize..64).step_by(4) {
            let lines = |from: usize, to: usize| (start + from) / 64..=(start + to - 1) / 64;
            // All but the extension's slot, which only the owner reads.
            let all = lines(0, core::mem::offset_of!(Entry, ext));
            let touched = [0usize, 48, 108].map(|at| (start + at) / 64);
            assert!(all.clone().all(|l| touched.contains(&l)), "entry at +{start}");
            // What a lookup reads is the first 44 bytes.
            assert!(lines(0, 44).all(|l| touched.contains(&l)));
        }
    }

    /// Slab, index and wheel together stay within 128 bytes per flow (labels off) from a
    /// capacity of 64 k on (below, the fixed 16.9 kB of the wheel weighs in), with or without
    /// an extension type (the dataplane's is 36 bytes): flows without an extension do not pay
    /// for it.
    #[test]
    fn memory_per_flow_stays_within_128_bytes() {
        fn per_flow<X: Default>(capacity: u32) -> f64 {
            let cfg = ShardConfig {
                capacity,
                ..ShardConfig::default()
            };
            let sh = Shard::<X>::new(cfg, HashKey([1, 2])).unwrap();
            sh.memory_bytes() as f64 / f64::from(capacity)
        }
        for capacity in [65_536u32, 100_000, 1 << 20] {
            for (what, bytes) in [
                ("()", per_flow::<()>(capacity)),
                ("[u32; 9]", per_flow::<[u32; 9]>(capacity)),
            ] {
                assert!(
                    bytes <= 128.0,
                    "capacity {capacity}, X = {what}: {bytes:.1} bytes per flow"
                );
            }
        }
    }

    /// An entry gets an extension slot the first time its owner asks for one, keeps it (and
    /// its value) while it lives, and gives it back when it goes; an entry without one shows
    /// the default and costs no slot.
    #[test]
    fn extensions_live_and_die_with_their_entries() {
        let mut sh = Shard::<u64>::new(ShardConfig::default(), HashKey([1, 2])).unwrap();
        let t = |port: u16| FlowTuple::v4([198, 18, 0, 1].into(), [198, 19, 0, 1].into(), 6, port, 80);
        let ep = crate::TcpEndpoint {
            isn: 1,
            window: 1000,
            wscale: None,
            sack_perm: false,
        };
        let now = 1_000_000_000;
        let a = sh.insert_tcp(&t(1000), &ep, &ep, true, 3, now).unwrap();
        let b = sh.insert_tcp(&t(1001), &ep, &ep, true, 7, now).unwrap();
        assert_eq!(sh.exts.len(), 2, "insert_tcp stores the extension it is given");
        assert_eq!((*sh.ext(a).unwrap(), *sh.ext(b).unwrap()), (3, 7));
        *sh.ext_mut(a).unwrap() = 5;
        assert_eq!(sh.exts.len(), 2, "an entry keeps its slot");
        assert_eq!(*sh.ext(a).unwrap(), 5);
        sh.remove(b, now).unwrap();
        assert_eq!(sh.exts_free, [1]);
        assert_eq!(sh.exts[1], 0, "a freed slot is reset");
        assert!(sh.ext(b).is_err());
        // A flow confirmed from a packet has no extension: the default, no slot.
        let (key, _) = Key::ports(
            false,
            6,
            v4_addr([198, 18, 0, 2]),
            v4_addr([198, 19, 0, 1]),
            1003,
            80,
        );
        let hash = key.hash(&sh.hash_key);
        let c = sh
            .insert(key.pack(), hash, 0, 0, L4::Other, 1000, 0, 0, None, Now::new(now))
            .unwrap();
        assert_eq!(*sh.ext(EntryId(c)).unwrap(), 0);
        assert_eq!((sh.exts.len(), sh.exts_free.len()), (2, 1));
        // Asked for one, it takes the free slot.
        *sh.ext_mut(EntryId(c)).unwrap() = 9;
        assert_eq!((sh.exts.len(), sh.exts_free.len()), (2, 0));
        assert_eq!(*sh.ext(EntryId(c)).unwrap(), 9);
        assert_eq!(*sh.ext(a).unwrap(), 5);
    }

    #[test]
    fn entry_fits_128_bytes() {
        assert_eq!(core::mem::size_of::<L4>(), 56);
        assert_eq!(core::mem::size_of::<PackedKey>(), 38);
        let size = Shard::<()>::entry_size();
        assert!(size <= 128, "entry is {size} bytes");
        assert_eq!(size, 116);
        // An extension does not change it.
        assert_eq!(Shard::<[u32; 9]>::entry_size(), 116);
    }

    #[test]
    fn wheel_finds_next_occupied_across_words() {
        let mut w = Wheel::new();
        let mut entries: Vec<Entry> = (0..3)
            .map(|_| Entry {
                key: Key::ports(false, 17, 0, 0, 0, 0).0.pack(),
                status: 0,
                policy: 0,
                expires: 0,
                prev: NIL,
                next: NIL,
                mark: 0,
                l4: L4::Other,
                ext: NIL,
            })
            .collect();
        w.link(&mut entries, 0, 70);
        w.link(&mut entries, 1, 70);
        w.link(&mut entries, 2, 4000);
        assert_eq!(w.next_occupied(0), Some(70));
        assert_eq!(w.next_occupied(71), Some(4000));
        assert_eq!(w.next_occupied(4001), Some(4096 + 70));
        w.unlink(&mut entries, 1);
        w.unlink(&mut entries, 0);
        assert_eq!(w.next_occupied(0), Some(4000));
        assert_eq!(w.heads[70], NIL);
    }
}
