//! Packet mempools (`rte_pktmbuf_pool_create`).

use super::{last_error, sys, DpdkError, Eal, Mbuf};
use std::ffi::CString;
use std::ptr::NonNull;

/// A pool of packet buffers. Pools live until EAL cleanup (DPDK mempools cannot be freed while
/// any mbuf of theirs might still be in a device ring, and ports keep references to them).
#[derive(Clone)]
pub struct Mempool {
    pool: NonNull<sys::rte_mempool>,
    size: u32,
    _eal: Eal,
}

// SAFETY: rte_mempool is a thread-safe object (lockless ring + per-lcore caches); the handle
// only allows operations DPDK documents as thread-safe (alloc, counts).
unsafe impl Send for Mempool {}
// SAFETY: as above.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Creates a packet mempool of `size` mbufs with a per-lcore cache of `cache` and the
    /// default data room (2048 bytes + headroom), on `socket` (-1 for any).
    pub fn create(eal: &Eal, name: &str, size: u32, cache: u32, socket: i32) -> Result<Mempool, DpdkError> {
        let err = |reason: String| DpdkError::Mempool {
            name: name.to_owned(),
            size,
            reason,
        };
        let cname = CString::new(name).map_err(|_| err("name contains a NUL byte".into()))?;
        // SAFETY: the EAL is initialised (we hold it); the name is a valid C string copied by
        // DPDK; RTE_MBUF_DEFAULT_BUF_SIZE is the standard data room.
        let p = unsafe {
            sys::rte_pktmbuf_pool_create(
                cname.as_ptr(),
                size,
                cache,
                0,
                sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16,
                socket,
            )
        };
        let pool = NonNull::new(p).ok_or_else(|| err(last_error()))?;
        Ok(Mempool {
            pool,
            size,
            _eal: eal.clone(),
        })
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::rte_mempool {
        self.pool.as_ptr()
    }

    /// Capacity in mbufs.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Mbufs currently allocated (in devices, in flight, or owned by levee).
    pub fn in_use(&self) -> u32 {
        // SAFETY: the pool is valid for the life of the EAL, which we keep alive.
        unsafe { sys::rte_mempool_in_use_count(self.pool.as_ptr()) }
    }

    /// Mbufs free in the pool (including per-lcore caches).
    pub fn available(&self) -> u32 {
        // SAFETY: as in `in_use`.
        unsafe { sys::rte_mempool_avail_count(self.pool.as_ptr()) }
    }

    /// Allocates one packet buffer with `bytes` as its contents; None when the pool is empty or
    /// the bytes do not fit.
    pub fn alloc_with(&self, bytes: &[u8]) -> Option<Mbuf> {
        // SAFETY: the pool is valid; a non-null result is a fresh single-segment mbuf we own.
        let m = unsafe { sys::rte_pktmbuf_alloc(self.pool.as_ptr()) };
        if m.is_null() {
            return None;
        }
        // SAFETY: m is a fresh mbuf owned by nobody else.
        let mut mbuf = unsafe { Mbuf::from_raw(m) };
        if mbuf.set_data(bytes) {
            Some(mbuf)
        } else {
            None
        }
    }
}
