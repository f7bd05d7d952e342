//! The executable form of a verified program: what workers actually run.
//!
//! [`crate::verify`] checks [`Insn`] programs; [`lower`] then turns a verified program into
//! [`Exec`], a flat per-chain array of [`Op`]s, and [`evaluate`] runs it. Lowering changes
//! how an instruction sequence is executed, never what it does: every fused op writes the
//! same registers and breaks in the same cases as the instructions it replaces, and the
//! reference interpreter ([`crate::vm::evaluate`]) is kept to prove it (property tests in
//! `vm_tests.rs` and the `vm` fuzz target run both and compare outcomes and state).
//!
//! Why it exists: an interpreter's cost is dominated by dispatch (one indirect jump per
//! instruction, mispredicted when rules differ), so the common sequences become one op each:
//! - `meta KEY; cmp` (the `meta l4proto tcp` / `meta nfproto ipv4` dependencies every header
//!   match in an `inet` table brings) → [`Op::MetaCmp`];
//! - `payload load; cmp` of up to 4 bytes (`tcp dport 22`, `ip protocol icmp`) →
//!   [`Op::LoadCmp`];
//! - `ct state; bitwise; cmp != 0` (`ct state established,related`) → [`Op::CtState`];
//! - loads, compares and lookups of up to 4-byte values work on `u32`s instead of byte slices;
//! - a lookup skips the worker's dynamic elements unless a meter can add to that set, and
//!   holds the set itself (no id-to-set indirection per packet);
//! - the rules of one chunk of a chain ([`crate::pvec::Rules`]) sit in one array, a
//!   *segment* (no pointer chase per rule, one per 64–128 rules);
//! - **the fast path**: a run of two or more consecutive rules of a chain that each match
//!   fields against constants and end in the same verdict, with no other statement (`ip saddr
//!   198.18.0.1 drop`, `ip saddr 198.18.0.2 drop`, …), becomes one set lookup (built by
//!   [`crate::compile::merged_run`]), whatever the chunks the run spans: its lookup sits in
//!   the segment of its first rule and the segments after it skip the run's rules. A run's
//!   rules have no counter or other state of their own (only matches and a verdict), so
//!   merging changes no per-rule state, and each keeps its handle in the program; the
//!   constants of a run may not overlap (else the set would refuse them and the rules are
//!   lowered one by one), so at most one rule of a run can match a packet, which is why one
//!   lookup decides exactly what the rules one after another would.
//!
//! Incremental lowering ([`lower_incremental`]): segments are shared between generations and
//! a chunk is lowered again only when its rules changed (another `Arc`), when the caller names
//! it (a named set it looks up was replaced), when its chain is new, or when it shares a
//! merged run with such a chunk (before or after the change): a merged run is rebuilt as a
//! unit, so a change inside a run of `r` rules costs O(r) (its set is built again), and any
//! other one-rule change costs one chunk.
//!
//! Thread use: an [`Exec`] is immutable, built by the control side next to its program and
//! shared by every worker; evaluation writes only the worker's own [`State`].

use crate::pvec::{ChunkRules, RuleEntry};
use crate::sets::{LookupResult, Set, SetId};
use crate::vm::{
    self, BitOp, CmpOp, CtKey, Flow, Insn, MetaKey, Operand, Outcome, PacketCtx, Program, Regs, State,
    Verdict, MAX_CALL_DEPTH, MAX_DATA_LEN,
};
use std::collections::HashSet;
use std::sync::Arc;

/// One executable operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// A meta key of at most 4 bytes into `dreg`, compared with `imm` (left-aligned).
    MetaCmp {
        key: MetaKey,
        dreg: u8,
        len: u8,
        op: CmpOp,
        imm: u32,
    },
    /// At most 4 payload bytes into `dreg`.
    Load {
        base: vm::Base,
        offset: u16,
        len: u8,
        dreg: u8,
    },
    /// At most 4 payload bytes into `dreg`, compared with `imm` (left-aligned).
    LoadCmp {
        base: vm::Base,
        offset: u16,
        len: u8,
        dreg: u8,
        op: CmpOp,
        imm: u32,
    },
    /// At most 4 payload bytes, masked (`AND mask`), into `dreg`, compared with `imm`
    /// (left-aligned): `tcp flags & (syn | ack) == syn`.
    LoadMaskCmp {
        base: vm::Base,
        offset: u16,
        len: u8,
        dreg: u8,
        mask: u32,
        op: CmpOp,
        imm: u32,
    },
    /// Compare at most 4 bytes at `sreg` with `imm` (left-aligned).
    Cmp { sreg: u8, len: u8, op: CmpOp, imm: u32 },
    /// `notrack`.
    Notrack,
    /// `synproxy …`: the proxy takes the packet (verdict drop, the rule ends).
    Synproxy {
        mss: u16,
        wscale: u8,
        timestamp: bool,
        sack_perm: bool,
    },
    /// `ct state` into `dreg`, `state & mask` into `mdreg`; breaks when that is zero.
    CtState { dreg: u8, mdreg: u8, mask: u32 },
    /// Set lookup (index into [`Segment::lookups`]).
    Lookup(u32),
    /// `Load` then `Lookup` (index into [`Segment::lookups`]) keyed by what was loaded
    /// (`ip saddr @blocklist`, `tcp dport { 22, 80 }`).
    LoadLookup {
        base: vm::Base,
        offset: u16,
        len: u8,
        dreg: u8,
        lookup: u32,
    },
    /// Count the packet.
    Counter { id: u32 },
    /// Set the verdict (ends the rule).
    Verdict(Verdict),
    /// Any other instruction, run by the reference interpreter (index into
    /// [`Segment::generic`]).
    Generic(u32),
}

/// A lowered lookup: the set itself, and its id for the worker's dynamic elements.
#[derive(Clone, Debug)]
pub(crate) struct LookupOp {
    set: Arc<Set>,
    /// The set's id in the program (dynamic elements live in the worker's state under it);
    /// `None` for a set private to the segment (a merged run).
    id: Option<SetId>,
    sreg: u8,
    len: u8,
    dreg: Option<u8>,
    verdict_map: bool,
    invert: bool,
    /// A meter can add elements to this set: misses also search the worker's elements.
    dynamic: bool,
    /// Plain membership in a set of integer keys, nothing dynamic: answered by
    /// [`Set::contains128`] (no key slice, no value buffer).
    fast: bool,
}

impl PartialEq for LookupOp {
    fn eq(&self, o: &LookupOp) -> bool {
        Arc::ptr_eq(&self.set, &o.set)
            && (
                self.id,
                self.sreg,
                self.len,
                self.dreg,
                self.verdict_map,
                self.invert,
                self.dynamic,
            ) == (o.id, o.sreg, o.len, o.dreg, o.verdict_map, o.invert, o.dynamic)
    }
}

/// The lowered rules of one chunk: their ops, and where each (possibly merged) rule starts
/// (`rule_start[r]..rule_start[r + 1]`).
#[derive(Debug, Default)]
pub(crate) struct Segment {
    /// The chunk this was lowered from (compared by pointer to decide reuse).
    source: Option<ChunkRules>,
    chunk: u64,
    pub(crate) ops: Vec<Op>,
    rule_start: Vec<u32>,
    /// Per rule, a test of the packet's (nfproto, l4proto) hoisted out of its ops (see
    /// [`hoist_guard`]): the high 16 bits mask `nfproto << 8 | l4proto`, the low 16 bits are
    /// what the masked value must be. Zero runs the rule unconditionally.
    guard: Vec<u32>,
    pub(crate) lookups: Vec<LookupOp>,
    pub(crate) generic: Vec<Insn>,
    /// The chunk's first rules belong to a merged run that starts in an earlier chunk (they
    /// are not lowered here: the run's lookup in that chunk stands for them).
    run_in: bool,
    /// The chunk's last rule starts or continues a merged run that goes on in the next chunk.
    run_out: bool,
    /// Some rule of the chunk reads a conntrack fact (`ct state`, `ct mark`, …).
    reads_ct: bool,
}

static EMPTY_SEGMENT: Segment = Segment {
    source: None,
    chunk: 0,
    ops: Vec::new(),
    rule_start: Vec::new(),
    guard: Vec::new(),
    lookups: Vec::new(),
    generic: Vec::new(),
    run_in: false,
    run_out: false,
    reads_ct: false,
};

/// One chain: its segments, one per chunk of its rules, and those that have rules to run
/// (what evaluation walks: a long merged run leaves the segments it covers empty).
/// Held inline in [`Exec`] (two shared slices), so evaluation reaches a segment with one
/// load more than a flat array would take.
#[derive(Clone, Debug, Default)]
pub(crate) struct ExecChain {
    pub(crate) segs: Arc<[Arc<Segment>]>,
    live: Arc<[Arc<Segment>]>,
    /// Some segment reads a conntrack fact.
    reads_ct: bool,
}

impl ExecChain {
    fn new(segs: Vec<Arc<Segment>>) -> ExecChain {
        let live = segs.iter().filter(|s| s.rule_start.len() > 1).cloned().collect();
        let reads_ct = segs.iter().any(|s| s.reads_ct);
        ExecChain {
            segs: segs.into(),
            live,
            reads_ct,
        }
    }
}

/// A lowered program (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct Exec {
    pub(crate) chains: Vec<ExecChain>,
    policies: Vec<Option<Verdict>>,
}

impl Exec {
    /// Whether any chain (a jump target too) reads a conntrack fact: without one, what the
    /// rules decide does not depend on the packet's flow. O(chains): each chain knows it from
    /// its segments, each segment from when it was lowered.
    pub fn reads_ct(&self) -> bool {
        self.chains.iter().any(|c| c.reads_ct)
    }

    /// Number of rules chain `chain` runs as (a merged run counts once).
    pub fn lowered_rules(&self, chain: usize) -> usize {
        self.chains
            .get(chain)
            .map(|c| c.live.iter().map(|s| s.rule_start.len().saturating_sub(1)).sum())
            .unwrap_or(0)
    }

    /// What the program reads of a packet, when its outcome depends on nothing else: every
    /// chain (jump targets too) holds only matches (payload, meta, ct, lookups in sets that are
    /// neither dynamic nor timed), verdicts, counters (which the cache bumps again on a hit)
    /// and the statements that only set actions (`notrack`, `synproxy`, `reject`, mark and ct
    /// mark/label). `None` when some rule limits, logs, writes the packet, updates a set or
    /// reads the time. See [`crate::cache`].
    pub(crate) fn pure_reads(&self, prog: &Program) -> Option<Vec<crate::cache::Probe>> {
        use crate::cache::Probe;
        let mut out: Vec<Probe> = Vec::new();
        let mut add = |p: Option<Probe>| {
            if let Some(p) = p.filter(|p| !out.contains(p)) {
                out.push(p);
            }
        };
        let set_ok = |set: &Set, dynamic: bool| !dynamic && !set.is_timed();
        for c in &self.chains {
            for seg in c.segs.iter() {
                for op in &seg.ops {
                    match *op {
                        Op::MetaCmp { key, .. } => add(Probe::meta(key)?),
                        Op::Load {
                            base, offset, len, ..
                        }
                        | Op::LoadCmp {
                            base, offset, len, ..
                        }
                        | Op::LoadMaskCmp {
                            base, offset, len, ..
                        }
                        | Op::LoadLookup {
                            base, offset, len, ..
                        } => add(Some(Probe::Payload { base, offset, len })),
                        Op::CtState { .. } => add(Some(Probe::Ct(CtKey::State))),
                        Op::Cmp { .. }
                        | Op::Notrack
                        | Op::Synproxy { .. }
                        | Op::Verdict(_)
                        | Op::Lookup(_) => {}
                        // Generic ops: their instructions are in `seg.generic`, below.
                        Op::Generic(_) | Op::Counter { .. } => {}
                    }
                }
                for l in &seg.lookups {
                    if !set_ok(&l.set, l.dynamic) {
                        return None;
                    }
                }
                for insn in &seg.generic {
                    match *insn {
                        Insn::PayloadLoad {
                            base, offset, len, ..
                        } => add(Some(Probe::Payload { base, offset, len })),
                        Insn::Meta { key, .. } => add(Probe::meta(key)?),
                        Insn::Ct { key, .. } => add(Some(Probe::Ct(key))),
                        Insn::Lookup { set, .. } => {
                            let dynamic = prog.dynamic_sets.get(set.0 as usize).copied().unwrap_or(false);
                            if !prog.sets.get(set).is_some_and(|s| set_ok(s, dynamic)) {
                                return None;
                            }
                        }
                        Insn::Cmp { .. }
                        | Insn::Bitwise { .. }
                        | Insn::Byteorder { .. }
                        | Insn::Range { .. }
                        | Insn::Immediate { .. }
                        | Insn::MetaSetMark { .. }
                        | Insn::CtSet { .. }
                        | Insn::Reject(_)
                        | Insn::Synproxy { .. }
                        | Insn::Notrack
                        | Insn::Counter { .. }
                        | Insn::Verdict(_) => {}
                        Insn::PayloadWrite { .. }
                        | Insn::Dynset { .. }
                        | Insn::Limit { .. }
                        | Insn::Quota { .. }
                        | Insn::Log { .. } => return None,
                    }
                }
            }
        }
        Some(out)
    }

    /// Number of segments lowered for this value that the previous one did not have (what
    /// an incremental step cost), counted against `prev`.
    pub fn segments_not_in(&self, prev: &Exec) -> usize {
        let old: HashSet<*const Segment> = prev
            .chains
            .iter()
            .flat_map(|c| c.segs.iter().map(Arc::as_ptr))
            .collect();
        self.chains
            .iter()
            .flat_map(|c| c.segs.iter())
            .filter(|s| !old.contains(&Arc::as_ptr(s)))
            .count()
    }
}

/// First `len` (≤ 4) bytes of `b`, left-aligned in a big-endian `u32` (the rest zero).
#[inline(always)]
fn left32(b: &[u8]) -> u32 {
    match b.len() {
        1 => (b[0] as u32) << 24,
        2 => (u16::from_be_bytes([b[0], b[1]]) as u32) << 16,
        3 => u32::from_be_bytes([b[0], b[1], b[2], 0]),
        4 => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        _ => 0,
    }
}

fn imm32(rhs: &Operand, len: u8) -> Option<u32> {
    match rhs {
        Operand::Imm(d) if (1..=4).contains(&len) => Some(left32(&d[..len as usize])),
        _ => None,
    }
}

#[inline(always)]
fn cmp32(op: CmpOp, a: u32, b: u32) -> bool {
    match op {
        CmpOp::Eq => a == b,
        CmpOp::Ne => a != b,
        CmpOp::Lt => a < b,
        CmpOp::Lte => a <= b,
        CmpOp::Gt => a > b,
        CmpOp::Gte => a >= b,
    }
}

/// Sets of `prog` that dynamic elements can be added to: those the program marks, and those
/// a `Dynset` instruction names.
fn dynamic_sets(prog: &Program) -> Vec<bool> {
    let mut d: Vec<bool> = (0..prog.sets.len())
        .map(|i| prog.dynamic_sets.get(i).copied().unwrap_or(false))
        .collect();
    for c in &prog.chains {
        for r in &c.rules {
            for i in &r.insns {
                if let Insn::Dynset { set, .. } = i {
                    if let Some(x) = d.get_mut(set.0 as usize) {
                        *x = true;
                    }
                }
            }
        }
    }
    d
}

/// Lowers a verified program. Call only with programs [`crate::verify::verify`] accepted.
pub fn lower(prog: &Program) -> Exec {
    let dynamic = dynamic_sets(prog);
    let dynamic = |id: SetId| dynamic.get(id.0 as usize).copied().unwrap_or(true);
    let mut exec = Exec::default();
    for c in &prog.chains {
        let segs = lower_group(c.rules.chunks(), prog, &dynamic)
            .into_iter()
            .map(Arc::new)
            .collect();
        exec.chains.push(ExecChain::new(segs));
        exec.policies.push(c.policy);
    }
    exec
}

/// Lowers `prog`, a later generation of the program `prev` was lowered from, sharing what
/// did not change: chains for which `dirty` is false keep their lowered form (the caller
/// vouches that their rules are the same), and in the other chains a chunk whose rules are
/// the same `Arc` as in `prev` keeps its segment unless its id is in `forced`.
pub fn lower_incremental(
    prev: &Exec,
    prog: &Program,
    dirty: impl Fn(usize) -> bool,
    forced: &HashSet<u64>,
) -> Exec {
    let dynamic = |id: SetId| prog.dynamic_sets.get(id.0 as usize).copied().unwrap_or(false);
    let mut exec = Exec::default();
    for (ci, c) in prog.chains.iter().enumerate() {
        exec.policies.push(c.policy);
        let old = prev.chains.get(ci);
        if let (false, Some(old)) = (dirty(ci), old) {
            exec.chains.push(old.clone());
            continue;
        }
        // Chunks keep their order, so the old segment of a chunk is at or just after the
        // previous match (a few chunks may have gone in between): no map over all segments.
        let chunks = c.rules.chunks();
        let old: &[Arc<Segment>] = old.map(|o| &o.segs[..]).unwrap_or(&[]);
        let mut j = 0;
        let matched: Vec<Option<&Arc<Segment>>> = chunks
            .iter()
            .map(|ch| {
                let at = old
                    .get(j..)
                    .unwrap_or(&[])
                    .iter()
                    .take(8)
                    .position(|s| s.chunk == ch.id)
                    .map(|o| j + o)?;
                j = at + 1;
                Some(&old[at])
            })
            .collect();
        // Chunks to lower: those whose rules changed (or that are named), and with them every
        // chunk that shares a merged run with one of them, before or after the change (a run is
        // lowered as a unit: its cost is bounded by the run, not by the chain).
        let mut need: Vec<bool> = chunks
            .iter()
            .zip(&matched)
            .map(|(ch, m)| match m {
                Some(s) => {
                    forced.contains(&ch.id)
                        || !s.source.as_ref().is_some_and(|src| Arc::ptr_eq(src, &ch.rules))
                }
                None => true,
            })
            .collect();
        let crosses = |a: usize| -> bool {
            let b = a + 1;
            let new = match (chunks[a].rules.last(), chunks[b].rules.first()) {
                (Some(x), Some(y)) => match (shape(x), shape(y)) {
                    (Some(x), Some(y)) => x.same_shape(y),
                    _ => false,
                },
                _ => false,
            };
            new || matched[a].is_some_and(|s| s.run_out) || matched[b].is_some_and(|s| s.run_in)
        };
        for a in 0..chunks.len().saturating_sub(1) {
            if need[a] && !need[a + 1] && crosses(a) {
                need[a + 1] = true;
            }
        }
        for a in (0..chunks.len().saturating_sub(1)).rev() {
            if need[a + 1] && !need[a] && crosses(a) {
                need[a] = true;
            }
        }
        let mut segs = Vec::with_capacity(chunks.len());
        let mut a = 0;
        while a < chunks.len() {
            if !need[a] {
                if let Some(s) = matched[a] {
                    segs.push(s.clone());
                }
                a += 1;
                continue;
            }
            let mut b = a;
            while b + 1 < chunks.len() && need[b + 1] {
                b += 1;
            }
            segs.extend(
                lower_group(&chunks[a..=b], prog, &dynamic)
                    .into_iter()
                    .map(Arc::new),
            );
            a = b + 1;
        }
        exec.chains.push(ExecChain::new(segs));
    }
    exec
}

/// Lowers consecutive chunks of a chain, one segment each, merging fast-path runs, which may
/// cross chunk boundaries (the run's lookup sits in the segment of its first rule; the
/// segments after it skip the run's rules). Runs must not cross the group's ends.
fn lower_group(
    chunks: &[crate::pvec::RuleChunk],
    prog: &Program,
    dynamic: &dyn Fn(SetId) -> bool,
) -> Vec<Segment> {
    let mut segs: Vec<Segment> = chunks
        .iter()
        .map(|ch| Segment {
            source: Some(ch.rules.clone()),
            chunk: ch.id,
            ..Default::default()
        })
        .collect();
    // Every rule of the group with the index of its chunk.
    let rules: Vec<Arc<RuleEntry>> = chunks.iter().flat_map(|c| c.rules.iter().cloned()).collect();
    let owner: Vec<usize> = chunks
        .iter()
        .enumerate()
        .flat_map(|(i, c)| std::iter::repeat_n(i, c.rules.len()))
        .collect();
    let resolve = |id: SetId| prog.sets.get_arc(id).cloned();
    let mut r = 0;
    while r < rules.len() {
        let seg = &mut segs[owner[r]];
        let run = mergeable_run(&rules[r..]);
        if run >= 2 {
            let metas: Vec<&crate::compile::MergeInfo> = rules[r..r + run]
                .iter()
                .filter_map(|e| e.meta.as_ref()?.merge.as_ref())
                .collect();
            if let Some((insns, local)) = crate::compile::merged_run(&metas, prog) {
                let local: Vec<Arc<Set>> = local.into_iter().map(Arc::new).collect();
                let resolve_local = |id: SetId| match crate::compile::local_set(id) {
                    Some(i) => local.get(i).cloned(),
                    None => resolve(id),
                };
                let start = seg.ops.len();
                seg.rule_start.push(start as u32);
                lower_rule(&insns, dynamic, &resolve_local, seg);
                let g = hoist_guard(seg, start);
                seg.guard.push(g);
                let (first, last) = (owner[r], owner[r + run - 1]);
                for s in &mut segs[first..last] {
                    s.run_out = true;
                }
                for s in &mut segs[first + 1..=last] {
                    s.run_in = true;
                }
                r += run;
                continue;
            }
        }
        let start = seg.ops.len();
        seg.rule_start.push(start as u32);
        lower_rule(&rules[r].rule.insns, dynamic, &resolve, seg);
        let g = hoist_guard(seg, start);
        seg.guard.push(g);
        r += 1;
    }
    for s in &mut segs {
        s.rule_start.push(s.ops.len() as u32);
    }
    for seg in &mut segs {
        seg.reads_ct = seg.ops.iter().any(|o| matches!(o, Op::CtState { .. }))
            || seg.generic.iter().any(|i| matches!(i, Insn::Ct { .. }));
    }
    segs
}

/// Register bytes an op reads, as a bit mask over the 64 register bytes; everything when it
/// cannot say (a generic instruction).
fn op_reads(op: &Op, seg: &Segment) -> u64 {
    let bytes = |reg: u8, len: u8| -> u64 {
        let n = (len as u32).min(64);
        let m = if n == 64 { !0 } else { (1u64 << n) - 1 };
        m.checked_shl(reg as u32 * 4).unwrap_or(0)
    };
    match op {
        Op::Cmp { sreg, len, .. } => bytes(*sreg, *len),
        Op::Lookup(i) => seg.lookups.get(*i as usize).map_or(!0, |l| bytes(l.sreg, l.len)),
        // Keyed by what it loaded first.
        Op::LoadLookup { lookup, .. } => {
            seg.lookups
                .get(*lookup as usize)
                .map_or(!0, |l| bytes(l.sreg, l.len))
                & !op_writes(op)
        }
        Op::Generic(_) => !0,
        Op::MetaCmp { .. }
        | Op::Load { .. }
        | Op::LoadCmp { .. }
        | Op::LoadMaskCmp { .. }
        | Op::CtState { .. } => 0,
        Op::Counter { .. } | Op::Verdict(_) | Op::Notrack | Op::Synproxy { .. } => 0,
    }
}

/// Register bytes an op surely overwrites (before any later op reads them).
fn op_writes(op: &Op) -> u64 {
    let reg = |r: u8| 0xfu64.checked_shl(r as u32 * 4).unwrap_or(0);
    match op {
        Op::MetaCmp { dreg, .. }
        | Op::Load { dreg, .. }
        | Op::LoadCmp { dreg, .. }
        | Op::LoadMaskCmp { dreg, .. } => reg(*dreg),
        Op::LoadLookup { dreg, .. } => reg(*dreg),
        Op::CtState { dreg, mdreg, .. } => reg(*dreg) | reg(*mdreg),
        _ => 0,
    }
}

/// Whether an op can only break the rule or write registers: nothing else observes it
/// (no counter, no verdict, no dynamic set, no generic instruction).
fn op_pure(op: &Op, seg: &Segment) -> bool {
    match op {
        Op::MetaCmp { .. }
        | Op::Load { .. }
        | Op::LoadCmp { .. }
        | Op::LoadMaskCmp { .. }
        | Op::Cmp { .. }
        | Op::CtState { .. } => true,
        Op::Lookup(i) | Op::LoadLookup { lookup: i, .. } => seg
            .lookups
            .get(*i as usize)
            .is_some_and(|l| !l.dynamic && !l.verdict_map),
        Op::Counter { .. } | Op::Verdict(_) | Op::Generic(_) | Op::Notrack | Op::Synproxy { .. } => false,
    }
}

/// Moves the rule's `meta nfproto X` / `meta l4proto X` equality tests (the implicit
/// dependencies of `ip saddr`, `tcp dport`, …) out of its ops into a per-rule guard that the
/// evaluator checks before dispatching any op: a rule for another protocol costs one compare
/// instead of one or two dispatched ops. A test moves only when every op before it is pure
/// (so running it first changes nothing but which op breaks) and the register it would
/// write is overwritten before anything reads it. Returns the guard (see `Segment::guard`).
fn hoist_guard(seg: &mut Segment, start: usize) -> u32 {
    let (mut mask, mut want) = (0u32, 0u32);
    let mut i = start;
    while i < seg.ops.len() {
        let op = &seg.ops[i];
        let hoist = match op {
            Op::MetaCmp {
                key: key @ (MetaKey::NfProto | MetaKey::L4Proto),
                dreg,
                op: CmpOp::Eq,
                imm,
                ..
            } => {
                let shift = if *key == MetaKey::NfProto { 8 } else { 0 };
                let v = imm >> 24;
                // Dead store: overwritten before any later op of the rule reads it.
                let mut pending = 0xfu64.checked_shl(*dreg as u32 * 4).unwrap_or(0);
                let mut live = false;
                for later in &seg.ops[i + 1..] {
                    if op_reads(later, seg) & pending != 0 {
                        live = true;
                        break;
                    }
                    pending &= !op_writes(later);
                    if pending == 0 {
                        break;
                    }
                }
                let free = mask & (0xff << shift) == 0;
                (!live && free && v != 0 && imm & 0x00ff_ffff == 0).then_some((shift, v))
            }
            _ => None,
        };
        if let Some((shift, v)) = hoist {
            mask |= 0xff << shift;
            want |= v << shift;
            seg.ops.remove(i);
            continue;
        }
        if !op_pure(&seg.ops[i], seg) {
            break;
        }
        i += 1;
    }
    (mask << 16) | want
}

/// A rule's fast-path shape, if it has one.
fn shape(e: &Arc<RuleEntry>) -> Option<&crate::compile::MergeInfo> {
    e.meta.as_ref().and_then(|m| m.merge.as_ref())
}

/// Length of the run of rules at the start of `rules` that share one merge shape.
fn mergeable_run(rules: &[Arc<RuleEntry>]) -> usize {
    let Some(first) = rules.first().and_then(shape) else {
        return 0;
    };
    rules
        .iter()
        .take_while(|e| shape(e).is_some_and(|m| m.same_shape(first)))
        .count()
}

fn lower_rule(
    insns: &[Insn],
    dynamic: &dyn Fn(SetId) -> bool,
    resolve: &dyn Fn(SetId) -> Option<Arc<Set>>,
    seg: &mut Segment,
) {
    let mut i = 0;
    while i < insns.len() {
        let ops = &mut seg.ops;
        let next = insns.get(i + 1);
        // Three- and two-instruction fusions first.
        if let (
            Insn::PayloadLoad {
                base,
                offset,
                len,
                dreg,
            },
            Some(Insn::Bitwise {
                sreg: bs,
                dreg: bd,
                len: blen,
                op: BitOp::MaskXor { mask, xor },
            }),
            Some(Insn::Cmp {
                op,
                sreg: cs,
                len: clen,
                rhs,
            }),
        ) = (&insns[i], next, insns.get(i + 2))
        {
            if *len <= 4
                && bs == dreg
                && bd == dreg
                && cs == dreg
                && blen == len
                && clen == len
                && xor.iter().all(|b| *b == 0)
            {
                if let Some(imm) = imm32(rhs, *len) {
                    ops.push(Op::LoadMaskCmp {
                        base: *base,
                        offset: *offset,
                        len: *len,
                        dreg: *dreg,
                        mask: left32(&mask[..*len as usize]),
                        op: *op,
                        imm,
                    });
                    i += 3;
                    continue;
                }
            }
        }
        match (&insns[i], next) {
            (Insn::Meta { key, dreg }, Some(Insn::Cmp { op, sreg, len, rhs }))
                if sreg == dreg && key.data_len() <= 4 && *len as usize == key.data_len() =>
            {
                if let Some(imm) = imm32(rhs, *len) {
                    ops.push(Op::MetaCmp {
                        key: *key,
                        dreg: *dreg,
                        len: *len,
                        op: *op,
                        imm,
                    });
                    i += 2;
                    continue;
                }
            }
            (
                Insn::PayloadLoad {
                    base,
                    offset,
                    len,
                    dreg,
                },
                Some(Insn::Cmp {
                    op,
                    sreg,
                    len: clen,
                    rhs,
                }),
            ) if sreg == dreg && clen == len && *len <= 4 => {
                if let Some(imm) = imm32(rhs, *len) {
                    ops.push(Op::LoadCmp {
                        base: *base,
                        offset: *offset,
                        len: *len,
                        dreg: *dreg,
                        op: *op,
                        imm,
                    });
                    i += 2;
                    continue;
                }
            }
            (
                Insn::Ct {
                    key: CtKey::State,
                    dreg,
                },
                Some(Insn::Bitwise {
                    sreg,
                    dreg: mdreg,
                    len: 4,
                    op: BitOp::MaskXor { mask, xor },
                }),
            ) if sreg == dreg && xor.iter().all(|b| *b == 0) => {
                if let Some(Insn::Cmp {
                    op: CmpOp::Ne,
                    sreg: csreg,
                    len: 4,
                    rhs: Operand::Imm(z),
                }) = insns.get(i + 2)
                {
                    if csreg == mdreg && z[..4] == [0; 4] {
                        ops.push(Op::CtState {
                            dreg: *dreg,
                            mdreg: *mdreg,
                            mask: left32(&mask[..4]),
                        });
                        i += 3;
                        continue;
                    }
                }
            }
            _ => {}
        }
        let op = match &insns[i] {
            Insn::PayloadLoad {
                base,
                offset,
                len,
                dreg,
            } if *len <= 4 => Op::Load {
                base: *base,
                offset: *offset,
                len: *len,
                dreg: *dreg,
            },
            Insn::Cmp { op, sreg, len, rhs } if imm32(rhs, *len).is_some() => Op::Cmp {
                sreg: *sreg,
                len: *len,
                op: *op,
                imm: imm32(rhs, *len).unwrap_or(0),
            },
            Insn::Lookup {
                set,
                sreg,
                len,
                dreg,
                verdict_map,
                invert,
            } if resolve(*set).is_some() => {
                let local = crate::compile::local_set(*set).is_some();
                seg.lookups.push(LookupOp {
                    set: resolve(*set).unwrap_or_else(|| Arc::new(Set::tombstone())),
                    id: (!local).then_some(*set),
                    sreg: *sreg,
                    len: *len,
                    dreg: *dreg,
                    verdict_map: *verdict_map,
                    invert: *invert,
                    dynamic: !local && dynamic(*set),
                    fast: false,
                });
                if let Some(l) = seg.lookups.last_mut() {
                    l.fast = !l.dynamic
                        && !l.verdict_map
                        && l.dreg.is_none()
                        && l.set.key_len == l.len as usize
                        && l.set.keys_are_ints();
                }
                Op::Lookup(seg.lookups.len() as u32 - 1)
            }
            Insn::Counter { id } => Op::Counter { id: *id },
            Insn::Verdict(v) => Op::Verdict(*v),
            Insn::Notrack => Op::Notrack,
            Insn::Synproxy {
                mss,
                wscale,
                timestamp,
                sack_perm,
            } => Op::Synproxy {
                mss: *mss,
                wscale: *wscale,
                timestamp: *timestamp,
                sack_perm: *sack_perm,
            },
            other => {
                seg.generic.push(other.clone());
                Op::Generic(seg.generic.len() as u32 - 1)
            }
        };
        let ops = &mut seg.ops;
        // A lookup keyed by exactly the register the previous load wrote joins it.
        if let (
            Op::Lookup(lookup),
            Some(&Op::Load {
                base,
                offset,
                len,
                dreg,
            }),
        ) = (&op, ops.last())
        {
            let l = &seg.lookups[*lookup as usize];
            if l.sreg == dreg && l.len as usize == (len as usize).div_ceil(4) * 4 && len == 4 {
                ops.pop();
                ops.push(Op::LoadLookup {
                    base,
                    offset,
                    len,
                    dreg,
                    lookup: *lookup,
                });
                i += 1;
                continue;
            }
        }
        ops.push(op);
        i += 1;
    }
}

/// What one op did.
enum Step {
    Next,
    /// The rule stops here (a failed match).
    Break,
    /// The verdict register was set: the rule ends.
    Verdict,
}

/// A meta key of at most 4 bytes, left-aligned (a mark set earlier in this evaluation is
/// what later rules see, as in [`vm::evaluate`]).
#[inline(always)]
fn meta32(key: MetaKey, p: &PacketCtx<'_>, actions: &vm::Actions) -> u32 {
    match key {
        MetaKey::L4Proto => (p.l4proto as u32) << 24,
        MetaKey::NfProto => (p.nfproto as u32) << 24,
        MetaKey::Mark => actions.mark.unwrap_or(p.mark),
        _ => {
            let mut v = [0u8; 16];
            vm::meta_value(key, p, &mut v);
            left32(&v[..key.data_len()])
        }
    }
}

/// At most 4 payload bytes, left-aligned; `None` breaks (no such header, packet too short).
#[inline(always)]
fn load32(p: &PacketCtx<'_>, state: &State, base: vm::Base, offset: u16, len: u8) -> Option<u32> {
    let from = vm::field_at(p, base, offset, len)?;
    if state.writes.is_empty() {
        Some(left32(p.frame.get(from..from + len as usize)?))
    } else {
        let b = vm::payload_bytes(p, &state.writes, from, len as usize)?;
        Some(left32(&b[..len as usize]))
    }
}

/// A set lookup.
#[inline(always)]
fn lookup(l: &LookupOp, state: &mut State, p: &PacketCtx<'_>, regs: &mut Regs) -> Step {
    let Some(key) = regs.slice(l.sreg, l.len) else {
        return Step::Break;
    };
    if l.fast {
        return if l.set.contains128(crate::sets::key128(key), p.now_ns) == l.invert {
            Step::Break
        } else {
            Step::Next
        };
    }
    let mut value = [0u8; MAX_DATA_LEN];
    let mut found = l.set.lookup(key, p.now_ns, &mut value);
    if let (true, LookupResult::Miss, Some(id)) = (l.dynamic, found, l.id) {
        found = state
            .dynamic
            .lookup_dynamic(id, key, p.now_ns, p.len as u64, l.invert, &mut value);
    }
    let hit = found != LookupResult::Miss;
    if hit == l.invert {
        return Step::Break;
    }
    if let LookupResult::Value(vlen) = found {
        if l.verdict_map {
            match crate::sets::decode_verdict(&value[..vlen]) {
                Some(v) => regs.verdict = v,
                None => return Step::Break,
            }
            if regs.verdict != Verdict::Continue {
                return Step::Verdict;
            }
        } else if let Some(d) = l.dreg {
            if !regs.store(d, &value[..vlen]) {
                return Step::Break;
            }
        }
    }
    Step::Next
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn step(
    op: &Op,
    seg: &Segment,
    prog: &Program,
    state: &mut State,
    p: &PacketCtx<'_>,
    regs: &mut Regs,
    actions: &mut vm::Actions,
    len: u64,
) -> Step {
    macro_rules! or_break {
        ($e:expr) => {
            match $e {
                Some(v) => v,
                None => return Step::Break,
            }
        };
    }
    match op {
        Op::MetaCmp {
            key,
            dreg,
            len: _,
            op,
            imm,
        } => {
            let v = meta32(*key, p, actions);
            or_break!(regs.store32(*dreg, v));
            if !cmp32(*op, v, *imm) {
                return Step::Break;
            }
        }
        Op::Load {
            base,
            offset,
            len,
            dreg,
        } => {
            let v = or_break!(load32(p, state, *base, *offset, *len));
            or_break!(regs.store32(*dreg, v));
        }
        Op::LoadCmp {
            base,
            offset,
            len,
            dreg,
            op,
            imm,
        } => {
            let v = or_break!(load32(p, state, *base, *offset, *len));
            or_break!(regs.store32(*dreg, v));
            if !cmp32(*op, v, *imm) {
                return Step::Break;
            }
        }
        Op::LoadLookup {
            base,
            offset,
            len,
            dreg,
            lookup,
        } => {
            let v = or_break!(load32(p, state, *base, *offset, *len));
            or_break!(regs.store32(*dreg, v));
            let l = or_break!(seg.lookups.get(*lookup as usize));
            if l.fast && *len == 4 {
                // The key is the 4 bytes just loaded.
                return if l.set.contains128((v as u128) << 96, p.now_ns) == l.invert {
                    Step::Break
                } else {
                    Step::Next
                };
            }
            return self::lookup(l, state, p, regs);
        }
        Op::LoadMaskCmp {
            base,
            offset,
            len,
            dreg,
            mask,
            op,
            imm,
        } => {
            let v = or_break!(load32(p, state, *base, *offset, *len)) & *mask;
            or_break!(regs.store32(*dreg, v));
            if !cmp32(*op, v, *imm) {
                return Step::Break;
            }
        }
        Op::Notrack => actions.notrack = true,
        Op::Synproxy {
            mss,
            wscale,
            timestamp,
            sack_perm,
        } => {
            actions.synproxy = Some((*mss, *wscale, *timestamp, *sack_perm));
            // The proxy consumes the packet (as `vm::run`: verdict drop, the rule ends).
            regs.verdict = Verdict::Drop;
            return Step::Verdict;
        }
        Op::Cmp { sreg, len, op, imm } => {
            let v = left32(or_break!(regs.slice(*sreg, *len)));
            if !cmp32(*op, v, *imm) {
                return Step::Break;
            }
        }
        Op::CtState { dreg, mdreg, mask } => {
            let s = p.ct.state;
            or_break!(regs.store32(*dreg, s));
            let m = s & *mask;
            or_break!(regs.store32(*mdreg, m));
            if m == 0 {
                return Step::Break;
            }
        }
        Op::Lookup(i) => {
            let l = or_break!(seg.lookups.get(*i as usize));
            return lookup(l, state, p, regs);
        }
        Op::Counter { id } => {
            if let Some(c) = state.counters.get(*id as usize) {
                c.add(len);
            }
            if let Some(log) = state.counted.as_mut() {
                log.push(*id);
            }
        }
        Op::Verdict(v) => {
            regs.verdict = *v;
            if *v != Verdict::Continue {
                return Step::Verdict;
            }
        }
        Op::Generic(i) => {
            let insn = or_break!(seg.generic.get(*i as usize));
            if let Flow::Break = vm::run(insn, prog, state, p, regs, actions, len) {
                return Step::Break;
            }
            if regs.verdict != Verdict::Continue {
                return Step::Verdict;
            }
        }
    }
    Step::Next
}

/// Evaluates base chain `entry` of a lowered program: the same result, actions and state
/// changes as [`vm::evaluate`] on the program it was lowered from.
pub fn evaluate(exec: &Exec, prog: &Program, state: &mut State, entry: usize, p: &PacketCtx<'_>) -> Outcome {
    let mut actions = vm::Actions::default();
    let verdict = evaluate_into(exec, prog, state, entry, p, &mut actions);
    Outcome { verdict, actions }
}

/// Segment `si` of chain `c`, or the empty segment past the end.
#[inline(always)]
fn segment(c: &ExecChain, si: usize) -> &Segment {
    c.live.get(si).map(|s| &**s).unwrap_or(&EMPTY_SEGMENT)
}

/// [`evaluate`] that records actions into `actions` (what earlier chains of the same packet
/// set stays unless this one overrides it) and returns only the verdict: nothing large is
/// returned through memory on the per-packet path.
#[inline(always)]
pub fn evaluate_into(
    exec: &Exec,
    prog: &Program,
    state: &mut State,
    entry: usize,
    p: &PacketCtx<'_>,
    actions: &mut vm::Actions,
) -> Verdict {
    // The call stack lives in the state: moved out and back (a pointer), not zeroed per chain.
    let mut stack = state
        .calls
        .take()
        .unwrap_or_else(|| Box::new([(0, 0, 0); MAX_CALL_DEPTH]));
    let v = run_chain(exec, prog, state, &mut stack, entry, p, actions);
    state.calls = Some(stack);
    v
}

#[inline(always)]
fn run_chain(
    exec: &Exec,
    prog: &Program,
    state: &mut State,
    stack: &mut vm::CallStack,
    entry: usize,
    p: &PacketCtx<'_>,
    actions: &mut vm::Actions,
) -> Verdict {
    let mut regs = Regs::new();
    let mut depth = 0usize;
    let len = p.len as u64;
    let pkt_key = (p.nfproto as u32) << 8 | p.l4proto as u32;
    let policy = exec
        .policies
        .get(entry)
        .copied()
        .flatten()
        .unwrap_or(Verdict::Accept);
    let mut chain = entry;
    let Some(mut c) = exec.chains.get(chain) else {
        return policy;
    };
    let (mut si, mut rule) = (0usize, 0usize);
    let mut seg = segment(c, si);
    loop {
        let (Some(&start), Some(&end)) = (seg.rule_start.get(rule), seg.rule_start.get(rule + 1)) else {
            // End of a segment: the next one, or the end of the chain.
            if si + 1 < c.live.len() {
                si += 1;
                rule = 0;
                seg = segment(c, si);
                continue;
            }
            // End of chain: regular chains return to their caller, base chains apply policy.
            if depth == 0 {
                return policy;
            }
            depth -= 1;
            let (ch, s, r) = stack[depth];
            chain = ch as usize;
            let Some(next) = exec.chains.get(chain) else {
                return policy;
            };
            (c, si, rule) = (next, s as usize, r as usize);
            seg = segment(c, si);
            continue;
        };
        let g = seg.guard.get(rule).copied().unwrap_or(0);
        if pkt_key & (g >> 16) != g & 0xffff {
            rule += 1;
            continue;
        }
        regs.verdict = Verdict::Continue;
        let mut broke = false;
        for op in seg.ops.get(start as usize..end as usize).unwrap_or(&[]) {
            match step(op, seg, prog, state, p, &mut regs, actions, len) {
                Step::Next => {}
                Step::Break => {
                    broke = true;
                    break;
                }
                Step::Verdict => break,
            }
        }
        if broke {
            rule += 1;
            continue;
        }
        match regs.verdict {
            Verdict::Continue => rule += 1,
            Verdict::Accept | Verdict::Drop => return regs.verdict,
            Verdict::Return => {
                if depth == 0 {
                    return policy;
                }
                depth -= 1;
                let (ch, s, r) = stack[depth];
                chain = ch as usize;
                let Some(next) = exec.chains.get(chain) else {
                    return policy;
                };
                (c, si, rule) = (next, s as usize, r as usize);
                seg = segment(c, si);
            }
            Verdict::Jump(to) => {
                if depth == MAX_CALL_DEPTH {
                    // The verifier refuses programs that can get here; drop to be safe.
                    return Verdict::Drop;
                }
                stack[depth] = (chain as u16, si as u32, (rule + 1) as u32);
                depth += 1;
                chain = to as usize;
                let Some(next) = exec.chains.get(chain) else {
                    return policy;
                };
                (c, si, rule) = (next, 0, 0);
                seg = segment(c, si);
            }
            Verdict::Goto(to) => {
                chain = to as usize;
                let Some(next) = exec.chains.get(chain) else {
                    return policy;
                };
                (c, si, rule) = (next, 0, 0);
                seg = segment(c, si);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! Lowered programs against the reference interpreter, on programs biased towards the
    //! sequences lowering fuses (and the ones next to them that it must not).
    use super::*;
    use crate::ctx::{packet_ctx, CtState, HookKind, PacketMeta};
    use crate::sets::{encode_verdict, ElemSpec, Set, SetSpec};
    use crate::verify::verify;
    use crate::vm::{Base, Chain, CsumFix, Rule};
    use proptest::prelude::*;

    /// Same counters, writes, log events and dynamic set contents.
    pub(crate) fn assert_same_state(a: &State, b: &State) {
        let c = |s: &State| s.counters.iter().map(|c| c.get()).collect::<Vec<_>>();
        assert_eq!(c(a), c(b), "counters differ");
        assert_eq!(a.writes, b.writes, "payload writes differ");
        assert_eq!(a.log_events, b.log_events, "log events differ");
        assert_eq!(a.dynamic.len(), b.dynamic.len());
        for i in 0..a.dynamic.len() {
            let id = SetId(i as u32);
            let n = |s: &State| s.dynamic.get(id).map(|x| x.len());
            assert_eq!(n(a), n(b), "dynamic set {i} differs");
        }
    }

    fn ops() -> impl Strategy<Value = CmpOp> {
        prop_oneof![
            Just(CmpOp::Eq),
            Just(CmpOp::Ne),
            Just(CmpOp::Lt),
            Just(CmpOp::Lte),
            Just(CmpOp::Gt),
            Just(CmpOp::Gte)
        ]
    }

    fn imm(v: &[u8]) -> [u8; MAX_DATA_LEN] {
        let mut d = [0u8; MAX_DATA_LEN];
        d[..v.len()].copy_from_slice(v);
        d
    }

    /// A fragment: a short instruction sequence as the compiler would emit it, or slightly
    /// off (other register, other length) so that lowering must leave it alone.
    fn fragment() -> impl Strategy<Value = Vec<Insn>> {
        let reg = 0u8..4;
        prop_oneof![
            // meta KEY; cmp
            (
                prop_oneof![
                    Just(MetaKey::L4Proto),
                    Just(MetaKey::NfProto),
                    Just(MetaKey::Mark),
                    Just(MetaKey::Len),
                    Just(MetaKey::Protocol),
                    Just(MetaKey::PktType)
                ],
                reg.clone(),
                reg.clone(),
                ops(),
                any::<[u8; 4]>(),
                any::<bool>()
            )
                .prop_map(|(key, d, s, op, v, same)| {
                    let len = key.data_len() as u8;
                    let v = if same { [6, 0, 0, 0] } else { v };
                    vec![
                        Insn::Immediate {
                            dreg: s,
                            len: 4,
                            data: imm(&v),
                        },
                        Insn::Meta { key, dreg: d },
                        Insn::Cmp {
                            op,
                            sreg: if same { d } else { s },
                            len,
                            rhs: Operand::Imm(imm(&v[..len as usize])),
                        },
                    ]
                }),
            // payload load; cmp (lengths 1..=6 so that both fused and plain forms appear)
            (
                prop_oneof![Just(Base::Link), Just(Base::Network), Just(Base::Transport)],
                0u16..48,
                1u8..=6,
                reg.clone(),
                ops(),
                any::<[u8; 6]>(),
                any::<bool>()
            )
                .prop_map(|(base, offset, len, d, op, v, cmp)| {
                    let mut f = vec![Insn::PayloadLoad {
                        base,
                        offset,
                        len,
                        dreg: d,
                    }];
                    if cmp {
                        f.push(Insn::Cmp {
                            op,
                            sreg: d,
                            len,
                            rhs: Operand::Imm(imm(&v[..len as usize])),
                        });
                    }
                    f
                }),
            // payload load; bitwise mask; cmp (tcp flags & (syn | ack) == syn), sometimes off
            (
                prop_oneof![Just(Base::Network), Just(Base::Transport)],
                0u16..40,
                1u8..=5,
                reg.clone(),
                ops(),
                any::<[u8; 5]>(),
                any::<[u8; 5]>(),
                0u8..4
            )
                .prop_map(|(base, offset, len, d, op, m, v, skew)| {
                    let (bd, xor) = match skew {
                        1 => ((d + 1) % 4, [0; MAX_DATA_LEN]),
                        2 => (d, imm(&[1])),
                        _ => (d, [0; MAX_DATA_LEN]),
                    };
                    vec![
                        Insn::PayloadLoad {
                            base,
                            offset,
                            len,
                            dreg: d,
                        },
                        Insn::Bitwise {
                            sreg: d,
                            dreg: bd,
                            len,
                            op: BitOp::MaskXor {
                                mask: imm(&m[..len as usize]),
                                xor,
                            },
                        },
                        Insn::Cmp {
                            op,
                            sreg: bd,
                            len,
                            rhs: Operand::Imm(imm(&v[..len as usize])),
                        },
                    ]
                }),
            Just(vec![Insn::Notrack]),
            // ct state; bitwise; cmp != 0
            (reg.clone(), reg.clone(), 0u32..128).prop_map(|(d, m, mask)| vec![
                Insn::Ct {
                    key: CtKey::State,
                    dreg: d
                },
                Insn::Bitwise {
                    sreg: d,
                    dreg: m,
                    len: 4,
                    op: BitOp::MaskXor {
                        mask: imm(&mask.to_be_bytes()),
                        xor: [0; MAX_DATA_LEN]
                    }
                },
                Insn::Cmp {
                    op: CmpOp::Ne,
                    sreg: m,
                    len: 4,
                    rhs: Operand::Imm([0; MAX_DATA_LEN])
                },
            ]),
            // set lookups: key from a register (2 bytes: port set, verdict map), meters
            (reg.clone(), 0u32..3, any::<bool>(), any::<bool>()).prop_map(|(r, set, invert, port)| vec![
                if port {
                    Insn::PayloadLoad {
                        base: Base::Transport,
                        offset: 2,
                        len: 4,
                        dreg: r,
                    }
                } else {
                    Insn::Immediate {
                        dreg: r,
                        len: 4,
                        data: imm(&[6, 0, 0, 22]),
                    }
                },
                Insn::Lookup {
                    set: SetId(set),
                    sreg: r,
                    len: if set == 2 { 4 } else { 2 },
                    dreg: None,
                    verdict_map: set == 1,
                    invert,
                }
            ]),
            (reg.clone(), any::<bool>(), any::<u8>()).prop_map(|(r, over, k)| vec![
                Insn::Immediate {
                    dreg: r,
                    len: 4,
                    data: imm(&[k % 3, 0, 0, 1])
                },
                Insn::Dynset {
                    set: SetId(2),
                    sreg: r,
                    len: 4,
                    op: crate::vm::DynsetOp::Update,
                    timeout_ns: 0,
                    stmt: crate::vm::DynStmt::Limit {
                        rate: 1,
                        per_ns: 1_000_000_000,
                        burst: 1,
                        over,
                    },
                }
            ]),
            (0u32..4).prop_map(|id| vec![Insn::Counter { id }]),
            (reg.clone(), 0u16..40).prop_map(|(r, offset)| vec![
                Insn::Immediate {
                    dreg: r,
                    len: 4,
                    data: imm(&[0, 23, 0, 0])
                },
                Insn::PayloadWrite {
                    base: Base::Transport,
                    offset,
                    len: 2,
                    sreg: r,
                    csum: CsumFix::None,
                }
            ]),
            (reg.clone(), any::<[u8; 4]>()).prop_map(|(d, v)| vec![Insn::Immediate {
                dreg: d,
                len: 4,
                data: imm(&v)
            }]),
            Just(vec![
                Insn::Immediate {
                    dreg: 0,
                    len: 4,
                    data: imm(&[0, 0, 0, 1])
                },
                Insn::MetaSetMark { sreg: 0 }
            ]),
            Just(vec![Insn::Log { prefix: 0 }]),
        ]
    }

    /// A rule: fragments, then maybe a verdict.
    fn rule() -> impl Strategy<Value = Vec<Vec<Insn>>> {
        (
            proptest::collection::vec(fragment(), 1..4),
            proptest::option::of(prop_oneof![
                Just(Verdict::Accept),
                Just(Verdict::Drop),
                Just(Verdict::Continue),
                Just(Verdict::Return),
                Just(Verdict::Jump(1)),
                Just(Verdict::Goto(1))
            ]),
        )
            .prop_map(|(mut f, v)| {
                f.extend(v.map(|v| vec![Insn::Verdict(v)]));
                f
            })
            .prop_flat_map(|f| {
                // Sometimes a `synproxy` statement ends the rule instead (it is terminal).
                (
                    Just(f),
                    proptest::option::weighted(0.15, (any::<u16>(), 0u8..15, any::<bool>())),
                )
            })
            .prop_map(|(mut f, sp)| {
                if let Some((mss, wscale, ts)) = sp {
                    if matches!(f.last().and_then(|x| x.last()), Some(Insn::Verdict(_))) {
                        f.pop();
                    }
                    f.push(vec![Insn::Synproxy {
                        mss,
                        wscale,
                        timestamp: ts,
                        sack_perm: !ts,
                    }]);
                }
                f
            })
    }

    fn program(chains: Vec<Vec<Vec<Vec<Insn>>>>) -> Program {
        let mut p = Program {
            counters: 4,
            limits: 1,
            quotas: 1,
            log_prefixes: vec!["p".into()].into(),
            ..Default::default()
        };
        let e = |k: &[u8], v: Vec<u8>| ElemSpec {
            lo: k.to_vec(),
            hi: k.to_vec(),
            value: v,
            timeout_ns: None,
        };
        let spec = |name: &str, key_len, data_len, verdict_map| SetSpec {
            name: name.into(),
            key_len,
            data_len,
            verdict_map,
            size: Some(16),
            ..Default::default()
        };
        p.sets.push(
            Set::build(
                &spec("s", 2, 0, false),
                &[e(&[0, 80], vec![]), e(&[6, 0], vec![])],
                0,
            )
            .unwrap(),
        );
        let vmap = [
            e(&[0, 22], encode_verdict(Verdict::Jump(1)).to_vec()),
            e(&[6, 0], encode_verdict(Verdict::Drop).to_vec()),
        ];
        p.sets.push(Set::build(&spec("v", 2, 8, true), &vmap, 0).unwrap());
        p.sets.push(Set::build(&spec("m", 4, 0, false), &[], 0).unwrap());
        for (i, rules) in chains.into_iter().enumerate() {
            // Only the base chain jumps (to chain 1), so there are no loops.
            let regular = |insn: Insn| match insn {
                Insn::Verdict(Verdict::Jump(_) | Verdict::Goto(_)) if i > 0 => Insn::Verdict(Verdict::Return),
                Insn::Lookup {
                    set: SetId(1),
                    sreg,
                    invert,
                    ..
                } if i > 0 => Insn::Lookup {
                    set: SetId(0),
                    sreg,
                    len: 2,
                    dreg: None,
                    verdict_map: false,
                    invert,
                },
                other => other,
            };
            p.chains.push(Chain {
                name: format!("c{i}"),
                rules: rules
                    .into_iter()
                    .map(|frags| Rule {
                        insns: frags.into_iter().flatten().map(regular).collect(),
                    })
                    .collect(),
                policy: (i == 0).then_some(Verdict::Accept),
            });
        }
        p
    }

    /// Ethernet + IPv4 + TCP SYN 198.18.0.1:22 -> 198.18.0.2:80.
    fn tcp4() -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[12] = 0x08;
        f[14] = 0x45;
        f[16..18].copy_from_slice(&40u16.to_be_bytes());
        f[22] = 64;
        f[23] = 6;
        f[26..30].copy_from_slice(&[198, 18, 0, 1]);
        f[30..34].copy_from_slice(&[198, 18, 0, 2]);
        f[34..36].copy_from_slice(&22u16.to_be_bytes());
        f[36..38].copy_from_slice(&80u16.to_be_bytes());
        f[46] = 0x50;
        f[47] = 0x02;
        f
    }

    /// Ethernet + IPv6 + UDP 2001:2::1:1536 -> 2001:2::2:53, 4 bytes of payload.
    fn udp6() -> Vec<u8> {
        let mut f = vec![0u8; 14 + 40 + 12];
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        f[14] = 0x60;
        f[18..20].copy_from_slice(&12u16.to_be_bytes());
        f[20] = 17;
        f[21] = 64;
        f[22..26].copy_from_slice(&[0x20, 0x01, 0, 2]);
        f[37] = 1;
        f[38..42].copy_from_slice(&[0x20, 0x01, 0, 2]);
        f[53] = 2;
        f[54..56].copy_from_slice(&1536u16.to_be_bytes());
        f[56..58].copy_from_slice(&53u16.to_be_bytes());
        f[58..60].copy_from_slice(&12u16.to_be_bytes());
        f
    }

    fn frames() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(tcp4()),
            Just(udp6()),
            proptest::collection::vec(any::<u8>(), 0..80),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        #[test]
        fn lowered_programs_agree_with_the_reference_interpreter(
            chains in proptest::collection::vec(proptest::collection::vec(rule(), 0..5), 2..3),
            frame in frames(),
            ct in prop_oneof![Just(CtState::New), Just(CtState::Established), Just(CtState::Untracked)],
            mark in 0u32..3,
            packets in 1usize..4,
        ) {
            let p = program(chains);
            // The generator builds only valid programs, so every case is a real comparison.
            prop_assert_eq!(verify(&p), Ok(()));
            let exec = lower(&p);
            let meta = PacketMeta { ct_state: ct, mark, ..Default::default() };
            let (mut a, mut b) = (State::new(&p), State::new(&p));
            for hook in [HookKind::Ip, HookKind::Ingress].into_iter().cycle().take(packets) {
                let ctx = packet_ctx(&frame, &meta, hook);
                a.writes.clear();
                b.writes.clear();
                let want = vm::evaluate(&p, &mut a, 0, &ctx);
                let got = evaluate(&exec, &p, &mut b, 0, &ctx);
                prop_assert_eq!(got, want);
                assert_same_state(&a, &b);
            }
        }
    }

    #[test]
    fn fusions_happen() {
        // What the compiler emits for `meta l4proto tcp tcp dport 22 ct state established`.
        let rule = vec![
            Insn::Meta {
                key: MetaKey::L4Proto,
                dreg: 0,
            },
            Insn::Cmp {
                op: CmpOp::Eq,
                sreg: 0,
                len: 1,
                rhs: Operand::Imm(imm(&[6])),
            },
            Insn::PayloadLoad {
                base: Base::Transport,
                offset: 2,
                len: 2,
                dreg: 0,
            },
            Insn::Cmp {
                op: CmpOp::Eq,
                sreg: 0,
                len: 2,
                rhs: Operand::Imm(imm(&[0, 22])),
            },
            Insn::Ct {
                key: CtKey::State,
                dreg: 1,
            },
            Insn::Bitwise {
                sreg: 1,
                dreg: 1,
                len: 4,
                op: BitOp::MaskXor {
                    mask: imm(&2u32.to_be_bytes()),
                    xor: [0; MAX_DATA_LEN],
                },
            },
            Insn::Cmp {
                op: CmpOp::Ne,
                sreg: 1,
                len: 4,
                rhs: Operand::Imm([0; MAX_DATA_LEN]),
            },
            Insn::Verdict(Verdict::Drop),
        ];
        let p = program(vec![vec![vec![rule]]]);
        verify(&p).unwrap();
        let e = lower(&p);
        assert_eq!(
            e.chains[0].segs[0].ops,
            vec![
                // `meta l4proto tcp` became the rule's guard (its register is overwritten
                // by the port load before anything reads it).
                Op::LoadCmp {
                    base: Base::Transport,
                    offset: 2,
                    len: 2,
                    dreg: 0,
                    op: CmpOp::Eq,
                    imm: 22 << 16
                },
                Op::CtState {
                    dreg: 1,
                    mdreg: 1,
                    mask: 2
                },
                Op::Verdict(Verdict::Drop),
            ]
        );
        assert!(e.chains[0].segs[0].generic.is_empty());
        assert_eq!(e.chains[0].segs[0].guard, vec![0xff_0000 | 6]);
    }

    /// The SYN proxy's rules run without the reference interpreter: the flags test is one
    /// op, `notrack` and `synproxy` are ops of their own.
    #[test]
    fn syn_proxy_rules_lower_to_native_ops() {
        let f = crate::compile_ruleset(
            "table inet t { chain raw { type filter hook prerouting priority raw; policy accept;
               tcp flags & (syn | ack) == syn notrack
               tcp dport 80 ct state invalid,untracked synproxy mss 1460 wscale 7 timestamp sack-perm } }",
        )
        .unwrap();
        let seg = &f.compiled.exec.chains[0].live[0];
        assert!(seg.generic.is_empty(), "{:?}", seg.ops);
        assert!(
            matches!(
                seg.ops[0],
                Op::LoadMaskCmp {
                    mask: 0x1200_0000,
                    imm: 0x0200_0000,
                    ..
                }
            ),
            "{:?}",
            seg.ops
        );
        assert_eq!(seg.ops[1], Op::Notrack);
        assert!(matches!(
            seg.ops.last(),
            Some(Op::Synproxy {
                mss: 1460,
                wscale: 7,
                ..
            })
        ));
    }

    /// A protocol test stays an op when its register is read later, or when an op with an
    /// effect (a counter) runs before it.
    #[test]
    fn guards_only_when_invisible() {
        let l4 = Insn::Meta {
            key: MetaKey::L4Proto,
            dreg: 0,
        };
        let is_tcp = Insn::Cmp {
            op: CmpOp::Eq,
            sreg: 0,
            len: 1,
            rhs: Operand::Imm(imm(&[6])),
        };
        let read_back = Insn::Cmp {
            op: CmpOp::Ne,
            sreg: 0,
            len: 1,
            rhs: Operand::Imm(imm(&[17])),
        };
        let cases = [
            (vec![l4.clone(), is_tcp.clone(), read_back], 0),
            (vec![Insn::Counter { id: 0 }, l4.clone(), is_tcp.clone()], 0),
            (vec![l4, is_tcp], 0xff_0000 | 6),
        ];
        for (rule, guard) in cases {
            let mut rule = rule;
            rule.push(Insn::Verdict(Verdict::Accept));
            let p = program(vec![vec![vec![rule]]]);
            verify(&p).unwrap();
            let e = lower(&p);
            assert_eq!(e.chains[0].segs[0].guard, vec![guard]);
        }
    }
}
