//! The rule store on arbitrary transactions: operations are decoded from the fuzzer's bytes,
//! with texts (rules, elements, set and chain blocks, whole files) taken from the input, so
//! every parser the store runs on operator input sees hostile text. Nothing may panic; a
//! transaction that fails must change nothing (same listing, same generation); one that
//! succeeds must produce a generation that judges sample packets exactly as a fresh compile
//! of its own listing, and whose listing parses back to the same listing.
#![no_main]

use levee_control::rules::{Family, Op, RuleStore, Transaction};
use levee_filter_vm::incremental::Position;
use levee_filter_vm::nft::{self, ast::Hook};
use levee_filter_vm::vm::State;
use levee_filter_vm::PacketMeta;
use libfuzzer_sys::fuzz_target;

const BASE: &str = "table inet t {
    set s { type ipv4_addr; flags interval; elements = { 198.18.7.0/24 } }
    map m { type inet_service : verdict; elements = { 22 : jump sub } }
    chain input { type filter hook prerouting priority 0; policy accept; ip saddr @s drop; tcp dport vmap @m }
    chain sub { udp dport 53 accept }
}";

fn frames() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    for (src, proto, dport) in [([198u8, 18, 7, 1], 6u8, 22u16), ([198, 18, 0, 1], 17, 53), ([198, 18, 0, 2], 6, 80)] {
        let mut f = vec![0u8; 60];
        f[12] = 0x08;
        f[14] = 0x45;
        f[16..18].copy_from_slice(&40u16.to_be_bytes());
        f[22] = 64;
        f[23] = proto;
        f[26..30].copy_from_slice(&src);
        f[30..34].copy_from_slice(&[198, 18, 255, 1]);
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f[46] = 0x50;
        v.push(f);
    }
    v
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut store = RuleStore::new();
    store
        .commit_local(&Transaction::new(vec![Op::Load { text: BASE.into(), flush: true }]), 0)
        .unwrap();
    // Each line: one op, chosen by its first byte; the rest is the op's text.
    let mut txns: Vec<Vec<Op>> = vec![Vec::new()];
    for line in text.split('\n') {
        let (k, rest) = match line.char_indices().nth(1) {
            Some((i, _)) => (line.as_bytes()[0], &line[i..]),
            None => (line.as_bytes().first().copied().unwrap_or(b'|'), ""),
        };
        let chain = if k % 2 == 0 { "input" } else { "sub" };
        let h = (k as u64) % 8 + 1;
        let op = match k % 12 {
            0 | 1 => Op::AddRule { family: Family::Inet, table: "t".into(), chain: chain.into(), position: Position::Append, rule: rest.into() },
            2 => Op::AddRule { family: Family::Inet, table: "t".into(), chain: chain.into(), position: Position::After(h), rule: rest.into() },
            3 => Op::ReplaceRule { handle: h, rule: rest.into() },
            4 => Op::DeleteRule { handle: h },
            5 => Op::EnsureRule { family: Family::Inet, table: "t".into(), chain: chain.into(), position: Position::Prepend, rule: rest.into() },
            6 => Op::AddElements { family: Family::Inet, table: "t".into(), set: if k % 2 == 0 { "s" } else { "m" }.into(), elements: rest.into() },
            7 => Op::DeleteElements { family: Family::Inet, table: "t".into(), set: "s".into(), elements: rest.into() },
            8 => Op::AddSet { family: Family::Inet, table: "t".into(), name: "n".into(), map: k % 2 == 1, spec: rest.into(), create: false },
            9 => Op::AddChain { family: Family::Inet, table: "t".into(), name: "c2".into(), spec: Some(rest.into()), create: false },
            10 => Op::FlushChain { family: Family::Inet, table: "t".into(), name: chain.into() },
            _ => {
                txns.push(Vec::new());
                continue;
            }
        };
        txns.last_mut().unwrap().push(op);
    }
    let meta = PacketMeta::default();
    for ops in txns.into_iter().take(16) {
        let before = store.list_ruleset(true);
        let generation = store.generation();
        match store.commit_local(&Transaction::new(ops), 0) {
            Err(_) => {
                assert_eq!(store.list_ruleset(true), before, "a failed transaction changed the ruleset");
                assert_eq!(store.generation(), generation);
            }
            Ok((compiled, _)) => {
                let listing = store.list_ruleset(false);
                let parsed = nft::parse_ruleset(&listing).unwrap_or_else(|e| panic!("listing does not parse: {e}\n{listing}"));
                assert_eq!(nft::print_ruleset(&parsed), listing);
                let fresh = levee_filter_vm::compile(&parsed, 0).unwrap_or_else(|e| panic!("listing does not compile: {e}\n{listing}"));
                let (mut a, mut b) = (State::new(&compiled.program), State::new(&fresh.program));
                for f in frames() {
                    let info = levee_packet::parse::parse_frame(&f).ok();
                    let got = compiled.evaluate_hooks(&mut a, &[Hook::Prerouting], &f, info.as_ref(), &meta);
                    let want = fresh.evaluate_hooks(&mut b, &[Hook::Prerouting], &f, info.as_ref(), &meta);
                    assert_eq!(got, want, "incremental and fresh compiles disagree\n{listing}");
                }
            }
        }
    }
});
