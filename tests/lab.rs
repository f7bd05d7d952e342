//! End to end through levee with real Linux TCP stacks: a client and a server in network
//! namespaces, levee bridging them on `net_af_packet` vdevs. HTTP fetches are compared byte for
//! byte, iperf3 transfers must arrive complete, over IPv4, IPv6 and a VLAN-tagged path (which
//! only works if levee forwards the 802.1Q tag unchanged: the server's address on that path
//! lives on its VLAN 100 sub-interface). Needs root, iproute2, curl, iperf3, python3
//! (deploy/host-setup.sh installs them).
//!
//! One lab at a time: the machine has few cores and levee busy-polls one of them.

use levee::lab::{parse_stats_line, Family, Lab, LabOptions, BLOB_BYTES};
use std::sync::Mutex;

static ONE_LAB: Mutex<()> = Mutex::new(());

fn lab(workers: Vec<u32>) -> Lab {
    Lab::start(&LabOptions {
        levee: env!("CARGO_BIN_EXE_levee").into(),
        workers,
        echo_levee: false,
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
fn http_and_iperf3_through_levee_over_ipv4_ipv6_and_vlan() {
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = lab(vec![1]);
    for path in [Family::V4, Family::V6, Family::Vlan] {
        lab.http_fetch(path)
            .unwrap_or_else(|e| panic!("HTTP over {}: {e}", path.name()));
    }
    for family in [Family::V4, Family::V6] {
        let r = lab.iperf(family, 20_000_000).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.bytes_sent, 20_000_000);
        assert!(r.bits_per_second > 1e6, "{r:?}");
    }
    let out = lab.stop_levee().expect("levee stops cleanly on SIGINT");
    assert!(
        out.iter().any(|l| l.starts_with("levee: stopped after")),
        "no clean-stop line:\n{}",
        out.join("\n")
    );
    let s = last_stats(&out);
    // Two 20 MB uploads entered on the outside port and left on the inside one; three 4 MiB
    // downloads went the other way.
    assert!(get(&s, "outside_rx_bytes") > 40_000_000, "{s:?}");
    assert!(get(&s, "inside_tx_bytes") > 40_000_000, "{s:?}");
    assert!(get(&s, "inside_rx_bytes") > 3 * BLOB_BYTES as u64, "{s:?}");
    assert!(get(&s, "outside_tx_bytes") > 3 * BLOB_BYTES as u64, "{s:?}");
    assert_eq!(get(&s, "drop_malformed"), 0);
}
