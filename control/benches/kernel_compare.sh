#!/usr/bin/env bash
# The same N-rule ruleset (benches/common/ruleset.rs) in levee's rule store and in the kernel's
# tools, in one run: levee's load, one-rule commit (until a simulated worker runs the new
# generation) and listing; then, in a network namespace of its own (lvgen-*), `nft -f` of the
# file, one `nft add rule` into it, `nft list ruleset`, `iptables-legacy-restore` of the same
# rules, one `iptables-legacy -A` into them and `iptables-legacy-save`. Prints medians in ms.
#
#   sudo control/benches/kernel_compare.sh [N=100000] [RUNS=5]
#
# Needs root, nft and iptables-legacy (deploy/host-setup.sh installs them).
set -euo pipefail
n=${1:-100000}
runs=${2:-5}
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
cargo build -q -p levee-control --release --example ruleset_timing
bin="$root/target/release/examples/ruleset_timing"
tmp=$(mktemp -d)
ns="lvgen-$$"
cleanup() {
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
"$bin" nft "$n" >"$tmp/rules.nft"
"$bin" iptables "$n" >"$tmp/rules.ipt"
ip netns add "$ns"

# Inside the namespace: no `ip netns exec` in what is timed.
cat >"$tmp/kernel.sh" <<'INNER'
set -euo pipefail
tmp=$1; runs=$2
now() { date +%s%N; }
median() { sort -n | awk '{ a[NR] = $1 } END { printf "%.3f", a[int((NR + 1) / 2)] / 1e6 }'; }
declare -A t
for ((r = 0; r < runs; r++)); do
    nft flush ruleset
    s=$(now); nft -f "$tmp/rules.nft"; e=$(now); t[nft_load]+="$((e - s)) "
    s=$(now); h=$(nft --echo --handle add rule ip filter input ip saddr 198.19.255.1 tcp dport 9 counter accept | sed -n 's/.*# handle \([0-9]*\).*/\1/p'); e=$(now)
    t[nft_add]+="$((e - s)) "
    nft delete rule ip filter input handle "$h"
    s=$(now); nft list ruleset >/dev/null; e=$(now); t[nft_list]+="$((e - s)) "
    nft flush ruleset
    iptables-legacy -F INPUT
    s=$(now); iptables-legacy-restore <"$tmp/rules.ipt"; e=$(now); t[ipt_restore]+="$((e - s)) "
    s=$(now); iptables-legacy -A INPUT -s 198.19.255.1/32 -p tcp -m tcp --dport 9 -j ACCEPT; e=$(now)
    t[ipt_append]+="$((e - s)) "
    iptables-legacy -D INPUT -s 198.19.255.1/32 -p tcp -m tcp --dport 9 -j ACCEPT
    s=$(now); iptables-legacy-save >/dev/null; e=$(now); t[ipt_save]+="$((e - s)) "
    iptables-legacy -F INPUT
done
for k in nft_load nft_add nft_list ipt_restore ipt_append ipt_save; do
    printf '%s_ms=%s ' "$k" "$(tr ' ' '\n' <<<"${t[$k]}" | grep . | median)"
done
echo
INNER

echo "rules=$n runs=$runs kernel=$(uname -r) $(nft --version) $(iptables-legacy --version)"
"$bin" time "$n" "$runs"
echo "kernel $(ip netns exec "$ns" bash "$tmp/kernel.sh" "$tmp" "$runs")"
