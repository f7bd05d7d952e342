//! `levee-perf`: writes the traffic the benchmarks replay, and times TCP connections for the
//! SYN-proxy benchmarks.
//!
//! - `levee-perf pcap --out FILE --flows N [--v6] [--syn] [--random [--seed S]] [--mss N] [--ts]`
//!   writes a classic pcap of minimum-size TCP frames (60 bytes on the wire before the FCS: the
//!   "64-byte frames" of RFC 2544), one per flow, sources in 198.18.0.0/15 (or 2001:2::/48),
//!   destination 198.19.255.1 (2001:2:0:ff::1) port 80. Without `--random` flow *i* comes from
//!   198.18.0.0 + *i* port 1024 + *i* mod 60000; with it every frame draws its source address
//!   (uniform over the /15, or the low 64 bits in 2001:2:0:1::/64), source port (1024-65535),
//!   sequence number and, for ACKs, acknowledgment number (a random cookie) from a seeded
//!   generator, as a spoofed flood would. `net_pcap`'s `infinite_rx=1` replays the file from
//!   memory at line rate.
//! - `levee-perf serve --listen ADDR:PORT [--ports N]` answers every connection's first read
//!   with `ok\n` and closes (the server closes first, so clients are left without TIME_WAIT
//!   sockets).
//! - `levee-perf connect --to ADDR:PORT --duration S [--ports N]` opens connections one after
//!   the other (per `--parallel` thread) for S seconds, over N destination ports, each sending a line and reading `ok\n` to the
//!   server's close, and prints one `connect …` line: attempts, successes, failures, connections
//!   per second, and p50/p99/max of the connect time (SYN to SYN-ACK, what `connect()` waits
//!   for) and of the whole exchange, and how many exchanges took over a second (a lost segment
//!   waiting for a retransmission timeout).
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use levee_packet::checksum;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "levee-perf", about = "levee's benchmark traffic generator")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write a pcap of minimum-size TCP frames, one per flow.
    Pcap {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 1024)]
        flows: u32,
        /// IPv6 instead of IPv4 (78-byte frames: the IPv6 minimum with a bare TCP header).
        #[arg(long)]
        v6: bool,
        /// SYN flags (the SYN-proxy benchmarks); otherwise ACK.
        #[arg(long)]
        syn: bool,
        /// Random source addresses, ports, sequence and acknowledgment numbers (a spoofed
        /// flood; ACKs then carry random cookies).
        #[arg(long)]
        random: bool,
        /// Seed of `--random`'s generator (the same seed writes the same file).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Add an MSS option with this value (0: none). Still a 64-byte frame for IPv4.
        #[arg(long, default_value_t = 0)]
        mss: u16,
        /// Add a timestamps option (NOP, NOP, TS) with random values under `--random`.
        #[arg(long)]
        ts: bool,
    },
    /// Answer each connection's first read with `ok\n`, then close.
    Serve {
        #[arg(long)]
        listen: SocketAddr,
        /// Listen on this many consecutive ports from `--listen`'s.
        #[arg(long, default_value_t = 1)]
        ports: u16,
        /// Accepting threads per port.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Exit after this many seconds (0: run until killed).
        #[arg(long, default_value_t = 0.0)]
        duration: f64,
    },
    /// Open connections to a `serve` for a while and report their rate and timings.
    Connect {
        #[arg(long)]
        to: SocketAddr,
        /// Seconds to keep opening connections.
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        /// Threads, each opening one connection at a time.
        #[arg(long, default_value_t = 1)]
        parallel: usize,
        /// Spread connections over this many consecutive destination ports from `--to`'s. The
        /// kernel picks source ports per destination port, so tuples are not reused (against a
        /// server or proxy still holding the last connection in TIME_WAIT) for N times longer.
        #[arg(long, default_value_t = 1)]
        ports: u16,
        /// Give up on a connection after this long (connect, and then the reply).
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
    },
}

/// splitmix64: small, seedable, good enough to spread addresses and cookies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// What differs from frame to frame.
struct Flow {
    /// IPv4: host number inside 198.18.0.0/15 (17 bits); IPv6: the low 64 bits of the source.
    host: u64,
    sport: u16,
    seq: u32,
    ack: u32,
    tsval: u32,
    tsecr: u32,
}

impl Flow {
    fn sequential(i: u32) -> Flow {
        Flow {
            host: u64::from(i),
            sport: 1024 + (i % 60000) as u16,
            seq: i.wrapping_mul(2_654_435_761),
            ack: 0,
            tsval: i,
            tsecr: 0,
        }
    }

    fn random(rng: &mut Rng) -> Flow {
        let a = rng.next();
        let b = rng.next();
        let c = rng.next();
        Flow {
            host: a,
            sport: 1024 + ((b & 0xffff) % (65536 - 1024)) as u16,
            seq: (b >> 32) as u32,
            ack: c as u32,
            tsval: (c >> 32) as u32,
            tsecr: rng.next() as u32,
        }
    }
}

/// The frame's shape, the same for every flow.
#[derive(Clone, Copy)]
struct Shape {
    v6: bool,
    syn: bool,
    mss: u16,
    ts: bool,
}

fn tcp_header(shape: Shape, flow: &Flow) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&flow.sport.to_be_bytes());
    t[2..4].copy_from_slice(&80u16.to_be_bytes());
    t[4..8].copy_from_slice(&flow.seq.to_be_bytes());
    if !shape.syn {
        t[8..12].copy_from_slice(&flow.ack.to_be_bytes());
    }
    t[13] = if shape.syn { 0x02 } else { 0x10 };
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    if shape.mss > 0 {
        t.extend_from_slice(&[2, 4]);
        t.extend_from_slice(&shape.mss.to_be_bytes());
    }
    if shape.ts {
        t.extend_from_slice(&[1, 1, 8, 10]);
        t.extend_from_slice(&flow.tsval.to_be_bytes());
        t.extend_from_slice(&flow.tsecr.to_be_bytes());
    }
    t[12] = ((t.len() / 4) as u8) << 4;
    t
}

/// One Ethernet frame.
fn frame(shape: Shape, flow: &Flow) -> Vec<u8> {
    let mut f = Vec::with_capacity(96);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01]);
    let mut tcp = tcp_header(shape, flow);
    let tcp_len = tcp.len() as u16;
    if shape.v6 {
        f.extend_from_slice(&0x86DDu16.to_be_bytes());
        // Sources in 2001:2:0:1::/64, inside 2001:2::/48.
        let mut src = [0u8; 16];
        src[..8].copy_from_slice(&[0x20, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x01]);
        src[8..16].copy_from_slice(&flow.host.to_be_bytes());
        let mut dst = [0u8; 16];
        dst[..8].copy_from_slice(&[0x20, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0xff]);
        dst[15] = 1;
        let mut ip = [0u8; 40];
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&tcp_len.to_be_bytes());
        ip[6] = 6;
        ip[7] = 64;
        ip[8..24].copy_from_slice(&src);
        ip[24..40].copy_from_slice(&dst);
        let ph = checksum::pseudo_header_v6(src.into(), dst.into(), 6, u32::from(tcp_len));
        let sum = !checksum::combine(&[ph, checksum::sum(&tcp)]);
        tcp[16..18].copy_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(&ip);
    } else {
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        // Sources over 198.18.0.0/15: 198.18.0.0 + host (wrapping inside the /15).
        let host = (flow.host % (1 << 17)) as u32;
        let src = [198, 18 + (host >> 16) as u8, (host >> 8) as u8, host as u8];
        let dst = [198, 19, 255, 1];
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(20 + tcp_len).to_be_bytes());
        ip[6] = 0x40; // DF
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&src);
        ip[16..20].copy_from_slice(&dst);
        let ipsum = checksum::checksum(&ip);
        ip[10..12].copy_from_slice(&ipsum.to_be_bytes());
        let ph = checksum::pseudo_header_v4(src.into(), dst.into(), 6, tcp_len);
        let sum = !checksum::combine(&[ph, checksum::sum(&tcp)]);
        tcp[16..18].copy_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(&ip);
    }
    f.extend_from_slice(&tcp);
    f.resize(f.len().max(60), 0);
    f
}

fn write_pcap(out: &PathBuf, frames: &[Vec<u8>]) -> std::io::Result<()> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(out)?);
    // Classic pcap global header: magic, v2.4, tz 0, sigfigs 0, snaplen 65535, LINKTYPE_ETHERNET.
    w.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
    w.write_all(&2u16.to_le_bytes())?;
    w.write_all(&4u16.to_le_bytes())?;
    w.write_all(&0i32.to_le_bytes())?;
    w.write_all(&0u32.to_le_bytes())?;
    w.write_all(&65535u32.to_le_bytes())?;
    w.write_all(&1u32.to_le_bytes())?;
    for (i, f) in frames.iter().enumerate() {
        w.write_all(&(i as u32 / 1_000_000).to_le_bytes())?;
        w.write_all(&(i as u32 % 1_000_000).to_le_bytes())?;
        w.write_all(&(f.len() as u32).to_le_bytes())?;
        w.write_all(&(f.len() as u32).to_le_bytes())?;
        w.write_all(f)?;
    }
    w.flush()
}

fn serve(listen: SocketAddr, ports: u16, threads: usize, duration: f64) -> Result<(), String> {
    for port in 0..ports.max(1) {
        let mut at = listen;
        at.set_port(listen.port().wrapping_add(port));
        let l = TcpListener::bind(at).map_err(|e| format!("cannot listen on {at}: {e}"))?;
        for _ in 0..threads.max(1) {
            let l = l.try_clone().map_err(|e| e.to_string())?;
            std::thread::spawn(move || {
                for s in l.incoming() {
                    let Ok(mut s) = s else { continue };
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    let _ = s.set_nodelay(true);
                    let mut buf = [0u8; 64];
                    if matches!(s.read(&mut buf), Ok(n) if n > 0) {
                        let _ = s.write_all(b"ok\n");
                    }
                }
            });
        }
    }
    if duration > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(duration));
    } else {
        loop {
            std::thread::park();
        }
    }
    Ok(())
}

/// How one connection went.
enum Outcome {
    /// Connect time and whole-exchange time, microseconds.
    Ok(u64, u64),
    ConnectTimeout,
    ConnectError,
    ReplyError,
}

fn one_connection(to: SocketAddr, timeout: Duration) -> Outcome {
    let t0 = Instant::now();
    let mut s = match TcpStream::connect_timeout(&to, timeout) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Outcome::ConnectTimeout,
        Err(_) => return Outcome::ConnectError,
    };
    let connected = t0.elapsed();
    let _ = s.set_nodelay(true);
    if s.set_read_timeout(Some(timeout)).is_err() || s.write_all(b"GET\n").is_err() {
        return Outcome::ReplyError;
    }
    let mut reply = Vec::with_capacity(8);
    if s.read_to_end(&mut reply).is_err() || reply != b"ok\n" {
        return Outcome::ReplyError;
    }
    Outcome::Ok(connected.as_micros() as u64, t0.elapsed().as_micros() as u64)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn connect(
    to: SocketAddr,
    duration: f64,
    parallel: usize,
    ports: u16,
    timeout_ms: u64,
) -> Result<(), String> {
    let timeout = Duration::from_millis(timeout_ms.max(1));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(duration);
    let workers: Vec<_> = (0..parallel.max(1))
        .map(|t| {
            std::thread::spawn(move || {
                let mut outcomes = Vec::new();
                let mut k = t;
                while Instant::now() < deadline {
                    let mut at = to;
                    at.set_port(to.port().wrapping_add((k % usize::from(ports.max(1))) as u16));
                    k += parallel.max(1);
                    outcomes.push(one_connection(at, timeout));
                }
                outcomes
            })
        })
        .collect();
    let mut conn = Vec::new();
    let mut txn = Vec::new();
    let (mut attempts, mut timeouts, mut errors, mut reply_errors) = (0u64, 0u64, 0u64, 0u64);
    for w in workers {
        for o in w.join().map_err(|_| "a connect thread panicked".to_string())? {
            attempts += 1;
            match o {
                Outcome::Ok(c, t) => {
                    conn.push(c);
                    txn.push(t);
                }
                Outcome::ConnectTimeout => timeouts += 1,
                Outcome::ConnectError => errors += 1,
                Outcome::ReplyError => reply_errors += 1,
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let over_1s = txn.iter().filter(|&&t| t > 1_000_000).count();
    conn.sort_unstable();
    txn.sort_unstable();
    println!(
        "connect to={to} secs={secs:.2} parallel={} attempts={attempts} ok={} failed={} \
         connect_timeouts={timeouts} connect_errors={errors} reply_errors={reply_errors} \
         conn_per_s={:.0} connect_p50_us={} connect_p99_us={} connect_max_us={} txn_p50_us={} \
         txn_p99_us={} txn_max_us={} txn_over_1s={over_1s}",
        parallel.max(1),
        conn.len(),
        attempts - conn.len() as u64,
        conn.len() as f64 / secs,
        percentile(&conn, 0.5),
        percentile(&conn, 0.99),
        conn.last().copied().unwrap_or(0),
        percentile(&txn, 0.5),
        percentile(&txn, 0.99),
        txn.last().copied().unwrap_or(0),
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    let result = match Cli::parse().cmd {
        Cmd::Pcap {
            out,
            flows,
            v6,
            syn,
            random,
            seed,
            mss,
            ts,
        } => {
            if flows == 0 {
                eprintln!("levee-perf: --flows must be at least 1");
                return std::process::ExitCode::FAILURE;
            }
            let shape = Shape { v6, syn, mss, ts };
            let mut rng = Rng(seed);
            let frames: Vec<Vec<u8>> = (0..flows)
                .map(|i| {
                    let flow = if random {
                        Flow::random(&mut rng)
                    } else {
                        Flow::sequential(i)
                    };
                    frame(shape, &flow)
                })
                .collect();
            match write_pcap(&out, &frames) {
                Ok(()) => {
                    println!(
                        "wrote {} frames of {} bytes to {}",
                        frames.len(),
                        frames[0].len(),
                        out.display()
                    );
                    Ok(())
                }
                Err(e) => Err(format!("cannot write {}: {e}", out.display())),
            }
        }
        Cmd::Serve {
            listen,
            ports,
            threads,
            duration,
        } => serve(listen, ports, threads, duration),
        Cmd::Connect {
            to,
            duration,
            parallel,
            ports,
            timeout_ms,
        } => connect(to, duration, parallel, ports, timeout_ms),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("levee-perf: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(syn: bool) -> Shape {
        Shape {
            v6: false,
            syn,
            mss: 0,
            ts: false,
        }
    }

    #[test]
    fn random_sources_stay_in_the_benchmark_range() {
        let mut rng = Rng(7);
        for _ in 0..10_000 {
            let f = frame(shape(true), &Flow::random(&mut rng));
            assert_eq!(f.len(), 60);
            assert_eq!(f[26], 198);
            assert!(f[27] == 18 || f[27] == 19, "source {:?}", &f[26..30]);
            assert_eq!(&f[30..34], &[198, 19, 255, 1]);
            let sport = u16::from_be_bytes([f[34], f[35]]);
            assert!(sport >= 1024);
        }
    }

    #[test]
    fn frames_parse_with_valid_checksums() {
        let mut rng = Rng(3);
        for (syn, mss, ts, v6) in [
            (true, 0, false, false),
            (true, 1460, false, false),
            (false, 0, true, false),
            (true, 1440, false, true),
        ] {
            let s = Shape { v6, syn, mss, ts };
            let f = frame(s, &Flow::random(&mut rng));
            let info = levee_packet::parse_frame(&f).expect("parses");
            assert!(info.flow_tuple().is_some());
            let (ip, ip_len) = if v6 { (14, 40) } else { (14, 20) };
            if !v6 {
                assert_eq!(checksum::checksum(&f[ip..ip + ip_len]), 0);
            }
            let tcp_len = 20 + if mss > 0 { 4 } else { 0 } + if ts { 12 } else { 0 };
            let tcp = &f[ip + ip_len..ip + ip_len + tcp_len];
            let ph = if v6 {
                let src: [u8; 16] = f[22..38].try_into().unwrap();
                let dst: [u8; 16] = f[38..54].try_into().unwrap();
                checksum::pseudo_header_v6(src.into(), dst.into(), 6, tcp_len as u32)
            } else {
                let src: [u8; 4] = f[26..30].try_into().unwrap();
                let dst: [u8; 4] = f[30..34].try_into().unwrap();
                checksum::pseudo_header_v4(src.into(), dst.into(), 6, tcp_len as u16)
            };
            assert_eq!(checksum::combine(&[ph, checksum::sum(tcp)]), 0xffff);
        }
    }
}
