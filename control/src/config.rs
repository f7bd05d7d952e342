//! The TOML configuration file, strictly validated.
//!
//! Loaded with the `config` crate (file, then `LEVEE__SECTION__KEY` environment overrides),
//! deserialised with unknown keys refused, then checked as a whole: either every value is
//! usable and a complete [`Config`] comes back, or an error names the key and the problem and
//! nothing starts. `deploy/levee.toml` is the documented example.

use serde::Deserialize;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Highest lcore id Debian's DPDK build supports (RTE_MAX_LCORE = 128).
pub const MAX_LCORE: u32 = 128;

/// A configuration error: which key, what is wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("cannot read config {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("config key `{key}`: {problem}")]
    Invalid { key: String, problem: String },
}

fn invalid(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        problem: problem.into(),
    }
}

/// The whole file.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub eal: EalConfig,
    pub ports: PortsConfig,
    #[serde(default)]
    pub workers: WorkersConfig,
    #[serde(default)]
    pub pools: PoolsConfig,
    #[serde(default)]
    pub dataplane: DataplaneConfig,
    #[serde(default)]
    pub filter: FilterConfig,
    #[serde(default)]
    pub conntrack: ConntrackConfig,
    #[serde(default)]
    pub synproxy: SynproxyConfig,
    #[serde(default)]
    pub management: ManagementConfig,
}

/// `[management]`: the operator's side (API, metrics).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ManagementConfig {
    /// The JSON API's Unix socket (what `levee ctl` talks to). Empty: no socket. Default:
    /// `/run/levee/<eal.file_prefix>.sock` (`/run/levee/levee.sock` with the default prefix),
    /// so two levee processes on one host never share a socket.
    pub socket: Option<PathBuf>,
    /// Serve the JSON API on this TCP address too (`HOST:PORT`; no authentication, so keep it
    /// on a management network). None: Unix socket only.
    pub api_address: Option<String>,
    /// `/metrics` and `/healthz` over HTTP (`HOST:PORT`). Empty: off. When the default
    /// address is taken (another levee on the host), levee runs without metrics and says so;
    /// an address set here must be free.
    pub metrics_address: String,
    /// How long a commit waits for every worker to run the new generation, in milliseconds.
    pub commit_timeout_ms: u64,
    /// Largest API request, in bytes.
    pub max_request_bytes: usize,
    /// Most operations in one API batch.
    pub max_batch_ops: usize,
    /// Workers send conntrack events (for `levee ctl monitor` and `--ct-events`); off saves
    /// the workers a channel send per flow event.
    pub conntrack_events: bool,
}

/// The default metrics address: loopback only.
pub const DEFAULT_METRICS_ADDRESS: &str = "127.0.0.1:9478";
/// The default API socket (with the default `eal.file_prefix`).
pub const DEFAULT_SOCKET: &str = "/run/levee/levee.sock";
/// Where default sockets live.
pub const SOCKET_DIR: &str = "/run/levee";

impl Default for ManagementConfig {
    fn default() -> Self {
        ManagementConfig {
            socket: None,
            api_address: None,
            metrics_address: DEFAULT_METRICS_ADDRESS.to_owned(),
            commit_timeout_ms: 1000,
            max_request_bytes: 16 << 20,
            max_batch_ops: 100_000,
            conntrack_events: true,
        }
    }
}

impl ManagementConfig {
    /// The API's TCP address, if any.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api_address.as_deref().and_then(|a| a.parse().ok())
    }

    /// The metrics address, if any.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_address.parse().ok()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let addr = |key: &str, a: &str| {
            a.parse::<SocketAddr>().map(|_| ()).map_err(|_| {
                invalid(
                    key,
                    format!("{a:?} is not an address and port like 127.0.0.1:9478 or [::1]:9478"),
                )
            })
        };
        if let Some(a) = &self.api_address {
            addr("management.api_address", a)?;
        }
        if !self.metrics_address.is_empty() {
            addr("management.metrics_address", &self.metrics_address)?;
        }
        if !(1..=60_000).contains(&self.commit_timeout_ms) {
            return Err(invalid(
                "management.commit_timeout_ms",
                format!("{} is outside 1..=60000", self.commit_timeout_ms),
            ));
        }
        if !(1024..=256 << 20).contains(&self.max_request_bytes) {
            return Err(invalid(
                "management.max_request_bytes",
                format!("{} is outside 1024..=268435456", self.max_request_bytes),
            ));
        }
        if !(1..=crate::rules::MAX_OPS).contains(&self.max_batch_ops) {
            return Err(invalid(
                "management.max_batch_ops",
                format!("{} is outside 1..={}", self.max_batch_ops, crate::rules::MAX_OPS),
            ));
        }
        Ok(())
    }
}

/// `[synproxy]`: the SYN proxy that `synproxy` statements in the ruleset select traffic for.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SynproxyConfig {
    /// The cookie master secret: a file holding 32 hex digits (16 bytes), the same on every
    /// box of a fleet behind ECMP so each accepts the others' cookies. None: a random secret
    /// per start (a lone box).
    pub secret_file: Option<std::path::PathBuf>,
    /// Seconds per cookie counter tick (a cookie lives one to two ticks).
    pub cookie_period_secs: u32,
    /// Ticks per secret rotation (the previous secret is still accepted).
    pub rotation_ticks: u32,
    /// SYN-ACKs per second per worker (0: unlimited), so levee cannot be used as a reflector.
    pub reply_limit_pps: u64,
    /// Burst of the per-worker reply limit.
    pub reply_burst: u64,
    /// SYN-ACKs per second per destination prefix (/24, /48), 0: off.
    pub prefix_limit_pps: u64,
    /// TTL / hop limit of the packets the proxy originates.
    pub ttl: u8,
}

impl Default for SynproxyConfig {
    fn default() -> Self {
        SynproxyConfig {
            secret_file: None,
            cookie_period_secs: 64,
            rotation_ticks: 64,
            reply_limit_pps: 0,
            reply_burst: 10_000,
            prefix_limit_pps: 0,
            ttl: 64,
        }
    }
}

/// `[conntrack]`: per-worker connection tracking shards.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConntrackConfig {
    /// Track connections (`ct state` etc. in rules). Off: every packet is `untracked`.
    pub enabled: bool,
    /// Entries per worker shard (allocated at start, about 125 bytes each).
    pub entries_per_worker: u32,
    /// `nf_conntrack_tcp_be_liberal`: out-of-window TCP segments are not INVALID.
    pub tcp_liberal: bool,
    /// `nf_conntrack_tcp_loose`: pick up TCP connections mid-stream (from an ACK).
    pub tcp_loose: bool,
    /// Keep a 128-bit `ct label` per entry (16 more bytes each).
    pub labels: bool,
    /// Entries the expiry timer wheel may examine per worker loop iteration.
    pub expire_budget: u32,
}

impl Default for ConntrackConfig {
    fn default() -> Self {
        ConntrackConfig {
            enabled: true,
            entries_per_worker: 262_144,
            tcp_liberal: false,
            tcp_loose: true,
            labels: false,
            expire_budget: 64,
        }
    }
}

/// `[filter]`: the ruleset.
#[derive(Clone, Debug, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct FilterConfig {
    /// An nft-syntax ruleset file loaded at start (relative paths are relative to the config
    /// file). None: every frame is forwarded.
    pub ruleset: Option<std::path::PathBuf>,
}

/// `[eal]`: how DPDK's environment is initialised.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EalConfig {
    /// The lcore the control thread (EAL main lcore) runs on; it sleeps most of the time.
    pub main_core: u32,
    /// `--file-prefix`: must differ between DPDK processes running at once.
    pub file_prefix: String,
    /// Further EAL arguments, verbatim (e.g. `--no-huge`, `-m 512`, `--log-level`). Lcores,
    /// devices and the file prefix come from the keys above and may not be repeated here.
    pub args: Vec<String>,
}

impl Default for EalConfig {
    fn default() -> Self {
        EalConfig {
            main_core: 0,
            file_prefix: "levee".to_owned(),
            args: Vec::new(),
        }
    }
}

/// `[ports]`: the two sides of the bump in the wire.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PortsConfig {
    /// The internet-facing port.
    pub outside: PortConfig,
    /// The server-facing port.
    pub inside: PortConfig,
}

/// One port.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// A PCI address (`0000:03:00.0`) or a DPDK virtual device string
    /// (`net_af_packet0,iface=vc0`, `net_ring0`, `net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap`).
    pub device: String,
}

/// `[workers]`: one worker per core.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WorkersConfig {
    /// The lcores that run workers; worker *i* owns RX/TX queue *i* of both ports.
    pub cores: Vec<u32>,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        WorkersConfig { cores: vec![1] }
    }
}

/// `[pools]`: packet buffers and descriptor rings.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PoolsConfig {
    /// Mbufs in each worker's mempool (a power of two minus one is most memory-efficient).
    pub mbufs_per_worker: u32,
    /// Per-lcore mempool cache size (at most 512, DPDK's limit).
    pub cache: u32,
    /// RX descriptors per queue.
    pub rx_desc: u16,
    /// TX descriptors per queue.
    pub tx_desc: u16,
}

impl Default for PoolsConfig {
    fn default() -> Self {
        PoolsConfig {
            mbufs_per_worker: 8191,
            cache: 256,
            rx_desc: 1024,
            tx_desc: 1024,
        }
    }
}

/// `[dataplane]`: the worker loop.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DataplaneConfig {
    /// Packets per RX burst (1..=64).
    pub burst: u16,
    /// Packets buffered per TX port before new ones are dropped.
    pub tx_buffer: u16,
    /// A partly filled TX buffer is sent after this many microseconds.
    pub drain_us: u32,
    /// Capacity of each worker-to-worker hand-off ring (a power of two).
    pub handoff_ring: u32,
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        DataplaneConfig {
            burst: 32,
            tx_buffer: 512,
            drain_us: 100,
            handoff_ring: 1024,
        }
    }
}

/// What a port's device string names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Device {
    /// A PCI device, by address (`-a` to EAL).
    Pci(String),
    /// A virtual device (`--vdev` to EAL); `name` is the part before the first comma.
    Vdev { name: String, spec: String },
}

impl Device {
    /// Parses a device string; the error says what was expected.
    pub fn parse(s: &str) -> Result<Device, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty device string".into());
        }
        if is_pci_address(s) {
            return Ok(Device::Pci(s.to_owned()));
        }
        let name = s.split(',').next().unwrap_or("");
        let valid_name = name.starts_with("net_")
            && name.len() > 4
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_name {
            return Err(format!(
                "{s:?} is neither a PCI address (like 0000:03:00.0) nor a DPDK vdev string (like net_af_packet0,iface=eth1)"
            ));
        }
        for kv in s.split(',').skip(1) {
            if kv.split_once('=').is_none_or(|(k, _)| k.is_empty()) {
                return Err(format!("vdev option {kv:?} in {s:?} is not KEY=VALUE"));
            }
        }
        Ok(Device::Vdev {
            name: name.to_owned(),
            spec: s.to_owned(),
        })
    }

    /// The name DPDK registers the port under (what `rte_eth_dev_get_port_by_name` finds).
    pub fn port_name(&self) -> &str {
        match self {
            Device::Pci(a) => a,
            Device::Vdev { name, .. } => name,
        }
    }
}

fn is_pci_address(s: &str) -> bool {
    // [DDDD:]BB:DD.F, hexadecimal, function 0-7.
    let (rest, func) = match s.rsplit_once('.') {
        Some(x) => x,
        None => return false,
    };
    if func.len() != 1 || !matches!(func.as_bytes()[0], b'0'..=b'7') {
        return false;
    }
    let parts: Vec<&str> = rest.split(':').collect();
    let hex = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit());
    match parts.as_slice() {
        [bus, dev] => hex(bus, 2) && hex(dev, 2),
        [dom, bus, dev] => hex(dom, 4) && hex(bus, 2) && hex(dev, 2),
        _ => false,
    }
}

/// EAL options that the config file's keys own; repeating them in `eal.args` is refused.
const RESERVED_EAL_ARGS: &[(&str, &str)] = &[
    ("-l", "workers.cores and eal.main_core"),
    ("--lcores", "workers.cores and eal.main_core"),
    ("-c", "workers.cores and eal.main_core"),
    ("--main-lcore", "eal.main_core"),
    ("--vdev", "ports.*.device"),
    ("-a", "ports.*.device"),
    ("--allow", "ports.*.device"),
    ("--file-prefix", "eal.file_prefix"),
];

/// Whether `key` is a plain key (letters, digits, `_`, `-`): every levee setting is.
fn plain_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Refuses keys that are not plain, before `config` sees them: it reads a key as a path
/// expression, so a quoted key such as `"a[-99999999999]"` made it grow an array to that
/// length (out of memory). No levee setting has such a key. A file that is not valid TOML is
/// left to `config`, which reports where.
fn check_keys(text: &str, origin: &str) -> Result<(), ConfigError> {
    fn walk(t: &toml::Table, at: &str, origin: &str) -> Result<(), ConfigError> {
        for (k, v) in t {
            let full = if at.is_empty() {
                k.clone()
            } else {
                format!("{at}.{k}")
            };
            if !plain_key(k) {
                return Err(ConfigError::Load {
                    path: origin.to_owned(),
                    reason: format!(
                        "key {full:?} is not a levee setting (keys are letters, digits, `_` and `-`)"
                    ),
                });
            }
            match v {
                toml::Value::Table(t) => walk(t, &full, origin)?,
                toml::Value::Array(a) => {
                    for t in a.iter().filter_map(toml::Value::as_table) {
                        walk(t, &full, origin)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
    match text.parse::<toml::Table>() {
        Ok(t) => walk(&t, "", origin),
        Err(_) => Ok(()),
    }
}

impl Config {
    /// Reads `path` (TOML) plus `LEVEE__…` environment overrides and validates everything.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let load_err = |reason: String| ConfigError::Load {
            path: path.display().to_string(),
            reason,
        };
        if !path.is_file() {
            return Err(load_err("no such file".into()));
        }
        let text = std::fs::read_to_string(path).map_err(|e| load_err(e.to_string()))?;
        check_keys(&text, &path.display().to_string())?;
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if let Some(key) = name.strip_prefix("LEVEE__") {
                if !key.split("__").all(plain_key) {
                    return Err(load_err(format!(
                        "environment variable {name} is not a levee setting (keys are letters, digits, `_` and `-`)"
                    )));
                }
            }
        }
        let raw = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("LEVEE")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            )
            .build()
            .map_err(|e| load_err(e.to_string()))?;
        let cfg: Config = raw.try_deserialize().map_err(|e| load_err(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses TOML text (no environment overrides) and validates it; for tests and `lab`.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        check_keys(text, "<text>")?;
        let raw = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .map_err(|e| ConfigError::Load {
                path: "<text>".into(),
                reason: e.to_string(),
            })?;
        let cfg: Config = raw.try_deserialize().map_err(|e| ConfigError::Load {
            path: "<text>".into(),
            reason: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every value and their combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.management.validate()?;
        let ct = &self.conntrack;
        if ct.enabled && !(1..=1 << 30).contains(&ct.entries_per_worker) {
            return Err(invalid(
                "conntrack.entries_per_worker",
                format!("{} is outside 1..=1073741824", ct.entries_per_worker),
            ));
        }
        if ct.enabled && ct.expire_budget == 0 {
            return Err(invalid(
                "conntrack.expire_budget",
                "0 would never expire an entry; use at least 1 (default 64)",
            ));
        }
        let outside =
            Device::parse(&self.ports.outside.device).map_err(|p| invalid("ports.outside.device", p))?;
        let inside =
            Device::parse(&self.ports.inside.device).map_err(|p| invalid("ports.inside.device", p))?;
        if outside.port_name() == inside.port_name() {
            return Err(invalid(
                "ports.inside.device",
                format!(
                    "names the same device as ports.outside.device ({})",
                    inside.port_name()
                ),
            ));
        }

        let cores = &self.workers.cores;
        if cores.is_empty() {
            return Err(invalid("workers.cores", "at least one worker core is needed"));
        }
        if cores.len() > 64 {
            return Err(invalid(
                "workers.cores",
                format!("{} workers; at most 64 are supported", cores.len()),
            ));
        }
        let mut seen = BTreeSet::new();
        for &c in cores {
            if c >= MAX_LCORE {
                return Err(invalid(
                    "workers.cores",
                    format!("core {c} is beyond the highest lcore {}", MAX_LCORE - 1),
                ));
            }
            if !seen.insert(c) {
                return Err(invalid("workers.cores", format!("core {c} is listed twice")));
            }
            if c == self.eal.main_core {
                return Err(invalid(
                    "workers.cores",
                    format!("core {c} is also eal.main_core; the control thread needs its own lcore"),
                ));
            }
        }
        if self.eal.main_core >= MAX_LCORE {
            return Err(invalid(
                "eal.main_core",
                format!(
                    "{} is beyond the highest lcore {}",
                    self.eal.main_core,
                    MAX_LCORE - 1
                ),
            ));
        }
        let prefix = &self.eal.file_prefix;
        if prefix.is_empty()
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(invalid(
                "eal.file_prefix",
                format!("{prefix:?} must be non-empty letters, digits, '-' or '_'"),
            ));
        }
        for a in &self.eal.args {
            let flag = a.split('=').next().unwrap_or(a);
            if let Some((_, owner)) = RESERVED_EAL_ARGS.iter().find(|(f, _)| *f == flag) {
                return Err(invalid(
                    "eal.args",
                    format!("{a:?} is set by {owner}; remove it from eal.args"),
                ));
            }
        }
        let any_pci = matches!(outside, Device::Pci(_)) || matches!(inside, Device::Pci(_));
        if any_pci && self.eal.args.iter().any(|a| a == "--no-pci") {
            return Err(invalid(
                "eal.args",
                "\"--no-pci\" conflicts with a PCI port device",
            ));
        }

        let p = &self.pools;
        if p.rx_desc == 0 || p.tx_desc == 0 {
            return Err(invalid(
                if p.rx_desc == 0 {
                    "pools.rx_desc"
                } else {
                    "pools.tx_desc"
                },
                "must be at least 1",
            ));
        }
        if p.cache > 512 {
            return Err(invalid(
                "pools.cache",
                format!("{} exceeds DPDK's per-lcore cache limit of 512", p.cache),
            ));
        }
        let d = &self.dataplane;
        if !(1..=64).contains(&d.burst) {
            return Err(invalid(
                "dataplane.burst",
                format!("{} is outside 1..=64", d.burst),
            ));
        }
        if d.tx_buffer < d.burst {
            return Err(invalid(
                "dataplane.tx_buffer",
                format!("{} is smaller than dataplane.burst ({})", d.tx_buffer, d.burst),
            ));
        }
        if d.drain_us > 100_000 {
            return Err(invalid(
                "dataplane.drain_us",
                format!("{} µs would hold packets for over 100 ms", d.drain_us),
            ));
        }
        if !d.handoff_ring.is_power_of_two() || d.handoff_ring < 64 {
            return Err(invalid(
                "dataplane.handoff_ring",
                format!("{} must be a power of two ≥ 64", d.handoff_ring),
            ));
        }
        // Every buffer a worker can hold at once: both ports' RX and TX rings, its TX buffers,
        // one burst in hand, and the per-lcore cache.
        let need =
            2 * (p.rx_desc as u32 + p.tx_desc as u32) + 2 * d.tx_buffer as u32 + d.burst as u32 + p.cache;
        if p.mbufs_per_worker < need {
            return Err(invalid(
                "pools.mbufs_per_worker",
                format!(
                    "{} is too few: 2×(rx_desc {} + tx_desc {}) + 2×tx_buffer {} + burst {} + cache {} = {need} can be held at once",
                    p.mbufs_per_worker, p.rx_desc, p.tx_desc, d.tx_buffer, d.burst, p.cache
                ),
            ));
        }
        Ok(())
    }

    /// The API's Unix socket, if any (see [`ManagementConfig::socket`]).
    pub fn api_socket(&self) -> Option<PathBuf> {
        match &self.management.socket {
            Some(p) if p.as_os_str().is_empty() => None,
            Some(p) => Some(p.clone()),
            None => Some(Path::new(SOCKET_DIR).join(format!("{}.sock", self.eal.file_prefix))),
        }
    }

    /// The EAL argument vector this configuration implies (without argv\[0\]).
    pub fn eal_args(&self) -> Vec<String> {
        let mut lcores = vec![self.eal.main_core];
        lcores.extend(&self.workers.cores);
        let mut args = vec![
            "-l".to_owned(),
            lcores.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
            "--main-lcore".to_owned(),
            self.eal.main_core.to_string(),
            "--file-prefix".to_owned(),
            self.eal.file_prefix.clone(),
        ];
        let mut any_pci = false;
        for port in [&self.ports.outside, &self.ports.inside] {
            match Device::parse(&port.device).expect("validated") {
                Device::Pci(addr) => {
                    any_pci = true;
                    args.push("-a".into());
                    args.push(addr);
                }
                Device::Vdev { spec, .. } => {
                    args.push("--vdev".into());
                    args.push(spec);
                }
            }
        }
        if !any_pci && !self.eal.args.iter().any(|a| a == "--no-pci") {
            args.push("--no-pci".into());
        }
        args.extend(self.eal.args.iter().cloned());
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[ports.outside]
device = "net_ring0"
[ports.inside]
device = "net_ring1"
"#;

    fn with(extra: &str) -> Result<Config, ConfigError> {
        Config::from_toml(&format!("{MINIMAL}\n{extra}"))
    }

    /// A quoted key that `config` would read as an array index (the `config` fuzz target's
    /// crash: it grew an array to that length) is refused with its name, at any depth.
    #[test]
    fn keys_that_are_not_settings_are_refused_before_config_reads_them() {
        for text in [
            "[\"-[-88888888884]\"]\n",
            "[ports.\"outside[9999999999]\"]\ndevice = \"net_ring0\"\n",
            "[eal]\n\"a.b\" = 1\n",
        ] {
            match Config::from_toml(text) {
                Err(ConfigError::Load { reason, .. }) => {
                    assert!(reason.contains("is not a levee setting"), "{text}: {reason}")
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        assert!(
            with("[conntrack]\nentries_per_worker = 1024").is_ok(),
            "plain keys pass"
        );
    }

    fn key_of(e: ConfigError) -> String {
        match e {
            ConfigError::Invalid { key, .. } => key,
            ConfigError::Load { reason, .. } => {
                panic!("expected a validation error, got load error {reason}")
            }
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::from_toml(MINIMAL).unwrap();
        assert_eq!(c.workers.cores, vec![1]);
        assert_eq!(c.pools, PoolsConfig::default());
        assert_eq!(c.dataplane.burst, 32);
        assert_eq!(
            c.eal_args(),
            [
                "-l",
                "0,1",
                "--main-lcore",
                "0",
                "--file-prefix",
                "levee",
                "--vdev",
                "net_ring0",
                "--vdev",
                "net_ring1",
                "--no-pci"
            ]
        );
    }

    #[test]
    fn pci_ports_use_allow_list_and_no_no_pci() {
        let c = Config::from_toml(
            "[ports.outside]\ndevice = \"0000:03:00.0\"\n[ports.inside]\ndevice = \"03:00.1\"\n[workers]\ncores = [2, 3]\n[eal]\nmain_core = 1\nargs = [\"-n\", \"4\"]",
        )
        .unwrap();
        assert_eq!(
            c.eal_args(),
            [
                "-l",
                "1,2,3",
                "--main-lcore",
                "1",
                "--file-prefix",
                "levee",
                "-a",
                "0000:03:00.0",
                "-a",
                "03:00.1",
                "-n",
                "4"
            ]
        );
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        for bad in [
            "[workers]\ncorez = [1]",
            "[dataplane]\nburst_size = 4",
            "[bogus]\nx = 1",
            "[ports.outside]\ndevice = \"net_ring0\"\nspeed = 1",
        ] {
            let text = if bad.starts_with("[ports.outside]") {
                format!("{bad}\n[ports.inside]\ndevice = \"net_ring1\"")
            } else {
                format!("{MINIMAL}\n{bad}")
            };
            let err = Config::from_toml(&text).unwrap_err().to_string();
            let name = bad
                .lines()
                .nth(if bad.starts_with("[bogus]") { 0 } else { 1 })
                .unwrap();
            let name = name
                .trim_matches(|c| c == '[' || c == ']')
                .split(' ')
                .next()
                .unwrap();
            assert!(err.contains(name), "error {err:?} does not name {name:?}");
        }
    }

    #[test]
    fn management_defaults_and_overrides() {
        let c = Config::from_toml(MINIMAL).unwrap();
        assert_eq!(c.api_socket(), Some(PathBuf::from(DEFAULT_SOCKET)));
        let c2 = with("[eal]\nfile_prefix = \"lab7\"").unwrap();
        assert_eq!(c2.api_socket(), Some(PathBuf::from("/run/levee/lab7.sock")));
        assert_eq!(
            c.management.metrics_addr(),
            Some("127.0.0.1:9478".parse().unwrap())
        );
        assert_eq!(c.management.api_addr(), None);
        let c = with("[management]\nsocket = \"\"\nmetrics_address = \"\"\napi_address = \"[::1]:9479\"")
            .unwrap();
        assert_eq!(c.api_socket(), None);
        assert_eq!(c.management.metrics_addr(), None);
        assert_eq!(c.management.api_addr(), Some("[::1]:9479".parse().unwrap()));
        let err = with("[management]\nsocktet = \"/x\"").unwrap_err().to_string();
        assert!(err.contains("socktet"), "{err}");
    }

    #[test]
    fn missing_ports_is_an_error() {
        let err = Config::from_toml("[workers]\ncores = [1]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("ports"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("[workers]\ncores = []", "workers.cores"),
            ("[workers]\ncores = [1, 1]", "workers.cores"),
            ("[workers]\ncores = [0]", "workers.cores"),
            ("[workers]\ncores = [200]", "workers.cores"),
            ("[eal]\nmain_core = 300\n[workers]\ncores = [1]", "eal.main_core"),
            ("[eal]\nfile_prefix = \"a b\"", "eal.file_prefix"),
            ("[eal]\nargs = [\"-l\", \"0-3\"]", "eal.args"),
            ("[eal]\nargs = [\"--vdev=net_null0\"]", "eal.args"),
            ("[dataplane]\nburst = 0", "dataplane.burst"),
            ("[dataplane]\nburst = 65", "dataplane.burst"),
            ("[dataplane]\ntx_buffer = 8", "dataplane.tx_buffer"),
            ("[dataplane]\nhandoff_ring = 1000", "dataplane.handoff_ring"),
            ("[dataplane]\ndrain_us = 1000000", "dataplane.drain_us"),
            ("[pools]\nmbufs_per_worker = 100", "pools.mbufs_per_worker"),
            ("[pools]\ncache = 1000", "pools.cache"),
            ("[pools]\nrx_desc = 0", "pools.rx_desc"),
            (
                "[conntrack]\nentries_per_worker = 0",
                "conntrack.entries_per_worker",
            ),
            (
                "[conntrack]\nentries_per_worker = 2000000000",
                "conntrack.entries_per_worker",
            ),
            ("[conntrack]\nexpire_budget = 0", "conntrack.expire_budget"),
            (
                "[management]\nmetrics_address = \"localhost\"",
                "management.metrics_address",
            ),
            (
                "[management]\napi_address = \"1.2.3.4\"",
                "management.api_address",
            ),
            (
                "[management]\ncommit_timeout_ms = 0",
                "management.commit_timeout_ms",
            ),
            (
                "[management]\nmax_request_bytes = 10",
                "management.max_request_bytes",
            ),
            ("[management]\nmax_batch_ops = 0", "management.max_batch_ops"),
        ];
        for (extra, key) in cases {
            assert_eq!(key_of(with(extra).unwrap_err()), key, "for {extra:?}");
        }
    }

    #[test]
    fn wrong_types_are_load_errors_naming_the_key() {
        let err = with("[dataplane]\nburst = \"many\"").unwrap_err().to_string();
        assert!(err.contains("burst"), "{err}");
        let err = with("[pools]\nrx_desc = -5").unwrap_err().to_string();
        assert!(err.contains("rx_desc"), "{err}");
    }

    #[test]
    fn device_strings() {
        assert_eq!(
            Device::parse("0000:03:00.0"),
            Ok(Device::Pci("0000:03:00.0".into()))
        );
        assert_eq!(Device::parse("af:00.7"), Ok(Device::Pci("af:00.7".into())));
        assert_eq!(
            Device::parse("net_af_packet0,iface=vc0,qpairs=2")
                .unwrap()
                .port_name(),
            "net_af_packet0"
        );
        for bad in [
            "",
            "eth0",
            "0000:03:00.9",
            "net_",
            "net_ring0,iface",
            "net_ring0,=x",
            "net ring0",
        ] {
            assert!(Device::parse(bad).is_err(), "{bad:?} accepted");
        }
        let err =
            Config::from_toml("[ports.outside]\ndevice = \"eth0\"\n[ports.inside]\ndevice = \"net_ring1\"")
                .unwrap_err();
        assert_eq!(key_of(err), "ports.outside.device");
        let err = Config::from_toml(
            "[ports.outside]\ndevice = \"net_ring0\"\n[ports.inside]\ndevice = \"net_ring0,x=1\"",
        )
        .unwrap_err();
        assert_eq!(key_of(err), "ports.inside.device");
    }

    #[test]
    fn no_pci_with_pci_port_is_refused() {
        let err = Config::from_toml("[ports.outside]\ndevice = \"0000:03:00.0\"\n[ports.inside]\ndevice = \"net_ring1\"\n[eal]\nargs = [\"--no-pci\"]").unwrap_err();
        assert_eq!(key_of(err), "eal.args");
    }

    proptest::proptest! {
        /// Whatever numbers an operator writes, the loader either accepts exactly the values
        /// that satisfy the documented rules or names the offending key; it never panics.
        #[test]
        fn numbers_are_accepted_exactly_when_valid(
            burst in 0u16..100, tx_buffer in 0u16..2000, drain_us in 0u32..200_000,
            ring in 0u32..5000, mbufs in 0u32..20_000, cache in 0u32..700,
            cores in proptest::collection::vec(0u32..140, 0..5), main_core in 0u32..140,
        ) {
            let cores_s = cores.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
            let text = format!(
                "{MINIMAL}\n[eal]\nmain_core = {main_core}\n[workers]\ncores = [{cores_s}]\n\
                 [pools]\nmbufs_per_worker = {mbufs}\ncache = {cache}\n\
                 [dataplane]\nburst = {burst}\ntx_buffer = {tx_buffer}\ndrain_us = {drain_us}\nhandoff_ring = {ring}\n"
            );
            let mut unique = cores.clone();
            unique.sort_unstable();
            unique.dedup();
            let need = 2 * (1024 + 1024) + 2 * tx_buffer as u32 + burst as u32 + cache;
            let valid = (1..=64).contains(&burst)
                && tx_buffer >= burst
                && drain_us <= 100_000
                && ring.is_power_of_two() && ring >= 64
                && cache <= 512
                && mbufs >= need
                && !cores.is_empty()
                && unique.len() == cores.len()
                && cores.iter().all(|&c| c < MAX_LCORE && c != main_core)
                && main_core < MAX_LCORE;
            match Config::from_toml(&text) {
                Ok(c) => {
                    proptest::prop_assert!(valid, "accepted an invalid config:\n{}", text);
                    proptest::prop_assert_eq!(c.dataplane.burst, burst);
                    proptest::prop_assert_eq!(&c.workers.cores, &cores);
                }
                Err(ConfigError::Invalid { key, .. }) => {
                    proptest::prop_assert!(!valid, "refused a valid config ({}):\n{}", key, text);
                }
                Err(e) => proptest::prop_assert!(false, "unexpected load error {}", e),
            }
        }
    }
}
