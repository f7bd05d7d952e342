//! Differential test against the kernel's conntrack: the scenario corpus (`tests/common`) goes
//! through a router namespace whose nftables forward chain writes `ct state` into each packet,
//! and through a levee shard; the classifications must agree packet by packet.
//!
//! ```text
//!   ns lvct-x-<pid>                          ns lvct-r-<pid> (ip_forward, conntrack)
//!   xa 02:..:0a:01 ── veth ──▶ ra 02:..:0a:02  198.18.1.1/24  2001:2:0:1::1/64
//!   xb 02:..:0b:01 ── veth ──▶ rb 02:..:0b:02  198.18.2.1/24  2001:2:0:2::1/64
//!   client hosts 198.18.10.0/23, 2001:2:0:10::/63 via 198.18.1.2 / 2001:2:0:1::2 (xa's MAC)
//!   server hosts 198.18.20.0/24, 2001:2:0:20::/64 via 198.18.2.2 / 2001:2:0:2::2 (xb's MAC)
//! ```
//!
//! A Python helper (AF_PACKET, so this crate stays free of `unsafe`) sends each frame out of
//! `xa` (client side) or `xb` (server side), pinned to one CPU, and waits for the forwarded
//! copy on the other interface. The router's ruleset sets the DSCP of every forwarded packet
//! to its `ct state` (new 1, established 2, related 3, invalid 4, untracked 5); the IPv4
//! identification or IPv6 flow label carries the packet's number. The corpus runs twice, with
//! `nf_conntrack_tcp_loose` 0 and 1 (and the shard's `loose` alike), on separate client
//! addresses so the runs do not share flows. Both sides keep one table for the whole run, as the
//! kernel does.
//!
//! Needs root, `ip`, `nft`, `ethtool` and `python3`; without them the test prints why and
//! passes. Namespaces are named `lvct-*` and removed on exit (also those of a killed run).
//!
//! Differences that cannot be removed are listed in [`KNOWN_DIFFERENCES`]; there are none in
//! the corpus: the kernel's checksum verification (levee trusts the NIC) and reassembly of
//! fragments (levee leaves them untracked) are documented in the crate, and the corpus sends
//! neither bad checksums nor fragments.

mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{corpus, frame, random_tcp, Side, Step, KEY};
use levee_conntrack::{CtState, Shard, ShardConfig, Tracked};
use levee_packet::ethernet::MacAddr;
use levee_packet::parse::parse_frame;

const XA_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0x0a, 1]);
const RA_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0x0a, 2]);
const XB_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0x0b, 1]);
const RB_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0x0b, 2]);

/// Random TCP conversations per run (`common::random_tcp`), and segments in each.
const RANDOM_FLOWS: usize = 60;
const RANDOM_STEPS: usize = 40;

/// `(scenario, step, why)`: kernel/levee differences that are found and accepted.
///
/// "random tcp 37" (strict run): the server opens (SYN), the client's ACKs are ignored in
/// SYN_SENT (`sIG`, which sets SEEN_REPLY and annotates `last_end`), the server sends another
/// SYN (accepted) and then an RST+ACK whose ACK equals the annotated `last_end`. As the 6.x
/// source reads, that is "RST sent to invalid SYN or ACK we had let through" (SEEN_REPLY and
/// `last_index == SYN` and `ack == last_end`): skip the window check and go to CLOSE, which
/// levee does. Linux 6.18 keeps SYN_SENT instead (seen with `LVCT_KDIFF_TRACE=custom` and
/// `conntrack -L`); an RST *from the other side* acknowledging the SYN does close it. Making an
/// accepted SYN reset `last_end` reproduced this case but broke 17 others, so the rule the
/// running kernel follows is not yet known. The RST itself is classified alike; three later
/// packets of that flow differ (levee reopens the CLOSE entry on the next SYN).
const KNOWN_DIFFERENCES: &[(&str, usize, &str)] = &[
    (
        "random tcp 37",
        32,
        "RST acking an annotated ACK after a second SYN in SYN_SENT (see above)",
    ),
    ("random tcp 37", 33, "same flow, follows from #32"),
    ("random tcp 37", 37, "same flow, follows from #32"),
];

const RULESET: &str = r#"
table inet lvct {
    chain fw {
        type filter hook forward priority filter; policy accept;
        ct state new ip dscp set 1
        ct state established ip dscp set 2
        ct state related ip dscp set 3
        ct state invalid ip dscp set 4
        ct state untracked ip dscp set 5
        ct state new ip6 dscp set 1
        ct state established ip6 dscp set 2
        ct state related ip6 dscp set 3
        ct state invalid ip6 dscp set 4
        ct state untracked ip6 dscp set 5
    }
}
"#;

const INJECTOR: &str = r#"
import os, select, socket, struct, sys

def main():
    xa, xb, path = sys.argv[1], sys.argv[2], sys.argv[3]
    os.sched_setaffinity(0, {0})
    socks = []
    for name in (xa, xb):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
        s.bind((name, 0))
        s.setblocking(False)
        socks.append(s)
    data = open(path, "rb").read()
    off = 0
    out = []
    while off < len(data):
        side, ident, length = struct.unpack_from("!BIH", data, off)
        off += 7
        frame = data[off:off + length]
        off += length
        v6 = frame[12:14] == b"\x86\xdd"
        addrs = frame[22:54] if v6 else frame[26:34]
        tx, rx = socks[side], socks[1 - side]
        # Drop whatever is queued (router chatter) before sending.
        while True:
            try:
                rx.recv(65535)
            except BlockingIOError:
                break
        tx.send(frame)
        found = "-"
        while True:
            r, _, _ = select.select([rx], [], [], 1.0)
            if not r:
                break
            pkt, addr = rx.recvfrom(65535)
            if addr[2] == socket.PACKET_OUTGOING:
                continue
            if v6:
                if pkt[12:14] != b"\x86\xdd" or pkt[22:54] != addrs:
                    continue
                label = ((pkt[15] & 0x0f) << 16) | (pkt[16] << 8) | pkt[17]
                if label != ident & 0xfffff:
                    continue
                tc = ((pkt[14] & 0x0f) << 4) | (pkt[15] >> 4)
                found = str(tc >> 2)
            else:
                if pkt[12:14] != b"\x08\x00" or pkt[26:34] != addrs:
                    continue
                if (pkt[18] << 8 | pkt[19]) != ident & 0xffff:
                    continue
                found = str(pkt[15] >> 2)
            break
        out.append(found)
    print(" ".join(out))

main()
"#;

fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
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

/// Why the test cannot run here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    let uid = run("id", &["-u"]).ok()?;
    if uid.trim() != "0" {
        return Some(format!("not root (uid {})", uid.trim()));
    }
    for tool in ["ip", "nft", "ethtool", "python3"] {
        if run("sh", &["-c", &format!("command -v {tool}")]).is_err() {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    None
}

/// The two namespaces; dropping it deletes them (and the veths with them).
struct Lab {
    x: String,
    r: String,
}

impl Lab {
    fn create() -> Result<Lab, String> {
        let pid = std::process::id();
        let lab = Lab {
            x: format!("lvct-x-{pid}"),
            r: format!("lvct-r-{pid}"),
        };
        let (x, r) = (lab.x.as_str(), lab.r.as_str());
        run("ip", &["netns", "add", x])?;
        run("ip", &["netns", "add", r])?;
        let sysctl = |ns: &str, kv: &[&str]| {
            let mut a = vec!["netns", "exec", ns, "sysctl", "-qw"];
            a.extend_from_slice(kv);
            run("ip", &a)
        };
        sysctl(
            x,
            &[
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ],
        )?;
        sysctl(
            r,
            &[
                "net.ipv4.ip_forward=1",
                "net.ipv6.conf.all.forwarding=1",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
                "net.ipv4.conf.all.send_redirects=0",
                "net.ipv4.conf.default.send_redirects=0",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ],
        )?;
        for (xi, xm, ri, rm) in [
            ("xa", "02:00:00:00:0a:01", "ra", "02:00:00:00:0a:02"),
            ("xb", "02:00:00:00:0b:01", "rb", "02:00:00:00:0b:02"),
        ] {
            run(
                "ip",
                &[
                    "link", "add", xi, "netns", x, "address", xm, "type", "veth", "peer", "name", ri,
                    "netns", r, "address", rm,
                ],
            )?;
            run("ip", &["netns", "exec", x, "ethtool", "-K", xi, "tx", "off"])?;
            run("ip", &["netns", "exec", r, "ethtool", "-K", ri, "tx", "off"])?;
            run("ip", &["-n", x, "link", "set", xi, "up"])?;
            run("ip", &["-n", r, "link", "set", ri, "up"])?;
        }
        run("ip", &["-n", r, "link", "set", "lo", "up"])?;
        for args in [
            &["addr", "add", "198.18.1.1/24", "dev", "ra"][..],
            &["addr", "add", "198.18.2.1/24", "dev", "rb"],
            &["addr", "add", "2001:2:0:1::1/64", "dev", "ra", "nodad"],
            &["addr", "add", "2001:2:0:2::1/64", "dev", "rb", "nodad"],
            &[
                "neigh",
                "add",
                "198.18.1.2",
                "lladdr",
                "02:00:00:00:0a:01",
                "dev",
                "ra",
                "nud",
                "permanent",
            ],
            &[
                "neigh",
                "add",
                "198.18.2.2",
                "lladdr",
                "02:00:00:00:0b:01",
                "dev",
                "rb",
                "nud",
                "permanent",
            ],
            &[
                "neigh",
                "add",
                "2001:2:0:1::2",
                "lladdr",
                "02:00:00:00:0a:01",
                "dev",
                "ra",
                "nud",
                "permanent",
            ],
            &[
                "neigh",
                "add",
                "2001:2:0:2::2",
                "lladdr",
                "02:00:00:00:0b:01",
                "dev",
                "rb",
                "nud",
                "permanent",
            ],
            &["route", "add", "198.18.10.0/23", "via", "198.18.1.2", "dev", "ra"],
            &["route", "add", "198.18.20.0/24", "via", "198.18.2.2", "dev", "rb"],
            &[
                "-6",
                "route",
                "add",
                "2001:2:0:10::/63",
                "via",
                "2001:2:0:1::2",
                "dev",
                "ra",
            ],
            &[
                "-6",
                "route",
                "add",
                "2001:2:0:20::/64",
                "via",
                "2001:2:0:2::2",
                "dev",
                "rb",
            ],
        ] {
            let mut a = vec!["-n", r];
            a.extend_from_slice(args);
            run("ip", &a)?;
        }
        Ok(lab)
    }

    fn exec(&self, ns: &str, args: &[&str]) -> Result<String, String> {
        let mut a = vec!["netns", "exec", ns];
        a.extend_from_slice(args);
        run("ip", &a)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.x]);
        let _ = run("ip", &["netns", "del", &self.r]);
    }
}

/// Deletes namespaces of earlier runs whose process is gone.
fn remove_stale() {
    let Ok(list) = run("ip", &["netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = name
            .strip_prefix("lvct-x-")
            .or_else(|| name.strip_prefix("lvct-r-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}

fn class(dscp: &str) -> Option<CtState> {
    Some(match dscp {
        "1" => CtState::New,
        "2" => CtState::Established,
        "3" => CtState::Related,
        "4" => CtState::Invalid,
        "5" => CtState::Untracked,
        _ => return None,
    })
}

/// Sends `steps` through the kernel; returns each packet's class (`None`: not forwarded).
fn kernel_run(
    lab: &Lab,
    dir: &Path,
    steps: &[(String, usize, Step)],
    first_ident: u32,
) -> Result<Vec<Option<CtState>>, String> {
    let mut records = Vec::new();
    for (i, (_, _, s)) in steps.iter().enumerate() {
        let (src_mac, dst_mac, side) = match s.side {
            Side::Client => (XA_MAC, RA_MAC, 0u8),
            Side::Server => (XB_MAC, RB_MAC, 1u8),
        };
        let ident = first_ident + i as u32;
        let f = frame(src_mac, dst_mac, s.src, s.dst, &s.l4, ident);
        records.push(side);
        records.extend_from_slice(&ident.to_be_bytes());
        records.extend_from_slice(&(f.len() as u16).to_be_bytes());
        records.extend_from_slice(&f);
    }
    let rec_path = dir.join("frames.bin");
    std::fs::write(&rec_path, &records).map_err(|e| e.to_string())?;
    let py = dir.join("inject.py");
    std::fs::write(&py, INJECTOR).map_err(|e| e.to_string())?;
    let out = lab.exec(
        &lab.x,
        &[
            "python3",
            &py.to_string_lossy(),
            "xa",
            "xb",
            &rec_path.to_string_lossy(),
        ],
    )?;
    let got: Vec<Option<CtState>> = out.split_whitespace().map(class).collect();
    if got.len() != steps.len() {
        return Err(format!(
            "injector returned {} results for {} packets: {out}",
            got.len(),
            steps.len()
        ));
    }
    Ok(got)
}

fn levee_run(loose: bool, steps: &[(String, usize, Step)]) -> Vec<CtState> {
    let mut shard: Shard = Shard::new(
        ShardConfig {
            capacity: 8192,
            loose,
            ..ShardConfig::default()
        },
        KEY,
    )
    .unwrap();
    let mac = MacAddr([2, 0, 0, 0, 0, 9]);
    steps
        .iter()
        .enumerate()
        .map(|(i, (_, _, s))| {
            let now = 1_000_000_000 + i as u64 * 1_000_000;
            let f = frame(mac, mac, s.src, s.dst, &s.l4, 1);
            let info = parse_frame(&f).unwrap();
            match shard.track(&f, &info, now) {
                Tracked::New(p) => {
                    shard.confirm(p, now).unwrap();
                    CtState::New
                }
                t => t.state(),
            }
        })
        .collect()
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn kernel_conntrack_agrees_with_levee() {
    if let Some(why) = missing_prerequisite() {
        eprintln!("kernel_diff skipped: {why}");
        return;
    }
    remove_stale();
    let dir = TempDir(std::env::temp_dir().join(format!("lvct-kdiff-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let lab = Lab::create().expect("network namespaces");
    let rules = dir.0.join("ruleset.nft");
    std::fs::write(&rules, RULESET).unwrap();
    lab.exec(&lab.r, &["nft", "-f", &rules.to_string_lossy()])
        .expect("ruleset");

    if let Ok(name) = std::env::var("LVCT_KDIFF_TRACE") {
        trace(&lab, &dir.0, &name);
        return;
    }
    let mut report = String::new();
    let mut unexplained = 0;
    let mut total = 0;
    let mut ident = 1u32;
    for (run_no, loose) in [(0u8, false), (1u8, true)] {
        lab.exec(
            &lab.r,
            &[
                "sysctl",
                "-qw",
                &format!("net.netfilter.nf_conntrack_tcp_loose={}", u8::from(loose)),
            ],
        )
        .expect("sysctl");
        let mut scenarios = corpus(loose, run_no);
        scenarios.extend(random_tcp(
            0x5eed_0000 + u64::from(run_no),
            run_no,
            RANDOM_FLOWS,
            RANDOM_STEPS,
        ));
        let steps: Vec<(String, usize, Step)> = scenarios
            .into_iter()
            .flat_map(|sc| {
                let name = sc.name.clone();
                sc.steps
                    .into_iter()
                    .enumerate()
                    .map(move |(i, s)| (name.clone(), i, s))
            })
            .collect();
        let kernel = kernel_run(&lab, &dir.0, &steps, ident).expect("kernel run");
        ident += steps.len() as u32;
        let levee = levee_run(loose, &steps);
        for (((name, i, step), k), l) in steps.iter().zip(&kernel).zip(&levee) {
            total += 1;
            let known = KNOWN_DIFFERENCES
                .iter()
                .find(|(n, s, _)| n == name && s == i)
                .filter(|_| !loose);
            if *k != Some(*l) {
                if let Some((_, _, why)) = known {
                    let _ = writeln!(
                        report,
                        "known: loose={loose} {name} #{i}: kernel {k:?}, levee {l:?}: {why}"
                    );
                } else {
                    unexplained += 1;
                    let _ = writeln!(
                        report,
                        "MISMATCH loose={loose} {name} #{i} ({}): kernel {k:?}, levee {l:?}, expected {:?}",
                        step.why, step.expect
                    );
                }
            } else if step.why != "random" && step.expect != *l {
                let _ = writeln!(
                    report,
                    "note: loose={loose} {name} #{i}: kernel and levee agree on {l:?}, corpus expects {:?} ({})",
                    step.expect, step.why
                );
            }
        }
    }
    eprintln!("kernel_diff: {total} packets, {unexplained} unexplained differences\n{report}");
    assert_eq!(unexplained, 0, "{report}");
    assert!(
        !report.contains("note:"),
        "corpus expectations disagree with the kernel:\n{report}"
    );
}

/// `LVCT_KDIFF_TRACE="<scenario name>"`: replays one scenario packet by packet (strict run) and
/// prints both sides' classification and entry state after each packet (needs `conntrack`).
fn trace(lab: &Lab, dir: &Path, name: &str) {
    let mut scenarios = corpus(false, 0);
    scenarios.extend(random_tcp(0x5eed_0000, 0, RANDOM_FLOWS, RANDOM_STEPS));
    scenarios.push(common::custom());
    let sc = scenarios
        .into_iter()
        .find(|s| s.name == name)
        .expect("no such scenario");
    let steps: Vec<(String, usize, Step)> = sc
        .steps
        .into_iter()
        .enumerate()
        .map(|(i, s)| (name.to_owned(), i, s))
        .collect();
    lab.exec(
        &lab.r,
        &["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_loose=0"],
    )
    .unwrap();
    let mut shard: Shard = Shard::new(
        ShardConfig {
            capacity: 64,
            loose: false,
            ..ShardConfig::default()
        },
        KEY,
    )
    .unwrap();
    let mac = MacAddr([2, 0, 0, 0, 0, 9]);
    for (i, step) in steps.iter().enumerate() {
        let k = kernel_run(lab, dir, std::slice::from_ref(step), 60_000 + i as u32).unwrap()[0];
        let now = 1_000_000_000 + i as u64 * 1_000_000;
        let f = frame(mac, mac, step.2.src, step.2.dst, &step.2.l4, 1);
        let l = match shard.track(&f, &parse_frame(&f).unwrap(), now) {
            Tracked::New(p) => {
                shard.confirm(p, now).unwrap();
                CtState::New
            }
            t => t.state(),
        };
        let kstate = lab.exec(&lab.r, &["conntrack", "-L"]).unwrap_or_default();
        let lstate: Vec<String> = shard
            .iter(&levee_conntrack::DumpFilter::default(), now)
            .map(|e| format!("{:?} status {:#x}", e.l4, e.status))
            .collect();
        eprintln!(
            "#{i} {:?} kernel {k:?} levee {l:?}\n  kernel: {}\n  levee: {lstate:?}",
            step.2.l4,
            kstate.trim()
        );
    }
}
