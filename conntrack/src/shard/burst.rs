//! Tracking a burst of packets with their cache misses overlapped.
//!
//! Owns [`Burst`], the scratch of one rx burst, and the shard's burst methods; called on the
//! worker thread that owns the shard. At 1 M flows a lookup misses the cache on the index line
//! and on the two or three lines of the entry (and the TLB on both pages), and in a
//! packet-at-a-time loop each of those misses waits for the one before it. A burst does the
//! lookups of up to [`BURST_MAX`] packets in stages, each a loop of loads that do not depend on
//! one another, so the CPU has all of them in flight at once:
//! 1. key and SipHash of every packet (no table memory);
//! 2. load every home bucket of the index, then read the buckets (now cached) for the first
//!    entry whose tag matches;
//! 3. load every line of those entries (and their labels).
//!
//! Stage 4, the state machines, is [`Shard::track_prepared`], called per packet when the
//! worker gets to it, and finds everything in L1. Cost at 1 M flows (this repository's shared
//! 2-core VM, `perf/RESULTS.md`): 79 ns a packet in the best run, against 340 ns for `track`
//! alone; about 45 ns of it is the same work with every line cached. The staged loads, the
//! other 30 ns, are bounded by how many misses and page walks the core keeps in flight, not
//! by their latency: bigger bursts help a little (prepare: 45, 40, 39 ns a packet for 32, 64,
//! 128 packets), fewer lines per entry more (39 to 32 ns at 128 when one line of each entry
//! is loaded instead of all).
//!
//! Loads, not prefetches: the stages fold the loaded values into [`Burst`] so they stay in
//! the program. Prefetch instructions are `unsafe` intrinsics (`core::hint::prefetch_read` is
//! not stable), which this crate forbids; with a reorder window of hundreds of instructions
//! and stage loops a few instructions long, the CPU issues a stage's loads together all the
//! same. What loads cannot do is overlap misses with the state machines of other packets (a
//! load that misses holds up retirement). An experiment with `_mm_prefetch` and a pipeline
//! over two bursts (index lines of burst N+1 and its entries prefetched while burst N is
//! tracked) gained 10% (76 to 68 ns a packet at 1 M flows): not worth addresses handed out
//! for the dataplane to prefetch, so the API exposes none.
//!
//! Correctness does not depend on the burst: a probe only records the key, its hash and what
//! the home bucket said, and [`Shard::track_prepared`] checks it against the table as it is
//! then (the candidate entry must be live and hold the key; "absent" holds only while nothing
//! was inserted since). So a worker may confirm, insert, remove, expire or set marks between
//! the packets of a prepared burst, and each packet is classified exactly as
//! [`Shard::track`] would classify it at that moment. A probe that no longer holds, or a
//! burst prepared for other packets, only costs a normal lookup.
//!
//! How a worker calls it (one [`Burst`] per worker, kept next to the shard):
//! ```text
//! let n = rx_burst(&mut pkts);                      // up to 32 (or both ports: up to 64)
//! parse every packet (infos[i]: Option<FrameInfo>, None for packets not tracked here);
//! shard.prepare(&mut burst, (0..n).map(|i| infos[i].as_ref().map(|f| (pkts[i].data(), f))));
//! for i in 0..n {
//!     let t = shard.track_prepared(&burst, i, pkts[i].data(), info, now_ns);  // not track()
//!     run the filter; shard.confirm(pending, now_ns) if accepted; forward
//! }
//! shard.expire(now_ns, budget);                     // once per loop, as before
//! ```
//! Position `i` is the packet's place in the iterator given to `prepare`, so `None` keeps the
//! places of packets that are not tracked (non-IP, handed to another worker). Packets of the
//! same flow in one burst are fine: the second finds what the first left (or, after a
//! `confirm`, the new entry). Packets handed over by other workers can go through `track` as
//! before, or through a burst of their own. [`Shard::track_burst`] is the same loop without a
//! filter in between: it classifies exactly like sequential `track` calls.
//! [`Shard::prepare_lookup`] and [`Shard::lookup_prepared`] are the read-only pair: which
//! entry each packet belongs to, without tracking it.

use levee_packet::parse::FrameInfo;

use super::{Now, Pkt, Shard};
use crate::index::Home;
use crate::key::Key;
use crate::{Direction, EntryId, Outcome, Tracked};

/// Most packets one [`Burst`] holds: DPDK's usual rx burst of 32, or the bursts of both ports
/// prepared together (the more misses in flight at once, the better: at 1 M flows the staged
/// loads cost 10% less per packet in bursts of 64 than of 32).
pub const BURST_MAX: usize = 64;

/// What stages 1 and 2 found for one packet.
#[derive(Clone, Copy, Debug)]
pub(super) struct Probe {
    /// The key the packet's tracker looks up first.
    pub key: Key,
    /// Its hash under the shard's key.
    pub hash: u64,
    /// What the key's home bucket said when the burst was prepared.
    pub home: Home,
}

/// The scratch of one burst: a probe per packet (see the module documentation). About 3.6 kB;
/// a worker keeps one and reuses it for every burst.
#[derive(Clone, Debug)]
pub struct Burst {
    probes: [Option<Probe>; BURST_MAX],
    len: usize,
    /// The index's insert count when the burst was prepared.
    epoch: u64,
    /// The values stages 2 and 3 loaded, folded together so the loads stay in the program.
    sink: u64,
}

impl Default for Burst {
    fn default() -> Self {
        Burst::new()
    }
}

impl Burst {
    /// An empty burst.
    pub const fn new() -> Burst {
        Burst {
            probes: [None; BURST_MAX],
            len: 0,
            epoch: 0,
            sink: 0,
        }
    }

    /// Packets (tracked or not) in the prepared burst.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is prepared.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<X: Default> Shard<X> {
    /// Stages 1 to 3 for up to [`BURST_MAX`] packets: hashes their keys and brings the index
    /// lines and entries their tracking will read into the cache. `None` is a packet the
    /// worker will not track (it keeps the positions of the others). Reads the shard only;
    /// packets past the first [`BURST_MAX`] are left out (and tracked without help).
    pub fn prepare<'a, I>(&self, burst: &mut Burst, frames: I)
    where
        I: IntoIterator<Item = Option<(&'a [u8], &'a FrameInfo)>>,
    {
        self.prepare_with(burst, frames, Self::touch_entry);
    }

    /// [`Shard::prepare`] for [`Shard::lookup_prepared`]: of each entry it loads only what a
    /// lookup reads (key, status and expiry: one line of an entry's two or three), so the
    /// burst's loads finish sooner. Tracking such a burst is exact too, just slower.
    pub fn prepare_lookup<'a, I>(&self, burst: &mut Burst, frames: I)
    where
        I: IntoIterator<Item = Option<(&'a [u8], &'a FrameInfo)>>,
    {
        self.prepare_with(burst, frames, |sh, idx| {
            let e = &sh.entries[idx as usize];
            u64::from(e.key.addr[0][0]) ^ u64::from(e.expires)
        });
    }

    #[inline(always)]
    fn prepare_with<'a, I>(&self, burst: &mut Burst, frames: I, touch: impl Fn(&Self, u32) -> u64)
    where
        I: IntoIterator<Item = Option<(&'a [u8], &'a FrameInfo)>>,
    {
        burst.len = 0;
        burst.epoch = self.index.inserts();
        // Stage 1: keys and hashes.
        for frame in frames.into_iter().take(BURST_MAX) {
            burst.probes[burst.len] = frame.and_then(|(frame, info)| {
                let (key, _) = Pkt::of(frame, info).ok()?.own_key()?;
                Some(Probe {
                    key,
                    hash: key.hash(&self.hash_key),
                    home: Home::Unknown,
                })
            });
            burst.len += 1;
        }
        let probes = &mut burst.probes[..burst.len];
        // Stage 2: every home line in flight at once, then read from the cache.
        let mut sink = 0u64;
        for p in probes.iter().flatten() {
            sink ^= self.index.touch(p.hash);
        }
        for p in probes.iter_mut().flatten() {
            p.home = self.index.home_of(p.hash);
        }
        // Stage 3: the lines of the candidate entries.
        for p in probes.iter().flatten() {
            if let Home::Candidate(idx) = p.home {
                sink ^= touch(self, idx);
            }
        }
        burst.sink = sink;
    }

    /// Reads one field on each cache line of entry `idx` (see `Entry`) and its label.
    #[inline]
    fn touch_entry(&self, idx: u32) -> u64 {
        let i = idx as usize;
        let e = &self.entries[i];
        let mut x = u64::from(e.key.addr[0][0]) ^ u64::from(e.next) ^ u64::from(e.mark);
        if let Some(label) = self.labels.get(i) {
            x ^= *label as u64;
        }
        x
    }

    /// Stage 4 for packet `i` of `burst`: exactly [`Shard::track`] of the packet now, faster
    /// when the burst was prepared with this packet at position `i`. A burst prepared for
    /// other packets, or a position past its end, only costs the speed.
    pub fn track_prepared(
        &mut self,
        burst: &Burst,
        i: usize,
        frame: &[u8],
        info: &FrameInfo,
        now_ns: u64,
    ) -> Tracked {
        let o = self.classify_prepared(burst, i, frame, info, now_ns);
        self.expand(o, now_ns)
    }

    /// [`Shard::track_prepared`] in brief (see [`Outcome`]).
    pub fn classify_prepared(
        &mut self,
        burst: &Burst,
        i: usize,
        frame: &[u8],
        info: &FrameInfo,
        now_ns: u64,
    ) -> Outcome {
        match self.probe(burst, i) {
            Some(probe) => self.track_hinted(frame, info, now_ns, Some(&probe)),
            None => self.classify(frame, info, now_ns),
        }
    }

    /// Probe `i` of `burst`, with an `Absent` that no longer holds turned into `Unknown`.
    #[inline]
    fn probe(&self, burst: &Burst, i: usize) -> Option<Probe> {
        let mut probe = (*burst.probes[..burst.len].get(i)?)?;
        if probe.home == Home::Absent && burst.epoch != self.index.inserts() {
            // An insert since (a confirm of an earlier packet of the burst) may have added it.
            probe.home = Home::Unknown;
        }
        Some(probe)
    }

    /// The live entry the packet belongs to (its own flow; an ICMP error's quoted flow is
    /// not looked up) and the packet's direction in it, changing nothing: the burst form of
    /// [`Shard::lookup_tuple`], exact whatever happened since `burst` was prepared.
    pub fn lookup_prepared(
        &self,
        burst: &Burst,
        i: usize,
        frame: &[u8],
        info: &FrameInfo,
        now_ns: u64,
    ) -> Option<(EntryId, Direction)> {
        let (key, side) = Pkt::of(frame, info).ok()?.own_key()?;
        let (hash, home) = match self.probe(burst, i) {
            Some(p) if p.key == key => (p.hash, Some(p.home)),
            _ => (key.hash(&self.hash_key), None),
        };
        let idx = self.find_hinted(key, hash, home)?;
        let e = &self.entries[idx as usize];
        if Now::new(now_ns).left(e.expires) <= 0 {
            return None;
        }
        // ICMP entries are opened by the requester (end 0), so this holds for them too.
        let dir = if side == e.orig_side() {
            Direction::Original
        } else {
            Direction::Reply
        };
        Some((EntryId(idx), dir))
    }

    /// Tracks `frames` in bursts of [`BURST_MAX`] and appends one result per frame to `out`,
    /// in order: the same results, counters and events as calling [`Shard::track`] on each
    /// frame in turn. `burst` is scratch.
    pub fn track_burst(
        &mut self,
        burst: &mut Burst,
        frames: &[(&[u8], &FrameInfo)],
        now_ns: u64,
        out: &mut Vec<Tracked>,
    ) {
        for chunk in frames.chunks(BURST_MAX) {
            self.prepare(burst, chunk.iter().map(|&(frame, info)| Some((frame, info))));
            for (i, &(frame, info)) in chunk.iter().enumerate() {
                out.push(self.track_prepared(burst, i, frame, info, now_ns));
            }
        }
    }
}
