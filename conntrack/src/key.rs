//! Flow keys: one canonical key for both directions of a flow, and its keyed hash.
//!
//! Owns [`Key`] and [`HashKey`]. The kernel stores two tuples per connection (original and
//! reply) in its hash; a shard stores one key per flow in an order that does not depend on the
//! direction, so a packet and its reply find the same table slot with one probe:
//! - TCP, UDP and other protocols: the two (address, port) ends sorted, lower end first. The
//!   entry remembers which end opened the flow.
//! - ICMP and ICMPv6 queries (echo, timestamp, information, address mask, node information):
//!   the kernel's tuple is (id, type, code) and a reply carries the inverse type
//!   (`invmap[]` in `nf_conntrack_proto_icmp.c`). The key is oriented by role instead: the
//!   requester's address first, then the responder's, then the id and the *request* type and
//!   code, so a request and its reply build the same key and pings in both directions between
//!   two hosts stay two flows, as in Linux.
//!
//! The hash is SipHash-1-3 under a secret per-boot key the caller supplies, so the table layout
//! cannot be predicted from outside (the kernel uses siphash with `nf_conntrack_hash_rnd`).
//! Pure values, usable from any thread.

use core::hash::Hasher;
#[cfg(test)]
use std::net::IpAddr;

use levee_packet::parse::{FlowTuple, IpFamily};
use siphasher::sip::SipHasher13;

/// The secret SipHash key of a shard (draw it once per boot; tests pass a constant).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HashKey(pub [u64; 2]);

/// The direction-independent key of a flow (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Key {
    /// The two ends' addresses (IPv4 in the first 4 bytes, the rest zero).
    pub addr: [[u8; 16]; 2],
    /// Ports of the two ends; for ICMP queries `[id, request type << 8 | code]`.
    pub port: [u16; 2],
    /// IP protocol number.
    pub proto: u8,
    /// IPv6.
    pub v6: bool,
}

impl Key {
    /// Key of a port-based (or port-less) flow for a packet `src:sp -> dst:dp`, and which end
    /// (0 or 1) the packet's source is.
    #[inline]
    pub fn ports(v6: bool, proto: u8, src: [u8; 16], dst: [u8; 16], sp: u16, dp: u16) -> (Key, u8) {
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
        requester: [u8; 16],
        responder: [u8; 16],
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

    /// SipHash-1-3 of the key under `key`. IPv4 keys hash 14 bytes, IPv6 keys 38.
    #[inline]
    pub fn hash(&self, key: &HashKey) -> u64 {
        let mut buf = [0u8; 38];
        let n = if self.v6 {
            buf[..16].copy_from_slice(&self.addr[0]);
            buf[16..32].copy_from_slice(&self.addr[1]);
            32
        } else {
            buf[..4].copy_from_slice(&self.addr[0][..4]);
            buf[4..8].copy_from_slice(&self.addr[1][..4]);
            8
        };
        buf[n..n + 2].copy_from_slice(&self.port[0].to_ne_bytes());
        buf[n + 2..n + 4].copy_from_slice(&self.port[1].to_ne_bytes());
        buf[n + 4] = self.proto;
        buf[n + 5] = u8::from(self.v6);
        let mut h = SipHasher13::new_with_keys(key.0[0], key.0[1]);
        h.write(&buf[..n + 6]);
        h.finish()
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
            src_addr: self.addr[s],
            dst_addr: self.addr[d],
            src_port: sp,
            dst_port: dp,
        }
    }
}

/// An address as the 16 bytes a [`Key`] stores.
#[cfg(test)]
pub(crate) fn addr_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => {
            let mut out = [0; 16];
            out[..4].copy_from_slice(&a.octets());
            out
        }
        IpAddr::V6(a) => a.octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn a4(last: u8) -> [u8; 16] {
        addr_bytes(IpAddr::V4(Ipv4Addr::new(198, 18, 0, last)))
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
            (40000, 80, a4(1), a4(2))
        );
        assert_eq!(k1.tuple(s2), t.reversed());
    }

    #[test]
    fn same_address_different_ports_are_ordered_by_port() {
        let (k, side) = Key::ports(false, 17, a4(1), a4(1), 9, 7);
        assert_eq!((k.port, side), ([7, 9], 1));
    }

    #[test]
    fn icmp_keys_are_oriented_by_role() {
        let req = Key::icmp(false, 1, a4(1), a4(2), 7, 8, 0);
        let other_way = Key::icmp(false, 1, a4(2), a4(1), 7, 8, 0);
        assert_ne!(req, other_way);
        let t = req.tuple(0);
        assert_eq!((t.src_port, t.dst_port, t.src_addr), (7, 7, a4(1)));
    }
}
