//! The flow index: which slab entry holds the flow whose key hashes to a given value.
//!
//! Owns [`FlowIndex`], an open-addressing table of 64-byte buckets, each exactly one cache
//! line: ten 16-bit tags (the low bits of the key's hash), an occupancy mask, an overflow count
//! and ten `u32` slab indices. A flow's home bucket is a pure function of its hash
//! ([`FlowIndex::home`], a multiply-shift range reduction, so any bucket count works), and a
//! lookup reads the home line, compares ten tags at once and visits the entry of each matching
//! tag (a false tag match happens about once in 13 000 lookups at full load). Only the shard
//! that owns it calls it, on the worker thread.
//!
//! Why not `hashbrown` (which DESIGN.md §5 named and this crate used first): its `HashTable`
//! keeps control bytes and values in two arrays, so at 1 M flows a probe cost two dependent
//! cache misses (control group, then the `u32` index) before the entry's own miss; and it does
//! not say where a hash's group lies, so a burst could not load the 32 groups it is about to
//! probe before probing them, which is what lets a worker overlap the misses of a whole rx
//! burst without `unsafe` prefetch instructions (see `shard::burst`). Here tag and index share
//! a line, and [`FlowIndex::touch`] loads that line for a hash without probing.
//!
//! Overflow without tombstones (folly's F14 does the same per chunk): a bucket counts the
//! flows stored past it whose probe started at or before it. A lookup moves on to the next
//! bucket only while that count is non-zero; removing a flow decrements the counts along its
//! probe path again. Nothing is left behind by deletes, so the table never needs a rehash. A
//! count that reaches `u16::MAX` stays there (it only costs probes).
//!
//! Size: 1.8 slots per entry of capacity, so the table is at most 56% full: 11.5 bytes per
//! entry of capacity. With ten slots a bucket, at capacity 0.9% of the flows sit outside
//! their home bucket and 3.0% of the buckets have overflowed (a simulation of random hashes;
//! at two slots per entry it was 0.4% and 1.4%, for 1.3 bytes more per flow), so nearly
//! every lookup reads one line.

/// Slots per bucket.
const WAYS: usize = 10;
/// Slots per flow of capacity, in tenths: 1.8, so the index is at most 56% full.
const SLOTS_PER_FLOW_TENTHS: u64 = 18;
/// Occupancy mask of a full bucket.
const FULL: u16 = (1 << WAYS) - 1;

/// One cache line of the index.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Bucket {
    /// Low 16 bits of each slot's hash.
    tags: [u16; WAYS],
    /// Bit `w` set: slot `w` holds a flow.
    used: u16,
    /// Flows stored past this bucket whose home is this bucket or one before it (saturating).
    overflow: u16,
    /// Slab index of each slot's entry.
    slots: [u32; WAYS],
}

const EMPTY: Bucket = Bucket {
    tags: [0; WAYS],
    used: 0,
    overflow: 0,
    slots: [0; WAYS],
};

impl Bucket {
    /// Slots whose tag is `tag` (bit per slot).
    #[inline]
    fn matches(&self, tag: u16) -> u16 {
        let mut m = 0u16;
        for (w, &t) in self.tags.iter().enumerate() {
            m |= u16::from(t == tag) << w;
        }
        m & self.used
    }
}

/// Where the flows of a shard are (see the module documentation).
pub(crate) struct FlowIndex {
    buckets: Vec<Bucket>,
    /// Inserts so far: a flow found absent stays absent until this changes.
    inserts: u64,
}

/// What a flow's home bucket says about it, without visiting any entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Home {
    /// The first slot whose tag matches: probably the flow's entry (check its key).
    Candidate(u32),
    /// No tag matches and nothing overflowed past the bucket: the flow is not in the index.
    Absent,
    /// No tag matches but the bucket overflowed: a full probe must decide.
    Unknown,
}

impl FlowIndex {
    /// An index for up to `capacity` flows (half full at capacity).
    pub fn with_capacity(capacity: u32) -> FlowIndex {
        let n = (u64::from(capacity) * SLOTS_PER_FLOW_TENTHS)
            .div_ceil(WAYS as u64 * 10)
            .max(1) as usize;
        FlowIndex {
            buckets: vec![EMPTY; n],
            inserts: 0,
        }
    }

    /// Bytes allocated.
    pub fn memory_bytes(&self) -> usize {
        self.buckets.capacity() * core::mem::size_of::<Bucket>()
    }

    /// Inserts so far (see [`Home::Absent`]).
    pub fn inserts(&self) -> u64 {
        self.inserts
    }

    /// The home bucket of `hash`: the high bits of the hash scaled to the bucket count.
    #[inline]
    pub fn home(&self, hash: u64) -> usize {
        ((u128::from(hash) * self.buckets.len() as u128) >> 64) as usize
    }

    #[inline]
    fn tag(hash: u64) -> u16 {
        hash as u16
    }

    #[inline]
    fn next(&self, b: usize) -> usize {
        if b + 1 == self.buckets.len() {
            0
        } else {
            b + 1
        }
    }

    /// Loads (part of) the home line of `hash` and returns it, so that a burst can bring the
    /// lines of all its packets into the cache with independent loads before it probes.
    #[inline]
    pub fn touch(&self, hash: u64) -> u64 {
        u64::from(self.buckets[self.home(hash)].used)
    }

    /// What the home bucket of `hash` alone says (see [`Home`]).
    #[inline]
    pub fn home_of(&self, hash: u64) -> Home {
        let b = &self.buckets[self.home(hash)];
        let m = b.matches(Self::tag(hash));
        if m != 0 {
            Home::Candidate(b.slots[m.trailing_zeros() as usize])
        } else if b.overflow == 0 {
            Home::Absent
        } else {
            Home::Unknown
        }
    }

    /// The first slab index stored under `hash` for which `eq` holds.
    #[inline]
    pub fn find(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let tag = Self::tag(hash);
        let mut b = self.home(hash);
        for _ in 0..self.buckets.len() {
            let bucket = &self.buckets[b];
            let mut m = bucket.matches(tag);
            while m != 0 {
                let idx = bucket.slots[m.trailing_zeros() as usize];
                if eq(idx) {
                    return Some(idx);
                }
                m &= m - 1;
            }
            if bucket.overflow == 0 {
                return None;
            }
            b = self.next(b);
        }
        None
    }

    /// Adds slab index `idx` under `hash`. The caller keeps at most half the slots in use, so a
    /// free slot always exists.
    pub fn insert(&mut self, hash: u64, idx: u32) {
        let tag = Self::tag(hash);
        let mut b = self.home(hash);
        self.inserts += 1;
        for _ in 0..self.buckets.len() {
            let next = self.next(b);
            let bucket = &mut self.buckets[b];
            let free = !bucket.used & FULL;
            if free != 0 {
                let w = free.trailing_zeros() as usize;
                bucket.tags[w] = tag;
                bucket.slots[w] = idx;
                bucket.used |= 1 << w;
                return;
            }
            bucket.overflow = bucket.overflow.saturating_add(1);
            b = next;
        }
        unreachable!("flow index full: the shard keeps it at most half full");
    }

    /// Removes slab index `idx` stored under `hash`; false if it is not there.
    pub fn remove(&mut self, hash: u64, idx: u32) -> bool {
        let tag = Self::tag(hash);
        let home = self.home(hash);
        let mut b = home;
        let mut found = None;
        for _ in 0..self.buckets.len() {
            let bucket = &self.buckets[b];
            let mut m = bucket.matches(tag);
            while m != 0 {
                let w = m.trailing_zeros() as usize;
                if bucket.slots[w] == idx {
                    found = Some((b, w));
                    break;
                }
                m &= m - 1;
            }
            if found.is_some() || bucket.overflow == 0 {
                break;
            }
            b = self.next(b);
        }
        let Some((at, w)) = found else {
            return false;
        };
        self.buckets[at].used &= !(1 << w);
        // Undo the overflow counts the insert left on the way from the home bucket.
        let mut b = home;
        while b != at {
            let bucket = &mut self.buckets[b];
            if bucket.overflow != u16::MAX {
                bucket.overflow -= 1;
            }
            b = self.next(b);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn bucket_is_one_cache_line() {
        assert_eq!(core::mem::size_of::<Bucket>(), 64);
        assert_eq!(core::mem::align_of::<Bucket>(), 64);
    }

    /// Hashes that all land in the same home bucket with the same tag force overflow chains
    /// and tag collisions; the index must still find, and after removal forget, each one.
    #[test]
    fn overflow_chains_are_found_and_undone() {
        let mut ix = FlowIndex::with_capacity(40); // 8 buckets
        assert_eq!(ix.buckets.len(), 8);
        let hash = 0xc000_0000_0000_0007u64; // home bucket 6, tag 7
        assert_eq!(ix.home(hash), 6);
        for idx in 0..35u32 {
            ix.insert(hash, idx);
        }
        // Buckets 6 and 7 fill, the chain wraps to 0 and ends in 1.
        let overflow: Vec<u16> = ix.buckets.iter().map(|b| b.overflow).collect();
        assert_eq!(overflow, [5, 0, 0, 0, 0, 0, 25, 15]);
        assert_eq!(ix.buckets[1].used, 0b11111);
        for idx in 0..35u32 {
            assert_eq!(ix.find(hash, |i| i == idx), Some(idx));
        }
        assert_eq!(ix.find(hash, |i| i == 99), None);
        for idx in (0..35u32).rev() {
            assert!(ix.remove(hash, idx));
            assert_eq!(ix.find(hash, |i| i == idx), None);
        }
        assert!(!ix.remove(hash, 3));
        assert!(ix.buckets.iter().all(|b| b.used == 0 && b.overflow == 0));
        assert_eq!(ix.home_of(hash), Home::Absent);
    }

    /// Random inserts and removes against a model map: lookups agree and every count returns
    /// to zero once the index is empty.
    #[test]
    fn random_operations_match_a_model() {
        let mut ix = FlowIndex::with_capacity(1000);
        let mut model: HashMap<u32, u64> = HashMap::new();
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for step in 0..200_000u32 {
            let r = rnd();
            let idx = (r % 1000) as u32;
            if let Some(h) = model.remove(&idx) {
                assert!(ix.remove(h, idx), "step {step}");
            } else {
                // A few hash values only, so chains and tag collisions are common.
                let h = rnd() & 0xf000_0000_0000_0003;
                ix.insert(h, idx);
                model.insert(idx, h);
            }
            if step % 97 == 0 {
                for (&i, &h) in &model {
                    assert_eq!(ix.find(h, |j| j == i), Some(i));
                }
            }
        }
        for (i, h) in model.drain() {
            assert!(ix.remove(h, i));
        }
        assert!(ix.buckets.iter().all(|b| b.used == 0 && b.overflow == 0));
    }
}
