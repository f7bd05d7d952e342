//! levee's per-core connection tracking (sans-IO): one [`Shard`] per worker, Linux semantics.
//!
//! A shard classifies each packet the way the kernel's `nf_conntrack` does (`ct state` NEW,
//! ESTABLISHED, RELATED, INVALID or UNTRACKED, plus direction, status, mark, label and
//! expiration for the filter VM) and keeps the per-flow state that takes: the TCP state machine
//! and window tracking of `nf_conntrack_proto_tcp.c`, UDP streams, ICMP and ICMPv6 queries and
//! errors, and a generic tracker for other protocols. It owns no socket and no clock: callers
//! pass the frame, its `levee_packet::parse::FrameInfo` and a monotonic `now_ns`.
//!
//! Modules and who calls them:
//! - [`shard`]: the table (worker thread, one shard per worker, no locks), with
//!   [`shard::burst`] for tracking a whole rx burst with its cache misses overlapped.
//! - `index`: where each flow's entry is (one cache line per probe).
//! - `tcp`, `icmp`, `key`: pure per-packet logic the shard calls.
//! - [`timeout`]: Linux's default timeouts and named policies (built by the control side).
//! - [`event`]: events the shard sends to the control thread over a bounded channel.
//! - [`dump`]: filters, snapshots and per-state counts for `levee ctl conntrack list`.
//!
//! Where a shard deliberately differs from Linux:
//! - IP fragments are UNTRACKED: the kernel reassembles before conntrack (`nf_defrag_ipv4/6`),
//!   levee forwards fragments as they come. Rules decide what to do with `ct state untracked`.
//! - Protocols other than TCP, UDP, ICMP and ICMPv6 (SCTP, DCCP, GRE, UDP-Lite) use the generic
//!   tracker: one flow per address pair and protocol, 600 s, like `nf_conntrack_proto_generic`.
//! - Checksums are not verified (the kernel does so at PREROUTING when
//!   `nf_conntrack_checksum=1`); levee relies on the NIC, so a corrupted segment is tracked.
//! - At capacity a shard evicts the not-assured entry closest to expiry among the first
//!   `early_drop_scan` entries of its timer wheel; an assured entry is never evicted unless its
//!   TCP connection is over (TIME_WAIT or CLOSE).
//! - Expectations and helpers (FTP, SIP…), NAT and zones do not exist; `ct zone` is 0.
//! - Labels are kept only when `ShardConfig::labels` is set (Linux adds its connlabel extension
//!   only when a rule uses labels).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod dump;
pub mod event;
mod icmp;
mod index;
mod key;
pub mod shard;
mod tcp;
pub mod timeout;
mod types;

pub use dump::{DumpFilter, EntrySnapshot, StateCounts};
pub use event::{DestroyReason, Event, EventKind};
pub use key::HashKey;
pub use shard::burst::{Burst, BURST_MAX};
pub use shard::{
    ConfigError, Counters, EntryError, ExpireReport, InsertError, Outcome, Pending, Shard, ShardConfig,
    Tracked, TupleDisplay, MAX_CAPACITY,
};
pub use tcp::{TcpEndpoint, TcpInvalid, TcpState};
pub use timeout::{TimeoutPolicy, Timeouts, MAX_TIMEOUT_MS};
pub use types::{
    status, CtInfo, CtState, Direction, EntryId, InvalidReason, L4State, PolicyId, UntrackedReason,
};
