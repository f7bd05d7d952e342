//! The operator's side end to end: `levee run` on in-memory vdevs, `levee ctl` adding, listing
//! and deleting rules over the management socket (text and `-j`), `/metrics` and `/healthz`
//! over HTTP, `monitor`, and SIGHUP reloads of a bad and then a good ruleset file.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("levee-ctl-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn ctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_levee"))
        .arg("ctl")
        .arg("-s")
        .arg(socket)
        .args(args)
        .output()
        .expect("run levee ctl")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Lines a child printed so far, collected by a thread per stream.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    fn follow(r: impl Read + Send + 'static) -> Lines {
        let l = Lines::default();
        let l2 = l.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                l2.0.lock().unwrap().push(line);
            }
        });
        l
    }

    fn wait_for(&self, what: &str, timeout: Duration) -> String {
        let end = Instant::now() + timeout;
        loop {
            if let Some(l) = self.0.lock().unwrap().iter().find(|l| l.contains(what)) {
                return l.clone();
            }
            assert!(Instant::now() < end, "no line with {what:?} in {:?}", self.all());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn all(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }
}

fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head.split(' ').nth(1).unwrap().parse().unwrap(), body.to_owned())
}

fn kill(child: &Child, sig: &str) {
    assert!(Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success());
}

const RULES: &str =
    "table inet t {\n chain c {\n  type filter hook forward priority 0; policy accept;\n  counter\n }\n}\n";

#[test]
fn ctl_metrics_and_sighup_against_a_running_levee() {
    let d = dir();
    let socket = d.join("levee.sock");
    let rules = d.join("rules.nft");
    std::fs::write(&rules, RULES).unwrap();
    let config = d.join("levee.toml");
    std::fs::write(
        &config,
        format!(
            "[eal]\nfile_prefix = \"levee-ctl-{}\"\nargs = [\"--no-huge\", \"-m\", \"512\", \"--no-telemetry\"]\n\
             [ports.outside]\ndevice = \"net_null0\"\n[ports.inside]\ndevice = \"net_null1\"\n[workers]\ncores = [1]\n\
             [filter]\nruleset = \"rules.nft\"\n\
             [management]\nsocket = \"{}\"\nmetrics_address = \"127.0.0.1:0\"\n",
            std::process::id(),
            socket.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_levee"))
        .args(["run", "--config", config.to_str().unwrap(), "--duration", "120"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = Lines::follow(child.stdout.take().unwrap());
    let err = Lines::follow(child.stderr.take().unwrap());
    let mgmt = out.wait_for("levee: management:", Duration::from_secs(30));
    out.wait_for("forwarding", Duration::from_secs(30));
    let metrics = mgmt
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("no metrics address in {mgmt}"))
        .to_owned();

    // Add, list (text with handles, JSON), delete.
    let o = ctl(
        &socket,
        &[
            "-e", "add", "rule", "inet", "t", "c", "tcp", "dport", "22", "drop",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let handle: u64 = stdout(&o)
        .lines()
        .find_map(|l| l.strip_prefix("# handle "))
        .unwrap_or_else(|| panic!("no handle echoed: {}", stdout(&o)))
        .parse()
        .unwrap();
    let o = ctl(&socket, &["-a", "list", "chain", "inet", "t", "c"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!("tcp dport 22 drop # handle {handle}")),
        "{}",
        stdout(&o)
    );
    let o = ctl(&socket, &["-j", "list", "ruleset"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("-j prints JSON");
    let text = v.to_string();
    assert!(text.contains(&format!("\"handle\":{handle}")), "{text}");
    let o = ctl(&socket, &["-j", "stats"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["workers"].as_array().unwrap().len(), 1, "{v}");
    assert!(v["generation"].as_u64().unwrap() >= 2, "{v}");
    let o = ctl(&socket, &["conntrack", "list", "proto", "tcp"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("flow entries have been shown"),
        "{}",
        stdout(&o)
    );

    // A monitor sees the next change.
    let mut mon = Command::new(env!("CARGO_BIN_EXE_levee"))
        .args(["ctl", "-j", "-s", socket.to_str().unwrap(), "monitor"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mon_out = Lines::follow(mon.stdout.take().unwrap());
    std::thread::sleep(Duration::from_millis(300));
    let o = ctl(
        &socket,
        &["delete", "rule", "inet", "t", "c", "handle", &handle.to_string()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let ev = mon_out.wait_for("\"event\":\"generation\"", Duration::from_secs(10));
    assert!(ev.contains("delete rule handle"), "{ev}");
    let _ = mon.kill();
    let _ = mon.wait();
    let listing = stdout(&ctl(&socket, &["list", "ruleset"]));
    assert!(!listing.contains("dport 22"), "{listing}");

    // Bad requests: non-zero exit, a clear message, nothing changed.
    let o = ctl(
        &socket,
        &["add", "rule", "inet", "t", "c", "tcp", "dport", "70000", "drop"],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).starts_with("Error: "), "{}", stderr(&o));
    let bad = d.join("bad.nft");
    std::fs::write(
        &bad,
        "table inet t {\n chain c {\n  tcp dport 22 frobnicate\n }\n}\n",
    )
    .unwrap();
    let o = ctl(&socket, &["-f", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).starts_with(&format!("{}:3:", bad.display())),
        "{}",
        stderr(&o)
    );
    assert_eq!(stdout(&ctl(&socket, &["list", "ruleset"])), listing);
    let o = ctl(Path::new("/nonexistent/levee.sock"), &["list", "ruleset"]);
    assert!(!o.status.success() && stderr(&o).contains("/nonexistent/levee.sock"));

    // Metrics and health over HTTP.
    let (code, body) = http_get(&metrics, "/metrics");
    assert_eq!(code, 200);
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        assert!(series.starts_with("levee_"), "{line}");
        assert!(value == "+Inf" || value.parse::<f64>().is_ok(), "{line}");
    }
    for name in [
        "# TYPE levee_port_rx_packets_total counter",
        "# TYPE levee_generation gauge",
        "# TYPE levee_commit_duration_seconds histogram",
        "levee_drops_total{reason=\"filter\"}",
        "levee_synproxy_syn_received_total",
        "levee_device_rx_packets_total{port=\"outside\"}",
    ] {
        assert!(body.contains(name), "{name} not in\n{body}");
    }
    let rx = body
        .lines()
        .find_map(|l| l.strip_prefix("levee_port_rx_packets_total{port=\"outside\"} "))
        .unwrap();
    assert!(rx.parse::<f64>().unwrap() > 0.0, "net_null delivers frames: {rx}");
    assert_eq!(http_get(&metrics, "/healthz"), (200, "ok\n".to_owned()));

    // SIGHUP with a bad file: refused, said where, nothing changes.
    std::fs::write(
        &rules,
        "table inet t {\n chain c {\n  type filter hook forward priority 0;\n  ip saddr 1.2.3 drop\n }\n}\n",
    )
    .unwrap();
    kill(&child, "-HUP");
    let why = err.wait_for("reload refused", Duration::from_secs(10));
    assert!(why.contains(&format!("{}:4:", rules.display())), "{why}");
    assert_eq!(stdout(&ctl(&socket, &["list", "ruleset"])), listing);
    // …and with a good one: the file is the whole ruleset.
    std::fs::write(&rules, "table ip new {\n chain fwd {\n  type filter hook forward priority 0;\n  udp dport 53 accept\n }\n}\n")
        .unwrap();
    kill(&child, "-HUP");
    out.wait_for("levee: reloaded", Duration::from_secs(10));
    let now = stdout(&ctl(&socket, &["list", "ruleset"]));
    assert!(
        now.contains("table ip new") && !now.contains("table inet t"),
        "{now}"
    );

    kill(&child, "-TERM");
    let status = child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(status.success(), "{}\n{}", out.all(), err.all());
    assert!(out.all().contains("levee: stopped after"), "{}", out.all());
    assert!(!socket.exists(), "the socket is removed at exit");
}
