//! Bringing the dataplane up on DPDK: EAL, one mempool per worker, both ports with one queue
//! pair per worker, and one worker launched per configured lcore. The caller (the control
//! thread, on the EAL main lcore) keeps the [`Running`] handle: it reads counters, and stops
//! and joins the workers.

use crate::dpdk::{self, DpdkError, Eal, EthPort, LcoreHandle, Mempool, PortSetup, PortStats};
use crate::flow::Steering;
use crate::io::DpdkQueues;
use crate::worker::{
    CtShard, HandoffMesh, LogQueue, LogRecord, Side, Worker, WorkerConfig, WorkerFilter, WorkerRequest,
    WorkerStats, WorkerTotals,
};
use levee_control::generation::GenerationReader;
use levee_filter_vm::vm::CounterBank;
use levee_filter_vm::Compiled;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Everything needed to start the dataplane (built from the config file by the binary).
#[derive(Clone, Debug)]
pub struct DataplaneSpec {
    /// EAL arguments (without argv\[0\]); must enable `worker_cores` with `-l`.
    pub eal_args: Vec<String>,
    /// DPDK port names: outside, inside.
    pub port_names: [String; 2],
    /// One worker per lcore listed.
    pub worker_cores: Vec<u32>,
    pub mbufs_per_worker: u32,
    pub mempool_cache: u32,
    pub rx_desc: u16,
    pub tx_desc: u16,
    pub burst: u16,
    pub tx_buffer: u16,
    pub drain_us: u32,
    pub handoff_ring: u32,
    /// The ruleset every worker evaluates (None: forward everything).
    pub filter: Option<Arc<Compiled>>,
    /// Connection tracking: each worker gets a shard with this configuration (None: no
    /// tracking; `ct state` is then `untracked`).
    pub conntrack: Option<ConntrackSpec>,
    /// The SYN proxy (for `synproxy` statements): every worker gets one with these settings
    /// and the same master secret. Needs `conntrack`.
    pub synproxy: Option<SynproxySpec>,
}

/// SYN-proxy settings shared by every worker.
#[derive(Clone, Debug)]
pub struct SynproxySpec {
    pub config: levee_synproxy::Config,
    /// The cookie master secret (fleet-wide, or random for a box on its own).
    pub master: levee_synproxy::MasterSecret,
}

/// Conntrack settings shared by every worker's shard.
#[derive(Clone, Debug)]
pub struct ConntrackSpec {
    /// Per-shard configuration (capacity is per worker).
    pub shard: levee_conntrack::ShardConfig,
    /// The per-boot SipHash key (the same for every shard; flows never move between them).
    pub key: levee_conntrack::HashKey,
    /// Entries the timer wheel may examine per loop iteration.
    pub expire_budget: u32,
    /// Capacity of the event channel from all shards to the control thread (0: no events).
    /// Events beyond it are dropped and counted by the shards; workers never wait.
    pub event_queue: usize,
}

/// Log records the queue to the control thread holds.
const LOG_QUEUE: usize = 4096;

/// Why the dataplane did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Dpdk(#[from] DpdkError),
    #[error("conntrack: {0}")]
    Conntrack(#[from] levee_conntrack::ConfigError),
    #[error("synproxy: {0}")]
    Synproxy(#[from] levee_synproxy::ConfigError),
    #[error("the SYN proxy keeps its connections in conntrack entries: enable [conntrack]")]
    SynproxyNeedsConntrack,
    #[error("{given} generation reader(s) for {workers} worker(s)")]
    Readers { given: usize, workers: usize },
}

/// A running dataplane.
pub struct Running {
    eal: Eal,
    ports: [EthPort; 2],
    pools: Vec<Mempool>,
    stats: Vec<Arc<WorkerStats>>,
    handles: Vec<LcoreHandle>,
    stop: Arc<AtomicBool>,
    steering: Steering,
    /// The fixed ruleset (None with generations or no filter).
    filter: Option<Arc<Compiled>>,
    /// Each worker's rule counters.
    banks: Vec<CounterBank>,
    /// With generations: what the workers run (log prefixes are read from it).
    generations: bool,
    /// One request channel per worker.
    requests: Vec<crossbeam_channel::Sender<WorkerRequest>>,
    logs: LogQueue,
    ct_events: Option<crossbeam_channel::Receiver<levee_conntrack::Event>>,
}

/// Counters of one port, summed over workers, plus the device's own.
#[derive(Clone, Copy, Debug, Default)]
pub struct PortCounters {
    pub worker: WorkerTotals,
    pub device: PortStats,
}

impl Running {
    /// Initialises DPDK and starts every worker with `spec.filter` as a fixed ruleset. On
    /// error nothing keeps running.
    pub fn start(spec: &DataplaneSpec) -> Result<Running, StartError> {
        Running::start_with(spec, None)
    }

    /// [`Running::start`], with the workers running the published rule generations when
    /// `generations` holds one reader per worker (`spec.filter` is then ignored): each
    /// worker picks up the current generation once per poll.
    pub fn start_with(
        spec: &DataplaneSpec,
        generations: Option<Vec<GenerationReader>>,
    ) -> Result<Running, StartError> {
        let n = spec.worker_cores.len() as u16;
        if let Some(r) = &generations {
            if r.len() != n as usize {
                return Err(StartError::Readers {
                    given: r.len(),
                    workers: n as usize,
                });
            }
        }
        let with_generations = generations.is_some();
        let mut readers = generations.into_iter().flatten();
        // Conntrack shards first: they are the largest allocations and the only ones whose
        // settings can still be refused; nothing of DPDK exists yet if they are.
        let mut shards = Vec::new();
        let mut ct_events = None;
        if let Some(ct) = &spec.conntrack {
            let tx = (ct.event_queue > 0).then(|| {
                let (tx, rx) = crossbeam_channel::bounded(ct.event_queue);
                ct_events = Some(rx);
                tx
            });
            for _ in 0..n {
                let mut shard = CtShard::new(ct.shard, ct.key)?;
                shard.set_event_sender(tx.clone());
                shards.push(shard);
            }
        }
        let mut shards = shards.into_iter();
        let mut proxies = Vec::new();
        if let Some(sp) = &spec.synproxy {
            if spec.conntrack.is_none() {
                return Err(StartError::SynproxyNeedsConntrack);
            }
            for _ in 0..n {
                proxies.push(levee_synproxy::SynProxy::new(sp.config.clone(), &sp.master)?);
            }
        }
        let mut proxies = proxies.into_iter();
        let eal = Eal::init(&spec.eal_args)?;
        let mut pools = Vec::with_capacity(n as usize);
        for (i, _) in spec.worker_cores.iter().enumerate() {
            pools.push(Mempool::create(
                &eal,
                &format!("levee_w{i}"),
                spec.mbufs_per_worker,
                spec.mempool_cache,
                -1,
            )?);
        }
        // RETA: bucket -> worker, 128 buckets unless a device has fewer (see flow.rs).
        let provisional = Steering::new(n, 128);
        let setup = PortSetup {
            rx_queues: n,
            tx_queues: n,
            rx_desc: spec.rx_desc,
            tx_desc: spec.tx_desc,
            promiscuous: true,
            reta: provisional.reta(),
        };
        let outside = EthPort::open(&eal, &spec.port_names[0], &setup, &pools)?;
        let inside = EthPort::open(&eal, &spec.port_names[1], &setup, &pools)?;
        let buckets = [&outside, &inside]
            .iter()
            .filter(|p| p.hardware_rss() && p.reta_size() > 0)
            .map(|p| (p.reta_size() as u32).min(128))
            .min()
            .unwrap_or(128);
        let steering = Steering::new(n, buckets.next_power_of_two().min(128));
        let mesh = HandoffMesh::new(n as usize, spec.handoff_ring as usize);
        let tsc_hz = dpdk::tsc_hz();
        let cfg = WorkerConfig {
            burst: spec.burst as usize,
            tx_buffer: spec.tx_buffer as usize,
            drain_interval: tsc_hz / 1_000_000 * spec.drain_us as u64,
            ticks_per_us: (tsc_hz / 1_000_000).max(1),
            ct_expire_budget: spec.conntrack.as_ref().map_or(64, |c| c.expire_budget),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let logs: LogQueue = Arc::new(crossbeam_queue::ArrayQueue::new(LOG_QUEUE));
        let mut stats = Vec::new();
        let mut handles = Vec::new();
        let mut banks = Vec::new();
        let mut requests = Vec::new();
        for (i, &core) in spec.worker_cores.iter().enumerate() {
            let q = i as u16;
            let out_q = DpdkQueues {
                rx: outside.rx_queue(q)?,
                tx: outside.tx_queue(q)?,
                pool: pools[i].clone(),
            };
            let in_q = DpdkQueues {
                rx: inside.rx_queue(q)?,
                tx: inside.tx_queue(q)?,
                pool: pools[i].clone(),
            };
            let (req_tx, req_rx) = crossbeam_channel::bounded(4);
            requests.push(req_tx);
            let mut worker = Worker::new(q, out_q, in_q, cfg, steering, mesh.clone()).with_requests(req_rx);
            let wf = match (readers.next(), &spec.filter) {
                (Some(reader), _) => Some(WorkerFilter::from_generations(reader, core)),
                (None, Some(compiled)) => Some(WorkerFilter::new(compiled.clone(), core)),
                (None, None) => None,
            };
            if let Some(wf) = wf {
                let wf = wf.with_log_queue(logs.clone());
                banks.push(wf.counters());
                worker = worker.with_filter(wf);
            }
            if let Some(shard) = shards.next() {
                // Allocated on the control thread before the worker starts; afterwards the
                // shard allocates only to grow its slab of proxied connections' state.
                worker = worker.with_conntrack(shard);
            }
            if let Some(proxy) = proxies.next() {
                worker = worker.with_synproxy(proxy);
            }
            stats.push(worker.stats());
            let stop_flag = stop.clone();
            let launched = dpdk::launch(&eal, core, move || {
                worker.run(&stop_flag, dpdk::tsc_now);
                0
            });
            match launched {
                Ok(h) => handles.push(h),
                Err(e) => {
                    // Stop what already runs before reporting.
                    stop.store(true, Ordering::SeqCst);
                    for h in handles {
                        h.join();
                    }
                    return Err(e.into());
                }
            }
        }
        Ok(Running {
            eal,
            ports: [outside, inside],
            pools,
            stats,
            handles,
            stop,
            steering,
            filter: if with_generations {
                None
            } else {
                spec.filter.clone()
            },
            banks,
            generations: with_generations,
            requests,
            logs,
            ct_events,
        })
    }

    /// Per-rule counters of the fixed ruleset summed over workers: (table, chain, rule index,
    /// packets, bytes). Empty with generations (the rule store maps handles to counters:
    /// `RuleStore::rule_counters` over [`Running::counter_banks`]).
    pub fn rule_counters(&self) -> Vec<(String, String, usize, u64, u64)> {
        match &self.filter {
            Some(compiled) => compiled.rule_counter_totals(&self.banks.iter().collect::<Vec<_>>()),
            None => Vec::new(),
        }
    }

    /// Each worker's rule counter bank (counter ids are stable across generations).
    pub fn counter_banks(&self) -> Vec<CounterBank> {
        self.banks.clone()
    }

    /// Asks every worker for its part of a dump and waits up to `timeout` for the answers.
    fn ask<T>(
        &self,
        timeout: Duration,
        make: impl Fn(crossbeam_channel::Sender<T>) -> WorkerRequest,
    ) -> Result<Vec<T>, String> {
        let deadline = std::time::Instant::now() + timeout;
        let mut waiting = Vec::new();
        for (i, tx) in self.requests.iter().enumerate() {
            let (rtx, rrx) = crossbeam_channel::bounded(1);
            tx.send_deadline(make(rtx), deadline)
                .map_err(|_| format!("worker {i} did not take the request within {timeout:?}"))?;
            waiting.push(rrx);
        }
        waiting
            .into_iter()
            .enumerate()
            .map(|(i, rx)| {
                rx.recv_deadline(deadline)
                    .map_err(|_| format!("worker {i} did not answer within {timeout:?}"))
            })
            .collect()
    }

    /// Conntrack entries matching `filter`, at most `max` per worker, as each worker's shard
    /// holds them (each worker copies its part between two bursts).
    pub fn conntrack_list(
        &self,
        filter: levee_conntrack::DumpFilter,
        max: usize,
        timeout: Duration,
    ) -> Result<Vec<levee_conntrack::EntrySnapshot>, String> {
        let parts = self.ask(timeout, |reply| WorkerRequest::CtDump { filter, max, reply })?;
        Ok(parts.into_iter().flatten().collect())
    }

    /// Each worker's conntrack entries per state.
    pub fn conntrack_counts(&self, timeout: Duration) -> Result<Vec<levee_conntrack::StateCounts>, String> {
        self.ask(timeout, |reply| WorkerRequest::CtCounts { reply })
    }

    /// Takes the `log` records the workers queued since the last call (at most `max`).
    pub fn drain_logs(&self, max: usize) -> Vec<LogRecord> {
        std::iter::from_fn(|| self.logs.pop()).take(max).collect()
    }

    /// Takes the conntrack events (new / update / destroy) the shards sent since the last call
    /// (at most `max`).
    pub fn drain_ct_events(&self, max: usize) -> Vec<levee_conntrack::Event> {
        self.ct_events
            .as_ref()
            .map(|rx| rx.try_iter().take(max).collect())
            .unwrap_or_default()
    }

    /// The fixed ruleset's log prefixes (a `LogRecord::prefix` indexes them); with
    /// generations the caller resolves prefixes against the generation it published.
    pub fn log_prefix(&self, index: u32) -> &str {
        self.filter
            .as_ref()
            .and_then(|c| c.program.log_prefixes.get(index as usize))
            .map_or("", String::as_str)
    }

    /// Whether the workers run published generations (see [`Running::start_with`]).
    pub fn runs_generations(&self) -> bool {
        self.generations
    }

    /// The flag that stops the workers (set it from a signal handler).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// The EAL guard.
    pub fn eal(&self) -> &Eal {
        &self.eal
    }

    /// A port by side.
    pub fn port(&self, side: Side) -> &EthPort {
        &self.ports[side as usize]
    }

    /// How flows map to workers.
    pub fn steering(&self) -> Steering {
        self.steering
    }

    /// Per-worker counters.
    pub fn worker_totals(&self) -> Vec<WorkerTotals> {
        self.stats.iter().map(|s| s.totals()).collect()
    }

    /// All workers' counters summed.
    pub fn totals(&self) -> WorkerTotals {
        let mut t = WorkerTotals::default();
        for w in self.worker_totals() {
            t.add(&w);
        }
        t
    }

    /// Device counters of both ports.
    pub fn device_stats(&self) -> [PortStats; 2] {
        [self.ports[0].stats(), self.ports[1].stats()]
    }

    /// Mbufs currently in use across the workers' pools.
    pub fn mbufs_in_use(&self) -> u32 {
        self.pools.iter().map(Mempool::in_use).sum()
    }

    /// Stops the workers (they drain first), stops the ports, and returns the final counters.
    pub fn shutdown(&mut self) -> (WorkerTotals, [PortStats; 2]) {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.handles.drain(..) {
            h.join();
        }
        let mut totals = WorkerTotals::default();
        for s in &self.stats {
            totals.add(&s.totals());
        }
        let dev = [self.ports[0].stats(), self.ports[1].stats()];
        for p in &self.ports {
            p.stop();
        }
        (totals, dev)
    }
}
