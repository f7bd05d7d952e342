//! SYN cookies: the MAC, its time counter, the secret schedule and the option bits carried in the
//! SYN-ACK's timestamp.
//!
//! Owns [`CookieJar`] (one per worker: the master secret, the cached epoch keys and the current
//! counter), [`MasterSecret`], [`CookieSchedule`] and the encodings below. Called by the SYN path
//! ([`crate::reply`]) to make a cookie and by the ACK path ([`crate::handshake`]) to check one,
//! always on the worker thread that owns the jar; nothing here reads a clock
//! ([`CookieJar::set_time`] is told the time).
//!
//! # The cookie (the SYN-ACK's sequence number, 32 bits)
//!
//! ```text
//!  31                                   3   2    1   0
//! +--------------------------------------+-----+-------+
//! |            MAC (29 bits)             | ctr | mss   |
//! +--------------------------------------+-----+-------+
//! ```
//!
//! - `mss` (bits 0-1): index into the MSS table of the family ([`MSS_TABLE_V4`],
//!   [`MSS_TABLE_V6`]), the largest entry not above the client's MSS (index 0 when the client
//!   sent none or less), as Linux's `__cookie_v4_init_sequence` picks it.
//! - `ctr` (bit 2): the low bit of the time counter the cookie was made at. The checker takes the
//!   counter to be the latest one, at or before its own, with that low bit: its current counter
//!   or the one before. So a cookie lives for two counter ticks (Linux: `MAX_SYNCOOKIE_AGE` 2)
//!   and **an ACK costs exactly one SipHash**, where Linux's layout (counter in the top 8 bits,
//!   24 bits of hash) spends 8 bits on the counter.
//! - `MAC` (bits 3-31): the top 29 bits of SipHash-2-4, keyed with the secret of the counter's
//!   epoch, over the client's address, the server's address, both ports, the client's ISN, the
//!   counter, the MSS index and the timestamp option byte (below). Everything the cookie or the
//!   timestamp echo carries is authenticated: flipping any bit of either changes the MAC input.
//!   A forged ACK is accepted with probability 2^-29 (one counter is tried).
//!
//! # The timestamp option bits (low 6 bits of the SYN-ACK's TSval, echoed in the ACK's TSecr)
//!
//! As Linux's `cookie_init_timestamp` / `cookie_timestamp_decode`, only when the client sent the
//! timestamp option (otherwise they cannot come back and window scaling, SACK and ECN are off):
//!
//! ```text
//!   5     4      3 2 1 0
//! +-----+------+---------+
//! | ECN | SACK | wscale  |   wscale 0..=14 is the client's shift, 15 means "no window scaling"
//! +-----+------+---------+
//! ```
//!
//! The MAC input carries them as one byte: `0` when the ACK has no timestamp option, else
//! `0x40 | bits`, so an ACK that drops or alters the timestamp echo fails the MAC.
//!
//! # Secrets (DESIGN section 8)
//!
//! A cookie is made at counter `c = floor(unix_secs / period)` and checked against
//! `v = floor((unix_secs + skew) / period)` (both wrapping `u32`): the allowance `skew` lets a
//! box whose clock is a little behind accept a cookie made just after a tick elsewhere. Epoch
//! `e = c / rotation`.
//! The key of epoch `e` is derived from the fleet-wide [`MasterSecret`] as
//! `SipHash-2-4(master, "levee syncookie v1" || e || i)` for `i = 0, 1`, so every box with the
//! same master and an NTP-synchronised clock makes and accepts the same cookies, whichever box
//! ECMP sends the ACK to. The jar keeps two keys, the current counter's epoch and the previous
//! counter's; across a rotation the previous secret is therefore accepted for exactly one more
//! counter tick (the cookies made just before the rotation) and never after.
//!
//! Lifetime: with period `P` and skew allowance `S`, a cookie is accepted for at least `P - 2S`
//! seconds between boxes whose clocks differ by at most `S` (at least `P - S` on one box), and for
//! at most `2P`.

use core::fmt;

use levee_packet::siphash::Sip24;
use siphasher::sip::SipHasher24;
use thiserror::Error;

/// MSS values an IPv4 cookie can carry (Linux `msstab`: 1460 is the most common, 1440 covers
/// PPPoE, 1300 tunnels, 536 the RFC minimum).
pub const MSS_TABLE_V4: [u16; 4] = [536, 1300, 1440, 1460];

/// MSS values an IPv6 cookie can carry (Linux's IPv6 table: the 1280-byte minimum MTU, tunnels,
/// Ethernet and jumbo frames).
pub const MSS_TABLE_V6: [u16; 4] = [1220, 1420, 1440, 8940];

/// Bits of the cookie spent on the MAC.
pub const MAC_BITS: u32 = 29;

/// Largest window scale shift (RFC 7323 section 2.3).
pub const MAX_WSCALE: u8 = 14;

/// Low bits of the SYN-ACK's TSval that carry the client's options.
pub const TS_OPTION_BITS: u32 = 6;

/// Mask of [`TS_OPTION_BITS`].
pub const TS_OPTION_MASK: u32 = (1 << TS_OPTION_BITS) - 1;

const MSS_INDEX_MASK: u32 = 0b11;
const COUNTER_BIT_SHIFT: u32 = 2;
const MAC_SHIFT: u32 = 32 - MAC_BITS;
const TS_WSCALE_MASK: u8 = 0x0F;
const TS_WSCALE_NONE: u8 = 0x0F;
const TS_SACK: u8 = 1 << 4;
const TS_ECN: u8 = 1 << 5;
const TS_PRESENT: u8 = 0x40;
const KDF_LABEL: &[u8; 18] = b"levee syncookie v1";

/// Why a cookie was refused, or a cookie setting was invalid.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum CookieError {
    /// The MAC does not match: a forged or corrupted ACK, or one older than two counter ticks.
    #[error("cookie {cookie:#010x} does not verify at counter {counter}")]
    BadMac {
        /// The cookie (the ACK's acknowledgment number minus one).
        cookie: u32,
        /// The counter it was checked against.
        counter: u32,
    },
    /// The counter's epoch is neither of the two whose keys the jar holds (the jar's time was
    /// not set, or jumped).
    #[error("counter {counter} belongs to epoch {epoch}, whose key is not held")]
    EpochNotHeld {
        /// Counter checked.
        counter: u32,
        /// Its epoch.
        epoch: u32,
    },
    /// A decoded field lies outside what the encoding allows.
    #[error("decoded {field} {value} is out of range")]
    FieldOutOfRange {
        /// Which field.
        field: &'static str,
        /// The value found.
        value: u32,
    },
    /// A schedule setting is invalid.
    #[error("cookie schedule: {what} is {value}")]
    BadSchedule {
        /// What is wrong.
        what: &'static str,
        /// The value given.
        value: u32,
    },
}

/// The fleet-wide secret every cookie key is derived from (DESIGN section 8). 128 bits.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterSecret([u8; 16]);

impl MasterSecret {
    /// A secret from 16 bytes (for a fleet: the same bytes on every box).
    pub const fn from_bytes(bytes: [u8; 16]) -> MasterSecret {
        MasterSecret(bytes)
    }

    /// A random secret for a box that shares cookies with no other, drawn from the operating
    /// system's random source (the one `std` seeds `HashMap` keys from).
    pub fn random() -> MasterSecret {
        use std::hash::{BuildHasher, Hasher};
        let mut out = [0u8; 16];
        for (i, half) in out.chunks_exact_mut(8).enumerate() {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_usize(i);
            half.copy_from_slice(&h.finish().to_le_bytes());
        }
        MasterSecret(out)
    }

    /// The secret's bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// A 64-bit value derived from the secret for another purpose, named by `label` (SipHash-2-4
    /// keyed with the secret, a PRF: the value reveals nothing about the secret or the cookie
    /// keys, whose labels differ).
    pub fn derive_u64(&self, label: &[u8]) -> u64 {
        SipHasher24::new_with_key(&self.0).hash(label)
    }
}

impl fmt::Debug for MasterSecret {
    /// Never prints the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterSecret(..)")
    }
}

/// When counters tick and secrets rotate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieSchedule {
    /// Seconds per counter tick (Linux: 60). A cookie lives one to two ticks.
    pub period_secs: u32,
    /// Counter ticks per secret epoch: the secret rotates every `period_secs * rotation_ticks`
    /// seconds.
    pub rotation_ticks: u32,
    /// Largest clock difference, in seconds, tolerated between boxes that share the master
    /// secret; must be below half the period.
    pub clock_skew_secs: u32,
}

impl Default for CookieSchedule {
    /// 64-second ticks, a new secret every 64 ticks (about 68 minutes), 2 seconds of skew.
    fn default() -> Self {
        CookieSchedule {
            period_secs: 64,
            rotation_ticks: 64,
            clock_skew_secs: 2,
        }
    }
}

impl CookieSchedule {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), CookieError> {
        if self.period_secs < 4 {
            return Err(CookieError::BadSchedule {
                what: "period_secs (minimum 4)",
                value: self.period_secs,
            });
        }
        if self.rotation_ticks == 0 {
            return Err(CookieError::BadSchedule {
                what: "rotation_ticks (minimum 1)",
                value: 0,
            });
        }
        if self.clock_skew_secs.saturating_mul(2) >= self.period_secs {
            return Err(CookieError::BadSchedule {
                what: "clock_skew_secs (must be below half the period)",
                value: self.clock_skew_secs,
            });
        }
        Ok(())
    }

    /// The counter cookies are made at, at `unix_secs` (wrapping).
    pub fn counter_at(&self, unix_secs: u64) -> u32 {
        // Truncation to u32 is the intended wrap; the checker uses wrapping arithmetic.
        (unix_secs / u64::from(self.period_secs.max(1))) as u32
    }

    /// The counter cookies are checked against at `unix_secs`: the counter of a clock
    /// `clock_skew_secs` ahead, so that it is never behind the maker's on a box whose clock is
    /// at most that much behind.
    pub fn check_counter_at(&self, unix_secs: u64) -> u32 {
        self.counter_at(unix_secs.saturating_add(u64::from(self.clock_skew_secs)))
    }

    /// The secret epoch of `counter`.
    pub fn epoch_of(&self, counter: u32) -> u32 {
        counter / self.rotation_ticks.max(1)
    }
}

/// Client and server addresses of a cookie, in wire order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CookieAddrs {
    /// IPv4.
    V4 {
        /// Client (the SYN's source).
        client: [u8; 4],
        /// Server (the SYN's destination).
        server: [u8; 4],
    },
    /// IPv6.
    V6 {
        /// Client (the SYN's source).
        client: [u8; 16],
        /// Server (the SYN's destination).
        server: [u8; 16],
    },
}

/// The connection a cookie is bound to, as the client's SYN names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CookieTuple {
    /// Addresses.
    pub addrs: CookieAddrs,
    /// Client's port.
    pub client_port: u16,
    /// Server's port.
    pub server_port: u16,
}

const _: () = {
    let mut i = 1;
    while i < 4 {
        assert!(MSS_TABLE_V4[i - 1] < MSS_TABLE_V4[i] && MSS_TABLE_V6[i - 1] < MSS_TABLE_V6[i]);
        i += 1;
    }
};

impl CookieTuple {
    fn mss_table(&self) -> &'static [u16; 4] {
        match self.addrs {
            CookieAddrs::V4 { .. } => &MSS_TABLE_V4,
            CookieAddrs::V6 { .. } => &MSS_TABLE_V6,
        }
    }

    /// The MSS index for a client MSS option (`None`: the client sent none).
    pub fn mss_index(&self, client_mss: Option<u16>) -> u8 {
        let mss = client_mss.unwrap_or(0);
        let t = self.mss_table();
        // Largest entry not above the client's MSS; index 0 otherwise, as Linux. The tables
        // ascend (checked at compile time above), so that index is how many of entries 1..=3
        // are not above it: no loop, no branch.
        u8::from(mss >= t[1]) + u8::from(mss >= t[2]) + u8::from(mss >= t[3])
    }

    /// The MSS of table index `index`, bounds-checked.
    pub fn mss_of(&self, index: u8) -> Result<u16, CookieError> {
        self.mss_table()
            .get(usize::from(index))
            .copied()
            .ok_or(CookieError::FieldOutOfRange {
                field: "MSS index",
                value: u32::from(index),
            })
    }
}

/// The client's options carried in the low bits of the SYN-ACK's TSval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TsOptions {
    /// The client's window scale shift, 0..=14; `None` without window scaling.
    pub wscale: Option<u8>,
    /// The client sent SACK-permitted (and the rule allows SACK).
    pub sack_perm: bool,
    /// The client asked for ECN (ECE and CWR on its SYN; and ECN is enabled).
    pub ecn: bool,
}

impl TsOptions {
    /// The 6 option bits; a shift above 14 is refused.
    pub fn encode(&self) -> Result<u8, CookieError> {
        let mut bits = match self.wscale {
            None => TS_WSCALE_NONE,
            Some(w) if w <= MAX_WSCALE => w,
            Some(w) => {
                return Err(CookieError::FieldOutOfRange {
                    field: "window scale",
                    value: u32::from(w),
                })
            }
        };
        if self.sack_perm {
            bits |= TS_SACK;
        }
        if self.ecn {
            bits |= TS_ECN;
        }
        Ok(bits)
    }

    /// Options from the low bits of a timestamp echo, bounds-checked: bits above the 6 option
    /// bits and a shift above 14 are refused.
    pub fn decode(bits: u32) -> Result<TsOptions, CookieError> {
        if bits > TS_OPTION_MASK {
            return Err(CookieError::FieldOutOfRange {
                field: "timestamp option bits",
                value: bits,
            });
        }
        // In range by the check above.
        let bits = bits as u8;
        let wscale = match bits & TS_WSCALE_MASK {
            TS_WSCALE_NONE => None,
            w if w <= MAX_WSCALE => Some(w),
            // Unreachable while 15 means "none"; kept so a change of encoding stays checked.
            w => {
                return Err(CookieError::FieldOutOfRange {
                    field: "window scale",
                    value: u32::from(w),
                })
            }
        };
        Ok(TsOptions {
            wscale,
            sack_perm: bits & TS_SACK != 0,
            ecn: bits & TS_ECN != 0,
        })
    }

    /// The SYN-ACK's TSval: `clock` with its low 6 bits replaced by the options.
    pub fn stamp(&self, clock: u32) -> Result<u32, CookieError> {
        Ok((clock & !TS_OPTION_MASK) | u32::from(self.encode()?))
    }
}

/// What a cookie carries besides the MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CookieData {
    /// MSS table index, 0..=3 ([`CookieTuple::mss_index`]).
    pub mss_index: u8,
    /// Options for the timestamp, when the SYN-ACK carries the timestamp option.
    pub ts: Option<TsOptions>,
}

/// A cookie that verified: what the server's SYN must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DecodedCookie {
    /// The client's MSS, rounded down to the table.
    pub mss: u16,
    /// The MSS table index.
    pub mss_index: u8,
    /// The options from the timestamp echo, when the ACK carried the timestamp option.
    pub ts: Option<TsOptions>,
    /// The counter the cookie was made at.
    pub counter: u32,
}

#[derive(Clone, Copy)]
struct EpochKey {
    epoch: u32,
    key: SipHasher24,
}

/// One worker's cookie state: the master secret, the current counter and the keys of the two
/// epochs a cookie can belong to.
#[derive(Clone)]
pub struct CookieJar {
    master: SipHasher24,
    schedule: CookieSchedule,
    /// Counter new cookies are made at.
    counter: u32,
    /// Counter ACKs are checked against: `counter` or, within `clock_skew_secs` of a tick, the
    /// next one.
    check_counter: u32,
    /// Keys of the check counter's epoch and of the one before it (the same epoch except right
    /// after a rotation); `counter` is one of the two.
    keys: [EpochKey; 2],
    /// Which of `keys` makes cookies at `counter` (decided when the counters move: the epoch
    /// of a counter is a division, too slow for every SYN).
    make_slot: usize,
    /// Per counter parity bit of a cookie: the check counter it names, its epoch and which of
    /// `keys` holds that epoch (decided when the counters move, as `make_slot`).
    check_by_parity: [(u32, u32, Option<usize>); 2],
    #[cfg(test)]
    macs: core::cell::Cell<u64>,
}

impl fmt::Debug for CookieJar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CookieJar")
            .field("schedule", &self.schedule)
            .field("counter", &self.counter)
            .field("check_counter", &self.check_counter)
            .field("epochs", &[self.keys[0].epoch, self.keys[1].epoch])
            .finish_non_exhaustive()
    }
}

impl CookieJar {
    /// A jar for `master` on `schedule`, at counter 0 (call [`CookieJar::set_time`]).
    pub fn new(master: &MasterSecret, schedule: CookieSchedule) -> Result<CookieJar, CookieError> {
        schedule.validate()?;
        let master = SipHasher24::new_with_key(master.as_bytes());
        let key = derive_key(&master, 0);
        let mut jar = CookieJar {
            master,
            schedule,
            counter: 0,
            check_counter: 0,
            keys: [EpochKey { epoch: 0, key }, EpochKey { epoch: 0, key }],
            make_slot: 0,
            check_by_parity: [(0, 0, Some(0)); 2],
            #[cfg(test)]
            macs: core::cell::Cell::new(0),
        };
        jar.set_counters(0, 0);
        Ok(jar)
    }

    /// The schedule.
    pub fn schedule(&self) -> &CookieSchedule {
        &self.schedule
    }

    /// Moves to the counter of `unix_secs` (wall-clock seconds, the same clock on every box of
    /// a fleet). Cheap unless the epoch changed (two SipHash to derive a key, once per
    /// rotation). Call once per burst.
    pub fn set_time(&mut self, unix_secs: u64) {
        let make = self.schedule.counter_at(unix_secs);
        let check = self.schedule.check_counter_at(unix_secs);
        if make != self.counter || check != self.check_counter {
            self.set_counters(make, check);
        }
    }

    /// Moves to `counter` directly, for making and checking alike (tests and tools).
    pub fn set_counter(&mut self, counter: u32) {
        self.set_counters(counter, counter);
    }

    fn set_counters(&mut self, make: u32, check: u32) {
        self.counter = make;
        self.check_counter = check;
        let now = self.schedule.epoch_of(check);
        let prev = self.schedule.epoch_of(check.wrapping_sub(1));
        for (slot, epoch) in [(0, now), (1, prev)] {
            if self.keys[slot].epoch != epoch {
                // Reuse the other slot's key when it already has this epoch.
                let other = &self.keys[1 - slot];
                let key = if other.epoch == epoch {
                    other.key
                } else {
                    derive_key(&self.master, epoch)
                };
                self.keys[slot] = EpochKey { epoch, key };
            }
        }
        let slot_of = |epoch: u32| self.keys.iter().position(|k| k.epoch == epoch);
        // `counter` is `check_counter` or the one before, whose epochs the two slots hold.
        self.make_slot = slot_of(self.schedule.epoch_of(self.counter)).unwrap_or(1);
        for parity in 0..2u32 {
            let counter = if check & 1 == parity {
                check
            } else {
                check.wrapping_sub(1)
            };
            let epoch = self.schedule.epoch_of(counter);
            self.check_by_parity[parity as usize] = (counter, epoch, slot_of(epoch));
        }
    }

    /// The counter new cookies are made at.
    pub fn counter(&self) -> u32 {
        self.counter
    }

    #[inline]
    fn make_key(&self) -> &SipHasher24 {
        &self.keys[self.make_slot & 1].key
    }

    /// The cookie for a client's SYN on `tuple` with ISN `isn`, at the current counter.
    #[inline]
    pub fn make(&self, tuple: &CookieTuple, isn: u32, data: CookieData) -> Result<u32, CookieError> {
        let counter = self.counter;
        let mss_index = u32::from(data.mss_index);
        if mss_index > MSS_INDEX_MASK {
            return Err(CookieError::FieldOutOfRange {
                field: "MSS index",
                value: mss_index,
            });
        }
        let ts = match data.ts {
            Some(o) => TS_PRESENT | o.encode()?,
            None => 0,
        };
        let mac = self.mac(self.make_key(), tuple, isn, counter, data.mss_index, ts);
        Ok((mac << MAC_SHIFT) | ((counter & 1) << COUNTER_BIT_SHIFT) | mss_index)
    }

    /// Checks `cookie` (the ACK's acknowledgment number minus one) for an ACK on `tuple` whose
    /// sequence number minus one is `isn`; `ts_echo` is the ACK's TSecr when it carries the
    /// timestamp option. Exactly one SipHash whatever the input.
    #[inline]
    pub fn check(
        &self,
        tuple: &CookieTuple,
        isn: u32,
        cookie: u32,
        ts_echo: Option<u32>,
    ) -> Result<DecodedCookie, CookieError> {
        let mss_index = (cookie & MSS_INDEX_MASK) as u8;
        let parity = (cookie >> COUNTER_BIT_SHIFT) & 1;
        let (counter, epoch, slot) = self.check_by_parity[parity as usize];
        let key = match slot {
            Some(i) => &self.keys[i & 1].key,
            None => return Err(CookieError::EpochNotHeld { counter, epoch }),
        };
        let ts_bits = ts_echo.map(|tsecr| tsecr & TS_OPTION_MASK);
        let ts_byte = ts_bits.map_or(0, |b| TS_PRESENT | b as u8);
        let mac = self.mac(key, tuple, isn, counter, mss_index, ts_byte);
        if mac != cookie >> MAC_SHIFT {
            return Err(CookieError::BadMac { cookie, counter });
        }
        // Bounds checks on every decoded field, even though the MAC already vouches for them.
        let mss = tuple.mss_of(mss_index)?;
        let ts = ts_bits.map(TsOptions::decode).transpose()?;
        Ok(DecodedCookie {
            mss,
            mss_index,
            ts,
            counter,
        })
    }

    /// The top [`MAC_BITS`] of SipHash-2-4 over the fields, in a fixed layout: 22 bytes for
    /// IPv4 (three SipHash blocks with the length byte: 10 rounds), 46 for IPv6 (six blocks, 16
    /// rounds). The length, which SipHash mixes in, also separates the families.
    ///
    /// Always inlined: as a call it read the tuple's addresses back with one 8-byte load over
    /// the two 4-byte stores that had just written them, which the CPU cannot forward (a stall
    /// at the head of every MAC in `perf annotate`).
    #[inline(always)]
    fn mac(&self, key: &SipHasher24, t: &CookieTuple, isn: u32, counter: u32, mss_index: u8, ts: u8) -> u32 {
        #[cfg(test)]
        self.macs.set(self.macs.get() + 1);
        let h = match t.addrs {
            CookieAddrs::V4 { client, server } => {
                let mut b = [0u8; 22];
                b[0..4].copy_from_slice(&client);
                b[4..8].copy_from_slice(&server);
                fill_common(&mut b[8..], t, isn, counter, mss_index, ts);
                Sip24::hash(key.keys(), &b)
            }
            CookieAddrs::V6 { client, server } => {
                let mut b = [0u8; 46];
                b[0..16].copy_from_slice(&client);
                b[16..32].copy_from_slice(&server);
                fill_common(&mut b[32..], t, isn, counter, mss_index, ts);
                Sip24::hash(key.keys(), &b)
            }
        };
        (h >> (64 - MAC_BITS)) as u32
    }

    /// How many MACs this jar has computed (tests of the one-hash bound).
    #[cfg(test)]
    pub(crate) fn macs_computed(&self) -> u64 {
        self.macs.get()
    }

    /// A cookie whose MAC uses the key of `epoch` at `counter`, with an arbitrary MSS index
    /// (its low 2 bits go in the cookie, all 8 into the MAC) and option byte: tests of the
    /// rotation and of the decoder's bounds checks.
    #[cfg(test)]
    pub(crate) fn forge(
        &self,
        epoch: u32,
        counter: u32,
        tuple: &CookieTuple,
        isn: u32,
        mss_index: u8,
        ts: u8,
    ) -> u32 {
        let key = derive_key(&self.master, epoch);
        let mac = self.mac(&key, tuple, isn, counter, mss_index, ts);
        (mac << MAC_SHIFT) | ((counter & 1) << COUNTER_BIT_SHIFT) | (u32::from(mss_index) & MSS_INDEX_MASK)
    }
}

/// Ports, ISN, counter, MSS index, option byte: 14 bytes after the addresses.
#[inline]
fn fill_common(b: &mut [u8], t: &CookieTuple, isn: u32, counter: u32, mss_index: u8, ts: u8) {
    b[0..2].copy_from_slice(&t.client_port.to_be_bytes());
    b[2..4].copy_from_slice(&t.server_port.to_be_bytes());
    b[4..8].copy_from_slice(&isn.to_be_bytes());
    b[8..12].copy_from_slice(&counter.to_be_bytes());
    b[12] = mss_index;
    b[13] = ts;
}

/// The key of `epoch`: SipHash-2-4 keyed with the master over the label, the epoch and the
/// half's index. SipHash is a PRF, so keys of different epochs are independent.
fn derive_key(master: &SipHasher24, epoch: u32) -> SipHasher24 {
    let mut input = [0u8; 24];
    input[..KDF_LABEL.len()].copy_from_slice(KDF_LABEL);
    input[18..22].copy_from_slice(&epoch.to_be_bytes());
    input[23] = 0;
    let k0 = master.hash(&input);
    input[23] = 1;
    let k1 = master.hash(&input);
    SipHasher24::new_with_keys(k0, k1)
}

#[cfg(test)]
mod tests;
