//! levee's SYN proxy core (sans-IO): SYN cookies, SYN-ACK construction, the backend handshake and
//! sequence/timestamp translation. Nothing is implemented yet; the crate exists so the workspace
//! has the product's shape (see docs/ARCHITECTURE.md). Tracked by issue 5.
#![forbid(unsafe_code)]
