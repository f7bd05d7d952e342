//! The per-core worker loop: one worker per core, owning RX/TX queue *q* of both ports.
//!
//! ```text
//! poll_once(now):
//!   for port in [outside, inside]: rx_burst(32)
//!     for each frame: parse -> owner = steering(flow hash)
//!        owner == me  -> buffer for TX on the other port
//!        owner != me  -> hand-off ring to the owner (counted)
//!        malformed IP -> drop (counted)
//!   drain hand-off rings from the other workers (same treatment, owner is me)
//!   flush TX buffers that are full or older than the drain interval
//!   publish this burst's counters
//! ```
//!
//! Invariants: the fast path takes no lock, does not allocate once its vectors reached their
//! burst capacity, and makes no syscall. Counters are kept in plain integers and published once
//! per `poll_once` with single-writer atomic stores (no read-modify-write). The worker never
//! reads a clock: `now` is passed in (TSC cycles on DPDK, anything monotonic in tests).

use crate::flow::{steering_hash, Steering};
use crate::io::{PacketBuf, PortIo};
use crossbeam_queue::ArrayQueue;
use levee_conntrack::{CtInfo, Direction as CtDirection, EntryId, Outcome};
use levee_control::generation::GenerationReader;
use levee_filter_vm::cache::VerdictCache;
use levee_filter_vm::nft::ast::Hook;
use levee_filter_vm::reject::{build_reject_into, REJECT_MAX};
use levee_filter_vm::vm::{Actions, CounterBank, State as FilterState, Verdict};
use levee_filter_vm::{Compiled, CtState as FilterCtState, PacketMeta};
use levee_packet::parse::L3Info;
use levee_packet::parse::{parse_frame, FrameInfo};
use levee_packet::tcp::TcpFlags;
use levee_synproxy::{AckVerdict, ClientVerdict, ProxyConn, ServerVerdict, SynProxy, SynRule, SynVerdict};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// The two sides of the bump in the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// Internet-facing port.
    Outside = 0,
    /// Server-facing port.
    Inside = 1,
}

impl Side {
    pub const BOTH: [Side; 2] = [Side::Outside, Side::Inside];
    /// The port a frame received on this side leaves through.
    #[inline]
    pub fn other(self) -> Side {
        match self {
            Side::Outside => Side::Inside,
            Side::Inside => Side::Outside,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Side::Outside => "outside",
            Side::Inside => "inside",
        }
    }
    fn from_index(i: u8) -> Side {
        if i == 0 {
            Side::Outside
        } else {
            Side::Inside
        }
    }
}

/// Why a worker dropped a packet (the `reason` label of the drop counters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// An IPv4/IPv6 packet whose headers do not parse (the kernel drops these in ip_rcv /
    /// ipv6_rcv before any netfilter hook sees them).
    Malformed = 0,
    /// The hand-off ring to the owning worker was full.
    HandoffFull = 1,
    /// The TX queue kept refusing and the worker's TX buffer was full.
    TxFull = 2,
    /// The ruleset dropped it (a drop verdict, a policy, a reject).
    Filter = 3,
    /// It would have opened a flow, but the conntrack shard was full and nothing could be
    /// evicted (Linux: `nf_conntrack: table full, dropping packet`).
    ConntrackFull = 4,
    /// The SYN proxy refused it: an ACK without a valid cookie, a SYN over the reply limit, a
    /// segment its connection did not expect (see the synproxy counters for which).
    Synproxy = 5,
}

impl DropReason {
    pub const ALL: [DropReason; 6] = [
        DropReason::Malformed,
        DropReason::HandoffFull,
        DropReason::TxFull,
        DropReason::Filter,
        DropReason::ConntrackFull,
        DropReason::Synproxy,
    ];
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::HandoffFull => "handoff_full",
            DropReason::TxFull => "tx_full",
            DropReason::Filter => "filter",
            DropReason::ConntrackFull => "conntrack_full",
            DropReason::Synproxy => "synproxy",
        }
    }
}

/// The SYN-proxy counters a worker publishes, in the order of [`WorkerTotals::synproxy`]
/// (named where the metrics are, so the exporter and the workers share one list).
pub use levee_control::metrics::SYNPROXY_COUNTERS;

fn synproxy_counters(c: &levee_synproxy::Counters) -> [u64; SYNPROXY_COUNTERS.len()] {
    [
        c.syn_received,
        c.cookie_invalid,
        c.cookie_valid,
        c.cookie_retrans,
        c.conn_reopened,
        c.reply_ratelimited,
        c.ack_flood_dropped,
        c.synack_sent,
        c.handshakes_completed,
        c.server_refused,
        c.probe_recovered,
    ]
}

/// Conntrack entries from which a worker stages each burst and prepares its lookups together
/// (about 2 MB of entries: beyond the caches that a smaller table stays in).
const STAGE_MIN_ENTRIES: u32 = 16_384;

/// Worker tuning.
#[derive(Clone, Copy, Debug)]
pub struct WorkerConfig {
    /// RX burst size (DPDK's customary 32).
    pub burst: usize,
    /// Most packets buffered per TX port before new ones are dropped (≥ burst).
    pub tx_buffer: usize,
    /// Flush a partly filled TX buffer after this many `now` units.
    pub drain_interval: u64,
    /// `now` units per microsecond (TSC cycles on DPDK); 0 when `now` is in nanoseconds.
    pub ticks_per_us: u64,
    /// Conntrack entries the timer wheel may examine per loop iteration.
    pub ct_expire_budget: u32,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            burst: 32,
            tx_buffer: 256,
            drain_interval: 0,
            ticks_per_us: 0,
            ct_expire_budget: 64,
        }
    }
}

/// A worker's counters as the control thread reads them. One writer (the worker), any number
/// of readers; values are cumulative.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct WorkerStats {
    /// Frames received per port (index: `Side`).
    pub rx_packets: [AtomicU64; 2],
    /// Bytes received per port.
    pub rx_bytes: [AtomicU64; 2],
    /// Frames accepted by each port's TX queue.
    pub tx_packets: [AtomicU64; 2],
    /// Bytes accepted by each port's TX queue.
    pub tx_bytes: [AtomicU64; 2],
    /// Drops by `DropReason`.
    pub drops: [AtomicU64; 6],
    /// The SYN proxy's counters, in [`SYNPROXY_COUNTERS`] order.
    pub synproxy: [AtomicU64; SYNPROXY_COUNTERS.len()],
    /// Packets this worker handed to their owning worker.
    pub handoffs_out: AtomicU64,
    /// Packets other workers handed to this one.
    pub handoffs_in: AtomicU64,
    /// `poll_once` calls (loop iterations).
    pub polls: AtomicU64,
    /// Reject answers (TCP RST, ICMP unreachable) sent.
    pub rejects: AtomicU64,
    /// `log` statements that fired.
    pub logs: AtomicU64,
    /// Log records dropped because the queue to the control thread was full.
    pub logs_dropped: AtomicU64,
    /// Entries in this worker's conntrack shard (a gauge).
    pub ct_entries: AtomicU64,
    /// Flows this worker's shard confirmed (entries created).
    pub ct_confirmed: AtomicU64,
    /// Packets the shard classified INVALID.
    pub ct_invalid: AtomicU64,
    /// Entries that timed out.
    pub ct_expired: AtomicU64,
    /// Not-assured entries evicted to make room (early drops).
    pub ct_early_drops: AtomicU64,
    /// Packets the ruleset accepted.
    pub filter_accepted: AtomicU64,
    /// Outcome cache: packets answered from it, looked up and interpreted, interpreted
    /// without a lookup (bypass).
    pub filter_cache: [AtomicU64; 3],
    /// The conntrack shard's capacity (a gauge; 0 without conntrack).
    pub ct_limit: AtomicU64,
    /// Conntrack events dropped because the channel to the control thread was full.
    pub ct_events_dropped: AtomicU64,
    /// The rule generation this worker runs (0: a fixed ruleset or none).
    pub generation: AtomicU64,
}

/// A plain copy of `WorkerStats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerTotals {
    pub rx_packets: [u64; 2],
    pub rx_bytes: [u64; 2],
    pub tx_packets: [u64; 2],
    pub tx_bytes: [u64; 2],
    pub drops: [u64; 6],
    pub synproxy: [u64; SYNPROXY_COUNTERS.len()],
    pub handoffs_out: u64,
    pub handoffs_in: u64,
    pub polls: u64,
    pub rejects: u64,
    pub logs: u64,
    pub logs_dropped: u64,
    pub ct_entries: u64,
    pub ct_confirmed: u64,
    pub ct_invalid: u64,
    pub ct_expired: u64,
    pub ct_early_drops: u64,
    pub filter_accepted: u64,
    /// Outcome cache hits, misses, bypassed packets.
    pub filter_cache: [u64; 3],
    /// A gauge (summed: the total capacity).
    pub ct_limit: u64,
    pub ct_events_dropped: u64,
    /// A gauge: the generation this worker runs (summed totals keep the oldest).
    pub generation: u64,
}

impl WorkerTotals {
    /// Adds another worker's totals (for per-port sums across workers).
    pub fn add(&mut self, o: &WorkerTotals) {
        for i in 0..2 {
            self.rx_packets[i] += o.rx_packets[i];
            self.rx_bytes[i] += o.rx_bytes[i];
            self.tx_packets[i] += o.tx_packets[i];
            self.tx_bytes[i] += o.tx_bytes[i];
        }
        for i in 0..self.drops.len() {
            self.drops[i] += o.drops[i];
        }
        for i in 0..self.synproxy.len() {
            self.synproxy[i] += o.synproxy[i];
        }
        self.handoffs_out += o.handoffs_out;
        self.handoffs_in += o.handoffs_in;
        self.polls += o.polls;
        self.rejects += o.rejects;
        self.logs += o.logs;
        self.logs_dropped += o.logs_dropped;
        self.ct_entries += o.ct_entries;
        self.ct_confirmed += o.ct_confirmed;
        self.ct_invalid += o.ct_invalid;
        self.ct_expired += o.ct_expired;
        self.ct_early_drops += o.ct_early_drops;
        self.filter_accepted += o.filter_accepted;
        for i in 0..self.filter_cache.len() {
            self.filter_cache[i] += o.filter_cache[i];
        }
        self.ct_limit += o.ct_limit;
        self.ct_events_dropped += o.ct_events_dropped;
        // The oldest generation any worker still runs (0 means none reported).
        self.generation = match (self.generation, o.generation) {
            (0, g) | (g, 0) => g,
            (a, b) => a.min(b),
        };
    }
}

impl WorkerStats {
    /// A snapshot (each counter read once; counters of one burst may straddle a snapshot).
    pub fn totals(&self) -> WorkerTotals {
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WorkerTotals {
            rx_packets: [ld(&self.rx_packets[0]), ld(&self.rx_packets[1])],
            rx_bytes: [ld(&self.rx_bytes[0]), ld(&self.rx_bytes[1])],
            tx_packets: [ld(&self.tx_packets[0]), ld(&self.tx_packets[1])],
            tx_bytes: [ld(&self.tx_bytes[0]), ld(&self.tx_bytes[1])],
            drops: std::array::from_fn(|i| ld(&self.drops[i])),
            synproxy: std::array::from_fn(|i| ld(&self.synproxy[i])),
            handoffs_out: ld(&self.handoffs_out),
            handoffs_in: ld(&self.handoffs_in),
            polls: ld(&self.polls),
            rejects: ld(&self.rejects),
            logs: ld(&self.logs),
            logs_dropped: ld(&self.logs_dropped),
            ct_entries: ld(&self.ct_entries),
            ct_confirmed: ld(&self.ct_confirmed),
            ct_invalid: ld(&self.ct_invalid),
            ct_expired: ld(&self.ct_expired),
            ct_early_drops: ld(&self.ct_early_drops),
            filter_accepted: ld(&self.filter_accepted),
            filter_cache: std::array::from_fn(|i| ld(&self.filter_cache[i])),
            ct_limit: ld(&self.ct_limit),
            ct_events_dropped: ld(&self.ct_events_dropped),
            generation: ld(&self.generation),
        }
    }

    fn publish(&self, t: &WorkerTotals) {
        // Single writer: plain stores, no atomic read-modify-write on the fast path.
        let st = |a: &AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
        for i in 0..2 {
            st(&self.rx_packets[i], t.rx_packets[i]);
            st(&self.rx_bytes[i], t.rx_bytes[i]);
            st(&self.tx_packets[i], t.tx_packets[i]);
            st(&self.tx_bytes[i], t.tx_bytes[i]);
        }
        for i in 0..self.drops.len() {
            st(&self.drops[i], t.drops[i]);
        }
        for i in 0..self.synproxy.len() {
            st(&self.synproxy[i], t.synproxy[i]);
        }
        st(&self.handoffs_out, t.handoffs_out);
        st(&self.handoffs_in, t.handoffs_in);
        st(&self.polls, t.polls);
        st(&self.rejects, t.rejects);
        st(&self.logs, t.logs);
        st(&self.logs_dropped, t.logs_dropped);
        st(&self.ct_entries, t.ct_entries);
        st(&self.ct_confirmed, t.ct_confirmed);
        st(&self.ct_invalid, t.ct_invalid);
        st(&self.ct_expired, t.ct_expired);
        st(&self.ct_early_drops, t.ct_early_drops);
        st(&self.filter_accepted, t.filter_accepted);
        for i in 0..self.filter_cache.len() {
            st(&self.filter_cache[i], t.filter_cache[i]);
        }
        st(&self.ct_limit, t.ct_limit);
        st(&self.ct_events_dropped, t.ct_events_dropped);
        st(&self.generation, t.generation);
    }
}

/// Hand-off rings between workers: ring `from * n + to` carries packets that worker `from`
/// received but worker `to` owns, tagged with the port they arrived on. Each ring has exactly
/// one producer and one consumer.
pub struct HandoffMesh<B> {
    workers: usize,
    rings: Vec<ArrayQueue<(u8, B)>>,
}

impl<B> HandoffMesh<B> {
    /// Rings for `workers` workers, `capacity` packets each.
    pub fn new(workers: usize, capacity: usize) -> Arc<HandoffMesh<B>> {
        let rings = (0..workers * workers)
            .map(|_| ArrayQueue::new(capacity.max(1)))
            .collect();
        Arc::new(HandoffMesh { workers, rings })
    }
    #[inline]
    fn ring(&self, from: usize, to: usize) -> &ArrayQueue<(u8, B)> {
        &self.rings[from * self.workers + to]
    }
}

/// What to do with one received frame.
enum Disposition {
    /// This worker owns it: filter, then forward.
    Mine,
    HandOff(u16),
    Drop(DropReason),
}

/// Decides a frame's fate from its parsed headers (no packet is modified here). The parse
/// result stays where `parse_frame` wrote it (the caller's frame): moving it on, as a
/// field of the disposition, cost a store-forwarding stall per packet.
#[inline]
fn classify(
    parsed: &Result<FrameInfo, levee_packet::parse::ParseError>,
    rss_hash: Option<u32>,
    steering: &Steering,
    me: u16,
) -> Disposition {
    match parsed {
        Ok(_) if steering.workers() == 1 => Disposition::Mine,
        Ok(info) => match rss_hash.or_else(|| steering_hash(info)) {
            Some(h) if steering.owner(h) != me => Disposition::HandOff(steering.owner(h)),
            // Mine, or not IP (ARP, LLDP, …: no flow state, any worker may forward it).
            _ => Disposition::Mine,
        },
        Err(_) => Disposition::Drop(DropReason::Malformed),
    }
}

/// A worker's conntrack shard. Each entry carries a [`ConnExt`].
pub type CtShard = levee_conntrack::Shard<ConnExt>;

/// Per-flow state the dataplane keeps in a conntrack entry next to the tracker's own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnExt {
    /// The SYN proxy's state, for connections it set up (sequence and timestamp offsets).
    pub proxy: Option<ProxyState>,
}

/// A proxied connection: the proxy's state and the `synproxy` rule that opened it (used again
/// when a SYN reopens the tuple).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyState {
    pub conn: ProxyConn,
    pub rule: SynRule,
}

/// Bytes of the worker's scratch buffer: a reject answer or the proxy's ACK to a server.
const SCRATCH: usize = if REJECT_MAX > 256 { REJECT_MAX } else { 256 };

/// What conntrack and the ruleset decided about a packet (its tracking result goes into a
/// slot the caller owns: a one-byte value comes back in a register, where the result inside
/// it went through memory and stalled the caller's match on store forwarding).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Judgement {
    /// Accepted (payload writes applied).
    Pass,
    /// Dropped (a `synproxy` statement's packets too).
    Drop,
    /// A reject was written over the packet: send it back out of the port it came in on.
    Answer,
}

/// What follows an evaluation of the ruleset (a small value, returned in a register).
#[derive(Clone, Copy, PartialEq, Eq)]
enum After {
    /// Not dropped: go on.
    Go,
    /// Dropped.
    Drop,
    /// A reject answer was written over the packet.
    Answer,
}

/// TCP flags of a TCP segment.
#[inline]
fn tcp_flags(info: &FrameInfo) -> Option<TcpFlags> {
    match &info.l3 {
        L3Info::Ipv4(ip) => ip.tcp_flags(),
        L3Info::Ipv6(ip) => ip.tcp_flags(),
        _ => None,
    }
}

/// The filter's view of the packet's flow (`ct state`, `ct mark`, …); untracked without
/// conntrack.
#[inline]
fn set_ct_meta(meta: &mut PacketMeta, tracked: Option<&CtInfo>) {
    let Some(i) = tracked else {
        // No entry: nothing of an earlier packet's flow may show through.
        meta.ct_state = FilterCtState::Untracked;
        meta.ct_status = 0;
        meta.ct_mark = 0;
        meta.ct_label = 0;
        meta.ct_direction = 0;
        meta.ct_expiration_ms = 0;
        meta.ct_zone = 0;
        return;
    };
    meta.ct_state = match i.state {
        levee_conntrack::CtState::New => FilterCtState::New,
        levee_conntrack::CtState::Established => FilterCtState::Established,
        levee_conntrack::CtState::Related => FilterCtState::Related,
        levee_conntrack::CtState::Invalid => FilterCtState::Invalid,
        levee_conntrack::CtState::Untracked => FilterCtState::Untracked,
    };
    meta.ct_status = i.status;
    meta.ct_mark = i.mark;
    meta.ct_label = i.label;
    meta.ct_direction = i.direction as u8;
    meta.ct_expiration_ms = i.expiration_ms;
    meta.ct_zone = i.zone;
}

/// The conntrack facts the ruleset sees for a tracking result (None: untracked, no entry).
#[inline]
fn ct_view(tracked: Option<&CtInfo>) -> levee_filter_vm::vm::CtView {
    let mut meta = PacketMeta::default();
    set_ct_meta(&mut meta, tracked);
    levee_filter_vm::vm::CtView::of(&meta)
}

/// After an accept: create the flow of a NEW packet (unless the ruleset said `notrack`), and
/// store the `ct mark set` / `ct label set` results. False when the shard is full.
#[inline]
fn commit_flow(ct: &mut CtShard, t: Outcome, actions: Option<&Actions>, now_ns: u64) -> bool {
    let none = Actions::default();
    let a = actions.unwrap_or(&none);
    match t {
        Outcome::New => {
            if a.notrack {
                // levee tracks before the ruleset runs, so `notrack` (the kernel's raw-table
                // statement) keeps a new flow from being created; packets of flows that exist
                // stay tracked.
                return true;
            }
            if let Some(p) = ct.pending_mut() {
                if let Some(m) = a.ct_mark {
                    p.set_mark(m);
                }
                if let Some(l) = a.ct_label {
                    p.set_label(l);
                }
            }
            ct.confirm_pending(now_ns).is_ok()
        }
        Outcome::Known { entry: id, .. } => {
            if let Some(m) = a.ct_mark {
                let _ = ct.set_mark(id, m);
            }
            if let Some(l) = a.ct_label {
                // Refused only when labels are off in the shard's config.
                let _ = ct.set_label(id, l);
            }
            true
        }
        Outcome::Ended { .. } | Outcome::Invalid(_) | Outcome::Untracked(_) => true,
    }
}

/// Stores the proxy's state in a conntrack entry and flags the entry, so that `proxied` rules
/// out every other packet without a lookup (every entry that carries proxy state is flagged).
fn attach_proxy(ct: &mut CtShard, id: EntryId, state: ProxyState) -> bool {
    match ct.ext_mut(id) {
        Ok(ext) => ext.proxy = Some(state),
        Err(_) => return false,
    }
    ct.flag(id).is_ok()
}

/// One fired `log` statement, as the control thread prints it (the kernel's nf_log line:
/// prefix, interfaces, addresses, protocol, ports).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// Index into the ruleset's log prefixes (`Program::log_prefixes`).
    pub prefix: u32,
    /// The generation whose program `prefix` indexes (0: the fixed ruleset).
    pub generation: u64,
    /// The port the packet came in on.
    pub side: Side,
    /// Its flow (None for non-IP frames).
    pub flow: Option<levee_packet::parse::FlowTuple>,
    /// Frame length.
    pub len: u16,
}

/// Log records from every worker to the control thread: bounded; when full a record is dropped
/// and counted (`logs_dropped`), the worker never waits.
pub type LogQueue = Arc<ArrayQueue<LogRecord>>;

/// The filter as one worker runs it: the compiled ruleset (shared by all workers, immutable)
/// and this worker's own state (counters, limits, quotas, meters).
///
/// With a [`GenerationReader`] the ruleset is whatever generation the control thread last
/// published: the worker picks it up once per poll ([`WorkerFilter::refresh`]), before any
/// packet of the poll is judged, so every packet is judged by exactly one generation.
pub struct WorkerFilter {
    pub compiled: Arc<Compiled>,
    /// Where new generations come from (None: `compiled` is fixed).
    reader: Option<GenerationReader>,
    /// The generation `compiled` is (0 without a reader).
    generation: u64,
    pub state: FilterState,
    /// The hooks a bridged packet passes, in order (those the ruleset uses).
    hooks: Vec<Hook>,
    /// Some base chain runs before conntrack (a `raw` chain).
    pre_conntrack: bool,
    /// Some rule reads a conntrack fact: without one the packet's ct view is not built.
    reads_ct: bool,
    /// Per-side packet metadata (interface names and indexes), updated with the clock.
    meta: [PacketMeta; 2],
    /// The last packet's actions (reused, so nothing large is copied per packet).
    actions: Actions,
    /// Where fired `log` statements go (None: only counted).
    logs: Option<LogQueue>,
    /// Outcomes of this worker's packets under the current generation, when its rules allow
    /// (see `levee_filter_vm::cache`).
    cache: VerdictCache,
}

impl WorkerFilter {
    /// A worker's instance of `compiled`; `cpu` is what `meta cpu` reports.
    pub fn new(compiled: Arc<Compiled>, cpu: u32) -> WorkerFilter {
        let hooks = hooks_of(&compiled);
        let side_meta = |side: Side| PacketMeta {
            iif: side as u32 + 1,
            iifname: side.name().into(),
            oif: side.other() as u32 + 1,
            oifname: side.other().name().into(),
            cpu,
            ..Default::default()
        };
        WorkerFilter {
            state: FilterState::new(&compiled.program),
            pre_conntrack: compiled.has_pre_conntrack(),
            reads_ct: compiled.reads_ct,
            compiled,
            reader: None,
            generation: 0,
            hooks,
            meta: [side_meta(Side::Outside), side_meta(Side::Inside)],
            actions: Actions::default(),
            logs: None,
            cache: VerdictCache::new(std::hash::BuildHasher::hash_one(
                &std::collections::hash_map::RandomState::new(),
                cpu,
            )),
        }
    }

    /// A worker's instance of the published generations (see [`WorkerFilter::refresh`]).
    pub fn from_generations(reader: GenerationReader, cpu: u32) -> WorkerFilter {
        let g = reader.current().clone();
        let mut f = WorkerFilter::new(g.compiled.clone(), cpu);
        f.generation = g.id;
        f.reader = Some(reader);
        f
    }

    /// Picks up the current generation if the control thread published a newer one (one
    /// atomic load when nothing changed); reports it seen. Returns the generation run.
    #[inline]
    pub fn refresh(&mut self) -> u64 {
        if let Some(r) = self.reader.as_mut() {
            let g = r.refresh(&mut self.state);
            if g.id != self.generation {
                self.generation = g.id;
                self.compiled = g.compiled.clone();
                self.hooks = hooks_of(&self.compiled);
                self.pre_conntrack = self.compiled.has_pre_conntrack();
                self.reads_ct = self.compiled.reads_ct;
            }
        }
        self.generation
    }

    /// The generation this worker runs (0: a fixed ruleset).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Delivers fired `log` statements to `queue` (the control thread prints them).
    pub fn with_log_queue(mut self, queue: LogQueue) -> Self {
        self.logs = Some(queue);
        self
    }

    /// The per-rule counters this worker writes (the control thread sums them).
    pub fn counters(&self) -> CounterBank {
        self.state.counters.clone()
    }
}

/// The hooks a bridged packet passes, in order: those of ingress, prerouting and forward
/// that the ruleset uses.
fn hooks_of(compiled: &Compiled) -> Vec<Hook> {
    [Hook::Ingress, Hook::Prerouting, Hook::Forward]
        .into_iter()
        .filter(|h| compiled.has_hook(*h))
        .collect()
}

/// What the control thread asks a worker for (about state only the worker may touch); the
/// worker answers between bursts, at most one request per poll.
#[derive(Debug)]
pub enum WorkerRequest {
    /// Up to `max` entries of the conntrack shard that match `filter`.
    CtDump {
        filter: levee_conntrack::DumpFilter,
        max: usize,
        reply: crossbeam_channel::Sender<Vec<levee_conntrack::EntrySnapshot>>,
    },
    /// Entries per state.
    CtCounts {
        reply: crossbeam_channel::Sender<levee_conntrack::StateCounts>,
    },
}

/// One worker: its two port queue pairs, TX buffers, hand-off rings and counters.
pub struct Worker<P: PortIo> {
    id: u16,
    ports: [P; 2],
    cfg: WorkerConfig,
    steering: Steering,
    mesh: Arc<HandoffMesh<P::Buf>>,
    rx: Vec<P::Buf>,
    tx: [Vec<P::Buf>; 2],
    drops: Vec<P::Buf>,
    handoff_rx: Vec<(u8, P::Buf)>,
    tx_since: [u64; 2],
    totals: WorkerTotals,
    stats: Arc<WorkerStats>,
    filter: Option<WorkerFilter>,
    /// This worker's conntrack shard (flows it owns: both directions steer here).
    conntrack: Option<Box<CtShard>>,
    /// This worker's SYN proxy (cookies, reply limiter, counters); needs the conntrack shard.
    proxy: Option<Box<SynProxy>>,
    /// Where a reject answer or the SYN proxy's ACK for a server is written before it is
    /// copied into a packet buffer (no allocation per packet).
    scratch: Box<[u8; SCRATCH]>,
    /// Wall clock for `meta time/hour/day`, read once per poll.
    wall_ns: u64,
    /// Monotonic ns (from `now`), computed once per poll.
    now_ns: u64,
    /// Requests from the control thread (conntrack dumps).
    requests: Option<crossbeam_channel::Receiver<WorkerRequest>>,
    /// The packets of a burst this worker owns, staged so conntrack can prepare them all
    /// (hash, then prefetch each flow's index bucket and entry) before any is tracked.
    staged: Vec<P::Buf>,
    /// Their parse results, in the same order (two vectors: a tuple of both was written and
    /// read back in pieces that stalled on store forwarding).
    staged_info: Vec<FrameInfo>,
    /// The prepared burst, and the index in it of the packet being admitted (None: not from
    /// a prepared burst, e.g. a hand-off).
    ct_burst: Box<levee_conntrack::Burst>,
    ct_hint: Option<usize>,
    /// Conntrack entries from which bursts are staged ([`STAGE_MIN_ENTRIES`]).
    stage_min: u32,
}

impl<P: PortIo> Worker<P> {
    /// Worker `id` of `steering.workers()`, polling `outside` and `inside`.
    pub fn new(
        id: u16,
        outside: P,
        inside: P,
        cfg: WorkerConfig,
        steering: Steering,
        mesh: Arc<HandoffMesh<P::Buf>>,
    ) -> Worker<P> {
        assert!(id < steering.workers(), "worker {id} of {}", steering.workers());
        assert_eq!(mesh.workers, steering.workers() as usize, "hand-off mesh size");
        let cfg = WorkerConfig {
            tx_buffer: cfg.tx_buffer.max(cfg.burst),
            ..cfg
        };
        Worker {
            id,
            ports: [outside, inside],
            cfg,
            steering,
            mesh,
            rx: Vec::with_capacity(cfg.burst),
            tx: [
                Vec::with_capacity(cfg.tx_buffer),
                Vec::with_capacity(cfg.tx_buffer),
            ],
            drops: Vec::with_capacity(cfg.burst),
            handoff_rx: Vec::with_capacity(cfg.burst),
            tx_since: [0; 2],
            totals: WorkerTotals::default(),
            stats: Arc::new(WorkerStats::default()),
            filter: None,
            conntrack: None,
            proxy: None,
            scratch: Box::new([0; SCRATCH]),
            wall_ns: 0,
            now_ns: 0,
            requests: None,
            staged: Vec::with_capacity(cfg.burst),
            staged_info: Vec::with_capacity(cfg.burst),
            ct_burst: Box::default(),
            ct_hint: None,
            stage_min: STAGE_MIN_ENTRIES,
        }
    }

    /// Stages bursts from `entries` conntrack entries on instead of [`STAGE_MIN_ENTRIES`]
    /// (tests and fuzzing use 0 to run the staged path on small tables).
    pub fn with_stage_min(mut self, entries: u32) -> Self {
        self.stage_min = entries;
        self
    }

    /// Answers `requests` from the control thread between bursts.
    pub fn with_requests(mut self, requests: crossbeam_channel::Receiver<WorkerRequest>) -> Self {
        self.requests = Some(requests);
        self
    }

    /// Tracks every IP packet this worker owns in `shard` (before the filter, which reads
    /// `ct state`, marks and labels; flows are created only for accepted packets).
    pub fn with_conntrack(mut self, shard: CtShard) -> Self {
        self.conntrack = Some(Box::new(shard));
        self
    }

    /// Answers the SYNs that a `synproxy` statement selects with cookies and proxies the
    /// connections whose cookie verified (needs conntrack: the proxy's per-connection state
    /// lives in the flow's entry).
    pub fn with_synproxy(mut self, proxy: SynProxy) -> Self {
        self.proxy = Some(Box::new(proxy));
        self
    }

    /// The conntrack shard, if any (for dumps from the worker's own thread and tests).
    pub fn conntrack(&self) -> Option<&CtShard> {
        self.conntrack.as_deref()
    }

    /// Evaluates every packet this worker owns with `filter` before forwarding it.
    pub fn with_filter(mut self, filter: WorkerFilter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// The filter this worker runs, if any.
    pub fn filter(&self) -> Option<&WorkerFilter> {
        self.filter.as_ref()
    }

    /// The counters this worker publishes.
    pub fn stats(&self) -> Arc<WorkerStats> {
        self.stats.clone()
    }

    /// Worker index.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// The worker's queue pair on one port. Tests drive a loopback device through the very
    /// queues the worker polls (sequentially, from the same thread).
    pub fn port_mut(&mut self, side: Side) -> &mut P {
        &mut self.ports[side as usize]
    }

    /// Packets waiting in the TX buffer of a port.
    pub fn tx_pending(&self, side: Side) -> usize {
        self.tx[side as usize].len()
    }

    /// One loop iteration: receive a burst on each port, dispatch, drain hand-offs, flush TX,
    /// publish counters. Returns the number of packets received (from ports and hand-offs).
    pub fn poll_once(&mut self, now: u64) -> usize {
        let mut seen = 0;
        if let Some(f) = self.filter.as_mut() {
            // Once per poll, before any packet: the whole poll is judged by one generation.
            self.totals.generation = f.refresh();
        }
        self.now_ns = now
            .checked_div(self.cfg.ticks_per_us)
            .map_or(now, |us| us.saturating_mul(1000));
        if self.filter.is_some() || self.proxy.is_some() {
            // Once per poll, not per packet (a vDSO read, no syscall).
            self.wall_ns = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            if let Some(p) = self.proxy.as_deref_mut() {
                // Cookies count wall-clock time, the same on every box of a fleet.
                p.set_now(self.wall_ns);
            }
        }
        for side in Side::BOTH {
            let s = side as usize;
            let n = self.ports[s].rx_burst(&mut self.rx, self.cfg.burst);
            if n == 0 {
                continue;
            }
            seen += n;
            self.totals.rx_packets[s] += n as u64;
            // Take the burst out so `self` can be borrowed while dispatching.
            let mut burst = std::mem::take(&mut self.rx);
            // Staging pays off once the table outgrows the caches; below that (and for a SYN
            // flood that raw chains keep out of a small table) packets are admitted directly.
            let stage = self
                .conntrack
                .as_deref()
                .is_some_and(|ct| ct.len() >= self.stage_min);
            let mut staged = std::mem::take(&mut self.staged);
            let mut staged_info = std::mem::take(&mut self.staged_info);
            for pkt in burst.drain(..) {
                self.totals.rx_bytes[s] += pkt.data().len() as u64;
                let parsed = parse_frame(pkt.data());
                match classify(&parsed, pkt.rss_hash(), &self.steering, self.id) {
                    Disposition::Mine if stage => {
                        if let Ok(info) = parsed {
                            staged.push(pkt);
                            staged_info.push(info);
                        } else {
                            // Not reached: only parsed frames are this worker's.
                            self.admit(side, pkt, None, now);
                        }
                    }
                    Disposition::Mine => self.admit(side, pkt, parsed.as_ref().ok(), now),
                    Disposition::HandOff(owner) => self.hand_off(owner, side, pkt),
                    Disposition::Drop(reason) => self.drop_pkt(reason, pkt),
                }
            }
            // Conntrack's staged lookup: every flow of the burst hashed and its bucket and
            // entry prefetched first, so the cache misses of a large table overlap.
            let prepared = match self.conntrack.as_deref() {
                Some(ct) if staged.len() > 1 => {
                    ct.prepare(
                        &mut self.ct_burst,
                        staged
                            .iter()
                            .zip(&staged_info)
                            .take(levee_conntrack::BURST_MAX)
                            .map(|(p, i)| Some((p.data(), i))),
                    );
                    staged.len().min(levee_conntrack::BURST_MAX)
                }
                _ => 0,
            };
            for (bi, (pkt, info)) in staged.drain(..).zip(&staged_info).enumerate() {
                self.ct_hint = (bi < prepared).then_some(bi);
                self.admit(side, pkt, Some(info), now);
            }
            staged_info.clear();
            self.ct_hint = None;
            self.staged = staged;
            self.staged_info = staged_info;
            self.rx = burst;
        }
        seen += self.drain_handoffs(now);
        if let Some(ct) = self.conntrack.as_deref_mut() {
            // Bounded work per iteration: never a scan of the whole table.
            ct.expire(self.now_ns, self.cfg.ct_expire_budget);
            let c = ct.counters();
            self.totals.ct_entries = ct.len() as u64;
            self.totals.ct_invalid = c.invalid;
            self.totals.ct_expired = c.expired;
            self.totals.ct_early_drops = c.early_drop;
            self.totals.ct_events_dropped = c.events_dropped;
            self.totals.ct_limit = ct.config().capacity as u64;
        }
        if let Some(p) = self.proxy.as_deref() {
            self.totals.synproxy = synproxy_counters(p.counters());
        }
        if let Some(f) = &self.filter {
            let c = f.cache.stats;
            self.totals.filter_cache = [c.hits, c.misses, c.bypassed];
        }
        if let Some(rx) = &self.requests {
            if let Ok(req) = rx.try_recv() {
                self.answer(req);
            }
        }
        for side in Side::BOTH {
            let s = side as usize;
            if !self.tx[s].is_empty() && now.wrapping_sub(self.tx_since[s]) >= self.cfg.drain_interval {
                self.flush(side);
            }
        }
        P::Buf::free_bulk(&mut self.drops);
        self.totals.polls += 1;
        self.stats.publish(&self.totals);
        seen
    }

    /// Answers one control-thread request (a closed reply channel is ignored: the asker
    /// gave up waiting).
    fn answer(&mut self, req: WorkerRequest) {
        match req {
            WorkerRequest::CtDump { filter, max, reply } => {
                let mut out = Vec::new();
                if let Some(ct) = self.conntrack.as_deref() {
                    ct.dump_batch(0, &filter, max, self.now_ns, &mut out);
                }
                let _ = reply.send(out);
            }
            WorkerRequest::CtCounts { reply } => {
                let counts = self
                    .conntrack
                    .as_deref()
                    .map(|ct| ct.state_counts())
                    .unwrap_or_default();
                let _ = reply.send(counts);
            }
        }
    }

    /// Runs `poll_once` until `stop` is set, then drains (see `finish`).
    pub fn run(&mut self, stop: &AtomicBool, clock: impl Fn() -> u64) {
        while !stop.load(Ordering::Relaxed) {
            self.poll_once(clock());
        }
        self.finish(clock());
    }

    /// Clean stop: forwards what other workers handed over, flushes the TX buffers (retrying a
    /// bounded number of times), frees whatever the devices still refuse, publishes counters.
    pub fn finish(&mut self, now: u64) {
        self.drain_handoffs(now);
        for side in Side::BOTH {
            for _ in 0..1000 {
                if self.tx[side as usize].is_empty() {
                    break;
                }
                self.flush(side);
            }
            let s = side as usize;
            let left = self.tx[s].len();
            if left > 0 {
                self.totals.drops[DropReason::TxFull as usize] += left as u64;
                P::Buf::free_bulk(&mut self.tx[s]);
            }
        }
        P::Buf::free_bulk(&mut self.drops);
        self.stats.publish(&self.totals);
    }

    /// A packet this worker owns, received on `side`: track it, run the filter, create its
    /// flow if it was accepted, forward it. Segments of connections the SYN proxy set up, and
    /// packets a `synproxy` statement took, go through the proxy.
    #[inline]
    fn admit(&mut self, side: Side, pkt: P::Buf, info: Option<&FrameInfo>, now: u64) {
        let mut pkt = pkt;
        if let (Some(_), Some(i)) = (self.proxy.as_ref(), info) {
            if let Some((id, dir, state)) = self.proxied(pkt.data(), i) {
                if dir == CtDirection::Original {
                    // Client to server: into the server's sequence space first, so conntrack
                    // and the ruleset see what the server will (Linux: seqadj before conntrack
                    // window checks).
                    pkt = match self.proxy_client(id, state, side, pkt, i, now) {
                        Some(p) => p,
                        None => return,
                    };
                } else {
                    return self.proxy_server(id, state, side, pkt, i, now);
                }
            }
        }
        let mut tracked = None;
        let verdict = match self.judge(side, &mut pkt, info, &mut tracked) {
            Judgement::Pass => Verdict::Accept,
            Judgement::Drop => Verdict::Drop,
            Judgement::Answer => {
                // A reject written over the packet: back out of the port it came in on.
                self.enqueue_tx(side, pkt, now);
                return;
            }
        };
        if verdict == Verdict::Drop {
            let syn = self.filter.as_ref().and_then(|f| f.actions.synproxy);
            match (syn, info) {
                (Some(rule), Some(i)) if self.proxy.is_some() => self.proxy_open(rule, side, pkt, i, now),
                _ => self.drop_pkt(DropReason::Filter, pkt),
            }
            return;
        }
        if let (Some(ct), Some(t)) = (self.conntrack.as_deref_mut(), tracked) {
            let actions = self.filter.as_ref().map(|f| &f.actions);
            if !commit_flow(ct, t, actions, self.now_ns) {
                self.drop_pkt(DropReason::ConntrackFull, pkt);
                return;
            }
            if t == Outcome::New {
                self.totals.ct_confirmed += 1;
            }
        }
        self.enqueue_tx(side.other(), pkt, now);
    }

    /// Conntrack, then the ruleset: the verdict (payload writes applied to an accepted
    /// frame), or a reject written over the packet; the flow's tracking result goes into
    /// `tracked` (None when the packet was not tracked). As in the
    /// kernel, chains that hook before conntrack (ingress, prerouting below priority -200:
    /// `raw`) run first; a packet they drop or `notrack` is never looked up in the table
    /// (a SYN flood that a raw chain notracks costs no conntrack work at all).
    #[inline]
    fn judge(
        &mut self,
        side: Side,
        pkt: &mut P::Buf,
        info: Option<&FrameInfo>,
        tracked: &mut Option<Outcome>,
    ) -> Judgement {
        let now_ns = self.now_ns;
        let staged = self.conntrack.is_some() && self.filter.as_ref().is_some_and(|f| f.pre_conntrack);
        if staged {
            if let Some(f) = self.filter.as_mut() {
                let meta = &mut f.meta[side as usize];
                meta.now_ns = now_ns;
                meta.wall_ns = self.wall_ns;
                // No entry yet: `ct state` reads invalid here, as in the kernel's raw table.
                set_ct_meta(meta, None);
                meta.ct_state = FilterCtState::Invalid;
                // Raw chains, conntrack (the kernel's hooks at priority -200: existing flows
                // updated now, a new one only pending; nothing for a `notrack`ed packet), the
                // rest of the ruleset: one pass of the interpreter.
                let (ct, burst, hint) = (&mut self.conntrack, &self.ct_burst, self.ct_hint);
                let reads_ct = f.reads_ct;
                let frame = pkt.data();
                let verdict = f.compiled.evaluate_cached_into(
                    &mut f.cache,
                    side as u8,
                    &mut f.state,
                    &f.hooks,
                    frame,
                    info,
                    meta,
                    &mut f.actions,
                    Some(|actions: &Actions| {
                        if actions.notrack {
                            // Untracked (the evaluation marks it so), no entry: nothing to add
                            // to what the chains before saw.
                            return None;
                        }
                        let (Some(ct), Some(info)) = (ct.as_deref_mut(), info) else {
                            return Some(ct_view(None));
                        };
                        let o = match hint {
                            Some(bi) => ct.classify_prepared(burst, bi, frame, info, now_ns),
                            None => ct.classify(frame, info, now_ns),
                        };
                        *tracked = Some(o);
                        Some(ct_view(reads_ct.then(|| ct.info(o, now_ns)).as_ref()))
                    }),
                );
                return self.after_judging(verdict, side, pkt, info);
            }
        }
        // Conntrack (the kernel's hooks at priority -200): existing flows are updated now, a
        // new one is only pending.
        if let (Some(ct), Some(info)) = (self.conntrack.as_deref_mut(), info) {
            *tracked = Some(match self.ct_hint {
                Some(bi) => ct.classify_prepared(&self.ct_burst, bi, pkt.data(), info, now_ns),
                None => ct.classify(pkt.data(), info, now_ns),
            });
        }
        let Some(f) = self.filter.as_mut() else {
            return Judgement::Pass;
        };
        let meta = &mut f.meta[side as usize];
        meta.now_ns = now_ns;
        meta.wall_ns = self.wall_ns;
        let ct_info = match (self.conntrack.as_deref(), *tracked) {
            (Some(ct), Some(o)) if f.reads_ct => Some(ct.info(o, now_ns)),
            _ => None,
        };
        set_ct_meta(meta, ct_info.as_ref());
        // The table's facts are in `meta` now: the outcome cache keys on those the rules read.
        let verdict = f.compiled.evaluate_cached_into(
            &mut f.cache,
            side as u8,
            &mut f.state,
            &f.hooks,
            pkt.data(),
            info,
            meta,
            &mut f.actions,
            None::<fn(&Actions) -> Option<levee_filter_vm::vm::CtView>>,
        );
        self.after_judging(verdict, side, pkt, info)
    }

    /// The judgement of a packet the ruleset gave `verdict` (payload writes applied to an
    /// accepted frame).
    #[inline(always)]
    fn after_judging(
        &mut self,
        verdict: Verdict,
        side: Side,
        pkt: &mut P::Buf,
        info: Option<&FrameInfo>,
    ) -> Judgement {
        match self.after_filter(verdict, side, pkt, info) {
            After::Go => {}
            After::Drop => return Judgement::Drop,
            After::Answer => return Judgement::Answer,
        }
        if let Some(f) = self.filter.as_ref().filter(|f| !f.state.writes.is_empty()) {
            // `… set …` statements: rewrite the frame, checksums fixed incrementally.
            levee_filter_vm::rewrite::apply_writes(pkt.data_mut(), &f.state.writes, info);
        }
        self.totals.filter_accepted += 1;
        Judgement::Pass
    }

    /// After a stage of the ruleset: delivers fired `log` statements, and for a drop its
    /// outcome (a reject answer written over the packet, or a drop), or go on.
    #[inline(always)]
    fn after_filter(
        &mut self,
        verdict: Verdict,
        side: Side,
        pkt: &mut P::Buf,
        info: Option<&FrameInfo>,
    ) -> After {
        let Some(f) = self.filter.as_mut() else {
            return After::Go;
        };
        if !f.state.log_events.is_empty() {
            self.totals.logs += f.state.log_events.len() as u64;
            if let Some(q) = &f.logs {
                let flow = info.and_then(FrameInfo::flow_tuple);
                for &prefix in &f.state.log_events {
                    let rec = LogRecord {
                        prefix,
                        generation: f.generation,
                        side,
                        flow,
                        len: pkt.data().len().min(u16::MAX as usize) as u16,
                    };
                    if q.push(rec).is_err() {
                        self.totals.logs_dropped += 1;
                    }
                }
            }
            f.state.log_events.clear();
        }
        if verdict != Verdict::Drop {
            return After::Go;
        }
        // A dropped packet never creates a flow (its pending entry is discarded). A reject
        // answers from the same buffer, back out of the port it came in on.
        let answer = f
            .actions
            .reject
            .and_then(|k| build_reject_into(pkt.data(), k, &mut self.scratch[..]));
        if let Some(n) = answer {
            if pkt.set_data(&self.scratch[..n]) {
                self.totals.drops[DropReason::Filter as usize] += 1;
                self.totals.rejects += 1;
                return After::Answer;
            }
        }
        After::Drop
    }

    /// The proxy state of the segment's connection, if the SYN proxy set it up: (entry,
    /// direction of the segment, state).
    #[inline]
    fn proxied(&self, frame: &[u8], info: &FrameInfo) -> Option<(EntryId, CtDirection, ProxyState)> {
        tcp_flags(info)?;
        let ct = self.conntrack.as_deref()?;
        // Most packets (a SYN flood's, other flows') are ruled out here, before any SipHash.
        if !ct.may_be_flagged(frame, info) {
            return None;
        }
        let (id, dir) = match self.ct_hint {
            Some(bi) => ct.lookup_prepared(&self.ct_burst, bi, frame, info, self.now_ns)?,
            None => ct.lookup_tuple(&info.flow_tuple()?, self.now_ns)?,
        };
        let state = ct.ext(id).ok()?.proxy?;
        Some((id, dir, state))
    }

    /// A client segment on a proxied connection: translated in place (returned, to be tracked,
    /// filtered and forwarded like any packet), or answered / turned into a SYN for the server
    /// by the proxy (sent here; None returned).
    fn proxy_client(
        &mut self,
        id: EntryId,
        mut state: ProxyState,
        side: Side,
        mut pkt: P::Buf,
        info: &FrameInfo,
        now: u64,
    ) -> Option<P::Buf> {
        let (Some(proxy), Some(ct)) = (self.proxy.as_deref_mut(), self.conntrack.as_deref_mut()) else {
            return None;
        };
        let len = pkt.data().len();
        let v = proxy.client_segment(&mut state.conn, pkt.room_mut(), len, info, &state.rule);
        if let Ok(ext) = ct.ext_mut(id) {
            ext.proxy = Some(state);
        }
        match v {
            ClientVerdict::Forward => {
                pkt.set_len(len);
                Some(pkt)
            }
            ClientVerdict::SendSyn { len } => {
                // The client's ACK again while the server has not answered: the SYN again; or a
                // reopened tuple's valid cookie: a new SYN, which conntrack must see (it opens
                // the new flow, replacing a TIME_WAIT entry) and which carries the new state.
                pkt.set_len(len);
                if let Ok(syn_info) = parse_frame(pkt.data()) {
                    let now_ns = self.now_ns;
                    let id2 = match ct.classify(pkt.data(), &syn_info, now_ns) {
                        Outcome::New => ct.confirm_pending(now_ns).ok(),
                        o => o.entry(),
                    };
                    if let Some(id2) = id2 {
                        attach_proxy(ct, id2, state);
                    }
                }
                self.enqueue_tx(side.other(), pkt, now);
                None
            }
            ClientVerdict::Reply { len } => {
                pkt.set_len(len);
                self.enqueue_tx(side, pkt, now);
                None
            }
            ClientVerdict::Drop(_) => {
                pkt.set_len(len);
                self.drop_pkt(DropReason::Synproxy, pkt);
                None
            }
        }
    }

    /// A server segment on a proxied connection: tracked and filtered as it arrived (server
    /// sequence space), then translated for the client. The server's SYN-ACK completes the
    /// handshake: the window update goes to the client, the ACK back to the server.
    fn proxy_server(
        &mut self,
        id: EntryId,
        mut state: ProxyState,
        side: Side,
        pkt: P::Buf,
        info: &FrameInfo,
        now: u64,
    ) {
        let mut pkt = pkt;
        let mut tracked = None;
        match self.judge(side, &mut pkt, Some(info), &mut tracked) {
            Judgement::Pass => {}
            Judgement::Drop => return self.drop_pkt(DropReason::Filter, pkt),
            Judgement::Answer => return self.enqueue_tx(side, pkt, now),
        }
        let (Some(proxy), Some(ct)) = (self.proxy.as_deref_mut(), self.conntrack.as_deref_mut()) else {
            return self.drop_pkt(DropReason::Synproxy, pkt);
        };
        if let Some(t) = tracked {
            // Marks and labels the ruleset set on the reply.
            commit_flow(ct, t, self.filter.as_ref().map(|f| &f.actions), self.now_ns);
        }
        let len = pkt.data().len();
        let v = proxy.server_segment(&mut state.conn, pkt.room_mut(), len, info, &mut self.scratch[..]);
        if let Ok(ext) = ct.ext_mut(id) {
            ext.proxy = Some(state);
        }
        match v {
            ServerVerdict::Forward => {
                pkt.set_len(len);
                self.enqueue_tx(side.other(), pkt, now);
            }
            ServerVerdict::Established {
                to_client,
                to_server_len,
            } => {
                pkt.set_len(to_client);
                let ack = &self.scratch[..to_server_len];
                // Conntrack sees the ACK the server gets, as Linux's output path would.
                if let Ok(ack_info) = parse_frame(ack) {
                    let _ = ct.track(ack, &ack_info, self.now_ns);
                }
                match self.ports[side as usize].alloc(ack) {
                    Some(a) => self.enqueue_tx(side, a, now),
                    None => self.totals.drops[DropReason::TxFull as usize] += 1,
                }
                self.enqueue_tx(side.other(), pkt, now);
            }
            ServerVerdict::Drop(_) => {
                pkt.set_len(len);
                self.drop_pkt(DropReason::Synproxy, pkt);
            }
        }
    }

    /// A packet a `synproxy` statement took (its flow has no proxied connection): a client SYN
    /// is answered with a cookie SYN-ACK out of the port it came in on; a client ACK whose
    /// cookie verifies becomes the SYN to the server and opens the connection's entry.
    fn proxy_open(
        &mut self,
        rule: (u16, u8, bool, bool),
        side: Side,
        pkt: P::Buf,
        info: &FrameInfo,
        now: u64,
    ) {
        let mut pkt = pkt;
        let rule = SynRule {
            mss: rule.0,
            // nft: no `wscale` means none is offered (compiled as 0).
            wscale: (rule.1 > 0).then_some(rule.1),
            timestamps: rule.2,
            sack_perm: rule.3,
        };
        let (Some(proxy), Some(ct)) = (self.proxy.as_deref_mut(), self.conntrack.as_deref_mut()) else {
            return self.drop_pkt(DropReason::Filter, pkt);
        };
        let flags = tcp_flags(info).unwrap_or_default();
        let len = pkt.data().len();
        if flags.contains(TcpFlags::SYN) && !flags.contains(TcpFlags::ACK) {
            match proxy.answer_syn(pkt.room_mut(), len, info, &rule) {
                SynVerdict::Reply { len } => {
                    pkt.set_len(len);
                    self.enqueue_tx(side, pkt, now);
                }
                SynVerdict::Drop(_) => {
                    pkt.set_len(len);
                    self.drop_pkt(DropReason::Synproxy, pkt);
                }
            }
            return;
        }
        match proxy.client_ack(pkt.room_mut(), len, info, &rule) {
            AckVerdict::Open { conn, len } => {
                pkt.set_len(len);
                // The SYN for the server opens the flow in conntrack, as Linux's SYN from the
                // output path does; the proxy's state rides in the entry.
                let opened = match parse_frame(pkt.data()) {
                    Ok(syn_info) => match ct.classify(pkt.data(), &syn_info, self.now_ns) {
                        Outcome::New => ct.confirm_pending(self.now_ns).ok(),
                        o => o.entry(),
                    },
                    Err(_) => None,
                };
                if !opened.is_some_and(|id| attach_proxy(ct, id, ProxyState { conn, rule })) {
                    return self.drop_pkt(DropReason::ConntrackFull, pkt);
                }
                self.totals.ct_confirmed += 1;
                self.enqueue_tx(side.other(), pkt, now);
            }
            AckVerdict::Drop(_) => {
                pkt.set_len(len);
                self.drop_pkt(DropReason::Synproxy, pkt);
            }
        }
    }

    #[inline(always)]
    fn enqueue_tx(&mut self, side: Side, pkt: P::Buf, now: u64) {
        let s = side as usize;
        if self.tx[s].is_empty() {
            self.tx_since[s] = now;
        }
        if self.tx[s].len() >= self.cfg.tx_buffer {
            self.flush(side);
            if self.tx[s].len() >= self.cfg.tx_buffer {
                // The device keeps refusing: drop the new packet, keep the older ones in order.
                self.drop_pkt(DropReason::TxFull, pkt);
                return;
            }
        }
        self.tx[s].push(pkt);
        if self.tx[s].len() >= self.cfg.burst {
            self.flush(side);
        }
    }

    #[inline]
    fn flush(&mut self, side: Side) {
        let s = side as usize;
        // Count bytes before the queue takes the buffers.
        let before = self.tx[s].len();
        let bytes_total: u64 = self.tx[s].iter().map(|p| p.data().len() as u64).sum();
        let sent = self.ports[s].tx_burst(&mut self.tx[s]);
        if sent > 0 {
            let bytes_left: u64 = self.tx[s].iter().map(|p| p.data().len() as u64).sum();
            self.totals.tx_packets[s] += sent as u64;
            self.totals.tx_bytes[s] += bytes_total - bytes_left;
        }
        debug_assert_eq!(before - sent, self.tx[s].len());
    }

    #[inline]
    fn hand_off(&mut self, owner: u16, side: Side, pkt: P::Buf) {
        match self
            .mesh
            .ring(self.id as usize, owner as usize)
            .push((side as u8, pkt))
        {
            Ok(()) => self.totals.handoffs_out += 1,
            Err((_, pkt)) => self.drop_pkt(DropReason::HandoffFull, pkt),
        }
    }

    #[inline]
    fn drop_pkt(&mut self, reason: DropReason, pkt: P::Buf) {
        self.totals.drops[reason as usize] += 1;
        self.drops.push(pkt);
        if self.drops.len() >= self.cfg.burst {
            P::Buf::free_bulk(&mut self.drops);
        }
    }

    /// Forwards packets other workers handed over (at most one burst per ring per call).
    fn drain_handoffs(&mut self, now: u64) -> usize {
        let n = self.steering.workers() as usize;
        if n == 1 {
            return 0;
        }
        let mut got = 0;
        for from in 0..n {
            if from == self.id as usize {
                continue;
            }
            // Pop into a reused buffer first: the ring borrows `self.mesh` while forwarding
            // needs `&mut self`.
            let ring = self.mesh.ring(from, self.id as usize);
            while self.handoff_rx.len() < self.cfg.burst {
                match ring.pop() {
                    Some(item) => self.handoff_rx.push(item),
                    None => break,
                }
            }
            got += self.handoff_rx.len();
            let mut items = std::mem::take(&mut self.handoff_rx);
            for (side, pkt) in items.drain(..) {
                // Parsed again here: the sender's parse result is not carried in the ring.
                let info = parse_frame(pkt.data()).ok();
                self.admit(Side::from_index(side), pkt, info.as_ref(), now);
            }
            self.handoff_rx = items;
        }
        self.totals.handoffs_in += got as u64;
        got
    }
}

#[cfg(test)]
mod tests {
    //! The loop over the in-memory port: dispositions, counters, hand-off back-pressure. The
    //! same loop on real DPDK devices is tested in `tests/eal.rs`.
    use super::*;
    use crate::io::{MemPacket, MemPort};

    fn ipv4_tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> MemPacket {
        let mut f = vec![0u8; 60];
        f[12] = 0x08;
        f[14] = 0x45;
        f[16..18].copy_from_slice(&40u16.to_be_bytes());
        f[22] = 64;
        f[23] = 6;
        f[26..30].copy_from_slice(&src);
        f[30..34].copy_from_slice(&dst);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f[46] = 0x50;
        f[47] = 0x02;
        MemPacket(f)
    }

    fn arp() -> MemPacket {
        let mut f = vec![0xffu8; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
        f.extend_from_slice(&[
            0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 198, 18, 0, 1, 0, 0, 0, 0, 0, 0, 198, 18, 0, 2,
        ]);
        f.resize(60, 0);
        MemPacket(f)
    }

    fn worker(id: u16, n: u16, mesh: &Arc<HandoffMesh<MemPacket>>, cfg: WorkerConfig) -> Worker<MemPort> {
        Worker::new(
            id,
            MemPort::new(1024, 1024),
            MemPort::new(1024, 1024),
            cfg,
            Steering::new(n, 128),
            mesh.clone(),
        )
    }

    fn out(w: &mut Worker<MemPort>, side: Side) -> Vec<MemPacket> {
        std::iter::from_fn(|| w.port_mut(side).wire_out.pop()).collect()
    }

    #[test]
    fn ip_arp_and_tagged_frames_cross_malformed_ip_is_dropped() {
        let mesh = HandoffMesh::new(1, 16);
        let mut w = worker(0, 1, &mesh, WorkerConfig::default());
        let good = ipv4_tcp([198, 18, 0, 1], [198, 18, 0, 2], 1234, 80);
        let mut tagged = good.0.clone();
        tagged.splice(12..12, [0x81, 0x00, 0x20, 0x64]); // 802.1Q, priority 1, VLAN 100
        let mut bad = good.0.clone();
        bad[14] = 0x43; // IHL 3: not a valid IPv4 header
        let inject = &w.port_mut(Side::Outside).wire_in;
        for p in [good.clone(), arp(), MemPacket(tagged.clone()), MemPacket(bad)] {
            inject.push(p).unwrap();
        }
        w.poll_once(0);
        assert_eq!(out(&mut w, Side::Inside), vec![good, arp(), MemPacket(tagged)]);
        assert!(out(&mut w, Side::Outside).is_empty());
        let t = w.stats().totals();
        assert_eq!(t.rx_packets, [4, 0]);
        assert_eq!(t.tx_packets, [0, 3]);
        assert_eq!(t.drops[DropReason::Malformed as usize], 1);
    }

    /// A TCP segment with `flags`, sequence and acknowledgement numbers.
    fn tcp_seg(
        src: [u8; 4],
        dst: [u8; 4],
        sport: u16,
        dport: u16,
        flags: u8,
        seq: u32,
        ack: u32,
    ) -> MemPacket {
        let mut p = ipv4_tcp(src, dst, sport, dport);
        p.0[38..42].copy_from_slice(&seq.to_be_bytes());
        p.0[42..46].copy_from_slice(&ack.to_be_bytes());
        p.0[47] = flags;
        p.0[48..50].copy_from_slice(&64240u16.to_be_bytes());
        p
    }

    /// The shard as the dataplane runs it (with the SYN proxy's per-connection state as its
    /// extension) stays within 128 bytes per flow: the state lives outside the entries, so
    /// flows the proxy did not open do not pay for it.
    #[test]
    fn the_dataplane_shard_stays_within_128_bytes_per_flow() {
        let capacity = 1u32 << 20;
        let cfg = levee_conntrack::ShardConfig {
            capacity,
            ..Default::default()
        };
        let sh = CtShard::new(cfg, levee_conntrack::HashKey([1, 2])).unwrap();
        let per_flow = sh.memory_bytes() as f64 / f64::from(capacity);
        assert!(per_flow <= 128.0, "{per_flow:.1} bytes per flow");
        assert!(
            core::mem::size_of::<ConnExt>() > 16,
            "the extension this is about"
        );
    }

    #[test]
    fn conntrack_feeds_ct_state_and_only_accepted_packets_create_flows() {
        // A stateful edge: replies of flows the outside opened to port 80 come back as
        // established; new flows to other ports are refused and leave nothing behind.
        let text = "table inet t {\n chain c {\n  type filter hook prerouting priority 0; policy drop;\n\
                    ct state established ct mark 7 counter accept\n\
                    ct state new tcp dport 80 ct mark set 7 accept\n }\n}\n";
        let compiled = Arc::new(levee_filter_vm::compile_ruleset(text).unwrap().compiled);
        let mesh = HandoffMesh::new(1, 16);
        // Room for one flow only, to see a full shard refuse a new one.
        let cfg = levee_conntrack::ShardConfig {
            capacity: 1,
            ..Default::default()
        };
        let shard = CtShard::new(cfg, levee_conntrack::HashKey([1, 2])).unwrap();
        let mut w = worker(0, 1, &mesh, WorkerConfig::default())
            .with_filter(WorkerFilter::new(compiled, 0))
            .with_conntrack(shard);
        let (client, server) = ([198, 18, 0, 1], [198, 19, 0, 2]);
        const SYN: u8 = 0x02;
        const SYNACK: u8 = 0x12;
        const ACK: u8 = 0x10;
        let send = |w: &mut Worker<MemPort>, side: Side, p: MemPacket, now: u64| {
            w.port_mut(side).wire_in.push(p).unwrap();
            w.poll_once(now);
        };
        // Refused: a SYN to port 22 is dropped and creates no entry.
        send(
            &mut w,
            Side::Outside,
            tcp_seg(client, server, 40000, 22, SYN, 100, 0),
            1_000,
        );
        assert!(out(&mut w, Side::Inside).is_empty());
        assert_eq!(w.conntrack().unwrap().len(), 0, "a dropped packet opened a flow");
        // Accepted: the handshake to port 80 passes both ways.
        send(
            &mut w,
            Side::Outside,
            tcp_seg(client, server, 40001, 80, SYN, 1000, 0),
            2_000,
        );
        assert_eq!(out(&mut w, Side::Inside).len(), 1);
        assert_eq!(w.conntrack().unwrap().len(), 1);
        send(
            &mut w,
            Side::Inside,
            tcp_seg(server, client, 80, 40001, SYNACK, 5000, 1001),
            3_000,
        );
        assert_eq!(out(&mut w, Side::Outside).len(), 1, "the reply is established");
        send(
            &mut w,
            Side::Outside,
            tcp_seg(client, server, 40001, 80, ACK, 1001, 5001),
            4_000,
        );
        assert_eq!(out(&mut w, Side::Inside).len(), 1);
        // A segment from the server that belongs to no flow is new, not established: dropped.
        send(
            &mut w,
            Side::Inside,
            tcp_seg(server, client, 80, 40002, SYNACK, 9000, 1),
            5_000,
        );
        assert!(out(&mut w, Side::Outside).is_empty());
        let f = w.filter().unwrap();
        let counted: u64 = f
            .compiled
            .rule_counter_totals(&[&f.counters()])
            .iter()
            .map(|c| c.3)
            .sum();
        assert_eq!(
            counted, 2,
            "the mark set on the SYN is read back on later packets"
        );
        let t = w.stats().totals();
        assert_eq!(t.ct_entries, 1);
        assert_eq!(t.ct_confirmed, 1);
        assert_eq!(t.drops[DropReason::Filter as usize], 2);
        // The shard is full of an assured flow, which is never evicted: a new accepted flow is
        // dropped and counted, as the kernel's "table full, dropping packet".
        send(
            &mut w,
            Side::Outside,
            tcp_seg(client, server, 40003, 80, SYN, 7000, 0),
            6_000,
        );
        assert!(out(&mut w, Side::Inside).is_empty());
        assert_eq!(w.stats().totals().drops[DropReason::ConntrackFull as usize], 1);
    }

    #[test]
    fn a_partial_burst_waits_for_the_drain_interval() {
        let mesh = HandoffMesh::new(1, 16);
        let cfg = WorkerConfig {
            burst: 32,
            tx_buffer: 64,
            drain_interval: 100,
            ticks_per_us: 0,
            ct_expire_budget: 64,
        };
        let mut w = worker(0, 1, &mesh, cfg);
        w.port_mut(Side::Inside)
            .wire_in
            .push(ipv4_tcp([198, 18, 0, 2], [198, 18, 0, 1], 80, 1234))
            .unwrap();
        w.poll_once(1000);
        assert_eq!(w.tx_pending(Side::Outside), 1);
        w.poll_once(1050);
        assert_eq!(w.tx_pending(Side::Outside), 1, "held until the interval passes");
        w.poll_once(1100);
        assert_eq!(w.tx_pending(Side::Outside), 0);
        assert_eq!(out(&mut w, Side::Outside).len(), 1);
    }

    #[test]
    fn full_handoff_ring_drops_and_counts() {
        let mesh = HandoffMesh::new(2, 4);
        let cfg = WorkerConfig::default();
        let mut w0 = worker(0, 2, &mesh, cfg);
        let steering = Steering::new(2, 128);
        // Flows owned by worker 1, all arriving at worker 0.
        let flows: Vec<MemPacket> = (0..200u16)
            .map(|p| ipv4_tcp([198, 18, 0, 1], [198, 18, 0, 2], 1000 + p, 80))
            .filter(|p| {
                let info = parse_frame(&p.0).unwrap();
                steering.owner(steering_hash(&info).unwrap()) == 1
            })
            .take(10)
            .collect();
        assert_eq!(flows.len(), 10);
        for f in flows {
            w0.port_mut(Side::Outside).wire_in.push(f).unwrap();
        }
        w0.poll_once(0);
        let t = w0.stats().totals();
        assert_eq!(t.handoffs_out, 4, "the ring holds 4");
        assert_eq!(t.drops[DropReason::HandoffFull as usize], 6);
        assert_eq!(t.tx_packets, [0, 0]);
    }

    #[test]
    fn the_filter_drops_accepts_and_answers_rejects_out_of_the_incoming_port() {
        let text = "table inet t {\n chain c {\n  type filter hook forward priority 0; policy accept;\n  tcp dport 22 reject with tcp reset\n  tcp dport 23 drop\n  tcp dport 80 log prefix \"web: \"\n }\n}\n";
        let compiled = Arc::new(levee_filter_vm::compile_ruleset(text).unwrap().compiled);
        let mesh = HandoffMesh::new(1, 16);
        let mut w = worker(0, 1, &mesh, WorkerConfig::default()).with_filter(WorkerFilter::new(compiled, 0));
        let mut syn22 = ipv4_tcp([198, 18, 0, 1], [198, 18, 0, 2], 40000, 22);
        // A valid IPv4 header checksum, so the reply's quote is realistic.
        syn22.0[24..26].copy_from_slice(&[0, 0]);
        let sum = levee_packet::checksum::checksum(&syn22.0[14..34]);
        syn22.0[24..26].copy_from_slice(&sum.to_be_bytes());
        let inject = &w.port_mut(Side::Outside).wire_in;
        inject.push(syn22).unwrap();
        inject
            .push(ipv4_tcp([198, 18, 0, 1], [198, 18, 0, 2], 40000, 23))
            .unwrap();
        inject
            .push(ipv4_tcp([198, 18, 0, 1], [198, 18, 0, 2], 40000, 80))
            .unwrap();
        w.poll_once(0);
        let forwarded = out(&mut w, Side::Inside);
        assert_eq!(forwarded.len(), 1, "only port 80 reaches the server");
        let back = out(&mut w, Side::Outside);
        assert_eq!(back.len(), 1, "the RST goes back to the client");
        let rst = &back[0].0;
        assert_eq!(
            &rst[26..30],
            &[198, 18, 0, 2],
            "answered from the server's address"
        );
        assert_eq!(u16::from_be_bytes([rst[34], rst[35]]), 22);
        assert_eq!(rst[47] & 0x04, 0x04, "RST set");
        let t = w.stats().totals();
        assert_eq!(t.drops[DropReason::Filter as usize], 2);
        assert_eq!(t.rejects, 1);
        assert_eq!(t.logs, 1, "the log rule fired for the port-80 packet");
    }
}

#[cfg(test)]
mod proxy_tests {
    //! The SYN proxy through the whole worker (ruleset, conntrack, proxy, translation) on the
    //! in-memory port, with a scripted client and server: the handshake, data both ways and
    //! the close, for any client and server ISN (wrap-arounds and the 2^31 boundary
    //! included), with and without timestamps.
    use super::*;
    use crate::io::{MemPacket, MemPort};
    use proptest::prelude::*;

    /// The lab's ruleset (src/lab.rs `SYNPROXY_RULESET`), IPv4 part.
    const RULESET: &str = "table inet lab {
\tchain raw {
\t\ttype filter hook prerouting priority raw; policy accept;
\t\tiifname \"outside\" tcp flags & (syn | ack) == syn notrack
\t}
\tchain pre {
\t\ttype filter hook prerouting priority filter; policy accept;
\t\tiifname \"outside\" ip daddr 198.18.0.2 tcp dport { 8080, 5201 } ct state invalid,untracked synproxy mss 1460 wscale 7 timestamp sack-perm
\t\tct state invalid drop
\t\tiifname \"outside\" tcp flags & (syn | ack) == syn drop
\t}
}
";
    const CLIENT: [u8; 4] = [198, 18, 1, 2];
    const SERVER: [u8; 4] = [198, 18, 0, 2];
    const CPORT: u16 = 40000;
    const SPORT: u16 = 8080;
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    const PSH_ACK: u8 = 0x18;
    const FIN_ACK: u8 = 0x11;

    /// An Ethernet + IPv4 + TCP frame with correct checksums.
    #[allow(clippy::too_many_arguments)]
    fn seg(
        from_client: bool,
        flags: u8,
        seq: u32,
        ack: u32,
        win: u16,
        opts: &[u8],
        payload: &[u8],
    ) -> MemPacket {
        let (src, dst, sport, dport) = if from_client {
            (CLIENT, SERVER, CPORT, SPORT)
        } else {
            (SERVER, CLIENT, SPORT, CPORT)
        };
        assert_eq!(opts.len() % 4, 0);
        let tcp_len = 20 + opts.len() + payload.len();
        let mut f = vec![0u8; 14 + 20 + tcp_len];
        f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12] = 0x08;
        f[14] = 0x45;
        f[16..18].copy_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
        f[20] = 0x40; // DF
        f[22] = 64;
        f[23] = 6;
        f[26..30].copy_from_slice(&src);
        f[30..34].copy_from_slice(&dst);
        let sum = levee_packet::checksum::checksum(&f[14..34]);
        f[24..26].copy_from_slice(&sum.to_be_bytes());
        let t = &mut f[34..];
        t[0..2].copy_from_slice(&sport.to_be_bytes());
        t[2..4].copy_from_slice(&dport.to_be_bytes());
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[8..12].copy_from_slice(&ack.to_be_bytes());
        t[12] = ((5 + opts.len() / 4) as u8) << 4;
        t[13] = flags;
        t[14..16].copy_from_slice(&win.to_be_bytes());
        t[20..20 + opts.len()].copy_from_slice(opts);
        t[20 + opts.len()..].copy_from_slice(payload);
        let ph = levee_packet::checksum::pseudo_header_v4(src.into(), dst.into(), 6, tcp_len as u16);
        let body = levee_packet::checksum::sum(&f[34..]);
        let c = !levee_packet::checksum::add(ph, body);
        f[50..52].copy_from_slice(&c.to_be_bytes());
        MemPacket(f)
    }

    /// A frame's TCP fields: (flags, seq, ack, tsval, tsecr, payload length).
    fn fields(p: &MemPacket) -> (u8, u32, u32, Option<(u32, u32)>, usize) {
        let f = &p.0;
        assert_eq!(f[14] & 0x0f, 5, "no IP options expected");
        let ip_len = u16::from_be_bytes([f[16], f[17]]) as usize;
        let t = &f[34..14 + ip_len];
        let doff = (t[12] >> 4) as usize * 4;
        let u32at = |i: usize| u32::from_be_bytes([t[i], t[i + 1], t[i + 2], t[i + 3]]);
        let mut ts = None;
        let mut i = 20;
        while i < doff {
            match t[i] {
                0 => break,
                1 => i += 1,
                8 => {
                    ts = Some((u32at(i + 2), u32at(i + 6)));
                    i += 10;
                }
                _ => i += t[i + 1].max(2) as usize,
            }
        }
        // Checksums of what the worker sends are right.
        let ph = levee_packet::checksum::pseudo_header_v4(
            [f[26], f[27], f[28], f[29]].into(),
            [f[30], f[31], f[32], f[33]].into(),
            6,
            t.len() as u16,
        );
        assert_eq!(
            levee_packet::checksum::add(ph, levee_packet::checksum::sum(t)),
            0xffff,
            "TCP checksum"
        );
        (t[13], u32at(4), u32at(8), ts, t.len() - doff)
    }

    fn ts_opt(val: u32, ecr: u32) -> Vec<u8> {
        let mut o = vec![1, 1, 8, 10];
        o.extend_from_slice(&val.to_be_bytes());
        o.extend_from_slice(&ecr.to_be_bytes());
        o
    }

    fn drain(w: &mut Worker<MemPort>, side: Side) -> Vec<MemPacket> {
        std::iter::from_fn(|| w.port_mut(side).wire_out.pop()).collect()
    }

    /// Runs one proxied connection; returns an error string at the first surprise.
    fn proxy_worker() -> Worker<MemPort> {
        let compiled = Arc::new(levee_filter_vm::compile_ruleset(RULESET).unwrap().compiled);
        let shard = CtShard::new(
            levee_conntrack::ShardConfig {
                capacity: 64,
                loose: false,
                ..Default::default()
            },
            levee_conntrack::HashKey([3, 4]),
        )
        .unwrap();
        let proxy = SynProxy::new(
            levee_synproxy::Config::default(),
            &levee_synproxy::MasterSecret::from_bytes([9; 16]),
        )
        .unwrap();
        let mesh = HandoffMesh::new(1, 16);
        Worker::new(
            0,
            MemPort::new(64, 64),
            MemPort::new(64, 64),
            WorkerConfig::default(),
            Steering::new(1, 128),
            mesh,
        )
        .with_filter(WorkerFilter::new(compiled, 0))
        .with_conntrack(shard)
        .with_synproxy(proxy)
    }

    /// A SYN flood from many client ports: every SYN answered, all but the first from the
    /// outcome cache (the ruleset only matches and decides); the ACK of a real client is
    /// still tracked and proxied (never answered from the cache).
    #[test]
    fn a_syn_flood_is_judged_from_the_outcome_cache() {
        let mut w = proxy_worker();
        let n = 40u16;
        for i in 0..n {
            let mut f = seg(true, SYN, 1000 + u32::from(i), 0, 64240, &[2, 4, 0x05, 0xb4], &[]).0;
            let (old, new) = (CPORT, 20000 + i);
            f[34..36].copy_from_slice(&new.to_be_bytes());
            let c = u16::from_be_bytes([f[50], f[51]]);
            let c = levee_packet::checksum::update_u16(c, old, new);
            f[50..52].copy_from_slice(&c.to_be_bytes());
            w.port_mut(Side::Outside).wire_in.push(MemPacket(f)).unwrap();
        }
        w.poll_once(1_000_000_000);
        w.poll_once(1_001_000_000);
        let replies = drain(&mut w, Side::Outside);
        assert_eq!(replies.len(), usize::from(n), "every SYN answered");
        assert!(replies.iter().all(|r| fields(r).0 == 0x12));
        let t = w.stats().totals();
        assert_eq!(t.filter_cache, [u64::from(n) - 1, 1, 0], "hits, misses, bypassed");
        // A handshake still goes through tracking and the proxy.
        let mut now = 2_000_000_000u64;
        run_connection(&mut w, &mut now, 7, 9, true, 100, 200).unwrap();
        assert!(
            w.stats().totals().filter_cache[1] > 1,
            "tracked packets are interpreted"
        );
    }

    /// One connection through the direct path and one through the staged (prepared-burst)
    /// path.
    fn connection(c_isn: u32, s_isn: u32, timestamps: bool, c_ts0: u32, s_ts0: u32) -> Result<(), String> {
        for stage_min in [u32::MAX, 0] {
            let mut w = proxy_worker().with_stage_min(stage_min);
            let mut now = 1_000_000_000u64;
            run_connection(&mut w, &mut now, c_isn, s_isn, timestamps, c_ts0, s_ts0)
                .map_err(|e| format!("stage_min {stage_min}: {e}"))?;
        }
        Ok(())
    }

    /// One proxied connection through `w` (time goes on from `now`): handshake, four rounds
    /// of data, FIN both ways and the last ACK (the tuple is then in TIME_WAIT).
    #[allow(clippy::too_many_arguments)]
    fn run_connection(
        w: &mut Worker<MemPort>,
        now: &mut u64,
        c_isn: u32,
        s_isn: u32,
        timestamps: bool,
        c_ts0: u32,
        s_ts0: u32,
    ) -> Result<(), String> {
        let drops0 = w.stats().totals().drops;
        let mut send = |w: &mut Worker<MemPort>, side: Side, p: MemPacket| {
            w.port_mut(side).wire_in.push(p).unwrap();
            *now += 1_000_000;
            w.poll_once(*now);
        };
        let expect_one = |w: &mut Worker<MemPort>, side: Side, what: &str| -> Result<MemPacket, String> {
            let mut v = drain(w, side);
            if v.len() != 1 {
                let t = w.stats().totals();
                return Err(format!(
                    "{what}: {} frame(s) out of {side:?} (drops {:?}, synproxy {:?})",
                    v.len(),
                    t.drops,
                    t.synproxy
                ));
            }
            Ok(v.remove(0))
        };
        let check = |cond: bool, msg: String| if cond { Ok(()) } else { Err(msg) };
        // Client SYN: MSS 1460, SACK-permitted, timestamps, window scale 7.
        let mut o = vec![2, 4, 0x05, 0xb4, 4, 2];
        if timestamps {
            o.extend_from_slice(&[8, 10]);
            o.extend_from_slice(&c_ts0.to_be_bytes());
            o.extend_from_slice(&0u32.to_be_bytes());
        } else {
            o.extend_from_slice(&[1, 1]);
        }
        o.extend_from_slice(&[1, 3, 3, 7]);
        send(w, Side::Outside, seg(true, SYN, c_isn, 0, 64240, &o, &[]));
        let synack = expect_one(w, Side::Outside, "SYN-ACK to the client")?;
        let (fl, cookie, ack, pts, _) = fields(&synack);
        check(fl == 0x12, format!("SYN-ACK flags {fl:#x}"))?;
        check(ack == c_isn.wrapping_add(1), format!("SYN-ACK ack {ack}"))?;
        check(
            drain(w, Side::Inside).is_empty(),
            "nothing to the server yet".into(),
        )?;
        let mut proxy_ts = pts.map(|t| t.0);
        let client_opts = |ts: u32, proxy_ts: Option<u32>| match proxy_ts {
            Some(p) if timestamps => ts_opt(ts, p),
            _ => Vec::new(),
        };
        // Client ACK with the cookie: the proxy opens the server side.
        let (mut cseq, cack) = (c_isn.wrapping_add(1), cookie.wrapping_add(1));
        let mut c_ts = c_ts0.wrapping_add(1);
        send(
            w,
            Side::Outside,
            seg(true, ACK, cseq, cack, 502, &client_opts(c_ts, proxy_ts), &[]),
        );
        let ssyn = expect_one(w, Side::Inside, "SYN to the server")?;
        let (fl, sseq, _, sts, _) = fields(&ssyn);
        check(fl & SYN != 0, format!("server SYN flags {fl:#x}"))?;
        check(
            sseq == c_isn,
            format!("server SYN seq {sseq} != client ISN {c_isn}"),
        )?;
        // Server SYN-ACK.
        let mut so = vec![2, 4, 0x05, 0xb4, 4, 2];
        let mut s_ts = s_ts0;
        if let Some((v, _)) = sts {
            so.extend_from_slice(&[8, 10]);
            so.extend_from_slice(&s_ts.to_be_bytes());
            so.extend_from_slice(&v.to_be_bytes());
        } else {
            so.extend_from_slice(&[1, 1]);
        }
        so.extend_from_slice(&[1, 3, 3, 7]);
        send(
            w,
            Side::Inside,
            seg(false, 0x12, s_isn, c_isn.wrapping_add(1), 65160, &so, &[]),
        );
        let sack = expect_one(w, Side::Inside, "ACK to the server")?;
        let (fl, a_seq, a_ack, _, _) = fields(&sack);
        check(
            fl & ACK != 0 && a_seq == c_isn.wrapping_add(1) && a_ack == s_isn.wrapping_add(1),
            format!("ACK to the server: flags {fl:#x} seq {a_seq} ack {a_ack}"),
        )?;
        let upd = expect_one(w, Side::Outside, "window update to the client")?;
        let (_, u_seq, u_ack, uts, _) = fields(&upd);
        check(
            u_seq == cookie.wrapping_add(1) && u_ack == cseq,
            format!("window update seq {u_seq} ack {u_ack}"),
        )?;
        if let Some((v, _)) = uts {
            proxy_ts = Some(v);
        }
        // Data both ways, several rounds, and the close.
        let mut sseq_srv = s_isn.wrapping_add(1);
        let mut cack_cli = cookie.wrapping_add(1);
        let mut server_seen_ts = sts.map(|t| t.0);
        for round in 0..4u32 {
            let req = vec![b'a' + round as u8; 100 + round as usize];
            c_ts = c_ts.wrapping_add(3);
            send(
                w,
                Side::Outside,
                seg(
                    true,
                    PSH_ACK,
                    cseq,
                    cack_cli,
                    502,
                    &client_opts(c_ts, proxy_ts),
                    &req,
                ),
            );
            let got = expect_one(w, Side::Inside, &format!("round {round}: request to the server"))?;
            let (_, gseq, gack, gts, glen) = fields(&got);
            check(
                gseq == cseq && gack == sseq_srv && glen == req.len(),
                format!("round {round}: request seq {gseq} ack {gack} len {glen}, want {cseq} {sseq_srv}"),
            )?;
            if let Some((v, _)) = gts {
                server_seen_ts = Some(v);
            }
            cseq = cseq.wrapping_add(req.len() as u32);
            let resp = vec![b'z'; 200];
            s_ts = s_ts.wrapping_add(5);
            let sopts = match server_seen_ts {
                Some(v) if timestamps => ts_opt(s_ts, v),
                _ => Vec::new(),
            };
            send(
                w,
                Side::Inside,
                seg(false, PSH_ACK, sseq_srv, cseq, 509, &sopts, &resp),
            );
            let got = expect_one(
                w,
                Side::Outside,
                &format!("round {round}: response to the client"),
            )?;
            let (_, gseq, gack, gts, glen) = fields(&got);
            check(
                gseq == cack_cli && gack == cseq && glen == resp.len(),
                format!("round {round}: response seq {gseq} ack {gack} len {glen}, want {cack_cli} {cseq}"),
            )?;
            if let Some((v, _)) = gts {
                proxy_ts = Some(v);
            }
            sseq_srv = sseq_srv.wrapping_add(resp.len() as u32);
            cack_cli = cack_cli.wrapping_add(resp.len() as u32);
        }
        // Client FIN, server FIN, last ACK.
        c_ts = c_ts.wrapping_add(1);
        send(
            w,
            Side::Outside,
            seg(
                true,
                FIN_ACK,
                cseq,
                cack_cli,
                502,
                &client_opts(c_ts, proxy_ts),
                &[],
            ),
        );
        expect_one(w, Side::Inside, "client FIN")?;
        cseq = cseq.wrapping_add(1);
        s_ts = s_ts.wrapping_add(1);
        let sopts = match server_seen_ts {
            Some(v) if timestamps => ts_opt(s_ts, v),
            _ => Vec::new(),
        };
        send(
            w,
            Side::Inside,
            seg(false, FIN_ACK, sseq_srv, cseq, 509, &sopts, &[]),
        );
        expect_one(w, Side::Outside, "server FIN")?;
        c_ts = c_ts.wrapping_add(1);
        send(
            w,
            Side::Outside,
            seg(
                true,
                ACK,
                cseq,
                cack_cli.wrapping_add(1),
                502,
                &client_opts(c_ts, proxy_ts),
                &[],
            ),
        );
        expect_one(w, Side::Inside, "last ACK")?;
        let t = w.stats().totals();
        check(t.drops == drops0, format!("drops {:?}", t.drops))
    }

    fn isn() -> impl Strategy<Value = u32> {
        prop_oneof![
            any::<u32>(),
            (0u32..2000).prop_map(|d| 0x8000_0000u32.wrapping_sub(1000).wrapping_add(d)),
            (0u32..2000).prop_map(|d| 0u32.wrapping_sub(1000).wrapping_add(d)),
        ]
    }

    #[test]
    fn proxied_connection_at_the_sequence_space_edges() {
        for c in [
            0,
            1,
            0x7fff_ffff,
            0x8000_0000,
            0x8000_0001,
            0xffff_ffff,
            0xffff_ff00,
        ] {
            for s in [0, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff] {
                for ts in [true, false] {
                    connection(c, s, ts, 1000, 5000)
                        .unwrap_or_else(|e| panic!("client ISN {c:#x}, server ISN {s:#x}, ts {ts}: {e}"));
                }
            }
        }
    }

    /// A SYN flood that the raw chain notracks is answered with cookies without any
    /// conntrack work: no lookup, no pending entry, nothing in the table.
    #[test]
    fn notracked_syns_never_touch_conntrack() {
        for stage_min in [u32::MAX, 0] {
            notracked_syns_with(proxy_worker().with_stage_min(stage_min));
        }
    }

    fn notracked_syns_with(mut w: Worker<MemPort>) {
        let mut answered = 0;
        for i in 0..200u32 {
            let mut p = seg(
                true,
                SYN,
                i.wrapping_mul(2_654_435_761),
                0,
                64240,
                &[2, 4, 5, 180],
                &[],
            );
            // Random-looking sources in 198.18.128.0/17; fix the IPv4 and TCP checksums.
            p.0[27..30].copy_from_slice(&[128 | (i >> 8) as u8, i as u8, 7]);
            p.0[24..26].copy_from_slice(&[0, 0]);
            let ipsum = levee_packet::checksum::checksum(&p.0[14..34]);
            p.0[24..26].copy_from_slice(&ipsum.to_be_bytes());
            p.0[50..52].copy_from_slice(&[0, 0]);
            let ph = levee_packet::checksum::pseudo_header_v4(
                [p.0[26], p.0[27], p.0[28], p.0[29]].into(),
                SERVER.into(),
                6,
                (p.0.len() - 34) as u16,
            );
            let c = !levee_packet::checksum::add(ph, levee_packet::checksum::sum(&p.0[34..]));
            p.0[50..52].copy_from_slice(&c.to_be_bytes());
            w.port_mut(Side::Outside).wire_in.push(p).unwrap();
            if i % 32 == 31 {
                w.poll_once(1_000_000 + i as u64);
                answered += drain(&mut w, Side::Outside).len();
            }
        }
        w.poll_once(2_000_000);
        answered += drain(&mut w, Side::Outside).len();
        assert_eq!(answered, 200, "every SYN answered");
        assert!(drain(&mut w, Side::Inside).is_empty());
        let ct = w.conntrack().unwrap();
        let c = ct.counters();
        assert_eq!(
            (ct.len(), c.new, c.found, c.invalid, c.untracked),
            (0, 0, 0, 0, 0)
        );
    }

    /// Chains before conntrack see `ct state invalid` (no entry yet, as in the kernel's raw
    /// table); chains after it see the tracked state.
    #[test]
    fn raw_chains_run_before_conntrack() {
        let text = "table inet t {
 chain raw { type filter hook prerouting priority raw; policy accept;
  ct state invalid counter
  ct state new counter
 }
 chain f { type filter hook prerouting priority filter; policy accept;
  ct state invalid counter
  ct state new counter
 }
}";
        let compiled = Arc::new(levee_filter_vm::compile_ruleset(text).unwrap().compiled);
        let shard = CtShard::new(Default::default(), levee_conntrack::HashKey([5, 6])).unwrap();
        let mut w = Worker::new(
            0,
            MemPort::new(64, 64),
            MemPort::new(64, 64),
            WorkerConfig::default(),
            Steering::new(1, 128),
            HandoffMesh::new(1, 16),
        )
        .with_filter(WorkerFilter::new(compiled, 0))
        .with_conntrack(shard);
        w.port_mut(Side::Outside)
            .wire_in
            .push(seg(true, SYN, 1, 0, 64240, &[2, 4, 5, 180], &[]))
            .unwrap();
        w.poll_once(1_000);
        assert_eq!(drain(&mut w, Side::Inside).len(), 1);
        let f = w.filter().unwrap();
        let counts: Vec<u64> = f
            .compiled
            .rule_counter_totals(&[&f.counters()])
            .iter()
            .map(|c| c.3)
            .collect();
        assert_eq!(counts, vec![1, 0, 0, 1], "raw: invalid; filter: new");
    }

    /// A chain before conntrack sees no flow's mark, not even the one the previous packet of
    /// the same flow carried (nothing of an earlier packet's entry shows through).
    #[test]
    fn raw_chains_see_no_stale_ct_mark() {
        let text = "table inet t {
 chain raw { type filter hook prerouting priority raw; policy accept;
  ct mark 7 counter
 }
 chain f { type filter hook prerouting priority filter; policy accept;
  ct mark set 7
 }
}";
        let compiled = Arc::new(levee_filter_vm::compile_ruleset(text).unwrap().compiled);
        let shard = CtShard::new(Default::default(), levee_conntrack::HashKey([5, 6])).unwrap();
        let mut w = Worker::new(
            0,
            MemPort::new(64, 64),
            MemPort::new(64, 64),
            WorkerConfig::default(),
            Steering::new(1, 128),
            HandoffMesh::new(1, 16),
        )
        .with_filter(WorkerFilter::new(compiled, 0))
        .with_conntrack(shard);
        // Three segments: the second is tracked with the mark the first set, the third must
        // not see it before conntrack.
        for (i, seq) in [1u32, 1, 1].into_iter().enumerate() {
            w.port_mut(Side::Outside)
                .wire_in
                .push(seg(true, SYN, seq, 0, 64240, &[2, 4, 5, 180], &[]))
                .unwrap();
            w.poll_once(1_000 * (i as u64 + 1));
        }
        assert_eq!(drain(&mut w, Side::Inside).len(), 3);
        let f = w.filter().unwrap();
        let counted: u64 = f
            .compiled
            .rule_counter_totals(&[&f.counters()])
            .iter()
            .map(|c| c.3)
            .sum();
        assert_eq!(counted, 0, "the raw chain saw a ct mark");
    }

    /// Port reuse: a tuple still in TIME_WAIT in the proxy's conntrack opens again (new
    /// client ISN above or below the old one, as a client cycling through source ports does).
    #[test]
    fn a_tuple_in_time_wait_reopens_through_the_proxy() {
        for (a, b) in [
            (1000u32, 900_000u32),
            (900_000, 1000),
            (0x7fff_fff0, 0x8000_0100),
            (0xffff_fff0, 0x10),
        ] {
            for ts in [true, false] {
                let mut w = proxy_worker().with_stage_min(if ts { 0 } else { u32::MAX });
                let mut now = 1_000_000_000u64;
                run_connection(&mut w, &mut now, a, 77, ts, 100, 200)
                    .unwrap_or_else(|e| panic!("first connection (ISN {a:#x}, ts {ts}): {e}"));
                now += 2_000_000_000;
                run_connection(&mut w, &mut now, b, 999_999, ts, 300, 400)
                    .unwrap_or_else(|e| panic!("reopened (ISN {a:#x} then {b:#x}, ts {ts}): {e}"));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn proxied_connections_work_for_any_isn(
            c in isn(), s in isn(), ts in any::<bool>(), cts in any::<u32>(), sts in any::<u32>()
        ) {
            if let Err(e) = connection(c, s, ts, cts, sts) {
                return Err(TestCaseError::fail(e));
            }
        }
    }
}
