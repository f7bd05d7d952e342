//! The management API on arbitrary request lines: parsing never panics; whatever parses
//! serializes and parses back to the same request; handling it against a small ruleset never
//! panics, and a request that fails changes nothing (same listing, same generation).
#![no_main]

use levee_control::api::{parse_request, Api, Limits, NoData};
use levee_control::generation::Committer;
use levee_control::rules::{Op, Transaction};
use libfuzzer_sys::fuzz_target;

const BASE: &str = "table inet t {
    set s { type ipv4_addr; elements = { 198.18.7.1 } }
    chain input { type filter hook prerouting priority 0; policy accept; ip saddr @s drop; tcp dport 22 counter accept }
}";

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_request_bytes: 1 << 16,
        max_ops: 64,
    };
    let Ok(req) = parse_request(data, &limits) else {
        return;
    };
    let line = serde_json::to_string(&req).expect("requests serialize");
    let again = parse_request(
        line.as_bytes(),
        &Limits {
            max_request_bytes: usize::MAX,
            ..limits
        },
    );
    assert_eq!(again.as_ref().ok(), Some(&req), "{line}");
    let txn = Transaction::new(vec![Op::Load {
        text: BASE.into(),
        flush: true,
    }]);
    let (mut c, _) = Committer::start(&txn, 0, Box::new(|| 0)).expect("the base ruleset loads");
    let (g, before) = (c.generation(), c.store().list_ruleset(true));
    let r = Api::new(limits).handle(req, &mut c, &NoData);
    if !r.ok {
        assert_eq!(c.generation(), g);
        assert_eq!(c.store().list_ruleset(true), before);
        assert!(r.error.is_some_and(|e| !e.message.is_empty()));
    }
});
