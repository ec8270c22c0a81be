//! `iked`: the IKEv2 daemon. A thin shell around the sans-IO core
//! (`control::daemon::Daemon`): UDP sockets on 500 and 4500 for each local address, the
//! clock, the OS random source, the ring to the dataplane (never waited on), the
//! dataplane's counters (for DPD), signals and the control socket for `vpnctl`.
#![forbid(unsafe_code)]

use std::collections::{BTreeSet, HashMap};
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use control::config::IkedConfig;
use control::daemon::{Action, Daemon, Options};
use control::ike::sa::{Random, IKE_PORT, NAT_T_PORT};
use control::logging::{self, LogFormat};
use control::metrics::render;
use control::metrics_http::{iked_input, MetricsServer};
use control::ring_client::RingClient;
use control::ring_pump::RingPump;
use control::shell;
use tracing::{info, warn};

#[derive(Parser, Debug)]
#[command(
    name = "iked",
    version,
    about = "IKEv2 daemon (RFC 7296) feeding the AF_XDP dataplane"
)]
struct Args {
    /// Configuration file (swanctl-like TOML; see docs/ARCHITECTURE.md).
    #[arg(long)]
    config: PathBuf,
    /// The dataplane's ring (/dev/shm/NAME), as given to `dataplane --ring`.
    #[arg(long)]
    ring: String,
    /// Create this file once every `start_action = "start"` child is installed (scripts).
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Seconds between NAT keepalives while behind a NAT (RFC 3948 §2.3).
    #[arg(long, default_value_t = 20)]
    nat_keepalive_s: u64,
    /// Half-open IKE SAs (in all) from which an IKE_SA_INIT must carry a COOKIE (RFC 7296
    /// §2.6).
    #[arg(long, default_value_t = 32)]
    cookie_threshold: usize,
    /// Unix control socket for `vpnctl` (list, up, down, reload).
    #[arg(long, default_value = "/run/iked.sock")]
    control: PathBuf,
    /// Log lines as text or as JSON objects, one a line (fields conn, peer, ike_spi).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// error, warn, info, debug (adds each IKE message, summarised) or trace. RUST_LOG,
    /// when set, overrides it.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (docs/METRICS.md).
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<SocketAddr>,
}

/// The OS random source.
struct OsRandom(std::fs::File);
impl Random for OsRandom {
    fn fill(&mut self, buf: &mut [u8]) {
        use std::io::Read;
        // /dev/urandom does not fail once open; if it ever did, carrying on with
        // predictable SPIs or nonces would be worse than stopping.
        if let Err(e) = self.0.read_exact(buf) {
            eprintln!("iked: /dev/urandom: {e}");
            std::process::abort();
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = logging::init(args.log_format, &args.log_level) {
        eprintln!("iked: {e}");
        return ExitCode::FAILURE;
    }
    // The one place a fatal error is reported: nothing below logs it before returning it.
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Port 500 and 4500 of one local address.
struct Sockets {
    ike: UdpSocket,
    natt: UdpSocket,
}

fn bind(addr: IpAddr) -> Result<Sockets, String> {
    let b = |port| {
        let s = UdpSocket::bind(SocketAddr::new(addr, port))
            .map_err(|e| format!("bind {addr}:{port}: {e}"))?;
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        Ok::<_, String>(s)
    };
    Ok(Sockets {
        ike: b(IKE_PORT)?,
        natt: b(NAT_T_PORT)?,
    })
}

fn run(args: Args) -> Result<(), String> {
    let cfg = IkedConfig::load(&args.config).map_err(|e| e.to_string())?;
    let mut ring = RingClient::attach(&args.ring, 4096).map_err(|e| e.to_string())?;
    let held = shell::resync(&mut ring);
    let mut sockets: HashMap<IpAddr, Sockets> = HashMap::new();
    let locals: BTreeSet<IpAddr> = cfg
        .connections
        .iter()
        .flat_map(|c| c.local_addrs.iter().copied())
        .collect();
    for ip in locals {
        sockets.insert(ip, bind(ip)?);
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))
            .map_err(|e| e.to_string())?;
    }
    let rng =
        OsRandom(std::fs::File::open("/dev/urandom").map_err(|e| format!("/dev/urandom: {e}"))?);
    let epoch = Instant::now();
    let opts = Options {
        nat_keepalive_ms: args.nat_keepalive_s.max(1) * 1000,
        cookie_threshold: args.cookie_threshold,
        wall_clock_base_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        dataplane_workers: shell::dataplane_workers(&args.ring),
        ..Options::default()
    };
    let ms = |t: Instant| t.duration_since(epoch).as_millis() as u64;
    let mut d = Daemon::new(cfg, opts, Box::new(rng));
    let mut pump = RingPump::new(ring);
    let _ = std::fs::remove_file(&args.control);
    let control = UnixListener::bind(&args.control)
        .map_err(|e| format!("control socket {}: {e}", args.control.display()))?;
    // Owner only, whatever the umask: the socket hands out the SA keys (`vpnctl keys`).
    std::fs::set_permissions(
        &args.control,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .map_err(|e| format!("control socket {}: {e}", args.control.display()))?;
    control.set_nonblocking(true).map_err(|e| e.to_string())?;
    let metrics = args.metrics.map(MetricsServer::bind).transpose()?;
    let mut activity = shell::InboundActivity::new(format!("{}.counters", args.ring), epoch);
    let info = shell::ShellInfo {
        config: args.config.clone(),
        control: args.control.clone(),
        ring: args.ring.clone(),
        started: epoch,
    };
    info!(control = %args.control.display(), ring = %args.ring, "iked running");
    d.start(0, held);
    let mut ready_written = false;
    let mut gate = shell::SendGate::new(Duration::from_millis(500));
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let mut busy = false;
        let now = Instant::now();
        for (ip, s) in &sockets {
            for (sock, port) in [(&s.ike, IKE_PORT), (&s.natt, NAT_T_PORT)] {
                loop {
                    match sock.recv_from(&mut buf) {
                        Ok((n, from)) => {
                            busy = true;
                            d.handle_datagram(ms(now), SocketAddr::new(*ip, port), from, &buf[..n]);
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => {
                            warn!("recv on {ip}:{port}: {e}");
                            break;
                        }
                    }
                }
            }
        }
        if d.poll_timeout().is_some_and(|t| t <= ms(now)) {
            d.handle_timeout(ms(now));
        }
        if let Some(inbound) = activity.read(now) {
            d.handle_sa_counters(ms(now), &inbound);
        }
        busy |= shell::serve_control(&control, &mut d, ms(now), &info);
        while let Some(a) = d.poll_action() {
            match a {
                Action::Send { from, to, data } => {
                    // What the daemon asked of the dataplane before this message is in
                    // place before the message leaves (a rekey's new inbound SA).
                    let barrier = pump.last_pushed();
                    let settled = pump.settled_through(barrier);
                    if let Some(dg) = gate.offer(now, barrier, settled, (from, to, data)) {
                        send(&sockets, &mut d, ms(now), dg);
                    }
                }
                Action::Dataplane(op) => {
                    pump.push(&op);
                }
            }
        }
        match pump.pump(now) {
            Ok(records) => {
                for r in &records {
                    d.handle_dataplane(ms(now), r);
                }
                busy |= !records.is_empty();
            }
            Err(e) => warn!("ring {}: {e}", args.ring),
        }
        for dg in gate.release(now, |seq| pump.settled_through(seq)) {
            send(&sockets, &mut d, ms(now), dg);
        }
        busy |= !gate.is_empty();
        // Prometheus scrapes (one per turn; docs/METRICS.md).
        if let Some(m) = &metrics {
            busy |= m.poll(|| render(&iked_input(&d, ms(now), &args.ring)));
        }
        if !ready_written && d.ready() && pump.backlog() == (0, 0) {
            if let Some(p) = &args.ready_file {
                std::fs::write(p, "up\n").map_err(|e| format!("{}: {e}", p.display()))?;
            }
            ready_written = true;
        }
        if !busy {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let _ = std::fs::remove_file(&args.control);
    info!("stopping: deleting IKE SAs (policies stay: traffic is dropped while iked is down)");
    let now = ms(Instant::now());
    d.shutdown(now);
    while let Some(a) = d.poll_action() {
        match a {
            Action::Send { from, to, data } => send(&sockets, &mut d, now, (from, to, data)),
            Action::Dataplane(op) => {
                pump.push(&op);
            }
        }
    }
    // Flush the removals (bounded: the dataplane may be gone).
    let until = Instant::now() + Duration::from_secs(2);
    while pump.backlog() != (0, 0) && Instant::now() < until {
        let _ = pump.pump(Instant::now());
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// Send a datagram from the socket of its local address and port; the daemon counts and
/// logs what fails (`Daemon::send_failed`).
fn send(
    sockets: &HashMap<IpAddr, Sockets>,
    d: &mut Daemon,
    now: u64,
    (from, to, data): shell::Datagram,
) {
    let Some(s) = sockets.get(&from.ip()) else {
        warn!(%from, "no socket for this local address");
        return;
    };
    let sock = if from.port() == NAT_T_PORT {
        &s.natt
    } else {
        &s.ike
    };
    if let Err(e) = sock.send_to(&data, to) {
        d.send_failed(now, to, &e.to_string());
    }
}
