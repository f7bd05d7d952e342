//! The device interface the worker is generic over (the ixy idea: a device is a small trait),
//! with the DPDK implementation and an in-memory one for tests and benchmarks.

use crate::dpdk::{Mbuf, Mempool, RxQueue, TxQueue};
use crossbeam_queue::ArrayQueue;
use std::sync::Arc;

/// A packet buffer the worker can read and rewrite.
pub trait PacketBuf: Send + 'static {
    /// The frame's bytes, from the Ethernet header on.
    fn data(&self) -> &[u8];
    /// The frame's bytes, writable.
    fn data_mut(&mut self) -> &mut [u8];
    /// Replaces the frame with `bytes` (a reply built in the same buffer); false, and nothing
    /// changed, when they do not fit.
    fn set_data(&mut self, bytes: &[u8]) -> bool;
    /// The frame's bytes followed by the buffer's tailroom, writable: a reply longer than the
    /// frame is written here, then [`PacketBuf::set_len`] sets its length.
    fn room_mut(&mut self) -> &mut [u8];
    /// Sets the frame's length (≤ `room_mut().len()`); false, and nothing changed, otherwise.
    fn set_len(&mut self, len: usize) -> bool;
    /// The device's RSS hash, if it computed one with levee's symmetric key.
    fn rss_hash(&self) -> Option<u32> {
        None
    }
    /// Frees every buffer in `bufs` (leaving it empty), in one call where the device can.
    fn free_bulk(bufs: &mut Vec<Self>)
    where
        Self: Sized,
    {
        bufs.clear();
    }
}

/// One worker's queue pair on one port.
pub trait PortIo {
    type Buf: PacketBuf;
    /// Receives up to `max` packets, appending them to `out`; returns how many.
    fn rx_burst(&mut self, out: &mut Vec<Self::Buf>, max: usize) -> usize;
    /// Offers all of `pkts`; the accepted ones are removed from the front, the rest stay.
    /// Returns how many were accepted.
    fn tx_burst(&mut self, pkts: &mut Vec<Self::Buf>) -> usize;
    /// A new buffer holding `bytes` (from this worker's pool), for packets the worker
    /// originates besides rewriting a received one (the SYN proxy's ACK to a server). None when
    /// the pool is empty.
    fn alloc(&mut self, bytes: &[u8]) -> Option<Self::Buf>;
}

impl PacketBuf for Mbuf {
    #[inline]
    fn data(&self) -> &[u8] {
        Mbuf::data(self)
    }
    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        Mbuf::data_mut(self)
    }
    #[inline]
    fn rss_hash(&self) -> Option<u32> {
        Mbuf::rss_hash(self)
    }
    fn set_data(&mut self, bytes: &[u8]) -> bool {
        Mbuf::set_data(self, bytes)
    }
    #[inline]
    fn room_mut(&mut self) -> &mut [u8] {
        Mbuf::room_mut(self)
    }
    #[inline]
    fn set_len(&mut self, len: usize) -> bool {
        Mbuf::set_len(self, len)
    }
    #[inline]
    fn free_bulk(bufs: &mut Vec<Self>) {
        Mbuf::free_bulk(bufs)
    }
}

/// A worker's RX and TX queue on one DPDK port, and the worker's mempool.
pub struct DpdkQueues {
    pub rx: RxQueue,
    pub tx: TxQueue,
    pub pool: Mempool,
}

impl PortIo for DpdkQueues {
    type Buf = Mbuf;
    #[inline]
    fn rx_burst(&mut self, out: &mut Vec<Mbuf>, max: usize) -> usize {
        self.rx.rx_burst(out, max)
    }
    #[inline]
    fn tx_burst(&mut self, pkts: &mut Vec<Mbuf>) -> usize {
        self.tx.tx_burst(pkts)
    }
    #[inline]
    fn alloc(&mut self, bytes: &[u8]) -> Option<Mbuf> {
        self.pool.alloc_with(bytes)
    }
}

/// A packet in memory (tests, benchmarks, the in-memory port).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemPacket(pub Vec<u8>);

impl PacketBuf for MemPacket {
    fn data(&self) -> &[u8] {
        &self.0
    }
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
    fn set_data(&mut self, bytes: &[u8]) -> bool {
        self.0.clear();
        self.0.extend_from_slice(bytes);
        true
    }
    fn room_mut(&mut self) -> &mut [u8] {
        // An mbuf's data room: 2048 bytes from the data start.
        let n = self.0.len().max(MEM_ROOM);
        self.0.resize(n, 0);
        &mut self.0
    }
    fn set_len(&mut self, len: usize) -> bool {
        if len > self.0.len().max(MEM_ROOM) {
            return false;
        }
        self.0.resize(len, 0);
        true
    }
}

/// Data room of an in-memory packet (as an mbuf's default 2048 bytes).
const MEM_ROOM: usize = 2048;

/// An in-memory port queue pair: bounded lock-free rings standing in for the wire. The test
/// side injects frames into `wire_in` (what the worker will receive) and collects what the
/// worker transmitted from `wire_out`. A full `wire_out` refuses packets, like a full TX ring.
pub struct MemPort {
    pub wire_in: Arc<ArrayQueue<MemPacket>>,
    pub wire_out: Arc<ArrayQueue<MemPacket>>,
}

impl MemPort {
    /// A port whose RX ring holds `rx_capacity` frames and whose TX ring holds `tx_capacity`.
    pub fn new(rx_capacity: usize, tx_capacity: usize) -> MemPort {
        MemPort {
            wire_in: Arc::new(ArrayQueue::new(rx_capacity)),
            wire_out: Arc::new(ArrayQueue::new(tx_capacity)),
        }
    }
}

impl PortIo for MemPort {
    type Buf = MemPacket;
    fn rx_burst(&mut self, out: &mut Vec<MemPacket>, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            match self.wire_in.pop() {
                Some(p) => {
                    out.push(p);
                    n += 1;
                }
                None => break,
            }
        }
        n
    }
    fn tx_burst(&mut self, pkts: &mut Vec<MemPacket>) -> usize {
        let mut sent = 0;
        while sent < pkts.len() {
            // Move the packet out (an empty Vec does not allocate); put it back if refused.
            let p = std::mem::replace(&mut pkts[sent], MemPacket(Vec::new()));
            match self.wire_out.push(p) {
                Ok(()) => sent += 1,
                Err(p) => {
                    pkts[sent] = p;
                    break;
                }
            }
        }
        pkts.drain(..sent);
        sent
    }
    fn alloc(&mut self, bytes: &[u8]) -> Option<MemPacket> {
        Some(MemPacket(bytes.to_vec()))
    }
}
