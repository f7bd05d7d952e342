#!/usr/bin/env bash
# Installs what levee needs on Debian 12 (run as root): DPDK 22.11 and its headers, clang for
# bindgen, and the tools the netns lab and the tests drive. Safe to run again.
set -euo pipefail
if [ "$(id -u)" != 0 ]; then
    echo "deploy/host-setup.sh: run as root (it installs packages)" >&2
    exit 1
fi
packages=(
    dpdk libdpdk-dev dpdk-dev pkg-config clang libclang-dev   # DPDK + bindgen
    iproute2 ethtool curl iperf3 python3                      # the netns lab
    nftables hping3 netsniff-ng tcpdump                       # oracle, floods, captures
    conntrack                                                 # conntrack -L for kernel_diff traces
    iptables                                                  # control/benches/kernel_compare.sh
    build-essential ca-certificates
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "deploy/host-setup.sh: no Rust toolchain found; install one with rustup (https://rustup.rs), stable 1.85 or newer" >&2
    exit 1
fi
echo "host setup: ok (DPDK $(pkg-config --modversion libdpdk), $(cargo --version))"
