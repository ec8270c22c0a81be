//! `vpnctl`: the operator CLI. `list`, `up`, `down` and `reload` talk to iked over its unix
//! socket; `ring ...` speaks to the dataplane's shared-memory ring directly: install a file
//! of manually keyed SAs and policies, keep a dataplane in step with it across restarts of
//! either side, and show what a dataplane holds and has counted.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use control::ring_client::RingClient;
use control::vpnctl::{churn, iked, load, serve, status, SLOTS};

#[derive(Parser, Debug)]
#[command(name = "vpnctl", version, about = "Operate the VPN concentrator")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Manually keyed SAs through the dataplane's ring.
    #[command(subcommand)]
    Ring(RingCmd),
    /// iked: connections, their IKE and Child SAs.
    List {
        #[arg(long, default_value = "/run/iked.sock")]
        socket: PathBuf,
    },
    /// iked: bring a connection up (initiate).
    Up {
        name: String,
        #[arg(long, default_value = "/run/iked.sock")]
        socket: PathBuf,
    },
    /// iked: bring a connection down (delete its IKE SA and Child SA).
    Down {
        name: String,
        #[arg(long, default_value = "/run/iked.sock")]
        socket: PathBuf,
    },
    /// iked: reload its configuration file (a bad file leaves the running one in place).
    Reload {
        #[arg(long, default_value = "/run/iked.sock")]
        socket: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum RingCmd {
    /// Bring the dataplane to the SAs and policies of a static file, then exit.
    Install {
        /// Ring name (/dev/shm/NAME), as given to `dataplane --ring`.
        #[arg(long)]
        ring: String,
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
        ring: String,
        #[arg(long)]
        sa_file: PathBuf,
        /// Create this file once the dataplane holds the file's state.
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// Fault injection for tests: install and delete throwaway inbound SAs as fast as the
    /// ring takes them, forever, without waiting for acks (kill it to test recovery).
    #[command(hide = true)]
    Churn {
        #[arg(long)]
        ring: String,
    },
    /// Print what the dataplane holds and has counted, from its counters file (read-only:
    /// works while a controller is attached, and while the dataplane is down).
    Status {
        #[arg(long)]
        ring: String,
        /// Counters file name, if not RING.counters.
        #[arg(long)]
        counters: Option<String>,
    },
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
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vpnctl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let cmd = match args.cmd {
        Cmd::Ring(cmd) => cmd,
        Cmd::List { socket } => return iked(&socket, "list"),
        Cmd::Up { name, socket } => return iked(&socket, &format!("up {name}")),
        Cmd::Down { name, socket } => return iked(&socket, &format!("down {name}")),
        Cmd::Reload { socket } => return iked(&socket, "reload"),
    };
    match cmd {
        RingCmd::Install {
            ring,
            sa_file,
            timeout_s,
        } => {
            let want = load(&sa_file)?;
            let t = Duration::from_secs(timeout_s);
            let mut c = RingClient::attach(&ring, SLOTS).map_err(|e| e.to_string())?;
            let held = c.resync(t).map_err(|e| e.to_string())?;
            let r = c.reconcile(&want, &held, t).map_err(|e| e.to_string())?;
            println!(
                "ring {ring}: {} added, {} removed, {} already installed",
                r.added, r.removed, r.kept
            );
            Ok(())
        }
        RingCmd::Status { ring, counters } => status(&ring, counters.as_deref()),
        RingCmd::Serve {
            ring,
            sa_file,
            ready_file,
        } => serve(&ring, &sa_file, ready_file.as_deref()),
        RingCmd::Churn { ring } => churn(&ring),
    }
}
