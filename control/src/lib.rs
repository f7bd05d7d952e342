//! levee's control side: the configuration file (`config`), the rule store with its
//! transactions (`rules`) and rule generations (`generation`). The management API and the
//! metrics exporter join them later (see docs/ARCHITECTURE.md).
//!
//! Runs on the control thread only, except [`generation::GenerationReader`], which each
//! worker owns and calls once per burst.
#![forbid(unsafe_code)]

pub mod config;
pub mod generation;
pub mod rules;
