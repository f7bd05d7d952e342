//! Crate-level tests: configuration, names and counters as the dataplane sees them.

use crate::ratelimit::LimitError;
use crate::testutil::*;
use crate::*;

#[test]
fn invalid_configs_name_the_setting_and_value() {
    let bad_schedule = Config {
        schedule: CookieSchedule {
            period_secs: 1,
            ..CookieSchedule::default()
        },
        ..Config::default()
    };
    let err = SynProxy::new(bad_schedule, &MASTER).unwrap_err();
    assert_eq!(err.to_string(), "cookie schedule: period_secs (minimum 4) is 1");
    let bad_limit = Config {
        prefix_limit: Some(PrefixLimit {
            slots: 3,
            ..PrefixLimit::default()
        }),
        ..Config::default()
    };
    assert_eq!(
        SynProxy::new(bad_limit, &MASTER).unwrap_err(),
        ConfigError::Limit(LimitError {
            what: "slots (a power of two up to 2^20)",
            value: 3
        })
    );
    assert!(SynProxy::new(Config::default(), &MasterSecret::random()).is_ok());
}

#[test]
fn drop_reasons_have_metric_names() {
    let all = [
        DropReason::Malformed,
        DropReason::BadChecksum,
        DropReason::NotEligible,
        DropReason::RateLimited,
        DropReason::CookieInvalid,
        DropReason::BufferTooShort,
        DropReason::Unexpected,
    ];
    let names: Vec<&str> = all.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        names,
        [
            "malformed",
            "bad_checksum",
            "not_eligible",
            "rate_limited",
            "cookie_invalid",
            "buffer_too_short",
            "unexpected"
        ]
    );
}

#[test]
fn a_whole_connection_keeps_the_linux_counters() {
    let mut proxy = proxy();
    let flow = Flow::v4();
    let mut hs = Handshake::syn(&mut proxy, flow, SynOpts::linux(), SynRule::default(), 1);
    hs.open(&mut proxy);
    hs.establish(&mut proxy, 99, ServerOpts::default());
    let c = *proxy.counters();
    assert_eq!(
        (
            c.syn_received,
            c.synack_sent,
            c.cookie_valid,
            c.handshakes_completed
        ),
        (1, 1, 1, 1)
    );
    assert_eq!(
        c.linux_row(),
        "00000000\t00000001\t00000000\t00000001\t00000000\t00000000"
    );
    // The derived keys differ by label and never equal the raw secret bytes.
    assert_ne!(MASTER.derive_u64(b"a"), MASTER.derive_u64(b"b"));
}
