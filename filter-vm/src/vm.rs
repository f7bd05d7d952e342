//! The register VM: instructions, programs, and the interpreter.
//!
//! Model (nftables' own, see the kernel's `nf_tables_core.c`): a program is a set of chains;
//! a chain is a list of rules; a rule is a straight-line list of instructions that either all
//! succeed (the rule matched; its statements ran) or stop at the first one that *breaks* (a
//! comparison that failed, a load past the end of the packet), in which case evaluation moves
//! on to the next rule. A verdict instruction ends the rule with accept, drop, jump, goto,
//! return or continue. Falling off the end of a regular chain returns to the caller; falling
//! off a base chain applies its policy.
//!
//! Registers: a verdict register plus 16 × 32-bit data registers (64 bytes), addressable as
//! 4 × 128-bit. Data in registers is always in network byte order (big-endian), including
//! meta and ct values, so that every comparison and range check is a byte-wise comparison;
//! `byteorder` exists for programs that need host-order arithmetic.
//!
//! Only programs accepted by [`crate::verify`] are ever evaluated: the interpreter relies on
//! register indices and lengths being in bounds (it still never panics on a bad program — it
//! treats an out-of-range access as a break — but that is a safety net, not the contract).

use crate::pvec::{PVec, Rules};
use crate::sets::{LookupResult, SetId, Sets};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Number of 32-bit data registers.
pub const NUM_REGS: usize = 16;
/// Bytes of register file.
pub const REG_BYTES: usize = NUM_REGS * 4;
/// Deepest jump stack (nftables uses 16).
pub const MAX_CALL_DEPTH: usize = 16;
/// Longest single load/compare (a 128-bit register).
pub const MAX_DATA_LEN: usize = 16;

/// Where a payload offset counts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Base {
    /// The Ethernet header (the start of the frame).
    Link,
    /// The IPv4/IPv6 header.
    Network,
    /// The transport header (absent for non-first fragments and unknown protocols).
    Transport,
}

/// Comparison operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Lte,
    Gt,
    Gte,
}

/// The right-hand side of a comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operand {
    /// A constant (first `len` bytes used).
    Imm([u8; MAX_DATA_LEN]),
    /// Another register (levee extension: nft cannot compare two packet fields).
    Reg(u8),
}

/// Bitwise operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BitOp {
    /// `dst = (src & mask) ^ xor`.
    MaskXor {
        mask: [u8; MAX_DATA_LEN],
        xor: [u8; MAX_DATA_LEN],
    },
    /// Shift the big-endian value left by `n` bits.
    Shl(u8),
    /// Shift the big-endian value right by `n` bits.
    Shr(u8),
}

/// Meta keys (`meta …`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetaKey {
    /// Input interface index (4 bytes).
    Iif,
    /// Output interface index (4 bytes).
    Oif,
    /// Input interface name (16 bytes, NUL padded).
    IifName,
    /// Output interface name (16 bytes).
    OifName,
    /// Packet length as the hook sees it (4 bytes).
    Len,
    /// Transport protocol number (1 byte).
    L4Proto,
    /// Network family: 2 (IPv4) or 10 (IPv6) (1 byte).
    NfProto,
    /// EtherType of the network header (2 bytes).
    Protocol,
    /// Packet mark (4 bytes).
    Mark,
    /// The CPU (worker) evaluating the packet (4 bytes).
    Cpu,
    /// Nanoseconds since the Unix epoch (8 bytes).
    TimeNs,
    /// Day of the week, 0 = Sunday, UTC (1 byte).
    Day,
    /// Seconds since midnight, UTC (4 bytes; nft's `meta hour`).
    Hour,
    /// Packet type: 0 host, 1 broadcast, 2 multicast, 3 other host (1 byte).
    PktType,
}

impl MetaKey {
    /// Bytes this key loads.
    pub fn data_len(self) -> usize {
        match self {
            MetaKey::IifName | MetaKey::OifName => 16,
            MetaKey::L4Proto | MetaKey::NfProto | MetaKey::Day | MetaKey::PktType => 1,
            MetaKey::Protocol => 2,
            MetaKey::TimeNs => 8,
            _ => 4,
        }
    }
}

/// Conntrack keys (`ct …`), read from the [`CtView`] the caller supplies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CtKey {
    /// State bit (4 bytes): invalid 1, established 2, related 4, new 8, untracked 64 (nft's
    /// encoding).
    State,
    /// Status bits (4 bytes).
    Status,
    /// 0 original, 1 reply (1 byte).
    Direction,
    /// ct mark (4 bytes).
    Mark,
    /// 128-bit label (16 bytes).
    Label,
    /// Milliseconds until the entry expires (4 bytes).
    Expiration,
    /// Zone (2 bytes).
    Zone,
}

impl CtKey {
    /// Bytes this key loads.
    pub fn data_len(self) -> usize {
        match self {
            CtKey::Direction => 1,
            CtKey::Zone => 2,
            CtKey::Label => 16,
            _ => 4,
        }
    }
}

/// Verdicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    Accept,
    Drop,
    /// Go on with the next rule (the default after a rule's statements).
    Continue,
    /// Leave the current chain; in a base chain, apply the policy.
    Return,
    /// Call a chain; come back afterwards.
    Jump(u16),
    /// Continue in a chain without coming back.
    Goto(u16),
}

/// Checksum to fix after a payload write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CsumFix {
    None,
    /// IPv4 header checksum (network base, offset 10).
    Ipv4Header,
    /// The transport checksum at this offset from the transport header (TCP 16, UDP 6); for
    /// network-header writes it is the pseudo-header part that changes.
    Transport(u16),
}

/// Reject flavours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectKind {
    TcpReset,
    /// ICMP (IPv4) destination unreachable with this code.
    Icmp(u8),
    /// ICMPv6 destination unreachable with this code.
    Icmpv6(u8),
    /// A family-independent code (`icmpx`: 0 no-route, 1 port-unreachable, 2 host-unreachable,
    /// 3 admin-prohibited), answered as ICMP or ICMPv6 by the packet's family.
    Icmpx(u8),
}

/// What a meter does with a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DynsetOp {
    /// Add the key if absent (existing elements keep their state).
    Add,
    /// Add the key or refresh its timeout.
    Update,
}

/// Per-element statement of a meter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DynStmt {
    None,
    /// Per-element rate limit; the rule matches when the element is (over: above) within
    /// (over: beyond) `rate` per `per_ns`, with `burst`.
    Limit {
        rate: u64,
        per_ns: u64,
        burst: u64,
        over: bool,
    },
    /// Per-element counter.
    Counter,
}

/// One instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Insn {
    /// Copy `len` packet bytes at `base + offset` into registers from `dreg`; breaks when the
    /// packet is too short or the base does not exist.
    PayloadLoad {
        base: Base,
        offset: u16,
        len: u8,
        dreg: u8,
    },
    /// Write `len` register bytes from `sreg` into the packet, fixing `csum` incrementally.
    PayloadWrite {
        base: Base,
        offset: u16,
        len: u8,
        sreg: u8,
        csum: CsumFix,
    },
    /// Compare `len` bytes at `sreg` with `rhs`; breaks when false.
    Cmp {
        op: CmpOp,
        sreg: u8,
        len: u8,
        rhs: Operand,
    },
    /// `dreg = op(sreg)` over `len` bytes.
    Bitwise { sreg: u8, dreg: u8, len: u8, op: BitOp },
    /// Swap bytes of each `size`-byte word (`size` 2, 4 or 8) over `len` bytes.
    Byteorder { sreg: u8, dreg: u8, len: u8, size: u8 },
    /// Breaks unless `from <= value <= to` (or, with `negate`, unless outside).
    Range {
        sreg: u8,
        len: u8,
        from: [u8; MAX_DATA_LEN],
        to: [u8; MAX_DATA_LEN],
        negate: bool,
    },
    /// Load a constant.
    Immediate {
        dreg: u8,
        len: u8,
        data: [u8; MAX_DATA_LEN],
    },
    /// Load a meta value.
    Meta { key: MetaKey, dreg: u8 },
    /// Set the packet mark from a register.
    MetaSetMark { sreg: u8 },
    /// Load a conntrack value.
    Ct { key: CtKey, dreg: u8 },
    /// Set the ct mark (4 bytes) or label (16 bytes) from a register.
    CtSet { key: CtKey, sreg: u8 },
    /// Set lookup: breaks unless the `len`-byte key at `sreg` is (not, with `invert`) in the
    /// set; for maps, the value goes to `dreg` (or, for verdict maps, the verdict register).
    Lookup {
        set: SetId,
        sreg: u8,
        len: u8,
        dreg: Option<u8>,
        verdict_map: bool,
        invert: bool,
    },
    /// Add or update a packet-derived key in a per-worker dynamic set (meters).
    Dynset {
        set: SetId,
        sreg: u8,
        len: u8,
        op: DynsetOp,
        timeout_ns: u64,
        stmt: DynStmt,
    },
    /// Count the packet (per-worker counter `id`).
    Counter { id: u32 },
    /// Token bucket `id`: breaks when the packet conforms and `over` is set, or when it does
    /// not conform and `over` is clear.
    Limit {
        id: u32,
        rate: u64,
        per_ns: u64,
        burst: u64,
        bytes: bool,
        over: bool,
    },
    /// Byte quota `id`: breaks once `bytes` are used (or, with `over`, until they are).
    Quota { id: u32, bytes: u64, over: bool },
    /// Record a log event with this prefix index (the caller drains events).
    Log { prefix: u32 },
    /// Drop the packet and ask the dataplane to answer with a reject.
    Reject(RejectKind),
    /// Hand the packet to the SYN proxy with these options; ends evaluation.
    Synproxy {
        mss: u16,
        wscale: u8,
        timestamp: bool,
        sack_perm: bool,
    },
    /// Do not track the packet in conntrack.
    Notrack,
    /// Set the verdict register.
    Verdict(Verdict),
}

/// A compiled rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub insns: Vec<Insn>,
}

/// A compiled chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    /// The rules, as a persistent rope (see [`crate::pvec::Rules`]).
    pub rules: Rules,
    /// For base chains: the policy (`Accept` or `Drop`).
    pub policy: Option<Verdict>,
}

/// A program: chains (indexed by `Verdict::Jump`/`Goto`), the sets they use, and how many
/// counters, limits and quotas the per-worker state needs.
///
/// Every index space (chains, sets, counters, limits, quotas, log prefixes) is stable across
/// the generations the incremental compiler ([`crate::incremental`]) derives from one another:
/// a slot keeps its meaning while its rule or object lives, and counter, limit, quota and set
/// slots are never handed out twice, so a worker's [`State`] carries over by growing
/// ([`State::adopt`]). Cloning a program copies one entry per chain and shares the rest.
#[derive(Clone, Debug, Default)]
pub struct Program {
    pub chains: Vec<Chain>,
    pub sets: Sets,
    pub counters: u32,
    pub limits: u32,
    pub quotas: u32,
    /// Bytes already used per quota when the program starts (`quota … used N`).
    pub quota_used: PVec<u64>,
    pub log_prefixes: PVec<String>,
    /// Sets that rules add elements to from the packet path (`add`/`update @set`, meters), by
    /// set id: lookups in them also search the worker's dynamic elements. Sets beyond the end
    /// are not dynamic. [`crate::exec::lower`] also finds them from the instructions.
    pub dynamic_sets: PVec<bool>,
}

/// The conntrack facts the caller knows about the packet's flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtView {
    /// nft state bit (see [`CtKey::State`]).
    pub state: u32,
    pub status: u32,
    /// 0 original, 1 reply.
    pub direction: u8,
    pub mark: u32,
    pub label: u128,
    pub expiration_ms: u32,
    pub zone: u16,
}

impl CtView {
    /// The conntrack facts in `meta` (what [`crate::ctx::packet_ctx`] puts in a context).
    pub fn of(meta: &crate::ctx::PacketMeta) -> CtView {
        CtView {
            state: meta.ct_state.bit(),
            status: meta.ct_status,
            direction: meta.ct_direction,
            mark: meta.ct_mark,
            label: meta.ct_label,
            expiration_ms: meta.ct_expiration_ms,
            zone: meta.ct_zone,
        }
    }

    pub const INVALID: u32 = 1;
    pub const ESTABLISHED: u32 = 2;
    pub const RELATED: u32 = 4;
    pub const NEW: u32 = 8;
    pub const UNTRACKED: u32 = 64;
}

impl Default for CtView {
    fn default() -> Self {
        CtView {
            state: CtView::UNTRACKED,
            status: 0,
            direction: 0,
            mark: 0,
            label: 0,
            expiration_ms: 0,
            zone: 0,
        }
    }
}

/// A packet as the VM sees it: the frame, where its headers start, and its metadata.
#[derive(Clone, Copy, Debug)]
pub struct PacketCtx<'a> {
    pub frame: &'a [u8],
    /// Offset of the network header (after any VLAN tags).
    pub l3_offset: usize,
    /// Offset of the transport header, when there is one.
    pub l4_offset: Option<usize>,
    /// End of the network packet (frame length minus Ethernet padding), for bounds.
    pub l3_end: usize,
    /// 2 (IPv4), 10 (IPv6) or 0.
    pub nfproto: u8,
    /// Transport protocol number (0 when none).
    pub l4proto: u8,
    /// EtherType of the network header.
    pub ethertype: u16,
    /// Length the hook reports (`meta length`, counter bytes).
    pub len: u32,
    pub iif: u32,
    pub oif: u32,
    pub iifname: [u8; 16],
    pub oifname: [u8; 16],
    pub mark: u32,
    pub cpu: u32,
    /// Wall-clock nanoseconds since the Unix epoch (for `meta time/hour/day`).
    pub wall_ns: u64,
    /// Monotonic nanoseconds (for limits, quotas refills and timeouts).
    pub now_ns: u64,
    pub pkttype: u8,
    pub ct: CtView,
}

/// What evaluation decided, besides accept/drop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Actions {
    /// New packet mark, if a rule set one.
    pub mark: Option<u32>,
    /// New ct mark, if a rule set one.
    pub ct_mark: Option<u32>,
    /// New ct label, if a rule set one.
    pub ct_label: Option<u128>,
    /// `notrack` ran.
    pub notrack: bool,
    /// A reject to send.
    pub reject: Option<RejectKind>,
    /// The SYN proxy takes the packet.
    pub synproxy: Option<(u16, u8, bool, bool)>,
}

/// The outcome of evaluating one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Accept or Drop.
    pub verdict: Verdict,
    pub actions: Actions,
}

/// One worker's counters, readable by the control thread through a clone of the `Arc`.
pub type CounterBank = std::sync::Arc<Counters>;

/// Counter cells in chunks that never move: chunk `k` holds `64 << k` cells, allocated when a
/// program first needs them ([`State::adopt`]), so the control thread's clone of the bank
/// stays valid while the worker grows it for later generations.
#[derive(Debug, Default)]
pub struct Counters {
    chunks: [OnceLock<Box<[CounterCell]>>; COUNTER_CHUNKS],
}

const COUNTER_CHUNKS: usize = 27;

impl Counters {
    /// A bank with room for at least `n` counters.
    pub fn with_len(n: usize) -> Counters {
        let c = Counters::default();
        c.grow(n);
        c
    }

    #[inline(always)]
    fn locate(i: usize) -> (usize, usize) {
        let q = (i >> 6) + 1;
        let k = (usize::BITS - 1 - q.leading_zeros()) as usize;
        (k, i - ((1usize << k) - 1) * 64)
    }

    /// Makes room for at least `n` counters (new cells read zero).
    pub fn grow(&self, n: usize) {
        if n == 0 {
            return;
        }
        let (last, _) = Self::locate(n - 1);
        for (k, c) in self.chunks.iter().enumerate().take(last + 1) {
            c.get_or_init(|| (0..64usize << k).map(|_| CounterCell::default()).collect());
        }
    }

    /// Counter `i`, if allocated.
    #[inline(always)]
    pub fn get(&self, i: usize) -> Option<&CounterCell> {
        let (k, off) = Self::locate(i);
        self.chunks.get(k)?.get()?.get(off)
    }

    /// Number of allocated cells.
    pub fn len(&self) -> usize {
        self.chunks.iter().map_while(|c| c.get()).map(|c| c.len()).sum()
    }

    /// True when no cell is allocated.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Allocated cells in order.
    pub fn iter(&self) -> impl Iterator<Item = &CounterCell> + '_ {
        self.chunks.iter().map_while(|c| c.get()).flat_map(|c| c.iter())
    }
}

impl std::ops::Index<usize> for Counters {
    type Output = CounterCell;
    fn index(&self, i: usize) -> &CounterCell {
        match self.get(i) {
            Some(c) => c,
            None => panic!("counter {i} is not allocated"),
        }
    }
}

/// A per-worker counter cell: written by one worker with plain stores (no read-modify-write
/// atomics on the fast path), read by the control thread.
#[derive(Debug, Default)]
pub struct CounterCell {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
}

impl CounterCell {
    #[inline]
    pub(crate) fn add(&self, bytes: u64) {
        // Single writer: load + store, not fetch_add.
        self.packets
            .store(self.packets.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        self.bytes
            .store(self.bytes.load(Ordering::Relaxed) + bytes, Ordering::Relaxed);
    }
    /// (packets, bytes).
    pub fn get(&self) -> (u64, u64) {
        (
            self.packets.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    tokens: u64,
    last_ns: u64,
    primed: bool,
}

/// One worker's mutable state for a program: counters, token buckets, quotas, meters, log
/// events. Never shared between workers.
#[derive(Debug, Default)]
pub struct State {
    /// Rule counters; shared (read-only) with the control thread, written only by the owner.
    pub counters: CounterBank,
    buckets: Vec<Bucket>,
    quotas: Vec<u64>,
    pub dynamic: Sets,
    /// Log events (prefix index), bounded; the caller drains them.
    pub log_events: Vec<u32>,
    /// Log events dropped because the buffer was full.
    pub log_dropped: u64,
    /// Payload writes of the packet being evaluated, in order, not yet applied to its bytes
    /// (the caller applies them with [`crate::rewrite::apply_writes`]; later loads of the same
    /// evaluation already see them). The caller clears it before each packet.
    pub writes: Vec<PendingWrite>,
    /// The lowered program's call stack (jumps), kept here so that an evaluation does not
    /// initialise one on the stack per chain: allocated at the first evaluation.
    pub(crate) calls: Option<Box<CallStack>>,
    /// While `Some`, the ids of the counters an evaluation bumps, in order (the outcome cache
    /// records them on a miss and bumps them again on each hit).
    pub(crate) counted: Option<Vec<u32>>,
}

/// Where to resume after a jump returns: (chain, segment, rule within the segment) per level.
pub(crate) type CallStack = [(u16, u32, u32); MAX_CALL_DEPTH];

/// One payload write: `len` bytes at `offset` from the frame start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingWrite {
    pub base: Base,
    /// Offset from the start of the frame.
    pub offset: usize,
    pub len: usize,
    pub data: [u8; MAX_DATA_LEN],
}

const LOG_EVENTS_MAX: usize = 1024;

impl State {
    /// Fresh state sized for `p`.
    pub fn new(p: &Program) -> State {
        let mut s = State::default();
        s.adopt(p);
        s
    }

    /// Makes this state fit `p`, a later generation of the program it was made for (see
    /// [`Program`]): what existed keeps its values (counters, token buckets, quotas, dynamic
    /// set elements), what is new starts fresh. Costs O(new slots); runs on the worker, once
    /// per generation it picks up.
    pub fn adopt(&mut self, p: &Program) {
        self.counters.grow(p.counters as usize);
        if self.buckets.len() < p.limits as usize {
            self.buckets.resize(p.limits as usize, Bucket::default());
        }
        for i in self.quotas.len()..p.quotas as usize {
            self.quotas.push(p.quota_used.get(i).copied().unwrap_or(0));
        }
        self.dynamic.extend_dynamic_from(&p.sets);
    }
}

/// Token bucket: `rate` tokens per `per_ns`, at most `burst` (+ rate) stored; costs `cost`.
/// Returns true when the packet conforms. Integer arithmetic in units of 1/per_ns.
fn bucket_take(b: &mut Bucket, rate: u64, per_ns: u64, burst: u64, cost: u64, now: u64) -> bool {
    // The kernel's model (net/netfilter/nft_limit.c): the bucket holds `burst` packets (or
    // bytes) and starts full; a packet rate with burst 0 gets the default burst of 5. Tokens
    // are kept scaled by `per_ns` (kernel: nanoseconds per packet × rate) so refills never
    // lose precision.
    let cap = burst.saturating_mul(per_ns);
    if !b.primed {
        b.primed = true;
        b.tokens = cap;
        b.last_ns = now;
    }
    let elapsed = now.saturating_sub(b.last_ns);
    b.last_ns = now;
    b.tokens = b.tokens.saturating_add(elapsed.saturating_mul(rate)).min(cap);
    let need = cost.saturating_mul(per_ns);
    if b.tokens >= need {
        b.tokens -= need;
        true
    } else {
        false
    }
}

pub(crate) struct Regs {
    data: [u8; REG_BYTES],
    pub(crate) verdict: Verdict,
}

impl Regs {
    pub(crate) fn new() -> Regs {
        Regs {
            data: [0; REG_BYTES],
            verdict: Verdict::Continue,
        }
    }
    /// Stores a value of at most 4 bytes, left-aligned in `v` (one register, zero-padded).
    #[inline(always)]
    pub(crate) fn store32(&mut self, reg: u8, v: u32) -> Option<()> {
        let start = reg as usize * 4;
        self.data
            .get_mut(start..start + 4)?
            .copy_from_slice(&v.to_be_bytes());
        Some(())
    }
    #[inline]
    pub(crate) fn slice(&self, reg: u8, len: u8) -> Option<&[u8]> {
        let start = reg as usize * 4;
        self.data.get(start..start + len as usize)
    }
    #[inline]
    pub(crate) fn slice_mut(&mut self, reg: u8, len: u8) -> Option<&mut [u8]> {
        let start = reg as usize * 4;
        self.data.get_mut(start..start + len as usize)
    }
    /// Writes `bytes` at `reg`, zero-padding to the 4-byte register boundary (nft semantics).
    #[inline]
    pub(crate) fn store(&mut self, reg: u8, bytes: &[u8]) -> bool {
        let start = reg as usize * 4;
        let padded = bytes.len().div_ceil(4) * 4;
        if bytes.len() > 16 {
            // Only interface names and concatenated keys are this long; not the hot case.
            return match self.data.get_mut(start..start + padded) {
                Some(dst) => {
                    dst[..bytes.len()].copy_from_slice(bytes);
                    dst[bytes.len()..].fill(0);
                    true
                }
                None => false,
            };
        }
        // Exactly the field's bytes, then the register padding: fixed-size moves, no staging.
        let Some(d) = self.data.get_mut(start..start + padded) else {
            return false;
        };
        match bytes.len() {
            // One 4-byte store, not a narrow store plus padding: a later 4-byte read of the
            // register then forwards from a single store.
            1 => d.copy_from_slice(&[bytes[0], 0, 0, 0]),
            2 => d.copy_from_slice(&[bytes[0], bytes[1], 0, 0]),
            4 => d.copy_from_slice(&bytes[..4]),
            8 => d.copy_from_slice(&bytes[..8]),
            16 => d.copy_from_slice(&bytes[..16]),
            n => {
                d[..n].copy_from_slice(bytes);
                d[n..].fill(0);
            }
        }
        true
    }
}

/// Why a rule stopped early.
pub(crate) enum Flow {
    Next,
    Break,
}

/// A register value of up to 16 bytes as a number, for byte-order-preserving comparisons
/// without a `memcmp` call (big-endian bytes, left-aligned: shorter values compare as their
/// prefix would).
#[inline(always)]
fn as_u128(b: &[u8]) -> u128 {
    // Built with loads of the field's own width: staging bytes in a stack array and reading
    // it back as one wide word stalls store-to-load forwarding on every compare.
    match b.len() {
        1 => (b[0] as u128) << 120,
        2 => (u16::from_be_bytes([b[0], b[1]]) as u128) << 112,
        4 => (u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as u128) << 96,
        8 => (u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as u128) << 64,
        n if n >= 16 => u128::from_be_bytes(small_copy(&b[..16])),
        _ => u128::from_be_bytes(small_copy(b)),
    }
}

/// `src` (the first 16 bytes at most) at the front of a zeroed array.
#[inline(always)]
fn small_copy(src: &[u8]) -> [u8; 16] {
    let mut x = [0u8; 16];
    for (d, s) in x.iter_mut().zip(src) {
        *d = *s;
    }
    x
}

#[inline]
fn cmp(op: CmpOp, a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (as_u128(a), as_u128(b));
    match op {
        CmpOp::Eq => a == b,
        CmpOp::Ne => a != b,
        CmpOp::Lt => a < b,
        CmpOp::Lte => a <= b,
        CmpOp::Gt => a > b,
        CmpOp::Gte => a >= b,
    }
}

fn shift(src: &[u8], dst: &mut [u8], n: u8, left: bool) {
    // Big-endian multi-byte shift by n (< 32) bits.
    let len = src.len();
    let mut v = [0u8; MAX_DATA_LEN];
    v[..len].copy_from_slice(src);
    let bytes = (n / 8) as usize;
    let bits = n % 8;
    for i in 0..len {
        let (hi, lo) = if left {
            let j = i + bytes;
            (v.get(j).copied().unwrap_or(0), v.get(j + 1).copied().unwrap_or(0))
        } else {
            let hi = if i >= bytes { v[i - bytes] } else { 0 };
            let lo = if i > bytes { v[i - bytes - 1] } else { 0 };
            (lo, hi)
        };
        dst[i] = if left {
            if bits == 0 {
                hi
            } else {
                (hi << bits) | (lo >> (8 - bits))
            }
        } else if bits == 0 {
            lo
        } else {
            (lo >> bits) | (hi << (8 - bits))
        };
    }
}

pub(crate) fn meta_value(key: MetaKey, p: &PacketCtx<'_>, out: &mut [u8; 16]) {
    match key {
        MetaKey::Iif => out[..4].copy_from_slice(&p.iif.to_be_bytes()),
        MetaKey::Oif => out[..4].copy_from_slice(&p.oif.to_be_bytes()),
        MetaKey::IifName => *out = p.iifname,
        MetaKey::OifName => *out = p.oifname,
        MetaKey::Len => out[..4].copy_from_slice(&p.len.to_be_bytes()),
        MetaKey::L4Proto => out[0] = p.l4proto,
        MetaKey::NfProto => out[0] = p.nfproto,
        MetaKey::Protocol => out[..2].copy_from_slice(&p.ethertype.to_be_bytes()),
        MetaKey::Mark => out[..4].copy_from_slice(&p.mark.to_be_bytes()),
        MetaKey::Cpu => out[..4].copy_from_slice(&p.cpu.to_be_bytes()),
        MetaKey::TimeNs => out[..8].copy_from_slice(&p.wall_ns.to_be_bytes()),
        MetaKey::Day => out[0] = day_of_week(p.wall_ns),
        MetaKey::Hour => out[..4].copy_from_slice(&second_of_day(p.wall_ns).to_be_bytes()),
        MetaKey::PktType => out[0] = p.pkttype,
    }
}

// The calendar keys are out of line: inlined, LLVM hoisted their divisions (three wide
// multiplies) out of the interpreter loop, so every evaluation paid for them, rules reading
// `meta day/hour` or not (a fifth of an empty chain's time).

/// `meta day`: 0 Sunday … 6 Saturday (1970-01-01 was a Thursday, 4).
#[inline(never)]
fn day_of_week(wall_ns: u64) -> u8 {
    ((wall_ns / 1_000_000_000 / 86_400 + 4) % 7) as u8
}

/// `meta hour`: seconds since midnight UTC.
#[inline(never)]
fn second_of_day(wall_ns: u64) -> u32 {
    (wall_ns / 1_000_000_000 % 86_400) as u32
}

pub(crate) fn ct_value(key: CtKey, ct: &CtView, out: &mut [u8; 16]) {
    match key {
        CtKey::State => out[..4].copy_from_slice(&ct.state.to_be_bytes()),
        CtKey::Status => out[..4].copy_from_slice(&ct.status.to_be_bytes()),
        CtKey::Direction => out[0] = ct.direction,
        CtKey::Mark => out[..4].copy_from_slice(&ct.mark.to_be_bytes()),
        CtKey::Label => *out = ct.label.to_be_bytes(),
        CtKey::Expiration => out[..4].copy_from_slice(&ct.expiration_ms.to_be_bytes()),
        CtKey::Zone => out[..2].copy_from_slice(&ct.zone.to_be_bytes()),
    }
}

/// Evaluates base chain `entry` of `prog` for one packet. `frame` may be rewritten by payload
/// writes (`frame_mut` is the same bytes the context's `frame` describes, if writable).
pub fn evaluate(prog: &Program, state: &mut State, entry: usize, p: &PacketCtx<'_>) -> Outcome {
    let mut regs = Regs {
        data: [0; REG_BYTES],
        verdict: Verdict::Continue,
    };
    let mut actions = Actions::default();
    // (chain, next rule) to resume after a jump returns.
    let mut stack: [(u16, u32); MAX_CALL_DEPTH] = [(0, 0); MAX_CALL_DEPTH];
    let mut depth = 0usize;
    let mut chain = entry;
    let mut rule = 0usize;
    let mark_len = p.len as u64;
    let policy = prog
        .chains
        .get(entry)
        .and_then(|c| c.policy)
        .unwrap_or(Verdict::Accept);
    loop {
        let Some(c) = prog.chains.get(chain) else {
            return Outcome {
                verdict: policy,
                actions,
            };
        };
        let Some(r) = c.rules.get(rule) else {
            // End of chain: regular chains return to their caller, base chains apply policy.
            if depth == 0 {
                return Outcome {
                    verdict: policy,
                    actions,
                };
            }
            depth -= 1;
            chain = stack[depth].0 as usize;
            rule = stack[depth].1 as usize;
            continue;
        };
        regs.verdict = Verdict::Continue;
        let mut flow = Flow::Next;
        for insn in &r.insns {
            if let Flow::Break = run(insn, prog, state, p, &mut regs, &mut actions, mark_len) {
                flow = Flow::Break;
                break;
            }
            if regs.verdict != Verdict::Continue {
                break;
            }
        }
        if let Flow::Break = flow {
            rule += 1;
            continue;
        }
        match regs.verdict {
            Verdict::Continue => rule += 1,
            Verdict::Accept | Verdict::Drop => {
                return Outcome {
                    verdict: regs.verdict,
                    actions,
                }
            }
            Verdict::Return => {
                if depth == 0 {
                    return Outcome {
                        verdict: policy,
                        actions,
                    };
                }
                depth -= 1;
                chain = stack[depth].0 as usize;
                rule = stack[depth].1 as usize;
            }
            Verdict::Jump(to) => {
                if depth == MAX_CALL_DEPTH {
                    // The verifier refuses programs that can get here; drop to be safe.
                    return Outcome {
                        verdict: Verdict::Drop,
                        actions,
                    };
                }
                stack[depth] = (chain as u16, (rule + 1) as u32);
                depth += 1;
                chain = to as usize;
                rule = 0;
            }
            Verdict::Goto(to) => {
                chain = to as usize;
                rule = 0;
            }
        }
    }
}

#[inline]
#[allow(clippy::too_many_arguments)]
pub(crate) fn run(
    insn: &Insn,
    prog: &Program,
    state: &mut State,
    p: &PacketCtx<'_>,
    regs: &mut Regs,
    actions: &mut Actions,
    len: u64,
) -> Flow {
    macro_rules! or_break {
        ($e:expr) => {
            match $e {
                Some(v) => v,
                None => return Flow::Break,
            }
        };
    }
    match insn {
        Insn::PayloadLoad {
            base,
            offset,
            len,
            dreg,
        } => {
            let from = or_break!(field_at(p, *base, *offset, *len));
            let bytes = or_break!(p.frame.get(from..from + *len as usize));
            if state.writes.is_empty() {
                or_break!(regs.store(*dreg, bytes).then_some(()));
            } else {
                let n = *len as usize;
                let b = or_break!(payload_bytes(p, &state.writes, from, n));
                or_break!(regs.store(*dreg, &b[..n]).then_some(()));
            }
        }
        Insn::PayloadWrite {
            base,
            offset,
            len,
            sreg,
            ..
        } => {
            let from = or_break!(field_at(p, *base, *offset, *len));
            let n = *len as usize;
            let mut data = [0u8; MAX_DATA_LEN];
            data[..n].copy_from_slice(or_break!(regs.slice(*sreg, *len)));
            if state.writes.len() < 64 {
                state.writes.push(PendingWrite {
                    base: *base,
                    offset: from,
                    len: n,
                    data,
                });
            }
        }
        Insn::Cmp { op, sreg, len, rhs } => {
            let a = or_break!(regs.slice(*sreg, *len));
            let ok = match rhs {
                Operand::Imm(d) => cmp(*op, a, &d[..*len as usize]),
                Operand::Reg(r) => cmp(*op, a, or_break!(regs.slice(*r, *len))),
            };
            if !ok {
                return Flow::Break;
            }
        }
        Insn::Bitwise { sreg, dreg, len, op } => {
            let mut src = [0u8; MAX_DATA_LEN];
            let n = *len as usize;
            src[..n].copy_from_slice(or_break!(regs.slice(*sreg, *len)));
            let dst = or_break!(regs.slice_mut(*dreg, *len));
            match op {
                BitOp::MaskXor { mask, xor } => {
                    for i in 0..n {
                        dst[i] = (src[i] & mask[i]) ^ xor[i];
                    }
                }
                BitOp::Shl(s) => shift(&src[..n], dst, *s, true),
                BitOp::Shr(s) => shift(&src[..n], dst, *s, false),
            }
        }
        Insn::Byteorder {
            sreg,
            dreg,
            len,
            size,
        } => {
            let mut src = [0u8; MAX_DATA_LEN];
            let n = *len as usize;
            src[..n].copy_from_slice(or_break!(regs.slice(*sreg, *len)));
            let dst = or_break!(regs.slice_mut(*dreg, *len));
            let w = (*size as usize).max(1);
            for (d, s) in dst.chunks_mut(w).zip(src[..n].chunks(w)) {
                for (i, b) in s.iter().rev().enumerate() {
                    if let Some(x) = d.get_mut(i) {
                        *x = *b;
                    }
                }
            }
        }
        Insn::Range {
            sreg,
            len,
            from,
            to,
            negate,
        } => {
            let v = as_u128(or_break!(regs.slice(*sreg, *len)));
            let n = *len as usize;
            let inside = v >= as_u128(&from[..n]) && v <= as_u128(&to[..n]);
            if inside == *negate {
                return Flow::Break;
            }
        }
        Insn::Immediate { dreg, len, data } => {
            or_break!(regs.store(*dreg, &data[..*len as usize]).then_some(()));
        }
        Insn::Meta { key, dreg } => {
            let mut v = [0u8; 16];
            meta_value(*key, p, &mut v);
            // A mark set earlier in this evaluation is what later rules see.
            if let (MetaKey::Mark, Some(m)) = (key, actions.mark) {
                v[..4].copy_from_slice(&m.to_be_bytes());
            }
            or_break!(regs.store(*dreg, &v[..key.data_len()]).then_some(()));
        }
        Insn::MetaSetMark { sreg } => {
            let v = or_break!(regs.slice(*sreg, 4));
            actions.mark = Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
        }
        Insn::Ct { key, dreg } => {
            if p.ct.state == CtView::UNTRACKED && *key != CtKey::State {
                // No entry: every ct key but the state is absent (nft_ct breaks).
                return Flow::Break;
            }
            let mut v = [0u8; 16];
            ct_value(*key, &p.ct, &mut v);
            if let (CtKey::Mark, Some(m)) = (key, actions.ct_mark) {
                v[..4].copy_from_slice(&m.to_be_bytes());
            }
            or_break!(regs.store(*dreg, &v[..key.data_len()]).then_some(()));
        }
        Insn::CtSet { key, sreg } => match key {
            CtKey::Mark => {
                let v = or_break!(regs.slice(*sreg, 4));
                actions.ct_mark = Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
            }
            CtKey::Label => {
                let v = or_break!(regs.slice(*sreg, 16));
                let mut b = [0u8; 16];
                b.copy_from_slice(v);
                actions.ct_label = Some(u128::from_be_bytes(b));
            }
            _ => {}
        },
        Insn::Lookup {
            set,
            sreg,
            len,
            dreg,
            verdict_map,
            invert,
        } => {
            let key = or_break!(regs.slice(*sreg, *len));
            let mut value = [0u8; MAX_DATA_LEN];
            let found = match prog.sets.lookup(*set, key, p.now_ns, &mut value) {
                LookupResult::Miss => {
                    state
                        .dynamic
                        .lookup_dynamic(*set, key, p.now_ns, len_bytes(p), *invert, &mut value)
                }
                hit => hit,
            };
            let hit = !matches!(found, LookupResult::Miss);
            if hit == *invert {
                return Flow::Break;
            }
            if let LookupResult::Value(vlen) = found {
                if *verdict_map {
                    regs.verdict = or_break!(crate::sets::decode_verdict(&value[..vlen]));
                } else if let Some(d) = dreg {
                    or_break!(regs.store(*d, &value[..vlen]).then_some(()));
                }
            }
        }
        Insn::Dynset {
            set,
            sreg,
            len,
            op,
            timeout_ns,
            stmt,
        } => {
            let key = or_break!(regs.slice(*sreg, *len));
            let conforms = state
                .dynamic
                .dynset(*set, key, *op, *timeout_ns, *stmt, p.now_ns, len_bytes(p));
            if !conforms {
                return Flow::Break;
            }
        }
        Insn::Counter { id } => {
            if let Some(c) = state.counters.get(*id as usize) {
                c.add(len);
            }
            if let Some(log) = state.counted.as_mut() {
                log.push(*id);
            }
        }
        Insn::Limit {
            id,
            rate,
            per_ns,
            burst,
            bytes,
            over,
        } => {
            let cost = if *bytes { len } else { 1 };
            let burst = if *bytes || *burst > 0 { *burst } else { 5 };
            let b = or_break!(state.buckets.get_mut(*id as usize));
            let conforms = bucket_take(b, *rate, *per_ns, burst, cost, p.now_ns);
            // `limit rate N` matches conforming packets; `limit rate over N` the others.
            if conforms == *over {
                return Flow::Break;
            }
        }
        Insn::Quota { id, bytes, over } => {
            // As the kernel (nft_quota.c): every packet is added, even past the quota, and the
            // packet that reaches the quota exactly is still within it.
            let used = or_break!(state.quotas.get_mut(*id as usize));
            *used = used.saturating_add(len);
            let within = *used <= *bytes;
            // `quota N` matches while within; `quota over N` once exhausted.
            if within == *over {
                return Flow::Break;
            }
        }
        Insn::Log { prefix } => {
            if state.log_events.len() < LOG_EVENTS_MAX {
                state.log_events.push(*prefix);
            } else {
                state.log_dropped += 1;
            }
        }
        Insn::Reject(kind) => {
            actions.reject = Some(*kind);
            regs.verdict = Verdict::Drop;
        }
        Insn::Synproxy {
            mss,
            wscale,
            timestamp,
            sack_perm,
        } => {
            actions.synproxy = Some((*mss, *wscale, *timestamp, *sack_perm));
            // The proxy consumes the packet (nft_synproxy returns NF_STOLEN / NF_DROP).
            regs.verdict = Verdict::Drop;
        }
        Insn::Notrack => actions.notrack = true,
        Insn::Verdict(v) => regs.verdict = *v,
    }
    Flow::Next
}

/// Where `len` bytes at `offset` from header `base` start in the frame, if the packet has that
/// header and the field lies inside it (network and transport fields end at the IP packet's
/// end, Ethernet padding excluded).
#[inline]
pub(crate) fn field_at(p: &PacketCtx<'_>, base: Base, offset: u16, len: u8) -> Option<usize> {
    field_span(
        base,
        p.nfproto,
        p.l3_offset,
        p.l4_offset,
        p.l3_end,
        p.frame.len(),
        offset,
        len,
    )
}

/// [`field_at`] from the pieces of a context it reads.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn field_span(
    base: Base,
    nfproto: u8,
    l3_offset: usize,
    l4_offset: Option<usize>,
    l3_end: usize,
    frame_len: usize,
    offset: u16,
    len: u8,
) -> Option<usize> {
    let (start, end) = match base {
        Base::Link => (0, frame_len),
        Base::Network if nfproto != 0 => (l3_offset, l3_end),
        Base::Network => return None,
        Base::Transport => (l4_offset?, l3_end),
    };
    let from = start + offset as usize;
    (from + len as usize <= end).then_some(from)
}

/// `n` (≤ 16) packet bytes at `from` as this evaluation sees them: earlier payload writes of
/// the same evaluation are what later loads see.
pub(crate) fn payload_bytes(
    p: &PacketCtx<'_>,
    writes: &[PendingWrite],
    from: usize,
    n: usize,
) -> Option<[u8; MAX_DATA_LEN]> {
    let mut b = [0u8; MAX_DATA_LEN];
    b.get_mut(..n)?.copy_from_slice(p.frame.get(from..from + n)?);
    for w in writes {
        for (i, x) in b[..n].iter_mut().enumerate() {
            let at = from + i;
            if at >= w.offset && at < w.offset + w.len {
                *x = w.data[at - w.offset];
            }
        }
    }
    Some(b)
}

fn len_bytes(p: &PacketCtx<'_>) -> u64 {
    p.len as u64
}

/// Token-bucket step used by the statements cloned into dynamically added set elements
/// (their state lives in the element, `sets::DynElem`): one packet, the same bucket as
/// `limit` (net/netfilter/nft_limit.c, `nft_limit_eval`; an element's bucket starts full,
/// `nft_limit_clone` copying `tokens_max`).
pub(crate) fn bucket_take_raw(
    b: &mut (u64, u64, bool),
    rate: u64,
    per_ns: u64,
    burst: u64,
    now: u64,
) -> bool {
    let mut bucket = Bucket {
        tokens: b.0,
        last_ns: b.1,
        primed: b.2,
    };
    let ok = bucket_take(
        &mut bucket,
        rate,
        per_ns,
        if burst > 0 { burst } else { 5 },
        1,
        now,
    );
    *b = (bucket.tokens, bucket.last_ns, bucket.primed);
    ok
}
