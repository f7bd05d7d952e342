//! Per-connection state and translation: [`ProxyConn`], the small `Copy` value the dataplane
//! stores in the connection's conntrack entry, and the in-place rewrite of every segment that
//! crosses the proxy afterwards.
//!
//! Owns the connection state machine ([`Phase`]) and [`SynProxy::client_segment`] /
//! [`SynProxy::server_segment`], called by the worker for segments of a tuple whose conntrack
//! entry carries a [`ProxyConn`] (on the worker thread that owns the entry's shard).
//!
//! The client was given our cookie `K` as our ISN; the server chose its own ISN `S` and
//! timestamp clock. From the server's SYN-ACK on, as Linux's `nf_ct_seqadj` and
//! `synproxy_tstamp_adjust` do:
//!
//! | direction | field | rewrite |
//! |---|---|---|
//! | server → client | sequence number | `+ (K - S)` |
//! | server → client | TSval | `- ts_off` (`ts_off` = server's SYN-ACK TSval − ours) |
//! | client → server | acknowledgment number (ACK set) | `- (K - S)` |
//! | client → server | SACK block edges | `- (K - S)` |
//! | client → server | TSecr (ACK set) | `+ ts_off` |
//! | either | window | rescaled when the two sides' window-scale views differ (below) |
//!
//! Checksums are patched incrementally (RFC 1624 eqn. 3); fields at odd offsets in the options
//! (a timestamp after a single NOP) are handled by the byte-swap property of the one's-complement
//! sum. Addresses never change, so the pseudo-header and the IPv4 header checksum stay valid.
//!
//! Window scaling beyond Linux: the client was promised our shift (the rule's `wscale`), the
//! server chose its own and may not have agreed to scaling at all. When the views differ the
//! window field is rescaled (`min(65535, w << from >> to)`), so neither side over- or
//! under-reads the other's window; Linux requires the rule's `wscale` to equal the server's.
//!
//! State machine (Linux's `ipv4_synproxy_hook` per conntrack state):
//! - [`Phase::AwaitingServer`]: after a valid cookie ACK, until the server's SYN-ACK. A client
//!   ACK or data segment with the same numbers re-sends the SYN (`cookie_retrans`), never a second
//!   state; a client RST is passed on (without its unusable acknowledgment); a server RST is
//!   passed to the client with the sequence number it expects (`K + 1`), and the connection is
//!   [`Phase::Refused`].
//! - [`Phase::Open`]: translating. FINs and RSTs of both sides are tracked; once closed (an RST,
//!   or FINs from both sides) a new SYN from the client reopens the tuple (`conn_reopened`): it is
//!   answered with a fresh cookie and the state becomes [`Phase::Reopening`]. A SYN on an open
//!   connection is forwarded translated, so the server answers with a challenge ACK (RFC 5961).
//! - [`Phase::Reopening`]: the client's cookie ACK starts a new [`Phase::AwaitingServer`].
//!
//! Timeouts belong to conntrack (its TCP state machine and timer wheel); [`ProxyConn::phase`]
//! tells it where the handshake is.

use levee_packet::parse::FrameInfo;
use levee_packet::tcp::{option_kind, TcpFlags};

use crate::frame::{be16, be32, Segment};
use crate::{ClientVerdict, DropReason, ServerVerdict, SynProxy, SynRule, SynVerdict};

/// How far past its ISN a client's sequence number may be while the proxy waits for the
/// server: a quarter of the sequence space, far more than any window.
const EARLY_DATA_WINDOW: u32 = 1 << 30;

/// A window-scale conversion: a window field scaled by `from` becomes one scaled by `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct WinScale {
    /// Shift the sender applied.
    pub from: u8,
    /// Shift the receiver will apply.
    pub to: u8,
}

impl WinScale {
    /// Whether windows need rewriting.
    pub const fn rescales(&self) -> bool {
        self.from != self.to
    }

    /// The window field for the receiver: `min(65535, w << from >> to)`.
    pub fn apply(&self, window: u16) -> u16 {
        let bytes = u64::from(window) << self.from.min(14);
        (bytes >> self.to.min(14)).min(0xFFFF) as u16
    }
}

/// What the proxy remembers between a valid cookie ACK and the server's SYN-ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pending {
    /// Our ISN towards the client (the cookie).
    pub cookie: u32,
    /// The client's ISN.
    pub client_isn: u32,
    /// The TSval of our SYN-ACK, as the client echoed it (0 without timestamps).
    pub our_tsval: u32,
    /// The client's latest TSval (0 without timestamps).
    pub client_tsval: u32,
    /// The client's MSS from the cookie.
    pub mss: u16,
    /// The client's latest window field.
    pub client_win: u16,
    /// The cookie's timestamp option byte: 0 without the timestamp option, else
    /// `0x40 | bits` ([`crate::cookie::TsOptions`]).
    pub ts_opts: u8,
    /// Window scale shift we advertised to the client.
    pub adv_wscale: u8,
    /// TTL or hop limit of the client's packets, for the packets sent on its behalf.
    pub client_ttl: u8,
}

impl Pending {
    /// The options the cookie carried in the timestamp, when the client uses timestamps.
    pub fn ts(&self) -> Option<crate::cookie::TsOptions> {
        (self.ts_opts & 0x40 != 0)
            .then(|| crate::cookie::TsOptions::decode(u32::from(self.ts_opts & 0x3F)).ok())
            .flatten()
    }

    /// The client's window scale shift, when window scaling is on between client and proxy.
    pub fn client_wscale(&self) -> Option<u8> {
        self.ts().and_then(|o| o.wscale)
    }

    /// The shift our SYN-ACK advertised, when window scaling is on between client and proxy
    /// (what conntrack should record for the proxy's side of the handshake).
    pub fn advertised_wscale(&self) -> Option<u8> {
        self.client_wscale().map(|_| self.adv_wscale)
    }

    /// Whether SACK was agreed between client and proxy.
    pub fn sack_perm(&self) -> bool {
        self.ts().is_some_and(|o| o.sack_perm)
    }
}

/// Translation state of an open connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Translation {
    /// `K - S`: added to the server's sequence numbers.
    pub seq_off: u32,
    /// Server's TSval minus ours: subtracted from the server's TSvals.
    pub ts_off: u32,
    /// Window conversion client → server.
    pub c2s: WinScale,
    /// Window conversion server → client.
    pub s2c: WinScale,
    /// Flags: [`Translation::TS`], [`Translation::FIN_CLIENT`], [`Translation::FIN_SERVER`],
    /// [`Translation::RST`].
    pub flags: u8,
}

impl Translation {
    /// Both sides use timestamps: translate them.
    pub const TS: u8 = 1;
    /// The client sent a FIN.
    pub const FIN_CLIENT: u8 = 2;
    /// The server sent a FIN.
    pub const FIN_SERVER: u8 = 4;
    /// Either side sent an RST.
    pub const RST: u8 = 8;

    /// Whether the connection is over: an RST, or FINs from both sides.
    pub const fn closed(&self) -> bool {
        self.flags & Translation::RST != 0
            || self.flags & (Translation::FIN_CLIENT | Translation::FIN_SERVER)
                == Translation::FIN_CLIENT | Translation::FIN_SERVER
    }

    /// Rewrites a client → server TCP header in place (`tcp` is the header, options included,
    /// with the payload optionally after it; only the header is touched).
    pub fn to_server(&self, tcp: &mut [u8]) {
        rewrite(tcp, self, Direction::ToServer);
    }

    /// Rewrites a server → client TCP header in place.
    pub fn to_client(&self, tcp: &mut [u8]) {
        rewrite(tcp, self, Direction::ToClient);
    }
}

/// Where a proxied connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// The server's SYN was sent; waiting for its SYN-ACK.
    AwaitingServer(Pending),
    /// Handshake done: translating.
    Open(Translation),
    /// The server refused the connection with an RST (or the client reset it before the server
    /// answered); `cookie` is what the client's sequence space expects of a reset.
    Refused {
        /// Our ISN towards the client.
        cookie: u32,
    },
    /// A closed connection's tuple got a new SYN, answered with a cookie; waiting for the
    /// client's ACK.
    Reopening,
}

/// The proxy's per-connection state: what the dataplane keeps in the conntrack entry's
/// extension. Small and `Copy` (at most 32 bytes; see the size test). Conntrack's extension
/// type must be `Default`: store an `Option<ProxyConn>` (the same size, `None` for flows the
/// proxy did not set up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProxyConn {
    phase: Phase,
}

impl ProxyConn {
    /// A connection waiting for the server's SYN-ACK.
    pub const fn awaiting(pending: Pending) -> ProxyConn {
        ProxyConn {
            phase: Phase::AwaitingServer(pending),
        }
    }

    /// Where the connection stands.
    pub const fn phase(&self) -> &Phase {
        &self.phase
    }

    /// Whether the handshake with the server completed.
    pub const fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open(_))
    }

    /// Whether the connection is over (closed, refused or being reopened): conntrack may use a
    /// short timeout.
    pub const fn is_closed(&self) -> bool {
        match &self.phase {
            Phase::Open(t) => t.closed(),
            Phase::Refused { .. } | Phase::Reopening => true,
            Phase::AwaitingServer(_) => false,
        }
    }

    /// A connection in `phase` (tools, tests and fuzzing; the dataplane gets its states from
    /// the proxy's verdicts).
    pub const fn new(phase: Phase) -> ProxyConn {
        ProxyConn { phase }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    ToServer,
    ToClient,
}

/// Accumulates RFC 1624 checksum deltas for fields changed in one TCP header.
struct Delta {
    acc: u64,
}

impl Delta {
    /// Writes `new` over the 32-bit field at `at` and records the change.
    #[inline]
    fn put32(&mut self, h: &mut [u8], at: usize, new: u32) {
        let old = be32(&h[at..]);
        if old == new {
            return;
        }
        h[at..at + 4].copy_from_slice(&new.to_be_bytes());
        let d =
            u64::from(!old >> 16) + u64::from(!old & 0xFFFF) + u64::from(new >> 16) + u64::from(new & 0xFFFF);
        self.add(d, at);
    }

    /// Writes `new` over the 16-bit field at `at` (even) and records the change.
    #[inline]
    fn put16(&mut self, h: &mut [u8], at: usize, new: u16) {
        let old = be16(&h[at..]);
        if old == new {
            return;
        }
        h[at..at + 2].copy_from_slice(&new.to_be_bytes());
        self.add(u64::from(!old) + u64::from(new), at);
    }

    /// A field at an odd offset straddles words: its contribution to the one's-complement sum
    /// is the byte-swap of the aligned one (RFC 1071 section 2(B)).
    #[inline]
    fn add(&mut self, d: u64, at: usize) {
        self.acc += if at % 2 == 0 {
            d
        } else {
            u64::from(levee_packet::checksum::fold(d).swap_bytes())
        };
    }

    /// Patches the checksum at offset 16 of the header with everything recorded.
    #[inline]
    fn finish(self, h: &mut [u8]) {
        if self.acc == 0 {
            return;
        }
        let hc = be16(&h[16..]);
        let sum = levee_packet::checksum::fold(u64::from(!hc) + self.acc);
        h[16..18].copy_from_slice(&(!sum).to_be_bytes());
    }
}

/// The in-place translation of one TCP header. `h` holds at least the header (its data offset
/// is clamped to `h`); options are walked as in [`crate::options::scan`], stopping at the first
/// malformed one.
fn rewrite(h: &mut [u8], t: &Translation, dir: Direction) {
    if h.len() < 20 {
        return;
    }
    let hdr_len = (usize::from(h[12] >> 4) * 4).clamp(20, h.len());
    let flags = TcpFlags::from_bits(h[13]);
    let mut d = Delta { acc: 0 };
    match dir {
        Direction::ToClient => {
            let seq = be32(&h[4..]).wrapping_add(t.seq_off);
            d.put32(h, 4, seq);
        }
        Direction::ToServer => {
            if flags.contains(TcpFlags::ACK) {
                let ack = be32(&h[8..]).wrapping_sub(t.seq_off);
                d.put32(h, 8, ack);
            }
        }
    }
    // SYN segments carry unscaled windows (RFC 7323 section 2.2).
    let scale = match dir {
        Direction::ToServer => t.c2s,
        Direction::ToClient => t.s2c,
    };
    if scale.rescales() && !flags.contains(TcpFlags::SYN) {
        let w = scale.apply(be16(&h[14..]));
        d.put16(h, 14, w);
    }
    let mut at = 20;
    while at < hdr_len {
        let kind = h[at];
        if kind == option_kind::END_OF_LIST {
            break;
        }
        if kind == option_kind::NO_OP {
            at += 1;
            continue;
        }
        let Some(&len) = h.get(at + 1).filter(|_| at + 1 < hdr_len) else {
            break;
        };
        let len = usize::from(len);
        if len < 2 || at + len > hdr_len {
            break;
        }
        match (kind, len, dir) {
            (option_kind::TIMESTAMPS, 10, Direction::ToClient) if t.flags & Translation::TS != 0 => {
                let tsval = be32(&h[at + 2..]).wrapping_sub(t.ts_off);
                d.put32(h, at + 2, tsval);
            }
            // TSecr means something only on an ACK (RFC 7323 section 3.2): a SYN's zero stays.
            (option_kind::TIMESTAMPS, 10, Direction::ToServer)
                if t.flags & Translation::TS != 0 && flags.contains(TcpFlags::ACK) =>
            {
                let tsecr = be32(&h[at + 6..]).wrapping_add(t.ts_off);
                d.put32(h, at + 6, tsecr);
            }
            (option_kind::SACK, 10 | 18 | 26 | 34, Direction::ToServer) => {
                let mut edge = at + 2;
                while edge < at + len {
                    let v = be32(&h[edge..]).wrapping_sub(t.seq_off);
                    d.put32(h, edge, v);
                    edge += 4;
                }
            }
            _ => {}
        }
        at += len;
    }
    d.finish(h);
}

/// Sets the sequence number of the TCP header `h` (at least 20 bytes) and patches its checksum.
pub(crate) fn set_seq(h: &mut [u8], seq: u32) {
    let mut d = Delta { acc: 0 };
    d.put32(h, 4, seq);
    d.finish(h);
}

/// Turns a client RST|ACK into a bare RST (the acknowledgment would need the server's ISN,
/// which is not known yet) and patches the checksum.
fn strip_ack(h: &mut [u8]) {
    let mut d = Delta { acc: 0 };
    d.put32(h, 8, 0);
    // Flags share a word with the data offset.
    let word = be16(&h[12..]);
    d.put16(h, 12, word & !u16::from(TcpFlags::ACK.bits()));
    d.finish(h);
}

impl SynProxy {
    /// A client → server segment on a connection the proxy set up (`conn` is the conntrack
    /// entry's extension, updated in place). `rule` is the `synproxy` rule for the flow, used
    /// when a SYN reopens the connection. See the module documentation for what each phase does.
    pub fn client_segment(
        &mut self,
        conn: &mut ProxyConn,
        buf: &mut [u8],
        frame_len: usize,
        info: &FrameInfo,
        rule: &SynRule,
    ) -> ClientVerdict {
        let frame_len = frame_len.min(buf.len());
        let seg = match Segment::locate(&buf[..frame_len], info) {
            Ok(seg) => seg,
            Err(reason) => {
                self.counters.malformed += 1;
                return ClientVerdict::Drop(reason);
            }
        };
        let flags = seg.flags;
        let syn_only = flags.contains(TcpFlags::SYN) && !flags.intersects(TcpFlags::ACK | TcpFlags::RST);
        match conn.phase {
            Phase::Open(mut t) if !(syn_only && t.closed()) => {
                if flags.contains(TcpFlags::RST) {
                    t.flags |= Translation::RST;
                } else if flags.contains(TcpFlags::FIN) {
                    t.flags |= Translation::FIN_CLIENT;
                }
                t.to_server(&mut buf[seg.l4..seg.l4 + seg.hdr_len]);
                conn.phase = Phase::Open(t);
                ClientVerdict::Forward
            }
            Phase::AwaitingServer(_) if syn_only => {
                // The client started over (or its SYN crossed our SYN-ACK): answer statelessly;
                // a valid ACK for the new cookie will replace the pending state.
                self.syn_verdict(buf, frame_len, info, rule)
            }
            Phase::Open(_) | Phase::Refused { .. } | Phase::Reopening if syn_only => {
                let verdict = self.syn_verdict(buf, frame_len, info, rule);
                if matches!(verdict, ClientVerdict::Reply { .. }) && conn.phase != Phase::Reopening {
                    self.counters.conn_reopened += 1;
                    conn.phase = Phase::Reopening;
                }
                verdict
            }
            Phase::AwaitingServer(mut p) => {
                if flags.contains(TcpFlags::RST) {
                    strip_ack(&mut buf[seg.l4..seg.l4 + seg.hdr_len]);
                    conn.phase = Phase::Refused { cookie: p.cookie };
                    return ClientVerdict::Forward;
                }
                if flags.contains(TcpFlags::ACK)
                    && !flags.contains(TcpFlags::SYN)
                    && seg.ack == p.cookie.wrapping_add(1)
                    && seg.seq.wrapping_sub(p.client_isn) <= EARLY_DATA_WINDOW
                {
                    // The client retransmitted its ACK, sent a keep-alive (seq = ISN) or data
                    // (seq beyond ISN + 1) before the server answered: send the SYN again (it may
                    // have been lost), keep one state. The exact acknowledgment of our cookie is
                    // what makes the segment the client's; Linux instead re-checks the cookie
                    // against seq - 1 and so drops every data segment after the first.
                    self.counters.cookie_retrans += 1;
                    let opts = crate::options::scan(seg.options(&buf[..frame_len]));
                    p.client_win = seg.window;
                    if let Some((tsval, _)) = opts.ts {
                        p.client_tsval = tsval;
                    }
                    conn.phase = Phase::AwaitingServer(p);
                    return match crate::handshake::write_server_syn(buf, &seg, &p) {
                        Ok(len) => ClientVerdict::SendSyn { len },
                        Err(e) => {
                            self.counters.malformed += 1;
                            ClientVerdict::Drop(e.into())
                        }
                    };
                }
                // Other numbers: perhaps a new incarnation whose SYN we answered meanwhile.
                self.reopen_with_ack(conn, buf, frame_len, info, rule)
            }
            Phase::Reopening => self.reopen_with_ack(conn, buf, frame_len, info, rule),
            Phase::Refused { .. } | Phase::Open(_) => {
                self.counters.unexpected += 1;
                ClientVerdict::Drop(DropReason::Unexpected)
            }
        }
    }

    fn syn_verdict(
        &mut self,
        buf: &mut [u8],
        frame_len: usize,
        info: &FrameInfo,
        rule: &SynRule,
    ) -> ClientVerdict {
        match self.answer_syn(buf, frame_len, info, rule) {
            SynVerdict::Reply { len } => ClientVerdict::Reply { len },
            SynVerdict::Drop(reason) => ClientVerdict::Drop(reason),
        }
    }

    fn reopen_with_ack(
        &mut self,
        conn: &mut ProxyConn,
        buf: &mut [u8],
        frame_len: usize,
        info: &FrameInfo,
        rule: &SynRule,
    ) -> ClientVerdict {
        match self.client_ack(buf, frame_len, info, rule) {
            crate::AckVerdict::Open { conn: new, len } => {
                *conn = new;
                ClientVerdict::SendSyn { len }
            }
            crate::AckVerdict::Drop(reason) => ClientVerdict::Drop(reason),
        }
    }

    /// A server → client segment on a connection the proxy set up. The server's SYN-ACK
    /// completes the handshake: `buf` then holds the window update for the client and
    /// `to_server` the ACK for the server (see [`ServerVerdict::Established`]). Each needs at
    /// most `l3 + 20 or 40 + 32` bytes: `to_server` must have them, and `buf` may extend past
    /// `frame_len` into the tailroom for a SYN-ACK shorter than that (one without options);
    /// when either is too short nothing is written. Later segments are translated in place,
    /// their length unchanged.
    pub fn server_segment(
        &mut self,
        conn: &mut ProxyConn,
        buf: &mut [u8],
        frame_len: usize,
        info: &FrameInfo,
        to_server: &mut [u8],
    ) -> ServerVerdict {
        let frame_len = frame_len.min(buf.len());
        let seg = match Segment::locate(&buf[..frame_len], info) {
            Ok(seg) => seg,
            Err(reason) => {
                self.counters.malformed += 1;
                return ServerVerdict::Drop(reason);
            }
        };
        let flags = seg.flags;
        match conn.phase {
            Phase::Open(mut t) => {
                if flags.contains(TcpFlags::RST) {
                    t.flags |= Translation::RST;
                } else if flags.contains(TcpFlags::FIN) {
                    t.flags |= Translation::FIN_SERVER;
                }
                t.to_client(&mut buf[seg.l4..seg.l4 + seg.hdr_len]);
                conn.phase = Phase::Open(t);
                ServerVerdict::Forward
            }
            Phase::AwaitingServer(p) if flags.contains(TcpFlags::RST) => {
                // The server refuses: its RST answers our SYN (seq 0 or anything); the client,
                // which believes itself connected, accepts a reset at our ISN + 1.
                if flags.contains(TcpFlags::ACK) && seg.ack != p.client_isn.wrapping_add(1) {
                    self.counters.unexpected += 1;
                    return ServerVerdict::Drop(DropReason::Unexpected);
                }
                set_seq(&mut buf[seg.l4..seg.l4 + seg.hdr_len], p.cookie.wrapping_add(1));
                self.counters.server_refused += 1;
                conn.phase = Phase::Refused { cookie: p.cookie };
                ServerVerdict::Forward
            }
            Phase::AwaitingServer(p)
                if flags.contains(TcpFlags::SYN | TcpFlags::ACK)
                    && seg.ack == p.client_isn.wrapping_add(1) =>
            {
                if self.config.verify_checksums && !seg.checksums_ok(&buf[..frame_len]) {
                    self.counters.malformed += 1;
                    return ServerVerdict::Drop(DropReason::BadChecksum);
                }
                match crate::handshake::complete(buf, frame_len, &seg, &p, to_server) {
                    Ok((t, to_client, to_server_len)) => {
                        self.counters.handshakes_completed += 1;
                        conn.phase = Phase::Open(t);
                        ServerVerdict::Established {
                            to_client,
                            to_server_len,
                        }
                    }
                    Err(e) => {
                        self.counters.malformed += 1;
                        ServerVerdict::Drop(e.into())
                    }
                }
            }
            Phase::Refused { cookie } if flags.contains(TcpFlags::RST) => {
                set_seq(&mut buf[seg.l4..seg.l4 + seg.hdr_len], cookie.wrapping_add(1));
                ServerVerdict::Forward
            }
            Phase::AwaitingServer(_) | Phase::Refused { .. } | Phase::Reopening => {
                self.counters.unexpected += 1;
                ServerVerdict::Drop(DropReason::Unexpected)
            }
        }
    }
}

#[cfg(test)]
mod tests;
