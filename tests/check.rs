//! `levee check`: offline compilation of a ruleset file, nft's `--check` idea. The listing it
//! prints is accepted by the real `nft -c` (the kernel's own front end) and compiles back to
//! the same listing.

use std::path::PathBuf;
use std::process::{Command, Output};

fn levee(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_levee"))
        .args(args)
        .output()
        .expect("run levee")
}

fn write(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("levee-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const RULESET: &str = r#"
table inet edge {
  set blocklist { type ipv4_addr; flags interval; elements = { 198.18.5.0/24, 198.18.9.9 } }
  map ports { type inet_service : verdict; elements = { 22 : drop, 80 : accept } }
  chain pre {
    type filter hook prerouting priority filter; policy accept;
    ct state established,related accept
    ct state invalid counter drop
    ip saddr @blocklist counter drop
    tcp dport vmap @ports
    ip6 saddr 2001:2::/48 udp dport 53 limit rate 100/second accept
    meta l4proto icmp counter accept comment "ping"
    counter
  }
}
"#;

#[test]
fn a_valid_ruleset_prints_its_listing_and_the_listing_round_trips() {
    let p = write("ok.nft", RULESET);
    let out = levee(&["check", p.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listing = String::from_utf8(out.stdout).unwrap();
    assert!(
        listing.contains("table inet edge {") && listing.contains("tcp dport vmap @ports"),
        "{listing}"
    );
    let again = write("listing.nft", &listing);
    let out2 = levee(&["check", again.to_str().unwrap()]);
    assert!(out2.status.success());
    assert_eq!(
        String::from_utf8(out2.stdout).unwrap(),
        listing,
        "listing is a fixed point"
    );
}

#[test]
fn the_kernel_nft_accepts_levees_listing() {
    let p = write("k.nft", RULESET);
    let out = levee(&["check", p.to_str().unwrap()]);
    let listing = write("k-listing.nft", &String::from_utf8(out.stdout).unwrap());
    // `nft -c` parses and evaluates without committing anything to the kernel.
    let nft = Command::new("nft")
        .args(["-c", "-f", listing.to_str().unwrap()])
        .output()
        .expect("nft is installed (deploy/host-setup.sh)");
    assert!(
        nft.status.success(),
        "nft refused levee's listing: {}",
        String::from_utf8_lossy(&nft.stderr)
    );
}

#[test]
fn errors_are_file_line_col_message_and_exit_non_zero() {
    let cases = [
        (
            "port.nft",
            "table ip t {\n chain c {\n  tcp dport 70000 drop\n }\n}\n",
            ":3:",
        ),
        (
            "chain.nft",
            "table ip t {\n chain c {\n  jump nowhere\n }\n}\n",
            ":3:",
        ),
        ("brace.nft", "table ip t {\n chain c {\n", ":"),
        (
            "set.nft",
            "table ip t {\n chain c {\n  ip saddr @missing drop\n }\n}\n",
            ":3:",
        ),
    ];
    for (name, text, needle) in cases {
        let p = write(name, text);
        let out = levee(&["check", p.to_str().unwrap()]);
        assert!(!out.status.success(), "{name} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().next().unwrap_or_default();
        assert!(first.starts_with(&format!("{}:", p.display())), "{name}: {first}");
        assert!(first.contains(needle), "{name}: {first}");
        assert!(out.stdout.is_empty(), "{name}: nothing on stdout on error");
    }
}

#[test]
fn json_output_has_the_libnftables_shape() {
    let p = write("j.nft", RULESET);
    let out = levee(&["check", "-j", p.to_str().unwrap()]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let items = v["nftables"].as_array().expect("an nftables array");
    assert!(items.iter().any(|i| i.get("table").is_some()));
    assert!(items.iter().any(|i| i.get("chain").is_some()));
    assert_eq!(items.iter().filter(|i| i.get("rule").is_some()).count(), 7);
}

/// The check says on stderr whether workers will answer from the outcome cache: off for this
/// file's `limit`, on for the SYN proxy's ruleset (with the fields it reads).
#[test]
fn the_check_says_whether_the_outcome_cache_applies() {
    let out = levee(&["check", write("limited.nft", RULESET).to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.contains("outcome cache: off"),
        "{err}"
    );
    let syn = "table inet t {
  chain raw { type filter hook prerouting priority raw; policy accept; tcp flags & (syn | ack) == syn notrack; }
  chain pre { type filter hook prerouting priority filter; policy accept;
    ip daddr 198.18.0.2 tcp dport 80 ct state invalid,untracked synproxy mss 1460 wscale 7
    ct state invalid counter drop
  }
}";
    let out = levee(&["check", write("syn.nft", syn).to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.contains("outcome cache: on (the verdict depends on 4 packet field"),
        "{err}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("outcome cache"),
        "the listing stays clean"
    );
}
