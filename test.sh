#!/usr/bin/env bash
# Runs every test levee has: formatting and lints, unit and property tests, the DPDK EAL
# integration tests on in-memory vdevs, the end-to-end netns tests with real Linux TCP peers
# (needs root), and a short run of every fuzz target. CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")"
FUZZ_SECONDS=${FUZZ_SECONDS:-30}

step() { printf '\n=== %s\n' "$*"; }

step "format"
cargo fmt --all -- --check
step "clippy"
cargo clippy --workspace --all-targets --release -- -D warnings
step "tests (unit, property, EAL on vdevs, netns end-to-end)"
cargo test --workspace --release
step "fuzz (${FUZZ_SECONDS}s per target, stable toolchain: --sanitizer none)"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
for target in $(cd fuzz && cargo fuzz list); do
    (cd fuzz && cargo fuzz run --release --sanitizer none "$target" -- -max_total_time="$FUZZ_SECONDS")
done
step "all tests passed"
