//! The API without DPDK: every request against a real `Committer` (no workers) and a fake
//! dataplane; over a real Unix socket with concurrent clients; `/metrics` over real HTTP.

use super::*;
use crate::generation::Committer;
use crate::metrics::Snapshot;
use crate::server::{handle_call, Call, Monitors, ServerConfig, Servers};
use levee_filter_vm::vm::Counters;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::Arc;
use std::time::Duration;

const RULESET: &str = "table inet filter {
    set blocked {
        type ipv4_addr
        elements = { 198.51.100.1 }
    }
    chain input {
        type filter hook input priority 0; policy accept;
        ip saddr @blocked drop
        tcp dport 22 counter accept
    }
}
";

fn committer(text: &str) -> Committer {
    let txn = Transaction::new(vec![Op::Load {
        text: text.into(),
        flush: true,
    }]);
    Committer::start(&txn, 0, Box::new(|| 0))
        .expect("ruleset loads")
        .0
}

/// A dataplane of one worker whose counter bank the test writes.
struct Fake {
    bank: CounterBank,
    snapshot: Snapshot,
}

impl Fake {
    fn new() -> Fake {
        Fake {
            bank: Arc::new(Counters::with_len(64)),
            snapshot: crate::metrics::tests::sample(),
        }
    }
}

impl DataSource for Fake {
    fn snapshot(&self) -> Snapshot {
        self.snapshot.clone()
    }
    fn counter_banks(&self) -> Vec<CounterBank> {
        vec![self.bank.clone()]
    }
    fn conntrack_list(&self, filter: DumpFilter, max: usize) -> Result<Vec<EntrySnapshot>, String> {
        // No entries to show, but the filter must have arrived intact.
        assert!(max <= MAX_CONNTRACK_LIST);
        let _ = filter;
        Ok(Vec::new())
    }
}

fn req(api: &mut Api, c: &mut Committer, line: &str) -> Response {
    api.handle_line(line.as_bytes(), c, &Fake::new())
}

fn listing(c: &Committer) -> String {
    c.store().list_ruleset(true)
}

#[test]
fn every_bad_request_is_refused_clearly_and_changes_nothing() {
    let mut c = committer(RULESET);
    let mut api = Api::new(Limits {
        max_request_bytes: 4096,
        max_ops: 3,
    });
    let before = listing(&c);
    let g = c.generation();
    let add = |rule: &str| {
        format!(r#"{{"op":"add_rule","family":"inet","table":"filter","chain":"input","rule":"{rule}"}}"#)
    };
    let good = add("tcp dport 80 accept");
    let cases: Vec<(String, ErrorKind, &str)> = vec![
        ("not json".into(), ErrorKind::BadRequest, "expected"),
        ("{}".into(), ErrorKind::BadRequest, "cmd"),
        (r#"{"cmd":"frobnicate"}"#.into(), ErrorKind::BadRequest, "frobnicate"),
        (r#"{"cmd":"stats","verbose":true}"#.into(), ErrorKind::BadRequest, "verbose"),
        (r#"{"cmd":"reset_counters","x":1}"#.into(), ErrorKind::BadRequest, "`x`"),
        (
            format!(r#"{{"cmd":"commit","ops":[{good}],"owner":"a","force":true}}"#),
            ErrorKind::BadRequest,
            "force",
        ),
        (
            r#"{"cmd":"commit","ops":[{"op":"add_rule","family":"inet","table":"filter","chain":"input","rule":"accept","priority":1}]}"#.into(),
            ErrorKind::BadRequest,
            "operation 0 (add_rule), field `priority`",
        ),
        (
            r#"{"cmd":"commit","ops":[{"op":"add_rule","family":"inet6","table":"filter","chain":"input","rule":"accept"}]}"#.into(),
            ErrorKind::BadRequest,
            "operation 0 (add_rule), field `family`",
        ),
        (
            r#"{"cmd":"commit","ops":[{"op":"add_rule","family":"inet","table":"filter","rule":"accept"}]}"#.into(),
            ErrorKind::BadRequest,
            "operation 0 (add_rule): missing field `chain`",
        ),
        (
            r#"{"cmd":"commit","ops":[{"op":"delete_rule","handle":"one"}]}"#.into(),
            ErrorKind::BadRequest,
            "operation 0 (delete_rule), field `handle`: invalid type: string \"one\", expected u64",
        ),
        (
            format!(r#"{{"cmd":"commit","ops":[{good},{{"op":"add_rule","family":"inet","table":7,"chain":"input","rule":"accept"}}]}}"#),
            ErrorKind::BadRequest,
            "operation 1 (add_rule), field `table`: invalid type: integer `7`",
        ),
        (
            // Too many fields to search one by one: the operation is still named.
            format!(
                r#"{{"cmd":"commit","ops":[{{"op":"delete_rule","handle":1,{}}}]}}"#,
                (0..40).map(|i| format!(r#""k{i}":0"#)).collect::<Vec<_>>().join(",")
            ),
            ErrorKind::BadRequest,
            "operation 0 (delete_rule): unknown field `k0`",
        ),
        (r#"{"cmd":"commit","ops":[]}"#.into(), ErrorKind::BadRequest, "empty"),
        (
            format!(r#"{{"cmd":"commit","ops":[{good},{good},{good},{good}]}}"#),
            ErrorKind::TooLarge,
            "at most 3",
        ),
        (
            format!(r#"{{"cmd":"commit","ops":[{}]}}"#, add(&"x".repeat(5000))),
            ErrorKind::TooLarge,
            "at most 4096 bytes",
        ),
        (
            format!(r#"{{"cmd":"commit","ops":[{good}],"owner":"has space"}}"#),
            ErrorKind::BadRequest,
            "owner",
        ),
        (
            format!(r#"{{"cmd":"commit","ops":[{good},{}]}}"#, add("tcp dport 70000 accept")),
            ErrorKind::Rejected,
            "operation 1",
        ),
        (
            format!(r#"{{"cmd":"commit","ops":[{good},{}]}}"#, add("tcp dport 22 frobnicate")),
            ErrorKind::Rejected,
            "1:",
        ),
        (
            format!(
                r#"{{"cmd":"commit","ops":[{good},{{"op":"add_element","family":"inet","table":"filter","set":"blocked","elements":"{{ 300.1.1.1 }}"}}]}}"#
            ),
            ErrorKind::Rejected,
            "operation 1",
        ),
        (
            format!(r#"{{"cmd":"commit","ops":[{good},{{"op":"delete_rule","handle":999}}]}}"#),
            ErrorKind::Rejected,
            "999",
        ),
        (
            format!(r#"{{"cmd":"commit","ops":[{good}],"expected_generation":{}}}"#, g - 1 + 7),
            ErrorKind::Conflict,
            "another commit came first",
        ),
        (
            r#"{"cmd":"commit","ops":[{"op":"add_rule","family":"inet","table":"filter","chain":"input","rule":"accept","position":1,"index":0}]}"#.into(),
            ErrorKind::BadRequest,
            "not both",
        ),
        (
            r#"{"cmd":"commit","ops":[{"op":"add_rule","family":"inet","table":"filter","chain":"input","rule":"jump nowhere"}]}"#.into(),
            ErrorKind::Rejected,
            "nowhere",
        ),
        (
            r#"{"cmd":"commit","ops":[{"op":"load","text":"table inet x {\n chain c {\n  tcp dport 99999 drop\n }\n}\n"}]}"#.into(),
            ErrorKind::Rejected,
            "3:",
        ),
        (
            r#"{"cmd":"list","what":"table","family":"inet","table":"nope"}"#.into(),
            ErrorKind::NotFound,
            "nope",
        ),
        (
            r#"{"cmd":"list","what":"chain","family":"inet","table":"filter","name":"output"}"#.into(),
            ErrorKind::NotFound,
            "output",
        ),
        (r#"{"cmd":"list","what":"table"}"#.into(), ErrorKind::BadRequest, "family"),
        (r#"{"cmd":"list","what":"everything"}"#.into(), ErrorKind::BadRequest, "everything"),
        (
            r#"{"cmd":"conntrack","filter":{"state":"DANCING"}}"#.into(),
            ErrorKind::BadRequest,
            "DANCING",
        ),
        (
            r#"{"cmd":"conntrack","filter":{"port":70000}}"#.into(),
            ErrorKind::BadRequest,
            "70000",
        ),
        (
            r#"{"cmd":"conntrack","filter":{"addr":"1.2.3"}}"#.into(),
            ErrorKind::BadRequest,
            "address",
        ),
        (r#"{"cmd":"conntrack","max":2000000}"#.into(), ErrorKind::TooLarge, "at most"),
        (r#"{"cmd":"search","expr":"tcp dport"}"#.into(), ErrorKind::BadRequest, "1:"),
    ];
    for (line, kind, needle) in cases {
        let r = req(&mut api, &mut c, &line);
        let e = r
            .error
            .clone()
            .unwrap_or_else(|| panic!("{line} was accepted: {r:?}"));
        assert!(!r.ok);
        assert_eq!(e.kind, kind, "{line}: {e:?}");
        assert!(
            e.message.contains(needle),
            "{line}: {:?} lacks {needle:?}",
            e.message
        );
        assert_eq!(r.generation, g, "{line}");
        assert_eq!(c.generation(), g, "{line} changed the generation");
        assert_eq!(listing(&c), before, "{line} changed the ruleset");
        // The wire form is one line that parses back.
        let wire = r.to_line();
        assert!(!wire.contains('\n'));
        assert_eq!(serde_json::from_str::<Response>(&wire).unwrap(), r);
    }
    // A rejected operation carries its index and the position inside its text.
    let r = req(
        &mut api,
        &mut c,
        &format!(
            r#"{{"cmd":"commit","ops":[{good},{}]}}"#,
            add("tcp dport 22 frobnicate")
        ),
    );
    let e = r.error.unwrap();
    assert_eq!((e.op_index, e.line, e.col), (Some(1), Some(1), Some(14)), "{e:?}");
}

fn ok(r: Response) -> Value {
    assert!(r.ok, "{r:?}");
    r.result.unwrap()
}

#[test]
fn rules_are_added_inserted_replaced_and_deleted_by_handle() {
    let mut c = committer(RULESET);
    let mut api = Api::new(Limits::default());
    let g = c.generation();
    let v = ok(req(
        &mut api,
        &mut c,
        r#"{"cmd":"commit","owner":"ops","ops":[{"op":"add_rule","family":"inet","table":"filter","chain":"input","rule":"tcp dport 80 accept"}]}"#,
    ));
    let h = v["results"][0]["handle"].as_u64().unwrap();
    assert_eq!(c.generation(), g + 1);
    let v = ok(req(
        &mut api,
        &mut c,
        &format!(
            r#"{{"cmd":"commit","ops":[{{"op":"insert_rule","family":"inet","table":"filter","chain":"input","rule":"tcp dport 443 accept","position":{h}}},{{"op":"insert_rule","family":"inet","table":"filter","chain":"input","rule":"ip saddr 192.0.2.1 drop"}}]}}"#
        ),
    ));
    let h443 = v["results"][0]["handle"].as_u64().unwrap();
    let text = ok(req(
        &mut api,
        &mut c,
        r#"{"cmd":"list","what":"chain","family":"inet","table":"filter","name":"input"}"#,
    ))["text"]
        .as_str()
        .unwrap()
        .to_owned();
    let order: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.contains("accept") || l.contains("drop"))
        .collect();
    assert_eq!(
        order,
        [
            "type filter hook input priority filter; policy accept;",
            "ip saddr 192.0.2.1 drop",
            "ip saddr @blocked drop",
            "tcp dport 22 counter packets 0 bytes 0 accept",
            "tcp dport 443 accept",
            "tcp dport 80 accept"
        ],
        "{text}"
    );
    ok(req(
        &mut api,
        &mut c,
        &format!(
            r#"{{"cmd":"commit","ops":[{{"op":"replace_rule","handle":{h443},"rule":"tcp dport 8443 accept"}},{{"op":"delete_rule","handle":{h}}}]}}"#
        ),
    ));
    let v = ok(req(
        &mut api,
        &mut c,
        r#"{"cmd":"list","what":"ruleset","handles":true}"#,
    ));
    let text = v["text"].as_str().unwrap();
    assert!(
        text.contains(&format!("tcp dport 8443 accept # handle {h443}")),
        "{text}"
    );
    assert!(!text.contains("dport 80 "), "{text}");
    // Elements and the set listing.
    ok(req(
        &mut api,
        &mut c,
        r#"{"cmd":"commit","ops":[{"op":"add_element","family":"inet","table":"filter","set":"blocked","elements":"{ 198.51.100.2, 198.51.100.3 }"},{"op":"delete_element","family":"inet","table":"filter","set":"blocked","elements":"{ 198.51.100.1 }"}]}"#,
    ));
    let v = ok(req(
        &mut api,
        &mut c,
        r#"{"cmd":"list","what":"set","family":"inet","table":"filter","name":"blocked"}"#,
    ));
    let text = v["text"].as_str().unwrap();
    assert!(
        text.contains("198.51.100.2") && !text.contains("198.51.100.1,"),
        "{text}"
    );
    assert!(!text.contains("chain"), "{text}");
    // JSON listing.
    let v = ok(req(
        &mut api,
        &mut c,
        r#"{"cmd":"list","what":"ruleset","json":true}"#,
    ));
    assert!(v["nftables"].is_array(), "{v}");
    // Search by owner, ensure keeps one copy.
    let v = ok(req(&mut api, &mut c, r#"{"cmd":"search","owner":"ops"}"#));
    assert_eq!(
        v["rules"].as_array().unwrap().len(),
        0,
        "the owner's rule was deleted: {v}"
    );
    let ensure = r#"{"cmd":"commit","owner":"nm","ops":[{"op":"ensure_rule","family":"inet","table":"filter","chain":"input","rule":"udp dport 53 accept"}]}"#;
    let first = ok(req(&mut api, &mut c, ensure));
    let second = ok(req(&mut api, &mut c, ensure));
    assert_eq!(first["results"][0]["added"], true);
    assert_eq!(second["results"][0]["added"], false);
    assert_eq!(first["results"][0]["handle"], second["results"][0]["handle"]);
    let v = ok(req(
        &mut api,
        &mut c,
        r#"{"cmd":"search","owner":"nm","expr":"udp dport 53"}"#,
    ));
    assert_eq!(v["rules"][0]["rule"], "udp dport 53 accept", "{v}");
    // Flush the chain, then load a file that flushes everything.
    ok(req(
        &mut api,
        &mut c,
        r#"{"cmd":"commit","ops":[{"op":"flush_chain","family":"inet","table":"filter","name":"input"}]}"#,
    ));
    assert_eq!(c.store().rule_count(), 0);
    ok(req(
        &mut api,
        &mut c,
        r#"{"cmd":"commit","ops":[{"op":"load","text":"flush ruleset\ntable ip t {\n chain c {\n  type filter hook forward priority 0;\n  accept\n }\n}\n"}]}"#,
    ));
    let text = c.store().list_ruleset(false);
    assert!(
        text.contains("table ip t") && !text.contains("inet filter"),
        "{text}"
    );
    // Every commit told the monitors.
    let events = api.take_events();
    // (the second ensure found its rule and published nothing: 7 generations)
    assert_eq!(events.len(), 7, "{events:?}");
    assert!(matches!(&events[0], MonitorEvent::Generation { owner: Some(o), .. } if o == "ops"));
}

#[test]
fn counters_show_live_values_and_reset_to_zero() {
    let mut c = committer(RULESET);
    let mut api = Api::new(Limits::default());
    let fake = Fake::new();
    let slot = c.store().image().rules().find_map(|v| v.counter).unwrap() as usize;
    fake.bank[slot].packets.store(5, Ordering::Relaxed);
    fake.bank[slot].bytes.store(300, Ordering::Relaxed);
    let list = |api: &mut Api, c: &mut Committer| {
        let r = api.handle_line(br#"{"cmd":"list","what":"ruleset"}"#, c, &fake);
        ok(r)["text"].as_str().unwrap().to_owned()
    };
    assert!(list(&mut api, &mut c).contains("counter packets 5 bytes 300"));
    ok(api.handle_line(br#"{"cmd":"reset_counters"}"#, &mut c, &fake));
    assert!(list(&mut api, &mut c).contains("counter packets 0 bytes 0"));
    fake.bank[slot].packets.store(7, Ordering::Relaxed);
    fake.bank[slot].bytes.store(400, Ordering::Relaxed);
    assert!(list(&mut api, &mut c).contains("counter packets 2 bytes 100"));
    let v = ok(api.handle_line(br#"{"cmd":"list","what":"ruleset","json":true}"#, &mut c, &fake));
    assert!(v.to_string().contains(r#""packets":2"#), "{v}");
}

#[test]
fn stats_and_conntrack_requests_answer_from_the_data_source() {
    let mut c = committer(RULESET);
    let mut api = Api::new(Limits::default());
    let v = ok(req(&mut api, &mut c, r#"{"cmd":"stats"}"#));
    assert_eq!(v["generation"], c.generation());
    assert_eq!(v["rules"], 2);
    assert_eq!(v["workers"].as_array().unwrap().len(), 2);
    let v = ok(req(
        &mut api,
        &mut c,
        r#"{"cmd":"conntrack","filter":{"family":"ipv4","protocol":"tcp","addr":"192.0.2.1","port":80,"state":"established"},"max":5}"#,
    ));
    assert_eq!(v["entries"], json!([]));
    let f = dump_filter(&CtFilter {
        state: Some("time_wait".into()),
        protocol: Some("17".into()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(f.state, Some(L4State::Tcp(TcpState::TimeWait)));
    assert_eq!(f.protocol, Some(17));
    // Without a dataplane, conntrack is unavailable, not a crash.
    let r = api.handle_line(br#"{"cmd":"conntrack"}"#, &mut c, &NoData);
    assert_eq!(r.error.unwrap().kind, ErrorKind::Unavailable);
}

#[test]
fn the_request_types_round_trip_through_json() {
    let reqs = [
        Request::Commit {
            ops: vec![
                OpRequest::AddRule {
                    family: Fam(Family::Inet),
                    table: "t".into(),
                    chain: "c".into(),
                    rule: "accept".into(),
                    position: Some(3),
                    index: None,
                },
                OpRequest::FlushRuleset {},
                OpRequest::Load {
                    text: "table ip t {}".into(),
                    flush: None,
                },
            ],
            owner: Some("me".into()),
            expected_generation: Some(4),
        },
        Request::List {
            what: ListWhat::Chain,
            family: Some(Fam(Family::Ip)),
            table: Some("t".into()),
            name: Some("c".into()),
            handles: true,
            json: false,
        },
        Request::ResetCounters {},
        Request::Monitor {},
        Request::Conntrack {
            filter: CtFilter {
                port: Some(22),
                ..Default::default()
            },
            max: None,
        },
    ];
    for r in reqs {
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(
            parse_request(line.as_bytes(), &Limits::default()).unwrap(),
            r,
            "{line}"
        );
    }
    assert!(file_flushes_ruleset("# x\nflush ruleset\ntable ip t {}"));
    assert!(file_flushes_ruleset(
        "table ip a {}; flush ruleset; table ip t {}"
    ));
    assert!(!file_flushes_ruleset("# flush ruleset\ntable ip t {}"));
    assert!(!file_flushes_ruleset("flush table ip t"));
}

// ----- over real sockets -----

/// A control thread serving `servers` until the call channel closes.
fn control_thread(
    mut c: Committer,
    rx: crossbeam_channel::Receiver<Call>,
    generation: Arc<std::sync::atomic::AtomicU64>,
) -> std::thread::JoinHandle<Committer> {
    std::thread::spawn(move || {
        let mut api = Api::new(Limits::default());
        let mut monitors = Monitors::default();
        let fake = Fake::new();
        generation.store(c.generation(), Ordering::Relaxed);
        while let Ok(call) = rx.recv() {
            handle_call(call, &mut api, &mut c, &fake, &mut monitors);
            generation.store(c.generation(), Ordering::Relaxed);
        }
        c
    })
}

fn socket_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("levee-api-{}-{name}.sock", std::process::id()))
}

fn call(path: &std::path::Path, line: &str) -> Response {
    let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
    writeln!(s, "{line}").unwrap();
    let mut out = String::new();
    BufReader::new(s).read_line(&mut out).unwrap();
    serde_json::from_str(&out).unwrap()
}

#[test]
fn concurrent_clients_with_generation_ids_lose_no_update() {
    let path = socket_path("concurrent");
    let (tx, rx) = crossbeam_channel::unbounded();
    let servers = Servers::start(
        &ServerConfig {
            unix_socket: Some(path.clone()),
            api_tcp: None,
            metrics: None,
            limits: Limits::default(),
            reply_timeout: Duration::from_secs(10),
        },
        tx,
    )
    .unwrap();
    let control = control_thread(committer(RULESET), rx, servers.generation());
    // A monitor sees every generation.
    let mut mon = std::os::unix::net::UnixStream::connect(&path).unwrap();
    writeln!(mon, r#"{{"cmd":"monitor"}}"#).unwrap();
    let mut mon = BufReader::new(mon);
    let mut first = String::new();
    mon.read_line(&mut first).unwrap();
    assert!(first.contains(r#""monitoring":true"#), "{first}");

    const CLIENTS: usize = 4;
    const EACH: usize = 10;
    let conflicts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|k| {
            let (path, conflicts) = (path.clone(), conflicts.clone());
            std::thread::spawn(move || {
                for i in 0..EACH {
                    loop {
                        // Read, decide, write against what was read.
                        let g = call(&path, r#"{"cmd":"list","what":"ruleset"}"#).generation;
                        let line = format!(
                            r#"{{"cmd":"commit","owner":"c{k}","expected_generation":{g},"ops":[{{"op":"add_rule","family":"inet","table":"filter","chain":"input","rule":"tcp dport {} accept"}}]}}"#,
                            1000 + k * 100 + i
                        );
                        let r = call(&path, &line);
                        if r.ok {
                            break;
                        }
                        assert_eq!(r.error.unwrap().kind, ErrorKind::Conflict);
                        conflicts.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let mut seen = Vec::new();
    while seen.len() < CLIENTS * EACH {
        let mut l = String::new();
        mon.read_line(&mut l).unwrap();
        let ev: MonitorEvent = serde_json::from_str(&l).unwrap();
        if let MonitorEvent::Generation { generation, .. } = ev {
            seen.push(generation);
        }
    }
    drop(servers);
    let c = control.join().unwrap();
    assert_eq!(c.store().rule_count(), 2 + CLIENTS * EACH);
    for k in 0..CLIENTS {
        let q = Query {
            owner: Some(format!("c{k}")),
            ..Default::default()
        };
        assert_eq!(c.store().search(&q).unwrap().len(), EACH);
    }
    let g0 = c.generation() - (CLIENTS * EACH) as u64;
    assert_eq!(seen, (g0 + 1..=c.generation()).collect::<Vec<_>>());
    assert!(!path.exists(), "the socket file is removed on drop");
    eprintln!("{} conflicts retried", conflicts.load(Ordering::Relaxed));
}

#[test]
fn oversized_and_malformed_lines_on_the_socket_get_errors_and_the_connection_goes_on() {
    let path = socket_path("limits");
    let (tx, rx) = crossbeam_channel::unbounded();
    let servers = Servers::start(
        &ServerConfig {
            unix_socket: Some(path.clone()),
            api_tcp: Some("127.0.0.1:0".parse().unwrap()),
            metrics: None,
            limits: Limits {
                max_request_bytes: 1024,
                max_ops: 10,
            },
            reply_timeout: Duration::from_secs(10),
        },
        tx,
    )
    .unwrap();
    let tcp = servers.api_tcp_addr().unwrap();
    let control = control_thread(committer(RULESET), rx, servers.generation());
    let s = std::net::TcpStream::connect(tcp).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut ask = |line: &str| {
        w.write_all(line.as_bytes()).unwrap();
        w.write_all(b"\n").unwrap();
        let mut out = String::new();
        r.read_line(&mut out).unwrap();
        serde_json::from_str::<Response>(&out).unwrap()
    };
    let big = format!(r#"{{"cmd":"search","expr":"{}"}}"#, "x".repeat(5000));
    let e = ask(&big).error.unwrap();
    assert_eq!(e.kind, ErrorKind::TooLarge, "{e:?}");
    assert_eq!(ask("{nope").error.unwrap().kind, ErrorKind::BadRequest);
    let resp = ask(r#"{"cmd":"stats"}"#);
    assert!(resp.ok, "{resp:?}");
    assert_eq!(resp.generation, 1);
    // The control thread ends when every connection (holding a sender) has closed.
    drop(w);
    drop(r);
    drop(servers);
    drop(control.join().unwrap());
}

/// A strict parser for the Prometheus text format (0.0.4): every sample belongs to the
/// family its `# TYPE` line announced, names and labels are well formed, values parse.
/// Returns (family name → type, samples (name, labels, value)).
#[allow(clippy::type_complexity)]
pub(crate) fn parse_prometheus(
    text: &str,
) -> (HashMap<String, String>, Vec<(String, Vec<(String, String)>, f64)>) {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut types = HashMap::new();
    let mut samples = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut p = rest.splitn(3, ' ');
            let (kind, name, v) = (p.next().unwrap(), p.next().unwrap(), p.next().unwrap_or(""));
            assert!(name_ok(name), "bad name in {line:?}");
            if kind == "TYPE" {
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&v),
                    "{line}"
                );
                assert!(
                    types.insert(name.to_owned(), v.to_owned()).is_none(),
                    "family {name} twice"
                );
                current = Some((name.to_owned(), v.to_owned()));
            } else {
                assert_eq!(kind, "HELP", "{line}");
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, Vec::new()),
            Some((n, l)) => {
                let l = l
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line}"));
                let labels = l
                    .split(',')
                    .filter(|kv| !kv.is_empty())
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap();
                        assert!(name_ok(k), "bad label name in {line}");
                        let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap();
                        (k.to_owned(), v.to_owned())
                    })
                    .collect();
                (n, labels)
            }
        };
        let (family, kind) = current
            .as_ref()
            .unwrap_or_else(|| panic!("sample before TYPE: {line}"));
        let belongs = name == family
            || (kind == "histogram"
                && [&"_bucket", &"_sum", &"_count"]
                    .iter()
                    .any(|s| name.strip_suffix(**s) == Some(family)));
        assert!(belongs, "{name} outside its family {family}");
        samples.push((name.to_owned(), labels, value));
    }
    (types, samples)
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, head.to_owned(), body.to_owned())
}

#[test]
fn metrics_are_scraped_over_http_and_parse_strictly() {
    let (tx, rx) = crossbeam_channel::unbounded();
    let servers = Servers::start(
        &ServerConfig {
            unix_socket: None,
            api_tcp: None,
            metrics: Some("127.0.0.1:0".parse().unwrap()),
            limits: Limits::default(),
            reply_timeout: Duration::from_secs(10),
        },
        tx.clone(),
    )
    .unwrap();
    let addr = servers.metrics_addr().unwrap();
    // A commented rule with a counter: a named counter (`levee_rule_counter_*`).
    let named = RULESET.replace(
        "tcp dport 22 counter accept",
        "tcp dport 22 counter accept comment \"ssh\"",
    );
    let control = control_thread(committer(&named), rx, servers.generation());
    let (code, head, body) = http_get(addr, "/metrics");
    assert_eq!(code, 200);
    assert!(
        head.to_ascii_lowercase().contains("text/plain; version=0.0.4"),
        "{head}"
    );
    let (types, samples) = parse_prometheus(&body);
    for name in crate::metrics::METRIC_NAMES {
        let t = types.get(*name).unwrap_or_else(|| panic!("{name} not exported"));
        match t.as_str() {
            "counter" => assert!(name.ends_with("_total"), "{name} is a counter without _total"),
            _ => assert!(!name.ends_with("_total"), "{name} is a {t} named _total"),
        }
    }
    // `table`, `chain` and `name` label only the named counters: bounded by the ruleset.
    let allowed = [
        "port", "worker", "lcore", "reason", "state", "result", "xstat", "version", "le", "table", "chain",
        "name",
    ];
    assert!(
        samples
            .iter()
            .any(|(n, l, _)| n == "levee_rule_counter_packets_total"
                && l.iter().any(|(k, v)| k == "name" && v == "ssh")),
        "the named counter is exported"
    );
    for (name, labels, _) in &samples {
        assert!(name.starts_with("levee_"), "{name}");
        for (k, _) in labels {
            assert!(allowed.contains(&k.as_str()), "{name} has unbounded label {k}");
        }
    }
    let get = |n: &str, l: &[(&str, &str)]| {
        samples
            .iter()
            .find(|(name, labels, _)| {
                name == n
                    && l.iter()
                        .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|s| s.2)
            .unwrap_or_else(|| panic!("no {n} {l:?}"))
    };
    assert_eq!(get("levee_generation", &[]), 1.0);
    assert_eq!(get("levee_rules", &[]), 2.0);
    assert_eq!(get("levee_port_rx_packets_total", &[("port", "outside")]), 30.0);
    assert_eq!(get("levee_drops_total", &[("reason", "malformed")]), 3.0);
    assert_eq!(
        get("levee_build_info", &[("version", env!("CARGO_PKG_VERSION"))]),
        1.0
    );
    let (code, _, body) = http_get(addr, "/healthz");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    assert_eq!(http_get(addr, "/nope").0, 404);
    drop(servers);
    drop(tx);
    drop(control.join().unwrap());
}
