//! levee's SYN proxy core (sans-IO).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cookie;
