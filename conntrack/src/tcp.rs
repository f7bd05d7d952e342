//! TCP connection tracking: Linux's state machine and window tracking, re-implemented.
//!
//! Owns [`TcpState`] (the `tcp_conntracks` states), [`TcpTrack`] (the per-entry TCP memory:
//! Linux's `struct ip_ct_tcp`, packed into 56 bytes) and the pure functions that advance it for
//! one segment. Everything here mirrors `net/netfilter/nf_conntrack_proto_tcp.c` (Linux 6.x):
//! the transition table `tcp_conntracks[2][6][10]`, `tcp_new`, `nf_conntrack_tcp_packet`,
//! `tcp_in_window`, `tcp_options`, `tcp_sack`, `tcp_valid_flags`, `nf_tcp_handle_invalid` and
//! the `tcp_timeouts[]` selection. Comments name the kernel function each piece follows; the
//! code is written from the behaviour, not copied.
//!
//! No I/O, no clock, no allocation: the shard (`shard.rs`, on the worker thread that owns it)
//! extracts a [`Segment`] from the frame and calls [`TcpTrack::packet`] or [`TcpTrack::new_flow`].

use crate::timeout::Timeouts;

/// TCP conntrack states (`enum tcp_conntrack`), in the kernel's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(u8)]
pub enum TcpState {
    /// Initial state, before the first packet was applied.
    #[default]
    None = 0,
    /// SYN seen in the original direction.
    SynSent = 1,
    /// SYN-ACK seen.
    SynRecv = 2,
    /// ACK of the handshake seen.
    Established = 3,
    /// FIN seen.
    FinWait = 4,
    /// ACK of the first FIN seen.
    CloseWait = 5,
    /// FIN seen in both directions.
    LastAck = 6,
    /// Last ACK seen.
    TimeWait = 7,
    /// Closed by RST.
    Close = 8,
    /// SYN seen from the reply direction: simultaneous open.
    SynSent2 = 9,
}

impl TcpState {
    /// All states, indexed by their value.
    pub const ALL: [TcpState; 10] = [
        TcpState::None,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::Established,
        TcpState::FinWait,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::SynSent2,
    ];

    /// The name `conntrack -L` prints (`tcp_conntrack_names[]`).
    pub const fn name(self) -> &'static str {
        match self {
            TcpState::None => "NONE",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::Established => "ESTABLISHED",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::SynSent2 => "SYN_SENT2",
        }
    }

    /// Closing states, which `tcp_can_early_drop` lets the table evict.
    pub const fn is_closing(self) -> bool {
        matches!(
            self,
            TcpState::FinWait
                | TcpState::CloseWait
                | TcpState::LastAck
                | TcpState::TimeWait
                | TcpState::Close
        )
    }
}

/// Which of the six rows of `tcp_conntracks` a segment selects (`get_conntrack_index`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Index {
    Syn = 0,
    SynAck = 1,
    Fin = 2,
    Ack = 3,
    Rst = 4,
    None = 5,
}

impl Index {
    /// RST wins, then SYN (with or without ACK), then FIN, then ACK (`get_conntrack_index`).
    fn of(flags: u8) -> Index {
        if flags & RST != 0 {
            Index::Rst
        } else if flags & SYN != 0 {
            if flags & ACK != 0 {
                Index::SynAck
            } else {
                Index::Syn
            }
        } else if flags & FIN != 0 {
            Index::Fin
        } else if flags & ACK != 0 {
            Index::Ack
        } else {
            Index::None
        }
    }
}

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;
const URG: u8 = 0x20;
const ECE: u8 = 0x40;
const CWR: u8 = 0x80;

/// `tcp_valid_flags`: the flag combinations (PSH, ECE and CWR masked off) `tcp_error` accepts.
pub(crate) fn valid_flags(flags: u8) -> bool {
    let f = flags & !(ECE | CWR | PSH);
    matches!(
        f,
        x if x == SYN
            || x == SYN | URG
            || x == SYN | ACK
            || x == RST
            || x == RST | ACK
            || x == FIN | ACK
            || x == FIN | ACK | URG
            || x == ACK
            || x == ACK | URG
    )
}

/// The next state, or what to do with a packet the table does not move on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    To(TcpState),
    /// `sIG`: may be valid or not; let it pass without touching the state.
    Ignore,
    /// `sIV`: invalid.
    Invalid,
}

/// `tcp_conntracks[dir][index][state]` (Linux 6.x), states in the order
/// NONE, SYN_SENT, SYN_RECV, ESTABLISHED, FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSE,
/// SYN_SENT2.
fn transition(dir: usize, index: Index, state: TcpState) -> Next {
    use Next::{Ignore as IG, Invalid as IV};
    const NO: Next = Next::To(TcpState::None);
    const SS: Next = Next::To(TcpState::SynSent);
    const SR: Next = Next::To(TcpState::SynRecv);
    const ES: Next = Next::To(TcpState::Established);
    const FW: Next = Next::To(TcpState::FinWait);
    const CW: Next = Next::To(TcpState::CloseWait);
    const LA: Next = Next::To(TcpState::LastAck);
    const TW: Next = Next::To(TcpState::TimeWait);
    const CL: Next = Next::To(TcpState::Close);
    const S2: Next = Next::To(TcpState::SynSent2);
    let _ = NO;
    const TABLE: [[[Next; 10]; 6]; 2] = [
        // ORIGINAL
        [
            /* syn    */ [SS, SS, IG, IG, IG, IG, IG, SS, SS, S2],
            /* synack */ [IV, IV, SR, IV, IV, IV, IV, IV, IV, SR],
            /* fin    */ [IV, IV, FW, FW, LA, LA, LA, TW, CL, IV],
            /* ack    */ [ES, IV, ES, ES, CW, CW, TW, TW, CL, IV],
            /* rst    */ [IV, CL, CL, CL, CL, CL, CL, CL, CL, CL],
            /* none   */ [IV, IV, IV, IV, IV, IV, IV, IV, IV, IV],
        ],
        // REPLY
        [
            /* syn    */ [IV, S2, IV, IV, IV, IV, IV, SS, IV, S2],
            /* synack */ [IV, SR, IG, IG, IG, IG, IG, IG, IG, SR],
            /* fin    */ [IV, IV, FW, FW, LA, LA, LA, TW, CL, IV],
            /* ack    */ [IV, IG, SR, ES, CW, CW, TW, TW, CL, IG],
            /* rst    */ [IV, CL, CL, CL, CL, CL, CL, CL, CL, CL],
            /* none   */ [IV, IV, IV, IV, IV, IV, IV, IV, IV, IV],
        ],
    ];
    TABLE[dir][index as usize][state as usize]
}

// `ip_ct_tcp_state.flags` bits (include/uapi/linux/netfilter/nf_conntrack_tcp.h).
pub(crate) const F_WINDOW_SCALE: u8 = 0x01;
pub(crate) const F_SACK_PERM: u8 = 0x02;
pub(crate) const F_CLOSE_INIT: u8 = 0x04;
pub(crate) const F_BE_LIBERAL: u8 = 0x08;
pub(crate) const F_DATA_UNACKNOWLEDGED: u8 = 0x10;
pub(crate) const F_MAXACK_SET: u8 = 0x20;
// `last_flags` bits.
const F_EXP_CHALLENGE_ACK: u8 = 0x40;
const F_SIMULTANEOUS_OPEN: u8 = 0x80;

/// Largest window scale (`TCP_MAX_WSCALE`).
const MAX_WSCALE: u8 = 14;
/// `MAXACKWINCONST`.
const MAX_ACK_WIN_CONST: u32 = 66000;

/// `after(a, b)`: a is later than b in sequence space.
#[inline]
fn after(a: u32, b: u32) -> bool {
    (b.wrapping_sub(a) as i32) < 0
}

/// `before(a, b)`.
#[inline]
fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// What the tracker needs of one TCP segment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Segment<'a> {
    pub seq: u32,
    pub ack: u32,
    pub win: u16,
    pub flags: u8,
    /// Payload bytes (IP length minus the IP and TCP headers).
    pub payload_len: u32,
    /// The options area (header bytes after the fixed 20).
    pub options: &'a [u8],
}

impl Segment<'_> {
    fn has(&self, bit: u8) -> bool {
        self.flags & bit != 0
    }

    /// `segment_seq_plus_len`: sequence number after this segment; SYN and FIN count one each.
    fn end(&self) -> u32 {
        self.seq
            .wrapping_add(self.payload_len)
            .wrapping_add(u32::from(self.has(SYN)))
            .wrapping_add(u32::from(self.has(FIN)))
    }
}

/// Options of a SYN or SYN-ACK as `tcp_options` reads them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SynOptions {
    /// Window scale, capped at 14, when the option is present.
    pub wscale: Option<u8>,
    pub sack_perm: bool,
}

/// `tcp_options`: a lenient walk that stops at EOL, at a "silly" length and at a partial option.
/// `None` when the options area is empty (the kernel then leaves the state untouched).
fn parse_options(options: &[u8]) -> Option<SynOptions> {
    if options.is_empty() {
        return None;
    }
    let mut out = SynOptions::default();
    let mut at = 0;
    while at < options.len() {
        let kind = options[at];
        match kind {
            0 => break,
            1 => {
                at += 1;
                continue;
            }
            _ => {}
        }
        let left = options.len() - at;
        if left < 2 {
            break;
        }
        let size = usize::from(options[at + 1]);
        if size < 2 || size > left {
            break;
        }
        if kind == 4 && size == 2 {
            out.sack_perm = true;
        } else if kind == 3 && size == 3 {
            out.wscale = Some(options[at + 2].min(MAX_WSCALE));
        }
        at += size;
    }
    Some(out)
}

/// `tcp_sack`: the highest right edge of the SACK blocks, if later than `ack`.
fn highest_sack(options: &[u8], ack: u32) -> u32 {
    let mut sack = ack;
    // The kernel's fast path: NOP NOP TIMESTAMP alone carries no SACK.
    if options.len() == 12 && options[..4] == [1, 1, 8, 10] {
        return sack;
    }
    let mut at = 0;
    while at < options.len() {
        let kind = options[at];
        match kind {
            0 => break,
            1 => {
                at += 1;
                continue;
            }
            _ => {}
        }
        let left = options.len() - at;
        if left < 2 {
            break;
        }
        let size = usize::from(options[at + 1]);
        if size < 2 || size > left {
            break;
        }
        if kind == 5 && size >= 10 && (size - 2) % 8 == 0 {
            let mut block = at + 2;
            while block + 8 <= at + size {
                let b = &options[block + 4..block + 8];
                let right = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                if after(right, sack) {
                    sack = right;
                }
                block += 8;
            }
            break;
        }
        at += size;
    }
    sack
}

/// Linux's `struct ip_ct_tcp` in 56 bytes: per direction `td_end`, `td_maxend`, `td_maxwin`,
/// `td_maxack`, `td_scale` and flags, plus the last-packet memory used by retransmission
/// detection and by the "ignored packet" resynchronisation.
///
/// Indexing: `[0]` is the original direction, `[1]` the reply direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpTrack {
    td_end: [u32; 2],
    td_maxend: [u32; 2],
    td_maxwin: [u32; 2],
    td_maxack: [u32; 2],
    last_seq: u32,
    last_ack: u32,
    last_end: u32,
    last_win: u16,
    td_scale: [u8; 2],
    flags: [u8; 2],
    /// The conntrack state.
    pub(crate) state: TcpState,
    /// `last_index` in bits 0-2, `last_dir` in bit 7.
    last_dir_index: u8,
    /// `last_flags` (window scale, SACK-permitted, challenge ACK, simultaneous open) with
    /// `last_wscale` (0..=14) in bits 2-5.
    last_flags_wscale: u8,
    retrans: u8,
    /// Low 16 bits of the timer-wheel tick the entry is linked at (the shard's bookkeeping,
    /// kept here because only TCP lifetimes ever shrink on the fast path).
    pub(crate) wheel_tick: u16,
}

/// Knobs the TCP tracker reads (per shard, like the kernel's per-netns sysctls).
#[derive(Clone, Copy, Debug)]
pub(crate) struct TcpConfig {
    /// `nf_conntrack_tcp_be_liberal`.
    pub liberal: bool,
    /// `nf_conntrack_tcp_loose`.
    pub loose: bool,
    /// `nf_conntrack_tcp_max_retrans`.
    pub max_retrans: u8,
    /// `nf_conntrack_tcp_ignore_invalid_rst`.
    pub ignore_invalid_rst: bool,
}

/// Entry status bits the TCP tracker reads and sets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TcpStatus {
    pub seen_reply: bool,
    pub assured: bool,
}

/// Why `tcp_in_window` or the state table refused a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TcpInvalid {
    /// `tcp_error`: a flag combination outside `tcp_valid_flags`.
    BadFlags,
    /// `tcp_new`: this segment cannot open a connection (or pickup is disabled).
    CannotOpen,
    /// The state table says `sIV` for this segment in this state.
    State,
    /// `SEQ is over upper bound` (past the receiver's window).
    SeqOverUpperBound,
    /// `ACK is over upper bound` (acknowledges data not seen yet).
    AckOverUpperBound,
    /// An RST whose sequence number is before the peer's highest ACK (`invalid rst`).
    Rst,
}

/// What [`TcpTrack::packet`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TcpVerdict {
    /// In window: the state moved (or stayed). `timeout_ms` is the new lifetime unless the
    /// kernel keeps the old one (`None`, a retransmitted SYN); `kill` asks to delete the
    /// entry (an RST before any reply). `assured` is set when this packet made it ASSURED.
    Accept {
        old: TcpState,
        timeout_ms: Option<u32>,
        kill: bool,
        assured: bool,
    },
    /// `NF_ACCEPT` without touching the state (`sIG`, or an ignorable window failure).
    Ignore,
    /// `-NF_ACCEPT`: INVALID. `shrink_ms` is set when `nf_tcp_handle_invalid` shortens the
    /// lifetime of an assured entry.
    Invalid { why: TcpInvalid, shrink_ms: Option<u32> },
    /// A SYN reopening a closed connection: delete the entry and track the SYN afresh.
    Reopen,
}

/// Window-check outcome (`enum nf_ct_tcp_action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Window {
    Accept,
    Ignore,
    Invalid(TcpInvalid),
}

/// The two ends of a flow as the SYN proxy knows them after completing a handshake; see
/// [`crate::Shard::insert_tcp`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpEndpoint {
    /// Initial sequence number this end sent in its SYN (or SYN-ACK).
    pub isn: u32,
    /// The window it advertised, as on the wire (unscaled).
    pub window: u16,
    /// Its window-scale option, if it sent one.
    pub wscale: Option<u8>,
    /// Whether it sent SACK-permitted.
    pub sack_perm: bool,
}

impl TcpTrack {
    fn li(&self) -> u8 {
        self.last_dir_index & 0x07
    }

    fn set_li(&mut self, index: u8) {
        self.last_dir_index = (self.last_dir_index & 0x80) | (index & 0x07);
    }

    fn ld(&self) -> u8 {
        self.last_dir_index >> 7
    }

    fn set_ld(&mut self, dir: u8) {
        self.last_dir_index = (self.last_dir_index & 0x07) | ((dir & 1) << 7);
    }

    fn lws(&self) -> u8 {
        (self.last_flags_wscale >> 2) & 0x0f
    }

    fn set_lws(&mut self, wscale: u8) {
        self.last_flags_wscale = (self.last_flags_wscale & !0x3c) | ((wscale.min(MAX_WSCALE) & 0x0f) << 2);
    }

    fn lf(&self) -> u8 {
        self.last_flags_wscale & !0x3c
    }

    fn set_lf(&mut self, flags: u8) {
        self.last_flags_wscale = (self.last_flags_wscale & 0x3c) | (flags & !0x3c);
    }

    /// The conntrack state.
    pub fn state(&self) -> TcpState {
        self.state
    }

    /// `tcp_new` followed by `nf_conntrack_tcp_packet` on the still unconfirmed entry: the
    /// tracking state of a flow this segment opens, or why it cannot open one.
    pub(crate) fn new_flow(
        seg: &Segment<'_>,
        cfg: &TcpConfig,
        timeouts: &Timeouts,
    ) -> Result<(TcpTrack, u32), TcpInvalid> {
        if !valid_flags(seg.flags) {
            return Err(TcpInvalid::BadFlags);
        }
        let index = Index::of(seg.flags);
        let mut t = TcpTrack::default();
        match transition(0, index, TcpState::None) {
            Next::To(TcpState::SynSent) => {
                let end = seg.end();
                t.td_end[0] = end;
                t.td_maxwin[0] = u32::from(seg.win).max(1);
                t.td_maxend[0] = end;
                t.apply_options(0, seg.options);
            }
            Next::To(_) if cfg.loose => {
                // Mid-stream pickup: history is lost, trust the packet and be liberal.
                let end = seg.end();
                t.td_end[0] = end;
                t.td_maxwin[0] = u32::from(seg.win).max(1);
                t.td_maxend[0] = end.wrapping_add(t.td_maxwin[0]);
                t.flags = [F_SACK_PERM | F_BE_LIBERAL; 2];
            }
            _ => return Err(TcpInvalid::CannotOpen),
        }
        t.set_li(Index::None as u8);
        let mut status = TcpStatus::default();
        match t.packet(0, seg, &mut status, cfg, timeouts) {
            TcpVerdict::Accept {
                timeout_ms: Some(ms), ..
            } => Ok((t, ms)),
            TcpVerdict::Accept { timeout_ms: None, .. } => {
                Ok((t, timeouts.tcp(t.state).unwrap_or(timeouts.tcp_syn_sent)))
            }
            TcpVerdict::Invalid { why, .. } => Err(why),
            // A fresh entry cannot be ignored nor reopened; treat it like the kernel's
            // "invalid new" if it ever happened.
            TcpVerdict::Ignore | TcpVerdict::Reopen => Err(TcpInvalid::CannotOpen),
        }
    }

    /// An entry for a flow whose handshake the SYN proxy completed with the client: the
    /// client's SYN as seen by `tcp_new`, the SYN-ACK the client received as seen by
    /// `tcp_in_window` in the reply direction, and, for ESTABLISHED, the client's ACK.
    pub(crate) fn seeded(client: &TcpEndpoint, server: &TcpEndpoint, established: bool) -> TcpTrack {
        let mut t = TcpTrack::default();
        let end0 = client.isn.wrapping_add(1);
        t.td_end[0] = end0;
        t.td_maxend[0] = end0;
        t.td_maxwin[0] = u32::from(client.window).max(1);
        t.set_options(0, endpoint_options(client));
        let end1 = server.isn.wrapping_add(1);
        t.td_end[1] = end1;
        t.td_maxend[1] = end1;
        t.td_maxwin[1] = u32::from(server.window).max(1);
        t.set_options(1, endpoint_options(server));
        if !(t.flags[0] & F_WINDOW_SCALE != 0 && t.flags[1] & F_WINDOW_SCALE != 0) {
            t.td_scale = [0, 0];
        }
        // The SYN-ACK acknowledged the SYN and opened the client's window.
        t.td_maxend[0] = end0.wrapping_add(u32::from(server.window).max(1));
        t.flags[0] &= !F_DATA_UNACKNOWLEDGED;
        t.td_maxack[1] = end0;
        t.flags[1] |= F_MAXACK_SET;
        t.state = TcpState::SynRecv;
        t.set_li(Index::SynAck as u8);
        t.set_ld(1);
        if established {
            // The client's ACK of the SYN-ACK, with its window scaled as on any later segment.
            let win = u32::from(client.window) << t.td_scale[0];
            t.td_maxwin[0] = t.td_maxwin[0].max(win);
            t.td_maxack[0] = end1;
            t.flags[0] |= F_MAXACK_SET;
            let maxend = end1.wrapping_add(win);
            if after(maxend, t.td_maxend[1].wrapping_sub(1)) {
                t.td_maxend[1] = if win == 0 { maxend.wrapping_add(1) } else { maxend };
            }
            t.flags[1] &= !F_DATA_UNACKNOWLEDGED;
            t.state = TcpState::Established;
            t.set_li(Index::Ack as u8);
            t.set_ld(0);
        }
        t
    }

    fn set_options(&mut self, dir: usize, opts: SynOptions) {
        self.td_scale[dir] = 0;
        self.flags[dir] &= F_BE_LIBERAL;
        if opts.sack_perm {
            self.flags[dir] |= F_SACK_PERM;
        }
        if let Some(s) = opts.wscale {
            self.td_scale[dir] = s;
            self.flags[dir] |= F_WINDOW_SCALE;
        }
    }

    /// `tcp_options` applied to one direction; an empty options area changes nothing.
    fn apply_options(&mut self, dir: usize, options: &[u8]) {
        if let Some(opts) = parse_options(options) {
            self.set_options(dir, opts);
        }
    }

    /// `tcp_init_sender`: a SYN-ACK (or a SYN in the reply direction) starts this direction.
    fn init_sender(&mut self, s: usize, seg: &Segment<'_>, end: u32, win: u32, dir: usize) {
        self.td_end[s] = end;
        self.td_maxend[s] = end;
        self.td_maxwin[s] = win.max(1);
        self.apply_options(s, seg.options);
        let r = 1 - s;
        if dir == 1 && !(self.flags[s] & F_WINDOW_SCALE != 0 && self.flags[r] & F_WINDOW_SCALE != 0) {
            self.td_scale[s] = 0;
            self.td_scale[r] = 0;
        }
    }

    /// `nf_ct_tcp_state_reset`.
    fn reset_dir(&mut self, d: usize) {
        self.td_end[d] = 0;
        self.td_maxend[d] = 0;
        self.td_maxwin[d] = 0;
        self.td_maxack[d] = 0;
        self.td_scale[d] = 0;
        self.flags[d] &= F_BE_LIBERAL;
    }

    /// `nf_tcp_log_invalid`: a liberal sender (per flow or per shard) passes every window check.
    fn window_fail(&self, s: usize, cfg: &TcpConfig, ret: Window) -> Window {
        if cfg.liberal || self.flags[s] & F_BE_LIBERAL != 0 {
            Window::Accept
        } else {
            ret
        }
    }

    fn max_ack_window(&self, s: usize) -> u32 {
        self.td_maxwin[s].max(MAX_ACK_WIN_CONST)
    }

    /// `tcp_in_window`.
    fn in_window(&mut self, dir: usize, index: Index, seg: &Segment<'_>, cfg: &TcpConfig) -> Window {
        let (s, r) = (dir, 1 - dir);
        let mut seq = seg.seq;
        let mut ack = seg.ack;
        let mut sack = ack;
        let win_raw = seg.win;
        let mut win = u32::from(win_raw);
        let mut end = seg.end();

        if self.flags[r] & F_SACK_PERM != 0 {
            sack = highest_sack(seg.options, sack);
        }

        if self.td_maxwin[s] == 0 {
            if seg.has(SYN) {
                // SYN-ACK in reply to a SYN, or a SYN from the reply side (simultaneous open).
                self.init_sender(s, seg, end, win, dir);
                if !seg.has(ACK) {
                    return Window::Accept;
                }
            } else {
                // Mid-connection: use what the packet says.
                self.td_end[s] = end;
                let swin = win << self.td_scale[s];
                self.td_maxwin[s] = swin.max(1);
                self.td_maxend[s] = end.wrapping_add(self.td_maxwin[s]);
                if self.td_maxwin[r] == 0 {
                    self.td_end[r] = sack;
                    self.td_maxend[r] = sack;
                } else if sack == self.td_end[r].wrapping_add(1) {
                    // Likely a reply to a keepalive.
                    self.td_end[r] = self.td_end[r].wrapping_add(1);
                }
            }
        } else if seg.has(SYN)
            && after(end, self.td_end[s])
            && matches!(self.state, TcpState::SynSent | TcpState::SynRecv)
        {
            // RFC 793: a reinitialised TCP picks larger sequence numbers; re-init this side.
            self.init_sender(s, seg, end, win, dir);
            if dir == 1 && !seg.has(ACK) {
                return Window::Accept;
            }
        }

        if !seg.has(ACK) {
            ack = self.td_end[r];
            sack = ack;
        } else if seg.has(RST) && ack == 0 {
            // Broken stacks send RST+ACK with a zero ACK number.
            ack = self.td_end[r];
            sack = ack;
        }

        if seg.has(RST) && seq == 0 && self.state == TcpState::SynSent {
            // RST answering a SYN.
            seq = self.td_end[s];
            end = seq;
        }

        let seq_ok = before(seq, self.td_maxend[s].wrapping_add(1));
        if !seq_ok {
            let overshot = end.wrapping_sub(self.td_maxend[s]).wrapping_add(1);
            let ack_ok = after(
                sack,
                self.td_end[r]
                    .wrapping_sub(self.max_ack_window(s))
                    .wrapping_sub(1),
            );
            let in_recv_win = self.td_maxwin[r] != 0
                && after(
                    end,
                    self.td_end[s].wrapping_sub(self.td_maxwin[r]).wrapping_sub(1),
                );
            if in_recv_win
                && ack_ok
                && overshot <= self.td_maxwin[r]
                && before(sack, self.td_end[r].wrapping_add(1))
            {
                // A TCP sending a little more than the window allows: remember the data so
                // that its ACK does not fail check III later.
                self.td_end[s] = end;
                self.flags[s] |= F_DATA_UNACKNOWLEDGED;
                return self.window_fail(s, cfg, Window::Ignore);
            }
            return self.window_fail(s, cfg, Window::Invalid(TcpInvalid::SeqOverUpperBound));
        }

        if !before(sack, self.td_end[r].wrapping_add(1)) {
            return self.window_fail(s, cfg, Window::Invalid(TcpInvalid::AckOverUpperBound));
        }

        let in_recv_win = self.td_maxwin[r] == 0
            || after(
                end,
                self.td_end[s].wrapping_sub(self.td_maxwin[r]).wrapping_sub(1),
            );
        if !in_recv_win {
            // Already-ACKed data retransmitted.
            return self.window_fail(s, cfg, Window::Ignore);
        }
        if !after(
            sack,
            self.td_end[r]
                .wrapping_sub(self.max_ack_window(s))
                .wrapping_sub(1),
        ) {
            // Overly delayed ACK.
            return self.window_fail(s, cfg, Window::Ignore);
        }

        if !seg.has(SYN) {
            win <<= self.td_scale[s];
        }

        // Update the sender.
        let swin = win.wrapping_add(sack.wrapping_sub(ack));
        if self.td_maxwin[s] < swin {
            self.td_maxwin[s] = swin;
        }
        if after(end, self.td_end[s]) {
            self.td_end[s] = end;
            self.flags[s] |= F_DATA_UNACKNOWLEDGED;
        }
        if seg.has(ACK) {
            if self.flags[s] & F_MAXACK_SET == 0 {
                self.td_maxack[s] = ack;
                self.flags[s] |= F_MAXACK_SET;
            } else if after(ack, self.td_maxack[s]) {
                self.td_maxack[s] = ack;
            }
        }

        // Update the receiver.
        if self.td_maxwin[r] != 0 && after(end, self.td_maxend[s]) {
            self.td_maxwin[r] = self.td_maxwin[r].wrapping_add(end.wrapping_sub(self.td_maxend[s]));
        }
        if after(sack.wrapping_add(win), self.td_maxend[r].wrapping_sub(1)) {
            self.td_maxend[r] = sack.wrapping_add(win);
            if win == 0 {
                self.td_maxend[r] = self.td_maxend[r].wrapping_add(1);
            }
        }
        if ack == self.td_end[r] {
            self.flags[r] &= !F_DATA_UNACKNOWLEDGED;
        }

        // Retransmission detection.
        if index == Index::Ack {
            if usize::from(self.ld()) == dir
                && self.last_seq == seq
                && self.last_ack == ack
                && self.last_end == end
                && self.last_win == win_raw
            {
                self.retrans = self.retrans.saturating_add(1);
            } else {
                self.set_ld(dir as u8);
                self.last_seq = seq;
                self.last_ack = ack;
                self.last_end = end;
                self.last_win = win_raw;
                self.retrans = 0;
            }
        }
        Window::Accept
    }

    /// `nf_tcp_handle_invalid`: an out-of-window FIN or RST answering one from the other side
    /// shortens the lifetime of an assured entry to the "unacknowledged" timeout.
    fn handle_invalid(
        &mut self,
        dir: usize,
        index: Index,
        status: &TcpStatus,
        remaining_ms: u32,
        timeouts: &Timeouts,
    ) -> Option<u32> {
        if !status.assured || !matches!(index, Index::Rst | Index::Fin) {
            return None;
        }
        let last = self.li();
        if usize::from(self.ld()) != dir && (last == Index::Fin as u8 || last == Index::Rst as u8) {
            if remaining_ms < 120_000 {
                return None;
            }
            let unack = timeouts.tcp_unacknowledged;
            (remaining_ms > unack).then_some(unack)
        } else {
            self.set_li(index as u8);
            self.set_ld(dir as u8);
            None
        }
    }

    /// `nf_conntrack_tcp_established`.
    fn established(&self, status: &TcpStatus) -> bool {
        self.state == TcpState::Established && status.assured
    }

    /// `nf_conntrack_tcp_packet` for a segment in direction `dir` (0 original, 1 reply) of a
    /// tracked flow. `remaining_ms` is the entry's time left (for `nf_tcp_handle_invalid`).
    pub(crate) fn packet(
        &mut self,
        dir: usize,
        seg: &Segment<'_>,
        status: &mut TcpStatus,
        cfg: &TcpConfig,
        timeouts: &Timeouts,
    ) -> TcpVerdict {
        self.packet_with_remaining(dir, seg, status, cfg, timeouts, u32::MAX)
    }

    pub(crate) fn packet_with_remaining(
        &mut self,
        dir: usize,
        seg: &Segment<'_>,
        status: &mut TcpStatus,
        cfg: &TcpConfig,
        timeouts: &Timeouts,
        remaining_ms: u32,
    ) -> TcpVerdict {
        if !valid_flags(seg.flags) {
            return TcpVerdict::Invalid {
                why: TcpInvalid::BadFlags,
                shrink_ms: None,
            };
        }
        let old_state = self.state;
        let index = Index::of(seg.flags);
        let mut old = old_state;
        // Most segments: an ACK in ESTABLISHED, which the table keeps in ESTABLISHED in both
        // directions (`sES` in the `ack` rows of `tcp_conntracks`) and none of the special cases
        // below is about. Taken without the table load and the dispatch on its entry.
        let est_ack = index == Index::Ack && old_state == TcpState::Established;
        let mut new_state = if est_ack {
            Next::To(TcpState::Established)
        } else {
            transition(dir, index, old_state)
        };

        let mut skip_window = false;
        if !est_ack {
            match new_state {
                Next::To(TcpState::SynSent) if old_state >= TcpState::TimeWait => {
                    // RFC 1122 reopening from TIME_WAIT/CLOSE when this side or the other closed,
                    // or after an RST from this side: delete and look up again.
                    let closed = (self.flags[dir] | self.flags[1 - dir]) & F_CLOSE_INIT != 0;
                    let reset_here = usize::from(self.ld()) == dir && self.li() == Index::Rst as u8;
                    if closed || reset_here {
                        return TcpVerdict::Reopen;
                    }
                    return self.ignore(dir, index, seg, old_state);
                }
                Next::Ignore => {
                    if index == Index::SynAck
                        && self.li() == Index::Syn as u8
                        && usize::from(self.ld()) != dir
                        && seg.ack == self.last_end
                    {
                        // b) This SYN-ACK acknowledges a SYN we ignored: the ends are in sync and
                        // we are not. Resynchronise from the annotated SYN.
                        old = TcpState::SynSent;
                        new_state = Next::To(TcpState::SynRecv);
                        let ld = usize::from(self.ld());
                        self.td_end[ld] = self.last_end;
                        self.td_maxend[ld] = self.last_end;
                        self.td_maxwin[ld] = u32::from(self.last_win).max(1);
                        self.td_scale[ld] = self.lws();
                        self.set_lf(self.lf() & !F_EXP_CHALLENGE_ACK);
                        self.flags[ld] = self.lf();
                        self.reset_dir(dir);
                    } else {
                        return self.ignore(dir, index, seg, old_state);
                    }
                }
                Next::Invalid => {
                    return TcpVerdict::Invalid {
                        why: TcpInvalid::State,
                        shrink_ms: None,
                    };
                }
                Next::To(TcpState::TimeWait) => {
                    // RFC 5961 challenge ACK answering a SYN in LAST_ACK: not the last ACK.
                    if old_state == TcpState::LastAck
                        && index == Index::Ack
                        && usize::from(self.ld()) != dir
                        && self.li() == Index::Syn as u8
                        && self.lf() & F_EXP_CHALLENGE_ACK != 0
                    {
                        self.set_lf(self.lf() & !F_EXP_CHALLENGE_ACK);
                        return TcpVerdict::Ignore;
                    }
                }
                Next::To(TcpState::SynSent2) => {
                    // The table alone cannot finish a simultaneous open; remember it.
                    self.set_lf(self.lf() | F_SIMULTANEOUS_OPEN);
                }
                Next::To(TcpState::SynRecv) => {
                    if dir == 1 && index == Index::Ack && self.lf() & F_SIMULTANEOUS_OPEN != 0 {
                        new_state = Next::To(TcpState::Established);
                    }
                }
                Next::To(TcpState::Close) if index == Index::Rst => {
                    match self.rst_in_close(dir, seg, status, cfg) {
                        RstCheck::Invalid => {
                            return TcpVerdict::Invalid {
                                why: TcpInvalid::Rst,
                                shrink_ms: None,
                            }
                        }
                        RstCheck::KeepState => new_state = Next::To(old_state),
                        RstCheck::SkipWindow { keep_state } => {
                            skip_window = true;
                            if keep_state {
                                new_state = Next::To(old_state);
                            }
                        }
                        RstCheck::Check => {}
                    }
                }
                Next::To(_) => {}
            }
        }
        let Next::To(new_state) = new_state else {
            unreachable!("ignore and invalid returned above");
        };

        if !skip_window {
            match self.in_window(dir, index, seg, cfg) {
                Window::Accept => {}
                Window::Ignore => return TcpVerdict::Ignore,
                Window::Invalid(why) => {
                    let shrink_ms = self.handle_invalid(dir, index, status, remaining_ms, timeouts);
                    return TcpVerdict::Invalid { why, shrink_ms };
                }
            }
        }

        // From here on the packet is in window.
        self.set_li(index as u8);
        self.set_ld(dir as u8);
        self.state = new_state;
        if old != new_state && new_state == TcpState::FinWait {
            self.flags[dir] |= F_CLOSE_INIT;
        }

        let state_timeout = timeouts.tcp(new_state).unwrap_or(timeouts.tcp_syn_sent);
        let mut timeout = if self.retrans >= cfg.max_retrans && state_timeout > timeouts.tcp_retrans {
            timeouts.tcp_retrans
        } else if index == Index::Rst {
            timeouts.tcp_close
        } else if (self.flags[0] | self.flags[1]) & F_DATA_UNACKNOWLEDGED != 0
            && state_timeout > timeouts.tcp_unacknowledged
        {
            timeouts.tcp_unacknowledged
        } else if self.last_win == 0 && state_timeout > timeouts.tcp_retrans {
            timeouts.tcp_retrans
        } else {
            state_timeout
        };

        let mut assured = false;
        if !status.seen_reply {
            if seg.has(RST) {
                // Only answer was an RST: no connection, delete the entry at once.
                return TcpVerdict::Accept {
                    old,
                    timeout_ms: Some(timeout),
                    kill: true,
                    assured: false,
                };
            }
            if index == Index::Syn && old == TcpState::SynSent {
                // Retransmitted SYN: do not renew the timeout.
                return TcpVerdict::Accept {
                    old,
                    timeout_ms: None,
                    kill: false,
                    assured: false,
                };
            }
            if new_state == TcpState::Established && timeout > timeouts.tcp_unacknowledged {
                // Picked up mid-stream without a reply yet.
                timeout = timeouts.tcp_unacknowledged;
            }
        } else if !status.assured
            && matches!(old, TcpState::SynRecv | TcpState::Established)
            && new_state == TcpState::Established
        {
            status.assured = true;
            assured = true;
        }
        TcpVerdict::Accept {
            old,
            timeout_ms: Some(timeout),
            kill: false,
            assured,
        }
    }

    /// The `sIG` path of `nf_conntrack_tcp_packet`: annotate the packet for a later
    /// resynchronisation and let it pass unchanged.
    fn ignore(&mut self, dir: usize, index: Index, seg: &Segment<'_>, old_state: TcpState) -> TcpVerdict {
        self.set_li(index as u8);
        self.set_ld(dir as u8);
        self.last_seq = seg.seq;
        self.last_end = seg.end();
        self.last_win = seg.win;
        if index == Index::Syn && dir == 0 {
            // a) A SYN in the original direction: keep its options for the SYN-ACK that may
            // follow; in LAST_ACK a challenge ACK may answer it.
            self.set_lf(0);
            self.set_lws(0);
            if let Some(opts) = parse_options(seg.options) {
                if let Some(s) = opts.wscale {
                    self.set_lf(self.lf() | F_WINDOW_SCALE);
                    self.set_lws(s);
                }
                if opts.sack_perm {
                    self.set_lf(self.lf() | F_SACK_PERM);
                }
            }
            if old_state == TcpState::LastAck {
                self.set_lf(self.lf() | F_EXP_CHALLENGE_ACK);
            }
        }
        if old_state == TcpState::SynSent && index == Index::Ack && dir == 1 {
            // Possibly a challenge ACK answering the SYN.
            self.last_ack = seg.ack;
        }
        TcpVerdict::Ignore
    }

    /// The checks `nf_conntrack_tcp_packet` makes on an RST that would move to CLOSE. In the
    /// kernel each `break` leaves the switch and goes straight to `tcp_in_window`.
    fn rst_in_close(&self, dir: usize, seg: &Segment<'_>, status: &TcpStatus, cfg: &TcpConfig) -> RstCheck {
        if self.state.is_closing() {
            // Closing: the tuple may be reused already; skip validation.
            return RstCheck::SkipWindow { keep_state: false };
        }
        let r = 1 - dir;
        let mut keep_state = false;
        if self.flags[r] & F_MAXACK_SET != 0 && self.li() != Index::Syn as u8 {
            let seq = seg.seq;
            if seq == 0 && !self.established(status) {
                return RstCheck::Check;
            }
            if before(seq, self.td_maxack[r]) && !cfg.ignore_invalid_rst {
                return RstCheck::Invalid;
            }
            if !self.established(status) || seq == self.td_maxack[r] {
                return RstCheck::Check;
            }
            // An RST closing a train of data from this side.
            if self.li() == Index::Ack as u8 && usize::from(self.ld()) == dir && seq == self.last_end {
                return RstCheck::Check;
            }
            // Sequence number not exact: keep the state to allow a challenge ACK.
            keep_state = true;
        }
        if ((status.seen_reply && self.li() == Index::Syn as u8)
            || (!status.assured && self.li() == Index::Ack as u8))
            && seg.ack == self.last_end
        {
            // RST answering a SYN or ACK we let through while out of sync.
            return RstCheck::SkipWindow { keep_state };
        }
        if self.state == TcpState::SynSent
            && self.li() == Index::Ack as u8
            && self.ld() == 1
            && seg.seq == self.last_ack
        {
            // RST answering a challenge ACK we let through.
            return RstCheck::SkipWindow { keep_state };
        }
        if keep_state {
            RstCheck::KeepState
        } else {
            RstCheck::Check
        }
    }
}

/// Outcome of the RST checks before the window check.
enum RstCheck {
    Invalid,
    KeepState,
    SkipWindow { keep_state: bool },
    Check,
}

fn endpoint_options(e: &TcpEndpoint) -> SynOptions {
    SynOptions {
        wscale: e.wscale.map(|s| s.min(MAX_WSCALE)),
        sack_perm: e.sack_perm,
    }
}

/// Reads the [`Segment`] of a TCP header whose fixed part and options are present
/// (`l4` is the transport part of the IP packet, Ethernet padding excluded).
#[inline]
pub(crate) fn segment(l4: &[u8]) -> Option<Segment<'_>> {
    if l4.len() < 20 {
        return None;
    }
    let header_len = usize::from(l4[12] >> 4) * 4;
    if header_len < 20 || header_len > l4.len() {
        return None;
    }
    Some(Segment {
        seq: u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]),
        ack: u32::from_be_bytes([l4[8], l4[9], l4[10], l4[11]]),
        win: u16::from_be_bytes([l4[14], l4[15]]),
        flags: l4[13],
        payload_len: (l4.len() - header_len) as u32,
        options: &l4[20..header_len],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn track_is_56_bytes() {
        assert_eq!(core::mem::size_of::<TcpTrack>(), 56);
    }

    #[test]
    fn valid_flag_table_matches_tcp_valid_flags() {
        // tcp_valid_flags[] in nf_conntrack_proto_tcp.c, PSH/ECE/CWR always allowed.
        let valid = [
            SYN,
            SYN | URG,
            SYN | ACK,
            RST,
            RST | ACK,
            FIN | ACK,
            FIN | ACK | URG,
            ACK,
            ACK | URG,
        ];
        for f in 0..=255u8 {
            let base = f & !(PSH | ECE | CWR);
            assert_eq!(valid_flags(f), valid.contains(&base), "flags {f:#04x}");
        }
    }

    #[test]
    fn options_walk_is_lenient_like_tcp_options() {
        // MSS, NOP, WS 9 (capped at 14 when larger), SACK-permitted.
        let o = [2, 4, 5, 0xb4, 1, 3, 3, 9, 4, 2];
        assert_eq!(
            parse_options(&o),
            Some(SynOptions {
                wscale: Some(9),
                sack_perm: true
            })
        );
        assert_eq!(parse_options(&[3, 3, 200]).unwrap().wscale, Some(14));
        // EOL stops the walk; a partial option is not read.
        assert_eq!(parse_options(&[0, 3, 3, 7]).unwrap().wscale, None);
        assert_eq!(parse_options(&[1, 3, 3]).unwrap().wscale, None);
        // A silly length stops the walk.
        assert_eq!(parse_options(&[8, 1, 3, 3, 7]).unwrap().wscale, None);
        assert_eq!(parse_options(&[]), None);
    }

    #[test]
    fn sack_right_edge_like_tcp_sack() {
        let mut o = vec![1, 1, 5, 18];
        o.extend_from_slice(&100u32.to_be_bytes());
        o.extend_from_slice(&200u32.to_be_bytes());
        o.extend_from_slice(&300u32.to_be_bytes());
        o.extend_from_slice(&400u32.to_be_bytes());
        assert_eq!(highest_sack(&o, 150), 400);
        assert_eq!(highest_sack(&o, 500), 500);
        // Timestamps alone: the fast path returns the ACK.
        assert_eq!(highest_sack(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2], 7), 7);
    }

    #[test]
    fn transition_table_spot_checks() {
        use TcpState::*;
        // tcp_conntracks: ORIGINAL syn in TIME_WAIT reopens, REPLY syn in SYN_SENT is sS2.
        // The premise of `packet_with_remaining`'s shortcut: an ACK keeps ESTABLISHED both ways.
        assert_eq!(transition(0, Index::Ack, Established), Next::To(Established));
        assert_eq!(transition(1, Index::Ack, Established), Next::To(Established));
        assert_eq!(transition(0, Index::Syn, TimeWait), Next::To(SynSent));
        assert_eq!(transition(1, Index::Syn, SynSent), Next::To(SynSent2));
        assert_eq!(transition(1, Index::Syn, TimeWait), Next::To(SynSent));
        assert_eq!(transition(0, Index::Ack, SynSent), Next::Invalid);
        assert_eq!(transition(1, Index::Ack, SynSent), Next::Ignore);
        assert_eq!(transition(0, Index::SynAck, SynSent2), Next::To(SynRecv));
        assert_eq!(transition(1, Index::Rst, None), Next::Invalid);
        assert_eq!(transition(0, Index::None, Established), Next::Invalid);
    }
}
