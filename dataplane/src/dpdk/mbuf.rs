//! Owned packet buffers. An [`Mbuf`] is one single-segment `rte_mbuf` that frees itself on drop.

use super::sys;
use std::ptr::NonNull;

/// An owned packet buffer from a DPDK mempool.
///
/// Invariant: the pointer is a valid mbuf that nobody else references (refcnt 1, not in any
/// queue), with a single segment (levee configures no scatter RX; multi-segment mbufs are
/// rejected at RX and freed).
#[repr(transparent)]
pub struct Mbuf(NonNull<sys::rte_mbuf>);

// SAFETY: an Mbuf is uniquely owned; DPDK mbufs may be freed or sent from any thread (mempool
// puts from non-EAL threads use the shared ring instead of a per-lcore cache).
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// Takes ownership of a raw mbuf.
    ///
    /// # Safety
    /// `m` must be a valid, single-segment mbuf that the caller owns exclusively.
    #[inline]
    pub(crate) unsafe fn from_raw(m: *mut sys::rte_mbuf) -> Mbuf {
        // SAFETY: the caller guarantees m is valid (hence non-null).
        Mbuf(unsafe { NonNull::new_unchecked(m) })
    }

    /// Gives up ownership (e.g. to a TX queue that accepted it).
    #[inline]
    pub(crate) fn into_raw(self) -> *mut sys::rte_mbuf {
        let p = self.0.as_ptr();
        std::mem::forget(self);
        p
    }

    #[inline]
    fn raw(&self) -> &sys::rte_mbuf {
        // SAFETY: we own a valid mbuf (type invariant).
        unsafe { self.0.as_ref() }
    }

    /// Packet length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.raw().data_len as usize
    }

    /// True for an empty packet.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The packet's bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        let m = self.raw();
        // SAFETY: buf_addr + data_off .. + data_len lies inside the mbuf's data room (DPDK
        // invariant for a single-segment mbuf) and we own the mbuf, so nobody writes it.
        unsafe {
            std::slice::from_raw_parts(
                (m.buf_addr as *const u8).add(m.data_off as usize),
                m.data_len as usize,
            )
        }
    }

    /// The packet's bytes, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `data`; &mut self guarantees exclusive access.
        unsafe {
            let m = self.0.as_mut();
            std::slice::from_raw_parts_mut(
                (m.buf_addr as *mut u8).add(m.data_off as usize),
                m.data_len as usize,
            )
        }
    }

    /// Replaces the packet's contents with `bytes`, growing or shrinking the data length.
    /// Returns false (and changes nothing) when `bytes` does not fit the buffer.
    pub fn set_data(&mut self, bytes: &[u8]) -> bool {
        // SAFETY: we own the mbuf; the new length is checked against the data room that
        // follows data_off before anything is written.
        unsafe {
            let m = self.0.as_mut();
            let room = m.buf_len as usize - m.data_off as usize;
            if bytes.len() > room {
                return false;
            }
            let dst = (m.buf_addr as *mut u8).add(m.data_off as usize);
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len());
            m.data_len = bytes.len() as u16;
            m.pkt_len = bytes.len() as u32;
        }
        true
    }

    /// The packet's bytes followed by the buffer's tailroom (everything from the data start to
    /// the end of the data room), writable. Pair with [`Mbuf::set_len`] after writing a frame
    /// longer than the current one.
    #[inline]
    pub fn room_mut(&mut self) -> &mut [u8] {
        // SAFETY: buf_addr + data_off .. buf_addr + buf_len is the mbuf's data room (DPDK
        // invariant, data_off <= buf_len); &mut self guarantees exclusive access.
        unsafe {
            let m = self.0.as_mut();
            let room = (m.buf_len as usize).saturating_sub(m.data_off as usize);
            std::slice::from_raw_parts_mut((m.buf_addr as *mut u8).add(m.data_off as usize), room)
        }
    }

    /// Sets the packet length (a frame written with [`Mbuf::room_mut`]); false, and nothing
    /// changed, when `len` exceeds the data room.
    pub fn set_len(&mut self, len: usize) -> bool {
        // SAFETY: we own the mbuf; the length is checked against the data room first.
        unsafe {
            let m = self.0.as_mut();
            let room = (m.buf_len as usize).saturating_sub(m.data_off as usize);
            if len > room {
                return false;
            }
            m.data_len = len as u16;
            m.pkt_len = len as u32;
        }
        true
    }

    /// The NIC's RSS hash, when the device computed one.
    #[inline]
    pub fn rss_hash(&self) -> Option<u32> {
        let m = self.raw();
        if m.ol_flags & sys::RTE_MBUF_F_RX_RSS_HASH as u64 != 0 {
            // SAFETY: the flag says the `rss` member of the hash union is the valid one.
            Some(unsafe { m.__bindgen_anon_2.hash.rss })
        } else {
            None
        }
    }

    /// Number of segments (levee handles single-segment packets only).
    #[inline]
    pub(crate) fn segments(&self) -> u16 {
        self.raw().nb_segs
    }

    /// Frees many mbufs with one call (`rte_pktmbuf_free_bulk`).
    pub fn free_bulk(mbufs: &mut Vec<Mbuf>) {
        if mbufs.is_empty() {
            return;
        }
        // SAFETY: Mbuf is repr(transparent) over a non-null *mut rte_mbuf, so the Vec's buffer
        // is an array of len valid owned mbuf pointers; we set the length to 0 before freeing so
        // no Mbuf destructor runs for them afterwards.
        unsafe {
            let n = mbufs.len();
            let ptr = mbufs.as_mut_ptr() as *mut *mut sys::rte_mbuf;
            mbufs.set_len(0);
            sys::rte_pktmbuf_free_bulk(ptr, n as u32);
        }
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf exclusively (type invariant); after this it is gone.
        unsafe { sys::rte_pktmbuf_free(self.0.as_ptr()) }
    }
}

impl std::fmt::Debug for Mbuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mbuf").field("len", &self.len()).finish()
    }
}
