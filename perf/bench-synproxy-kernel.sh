#!/usr/bin/env bash
# levee's SYN proxy side by side with the Linux kernel's nft SYNPROXY on this machine.
#
# Usage: perf/bench-synproxy-kernel.sh [MODE] [SECONDS] [ROUNDS]
#   MODE capacity  per-core capacity of the kernel's SYNPROXY (below), against levee's from
#                  perf/bench-synproxy.sh (perf/out/bench-synproxy.synack_pps) when present
#        legit     legitimate connections/s and connect times while flooded (RFC 3511 "denial
#                  of service handling"), through the kernel router and through levee's lab
#        legit-kernel, legit-levee: one side of `legit`
#        all       capacity and legit (default); SECONDS per measurement (default 10), ROUNDS
#                  (default 3)
#   FLOOD_PPS=N    the fixed flood rate of the legit runs (default 200000), besides no flood
#                  and an unthrottled flood
#   PARALLEL=N     client threads of the legit runs (default 4), each one connection at a time
#   SKIP_BUILD=1   use the binaries in target/release as they are (no cargo build)
# Each legit run counts a connection as good only when it is set up and the server's reply
# (`ok\n`, then the server's close) arrives through the proxy; the server's half-open (SYN-RECV)
# sockets are counted after each run. Client and server run at nice -10 in both setups, so the
# builds sharing this VM delay them less.
#
# The flood generator is the same for both: trafgen (netsniff-ng), 54-byte TCP SYNs to the
# protected server's port 8080 with random sources in 198.18.128.0/17, random source ports
# and ISNs (drnd() constrained to the benchmarking range; hping3 --rand-source would use the
# whole IPv4 space and is not used), one process pinned by trafgen itself (CPU 1 at nice -20
# for the capacity runs, CPU 0 at normal priority for the legit runs), bounded by time and count.
#
# Kernel topology (router as the kernel's own tools/testing/selftests/net/netfilter/nft_synproxy.sh):
#   [lvsp-kc] kc1 198.18.0.1/24 --veth-- kr0 198.18.0.254/24 [lvsp-kr] kr1 198.19.0.254/24
#       --veth-- ks1 198.19.0.2/24 [lvsp-ks]   (levee-perf serve on 198.19.0.2:8080-8335)
#   lvsp-kr: ip_forward=1, nf_conntrack_tcp_loose=0, rp_filter=0,
#     prerouting/raw:   tcp dport 8080-8335 tcp flags syn notrack
#     forward/filter:   tcp dport 8080-8335 ct state invalid,untracked synproxy mss 1460 wscale 7
#                       timestamp sack-perm; ct state invalid drop
#   Replies to the flood's sources (198.18.128.0/17) are routed to a sink: a veth end whose peer
#   is down, via a permanent neighbour, so each SYN-ACK is built, routed and handed to a driver
#   that frees it (as levee's net_pcap port frees what it is given) and no ARP is involved.
#
# Kernel capacity: the kernel's SYNPROXY runs in the softirq of the CPU that sent the SYN, here
# the flood generator's. trafgen is pinned to CPU 1 and saturates it; the same flood is
#   answer: answered by SYNPROXY (a netdev ingress rule on kr0 that matches nothing), or
#   drop:   dropped by that ingress rule (ip saddr 198.18.128.0/17 drop) before IP input.
# With c = CPU time the flood took on CPU 1 (trafgen's process, softirqs included, plus
# ksoftirqd/1, from /proc/*/schedstat) per SYN reaching kr0 in each mode, the marginal CPU
# cost of answering one SYN is c_answer - c_drop (trafgen's own cost and the veth hop cancel
# out), and the kernel's per-core capacity is its inverse. (c = 1/R, R the SYN rate, when
# trafgen has CPU 1 to itself; c is used because the builds sharing this VM take a varying
# share of it. The per-second rates are printed too.) levee's is the SYN-ACK rate of one saturated
# worker core (bench-synproxy.sh).
#
# levee topology (as `levee lab`): [lvsp-lc] vc1 198.18.0.1/24 --veth-- vc0 [lvsp-la: levee,
#   net_af_packet, worker on lcore 1] vs0 --veth-- vs1 198.18.0.2/24 [lvsp-ls]
#   ruleset: the lab's (src/lab.rs SYNPROXY_RULESET) for 198.18.0.2:8080-8335; tcp_loose = false.
#
# Legit runs, both systems alike: the flood (none, FLOOD_PPS, unthrottled) comes from trafgen
# on CPU 0 at normal priority (its rate mode runs one process, on CPU 0). The kernel's SYNPROXY
# then works in CPU 0's softirq, and its client and server may use both CPUs; levee's worker
# owns CPU 1 (nice -20, busy polling), so its client and server are pinned to CPU 0.
#
# Everything lives in namespaces named lvsp-*, uses only 198.18.0.0/15 addresses, is bounded
# in time and packets, and is removed on exit (processes started here are stopped by pid).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-all}
SECS=${2:-10}
ROUNDS=${3:-3}
FLOOD_PPS=${FLOOD_PPS:-200000}
# The protected ports: the server listens on all of them and the client spreads its
# connections over them, so no 4-tuple is reused while a server socket or a proxy entry of an
# earlier connection is still in TIME_WAIT (the kernel picks source ports per destination port
# and cycles through them after a few thousand connections; a reused tuple then meets the old
# connection's state, which is a different test). The flood goes to the first.
NPORTS=256
PORTS=8080-$((8080 + NPORTS - 1))
PARALLEL=${PARALLEL:-4}
OUT=perf/out
mkdir -p "$OUT"
case "$MODE" in capacity | legit | legit-kernel | legit-levee | all) ;; *) echo "unknown mode $MODE" >&2; exit 2 ;; esac
for t in trafgen nft ip ethtool; do
    command -v "$t" > /dev/null || { echo "missing $t" >&2; exit 1; }
done
[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release -q -p levee -p levee-perf
PERF_BIN=$PWD/target/release/levee-perf
LEVEE_BIN=$PWD/target/release/levee
ALL_NS=(lvsp-kc lvsp-kr lvsp-ks lvsp-lc lvsp-la lvsp-ls)
PIDS=()

cleanup() {
    for p in "${PIDS[@]}"; do
        kill "$p" 2> /dev/null || true
    done
    for p in "${PIDS[@]}"; do
        wait "$p" 2> /dev/null || true
    done
    for ns in "${ALL_NS[@]}"; do
        ip netns del "$ns" 2> /dev/null || true
    done
}
# The builds sharing this VM run in other scheduler autogroups, which `nice` does not reach:
# this session's autogroup goes to -20 for the length of the run (restored on exit).
AG_NICE=$(awk '{print $NF}' /proc/$$/autogroup 2> /dev/null || echo "")
[ -z "$AG_NICE" ] || echo -20 > /proc/$$/autogroup || true
trap 'cleanup; [ -z "$AG_NICE" ] || echo "$AG_NICE" > /proc/$$/autogroup 2> /dev/null || true' EXIT
trap 'exit 130' INT TERM

median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) {print 0} else if (NR%2) {print a[(NR+1)/2]} else {print (a[NR/2]+a[NR/2+1])/2}}'; }
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
mac() { ip -n "$1" link show "$2" | awk '/link\/ether/ {print $2}'; }
# Busy and total jiffies of one CPU.
cpu_jiffies() { awk -v c="cpu$1" '$1 == c {t=0; for (i=2; i<=NF; i++) t+=$i; print t-$5-$6, t}' /proc/stat; }
# Column sums of /proc/net/stat/synproxy in a namespace: syn_received cookie_invalid cookie_valid.
sp_stat() {
    local s=0 i=0 v=0 _e a b c _r
    while read -r _e a b c _r; do
        s=$((s + 16#$a)); i=$((i + 16#$b)); v=$((v + 16#$c))
    done < <(nsx "$1" tail -n +2 /proc/net/stat/synproxy)
    echo "$s $i $v"
}

up_ns() { # NS...: create, loopback up, no IPv6 (no DAD/RS noise on the links)
    for ns in "$@"; do
        ip netns del "$ns" 2> /dev/null || true
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        nsx "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    done
}

# trafgen config: SYNs to DST_MAC / DST_IP:8080 from 198.18.128.0/17, on CPU $2 of trafgen's
# per-CPU processes (trafgen pins process i to CPU i; `cpu(N):` keeps the others idle).
trafgen_cfg() { # FILE CPU DST_MAC DST_IP
    cat > "$1" << CFG
cpu($2): {
  eth(da=$3, sa=02:00:00:00:00:fe),
  ipv4(daddr=$4, saddr=198.18.128.0, saddr[2:2]=drnd(32768, 65535), ttl=64, df),
  tcp(dp=8080, sp=drnd(1024, 65535), seq=drnd(), syn, win=64240)
}
CFG
}

# Start a bounded flood in the background: NS DEV CFG CPU SECS PRIO [PPS]; sets FLOOD_PID.
# PRIO "high" runs trafgen at nice -20. trafgen's rate mode (-b) runs one process (CPU 0).
start_flood() {
    local ns=$1 dev=$2 cfg=$3 cpu=$4 secs=$5 prio=$6 pps=${7:-}
    local opts=(-n "$((secs * 4000000))")
    [ -z "$pps" ] || opts=(-b "${pps}pps" -n "$((secs * pps))")
    [ "$prio" != high ] || opts+=(-H)
    ip netns exec "$ns" timeout -s INT "$((secs + 2))" trafgen --dev "$dev" --conf "$cfg" -P "$((cpu + 1))" \
        --no-sock-mem -Q -q "${opts[@]}" > "$OUT/trafgen.log" 2>&1 &
    FLOOD_PID=$!
    PIDS+=("$FLOOD_PID")
}

# Per-second rate of a device counter inside a namespace, SECS samples: prints the median of
# the samples without the first and the last.
sample_rate() { # NS DEV COUNTER SECS
    nsx "$1" bash -c 'f=/sys/class/net/$1/statistics/$2; for i in $(seq 0 "$3"); do echo "$(date +%s.%N) $(cat $f)"; sleep 1; done' _ "$2" "$3" "$4" \
        | awk 'NR>1 {print ($2-p)/($1-t)} {t=$1; p=$2}' | tail -n +2 | head -n -1 | median
}

setup_kernel() {
    up_ns lvsp-kc lvsp-kr lvsp-ks
    ip -n lvsp-kr link add kr0 type veth peer name kc1 netns lvsp-kc
    ip -n lvsp-kr link add kr1 type veth peer name ks1 netns lvsp-ks
    ip -n lvsp-kr link add krs0 type veth peer name krs1
    ip -n lvsp-kc addr add 198.18.0.1/24 dev kc1
    ip -n lvsp-kr addr add 198.18.0.254/24 dev kr0
    ip -n lvsp-kr addr add 198.19.0.254/24 dev kr1
    ip -n lvsp-kr addr add 198.18.1.254/24 dev krs0
    ip -n lvsp-ks addr add 198.19.0.2/24 dev ks1
    for l in "lvsp-kc kc1" "lvsp-kr kr0" "lvsp-kr kr1" "lvsp-kr krs0" "lvsp-ks ks1"; do
        # shellcheck disable=SC2086
        set -- $l
        ip -n "$1" link set "$2" up
    done
    ip -n lvsp-kc route add default via 198.18.0.254
    nsx lvsp-kc sysctl -qw net.ipv4.ip_local_port_range="1024 65535"
    ip -n lvsp-ks route add default via 198.19.0.254
    # Static neighbours everywhere: no ARP in any measurement.
    ip -n lvsp-kc neigh replace 198.18.0.254 lladdr "$(mac lvsp-kr kr0)" dev kc1 nud permanent
    ip -n lvsp-kr neigh replace 198.18.0.1 lladdr "$(mac lvsp-kc kc1)" dev kr0 nud permanent
    ip -n lvsp-kr neigh replace 198.19.0.2 lladdr "$(mac lvsp-ks ks1)" dev kr1 nud permanent
    ip -n lvsp-ks neigh replace 198.19.0.254 lladdr "$(mac lvsp-kr kr1)" dev ks1 nud permanent
    # The sink for SYN-ACKs to the flood's sources (krs1 stays down).
    ip -n lvsp-kr neigh replace 198.18.1.2 lladdr 02:00:00:00:00:99 dev krs0 nud permanent
    ip -n lvsp-kr route add 198.18.128.0/17 via 198.18.1.2 dev krs0 onlink
    nsx lvsp-kr sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 \
        net.ipv4.conf.default.rp_filter=0 net.ipv4.conf.kr0.rp_filter=0
    nsx lvsp-kr nft -f - << NFT
table inet lvsp {
	chain pre {
		type filter hook prerouting priority raw; policy accept;
		tcp dport $PORTS tcp flags syn notrack
	}
	chain fw {
		type filter hook forward priority filter; policy accept;
		tcp dport $PORTS ct state invalid,untracked synproxy mss 1460 wscale 7 timestamp sack-perm
		ct state invalid drop
	}
}
NFT
    nsx lvsp-kr sysctl -qw net.netfilter.nf_conntrack_tcp_loose=0
    KR0_MAC=$(mac lvsp-kr kr0)
    trafgen_cfg "$OUT/lvsp-kernel.trafgen" 1 "$KR0_MAC" 198.19.0.2
}

kernel_ingress() { # drop|answer: the same netdev ingress rule, matching the flood or nothing
    local prefix=198.18.128.0/17
    [ "$1" = answer ] && prefix=198.18.127.255/32
    nsx lvsp-kr nft -f - << NFT
table netdev lvsp_in
delete table netdev lvsp_in
table netdev lvsp_in {
	chain in {
		type filter hook ingress device "kr0" priority -500; policy accept;
		ip saddr $prefix drop
	}
}
NFT
}

# Run time (ns) of the trafgen process pinned to CPU 1 plus ksoftirqd/1: all the CPU time the
# flood took on CPU 1 (softirqs run inline in trafgen's context are charged to it).
flood_cpu_ns() {
    local p t=0
    for p in $(pgrep -x trafgen) $(pgrep -x ksoftirqd/1); do
        if [ "$(awk '/Cpus_allowed_list/ {print $2}' /proc/"$p"/status 2> /dev/null)" = 1 ]; then
            t=$((t + $(awk '{print $1}' /proc/"$p"/schedstat 2> /dev/null || echo 0)))
        fi
    done
    echo "$t"
}

# One capacity measurement: prints "rx_pps cpu1_busy answered_pps ns_per_packet cpu1_share", where
# ns_per_packet is the CPU time the flood took on CPU 1 per SYN that reached kr0.
kernel_capacity_run() { # drop|answer
    kernel_ingress "$1"
    start_flood lvsp-kc kc1 "$OUT/lvsp-kernel.trafgen" 1 "$((SECS + 1))" high
    sleep 0.5
    local b0 t0 b1 t1 s0 s1 w0 w1 rx c0 c1 p0 p1
    read -r b0 t0 < <(cpu_jiffies 1)
    s0=$(nsx lvsp-kr cat /sys/class/net/krs0/statistics/tx_dropped)
    p0=$(nsx lvsp-kr cat /sys/class/net/kr0/statistics/rx_packets)
    c0=$(flood_cpu_ns)
    w0=$(date +%s.%N)
    rx=$(sample_rate lvsp-kr kr0 rx_packets "$SECS")
    s1=$(nsx lvsp-kr cat /sys/class/net/krs0/statistics/tx_dropped)
    p1=$(nsx lvsp-kr cat /sys/class/net/kr0/statistics/rx_packets)
    c1=$(flood_cpu_ns)
    w1=$(date +%s.%N)
    read -r b1 t1 < <(cpu_jiffies 1)
    wait "$FLOOD_PID" || true
    awk -v rx="$rx" -v b="$((b1 - b0))" -v t="$((t1 - t0))" -v s="$((s1 - s0))" -v w0="$w0" -v w1="$w1" \
        -v c="$((c1 - c0))" -v p="$((p1 - p0))" \
        'BEGIN {printf "%.0f %.3f %.0f %.1f %.3f\n", rx, (t>0 ? b/t : 0), s/(w1-w0), (p>0 ? c/p : 0), c/1e9/(w1-w0)}'
}

capacity() {
    setup_kernel
    echo "== kernel SYNPROXY per-core capacity (trafgen pinned to CPU 1, nice -20, ${SECS}s per run)"
    echo "round drop_pps answer_pps drop_ns answer_ns cpu1_share(drop,answer) cpu1_busy(drop,answer) synack_to_sink_pps marginal_ns kernel_capacity_pps"
    local M=() D=() A=() DN=() AN=()
    for r in $(seq 1 "$ROUNDS"); do
        read -r d bd _ dn dsh < <(kernel_capacity_run drop)
        read -r a ba sa an ash < <(kernel_capacity_run answer)
        local m
        m=$(awk -v d="$dn" -v a="$an" 'BEGIN {print a - d}')
        M+=("$m"); D+=("$d"); A+=("$a"); DN+=("$dn"); AN+=("$an")
        awk -v r="$r" -v d="$d" -v a="$a" -v dn="$dn" -v an="$an" -v sh="$dsh,$ash" -v bu="$bd,$ba" -v sa="$sa" -v m="$m" \
            'BEGIN {printf "%d %.0f %.0f %.1f %.1f %s %s %.0f %.1f %.0f\n", r, d, a, dn, an, sh, bu, sa, m, (m>0 ? 1e9/m : 0)}'
    done
    local mm dm am dnm anm
    mm=$(printf '%s\n' "${M[@]}" | median); dm=$(printf '%s\n' "${D[@]}" | median); am=$(printf '%s\n' "${A[@]}" | median)
    dnm=$(printf '%s\n' "${DN[@]}" | median); anm=$(printf '%s\n' "${AN[@]}" | median)
    KERNEL_CAP=$(awk -v m="$mm" 'BEGIN {printf "%.0f", (m>0 ? 1e9/m : 0)}')
    awk -v d="$dm" -v a="$am" -v dn="$dnm" -v an="$anm" -v m="$mm" -v k="$KERNEL_CAP" 'BEGIN {
        printf "median: dropped at ingress %.3f Mpps (%.1f ns of CPU 1 each), answered by SYNPROXY %.3f Mpps (%.1f ns each), trafgen and kernel together on CPU 1; marginal cost %.1f ns/SYN -> kernel SYNPROXY capacity %.3f Mpps per core\n", d/1e6, dn, a/1e6, an, m, k/1e6}'
    if [ -s "$OUT/bench-synproxy.synack_pps" ]; then
        awk -v l="$(cat "$OUT/bench-synproxy.synack_pps")" -v k="$KERNEL_CAP" 'BEGIN {
            printf "levee (bench-synproxy.sh, one worker core): %.2f Mpps -> %.1fx the kernel per core\n", l/1e6, (k>0 ? l/k : 0)}'
    else
        echo "(run perf/bench-synproxy.sh first for levee's per-core figure)"
    fi
    for ns in lvsp-kc lvsp-kr lvsp-ks; do ip netns del "$ns"; done
}

# One legit run while FLOOD (none | PPS | max) comes from trafgen on CPU 0 at normal priority:
# the client's `connect …` line plus the flood's rate at the proxy (RX_NS/RX_DEV rx_packets),
# the rate of answers (ANS_NS/ANS_DEV ANS_COUNTER) and the server's half-open sockets after.
legit_run() { # CLIENT_NS TO FLOOD FLOOD_NS FLOOD_DEV FLOOD_CFG RX_NS RX_DEV ANS_NS ANS_DEV ANS_COUNTER SERVER_NS
    local cns=$1 to=$2 flood=$3 fns=$4 fdev=$5 fcfg=$6 rns=$7 rdev=$8 ans=$9 adev=${10} acnt=${11} sns=${12}
    if [ "$flood" = max ]; then
        start_flood "$fns" "$fdev" "$fcfg" 0 "$((SECS + 2))" normal
    elif [ "$flood" != none ]; then
        start_flood "$fns" "$fdev" "$fcfg" 0 "$((SECS + 2))" normal "$flood"
    fi
    [ "$flood" = none ] || sleep 1
    local r0 r1 a0 a1 t0 t1 line half
    r0=$(nsx "$rns" cat "/sys/class/net/$rdev/statistics/rx_packets")
    a0=$(nsx "$ans" cat "/sys/class/net/$adev/statistics/$acnt")
    t0=$(date +%s.%N)
    line=$(nsx "$cns" "${PIN[@]}" nice -n -10 "$PERF_BIN" connect --to "$to" --duration "$SECS" --parallel "$PARALLEL" --ports "$NPORTS" --timeout-ms 3000)
    t1=$(date +%s.%N)
    r1=$(nsx "$rns" cat "/sys/class/net/$rdev/statistics/rx_packets")
    a1=$(nsx "$ans" cat "/sys/class/net/$adev/statistics/$acnt")
    half=$(nsx "$sns" ss -Htn state syn-recv | wc -l)
    [ "$flood" = none ] || wait "$FLOOD_PID" || true
    awk -v l="$line" -v f="$flood" -v r="$((r1 - r0))" -v a="$((a1 - a0))" -v t0="$t0" -v t1="$t1" -v h="$half" \
        'BEGIN {printf "%s flood=%s flood_rx_pps=%.0f answered_pps=%.0f server_syn_recv=%d\n", l, f, r/(t1-t0), a/(t1-t0), h}'
}

legit_table() { # NAME LINES...: medians over rounds per flood level
    local name=$1; shift
    printf '%s\n' "$@" > "$OUT/lvsp-$name.lines"
    for f in none "$FLOOD_PPS" max; do
        local sel
        sel=$(grep " flood=$f " "$OUT/lvsp-$name.lines" || true)
        [ -n "$sel" ] || continue
        med() { grep -o " $1=[0-9.]*" <<< "$sel" | cut -d= -f2 | median; }
        printf '%s flood=%s: flood %.0f pps, answered %.0f pps, %.0f connections/s, failed %s, exchanges over 1 s %s, connect p50 %s us p99 %s us, exchange p50 %s us p99 %s us, server half-open %s\n' \
            "$name" "$f" "$(med flood_rx_pps)" "$(med answered_pps)" "$(med conn_per_s)" "$(med failed)" "$(med txn_over_1s)" \
            "$(med connect_p50_us)" "$(med connect_p99_us)" "$(med txn_p50_us)" "$(med txn_p99_us)" "$(med server_syn_recv)"
    done
}

legit_rounds() { # NAME CLIENT_NS TO FLOOD_NS FLOOD_DEV FLOOD_CFG RX_NS RX_DEV ANS_NS ANS_DEV ANS_COUNTER SERVER_NS
    local name=$1; shift
    local lines=() line
    for r in $(seq 1 "$ROUNDS"); do
        for f in none "$FLOOD_PPS" max; do
            line="$(legit_run "$1" "$2" "$f" "$3" "$4" "$5" "$6" "$7" "$8" "$9" "${10}" "${11}") round=$r"
            echo "$line"
            lines+=("$line")
        done
    done
    legit_table "$name" "${lines[@]}"
}

legit_kernel() {
    PIN=()
    setup_kernel
    trafgen_cfg "$OUT/lvsp-kernel0.trafgen" 0 "$KR0_MAC" 198.19.0.2
    ip netns exec lvsp-ks nice -n -10 "$PERF_BIN" serve --listen 198.19.0.2:8080 --ports "$NPORTS" --duration $((ROUNDS * 3 * (SECS + 5) + 30)) &
    local server=$!
    PIDS+=("$server")
    sleep 0.5
    echo "== kernel SYNPROXY router: legitimate connections while flooded (${SECS}s per run, $PARALLEL client thread(s))"
    legit_rounds kernel lvsp-kc 198.19.0.2:8080 lvsp-kc kc1 "$OUT/lvsp-kernel0.trafgen" lvsp-kr kr0 \
        lvsp-kr krs0 tx_dropped lvsp-ks
    echo "kernel /proc/net/stat/synproxy (syn_received cookie_invalid cookie_valid): $(sp_stat lvsp-kr)"
    kill "$server" 2> /dev/null || true
    wait "$server" 2> /dev/null || true
    for ns in lvsp-kc lvsp-kr lvsp-ks; do ip netns del "$ns"; done
}

legit_levee() {
    up_ns lvsp-lc lvsp-la lvsp-ls
    ip -n lvsp-la link add vc0 type veth peer name vc1 netns lvsp-lc
    ip -n lvsp-la link add vs0 type veth peer name vs1 netns lvsp-ls
    for l in "lvsp-lc vc1" "lvsp-la vc0" "lvsp-la vs0" "lvsp-ls vs1"; do
        # shellcheck disable=SC2086
        set -- $l
        ip -n "$1" link set "$2" up
        # Complete checksums on the wire (DPDK sees the frames as they are).
        nsx "$1" ethtool -K "$2" tx off > /dev/null
    done
    ip -n lvsp-lc addr add 198.18.0.1/24 dev vc1
    nsx lvsp-lc sysctl -qw net.ipv4.ip_local_port_range="1024 65535"
    ip -n lvsp-ls addr add 198.18.0.2/24 dev vs1
    ip -n lvsp-lc neigh replace 198.18.0.2 lladdr "$(mac lvsp-ls vs1)" dev vc1 nud permanent
    ip -n lvsp-ls neigh replace 198.18.0.1 lladdr "$(mac lvsp-lc vc1)" dev vs1 nud permanent
    cat > "$OUT/lvsp-lab.nft" << NFT
table inet lab {
	chain raw {
		type filter hook prerouting priority raw; policy accept;
		iifname "outside" tcp flags & (syn | ack) == syn notrack
	}
	chain pre {
		type filter hook prerouting priority filter; policy accept;
		iifname "outside" ip daddr 198.18.0.2 tcp dport $PORTS ct state invalid,untracked synproxy mss 1460 wscale 7 timestamp sack-perm
		ct state invalid drop
		iifname "outside" tcp flags & (syn | ack) == syn drop
	}
}
NFT
    cat > "$OUT/lvsp-lab.toml" << 'TOML'
[eal]
main_core = 0
file_prefix = "levee-lvsp"
args = ["--no-huge", "-m", "512", "--no-telemetry", "--log-level", "lib.eal:warning"]
[ports.outside]
device = "net_af_packet0,iface=vc0,qpairs=1"
[ports.inside]
device = "net_af_packet1,iface=vs0,qpairs=1"
[workers]
cores = [1]
[pools]
mbufs_per_worker = 8191
[conntrack]
# Room for every connection of the runs in TIME_WAIT (120 s): a full shard evicts entries
# early and becomes part of what is measured.
entries_per_worker = 1048576
tcp_loose = false
[filter]
ruleset = "lvsp-lab.nft"
TOML
    trafgen_cfg "$OUT/lvsp-levee.trafgen" 0 "$(mac lvsp-ls vs1)" 198.18.0.2
    local total=$((ROUNDS * 3 * (SECS + 5) + 40))
    # Client and server stay off the worker's core: woken there (wake-affine, from the softirq
    # of levee's own transmissions) they would wait behind the busy-polling worker.
    PIN=(taskset -c 0)
    ip netns exec lvsp-ls "${PIN[@]}" nice -n -10 "$PERF_BIN" serve --listen 198.18.0.2:8080 --ports "$NPORTS" --duration "$total" &
    local server=$!
    PIDS+=("$server")
    ip netns exec lvsp-la nice -n -20 "$LEVEE_BIN" run --config "$OUT/lvsp-lab.toml" --stats-interval 1 \
        --duration "$total" > "$OUT/lvsp-levee.log" 2>&1 &
    local levee=$!
    PIDS+=("$levee")
    local ok=0
    for _ in $(seq 1 60); do
        if nsx lvsp-lc "$PERF_BIN" connect --to 198.18.0.2:8080 --duration 0.2 --timeout-ms 500 | grep -q ' ok=[1-9]'; then
            ok=1
            break
        fi
        kill -0 "$levee" 2> /dev/null || break
        sleep 0.5
    done
    if [ "$ok" != 1 ]; then
        echo "levee lab did not come up:" >&2
        tail -20 "$OUT/lvsp-levee.log" >&2
        return 1
    fi
    echo "== levee (net_af_packet, one worker on lcore 1 at nice -20): legitimate connections while flooded (${SECS}s per run, $PARALLEL client thread(s))"
    legit_rounds levee lvsp-lc 198.18.0.2:8080 lvsp-lc vc1 "$OUT/lvsp-levee.trafgen" lvsp-la vc0 \
        lvsp-la vc0 tx_packets lvsp-ls
    kill "$levee" 2> /dev/null || true
    wait "$levee" 2> /dev/null || true
    echo "levee totals: $(grep -o 'synproxy_[a-z_]*=[0-9]*' "$OUT/lvsp-levee.log" | tail -10 | tr '\n' ' ')"
    grep -E '^  (outside|inside) device' "$OUT/lvsp-levee.log" || true
    kill "$server" 2> /dev/null || true
    wait "$server" 2> /dev/null || true
    for ns in lvsp-lc lvsp-la lvsp-ls; do ip netns del "$ns"; done
}

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
case "$MODE" in
    capacity) capacity ;;
    legit) legit_kernel; legit_levee ;;
    legit-kernel) legit_kernel ;;
    legit-levee) legit_levee ;;
    all) capacity; legit_kernel; legit_levee ;;
esac
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
