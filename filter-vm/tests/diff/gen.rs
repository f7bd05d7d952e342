//! The deterministic packet generator of the differential test.
//!
//! Frames are Ethernet + IPv4/IPv6 + TCP/UDP/ICMP/ICMPv6/other, with valid IP header checksums,
//! valid transport checksums and consistent lengths, addressed to the receiving veth's MAC, so
//! that the kernel hands every one of them to its netfilter hooks. Every frame is its own flow
//! (unique 5-tuple, ICMP id, or address pair for other protocols), which makes the kernel's
//! conntrack classification a pure function of the frame: [`Packet::ct`] holds that model.
//!
//! Addresses and ports are drawn mostly from the values the corpus mentions (see
//! [`Interesting::from_corpus`]), including prefix edges and the addresses just outside them.

use levee_packet::checksum;
use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};

/// MAC address of the receiving veth end (set when the link is created).
pub const RECV_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
/// MAC address of the sending veth end.
pub const SEND_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
/// The receiver's IPv4 address (198.18.0.2/24).
pub const RECV_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The receiver's IPv6 address (2001:2::2/64).
pub const RECV_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 2);
/// Ethertype of the frames that are neither IPv4 nor IPv6 (IEEE local experimental).
pub const ETH_OTHER: u16 = 0x88b5;
/// Ethertype of the sentinel frame that ends each injection (never part of the test set).
pub const ETH_SENTINEL: u16 = 0x88b6;

/// What the kernel's conntrack makes of a frame at prerouting, after its hook at priority -200.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ct {
    /// Would start a connection: TCP SYN (flags & FIN|SYN|RST|ACK|URG is SYN or SYN|URG), UDP,
    /// ICMP echo/timestamp/info/address-mask request, ICMPv6 echo request and node-info
    /// query, and every protocol conntrack tracks generically (here IP protocols 253/254).
    New,
    /// No connection can be found or started: TCP without SYN (nf_conntrack_tcp_loose=0) or with
    /// an invalid flag combination, ICMP/ICMPv6 replies and errors without a flow, unknown
    /// ICMP types, IPv6 "no next header".
    Invalid,
    /// Conntrack leaves ICMPv6 MLD, neighbour discovery and multicast router discovery (types
    /// 130-136, 143, 151, 152) untracked.
    Untracked,
}

/// The network-layer family of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4 (ethertype 0x0800).
    V4,
    /// IPv6 (ethertype 0x86dd).
    V6,
    /// Anything else (ethertype [`ETH_OTHER`]); never reaches the IP hooks.
    Other,
}

impl Family {
    /// Index into per-family arrays: v4, v6, other.
    pub fn index(self) -> usize {
        match self {
            Family::V4 => 0,
            Family::V6 => 1,
            Family::Other => 2,
        }
    }
}

/// One generated frame and what the test knows about it.
#[derive(Clone, Debug)]
pub struct Packet {
    /// The whole Ethernet frame as it goes on the wire (possibly with trailing padding).
    pub frame: Vec<u8>,
    /// The network-layer family.
    pub family: Family,
    /// The conntrack model (meaningless for [`Family::Other`]).
    pub ct: Ct,
    /// Length of the IP packet (IPv4 total length, IPv6 40 + payload length); 0 for others.
    pub ip_len: u32,
    /// The transport protocol after IPv6 extension headers (0 for others).
    pub l4proto: u8,
}

impl Packet {
    /// The length the kernel's counters and `meta length` see at `hook`: after eth_type_trans
    /// at ingress (the frame less its 14-byte Ethernet header, padding included), the IP
    /// packet at prerouting (ip_rcv/ipv6_rcv trim the padding before the hook).
    /// Frames of other ethertypes never reach an IP hook; they are counted (by the ingress
    /// observer) at their ingress length.
    pub fn len_at(&self, hook: &str) -> u32 {
        if hook == "ingress" || self.family == Family::Other {
            (self.frame.len() - 14) as u32
        } else {
            self.ip_len
        }
    }
}

/// xorshift64* (Vigna): tiny, fast, and good enough to spread test packets.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; zero is mapped to a fixed non-zero state).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 { 0x9E37_79B9_7F4A_7C15 } else { seed })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A value in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One element of a non-empty slice.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// An index drawn by weight.
    pub fn weighted(&mut self, weights: &[u64]) -> usize {
        let total: u64 = weights.iter().sum();
        let mut x = self.below(total);
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

const V4_NET: u32 = 0xC612_0000; // 198.18.0.0/15
const V4_MASK: u32 = 0xFFFE_0000;
const V6_NET: u128 = 0x2001_0002_0000 << 80; // 2001:2::/48
const V6_HOST_BITS: u32 = 80;

/// Addresses the receiver delivers locally: 198.18.0.2 and its /24's network and broadcast.
const V4_LOCAL: [u32; 3] = [0xC612_0002, 0xC612_0000, 0xC612_00FF];
/// 2001:2::2 and its /64's subnet-router anycast address.
const V6_LOCAL: [u128; 2] = [V6_NET | 2, V6_NET];

fn v4_allowed(a: u32) -> bool {
    a & V4_MASK == V4_NET
}

fn v6_allowed(a: u128) -> bool {
    a >> V6_HOST_BITS == V6_NET >> V6_HOST_BITS
}

/// Values the corpus mentions, to aim packets at rules' edges.
#[derive(Debug, Default)]
pub struct Interesting {
    /// IPv4 prefixes (address, prefix length) inside 198.18.0.0/15, one group per corpus file
    /// (a 1000-prefix blocklist weighs as much as a file with three addresses).
    pub v4: Vec<Vec<(u32, u8)>>,
    /// IPv6 prefixes inside 2001:2::/48, one group per corpus file.
    pub v6: Vec<Vec<(u128, u8)>>,
    /// Numbers (and range ends) from lines that mention ports, once per file that mentions
    /// them: ports many rulesets use come up more often.
    pub ports: Vec<u16>,
}

impl Interesting {
    /// Collects every address/prefix inside the test ranges and every number on a line that
    /// mentions a port, from all corpus files.
    pub fn from_corpus(texts: &[String]) -> Interesting {
        let mut int = Interesting::default();
        for text in texts {
            let mut v4 = Vec::new();
            let mut v6 = Vec::new();
            let mut ports = Vec::new();
            for line in text.lines() {
                let line = line.split('#').next().unwrap_or("");
                let is_ports = line.contains("port");
                let tokens =
                    line.split(|c: char| !(c.is_ascii_hexdigit() || c == '.' || c == ':' || c == '/'));
                for tok in tokens.filter(|t| !t.is_empty()) {
                    let (addr, len) = match tok.split_once('/') {
                        Some((a, l)) => (a, l.parse::<u8>().ok()),
                        None => (tok, None),
                    };
                    if let Ok(a) = addr.parse::<Ipv4Addr>() {
                        let a = u32::from(a);
                        if v4_allowed(a) {
                            v4.push((a, len.unwrap_or(32).min(32)));
                        }
                    } else if addr.contains(':') {
                        if let Ok(a) = addr.parse::<Ipv6Addr>() {
                            let a = u128::from(a);
                            if v6_allowed(a) {
                                v6.push((a, len.unwrap_or(128).min(128)));
                            }
                        }
                    } else if is_ports && tok.bytes().all(|b| b.is_ascii_digit()) {
                        if let Ok(p) = tok.parse::<u16>() {
                            ports.push(p);
                        }
                    }
                }
            }
            ports.sort_unstable();
            ports.dedup();
            v4.sort_unstable();
            v4.dedup();
            v6.sort_unstable();
            v6.dedup();
            if !v4.is_empty() {
                int.v4.push(v4);
            }
            if !v6.is_empty() {
                int.v6.push(v6);
            }
            int.ports.extend(ports);
        }
        int
    }
}

/// Ports most filters talk about.
const COMMON_PORTS: [u16; 14] = [
    22, 25, 53, 80, 123, 443, 1024, 1194, 3389, 5060, 8080, 8443, 0, 65535,
];

/// Picks a host of a prefix, aiming at its edges and the addresses just outside it.
fn host_in_prefix(rng: &mut Rng, base: u128, len: u32, width: u32) -> u128 {
    let host_bits = width - len;
    let mask = if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    let net = base & !mask;
    match rng.weighted(&[25, 20, 10, 10, 35]) {
        0 => net,
        1 => net | mask,
        2 => net.wrapping_sub(1),
        3 => (net | mask).wrapping_add(1),
        _ => net | (u128::from(rng.next_u64()) | (u128::from(rng.next_u64()) << 64)) & mask,
    }
}

struct Gen<'a> {
    rng: Rng,
    int: &'a Interesting,
    flows: HashSet<(u8, u8, u128, u128, u16, u16)>,
}

impl Gen<'_> {
    fn v4_addr(&mut self, dst: bool) -> u32 {
        loop {
            let a = match self.rng.weighted(&[55, 35, if dst { 10 } else { 0 }]) {
                0 if !self.int.v4.is_empty() => {
                    let group = &self.int.v4[self.rng.below(self.int.v4.len() as u64) as usize];
                    let (a, l) = self.rng.pick(group);
                    host_in_prefix(&mut self.rng, u128::from(a), u32::from(l), 32) as u32
                }
                2 => u32::from(RECV_V4),
                _ => V4_NET | (self.rng.next_u64() as u32 & !V4_MASK),
            };
            // Sources are never an address the receiver delivers locally (its own, or its
            // subnet's network and broadcast address): a flow to such an address is confirmed,
            // and a later packet from it could then match the flow's reply tuple.
            if v4_allowed(a) && (dst || !V4_LOCAL.contains(&a)) {
                return a;
            }
        }
    }

    fn v6_addr(&mut self, dst: bool) -> u128 {
        loop {
            let a = match self.rng.weighted(&[55, 25, 10, if dst { 10 } else { 0 }]) {
                0 if !self.int.v6.is_empty() => {
                    let group = &self.int.v6[self.rng.below(self.int.v6.len() as u64) as usize];
                    let (a, l) = self.rng.pick(group);
                    host_in_prefix(&mut self.rng, a, u32::from(l), 128)
                }
                2 => V6_NET | u128::from(self.rng.below(300)),
                3 => u128::from(RECV_V6),
                _ => {
                    V6_NET
                        | (u128::from(self.rng.next_u64()) | (u128::from(self.rng.next_u64() as u16) << 64))
                }
            };
            if v6_allowed(a) && (dst || !V6_LOCAL.contains(&a)) {
                return a;
            }
        }
    }

    fn port(&mut self) -> u16 {
        match self.rng.weighted(&[50, 15, 35]) {
            0 if !self.int.ports.is_empty() => {
                let p = self.rng.pick(&self.int.ports);
                match self.rng.below(6) {
                    0 => p.wrapping_sub(1),
                    1 => p.wrapping_add(1),
                    _ => p,
                }
            }
            1 => self.rng.pick(&COMMON_PORTS),
            _ => self.rng.range(1, 65535) as u16,
        }
    }

    fn payload_len(&mut self, max: usize) -> usize {
        let n = match self.rng.weighted(&[45, 30, 17, 8]) {
            0 => 0,
            1 => self.rng.range(1, 64) as usize,
            2 => self.rng.range(65, 512) as usize,
            _ => self.rng.range(513, 1500) as usize,
        };
        n.min(max)
    }

    /// Claims a flow key; false if it was taken.
    fn claim(&mut self, key: (u8, u8, u128, u128, u16, u16)) -> bool {
        self.flows.insert(key)
    }
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Valid TCP options of `len` bytes (a multiple of 4), shaped like real stacks' options.
fn tcp_options(rng: &mut Rng) -> Vec<u8> {
    match rng.weighted(&[40, 20, 25, 10, 5]) {
        0 => vec![],
        1 => vec![2, 4, 0x05, 0xb4],
        2 => {
            // Linux SYN: MSS, SACK permitted, timestamps, NOP, window scale.
            let mut o = vec![2, 4, 0x05, 0xb4, 4, 2, 8, 10];
            o.extend(rng.bytes(8));
            o.extend([1, 3, 3, 7]);
            o
        }
        3 => {
            let mut o = vec![1, 1, 8, 10];
            o.extend(rng.bytes(8));
            o
        }
        _ => {
            let words = rng.range(1, 10) as usize;
            let mut o = vec![1u8; words * 4];
            o[words * 4 - 1] = 0;
            o
        }
    }
}

/// A transport segment (TCP/UDP/ICMP/other) and the facts the model needs.
struct L4 {
    proto: u8,
    bytes: Vec<u8>,
    ct: Ct,
    /// Offset and kind of the checksum field: (offset, uses pseudo-header).
    csum: Option<(usize, bool)>,
}

/// TCP flag bits.
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;
const URG: u8 = 0x20;
const ECE: u8 = 0x40;
const CWR: u8 = 0x80;

/// nf_conntrack_proto_tcp with tcp_loose=0: only a valid SYN starts a connection.
pub fn tcp_ct(flags: u8) -> Ct {
    let f = flags & !(ECE | CWR | PSH);
    if f == SYN || f == SYN | URG {
        Ct::New
    } else {
        Ct::Invalid
    }
}

/// nf_conntrack_proto_icmp: requests start connections, nothing else is new.
pub fn icmp_ct(msg_type: u8) -> Ct {
    if matches!(msg_type, 8 | 13 | 15 | 17) {
        Ct::New
    } else {
        Ct::Invalid
    }
}

/// nf_conntrack_proto_icmpv6: echo request and node-info query are new; MLD, neighbour
/// discovery and multicast router advertisement/solicitation (RFC 4286) untracked.
pub fn icmpv6_ct(msg_type: u8) -> Ct {
    match msg_type {
        128 | 139 => Ct::New,
        130..=136 | 143 | 151 | 152 => Ct::Untracked,
        _ => Ct::Invalid,
    }
}

/// The inner packet an ICMP error quotes: an IP header plus 8 bytes of UDP from a non-local
/// address, so conntrack never finds a flow it relates to.
fn quoted_v4(rng: &mut Rng) -> Vec<u8> {
    let mut ip = vec![0u8; 28];
    ip[0] = 0x45;
    put16(&mut ip, 2, 28 + rng.range(0, 100) as u16);
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[198, 19, 254, 1]);
    ip[16..20].copy_from_slice(&[198, 19, 254, rng.range(2, 250) as u8]);
    let c = checksum::checksum(&ip[..20]);
    put16(&mut ip, 10, c);
    put16(&mut ip, 20, rng.range(1024, 65535) as u16);
    put16(&mut ip, 22, rng.range(1, 65535) as u16);
    put16(&mut ip, 24, 8);
    ip
}

fn quoted_v6(rng: &mut Rng) -> Vec<u8> {
    let mut ip = vec![0u8; 48];
    ip[0] = 0x60;
    put16(&mut ip, 4, 8);
    ip[6] = 17;
    ip[7] = 64;
    ip[8..24].copy_from_slice(&Ipv6Addr::new(0x2001, 2, 0, 0xfffe, 0, 0, 0, 1).octets());
    ip[24..40]
        .copy_from_slice(&Ipv6Addr::new(0x2001, 2, 0, 0xfffe, 0, 0, 0, rng.range(2, 999) as u16).octets());
    put16(&mut ip, 40, rng.range(1024, 65535) as u16);
    put16(&mut ip, 42, rng.range(1, 65535) as u16);
    put16(&mut ip, 44, 8);
    ip
}

impl Gen<'_> {
    fn tcp(&mut self, room: usize) -> (L4, u16, u16) {
        let flags = match self.rng.weighted(&[35, 5, 3, 10, 15, 6, 5, 4, 3, 14]) {
            0 => SYN,
            1 => SYN | ECE | CWR,
            2 => SYN | URG,
            3 => SYN | ACK,
            4 => ACK,
            5 => ACK | PSH,
            6 => FIN | ACK,
            7 => RST,
            8 => RST | ACK,
            _ => self.rng.next_u64() as u8,
        };
        let opts = tcp_options(&mut self.rng);
        let hlen = 20 + opts.len();
        let plen = self.payload_len(room - hlen);
        let mut b = vec![0u8; hlen + plen];
        let (sp, dp) = (self.port(), self.port());
        put16(&mut b, 0, sp);
        put16(&mut b, 2, dp);
        let seq = self.rng.next_u64();
        b[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
        if flags & ACK != 0 || self.rng.chance(10) {
            b[8..12].copy_from_slice(&((seq >> 32) as u32).to_be_bytes());
        }
        b[12] = ((hlen / 4) as u8) << 4;
        b[13] = flags;
        let win = match self.rng.below(4) {
            0 => 0,
            1 => 64240,
            2 => 65535,
            _ => self.rng.next_u64() as u16,
        };
        put16(&mut b, 14, win);
        if flags & URG != 0 || self.rng.chance(3) {
            put16(&mut b, 18, self.rng.range(0, 2000) as u16);
        }
        b[20..hlen].copy_from_slice(&opts);
        let payload = self.rng.bytes(plen);
        b[hlen..].copy_from_slice(&payload);
        (
            L4 {
                proto: 6,
                bytes: b,
                ct: tcp_ct(flags),
                csum: Some((16, true)),
            },
            sp,
            dp,
        )
    }

    fn udp(&mut self, room: usize, v4: bool) -> (L4, u16, u16) {
        let plen = self.payload_len(room - 8);
        let mut b = vec![0u8; 8 + plen];
        let (sp, dp) = (self.port(), self.port());
        put16(&mut b, 0, sp);
        put16(&mut b, 2, dp);
        put16(&mut b, 4, (8 + plen) as u16);
        let payload = self.rng.bytes(plen);
        b[8..].copy_from_slice(&payload);
        // IPv4 allows "no checksum" (zero); IPv6 does not, and conntrack calls that invalid.
        let csum = if v4 && self.rng.chance(10) {
            None
        } else {
            Some((6, true))
        };
        (
            L4 {
                proto: 17,
                bytes: b,
                ct: Ct::New,
                csum,
            },
            sp,
            dp,
        )
    }

    fn icmp(&mut self, room: usize) -> (L4, u16) {
        let msg_type = match self.rng.weighted(&[45, 10, 15, 8, 7, 5, 10]) {
            0 => 8,
            1 => 0,
            2 => 3,
            3 => 11,
            4 => 13,
            5 => self.rng.pick(&[14, 15, 16, 17, 18, 5, 12, 4]),
            _ => self.rng.next_u64() as u8,
        };
        let code = match msg_type {
            3 => self.rng.range(0, 15) as u8,
            11 => self.rng.range(0, 1) as u8,
            _ if self.rng.chance(5) => self.rng.range(1, 255) as u8,
            _ => 0,
        };
        let id = self.rng.next_u64() as u16;
        let mut b = vec![msg_type, code, 0, 0];
        b.extend((id.to_be_bytes()).iter());
        b.extend((self.rng.range(0, 1000) as u16).to_be_bytes());
        if matches!(msg_type, 3 | 4 | 5 | 11 | 12) {
            b.extend(quoted_v4(&mut self.rng));
        } else if msg_type == 13 || msg_type == 14 {
            b.extend(self.rng.bytes(12));
        } else {
            let n = self.payload_len(room - 8);
            b.extend(self.rng.bytes(n));
        }
        (
            L4 {
                proto: 1,
                bytes: b,
                ct: icmp_ct(msg_type),
                csum: Some((2, false)),
            },
            id,
        )
    }

    fn icmpv6(&mut self, room: usize) -> (L4, u16) {
        let msg_type = match self.rng.weighted(&[40, 10, 15, 5, 10, 10, 10]) {
            0 => 128,
            1 => 129,
            2 => self.rng.range(1, 4) as u8,
            3 => 139,
            4 => self.rng.pick(&[130, 131, 132, 133, 134, 135, 136, 143, 151, 152]),
            5 => self.rng.range(128, 255) as u8,
            _ => self.rng.next_u64() as u8,
        };
        let code = match msg_type {
            1 => self.rng.range(0, 7) as u8,
            3 => self.rng.range(0, 1) as u8,
            4 => self.rng.range(0, 3) as u8,
            _ if self.rng.chance(5) => self.rng.range(1, 255) as u8,
            _ => 0,
        };
        let id = self.rng.next_u64() as u16;
        let mut b = vec![msg_type, code, 0, 0];
        b.extend(id.to_be_bytes());
        b.extend((self.rng.range(0, 1000) as u16).to_be_bytes());
        if msg_type < 128 {
            b.extend(quoted_v6(&mut self.rng));
        } else if (133..=136).contains(&msg_type) {
            b.extend(self.rng.bytes(16));
        } else {
            let n = self.payload_len(room - 8);
            b.extend(self.rng.bytes(n));
        }
        (
            L4 {
                proto: 58,
                bytes: b,
                ct: icmpv6_ct(msg_type),
                csum: Some((2, true)),
            },
            id,
        )
    }

    fn other(&mut self, room: usize, v6: bool) -> L4 {
        let proto = if v6 && self.rng.chance(20) {
            59
        } else {
            self.rng.pick(&[253, 254])
        };
        let n = self.payload_len(room).max(4);
        let ct = if proto == 59 { Ct::Invalid } else { Ct::New };
        L4 {
            proto,
            bytes: self.rng.bytes(n),
            ct,
            csum: None,
        }
    }

    fn ethernet(&mut self, ethertype: u16) -> Vec<u8> {
        let mut f = Vec::with_capacity(1514);
        f.extend(RECV_MAC);
        let mut src = SEND_MAC;
        src[5] = self.rng.pick(&[0x01, 0x01, 0x01, 0x11, 0x12]);
        f.extend(src);
        f.extend(ethertype.to_be_bytes());
        f
    }

    /// Short frames get the padding a real NIC adds (to 60 bytes) half of the time, and a few
    /// frames carry random trailing bytes: the kernel counts them at ingress but trims them
    /// before prerouting.
    fn pad(&mut self, f: &mut Vec<u8>) {
        if f.len() < 60 && self.rng.chance(50) {
            f.resize(60, 0);
        }
        if self.rng.chance(4) && f.len() < 1500 {
            let n = self.rng.range(1, 14) as usize;
            let junk = self.rng.bytes(n);
            f.extend(junk);
        }
    }

    fn packet_v4(&mut self) -> Packet {
        let ihl_words = if self.rng.chance(6) { 6 } else { 5 };
        let room = 1500 - ihl_words * 4;
        loop {
            let src = self.v4_addr(false);
            let dst = self.v4_addr(true);
            let (l4, key) = match self.rng.weighted(&[50, 22, 18, 10]) {
                0 => {
                    let (l4, sp, dp) = self.tcp(room);
                    (l4, (sp, dp))
                }
                1 => {
                    let (l4, sp, dp) = self.udp(room, true);
                    (l4, (sp, dp))
                }
                2 => {
                    let (l4, id) = self.icmp(room);
                    (l4, (id, 0))
                }
                _ => (self.other(room, false), (0, 0)),
            };
            if !self.claim((4, l4.proto, u128::from(src), u128::from(dst), key.0, key.1)) {
                continue;
            }
            return self.finish_v4(src, dst, ihl_words, l4);
        }
    }

    fn finish_v4(&mut self, src: u32, dst: u32, ihl_words: usize, l4: L4) -> Packet {
        let hlen = ihl_words * 4;
        let total = hlen + l4.bytes.len();
        let mut ip = vec![0u8; hlen];
        ip[0] = 0x40 | ihl_words as u8;
        ip[1] = if self.rng.chance(30) {
            self.rng.next_u64() as u8
        } else {
            0
        };
        put16(&mut ip, 2, total as u16);
        put16(&mut ip, 4, self.rng.next_u64() as u16);
        if self.rng.chance(50) {
            ip[6] = 0x40; // DF; never MF or an offset: defragmentation would hold the packet.
        }
        ip[8] = match self.rng.below(5) {
            0 => 64,
            1 => 128,
            2 => 255,
            _ => self.rng.range(2, 255) as u8,
        };
        ip[9] = l4.proto;
        ip[12..16].copy_from_slice(&src.to_be_bytes());
        ip[16..20].copy_from_slice(&dst.to_be_bytes());
        if hlen > 20 {
            ip[20..24].copy_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
        }
        let c = checksum::checksum(&ip);
        put16(&mut ip, 10, c);
        let mut seg = l4.bytes;
        if let Some((at, pseudo)) = l4.csum {
            let mut sums = vec![checksum::sum(&seg)];
            if pseudo {
                sums.push(checksum::pseudo_header_v4(
                    Ipv4Addr::from(src),
                    Ipv4Addr::from(dst),
                    l4.proto,
                    seg.len() as u16,
                ));
            }
            let mut c = !checksum::combine(&sums);
            if l4.proto == 17 && c == 0 {
                c = 0xffff;
            }
            put16(&mut seg, at, c);
        }
        let mut f = self.ethernet(0x0800);
        f.extend(ip);
        f.extend(seg);
        self.pad(&mut f);
        Packet {
            frame: f,
            family: Family::V4,
            ct: l4.ct,
            ip_len: total as u32,
            l4proto: l4.proto,
        }
    }

    fn packet_v6(&mut self) -> Packet {
        // Extension headers ahead of the transport: none, hop-by-hop, destination options, both.
        let ext: &[u8] = match self.rng.weighted(&[88, 5, 4, 3]) {
            0 => &[],
            1 => &[0],
            2 => &[60],
            _ => &[0, 60],
        };
        let room = 1500 - 40 - ext.len() * 8;
        loop {
            let src = self.v6_addr(false);
            let dst = self.v6_addr(true);
            let (l4, key) = match self.rng.weighted(&[50, 22, 18, 10]) {
                0 => {
                    let (l4, sp, dp) = self.tcp(room);
                    (l4, (sp, dp))
                }
                1 => {
                    let (l4, sp, dp) = self.udp(room, false);
                    (l4, (sp, dp))
                }
                2 => {
                    let (l4, id) = self.icmpv6(room);
                    (l4, (id, 0))
                }
                _ => (self.other(room, true), (0, 0)),
            };
            if !self.claim((6, l4.proto, src, dst, key.0, key.1)) {
                continue;
            }
            return self.finish_v6(src, dst, ext, l4);
        }
    }

    fn finish_v6(&mut self, src: u128, dst: u128, ext: &[u8], l4: L4) -> Packet {
        let (src_a, dst_a) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
        let mut seg = l4.bytes;
        if let Some((at, _)) = l4.csum {
            let ph = checksum::pseudo_header_v6(src_a, dst_a, l4.proto, seg.len() as u32);
            let mut c = !checksum::combine(&[ph, checksum::sum(&seg)]);
            if l4.proto == 17 && c == 0 {
                c = 0xffff;
            }
            put16(&mut seg, at, c);
        }
        let mut exts = Vec::new();
        for (i, _) in ext.iter().enumerate() {
            let next = ext.get(i + 1).copied().unwrap_or(l4.proto);
            exts.extend([next, 0, 1, 4, 0, 0, 0, 0]); // PadN over the 6 option bytes
        }
        let payload_len = exts.len() + seg.len();
        let mut ip = vec![0u8; 40];
        let tc = if self.rng.chance(30) {
            self.rng.next_u64() as u8
        } else {
            0
        };
        let flow = match self.rng.below(3) {
            0 => 0,
            1 => self.rng.range(1, 16) as u32,
            _ => self.rng.next_u64() as u32 & 0xf_ffff,
        };
        let word = (6u32 << 28) | (u32::from(tc) << 20) | flow;
        ip[0..4].copy_from_slice(&word.to_be_bytes());
        put16(&mut ip, 4, payload_len as u16);
        ip[6] = ext.first().copied().unwrap_or(l4.proto);
        ip[7] = if l4.ct == Ct::Untracked {
            255
        } else {
            match self.rng.below(5) {
                0 => 64,
                1 => 255,
                _ => self.rng.range(2, 255) as u8,
            }
        };
        ip[8..24].copy_from_slice(&src_a.octets());
        ip[24..40].copy_from_slice(&dst_a.octets());
        let mut f = self.ethernet(0x86dd);
        f.extend(ip);
        f.extend(exts);
        f.extend(seg);
        self.pad(&mut f);
        Packet {
            frame: f,
            family: Family::V6,
            ct: l4.ct,
            ip_len: 40 + payload_len as u32,
            l4proto: l4.proto,
        }
    }

    fn packet_other(&mut self) -> Packet {
        let mut f = self.ethernet(ETH_OTHER);
        let n = self.rng.range(46, 200) as usize;
        let body = self.rng.bytes(n);
        f.extend(body);
        Packet {
            frame: f,
            family: Family::Other,
            ct: Ct::Invalid,
            ip_len: 0,
            l4proto: 0,
        }
    }
}

/// `n` frames from `seed`: 57% IPv4, 41% IPv6, 2% other ethertypes.
pub fn generate(seed: u64, n: usize, int: &Interesting) -> Vec<Packet> {
    let mut g = Gen {
        rng: Rng::new(seed),
        int,
        flows: HashSet::with_capacity(n),
    };
    (0..n)
        .map(|_| match g.rng.weighted(&[57, 41, 2]) {
            0 => g.packet_v4(),
            1 => g.packet_v6(),
            _ => g.packet_other(),
        })
        .collect()
}

/// The frame that ends every injection; the observer counts it at ingress.
pub fn sentinel() -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend(RECV_MAC);
    f.extend(SEND_MAC);
    f.extend(ETH_SENTINEL.to_be_bytes());
    f.resize(60, 0);
    f
}
