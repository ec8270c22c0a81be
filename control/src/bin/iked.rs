//! `iked`: the IKEv2 daemon. The I/O shell around the sans-IO IKE SA state machine: UDP
//! sockets on 500 and 4500, the clock, the OS random source, and the shared-memory ring to
//! the dataplane, into which it installs the Child SAs it negotiates and their policies.
//!
//! This first version keeps one Child SA per connection (the one created with the IKE SA),
//! answers and initiates, and flushes the dataplane when it starts (Child SAs of a previous
//! iked cannot be rekeyed or deleted by this one).
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use control::config::{IkedConfig, StartAction};
use control::ike::sa::{
    invalid_major_version, is_init_request, peek, ChildSa, Event, IkeSa, Random, State, NAT_T_PORT,
};
use control::ike::wire::Ts;
use control::ring_client::RingClient;
use dataplane::esp::{SaConfig, SelectorSet, TrafficSelector, UdpEncap};
use dataplane::policy::spd::{PolicyRule, SpdAction};
use dataplane::sa::Direction;
use dataplane::shm::records::{
    encode_add_policy, encode_add_sa, encode_delete_policy, encode_delete_sa, encode_flush,
    SaInstall, MAX_RECORD,
};
use tracing::{info, warn};
use zeroize::Zeroizing;

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
    /// Create this file once every `start_action = "start"` connection has its Child SA
    /// installed (for scripts and tests).
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Seconds between NAT keepalives while behind a NAT (RFC 3948 §2.3).
    #[arg(long, default_value_t = 20)]
    nat_keepalive_s: u64,
    /// Unix control socket for `vpnctl` (list, up, down, reload).
    #[arg(long, default_value = "/run/iked.sock")]
    control: PathBuf,
}

/// The OS random source.
struct OsRandom(std::fs::File);
impl Random for OsRandom {
    fn fill(&mut self, buf: &mut [u8]) {
        use std::io::Read;
        self.0.read_exact(buf).expect("/dev/urandom is readable");
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iked: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The sockets of one local address: port 500 and port 4500.
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
        ike: b(500)?,
        natt: b(NAT_T_PORT)?,
    })
}

fn ts_sel(t: &Ts) -> TrafficSelector {
    TrafficSelector {
        start: t.start,
        end: t.end,
        protocol: t.protocol,
        start_port: t.start_port,
        end_port: t.end_port,
    }
}

struct Daemon {
    cfg: IkedConfig,
    ring: RingClient,
    rng: OsRandom,
    sockets: HashMap<IpAddr, Sockets>,
    sas: Vec<IkeSa>,
    /// Connection index → time to (re)initiate.
    retry_at: HashMap<usize, Instant>,
    installed: HashMap<usize, (u32, u32)>,
    /// Connections whose policies stay installed without an SA (`start_action = "trap"`),
    /// so the dataplane reports matching traffic (an acquire) and iked initiates.
    trapped: std::collections::HashSet<usize>,
    next_slot: u32,
    start: Instant,
}

impl Daemon {
    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Our inbound SPIs, in the dataplane's slot form (RFC 4303 §2.1: ≥ 256).
    fn alloc_spi(&mut self) -> u32 {
        self.next_slot = (self.next_slot + 1) & 0xfffff;
        0x8000_0000 | (1 << 20) | self.next_slot
    }

    fn conn_index(&self, name: &str) -> Option<usize> {
        self.cfg
            .connections
            .iter()
            .position(|c| c.connection.name == name)
    }

    fn send(&self, from: SocketAddr, from_port: u16, to: SocketAddr, data: &[u8]) {
        let Some(s) = self.sockets.get(&from.ip()) else {
            return;
        };
        let r = if from_port == NAT_T_PORT {
            // RFC 3948 §2.2: IKE on 4500 carries a four-byte non-ESP marker.
            let mut b = vec![0u8; 4];
            b.extend_from_slice(data);
            s.natt.send_to(&b, to)
        } else {
            s.ike.send_to(data, to)
        };
        if let Err(e) = r {
            warn!(%to, "send: {e}");
        }
    }

    fn install(&mut self, ci: usize, c: &ChildSa) -> Result<(), String> {
        let cc = &self.cfg.connections[ci];
        let reqid = ci as u32 + 1;
        let t = Duration::from_secs(5);
        let mk = |spi: u32, keys: &dataplane::crypto::SaKeys, local: IpAddr, remote: IpAddr| {
            let mut cfg = if c.transport {
                SaConfig::transport(spi, c.proposal.transform, keys.clone())
            } else {
                SaConfig::tunnel(spi, c.proposal.transform, keys.clone(), local, remote)
            };
            cfg.esn = c.proposal.esn;
            cfg.udp_encap = c.udp_encap.map(|(s, d)| UdpEncap {
                src_port: s,
                dst_port: d,
            });
            cfg.selectors = SelectorSet {
                local: c.local_ts.iter().map(ts_sel).collect(),
                remote: c.remote_ts.iter().map(ts_sel).collect(),
            };
            cfg
        };
        let mut buf = Zeroizing::new(vec![0u8; MAX_RECORD]);
        // Inbound first, so the peer's first packets find their SA.
        let inb = SaInstall {
            direction: Direction::Inbound,
            reqid,
            update: false,
            config: mk(c.inbound_spi, &c.keys_in, c.local, c.remote),
        };
        let n = encode_add_sa(&mut buf, 0, &inb).map_err(|e| e.to_string())?;
        self.ring
            .call("inbound SA", &buf[..n], t)
            .map_err(|e| e.to_string())?;
        let out = SaInstall {
            direction: Direction::Outbound,
            reqid,
            update: false,
            config: mk(c.outbound_spi, &c.keys_out, c.local, c.remote),
        };
        let n = encode_add_sa(&mut buf, 0, &out).map_err(|e| e.to_string())?;
        self.ring
            .call("outbound SA", &buf[..n], t)
            .map_err(|e| e.to_string())?;
        let name = (cc.connection.name.clone(), cc.child.clone());
        if !self.trapped.contains(&ci) {
            self.add_policies(ci)?;
        }
        info!(conn = %name.0, child = %name.1, "Child SA installed in the dataplane");
        self.installed.insert(ci, (c.inbound_spi, c.outbound_spi));
        Ok(())
    }

    /// One protect policy per selector pair, pointing at the connection's reqid.
    fn add_policies(&mut self, ci: usize) -> Result<(), String> {
        let cc = &self.cfg.connections[ci].connection;
        let reqid = ci as u32 + 1;
        let t = Duration::from_secs(5);
        let mut buf = Zeroizing::new(vec![0u8; MAX_RECORD]);
        let mut rules = Vec::new();
        let mut id = reqid << 8;
        for l in &cc.local_ts {
            for r in &cc.remote_ts {
                rules.push(PolicyRule {
                    id,
                    priority: 100,
                    src: ts_sel(l),
                    dst: ts_sel(r),
                    action: SpdAction::Protect { reqid },
                });
                id += 1;
            }
        }
        for rule in rules {
            let n = encode_add_policy(&mut buf, 0, &rule);
            self.ring
                .call("policy", &buf[..n], t)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn uninstall(&mut self, ci: usize) {
        let Some((inb, outb)) = self.installed.remove(&ci) else {
            return;
        };
        let reqid = ci as u32 + 1;
        let t = Duration::from_secs(5);
        let mut b = [0u8; 64];
        let cc = &self.cfg.connections[ci].connection;
        let pairs = if self.trapped.contains(&ci) {
            0 // a trap's policies stay, to catch the next packet
        } else {
            cc.local_ts.len() * cc.remote_ts.len()
        };
        for k in 0..pairs as u32 {
            let n = encode_delete_policy(&mut b, 0, (reqid << 8) + k);
            let _ = self.ring.call("policy delete", &b[..n], t);
        }
        let n = encode_delete_sa(&mut b, 0, Direction::Outbound, outb, reqid);
        let _ = self.ring.call("outbound SA delete", &b[..n], t);
        let n = encode_delete_sa(&mut b, 0, Direction::Inbound, inb, 0);
        let _ = self.ring.call("inbound SA delete", &b[..n], t);
    }

    fn events(&mut self, k: usize) {
        let evs = self.sas[k].take_events();
        let name = self.sas[k].connection().name.clone();
        let ci = self.conn_index(&name);
        let (local, initiator) = (
            self.sas[k].connection().local,
            self.sas[k].role() == control::ike::sa::Role::Initiator,
        );
        for e in evs {
            match e {
                Event::Send {
                    to,
                    from_port,
                    data,
                } => self.send(local, from_port, to, &data),
                Event::Established { suite, nat } => {
                    info!(conn = %name, %suite, nat, "IKE SA established")
                }
                Event::ChildUp(c) => {
                    if let Some(ci) = ci {
                        self.uninstall(ci);
                        if let Err(e) = self.install(ci, &c) {
                            warn!(conn = %name, "installing the Child SA failed: {e}");
                        }
                    }
                }
                Event::ChildDown { .. } => {
                    if let Some(ci) = ci {
                        self.uninstall(ci);
                    }
                }
                Event::Failed { reason } => {
                    warn!(conn = %name, "{reason}");
                    if let (Some(ci), true) = (ci, initiator) {
                        if self.cfg.connections[ci].start_action == StartAction::Start {
                            self.retry_at
                                .insert(ci, Instant::now() + Duration::from_secs(5));
                        }
                    }
                }
                Event::Closed => info!(conn = %name, "IKE SA closed"),
            }
        }
    }

    fn initiate(&mut self, ci: usize) {
        let cfg = self.cfg.connections[ci].connection.clone();
        info!(conn = %cfg.name, peer = %cfg.remote, "initiating");
        let spi = self.alloc_spi();
        let now = self.now();
        let sa = IkeSa::initiate(cfg, now, &mut self.rng, spi);
        self.sas.push(sa);
        let k = self.sas.len() - 1;
        self.events(k);
    }

    fn on_datagram(&mut self, data: &[u8], from: SocketAddr, natt: bool) {
        let data = if natt {
            // RFC 3948 §2.2: IKE behind the non-ESP marker; anything else on 4500 is ESP
            // for the dataplane (or a keepalive), not ours.
            match data {
                [0, 0, 0, 0, rest @ ..] => rest,
                _ => return,
            }
        } else {
            data
        };
        let Some(h) = peek(data) else {
            warn!(%from, "dropping {} bytes that are not an IKE message", data.len());
            return;
        };
        if h.major == 1 {
            warn!(%from, "dropping an IKEv1 message: IKEv1 is deprecated (RFC 9395) and not spoken here; configure the peer for IKEv2");
            return;
        }
        if let Some(reply) = invalid_major_version(data) {
            warn!(%from, major = h.major, "IKE version {}.{} request: answering INVALID_MAJOR_VERSION (we speak 2.0)", h.major, h.minor);
            if let Some(local) = self
                .cfg
                .connections
                .iter()
                .find(|c| c.connection.remote.ip() == from.ip())
                .map(|c| c.connection.local)
            {
                self.send(local, if natt { NAT_T_PORT } else { 500 }, from, &reply);
            }
            return;
        }
        let now = self.now();
        if let Some(k) = self
            .sas
            .iter()
            .position(|s| s.spis().0 == h.spi_i && s.connection().remote.ip() == from.ip())
        {
            self.sas[k].handle(now, data, &mut self.rng);
            self.events(k);
            return;
        }
        if !is_init_request(&h) {
            return;
        }
        let Some(ci) = self
            .cfg
            .connections
            .iter()
            .position(|c| c.connection.remote.ip() == from.ip())
        else {
            warn!(%from, "IKE_SA_INIT from a peer no connection is configured for: ignored");
            return;
        };
        let mut cfg = self.cfg.connections[ci].connection.clone();
        cfg.remote = SocketAddr::new(from.ip(), cfg.remote.port());
        let spi = self.alloc_spi();
        match IkeSa::respond(cfg, now, data, &mut self.rng, spi) {
            Ok(sa) => {
                self.sas.push(sa);
                let k = self.sas.len() - 1;
                self.events(k);
            }
            Err(evs) => {
                let local = self.cfg.connections[ci].connection.local;
                for e in evs {
                    match e {
                        Event::Send {
                            to,
                            from_port,
                            data,
                        } => self.send(local, from_port, to, &data),
                        Event::Failed { reason } => {
                            warn!(conn = %self.cfg.connections[ci].connection.name, "{reason}")
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

impl Daemon {
    /// One control-socket command (a line), answered with text.
    fn command(&mut self, line: &str, config_path: &std::path::Path) -> String {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("list"), _) => {
                let mut out = String::new();
                for (ci, c) in self.cfg.connections.iter().enumerate() {
                    let cc = &c.connection;
                    let sa = self.sas.iter().find(|s| s.connection().name == cc.name);
                    let state = sa.map_or("down".to_string(), |s| {
                        format!("{:?}", s.state()).to_lowercase()
                    });
                    out.push_str(&format!(
                        "{}: {} === {} ({} → {}), {}{}\n",
                        cc.name,
                        cc.local.ip(),
                        cc.remote.ip(),
                        cc.local_id,
                        cc.remote_id,
                        state,
                        sa.and_then(|s| s.suite())
                            .map_or(String::new(), |s| format!(", {s}"))
                    ));
                    if let Some((inb, outb)) = self.installed.get(&ci) {
                        out.push_str(&format!(
                            "  child {}: in spi {inb:#010x}, out spi {outb:#010x}, {} === {}\n",
                            c.child,
                            cc.local_ts
                                .iter()
                                .map(control::ike::child::show_ts)
                                .collect::<Vec<_>>()
                                .join(","),
                            cc.remote_ts
                                .iter()
                                .map(control::ike::child::show_ts)
                                .collect::<Vec<_>>()
                                .join(",")
                        ));
                    }
                }
                out
            }
            (Some("up"), Some(name)) => match self.conn_index(name) {
                None => format!("error: no connection {name:?}\n"),
                Some(ci) => {
                    if self.sas.iter().any(|s| s.connection().name == name) {
                        format!("{name}: already up or being negotiated\n")
                    } else {
                        self.initiate(ci);
                        format!("{name}: initiating\n")
                    }
                }
            },
            (Some("down"), Some(name)) => {
                let now = self.now();
                let mut n = 0;
                for k in 0..self.sas.len() {
                    if self.sas[k].connection().name == name {
                        self.sas[k].delete(now, &mut self.rng);
                        self.events(k);
                        n += 1;
                    }
                }
                if let Some(ci) = self.conn_index(name) {
                    self.retry_at.remove(&ci);
                    self.uninstall(ci);
                }
                format!("{name}: {n} IKE SA(s) deleted\n")
            }
            (Some("reload"), _) => match IkedConfig::load(config_path) {
                // A bad file changes nothing: the running configuration stays.
                Err(e) => format!("error: {e}; keeping the running configuration\n"),
                Ok(new) => {
                    let names: Vec<String> = new
                        .connections
                        .iter()
                        .map(|c| c.connection.name.clone())
                        .collect();
                    self.cfg = new;
                    format!(
                        "reloaded: {} connection(s): {}\n",
                        names.len(),
                        names.join(", ")
                    )
                }
            },
            _ => "error: commands are list, up NAME, down NAME, reload\n".into(),
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let cfg = IkedConfig::load(&args.config).map_err(|e| e.to_string())?;
    let mut ring = RingClient::attach(&args.ring, 4096).map_err(|e| e.to_string())?;
    // Child SAs of a previous iked cannot be managed by this one: start clean.
    let mut b = [0u8; 8];
    let n = encode_flush(&mut b, 0);
    ring.call("flush", &b[..n], Duration::from_secs(10))
        .map_err(|e| format!("dataplane on ring {}: {e}", args.ring))?;
    let mut sockets = HashMap::new();
    for c in &cfg.connections {
        let ip = c.connection.local.ip();
        if let std::collections::hash_map::Entry::Vacant(v) = sockets.entry(ip) {
            v.insert(bind(ip)?);
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))
            .map_err(|e| e.to_string())?;
    }
    let rng =
        OsRandom(std::fs::File::open("/dev/urandom").map_err(|e| format!("/dev/urandom: {e}"))?);
    let mut d = Daemon {
        cfg,
        ring,
        rng,
        sockets,
        sas: Vec::new(),
        retry_at: HashMap::new(),
        installed: HashMap::new(),
        trapped: Default::default(),
        next_slot: 0,
        start: Instant::now(),
    };
    let _ = std::fs::remove_file(&args.control);
    let control = std::os::unix::net::UnixListener::bind(&args.control)
        .map_err(|e| format!("control socket {}: {e}", args.control.display()))?;
    control.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut keepalive_at: HashMap<u64, Instant> = HashMap::new();
    info!(connections = d.cfg.connections.len(), control = %args.control.display(), "iked running");
    for ci in 0..d.cfg.connections.len() {
        match d.cfg.connections[ci].start_action {
            StartAction::Start => d.initiate(ci),
            StartAction::Trap => {
                d.add_policies(ci)?;
                d.trapped.insert(ci);
                info!(conn = %d.cfg.connections[ci].connection.name, "trap installed: the first matching packet starts the negotiation");
            }
            StartAction::None => {}
        }
    }
    let mut ready_written = false;
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let mut busy = false;
        let addrs: Vec<IpAddr> = d.sockets.keys().copied().collect();
        for ip in addrs {
            for natt in [false, true] {
                loop {
                    let s = &d.sockets[&ip];
                    let r = if natt {
                        s.natt.recv_from(&mut buf)
                    } else {
                        s.ike.recv_from(&mut buf)
                    };
                    match r {
                        Ok((n, from)) => {
                            busy = true;
                            let data = buf[..n].to_vec();
                            d.on_datagram(&data, from, natt);
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => {
                            warn!("recv: {e}");
                            break;
                        }
                    }
                }
            }
        }
        let now = d.now();
        for k in 0..d.sas.len() {
            if d.sas[k].next_timeout().is_some_and(|t| t <= now) {
                d.sas[k].on_timeout(now);
                d.events(k);
            }
        }
        d.sas.retain(|s| s.state() != State::Dead);
        let due: Vec<usize> = d
            .retry_at
            .iter()
            .filter(|(_, t)| **t <= Instant::now())
            .map(|(c, _)| *c)
            .collect();
        for ci in due {
            d.retry_at.remove(&ci);
            d.initiate(ci);
        }
        // Drain the dataplane's events (acquires for trap connections, lifetimes).
        while let Some(ev) = d.ring.poll() {
            if let dataplane::shm::records::DataplaneRecord::Acquire { reqid, flow, .. } = ev {
                let ci = (reqid as usize).wrapping_sub(1);
                let busy_already = ci < d.cfg.connections.len()
                    && d.sas
                        .iter()
                        .any(|s| s.connection().name == d.cfg.connections[ci].connection.name);
                if ci < d.cfg.connections.len() && d.trapped.contains(&ci) && !busy_already {
                    info!(conn = %d.cfg.connections[ci].connection.name, src = %flow.src, dst = %flow.dst,
                        "acquire: traffic for a trapped connection; initiating");
                    d.initiate(ci);
                }
            }
        }
        if !ready_written {
            if let Some(p) = &args.ready_file {
                let all = d
                    .cfg
                    .connections
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.start_action == StartAction::Start)
                    .all(|(ci, _)| d.installed.contains_key(&ci));
                if all {
                    std::fs::write(p, "up\n").map_err(|e| format!("{}: {e}", p.display()))?;
                    ready_written = true;
                }
            }
        }
        // RFC 3948 §2.3: keep the NAT mapping alive while behind one (a lone 0xff on 4500).
        for k in 0..d.sas.len() {
            if d.sas[k].behind_nat() {
                let spi = d.sas[k].spis().0;
                let every = Duration::from_secs(args.nat_keepalive_s.max(1));
                let due = keepalive_at
                    .entry(spi)
                    .or_insert_with(|| Instant::now() + every);
                if *due <= Instant::now() {
                    *due = Instant::now() + every;
                    let (local, mut to) =
                        (d.sas[k].connection().local, d.sas[k].connection().remote);
                    to.set_port(NAT_T_PORT);
                    if let Some(s) = d.sockets.get(&local.ip()) {
                        let _ = s.natt.send_to(&[0xff], to);
                    }
                }
            }
        }
        keepalive_at.retain(|spi, _| {
            d.sas
                .iter()
                .any(|s| s.spis().0 == *spi && s.state() != State::Dead)
        });
        // vpnctl.
        if let Ok((mut conn, _)) = control.accept() {
            use std::io::{BufRead, Write};
            let _ = conn.set_nonblocking(false);
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
            let mut line = String::new();
            if std::io::BufReader::new(&conn).read_line(&mut line).is_ok() {
                let reply = d.command(line.trim(), &args.config);
                let _ = conn.write_all(reply.as_bytes());
            }
            busy = true;
        }
        if !busy {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let _ = std::fs::remove_file(&args.control);
    info!("stopping: deleting IKE SAs");
    let now = d.now();
    for k in 0..d.sas.len() {
        d.sas[k].delete(now, &mut d.rng);
        d.events(k);
    }
    Ok(())
}
