//! The rule store: tables, chains, sets and rules with stable handles and owner tags, changed
//! only by transactions that apply all or nothing.
//!
//! The store is a persistent value (the incremental compiler's
//! [`Image`](levee_filter_vm::incremental::Image) plus persistent maps for owners and the ensure
//! index): a transaction edits a clone, operation by operation, then compiles and verifies the
//! result ([`RuleStore::prepare`]); any error drops the clone, so nothing changes, and says
//! which operation failed and why (line and column for rule text). Only a prepared store is
//! ever installed ([`RuleStore::install`]), and only after its generation is published
//! ([`crate::generation`]).
//!
//! Frontends that share the box do not clobber each other: every rule and table carries the
//! owner tag of the transaction that made it, a transaction may name the generation it was
//! built against (and is refused if another commit came first), [`RuleStore::search`] finds
//! rules by expression and owner, and [`Op::EnsureRule`] adds a rule unless an equal one (same
//! normalized form, in the same chain) is already there.
//!
//! Handles are `u64`s handed out in increasing order and never reused; a replaced rule keeps
//! its handle (and starts with fresh counters, being a new rule).
//!
//! Thread use: owned by the control thread (or by whoever holds the commit lock).

use levee_filter_vm::incremental::{Image, Position};
use levee_filter_vm::nft::{self, ast, PrintOptions};
use levee_filter_vm::vm::CounterBank;
use levee_filter_vm::{CompileError, Compiled};
use std::sync::Arc;

/// An nft family, by name (`ip`, `ip6`, `inet`, `netdev`, `bridge`).
pub type Family = ast::Family;

/// Most operations one transaction may hold.
pub const MAX_OPS: usize = 1 << 20;

/// One change to the ruleset. Rule, chain, set and element texts are nft syntax, parsed in the
/// context of their table (positions in errors are within that text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `add table` (`create`: fail if it exists).
    AddTable {
        family: Family,
        name: String,
        comment: Option<String>,
        create: bool,
    },
    /// `delete table`: with its chains, sets and rules.
    DeleteTable { family: Family, name: String },
    /// `add chain`: `spec` is the chain's `{ … }` block (`{ type filter hook input priority 0;
    /// policy drop; }`, rules allowed) or `None` for a regular chain.
    AddChain {
        family: Family,
        table: String,
        name: String,
        spec: Option<String>,
        create: bool,
    },
    /// `delete chain` (empty, not jumped to).
    DeleteChain {
        family: Family,
        table: String,
        name: String,
    },
    /// `flush chain`: every rule of the chain goes.
    FlushChain {
        family: Family,
        table: String,
        name: String,
    },
    /// `add set` / `add map`: `spec` is the `{ type …; flags …; elements = { … } }` block.
    AddSet {
        family: Family,
        table: String,
        name: String,
        map: bool,
        spec: String,
        create: bool,
    },
    /// `delete set` / `delete map` (no rule may use it).
    DeleteSet {
        family: Family,
        table: String,
        name: String,
    },
    /// `flush set`: every element goes.
    FlushSet {
        family: Family,
        table: String,
        name: String,
    },
    /// `add element`: `elements` is `{ e1, e2, … }`.
    AddElements {
        family: Family,
        table: String,
        set: String,
        elements: String,
    },
    /// `delete element`.
    DeleteElements {
        family: Family,
        table: String,
        set: String,
        elements: String,
    },
    /// `add rule` / `insert rule` (by position).
    AddRule {
        family: Family,
        table: String,
        chain: String,
        position: Position,
        rule: String,
    },
    /// `replace rule … handle H`.
    ReplaceRule { handle: u64, rule: String },
    /// `delete rule … handle H`.
    DeleteRule { handle: u64 },
    /// Adds the rule unless its chain already has one with the same normalized form.
    EnsureRule {
        family: Family,
        table: String,
        chain: String,
        position: Position,
        rule: String,
    },
    /// A whole ruleset file (`nft -f`): with `flush`, it replaces everything (`flush
    /// ruleset` first); without, its tables, chains, sets and rules are added.
    Load { text: String, flush: bool },
    /// `flush ruleset`: every table goes.
    FlushRuleset,
}

impl Op {
    /// A short description for error messages (`add rule inet t input`).
    pub fn describe(&self) -> String {
        let f = |f: &Family| family_name(*f);
        match self {
            Op::AddTable { family, name, .. } => format!("add table {} {name}", f(family)),
            Op::DeleteTable { family, name } => format!("delete table {} {name}", f(family)),
            Op::AddChain {
                family, table, name, ..
            } => format!("add chain {} {table} {name}", f(family)),
            Op::DeleteChain { family, table, name } => format!("delete chain {} {table} {name}", f(family)),
            Op::FlushChain { family, table, name } => format!("flush chain {} {table} {name}", f(family)),
            Op::AddSet {
                family, table, name, ..
            } => format!("add set {} {table} {name}", f(family)),
            Op::DeleteSet { family, table, name } => format!("delete set {} {table} {name}", f(family)),
            Op::FlushSet { family, table, name } => format!("flush set {} {table} {name}", f(family)),
            Op::AddElements {
                family, table, set, ..
            } => format!("add element {} {table} {set}", f(family)),
            Op::DeleteElements {
                family, table, set, ..
            } => format!("delete element {} {table} {set}", f(family)),
            Op::AddRule {
                family, table, chain, ..
            } => format!("add rule {} {table} {chain}", f(family)),
            Op::ReplaceRule { handle, .. } => format!("replace rule handle {handle}"),
            Op::DeleteRule { handle } => format!("delete rule handle {handle}"),
            Op::EnsureRule {
                family, table, chain, ..
            } => format!("ensure rule {} {table} {chain}", f(family)),
            Op::Load { flush: true, .. } => "load ruleset (flush)".into(),
            Op::Load { flush: false, .. } => "load ruleset".into(),
            Op::FlushRuleset => "flush ruleset".into(),
        }
    }
}

/// A batch of operations applied all or nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transaction {
    pub ops: Vec<Op>,
    /// Owner tag given to the rules and tables this transaction makes (`None`: untagged).
    pub owner: Option<String>,
    /// The generation this transaction was built against: refused if another commit came
    /// first (optimistic concurrency).
    pub expected_generation: Option<u64>,
}

impl Transaction {
    /// A transaction of `ops`, no owner, no expected generation.
    pub fn new(ops: Vec<Op>) -> Transaction {
        Transaction {
            ops,
            ..Default::default()
        }
    }

    /// With an owner tag.
    pub fn owner(mut self, owner: &str) -> Transaction {
        self.owner = Some(owner.to_string());
        self
    }

    /// Built against generation `g`.
    pub fn expect_generation(mut self, g: u64) -> Transaction {
        self.expected_generation = Some(g);
        self
    }
}

/// Why a transaction changed nothing.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum TxnError {
    #[error(
        "built against generation {expected}, but generation {current} is current: another commit came first"
    )]
    Conflict { expected: u64, current: u64 },
    #[error("{ops} operations in one transaction; at most {max}")]
    TooLarge { ops: usize, max: usize },
    /// Operation `index` (0-based) failed; `line`/`col` locate the problem in the operation's
    /// text (0 when it is not about the text).
    #[error("operation {index} ({op}): {}", position(*line, *col, message))]
    Op {
        index: usize,
        op: String,
        line: u32,
        col: u32,
        message: String,
    },
    /// The whole ruleset after every operation failed verification (the jump graph).
    #[error("the resulting ruleset fails verification: {0}")]
    Verify(String),
}

fn position(line: u32, col: u32, message: &str) -> String {
    if line > 0 {
        format!("{line}:{col}: {message}")
    } else {
        message.to_string()
    }
}

/// What an operation produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpResult {
    /// Nothing to report.
    Done,
    /// The handle of the rule added (or, for [`Op::EnsureRule`], found).
    Rule { handle: u64, added: bool },
    /// Handles of the rules a [`Op::Load`] or a chain spec added, in order.
    Rules(Vec<u64>),
}

/// A transaction compiled and verified, not yet published.
pub struct Prepared {
    /// The store as it will be once the generation is published.
    pub store: RuleStore,
    /// What workers will run.
    pub compiled: Compiled,
    /// One result per operation.
    pub results: Vec<OpResult>,
}

/// A rule a search found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundRule {
    pub handle: u64,
    pub family: Family,
    pub table: String,
    pub chain: String,
    /// Position in its chain.
    pub index: usize,
    pub owner: Option<String>,
    /// The rule's normalized text.
    pub text: String,
}

/// What [`RuleStore::search`] looks for; every field given must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    pub family: Option<Family>,
    pub table: Option<String>,
    pub chain: Option<String>,
    pub owner: Option<String>,
    /// nft statements the rule must contain, each as written in some statement of the rule
    /// (`ip saddr 198.18.0.1`, `tcp dport 22 accept`); compared in normalized form.
    pub expr: Option<String>,
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::Ip => "ip",
        Family::Ip6 => "ip6",
        Family::Inet => "inet",
        Family::Netdev => "netdev",
        Family::Bridge => "bridge",
    }
}

/// A family by its nft name.
pub fn family_from_name(s: &str) -> Option<Family> {
    Some(match s {
        "ip" => Family::Ip,
        "ip6" => Family::Ip6,
        "inet" => Family::Inet,
        "netdev" => Family::Netdev,
        "bridge" => Family::Bridge,
        _ => return None,
    })
}

/// Key of the ensure index: a chain and a rule's normalized text.
fn ensure_key(family: Family, table: &str, chain: &str, text: &str) -> String {
    format!("{}\0{table}\0{chain}\0{text}", family_name(family))
}

/// The store (see the module docs). Cloning is cheap.
#[derive(Clone, Debug)]
pub struct RuleStore {
    image: Image,
    /// Rule handle → owner tag.
    owners: imbl::HashMap<u64, Arc<str>>,
    /// (family, table) → owner tag.
    table_owners: imbl::HashMap<(Family, String), Arc<str>>,
    /// Next handle to hand out.
    next_handle: u64,
    /// The generation this store is (0 before the first commit).
    generation: u64,
    /// Normalized rule (see [`ensure_key`]) → handles; built on the first ensure, then kept.
    ensure_index: Option<imbl::HashMap<String, Vec<u64>>>,
}

impl Default for RuleStore {
    fn default() -> Self {
        RuleStore::new()
    }
}

impl RuleStore {
    /// An empty store.
    pub fn new() -> RuleStore {
        RuleStore {
            image: Image::new(0),
            owners: imbl::HashMap::new(),
            table_owners: imbl::HashMap::new(),
            next_handle: 1,
            generation: 0,
            ensure_index: None,
        }
    }

    /// The generation this store was published as.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Records the generation this store was published as.
    pub fn set_generation(&mut self, g: u64) {
        self.generation = g;
    }

    /// Number of rules.
    pub fn rule_count(&self) -> usize {
        self.image.rule_count()
    }

    /// The compiled form underneath (for reading rules by handle).
    pub fn image(&self) -> &Image {
        &self.image
    }

    /// Applies `txn` to a copy of this store, compiles and verifies the result. `now_ns`
    /// (the workers' monotonic clock) starts element timeouts of sets built by the
    /// transaction. Nothing here changes `self`.
    pub fn prepare(&self, txn: &Transaction, now_ns: u64) -> Result<Prepared, TxnError> {
        if let Some(expected) = txn.expected_generation {
            if expected != self.generation {
                return Err(TxnError::Conflict {
                    expected,
                    current: self.generation,
                });
            }
        }
        if txn.ops.len() > MAX_OPS {
            return Err(TxnError::TooLarge {
                ops: txn.ops.len(),
                max: MAX_OPS,
            });
        }
        let mut next = self.clone();
        next.image.set_now(now_ns);
        let owner: Option<Arc<str>> = txn.owner.as_deref().map(Arc::from);
        let mut results = Vec::with_capacity(txn.ops.len());
        for (index, op) in txn.ops.iter().enumerate() {
            let r = next.apply(op, owner.as_ref()).map_err(|e| TxnError::Op {
                index,
                op: op.describe(),
                line: e.line,
                col: e.col,
                message: e.message,
            })?;
            results.push(r);
        }
        let compiled = next.image.snapshot().map_err(|e| TxnError::Verify(e.message))?;
        next.generation = self.generation + 1;
        Ok(Prepared {
            store: next,
            compiled,
            results,
        })
    }

    /// Replaces this store by a prepared one once its generation is published.
    pub fn install(&mut self, prepared: RuleStore) {
        *self = prepared;
    }

    /// Applies `txn` in place (prepare + install), for users without workers (tests, the
    /// initial ruleset before the dataplane starts). Returns the compiled ruleset.
    pub fn commit_local(
        &mut self,
        txn: &Transaction,
        now_ns: u64,
    ) -> Result<(Compiled, Vec<OpResult>), TxnError> {
        let p = self.prepare(txn, now_ns)?;
        self.install(p.store);
        Ok((p.compiled, p.results))
    }

    fn take_handle(&mut self) -> u64 {
        self.next_handle += 1;
        self.next_handle - 1
    }

    fn parse_rule(&self, family: Family, table: &str, text: &str) -> Result<ast::Rule, CompileError> {
        let rule = nft::parse_rule(text, family)?;
        let skeleton = self.image.table_skeleton(family, table)?;
        nft::check_rule(&rule, &skeleton)?;
        Ok(rule)
    }

    fn index_add(&mut self, family: Family, table: &str, chain: &str, handle: u64, rule: &ast::Rule) {
        if let Some(ix) = &mut self.ensure_index {
            let k = ensure_key(family, table, chain, &nft::print_rule(rule));
            ix.entry(k).or_default().push(handle);
        }
    }

    fn index_remove(&mut self, handle: u64) {
        if self.ensure_index.is_none() {
            return;
        }
        let Some(v) = self.image.rule(handle) else { return };
        let k = ensure_key(v.family, v.table, v.chain, &nft::print_rule(v.rule));
        if let Some(ix) = &mut self.ensure_index {
            if let Some(hs) = ix.get_mut(&k) {
                hs.retain(|h| *h != handle);
                if hs.is_empty() {
                    ix.remove(&k);
                }
            }
        }
    }

    fn build_index(&mut self) {
        if self.ensure_index.is_some() {
            return;
        }
        let mut ix: imbl::HashMap<String, Vec<u64>> = imbl::HashMap::new();
        for v in self.image.rules() {
            let k = ensure_key(v.family, v.table, v.chain, &nft::print_rule(v.rule));
            ix.entry(k).or_default().push(v.handle);
        }
        self.ensure_index = Some(ix);
    }

    fn tag(&mut self, handle: u64, owner: Option<&Arc<str>>) {
        match owner {
            Some(o) => {
                self.owners.insert(handle, o.clone());
            }
            None => {
                self.owners.remove(&handle);
            }
        }
    }

    fn apply(&mut self, op: &Op, owner: Option<&Arc<str>>) -> Result<OpResult, CompileError> {
        match op {
            Op::AddTable {
                family,
                name,
                comment,
                create,
            } => {
                let existed = self.image.has_table(*family, name);
                self.image.add_table(*family, name, comment.clone(), *create)?;
                if let (false, Some(o)) = (existed, owner) {
                    self.table_owners.insert((*family, name.clone()), o.clone());
                }
                Ok(OpResult::Done)
            }
            Op::DeleteTable { family, name } => {
                let gone: Vec<u64> = self
                    .image
                    .rules()
                    .filter(|v| v.family == *family && v.table == name)
                    .map(|v| v.handle)
                    .collect();
                self.image.delete_table(*family, name)?;
                self.table_owners.remove(&(*family, name.clone()));
                for h in gone {
                    self.owners.remove(&h);
                }
                self.ensure_index = None;
                Ok(OpResult::Done)
            }
            Op::AddChain {
                family,
                table,
                name,
                spec,
                create,
            } => {
                let chain = match spec {
                    Some(text) => nft::parse_chain(text, *family, name)?,
                    None => ast::Chain {
                        name: name.clone(),
                        base: None,
                        comment: None,
                        rules: Vec::new(),
                        span: ast::Span::default(),
                    },
                };
                self.image.add_chain(
                    *family,
                    table,
                    name,
                    chain.base.clone(),
                    chain.comment.clone(),
                    *create,
                )?;
                let skeleton = self.image.table_skeleton(*family, table)?;
                let mut handles = Vec::new();
                for r in chain.rules {
                    nft::check_rule(&r, &skeleton)?;
                    let h = self.take_handle();
                    self.index_add(*family, table, name, h, &r);
                    self.image
                        .insert_rule(*family, table, name, Position::Append, h, r)?;
                    self.tag(h, owner);
                    handles.push(h);
                }
                Ok(if handles.is_empty() {
                    OpResult::Done
                } else {
                    OpResult::Rules(handles)
                })
            }
            Op::DeleteChain { family, table, name } => {
                self.image.delete_chain(*family, table, name)?;
                Ok(OpResult::Done)
            }
            Op::FlushChain { family, table, name } => {
                let handles: Vec<u64> = self
                    .image
                    .chain_rules(*family, table, name)?
                    .iter()
                    .map(|v| v.handle)
                    .collect();
                for h in &handles {
                    self.index_remove(*h);
                    self.owners.remove(h);
                }
                self.image.flush_chain(*family, table, name)?;
                Ok(OpResult::Done)
            }
            Op::AddSet {
                family,
                table,
                name,
                map,
                spec,
                create,
            } => {
                let decl = nft::parse_set(spec, *family, name, *map)?;
                self.image.add_set(*family, table, decl, *create)?;
                Ok(OpResult::Done)
            }
            Op::DeleteSet { family, table, name } => {
                self.image.delete_set(*family, table, name)?;
                Ok(OpResult::Done)
            }
            Op::FlushSet { family, table, name } => {
                self.image.flush_set(*family, table, name)?;
                Ok(OpResult::Done)
            }
            Op::AddElements {
                family,
                table,
                set,
                elements,
            } => {
                let decl = self.image.set_decl(*family, table, set)?;
                let elems = nft::parse_elements(elements, *family, decl)?;
                self.image.add_elements(*family, table, set, elems)?;
                Ok(OpResult::Done)
            }
            Op::DeleteElements {
                family,
                table,
                set,
                elements,
            } => {
                let decl = self.image.set_decl(*family, table, set)?;
                let elems = nft::parse_elements(elements, *family, decl)?;
                self.image.delete_elements(*family, table, set, &elems)?;
                Ok(OpResult::Done)
            }
            Op::AddRule {
                family,
                table,
                chain,
                position,
                rule,
            } => {
                let r = self.parse_rule(*family, table, rule)?;
                let h = self.take_handle();
                self.index_add(*family, table, chain, h, &r);
                self.image.insert_rule(*family, table, chain, *position, h, r)?;
                self.tag(h, owner);
                Ok(OpResult::Rule {
                    handle: h,
                    added: true,
                })
            }
            Op::EnsureRule {
                family,
                table,
                chain,
                position,
                rule,
            } => {
                let r = self.parse_rule(*family, table, rule)?;
                self.build_index();
                let k = ensure_key(*family, table, chain, &nft::print_rule(&r));
                if let Some(h) = self
                    .ensure_index
                    .as_ref()
                    .and_then(|ix| ix.get(&k))
                    .and_then(|hs| hs.first())
                {
                    return Ok(OpResult::Rule {
                        handle: *h,
                        added: false,
                    });
                }
                let h = self.take_handle();
                self.index_add(*family, table, chain, h, &r);
                self.image.insert_rule(*family, table, chain, *position, h, r)?;
                self.tag(h, owner);
                Ok(OpResult::Rule {
                    handle: h,
                    added: true,
                })
            }
            Op::ReplaceRule { handle, rule } => {
                let (family, table, chain) = {
                    let v = self.image.rule(*handle).ok_or_else(|| CompileError {
                        line: 0,
                        col: 0,
                        message: format!("no rule with handle {handle}"),
                    })?;
                    (v.family, v.table.to_string(), v.chain.to_string())
                };
                let r = self.parse_rule(family, &table, rule)?;
                self.index_remove(*handle);
                self.index_add(family, &table, &chain, *handle, &r);
                self.image.replace_rule(*handle, r)?;
                self.tag(*handle, owner);
                Ok(OpResult::Done)
            }
            Op::DeleteRule { handle } => {
                self.index_remove(*handle);
                self.image.delete_rule(*handle)?;
                self.owners.remove(handle);
                Ok(OpResult::Done)
            }
            Op::Load { text, flush } => {
                let rs = nft::parse_ruleset(text)?;
                if *flush {
                    self.flush_ruleset()?;
                }
                let first = self.next_handle;
                let tables: Vec<(Family, String)> =
                    rs.tables.iter().map(|t| (t.family, t.name.clone())).collect();
                let next = self.image.add_ruleset(rs, first)?;
                self.next_handle = next;
                let mut handles = Vec::new();
                for h in first..next {
                    self.tag(h, owner);
                    handles.push(h);
                }
                if let Some(o) = owner {
                    for t in tables {
                        self.table_owners.entry(t).or_insert_with(|| o.clone());
                    }
                }
                self.ensure_index = None;
                Ok(OpResult::Rules(handles))
            }
            Op::FlushRuleset => {
                self.flush_ruleset()?;
                Ok(OpResult::Done)
            }
        }
    }

    fn flush_ruleset(&mut self) -> Result<(), CompileError> {
        for (f, name) in self.image.tables() {
            self.image.delete_table(f, &name)?;
        }
        self.owners = imbl::HashMap::new();
        self.table_owners = imbl::HashMap::new();
        self.ensure_index = None;
        Ok(())
    }

    // ----- reading -----

    /// Owner tag of the rule with `handle`.
    pub fn owner_of(&self, handle: u64) -> Option<&str> {
        self.owners.get(&handle).map(|o| &**o)
    }

    /// Owner tag of a table.
    pub fn table_owner(&self, family: Family, name: &str) -> Option<&str> {
        self.table_owners.get(&(family, name.to_string())).map(|o| &**o)
    }

    /// Rules matching `q`, in listing order.
    pub fn search(&self, q: &Query) -> Result<Vec<FoundRule>, CompileError> {
        let want = match &q.expr {
            Some(text) => Some(nft::parse_rule(text, q.family.unwrap_or(Family::Inet))?.stmts),
            None => None,
        };
        let mut out = Vec::new();
        for v in self.image.rules() {
            let owner = self.owner_of(v.handle);
            if q.family.is_some_and(|f| f != v.family)
                || q.table.as_deref().is_some_and(|t| t != v.table)
                || q.chain.as_deref().is_some_and(|c| c != v.chain)
                || q.owner.as_deref().is_some_and(|o| Some(o) != owner)
            {
                continue;
            }
            if let Some(stmts) = &want {
                if !stmts.iter().all(|s| v.rule.stmts.contains(s)) {
                    continue;
                }
            }
            out.push(FoundRule {
                handle: v.handle,
                family: v.family,
                table: v.table.to_string(),
                chain: v.chain.to_string(),
                index: v.index,
                owner: owner.map(str::to_string),
                text: nft::print_rule(v.rule),
            });
        }
        Ok(out)
    }

    /// `list ruleset` (with `# handle N` comments when `handles`).
    pub fn list_ruleset(&self, handles: bool) -> String {
        nft::print_ruleset_with(&self.image.to_ruleset(), PrintOptions { handles })
    }

    /// `list table`.
    pub fn list_table(&self, family: Family, name: &str, handles: bool) -> Result<String, CompileError> {
        let t = self.image.table_tree(family, name)?;
        Ok(nft::print_ruleset_with(
            &ast::Ruleset { tables: vec![t] },
            PrintOptions { handles },
        ))
    }

    /// `list chain`: the chain inside its table, as nft prints it.
    pub fn list_chain(
        &self,
        family: Family,
        table: &str,
        chain: &str,
        handles: bool,
    ) -> Result<String, CompileError> {
        let mut t = self.image.table_tree(family, table)?;
        t.sets.clear();
        t.chains.retain(|c| c.name == chain);
        if t.chains.is_empty() {
            return Err(CompileError {
                line: 0,
                col: 0,
                message: format!("chain '{chain}' does not exist in table '{table}'"),
            });
        }
        Ok(nft::print_ruleset_with(
            &ast::Ruleset { tables: vec![t] },
            PrintOptions { handles },
        ))
    }

    /// `list set` / `list map`: the set inside its table.
    pub fn list_set(&self, family: Family, table: &str, set: &str) -> Result<String, CompileError> {
        let decl = self.image.set_decl(family, table, set)?.clone();
        let mut t = self.image.table_skeleton(family, table)?;
        t.chains.clear();
        t.sets = vec![decl];
        Ok(nft::print_ruleset(&ast::Ruleset { tables: vec![t] }))
    }

    /// Per-rule counters summed over workers' banks: (handle, packets, bytes), for rules
    /// with a `counter`.
    pub fn rule_counters(&self, banks: &[&CounterBank]) -> Vec<(u64, u64, u64)> {
        self.image
            .rules()
            .filter_map(|v| {
                let id = v.counter? as usize;
                let (mut p, mut b) = (0, 0);
                for bank in banks {
                    if let Some(c) = bank.get(id) {
                        let (cp, cb) = c.get();
                        p += cp;
                        b += cb;
                    }
                }
                Some((v.handle, p, b))
            })
            .collect()
    }
}
