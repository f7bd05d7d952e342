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
//! The end-to-end tests (`tests/lab.rs`) drive the same [`Lab`].

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Client and server addresses (benchmarking ranges only).
pub const CLI_V4: &str = "198.18.0.1";
pub const SRV_V4: &str = "198.18.0.2";
pub const CLI_V6: &str = "2001:2::1";
pub const SRV_V6: &str = "2001:2::2";
const HTTP_PORT: u16 = 8080;
const IPERF_PORT: u16 = 5201;
/// Size of the file the HTTP checks fetch.
pub const BLOB_BYTES: usize = 4 << 20;

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

static LAB_SEQ: AtomicU32 = AtomicU32::new(0);

/// A running lab. Dropping it tears everything down.
pub struct Lab {
    id: String,
    ns: [String; 3],
    links: Vec<String>,
    dir: PathBuf,
    levee: Option<Child>,
    levee_out: Arc<Mutex<Vec<String>>>,
    servers: Vec<Child>,
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
            servers: Vec::new(),
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
        Ok(())
    }

    fn start_servers(&mut self) -> Result<(), String> {
        // A 4 MiB file of pseudo-random bytes.
        let blob = pseudo_random(BLOB_BYTES, 1);
        fs::write(self.dir.join("www/blob.bin"), &blob).map_err(|e| format!("cannot write blob: {e}"))?;
        let www = self.dir.join("www");
        let http = Command::new("ip")
            .args(["netns", "exec", self.netns(Host::Server)])
            .args([
                "python3",
                "-m",
                "http.server",
                &HTTP_PORT.to_string(),
                "--bind",
                "::",
            ])
            .current_dir(&www)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the HTTP server: {e}"))?;
        self.servers.push(http);
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
        let config = format!(
            "# written by levee lab\n\
             [eal]\nmain_core = {main_core}\nfile_prefix = \"levee-lab-{id}\"\n\
             args = [\"--no-huge\", \"-m\", \"512\", \"--no-telemetry\", \"--log-level\", \"lib.eal:warning\"]\n\
             [ports.outside]\ndevice = \"net_af_packet0,iface={c0},qpairs={q}\"\n\
             [ports.inside]\ndevice = \"net_af_packet1,iface={s0},qpairs={q}\"\n\
             [workers]\ncores = [{cores}]\n\
             [pools]\nmbufs_per_worker = 8191\n\
             [conntrack]\nentries_per_worker = 65536\ntcp_loose = {loose}\n",
            loose = opts.ruleset.as_deref().is_none_or(|r| !r.contains("synproxy")),
            id = self.id,
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
        let cfg_path = self.dir.join("levee.toml");
        fs::write(&cfg_path, config).map_err(|e| format!("cannot write the lab config: {e}"))?;
        let mut child = Command::new("ip")
            .args(["netns", "exec", self.netns(Host::Appliance)])
            .arg(&opts.levee)
            .args(["run", "--stats-interval", "1", "--config"])
            .arg(&cfg_path)
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
        let out = self.exec(Host::Client, &args)?;
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| format!("iperf3 printed no JSON: {e}"))?;
        if let Some(err) = v.get("error") {
            return Err(format!("iperf3 over {}: {err}", family.name()));
        }
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
        levee,
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
    drop(lab);
    println!("levee lab: namespaces removed");
    if failures.is_empty() {
        println!("levee lab: all checks passed");
        Ok(())
    } else {
        Err(format!("lab checks failed:\n  {}", failures.join("\n  ")))
    }
}
