//! Fuzz target: the SYN proxy's paths on arbitrary segments.
//!
//! The input is a control header followed by a frame. The frame goes through `parse_frame` and
//! then, in copies, through every entry point: the SYN rewrite, the cookie ACK check (in place
//! and into a separate buffer), and the per-connection paths in each phase, with connection
//! state and a translation taken from the control header. None may panic, and whatever a
//! verdict says was written must be a frame `parse_frame` accepts, inside the buffer, with
//! good checksums where the proxy built it. A second round feeds the proxy's own SYN-ACK back
//! as the client's ACK, so the valid-cookie path is reached too.
#![no_main]

use levee_packet::checksum::PseudoHeader;
use levee_packet::parse::{parse_frame, FrameInfo, L3Info};
use levee_packet::tcp;
use levee_synproxy::translate::{Pending, Phase, Translation, WinScale};
use levee_synproxy::{
    AckVerdict, ClientVerdict, Config, MasterSecret, ProxyConn, ServerVerdict, SynProxy, SynRule, SynVerdict,
};
use libfuzzer_sys::fuzz_target;

const CONTROL: usize = 24;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Whether the TCP checksum of `frame` verifies (`None`: not a TCP/IP frame).
fn tcp_checksum_ok(frame: &[u8]) -> Option<bool> {
    let info = parse_frame(frame).ok()?;
    let (l4, l4_len, pseudo) = match info.l3 {
        L3Info::Ipv4(ip) => (
            ip.l4_offset,
            ip.l4_len,
            PseudoHeader::V4 {
                src: ip.src,
                dst: ip.dst,
            },
        ),
        L3Info::Ipv6(ip) => (
            ip.l4_offset,
            ip.l4_len,
            PseudoHeader::V6 {
                src: ip.src,
                dst: ip.dst,
            },
        ),
        _ => return None,
    };
    let seg = frame.get(usize::from(l4)..usize::from(l4) + usize::from(l4_len))?;
    let packet = tcp::Packet::new_checked(seg).ok()?;
    Some(packet.verify_checksum(&pseudo))
}

/// Checks a frame translated in place: same length, still parses, and its checksum verifies
/// exactly when the original's did (incremental updates preserve errors, never add them).
fn check_translated(before: &[u8], after: &[u8]) {
    assert_eq!(
        tcp_checksum_ok(after),
        tcp_checksum_ok(before),
        "translation changed checksum validity"
    );
}

/// Checks a frame the proxy built: it parses and its TCP checksum verifies.
fn check_written(buf: &[u8], len: usize) {
    assert!(
        len <= buf.len(),
        "length {len} past the {}-byte buffer",
        buf.len()
    );
    let frame = &buf[..len];
    let info = parse_frame(frame).expect("the proxy wrote an unparsable frame");
    let (l4, l4_len, pseudo) = match info.l3 {
        L3Info::Ipv4(ip) => (
            ip.l4_offset,
            ip.l4_len,
            PseudoHeader::V4 {
                src: ip.src,
                dst: ip.dst,
            },
        ),
        L3Info::Ipv6(ip) => (
            ip.l4_offset,
            ip.l4_len,
            PseudoHeader::V6 {
                src: ip.src,
                dst: ip.dst,
            },
        ),
        _ => panic!("the proxy wrote a non-IP frame"),
    };
    let seg = &frame[usize::from(l4)..usize::from(l4) + usize::from(l4_len)];
    let packet = tcp::Packet::new_checked(seg).expect("bad TCP header written");
    assert!(packet.verify_checksum(&pseudo), "bad TCP checksum written");
}

fn conns(c: &[u8]) -> [ProxyConn; 4] {
    let pending = Pending {
        cookie: u32_at(c, 4),
        client_isn: u32_at(c, 8),
        our_tsval: u32_at(c, 12),
        client_tsval: u32_at(c, 16),
        mss: u16::from_be_bytes([c[20], c[21]]),
        client_win: u16::from_be_bytes([c[22], c[23]]),
        ts_opts: c[1],
        adv_wscale: c[2],
        client_ttl: c[3],
    };
    let t = Translation {
        seq_off: u32_at(c, 4),
        ts_off: u32_at(c, 12),
        c2s: WinScale {
            from: c[1] & 0x0F,
            to: c[1] >> 4,
        },
        s2c: WinScale {
            from: c[2] & 0x0F,
            to: c[2] >> 4,
        },
        flags: c[3],
    };
    [
        ProxyConn::awaiting(pending),
        ProxyConn::new(Phase::Open(t)),
        ProxyConn::new(Phase::Refused {
            cookie: pending.cookie,
        }),
        ProxyConn::new(Phase::Reopening),
    ]
}

fn run(proxy: &mut SynProxy, frame: &[u8], info: &FrameInfo, c: &[u8], rule: &SynRule) -> Option<Vec<u8>> {
    let room = frame.len() + usize::from(c[0] >> 1);
    let mut synack = None;

    let mut buf = frame.to_vec();
    buf.resize(room, 0);
    if let SynVerdict::Reply { len } = proxy.answer_syn(&mut buf, frame.len(), info, rule) {
        check_written(&buf, len);
        synack = Some(buf[..len].to_vec());
    }

    let mut buf = frame.to_vec();
    buf.resize(room, 0);
    if let AckVerdict::Open { len, .. } = proxy.client_ack(&mut buf, frame.len(), info, rule) {
        check_written(&buf, len);
    }
    let mut out = vec![0u8; usize::from(c[0])];
    if let AckVerdict::Open { len, .. } = proxy.client_ack_into(frame, info, &mut out, rule) {
        check_written(&out, len);
    }

    for conn in conns(c) {
        let mut conn_c = conn;
        let mut buf = frame.to_vec();
        buf.resize(room, 0);
        match proxy.client_segment(&mut conn_c, &mut buf, frame.len(), info, rule) {
            ClientVerdict::Forward => check_translated(frame, &buf[..frame.len()]),
            ClientVerdict::SendSyn { len } | ClientVerdict::Reply { len } => check_written(&buf, len),
            ClientVerdict::Drop(_) => assert_eq!(&buf[..frame.len()], frame, "a dropped frame was changed"),
        }
        let mut conn_s = conn;
        let mut buf = frame.to_vec();
        buf.resize(room, 0);
        let mut to_server = vec![0u8; usize::from(c[0])];
        match proxy.server_segment(&mut conn_s, &mut buf, frame.len(), info, &mut to_server) {
            ServerVerdict::Forward => check_translated(frame, &buf[..frame.len()]),
            ServerVerdict::Established {
                to_client,
                to_server_len,
            } => {
                check_written(&buf, to_client);
                check_written(&to_server, to_server_len);
                assert!(conn_s.is_open());
            }
            ServerVerdict::Drop(_) => assert_eq!(&buf[..frame.len()], frame, "a dropped frame was changed"),
        }
    }

    // The translator alone on the raw bytes, whatever they are.
    let t = match conns(c)[1].phase() {
        Phase::Open(t) => *t,
        _ => unreachable!(),
    };
    let mut raw = frame.to_vec();
    t.to_client(&mut raw);
    t.to_server(&mut raw);
    assert_eq!(raw.len(), frame.len());
    synack
}

fuzz_target!(|data: &[u8]| {
    if data.len() < CONTROL {
        return;
    }
    let (c, frame) = data.split_at(CONTROL);
    let checked = c[0] & 1 == 0;
    let config = Config {
        verify_checksums: checked,
        ecn: c[1] & 0x80 != 0,
        ..Config::default()
    };
    let Ok(mut proxy) = SynProxy::new(config, &MasterSecret::from_bytes([7; 16])) else {
        return;
    };
    proxy.set_now(u64::from(u32_at(c, 4)) * 1_000_000_000);
    let rule = SynRule {
        mss: u16::from_be_bytes([c[20], c[21]]),
        wscale: (c[2] & 0x10 != 0).then_some(c[2] & 0x0F),
        timestamps: c[2] & 0x20 != 0,
        sack_perm: c[2] & 0x40 != 0,
    };
    let Ok(info) = parse_frame(frame) else {
        return;
    };
    // A frame with checksums the proxy will accept: the input can only guess them.
    let Some(synack) = run(&mut proxy, frame, &info, c, &rule) else {
        return;
    };
    // Turn our SYN-ACK into the client's ACK: swap back, ACK the cookie. Reaches the valid-cookie
    // and handshake paths.
    let Ok(sa_info) = parse_frame(&synack) else {
        return;
    };
    let Some(ack) = reply_to(&synack, &sa_info, 0x10, None) else {
        return;
    };
    let Ok(ack_info) = parse_frame(&ack) else {
        return;
    };
    let mut buf = ack.clone();
    buf.resize(ack.len() + 128, 0);
    let AckVerdict::Open { len, mut conn } = proxy.client_ack(&mut buf, ack.len(), &ack_info, &rule) else {
        return;
    };
    check_written(&buf, len);
    assert!(!conn.is_open());
    // The server answers our SYN: its SYN-ACK completes the handshake.
    let syn = &buf[..len];
    let Ok(syn_info) = parse_frame(syn) else {
        return;
    };
    let Some(server_synack) = reply_to(syn, &syn_info, 0x12, Some(u32_at(c, 16))) else {
        return;
    };
    let Ok(ssa_info) = parse_frame(&server_synack) else {
        return;
    };
    let mut buf = server_synack.clone();
    buf.resize(server_synack.len() + 64, 0);
    let mut to_server = vec![0u8; 256];
    let verdict = proxy.server_segment(
        &mut conn,
        &mut buf,
        server_synack.len(),
        &ssa_info,
        &mut to_server,
    );
    let ServerVerdict::Established {
        to_client,
        to_server_len,
    } = verdict
    else {
        panic!("the server's SYN-ACK was refused: {verdict:?}");
    };
    check_written(&buf, to_client);
    check_written(&to_server, to_server_len);
    assert!(conn.is_open());
    // And the fuzzer's frame, whatever it is, through the open connection both ways.
    let mut c_conn = conn;
    let mut buf = frame.to_vec();
    buf.resize(frame.len() + 128, 0);
    if let ClientVerdict::Forward = proxy.client_segment(&mut c_conn, &mut buf, frame.len(), &info, &rule) {
        check_translated(frame, &buf[..frame.len()]);
    }
    let mut buf = frame.to_vec();
    if let ServerVerdict::Forward =
        proxy.server_segment(&mut conn, &mut buf, frame.len(), &info, &mut to_server)
    {
        check_translated(frame, &buf[..frame.len()]);
    }
});

/// The answer the peer of `synack` would send: addresses, ports and MACs swapped, `flags`,
/// seq = `seq` (or the frame's ack), ack = the frame's seq + 1, TS echoed, checksums filled.
fn reply_to(synack: &[u8], info: &FrameInfo, flags: u8, seq: Option<u32>) -> Option<Vec<u8>> {
    let l3 = usize::from(info.l3_offset);
    let mut f = synack.to_vec();
    let (l4, pseudo_back) = match info.l3 {
        L3Info::Ipv4(ip) => {
            f[l3 + 12..l3 + 16].copy_from_slice(&ip.dst.octets());
            f[l3 + 16..l3 + 20].copy_from_slice(&ip.src.octets());
            f[l3 + 10..l3 + 12].fill(0);
            let sum = levee_packet::checksum::checksum(&f[l3..l3 + 20]);
            f[l3 + 10..l3 + 12].copy_from_slice(&sum.to_be_bytes());
            (
                usize::from(ip.l4_offset),
                PseudoHeader::V4 {
                    src: ip.dst,
                    dst: ip.src,
                },
            )
        }
        L3Info::Ipv6(ip) => {
            f[l3 + 8..l3 + 24].copy_from_slice(&ip.dst.octets());
            f[l3 + 24..l3 + 40].copy_from_slice(&ip.src.octets());
            (
                usize::from(ip.l4_offset),
                PseudoHeader::V6 {
                    src: ip.dst,
                    dst: ip.src,
                },
            )
        }
        _ => return None,
    };
    let end = match info.l3 {
        L3Info::Ipv4(ip) => l4 + usize::from(ip.l4_len),
        L3Info::Ipv6(ip) => l4 + usize::from(ip.l4_len),
        _ => return None,
    };
    let t = &mut f[l4..end];
    let (sport, dport) = ([t[0], t[1]], [t[2], t[3]]);
    let (their_seq, ack) = (u32_at(t, 4), u32_at(t, 8));
    let seq_out = |given: Option<u32>, ack: u32| given.unwrap_or(ack);
    t[0..2].copy_from_slice(&dport);
    t[2..4].copy_from_slice(&sport);
    t[4..8].copy_from_slice(&seq_out(seq, ack).to_be_bytes());
    t[8..12].copy_from_slice(&their_seq.wrapping_add(1).to_be_bytes());
    t[13] = flags;
    // Echo the timestamp: TSecr = TSval, wherever the option is.
    let hdr = usize::from(t[12] >> 4) * 4;
    let mut at = 20;
    while at + 1 < hdr {
        match t[at] {
            0 => break,
            1 => at += 1,
            8 if at + 10 <= hdr => {
                let tsval = u32_at(t, at + 2);
                t[at + 6..at + 10].copy_from_slice(&tsval.to_be_bytes());
                at += 10;
            }
            _ => at += usize::from(t[at + 1]).max(2),
        }
    }
    let mut packet = tcp::Packet::new_unchecked(&mut t[..]);
    packet.fill_checksum(&pseudo_back);
    // Swap the MACs back too.
    let (a, b) = f.split_at_mut(6);
    a.swap_with_slice(&mut b[..6]);
    Some(f)
}
