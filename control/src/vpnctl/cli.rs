//! `vpnctl`'s command line (clap), in the library so completions are generated from it and
//! tests parse it. Options that say where the daemons are (`--socket`, `--ring`) and how to
//! print (`--json`) are global: they go before or after the subcommand.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "vpnctl",
    version,
    about = "Operate the VPN concentrator: status, SAs, counters, diagnosis",
    after_help = "Exit codes: 0 done; 1 failed or refused; 2 bad usage; 3 iked or the dataplane \
                  not reachable; 4 diagnose found errors; 5 diagnose found only warnings."
)]
pub struct Cli {
    /// Print one JSON document (schema: docs/schema/, version in `schema_version`).
    #[arg(long, global = true)]
    pub json: bool,
    /// iked's control socket.
    #[arg(long, global = true, default_value = "/run/iked.sock")]
    pub socket: PathBuf,
    /// The dataplane's ring (/dev/shm/NAME), as given to `dataplane --ring`; by default the
    /// one iked is attached to.
    #[arg(long, global = true)]
    pub ring: Option<String>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Daemons up, XDP attached and how, workers and cores, rings, totals.
    Status,
    /// Connections: IKE SAs and Child SAs as iked and the dataplane hold them, failures.
    List {
        /// Only this connection.
        conn: Option<String>,
    },
    /// Dataplane counters per worker and per SA, and drops by reason with their meaning.
    Stats,
    /// Print the Prometheus metrics once (what `iked --metrics` serves; docs/METRICS.md).
    Metrics,
    /// Bring a connection up (initiate).
    Up { conn: String },
    /// Bring a connection down (delete its IKE SA and Child SAs).
    Down { conn: String },
    /// Reload iked's configuration file (a bad file leaves the running one in place).
    Reload,
    /// iked's recent events.
    Log {
        /// Keep printing new events until interrupted.
        #[arg(long, short)]
        follow: bool,
        /// How many recent events to print first.
        #[arg(long, short = 'n', default_value_t = 50)]
        lines: u32,
    },
    /// Each IKE message as it passes, summarised (exchange, message id, payloads).
    Trace {
        /// Only this connection.
        conn: Option<String>,
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long)]
        timeout_s: Option<f64>,
    },
    /// Find out why a tunnel does not work, in plain words (docs/DIAGNOSE.md).
    Diagnose {
        /// Only this connection.
        conn: Option<String>,
        /// iked's configuration file, checked even when iked is down (default: iked's).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Seconds between the two looks at the dataplane's counters (rates).
        #[arg(long, default_value_t = 2.0)]
        window_s: f64,
    },
    /// Export the keys of the live SAs for Wireshark (esp_sa, ikev2_decryption_table).
    Keys {
        /// Write the files into this directory (Wireshark's profile directory).
        #[arg(long)]
        wireshark: PathBuf,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Manually keyed SAs through the dataplane's ring (`--ring NAME` required).
    #[command(subcommand)]
    Ring(RingCmd),
}

#[derive(Subcommand, Debug)]
pub enum RingCmd {
    /// Bring the dataplane to the SAs and policies of a static file, then exit.
    Install {
        #[arg(long)]
        sa_file: PathBuf,
        /// How long to wait for the dataplane.
        #[arg(long, default_value_t = 10)]
        timeout_s: u64,
    },
    /// Like `install`, then stay: replay everything when the dataplane restarts, and log
    /// the dataplane's events (acquires, unknown SPIs, lifetimes).
    Serve {
        #[arg(long)]
        sa_file: PathBuf,
        /// Create this file once the dataplane holds the file's state.
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// Fault injection for tests: install and delete throwaway inbound SAs as fast as the
    /// ring takes them, forever, without waiting for acks (kill it to test recovery).
    #[command(hide = true)]
    Churn,
    /// Print what the dataplane holds and has counted, from its counters file (read-only:
    /// works while a controller is attached, and while the dataplane is down).
    Status {
        /// Counters file name, if not RING.counters.
        #[arg(long)]
        counters: Option<String>,
    },
}
