//! Profiling aid (not a benchmark): evaluates the 1k-rule ISP ruleset of benches/vm.rs in a
//! loop so `perf record` sees only evaluation. `cargo run --release -p levee-filter-vm
//! --example profile_isp -- SECONDS`.
use levee_filter_vm::{compile_ruleset, CtState, PacketMeta};
use std::hint::black_box;

fn frame(i: u32) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[12] = 0x08;
    f[14] = 0x45;
    f[16..18].copy_from_slice(&40u16.to_be_bytes());
    f[22] = 64;
    f[23] = 6;
    f[26..30].copy_from_slice(&[198, 19, 200 + (i >> 8) as u8, i as u8]);
    f[30..34].copy_from_slice(&[198, 18, 255, 1]);
    f[34..36].copy_from_slice(&(1024 + (i % 60000) as u16).to_be_bytes());
    f[36..38].copy_from_slice(&443u16.to_be_bytes());
    f[46] = 0x50;
    f[47] = 0x10;
    f
}

fn main() {
    let secs: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let n: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let mut s = String::from(
        "table inet edge {\n chain pre {\n  type filter hook prerouting priority filter; policy accept;\n\
         ct state established,related accept\n  ct state invalid counter drop\n",
    );
    let block = n.saturating_sub(n / 10 + 4);
    for i in 0..block {
        let x = i as u32 * 8;
        s += &format!(
            "  ip saddr 198.{}.{}.{}/29 drop\n",
            18 + (x >> 16),
            (x >> 8) & 255,
            x & 255
        );
    }
    for i in 0..n / 10 {
        s += &format!("  ip daddr 198.18.255.1 tcp dport {} accept\n", 1000 + i);
    }
    s += "  tcp dport 443 counter accept\n  ip protocol icmp limit rate 1000/second accept\n  counter drop\n }\n}\n";
    if n == 0 {
        s = "table inet t { chain c { type filter hook prerouting priority 0; policy accept; } }".into();
    }
    let mut f = compile_ruleset(&s).unwrap();
    let frames: Vec<Vec<u8>> = (0..1024).map(frame).collect();
    let meta = PacketMeta {
        ct_state: CtState::New,
        ..Default::default()
    };
    let start = std::time::Instant::now();
    let mut count = 0u64;
    let parsed: Vec<_> = frames
        .iter()
        .map(|f| levee_packet::parse::parse_frame(f).ok())
        .collect();
    let hooks = [levee_filter_vm::nft::ast::Hook::Prerouting];
    let pre_parsed = std::env::args().nth(3).is_some();
    let mut actions = levee_filter_vm::vm::Actions::default();
    while start.elapsed().as_secs() < secs {
        if pre_parsed {
            for (fr, info) in frames.iter().zip(&parsed) {
                black_box(f.compiled.evaluate_hooks_into(
                    &mut f.state,
                    &hooks,
                    fr,
                    info.as_ref(),
                    &meta,
                    &mut actions,
                ));
            }
        } else {
            for fr in &frames {
                black_box(f.evaluate("prerouting", fr, &meta));
            }
        }
        count += frames.len() as u64;
    }
    let ns = start.elapsed().as_nanos() as f64 / count as f64;
    println!("{ns:.1} ns/packet");
}
