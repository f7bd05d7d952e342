//! Recursive-descent parser: tokens to [`Ruleset`], applying commands as it goes.
//!
//! Values are typed by the expression they are compared with, so the parser carries the
//! expected [`DataType`] down to every constant and resolves names, checks widths, masks
//! prefixes and orders ranges on the spot. References between objects (`jump`, `@set`) may
//! point forward in the file and are checked once the whole file is read (`validate`).

use std::time::Duration;

use super::ast::*;
use super::lexer::{Tok, Token};
use super::symbols::{self, parse_number, parse_scalar, type_desc};
use super::ParseError;

/// Nesting limit for parentheses, so hostile input cannot exhaust the stack.
const MAX_DEPTH: usize = 32;
/// nft's limits on user-provided strings (`NFT_NAME_MAXLEN`, comment and log prefix sizes).
const MAX_NAME: usize = 255;
const MAX_COMMENT: usize = 128;
const MAX_LOG_PREFIX: usize = 127;
/// A raw payload must end within the first 65535 bytes of its header (the VM's packet model).
const RAW_MAX_BITS: u64 = 65_535 * 8;
/// The widest raw payload: constants are 64-bit integers.
const RAW_MAX_LEN: u64 = 64;

type PResult<T> = Result<T, ParseError>;

/// What element parsing needs to know about a set.
struct SetDecl {
    name: String,
    key: Vec<DataType>,
    data: Option<DataType>,
    flags: SetFlags,
    timeout: Option<Duration>,
    counter: bool,
}

/// Which table a command or block refers to.
type TableKey = (Family, String);

/// The shape of what a constant is compared with: one type per concatenated component.
#[derive(Clone, Copy)]
struct ConstCtx<'t> {
    types: &'t [DataType],
    /// Whether prefixes and ranges are accepted (anonymous sets, matches, interval sets).
    intervals: bool,
    /// Whether `a,b,c` flag lists are accepted (only at the top of a match, not in sets).
    flag_list: bool,
    /// Whether a word may be split at `:` (keys of map elements: `22:accept`).
    map_key: bool,
}

pub(crate) struct Parser {
    toks: Vec<Token>,
    pos: usize,
    /// Pieces of split words, next one last (see [`Parser::split_word`]).
    pushback: Vec<Token>,
    eof: Token,
    /// The last token consumed, for "after '…'" in error messages.
    last: Option<Tok>,
    depth: usize,
    rs: Ruleset,
}

fn family_from(w: &str) -> Option<Family> {
    Some(match w {
        "ip" => Family::Ip,
        "ip6" => Family::Ip6,
        "inet" => Family::Inet,
        "netdev" => Family::Netdev,
        "bridge" => Family::Bridge,
        _ => return None,
    })
}

fn is_terminator(t: &Tok) -> bool {
    matches!(t, Tok::Newline | Tok::Semi | Tok::RBrace | Tok::Eof)
}

/// Whether `w` starts a packet expression (`ip saddr`, `meta mark`, `iifname`, …).
fn starts_selector(w: &str) -> bool {
    matches!(
        w,
        "ip" | "ip6"
            | "tcp"
            | "udp"
            | "th"
            | "icmp"
            | "icmpv6"
            | "ether"
            | "vlan"
            | "meta"
            | "ct"
            | "mark"
            | "iif"
            | "oif"
            | "iifname"
            | "oifname"
            | "cpu"
            | "pkttype"
            | "l4proto"
    )
}

fn meta_key(w: &str) -> Option<MetaKey> {
    Some(match w {
        "length" => MetaKey::Length,
        "protocol" => MetaKey::Protocol,
        "l4proto" => MetaKey::L4proto,
        "nfproto" => MetaKey::Nfproto,
        "mark" => MetaKey::Mark,
        "iif" => MetaKey::Iif,
        "iifname" => MetaKey::Iifname,
        "oif" => MetaKey::Oif,
        "oifname" => MetaKey::Oifname,
        "cpu" => MetaKey::Cpu,
        "pkttype" => MetaKey::Pkttype,
        "hour" => MetaKey::Hour,
        "day" => MetaKey::Day,
        "time" => MetaKey::Time,
        _ => return None,
    })
}

/// The header of a raw payload expression `@BASE,OFFSET,LEN`.
pub(crate) fn raw_base(w: &str) -> Option<HeaderBase> {
    Some(match w {
        "ll" => HeaderBase::Link,
        "nh" => HeaderBase::Network,
        "th" => HeaderBase::Transport,
        _ => return None,
    })
}

fn ct_key(w: &str) -> Option<CtKey> {
    Some(match w {
        "state" => CtKey::State,
        "status" => CtKey::Status,
        "mark" => CtKey::Mark,
        "label" => CtKey::Label,
        "direction" => CtKey::Direction,
        "expiration" => CtKey::Expiration,
        "zone" => CtKey::Zone,
        _ => return None,
    })
}

/// The header field `proto field`, with the list of valid fields for the error message.
fn payload_field(proto: &str, field: &str) -> Result<Payload, &'static str> {
    let found = match proto {
        "ip" => Some(match field {
            "version" => Payload::Ip(IpField::Version),
            "hdrlength" => Payload::Ip(IpField::Hdrlength),
            "dscp" => Payload::Ip(IpField::Dscp),
            "ecn" => Payload::Ip(IpField::Ecn),
            "length" => Payload::Ip(IpField::Length),
            "id" => Payload::Ip(IpField::Id),
            "frag-off" => Payload::Ip(IpField::FragOff),
            "ttl" => Payload::Ip(IpField::Ttl),
            "protocol" => Payload::Ip(IpField::Protocol),
            "checksum" => Payload::Ip(IpField::Checksum),
            "saddr" => Payload::Ip(IpField::Saddr),
            "daddr" => Payload::Ip(IpField::Daddr),
            _ => return Err(
                "saddr, daddr, protocol, ttl, length, id, dscp, ecn, version, hdrlength, checksum, frag-off",
            ),
        }),
        "ip6" => Some(match field {
            "version" => Payload::Ip6(Ip6Field::Version),
            "dscp" => Payload::Ip6(Ip6Field::Dscp),
            "ecn" => Payload::Ip6(Ip6Field::Ecn),
            "flowlabel" => Payload::Ip6(Ip6Field::Flowlabel),
            "length" => Payload::Ip6(Ip6Field::Length),
            "nexthdr" => Payload::Ip6(Ip6Field::Nexthdr),
            "hoplimit" => Payload::Ip6(Ip6Field::Hoplimit),
            "saddr" => Payload::Ip6(Ip6Field::Saddr),
            "daddr" => Payload::Ip6(Ip6Field::Daddr),
            _ => return Err("saddr, daddr, nexthdr, hoplimit, length, flowlabel, dscp, ecn, version"),
        }),
        "tcp" => Some(match field {
            "sport" => Payload::Tcp(TcpField::Sport),
            "dport" => Payload::Tcp(TcpField::Dport),
            "sequence" => Payload::Tcp(TcpField::Sequence),
            "ackseq" => Payload::Tcp(TcpField::Ackseq),
            "doff" => Payload::Tcp(TcpField::Doff),
            "flags" => Payload::Tcp(TcpField::Flags),
            "window" => Payload::Tcp(TcpField::Window),
            "urgptr" => Payload::Tcp(TcpField::Urgptr),
            _ => return Err("sport, dport, flags, sequence, ackseq, window, doff, urgptr"),
        }),
        "udp" => Some(match field {
            "sport" => Payload::Udp(UdpField::Sport),
            "dport" => Payload::Udp(UdpField::Dport),
            "length" => Payload::Udp(UdpField::Length),
            "checksum" => Payload::Udp(UdpField::Checksum),
            _ => return Err("sport, dport, length, checksum"),
        }),
        "th" => Some(match field {
            "sport" => Payload::Th(ThField::Sport),
            "dport" => Payload::Th(ThField::Dport),
            _ => return Err("sport, dport"),
        }),
        "icmp" | "icmpv6" => {
            let f = match field {
                "type" => IcmpField::Type,
                "code" => IcmpField::Code,
                "id" => IcmpField::Id,
                "sequence" => IcmpField::Sequence,
                _ => return Err("type, code, id, sequence"),
            };
            Some(if proto == "icmp" {
                Payload::Icmp(f)
            } else {
                Payload::Icmpv6(f)
            })
        }
        "ether" => Some(match field {
            "saddr" => Payload::Ether(EtherField::Saddr),
            "daddr" => Payload::Ether(EtherField::Daddr),
            "type" => Payload::Ether(EtherField::Type),
            _ => return Err("saddr, daddr, type"),
        }),
        "vlan" => Some(match field {
            "id" => Payload::Vlan(VlanField::Id),
            _ => return Err("id"),
        }),
        _ => None,
    };
    found.ok_or("")
}

fn value_bits(v: &Value) -> Option<u128> {
    match v {
        Value::Int(n) => Some(u128::from(*n)),
        Value::Ipv4(a) => Some(u128::from(u32::from(*a))),
        Value::Ipv6(a) => Some(u128::from(*a)),
        Value::Ether(e) => Some(e.iter().fold(0u128, |acc, &b| (acc << 8) | u128::from(b))),
        Value::Str(_) => None,
    }
}

/// Whether a value of type `a` (an expression) fits a set declared with type `b`.
fn types_compatible(a: DataType, b: DataType) -> bool {
    a == b
        || ((matches!(a, DataType::Integer { .. }) || matches!(b, DataType::Integer { .. }))
            && a.bits().is_some()
            && a.bits() == b.bits())
}

fn stmt_name(s: &Stmt) -> &'static str {
    match s {
        Stmt::Verdict(_) => "verdict",
        Stmt::Vmap { .. } => "vmap",
        Stmt::Reject(_) => "reject",
        _ => "statement",
    }
}

impl Parser {
    pub(crate) fn new(toks: Vec<Token>) -> Parser {
        let end = toks.last().map(|t| t.span).unwrap_or_default();
        Parser {
            toks,
            pos: 0,
            pushback: Vec::new(),
            eof: Token {
                tok: Tok::Eof,
                span: end,
            },
            last: None,
            depth: 0,
            rs: Ruleset::default(),
        }
    }

    // ----- token access -----

    fn peek(&self) -> &Token {
        self.peek_at(0)
    }

    /// The `n`-th token ahead (0 = next).
    fn peek_at(&self, n: usize) -> &Token {
        let pb = self.pushback.len();
        if n < pb {
            return self.pushback.get(pb - 1 - n).unwrap_or(&self.eof);
        }
        self.toks.get(self.pos + (n - pb)).unwrap_or(&self.eof)
    }

    fn next(&mut self) -> Token {
        let t = match self.pushback.pop() {
            Some(t) => t,
            None => {
                let t = self
                    .toks
                    .get(self.pos)
                    .cloned()
                    .unwrap_or_else(|| self.eof.clone());
                if self.pos < self.toks.len() {
                    self.pos += 1;
                }
                t
            }
        };
        self.last = Some(t.tok.clone());
        t
    }

    fn peek_word(&self) -> Option<&str> {
        match &self.peek().tok {
            Tok::Word(w) => Some(w),
            _ => None,
        }
    }

    fn peek_word_at(&self, n: usize) -> Option<&str> {
        match &self.peek_at(n).tok {
            Tok::Word(w) => Some(w),
            _ => None,
        }
    }

    fn at_word(&self, w: &str) -> bool {
        self.peek_word() == Some(w)
    }

    fn eat_word(&mut self, w: &str) -> bool {
        if self.at_word(w) {
            self.next();
            true
        } else {
            false
        }
    }

    fn eat(&mut self, t: &Tok) -> bool {
        if &self.peek().tok == t {
            self.next();
            true
        } else {
            false
        }
    }

    /// Replaces the next token (a word) by pieces, so a word like `22:accept` can be read as
    /// `22`, `:`, `accept`. Pieces keep columns relative to the original word.
    fn split_word(&mut self, pieces: &[&str]) {
        let first = self.next();
        let mut col = first.span.col;
        let mut toks = Vec::new();
        for p in pieces {
            toks.push(Token {
                tok: Tok::Word((*p).to_string()),
                span: Span {
                    line: first.span.line,
                    col,
                },
            });
            col = col.saturating_add(u32::try_from(p.chars().count()).unwrap_or(0));
        }
        self.pushback.extend(toks.into_iter().rev());
    }

    fn skip_newlines(&mut self) {
        while self.peek().tok == Tok::Newline {
            self.next();
        }
    }

    fn skip_separators(&mut self) {
        while matches!(self.peek().tok, Tok::Newline | Tok::Semi) {
            self.next();
        }
    }

    fn err_here(&self, msg: impl Into<String>) -> ParseError {
        ParseError::at(self.peek().span, msg)
    }

    /// "expected X, found Y" at the next token.
    fn expected(&self, what: &str) -> ParseError {
        self.err_here(format!("expected {what}, found {}", self.peek().tok.describe()))
    }

    fn expect(&mut self, t: &Tok, what: &str) -> PResult<Span> {
        if &self.peek().tok == t {
            Ok(self.next().span)
        } else {
            Err(self.expected(what))
        }
    }

    fn expect_word(&mut self, w: &str) -> PResult<Span> {
        if self.at_word(w) {
            Ok(self.next().span)
        } else {
            Err(self.expected(&format!("'{w}'")))
        }
    }

    fn enter(&mut self) -> PResult<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err_here("expression nested too deeply"));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    /// A name: an identifier (`[A-Za-z_][A-Za-z0-9_./-]*`) or a quoted string.
    fn name(&mut self, what: &str) -> PResult<(String, Span)> {
        let t = self.peek().clone();
        let name = match &t.tok {
            Tok::Word(w) if is_identifier(w) => w.clone(),
            Tok::Str(s) => {
                if s.is_empty() {
                    return Err(ParseError::at(t.span, format!("{what} must not be empty")));
                }
                s.clone()
            }
            _ => return Err(self.expected(what)),
        };
        if name.len() > MAX_NAME {
            return Err(ParseError::at(
                t.span,
                format!("{what} is longer than {MAX_NAME} bytes"),
            ));
        }
        self.next();
        Ok((name, t.span))
    }

    fn string(&mut self, what: &str, max: usize) -> PResult<String> {
        match self.peek().tok.clone() {
            Tok::Str(s) => {
                if s.len() > max {
                    return Err(self.err_here(format!("{what} is longer than {max} bytes")));
                }
                self.next();
                Ok(s)
            }
            _ => Err(self.expected(&format!("a quoted {what}"))),
        }
    }

    fn number(&mut self, what: &str, max: u64) -> PResult<u64> {
        let span = self.peek().span;
        let w = match self.peek_word() {
            Some(w) => w.to_string(),
            None => return Err(self.expected(what)),
        };
        match parse_number(&w) {
            Some(n) if n <= max => {
                self.next();
                Ok(n)
            }
            Some(_) => Err(ParseError::at(
                span,
                format!("{w} is out of range for {what} (at most {max})"),
            )),
            None => Err(self.expected(what)),
        }
    }

    fn duration(&mut self, what: &str) -> PResult<Duration> {
        let span = self.peek().span;
        let w = match self.peek_word() {
            Some(w) => w.to_string(),
            None => return Err(self.expected(&format!("a {what} like 30s"))),
        };
        let d = match parse_number(&w) {
            Some(n) => n.checked_mul(1000).map(Duration::from_millis),
            None => symbols::parse_duration(&w),
        };
        match d {
            Some(d) => {
                self.next();
                Ok(d)
            }
            None => Err(ParseError::at(
                span,
                format!("'{w}' is not a valid {what} (like 1h30m, 10s, 500ms)"),
            )),
        }
    }

    /// After a command or a table/chain item: a separator, or the end of the enclosing block.
    fn end_of_item(&mut self) -> PResult<()> {
        match self.peek().tok {
            Tok::Newline | Tok::Semi => {
                self.next();
                Ok(())
            }
            Tok::RBrace | Tok::Eof => Ok(()),
            // nft wants a separator after a block's `}` too; one-line files are common enough
            // to accept without it.
            _ if self.last == Some(Tok::RBrace) => Ok(()),
            _ => Err(self.expected("end of line or ';'")),
        }
    }

    // ----- tables and commands -----

    pub(crate) fn parse_file(mut self) -> PResult<Ruleset> {
        loop {
            self.skip_separators();
            let t = self.peek().clone();
            let w = match &t.tok {
                Tok::Eof => break,
                Tok::Word(w) => w.clone(),
                _ => return Err(self.expected("a command (table, add, insert, flush)")),
            };
            match w.as_str() {
                "table" => {
                    self.next();
                    self.table_command(false)?;
                }
                "add" | "create" => {
                    self.next();
                    self.add_command(w == "create")?;
                }
                "insert" => {
                    self.next();
                    self.expect_word("rule")?;
                    self.rule_command(true)?;
                }
                "flush" => {
                    self.next();
                    self.flush_command()?;
                }
                "include" => return Err(ParseError::at(t.span, "'include' is not supported")),
                "define" => return Err(ParseError::at(t.span, "'define' (variables) is not supported")),
                "delete" | "destroy" | "list" | "reset" | "rename" | "replace" | "monitor" | "describe" => {
                    return Err(ParseError::at(
                        t.span,
                        format!("command '{w}' is not supported in a ruleset file"),
                    ))
                }
                _ => return Err(self.expected("a command (table, add, insert, flush)")),
            }
            self.end_of_item()?;
            if self.peek().tok == Tok::RBrace {
                return Err(self.err_here("unexpected '}' (no block is open)"));
            }
        }
        let rs = self.rs;
        validate(&rs)?;
        Ok(rs)
    }

    /// The whole text as one rule of a table of `family` (statements, then the end).
    pub(crate) fn parse_rule_only(mut self, family: Family) -> PResult<Rule> {
        self.skip_separators();
        let r = self.rule(family)?;
        self.skip_separators();
        if self.peek().tok != Tok::Eof {
            return Err(self.expected("the end of the rule"));
        }
        Ok(r)
    }

    /// A table of `family` to parse one object into.
    fn scratch_table(&mut self, family: Family) {
        self.rs.tables.push(Table {
            family,
            name: String::new(),
            comment: None,
            sets: Vec::new(),
            chains: Vec::new(),
            span: Span::default(),
        });
    }

    fn expect_eof(&mut self, what: &str) -> PResult<()> {
        self.skip_separators();
        if self.peek().tok != Tok::Eof {
            return Err(self.expected(&format!("the end of the {what}")));
        }
        Ok(())
    }

    /// The whole text as the `{ … }` block of chain `name` in a table of `family` (type,
    /// hook, priority, policy, comment and rules; rule references are not checked).
    pub(crate) fn parse_chain_only(mut self, family: Family, name: &str) -> PResult<Chain> {
        self.scratch_table(family);
        self.skip_separators();
        let span = self.peek().span;
        self.declare_chain(0, name.to_string(), span, true, false)?;
        self.expect_eof("chain")?;
        self.rs
            .tables
            .pop()
            .and_then(|mut t| t.chains.pop())
            .ok_or_else(|| ParseError::at(span, "internal error: chain vanished"))
    }

    /// The whole text as the `{ … }` block of set (or map, `is_map`) `name` in a table of
    /// `family`.
    pub(crate) fn parse_set_only(mut self, family: Family, name: &str, is_map: bool) -> PResult<Set> {
        self.scratch_table(family);
        self.skip_separators();
        let span = self.peek().span;
        self.set_declaration(0, name.to_string(), span, is_map, false)?;
        self.expect_eof("set")?;
        self.rs
            .tables
            .pop()
            .and_then(|mut t| t.sets.pop())
            .ok_or_else(|| ParseError::at(span, "internal error: set vanished"))
    }

    /// The whole text as a `{ … }` element list for set `decl` (its elements are ignored).
    pub(crate) fn parse_elements_only(mut self, family: Family, decl: &Set) -> PResult<Vec<SetElem>> {
        self.scratch_table(family);
        let mut d = decl.clone_without_elements();
        d.elements.clear();
        self.rs.tables[0].sets.push(d);
        self.skip_separators();
        self.element_block(0, 0)?;
        self.expect_eof("element list")?;
        Ok(self
            .rs
            .tables
            .pop()
            .and_then(|mut t| t.sets.pop())
            .map(|s| s.elements)
            .unwrap_or_default())
    }

    /// `[family] name`, family defaulting to `ip` as in nft.
    fn family_and_name(&mut self, what: &str) -> PResult<(Family, String, Span)> {
        let span = self.peek().span;
        let fam = match self.peek_word().and_then(family_from) {
            Some(f) => {
                self.next();
                f
            }
            None => Family::Ip,
        };
        let (name, _) = self.name(what)?;
        Ok((fam, name, span))
    }

    fn table_index(&self, key: &TableKey) -> Option<usize> {
        self.rs
            .tables
            .iter()
            .position(|t| t.family == key.0 && t.name == key.1)
    }

    fn existing_table(&self, key: &TableKey, span: Span) -> PResult<usize> {
        self.table_index(key).ok_or_else(|| {
            ParseError::at(
                span,
                format!("table '{} {}' does not exist", family_name(key.0), key.1),
            )
        })
    }

    fn declare_table(&mut self, key: TableKey, span: Span, create: bool) -> PResult<usize> {
        if let Some(i) = self.table_index(&key) {
            if create {
                return Err(ParseError::at(span, format!("table '{}' already exists", key.1)));
            }
            return Ok(i);
        }
        self.rs.tables.push(Table {
            family: key.0,
            name: key.1,
            comment: None,
            sets: Vec::new(),
            chains: Vec::new(),
            span,
        });
        Ok(self.rs.tables.len() - 1)
    }

    fn table_mut(&mut self, ti: usize) -> PResult<&mut Table> {
        let eof = self.eof.span;
        self.rs
            .tables
            .get_mut(ti)
            .ok_or_else(|| ParseError::at(eof, "internal error: table vanished"))
    }

    fn table_ref(&self, ti: usize) -> PResult<&Table> {
        self.rs
            .tables
            .get(ti)
            .ok_or_else(|| ParseError::at(self.eof.span, "internal error: table vanished"))
    }

    /// `table [family] NAME [{ … }]` (also `add table`).
    fn table_command(&mut self, create: bool) -> PResult<()> {
        let (fam, name, span) = self.family_and_name("a table name")?;
        let ti = self.declare_table((fam, name), span, create)?;
        if self.peek().tok == Tok::LBrace {
            self.table_body(ti)?;
        }
        Ok(())
    }

    fn table_body(&mut self, ti: usize) -> PResult<()> {
        let open = self.expect(&Tok::LBrace, "'{'")?;
        loop {
            self.skip_separators();
            let t = self.peek().clone();
            match &t.tok {
                Tok::RBrace => {
                    self.next();
                    return Ok(());
                }
                Tok::Eof => {
                    return Err(ParseError::at(
                        t.span,
                        format!(
                            "unterminated table block: '{{' at {}:{} is never closed",
                            open.line, open.col
                        ),
                    ))
                }
                Tok::Word(w) if w == "chain" => {
                    self.next();
                    let (name, span) = self.name("a chain name")?;
                    self.declare_chain(ti, name, span, true, false)?;
                }
                Tok::Word(w) if w == "set" || w == "map" => {
                    let is_map = w == "map";
                    self.next();
                    let (name, span) = self.name("a set name")?;
                    self.set_declaration(ti, name, span, is_map, false)?;
                }
                Tok::Word(w) if w == "comment" => {
                    self.next();
                    let c = self.string("comment", MAX_COMMENT)?;
                    self.table_mut(ti)?.comment = Some(c);
                }
                Tok::Word(w) if w == "flags" || w == "flowtable" || w == "counter" || w == "quota" => {
                    return Err(ParseError::at(
                        t.span,
                        format!("'{w}' in a table is not supported"),
                    ))
                }
                _ => return Err(self.expected("'chain', 'set', 'map', 'comment' or '}' in the table")),
            }
            self.end_of_item()?;
        }
    }

    /// `add|create table|chain|set|map|rule|element …`.
    fn add_command(&mut self, create: bool) -> PResult<()> {
        let t = self.peek().clone();
        let what = match &t.tok {
            Tok::Word(w) => w.clone(),
            _ => return Err(self.expected("table, chain, set, map, rule or element")),
        };
        match what.as_str() {
            "table" => {
                self.next();
                self.table_command(create)
            }
            "chain" => {
                self.next();
                let (fam, table, span) = self.family_and_name("a table name")?;
                let ti = self.existing_table(&(fam, table), span)?;
                let (name, span) = self.name("a chain name")?;
                let has_block = self.peek().tok == Tok::LBrace;
                self.declare_chain(ti, name, span, has_block, create)
            }
            "set" | "map" => {
                self.next();
                let (fam, table, span) = self.family_and_name("a table name")?;
                let ti = self.existing_table(&(fam, table), span)?;
                let (name, span) = self.name("a set name")?;
                self.set_declaration(ti, name, span, what == "map", create)
            }
            "rule" => {
                self.next();
                self.rule_command(false)
            }
            "element" => {
                self.next();
                let (fam, table, span) = self.family_and_name("a table name")?;
                let ti = self.existing_table(&(fam, table), span)?;
                let (name, span) = self.name("a set name")?;
                let si = self
                    .table_ref(ti)?
                    .sets
                    .iter()
                    .position(|s| s.name == name)
                    .ok_or_else(|| {
                        ParseError::at(span, format!("set '{name}' does not exist in this table"))
                    })?;
                self.element_block(ti, si)
            }
            _ => Err(self.expected("table, chain, set, map, rule or element")),
        }
    }

    /// `add rule|insert rule [family] TABLE CHAIN STATEMENTS`.
    fn rule_command(&mut self, insert: bool) -> PResult<()> {
        let (fam, table, span) = self.family_and_name("a table name")?;
        let ti = self.existing_table(&(fam, table), span)?;
        let (chain, cspan) = self.name("a chain name")?;
        let ci = self
            .table_ref(ti)?
            .chains
            .iter()
            .position(|c| c.name == chain)
            .ok_or_else(|| ParseError::at(cspan, format!("chain '{chain}' does not exist in this table")))?;
        if self.at_word("position") || self.at_word("handle") || self.at_word("index") {
            return Err(self.err_here("rule positions ('position', 'handle', 'index') are not supported"));
        }
        let rule = self.rule(fam)?;
        let chain = self.table_mut(ti)?.chains.get_mut(ci);
        if let Some(chain) = chain {
            if insert {
                chain.rules.insert(0, rule);
            } else {
                chain.rules.push(rule);
            }
        }
        Ok(())
    }

    /// `flush ruleset|table|chain|set …`.
    fn flush_command(&mut self) -> PResult<()> {
        let t = self.peek().clone();
        match self.peek_word() {
            Some("ruleset") => {
                self.next();
                self.rs.tables.clear();
                Ok(())
            }
            Some("table") => {
                self.next();
                let (fam, name, span) = self.family_and_name("a table name")?;
                let ti = self.existing_table(&(fam, name), span)?;
                for c in &mut self.table_mut(ti)?.chains {
                    c.rules.clear();
                }
                Ok(())
            }
            Some("chain") | Some("set") | Some("map") => {
                let is_chain = self.at_word("chain");
                self.next();
                let (fam, table, span) = self.family_and_name("a table name")?;
                let ti = self.existing_table(&(fam, table), span)?;
                let (name, span) = self.name("a name")?;
                let tbl = self.table_mut(ti)?;
                let found = if is_chain {
                    tbl.chains
                        .iter_mut()
                        .find(|c| c.name == name)
                        .map(|c| c.rules.clear())
                        .is_some()
                } else {
                    tbl.sets
                        .iter_mut()
                        .find(|s| s.name == name)
                        .map(|s| s.elements.clear())
                        .is_some()
                };
                if found {
                    Ok(())
                } else {
                    Err(ParseError::at(
                        span,
                        format!("'{name}' does not exist in this table"),
                    ))
                }
            }
            _ => Err(ParseError::at(
                t.span,
                format!(
                    "expected ruleset, table, chain or set after 'flush', found {}",
                    t.tok.describe()
                ),
            )),
        }
    }

    // ----- chains -----

    fn declare_chain(
        &mut self,
        ti: usize,
        name: String,
        span: Span,
        block: bool,
        create: bool,
    ) -> PResult<()> {
        let family = self.table_ref(ti)?.family;
        let existing = self.table_ref(ti)?.chains.iter().position(|c| c.name == name);
        let ci = match existing {
            Some(_) if create => return Err(ParseError::at(span, format!("chain '{name}' already exists"))),
            Some(ci) => ci,
            None => {
                let tbl = self.table_mut(ti)?;
                tbl.chains.push(Chain {
                    name: name.clone(),
                    base: None,
                    comment: None,
                    rules: Vec::new(),
                    span,
                });
                tbl.chains.len() - 1
            }
        };
        if !block {
            return Ok(());
        }
        let open = self.expect(&Tok::LBrace, "'{'")?;
        let mut base: Option<BaseChain> = None;
        let mut policy: Option<(Policy, Span)> = None;
        let mut comment = None;
        let mut rules = Vec::new();
        loop {
            self.skip_separators();
            let t = self.peek().clone();
            match &t.tok {
                Tok::RBrace => {
                    self.next();
                    break;
                }
                Tok::Eof => {
                    return Err(ParseError::at(
                        t.span,
                        format!(
                            "unterminated chain '{name}': '{{' at {}:{} is never closed",
                            open.line, open.col
                        ),
                    ))
                }
                Tok::Word(w) if w == "type" => {
                    self.next();
                    if base.is_some() {
                        return Err(ParseError::at(t.span, "chain type declared twice"));
                    }
                    base = Some(self.base_chain(family)?);
                }
                Tok::Word(w) if w == "policy" => {
                    self.next();
                    let p = match self.peek_word() {
                        Some("accept") => Policy::Accept,
                        Some("drop") => Policy::Drop,
                        _ => return Err(self.expected("'accept' or 'drop' after 'policy'")),
                    };
                    self.next();
                    policy = Some((p, t.span));
                }
                Tok::Word(w) if w == "comment" => {
                    self.next();
                    comment = Some(self.string("comment", MAX_COMMENT)?);
                }
                Tok::Word(w) if w == "devices" || w == "flags" => {
                    return Err(ParseError::at(
                        t.span,
                        format!("'{w}' in a chain is not supported"),
                    ))
                }
                _ => rules.push(self.rule(family)?),
            }
            self.end_of_item()?;
        }
        let chain = self
            .table_mut(ti)?
            .chains
            .get_mut(ci)
            .ok_or_else(|| ParseError::at(span, "internal error: chain vanished"))?;
        if let Some((p, pspan)) = policy {
            // A later block may set the policy of a chain declared as a base chain earlier.
            if base.is_none() {
                base = chain.base.clone();
            }
            match &mut base {
                Some(b) => b.policy = p,
                None => {
                    return Err(ParseError::at(
                        pspan,
                        "'policy' needs a base chain ('type filter hook …')",
                    ))
                }
            }
        }
        if let Some(b) = base {
            match &chain.base {
                Some(old) if (old.hook, old.priority, &old.device) != (b.hook, b.priority, &b.device) => {
                    return Err(ParseError::at(
                        span,
                        format!("chain '{name}' redeclared with a different type"),
                    ))
                }
                _ => chain.base = Some(b),
            }
        }
        if comment.is_some() {
            chain.comment = comment;
        }
        chain.rules.extend(rules);
        Ok(())
    }

    /// `filter hook HOOK [device NAME] priority PRIO` (after `type`).
    fn base_chain(&mut self, family: Family) -> PResult<BaseChain> {
        let t = self.peek().clone();
        match self.peek_word() {
            Some("filter") => {
                self.next();
            }
            Some("nat") | Some("route") => {
                return Err(ParseError::at(
                    t.span,
                    "only 'filter' chains are supported (no 'nat' or 'route')",
                ))
            }
            _ => return Err(self.expected("chain type 'filter'")),
        }
        self.expect_word("hook")?;
        let hspan = self.peek().span;
        let hook = match self.peek_word() {
            Some("prerouting") => Hook::Prerouting,
            Some("input") => Hook::Input,
            Some("forward") => Hook::Forward,
            Some("output") => Hook::Output,
            Some("postrouting") => Hook::Postrouting,
            Some("ingress") => Hook::Ingress,
            _ => {
                return Err(self.expected("a hook (prerouting, input, forward, output, postrouting, ingress)"))
            }
        };
        self.next();
        let valid = match family {
            Family::Netdev => hook == Hook::Ingress,
            Family::Inet => true,
            Family::Ip | Family::Ip6 | Family::Bridge => hook != Hook::Ingress,
        };
        if !valid {
            return Err(ParseError::at(
                hspan,
                format!(
                    "hook '{}' is not available in family {}",
                    hook_name(hook),
                    family_name(family)
                ),
            ));
        }
        let mut device = None;
        if self.eat_word("device") {
            let dspan = self.peek().span;
            let d = match self.peek().tok.clone() {
                Tok::Str(s) => s,
                Tok::Word(w) if is_identifier(&w) => w,
                _ => return Err(self.expected("a device name")),
            };
            if d.is_empty() || d.len() > 15 {
                return Err(ParseError::at(dspan, "device name must be 1 to 15 bytes long"));
            }
            self.next();
            device = Some(d);
        }
        if hook == Hook::Ingress && device.is_none() {
            return Err(self.err_here("an ingress chain needs 'device \"NAME\"'"));
        }
        if hook != Hook::Ingress && device.is_some() {
            return Err(ParseError::at(hspan, "'device' is only valid with hook ingress"));
        }
        self.expect_word("priority")?;
        let priority = self.priority(family, hook)?;
        Ok(BaseChain {
            chain_type: ChainType::Filter,
            hook,
            device,
            priority,
            policy: Policy::Accept,
        })
    }

    fn priority(&mut self, family: Family, hook: Hook) -> PResult<i32> {
        let span = self.peek().span;
        let w = match self.peek_word() {
            Some(w) => w.to_string(),
            None => return Err(self.expected("a priority (a number or raw, mangle, filter, …)")),
        };
        if let Some(n) = parse_signed(&w) {
            self.next();
            return Ok(n);
        }
        // `filter-10` written without spaces.
        if let Some(i) = w.find('-').filter(|&i| i > 0) {
            let (name, off) = w.split_at(i);
            if std_priority(family, hook, name).is_some() && parse_signed(off).is_some() {
                self.split_word(&[name, "-", off.get(1..).unwrap_or("")]);
            }
        }
        let w = self.peek_word().unwrap_or("").to_string();
        let base = std_priority(family, hook, &w).ok_or_else(|| {
            ParseError::at(
                span,
                format!("'{w}' is not a valid priority for hook {} here", hook_name(hook)),
            )
        })?;
        self.next();
        let sign: i64 = if self.eat(&Tok::Plus) {
            1
        } else if self.eat_word("-") {
            -1
        } else {
            return Ok(base);
        };
        let off = self.number("a priority offset", i32::MAX as u64)?;
        i32::try_from(i64::from(base) + sign * i64::try_from(off).unwrap_or(0))
            .map_err(|_| ParseError::at(span, "priority out of range"))
    }

    // ----- sets -----

    /// `{ type …; flags …; elements = { … } }` of `set NAME` / `map NAME`.
    fn set_declaration(
        &mut self,
        ti: usize,
        name: String,
        span: Span,
        is_map: bool,
        create: bool,
    ) -> PResult<()> {
        let what = if is_map { "map" } else { "set" };
        let open = self.expect(&Tok::LBrace, "'{'")?;
        let mut set = Set {
            name: name.clone(),
            key: Vec::new(),
            key_typeof: None,
            data: None,
            data_typeof: None,
            flags: SetFlags::default(),
            timeout: None,
            size: None,
            counter: false,
            comment: None,
            elements: Vec::new(),
            span,
        };
        let mut pending_elements: Vec<(Span, usize)> = Vec::new();
        let mut elem_tokens: Vec<Token> = Vec::new();
        loop {
            self.skip_separators();
            let t = self.peek().clone();
            let w = match &t.tok {
                Tok::RBrace => {
                    self.next();
                    break;
                }
                Tok::Eof => {
                    return Err(ParseError::at(
                        t.span,
                        format!(
                            "unterminated {what} '{name}': '{{' at {}:{} is never closed",
                            open.line, open.col
                        ),
                    ))
                }
                Tok::Word(w) => w.clone(),
                _ => return Err(self.expected(&format!("a {what} property (type, flags, elements, …)"))),
            };
            self.next();
            match w.as_str() {
                "type" | "typeof" => {
                    if !set.key.is_empty() {
                        return Err(ParseError::at(t.span, format!("{what} type declared twice")));
                    }
                    if w == "type" {
                        set.key = self.type_list()?;
                    } else {
                        let e = self.lhs_expr()?;
                        set.key = typeof_types(&e, t.span)?;
                        set.key_typeof = Some(e);
                    }
                    if is_map {
                        let colon = self.peek().span;
                        if !self.eat_word(":") {
                            // `ipv4_addr:verdict` written without spaces.
                            return Err(ParseError::at(colon, format!("expected ':' and the data type of map '{name}', found {}", self.peek().tok.describe())));
                        }
                        if w == "type" {
                            let dspan = self.peek().span;
                            let d = self.type_list()?;
                            match d.as_slice() {
                                [one] => set.data = Some(*one),
                                _ => return Err(ParseError::at(dspan, "concatenated map data is not supported")),
                            }
                        } else if self.at_word("verdict") {
                            self.next();
                            set.data = Some(DataType::Verdict);
                        } else {
                            let e = self.lhs_expr()?;
                            let d = typeof_types(&e, t.span)?;
                            match d.as_slice() {
                                [one] => set.data = Some(*one),
                                _ => return Err(ParseError::at(t.span, "concatenated map data is not supported")),
                            }
                            set.data_typeof = Some(e);
                        }
                    } else if set.key.contains(&DataType::Verdict) {
                        return Err(ParseError::at(t.span, "'verdict' is only valid as the data type of a map"));
                    }
                }
                "flags" => loop {
                    let fspan = self.peek().span;
                    match self.peek_word() {
                        Some("constant") => set.flags.constant = true,
                        Some("interval") => set.flags.interval = true,
                        Some("timeout") => set.flags.timeout = true,
                        Some("dynamic") => set.flags.dynamic = true,
                        _ => {
                            return Err(ParseError::at(
                                fspan,
                                format!("expected a set flag (constant, interval, timeout, dynamic), found {}", self.peek().tok.describe()),
                            ))
                        }
                    }
                    self.next();
                    if !self.eat(&Tok::Comma) {
                        break;
                    }
                },
                "timeout" => set.timeout = Some(self.duration("timeout")?),
                "size" => set.size = Some(u32::try_from(self.number("a set size", u64::from(u32::MAX))?).unwrap_or(u32::MAX)),
                "counter" => set.counter = true,
                "comment" => set.comment = Some(self.string("comment", MAX_COMMENT)?),
                "elements" => {
                    self.expect(&Tok::Assign, "'=' after 'elements'")?;
                    // Elements are parsed once the whole declaration (and so the flags) is known.
                    let start = elem_tokens.len();
                    self.collect_block(&mut elem_tokens)?;
                    pending_elements.push((t.span, start));
                }
                "policy" | "gc-interval" | "auto-merge" => {
                    return Err(ParseError::at(t.span, format!("set property '{w}' is not supported")))
                }
                _ => {
                    return Err(ParseError::at(
                        t.span,
                        format!("expected a {what} property (type, typeof, flags, timeout, size, counter, comment, elements), found '{w}'"),
                    ))
                }
            }
            self.end_of_item()?;
        }
        if set.key.is_empty() {
            return Err(ParseError::at(
                span,
                format!("{what} '{name}' has no 'type' or 'typeof'"),
            ));
        }
        if is_map && set.data.is_none() {
            return Err(ParseError::at(span, format!("map '{name}' has no data type")));
        }
        // Merge into an existing declaration, as nft does for a repeated `set` block.
        let existing = self.table_ref(ti)?.sets.iter().position(|s| s.name == name);
        let si = match existing {
            Some(_) if create => return Err(ParseError::at(span, format!("{what} '{name}' already exists"))),
            Some(si) => {
                let old = self.table_ref(ti)?.sets.get(si);
                let same = old.is_some_and(|o| {
                    o.key == set.key && o.data == set.data && o.flags == set.flags && o.counter == set.counter
                });
                if !same {
                    return Err(ParseError::at(
                        span,
                        format!("{what} '{name}' redeclared differently"),
                    ));
                }
                si
            }
            None => {
                let tbl = self.table_mut(ti)?;
                tbl.sets.push(set);
                tbl.sets.len() - 1
            }
        };
        // Replay the collected element tokens through the element parser.
        if !pending_elements.is_empty() {
            let saved_toks = std::mem::replace(&mut self.toks, elem_tokens);
            let saved_pos = std::mem::replace(&mut self.pos, 0);
            let saved_pb = std::mem::take(&mut self.pushback);
            let mut result = Ok(());
            for _ in &pending_elements {
                result = self.element_block(ti, si);
                if result.is_err() {
                    break;
                }
            }
            self.toks = saved_toks;
            self.pos = saved_pos;
            self.pushback = saved_pb;
            result?;
        }
        Ok(())
    }

    /// Copies a balanced `{ … }` group of tokens into `out` (for parsing later).
    fn collect_block(&mut self, out: &mut Vec<Token>) -> PResult<()> {
        let open = self.expect(&Tok::LBrace, "'{'")?;
        out.push(Token {
            tok: Tok::LBrace,
            span: open,
        });
        let mut depth = 1usize;
        while depth > 0 {
            let t = self.next();
            match t.tok {
                Tok::LBrace => depth += 1,
                Tok::RBrace => depth -= 1,
                Tok::Eof => {
                    return Err(ParseError::at(
                        t.span,
                        format!(
                            "unterminated element list: '{{' at {}:{} is never closed",
                            open.line, open.col
                        ),
                    ))
                }
                _ => {}
            }
            out.push(t);
        }
        Ok(())
    }

    /// `T [. T]…` of a `type` declaration.
    fn type_list(&mut self) -> PResult<Vec<DataType>> {
        let mut out = Vec::new();
        loop {
            let span = self.peek().span;
            let w = match self.peek_word() {
                Some(w) => w.to_string(),
                None => return Err(self.expected("a data type (ipv4_addr, inet_service, …)")),
            };
            // `ipv4_addr:verdict` written without spaces in a map declaration.
            if let Some((l, r)) = w.split_once(':') {
                if symbols::type_from_name(l).is_some() {
                    let r = r.to_string();
                    let l = l.to_string();
                    if r.is_empty() {
                        self.split_word(&[&l, ":"]);
                    } else {
                        self.split_word(&[&l, ":", &r]);
                    }
                    continue;
                }
            }
            let ty = symbols::type_from_name(&w).ok_or_else(|| {
                ParseError::at(span, format!("unknown data type '{w}' (ipv4_addr, ipv6_addr, inet_service, inet_proto, ether_addr, mark, ifname, …)"))
            })?;
            self.next();
            out.push(ty);
            if !self.eat_word(".") {
                return Ok(out);
            }
        }
    }

    /// `{ elem, … }` added to set `si` of table `ti`.
    fn element_block(&mut self, ti: usize, si: usize) -> PResult<()> {
        // Only the declaration is needed: cloning the elements would make repeated
        // `add element` commands quadratic.
        let set = {
            let s = self
                .table_ref(ti)?
                .sets
                .get(si)
                .ok_or_else(|| ParseError::at(self.eof.span, "internal error: set vanished"))?;
            SetDecl {
                name: s.name.clone(),
                key: s.key.clone(),
                data: s.data,
                flags: s.flags,
                timeout: s.timeout,
                counter: s.counter,
            }
        };
        let ctx = ConstCtx {
            types: &set.key,
            intervals: true,
            flag_list: false,
            map_key: set.data.is_some(),
        };
        let elems = self.set_elements(ctx, set.data, true)?;
        for (e, span) in &elems {
            if !set.flags.interval && const_is_interval(&e.key) {
                return Err(ParseError::at(
                    *span,
                    format!(
                        "set '{}' needs 'flags interval' for prefix and range elements",
                        set.name
                    ),
                ));
            }
            if (e.timeout.is_some() || e.expires.is_some()) && !set.flags.timeout && set.timeout.is_none() {
                return Err(ParseError::at(
                    *span,
                    format!("set '{}' needs 'flags timeout' for element timeouts", set.name),
                ));
            }
        }
        let counter = set.counter;
        if let Some(s) = self.table_mut(ti)?.sets.get_mut(si) {
            for (mut e, _) in elems {
                if counter && e.counter.is_none() {
                    e.counter = Some(Counter::default());
                }
                s.elements.push(e);
            }
        }
        Ok(())
    }

    /// `{ e1, e2, … }` with element options; `named` allows an empty list and timeouts.
    fn set_elements(
        &mut self,
        ctx: ConstCtx<'_>,
        data: Option<DataType>,
        named: bool,
    ) -> PResult<Vec<(SetElem, Span)>> {
        let open = self.expect(&Tok::LBrace, "'{'")?;
        let mut out = Vec::new();
        loop {
            self.skip_newlines();
            if self.eat(&Tok::RBrace) {
                break;
            }
            if self.peek().tok == Tok::Eof {
                return Err(self.err_here(format!(
                    "unterminated set: '{{' at {}:{} is never closed",
                    open.line, open.col
                )));
            }
            if self.peek().tok == Tok::LBrace {
                return Err(self.err_here("nested sets are not supported"));
            }
            let span = self.peek().span;
            let key = self.const_value(ctx)?;
            let mut elem = SetElem {
                key,
                timeout: None,
                expires: None,
                counter: None,
                comment: None,
                data: None,
            };
            loop {
                match self.peek_word() {
                    Some("timeout") if named => {
                        self.next();
                        elem.timeout = Some(self.duration("timeout")?);
                    }
                    Some("expires") if named => {
                        self.next();
                        elem.expires = Some(self.duration("expiry time")?);
                    }
                    Some("counter") if named => {
                        self.next();
                        elem.counter = Some(self.counter_values()?);
                    }
                    Some("comment") => {
                        self.next();
                        elem.comment = Some(self.string("comment", MAX_COMMENT)?);
                    }
                    _ => break,
                }
            }
            if let Some(dt) = data {
                if !self.eat_word(":") {
                    return Err(self.expected("':' and the element's data"));
                }
                elem.data = Some(if dt == DataType::Verdict {
                    ElemData::Verdict(self.verdict()?.ok_or_else(|| self.expected("a verdict"))?)
                } else {
                    let types = [dt];
                    ElemData::Const(self.const_value(ConstCtx {
                        types: &types,
                        intervals: true,
                        flag_list: false,
                        map_key: false,
                    })?)
                });
            } else if self.at_word(":") {
                return Err(self.err_here("':' is only valid in maps"));
            }
            out.push((elem, span));
            self.skip_newlines();
            if self.eat(&Tok::Comma) {
                continue;
            }
            self.skip_newlines();
            if self.eat(&Tok::RBrace) {
                break;
            }
            return Err(self.expected("',' or '}' in the set"));
        }
        if out.is_empty() && !named {
            return Err(ParseError::at(open, "an anonymous set must not be empty"));
        }
        Ok(out)
    }

    // ----- rules -----

    /// Statements up to the end of line, `;` or `}`.
    fn rule(&mut self, family: Family) -> PResult<Rule> {
        let span = self.peek().span;
        let mut rule = Rule {
            handle: None,
            stmts: Vec::new(),
            comment: None,
            span,
            stmt_spans: Vec::new(),
        };
        loop {
            let t = self.peek().clone();
            if is_terminator(&t.tok) {
                break;
            }
            if t.tok == Tok::Word("comment".into()) {
                self.next();
                rule.comment = Some(self.string("comment", MAX_COMMENT)?);
                if !is_terminator(&self.peek().tok) {
                    return Err(self.expected("end of rule after the comment"));
                }
                break;
            }
            if let Some(last) = rule.stmts.last() {
                if matches!(last, Stmt::Verdict(_) | Stmt::Vmap { .. } | Stmt::Reject(_)) {
                    return Err(ParseError::at(
                        t.span,
                        format!(
                            "expected end of rule after the {}, found {}",
                            stmt_name(last),
                            t.tok.describe()
                        ),
                    ));
                }
            }
            let stmt = match self.statement(family)? {
                Some(s) => s,
                None => {
                    let what = match (&self.last, rule.stmts.is_empty()) {
                        (Some(prev), false) => format!("a verdict or statement after {}", prev.describe()),
                        _ => "a statement or verdict".to_string(),
                    };
                    return Err(self.expected(&what));
                }
            };
            rule.stmts.push(stmt);
            rule.stmt_spans.push(t.span);
        }
        if rule.stmts.is_empty() {
            return Err(ParseError::at(span, "a rule needs at least one statement"));
        }
        Ok(rule)
    }

    /// One statement, or `None` when the next token cannot start one.
    fn statement(&mut self, family: Family) -> PResult<Option<Stmt>> {
        if let Some(v) = self.verdict()? {
            return Ok(Some(Stmt::Verdict(v)));
        }
        let w = match self.peek_word() {
            Some(w) => w.to_string(),
            None if self.peek().tok == Tok::LParen || self.at_raw(0) => String::new(),
            None => return Ok(None),
        };
        let stmt = match w.as_str() {
            "counter" => {
                self.next();
                Stmt::Counter(self.counter_values()?)
            }
            "limit" => {
                self.next();
                Stmt::Limit(self.limit()?)
            }
            "quota" => {
                self.next();
                Stmt::Quota(self.quota()?)
            }
            "log" => {
                self.next();
                Stmt::Log(self.log()?)
            }
            "reject" => {
                self.next();
                Stmt::Reject(self.reject(family)?)
            }
            "synproxy" => {
                self.next();
                Stmt::Synproxy(self.synproxy()?)
            }
            "notrack" => {
                self.next();
                Stmt::Notrack
            }
            "meter" => {
                self.next();
                Stmt::Meter(self.meter()?)
            }
            "add" | "update" if self.peek_at(1).tok == Tok::At => {
                self.next();
                let op = if w == "add" {
                    DynsetOp::Add
                } else {
                    DynsetOp::Update
                };
                Stmt::Dynset(self.dynset(op)?)
            }
            "delete" => return Err(self.err_here("'delete @set' is not supported")),
            "queue" | "dnat" | "snat" | "masquerade" | "redirect" | "fwd" | "dup" | "tproxy" | "flow" => {
                return Err(self.err_here(format!("statement '{w}' is not supported")))
            }
            _ if w.is_empty() || starts_selector(&w) => self.expr_statement()?,
            _ => return Ok(None),
        };
        Ok(Some(stmt))
    }

    fn verdict(&mut self) -> PResult<Option<Verdict>> {
        let v = match self.peek_word() {
            Some("accept") => Verdict::Accept,
            Some("drop") => Verdict::Drop,
            Some("continue") => Verdict::Continue,
            Some("return") => Verdict::Return,
            Some("jump") | Some("goto") => {
                let jump = self.at_word("jump");
                self.next();
                let (target, _) = self.name("a chain name")?;
                return Ok(Some(if jump {
                    Verdict::Jump(target)
                } else {
                    Verdict::Goto(target)
                }));
            }
            Some("queue") => return Err(self.err_here("verdict 'queue' is not supported")),
            _ => return Ok(None),
        };
        self.next();
        Ok(Some(v))
    }

    fn counter_values(&mut self) -> PResult<Counter> {
        let mut c = Counter::default();
        if self.eat_word("packets") {
            c.packets = self.number("a packet count", u64::MAX)?;
            self.expect_word("bytes")?;
            c.bytes = self.number("a byte count", u64::MAX)?;
        } else if self.at_word("name") {
            return Err(self.err_here("named counters are not supported"));
        }
        Ok(c)
    }

    /// `rate [over|until] N[/unit] …` after `limit`.
    fn limit(&mut self) -> PResult<Limit> {
        self.expect_word("rate")?;
        let over = if self.eat_word("over") {
            true
        } else {
            self.eat_word("until");
            false
        };
        let span = self.peek().span;
        // `10/second`: split the number from the rest first.
        if let Some(w) = self.peek_word().map(str::to_string) {
            if let Some(i) = w.find('/').filter(|&i| i > 0) {
                let (n, rest) = w.split_at(i);
                self.split_word(&[n, rest]);
            }
        }
        let n = self.number("a rate", u64::MAX)?;
        let mut mult = None;
        if let Some(w) = self.peek_word().map(str::to_string) {
            let (unit, rest) = match w.find('/') {
                Some(i) => w.split_at(i),
                None => (w.as_str(), ""),
            };
            if let Some(m) = byte_unit(unit) {
                mult = Some(m);
                if rest.is_empty() {
                    self.next();
                } else {
                    self.split_word(&[unit, rest]);
                    self.next();
                }
            }
        }
        // Now `/unit`, `/ unit`.
        let per_word = match self.peek_word().map(str::to_string) {
            Some(w) if w == "/" => {
                self.next();
                match self.peek_word() {
                    Some(u) => u.to_string(),
                    None => return Err(self.expected("a time unit (second, minute, hour, day, week)")),
                }
            }
            Some(w) if w.starts_with('/') => {
                let u = w.get(1..).unwrap_or("").to_string();
                self.split_word(&["/", &u]);
                self.next();
                u
            }
            _ => return Err(self.expected("'/' and a time unit after the rate (like 10/second)")),
        };
        let per = rate_unit(&per_word)
            .ok_or_else(|| self.expected("a time unit (second, minute, hour, day, week)"))?;
        self.next();
        let rate = match mult {
            Some(m) => n
                .checked_mul(m)
                .ok_or_else(|| ParseError::at(span, "rate too large"))?,
            None => n,
        };
        if rate == 0 {
            return Err(ParseError::at(span, "a rate must be positive"));
        }
        let bytes = mult.is_some();
        let mut burst = if bytes { 0 } else { 5 };
        if self.eat_word("burst") {
            let bspan = self.peek().span;
            let b = self.number("a burst size", u64::MAX)?;
            let unit = self.peek_word().unwrap_or("").to_string();
            if bytes {
                let m = byte_unit(&unit)
                    .ok_or_else(|| self.expected("bytes, kbytes or mbytes after the burst size"))?;
                self.next();
                burst = b
                    .checked_mul(m)
                    .ok_or_else(|| ParseError::at(bspan, "burst too large"))?;
            } else {
                if unit != "packets" {
                    return Err(self.expected("'packets' after the burst size"));
                }
                self.next();
                burst = b;
            }
        }
        Ok(Limit {
            over,
            rate,
            per,
            bytes,
            burst,
        })
    }

    fn byte_amount(&mut self, what: &str) -> PResult<u64> {
        let span = self.peek().span;
        let n = self.number(what, u64::MAX)?;
        let m = match self.peek_word().and_then(byte_unit) {
            Some(m) => m,
            None => return Err(self.expected("bytes, kbytes or mbytes")),
        };
        self.next();
        n.checked_mul(m)
            .ok_or_else(|| ParseError::at(span, format!("{what} too large")))
    }

    fn quota(&mut self) -> PResult<Quota> {
        let over = if self.eat_word("over") {
            true
        } else {
            self.eat_word("until");
            false
        };
        let bytes = self.byte_amount("a quota")?;
        let used = if self.eat_word("used") {
            self.byte_amount("a used amount")?
        } else {
            0
        };
        Ok(Quota { over, bytes, used })
    }

    fn log(&mut self) -> PResult<Log> {
        let mut log = Log {
            prefix: None,
            level: LogLevel::Warn,
            flags: LogFlags::default(),
        };
        loop {
            if self.eat_word("prefix") {
                log.prefix = Some(self.string("log prefix", MAX_LOG_PREFIX)?);
            } else if self.eat_word("level") {
                log.level = match self.peek_word() {
                    Some("emerg") => LogLevel::Emerg,
                    Some("alert") => LogLevel::Alert,
                    Some("crit") => LogLevel::Crit,
                    Some("err") => LogLevel::Err,
                    Some("warn") => LogLevel::Warn,
                    Some("notice") => LogLevel::Notice,
                    Some("info") => LogLevel::Info,
                    Some("debug") => LogLevel::Debug,
                    Some("audit") => LogLevel::Audit,
                    _ => {
                        return Err(self.expected(
                            "a log level (emerg, alert, crit, err, warn, notice, info, debug, audit)",
                        ))
                    }
                };
                self.next();
            } else if self.eat_word("flags") {
                self.log_flags(&mut log.flags)?;
            } else if matches!(self.peek_word(), Some("group" | "snaplen" | "queue-threshold")) {
                return Err(self.err_here(format!(
                    "log option '{}' is not supported",
                    self.peek_word().unwrap_or("")
                )));
            } else {
                return Ok(log);
            }
        }
    }

    /// After `log flags`: `tcp sequence[,options]`, `tcp options`, `ip options`, `skuid`,
    /// `ether` or `all` (several `flags` clauses add up, as in nft).
    fn log_flags(&mut self, flags: &mut LogFlags) -> PResult<()> {
        match self.peek_word() {
            Some("all") => *flags = LogFlags::ALL,
            Some("skuid") => flags.skuid = true,
            Some("ether") => flags.ether = true,
            Some("ip") => {
                self.next();
                if !self.at_word("options") {
                    return Err(self.expected("'options' after 'log flags ip'"));
                }
                flags.ip_options = true;
            }
            Some("tcp") => loop {
                self.next();
                match self.peek_word() {
                    Some("sequence") => flags.tcp_sequence = true,
                    Some("options") => flags.tcp_options = true,
                    _ => return Err(self.expected("'sequence' or 'options' after 'log flags tcp'")),
                }
                if self.peek_at(1).tok != Tok::Comma {
                    break;
                }
                self.next();
            },
            _ => {
                return Err(self.expected(
                    "a log flag (tcp sequence,options, ip options, skuid, ether, all) after 'flags'",
                ))
            }
        }
        self.next();
        Ok(())
    }

    fn reject(&mut self, family: Family) -> PResult<Reject> {
        if !self.eat_word("with") {
            return Ok(Reject::Default);
        }
        let span = self.peek().span;
        let kind = self.peek_word().unwrap_or("").to_string();
        match kind.as_str() {
            "tcp" => {
                self.next();
                self.expect_word("reset")?;
                return Ok(Reject::TcpReset);
            }
            "icmp" | "icmpv6" | "icmpx" => {
                self.next();
            }
            _ => return Err(self.expected("'tcp reset', 'icmp', 'icmpv6' or 'icmpx' after 'reject with'")),
        }
        let ok_family = match kind.as_str() {
            "icmp" => !matches!(family, Family::Ip6),
            "icmpv6" => !matches!(family, Family::Ip),
            _ => true,
        };
        if !ok_family {
            return Err(ParseError::at(
                span,
                format!(
                    "'reject with {kind}' is not possible in family {}",
                    family_name(family)
                ),
            ));
        }
        self.eat_word("type");
        let table: &[(&str, u64)] = match kind.as_str() {
            "icmp" => &[
                ("net-unreachable", 0),
                ("host-unreachable", 1),
                ("prot-unreachable", 2),
                ("port-unreachable", 3),
                ("net-prohibited", 9),
                ("host-prohibited", 10),
                ("admin-prohibited", 13),
            ],
            "icmpv6" => &[
                ("no-route", 0),
                ("admin-prohibited", 1),
                ("addr-unreachable", 3),
                ("port-unreachable", 4),
                ("policy-fail", 5),
                ("reject-route", 6),
            ],
            _ => symbols::ICMPX_CODE,
        };
        let w = self.peek_word().unwrap_or("").to_string();
        let code = symbols::lookup(table, &w)
            .or_else(|| parse_number(&w).filter(|&n| n <= 255 && (kind != "icmpx" || n <= 3)))
            .ok_or_else(|| self.expected(&format!("an {kind} reject code (like port-unreachable)")))?;
        self.next();
        let code = u8::try_from(code).unwrap_or(0);
        Ok(match kind.as_str() {
            "icmp" => Reject::Icmp(code),
            "icmpv6" => Reject::Icmpv6(code),
            _ => Reject::Icmpx(code),
        })
    }

    fn synproxy(&mut self) -> PResult<Synproxy> {
        let mut s = Synproxy::default();
        loop {
            if self.eat_word("mss") {
                s.mss = Some(u16::try_from(self.number("an MSS", 65535)?).unwrap_or(u16::MAX));
            } else if self.eat_word("wscale") {
                s.wscale = Some(u8::try_from(self.number("a window scale", 14)?).unwrap_or(14));
            } else if self.eat_word("timestamp") {
                s.timestamp = true;
            } else if self.eat_word("sack-perm") {
                s.sack_perm = true;
            } else {
                return Ok(s);
            }
        }
    }

    /// `{ KEY [timeout T] STMT… }` of a dynset or meter.
    fn meter_body(&mut self) -> PResult<(Expr, Option<Duration>, Vec<Stmt>)> {
        let open = self.expect(&Tok::LBrace, "'{'")?;
        self.skip_newlines();
        let key = self.lhs_expr()?;
        if matches!(key, Expr::Map { .. }) {
            return Err(self.err_here("a map lookup cannot be a meter key"));
        }
        let timeout = if self.eat_word("timeout") {
            Some(self.duration("timeout")?)
        } else {
            None
        };
        let mut stmts = Vec::new();
        loop {
            self.skip_newlines();
            if self.eat(&Tok::RBrace) {
                return Ok((key, timeout, stmts));
            }
            let s = match self.peek_word() {
                Some("limit") => {
                    self.next();
                    Stmt::Limit(self.limit()?)
                }
                Some("counter") => {
                    self.next();
                    Stmt::Counter(self.counter_values()?)
                }
                Some("quota") => {
                    self.next();
                    Stmt::Quota(self.quota()?)
                }
                _ if self.peek().tok == Tok::Eof => {
                    return Err(self.err_here(format!("unterminated '{{' at {}:{}", open.line, open.col)))
                }
                _ => return Err(self.expected("'limit', 'counter', 'quota' or '}' in the element statement")),
            };
            stmts.push(s);
        }
    }

    fn dynset(&mut self, op: DynsetOp) -> PResult<Dynset> {
        self.expect(&Tok::At, "'@'")?;
        let (set, _) = self.name("a set name")?;
        let (key, timeout, stmts) = self.meter_body()?;
        Ok(Dynset {
            op,
            set,
            key,
            timeout,
            stmts,
        })
    }

    fn meter(&mut self) -> PResult<Meter> {
        let (name, _) = self.name("a meter name")?;
        let size = if self.eat_word("size") {
            Some(u32::try_from(self.number("a meter size", u64::from(u32::MAX))?).unwrap_or(u32::MAX))
        } else {
            None
        };
        let (key, timeout, stmts) = self.meter_body()?;
        Ok(Meter {
            name,
            size,
            key,
            timeout,
            stmts,
        })
    }

    // ----- expressions -----

    /// A statement that starts with a packet expression: a match, `… set …` or `… vmap …`.
    fn expr_statement(&mut self) -> PResult<Stmt> {
        let lspan = self.peek().span;
        let left = self.lhs_expr()?;
        if self.at_word("set") {
            let sspan = self.next().span;
            return self.set_statement(left, lspan, sspan);
        }
        if self.eat_word("vmap") {
            if matches!(left, Expr::Map { .. }) {
                return Err(ParseError::at(lspan, "a map lookup cannot be a vmap key"));
            }
            let map = self.map_ref(&left, DataType::Verdict)?;
            return Ok(Stmt::Vmap { key: left, map });
        }
        if matches!(left, Expr::Map { .. }) {
            return Err(ParseError::at(
                lspan,
                "a map lookup is only supported as the value of 'meta mark set' / 'ct mark set'",
            ));
        }
        self.relational(left, lspan).map(Stmt::Match)
    }

    /// `meta mark set VALUE`, `ct mark set VALUE`, `ct label set NAME`, `FIELD set VALUE`.
    fn set_statement(&mut self, key: Expr, kspan: Span, sspan: Span) -> PResult<Stmt> {
        let (make, ty): (Box<dyn Fn(Expr) -> Stmt>, DataType) = match key {
            Expr::Meta(MetaKey::Mark) => (
                Box::new(|v| Stmt::MetaSet {
                    key: MetaKey::Mark,
                    value: v,
                }),
                DataType::Mark,
            ),
            Expr::Ct(k @ (CtKey::Mark | CtKey::Label)) => {
                (Box::new(move |v| Stmt::CtSet { key: k, value: v }), k.data_type())
            }
            // Fields that are not whole bytes (`ip dscp`) take constants only; the compiler
            // says so with the value's position.
            Expr::Payload(p) => (
                Box::new(move |v| Stmt::PayloadSet { field: p, value: v }),
                p.data_type(),
            ),
            _ => {
                return Err(ParseError::at(
                    kspan,
                    "only 'meta mark', 'ct mark', 'ct label' and header fields can be set",
                ))
            }
        };
        let vspan = self.peek().span;
        let starts_expr = match self.peek_word() {
            Some(w) => starts_selector(w) && ty != DataType::CtLabel,
            None => self.peek().tok == Tok::LParen || (self.at_raw(0) && ty != DataType::CtLabel),
        };
        if starts_expr {
            let e = self.lhs_expr()?;
            let e = if self.eat_word("map") {
                if matches!(e, Expr::Map { .. }) {
                    return Err(ParseError::at(vspan, "nested map lookups are not supported"));
                }
                let map = self.map_ref(&e, ty)?;
                Expr::Map {
                    key: Box::new(e),
                    map,
                }
            } else {
                let et = e.data_type();
                if et.and_then(DataType::bits) != ty.bits() {
                    return Err(ParseError::at(
                        vspan,
                        format!(
                            "cannot set a {} from a {}",
                            type_desc(ty),
                            et.map(type_desc).unwrap_or_else(|| "concatenation".into())
                        ),
                    ));
                }
                e
            };
            return Ok(make(e));
        }
        if is_terminator(&self.peek().tok) {
            return Err(ParseError::at(sspan, "expected a value after 'set'"));
        }
        let v = self.const_expr(ty, 0)?;
        Ok(make(Expr::Const(v)))
    }

    /// `{ k : v, … }` or `@name` after `map` / `vmap`.
    fn map_ref(&mut self, key: &Expr, data: DataType) -> PResult<SetRef> {
        if self.eat(&Tok::At) {
            let (name, _) = self.name("a map name")?;
            return Ok(SetRef::Named(name));
        }
        if self.peek().tok != Tok::LBrace {
            return Err(self.expected("'{' or '@name' after 'map'"));
        }
        let types = key_types(key, self.peek().span)?;
        let ctx = ConstCtx {
            types: &types,
            intervals: true,
            flag_list: false,
            map_key: true,
        };
        let elems = self.set_elements(ctx, Some(data), false)?;
        Ok(SetRef::Anonymous(elems.into_iter().map(|(e, _)| e).collect()))
    }

    /// A packet expression with bitwise operators and concatenation.
    fn lhs_expr(&mut self) -> PResult<Expr> {
        let first = self.bitwise_expr(0)?;
        if !self.at_word(".") {
            return Ok(first);
        }
        let mut parts = vec![first];
        while self.eat_word(".") {
            let e = self.bitwise_expr(0)?;
            match e {
                Expr::Concat(inner) => parts.extend(inner),
                other => parts.push(other),
            }
        }
        Ok(Expr::Concat(parts))
    }

    /// Precedence climbing over `|` (0) < `^` (1) < `&` (2) < `<<`/`>>` (3), as in nft; the
    /// right operand is always a constant, folded at its own precedence.
    fn bitwise_expr(&mut self, min_prec: u8) -> PResult<Expr> {
        let mut left = self.primary_expr()?;
        while let Some((op, prec)) = self.peek_bitop() {
            if prec < min_prec {
                break;
            }
            let ospan = self.next().span;
            let ty = match left.data_type() {
                Some(t) if t.bits().is_some() => t,
                _ => {
                    return Err(ParseError::at(
                        ospan,
                        "bitwise operators need an integer expression on the left",
                    ))
                }
            };
            let operand_ty = if matches!(op, BitOp::Shl | BitOp::Shr) {
                DataType::Integer { bits: 8 }
            } else {
                ty
            };
            let v = self.const_expr(operand_ty, prec + 1)?;
            if let (BitOp::Shl | BitOp::Shr, Value::Int(n)) = (op, &v) {
                if u64::from(ty.bits().unwrap_or(0)) <= *n {
                    return Err(ParseError::at(
                        ospan,
                        format!("shift by {n} is not below the width of the expression"),
                    ));
                }
            }
            left = Expr::Bitwise {
                expr: Box::new(left),
                op,
                value: v,
            };
        }
        Ok(left)
    }

    fn peek_bitop(&self) -> Option<(BitOp, u8)> {
        Some(match &self.peek().tok {
            Tok::Pipe => (BitOp::Or, 0),
            Tok::Caret => (BitOp::Xor, 1),
            Tok::Amp => (BitOp::And, 2),
            Tok::Shl => (BitOp::Shl, 3),
            Tok::Shr => (BitOp::Shr, 3),
            Tok::Word(w) => match w.as_str() {
                "or" => (BitOp::Or, 0),
                "xor" => (BitOp::Xor, 1),
                "and" => (BitOp::And, 2),
                "lshift" => (BitOp::Shl, 3),
                "rshift" => (BitOp::Shr, 3),
                _ => return None,
            },
            _ => return None,
        })
    }

    /// Whether the `n`-th token ahead starts a raw payload `@ll|nh|th,…` (a set reference
    /// `@name` is never followed by a comma).
    fn at_raw(&self, n: usize) -> bool {
        self.peek_at(n).tok == Tok::At
            && self.peek_word_at(n + 1).and_then(raw_base).is_some()
            && self.peek_at(n + 2).tok == Tok::Comma
    }

    /// `@ll|nh|th,OFFSET,LEN`, offset and length in bits (nft's raw payload expression).
    fn raw_payload(&mut self) -> PResult<Expr> {
        let at = self.expect(&Tok::At, "'@'")?;
        let base = self
            .peek_word()
            .and_then(raw_base)
            .ok_or_else(|| self.expected("a raw payload base (ll, nh or th) after '@'"))?;
        self.next();
        self.expect(&Tok::Comma, "',' and the offset in bits")?;
        let offset = self.number("a raw payload offset in bits", RAW_MAX_BITS)?;
        self.expect(&Tok::Comma, "',' and the length in bits")?;
        let lspan = self.peek().span;
        let len = self.number("a raw payload length in bits", u64::from(u32::MAX))?;
        if len == 0 || len > RAW_MAX_LEN {
            return Err(ParseError::at(
                lspan,
                format!("raw payload length {len} is not supported (1 to {RAW_MAX_LEN} bits)"),
            ));
        }
        if offset + len > RAW_MAX_BITS {
            return Err(ParseError::at(
                at,
                "the raw payload ends beyond the first 65535 bytes of its header",
            ));
        }
        Ok(Expr::Raw {
            base,
            offset: u32::try_from(offset).unwrap_or(u32::MAX),
            len: u32::try_from(len).unwrap_or(u32::MAX),
        })
    }

    fn primary_expr(&mut self) -> PResult<Expr> {
        let t = self.peek().clone();
        if self.at_raw(0) {
            return self.raw_payload();
        }
        if t.tok == Tok::LParen {
            self.next();
            self.enter()?;
            let e = self.bitwise_expr(0)?;
            self.leave();
            self.expect(&Tok::RParen, "')'")?;
            return Ok(e);
        }
        let w = match &t.tok {
            Tok::Word(w) => w.clone(),
            _ => {
                return Err(self.expected("a packet expression (ip saddr, tcp dport, meta mark, ct state, …)"))
            }
        };
        match w.as_str() {
            "meta" => {
                self.next();
                let k = self.peek_word().and_then(meta_key).ok_or_else(|| {
                    self.expected("a meta key (l4proto, nfproto, protocol, length, mark, iif, oif, iifname, oifname, cpu, pkttype, hour, day, time)")
                })?;
                self.next();
                Ok(Expr::Meta(k))
            }
            "ct" => {
                self.next();
                let k = self.peek_word().and_then(ct_key).ok_or_else(|| {
                    self.expected("a ct key (state, status, mark, label, direction, expiration, zone)")
                })?;
                self.next();
                Ok(Expr::Ct(k))
            }
            "mark" | "iif" | "oif" | "iifname" | "oifname" | "cpu" | "pkttype" | "l4proto" => {
                self.next();
                Ok(Expr::Meta(meta_key(&w).unwrap_or(MetaKey::Mark)))
            }
            _ => {
                let field_tok = self.peek_at(1).clone();
                let field = match &field_tok.tok {
                    Tok::Word(f) => f.clone(),
                    _ => String::new(),
                };
                match payload_field(&w, &field) {
                    Ok(p) => {
                        self.next();
                        self.next();
                        Ok(Expr::Payload(p))
                    }
                    Err("") => {
                        Err(self
                            .expected("a packet expression (ip saddr, tcp dport, meta mark, ct state, …)"))
                    }
                    Err(list) => Err(ParseError::at(
                        field_tok.span,
                        format!(
                            "expected a '{w}' header field ({list}), found {}",
                            field_tok.tok.describe()
                        ),
                    )),
                }
            }
        }
    }

    /// The operator and right side of a match whose left side is parsed.
    fn relational(&mut self, left: Expr, lspan: Span) -> PResult<Match> {
        let op = match &self.peek().tok {
            Tok::EqEq => Some(RelOp::Eq),
            Tok::NotEq => Some(RelOp::Ne),
            Tok::Lt => Some(RelOp::Lt),
            Tok::Le => Some(RelOp::Le),
            Tok::Gt => Some(RelOp::Gt),
            Tok::Ge => Some(RelOp::Ge),
            Tok::Word(w) => match w.as_str() {
                "eq" => Some(RelOp::Eq),
                "ne" => Some(RelOp::Ne),
                "lt" => Some(RelOp::Lt),
                "le" => Some(RelOp::Le),
                "gt" => Some(RelOp::Gt),
                "ge" => Some(RelOp::Ge),
                _ => None,
            },
            _ => None,
        };
        let op = match op {
            Some(op) => {
                self.next();
                op
            }
            None => RelOp::Implicit,
        };
        let rspan = self.peek().span;
        if is_terminator(&self.peek().tok) || self.peek().tok == Tok::Comma {
            return Err(self.expected("a value to compare with"));
        }
        let types = key_types(&left, lspan)?;
        let ordered = matches!(op, RelOp::Lt | RelOp::Le | RelOp::Gt | RelOp::Ge);
        // levee extension: `tcp sport == tcp dport` compares two packet expressions.
        if op != RelOp::Implicit && self.rhs_is_expr() {
            let right = self.bitwise_expr(0)?;
            let (lt, rt) = (left.data_type(), right.data_type());
            let width = |t: Option<DataType>| t.map(|t| (t.bits(), t == DataType::Ifname));
            if lt.is_none() || rt.is_none() || width(lt) != width(rt) {
                return Err(ParseError::at(
                    rspan,
                    format!(
                        "cannot compare a {} with a {}: both sides must have the same width",
                        lt.map(type_desc).unwrap_or_else(|| "concatenation".into()),
                        rt.map(type_desc).unwrap_or_else(|| "concatenation".into())
                    ),
                ));
            }
            return Ok(Match {
                left,
                op,
                right: Rhs::Expr(right),
            });
        }
        let single_bitmask = types.len() == 1 && types.first().is_some_and(|t| t.is_bitmask());
        let right = match &self.peek().tok {
            Tok::LBrace | Tok::At if ordered => {
                return Err(ParseError::at(
                    rspan,
                    "'<', '<=', '>', '>=' need a single value, not a set",
                ))
            }
            Tok::LBrace => {
                let ctx = ConstCtx {
                    types: &types,
                    intervals: true,
                    flag_list: false,
                    map_key: false,
                };
                let elems = self.set_elements(ctx, None, false)?;
                Rhs::Set(SetRef::Anonymous(elems.into_iter().map(|(e, _)| e).collect()))
            }
            Tok::At => {
                self.next();
                let (name, _) = self.name("a set name")?;
                Rhs::Set(SetRef::Named(name))
            }
            _ => {
                let ctx = ConstCtx {
                    types: &types,
                    intervals: true,
                    flag_list: single_bitmask,
                    map_key: false,
                };
                let c = self.const_value(ctx)?;
                if ordered && !matches!(c, Const::Value(_)) {
                    return Err(ParseError::at(rspan, "'<', '<=', '>', '>=' need a single value"));
                }
                // `tcp flags syn / syn,ack`: masked comparison, nft's listing of `& mask == v`.
                if single_bitmask && op == RelOp::Implicit && self.at_word("/") {
                    self.next();
                    let ty = types.first().copied().unwrap_or(DataType::TcpFlag);
                    let one = [ty];
                    let mask = self.const_value(ConstCtx {
                        types: &one,
                        intervals: false,
                        flag_list: true,
                        map_key: false,
                    })?;
                    return match (c, mask) {
                        (Const::Value(v), Const::Value(m)) => Ok(Match {
                            left: Expr::Bitwise {
                                expr: Box::new(left),
                                op: BitOp::And,
                                value: m,
                            },
                            op: RelOp::Eq,
                            right: Rhs::Const(Const::Value(v)),
                        }),
                        _ => Err(ParseError::at(rspan, "expected flags before and after '/'")),
                    };
                }
                Rhs::Const(c)
            }
        };
        // Normalize `==` to the implicit form wherever they mean the same (see `RelOp`).
        let bitmask_left = left.data_type().is_some_and(DataType::is_bitmask);
        let op = match (op, &right) {
            (RelOp::Eq, Rhs::Const(Const::Value(_))) if bitmask_left => RelOp::Eq,
            (RelOp::Eq, _) => RelOp::Implicit,
            (op, _) => op,
        };
        Ok(Match { left, op, right })
    }

    /// Whether the right side of an explicit comparison is a packet expression.
    fn rhs_is_expr(&self) -> bool {
        // `(meta mark | 0x1) & 0x3`: look past opening parentheses.
        let mut n = 0;
        while self.peek_at(n).tok == Tok::LParen && n <= MAX_DEPTH {
            n += 1;
        }
        if self.at_raw(n) {
            return true;
        }
        match self.peek_word_at(n) {
            Some("meta") | Some("ct") => true,
            Some("mark" | "iif" | "oif" | "iifname" | "oifname" | "cpu" | "pkttype" | "l4proto") => true,
            Some(w) => payload_field(w, self.peek_word_at(n + 1).unwrap_or("")).is_ok(),
            None => false,
        }
    }

    /// A constant for `ctx.types`: a value, prefix or range per component, joined by `.`.
    fn const_value(&mut self, ctx: ConstCtx<'_>) -> PResult<Const> {
        let mut parts = Vec::with_capacity(ctx.types.len());
        for (i, &ty) in ctx.types.iter().enumerate() {
            if i > 0 {
                if !self.at_word(".") {
                    return Err(self.expected(&format!(
                        "'.' and the next part of the {}-part concatenation",
                        ctx.types.len()
                    )));
                }
                self.next();
            }
            let last = i + 1 == ctx.types.len();
            parts.push(self.single_const(ty, ctx, last)?);
        }
        if parts.len() == 1 {
            return parts
                .pop()
                .ok_or_else(|| self.err_here("internal error: empty constant"));
        }
        if self.at_word(".") {
            return Err(self.err_here(format!("too many parts: the key has {} parts", ctx.types.len())));
        }
        Ok(Const::Concat(parts))
    }

    /// One value, prefix or range of type `ty`. `last`: whether a map key may end here.
    fn single_const(&mut self, ty: DataType, ctx: ConstCtx<'_>, last: bool) -> PResult<Const> {
        let span = self.peek().span;
        let t = self.peek().clone();
        if t.tok == Tok::LParen {
            let v = self.const_expr(ty, 0)?;
            return self.maybe_range(ty, v, span, ctx);
        }
        let (text, quoted) = match &t.tok {
            Tok::Word(w) => (w.clone(), false),
            Tok::Str(s) => (s.clone(), true),
            _ => return Err(self.expected(&format!("a {}", type_desc(ty)))),
        };
        if quoted {
            let v = parse_scalar(ty, &text, true).map_err(|m| ParseError::at(span, m))?;
            self.next();
            return self.maybe_range(ty, v, span, ctx);
        }
        let whole = parse_scalar(ty, &text, false);
        if let Ok(v) = whole {
            self.next();
            let v = self.fold_ops(ty, v)?;
            return self.maybe_range(ty, v, span, ctx);
        }
        let whole_err = whole.err().unwrap_or_default();
        // `22:accept` in a map: split off the key.
        if ctx.map_key && last {
            for (i, _) in text.match_indices(':') {
                let (l, r) = text.split_at(i);
                let r = r.get(1..).unwrap_or("");
                if !l.is_empty() && (parse_scalar(ty, l, false).is_ok() || l.contains(['-', '/'])) {
                    let (l, r) = (l.to_string(), r.to_string());
                    if r.is_empty() {
                        self.split_word(&[&l, ":"]);
                    } else {
                        self.split_word(&[&l, ":", &r]);
                    }
                    return self.redispatch(ty, ctx, last);
                }
            }
        }
        // `10.0.0.0/8`.
        if let Some(i) = text.rfind('/') {
            let (a, l) = text.split_at(i);
            let l = l.get(1..).unwrap_or("");
            if matches!(ty, DataType::Ipv4Addr | DataType::Ipv6Addr) {
                let addr = parse_scalar(ty, a, false).map_err(|m| ParseError::at(span, m))?;
                if !ctx.intervals {
                    return Err(ParseError::at(span, "a prefix is not allowed here"));
                }
                self.next();
                return make_prefix(addr, l, span);
            }
            if ty.is_bitmask() && !a.is_empty() {
                // `syn/syn,ack`: the mask form, handled by the caller.
                let (a, l) = (a.to_string(), l.to_string());
                self.split_word(&[&a, "/", &l]);
                return self.redispatch(ty, ctx, last);
            }
        }
        // `1024-65535`, `10.0.0.1-10.0.0.9`.
        for (i, _) in text.match_indices('-') {
            let (l, r) = text.split_at(i);
            let r = r.get(1..).unwrap_or("");
            if let (Ok(lo), Ok(hi)) = (parse_scalar(ty, l, false), parse_scalar(ty, r, false)) {
                if !ctx.intervals {
                    return Err(ParseError::at(span, "a range is not allowed here"));
                }
                self.next();
                return make_range(lo, hi, span);
            }
            if !l.is_empty() && r.is_empty() && parse_scalar(ty, l, false).is_ok() {
                // `1024- 65535`
                let l = l.to_string();
                self.split_word(&[&l, "-"]);
                return self.redispatch(ty, ctx, last);
            }
        }
        Err(ParseError::at(span, whole_err))
    }

    /// Parses again after [`Parser::split_word`]; bounded like parentheses, since a split
    /// word can be split again.
    fn redispatch(&mut self, ty: DataType, ctx: ConstCtx<'_>, last: bool) -> PResult<Const> {
        self.enter()?;
        let c = self.single_const(ty, ctx, last);
        self.leave();
        c
    }

    /// After a value: `- HIGH` makes it a range.
    fn maybe_range(&mut self, ty: DataType, low: Value, span: Span, ctx: ConstCtx<'_>) -> PResult<Const> {
        let w = match self.peek_word() {
            Some(w) if w.starts_with('-') => w.to_string(),
            _ => {
                if ctx.flag_list && self.peek().tok == Tok::Comma {
                    return self.flag_list(ty, low);
                }
                return Ok(Const::Value(low));
            }
        };
        if !ctx.intervals {
            return Err(self.err_here("a range is not allowed here"));
        }
        if w == "-" {
            self.next();
        } else {
            let rest = w.get(1..).unwrap_or("").to_string();
            self.split_word(&["-", &rest]);
            self.next();
        }
        let hspan = self.peek().span;
        let (text, quoted) = match &self.peek().tok {
            Tok::Word(w) => (w.clone(), false),
            Tok::Str(s) => (s.clone(), true),
            _ => return Err(self.expected("the upper end of the range")),
        };
        let hi = parse_scalar(ty, &text, quoted).map_err(|m| ParseError::at(hspan, m))?;
        self.next();
        make_range(low, hi, span)
    }

    /// `established,related`: the bits of a comma list, for bitmask types.
    fn flag_list(&mut self, ty: DataType, first: Value) -> PResult<Const> {
        let mut acc = match first {
            Value::Int(n) => n,
            _ => return Err(self.err_here("a list needs flag values")),
        };
        while self.eat(&Tok::Comma) {
            let span = self.peek().span;
            let w = match self.peek_word() {
                Some(w) => w.to_string(),
                None => return Err(self.expected(&format!("a {} after ','", type_desc(ty)))),
            };
            match parse_scalar(ty, &w, false) {
                Ok(Value::Int(n)) => acc |= n,
                Ok(_) => return Err(ParseError::at(span, "a list needs flag values")),
                Err(m) => return Err(ParseError::at(span, m)),
            }
            self.next();
        }
        Ok(Const::Value(Value::Int(acc)))
    }

    /// After an integer value: `| v`, `& v`, … folded into one constant.
    fn fold_ops(&mut self, ty: DataType, v: Value) -> PResult<Value> {
        if !matches!(v, Value::Int(_))
            || !matches!(
                self.peek().tok,
                Tok::Pipe | Tok::Amp | Tok::Caret | Tok::Shl | Tok::Shr
            )
        {
            return Ok(v);
        }
        self.const_expr_rest(ty, v, 0)
    }

    /// A constant expression: values, parentheses and bitwise operators, folded.
    fn const_expr(&mut self, ty: DataType, min_prec: u8) -> PResult<Value> {
        let span = self.peek().span;
        let first = if self.eat(&Tok::LParen) {
            self.enter()?;
            let v = self.const_expr(ty, 0)?;
            self.leave();
            self.expect(&Tok::RParen, "')'")?;
            v
        } else {
            let (text, quoted) = match &self.peek().tok {
                Tok::Word(w) => (w.clone(), false),
                Tok::Str(s) => (s.clone(), true),
                _ => return Err(self.expected(&format!("a {}", type_desc(ty)))),
            };
            let v = parse_scalar(ty, &text, quoted).map_err(|m| ParseError::at(span, m))?;
            self.next();
            v
        };
        self.const_expr_rest(ty, first, min_prec)
    }

    fn const_expr_rest(&mut self, ty: DataType, mut left: Value, min_prec: u8) -> PResult<Value> {
        loop {
            let (op, prec) = match &self.peek().tok {
                Tok::Pipe => (BitOp::Or, 0),
                Tok::Caret => (BitOp::Xor, 1),
                Tok::Amp => (BitOp::And, 2),
                Tok::Shl => (BitOp::Shl, 3),
                Tok::Shr => (BitOp::Shr, 3),
                _ => return Ok(left),
            };
            if prec < min_prec {
                return Ok(left);
            }
            let ospan = self.next().span;
            let right = self.const_expr(ty, prec + 1)?;
            let (Value::Int(a), Value::Int(b)) = (&left, &right) else {
                return Err(ParseError::at(ospan, "bitwise operators need integer values"));
            };
            let max = symbols::max_for_bits(ty.bits().unwrap_or(64));
            let r = match op {
                BitOp::Or => a | b,
                BitOp::Xor => a ^ b,
                BitOp::And => a & b,
                BitOp::Shl => a.checked_shl(u32::try_from(*b).unwrap_or(u32::MAX)).unwrap_or(0) & max,
                BitOp::Shr => a.checked_shr(u32::try_from(*b).unwrap_or(u32::MAX)).unwrap_or(0),
            };
            left = Value::Int(r);
        }
    }
}

fn parse_signed(w: &str) -> Option<i32> {
    let (neg, digits) = match w.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, w),
    };
    let n = i64::try_from(parse_number(digits)?).ok()?;
    i32::try_from(if neg { -n } else { n }).ok()
}

pub(crate) fn is_identifier(w: &str) -> bool {
    w.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'))
        && w != "."
}

pub(crate) fn family_name(f: Family) -> &'static str {
    match f {
        Family::Ip => "ip",
        Family::Ip6 => "ip6",
        Family::Inet => "inet",
        Family::Netdev => "netdev",
        Family::Bridge => "bridge",
    }
}

pub(crate) fn hook_name(h: Hook) -> &'static str {
    match h {
        Hook::Prerouting => "prerouting",
        Hook::Input => "input",
        Hook::Forward => "forward",
        Hook::Output => "output",
        Hook::Postrouting => "postrouting",
        Hook::Ingress => "ingress",
    }
}

/// The standard priority names valid for a family and hook, with their values (nft(8),
/// "PRIORITY NAMES").
pub(crate) fn std_priorities(family: Family, hook: Hook) -> Vec<(&'static str, i32)> {
    let mut out = Vec::new();
    match family {
        Family::Bridge => {
            if hook == Hook::Prerouting {
                out.push(("dstnat", -300));
            }
            out.push(("filter", -200));
            if hook == Hook::Output {
                out.push(("out", 100));
            }
            if hook == Hook::Postrouting {
                out.push(("srcnat", 300));
            }
        }
        Family::Netdev => out.push(("filter", 0)),
        Family::Ip | Family::Ip6 | Family::Inet => {
            out.push(("raw", -300));
            out.push(("mangle", -150));
            if hook == Hook::Prerouting {
                out.push(("dstnat", -100));
            }
            out.push(("filter", 0));
            out.push(("security", 50));
            if hook == Hook::Postrouting {
                out.push(("srcnat", 100));
            }
        }
    }
    out
}

fn std_priority(family: Family, hook: Hook, name: &str) -> Option<i32> {
    std_priorities(family, hook)
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

fn byte_unit(w: &str) -> Option<u64> {
    match w {
        "bytes" => Some(1),
        "kbytes" => Some(1024),
        "mbytes" => Some(1024 * 1024),
        _ => None,
    }
}

fn rate_unit(w: &str) -> Option<RateUnit> {
    Some(match w {
        "second" => RateUnit::Second,
        "minute" => RateUnit::Minute,
        "hour" => RateUnit::Hour,
        "day" => RateUnit::Day,
        "week" => RateUnit::Week,
        _ => return None,
    })
}

/// The component types of a key expression, or an error for an untyped one.
fn key_types(e: &Expr, span: Span) -> PResult<Vec<DataType>> {
    e.concat_types()
        .into_iter()
        .map(|t| t.ok_or_else(|| ParseError::at(span, "this expression has no usable type here")))
        .collect()
}

/// The key types declared by `typeof EXPR`.
fn typeof_types(e: &Expr, span: Span) -> PResult<Vec<DataType>> {
    if matches!(e, Expr::Map { .. })
        || matches!(e, Expr::Concat(p) if p.iter().any(|x| matches!(x, Expr::Bitwise { .. })))
    {
        return Err(ParseError::at(span, "'typeof' needs plain packet expressions"));
    }
    if matches!(e, Expr::Bitwise { .. }) {
        return Err(ParseError::at(span, "'typeof' needs plain packet expressions"));
    }
    key_types(e, span)
}

fn const_is_interval(c: &Const) -> bool {
    match c {
        Const::Value(_) => false,
        Const::Prefix { .. } | Const::Range { .. } => true,
        Const::Concat(parts) => parts.iter().any(const_is_interval),
    }
}

fn make_range(low: Value, high: Value, span: Span) -> PResult<Const> {
    match (value_bits(&low), value_bits(&high)) {
        (Some(l), Some(h)) if l <= h => Ok(Const::Range { low, high }),
        (Some(_), Some(_)) => Err(ParseError::at(span, "range has its low end above its high end")),
        _ => Err(ParseError::at(span, "ranges of strings are not supported")),
    }
}

/// `ADDR/LEN` masked to LEN bits; a full-length prefix is the address itself.
fn make_prefix(addr: Value, len: &str, span: Span) -> PResult<Const> {
    let width: u64 = match addr {
        Value::Ipv4(_) => 32,
        _ => 128,
    };
    let n = parse_number(len)
        .filter(|&n| n <= width && !len.starts_with("0x"))
        .ok_or_else(|| ParseError::at(span, format!("invalid prefix length '/{len}' (0 to {width})")))?;
    if n == width {
        return Ok(Const::Value(addr));
    }
    let len8 = u8::try_from(n).unwrap_or(0);
    let masked = match addr {
        Value::Ipv4(a) => {
            let mask = if n == 0 { 0 } else { u32::MAX << (32 - n) };
            Value::Ipv4((u32::from(a) & mask).into())
        }
        Value::Ipv6(a) => {
            let mask = if n == 0 { 0 } else { u128::MAX << (128 - n) };
            Value::Ipv6((u128::from(a) & mask).into())
        }
        other => {
            return Err(ParseError::at(
                span,
                format!("a prefix needs an address, not {other:?}"),
            ))
        }
    };
    Ok(Const::Prefix {
        addr: masked,
        len: len8,
    })
}

// ----- validation of references -----

fn validate(rs: &Ruleset) -> PResult<()> {
    for t in &rs.tables {
        for s in &t.sets {
            for e in &s.elements {
                if let Some(ElemData::Verdict(v)) = &e.data {
                    verdict_ok(t, v, s.span)?;
                }
            }
        }
        for c in &t.chains {
            for r in &c.rules {
                check_rule(t, r)?;
            }
        }
    }
    Ok(())
}

/// A jump or goto target of table `t` must be one of its regular chains.
fn verdict_ok(t: &Table, v: &Verdict, span: Span) -> PResult<()> {
    match v {
        Verdict::Jump(name) | Verdict::Goto(name) => match t.chains.iter().find(|c| &c.name == name) {
            None => Err(ParseError::at(
                span,
                format!("chain '{name}' does not exist in table '{}'", t.name),
            )),
            Some(c) if c.base.is_some() => Err(ParseError::at(
                span,
                format!("cannot jump to base chain '{name}'"),
            )),
            Some(_) => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Checks the references of rule `r` of table `t`: chains it jumps to, sets and maps it uses
/// and their key and data types. (`t`'s rules are not looked at; sets need no elements.)
pub(crate) fn check_rule(t: &Table, r: &Rule) -> PResult<()> {
    let find = |name: &str, span: Span| {
        t.sets
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| ParseError::at(span, format!("set '{name}' does not exist in table '{}'", t.name)))
    };
    let key_ok = |key: &Expr, s: &Set, span: Span| -> PResult<()> {
        let kt = key.concat_types();
        let ok = kt.len() == s.key.len()
            && kt
                .iter()
                .zip(&s.key)
                .all(|(a, b)| a.is_some_and(|a| types_compatible(a, *b)));
        if ok {
            Ok(())
        } else {
            Err(ParseError::at(
                span,
                format!("the key does not match the type of set '{}'", s.name),
            ))
        }
    };
    for (i, stmt) in r.stmts.iter().enumerate() {
        let span = r.stmt_spans.get(i).copied().unwrap_or(r.span);
        match stmt {
            Stmt::Verdict(v) => verdict_ok(t, v, span)?,
            Stmt::Match(m) => {
                if let Rhs::Set(SetRef::Named(n)) = &m.right {
                    let s = find(n, span)?;
                    if s.data.is_some() {
                        return Err(ParseError::at(span, format!("'{n}' is a map, not a set")));
                    }
                    key_ok(&m.left, s, span)?;
                }
            }
            Stmt::Vmap { key, map } => match map {
                SetRef::Named(n) => {
                    let s = find(n, span)?;
                    if s.data != Some(DataType::Verdict) {
                        return Err(ParseError::at(span, format!("'{n}' is not a verdict map")));
                    }
                    key_ok(key, s, span)?;
                }
                SetRef::Anonymous(elems) => {
                    for e in elems {
                        if let Some(ElemData::Verdict(v)) = &e.data {
                            verdict_ok(t, v, span)?;
                        }
                    }
                }
            },
            Stmt::MetaSet { value, .. } | Stmt::CtSet { value, .. } => {
                if let Expr::Map {
                    key,
                    map: SetRef::Named(n),
                } = value
                {
                    let s = find(n, span)?;
                    let want = match stmt {
                        Stmt::CtSet { key, .. } => key.data_type(),
                        _ => DataType::Mark,
                    };
                    match s.data {
                        Some(d) if d != DataType::Verdict && types_compatible(d, want) => {}
                        _ => {
                            return Err(ParseError::at(
                                span,
                                format!("map '{n}' does not map to a {}", type_desc(want)),
                            ))
                        }
                    }
                    key_ok(key, s, span)?;
                }
            }
            Stmt::Dynset(d) => {
                let s = find(&d.set, span)?;
                if s.data.is_some() {
                    return Err(ParseError::at(span, format!("'{}' is a map, not a set", d.set)));
                }
                key_ok(&d.key, s, span)?;
            }
            _ => {}
        }
    }
    Ok(())
}
