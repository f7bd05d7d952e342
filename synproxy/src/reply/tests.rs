use levee_packet::parse::{L3Info, L4Info};
use levee_packet::tcp::TcpFlags;

use super::*;
use crate::cookie::{TsOptions, MSS_TABLE_V4, MSS_TABLE_V6};
use crate::testutil::*;
use crate::{Config, RateLimit};

/// What the SYN-ACK must look like for a SYN with `o` under `rule` (ECN enabled or not).
struct Expect {
    ts: Option<TsOptions>,
    mss: u16,
    wscale: Option<u8>,
}

fn expect(flow: &Flow, o: &SynOpts, rule: &SynRule, ecn: bool) -> Expect {
    let rule_mss = match (rule.mss, flow.is_v6()) {
        (0, false) => 1460,
        (0, true) => 1440,
        (m, _) => m,
    };
    let ts = (rule.timestamps && o.tsval.is_some()).then(|| TsOptions {
        wscale: o.wscale.filter(|_| rule.wscale.is_some()).map(|w| w.min(14)),
        sack_perm: o.sack && rule.sack_perm,
        ecn: o.ecn && ecn,
    });
    Expect {
        ts,
        mss: o.mss.map_or(rule_mss, |m| m.min(rule_mss)),
        wscale: ts.and_then(|t| t.wscale).and(rule.wscale),
    }
}

fn check_synack(proxy: &SynProxy, flow: &Flow, isn: u32, o: &SynOpts, rule: &SynRule, frame: &[u8]) {
    let p = parse(frame);
    let e = expect(flow, o, rule, proxy.config().ecn);
    assert_eq!(p.dst_mac, CLIENT_MAC, "back to the client's MAC");
    assert_eq!(p.src_mac, SERVER_MAC);
    let vlans: Vec<u16> = flow.vlans.iter().flatten().copied().collect();
    assert_eq!(p.info.vlans(), &vlans[..], "VLAN tags kept");
    assert_eq!((p.src, p.dst), (flow.server, flow.client));
    assert_eq!(p.ttl, 64);
    let t = &p.tcp;
    assert_eq!((t.src_port, t.dst_port), (flow.server_port, flow.client_port));
    let mut flags = TcpFlags::SYN | TcpFlags::ACK;
    if e.ts.is_some_and(|t| t.ecn) {
        flags |= TcpFlags::ECE;
    }
    assert_eq!(t.flags, flags);
    assert_eq!(t.ack_number.0, isn.wrapping_add(1));
    assert_eq!(t.window_len, 0);
    assert_eq!(t.urgent_at, 0);
    assert_eq!(t.max_seg_size, Some(e.mss));
    assert_eq!(t.window_scale, e.wscale);
    assert_eq!(t.sack_permitted, e.ts.is_some_and(|t| t.sack_perm));
    assert!(t.sack_blocks.is_empty());
    assert!(t.payload.is_empty());
    match (e.ts, t.timestamps) {
        (None, None) => {}
        (Some(opts), Some(ts)) => {
            assert_eq!(ts.tsecr, o.tsval.unwrap(), "echoes the client's TSval");
            assert_eq!(
                TsOptions::decode(ts.tsval & 0x3f),
                Ok(opts),
                "options in the TSval"
            );
        }
        other => panic!("timestamps {other:?}"),
    }
    // The sequence number is a cookie that checks out with what the ACK will echo.
    let tuple = flow.cookie_tuple();
    let decoded = proxy
        .jar()
        .check(&tuple, isn, t.seq_number.0, t.timestamps.map(|ts| ts.tsval))
        .unwrap();
    let table = if flow.is_v6() { MSS_TABLE_V6 } else { MSS_TABLE_V4 };
    assert_eq!(decoded.mss, table[usize::from(tuple.mss_index(o.mss))]);
    assert_eq!(decoded.ts, e.ts);
    // Exactly as long as needed, or padded to the Ethernet minimum.
    let needed = flow.link_len() + if flow.is_v6() { 40 } else { 20 } + t.header_len();
    assert_eq!(frame.len(), needed.max(60));
}

#[test]
fn every_family_tagging_and_option_combination() {
    let rules = [
        SynRule::default(),
        SynRule {
            mss: 0,
            wscale: None,
            timestamps: true,
            sack_perm: false,
        },
        SynRule {
            mss: 1400,
            wscale: Some(14),
            timestamps: false,
            sack_perm: true,
        },
    ];
    let mut count = 0;
    for ecn in [false, true] {
        let mut proxy = proxy_with(Config {
            ecn,
            ..Config::default()
        });
        for flow in Flow::all() {
            for o in SynOpts::combinations() {
                for rule in &rules {
                    let isn = 0x8000_0000 ^ count;
                    let syn = flow.frame(true, &flow.syn(isn, o));
                    let mut buf = syn.clone();
                    buf.resize(256, 0xAA);
                    let info = info(&syn);
                    let verdict = proxy.answer_syn(&mut buf, syn.len(), &info, rule);
                    let SynVerdict::Reply { len } = verdict else {
                        panic!("{flow:?} {o:?} {rule:?}: {verdict:?}");
                    };
                    check_synack(&proxy, &flow, isn, &o, rule, &buf[..len]);
                    count += 1;
                }
            }
        }
    }
    assert_eq!(count, 2 * 6 * 200 * 3);
}

#[test]
fn syn_without_options_fits_its_own_frame() {
    // trafgen's 54-byte SYN, padded to 60 on the wire: the SYN-ACK (MSS only) is 58 + padding.
    let flow = Flow::v4();
    let syn = flow.frame(true, &flow.syn(1, SynOpts::default()));
    assert_eq!(syn.len(), 60);
    let mut buf = syn.clone();
    let mut proxy = proxy();
    let v = proxy.answer_syn(&mut buf, 60, &info(&syn), &SynRule::default());
    assert_eq!(v, SynVerdict::Reply { len: 60 });
    check_synack(&proxy, &flow, 1, &SynOpts::default(), &SynRule::default(), &buf);
    assert_eq!(&buf[58..], &[0, 0], "padding zeroed");
}

#[test]
fn growth_needs_tailroom() {
    // Only the timestamp option (12 bytes): the SYN-ACK adds MSS and grows by 4.
    let flow = Flow::v4();
    let o = SynOpts {
        tsval: Some(5),
        ..SynOpts::default()
    };
    let syn = flow.frame(true, &flow.syn(1, o));
    assert_eq!(syn.len(), 66);
    let mut proxy = proxy();
    let mut exact = syn.clone();
    let v = proxy.answer_syn(&mut exact, syn.len(), &info(&syn), &SynRule::default());
    assert_eq!(v, SynVerdict::Drop(DropReason::BufferTooShort));
    assert_eq!(exact, syn, "nothing written when it does not fit");
    let mut roomy = syn.clone();
    roomy.resize(128, 0);
    let v = proxy.answer_syn(&mut roomy, syn.len(), &info(&syn), &SynRule::default());
    assert_eq!(v, SynVerdict::Reply { len: 70 });
    check_synack(&proxy, &flow, 1, &o, &SynRule::default(), &roomy[..70]);
}

#[test]
fn shrinks_when_the_syn_had_more() {
    // IPv4 options and a 40-byte TCP option area (Linux layout + unknown padding options):
    // the SYN-ACK drops both and is shorter.
    let flow = Flow::v4().with_vlans(1);
    let mut syn_repr = flow.syn(77, SynOpts::linux());
    syn_repr.sack_blocks = levee_packet::tcp::SackBlocks::new();
    let syn = flow.frame_with(true, &syn_repr, 50, &[1, 1, 1, 0]);
    let mut buf = syn.clone();
    let mut proxy = proxy();
    let v = proxy.answer_syn(&mut buf, syn.len(), &info(&syn), &SynRule::default());
    let SynVerdict::Reply { len } = v else {
        panic!("{v:?}")
    };
    assert_eq!(len, syn.len() - 4);
    check_synack(
        &proxy,
        &flow,
        77,
        &SynOpts::linux(),
        &SynRule::default(),
        &buf[..len],
    );
}

#[test]
fn ineligible_and_malformed_syns_are_dropped() {
    let flow = Flow::v6().with_vlans(2);
    let mut proxy = proxy();
    for flags in [
        TcpFlags::SYN | TcpFlags::ACK,
        TcpFlags::SYN | TcpFlags::RST,
        TcpFlags::SYN | TcpFlags::FIN,
        TcpFlags::ACK,
        TcpFlags::RST,
    ] {
        let mut r = flow.syn(1, SynOpts::linux());
        r.flags = flags;
        let mut frame = flow.frame(true, &r);
        let info = info(&frame);
        let len = frame.len();
        assert_eq!(
            proxy.answer_syn(&mut frame, len, &info, &SynRule::default()),
            SynVerdict::Drop(DropReason::NotEligible),
            "{flags}"
        );
    }
    assert_eq!(proxy.counters().syn_received, 0);
    // A corrupted TCP checksum.
    let mut frame = flow.frame(true, &flow.syn(1, SynOpts::linux()));
    let last = frame.len() - 1;
    frame[last] ^= 1;
    let info6 = info(&frame);
    let len = frame.len();
    assert_eq!(
        proxy.answer_syn(&mut frame.clone(), len, &info6, &SynRule::default()),
        SynVerdict::Drop(DropReason::BadChecksum)
    );
    // ... answered when the NIC is trusted.
    let mut trusting = proxy_with(Config {
        verify_checksums: false,
        ..Config::default()
    });
    assert!(matches!(
        trusting.answer_syn(&mut frame, len, &info6, &SynRule::default()),
        SynVerdict::Reply { .. }
    ));
    // A corrupted IPv4 header checksum.
    let flow4 = Flow::v4();
    let mut frame = flow4.frame(true, &flow4.syn(1, SynOpts::linux()));
    frame[14 + 10] ^= 0x10;
    let info4 = info(&frame);
    let len = frame.len();
    assert_eq!(
        proxy.answer_syn(&mut frame, len, &info4, &SynRule::default()),
        SynVerdict::Drop(DropReason::BadChecksum)
    );
    // An info that does not describe the buffer (not TCP, or offsets past its end).
    let mut other = info4;
    if let L3Info::Ipv4(ip) = &mut other.l3 {
        ip.l4 = L4Info::None;
    }
    assert_eq!(
        proxy.answer_syn(&mut frame, len, &other, &SynRule::default()),
        SynVerdict::Drop(DropReason::Malformed)
    );
    assert_eq!(
        proxy.answer_syn(&mut frame, 40, &info4, &SynRule::default()),
        SynVerdict::Drop(DropReason::Malformed)
    );
    let c = proxy.counters();
    assert_eq!(c.syn_received, 2);
    assert_eq!(c.malformed, 4);
    assert_eq!(c.synack_sent, 0);
}

#[test]
fn replies_are_rate_limited() {
    let mut proxy = proxy_with(Config {
        reply_limit: Some(RateLimit {
            rate_per_sec: 10,
            burst: 3,
        }),
        ..Config::default()
    });
    let flow = Flow::v4();
    let syn = flow.frame(true, &flow.syn(9, SynOpts::linux()));
    let info = info(&syn);
    let mut answered = 0;
    for _ in 0..10 {
        let mut buf = syn.clone();
        match proxy.answer_syn(&mut buf, syn.len(), &info, &SynRule::default()) {
            SynVerdict::Reply { .. } => answered += 1,
            SynVerdict::Drop(r) => assert_eq!(r, DropReason::RateLimited),
        }
    }
    assert_eq!(answered, 3);
    // 100 ms later: one more token.
    proxy.set_now(NOW_NS + 100_000_000);
    let mut buf = syn.clone();
    assert!(matches!(
        proxy.answer_syn(&mut buf, syn.len(), &info, &SynRule::default()),
        SynVerdict::Reply { .. }
    ));
    let c = proxy.counters();
    assert_eq!((c.syn_received, c.synack_sent, c.reply_ratelimited), (11, 4, 7));
}

#[test]
fn the_fast_writer_matches_the_general_builders_byte_for_byte() {
    use crate::frame::{emit, IpOut};
    use levee_packet::tcp::Timestamps;
    let mut n = 0;
    for flow in [Flow::v4(), Flow::v6()] {
        let addrs = match (flow.server, flow.client) {
            (std::net::IpAddr::V4(src), std::net::IpAddr::V4(dst)) => crate::frame::Addrs::V4 { src, dst },
            (std::net::IpAddr::V6(src), std::net::IpAddr::V6(dst)) => crate::frame::Addrs::V6 { src, dst },
            _ => unreachable!(),
        };
        for ece in [false, true] {
            for wscale in [None, Some(0), Some(14)] {
                for sack_perm in [false, true] {
                    for ts in [
                        None,
                        Some(Timestamps {
                            tsval: 0x1234_5678,
                            tsecr: 0x9abc_def0,
                        }),
                    ] {
                        for mss in [536, 1460, 8940] {
                            let s = SynAck {
                                addrs,
                                ttl: 61,
                                src_port: 443,
                                dst_port: 40000,
                                seq: 0xdead_beef,
                                ack: 0x0102_0304,
                                ece,
                                mss,
                                wscale,
                                sack_perm,
                                ts,
                            };
                            let mut fast = vec![0x77u8; 128];
                            let mut reference = fast.clone();
                            let a = s.write(&mut fast, 18).unwrap();
                            let ip = IpOut {
                                addrs,
                                ttl: 61,
                                dscp: 0,
                                flow_label: 0,
                            };
                            let b = emit(&mut reference, 18, &ip, &s.tcp_repr()).unwrap();
                            assert_eq!(a, b);
                            assert_eq!(fast, reference, "{s:?}");
                            n += 1;
                        }
                    }
                }
            }
        }
    }
    assert_eq!(n, 2 * 2 * 3 * 2 * 2 * 3);
}

mod plain_v4_path {
    //! IPv4 SYNs without IP options take a shorter path to their fields than every other
    //! shape ([`Syn::of_plain_v4`]). The same SYN with a 4-byte IP option goes the general way
    //! ([`Segment::locate`]); since the SYN-ACK's IP header is written fresh either way, both
    //! must give the same verdict, the same bytes and the same counters, whatever is wrong
    //! with the SYN.
    use super::*;
    use levee_packet::parse::parse_frame;
    use proptest::prelude::*;

    /// How a SYN is damaged.
    #[derive(Debug, Clone, Copy)]
    enum Damage {
        None,
        TcpChecksum,
        IpChecksum,
        Truncated(usize),
        DataOffset(u8),
    }

    fn damage() -> impl Strategy<Value = Damage> {
        prop_oneof![
            4 => Just(Damage::None),
            1 => Just(Damage::TcpChecksum),
            1 => Just(Damage::IpChecksum),
            1 => (1usize..30).prop_map(Damage::Truncated),
            1 => (0u8..16).prop_map(Damage::DataOffset),
        ]
    }

    /// `frame` (IPv4 at `l3`, header `ihl` bytes) damaged; the length to pass.
    fn damaged(mut frame: Vec<u8>, l3: usize, ihl: usize, d: Damage) -> (Vec<u8>, usize) {
        let len = frame.len();
        match d {
            Damage::None => (frame, len),
            Damage::TcpChecksum => {
                frame[l3 + ihl + 16] ^= 0x01;
                (frame, len)
            }
            Damage::IpChecksum => {
                frame[l3 + 10] ^= 0x10;
                (frame, len)
            }
            // The frame handed over shorter than its IP length says (by `n` bytes from the
            // end of the IP packet, not of the Ethernet padding).
            Damage::Truncated(n) => {
                let ip_end = l3 + usize::from(u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]));
                (frame, ip_end - n)
            }
            Damage::DataOffset(off) => {
                let at = l3 + ihl + 12;
                frame[at] = (off << 4) | (frame[at] & 0x0F);
                (frame, len)
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]
        #[test]
        fn plain_and_optioned_ipv4_syns_get_the_same_answer(
            vlans in 0usize..3,
            opts in 0usize..SynOpts::combinations().len(),
            flags in any::<u8>(),
            isn in any::<u32>(),
            d in damage(),
            verify in any::<bool>(),
            rule_ts in any::<bool>(),
        ) {
            let flow = Flow::v4().with_vlans(vlans);
            let mut r = flow.syn(isn, SynOpts::combinations()[opts]);
            // Mostly SYNs; sometimes other flag mixes (ineligible).
            if flags & 0x80 == 0 {
                r.flags = TcpFlags::from_bits(flags & 0x3F);
            }
            let rule = SynRule { timestamps: rule_ts, ..SynRule::default() };
            let l3 = flow.link_len();
            let config = Config { verify_checksums: verify, ..Config::default() };
            let (mut pa, mut pb) = (proxy_with(config.clone()), proxy_with(config));
            let (plain, optioned) = (flow.frame_with(true, &r, 64, &[]), flow.frame_with(true, &r, 64, &[1, 1, 1, 0]));
            // Parsed before the damage: the proxy must not rely on the parser having refused
            // what it refuses itself (its contract allows an info that does not match the
            // buffer).
            let (ia, ib) = (parse_frame(&plain), parse_frame(&optioned));
            let (Ok(ia), Ok(ib)) = (ia, ib) else {
                return Err(TestCaseError::fail("undamaged SYNs parse"));
            };
            let (plain, la) = damaged(plain, l3, 20, d);
            let (optioned, lb) = damaged(optioned, l3, 24, d);
            let (mut ba, mut bb) = (plain.clone(), optioned.clone());
            ba.resize(256, 0xAA);
            bb.resize(256, 0xAA);
            let va = pa.answer_syn(&mut ba, la, &ia, &rule);
            let vb = pb.answer_syn(&mut bb, lb, &ib, &rule);
            prop_assert_eq!(va, vb);
            if let SynVerdict::Reply { len } = va {
                prop_assert_eq!(&ba[..len], &bb[..len]);
            }
            prop_assert_eq!(pa.counters(), pb.counters());
        }
    }
}
