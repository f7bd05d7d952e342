//! levee's dataplane: the safe DPDK layer (`dpdk`, the only module with `unsafe`), the device
//! trait the worker is generic over (`io`), flow steering (`flow`), the per-core worker loop
//! (`worker`) and bringing it all up on DPDK (`runtime`).
//!
//! Threads: `runtime::Running::start` runs on the EAL main lcore (the control thread) and
//! launches one `worker::Worker` per worker lcore; after that, each worker is the only thread
//! touching its queues, its TX buffers and its side of the hand-off rings.

pub mod dpdk;
pub mod flow;
pub mod io;
pub mod runtime;
pub mod worker;

pub use io::{MemPacket, MemPort, PacketBuf, PortIo};
pub use runtime::{ConntrackSpec, DataplaneSpec, Running, StartError, SynproxySpec};
pub use worker::{
    ConnExt, CtShard, DropReason, HandoffMesh, LogRecord, ProxyState, Side, Worker, WorkerConfig,
    WorkerRequest, WorkerStats, WorkerTotals, SYNPROXY_COUNTERS,
};
