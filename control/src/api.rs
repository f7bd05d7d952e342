//! The management API: JSON requests and responses, and what each request does to the rule
//! store.
//!
//! The wire form is one JSON object per line (`server.rs` carries it over a Unix socket or
//! TCP): a [`Request`] in, a [`Response`] out; `monitor` turns the connection into a stream
//! of [`MonitorEvent`] lines. Requests are strict: unknown fields, unknown commands, bad
//! families, an oversized request or batch are refused with a clear error before anything is
//! touched; a batch is one [`Transaction`], so a bad rule anywhere in it changes nothing (the
//! error names the operation, and the line and column inside its text).
//!
//! [`Api::handle`] is a plain function of the request, the [`Committer`] and a
//! [`DataSource`] (what only the running dataplane knows: counters, conntrack), so every
//! request is tested without DPDK.
//!
//! Thread use: an [`Api`] lives on the control thread, next to the [`Committer`]; API threads
//! only parse ([`parse_request`]) and forward.

use crate::generation::{CommitError, Committed, Committer};
use crate::metrics::{CommitSnapshot, Exporter, Snapshot};
use crate::rules::{family_from_name, Family, Op, OpResult, Query, Transaction, TxnError};
use levee_conntrack::{DumpFilter, EntrySnapshot, L4State, TcpState};
use levee_filter_vm::incremental::Position;
use levee_filter_vm::nft::{self, ast, PrintOptions};
use levee_filter_vm::vm::CounterBank;
use levee_filter_vm::CompileError;
use levee_packet::parse::{FlowTuple, IpFamily};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;

/// Largest request line accepted (bytes, without the newline).
pub const MAX_REQUEST_BYTES: usize = 16 << 20;
/// Most operations one `commit` request may hold.
pub const MAX_BATCH_OPS: usize = 100_000;
/// Most conntrack entries one `conntrack` request returns (per worker).
pub const MAX_CONNTRACK_LIST: usize = 1_000_000;
/// Conntrack entries returned when a request names no `max`.
pub const DEFAULT_CONNTRACK_LIST: usize = 10_000;
/// Longest owner tag.
pub const MAX_OWNER_LEN: usize = 64;

/// Request limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request line, in bytes.
    pub max_request_bytes: usize,
    /// Most operations in one batch.
    pub max_ops: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: MAX_REQUEST_BYTES,
            max_ops: MAX_BATCH_OPS,
        }
    }
}

/// An nft family on the wire: `"ip"`, `"ip6"`, `"inet"`, `"netdev"`, `"bridge"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Fam(pub Family);

impl TryFrom<String> for Fam {
    type Error = String;
    fn try_from(s: String) -> Result<Fam, String> {
        family_from_name(&s)
            .map(Fam)
            .ok_or_else(|| format!("unknown family {s:?} (ip, ip6, inet, netdev, bridge)"))
    }
}

impl From<Fam> for String {
    fn from(f: Fam) -> String {
        family_str(f.0).to_owned()
    }
}

/// The nft name of a family.
pub fn family_str(f: Family) -> &'static str {
    match f {
        Family::Ip => "ip",
        Family::Ip6 => "ip6",
        Family::Inet => "inet",
        Family::Netdev => "netdev",
        Family::Bridge => "bridge",
    }
}

/// One operation of a `commit` batch (`"op": "add_rule"`, …).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum OpRequest {
    AddTable {
        family: Fam,
        name: String,
        #[serde(default)]
        comment: Option<String>,
        /// Fail if it exists.
        #[serde(default)]
        create: bool,
    },
    DeleteTable {
        family: Fam,
        name: String,
    },
    AddChain {
        family: Fam,
        table: String,
        name: String,
        /// The `{ type filter hook … }` block; none for a regular chain.
        #[serde(default)]
        spec: Option<String>,
        #[serde(default)]
        create: bool,
    },
    DeleteChain {
        family: Fam,
        table: String,
        name: String,
    },
    FlushChain {
        family: Fam,
        table: String,
        name: String,
    },
    AddSet {
        family: Fam,
        table: String,
        name: String,
        #[serde(default)]
        map: bool,
        spec: String,
        #[serde(default)]
        create: bool,
    },
    DeleteSet {
        family: Fam,
        table: String,
        name: String,
    },
    FlushSet {
        family: Fam,
        table: String,
        name: String,
    },
    AddElement {
        family: Fam,
        table: String,
        set: String,
        /// `{ e1, e2 }`.
        elements: String,
    },
    DeleteElement {
        family: Fam,
        table: String,
        set: String,
        elements: String,
    },
    /// `add rule`: appended, or after the rule with handle `position`, or before the rule at
    /// `index`.
    AddRule {
        family: Fam,
        table: String,
        chain: String,
        rule: String,
        #[serde(default)]
        position: Option<u64>,
        #[serde(default)]
        index: Option<usize>,
    },
    /// `insert rule`: at the head, or before the rule with handle `position`, or before the
    /// rule at `index`.
    InsertRule {
        family: Fam,
        table: String,
        chain: String,
        rule: String,
        #[serde(default)]
        position: Option<u64>,
        #[serde(default)]
        index: Option<usize>,
    },
    ReplaceRule {
        handle: u64,
        rule: String,
    },
    DeleteRule {
        handle: u64,
    },
    /// Appends the rule unless its chain has an equal one (same normalized text).
    EnsureRule {
        family: Fam,
        table: String,
        chain: String,
        rule: String,
    },
    /// A whole ruleset file. `flush`: replace everything first; when not given, the file
    /// decides (it does when it says `flush ruleset`, as with `nft -f`).
    Load {
        text: String,
        #[serde(default)]
        flush: Option<bool>,
    },
    FlushRuleset {},
}

/// What `list` lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListWhat {
    Ruleset,
    Table,
    Chain,
    Set,
}

/// Conntrack entries a `conntrack` request selects; every field given must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CtFilter {
    /// `ipv4` or `ipv6`.
    #[serde(default)]
    pub family: Option<String>,
    /// `tcp`, `udp`, `icmp`, `icmpv6` or a number.
    #[serde(default)]
    pub protocol: Option<String>,
    /// An address at either end.
    #[serde(default)]
    pub addr: Option<IpAddr>,
    /// A port at either end.
    #[serde(default)]
    pub port: Option<u16>,
    /// A TCP state (`ESTABLISHED`, `SYN_SENT`, …, any case) or `udp`, `icmp`, `generic`.
    #[serde(default)]
    pub state: Option<String>,
    /// ct mark (exact).
    #[serde(default)]
    pub mark: Option<u32>,
}

/// A request (`"cmd": "commit"`, …).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// A batch of operations, all or nothing.
    Commit {
        ops: Vec<OpRequest>,
        /// Owner tag for what the batch makes.
        #[serde(default)]
        owner: Option<String>,
        /// Refused unless this is the current generation.
        #[serde(default)]
        expected_generation: Option<u64>,
    },
    /// The ruleset or a part of it: `table`/`chain`/`set` need `family` and `table` (and
    /// `name` for a chain or set).
    List {
        what: ListWhat,
        #[serde(default)]
        family: Option<Fam>,
        #[serde(default)]
        table: Option<String>,
        #[serde(default)]
        name: Option<String>,
        /// `# handle N` comments in the text listing.
        #[serde(default)]
        handles: bool,
        /// nft's JSON form instead of text.
        #[serde(default)]
        json: bool,
    },
    /// Rules by owner, place and statements.
    Search {
        #[serde(default)]
        family: Option<Fam>,
        #[serde(default)]
        table: Option<String>,
        #[serde(default)]
        chain: Option<String>,
        #[serde(default)]
        owner: Option<String>,
        #[serde(default)]
        expr: Option<String>,
    },
    /// Rule counters read zero from now on (listings and searches; the workers' cells keep
    /// counting, the API subtracts).
    ResetCounters {},
    /// Every counter (the same numbers `/metrics` shows).
    Stats {},
    /// Conntrack entries.
    Conntrack {
        #[serde(default)]
        filter: CtFilter,
        /// Per worker (default 10,000).
        #[serde(default)]
        max: Option<usize>,
    },
    /// A stream of generation changes and conntrack events, one JSON line each.
    Monitor {},
}

/// Why a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Not JSON, an unknown command or field, a missing or wrong value.
    BadRequest,
    /// Over the request size or batch limit.
    TooLarge,
    /// Built against an older generation.
    Conflict,
    /// An operation failed (see `op_index`, `line`, `col`).
    Rejected,
    /// The resulting ruleset fails verification.
    Verify,
    /// Published, but a worker did not pick it up in time.
    Timeout,
    /// What the request names does not exist.
    NotFound,
    /// The dataplane could not answer.
    Unavailable,
}

/// An error response's details.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
    /// The failed operation (0-based), for `rejected`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op_index: Option<usize>,
    /// Line and column in the operation's text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub col: Option<u32>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            message: message.into(),
            op_index: None,
            line: None,
            col: None,
        }
    }

    fn compile(kind: ErrorKind, e: CompileError) -> ApiError {
        let mut a = ApiError::new(kind, e.to_string());
        if e.line > 0 {
            a.line = Some(e.line);
            a.col = Some(e.col);
        }
        a
    }
}

impl From<TxnError> for ApiError {
    fn from(e: TxnError) -> ApiError {
        let message = e.to_string();
        match e {
            TxnError::Conflict { .. } => ApiError::new(ErrorKind::Conflict, message),
            TxnError::TooLarge { .. } => ApiError::new(ErrorKind::TooLarge, message),
            TxnError::Verify(_) => ApiError::new(ErrorKind::Verify, message),
            TxnError::Op { index, line, col, .. } => ApiError {
                kind: ErrorKind::Rejected,
                message,
                op_index: Some(index),
                line: (line > 0).then_some(line),
                col: (line > 0).then_some(col),
            },
        }
    }
}

impl From<CommitError> for ApiError {
    fn from(e: CommitError) -> ApiError {
        match e {
            CommitError::Txn(t) => t.into(),
            t @ CommitError::Timeout { .. } => ApiError::new(ErrorKind::Timeout, t.to_string()),
        }
    }
}

/// One response line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    /// The current generation once the request was handled.
    pub generation: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}

impl Response {
    pub fn ok(generation: u64, result: Value) -> Response {
        Response {
            ok: true,
            generation,
            result: Some(result),
            error: None,
        }
    }

    pub fn err(generation: u64, e: ApiError) -> Response {
        Response {
            ok: false,
            generation,
            result: None,
            error: Some(e),
        }
    }

    /// The response as one line (no newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("responses serialize")
    }
}

/// One line of a `monitor` stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum MonitorEvent {
    /// A commit published a new generation.
    Generation {
        generation: u64,
        #[serde(default)]
        owner: Option<String>,
        /// What the batch did (`add rule inet t input`, …).
        ops: Vec<String>,
    },
    /// A conntrack event.
    Conntrack {
        /// `new`, `update`, `destroy`.
        kind: String,
        /// Why it was destroyed (`expired`, `reset`, …).
        #[serde(default)]
        reason: Option<String>,
        protocol: String,
        src: String,
        dst: String,
        sport: u16,
        dport: u16,
        state: String,
        mark: u32,
    },
    /// Events this subscriber missed because it read too slowly.
    Dropped { count: u64 },
}

impl MonitorEvent {
    /// The event for a conntrack event.
    pub fn from_conntrack(ev: &levee_conntrack::Event) -> MonitorEvent {
        use levee_conntrack::EventKind;
        let (kind, reason) = match ev.kind {
            EventKind::New => ("new", None),
            EventKind::Update => ("update", None),
            EventKind::Destroy(r) => ("destroy", Some(format!("{r:?}").to_lowercase())),
        };
        let t = &ev.tuple;
        MonitorEvent::Conntrack {
            kind: kind.into(),
            reason,
            protocol: protocol_name(t.protocol),
            src: t.src_ip().to_string(),
            dst: t.dst_ip().to_string(),
            sport: t.src_port,
            dport: t.dst_port,
            state: state_name(ev.l4),
            mark: ev.mark,
        }
    }

    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("events serialize")
    }
}

fn protocol_name(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        1 => "icmp".into(),
        58 => "icmpv6".into(),
        p => p.to_string(),
    }
}

fn state_name(l4: L4State) -> String {
    match l4 {
        L4State::Tcp(s) => s.name().to_owned(),
        L4State::Udp => "UDP".into(),
        L4State::Icmp => "ICMP".into(),
        L4State::Generic => "GENERIC".into(),
    }
}

/// What only the running dataplane knows.
pub trait DataSource {
    /// Every counter (ports, workers, conntrack); the API fills in the generation and commit
    /// fields.
    fn snapshot(&self) -> Snapshot;
    /// Each worker's rule counter bank.
    fn counter_banks(&self) -> Vec<CounterBank>;
    /// Conntrack entries matching `filter`, at most `max` per worker.
    fn conntrack_list(&self, filter: DumpFilter, max: usize) -> Result<Vec<EntrySnapshot>, String>;
}

/// A dataplane with nothing in it (tests, tools).
#[derive(Clone, Debug, Default)]
pub struct NoData;

impl DataSource for NoData {
    fn snapshot(&self) -> Snapshot {
        Snapshot::default()
    }
    fn counter_banks(&self) -> Vec<CounterBank> {
        Vec::new()
    }
    fn conntrack_list(&self, _: DumpFilter, _: usize) -> Result<Vec<EntrySnapshot>, String> {
        Err("conntrack is not running".into())
    }
}

/// Whether a ruleset file empties the ruleset first: it has a `flush ruleset` command (after
/// which nothing declared before it counts, the running ruleset included).
pub fn file_flushes_ruleset(text: &str) -> bool {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.split(';'))
        .any(|cmd| {
            let mut w = cmd.split_whitespace();
            w.next() == Some("flush") && w.next() == Some("ruleset") && w.next().is_none()
        })
}

/// Parses one request line, enforcing `limits` (size, batch length, owner tag).
pub fn parse_request(line: &[u8], limits: &Limits) -> Result<Request, ApiError> {
    if line.len() > limits.max_request_bytes {
        return Err(ApiError::new(
            ErrorKind::TooLarge,
            format!(
                "request of {} bytes; at most {} bytes",
                line.len(),
                limits.max_request_bytes
            ),
        ));
    }
    let req: Request = serde_json::from_slice(line).map_err(|e| {
        ApiError::new(
            ErrorKind::BadRequest,
            format!("bad request: {}", explain(line, &e)),
        )
    })?;
    if let Request::Commit { ops, owner, .. } = &req {
        if ops.len() > limits.max_ops {
            return Err(ApiError::new(
                ErrorKind::TooLarge,
                format!(
                    "{} operations in one batch; at most {}",
                    ops.len(),
                    limits.max_ops
                ),
            ));
        }
        if ops.is_empty() {
            return Err(ApiError::new(ErrorKind::BadRequest, "empty batch: no operations"));
        }
        if let Some(o) = owner {
            check_owner(o)?;
        }
    }
    Ok(req)
}

/// Most fields of a bad operation [`explain`] tries one by one.
const MAX_FIELDS_SEARCHED: usize = 32;

/// The reason a request line did not parse. For a commit batch whose operation is at fault,
/// which one and, where one field is, which field: serde reads an operation (an internally
/// tagged enum) from a buffer, and its own message then names neither.
///
/// The field is found by elimination: without the culprit, the operation parses or lacks just
/// that field; without any other field, the culprit still fails it. A missing field is named
/// by serde already, so that case is left as it is.
fn explain(line: &[u8], e: &serde_json::Error) -> String {
    use serde_json::Value;
    let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(line) else {
        return e.to_string();
    };
    let Some(Value::Array(ops)) = req.get("ops") else {
        return e.to_string();
    };
    for (i, op) in ops.iter().enumerate() {
        let Err(why) = serde_json::from_value::<OpRequest>(op.clone()) else {
            continue;
        };
        let why = why.to_string();
        let name = op
            .get("op")
            .and_then(Value::as_str)
            .map(|s| format!(" ({s})"))
            .unwrap_or_default();
        let field = match op.as_object() {
            // Real operations have a handful of fields; a request of thousands of junk keys
            // is not searched (each try parses the operation again).
            Some(o) if !why.starts_with("missing field") && o.len() <= MAX_FIELDS_SEARCHED => {
                o.keys().filter(|k| *k != "op").find(|k| {
                    let mut fewer = o.clone();
                    fewer.remove(*k);
                    match serde_json::from_value::<OpRequest>(Value::Object(fewer)) {
                        Ok(_) => true,
                        Err(e) => e.to_string() == format!("missing field `{k}`"),
                    }
                })
            }
            _ => None,
        };
        return match field {
            Some(k) => format!("operation {i}{name}, field `{k}`: {why}"),
            None => format!("operation {i}{name}: {why}"),
        };
    }
    e.to_string()
}

fn check_owner(o: &str) -> Result<(), ApiError> {
    if o.is_empty() || o.len() > MAX_OWNER_LEN || !o.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::new(
            ErrorKind::BadRequest,
            format!("owner tag {o:?} must be 1 to {MAX_OWNER_LEN} printable ASCII characters without spaces"),
        ));
    }
    Ok(())
}

/// The store operation for a wire operation.
pub fn to_op(op: OpRequest) -> Result<Op, ApiError> {
    let position = |insert: bool, handle: Option<u64>, index: Option<usize>| match (handle, index) {
        (Some(_), Some(_)) => Err(ApiError::new(
            ErrorKind::BadRequest,
            "give either position (a handle) or index, not both",
        )),
        (Some(h), None) if insert => Ok(Position::Before(h)),
        (Some(h), None) => Ok(Position::After(h)),
        (None, Some(i)) => Ok(Position::Index(i)),
        (None, None) if insert => Ok(Position::Prepend),
        (None, None) => Ok(Position::Append),
    };
    Ok(match op {
        OpRequest::AddTable {
            family,
            name,
            comment,
            create,
        } => Op::AddTable {
            family: family.0,
            name,
            comment,
            create,
        },
        OpRequest::DeleteTable { family, name } => Op::DeleteTable {
            family: family.0,
            name,
        },
        OpRequest::AddChain {
            family,
            table,
            name,
            spec,
            create,
        } => Op::AddChain {
            family: family.0,
            table,
            name,
            spec,
            create,
        },
        OpRequest::DeleteChain { family, table, name } => Op::DeleteChain {
            family: family.0,
            table,
            name,
        },
        OpRequest::FlushChain { family, table, name } => Op::FlushChain {
            family: family.0,
            table,
            name,
        },
        OpRequest::AddSet {
            family,
            table,
            name,
            map,
            spec,
            create,
        } => Op::AddSet {
            family: family.0,
            table,
            name,
            map,
            spec,
            create,
        },
        OpRequest::DeleteSet { family, table, name } => Op::DeleteSet {
            family: family.0,
            table,
            name,
        },
        OpRequest::FlushSet { family, table, name } => Op::FlushSet {
            family: family.0,
            table,
            name,
        },
        OpRequest::AddElement {
            family,
            table,
            set,
            elements,
        } => Op::AddElements {
            family: family.0,
            table,
            set,
            elements,
        },
        OpRequest::DeleteElement {
            family,
            table,
            set,
            elements,
        } => Op::DeleteElements {
            family: family.0,
            table,
            set,
            elements,
        },
        OpRequest::AddRule {
            family,
            table,
            chain,
            rule,
            position: p,
            index,
        } => Op::AddRule {
            family: family.0,
            table,
            chain,
            position: position(false, p, index)?,
            rule,
        },
        OpRequest::InsertRule {
            family,
            table,
            chain,
            rule,
            position: p,
            index,
        } => Op::AddRule {
            family: family.0,
            table,
            chain,
            position: position(true, p, index)?,
            rule,
        },
        OpRequest::ReplaceRule { handle, rule } => Op::ReplaceRule { handle, rule },
        OpRequest::DeleteRule { handle } => Op::DeleteRule { handle },
        OpRequest::EnsureRule {
            family,
            table,
            chain,
            rule,
        } => Op::EnsureRule {
            family: family.0,
            table,
            chain,
            position: Position::Append,
            rule,
        },
        OpRequest::Load { flush, text } => Op::Load {
            flush: flush.unwrap_or_else(|| file_flushes_ruleset(&text)),
            text,
        },
        OpRequest::FlushRuleset {} => Op::FlushRuleset,
    })
}

fn op_result_json(r: &OpResult) -> Value {
    match r {
        OpResult::Done => json!({}),
        OpResult::Rule { handle, added } => json!({ "handle": handle, "added": added }),
        OpResult::Rules(hs) => json!({ "handles": hs }),
    }
}

/// The control thread's request handler (see the module docs).
pub struct Api {
    limits: Limits,
    /// Rule handle → counter values (packets, bytes) at the last `reset_counters`.
    baselines: HashMap<u64, (u64, u64)>,
    exporter: Exporter,
    /// Generation changes not yet sent to monitors.
    events: Vec<MonitorEvent>,
}

impl Api {
    pub fn new(limits: Limits) -> Api {
        Api {
            limits,
            baselines: HashMap::new(),
            exporter: Exporter::new(),
            events: Vec::new(),
        }
    }

    /// The limits requests are checked against.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Parses and handles one request line.
    pub fn handle_line(&mut self, line: &[u8], c: &mut Committer, data: &dyn DataSource) -> Response {
        match parse_request(line, &self.limits) {
            Ok(req) => self.handle(req, c, data),
            Err(e) => Response::err(c.generation(), e),
        }
    }

    /// Handles one parsed request.
    pub fn handle(&mut self, req: Request, c: &mut Committer, data: &dyn DataSource) -> Response {
        let out = self.dispatch(req, c, data);
        match out {
            Ok(v) => Response::ok(c.generation(), v),
            Err(e) => Response::err(c.generation(), e),
        }
    }

    fn dispatch(
        &mut self,
        req: Request,
        c: &mut Committer,
        data: &dyn DataSource,
    ) -> Result<Value, ApiError> {
        match req {
            Request::Commit {
                ops,
                owner,
                expected_generation,
            } => {
                if ops.len() > self.limits.max_ops {
                    return Err(ApiError::new(
                        ErrorKind::TooLarge,
                        format!(
                            "{} operations in one batch; at most {}",
                            ops.len(),
                            self.limits.max_ops
                        ),
                    ));
                }
                if let Some(o) = &owner {
                    check_owner(o)?;
                }
                let ops = ops.into_iter().map(to_op).collect::<Result<Vec<_>, _>>()?;
                let txn = Transaction {
                    ops,
                    owner,
                    expected_generation,
                };
                let done = self.commit(&txn, c)?;
                Ok(json!({
                    "results": done.results.iter().map(op_result_json).collect::<Vec<_>>(),
                    "latency_us": done.latency.as_micros() as u64,
                }))
            }
            Request::List {
                what,
                family,
                table,
                name,
                handles,
                json,
            } => self.list(c, data, what, family, table, name, handles, json),
            Request::Search {
                family,
                table,
                chain,
                owner,
                expr,
            } => {
                let q = Query {
                    family: family.map(|f| f.0),
                    table,
                    chain,
                    owner,
                    expr,
                };
                let found = c
                    .store()
                    .search(&q)
                    .map_err(|e| ApiError::compile(ErrorKind::BadRequest, e))?;
                let rules: Vec<Value> = found
                    .iter()
                    .map(|r| {
                        json!({
                            "handle": r.handle,
                            "family": family_str(r.family),
                            "table": r.table,
                            "chain": r.chain,
                            "index": r.index,
                            "owner": r.owner,
                            "rule": r.text,
                        })
                    })
                    .collect();
                Ok(json!({ "rules": rules }))
            }
            Request::ResetCounters {} => {
                let live = c
                    .store()
                    .rule_counters(&data.counter_banks().iter().collect::<Vec<_>>());
                let initial = initial_counters(c);
                self.baselines = live
                    .into_iter()
                    .map(|(h, p, b)| {
                        let (ip, ib) = initial.get(&h).copied().unwrap_or_default();
                        (h, (p + ip, b + ib))
                    })
                    .collect();
                Ok(json!({ "reset": self.baselines.len() }))
            }
            Request::Stats {} => {
                let s = self.snapshot(c, data);
                serde_json::to_value(&s).map_err(|e| ApiError::new(ErrorKind::Unavailable, e.to_string()))
            }
            Request::Conntrack { filter, max } => {
                let max = max.unwrap_or(DEFAULT_CONNTRACK_LIST);
                if max > MAX_CONNTRACK_LIST {
                    return Err(ApiError::new(
                        ErrorKind::TooLarge,
                        format!("max {max}: at most {MAX_CONNTRACK_LIST} entries per worker"),
                    ));
                }
                let f = dump_filter(&filter)?;
                let entries = data
                    .conntrack_list(f, max)
                    .map_err(|e| ApiError::new(ErrorKind::Unavailable, e))?;
                Ok(json!({ "entries": entries.iter().map(entry_json).collect::<Vec<_>>() }))
            }
            Request::Monitor {} => Ok(json!({ "monitoring": true })),
        }
    }

    /// Commits `txn` (API requests and ruleset reloads), records its latency and queues the
    /// generation event for monitors.
    pub fn commit(&mut self, txn: &Transaction, c: &mut Committer) -> Result<Committed, ApiError> {
        let before = c.generation();
        let r = c.commit(txn);
        let published = c.generation();
        if published != before {
            self.events.push(MonitorEvent::Generation {
                generation: published,
                owner: txn.owner.clone(),
                ops: txn.ops.iter().take(100).map(Op::describe).collect(),
            });
        }
        match r {
            Ok(done) => {
                self.exporter.observe_commit(done.latency);
                Ok(done)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Generation events since the last call (for monitors).
    pub fn take_events(&mut self) -> Vec<MonitorEvent> {
        std::mem::take(&mut self.events)
    }

    /// The full snapshot: the dataplane's counters plus the generation and commit counters.
    pub fn snapshot(&self, c: &Committer, data: &dyn DataSource) -> Snapshot {
        let mut s = data.snapshot();
        s.generation = c.generation();
        s.rules = c.store().rule_count() as u64;
        s.named_counters = named_counters(c, &data.counter_banks());
        let m = c.metrics();
        let ld = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        s.commits = CommitSnapshot {
            published: ld(&m.commits),
            refused: ld(&m.refused),
            timeouts: ld(&m.timeouts),
            last_ns: ld(&m.last_ns),
            max_ns: ld(&m.max_ns),
            total_ns: ld(&m.total_ns),
        };
        s
    }

    /// The `/metrics` page.
    pub fn metrics_text(&self, c: &Committer, data: &dyn DataSource) -> String {
        self.exporter.render(&self.snapshot(c, data))
    }

    #[allow(clippy::too_many_arguments)]
    fn list(
        &self,
        c: &Committer,
        data: &dyn DataSource,
        what: ListWhat,
        family: Option<Fam>,
        table: Option<String>,
        name: Option<String>,
        handles: bool,
        json: bool,
    ) -> Result<Value, ApiError> {
        let store = c.store();
        let need = |v: Option<String>, what: &str| {
            v.ok_or_else(|| ApiError::new(ErrorKind::BadRequest, format!("list needs `{what}`")))
        };
        let not_found = |e: CompileError| ApiError::compile(ErrorKind::NotFound, e);
        let mut rs = match what {
            ListWhat::Ruleset => {
                if family.is_some() || table.is_some() || name.is_some() {
                    return Err(ApiError::new(
                        ErrorKind::BadRequest,
                        "list ruleset takes no family, table or name",
                    ));
                }
                store.image().to_ruleset()
            }
            ListWhat::Table | ListWhat::Chain | ListWhat::Set => {
                let family = family
                    .ok_or_else(|| ApiError::new(ErrorKind::BadRequest, "list needs `family`"))?
                    .0;
                let table = need(table, "table")?;
                let mut t = store.image().table_tree(family, &table).map_err(not_found)?;
                match what {
                    ListWhat::Table => {
                        if name.is_some() {
                            return Err(ApiError::new(ErrorKind::BadRequest, "list table takes no name"));
                        }
                    }
                    ListWhat::Chain => {
                        let chain = need(name, "name")?;
                        t.sets.clear();
                        t.chains.retain(|ch| ch.name == chain);
                        if t.chains.is_empty() {
                            return Err(ApiError::new(
                                ErrorKind::NotFound,
                                format!("chain '{chain}' does not exist in table '{table}'"),
                            ));
                        }
                    }
                    _ => {
                        let set = need(name, "name")?;
                        t.chains.clear();
                        t.sets.retain(|s| s.name == set);
                        if t.sets.is_empty() {
                            return Err(ApiError::new(
                                ErrorKind::NotFound,
                                format!("set '{set}' does not exist in table '{table}'"),
                            ));
                        }
                    }
                }
                ast::Ruleset { tables: vec![t] }
            }
        };
        self.fill_counters(c, data, &mut rs);
        Ok(if json {
            nft::ruleset_json(&rs)
        } else {
            json!({ "text": nft::print_ruleset_with(&rs, PrintOptions { handles }) })
        })
    }

    /// Writes the live counter values (summed over workers, less the last reset) into the
    /// `counter` statements of `rs`.
    fn fill_counters(&self, c: &Committer, data: &dyn DataSource, rs: &mut ast::Ruleset) {
        let banks = data.counter_banks();
        if banks.is_empty() && self.baselines.is_empty() {
            return;
        }
        let live: HashMap<u64, (u64, u64)> = c
            .store()
            .rule_counters(&banks.iter().collect::<Vec<_>>())
            .into_iter()
            .map(|(h, p, b)| (h, (p, b)))
            .collect();
        for rule in rs
            .tables
            .iter_mut()
            .flat_map(|t| &mut t.chains)
            .flat_map(|ch| &mut ch.rules)
        {
            let Some(h) = rule.handle else { continue };
            let (lp, lb) = live.get(&h).copied().unwrap_or_default();
            let (bp, bb) = self.baselines.get(&h).copied().unwrap_or_default();
            for s in &mut rule.stmts {
                if let ast::Stmt::Counter(ctr) = s {
                    ctr.packets = (ctr.packets + lp).saturating_sub(bp);
                    ctr.bytes = (ctr.bytes + lb).saturating_sub(bb);
                }
            }
        }
    }
}

/// The `counter packets N bytes M` values rules were written with.
fn initial_counters(c: &Committer) -> HashMap<u64, (u64, u64)> {
    c.store()
        .image()
        .rules()
        .filter_map(|v| {
            v.rule.stmts.iter().find_map(|s| match s {
                ast::Stmt::Counter(ctr) => Some((v.handle, (ctr.packets, ctr.bytes))),
                _ => None,
            })
        })
        .collect()
}

fn bad(msg: String) -> ApiError {
    ApiError::new(ErrorKind::BadRequest, msg)
}

/// The conntrack dump filter for a wire filter.
pub fn dump_filter(f: &CtFilter) -> Result<DumpFilter, ApiError> {
    let family = match f.family.as_deref() {
        None => None,
        Some("ipv4") | Some("ip") => Some(IpFamily::V4),
        Some("ipv6") | Some("ip6") => Some(IpFamily::V6),
        Some(x) => return Err(bad(format!("unknown family {x:?} (ipv4, ipv6)"))),
    };
    let protocol = match f.protocol.as_deref() {
        None => None,
        Some("tcp") => Some(6),
        Some("udp") => Some(17),
        Some("icmp") => Some(1),
        Some("icmpv6") => Some(58),
        Some(x) => Some(
            x.parse::<u8>()
                .map_err(|_| bad(format!("unknown protocol {x:?} (tcp, udp, icmp, icmpv6, 0-255)")))?,
        ),
    };
    let state =
        match f.state.as_deref() {
            None => None,
            Some(s) => {
                let up = s.to_ascii_uppercase();
                Some(match up.as_str() {
                    "UDP" => L4State::Udp,
                    "ICMP" => L4State::Icmp,
                    "GENERIC" => L4State::Generic,
                    _ => L4State::Tcp(TcpState::ALL.into_iter().find(|t| t.name() == up).ok_or_else(
                        || {
                            bad(format!(
                                "unknown state {s:?} (a TCP state such as ESTABLISHED, or udp, icmp, generic)"
                            ))
                        },
                    )?),
                })
            }
        };
    Ok(DumpFilter {
        family,
        protocol,
        addr: f.addr,
        port: f.port,
        state,
        mark: f.mark.map(|m| (m, u32::MAX)),
    })
}

fn tuple_json(t: &FlowTuple) -> Value {
    json!({
        "src": t.src_ip().to_string(),
        "dst": t.dst_ip().to_string(),
        "sport": t.src_port,
        "dport": t.dst_port,
    })
}

/// A conntrack entry on the wire.
pub fn entry_json(e: &EntrySnapshot) -> Value {
    use levee_conntrack::status as Status;
    let mut flags = Vec::new();
    if e.status & Status::ASSURED != 0 {
        flags.push("ASSURED");
    }
    if e.status & Status::SEEN_REPLY == 0 {
        flags.push("UNREPLIED");
    }
    json!({
        "id": e.id.index(),
        "family": match e.original.family { IpFamily::V4 => "ipv4", IpFamily::V6 => "ipv6" },
        "protocol": protocol_name(e.original.protocol),
        "protonum": e.original.protocol,
        "state": state_name(e.l4),
        "original": tuple_json(&e.original),
        "reply": tuple_json(&e.reply),
        "status": e.status,
        "flags": flags,
        "mark": e.mark,
        "label": format!("{:#x}", e.label),
        "expires_ms": e.expires_in_ms,
    })
}

/// Counters of rules that carry a `comment` (the metrics' named counters), summed over the
/// workers' banks; rules of one chain with the same comment are added together.
fn named_counters(
    c: &Committer,
    banks: &[levee_filter_vm::vm::CounterBank],
) -> Vec<crate::metrics::NamedCounter> {
    let mut out: Vec<crate::metrics::NamedCounter> = Vec::new();
    for v in c.store().image().rules() {
        let (Some(id), Some(name)) = (v.counter, v.rule.comment.as_ref()) else {
            continue;
        };
        let (mut p, mut b) = (0, 0);
        for bank in banks {
            if let Some(cell) = bank.get(id as usize) {
                let (cp, cb) = cell.get();
                p += cp;
                b += cb;
            }
        }
        match out
            .iter_mut()
            .find(|n| n.table == v.table && n.chain == v.chain && &n.name == name)
        {
            Some(n) => {
                n.packets += p;
                n.bytes += b;
            }
            None => out.push(crate::metrics::NamedCounter {
                table: v.table.to_owned(),
                chain: v.chain.to_owned(),
                name: name.clone(),
                packets: p,
                bytes: b,
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests;
