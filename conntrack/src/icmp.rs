//! ICMP and ICMPv6 as conntrack sees them: which messages are queries (and their inverse), which
//! are errors, which are never tracked, and the packet an error quotes.
//!
//! Mirrors `nf_conntrack_proto_icmp.c` (`invmap[]`, `valid_new[]`, `nf_conntrack_icmpv4_error`,
//! `nf_conntrack_inet_error`), `nf_conntrack_proto_icmpv6.c` (`invmap[]`, `noct_valid_new[]`,
//! `nf_conntrack_icmpv6_error`, `nf_conntrack_icmpv6_redirect`) and the inner-tuple readers of
//! `nf_conntrack_core.c` (`ipv4_get_l4proto`, `ipv6_get_l4proto`, `nf_ct_get_tuple`). Pure
//! functions over borrowed bytes, called by the shard on its worker thread.

use levee_packet::ip_protocol;
use levee_packet::ipv6::ExtHeaders;

/// Highest ICMP type the kernel knows (`NR_ICMP_TYPES`); higher ones are INVALID.
pub(crate) const NR_ICMP_TYPES: u8 = 18;

/// A query/answer ICMP type: whether it is the request, and the request type of its pair
/// (`invmap[]`; the request types are also `valid_new[]`).
pub(crate) fn query_v4(msg_type: u8) -> Option<(bool, u8)> {
    match msg_type {
        8 | 13 | 15 | 17 => Some((true, msg_type)),
        0 => Some((false, 8)),
        14 | 16 | 18 => Some((false, msg_type - 1)),
        _ => None,
    }
}

/// ICMPv6 echo (128/129) and node information (139/140), as `query_v4`.
pub(crate) fn query_v6(msg_type: u8) -> Option<(bool, u8)> {
    match msg_type {
        128 | 139 => Some((true, msg_type)),
        129 | 140 => Some((false, msg_type - 1)),
        _ => None,
    }
}

/// The answer type of a request type or the request type of an answer (`invmap[]`).
pub(crate) fn inverse(v6: bool, msg_type: u8) -> Option<u8> {
    Some(match (v6, msg_type) {
        (false, 8) => 0,
        (false, 0) => 8,
        (false, 13 | 15 | 17) | (true, 128 | 139) => msg_type + 1,
        (false, 14 | 16 | 18) | (true, 129 | 140) => msg_type - 1,
        _ => return None,
    })
}

/// `icmp_is_err`: destination unreachable, source quench, redirect, time exceeded, parameter
/// problem.
pub(crate) fn is_error_v4(msg_type: u8) -> bool {
    matches!(msg_type, 3 | 4 | 5 | 11 | 12)
}

/// `noct_valid_new[]`: multicast listener and neighbour discovery messages are UNTRACKED.
pub(crate) fn untracked_v6(msg_type: u8) -> bool {
    matches!(msg_type, 130..=136 | 143 | 151 | 152)
}

/// ICMPv6 redirect.
pub(crate) const NDISC_REDIRECT: u8 = 137;

/// The packet an ICMP error quotes, as far as conntrack reads it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Inner<'a> {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub proto: u8,
    /// The quoted transport bytes (whatever the error carried).
    pub l4: &'a [u8],
}

/// `ipv4_get_l4proto` on a quoted IPv4 header: a non-first fragment or a header running past
/// the message cannot be read.
pub(crate) fn inner_v4(quoted: &[u8]) -> Option<Inner<'_>> {
    if quoted.len() < 20 {
        return None;
    }
    let frag_offset = u16::from_be_bytes([quoted[6], quoted[7]]) & 0x1fff;
    if frag_offset != 0 {
        return None;
    }
    let ihl = usize::from(quoted[0] & 0x0f) * 4;
    if ihl < 20 || ihl > quoted.len() {
        return None;
    }
    let mut src = [0; 16];
    let mut dst = [0; 16];
    src[..4].copy_from_slice(&quoted[12..16]);
    dst[..4].copy_from_slice(&quoted[16..20]);
    Some(Inner {
        src,
        dst,
        proto: quoted[9],
        l4: &quoted[ihl..],
    })
}

/// `ipv6_get_l4proto` on a quoted IPv6 header: extension headers are skipped; a non-first
/// fragment, "no next header" or a cut-short extension header cannot be read.
pub(crate) fn inner_v6(quoted: &[u8]) -> Option<Inner<'_>> {
    if quoted.len() < 40 {
        return None;
    }
    let upper = ExtHeaders::new(quoted[6], &quoted[40..], 40).upper_layer().ok()?;
    if upper.is_non_first_fragment() || upper.protocol == ip_protocol::IPV6_NO_NEXT {
        return None;
    }
    let mut src = [0; 16];
    let mut dst = [0; 16];
    src.copy_from_slice(&quoted[8..24]);
    dst.copy_from_slice(&quoted[24..40]);
    Some(Inner {
        src,
        dst,
        proto: upper.protocol,
        l4: quoted.get(upper.offset..).unwrap_or(&[]),
    })
}

/// `nf_conntrack_icmpv6_redirect`: the packet a redirect quotes in its redirected-header
/// option, or `Err(())` when the kernel would call the redirect INVALID. `msg` is the whole
/// ICMPv6 message, `hop_limit` and `src_link_local` describe the outer IPv6 header.
pub(crate) fn redirect_quote(msg: &[u8], hop_limit: u8, src_link_local: bool) -> Result<&[u8], ()> {
    // icmp6hdr (8) + target (16) + destination (16).
    const RD_MSG: usize = 40;
    if msg.len() < RD_MSG || msg[1] != 0 || hop_limit != 255 || !src_link_local {
        return Err(());
    }
    let opt = &msg[RD_MSG..];
    if opt.len() < 2 || opt[1] == 0 {
        return Err(());
    }
    // ND_OPT_REDIRECT_HDR; anything else leaves the message to the normal lookup, where a
    // redirect has no inverse and is INVALID too.
    if opt[0] != 4 {
        return Err(());
    }
    opt.get(8..).ok_or(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invmap_pairs() {
        // invmap[] of nf_conntrack_proto_icmp.c and nf_conntrack_proto_icmpv6.c.
        assert_eq!(inverse(false, 8), Some(0));
        assert_eq!(inverse(false, 0), Some(8));
        assert_eq!(inverse(false, 13), Some(14));
        assert_eq!(inverse(false, 18), Some(17));
        assert_eq!(inverse(false, 3), None);
        assert_eq!(inverse(true, 128), Some(129));
        assert_eq!(inverse(true, 140), Some(139));
        assert_eq!(inverse(true, 1), None);
        assert!(untracked_v6(135) && untracked_v6(143) && !untracked_v6(137) && !untracked_v6(128));
        assert!(is_error_v4(11) && !is_error_v4(8));
    }

    #[test]
    fn quoted_ipv4_fragment_is_unreadable() {
        let mut q = [0u8; 28];
        q[0] = 0x45;
        q[9] = 17;
        assert!(inner_v4(&q).is_some());
        q[7] = 1;
        assert!(inner_v4(&q).is_none());
        q[7] = 0;
        q[0] = 0x4f;
        assert!(inner_v4(&q).is_none());
    }
}
