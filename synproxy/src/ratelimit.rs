//! Reply rate limiting, so that levee cannot be used as a reflector: spoofed SYNs make levee send
//! SYN-ACKs to whoever the spoofed source is, so the SYN-ACK rate is bounded per worker and,
//! optionally, per prefix of the reply's destination (the SYN's source).
//!
//! Owns [`ReplyLimiter`] (one per worker, inside [`crate::SynProxy`], used on the worker thread
//! only) and its settings. Both limits are token buckets kept as "nano-tokens" (tokens times
//! 10^9), so a refill is one multiply and no division; the prefix table is a fixed-size array
//! allocated once at construction, indexed by a keyed hash of the prefix (colliding prefixes
//! share a bucket, which can only make the limit stricter, and the key keeps an attacker from
//! aiming collisions at a victim's prefix). Nothing allocates after construction.

use thiserror::Error;

const NANO: u64 = 1_000_000_000;
/// Largest rate and burst accepted, so that nano-token arithmetic cannot overflow.
pub const MAX_RATE: u64 = 1_000_000_000;
/// Most slots in the prefix table.
pub const MAX_SLOTS: usize = 1 << 20;

/// A token bucket's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained replies per second, 1..=10^9.
    pub rate_per_sec: u64,
    /// Replies that may be sent back to back after an idle period, 1..=10^9.
    pub burst: u64,
}

/// The per-destination-prefix limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixLimit {
    /// Each prefix's bucket.
    pub limit: RateLimit,
    /// IPv4 prefix length, 0..=32 (e.g. 24).
    pub v4_prefix_len: u8,
    /// IPv6 prefix length, 0..=128 (e.g. 48).
    pub v6_prefix_len: u8,
    /// Buckets in the table, a power of two up to 2^20.
    pub slots: usize,
}

impl Default for PrefixLimit {
    /// 1000 replies per second and a burst of 100 per /24 or /48, 4096 buckets.
    fn default() -> Self {
        PrefixLimit {
            limit: RateLimit {
                rate_per_sec: 1000,
                burst: 100,
            },
            v4_prefix_len: 24,
            v6_prefix_len: 48,
            slots: 4096,
        }
    }
}

/// An invalid limiter setting.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[error("reply limit: {what} is {value}")]
pub struct LimitError {
    /// What is wrong.
    pub what: &'static str,
    /// The value given.
    pub value: u64,
}

impl RateLimit {
    fn validate(&self) -> Result<(), LimitError> {
        if !(1..=MAX_RATE).contains(&self.rate_per_sec) {
            return Err(LimitError {
                what: "rate_per_sec (1..=10^9)",
                value: self.rate_per_sec,
            });
        }
        if !(1..=MAX_RATE).contains(&self.burst) {
            return Err(LimitError {
                what: "burst (1..=10^9)",
                value: self.burst,
            });
        }
        Ok(())
    }
}

/// A bucket's parameters in nano-token units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Params {
    rate: u64,
    cap: u64,
    /// Longest gap worth refilling: beyond it the bucket is full anyway. Keeps `gap * rate`
    /// below `cap + rate`, far from overflow.
    max_gap: u64,
}

impl Params {
    fn new(limit: &RateLimit) -> Params {
        let cap = limit.burst * NANO;
        Params {
            rate: limit.rate_per_sec,
            cap,
            max_gap: cap.div_ceil(limit.rate_per_sec),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bucket {
    credit: u64,
    last_ns: u64,
}

impl Bucket {
    fn full(p: &Params) -> Bucket {
        Bucket {
            credit: p.cap,
            last_ns: 0,
        }
    }

    #[inline]
    fn take(&mut self, now_ns: u64, p: &Params) -> bool {
        // A clock that steps back refills nothing but does not stall the bucket either.
        let gap = now_ns.saturating_sub(self.last_ns).min(p.max_gap);
        self.last_ns = now_ns;
        self.credit = (self.credit + gap * p.rate).min(p.cap);
        if self.credit >= NANO {
            self.credit -= NANO;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Clone)]
struct PrefixTable {
    params: Params,
    v4_mask: u32,
    v6_mask: u128,
    shift: u32,
    key: u64,
    buckets: Box<[Bucket]>,
}

/// Which limit refused a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limited {
    /// The worker's bucket was empty.
    Worker,
    /// The destination prefix's bucket was empty.
    Prefix,
}

/// One worker's reply limits.
#[derive(Debug, Clone)]
pub struct ReplyLimiter {
    worker: Option<(Params, Bucket)>,
    prefix: Option<PrefixTable>,
}

impl ReplyLimiter {
    /// A limiter with the given limits (either may be off); `key` seeds the prefix hash.
    pub fn new(worker: Option<RateLimit>, prefix: Option<PrefixLimit>, key: u64) -> Result<Self, LimitError> {
        let worker = match worker {
            Some(limit) => {
                limit.validate()?;
                let p = Params::new(&limit);
                Some((p, Bucket::full(&p)))
            }
            None => None,
        };
        let prefix = match prefix {
            Some(pl) => {
                pl.limit.validate()?;
                if pl.v4_prefix_len > 32 {
                    return Err(LimitError {
                        what: "v4_prefix_len (0..=32)",
                        value: u64::from(pl.v4_prefix_len),
                    });
                }
                if pl.v6_prefix_len > 128 {
                    return Err(LimitError {
                        what: "v6_prefix_len (0..=128)",
                        value: u64::from(pl.v6_prefix_len),
                    });
                }
                if !pl.slots.is_power_of_two() || pl.slots > MAX_SLOTS {
                    return Err(LimitError {
                        what: "slots (a power of two up to 2^20)",
                        value: pl.slots as u64,
                    });
                }
                let params = Params::new(&pl.limit);
                Some(PrefixTable {
                    params,
                    v4_mask: u32::MAX
                        .checked_shl(32 - u32::from(pl.v4_prefix_len))
                        .unwrap_or(0),
                    v6_mask: u128::MAX
                        .checked_shl(128 - u32::from(pl.v6_prefix_len))
                        .unwrap_or(0),
                    shift: 64 - pl.slots.trailing_zeros(),
                    key: key | 1,
                    buckets: vec![Bucket::full(&params); pl.slots].into_boxed_slice(),
                })
            }
            None => None,
        };
        Ok(ReplyLimiter { worker, prefix })
    }

    /// Takes a token for a reply to `dst` (IPv4 as the low 32 bits with `v6` false) at
    /// `now_ns`; `Err` names the limit that refused. The prefix is asked first, so a flood
    /// towards one prefix spends at most that prefix's rate of the worker's budget.
    #[inline]
    pub fn allow(&mut self, dst: u128, v6: bool, now_ns: u64) -> Result<(), Limited> {
        if let Some(t) = &mut self.prefix {
            let (key, family) = if v6 {
                (dst & t.v6_mask, 0x6000_0000_0000_0000u64)
            } else {
                (u128::from(dst as u32 & t.v4_mask), 0x4000_0000_0000_0000u64)
            };
            let folded = (key >> 64) as u64 ^ key as u64 ^ family;
            let mut h = (folded ^ t.key).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            h ^= h >> 29;
            h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
            // `shift` is 44..=64; a shift of 64 (one slot) must give index 0.
            let index = h.checked_shr(t.shift).unwrap_or(0) as usize;
            let params = t.params;
            if !t.buckets[index & (t.buckets.len() - 1)].take(now_ns, &params) {
                return Err(Limited::Prefix);
            }
        }
        if let Some((p, b)) = &mut self.worker {
            if !b.take(now_ns, p) {
                return Err(Limited::Worker);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: [u8; 4]) -> u128 {
        u128::from(u32::from_be_bytes(a))
    }

    #[test]
    fn worker_bucket_allows_burst_then_rate() {
        let limit = RateLimit {
            rate_per_sec: 1000,
            burst: 10,
        };
        let mut l = ReplyLimiter::new(Some(limit), None, 1).unwrap();
        let t0 = 5_000_000_000;
        let sent = (0..100)
            .filter(|_| l.allow(v4([1, 2, 3, 4]), false, t0).is_ok())
            .count();
        assert_eq!(sent, 10, "the burst");
        assert_eq!(l.allow(0, false, t0), Err(Limited::Worker));
        // 1 ms later one more token.
        assert!(l.allow(0, false, t0 + 1_000_000).is_ok());
        assert!(l.allow(0, false, t0 + 1_000_000).is_err());
        // Over one simulated second at 1 µs steps: the rate, plus nothing more.
        let mut sent = 0;
        for us in 1..=1_000_000u64 {
            if l.allow(0, false, t0 + 1_000_000 + us * 1000).is_ok() {
                sent += 1;
            }
        }
        assert!(
            (999..=1001).contains(&sent),
            "{sent} replies in one second at 1000/s"
        );
        // A clock that steps back does not stall the bucket.
        assert!(l.allow(0, false, 1).is_err());
        assert!(l.allow(0, false, 1 + 1_000_000).is_ok());
    }

    #[test]
    fn prefix_buckets_are_separate_and_checked_first() {
        let prefix = PrefixLimit {
            limit: RateLimit {
                rate_per_sec: 1,
                burst: 3,
            },
            slots: 1 << 16,
            ..PrefixLimit::default()
        };
        let worker = RateLimit {
            rate_per_sec: 1,
            burst: 5,
        };
        let mut l = ReplyLimiter::new(Some(worker), Some(prefix), 0x1234).unwrap();
        let t = 10_000_000_000;
        // Same /24: three replies, then the prefix refuses without spending worker tokens.
        for host in 1..=3 {
            assert!(l.allow(v4([198, 18, 7, host]), false, t).is_ok());
        }
        for host in 4..=20 {
            assert_eq!(l.allow(v4([198, 18, 7, host]), false, t), Err(Limited::Prefix));
        }
        // Another /24 still gets the two worker tokens left.
        assert!(l.allow(v4([198, 18, 8, 1]), false, t).is_ok());
        assert!(l.allow(v4([198, 18, 9, 1]), false, t).is_ok());
        assert_eq!(l.allow(v4([198, 18, 10, 1]), false, t), Err(Limited::Worker));
        // IPv6 /48s.
        let mut l = ReplyLimiter::new(None, Some(prefix), 99).unwrap();
        let a: u128 = 0x2001_0002_0000_0001 << 64;
        for i in 0..3 {
            assert!(l.allow(a | i, true, t).is_ok());
        }
        assert_eq!(l.allow(a | (5 << 70), true, t), Err(Limited::Prefix), "same /48");
        assert!(l.allow(a ^ (1 << 80), true, t).is_ok(), "another /48");
    }

    #[test]
    fn one_slot_and_zero_length_prefixes_work() {
        let prefix = PrefixLimit {
            limit: RateLimit {
                rate_per_sec: 1,
                burst: 1,
            },
            v4_prefix_len: 0,
            v6_prefix_len: 0,
            slots: 1,
        };
        let mut l = ReplyLimiter::new(None, Some(prefix), 0).unwrap();
        assert!(l.allow(1, false, 1).is_ok());
        assert!(l.allow(u128::MAX, true, 1).is_err());
    }

    #[test]
    fn settings_are_validated() {
        let bad = RateLimit {
            rate_per_sec: 0,
            burst: 1,
        };
        assert_eq!(
            ReplyLimiter::new(Some(bad), None, 0).unwrap_err().to_string(),
            "reply limit: rate_per_sec (1..=10^9) is 0"
        );
        let ok = RateLimit {
            rate_per_sec: MAX_RATE,
            burst: MAX_RATE,
        };
        assert!(ReplyLimiter::new(Some(ok), None, 0).is_ok());
        for pl in [
            PrefixLimit {
                slots: 1000,
                ..PrefixLimit::default()
            },
            PrefixLimit {
                v4_prefix_len: 33,
                ..PrefixLimit::default()
            },
            PrefixLimit {
                v6_prefix_len: 129,
                ..PrefixLimit::default()
            },
        ] {
            assert!(ReplyLimiter::new(None, Some(pl), 0).is_err());
        }
        // Huge gaps and the largest rate do not overflow.
        let mut l = ReplyLimiter::new(Some(ok), None, 0).unwrap();
        assert!(l.allow(0, false, u64::MAX).is_ok());
    }
}
