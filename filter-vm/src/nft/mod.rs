//! nft rule language front end (work in progress).
pub mod ast;
