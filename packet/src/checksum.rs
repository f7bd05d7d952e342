//! The Internet checksum: full computation (RFC 1071), pseudo-header sums, and incremental
//! update (RFC 1624).
//!
//! Owns the one's-complement arithmetic shared by the IPv4, TCP, UDP and ICMP views and by the
//! SYN-proxy's in-place rewrites. Pure functions; callable from any thread.
//!
//! Vocabulary used throughout:
//! - a *sum* is the folded one's-complement sum of 16-bit big-endian words, before negation;
//! - a *checksum* is the negated sum, the value that goes in a header's checksum field.
//!
//! A buffer whose checksum field holds the right value sums to `0xFFFF` (one's-complement
//! "negative zero"); [`verify`] tests exactly that.
//!
//! Incremental update follows RFC 1624 eqn. 3, `HC' = ~(~HC + ~m + m')`. It gives the same bits
//! as a full recomputation except when every summed word becomes zero, where the full
//! computation yields `0xFFFF` and the update `0x0000`: both are one's-complement zero and that
//! input (an all-zero header plus pseudo-header) never occurs in a real IP packet. Callers that
//! rewrite a UDP checksum must still map a computed `0x0000` to `0xFFFF`, because UDP reserves
//! zero for "no checksum".
//!
//! Word alignment: the incremental helpers treat the changed value as whole 16-bit words of the
//! summed data, so the field must start at an even offset of that data. Every field levee
//! rewrites (addresses, ports, sequence numbers, TTL/protocol, MSS) does.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Folds a wide accumulator of 16- or 32-bit words into a 16-bit one's-complement sum.
///
/// Folding with end-around carry keeps the value congruent modulo `0xFFFF`, so any mix of
/// 16-bit and 32-bit big-endian words may be added into the accumulator first. Two
/// add-with-carry steps, 64 to 32 and 32 to 16 bits (no loop: same result as folding until
/// nothing is left above bit 15, without a data-dependent branch). Zero stays zero and nothing
/// else becomes zero.
#[inline]
pub fn fold(acc: u64) -> u16 {
    let (s, c) = (acc as u32).overflowing_add((acc >> 32) as u32);
    // With a carry out, `s` is at most 0xFFFF_FFFE: adding it back cannot overflow.
    let s = s + u32::from(c);
    let (t, c) = (s as u16).overflowing_add((s >> 16) as u16);
    t + u16::from(c)
}

/// One's-complement addition of two 16-bit sums.
#[inline]
pub fn add(a: u16, b: u16) -> u16 {
    fold(u64::from(a) + u64::from(b))
}

/// Combines several partial sums (from [`sum`] or the pseudo-header helpers) into one.
#[inline]
pub fn combine(sums: &[u16]) -> u16 {
    fold(sums.iter().map(|&s| u64::from(s)).sum())
}

/// The one's-complement sum of `data` as 16-bit big-endian words (RFC 1071), not negated.
///
/// An odd trailing byte is padded with a zero byte, as the RFC prescribes. The sum is zero only
/// when every byte is zero.
///
/// Computed as RFC 1071 §2 allows: whole 64-bit words in the machine's (little-endian) byte
/// order with end-around carry (2^64 is 1 modulo `0xFFFF`, as 2^16 is), folded once, then the
/// two bytes exchanged (the one's-complement sum of byte-swapped words is the byte-swapped
/// sum). Eight bytes cost one load and an add-with-carry instead of two loads, two byte swaps
/// and two adds; the IPv4 header and a bare TCP header are a few words each.
///
/// Always inlined: it is short, and a SYN's two checks (IPv4 header, TCP segment) then run
/// side by side instead of as two calls.
#[inline(always)]
pub fn sum(data: &[u8]) -> u16 {
    let add = |acc: u64, w: u64| {
        let (s, carry) = acc.overflowing_add(w);
        s + u64::from(carry)
    };
    let mut acc = 0u64;
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        acc = add(
            acc,
            u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]),
        );
    }
    // At most 7 bytes left, as the low bytes of one more word (an odd last byte is then the
    // low byte of a little-endian pair: the high byte of its big-endian word).
    // Read as one 4-, one 2- and one 1-byte piece (a copy of a variable length into a zeroed
    // word compiled to a byte loop).
    let rest = words.remainder();
    let (mut tail, mut at) = (0u64, 0usize);
    if let Some(&[a, b, c, d]) = rest.get(..4) {
        tail = u64::from(u32::from_le_bytes([a, b, c, d]));
        at = 4;
    }
    if let Some(&[a, b]) = rest.get(at..at + 2) {
        tail |= u64::from(u16::from_le_bytes([a, b])) << (8 * at);
        at += 2;
    }
    if let Some(&a) = rest.get(at) {
        tail |= u64::from(a) << (8 * at);
    }
    fold(add(acc, tail)).swap_bytes()
}

/// The Internet checksum of `data`: the negation of [`sum`]. Compute it with the checksum field
/// zeroed, then store it in that field.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !sum(data)
}

/// Whether `data`, checksum field included, carries a correct Internet checksum.
#[inline]
pub fn verify(data: &[u8]) -> bool {
    sum(data) == 0xFFFF
}

/// The sum of the IPv4 pseudo-header (RFC 793 / RFC 768): source, destination, zero, protocol
/// and the upper-layer length.
#[inline]
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, upper_len: u16) -> u16 {
    let acc =
        u64::from(u32::from(src)) + u64::from(u32::from(dst)) + u64::from(protocol) + u64::from(upper_len);
    fold(acc)
}

/// The sum of the IPv6 pseudo-header (RFC 8200 §8.1): source, destination, 32-bit upper-layer
/// length, three zero bytes and the next-header value of the upper layer.
#[inline]
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, upper_len: u32) -> u16 {
    let acc = u64::from(sum(&src.octets()))
        + u64::from(sum(&dst.octets()))
        + u64::from(upper_len)
        + u64::from(next_header);
    fold(acc)
}

/// The addresses that go into a transport checksum's pseudo-header.
///
/// The protocol number and the upper-layer length come from the segment being summed, so the
/// emitters take only this and fill in the rest themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PseudoHeader {
    /// An IPv4 pseudo-header.
    V4 {
        /// Source address of the enclosing IPv4 packet.
        src: Ipv4Addr,
        /// Destination address of the enclosing IPv4 packet.
        dst: Ipv4Addr,
    },
    /// An IPv6 pseudo-header. `dst` is the final destination (the last routing-header address
    /// when one is present), as RFC 8200 §8.1 requires.
    V6 {
        /// Source address of the enclosing IPv6 packet.
        src: Ipv6Addr,
        /// Final destination address.
        dst: Ipv6Addr,
    },
}

impl PseudoHeader {
    /// The pseudo-header sum for an upper-layer message of `upper_len` bytes of `protocol`.
    ///
    /// For IPv4 only the low 16 bits of `upper_len` exist on the wire; an IPv4 packet cannot
    /// carry more, so callers never pass more.
    #[inline]
    pub fn sum(&self, protocol: u8, upper_len: u32) -> u16 {
        match *self {
            PseudoHeader::V4 { src, dst } => {
                // Truncation cannot lose bits for a length that fits an IPv4 packet.
                pseudo_header_v4(src, dst, protocol, upper_len as u16)
            }
            PseudoHeader::V6 { src, dst } => pseudo_header_v6(src, dst, protocol, upper_len),
        }
    }

    /// The same addresses with source and destination exchanged, for a reply.
    #[inline]
    pub fn reversed(&self) -> PseudoHeader {
        match *self {
            PseudoHeader::V4 { src, dst } => PseudoHeader::V4 { src: dst, dst: src },
            PseudoHeader::V6 { src, dst } => PseudoHeader::V6 { src: dst, dst: src },
        }
    }
}

/// Updates checksum `hc` for one 16-bit word changing from `old` to `new` (RFC 1624 eqn. 3).
#[inline]
pub fn update_u16(hc: u16, old: u16, new: u16) -> u16 {
    !add(add(!hc, !old), new)
}

/// Updates checksum `hc` for a 32-bit field (two adjacent words, e.g. an IPv4 address or a TCP
/// sequence number) changing from `old` to `new`.
#[inline]
pub fn update_u32(hc: u16, old: u32, new: u32) -> u16 {
    let acc = u64::from(!hc)
        + u64::from(!(old >> 16) as u16)
        + u64::from(!old as u16)
        + u64::from(new >> 16)
        + u64::from(new & 0xFFFF);
    !fold(acc)
}

/// Updates checksum `hc` for an even-length, word-aligned byte field changing from `old` to
/// `new`. The two slices must have the same length; bytes beyond the shorter one are ignored,
/// which keeps the function total.
#[inline]
pub fn update_bytes(hc: u16, old: &[u8], new: &[u8]) -> u16 {
    let len = old.len().min(new.len());
    let old_sum = sum(&old[..len]);
    let new_sum = sum(&new[..len]);
    !add(add(!hc, !old_sum), new_sum)
}

/// Updates checksum `hc` for a 16-byte IPv6 address changing from `old` to `new`, as when a
/// translator or the SYN-proxy rewrites an address covered by a transport pseudo-header.
#[inline]
pub fn update_ipv6_addr(hc: u16, old: &Ipv6Addr, new: &Ipv6Addr) -> u16 {
    update_bytes(hc, &old.octets(), &new.octets())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The worked example of RFC 1071 §3: words 0001 f203 f4f5 f6f7 sum to 0xddf2.
    #[test]
    fn rfc1071_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(sum(&data), 0xddf2);
        assert_eq!(checksum(&data), 0x220d);
    }

    #[test]
    fn odd_length_pads_with_zero_low_byte() {
        assert_eq!(sum(&[0xab]), 0xab00);
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
        assert_eq!(
            sum(&[0x12, 0x34, 0x56, 0x78, 0x9a]),
            add(add(0x1234, 0x5678), 0x9a00)
        );
    }

    #[test]
    fn zero_and_negative_zero() {
        // All-zero data sums to +0; anything else that cancels sums to -0 (0xFFFF).
        assert_eq!(sum(&[0; 8]), 0x0000);
        assert_eq!(checksum(&[0; 8]), 0xFFFF);
        assert_eq!(sum(&[0xff, 0xff]), 0xFFFF);
        assert_eq!(checksum(&[0xff, 0xff]), 0x0000);
        assert_eq!(sum(&[0x80, 0x00, 0x7f, 0xff]), 0xFFFF);
        assert_eq!(add(0xFFFF, 0x0000), 0xFFFF);
        assert_eq!(add(0xFFFF, 0x0001), 0x0001);
    }

    /// The IPv4 header of the SYN fixture verifies, and recomputing reproduces its checksum.
    #[test]
    fn ipv4_header_fixture() {
        let header = &crate::fixtures::ETH_IPV4_TCP_SYN[14..34];
        assert!(verify(header));
        let mut zeroed = [0u8; 20];
        zeroed.copy_from_slice(header);
        zeroed[10..12].fill(0);
        assert_eq!(checksum(&zeroed), 0x91f6);
    }

    /// The TCP SYN fixture verifies with its IPv4 pseudo-header.
    #[test]
    fn tcp_pseudo_header_v4_fixture() {
        let frame = &crate::fixtures::ETH_IPV4_TCP_SYN;
        let ph = PseudoHeader::V4 {
            src: Ipv4Addr::new(198, 18, 0, 10),
            dst: Ipv4Addr::new(198, 19, 0, 80),
        };
        let segment = &frame[34..];
        assert_eq!(combine(&[ph.sum(6, segment.len() as u32), sum(segment)]), 0xFFFF);
    }

    /// The IPv6 TCP fixture verifies with its IPv6 pseudo-header.
    #[test]
    fn tcp_pseudo_header_v6_fixture() {
        let frame = &crate::fixtures::ETH_IPV6_TCP_SACK;
        let src: Ipv6Addr = "2001:2::10".parse().unwrap();
        let dst: Ipv6Addr = "2001:2:0:1::80".parse().unwrap();
        let segment = &frame[54..];
        let ph = pseudo_header_v6(src, dst, 6, segment.len() as u32);
        assert_eq!(add(ph, sum(segment)), 0xFFFF);
        let swapped = PseudoHeader::V6 { src: dst, dst: src }.reversed();
        assert_eq!(swapped.sum(6, segment.len() as u32), ph);
    }

    /// Decrementing the TTL of a real header keeps it verifying (the router's use of RFC 1624).
    #[test]
    fn incremental_ttl_decrement() {
        let mut header = [0u8; 20];
        header.copy_from_slice(&crate::fixtures::ETH_IPV4_TCP_SYN[14..34]);
        let hc = u16::from_be_bytes([header[10], header[11]]);
        let old = u16::from_be_bytes([header[8], header[9]]);
        header[8] -= 1;
        let new = u16::from_be_bytes([header[8], header[9]]);
        header[10..12].copy_from_slice(&update_u16(hc, old, new).to_be_bytes());
        assert!(verify(&header));
    }

    /// RFC 1624 §4's worry: a field change that makes the checksum +0 versus -0.
    #[test]
    fn incremental_corner_cases() {
        // Data 0x0001 0xfffe sums to -0, so its checksum is 0x0000. Changing the first word to
        // 0x0000 leaves 0xfffe: checksum 0x0001 both ways.
        let hc = checksum(&[0x00, 0x01, 0xff, 0xfe]);
        assert_eq!(hc, 0x0000);
        assert_eq!(
            update_u16(hc, 0x0001, 0x0000),
            checksum(&[0x00, 0x00, 0xff, 0xfe])
        );
        // A change that brings the sum to -0 gives checksum 0x0000, exactly as recomputation.
        let hc = checksum(&[0x12, 0x34, 0x00, 0x00]);
        let new = !0x1234u16;
        assert_eq!(update_u16(hc, 0x0000, new), 0x0000);
        assert_eq!(checksum(&[0x12, 0x34, (new >> 8) as u8, new as u8]), 0x0000);
        // The only divergence: every word becomes zero. Recomputation gives 0xFFFF, the update
        // 0x0000; both are one's-complement zero.
        let hc = checksum(&[0x00, 0x00, 0xff, 0xff]);
        assert_eq!(checksum(&[0; 4]), 0xFFFF);
        assert_eq!(update_u16(hc, 0xFFFF, 0x0000), 0x0000);
        // Old value 0xFFFF and new value 0x0000 are the same number in one's complement, so
        // with other non-zero words the checksum does not move.
        let hc = checksum(&[0x00, 0x07, 0xff, 0xff]);
        assert_eq!(update_u16(hc, 0xFFFF, 0x0000), hc);
        assert_eq!(update_u32(hc, 0x0000_FFFF, 0xFFFF_0000), hc);
    }

    /// Compares an incremental result with recomputation under the one documented exception.
    fn assert_same_checksum(incremental: u16, modified: &[u8]) {
        let full = checksum(modified);
        if modified.iter().all(|&b| b == 0) {
            assert!(
                incremental == 0x0000 || incremental == 0xFFFF,
                "{incremental:#06x}"
            );
            assert_eq!(full, 0xFFFF);
        } else {
            assert_eq!(incremental, full, "incremental vs full over {modified:02x?}");
        }
    }

    /// Word values biased towards the one's-complement corner cases.
    fn word() -> impl Strategy<Value = u16> {
        prop_oneof![
            Just(0x0000u16),
            Just(0xFFFFu16),
            Just(0x0001u16),
            Just(0xFFFEu16),
            any::<u16>()
        ]
    }

    /// Whole buffers of such words, sometimes all zero or all ones.
    fn words(max: usize) -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(word(), 2..max),
            (2..max).prop_map(|n| vec![0u16; n]),
            (2..max).prop_map(|n| vec![0xFFFFu16; n]),
        ]
        .prop_map(|ws| ws.iter().flat_map(|w| w.to_be_bytes()).collect())
    }

    /// Lengths 0 to 64 with bytes that make the 64-bit words carry (all ones and near it).
    #[test]
    fn sum_matches_plain_words_at_every_length() {
        for len in 0..=64usize {
            for fill in [0x00u8, 0x01, 0x7f, 0x80, 0xfe, 0xff] {
                let data: Vec<u8> = (0..len)
                    .map(|i| fill.wrapping_add((i % 3) as u8 * (fill & 1)))
                    .collect();
                let mut acc = 0u64;
                for pair in data.chunks(2) {
                    acc += u64::from(pair[0]) << 8 | pair.get(1).copied().map_or(0, u64::from);
                }
                let mut reference = acc;
                while reference >> 16 != 0 {
                    reference = (reference & 0xFFFF) + (reference >> 16);
                }
                assert_eq!(u64::from(sum(&data)), reference, "{len} bytes of {fill:#x}");
            }
        }
    }

    proptest! {
        #[test]
        fn update_u16_matches_recompute(mut data in words(40), index in any::<prop::sample::Index>(), new in word()) {
            let hc = checksum(&data);
            let at = index.index(data.len() / 2) * 2;
            let old = u16::from_be_bytes([data[at], data[at + 1]]);
            data[at..at + 2].copy_from_slice(&new.to_be_bytes());
            assert_same_checksum(update_u16(hc, old, new), &data);
        }

        #[test]
        fn update_u32_matches_recompute(mut data in words(40), index in any::<prop::sample::Index>(), hi in word(), lo in word()) {
            let hc = checksum(&data);
            let at = index.index(data.len() / 2 - 1) * 2;
            let old = u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
            let new = (u32::from(hi) << 16) | u32::from(lo);
            data[at..at + 4].copy_from_slice(&new.to_be_bytes());
            assert_same_checksum(update_u32(hc, old, new), &data);
        }

        #[test]
        fn update_ipv6_addr_matches_recompute(mut data in words(40), index in any::<prop::sample::Index>(), new in any::<[u8; 16]>(), zero in any::<bool>()) {
            // Place a 16-byte address at an even offset of a buffer at least that long.
            data.resize(data.len().max(16), 0);
            let new = if zero { [0u8; 16] } else { new };
            let hc = checksum(&data);
            let at = index.index((data.len() - 16) / 2 + 1) * 2;
            let old: [u8; 16] = data[at..at + 16].try_into().unwrap();
            data[at..at + 16].copy_from_slice(&new);
            let updated = update_ipv6_addr(hc, &Ipv6Addr::from(old), &Ipv6Addr::from(new));
            assert_same_checksum(updated, &data);
        }

        #[test]
        fn chained_updates_keep_verifying(mut data in words(40), changes in proptest::collection::vec((any::<prop::sample::Index>(), word()), 1..8)) {
            // Reserve word 0 for the checksum field, as in a real header, and keep another
            // word non-zero so the data never becomes all zero.
            data.resize(data.len().max(6), 0);
            data[2] = 0x45;
            data[0..2].fill(0);
            let hc = checksum(&data);
            data[0..2].copy_from_slice(&hc.to_be_bytes());
            for (index, new) in changes {
                let at = 4 + index.index((data.len() - 4) / 2) * 2;
                let old = u16::from_be_bytes([data[at], data[at + 1]]);
                let hc = u16::from_be_bytes([data[0], data[1]]);
                data[at..at + 2].copy_from_slice(&new.to_be_bytes());
                data[0..2].copy_from_slice(&update_u16(hc, old, new).to_be_bytes());
                prop_assert!(verify(&data));
            }
        }

        #[test]
        fn fold_matches_folding_until_done(acc in prop_oneof![any::<u64>(), 0u64..0x3_0000, Just(u64::MAX), Just(0x1_0000u64), Just(0xFFFFu64)]) {
            let mut reference = acc;
            while reference >> 16 != 0 {
                reference = (reference & 0xFFFF) + (reference >> 16);
            }
            prop_assert_eq!(u64::from(fold(acc)), reference);
        }

        #[test]
        fn sum_is_word_order_independent(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            // The 32-bit-word fast path must agree with a plain 16-bit loop.
            let mut acc = 0u64;
            for pair in data.chunks(2) {
                let hi = u64::from(pair[0]) << 8;
                let lo = pair.get(1).copied().map_or(0, u64::from);
                acc += hi | lo;
            }
            prop_assert_eq!(sum(&data), fold(acc));
        }
    }
}
