//! The outcome cache: whole-ruleset verdicts remembered by what the ruleset reads of a packet
//! (Open vSwitch's "megaflows", for an nftables-style ruleset).
//!
//! A generation whose rules only match, count and decide ([`crate::exec::Exec::pure_reads`]:
//! no limit, quota, log, payload write, set update, time key, or lookup in a set whose
//! elements expire) gives every packet an outcome (verdict, actions, and which counters it
//! bumps: bumped again, with the packet's length, on each hit) that is a function of a
//! few packet fields: the payload ranges, meta keys and ct keys its rules load, the packet's
//! family and transport protocol, and the side it arrived on (whose interface names, indexes
//! and mark the worker's per-side metadata fixes). [`CachePlan`] lists those fields; a worker's
//! [`VerdictCache`] maps their values to the outcome the interpreter gave the first packet
//! that had them, so a flood of packets that differ only in fields the rules never read (a SYN
//! flood from random sources, against rules on destination and port) costs a key build and one
//! probe per packet instead of an interpretation.
//!
//! Conntrack: the ct keys are part of the key, read from the facts the caller passes in
//! (before tracking: none). An evaluation whose tracking callback consulted the table (returned
//! facts) is not cached, because later chains saw facts that are not in the key; one the
//! ruleset dropped before tracking, or `notrack`ed, is.
//!
//! Cost control: a direct-mapped table of [`SLOTS`] outcomes; when fewer than a quarter of a
//! window's lookups hit (the rules read a field that varies per packet, e.g. a source address
//! blocklist under a random-source flood), the worker stops looking for [`BYPASS`] packets and
//! then tries again, so a cache that does not help costs about one failed probe per
//! thousand packets.
//!
//! Threads: a [`CachePlan`] is immutable and shared with the generation; each worker owns its
//! [`VerdictCache`].

use std::sync::Arc;

use crate::ctx::{HookKind, Layout};
use crate::vm::{self, Actions, Base, CtKey, MetaKey, Verdict};

/// Words of a key: a header (side, family, transport protocol, which probes found their
/// field), then the probed values, packed (a value of up to 8 bytes within one word, a
/// longer one in two words of its own).
const KEY_WORDS: usize = 8;
/// Most probes a plan can have (one presence bit each in the header's upper half).
const MAX_PROBES: usize = 32;
/// Outcomes a worker keeps.
pub const SLOTS: usize = 256;
/// Lookups per hit-rate window.
const WINDOW: u32 = 1024;
/// Packets evaluated without looking after a window with too few hits.
pub const BYPASS: u32 = 1 << 16;

/// One field a ruleset reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Probe {
    /// `len` bytes at `offset` from `base` (absent when the packet has no such bytes).
    Payload { base: Base, offset: u16, len: u8 },
    /// A meta key (never a time key, nor the family or transport protocol, which every key
    /// holds: see [`Probe::meta`]).
    Meta(MetaKey),
    /// A ct key, from the facts the caller passes in.
    Ct(CtKey),
}

impl Probe {
    /// The probe of meta `key`; `None` for the keys that read the clock (a ruleset that uses
    /// them is not cached).
    pub(crate) fn meta(key: MetaKey) -> Option<Option<Probe>> {
        match key {
            MetaKey::TimeNs | MetaKey::Day | MetaKey::Hour => None,
            // In the key's header already (`meta32` reads them from the context, which has
            // them from the same layout).
            MetaKey::L4Proto | MetaKey::NfProto => Some(None),
            k => Some(Some(Probe::Meta(k))),
        }
    }

    fn len(self) -> usize {
        match self {
            Probe::Payload { len, .. } => usize::from(len),
            Probe::Meta(k) => k.data_len(),
            Probe::Ct(k) => k.data_len(),
        }
    }
}

/// Where a probed value goes: key word, and bit shift within it (0 for a two-word value).
#[derive(Clone, Copy, Debug)]
struct Place {
    word: u8,
    shift: u8,
}

/// The fields a generation's outcome depends on, each with its place in the key.
#[derive(Debug)]
pub struct CachePlan {
    /// Every field read, in key order.
    probes: Vec<Probe>,
    /// The payload probes of up to 4 bytes (the common ones), laid out for the key build's
    /// tight loop: base, offset, length, word, shift, presence bit.
    small: Vec<(u8, u16, u8, u8, u8, u8)>,
    /// Where `ct state` goes, if read.
    ct_state: Option<Place>,
    /// The other probes, with their presence bit.
    rest: Vec<(Probe, Place, u8)>,
    /// Key words in use (the rest stay zero).
    words: usize,
    /// Some probe is a meta key (the key build then needs the whole packet context).
    meta: bool,
    /// The key is built in registers ([`CachePlan::key3`]): the plan has only small payload
    /// probes and `ct state`, in words 1 and 2 (the common case: a SYN-proxy or port ruleset),
    /// and the cache hashes and compares the words from there ([`VerdictCache::get3`]), with
    /// no word stored and read back in between.
    fast: bool,
}

impl CachePlan {
    /// The plan for a program that reads `reads` (from [`crate::exec::Exec::pure_reads`]);
    /// `None` when they do not fit a key, or when a chain hooks ingress (whose packets the
    /// key does not describe: `meta len` differs there).
    pub(crate) fn of(reads: Option<Vec<Probe>>, hooks_ingress: bool) -> Option<Arc<CachePlan>> {
        let reads = reads?;
        if hooks_ingress || reads.len() > MAX_PROBES {
            return None;
        }
        // Shorter values first, so that they share words.
        let mut reads = reads;
        reads.sort_by_key(|p| p.len());
        // The next free word, and bytes used of the one before it (8: full).
        let (mut word, mut used) = (1usize, 8usize);
        let mut probes = Vec::with_capacity(reads.len());
        for p in reads {
            let n = p.len();
            let place = match n {
                0 => return None,
                1..=8 if used + n <= 8 => {
                    used += n;
                    Place {
                        word: (word - 1) as u8,
                        shift: ((used - n) * 8) as u8,
                    }
                }
                1..=8 => {
                    word += 1;
                    used = n;
                    Place {
                        word: (word - 1) as u8,
                        shift: 0,
                    }
                }
                9..=16 => {
                    word += 2;
                    used = 8;
                    Place {
                        word: (word - 2) as u8,
                        shift: 0,
                    }
                }
                _ => return None,
            };
            if word > KEY_WORDS {
                return None;
            }
            probes.push((p, place));
        }
        let (mut small, mut ct_state, mut rest) = (Vec::new(), None, Vec::new());
        for (i, &(p, place)) in probes.iter().enumerate() {
            match p {
                Probe::Payload { base, offset, len } if len <= 4 => {
                    small.push((base as u8, offset, len, place.word, place.shift, i as u8))
                }
                Probe::Ct(CtKey::State) => ct_state = Some(place),
                _ => rest.push((p, place, i as u8)),
            }
        }
        let meta = probes.iter().any(|(p, _)| matches!(p, Probe::Meta(_)));
        let fast = rest.is_empty() && !meta && word <= 3;
        Some(Arc::new(CachePlan {
            meta,
            probes: probes.into_iter().map(|(p, _)| p).collect(),
            small,
            ct_state,
            rest,
            // A fast plan always hashes and compares three words (unused ones are zero).
            words: if fast { 3 } else { word },
            fast,
        }))
    }

    /// The fields probed, in key order.
    pub fn probes(&self) -> impl Iterator<Item = Probe> + '_ {
        self.probes.iter().copied()
    }

    /// The key of a packet: `side` (which per-side metadata `meta` is), the frame and its
    /// parse, and `meta` (with the conntrack facts before tracking); returns the packet
    /// length the IP hooks' counters count. Each value is read as
    /// the interpreter reads it: payload through the same layout and bounds
    /// ([`crate::ctx::Layout`]), meta and ct keys from the same context.
    ///
    /// The key is written into `out` (zeroed first) word by word, and the cache reads it back
    /// word by word: a copy or a comparison in wider pieces would wait for the word stores to
    /// retire (store forwarding does not merge them), which cost more than the rest together.
    #[inline]
    pub fn key_into(
        &self,
        side: u8,
        frame: &[u8],
        info: Option<&levee_packet::parse::FrameInfo>,
        meta: &crate::ctx::PacketMeta,
        out: &mut Key,
    ) -> u32 {
        let l = Layout::of(frame.len(), info, HookKind::Ip);
        let ctx = self
            .meta
            .then(|| crate::ctx::packet_ctx_from(frame, info, meta, HookKind::Ip));
        let spans = spans(&l, frame.len());
        out.0 = [0u64; KEY_WORDS];
        let k = &mut out.0;
        let mut present = 0u64;
        for &(base, offset, len, at, shift, bit) in &self.small {
            let Some(src) = payload(frame, &spans, usize::from(base), offset, len) else {
                continue;
            };
            present |= 1 << bit;
            k[usize::from(at) & (KEY_WORDS - 1)] |= small_word(src) << shift;
        }
        if let Some(place) = self.ct_state {
            k[usize::from(place.word) & (KEY_WORDS - 1)] |= u64::from(meta.ct_state.bit()) << place.shift;
        }
        for &(probe, place, bit) in &self.rest {
            let (at, shift) = (usize::from(place.word), u32::from(place.shift));
            let mut v = [0u8; 16];
            let n = match probe {
                Probe::Payload { base, offset, len } => {
                    let Some(src) = payload(frame, &spans, base as usize, offset, len) else {
                        continue;
                    };
                    present |= 1 << bit;
                    v[..src.len()].copy_from_slice(src);
                    src.len()
                }
                Probe::Ct(key) => {
                    ct_probe(key, meta, &mut v);
                    key.data_len()
                }
                Probe::Meta(key) => {
                    if let Some(p) = &ctx {
                        vm::meta_value(key, p, &mut v);
                    }
                    key.data_len()
                }
            };
            put(k, at, shift, n, &v);
        }
        k[0] = header_word(side, &l, present);
        l.len
    }
}

impl CachePlan {
    /// Whether the plan's key is built in registers ([`CachePlan::key3`]).
    #[inline]
    pub(crate) fn fast(&self) -> bool {
        self.fast
    }

    /// [`CachePlan::key_into`] for a plan whose key is built in registers
    /// ([`CachePlan::fast`]): the same three words, returned by value, and the packet length.
    #[inline(always)]
    pub(crate) fn key3(
        &self,
        side: u8,
        frame: &[u8],
        info: Option<&levee_packet::parse::FrameInfo>,
        meta: &crate::ctx::PacketMeta,
    ) -> ([u64; 3], u32) {
        let l = Layout::of(frame.len(), info, HookKind::Ip);
        let spans = spans(&l, frame.len());
        // Each value goes to word 1 or 2: a mask of all ones selects word 2.
        let hi = |word: u8| 0u64.wrapping_sub(u64::from(word == 2));
        let (mut w1, mut w2, mut present) = (0u64, 0u64, 0u64);
        for &(base, offset, len, at, shift, bit) in &self.small {
            let Some(src) = payload(frame, &spans, usize::from(base), offset, len) else {
                continue;
            };
            present |= 1 << bit;
            let v = small_word(src) << shift;
            w1 |= v & !hi(at);
            w2 |= v & hi(at);
        }
        if let Some(place) = self.ct_state {
            let v = u64::from(meta.ct_state.bit()) << place.shift;
            w1 |= v & !hi(place.word);
            w2 |= v & hi(place.word);
        }
        ([header_word(side, &l, present), w1, w2], l.len)
    }
}

/// Where each base's fields may lie in a `frame_len`-byte frame of layout `l` (as
/// `Layout::field` decides, once per base, not per probe), link, network and transport; an
/// absent header gets an empty span.
#[inline(always)]
fn spans(l: &Layout, frame_len: usize) -> [(usize, usize); 3] {
    let none = (1usize, 0usize);
    [
        l.field(frame_len, Base::Link, 0, 0)
            .map_or(none, |s| (s, frame_len)),
        l.field(frame_len, Base::Network, 0, 0)
            .map_or(none, |s| (s, l.l3_end)),
        l.field(frame_len, Base::Transport, 0, 0)
            .map_or(none, |s| (s, l.l3_end)),
    ]
}

/// The `len` bytes at `offset` from base `base` (an index into `spans`), if the packet has
/// them.
#[inline(always)]
fn payload<'a>(
    frame: &'a [u8],
    spans: &[(usize, usize); 3],
    base: usize,
    offset: u16,
    len: u8,
) -> Option<&'a [u8]> {
    let (start, end) = spans[base];
    let (from, n) = (start + usize::from(offset), usize::from(len));
    frame.get(from..from + n).filter(|_| from + n <= end)
}

/// A value of up to 4 bytes as the low bytes of a word, in packet order.
#[inline(always)]
fn small_word(src: &[u8]) -> u64 {
    match *src {
        [a] => u64::from(a),
        [a, b] => u64::from(u16::from_le_bytes([a, b])),
        [a, b, c] => u64::from(u32::from_le_bytes([a, b, c, 0])),
        [a, b, c, d] => u64::from(u32::from_le_bytes([a, b, c, d])),
        _ => 0,
    }
}

/// Word 0 of a key: side, family, transport protocol and which probes found their field.
#[inline(always)]
fn header_word(side: u8, l: &Layout, present: u64) -> u64 {
    u64::from(side) | u64::from(l.nfproto) << 8 | u64::from(l.l4proto) << 16 | present << 32
}

/// Ct key `key` of the facts in `meta`. Out of line: inlined, LLVM computed every ct key's
/// value before the probe loop (for a ruleset that reads only the state), reading fields
/// the worker had just written in other widths (a store-forwarding stall per packet).
#[inline(never)]
fn ct_probe(key: CtKey, meta: &crate::ctx::PacketMeta, v: &mut [u8; 16]) {
    vm::ct_value(key, &vm::CtView::of(meta), v);
}

/// Puts the `n` bytes of `v` at word `at`, bit `shift` (two words for more than 8 bytes).
#[inline]
fn put(k: &mut [u64; KEY_WORDS], at: usize, shift: u32, n: usize, v: &[u8; 16]) {
    let w = u128::from_le_bytes(*v);
    if n > 8 {
        k[at] = w as u64;
        k[at + 1] = (w >> 64) as u64;
    } else {
        k[at] |= (w as u64) << shift;
    }
}

/// A packet's key under a [`CachePlan`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Key([u64; KEY_WORDS]);

impl Key {
    /// The key whose first three words are `w` (the rest zero): what [`CachePlan::key_into`]
    /// writes for a plan whose key is built in registers.
    #[inline]
    pub(crate) fn from3(w: [u64; 3]) -> Key {
        let mut k = Key::default();
        k.0[..3].copy_from_slice(&w);
        k
    }

    /// Whether the first `words` words are `other`'s, read one word at a time (an early exit
    /// keeps the compiler from comparing in vector pieces: see [`CachePlan::key_into`]).
    #[inline]
    fn same(&self, other: &Key, words: usize) -> bool {
        for i in 0..words.min(KEY_WORDS) {
            if self.0[i] != other.0[i] {
                return false;
            }
        }
        true
    }
}

/// Most counters one cached outcome bumps (an evaluation that bumps more is not cached).
const MAX_COUNTED: usize = 8;

#[derive(Clone, Copy, Debug)]
struct Slot {
    key: Key,
    outcome: Outcome,
}

/// A remembered outcome: verdict, actions, and the counters the evaluation bumped.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Outcome {
    pub(crate) verdict: Verdict,
    pub(crate) actions: Actions,
    counted: [u32; MAX_COUNTED],
    n_counted: u8,
}

impl Outcome {
    /// The counters to bump again, in the order the evaluation bumped them.
    pub(crate) fn counted(&self) -> &[u32] {
        &self.counted[..usize::from(self.n_counted)]
    }
}

/// What a worker's cache did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Packets answered from the cache.
    pub hits: u64,
    /// Packets looked up and interpreted.
    pub misses: u64,
    /// Packets interpreted without a lookup (bypass after a window of few hits).
    pub bypassed: u64,
}

/// One worker's outcomes under one generation's [`CachePlan`] (it empties itself when handed
/// another generation's plan).
#[derive(Debug)]
pub struct VerdictCache {
    slots: Box<[Option<Slot>]>,
    /// The plan the slots were filled under (held, so its address is not reused meanwhile).
    plan: Option<Arc<CachePlan>>,
    /// Key words the plan uses (the slot hash reads only these).
    words: usize,
    seed: u64,
    window: u32,
    window_hits: u32,
    bypass: u32,
    /// The slot of the last register-built key that was looked up (see
    /// [`VerdictCache::get3`]).
    last: usize,
    /// The counter-id buffer of misses (see [`VerdictCache::take_log`]).
    log: Vec<u32>,
    pub stats: CacheStats,
}

impl VerdictCache {
    /// An empty cache; `seed` keys its slot hash (a per-worker secret, so that which packets
    /// share a slot is not predictable from outside).
    pub fn new(seed: u64) -> VerdictCache {
        VerdictCache {
            slots: vec![None; SLOTS].into_boxed_slice(),
            plan: None,
            words: KEY_WORDS,
            seed: seed | 1,
            window: 0,
            window_hits: 0,
            bypass: 0,
            last: 0,
            log: Vec::with_capacity(MAX_COUNTED * 2),
            stats: CacheStats::default(),
        }
    }

    /// Whether to look this packet up (false while bypassing), for generation plan `plan`
    /// (a new plan empties the cache).
    #[inline]
    pub(crate) fn active(&mut self, plan: &Arc<CachePlan>) -> bool {
        if self.bypass > 0 {
            self.bypass -= 1;
            self.stats.bypassed += 1;
            return false;
        }
        if !self.plan.as_ref().is_some_and(|p| Arc::ptr_eq(p, plan)) {
            self.slots.iter_mut().for_each(|s| *s = None);
            self.plan = Some(plan.clone());
            self.words = plan.words;
        }
        true
    }

    /// The slot of `key`: each word multiplied on its own (no chain of dependent multiplies
    /// from one word to the next), the products folded, then one final mix.
    #[inline]
    fn slot(&self, key: &Key) -> usize {
        let mut h = self.seed;
        for (i, &w) in key.0.iter().enumerate().take(self.words) {
            h ^= self.mix(i, w);
        }
        Self::finish(h)
    }

    /// [`VerdictCache::slot`] of a three-word key held in registers (the same value as for
    /// [`Key::from3`] of it, when the plan uses three words).
    #[inline(always)]
    fn slot3(&self, w: &[u64; 3]) -> usize {
        Self::finish(self.seed ^ self.mix(0, w[0]) ^ self.mix(1, w[1]) ^ self.mix(2, w[2]))
    }

    #[inline(always)]
    fn mix(&self, i: usize, w: u64) -> u64 {
        const M: [u64; KEY_WORDS] = [
            0x9e37_79b9_7f4a_7c15,
            0xc2b2_ae3d_27d4_eb4f,
            0x1656_67b1_9e37_79f9,
            0xd6e8_feb8_6659_fd93,
            0xff51_afd7_ed55_8ccd,
            0xc4ce_b9fe_1a85_ec53,
            0x8cb9_2ba7_2f3d_8dd7,
            0xa076_1d64_78bd_642f,
        ];
        (w ^ self.seed.rotate_left(i as u32 * 8)).wrapping_mul(M[i & (KEY_WORDS - 1)])
    }

    #[inline(always)]
    fn finish(mut h: u64) -> usize {
        h ^= h >> 32;
        h = h.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (h >> (64 - SLOTS.trailing_zeros())) as usize
    }

    /// The outcome cached for `key`.
    #[inline]
    pub(crate) fn get(&mut self, key: &Key) -> Option<&Outcome> {
        let i = self.slot(key);
        let hit = self.slots[i]
            .as_ref()
            .is_some_and(|s| s.key.same(key, self.words));
        self.lookup(i, hit)
    }

    /// [`VerdictCache::get`] of the key [`Key::from3`] of `w`, for a plan whose key is built
    /// in registers (zero past word 2).
    ///
    /// The slot of the previous lookup is compared first: a packet with the same key as the one
    /// before it (a flood at one service, the packets of one flow in a burst) hits there
    /// without the slot hash, and that slot's address does not wait for the key, so the CPU
    /// loads it while the key is still being built. Any other key takes the hashed slot. Both
    /// compare the whole key, so which slot hit never changes the outcome.
    #[inline(always)]
    pub(crate) fn get3(&mut self, w: &[u64; 3]) -> Option<&Outcome> {
        let same = |s: &Option<Slot>| {
            s.as_ref()
                .is_some_and(|s| s.key.0[0] == w[0] && s.key.0[1] == w[1] && s.key.0[2] == w[2])
        };
        let last = self.last % SLOTS;
        if same(&self.slots[last]) {
            return self.lookup(last, true);
        }
        let i = self.slot3(w);
        let hit = same(&self.slots[i]);
        self.last = i;
        self.lookup(i, hit)
    }

    /// Counts a lookup of slot `i` that hit or not, and gives its outcome on a hit.
    #[inline(always)]
    fn lookup(&mut self, i: usize, hit: bool) -> Option<&Outcome> {
        self.window += 1;
        if hit {
            self.stats.hits += 1;
            self.window_hits += 1;
        } else {
            self.stats.misses += 1;
        }
        if self.window == WINDOW {
            if self.window_hits < WINDOW / 4 {
                self.bypass = BYPASS;
            }
            self.window = 0;
            self.window_hits = 0;
        }
        match &self.slots[i] {
            Some(s) if hit => Some(&s.outcome),
            _ => None,
        }
    }

    /// The slots [`VerdictCache::get`] and [`VerdictCache::get3`] would probe (tests that
    /// the two agree).
    #[cfg(test)]
    pub(crate) fn slots_of(&self, key: &Key, w: &[u64; 3]) -> (usize, usize) {
        (self.slot(key), self.slot3(w))
    }

    /// Remembers the outcome of `key`'s packet, which bumped `counted` (not remembered when
    /// that is more than a slot holds).
    #[inline]
    pub(crate) fn put(&mut self, key: &Key, verdict: Verdict, actions: Actions, counted: &[u32]) {
        if counted.len() > MAX_COUNTED {
            return;
        }
        let mut ids = [0u32; MAX_COUNTED];
        ids[..counted.len()].copy_from_slice(counted);
        let i = self.slot(key);
        self.slots[i] = Some(Slot {
            key: *key,
            outcome: Outcome {
                verdict,
                actions,
                counted: ids,
                n_counted: counted.len() as u8,
            },
        });
    }

    /// A cleared buffer for a miss's counter ids (kept between misses: no allocation per
    /// packet); hand it back with [`VerdictCache::give_back`].
    pub(crate) fn take_log(&mut self) -> Vec<u32> {
        let mut v = std::mem::take(&mut self.log);
        v.clear();
        v
    }

    pub(crate) fn give_back(&mut self, log: Vec<u32>) {
        self.log = log;
    }
}
