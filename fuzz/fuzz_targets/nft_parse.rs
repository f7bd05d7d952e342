//! The nft front end on arbitrary text: parsing must return a ruleset or an error — never
//! panic — and an accepted ruleset must survive its own listing: print, parse again, and get an
//! equal tree (the `list ruleset` round trip). The JSON writer must not panic either. Then the
//! compiler: it must compile the ruleset or refuse it with an error (never panic), and a
//! compiled ruleset (which passed the verifier) must evaluate sample packets on every hook, and
//! the outcome cache must give what the interpreter gives (the first time, a miss, and again,
//! a hit when the ruleset can be cached).
#![no_main]

use levee_filter_vm::nft::{parse_ruleset, print_ruleset, ruleset_json};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(first) = parse_ruleset(text) else { return };
    let listing = print_ruleset(&first);
    match parse_ruleset(&listing) {
        Ok(second) => assert_eq!(first, second, "listing changes the ruleset:\n{listing}"),
        Err(e) => panic!("listing does not parse: {e}\n{listing}"),
    }
    let _ = ruleset_json(&first);
    let Ok(compiled) = levee_filter_vm::compile(&first, 0) else {
        return;
    };
    let mut filter = levee_filter_vm::Filter {
        state: levee_filter_vm::vm::State::new(&compiled.program),
        compiled,
    };
    for frame in sample_frames() {
        for hook in [
            "ingress",
            "prerouting",
            "input",
            "forward",
            "output",
            "postrouting",
        ] {
            let _ = filter.evaluate(hook, &frame, &levee_filter_vm::PacketMeta::default());
        }
    }
    cache_agrees(&filter.compiled);
});

/// The outcome cache against the interpreter on the sample frames (each twice: miss, then
/// hit), with fresh states so counters and limits start alike.
fn cache_agrees(c: &levee_filter_vm::Compiled) {
    use levee_filter_vm::nft::ast::Hook;
    use levee_filter_vm::vm::{Actions, CtView, State};
    let hooks = [Hook::Prerouting, Hook::Forward];
    let meta = levee_filter_vm::PacketMeta::default();
    let mut cache = levee_filter_vm::cache::VerdictCache::new(1);
    let (mut sa, mut sb) = (State::new(&c.program), State::new(&c.program));
    for frame in sample_frames() {
        let info = levee_packet::parse::parse_frame(&frame).ok();
        for _ in 0..2 {
            let (mut aa, mut ab) = (Actions::default(), Actions::default());
            let va = c.evaluate_stage_into(
                &mut sa,
                &hooks,
                &frame,
                info.as_ref(),
                &meta,
                &mut aa,
                levee_filter_vm::Stage::All,
            );
            let vb = c.evaluate_cached_into(
                &mut cache,
                0,
                &mut sb,
                &hooks,
                &frame,
                info.as_ref(),
                &meta,
                &mut ab,
                None::<fn(&Actions) -> Option<CtView>>,
            );
            assert_eq!((va, aa), (vb, ab), "cached outcome differs");
        }
    }
    assert_eq!(
        c.rule_counter_totals(&[&sa.counters]),
        c.rule_counter_totals(&[&sb.counters]),
        "cached outcomes count differently"
    );
}

/// An IPv4 TCP SYN, an IPv6 ICMPv6 echo, a truncated IPv4 header and an ARP-ish frame.
fn sample_frames() -> [Vec<u8>; 4] {
    let mut v4 = vec![0u8; 60];
    v4[12] = 0x08;
    v4[14] = 0x45;
    v4[16..18].copy_from_slice(&40u16.to_be_bytes());
    v4[22] = 64;
    v4[23] = 6;
    v4[26..30].copy_from_slice(&[198, 18, 0, 1]);
    v4[30..34].copy_from_slice(&[198, 18, 0, 2]);
    v4[36..38].copy_from_slice(&22u16.to_be_bytes());
    v4[46] = 0x50;
    v4[47] = 0x02;
    let mut v6 = vec![0u8; 62];
    v6[12] = 0x86;
    v6[13] = 0xdd;
    v6[14] = 0x60;
    v6[19] = 8;
    v6[20] = 58;
    v6[21] = 64;
    v6[22..24].copy_from_slice(&[0x20, 0x01]);
    v6[54] = 128;
    let short = v4[..20].to_vec();
    let mut arp = vec![0u8; 42];
    arp[12] = 0x08;
    arp[13] = 0x06;
    [v4, v6, short, arp]
}
