//! The kernel side of the differential test: a fresh pair of network namespaces per ruleset,
//! the ruleset and an observer loaded into the receiver, the frames injected from the sender
//! through a veth, and the counters read back from `nft -j list ruleset`.
//!
//! ```text
//!   ns <tag>-s                     ns <tag>-r
//!   lds0 (02:..:01) ── veth ──▶ ldr0 (02:..:02)  198.18.0.2/24, 2001:2::2/64
//!   inject.py (AF_PACKET)          ruleset under test + observer tables
//! ```
//!
//! The sender has IPv6 disabled and no addresses, so nothing but the injected frames ever
//! reaches the receiver. The observer has:
//! - `netdev levee_obs_in`: chain `first` (ingress, priority -10000) counts every frame per
//!   ethertype class and the sentinel that ends an injection; chain `last` (ingress, priority
//!   10000) counts what survived the ingress hook;
//! - `inet levee_obs_pre`: chain `last` (prerouting, priority 10000) counts, per `meta nfproto`,
//!   what survived prerouting;
//! - `inet levee_obs_out`: drops everything the receiver itself sends (TCP resets, ICMP errors
//!   and echo replies, rejects' answers, neighbour discovery). Without it, answers to sources
//!   such as the subnet's broadcast address loop back through `lo` into prerouting and count.
//!
//! Veth processes the frames in order (one pinned sender, one backlog), so once the sentinel is
//! counted, every frame before it has been through all the hooks.

use super::gen::Packet;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The receiving interface; the corpus names it in `iifname` and `device`.
pub const RECV_IF: &str = "ldr0";
const SEND_IF: &str = "lds0";
/// Prefix of every namespace this test creates.
pub const NS_PREFIX: &str = "levee-kd-";

/// Runs a command; Ok(stdout) on exit status 0, else an error with its stderr.
pub fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd} {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

/// A sender/receiver namespace pair; dropping it deletes both (and with them the veth pair).
pub struct NetnsPair {
    /// Sender namespace name.
    pub sender: String,
    /// Receiver namespace name.
    pub receiver: String,
}

impl NetnsPair {
    /// Creates the pair and the veth between them, configured as the module doc describes.
    pub fn create(tag: &str) -> Result<NetnsPair, String> {
        let pair = NetnsPair {
            sender: format!("{tag}-s"),
            receiver: format!("{tag}-r"),
        };
        let (s, r) = (pair.sender.as_str(), pair.receiver.as_str());
        run("ip", &["netns", "add", s])?;
        run("ip", &["netns", "add", r])?;
        // Before the veth exists, so it never gets an IPv6 link-local address nor sends DAD,
        // MLD or router solicitations.
        run(
            "ip",
            &[
                "netns",
                "exec",
                s,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ],
        )?;
        run(
            "ip",
            &[
                "netns",
                "exec",
                r,
                "sysctl",
                "-qw",
                "net.netfilter.nf_conntrack_tcp_loose=0",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ],
        )?;
        run(
            "ip",
            &[
                "link",
                "add",
                RECV_IF,
                "netns",
                r,
                "address",
                "02:00:00:00:00:02",
                "type",
                "veth",
                "peer",
                "name",
                SEND_IF,
                "netns",
                s,
                "address",
                "02:00:00:00:00:01",
            ],
        )?;
        run("ip", &["-n", r, "addr", "add", "198.18.0.2/24", "dev", RECV_IF])?;
        run(
            "ip",
            &["-n", r, "addr", "add", "2001:2::2/64", "dev", RECV_IF, "nodad"],
        )?;
        run("ip", &["netns", "exec", s, "ethtool", "-K", SEND_IF, "tx", "off"])?;
        run("ip", &["netns", "exec", r, "ethtool", "-K", RECV_IF, "tx", "off"])?;
        run("ip", &["-n", r, "link", "set", "lo", "up"])?;
        run("ip", &["-n", r, "link", "set", RECV_IF, "up"])?;
        run("ip", &["-n", s, "link", "set", SEND_IF, "up"])?;
        Ok(pair)
    }

    /// `nft ARGS` inside the receiver.
    pub fn nft(&self, args: &[&str]) -> Result<String, String> {
        let mut a = vec!["netns", "exec", self.receiver.as_str(), "nft"];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    /// The receiver's rx packet counter and the sender's tx drop counter.
    fn link_stats(&self) -> Result<(u64, u64), String> {
        let rx = stat(&self.receiver, RECV_IF, "rx_packets")?;
        let dropped = stat(&self.sender, SEND_IF, "tx_dropped")?;
        Ok((rx, dropped))
    }
}

fn stat(ns: &str, dev: &str, key: &str) -> Result<u64, String> {
    let out = run("ip", &["-n", ns, "-s", "-j", "link", "show", dev])?;
    let v: Value = serde_json::from_str(&out).map_err(|e| format!("ip -j: {e}"))?;
    let (dir, field) = key.split_once('_').ok_or("bad key")?;
    v[0]["stats64"][dir][field]
        .as_u64()
        .ok_or_else(|| format!("no {key} in {out}"))
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.receiver]);
        let _ = run("ip", &["netns", "del", &self.sender]);
    }
}

/// Deletes namespaces of earlier runs whose process is gone (a run killed mid-way).
pub fn remove_stale_namespaces() {
    let Ok(list) = run("ip", &["netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}

/// A scratch directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates `/tmp/levee-kd-<pid>`.
    pub fn new() -> Result<TempDir, String> {
        let p = std::env::temp_dir().join(format!("{NS_PREFIX}{}", std::process::id()));
        std::fs::create_dir_all(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes the frames (and the sentinel after them) in inject.py's format.
pub fn write_frames(path: &Path, packets: &[Packet], sentinel: &[u8]) -> Result<(), String> {
    let mut buf = Vec::with_capacity(packets.iter().map(|p| p.frame.len() + 2).sum::<usize>() + 64);
    for f in packets.iter().map(|p| p.frame.as_slice()).chain([sentinel]) {
        buf.extend((f.len() as u16).to_be_bytes());
        buf.extend(f);
    }
    let mut file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(&buf)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// One rule's counter as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleCounter {
    /// Table name.
    pub table: String,
    /// Chain name.
    pub chain: String,
    /// Index of the rule within its chain (0-based, listing order).
    pub index: usize,
    /// Packets counted.
    pub packets: u64,
    /// Bytes counted.
    pub bytes: u64,
    /// The rule as nft's JSON prints it (for reports).
    pub text: String,
}

/// A base chain of the ruleset under test.
#[derive(Clone, Debug)]
pub struct BaseChain {
    /// Table family (ip, ip6, inet, netdev).
    pub family: String,
    /// Table name.
    pub table: String,
    /// Chain name.
    pub chain: String,
    /// Hook name (prerouting, ingress, ...).
    pub hook: String,
    /// Numeric priority.
    pub prio: i64,
}

/// Everything the kernel run yields.
#[derive(Clone, Debug, Default)]
pub struct KernelResult {
    /// Every rule of the tables under test, in listing order, and whether it has a counter.
    pub rules: Vec<(RuleCounter, bool)>,
    /// Base chains of the tables under test.
    pub base_chains: Vec<BaseChain>,
    /// Frames the observer saw first at ingress, per family (v4, v6, other).
    pub seen: [u64; 3],
    /// Packets and bytes that survived the hook of the ruleset, per family.
    pub accepted: [(u64, u64); 3],
    /// Packets and bytes that survived prerouting per family (v4, v6).
    pub after_prerouting: [(u64, u64); 2],
    /// Packets and bytes that survived ingress per family.
    pub after_ingress: [(u64, u64); 3],
    /// Frames the receiver's veth received (sentinel included).
    pub rx: u64,
    /// Frames the sender's veth dropped.
    pub tx_dropped: u64,
}

const OBSERVER: &str = r#"
table netdev levee_obs_in {
    chain first {
        type filter hook ingress device "ldr0" priority -10000; policy accept;
        ether type 0x88b6 counter drop
        ether type ip counter
        ether type ip6 counter
        ether type 0x88b5 counter
    }
    chain last {
        type filter hook ingress device "ldr0" priority 10000; policy accept;
        ether type ip counter
        ether type ip6 counter
        ether type 0x88b5 counter
    }
}
table inet levee_obs_pre {
    chain last {
        type filter hook prerouting priority 10000; policy accept;
        meta nfproto ipv4 counter
        meta nfproto ipv6 counter
    }
}
table inet levee_obs_out {
    chain out {
        type filter hook output priority -10000; policy drop;
    }
}
"#;

const OBS_TABLES: [&str; 3] = ["levee_obs_in", "levee_obs_pre", "levee_obs_out"];

/// The counters of one chain of the observer, in order.
fn obs_counts(rules: &[(RuleCounter, bool)], table: &str, chain: &str) -> Vec<(u64, u64)> {
    rules
        .iter()
        .filter(|(r, _)| r.table == table && r.chain == chain)
        .map(|(r, _)| (r.packets, r.bytes))
        .collect()
}

/// Every rule (with whether it has a counter) and every base chain of a listing.
pub type Listing = (Vec<(RuleCounter, bool)>, Vec<BaseChain>);

/// Parses `nft -j list ruleset`: every rule with its counter, and every base chain.
pub fn parse_listing(json: &str) -> Result<Listing, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("nft -j: {e}"))?;
    let items = v["nftables"].as_array().ok_or("nft -j: no nftables array")?;
    let mut rules: Vec<(RuleCounter, bool)> = Vec::new();
    let mut chains = Vec::new();
    for item in items {
        if let Some(c) = item.get("chain") {
            if let Some(hook) = c["hook"].as_str() {
                chains.push(BaseChain {
                    family: c["family"].as_str().unwrap_or("").to_owned(),
                    table: c["table"].as_str().unwrap_or("").to_owned(),
                    chain: c["name"].as_str().unwrap_or("").to_owned(),
                    hook: hook.to_owned(),
                    prio: c["prio"].as_i64().unwrap_or(0),
                });
            }
        }
        let Some(r) = item.get("rule") else { continue };
        let table = r["table"].as_str().unwrap_or("").to_owned();
        let chain = r["chain"].as_str().unwrap_or("").to_owned();
        let index = rules
            .iter()
            .filter(|(x, _)| x.table == table && x.chain == chain)
            .count();
        let exprs = r["expr"].as_array().ok_or("rule without expr")?;
        let counter = exprs.iter().find_map(|e| e.get("counter"));
        let (packets, bytes) = counter
            .map(|c| {
                (
                    c["packets"].as_u64().unwrap_or(0),
                    c["bytes"].as_u64().unwrap_or(0),
                )
            })
            .unwrap_or((0, 0));
        let mut text = serde_json::to_string(&r["expr"]).unwrap_or_default();
        if text.len() > 300 {
            let mut cut = 300;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        rules.push((
            RuleCounter {
                table,
                chain,
                index,
                packets,
                bytes,
                text,
            },
            counter.is_some(),
        ));
    }
    Ok((rules, chains))
}

/// Loads `ruleset` into a fresh namespace pair, injects the frames of `frames_file` (the
/// packets plus the sentinel) and reads everything back.
pub fn run_ruleset(
    tag: &str,
    ruleset_path: &Path,
    frames_file: &Path,
    packets: &[Packet],
    injector: &Path,
) -> Result<KernelResult, String> {
    let ns = NetnsPair::create(tag)?;
    ns.nft(&["-f", &ruleset_path.to_string_lossy()])
        .map_err(|e| format!("loading {}: {e}", ruleset_path.display()))?;
    let obs_path = frames_file.with_file_name("observer.nft");
    std::fs::write(&obs_path, OBSERVER).map_err(|e| e.to_string())?;
    ns.nft(&["-f", &obs_path.to_string_lossy()])?;

    let sent = run(
        "ip",
        &[
            "netns",
            "exec",
            &ns.sender,
            "python3",
            &injector.to_string_lossy(),
            SEND_IF,
            &frames_file.to_string_lossy(),
        ],
    )?;
    let expected = packets.len() as u64 + 1;
    if sent.trim().parse::<u64>().ok() != Some(expected) {
        return Err(format!("injector sent {:?}, expected {expected}", sent.trim()));
    }
    // Wait for the sentinel: every frame before it has then been through every hook.
    let deadline = Instant::now() + Duration::from_secs(30);
    let listing = loop {
        let listing = ns.nft(&["-j", "list", "ruleset"])?;
        let (rules, _) = parse_listing(&listing)?;
        let first = obs_counts(&rules, "levee_obs_in", "first");
        if first.first().map(|c| c.0) == Some(1) {
            break listing;
        }
        if Instant::now() > deadline {
            let (rx, dropped) = ns.link_stats()?;
            return Err(format!(
                "the sentinel never arrived (rx {rx} of {expected}, sender tx_dropped {dropped})"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (rx, tx_dropped) = ns.link_stats()?;
    let (all_rules, all_chains) = parse_listing(&listing)?;
    let first = obs_counts(&all_rules, "levee_obs_in", "first");
    let last_in = obs_counts(&all_rules, "levee_obs_in", "last");
    let last_pre = obs_counts(&all_rules, "levee_obs_pre", "last");
    if first.len() != 4 || last_in.len() != 3 || last_pre.len() != 2 {
        return Err("observer tables are not what was loaded".into());
    }
    let rules: Vec<_> = all_rules
        .into_iter()
        .filter(|(r, _)| !OBS_TABLES.contains(&r.table.as_str()))
        .collect();
    let base_chains: Vec<_> = all_chains
        .into_iter()
        .filter(|c| !OBS_TABLES.contains(&c.table.as_str()))
        .collect();
    let ingress = base_chains.iter().any(|c| c.hook == "ingress");
    let after_ingress = [last_in[0], last_in[1], last_in[2]];
    let after_prerouting = [last_pre[0], last_pre[1]];
    // Frames of other ethertypes never reach prerouting: for a prerouting ruleset they count
    // as accepted when they survive ingress (where nothing but the observer looks at them).
    let accepted = if ingress {
        after_ingress
    } else {
        [last_pre[0], last_pre[1], last_in[2]]
    };
    let seen = [first[1].0, first[2].0, first[3].0];
    Ok(KernelResult {
        rules,
        base_chains,
        seen,
        accepted,
        after_prerouting,
        after_ingress,
        rx,
        tx_dropped,
    })
}
