//! Values by type: the symbolic names nft accepts and prints, number and address syntax, and
//! the width checks. The first name listed for a number is the one printed; later ones are
//! accepted aliases.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use super::ast::{DataType, Value};

const INET_PROTO: &[(&str, u64)] = &[
    ("icmp", 1),
    ("igmp", 2),
    ("ipencap", 4),
    ("tcp", 6),
    ("egp", 8),
    ("udp", 17),
    ("dccp", 33),
    ("ipv6", 41),
    ("gre", 47),
    ("esp", 50),
    ("ah", 51),
    ("ipv6-icmp", 58),
    ("sctp", 132),
    ("udplite", 136),
    ("icmpv6", 58),
];

/// A small service table (nft uses /etc/services; levee must not depend on the host's files).
const INET_SERVICE: &[(&str, u64)] = &[
    ("ftp-data", 20),
    ("ftp", 21),
    ("ssh", 22),
    ("telnet", 23),
    ("smtp", 25),
    ("domain", 53),
    ("bootps", 67),
    ("bootpc", 68),
    ("tftp", 69),
    ("http", 80),
    ("kerberos", 88),
    ("pop3", 110),
    ("ntp", 123),
    ("imap", 143),
    ("imap2", 143),
    ("snmp", 161),
    ("bgp", 179),
    ("ldap", 389),
    ("https", 443),
    ("submission", 587),
    ("imaps", 993),
    ("pop3s", 995),
    ("openvpn", 1194),
    ("mysql", 3306),
    ("postgresql", 5432),
    ("http-alt", 8080),
    ("dns", 53),
    ("www", 80),
];

const TCP_FLAG: &[(&str, u64)] = &[
    ("fin", 0x01),
    ("syn", 0x02),
    ("rst", 0x04),
    ("psh", 0x08),
    ("ack", 0x10),
    ("urg", 0x20),
    ("ecn", 0x40),
    ("cwr", 0x80),
];

/// Bit values as the kernel's `NF_CT_STATE_*_BIT`.
const CT_STATE: &[(&str, u64)] = &[
    ("invalid", 1),
    ("established", 2),
    ("related", 4),
    ("new", 8),
    ("untracked", 64),
];

/// Bit values as the kernel's `IPS_*` status bits.
const CT_STATUS: &[(&str, u64)] = &[
    ("expected", 1),
    ("seen-reply", 2),
    ("assured", 4),
    ("confirmed", 8),
    ("snat", 16),
    ("dnat", 32),
    ("dying", 512),
];

const CT_DIR: &[(&str, u64)] = &[("original", 0), ("reply", 1)];

const ICMP_TYPE: &[(&str, u64)] = &[
    ("echo-reply", 0),
    ("destination-unreachable", 3),
    ("source-quench", 4),
    ("redirect", 5),
    ("echo-request", 8),
    ("router-advertisement", 9),
    ("router-solicitation", 10),
    ("time-exceeded", 11),
    ("parameter-problem", 12),
    ("timestamp-request", 13),
    ("timestamp-reply", 14),
    ("info-request", 15),
    ("info-reply", 16),
    ("address-mask-request", 17),
    ("address-mask-reply", 18),
];

const ICMP_CODE: &[(&str, u64)] = &[
    ("net-unreachable", 0),
    ("host-unreachable", 1),
    ("prot-unreachable", 2),
    ("port-unreachable", 3),
    ("frag-needed", 4),
    ("net-prohibited", 9),
    ("host-prohibited", 10),
    ("admin-prohibited", 13),
];

const ICMPV6_TYPE: &[(&str, u64)] = &[
    ("destination-unreachable", 1),
    ("packet-too-big", 2),
    ("time-exceeded", 3),
    ("parameter-problem", 4),
    ("echo-request", 128),
    ("echo-reply", 129),
    ("mld-listener-query", 130),
    ("mld-listener-report", 131),
    ("mld-listener-done", 132),
    ("nd-router-solicit", 133),
    ("nd-router-advert", 134),
    ("nd-neighbor-solicit", 135),
    ("nd-neighbor-advert", 136),
    ("nd-redirect", 137),
    ("router-renumbering", 138),
    ("ind-neighbor-solicit", 141),
    ("ind-neighbor-advert", 142),
    ("mld2-listener-report", 143),
    ("mld-listener-reduction", 132),
];

const ICMPV6_CODE: &[(&str, u64)] = &[
    ("no-route", 0),
    ("admin-prohibited", 1),
    ("addr-unreachable", 3),
    ("port-unreachable", 4),
    ("policy-fail", 5),
    ("reject-route", 6),
];

/// `reject with icmpx` codes (`NFT_REJECT_ICMPX_*`).
pub(crate) const ICMPX_CODE: &[(&str, u64)] = &[
    ("no-route", 0),
    ("port-unreachable", 1),
    ("host-unreachable", 2),
    ("admin-prohibited", 3),
];

const ETHER_TYPE: &[(&str, u64)] = &[
    ("ip", 0x0800),
    ("arp", 0x0806),
    ("8021q", 0x8100),
    ("ip6", 0x86dd),
    ("8021ad", 0x88a8),
    ("vlan", 0x8100),
];

const PKTTYPE: &[(&str, u64)] = &[
    ("host", 0),
    ("broadcast", 1),
    ("multicast", 2),
    ("other", 3),
    ("unicast", 0),
];

const NFPROTO: &[(&str, u64)] = &[("ipv4", 2), ("ipv6", 10)];

const DSCP: &[(&str, u64)] = &[
    ("cs0", 0x00),
    ("lephb", 0x01),
    ("cs1", 0x08),
    ("af11", 0x0a),
    ("af12", 0x0c),
    ("af13", 0x0e),
    ("cs2", 0x10),
    ("af21", 0x12),
    ("af22", 0x14),
    ("af23", 0x16),
    ("cs3", 0x18),
    ("af31", 0x1a),
    ("af32", 0x1c),
    ("af33", 0x1e),
    ("cs4", 0x20),
    ("af41", 0x22),
    ("af42", 0x24),
    ("af43", 0x26),
    ("cs5", 0x28),
    ("va", 0x2c),
    ("ef", 0x2e),
    ("cs6", 0x30),
    ("cs7", 0x38),
];

/// ECN codepoints (RFC 3168), names as nft's `ecn` type.
const ECN: &[(&str, u64)] = &[("not-ect", 0), ("ect1", 1), ("ect0", 2), ("ce", 3)];

/// 9999-12-31 23:59:59 UTC in seconds since the epoch.
const MAX_TIME: u64 = 253_402_300_799;

const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// The symbol table of a type, if it has one.
fn symbols(ty: DataType) -> &'static [(&'static str, u64)] {
    match ty {
        DataType::InetProto => INET_PROTO,
        DataType::InetService => INET_SERVICE,
        DataType::TcpFlag => TCP_FLAG,
        DataType::CtState => CT_STATE,
        DataType::CtStatus => CT_STATUS,
        DataType::CtDir => CT_DIR,
        DataType::IcmpType => ICMP_TYPE,
        DataType::IcmpCode => ICMP_CODE,
        DataType::Icmpv6Type => ICMPV6_TYPE,
        DataType::Icmpv6Code => ICMPV6_CODE,
        DataType::EtherType => ETHER_TYPE,
        DataType::Pkttype => PKTTYPE,
        DataType::Nfproto => NFPROTO,
        DataType::Dscp => DSCP,
        DataType::Ecn => ECN,
        _ => &[],
    }
}

/// Looks a name up in a symbol table.
pub(crate) fn lookup(table: &[(&str, u64)], name: &str) -> Option<u64> {
    table.iter().find(|(n, _)| *n == name).map(|&(_, v)| v)
}

/// The printed name of a number in a symbol table.
pub(crate) fn name_of(table: &'static [(&'static str, u64)], v: u64) -> Option<&'static str> {
    table.iter().find(|&&(_, n)| n == v).map(|&(name, _)| name)
}

/// The `type` name of a data type (`None` for types that can only be declared with `typeof`).
pub(crate) fn type_name(ty: DataType) -> Option<&'static str> {
    Some(match ty {
        DataType::Ipv4Addr => "ipv4_addr",
        DataType::Ipv6Addr => "ipv6_addr",
        DataType::EtherAddr => "ether_addr",
        DataType::InetProto => "inet_proto",
        DataType::InetService => "inet_service",
        DataType::Mark => "mark",
        DataType::Ifname => "ifname",
        DataType::IfaceIndex => "iface_index",
        DataType::CtState => "ct_state",
        DataType::CtStatus => "ct_status",
        DataType::CtDir => "ct_dir",
        DataType::CtLabel => "ct_label",
        DataType::Verdict => "verdict",
        DataType::TcpFlag => "tcp_flag",
        DataType::IcmpType => "icmp_type",
        DataType::IcmpCode => "icmp_code",
        DataType::Icmpv6Type => "icmpv6_type",
        DataType::Icmpv6Code => "icmpv6_code",
        DataType::EtherType => "ether_type",
        DataType::Pkttype => "pkt_type",
        DataType::Nfproto => "nf_proto",
        DataType::Dscp => "dscp",
        DataType::Ecn => "ecn",
        DataType::Day => "day",
        DataType::Hour => "hour",
        DataType::Time => "time",
        DataType::Duration | DataType::Integer { .. } => return None,
    })
}

/// The data type named `name` in a `type` declaration.
pub(crate) fn type_from_name(name: &str) -> Option<DataType> {
    const ALL: &[DataType] = &[
        DataType::Ipv4Addr,
        DataType::Ipv6Addr,
        DataType::EtherAddr,
        DataType::InetProto,
        DataType::InetService,
        DataType::Mark,
        DataType::Ifname,
        DataType::IfaceIndex,
        DataType::CtState,
        DataType::CtStatus,
        DataType::CtDir,
        DataType::CtLabel,
        DataType::Verdict,
        DataType::TcpFlag,
        DataType::IcmpType,
        DataType::IcmpCode,
        DataType::Icmpv6Type,
        DataType::Icmpv6Code,
        DataType::EtherType,
        DataType::Pkttype,
        DataType::Nfproto,
        DataType::Dscp,
        DataType::Ecn,
        DataType::Day,
        DataType::Hour,
        DataType::Time,
    ];
    ALL.iter().copied().find(|&t| type_name(t) == Some(name))
}

/// How a type is described in error messages.
pub(crate) fn type_desc(ty: DataType) -> String {
    match ty {
        DataType::Duration => "time duration".into(),
        DataType::Integer { bits } => format!("{bits}-bit integer"),
        other => type_name(other).unwrap_or("value").into(),
    }
}

/// Parses a decimal or `0x` hexadecimal number.
pub(crate) fn parse_number(text: &str) -> Option<u64> {
    if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        return u64::from_str_radix(hex, 16).ok();
    }
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The largest value of an integer of `bits` bits.
pub(crate) fn max_for_bits(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// Parses `a.b.c.d` strictly (four decimal octets, no leading `+`).
fn parse_ipv4(text: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = text.split('.');
    for o in &mut octets {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *o = p.parse().ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Ipv4Addr::from(octets))
}

fn parse_ether(text: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = text.split(':');
    for b in &mut out {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(out)
}

/// Parses `1d2h3m4s5ms` (each unit at most once, in that order) into a duration.
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    const UNITS: [(&str, u64); 5] = [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ];
    let mut rest = text;
    let mut total: u64 = 0;
    let mut next_unit = 0usize;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: u64 = rest.get(..digits)?.parse().ok()?;
        rest = rest.get(digits..)?;
        let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = rest.get(..letters)?;
        rest = rest.get(letters..)?;
        let idx = UNITS.iter().position(|(u, _)| *u == unit)?;
        if idx < next_unit {
            return None;
        }
        next_unit = idx + 1;
        total = total.checked_add(n.checked_mul(UNITS.get(idx)?.1)?)?;
    }
    Some(Duration::from_millis(total))
}

/// Formats a duration as nft does (`1m30s500ms`, `0s` for zero).
pub(crate) fn format_duration(d: Duration) -> String {
    let mut ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000u64),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ] {
        let n = ms / size;
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
            ms -= n * size;
        }
    }
    out
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian), for `meta time`.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Parses `HH:MM` or `HH:MM:SS` into seconds since midnight.
fn parse_clock(text: &str) -> Option<u64> {
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() < 2 || parts.len() > 3 {
        return None;
    }
    let mut vals = [0u64; 3];
    for (v, p) in vals.iter_mut().zip(&parts) {
        if p.is_empty() || p.len() > 2 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *v = p.parse().ok()?;
    }
    let [h, m, s] = vals;
    (h < 24 && m < 60 && s < 60).then_some(h * 3600 + m * 60 + s)
}

/// Parses `YYYY-MM-DD[ HH:MM[:SS]]` (UTC) into seconds since the epoch.
fn parse_date(text: &str) -> Option<u64> {
    let (date, clock) = match text.split_once(' ') {
        Some((d, c)) => (d, Some(c)),
        None => (text, None),
    };
    let parts: Vec<&str> = date.split('-').collect();
    let [y, m, d] = parts.as_slice() else { return None };
    let ok = |p: &str, len: usize| p.len() == len && p.bytes().all(|b| b.is_ascii_digit());
    if !ok(y, 4) || !ok(m, 2) || !ok(d, 2) {
        return None;
    }
    let (y, m, d): (i64, u32, u32) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    let month_len = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => return None,
    };
    if d == 0 || d > month_len {
        return None;
    }
    let days = days_from_civil(y, m, d);
    let secs = match clock {
        Some(c) => parse_clock(c)?,
        None => 0,
    };
    u64::try_from(days).ok()?.checked_mul(86_400)?.checked_add(secs)
}

fn format_date(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Whether a bare word (rather than a quoted string) can carry a string value of this type.
fn is_plain_name(text: &str) -> bool {
    text.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Parses one scalar value of type `ty` from a word (`quoted == false`) or a string.
/// The error says what was expected.
pub(crate) fn parse_scalar(ty: DataType, text: &str, quoted: bool) -> Result<Value, String> {
    let bad = |what: &str| format!("'{text}' is not a valid {} ({what})", type_desc(ty));
    match ty {
        DataType::Ipv4Addr if !quoted => parse_ipv4(text)
            .map(Value::Ipv4)
            .ok_or_else(|| bad("IPv4 address")),
        DataType::Ipv6Addr if !quoted => text
            .parse::<Ipv6Addr>()
            .map(Value::Ipv6)
            .map_err(|_| bad("IPv6 address")),
        DataType::EtherAddr if !quoted => parse_ether(text)
            .map(Value::Ether)
            .ok_or_else(|| bad("Ethernet address like 00:11:22:33:44:55")),
        DataType::Ifname => {
            if text.is_empty() || text.len() > 15 {
                return Err(format!("interface name '{text}' must be 1 to 15 bytes long"));
            }
            if !quoted && !is_plain_name(text) {
                return Err(bad("interface name"));
            }
            let star = text.find('*');
            if star.is_some_and(|i| i + 1 != text.len()) {
                return Err(format!("interface name '{text}': '*' is only allowed at the end"));
            }
            Ok(Value::Str(text.to_string()))
        }
        DataType::IfaceIndex => {
            if !quoted {
                if let Some(n) = parse_number(text) {
                    return u32::try_from(n)
                        .map(|_| Value::Int(n))
                        .map_err(|_| bad("interface index"));
                }
            }
            if text.is_empty() || text.len() > 15 || text.contains('*') || (!quoted && !is_plain_name(text)) {
                return Err(bad("interface name or index"));
            }
            Ok(Value::Str(text.to_string()))
        }
        DataType::CtLabel if !quoted => {
            if let Some(n) = parse_number(text) {
                return if n < 128 {
                    Ok(Value::Int(n))
                } else {
                    Err(bad("label bit 0..127 or name"))
                };
            }
            if is_plain_name(text) && text.len() <= 64 {
                Ok(Value::Str(text.to_string()))
            } else {
                Err(bad("label bit 0..127 or name"))
            }
        }
        DataType::Day => {
            if !quoted {
                if let Some(n) = parse_number(text) {
                    return if n < 7 {
                        Ok(Value::Int(n))
                    } else {
                        Err(bad("day 0..6 or name"))
                    };
                }
            }
            let lower = text.to_ascii_lowercase();
            DAYS.iter()
                .position(|d| {
                    let d = d.to_ascii_lowercase();
                    d == lower || (lower.len() == 3 && d.starts_with(&lower))
                })
                .map(|i| Value::Int(i as u64))
                .ok_or_else(|| bad("day name like \"Monday\" or 0..6"))
        }
        DataType::Hour => parse_clock(text)
            .map(Value::Int)
            .ok_or_else(|| bad("time of day \"HH:MM[:SS]\"")),
        DataType::Time => {
            let secs = match parse_number(text) {
                Some(n) if !quoted => Some(n),
                _ => parse_date(text),
            };
            // Up to the end of year 9999, so every value lists as a four-digit-year date.
            match secs {
                Some(n) if n <= MAX_TIME => Ok(Value::Int(n)),
                Some(_) => Err(format!("time '{text}' is beyond the year 9999")),
                None => Err(bad("date \"YYYY-MM-DD [HH:MM[:SS]]\" or seconds since 1970")),
            }
        }
        DataType::Duration if !quoted => {
            // A bare number is seconds, as in nft.
            if let Some(n) = parse_number(text) {
                return n
                    .checked_mul(1000)
                    .map(Value::Int)
                    .ok_or_else(|| bad("duration like 30s"));
            }
            parse_duration(text)
                .and_then(|d| u64::try_from(d.as_millis()).ok())
                .map(Value::Int)
                .ok_or_else(|| bad("duration like 1m30s"))
        }
        DataType::Verdict => Err("a verdict is not a value".into()),
        _ if quoted => Err(format!("expected a {}, found string \"{text}\"", type_desc(ty))),
        _ => {
            let table = symbols(ty);
            let bits = ty.bits().unwrap_or(64);
            if let Some(v) = lookup(table, text) {
                return Ok(Value::Int(v));
            }
            match parse_number(text) {
                Some(n) if n <= max_for_bits(bits) => Ok(Value::Int(n)),
                Some(_) => Err(format!(
                    "{text} is out of range for {} (at most {})",
                    type_desc(ty),
                    max_for_bits(bits)
                )),
                None if table.is_empty() => Err(bad("number")),
                None => Err(bad("number or name")),
            }
        }
    }
}

/// How a bitmask constant is spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BitsStyle {
    /// `syn,ack`: the implicit flag test and the mask of `tcp flags syn / syn,ack`.
    List,
    /// `syn | ack`: a constant compared with `==`, `!=`, ….
    Or,
    /// One token: a name for a single flag, hex otherwise (the ends of a range).
    Token,
}

/// Formats a value of type `ty` the way nft lists it.
pub(crate) fn format_scalar(ty: DataType, v: &Value, style: BitsStyle) -> String {
    match v {
        Value::Ipv4(a) => a.to_string(),
        Value::Ipv6(a) => a.to_string(),
        Value::Ether(e) => e.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"),
        Value::Str(s) if ty == DataType::CtLabel && is_plain_name(s) => s.clone(),
        Value::Str(s) => format!("\"{s}\""),
        Value::Int(n) => format_int(ty, *n, style),
    }
}

fn format_int(ty: DataType, n: u64, style: BitsStyle) -> String {
    match ty {
        DataType::Mark => format!("0x{n:08x}"),
        DataType::Day => match usize::try_from(n).ok().and_then(|i| DAYS.get(i)) {
            Some(d) => format!("\"{d}\""),
            None => n.to_string(),
        },
        DataType::Hour => {
            let (h, m, s) = (n / 3600, n / 60 % 60, n % 60);
            if s == 0 {
                format!("\"{h:02}:{m:02}\"")
            } else {
                format!("\"{h:02}:{m:02}:{s:02}\"")
            }
        }
        DataType::Time => format!("\"{}\"", format_date(n)),
        DataType::Duration => format_duration(Duration::from_millis(n)),
        DataType::EtherType => match name_of(ETHER_TYPE, n) {
            Some(name) => name.into(),
            None => format!("0x{n:04x}"),
        },
        DataType::Dscp => match name_of(DSCP, n) {
            Some(name) => name.into(),
            None => format!("0x{n:02x}"),
        },
        t if t.is_bitmask() => format_bits(symbols(t), n, style),
        // nft prints ports as numbers; names are accepted on input only.
        DataType::InetService => n.to_string(),
        t => match name_of(symbols(t), n) {
            Some(name) => name.into(),
            None => n.to_string(),
        },
    }
}

/// Spells a bitmask with flag names when every set bit has one, in hex otherwise.
fn format_bits(table: &'static [(&'static str, u64)], n: u64, style: BitsStyle) -> String {
    let names: Vec<&str> = table
        .iter()
        .filter(|&&(_, bit)| bit != 0 && n & bit == bit)
        .map(|&(name, _)| name)
        .collect();
    let covered = table
        .iter()
        .filter(|&&(_, bit)| n & bit == bit)
        .fold(0u64, |acc, &(_, bit)| acc | bit);
    if n == 0 || covered != n {
        return format!("0x{n:x}");
    }
    match style {
        BitsStyle::List => names.join(","),
        BitsStyle::Or => names.join(" | "),
        BitsStyle::Token if names.len() == 1 => names.join(""),
        BitsStyle::Token => format!("0x{n:x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip() {
        for text in ["1s", "1m30s500ms", "1d2h", "500ms", "0s", "3h4m"] {
            let d = parse_duration(text).expect(text);
            assert_eq!(format_duration(d), text);
        }
        assert_eq!(parse_duration("1s1d"), None, "units out of order");
        assert_eq!(parse_duration("1x"), None);
        assert_eq!(parse_duration("99999999999999999999d"), None);
    }

    #[test]
    fn dates_round_trip() {
        assert_eq!(parse_date("2023-11-14 22:13:20"), Some(1_700_000_000));
        assert_eq!(format_date(1_700_000_000), "2023-11-14 22:13:20");
        assert_eq!(parse_date("2024-02-29"), Some(1_709_164_800));
        assert_eq!(parse_date("2023-02-29"), None);
        assert_eq!(parse_date("1969-12-31"), None, "before the epoch");
    }

    #[test]
    fn numbers_check_their_width() {
        assert_eq!(
            parse_scalar(DataType::InetService, "65535", false),
            Ok(Value::Int(65535))
        );
        let err = parse_scalar(DataType::InetService, "70000", false).unwrap_err();
        assert!(err.contains("out of range"), "{err}");
        assert_eq!(
            parse_scalar(DataType::InetService, "ssh", false),
            Ok(Value::Int(22))
        );
        assert_eq!(
            parse_scalar(DataType::Integer { bits: 8 }, "0xff", false),
            Ok(Value::Int(255))
        );
        assert!(parse_scalar(DataType::Integer { bits: 8 }, "256", false).is_err());
        assert!(parse_scalar(DataType::Ipv4Addr, "1.2.3.256", false).is_err());
        assert!(parse_scalar(DataType::Ipv4Addr, "1.2.3", false).is_err());
    }

    #[test]
    fn bitmasks_print_by_name() {
        assert_eq!(
            format_scalar(DataType::TcpFlag, &Value::Int(0x12), BitsStyle::List),
            "syn,ack"
        );
        assert_eq!(
            format_scalar(DataType::CtState, &Value::Int(6), BitsStyle::Or),
            "established | related"
        );
        assert_eq!(
            format_scalar(DataType::CtState, &Value::Int(0x100), BitsStyle::Or),
            "0x100"
        );
    }
}
