//! End to end through levee with real Linux TCP stacks: a client and a server in network
//! namespaces, levee bridging them on `net_af_packet` vdevs. HTTP fetches are compared byte for
//! byte, iperf3 transfers must arrive complete, over IPv4, IPv6 and a VLAN-tagged path (which
//! only works if levee forwards the 802.1Q tag unchanged: the server's address on that path
//! lives on its VLAN 100 sub-interface). Needs root, iproute2, curl, iperf3, python3
//! (deploy/host-setup.sh installs them).
//!
//! One lab at a time: the machine has few cores and levee busy-polls one of them.

use levee::lab::{parse_stats_line, Family, Host, Lab, LabOptions, BLOB_BYTES};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ONE_LAB: Mutex<()> = Mutex::new(());

fn lab(workers: Vec<u32>) -> Lab {
    lab_with(workers, None)
}

fn lab_with(workers: Vec<u32>, ruleset: Option<&str>) -> Lab {
    Lab::start(&LabOptions {
        levee: env!("CARGO_BIN_EXE_levee").into(),
        workers,
        echo_levee: std::env::var_os("LEVEE_LAB_ECHO").is_some(),
        ruleset: ruleset.map(str::to_owned),
    })
    .unwrap_or_else(|e| panic!("lab did not come up: {e}"))
}

fn last_stats(lines: &[String]) -> Vec<(String, String)> {
    lines
        .iter()
        .rev()
        .find_map(|l| parse_stats_line(l))
        .unwrap_or_else(|| panic!("levee printed no stats line:\n{}", lines.join("\n")))
}

fn get(stats: &[(String, String)], key: &str) -> u64 {
    stats
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric {key} in {stats:?}"))
}

#[test]
fn http_iperf3_and_vlan_frames_through_levee_then_clean_teardown() {
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = lab(vec![1]);
    for family in [Family::V4, Family::V6] {
        lab.http_fetch(family)
            .unwrap_or_else(|e| panic!("HTTP over {}: {e}", family.name()));
    }
    // 802.1Q-tagged IPv4 and IPv6 frames, VLAN ids 100-102, every priority: byte-identical.
    assert_eq!(lab.vlan_frames(200).unwrap_or_else(|e| panic!("{e}")), 200);
    for family in [Family::V4, Family::V6] {
        let r = lab.iperf(family, 100_000_000).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.bytes_sent, 100_000_000);
        assert!(r.bits_per_second > 1e6, "{r:?}");
    }
    let out = lab.stop_levee().expect("levee stops cleanly on SIGINT");
    assert!(
        out.iter().any(|l| l.starts_with("levee: stopped after")),
        "no clean-stop line:\n{}",
        out.join("\n")
    );
    let s = last_stats(&out);
    // Two 100 MB uploads entered on the outside port and left on the inside one; two 4 MiB
    // downloads went the other way.
    assert!(get(&s, "outside_rx_bytes") > 200_000_000, "{s:?}");
    assert!(get(&s, "inside_tx_bytes") > 200_000_000, "{s:?}");
    assert!(get(&s, "inside_rx_bytes") > 2 * BLOB_BYTES as u64, "{s:?}");
    assert!(get(&s, "outside_tx_bytes") > 2 * BLOB_BYTES as u64, "{s:?}");
    assert_eq!(get(&s, "drop_malformed"), 0);
    let netns = [Host::Client, Host::Server, Host::Appliance].map(|h| lab.netns(h).to_owned());
    drop(lab);
    let left = namespaces();
    assert!(
        netns.iter().all(|n| !left.contains(n)),
        "namespaces left behind: {left:?}"
    );
}

fn namespaces() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn lab_command_cleans_up_on_ctrl_c() {
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let mut child = Command::new(env!("CARGO_BIN_EXE_levee"))
        .args(["lab", "--iperf-seconds", "5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start levee lab");
    let mut ours = Vec::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.starts_with("levee lab: up.") {
            // "… client ns NAME (…), server ns NAME (…), appliance ns NAME"
            let words: Vec<&str> = line.split_whitespace().collect();
            for (i, w) in words.iter().enumerate() {
                if *w == "ns" {
                    ours.push(words[i + 1].trim_end_matches(',').to_owned());
                }
            }
            break;
        }
    }
    assert_eq!(ours.len(), 3, "the lab did not come up");
    assert!(ours.iter().all(|n| namespaces().contains(n)));
    // Ctrl-C reaches the lab (only the lab: it must stop levee and the servers itself).
    std::thread::sleep(Duration::from_millis(500));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(90);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "levee lab did not stop within 90 s of SIGINT"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!exit.success(), "an interrupted lab must not report success");
    let left = namespaces();
    assert!(
        ours.iter().all(|n| !left.contains(n)),
        "namespaces left behind: {left:?}"
    );
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(
        !links.contains(&ours[0][..ours[0].len() - 1]),
        "a lab veth leaked into the host namespace"
    );
}

#[test]
fn the_syn_proxy_completes_real_handshakes_and_transfers_byte_identical() {
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = lab_with(vec![1], Some(levee::lab::SYNPROXY_RULESET));
    for family in [Family::V4, Family::V6] {
        lab.http_fetch(family)
            .unwrap_or_else(|e| panic!("HTTP over {} through the SYN proxy: {e}", family.name()));
    }
    let out = lab.stop_levee().expect("levee stops");
    let stats = last_stats(&out);
    let get = |k: &str| -> u64 {
        stats
            .iter()
            .find(|(key, _)| key == k)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {stats:?}"))
    };
    assert!(get("synproxy_cookie_valid") >= 2, "{stats:?}");
    assert!(get("synproxy_handshakes_completed") >= 2, "{stats:?}");
    assert_eq!(get("synproxy_cookie_invalid"), 0, "{stats:?}");
}
