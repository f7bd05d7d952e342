//! The normalized listing (`list ruleset`), in nft's own layout and spellings.
//!
//! Invariant: parsing the output yields a tree equal to the input (for any tree the parser
//! produced), so the listing can be fed back as a ruleset.

use std::fmt::Write as _;

use super::ast::*;
use super::parser::{family_name, hook_name, is_identifier, std_priorities};
use super::symbols::{self, format_duration, format_scalar, BitsStyle};
use super::PrintOptions;

/// A name as written in a listing: bare when it is an identifier, quoted otherwise.
pub(crate) fn name(n: &str) -> String {
    if is_identifier(n) {
        n.to_string()
    } else {
        format!("\"{n}\"")
    }
}

pub(crate) fn print(rs: &Ruleset, opts: PrintOptions) -> String {
    let mut out = String::new();
    for t in &rs.tables {
        print_table(&mut out, t, opts);
    }
    out
}

fn print_table(out: &mut String, t: &Table, opts: PrintOptions) {
    let _ = writeln!(out, "table {} {} {{", family_name(t.family), name(&t.name));
    if let Some(c) = &t.comment {
        let _ = writeln!(out, "\tcomment \"{c}\"");
    }
    let mut first = true;
    let mut sep = |out: &mut String| {
        // nft separates the objects of a table with an empty line.
        if !first {
            out.push('\n');
        }
        first = false;
    };
    for s in &t.sets {
        sep(out);
        print_set(out, s);
    }
    for c in &t.chains {
        sep(out);
        print_chain(out, t.family, c, opts);
    }
    out.push_str("}\n");
}

fn print_set(out: &mut String, s: &Set) {
    let kind = if s.data.is_some() { "map" } else { "set" };
    let _ = writeln!(out, "\t{kind} {} {{", name(&s.name));
    let types = |ts: &[DataType]| {
        ts.iter()
            .map(|&t| symbols::type_name(t).unwrap_or("integer"))
            .collect::<Vec<_>>()
            .join(" . ")
    };
    let key = match &s.key_typeof {
        Some(e) => format!("typeof {}", expr(e)),
        None => format!("type {}", types(&s.key)),
    };
    let data = match (&s.data_typeof, s.data) {
        (Some(e), _) => format!(" : {}", expr(e)),
        (None, Some(d)) => format!(" : {}", types(&[d])),
        (None, None) => String::new(),
    };
    let _ = writeln!(out, "\t\t{key}{data}");
    if let Some(n) = s.size {
        let _ = writeln!(out, "\t\tsize {n}");
    }
    let f = s.flags;
    let flags: Vec<&str> = [
        (f.constant, "constant"),
        (f.interval, "interval"),
        (f.dynamic, "dynamic"),
        (f.timeout, "timeout"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|&(_, n)| n)
    .collect();
    if !flags.is_empty() {
        let _ = writeln!(out, "\t\tflags {}", flags.join(","));
    }
    if let Some(t) = s.timeout {
        let _ = writeln!(out, "\t\ttimeout {}", format_duration(t));
    }
    if s.counter {
        out.push_str("\t\tcounter\n");
    }
    if let Some(c) = &s.comment {
        let _ = writeln!(out, "\t\tcomment \"{c}\"");
    }
    if !s.elements.is_empty() {
        // Pack elements on lines of about nft's width, continuation lines aligned under `{ `.
        out.push_str("\t\telements = { ");
        let mut line_len = 0usize;
        for (i, e) in s.elements.iter().enumerate() {
            let text = elem(e, &s.key, s.data);
            if i > 0 {
                if line_len + text.len() > 60 {
                    out.push_str(",\n\t\t\t     ");
                    line_len = 0;
                } else {
                    out.push_str(", ");
                    line_len += 2;
                }
            }
            line_len += text.len();
            out.push_str(&text);
        }
        out.push_str(" }\n");
    }
    out.push_str("\t}\n");
}

fn print_chain(out: &mut String, family: Family, c: &Chain, opts: PrintOptions) {
    let _ = writeln!(out, "\tchain {} {{", name(&c.name));
    if let Some(cm) = &c.comment {
        let _ = writeln!(out, "\t\tcomment \"{cm}\"");
    }
    if let Some(b) = &c.base {
        let device = match &b.device {
            Some(d) => format!(" device \"{d}\""),
            None => String::new(),
        };
        let policy = match b.policy {
            Policy::Accept => "accept",
            Policy::Drop => "drop",
        };
        let _ = writeln!(
            out,
            "\t\ttype filter hook {}{device} priority {}; policy {policy};",
            hook_name(b.hook),
            priority(family, b.hook, b.priority)
        );
    }
    for r in &c.rules {
        out.push_str("\t\t");
        out.push_str(&rule(r));
        if let (true, Some(h)) = (opts.handles, r.handle) {
            let _ = write!(out, " # handle {h}");
        }
        out.push('\n');
    }
    out.push_str("\t}\n");
}

/// A priority as nft lists it: a standard name, a name with an offset of at most 10, or a number.
fn priority(family: Family, hook: Hook, p: i32) -> String {
    for (n, v) in std_priorities(family, hook) {
        let off = i64::from(p) - i64::from(v);
        match off {
            0 => return n.to_string(),
            1..=10 => return format!("{n} + {off}"),
            -10..=-1 => return format!("{n} - {}", -off),
            _ => {}
        }
    }
    p.to_string()
}

/// One rule on one line (without the handle).
pub(crate) fn rule(r: &Rule) -> String {
    let mut parts: Vec<String> = r.stmts.iter().map(stmt).collect();
    if let Some(c) = &r.comment {
        parts.push(format!("comment \"{c}\""));
    }
    parts.join(" ")
}

pub(crate) fn verdict(v: &Verdict) -> String {
    match v {
        Verdict::Accept => "accept".into(),
        Verdict::Drop => "drop".into(),
        Verdict::Continue => "continue".into(),
        Verdict::Return => "return".into(),
        Verdict::Jump(c) => format!("jump {}", name(c)),
        Verdict::Goto(c) => format!("goto {}", name(c)),
    }
}

pub(crate) fn rate_unit(u: RateUnit) -> &'static str {
    match u {
        RateUnit::Second => "second",
        RateUnit::Minute => "minute",
        RateUnit::Hour => "hour",
        RateUnit::Day => "day",
        RateUnit::Week => "week",
    }
}

/// A byte count in the largest unit that divides it (nft's choice for rates and quotas).
pub(crate) fn bytes_with_unit(n: u64) -> (u64, &'static str) {
    const MB: u64 = 1024 * 1024;
    if n != 0 && n % MB == 0 {
        (n / MB, "mbytes")
    } else if n != 0 && n % 1024 == 0 {
        (n / 1024, "kbytes")
    } else {
        (n, "bytes")
    }
}

pub(crate) fn log_level(l: LogLevel) -> &'static str {
    match l {
        LogLevel::Emerg => "emerg",
        LogLevel::Alert => "alert",
        LogLevel::Crit => "crit",
        LogLevel::Err => "err",
        LogLevel::Warn => "warn",
        LogLevel::Notice => "notice",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
        LogLevel::Audit => "audit",
    }
}

/// The `flags …` clauses of a log statement, as nft lists them: `all` when every flag is set,
/// otherwise one clause per kind (`tcp sequence,options`, `ip options`, `skuid`, `ether`).
pub(crate) fn log_flag_clauses(f: LogFlags) -> Vec<&'static str> {
    if f == LogFlags::ALL {
        return vec!["all"];
    }
    let mut out = Vec::new();
    match (f.tcp_sequence, f.tcp_options) {
        (true, true) => out.push("tcp sequence,options"),
        (true, false) => out.push("tcp sequence"),
        (false, true) => out.push("tcp options"),
        (false, false) => {}
    }
    if f.ip_options {
        out.push("ip options");
    }
    if f.skuid {
        out.push("skuid");
    }
    if f.ether {
        out.push("ether");
    }
    out
}

/// `(kind, code name)` of a reject statement, as written after `reject with`.
pub(crate) fn reject_parts(r: Reject) -> Option<(&'static str, String)> {
    let code = |table: &'static [(&'static str, u64)], c: u8| {
        symbols::name_of(table, u64::from(c))
            .map(str::to_string)
            .unwrap_or_else(|| c.to_string())
    };
    const ICMP: &[(&str, u64)] = &[
        ("net-unreachable", 0),
        ("host-unreachable", 1),
        ("prot-unreachable", 2),
        ("port-unreachable", 3),
        ("net-prohibited", 9),
        ("host-prohibited", 10),
        ("admin-prohibited", 13),
    ];
    const ICMPV6: &[(&str, u64)] = &[
        ("no-route", 0),
        ("admin-prohibited", 1),
        ("addr-unreachable", 3),
        ("port-unreachable", 4),
        ("policy-fail", 5),
        ("reject-route", 6),
    ];
    match r {
        Reject::Default => None,
        Reject::TcpReset => Some(("tcp reset", String::new())),
        Reject::Icmp(c) => Some(("icmp", code(ICMP, c))),
        Reject::Icmpv6(c) => Some(("icmpv6", code(ICMPV6, c))),
        Reject::Icmpx(c) => Some(("icmpx", code(symbols::ICMPX_CODE, c))),
    }
}

fn limit(l: &Limit) -> String {
    let over = if l.over { "over " } else { "" };
    let per = rate_unit(l.per);
    if l.bytes {
        let (n, u) = bytes_with_unit(l.rate);
        let mut s = format!("limit rate {over}{n} {u}/{per}");
        if l.burst != 0 {
            let (b, bu) = bytes_with_unit(l.burst);
            let _ = write!(s, " burst {b} {bu}");
        }
        s
    } else {
        let mut s = format!("limit rate {over}{}/{per}", l.rate);
        if l.burst != 5 {
            let _ = write!(s, " burst {} packets", l.burst);
        }
        s
    }
}

fn stmt(s: &Stmt) -> String {
    match s {
        Stmt::Match(m) => match_(m),
        Stmt::Counter(c) => format!("counter packets {} bytes {}", c.packets, c.bytes),
        Stmt::Limit(l) => limit(l),
        Stmt::Quota(q) => {
            let (n, u) = bytes_with_unit(q.bytes);
            let mut s = format!("quota {}{n} {u}", if q.over { "over " } else { "" });
            if q.used != 0 {
                let (n, u) = bytes_with_unit(q.used);
                let _ = write!(s, " used {n} {u}");
            }
            s
        }
        Stmt::Log(l) => {
            let mut s = "log".to_string();
            if let Some(p) = &l.prefix {
                let _ = write!(s, " prefix \"{p}\"");
            }
            if l.level != LogLevel::Warn {
                let _ = write!(s, " level {}", log_level(l.level));
            }
            for f in log_flag_clauses(l.flags) {
                let _ = write!(s, " flags {f}");
            }
            s
        }
        Stmt::Reject(r) => match reject_parts(*r) {
            None => "reject".into(),
            Some((k, c)) if c.is_empty() => format!("reject with {k}"),
            Some((k, c)) => format!("reject with {k} {c}"),
        },
        Stmt::Synproxy(p) => {
            let mut s = "synproxy".to_string();
            if let Some(m) = p.mss {
                let _ = write!(s, " mss {m}");
            }
            if let Some(w) = p.wscale {
                let _ = write!(s, " wscale {w}");
            }
            if p.timestamp {
                s.push_str(" timestamp");
            }
            if p.sack_perm {
                s.push_str(" sack-perm");
            }
            s
        }
        Stmt::Notrack => "notrack".into(),
        Stmt::MetaSet { key, value } => format!(
            "{} set {}",
            expr(&Expr::Meta(*key)),
            set_value(value, key.data_type())
        ),
        Stmt::CtSet { key, value } => format!(
            "{} set {}",
            expr(&Expr::Ct(*key)),
            set_value(value, key.data_type())
        ),
        Stmt::PayloadSet { field, value } => format!(
            "{} set {}",
            expr(&Expr::Payload(*field)),
            set_value(value, field.data_type())
        ),
        Stmt::Dynset(d) => {
            let op = match d.op {
                DynsetOp::Add => "add",
                DynsetOp::Update => "update",
            };
            format!(
                "{op} @{} {{ {} }}",
                name(&d.set),
                meter_body(&d.key, d.timeout, &d.stmts)
            )
        }
        Stmt::Meter(m) => {
            let size = m.size.map(|n| format!(" size {n}")).unwrap_or_default();
            format!(
                "meter {}{size} {{ {} }}",
                name(&m.name),
                meter_body(&m.key, m.timeout, &m.stmts)
            )
        }
        Stmt::Vmap { key, map } => format!("{} vmap {}", expr(key), map_ref(map, key, DataType::Verdict)),
        Stmt::Verdict(v) => verdict(v),
    }
}

fn meter_body(key: &Expr, timeout: Option<std::time::Duration>, stmts: &[Stmt]) -> String {
    let mut parts = vec![expr(key)];
    if let Some(t) = timeout {
        parts.push(format!("timeout {}", format_duration(t)));
    }
    // A per-element counter is listed bare, as nft does, unless it carries values.
    parts.extend(stmts.iter().map(|s| match s {
        Stmt::Counter(c) if *c == Counter::default() => "counter".to_string(),
        other => stmt(other),
    }));
    parts.join(" ")
}

fn set_value(v: &Expr, ty: DataType) -> String {
    match v {
        Expr::Const(c) => format_scalar(ty, c, BitsStyle::Or),
        Expr::Map { key, map } => format!("{} map {}", expr(key), map_ref(map, key, ty)),
        other => expr(other),
    }
}

fn map_ref(m: &SetRef, key: &Expr, data: DataType) -> String {
    match m {
        SetRef::Named(n) => format!("@{}", name(n)),
        SetRef::Anonymous(elems) => {
            let types = key_types(key);
            let parts: Vec<String> = elems.iter().map(|e| elem(e, &types, Some(data))).collect();
            format!("{{ {} }}", parts.join(", "))
        }
    }
}

/// The component types of a key expression (unknown parts print as plain integers).
pub(crate) fn key_types(e: &Expr) -> Vec<DataType> {
    e.concat_types()
        .into_iter()
        .map(|t| t.unwrap_or(DataType::Integer { bits: 64 }))
        .collect()
}

fn match_(m: &Match) -> String {
    let lty = m.left.data_type();
    let bitmask = lty.is_some_and(DataType::is_bitmask);
    // nft lists `flags & mask == value` on a bitmask as `flags value / mask`.
    if let (
        Expr::Bitwise {
            expr: inner,
            op: BitOp::And,
            value: mask,
        },
        RelOp::Eq,
        Rhs::Const(Const::Value(v)),
    ) = (&m.left, m.op, &m.right)
    {
        if bitmask && !matches!(**inner, Expr::Bitwise { .. }) {
            if let Some(t) = lty {
                return format!(
                    "{} {} / {}",
                    expr(inner),
                    format_scalar(t, v, BitsStyle::List),
                    format_scalar(t, mask, BitsStyle::List)
                );
            }
        }
    }
    let op = match m.op {
        RelOp::Implicit if matches!(m.left, Expr::Bitwise { .. }) && !bitmask => "== ",
        RelOp::Implicit => "",
        RelOp::Eq => "== ",
        RelOp::Ne => "!= ",
        RelOp::Lt => "< ",
        RelOp::Le => "<= ",
        RelOp::Gt => "> ",
        RelOp::Ge => ">= ",
    };
    // A flag list only stands alone: inside a concatenation `,` would end the value.
    let types = key_types(&m.left);
    let style = if m.op == RelOp::Implicit && types.len() == 1 {
        BitsStyle::List
    } else {
        BitsStyle::Or
    };
    let right = match &m.right {
        Rhs::Const(c) => constant(c, &types, style),
        Rhs::Set(SetRef::Named(n)) => format!("@{}", name(n)),
        Rhs::Set(SetRef::Anonymous(elems)) => {
            let parts: Vec<String> = elems.iter().map(|e| elem(e, &types, None)).collect();
            format!("{{ {} }}", parts.join(", "))
        }
        Rhs::Expr(e) => expr(e),
    };
    format!("{} {op}{right}", expr(&m.left))
}

fn elem(e: &SetElem, types: &[DataType], data: Option<DataType>) -> String {
    let mut s = constant(&e.key, types, BitsStyle::Or);
    if let Some(t) = e.timeout {
        let _ = write!(s, " timeout {}", format_duration(t));
    }
    if let Some(t) = e.expires {
        let _ = write!(s, " expires {}", format_duration(t));
    }
    if let Some(c) = e.counter {
        let _ = write!(s, " counter packets {} bytes {}", c.packets, c.bytes);
    }
    if let Some(c) = &e.comment {
        let _ = write!(s, " comment \"{c}\"");
    }
    match (&e.data, data) {
        (Some(ElemData::Verdict(v)), _) => {
            let _ = write!(s, " : {}", verdict(v));
        }
        (Some(ElemData::Const(c)), Some(t)) => {
            let _ = write!(s, " : {}", constant(c, &[t], BitsStyle::Or));
        }
        (Some(ElemData::Const(c)), None) => {
            let _ = write!(
                s,
                " : {}",
                constant(c, &[DataType::Integer { bits: 64 }], BitsStyle::Or)
            );
        }
        (None, _) => {}
    }
    s
}

fn constant(c: &Const, types: &[DataType], style: BitsStyle) -> String {
    let ty = types.first().copied().unwrap_or(DataType::Integer { bits: 64 });
    match c {
        Const::Value(v) => format_scalar(ty, v, style),
        Const::Prefix { addr, len } => format!("{}/{len}", format_scalar(ty, addr, style)),
        Const::Range { low, high } => {
            let (l, h) = (
                format_scalar(ty, low, BitsStyle::Token),
                format_scalar(ty, high, BitsStyle::Token),
            );
            // Names with dashes (`echo-reply`) would make `a-b` ambiguous.
            if l.contains(['-', ' ']) || h.contains(['-', ' ']) {
                format!("{l} - {h}")
            } else {
                format!("{l}-{h}")
            }
        }
        Const::Concat(parts) => parts
            .iter()
            .enumerate()
            .map(|(i, p)| constant(p, types.get(i..).unwrap_or(&[]), style))
            .collect::<Vec<_>>()
            .join(" . "),
    }
}

pub(crate) fn payload_names(p: Payload) -> (&'static str, &'static str) {
    match p {
        Payload::Ip(f) => (
            "ip",
            match f {
                IpField::Version => "version",
                IpField::Hdrlength => "hdrlength",
                IpField::Dscp => "dscp",
                IpField::Ecn => "ecn",
                IpField::Length => "length",
                IpField::Id => "id",
                IpField::FragOff => "frag-off",
                IpField::Ttl => "ttl",
                IpField::Protocol => "protocol",
                IpField::Checksum => "checksum",
                IpField::Saddr => "saddr",
                IpField::Daddr => "daddr",
            },
        ),
        Payload::Ip6(f) => (
            "ip6",
            match f {
                Ip6Field::Version => "version",
                Ip6Field::Dscp => "dscp",
                Ip6Field::Ecn => "ecn",
                Ip6Field::Flowlabel => "flowlabel",
                Ip6Field::Length => "length",
                Ip6Field::Nexthdr => "nexthdr",
                Ip6Field::Hoplimit => "hoplimit",
                Ip6Field::Saddr => "saddr",
                Ip6Field::Daddr => "daddr",
            },
        ),
        Payload::Tcp(f) => (
            "tcp",
            match f {
                TcpField::Sport => "sport",
                TcpField::Dport => "dport",
                TcpField::Sequence => "sequence",
                TcpField::Ackseq => "ackseq",
                TcpField::Doff => "doff",
                TcpField::Flags => "flags",
                TcpField::Window => "window",
                TcpField::Urgptr => "urgptr",
            },
        ),
        Payload::Udp(f) => (
            "udp",
            match f {
                UdpField::Sport => "sport",
                UdpField::Dport => "dport",
                UdpField::Length => "length",
                UdpField::Checksum => "checksum",
            },
        ),
        Payload::Th(f) => (
            "th",
            match f {
                ThField::Sport => "sport",
                ThField::Dport => "dport",
            },
        ),
        Payload::Icmp(f) | Payload::Icmpv6(f) => (
            if matches!(p, Payload::Icmp(_)) {
                "icmp"
            } else {
                "icmpv6"
            },
            match f {
                IcmpField::Type => "type",
                IcmpField::Code => "code",
                IcmpField::Id => "id",
                IcmpField::Sequence => "sequence",
            },
        ),
        Payload::Ether(f) => (
            "ether",
            match f {
                EtherField::Daddr => "daddr",
                EtherField::Saddr => "saddr",
                EtherField::Type => "type",
            },
        ),
        Payload::Vlan(VlanField::Id) => ("vlan", "id"),
    }
}

/// The base of a raw payload as written after `@`.
pub(crate) fn raw_base_name(b: HeaderBase) -> &'static str {
    match b {
        HeaderBase::Link => "ll",
        HeaderBase::Network => "nh",
        HeaderBase::Transport => "th",
    }
}

pub(crate) fn meta_name(k: MetaKey) -> &'static str {
    match k {
        MetaKey::Length => "length",
        MetaKey::Protocol => "protocol",
        MetaKey::L4proto => "l4proto",
        MetaKey::Nfproto => "nfproto",
        MetaKey::Mark => "mark",
        MetaKey::Iif => "iif",
        MetaKey::Iifname => "iifname",
        MetaKey::Oif => "oif",
        MetaKey::Oifname => "oifname",
        MetaKey::Cpu => "cpu",
        MetaKey::Pkttype => "pkttype",
        MetaKey::Hour => "hour",
        MetaKey::Day => "day",
        MetaKey::Time => "time",
    }
}

pub(crate) fn ct_name(k: CtKey) -> &'static str {
    match k {
        CtKey::State => "state",
        CtKey::Status => "status",
        CtKey::Mark => "mark",
        CtKey::Label => "label",
        CtKey::Direction => "direction",
        CtKey::Expiration => "expiration",
        CtKey::Zone => "zone",
    }
}

fn bitop_prec(op: BitOp) -> (u8, &'static str) {
    match op {
        BitOp::Or => (0, "|"),
        BitOp::Xor => (1, "^"),
        BitOp::And => (2, "&"),
        BitOp::Shl => (3, "<<"),
        BitOp::Shr => (3, ">>"),
    }
}

/// A packet expression, parenthesized where nft's operator precedence needs it.
pub(crate) fn expr(e: &Expr) -> String {
    match e {
        Expr::Payload(p) => {
            let (proto, field) = payload_names(*p);
            format!("{proto} {field}")
        }
        Expr::Raw { base, offset, len } => format!("@{},{offset},{len}", raw_base_name(*base)),
        // nft lists the interface keys without `meta`, everything else with it.
        Expr::Meta(k @ (MetaKey::Iif | MetaKey::Oif | MetaKey::Iifname | MetaKey::Oifname)) => {
            meta_name(*k).into()
        }
        Expr::Meta(k) => format!("meta {}", meta_name(*k)),
        Expr::Ct(k) => format!("ct {}", ct_name(*k)),
        Expr::Concat(parts) => parts.iter().map(expr).collect::<Vec<_>>().join(" . "),
        Expr::Bitwise {
            expr: inner,
            op,
            value,
        } => {
            let (prec, sym) = bitop_prec(*op);
            let left = match &**inner {
                Expr::Bitwise { op: iop, .. } if bitop_prec(*iop).0 < prec => format!("({})", expr(inner)),
                other => expr(other),
            };
            let ty = if matches!(op, BitOp::Shl | BitOp::Shr) {
                DataType::Integer { bits: 8 }
            } else {
                inner.data_type().unwrap_or(DataType::Integer { bits: 64 })
            };
            let mut v = format_scalar(ty, value, BitsStyle::Or);
            if v.contains(' ') {
                v = format!("({v})");
            }
            format!("{left} {sym} {v}")
        }
        Expr::Map { key, map } => {
            format!(
                "{} map {}",
                expr(key),
                map_ref(map, key, DataType::Integer { bits: 64 })
            )
        }
        Expr::Const(v) => format_scalar(DataType::Integer { bits: 64 }, v, BitsStyle::Or),
    }
}
