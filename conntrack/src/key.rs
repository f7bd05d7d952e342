//! Flow keys: one canonical key for both directions of a flow, and its keyed hash.
//!
//! Owns [`Key`], [`PackedKey`] and [`HashKey`]. The kernel stores two tuples per connection
//! (original and reply) in its hash; a shard stores one key per flow in an order that does not
//! depend on the direction, so a packet and its reply find the same table slot with one probe:
//! - TCP, UDP and other protocols: the two (address, port) ends sorted, lower end first. The
//!   entry remembers which end opened the flow.
//! - ICMP and ICMPv6 queries (echo, timestamp, information, address mask, node information):
//!   the kernel's tuple is (id, type, code) and a reply carries the inverse type
//!   (`invmap[]` in `nf_conntrack_proto_icmp.c`). The key is oriented by role instead: the
//!   requester's address first, then the responder's, then the id and the *request* type and
//!   code, so a request and its reply build the same key and pings in both directions between
//!   two hosts stay two flows, as in Linux.
//!
//! Two forms of one key: [`Key`] holds the addresses as `u128` values (the address bytes read
//! big-endian, IPv4 in the top 32 bits), the form the packet path builds, hashes and compares
//! in registers; [`PackedKey`] is the 38-byte form an entry stores. Keeping the fresh key out
//! of memory matters: a struct written field by field and read back with wider loads stalls
//! on store forwarding, which cost more than the hash when the key was one byte array.
//!
//! The hash is SipHash-1-3 under a secret per-boot key the caller supplies, so the table layout
//! cannot be predicted from outside (the kernel uses siphash with `nf_conntrack_hash_rnd`).
//! Pure values, usable from any thread.

use levee_packet::parse::{FlowTuple, IpFamily};

/// The secret SipHash key of a shard (draw it once per boot; tests pass a constant).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HashKey(pub [u64; 2]);

/// The direction-independent key of a flow (see the module documentation), in registers.
#[derive(Clone, Copy, Debug, Eq)]
pub(crate) struct Key {
    /// The two ends' addresses, big-endian values of the 16 address bytes (IPv4 in the top 32
    /// bits, the rest zero).
    pub addr: [u128; 2],
    /// Ports of the two ends; for ICMP queries `[id, request type << 8 | code]`.
    pub port: [u16; 2],
    /// IP protocol number.
    pub proto: u8,
    /// IPv6.
    pub v6: bool,
}

/// A [`Key`] as an entry stores it: 38 bytes, 2-byte aligned (the addresses in native byte
/// order, so unpacking is two plain loads).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PackedKey {
    pub addr: [[u8; 16]; 2],
    port: [u16; 2],
    proto: u8,
    v6: bool,
}

/// An IPv4 address as a [`Key`] address.
#[inline]
pub(crate) fn v4_addr(octets: [u8; 4]) -> u128 {
    u128::from(u32::from_be_bytes(octets)) << 96
}

impl Key {
    /// Key of a port-based (or port-less) flow for a packet `src:sp -> dst:dp`, and which end
    /// (0 or 1) the packet's source is.
    #[inline]
    pub fn ports(v6: bool, proto: u8, src: u128, dst: u128, sp: u16, dp: u16) -> (Key, u8) {
        if (src, sp) <= (dst, dp) {
            (
                Key {
                    addr: [src, dst],
                    port: [sp, dp],
                    proto,
                    v6,
                },
                0,
            )
        } else {
            (
                Key {
                    addr: [dst, src],
                    port: [dp, sp],
                    proto,
                    v6,
                },
                1,
            )
        }
    }

    /// Key of an ICMP query flow. End 0 is always the requester.
    #[inline]
    pub fn icmp(
        v6: bool,
        proto: u8,
        requester: u128,
        responder: u128,
        id: u16,
        req_type: u8,
        code: u8,
    ) -> Key {
        Key {
            addr: [requester, responder],
            port: [id, (u16::from(req_type) << 8) | u16::from(code)],
            proto,
            v6,
        }
    }

    /// Whether this is an ICMP query key (oriented by role, not sorted).
    pub fn is_icmp(&self) -> bool {
        (!self.v6 && self.proto == levee_packet::ip_protocol::ICMP)
            || (self.v6 && self.proto == levee_packet::ip_protocol::ICMPV6)
    }

    /// SipHash-1-3 of the key under `key`. The message is the little-endian bytes of the
    /// words an IPv4 key makes (both addresses in one word, then ports, protocol and family;
    /// 14 bytes) or an IPv6 key makes (four address words, then the same; 38 bytes).
    #[inline(always)]
    pub fn hash(&self, key: &HashKey) -> u64 {
        let [a, b] = self.addr;
        let rest = u64::from(self.port[0])
            | u64::from(self.port[1]) << 16
            | u64::from(self.proto) << 32
            | u64::from(self.v6) << 40;
        // SipHash-1-3 over whole words; the length goes in the top byte of the last one.
        let mut s = levee_packet::siphash::Sip13::new(key.0[0], key.0[1]);
        if self.v6 {
            s.compress((a >> 64) as u64);
            s.compress(a as u64);
            s.compress((b >> 64) as u64);
            s.compress(b as u64);
            s.compress(rest | 38 << 56);
        } else {
            s.compress((a >> 96) as u64 | ((b >> 96) as u64) << 32);
            s.compress(rest | 14 << 56);
        }
        s.finish()
    }

    /// The stored form.
    #[inline]
    pub fn pack(&self) -> PackedKey {
        PackedKey {
            addr: [self.addr[0].to_ne_bytes(), self.addr[1].to_ne_bytes()],
            port: self.port,
            proto: self.proto,
            v6: self.v6,
        }
    }

    /// The tuple of a packet sent by end `from` (the original tuple when `from` is the
    /// opening end). ICMP query tuples carry the id as both ports, as [`FlowTuple`] does.
    pub fn tuple(&self, from: u8) -> FlowTuple {
        let family = if self.v6 { IpFamily::V6 } else { IpFamily::V4 };
        let (s, d) = (usize::from(from & 1), usize::from(!from & 1));
        let (sp, dp) = if self.is_icmp() {
            (self.port[0], self.port[0])
        } else {
            (self.port[s], self.port[d])
        };
        FlowTuple {
            family,
            protocol: self.proto,
            src_addr: self.addr[s].to_be_bytes(),
            dst_addr: self.addr[d].to_be_bytes(),
            src_port: sp,
            dst_port: dp,
        }
    }
}

impl PartialEq for Key {
    /// Word by word in general-purpose registers: a key just built is often still in the
    /// store buffer as 8-byte pieces, which the 16-byte vector compare the derived version
    /// compiles to cannot be forwarded from.
    #[inline(always)]
    fn eq(&self, other: &Key) -> bool {
        let diff = |a: u128, b: u128| (a as u64 ^ b as u64) | ((a >> 64) as u64 ^ (b >> 64) as u64);
        let rest = |k: &Key| {
            u64::from(k.port[0])
                | u64::from(k.port[1]) << 16
                | u64::from(k.proto) << 32
                | u64::from(k.v6) << 40
        };
        (diff(self.addr[0], other.addr[0]) | diff(self.addr[1], other.addr[1]) | (rest(self) ^ rest(other)))
            == 0
    }
}

impl PackedKey {
    /// The key in registers.
    #[inline]
    pub fn unpack(&self) -> Key {
        Key {
            addr: [
                u128::from_ne_bytes(self.addr[0]),
                u128::from_ne_bytes(self.addr[1]),
            ],
            port: self.port,
            proto: self.proto,
            v6: self.v6,
        }
    }

    /// Whether this is `key`.
    #[inline]
    pub fn is(&self, key: &Key) -> bool {
        self.unpack() == *key
    }

    /// See [`Key::hash`].
    pub fn hash(&self, key: &HashKey) -> u64 {
        self.unpack().hash(key)
    }

    /// See [`Key::tuple`].
    pub fn tuple(&self, from: u8) -> FlowTuple {
        self.unpack().tuple(from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn a4(last: u8) -> u128 {
        v4_addr(Ipv4Addr::new(198, 18, 0, last).octets())
    }

    #[test]
    fn both_directions_share_one_key() {
        let (k1, s1) = Key::ports(false, 6, a4(1), a4(2), 40000, 80);
        let (k2, s2) = Key::ports(false, 6, a4(2), a4(1), 80, 40000);
        assert_eq!(k1, k2);
        assert_ne!(s1, s2);
        let hk = HashKey([1, 2]);
        assert_eq!(k1.hash(&hk), k2.hash(&hk));
        assert_ne!(k1.hash(&hk), k1.hash(&HashKey([1, 3])));
        let t = k1.tuple(s1);
        assert_eq!(
            (t.src_port, t.dst_port, t.src_addr, t.dst_addr),
            (40000, 80, a4(1).to_be_bytes(), a4(2).to_be_bytes())
        );
        assert_eq!(t.src_addr[..4], [198, 18, 0, 1]);
        assert_eq!(k1.tuple(s2), t.reversed());
    }

    #[test]
    fn same_address_different_ports_are_ordered_by_port() {
        let (k, side) = Key::ports(false, 17, a4(1), a4(1), 9, 7);
        assert_eq!((k.port, side), ([7, 9], 1));
    }

    /// Addresses order like their bytes (the order the key's ends are sorted in).
    #[test]
    fn addresses_order_like_their_bytes() {
        let (k, side) = Key::ports(false, 6, a4(2), v4_addr([198, 18, 1, 0]), 1, 1);
        assert_eq!((k.addr[0], side), (a4(2), 0));
    }

    #[test]
    fn packing_round_trips() {
        let (k, _) = Key::ports(true, 6, u128::MAX - 5, 0x2001_0db8 << 96, 443, 1);
        assert_eq!(k.pack().unpack(), k);
        assert!(k.pack().is(&k));
        assert_eq!(k.pack().hash(&HashKey([5, 6])), k.hash(&HashKey([5, 6])));
        assert_eq!(core::mem::size_of::<PackedKey>(), 38);
    }

    /// The word-wise hash is the reference SipHash-1-3 of the message the doc describes.
    #[test]
    fn hash_is_siphash13_of_the_key_words() {
        use core::hash::Hasher;
        let reference = |k: &Key, hk: &HashKey| {
            let mut buf = Vec::new();
            if k.v6 {
                for a in k.addr {
                    buf.extend_from_slice(&((a >> 64) as u64).to_le_bytes());
                    buf.extend_from_slice(&(a as u64).to_le_bytes());
                }
            } else {
                buf.extend_from_slice(&((k.addr[0] >> 96) as u32).to_le_bytes());
                buf.extend_from_slice(&((k.addr[1] >> 96) as u32).to_le_bytes());
            }
            buf.extend_from_slice(&k.port[0].to_le_bytes());
            buf.extend_from_slice(&k.port[1].to_le_bytes());
            buf.push(k.proto);
            buf.push(u8::from(k.v6));
            let mut h = siphasher::sip::SipHasher13::new_with_keys(hk.0[0], hk.0[1]);
            h.write(&buf);
            h.finish()
        };
        let mut x = 0x0123_4567_89ab_cdefu64;
        let mut next = || {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            x
        };
        for _ in 0..2000 {
            let v6 = next() & 1 == 1;
            let addr = |r: u64, s: u64| {
                if v6 {
                    u128::from(r) << 64 | u128::from(s)
                } else {
                    u128::from(r as u32) << 96
                }
            };
            let src = addr(next(), next());
            let dst = addr(next(), next());
            let (k, _) = Key::ports(v6, next() as u8, src, dst, next() as u16, next() as u16);
            let hk = HashKey([next(), next()]);
            assert_eq!(k.hash(&hk), reference(&k, &hk), "{k:?}");
        }
    }

    #[test]
    fn icmp_keys_are_oriented_by_role() {
        let req = Key::icmp(false, 1, a4(1), a4(2), 7, 8, 0);
        let other_way = Key::icmp(false, 1, a4(2), a4(1), 7, 8, 0);
        assert_ne!(req, other_way);
        let t = req.tuple(0);
        assert_eq!((t.src_port, t.dst_port, t.src_addr), (7, 7, a4(1).to_be_bytes()));
    }
}
