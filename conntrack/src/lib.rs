//! levee's per-core connection tracking shards (sans-IO): flow tables, TCP/UDP/ICMP state
//! machines, timeouts and events. Nothing is implemented yet; the crate exists so the workspace
//! has the product's shape (see docs/ARCHITECTURE.md). Tracked by issue 4.
#![forbid(unsafe_code)]
