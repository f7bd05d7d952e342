//! `levee run` as an operator starts it: configuration errors name the key and start nothing;
//! a valid configuration on real DPDK vdevs forwards, stops by itself or on SIGTERM, and
//! prints its totals.

use std::path::PathBuf;
use std::process::{Command, Output};

fn levee(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_levee"))
        .args(args)
        .output()
        .expect("run levee")
}

fn write_config(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("levee-run-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The last `stats` line of levee's output and a getter for its numeric fields.
fn last_stats(t: &str) -> (String, impl Fn(&str) -> u64) {
    let last = t
        .lines()
        .rfind(|l| l.starts_with("stats "))
        .expect("a stats line")
        .to_owned();
    let fields = levee::lab::parse_stats_line(&last).expect("a stats line");
    let line = last.clone();
    let get = move |k: &str| -> u64 {
        fields
            .iter()
            .find(|(key, _)| key == k)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {line}"))
    };
    (last, get)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn the_documented_example_config_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/levee.toml");
    let out = levee(&["run", "--check-config", "--config", example]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("-l 0,1,2,3,4") && t.contains("-a 0000:03:00.0"), "{t}");
}

#[test]
fn bad_configs_are_refused_naming_the_key_and_nothing_starts() {
    let cases = [
        ("unknown.toml", "[ports.outside]\ndevice = \"net_null0\"\n[ports.inside]\ndevice = \"net_null1\"\n[workers]\ncorse = [1]\n", "corse"),
        ("badburst.toml", "[ports.outside]\ndevice = \"net_null0\"\n[ports.inside]\ndevice = \"net_null1\"\n[dataplane]\nburst = 500\n", "dataplane.burst"),
        ("sameport.toml", "[ports.outside]\ndevice = \"net_null0\"\n[ports.inside]\ndevice = \"net_null0,size=64\"\n", "ports.inside.device"),
        ("syntax.toml", "[ports.outside\n", "line 1"),
    ];
    for (name, body, needle) in cases {
        let p = write_config(name, body);
        let out = levee(&["run", "--duration", "1", "--config", p.to_str().unwrap()]);
        assert!(!out.status.success(), "{name} was accepted");
        let t = text(&out);
        assert!(
            t.contains(needle),
            "{name}: error does not mention {needle:?}: {t}"
        );
        assert!(!t.contains("forwarding"), "{name}: something started: {t}");
    }
    let out = levee(&["run", "--config", "/nonexistent/levee.toml"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("/nonexistent/levee.toml"));
}

#[test]
fn runs_on_vdevs_and_prints_totals_when_it_stops() {
    let p = write_config(
        "null.toml",
        &format!(
            "[eal]\nfile_prefix = \"levee-run-{}\"\nargs = [\"--no-huge\", \"-m\", \"512\", \"--no-telemetry\"]\n\
             [ports.outside]\ndevice = \"net_null0\"\n[ports.inside]\ndevice = \"net_null1\"\n[workers]\ncores = [1]\n",
            std::process::id()
        ),
    );
    let out = levee(&[
        "run",
        "--duration",
        "2",
        "--stats-interval",
        "0.5",
        "--config",
        p.to_str().unwrap(),
    ]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("outside port net_null0 (driver net_null"), "{t}");
    assert!(t.contains("levee: stopped after"), "{t}");
    let (last, field) = last_stats(&t);
    // net_null receives as fast as it is polled and accepts every transmission.
    assert!(field("outside_rx") > 100_000, "{last}");
    assert_eq!(field("outside_rx"), field("inside_tx"), "{last}");
    assert_eq!(field("inside_rx"), field("outside_tx"), "{last}");
    assert!(
        t.lines().filter(|l| l.starts_with("stats ")).count() >= 3,
        "periodic stats lines: {t}"
    );
}

#[test]
fn a_missing_device_is_an_error_not_a_hang() {
    let p = write_config(
        "missing.toml",
        &format!(
            "[eal]\nfile_prefix = \"levee-run-m{}\"\nargs = [\"--no-huge\", \"-m\", \"512\", \"--no-telemetry\"]\n\
             [ports.outside]\ndevice = \"net_af_packet0,iface=levee-no-such-if\"\n[ports.inside]\ndevice = \"net_null1\"\n",
            std::process::id()
        ),
    );
    let out = levee(&["run", "--duration", "2", "--config", p.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("net_af_packet0") || text(&out).contains("rte_eal_init"),
        "{}",
        text(&out)
    );
}

#[test]
fn sigterm_drains_stops_and_prints_totals() {
    let p = write_config(
        "term.toml",
        &format!(
            "[eal]\nfile_prefix = \"levee-run-t{}\"\nargs = [\"--no-huge\", \"-m\", \"512\", \"--no-telemetry\"]\n\
             [ports.outside]\ndevice = \"net_null0\"\n[ports.inside]\ndevice = \"net_null1\"\n",
            std::process::id()
        ),
    );
    let child = Command::new(env!("CARGO_BIN_EXE_levee"))
        .args(["run", "--config", p.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("levee: stopped after"), "{t}");
    assert!(t.contains("outside device: rx="), "{t}");
}

#[test]
fn a_ruleset_from_the_config_filters_every_worker_packet() {
    // net_pcap replays a pcap of TCP frames; the ruleset drops destination port 80 and counts
    // everything else, so every replayed frame (all to port 80) is dropped by the filter.
    let dir = std::env::temp_dir().join(format!("levee-run-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("syn.pcap");
    std::fs::write(dir.join("rules.nft"), "table inet t {\n chain c {\n  type filter hook prerouting priority 0; policy accept;\n  tcp dport 80 log prefix \"port80: \" counter drop\n  counter\n }\n}\n").unwrap();
    let p = write_config(
        "filter.toml",
        &format!(
            "[eal]\nfile_prefix = \"levee-run-f{}\"\nargs = [\"--no-huge\", \"-m\", \"512\", \"--no-telemetry\"]\n\
             [ports.outside]\ndevice = \"net_pcap0,rx_pcap={},infinite_rx=1\"\n[ports.inside]\ndevice = \"net_null1,no-rx=1\"\n\
             [filter]\nruleset = \"rules.nft\"\n",
            std::process::id(),
            pcap.display()
        ),
    );
    write_pcap(&pcap);
    let out = levee(&["run", "--duration", "1.5", "--config", p.to_str().unwrap()]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let (last, field) = last_stats(&t);
    assert!(field("outside_rx") > 1000, "{last}");
    assert_eq!(
        field("drop_filter"),
        field("outside_rx"),
        "every port-80 frame is dropped: {last}"
    );
    assert_eq!(field("inside_tx"), 0, "{last}");
    // The rule counter, summed over workers, is printed at exit and matches.
    let rule = t
        .lines()
        .find(|l| l.contains("rule t/c/0:"))
        .unwrap_or_else(|| panic!("no rule counter line: {t}"));
    assert!(
        rule.contains(&format!("packets {}", field("outside_rx"))),
        "{rule} vs {last}"
    );
    // `log` statements reach the control thread and are printed as nf_log lines (as many as
    // the bounded queue passed; the rest are counted as dropped).
    let logged = t
        .lines()
        .filter(|l| l.starts_with("port80: IN=outside OUT=inside"))
        .count() as u64;
    let first = t
        .lines()
        .find(|l| l.starts_with("port80: "))
        .unwrap_or_else(|| panic!("no log line: {t}"));
    assert!(
        first.contains("SRC=198.18.") && first.contains("PROTO=TCP") && first.contains("DPT=80"),
        "{first}"
    );
    assert_eq!(field("logs"), field("outside_rx"), "{last}");
    assert!(logged + field("logs_dropped") <= field("logs"), "{last}");
    assert!(logged > 0);
    // A broken ruleset stops the start with FILE:LINE:COL.
    std::fs::write(
        dir.join("rules.nft"),
        "table inet t {\n chain c {\n  tcp dport 99999 drop\n }\n}\n",
    )
    .unwrap();
    let out = levee(&["run", "--duration", "1", "--config", p.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out).contains("rules.nft:3:"), "{}", text(&out));
}

#[test]
fn conntrack_events_are_printed_like_conntrack_minus_e() {
    // The replayed SYNs open flows in the worker's shard; `--ct-events` prints each [NEW].
    let dir = std::env::temp_dir().join(format!("levee-run-ev-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("syn.pcap");
    write_pcap(&pcap);
    let p = write_config(
        "events.toml",
        &format!(
            "[eal]\nfile_prefix = \"levee-run-e{}\"\nargs = [\"--no-huge\", \"-m\", \"512\", \"--no-telemetry\"]\n\
             [ports.outside]\ndevice = \"net_pcap0,rx_pcap={},infinite_rx=1\"\n[ports.inside]\ndevice = \"net_null1,no-rx=1\"\n",
            std::process::id(),
            pcap.display()
        ),
    );
    let out = levee(&[
        "run",
        "--duration",
        "1",
        "--ct-events",
        "--config",
        p.to_str().unwrap(),
    ]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let new: Vec<&str> = t.lines().filter(|l| l.starts_with("[NEW] tcp 6 ")).collect();
    assert!(!new.is_empty(), "no [NEW] events: {t}");
    assert!(
        new[0].contains("dst=198.18.0.2") && new[0].contains("dport=80"),
        "{}",
        new[0]
    );
    let (last, field) = last_stats(&t);
    assert_eq!(
        field("ct_new"),
        new.len() as u64,
        "one event per confirmed flow: {last}"
    );
}

/// A classic pcap with 64 IPv4 TCP SYN frames to 198.18.0.2:80.
fn write_pcap(path: &std::path::Path) {
    let mut b = Vec::new();
    for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    // The version fields are two u16s: 2 then 4, little-endian.
    b[4..8].copy_from_slice(&[2, 0, 4, 0]);
    for i in 0..64u16 {
        let mut f = vec![0u8; 60];
        f[12] = 0x08;
        f[14] = 0x45;
        f[16..18].copy_from_slice(&40u16.to_be_bytes());
        f[22] = 64;
        f[23] = 6;
        f[26..30].copy_from_slice(&[198, 18, 0, 1]);
        f[30..34].copy_from_slice(&[198, 18, 0, 2]);
        f[34..36].copy_from_slice(&(1024 + i).to_be_bytes());
        f[36..38].copy_from_slice(&80u16.to_be_bytes());
        f[46] = 0x50;
        f[47] = 0x02;
        for v in [0u32, i as u32, 60, 60] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&f);
    }
    std::fs::write(path, b).unwrap();
}
