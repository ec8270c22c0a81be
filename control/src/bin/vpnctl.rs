//! `vpnctl`: the operator CLI. `list`, `up`, `down` and `reload` talk to iked over its unix
//! socket; `ring ...` speaks to the dataplane's shared-memory ring directly: install a file
//! of manually keyed SAs and policies, keep a dataplane in step with it across restarts of
//! either side, and show what a dataplane holds and has counted.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use control::ring_client::{Desired, RingClient};
use dataplane::control::static_sa::StaticConfig;
use dataplane::shm::records::DataplaneRecord;
use tracing::{info, warn};

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

/// One request to iked's control socket; its answer is printed.
fn iked(socket: &std::path::Path, line: &str) -> Result<(), String> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).map_err(|e| {
        format!(
            "{}: {e} (is iked running with --control {}?)",
            socket.display(),
            socket.display()
        )
    })?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    s.write_all(format!("{line}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    match control::daemon::command::Reply::decode(&out) {
        Some(r) => {
            print!("{}", r.text);
            if r.ok {
                Ok(())
            } else {
                Err(format!("iked refused: {}", r.text.trim()))
            }
        }
        None => Err(format!("unexpected answer from iked: {out:?}")),
    }
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

const SLOTS: u32 = 4096;

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

fn load(path: &std::path::Path) -> Result<Desired, String> {
    let cfg = StaticConfig::load(path).map_err(|e| e.to_string())?;
    Desired::from_static(&cfg).map_err(|e| format!("{}: {e}", path.display()))
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

fn serve(
    ring: &str,
    sa_file: &std::path::Path,
    ready: Option<&std::path::Path>,
) -> Result<(), String> {
    let want = load(sa_file)?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))
            .map_err(|e| format!("signal handler: {e}"))?;
    }
    let mut c = RingClient::attach(ring, SLOTS).map_err(|e| e.to_string())?;
    let step = Duration::from_secs(2);
    // First contact: reconcile with whatever a running dataplane holds (it kept forwarding
    // while no controller was attached), waiting for a dataplane if there is none yet.
    let held = loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        match c.resync(step) {
            Ok(h) => break h,
            Err(e) => info!("waiting for a dataplane on ring {ring}: {e}"),
        }
    };
    let r = c
        .reconcile(&want, &held, step * 5)
        .map_err(|e| e.to_string())?;
    info!(
        added = r.added,
        removed = r.removed,
        kept = r.kept,
        "dataplane in step with {}",
        sa_file.display()
    );
    if let Some(p) = ready {
        std::fs::write(p, format!("{} {} {}\n", r.added, r.removed, r.kept))
            .map_err(|e| format!("{}: {e}", p.display()))?;
    }
    let mut idle_since = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        match c.poll() {
            Some(DataplaneRecord::Hello { boot_id, .. }) => {
                info!(
                    boot_id,
                    "the dataplane restarted: replaying its SAs and policies"
                );
                match c.replay(&want, step * 5) {
                    Ok(n) => info!(records = n, "replayed"),
                    Err(e) => warn!("replay failed: {e}"),
                }
            }
            Some(DataplaneRecord::Acquire {
                policy,
                reqid,
                flow,
            }) => info!(
                policy, reqid, src = %flow.src, dst = %flow.dst,
                "acquire: traffic for a policy without an SA (static keying cannot negotiate one)"
            ),
            Some(DataplaneRecord::UnknownSpi { spi, src, dst }) => {
                info!(spi = format_args!("{spi:#010x}"), %src, %dst, "ESP with an unknown SPI")
            }
            Some(DataplaneRecord::SaEvent {
                direction,
                reqid,
                event,
            }) => {
                warn!(
                    ?direction,
                    reqid,
                    ?event,
                    "SA event (static SAs are not rekeyed)"
                )
            }
            Some(_) => {}
            None => {
                if idle_since.elapsed() > Duration::from_millis(5) {
                    std::thread::sleep(Duration::from_millis(2));
                }
                continue;
            }
        }
        idle_since = Instant::now();
    }
    Ok(())
}

fn churn(ring: &str) -> Result<(), String> {
    use dataplane::crypto::{EspTransform, SaKeys};
    use dataplane::esp::SaConfig;
    use dataplane::sa::Direction;
    use dataplane::shm::records::{encode_add_sa, encode_delete_sa, SaInstall, MAX_RECORD};
    let mut c = RingClient::attach(ring, SLOTS).map_err(|e| e.to_string())?;
    let mut buf = zeroize::Zeroizing::new(vec![0u8; MAX_RECORD]);
    let t = Duration::from_secs(3600);
    println!("churning");
    for i in 0u32.. {
        let spi = 0x9000_0000 | (i & 0xff);
        let cfg = SaConfig::tunnel(
            spi,
            EspTransform::AES_GCM_128,
            SaKeys::new(&[0x5a; 20], &[]),
            [192, 0, 2, 1].into(),
            [192, 0, 2, 2].into(),
        );
        let inst = SaInstall {
            direction: Direction::Inbound,
            reqid: 0,
            update: false,
            config: cfg,
        };
        let n = encode_add_sa(&mut buf, 0, &inst).map_err(|e| e.to_string())?;
        c.send(&buf[..n], t).map_err(|e| e.to_string())?;
        if i >= 128 {
            let old = 0x9000_0000 | ((i - 128) & 0xff);
            let n = encode_delete_sa(&mut buf[..], 0, Direction::Inbound, old, 0);
            c.send(&buf[..n], t).map_err(|e| e.to_string())?;
        }
        // Drain the acks so the return ring never fills.
        while c.poll().is_some() {}
    }
    Ok(())
}

fn status(ring: &str, counters: Option<&str>) -> Result<(), String> {
    use dataplane::shm::counters::CountersFile;
    let name = counters.map_or_else(|| format!("{ring}.counters"), str::to_string);
    let f = CountersFile::open(&name)
        .map_err(|e| format!("{e} (is a dataplane running with --ring {ring}?)"))?;
    let s = f.snapshot();
    let age = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        .saturating_sub(s.updated_unix_ns);
    println!(
        "dataplane counters /dev/shm/{name}, written {:.1} s ago",
        age as f64 / 1e9
    );
    let reasons = |names: &[String], v: &[u64]| -> String {
        names
            .iter()
            .zip(v)
            .filter(|(_, n)| **n > 0)
            .map(|(r, n)| format!("{r} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (i, w) in s.workers.iter().enumerate() {
        let f = &w.fixed;
        println!(
            "  worker {i}: outside rx {} tx {}, inside rx {} tx {}, encrypted {}, decrypted {}",
            f[0], f[2], f[4], f[6], f[8], f[9]
        );
        let d = [
            reasons(&s.esp_reasons, &w.esp_drops),
            reasons(&s.worker_reasons, &w.worker_drops),
        ]
        .into_iter()
        .filter(|x| !x.is_empty())
        .collect::<Vec<_>>()
        .join(", ");
        if !d.is_empty() {
            println!("    drops: {d}");
        }
    }
    println!("  {} SAs", s.sas.len());
    for e in &s.sas {
        let dir = if e.inbound { "in " } else { "out" };
        let seq = if e.inbound {
            format!("window top {}", e.seq)
        } else {
            format!("seq {} (leased to {})", e.seq, e.lease)
        };
        println!(
            "  {dir} spi {:#010x} reqid {}: {} packets, {} bytes, {seq}",
            e.spi, e.reqid, e.packets, e.bytes
        );
        let d = reasons(&s.esp_reasons, &e.drops);
        if !d.is_empty() {
            println!("    drops: {d}");
        }
    }
    Ok(())
}
