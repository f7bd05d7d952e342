//! The nft rule language front end: its syntax tree so far (the parser lands next).
pub mod ast;
