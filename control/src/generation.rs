//! Rule generations: how a new ruleset reaches every worker at once.
//!
//! The control thread builds generation N+1 off to the side (a [`RuleStore`] transaction,
//! compiled and verified) and publishes it with one pointer swap ([`Publisher::publish`]).
//! Each worker reads the current generation once per burst ([`GenerationReader::refresh`]),
//! so every packet of a burst — every packet at all — is judged by exactly one generation;
//! then it reports "seen generation N" in its own cache line. A commit returns when every
//! worker has reported the new generation ([`Publisher::wait_seen`], with a timeout and a
//! clear error), and its latency is recorded ([`CommitMetrics`]).
//!
//! Reclamation is quiescent-state based: the publisher keeps every retired generation until
//! all workers have reported a later one, and only then lets it go; a worker holds its own
//! reference to the generation it is running until it picks up the next one. A failed
//! transaction or verification publishes nothing and the running generation stays.
//!
//! Per burst, a worker pays one atomic load (`arc-swap`'s fast path, no reference-count
//! traffic) and one store; when the generation changed, a reference-count increment and
//! [`State::adopt`](levee_filter_vm::vm::State::adopt) (its counters, limits, quotas and
//! meters carry over; new slots start fresh).
//!
//! Threads: [`Publisher`] and [`Committer`] belong to the control thread; each worker owns
//! one [`GenerationReader`].

use crate::rules::{OpResult, RuleStore, Transaction, TxnError};
use arc_swap::ArcSwap;
use levee_filter_vm::vm::State;
use levee_filter_vm::Compiled;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One published ruleset.
#[derive(Debug)]
pub struct Generation {
    /// 1, 2, …: one more per commit.
    pub id: u64,
    /// What workers evaluate packets with.
    pub compiled: Arc<Compiled>,
}

/// What a worker reports: the generation it runs. [`SEEN_GONE`] for a worker that stopped.
#[repr(align(64))]
#[derive(Debug, Default)]
struct Seen(AtomicU64);

/// Reported by a worker that no longer runs (it never holds up a commit).
pub const SEEN_GONE: u64 = u64::MAX;

#[derive(Debug)]
struct Shared {
    current: ArcSwap<Generation>,
    seen: Box<[Seen]>,
}

/// The control thread's side: publishes generations and waits for workers.
#[derive(Debug)]
pub struct Publisher {
    shared: Arc<Shared>,
    /// Generations replaced but possibly still run by a worker, oldest first.
    retired: Vec<Arc<Generation>>,
}

/// Why a commit did not complete.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommitError {
    /// Nothing was published.
    #[error(transparent)]
    Txn(#[from] TxnError),
    /// The generation was published (and will stay), but these workers did not report it
    /// in time: they are stuck or not polling.
    #[error("generation {generation} is published, but worker(s) {workers:?} did not pick it up within {timeout_ms} ms")]
    Timeout {
        generation: u64,
        workers: Vec<usize>,
        timeout_ms: u64,
    },
}

impl Publisher {
    /// A publisher whose first generation (id 1) is `first`, for `workers` workers; returns
    /// each worker's reader.
    pub fn new(first: Compiled, workers: usize) -> (Publisher, Vec<GenerationReader>) {
        let g = Arc::new(Generation {
            id: 1,
            compiled: Arc::new(first),
        });
        let shared = Arc::new(Shared {
            current: ArcSwap::new(g.clone()),
            seen: (0..workers).map(|_| Seen(AtomicU64::new(1))).collect(),
        });
        let readers = (0..workers)
            .map(|index| GenerationReader {
                shared: shared.clone(),
                index,
                cur: g.clone(),
            })
            .collect();
        (
            Publisher {
                shared,
                retired: Vec::new(),
            },
            readers,
        )
    }

    /// The current generation.
    pub fn current(&self) -> Arc<Generation> {
        self.shared.current.load_full()
    }

    /// Publishes `compiled` as the next generation (one pointer swap); returns its id.
    pub fn publish(&mut self, compiled: Compiled) -> u64 {
        let id = self.shared.current.load().id + 1;
        let g = Arc::new(Generation {
            id,
            compiled: Arc::new(compiled),
        });
        let old = self.shared.current.swap(g);
        self.retired.push(old);
        self.reclaim();
        id
    }

    /// What each worker last reported (index = worker).
    pub fn seen(&self) -> Vec<u64> {
        self.shared
            .seen
            .iter()
            .map(|s| s.0.load(Ordering::Acquire))
            .collect()
    }

    /// The oldest generation a worker may still be running.
    pub fn min_seen(&self) -> u64 {
        self.seen().into_iter().min().unwrap_or(SEEN_GONE)
    }

    /// Lets go of retired generations every worker has moved past.
    pub fn reclaim(&mut self) {
        let min = self.min_seen();
        self.retired.retain(|g| g.id >= min);
    }

    /// Number of retired generations still held.
    pub fn retired(&self) -> usize {
        self.retired.len()
    }

    /// Waits until every worker runs generation `id` (or a later one), then reclaims.
    /// Returns how long it waited.
    pub fn wait_seen(&mut self, id: u64, timeout: Duration) -> Result<Duration, CommitError> {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let lagging: Vec<usize> = self
                .shared
                .seen
                .iter()
                .enumerate()
                .filter(|(_, s)| s.0.load(Ordering::Acquire) < id)
                .map(|(i, _)| i)
                .collect();
            if lagging.is_empty() {
                self.reclaim();
                return Ok(start.elapsed());
            }
            if start.elapsed() >= timeout {
                return Err(CommitError::Timeout {
                    generation: id,
                    workers: lagging,
                    timeout_ms: timeout.as_millis() as u64,
                });
            }
            // Workers poll in bursts of microseconds: spin first, then yield the core.
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// A worker's view of the generations (see the module docs). Dropping it reports the worker
/// gone, so a stopped worker never holds up a commit.
#[derive(Debug)]
pub struct GenerationReader {
    shared: Arc<Shared>,
    index: usize,
    cur: Arc<Generation>,
}

impl GenerationReader {
    /// Once per burst: picks up the current generation, makes `state` fit it when it
    /// changed, and reports it seen. Every packet of the burst is then judged with the
    /// returned generation.
    #[inline]
    pub fn refresh(&mut self, state: &mut State) -> &Arc<Generation> {
        let now = self.shared.current.load();
        if now.id != self.cur.id {
            self.cur = arc_swap::Guard::into_inner(now);
            state.adopt(&self.cur.compiled.program);
            self.shared.seen[self.index]
                .0
                .store(self.cur.id, Ordering::Release);
        }
        &self.cur
    }

    /// The generation this worker runs.
    pub fn current(&self) -> &Arc<Generation> {
        &self.cur
    }

    /// This worker's index.
    pub fn index(&self) -> usize {
        self.index
    }
}

impl Drop for GenerationReader {
    fn drop(&mut self) {
        if let Some(s) = self.shared.seen.get(self.index) {
            s.0.store(SEEN_GONE, Ordering::Release);
        }
    }
}

/// Commit latencies (publish to every worker running the new generation, including the
/// transaction's compile): what the metrics exporter reads.
#[derive(Debug, Default)]
pub struct CommitMetrics {
    /// Commits that published a generation.
    pub commits: AtomicU64,
    /// Transactions refused (nothing published).
    pub refused: AtomicU64,
    /// Commits whose workers did not all report in time.
    pub timeouts: AtomicU64,
    /// The last commit's latency, in nanoseconds.
    pub last_ns: AtomicU64,
    /// The largest commit latency seen, in nanoseconds.
    pub max_ns: AtomicU64,
    /// Sum of commit latencies, in nanoseconds.
    pub total_ns: AtomicU64,
}

impl CommitMetrics {
    fn record(&self, d: Duration) {
        let ns = d.as_nanos().min(u64::MAX as u128) as u64;
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.last_ns.store(ns, Ordering::Relaxed);
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
        self.total_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

/// A commit that published a generation every worker runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub generation: u64,
    /// One per operation of the transaction.
    pub results: Vec<OpResult>,
    /// From the start of the commit until every worker ran the new generation.
    pub latency: Duration,
}

/// The rule store and the publisher together: what the API calls to change the ruleset.
/// A check of a prepared ruleset against what the running dataplane can do (for example
/// `synproxy` statements without connection tracking): an error refuses the transaction.
pub type GenerationCheck = Box<dyn Fn(&Compiled) -> Result<(), String> + Send>;

pub struct Committer {
    store: RuleStore,
    publisher: Publisher,
    /// How long a commit waits for workers.
    pub timeout: Duration,
    /// Run on every prepared ruleset before it is published (None: no check).
    pub check: Option<GenerationCheck>,
    metrics: Arc<CommitMetrics>,
    clock: Box<dyn Fn() -> u64 + Send>,
}

impl Committer {
    /// A committer for `store`, whose current compiled form the publisher already runs as
    /// its generation 1 (see [`Publisher::new`]). `clock` is the workers' monotonic clock
    /// in nanoseconds (element timeouts start from it).
    pub fn new(mut store: RuleStore, publisher: Publisher, clock: Box<dyn Fn() -> u64 + Send>) -> Committer {
        store.set_generation(publisher.current().id);
        Committer {
            store,
            publisher,
            timeout: Duration::from_secs(1),
            check: None,
            metrics: Arc::default(),
            clock,
        }
    }

    /// A store built from `txn`, its first generation published for `workers` readers.
    pub fn start(
        txn: &Transaction,
        workers: usize,
        clock: Box<dyn Fn() -> u64 + Send>,
    ) -> Result<(Committer, Vec<GenerationReader>), TxnError> {
        let mut store = RuleStore::new();
        let (compiled, _) = store.commit_local(txn, clock())?;
        let (publisher, readers) = Publisher::new(compiled, workers);
        Ok((Committer::new(store, publisher, clock), readers))
    }

    /// The store as of the current generation.
    pub fn store(&self) -> &RuleStore {
        &self.store
    }

    /// The publisher.
    pub fn publisher(&mut self) -> &mut Publisher {
        &mut self.publisher
    }

    /// Commit latency metrics.
    pub fn metrics(&self) -> Arc<CommitMetrics> {
        self.metrics.clone()
    }

    /// The current generation's id.
    pub fn generation(&self) -> u64 {
        self.store.generation()
    }

    /// Applies `txn` all or nothing, publishes the result as the next generation and waits
    /// until every worker runs it. Refused transactions publish nothing.
    pub fn commit(&mut self, txn: &Transaction) -> Result<Committed, CommitError> {
        let start = Instant::now();
        let prepared = match self.store.prepare(txn, (self.clock)()) {
            Ok(p) => p,
            Err(e) => {
                self.metrics.refused.fetch_add(1, Ordering::Relaxed);
                return Err(e.into());
            }
        };
        if let Some(Err(why)) = self.check.as_ref().map(|check| check(&prepared.compiled)) {
            self.metrics.refused.fetch_add(1, Ordering::Relaxed);
            return Err(TxnError::Verify(why).into());
        }
        // A transaction of `ensure`s that all found their rule changes nothing: no new
        // generation (frontends that re-assert their rules periodically cost nothing).
        let unchanged = !txn.ops.is_empty()
            && txn
                .ops
                .iter()
                .all(|op| matches!(op, crate::rules::Op::EnsureRule { .. }))
            && prepared
                .results
                .iter()
                .all(|r| matches!(r, OpResult::Rule { added: false, .. }));
        if unchanged {
            return Ok(Committed {
                generation: self.store.generation(),
                results: prepared.results,
                latency: start.elapsed(),
            });
        }
        let id = self.publisher.publish(prepared.compiled);
        let mut store = prepared.store;
        store.set_generation(id);
        self.store.install(store);
        let waited = self.publisher.wait_seen(id, self.timeout);
        let latency = start.elapsed();
        self.metrics.record(latency);
        if let Err(e) = waited {
            self.metrics.timeouts.fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
        Ok(Committed {
            generation: id,
            results: prepared.results,
            latency,
        })
    }
}
