//! The safe DPDK layer: the only module of levee that contains `unsafe`.
//!
//! Owns: the EAL guard ([`Eal`]), packet mempools ([`Mempool`]), owned packet buffers
//! ([`Mbuf`]), Ethernet ports and their per-worker queues ([`EthPort`], [`RxQueue`],
//! [`TxQueue`]), and launching closures on EAL lcores ([`launch`]).
//!
//! Threading rules (DPDK's, enforced here by ownership): the EAL is initialised once per process
//! from the thread that becomes the main lcore; a port is configured and started by one thread;
//! each RX/TX queue is handed out exactly once as an owned value, so no two threads ever poll the
//! same queue; mbufs are `Send` and free themselves on drop.
//!
//! Lifetimes: ports and mempools keep the EAL alive (they hold an `Arc` of it), so
//! `rte_eal_cleanup` runs only after the last of them is gone. Mbufs do not (that would cost an
//! atomic per packet); they must be dropped before their port and pool, which holds because every
//! mbuf lives inside a worker that owns the queues of the port it came from.

mod eal;
mod lcore;
mod mbuf;
mod mempool;
mod port;
mod ring;
pub mod sys;

pub use eal::{tsc_hz, tsc_now, Eal};
pub use lcore::{current_lcore, launch, LcoreHandle};
pub use mbuf::Mbuf;
pub use mempool::Mempool;
pub use port::{EthPort, LinkStatus, PortSetup, PortStats, RxQueue, TxQueue, SYMMETRIC_RSS_KEY};
pub use ring::{port_from_rings, MbufRing};

use std::ffi::CStr;

/// Errors from DPDK calls, each naming the call and what DPDK said.
#[derive(Debug, thiserror::Error)]
pub enum DpdkError {
    #[error("rte_eal_init failed: {0} (EAL arguments: {1:?})")]
    EalInit(String, Vec<String>),
    #[error("the EAL is already initialised in this process (DPDK allows one init per process)")]
    EalAlreadyInitialised,
    #[error("EAL argument {0:?} contains a NUL byte")]
    BadArgument(String),
    #[error("no DPDK port named {name:?} (ports probed: {available:?}); check the port's device string")]
    NoSuchPort { name: String, available: Vec<String> },
    #[error("port {port}: {call} failed: {reason}")]
    Port {
        port: String,
        call: &'static str,
        reason: String,
    },
    #[error("cannot create mempool {name:?} with {size} mbufs: {reason}")]
    Mempool { name: String, size: u32, reason: String },
    #[error("port {port}: {what} queue {queue} was already taken or does not exist (port has {count})")]
    QueueTaken {
        port: String,
        what: &'static str,
        queue: u16,
        count: u16,
    },
    #[error("ring {name:?}: {reason}")]
    Ring { name: String, reason: String },
    #[error("cannot launch on lcore {lcore}: {reason}")]
    Launch { lcore: u32, reason: String },
}

/// DPDK's description of an errno value (positive or negative).
pub(crate) fn strerror(errnum: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local NUL-terminated string
    // that stays valid until the next call on this thread; we copy it out immediately.
    unsafe {
        let p = sys::rte_strerror(errnum.abs());
        if p.is_null() {
            return format!("errno {errnum}");
        }
        format!("{} (errno {})", CStr::from_ptr(p).to_string_lossy(), errnum.abs())
    }
}

/// The current thread's `rte_errno`, described.
pub(crate) fn last_error() -> String {
    // SAFETY: levee_rte_errno only reads the calling thread's rte_errno.
    let e = unsafe { sys::levee_rte_errno() };
    strerror(e)
}
