//! The one JSON document every `vpnbench` subcommand writes and `vpnbench report` reads.
//!
//! `{"schema_version": 1, "kind": "vpnbench", "host": ..., "pipeline": [...], ...}`: each
//! subcommand fills its own section and leaves the others empty, and writes
//! `bench/results/<subcommand>.json`; `report` merges every file it is given. Fields are only
//! added within a schema version (the rule `docs/OPERATIONS.md` states for vpnctl's documents);
//! sections a reader does not know are ignored (`#[serde(default)]` everywhere).

use serde::{Deserialize, Serialize};

/// Bumped only when a field changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 1;

/// A whole result file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct BenchDoc {
    pub schema_version: u32,
    /// Always "vpnbench".
    pub kind: String,
    /// The subcommand that wrote it ("pipeline", "afxdp", "e2e", "sa", ...).
    pub command: String,
    /// The command line that produced it, for the README and the report.
    pub command_line: String,
    /// Seconds since the Unix epoch when the run started.
    pub started_unix: u64,
    pub host: Host,
    pub pipeline: Vec<PipelineRow>,
    pub afxdp: Vec<AfxdpPoint>,
    pub e2e: Vec<E2eRow>,
    /// `vpnbench e2e`: per configuration, the medians over its rounds of `e2e` (each field's
    /// median on its own; `rounds` says how many rounds).
    pub e2e_median: Vec<E2eRow>,
    pub sa_scale: Vec<SaScaleRow>,
    pub gcm: Vec<GcmRow>,
    /// The goals of issue 15, measured in this run (only those the run could measure).
    pub goals: Vec<Goal>,
    /// Free-form remarks the run wants in the report (why a goal was missed, what was skipped).
    pub notes: Vec<String>,
}

impl BenchDoc {
    pub fn new(command: &str) -> BenchDoc {
        BenchDoc {
            schema_version: SCHEMA_VERSION,
            kind: "vpnbench".into(),
            command: command.into(),
            command_line: std::env::args().collect::<Vec<_>>().join(" "),
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            host: Host::detect(),
            ..BenchDoc::default()
        }
    }
}

/// What the run ran on: figures from different CPUs are not comparable.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Host {
    pub cpu_model: String,
    pub logical_cpus: usize,
    pub kernel: String,
    /// Our AES-GCM path on this CPU (`vaes-avx512`, `vaes-avx2`, `aesni`, `portable`).
    pub gcm_path: String,
    pub vpnbench_version: String,
}

impl Host {
    pub fn detect() -> Host {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default();
        Host {
            cpu_model,
            logical_cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            gcm_path: dataplane::crypto::gcm::GcmPath::best().name().into(),
            vpnbench_version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

/// Latency percentiles in microseconds, from one (merged) HdrHistogram.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Percentiles {
    pub samples: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// (latency µs, fraction of samples at or below it): enough points to draw a CDF.
    pub cdf: Vec<(f64, f64)>,
}

/// `vpnbench pipeline`: workers on in-memory ports, no kernel.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct PipelineRow {
    /// "64", "1420" or "imix" (the IMIX is stated in `size_mix`).
    pub size: String,
    /// e.g. "7:4:1 of 64/576/1500" for the IMIX, the byte count otherwise.
    pub size_mix: String,
    /// "encap", "decap" or "encap+decap".
    pub stage: String,
    pub sas: u64,
    pub workers: usize,
    pub cores: Vec<usize>,
    pub packets: u64,
    /// Inner (plaintext) bytes, for Gbit/s.
    pub bytes: u64,
    pub seconds: f64,
    pub mpps: f64,
    pub gbps: f64,
    pub mpps_per_core: f64,
    pub ns_per_packet: f64,
    /// Packets the workers dropped (must be 0 for a valid run; counted, not assumed).
    pub dropped: u64,
}

/// `vpnbench afxdp`: one offered-load point of the AF_XDP generator through a tunnel.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct AfxdpPoint {
    /// Which tunnel: "plain", "ours-1w", "ours-2w", "strongswan-libipsec", "boringtun", "wireguard-go".
    pub config: String,
    /// Inner packet size in bytes (IP packet), or 0 for the IMIX.
    pub size: usize,
    pub offered_pps: f64,
    pub sent: u64,
    pub received: u64,
    pub received_pps: f64,
    pub loss_ratio: f64,
    /// Offered load as a fraction of the measured maximum (0.1, 0.5, 0.9), if this point is one of those.
    pub load_fraction: Option<f64>,
    /// One-way latency from the generator's timestamp to the sink.
    pub latency: Percentiles,
}

/// `vpnbench e2e`: one configuration in one round.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct E2eRow {
    /// As in [`AfxdpPoint::config`].
    pub config: String,
    pub round: u32,
    pub tcp_1_stream_gbps: f64,
    pub tcp_4_streams_gbps: f64,
    pub tcp_retransmits: u64,
    /// Small packets (64 B) through the tunnel, received per second (AF_XDP generator).
    pub small_rx_pps: f64,
    pub small_loss_ratio: f64,
    /// RTT through the tunnel when idle and under one saturating TCP stream.
    pub rtt_idle: Percentiles,
    pub rtt_loaded: Percentiles,
    /// Offloads as configured for this row ("off" in the tunnel topologies, "default" for the
    /// plain-forwarding reference with offloads).
    pub offloads: String,
    /// Retransmits of the 1-stream TCP run (`tcp_retransmits` is the 4-stream run's).
    pub tcp_1_retransmits: u64,
    /// How `small_rx_pps` was measured: "xsk" (the AF_XDP generator) or "iperf3-udp64"
    /// (iperf3 UDP, 64-byte payloads, unlimited rate, 2 streams: a stand-in that tops out
    /// near 100 kpps).
    pub small_method: String,
    /// Probes without a reply in the idle and loaded RTT runs (ping every 2 ms).
    pub rtt_idle_lost: u64,
    pub rtt_loaded_lost: u64,
    /// Throughput of the saturating TCP stream during `rtt_loaded`.
    pub rtt_loaded_gbps: f64,
    /// Share of the `rtt_loaded` run's wall time during which some runnable task waited for a
    /// CPU (Linux PSI, /proc/pressure/cpu "some"): packets a busy-polling worker holds wait this
    /// long whatever the ring sizes; 0 when the kernel has no PSI.
    pub rtt_loaded_cpu_wait: f64,
    /// Rounds this row stands for: 1 in `e2e`, the number of rounds in `e2e_median`.
    pub rounds: u32,
}

/// SA table scale: installs and lookups at 1k/100k/1M SAs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct SaScaleRow {
    pub sas: u64,
    /// Starting the dataplane's installer from a static SA file of this many SAs.
    pub static_install_seconds: f64,
    /// Installs per second through the shared-memory ring.
    pub ring_installs_per_s: f64,
    /// Inbound SPI lookup in a worker's replica, random SPIs, ns each.
    pub lookup_ns: f64,
    /// The parts of `static_install_seconds`: TOML parse, installer, worker replicas.
    pub static_parse_seconds: f64,
    pub static_apply_seconds: f64,
    pub static_replicas_seconds: f64,
    pub static_file_bytes: u64,
    /// Wall time of the ring installs.
    pub ring_seconds: f64,
    /// `lookup_ns` one lookup at a time (no batching).
    pub lookup_single_ns: f64,
    /// Lookups over a small set of SPIs repeated (its SAs stay in cache), batched and not.
    pub lookup_hot_batch_ns: f64,
    pub lookup_hot_single_ns: f64,
    /// Resident-set growth of installing this many SAs through the ring.
    pub ring_rss_bytes: u64,
    /// `size_of::<InboundSa>()` (heap parts of an SA not included).
    pub inbound_sa_bytes: u64,
}

/// The AES-GCM engine against the baselines in the same process.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct GcmRow {
    /// "ours-vaes-avx2", "ring", "ipsec-mb", ...
    pub implementation: String,
    /// 128 or 256.
    pub key_bits: usize,
    /// "seal", "open" or "esp-encap" (the full ESP encap of an inner packet of `bytes`).
    pub op: String,
    pub bytes: usize,
    pub ns_per_op: f64,
    pub gbps: f64,
    /// On our best path's row: the faster baseline at this size ("ring", "ipsec-mb").
    pub best_baseline: String,
    /// On our best path's row: ours / that baseline, median of paired rounds (< 1: faster).
    pub ours_over_best_baseline: f64,
}

/// One goal of issue 15 as measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Goal {
    /// Short id, e.g. "pipeline-2w-scaling".
    pub id: String,
    /// The goal in words, e.g. "pipeline with 2 workers >= 1.9x one worker".
    pub target: String,
    /// What was measured, in words with the figures.
    pub measured: String,
    pub met: bool,
    /// Why it was missed, measured (empty when met).
    pub reason: String,
}
