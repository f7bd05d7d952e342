//! Persistent (copy-on-write, structurally shared) containers for compiled rulesets.
//!
//! A rule generation must be built without copying the parts of the previous one that did not
//! change, and a worker may still be running the previous one while the next is built, so
//! compiled programs are values that share their unchanged pieces through `Arc`:
//! - [`PVec`]: an indexable vector in chunks of [`PVEC_CHUNK`]; a clone is one `Arc` clone,
//!   a write copies the touched chunk (64 items) and, when the spine is shared, the spine
//!   (one pointer per chunk).
//! - [`Rules`]: a chain's rules as a rope of chunks of at most [`RULES_CHUNK_MAX`] rules, each
//!   chunk with a process-unique id. Insert, remove and replace at a position copy one chunk
//!   (splitting it when it grows too large) and the spine. Lowering ([`crate::exec`]) keeps one
//!   executable segment per chunk and re-lowers only the chunks whose contents changed.
//!
//! Cost of one change: O(chunk) + O(len / chunk) pointer copies for the spine; the spine term
//! is about 1,600 pointers for a 100k-rule chain, far below the cost of one rule's compile.
//!
//! Thread use: values are immutable once shared; the control thread edits its own copy.

use crate::vm::Rule;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Items per [`PVec`] chunk.
pub const PVEC_CHUNK: usize = 64;
/// A [`Rules`] chunk is split in two when it grows beyond this many rules.
pub const RULES_CHUNK_MAX: usize = 128;
/// Chunks built from a whole list hold this many rules (room to grow before a split).
pub const RULES_CHUNK_FILL: usize = 64;

/// A persistent vector (see the module docs).
pub struct PVec<T> {
    spine: Arc<Vec<Arc<Vec<T>>>>,
    len: usize,
}

impl<T> Clone for PVec<T> {
    fn clone(&self) -> Self {
        PVec {
            spine: self.spine.clone(),
            len: self.len,
        }
    }
}

impl<T> Default for PVec<T> {
    fn default() -> Self {
        PVec {
            spine: Arc::new(Vec::new()),
            len: 0,
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for PVec<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T> PVec<T> {
    /// Number of items.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Item `i`.
    #[inline]
    pub fn get(&self, i: usize) -> Option<&T> {
        self.spine.get(i / PVEC_CHUNK)?.get(i % PVEC_CHUNK)
    }

    /// Items in order.
    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.spine.iter().flat_map(|c| c.iter())
    }
}

impl<T: Clone> PVec<T> {
    /// Item `i` for writing: copies its chunk (and the spine) when they are shared.
    pub fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        if i >= self.len {
            return None;
        }
        let spine = Arc::make_mut(&mut self.spine);
        Arc::make_mut(spine.get_mut(i / PVEC_CHUNK)?).get_mut(i % PVEC_CHUNK)
    }

    /// Replaces item `i`; false when `i` is out of range.
    pub fn set(&mut self, i: usize, v: T) -> bool {
        match self.get_mut(i) {
            Some(x) => {
                *x = v;
                true
            }
            None => false,
        }
    }

    /// Appends an item.
    pub fn push(&mut self, v: T) {
        let spine = Arc::make_mut(&mut self.spine);
        match spine.last_mut() {
            Some(c) if c.len() < PVEC_CHUNK => Arc::make_mut(c).push(v),
            _ => {
                let mut c = Vec::with_capacity(PVEC_CHUNK);
                c.push(v);
                spine.push(Arc::new(c));
            }
        }
        self.len += 1;
    }
}

impl<T: Clone> From<Vec<T>> for PVec<T> {
    fn from(v: Vec<T>) -> Self {
        v.into_iter().collect()
    }
}

impl<T: Clone> FromIterator<T> for PVec<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut p = PVec::default();
        for x in iter {
            p.push(x);
        }
        p
    }
}

impl<T> std::ops::Index<usize> for PVec<T> {
    type Output = T;
    fn index(&self, i: usize) -> &T {
        match self.get(i) {
            Some(x) => x,
            None => panic!("PVec index {i} out of range (len {})", self.len),
        }
    }
}

/// One compiled rule of a chain with what the incremental compiler keeps about it.
#[derive(Debug)]
pub struct RuleEntry {
    pub rule: Rule,
    /// The rule handle (0 for rules of hand-built programs).
    pub handle: u64,
    /// What the compiler knows about the rule's source (absent in hand-built programs).
    pub(crate) meta: Option<Box<crate::compile::RuleMeta>>,
}

impl RuleEntry {
    /// An entry for a hand-built rule.
    pub fn bare(rule: Rule) -> RuleEntry {
        RuleEntry {
            rule,
            handle: 0,
            meta: None,
        }
    }
}

static NEXT_CHUNK_ID: AtomicU64 = AtomicU64::new(1);

fn chunk_id() -> u64 {
    NEXT_CHUNK_ID.fetch_add(1, Ordering::Relaxed)
}

/// The rules of one chunk.
pub type ChunkRules = Arc<Vec<Arc<RuleEntry>>>;

/// One chunk of a [`Rules`] rope.
#[derive(Clone, Debug)]
pub struct RuleChunk {
    /// Process-unique identity of this chunk (kept while its rules are edited in place).
    pub id: u64,
    /// Position of the chunk's first rule in the chain.
    pub start: usize,
    pub rules: ChunkRules,
}

/// Where [`Rules::insert`] put a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inserted {
    /// The chunk that holds the new rule.
    pub chunk: u64,
    /// After a split: the new chunk and the handles of the rules moved into it.
    pub split: Option<(u64, Vec<u64>)>,
}

/// A chain's rules (see the module docs). Never holds an empty chunk.
#[derive(Clone, Debug)]
pub struct Rules {
    spine: Arc<Vec<RuleChunk>>,
    len: usize,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            spine: Arc::new(Vec::new()),
            len: 0,
        }
    }
}

impl PartialEq for Rules {
    fn eq(&self, other: &Rules) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for Rules {}

impl Rules {
    /// A rope over `entries`, in chunks of [`RULES_CHUNK_FILL`].
    pub fn from_entries(entries: Vec<Arc<RuleEntry>>) -> Rules {
        let len = entries.len();
        let mut spine = Vec::with_capacity(len.div_ceil(RULES_CHUNK_FILL));
        let mut it = entries.into_iter().peekable();
        let mut start = 0;
        while it.peek().is_some() {
            let c: Vec<_> = it.by_ref().take(RULES_CHUNK_FILL).collect();
            let n = c.len();
            spine.push(RuleChunk {
                id: chunk_id(),
                start,
                rules: Arc::new(c),
            });
            start += n;
        }
        Rules {
            spine: Arc::new(spine),
            len,
        }
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the chain has no rules.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunks, in order.
    pub fn chunks(&self) -> &[RuleChunk] {
        &self.spine
    }

    /// Index of the chunk holding position `i` (`i < len`).
    fn chunk_of(&self, i: usize) -> Option<usize> {
        if i >= self.len {
            return None;
        }
        Some(self.spine.partition_point(|c| c.start <= i) - 1)
    }

    /// The entry at position `i`.
    pub fn entry(&self, i: usize) -> Option<&Arc<RuleEntry>> {
        let c = &self.spine[self.chunk_of(i)?];
        c.rules.get(i - c.start)
    }

    /// The rule at position `i`.
    pub fn get(&self, i: usize) -> Option<&Rule> {
        self.entry(i).map(|e| &e.rule)
    }

    /// Entries in order.
    pub fn entries(&self) -> impl Iterator<Item = &Arc<RuleEntry>> + '_ {
        self.spine.iter().flat_map(|c| c.rules.iter())
    }

    /// Rules in order.
    pub fn iter(&self) -> impl Iterator<Item = &Rule> + '_ {
        self.entries().map(|e| &e.rule)
    }

    /// Position of the rule with `handle`, which lives in chunk `chunk` (an id).
    pub fn position_in(&self, chunk: u64, handle: u64) -> Option<usize> {
        let c = self.spine.iter().find(|c| c.id == chunk)?;
        c.rules
            .iter()
            .position(|e| e.handle == handle)
            .map(|o| c.start + o)
    }

    /// Recomputes chunk starts from chunk `from` on.
    fn restart(spine: &mut [RuleChunk], from: usize) {
        let mut start = match from.checked_sub(1) {
            Some(p) => spine[p].start + spine[p].rules.len(),
            None => 0,
        };
        for c in &mut spine[from..] {
            c.start = start;
            start += c.rules.len();
        }
    }

    /// Inserts `e` at position `i` (`i <= len`). Returns the id of the chunk that holds it
    /// and, when its chunk was split, the id of the new chunk and the handles moved there.
    pub fn insert(&mut self, i: usize, e: Arc<RuleEntry>) -> Inserted {
        let i = i.min(self.len);
        let spine = Arc::make_mut(&mut self.spine);
        self.len += 1;
        if spine.is_empty() {
            let id = chunk_id();
            spine.push(RuleChunk {
                id,
                start: 0,
                rules: Arc::new(vec![e]),
            });
            return Inserted {
                chunk: id,
                split: None,
            };
        }
        // The chunk holding position i, or the last one when appending.
        let ci = if i == self.len - 1 {
            spine.len() - 1
        } else {
            spine.partition_point(|c| c.start <= i) - 1
        };
        let off = i - spine[ci].start;
        let mut out = Inserted {
            chunk: spine[ci].id,
            split: None,
        };
        let rules = Arc::make_mut(&mut spine[ci].rules);
        rules.insert(off, e);
        if rules.len() > RULES_CHUNK_MAX {
            let half = rules.len() / 2;
            let tail = rules.split_off(half);
            let id = chunk_id();
            let moved = tail.iter().map(|e| e.handle).collect();
            spine.insert(
                ci + 1,
                RuleChunk {
                    id,
                    start: 0,
                    rules: Arc::new(tail),
                },
            );
            if off >= half {
                out.chunk = id;
            }
            out.split = Some((id, moved));
        }
        Self::restart(spine, ci);
        out
    }

    /// Removes the rule at position `i`. Returns it and the id of the chunk it left, unless
    /// that chunk is gone (it held only this rule).
    pub fn remove(&mut self, i: usize) -> Option<(Arc<RuleEntry>, Option<u64>)> {
        let ci = self.chunk_of(i)?;
        let spine = Arc::make_mut(&mut self.spine);
        let off = i - spine[ci].start;
        let rules = Arc::make_mut(&mut spine[ci].rules);
        let e = rules.remove(off);
        self.len -= 1;
        let left = if rules.is_empty() {
            spine.remove(ci);
            None
        } else {
            Some(spine[ci].id)
        };
        if ci < spine.len() {
            Self::restart(spine, ci);
        }
        Some((e, left))
    }

    /// Replaces the rule at position `i`. Returns the old one and the chunk's id.
    pub fn replace(&mut self, i: usize, e: Arc<RuleEntry>) -> Option<(Arc<RuleEntry>, u64)> {
        let ci = self.chunk_of(i)?;
        let spine = Arc::make_mut(&mut self.spine);
        let off = i - spine[ci].start;
        let old = std::mem::replace(Arc::make_mut(&mut spine[ci].rules).get_mut(off)?, e);
        Some((old, spine[ci].id))
    }

    /// Handles of the rules in chunk `id`.
    pub fn chunk_handles(&self, id: u64) -> Vec<u64> {
        self.spine
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.rules.iter().map(|e| e.handle).collect())
            .unwrap_or_default()
    }
}

impl From<Vec<Rule>> for Rules {
    fn from(v: Vec<Rule>) -> Self {
        v.into_iter().collect()
    }
}

impl FromIterator<Rule> for Rules {
    fn from_iter<I: IntoIterator<Item = Rule>>(iter: I) -> Self {
        Rules::from_entries(iter.into_iter().map(|r| Arc::new(RuleEntry::bare(r))).collect())
    }
}

impl<'a> IntoIterator for &'a Rules {
    type Item = &'a Rule;
    type IntoIter = Box<dyn Iterator<Item = &'a Rule> + 'a>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl std::ops::Index<usize> for Rules {
    type Output = Rule;
    fn index(&self, i: usize) -> &Rule {
        match self.get(i) {
            Some(r) => r,
            None => panic!("rule index {i} out of range (len {})", self.len),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::{Insn, Verdict};
    use proptest::prelude::*;

    fn entry(h: u64) -> Arc<RuleEntry> {
        Arc::new(RuleEntry {
            rule: Rule {
                insns: vec![Insn::Verdict(Verdict::Accept)],
            },
            handle: h,
            meta: None,
        })
    }

    #[derive(Debug, Clone)]
    enum Edit {
        Insert(usize, u64),
        Remove(usize),
        Replace(usize, u64),
    }

    fn edits() -> impl Strategy<Value = Vec<Edit>> {
        proptest::collection::vec(
            prop_oneof![
                (0usize..400, 1u64..1000).prop_map(|(i, h)| Edit::Insert(i, h)),
                (0usize..400).prop_map(Edit::Remove),
                (0usize..400, 1u64..1000).prop_map(|(i, h)| Edit::Replace(i, h)),
            ],
            0..300,
        )
    }

    proptest! {
        #[test]
        fn rules_rope_behaves_like_a_vec(start in 0usize..300, edits in edits()) {
            let mut model: Vec<u64> = (0..start as u64).collect();
            let mut rope = Rules::from_entries(model.iter().map(|&h| entry(h)).collect());
            let before = rope.clone();
            let before_model = model.clone();
            for e in edits {
                match e {
                    Edit::Insert(i, h) => {
                        let i = i.min(model.len());
                        model.insert(i, h);
                        let ins = rope.insert(i, entry(h));
                        prop_assert!(rope.chunk_handles(ins.chunk).contains(&h));
                        if let Some((id, moved)) = ins.split {
                            prop_assert_eq!(rope.chunk_handles(id), moved);
                        }
                    }
                    Edit::Remove(i) => {
                        let got = rope.remove(i).map(|(e, _)| e.handle);
                        let want = (i < model.len()).then(|| model.remove(i));
                        prop_assert_eq!(got, want);
                    }
                    Edit::Replace(i, h) => {
                        let got = rope.replace(i, entry(h)).map(|(e, _)| e.handle);
                        let want = model.get_mut(i).map(|x| std::mem::replace(x, h));
                        prop_assert_eq!(got, want);
                    }
                }
                prop_assert_eq!(rope.len(), model.len());
            }
            let handles: Vec<u64> = rope.entries().map(|e| e.handle).collect();
            prop_assert_eq!(&handles, &model);
            for (i, h) in model.iter().enumerate() {
                prop_assert_eq!(rope.entry(i).map(|e| e.handle), Some(*h));
            }
            for c in rope.chunks() {
                prop_assert!(!c.rules.is_empty() && c.rules.len() <= RULES_CHUNK_MAX);
                for e in c.rules.iter() {
                    prop_assert!(rope.position_in(c.id, e.handle).is_some());
                }
            }
            // The clone taken before the edits is unchanged (structural sharing, no aliasing).
            let old: Vec<u64> = before.entries().map(|e| e.handle).collect();
            prop_assert_eq!(old, before_model);
        }

        #[test]
        fn pvec_behaves_like_a_vec(ops in proptest::collection::vec((any::<bool>(), 0usize..300, any::<u32>()), 0..400)) {
            let mut model = Vec::new();
            let mut p = PVec::default();
            let mut snapshots = Vec::new();
            for (push, i, v) in ops {
                if push || model.is_empty() {
                    model.push(v);
                    p.push(v);
                } else {
                    let i = i % model.len();
                    model[i] = v;
                    prop_assert!(p.set(i, v));
                }
                if v % 17 == 0 {
                    snapshots.push((p.clone(), model.clone()));
                }
            }
            prop_assert_eq!(p.iter().copied().collect::<Vec<_>>(), model.clone());
            prop_assert_eq!(p.len(), model.len());
            for (s, m) in snapshots {
                prop_assert_eq!(s.iter().copied().collect::<Vec<_>>(), m);
            }
        }
    }

    #[test]
    fn a_change_copies_one_chunk_and_shares_the_others() {
        let rope = Rules::from_entries((0..10_000).map(entry).collect());
        let mut next = rope.clone();
        next.insert(5_000, entry(99_999));
        let shared = rope
            .chunks()
            .iter()
            .zip(next.chunks())
            .filter(|(a, b)| Arc::ptr_eq(&a.rules, &b.rules))
            .count();
        assert_eq!(shared, rope.chunks().len() - 1);
    }
}
