use levee_packet::tcp::TcpFlags;

use crate::cookie::{MSS_TABLE_V4, MSS_TABLE_V6};
use crate::testutil::*;
use crate::translate::{Phase, Translation};
use crate::{AckVerdict, Config, DropReason, SynRule};

fn client_opts() -> Vec<SynOpts> {
    // Fewer than SynOpts::combinations, still every option on and off.
    let mut out = Vec::new();
    for mss in [None, Some(1460)] {
        for wscale in [None, Some(0), Some(9), Some(14)] {
            for sack in [false, true] {
                for tsval in [None, Some(0x0102_0304)] {
                    for ecn in [false, true] {
                        out.push(SynOpts {
                            mss,
                            wscale,
                            sack,
                            tsval,
                            ecn,
                        });
                    }
                }
            }
        }
    }
    out
}

#[test]
fn a_valid_cookie_ack_becomes_the_servers_syn() {
    let mut n = 0u32;
    for ecn in [false, true] {
        let mut proxy = proxy_with(Config {
            ecn,
            ..Config::default()
        });
        for flow in Flow::all() {
            for o in client_opts() {
                n += 1;
                let isn = 0xffff_fff0u32.wrapping_add(n); // wraps for some
                let mut hs = Handshake::syn(&mut proxy, flow, o, SynRule::default(), isn);
                let syn = hs.open(&mut proxy);
                let p = parse(&syn);
                // Same direction and link header as the ACK: client MAC to server MAC, tags kept.
                assert_eq!((p.src_mac, p.dst_mac), (CLIENT_MAC, SERVER_MAC));
                let vlans: Vec<u16> = flow.vlans.iter().flatten().copied().collect();
                assert_eq!(p.info.vlans(), &vlans[..]);
                assert_eq!(
                    (p.src, p.dst),
                    (flow.client, flow.server),
                    "spoofed as the client"
                );
                assert_eq!(p.ttl, 64, "the client's TTL");
                let t = &p.tcp;
                assert_eq!((t.src_port, t.dst_port), (flow.client_port, flow.server_port));
                assert_eq!(t.seq_number.0, isn, "the client's ISN");
                assert_eq!(t.ack_number.0, 0);
                let agreed_ts = o.tsval.is_some();
                let agreed_ecn = agreed_ts && ecn && o.ecn;
                let mut flags = TcpFlags::SYN;
                if agreed_ecn {
                    flags |= TcpFlags::ECE | TcpFlags::CWR;
                }
                assert_eq!(t.flags, flags, "{o:?}");
                let table = if flow.is_v6() { MSS_TABLE_V6 } else { MSS_TABLE_V4 };
                let mss_index = flow.cookie_tuple().mss_index(o.mss);
                assert_eq!(t.max_seg_size, Some(table[usize::from(mss_index)]));
                let wscale = o.wscale.filter(|_| agreed_ts).map(|w| w.min(14));
                assert_eq!(t.window_scale, wscale);
                assert_eq!(t.sack_permitted, agreed_ts && o.sack);
                // The ACK's window 502, in bytes for the SYN.
                let window = wscale.map_or(502, |w| (502u64 << w).min(65535) as u16);
                assert_eq!(t.window_len, window);
                assert_eq!(
                    t.timestamps.map(|ts| (ts.tsval, ts.tsecr)),
                    agreed_ts.then_some((0x0102_0400, 0))
                );
                let conn = hs.conn.unwrap();
                let Phase::AwaitingServer(pending) = conn.phase() else {
                    panic!("{conn:?}");
                };
                assert_eq!(pending.cookie, hs.cookie);
                assert_eq!(pending.client_isn, isn);
                assert_eq!(pending.our_tsval, hs.synack_ts.unwrap_or(0));
                assert_eq!(pending.client_wscale(), wscale);
                assert_eq!(pending.advertised_wscale(), wscale.map(|_| 7));
                assert_eq!(pending.sack_perm(), agreed_ts && o.sack);
                assert!(!conn.is_open() && !conn.is_closed());
            }
        }
        let c = proxy.counters();
        assert_eq!(c.cookie_valid, c.synack_sent);
        assert_eq!((c.cookie_invalid, c.ack_flood_dropped), (0, 0));
    }
}

#[test]
fn into_a_separate_buffer_leaves_the_ack_alone() {
    let mut proxy = proxy();
    for flow in Flow::all() {
        let mut hs = Handshake::syn(&mut proxy, flow, SynOpts::linux(), SynRule::default(), 42);
        let ack = hs.ack();
        let mut out = vec![0u8; 128];
        let v = proxy.client_ack_into(&ack, &info(&ack), &mut out, &SynRule::default());
        let AckVerdict::Open { conn, len } = v else {
            panic!("{v:?}")
        };
        assert_eq!(ack, hs.ack(), "untouched");
        let in_place = hs.open(&mut proxy);
        assert_eq!(&out[..len], &in_place[..], "same SYN either way");
        assert_eq!(Some(conn), hs.conn);
        // Too small an output buffer.
        let mut small = vec![0u8; len - 1];
        assert_eq!(
            proxy.client_ack_into(&ack, &info(&ack), &mut small, &SynRule::default()),
            AckVerdict::Drop(DropReason::BufferTooShort)
        );
    }
}

#[test]
fn invalid_acks_are_dropped_at_the_cost_of_one_hash() {
    let mut proxy = proxy();
    // Empty ACKs may get a second check as zero-window probes, 256 per second per worker
    // (see `a_zero_window_probe_recovers_a_lost_cookie_ack`); spend that budget first, so what
    // follows is what every ACK of a flood costs.
    {
        let hs = Handshake::syn(&mut proxy, Flow::v4(), SynOpts::linux(), SynRule::default(), 5);
        let f = hs.client_segment(TcpFlags::ACK, 0, 9, 0, 502, &[]);
        for _ in 0..256 {
            let mut buf = f.clone();
            let _ = proxy.client_ack(&mut buf, f.len(), &info(&f), &SynRule::default());
        }
        proxy.reset_counters_for_test();
    }
    let flow = Flow::v4();
    let hs = Handshake::syn(&mut proxy, flow, SynOpts::linux(), SynRule::default(), 1000);
    let rule = SynRule::default();
    let drop = |proxy: &mut crate::SynProxy, frame: &[u8]| {
        let mut buf = frame.to_vec();
        let before = proxy.jar().macs_computed();
        let v = proxy.client_ack(&mut buf, frame.len(), &info(frame), &rule);
        assert_eq!(&buf[..], frame, "a dropped ACK is not written");
        (v, proxy.jar().macs_computed() - before)
    };
    // Wrong cookie.
    let mut wrong = hs.clone();
    wrong.cookie ^= 0x100;
    assert_eq!(
        drop(&mut proxy, &wrong.ack()),
        (AckVerdict::Drop(DropReason::CookieInvalid), 1)
    );
    // Wrong ISN (sequence number).
    let bad_seq = hs.client_segment(TcpFlags::ACK, 2, 1, 0x0102_0400, 502, &[]);
    assert_eq!(
        drop(&mut proxy, &bad_seq),
        (AckVerdict::Drop(DropReason::CookieInvalid), 1)
    );
    // Options bits in the echo altered: the SYN-ACK's TSval with wscale changed.
    let mut tampered = hs.clone();
    tampered.synack_ts = hs.synack_ts.map(|ts| ts ^ 0x3);
    assert_eq!(
        drop(&mut proxy, &tampered.ack()),
        (AckVerdict::Drop(DropReason::CookieInvalid), 1)
    );
    // Flags that cannot carry a cookie: no hash at all.
    for flags in [
        TcpFlags::SYN | TcpFlags::ACK,
        TcpFlags::RST | TcpFlags::ACK,
        TcpFlags::RST,
        TcpFlags::FIN,
    ] {
        let f = hs.client_segment(flags, 1, 1, 0, 502, &[]);
        assert_eq!(
            drop(&mut proxy, &f),
            (AckVerdict::Drop(DropReason::NotEligible), 0),
            "{flags}"
        );
    }
    // Bad checksum: no hash either.
    let mut corrupt = hs.ack();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x40;
    assert_eq!(
        drop(&mut proxy, &corrupt),
        (AckVerdict::Drop(DropReason::BadChecksum), 0)
    );
    // Expired: two periods later (a new second refills the probe budget, so this empty ACK
    // is also checked as a probe: two hashes, both refusing it).
    proxy.set_now(NOW_NS + 2 * 64 * 1_000_000_000);
    assert_eq!(
        drop(&mut proxy, &hs.ack()),
        (AckVerdict::Drop(DropReason::CookieInvalid), 2)
    );
    let c = proxy.counters();
    assert_eq!(c.cookie_invalid, 4);
    assert_eq!(c.ack_flood_dropped, 9);
    assert_eq!(c.cookie_valid, 0);
    // FIN|ACK and PSH|ACK with data are eligible (a lost ACK validated by the request).
    proxy.set_now(NOW_NS);
    for (flags, payload) in [
        (TcpFlags::FIN | TcpFlags::ACK, &b""[..]),
        (TcpFlags::PSH | TcpFlags::ACK, &b"GET / HTTP/1.1\r\n\r\n"[..]),
    ] {
        let f = hs.client_segment(flags, 1, 1, 0x0102_0400, 502, payload);
        let mut buf = f.clone();
        buf.resize(256, 0);
        assert!(matches!(
            proxy.client_ack(&mut buf, f.len(), &info(&f), &rule),
            AckVerdict::Open { .. }
        ));
    }
}

#[test]
fn the_servers_synack_completes_the_handshake() {
    let server_variants = [
        ServerOpts::default(),
        ServerOpts {
            wscale: None,
            ..ServerOpts::default()
        },
        ServerOpts {
            wscale: Some(2),
            tsval: None,
            sack: false,
            ..ServerOpts::default()
        },
        ServerOpts {
            wscale: Some(7),
            window: 100,
            ..ServerOpts::default()
        },
    ];
    let mut proxy = proxy();
    for flow in Flow::all() {
        for o in client_opts() {
            for so in server_variants {
                let rule = SynRule::default();
                let mut hs = Handshake::syn(&mut proxy, flow, o, rule, 0x5000);
                hs.open(&mut proxy);
                let server_isn = 0xfff0_0000;
                let (update, ack) = hs.establish(&mut proxy, server_isn, so);
                let client_ws = hs.adv_wscale.and(o.wscale.map(|w| w.min(14)));
                let client_ts = o.tsval.is_some();
                let ts_both = client_ts && so.tsval.is_some();
                let server_ws = so.wscale.filter(|_| client_ws.is_some());

                // ACK to the server: back out of the server's port, as the client.
                let a = parse(&ack);
                assert_eq!((a.src_mac, a.dst_mac), (CLIENT_MAC, SERVER_MAC));
                assert_eq!((a.src, a.dst), (flow.client, flow.server));
                assert_eq!(a.tcp.flags, TcpFlags::ACK);
                assert_eq!(a.tcp.seq_number.0, 0x5001);
                assert_eq!(a.tcp.ack_number.0, server_isn.wrapping_add(1));
                // The client's 502 in the server's view: unscaled when the server declined.
                let expect_win = match (client_ws, server_ws) {
                    (Some(c), None) => (502u64 << c).min(65535) as u16,
                    _ => 502,
                };
                assert_eq!(a.tcp.window_len, expect_win);
                assert_eq!(
                    a.tcp.timestamps.map(|t| (t.tsval, t.tsecr)),
                    ts_both.then(|| (0x0102_0400, so.tsval.unwrap()))
                );
                assert_eq!(a.tcp.max_seg_size, None);
                assert_eq!(a.tcp.window_scale, None);

                // Window update to the client, over the SYN-ACK: server MAC to client MAC.
                let u = parse(&update);
                assert_eq!((u.src_mac, u.dst_mac), (SERVER_MAC, CLIENT_MAC));
                let vlans: Vec<u16> = flow.vlans.iter().flatten().copied().collect();
                assert_eq!(u.info.vlans(), &vlans[..]);
                assert_eq!((u.src, u.dst), (flow.server, flow.client));
                assert_eq!(u.tcp.flags, TcpFlags::ACK);
                assert_eq!(u.tcp.seq_number.0, hs.cookie.wrapping_add(1));
                assert_eq!(u.tcp.ack_number.0, 0x5001);
                let expect_win = match client_ws {
                    Some(_) => so.window >> hs.adv_wscale.unwrap(),
                    None => so.window,
                };
                assert_eq!(u.tcp.window_len, expect_win);
                // TSecr: the server's echo of the client's TSval, or the client's own TSval
                // when the server does not use timestamps; the same value here.
                let expect_ts = client_ts.then(|| (hs.synack_ts.unwrap(), 0x0102_0400));
                assert_eq!(u.tcp.timestamps.map(|t| (t.tsval, t.tsecr)), expect_ts);

                let conn = hs.conn.unwrap();
                let Phase::Open(t) = *conn.phase() else {
                    panic!("{conn:?}")
                };
                assert_eq!(t.seq_off, hs.cookie.wrapping_sub(server_isn));
                assert_eq!(t.flags & Translation::TS != 0, ts_both);
                if ts_both {
                    assert_eq!(t.ts_off, so.tsval.unwrap().wrapping_sub(hs.synack_ts.unwrap()));
                }
                assert!(conn.is_open() && !conn.is_closed());
            }
        }
    }
    let c = proxy.counters();
    assert_eq!(c.handshakes_completed, 6 * 64 * 4);
}

#[test]
fn a_stray_synack_is_refused() {
    let mut proxy = proxy();
    let flow = Flow::v6();
    let mut hs = Handshake::syn(&mut proxy, flow, SynOpts::linux(), SynRule::default(), 7);
    hs.open(&mut proxy);
    // Acknowledges something else than our SYN.
    let mut other = hs.clone();
    other.client_isn = 99;
    let synack = other.server_synack(1, ServerOpts::default());
    let good_synack = hs.server_synack(1, ServerOpts::default());
    let mut buf = synack.clone();
    let mut to_server = vec![0u8; 256];
    let conn = hs.conn.as_mut().unwrap();
    let before = *conn;
    assert_eq!(
        proxy.server_segment(conn, &mut buf, synack.len(), &info(&synack), &mut to_server),
        crate::ServerVerdict::Drop(DropReason::Unexpected)
    );
    assert_eq!(*conn, before);
    // A to_server buffer too small leaves everything as it was.
    let synack = good_synack;
    let mut buf = synack.clone();
    let mut tiny = [0u8; 20];
    assert_eq!(
        proxy.server_segment(conn, &mut buf, synack.len(), &info(&synack), &mut tiny),
        crate::ServerVerdict::Drop(DropReason::BufferTooShort)
    );
    assert_eq!(buf, synack);
    assert_eq!(*conn, before);
}

#[test]
fn an_optionless_synack_needs_tailroom_for_the_window_update() {
    use levee_packet::tcp::{SeqNum, TcpRepr};
    let mut proxy = proxy();
    let flow = Flow::v4();
    let mut hs = Handshake::syn(&mut proxy, flow, SynOpts::linux(), SynRule::default(), 40);
    hs.open(&mut proxy);
    let bare = TcpRepr::new(
        flow.server_port,
        flow.client_port,
        SeqNum(9),
        SeqNum(41),
        TcpFlags::SYN | TcpFlags::ACK,
        29200,
    );
    let synack = flow.frame(false, &bare);
    assert_eq!(synack.len(), 60);
    let conn = hs.conn.as_mut().unwrap();
    let mut exact = synack.clone();
    let mut to_server = vec![0u8; 128];
    assert_eq!(
        proxy.server_segment(conn, &mut exact, 60, &info(&synack), &mut to_server),
        crate::ServerVerdict::Drop(DropReason::BufferTooShort)
    );
    assert_eq!(exact, synack);
    let mut roomy = synack.clone();
    roomy.resize(128, 0);
    let v = proxy.server_segment(conn, &mut roomy, 60, &info(&synack), &mut to_server);
    let crate::ServerVerdict::Established {
        to_client,
        to_server_len,
    } = v
    else {
        panic!("{v:?}")
    };
    // The client uses timestamps with us: the update carries them although the server does not.
    let u = parse(&roomy[..to_client]);
    assert_eq!(to_client, 14 + 20 + 32);
    assert_eq!(
        u.tcp.timestamps.map(|t| (t.tsval, t.tsecr)),
        Some((hs.synack_ts.unwrap(), 0x0102_0400))
    );
    assert_eq!(u.tcp.window_len, 29200 >> 7);
    let a = parse(&to_server[..to_server_len]);
    assert_eq!(a.tcp.timestamps, None, "the server does not use them");
    assert_eq!(
        a.tcp.window_len,
        502 << 7,
        "unscaled: the server declined scaling"
    );
}

/// A lost cookie ACK: the client's zero-window probes (seq = ISN, no data) still open the
/// connection, with the client's real ISN; probes with data, FIN or a wrong cookie do not; and
/// second checks stop when the per-second budget is spent, so an ACK flood costs one hash.
#[test]
fn a_zero_window_probe_recovers_a_lost_cookie_ack() {
    for flow in Flow::all() {
        for o in [SynOpts::linux(), SynOpts::default()] {
            let mut proxy = proxy();
            proxy.set_now(1_000_000_000_000);
            let isn = 0x8000_0000u32;
            let hs = Handshake::syn(&mut proxy, flow, o, SynRule::default(), isn);
            let send = |proxy: &mut crate::SynProxy, frame: Vec<u8>| {
                let mut buf = frame.clone();
                buf.resize(256, 0);
                let v = proxy.client_ack(&mut buf, frame.len(), &info(&frame), &hs.rule);
                (v, buf)
            };
            // A probe with data, and one with FIN, are not probes.
            let (v, _) = send(&mut proxy, hs.client_segment(TcpFlags::ACK, 0, 1, 9, 502, b"x"));
            assert_eq!(v, AckVerdict::Drop(DropReason::CookieInvalid));
            let (v, _) = send(
                &mut proxy,
                hs.client_segment(TcpFlags::ACK | TcpFlags::FIN, 0, 1, 9, 502, &[]),
            );
            assert_eq!(v, AckVerdict::Drop(DropReason::CookieInvalid));
            // A probe for another cookie is refused.
            let (v, _) = send(&mut proxy, hs.client_segment(TcpFlags::ACK, 0, 2, 9, 502, &[]));
            assert_eq!(v, AckVerdict::Drop(DropReason::CookieInvalid));
            // The probe itself opens the connection: the server's SYN carries the real ISN.
            let (v, buf) = send(&mut proxy, hs.client_segment(TcpFlags::ACK, 0, 1, 9, 502, &[]));
            let AckVerdict::Open { len, .. } = v else {
                panic!("probe refused: {v:?}");
            };
            let p = parse(&buf[..len]);
            assert!(p.tcp.flags.contains(TcpFlags::SYN));
            assert_eq!(
                p.tcp.seq_number.0, isn,
                "the client's ISN, not the probe's seq - 1"
            );
            assert_eq!(proxy.counters().probe_recovered, 1);
            assert_eq!(proxy.counters().cookie_valid, 1);
            assert_eq!(proxy.counters().cookie_invalid, 3);
        }
    }
    // The budget: 256 second checks per second, then invalid probes cost one hash each.
    let mut proxy = proxy();
    proxy.set_now(5_000_000_000_000);
    let hs = Handshake::syn(&mut proxy, Flow::v4(), SynOpts::linux(), SynRule::default(), 77);
    for _ in 0..300 {
        let f = hs.client_segment(TcpFlags::ACK, 0, 5, 9, 502, &[]);
        let mut buf = f.clone();
        buf.resize(256, 0);
        let _ = proxy.client_ack(&mut buf, f.len(), &info(&f), &hs.rule);
    }
    assert_eq!(proxy.probe_left, 0, "the budget is spent");
    let f = hs.client_segment(TcpFlags::ACK, 0, 1, 9, 502, &[]);
    let mut buf = f.clone();
    buf.resize(256, 0);
    let v = proxy.client_ack(&mut buf, f.len(), &info(&f), &hs.rule);
    assert_eq!(
        v,
        AckVerdict::Drop(DropReason::CookieInvalid),
        "no second check without budget"
    );
    proxy.set_now(5_001_000_000_000);
    let v = proxy.client_ack(&mut buf, f.len(), &info(&f), &hs.rule);
    assert!(
        matches!(v, AckVerdict::Open { .. }),
        "a new second, a new budget: {v:?}"
    );
}
