//! `vpnbench`'s command line (clap). Each subcommand's arguments live here so `--help` shows
//! them all; the work is in the module of the same name.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "vpnbench",
    version,
    about = "Throughput and latency of the IPsec dataplane: in memory, over AF_XDP, end to end against other tunnels"
)]
pub struct Cli {
    /// Where JSON, plots and the report go.
    #[arg(long, global = true, default_value = "bench/results")]
    pub out_dir: PathBuf,
    /// No progress bars (CI, logs).
    #[arg(long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Workers on zero-allocation in-memory ports (no kernel): encap then decap, Mpps per core.
    Pipeline(PipelineArgs),
    /// A packet generator and sink on our AF_XDP layer in the client namespaces: rate, loss,
    /// one-way latency percentiles.
    Afxdp(AfxdpArgs),
    /// One topology, interleaved rounds: plain forwarding, ours (1 and 2 workers), strongSwan
    /// kernel-libipsec, boringtun, wireguard-go.
    E2e(E2eArgs),
    /// SA table scale: install and lookup at 1k / 100k / 1M SAs.
    Sa(SaArgs),
    /// Plots (SVG) and a markdown summary from the JSON files.
    Report(ReportArgs),
    /// Internal: the AF_XDP generator/sink process run inside a namespace by `afxdp` and `e2e`.
    #[command(hide = true)]
    Xsk(XskArgs),
}

#[derive(Debug, Args)]
pub struct PipelineArgs {
    /// Packet sizes: byte counts and/or "imix".
    #[arg(long, value_delimiter = ',', default_value = "64,1420,imix")]
    pub sizes: Vec<String>,
    /// SA counts to run with.
    #[arg(long, value_delimiter = ',', default_value = "1,10000")]
    pub sas: Vec<u64>,
    /// Worker counts (1..=N), each pinned to its own core when there are enough.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub workers: Vec<usize>,
    /// Seconds per point.
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
    /// Exactly this many packets per point instead of a duration (the CI smoke run: counts
    /// in and out must match exactly).
    #[arg(long)]
    pub packets: Option<u64>,
}

#[derive(Debug, Args)]
pub struct AfxdpArgs {
    /// Path to the dataplane binary.
    #[arg(long, default_value = "target/release/dataplane")]
    pub dataplane: PathBuf,
    /// Workers per gateway.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Inner packet sizes (bytes).
    #[arg(long, value_delimiter = ',', default_value = "64,1420")]
    pub sizes: Vec<usize>,
    /// Seconds per offered-load point.
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
    /// The CI smoke form: a fixed small count at a low rate; every packet must arrive once.
    #[arg(long)]
    pub smoke: bool,
}

#[derive(Debug, Args)]
pub struct E2eArgs {
    /// Path to the dataplane binary.
    #[arg(long, default_value = "target/release/dataplane")]
    pub dataplane: PathBuf,
    /// Rounds; configurations are interleaved within each round; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Configurations to run (default: all whose tools are installed).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Install the peers first (boringtun-cli via cargo, Debian wireguard-go, strongSwan).
    #[arg(long)]
    pub install: bool,
    /// Summarize a recorded run of scripts/vpnbench_e2e.py (its --out file) instead of
    /// measuring: percentiles, medians, ratios and goals from the recorded rows.
    #[arg(long)]
    pub driver_json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SaArgs {
    /// SA counts.
    #[arg(long, value_delimiter = ',', default_value = "1000,100000,1000000")]
    pub sas: Vec<u64>,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// JSON files to read (default: every *.json in --out-dir).
    pub inputs: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct XskArgs {
    /// "gen" or "sink" (and whatever the afxdp module needs; it owns these arguments).
    pub role: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}
