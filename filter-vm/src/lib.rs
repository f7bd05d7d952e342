//! levee's nftables-style register VM, its verifier and the nft-syntax compiler (sans-IO).
//! Nothing is implemented yet; the crate exists so the workspace has the product's shape (see
//! docs/ARCHITECTURE.md). Tracked by issue 3.
#![forbid(unsafe_code)]
