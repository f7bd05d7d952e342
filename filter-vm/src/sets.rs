//! Sets, maps and verdict maps, and the per-worker dynamic sets behind meters.
//!
//! Three element stores, picked when the set is built:
//! - **exact**: one hash lookup (keys of any fixed length, concatenations included);
//! - **prefix**: interval sets whose every element is a CIDR block (`198.18.0.0/15`): one hash
//!   table keyed by (prefix length, masked key), probed once per *distinct prefix length*
//!   present, longest first — cost depends on how many lengths are used (at most 33 for IPv4,
//!   129 for IPv6), never on how many elements there are;
//! - **ranges**: other intervals (port ranges): sorted disjoint ranges, binary search.
//!
//! Hashing uses std's SipHash with a random per-process key, so neither operator-loaded nor
//! packet-derived keys (meters) can be chosen to collide.
//!
//! Thread use: a [`Sets`] inside a published program is read-only and shared by all workers;
//! each worker owns a separate [`Sets`] for dynamic elements (see `vm::State`).

use crate::pvec::PVec;
use crate::vm::{DynStmt, DynsetOp, Verdict, MAX_DATA_LEN};
use std::collections::HashMap as SipMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Static sets (filled by the operator, never by packets): hashbrown with its fast, randomly
/// seeded default hasher. A packet can only look keys up here, and lookup cost is fixed by
/// contents it cannot choose, so a flooding attacker gains nothing from collisions.
type FastMap<K, V> = hashbrown::HashMap<K, V>;

/// Index of a set in a program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SetId(pub u32);

/// Result of a lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LookupResult {
    Miss,
    /// Found in a set (no value).
    Hit,
    /// Found in a map; the value's length (the value was copied out).
    Value(usize),
}

/// Errors building a set.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SetError {
    #[error("set {set}: element key has {got} bytes, the set's key type has {want}")]
    KeyLength { set: String, got: usize, want: usize },
    #[error("set {set}: interval {lo}-{hi} has its low end above its high end")]
    Inverted { set: String, lo: String, hi: String },
    #[error("set {set}: intervals {a} and {b} overlap")]
    Overlap { set: String, a: String, b: String },
    #[error("set {set}: element {elem} appears twice")]
    Duplicate { set: String, elem: String },
    #[error("set {set}: {count} elements exceed its size {size}")]
    Full { set: String, count: usize, size: usize },
    #[error("set {set}: value has {got} bytes, the map's data type has {want}")]
    ValueLength { set: String, got: usize, want: usize },
}

/// One element's payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Elem {
    value: [u8; MAX_DATA_LEN],
    vlen: u8,
    /// Monotonic ns after which the element no longer exists.
    expires: Option<u64>,
}

impl Elem {
    fn live(&self, now: u64) -> bool {
        self.expires.is_none_or(|t| now < t)
    }
}

/// An element added from the packet path (`add`/`update @set { key STMT }`).
///
/// Mirrors the kernel's element (net/netfilter/nft_dynset.c, `nft_dynset_new`): the rule's
/// statement is *cloned into the element* when the element is created
/// (`nft_dynset_expr_setup` → `nft_limit_clone`/`nft_counter_clone`, a limit starting with a
/// full bucket), and from then on every packet that finds the element runs the element's own
/// copy — a later `update` from another rule with another statement included
/// (`nft_set_elem_update_expr`, include/net/netfilter/nf_tables.h).
///
/// Lookups run the statement too (net/netfilter/nft_lookup.c, `nft_lookup_eval`, calls
/// `nft_set_elem_update_expr` on a hit), and they only get `&Sets`: the statement's state is
/// kept in atomics. A dynamic store belongs to one worker, so there is never a second writer:
/// relaxed loads and stores (no read-modify-write instructions) suffice; the atomics only make
/// the type `Sync` like the shared static sets next to it.
#[derive(Debug)]
struct DynElem {
    /// Monotonic ns after which the element no longer exists.
    expires: Option<u64>,
    /// The statement cloned from the rule that created the element.
    stmt: DynStmt,
    /// Limit: (tokens, last refill ns); counter: (packets, bytes).
    state: [AtomicU64; 2],
    /// Limit: the bucket has been filled (on the creating packet, at its timestamp).
    primed: AtomicBool,
}

impl Clone for DynElem {
    fn clone(&self) -> DynElem {
        DynElem {
            expires: self.expires,
            stmt: self.stmt,
            state: [
                AtomicU64::new(self.state[0].load(Relaxed)),
                AtomicU64::new(self.state[1].load(Relaxed)),
            ],
            primed: AtomicBool::new(self.primed.load(Relaxed)),
        }
    }
}

impl DynElem {
    fn new(stmt: DynStmt, expires: Option<u64>) -> DynElem {
        DynElem {
            expires,
            stmt,
            state: [AtomicU64::new(0), AtomicU64::new(0)],
            primed: AtomicBool::new(false),
        }
    }

    fn live(&self, now: u64) -> bool {
        self.expires.is_none_or(|t| now < t)
    }

    /// Runs the element's statement for one packet of `bytes` (kernel:
    /// `nft_set_elem_update_expr`). Returns false when it breaks the rule: a limit whose
    /// packet is over the rate (with `over`: within it), as `nft_limit_pkts_eval` does.
    fn eval(&self, now: u64, bytes: u64) -> bool {
        match self.stmt {
            DynStmt::None => true,
            DynStmt::Counter => {
                self.state[0].store(self.state[0].load(Relaxed) + 1, Relaxed);
                self.state[1].store(self.state[1].load(Relaxed).saturating_add(bytes), Relaxed);
                true
            }
            DynStmt::Limit {
                rate,
                per_ns,
                burst,
                over,
            } => {
                let mut b = (
                    self.state[0].load(Relaxed),
                    self.state[1].load(Relaxed),
                    self.primed.load(Relaxed),
                );
                let conforms = crate::vm::bucket_take_raw(&mut b, rate, per_ns, burst, now);
                self.state[0].store(b.0, Relaxed);
                self.state[1].store(b.1, Relaxed);
                self.primed.store(b.2, Relaxed);
                conforms != over
            }
        }
    }
}

/// An interval element: low end, high end, payload.
type RangeElem = (Box<[u8]>, Box<[u8]>, Elem);

#[derive(Clone, Debug)]
enum Store {
    Exact(FastMap<Box<[u8]>, Elem>),
    /// Exact keys of up to 16 bytes, as left-aligned integers. The hash table holds only
    /// keys and indices into `elems`, so it stays small enough to stay in cache and a miss
    /// (the common case for a blocklist) touches no element.
    Exact16 {
        index: FastMap<u128, u32>,
        elems: Vec<Elem>,
        filter: MissFilter,
    },
    /// Prefixes of keys up to 16 bytes: (prefix length, masked key as an integer) → index.
    Prefix16 {
        lens_desc: Vec<u16>,
        index: FastMap<(u16, u128), u32>,
        elems: Vec<Elem>,
        filter: MissFilter,
    },
    /// Elements added from the packet path (meters): keys are attacker-chosen, so SipHash
    /// with a random key (std's hasher), which they cannot steer into collisions.
    Dynamic(SipMap<Box<[u8]>, DynElem>),
    Prefix {
        lens_desc: Vec<u16>,
        map: FastMap<Box<[u8]>, Elem>,
    },
    Ranges(Vec<RangeElem>),
    /// Concatenations with a range per part; `parts` are the parts' byte lengths.
    ConcatRanges {
        parts: Vec<usize>,
        elems: Vec<RangeElem>,
    },
}

/// A set or map.
#[derive(Clone, Debug)]
pub struct Set {
    pub name: String,
    /// Key length in bytes (concatenations: each part padded to 4 bytes, as in registers).
    pub key_len: usize,
    /// Value length for maps (verdict maps: 8); 0 for plain sets.
    pub data_len: usize,
    pub verdict_map: bool,
    /// Largest number of elements (dynamic sets stop adding there).
    pub size: usize,
    /// Default element timeout (ns), for sets with `flags timeout`.
    pub timeout_ns: Option<u64>,
    /// Some element expires: what a lookup finds depends on the time.
    timed: bool,
    store: Store,
}

/// The sets of a program, by [`SetId`]: a persistent vector of shared sets, so a generation
/// that changes one set copies that set (and a chunk of pointers), not the others.
#[derive(Clone, Debug, Default)]
pub struct Sets {
    sets: PVec<Arc<Set>>,
}

/// Encodes a verdict as map data (8 bytes).
pub fn encode_verdict(v: Verdict) -> [u8; 8] {
    let (tag, chain) = match v {
        Verdict::Accept => (1u8, 0u16),
        Verdict::Drop => (2, 0),
        Verdict::Continue => (3, 0),
        Verdict::Return => (4, 0),
        Verdict::Jump(c) => (5, c),
        Verdict::Goto(c) => (6, c),
    };
    let mut b = [0u8; 8];
    b[0] = tag;
    b[1..3].copy_from_slice(&chain.to_be_bytes());
    b
}

/// Decodes map data written by [`encode_verdict`].
pub fn decode_verdict(b: &[u8]) -> Option<Verdict> {
    let chain = u16::from_be_bytes([*b.get(1)?, *b.get(2)?]);
    Some(match b.first()? {
        1 => Verdict::Accept,
        2 => Verdict::Drop,
        3 => Verdict::Continue,
        4 => Verdict::Return,
        5 => Verdict::Jump(chain),
        6 => Verdict::Goto(chain),
        _ => return None,
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// If `[lo, hi]` is exactly a CIDR block, its prefix length in bits.
fn prefix_len(lo: &[u8], hi: &[u8]) -> Option<u16> {
    let bits = lo.len() * 8;
    // Count trailing bits where lo is 0 and hi is 1; above them lo and hi must agree.
    let mut host = 0;
    for i in (0..bits).rev() {
        let (byte, bit) = (i / 8, 7 - (i % 8));
        let l = (lo[byte] >> bit) & 1;
        let h = (hi[byte] >> bit) & 1;
        if l == 0 && h == 1 && host == bits - 1 - i {
            host += 1;
        } else if l != h {
            return None;
        } else {
            break;
        }
    }
    // The remaining high bits must be equal.
    let plen = bits - host;
    for i in 0..plen {
        let (byte, bit) = (i / 8, 7 - (i % 8));
        if (lo[byte] >> bit) & 1 != (hi[byte] >> bit) & 1 {
            return None;
        }
    }
    Some(plen as u16)
}

/// A one-hash Bloom filter in front of a hash table: a lookup whose bit is clear is a miss
/// for the price of one multiply and one load, without hashing and probing the table (a
/// blocklist sees mostly misses). About 8 bits per element (at least 4 Kibit, at most
/// 16 Mibit), so roughly one miss in eight still goes to the table. Keys are what the table
/// holds: (prefix length or 0, left-aligned key).
#[derive(Clone, Debug)]
struct MissFilter {
    bits: Vec<u64>,
    /// 64 minus log2(number of bits): the hash's top bits index the filter.
    shift: u32,
}

impl MissFilter {
    fn new(keys: impl Iterator<Item = (u16, u128)>, n: usize) -> MissFilter {
        let log2 = (n.max(1) * 8).next_power_of_two().trailing_zeros().clamp(12, 24);
        let mut f = MissFilter {
            bits: vec![0; 1 << (log2 - 6)],
            shift: 64 - log2,
        };
        for (plen, k) in keys {
            let i = f.slot(plen, k);
            f.bits[i >> 6] |= 1 << (i & 63);
        }
        f
    }

    /// Fibonacci hashing of the folded key: the top bits of the product depend on every bit.
    #[inline(always)]
    fn slot(&self, plen: u16, k: u128) -> usize {
        let x = (k >> 64) as u64 ^ (k as u64).rotate_left(29) ^ ((plen as u64) << 48);
        (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    #[inline(always)]
    fn may_contain(&self, plen: u16, k: u128) -> bool {
        let i = self.slot(plen, k);
        self.bits.get(i >> 6).is_some_and(|w| w >> (i & 63) & 1 == 1)
    }
}

/// A key of up to 16 bytes as a left-aligned big-endian integer (zero-padded on the right),
/// so masking a prefix is one AND.
#[inline]
pub(crate) fn key128(b: &[u8]) -> u128 {
    match b.len() {
        2 => (u16::from_be_bytes([b[0], b[1]]) as u128) << 112,
        4 => (u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as u128) << 96,
        8 => (u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as u128) << 64,
        16 => u128::from_be_bytes([
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
            b[15],
        ]),
        _ => {
            let mut x = 0u128;
            for (i, v) in b.iter().take(16).enumerate() {
                x |= (*v as u128) << (120 - 8 * i);
            }
            x
        }
    }
}

fn mask_into(key: &[u8], plen: u16, out: &mut [u8]) {
    for (i, (o, k)) in out.iter_mut().zip(key).enumerate() {
        let keep = (plen as usize).saturating_sub(i * 8).min(8);
        let m = if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
        *o = k & m;
    }
}

/// How a set is described to [`Set::build`].
#[derive(Clone, Debug, Default)]
pub struct SetSpec {
    pub name: String,
    pub key_len: usize,
    pub data_len: usize,
    pub verdict_map: bool,
    pub interval: bool,
    pub size: Option<usize>,
    pub timeout_ns: Option<u64>,
    /// For concatenated keys: the byte length of each part (each padded to 4 bytes); empty
    /// for single-field keys. Interval sets over concatenations check each part's range.
    pub parts: Vec<usize>,
}

/// One element to build a set from: `[lo, hi]` (equal for exact elements) and map data.
#[derive(Clone, Debug, Default)]
pub struct ElemSpec {
    pub lo: Vec<u8>,
    pub hi: Vec<u8>,
    pub value: Vec<u8>,
    pub timeout_ns: Option<u64>,
}

impl Set {
    /// Builds a set from its elements; `now` starts element timeouts.
    pub fn build(spec: &SetSpec, elems: &[ElemSpec], now: u64) -> Result<Set, SetError> {
        let name = spec.name.clone();
        let size = spec.size.unwrap_or(usize::MAX);
        if elems.len() > size {
            return Err(SetError::Full {
                set: name,
                count: elems.len(),
                size,
            });
        }
        let mk = |e: &ElemSpec| -> Result<Elem, SetError> {
            if spec.data_len > 0 && e.value.len() != spec.data_len {
                return Err(SetError::ValueLength {
                    set: spec.name.clone(),
                    got: e.value.len(),
                    want: spec.data_len,
                });
            }
            let mut value = [0u8; MAX_DATA_LEN];
            let n = e.value.len().min(MAX_DATA_LEN);
            value[..n].copy_from_slice(&e.value[..n]);
            let expires = e.timeout_ns.or(spec.timeout_ns).map(|t| now.saturating_add(t));
            Ok(Elem {
                value,
                vlen: n as u8,
                expires,
            })
        };
        for e in elems {
            for k in [&e.lo, &e.hi] {
                if k.len() != spec.key_len {
                    return Err(SetError::KeyLength {
                        set: name,
                        got: k.len(),
                        want: spec.key_len,
                    });
                }
            }
            if e.lo > e.hi {
                return Err(SetError::Inverted {
                    set: name,
                    lo: hex(&e.lo),
                    hi: hex(&e.hi),
                });
            }
        }
        let store = if spec.interval && spec.parts.len() > 1 {
            // Per-part intervals (`198.18.0.0/16 . 1000-2000`): a linear scan that checks each
            // part's range. Whole-key order cannot answer them, and such sets are small in
            // practice (nft's pipapo sets have the same shape).
            let mut v = Vec::with_capacity(elems.len());
            for e in elems {
                v.push((
                    e.lo.clone().into_boxed_slice(),
                    e.hi.clone().into_boxed_slice(),
                    mk(e)?,
                ));
            }
            Store::ConcatRanges {
                parts: spec.parts.clone(),
                elems: v,
            }
        } else if !spec.interval && spec.key_len <= 16 {
            // Keys of up to 16 bytes are hashed as one integer: no length prefix, no memcmp.
            let mut index = FastMap::with_capacity(elems.len());
            let mut store = Vec::with_capacity(elems.len());
            for e in elems {
                if index.insert(key128(&e.lo), store.len() as u32).is_some() {
                    return Err(SetError::Duplicate {
                        set: name,
                        elem: hex(&e.lo),
                    });
                }
                store.push(mk(e)?);
            }
            Store::Exact16 {
                filter: MissFilter::new(index.keys().map(|k| (0, *k)), index.len()),
                index,
                elems: store,
            }
        } else if !spec.interval {
            let mut map = FastMap::with_capacity(elems.len());
            for e in elems {
                if map.insert(e.lo.clone().into_boxed_slice(), mk(e)?).is_some() {
                    return Err(SetError::Duplicate {
                        set: name,
                        elem: hex(&e.lo),
                    });
                }
            }
            Store::Exact(map)
        } else {
            let mut sorted: Vec<&ElemSpec> = elems.iter().collect();
            sorted.sort_by(|a, b| a.lo.cmp(&b.lo));
            for w in sorted.windows(2) {
                if w[1].lo <= w[0].hi {
                    return Err(SetError::Overlap {
                        set: name,
                        a: format!("{}-{}", hex(&w[0].lo), hex(&w[0].hi)),
                        b: format!("{}-{}", hex(&w[1].lo), hex(&w[1].hi)),
                    });
                }
            }
            let plens: Option<Vec<u16>> = sorted.iter().map(|e| prefix_len(&e.lo, &e.hi)).collect();
            match plens {
                Some(plens) if spec.key_len <= 16 => {
                    let mut index = FastMap::with_capacity(elems.len());
                    let mut store = Vec::with_capacity(elems.len());
                    let mut lens: Vec<u16> = Vec::new();
                    for (e, plen) in sorted.iter().zip(plens) {
                        index.insert((plen, key128(&e.lo)), store.len() as u32);
                        store.push(mk(e)?);
                        if !lens.contains(&plen) {
                            lens.push(plen);
                        }
                    }
                    lens.sort_unstable_by(|a, b| b.cmp(a));
                    Store::Prefix16 {
                        lens_desc: lens,
                        filter: MissFilter::new(index.keys().copied(), index.len()),
                        index,
                        elems: store,
                    }
                }
                Some(plens) => {
                    let mut map = FastMap::with_capacity(elems.len());
                    let mut lens: Vec<u16> = Vec::new();
                    for (e, plen) in sorted.iter().zip(plens) {
                        let mut k = Vec::with_capacity(2 + spec.key_len);
                        k.extend_from_slice(&plen.to_be_bytes());
                        k.extend_from_slice(&e.lo);
                        map.insert(k.into_boxed_slice(), mk(e)?);
                        if !lens.contains(&plen) {
                            lens.push(plen);
                        }
                    }
                    lens.sort_unstable_by(|a, b| b.cmp(a));
                    Store::Prefix { lens_desc: lens, map }
                }
                None => {
                    let mut v = Vec::with_capacity(sorted.len());
                    for e in sorted {
                        v.push((
                            e.lo.clone().into_boxed_slice(),
                            e.hi.clone().into_boxed_slice(),
                            mk(e)?,
                        ));
                    }
                    Store::Ranges(v)
                }
            }
        };
        Ok(Set {
            name,
            key_len: spec.key_len,
            data_len: spec.data_len,
            verdict_map: spec.verdict_map,
            size,
            timeout_ns: spec.timeout_ns,
            timed: spec.timeout_ns.is_some() || elems.iter().any(|e| e.timeout_ns.is_some()),
            store,
        })
    }

    /// Whether a lookup's answer can change with the time (some element expires): the outcome
    /// cache ([`crate::cache`]) does not hold rules that look such sets up.
    pub fn is_timed(&self) -> bool {
        self.timed
    }

    /// Number of stored elements (expired ones included until replaced).
    pub fn len(&self) -> usize {
        match &self.store {
            Store::Exact(m) => m.len(),
            Store::Exact16 { elems, .. } | Store::Prefix16 { elems, .. } => elems.len(),
            Store::Dynamic(m) => m.len(),
            Store::Prefix { map, .. } => map.len(),
            Store::Ranges(v) => v.len(),
            Store::ConcatRanges { elems, .. } => elems.len(),
        }
    }

    /// True when the set holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every element's value bytes (maps), e.g. for the verifier to see verdict-map targets.
    pub fn values(&self) -> Box<dyn Iterator<Item = &[u8]> + '_> {
        fn v(e: &Elem) -> &[u8] {
            &e.value[..e.vlen as usize]
        }
        match &self.store {
            Store::Exact(m) => Box::new(m.values().map(v)),
            Store::Exact16 { elems, .. } | Store::Prefix16 { elems, .. } => Box::new(elems.iter().map(v)),
            // Dynamic elements carry no data (meters fill plain sets).
            Store::Dynamic(m) => Box::new(m.values().map(|_| &[][..])),
            Store::Prefix { map, .. } => Box::new(map.values().map(v)),
            Store::Ranges(r) => Box::new(r.iter().map(|(_, _, e)| v(e))),
            Store::ConcatRanges { elems, .. } => Box::new(elems.iter().map(|(_, _, e)| v(e))),
        }
    }

    fn find(&self, key: &[u8], now: u64) -> Option<&Elem> {
        if key.len() != self.key_len {
            return None;
        }
        match &self.store {
            Store::Exact16 { .. } | Store::Prefix16 { .. } => self.find128(key128(key), now),
            Store::Exact(m) => m.get(key).filter(|e| e.live(now)),
            // Looked up by `Sets::lookup_dynamic`, which runs the element's statement.
            Store::Dynamic(_) => None,
            Store::Prefix { lens_desc, map } => {
                let mut buf = [0u8; 2 + 64];
                let k = buf.get_mut(..2 + key.len())?;
                for &plen in lens_desc {
                    k[..2].copy_from_slice(&plen.to_be_bytes());
                    mask_into(key, plen, &mut k[2..]);
                    if let Some(e) = map.get(&*k) {
                        if e.live(now) {
                            return Some(e);
                        }
                    }
                }
                None
            }
            Store::Ranges(v) => {
                // The last range whose low end is <= key.
                let i = v.partition_point(|(lo, _, _)| &**lo <= key);
                let (_, hi, e) = v.get(i.checked_sub(1)?)?;
                (key <= &**hi && e.live(now)).then_some(e)
            }
            Store::ConcatRanges { parts, elems } => elems.iter().find_map(|(lo, hi, e)| {
                let mut at = 0;
                for &n in parts {
                    let (k, l, h) = (&key[at..at + n], &lo[at..at + n], &hi[at..at + n]);
                    if k < l || k > h {
                        return None;
                    }
                    at += n;
                }
                e.live(now).then_some(e)
            }),
        }
    }

    /// Whether the set keeps its keys as integers (exact or prefix keys of at most 16 bytes):
    /// such a set answers [`Set::contains128`].
    pub fn keys_are_ints(&self) -> bool {
        matches!(self.store, Store::Exact16 { .. } | Store::Prefix16 { .. })
    }

    /// Membership of a left-aligned integer key (see [`Set::keys_are_ints`]; any other set
    /// answers false): what a lowered lookup without a value calls, with no byte slice and
    /// no value copy in between.
    #[inline]
    pub fn contains128(&self, k: u128, now: u64) -> bool {
        self.find128(k, now).is_some()
    }

    #[inline(always)]
    fn find128(&self, k: u128, now: u64) -> Option<&Elem> {
        match &self.store {
            Store::Exact16 { index, elems, filter } => {
                if !filter.may_contain(0, k) {
                    return None;
                }
                index
                    .get(&k)
                    .and_then(|i| elems.get(*i as usize))
                    .filter(|e| e.live(now))
            }
            Store::Prefix16 {
                lens_desc,
                index,
                elems,
                filter,
            } => {
                for &plen in lens_desc {
                    let mask = if plen == 0 {
                        0
                    } else {
                        !0u128 << (128 - plen as u32)
                    };
                    if !filter.may_contain(plen, k & mask) {
                        continue;
                    }
                    if let Some(e) = index.get(&(plen, k & mask)).and_then(|i| elems.get(*i as usize)) {
                        if e.live(now) {
                            return Some(e);
                        }
                    }
                }
                None
            }
            _ => None,
        }
    }

    /// Looks `key` up in this (static) set, copying a map value into `value`; a dynamic
    /// store answers as [`Sets::lookup`] does.
    #[inline]
    pub fn lookup(&self, key: &[u8], now: u64, value: &mut [u8; MAX_DATA_LEN]) -> LookupResult {
        if let Store::Dynamic(m) = &self.store {
            return dyn_lookup(self, m, key, now, 0, false);
        }
        match self.find(key, now) {
            None => LookupResult::Miss,
            Some(_) if self.data_len == 0 => LookupResult::Hit,
            Some(e) => {
                let n = e.vlen as usize;
                value[..n].copy_from_slice(&e.value[..n]);
                LookupResult::Value(n)
            }
        }
    }

    /// An empty set in the place of one that no longer exists (its id is never reused).
    pub fn tombstone() -> Set {
        Set {
            name: String::new(),
            key_len: 0,
            data_len: 0,
            verdict_map: false,
            size: 0,
            timeout_ns: None,
            timed: false,
            store: Store::Exact(FastMap::new()),
        }
    }

    fn empty_like(&self) -> Set {
        Set {
            store: Store::Dynamic(SipMap::new()),
            ..self.clone_shape()
        }
    }

    fn clone_shape(&self) -> Set {
        Set {
            name: self.name.clone(),
            key_len: self.key_len,
            data_len: self.data_len,
            verdict_map: self.verdict_map,
            size: self.size,
            timeout_ns: self.timeout_ns,
            timed: self.timed,
            store: Store::Dynamic(SipMap::new()),
        }
    }
}

/// [`Sets::lookup_dynamic`] on a dynamic store `m` of `set`.
#[inline]
fn dyn_lookup(
    set: &Set,
    m: &SipMap<Box<[u8]>, DynElem>,
    key: &[u8],
    now: u64,
    bytes: u64,
    invert: bool,
) -> LookupResult {
    if key.len() != set.key_len {
        return LookupResult::Miss;
    }
    let Some(e) = m.get(key).filter(|e| e.live(now)) else {
        return LookupResult::Miss;
    };
    if !invert && !e.eval(now, bytes) {
        return LookupResult::Miss;
    }
    // Meters fill plain sets; a map's dynamic element would have no data.
    if set.data_len == 0 {
        LookupResult::Hit
    } else {
        LookupResult::Value(0)
    }
}

impl Sets {
    /// Adds a set; returns its id.
    pub fn push(&mut self, set: Set) -> SetId {
        self.sets.push(Arc::new(set));
        SetId(self.sets.len() as u32 - 1)
    }

    /// A set by id.
    #[inline]
    pub fn get(&self, id: SetId) -> Option<&Set> {
        self.sets.get(id.0 as usize).map(|s| &**s)
    }

    /// A set by id, shared.
    pub fn get_arc(&self, id: SetId) -> Option<&Arc<Set>> {
        self.sets.get(id.0 as usize)
    }

    /// Replaces set `id` (its contents changed); false when there is no such set.
    pub fn replace(&mut self, id: SetId, set: Arc<Set>) -> bool {
        self.sets.set(id.0 as usize, set)
    }

    /// Appends an empty dynamic store for every set of `statics` beyond this one's end (a
    /// worker's store following its program's later generations).
    pub fn extend_dynamic_from(&mut self, statics: &Sets) {
        for i in self.sets.len()..statics.sets.len() {
            if let Some(s) = statics.sets.get(i) {
                self.sets.push(Arc::new(s.empty_like()));
            }
        }
    }

    /// Number of sets.
    pub fn len(&self) -> usize {
        self.sets.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// The same sets with no elements (a worker's store for dynamically added elements).
    pub fn empty_dynamic_copy(&self) -> Sets {
        Sets {
            sets: self.sets.iter().map(|s| Arc::new(s.empty_like())).collect(),
        }
    }

    /// Looks `key` up in set `id`, copying a map value into `value`.
    ///
    /// In a dynamic store this is [`Sets::lookup_dynamic`] for a lookup that is not inverted,
    /// of a packet whose length is not known (see there).
    #[inline]
    pub fn lookup(&self, id: SetId, key: &[u8], now: u64, value: &mut [u8; MAX_DATA_LEN]) -> LookupResult {
        match self.sets.get(id.0 as usize) {
            Some(set) => set.lookup(key, now, value),
            None => LookupResult::Miss,
        }
    }

    /// A lookup among the elements that packets added to set `id`, as the kernel's
    /// (net/netfilter/nft_lookup.c, `nft_lookup_eval`): a live element found by a lookup
    /// that is not inverted runs the statement cloned into it
    /// (`nft_set_elem_update_expr`, include/net/netfilter/nf_tables.h), and when that breaks
    /// the rule breaks — a [`LookupResult::Miss`] here. So with
    /// `update @blk { ip saddr limit rate over 1/day burst 2 packets }` an earlier
    /// `ip saddr @blk drop` spends one of the element's tokens per packet and matches only
    /// once the element is over its limit. An inverted lookup (`!= @set`) that finds the
    /// element breaks without running anything (`found ^ invert` is false before the update);
    /// one that finds nothing runs nothing. `bytes` (the packet length) feeds element counters.
    #[allow(clippy::too_many_arguments)]
    pub fn lookup_dynamic(
        &self,
        id: SetId,
        key: &[u8],
        now: u64,
        bytes: u64,
        invert: bool,
        value: &mut [u8; MAX_DATA_LEN],
    ) -> LookupResult {
        let Some(set) = self.sets.get(id.0 as usize) else {
            return LookupResult::Miss;
        };
        match &set.store {
            Store::Dynamic(m) => dyn_lookup(set, m, key, now, bytes, invert),
            _ => self.lookup(id, key, now, value),
        }
    }

    /// The dynset step (`add @set { key STMT }` / `update @set { key STMT }`) as the kernel's
    /// (net/netfilter/nft_dynset.c, `nft_dynset_eval`; the hash backend's
    /// `nft_rhash_update` in net/netfilter/nft_set_hash.c — a `flags dynamic` set is an
    /// rhash set, the only hash type whose features include `NFT_SET_EVAL`):
    /// - a live element is found (expired ones are skipped by `nft_rhash_cmp`); `update`
    ///   restarts its timeout if it has one, `add` leaves it;
    /// - otherwise a new element is made (`nft_dynset_new`) unless the set already holds
    ///   `size` elements (then the rule breaks), with the rule's timeout (or the set's) and
    ///   a clone of the rule's statement (a limit's bucket starts full, `nft_limit_clone`);
    /// - then the *element's* statement runs on the packet (`nft_set_elem_update_expr`),
    ///   the rule going on unless it breaks.
    ///
    /// Returns whether the rule goes on.
    #[allow(clippy::too_many_arguments)]
    pub fn dynset(
        &mut self,
        id: SetId,
        key: &[u8],
        op: DynsetOp,
        timeout_ns: u64,
        stmt: DynStmt,
        now: u64,
        bytes: u64,
    ) -> bool {
        // A worker's own store: never shared, so this copies nothing.
        let Some(set) = self.sets.get_mut(id.0 as usize).map(Arc::make_mut) else {
            return false;
        };
        if key.len() != set.key_len {
            return false;
        }
        let timeout = if timeout_ns > 0 {
            Some(timeout_ns)
        } else {
            set.timeout_ns
        };
        let expires = timeout.map(|t| now.saturating_add(t));
        let size = set.size;
        let Store::Dynamic(map) = &mut set.store else {
            return false;
        };
        let full = map.len() >= size;
        let elem = match map.get_mut(key) {
            Some(e) if e.live(now) => {
                // `priv->timeout ?: set->timeout`, also when both are 0.
                if op == DynsetOp::Update && e.expires.is_some() {
                    e.expires = Some(now.saturating_add(timeout.unwrap_or(0)));
                }
                e
            }
            Some(e) => {
                // Expired: the kernel inserts a fresh element (the old one waits for the
                // set's garbage collection); here it is replaced in place.
                *e = DynElem::new(stmt, expires);
                e
            }
            None => {
                if full {
                    return false;
                }
                map.entry(key.into()).or_insert(DynElem::new(stmt, expires))
            }
        };
        elem.eval(now, bytes)
    }

    /// Number of live elements in dynamic set `id` (for tests and listings).
    pub fn live_len(&self, id: SetId, now: u64) -> usize {
        match self.sets.get(id.0 as usize).map(|s| &s.store) {
            Some(Store::Exact(m)) => m.values().filter(|e| e.live(now)).count(),
            Some(Store::Exact16 { elems, .. } | Store::Prefix16 { elems, .. }) => {
                elems.iter().filter(|e| e.live(now)).count()
            }
            Some(Store::Dynamic(m)) => m.values().filter(|e| e.live(now)).count(),
            Some(Store::Prefix { map, .. }) => map.values().filter(|e| e.live(now)).count(),
            Some(Store::Ranges(v)) => v.iter().filter(|(_, _, e)| e.live(now)).count(),
            Some(Store::ConcatRanges { elems, .. }) => elems.iter().filter(|(_, _, e)| e.live(now)).count(),
            None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: [u8; 4]) -> Vec<u8> {
        a.to_vec()
    }

    fn cidr(a: [u8; 4], plen: u32) -> ElemSpec {
        let x = u32::from_be_bytes(a);
        let mask = if plen == 0 { 0 } else { u32::MAX << (32 - plen) };
        ElemSpec {
            lo: (x & mask).to_be_bytes().to_vec(),
            hi: (x | !mask).to_be_bytes().to_vec(),
            ..Default::default()
        }
    }

    fn spec(interval: bool, key_len: usize) -> SetSpec {
        SetSpec {
            name: "s".into(),
            key_len,
            interval,
            ..Default::default()
        }
    }

    fn hit(s: &Sets, id: SetId, key: &[u8]) -> bool {
        let mut v = [0; MAX_DATA_LEN];
        s.lookup(id, key, 0, &mut v) != LookupResult::Miss
    }

    #[test]
    fn prefix_sets_match_longest_and_any_length() {
        let mut sets = Sets::default();
        let set = Set::build(
            &spec(true, 4),
            &[
                cidr([198, 18, 0, 0], 15),
                cidr([198, 20, 1, 0], 24),
                cidr([198, 20, 2, 7], 32),
            ],
            0,
        )
        .unwrap();
        assert!(matches!(set.store, Store::Prefix16 { .. }));
        let id = sets.push(set);
        assert!(hit(&sets, id, &v4([198, 18, 0, 1])));
        assert!(hit(&sets, id, &v4([198, 19, 255, 255])));
        assert!(!hit(&sets, id, &v4([198, 20, 0, 1])));
        assert!(hit(&sets, id, &v4([198, 20, 1, 200])));
        assert!(hit(&sets, id, &v4([198, 20, 2, 7])));
        assert!(!hit(&sets, id, &v4([198, 20, 2, 8])));
    }

    #[test]
    fn port_ranges_use_binary_search() {
        let mut sets = Sets::default();
        let r = |a: u16, b: u16| ElemSpec {
            lo: a.to_be_bytes().to_vec(),
            hi: b.to_be_bytes().to_vec(),
            ..Default::default()
        };
        let set = Set::build(&spec(true, 2), &[r(22, 22), r(1000, 2000), r(8000, 8080)], 0).unwrap();
        assert!(matches!(set.store, Store::Ranges(_)));
        let id = sets.push(set);
        for (p, want) in [
            (21, false),
            (22, true),
            (23, false),
            (999, false),
            (1000, true),
            (1500, true),
            (2000, true),
            (2001, false),
            (8080, true),
            (65535, false),
        ] {
            assert_eq!(hit(&sets, id, &(p as u16).to_be_bytes()), want, "port {p}");
        }
    }

    #[test]
    fn overlaps_inversions_duplicates_and_lengths_are_refused() {
        let r = |a: u16, b: u16| ElemSpec {
            lo: a.to_be_bytes().to_vec(),
            hi: b.to_be_bytes().to_vec(),
            ..Default::default()
        };
        assert!(matches!(
            Set::build(&spec(true, 2), &[r(1, 10), r(5, 20)], 0),
            Err(SetError::Overlap { .. })
        ));
        assert!(matches!(
            Set::build(&spec(true, 2), &[r(10, 1)], 0),
            Err(SetError::Inverted { .. })
        ));
        assert!(matches!(
            Set::build(&spec(false, 2), &[r(1, 1), r(1, 1)], 0),
            Err(SetError::Duplicate { .. })
        ));
        assert!(matches!(
            Set::build(&spec(false, 4), &[r(1, 1)], 0),
            Err(SetError::KeyLength { .. })
        ));
    }

    #[test]
    fn maps_return_values_and_verdicts_round_trip() {
        let mut sets = Sets::default();
        let e = |k: u16, v: Verdict| ElemSpec {
            lo: k.to_be_bytes().to_vec(),
            hi: k.to_be_bytes().to_vec(),
            value: encode_verdict(v).to_vec(),
            ..Default::default()
        };
        let s = SetSpec {
            name: "vm".into(),
            key_len: 2,
            data_len: 8,
            verdict_map: true,
            ..Default::default()
        };
        let id = sets.push(Set::build(&s, &[e(22, Verdict::Accept), e(80, Verdict::Jump(3))], 0).unwrap());
        let mut v = [0; MAX_DATA_LEN];
        assert_eq!(
            sets.lookup(id, &80u16.to_be_bytes(), 0, &mut v),
            LookupResult::Value(8)
        );
        assert_eq!(decode_verdict(&v[..8]), Some(Verdict::Jump(3)));
        for verdict in [
            Verdict::Accept,
            Verdict::Drop,
            Verdict::Continue,
            Verdict::Return,
            Verdict::Jump(7),
            Verdict::Goto(65535),
        ] {
            assert_eq!(decode_verdict(&encode_verdict(verdict)), Some(verdict));
        }
    }

    #[test]
    fn element_timeouts_expire() {
        let mut sets = Sets::default();
        let s = SetSpec {
            name: "t".into(),
            key_len: 4,
            timeout_ns: Some(1000),
            ..Default::default()
        };
        let id = sets.push(
            Set::build(
                &s,
                &[ElemSpec {
                    lo: v4([1, 2, 3, 4]),
                    hi: v4([1, 2, 3, 4]),
                    ..Default::default()
                }],
                0,
            )
            .unwrap(),
        );
        let mut v = [0; MAX_DATA_LEN];
        assert_eq!(sets.lookup(id, &v4([1, 2, 3, 4]), 999, &mut v), LookupResult::Hit);
        assert_eq!(
            sets.lookup(id, &v4([1, 2, 3, 4]), 1000, &mut v),
            LookupResult::Miss
        );
    }

    #[test]
    fn meters_limit_per_key_and_stop_at_size() {
        let mut sets = Sets::default();
        let s = SetSpec {
            name: "m".into(),
            key_len: 4,
            size: Some(2),
            ..Default::default()
        };
        sets.push(Set::build(&s, &[], 0).unwrap());
        // Meters live in a worker's dynamic copy of the program's sets.
        let mut sets = sets.empty_dynamic_copy();
        let id = SetId(0);
        let stmt = DynStmt::Limit {
            rate: 1,
            per_ns: 1_000_000_000,
            burst: 1,
            over: true,
        };
        // `over`: the first packet of a key is within the limit (rule breaks), the second is over.
        assert!(!sets.dynset(id, &v4([1, 1, 1, 1]), DynsetOp::Add, 0, stmt, 0, 60));
        assert!(sets.dynset(id, &v4([1, 1, 1, 1]), DynsetOp::Add, 0, stmt, 0, 60));
        assert!(!sets.dynset(id, &v4([2, 2, 2, 2]), DynsetOp::Add, 0, stmt, 0, 60));
        // Full: a third key is not added.
        assert!(!sets.dynset(id, &v4([3, 3, 3, 3]), DynsetOp::Add, 0, stmt, 0, 60));
        assert_eq!(sets.live_len(id, 0), 2);
    }

    /// A worker's dynamic copy of one set `m` (4-byte keys) with `timeout_ns`.
    fn dyn_sets(timeout_ns: Option<u64>) -> Sets {
        let mut sets = Sets::default();
        let s = SetSpec {
            name: "m".into(),
            key_len: 4,
            size: Some(65_535),
            timeout_ns,
            ..Default::default()
        };
        sets.push(Set::build(&s, &[], 0).unwrap());
        sets.empty_dynamic_copy()
    }

    const OVER_1_DAY_BURST_2: DynStmt = DynStmt::Limit {
        rate: 1,
        per_ns: 86_400_000_000_000,
        burst: 2,
        over: true,
    };

    #[test]
    fn lookups_run_the_elements_statement() {
        // 52-dynset.nft's pair, as the kernel counted five SYNs from one source (6.18):
        // `ip saddr @blk drop` 3, `update @blk { ip saddr limit rate over 1/day burst 2
        // packets }` 1. SYN 1 adds the element (one token left; within: the update breaks),
        // SYN 2's lookup spends the last token (within: the lookup breaks) and its update is
        // over the limit, SYNs 3-5 find an element over its limit and are dropped.
        let mut sets = dyn_sets(None);
        let id = SetId(0);
        let key = v4([198, 18, 0, 9]);
        let (mut dropped, mut updated) = (0, 0);
        for i in 0..5u64 {
            let now = i * 1_000;
            if hit(&sets, id, &key) {
                dropped += 1;
                continue;
            }
            if sets.dynset(id, &key, DynsetOp::Update, 0, OVER_1_DAY_BURST_2, now, 40) {
                updated += 1;
            }
        }
        assert_eq!((dropped, updated), (3, 1));
        // A lookup that finds no element runs nothing.
        assert!(!hit(&sets, id, &v4([198, 18, 0, 10])));
    }

    #[test]
    fn inverted_lookups_do_not_run_the_statement() {
        // Kernel (6.18), four SYNs through `ip saddr != @blk counter; ip saddr @blk drop;
        // update @blk { … over 1/day burst 2 }`: 1, 2, 1 — the inverted test never spends
        // the element's tokens.
        let mut sets = dyn_sets(None);
        let id = SetId(0);
        let key = v4([198, 18, 0, 9]);
        let mut v = [0; MAX_DATA_LEN];
        let (mut not_in, mut dropped, mut updated) = (0, 0, 0);
        for _ in 0..4 {
            if sets.lookup_dynamic(id, &key, 0, 40, true, &mut v) == LookupResult::Miss {
                not_in += 1;
            }
            if sets.lookup_dynamic(id, &key, 0, 40, false, &mut v) != LookupResult::Miss {
                dropped += 1;
                continue;
            }
            if sets.dynset(id, &key, DynsetOp::Update, 0, OVER_1_DAY_BURST_2, 0, 40) {
                updated += 1;
            }
        }
        assert_eq!((not_in, dropped, updated), (1, 2, 1));
    }

    #[test]
    fn elements_keep_the_statement_they_were_created_with() {
        let mut sets = dyn_sets(None);
        let id = SetId(0);
        let within_1_burst_1 = DynStmt::Limit {
            rate: 1,
            per_ns: 86_400_000_000_000,
            burst: 1,
            over: false,
        };
        // Created without a statement: a later limit-carrying update runs nothing.
        let a = v4([1, 1, 1, 1]);
        assert!(sets.dynset(id, &a, DynsetOp::Add, 0, DynStmt::None, 0, 40));
        for _ in 0..3 {
            assert!(sets.dynset(id, &a, DynsetOp::Add, 0, within_1_burst_1, 0, 40));
            assert!(hit(&sets, id, &a));
        }
        // Created with a limit: an update without a statement still spends its tokens.
        let b = v4([2, 2, 2, 2]);
        assert!(sets.dynset(id, &b, DynsetOp::Add, 0, within_1_burst_1, 0, 40));
        assert!(!sets.dynset(id, &b, DynsetOp::Add, 0, DynStmt::None, 0, 40));
        assert!(!hit(&sets, id, &b), "the only token is spent");
        // A counter never breaks, on lookups neither.
        let c = v4([3, 3, 3, 3]);
        assert!(sets.dynset(id, &c, DynsetOp::Add, 0, DynStmt::Counter, 0, 40));
        assert!(hit(&sets, id, &c) && hit(&sets, id, &c));
    }

    #[test]
    fn update_restarts_the_timeout_and_add_does_not() {
        let mut sets = dyn_sets(Some(100));
        let id = SetId(0);
        let mut v = [0; MAX_DATA_LEN];
        let k = v4([1, 2, 3, 4]);
        let live = |s: &Sets, now| s.lookup(id, &k, now, &mut [0; MAX_DATA_LEN]) != LookupResult::Miss;
        assert!(sets.dynset(id, &k, DynsetOp::Add, 0, DynStmt::None, 0, 40));
        assert!(sets.dynset(id, &k, DynsetOp::Add, 0, DynStmt::None, 50, 40));
        assert!(live(&sets, 99) && !live(&sets, 100));
        assert!(sets.dynset(id, &k, DynsetOp::Update, 0, DynStmt::None, 90, 40));
        assert!(live(&sets, 189) && !live(&sets, 190));
        // The rule's own timeout wins over the set's.
        assert!(sets.dynset(id, &k, DynsetOp::Update, 1_000, DynStmt::None, 100, 40));
        assert!(live(&sets, 1_099) && !live(&sets, 1_100));
        // Expired: the key starts over, with the statement of the packet that re-adds it.
        assert!(!sets.dynset(id, &k, DynsetOp::Add, 0, OVER_1_DAY_BURST_2, 2_000, 40));
        assert_eq!(
            sets.lookup_dynamic(id, &k, 2_001, 40, false, &mut v),
            LookupResult::Miss
        );
        assert!(sets.dynset(id, &k, DynsetOp::Add, 0, DynStmt::None, 2_002, 40));
        assert_eq!(sets.live_len(id, 2_002), 1);
    }
}
