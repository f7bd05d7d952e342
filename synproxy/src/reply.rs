//! SYN → SYN-ACK, rewritten in place in the SYN's own buffer.
//!
//! Owns [`SynProxy::answer_syn`] and the choice of the SYN-ACK's options; called by the worker
//! for a client SYN that the `synproxy` rule took and that has no connection, and by
//! [`SynProxy::client_segment`] for a SYN that reopens a closed connection.
//!
//! As Linux's `synproxy_send_client_synack`: addresses and ports swapped, sequence number = the
//! cookie, acknowledgment = client ISN + 1, window 0 (the client must wait for the window
//! update that follows the server's SYN-ACK), ECE when ECN was agreed; options MSS, then
//! SACK-permitted / timestamps / window scale only when the client sent the timestamp option,
//! since that is where the cookie remembers them. Differences: the MSS advertised is the smaller
//! of the rule's and the client's (Linux advertises the rule's), and the frame is rewritten in
//! place (MAC addresses swapped, VLAN tags kept, fresh IP header without options) instead of
//! allocated.
//!
//! Buffer contract: `buf` starts at the frame's first byte and may extend past `frame_len` into
//! the mbuf's tailroom. The SYN-ACK needs `l3 + 20 (IPv4) or 40 (IPv6) + 20 + options` bytes,
//! at most `l3 + 80`; most SYNs carry options at least as long (a Linux SYN has 20 bytes), so it
//! usually fits in the frame itself. The returned length replaces the mbuf's data length.

use levee_packet::parse::FrameInfo;
use levee_packet::tcp::{SeqNum, TcpFlags, TcpRepr, Timestamps};

use crate::cookie::{CookieAddrs, CookieData, CookieTuple, TsOptions};
use crate::frame::{self, Addrs, IpOut, Segment};
use crate::options::{self, ScannedOptions};
use crate::ratelimit::Limited;
use crate::{DropReason, SynProxy, SynRule, SynVerdict};

/// MSS advertised when the rule gives 0.
const DEFAULT_MSS_V4: u16 = 1460;
const DEFAULT_MSS_V6: u16 = 1440;

impl CookieTuple {
    /// The cookie tuple of a segment sent by the client.
    pub(crate) fn of_client_segment(seg: &Segment) -> CookieTuple {
        let addrs = match seg.addrs {
            Addrs::V4 { src, dst } => CookieAddrs::V4 {
                client: src.octets(),
                server: dst.octets(),
            },
            Addrs::V6 { src, dst } => CookieAddrs::V6 {
                client: src.octets(),
                server: dst.octets(),
            },
        };
        CookieTuple {
            addrs,
            client_port: seg.src_port,
            server_port: seg.dst_port,
        }
    }
}

/// What the cookie remembers of a SYN under `rule`: the MSS index, and the options for the
/// timestamp when both the rule and the client want timestamps.
pub fn cookie_data(
    tuple: &CookieTuple,
    syn_flags: TcpFlags,
    opts: &ScannedOptions,
    rule: &SynRule,
    ecn: bool,
) -> CookieData {
    let ts = (rule.timestamps && opts.ts.is_some()).then(|| TsOptions {
        wscale: if rule.wscale.is_some() { opts.wscale } else { None },
        sack_perm: rule.sack_perm && opts.sack_perm,
        ecn: ecn && syn_flags.contains(TcpFlags::ECE | TcpFlags::CWR),
    });
    CookieData {
        mss_index: tuple.mss_index(opts.mss),
        ts,
    }
}

impl SynProxy {
    /// Answers a client SYN (no connection exists) with a SYN-ACK carrying a cookie, written
    /// over the SYN in `buf` (the frame is `buf[..frame_len]`, `info` its `parse_frame`
    /// result); see the module documentation for the buffer contract. Creates no state.
    ///
    /// Eligible: SYN without ACK, RST or FIN, unfragmented, checksums good (when
    /// [`crate::Config::verify_checksums`]). Counts `syn_received` for every SYN, then
    /// `reply_ratelimited` or `synack_sent`.
    pub fn answer_syn(
        &mut self,
        buf: &mut [u8],
        frame_len: usize,
        info: &FrameInfo,
        rule: &SynRule,
    ) -> SynVerdict {
        match self.synack(buf, frame_len, info, rule) {
            Ok(len) => {
                self.counters.synack_sent += 1;
                SynVerdict::Reply { len }
            }
            Err(reason) => {
                match reason {
                    DropReason::RateLimited => self.counters.reply_ratelimited += 1,
                    DropReason::NotEligible => {}
                    _ => self.counters.malformed += 1,
                }
                SynVerdict::Drop(reason)
            }
        }
    }

    fn synack(
        &mut self,
        buf: &mut [u8],
        frame_len: usize,
        info: &FrameInfo,
        rule: &SynRule,
    ) -> Result<usize, DropReason> {
        let frame = &buf[..frame_len.min(buf.len())];
        let seg = Segment::locate(frame, info)?;
        if !seg.flags.contains(TcpFlags::SYN)
            || seg
                .flags
                .intersects(TcpFlags::ACK | TcpFlags::RST | TcpFlags::FIN)
        {
            return Err(DropReason::NotEligible);
        }
        self.counters.syn_received += 1;
        if self.config.verify_checksums && !seg.checksums_ok(frame) {
            return Err(DropReason::BadChecksum);
        }
        let opts = options::scan(seg.options(frame));
        // The reply goes to the SYN's source: that is whom a spoofed flood would reflect onto.
        let (dst, v6) = match seg.addrs {
            Addrs::V4 { src, .. } => (u128::from(u32::from(src)), false),
            Addrs::V6 { src, .. } => (u128::from(src), true),
        };
        if let Err(Limited::Prefix | Limited::Worker) = self.limiter.allow(dst, v6, self.now_ns) {
            return Err(DropReason::RateLimited);
        }
        let tuple = CookieTuple::of_client_segment(&seg);
        let data = cookie_data(&tuple, seg.flags, &opts, rule, self.config.ecn);
        let cookie = self
            .jar
            .make(&tuple, seg.seq, data)
            .map_err(|_| DropReason::Malformed)?;
        let rule_mss = match (rule.mss, seg.addrs.is_v6()) {
            (0, false) => DEFAULT_MSS_V4,
            (0, true) => DEFAULT_MSS_V6,
            (mss, _) => mss,
        };
        let mut flags = TcpFlags::SYN | TcpFlags::ACK;
        let mut repr = TcpRepr::new(
            seg.dst_port,
            seg.src_port,
            SeqNum(cookie),
            SeqNum(seg.seq.wrapping_add(1)),
            flags,
            0,
        );
        repr.max_seg_size = Some(opts.mss.map_or(rule_mss, |m| m.min(rule_mss)));
        if let Some(ts) = data.ts {
            if ts.ecn {
                flags |= TcpFlags::ECE;
                repr.flags = flags;
            }
            repr.window_scale = ts
                .wscale
                .and(rule.wscale.map(|w| w.min(crate::cookie::MAX_WSCALE)));
            repr.sack_permitted = ts.sack_perm;
            let tsval = ts.stamp(self.ts_clock).map_err(|_| DropReason::Malformed)?;
            let tsecr = opts.ts.map_or(0, |(tsval, _)| tsval);
            repr.timestamps = Some(Timestamps { tsval, tsecr });
        }
        let ip = IpOut {
            addrs: seg.addrs.reversed(),
            ttl: if seg.addrs.is_v6() {
                self.config.hop_limit
            } else {
                self.config.ttl
            },
            dscp: 0,
            flow_label: 0,
        };
        // Everything needed is in locals now; the SYN's bytes may be overwritten.
        let len = frame::emit(buf, seg.l3, &ip, &repr)?;
        frame::swap_macs(buf);
        Ok(len)
    }
}

#[cfg(test)]
mod tests;
