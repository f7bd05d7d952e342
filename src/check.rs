//! `levee check FILE [-j]`: compile a ruleset offline (nft's `--check` idea) — no DPDK, no
//! daemon. Success prints the normalized listing (or its JSON form) and exits 0; an error
//! prints `FILE:LINE:COL: message` and exits non-zero.

use levee_filter_vm::nft;
use std::path::Path;

/// What a successful check prints: the listing (stdout) and a note for the operator (stderr).
pub struct Checked {
    pub listing: String,
    pub note: String,
}

/// Runs the check; `Err` carries the whole diagnostic line.
pub fn check(path: &Path, json: bool) -> Result<Checked, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let at = |line: u32, col: u32, msg: &str| format!("{}:{line}:{col}: {msg}", path.display());
    let ast = nft::parse_ruleset(&text).map_err(|e| at(e.line, e.col, &e.message))?;
    // Semantic checks (unknown chains and sets, types, the verifier) come from compiling.
    let compiled = levee_filter_vm::compile(&ast, 0).map_err(|e| at(e.line, e.col, &e.message))?;
    let listing = if json {
        serde_json::to_string_pretty(&nft::ruleset_json(&ast)).expect("JSON values serialize")
    } else {
        nft::print_ruleset(&ast)
    };
    Ok(Checked {
        listing,
        note: cache_note(&compiled),
    })
}

/// Whether workers will answer from the outcome cache (see the README), and on how many
/// packet fields the outcome depends.
pub fn cache_note(c: &levee_filter_vm::Compiled) -> String {
    match &c.cache_plan {
        Some(plan) => format!(
            "outcome cache: on (the verdict depends on {} packet field(s) besides family and protocol)",
            plan.probes().count()
        ),
        None if c.entries.is_empty() => "outcome cache: off (no base chain)".into(),
        None => "outcome cache: off (a limit, quota, log, payload write, set update, time key, \
                 expiring set or ingress chain, or more fields than a key holds)"
            .into(),
    }
}
