use std::net::{Ipv4Addr, Ipv6Addr};

use levee_packet::checksum::PseudoHeader;
use levee_packet::tcp::{self, SackBlocks, SeqNum, TcpFlags, TcpOption, TcpRepr, Timestamps};
use proptest::prelude::*;

use super::*;
use crate::testutil::*;
use crate::{AckVerdict, ClientVerdict, ServerVerdict, SynRule};

const SERVER_ISN: u32 = 0x1000_0000;

/// A handshake completed with the usual options on both sides.
fn established(proxy: &mut SynProxy, flow: Flow, o: SynOpts, so: ServerOpts) -> Handshake {
    let mut hs = Handshake::syn(proxy, flow, o, SynRule::default(), 0xabcd_0000);
    hs.open(proxy);
    hs.establish(proxy, SERVER_ISN, so);
    hs
}

fn client_seg(proxy: &mut SynProxy, hs: &mut Handshake, frame: &[u8]) -> (ClientVerdict, Vec<u8>) {
    let mut buf = frame.to_vec();
    buf.resize(frame.len().max(256), 0);
    let conn = hs.conn.as_mut().unwrap();
    let v = proxy.client_segment(conn, &mut buf, frame.len(), &info(frame), &SynRule::default());
    let len = match v {
        ClientVerdict::Forward => frame.len(),
        ClientVerdict::SendSyn { len } | ClientVerdict::Reply { len } => len,
        ClientVerdict::Drop(_) => frame.len(),
    };
    buf.truncate(len);
    (v, buf)
}

fn server_seg(proxy: &mut SynProxy, hs: &mut Handshake, frame: &[u8]) -> (ServerVerdict, Vec<u8>) {
    let mut buf = frame.to_vec();
    let mut to_server = vec![0u8; 256];
    let conn = hs.conn.as_mut().unwrap();
    let v = proxy.server_segment(conn, &mut buf, frame.len(), &info(frame), &mut to_server);
    (v, buf)
}

/// A server segment: `rel_seq` from the server's ISN, `rel_ack` from the client's.
fn server_frame(
    hs: &Handshake,
    flags: TcpFlags,
    (rel_seq, rel_ack): (u32, u32),
    ts: Option<Timestamps>,
    sack: &[(u32, u32)],
    payload: &[u8],
    window: u16,
) -> Vec<u8> {
    let mut r = TcpRepr::new(
        hs.flow.server_port,
        hs.flow.client_port,
        SeqNum(SERVER_ISN.wrapping_add(rel_seq)),
        SeqNum(hs.client_isn.wrapping_add(rel_ack)),
        flags,
        window,
    );
    r.timestamps = ts;
    r.sack_blocks = SackBlocks::from_slice(sack).unwrap();
    r.payload = payload;
    hs.flow.frame(false, &r)
}

#[test]
fn data_segments_are_translated_both_ways_with_exact_checksums() {
    for flow in Flow::all() {
        for so in [
            ServerOpts::default(),
            ServerOpts {
                wscale: None,
                ..ServerOpts::default()
            },
            ServerOpts {
                wscale: Some(9),
                tsval: None,
                ..ServerOpts::default()
            },
        ] {
            let mut proxy = proxy();
            let mut hs = established(&mut proxy, flow, SynOpts::linux(), so);
            let Phase::Open(t) = *hs.conn.unwrap().phase() else {
                panic!()
            };
            let ts_both = so.tsval.is_some();
            let server_tsval = so.tsval.unwrap_or(0).wrapping_add(1000);

            // Server -> client: 100 bytes at server offset 1, SACKing client bytes 50..60.
            let payload = [0x5a; 100];
            let sack = [(0xabcd_0000 + 51, 0xabcd_0000 + 61)];
            let frame = server_frame(
                &hs,
                TcpFlags::PSH | TcpFlags::ACK,
                (1, 1),
                Some(Timestamps {
                    tsval: server_tsval,
                    tsecr: 0x0102_0500,
                }),
                &sack,
                &payload,
                1000,
            );
            let (v, out) = server_seg(&mut proxy, &mut hs, &frame);
            assert_eq!(v, ServerVerdict::Forward);
            assert_eq!(out.len(), frame.len());
            assert_tcp_checksum_exact(&out);
            let p = parse(&out);
            assert_eq!(
                p.tcp.seq_number.0,
                hs.cookie.wrapping_add(1),
                "server seq in the cookie's space"
            );
            assert_eq!(p.tcp.ack_number.0, hs.client_isn + 1, "client space: unchanged");
            assert_eq!(p.tcp.sack_blocks.as_slice(), &sack, "client space: unchanged");
            let tsval = if ts_both {
                hs.synack_ts.unwrap().wrapping_add(1000)
            } else {
                server_tsval
            };
            assert_eq!(
                p.tcp.timestamps.unwrap().tsval,
                tsval,
                "server clock in our SYN-ACK's base"
            );
            assert_eq!(p.tcp.timestamps.unwrap().tsecr, 0x0102_0500);
            assert_eq!(p.tcp.window_len, t.s2c.apply(1000));
            assert_eq!(p.tcp.payload, &payload[..]);

            // Client -> server: acks 100 bytes, SACKs server bytes 200..300 and 400..500.
            let mut r = TcpRepr::new(
                flow.client_port,
                flow.server_port,
                SeqNum(hs.client_isn + 1),
                SeqNum(hs.cookie.wrapping_add(101)),
                TcpFlags::ACK,
                300,
            );
            r.timestamps = Some(Timestamps {
                tsval: 0x0102_0600,
                tsecr: tsval,
            });
            let k = hs.cookie.wrapping_add(1);
            r.sack_blocks = SackBlocks::from_slice(&[(k + 200, k + 300), (k + 400, k + 500)]).unwrap();
            let frame = flow.frame(true, &r);
            let (v, out) = client_seg(&mut proxy, &mut hs, &frame);
            assert_eq!(v, ClientVerdict::Forward);
            assert_tcp_checksum_exact(&out);
            let p = parse(&out);
            let s = SERVER_ISN + 1;
            assert_eq!(p.tcp.seq_number.0, hs.client_isn + 1);
            assert_eq!(p.tcp.ack_number.0, s + 100);
            assert_eq!(
                p.tcp.sack_blocks.as_slice(),
                &[(s + 200, s + 300), (s + 400, s + 500)]
            );
            let tsecr = if ts_both { server_tsval } else { tsval };
            assert_eq!(
                p.tcp.timestamps.unwrap(),
                Timestamps {
                    tsval: 0x0102_0600,
                    tsecr
                }
            );
            assert_eq!(p.tcp.window_len, t.c2s.apply(300));
        }
    }
}

#[test]
fn window_scale_mismatches_are_rescaled() {
    let w = WinScale { from: 7, to: 0 };
    assert!(w.rescales());
    assert_eq!(w.apply(502), 64256);
    assert_eq!(w.apply(600), 65535, "clamped");
    assert_eq!(w.apply(100), 12800);
    assert_eq!(WinScale { from: 0, to: 7 }.apply(65160), 509);
    assert_eq!(WinScale { from: 9, to: 7 }.apply(100), 400);
    assert!(!WinScale { from: 3, to: 3 }.rescales());
    assert_eq!(WinScale { from: 3, to: 3 }.apply(7), 7);
    // Out-of-range shifts are clamped to 14 rather than overflowing.
    assert_eq!(WinScale { from: 200, to: 200 }.apply(9), 9);
    // Through the proxy: the server declined window scaling, the client was promised shift 7.
    let mut proxy = proxy();
    let so = ServerOpts {
        wscale: None,
        ..ServerOpts::default()
    };
    let mut hs = established(&mut proxy, Flow::v4(), SynOpts::linux(), so);
    let Phase::Open(t) = *hs.conn.unwrap().phase() else {
        panic!()
    };
    assert_eq!(t.s2c, WinScale { from: 0, to: 7 });
    assert_eq!(t.c2s, WinScale { from: 7, to: 0 });
    let frame = server_frame(&hs, TcpFlags::ACK, (1, 1), None, &[], &[], 64000);
    let (_, out) = server_seg(&mut proxy, &mut hs, &frame);
    assert_eq!(parse(&out).tcp.window_len, 500);
    assert_tcp_checksum_exact(&out);
}

#[test]
fn retransmitted_ack_or_early_data_resends_the_syn_without_a_second_state() {
    for flow in Flow::all() {
        let mut proxy = proxy();
        let mut hs = Handshake::syn(&mut proxy, flow, SynOpts::linux(), SynRule::default(), 500);
        let first_syn = hs.open(&mut proxy);
        let conn = hs.conn.unwrap();
        // The same ACK again.
        let (v, syn) = {
            let ack = hs.ack();
            client_seg(&mut proxy, &mut hs, &ack)
        };
        assert!(matches!(v, ClientVerdict::SendSyn { .. }), "{v:?}");
        assert_eq!(syn, first_syn);
        assert_eq!(hs.conn.unwrap(), conn, "one state");
        // The request right behind it, before the server answered: SYN again, data dropped;
        // the client retransmits it after the handshake.
        let get = hs.client_segment(
            TcpFlags::PSH | TcpFlags::ACK,
            1,
            1,
            0x0102_0480,
            502,
            b"GET / HTTP/1.1\r\n\r\n",
        );
        let (v, syn) = client_seg(&mut proxy, &mut hs, &get);
        assert!(matches!(v, ClientVerdict::SendSyn { .. }), "{v:?}");
        let p = parse(&syn);
        assert_eq!(p.tcp.flags, TcpFlags::SYN);
        assert_eq!(p.tcp.seq_number.0, 500);
        assert!(p.tcp.payload.is_empty());
        assert_eq!(p.tcp.timestamps.unwrap().tsval, 0x0102_0480, "the latest TSval");
        // A second data segment, and a keep-alive (seq = ISN), still only resend the SYN.
        let more = hs.client_segment(TcpFlags::ACK, 19, 1, 0x0102_0490, 502, b"more");
        let (v, _) = client_seg(&mut proxy, &mut hs, &more);
        assert!(matches!(v, ClientVerdict::SendSyn { .. }), "{v:?}");
        let keepalive = hs.client_segment(TcpFlags::ACK, 0, 1, 0x0102_04a0, 502, &[]);
        let (v, _) = client_seg(&mut proxy, &mut hs, &keepalive);
        assert!(matches!(v, ClientVerdict::SendSyn { .. }), "{v:?}");
        let c = proxy.counters();
        assert_eq!((c.cookie_valid, c.cookie_retrans, c.cookie_invalid), (1, 4, 0));
    }
}

#[test]
fn server_refusal_reaches_the_client_at_the_sequence_it_expects() {
    let mut proxy = proxy();
    let flow = Flow::v6().with_vlans(1);
    let mut hs = Handshake::syn(&mut proxy, flow, SynOpts::linux(), SynRule::default(), 77);
    hs.open(&mut proxy);
    // Another segment before the SYN-ACK is unexpected.
    let data = server_frame(&hs, TcpFlags::ACK, (1, 1), None, &[], b"x", 10);
    assert_eq!(
        server_seg(&mut proxy, &mut hs, &data).0,
        ServerVerdict::Drop(DropReason::Unexpected)
    );
    // RST|ACK seq 0 ack ISN+1: the port is closed.
    let mut rst = TcpRepr::new(
        flow.server_port,
        flow.client_port,
        SeqNum(0),
        SeqNum(78),
        TcpFlags::RST | TcpFlags::ACK,
        0,
    );
    rst.payload = &[];
    let frame = flow.frame(false, &rst);
    let (v, out) = server_seg(&mut proxy, &mut hs, &frame);
    assert_eq!(v, ServerVerdict::Forward);
    assert_tcp_checksum_exact(&out);
    let p = parse(&out);
    assert_eq!(p.tcp.seq_number.0, hs.cookie.wrapping_add(1));
    assert_eq!(p.tcp.ack_number.0, 78);
    assert_eq!(*hs.conn.unwrap().phase(), Phase::Refused { cookie: hs.cookie });
    assert!(hs.conn.unwrap().is_closed());
    // Another RST in that state gets the same treatment; client data is dropped.
    let (v, out) = server_seg(&mut proxy, &mut hs, &frame);
    assert_eq!(v, ServerVerdict::Forward);
    assert_eq!(parse(&out).tcp.seq_number.0, hs.cookie.wrapping_add(1));
    let (v, _) = {
        let ack = hs.ack();
        client_seg(&mut proxy, &mut hs, &ack)
    };
    assert_eq!(v, ClientVerdict::Drop(DropReason::Unexpected));
    assert_eq!(proxy.counters().server_refused, 1);
    // An RST acknowledging something else is not ours.
    let mut hs2 = Handshake::syn(&mut proxy, flow, SynOpts::linux(), SynRule::default(), 1000);
    hs2.open(&mut proxy);
    let stray = flow.frame(
        false,
        &TcpRepr::new(
            flow.server_port,
            flow.client_port,
            SeqNum(0),
            SeqNum(5),
            TcpFlags::RST | TcpFlags::ACK,
            0,
        ),
    );
    assert_eq!(
        server_seg(&mut proxy, &mut hs2, &stray).0,
        ServerVerdict::Drop(DropReason::Unexpected)
    );
}

#[test]
fn client_reset_before_the_server_answers_is_passed_on_without_its_ack() {
    let mut proxy = proxy();
    let flow = Flow::v4();
    let mut hs = Handshake::syn(&mut proxy, flow, SynOpts::linux(), SynRule::default(), 300);
    hs.open(&mut proxy);
    let rst = hs.client_segment(TcpFlags::RST | TcpFlags::ACK, 1, 1, 0x0102_0500, 0, &[]);
    let (v, out) = client_seg(&mut proxy, &mut hs, &rst);
    assert_eq!(v, ClientVerdict::Forward);
    assert_tcp_checksum_exact(&out);
    let p = parse(&out);
    assert_eq!(p.tcp.flags, TcpFlags::RST);
    assert_eq!(p.tcp.seq_number.0, 301);
    assert_eq!(p.tcp.ack_number.0, 0);
    assert!(matches!(hs.conn.unwrap().phase(), Phase::Refused { .. }));
}

#[test]
fn a_closed_connection_reopens_with_a_new_cookie() {
    for close in ["client rst", "server rst", "fins"] {
        let mut proxy = proxy();
        let flow = Flow::v4().with_vlans(2);
        let mut hs = established(&mut proxy, flow, SynOpts::linux(), ServerOpts::default());
        // Not closed yet: a SYN goes to the server translated (it answers with a challenge ACK).
        let syn = flow.frame(true, &flow.syn(0x7777, SynOpts::linux()));
        let (v, out) = client_seg(&mut proxy, &mut hs, &syn);
        assert_eq!(v, ClientVerdict::Forward);
        assert_eq!(out, syn, "a SYN has nothing to translate");
        match close {
            "client rst" => {
                let f = hs.client_segment(TcpFlags::RST | TcpFlags::ACK, 1, 1, 0x0102_0500, 0, &[]);
                assert_eq!(client_seg(&mut proxy, &mut hs, &f).0, ClientVerdict::Forward);
            }
            "server rst" => {
                let f = server_frame(&hs, TcpFlags::RST, (1, 1), None, &[], &[], 0);
                assert_eq!(server_seg(&mut proxy, &mut hs, &f).0, ServerVerdict::Forward);
            }
            _ => {
                let ts = Some(Timestamps {
                    tsval: 0x7000_0100,
                    tsecr: 0x0102_0500,
                });
                let f = hs.client_segment(TcpFlags::FIN | TcpFlags::ACK, 1, 1, 0x0102_0500, 502, &[]);
                assert_eq!(client_seg(&mut proxy, &mut hs, &f).0, ClientVerdict::Forward);
                assert!(!hs.conn.unwrap().is_closed(), "half closed");
                let f = server_frame(&hs, TcpFlags::FIN | TcpFlags::ACK, (1, 2), ts, &[], &[], 500);
                assert_eq!(server_seg(&mut proxy, &mut hs, &f).0, ServerVerdict::Forward);
            }
        }
        assert!(hs.conn.unwrap().is_closed(), "{close}");
        // The client comes back on the same tuple with a new ISN.
        let (v, synack) = client_seg(&mut proxy, &mut hs, &syn);
        assert!(matches!(v, ClientVerdict::Reply { .. }), "{close}: {v:?}");
        assert_eq!(*hs.conn.unwrap().phase(), Phase::Reopening);
        assert_eq!(proxy.counters().conn_reopened, 1);
        // A second SYN while reopening is answered again but counted once.
        let (v, _) = client_seg(&mut proxy, &mut hs, &syn);
        assert!(matches!(v, ClientVerdict::Reply { .. }));
        assert_eq!(proxy.counters().conn_reopened, 1);
        // Server leftovers are dropped while reopening.
        let f = server_frame(&hs, TcpFlags::ACK, (1, 1), None, &[], &[], 0);
        assert_eq!(
            server_seg(&mut proxy, &mut hs, &f).0,
            ServerVerdict::Drop(DropReason::Unexpected)
        );
        // The client's ACK of the new cookie starts the new connection.
        let p = parse(&synack);
        let mut again = hs.clone();
        again.client_isn = 0x7777;
        again.cookie = p.tcp.seq_number.0;
        again.synack_ts = p.tcp.timestamps.map(|t| t.tsval);
        let (v, syn_out) = client_seg(&mut proxy, &mut hs, &again.ack());
        assert!(matches!(v, ClientVerdict::SendSyn { .. }), "{v:?}");
        assert_eq!(parse(&syn_out).tcp.seq_number.0, 0x7777);
        let Phase::AwaitingServer(pending) = *hs.conn.unwrap().phase() else {
            panic!("{:?}", hs.conn)
        };
        assert_eq!(pending.client_isn, 0x7777);
        assert_eq!(pending.cookie, again.cookie);
        // A forged ACK while reopening is dropped.
        let mut forged = again.clone();
        forged.cookie ^= 8;
        hs.conn = Some(ProxyConn::new(Phase::Reopening));
        let (v, _) = client_seg(&mut proxy, &mut hs, &forged.ack());
        assert_eq!(v, ClientVerdict::Drop(DropReason::CookieInvalid));
    }
}

#[test]
fn a_new_syn_while_waiting_for_the_server_is_answered_statelessly() {
    let mut proxy = proxy();
    let flow = Flow::v6();
    let mut hs = Handshake::syn(&mut proxy, flow, SynOpts::linux(), SynRule::default(), 10);
    hs.open(&mut proxy);
    let before = hs.conn.unwrap();
    let syn = flow.frame(true, &flow.syn(20, SynOpts::linux()));
    let (v, _) = client_seg(&mut proxy, &mut hs, &syn);
    assert!(matches!(v, ClientVerdict::Reply { .. }));
    assert_eq!(hs.conn.unwrap(), before);
    assert_eq!(proxy.counters().conn_reopened, 0);
    // A valid ACK of a different incarnation replaces the pending state.
    let mut other = Handshake::syn(&mut proxy, flow, SynOpts::linux(), SynRule::default(), 20);
    other.conn = hs.conn;
    let ack = other.ack();
    let (v, _) = client_seg(&mut proxy, &mut other, &ack);
    assert!(matches!(v, ClientVerdict::SendSyn { .. }));
    let Phase::AwaitingServer(p) = *other.conn.unwrap().phase() else {
        panic!()
    };
    assert_eq!(p.client_isn, 20);
    // ... and garbage is dropped without touching it.
    let mut junk = other.clone();
    junk.cookie = 1;
    let (v, _) = client_seg(&mut proxy, &mut other, &junk.ack());
    assert_eq!(v, ClientVerdict::Drop(DropReason::CookieInvalid));
}

#[test]
fn malformed_frames_never_touch_the_state() {
    let mut proxy = proxy();
    let mut hs = established(&mut proxy, Flow::v4(), SynOpts::linux(), ServerOpts::default());
    let before = hs.conn.unwrap();
    let good = hs.ack();
    let mut info_bad = info(&good);
    info_bad.l3_offset = 200;
    if let levee_packet::parse::L3Info::Ipv4(ip) = &mut info_bad.l3 {
        ip.l4_offset = 250;
    }
    let mut buf = good.clone();
    let conn = hs.conn.as_mut().unwrap();
    assert_eq!(
        proxy.client_segment(conn, &mut buf, good.len(), &info_bad, &SynRule::default()),
        ClientVerdict::Drop(DropReason::Malformed)
    );
    let mut to_server = [0u8; 128];
    assert_eq!(
        proxy.server_segment(conn, &mut buf, good.len(), &info_bad, &mut to_server),
        ServerVerdict::Drop(DropReason::Malformed)
    );
    assert_eq!(buf, good);
    assert_eq!(*conn, before);
    let mut buf = good.clone();
    assert!(matches!(
        proxy.client_ack(&mut buf, good.len(), &info_bad, &SynRule::default()),
        AckVerdict::Drop(DropReason::Malformed)
    ));
}

#[test]
fn the_state_is_small() {
    assert!(
        std::mem::size_of::<ProxyConn>() <= 32,
        "{}",
        std::mem::size_of::<ProxyConn>()
    );
    assert!(std::mem::size_of::<Translation>() <= 16);
}

/// Options of arbitrary kinds in an arbitrary order, so timestamps and SACK blocks land at odd
/// and even offsets.
fn arb_options() -> impl Strategy<Value = Vec<u8>> {
    let one = prop_oneof![
        Just(vec![1u8]),
        any::<(u32, u32)>().prop_map(|(a, b)| {
            let mut v = vec![8, 10];
            v.extend_from_slice(&a.to_be_bytes());
            v.extend_from_slice(&b.to_be_bytes());
            v
        }),
        proptest::collection::vec(any::<u32>(), 2..=8).prop_map(|edges| {
            let n = edges.len() / 2 * 2;
            let mut v = vec![5, (2 + 4 * n) as u8];
            for e in &edges[..n] {
                v.extend_from_slice(&e.to_be_bytes());
            }
            v
        }),
        any::<u16>().prop_map(|m| vec![2, 4, (m >> 8) as u8, m as u8]),
        Just(vec![254, 3, 0x42]),
    ];
    proptest::collection::vec(one, 0..6).prop_map(|opts| {
        let mut area: Vec<u8> = Vec::new();
        for o in opts {
            if area.len() + o.len() <= 40 {
                area.extend(o);
            }
        }
        while area.len() % 4 != 0 {
            area.push(0);
        }
        area
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Incremental updates equal a full recomputation for any option layout, both directions,
    /// IPv4 and IPv6, with or without payload, and the fields move as the table says.
    #[test]
    fn incremental_checksum_equals_full_recomputation(
        area in arb_options(),
        seq in any::<u32>(),
        ack in any::<u32>(),
        flags in any::<u8>(),
        window in any::<u16>(),
        payload in proptest::collection::vec(any::<u8>(), 0..40),
        seq_off in any::<u32>(),
        ts_off in any::<u32>(),
        shifts in (0u8..=14, 0u8..=14),
        ts_on in any::<bool>(),
        to_client in any::<bool>(),
        v6 in any::<bool>(),
    ) {
        let pseudo = if v6 {
            PseudoHeader::V6 { src: Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x10), dst: Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 0x80) }
        } else {
            PseudoHeader::V4 { src: Ipv4Addr::new(198, 18, 0, 10), dst: Ipv4Addr::new(198, 19, 0, 80) }
        };
        let hdr = 20 + area.len();
        let mut seg = vec![0u8; hdr + payload.len()];
        {
            let mut p = tcp::Packet::new_unchecked(&mut seg[..]);
            p.set_src_port(1000);
            p.set_dst_port(80);
            p.set_seq_number(SeqNum(seq));
            p.set_ack_number(SeqNum(ack));
            p.set_header_len(hdr);
            p.set_flags(TcpFlags::from_bits(flags));
            p.set_window_len(window);
            p.options_mut().copy_from_slice(&area);
            p.payload_mut().copy_from_slice(&payload);
            p.fill_checksum(&pseudo);
        }
        let before = seg.clone();
        let t = Translation {
            seq_off,
            ts_off,
            c2s: WinScale { from: shifts.0, to: shifts.1 },
            s2c: WinScale { from: shifts.1, to: shifts.0 },
            flags: if ts_on { Translation::TS } else { 0 },
        };
        if to_client { t.to_client(&mut seg) } else { t.to_server(&mut seg) }
        let p = tcp::Packet::new_checked(&seg[..]).unwrap();
        prop_assert!(p.verify_checksum(&pseudo));
        prop_assert_eq!(p.checksum(), p.compute_checksum(&pseudo));
        prop_assert_eq!(p.payload(), &payload[..]);
        let old = tcp::Packet::new_checked(&before[..]).unwrap();
        let f = TcpFlags::from_bits(flags);
        let scale = if to_client { t.s2c } else { t.c2s };
        let expect_window = if f.contains(TcpFlags::SYN) { window } else { scale.apply(window) };
        prop_assert_eq!(p.window_len(), expect_window);
        if to_client {
            prop_assert_eq!(p.seq_number().0, seq.wrapping_add(seq_off));
            prop_assert_eq!(p.ack_number().0, ack);
        } else {
            prop_assert_eq!(p.seq_number().0, seq);
            let expect = if f.contains(TcpFlags::ACK) { ack.wrapping_sub(seq_off) } else { ack };
            prop_assert_eq!(p.ack_number().0, expect);
        }
        for (new, old) in p.options_iter().zip(old.options_iter()) {
            match (new, old) {
                (Ok(TcpOption::Timestamps { tsval, tsecr }), Ok(TcpOption::Timestamps { tsval: ov, tsecr: oe })) => {
                    let (ev, ee) = match (ts_on, to_client) {
                        (false, _) => (ov, oe),
                        (true, true) => (ov.wrapping_sub(ts_off), oe),
                        (true, false) if f.contains(TcpFlags::ACK) => (ov, oe.wrapping_add(ts_off)),
                        (true, false) => (ov, oe),
                    };
                    prop_assert_eq!((tsval, tsecr), (ev, ee));
                }
                (Ok(TcpOption::SackRange(n)), Ok(TcpOption::SackRange(o))) => {
                    for (nb, ob) in n.as_slice().iter().zip(o.as_slice()) {
                        let e = if to_client { *ob } else { (ob.0.wrapping_sub(seq_off), ob.1.wrapping_sub(seq_off)) };
                        prop_assert_eq!(*nb, e);
                    }
                }
                (n, o) => prop_assert_eq!(n.is_ok(), o.is_ok()),
            }
        }
    }
}
