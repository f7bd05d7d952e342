//! levee's control side. Today: the configuration file (`config`). Rule generations, the
//! management API and the metrics exporter join it in later issues (see docs/ARCHITECTURE.md).
//!
//! Runs on the control thread only; nothing here is on the per-packet path.
#![forbid(unsafe_code)]

pub mod config;
