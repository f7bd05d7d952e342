#![allow(dead_code)]
//! The benchmark rulesets: `n` rules, each matching one source address and one TCP port,
//! counting and accepting, in one base chain — as nft text, and the same rules for
//! `iptables-legacy-restore`. Shared by the criterion benches, the timing example and
//! `kernel_compare.sh`, so all of them measure the same rules.

/// Source address of rule `i` (198.18.0.0/15, the benchmarking range: 131,072 addresses).
pub fn addr(i: usize) -> String {
    format!("198.{}.{}.{}", 18 + (i >> 16) % 2, (i >> 8) & 0xff, i & 0xff)
}

/// Rule `i` in nft syntax.
pub fn nft_rule(i: usize) -> String {
    format!(
        "ip saddr {} tcp dport {} counter accept",
        addr(i),
        1000 + i % 1000
    )
}

/// An nft ruleset file with `n` rules in `table ip filter`, chain `input`.
pub fn nft(n: usize) -> String {
    let mut s = String::with_capacity(n * 64);
    s.push_str(
        "table ip filter {\n\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n",
    );
    for i in 0..n {
        s.push_str("\t\t");
        s.push_str(&nft_rule(i));
        s.push('\n');
    }
    s.push_str("\t}\n}\n");
    s
}

/// Rule `i` as `iptables -A` arguments.
pub fn iptables_rule(i: usize) -> String {
    format!(
        "-A INPUT -s {}/32 -p tcp -m tcp --dport {} -j ACCEPT",
        addr(i),
        1000 + i % 1000
    )
}

/// The same rules as an `iptables-legacy-restore` file (table filter, chain INPUT).
pub fn iptables(n: usize) -> String {
    let mut s = String::with_capacity(n * 64);
    s.push_str("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    for i in 0..n {
        s.push_str(&iptables_rule(i));
        s.push('\n');
    }
    s.push_str("COMMIT\n");
    s
}
