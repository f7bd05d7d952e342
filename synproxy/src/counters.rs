//! The SYN proxy's counters: Linux's `/proc/net/stat/synproxy` columns plus levee's own.
//!
//! Owns [`Counters`], a plain struct each worker's [`crate::SynProxy`] increments on its own
//! thread; the worker publishes a copy once per burst and the control thread sums the workers'
//! copies with [`Counters::add`] at scrape time.

/// One worker's SYN-proxy counters, all monotonic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Counters {
    /// SYNs the proxy was asked to answer, answered or not (Linux `syn_received`).
    pub syn_received: u64,
    /// ACKs whose cookie did not verify: wrong MAC, older than two counter ticks, or a decoded
    /// field out of range (Linux `cookie_invalid`).
    pub cookie_invalid: u64,
    /// ACKs whose cookie verified, each of which sent the server a SYN (Linux `cookie_valid`).
    pub cookie_valid: u64,
    /// Client ACKs or data retransmitted while the server had not answered yet, each of which
    /// sent the server's SYN again instead of opening a second connection (Linux
    /// `cookie_retrans`).
    pub cookie_retrans: u64,
    /// SYNs on the tuple of a closed or refused connection that started a new handshake (Linux
    /// `conn_reopened`).
    pub conn_reopened: u64,
    /// SYN-ACKs not sent because the per-worker or per-destination-prefix reply limit was
    /// exhausted.
    pub reply_ratelimited: u64,
    /// Segments for no connection that were not a valid cookie ACK, dropped: `cookie_invalid`
    /// plus those refused before the hash (flags that cannot carry a cookie, malformed headers,
    /// bad checksums).
    pub ack_flood_dropped: u64,
    /// SYN-ACKs written.
    pub synack_sent: u64,
    /// Server SYN-ACKs that completed a handshake (ACK to the server and window update to the
    /// client written).
    pub handshakes_completed: u64,
    /// Server RSTs that refused a proxied connection, passed on to the client.
    pub server_refused: u64,
    /// Frames dropped because their headers were inconsistent, a checksum failed or the buffer
    /// could not hold the packet to write.
    pub malformed: u64,
    /// Segments on a connection that its state did not expect (for example server data before
    /// its SYN-ACK), dropped.
    pub unexpected: u64,
    /// Connections opened by a zero-window probe whose cookie verified (the client's cookie
    /// ACK was lost); counted in `cookie_valid` too.
    pub probe_recovered: u64,
}

impl Counters {
    /// Adds another worker's counters to these.
    pub fn add(&mut self, other: &Counters) {
        self.syn_received += other.syn_received;
        self.cookie_invalid += other.cookie_invalid;
        self.cookie_valid += other.cookie_valid;
        self.cookie_retrans += other.cookie_retrans;
        self.conn_reopened += other.conn_reopened;
        self.reply_ratelimited += other.reply_ratelimited;
        self.ack_flood_dropped += other.ack_flood_dropped;
        self.synack_sent += other.synack_sent;
        self.handshakes_completed += other.handshakes_completed;
        self.server_refused += other.server_refused;
        self.malformed += other.malformed;
        self.unexpected += other.unexpected;
        self.probe_recovered += other.probe_recovered;
    }

    /// Linux's `/proc/net/stat/synproxy` row for these counters: `entries` (always 0, as in
    /// Linux), then `syn_received`, `cookie_invalid`, `cookie_valid`, `cookie_retrans`,
    /// `conn_reopened`, each as 8 hex digits separated by tabs (the low 32 bits).
    pub fn linux_row(&self) -> String {
        let cols = [
            0,
            self.syn_received,
            self.cookie_invalid,
            self.cookie_valid,
            self.cookie_retrans,
            self.conn_reopened,
        ];
        cols.iter()
            .map(|c| format!("{:08x}", *c as u32))
            .collect::<Vec<_>>()
            .join("\t")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_and_linux_row() {
        let a = Counters {
            syn_received: 0x1_0000_0010,
            cookie_invalid: 2,
            cookie_valid: 3,
            cookie_retrans: 4,
            conn_reopened: 5,
            reply_ratelimited: 6,
            ..Counters::default()
        };
        let mut sum = a;
        sum.add(&a);
        assert_eq!(sum.cookie_valid, 6);
        assert_eq!(sum.reply_ratelimited, 12);
        assert_eq!(
            a.linux_row(),
            "00000000\t00000010\t00000002\t00000003\t00000004\t00000005"
        );
    }
}
