//! levee's control side: the configuration file (`config`), the rule store with its
//! transactions (`rules`), rule generations (`generation`), the management API (`api`, served
//! by `server`) and the Prometheus exporter (`metrics`).
//!
//! Runs on the control thread, except [`generation::GenerationReader`] (each worker owns one
//! and calls it once per burst) and the API and HTTP threads of [`server`], which only parse
//! requests and forward them to the control thread.
#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod generation;
pub mod metrics;
pub mod rules;
pub mod server;
