//! `levee run`: load the config, start the dataplane, print counters, stop cleanly on
//! SIGINT/SIGTERM (workers drain, ports stop, totals printed).
//!
//! Runs on the EAL main lcore (the control thread); it sleeps between counter reads.

use levee_control::config::{Config, Device};
use levee_dataplane::dpdk::PortStats;
use levee_dataplane::{
    ConntrackSpec, DataplaneSpec, DropReason, LogRecord, Running, Side, SynproxySpec, WorkerTotals,
    SYNPROXY_COUNTERS,
};
use levee_filter_vm::{nft, Compiled};
use std::path::Path;
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
pub fn synproxy_spec(
    cfg: &Config,
    config_path: &Path,
    ruleset: Option<&Compiled>,
) -> Result<Option<SynproxySpec>, String> {
    let uses = ruleset.is_some_and(|c| {
        c.program
            .chains
            .iter()
            .flat_map(|ch| &ch.rules)
            .flat_map(|r| &r.insns)
            .any(|i| matches!(i, levee_filter_vm::vm::Insn::Synproxy { .. }))
    });
    if !uses {
        return Ok(None);
    }
    if !cfg.conntrack.enabled {
        return Err("the ruleset has `synproxy` statements, which need [conntrack] enabled = true".into());
    }
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
    if let Some(ct) = spec.conntrack.as_mut().filter(|_| ct_events) {
        ct.event_queue = 65_536;
    }
    spec.filter = load_ruleset(&cfg, config)?;
    spec.synproxy = synproxy_spec(&cfg, config, spec.filter.as_deref())?;
    if check_only {
        println!("config {} is valid", config.display());
        if let Some(f) = &spec.filter {
            println!(
                "ruleset: {} base chain(s), {} rule counter(s)",
                f.entries.len(),
                f.rule_counters.len()
            );
        }
        println!("EAL arguments: {}", spec.eal_args.join(" "));
        return Ok(());
    }
    if !(stats_interval >= 0.0 && duration >= 0.0) {
        return Err("--stats-interval and --duration must be ≥ 0".into());
    }
    // Signals only set a flag; the control loop below notices within 50 ms.
    let term = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, term.clone())
            .map_err(|e| format!("cannot install signal handler: {e}"))?;
    }
    let mut running = Running::start(&spec).map_err(|e| e.to_string())?;
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
        "levee: {} worker(s) on lcores {:?}; forwarding (Ctrl-C stops)",
        spec.worker_cores.len(),
        spec.worker_cores
    );

    let started = Instant::now();
    let mut last_print = Instant::now();
    let mut prev = WorkerTotals::default();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        for rec in running.drain_logs(1000) {
            println!("{}", log_line(running.log_prefix(rec.prefix), &rec));
        }
        for ev in running.drain_ct_events(10_000) {
            println!("{}", ct_event_line(&ev));
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
    for (table, chain, index, packets, bytes) in running.rule_counters() {
        println!("  rule {table}/{chain}/{index}: packets {packets} bytes {bytes}");
    }
    Ok(())
}
