#!/usr/bin/env bash
# Where forwarding with conntrack spends its time: the forwarding benchmark of
# perf/bench-forward.sh (one worker, 1024 established TCP flows, net_pcap in memory) run with
# two cut-down builds of the tracker beside the real one, interleaved in the same run:
#
#   none    conntrack off (`[conntrack] enabled = false`)
#   call    conntrack on, `Shard::classify` returns UNTRACKED on entry: what the worker pays to
#           call conntrack and handle its result, with no tracking at all
#   lookup  conntrack on, `classify` reads the packet, builds the flow key, hashes it (the
#           per-boot SipHash-1-3), probes the index and returns the entry as ESTABLISHED: no
#           TCP state machine, no window tracking, no expiry refresh
#   full    the real tracker
#
# The cut-down builds are made in a scratch worktree of HEAD (perf/out/bound-src, its own
# target directory) by two exact source substitutions; the script stops if the source no
# longer matches them. They exist only here: nothing in the tree can build them.
#
# Usage: perf/bench-conntrack-bound.sh [SECONDS] [ROUNDS]   (defaults 6 s, 2 rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-6}
ROUNDS=${2:-2}
OUT=perf/out
SRC=$OUT/bound-src
mkdir -p "$OUT"

# The configurations (and the real build) of perf/bench-forward.sh.
perf/bench-forward.sh 1 1 > /dev/null

build_variant() { # name python-substitution
    local name=$1 sub=$2
    rm -rf "$SRC"
    git worktree prune
    git worktree add -q --detach "$SRC" HEAD
    python3 - "$SRC/conntrack/src/shard.rs" <<EOF
import sys
p = sys.argv[1]
s = open(p).read()
$sub
open(p, "w").write(s)
EOF
    (cd "$SRC" && CARGO_TARGET_DIR="$PWD/../bound-target" cargo build --release -q -p levee)
    cp "$OUT/bound-target/release/levee" "$OUT/levee-$name"
    git worktree remove --force "$SRC"
}

build_variant call '
old = """        let now = Now::new(now_ns);
        self.wheel.start(now.ms);
        let pkt = match Pkt::of(frame, info) {"""
assert s.count(old) == 1, "track_hinted changed: update this script"
s = s.replace(old, """        let now = Now::new(now_ns);
        self.wheel.start(now.ms);
        if !frame.is_empty() {
            return self.untracked(UntrackedReason::NotIp);
        }
        let pkt = match Pkt::of(frame, info) {""")
'
build_variant lookup '
old = """        if let Some(idx) = self.lookup_hinted(key, hash, now, home) {
            if let Some(t) = self.tcp_existing(idx, side, &seg, now) {"""
assert s.count(old) == 1, "track_tcp changed: update this script"
s = s.replace(old, """        if let Some(idx) = self.lookup_hinted(key, hash, now, home) {
            if side < 2 {
                return Self::known(idx, CtState::Established, 0);
            }
            if let Some(t) = self.tcp_existing(idx, side, &seg, now) {""")
'
cp target/release/levee "$OUT/levee-full"

median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) {print 0} else if (NR%2) {print a[(NR+1)/2]} else {print (a[NR/2]+a[NR/2+1])/2}}'; }

run() { # binary config -> median per-second TX of both ports, first and last second skipped
    "$OUT/levee-$1" run --config "$OUT/$2.toml" --stats-interval 1 --duration "$SECS" > "$OUT/levee.log" 2>&1
    grep '^stats ' "$OUT/levee.log" | tail -n +2 | head -n -1 \
        | sed -E 's/.* outside_tx_pps=([0-9.]+) .* inside_tx_pps=([0-9.]+) .*/\1 \2/' \
        | awk '{print $1+$2}' | median
}

declare -A R
echo "round none call lookup full (pps)"
for r in $(seq 1 "$ROUNDS"); do
    n=$(run full bench-forward); c=$(run call bench-forward-ct)
    l=$(run lookup bench-forward-ct); f=$(run full bench-forward-ct)
    R[none]+="$n "; R[call]+="$c "; R[lookup]+="$l "; R[full]+="$f "
    echo "$r $n $c $l $f"
done
none=$(printf '%s\n' ${R[none]} | median)
for v in none call lookup full; do
    m=$(printf '%s\n' ${R[$v]} | median)
    awk -v v="$v" -v m="$m" -v n="$none" 'BEGIN {printf "%-7s %6.2f Mpps  %5.1f ns/packet  %.3f of none  +%.1f ns over none\n", v, m/1e6, 1e9/m, m/n, 1e9/m - 1e9/n}'
done
