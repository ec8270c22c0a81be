//! `dataplane`: the VPN concentrator's packet engine on AF_XDP.
//!
//! Takes SAs and policies from the shared-memory ring (iked, `vpnctl`) and/or a static TOML
//! file — both through the same installer — attaches the XDP program to the outside (WAN)
//! and inside (LAN) interfaces, binds an AF_XDP socket on every queue of both, and runs one
//! poll-mode worker per configured core. Exits cleanly on SIGINT/SIGTERM, printing its
//! counters; the XDP program goes away with the process.
//!
//! This file is argument parsing and signals; the process is [`dataplane::daemon::run`].
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use dataplane::daemon::{self, Config};
use dataplane::io::afxdp::BindMode;
use dataplane::io::xdp::AttachMode;
use tracing::error;

#[derive(Parser, Debug)]
#[command(
    name = "dataplane",
    version,
    about = "IPsec ESP dataplane on AF_XDP; SAs from iked through a shared-memory ring, or from a static file"
)]
struct Args {
    /// The outside (WAN) interface: ESP arrives and leaves here.
    #[arg(long)]
    outside: String,
    /// The inside (LAN) interface: clear traffic arrives and leaves here.
    #[arg(long)]
    inside: String,
    /// TOML file of manually keyed SAs and policies (see docs/ARCHITECTURE.md, "Static
    /// SAs"), installed at start through the same path as ring records.
    #[arg(long)]
    sa_file: Option<PathBuf>,
    /// Shared-memory ring to the control plane: /dev/shm/NAME, created if absent, else
    /// attached (so either side may restart). SAs, policies and resyncs arrive on it;
    /// acks, acquires, lifetimes and unknown SPIs leave on it.
    #[arg(long)]
    ring: Option<String>,
    /// Slots per ring direction when this process creates the ring file.
    #[arg(long, default_value_t = 4096)]
    ring_slots: u32,
    /// Counters file /dev/shm/NAME (default: RING.counters with --ring): per-worker and
    /// per-SA counters for `vpnctl` and monitoring, and the sequence leases that let a
    /// restarted dataplane resume its SAs without reusing a sequence number.
    #[arg(long)]
    counters: Option<String>,
    /// SA slots in the counters file (one per installed SA).
    #[arg(long, default_value_t = 131072)]
    counter_slots: usize,
    /// Number of poll-mode workers (threads); queues are dealt out round-robin.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// CPU cores to pin the workers to, comma-separated, by worker (default: cores that no
    /// other running dataplane on this machine uses first, read from their /dev/shm/*.info
    /// files, then the least used; the choice is logged).
    #[arg(long, value_delimiter = ',')]
    cores: Vec<usize>,
    /// XDP attach mode: native driver mode, or generic skb mode.
    #[arg(long, value_enum, default_value_t = AttachMode::Driver)]
    xdp_mode: AttachMode,
    /// AF_XDP bind mode: try zero-copy then fall back (auto), or force one.
    #[arg(long, value_enum, default_value_t = Bind::Auto)]
    bind: Bind,
    /// UMEM frames per worker.
    #[arg(long, default_value_t = 4096)]
    frames: u32,
    /// Packets per batch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Entries of each AF_XDP ring (rx, tx, fill, completion; a power of two).
    #[arg(long, default_value_t = dataplane::io::afxdp_io::AfXdpConfig::default().ring_size)]
    ring_size: u32,
    /// Empty polls before an idle worker blocks in poll(2).
    #[arg(long, default_value_t = dataplane::worker::policy::IDLE_POLLS)]
    idle_polls: u32,
    /// Bounded queueing: packets left in a side's receive rings after a batch above which
    /// the queue counts as standing; one that stands for --aqm-interval-us is dropped at the
    /// head, CoDel-style (counted as aqm_standing_queue). 0 (the default) turns it off:
    /// on until its effect is measured on a quiet machine it could drop packets a rekey
    /// must not lose; `--aqm-limit 64` is the suggested setting.
    #[arg(long, default_value_t = 0)]
    aqm_limit: usize,
    /// The AQM's interval, in microseconds.
    #[arg(long, default_value_t = dataplane::worker::policy::AQM_INTERVAL.as_micros() as u64)]
    aqm_interval_us: u64,
    /// Write counters as JSON to this file every --stats-interval-ms and at exit.
    #[arg(long)]
    stats_file: Option<PathBuf>,
    /// How often to rewrite --stats-file, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    stats_interval_ms: u64,
    /// bpffs directory for the pinned XDP links and maps that keep protected traffic
    /// dropped while this process is down (default /sys/fs/bpf/xdp-ipsec/<inside>).
    #[arg(long)]
    pin_dir: Option<PathBuf>,
    /// While no dataplane runs, let the kernel forward traffic between the protected
    /// networks IN CLEAR instead of dropping it. Off by default (fail-closed).
    #[arg(long)]
    fail_open: bool,
    /// Remove the pinned XDP links and maps (--pin-dir) and exit: the XDP programs leave
    /// both interfaces and nothing is protected any more.
    #[arg(long)]
    detach: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Bind {
    Auto,
    Copy,
    ZeroCopy,
}

impl From<Args> for Config {
    fn from(a: Args) -> Config {
        let pin_dir = a
            .pin_dir
            .clone()
            .unwrap_or_else(|| dataplane::io::xdp::default_pin_dir(&a.inside));
        Config {
            outside: a.outside,
            inside: a.inside,
            sa_file: a.sa_file,
            ring: a.ring,
            ring_slots: a.ring_slots,
            counters: a.counters,
            counter_slots: a.counter_slots,
            workers: a.workers,
            cores: a.cores,
            xdp_mode: a.xdp_mode,
            bind: match a.bind {
                Bind::Auto => BindMode::Auto,
                Bind::Copy => BindMode::Copy,
                Bind::ZeroCopy => BindMode::ZeroCopy,
            },
            frames: a.frames,
            batch: a.batch,
            ring_size: a.ring_size,
            idle_polls: a.idle_polls,
            aqm_limit: a.aqm_limit,
            aqm_interval: Duration::from_micros(a.aqm_interval_us),
            stats_file: a.stats_file,
            stats_interval: Duration::from_millis(a.stats_interval_ms),
            pin_dir,
            fail_open: a.fail_open,
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: logs go to files and journals as plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    if args.detach {
        let dir = args
            .pin_dir
            .clone()
            .unwrap_or_else(|| dataplane::io::xdp::default_pin_dir(&args.inside));
        return match dataplane::io::xdp::XdpSteering::detach_pinned(&dir) {
            Ok(gone) => {
                tracing::info!(pin_dir = %dir.display(), removed = ?gone, "XDP pins removed: nothing is protected by this instance any more");
                ExitCode::SUCCESS
            }
            Err(e) => {
                error!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    let stop = Arc::new(AtomicBool::new(false));
    let handler = {
        let stop = Arc::clone(&stop);
        ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))
    };
    let result = handler
        .map_err(|e| format!("signal handler: {e}"))
        .and_then(|()| daemon::run(Config::from(args), stop));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            eprintln!("dataplane: {e}");
            ExitCode::FAILURE
        }
    }
}
