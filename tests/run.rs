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
    let last = t
        .lines()
        .rfind(|l| l.starts_with("stats "))
        .expect("a stats line");
    let field = |k: &str| -> u64 {
        last.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {last}"))
    };
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
