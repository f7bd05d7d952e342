//! `levee-perf`: writes the traffic the benchmarks replay.
//!
//! `levee-perf pcap --out FILE --flows N [--v6] [--syn]` writes a classic pcap of minimum-size
//! TCP frames (60 bytes on the wire before the FCS: the "64-byte frames" of RFC 2544), one per
//! flow, sources spread over 198.18.0.0/15 (or 2001:2::/48), destination 198.19.255.1
//! (2001:2:0:ff::1). `net_pcap`'s `infinite_rx=1` replays it from memory at line rate.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use levee_packet::checksum;
use std::io::Write;
use std::path::PathBuf;

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
    },
}

fn tcp_header(sport: u16, dport: u16, seq: u32, syn: bool) -> [u8; 20] {
    let mut t = [0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = if syn { 0x02 } else { 0x10 };
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    t
}

/// One Ethernet frame of flow `i`.
fn frame(i: u32, v6: bool, syn: bool) -> Vec<u8> {
    let mut f = Vec::with_capacity(80);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01]);
    let sport = 1024 + (i % 60000) as u16;
    let seq = i.wrapping_mul(2_654_435_761);
    let mut tcp = tcp_header(sport, 80, seq, syn);
    if v6 {
        f.extend_from_slice(&0x86DDu16.to_be_bytes());
        let mut src = [0u8; 16];
        src[..6].copy_from_slice(&[0x20, 0x01, 0x00, 0x02, 0x00, 0x01]);
        src[12..16].copy_from_slice(&i.to_be_bytes());
        let mut dst = [0u8; 16];
        dst[..8].copy_from_slice(&[0x20, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0xff]);
        dst[15] = 1;
        let mut ip = [0u8; 40];
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&20u16.to_be_bytes());
        ip[6] = 6;
        ip[7] = 64;
        ip[8..24].copy_from_slice(&src);
        ip[24..40].copy_from_slice(&dst);
        let ph = checksum::pseudo_header_v6(src.into(), dst.into(), 6, 20);
        let sum = !checksum::combine(&[ph, checksum::sum(&tcp)]);
        tcp[16..18].copy_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(&ip);
    } else {
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        // Sources over 198.18.0.0/15: 198.18.0.0 + i (wrapping inside the /15).
        let host = i % (1 << 17);
        let src = [198, 18 + (host >> 16) as u8, (host >> 8) as u8, host as u8];
        let dst = [198, 19, 255, 1];
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&40u16.to_be_bytes());
        ip[6] = 0x40; // DF
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&src);
        ip[16..20].copy_from_slice(&dst);
        let ipsum = checksum::checksum(&ip);
        ip[10..12].copy_from_slice(&ipsum.to_be_bytes());
        let ph = checksum::pseudo_header_v4(src.into(), dst.into(), 6, 20);
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

fn main() -> std::process::ExitCode {
    match Cli::parse().cmd {
        Cmd::Pcap { out, flows, v6, syn } => {
            if flows == 0 {
                eprintln!("levee-perf: --flows must be at least 1");
                return std::process::ExitCode::FAILURE;
            }
            let frames: Vec<Vec<u8>> = (0..flows).map(|i| frame(i, v6, syn)).collect();
            if let Err(e) = write_pcap(&out, &frames) {
                eprintln!("levee-perf: cannot write {}: {e}", out.display());
                return std::process::ExitCode::FAILURE;
            }
            println!(
                "wrote {} frames of {} bytes to {}",
                frames.len(),
                frames[0].len(),
                out.display()
            );
            std::process::ExitCode::SUCCESS
        }
    }
}
