//! ns per packet for the filter VM on one core: the empty chain, realistic ISP rulesets of
//! 10 to 10k rules (prefix blocklists, port filters, ct state, counters), set lookups at 1k,
//! 100k and 1M elements, and a meter with 1M keys.
//!
//! The rulesets are generated as nft text and go through the real parser and compiler, so the
//! compiler's fast path (runs of same-shape rules become one set lookup) is part of what is
//! measured.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use levee_filter_vm::nft::ast::Hook;
use levee_filter_vm::{compile_ruleset, CtState, PacketMeta};
use levee_packet::parse::parse_frame;
use std::hint::black_box;

/// Ethernet + IPv4 + TCP ACK, 64-byte frame, from 198.19.200+(i) to 198.18.255.1:443.
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

/// An ISP edge ruleset of about `n` rules: established traffic first, a prefix blocklist (the
/// bulk), a port allowlist for the served prefix, counters on the rules operators watch.
fn isp_ruleset(n: usize) -> String {
    let mut s = String::from(
        "table inet edge {\n chain pre {\n  type filter hook prerouting priority filter; policy accept;\n\
         ct state established,related accept\n  ct state invalid counter drop\n",
    );
    let block = n.saturating_sub(n / 10 + 4);
    for i in 0..block {
        // Disjoint /29 blocks from 198.18.0.0 up (at most 198.19.25.x for 10k rules).
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
    s
}

fn bench(c: &mut Criterion) {
    let frames: Vec<Vec<u8>> = (0..1024).map(frame).collect();
    let meta = PacketMeta {
        ct_state: CtState::New,
        ..Default::default()
    };
    let mut g = c.benchmark_group("filter");
    g.throughput(Throughput::Elements(frames.len() as u64));
    let mut cases = vec![(
        "empty_chain".to_string(),
        "table inet t { chain c { type filter hook prerouting priority 0; policy accept; } }".to_string(),
    )];
    for n in [10, 100, 1000, 10_000] {
        cases.push((format!("isp_{n}_rules"), isp_ruleset(n)));
    }
    // The worker parses every frame once (for steering) and hands the result to the filter;
    // `…_parsed` measures that call, the others include parsing the frame.
    let parsed: Vec<_> = frames.iter().map(|f| parse_frame(f).ok()).collect();
    for (name, text) in &cases {
        let mut f = compile_ruleset(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        g.bench_function(name.as_str(), |b| {
            b.iter(|| {
                for fr in &frames {
                    black_box(f.evaluate("prerouting", fr, &meta));
                }
            })
        });
        g.bench_function(format!("{name}_parsed"), |b| {
            let mut actions = levee_filter_vm::vm::Actions::default();
            b.iter(|| {
                for (fr, info) in frames.iter().zip(&parsed) {
                    black_box(f.compiled.evaluate_hooks_into(
                        &mut f.state,
                        &[Hook::Prerouting],
                        fr,
                        info.as_ref(),
                        &meta,
                        &mut actions,
                    ));
                }
            })
        });
    }
    // The SYN proxy's ruleset (perf/bench-synproxy.sh) on a bare SYN, as the worker runs it:
    // the raw-priority chain before conntrack (it notracks the SYN), the rest after.
    {
        let mut f = compile_ruleset(
            "table inet bench {
  chain raw { type filter hook prerouting priority raw; policy accept;
    tcp flags & (syn | ack) == syn notrack
  }
  chain pre { type filter hook prerouting priority filter; policy accept;
    ip daddr 198.18.255.1 tcp dport 443 ct state invalid,untracked synproxy mss 1460 wscale 7 timestamp sack-perm
    ct state invalid drop
  }
}",
        )
        .expect("synproxy ruleset");
        let syns: Vec<Vec<u8>> = frames
            .iter()
            .map(|fr| {
                let mut s = fr.clone();
                s[47] = 0x02;
                s
            })
            .collect();
        let parsed: Vec<_> = syns.iter().map(|f| parse_frame(f).ok()).collect();
        let raw_meta = PacketMeta {
            ct_state: CtState::Invalid,
            ..Default::default()
        };
        let hooks = [Hook::Prerouting];
        g.bench_function("synproxy_syn_two_stages", |b| {
            let mut actions = levee_filter_vm::vm::Actions::default();
            b.iter(|| {
                for (fr, info) in syns.iter().zip(&parsed) {
                    let v = f.compiled.evaluate_stage_into(
                        &mut f.state,
                        &hooks,
                        fr,
                        info.as_ref(),
                        &raw_meta,
                        &mut actions,
                        levee_filter_vm::Stage::BeforeConntrack,
                    );
                    let v2 = f.compiled.evaluate_stage_into(
                        &mut f.state,
                        &hooks,
                        fr,
                        info.as_ref(),
                        &raw_meta,
                        &mut actions,
                        levee_filter_vm::Stage::AfterConntrack,
                    );
                    assert!(actions.synproxy.is_some());
                    black_box((v, v2));
                }
            })
        });
    }
    // Set lookups: the packet's source against a named set of N host addresses (exact) and of
    // N prefixes (prefix store).
    for n in [1_000usize, 100_000, 1_000_000] {
        for (kind, flags, plen) in [("exact", "", 32), ("prefix", "flags interval; ", 30)] {
            let mut s = format!("table ip t {{ set s {{ type ipv4_addr; {flags}elements = {{ ");
            for i in 0..n as u32 {
                // From 198.18.0.0 upwards; 1M keys run past the /15 (keys in memory only, never
                // sent anywhere).
                let a = 0xC612_0000u32.wrapping_add(i * if plen == 32 { 1 } else { 4 });
                if i > 0 {
                    s += ", ";
                }
                s += &format!("{}.{}.{}.{}", a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255);
                if plen < 32 {
                    s += &format!("/{plen}");
                }
            }
            s += " } }\n chain c { type filter hook prerouting priority 0; policy accept; ip saddr @s drop } }";
            let mut f = compile_ruleset(&s).unwrap_or_else(|e| panic!("set {n}: {e}"));
            g.bench_function(format!("set_{kind}_{n}"), |b| {
                b.iter(|| {
                    for fr in &frames {
                        black_box(f.evaluate("prerouting", fr, &meta));
                    }
                })
            });
        }
    }
    // A meter: per-source limit, filled with 1M sources first.
    let text = "table ip t { set m { type ipv4_addr; size 2000000; flags dynamic; }\n chain c { type filter hook prerouting priority 0; policy accept;\n add @m { ip saddr limit rate over 100/second } drop } }";
    let mut f = compile_ruleset(text).unwrap();
    let mut fill = frame(0);
    for i in 0..1_000_000u32 {
        fill[26..30].copy_from_slice(&(0x0a00_0000u32 + i).to_be_bytes());
        f.evaluate("prerouting", &fill, &meta);
    }
    g.bench_function("meter_1M_keys", |b| {
        b.iter_batched(
            || (),
            |_| {
                for fr in &frames {
                    black_box(f.evaluate("prerouting", fr, &meta));
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
