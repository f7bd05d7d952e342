//! Expected kernel counters computed from the generated packets alone, for the few corpus
//! files that check the test's own model of the kernel: the conntrack classification
//! ([`super::gen::Ct`]), `ct state` before conntrack, and what counters count as bytes at
//! prerouting and at ingress. These hold with or without levee.

use super::gen::{Ct, Family, Packet};

type Pred = fn(&Packet) -> bool;

fn v4(p: &Packet) -> bool {
    p.family == Family::V4
}

fn v6(p: &Packet) -> bool {
    p.family == Family::V6
}

fn other_proto(p: &Packet) -> bool {
    !matches!(p.l4proto, 6 | 17 | 1 | 58)
}

/// TCP flags of an IPv4 TCP packet.
fn tcp_flags_v4(p: &Packet) -> Option<u8> {
    if p.family != Family::V4 || p.l4proto != 6 {
        return None;
    }
    let ihl = usize::from(p.frame[14] & 0x0f) * 4;
    p.frame.get(14 + ihl + 13).copied()
}

/// The expected rules of `file`, in order, and the hook whose length the counters count; None
/// for files without an oracle.
pub fn oracle(file: &str) -> Option<(&'static str, Vec<Pred>)> {
    let rules: Vec<Pred> = match file {
        "00-ct-model.nft" => vec![
            |p| v4(p) && p.l4proto == 6 && p.ct == Ct::New,
            |p| v4(p) && p.l4proto == 6 && p.ct == Ct::Invalid,
            |p| v4(p) && p.l4proto == 6 && p.ct == Ct::Untracked,
            |p| v4(p) && p.l4proto == 17 && p.ct == Ct::New,
            |p| v4(p) && p.l4proto == 17 && p.ct != Ct::New,
            |p| v4(p) && p.l4proto == 1 && p.ct == Ct::New,
            |p| v4(p) && p.l4proto == 1 && p.ct == Ct::Invalid,
            |p| v4(p) && p.l4proto == 1 && p.ct == Ct::Untracked,
            |p| v4(p) && other_proto(p) && p.ct == Ct::New,
            |p| v4(p) && other_proto(p) && p.ct != Ct::New,
            |p| v6(p) && p.l4proto == 6 && p.ct == Ct::New,
            |p| v6(p) && p.l4proto == 6 && p.ct == Ct::Invalid,
            |p| v6(p) && p.l4proto == 6 && p.ct == Ct::Untracked,
            |p| v6(p) && p.l4proto == 17 && p.ct == Ct::New,
            |p| v6(p) && p.l4proto == 17 && p.ct != Ct::New,
            |p| v6(p) && p.l4proto == 58 && p.ct == Ct::New,
            |p| v6(p) && p.l4proto == 58 && p.ct == Ct::Invalid,
            |p| v6(p) && p.l4proto == 58 && p.ct == Ct::Untracked,
            |_| false,
            |p| v6(p) && other_proto(p) && p.ct == Ct::New,
            |p| v6(p) && other_proto(p) && p.ct == Ct::Invalid,
            |p| v6(p) && other_proto(p) && p.ct == Ct::Untracked,
            v4,
            v6,
            |_| false,
        ],
        "01-ct-before-conntrack.nft" => vec![v4, |_| false, |_| false, |p| {
            tcp_flags_v4(p).is_some_and(|f| f & 0x12 == 0x02)
        }],
        "02-netdev-bytes.nft" => vec![v4, v6, |p| p.family == Family::Other, |p| {
            p.len_at("ingress") > 1000
        }],
        _ => return None,
    };
    let hook = if file.starts_with("02-") {
        "ingress"
    } else {
        "prerouting"
    };
    Some((hook, rules))
}

/// (packets, bytes) each rule of `file` should count.
pub fn expected(file: &str, packets: &[Packet]) -> Option<Vec<(u64, u64)>> {
    let (hook, rules) = oracle(file)?;
    Some(
        rules
            .iter()
            .map(|pred| {
                packets
                    .iter()
                    .filter(|p| pred(p))
                    .fold((0, 0), |(n, b), p| (n + 1, b + u64::from(p.len_at(hook))))
            })
            .collect(),
    )
}
