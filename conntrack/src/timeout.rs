//! Timeouts: Linux's defaults and named policies a rule can attach to a flow.
//!
//! Owns [`Timeouts`] (one lifetime per protocol state, in milliseconds) and [`TimeoutPolicy`]
//! (per-state overrides, the nftables `ct timeout` object). The defaults are the kernel's:
//! `tcp_timeouts[]` in `nf_conntrack_proto_tcp.c`, `udp_timeouts[]` in
//! `nf_conntrack_proto_udp.c`, `nf_ct_icmp_timeout` / `nf_ct_icmpv6_timeout` and
//! `nf_ct_generic_timeout`. Plain data, built on the control side and copied into each shard.

use crate::tcp::TcpState;

const SEC: u32 = 1000;
const MIN: u32 = 60 * SEC;
const DAY: u32 = 24 * 60 * MIN;

/// Longest lifetime a shard accepts: entries keep their expiry as a wrapping 32-bit millisecond
/// clock, compared within half its range (24.8 days).
pub const MAX_TIMEOUT_MS: u32 = 20 * DAY;

/// Lifetimes per protocol state, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP SYN_SENT (Linux: 120 s).
    pub tcp_syn_sent: u32,
    /// TCP SYN_RECV (60 s).
    pub tcp_syn_recv: u32,
    /// TCP ESTABLISHED (5 days).
    pub tcp_established: u32,
    /// TCP FIN_WAIT (120 s).
    pub tcp_fin_wait: u32,
    /// TCP CLOSE_WAIT (60 s).
    pub tcp_close_wait: u32,
    /// TCP LAST_ACK (30 s).
    pub tcp_last_ack: u32,
    /// TCP TIME_WAIT (120 s).
    pub tcp_time_wait: u32,
    /// TCP CLOSE (10 s).
    pub tcp_close: u32,
    /// TCP SYN_SENT2 (120 s).
    pub tcp_syn_sent2: u32,
    /// TCP after `max_retrans` retransmissions or a zero window (300 s).
    pub tcp_retrans: u32,
    /// TCP with unacknowledged data (300 s).
    pub tcp_unacknowledged: u32,
    /// UDP before the flow is a stream (30 s).
    pub udp_unreplied: u32,
    /// UDP stream: replied and still active after 2 s (120 s).
    pub udp_replied: u32,
    /// ICMP echo and other query/answer flows (30 s).
    pub icmp: u32,
    /// ICMPv6 echo and node information flows (30 s).
    pub icmpv6: u32,
    /// Any other protocol (600 s).
    pub generic: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts::LINUX
    }
}

impl Timeouts {
    /// Linux's defaults.
    pub const LINUX: Timeouts = Timeouts {
        tcp_syn_sent: 2 * MIN,
        tcp_syn_recv: 60 * SEC,
        tcp_established: 5 * DAY,
        tcp_fin_wait: 2 * MIN,
        tcp_close_wait: 60 * SEC,
        tcp_last_ack: 30 * SEC,
        tcp_time_wait: 2 * MIN,
        tcp_close: 10 * SEC,
        tcp_syn_sent2: 2 * MIN,
        tcp_retrans: 5 * MIN,
        tcp_unacknowledged: 5 * MIN,
        udp_unreplied: 30 * SEC,
        udp_replied: 120 * SEC,
        icmp: 30 * SEC,
        icmpv6: 30 * SEC,
        generic: 600 * SEC,
    };

    /// The lifetime of a TCP state (`None` for NONE, which no entry keeps).
    pub fn tcp(&self, state: TcpState) -> Option<u32> {
        Some(match state {
            TcpState::None => return None,
            TcpState::SynSent => self.tcp_syn_sent,
            TcpState::SynRecv => self.tcp_syn_recv,
            TcpState::Established => self.tcp_established,
            TcpState::FinWait => self.tcp_fin_wait,
            TcpState::CloseWait => self.tcp_close_wait,
            TcpState::LastAck => self.tcp_last_ack,
            TcpState::TimeWait => self.tcp_time_wait,
            TcpState::Close => self.tcp_close,
            TcpState::SynSent2 => self.tcp_syn_sent2,
        })
    }

    fn fields(&self) -> [(&'static str, u32); 16] {
        [
            ("tcp_syn_sent", self.tcp_syn_sent),
            ("tcp_syn_recv", self.tcp_syn_recv),
            ("tcp_established", self.tcp_established),
            ("tcp_fin_wait", self.tcp_fin_wait),
            ("tcp_close_wait", self.tcp_close_wait),
            ("tcp_last_ack", self.tcp_last_ack),
            ("tcp_time_wait", self.tcp_time_wait),
            ("tcp_close", self.tcp_close),
            ("tcp_syn_sent2", self.tcp_syn_sent2),
            ("tcp_retrans", self.tcp_retrans),
            ("tcp_unacknowledged", self.tcp_unacknowledged),
            ("udp_unreplied", self.udp_unreplied),
            ("udp_replied", self.udp_replied),
            ("icmp", self.icmp),
            ("icmpv6", self.icmpv6),
            ("generic", self.generic),
        ]
    }

    /// Checks every lifetime is between 1 ms and [`MAX_TIMEOUT_MS`]; names the first that is not.
    pub fn validate(&self) -> Result<(), (&'static str, u32)> {
        for (name, ms) in self.fields() {
            if ms == 0 || ms > MAX_TIMEOUT_MS {
                return Err((name, ms));
            }
        }
        Ok(())
    }
}

/// Per-state overrides, the nftables `ct timeout` object: every `Some` replaces the shard's
/// default for flows the policy is attached to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeoutPolicy {
    /// TCP SYN_SENT.
    pub tcp_syn_sent: Option<u32>,
    /// TCP SYN_RECV.
    pub tcp_syn_recv: Option<u32>,
    /// TCP ESTABLISHED.
    pub tcp_established: Option<u32>,
    /// TCP FIN_WAIT.
    pub tcp_fin_wait: Option<u32>,
    /// TCP CLOSE_WAIT.
    pub tcp_close_wait: Option<u32>,
    /// TCP LAST_ACK.
    pub tcp_last_ack: Option<u32>,
    /// TCP TIME_WAIT.
    pub tcp_time_wait: Option<u32>,
    /// TCP CLOSE.
    pub tcp_close: Option<u32>,
    /// TCP SYN_SENT2.
    pub tcp_syn_sent2: Option<u32>,
    /// TCP retransmitting or zero window.
    pub tcp_retrans: Option<u32>,
    /// TCP with unacknowledged data.
    pub tcp_unacknowledged: Option<u32>,
    /// UDP unreplied.
    pub udp_unreplied: Option<u32>,
    /// UDP stream.
    pub udp_replied: Option<u32>,
    /// ICMP.
    pub icmp: Option<u32>,
    /// ICMPv6.
    pub icmpv6: Option<u32>,
    /// Other protocols.
    pub generic: Option<u32>,
}

impl TimeoutPolicy {
    /// `base` with this policy's overrides applied.
    pub fn resolve(&self, base: &Timeouts) -> Timeouts {
        Timeouts {
            tcp_syn_sent: self.tcp_syn_sent.unwrap_or(base.tcp_syn_sent),
            tcp_syn_recv: self.tcp_syn_recv.unwrap_or(base.tcp_syn_recv),
            tcp_established: self.tcp_established.unwrap_or(base.tcp_established),
            tcp_fin_wait: self.tcp_fin_wait.unwrap_or(base.tcp_fin_wait),
            tcp_close_wait: self.tcp_close_wait.unwrap_or(base.tcp_close_wait),
            tcp_last_ack: self.tcp_last_ack.unwrap_or(base.tcp_last_ack),
            tcp_time_wait: self.tcp_time_wait.unwrap_or(base.tcp_time_wait),
            tcp_close: self.tcp_close.unwrap_or(base.tcp_close),
            tcp_syn_sent2: self.tcp_syn_sent2.unwrap_or(base.tcp_syn_sent2),
            tcp_retrans: self.tcp_retrans.unwrap_or(base.tcp_retrans),
            tcp_unacknowledged: self.tcp_unacknowledged.unwrap_or(base.tcp_unacknowledged),
            udp_unreplied: self.udp_unreplied.unwrap_or(base.udp_unreplied),
            udp_replied: self.udp_replied.unwrap_or(base.udp_replied),
            icmp: self.icmp.unwrap_or(base.icmp),
            icmpv6: self.icmpv6.unwrap_or(base.icmpv6),
            generic: self.generic.unwrap_or(base.generic),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_defaults() {
        // tcp_timeouts[] (nf_conntrack_proto_tcp.c), udp_timeouts[], icmp 30 s, generic 600 s.
        let t = Timeouts::default();
        assert_eq!(t.tcp(TcpState::SynSent), Some(120_000));
        assert_eq!(t.tcp(TcpState::Established), Some(432_000_000));
        assert_eq!(t.tcp(TcpState::Close), Some(10_000));
        assert_eq!((t.udp_unreplied, t.udp_replied), (30_000, 120_000));
        assert_eq!((t.icmp, t.generic), (30_000, 600_000));
        assert_eq!(t.validate(), Ok(()));
    }

    #[test]
    fn policy_overrides_only_what_it_names() {
        let p = TimeoutPolicy {
            tcp_established: Some(3_600_000),
            udp_replied: Some(10_000),
            ..TimeoutPolicy::default()
        };
        let t = p.resolve(&Timeouts::LINUX);
        assert_eq!(t.tcp_established, 3_600_000);
        assert_eq!(t.udp_replied, 10_000);
        assert_eq!(t.tcp_syn_sent, 120_000);
        let bad = TimeoutPolicy {
            generic: Some(0),
            ..TimeoutPolicy::default()
        };
        assert_eq!(bad.resolve(&Timeouts::LINUX).validate(), Err(("generic", 0)));
    }
}
