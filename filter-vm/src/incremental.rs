//! The incremental compiler: a compiled ruleset kept as a persistent value that edits
//! (add/insert/replace/delete a rule by handle, add/delete set elements, flush, add/delete
//! tables, chains and sets) change in place, and that hands out a [`Compiled`] snapshot of
//! itself for each generation.
//!
//! What a one-rule change costs, whatever the size of the ruleset:
//! - the rule is compiled and verified on its own ([`compile_rule`]); its counters, limits,
//!   quotas and anonymous sets get new slots of the program (never reused, see
//!   [`vm::Program`]), so no other rule's instructions change;
//! - its chain's [`Rules`] rope copies one chunk (≤ 128 rules) and the chain's spine (one
//!   pointer per chunk); lowering ([`lower_incremental`]) re-lowers that chunk only, merging
//!   fast-path runs inside it;
//! - the global checks run on summaries: each chain keeps a count of its edges (jumps,
//!   gotos, named verdict maps), so the jump-graph check ([`verify_graph`]) costs O(chains +
//!   edges), not O(rules);
//! - the indexes (handle → chain and chunk, named set → rules using it) are persistent maps
//!   (`imbl`), so cloning an image for a transaction is cheap and a failed transaction is
//!   dropped without an undo log.
//!
//! A set's contents are shared between generations (`Arc`) and rebuilt only when they change;
//! then the chunks of the rules that look the set up are lowered again (they hold the set
//! itself, not its id).
//!
//! Thread use: control thread only. Workers only ever see the [`Compiled`] snapshots.

use crate::compile::{
    build_named_set, compile_rule, hook_rank, vmap_edges, CompileError, Compiled, Entry, RuleCounters,
    TableCx,
};
use crate::exec::{lower_incremental, Exec};
use crate::nft::ast;
use crate::pvec::{RuleEntry, Rules};
use crate::sets::{Set, SetId};
use crate::verify::verify_graph;
use crate::vm::{self, Program, Verdict};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Where a new rule goes in its chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    /// At the end (`add rule`).
    Append,
    /// At the start (`insert rule`).
    Prepend,
    /// Before the rule now at this index (`index N`; the length appends).
    Index(usize),
    /// Before the rule with this handle (`insert rule … position H`).
    Before(u64),
    /// After the rule with this handle (`add rule … position H`).
    After(u64),
}

/// A rule as the image knows it.
#[derive(Clone, Debug)]
pub struct RuleView<'a> {
    pub family: ast::Family,
    pub table: &'a str,
    pub chain: &'a str,
    /// Position in its chain.
    pub index: usize,
    pub handle: u64,
    /// The rule as parsed (its `handle` field is set).
    pub rule: &'a ast::Rule,
    /// Its counter slot, if it has a `counter`.
    pub counter: Option<u32>,
}

#[derive(Clone, Debug)]
struct ChainImg {
    name: String,
    slot: u16,
    base: Option<ast::BaseChain>,
    comment: Option<String>,
    span: ast::Span,
}

#[derive(Debug)]
struct SetImg {
    decl: ast::Set,
    id: SetId,
}

#[derive(Clone, Debug)]
struct TableImg {
    family: ast::Family,
    name: String,
    comment: Option<String>,
    span: ast::Span,
    chains: Vec<ChainImg>,
    sets: Vec<Arc<SetImg>>,
    cx: Arc<TableCx>,
}

impl TableImg {
    fn rebuild_cx(&mut self) {
        self.cx = Arc::new(TableCx {
            chains: self.chains.iter().map(|c| (c.name.clone(), c.slot)).collect(),
            sets: self
                .sets
                .iter()
                .map(|s| (s.decl.name.clone(), (s.id, s.decl.key.clone(), s.decl.data)))
                .collect(),
        });
    }
}

/// What a chain's rules add to the jump graph, counted so a rule can be taken out again.
#[derive(Clone, Debug, Default)]
struct ChainStats {
    /// (target chain, is a jump) → number of rules with that edge.
    edges: HashMap<(usize, bool), u32>,
    /// Named verdict map → number of rules looking it up.
    vmaps: HashMap<u32, u32>,
}

fn err(message: impl Into<String>) -> CompileError {
    CompileError {
        line: 0,
        col: 0,
        message: message.into(),
    }
}

fn family_name(f: ast::Family) -> &'static str {
    match f {
        ast::Family::Ip => "ip",
        ast::Family::Ip6 => "ip6",
        ast::Family::Inet => "inet",
        ast::Family::Netdev => "netdev",
        ast::Family::Bridge => "bridge",
    }
}

/// A compiled ruleset that edits change incrementally (see the module docs). Cloning is
/// cheap (shared structure); a transaction edits a clone and keeps it only if every edit and
/// the [`Image::snapshot`] succeeded.
#[derive(Clone, Debug)]
pub struct Image {
    now_ns: u64,
    tables: Vec<Arc<TableImg>>,
    program: Program,
    exec: Exec,
    /// handle → (chain slot, chunk id).
    handles: imbl::HashMap<u64, (u16, u64)>,
    /// named set id → handles of the rules that use it.
    set_users: imbl::HashMap<u32, imbl::HashSet<u64>>,
    /// set id → number of rules adding elements to it from the packet path.
    dyn_users: imbl::HashMap<u32, u32>,
    /// By chain slot.
    stats: Vec<Arc<ChainStats>>,
    free_chains: Vec<u16>,
    /// Since the last snapshot: chain slots whose rules changed, sets replaced (or whose
    /// dynamic flag flipped), chunks to lower again.
    dirty: HashSet<usize>,
    changed_sets: HashSet<u32>,
    forced: HashSet<u64>,
}

impl Image {
    /// An empty ruleset; `now_ns` starts element timeouts of sets built later.
    pub fn new(now_ns: u64) -> Image {
        Image {
            now_ns,
            tables: Vec::new(),
            program: Program::default(),
            exec: Exec::default(),
            handles: imbl::HashMap::new(),
            set_users: imbl::HashMap::new(),
            dyn_users: imbl::HashMap::new(),
            stats: Vec::new(),
            free_chains: Vec::new(),
            dirty: HashSet::new(),
            changed_sets: HashSet::new(),
            forced: HashSet::new(),
        }
    }

    /// Builds a whole ruleset. Rules without a handle get `first_handle`, `first_handle + 1`,
    /// … in file order.
    pub fn from_ruleset(rs: &ast::Ruleset, now_ns: u64, first_handle: u64) -> Result<Image, CompileError> {
        let mut img = Image::new(now_ns);
        img.add_ruleset(rs.clone(), first_handle)?;
        Ok(img)
    }

    /// Adds a whole ruleset to this one (tables, chains and sets that exist are added to, as
    /// `nft -f` does). Rules without a handle get `first_handle`, `first_handle + 1`, … in
    /// file order. Returns the next unused handle.
    pub fn add_ruleset(&mut self, rs: ast::Ruleset, first_handle: u64) -> Result<u64, CompileError> {
        let mut next = first_handle;
        for mut t in rs.tables {
            self.add_table(t.family, &t.name, t.comment.take(), false)?;
            for c in &mut t.chains {
                let (base, comment) = (c.base.clone(), c.comment.take());
                self.add_chain(t.family, &t.name, &c.name, base, comment, false)?;
            }
            for s in std::mem::take(&mut t.sets) {
                self.add_set(t.family, &t.name, s, false)?;
            }
            for c in t.chains {
                for r in c.rules {
                    let h = match r.handle {
                        Some(h) => h,
                        None => {
                            next += 1;
                            next - 1
                        }
                    };
                    self.insert_rule(t.family, &t.name, &c.name, Position::Append, h, r)?;
                }
            }
        }
        Ok(next)
    }

    /// Sets the time (monotonic ns, the workers' clock) that element timeouts of sets built
    /// from now on start from.
    pub fn set_now(&mut self, now_ns: u64) {
        self.now_ns = now_ns;
    }

    /// Every table as (family, name), in declaration order.
    pub fn tables(&self) -> Vec<(ast::Family, String)> {
        self.tables.iter().map(|t| (t.family, t.name.clone())).collect()
    }

    /// Table `family name` without rules and with element-less sets: what
    /// [`crate::nft::check_rule`] checks a rule of the table against.
    pub fn table_skeleton(&self, family: ast::Family, name: &str) -> Result<ast::Table, CompileError> {
        let t = &self.tables[self.table(family, name)?];
        Ok(ast::Table {
            family: t.family,
            name: t.name.clone(),
            comment: t.comment.clone(),
            sets: t.sets.iter().map(|s| s.decl.clone_without_elements()).collect(),
            chains: t
                .chains
                .iter()
                .map(|c| ast::Chain {
                    name: c.name.clone(),
                    base: c.base.clone(),
                    comment: c.comment.clone(),
                    rules: Vec::new(),
                    span: c.span,
                })
                .collect(),
            span: t.span,
        })
    }

    /// The largest rule handle in use (0 when there is none).
    pub fn max_handle(&self) -> u64 {
        self.handles.keys().copied().max().unwrap_or(0)
    }

    /// Number of rules.
    pub fn rule_count(&self) -> usize {
        self.handles.len()
    }

    // ----- lookups -----

    fn table_index(&self, family: ast::Family, name: &str) -> Option<usize> {
        self.tables
            .iter()
            .position(|t| t.family == family && t.name == name)
    }

    fn table(&self, family: ast::Family, name: &str) -> Result<usize, CompileError> {
        self.table_index(family, name)
            .ok_or_else(|| err(format!("table '{} {name}' does not exist", family_name(family))))
    }

    fn chain(&self, ti: usize, name: &str) -> Result<usize, CompileError> {
        let t = &self.tables[ti];
        t.chains
            .iter()
            .position(|c| c.name == name)
            .ok_or_else(|| err(format!("chain '{name}' does not exist in table '{}'", t.name)))
    }

    fn set_index(&self, ti: usize, name: &str) -> Result<usize, CompileError> {
        let t = &self.tables[ti];
        t.sets
            .iter()
            .position(|s| s.decl.name == name)
            .ok_or_else(|| err(format!("set '{name}' does not exist in table '{}'", t.name)))
    }

    /// (table index, chain index) of chain slot `slot`.
    fn slot_owner(&self, slot: u16) -> Option<(usize, usize)> {
        self.tables
            .iter()
            .enumerate()
            .find_map(|(ti, t)| t.chains.iter().position(|c| c.slot == slot).map(|ci| (ti, ci)))
    }

    /// Whether table `family name` exists.
    pub fn has_table(&self, family: ast::Family, name: &str) -> bool {
        self.table_index(family, name).is_some()
    }

    /// The rule with `handle`.
    pub fn rule(&self, handle: u64) -> Option<RuleView<'_>> {
        let &(slot, chunk) = self.handles.get(&handle)?;
        let (ti, ci) = self.slot_owner(slot)?;
        let rules = &self.program.chains.get(slot as usize)?.rules;
        let index = rules.position_in(chunk, handle)?;
        let e = rules.entry(index)?;
        self.view(ti, ci, index, e)
    }

    fn view<'a>(&'a self, ti: usize, ci: usize, index: usize, e: &'a RuleEntry) -> Option<RuleView<'a>> {
        let t = &self.tables[ti];
        let m = e.meta.as_ref()?;
        Some(RuleView {
            family: t.family,
            table: &t.name,
            chain: &t.chains[ci].name,
            index,
            handle: e.handle,
            rule: &m.ast,
            counter: m.counter,
        })
    }

    /// Every rule, table by table, chain by chain, in order.
    pub fn rules(&self) -> impl Iterator<Item = RuleView<'_>> + '_ {
        self.tables.iter().enumerate().flat_map(move |(ti, t)| {
            t.chains.iter().enumerate().flat_map(move |(ci, c)| {
                self.program.chains[c.slot as usize]
                    .rules
                    .entries()
                    .enumerate()
                    .filter_map(move |(i, e)| self.view(ti, ci, i, e))
            })
        })
    }

    /// The rules of one chain, in order.
    pub fn chain_rules(
        &self,
        family: ast::Family,
        table: &str,
        chain: &str,
    ) -> Result<Vec<RuleView<'_>>, CompileError> {
        let ti = self.table(family, table)?;
        let ci = self.chain(ti, chain)?;
        let slot = self.tables[ti].chains[ci].slot;
        Ok(self.program.chains[slot as usize]
            .rules
            .entries()
            .enumerate()
            .filter_map(|(i, e)| self.view(ti, ci, i, e))
            .collect())
    }

    /// The ruleset as a tree (what listings print), rules carrying their handles.
    pub fn to_ruleset(&self) -> ast::Ruleset {
        let tables = self
            .tables
            .iter()
            .map(|t| ast::Table {
                family: t.family,
                name: t.name.clone(),
                comment: t.comment.clone(),
                sets: t.sets.iter().map(|s| s.decl.clone()).collect(),
                chains: t
                    .chains
                    .iter()
                    .map(|c| ast::Chain {
                        name: c.name.clone(),
                        base: c.base.clone(),
                        comment: c.comment.clone(),
                        rules: self.program.chains[c.slot as usize]
                            .rules
                            .entries()
                            .filter_map(|e| {
                                let mut r = e.meta.as_ref()?.ast.clone();
                                r.handle = Some(e.handle);
                                Some(r)
                            })
                            .collect(),
                        span: c.span,
                    })
                    .collect(),
                span: t.span,
            })
            .collect();
        ast::Ruleset { tables }
    }

    /// One table as a tree.
    pub fn table_tree(&self, family: ast::Family, name: &str) -> Result<ast::Table, CompileError> {
        let ti = self.table(family, name)?;
        Ok(self.to_ruleset().tables.swap_remove(ti))
    }

    /// Declaration of a set or map (with its elements).
    pub fn set_decl(&self, family: ast::Family, table: &str, set: &str) -> Result<&ast::Set, CompileError> {
        let ti = self.table(family, table)?;
        let si = self.set_index(ti, set)?;
        Ok(&self.tables[ti].sets[si].decl)
    }

    // ----- tables -----

    /// `add table` (`create`: fails if it exists).
    pub fn add_table(
        &mut self,
        family: ast::Family,
        name: &str,
        comment: Option<String>,
        create: bool,
    ) -> Result<(), CompileError> {
        if let Some(ti) = self.table_index(family, name) {
            if create {
                return Err(err(format!(
                    "table '{} {name}' already exists",
                    family_name(family)
                )));
            }
            if comment.is_some() {
                Arc::make_mut(&mut self.tables[ti]).comment = comment;
            }
            return Ok(());
        }
        self.tables.push(Arc::new(TableImg {
            family,
            name: name.to_string(),
            comment,
            span: ast::Span::default(),
            chains: Vec::new(),
            sets: Vec::new(),
            cx: Arc::new(TableCx::default()),
        }));
        Ok(())
    }

    /// `delete table`: the table with all its chains, sets and rules.
    pub fn delete_table(&mut self, family: ast::Family, name: &str) -> Result<(), CompileError> {
        let ti = self.table(family, name)?;
        let t = self.tables[ti].clone();
        for c in &t.chains {
            self.flush_slot(c.slot);
            self.free_slot(c.slot);
        }
        for s in &t.sets {
            self.program.sets.replace(s.id, Arc::new(Set::tombstone()));
            self.changed_sets.insert(s.id.0);
        }
        self.tables.remove(ti);
        Ok(())
    }

    // ----- chains -----

    /// `add chain` (`create`: fails if it exists). An existing base chain may change its
    /// policy (and comment), not its hook, priority or device.
    pub fn add_chain(
        &mut self,
        family: ast::Family,
        table: &str,
        name: &str,
        base: Option<ast::BaseChain>,
        comment: Option<String>,
        create: bool,
    ) -> Result<(), CompileError> {
        let ti = self.table(family, table)?;
        if let Ok(ci) = self.chain(ti, name) {
            if create {
                return Err(err(format!("chain '{name}' already exists in table '{table}'")));
            }
            let old = self.tables[ti].chains[ci].clone();
            if let Some(b) = &base {
                match &old.base {
                    None => {
                        return Err(err(format!(
                            "chain '{name}' is a regular chain; it cannot become a base chain"
                        )))
                    }
                    Some(o) if (o.hook, o.priority, &o.device) != (b.hook, b.priority, &b.device) => {
                        return Err(err(format!(
                            "chain '{name}' exists with another hook, priority or device"
                        )))
                    }
                    Some(_) => {}
                }
                self.program.chains[old.slot as usize].policy = Some(policy_verdict(b.policy));
                self.dirty.insert(old.slot as usize);
            }
            let t = Arc::make_mut(&mut self.tables[ti]);
            if base.is_some() {
                t.chains[ci].base = base;
            }
            if comment.is_some() {
                t.chains[ci].comment = comment;
            }
            return Ok(());
        }
        let slot = match self.free_chains.pop() {
            Some(s) => s,
            None => {
                let n = self.program.chains.len();
                if n > u16::MAX as usize {
                    return Err(err("more than 65536 chains"));
                }
                self.program.chains.push(vm::Chain {
                    name: String::new(),
                    rules: Rules::default(),
                    policy: None,
                });
                self.stats.push(Arc::default());
                n as u16
            }
        };
        self.program.chains[slot as usize] = vm::Chain {
            name: format!("{table}/{name}"),
            rules: Rules::default(),
            policy: base.as_ref().map(|b| policy_verdict(b.policy)),
        };
        self.stats[slot as usize] = Arc::default();
        self.dirty.insert(slot as usize);
        let t = Arc::make_mut(&mut self.tables[ti]);
        t.chains.push(ChainImg {
            name: name.to_string(),
            slot,
            base,
            comment,
            span: ast::Span::default(),
        });
        t.rebuild_cx();
        Ok(())
    }

    /// `delete chain`: only an empty chain that nothing jumps to.
    pub fn delete_chain(&mut self, family: ast::Family, table: &str, name: &str) -> Result<(), CompileError> {
        let ti = self.table(family, table)?;
        let ci = self.chain(ti, name)?;
        let slot = self.tables[ti].chains[ci].slot;
        if !self.program.chains[slot as usize].rules.is_empty() {
            return Err(err(format!("chain '{name}' is not empty")));
        }
        let target = slot as usize;
        let jumped = self.tables[ti].chains.iter().any(|c| {
            self.stats[c.slot as usize]
                .edges
                .keys()
                .any(|(t, _)| *t == target)
        }) || self.tables[ti].sets.iter().any(|s| {
            self.program
                .sets
                .get(s.id)
                .is_some_and(|set| vmap_edges(set).iter().any(|(t, _)| *t == target))
        });
        if jumped {
            return Err(err(format!(
                "chain '{name}' is the target of a jump, goto or verdict map"
            )));
        }
        self.free_slot(slot);
        let t = Arc::make_mut(&mut self.tables[ti]);
        t.chains.remove(ci);
        t.rebuild_cx();
        Ok(())
    }

    fn free_slot(&mut self, slot: u16) {
        self.program.chains[slot as usize] = vm::Chain {
            name: String::new(),
            rules: Rules::default(),
            policy: None,
        };
        self.stats[slot as usize] = Arc::default();
        self.dirty.insert(slot as usize);
        self.free_chains.push(slot);
    }

    /// `flush chain`: removes every rule of the chain.
    pub fn flush_chain(&mut self, family: ast::Family, table: &str, name: &str) -> Result<(), CompileError> {
        let ti = self.table(family, table)?;
        let ci = self.chain(ti, name)?;
        let slot = self.tables[ti].chains[ci].slot;
        self.flush_slot(slot);
        Ok(())
    }

    fn flush_slot(&mut self, slot: u16) {
        let rules = std::mem::take(&mut self.program.chains[slot as usize].rules);
        for e in rules.entries() {
            self.unaccount(slot, e);
            self.handles.remove(&e.handle);
        }
        self.dirty.insert(slot as usize);
    }

    // ----- sets -----

    /// `add set`/`add map` (`create`: fails if it exists). For an existing set of the same
    /// type, the declaration's elements are added.
    pub fn add_set(
        &mut self,
        family: ast::Family,
        table: &str,
        decl: ast::Set,
        create: bool,
    ) -> Result<(), CompileError> {
        let ti = self.table(family, table)?;
        if let Ok(si) = self.set_index(ti, &decl.name) {
            let old = &self.tables[ti].sets[si].decl;
            if create {
                return Err(err(format!(
                    "set '{}' already exists in table '{table}'",
                    decl.name
                )));
            }
            if old.key != decl.key || old.data != decl.data {
                return Err(err(format!("set '{}' exists with another type", decl.name)));
            }
            return self.add_elements(family, table, &decl.name, decl.elements);
        }
        let set = build_named_set(&decl, &self.tables[ti].cx, self.now_ns)?;
        self.check_vmap(&set, &decl.name)?;
        let id = self.program.sets.push(set);
        let t = Arc::make_mut(&mut self.tables[ti]);
        t.sets.push(Arc::new(SetImg { decl, id }));
        t.rebuild_cx();
        Ok(())
    }

    /// A verdict map may only jump to regular chains.
    fn check_vmap(&self, set: &Set, name: &str) -> Result<(), CompileError> {
        for (t, _) in vmap_edges(set) {
            match self.program.chains.get(t) {
                Some(c) if c.policy.is_none() && !c.name.is_empty() => {}
                Some(c) if c.policy.is_some() => {
                    return Err(err(format!("map '{name}' jumps to base chain {}", c.name)))
                }
                _ => return Err(err(format!("map '{name}' jumps to a chain that does not exist"))),
            }
        }
        Ok(())
    }

    /// `delete set`/`delete map`: only one no rule uses.
    pub fn delete_set(&mut self, family: ast::Family, table: &str, name: &str) -> Result<(), CompileError> {
        let ti = self.table(family, table)?;
        let si = self.set_index(ti, name)?;
        let id = self.tables[ti].sets[si].id;
        if let Some(users) = self.set_users.get(&id.0).filter(|u| !u.is_empty()) {
            let mut hs: Vec<u64> = users.iter().copied().collect();
            hs.sort_unstable();
            return Err(err(format!("set '{name}' is used by rule handle {}", hs[0])));
        }
        self.program.sets.replace(id, Arc::new(Set::tombstone()));
        let t = Arc::make_mut(&mut self.tables[ti]);
        t.sets.remove(si);
        t.rebuild_cx();
        Ok(())
    }

    /// Rebuilds set `si` of table `ti` from `decl` (its contents changed).
    fn replace_set(&mut self, ti: usize, si: usize, decl: ast::Set) -> Result<(), CompileError> {
        let set = build_named_set(&decl, &self.tables[ti].cx, self.now_ns)?;
        self.check_vmap(&set, &decl.name)?;
        let id = self.tables[ti].sets[si].id;
        self.program.sets.replace(id, Arc::new(set));
        self.changed_sets.insert(id.0);
        Arc::make_mut(&mut self.tables[ti]).sets[si] = Arc::new(SetImg { decl, id });
        Ok(())
    }

    /// `add element`: adds elements to a set or map (the whole set is rebuilt: O(set)).
    pub fn add_elements(
        &mut self,
        family: ast::Family,
        table: &str,
        set: &str,
        elems: Vec<ast::SetElem>,
    ) -> Result<(), CompileError> {
        let ti = self.table(family, table)?;
        let si = self.set_index(ti, set)?;
        let mut decl = self.tables[ti].sets[si].decl.clone();
        for mut e in elems {
            if decl.counter && e.counter.is_none() {
                e.counter = Some(ast::Counter::default());
            }
            decl.elements.push(e);
        }
        self.replace_set(ti, si, decl)
    }

    /// `delete element`: removes elements (by key) from a set or map.
    pub fn delete_elements(
        &mut self,
        family: ast::Family,
        table: &str,
        set: &str,
        elems: &[ast::SetElem],
    ) -> Result<(), CompileError> {
        let ti = self.table(family, table)?;
        let si = self.set_index(ti, set)?;
        let mut decl = self.tables[ti].sets[si].decl.clone();
        for e in elems {
            match decl.elements.iter().position(|x| x.key == e.key) {
                Some(i) => {
                    decl.elements.remove(i);
                }
                None => return Err(err(format!("an element to delete is not in set '{set}'"))),
            }
        }
        self.replace_set(ti, si, decl)
    }

    /// `flush set`: removes every element.
    pub fn flush_set(&mut self, family: ast::Family, table: &str, set: &str) -> Result<(), CompileError> {
        let ti = self.table(family, table)?;
        let si = self.set_index(ti, set)?;
        let mut decl = self.tables[ti].sets[si].decl.clone();
        decl.elements.clear();
        self.replace_set(ti, si, decl)
    }

    // ----- rules -----

    /// Adds or inserts `rule` with `handle` into a chain at `pos`.
    #[allow(clippy::too_many_arguments)]
    pub fn insert_rule(
        &mut self,
        family: ast::Family,
        table: &str,
        chain: &str,
        pos: Position,
        handle: u64,
        rule: ast::Rule,
    ) -> Result<(), CompileError> {
        if self.handles.contains_key(&handle) {
            return Err(err(format!("handle {handle} is already in use")));
        }
        let ti = self.table(family, table)?;
        let ci = self.chain(ti, chain)?;
        let slot = self.tables[ti].chains[ci].slot;
        let len = self.program.chains[slot as usize].rules.len();
        let index = match pos {
            Position::Append => len,
            Position::Prepend => 0,
            Position::Index(i) if i <= len => i,
            Position::Index(i) => {
                return Err(err(format!(
                    "index {i} is beyond the {len} rules of chain '{chain}'"
                )))
            }
            Position::Before(h) | Position::After(h) => {
                let at = self.position_in_chain(slot, h).ok_or_else(|| {
                    err(format!(
                        "no rule with handle {h} in chain '{chain}' of table '{table}'"
                    ))
                })?;
                at + matches!(pos, Position::After(_)) as usize
            }
        };
        let cx = self.tables[ti].cx.clone();
        let name = self.program.chains[slot as usize].name.clone();
        let (compiled, meta) = compile_rule(&mut self.program, &cx, family, &name, index, rule, self.now_ns)?;
        let entry = Arc::new(RuleEntry {
            rule: compiled,
            handle,
            meta: Some(Box::new(meta)),
        });
        self.account(slot, &entry);
        let ins = self.program.chains[slot as usize].rules.insert(index, entry);
        self.handles.insert(handle, (slot, ins.chunk));
        if let Some((id, moved)) = ins.split {
            for h in moved {
                self.handles.insert(h, (slot, id));
            }
        }
        self.dirty.insert(slot as usize);
        Ok(())
    }

    fn position_in_chain(&self, slot: u16, handle: u64) -> Option<usize> {
        let &(s, chunk) = self.handles.get(&handle)?;
        if s != slot {
            return None;
        }
        self.program.chains[slot as usize]
            .rules
            .position_in(chunk, handle)
    }

    /// Replaces the rule with `handle` (same handle, same place; new counters and state).
    pub fn replace_rule(&mut self, handle: u64, rule: ast::Rule) -> Result<(), CompileError> {
        let &(slot, _) = self
            .handles
            .get(&handle)
            .ok_or_else(|| err(format!("no rule with handle {handle}")))?;
        let (ti, _) = self
            .slot_owner(slot)
            .ok_or_else(|| err(format!("rule {handle} has no chain")))?;
        let index = self
            .position_in_chain(slot, handle)
            .ok_or_else(|| err(format!("no rule with handle {handle}")))?;
        let family = self.tables[ti].family;
        let cx = self.tables[ti].cx.clone();
        let name = self.program.chains[slot as usize].name.clone();
        let (compiled, meta) = compile_rule(&mut self.program, &cx, family, &name, index, rule, self.now_ns)?;
        let entry = Arc::new(RuleEntry {
            rule: compiled,
            handle,
            meta: Some(Box::new(meta)),
        });
        let Some((old, _)) = self.program.chains[slot as usize]
            .rules
            .replace(index, entry.clone())
        else {
            return Err(err(format!("no rule with handle {handle}")));
        };
        // Old first: both carry the same handle, so accounting the new rule first and then
        // taking the old one out would drop the handle from the users of a set both use
        // (and a later element change would not re-lower the rule's chunk).
        self.unaccount(slot, &old);
        self.account(slot, &entry);
        self.dirty.insert(slot as usize);
        Ok(())
    }

    /// Deletes the rule with `handle`.
    pub fn delete_rule(&mut self, handle: u64) -> Result<(), CompileError> {
        let &(slot, _) = self
            .handles
            .get(&handle)
            .ok_or_else(|| err(format!("no rule with handle {handle}")))?;
        let index = self
            .position_in_chain(slot, handle)
            .ok_or_else(|| err(format!("no rule with handle {handle}")))?;
        let Some((old, _)) = self.program.chains[slot as usize].rules.remove(index) else {
            return Err(err(format!("no rule with handle {handle}")));
        };
        self.unaccount(slot, &old);
        self.handles.remove(&handle);
        self.dirty.insert(slot as usize);
        Ok(())
    }

    /// Records what rule `e` of chain `slot` adds to the summaries.
    fn account(&mut self, slot: u16, e: &RuleEntry) {
        let Some(m) = e.meta.as_ref() else { return };
        let st = Arc::make_mut(&mut self.stats[slot as usize]);
        for edge in &m.edges {
            *st.edges.entry(*edge).or_insert(0) += 1;
        }
        for s in &m.named {
            if self.program.sets.get(*s).is_some_and(|x| x.verdict_map) {
                *st.vmaps.entry(s.0).or_insert(0) += 1;
            }
            self.set_users.entry(s.0).or_default().insert(e.handle);
        }
        for s in &m.dynsets {
            let n = self.dyn_users.entry(s.0).or_insert(0);
            *n += 1;
            if *n == 1 {
                while self.program.dynamic_sets.len() <= s.0 as usize {
                    self.program.dynamic_sets.push(false);
                }
                self.program.dynamic_sets.set(s.0 as usize, true);
                self.changed_sets.insert(s.0);
            }
        }
    }

    /// Takes rule `e` of chain `slot` out of the summaries and frees the sets it owned.
    fn unaccount(&mut self, slot: u16, e: &RuleEntry) {
        let Some(m) = e.meta.as_ref() else { return };
        let st = Arc::make_mut(&mut self.stats[slot as usize]);
        for edge in &m.edges {
            if let Some(n) = st.edges.get_mut(edge) {
                *n -= 1;
                if *n == 0 {
                    st.edges.remove(edge);
                }
            }
        }
        for s in &m.named {
            if let Some(n) = st.vmaps.get_mut(&s.0) {
                *n -= 1;
                if *n == 0 {
                    st.vmaps.remove(&s.0);
                }
            }
            if let Some(u) = self.set_users.get_mut(&s.0) {
                u.remove(&e.handle);
                if u.is_empty() {
                    self.set_users.remove(&s.0);
                }
            }
        }
        for s in &m.dynsets {
            if let Some(n) = self.dyn_users.get_mut(&s.0) {
                *n -= 1;
                if *n == 0 {
                    self.dyn_users.remove(&s.0);
                    self.program.dynamic_sets.set(s.0 as usize, false);
                    self.changed_sets.insert(s.0);
                }
            }
        }
        for s in &m.own_sets {
            self.program.sets.replace(*s, Arc::new(Set::tombstone()));
        }
    }

    // ----- generations -----

    /// Checks what only the whole ruleset can show (the jump graph), lowers what changed
    /// since the last snapshot, and returns the compiled ruleset. On error the image must be
    /// dropped (its pending changes cannot be published).
    pub fn snapshot(&mut self) -> Result<Compiled, CompileError> {
        for s in self.changed_sets.drain() {
            if let Some(users) = self.set_users.get(&s) {
                for h in users {
                    if let Some(&(slot, chunk)) = self.handles.get(h) {
                        self.forced.insert(chunk);
                        self.dirty.insert(slot as usize);
                    }
                }
            }
        }
        let edges: Vec<Vec<(usize, bool)>> = self
            .stats
            .iter()
            .map(|st| {
                let mut v: Vec<(usize, bool)> = st.edges.keys().copied().collect();
                for s in st.vmaps.keys() {
                    if let Some(set) = self.program.sets.get(SetId(*s)) {
                        v.extend(vmap_edges(set));
                    }
                }
                v
            })
            .collect();
        let program = &self.program;
        verify_graph(&edges, |c| {
            program.chains.get(c).map(|c| c.name.as_str()).unwrap_or("?")
        })
        .map_err(|e| err(format!("verifier: {e}")))?;
        let exec = lower_incremental(
            &self.exec,
            &self.program,
            |c| self.dirty.contains(&c),
            &self.forced,
        );
        self.dirty.clear();
        self.forced.clear();
        self.exec = exec.clone();
        let mut entries = Vec::new();
        let mut counted = Vec::new();
        for t in &self.tables {
            for c in &t.chains {
                if let Some(b) = &c.base {
                    entries.push(Entry {
                        family: t.family,
                        hook: b.hook,
                        priority: b.priority,
                        device: b.device.clone(),
                        chain: c.slot as usize,
                    });
                }
                counted.push((
                    t.name.clone(),
                    c.name.clone(),
                    self.program.chains[c.slot as usize].rules.clone(),
                ));
            }
        }
        // Stable sort keeps declaration order among equal priorities.
        entries.sort_by_key(|e| (hook_rank(e.hook), e.priority));
        // Nothing to cache without a base chain: evaluation is then cheaper than a key.
        let cache_plan = if entries.is_empty() {
            None
        } else {
            crate::cache::CachePlan::of(
                exec.pure_reads(&self.program),
                entries.iter().any(|e| e.hook == ast::Hook::Ingress),
            )
        };
        Ok(Compiled {
            program: self.program.clone(),
            reads_ct: exec.reads_ct(),
            exec,
            plans: crate::compile::StagePlans::of(&entries),
            cache_plan,
            entries,
            rule_counters: RuleCounters::new(counted),
        })
    }
}

fn policy_verdict(p: ast::Policy) -> Verdict {
    match p {
        ast::Policy::Drop => Verdict::Drop,
        ast::Policy::Accept => Verdict::Accept,
    }
}
