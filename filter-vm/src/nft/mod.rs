//! The nft rule language front end: lexer, recursive-descent parser, normalized printer and
//! JSON writer. Owns the [`ast`] the compiler (`crate::compile`) consumes. Pure functions over
//! text and trees; callable from any thread.
//!
//! ```text
//! parse_ruleset(text) -> Result<ast::Ruleset, ParseError>   // "LINE:COL: message"
//! print_ruleset(&ruleset) -> String                          // `nft list ruleset` form
//! ruleset_json(&ruleset) -> serde_json::Value                // `nft -j list ruleset` form
//! ```
//!
//! Round trip: `parse_ruleset(&print_ruleset(&r)) == Ok(r)` for every `r` the parser produced
//! (tree equality ignores source positions). The listing is also accepted by nft 1.0.
//!
//! # The supported subset
//!
//! Everything below is nft's own syntax (nft(8)); anything else is an error naming its line
//! and column. The tree holds the *result* of the file, so commands are applied in order.
//!
//! **File structure.** `#` comments; newline or `;` between commands, items and rules;
//! newlines are free inside `{ … }` element lists.
//! - `table [FAMILY] NAME { … }`, FAMILY one of `ip` (default), `ip6`, `inet`, `netdev`,
//!   `bridge`; a repeated block adds to the same table.
//! - `flush ruleset`, `flush table [FAMILY] NAME`, `flush chain|set|map [FAMILY] TABLE NAME`.
//! - `add|create table …`, `add|create chain [FAMILY] TABLE NAME [{ … }]`,
//!   `add|create set|map [FAMILY] TABLE NAME { … }`, `add|insert rule [FAMILY] TABLE CHAIN …`,
//!   `add element [FAMILY] TABLE SET { … }`. (`create` fails if the object exists.)
//! - Not supported: `include`, `define`/`$var`, `delete`, `list`, rule `position`/`handle`,
//!   flowtables, stateful objects, `nat`/`route` chains.
//! - Names are identifiers (`[A-Za-z_][A-Za-z0-9_./-]*`) or `"quoted"` (at most 255 bytes).
//!
//! **Table items.** `comment "…"`; chains; sets and maps.
//! - `chain NAME { [type filter hook HOOK [device "DEV"] priority PRIO;] [policy accept|drop;]
//!   [comment "…";] RULES }`. HOOK: `prerouting input forward output postrouting` (ip, ip6,
//!   inet, bridge) and `ingress` (netdev and inet, `device` required). PRIO: an integer or a
//!   standard name — `raw -300`, `mangle -150`, `dstnat -100` (prerouting), `filter 0`,
//!   `security 50`, `srcnat 100` (postrouting); bridge: `dstnat -300`, `filter -200`,
//!   `out 100`, `srcnat 300` — optionally `+ N` / `- N`.
//! - `set NAME { type T [. T]… | typeof EXPR [. EXPR]…; [flags constant,interval,timeout,
//!   dynamic;] [timeout D;] [size N;] [counter;] [comment "…";] [elements = { … };] }`.
//! - `map NAME { type K [. K]… : V | typeof EXPR : EXPR; … }`, V a data type or `verdict`.
//! - Types: `ipv4_addr ipv6_addr ether_addr inet_proto inet_service mark ifname iface_index
//!   ct_state ct_status ct_dir ct_label tcp_flag icmp_type icmp_code icmpv6_type icmpv6_code
//!   ether_type pkt_type nf_proto dscp ecn day hour time`, and `verdict` as map data.
//! - Elements: `KEY [timeout D] [expires D] [counter packets N bytes M] [comment "…"]
//!   [: DATA]`; prefixes and ranges need `flags interval`, timeouts need `flags timeout`.
//!
//! **Rules**: statements, at most one terminal one (verdict, `vmap`, `reject`) and only last,
//! then optionally `comment "…"`.
//! - Payload: `ip saddr|daddr|protocol|ttl|length|id|dscp|ecn|version|hdrlength|checksum|
//!   frag-off`, `ip6 saddr|daddr|nexthdr|hoplimit|length|flowlabel|dscp|ecn|version`,
//!   `tcp sport|dport|flags|sequence|ackseq|window|doff|urgptr`, `udp sport|dport|length|checksum`,
//!   `th sport|dport`, `icmp|icmpv6 type|code|id|sequence`, `ether saddr|daddr|type`, `vlan id`.
//! - Raw payload: `@ll|nh|th,OFFSET,LEN` (bits from the start of the link, network or transport
//!   header; LEN 1 to 64), an integer of LEN bits, with no implied protocol check (as in nft).
//! - Meta: `meta l4proto|nfproto|protocol|length|mark|iif|oif|iifname|oifname|cpu|pkttype|
//!   hour|day|time`; bare `mark iif oif iifname oifname cpu pkttype l4proto`.
//! - Conntrack: `ct state|status|mark|label|direction|expiration|zone`.
//! - Bitwise on the left: `& | ^ << >>` (or `and or xor lshift rshift`) with constants,
//!   nft's precedence, parentheses; concatenation with ` . `.
//! - Operators: implicit, `== != < <= > >=`, `eq ne lt le gt ge`. An implicit comparison of
//!   a bitmask (`tcp flags`, `ct state`, `ct status`) with a constant is nft's flag test;
//!   `tcp flags syn / syn,ack` is `tcp flags & (syn | ack) == syn`.
//! - Right sides: decimal/hex numbers, IPv4/IPv6/Ethernet addresses, prefixes `a/len`,
//!   ranges `lo-hi` (or `lo - hi`), symbolic names (protocols, a small service table, TCP
//!   flags, ICMP/ICMPv6 types and codes, ct states/statuses/directions, ethertypes, pkttypes,
//!   DSCP and ECN names, days, `"HH:MM"` hours, `"YYYY-MM-DD HH:MM:SS"` UTC times, durations like
//!   `1m30s`), flag lists `a,b`, constant `|` expressions, anonymous sets `{ … }`, named sets
//!   `@name`, concatenated constants `a . b`.
//! - levee extension: `EXPR OP EXPR` with an explicit operator compares two packet expressions
//!   of the same width (`tcp sport == tcp dport`); nft rejects it (see [`ast::Rhs::Expr`]).
//! - Statements: `counter [packets N bytes M]`; `limit rate [over|until] N/UNIT [burst N
//!   packets]` and `limit rate [over] N bytes|kbytes|mbytes/UNIT [burst N bytes|kbytes|mbytes]`
//!   (UNIT second, minute, hour, day, week); `quota [over|until] N bytes|kbytes|mbytes [used N
//!   UNIT]`; `log [prefix "…"] [level emerg|alert|crit|err|warn|notice|info|debug|audit]
//!   [flags tcp sequence[,options] | flags tcp options | flags ip options | flags skuid |
//!   flags ether | flags all]…` (flags only change what a log line holds);
//!   `reject [with tcp reset | with icmp|icmpv6|icmpx [type] CODE]`; `synproxy [mss N] [wscale
//!   N] [timestamp] [sack-perm]`; `notrack`; `meta mark set V`, `ct mark set V`, `ct label set
//!   NAME|BIT` (V a constant, an expression, or `EXPR map { … }|@name`); `FIELD set V` for
//!   header fields on whole bytes (`ip ttl set 63`, `tcp dport set 8080`, `ip saddr set A`:
//!   the packet is rewritten and its checksums fixed); `add|update @set { KEY
//!   [timeout D] [limit …] [counter] [quota …] }`; `meter NAME [size N] { KEY [timeout D]
//!   STMT… }`; `KEY vmap { … }|@name`.
//! - Verdicts: `accept drop continue return`, `jump CHAIN`, `goto CHAIN` (regular chains of the
//!   same table; checked after the whole file is read).
//!
//! **Checked while parsing**: numbers against the field width (port 70000 is an error),
//! address syntax, prefix lengths, ranges with low > high, unknown names and keywords,
//! unterminated strings and blocks, set/map references and their key types, chain references,
//! family-dependent `reject` and hooks, string lengths (names 255, comments 128, log prefix
//! 127, interface names 15 bytes).
//!
//! **Normalization** (what the listing shows): `==` written where it means the same as the
//! implicit form is dropped; full-length prefixes become addresses and prefixes are masked;
//! limits get nft's default burst; `log level warn` is the default; names become numbers and
//! are printed back the way nft prints them (ports as numbers, marks in hex).
pub mod ast;
mod json;
mod lexer;
mod parser;
mod printer;
mod symbols;

use ast::Span;

/// A parse error: where (1-based line and column) and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{col}: {message}")]
pub struct ParseError {
    pub line: u32,
    pub col: u32,
    pub message: String,
}

impl ParseError {
    pub(crate) fn at(span: Span, message: impl Into<String>) -> ParseError {
        ParseError {
            line: span.line,
            col: span.col,
            message: message.into(),
        }
    }
}

/// Parses a ruleset file.
pub fn parse_ruleset(text: &str) -> Result<ast::Ruleset, ParseError> {
    let toks = lexer::tokenize(text)?;
    parser::Parser::new(toks).parse_file()
}

/// Parses the whole of `text` as one rule (its statements and comment) of a table of
/// `family`. Positions are within `text`. References to chains and sets are not checked here
/// (see [`check_rule`]).
pub fn parse_rule(text: &str, family: ast::Family) -> Result<ast::Rule, ParseError> {
    let toks = lexer::tokenize(text)?;
    parser::Parser::new(toks).parse_rule_only(family)
}

/// Parses the whole of `text` as the `{ … }` block of chain `name` in a table of `family`
/// (`{ type filter hook input priority 0; policy drop; }`, rules allowed).
pub fn parse_chain(text: &str, family: ast::Family, name: &str) -> Result<ast::Chain, ParseError> {
    let toks = lexer::tokenize(text)?;
    parser::Parser::new(toks).parse_chain_only(family, name)
}

/// Parses the whole of `text` as the `{ … }` block of set `name` (a map when `is_map`) in a
/// table of `family` (`{ type ipv4_addr; flags interval; elements = { … } }`).
pub fn parse_set(text: &str, family: ast::Family, name: &str, is_map: bool) -> Result<ast::Set, ParseError> {
    let toks = lexer::tokenize(text)?;
    parser::Parser::new(toks).parse_set_only(family, name, is_map)
}

/// Parses the whole of `text` as an element list `{ e1, e2, … }` for the set declared by
/// `decl` (its key and data types and flags decide what is accepted).
pub fn parse_elements(
    text: &str,
    family: ast::Family,
    decl: &ast::Set,
) -> Result<Vec<ast::SetElem>, ParseError> {
    let toks = lexer::tokenize(text)?;
    parser::Parser::new(toks).parse_elements_only(family, decl)
}

/// Checks the references of `rule` against `table` (whose rules are not looked at and whose
/// sets need no elements): jump targets are regular chains of the table, named sets and maps
/// exist and take the rule's key and data types.
pub fn check_rule(rule: &ast::Rule, table: &ast::Table) -> Result<(), ParseError> {
    parser::check_rule(table, rule)
}

/// One rule in its normalized form, as a listing prints it (no handle): two rules are the
/// same exactly when these are equal.
pub fn print_rule(rule: &ast::Rule) -> String {
    printer::rule(rule)
}

/// Options of [`print_ruleset_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrintOptions {
    /// Append `# handle N` to rules that have a handle (`nft -a`).
    pub handles: bool,
}

/// The normalized listing (`list ruleset`), without handles.
pub fn print_ruleset(r: &ast::Ruleset) -> String {
    printer::print(r, PrintOptions::default())
}

/// The normalized listing with options.
pub fn print_ruleset_with(r: &ast::Ruleset, opts: PrintOptions) -> String {
    printer::print(r, opts)
}

/// The JSON form, shaped like `nft -j list ruleset`.
pub fn ruleset_json(r: &ast::Ruleset) -> serde_json::Value {
    json::ruleset(r)
}

#[cfg(test)]
mod tests;
