//! The JSON form, modelled on libnftables' `nft -j list ruleset` output (libnftables-json(5)):
//! one array of objects, tables first, then per table its sets/maps, chains and rules.
//! Output only; values follow nft's conventions (symbolic names as strings, ports and marks as
//! numbers, timeouts in seconds).

use serde_json::{json, Map, Value as J};

use super::ast::*;
use super::parser::{family_name, hook_name};
use super::printer::{
    bytes_with_unit, ct_name, key_types, log_flag_clauses, log_level, meta_name, payload_names, rate_unit,
    raw_base_name, reject_parts,
};
use super::symbols::{self, format_scalar, BitsStyle};

pub(crate) fn ruleset(rs: &Ruleset) -> J {
    let mut items = vec![json!({"metainfo": {
        "version": env!("CARGO_PKG_VERSION"),
        "release_name": "levee",
        "json_schema_version": 1
    }})];
    for t in &rs.tables {
        let fam = family_name(t.family);
        let mut table = json!({"family": fam, "name": t.name});
        if let (Some(c), Some(obj)) = (&t.comment, table.as_object_mut()) {
            obj.insert("comment".into(), json!(c));
        }
        items.push(json!({ "table": table }));
        for s in &t.sets {
            items.push(set(fam, &t.name, s));
        }
        for c in &t.chains {
            let mut obj = Map::new();
            obj.insert("family".into(), json!(fam));
            obj.insert("table".into(), json!(t.name));
            obj.insert("name".into(), json!(c.name));
            if let Some(cm) = &c.comment {
                obj.insert("comment".into(), json!(cm));
            }
            if let Some(b) = &c.base {
                obj.insert("type".into(), json!("filter"));
                obj.insert("hook".into(), json!(hook_name(b.hook)));
                if let Some(d) = &b.device {
                    obj.insert("dev".into(), json!(d));
                }
                obj.insert("prio".into(), json!(b.priority));
                let policy = match b.policy {
                    Policy::Accept => "accept",
                    Policy::Drop => "drop",
                };
                obj.insert("policy".into(), json!(policy));
            }
            items.push(json!({ "chain": obj }));
        }
        for c in &t.chains {
            for r in &c.rules {
                let mut obj = Map::new();
                obj.insert("family".into(), json!(fam));
                obj.insert("table".into(), json!(t.name));
                obj.insert("chain".into(), json!(c.name));
                if let Some(h) = r.handle {
                    obj.insert("handle".into(), json!(h));
                }
                if let Some(cm) = &r.comment {
                    obj.insert("comment".into(), json!(cm));
                }
                obj.insert("expr".into(), J::Array(r.stmts.iter().map(stmt).collect()));
                items.push(json!({ "rule": obj }));
            }
        }
    }
    json!({ "nftables": items })
}

fn type_json(ts: &[DataType]) -> J {
    let names: Vec<J> = ts
        .iter()
        .map(|&t| json!(symbols::type_name(t).unwrap_or("integer")))
        .collect();
    match names.as_slice() {
        [one] => one.clone(),
        _ => J::Array(names),
    }
}

fn set(fam: &str, table: &str, s: &Set) -> J {
    let mut obj = Map::new();
    obj.insert("family".into(), json!(fam));
    obj.insert("name".into(), json!(s.name));
    obj.insert("table".into(), json!(table));
    obj.insert("type".into(), type_json(&s.key));
    if let Some(d) = s.data {
        obj.insert("map".into(), type_json(&[d]));
    }
    let f = s.flags;
    let flags: Vec<&str> = [
        (f.constant, "constant"),
        (f.interval, "interval"),
        (f.timeout, "timeout"),
        (f.dynamic, "dynamic"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|&(_, n)| n)
    .collect();
    if !flags.is_empty() {
        obj.insert("flags".into(), json!(flags));
    }
    if let Some(t) = s.timeout {
        obj.insert("timeout".into(), json!(t.as_secs()));
    }
    if let Some(n) = s.size {
        obj.insert("size".into(), json!(n));
    }
    if let Some(c) = &s.comment {
        obj.insert("comment".into(), json!(c));
    }
    if !s.elements.is_empty() {
        let elems: Vec<J> = s.elements.iter().map(|e| elem(e, &s.key, s.data)).collect();
        obj.insert("elem".into(), J::Array(elems));
    }
    let kind = if s.data.is_some() { "map" } else { "set" };
    json!({ kind: obj })
}

/// A set element: the bare key, wrapped in `{"elem": …}` when it has options, paired with its
/// data for maps.
fn elem(e: &SetElem, types: &[DataType], data: Option<DataType>) -> J {
    let key = constant(&e.key, types, BitsStyle::Or);
    let mut opts = Map::new();
    if let Some(t) = e.timeout {
        opts.insert("timeout".into(), json!(t.as_secs()));
    }
    if let Some(t) = e.expires {
        opts.insert("expires".into(), json!(t.as_secs()));
    }
    if let Some(c) = e.counter {
        opts.insert("counter".into(), json!({"packets": c.packets, "bytes": c.bytes}));
    }
    if let Some(c) = &e.comment {
        opts.insert("comment".into(), json!(c));
    }
    let key = if opts.is_empty() {
        key
    } else {
        opts.insert("val".into(), key);
        json!({ "elem": opts })
    };
    match (&e.data, data) {
        (Some(ElemData::Verdict(v)), _) => json!([key, verdict(v)]),
        (Some(ElemData::Const(c)), t) => {
            json!([
                key,
                constant(c, &[t.unwrap_or(DataType::Integer { bits: 64 })], BitsStyle::Or)
            ])
        }
        (None, _) => key,
    }
}

/// A scalar: names as strings where nft lists names, numbers otherwise.
fn scalar(ty: DataType, v: &Value, style: BitsStyle) -> J {
    match v {
        Value::Str(s) => json!(s),
        Value::Int(n) => match ty {
            DataType::Mark | DataType::InetService | DataType::Integer { .. } => json!(n),
            DataType::Duration => json!(n / 1000),
            // nft writes one flag as a string and several as an array of names.
            t if t.is_bitmask() => {
                let text = format_scalar(t, v, BitsStyle::List);
                if text.starts_with("0x") {
                    json!(n)
                } else if text.contains(',') {
                    J::Array(text.split(',').map(|s| json!(s)).collect())
                } else {
                    json!(text)
                }
            }
            t => {
                let text = format_scalar(t, v, style);
                let text = text.trim_matches('"');
                match text.parse::<u64>() {
                    Ok(n) => json!(n),
                    Err(_) => json!(text),
                }
            }
        },
        other => json!(format_scalar(ty, other, style)),
    }
}

fn constant(c: &Const, types: &[DataType], style: BitsStyle) -> J {
    let ty = types.first().copied().unwrap_or(DataType::Integer { bits: 64 });
    match c {
        Const::Value(v) => scalar(ty, v, style),
        Const::Prefix { addr, len } => json!({"prefix": {"addr": scalar(ty, addr, style), "len": len}}),
        Const::Range { low, high } => json!({"range": [scalar(ty, low, style), scalar(ty, high, style)]}),
        Const::Concat(parts) => json!({"concat": parts
            .iter()
            .enumerate()
            .map(|(i, p)| constant(p, types.get(i..).unwrap_or(&[]), style))
            .collect::<Vec<_>>()}),
    }
}

fn verdict(v: &Verdict) -> J {
    match v {
        Verdict::Accept => json!({"accept": null}),
        Verdict::Drop => json!({"drop": null}),
        Verdict::Continue => json!({"continue": null}),
        Verdict::Return => json!({"return": null}),
        Verdict::Jump(c) => json!({"jump": {"target": c}}),
        Verdict::Goto(c) => json!({"goto": {"target": c}}),
    }
}

fn expr(e: &Expr) -> J {
    match e {
        Expr::Payload(p) => {
            let (proto, field) = payload_names(*p);
            json!({"payload": {"protocol": proto, "field": field}})
        }
        Expr::Raw { base, offset, len } => {
            json!({"payload": {"base": raw_base_name(*base), "offset": offset, "len": len}})
        }
        Expr::Meta(k) => json!({"meta": {"key": meta_name(*k)}}),
        Expr::Ct(k) => json!({"ct": {"key": ct_name(*k)}}),
        Expr::Concat(parts) => json!({"concat": parts.iter().map(expr).collect::<Vec<_>>()}),
        Expr::Bitwise {
            expr: inner,
            op,
            value,
        } => {
            let sym = match op {
                BitOp::And => "&",
                BitOp::Or => "|",
                BitOp::Xor => "^",
                BitOp::Shl => "<<",
                BitOp::Shr => ">>",
            };
            let ty = if matches!(op, BitOp::Shl | BitOp::Shr) {
                DataType::Integer { bits: 8 }
            } else {
                inner.data_type().unwrap_or(DataType::Integer { bits: 64 })
            };
            json!({ sym: [expr(inner), scalar(ty, value, BitsStyle::List)] })
        }
        Expr::Map { key, map } => json!({"map": {"key": expr(key), "data": map_data(map, key, None)}}),
        Expr::Const(v) => scalar(DataType::Integer { bits: 64 }, v, BitsStyle::Or),
    }
}

fn map_data(m: &SetRef, key: &Expr, data: Option<DataType>) -> J {
    match m {
        SetRef::Named(n) => json!(format!("@{n}")),
        SetRef::Anonymous(elems) => {
            let types = key_types(key);
            json!({"set": elems.iter().map(|e| elem(e, &types, data)).collect::<Vec<_>>()})
        }
    }
}

fn match_(m: &Match) -> J {
    let bitmask = m.left.data_type().is_some_and(DataType::is_bitmask);
    let op = match m.op {
        RelOp::Implicit if bitmask && matches!(m.right, Rhs::Const(Const::Value(_))) => "in",
        RelOp::Implicit | RelOp::Eq => "==",
        RelOp::Ne => "!=",
        RelOp::Lt => "<",
        RelOp::Le => "<=",
        RelOp::Gt => ">",
        RelOp::Ge => ">=",
    };
    let style = if m.op == RelOp::Implicit {
        BitsStyle::List
    } else {
        BitsStyle::Or
    };
    let types = key_types(&m.left);
    let right = match &m.right {
        Rhs::Const(c) => constant(c, &types, style),
        Rhs::Set(SetRef::Named(n)) => json!(format!("@{n}")),
        Rhs::Set(SetRef::Anonymous(elems)) => {
            json!({"set": elems.iter().map(|e| elem(e, &types, None)).collect::<Vec<_>>()})
        }
        Rhs::Expr(e) => expr(e),
    };
    json!({"match": {"op": op, "left": expr(&m.left), "right": right}})
}

fn stmts_json(stmts: &[Stmt]) -> J {
    J::Array(stmts.iter().map(stmt).collect())
}

fn with_timeout(key: J, timeout: Option<std::time::Duration>) -> J {
    match timeout {
        Some(t) => json!({"elem": {"val": key, "timeout": t.as_secs()}}),
        None => key,
    }
}

fn stmt(s: &Stmt) -> J {
    match s {
        Stmt::Match(m) => match_(m),
        Stmt::Counter(c) => json!({"counter": {"packets": c.packets, "bytes": c.bytes}}),
        Stmt::Limit(l) => {
            let mut obj = Map::new();
            if l.bytes {
                let (n, u) = bytes_with_unit(l.rate);
                let (b, bu) = bytes_with_unit(l.burst);
                obj.insert("rate".into(), json!(n));
                obj.insert("rate_unit".into(), json!(u));
                obj.insert("burst".into(), json!(b));
                obj.insert("burst_unit".into(), json!(bu));
            } else {
                obj.insert("rate".into(), json!(l.rate));
                obj.insert("burst".into(), json!(l.burst));
            }
            obj.insert("per".into(), json!(rate_unit(l.per)));
            if l.over {
                obj.insert("inv".into(), json!(true));
            }
            json!({ "limit": obj })
        }
        Stmt::Quota(q) => {
            let (n, u) = bytes_with_unit(q.bytes);
            let mut obj = Map::new();
            obj.insert("val".into(), json!(n));
            obj.insert("val_unit".into(), json!(u));
            if q.used != 0 {
                let (n, u) = bytes_with_unit(q.used);
                obj.insert("used".into(), json!(n));
                obj.insert("used_unit".into(), json!(u));
            }
            if q.over {
                obj.insert("inv".into(), json!(true));
            }
            json!({ "quota": obj })
        }
        Stmt::Log(l) => {
            let mut obj = Map::new();
            if let Some(p) = &l.prefix {
                obj.insert("prefix".into(), json!(p));
            }
            if l.level != LogLevel::Warn {
                obj.insert("level".into(), json!(log_level(l.level)));
            }
            // libnftables: one flag as a string, several as an array, `tcp sequence` and
            // `tcp options` as separate entries.
            let flags: Vec<&str> = log_flag_clauses(l.flags)
                .into_iter()
                .flat_map(|c| match c {
                    "tcp sequence,options" => vec!["tcp sequence", "tcp options"],
                    other => vec![other],
                })
                .collect();
            match flags.as_slice() {
                [] => {}
                [one] => {
                    obj.insert("flags".into(), json!(one));
                }
                many => {
                    obj.insert("flags".into(), json!(many));
                }
            }
            if obj.is_empty() {
                json!({"log": null})
            } else {
                json!({ "log": obj })
            }
        }
        Stmt::Reject(r) => match reject_parts(*r) {
            None => json!({"reject": null}),
            Some((k, c)) if c.is_empty() => json!({"reject": {"type": k}}),
            Some((k, c)) => json!({"reject": {"type": k, "expr": c}}),
        },
        Stmt::Synproxy(p) => {
            let mut obj = Map::new();
            if let Some(m) = p.mss {
                obj.insert("mss".into(), json!(m));
            }
            if let Some(w) = p.wscale {
                obj.insert("wscale".into(), json!(w));
            }
            let mut flags = Vec::new();
            if p.timestamp {
                flags.push("timestamp");
            }
            if p.sack_perm {
                flags.push("sack-perm");
            }
            if !flags.is_empty() {
                obj.insert("flags".into(), json!(flags));
            }
            json!({ "synproxy": obj })
        }
        Stmt::Notrack => json!({"notrack": null}),
        Stmt::MetaSet { key, value } => mangle(&Expr::Meta(*key), value, key.data_type()),
        Stmt::CtSet { key, value } => mangle(&Expr::Ct(*key), value, key.data_type()),
        Stmt::PayloadSet { field, value } => mangle(&Expr::Payload(*field), value, field.data_type()),
        Stmt::Dynset(d) => {
            let op = match d.op {
                DynsetOp::Add => "add",
                DynsetOp::Update => "update",
            };
            json!({"set": {
                "op": op,
                "elem": with_timeout(expr(&d.key), d.timeout),
                "set": format!("@{}", d.set),
                "stmt": stmts_json(&d.stmts),
            }})
        }
        Stmt::Meter(m) => {
            let mut obj = Map::new();
            obj.insert("name".into(), json!(m.name));
            obj.insert("key".into(), with_timeout(expr(&m.key), m.timeout));
            let st = match m.stmts.as_slice() {
                [one] => stmt(one),
                many => stmts_json(many),
            };
            obj.insert("stmt".into(), st);
            if let Some(n) = m.size {
                obj.insert("size".into(), json!(n));
            }
            json!({ "meter": obj })
        }
        Stmt::Vmap { key, map } => {
            json!({"vmap": {"key": expr(key), "data": map_data(map, key, Some(DataType::Verdict))}})
        }
        Stmt::Verdict(v) => verdict(v),
    }
}

fn mangle(key: &Expr, value: &Expr, ty: DataType) -> J {
    let v = match value {
        Expr::Const(c) => scalar(ty, c, BitsStyle::Or),
        Expr::Map { key: k, map } => json!({"map": {"key": expr(k), "data": map_data(map, k, Some(ty))}}),
        other => expr(other),
    };
    json!({"mangle": {"key": expr(key), "value": v}})
}
