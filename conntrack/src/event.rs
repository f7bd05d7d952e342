//! Conntrack events: what a shard tells the control thread about its flows.
//!
//! Owns [`Event`], [`EventKind`] and [`DestroyReason`]. A shard pushes events with `try_send`
//! into a bounded `crossbeam_channel::Sender<Event>` the control side attached; a full channel
//! drops the event and counts it (`Counters::events_dropped`), so the worker never waits.
//! Events may be sampled (one in N, `ShardConfig::event_sample`). Produced on the worker thread
//! that owns the shard, consumed on any thread (`Event` is `Copy + Send`).

use levee_packet::parse::FlowTuple;

use crate::types::L4State;

/// Why an entry left the table (`conntrack -E` prints `[DESTROY]` for all of them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DestroyReason {
    /// Its timeout ran out.
    Expired,
    /// An RST before any reply (`nf_ct_kill_acct` in `nf_conntrack_tcp_packet`).
    Reset,
    /// A SYN reopened the tuple from TIME_WAIT or CLOSE; a new entry follows.
    Reopened,
    /// Evicted to make room for a new flow (`early_drop`).
    EarlyDrop,
    /// Removed by the caller (`Shard::remove`, `conntrack -D`).
    Removed,
}

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// An entry was inserted (`[NEW]`).
    New,
    /// Its protocol state or status changed: TCP state, first reply, assured (`[UPDATE]`).
    Update,
    /// It left the table (`[DESTROY]`).
    Destroy(DestroyReason),
}

/// One conntrack event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The original-direction tuple.
    pub tuple: FlowTuple,
    /// Protocol state after the change.
    pub l4: L4State,
    /// `ct status` bits after the change.
    pub status: u32,
    /// ct mark.
    pub mark: u32,
    /// The shard's clock when it happened, in milliseconds.
    pub at_ms: u64,
}
