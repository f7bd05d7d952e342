#!/usr/bin/env bash
# Forwarding rate of one levee worker vs dpdk-testpmd --forward-mode=macswap, same vdevs, same
# run, same lcores (main lcore 0, one forwarding lcore 1). levee runs twice per round: without
# connection tracking and with it (the pcap's 1024 flows tracked by the worker's shard), so the
# conntrack cost is a ratio measured in the same run.
#
# Both ports are net_pcap vdevs replaying a pcap of 64-byte TCP frames from memory
# (infinite_rx=1) and dropping what is sent to them (no tx_pcap). Each tool forwards port 0 ->
# port 1 and port 1 -> port 0. We record the per-second TX rate (sum over both ports) and
# report the median of each tool and the ratio.
#
# Usage: perf/bench-forward.sh [SECONDS] [ROUNDS] [RULESET.nft]
#   (defaults 10 s, 3 alternating rounds, no ruleset; with a ruleset every worker evaluates it)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
ROUNDS=${2:-3}
RULESET=${3:-}
OUT=perf/out
mkdir -p "$OUT"
cargo build --release -q -p levee -p levee-perf
./target/release/levee-perf pcap --out "$OUT/tcp64.pcap" --flows 1024 >/dev/null

VDEVS=(--vdev "net_pcap0,rx_pcap=$OUT/tcp64.pcap,infinite_rx=1" --vdev "net_pcap1,rx_pcap=$OUT/tcp64.pcap,infinite_rx=1")

cat > "$OUT/bench-forward.toml" <<TOML
[eal]
main_core = 0
file_prefix = "levee-bench"
args = ["--no-huge", "-m", "1024", "--log-level", "lib.eal:warning"]
[ports.outside]
device = "net_pcap0,rx_pcap=$OUT/tcp64.pcap,infinite_rx=1"
[ports.inside]
device = "net_pcap1,rx_pcap=$OUT/tcp64.pcap,infinite_rx=1"
[workers]
cores = [1]
[pools]
mbufs_per_worker = 16383
TOML
cp "$OUT/bench-forward.toml" "$OUT/bench-forward-ct.toml"
printf '[conntrack]\nenabled = false\n' >> "$OUT/bench-forward.toml"
printf '[conntrack]\nenabled = true\n' >> "$OUT/bench-forward-ct.toml"
if [ -n "$RULESET" ]; then
    cp "$RULESET" "$OUT/bench-ruleset.nft"
    for f in bench-forward bench-forward-ct; do
        printf '[filter]\nruleset = "bench-ruleset.nft"\n' >> "$OUT/$f.toml"
    done
fi

median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) {print 0} else if (NR%2) {print a[(NR+1)/2]} else {print (a[NR/2]+a[NR/2+1])/2}}'; }

run_levee() {
    ./target/release/levee run --config "$OUT/$1.toml" --stats-interval 1 --duration "$SECS" > "$OUT/levee.log" 2>&1
    # Skip the first interval (warm-up); sum both ports' tx_pps per line.
    grep '^stats ' "$OUT/levee.log" | tail -n +2 | head -n -1 \
        | sed -E 's/.* outside_tx_pps=([0-9.]+) .* inside_tx_pps=([0-9.]+) .*/\1 \2/' \
        | awk '{print $1+$2}' | median
}

run_testpmd() {
    timeout -s INT "$((SECS + 2))" dpdk-testpmd --no-huge -m 1024 --no-pci --file-prefix levee-bench-tp -l 0,1 \
        --log-level lib.eal:warning "${VDEVS[@]}" -- --forward-mode=macswap --total-num-mbufs=16384 \
        --auto-start --stats-period 1 > "$OUT/testpmd.log" 2>&1 < /dev/null || true
    # Each period prints Tx-pps for port 0 and port 1; sum pairs, skip the first period.
    grep -o 'Tx-pps: *[0-9]*' "$OUT/testpmd.log" | awk '{print $2}' | paste - - | awk '{print $1+$2}' \
        | tail -n +2 | head -n -1 | median
}

echo "round levee_pps levee_conntrack_pps testpmd_macswap_pps ratio conntrack_ratio"
L=(); C=(); T=()
for r in $(seq 1 "$ROUNDS"); do
    l=$(run_levee bench-forward); c=$(run_levee bench-forward-ct); t=$(run_testpmd)
    L+=("$l"); C+=("$c"); T+=("$t")
    awk -v r="$r" -v l="$l" -v c="$c" -v t="$t" \
        'BEGIN {printf "%d %.0f %.0f %.0f %.3f %.3f\n", r, l, c, t, (t>0 ? l/t : 0), (l>0 ? c/l : 0)}'
done
lm=$(printf '%s\n' "${L[@]}" | median); cm=$(printf '%s\n' "${C[@]}" | median); tm=$(printf '%s\n' "${T[@]}" | median)
awk -v l="$lm" -v c="$cm" -v t="$tm" 'BEGIN {printf "median levee %.2f Mpps, with conntrack %.2f Mpps (%.3f of without), testpmd macswap %.2f Mpps, ratio %.3f\n", l/1e6, c/1e6, (l>0 ? c/l : 0), t/1e6, (t>0 ? l/t : 0)}'
