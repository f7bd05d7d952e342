//! `levee run`: load the config, start the dataplane, serve the management API and
//! `/metrics`, print counters, reload the ruleset on SIGHUP, stop cleanly on SIGINT/SIGTERM
//! (workers drain, ports stop, totals printed).
//!
//! Runs on the EAL main lcore (the control thread). It owns the rule store and its
//! `Committer` (every ruleset change is a transaction committed here), waits for API calls
//! from the management threads (`levee_control::server`) and handles them one at a time,
//! and every 50 ms drains logs and conntrack events and checks its signal flags.

use crossbeam_channel::Sender;
use levee_conntrack::{DumpFilter, EntrySnapshot, StateCounts};
use levee_control::api::{Api, ApiError, DataSource, Limits, MonitorEvent};
use levee_control::config::{Config, Device, DEFAULT_METRICS_ADDRESS};
use levee_control::generation::Committer;
use levee_control::metrics::{DeviceStats, PortSnapshot, PortTraffic, Snapshot, WorkerSnapshot};
use levee_control::rules::{Op, RuleStore, Transaction};
use levee_control::server::{handle_call, Call, Monitors, ServeError, ServerConfig, Servers};
use levee_dataplane::dpdk::PortStats;
use levee_dataplane::{
    ConntrackSpec, DataplaneSpec, DropReason, LogRecord, Running, Side, SynproxySpec, WorkerTotals,
    SYNPROXY_COUNTERS,
};
use levee_filter_vm::vm::CounterBank;
use levee_filter_vm::{nft, Compiled};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Compiles the configured ruleset (`[filter] ruleset`, relative to the config file).
pub fn load_ruleset(cfg: &Config, config_path: &Path) -> Result<Option<Arc<Compiled>>, String> {
    let Some(rel) = &cfg.filter.ruleset else {
        return Ok(None);
    };
    let path = config_path.parent().unwrap_or(Path::new(".")).join(rel);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("config key `filter.ruleset`: cannot read {}: {e}", path.display()))?;
    let at = |line: u32, col: u32, msg: &str| format!("{}:{line}:{col}: {msg}", path.display());
    let ast = nft::parse_ruleset(&text).map_err(|e| at(e.line, e.col, &e.message))?;
    let compiled = levee_filter_vm::compile(&ast, 0).map_err(|e| at(e.line, e.col, &e.message))?;
    Ok(Some(Arc::new(compiled)))
}

/// Builds the dataplane's start-up description from a validated config.
pub fn spec_from_config(cfg: &Config) -> DataplaneSpec {
    let name = |d: &str| Device::parse(d).expect("validated").port_name().to_owned();
    DataplaneSpec {
        eal_args: cfg.eal_args(),
        port_names: [name(&cfg.ports.outside.device), name(&cfg.ports.inside.device)],
        worker_cores: cfg.workers.cores.clone(),
        mbufs_per_worker: cfg.pools.mbufs_per_worker,
        mempool_cache: cfg.pools.cache,
        rx_desc: cfg.pools.rx_desc,
        tx_desc: cfg.pools.tx_desc,
        burst: cfg.dataplane.burst,
        tx_buffer: cfg.dataplane.tx_buffer,
        drain_us: cfg.dataplane.drain_us,
        handoff_ring: cfg.dataplane.handoff_ring,
        filter: None,
        synproxy: None,
        conntrack: cfg.conntrack.enabled.then(|| ConntrackSpec {
            shard: levee_conntrack::ShardConfig {
                capacity: cfg.conntrack.entries_per_worker,
                liberal: cfg.conntrack.tcp_liberal,
                loose: cfg.conntrack.tcp_loose,
                labels: cfg.conntrack.labels,
                ..Default::default()
            },
            key: boot_key(),
            expire_budget: cfg.conntrack.expire_budget,
            event_queue: 0,
        }),
    }
}

/// The SYN proxy's settings, when the ruleset has a `synproxy` statement.
/// Whether a ruleset has `synproxy` statements.
pub fn uses_synproxy(c: &Compiled) -> bool {
    c.program
        .chains
        .iter()
        .flat_map(|ch| &ch.rules)
        .flat_map(|r| &r.insns)
        .any(|i| matches!(i, levee_filter_vm::vm::Insn::Synproxy { .. }))
}

/// What a later generation may not need that this dataplane lacks: without conntrack there is
/// no SYN proxy, so a commit (API or SIGHUP reload) that adds a `synproxy` statement is refused
/// and the running ruleset stays.
pub fn generation_check(cfg: &Config) -> Option<levee_control::generation::GenerationCheck> {
    (!cfg.conntrack.enabled).then(|| {
        Box::new(|c: &Compiled| {
            if uses_synproxy(c) {
                Err("`synproxy` statements need [conntrack] enabled = true (the SYN proxy keeps its connections in conntrack entries)".to_owned())
            } else {
                Ok(())
            }
        }) as levee_control::generation::GenerationCheck
    })
}

pub fn synproxy_spec(
    cfg: &Config,
    config_path: &Path,
    ruleset: Option<&Compiled>,
) -> Result<Option<SynproxySpec>, String> {
    if !ruleset.is_some_and(uses_synproxy) {
        return Ok(None);
    }
    if !cfg.conntrack.enabled {
        return Err("the ruleset has `synproxy` statements, which need [conntrack] enabled = true".into());
    }
    synproxy_spec_always(cfg, config_path)
}

/// The SYN proxy's settings from `[synproxy]`, whether or not the ruleset uses it now.
pub fn synproxy_spec_always(cfg: &Config, config_path: &Path) -> Result<Option<SynproxySpec>, String> {
    let sp = &cfg.synproxy;
    let master = match &sp.secret_file {
        None => levee_synproxy::MasterSecret::random(),
        Some(rel) => {
            let path = config_path.parent().unwrap_or(Path::new(".")).join(rel);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                format!(
                    "config key `synproxy.secret_file`: cannot read {}: {e}",
                    path.display()
                )
            })?;
            let hex = text.trim();
            let bad = || {
                format!(
                    "config key `synproxy.secret_file`: {} must hold 32 hex digits",
                    path.display()
                )
            };
            if hex.len() != 32 {
                return Err(bad());
            }
            let mut b = [0u8; 16];
            for (i, x) in b.iter_mut().enumerate() {
                *x = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
            }
            levee_synproxy::MasterSecret::from_bytes(b)
        }
    };
    let limit = |pps: u64, burst: u64| {
        (pps > 0).then_some(levee_synproxy::RateLimit {
            rate_per_sec: pps,
            burst: burst.max(1),
        })
    };
    let config = levee_synproxy::Config {
        schedule: levee_synproxy::CookieSchedule {
            period_secs: sp.cookie_period_secs,
            rotation_ticks: sp.rotation_ticks,
            ..Default::default()
        },
        ttl: sp.ttl,
        hop_limit: sp.ttl,
        reply_limit: limit(sp.reply_limit_pps, sp.reply_burst),
        prefix_limit: limit(sp.prefix_limit_pps, sp.prefix_limit_pps / 10).map(|l| {
            levee_synproxy::PrefixLimit {
                limit: l,
                ..Default::default()
            }
        }),
        ..Default::default()
    };
    // Refused settings surface here, before anything starts.
    levee_synproxy::SynProxy::new(config.clone(), &master)
        .map_err(|e| format!("config section [synproxy]: {e}"))?;
    Ok(Some(SynproxySpec { config, master }))
}

/// A per-boot secret for conntrack's SipHash (std's randomly seeded hasher state, which the
/// OS seeds from its entropy source).
fn boot_key() -> levee_conntrack::HashKey {
    use std::hash::{BuildHasher, Hasher};
    let word = |salt: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(salt);
        h.finish()
    };
    levee_conntrack::HashKey([word(1), word(2)])
}

/// One counters line: `stats t=… outside_rx=… outside_rx_bytes=… outside_rx_pps=… … inside_tx_pps=…
/// drop_<reason>=… handoffs=… rejects=… logs=… ct_entries=… ct_new=… ct_invalid=… ct_expired=…
/// ct_early_drops=…`.
/// The format is stable (the lab and perf scripts parse it).
pub fn stats_line(t: f64, now: &WorkerTotals, prev: &WorkerTotals, dt: f64) -> String {
    let mut s = format!("stats t={t:.1}");
    for side in Side::BOTH {
        let i = side as usize;
        let rate = |a: u64, b: u64| if dt > 0.0 { (a - b) as f64 / dt } else { 0.0 };
        s += &format!(
            " {0}_rx={1} {0}_rx_bytes={2} {0}_rx_pps={3:.0} {0}_tx={4} {0}_tx_bytes={5} {0}_tx_pps={6:.0}",
            side.name(),
            now.rx_packets[i],
            now.rx_bytes[i],
            rate(now.rx_packets[i], prev.rx_packets[i]),
            now.tx_packets[i],
            now.tx_bytes[i],
            rate(now.tx_packets[i], prev.tx_packets[i]),
        );
    }
    for r in DropReason::ALL {
        s += &format!(" drop_{}={}", r.name(), now.drops[r as usize]);
    }
    s += &format!(
        " handoffs={} rejects={} logs={} logs_dropped={} ct_entries={} ct_new={} ct_invalid={} ct_expired={} ct_early_drops={}",
        now.handoffs_out,
        now.rejects,
        now.logs,
        now.logs_dropped,
        now.ct_entries,
        now.ct_confirmed,
        now.ct_invalid,
        now.ct_expired,
        now.ct_early_drops
    );
    for (name, v) in SYNPROXY_COUNTERS.iter().zip(now.synproxy) {
        s += &format!(" synproxy_{name}={v}");
    }
    s
}

/// A fired `log` statement as the kernel's nf_log prints it: the prefix, then
/// `IN=… OUT=… SRC=… DST=… LEN=… PROTO=… SPT=… DPT=…`.
pub fn log_line(prefix: &str, rec: &LogRecord) -> String {
    let mut s = format!(
        "{prefix}IN={} OUT={} LEN={}",
        rec.side.name(),
        rec.side.other().name(),
        rec.len
    );
    if let Some(f) = &rec.flow {
        let proto = match f.protocol {
            6 => "TCP".to_owned(),
            17 => "UDP".to_owned(),
            1 => "ICMP".to_owned(),
            58 => "ICMPv6".to_owned(),
            p => p.to_string(),
        };
        s += &format!(" SRC={} DST={} PROTO={proto}", f.src_ip(), f.dst_ip());
        if matches!(f.protocol, 6 | 17) {
            s += &format!(" SPT={} DPT={}", f.src_port, f.dst_port);
        }
    }
    s
}

/// A conntrack event as `conntrack -E` prints one: `[NEW] tcp 6 src=… dst=… sport=… dport=…`.
pub fn ct_event_line(ev: &levee_conntrack::Event) -> String {
    use levee_conntrack::EventKind;
    let kind = match ev.kind {
        EventKind::New => "[NEW]".to_owned(),
        EventKind::Update => "[UPDATE]".to_owned(),
        EventKind::Destroy(r) => format!("[DESTROY {r:?}]"),
    };
    let t = &ev.tuple;
    let proto = match t.protocol {
        6 => "tcp",
        17 => "udp",
        1 => "icmp",
        58 => "icmpv6",
        _ => "unknown",
    };
    let state = match ev.l4 {
        levee_conntrack::L4State::Tcp(s) => format!(" {s:?}"),
        _ => String::new(),
    };
    format!(
        "{kind} {proto} {}{state} src={} dst={} sport={} dport={} mark={}",
        t.protocol,
        t.src_ip(),
        t.dst_ip(),
        t.src_port,
        t.dst_port,
        ev.mark
    )
}

fn device_line(side: Side, d: &PortStats) -> String {
    format!(
        "  {} device: rx={} tx={} rx_missed={} rx_errors={} tx_errors={} rx_nombuf={}",
        side.name(),
        d.rx_packets,
        d.tx_packets,
        d.rx_missed,
        d.rx_errors,
        d.tx_errors,
        d.rx_nombuf
    )
}

/// Where the configured ruleset file is (`[filter] ruleset`, relative to the config file).
pub fn ruleset_path(cfg: &Config, config_path: &Path) -> Option<PathBuf> {
    cfg.filter
        .ruleset
        .as_ref()
        .map(|rel| config_path.parent().unwrap_or(Path::new(".")).join(rel))
}

/// The transaction that makes the ruleset file (or nothing) the whole ruleset, and the
/// error text for it: `FILE:LINE:COL: message` when the file is at fault.
fn load_transaction(path: Option<&Path>) -> Result<Transaction, String> {
    let text = match path {
        None => String::new(),
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| format!("config key `filter.ruleset`: cannot read {}: {e}", p.display()))?,
    };
    Ok(Transaction::new(vec![Op::Load { text, flush: true }]))
}

/// An error of [`load_transaction`]'s transaction, pointing into the file.
fn load_error(path: Option<&Path>, e: &ApiError) -> String {
    match (path, e.line, e.col) {
        (Some(p), Some(l), Some(c)) => {
            let msg = e
                .message
                .split_once(&format!("{l}:{c}: "))
                .map_or(e.message.as_str(), |x| x.1);
            format!("{}:{l}:{c}: {msg}", p.display())
        }
        (Some(p), _, _) => format!("{}: {}", p.display(), e.message),
        (None, _, _) => e.message.clone(),
    }
}

/// The workers' clock in nanoseconds (TSC ticks scaled as the worker scales them), so set
/// element timeouts a commit starts line up with what workers see.
fn worker_clock() -> u64 {
    let t = levee_dataplane::dpdk::tsc_now();
    t.checked_div(levee_dataplane::dpdk::tsc_hz() / 1_000_000)
        .map_or(t, |us| us.saturating_mul(1000))
}

/// Conntrack state names for the `state` label, in [`StateCounts`] order.
fn state_counts(c: &StateCounts) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = levee_conntrack::TcpState::ALL
        .iter()
        .map(|s| (s.name().to_ascii_lowercase(), c.tcp_state(*s) as u64))
        .collect();
    v.push(("udp_unreplied".into(), c.udp_unreplied as u64));
    v.push(("udp_replied".into(), c.udp_replied as u64));
    v.push(("udp_assured".into(), c.udp_assured as u64));
    v.push(("icmp".into(), c.icmp as u64));
    v.push(("generic".into(), c.generic as u64));
    v
}

/// The running dataplane as the API sees it.
struct Dataplane<'a> {
    running: &'a Running,
    cores: &'a [u32],
    conntrack: bool,
    started: Instant,
}

/// How long the control thread waits for workers to answer a dump.
const WORKER_ANSWER: Duration = Duration::from_secs(2);

impl DataSource for Dataplane<'_> {
    fn snapshot(&self) -> Snapshot {
        let devices = self.running.device_stats();
        let ports = Side::BOTH
            .iter()
            .map(|&side| {
                let p = self.running.port(side);
                let d = &devices[side as usize];
                let link = p.link();
                PortSnapshot {
                    port: side.name().to_owned(),
                    name: p.name().to_owned(),
                    driver: p.driver().to_owned(),
                    link_up: link.up,
                    speed_mbps: link.speed_mbps,
                    device: DeviceStats {
                        rx_packets: d.rx_packets,
                        tx_packets: d.tx_packets,
                        rx_bytes: d.rx_bytes,
                        tx_bytes: d.tx_bytes,
                        rx_missed: d.rx_missed,
                        rx_errors: d.rx_errors,
                        tx_errors: d.tx_errors,
                        rx_nombuf: d.rx_nombuf,
                    },
                    xstats: p.xstats(),
                }
            })
            .collect();
        let workers = self
            .running
            .worker_totals()
            .iter()
            .zip(self.cores)
            .map(|(t, &lcore)| WorkerSnapshot {
                lcore,
                ports: Side::BOTH
                    .iter()
                    .map(|&s| {
                        let i = s as usize;
                        PortTraffic {
                            rx_packets: t.rx_packets[i],
                            rx_bytes: t.rx_bytes[i],
                            tx_packets: t.tx_packets[i],
                            tx_bytes: t.tx_bytes[i],
                        }
                    })
                    .collect(),
                drops: DropReason::ALL
                    .iter()
                    .map(|r| (r.name().to_owned(), t.drops[*r as usize]))
                    .collect(),
                filter_accepted: t.filter_accepted,
                filter_dropped: t.drops[DropReason::Filter as usize],
                filter_cache_hits: t.filter_cache[0],
                filter_cache_misses: t.filter_cache[1],
                filter_cache_bypassed: t.filter_cache[2],
                rejects: t.rejects,
                logs: t.logs,
                logs_dropped: t.logs_dropped,
                handoffs_out: t.handoffs_out,
                handoffs_in: t.handoffs_in,
                polls: t.polls,
                synproxy: SYNPROXY_COUNTERS
                    .iter()
                    .zip(t.synproxy)
                    .map(|(n, v)| (n.to_string(), v))
                    .collect(),
                ct_entries: t.ct_entries,
                ct_limit: t.ct_limit,
                ct_new: t.ct_confirmed,
                ct_invalid: t.ct_invalid,
                ct_expired: t.ct_expired,
                ct_early_drops: t.ct_early_drops,
                ct_events_dropped: t.ct_events_dropped,
                generation: t.generation,
            })
            .collect();
        let mut counts = StateCounts::default();
        if self.conntrack {
            for c in self.running.conntrack_counts(WORKER_ANSWER).unwrap_or_default() {
                for (a, b) in counts.tcp.iter_mut().zip(c.tcp) {
                    *a += b;
                }
                counts.udp_unreplied += c.udp_unreplied;
                counts.udp_replied += c.udp_replied;
                counts.udp_assured += c.udp_assured;
                counts.icmp += c.icmp;
                counts.generic += c.generic;
            }
        }
        Snapshot {
            ports,
            workers,
            conntrack_states: state_counts(&counts),
            conntrack_enabled: self.conntrack,
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            ..Default::default()
        }
    }

    fn counter_banks(&self) -> Vec<CounterBank> {
        self.running.counter_banks()
    }

    fn conntrack_list(&self, filter: DumpFilter, max: usize) -> Result<Vec<EntrySnapshot>, String> {
        if !self.conntrack {
            return Err("conntrack is off ([conntrack] enabled = false)".into());
        }
        self.running.conntrack_list(filter, max, WORKER_ANSWER)
    }
}

/// The management listeners for `cfg`. The default metrics address being taken (another
/// levee on this host) only turns metrics off; anything else configured must bind.
fn start_servers(cfg: &Config, calls: Sender<Call>) -> Result<Servers, String> {
    let m = &cfg.management;
    let mut sc = ServerConfig {
        unix_socket: cfg.api_socket(),
        api_tcp: m.api_addr(),
        metrics: m.metrics_addr(),
        limits: Limits {
            max_request_bytes: m.max_request_bytes,
            max_ops: m.max_batch_ops,
        },
        // A commit may wait commit_timeout_ms for workers; the answer comes after that.
        reply_timeout: Duration::from_millis(m.commit_timeout_ms) + Duration::from_secs(30),
    };
    match Servers::start(&sc, calls.clone()) {
        Ok(s) => Ok(s),
        Err(ServeError::Http { addr, reason }) if m.metrics_address == DEFAULT_METRICS_ADDRESS => {
            eprintln!(
                "levee: metrics: cannot listen on {addr} ({reason}); /metrics is off (set [management] metrics_address)"
            );
            sc.metrics = None;
            Servers::start(&sc, calls).map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// The `run` command.
pub fn run(
    config: &Path,
    check_only: bool,
    stats_interval: f64,
    duration: f64,
    ct_events: bool,
) -> Result<(), String> {
    let cfg = Config::load(config).map_err(|e| e.to_string())?;
    let mut spec = spec_from_config(&cfg);
    if let Some(ct) = spec.conntrack.as_mut() {
        if ct_events || cfg.management.conntrack_events {
            ct.event_queue = 65_536;
        }
    }
    // The ruleset as the rule store builds it (the same path every later change takes).
    let path = ruleset_path(&cfg, config);
    let initial = load_transaction(path.as_deref())?;
    let mut probe = RuleStore::new();
    let (compiled, _) = probe
        .commit_local(&initial, 0)
        .map_err(|e| load_error(path.as_deref(), &e.into()))?;
    // A later generation may add `synproxy` statements, so with conntrack on, every worker
    // gets its SYN proxy (idle until a rule hands it a packet).
    spec.synproxy = synproxy_spec(&cfg, config, Some(&compiled))?;
    if spec.synproxy.is_none() && cfg.conntrack.enabled {
        spec.synproxy = synproxy_spec_always(&cfg, config)?;
    }
    if check_only {
        println!("config {} is valid", config.display());
        if path.is_some() {
            println!(
                "ruleset: {} base chain(s), {} rule counter(s)",
                compiled.entries.len(),
                compiled.rule_counters.len()
            );
        }
        println!("EAL arguments: {}", spec.eal_args.join(" "));
        println!(
            "management: socket {}, metrics {}{}",
            cfg.api_socket().map_or("off".into(), |p| p.display().to_string()),
            cfg.management
                .metrics_addr()
                .map_or("off".into(), |a| format!("http://{a}/metrics")),
            cfg.management
                .api_addr()
                .map_or(String::new(), |a| format!(", API on tcp {a}")),
        );
        return Ok(());
    }
    drop((probe, compiled));
    if !(stats_interval >= 0.0 && duration >= 0.0) {
        return Err("--stats-interval and --duration must be ≥ 0".into());
    }
    // Signals only set flags; the control loop below notices within 50 ms.
    let term = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, term.clone())
            .map_err(|e| format!("cannot install signal handler: {e}"))?;
    }
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())
        .map_err(|e| format!("cannot install signal handler: {e}"))?;

    let (mut committer, readers) =
        Committer::start(&initial, spec.worker_cores.len(), Box::new(worker_clock))
            .map_err(|e| load_error(path.as_deref(), &e.into()))?;
    committer.timeout = Duration::from_millis(cfg.management.commit_timeout_ms);
    committer.check = generation_check(&cfg);
    // Listeners before DPDK: a socket another levee serves stops us before anything starts.
    let (calls_tx, calls) = crossbeam_channel::unbounded::<Call>();
    let servers = start_servers(&cfg, calls_tx)?;
    let mut running = Running::start_with(&spec, Some(readers)).map_err(|e| e.to_string())?;
    for side in Side::BOTH {
        let p = running.port(side);
        let link = p.link();
        println!(
            "levee: {} port {} (driver {}, link {}{} Mb/s, hardware RSS {})",
            side.name(),
            p.name(),
            p.driver(),
            if link.up { "up " } else { "down " },
            link.speed_mbps,
            if p.hardware_rss() { "on" } else { "off" }
        );
    }
    println!(
        "levee: management: socket {}, metrics {}{}",
        cfg.api_socket().map_or("off".into(), |p| p.display().to_string()),
        servers
            .metrics_addr()
            .map_or("off".into(), |a| format!("http://{a}/metrics")),
        servers
            .api_tcp_addr()
            .map_or(String::new(), |a| format!(", API on tcp {a}")),
    );
    println!(
        "levee: {} worker(s) on lcores {:?}; forwarding (Ctrl-C stops)",
        spec.worker_cores.len(),
        spec.worker_cores
    );

    let started = Instant::now();
    let mut api = Api::new(Limits {
        max_request_bytes: cfg.management.max_request_bytes,
        max_ops: cfg.management.max_batch_ops,
    });
    let mut monitors = Monitors::default();
    let generation = servers.generation();
    generation.store(committer.generation(), Ordering::Relaxed);
    let mut last_print = Instant::now();
    let mut prev = WorkerTotals::default();
    let mut next_tick = Instant::now() + Duration::from_millis(50);
    loop {
        // API calls are answered as they come; the periodic work runs every 50 ms.
        let wait = next_tick.saturating_duration_since(Instant::now());
        if let Ok(call) = calls.recv_timeout(wait) {
            let data = Dataplane {
                running: &running,
                cores: &spec.worker_cores,
                conntrack: cfg.conntrack.enabled,
                started,
            };
            handle_call(call, &mut api, &mut committer, &data, &mut monitors);
            generation.store(committer.generation(), Ordering::Relaxed);
            if Instant::now() < next_tick {
                continue;
            }
        }
        next_tick = Instant::now() + Duration::from_millis(50);
        for rec in running.drain_logs(1000) {
            let prefix = if running.runs_generations() {
                let g = committer.publisher().current();
                g.compiled
                    .program
                    .log_prefixes
                    .get(rec.prefix as usize)
                    .cloned()
                    .unwrap_or_default()
            } else {
                running.log_prefix(rec.prefix).to_owned()
            };
            println!("{}", log_line(&prefix, &rec));
        }
        for ev in running.drain_ct_events(10_000) {
            if ct_events {
                println!("{}", ct_event_line(&ev));
            }
            if !monitors.is_empty() {
                monitors.publish(&MonitorEvent::from_conntrack(&ev));
            }
        }
        if hup.swap(false, Ordering::Relaxed) {
            reload(path.as_deref(), &mut api, &mut committer);
            generation.store(committer.generation(), Ordering::Relaxed);
            for ev in api.take_events() {
                monitors.publish(&ev);
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        if term.load(Ordering::Relaxed) || (duration > 0.0 && elapsed >= duration) {
            break;
        }
        if stats_interval > 0.0 && last_print.elapsed().as_secs_f64() >= stats_interval {
            let now = running.totals();
            let dt = last_print.elapsed().as_secs_f64();
            println!("{}", stats_line(elapsed, &now, &prev, dt));
            prev = now;
            last_print = Instant::now();
        }
    }
    // Stop taking requests (removes the socket), then the dataplane.
    drop(servers);
    let elapsed = started.elapsed().as_secs_f64();
    let (totals, devices) = running.shutdown();
    println!("levee: stopped after {elapsed:.1} s");
    println!(
        "{}",
        stats_line(elapsed, &totals, &WorkerTotals::default(), elapsed)
    );
    for side in Side::BOTH {
        println!("{}", device_line(side, &devices[side as usize]));
    }
    let banks = running.counter_banks();
    let store = committer.store();
    for (handle, packets, bytes) in store.rule_counters(&banks.iter().collect::<Vec<_>>()) {
        if let Some(v) = store.image().rule(handle) {
            println!(
                "  rule {}/{}/{}: packets {packets} bytes {bytes}",
                v.table, v.chain, v.index
            );
        }
    }
    Ok(())
}

/// SIGHUP: the ruleset file, read again, replaces the running ruleset as one transaction; a
/// bad file changes nothing and the reason is printed (FILE:LINE:COL).
fn reload(path: Option<&Path>, api: &mut Api, committer: &mut Committer) {
    let Some(p) = path else {
        eprintln!("levee: SIGHUP: no [filter] ruleset file is configured; nothing to reload");
        return;
    };
    let txn = match load_transaction(Some(p)) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("levee: reload refused, the running ruleset stays: {e}");
            return;
        }
    };
    match api.commit(&txn, committer) {
        Ok(done) => println!(
            "levee: reloaded {}: generation {} ({} rules, {} us)",
            p.display(),
            done.generation,
            committer.store().rule_count(),
            done.latency.as_micros()
        ),
        Err(e) => eprintln!(
            "levee: reload refused, the running ruleset stays: {}",
            load_error(Some(p), &e)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_synproxy_counter_has_its_metric() {
        for n in SYNPROXY_COUNTERS {
            let name = format!("levee_synproxy_{n}_total");
            assert!(
                levee_control::metrics::METRIC_NAMES.contains(&name.as_str()),
                "{name} is missing from levee_control::metrics::METRIC_NAMES (and the dashboard)"
            );
        }
    }

    /// Without conntrack, a generation with a `synproxy` statement is refused; with it, or
    /// without such a statement, nothing is checked or refused.
    #[test]
    fn synproxy_rules_need_conntrack() {
        let dir = std::env::temp_dir().join(format!("levee-gencheck-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg_for = |ct: bool| {
            let p = dir.join(format!("c{ct}.toml"));
            std::fs::write(
                &p,
                format!(
                    "[ports.outside]\ndevice = \"net_null0\"\n[ports.inside]\ndevice = \"net_null1\"\n\
                     [workers]\ncores = [1]\n[conntrack]\nenabled = {ct}\n"
                ),
            )
            .unwrap();
            Config::load(&p).unwrap()
        };
        let proxy = levee_filter_vm::compile_ruleset(
            "table inet t { chain c { type filter hook prerouting priority 0; policy accept;
               tcp dport 80 ct state invalid,untracked synproxy mss 1460 wscale 7 } }",
        )
        .unwrap()
        .compiled;
        let plain = levee_filter_vm::compile_ruleset(
            "table inet t { chain c { type filter hook prerouting priority 0; policy accept; tcp dport 80 accept } }",
        )
        .unwrap()
        .compiled;
        let check = generation_check(&cfg_for(false)).expect("a check without conntrack");
        let e = check(&proxy).unwrap_err();
        assert!(e.contains("[conntrack] enabled = true"), "{e}");
        assert_eq!(check(&plain), Ok(()));
        assert!(generation_check(&cfg_for(true)).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn conntrack_state_labels_cover_every_state() {
        let names: Vec<String> = state_counts(&StateCounts::default())
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names.len(), 15);
        assert!(names.contains(&"established".to_owned()) && names.contains(&"udp_assured".to_owned()));
    }
}
