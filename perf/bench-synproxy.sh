#!/usr/bin/env bash
# SYN-proxy rate of ONE levee worker core, in memory, next to dpdk-testpmd --forward-mode=macswap
# on the same vdevs in the same run (as bench-forward.sh). Main lcore 0, one worker on lcore 1.
#
# Both ports are net_pcap vdevs replaying (infinite_rx=1) a pcap of 64-byte TCP SYNs with
# random sources from 198.18.0.0/15, random source ports and ISNs (levee-perf pcap --syn
# --random), to 198.19.255.1:80, and dropping what is sent to them. The worker answers every
# SYN with a cookie SYN-ACK rewritten in the same mbuf, back out of the port it came in on; so
# levee's TX rate summed over both ports is its SYN -> SYN-ACK rate, against testpmd macswap
# sending the same frames back (port 0 -> 1, 1 -> 0) on the same lcores.
#
# Per round:
#   levee      synproxy ruleset, reply limits off (the default)
#   levee_lim  the same with the per-worker and per-prefix reply limits on, set above the
#              offered rate (every SYN still answered; the limiter's cost is measured)
#   testpmd    macswap on the SYN pcap
#   ackflood   levee (limits off) on a pcap of ACKs with random cookies: all dropped after one
#              hash; the figure is the RX rate (drops/s) of the one worker
# Figures: median over the per-second samples (first and last dropped), then over rounds.
# Every run is under `nice -n -20` with this session's scheduler autogroup at -20 too, so the
# builds that share this VM (in other autogroups) get little of the measured core
# (bench-forward.sh does not do this). The last column is the CPU share the polling lcore got
# (its run time over wall time in the middle of the run): near 1.0 means the figure is the
# core's, not the scheduler's.
#
# Usage: perf/bench-synproxy.sh [SECONDS] [ROUNDS]     (defaults 10 s, 3 rounds)
#   FLOWS=N   distinct frames in each pcap (default 4096; both ports' copies live in the pool)
#   MSS=N     give the SYNs an MSS option (default 0: bare SYNs, as the trafgen flood sends)
#   SKIP_BUILD=1  use the binaries in target/release as they are (no cargo build)
#   PERF=1    then record the worker (lcore 1) with `perf record -e cpu-clock -g` for SECONDS in
#             one more SYN run and one more ACK run (reports in perf/out/bench-synproxy*.perf.txt)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
ROUNDS=${2:-3}
FLOWS=${FLOWS:-4096}
MSS=${MSS:-0}
OUT=perf/out
mkdir -p "$OUT"
[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release -q -p levee -p levee-perf
./target/release/levee-perf pcap --out "$OUT/syn64.pcap" --flows "$FLOWS" --syn --random --seed 1 --mss "$MSS" >/dev/null
./target/release/levee-perf pcap --out "$OUT/ack64.pcap" --flows "$FLOWS" --random --seed 2 >/dev/null

cat > "$OUT/bench-synproxy.nft" <<'NFT'
table inet bench {
	chain raw {
		type filter hook prerouting priority raw; policy accept;
		tcp flags & (syn | ack) == syn notrack
	}
	chain pre {
		type filter hook prerouting priority filter; policy accept;
		ip daddr 198.19.255.1 tcp dport 80 ct state invalid,untracked synproxy mss 1460 wscale 7 timestamp sack-perm
		ct state invalid drop
	}
}
NFT

config() { # NAME PCAP [extra toml]
    cat > "$OUT/$1.toml" <<TOML
[eal]
main_core = 0
file_prefix = "levee-bench-sp"
args = ["--no-huge", "-m", "1024", "--log-level", "lib.eal:warning"]
[ports.outside]
device = "net_pcap0,rx_pcap=$2,infinite_rx=1"
[ports.inside]
device = "net_pcap1,rx_pcap=$2,infinite_rx=1"
[workers]
cores = [1]
[pools]
mbufs_per_worker = 16383
[conntrack]
enabled = true
tcp_loose = false
[filter]
ruleset = "bench-synproxy.nft"
${3:-}
TOML
}
config bench-synproxy "$OUT/syn64.pcap"
config bench-synproxy-limit "$OUT/syn64.pcap" $'[synproxy]\nreply_limit_pps = 1000000000\nreply_burst = 1000000\nprefix_limit_pps = 1000000000'
config bench-synproxy-ack "$OUT/ack64.pcap"

median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) {print 0} else if (NR%2) {print a[(NR+1)/2]} else {print (a[NR/2]+a[NR/2+1])/2}}'; }
# The value of KEY in each stats line, first and last second dropped.
field() { grep '^stats ' "$2" | tail -n +2 | head -n -1 | grep -o " $1=[0-9.]*" | cut -d= -f2; }
# Per-second sum of two keys' values.
sum2() { paste <(field "$1" "$3") <(field "$2" "$3") | awk '{print $1+$2}'; }

# CPU share of the busiest thread of PID (the polling lcore) over a window of the run: its
# run time from /proc/PID/task/*/schedstat over the wall time, sampled from 2 s after start
# to 1 s before the end. Written to $2.
share() { # PID FILE
    local pid=$1 w=$((SECS - 3)) a b t0 t1
    sleep 2
    a=$(cat /proc/"$pid"/task/*/schedstat 2> /dev/null | awk '{print $1}' | tr '\n' ' ')
    t0=$(date +%s%N)
    sleep "$w"
    b=$(cat /proc/"$pid"/task/*/schedstat 2> /dev/null | awk '{print $1}' | tr '\n' ' ')
    t1=$(date +%s%N)
    awk -v a="$a" -v b="$b" -v dt="$((t1 - t0))" 'BEGIN {n=split(a, x, " "); split(b, y, " "); m=0
        for (i=1; i<=n; i++) if (y[i]-x[i] > m) m=y[i]-x[i]; printf "%.3f\n", m/dt}' > "$2"
}

run_levee() { # CONFIG -> median tx pps (both ports), median rx pps, synack/s, invalid cookies/s, worker CPU share
    local log="$OUT/$1.log"
    nice -n -20 ./target/release/levee run --config "$OUT/$1.toml" --stats-interval 1 --duration "$SECS" > "$log" 2>&1 &
    local pid=$!
    share "$pid" "$OUT/share" &
    local sp=$!
    wait "$pid"
    wait "$sp" || true
    local tx rx
    tx=$(sum2 outside_tx_pps inside_tx_pps "$log" | median)
    rx=$(sum2 outside_rx_pps inside_rx_pps "$log" | median)
    # Counter deltas per second from the cumulative synproxy counters.
    local sa inv
    sa=$(field synproxy_synack_sent "$log" | awk 'NR>1 {print $1-p} {p=$1}' | median)
    inv=$(field synproxy_cookie_invalid "$log" | awk 'NR>1 {print $1-p} {p=$1}' | median)
    echo "$tx $rx $sa $inv $(cat "$OUT/share")"
}

run_testpmd() { # -> median tx pps (both ports), forwarding lcore CPU share
    nice -n -20 timeout -s INT "$((SECS + 2))" dpdk-testpmd --no-huge -m 1024 --no-pci --file-prefix levee-bench-sp-tp -l 0,1 \
        --log-level lib.eal:warning --vdev "net_pcap0,rx_pcap=$OUT/syn64.pcap,infinite_rx=1" \
        --vdev "net_pcap1,rx_pcap=$OUT/syn64.pcap,infinite_rx=1" -- --forward-mode=macswap \
        --total-num-mbufs=16384 --auto-start --stats-period 1 > "$OUT/testpmd-sp.log" 2>&1 < /dev/null &
    local pid=$!
    # timeout's child is testpmd.
    sleep 0.5
    share "$(pgrep -P "$pid" | head -1)" "$OUT/share" &
    local sp=$!
    wait "$pid" || true
    wait "$sp" || true
    local tx
    tx=$(grep -o 'Tx-pps: *[0-9]*' "$OUT/testpmd-sp.log" | awk '{print $2}' | paste - - | awk '{print $1+$2}' \
        | tail -n +2 | head -n -1 | median)
    echo "$tx $(cat "$OUT/share")"
}

# The builds sharing this VM run in other sessions, i.e. other scheduler autogroups, which
# `nice` does not reach: raise this session's autogroup for the length of the run (restored
# on exit) so the measured lcore is not time-shared with them.
AG_NICE=$(awk '{print $NF}' /proc/$$/autogroup 2> /dev/null || echo "")
if [ -n "$AG_NICE" ]; then
    echo -20 > /proc/$$/autogroup || true
    trap 'echo "$AG_NICE" > /proc/$$/autogroup 2> /dev/null || true' EXIT
fi

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "round levee_synack_pps levee_limits_synack_pps testpmd_macswap_pps ratio ratio_limits ackflood_drop_pps cpu_share(levee,limits,testpmd,ack)"
L=(); M=(); T=(); A=()
for r in $(seq 1 "$ROUNDS"); do
    read -r l_tx _ l_sa _ l_sh < <(run_levee bench-synproxy)
    read -r m_tx _ m_sa _ m_sh < <(run_levee bench-synproxy-limit)
    read -r t t_sh < <(run_testpmd)
    read -r _ a_rx _ a_inv a_sh < <(run_levee bench-synproxy-ack)
    # Sanity: every transmitted frame is a SYN-ACK (the counter agrees with the port rate).
    awk -v tx="$l_tx" -v sa="$l_sa" 'BEGIN {if (sa < 0.95*tx || sa > 1.05*tx) printf "warning: synack_sent/s %.0f vs tx %.0f\n", sa, tx}' >&2
    awk -v rx="$a_rx" -v inv="$a_inv" 'BEGIN {if (inv < 0.95*rx) printf "warning: cookie_invalid/s %.0f vs rx %.0f\n", inv, rx}' >&2
    L+=("$l_tx"); M+=("$m_tx"); T+=("$t"); A+=("$a_rx")
    awk -v r="$r" -v l="$l_tx" -v m="$m_tx" -v t="$t" -v a="$a_rx" -v s="$l_sh,$m_sh,$t_sh,$a_sh" \
        'BEGIN {printf "%d %.0f %.0f %.0f %.3f %.3f %.0f %s\n", r, l, m, t, (t>0 ? l/t : 0), (t>0 ? m/t : 0), a, s}'
done
lm=$(printf '%s\n' "${L[@]}" | median); mm=$(printf '%s\n' "${M[@]}" | median)
tm=$(printf '%s\n' "${T[@]}" | median); am=$(printf '%s\n' "${A[@]}" | median)
awk -v l="$lm" -v m="$mm" -v t="$tm" -v a="$am" 'BEGIN {
    printf "median SYN->SYN-ACK %.2f Mpps (%.1f ns/SYN), with reply limits %.2f Mpps, testpmd macswap %.2f Mpps, ratio %.3f (limits %.3f); invalid-ACK drops %.2f Mpps (%.1f ns/ACK)\n",
        l/1e6, (l>0 ? 1e9/l : 0), m/1e6, t/1e6, (t>0 ? l/t : 0), (t>0 ? m/t : 0), a/1e6, (a>0 ? 1e9/a : 0)}'
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
# For bench-synproxy-kernel.sh's ratio.
echo "$lm" > "$OUT/bench-synproxy.synack_pps"

profile() { # CONFIG: perf record of lcore 1 for SECS seconds while levee runs CONFIG
    nice -n -20 ./target/release/levee run --config "$OUT/$1.toml" --stats-interval 1 --duration "$((SECS + 3))" \
        > "$OUT/$1-perf.log" 2>&1 &
    local pid=$!
    sleep 2
    perf record -q -e cpu-clock -g -C 1 -o "$OUT/$1.perf.data" -- sleep "$SECS" 2>/dev/null || true
    wait "$pid" || true
    {
        perf report -i "$OUT/$1.perf.data" --no-children --percent-limit 0.5 --stdio -g none
        # Inlined code by the source file it came from (conntrack: index/shard/tcp/key.rs,
        # filter VM: exec/vm/compile.rs, proxy: reply/cookie/frame.rs, SipHash: sip.rs).
        perf report -i "$OUT/$1.perf.data" --no-children --sort sym,srcfile --percent-limit 0.5 --stdio -g none
    } > "$OUT/$1.perf.txt" 2>/dev/null || true
    echo "profile of $1: $OUT/$1.perf.txt"
    grep -v '^#' "$OUT/$1.perf.txt" | grep -v '^$' | head -25 || true
}
if [ "${PERF:-0}" = 1 ]; then
    profile bench-synproxy
    profile bench-synproxy-ack
fi
