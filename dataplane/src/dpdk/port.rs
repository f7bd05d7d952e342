//! Ethernet ports: configuration (queues, symmetric RSS, promiscuous mode), per-queue owned
//! handles for RX and TX bursts, statistics and extended statistics.

use super::{sys, DpdkError, Eal, Mbuf, Mempool};
use std::ffi::{CStr, CString};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The symmetric Toeplitz key: 0x6d5a repeated. With it, hashing (src, dst, sport, dport) and
/// (dst, src, dport, sport) gives the same value, so both directions of a flow land on the
/// same queue (Woo & Park, "Scalable TCP Session Monitoring with Symmetric Receive-side
/// Scaling", 2012). 52 bytes covers every NIC's key size; it is cut to the device's size.
pub const SYMMETRIC_RSS_KEY: [u8; 52] = {
    let mut k = [0u8; 52];
    let mut i = 0;
    while i < 52 {
        k[i] = if i % 2 == 0 { 0x6d } else { 0x5a };
        i += 1;
    }
    k
};

// RTE_ETH_RSS_* are function-like macros (RTE_BIT64) that bindgen cannot evaluate; values from
// rte_ethdev.h (DPDK 22.11).
const RSS_IPV4: u64 = 1 << 2;
const RSS_FRAG_IPV4: u64 = 1 << 3;
const RSS_NONFRAG_IPV4_TCP: u64 = 1 << 4;
const RSS_NONFRAG_IPV4_UDP: u64 = 1 << 5;
const RSS_IPV6: u64 = 1 << 8;
const RSS_FRAG_IPV6: u64 = 1 << 9;
const RSS_NONFRAG_IPV6_TCP: u64 = 1 << 10;
const RSS_NONFRAG_IPV6_UDP: u64 = 1 << 11;
/// The hash types levee asks for: the 4-tuple for TCP/UDP, the address pair for the rest. The
/// software flow hash in `flow.rs` computes exactly these.
const RSS_WANTED: u64 = RSS_IPV4
    | RSS_FRAG_IPV4
    | RSS_NONFRAG_IPV4_TCP
    | RSS_NONFRAG_IPV4_UDP
    | RSS_IPV6
    | RSS_FRAG_IPV6
    | RSS_NONFRAG_IPV6_TCP
    | RSS_NONFRAG_IPV6_UDP;
const RETA_GROUP: usize = 64;

/// How to set a port up.
#[derive(Clone, Debug)]
pub struct PortSetup {
    /// RX queues (one per worker).
    pub rx_queues: u16,
    /// TX queues (one per worker).
    pub tx_queues: u16,
    /// RX descriptors per queue (adjusted to the device's limits).
    pub rx_desc: u16,
    /// TX descriptors per queue (adjusted to the device's limits).
    pub tx_desc: u16,
    /// Receive every frame (a bump in the wire must).
    pub promiscuous: bool,
    /// RETA: which queue each of the first `reta.len()` hash buckets goes to (repeated over the
    /// device's table). Empty: the device default.
    pub reta: Vec<u16>,
}

/// Link state as DPDK reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkStatus {
    pub up: bool,
    pub speed_mbps: u32,
    pub full_duplex: bool,
}

/// Basic port counters (`rte_eth_stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Dropped by the device because RX queues were full.
    pub rx_missed: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    /// RX failures because the mempool was empty.
    pub rx_nombuf: u64,
}

struct PortInner {
    id: u16,
    name: String,
    rx_queues: u16,
    tx_queues: u16,
    rx_taken: AtomicU64,
    tx_taken: AtomicU64,
    reta_size: u16,
    rss: bool,
    stopped: std::sync::atomic::AtomicBool,
    driver: String,
    _pools: Vec<Mempool>,
    _eal: Eal,
}

/// A configured and started Ethernet port. Stopped and closed when the port handle and all its
/// queue handles are gone.
#[derive(Clone)]
pub struct EthPort {
    inner: Arc<PortInner>,
}

/// The receive side of one queue of a port; exactly one exists per queue.
pub struct RxQueue {
    port: Arc<PortInner>,
    queue: u16,
}

/// The transmit side of one queue of a port; exactly one exists per queue.
pub struct TxQueue {
    port: Arc<PortInner>,
    queue: u16,
}

fn port_err(name: &str, call: &'static str, rc: i32) -> DpdkError {
    DpdkError::Port {
        port: name.to_owned(),
        call,
        reason: super::strerror(rc),
    }
}

/// The name of port `id`, if it exists.
pub(crate) fn port_name(id: u16) -> Option<String> {
    // SAFETY: rte_eth_dev_is_valid_port accepts any id.
    if unsafe { sys::rte_eth_dev_is_valid_port(id) } != 1 {
        return None;
    }
    let mut buf = [0 as std::ffi::c_char; sys::RTE_ETH_NAME_MAX_LEN as usize];
    // SAFETY: buf has RTE_ETH_NAME_MAX_LEN bytes as the call requires.
    if unsafe { sys::rte_eth_dev_get_name_by_port(id, buf.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: DPDK wrote a NUL-terminated name into buf.
    Some(
        unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// Names of every probed port, for error messages.
fn available_ports() -> Vec<String> {
    (0..sys::RTE_MAX_ETHPORTS as u16).filter_map(port_name).collect()
}

impl EthPort {
    /// The mempool RX queue `q` takes its buffers from (a worker allocates from it too).
    pub fn pool(&self, q: u16) -> Mempool {
        let pools = &self.inner._pools;
        pools.get(q as usize).unwrap_or(&pools[0]).clone()
    }

    /// Finds the port named `name` (a vdev name such as `net_ring0` or a PCI address), configures
    /// it with `setup`, gives RX queue *q* buffers from `pools[q]` (or `pools[0]` when only one
    /// pool is given), enables symmetric RSS where the device supports it, and starts it.
    pub fn open(eal: &Eal, name: &str, setup: &PortSetup, pools: &[Mempool]) -> Result<EthPort, DpdkError> {
        assert!(!pools.is_empty(), "EthPort::open needs at least one mempool");
        let cname = CString::new(name).map_err(|_| DpdkError::BadArgument(name.to_owned()))?;
        let mut id: u16 = 0;
        // SAFETY: cname is a valid C string, id a valid out-pointer.
        let rc = unsafe { sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
        if rc != 0 {
            return Err(DpdkError::NoSuchPort {
                name: name.to_owned(),
                available: available_ports(),
            });
        }

        let mut info = sys::rte_eth_dev_info::default();
        // SAFETY: id is a valid port; info is a valid out-struct.
        let rc = unsafe { sys::rte_eth_dev_info_get(id, &mut info) };
        if rc != 0 {
            return Err(port_err(name, "rte_eth_dev_info_get", rc));
        }
        let driver = if info.driver_name.is_null() {
            String::new()
        } else {
            // SAFETY: driver_name points to the driver's static NUL-terminated name.
            unsafe { CStr::from_ptr(info.driver_name) }
                .to_string_lossy()
                .into_owned()
        };
        if setup.rx_queues > info.max_rx_queues || setup.tx_queues > info.max_tx_queues {
            return Err(DpdkError::Port {
                port: name.to_owned(),
                call: "queue count check",
                reason: format!(
                    "{} RX / {} TX queues requested, device {driver} supports {} / {}",
                    setup.rx_queues, setup.tx_queues, info.max_rx_queues, info.max_tx_queues
                ),
            });
        }

        let mut conf = sys::rte_eth_conf::default();
        // Symmetric RSS, masked by what the device can hash. A device that cannot hash (most
        // vdevs) still works: the worker's software flow hash sends each flow to its owner.
        let rss_hf = RSS_WANTED & info.flow_type_rss_offloads;
        let mut key = SYMMETRIC_RSS_KEY;
        let rss = setup.rx_queues > 1 && rss_hf != 0;
        if rss {
            conf.rxmode.mq_mode = sys::rte_eth_rx_mq_mode_RTE_ETH_MQ_RX_RSS;
            let key_len = if info.hash_key_size == 0 {
                40
            } else {
                info.hash_key_size
            };
            conf.rx_adv_conf.rss_conf.rss_key = key.as_mut_ptr();
            conf.rx_adv_conf.rss_conf.rss_key_len = key_len.min(key.len() as u8);
            conf.rx_adv_conf.rss_conf.rss_hf = rss_hf;
        }
        // SAFETY: id valid, conf fully initialised; the key buffer outlives the call (DPDK
        // copies it).
        let rc = unsafe { sys::rte_eth_dev_configure(id, setup.rx_queues, setup.tx_queues, &conf) };
        if rc != 0 {
            return Err(port_err(name, "rte_eth_dev_configure", rc));
        }

        let (mut rx_desc, mut tx_desc) = (setup.rx_desc, setup.tx_desc);
        // SAFETY: id valid; the pointers are valid in/out values.
        let rc = unsafe { sys::rte_eth_dev_adjust_nb_rx_tx_desc(id, &mut rx_desc, &mut tx_desc) };
        if rc != 0 {
            return Err(port_err(name, "rte_eth_dev_adjust_nb_rx_tx_desc", rc));
        }
        // SAFETY: id valid.
        let socket = unsafe { sys::rte_eth_dev_socket_id(id) };
        let socket = if socket < 0 { 0 } else { socket as u32 };
        for q in 0..setup.rx_queues {
            let pool = pools.get(q as usize).unwrap_or(&pools[0]);
            // SAFETY: id valid, q < configured RX queues, pool valid for the EAL's life (and
            // kept alive by this port); NULL rx_conf means the device default.
            let rc = unsafe {
                sys::rte_eth_rx_queue_setup(id, q, rx_desc, socket, std::ptr::null(), pool.as_ptr())
            };
            if rc != 0 {
                return Err(port_err(name, "rte_eth_rx_queue_setup", rc));
            }
        }
        for q in 0..setup.tx_queues {
            // SAFETY: id valid, q < configured TX queues; NULL tx_conf means device default.
            let rc = unsafe { sys::rte_eth_tx_queue_setup(id, q, tx_desc, socket, std::ptr::null()) };
            if rc != 0 {
                return Err(port_err(name, "rte_eth_tx_queue_setup", rc));
            }
        }
        if rss && info.reta_size > 0 && !setup.reta.is_empty() {
            program_reta(id, name, info.reta_size, &setup.reta)?;
        }
        // SAFETY: id valid and configured.
        let rc = unsafe { sys::rte_eth_dev_start(id) };
        if rc != 0 {
            return Err(port_err(name, "rte_eth_dev_start", rc));
        }
        if setup.promiscuous {
            // Some vdevs (net_ring, net_null) have no MAC filter and answer ENOTSUP: they
            // already see every frame, so that is not an error.
            // SAFETY: id valid and started.
            let rc = unsafe { sys::rte_eth_promiscuous_enable(id) };
            if rc != 0 && rc != -(libc_enotsup()) {
                return Err(port_err(name, "rte_eth_promiscuous_enable", rc));
            }
        }
        Ok(EthPort {
            inner: Arc::new(PortInner {
                id,
                name: name.to_owned(),
                rx_queues: setup.rx_queues,
                tx_queues: setup.tx_queues,
                rx_taken: AtomicU64::new(0),
                tx_taken: AtomicU64::new(0),
                reta_size: info.reta_size,
                rss,
                stopped: std::sync::atomic::AtomicBool::new(false),
                driver,
                _pools: pools.to_vec(),
                _eal: eal.clone(),
            }),
        })
    }

    /// DPDK port id.
    pub fn id(&self) -> u16 {
        self.inner.id
    }

    /// The name it was opened by.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The driver serving it (e.g. `net_af_packet`).
    pub fn driver(&self) -> &str {
        &self.inner.driver
    }

    /// Whether the device hashes flows onto queues in hardware (symmetric RSS).
    pub fn hardware_rss(&self) -> bool {
        self.inner.rss
    }

    /// Size of the device's redirection table (0 when it has none).
    pub fn reta_size(&self) -> u16 {
        self.inner.reta_size
    }

    /// Takes the RX side of queue `q`; each queue can be taken once.
    pub fn rx_queue(&self, q: u16) -> Result<RxQueue, DpdkError> {
        take(&self.inner.rx_taken, q, self.inner.rx_queues).ok_or_else(|| DpdkError::QueueTaken {
            port: self.inner.name.clone(),
            what: "RX",
            queue: q,
            count: self.inner.rx_queues,
        })?;
        Ok(RxQueue {
            port: self.inner.clone(),
            queue: q,
        })
    }

    /// Takes the TX side of queue `q`; each queue can be taken once.
    pub fn tx_queue(&self, q: u16) -> Result<TxQueue, DpdkError> {
        take(&self.inner.tx_taken, q, self.inner.tx_queues).ok_or_else(|| DpdkError::QueueTaken {
            port: self.inner.name.clone(),
            what: "TX",
            queue: q,
            count: self.inner.tx_queues,
        })?;
        Ok(TxQueue {
            port: self.inner.clone(),
            queue: q,
        })
    }

    /// Link state, without waiting.
    pub fn link(&self) -> LinkStatus {
        let mut link = sys::rte_eth_link::default();
        // SAFETY: port valid; link is a valid out-struct.
        unsafe { sys::rte_eth_link_get_nowait(self.inner.id, &mut link) };
        LinkStatus {
            up: link.link_status() == 1,
            speed_mbps: link.link_speed,
            full_duplex: link.link_duplex() == 1,
        }
    }

    /// Basic counters.
    pub fn stats(&self) -> PortStats {
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: port valid; s is a valid out-struct. On failure s stays zeroed.
        unsafe { sys::rte_eth_stats_get(self.inner.id, &mut s) };
        PortStats {
            rx_packets: s.ipackets,
            tx_packets: s.opackets,
            rx_bytes: s.ibytes,
            tx_bytes: s.obytes,
            rx_missed: s.imissed,
            rx_errors: s.ierrors,
            tx_errors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        }
    }

    /// Extended counters, by the driver's names.
    pub fn xstats(&self) -> Vec<(String, u64)> {
        let id = self.inner.id;
        // SAFETY: a NULL array with size 0 asks for the count.
        let n = unsafe { sys::rte_eth_xstats_get_names(id, std::ptr::null_mut(), 0) };
        if n <= 0 {
            return Vec::new();
        }
        let mut names = vec![sys::rte_eth_xstat_name::default(); n as usize];
        let mut values = vec![sys::rte_eth_xstat::default(); n as usize];
        // SAFETY: both arrays have n elements as declared to DPDK.
        let got_names = unsafe { sys::rte_eth_xstats_get_names(id, names.as_mut_ptr(), n as u32) };
        // SAFETY: as above.
        let got_values = unsafe { sys::rte_eth_xstats_get(id, values.as_mut_ptr(), n as u32) };
        if got_names != n || got_values != n {
            return Vec::new();
        }
        values
            .iter()
            .filter_map(|v| {
                let name = names.get(v.id as usize)?;
                // SAFETY: DPDK NUL-terminates each name within its 64-byte array.
                let s = unsafe { CStr::from_ptr(name.name.as_ptr()) };
                Some((s.to_string_lossy().into_owned(), v.value))
            })
            .collect()
    }

    /// Stops the device (RX and TX halt; queued mbufs are released by the driver). Idempotent.
    pub fn stop(&self) {
        self.inner.stop();
    }
}

fn program_reta(id: u16, name: &str, reta_size: u16, table: &[u16]) -> Result<(), DpdkError> {
    let groups = (reta_size as usize).div_ceil(RETA_GROUP);
    let mut conf = vec![sys::rte_eth_rss_reta_entry64::default(); groups];
    for i in 0..reta_size as usize {
        let g = &mut conf[i / RETA_GROUP];
        g.mask |= 1 << (i % RETA_GROUP);
        g.reta[i % RETA_GROUP] = table[i % table.len()];
    }
    // SAFETY: conf has ceil(reta_size/64) groups as DPDK requires for reta_size entries.
    let rc = unsafe { sys::rte_eth_dev_rss_reta_update(id, conf.as_mut_ptr(), reta_size) };
    if rc != 0 {
        return Err(port_err(name, "rte_eth_dev_rss_reta_update", rc));
    }
    Ok(())
}

fn take(bits: &AtomicU64, q: u16, count: u16) -> Option<()> {
    if q >= count || q >= 64 {
        return None;
    }
    let bit = 1u64 << q;
    (bits.fetch_or(bit, Ordering::AcqRel) & bit == 0).then_some(())
}

const fn libc_enotsup() -> i32 {
    95 // ENOTSUP (== EOPNOTSUPP) on Linux
}

impl PortInner {
    fn stop(&self) {
        if !self.stopped.swap(true, Ordering::AcqRel) {
            // SAFETY: port valid; DPDK allows stopping a started port from the control thread
            // (workers must have stopped polling, which `Running::shutdown` ensures first).
            unsafe { sys::rte_eth_dev_stop(self.id) };
        }
    }
}

impl Drop for PortInner {
    fn drop(&mut self) {
        self.stop();
        // SAFETY: no queue handle is left (they hold this Arc), so no thread polls the port.
        unsafe { sys::rte_eth_dev_close(self.id) };
    }
}

impl RxQueue {
    /// Receives up to `max` packets (at most 64), appending them to `out`; returns how many.
    /// Multi-segment packets (never produced with levee's pool and MTU) are freed and not
    /// returned.
    #[inline]
    pub fn rx_burst(&mut self, out: &mut Vec<Mbuf>, max: usize) -> usize {
        // Not zeroed first (512 bytes per call, busy or idle): the driver writes the n entries
        // that are read.
        let mut raw = [std::mem::MaybeUninit::<*mut sys::rte_mbuf>::uninit(); 64];
        let max = max.min(raw.len());
        // SAFETY: raw has room for max pointers (MaybeUninit<*mut T> has the layout of *mut T);
        // we are the only user of this queue (handles are unique and not Sync).
        let n =
            unsafe { sys::rte_eth_rx_burst(self.port.id, self.queue, raw.as_mut_ptr().cast(), max as u16) }
                as usize;
        let before = out.len();
        for m in &raw[..n.min(max)] {
            // SAFETY: the driver wrote the first n entries and hands us ownership of those n
            // valid mbufs.
            let m = unsafe { Mbuf::from_raw(m.assume_init()) };
            if m.segments() == 1 {
                out.push(m);
            }
        }
        out.len() - before
    }

    /// The queue index.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// The port this queue belongs to.
    pub fn port_name(&self) -> &str {
        &self.port.name
    }
}

impl TxQueue {
    /// Offers every packet in `pkts` to the device. The ones it accepted are removed from the
    /// front of `pkts` (the device owns them now); the rest stay in `pkts`, in order, for the
    /// caller to retry or free. Returns how many were accepted.
    #[inline]
    pub fn tx_burst(&mut self, pkts: &mut Vec<Mbuf>) -> usize {
        if pkts.is_empty() {
            return 0;
        }
        let n = pkts.len().min(u16::MAX as usize);
        // SAFETY: Mbuf is repr(transparent) over *mut rte_mbuf, so the Vec's buffer is an array
        // of n owned mbuf pointers; we are the only user of this queue.
        let sent = unsafe {
            sys::rte_eth_tx_burst(
                self.port.id,
                self.queue,
                pkts.as_mut_ptr() as *mut *mut sys::rte_mbuf,
                n as u16,
            )
        } as usize;
        // The first `sent` now belong to the driver: forget them without freeing, and move the
        // rest to the front.
        for m in pkts.drain(..sent) {
            let _ = m.into_raw();
        }
        sent
    }

    /// The queue index.
    pub fn queue(&self) -> u16 {
        self.queue
    }
}
