//! The dataplane on a real DPDK EAL with in-memory devices (`net_ring` ports built on rings the
//! test holds the far ends of, and `net_null`): bursts forwarded, hand-off between workers with
//! real mbufs, TX refusal handed back, and every mbuf returned to its pool.
//!
//! One EAL per process (DPDK's rule): every test shares it through `eal()`; each test uses its
//! own ports and its own mempool, so tests may run in parallel threads.

use levee_dataplane::dpdk::{
    self, port_from_rings, DpdkError, Eal, EthPort, Mbuf, MbufRing, Mempool, PortSetup,
};
use levee_dataplane::flow::{flow_hash, FlowKey, Steering};
use levee_dataplane::io::DpdkQueues;
use levee_dataplane::{DropReason, HandoffMesh, Side, Worker, WorkerConfig};
use std::sync::OnceLock;

/// `--vdev net_ringN` ports are loopbacks: what queue q transmits, queue q receives (one
/// 1024-slot ring per queue, 1023 usable).
const RING_SLOTS: usize = 1023;

/// The far ends of a ring-backed port pair, per queue: what the test puts on the wire towards
/// each port (`*_in`) and what each port transmitted (`*_out`).
struct Wire {
    outside_in: MbufRing,
    outside_out: MbufRing,
    inside_in: MbufRing,
    inside_out: MbufRing,
}

/// Two ports, `net_ring_<tag>_out` and `net_ring_<tag>_in`, each with `queues` queue pairs backed by rings of
/// `slots` slots that the returned wires reach.
fn wired_ports(tag: &str, queues: u16, slots: u32, pool: &Mempool) -> (EthPort, EthPort, Vec<Wire>) {
    let ring = |n: String| MbufRing::create(eal(), &n, slots).unwrap();
    let wires: Vec<Wire> = (0..queues)
        .map(|q| Wire {
            outside_in: ring(format!("{tag}_oi{q}")),
            outside_out: ring(format!("{tag}_oo{q}")),
            inside_in: ring(format!("{tag}_ii{q}")),
            inside_out: ring(format!("{tag}_io{q}")),
        })
        .collect();
    let pick = |f: fn(&Wire) -> &MbufRing| wires.iter().map(|w| f(w).clone()).collect::<Vec<_>>();
    let out_name = port_from_rings(
        &format!("{tag}_out"),
        &pick(|w| &w.outside_in),
        &pick(|w| &w.outside_out),
    )
    .unwrap();
    let in_name = port_from_rings(
        &format!("{tag}_in"),
        &pick(|w| &w.inside_in),
        &pick(|w| &w.inside_out),
    )
    .unwrap();
    let outside = EthPort::open(eal(), &out_name, &setup(queues), std::slice::from_ref(pool)).unwrap();
    let inside = EthPort::open(eal(), &in_name, &setup(queues), std::slice::from_ref(pool)).unwrap();
    (outside, inside, wires)
}

fn take_all(ring: &MbufRing) -> Vec<Mbuf> {
    let mut out = Vec::new();
    while ring.dequeue_burst(&mut out, 256) > 0 {}
    out
}

fn eal() -> &'static Eal {
    static EAL: OnceLock<Eal> = OnceLock::new();
    EAL.get_or_init(|| {
        let prefix = format!("levee-test-{}", std::process::id());
        let mut args: Vec<String> = [
            "--no-huge",
            "-m",
            "512",
            "--no-pci",
            "-l",
            "0,1",
            "--log-level",
            "lib.eal:warning",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(["--file-prefix".to_string(), prefix]);
        for i in 0..2 {
            args.extend(["--vdev".to_string(), format!("net_ring{i}")]);
        }
        args.extend([
            "--vdev".to_string(),
            "net_null0".to_string(),
            "--vdev".to_string(),
            "net_null1".to_string(),
        ]);
        Eal::init(&args).expect("EAL init with --no-huge and vdevs")
    })
}

fn pool(name: &str, size: u32) -> Mempool {
    Mempool::create(eal(), name, size, 0, -1).expect("mempool")
}

fn setup(queues: u16) -> PortSetup {
    PortSetup {
        rx_queues: queues,
        tx_queues: queues,
        rx_desc: 512,
        tx_desc: 512,
        promiscuous: true,
        reta: Vec::new(),
    }
}

/// An Ethernet + IPv4 + TCP SYN frame (60 bytes, padded like a real minimum-size frame).
fn tcp_frame(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, tag: u8) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 2]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[4] = tag; // identification: lets tests tell frames apart
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let sum = levee_packet::checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&sum.to_be_bytes());
    let tcp = &mut f[34..54];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02;
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    f
}

fn mbufs(pool: &Mempool, frames: &[Vec<u8>]) -> Vec<Mbuf> {
    frames
        .iter()
        .map(|f| pool.alloc_with(f).expect("pool has room"))
        .collect()
}

fn worker_on(
    outside: &EthPort,
    inside: &EthPort,
    q: u16,
    steering: Steering,
    mesh: &std::sync::Arc<HandoffMesh<Mbuf>>,
    cfg: WorkerConfig,
) -> Worker<DpdkQueues> {
    let o = DpdkQueues {
        rx: outside.rx_queue(q).unwrap(),
        tx: outside.tx_queue(q).unwrap(),
        pool: outside.pool(q),
    };
    let i = DpdkQueues {
        rx: inside.rx_queue(q).unwrap(),
        tx: inside.tx_queue(q).unwrap(),
        pool: inside.pool(q),
    };
    Worker::new(q, o, i, cfg, steering, mesh.clone())
}

#[test]
fn bursts_are_forwarded_unchanged_and_every_mbuf_returns() {
    let pool = pool("t_fwd", 4095);
    let (outside, inside, wires) = wired_ports("fwd", 1, 1024, &pool);
    let wire = &wires[0];
    let mesh = HandoffMesh::new(1, 64);
    let mut w = worker_on(
        &outside,
        &inside,
        0,
        Steering::new(1, 128),
        &mesh,
        WorkerConfig::default(),
    );

    let frames: Vec<Vec<u8>> = (0..200u32)
        .map(|i| tcp_frame([198, 18, 0, 1], [198, 18, 0, 2], 1000 + i as u16, 80, i as u8))
        .collect();
    let mut inject = mbufs(&pool, &frames);
    assert_eq!(wire.outside_in.enqueue_burst(&mut inject), 200);
    assert!(inject.is_empty());
    assert_eq!(pool.in_use(), 200);

    let mut now = 0;
    while w.poll_once(now) > 0 {
        now += 1;
    }
    w.poll_once(now + 1_000_000); // the drain timer flushes the tail
    let got = take_all(&wire.inside_out);
    assert_eq!(got.len(), 200);
    for (m, f) in got.iter().zip(&frames) {
        assert_eq!(m.data(), &f[..], "frame changed or reordered in flight");
    }
    assert!(
        wire.outside_out.is_empty(),
        "nothing goes back out of the port it came in on"
    );
    let t = w.stats().totals();
    assert_eq!(t.rx_packets, [200, 0]);
    assert_eq!(t.tx_packets, [0, 200]);
    assert_eq!(t.rx_bytes[0], 200 * 60);
    assert_eq!(t.tx_bytes[1], 200 * 60);
    assert_eq!(t.drops, [0; DropReason::ALL.len()]);

    // The devices counted the same traffic.
    assert_eq!(outside.stats().rx_packets, 200);
    assert_eq!(inside.stats().tx_packets, 200);
    assert!(!outside.xstats().is_empty(), "net_ring exposes xstats");

    // And the other direction.
    let replies: Vec<Vec<u8>> = (0..50u32)
        .map(|i| tcp_frame([198, 18, 0, 2], [198, 18, 0, 1], 80, 1000 + i as u16, i as u8))
        .collect();
    let mut inject = mbufs(&pool, &replies);
    wire.inside_in.enqueue_burst(&mut inject);
    w.poll_once(now + 2_000_000);
    w.poll_once(now + 3_000_000);
    assert_eq!(take_all(&wire.outside_out).len(), 50);

    drop(got);
    w.finish(now);
    assert_eq!(pool.in_use(), 0, "an mbuf leaked");
}

#[test]
fn tx_queue_hands_back_what_it_refuses() {
    let pool = pool("t_txfull", 2047);
    let port = EthPort::open(eal(), "net_ring0", &setup(1), std::slice::from_ref(&pool)).unwrap();
    let mut tx = port.tx_queue(0).unwrap();
    let mut rx = port.rx_queue(0).unwrap();
    let frames: Vec<Vec<u8>> = (0..1100u32)
        .map(|i| tcp_frame([198, 18, 0, 1], [198, 18, 0, 2], i as u16, 80, i as u8))
        .collect();
    let mut batch = mbufs(&pool, &frames);
    let sent = tx.tx_burst(&mut batch);
    assert_eq!(sent, RING_SLOTS);
    assert_eq!(batch.len(), 1100 - RING_SLOTS, "refused mbufs come back");
    // What came back is the tail, in order.
    for (m, f) in batch.iter().zip(&frames[RING_SLOTS..]) {
        assert_eq!(m.data(), &f[..]);
    }
    Mbuf::free_bulk(&mut batch);
    assert!(batch.is_empty());
    assert_eq!(pool.in_use() as usize, RING_SLOTS);
    let mut got = Vec::new();
    while rx.rx_burst(&mut got, 64) > 0 {}
    assert_eq!(got.len(), RING_SLOTS);
    drop(got);
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn worker_buffers_then_drops_when_the_tx_ring_stays_full() {
    let pool = pool("t_wfull", 4095);
    // The inside port's TX ring has 63 usable slots and nobody empties it for a while.
    let (outside, inside, wires) = wired_ports("wfull", 1, 64, &pool);
    let wire = &wires[0];
    let mesh = HandoffMesh::new(1, 64);
    let cfg = WorkerConfig {
        burst: 32,
        tx_buffer: 64,
        drain_interval: 0,
        ticks_per_us: 0,
        ct_expire_budget: 64,
    };
    let mut w = worker_on(&outside, &inside, 0, Steering::new(1, 128), &mesh, cfg);

    let frames: Vec<Vec<u8>> = (0..300u32)
        .map(|i| tcp_frame([198, 18, 0, 1], [198, 18, 0, 2], i as u16, 80, i as u8))
        .collect();
    let mut sent = 0;
    for chunk in frames.chunks(50) {
        let mut inject = mbufs(&pool, chunk);
        sent += wire.outside_in.enqueue_burst(&mut inject);
        for now in 0..10 {
            w.poll_once(now);
        }
    }
    assert_eq!(sent, 300);
    let t = w.stats().totals();
    assert_eq!(t.rx_packets[0], 300);
    assert_eq!(t.tx_packets[1], 63, "the ring took what it could");
    assert_eq!(
        w.tx_pending(Side::Inside),
        64,
        "the TX buffer holds what it can, refused ones included"
    );
    assert_eq!(t.drops[DropReason::TxFull as usize], 300 - 63 - 64);

    // Room again: the buffered 64 follow the first 63, in order.
    let first = take_all(&wire.inside_out);
    assert_eq!(first.len(), 63);
    w.poll_once(1000);
    let rest = take_all(&wire.inside_out);
    assert_eq!(rest.len(), 63);
    w.poll_once(1001);
    let last = take_all(&wire.inside_out);
    assert_eq!(last.len(), 1);
    for (m, f) in first.iter().chain(&rest).chain(&last).zip(&frames) {
        assert_eq!(m.data(), &f[..]);
    }
    drop((first, rest, last));
    w.finish(1002);
    assert_eq!(w.stats().totals().tx_packets[1], 127);
    assert_eq!(pool.in_use(), 0, "an mbuf leaked");
}

#[test]
fn packets_reach_their_owning_worker_through_the_handoff_ring() {
    let pool = pool("t_handoff", 4095);
    let (outside, inside, wires) = wired_ports("hand", 2, 1024, &pool);
    let steering = Steering::new(2, 128);
    let mesh = HandoffMesh::new(2, 256);
    let cfg = WorkerConfig {
        burst: 32,
        tx_buffer: 256,
        drain_interval: 0,
        ticks_per_us: 0,
        ct_expire_budget: 64,
    };
    let mut w0 = worker_on(&outside, &inside, 0, steering, &mesh, cfg);
    let mut w1 = worker_on(&outside, &inside, 1, steering, &mesh, cfg);

    // 100 flows, all arriving at queue 0 (a device without RSS).
    let frames: Vec<Vec<u8>> = (0..100u16)
        .map(|i| tcp_frame([198, 18, 0, 1], [198, 18, 0, 2], 2000 + i, 443, i as u8))
        .collect();
    let owner = |f: &[u8]| {
        let sport = u16::from_be_bytes([f[34], f[35]]);
        let dport = u16::from_be_bytes([f[36], f[37]]);
        steering.owner(flow_hash(FlowKey::Ports {
            src: &f[26..30],
            dst: &f[30..34],
            sport,
            dport,
        }))
    };
    let for_w1 = frames.iter().filter(|f| owner(f) == 1).count();
    assert!(
        for_w1 > 20 && for_w1 < 80,
        "the hash spreads flows ({for_w1} of 100 on worker 1)"
    );
    let mut inject = mbufs(&pool, &frames);
    assert_eq!(wires[0].outside_in.enqueue_burst(&mut inject), 100);

    for now in 0..20 {
        w0.poll_once(now);
        w1.poll_once(now);
    }
    let t0 = w0.stats().totals();
    let t1 = w1.stats().totals();
    assert_eq!(t0.handoffs_out as usize, for_w1);
    assert_eq!(t1.handoffs_in as usize, for_w1);
    let on_q0 = take_all(&wires[0].inside_out);
    let on_q1 = take_all(&wires[1].inside_out);
    assert_eq!(on_q0.len(), 100 - for_w1);
    assert_eq!(on_q1.len(), for_w1);
    assert!(on_q1.iter().all(|m| owner(m.data()) == 1));
    assert!(on_q0.iter().all(|m| owner(m.data()) == 0));

    // The reply of a worker-1 flow, arriving at queue 0 of the inside port, also goes to
    // worker 1 and leaves on its outside queue.
    let f = frames.iter().find(|f| owner(f) == 1).unwrap();
    let sport = u16::from_be_bytes([f[34], f[35]]);
    let mut inj = mbufs(
        &pool,
        &[tcp_frame([198, 18, 0, 2], [198, 18, 0, 1], 443, sport, 7)],
    );
    assert_eq!(wires[0].inside_in.enqueue_burst(&mut inj), 1);
    w0.poll_once(100);
    w1.poll_once(100);
    assert_eq!(take_all(&wires[1].outside_out).len(), 1);
    assert!(wires[0].outside_out.is_empty());

    drop((on_q0, on_q1));
    w0.finish(200);
    w1.finish(200);
    assert_eq!(pool.in_use(), 0, "an mbuf leaked");
}

#[test]
fn null_device_bursts_and_pool_returns_to_zero() {
    let pool = pool("t_null", 4095);
    let outside = EthPort::open(eal(), "net_null0", &setup(1), std::slice::from_ref(&pool)).unwrap();
    let inside = EthPort::open(eal(), "net_null1", &setup(1), std::slice::from_ref(&pool)).unwrap();
    let mesh = HandoffMesh::new(1, 64);
    let mut w = worker_on(
        &outside,
        &inside,
        0,
        Steering::new(1, 128),
        &mesh,
        WorkerConfig::default(),
    );
    for now in 0..1000 {
        w.poll_once(now);
    }
    w.finish(1000);
    let t = w.stats().totals();
    assert_eq!(t.rx_packets[0], 1000 * 32, "net_null always fills a burst");
    assert_eq!(
        t.rx_packets[0] + t.rx_packets[1],
        t.tx_packets[0] + t.tx_packets[1] + t.drops.iter().sum::<u64>()
    );
    assert_eq!(pool.in_use(), 0, "an mbuf leaked");
}

#[test]
fn misuse_is_refused_with_clear_errors() {
    let e = eal();
    assert!(matches!(
        Eal::init(&["--no-huge"]),
        Err(DpdkError::EalAlreadyInitialised)
    ));
    let pool = pool("t_misuse", 1023);
    match EthPort::open(e, "net_nonexistent9", &setup(1), std::slice::from_ref(&pool)) {
        Err(DpdkError::NoSuchPort { name, available }) => {
            assert_eq!(name, "net_nonexistent9");
            assert!(available.iter().any(|n| n == "net_ring1"), "{available:?}");
        }
        other => panic!(
            "expected NoSuchPort, got {:?}",
            other.map(|p| p.name().to_owned())
        ),
    }
    let port = EthPort::open(e, "net_ring1", &setup(1), std::slice::from_ref(&pool)).unwrap();
    let _rx = port.rx_queue(0).unwrap();
    assert!(matches!(port.rx_queue(0), Err(DpdkError::QueueTaken { .. })));
    assert!(matches!(port.tx_queue(1), Err(DpdkError::QueueTaken { .. })));
    let err = port.rx_queue(0).err().unwrap().to_string();
    assert!(err.contains("net_ring1") && err.contains("RX"), "{err}");
    // A pool runs dry and says so by returning None.
    let small = self::pool("t_small", 63);
    let held: Vec<Mbuf> = std::iter::from_fn(|| small.alloc_with(&[0u8; 60]))
        .take(100)
        .collect();
    assert_eq!(held.len(), 63);
    assert_eq!(small.in_use(), 63);
    drop(held);
    assert_eq!(small.in_use(), 0);
    assert!(
        small.alloc_with(&vec![0u8; 4000]).is_none(),
        "oversized data is refused"
    );
    assert_eq!(small.in_use(), 0);
}

#[test]
fn closures_run_on_worker_lcores() {
    let e = eal();
    assert_eq!(e.lcore_count(), 2);
    let h = dpdk::launch(e, 1, || dpdk::current_lcore() as i32 + 41).unwrap();
    assert_eq!(h.join(), 42);
    assert!(dpdk::launch(e, 5, || 0).is_err(), "lcore 5 is not enabled");
}

/// Generation `g`'s ruleset: prerouting sets the DSCP and forward sets the TTL, both from
/// `g`, so a packet judged partly by one generation and partly by another would show a
/// pair that no single generation writes.
fn generation_ruleset(g: u64) -> String {
    format!(
        "table ip t {{\n chain a {{ type filter hook prerouting priority 0; policy accept; ip dscp set {} }}\n \
         chain b {{ type filter hook forward priority 0; policy accept; ip ttl set {} }}\n}}\n",
        g % 64,
        64 + g % 128
    )
}

/// Swap under load (issue 6): a worker forwards a steady stream of real mbufs on `net_ring`
/// ports while the control side commits thousands of generations. No packet is lost, each
/// packet carries the marks of exactly one generation, and generations never go backwards in
/// packet order; every commit returns only once the worker runs it.
#[test]
fn generations_swap_under_traffic_each_packet_judged_by_exactly_one() {
    use levee_control::generation::Committer;
    use levee_control::rules::{Op, Transaction};
    use levee_dataplane::worker::WorkerFilter;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    const COMMITS: u64 = 2_000;
    let load = |g: u64| {
        Transaction::new(vec![Op::Load {
            text: generation_ruleset(g),
            flush: true,
        }])
    };
    let started = std::time::Instant::now();
    let clock = move || started.elapsed().as_nanos() as u64;
    let (mut committer, readers) = Committer::start(&load(1), 1, Box::new(clock)).unwrap();
    committer.timeout = std::time::Duration::from_secs(10);

    let pool = pool("t_gen", 8191);
    let (outside, inside, wires) = wired_ports("gen", 1, 1024, &pool);
    let mesh = HandoffMesh::new(1, 64);
    let reader = readers.into_iter().next().unwrap();
    let mut w = worker_on(
        &outside,
        &inside,
        0,
        Steering::new(1, 128),
        &mesh,
        WorkerConfig::default(),
    )
    .with_filter(WorkerFilter::from_generations(reader, 1));
    let stats = w.stats();
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let stop = stop.clone();
        std::thread::spawn(move || w.run(&stop, clock))
    };
    // The control side: commits one generation after another; each returns only when the
    // worker has picked it up.
    let committed = Arc::new(AtomicU64::new(1));
    // Packets out so far: the control side lets some traffic through between two commits.
    let received = Arc::new(AtomicU64::new(0));
    let control = {
        let committed = committed.clone();
        let received = received.clone();
        std::thread::spawn(move || {
            for g in 2..=COMMITS {
                let want = received.load(Ordering::SeqCst) + 64;
                while received.load(Ordering::SeqCst) < want {
                    std::thread::yield_now();
                }
                let c = committer.commit(&load(g)).expect("commit");
                assert_eq!(c.generation, g);
                committed.store(g, Ordering::SeqCst);
            }
            committer
        })
    };

    let wire = &wires[0];
    let mut sent = 0u64;
    // Streaming checks, packet by packet in order: its DSCP/TTL pair is one generation's;
    // that generation is not older than the previous packet's, nor older than the last
    // commit that had returned when the packet was sent (that commit's generation was
    // already running).
    let mut got = 0u64;
    let mut last = 1u64;
    let mut distinct = 0u64;
    let mut floors: std::collections::VecDeque<(u64, u64)> = Default::default();
    let frame = |seq: u64| {
        let mut f = tcp_frame([198, 18, 0, 1], [198, 18, 0, 2], 1000, 80, 0);
        f[18..20].copy_from_slice(&(seq as u16).to_be_bytes());
        f[24..26].copy_from_slice(&[0, 0]);
        let sum = levee_packet::checksum::checksum(&f[14..34]);
        f[24..26].copy_from_slice(&sum.to_be_bytes());
        f
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while committed.load(Ordering::SeqCst) < COMMITS || got < sent {
        assert!(
            std::time::Instant::now() < deadline,
            "swap-under-load test timed out"
        );
        if committed.load(Ordering::SeqCst) < COMMITS && sent - got < 512 {
            let floor = committed.load(Ordering::SeqCst);
            let frames: Vec<Vec<u8>> = (sent..sent + 32).map(frame).collect();
            let mut batch = mbufs(&pool, &frames);
            let n = wire.outside_in.enqueue_burst(&mut batch) as u64;
            if n > 0 {
                floors.push_back((sent, floor));
            }
            sent += n;
        }
        for m in take_all(&wire.inside_out) {
            let d = m.data();
            let seq = got;
            assert_eq!(
                u16::from_be_bytes([d[18], d[19]]),
                seq as u16,
                "packets reordered or lost"
            );
            while floors.len() > 1 && floors[1].0 <= seq {
                floors.pop_front();
            }
            let floor = floors.front().map_or(1, |f| f.1);
            let (dscp, ttl) = (d[15] >> 2, d[22]);
            let g = (last.max(floor)..last.max(floor) + 128)
                .find(|g| (g % 64) as u8 == dscp && (64 + g % 128) as u8 == ttl)
                .unwrap_or_else(|| {
                    panic!(
                        "packet {seq}: dscp {dscp} ttl {ttl} is no generation at or after {} \
                         (previous packet {last}, committed before sending {floor})",
                        last.max(floor)
                    )
                });
            if g != last {
                distinct += 1;
            }
            last = g;
            got += 1;
            received.store(got, Ordering::SeqCst);
        }
    }
    stop.store(true, Ordering::SeqCst);
    worker.join().unwrap();
    let committer = control.join().unwrap();
    assert_eq!(committer.generation(), COMMITS);

    assert_eq!(got, sent, "every packet came out");
    assert!(
        sent > 64 * (COMMITS - 1),
        "traffic kept flowing during the commits ({sent} packets)"
    );
    let t = stats.totals();
    assert_eq!(t.drops, [0; DropReason::ALL.len()], "nothing dropped");
    assert_eq!(t.generation, COMMITS, "the worker reports the last generation");
    eprintln!(
        "{sent} packets through {} commits, {distinct} generation changes seen in packets, mean commit latency {} µs",
        COMMITS - 1,
        committer.metrics().total_ns.load(Ordering::Relaxed) / (COMMITS - 1) / 1000
    );
    assert!(
        distinct > COMMITS / 2,
        "packets saw many generations ({distinct} changes)"
    );
    assert_eq!(pool.in_use(), 0, "every mbuf returned");
}
