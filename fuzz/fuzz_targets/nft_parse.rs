//! The nft front end on arbitrary text: parsing must return a ruleset or an error — never
//! panic — and an accepted ruleset must survive its own listing: print, parse again, and get an
//! equal tree (the `list ruleset` round trip). The JSON writer must not panic either.
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
});
