//! levee's nftables-style register VM (`vm`), its sets (`sets`) and verifier (`verify`), and the
//! nft-syntax front end and compiler. Sans-IO: evaluation takes a packet context and returns a
//! verdict and actions; nothing here reads a clock or touches a device.
//!
//! Rulesets are compiled incrementally ([`incremental::Image`]): each rule on its own, chains as
//! persistent ropes of shared chunks ([`pvec`]), so a one-rule change recompiles one rule and
//! copies one chunk, and consecutive generations share everything else.
//!
//! Threads: a compiled [`vm::Program`] is immutable and shared by every worker; each worker owns
//! its [`vm::State`] (counters, limits, quotas, meters), so evaluation takes no lock and does no
//! read-modify-write atomics.
#![forbid(unsafe_code)]

pub mod cache;
pub mod compile;
#[cfg(test)]
mod compile_tests;
pub mod ctx;
pub mod exec;
pub mod incremental;
pub mod nft;
pub mod pvec;
pub mod reject;
pub mod rewrite;
pub mod sets;
pub mod verify;
pub mod vm;
#[cfg(test)]
mod vm_tests;

pub use compile::{compile, compile_ruleset, CompileError, Compiled, Filter, Stage};
pub use ctx::{CtState, IfName, PacketMeta};
