//! The `levee` binary's library half: the `run` command and the netns `lab` (shared with the
//! end-to-end tests in `tests/`).
#![forbid(unsafe_code)]

pub mod check;
pub mod lab;
pub mod run;
