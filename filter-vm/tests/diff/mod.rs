//! Support code of the differential test in `kernel_diff.rs`.

pub mod gen;
pub mod kernel;
pub mod oracle;
