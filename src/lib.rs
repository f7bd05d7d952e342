//! The `levee` binary's library half: the `run` and `ctl` commands and the netns `lab` (shared with the
//! end-to-end tests in `tests/`).
#![forbid(unsafe_code)]

pub mod check;
pub mod ctl;
pub mod lab;
pub mod run;
