//! `levee lab`: the netns lab. A real Linux client and server, each in its own network
//! namespace, with levee between them in a third ("appliance") namespace, bridging two veth
//! pairs through `net_af_packet` vdevs:
//!
//! ```text
//!  [ns cli] vc1 ──veth── vc0 [ns appliance: levee] vs0 ──veth── vs1 [ns srv]
//!   198.18.0.1/24, 2001:2::1/64                       198.18.0.2/24, 2001:2::2/64
//! ```
//!
//! VLAN-tagged traffic is checked with raw frames (`lab_vlan.py`): 802.1Q-tagged IPv4 and IPv6
//! frames written on the client's interface must arrive at the server's, tag included, byte for
//! byte. (Raw frames rather than VLAN sub-interfaces because kernels built without
//! CONFIG_VLAN_8021Q, like the one levee's CI runs on, cannot create those.)
//!
//! Only addresses from the benchmarking ranges (198.18.0.0/15, 2001:2::/48) are used, and no
//! interface of the lab is in the host's namespace. Everything the lab creates is removed when
//! the [`Lab`] value drops: on success, on error, and on Ctrl-C (the signal only sets a flag;
//! the running step fails and the drop cleans up).
//!
//! With [`SYNPROXY_RULESET`] levee protects the server's ports 8080 and 5201 with its SYN proxy.
//! The lab then also reads what was negotiated on each side of the proxy ([`Lab::tcp_info`]), and
//! floods the protected port from the client's interface ([`Lab::flood`]: `trafgen`, bounded in
//! packets and time, sources only from 198.19.0.0/16 and 2001:2:0:1::/64) while the client keeps
//! fetching pages, watching the server's half-open connections and every frame its interface
//! receives.
//!
//! The end-to-end tests (`tests/lab.rs`) drive the same [`Lab`].

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Client and server addresses (benchmarking ranges only).
pub const CLI_V4: &str = "198.18.0.1";
pub const SRV_V4: &str = "198.18.0.2";
pub const CLI_V6: &str = "2001:2::1";
pub const SRV_V6: &str = "2001:2::2";
/// The HTTP server's port (protected by [`SYNPROXY_RULESET`]).
pub const HTTP_PORT: u16 = 8080;
/// The iperf3 server's port (protected by [`SYNPROXY_RULESET`]).
pub const IPERF_PORT: u16 = 5201;
/// A second HTTP server on the server, on a port [`SYNPROXY_RULESET`] does not protect: with that
/// ruleset no connection to it can be opened from the outside.
pub const UNPROTECTED_PORT: u16 = 8081;
/// Size of the file the HTTP checks fetch.
pub const BLOB_BYTES: usize = 4 << 20;
/// Size of the page the client fetches over and over during floods.
pub const PAGE_BYTES: usize = 64 << 10;
/// Client ports the floods' page fetches use, one after the other (below Linux's ephemeral range,
/// 32768-60999): a tuple comes back only after 22,000 fetches, minutes after its TIME_WAIT.
const FETCH_PORTS: std::ops::Range<u16> = 10_000..32_000;
/// Flood sources: the upper half of 198.18.0.0/15 (the lab's hosts live in 198.18.0.0/24) and a
/// /64 of 2001:2::/48 that the lab's hosts do not use.
pub const FLOOD_NET_V4: &str = "198.19.0.0/16";
pub const FLOOD_NET_V6: &str = "2001:2:0:1::/64";
/// The window scale [`SYNPROXY_RULESET`] offers clients.
pub const SYNPROXY_WSCALE: u8 = 7;

/// Which host of the lab a command runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host {
    Client,
    Server,
    Appliance,
}

/// Which IP version an HTTP fetch or iperf3 run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn server_url_host(self) -> String {
        match self {
            Family::V4 => SRV_V4.to_owned(),
            Family::V6 => format!("[{SRV_V6}]"),
        }
    }
    fn server_addr(self) -> &'static str {
        match self {
            Family::V4 => SRV_V4,
            Family::V6 => SRV_V6,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

const VLAN_PROBE: &str = include_str!("lab_vlan.py");

/// The lab's Python helpers: the HTTP server (which also answers `GET /tcpinfo` with its side's
/// `TCP_INFO`), the client half of that probe, and a counter of the frames an interface receives
/// from the flood prefixes.
const LAB_TOOLS: &str = r#"import http.server, json, signal, socket, struct, sys


def tcp_info(sock):
    b = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return {
        "timestamps": bool(b[5] & 1),
        "sack": bool(b[5] & 2),
        "wscale": bool(b[5] & 4),
        "snd_wscale": b[6] & 15,
        "rcv_wscale": b[6] >> 4,
        "snd_mss": struct.unpack_from("=I", b, 16)[0],
    }


class Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path != "/tcpinfo":
            return super().do_GET()
        body = json.dumps(tcp_info(self.connection)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True
    request_queue_size = 128

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def serve(port):
    Server(("::", int(port)), Handler).serve_forever()


def tcpinfo(host, port):
    s = socket.create_connection((host, int(port)), timeout=10)
    mine = tcp_info(s)
    s.sendall(b"GET /tcpinfo HTTP/1.0\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    body = data.partition(b"\r\n\r\n")[2]
    print(json.dumps({"client": mine, "server": json.loads(body)}))


def count(iface, v4_prefix, v6_prefix):
    # Every frame the interface receives; those whose source lies in a flood prefix apart.
    v4, v6 = bytes.fromhex(v4_prefix), bytes.fromhex(v6_prefix)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    s.bind((iface, 0))
    s.settimeout(0.1)
    stop = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *a: stop.append(1))
    print("listening", flush=True)
    total = flood = 0
    while not stop:
        try:
            f, addr = s.recvfrom(128)
        except socket.timeout:
            continue
        if addr[2] == socket.PACKET_OUTGOING:
            continue
        total += 1
        if f[12:14] == b"\x08\x00" and f[26:26 + len(v4)] == v4:
            flood += 1
        elif f[12:14] == b"\x86\xdd" and f[22:22 + len(v6)] == v6:
            flood += 1
    print("frames %d flood %d" % (total, flood), flush=True)


if __name__ == "__main__":
    {"serve": serve, "tcpinfo": tcpinfo, "count": count}[sys.argv[1]](*sys.argv[2:])
"#;

/// An iperf3 transfer's outcome.
#[derive(Clone, Copy, Debug)]
pub struct IperfResult {
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub bits_per_second: f64,
    pub retransmits: u64,
}

/// Options for [`Lab::start`].
#[derive(Clone, Debug)]
pub struct LabOptions {
    /// The levee binary to run in the appliance namespace.
    pub levee: PathBuf,
    /// Worker lcores.
    pub workers: Vec<u32>,
    /// Echo levee's output (live counters) to our stdout.
    pub echo_levee: bool,
    /// An nft ruleset for the appliance (None: forward everything). With a `synproxy`
    /// statement, conntrack's loose pickup is turned off, as for Linux's SYNPROXY
    /// (`nf_conntrack_tcp_loose=0`), so a cookie ACK is `ct state invalid`.
    pub ruleset: Option<String>,
}

/// The lab's protecting ruleset (as the kernel's `nft_synproxy.sh`, for a bridge): client
/// SYNs are not tracked, SYNs and cookie ACKs (invalid or untracked) from the outside go to the
/// SYN proxy, other invalid packets are dropped, and a plain SYN from the outside never reaches
/// the server: the proxy is the only way in.
pub const SYNPROXY_RULESET: &str = "table inet lab {
\tchain raw {
\t\ttype filter hook prerouting priority raw; policy accept;
\t\tiifname \"outside\" tcp flags & (syn | ack) == syn notrack
\t}
\tchain pre {
\t\ttype filter hook prerouting priority filter; policy accept;
\t\tiifname \"outside\" ip daddr 198.18.0.2 tcp dport { 8080, 5201 } ct state invalid,untracked synproxy mss 1460 wscale 7 timestamp sack-perm
\t\tiifname \"outside\" ip6 daddr 2001:2::2 tcp dport { 8080, 5201 } ct state invalid,untracked synproxy mss 1440 wscale 7 timestamp sack-perm
\t\tct state invalid drop
\t\tiifname \"outside\" tcp flags & (syn | ack) == syn drop
\t}
}
";

/// Frames in each of levee's `net_af_packet` kernel rings (the PMD's default is 512; 2 KiB each,
/// so 32 MiB a ring, four rings). levee's worker busy-polls a core the lab shares with everything
/// else on a small machine; a deep ring rides out the time it is scheduled away without dropping
/// frames: with 512, bulk TCP through the lab retransmits hundreds of segments per 16 MB when the
/// cores are busy, and during a 100 kpps flood a lost cookie ACK hangs a client's connection
/// (its zero-window probes cannot carry the cookie). 16384 frames are 160 ms of such a flood.
const AF_PACKET_RING_FRAMES: u32 = 16384;

static LAB_SEQ: AtomicU32 = AtomicU32::new(0);

/// A running lab. Dropping it tears everything down.
pub struct Lab {
    id: String,
    ns: [String; 3],
    links: Vec<String>,
    dir: PathBuf,
    levee: Option<Child>,
    levee_out: Arc<Mutex<Vec<String>>>,
    /// EAL file prefixes levee ran under (their runtime directories are removed at the end).
    prefixes: Vec<String>,
    /// levee's worker cores.
    workers: Vec<u32>,
    servers: Vec<Child>,
    /// Keeps the output files of concurrent fetches apart.
    fetch_seq: AtomicU64,
}

/// The client's TCP options: its namespace's `net.ipv4.tcp_timestamps`, `tcp_sack` and
/// `tcp_window_scaling` (which also govern IPv6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpOpts {
    pub timestamps: bool,
    pub sack: bool,
    pub window_scaling: bool,
}

impl TcpOpts {
    /// Linux's defaults: everything on.
    pub const ALL: TcpOpts = TcpOpts {
        timestamps: true,
        sack: true,
        window_scaling: true,
    };

    /// The eight combinations, all on first.
    pub fn matrix() -> impl Iterator<Item = TcpOpts> {
        (0..8u8).map(|i| TcpOpts {
            timestamps: i & 4 == 0,
            sack: i & 2 == 0,
            window_scaling: i & 1 == 0,
        })
    }
}

impl std::fmt::Display for TcpOpts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let on = |b: bool| if b { "on" } else { "off" };
        write!(
            f,
            "timestamps {} sack {} wscale {}",
            on(self.timestamps),
            on(self.sack),
            on(self.window_scaling)
        )
    }
}

/// One end's view of an established connection (its `TCP_INFO`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpInfo {
    pub timestamps: bool,
    pub sack: bool,
    /// (send, receive) window scale, when window scaling is in use.
    pub wscale: Option<(u8, u8)>,
    pub snd_mss: u32,
}

impl TcpInfo {
    fn from_json(v: &serde_json::Value) -> Option<TcpInfo> {
        let flag = |k: &str| v.get(k).and_then(serde_json::Value::as_bool);
        let num = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
        Some(TcpInfo {
            timestamps: flag("timestamps")?,
            sack: flag("sack")?,
            wscale: if flag("wscale")? {
                Some((num("snd_wscale")? as u8, num("rcv_wscale")? as u8))
            } else {
                None
            },
            snd_mss: num("snd_mss")? as u32,
        })
    }
}

/// One `stats` line of levee's.
#[derive(Clone, Debug, Default)]
pub struct Stats(pub Vec<(String, String)>);

impl Stats {
    /// A numeric counter (0 when absent).
    pub fn get(&self, key: &str) -> u64 {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0)
    }
    /// `key` in `self` minus `key` in `before`.
    pub fn since(&self, before: &Stats, key: &str) -> u64 {
        self.get(key).saturating_sub(before.get(key))
    }
}

/// A page fetched by [`Lab::fetch_page`].
#[derive(Clone, Copy, Debug)]
pub struct Fetch {
    pub connect: Duration,
    pub total: Duration,
}

/// What a flood sends (see [`Lab::flood`]): IPv4 and IPv6 frames alternately, with random
/// sources from [`FLOOD_NET_V4`] / [`FLOOD_NET_V6`] and random source ports, at the server's
/// HTTP port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloodKind {
    /// SYNs (an MSS option, random sequence numbers).
    Syn,
    /// Bare ACKs with random sequence and acknowledgment numbers: forged cookies.
    Ack,
}

impl FloodKind {
    pub fn name(self) -> &'static str {
        match self {
            FloodKind::Syn => "SYN flood",
            FloodKind::Ack => "ACK flood",
        }
    }
}

/// A bounded flood.
#[derive(Clone, Copy, Debug)]
pub struct FloodSpec {
    pub kind: FloodKind,
    /// Frames per second; None: as fast as `trafgen` goes on one CPU.
    pub pps: Option<u64>,
    /// How long: `trafgen` sends `pps × secs` frames (unpaced: at most 2 M per second) and is
    /// stopped when the time is up in any case.
    pub secs: f64,
    /// Fetch pages from the client (alternately over IPv4 and IPv6) all the while.
    pub fetch: bool,
}

/// Once a second during a flood.
#[derive(Clone, Debug)]
pub struct FloodTick {
    pub kind: FloodKind,
    pub t: f64,
    /// levee's counters, since the flood started.
    pub syn_received: u64,
    pub synack_sent: u64,
    pub cookie_valid: u64,
    pub cookie_invalid: u64,
    pub ack_flood_dropped: u64,
    pub fetches_ok: u64,
    pub fetches_failed: u64,
    /// `SYN-RECV` sockets on the server now: all, and those from the flood prefixes.
    pub half_open: usize,
    pub half_open_flood: usize,
}

impl FloodTick {
    /// The lab's live line.
    pub fn line(&self) -> String {
        format!(
            "{} t={:.0}s: SYNs answered {} (of {}), cookies valid {} invalid {}, ACKs dropped {}; client fetches ok {} failed {}; server half-open {} (from the flood {})",
            self.kind.name(),
            self.t,
            self.synack_sent,
            self.syn_received,
            self.cookie_valid,
            self.cookie_invalid,
            self.ack_flood_dropped,
            self.fetches_ok,
            self.fetches_failed,
            self.half_open,
            self.half_open_flood
        )
    }
}

/// What [`Lab::flood`] saw.
#[derive(Clone, Debug)]
pub struct FloodReport {
    pub spec: FloodSpec,
    /// Frames trafgen sent, and for how long it ran.
    pub sent: u64,
    pub secs: f64,
    pub fetches_ok: u64,
    pub fetch_failures: Vec<String>,
    /// Connect times of the successful fetches, ascending (ms).
    pub connect_ms: Vec<f64>,
    /// `SYN-RECV` sockets on the server: samples taken, the most seen in one sample (all, and
    /// from the flood prefixes), and from the flood prefixes after the flood.
    pub half_open_samples: usize,
    pub half_open_max: usize,
    pub half_open_flood_max: usize,
    pub half_open_flood_after: usize,
    /// Frames the server's interface received during the flood, and how many of them came from
    /// the flood prefixes.
    pub server_frames: u64,
    pub server_flood_frames: u64,
    /// levee's counters before and after.
    pub levee_before: Stats,
    pub levee_after: Stats,
    /// The server namespace's `nstat` counters (and `rx_packets` of its interface) before and
    /// after.
    pub server_before: BTreeMap<String, u64>,
    pub server_after: BTreeMap<String, u64>,
}

impl FloodReport {
    /// A levee counter's growth over the flood.
    pub fn levee(&self, key: &str) -> u64 {
        self.levee_after.since(&self.levee_before, key)
    }
    /// A server counter's growth over the flood.
    pub fn server(&self, key: &str) -> u64 {
        let get = |m: &BTreeMap<String, u64>| m.get(key).copied().unwrap_or(0);
        get(&self.server_after).saturating_sub(get(&self.server_before))
    }
    /// The `p`-th percentile (0..=100) of the connect times, in ms (NaN without fetches).
    pub fn connect_percentile(&self, p: f64) -> f64 {
        match self.connect_ms.len() {
            0 => f64::NAN,
            n => self.connect_ms[(((p / 100.0) * (n - 1) as f64).round() as usize).min(n - 1)],
        }
    }
    /// Flood frames per second.
    pub fn rate(&self) -> f64 {
        if self.secs > 0.0 {
            self.sent as f64 / self.secs
        } else {
            0.0
        }
    }
    /// Summary lines.
    pub fn summary(&self) -> String {
        format!(
            "{}: {} frames in {:.1} s ({:.0} pps)\n\
             levee: {} SYNs seen, {} answered, cookies valid {} invalid {}, ACKs dropped {}\n\
             client: {} fetches ok, {} failed; connect p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms\n\
             server: half-open at most {} ({} from the flood; {} after it) in {} samples; {} frames received, {} of them from the flood prefixes; {} connections accepted",
            self.spec.kind.name(),
            self.sent,
            self.secs,
            self.rate(),
            self.levee("synproxy_syn_received"),
            self.levee("synproxy_synack_sent"),
            self.levee("synproxy_cookie_valid"),
            self.levee("synproxy_cookie_invalid"),
            self.levee("synproxy_ack_flood_dropped"),
            self.fetches_ok,
            self.fetch_failures.len(),
            self.connect_percentile(50.0),
            self.connect_percentile(99.0),
            self.connect_percentile(100.0),
            self.half_open_max,
            self.half_open_flood_max,
            self.half_open_flood_after,
            self.half_open_samples,
            self.server_frames,
            self.server_flood_frames,
            self.server("TcpPassiveOpens"),
        )
    }
}

/// Kills a helper process (flood generator, frame counter) that still runs when this drops, so
/// an error or a panic never leaves one behind. With `group`, the child leads its own process
/// group and the whole group goes (trafgen sends from a forked child of its own).
struct Reaped {
    child: Child,
    group: bool,
}

impl Reaped {
    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn signal(&self, sig: &str) {
        let target = if self.group {
            format!("-{}", self.child.id())
        } else {
            self.child.id().to_string()
        };
        let _ = Command::new("kill")
            .args([sig, "--", &target])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// SIGINT, then SIGKILL if it has not exited within `grace`.
    fn stop(&mut self, grace: Duration) {
        if !self.running() {
            return;
        }
        self.signal("-INT");
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !self.running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.signal("-KILL");
        let _ = self.child.wait();
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if self.running() {
            self.signal("-KILL");
        }
        let _ = self.child.wait();
    }
}

fn cmd_str(args: &[&str]) -> String {
    args.join(" ")
}

/// Runs a command, failing with its stderr when it exits non-zero.
fn sh(args: &[&str]) -> Result<Output, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{}`: {e}", cmd_str(args)))?;
    if !out.status.success() {
        return Err(format!(
            "`{}` failed ({}): {}",
            cmd_str(args),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out)
}

/// Checks that we are root and the tools the lab drives are installed.
pub fn preflight() -> Result<(), String> {
    let uid = sh(&["id", "-u"])?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Err("the lab creates network namespaces and needs root (run it with sudo)".into());
    }
    let mut missing = Vec::new();
    for (tool, package) in [
        ("ip", "iproute2"),
        ("ethtool", "ethtool"),
        ("curl", "curl"),
        ("iperf3", "iperf3"),
        ("python3", "python3"),
        ("ss", "iproute2"),
        ("nstat", "iproute2"),
        ("taskset", "util-linux"),
        ("trafgen", "netsniff-ng"),
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !found {
            missing.push(format!("{tool} (package {package})"));
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "missing tools: {}; run deploy/host-setup.sh",
            missing.join(", ")
        ));
    }
    Ok(())
}

impl Lab {
    /// Creates the namespaces, links and addresses, starts an HTTP and an iperf3 server in the
    /// server namespace and levee in the appliance namespace, and waits until traffic flows.
    pub fn start(opts: &LabOptions) -> Result<Lab, String> {
        preflight()?;
        let seq = LAB_SEQ.fetch_add(1, Ordering::SeqCst);
        let id = format!("{}{}", std::process::id() % 100_000, seq);
        let dir = std::env::temp_dir().join(format!("levee-lab-{id}"));
        let mut lab = Lab {
            ns: [format!("lv{id}c"), format!("lv{id}s"), format!("lv{id}a")],
            id,
            links: Vec::new(),
            dir,
            levee: None,
            levee_out: Arc::new(Mutex::new(Vec::new())),
            prefixes: Vec::new(),
            workers: Vec::new(),
            servers: Vec::new(),
            fetch_seq: AtomicU64::new(0),
        };
        lab.build_network()?;
        lab.start_servers()?;
        lab.start_levee(opts)?;
        lab.wait_until_forwarding()?;
        Ok(lab)
    }

    /// The namespace of a host.
    pub fn netns(&self, host: Host) -> &str {
        match host {
            Host::Client => &self.ns[0],
            Host::Server => &self.ns[1],
            Host::Appliance => &self.ns[2],
        }
    }

    fn ns_args<'a>(&'a self, host: Host, args: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec!["ip", "netns", "exec", self.netns(host)];
        v.extend_from_slice(args);
        v
    }

    /// Runs a command on a lab host; fails on a non-zero exit.
    pub fn exec(&self, host: Host, args: &[&str]) -> Result<Output, String> {
        sh(&self.ns_args(host, args))
    }

    fn veth(&self, which: &str) -> String {
        format!("lv{}{which}", self.id)
    }

    fn build_network(&mut self) -> Result<(), String> {
        fs::create_dir_all(self.dir.join("www"))
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        for ns in self.ns.clone() {
            sh(&["ip", "netns", "add", &ns])?;
        }
        let (cli, srv, app) = (self.ns[0].clone(), self.ns[1].clone(), self.ns[2].clone());
        let (c0, c1, s0, s1) = (self.veth("c0"), self.veth("c1"), self.veth("s0"), self.veth("s1"));
        // Each veth pair is created directly inside the namespaces it joins, so nothing ever
        // appears in the host's namespace.
        sh(&[
            "ip", "-n", &app, "link", "add", &c0, "type", "veth", "peer", "name", &c1, "netns", &cli,
        ])?;
        sh(&[
            "ip", "-n", &app, "link", "add", &s0, "type", "veth", "peer", "name", &s1, "netns", &srv,
        ])?;
        self.links = vec![c0.clone(), s0.clone()];
        let app_host = Host::Appliance;
        for (host, dev) in [
            (Host::Client, &c1),
            (Host::Server, &s1),
            (app_host, &c0),
            (app_host, &s0),
        ] {
            let ns = self.netns(host).to_owned();
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
            if host == Host::Appliance {
                // The appliance's ends carry no addresses: keep the kernel from sending
                // anything (router solicitations, DAD) on them.
                self.exec(
                    host,
                    &["sysctl", "-qw", &format!("net.ipv6.conf.{dev}.disable_ipv6=1")],
                )?;
            }
            sh(&["ip", "-n", &ns, "link", "set", dev, "up"])?;
            // Frames must carry complete checksums and in-band VLAN tags when DPDK sees them:
            // no TX checksum offload (which also disables TSO) and no VLAN tag offload.
            self.exec(
                host,
                &[
                    "ethtool", "-K", dev, "tx", "off", "txvlan", "off", "rxvlan", "off",
                ],
            )
            .or_else(|_| self.exec(host, &["ethtool", "-K", dev, "tx", "off"]))?;
        }
        for (host, dev, v4, v6) in [
            (Host::Client, &c1, CLI_V4, CLI_V6),
            (Host::Server, &s1, SRV_V4, SRV_V6),
        ] {
            let ns = self.netns(host).to_owned();
            sh(&["ip", "-n", &ns, "addr", "add", &format!("{v4}/24"), "dev", dev])?;
            sh(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                dev,
                "nodad",
            ])?;
        }
        fs::write(self.dir.join("lab_vlan.py"), VLAN_PROBE)
            .map_err(|e| format!("cannot write the VLAN probe: {e}"))?;
        fs::write(self.dir.join("lab_tools.py"), LAB_TOOLS)
            .map_err(|e| format!("cannot write the lab's helpers: {e}"))?;
        Ok(())
    }

    fn tools(&self) -> String {
        self.dir
            .join("lab_tools.py")
            .to_str()
            .expect("UTF-8 temp path")
            .to_owned()
    }

    fn start_servers(&mut self) -> Result<(), String> {
        // A 4 MiB file and a 64 KiB page of pseudo-random bytes.
        fs::write(self.dir.join("www/blob.bin"), pseudo_random(BLOB_BYTES, 1))
            .map_err(|e| format!("cannot write blob: {e}"))?;
        fs::write(self.dir.join("www/page.bin"), pseudo_random(PAGE_BYTES, 2))
            .map_err(|e| format!("cannot write page: {e}"))?;
        let www = self.dir.join("www");
        let tools = self.tools();
        for port in [HTTP_PORT, UNPROTECTED_PORT] {
            let http = Command::new("ip")
                .args(["netns", "exec", self.netns(Host::Server)])
                .args(["python3", &tools, "serve", &port.to_string()])
                .current_dir(&www)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot start the HTTP server: {e}"))?;
            self.servers.push(http);
        }
        let iperf = Command::new("ip")
            .args(["netns", "exec", self.netns(Host::Server)])
            .args(["iperf3", "-s", "-p", &IPERF_PORT.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the iperf3 server: {e}"))?;
        self.servers.push(iperf);
        Ok(())
    }

    fn start_levee(&mut self, opts: &LabOptions) -> Result<(), String> {
        let main_core = 0;
        // A fresh EAL prefix for each start: a restarted levee never meets its predecessor's
        // runtime files.
        let prefix = format!("levee-lab-{}-{}", self.id, self.prefixes.len());
        self.prefixes.push(prefix.clone());
        self.workers = opts.workers.clone();
        let config = format!(
            "# written by levee lab\n\
             [eal]\nmain_core = {main_core}\nfile_prefix = \"{prefix}\"\n\
             args = [\"--no-huge\", \"-m\", \"512\", \"--no-telemetry\", \"--log-level\", \"lib.eal:warning\"]\n\
             [ports.outside]\ndevice = \"net_af_packet0,iface={c0},qpairs={q},framecnt={ring}\"\n\
             [ports.inside]\ndevice = \"net_af_packet1,iface={s0},qpairs={q},framecnt={ring}\"\n\
             [workers]\ncores = [{cores}]\n\
             [pools]\nmbufs_per_worker = 8191\n\
             [conntrack]\nentries_per_worker = 65536\ntcp_loose = {loose}\n",
            loose = opts.ruleset.as_deref().is_none_or(|r| !r.contains("synproxy")),
            ring = AF_PACKET_RING_FRAMES,
            c0 = self.veth("c0"),
            s0 = self.veth("s0"),
            q = opts.workers.len(),
            cores = opts
                .workers
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        );
        let mut config = config;
        if let Some(r) = &opts.ruleset {
            fs::write(self.dir.join("lab.nft"), r)
                .map_err(|e| format!("cannot write the lab ruleset: {e}"))?;
            config += "[filter]\nruleset = \"lab.nft\"\n";
        }
        if let Ok(secret) = std::env::var("LEVEE_LAB_SYNPROXY_SECRET") {
            // Debugging aid: a known cookie secret (32 hex digits), so cookies in a capture can be
            // recomputed offline.
            fs::write(self.dir.join("secret.hex"), secret)
                .map_err(|e| format!("cannot write the cookie secret: {e}"))?;
            config += "[synproxy]\nsecret_file = \"secret.hex\"\n";
        }
        let cfg_path = self.dir.join("levee.toml");
        fs::write(&cfg_path, config).map_err(|e| format!("cannot write the lab config: {e}"))?;
        let mut child = Command::new("ip")
            .args(["netns", "exec", self.netns(Host::Appliance)])
            .arg(&opts.levee)
            .args(["run", "--stats-interval", "1", "--config"])
            .arg(&cfg_path)
            // Debugging aid: conntrack events in levee's output (with LEVEE_LAB_ECHO=1 in the
            // tests, on screen).
            .args(std::env::var_os("LEVEE_LAB_CT_EVENTS").map(|_| "--ct-events"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", opts.levee.display()))?;
        for stream in [
            Box::new(child.stdout.take().expect("piped")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("piped")),
        ] {
            let sink = self.levee_out.clone();
            let echo = opts.echo_levee;
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if echo {
                        println!("  [levee] {line}");
                    }
                    sink.lock().expect("levee output lock").push(line);
                }
            });
        }
        self.levee = Some(child);
        Ok(())
    }

    /// Everything levee printed so far.
    pub fn levee_output(&self) -> Vec<String> {
        self.levee_out.lock().expect("levee output lock").clone()
    }

    /// Whether levee is still running.
    pub fn levee_alive(&mut self) -> bool {
        matches!(self.levee.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    fn wait_until_forwarding(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = format!("http://{SRV_V4}:{HTTP_PORT}/");
        loop {
            if !self.levee_alive() {
                return Err(format!(
                    "levee exited during start-up:\n{}",
                    self.levee_output().join("\n")
                ));
            }
            if self
                .exec(
                    Host::Client,
                    &["curl", "-sS", "-o", "/dev/null", "--max-time", "2", &url],
                )
                .is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no HTTP answer through levee within 30 s; levee said:\n{}",
                    self.levee_output().join("\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Fetches the 4 MiB blob from the server over `family` and checks it byte for byte.
    /// Returns the transfer time.
    pub fn http_fetch(&self, family: Family) -> Result<Duration, String> {
        let out = self
            .dir
            .join(format!("fetched-{}", family.name().replace(' ', "_")));
        let _ = fs::remove_file(&out);
        let url = format!("http://{}:{HTTP_PORT}/blob.bin", family.server_url_host());
        let t = Instant::now();
        self.exec(
            Host::Client,
            &[
                "curl",
                "-sS",
                "--fail",
                "--max-time",
                "30",
                "-o",
                out.to_str().unwrap(),
                &url,
            ],
        )?;
        let took = t.elapsed();
        let got = fs::read(&out).map_err(|e| format!("cannot read the fetched file: {e}"))?;
        let want = fs::read(self.dir.join("www/blob.bin")).map_err(|e| format!("cannot read blob: {e}"))?;
        if got != want {
            let first_diff = got.iter().zip(&want).position(|(a, b)| a != b);
            return Err(format!(
                "{}: fetched {} bytes, expected {} (first difference at {first_diff:?})",
                family.name(),
                got.len(),
                want.len()
            ));
        }
        Ok(took)
    }

    /// Sends a `bytes`-long file with iperf3 from the client to the server over `family`; fails
    /// unless all of it was sent and the server counted all but the in-flight tail by the end
    /// of the test (see below).
    pub fn iperf(&self, family: Family, bytes: u64) -> Result<IperfResult, String> {
        // The client sends a file (-F): iperf3 then ends the test when the file is through and
        // both sides count the same bytes; with -n the server stops counting while the tail is
        // still in flight.
        let file = self.dir.join(format!("iperf-{bytes}.bin"));
        if !file.exists() {
            fs::write(&file, pseudo_random(bytes as usize, bytes))
                .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
        }
        let port = IPERF_PORT.to_string();
        let file = file.to_str().expect("UTF-8 temp path");
        let args = [
            "timeout",
            "120",
            "iperf3",
            "-J",
            "-c",
            family.server_addr(),
            "-p",
            &port,
            "-F",
            file,
        ];
        // The server takes a moment after a test before it accepts the next one ("the server is
        // busy running a test"): try again a few times.
        let mut tries = 0;
        let v = loop {
            tries += 1;
            // Its exit status is not checked: its JSON says what went wrong.
            let out = Command::new("ip")
                .args(&self.ns_args(Host::Client, &args)[1..])
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("cannot run iperf3: {e}"))?;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
                format!(
                    "iperf3 printed no JSON ({e}; {}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )
            })?;
            match v.get("error") {
                Some(err) if err.as_str().is_some_and(|e| e.contains("busy")) && tries < 20 => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Some(err) => return Err(format!("iperf3 over {}: {err}", family.name())),
                None => break v,
            }
        };
        let end = &v["end"];
        let num = |p: &str| end.pointer(p).and_then(serde_json::Value::as_f64).unwrap_or(-1.0);
        let r = IperfResult {
            bytes_sent: num("/sum_sent/bytes") as u64,
            bytes_received: num("/sum_received/bytes") as u64,
            bits_per_second: num("/sum_received/bits_per_second"),
            retransmits: num("/sum_sent/retransmits").max(0.0) as u64,
        };
        // iperf3's server stops counting when the client signals the end of the test, while
        // the tail may still sit in socket buffers and in flight, so "received" can fall short
        // of "sent" by up to the socket buffers' size (Linux's tcp_rmem/tcp_wmem maxima are 6
        // and 4 MiB) even though TCP delivered every byte (byte-for-byte delivery is what
        // `http_fetch` checks). What must hold: the whole file was sent and all but that tail
        // was counted at the server.
        const TAIL: u64 = 16 << 20;
        if r.bytes_sent != bytes || r.bytes_received > r.bytes_sent || r.bytes_received + TAIL < r.bytes_sent
        {
            return Err(format!(
                "iperf3 over {}: sent {} of {bytes} bytes, server counted {}",
                family.name(),
                r.bytes_sent,
                r.bytes_received
            ));
        }
        Ok(r)
    }

    /// Sends `count` 802.1Q-tagged frames (IPv4 and IPv6 UDP, VLAN ids 100-102, every priority)
    /// from the client's interface and checks that the server's interface receives every one
    /// unchanged, tag included. Returns how many arrived identical.
    pub fn vlan_frames(&self, count: u32) -> Result<u32, String> {
        let probe = self.dir.join("lab_vlan.py");
        let probe = probe.to_str().expect("UTF-8 temp path");
        let s1 = self.veth("s1");
        let mac_out = self.exec(Host::Server, &["cat", &format!("/sys/class/net/{s1}/address")])?;
        let mac = String::from_utf8_lossy(&mac_out.stdout).trim().to_owned();
        let mut rx = Command::new("ip")
            .args([
                "netns",
                "exec",
                self.netns(Host::Server),
                "python3",
                probe,
                "recv",
                &s1,
            ])
            .args([&count.to_string(), "10"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the VLAN receiver: {e}"))?;
        let mut lines = BufReader::new(rx.stdout.take().expect("piped")).lines();
        match lines.next() {
            Some(Ok(l)) if l == "listening" => {}
            other => {
                let _ = rx.kill();
                return Err(format!("VLAN receiver did not start: {other:?}"));
            }
        }
        let sent = self.exec(
            Host::Client,
            &[
                "python3",
                probe,
                "send",
                &self.veth("c1"),
                &mac,
                &count.to_string(),
            ],
        );
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        let _ = rx.wait();
        sent?;
        let summary = rest.first().cloned().unwrap_or_default();
        let same: u32 = summary
            .strip_prefix("received ")
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("VLAN receiver said {rest:?}"))?;
        if same != count {
            return Err(format!("VLAN frames: {}", rest.join("; ")));
        }
        Ok(same)
    }

    /// Stops levee (if it runs) and starts it again with `opts` (a new ruleset, say), then waits
    /// until traffic flows.
    pub fn restart_levee(&mut self, opts: &LabOptions) -> Result<(), String> {
        self.stop_levee()?;
        self.levee_out = Arc::new(Mutex::new(Vec::new()));
        self.start_levee(opts)?;
        self.wait_until_forwarding()
    }

    /// levee's latest counters line.
    pub fn levee_stats(&self) -> Option<Stats> {
        let out = self.levee_out.lock().expect("levee output lock");
        out.iter().rev().find_map(|l| parse_stats_line(l)).map(Stats)
    }

    /// A counters line levee printed after this call began (it prints one a second), so it
    /// counts everything levee had received by then.
    pub fn fresh_levee_stats(&self) -> Result<Stats, String> {
        let seen = self.levee_out.lock().expect("levee output lock").len();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            {
                let out = self.levee_out.lock().expect("levee output lock");
                if let Some(s) = out[seen.min(out.len())..]
                    .iter()
                    .rev()
                    .find_map(|l| parse_stats_line(l))
                {
                    return Ok(Stats(s));
                }
            }
            if Instant::now() > deadline {
                return Err("levee printed no counters line for 5 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sets the client's TCP options (for connections opened from now on).
    pub fn set_client_tcp_options(&self, o: TcpOpts) -> Result<(), String> {
        for (key, on) in [
            ("net.ipv4.tcp_timestamps", o.timestamps),
            ("net.ipv4.tcp_sack", o.sack),
            ("net.ipv4.tcp_window_scaling", o.window_scaling),
        ] {
            self.exec(
                Host::Client,
                &["sysctl", "-qw", &format!("{key}={}", u8::from(on))],
            )?;
        }
        Ok(())
    }

    /// Opens a connection from the client to the HTTP server over `family` and returns what each
    /// end of it negotiated: (the client's view, the server's view).
    pub fn tcp_info(&self, family: Family) -> Result<(TcpInfo, TcpInfo), String> {
        let port = HTTP_PORT.to_string();
        let tools = self.tools();
        let out = self.exec(
            Host::Client,
            &[
                "timeout",
                "15",
                "python3",
                &tools,
                "tcpinfo",
                family.server_addr(),
                &port,
            ],
        )?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("the TCP_INFO probe over {} printed no JSON: {e}", family.name()))?;
        let side =
            |k: &str| TcpInfo::from_json(&v[k]).ok_or_else(|| format!("the TCP_INFO probe printed {v}"));
        Ok((side("client")?, side("server")?))
    }

    /// Fetches the 64 KiB page from the server's `port` over `family` (a new connection each
    /// time) and checks it byte for byte; gives up after `max_time` (curl's error then says
    /// "(28) … timed out").
    pub fn fetch_page(&self, family: Family, port: u16, max_time: Duration) -> Result<Fetch, String> {
        self.fetch_page_from(family, port, None, max_time)
    }

    /// As [`Lab::fetch_page`], from the client's port `local_port` when given (two fetches in a
    /// row from one port reuse the tuple of a closed connection).
    pub fn fetch_page_from(
        &self,
        family: Family,
        port: u16,
        local_port: Option<u16>,
        max_time: Duration,
    ) -> Result<Fetch, String> {
        let n = self.fetch_seq.fetch_add(1, Ordering::Relaxed);
        let out = self.dir.join(format!("page-{n}"));
        let url = format!("http://{}:{port}/page.bin", family.server_url_host());
        let secs = format!("{:.3}", max_time.as_secs_f64());
        let local = local_port.map(|p| p.to_string());
        let mut args = vec!["curl"];
        if let Some(p) = &local {
            args.extend(["--local-port", p.as_str()]);
        }
        let out_path = out.to_str().expect("UTF-8 temp path");
        args.extend([
            "-sS",
            "--fail",
            "--connect-timeout",
            &secs,
            "--max-time",
            &secs,
            "-o",
            out_path,
            "-w",
            "%{time_connect} %{time_total}",
            &url,
        ]);
        let res = self.exec(Host::Client, &args);
        let got = fs::read(&out);
        let _ = fs::remove_file(&out);
        let res = res.map_err(|e| format!("page over {} from port {port}: {e}", family.name()))?;
        let want = fs::read(self.dir.join("www/page.bin")).map_err(|e| format!("cannot read page: {e}"))?;
        let got = got.map_err(|e| format!("cannot read the fetched page: {e}"))?;
        if got != want {
            return Err(format!(
                "page over {}: fetched {} bytes, expected {} (first difference at {:?})",
                family.name(),
                got.len(),
                want.len(),
                got.iter().zip(&want).position(|(a, b)| a != b)
            ));
        }
        let times = String::from_utf8_lossy(&res.stdout);
        let mut t = times
            .split_whitespace()
            .map(|x| Duration::from_secs_f64(x.parse::<f64>().unwrap_or(0.0)));
        Ok(Fetch {
            connect: t.next().unwrap_or_default(),
            total: t.next().unwrap_or_default(),
        })
    }

    /// `SYN-RECV` sockets on the server: (all of them, those from the flood prefixes).
    pub fn server_half_open(&self) -> Result<(usize, usize), String> {
        let out = self.exec(Host::Server, &["ss", "-Htn", "state", "syn-recv"])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let peers: Vec<&str> = text.lines().filter_map(|l| l.split_whitespace().nth(3)).collect();
        Ok((peers.len(), peers.iter().filter(|p| is_flood_addr(p)).count()))
    }

    /// The server namespace's `nstat` counters (`TcpPassiveOpens`, `TcpOutRsts`, …) and its
    /// interface's `rx_packets`.
    pub fn server_counters(&self) -> Result<BTreeMap<String, u64>, String> {
        let out = self.exec(Host::Server, &["nstat", "-asz", "-j"])?;
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| format!("nstat printed no JSON: {e}"))?;
        let mut m: BTreeMap<String, u64> = v["kernel"]
            .as_object()
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
                    .collect()
            })
            .unwrap_or_default();
        let path = format!("/sys/class/net/{}/statistics/rx_packets", self.veth("s1"));
        let rx = self.exec(Host::Server, &["cat", &path])?;
        let rx = String::from_utf8_lossy(&rx.stdout).trim().parse().unwrap_or(0);
        m.insert("rx_packets".into(), rx);
        Ok(m)
    }

    /// A CPU for the flood generator: the first one levee's workers do not poll.
    fn generator_cpu(&self) -> u32 {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        (0..cpus).find(|c| !self.workers.contains(c)).unwrap_or(0)
    }

    /// Floods the server's HTTP port from the client's interface (see [`FloodKind`]) with
    /// `trafgen` on one CPU (bounded: `pps × secs` frames, and stopped when the time is up),
    /// fetching pages from the client all the while if `spec.fetch`, sampling the server's
    /// half-open connections every 200 ms and counting every frame its interface receives.
    /// `on_tick` sees the live figures once a second; an error it returns stops the flood.
    pub fn flood(
        &self,
        spec: FloodSpec,
        mut on_tick: impl FnMut(&FloodTick) -> Result<(), String>,
    ) -> Result<FloodReport, String> {
        let mac_out = self.exec(
            Host::Server,
            &["cat", &format!("/sys/class/net/{}/address", self.veth("s1"))],
        )?;
        let mac = String::from_utf8_lossy(&mac_out.stdout).trim().to_owned();
        let conf = self.dir.join(format!("flood-{:?}.cfg", spec.kind));
        fs::write(&conf, trafgen_config(spec.kind, &mac)?)
            .map_err(|e| format!("cannot write the flood config: {e}"))?;
        let frames = (spec.pps.unwrap_or(2_000_000) as f64 * spec.secs).max(1.0) as u64;
        let counter = self.start_frame_counter()?;
        let levee_before = self.fresh_levee_stats()?;
        let server_before = self.server_counters()?;

        let stop = AtomicBool::new(false);
        let (ok, failed) = (AtomicU64::new(0), AtomicU64::new(0));
        let connect_ms = Mutex::new(Vec::new());
        let failures = Mutex::new(Vec::new());
        let mut half_open = (0usize, 0usize, 0usize); // samples, max, max from the flood
        let (sent, secs, after) = std::thread::scope(|scope| -> Result<(u64, f64, usize), String> {
            // However this closure ends, the fetcher stops (the scope waits for it).
            let _stop = SetOnDrop(&stop);
            if spec.fetch {
                scope.spawn(|| {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let family = if i % 2 == 0 { Family::V4 } else { Family::V6 };
                        i += 1;
                        // Each fetch from a client port of its own (below the kernel's ephemeral
                        // range, so never one it picks): Linux reuses a port whose connection the
                        // server closed first, and levee's proxy hangs a connection that reopens a
                        // tuple conntrack still holds in TIME_WAIT (the ignored test
                        // `syn_proxy_reopened_tuple_carries_data`). The floods test flood survival.
                        let port = FETCH_PORTS.start
                            + (self.fetch_seq.load(Ordering::Relaxed) % u64::from(FETCH_PORTS.len() as u16))
                                as u16;
                        match self.fetch_page_from(family, HTTP_PORT, Some(port), Duration::from_secs(15)) {
                            Ok(f) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                                connect_ms
                                    .lock()
                                    .expect("connect times lock")
                                    .push(f.connect.as_secs_f64() * 1e3);
                            }
                            Err(e) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                failures.lock().expect("failures lock").push(e);
                            }
                        }
                    }
                });
            }
            let log = self.dir.join("trafgen.out");
            let log_file =
                fs::File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
            let log_err = log_file.try_clone().map_err(|e| e.to_string())?;
            let mut args = vec![
                "taskset".to_owned(),
                "-c".to_owned(),
                self.generator_cpu().to_string(),
                "trafgen".to_owned(),
                "--dev".to_owned(),
                self.veth("c1"),
                "--conf".to_owned(),
                conf.to_str().expect("UTF-8 temp path").to_owned(),
                "--cpus".to_owned(),
                "1".to_owned(),
                "--num".to_owned(),
                frames.to_string(),
                // Leave the host's socket memory sysctls and IRQ affinities alone.
                "--no-sock-mem".to_owned(),
                "--notouch-irq".to_owned(),
            ];
            if let Some(pps) = spec.pps {
                args.extend(["--rate".to_owned(), format!("{pps}pps")]);
            }
            let start = Instant::now();
            let mut gen = Reaped {
                child: Command::new("ip")
                    .args(["netns", "exec", self.netns(Host::Client)])
                    .args(&args)
                    .stdin(Stdio::null())
                    .stdout(log_file)
                    .stderr(log_err)
                    .process_group(0)
                    .spawn()
                    .map_err(|e| format!("cannot start trafgen: {e}"))?,
                group: true,
            };
            let grace = if spec.pps.is_some() { 2.0 } else { 0.0 };
            let deadline = start + Duration::from_secs_f64(spec.secs + grace);
            // A tick for each counters line levee prints (one a second).
            let mut lines_seen = self.levee_out.lock().expect("levee output lock").len();
            loop {
                if !gen.running() || Instant::now() >= deadline {
                    break;
                }
                let (all, flood) = self.server_half_open()?;
                half_open = (half_open.0 + 1, half_open.1.max(all), half_open.2.max(flood));
                let latest = {
                    let out = self.levee_out.lock().expect("levee output lock");
                    let new = out[lines_seen.min(out.len())..]
                        .iter()
                        .rev()
                        .find_map(|l| parse_stats_line(l));
                    lines_seen = out.len();
                    new
                };
                if let Some(now) = latest.map(Stats) {
                    let d = |k: &str| now.since(&levee_before, k);
                    on_tick(&FloodTick {
                        kind: spec.kind,
                        t: start.elapsed().as_secs_f64(),
                        syn_received: d("synproxy_syn_received"),
                        synack_sent: d("synproxy_synack_sent"),
                        cookie_valid: d("synproxy_cookie_valid"),
                        cookie_invalid: d("synproxy_cookie_invalid"),
                        ack_flood_dropped: d("synproxy_ack_flood_dropped"),
                        fetches_ok: ok.load(Ordering::Relaxed),
                        fetches_failed: failed.load(Ordering::Relaxed),
                        half_open: all,
                        half_open_flood: flood,
                    })?;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            // trafgen prints its totals when interrupted, too.
            gen.stop(Duration::from_secs(3));
            let secs = start.elapsed().as_secs_f64();
            let text = fs::read_to_string(&log).unwrap_or_default().replace('\r', "\n");
            let sent = text
                .lines()
                .find(|l| l.contains("packets outgoing"))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("trafgen printed no totals:\n{}", text.trim()))?;
            // The last flood frames drain through levee; then the server again.
            std::thread::sleep(Duration::from_millis(300));
            let (_, after) = self.server_half_open()?;
            Ok((sent, secs, after))
        })?;
        let levee_after = self.fresh_levee_stats()?;
        let server_after = self.server_counters()?;
        let (server_frames, server_flood_frames) = counter.finish()?;
        let mut connect_ms = connect_ms.into_inner().expect("connect times lock");
        connect_ms.sort_by(f64::total_cmp);
        Ok(FloodReport {
            spec,
            sent,
            secs,
            fetches_ok: ok.into_inner(),
            fetch_failures: failures.into_inner().expect("failures lock"),
            connect_ms,
            half_open_samples: half_open.0,
            half_open_max: half_open.1,
            half_open_flood_max: half_open.2,
            half_open_flood_after: after,
            server_frames,
            server_flood_frames,
            levee_before,
            levee_after,
            server_before,
            server_after,
        })
    }

    /// Starts counting the frames the server's interface receives (all, and those from the
    /// flood prefixes).
    fn start_frame_counter(&self) -> Result<FrameCounter, String> {
        let tools = self.tools();
        let mut child = Reaped {
            child: Command::new("ip")
                .args(["netns", "exec", self.netns(Host::Server)])
                .args([
                    "python3",
                    &tools,
                    "count",
                    &self.veth("s1"),
                    "c613",
                    "2001000200000001",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot start the frame counter: {e}"))?,
            group: false,
        };
        let mut lines = BufReader::new(child.child.stdout.take().expect("piped")).lines();
        match lines.next() {
            Some(Ok(l)) if l == "listening" => Ok(FrameCounter { child, lines }),
            other => Err(format!("the frame counter did not start: {other:?}")),
        }
    }

    /// Stops levee with SIGINT and returns its output (its final totals are the last lines).
    pub fn stop_levee(&mut self) -> Result<Vec<String>, String> {
        if let Some(mut child) = self.levee.take() {
            stop_child(&mut child, Duration::from_secs(10));
            // Give the reader threads a moment to collect the last lines.
            std::thread::sleep(Duration::from_millis(200));
            let status = child.wait().map_err(|e| e.to_string())?;
            if !status.success() {
                return Err(format!(
                    "levee exited with {status}:\n{}",
                    self.levee_output().join("\n")
                ));
            }
        }
        Ok(self.levee_output())
    }
}

/// Sets a flag when dropped.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The frame counter of [`Lab::flood`], running in the server's namespace.
struct FrameCounter {
    child: Reaped,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl FrameCounter {
    /// Stops it: (frames received, frames from the flood prefixes).
    fn finish(mut self) -> Result<(u64, u64), String> {
        self.child.signal("-INT");
        let line = self.lines.next().and_then(Result::ok).unwrap_or_default();
        // "frames N flood M"
        let w: Vec<&str> = line.split_whitespace().collect();
        match (
            w.first(),
            w.get(1).and_then(|n| n.parse().ok()),
            w.get(3).and_then(|n| n.parse().ok()),
        ) {
            (Some(&"frames"), Some(all), Some(flood)) => Ok((all, flood)),
            _ => Err(format!("the frame counter said {line:?}")),
        }
    }
}

/// Whether an `ss` peer (`198.19.1.2:80`, `[::ffff:198.19.1.2]:80`, `[2001:2:0:1::5]:80`)
/// lies in a flood prefix.
fn is_flood_addr(peer: &str) -> bool {
    let host = match peer.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => peer.rsplit_once(':').map_or(peer, |(h, _)| h),
    };
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(a)) => a.octets()[..2] == [198, 19],
        Ok(std::net::IpAddr::V6(a)) => match a.to_ipv4_mapped() {
            Some(v4) => v4.octets()[..2] == [198, 19],
            None => a.segments()[..4] == [0x2001, 2, 0, 1],
        },
        Err(_) => false,
    }
}

fn mac_bytes(mac: &str) -> Result<Vec<u8>, String> {
    let b: Vec<u8> = mac
        .split(':')
        .filter_map(|x| u8::from_str_radix(x, 16).ok())
        .collect();
    if b.len() == 6 {
        Ok(b)
    } else {
        Err(format!("not a MAC address: {mac:?}"))
    }
}

/// `trafgen`'s configuration for a flood at the server (`dst_mac`): an IPv4 and an IPv6 frame,
/// sent alternately, with random sources from 198.19.0.0/16 and 2001:2:0:1::/64, random source
/// ports and sequence numbers, at the HTTP port. The source MAC is a locally administered one no
/// lab host has, so the SYN-ACKs levee sends back are dropped by the client's interface unread.
fn trafgen_config(kind: FloodKind, dst_mac: &str) -> Result<String, String> {
    let hex = |b: &[u8]| {
        b.iter()
            .map(|x| format!("0x{x:02x}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let eth = |ethertype: u16| {
        Ok::<_, String>(format!(
            "{}, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, c16(0x{ethertype:04x})",
            hex(&mac_bytes(dst_mac)?)
        ))
    };
    let srv6: std::net::Ipv6Addr = SRV_V6.parse().expect("IPv6 literal");
    let srv4: std::net::Ipv4Addr = SRV_V4.parse().expect("IPv4 literal");
    // TCP from the source port on: (header and options, TCP length).
    let (tcp, tcp_len) = match kind {
        // SYN, data offset 6 (MSS option), random ISN.
        FloodKind::Syn => (
            format!("drnd(2), c16({HTTP_PORT}), drnd(4), c32(0), c16(0x6002), c16(64240), CSUM, c16(0), 0x02, 0x04, MSS"),
            24,
        ),
        // ACK, data offset 5, random sequence and acknowledgment numbers.
        FloodKind::Ack => (
            format!("drnd(2), c16({HTTP_PORT}), drnd(4), drnd(4), c16(0x5010), c16(502), CSUM, c16(0)"),
            20,
        ),
    };
    let v4 = format!(
        "{{\n  {},\n  0x45, 0x00, c16({}), drnd(2), c16(0x4000), 64, 6, csumip(14, 33),\n  198, 19, drnd(2), {},\n  {}\n}}\n",
        eth(0x0800)?,
        20 + tcp_len,
        hex(&srv4.octets()),
        tcp.replace("CSUM", "csumtcp(14, 34)").replace("MSS", "c16(1460)")
    );
    let v6 = format!(
        "{{\n  {},\n  0x60, 0x00, 0x00, 0x00, c16({tcp_len}), 6, 64,\n  0x20, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x01, drnd(8),\n  {},\n  {}\n}}\n",
        eth(0x86dd)?,
        hex(&srv6.octets()),
        tcp.replace("CSUM", "csumtcp6(14, 54)").replace("MSS", "c16(1440)")
    );
    Ok(format!("# {} written by levee lab\n{v4}{v6}", kind.name()))
}

/// `len` pseudo-random bytes (xorshift: incompressible enough for a byte-for-byte comparison
/// to mean something).
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// SIGINT, then SIGKILL if it does not exit within `grace`.
fn stop_child(child: &mut Child, grace: Duration) {
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut c) = self.levee.take() {
            stop_child(&mut c, Duration::from_secs(10));
        }
        for s in &mut self.servers {
            // `ip netns exec` execs the server, so this pid is the server itself.
            let _ = s.kill();
            let _ = s.wait();
        }
        // Deleting a namespace destroys the veths in it (and their peers).
        for ns in &self.ns {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
        for link in &self.links {
            // Only if one escaped into the host namespace; normally already gone.
            let _ = Command::new("ip")
                .args(["link", "del", link])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = fs::remove_dir_all(&self.dir);
        for prefix in &self.prefixes {
            // DPDK's runtime directory of each levee run (EAL leaves it behind).
            let _ = fs::remove_dir_all(PathBuf::from("/var/run/dpdk").join(prefix));
        }
    }
}

/// Parses a `stats` line from `levee run` into (key, value) pairs.
pub fn parse_stats_line(line: &str) -> Option<Vec<(String, String)>> {
    let rest = line.trim().strip_prefix("stats ")?;
    Some(
        rest.split_whitespace()
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect(),
    )
}

fn interrupted(flag: &AtomicBool) -> Result<(), String> {
    if flag.load(Ordering::Relaxed) {
        Err("interrupted".into())
    } else {
        Ok(())
    }
}

/// The `lab` command.
pub fn main(iperf_seconds: u32, workers: &[u32]) -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| e.to_string())?;
    }
    let levee = std::env::current_exe().map_err(|e| format!("cannot find my own binary: {e}"))?;
    println!("levee lab: creating namespaces (client, server, appliance) and starting levee…");
    let mut lab = Lab::start(&LabOptions {
        levee: levee.clone(),
        workers: workers.to_vec(),
        echo_levee: true,
        ruleset: None,
    })?;
    println!(
        "levee lab: up. client ns {} ({CLI_V4}, {CLI_V6}), server ns {} ({SRV_V4}, {SRV_V6}), appliance ns {}",
        lab.netns(Host::Client),
        lab.netns(Host::Server),
        lab.netns(Host::Appliance)
    );
    let mut failures = Vec::new();
    for family in [Family::V4, Family::V6] {
        interrupted(&stop)?;
        match lab.http_fetch(family) {
            Ok(t) => println!(
                "levee lab: HTTP over {}: {} bytes byte-identical in {:.0} ms",
                family.name(),
                BLOB_BYTES,
                t.as_secs_f64() * 1e3
            ),
            Err(e) => failures.push(format!("HTTP over {}: {e}", family.name())),
        }
    }
    interrupted(&stop)?;
    match lab.vlan_frames(100) {
        Ok(n) => println!("levee lab: 802.1Q: {n} tagged IPv4/IPv6 frames arrived byte-identical, tags kept"),
        Err(e) => failures.push(e),
    }
    for family in [Family::V4, Family::V6] {
        interrupted(&stop)?;
        // Roughly `iperf_seconds` at a conservative 50 MB/s.
        let bytes = iperf_seconds as u64 * 50_000_000;
        match lab.iperf(family, bytes) {
            Ok(r) => println!(
                "levee lab: iperf3 over {}: {} bytes sent, {} counted by the server at test end, {:.0} Mbit/s, {} retransmits",
                family.name(),
                r.bytes_sent,
                r.bytes_received,
                r.bits_per_second / 1e6,
                r.retransmits
            ),
            Err(e) => failures.push(e),
        }
    }
    interrupted(&stop)?;
    let out = lab.stop_levee()?;
    println!("levee lab: levee's final counters:");
    for line in out.iter().rev().take(3).rev() {
        println!("  {line}");
    }
    interrupted(&stop)?;
    syn_proxy_phase(&mut lab, &levee, workers, &stop, &mut failures)?;
    drop(lab);
    println!("levee lab: namespaces removed");
    if failures.is_empty() {
        println!("levee lab: all checks passed");
        Ok(())
    } else {
        Err(format!("lab checks failed:\n  {}", failures.join("\n  ")))
    }
}

/// A number from the environment, or `default`.
fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The lab's second part: levee restarted with [`SYNPROXY_RULESET`]; transfers through the proxy,
/// the proof that it is the only way in, then a SYN flood and an ACK flood at the protected port
/// while the client keeps fetching pages, with live lines. The floods' rate and length come from
/// `LEVEE_LAB_FLOOD_PPS` (default 100000; 0: as fast as trafgen goes on one CPU) and
/// `LEVEE_LAB_FLOOD_SECONDS` (default 4).
fn syn_proxy_phase(
    lab: &mut Lab,
    levee: &std::path::Path,
    workers: &[u32],
    stop: &AtomicBool,
    failures: &mut Vec<String>,
) -> Result<(), String> {
    println!(
        "levee lab: SYN proxy: restarting levee with the SYN-proxy ruleset (ports {HTTP_PORT} and {IPERF_PORT} protected, plain SYNs to any other port dropped)…"
    );
    lab.restart_levee(&LabOptions {
        levee: levee.to_owned(),
        workers: workers.to_vec(),
        echo_levee: false,
        ruleset: Some(SYNPROXY_RULESET.to_owned()),
    })?;
    for family in [Family::V4, Family::V6] {
        interrupted(stop)?;
        match lab.http_fetch(family) {
            Ok(t) => println!(
                "levee lab: SYN proxy: HTTP over {}: {BLOB_BYTES} bytes byte-identical in {:.0} ms",
                family.name(),
                t.as_secs_f64() * 1e3
            ),
            Err(e) => failures.push(format!("HTTP over {} through the SYN proxy: {e}", family.name())),
        }
    }
    interrupted(stop)?;
    match lab.fetch_page(Family::V4, UNPROTECTED_PORT, Duration::from_secs(1)) {
        Err(e) if e.contains("(28)") => println!(
            "levee lab: SYN proxy: a connection to port {UNPROTECTED_PORT} (listening, not protected) timed out: the proxy is the only way in"
        ),
        Err(e) => failures.push(format!("port {UNPROTECTED_PORT}: expected a timeout, got {e}")),
        Ok(_) => failures.push(format!(
            "a connection to the unprotected port {UNPROTECTED_PORT} got through"
        )),
    }
    let pps = env_or("LEVEE_LAB_FLOOD_PPS", 100_000u64);
    let secs = env_or("LEVEE_LAB_FLOOD_SECONDS", 4.0f64).clamp(1.0, 60.0);
    for kind in [FloodKind::Syn, FloodKind::Ack] {
        interrupted(stop)?;
        let rate = match pps {
            0 => "as fast as trafgen goes on one CPU".to_owned(),
            p => format!("{p} frames/s"),
        };
        println!(
            "levee lab: {}: {rate} for {secs:.0} s at {SRV_V4} and {SRV_V6} port {HTTP_PORT}, sources from {FLOOD_NET_V4} and {FLOOD_NET_V6}, while the client keeps fetching pages…",
            kind.name()
        );
        let r = lab.flood(
            FloodSpec {
                kind,
                pps: (pps > 0).then_some(pps),
                secs,
                fetch: true,
            },
            |t| {
                interrupted(stop)?;
                println!("levee lab:   {}", t.line());
                Ok(())
            },
        )?;
        for line in r.summary().lines() {
            println!("levee lab:   {line}");
        }
        let name = kind.name();
        if !r.fetch_failures.is_empty() {
            failures.push(format!(
                "{name}: {} client fetches failed: {:?}",
                r.fetch_failures.len(),
                r.fetch_failures
            ));
        }
        if r.half_open_flood_max + r.half_open_flood_after > 0 {
            failures.push(format!("{name}: flood connections half-open on the server"));
        }
        if r.server_flood_frames > 0 {
            failures.push(format!(
                "{name}: {} flood frames reached the server",
                r.server_flood_frames
            ));
        }
    }
    let out = lab.stop_levee()?;
    if let Some(s) = out.iter().rev().find_map(|l| parse_stats_line(l)).map(Stats) {
        let keys = [
            "synproxy_syn_received",
            "synproxy_synack_sent",
            "synproxy_cookie_valid",
            "synproxy_cookie_invalid",
            "synproxy_ack_flood_dropped",
            "synproxy_handshakes_completed",
            "synproxy_reply_ratelimited",
            "ct_entries",
        ];
        let line: Vec<String> = keys.iter().map(|k| format!("{k}={}", s.get(k))).collect();
        println!("levee lab: SYN proxy: levee's final counters: {}", line.join(" "));
    }
    Ok(())
}
