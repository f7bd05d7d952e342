//! Mbuf rings (`rte_ring`) and ports built on them (`rte_eth_from_rings`): an in-memory wire
//! whose two ends are distinct, so a test can play the network on one side of a real DPDK
//! port while a worker polls the other.

use super::{last_error, sys, DpdkError, Eal, Mbuf};
use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::Arc;

struct RingInner {
    ring: NonNull<sys::rte_ring>,
    _eal: Eal,
}

// SAFETY: the ring is created multi-producer/multi-consumer, so enqueue and dequeue are safe
// from any number of threads at once.
unsafe impl Send for RingInner {}
// SAFETY: as above.
unsafe impl Sync for RingInner {}

impl Drop for RingInner {
    fn drop(&mut self) {
        // SAFETY: the last handle is gone (ports built on the ring hold a handle), so nobody
        // uses the ring; mbufs still in it are leaked to the pool's in-use count, which tests
        // check, rather than freed behind a device's back.
        unsafe { sys::rte_ring_free(self.ring.as_ptr()) }
    }
}

/// A ring of mbuf pointers, shared by clones.
#[derive(Clone)]
pub struct MbufRing {
    inner: Arc<RingInner>,
}

impl MbufRing {
    /// A multi-producer/multi-consumer ring with `size` slots (a power of two; `size - 1`
    /// usable).
    pub fn create(eal: &Eal, name: &str, size: u32) -> Result<MbufRing, DpdkError> {
        let err = |reason: String| DpdkError::Ring {
            name: name.to_owned(),
            reason,
        };
        let cname = CString::new(name).map_err(|_| err("name contains a NUL byte".into()))?;
        // SAFETY: the EAL is initialised; flags 0 = MP/MC; DPDK copies the name.
        let p = unsafe { sys::rte_ring_create(cname.as_ptr(), size, -1, 0) };
        let ring = NonNull::new(p).ok_or_else(|| err(last_error()))?;
        Ok(MbufRing {
            inner: Arc::new(RingInner {
                ring,
                _eal: eal.clone(),
            }),
        })
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::rte_ring {
        self.inner.ring.as_ptr()
    }

    /// Enqueues as many of `pkts` as fit; those are removed from the front of `pkts`.
    pub fn enqueue_burst(&self, pkts: &mut Vec<Mbuf>) -> usize {
        if pkts.is_empty() {
            return 0;
        }
        // SAFETY: Mbuf is repr(transparent) over *mut rte_mbuf, so the Vec's buffer is an array
        // of owned mbuf pointers (passed as void* objects); the ring is MP-safe.
        let n = unsafe {
            sys::rte_ring_enqueue_burst(
                self.as_ptr(),
                pkts.as_ptr() as *const *mut std::ffi::c_void,
                pkts.len() as u32,
                std::ptr::null_mut(),
            )
        } as usize;
        for m in pkts.drain(..n) {
            let _ = m.into_raw();
        }
        n
    }

    /// Dequeues up to `max` mbufs (at most 256 per call), appending them to `out`.
    pub fn dequeue_burst(&self, out: &mut Vec<Mbuf>, max: usize) -> usize {
        let mut raw = [std::ptr::null_mut::<std::ffi::c_void>(); 256];
        let max = max.min(raw.len());
        // SAFETY: raw has room for max pointers; the ring is MC-safe; every object in it is an
        // owned single-segment mbuf put there by enqueue_burst or a ring port's TX.
        let n = unsafe {
            sys::rte_ring_dequeue_burst(self.as_ptr(), raw.as_mut_ptr(), max as u32, std::ptr::null_mut())
        } as usize;
        for &p in &raw[..n] {
            // SAFETY: see above; ownership moves to the caller.
            out.push(unsafe { Mbuf::from_raw(p as *mut sys::rte_mbuf) });
        }
        n
    }

    /// Objects currently in the ring.
    pub fn len(&self) -> usize {
        // SAFETY: reads the ring's head/tail indices.
        unsafe { sys::rte_ring_count(self.as_ptr()) as usize }
    }

    /// True when the ring holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Creates an ethdev whose RX queue *q* dequeues from `rx[q]` and TX queue *q* enqueues to
/// `tx[q]` (the `net_ring` driver) and returns the name DPDK registered it under
/// (`net_ring_<name>`); open it with `EthPort::open` by that name. Keep the rings (clones)
/// alive as long as the port.
pub fn port_from_rings(name: &str, rx: &[MbufRing], tx: &[MbufRing]) -> Result<String, DpdkError> {
    let err = |reason: String| DpdkError::Ring {
        name: name.to_owned(),
        reason,
    };
    let cname = CString::new(name).map_err(|_| err("name contains a NUL byte".into()))?;
    let rxp: Vec<*mut sys::rte_ring> = rx.iter().map(MbufRing::as_ptr).collect();
    let txp: Vec<*mut sys::rte_ring> = tx.iter().map(MbufRing::as_ptr).collect();
    // SAFETY: the arrays hold valid ring pointers for the stated counts; DPDK copies the arrays
    // and the name; the caller keeps the rings alive while the port exists.
    let rc = unsafe {
        sys::rte_eth_from_rings(
            cname.as_ptr(),
            rxp.as_ptr(),
            rxp.len() as u32,
            txp.as_ptr(),
            txp.len() as u32,
            0,
        )
    };
    if rc < 0 {
        return Err(err(last_error()));
    }
    super::port::port_name(rc as u16).ok_or_else(|| err(format!("port {rc} has no name")))
}
