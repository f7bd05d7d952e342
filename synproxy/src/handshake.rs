//! The backend handshake: the client's cookie ACK becomes the server's SYN, and the server's
//! SYN-ACK becomes the ACK to the server plus the window update to the client.
//!
//! Owns [`SynProxy::client_ack`] / [`SynProxy::client_ack_into`] (called by the worker for a
//! client segment with no connection that the `synproxy` rule took) and the builders that
//! [`crate::translate`] uses for retransmissions and for completing the handshake.
//!
//! Cookie ACK (Linux `synproxy_recv_client_ack`, `__cookie_v4_check`): eligible are segments
//! with ACK and without SYN or RST (FIN, PSH and a payload are allowed: a client may send its
//! request right behind the ACK, and a lost ACK is then validated by the data segment). The
//! cookie is `ack - 1`, the client's ISN `seq - 1`; the check costs one SipHash whatever the
//! input ([`crate::cookie`]). An invalid ACK is dropped silently.
//!
//! The server's SYN (Linux `synproxy_send_server_syn`) is written over the ACK, keeping its link
//! header (the ACK already travels towards the server): the client's addresses and ports,
//! TTL and DSCP, `seq` = client ISN, `ack` = 0, SYN (+ ECE|CWR when ECN was agreed), the
//! client's window (unscaled for the SYN), options MSS (from the cookie), timestamps (the
//! client's TSval, TSecr 0), SACK-permitted and the client's window scale as the cookie says.
//!
//! The server's SYN-ACK (Linux `synproxy_send_server_ack` / `synproxy_send_client_ack`):
//! - ACK to the server: the SYN-ACK's link header with the MAC addresses swapped, client →
//!   server, `seq` = client ISN + 1, `ack` = server ISN + 1, the client's window converted to the
//!   server's view, timestamps echoed (TSval = the client's, TSecr = the server's).
//! - window update to the client, written over the SYN-ACK (same link header, server → client):
//!   `seq` = cookie + 1, `ack` = client ISN + 1, the server's window in the client's view,
//!   timestamps in the client's clock base (TSval = our SYN-ACK's).

use levee_packet::parse::FrameInfo;
use levee_packet::tcp::{SeqNum, TcpFlags, TcpRepr, Timestamps};

use crate::cookie::CookieTuple;
use crate::frame::{self, IpOut, RewriteError, Segment};
use crate::options::{self, ScannedOptions};
use crate::translate::{Pending, ProxyConn, Translation, WinScale};
use crate::{AckVerdict, DropReason, SynProxy, SynRule};

impl SynProxy {
    /// Checks the cookie of a client ACK that has no connection; when it verifies, writes the
    /// server's SYN over the ACK in `buf` (which, as for [`SynProxy::answer_syn`], may extend
    /// past `frame_len` into the tailroom: the SYN needs at most `l3 + 20 or 40 + 40` bytes) and
    /// returns the connection state to store. Counts `cookie_valid`, or `ack_flood_dropped`
    /// (and `cookie_invalid` for a cookie that did not verify).
    pub fn client_ack(
        &mut self,
        buf: &mut [u8],
        frame_len: usize,
        info: &FrameInfo,
        rule: &SynRule,
    ) -> AckVerdict {
        let frame = &buf[..frame_len.min(buf.len())];
        let (seg, pending) = match self.check_ack(frame, info, rule) {
            Ok(v) => v,
            Err(reason) => return AckVerdict::Drop(reason),
        };
        self.finish_ack(write_server_syn(buf, &seg, &pending), pending)
    }

    /// As [`SynProxy::client_ack`], but writes the server's SYN (with the ACK's link header) into
    /// `out` and leaves the ACK's frame as it was.
    pub fn client_ack_into(
        &mut self,
        frame: &[u8],
        info: &FrameInfo,
        out: &mut [u8],
        rule: &SynRule,
    ) -> AckVerdict {
        let (seg, pending) = match self.check_ack(frame, info, rule) {
            Ok(v) => v,
            Err(reason) => return AckVerdict::Drop(reason),
        };
        let written =
            frame::copy_link(frame, seg.l3, out).and_then(|()| write_server_syn(out, &seg, &pending));
        self.finish_ack(written, pending)
    }

    fn finish_ack(&mut self, written: Result<usize, RewriteError>, pending: Pending) -> AckVerdict {
        match written {
            Ok(len) => AckVerdict::Open {
                conn: ProxyConn::awaiting(pending),
                len,
            },
            Err(e) => {
                self.counters.malformed += 1;
                AckVerdict::Drop(e.into())
            }
        }
    }

    /// Validates the segment and its cookie; counts the outcome.
    fn check_ack(
        &mut self,
        frame: &[u8],
        info: &FrameInfo,
        rule: &SynRule,
    ) -> Result<(Segment, Pending), DropReason> {
        let mut result = self.check_ack_inner(frame, info, rule, 1);
        if matches!(result, Err(DropReason::CookieInvalid)) && self.probe_budget() {
            // Perhaps a zero-window probe: when the client's cookie ACK was lost, all it sends
            // (our SYN-ACK advertised window 0) are probes with seq = ISN, not ISN + 1. A
            // second check reads the ISN that way, for empty segments only and within a small
            // per-second budget, so an ACK flood still costs one hash per ACK.
            if let Ok(v) = self.check_ack_inner(frame, info, rule, 0) {
                self.counters.probe_recovered += 1;
                result = Ok(v);
            }
        }
        match result {
            Ok(_) => self.counters.cookie_valid += 1,
            Err(reason) => {
                self.counters.ack_flood_dropped += 1;
                match reason {
                    DropReason::CookieInvalid => self.counters.cookie_invalid += 1,
                    DropReason::NotEligible => {}
                    _ => self.counters.malformed += 1,
                }
            }
        }
        result
    }

    /// Second cookie checks (zero-window probes) allowed per second, per worker.
    const PROBE_CHECKS_PER_SEC: u32 = 256;

    /// Whether a second cookie check may run now (see [`SynProxy::check_ack`]).
    fn probe_budget(&mut self) -> bool {
        let sec = self.now_ns / 1_000_000_000;
        if sec != self.probe_sec {
            self.probe_sec = sec;
            self.probe_left = Self::PROBE_CHECKS_PER_SEC;
        }
        if self.probe_left == 0 {
            return false;
        }
        self.probe_left -= 1;
        true
    }

    /// `isn_gap`: how far the segment's seq is past the client's ISN (1 for the ACK that
    /// completes the handshake, 0 for a zero-window probe, which must carry no data).
    #[inline]
    fn check_ack_inner(
        &self,
        frame: &[u8],
        info: &FrameInfo,
        rule: &SynRule,
        isn_gap: u32,
    ) -> Result<(Segment, Pending), DropReason> {
        let seg = Segment::locate(frame, info)?;
        if !seg.flags.contains(TcpFlags::ACK) || seg.flags.intersects(TcpFlags::SYN | TcpFlags::RST) {
            return Err(DropReason::NotEligible);
        }
        if isn_gap == 0 && (seg.payload_len() > 0 || seg.flags.intersects(TcpFlags::FIN)) {
            return Err(DropReason::CookieInvalid);
        }
        if self.config.verify_checksums && !seg.checksums_ok(frame) {
            return Err(DropReason::BadChecksum);
        }
        let opts = options::scan(seg.options(frame));
        let tuple = CookieTuple::of_client_segment(&seg);
        let isn = seg.seq.wrapping_sub(isn_gap);
        let cookie = seg.ack.wrapping_sub(1);
        let decoded = self
            .jar
            .check(&tuple, isn, cookie, opts.ts.map(|(_, tsecr)| tsecr))
            .map_err(|_| DropReason::CookieInvalid)?;
        let ts_opts = match decoded.ts {
            Some(o) => 0x40 | o.encode().map_err(|_| DropReason::CookieInvalid)?,
            None => 0,
        };
        let (client_tsval, our_tsval) = opts.ts.unwrap_or((0, 0));
        Ok((
            seg,
            Pending {
                cookie,
                client_isn: isn,
                our_tsval,
                client_tsval,
                mss: decoded.mss,
                client_win: seg.window,
                ts_opts,
                adv_wscale: rule.wscale.unwrap_or(0).min(crate::cookie::MAX_WSCALE),
                client_ttl: seg.ttl,
            },
        ))
    }
}

/// Writes the server's SYN for `p` over the client segment `seg` in `buf` (its link header is
/// kept: the segment travelled towards the server). Returns the frame length.
pub(crate) fn write_server_syn(buf: &mut [u8], seg: &Segment, p: &Pending) -> Result<usize, RewriteError> {
    let ts = p.ts();
    let mut flags = TcpFlags::SYN;
    if ts.is_some_and(|o| o.ecn) {
        flags |= TcpFlags::ECE | TcpFlags::CWR;
    }
    // A SYN's window is never scaled: give the client's window in bytes.
    let window = match p.client_wscale() {
        Some(shift) => WinScale { from: shift, to: 0 }.apply(p.client_win),
        None => p.client_win,
    };
    let mut repr = TcpRepr::new(
        seg.src_port,
        seg.dst_port,
        SeqNum(p.client_isn),
        SeqNum(0),
        flags,
        window,
    );
    repr.max_seg_size = Some(p.mss);
    if let Some(o) = ts {
        repr.window_scale = o.wscale;
        repr.sack_permitted = o.sack_perm;
        repr.timestamps = Some(Timestamps {
            tsval: p.client_tsval,
            tsecr: 0,
        });
    }
    let ip = IpOut {
        addrs: seg.addrs,
        ttl: seg.ttl,
        dscp: seg.dscp,
        flow_label: seg.flow_label,
    };
    frame::emit(buf, seg.l3, &ip, &repr)
}

/// Completes the handshake on the server's SYN-ACK `seg` (in `buf[..frame_len]`): writes the
/// ACK for the server into `to_server` and the window update for the client over the SYN-ACK.
/// Returns the translation state and the two frame lengths (client, server). Nothing is written
/// unless both fit.
pub(crate) fn complete(
    buf: &mut [u8],
    frame_len: usize,
    seg: &Segment,
    p: &Pending,
    to_server: &mut [u8],
) -> Result<(Translation, usize, usize), RewriteError> {
    let frame = &buf[..frame_len];
    let opts: ScannedOptions = options::scan(seg.options(frame));
    let client_ts = p.ts();
    let client_ws = p.client_wscale();
    let server_ws = opts.wscale.filter(|_| client_ws.is_some());
    let ts_both = client_ts.is_some() && opts.ts.is_some();
    let (server_tsval, server_tsecr) = opts.ts.unwrap_or((0, 0));
    let t = Translation {
        seq_off: p.cookie.wrapping_sub(seg.seq),
        ts_off: if ts_both {
            server_tsval.wrapping_sub(p.our_tsval)
        } else {
            0
        },
        c2s: WinScale {
            from: client_ws.unwrap_or(0),
            to: server_ws.and(client_ws).unwrap_or(0),
        },
        s2c: WinScale {
            from: server_ws.unwrap_or(0),
            to: client_ws.map_or(0, |_| p.adv_wscale),
        },
        flags: if ts_both { Translation::TS } else { 0 },
    };

    // ACK to the server: back out of the port the SYN-ACK came in on.
    let mut ack = TcpRepr::new(
        seg.dst_port,
        seg.src_port,
        SeqNum(p.client_isn.wrapping_add(1)),
        SeqNum(seg.seq.wrapping_add(1)),
        TcpFlags::ACK,
        t.c2s.apply(p.client_win),
    );
    if ts_both {
        ack.timestamps = Some(Timestamps {
            tsval: server_tsecr,
            tsecr: server_tsval,
        });
    }
    let ack_ip = IpOut {
        addrs: seg.addrs.reversed(),
        ttl: p.client_ttl,
        dscp: seg.dscp,
        flow_label: 0,
    };

    // Window update to the client: over the SYN-ACK, same direction and link header. The
    // SYN-ACK's window is unscaled; the client reads ours scaled by the shift we advertised.
    let mut update = TcpRepr::new(
        seg.src_port,
        seg.dst_port,
        SeqNum(p.cookie.wrapping_add(1)),
        SeqNum(seg.ack),
        TcpFlags::ACK,
        WinScale {
            from: 0,
            to: t.s2c.to,
        }
        .apply(seg.window),
    );
    if client_ts.is_some() {
        update.timestamps = Some(Timestamps {
            tsval: p.our_tsval,
            tsecr: if ts_both { server_tsecr } else { p.client_tsval },
        });
    }
    let update_ip = IpOut {
        addrs: seg.addrs,
        ttl: seg.ttl,
        dscp: seg.dscp,
        flow_label: seg.flow_label,
    };
    // Check both sizes before writing either, so a failure leaves both buffers untouched.
    let ip_len = if seg.addrs.is_v6() { 40 } else { 20 };
    for (len, needed) in [
        (to_server.len(), seg.l3 + ip_len + ack.buffer_len()),
        (buf.len(), seg.l3 + ip_len + update.buffer_len()),
    ] {
        if len < needed {
            return Err(RewriteError::BufferTooShort { needed, len });
        }
    }
    frame::copy_link(&buf[..frame_len], seg.l3, to_server)?;
    frame::swap_macs(to_server);
    let to_server_len = frame::emit(to_server, seg.l3, &ack_ip, &ack)?;
    let to_client_len = frame::emit(buf, seg.l3, &update_ip, &update)?;
    Ok((t, to_client_len, to_server_len))
}

#[cfg(test)]
mod tests;
