use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;

use super::*;

const MASTER: MasterSecret = MasterSecret::from_bytes(*b"levee-test-key-1");

fn v4_tuple() -> CookieTuple {
    CookieTuple {
        addrs: CookieAddrs::V4 {
            client: [198, 18, 0, 10],
            server: [198, 19, 0, 80],
        },
        client_port: 51234,
        server_port: 443,
    }
}

fn v6_tuple() -> CookieTuple {
    let mut client = [0u8; 16];
    client[..4].copy_from_slice(&[0x20, 0x01, 0x00, 0x02]);
    client[15] = 0x10;
    let mut server = client;
    server[15] = 0x80;
    CookieTuple {
        addrs: CookieAddrs::V6 { client, server },
        client_port: 40000,
        server_port: 80,
    }
}

fn jar_at(counter: u32) -> CookieJar {
    let mut jar = CookieJar::new(&MASTER, CookieSchedule::default()).unwrap();
    jar.set_counter(counter);
    jar
}

/// Every option combination the timestamp can carry, plus "no timestamp option".
fn all_ts_options() -> Vec<Option<TsOptions>> {
    let mut out = vec![None];
    for wscale in std::iter::once(None).chain((0..=MAX_WSCALE).map(Some)) {
        for sack_perm in [false, true] {
            for ecn in [false, true] {
                out.push(Some(TsOptions {
                    wscale,
                    sack_perm,
                    ecn,
                }));
            }
        }
    }
    out
}

/// The TSecr an ACK echoes for a SYN-ACK stamped with `ts` at some clock value.
fn echo(ts: Option<TsOptions>, clock: u32) -> Option<u32> {
    ts.map(|o| o.stamp(clock).unwrap())
}

#[test]
fn every_mss_index_and_option_combination_round_trips() {
    let jar = jar_at(1_000);
    let combos = all_ts_options();
    assert_eq!(combos.len(), 1 + 16 * 4);
    for tuple in [v4_tuple(), v6_tuple()] {
        for mss_index in 0..4u8 {
            for &ts in &combos {
                let isn = 0x9e37_79b9 ^ u32::from(mss_index);
                let data = CookieData { mss_index, ts };
                let cookie = jar.make(&tuple, isn, data).unwrap();
                assert_eq!(cookie & 3, u32::from(mss_index), "MSS index in the low bits");
                let decoded = jar.check(&tuple, isn, cookie, echo(ts, 0x1234_5678)).unwrap();
                assert_eq!(decoded.mss_index, mss_index);
                assert_eq!(decoded.mss, tuple.mss_table()[usize::from(mss_index)]);
                assert_eq!(decoded.ts, ts);
                assert_eq!(decoded.counter, 1_000);
            }
        }
    }
}

#[test]
fn mss_tables_round_down_like_linux() {
    let v4 = v4_tuple();
    let cases = [
        (None, 0),
        (Some(0), 0),
        (Some(535), 0),
        (Some(536), 0),
        (Some(1299), 0),
        (Some(1300), 1),
        (Some(1439), 1),
        (Some(1440), 2),
        (Some(1452), 2),
        (Some(1460), 3),
        (Some(9000), 3),
        (Some(u16::MAX), 3),
    ];
    for (mss, index) in cases {
        assert_eq!(v4.mss_index(mss), index, "v4 {mss:?}");
    }
    let v6 = v6_tuple();
    let cases = [
        (None, 0),
        (Some(1219), 0),
        (Some(1220), 0),
        (Some(1420), 1),
        (Some(1440), 2),
        (Some(1460), 2),
        (Some(8939), 2),
        (Some(8940), 3),
    ];
    for (mss, index) in cases {
        assert_eq!(v6.mss_index(mss), index, "v6 {mss:?}");
    }
    assert_eq!(v4.mss_of(3), Ok(1460));
    assert_eq!(v6.mss_of(3), Ok(8940));
}

#[test]
fn a_cookie_lives_two_counters() {
    let tuple = v4_tuple();
    let data = CookieData {
        mss_index: 3,
        ts: None,
    };
    for made_at in [0u32, 1, 77, 78, 1 << 20] {
        let cookie = jar_at(made_at).make(&tuple, 7, data).unwrap();
        assert!(jar_at(made_at).check(&tuple, 7, cookie, None).is_ok());
        assert!(jar_at(made_at + 1).check(&tuple, 7, cookie, None).is_ok());
        for later in [made_at + 2, made_at + 3, made_at + 1000] {
            assert_eq!(
                jar_at(later).check(&tuple, 7, cookie, None),
                Err(CookieError::BadMac {
                    cookie,
                    counter: if later % 2 == made_at % 2 {
                        later
                    } else {
                        later - 1
                    }
                }),
                "made at {made_at}, checked at {later}"
            );
        }
        // A checker whose counter is behind (a cookie from its future) refuses it.
        if made_at > 0 {
            assert!(jar_at(made_at - 1).check(&tuple, 7, cookie, None).is_err());
        }
    }
}

#[test]
fn counter_wraps_around() {
    let tuple = v6_tuple();
    let data = CookieData {
        mss_index: 2,
        ts: Some(TsOptions {
            wscale: Some(7),
            sack_perm: true,
            ecn: false,
        }),
    };
    let jar = jar_at(u32::MAX);
    let cookie = jar.make(&tuple, 42, data).unwrap();
    let tsecr = echo(data.ts, 0xdead_beef);
    // u32::MAX -> 0 is one tick later: still valid, and decoded as made at u32::MAX.
    let decoded = jar_at(0).check(&tuple, 42, cookie, tsecr).unwrap();
    assert_eq!(decoded.counter, u32::MAX);
    assert_eq!(decoded.ts, data.ts);
    // Two ticks later it has expired.
    assert!(jar_at(1).check(&tuple, 42, cookie, tsecr).is_err());
    // The schedule's counter itself wraps instead of saturating.
    let sched = CookieSchedule::default();
    let secs = (u64::from(u32::MAX) + 1) * 64;
    assert_eq!(sched.counter_at(secs), 0);
    assert_eq!(sched.counter_at(secs - 1), u32::MAX);
    assert_eq!(sched.check_counter_at(secs - 2), 0);
    assert_eq!(sched.check_counter_at(secs - 3), u32::MAX);
}

#[test]
fn secret_rotation_accepts_the_old_secret_for_the_overlap_only() {
    let schedule = CookieSchedule {
        rotation_ticks: 4,
        ..CookieSchedule::default()
    };
    let new_jar = |counter| {
        let mut jar = CookieJar::new(&MASTER, schedule).unwrap();
        jar.set_counter(counter);
        jar
    };
    let tuple = v4_tuple();
    let data = CookieData {
        mss_index: 1,
        ts: None,
    };
    // Counter 7 is the last of epoch 1; counter 8 starts epoch 2.
    let old = new_jar(7).make(&tuple, 99, data).unwrap();
    let at8 = new_jar(8);
    assert_eq!(at8.keys[0].epoch, 2);
    assert_eq!(at8.keys[1].epoch, 1);
    assert!(
        at8.check(&tuple, 99, old, None).is_ok(),
        "old secret during the overlap"
    );
    assert!(
        new_jar(9).check(&tuple, 99, old, None).is_err(),
        "old secret after it"
    );
    // The old secret with a current counter is refused: only the counter's own epoch key counts.
    let stale_key = at8.forge(1, 8, &tuple, 99, 1, 0);
    assert!(matches!(
        at8.check(&tuple, 99, stale_key, None),
        Err(CookieError::BadMac { .. })
    ));
    let right_key = at8.forge(2, 8, &tuple, 99, 1, 0);
    assert!(at8.check(&tuple, 99, right_key, None).is_ok());
    // Keys really differ between epochs.
    assert_ne!(stale_key, right_key);
    // A jar whose time jumped far holds neither epoch of an old counter.
    let far = new_jar(1000);
    let ancient = far.forge(1, 999, &tuple, 99, 1, 0);
    assert!(far.check(&tuple, 99, ancient, None).is_err());
}

#[test]
fn boxes_sharing_the_master_accept_each_others_cookies() {
    let sched = CookieSchedule::default();
    let tuple = v4_tuple();
    let data = CookieData {
        mss_index: 3,
        ts: Some(TsOptions {
            wscale: Some(9),
            sack_perm: true,
            ecn: true,
        }),
    };
    let mut box_a = CookieJar::new(&MASTER, sched).unwrap();
    let mut box_b = CookieJar::new(&MASTER, sched).unwrap();
    let other_master = MasterSecret::from_bytes(*b"another fleet!!!");
    let mut box_c = CookieJar::new(&other_master, sched).unwrap();
    let base = 1_790_000_000u64; // Some second in 2026.
    let skew = u64::from(sched.clock_skew_secs);
    let period = u64::from(sched.period_secs);
    for offset in 0..period {
        let t = base + offset;
        box_a.set_time(t);
        let cookie = box_a.make(&tuple, 5, data).unwrap();
        let tsecr = echo(data.ts, (t as u32).wrapping_mul(1000));
        // B's clock is up to `skew` ahead or behind, and the ACK comes up to P - 2S later.
        for b_clock in [t - skew, t, t + skew, t + period - 2 * skew - 1] {
            box_b.set_time(b_clock);
            assert!(
                box_b.check(&tuple, 5, cookie, tsecr).is_ok(),
                "made at {t}, checked on a clock reading {b_clock}"
            );
            box_c.set_time(b_clock);
            assert!(box_c.check(&tuple, 5, cookie, tsecr).is_err());
        }
        // Never after two periods.
        box_b.set_time(t + 2 * period);
        assert!(box_b.check(&tuple, 5, cookie, tsecr).is_err());
    }
}

#[test]
fn forged_and_altered_cookies_are_rejected() {
    let jar = jar_at(500);
    let tuple = v4_tuple();
    let mut rng = SplitMix(7);
    let before = jar.macs_computed();
    let mut accepted = 0;
    for _ in 0..100_000 {
        let cookie = rng.next() as u32;
        if jar.check(&tuple, 1, cookie, None).is_ok() {
            accepted += 1;
        }
    }
    // Each check costs exactly one MAC.
    assert_eq!(jar.macs_computed() - before, 100_000);
    assert_eq!(accepted, 0);
    // Timestamp presence is authenticated: dropping or adding the echo fails.
    let ts = Some(TsOptions::default());
    let with_ts = jar.make(&tuple, 1, CookieData { mss_index: 0, ts }).unwrap();
    assert!(jar.check(&tuple, 1, with_ts, echo(ts, 0)).is_ok());
    assert!(jar.check(&tuple, 1, with_ts, None).is_err());
    let without = jar
        .make(
            &tuple,
            1,
            CookieData {
                mss_index: 0,
                ts: None,
            },
        )
        .unwrap();
    assert!(jar.check(&tuple, 1, without, Some(0x3f)).is_err());
    // The time bits of the echo are not part of the MAC (the client echoes them verbatim, and a
    // SYN-ACK sent again later carries a later clock).
    assert!(jar.check(&tuple, 1, with_ts, echo(ts, 0xffff_ff00)).is_ok());
}

#[test]
fn out_of_range_fields_are_refused() {
    assert_eq!(
        TsOptions::decode(0x40),
        Err(CookieError::FieldOutOfRange {
            field: "timestamp option bits",
            value: 0x40
        })
    );
    for bits in 0..=TS_OPTION_MASK {
        let o = TsOptions::decode(bits).unwrap();
        assert!(o.wscale.is_none_or(|w| w <= MAX_WSCALE));
        assert_eq!(u32::from(o.encode().unwrap()), bits, "decode/encode are inverse");
    }
    let too_big = TsOptions {
        wscale: Some(15),
        ..TsOptions::default()
    };
    assert!(too_big.encode().is_err());
    assert!(too_big.stamp(0).is_err());
    let tuple = v4_tuple();
    assert_eq!(
        tuple.mss_of(4),
        Err(CookieError::FieldOutOfRange {
            field: "MSS index",
            value: 4
        })
    );
    let jar = jar_at(3);
    assert!(jar
        .make(
            &tuple,
            0,
            CookieData {
                mss_index: 4,
                ts: None
            }
        )
        .is_err());
    assert!(jar
        .make(
            &tuple,
            0,
            CookieData {
                mss_index: 0,
                ts: Some(too_big)
            }
        )
        .is_err());
    // A MAC computed over an out-of-range MSS index (4 encodes as 0 in the cookie) does not
    // verify as index 0: the index in the MAC is the one the cookie shows.
    let forged = jar.forge(0, 3, &tuple, 0, 4, 0);
    assert!(jar.check(&tuple, 0, forged, None).is_err());
    assert!(CookieSchedule {
        period_secs: 3,
        ..CookieSchedule::default()
    }
    .validate()
    .is_err());
    assert!(CookieSchedule {
        rotation_ticks: 0,
        ..CookieSchedule::default()
    }
    .validate()
    .is_err());
    let err = CookieSchedule {
        clock_skew_secs: 32,
        ..CookieSchedule::default()
    }
    .validate()
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "cookie schedule: clock_skew_secs (must be below half the period) is 32"
    );
    assert_eq!(format!("{MASTER:?}"), "MasterSecret(..)");
    assert_ne!(MasterSecret::random(), MasterSecret::random());
}

/// SplitMix64: a tiny deterministic generator for the statistical tests.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Smallest `k` with P(X >= k) <= `p` for X ~ Binomial(n, q), by summing the lower terms.
fn binomial_upper_bound(n: u64, q: f64, p: f64) -> u64 {
    let mut term = (1.0 - q).powf(n as f64); // P(X = 0)
    let mut cdf = term;
    let mut k = 0u64;
    while 1.0 - cdf > p {
        term *= (n - k) as f64 / (k + 1) as f64 * q / (1.0 - q);
        cdf += term;
        k += 1;
    }
    k + 1
}

/// 10^8 random ACKs against one jar: the number accepted must fit a forgery probability of
/// 2^-29 per ACK (one counter tried per ACK). Runs on two threads; about 2 s in release.
#[test]
fn forged_ack_acceptance_rate_is_at_most_2_pow_minus_29() {
    const TOTAL: u64 = 100_000_000;
    const THREADS: u64 = 2;
    let jar = jar_at(0x1234_5678);
    let accepted = AtomicU64::new(0);
    let start = std::time::Instant::now();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let jar = jar.clone();
            let accepted = &accepted;
            s.spawn(move || {
                let mut rng = SplitMix(0xC0FFEE + t);
                let mut ok = 0;
                for _ in 0..TOTAL / THREADS {
                    let a = rng.next();
                    let b = rng.next();
                    let tuple = CookieTuple {
                        addrs: CookieAddrs::V4 {
                            client: (a as u32).to_be_bytes(),
                            server: [198, 19, 0, 80],
                        },
                        client_port: (a >> 32) as u16,
                        server_port: 443,
                    };
                    // Half the forged ACKs carry a timestamp echo.
                    let tsecr = (b >> 63 == 1).then_some((b >> 32) as u32);
                    if jar.check(&tuple, (a >> 48) as u32, b as u32, tsecr).is_ok() {
                        ok += 1;
                    }
                }
                accepted.fetch_add(ok, Ordering::Relaxed);
            });
        }
    });
    let accepted = accepted.into_inner();
    let q = 2f64.powi(-(MAC_BITS as i32));
    // A bound the count exceeds with probability below 10^-6 if each ACK passes with 2^-29.
    let bound = binomial_upper_bound(TOTAL, q, 1e-6);
    println!(
        "forged ACKs: {accepted} of {TOTAL} accepted (rate {:.3e}, 2^-29 = {:.3e}, expected {:.3}, bound {bound}) in {:?}",
        accepted as f64 / TOTAL as f64,
        q,
        TOTAL as f64 * q,
        start.elapsed()
    );
    assert!(accepted < bound, "{accepted} forged ACKs accepted, bound {bound}");
}

#[test]
fn binomial_bound_is_sane() {
    // Mean 0.186: P(X >= 6) is about 4e-8, P(X >= 5) about 1.7e-6.
    assert_eq!(binomial_upper_bound(100_000_000, 2f64.powi(-29), 1e-6), 6);
    assert_eq!(binomial_upper_bound(1000, 0.5, 0.5), 501);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A valid cookie with any one bit flipped, any option bit of the echo flipped, or any
    /// field of the tuple or the ISN changed, is rejected.
    #[test]
    fn any_single_change_is_rejected(
        v6 in any::<bool>(),
        addr in any::<[u8; 16]>(),
        ports in any::<(u16, u16)>(),
        isn in any::<u32>(),
        counter in any::<u32>(),
        mss_index in 0u8..4,
        ts in proptest::option::of((proptest::option::of(0u8..=14), any::<bool>(), any::<bool>())),
        clock in any::<u32>(),
        field in 0usize..5,
        delta in 1u32..,
    ) {
        let addrs = if v6 {
            let mut server = addr;
            server[0] ^= 0x80;
            CookieAddrs::V6 { client: addr, server }
        } else {
            let client = [addr[0], addr[1], addr[2], addr[3]];
            CookieAddrs::V4 { client, server: [addr[4], addr[5], addr[6], addr[7]] }
        };
        let tuple = CookieTuple { addrs, client_port: ports.0, server_port: ports.1 };
        let ts = ts.map(|(wscale, sack_perm, ecn)| TsOptions { wscale, sack_perm, ecn });
        let jar = jar_at(counter);
        let cookie = jar.make(&tuple, isn, CookieData { mss_index, ts }).unwrap();
        let tsecr = echo(ts, clock);
        prop_assert!(jar.check(&tuple, isn, cookie, tsecr).is_ok());
        for bit in 0..32 {
            prop_assert!(jar.check(&tuple, isn, cookie ^ (1 << bit), tsecr).is_err(), "cookie bit {}", bit);
        }
        if let Some(tsecr) = tsecr {
            for bit in 0..TS_OPTION_BITS {
                prop_assert!(jar.check(&tuple, isn, cookie, Some(tsecr ^ (1 << bit))).is_err(), "echo bit {}", bit);
            }
        }
        let mut changed = tuple;
        match field {
            0 => changed.client_port = changed.client_port.wrapping_add(delta as u16 | 1),
            1 => changed.server_port = changed.server_port.wrapping_add(delta as u16 | 1),
            2 => match &mut changed.addrs {
                CookieAddrs::V4 { client, .. } => client[(delta % 4) as usize] ^= 1 << (delta % 8),
                CookieAddrs::V6 { client, .. } => client[(delta % 16) as usize] ^= 1 << (delta % 8),
            },
            3 => match &mut changed.addrs {
                CookieAddrs::V4 { server, .. } => server[(delta % 4) as usize] ^= 1 << (delta % 8),
                CookieAddrs::V6 { server, .. } => server[(delta % 16) as usize] ^= 1 << (delta % 8),
            },
            _ => {}
        }
        if field < 4 {
            prop_assert!(jar.check(&changed, isn, cookie, tsecr).is_err(), "tuple field {}", field);
        } else {
            prop_assert!(jar.check(&tuple, isn.wrapping_add(delta), cookie, tsecr).is_err(), "ISN");
        }
    }
}

proptest! {
    /// The word-wise SipHash-2-4 of the MAC (`levee_packet::siphash`) is SipHash-2-4 (cookies
    /// of boxes running either implementation check against each other).
    #[test]
    fn sip24_matches_siphasher(k0 in any::<u64>(), k1 in any::<u64>(), m22 in any::<[u8; 22]>(), m46 in prop::collection::vec(any::<u8>(), 46)) {
        let key = SipHasher24::new_with_keys(k0, k1);
        prop_assert_eq!(Sip24::hash((k0, k1), &m22), key.hash(&m22));
        let m46: [u8; 46] = m46.try_into().unwrap();
        prop_assert_eq!(Sip24::hash((k0, k1), &m46), key.hash(&m46));
        let m16 = [m22[0]; 16];
        prop_assert_eq!(Sip24::hash((k0, k1), &m16), key.hash(&m16));
    }
}
