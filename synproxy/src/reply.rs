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

use levee_packet::checksum;
use levee_packet::ip_protocol;
use levee_packet::parse::{FragKind, FrameInfo, L3Info, L4Info};
use levee_packet::tcp::{SeqNum, TcpFlags, TcpRepr, Timestamps};

use crate::cookie::{CookieAddrs, CookieData, CookieTuple, TsOptions};
use crate::frame::{self, Addrs, RewriteError, Segment};
use crate::options::{self, ScannedOptions};
use crate::ratelimit::Limited;
use crate::{DropReason, SynProxy, SynRule, SynVerdict};

/// MSS advertised when the rule gives 0.
const DEFAULT_MSS_V4: u16 = 1460;
const DEFAULT_MSS_V6: u16 = 1440;

impl CookieTuple {
    /// The cookie tuple of a segment sent by the client.
    pub(crate) fn of_client_segment(seg: &Segment) -> CookieTuple {
        Self::of_client(seg.addrs, seg.src_port, seg.dst_port)
    }

    /// The cookie tuple of a client segment with addresses `addrs` (client → server).
    #[inline(always)]
    pub(crate) fn of_client(addrs: Addrs, client_port: u16, server_port: u16) -> CookieTuple {
        let addrs = match addrs {
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
            client_port,
            server_port,
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
        let syn = match Syn::of_plain_v4(buf, frame_len, info) {
            Some(syn) => syn,
            None => {
                let frame = &buf[..frame_len.min(buf.len())];
                let seg = Segment::locate(frame, info)?;
                Syn {
                    l3: seg.l3,
                    opts: seg.l4 + levee_packet::tcp::HEADER_LEN..seg.l4 + seg.hdr_len,
                    addrs: seg.addrs,
                    src_port: seg.src_port,
                    dst_port: seg.dst_port,
                    seq: seg.seq,
                    flags: seg.flags,
                    checks: Checks::Segment(seg),
                }
            }
        };
        if !syn.flags.contains(TcpFlags::SYN)
            || syn
                .flags
                .intersects(TcpFlags::ACK | TcpFlags::RST | TcpFlags::FIN)
        {
            return Err(DropReason::NotEligible);
        }
        self.counters.syn_received += 1;
        if self.config.verify_checksums && !syn.checksums_ok(&buf[..frame_len.min(buf.len())]) {
            return Err(DropReason::BadChecksum);
        }
        let opts = options::scan(&buf[syn.opts.clone()]);
        // The reply goes to the SYN's source: that is whom a spoofed flood would reflect onto.
        let (dst, v6) = match syn.addrs {
            Addrs::V4 { src, .. } => (u128::from(u32::from(src)), false),
            Addrs::V6 { src, .. } => (u128::from(src), true),
        };
        if let Err(Limited::Prefix | Limited::Worker) = self.limiter.allow(dst, v6, self.now_ns) {
            return Err(DropReason::RateLimited);
        }
        let tuple = CookieTuple::of_client(syn.addrs, syn.src_port, syn.dst_port);
        let data = cookie_data(&tuple, syn.flags, &opts, rule, self.config.ecn);
        let cookie = self
            .jar
            .make(&tuple, syn.seq, data)
            .map_err(|_| DropReason::Malformed)?;
        let rule_mss = match (rule.mss, syn.addrs.is_v6()) {
            (0, false) => DEFAULT_MSS_V4,
            (0, true) => DEFAULT_MSS_V6,
            (mss, _) => mss,
        };
        let mut synack = SynAck {
            addrs: syn.addrs.reversed(),
            ttl: if syn.addrs.is_v6() {
                self.config.hop_limit
            } else {
                self.config.ttl
            },
            src_port: syn.dst_port,
            dst_port: syn.src_port,
            seq: cookie,
            ack: syn.seq.wrapping_add(1),
            ece: false,
            mss: opts.mss.map_or(rule_mss, |m| m.min(rule_mss)),
            wscale: None,
            sack_perm: false,
            ts: None,
        };
        if let Some(ts) = data.ts {
            synack.ece = ts.ecn;
            synack.wscale = ts
                .wscale
                .and(rule.wscale.map(|w| w.min(crate::cookie::MAX_WSCALE)));
            synack.sack_perm = ts.sack_perm;
            let tsval = ts.stamp(self.ts_clock).map_err(|_| DropReason::Malformed)?;
            let tsecr = opts.ts.map_or(0, |(tsval, _)| tsval);
            synack.ts = Some(Timestamps { tsval, tsecr });
        }
        // Everything needed is in locals now; the SYN's bytes may be overwritten.
        let len = synack.write(buf, syn.l3)?;
        frame::swap_macs(buf);
        Ok(len)
    }
}

/// What the SYN-ACK is made from: where the SYN's IP header and options lie, and its
/// fields.
struct Syn {
    l3: usize,
    opts: std::ops::Range<usize>,
    addrs: Addrs,
    src_port: u16,
    dst_port: u16,
    seq: u32,
    flags: TcpFlags,
    checks: Checks,
}

/// How to verify the SYN's checksums.
enum Checks {
    /// An IPv4 header of 20 bytes at the SYN's `l3`, the TCP segment after it up to `end`.
    PlainV4 { end: usize },
    /// Any other shape, as [`Segment::checksums_ok`] does.
    Segment(Segment),
}

impl Syn {
    /// The SYN of an IPv4 frame without IP options, read straight from the frame and its
    /// parse (the flood's shape, and nearly every real SYN's); `None` for anything else,
    /// which [`Segment::locate`] then describes (and refuses when it must). Accepts exactly
    /// the frames `Segment::locate` accepts of that shape, with the same fields.
    #[inline(always)]
    fn of_plain_v4(buf: &[u8], frame_len: usize, info: &FrameInfo) -> Option<Syn> {
        let L3Info::Ipv4(ip) = &info.l3 else {
            return None;
        };
        let l3 = usize::from(info.l3_offset);
        let l4 = usize::from(ip.l4_offset);
        let end = l4 + usize::from(ip.l4_len);
        if l4 != l3 + levee_packet::ipv4::HEADER_LEN
            || ip.protocol != ip_protocol::TCP
            || ip.frag != FragKind::Unfragmented
            || !matches!(ip.l4, L4Info::Tcp { .. })
            || end > frame_len.min(buf.len())
        {
            return None;
        }
        let t: &[u8; 20] = buf.get(l4..l4 + 20)?.try_into().ok()?;
        let hdr_len = usize::from(t[12] >> 4) * 4;
        if hdr_len < 20 || l4 + hdr_len > end {
            return None;
        }
        Some(Syn {
            l3,
            opts: l4 + 20..l4 + hdr_len,
            addrs: Addrs::V4 {
                src: ip.src,
                dst: ip.dst,
            },
            src_port: u16::from_be_bytes([t[0], t[1]]),
            dst_port: u16::from_be_bytes([t[2], t[3]]),
            seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
            flags: TcpFlags::from_bits(t[13]),
            checks: Checks::PlainV4 { end },
        })
    }

    /// Whether the IPv4 header checksum (IPv4) and the TCP checksum verify.
    #[inline(always)]
    fn checksums_ok(&self, frame: &[u8]) -> bool {
        match (&self.checks, self.addrs) {
            (&Checks::PlainV4 { end }, Addrs::V4 { src, dst }) => {
                let l4 = self.l3 + levee_packet::ipv4::HEADER_LEN;
                let (Some(h), Some(t)) = (frame.get(self.l3..l4), frame.get(l4..end)) else {
                    return false;
                };
                checksum::verify(h)
                    && checksum::add(
                        checksum::pseudo_header_v4(src, dst, ip_protocol::TCP, t.len() as u16),
                        checksum::sum(t),
                    ) == 0xFFFF
            }
            (Checks::Segment(seg), _) => seg.checksums_ok(frame),
            (Checks::PlainV4 { .. }, Addrs::V6 { .. }) => false,
        }
    }
}

/// A SYN-ACK as plain values: what [`SynAck::write`] lays out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynAck {
    /// Its addresses (server → client).
    pub addrs: Addrs,
    /// TTL or hop limit.
    pub ttl: u8,
    /// Source port (the server's).
    pub src_port: u16,
    /// Destination port (the client's).
    pub dst_port: u16,
    /// Sequence number: the cookie.
    pub seq: u32,
    /// Acknowledgment number: client ISN + 1.
    pub ack: u32,
    /// ECE flag (ECN agreed).
    pub ece: bool,
    /// MSS option.
    pub mss: u16,
    /// Window scale option.
    pub wscale: Option<u8>,
    /// SACK-permitted option.
    pub sack_perm: bool,
    /// Timestamps option.
    pub ts: Option<Timestamps>,
}

impl SynAck {
    /// The same segment as a levee-packet [`TcpRepr`] (the reference [`SynAck::write`] is
    /// tested against).
    pub fn tcp_repr(&self) -> TcpRepr<'static> {
        let mut flags = TcpFlags::SYN | TcpFlags::ACK;
        if self.ece {
            flags |= TcpFlags::ECE;
        }
        let mut r = TcpRepr::new(
            self.src_port,
            self.dst_port,
            SeqNum(self.seq),
            SeqNum(self.ack),
            flags,
            0,
        );
        r.max_seg_size = Some(self.mss);
        r.window_scale = self.wscale;
        r.sack_permitted = self.sack_perm;
        r.timestamps = self.ts;
        r
    }

    /// Writes a fresh IP header at `l3` and the SYN-ACK after it, checksums filled, and pads
    /// to 60 bytes when there is room; returns the frame length. Byte for byte what
    /// [`frame::emit`] writes for [`SynAck::tcp_repr`] (options in Linux's layout, IPv4 with
    /// DF and identification 0), in straight-line code: this is the flood path, where the
    /// general builders cost about 20 ns more per SYN.
    #[inline(always)]
    pub fn write(&self, buf: &mut [u8], l3: usize) -> Result<usize, RewriteError> {
        // Options length first, so every piece below is a fixed-size store (no memmove).
        let ts_len = match (self.ts, self.sack_perm) {
            (Some(_), _) => 12,
            (None, true) => 4,
            (None, false) => 0,
        };
        let n = 4 + ts_len + if self.wscale.is_some() { 4 } else { 0 };
        let tcp_len = 20 + n;
        let ip_len = if self.addrs.is_v6() { 40 } else { 20 };
        let l4 = l3 + ip_len;
        let end = l4 + tcp_len;
        if buf.len() < end {
            return Err(RewriteError::BufferTooShort {
                needed: end,
                len: buf.len(),
            });
        }
        let mut flags = TcpFlags::SYN | TcpFlags::ACK;
        if self.ece {
            flags |= TcpFlags::ECE;
        }
        let t = &mut buf[l4..end];
        t[0..2].copy_from_slice(&self.src_port.to_be_bytes());
        t[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
        t[4..8].copy_from_slice(&self.seq.to_be_bytes());
        t[8..12].copy_from_slice(&self.ack.to_be_bytes());
        t[12] = ((tcp_len / 4) as u8) << 4;
        t[13] = flags.bits();
        t[14..20].fill(0); // window 0, checksum (for now), urgent pointer
        let mss = self.mss.to_be_bytes();
        t[20..24].copy_from_slice(&[2, 4, mss[0], mss[1]]);
        let mut at = 24;
        if let Some(ts) = self.ts {
            let head = if self.sack_perm {
                [4, 2, 8, 10]
            } else {
                [1, 1, 8, 10]
            };
            t[at..at + 4].copy_from_slice(&head);
            t[at + 4..at + 8].copy_from_slice(&ts.tsval.to_be_bytes());
            t[at + 8..at + 12].copy_from_slice(&ts.tsecr.to_be_bytes());
            at += 12;
        } else if self.sack_perm {
            t[at..at + 4].copy_from_slice(&[1, 1, 4, 2]);
            at += 4;
        }
        if let Some(ws) = self.wscale {
            t[at..at + 4].copy_from_slice(&[1, 3, 3, ws]);
        }
        // The checksum from the values, not by reading back what was just stored (which would
        // stall on store forwarding). Every option piece is 4-byte aligned, so its words are
        // exactly as written above. `tcp_len` <= 40 fits every width below.
        let pseudo = match self.addrs {
            Addrs::V4 { src, dst } => checksum::pseudo_header_v4(src, dst, ip_protocol::TCP, tcp_len as u16),
            Addrs::V6 { src, dst } => checksum::pseudo_header_v6(src, dst, ip_protocol::TCP, tcp_len as u32),
        };
        let words32 = |v: u32| u64::from(v >> 16) + u64::from(v & 0xFFFF);
        let mut acc = u64::from(pseudo)
            + u64::from(self.src_port)
            + u64::from(self.dst_port)
            + words32(self.seq)
            + words32(self.ack)
            + (((tcp_len / 4) as u64) << 12 | u64::from(flags.bits()))
            + 0x0204
            + u64::from(self.mss);
        if let Some(ts) = self.ts {
            acc += if self.sack_perm { 0x0402 } else { 0x0101 };
            acc += 0x080A + words32(ts.tsval) + words32(ts.tsecr);
        } else if self.sack_perm {
            acc += 0x0101 + 0x0402;
        }
        if let Some(ws) = self.wscale {
            acc += 0x0103 + 0x0300 + u64::from(ws);
        }
        let sum = checksum::fold(acc);
        t[16..18].copy_from_slice(&(!sum).to_be_bytes());
        let h = &mut buf[l3..l4];
        match self.addrs {
            Addrs::V4 { src, dst } => {
                let total = (ip_len + tcp_len) as u16;
                let (s, d) = (u32::from(src), u32::from(dst));
                h[0] = 0x45;
                h[1] = 0;
                h[2..4].copy_from_slice(&total.to_be_bytes());
                h[4..6].fill(0);
                h[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF
                h[8] = self.ttl;
                h[9] = ip_protocol::TCP;
                h[12..16].copy_from_slice(&s.to_be_bytes());
                h[16..20].copy_from_slice(&d.to_be_bytes());
                let acc = 0x4500
                    + u64::from(total)
                    + 0x4000
                    + (u64::from(self.ttl) << 8 | u64::from(ip_protocol::TCP))
                    + u64::from(s >> 16)
                    + u64::from(s & 0xFFFF)
                    + u64::from(d >> 16)
                    + u64::from(d & 0xFFFF);
                h[10..12].copy_from_slice(&(!checksum::fold(acc)).to_be_bytes());
            }
            Addrs::V6 { src, dst } => {
                h[0..4].copy_from_slice(&0x6000_0000u32.to_be_bytes());
                h[4..6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
                h[6] = ip_protocol::TCP;
                h[7] = self.ttl;
                h[8..24].copy_from_slice(&src.octets());
                h[24..40].copy_from_slice(&dst.octets());
            }
        }
        Ok(frame::pad(buf, end))
    }
}

#[cfg(test)]
mod tests;
