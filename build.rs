//! Generates levee's DPDK binding (used by `levee-dataplane`, whose manifest points here).
//!
//! * `pkg-config --cflags libdpdk` is passed verbatim to both bindgen (clang) and the `cc` build
//!   of the wrapper C file, so the binding sees exactly the macros DPDK was built for
//!   (`-include rte_config.h -march=corei7`).
//! * bindgen's `wrap_static_fns` turns DPDK's `static inline` fast-path functions
//!   (`rte_eth_rx_burst`, `rte_pktmbuf_free`, …) into real symbols in a small C file that `cc`
//!   compiles with optimisation; `levee_shim.c` adds the few things bindgen cannot reach
//!   (`rte_errno`, a thread-local macro).
//! * The allowlist is narrow on purpose: only what the safe layer in `dataplane/src/dpdk` uses.
//! * We link the shared DPDK libraries (`pkg-config --libs`), so EAL loads the vdev drivers
//!   (net_af_packet, net_ring, net_null, net_pcap, net_tap, net_memif) from the distribution's
//!   plugin directory at `rte_eal_init`.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const PACKAGE_HINT: &str = "levee needs DPDK 22.11 development files: install the Debian package \
     `libdpdk-dev` (apt-get install libdpdk-dev pkg-config clang libclang-dev), or run \
     deploy/host-setup.sh";

fn pkg_config(args: &[&str]) -> String {
    let out = Command::new("pkg-config")
        .args(args)
        .arg("libdpdk")
        .output()
        .unwrap_or_else(|e| panic!("cannot run pkg-config ({e}). {PACKAGE_HINT}"));
    if !out.status.success() {
        panic!(
            "pkg-config {} libdpdk failed: {}\n{PACKAGE_HINT}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).expect("pkg-config printed non-UTF-8")
}

fn main() {
    // Only rerun when the binding inputs change (otherwise cargo reruns on every file change in
    // the package because the script lives outside it).
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("..");
    let shim_dir = root.join("dataplane").join("csrc");
    println!("cargo:rerun-if-changed={}", root.join("build.rs").display());
    println!("cargo:rerun-if-changed={}", shim_dir.display());
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_LIBDIR");

    let version = pkg_config(&["--modversion"]);
    let version = version.trim();
    if !version.starts_with("22.11") {
        println!("cargo:warning=levee is written against DPDK 22.11; pkg-config reports libdpdk {version}");
    }

    // Raw cflags, split on whitespace (pkg-config output for libdpdk has no quoted spaces).
    let cflags_raw = pkg_config(&["--cflags"]);
    let cflags: Vec<String> = cflags_raw.split_whitespace().map(str::to_owned).collect();

    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    let wrap_path = out_dir.join("levee_dpdk_static_fns");
    let header = shim_dir.join("levee_dpdk.h");

    let bindings = bindgen::Builder::default()
        .header(header.to_str().unwrap())
        .clang_args(&cflags)
        .wrap_static_fns(true)
        .wrap_static_fns_path(&wrap_path)
        .allowlist_function("rte_eal_(init|cleanup|remote_launch|wait_lcore|process_type)")
        .allowlist_function("rte_lcore_(id|count|index)")
        .allowlist_function("rte_socket_id|rte_strerror|rte_get_tsc_hz|rte_rdtsc|rte_pause")
        .allowlist_function("rte_pktmbuf_(pool_create|alloc|alloc_bulk|free|free_bulk|append|reset)")
        .allowlist_function("rte_mempool_(free|avail_count|in_use_count|lookup)")
        .allowlist_function(
            "rte_eth_(dev_count_avail|dev_get_port_by_name|dev_info_get|dev_configure|\
             rx_queue_setup|tx_queue_setup|dev_start|dev_stop|dev_close|promiscuous_enable|\
             link_get_nowait|stats_get|stats_reset|xstats_get|xstats_get_names|macaddr_get|\
             dev_socket_id|rx_burst|tx_burst|dev_rss_reta_update|dev_adjust_nb_rx_tx_desc|\
             dev_is_valid_port|dev_get_name_by_port)",
        )
        .allowlist_function("rte_ring_(create|free|enqueue_burst|dequeue_burst|count)")
        .allowlist_function("rte_eth_from_rings")
        .allowlist_var("RING_F_.*")
        .allowlist_function("levee_.*")
        .allowlist_type("rte_mbuf|rte_mempool|rte_eth_.*")
        .allowlist_var("RTE_ETH_.*|RTE_MBUF_F_RX_RSS_HASH|RTE_MAX_ETHPORTS|RTE_ETHER_MAX_LEN|RTE_MBUF_DEFAULT_BUF_SIZE|RTE_ETH_NAME_MAX_LEN|RTE_ETH_XSTATS_NAME_SIZE")
        // rte_ether_addr is both packed and aligned in C, which Rust cannot express in one type.
        .opaque_type("rte_arp_hdr|rte_ether_hdr|rte_l2tpv2_combined_msg_hdr")
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .unwrap_or_else(|e| panic!("bindgen over the DPDK headers failed: {e}. {PACKAGE_HINT}"));
    bindings
        .write_to_file(out_dir.join("dpdk_bindings.rs"))
        .expect("cannot write dpdk_bindings.rs");

    let mut build = cc::Build::new();
    build
        .file(wrap_path.with_extension("c"))
        .file(shim_dir.join("levee_shim.c"))
        .include(&shim_dir)
        .warnings(false);
    for flag in &cflags {
        build.flag(flag);
    }
    build.compile("levee_dpdk_shim");

    // rte_eth_from_rings lives in the net_ring driver, which pkg-config does not list (drivers
    // are plugins); linking it by name resolves to the same file EAL's plugin loader opens.
    println!("cargo:rustc-link-lib=dylib=rte_net_ring");
    // Shared DPDK libraries: `-L` and `-l` from pkg-config; other linker flags (--as-needed) are
    // rustc's default already.
    for token in pkg_config(&["--libs"]).split_whitespace() {
        if let Some(dir) = token.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        } else if let Some(lib) = token.strip_prefix("-l") {
            println!("cargo:rustc-link-lib=dylib={lib}");
        }
    }
}
