//! The abstract syntax tree of levee's nft rule language: plain data, produced by
//! [`crate::nft::parse_ruleset`], consumed by the printer, the JSON writer and the compiler.
//!
//! The tree is the *resulting state* of a ruleset file, not its command list: `flush ruleset`,
//! `add table`/`add chain`/`add rule`/`add element` and repeated `table` blocks are applied while
//! parsing, so a file and its normalized listing produce equal trees.
//!
//! Values are resolved while parsing: symbolic names (`ssh`, `tcp`, `syn`, `established`,
//! `echo-request`, …) become numbers, addresses become `std::net` types, prefixes are masked,
//! and every number has been checked against the width of the field it is compared with. The
//! type of a constant is therefore never stored next to it: it is the [`DataType`] of the
//! expression on the other side (see [`Expr::data_type`]), which is also how the printer picks
//! the spelling back.
//!
//! Equality ignores source positions ([`Span`] compares equal to every other span), so two
//! trees are equal exactly when they describe the same ruleset.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// A position in the source text (1-based line and column, columns counted in characters).
///
/// Invariant: every `Span` compares equal to every other, so deriving `PartialEq` on the tree
/// gives equality of meaning, not of layout. Use the fields directly when the position matters.
#[derive(Debug, Clone, Copy, Default, Eq)]
pub struct Span {
    /// 1-based line; 0 for nodes built in code rather than parsed.
    pub line: u32,
    /// 1-based column in characters; 0 for nodes built in code.
    pub col: u32,
}

impl PartialEq for Span {
    fn eq(&self, _other: &Span) -> bool {
        // Positions are layout, not meaning: a listing re-parsed must equal the original.
        true
    }
}

/// A whole ruleset: what `list ruleset` shows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ruleset {
    /// Tables in the order they were first declared.
    pub tables: Vec<Table>,
}

/// The address family of a table (`table <family> <name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// `ip`: IPv4 (the default when a command omits the family).
    Ip,
    /// `ip6`
    Ip6,
    /// `inet`: IPv4 and IPv6.
    Inet,
    /// `netdev`: ingress on a device, before the stack.
    Netdev,
    /// `bridge`
    Bridge,
}

/// `table <family> <name> { … }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub family: Family,
    pub name: String,
    /// `comment "…"` inside the table block.
    pub comment: Option<String>,
    /// Named sets and maps (a map is a [`Set`] whose `data` is `Some`), in declaration order.
    pub sets: Vec<Set>,
    /// Chains in declaration order.
    pub chains: Vec<Chain>,
    /// Where the table was first declared.
    pub span: Span,
}

/// `chain <name> { … }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    /// `Some` for a base chain (`type filter hook … priority …;`), `None` for a regular chain
    /// that is only entered by `jump`/`goto`.
    pub base: Option<BaseChain>,
    /// `comment "…"` inside the chain block.
    pub comment: Option<String>,
    /// Rules in evaluation order.
    pub rules: Vec<Rule>,
    /// Where the chain was first declared.
    pub span: Span,
}

/// The `type … hook … [device …] priority …; [policy …;]` line of a base chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChain {
    pub chain_type: ChainType,
    pub hook: Hook,
    /// `device "NAME"` (netdev/inet ingress only).
    pub device: Option<String>,
    /// The resolved priority: standard names (`filter`, `raw - 10`, …) are turned into numbers
    /// using the table's family (bridge has its own set of names).
    pub priority: i32,
    /// The chain policy; nft's default `accept` when none was written.
    pub policy: Policy,
}

/// The chain type. Only `filter` chains exist in levee (no NAT, no rerouting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChainType {
    Filter,
}

/// A netfilter hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
    Ingress,
}

/// A base chain's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Policy {
    Accept,
    Drop,
}

/// One rule: statements evaluated left to right until one does not match or a verdict ends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The rule handle, when known (assigned by the control plane; `None` when parsed).
    pub handle: Option<u64>,
    /// The statements in order. Invariant: a terminal statement ([`Stmt::Verdict`],
    /// [`Stmt::Vmap`], [`Stmt::Reject`]) can only be last.
    pub stmts: Vec<Stmt>,
    /// `comment "…"` at the end of the rule.
    pub comment: Option<String>,
    /// Where the rule starts.
    pub span: Span,
    /// Where each statement starts: `stmt_spans[i]` belongs to `stmts[i]`. May be empty for
    /// rules built in code; never longer than `stmts`.
    pub stmt_spans: Vec<Span>,
}

/// A statement: one element of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stmt {
    /// A match (`tcp dport 22`, `ip saddr @blocklist`, `ct state established,related`, …).
    Match(Match),
    /// `counter [packets N bytes M]`.
    Counter(Counter),
    /// `limit rate [over] …`.
    Limit(Limit),
    /// `quota [over|until] N unit [used N unit]`.
    Quota(Quota),
    /// `log [prefix "…"] [level L]`.
    Log(Log),
    /// `reject [with …]` (terminal).
    Reject(Reject),
    /// `synproxy [mss N] [wscale N] [timestamp] [sack-perm]`.
    Synproxy(Synproxy),
    /// `notrack`.
    Notrack,
    /// `meta mark set EXPR` (also the bare `mark set EXPR`). `key` is [`MetaKey::Mark`].
    MetaSet { key: MetaKey, value: Expr },
    /// `ct mark set EXPR` / `ct label set NAME|N`. `key` is [`CtKey::Mark`] or [`CtKey::Label`].
    CtSet { key: CtKey, value: Expr },
    /// `FIELD set VALUE` for a header field on whole bytes (`ip ttl set 63`, `tcp dport set
    /// 8080`, `ip saddr set 198.18.0.9`): rewrites the packet, fixing checksums.
    PayloadSet { field: Payload, value: Expr },
    /// `add @set { KEY … }` / `update @set { KEY … }`: a meter in today's syntax.
    Dynset(Dynset),
    /// The legacy `meter NAME [size N] { KEY … }` form.
    Meter(Meter),
    /// `KEY vmap { … }` / `KEY vmap @name` (terminal).
    Vmap { key: Expr, map: SetRef },
    /// A verdict (terminal).
    Verdict(Verdict),
}

/// A comparison `left OP right`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub left: Expr,
    pub op: RelOp,
    pub right: Rhs,
}

/// The relational operator of a [`Match`].
///
/// Normalization: `==` is turned into [`RelOp::Implicit`] wherever the two mean the same, so
/// [`RelOp::Eq`] survives only where they differ: a bitmask left side (`tcp flags`,
/// `ct state`, `ct status`, or a bitwise expression over one) compared with a single constant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelOp {
    /// No operator written. Means equality (or membership for sets, ranges and prefixes),
    /// except for a bitmask left side compared with a constant, where it is nft's flag test:
    /// true when any bit of the constant is set in the left side (`tcp flags syn`,
    /// `ct state established,related`).
    Implicit,
    /// `==` / `eq` on a bitmask left side: exact equality (`tcp flags & (syn | ack) == syn`).
    Eq,
    /// `!=` / `ne`: exact inequality, or non-membership for sets, ranges and prefixes.
    Ne,
    /// `<` / `lt` (unsigned, in the field's network order).
    Lt,
    /// `<=` / `le`.
    Le,
    /// `>` / `gt`.
    Gt,
    /// `>=` / `ge`.
    Ge,
}

/// The right-hand side of a [`Match`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rhs {
    /// A constant: value, prefix, range, or a concatenation of those.
    Const(Const),
    /// A set: anonymous `{ … }` or named `@name`.
    Set(SetRef),
    /// **levee extension, rejected by nft**: a register-to-register comparison with another
    /// packet expression, e.g. `tcp sport == tcp dport`. Always written with an explicit
    /// operator (`op` is never [`RelOp::Implicit`] here), and both sides have the same width.
    Expr(Expr),
}

/// A set used by a rule: inline (anonymous) or a reference to a named set/map of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetRef {
    /// `{ e1, e2, … }` written in the rule.
    Anonymous(Vec<SetElem>),
    /// `@name`.
    Named(String),
}

/// A constant key or value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Const {
    /// A single value.
    Value(Value),
    /// `ADDR/LEN`, an IPv4 or IPv6 prefix. Invariant: `addr` has no bits set beyond `len`, and
    /// `len` is below the address width (a full-length prefix is stored as a plain value).
    Prefix { addr: Value, len: u8 },
    /// `LOW-HIGH`, inclusive. Invariant: `low <= high`, both of the same kind.
    Range { low: Value, high: Value },
    /// `a . b . c` for a concatenated key. Invariant: two or more parts, none of them `Concat`.
    Concat(Vec<Const>),
}

/// A single resolved value. Its [`DataType`] comes from the expression it is compared with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Value {
    /// Every numeric type, including resolved symbols: ports, protocol numbers, TCP flag and
    /// ct state bitmasks, ICMP types and codes, marks, ethertypes, days (0 = Sunday), hours
    /// (seconds since midnight), times (seconds since the Unix epoch, UTC), durations
    /// (milliseconds, for `ct expiration`), interface indexes, ct label bit numbers.
    Int(u64),
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
    /// An Ethernet address.
    Ether([u8; 6]),
    /// A string: interface names (`iifname "eth0"`, `iif "eth0"` before resolution, may end in
    /// `*` for a wildcard) and ct label names.
    Str(String),
}

/// One element of a set or map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetElem {
    /// The key (value, prefix, range or concatenation).
    pub key: Const,
    /// `timeout T` of this element (sets with `flags timeout`).
    pub timeout: Option<Duration>,
    /// `expires T`: time left, as listed by nft.
    pub expires: Option<Duration>,
    /// `counter packets N bytes M` of this element. Normalized: `Some` (zero if not written)
    /// for every element of a set declared with `counter;`.
    pub counter: Option<Counter>,
    /// `comment "…"` of this element.
    pub comment: Option<String>,
    /// For maps: the value after `:`.
    pub data: Option<ElemData>,
}

/// The data half of a map element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElemData {
    /// A verdict (`22 : accept`), in verdict maps.
    Verdict(Verdict),
    /// A constant of the map's data type (`10.0.0.1 : 0x00000001`).
    Const(Const),
}

/// An expression that produces a value from the packet or its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// A header field (`ip saddr`, `tcp dport`, …).
    Payload(Payload),
    /// `meta KEY` or its bare form.
    Meta(MetaKey),
    /// `ct KEY`.
    Ct(CtKey),
    /// `a . b . c`. Invariant: two or more parts, none of them `Concat`.
    Concat(Vec<Expr>),
    /// `expr & v`, `expr | v`, `expr ^ v`, `expr << n`, `expr >> n` with a constant operand.
    Bitwise {
        expr: Box<Expr>,
        op: BitOp,
        value: Value,
    },
    /// `KEY map { … }` / `KEY map @name`: the data of the element matching KEY.
    Map { key: Box<Expr>, map: SetRef },
    /// A raw payload `@ll|nh|th,OFFSET,LEN`: `len` bits starting `offset` bits into the link,
    /// network or transport header. Its value is an integer of `len` bits (see
    /// [`Expr::data_type`]); unlike a named field it implies no protocol check.
    /// Invariant (checked by the parser): `1 <= len <= 64` and the field ends within the
    /// first 65535 bytes of its header.
    Raw { base: HeaderBase, offset: u32, len: u32 },
    /// A constant, only as the value of `meta mark set` / `ct mark set` / `ct label set`
    /// (never as the left side of a match).
    Const(Value),
}

/// A bitwise operator with a constant operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BitOp {
    /// `&` / `and`
    And,
    /// `|` / `or`
    Or,
    /// `^` / `xor`
    Xor,
    /// `<<` / `lshift`
    Shl,
    /// `>>` / `rshift`
    Shr,
}

/// A header field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Payload {
    Ip(IpField),
    Ip6(Ip6Field),
    Tcp(TcpField),
    Udp(UdpField),
    /// `th`: the transport header of any protocol with ports at offsets 0 and 2.
    Th(ThField),
    Icmp(IcmpField),
    Icmpv6(IcmpField),
    Ether(EtherField),
    Vlan(VlanField),
}

/// `ip …` fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpField {
    Version,
    Hdrlength,
    Dscp,
    /// The low 2 bits of the TOS byte.
    Ecn,
    Length,
    Id,
    FragOff,
    Ttl,
    Protocol,
    Checksum,
    Saddr,
    Daddr,
}

/// `ip6 …` fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ip6Field {
    Version,
    Dscp,
    /// The low 2 bits of the traffic class.
    Ecn,
    Flowlabel,
    Length,
    Nexthdr,
    Hoplimit,
    Saddr,
    Daddr,
}

/// `tcp …` fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcpField {
    Sport,
    Dport,
    Sequence,
    Ackseq,
    Doff,
    Flags,
    Window,
    /// The urgent pointer.
    Urgptr,
}

/// `udp …` fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UdpField {
    Sport,
    Dport,
    Length,
    Checksum,
}

/// `th …` fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThField {
    Sport,
    Dport,
}

/// `icmp …` / `icmpv6 …` fields (same layout for the fields levee supports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IcmpField {
    Type,
    Code,
    /// The echo identifier.
    Id,
    /// The echo sequence number.
    Sequence,
}

/// `ether …` fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EtherField {
    Daddr,
    Saddr,
    Type,
}

/// `vlan …` fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VlanField {
    Id,
}

/// `meta …` keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetaKey {
    /// Packet length in bytes.
    Length,
    /// The ethertype (`meta protocol ip6`).
    Protocol,
    /// The layer-4 protocol after extension headers (`meta l4proto tcp`).
    L4proto,
    /// The netfilter family: ipv4 or ipv6 (`meta nfproto ipv4`).
    Nfproto,
    /// The packet mark.
    Mark,
    /// Input interface index.
    Iif,
    /// Input interface name.
    Iifname,
    /// Output interface index.
    Oif,
    /// Output interface name.
    Oifname,
    /// The CPU (for levee: the worker lcore) handling the packet.
    Cpu,
    /// host, broadcast, multicast, other.
    Pkttype,
    /// Seconds since midnight, UTC.
    Hour,
    /// Day of week, 0 = Sunday.
    Day,
    /// Seconds since the Unix epoch.
    Time,
}

/// `ct …` keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CtKey {
    State,
    Status,
    Mark,
    Label,
    Direction,
    /// Time left before the entry expires (milliseconds).
    Expiration,
    Zone,
}

/// The type of a value, as named in set declarations (`type ipv4_addr . inet_service`) or
/// implied by an expression. Decides the width, the accepted spellings and the printed form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// `ipv4_addr`
    Ipv4Addr,
    /// `ipv6_addr`
    Ipv6Addr,
    /// `ether_addr`
    EtherAddr,
    /// `inet_proto`: an IP protocol number (8 bits), names tcp, udp, icmp, …
    InetProto,
    /// `inet_service`: a port (16 bits), names ssh, http, …
    InetService,
    /// `mark`: 32 bits, printed in hex.
    Mark,
    /// `ifname`: a string of at most 15 bytes.
    Ifname,
    /// `iface_index`: an interface, given by name or index.
    IfaceIndex,
    /// `ct_state`: bitmask (invalid, established, related, new, untracked).
    CtState,
    /// `ct_status`: bitmask (expected, seen-reply, assured, confirmed, snat, dnat, dying).
    CtStatus,
    /// `ct_dir`: original, reply.
    CtDir,
    /// `ct_label`: a label bit number (0..=127) or name.
    CtLabel,
    /// `verdict`: only as the data type of a map.
    Verdict,
    /// `tcp_flag`: bitmask (fin, syn, rst, psh, ack, urg, ecn, cwr).
    TcpFlag,
    /// `icmp_type`
    IcmpType,
    /// `icmp_code`
    IcmpCode,
    /// `icmpv6_type`
    Icmpv6Type,
    /// `icmpv6_code`
    Icmpv6Code,
    /// `ether_type`: names ip, arp, ip6, vlan, …
    EtherType,
    /// `pkt_type`: host, broadcast, multicast, other.
    Pkttype,
    /// `nf_proto`: ipv4, ipv6.
    Nfproto,
    /// `dscp`: 6 bits, names cs0..cs7, af11..af43, ef.
    Dscp,
    /// `ecn`: 2 bits, names not-ect, ect1, ect0, ce.
    Ecn,
    /// `day`: 0 = Sunday.
    Day,
    /// `hour`: seconds since midnight.
    Hour,
    /// `time`: seconds since the epoch.
    Time,
    /// A duration in milliseconds (`ct expiration`).
    Duration,
    /// A plain unsigned integer of the given width in bits (ttl, lengths, ids, …). Has no
    /// `type` name: sets of it are declared with `typeof`.
    Integer { bits: u8 },
}

/// A verdict.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Verdict {
    Accept,
    Drop,
    Continue,
    Return,
    /// `jump CHAIN`: call, come back on `return` or at the end of CHAIN.
    Jump(String),
    /// `goto CHAIN`: tail call, no coming back.
    Goto(String),
}

/// `counter packets N bytes M` (both 0 when written as a bare `counter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// A time unit for rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateUnit {
    Second,
    Minute,
    Hour,
    Day,
    Week,
}

/// `limit rate [over] N[/unit] [burst M packets|bytes]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    /// `over`: matches when the rate is exceeded (instead of while below it).
    pub over: bool,
    /// Packets, or bytes when `bytes` is set (already multiplied out of kbytes/mbytes).
    pub rate: u64,
    /// The time unit of `rate`.
    pub per: RateUnit,
    /// Whether this is a byte rate (`N kbytes/second`).
    pub bytes: bool,
    /// `burst M packets` (or bytes for a byte rate). Normalized to nft's defaults when not
    /// written: 5 packets for a packet rate, 0 bytes for a byte rate.
    pub burst: u64,
}

/// `quota [over|until] N unit [used N unit]`, all in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    /// `over`: matches once the quota is used up (`until`, the default, matches before).
    pub over: bool,
    pub bytes: u64,
    pub used: u64,
}

/// A syslog level for `log level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogLevel {
    Emerg,
    Alert,
    Crit,
    Err,
    Warn,
    Notice,
    Info,
    Debug,
    Audit,
}

/// `log [prefix "…"] [level L] [flags …]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Log {
    pub prefix: Option<String>,
    /// nft's default `warn` when not written (and then not printed).
    pub level: LogLevel,
    /// What the log line includes beyond the defaults. No effect on matching or verdicts.
    pub flags: LogFlags,
}

/// `flags …` of a log statement (nft's `NF_LOG_*` bits); `flags all` sets every one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct LogFlags {
    /// `flags tcp sequence`: TCP sequence numbers.
    pub tcp_sequence: bool,
    /// `flags tcp options`: TCP options.
    pub tcp_options: bool,
    /// `flags ip options`: IPv4/IPv6 options.
    pub ip_options: bool,
    /// `flags skuid`: the owning socket's user id.
    pub skuid: bool,
    /// `flags ether`: the decoded link-layer header.
    pub ether: bool,
}

impl LogFlags {
    /// `flags all`.
    pub const ALL: LogFlags = LogFlags {
        tcp_sequence: true,
        tcp_options: true,
        ip_options: true,
        skuid: true,
        ether: true,
    };
}

/// `reject [with …]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    /// Plain `reject`: ICMP port unreachable (TCP RST is not implied, as in nft).
    Default,
    /// `with tcp reset`.
    TcpReset,
    /// `with icmp type X`: the ICMPv4 destination-unreachable code X.
    Icmp(u8),
    /// `with icmpv6 type X`: the ICMPv6 destination-unreachable code X.
    Icmpv6(u8),
    /// `with icmpx type X`: a family-independent code (0 no-route, 1 port-unreachable,
    /// 2 host-unreachable, 3 admin-prohibited).
    Icmpx(u8),
}

/// `synproxy [mss N] [wscale N] [timestamp] [sack-perm]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Synproxy {
    pub mss: Option<u16>,
    /// Window scale, 0..=14.
    pub wscale: Option<u8>,
    pub timestamp: bool,
    pub sack_perm: bool,
}

/// Whether a dynset adds a new key only (`add`) or also refreshes an existing one (`update`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DynsetOp {
    Add,
    Update,
}

/// `add|update @set { KEY [timeout T] [STMT …] }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dynset {
    pub op: DynsetOp,
    /// The named set of the same table.
    pub set: String,
    pub key: Expr,
    pub timeout: Option<Duration>,
    /// Per-element statements: only [`Stmt::Limit`], [`Stmt::Counter`] and [`Stmt::Quota`].
    pub stmts: Vec<Stmt>,
}

/// Legacy `meter NAME [size N] { KEY [timeout T] STMT … }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meter {
    pub name: String,
    pub size: Option<u32>,
    pub key: Expr,
    pub timeout: Option<Duration>,
    /// Per-element statements: only [`Stmt::Limit`], [`Stmt::Counter`] and [`Stmt::Quota`].
    pub stmts: Vec<Stmt>,
}

/// `set NAME { … }` or `map NAME { … }` in a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub name: String,
    /// The key type, one entry per concatenated component (`type ipv4_addr . inet_service`).
    pub key: Vec<DataType>,
    /// `typeof EXPR`: the expression the key type was taken from, kept so the listing shows
    /// the same declaration. `key` is filled in either way.
    pub key_typeof: Option<Expr>,
    /// `Some` for a map: the data type after `:` ([`DataType::Verdict`] for a verdict map).
    pub data: Option<DataType>,
    /// `typeof … : EXPR` for the data side of a map.
    pub data_typeof: Option<Expr>,
    pub flags: SetFlags,
    /// Default element timeout (`timeout 30s;`).
    pub timeout: Option<Duration>,
    /// Maximum number of elements (`size N;`).
    pub size: Option<u32>,
    /// `counter;`: every element carries a counter.
    pub counter: bool,
    /// `comment "…";`
    pub comment: Option<String>,
    /// The elements, in the order written.
    pub elements: Vec<SetElem>,
    /// Where the set was declared.
    pub span: Span,
}

impl Set {
    /// The declaration without its elements (cheap for a large set).
    pub fn clone_without_elements(&self) -> Set {
        Set {
            name: self.name.clone(),
            key: self.key.clone(),
            key_typeof: self.key_typeof.clone(),
            data: self.data,
            data_typeof: self.data_typeof.clone(),
            flags: self.flags,
            timeout: self.timeout,
            size: self.size,
            counter: self.counter,
            comment: self.comment.clone(),
            elements: Vec::new(),
            span: self.span,
        }
    }
}

/// `flags …;` of a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SetFlags {
    /// Elements are not changed after creation.
    pub constant: bool,
    /// Elements may be prefixes and ranges.
    pub interval: bool,
    /// Elements may expire.
    pub timeout: bool,
    /// Elements are added from the packet path (meters).
    pub dynamic: bool,
}

/// Which header a [`Payload`] field or a raw payload ([`Expr::Raw`]) is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderBase {
    /// The Ethernet header (start of the frame).
    Link,
    /// The IPv4/IPv6 header.
    Network,
    /// The TCP/UDP/ICMP header.
    Transport,
}

impl DataType {
    /// Whether an implicit comparison with a constant is a flag test (see [`RelOp::Implicit`]).
    pub fn is_bitmask(self) -> bool {
        matches!(self, DataType::TcpFlag | DataType::CtState | DataType::CtStatus)
    }

    /// The width in bits of a value of this type; `None` for strings (interface names, whose
    /// registers are 16 bytes) and verdicts.
    pub fn bits(self) -> Option<u32> {
        Some(match self {
            DataType::Ipv4Addr => 32,
            DataType::Ipv6Addr => 128,
            DataType::EtherAddr => 48,
            DataType::InetProto | DataType::TcpFlag | DataType::IcmpType | DataType::IcmpCode => 8,
            DataType::Icmpv6Type | DataType::Icmpv6Code | DataType::Pkttype | DataType::Nfproto => 8,
            DataType::Day | DataType::CtDir => 8,
            DataType::InetService | DataType::EtherType => 16,
            DataType::Mark | DataType::IfaceIndex | DataType::CtState | DataType::CtStatus => 32,
            DataType::Hour => 32,
            DataType::Dscp => 6,
            DataType::Ecn => 2,
            DataType::CtLabel => 128,
            DataType::Time | DataType::Duration => 64,
            DataType::Integer { bits } => u32::from(bits),
            DataType::Ifname | DataType::Verdict => return None,
        })
    }
}

impl Payload {
    /// The type of the field's value.
    pub fn data_type(self) -> DataType {
        use DataType as T;
        let int = |bits| T::Integer { bits };
        match self {
            Payload::Ip(f) => match f {
                IpField::Version | IpField::Hdrlength => int(4),
                IpField::Dscp => T::Dscp,
                IpField::Ecn => T::Ecn,
                IpField::Length | IpField::Id | IpField::FragOff | IpField::Checksum => int(16),
                IpField::Ttl => int(8),
                IpField::Protocol => T::InetProto,
                IpField::Saddr | IpField::Daddr => T::Ipv4Addr,
            },
            Payload::Ip6(f) => match f {
                Ip6Field::Version => int(4),
                Ip6Field::Dscp => T::Dscp,
                Ip6Field::Ecn => T::Ecn,
                Ip6Field::Flowlabel => int(20),
                Ip6Field::Length => int(16),
                Ip6Field::Nexthdr => T::InetProto,
                Ip6Field::Hoplimit => int(8),
                Ip6Field::Saddr | Ip6Field::Daddr => T::Ipv6Addr,
            },
            Payload::Tcp(f) => match f {
                TcpField::Sport | TcpField::Dport => T::InetService,
                TcpField::Sequence | TcpField::Ackseq => int(32),
                TcpField::Doff => int(4),
                TcpField::Flags => T::TcpFlag,
                TcpField::Window | TcpField::Urgptr => int(16),
            },
            Payload::Udp(f) => match f {
                UdpField::Sport | UdpField::Dport => T::InetService,
                UdpField::Length | UdpField::Checksum => int(16),
            },
            Payload::Th(_) => T::InetService,
            Payload::Icmp(f) | Payload::Icmpv6(f) => match f {
                IcmpField::Type if matches!(self, Payload::Icmp(_)) => T::IcmpType,
                IcmpField::Type => T::Icmpv6Type,
                IcmpField::Code if matches!(self, Payload::Icmp(_)) => T::IcmpCode,
                IcmpField::Code => T::Icmpv6Code,
                IcmpField::Id | IcmpField::Sequence => int(16),
            },
            Payload::Ether(f) => match f {
                EtherField::Daddr | EtherField::Saddr => T::EtherAddr,
                EtherField::Type => T::EtherType,
            },
            Payload::Vlan(VlanField::Id) => int(12),
        }
    }

    /// Where the field lies: header, bit offset from the start of that header, width in bits.
    /// Fixed offsets as in nft: IPv4 options and IPv6 extension headers are not skipped for
    /// network-header fields, and the transport header starts where the dataplane found it.
    /// `vlan id` assumes one 802.1Q tag right after the Ethernet addresses.
    pub fn layout(self) -> (HeaderBase, u32, u32) {
        use HeaderBase::{Link, Network, Transport};
        match self {
            Payload::Ip(f) => match f {
                IpField::Version => (Network, 0, 4),
                IpField::Hdrlength => (Network, 4, 4),
                IpField::Dscp => (Network, 8, 6),
                IpField::Ecn => (Network, 14, 2),
                IpField::Length => (Network, 16, 16),
                IpField::Id => (Network, 32, 16),
                IpField::FragOff => (Network, 48, 16),
                IpField::Ttl => (Network, 64, 8),
                IpField::Protocol => (Network, 72, 8),
                IpField::Checksum => (Network, 80, 16),
                IpField::Saddr => (Network, 96, 32),
                IpField::Daddr => (Network, 128, 32),
            },
            Payload::Ip6(f) => match f {
                Ip6Field::Version => (Network, 0, 4),
                Ip6Field::Dscp => (Network, 4, 6),
                Ip6Field::Ecn => (Network, 10, 2),
                Ip6Field::Flowlabel => (Network, 12, 20),
                Ip6Field::Length => (Network, 32, 16),
                Ip6Field::Nexthdr => (Network, 48, 8),
                Ip6Field::Hoplimit => (Network, 56, 8),
                Ip6Field::Saddr => (Network, 64, 128),
                Ip6Field::Daddr => (Network, 192, 128),
            },
            Payload::Tcp(f) => match f {
                TcpField::Sport => (Transport, 0, 16),
                TcpField::Dport => (Transport, 16, 16),
                TcpField::Sequence => (Transport, 32, 32),
                TcpField::Ackseq => (Transport, 64, 32),
                TcpField::Doff => (Transport, 96, 4),
                TcpField::Flags => (Transport, 104, 8),
                TcpField::Window => (Transport, 112, 16),
                TcpField::Urgptr => (Transport, 144, 16),
            },
            Payload::Udp(f) => match f {
                UdpField::Sport => (Transport, 0, 16),
                UdpField::Dport => (Transport, 16, 16),
                UdpField::Length => (Transport, 32, 16),
                UdpField::Checksum => (Transport, 48, 16),
            },
            Payload::Th(ThField::Sport) => (Transport, 0, 16),
            Payload::Th(ThField::Dport) => (Transport, 16, 16),
            Payload::Icmp(f) | Payload::Icmpv6(f) => match f {
                IcmpField::Type => (Transport, 0, 8),
                IcmpField::Code => (Transport, 8, 8),
                IcmpField::Id => (Transport, 32, 16),
                IcmpField::Sequence => (Transport, 48, 16),
            },
            Payload::Ether(f) => match f {
                EtherField::Daddr => (Link, 0, 48),
                EtherField::Saddr => (Link, 48, 48),
                EtherField::Type => (Link, 96, 16),
            },
            Payload::Vlan(VlanField::Id) => (Link, 116, 12),
        }
    }
}

impl MetaKey {
    /// The type of the key's value.
    pub fn data_type(self) -> DataType {
        match self {
            MetaKey::Length | MetaKey::Cpu => DataType::Integer { bits: 32 },
            MetaKey::Protocol => DataType::EtherType,
            MetaKey::L4proto => DataType::InetProto,
            MetaKey::Nfproto => DataType::Nfproto,
            MetaKey::Mark => DataType::Mark,
            MetaKey::Iif | MetaKey::Oif => DataType::IfaceIndex,
            MetaKey::Iifname | MetaKey::Oifname => DataType::Ifname,
            MetaKey::Pkttype => DataType::Pkttype,
            MetaKey::Hour => DataType::Hour,
            MetaKey::Day => DataType::Day,
            MetaKey::Time => DataType::Time,
        }
    }
}

impl CtKey {
    /// The type of the key's value.
    pub fn data_type(self) -> DataType {
        match self {
            CtKey::State => DataType::CtState,
            CtKey::Status => DataType::CtStatus,
            CtKey::Mark => DataType::Mark,
            CtKey::Label => DataType::CtLabel,
            CtKey::Direction => DataType::CtDir,
            CtKey::Expiration => DataType::Duration,
            CtKey::Zone => DataType::Integer { bits: 16 },
        }
    }
}

impl Expr {
    /// The type of the value this expression produces; `None` for a concatenation (see
    /// [`Expr::concat_types`]), a constant, or a named map (whose data type is in its [`Set`]).
    pub fn data_type(&self) -> Option<DataType> {
        match self {
            Expr::Payload(p) => Some(p.data_type()),
            Expr::Meta(k) => Some(k.data_type()),
            Expr::Ct(k) => Some(k.data_type()),
            Expr::Bitwise { expr, .. } => expr.data_type(),
            Expr::Raw { len, .. } => Some(DataType::Integer {
                bits: u8::try_from(*len).unwrap_or(u8::MAX),
            }),
            Expr::Concat(_) | Expr::Map { .. } | Expr::Const(_) => None,
        }
    }

    /// The types of a key expression, one per concatenated component.
    pub fn concat_types(&self) -> Vec<Option<DataType>> {
        match self {
            Expr::Concat(parts) => parts.iter().map(Expr::data_type).collect(),
            other => vec![other.data_type()],
        }
    }
}
