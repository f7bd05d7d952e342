//! Flow steering: which worker owns a flow.
//!
//! Both directions of a flow must be handled by the same worker (its conntrack shard and SYN
//! proxy state live there). On NICs with RSS, levee programs the symmetric Toeplitz key
//! (0x6d5a repeated) and a redirection table `bucket -> bucket % workers`; the worker computes
//! the very same Toeplitz hash in software, so a flow's owner as computed here is the queue the
//! NIC delivered it to and no hand-off happens. On devices without RSS (most vdevs, or
//! `net_af_packet`'s kernel fanout), packets that arrive at the wrong worker are handed over.
//!
//! The hash inputs follow the Microsoft RSS specification (which NICs implement): for TCP and
//! UDP, source address, destination address, source port, destination port; for other IP
//! traffic and for fragments, the two addresses only. Fragments never carry ports (non-first
//! fragments cannot), so every fragment of a datagram reaches the same worker.
//!
//! Toeplitz with a key of period 16 bits is symmetric under swapping the two addresses and the
//! two ports (Woo & Park, 2012). Because the key is periodic, the 32-bit key window for input
//! byte *i* depends only on *i* mod 2, so two 256-entry tables make the hash one lookup per
//! input byte (12 for IPv4 TCP, 36 for IPv6 TCP).

use levee_packet::parse::{FrameInfo, IpInfo, L3Info, L4Info};

/// 64 bits of the periodic key 0x6d5a6d5a…; any 32-bit window of the key is a shift of it.
const KEY64: u64 = 0x6d5a_6d5a_6d5a_6d5a;

/// `TABLES[i % 2][b]`: the XOR of the key windows selected by the set bits of byte `b` at input
/// position `i`.
static TABLES: [[u32; 256]; 2] = build_tables();

const fn window(bit_offset: u32) -> u32 {
    ((KEY64 << bit_offset) >> 32) as u32
}

const fn build_tables() -> [[u32; 256]; 2] {
    let mut t = [[0u32; 256]; 2];
    let mut parity = 0;
    while parity < 2 {
        let mut b = 0;
        while b < 256 {
            let mut acc = 0u32;
            let mut bit = 0;
            while bit < 8 {
                if b & (0x80 >> bit) != 0 {
                    acc ^= window(parity * 8 + bit);
                }
                bit += 1;
            }
            t[parity as usize][b] = acc;
            b += 1;
        }
        parity += 1;
    }
    t
}

/// Toeplitz hash of `input` under the symmetric key (0x6d5a repeated).
#[inline]
pub fn symmetric_toeplitz(input: &[u8]) -> u32 {
    let mut h = 0u32;
    for (i, &b) in input.iter().enumerate() {
        h ^= TABLES[i & 1][b as usize];
    }
    h
}

/// The fields of a packet that decide its owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowKey<'a> {
    /// IPv4 or IPv6 addresses plus TCP/UDP ports.
    Ports {
        src: &'a [u8],
        dst: &'a [u8],
        sport: u16,
        dport: u16,
    },
    /// Other IP traffic and fragments: the addresses only.
    Addrs { src: &'a [u8], dst: &'a [u8] },
}

/// The symmetric hash of a flow key, identical to what a NIC with levee's RSS key computes.
#[inline]
pub fn flow_hash(key: FlowKey<'_>) -> u32 {
    match key {
        FlowKey::Ports {
            src,
            dst,
            sport,
            dport,
        } => {
            // Hash the parts in place instead of copying into one buffer: the key window for an
            // input byte depends only on the byte's position parity, and every part has even
            // length, so each part can start again at parity 0.
            symmetric_toeplitz(src)
                ^ symmetric_toeplitz(dst)
                ^ symmetric_toeplitz(&sport.to_be_bytes())
                ^ symmetric_toeplitz(&dport.to_be_bytes())
        }
        FlowKey::Addrs { src, dst } => symmetric_toeplitz(src) ^ symmetric_toeplitz(dst),
    }
}

/// The steering hash of a parsed frame (None for non-IP frames): the 4-tuple for unfragmented
/// TCP and UDP, the address pair for everything else, as RSS hashes them.
#[inline]
pub fn steering_hash(info: &FrameInfo) -> Option<u32> {
    fn of<A>(src: &[u8], dst: &[u8], ip: &IpInfo<A>) -> u32 {
        match ip.l4 {
            L4Info::Tcp {
                src_port, dst_port, ..
            }
            | L4Info::Udp { src_port, dst_port }
                if !ip.frag.is_fragment() =>
            {
                flow_hash(FlowKey::Ports {
                    src,
                    dst,
                    sport: src_port,
                    dport: dst_port,
                })
            }
            _ => flow_hash(FlowKey::Addrs { src, dst }),
        }
    }
    match &info.l3 {
        L3Info::Ipv4(ip) => Some(of(&ip.src.octets(), &ip.dst.octets(), ip)),
        L3Info::Ipv6(ip) => Some(of(&ip.src.octets(), &ip.dst.octets(), ip)),
        L3Info::Arp | L3Info::Other => None,
    }
}

/// Maps flow hashes to workers the same way the NIC's redirection table does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Steering {
    workers: u16,
    bucket_mask: u32,
}

impl Steering {
    /// `workers` workers, `buckets` redirection-table entries (a power of two: the smallest
    /// RETA among the ports, or 128 when no port has one).
    pub fn new(workers: u16, buckets: u32) -> Steering {
        assert!(workers > 0, "at least one worker");
        assert!(
            buckets.is_power_of_two(),
            "RETA size must be a power of two, got {buckets}"
        );
        Steering {
            workers,
            bucket_mask: buckets - 1,
        }
    }

    /// Number of workers.
    pub fn workers(&self) -> u16 {
        self.workers
    }

    /// The worker that owns a flow with this hash.
    #[inline]
    pub fn owner(&self, hash: u32) -> u16 {
        ((hash & self.bucket_mask) % self.workers as u32) as u16
    }

    /// The redirection table to program into each port: bucket -> queue (= worker).
    pub fn reta(&self) -> Vec<u16> {
        (0..=self.bucket_mask)
            .map(|b| (b % self.workers as u32) as u16)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Bit-by-bit Toeplitz over an arbitrary key, straight from the Microsoft RSS spec.
    fn reference(key: &[u8], input: &[u8]) -> u32 {
        let mut result = 0u32;
        for (i, &byte) in input.iter().enumerate() {
            for bit in 0..8 {
                if byte & (0x80 >> bit) != 0 {
                    let off = i * 8 + bit;
                    let mut w = 0u32;
                    for k in 0..32 {
                        let kb = off + k;
                        let set = key[kb / 8] & (0x80 >> (kb % 8)) != 0;
                        w = (w << 1) | set as u32;
                    }
                    result ^= w;
                }
            }
        }
        result
    }

    /// The verification key and vectors published in Microsoft's "Verifying the RSS Hash
    /// Calculation" page (IPv4 with TCP ports, and IPv4 addresses only).
    const MS_KEY: [u8; 40] = [
        0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0, 0xd0,
        0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42,
        0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
    ];

    #[test]
    fn reference_matches_microsoft_vectors() {
        // 66.9.149.187:2794 -> 161.142.100.80:1766
        let v4 = [66, 9, 149, 187, 161, 142, 100, 80, 0x0a, 0xea, 0x06, 0xe6];
        assert_eq!(reference(&MS_KEY, &v4), 0x51cc_c178);
        assert_eq!(reference(&MS_KEY, &v4[..8]), 0x323e_8fc2);
        // 199.92.111.2:14230 -> 65.69.140.83:4739
        let v4b = [199, 92, 111, 2, 65, 69, 140, 83, 0x37, 0x96, 0x12, 0x83];
        assert_eq!(reference(&MS_KEY, &v4b), 0xc626_b0ea);
        assert_eq!(reference(&MS_KEY, &v4b[..8]), 0xd718_262a);
    }

    fn sym_key() -> [u8; 52] {
        crate::dpdk::SYMMETRIC_RSS_KEY
    }

    proptest! {
        #[test]
        fn table_hash_equals_reference(input in proptest::collection::vec(any::<u8>(), 0..40)) {
            prop_assert_eq!(symmetric_toeplitz(&input), reference(&sym_key(), &input));
        }

        #[test]
        fn split_hash_equals_contiguous(src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(), sp: u16, dp: u16) {
            let mut buf = Vec::new();
            buf.extend_from_slice(&src);
            buf.extend_from_slice(&dst);
            buf.extend_from_slice(&sp.to_be_bytes());
            buf.extend_from_slice(&dp.to_be_bytes());
            let key = FlowKey::Ports { src: &src, dst: &dst, sport: sp, dport: dp };
            prop_assert_eq!(flow_hash(key), reference(&sym_key(), &buf));
        }

        #[test]
        fn hash_is_symmetric(src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), sp: u16, dp: u16, workers in 1u16..64) {
            let fwd = flow_hash(FlowKey::Ports { src: &src, dst: &dst, sport: sp, dport: dp });
            let rev = flow_hash(FlowKey::Ports { src: &dst, dst: &src, sport: dp, dport: sp });
            prop_assert_eq!(fwd, rev);
            let s = Steering::new(workers, 128);
            prop_assert_eq!(s.owner(fwd), s.owner(rev));
        }

        #[test]
        fn owner_agrees_with_reta(hash: u32, workers in 1u16..32, reta_pow in 6u32..10) {
            // A device with a larger RETA programmed by repeating our table gives the same queue.
            let s = Steering::new(workers, 128);
            let table = s.reta();
            let reta_size = 1usize << reta_pow;
            let device: Vec<u16> = (0..reta_size.max(128)).map(|i| table[i % table.len()]).collect();
            prop_assert_eq!(device[hash as usize % device.len()], s.owner(hash));
        }
    }
}
