//! TCP header view, options iterator and segment builder (RFC 9293, RFC 7323, RFC 2018).
//!
//! Owns the TCP header: ports, sequence numbers, flags, window, checksum, urgent pointer and
//! the options area, plus [`TcpRepr`], the builder the SYN-proxy uses to emit SYN-ACKs, and
//! [`SeqNum`], the wrapping sequence-number type every crate uses for TCP arithmetic.
//!
//! Invariants: a checked view guarantees `20 <= header_len <= buffer length`, where the buffer
//! is the TCP segment as delimited by the IP layer (the caller trims Ethernet padding). The
//! options iterator checks every length byte before it reads, yields an error for a malformed
//! option and then stops, and always advances, so it ends within 40 steps on any input. Plain
//! borrows, usable from any thread.

use core::fmt;
use core::ops::{Add, AddAssign, BitAnd, BitOr, BitOrAssign, Sub};

use thiserror::Error;

use crate::bytes::{read_u16, read_u32, write_u16, write_u32};
use crate::checksum::{self, PseudoHeader};
use crate::ip_protocol;

/// Byte ranges of the TCP header.
pub mod field {
    use crate::Field;

    /// Source port.
    pub const SRC_PORT: Field = 0..2;
    /// Destination port.
    pub const DST_PORT: Field = 2..4;
    /// Sequence number.
    pub const SEQ_NUM: Field = 4..8;
    /// Acknowledgment number.
    pub const ACK_NUM: Field = 8..12;
    /// Data offset (high nibble, in 32-bit words) and reserved bits.
    pub const DATA_OFFSET: usize = 12;
    /// The eight flag bits CWR ECE URG ACK PSH RST SYN FIN.
    pub const FLAGS: usize = 13;
    /// Receive window.
    pub const WINDOW: Field = 14..16;
    /// Checksum over pseudo-header, header and payload.
    pub const CHECKSUM: Field = 16..18;
    /// Urgent pointer.
    pub const URGENT: Field = 18..20;
}

/// Length of a header without options.
pub const HEADER_LEN: usize = field::URGENT.end;

/// Largest header: data offset 15.
pub const MAX_HEADER_LEN: usize = 60;

/// Largest options area.
pub const MAX_OPTIONS_LEN: usize = MAX_HEADER_LEN - HEADER_LEN;

/// Most SACK blocks one option can carry (2 + 4 * 8 = 34 of the 40 option bytes).
pub const MAX_SACK_BLOCKS: usize = 4;

/// TCP option kinds levee understands.
pub mod option_kind {
    /// End of option list.
    pub const END_OF_LIST: u8 = 0;
    /// No-operation (padding between options).
    pub const NO_OP: u8 = 1;
    /// Maximum segment size.
    pub const MSS: u8 = 2;
    /// Window scale.
    pub const WINDOW_SCALE: u8 = 3;
    /// SACK permitted.
    pub const SACK_PERMITTED: u8 = 4;
    /// SACK blocks.
    pub const SACK: u8 = 5;
    /// Timestamps.
    pub const TIMESTAMPS: u8 = 8;
}

/// Why a TCP segment or option could not be read or written.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum TcpError {
    /// The segment cannot hold a 20-byte header.
    #[error("TCP segment of {len} bytes is shorter than the 20-byte header")]
    Truncated {
        /// Length of the segment.
        len: usize,
    },
    /// A data offset below 5 words.
    #[error("TCP data offset {data_offset} is below the minimum of 5 words")]
    DataOffsetTooSmall {
        /// Data offset found, in 32-bit words.
        data_offset: u8,
    },
    /// The header (with options) runs past the segment.
    #[error("TCP header length {header_len} exceeds the {len}-byte segment")]
    DataOffsetBeyondSegment {
        /// Header length from the data offset, in bytes.
        header_len: usize,
        /// Length of the segment.
        len: usize,
    },
    /// An option other than EOL/NOP whose length byte is missing.
    #[error("TCP option kind {kind} at option offset {offset} has no length byte")]
    OptionTruncated {
        /// Option kind.
        kind: u8,
        /// Offset of the option within the options area.
        offset: usize,
    },
    /// A length byte below 2, or one that does not fit the option kind.
    #[error("TCP option kind {kind} has invalid length {len}")]
    BadOptionLength {
        /// Option kind.
        kind: u8,
        /// Length byte found.
        len: u8,
    },
    /// An option whose length runs past the options area.
    #[error("TCP option kind {kind} of length {len} runs past the {available} option bytes left")]
    OptionBeyondHeader {
        /// Option kind.
        kind: u8,
        /// Length byte found.
        len: u8,
        /// Option bytes left at the option's offset.
        available: usize,
    },
    /// Options that do not fit the 40 bytes a header allows.
    #[error("TCP options need {len} bytes, more than the 40 a header allows")]
    OptionsTooLong {
        /// Bytes the options need, padding included.
        len: usize,
    },
    /// More SACK blocks than one option carries.
    #[error("{count} SACK blocks given, at most 4 fit one option")]
    TooManySackBlocks {
        /// Blocks given.
        count: usize,
    },
    /// The checksum does not verify.
    #[error("TCP checksum {found:#06x} is wrong, expected {expected:#06x}")]
    BadChecksum {
        /// Checksum in the header.
        found: u16,
        /// Checksum the segment should carry.
        expected: u16,
    },
    /// The output buffer is too short.
    #[error("TCP output buffer of {len} bytes is shorter than the {needed} bytes needed")]
    BufferTooShort {
        /// Bytes needed.
        needed: usize,
        /// Length of the buffer.
        len: usize,
    },
}

/// A TCP sequence or acknowledgment number: 32-bit arithmetic modulo 2^32.
///
/// There is deliberately no `Ord`: sequence space is circular, so "before" only makes sense
/// within half the space, which [`SeqNum::is_before`] states.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SeqNum(pub u32);

impl SeqNum {
    /// Signed distance from `other` to `self`, valid while they are within 2^31 of each other.
    pub const fn diff(self, other: SeqNum) -> i32 {
        self.0.wrapping_sub(other.0) as i32
    }

    /// Whether `self` comes strictly before `other` in sequence space.
    pub const fn is_before(self, other: SeqNum) -> bool {
        self.diff(other) < 0
    }
}

impl Add<u32> for SeqNum {
    type Output = SeqNum;

    fn add(self, rhs: u32) -> SeqNum {
        SeqNum(self.0.wrapping_add(rhs))
    }
}

impl AddAssign<u32> for SeqNum {
    fn add_assign(&mut self, rhs: u32) {
        self.0 = self.0.wrapping_add(rhs);
    }
}

impl Sub<u32> for SeqNum {
    type Output = SeqNum;

    fn sub(self, rhs: u32) -> SeqNum {
        SeqNum(self.0.wrapping_sub(rhs))
    }
}

impl Sub<SeqNum> for SeqNum {
    type Output = i32;

    fn sub(self, rhs: SeqNum) -> i32 {
        self.diff(rhs)
    }
}

impl fmt::Display for SeqNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for SeqNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SeqNum({})", self.0)
    }
}

/// The eight TCP flag bits, as in byte 13 of the header.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(u8);

impl TcpFlags {
    /// No more data from sender.
    pub const FIN: TcpFlags = TcpFlags(0x01);
    /// Synchronize sequence numbers.
    pub const SYN: TcpFlags = TcpFlags(0x02);
    /// Reset the connection.
    pub const RST: TcpFlags = TcpFlags(0x04);
    /// Push function.
    pub const PSH: TcpFlags = TcpFlags(0x08);
    /// Acknowledgment field significant.
    pub const ACK: TcpFlags = TcpFlags(0x10);
    /// Urgent pointer field significant.
    pub const URG: TcpFlags = TcpFlags(0x20);
    /// ECN echo.
    pub const ECE: TcpFlags = TcpFlags(0x40);
    /// Congestion window reduced.
    pub const CWR: TcpFlags = TcpFlags(0x80);

    const NAMES: [(TcpFlags, &'static str); 8] = [
        (TcpFlags::FIN, "FIN"),
        (TcpFlags::SYN, "SYN"),
        (TcpFlags::RST, "RST"),
        (TcpFlags::PSH, "PSH"),
        (TcpFlags::ACK, "ACK"),
        (TcpFlags::URG, "URG"),
        (TcpFlags::ECE, "ECE"),
        (TcpFlags::CWR, "CWR"),
    ];

    /// No flags.
    pub const fn empty() -> TcpFlags {
        TcpFlags(0)
    }

    /// Flags from the wire byte.
    pub const fn from_bits(bits: u8) -> TcpFlags {
        TcpFlags(bits)
    }

    /// The wire byte.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any flag of `other` is set.
    pub const fn intersects(self, other: TcpFlags) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Both sets of flags.
    pub const fn union(self, other: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | other.0)
    }
}

impl BitOr for TcpFlags {
    type Output = TcpFlags;

    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        self.union(rhs)
    }
}

impl BitOrAssign for TcpFlags {
    fn bitor_assign(&mut self, rhs: TcpFlags) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for TcpFlags {
    type Output = TcpFlags;

    fn bitand(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 & rhs.0)
    }
}

impl fmt::Display for TcpFlags {
    /// Writes the set flags as `SYN|ACK`, or `-` for none.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        let mut first = true;
        for (flag, name) in Self::NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TcpFlags({self})")
    }
}

/// Up to four SACK blocks, each a `(left edge, right edge)` pair of sequence numbers.
///
/// Invariant: entries past `len` are zero, so the derived equality compares only the blocks
/// that exist.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SackBlocks {
    blocks: [(u32, u32); MAX_SACK_BLOCKS],
    len: u8,
}

impl SackBlocks {
    /// No blocks.
    pub const fn new() -> SackBlocks {
        SackBlocks {
            blocks: [(0, 0); MAX_SACK_BLOCKS],
            len: 0,
        }
    }

    /// Blocks copied from a slice of at most four.
    pub fn from_slice(blocks: &[(u32, u32)]) -> Result<SackBlocks, TcpError> {
        let mut out = SackBlocks::new();
        for &block in blocks {
            out.push(block)?;
        }
        Ok(out)
    }

    /// Appends a block; fails when four are already held.
    pub fn push(&mut self, block: (u32, u32)) -> Result<(), TcpError> {
        let len = usize::from(self.len);
        let slot = self
            .blocks
            .get_mut(len)
            .ok_or(TcpError::TooManySackBlocks { count: len + 1 })?;
        *slot = block;
        self.len += 1;
        Ok(())
    }

    /// The blocks held.
    pub fn as_slice(&self) -> &[(u32, u32)] {
        &self.blocks[..usize::from(self.len)]
    }

    /// How many blocks are held.
    pub const fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether no block is held.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Debug for SackBlocks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// One TCP option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcpOption<'a> {
    /// End of option list; what follows in the options area is padding.
    EndOfList,
    /// No-operation.
    NoOp,
    /// Maximum segment size.
    Mss(u16),
    /// Window scale shift count.
    WindowScale(u8),
    /// SACK permitted.
    SackPermitted,
    /// SACK blocks.
    SackRange(SackBlocks),
    /// Timestamps.
    Timestamps {
        /// Timestamp value.
        tsval: u32,
        /// Timestamp echo reply.
        tsecr: u32,
    },
    /// An option levee does not interpret, skipped by its length byte.
    Unknown {
        /// Option kind.
        kind: u8,
        /// The bytes after the kind and length bytes.
        data: &'a [u8],
    },
}

impl TcpOption<'_> {
    /// The option kind byte.
    pub fn kind(&self) -> u8 {
        match self {
            TcpOption::EndOfList => option_kind::END_OF_LIST,
            TcpOption::NoOp => option_kind::NO_OP,
            TcpOption::Mss(_) => option_kind::MSS,
            TcpOption::WindowScale(_) => option_kind::WINDOW_SCALE,
            TcpOption::SackPermitted => option_kind::SACK_PERMITTED,
            TcpOption::SackRange(_) => option_kind::SACK,
            TcpOption::Timestamps { .. } => option_kind::TIMESTAMPS,
            TcpOption::Unknown { kind, .. } => *kind,
        }
    }

    /// Bytes the option takes on the wire.
    pub fn buffer_len(&self) -> usize {
        match self {
            TcpOption::EndOfList | TcpOption::NoOp => 1,
            TcpOption::Mss(_) => 4,
            TcpOption::WindowScale(_) => 3,
            TcpOption::SackPermitted => 2,
            TcpOption::SackRange(blocks) => 2 + 8 * blocks.len(),
            TcpOption::Timestamps { .. } => 10,
            TcpOption::Unknown { data, .. } => 2 + data.len(),
        }
    }

    /// Writes the option at the start of `buffer` and returns its length.
    pub fn emit(&self, buffer: &mut [u8]) -> Result<usize, TcpError> {
        let len = self.buffer_len();
        let too_short = TcpError::BufferTooShort {
            needed: len,
            len: buffer.len(),
        };
        let out = buffer.get_mut(..len).ok_or(too_short)?;
        out[0] = self.kind();
        if len == 1 {
            return Ok(1);
        }
        out[1] = u8::try_from(len).map_err(|_| TcpError::OptionsTooLong { len })?;
        match self {
            TcpOption::Mss(mss) => write_u16(&mut out[2..], *mss),
            TcpOption::WindowScale(shift) => out[2] = *shift,
            TcpOption::SackRange(blocks) => {
                for (chunk, &(left, right)) in out[2..].chunks_exact_mut(8).zip(blocks.as_slice()) {
                    write_u32(&mut chunk[..4], left);
                    write_u32(&mut chunk[4..], right);
                }
            }
            TcpOption::Timestamps { tsval, tsecr } => {
                write_u32(&mut out[2..6], *tsval);
                write_u32(&mut out[6..10], *tsecr);
            }
            TcpOption::Unknown { data, .. } => out[2..].copy_from_slice(data),
            TcpOption::EndOfList | TcpOption::NoOp | TcpOption::SackPermitted => {}
        }
        Ok(len)
    }
}

/// An iterator over the options area of a TCP header.
///
/// Yields options in order. It ends after [`TcpOption::EndOfList`] (the rest is padding), at
/// the end of the area, or after yielding an error for a malformed option.
#[derive(Debug, Clone)]
pub struct TcpOptions<'a> {
    data: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> TcpOptions<'a> {
    /// Iterates over an options area (the bytes between offset 20 and the header length).
    pub const fn new(data: &'a [u8]) -> TcpOptions<'a> {
        TcpOptions {
            data,
            pos: 0,
            done: false,
        }
    }

    fn fail(&mut self, err: TcpError) -> Option<Result<TcpOption<'a>, TcpError>> {
        self.done = true;
        Some(Err(err))
    }
}

impl<'a> Iterator for TcpOptions<'a> {
    type Item = Result<TcpOption<'a>, TcpError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        // `pos <= data.len()` always: it only advances by lengths checked against the rest.
        let rest = &self.data[self.pos..];
        let Some(&kind) = rest.first() else {
            self.done = true;
            return None;
        };
        match kind {
            option_kind::END_OF_LIST => {
                self.done = true;
                return Some(Ok(TcpOption::EndOfList));
            }
            option_kind::NO_OP => {
                self.pos += 1;
                return Some(Ok(TcpOption::NoOp));
            }
            _ => {}
        }
        let Some(&len) = rest.get(1) else {
            return self.fail(TcpError::OptionTruncated {
                kind,
                offset: self.pos,
            });
        };
        if len < 2 {
            return self.fail(TcpError::BadOptionLength { kind, len });
        }
        let Some(option) = rest.get(..usize::from(len)) else {
            return self.fail(TcpError::OptionBeyondHeader {
                kind,
                len,
                available: rest.len(),
            });
        };
        let body = &option[2..];
        let parsed = match (kind, len) {
            (option_kind::MSS, 4) => TcpOption::Mss(read_u16(body)),
            (option_kind::WINDOW_SCALE, 3) => TcpOption::WindowScale(body[0]),
            (option_kind::SACK_PERMITTED, 2) => TcpOption::SackPermitted,
            (option_kind::SACK, 10 | 18 | 26 | 34) => {
                let mut blocks = SackBlocks::new();
                for chunk in body.chunks_exact(8) {
                    // At most four chunks fit a length of 34, so push cannot fail.
                    let _ = blocks.push((read_u32(&chunk[..4]), read_u32(&chunk[4..])));
                }
                TcpOption::SackRange(blocks)
            }
            (option_kind::TIMESTAMPS, 10) => TcpOption::Timestamps {
                tsval: read_u32(&body[..4]),
                tsecr: read_u32(&body[4..]),
            },
            (
                option_kind::MSS
                | option_kind::WINDOW_SCALE
                | option_kind::SACK_PERMITTED
                | option_kind::SACK
                | option_kind::TIMESTAMPS,
                _,
            ) => return self.fail(TcpError::BadOptionLength { kind, len }),
            _ => TcpOption::Unknown { kind, data: body },
        };
        self.pos += usize::from(len);
        Some(Ok(parsed))
    }
}

/// A view of a TCP segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it. Fixed-field accessors panic if it is shorter than
    /// [`HEADER_LEN`]; use this only on a buffer you sized yourself.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a segment after checking `20 <= header_len <= segment length`. The buffer must end
    /// where the segment ends (at the IP payload's end), since the checksum and payload run to
    /// its end.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, TcpError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks `20 <= header_len <= segment length`.
    pub fn check_len(&self) -> Result<(), TcpError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(TcpError::Truncated { len });
        }
        let data_offset = self.data_offset();
        if data_offset < 5 {
            return Err(TcpError::DataOffsetTooSmall { data_offset });
        }
        let header_len = self.header_len();
        if header_len > len {
            return Err(TcpError::DataOffsetBeyondSegment { header_len, len });
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::SRC_PORT])
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::DST_PORT])
    }

    /// Sequence number.
    pub fn seq_number(&self) -> SeqNum {
        SeqNum(read_u32(&self.buffer.as_ref()[field::SEQ_NUM]))
    }

    /// Acknowledgment number (meaningful only with ACK set).
    pub fn ack_number(&self) -> SeqNum {
        SeqNum(read_u32(&self.buffer.as_ref()[field::ACK_NUM]))
    }

    /// Data offset in 32-bit words.
    pub fn data_offset(&self) -> u8 {
        self.buffer.as_ref()[field::DATA_OFFSET] >> 4
    }

    /// Header length in bytes, options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.data_offset()) * 4
    }

    /// The flag bits.
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(self.buffer.as_ref()[field::FLAGS])
    }

    /// FIN flag.
    pub fn fin(&self) -> bool {
        self.flags().contains(TcpFlags::FIN)
    }

    /// SYN flag.
    pub fn syn(&self) -> bool {
        self.flags().contains(TcpFlags::SYN)
    }

    /// RST flag.
    pub fn rst(&self) -> bool {
        self.flags().contains(TcpFlags::RST)
    }

    /// PSH flag.
    pub fn psh(&self) -> bool {
        self.flags().contains(TcpFlags::PSH)
    }

    /// ACK flag.
    pub fn ack(&self) -> bool {
        self.flags().contains(TcpFlags::ACK)
    }

    /// URG flag.
    pub fn urg(&self) -> bool {
        self.flags().contains(TcpFlags::URG)
    }

    /// ECE flag.
    pub fn ece(&self) -> bool {
        self.flags().contains(TcpFlags::ECE)
    }

    /// CWR flag.
    pub fn cwr(&self) -> bool {
        self.flags().contains(TcpFlags::CWR)
    }

    /// Receive window (unscaled).
    pub fn window_len(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::WINDOW])
    }

    /// Checksum.
    pub fn checksum(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// Urgent pointer.
    pub fn urgent_at(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::URGENT])
    }

    /// Whether the checksum verifies over `pseudo`, header and payload.
    pub fn verify_checksum(&self, pseudo: &PseudoHeader) -> bool {
        let data = self.buffer.as_ref();
        let ph = pseudo.sum(ip_protocol::TCP, data.len() as u32);
        checksum::add(ph, checksum::sum(data)) == 0xFFFF
    }

    /// The checksum the segment should carry, computed with the checksum field taken as zero.
    pub fn compute_checksum(&self, pseudo: &PseudoHeader) -> u16 {
        let data = self.buffer.as_ref();
        let ph = pseudo.sum(ip_protocol::TCP, data.len() as u32);
        // Adding the complement of the stored field cancels it, as if it were zero.
        !checksum::combine(&[ph, checksum::sum(data), !self.checksum()])
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The options area, from byte 20 to the header length.
    pub fn options(&self) -> &'a [u8] {
        let data = self.buffer.as_ref();
        let end = self.header_len().min(data.len());
        &data[HEADER_LEN.min(end)..end]
    }

    /// Iterates over the options.
    pub fn options_iter(&self) -> TcpOptions<'a> {
        TcpOptions::new(self.options())
    }

    /// The payload after the header.
    pub fn payload(&self) -> &'a [u8] {
        let data = self.buffer.as_ref();
        &data[self.header_len().min(data.len())..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the source port.
    pub fn set_src_port(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::SRC_PORT], value);
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::DST_PORT], value);
    }

    /// Sets the sequence number. Use [`checksum::update_u32`] to patch the checksum in place.
    pub fn set_seq_number(&mut self, value: SeqNum) {
        write_u32(&mut self.buffer.as_mut()[field::SEQ_NUM], value.0);
    }

    /// Sets the acknowledgment number.
    pub fn set_ack_number(&mut self, value: SeqNum) {
        write_u32(&mut self.buffer.as_mut()[field::ACK_NUM], value.0);
    }

    /// Sets the header length in bytes; it is stored as 32-bit words, so the low 2 bits and
    /// anything above 60 are dropped.
    pub fn set_header_len(&mut self, len: usize) {
        let words = ((len / 4) & 0x0F) as u8;
        let b = &mut self.buffer.as_mut()[field::DATA_OFFSET];
        *b = (*b & 0x0F) | (words << 4);
    }

    /// Sets the flag bits.
    pub fn set_flags(&mut self, flags: TcpFlags) {
        self.buffer.as_mut()[field::FLAGS] = flags.0;
    }

    /// Sets the receive window.
    pub fn set_window_len(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::WINDOW], value);
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::CHECKSUM], value);
    }

    /// Sets the urgent pointer.
    pub fn set_urgent_at(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::URGENT], value);
    }

    /// Computes the checksum over `pseudo`, header and payload and stores it.
    pub fn fill_checksum(&mut self, pseudo: &PseudoHeader) {
        let value = self.compute_checksum(pseudo);
        self.set_checksum(value);
    }

    /// The options area, writable.
    pub fn options_mut(&mut self) -> &mut [u8] {
        let header_len = self.header_len();
        let data = self.buffer.as_mut();
        let end = header_len.min(data.len());
        &mut data[HEADER_LEN.min(end)..end]
    }

    /// The payload, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let header_len = self.header_len();
        let data = self.buffer.as_mut();
        let start = header_len.min(data.len());
        &mut data[start..]
    }
}

/// Timestamps option values (RFC 7323).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timestamps {
    /// Timestamp value of the sender.
    pub tsval: u32,
    /// Timestamp echo reply.
    pub tsecr: u32,
}

/// A TCP segment as plain values: what the SYN-proxy builds and what a parse returns.
///
/// [`TcpRepr::emit`] lays options out as Linux does, so every option starts on the boundary
/// its kind prefers and the area is a multiple of 4 bytes without trailing padding:
///
/// | present                           | bytes                          |
/// |-----------------------------------|--------------------------------|
/// | MSS                               | `MSS(4)`                       |
/// | SACK-permitted and timestamps     | `SACKOK(2) TS(10)`             |
/// | timestamps only                   | `NOP NOP TS(10)`               |
/// | SACK-permitted only               | `NOP NOP SACKOK(2)`            |
/// | window scale                      | `NOP WS(3)`                    |
/// | SACK blocks                       | `NOP NOP SACK(2 + 8n)`         |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpRepr<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq_number: SeqNum,
    /// Acknowledgment number (written as given, even without ACK).
    pub ack_number: SeqNum,
    /// Flag bits.
    pub flags: TcpFlags,
    /// Receive window (unscaled, as on the wire).
    pub window_len: u16,
    /// Urgent pointer.
    pub urgent_at: u16,
    /// Maximum segment size option.
    pub max_seg_size: Option<u16>,
    /// Window scale option.
    pub window_scale: Option<u8>,
    /// SACK-permitted option.
    pub sack_permitted: bool,
    /// SACK blocks option; empty means absent.
    pub sack_blocks: SackBlocks,
    /// Timestamps option.
    pub timestamps: Option<Timestamps>,
    /// Payload.
    pub payload: &'a [u8],
}

impl<'a> TcpRepr<'a> {
    /// A segment with the given ports, numbers and flags, no options and no payload.
    pub const fn new(
        src_port: u16,
        dst_port: u16,
        seq_number: SeqNum,
        ack_number: SeqNum,
        flags: TcpFlags,
        window_len: u16,
    ) -> TcpRepr<'a> {
        TcpRepr {
            src_port,
            dst_port,
            seq_number,
            ack_number,
            flags,
            window_len,
            urgent_at: 0,
            max_seg_size: None,
            window_scale: None,
            sack_permitted: false,
            sack_blocks: SackBlocks::new(),
            timestamps: None,
            payload: &[],
        }
    }

    /// Bytes the options take, padding included (see the layout table above).
    pub fn options_len(&self) -> usize {
        let mut len = 0;
        if self.max_seg_size.is_some() {
            len += 4;
        }
        if self.sack_permitted || self.timestamps.is_some() {
            len += match self.timestamps {
                Some(_) => 12,
                None => 4,
            };
        }
        if self.window_scale.is_some() {
            len += 4;
        }
        if !self.sack_blocks.is_empty() {
            len += 4 + 8 * self.sack_blocks.len();
        }
        len
    }

    /// Header length, options included.
    pub fn header_len(&self) -> usize {
        HEADER_LEN + self.options_len()
    }

    /// Header plus payload: the bytes [`TcpRepr::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        self.header_len() + self.payload.len()
    }

    /// Writes the whole segment (header, options, payload) at the start of `buffer`, fills the
    /// checksum over `pseudo`, and returns the segment length.
    pub fn emit(&self, buffer: &mut [u8], pseudo: &PseudoHeader) -> Result<usize, TcpError> {
        let options_len = self.options_len();
        if options_len > MAX_OPTIONS_LEN {
            return Err(TcpError::OptionsTooLong { len: options_len });
        }
        let header_len = HEADER_LEN + options_len;
        let total = header_len + self.payload.len();
        let len = buffer.len();
        let segment = buffer
            .get_mut(..total)
            .ok_or(TcpError::BufferTooShort { needed: total, len })?;
        let mut packet = Packet::new_unchecked(segment);
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_seq_number(self.seq_number);
        packet.set_ack_number(self.ack_number);
        // Also clears the reserved bits next to the data offset.
        packet.buffer[field::DATA_OFFSET] = 0;
        packet.set_header_len(header_len);
        packet.set_flags(self.flags);
        packet.set_window_len(self.window_len);
        packet.set_checksum(0);
        packet.set_urgent_at(self.urgent_at);
        self.emit_options(packet.options_mut())?;
        packet.payload_mut().copy_from_slice(self.payload);
        packet.fill_checksum(pseudo);
        Ok(total)
    }

    /// Writes the options in the layout of the table above into exactly `out`.
    fn emit_options(&self, out: &mut [u8]) -> Result<(), TcpError> {
        const NOP: TcpOption<'static> = TcpOption::NoOp;
        let mut at = 0;
        let mut put = |option: TcpOption<'_>, out: &mut [u8]| -> Result<(), TcpError> {
            at += option.emit(&mut out[at..])?;
            Ok(())
        };
        if let Some(mss) = self.max_seg_size {
            put(TcpOption::Mss(mss), out)?;
        }
        match (self.sack_permitted, self.timestamps) {
            (true, Some(ts)) => {
                put(TcpOption::SackPermitted, out)?;
                put(ts.into(), out)?;
            }
            (false, Some(ts)) => {
                put(NOP, out)?;
                put(NOP, out)?;
                put(ts.into(), out)?;
            }
            (true, None) => {
                put(NOP, out)?;
                put(NOP, out)?;
                put(TcpOption::SackPermitted, out)?;
            }
            (false, None) => {}
        }
        if let Some(shift) = self.window_scale {
            put(NOP, out)?;
            put(TcpOption::WindowScale(shift), out)?;
        }
        if !self.sack_blocks.is_empty() {
            put(NOP, out)?;
            put(NOP, out)?;
            put(TcpOption::SackRange(self.sack_blocks), out)?;
        }
        Ok(())
    }

    /// Reads a checked segment after verifying its checksum over `pseudo`.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &Packet<&'a T>,
        pseudo: &PseudoHeader,
    ) -> Result<TcpRepr<'a>, TcpError> {
        if !packet.verify_checksum(pseudo) {
            return Err(TcpError::BadChecksum {
                found: packet.checksum(),
                expected: packet.compute_checksum(pseudo),
            });
        }
        Self::parse_unverified(packet)
    }

    /// Reads a checked segment without looking at its checksum, for when the NIC has
    /// verified it. Unknown options are skipped; malformed ones are an error. When an option
    /// appears twice the last one wins.
    pub fn parse_unverified<T: AsRef<[u8]> + ?Sized>(
        packet: &Packet<&'a T>,
    ) -> Result<TcpRepr<'a>, TcpError> {
        let mut repr = TcpRepr::new(
            packet.src_port(),
            packet.dst_port(),
            packet.seq_number(),
            packet.ack_number(),
            packet.flags(),
            packet.window_len(),
        );
        repr.urgent_at = packet.urgent_at();
        repr.payload = packet.payload();
        for option in packet.options_iter() {
            match option? {
                TcpOption::Mss(mss) => repr.max_seg_size = Some(mss),
                TcpOption::WindowScale(shift) => repr.window_scale = Some(shift),
                TcpOption::SackPermitted => repr.sack_permitted = true,
                TcpOption::SackRange(blocks) => repr.sack_blocks = blocks,
                TcpOption::Timestamps { tsval, tsecr } => repr.timestamps = Some(Timestamps { tsval, tsecr }),
                TcpOption::EndOfList | TcpOption::NoOp | TcpOption::Unknown { .. } => {}
            }
        }
        Ok(repr)
    }
}

impl From<Timestamps> for TcpOption<'_> {
    fn from(ts: Timestamps) -> Self {
        TcpOption::Timestamps {
            tsval: ts.tsval,
            tsecr: ts.tsecr,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;
    use crate::ethernet::{ethertype, EthernetRepr, MacAddr};
    use crate::fixtures;
    use crate::ipv4::Ipv4Repr;
    use crate::ipv6::Ipv6Repr;

    const CLIENT_MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0xa1, 0xb2, 0xc3]);
    const SERVER_MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0xd4, 0xe5, 0xf6]);
    const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
    const SERVER: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 80);
    const TO_SERVER: PseudoHeader = PseudoHeader::V4 {
        src: CLIENT,
        dst: SERVER,
    };

    fn v6_pseudo() -> PseudoHeader {
        PseudoHeader::V6 {
            src: "2001:2::10".parse::<Ipv6Addr>().unwrap(),
            dst: "2001:2:0:1::80".parse::<Ipv6Addr>().unwrap(),
        }
    }

    fn syn_ack() -> TcpRepr<'static> {
        TcpRepr {
            max_seg_size: Some(1460),
            window_scale: Some(7),
            sack_permitted: true,
            timestamps: Some(Timestamps {
                tsval: 0x9e3779b9,
                tsecr: 0x0017a1f0,
            }),
            ..TcpRepr::new(
                80,
                51234,
                SeqNum(0x2f5a1c3e),
                SeqNum(0x6b8b4568),
                TcpFlags::SYN | TcpFlags::ACK,
                65160,
            )
        }
    }

    #[test]
    fn parse_syn_every_field() {
        let segment = &fixtures::ETH_IPV4_TCP_SYN[34..];
        let packet = Packet::new_checked(segment).unwrap();
        assert_eq!(packet.src_port(), 51234);
        assert_eq!(packet.dst_port(), 80);
        assert_eq!(packet.seq_number(), SeqNum(0x6b8b4567));
        assert_eq!(packet.ack_number(), SeqNum(0));
        assert_eq!(packet.data_offset(), 10);
        assert_eq!(packet.header_len(), 40);
        assert_eq!(packet.flags(), TcpFlags::SYN);
        assert!(packet.syn());
        assert!(!(packet.fin() || packet.rst() || packet.psh() || packet.ack()));
        assert!(!(packet.urg() || packet.ece() || packet.cwr()));
        assert_eq!(packet.window_len(), 64240);
        assert_eq!(packet.checksum(), 0xa522);
        assert_eq!(packet.urgent_at(), 0);
        assert!(packet.verify_checksum(&TO_SERVER));
        // Swapping addresses cannot change a one's-complement sum; another address does.
        assert!(packet.verify_checksum(&TO_SERVER.reversed()));
        let elsewhere = PseudoHeader::V4 {
            src: Ipv4Addr::new(198, 18, 0, 11),
            dst: SERVER,
        };
        assert!(!packet.verify_checksum(&elsewhere));
        assert_eq!(packet.compute_checksum(&TO_SERVER), 0xa522);
        assert_eq!(packet.options(), &segment[20..40]);
        assert_eq!(packet.payload(), &[] as &[u8]);
        let options: Vec<_> = packet.options_iter().map(Result::unwrap).collect();
        assert_eq!(
            options,
            [
                TcpOption::Mss(1460),
                TcpOption::SackPermitted,
                TcpOption::Timestamps {
                    tsval: 0x0017a1f0,
                    tsecr: 0
                },
                TcpOption::NoOp,
                TcpOption::WindowScale(7),
            ]
        );
        let repr = TcpRepr::parse(&packet, &TO_SERVER).unwrap();
        assert_eq!(repr.max_seg_size, Some(1460));
        assert_eq!(repr.window_scale, Some(7));
        assert!(repr.sack_permitted);
        assert!(repr.sack_blocks.is_empty());
        assert_eq!(
            repr.timestamps,
            Some(Timestamps {
                tsval: 0x0017a1f0,
                tsecr: 0
            })
        );
    }

    #[test]
    fn build_syn_ack_matches_fixture() {
        let repr = syn_ack();
        assert_eq!(repr.options_len(), 20);
        assert_eq!(repr.buffer_len(), 40);
        let mut segment = [0xEEu8; 40];
        assert_eq!(repr.emit(&mut segment, &TO_SERVER.reversed()), Ok(40));
        assert_eq!(segment, fixtures::ETH_IPV4_TCP_SYNACK[34..]);
        let packet = Packet::new_checked(&segment[..]).unwrap();
        assert_eq!(TcpRepr::parse(&packet, &TO_SERVER.reversed()), Ok(repr));
    }

    /// The whole SYN-ACK frame, as the SYN-proxy assembles it from the three builders.
    #[test]
    fn build_syn_ack_frame_matches_fixture() {
        let tcp = syn_ack();
        let ip = Ipv4Repr {
            src_addr: SERVER,
            dst_addr: CLIENT,
            protocol: ip_protocol::TCP,
            payload_len: tcp.buffer_len(),
            ttl: 64,
            dscp: 0,
            ecn: 0,
            ident: 0,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
        };
        let eth = EthernetRepr {
            dst_addr: CLIENT_MAC,
            src_addr: SERVER_MAC,
            ethertype: ethertype::IPV4,
        };
        let mut frame = [0u8; 74];
        let mut at = eth.emit(&mut frame).unwrap();
        at += ip.emit(&mut frame[at..]).unwrap();
        let pseudo = PseudoHeader::V4 {
            src: SERVER,
            dst: CLIENT,
        };
        at += tcp.emit(&mut frame[at..], &pseudo).unwrap();
        assert_eq!(at, 74);
        assert_eq!(frame, fixtures::ETH_IPV4_TCP_SYNACK);
    }

    #[test]
    fn parse_and_build_ipv6_sack() {
        let segment = &fixtures::ETH_IPV6_TCP_SACK[54..];
        let packet = Packet::new_checked(segment).unwrap();
        assert_eq!((packet.src_port(), packet.dst_port()), (51300, 443));
        assert_eq!(packet.seq_number(), SeqNum(0x11223344));
        assert_eq!(packet.ack_number(), SeqNum(0x55667788));
        assert_eq!(packet.header_len(), 52);
        assert_eq!(packet.flags(), TcpFlags::ACK);
        assert_eq!(packet.window_len(), 501);
        assert_eq!(packet.checksum(), 0xfc1a);
        assert!(packet.verify_checksum(&v6_pseudo()));
        let blocks = SackBlocks::from_slice(&[
            (0x55667788 + 1448, 0x55667788 + 2896),
            (0x55667788 + 4344, 0x55667788 + 5792),
        ])
        .unwrap();
        let options: Vec<_> = packet.options_iter().map(Result::unwrap).collect();
        assert_eq!(
            options,
            [
                TcpOption::NoOp,
                TcpOption::NoOp,
                TcpOption::Timestamps {
                    tsval: 0x00a1b2c3,
                    tsecr: 0x00d4e5f6
                },
                TcpOption::NoOp,
                TcpOption::NoOp,
                TcpOption::SackRange(blocks),
            ]
        );
        let repr = TcpRepr {
            sack_blocks: blocks,
            timestamps: Some(Timestamps {
                tsval: 0x00a1b2c3,
                tsecr: 0x00d4e5f6,
            }),
            ..TcpRepr::new(
                51300,
                443,
                SeqNum(0x11223344),
                SeqNum(0x55667788),
                TcpFlags::ACK,
                501,
            )
        };
        assert_eq!(TcpRepr::parse(&packet, &v6_pseudo()), Ok(repr));
        let mut out = [0u8; 52];
        assert_eq!(repr.emit(&mut out, &v6_pseudo()), Ok(52));
        assert_eq!(out, *segment);

        // The full frame from the three builders.
        let ip = Ipv6Repr {
            src_addr: "2001:2::10".parse().unwrap(),
            dst_addr: "2001:2:0:1::80".parse().unwrap(),
            next_header: ip_protocol::TCP,
            payload_len: repr.buffer_len(),
            hop_limit: 64,
            traffic_class: 0x28,
            flow_label: 0x3c8a1,
        };
        let mut frame = [0u8; 106];
        frame[..14].copy_from_slice(&fixtures::ETH_IPV6_TCP_SACK[..14]);
        ip.emit(&mut frame[14..]).unwrap();
        repr.emit(&mut frame[54..], &v6_pseudo()).unwrap();
        assert_eq!(frame, fixtures::ETH_IPV6_TCP_SACK);
    }

    #[test]
    fn build_optionless_syn_matches_qinq_fixture() {
        let repr = TcpRepr::new(40002, 22, SeqNum(0x01020304), SeqNum(0), TcpFlags::SYN, 29200);
        let mut out = [0u8; 20];
        assert_eq!(repr.emit(&mut out, &TO_SERVER), Ok(20));
        assert_eq!(out, fixtures::ETH_QINQ_IPV4_TCP_SYN[42..]);
    }

    #[test]
    fn linux_layouts_without_timestamps() {
        let mut repr = TcpRepr {
            max_seg_size: Some(1460),
            sack_permitted: true,
            window_scale: Some(7),
            ..TcpRepr::new(1, 2, SeqNum(3), SeqNum(4), TcpFlags::SYN, 5)
        };
        let mut out = [0u8; 60];
        let len = repr.emit(&mut out, &TO_SERVER).unwrap();
        assert_eq!(&out[20..len], &[2, 4, 0x05, 0xb4, 1, 1, 4, 2, 1, 3, 3, 7]);
        repr.sack_permitted = false;
        repr.timestamps = Some(Timestamps { tsval: 1, tsecr: 2 });
        let len = repr.emit(&mut out, &TO_SERVER).unwrap();
        assert_eq!(
            &out[20..len],
            &[2, 4, 0x05, 0xb4, 1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 3, 3, 7]
        );
    }

    #[test]
    fn payload_is_summed_and_copied() {
        let payload = b"GET / HTTP/1.1\r\n\r\n";
        let repr = TcpRepr {
            payload,
            ..TcpRepr::new(
                51234,
                80,
                SeqNum(1),
                SeqNum(2),
                TcpFlags::PSH | TcpFlags::ACK,
                502,
            )
        };
        let mut out = [0u8; 64];
        let len = repr.emit(&mut out, &TO_SERVER).unwrap();
        assert_eq!(len, 20 + payload.len());
        let packet = Packet::new_checked(&out[..len]).unwrap();
        assert_eq!(packet.payload(), payload);
        assert!(packet.verify_checksum(&TO_SERVER));
        assert_eq!(TcpRepr::parse(&packet, &TO_SERVER), Ok(repr));
    }

    #[test]
    fn options_iterator_skips_unknown_options() {
        // Fast Open cookie (34), an experimental option (254), NOPs and EOL then garbage.
        let area = [
            34, 6, 0xde, 0xad, 0xbe, 0xef, 254, 4, 0xf9, 0x89, 1, 0, 0xff, 0xff, 0xff, 0xff,
        ];
        let options: Vec<_> = TcpOptions::new(&area).collect();
        assert_eq!(
            options,
            [
                Ok(TcpOption::Unknown {
                    kind: 34,
                    data: &[0xde, 0xad, 0xbe, 0xef]
                }),
                Ok(TcpOption::Unknown {
                    kind: 254,
                    data: &[0xf9, 0x89]
                }),
                Ok(TcpOption::NoOp),
                Ok(TcpOption::EndOfList),
            ]
        );
    }

    #[test]
    fn options_iterator_rejects_malformed_lengths() {
        let cases: [(&[u8], TcpError); 8] = [
            (&[2], TcpError::OptionTruncated { kind: 2, offset: 0 }),
            (&[1, 1, 99], TcpError::OptionTruncated { kind: 99, offset: 2 }),
            (&[2, 0, 0, 0], TcpError::BadOptionLength { kind: 2, len: 0 }),
            (&[77, 1, 0, 0], TcpError::BadOptionLength { kind: 77, len: 1 }),
            (&[2, 3, 5, 1], TcpError::BadOptionLength { kind: 2, len: 3 }),
            (
                &[5, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                TcpError::BadOptionLength { kind: 5, len: 11 },
            ),
            (
                &[8, 10, 0, 0],
                TcpError::OptionBeyondHeader {
                    kind: 8,
                    len: 10,
                    available: 4,
                },
            ),
            (&[4, 3, 0, 0], TcpError::BadOptionLength { kind: 4, len: 3 }),
        ];
        for (area, expected) in cases {
            let mut iter = TcpOptions::new(area);
            let err = iter.by_ref().find_map(Result::err);
            assert_eq!(err, Some(expected), "area {area:02x?}");
            assert_eq!(iter.next(), None, "fused after {expected}");
        }
        assert_eq!(
            TcpError::BadOptionLength { kind: 2, len: 3 }.to_string(),
            "TCP option kind 2 has invalid length 3"
        );
        // A malformed option in a real header makes the repr parse fail.
        let mut segment = [0u8; 40];
        segment.copy_from_slice(&fixtures::ETH_IPV4_TCP_SYN[34..]);
        segment[21] = 0;
        let packet = Packet::new_checked(&segment[..]).unwrap();
        assert_eq!(
            TcpRepr::parse_unverified(&packet),
            Err(TcpError::BadOptionLength { kind: 2, len: 0 })
        );
    }

    #[test]
    fn sack_block_counts() {
        for count in 1..=4u32 {
            let blocks: Vec<(u32, u32)> = (0..count).map(|i| (i * 100, i * 100 + 50)).collect();
            let option = TcpOption::SackRange(SackBlocks::from_slice(&blocks).unwrap());
            let mut buf = [0u8; 34];
            let len = option.emit(&mut buf).unwrap();
            assert_eq!(len, 2 + 8 * count as usize);
            let parsed: Vec<_> = TcpOptions::new(&buf[..len]).collect();
            assert_eq!(parsed, [Ok(option)]);
            if let Ok(TcpOption::SackRange(b)) = parsed[0] {
                assert_eq!(b.as_slice(), &blocks[..]);
                assert_eq!(b.len(), count as usize);
            }
        }
        let five = [(0, 1); 5];
        assert_eq!(
            SackBlocks::from_slice(&five),
            Err(TcpError::TooManySackBlocks { count: 5 })
        );
        assert_eq!(
            format!("{:?}", SackBlocks::from_slice(&[(1, 2)]).unwrap()),
            "[(1, 2)]"
        );
    }

    #[test]
    fn emit_errors() {
        // Timestamps plus four SACK blocks need 4 + 12 + 4 + 36 = 56 bytes.
        let repr = TcpRepr {
            sack_blocks: SackBlocks::from_slice(&[(1, 2); 4]).unwrap(),
            ..syn_ack()
        };
        let mut out = [0u8; 80];
        assert_eq!(
            repr.emit(&mut out, &TO_SERVER),
            Err(TcpError::OptionsTooLong { len: 56 })
        );
        // Three blocks with timestamps (Linux's maximum) fit exactly.
        let repr = TcpRepr {
            max_seg_size: None,
            window_scale: None,
            sack_permitted: false,
            sack_blocks: SackBlocks::from_slice(&[(1, 2); 3]).unwrap(),
            ..syn_ack()
        };
        assert_eq!(repr.options_len(), 40);
        assert_eq!(repr.emit(&mut out, &TO_SERVER), Ok(60));
        assert_eq!(
            syn_ack().emit(&mut out[..39], &TO_SERVER),
            Err(TcpError::BufferTooShort { needed: 40, len: 39 })
        );
        assert!(TcpOption::Mss(1).emit(&mut [0u8; 3]).is_err());
        let long = [0u8; 300];
        assert_eq!(
            TcpOption::Unknown {
                kind: 99,
                data: &long
            }
            .emit(&mut [0u8; 302]),
            Err(TcpError::OptionsTooLong { len: 302 })
        );
    }

    #[test]
    fn length_errors_name_values() {
        let segment = &fixtures::ETH_IPV4_TCP_SYN[34..];
        for len in 0..HEADER_LEN {
            assert_eq!(
                Packet::new_checked(&segment[..len]).unwrap_err(),
                TcpError::Truncated { len }
            );
        }
        for len in HEADER_LEN..40 {
            assert_eq!(
                Packet::new_checked(&segment[..len]).unwrap_err(),
                TcpError::DataOffsetBeyondSegment { header_len: 40, len }
            );
        }
        let mut buf = [0u8; 40];
        buf.copy_from_slice(segment);
        for offset in 0..5u8 {
            buf[12] = offset << 4;
            assert_eq!(
                Packet::new_checked(&buf[..]).unwrap_err(),
                TcpError::DataOffsetTooSmall { data_offset: offset }
            );
        }
        buf[12] = 0xf0;
        let err = Packet::new_checked(&buf[..]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "TCP header length 60 exceeds the 40-byte segment"
        );
    }

    #[test]
    fn bad_checksum_names_both_values() {
        let mut buf = [0u8; 40];
        buf.copy_from_slice(&fixtures::ETH_IPV4_TCP_SYN[34..]);
        buf[30] ^= 0x80; // Flip a bit of TSval.
        let packet = Packet::new_checked(&buf[..]).unwrap();
        let err = TcpRepr::parse(&packet, &TO_SERVER).unwrap_err();
        let TcpError::BadChecksum { found, expected } = err else {
            panic!("unexpected {err}");
        };
        assert_eq!(found, 0xa522);
        assert_ne!(expected, found);
        let mut fixed = Packet::new_checked(&mut buf[..]).unwrap();
        fixed.fill_checksum(&TO_SERVER);
        assert_eq!(fixed.checksum(), expected);
        assert!(fixed.verify_checksum(&TO_SERVER));
    }

    #[test]
    fn incremental_seq_rewrite_keeps_checksum_valid() {
        // The SYN-proxy shifts sequence numbers in place; RFC 1624 keeps the checksum right.
        let mut buf = [0u8; 40];
        buf.copy_from_slice(&fixtures::ETH_IPV4_TCP_SYNACK[34..]);
        let mut packet = Packet::new_checked(&mut buf[..]).unwrap();
        let old = packet.seq_number();
        let new = old + 0x8000_0001;
        packet.set_seq_number(new);
        let hc = checksum::update_u32(packet.checksum(), old.0, new.0);
        packet.set_checksum(hc);
        assert!(packet.verify_checksum(&TO_SERVER.reversed()));
    }

    #[test]
    fn setters_and_flags() {
        let mut buf = [0u8; 24];
        let mut packet = Packet::new_unchecked(&mut buf[..]);
        packet.set_header_len(24);
        packet.set_flags(TcpFlags::FIN | TcpFlags::URG | TcpFlags::ECE | TcpFlags::CWR);
        packet.set_urgent_at(9);
        packet.options_mut().copy_from_slice(&[1, 1, 1, 0]);
        assert_eq!(packet.payload_mut().len(), 0);
        let packet = Packet::new_checked(&buf[..]).unwrap();
        assert!(packet.fin() && packet.urg() && packet.ece() && packet.cwr());
        assert!(!packet.syn());
        assert_eq!(packet.urgent_at(), 9);
        assert_eq!(packet.options_iter().count(), 4);
        assert_eq!(packet.flags().to_string(), "FIN|URG|ECE|CWR");
        assert_eq!(TcpFlags::empty().to_string(), "-");
        assert_eq!(
            format!("{:?}", TcpFlags::SYN | TcpFlags::ACK),
            "TcpFlags(SYN|ACK)"
        );
        assert!((TcpFlags::SYN | TcpFlags::ACK).intersects(TcpFlags::ACK | TcpFlags::RST));
        assert_eq!((TcpFlags::SYN | TcpFlags::ACK) & TcpFlags::SYN, TcpFlags::SYN);
        let mut f = TcpFlags::from_bits(0x12);
        f |= TcpFlags::PSH;
        assert_eq!(f.bits(), 0x1a);
    }

    #[test]
    fn seq_num_wraps() {
        let a = SeqNum(0xFFFF_FFF0);
        let b = a + 0x20;
        assert_eq!(b, SeqNum(0x10));
        assert_eq!(b - a, 0x20);
        assert_eq!(a - b, -0x20);
        assert!(a.is_before(b));
        assert!(!b.is_before(a));
        assert_eq!(b - 0x20, a);
        let mut c = a;
        c += 0x10;
        assert_eq!(c, SeqNum(0));
        assert_eq!(c.to_string(), "0");
        assert_eq!(format!("{c:?}"), "SeqNum(0)");
    }

    fn arb_repr(payload: &[u8]) -> impl Strategy<Value = TcpRepr<'_>> {
        let numbers = (
            any::<u16>(),
            any::<u16>(),
            any::<u32>(),
            any::<u32>(),
            any::<u8>(),
            any::<u16>(),
            any::<u16>(),
        );
        let options = (
            proptest::option::of(any::<u16>()),
            proptest::option::of(0u8..15),
            any::<bool>(),
            proptest::option::of(any::<(u32, u32)>()),
            proptest::collection::vec(any::<(u32, u32)>(), 0..=4),
        );
        (numbers, options).prop_filter_map("options fit 40 bytes", move |(n, o)| {
            let repr = TcpRepr {
                urgent_at: n.6,
                max_seg_size: o.0,
                window_scale: o.1,
                sack_permitted: o.2,
                timestamps: o.3.map(|(tsval, tsecr)| Timestamps { tsval, tsecr }),
                sack_blocks: SackBlocks::from_slice(&o.4).ok()?,
                payload,
                ..TcpRepr::new(n.0, n.1, SeqNum(n.2), SeqNum(n.3), TcpFlags::from_bits(n.4), n.5)
            };
            (repr.options_len() <= MAX_OPTIONS_LEN).then_some(repr)
        })
    }

    proptest! {
        #[test]
        fn emit_parse_round_trip(repr in arb_repr(b"levee"), v6 in any::<bool>()) {
            let pseudo = if v6 { v6_pseudo() } else { TO_SERVER };
            let mut buf = [0u8; 80];
            let len = repr.emit(&mut buf, &pseudo).unwrap();
            prop_assert_eq!(len, repr.buffer_len());
            prop_assert_eq!(len % 4, 1); // 5-byte payload after a 4-aligned header.
            let packet = Packet::new_checked(&buf[..len]).unwrap();
            prop_assert!(packet.verify_checksum(&pseudo));
            prop_assert_eq!(TcpRepr::parse(&packet, &pseudo).unwrap(), repr);
        }

        #[test]
        fn options_iterator_total_on_garbage(area in proptest::collection::vec(any::<u8>(), 0..=40)) {
            let mut steps = 0;
            let mut consumed = 0;
            for option in TcpOptions::new(&area) {
                steps += 1;
                prop_assert!(steps <= area.len());
                match option {
                    Ok(o) => consumed += o.buffer_len(),
                    Err(_) => break,
                }
            }
            prop_assert!(consumed <= area.len());
        }

        #[test]
        fn view_total_on_garbage(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(packet) = Packet::new_checked(&data[..]) {
                prop_assert!(packet.header_len() <= data.len());
                let _ = (packet.options().len(), packet.payload().len(), packet.options_iter().count());
                let _ = TcpRepr::parse(&packet, &TO_SERVER);
            }
        }
    }
}
