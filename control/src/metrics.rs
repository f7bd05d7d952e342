//! The Prometheus exporter: what `/metrics` says, built from a plain [`Snapshot`].
//!
//! The control thread fills a [`Snapshot`] from the running dataplane (per-worker counters,
//! device stats and xstats, conntrack counts; see `levee run`) and [`Exporter::render`] turns
//! it into the text exposition format with the `prometheus` crate. Nothing here knows DPDK,
//! so the whole page is tested with made-up snapshots.
//!
//! Naming: every series is `levee_…`, in base units (bytes, seconds), counters end in
//! `_total`. Labels come only from bounded sets: `port` (outside, inside), `worker` and
//! `lcore` (the configured workers), `reason` (the dataplane's drop reasons), `state`
//! (conntrack states), `result` (filter and commit outcomes), `xstat` (the device's own
//! extended statistic names, a list fixed by its driver). Per-rule counters are not exported:
//! handles are unbounded (`levee ctl list ruleset` shows them). Per-worker counters are summed
//! at scrape time; every series exists from the first scrape on, zero until something happens.
//!
//! Thread use: an [`Exporter`] lives on the control thread (it observes commit latencies
//! there); rendering is a pure function of the snapshot and the latency histogram.

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};
use serde::Serialize;
use std::time::Duration;

/// Device counters of one port (`rte_eth_stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DeviceStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Dropped by the device because its RX queues were full.
    pub rx_missed: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    /// RX failures because the mempool was empty.
    pub rx_nombuf: u64,
}

/// One port as the device sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PortSnapshot {
    /// `outside` or `inside`: the `port` label.
    pub port: String,
    /// The DPDK port name.
    pub name: String,
    pub driver: String,
    pub link_up: bool,
    pub speed_mbps: u32,
    pub device: DeviceStats,
    /// Extended statistics, by the driver's names (a fixed list per device).
    pub xstats: Vec<(String, u64)>,
}

/// One port's counters as one worker counted them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PortTraffic {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

/// One worker's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WorkerSnapshot {
    /// The lcore it runs on.
    pub lcore: u32,
    /// Per port, in the order of [`Snapshot::ports`].
    pub ports: Vec<PortTraffic>,
    /// Drops by reason: every reason, zero or not.
    pub drops: Vec<(String, u64)>,
    /// Packets the ruleset accepted.
    pub filter_accepted: u64,
    /// Packets the ruleset dropped (also in `drops`, reason `filter`).
    pub filter_dropped: u64,
    /// The outcome cache: packets answered from it, looked up and interpreted, interpreted
    /// without a lookup (while a cache that does not hit stands aside).
    pub filter_cache_hits: u64,
    pub filter_cache_misses: u64,
    pub filter_cache_bypassed: u64,
    pub rejects: u64,
    pub logs: u64,
    pub logs_dropped: u64,
    pub handoffs_out: u64,
    pub handoffs_in: u64,
    pub polls: u64,
    /// SYN-proxy counters by name: every counter, zero or not.
    pub synproxy: Vec<(String, u64)>,
    /// Conntrack entries now (a gauge).
    pub ct_entries: u64,
    /// The shard's capacity (a gauge).
    pub ct_limit: u64,
    pub ct_new: u64,
    pub ct_invalid: u64,
    pub ct_expired: u64,
    pub ct_early_drops: u64,
    pub ct_events_dropped: u64,
    /// The rule generation it runs.
    pub generation: u64,
}

/// Commit counters (from [`crate::generation::CommitMetrics`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CommitSnapshot {
    /// Commits that published a generation (timeouts included).
    pub published: u64,
    /// Transactions refused (nothing published).
    pub refused: u64,
    /// Published, but not every worker reported it in time.
    pub timeouts: u64,
    pub last_ns: u64,
    pub max_ns: u64,
    pub total_ns: u64,
}

/// A named counter: the `counter` of a rule that carries a `comment` (the comment is its name;
/// nftables' named counter objects are not in levee's rule language). Summed over workers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NamedCounter {
    pub table: String,
    pub chain: String,
    /// The rule's comment.
    pub name: String,
    pub packets: u64,
    pub bytes: u64,
}

/// Everything `/metrics` and `levee ctl stats` show.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Snapshot {
    pub ports: Vec<PortSnapshot>,
    pub workers: Vec<WorkerSnapshot>,
    /// Conntrack entries per state, summed over workers: every state, zero or not.
    pub conntrack_states: Vec<(String, u64)>,
    /// Whether connection tracking runs.
    pub conntrack_enabled: bool,
    /// The current rule generation.
    pub generation: u64,
    /// Rules in the current generation.
    pub rules: u64,
    /// Counters of commented rules (bounded by the ruleset the operator wrote).
    pub named_counters: Vec<NamedCounter>,
    pub commits: CommitSnapshot,
    /// Seconds since levee started.
    pub uptime_seconds: f64,
}

impl Snapshot {
    /// Sums over workers.
    pub fn total(&self, f: impl Fn(&WorkerSnapshot) -> u64) -> u64 {
        self.workers.iter().map(f).sum()
    }
}

/// Commit latency buckets, in seconds: 50 µs to 10 s.
const LATENCY_BUCKETS: [f64; 14] = [
    50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 500e-3, 1.0, 10.0,
];

/// Builds the `/metrics` page (see the module docs).
pub struct Exporter {
    commit_latency: Histogram,
}

impl Default for Exporter {
    fn default() -> Self {
        Exporter::new()
    }
}

/// Every metric family name [`Exporter::render`] produces (the dashboard test checks the
/// Grafana dashboard against it).
pub const METRIC_NAMES: &[&str] = &[
    "levee_build_info",
    "levee_uptime_seconds",
    "levee_port_rx_packets_total",
    "levee_port_rx_bytes_total",
    "levee_port_tx_packets_total",
    "levee_port_tx_bytes_total",
    "levee_port_link_up",
    "levee_port_speed_bits_per_second",
    "levee_device_rx_packets_total",
    "levee_device_tx_packets_total",
    "levee_device_rx_bytes_total",
    "levee_device_tx_bytes_total",
    "levee_device_rx_missed_total",
    "levee_device_rx_errors_total",
    "levee_device_tx_errors_total",
    "levee_device_rx_nombuf_total",
    "levee_device_xstats_total",
    "levee_worker_rx_packets_total",
    "levee_worker_tx_packets_total",
    "levee_worker_drops_total",
    "levee_worker_handoffs_out_total",
    "levee_worker_handoffs_in_total",
    "levee_worker_polls_total",
    "levee_worker_generation",
    "levee_drops_total",
    "levee_filter_packets_total",
    "levee_filter_cache_packets_total",
    "levee_filter_rejects_total",
    "levee_filter_logs_total",
    "levee_filter_logs_dropped_total",
    "levee_conntrack_enabled",
    "levee_conntrack_entries",
    "levee_conntrack_limit",
    "levee_conntrack_entries_by_state",
    "levee_conntrack_new_total",
    "levee_conntrack_invalid_total",
    "levee_conntrack_expired_total",
    "levee_conntrack_early_drops_total",
    "levee_conntrack_events_dropped_total",
    "levee_synproxy_syn_received_total",
    "levee_synproxy_cookie_invalid_total",
    "levee_synproxy_cookie_valid_total",
    "levee_synproxy_cookie_retrans_total",
    "levee_synproxy_conn_reopened_total",
    "levee_synproxy_reply_ratelimited_total",
    "levee_synproxy_ack_flood_dropped_total",
    "levee_synproxy_synack_sent_total",
    "levee_synproxy_handshakes_completed_total",
    "levee_synproxy_server_refused_total",
    "levee_synproxy_probe_recovered_total",
    "levee_generation",
    "levee_rules",
    "levee_rule_counter_packets_total",
    "levee_rule_counter_bytes_total",
    "levee_commits_total",
    "levee_commit_duration_seconds",
    "levee_commit_last_duration_seconds",
    "levee_commit_max_duration_seconds",
];

/// Registers a collector built for one scrape (names are fixed above, so a clash is a bug).
fn reg(r: &Registry, c: impl Collector + 'static) {
    r.register(Box::new(c)).expect("metric names are unique");
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    reg(r, c.clone());
    c
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    reg(r, g.clone());
    g
}

fn set_counter(c: &IntCounterVec, labels: &[&str], v: u64) {
    c.with_label_values(labels).inc_by(v);
}

fn set_gauge(g: &IntGaugeVec, labels: &[&str], v: u64) {
    g.with_label_values(labels).set(v.min(i64::MAX as u64) as i64);
}

impl Exporter {
    pub fn new() -> Exporter {
        let commit_latency = Histogram::with_opts(
            HistogramOpts::new(
                "levee_commit_duration_seconds",
                "Time from the start of a commit until every worker runs the new generation.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid histogram");
        Exporter { commit_latency }
    }

    /// Records one commit's latency.
    pub fn observe_commit(&self, latency: Duration) {
        self.commit_latency.observe(latency.as_secs_f64());
    }

    /// The text exposition of `s`.
    pub fn render(&self, s: &Snapshot) -> String {
        let r = Registry::new();
        reg(&r, self.commit_latency.clone());

        let info = gauge(
            &r,
            "levee_build_info",
            "Build information (always 1).",
            &["version"],
        );
        set_gauge(&info, &[env!("CARGO_PKG_VERSION")], 1);
        let up = prometheus::Gauge::new("levee_uptime_seconds", "Seconds since levee started.")
            .expect("valid metric");
        up.set(s.uptime_seconds);
        reg(&r, up);

        // Ports, as the workers counted them (summed over workers).
        let port_c = |name: &str, help: &str| counter(&r, name, help, &["port"]);
        let rxp = port_c(
            "levee_port_rx_packets_total",
            "Packets received on the port (workers' count).",
        );
        let rxb = port_c(
            "levee_port_rx_bytes_total",
            "Bytes received on the port (workers' count).",
        );
        let txp = port_c(
            "levee_port_tx_packets_total",
            "Packets sent on the port (workers' count).",
        );
        let txb = port_c(
            "levee_port_tx_bytes_total",
            "Bytes sent on the port (workers' count).",
        );
        let link = gauge(
            &r,
            "levee_port_link_up",
            "1 when the port's link is up.",
            &["port"],
        );
        let speed = gauge(
            &r,
            "levee_port_speed_bits_per_second",
            "The port's link speed.",
            &["port"],
        );
        let dev = |name: &str, help: &str| counter(&r, name, help, &["port"]);
        let d_rxp = dev("levee_device_rx_packets_total", "Packets the device received.");
        let d_txp = dev("levee_device_tx_packets_total", "Packets the device sent.");
        let d_rxb = dev("levee_device_rx_bytes_total", "Bytes the device received.");
        let d_txb = dev("levee_device_tx_bytes_total", "Bytes the device sent.");
        let d_missed = dev(
            "levee_device_rx_missed_total",
            "Packets the device dropped because its RX queues were full.",
        );
        let d_rxe = dev("levee_device_rx_errors_total", "Receive errors.");
        let d_txe = dev("levee_device_tx_errors_total", "Transmit errors.");
        let d_nombuf = dev(
            "levee_device_rx_nombuf_total",
            "Receive failures because the mempool was empty.",
        );
        let xstats = counter(
            &r,
            "levee_device_xstats_total",
            "The device's extended statistics, by the driver's names.",
            &["port", "xstat"],
        );
        for (pi, p) in s.ports.iter().enumerate() {
            let l = [p.port.as_str()];
            let sum = |f: fn(&PortTraffic) -> u64| s.total(|w| w.ports.get(pi).map_or(0, f));
            set_counter(&rxp, &l, sum(|t| t.rx_packets));
            set_counter(&rxb, &l, sum(|t| t.rx_bytes));
            set_counter(&txp, &l, sum(|t| t.tx_packets));
            set_counter(&txb, &l, sum(|t| t.tx_bytes));
            set_gauge(&link, &l, p.link_up as u64);
            set_gauge(&speed, &l, p.speed_mbps as u64 * 1_000_000);
            let d = &p.device;
            set_counter(&d_rxp, &l, d.rx_packets);
            set_counter(&d_txp, &l, d.tx_packets);
            set_counter(&d_rxb, &l, d.rx_bytes);
            set_counter(&d_txb, &l, d.tx_bytes);
            set_counter(&d_missed, &l, d.rx_missed);
            set_counter(&d_rxe, &l, d.rx_errors);
            set_counter(&d_txe, &l, d.tx_errors);
            set_counter(&d_nombuf, &l, d.rx_nombuf);
            for (name, v) in &p.xstats {
                set_counter(&xstats, &[p.port.as_str(), name.as_str()], *v);
            }
        }

        // Workers.
        let wl = ["worker", "lcore"];
        let w_rx = counter(
            &r,
            "levee_worker_rx_packets_total",
            "Packets the worker received (both ports).",
            &wl,
        );
        let w_tx = counter(
            &r,
            "levee_worker_tx_packets_total",
            "Packets the worker sent (both ports).",
            &wl,
        );
        let w_drop = counter(
            &r,
            "levee_worker_drops_total",
            "Packets the worker dropped (every reason).",
            &wl,
        );
        let w_hout = counter(
            &r,
            "levee_worker_handoffs_out_total",
            "Packets the worker handed to the worker owning their flow.",
            &wl,
        );
        let w_hin = counter(
            &r,
            "levee_worker_handoffs_in_total",
            "Packets other workers handed to this worker.",
            &wl,
        );
        let w_polls = counter(
            &r,
            "levee_worker_polls_total",
            "Iterations of the worker loop.",
            &wl,
        );
        let w_gen = gauge(
            &r,
            "levee_worker_generation",
            "The rule generation the worker runs.",
            &wl,
        );
        for (i, w) in s.workers.iter().enumerate() {
            let (wi, lc) = (i.to_string(), w.lcore.to_string());
            let l = [wi.as_str(), lc.as_str()];
            set_counter(&w_rx, &l, w.ports.iter().map(|p| p.rx_packets).sum());
            set_counter(&w_tx, &l, w.ports.iter().map(|p| p.tx_packets).sum());
            set_counter(&w_drop, &l, w.drops.iter().map(|(_, v)| v).sum());
            set_counter(&w_hout, &l, w.handoffs_out);
            set_counter(&w_hin, &l, w.handoffs_in);
            set_counter(&w_polls, &l, w.polls);
            set_gauge(&w_gen, &l, w.generation);
        }

        // Drops by reason and the filter's verdicts, summed over workers.
        let drops = counter(
            &r,
            "levee_drops_total",
            "Packets dropped, by reason.",
            &["reason"],
        );
        let reasons: Vec<String> = s
            .workers
            .first()
            .map(|w| w.drops.iter().map(|(n, _)| n.clone()).collect())
            .unwrap_or_default();
        for (ri, reason) in reasons.iter().enumerate() {
            let v = s.total(|w| w.drops.get(ri).map_or(0, |d| d.1));
            set_counter(&drops, &[reason], v);
        }
        let verdicts = counter(
            &r,
            "levee_filter_packets_total",
            "Packets the ruleset judged, by result (accepted, dropped).",
            &["result"],
        );
        set_counter(&verdicts, &["accepted"], s.total(|w| w.filter_accepted));
        set_counter(&verdicts, &["dropped"], s.total(|w| w.filter_dropped));
        let cache = counter(
            &r,
            "levee_filter_cache_packets_total",
            "Packets by what the ruleset's outcome cache did: hit (answered from it), miss \
             (looked up, then interpreted), bypass (interpreted without a lookup).",
            &["result"],
        );
        set_counter(&cache, &["hit"], s.total(|w| w.filter_cache_hits));
        set_counter(&cache, &["miss"], s.total(|w| w.filter_cache_misses));
        set_counter(&cache, &["bypass"], s.total(|w| w.filter_cache_bypassed));
        let plain = |name: &str, help: &str, v: u64| {
            let c = prometheus::IntCounter::new(name, help).expect("valid metric");
            c.inc_by(v);
            reg(&r, c);
        };
        let plain_gauge = |name: &str, help: &str, v: u64| {
            let g = prometheus::IntGauge::new(name, help).expect("valid metric");
            g.set(v.min(i64::MAX as u64) as i64);
            reg(&r, g);
        };
        plain(
            "levee_filter_rejects_total",
            "Rejects sent (TCP RST, ICMP unreachable).",
            s.total(|w| w.rejects),
        );
        plain(
            "levee_filter_logs_total",
            "`log` statements that fired.",
            s.total(|w| w.logs),
        );
        plain(
            "levee_filter_logs_dropped_total",
            "Log records dropped because the queue to the control thread was full.",
            s.total(|w| w.logs_dropped),
        );

        // Conntrack.
        plain_gauge(
            "levee_conntrack_enabled",
            "1 when connection tracking runs.",
            s.conntrack_enabled as u64,
        );
        plain_gauge(
            "levee_conntrack_entries",
            "Conntrack entries now.",
            s.total(|w| w.ct_entries),
        );
        plain_gauge(
            "levee_conntrack_limit",
            "Conntrack capacity (all workers' shards).",
            s.total(|w| w.ct_limit),
        );
        let by_state = gauge(
            &r,
            "levee_conntrack_entries_by_state",
            "Conntrack entries now, by protocol state.",
            &["state"],
        );
        for (state, v) in &s.conntrack_states {
            set_gauge(&by_state, &[state], *v);
        }
        plain(
            "levee_conntrack_new_total",
            "Flows confirmed (new entries).",
            s.total(|w| w.ct_new),
        );
        plain(
            "levee_conntrack_invalid_total",
            "Packets conntrack found invalid.",
            s.total(|w| w.ct_invalid),
        );
        plain(
            "levee_conntrack_expired_total",
            "Entries whose timeout ran out.",
            s.total(|w| w.ct_expired),
        );
        plain(
            "levee_conntrack_early_drops_total",
            "Not-assured entries evicted to make room for new flows.",
            s.total(|w| w.ct_early_drops),
        );
        plain(
            "levee_conntrack_events_dropped_total",
            "Conntrack events dropped because the channel to the control thread was full.",
            s.total(|w| w.ct_events_dropped),
        );

        // The SYN proxy: one counter per name, as /proc/net/stat/synproxy has columns.
        let names: Vec<String> = s
            .workers
            .first()
            .map(|w| w.synproxy.iter().map(|(n, _)| n.clone()).collect())
            .unwrap_or_else(|| {
                METRIC_NAMES
                    .iter()
                    .filter_map(|m| m.strip_prefix("levee_synproxy_")?.strip_suffix("_total"))
                    .map(str::to_owned)
                    .collect()
            });
        for (ni, name) in names.iter().enumerate() {
            plain(
                &format!("levee_synproxy_{name}_total"),
                &format!("SYN proxy: {name} (summed over workers)."),
                s.total(|w| w.synproxy.get(ni).map_or(0, |c| c.1)),
            );
        }

        // Rule generations.
        plain_gauge("levee_generation", "The current rule generation.", s.generation);
        plain_gauge("levee_rules", "Rules in the current generation.", s.rules);
        // Named counters: rules with a `counter` and a `comment`, labelled by table, chain and
        // comment (operator-chosen names, bounded by the ruleset; rule handles are not used as
        // labels since every commit can mint new ones). Two rules with the same comment in
        // one chain are summed.
        for (metric, help, bytes) in [
            (
                "levee_rule_counter_packets_total",
                "Packets counted by commented rules' counters, summed over workers.",
                false,
            ),
            (
                "levee_rule_counter_bytes_total",
                "Bytes counted by commented rules' counters, summed over workers.",
                true,
            ),
        ] {
            let v = counter(&r, metric, help, &["table", "chain", "name"]);
            for n in &s.named_counters {
                v.with_label_values(&[n.table.as_str(), n.chain.as_str(), n.name.as_str()])
                    .inc_by(if bytes { n.bytes } else { n.packets });
            }
        }
        let commits = counter(
            &r,
            "levee_commits_total",
            "Transactions, by result: published (every worker runs it), refused (nothing published), timeout (published, a worker was late).",
            &["result"],
        );
        let c = &s.commits;
        set_counter(&commits, &["published"], c.published.saturating_sub(c.timeouts));
        set_counter(&commits, &["refused"], c.refused);
        set_counter(&commits, &["timeout"], c.timeouts);
        let secs = |name: &str, help: &str, ns: u64| {
            let g = prometheus::Gauge::new(name, help).expect("valid metric");
            g.set(ns as f64 / 1e9);
            reg(&r, g);
        };
        secs(
            "levee_commit_last_duration_seconds",
            "The last commit's latency.",
            c.last_ns,
        );
        secs(
            "levee_commit_max_duration_seconds",
            "The largest commit latency since start.",
            c.max_ns,
        );

        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&r.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// The SYN-proxy counters a worker publishes (Linux's `/proc/net/stat/synproxy` columns
/// first), in the order of the dataplane's `WorkerTotals::synproxy`; exported as
/// `levee_synproxy_<name>_total`.
pub const SYNPROXY_COUNTERS: [&str; 11] = [
    "syn_received",
    "cookie_invalid",
    "cookie_valid",
    "cookie_retrans",
    "conn_reopened",
    "reply_ratelimited",
    "ack_flood_dropped",
    "synack_sent",
    "handshakes_completed",
    "server_refused",
    "probe_recovered",
];

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A two-worker snapshot with every counter set.
    pub(crate) fn sample() -> Snapshot {
        let worker = |lcore: u32, k: u64| WorkerSnapshot {
            lcore,
            ports: vec![
                PortTraffic {
                    rx_packets: 10 * k,
                    rx_bytes: 1000 * k,
                    tx_packets: 9 * k,
                    tx_bytes: 900 * k,
                },
                PortTraffic {
                    rx_packets: 5 * k,
                    rx_bytes: 500 * k,
                    tx_packets: 4 * k,
                    tx_bytes: 400 * k,
                },
            ],
            drops: [
                "malformed",
                "handoff_full",
                "tx_full",
                "filter",
                "conntrack_full",
                "synproxy",
            ]
            .iter()
            .map(|r| (r.to_string(), k))
            .collect(),
            filter_accepted: 7 * k,
            filter_dropped: k,
            filter_cache_hits: 5 * k,
            filter_cache_misses: 2,
            filter_cache_bypassed: 0,
            synproxy: SYNPROXY_COUNTERS.iter().map(|n| (n.to_string(), k)).collect(),
            ct_entries: 3,
            ct_limit: 100,
            generation: 4,
            ..Default::default()
        };
        Snapshot {
            ports: ["outside", "inside"]
                .iter()
                .map(|p| PortSnapshot {
                    port: p.to_string(),
                    name: format!("net_ring_{p}"),
                    driver: "net_ring".into(),
                    link_up: true,
                    speed_mbps: 10_000,
                    device: DeviceStats {
                        rx_packets: 30,
                        ..Default::default()
                    },
                    xstats: vec![("rx_good_packets".into(), 30), ("rx_q0_packets".into(), 30)],
                })
                .collect(),
            workers: vec![worker(1, 1), worker(2, 2)],
            conntrack_states: vec![("established".into(), 5), ("udp_assured".into(), 1)],
            conntrack_enabled: true,
            generation: 4,
            rules: 2,
            named_counters: vec![NamedCounter {
                table: "edge".into(),
                chain: "pre".into(),
                name: "ssh attempts".into(),
                packets: 5,
                bytes: 300,
            }],
            commits: CommitSnapshot {
                published: 3,
                refused: 1,
                timeouts: 0,
                last_ns: 500_000,
                max_ns: 900_000,
                total_ns: 1_500_000,
            },
            uptime_seconds: 1.5,
        }
    }

    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
    }

    #[test]
    fn per_worker_counters_are_summed_and_labelled() {
        let e = Exporter::new();
        e.observe_commit(Duration::from_micros(300));
        let t = e.render(&sample());
        assert_eq!(value(&t, "levee_port_rx_packets_total{port=\"outside\"}"), 30.0);
        assert_eq!(value(&t, "levee_port_tx_bytes_total{port=\"inside\"}"), 1200.0);
        assert_eq!(value(&t, "levee_drops_total{reason=\"filter\"}"), 3.0);
        assert_eq!(value(&t, "levee_filter_packets_total{result=\"accepted\"}"), 21.0);
        assert_eq!(
            value(&t, "levee_filter_cache_packets_total{result=\"hit\"}"),
            15.0
        );
        assert_eq!(
            value(&t, "levee_filter_cache_packets_total{result=\"miss\"}"),
            4.0
        );
        assert_eq!(
            value(&t, "levee_worker_rx_packets_total{lcore=\"2\",worker=\"1\"}"),
            30.0
        );
        assert_eq!(value(&t, "levee_synproxy_cookie_valid_total"), 3.0);
        assert_eq!(
            value(
                &t,
                "levee_rule_counter_packets_total{chain=\"pre\",name=\"ssh attempts\",table=\"edge\"}"
            ),
            5.0
        );
        assert_eq!(
            value(
                &t,
                "levee_rule_counter_bytes_total{chain=\"pre\",name=\"ssh attempts\",table=\"edge\"}"
            ),
            300.0
        );
        assert_eq!(value(&t, "levee_conntrack_limit"), 200.0);
        assert_eq!(
            value(&t, "levee_conntrack_entries_by_state{state=\"established\"}"),
            5.0
        );
        assert_eq!(
            value(&t, "levee_port_speed_bits_per_second{port=\"outside\"}"),
            1e10
        );
        assert_eq!(
            value(
                &t,
                "levee_device_xstats_total{port=\"inside\",xstat=\"rx_q0_packets\"}"
            ),
            30.0
        );
        assert_eq!(value(&t, "levee_commit_duration_seconds_count"), 1.0);
        assert_eq!(value(&t, "levee_commits_total{result=\"refused\"}"), 1.0);
        assert_eq!(value(&t, "levee_commit_max_duration_seconds"), 0.0009);
        for name in METRIC_NAMES {
            assert!(t.contains(&format!("# TYPE {name} ")), "{name} missing");
        }
    }

    #[test]
    fn an_empty_snapshot_still_has_every_unlabelled_family() {
        // Families labelled by port or worker need a dataplane; the rest are always there.
        let t = Exporter::new().render(&Snapshot::default());
        for name in [
            "levee_generation",
            "levee_rules",
            "levee_conntrack_entries",
            "levee_build_info",
        ] {
            assert!(t.contains(&format!("# TYPE {name} ")), "{name} missing");
        }
        assert_eq!(value(&t, "levee_synproxy_syn_received_total"), 0.0);
    }
}
