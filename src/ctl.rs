//! `levee ctl`: the operator's command line, nft-like, speaking the JSON API
//! (`levee_control::api`) over the management socket.
//!
//! ```text
//! levee ctl [-s SOCKET] [-j] [-e] [-a] [--owner TAG] [--expect-generation G] COMMAND…
//! levee ctl -f FILE                       a whole file as one transaction (nft -f)
//! list ruleset | table [F] T | chain [F] T C | set [F] T S
//! add|insert rule [F] T C [position H | index N] RULE…
//! replace rule [F] T C handle H RULE…     delete rule [F] T C handle H
//! ensure rule [F] T C RULE…               add the rule unless an equal one is there
//! add|delete element [F] T S { E, … }     flush chain|set [F] T N    flush ruleset
//! add table [F] T    delete table [F] T   add chain [F] T C [{ … }]  delete chain [F] T C
//! add set|map [F] T S { … }               delete set|map [F] T S
//! search [family F] [table T] [chain C] [owner O] [expr STATEMENTS…]
//! reset counters | stats | monitor
//! conntrack list [family ipv4|ipv6] [proto P] [addr A] [port N] [state S] [mark M] [max N]
//! ```
//!
//! F defaults to `ip`, as in nft. Errors go to stderr (`FILE:LINE:COL: message` for `-f`)
//! and the exit status is non-zero. Runs on the operator's shell; holds no state.

use levee_control::api::{CtFilter, Fam, ListWhat, MonitorEvent, OpRequest, Request, Response};
use levee_control::rules::family_from_name;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `levee ctl`'s options (the command words are parsed by hand, as nft does).
#[derive(clap::Args, Debug)]
pub struct CtlArgs {
    /// The management socket.
    #[arg(short = 's', long = "socket", env = "LEVEE_SOCKET", default_value = levee_control::config::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Talk to the API over TCP instead (HOST:PORT, `[management] api_address`).
    #[arg(long = "api")]
    pub api: Option<String>,
    /// Apply a ruleset file as one transaction (it replaces everything when it says
    /// `flush ruleset`).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// JSON output.
    #[arg(short = 'j', long = "json")]
    pub json: bool,
    /// Print the handles of the rules a change added (nft's --echo).
    #[arg(short = 'e', long = "echo")]
    pub echo: bool,
    /// Show rule handles in listings (nft's -a).
    #[arg(short = 'a', long = "handle")]
    pub handles: bool,
    /// Owner tag for the rules and tables a change makes.
    #[arg(long)]
    pub owner: Option<String>,
    /// Refuse the change unless this is the current generation.
    #[arg(long = "expect-generation")]
    pub expect_generation: Option<u64>,
    /// Seconds to wait for an answer.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// The command, nft-like (`list ruleset`, `add rule inet t input tcp dport 22 accept`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub words: Vec<String>,
}

/// What the command line asks for.
#[derive(Debug, PartialEq)]
enum Action {
    Send(Request),
    Monitor,
}

/// Words of a command, consumed front to back.
struct Words<'a> {
    w: &'a [String],
    i: usize,
}

impl<'a> Words<'a> {
    fn next(&mut self, what: &str) -> Result<&'a str, String> {
        let w = self.w.get(self.i).ok_or_else(|| format!("missing {what}"))?;
        self.i += 1;
        Ok(w)
    }

    fn peek(&self) -> Option<&'a str> {
        self.w.get(self.i).map(String::as_str)
    }

    /// An optional family, then the table name.
    fn family_table(&mut self) -> Result<(Fam, String), String> {
        let fam = match self.peek().and_then(family_from_name) {
            Some(f) => {
                self.i += 1;
                f
            }
            None => levee_control::rules::Family::Ip,
        };
        Ok((Fam(fam), self.next("table name")?.to_owned()))
    }

    fn rest(&mut self) -> String {
        let r = self.w[self.i..].join(" ");
        self.i = self.w.len();
        r
    }

    fn end(&self) -> Result<(), String> {
        match self.peek() {
            None => Ok(()),
            Some(w) => Err(format!("unexpected {w:?}")),
        }
    }

    fn number<T: std::str::FromStr>(&mut self, what: &str) -> Result<T, String> {
        let w = self.next(what)?;
        w.parse().map_err(|_| format!("{what} {w:?} is not a number"))
    }
}

fn commit(args: &CtlArgs, ops: Vec<OpRequest>) -> Action {
    Action::Send(Request::Commit {
        ops,
        owner: args.owner.clone(),
        expected_generation: args.expect_generation,
    })
}

/// Parses the command words.
fn parse(args: &CtlArgs) -> Result<Action, String> {
    if let Some(f) = &args.file {
        if !args.words.is_empty() {
            return Err("-f FILE takes no command".into());
        }
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: cannot read: {e}", f.display()))?;
        return Ok(commit(args, vec![OpRequest::Load { text, flush: None }]));
    }
    let mut w = Words { w: &args.words, i: 0 };
    let verb = w.next("a command (list, add, insert, replace, delete, ensure, flush, search, reset, stats, monitor, conntrack)")?;
    let action = match verb {
        "list" => {
            let what = w.next("what to list (ruleset, table, chain, set)")?;
            let (what, family, table, name) = match what {
                "ruleset" => (ListWhat::Ruleset, None, None, None),
                "table" => {
                    let (f, t) = w.family_table()?;
                    (ListWhat::Table, Some(f), Some(t), None)
                }
                "chain" | "set" | "map" => {
                    let (f, t) = w.family_table()?;
                    let n = w.next("name")?.to_owned();
                    let what = if what == "chain" {
                        ListWhat::Chain
                    } else {
                        ListWhat::Set
                    };
                    (what, Some(f), Some(t), Some(n))
                }
                x => return Err(format!("cannot list {x:?} (ruleset, table, chain, set)")),
            };
            w.end()?;
            Action::Send(Request::List {
                what,
                family,
                table,
                name,
                handles: args.handles,
                json: args.json,
            })
        }
        "add" | "insert" | "replace" | "delete" | "ensure" | "create" => {
            let object = w.next("an object (rule, element, table, chain, set)")?;
            let op = object_op(verb, object, &mut w)?;
            commit(args, vec![op])
        }
        "flush" => {
            let op = match w.next("ruleset, chain or set")? {
                "ruleset" => OpRequest::FlushRuleset {},
                "chain" => {
                    let (family, table) = w.family_table()?;
                    OpRequest::FlushChain {
                        family,
                        table,
                        name: w.next("chain name")?.to_owned(),
                    }
                }
                "set" | "map" => {
                    let (family, table) = w.family_table()?;
                    OpRequest::FlushSet {
                        family,
                        table,
                        name: w.next("set name")?.to_owned(),
                    }
                }
                x => return Err(format!("cannot flush {x:?} (ruleset, chain, set)")),
            };
            w.end()?;
            commit(args, vec![op])
        }
        "search" => {
            let (mut family, mut table, mut chain, mut owner, mut expr) = (None, None, None, None, None);
            while let Some(k) = w.peek() {
                w.i += 1;
                match k {
                    "family" => {
                        let f = w.next("family")?;
                        family = Some(Fam(
                            family_from_name(f).ok_or_else(|| format!("unknown family {f:?}"))?
                        ));
                    }
                    "table" => table = Some(w.next("table")?.to_owned()),
                    "chain" => chain = Some(w.next("chain")?.to_owned()),
                    "owner" => owner = Some(w.next("owner")?.to_owned()),
                    "expr" => expr = Some(w.rest()),
                    x => {
                        return Err(format!(
                            "unknown search key {x:?} (family, table, chain, owner, expr)"
                        ))
                    }
                }
            }
            Action::Send(Request::Search {
                family,
                table,
                chain,
                owner,
                expr,
            })
        }
        "reset" => {
            match w.next("counters")? {
                "counters" => {}
                x => return Err(format!("cannot reset {x:?} (counters)")),
            }
            w.end()?;
            Action::Send(Request::ResetCounters {})
        }
        "stats" => {
            w.end()?;
            Action::Send(Request::Stats {})
        }
        "monitor" => {
            w.end()?;
            Action::Monitor
        }
        "conntrack" => {
            match w.next("list")? {
                "list" | "-L" => {}
                x => return Err(format!("unknown conntrack command {x:?} (list)")),
            }
            let mut f = CtFilter::default();
            let mut max = None;
            while let Some(k) = w.peek() {
                w.i += 1;
                match k {
                    "family" => f.family = Some(w.next("family")?.to_owned()),
                    "proto" | "protocol" => f.protocol = Some(w.next("protocol")?.to_owned()),
                    "addr" | "src" | "dst" | "address" => {
                        let a = w.next("address")?;
                        f.addr = Some(a.parse().map_err(|_| format!("{a:?} is not an IP address"))?);
                    }
                    "port" => f.port = Some(w.number("port")?),
                    "state" => f.state = Some(w.next("state")?.to_owned()),
                    "mark" => f.mark = Some(w.number("mark")?),
                    "max" => max = Some(w.number("max")?),
                    x => {
                        return Err(format!(
                            "unknown conntrack filter {x:?} (family, proto, addr, port, state, mark, max)"
                        ))
                    }
                }
            }
            Action::Send(Request::Conntrack { filter: f, max })
        }
        x => return Err(format!("unknown command {x:?}")),
    };
    Ok(action)
}

fn object_op(verb: &str, object: &str, w: &mut Words) -> Result<OpRequest, String> {
    let create = verb == "create";
    let op = match (verb, object) {
        ("add" | "insert" | "ensure" | "replace", "rule") => {
            let (family, table) = w.family_table()?;
            let chain = w.next("chain name")?.to_owned();
            let (mut position, mut index, mut handle) = (None, None, None);
            loop {
                match w.peek() {
                    Some("position") if verb != "replace" && verb != "ensure" => {
                        w.i += 1;
                        position = Some(w.number("position (a rule handle)")?);
                    }
                    Some("index") if verb != "replace" && verb != "ensure" => {
                        w.i += 1;
                        index = Some(w.number("index")?);
                    }
                    Some("handle") if verb == "replace" => {
                        w.i += 1;
                        handle = Some(w.number("handle")?);
                    }
                    _ => break,
                }
            }
            let rule = w.rest();
            if rule.is_empty() {
                return Err("missing the rule".into());
            }
            match verb {
                "add" => OpRequest::AddRule {
                    family,
                    table,
                    chain,
                    rule,
                    position,
                    index,
                },
                "insert" => OpRequest::InsertRule {
                    family,
                    table,
                    chain,
                    rule,
                    position,
                    index,
                },
                "ensure" => OpRequest::EnsureRule {
                    family,
                    table,
                    chain,
                    rule,
                },
                _ => OpRequest::ReplaceRule {
                    handle: handle.ok_or("replace rule needs `handle H`")?,
                    rule,
                },
            }
        }
        ("delete", "rule") => {
            let _ = w.family_table()?;
            let _chain = w.next("chain name")?;
            match w.next("handle")? {
                "handle" => {}
                x => return Err(format!("expected `handle H`, found {x:?}")),
            }
            let handle = w.number("handle")?;
            w.end()?;
            OpRequest::DeleteRule { handle }
        }
        ("add" | "delete", "element") => {
            let (family, table) = w.family_table()?;
            let set = w.next("set name")?.to_owned();
            let elements = w.rest();
            if elements.is_empty() {
                return Err("missing the elements ({ … })".into());
            }
            if verb == "add" {
                OpRequest::AddElement {
                    family,
                    table,
                    set,
                    elements,
                }
            } else {
                OpRequest::DeleteElement {
                    family,
                    table,
                    set,
                    elements,
                }
            }
        }
        ("add" | "create", "table") => {
            let (family, name) = w.family_table()?;
            w.end()?;
            OpRequest::AddTable {
                family,
                name,
                comment: None,
                create,
            }
        }
        ("delete", "table") => {
            let (family, name) = w.family_table()?;
            w.end()?;
            OpRequest::DeleteTable { family, name }
        }
        ("add" | "create", "chain") => {
            let (family, table) = w.family_table()?;
            let name = w.next("chain name")?.to_owned();
            let spec = w.rest();
            OpRequest::AddChain {
                family,
                table,
                name,
                spec: (!spec.is_empty()).then_some(spec),
                create,
            }
        }
        ("delete", "chain") => {
            let (family, table) = w.family_table()?;
            let name = w.next("chain name")?.to_owned();
            w.end()?;
            OpRequest::DeleteChain { family, table, name }
        }
        ("add" | "create", "set" | "map") => {
            let (family, table) = w.family_table()?;
            let name = w.next("set name")?.to_owned();
            let spec = w.rest();
            if spec.is_empty() {
                return Err("missing the set's { type …; } block".into());
            }
            OpRequest::AddSet {
                family,
                table,
                name,
                map: object == "map",
                spec,
                create,
            }
        }
        ("delete", "set" | "map") => {
            let (family, table) = w.family_table()?;
            let name = w.next("set name")?.to_owned();
            w.end()?;
            OpRequest::DeleteSet { family, table, name }
        }
        (v, o) => return Err(format!("cannot {v} {o:?}")),
    };
    Ok(op)
}

/// A connection to the API.
struct Conn {
    r: BufReader<Box<dyn std::io::Read>>,
    w: Box<dyn Write>,
}

fn connect(args: &CtlArgs, timeout: Option<Duration>) -> Result<Conn, String> {
    if let Some(a) = &args.api {
        let s =
            std::net::TcpStream::connect(a).map_err(|e| format!("cannot connect to the API at {a}: {e}"))?;
        s.set_read_timeout(timeout).map_err(|e| e.to_string())?;
        let w = s.try_clone().map_err(|e| e.to_string())?;
        return Ok(Conn {
            r: BufReader::new(Box::new(s)),
            w: Box::new(w),
        });
    }
    let p = &args.socket;
    let s = std::os::unix::net::UnixStream::connect(p).map_err(|e| {
        format!(
            "cannot connect to {}: {e} (is `levee run` running? -s names another socket)",
            p.display()
        )
    })?;
    s.set_read_timeout(timeout).map_err(|e| e.to_string())?;
    let w = s.try_clone().map_err(|e| e.to_string())?;
    Ok(Conn {
        r: BufReader::new(Box::new(s)),
        w: Box::new(w),
    })
}

impl Conn {
    fn send(&mut self, req: &Request) -> Result<(), String> {
        let line = serde_json::to_string(req).map_err(|e| e.to_string())?;
        self.w
            .write_all(line.as_bytes())
            .and_then(|_| self.w.write_all(b"\n"))
            .and_then(|_| self.w.flush())
            .map_err(|e| format!("cannot send the request: {e}"))
    }

    fn line(&mut self) -> Result<Option<String>, String> {
        let mut l = String::new();
        match self.r.read_line(&mut l) {
            Ok(0) => Ok(None),
            Ok(_) => Ok(Some(l)),
            Err(e) => Err(format!("no answer: {e}")),
        }
    }

    fn response(&mut self) -> Result<Response, String> {
        let l = self.line()?.ok_or("the connection closed without an answer")?;
        serde_json::from_str(&l).map_err(|e| format!("unreadable answer ({e}): {l}"))
    }
}

/// The error text for a failed response (`FILE:LINE:COL: message` for a file's error).
fn error_text(r: &Response, file: Option<&Path>) -> String {
    let Some(e) = &r.error else {
        return "the request failed".into();
    };
    match (file, e.line, e.col) {
        (Some(f), Some(l), Some(c)) => {
            // The message starts with the operation and its own position; keep what follows.
            let msg = e
                .message
                .split_once(&format!("{l}:{c}: "))
                .map_or(e.message.as_str(), |x| x.1);
            format!("{}:{l}:{c}: {msg}", f.display())
        }
        _ => format!("Error: {}", e.message),
    }
}

/// Runs `levee ctl`; the text to print on success.
pub fn main(args: &CtlArgs) -> Result<(), String> {
    let action = parse(args)?;
    let timeout = Some(Duration::from_secs(args.timeout.max(1)));
    let out = &mut std::io::stdout();
    match action {
        Action::Monitor => {
            let mut c = connect(args, None)?;
            c.send(&Request::Monitor {})?;
            let r = c.response()?;
            if !r.ok {
                return Err(error_text(&r, None));
            }
            while let Some(l) = c.line()? {
                let text = if args.json {
                    l.trim_end().to_owned()
                } else {
                    match serde_json::from_str::<MonitorEvent>(&l) {
                        Ok(ev) => monitor_line(&ev),
                        Err(_) => l.trim_end().to_owned(),
                    }
                };
                if writeln!(out, "{text}").and_then(|_| out.flush()).is_err() {
                    return Ok(());
                }
            }
            Err("the connection closed (levee stopped?)".into())
        }
        Action::Send(req) => {
            let mut c = connect(args, timeout)?;
            c.send(&req)?;
            let r = c.response()?;
            if !r.ok {
                return Err(error_text(&r, args.file.as_deref()));
            }
            let result = r.result.clone().unwrap_or(Value::Null);
            let text = if args.json {
                let v = match &req {
                    Request::Commit { .. } => {
                        serde_json::json!({ "generation": r.generation, "result": result })
                    }
                    _ => result,
                };
                serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?
            } else {
                render(&req, &r, &result, args.echo)
            };
            if !text.is_empty() {
                let _ = writeln!(out, "{}", text.trim_end());
            }
            Ok(())
        }
    }
}

fn render(req: &Request, r: &Response, v: &Value, echo: bool) -> String {
    match req {
        Request::List { .. } => v["text"].as_str().unwrap_or("").to_owned(),
        Request::Commit { .. } => {
            if !echo {
                return String::new();
            }
            let mut s = String::new();
            for res in v["results"].as_array().into_iter().flatten() {
                if let Some(h) = res["handle"].as_u64() {
                    s += &format!("# handle {h}\n");
                }
                for h in res["handles"].as_array().into_iter().flatten() {
                    s += &format!("# handle {h}\n");
                }
            }
            s += &format!("# generation {}", r.generation);
            s
        }
        Request::Search { .. } => v["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                format!(
                    "{} {} {} {} # handle {}{}",
                    r["family"].as_str().unwrap_or(""),
                    r["table"].as_str().unwrap_or(""),
                    r["chain"].as_str().unwrap_or(""),
                    r["rule"].as_str().unwrap_or(""),
                    r["handle"],
                    r["owner"]
                        .as_str()
                        .map(|o| format!(" owner {o}"))
                        .unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Request::ResetCounters {} => String::new(),
        Request::Conntrack { .. } => {
            let entries = v["entries"].as_array().cloned().unwrap_or_default();
            let mut s: String = entries.iter().map(|e| conntrack_line(e) + "\n").collect();
            s += &format!(
                "levee ctl conntrack: {} flow entries have been shown.",
                entries.len()
            );
            s
        }
        Request::Stats {} => stats_text(v),
        Request::Monitor {} => String::new(),
    }
}

/// One entry as `conntrack -L` prints it.
fn conntrack_line(e: &Value) -> String {
    let t = |d: &Value| {
        format!(
            "src={} dst={} sport={} dport={}",
            d["src"].as_str().unwrap_or(""),
            d["dst"].as_str().unwrap_or(""),
            d["sport"],
            d["dport"]
        )
    };
    let proto = e["protocol"].as_str().unwrap_or("");
    let mut s = format!(
        "{proto:<8} {} {} ",
        e["protonum"],
        e["expires_ms"].as_u64().unwrap_or(0) / 1000
    );
    if proto == "tcp" {
        s += &format!("{} ", e["state"].as_str().unwrap_or(""));
    }
    s += &t(&e["original"]);
    let flags: Vec<&str> = e["flags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if flags.contains(&"UNREPLIED") {
        s += " [UNREPLIED]";
    }
    s += " ";
    s += &t(&e["reply"]);
    if flags.contains(&"ASSURED") {
        s += " [ASSURED]";
    }
    s += &format!(" mark={} use=1", e["mark"]);
    s
}

fn monitor_line(ev: &MonitorEvent) -> String {
    match ev {
        MonitorEvent::Generation {
            generation,
            owner,
            ops,
        } => format!(
            "generation {generation}{}: {}",
            owner
                .as_deref()
                .map(|o| format!(" (owner {o})"))
                .unwrap_or_default(),
            ops.join("; ")
        ),
        MonitorEvent::Conntrack {
            kind,
            reason,
            protocol,
            src,
            dst,
            sport,
            dport,
            state,
            mark,
        } => format!(
            "[{}{}] {protocol} {state} src={src} dst={dst} sport={sport} dport={dport} mark={mark}",
            kind.to_uppercase(),
            reason.as_deref().map(|r| format!(" {r}")).unwrap_or_default()
        ),
        MonitorEvent::Dropped { count } => format!("# {count} events lost (reading too slowly)"),
    }
}

fn stats_text(v: &Value) -> String {
    let n = |x: &Value| x.as_u64().unwrap_or(0);
    let workers = v["workers"].as_array().cloned().unwrap_or_default();
    let sum = |f: &dyn Fn(&Value) -> u64| workers.iter().map(f).sum::<u64>();
    let mut s = format!(
        "generation {}  rules {}  commits {} (refused {}, timeouts {})  uptime {:.0} s\n",
        v["generation"],
        v["rules"],
        n(&v["commits"]["published"]),
        n(&v["commits"]["refused"]),
        n(&v["commits"]["timeouts"]),
        v["uptime_seconds"].as_f64().unwrap_or(0.0)
    );
    for (pi, p) in v["ports"].as_array().into_iter().flatten().enumerate() {
        let w = |k: &str| sum(&|w: &Value| n(&w["ports"][pi][k]));
        s += &format!(
            "port {:<8} {} ({}, link {}): rx {} pkts {} B  tx {} pkts {} B  device rx {} tx {} missed {} errors {}/{} nombuf {}\n",
            p["port"].as_str().unwrap_or(""),
            p["name"].as_str().unwrap_or(""),
            p["driver"].as_str().unwrap_or(""),
            if p["link_up"].as_bool().unwrap_or(false) { "up" } else { "down" },
            w("rx_packets"),
            w("rx_bytes"),
            w("tx_packets"),
            w("tx_bytes"),
            n(&p["device"]["rx_packets"]),
            n(&p["device"]["tx_packets"]),
            n(&p["device"]["rx_missed"]),
            n(&p["device"]["rx_errors"]),
            n(&p["device"]["tx_errors"]),
            n(&p["device"]["rx_nombuf"]),
        );
    }
    let reasons: Vec<String> = workers
        .first()
        .and_then(|w| w["drops"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|d| d[0].as_str().map(str::to_owned))
        .collect();
    s += "drops:";
    for (ri, r) in reasons.iter().enumerate() {
        s += &format!(" {r}={}", sum(&|w: &Value| n(&w["drops"][ri][1])));
    }
    s += &format!(
        "\nfilter: accepted={} dropped={} rejects={} logs={}\n",
        sum(&|w| n(&w["filter_accepted"])),
        sum(&|w| n(&w["filter_dropped"])),
        sum(&|w| n(&w["rejects"])),
        sum(&|w| n(&w["logs"])),
    );
    s += &format!(
        "conntrack: entries={} limit={} new={} invalid={} expired={} early_drops={} events_dropped={}\n",
        sum(&|w| n(&w["ct_entries"])),
        sum(&|w| n(&w["ct_limit"])),
        sum(&|w| n(&w["ct_new"])),
        sum(&|w| n(&w["ct_invalid"])),
        sum(&|w| n(&w["ct_expired"])),
        sum(&|w| n(&w["ct_early_drops"])),
        sum(&|w| n(&w["ct_events_dropped"])),
    );
    let names: Vec<String> = workers
        .first()
        .and_then(|w| w["synproxy"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|d| d[0].as_str().map(str::to_owned))
        .collect();
    s += "synproxy:";
    for (i, name) in names.iter().enumerate() {
        s += &format!(" {name}={}", sum(&|w: &Value| n(&w["synproxy"][i][1])));
    }
    for (i, w) in workers.iter().enumerate() {
        s += &format!(
            "\nworker {i} (lcore {}): rx {} tx {} handoffs out {} in {} generation {}",
            w["lcore"],
            w["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| n(&p["rx_packets"]))
                .sum::<u64>(),
            w["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| n(&p["tx_packets"]))
                .sum::<u64>(),
            n(&w["handoffs_out"]),
            n(&w["handoffs_in"]),
            w["generation"],
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: CtlArgs,
    }

    fn p(words: &[&str]) -> Result<Action, String> {
        let mut argv = vec!["ctl"];
        argv.extend_from_slice(words);
        parse(&T::try_parse_from(argv).map_err(|e| e.to_string())?.a)
    }

    fn ops(a: Action) -> Vec<OpRequest> {
        match a {
            Action::Send(Request::Commit { ops, .. }) => ops,
            a => panic!("not a commit: {a:?}"),
        }
    }

    #[test]
    fn nft_like_commands_become_requests() {
        assert_eq!(
            ops(p(&["add", "rule", "inet", "t", "c", "tcp", "dport", "22", "accept"]).unwrap()),
            [OpRequest::AddRule {
                family: Fam(family_from_name("inet").unwrap()),
                table: "t".into(),
                chain: "c".into(),
                rule: "tcp dport 22 accept".into(),
                position: None,
                index: None,
            }]
        );
        assert_eq!(
            ops(p(&["insert", "rule", "t", "c", "position", "7", "drop"]).unwrap()),
            [OpRequest::InsertRule {
                family: Fam(family_from_name("ip").unwrap()),
                table: "t".into(),
                chain: "c".into(),
                rule: "drop".into(),
                position: Some(7),
                index: None,
            }]
        );
        assert_eq!(
            ops(p(&["replace", "rule", "inet", "t", "c", "handle", "4", "accept"]).unwrap()),
            [OpRequest::ReplaceRule {
                handle: 4,
                rule: "accept".into()
            }]
        );
        assert_eq!(
            ops(p(&["delete", "rule", "inet", "t", "c", "handle", "4"]).unwrap()),
            [OpRequest::DeleteRule { handle: 4 }]
        );
        assert!(matches!(
            &ops(p(&["add", "element", "inet", "t", "s", "{", "1.2.3.4", "}"]).unwrap())[0],
            OpRequest::AddElement { elements, .. } if elements == "{ 1.2.3.4 }"
        ));
        assert!(matches!(
            p(&["list", "chain", "inet", "t", "c"]).unwrap(),
            Action::Send(Request::List {
                what: ListWhat::Chain,
                ..
            })
        ));
        assert!(matches!(
            p(&[
                "-j",
                "conntrack",
                "list",
                "addr",
                "192.0.2.1",
                "port",
                "80",
                "state",
                "established"
            ])
            .unwrap(),
            Action::Send(Request::Conntrack {
                filter: CtFilter { port: Some(80), .. },
                ..
            })
        ));
        assert_eq!(p(&["monitor"]).unwrap(), Action::Monitor);
        assert!(matches!(
            p(&["--owner", "nm", "--expect-generation", "3", "flush", "ruleset"]).unwrap(),
            Action::Send(Request::Commit {
                owner: Some(_),
                expected_generation: Some(3),
                ..
            })
        ));
        for bad in [
            &["frob"][..],
            &["list"],
            &["list", "everything"],
            &["delete", "rule", "inet", "t", "c", "4"],
            &["replace", "rule", "inet", "t", "c", "accept"],
            &["add", "rule", "inet", "t", "c"],
            &["conntrack", "list", "port", "http"],
            &["reset", "everything"],
            &["stats", "now"],
        ] {
            assert!(p(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn file_errors_point_into_the_file() {
        let r = Response::err(
            3,
            levee_control::api::ApiError {
                kind: levee_control::api::ErrorKind::Rejected,
                message: "operation 0 (load ruleset): 4:9: unknown statement".into(),
                op_index: Some(0),
                line: Some(4),
                col: Some(9),
            },
        );
        assert_eq!(
            error_text(&r, Some(Path::new("rules.nft"))),
            "rules.nft:4:9: unknown statement"
        );
        assert!(error_text(&r, None).starts_with("Error: operation 0"));
    }
}
