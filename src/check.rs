//! `levee check FILE [-j]`: compile a ruleset offline (nft's `--check` idea) — no DPDK, no
//! daemon. Success prints the normalized listing (or its JSON form) and exits 0; an error
//! prints `FILE:LINE:COL: message` and exits non-zero.

use levee_filter_vm::nft;
use std::path::Path;

/// Runs the check; `Err` carries the whole diagnostic line.
pub fn check(path: &Path, json: bool) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let at = |line: u32, col: u32, msg: &str| format!("{}:{line}:{col}: {msg}", path.display());
    let ast = nft::parse_ruleset(&text).map_err(|e| at(e.line, e.col, &e.message))?;
    // Semantic checks (unknown chains and sets, types, the verifier) come from compiling.
    levee_filter_vm::compile(&ast, 0).map_err(|e| at(e.line, e.col, &e.message))?;
    Ok(if json {
        serde_json::to_string_pretty(&nft::ruleset_json(&ast)).expect("JSON values serialize")
    } else {
        nft::print_ruleset(&ast)
    })
}
