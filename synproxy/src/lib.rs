//! levee's SYN proxy core, sans-IO: SYN cookies, the SYN-ACK rewritten in place, the backend
//! handshake, and sequence-number / SACK / timestamp translation for the life of a connection.
//!
//! This crate owns the protocol (see docs/ARCHITECTURE.md, "The SYN proxy"); the dataplane
//! worker owns the I/O. One [`SynProxy`] per worker holds the cookie jar, the reply limiter and
//! the counters; it is driven from that worker's thread only, never shared. Nothing here reads
//! a clock, allocates after construction, or touches DPDK: the worker tells it the time once
//! per burst ([`SynProxy::set_now`]) and hands it frames as byte slices with the
//! [`levee_packet::FrameInfo`] it already parsed; every call returns a verdict saying what the
//! buffer now holds and where to send it.
//!
//! The paths, after Linux's `nf_synproxy_core.c` / `nft_synproxy.c` (behaviour matched, code not
//! copied):
//!
//! | segment | state (conntrack extension) | call | result |
//! |---|---|---|---|
//! | client SYN | none | [`SynProxy::answer_syn`] | SYN-ACK with a cookie, in place, back out of the incoming port; no state |
//! | client ACK | none | [`SynProxy::client_ack`] | valid cookie: the server's SYN (in place), and a new [`ProxyConn`] to store; invalid: drop (one SipHash) |
//! | any client segment | [`ProxyConn`] | [`SynProxy::client_segment`] | translate and forward; re-send the SYN (retransmitted ACK); answer a SYN on a closed connection (reopen) |
//! | any server segment | [`ProxyConn`] | [`SynProxy::server_segment`] | the server's SYN-ACK becomes the window update to the client (in place) plus the ACK to the server; later segments are translated |
//!
//! Module map: [`cookie`] (the MAC, the counter, secrets), [`options`] (one bounded pass over
//! TCP options), [`frame`] (offsets, checksums, emitting IP + TCP after a link header),
//! [`reply`] (SYN → SYN-ACK), [`handshake`] (ACK → server SYN, server SYN-ACK → ACK + window
//! update), [`translate`] ([`ProxyConn`] and in-place translation with RFC 1624 checksum
//! updates), [`ratelimit`] (reply limits), [`counters`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cookie;
pub mod counters;
pub mod frame;
pub mod handshake;
pub mod options;
pub mod ratelimit;
pub mod reply;
pub mod translate;

#[cfg(test)]
mod testutil;

#[cfg(test)]
mod tests;

use thiserror::Error;

pub use cookie::{CookieError, CookieJar, CookieSchedule, MasterSecret};
pub use counters::Counters;
pub use ratelimit::{PrefixLimit, RateLimit, ReplyLimiter};
pub use translate::{Pending, Phase, ProxyConn, Translation, WinScale};

/// Default TTL and hop limit of the packets levee originates (Linux's default).
pub const DEFAULT_TTL: u8 = 64;

/// Settings of one worker's SYN proxy (the same on every worker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Counter period, secret rotation and clock-skew allowance.
    pub schedule: CookieSchedule,
    /// TTL of SYN-ACKs and of the ACKs sent to servers (IPv4).
    pub ttl: u8,
    /// Hop limit of the same packets (IPv6).
    pub hop_limit: u8,
    /// Verify IPv4 header and TCP checksums before answering a SYN or checking a cookie. Turn
    /// off only where the NIC verified them and the worker drops what failed.
    pub verify_checksums: bool,
    /// Offer ECN to clients that ask for it (ECE and CWR on the SYN; needs timestamps, where it
    /// is remembered). Off by default, as `nft synproxy` has no flag to turn it on.
    pub ecn: bool,
    /// SYN-ACKs per second per worker; `None`: unlimited.
    pub reply_limit: Option<RateLimit>,
    /// SYN-ACKs per second per destination prefix (the SYN's source); `None`: off.
    pub prefix_limit: Option<PrefixLimit>,
}

impl Default for Config {
    /// Default schedule, TTL 64, checksums verified, ECN off, no reply limits.
    fn default() -> Self {
        Config {
            schedule: CookieSchedule::default(),
            ttl: DEFAULT_TTL,
            hop_limit: DEFAULT_TTL,
            verify_checksums: true,
            ecn: false,
            reply_limit: None,
            prefix_limit: None,
        }
    }
}

/// The options of the `synproxy` statement that matched the packet (nft's `synproxy mss N
/// wscale N timestamp sack-perm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SynRule {
    /// MSS to advertise to clients (the protected servers' MSS); the SYN-ACK carries the
    /// smaller of this and the client's own MSS. 0 means 1460 for IPv4 and 1440 for IPv6.
    pub mss: u16,
    /// Window scale shift to advertise (0..=14), when the client offers window scaling;
    /// `None`: never offer it.
    pub wscale: Option<u8>,
    /// Answer with the timestamp option when the client sent it. Without it window scaling,
    /// SACK and ECN cannot be remembered in the cookie and are not offered (as Linux).
    pub timestamps: bool,
    /// Offer SACK-permitted when the client did.
    pub sack_perm: bool,
}

impl Default for SynRule {
    /// `synproxy mss 1460 wscale 7 timestamp sack-perm`, the usual rule.
    fn default() -> Self {
        SynRule {
            mss: 1460,
            wscale: Some(7),
            timestamps: true,
            sack_perm: true,
        }
    }
}

/// Why the proxy dropped a frame (the worker counts drops by reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Not an unfragmented TCP segment over IPv4 or IPv6, or offsets that do not fit the frame.
    Malformed,
    /// An IPv4 header or TCP checksum did not verify.
    BadChecksum,
    /// Flags the path does not take (a SYN|ACK, RST or FIN-only segment with no connection).
    NotEligible,
    /// A reply limit was exhausted.
    RateLimited,
    /// The cookie did not verify.
    CookieInvalid,
    /// The buffer cannot hold the packet to write.
    BufferTooShort,
    /// The connection's state does not expect this segment.
    Unexpected,
}

impl DropReason {
    /// A short name for metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::BadChecksum => "bad_checksum",
            DropReason::NotEligible => "not_eligible",
            DropReason::RateLimited => "rate_limited",
            DropReason::CookieInvalid => "cookie_invalid",
            DropReason::BufferTooShort => "buffer_too_short",
            DropReason::Unexpected => "unexpected",
        }
    }
}

/// What [`SynProxy::answer_syn`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynVerdict {
    /// `buf[..len]` holds the SYN-ACK: set the mbuf's data length to `len` and send it back out
    /// of the port the SYN came in on.
    Reply {
        /// New frame length.
        len: usize,
    },
    /// Drop the frame.
    Drop(DropReason),
}

/// What [`SynProxy::client_ack`] / [`SynProxy::client_ack_into`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckVerdict {
    /// The cookie verified. The buffer holds the SYN for the server (`len` bytes): send it out
    /// of the other port (towards the server). Create the conntrack entry for the tuple with
    /// `conn` as its extension.
    Open {
        /// The connection's state, to store in conntrack.
        conn: ProxyConn,
        /// Length of the SYN frame.
        len: usize,
    },
    /// Drop the ACK.
    Drop(DropReason),
}

/// What [`SynProxy::client_segment`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientVerdict {
    /// Translated in place, length unchanged: forward towards the server.
    Forward,
    /// `buf[..len]` holds a SYN for the server (the client's ACK was retransmitted, or a
    /// reopened connection's cookie verified): send it towards the server.
    SendSyn {
        /// New frame length.
        len: usize,
    },
    /// `buf[..len]` holds a SYN-ACK for the client (a new SYN on a closed connection): send it
    /// back out of the port it came in on.
    Reply {
        /// New frame length.
        len: usize,
    },
    /// Drop the frame.
    Drop(DropReason),
}

/// What [`SynProxy::server_segment`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerVerdict {
    /// Translated in place, length unchanged: forward towards the client.
    Forward,
    /// The server's SYN-ACK completed the handshake: `buf[..to_client]` holds the window
    /// update for the client (send it towards the client, out of the other port) and
    /// `to_server[..to_server_len]` the ACK for the server (send it back out of the port the
    /// SYN-ACK came in on).
    Established {
        /// Length of the window update in `buf`.
        to_client: usize,
        /// Length of the ACK in `to_server`.
        to_server_len: usize,
    },
    /// Drop the frame.
    Drop(DropReason),
}

/// An invalid [`Config`].
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum ConfigError {
    /// The cookie schedule.
    #[error(transparent)]
    Cookie(#[from] CookieError),
    /// A reply limit.
    #[error(transparent)]
    Limit(#[from] ratelimit::LimitError),
}

/// One worker's SYN proxy: configuration, cookie jar, reply limiter, counters and the time.
#[derive(Debug, Clone)]
pub struct SynProxy {
    config: Config,
    jar: CookieJar,
    limiter: ReplyLimiter,
    counters: Counters,
    now_ns: u64,
    /// Milliseconds clock for the SYN-ACK's TSval.
    ts_clock: u32,
    /// The second whose zero-window-probe check budget `probe_left` is.
    probe_sec: u64,
    probe_left: u32,
}

impl SynProxy {
    /// A worker's proxy. `master` is the fleet-wide cookie secret ([`MasterSecret::random`]
    /// for a box on its own). Allocates the prefix table, if any; nothing else allocates.
    pub fn new(config: Config, master: &MasterSecret) -> Result<SynProxy, ConfigError> {
        let jar = CookieJar::new(master, config.schedule)?;
        // The prefix hash key: a value the attacker cannot guess, derived from the master.
        let key = master.derive_u64(b"levee reply limiter prefix hash v1");
        let limiter = ReplyLimiter::new(config.reply_limit, config.prefix_limit, key)?;
        Ok(SynProxy {
            config,
            jar,
            limiter,
            counters: Counters::default(),
            now_ns: 0,
            ts_clock: 0,
            probe_sec: u64::MAX,
            probe_left: 0,
        })
    }

    /// Tells the proxy the time: wall-clock UNIX nanoseconds (the same clock on every box that
    /// shares the master secret, e.g. NTP-disciplined `CLOCK_REALTIME`). Call once per burst,
    /// before the burst's packets.
    pub fn set_now(&mut self, unix_ns: u64) {
        self.now_ns = unix_ns;
        self.jar.set_time(unix_ns / 1_000_000_000);
        // The low 32 bits of milliseconds: TSvals only need to advance at about 1 kHz.
        self.ts_clock = (unix_ns / 1_000_000) as u32;
    }

    /// The counters so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    #[cfg(test)]
    pub(crate) fn reset_counters_for_test(&mut self) {
        self.counters = Counters::default();
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The cookie jar (its counter and schedule).
    pub fn jar(&self) -> &CookieJar {
        &self.jar
    }
}
