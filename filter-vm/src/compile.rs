//! The compiler: nft AST ([`crate::nft::ast`]) to verified VM programs.
//!
//! One [`Program`] holds every chain of every table (jumps resolve within a table); each base
//! chain is an entry point registered under its hook with its family and priority. Rules
//! become straight-line instruction lists, following what nft itself emits:
//! - header fields are payload loads; fields that are not whole bytes are loaded, masked and
//!   shifted so the field sits at the top of the register, and constants are encoded the same
//!   way (left-aligned), so equality, order and ranges all stay byte comparisons;
//! - a transport field brings its protocol dependency (`meta l4proto tcp`), an IPv4/IPv6 field
//!   in an `inet`, `netdev` or `bridge` table its family dependency (`meta nfproto` /
//!   `meta protocol`), as nft inserts them;
//! - flag types (`tcp flags`, `ct state`, `ct status`) compared with a bare constant test for
//!   any of its bits (`& bits != 0`), with `==` for exact equality;
//! - anonymous sets become real sets (exact, prefix or range stores, see [`crate::sets`]);
//! - concatenations pad each part to 4 bytes, as registers do.
//!
//! Every rule is compiled on its own ([`compile_rule`]) into its own instruction list, with
//! its counters, limits, quotas and anonymous sets in slots of the program that no other rule
//! gets, so a compiled rule can be kept, unchanged, in every later generation it survives into
//! (see [`crate::incremental`], which [`compile`] itself uses to build a whole ruleset).
//!
//! **Fast path** (what the compiler does on its own): a run of two or more consecutive rules
//! in one chain that each match fields against constants and end in the same verdict, with
//! no other statement (`ip saddr 198.18.0.1 drop`, `ip saddr 198.18.0.2 drop`, …), runs as a
//! single set lookup. Each rule records its shape ([`MergeInfo`]); lowering merges runs
//! within each chunk of a chain ([`crate::exec`], [`merged_run`]). Rules with counters are
//! never merged, because each rule's counter must stay its own.

use crate::ctx::{HookKind, IfName, PacketMeta};
use crate::nft::ast::{self, Const, DataType, Expr, HeaderBase, Rhs, SetRef, Stmt, Value};
use crate::pvec::Rules;
use crate::sets::{encode_verdict, ElemSpec, Set, SetId, SetSpec};
use crate::verify::{verify_rule, Env, VerifyError};
use crate::vm::{
    self, Base, BitOp, CmpOp, CtKey, DynStmt, DynsetOp, Insn, MetaKey, Operand, Program, RejectKind, State,
    Verdict, MAX_DATA_LEN, REG_BYTES,
};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// A compile error, positioned in the source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{col}: {message}")]
pub struct CompileError {
    pub line: u32,
    pub col: u32,
    pub message: String,
}

fn err_at(span: ast::Span, message: impl Into<String>) -> CompileError {
    CompileError {
        line: span.line,
        col: span.col,
        message: message.into(),
    }
}

impl From<crate::nft::ParseError> for CompileError {
    fn from(e: crate::nft::ParseError) -> Self {
        CompileError {
            line: e.line,
            col: e.col,
            message: e.message,
        }
    }
}

impl From<VerifyError> for CompileError {
    fn from(e: VerifyError) -> Self {
        CompileError {
            line: 0,
            col: 0,
            message: format!("verifier: {e}"),
        }
    }
}

/// A base chain's registration.
#[derive(Clone, Debug)]
pub struct Entry {
    pub family: ast::Family,
    pub hook: ast::Hook,
    pub priority: i32,
    pub device: Option<String>,
    pub chain: usize,
}

/// Where a rule's counter lives.
#[derive(Clone, Debug)]
pub struct RuleCounter {
    pub table: String,
    pub chain: String,
    /// Index of the rule within its chain (declaration order).
    pub index: usize,
    /// The rule's handle.
    pub handle: u64,
    pub counter: u32,
}

/// The rules that have a counter, found on first use (walking every chain once), so that
/// making a generation does not cost a pass over all rules.
#[derive(Clone, Debug, Default)]
pub struct RuleCounters {
    /// (table, chain, rules) of every chain.
    chains: Vec<(String, String, Rules)>,
    found: Arc<OnceLock<Vec<RuleCounter>>>,
}

impl RuleCounters {
    /// The counters of `chains`' rules: (table, chain, rules).
    pub fn new(chains: Vec<(String, String, Rules)>) -> RuleCounters {
        RuleCounters {
            chains,
            found: Arc::new(OnceLock::new()),
        }
    }

    fn all(&self) -> &[RuleCounter] {
        self.found.get_or_init(|| {
            let mut v = Vec::new();
            for (table, chain, rules) in &self.chains {
                for (index, e) in rules.entries().enumerate() {
                    if let Some(counter) = e.meta.as_ref().and_then(|m| m.counter) {
                        v.push(RuleCounter {
                            table: table.clone(),
                            chain: chain.clone(),
                            index,
                            handle: e.handle,
                            counter,
                        });
                    }
                }
            }
            v
        })
    }

    /// Number of rules with a counter.
    pub fn len(&self) -> usize {
        self.all().len()
    }

    /// True when no rule has a counter.
    pub fn is_empty(&self) -> bool {
        self.all().is_empty()
    }

    /// The rule counters in chain order.
    pub fn iter(&self) -> std::slice::Iter<'_, RuleCounter> {
        self.all().iter()
    }
}

/// A compiled ruleset: the verified program, its entry points and rule counters.
#[derive(Clone, Debug)]
pub struct Compiled {
    pub program: Program,
    /// `program` lowered for execution (see [`crate::exec`]); what workers run.
    pub exec: crate::exec::Exec,
    /// Base chains, sorted by hook, then priority, then declaration order.
    pub entries: Vec<Entry>,
    pub rule_counters: RuleCounters,
    /// `entries` laid out for the per-packet path (see [`StagePlans`]).
    pub(crate) plans: StagePlans,
    /// What the outcome depends on, when the rules only match and decide (see
    /// [`crate::cache`]); `None`: every packet is interpreted.
    pub cache_plan: Option<std::sync::Arc<crate::cache::CachePlan>>,
    /// Some rule reads a conntrack fact ([`crate::exec::Exec::reads_ct`]): without one the
    /// caller need not work out the packet's ct facts for the evaluation.
    pub reads_ct: bool,
}

/// The base chains of each [`Stage`] and hook, decided once per generation instead of per
/// packet: which chains a stage runs, which address families each takes, its device.
#[derive(Clone, Debug, Default)]
pub(crate) struct StagePlans {
    /// Per stage (`All`, `BeforeConntrack`, `AfterConntrack`): its chains in `entries` order.
    chains: [Vec<PlanEntry>; 3],
    /// Per stage and hook rank: the range of `chains` that hook runs.
    ranges: [[(u32, u32); 6]; 3],
}

#[derive(Clone, Copy, Debug)]
struct PlanEntry {
    chain: u32,
    /// Runs before connection tracking ([`Stage::BeforeConntrack`]).
    before: bool,
    /// Bit set of [`nf_bit`] of the packets the chain's family sees.
    families: u8,
    device: Option<IfName>,
}

/// Applies what earlier chains decided to the context later chains see: `notrack` (untracked
/// from then on, as after the kernel's notrack), the packet mark, the ct mark.
#[inline(always)]
fn carry_actions(ctx: &mut vm::PacketCtx<'_>, actions: &vm::Actions) {
    if actions.notrack {
        ctx.ct.state = vm::CtView::UNTRACKED;
    }
    if let Some(m) = actions.mark {
        ctx.mark = m;
    }
    if let Some(m) = actions.ct_mark {
        ctx.ct.mark = m;
    }
}

/// The family class of a packet for [`PlanEntry::families`]: 1 no IP, 2 IPv4, 4 IPv6.
#[inline(always)]
fn nf_bit(nfproto: u8) -> u8 {
    match nfproto {
        2 => 2,
        10 => 4,
        _ => 1,
    }
}

impl StagePlans {
    pub(crate) fn of(entries: &[Entry]) -> StagePlans {
        let mut p = StagePlans::default();
        for (si, stage) in [Stage::All, Stage::BeforeConntrack, Stage::AfterConntrack]
            .into_iter()
            .enumerate()
        {
            for rank in 0..6u8 {
                let start = p.chains[si].len() as u32;
                for e in entries
                    .iter()
                    .filter(|e| hook_rank(e.hook) == rank && stage.runs(e))
                {
                    p.chains[si].push(PlanEntry {
                        chain: e.chain as u32,
                        before: Stage::BeforeConntrack.runs(e),
                        families: match e.family {
                            ast::Family::Ip => 2,
                            ast::Family::Ip6 => 4,
                            ast::Family::Inet => 2 | 4,
                            ast::Family::Netdev | ast::Family::Bridge => 1 | 2 | 4,
                        },
                        device: e.device.as_deref().map(IfName::from),
                    });
                }
                p.ranges[si][rank as usize] = (start, p.chains[si].len() as u32);
            }
        }
        p
    }
}

/// A per-rule compile context.
struct RuleCx<'a> {
    family: ast::Family,
    table: &'a TableCx,
    /// Anonymous maps of this rule, built beforehand and referenced by generated names.
    extra_sets: Vec<(String, NamedSet)>,
    next_reg: u8,
    insns: Vec<Insn>,
    span: ast::Span,
    /// Named sets and maps of the table this rule uses.
    named: Vec<SetId>,
}

/// A named set or map: its id, key types and data type (maps).
pub(crate) type NamedSet = (SetId, Vec<DataType>, Option<DataType>);

/// Names of a table's chains and sets: what a rule of the table can refer to.
#[derive(Clone, Debug, Default)]
pub(crate) struct TableCx {
    pub(crate) chains: HashMap<String, u16>,
    pub(crate) sets: HashMap<String, NamedSet>,
}

/// How a value of some type sits in a register.
#[derive(Clone, Copy, Debug)]
struct Shape {
    /// Bytes compared.
    len: usize,
    /// Significant bits, left-aligned in `len` bytes.
    bits: u32,
}

fn dtype_shape(t: DataType) -> Shape {
    match t.bits() {
        Some(bits) => Shape {
            len: (bits as usize).div_ceil(8),
            bits,
        },
        None => Shape { len: 16, bits: 128 }, // interface names
    }
}

/// Encodes a value of type `t` into `shape.len` bytes, left-aligned.
fn encode(v: &Value, t: DataType, shape: Shape, span: ast::Span) -> Result<Vec<u8>, CompileError> {
    match (v, t) {
        (Value::Ipv4(a), _) => Ok(a.octets().to_vec()),
        (Value::Ipv6(a), _) => Ok(a.octets().to_vec()),
        (Value::Ether(e), _) => Ok(e.to_vec()),
        (Value::Str(s), DataType::Ifname) => {
            let mut b = s.trim_end_matches('*').as_bytes().to_vec();
            if !s.ends_with('*') {
                b.push(0);
            }
            b.resize(16, 0);
            Ok(b)
        }
        (Value::Int(bit), DataType::CtLabel) => {
            if *bit > 127 {
                return Err(err_at(span, format!("ct label bit {bit} is beyond 127")));
            }
            Ok((1u128 << bit).to_be_bytes().to_vec())
        }
        (Value::Int(n), DataType::Time) => Ok((n.saturating_mul(1_000_000_000)).to_be_bytes().to_vec()),
        (Value::Int(n), _) => {
            let len = shape.len;
            let pad = len as u32 * 8 - shape.bits;
            if shape.bits < 64 && *n >> shape.bits != 0 {
                return Err(err_at(
                    span,
                    format!("value {n} does not fit in {} bits", shape.bits),
                ));
            }
            let wide = (*n as u128) << pad;
            Ok(wide.to_be_bytes()[16 - len..].to_vec())
        }
        (Value::Str(s), _) => Err(err_at(span, format!("\"{s}\" is not a value of type {t:?}"))),
    }
}

fn const_bytes(c: &Const, t: DataType, span: ast::Span) -> Result<(Vec<u8>, Vec<u8>), CompileError> {
    let shape = dtype_shape(t);
    match c {
        Const::Value(v) => {
            if let (Value::Str(s), DataType::Ifname) = (v, t) {
                if s.ends_with('*') {
                    // A wildcard name is the range of every name with that prefix.
                    let lo = encode(v, t, shape, span)?;
                    let mut hi = lo.clone();
                    for b in hi.iter_mut().skip(s.len() - 1) {
                        *b = 0xff;
                    }
                    return Ok((lo, hi));
                }
            }
            let b = encode(v, t, shape, span)?;
            Ok((b.clone(), b))
        }
        Const::Prefix { addr, len } => {
            let lo = encode(addr, t, shape, span)?;
            let mut hi = lo.clone();
            for (i, b) in hi.iter_mut().enumerate() {
                let keep = (*len as usize).saturating_sub(i * 8).min(8);
                let host = if keep == 8 { 0 } else { 0xffu8 >> keep };
                *b |= host;
            }
            Ok((lo, hi))
        }
        Const::Range { low, high } => Ok((encode(low, t, shape, span)?, encode(high, t, shape, span)?)),
        Const::Concat(_) => Err(err_at(span, "a concatenation where a single value was expected")),
    }
}

/// Key bytes of a (possibly concatenated) constant for key types `types`: each part padded to
/// 4 bytes, as registers hold them. Returns (lo, hi).
fn key_bytes(c: &Const, types: &[DataType], span: ast::Span) -> Result<(Vec<u8>, Vec<u8>), CompileError> {
    let parts: Vec<&Const> = match c {
        Const::Concat(p) => p.iter().collect(),
        other => vec![other],
    };
    if parts.len() != types.len() {
        return Err(err_at(
            span,
            format!("element has {} parts, the key has {}", parts.len(), types.len()),
        ));
    }
    if types.len() == 1 {
        return const_bytes(parts[0], types[0], span);
    }
    let (mut lo, mut hi) = (Vec::new(), Vec::new());
    for (p, t) in parts.iter().zip(types) {
        let (l, h) = const_bytes(p, *t, span)?;
        let padded = l.len().div_ceil(4) * 4;
        lo.extend_from_slice(&l);
        lo.resize(lo.len() + padded - l.len(), 0);
        hi.extend_from_slice(&h);
        hi.resize(hi.len() + padded - h.len(), 0);
    }
    Ok((lo, hi))
}

/// The byte length of each part of a concatenated key (empty for a single field).
fn key_parts(types: &[DataType]) -> Vec<usize> {
    if types.len() < 2 {
        return Vec::new();
    }
    types
        .iter()
        .map(|t| dtype_shape(*t).len.div_ceil(4) * 4)
        .collect()
}

fn key_len(types: &[DataType]) -> usize {
    if types.len() == 1 {
        return dtype_shape(types[0]).len;
    }
    types.iter().map(|t| dtype_shape(*t).len.div_ceil(4) * 4).sum()
}

fn is_interval(c: &Const) -> bool {
    match c {
        Const::Prefix { .. } | Const::Range { .. } => true,
        Const::Value(Value::Str(s)) => s.ends_with('*'),
        Const::Concat(p) => p.iter().any(is_interval),
        Const::Value(_) => false,
    }
}

fn duration_ns(d: std::time::Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

fn per_ns(u: ast::RateUnit) -> u64 {
    1_000_000_000
        * match u {
            ast::RateUnit::Second => 1,
            ast::RateUnit::Minute => 60,
            ast::RateUnit::Hour => 3600,
            ast::RateUnit::Day => 86_400,
            ast::RateUnit::Week => 604_800,
        }
}

fn imm(bytes: &[u8]) -> [u8; MAX_DATA_LEN] {
    let mut d = [0u8; MAX_DATA_LEN];
    let n = bytes.len().min(MAX_DATA_LEN);
    d[..n].copy_from_slice(&bytes[..n]);
    d
}

fn meta_key(k: ast::MetaKey) -> MetaKey {
    match k {
        ast::MetaKey::Length => MetaKey::Len,
        ast::MetaKey::Protocol => MetaKey::Protocol,
        ast::MetaKey::L4proto => MetaKey::L4Proto,
        ast::MetaKey::Nfproto => MetaKey::NfProto,
        ast::MetaKey::Mark => MetaKey::Mark,
        ast::MetaKey::Iif => MetaKey::Iif,
        ast::MetaKey::Iifname => MetaKey::IifName,
        ast::MetaKey::Oif => MetaKey::Oif,
        ast::MetaKey::Oifname => MetaKey::OifName,
        ast::MetaKey::Cpu => MetaKey::Cpu,
        ast::MetaKey::Pkttype => MetaKey::PktType,
        ast::MetaKey::Hour => MetaKey::Hour,
        ast::MetaKey::Day => MetaKey::Day,
        ast::MetaKey::Time => MetaKey::TimeNs,
    }
}

fn ct_key(k: ast::CtKey) -> CtKey {
    match k {
        ast::CtKey::State => CtKey::State,
        ast::CtKey::Status => CtKey::Status,
        ast::CtKey::Mark => CtKey::Mark,
        ast::CtKey::Label => CtKey::Label,
        ast::CtKey::Direction => CtKey::Direction,
        ast::CtKey::Expiration => CtKey::Expiration,
        ast::CtKey::Zone => CtKey::Zone,
    }
}

/// The type of a key expression's value(s).
fn expr_types(e: &Expr, table: &TableCx, span: ast::Span) -> Result<Vec<DataType>, CompileError> {
    match e {
        Expr::Concat(parts) => parts.iter().map(|p| single_type(p, table, span)).collect(),
        other => Ok(vec![single_type(other, table, span)?]),
    }
}

fn single_type(e: &Expr, table: &TableCx, span: ast::Span) -> Result<DataType, CompileError> {
    match e {
        Expr::Map {
            map: SetRef::Named(n),
            ..
        } => table
            .sets
            .get(n)
            .and_then(|s| s.2)
            .ok_or_else(|| err_at(span, format!("no map named {n}"))),
        Expr::Map { .. } => Err(err_at(
            span,
            "anonymous maps on the left of a match are not supported",
        )),
        other => other
            .data_type()
            .ok_or_else(|| err_at(span, "this expression has no single type")),
    }
}

impl RuleCx<'_> {
    fn alloc(&mut self, len: usize) -> Result<u8, CompileError> {
        let regs = len.div_ceil(4) as u8;
        let r = self.next_reg;
        if (r as usize + regs as usize) * 4 > REG_BYTES {
            return Err(err_at(
                self.span,
                "rule needs more than the 64 bytes of registers",
            ));
        }
        self.next_reg += regs;
        Ok(r)
    }

    fn meta_eq(&mut self, key: MetaKey, value: &[u8]) -> Result<(), CompileError> {
        let r = self.alloc(value.len())?;
        self.insns.push(Insn::Meta { key, dreg: r });
        self.insns.push(Insn::Cmp {
            op: CmpOp::Eq,
            sreg: r,
            len: value.len() as u8,
            rhs: Operand::Imm(imm(value)),
        });
        self.next_reg = r; // the dependency's register is free again
        Ok(())
    }

    /// The protocol dependency nft inserts before a header field.
    fn dependency(&mut self, p: ast::Payload) -> Result<(), CompileError> {
        use ast::Family::*;
        use ast::Payload as P;
        let family = self.family;
        let l3 = |v4: bool| -> Option<(MetaKey, Vec<u8>)> {
            match family {
                Ip | Ip6 => None,
                Inet => Some((MetaKey::NfProto, vec![if v4 { 2 } else { 10 }])),
                Netdev | Bridge => Some((MetaKey::Protocol, if v4 { vec![8, 0] } else { vec![0x86, 0xdd] })),
            }
        };
        let dep = match p {
            P::Ip(_) => l3(true),
            P::Ip6(_) => l3(false),
            P::Tcp(_) => Some((MetaKey::L4Proto, vec![6])),
            P::Udp(_) => Some((MetaKey::L4Proto, vec![17])),
            P::Icmp(_) => Some((MetaKey::L4Proto, vec![1])),
            P::Icmpv6(_) => Some((MetaKey::L4Proto, vec![58])),
            P::Vlan(_) => Some((MetaKey::Protocol, vec![0x81, 0x00])),
            P::Th(_) | P::Ether(_) => None,
        };
        if family == Ip6 && matches!(p, P::Ip(_)) || family == Ip && matches!(p, P::Ip6(_)) {
            return Err(err_at(
                self.span,
                format!("{p:?} cannot match in a table of family {family:?}"),
            ));
        }
        // `icmp id` / `icmp sequence` only exist in echo messages: nft adds a type check
        // (echo-request 8 / echo-reply 0; ICMPv6 128 / 129), done here with one mask.
        if let P::Icmp(ast::IcmpField::Id | ast::IcmpField::Sequence)
        | P::Icmpv6(ast::IcmpField::Id | ast::IcmpField::Sequence) = p
        {
            if let Some((k, v)) = &dep {
                self.meta_eq(*k, v)?;
            }
            let (mask, want) = if matches!(p, P::Icmp(_)) {
                (0xf7u8, 0u8)
            } else {
                (0xfe, 0x80)
            };
            let r = self.alloc(1)?;
            self.insns.push(Insn::PayloadLoad {
                base: Base::Transport,
                offset: 0,
                len: 1,
                dreg: r,
            });
            self.insns.push(Insn::Bitwise {
                sreg: r,
                dreg: r,
                len: 1,
                op: BitOp::MaskXor {
                    mask: imm(&[mask]),
                    xor: [0; MAX_DATA_LEN],
                },
            });
            self.insns.push(Insn::Cmp {
                op: CmpOp::Eq,
                sreg: r,
                len: 1,
                rhs: Operand::Imm(imm(&[want])),
            });
            self.next_reg = r;
            return Ok(());
        }
        if let Some((k, v)) = dep {
            // A `vlan id` in this layout reads the tag in the frame; nft checks the ether type.
            if matches!(p, P::Vlan(_)) {
                let r = self.alloc(2)?;
                self.insns.push(Insn::PayloadLoad {
                    base: Base::Link,
                    offset: 12,
                    len: 2,
                    dreg: r,
                });
                self.insns.push(Insn::Cmp {
                    op: CmpOp::Eq,
                    sreg: r,
                    len: 2,
                    rhs: Operand::Imm(imm(&v)),
                });
                self.next_reg = r;
                return Ok(());
            }
            self.meta_eq(k, &v)?;
        }
        Ok(())
    }

    /// Loads `bits` bits starting `bit_off` bits into header `hb` into fresh registers,
    /// left-aligned: a field off byte boundaries is masked to its bits and shifted to the top.
    /// Shared by named header fields and raw payloads; adds no protocol dependency.
    /// Loads the whole bytes that `bits` bits at `bit_off` span, unchanged: (register, bytes,
    /// byte offset).
    fn load_span(&mut self, hb: HeaderBase, bit_off: u32, bits: u32) -> Result<(u8, u8, u16), CompileError> {
        let offset = u16::try_from(bit_off / 8).map_err(|_| {
            err_at(
                self.span,
                format!("payload offset {bit_off} is beyond the packet model"),
            )
        })?;
        let len = (bit_off % 8 + bits).div_ceil(8);
        if bits == 0 || len as usize > MAX_DATA_LEN {
            return Err(err_at(
                self.span,
                format!("a payload write of {bits} bits at bit {bit_off} does not fit a register"),
            ));
        }
        let r = self.alloc(len as usize)?;
        self.insns.push(Insn::PayloadLoad {
            base: match hb {
                HeaderBase::Link => Base::Link,
                HeaderBase::Network => Base::Network,
                HeaderBase::Transport => Base::Transport,
            },
            offset,
            len: len as u8,
            dreg: r,
        });
        Ok((r, len as u8, offset))
    }

    fn load_bits(&mut self, hb: HeaderBase, bit_off: u32, bits: u32) -> Result<(u8, Shape), CompileError> {
        let base = match hb {
            HeaderBase::Link => Base::Link,
            HeaderBase::Network => Base::Network,
            HeaderBase::Transport => Base::Transport,
        };
        let byte = u16::try_from(bit_off / 8).map_err(|_| {
            err_at(
                self.span,
                format!("payload offset {bit_off} is beyond the packet model"),
            )
        })?;
        let shift = (bit_off % 8) as u8;
        let load_len = (shift as u32 + bits).div_ceil(8);
        if bits == 0 || load_len as usize > MAX_DATA_LEN {
            return Err(err_at(
                self.span,
                format!("a payload load of {bits} bits at bit {bit_off} does not fit a register"),
            ));
        }
        let load_len = load_len as u8;
        let r = self.alloc(load_len as usize)?;
        self.insns.push(Insn::PayloadLoad {
            base,
            offset: byte,
            len: load_len,
            dreg: r,
        });
        if shift != 0 || bits % 8 != 0 {
            // Keep the field's bits only, then move them to the top of the register.
            let mut mask = [0u8; MAX_DATA_LEN];
            for i in 0..bits {
                let b = shift as u32 + i;
                mask[(b / 8) as usize] |= 0x80 >> (b % 8);
            }
            self.insns.push(Insn::Bitwise {
                sreg: r,
                dreg: r,
                len: load_len,
                op: BitOp::MaskXor {
                    mask,
                    xor: [0; MAX_DATA_LEN],
                },
            });
            if shift != 0 {
                self.insns.push(Insn::Bitwise {
                    sreg: r,
                    dreg: r,
                    len: load_len,
                    op: BitOp::Shl(shift),
                });
            }
        }
        Ok((
            r,
            Shape {
                len: (bits as usize).div_ceil(8),
                bits,
            },
        ))
    }

    /// Loads one (non-concatenated) expression; returns its register and shape.
    fn load(&mut self, e: &Expr) -> Result<(u8, Shape, DataType), CompileError> {
        match e {
            Expr::Payload(p) => {
                self.dependency(*p)?;
                let (hb, bit_off, bits) = p.layout();
                let (r, shape) = self.load_bits(hb, bit_off, bits)?;
                Ok((r, shape, p.data_type()))
            }
            // nft adds no protocol dependency for a raw payload: it reads whatever is there.
            Expr::Raw { base, offset, len } => {
                let (r, shape) = self.load_bits(*base, *offset, *len)?;
                let t = e
                    .data_type()
                    .ok_or_else(|| err_at(self.span, "a raw payload without a type"))?;
                Ok((r, shape, t))
            }
            Expr::Meta(k) => {
                let key = meta_key(*k);
                let r = self.alloc(key.data_len())?;
                self.insns.push(Insn::Meta { key, dreg: r });
                let t = k.data_type();
                Ok((
                    r,
                    Shape {
                        len: key.data_len(),
                        bits: key.data_len() as u32 * 8,
                    },
                    t,
                ))
            }
            Expr::Ct(k) => {
                let key = ct_key(*k);
                let r = self.alloc(key.data_len())?;
                self.insns.push(Insn::Ct { key, dreg: r });
                let t = k.data_type();
                Ok((
                    r,
                    Shape {
                        len: key.data_len(),
                        bits: key.data_len() as u32 * 8,
                    },
                    t,
                ))
            }
            Expr::Bitwise { expr, op, value } => {
                let (r, shape, t) = self.load(expr)?;
                let operand = encode(
                    value,
                    if matches!(op, ast::BitOp::Shl | ast::BitOp::Shr) {
                        DataType::Integer { bits: 8 }
                    } else {
                        t
                    },
                    shape,
                    self.span,
                );
                let vop = match op {
                    ast::BitOp::And => BitOp::MaskXor {
                        mask: imm(&operand?),
                        xor: [0; MAX_DATA_LEN],
                    },
                    ast::BitOp::Or => {
                        let v = operand?;
                        let inv: Vec<u8> = v.iter().map(|b| !b).collect();
                        BitOp::MaskXor {
                            mask: imm(&inv),
                            xor: imm(&v),
                        }
                    }
                    ast::BitOp::Xor => BitOp::MaskXor {
                        mask: [0xff; MAX_DATA_LEN],
                        xor: imm(&operand?),
                    },
                    ast::BitOp::Shl | ast::BitOp::Shr => {
                        let Value::Int(n) = value else {
                            return Err(err_at(self.span, "shift by a non-number"));
                        };
                        if *n >= 32 {
                            return Err(err_at(self.span, format!("shift by {n} bits")));
                        }
                        if matches!(op, ast::BitOp::Shl) {
                            BitOp::Shl(*n as u8)
                        } else {
                            BitOp::Shr(*n as u8)
                        }
                    }
                };
                self.insns.push(Insn::Bitwise {
                    sreg: r,
                    dreg: r,
                    len: shape.len as u8,
                    op: vop,
                });
                Ok((r, shape, t))
            }
            Expr::Map { key, map } => {
                let (kr, klen) = self.load_key(key)?;
                let set = match map {
                    SetRef::Named(n) => match self.extra_sets.iter().find(|(name, _)| name == n) {
                        Some((_, v)) => v.clone(),
                        None => {
                            let v = self
                                .table
                                .sets
                                .get(n)
                                .cloned()
                                .ok_or_else(|| err_at(self.span, format!("no map named {n}")))?;
                            self.named.push(v.0);
                            v
                        }
                    },
                    SetRef::Anonymous(_) => {
                        return Err(err_at(
                            self.span,
                            "anonymous data maps are not supported; declare a named map",
                        ))
                    }
                };
                let data = set.2.ok_or_else(|| err_at(self.span, "a set used as a map"))?;
                let shape = dtype_shape(data);
                let d = self.alloc(shape.len)?;
                self.insns.push(Insn::Lookup {
                    set: set.0,
                    sreg: kr,
                    len: klen as u8,
                    dreg: Some(d),
                    verdict_map: false,
                    invert: false,
                });
                Ok((d, shape, data))
            }
            Expr::Concat(_) => Err(err_at(self.span, "a concatenation is only a set or map key")),
            Expr::Const(v) => {
                let t = DataType::Integer { bits: 32 };
                let shape = dtype_shape(t);
                let b = encode(v, t, shape, self.span)?;
                let r = self.alloc(b.len())?;
                self.insns.push(Insn::Immediate {
                    dreg: r,
                    len: b.len() as u8,
                    data: imm(&b),
                });
                Ok((r, shape, t))
            }
        }
    }

    /// Loads a key (possibly concatenated) into consecutive registers; returns (reg, len).
    fn load_key(&mut self, e: &Expr) -> Result<(u8, usize), CompileError> {
        match e {
            Expr::Concat(parts) => {
                let start = self.next_reg;
                let mut len = 0;
                for p in parts {
                    // Each part starts on its own register (4-byte padding).
                    let (_, shape, _) = self.load(p)?;
                    len += shape.len.div_ceil(4) * 4;
                    let _ = start;
                }
                Ok((start, len))
            }
            other => {
                let (r, shape, _) = self.load(other)?;
                Ok((r, shape.len))
            }
        }
    }
}

/// Marks a [`SetId`] as private to a merged run (see [`merged_run`]).
const LOCAL_SET: u32 = 1 << 31;

/// The index of a set private to a merged run, if `id` is one.
pub(crate) fn local_set(id: SetId) -> Option<usize> {
    (id.0 & LOCAL_SET != 0).then_some((id.0 & !LOCAL_SET) as usize)
}

/// The state of compiling one rule into a program: new slots (counters, limits, quotas, log
/// prefixes, anonymous sets and meters) are appended to `program`.
struct Builder<'p> {
    program: &'p mut Program,
    now_ns: u64,
    /// `Some` while compiling a merged run: anonymous sets stay here, with local ids.
    local_sets: Option<Vec<Set>>,
    /// Sets this rule created (anonymous sets and maps, meters).
    own_sets: Vec<SetId>,
}

impl Builder<'_> {
    fn anon_set(
        &mut self,
        elems: &[ast::SetElem],
        types: &[DataType],
        data: Option<DataType>,
        table: &TableCx,
        span: ast::Span,
    ) -> Result<SetId, CompileError> {
        let id = match &self.local_sets {
            Some(l) => l.len(),
            None => self.program.sets.len(),
        };
        let spec = SetSpec {
            name: format!("__anon{id}"),
            key_len: key_len(types),
            data_len: data
                .map(|d| {
                    if d == DataType::Verdict {
                        8
                    } else {
                        dtype_shape(d).len
                    }
                })
                .unwrap_or(0),
            verdict_map: data == Some(DataType::Verdict),
            interval: elems.iter().any(|e| is_interval(&e.key)),
            size: None,
            timeout_ns: None,
            parts: key_parts(types),
        };
        let specs = elem_specs(elems, types, data, table, span)?;
        let set = Set::build(&spec, &specs, self.now_ns).map_err(|e| err_at(span, e.to_string()))?;
        if let Some(l) = &mut self.local_sets {
            l.push(set);
            return Ok(SetId(LOCAL_SET | (l.len() as u32 - 1)));
        }
        let id = self.program.sets.push(set);
        self.own_sets.push(id);
        Ok(id)
    }
}

/// Element specs of `elems` for a set with key `types` and data `data`.
fn elem_specs(
    elems: &[ast::SetElem],
    types: &[DataType],
    data: Option<DataType>,
    table: &TableCx,
    span: ast::Span,
) -> Result<Vec<ElemSpec>, CompileError> {
    elems
        .iter()
        .map(|e| {
            let (lo, hi) = key_bytes(&e.key, types, span)?;
            let value = match (&e.data, data) {
                (Some(ast::ElemData::Verdict(v)), _) => {
                    encode_verdict(resolve_verdict(v, table, span)?).to_vec()
                }
                (Some(ast::ElemData::Const(c)), Some(t)) => const_bytes(c, t, span)?.0,
                (None, None) => Vec::new(),
                _ => return Err(err_at(span, "element data does not match the map's type")),
            };
            Ok(ElemSpec {
                lo,
                hi,
                value,
                timeout_ns: e.timeout.map(duration_ns),
            })
        })
        .collect()
}

impl Builder<'_> {
    fn compile_match(&mut self, cx: &mut RuleCx<'_>, m: &ast::Match) -> Result<(), CompileError> {
        let span = cx.span;
        let table = cx.table;
        match &m.right {
            Rhs::Expr(other) => {
                let (a, shape, _) = cx.load(&m.left)?;
                let (b, shape_b, _) = cx.load(other)?;
                if shape.len != shape_b.len {
                    return Err(err_at(
                        span,
                        "the two sides of a register comparison differ in width",
                    ));
                }
                cx.insns.push(Insn::Cmp {
                    op: cmp_op(m.op),
                    sreg: a,
                    len: shape.len as u8,
                    rhs: Operand::Reg(b),
                });
            }
            Rhs::Set(set) => {
                let types = expr_types(&m.left, table, span)?;
                let (r, len) = cx.load_key(&m.left)?;
                let id = match set {
                    SetRef::Anonymous(elems) => self.anon_set(elems, &types, None, table, span)?,
                    SetRef::Named(n) => {
                        let (id, stypes, data) = table
                            .sets
                            .get(n)
                            .ok_or_else(|| err_at(span, format!("no set named @{n}")))?;
                        if data.is_some() {
                            return Err(err_at(
                                span,
                                format!("@{n} is a map; use `map @{n}` or `vmap @{n}`"),
                            ));
                        }
                        if key_len(stypes) != len {
                            return Err(err_at(
                                span,
                                format!("@{n} has keys of {} bytes, this key has {len}", key_len(stypes)),
                            ));
                        }
                        cx.named.push(*id);
                        *id
                    }
                };
                let invert = match m.op {
                    ast::RelOp::Implicit | ast::RelOp::Eq => false,
                    ast::RelOp::Ne => true,
                    op => return Err(err_at(span, format!("{op:?} cannot compare with a set"))),
                };
                cx.insns.push(Insn::Lookup {
                    set: id,
                    sreg: r,
                    len: len as u8,
                    dreg: None,
                    verdict_map: false,
                    invert,
                });
            }
            Rhs::Const(c) => {
                if matches!(c, Const::Concat(_)) {
                    // A concatenated constant is a one-element set.
                    let elem = ast::SetElem {
                        key: c.clone(),
                        timeout: None,
                        expires: None,
                        counter: None,
                        comment: None,
                        data: None,
                    };
                    let set = ast::Match {
                        left: m.left.clone(),
                        op: m.op,
                        right: Rhs::Set(SetRef::Anonymous(vec![elem])),
                    };
                    return self.compile_match(cx, &set);
                }
                let t = single_type(&m.left, table, span)?;
                let (r, shape, _) = cx.load(&m.left)?;
                let (lo, hi) = const_bytes(c, t, span)?;
                let n = shape.len as u8;
                let bitmask = t.is_bitmask() || t == DataType::CtLabel;
                match (c, m.op) {
                    (Const::Value(_), ast::RelOp::Implicit) if bitmask => {
                        // Flag test: any of the bits.
                        cx.insns.push(Insn::Bitwise {
                            sreg: r,
                            dreg: r,
                            len: n,
                            op: BitOp::MaskXor {
                                mask: imm(&lo),
                                xor: [0; MAX_DATA_LEN],
                            },
                        });
                        cx.insns.push(Insn::Cmp {
                            op: CmpOp::Ne,
                            sreg: r,
                            len: n,
                            rhs: Operand::Imm([0; MAX_DATA_LEN]),
                        });
                    }
                    _ if lo == hi => cx.insns.push(Insn::Cmp {
                        op: cmp_op(m.op),
                        sreg: r,
                        len: n,
                        rhs: Operand::Imm(imm(&lo)),
                    }),
                    (_, ast::RelOp::Implicit | ast::RelOp::Eq | ast::RelOp::Ne) => {
                        cx.insns.push(Insn::Range {
                            sreg: r,
                            len: n,
                            from: imm(&lo),
                            to: imm(&hi),
                            negate: m.op == ast::RelOp::Ne,
                        })
                    }
                    (_, op) => {
                        return Err(err_at(
                            span,
                            format!("{op:?} cannot compare with a prefix or range"),
                        ))
                    }
                }
            }
        }
        Ok(())
    }

    fn compile_stmt(
        &mut self,
        cx: &mut RuleCx<'_>,
        s: &Stmt,
        counter: &mut Option<u32>,
    ) -> Result<(), CompileError> {
        let span = cx.span;
        match s {
            Stmt::Match(m) => {
                let mark = cx.next_reg;
                self.compile_match(cx, m)?;
                // Registers are free again after a match.
                cx.next_reg = mark;
            }
            Stmt::Counter(_) => {
                let id = self.program.counters;
                self.program.counters += 1;
                counter.get_or_insert(id);
                cx.insns.push(Insn::Counter { id });
            }
            Stmt::Limit(l) => {
                let id = self.program.limits;
                self.program.limits += 1;
                // nft's default burst: 5 packets for packet rates, none for byte rates.
                let burst = l.burst;
                cx.insns.push(Insn::Limit {
                    id,
                    rate: l.rate,
                    per_ns: per_ns(l.per),
                    burst,
                    bytes: l.bytes,
                    over: l.over,
                });
            }
            Stmt::Quota(q) => {
                let id = self.program.quotas;
                self.program.quotas += 1;
                self.program.quota_used.push(q.used);
                cx.insns.push(Insn::Quota {
                    id,
                    bytes: q.bytes,
                    over: q.over,
                });
            }
            Stmt::Log(l) => {
                let prefix = self.program.log_prefixes.len() as u32;
                self.program
                    .log_prefixes
                    .push(l.prefix.clone().unwrap_or_default());
                cx.insns.push(Insn::Log { prefix });
            }
            Stmt::Reject(r) => {
                let kind = match r {
                    ast::Reject::Default => match cx.family {
                        ast::Family::Ip => RejectKind::Icmp(3),
                        ast::Family::Ip6 => RejectKind::Icmpv6(4),
                        _ => RejectKind::Icmpx(1),
                    },
                    ast::Reject::TcpReset => {
                        cx.meta_eq(MetaKey::L4Proto, &[6])?;
                        RejectKind::TcpReset
                    }
                    ast::Reject::Icmp(c) => RejectKind::Icmp(*c),
                    ast::Reject::Icmpv6(c) => RejectKind::Icmpv6(*c),
                    ast::Reject::Icmpx(c) => RejectKind::Icmpx(*c),
                };
                cx.insns.push(Insn::Reject(kind));
            }
            Stmt::Synproxy(sp) => cx.insns.push(Insn::Synproxy {
                mss: sp.mss.unwrap_or(1460),
                wscale: sp.wscale.unwrap_or(0),
                timestamp: sp.timestamp,
                sack_perm: sp.sack_perm,
            }),
            Stmt::Notrack => cx.insns.push(Insn::Notrack),
            Stmt::PayloadSet { field, value } => {
                let t = field.data_type();
                let (hb, bit_off, bits) = field.layout();
                if bit_off % 8 != 0 || bits % 8 != 0 {
                    // A field that is not whole bytes (`ip dscp`, `ip6 flowlabel`): load the
                    // bytes it spans, replace its bits, write the bytes back (as nft does).
                    let Expr::Const(v) = value else {
                        return Err(err_at(
                            span,
                            "a header field that is not whole bytes can only be set to a constant",
                        ));
                    };
                    cx.dependency(*field)?;
                    let b = encode(v, t, dtype_shape(t), span)?;
                    let (r, span_len, offset) = cx.load_span(hb, bit_off, bits)?;
                    let (mut mask, mut xor) = ([0xffu8; MAX_DATA_LEN], [0u8; MAX_DATA_LEN]);
                    let shift = bit_off % 8;
                    for i in 0..bits {
                        let (at, from) = (shift + i, i);
                        mask[(at / 8) as usize] &= !(0x80 >> (at % 8));
                        if b.get((from / 8) as usize)
                            .is_some_and(|x| x & (0x80 >> (from % 8)) != 0)
                        {
                            xor[(at / 8) as usize] |= 0x80 >> (at % 8);
                        }
                    }
                    cx.insns.push(Insn::Bitwise {
                        sreg: r,
                        dreg: r,
                        len: span_len,
                        op: BitOp::MaskXor { mask, xor },
                    });
                    cx.insns.push(Insn::PayloadWrite {
                        base: match hb {
                            HeaderBase::Link => Base::Link,
                            HeaderBase::Network => Base::Network,
                            HeaderBase::Transport => Base::Transport,
                        },
                        offset,
                        len: span_len,
                        sreg: r,
                        csum: vm::CsumFix::None,
                    });
                    return Ok(());
                }
                cx.dependency(*field)?;
                let (r, shape) = match value {
                    Expr::Const(v) => {
                        let b = encode(v, t, dtype_shape(t), span)?;
                        let r = cx.alloc(b.len())?;
                        cx.insns.push(Insn::Immediate {
                            dreg: r,
                            len: b.len() as u8,
                            data: imm(&b),
                        });
                        (r, dtype_shape(t))
                    }
                    e => {
                        let (r, shape, _) = cx.load(e)?;
                        (r, shape)
                    }
                };
                if shape.len != (bits / 8) as usize {
                    return Err(err_at(span, "the value's width differs from the field's"));
                }
                let base = match hb {
                    HeaderBase::Link => Base::Link,
                    HeaderBase::Network => Base::Network,
                    HeaderBase::Transport => Base::Transport,
                };
                cx.insns.push(Insn::PayloadWrite {
                    base,
                    offset: (bit_off / 8) as u16,
                    len: (bits / 8) as u8,
                    sreg: r,
                    csum: vm::CsumFix::None,
                });
            }
            Stmt::MetaSet { value, .. } => {
                let value = self.named_anon_map(cx, value, DataType::Mark)?;
                let (r, shape, _) = cx.load(&value)?;
                if shape.len != 4 {
                    return Err(err_at(span, "meta mark is set from a 32-bit value"));
                }
                cx.insns.push(Insn::MetaSetMark { sreg: r });
            }
            Stmt::CtSet { key, value } => {
                let k = ct_key(*key);
                let r = match (k, value) {
                    (CtKey::Label, Expr::Const(v)) => {
                        let b = encode(v, DataType::CtLabel, dtype_shape(DataType::CtLabel), span)?;
                        let r = cx.alloc(16)?;
                        cx.insns.push(Insn::Immediate {
                            dreg: r,
                            len: 16,
                            data: imm(&b),
                        });
                        r
                    }
                    (CtKey::Mark, Expr::Const(v)) => {
                        let b = encode(v, DataType::Mark, dtype_shape(DataType::Mark), span)?;
                        let r = cx.alloc(4)?;
                        cx.insns.push(Insn::Immediate {
                            dreg: r,
                            len: 4,
                            data: imm(&b),
                        });
                        r
                    }
                    (_, e) => {
                        let data = if k == CtKey::Label {
                            DataType::CtLabel
                        } else {
                            DataType::Mark
                        };
                        let e = self.named_anon_map(cx, e, data)?;
                        cx.load(&e)?.0
                    }
                };
                cx.insns.push(Insn::CtSet { key: k, sreg: r });
            }
            Stmt::Dynset(d) => {
                let (id, types, _) = cx
                    .table
                    .sets
                    .get(&d.set)
                    .cloned()
                    .ok_or_else(|| err_at(span, format!("no set named @{}", d.set)))?;
                cx.named.push(id);
                let (r, len) = cx.load_key(&d.key)?;
                if len != key_len(&types) {
                    return Err(err_at(
                        span,
                        format!(
                            "@{} has keys of {} bytes, this key has {len}",
                            d.set,
                            key_len(&types)
                        ),
                    ));
                }
                let op = if d.op == ast::DynsetOp::Add {
                    DynsetOp::Add
                } else {
                    DynsetOp::Update
                };
                let stmt = dyn_stmt(&d.stmts, span)?;
                cx.insns.push(Insn::Dynset {
                    set: id,
                    sreg: r,
                    len: len as u8,
                    op,
                    timeout_ns: d.timeout.map(duration_ns).unwrap_or(0),
                    stmt,
                });
            }
            Stmt::Meter(m) => {
                let types = expr_types(&m.key, cx.table, span)?;
                let spec = SetSpec {
                    name: m.name.clone(),
                    key_len: key_len(&types),
                    size: Some(m.size.unwrap_or(65_535) as usize),
                    timeout_ns: m.timeout.map(duration_ns),
                    ..Default::default()
                };
                let set = Set::build(&spec, &[], self.now_ns).map_err(|e| err_at(span, e.to_string()))?;
                let id = self.program.sets.push(set);
                self.own_sets.push(id);
                let (r, len) = cx.load_key(&m.key)?;
                let stmt = dyn_stmt(&m.stmts, span)?;
                cx.insns.push(Insn::Dynset {
                    set: id,
                    sreg: r,
                    len: len as u8,
                    op: DynsetOp::Update,
                    timeout_ns: 0,
                    stmt,
                });
            }
            Stmt::Vmap { key, map } => {
                let types = expr_types(key, cx.table, span)?;
                let (r, len) = cx.load_key(key)?;
                let id = match map {
                    SetRef::Anonymous(elems) => {
                        self.anon_set(elems, &types, Some(DataType::Verdict), cx.table, span)?
                    }
                    SetRef::Named(n) => {
                        let (id, _, data) = cx
                            .table
                            .sets
                            .get(n)
                            .ok_or_else(|| err_at(span, format!("no map named @{n}")))?;
                        if *data != Some(DataType::Verdict) {
                            return Err(err_at(span, format!("@{n} is not a verdict map")));
                        }
                        cx.named.push(*id);
                        *id
                    }
                };
                cx.insns.push(Insn::Lookup {
                    set: id,
                    sreg: r,
                    len: len as u8,
                    dreg: None,
                    verdict_map: true,
                    invert: false,
                });
            }
            Stmt::Verdict(v) => cx.insns.push(Insn::Verdict(resolve_verdict(v, cx.table, span)?)),
        }
        Ok(())
    }
}

impl Builder<'_> {
    /// `KEY map { k : v, … }` with an anonymous map: builds the map (values of type `data`)
    /// and returns the expression rewritten to reference it by a generated name.
    fn named_anon_map(
        &mut self,
        cx: &mut RuleCx<'_>,
        value: &Expr,
        data: DataType,
    ) -> Result<Expr, CompileError> {
        let Expr::Map {
            key,
            map: SetRef::Anonymous(elems),
        } = value
        else {
            return Ok(value.clone());
        };
        let types = expr_types(key, cx.table, cx.span)?;
        let id = self.anon_set(elems, &types, Some(data), cx.table, cx.span)?;
        let name = format!("__anon{}", id.0);
        cx.extra_sets.push((name.clone(), (id, types, Some(data))));
        Ok(Expr::Map {
            key: key.clone(),
            map: SetRef::Named(name),
        })
    }
}

fn dyn_stmt(stmts: &[Stmt], span: ast::Span) -> Result<DynStmt, CompileError> {
    match stmts {
        [] => Ok(DynStmt::None),
        [Stmt::Limit(l)] => Ok(DynStmt::Limit {
            rate: l.rate,
            per_ns: per_ns(l.per),
            burst: l.burst,
            over: l.over,
        }),
        [Stmt::Counter(_)] => Ok(DynStmt::Counter),
        _ => Err(err_at(span, "a meter takes one statement: limit or counter")),
    }
}

fn cmp_op(op: ast::RelOp) -> CmpOp {
    match op {
        ast::RelOp::Implicit | ast::RelOp::Eq => CmpOp::Eq,
        ast::RelOp::Ne => CmpOp::Ne,
        ast::RelOp::Lt => CmpOp::Lt,
        ast::RelOp::Le => CmpOp::Lte,
        ast::RelOp::Gt => CmpOp::Gt,
        ast::RelOp::Ge => CmpOp::Gte,
    }
}

fn resolve_verdict(v: &ast::Verdict, table: &TableCx, span: ast::Span) -> Result<Verdict, CompileError> {
    let chain = |n: &String| {
        table
            .chains
            .get(n)
            .copied()
            .ok_or_else(|| err_at(span, format!("no chain named {n} in this table")))
    };
    Ok(match v {
        ast::Verdict::Accept => Verdict::Accept,
        ast::Verdict::Drop => Verdict::Drop,
        ast::Verdict::Continue => Verdict::Continue,
        ast::Verdict::Return => Verdict::Return,
        ast::Verdict::Jump(n) => Verdict::Jump(chain(n)?),
        ast::Verdict::Goto(n) => Verdict::Goto(chain(n)?),
    })
}

/// What the compiler keeps about a compiled rule beside its instructions: its source, and
/// the slots and references that the incremental compiler accounts for.
#[derive(Clone, Debug)]
pub(crate) struct RuleMeta {
    /// The rule as parsed (what listings print and searches compare).
    pub(crate) ast: ast::Rule,
    /// Its fast-path shape, if it can join a merged run.
    pub(crate) merge: Option<MergeInfo>,
    /// Its counter (the first `counter` statement).
    pub(crate) counter: Option<u32>,
    /// Named sets and maps of the table it uses.
    pub(crate) named: Vec<SetId>,
    /// Sets it adds elements to from the packet path.
    pub(crate) dynsets: Vec<SetId>,
    /// Sets it owns (anonymous sets and maps, meters): gone with the rule.
    pub(crate) own_sets: Vec<SetId>,
    /// Chain edges of its own verdicts and anonymous verdict maps: (chain, is a jump).
    pub(crate) edges: Vec<(usize, bool)>,
}

/// A rule's fast-path shape: `FIELD CONST … VERDICT` with nothing else (see the module docs).
#[derive(Clone, Debug)]
pub(crate) struct MergeInfo {
    family: ast::Family,
    fields: Vec<Expr>,
    verdict: Verdict,
    consts: Vec<Const>,
}

impl MergeInfo {
    /// Whether rules of these two shapes can share one lookup.
    pub(crate) fn same_shape(&self, o: &MergeInfo) -> bool {
        self.family == o.family && self.verdict == o.verdict && self.fields == o.fields
    }
}

/// The fast-path shape of `r` (compiled to `insns`), if it has one. One field: constants may
/// be prefixes or ranges (an interval set). Several fields: exact constants only (a
/// concatenated exact set), since an interval store orders whole keys and cannot answer
/// per-field ranges.
fn merge_info(r: &ast::Rule, family: ast::Family, insns: &[Insn]) -> Option<MergeInfo> {
    let (last, matches) = r.stmts.split_last()?;
    let Stmt::Verdict(_) = last else { return None };
    if matches.is_empty() || r.comment.is_some() {
        return None;
    }
    let mut fields = Vec::with_capacity(matches.len());
    let mut consts = Vec::with_capacity(matches.len());
    let mut exact = true;
    for s in matches {
        let Stmt::Match(ast::Match {
            left,
            op: ast::RelOp::Implicit,
            right: Rhs::Const(c),
        }) = s
        else {
            return None;
        };
        if matches!(c, Const::Concat(_)) || matches!(left, Expr::Map { .. } | Expr::Concat(_)) {
            return None;
        }
        let t = left.data_type()?;
        if t.is_bitmask() || t == DataType::CtLabel || t == DataType::Ifname {
            return None;
        }
        exact &= !is_interval(c);
        fields.push(left.clone());
        consts.push(c.clone());
    }
    if fields.len() > 1 && !exact {
        return None;
    }
    let Some(Insn::Verdict(verdict)) = insns.last() else {
        return None;
    };
    Some(MergeInfo {
        family,
        fields,
        verdict: *verdict,
        consts,
    })
}

/// Sets private to a merged run, seen by the verifier next to the program's.
struct LocalEnv<'a> {
    prog: &'a Program,
    local: &'a [Set],
}

impl Env for LocalEnv<'_> {
    fn set(&self, id: SetId) -> Option<&Set> {
        match local_set(id) {
            Some(i) => self.local.get(i),
            None => self.prog.sets.get(id),
        }
    }
    fn chain(&self, id: u16) -> Option<(&str, bool)> {
        self.prog.chain(id)
    }
    fn counts(&self) -> (u32, u32, u32, usize) {
        self.prog.counts()
    }
}

/// The instructions of a merged run (`FIELD { c1, c2, … } VERDICT` or `F1 . F2 { a1 . b1, …
/// } VERDICT`) and the sets private to it (ids marked with [`local_set`]), verified; `None`
/// when the run cannot share one set (overlapping constants) or fails verification, and its
/// rules then run one by one.
pub(crate) fn merged_run(run: &[&MergeInfo], prog: &Program) -> Option<(Vec<Insn>, Vec<Set>)> {
    let first = run.first()?;
    let elems = run
        .iter()
        .map(|m| ast::SetElem {
            key: if m.consts.len() == 1 {
                m.consts[0].clone()
            } else {
                Const::Concat(m.consts.clone())
            },
            timeout: None,
            expires: None,
            counter: None,
            comment: None,
            data: None,
        })
        .collect();
    let left = if first.fields.len() == 1 {
        first.fields[0].clone()
    } else {
        Expr::Concat(first.fields.clone())
    };
    let m = ast::Match {
        left,
        op: ast::RelOp::Implicit,
        right: Rhs::Set(SetRef::Anonymous(elems)),
    };
    let mut scratch = Program::default();
    let table = TableCx::default();
    let mut b = Builder {
        program: &mut scratch,
        now_ns: 0,
        local_sets: Some(Vec::new()),
        own_sets: Vec::new(),
    };
    let mut cx = RuleCx {
        extra_sets: Vec::new(),
        family: first.family,
        table: &table,
        next_reg: 0,
        insns: Vec::new(),
        span: ast::Span::default(),
        named: Vec::new(),
    };
    b.compile_match(&mut cx, &m).ok()?;
    cx.insns.push(Insn::Verdict(first.verdict));
    let local = b.local_sets.take()?;
    let rule = vm::Rule { insns: cx.insns };
    verify_rule(&LocalEnv { prog, local: &local }, "merged run", 0, &rule).ok()?;
    Some((rule.insns, local))
}

/// Compiles rule `rule` (position `index` of chain `chain`, for messages) of a table of
/// family `family` whose names `table` resolves, appending the slots it needs to `program`,
/// and verifies it against `program`. `now_ns` starts element timeouts of anonymous sets.
///
/// On error `program` may hold slots nothing uses; callers compile into a copy they drop.
pub(crate) fn compile_rule(
    program: &mut Program,
    table: &TableCx,
    family: ast::Family,
    chain: &str,
    index: usize,
    rule: ast::Rule,
    now_ns: u64,
) -> Result<(vm::Rule, RuleMeta), CompileError> {
    let mut b = Builder {
        program,
        now_ns,
        local_sets: None,
        own_sets: Vec::new(),
    };
    let mut cx = RuleCx {
        extra_sets: Vec::new(),
        family,
        table,
        next_reg: 0,
        insns: Vec::new(),
        span: rule.span,
        named: Vec::new(),
    };
    let mut counter = None;
    for (si, s) in rule.stmts.iter().enumerate() {
        cx.span = rule.stmt_spans.get(si).copied().unwrap_or(rule.span);
        b.compile_stmt(&mut cx, s, &mut counter)?;
    }
    let own_sets = b.own_sets;
    let compiled = vm::Rule { insns: cx.insns };
    let program: &Program = b.program;
    verify_rule(program, chain, index, &compiled).map_err(|e| CompileError {
        line: rule.span.line,
        col: rule.span.col,
        message: format!("verifier: {e}"),
    })?;
    let mut edges = Vec::new();
    let mut dynsets = Vec::new();
    for i in &compiled.insns {
        match i {
            Insn::Verdict(v @ (Verdict::Jump(t) | Verdict::Goto(t))) => {
                edges.push((*t as usize, matches!(v, Verdict::Jump(_))))
            }
            Insn::Lookup {
                set,
                verdict_map: true,
                ..
            } if own_sets.contains(set) => {
                if let Some(s) = program.sets.get(*set) {
                    edges.extend(vmap_edges(s));
                }
            }
            Insn::Dynset { set, .. } => dynsets.push(*set),
            _ => {}
        }
    }
    let mut named = cx.named;
    named.sort_unstable_by_key(|s| s.0);
    named.dedup();
    let merge = merge_info(&rule, family, &compiled.insns);
    Ok((
        compiled,
        RuleMeta {
            ast: rule,
            merge,
            counter,
            named,
            dynsets,
            own_sets,
            edges,
        },
    ))
}

/// The chain edges a verdict map's elements add: (chain, is a jump).
pub(crate) fn vmap_edges(s: &Set) -> Vec<(usize, bool)> {
    s.values()
        .filter_map(crate::sets::decode_verdict)
        .filter_map(|v| match v {
            Verdict::Jump(t) => Some((t as usize, true)),
            Verdict::Goto(t) => Some((t as usize, false)),
            _ => None,
        })
        .collect()
}

/// Builds named set or map `s` of a table whose names `table` resolves.
pub(crate) fn build_named_set(s: &ast::Set, table: &TableCx, now_ns: u64) -> Result<Set, CompileError> {
    let data_len = match s.data {
        Some(DataType::Verdict) => 8,
        Some(t) => dtype_shape(t).len,
        None => 0,
    };
    let spec = SetSpec {
        name: s.name.clone(),
        key_len: key_len(&s.key),
        data_len,
        verdict_map: s.data == Some(DataType::Verdict),
        interval: s.flags.interval,
        size: s
            .size
            .map(|n| n as usize)
            .or(if s.flags.dynamic || s.flags.timeout {
                Some(65_535)
            } else {
                None
            }),
        timeout_ns: s.timeout.map(duration_ns),
        parts: key_parts(&s.key),
    };
    let elems = elem_specs(&s.elements, &s.key, s.data, table, s.span)?;
    Set::build(&spec, &elems, now_ns).map_err(|e| err_at(s.span, e.to_string()))
}

/// Compiles a parsed ruleset. `now_ns` starts element timeouts. Rules without a handle get
/// handles 1, 2, … in file order.
pub fn compile(rs: &ast::Ruleset, now_ns: u64) -> Result<Compiled, CompileError> {
    let mut image = crate::incremental::Image::from_ruleset(rs, now_ns, 1)?;
    image.snapshot()
}

pub(crate) fn hook_rank(h: ast::Hook) -> u8 {
    match h {
        ast::Hook::Ingress => 0,
        ast::Hook::Prerouting => 1,
        ast::Hook::Input => 2,
        ast::Hook::Forward => 3,
        ast::Hook::Output => 4,
        ast::Hook::Postrouting => 5,
    }
}

const ACCEPT: vm::Outcome = vm::Outcome {
    verdict: Verdict::Accept,
    actions: vm::Actions {
        mark: None,
        ct_mark: None,
        ct_label: None,
        notrack: false,
        reject: None,
        synproxy: None,
    },
};

impl Compiled {
    /// Runs the base chains of each hook in `hooks`, in that order, each hook's chains by
    /// priority; stops at the first drop. At the IP hooks only IPv4/IPv6 packets whose headers
    /// parse are evaluated; chains of family `ip` see IPv4, `ip6` IPv6, `inet` both, `netdev`
    /// and `bridge` everything; a chain bound to a device sees only packets from it.
    /// `info` is the frame's parse result (None if it did not parse).
    pub fn evaluate_hooks(
        &self,
        state: &mut State,
        hooks: &[ast::Hook],
        frame: &[u8],
        info: Option<&levee_packet::parse::FrameInfo>,
        meta: &PacketMeta,
    ) -> vm::Outcome {
        let mut actions = vm::Actions::default();
        let verdict = self.evaluate_hooks_into(state, hooks, frame, info, meta, &mut actions);
        vm::Outcome { verdict, actions }
    }

    /// [`Compiled::evaluate_hooks`] for the per-packet path: the actions go into `actions`
    /// (reset first), only the verdict is returned.
    pub fn evaluate_hooks_into(
        &self,
        state: &mut State,
        hooks: &[ast::Hook],
        frame: &[u8],
        info: Option<&levee_packet::parse::FrameInfo>,
        meta: &PacketMeta,
        actions: &mut vm::Actions,
    ) -> Verdict {
        self.evaluate_stage_into(state, hooks, frame, info, meta, actions, Stage::All)
    }

    /// Whether any base chain runs before connection tracking (see [`Stage`]).
    pub fn has_pre_conntrack(&self) -> bool {
        self.entries.iter().any(|e| Stage::BeforeConntrack.runs(e))
    }

    /// [`Compiled::evaluate_hooks_into`] for the base chains of one [`Stage`] only. The
    /// `AfterConntrack` stage keeps what the earlier stage put in `actions` (its mark, ct mark
    /// and `notrack` are what its chains see, as after the kernel's raw table) and adds to it.
    #[allow(clippy::too_many_arguments)]
    pub fn evaluate_stage_into(
        &self,
        state: &mut State,
        hooks: &[ast::Hook],
        frame: &[u8],
        info: Option<&levee_packet::parse::FrameInfo>,
        meta: &PacketMeta,
        actions: &mut vm::Actions,
        stage: Stage,
    ) -> Verdict {
        let si = match stage {
            Stage::All => 0,
            Stage::BeforeConntrack => 1,
            // Keeps what the stage before conntrack put in `actions`.
            Stage::AfterConntrack => 2,
        };
        let untracked: Option<fn(&vm::Actions) -> Option<vm::CtView>> = None;
        self.run_plan(
            si,
            stage != Stage::AfterConntrack,
            state,
            hooks,
            frame,
            info,
            meta,
            actions,
            untracked,
        )
    }

    /// The whole ruleset around connection tracking in one pass, as the kernel runs it: the
    /// chains before conntrack ([`Stage::BeforeConntrack`]), then `track` (called exactly
    /// once, with the actions so far, unless a chain before it dropped the packet), then the
    /// rest with the conntrack facts `track` returned (None: the facts in `meta`, e.g. after
    /// `notrack`). The same verdict, actions and state changes as the two
    /// [`Compiled::evaluate_stage_into`] calls with the tracking between them, for one
    /// interpreter entry per packet instead of two. `meta` holds the facts before tracking (no
    /// entry yet: `ct state invalid`); `hooks` must be in hook order (ingress, prerouting,
    /// forward), as a packet meets them.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn evaluate_tracked_into<F>(
        &self,
        state: &mut State,
        hooks: &[ast::Hook],
        frame: &[u8],
        info: Option<&levee_packet::parse::FrameInfo>,
        meta: &PacketMeta,
        actions: &mut vm::Actions,
        track: F,
    ) -> Verdict
    where
        F: FnOnce(&vm::Actions) -> Option<vm::CtView>,
    {
        debug_assert!(hooks.windows(2).all(|w| hook_rank(w[0]) < hook_rank(w[1])));
        self.run_plan(0, true, state, hooks, frame, info, meta, actions, Some(track))
    }

    /// [`Compiled::evaluate_tracked_into`] (with `track`) or [`Compiled::evaluate_stage_into`]
    /// of [`Stage::All`] (without), answered from `cache` when this generation can be cached
    /// and a packet with the same key was evaluated before: the same verdict and actions.
    /// `side` names which of the caller's per-side metadata `meta` is: apart from the time and
    /// the conntrack facts, `meta` must be the same for every packet of a side (the key holds
    /// the side, not the interface names), and `hooks` the same for every packet. A packet
    /// whose `track` returned facts (conntrack consulted) is evaluated, not cached.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub fn evaluate_cached_into<F>(
        &self,
        cache: &mut crate::cache::VerdictCache,
        side: u8,
        state: &mut State,
        hooks: &[ast::Hook],
        frame: &[u8],
        info: Option<&levee_packet::parse::FrameInfo>,
        meta: &PacketMeta,
        actions: &mut vm::Actions,
        track: Option<F>,
    ) -> Verdict
    where
        F: FnOnce(&vm::Actions) -> Option<vm::CtView>,
    {
        // Inlined into the caller up to a hit of a register-built key (a SYN flood's case);
        // everything else (other plans, misses, generations that cannot be cached) is out of
        // line.
        if let Some(plan) = self.cache_plan.as_ref().filter(|p| p.fast()) {
            if cache.active(plan) {
                let (w, len) = plan.key3(side, frame, info, meta);
                if let Some(hit) = cache.get3(&w) {
                    return Self::replay(hit, state, actions, len);
                }
                let key = crate::cache::Key::from3(w);
                return self.evaluate_miss(cache, &key, state, hooks, frame, info, meta, actions, track);
            }
            return self.evaluate_uncached(state, hooks, frame, info, meta, actions, track);
        }
        self.evaluate_cached_slow(cache, side, state, hooks, frame, info, meta, actions, track)
    }

    /// [`Compiled::evaluate_cached_into`] for a plan whose key is not built in registers, or
    /// no plan.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn evaluate_cached_slow<F>(
        &self,
        cache: &mut crate::cache::VerdictCache,
        side: u8,
        state: &mut State,
        hooks: &[ast::Hook],
        frame: &[u8],
        info: Option<&levee_packet::parse::FrameInfo>,
        meta: &PacketMeta,
        actions: &mut vm::Actions,
        track: Option<F>,
    ) -> Verdict
    where
        F: FnOnce(&vm::Actions) -> Option<vm::CtView>,
    {
        let Some(plan) = self.cache_plan.as_ref().filter(|p| cache.active(p)) else {
            return self.evaluate_uncached(state, hooks, frame, info, meta, actions, track);
        };
        let mut key = crate::cache::Key::default();
        let len = plan.key_into(side, frame, info, meta, &mut key);
        if let Some(hit) = cache.get(&key) {
            return Self::replay(hit, state, actions, len);
        }
        self.evaluate_miss(cache, &key, state, hooks, frame, info, meta, actions, track)
    }

    /// A cache hit: what the evaluation would have reset (a cacheable ruleset writes no
    /// payload), the counters it would have bumped, its verdict.
    #[inline(always)]
    fn replay(
        hit: &crate::cache::Outcome,
        state: &mut State,
        actions: &mut vm::Actions,
        len: u32,
    ) -> Verdict {
        *actions = hit.actions;
        state.writes.clear();
        for &id in hit.counted() {
            if let Some(c) = state.counters.get(id as usize) {
                c.add(u64::from(len));
            }
        }
        hit.verdict
    }

    /// [`Compiled::evaluate_cached_into`] without a cache.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn evaluate_uncached<F>(
        &self,
        state: &mut State,
        hooks: &[ast::Hook],
        frame: &[u8],
        info: Option<&levee_packet::parse::FrameInfo>,
        meta: &PacketMeta,
        actions: &mut vm::Actions,
        track: Option<F>,
    ) -> Verdict
    where
        F: FnOnce(&vm::Actions) -> Option<vm::CtView>,
    {
        match track {
            Some(t) => self.evaluate_tracked_into(state, hooks, frame, info, meta, actions, t),
            None => self.evaluate_stage_into(state, hooks, frame, info, meta, actions, Stage::All),
        }
    }

    /// A cache miss: the evaluation, remembered under `key` unless conntrack was consulted.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn evaluate_miss<F>(
        &self,
        cache: &mut crate::cache::VerdictCache,
        key: &crate::cache::Key,
        state: &mut State,
        hooks: &[ast::Hook],
        frame: &[u8],
        info: Option<&levee_packet::parse::FrameInfo>,
        meta: &PacketMeta,
        actions: &mut vm::Actions,
        track: Option<F>,
    ) -> Verdict
    where
        F: FnOnce(&vm::Actions) -> Option<vm::CtView>,
    {
        let mut consulted = false;
        state.counted = Some(cache.take_log());
        let track = track.map(|t| {
            |a: &vm::Actions| {
                let facts = t(a);
                consulted = facts.is_some();
                facts
            }
        });
        let verdict = self.evaluate_uncached(state, hooks, frame, info, meta, actions, track);
        let counted = state.counted.take().unwrap_or_default();
        if !consulted {
            cache.put(key, verdict, *actions, &counted);
        }
        cache.give_back(counted);
        verdict
    }

    /// The base chains of plan `si` for each hook in `hooks` (actions and payload writes
    /// reset first with `reset`), stopping at the first drop. With `track`, it is called once,
    /// before the first chain that runs after conntrack (or at the end), and the conntrack
    /// facts it returns are what that chain and every later one see.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn run_plan<F>(
        &self,
        si: usize,
        reset: bool,
        state: &mut State,
        hooks: &[ast::Hook],
        frame: &[u8],
        info: Option<&levee_packet::parse::FrameInfo>,
        meta: &PacketMeta,
        actions: &mut vm::Actions,
        mut track: Option<F>,
    ) -> Verdict
    where
        F: FnOnce(&vm::Actions) -> Option<vm::CtView>,
    {
        if reset {
            *actions = vm::Actions::default();
            state.writes.clear();
        }
        let plan = &self.plans.chains[si];
        // The facts after tracking, for the contexts of later hooks.
        let mut tracked_ct: Option<vm::CtView> = None;
        let mut verdict = Verdict::Accept;
        for &h in hooks {
            let (a, b) = self.plans.ranges[si][hook_rank(h) as usize];
            let Some(chains) = plan.get(a as usize..b as usize).filter(|c| !c.is_empty()) else {
                continue;
            };
            let kind = if h == ast::Hook::Ingress {
                HookKind::Ingress
            } else {
                HookKind::Ip
            };
            let mut ctx = crate::ctx::packet_ctx_from(frame, info, meta, kind);
            if kind == HookKind::Ip && ctx.nfproto == 0 {
                continue;
            }
            if let Some(ct) = tracked_ct {
                ctx.ct = ct;
            }
            // What earlier chains (of an earlier hook, or the stage before conntrack) changed
            // is what this hook's chains see.
            carry_actions(&mut ctx, actions);
            let family = nf_bit(ctx.nfproto);
            for e in chains {
                if !e.before {
                    if let Some(t) = track.take() {
                        if let Some(ct) = t(actions) {
                            ctx.ct = ct;
                            tracked_ct = Some(ct);
                        }
                        carry_actions(&mut ctx, actions);
                    }
                }
                if e.families & family == 0 || e.device.is_some_and(|d| d != meta.iifname) {
                    continue;
                }
                // Actions accumulate over the chains: a later chain's mark, ct mark, label,
                // reject or synproxy replaces an earlier one's, `notrack` sticks.
                verdict = crate::exec::evaluate_into(
                    &self.exec,
                    &self.program,
                    state,
                    e.chain as usize,
                    &ctx,
                    actions,
                );
                if verdict == Verdict::Drop {
                    return verdict;
                }
                // What a chain changed is what later chains see.
                carry_actions(&mut ctx, actions);
            }
        }
        if let Some(t) = track.take() {
            t(actions);
        }
        verdict
    }

    /// Whether any base chain is attached to `hook`.
    pub fn has_hook(&self, hook: ast::Hook) -> bool {
        self.entries.iter().any(|e| e.hook == hook)
    }

    /// Rule counters summed over several workers' states.
    pub fn rule_counter_totals(&self, states: &[&vm::CounterBank]) -> Vec<(String, String, usize, u64, u64)> {
        self.rule_counters
            .iter()
            .map(|rc| {
                let (mut p, mut b) = (0, 0);
                for s in states {
                    if let Some(c) = s.get(rc.counter as usize) {
                        let (cp, cb) = c.get();
                        p += cp;
                        b += cb;
                    }
                }
                (rc.table.clone(), rc.chain.clone(), rc.index, p, b)
            })
            .collect()
    }
}

/// Which base chains an evaluation runs, relative to connection tracking. The kernel's
/// conntrack hooks prerouting at priority -200 (`NF_IP_PRI_CONNTRACK`): chains before it
/// (the `raw` priority, -300) see packets before they are tracked, which is what lets a raw
/// chain's `notrack` keep SYN floods out of the table. Ingress chains run before prerouting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Every base chain (the packet was tracked first, or there is no tracking).
    All,
    /// Ingress chains and prerouting chains of priority below -200.
    BeforeConntrack,
    /// The rest: prerouting chains of priority -200 or more, and forward.
    AfterConntrack,
}

/// Conntrack's prerouting priority (`NF_IP_PRI_CONNTRACK`).
pub const CONNTRACK_PRIORITY: i32 = -200;

impl Stage {
    fn runs(self, e: &Entry) -> bool {
        let before = e.hook == ast::Hook::Ingress
            || (e.hook == ast::Hook::Prerouting && e.priority < CONNTRACK_PRIORITY);
        match self {
            Stage::All => true,
            Stage::BeforeConntrack => before,
            Stage::AfterConntrack => !before,
        }
    }
}

/// A compiled ruleset with one worker's state: what a test or a single-core user evaluates
/// packets with.
pub struct Filter {
    pub compiled: Compiled,
    pub state: State,
}

/// Parses and compiles nft text into a [`Filter`] (one state).
pub fn compile_ruleset(text: &str) -> Result<Filter, CompileError> {
    let ast = crate::nft::parse_ruleset(text)?;
    let compiled = compile(&ast, 0)?;
    let state = State::new(&compiled.program);
    Ok(Filter { compiled, state })
}

/// A hook by name.
pub fn parse_hook(h: &str) -> Option<ast::Hook> {
    Some(match h {
        "ingress" => ast::Hook::Ingress,
        "prerouting" => ast::Hook::Prerouting,
        "input" => ast::Hook::Input,
        "forward" => ast::Hook::Forward,
        "output" => ast::Hook::Output,
        "postrouting" => ast::Hook::Postrouting,
        _ => return None,
    })
}

impl Filter {
    /// Runs every base chain attached to `hook` (by name) in priority order, as the kernel
    /// does; true if the packet is accepted. At the IP hooks only IPv4/IPv6 packets whose
    /// headers parse are evaluated (the kernel drops the others before any hook, and non-IP
    /// frames never reach them); chains of family `ip` see IPv4, `ip6` IPv6, `inet` both.
    pub fn evaluate(&mut self, hook: &str, frame: &[u8], meta: &PacketMeta) -> bool {
        let Some(h) = parse_hook(hook) else { return true };
        let info = levee_packet::parse::parse_frame(frame).ok();
        let mut actions = vm::Actions::default();
        self.compiled
            .evaluate_hooks_into(&mut self.state, &[h], frame, info.as_ref(), meta, &mut actions)
            != Verdict::Drop
    }

    /// Like [`Filter::evaluate`], applying the ruleset's payload writes to `frame` (with
    /// checksum fix-ups) when the packet is accepted.
    pub fn evaluate_mut(&mut self, hook: &str, frame: &mut [u8], meta: &PacketMeta) -> bool {
        let o = self.evaluate_outcome(hook, frame, meta);
        if o.verdict != Verdict::Drop && !self.state.writes.is_empty() {
            let info = levee_packet::parse::parse_frame(frame).ok();
            crate::rewrite::apply_writes(frame, &self.state.writes, info.as_ref());
        }
        o.verdict != Verdict::Drop
    }

    /// Like [`Filter::evaluate`], with the actions (marks, reject, synproxy, …).
    pub fn evaluate_outcome(&mut self, hook: &str, frame: &[u8], meta: &PacketMeta) -> vm::Outcome {
        let Some(h) = parse_hook(hook) else { return ACCEPT };
        let info = levee_packet::parse::parse_frame(frame).ok();
        self.compiled
            .evaluate_hooks(&mut self.state, &[h], frame, info.as_ref(), meta)
    }

    /// Per-rule counters: (table, chain, rule index within its chain, packets, bytes).
    pub fn rule_counters(&self) -> Vec<(String, String, usize, u64, u64)> {
        self.compiled.rule_counter_totals(&[&self.state.counters])
    }
}
