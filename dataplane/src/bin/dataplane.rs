//! `dataplane`: the VPN concentrator's packet engine on AF_XDP.
//!
//! Takes SAs and policies from the shared-memory ring (iked, `vpnctl`) and/or a static TOML
//! file — both through the same installer — attaches the XDP program to the outside (WAN)
//! and inside (LAN) interfaces, binds an AF_XDP socket on every queue of both, and runs one
//! poll-mode worker per configured core. Exits cleanly on SIGINT/SIGTERM, printing its
//! counters; the pinned XDP programs stay (protected traffic is dropped while no dataplane
//! runs) until `dataplane --detach`.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use dataplane::afxdp::BindMode;
use dataplane::afxdp_io::{AfXdpConfig, AfXdpIo};
use dataplane::esp::DropReason;
use dataplane::hops::{Hop, HopCache, HopTable};
use dataplane::install::{install_static, Installer, Restore};
use dataplane::nexthop::{NextHopResolver, Resolution};
use dataplane::sadb::SaDb;
use dataplane::shm::counters::{CountersFile, WorkerCounters};
use dataplane::shm::records::{DataplaneRecord, MAX_RECORD, SLOT_SIZE};
use dataplane::shm::{Consumer, Producer, RingDir, ShmFile};
use dataplane::static_sa::StaticConfig;
use dataplane::worker::{GatewayAddrs, Worker, WorkerDrop, WorkerEvent, WorkerStats};
use dataplane::xdp::{AttachMode, Side, XdpSteering, XdpVerdict};
use tracing::{error, info, warn};

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
    /// CPU cores to pin the workers to, comma-separated (default: 0, 1, ... by worker).
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

fn queues_of(ifname: &str) -> Result<u32, String> {
    let dir = format!("/sys/class/net/{ifname}/queues");
    let n = std::fs::read_dir(&dir)
        .map_err(|e| format!("{dir}: {e} (does interface {ifname} exist in this namespace?)"))?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count() as u32;
    Ok(n.max(1))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            eprintln!("dataplane: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let pin_dir = args
        .pin_dir
        .clone()
        .unwrap_or_else(|| dataplane::xdp::default_pin_dir(&args.inside));
    if args.detach {
        let gone = XdpSteering::detach_pinned(&pin_dir).map_err(|e| e.to_string())?;
        info!(pin_dir = %pin_dir.display(), removed = ?gone, "XDP pins removed: nothing is protected by this instance any more");
        return Ok(());
    }
    // Parse the static file first: a bad file is refused before anything is attached.
    let static_cfg = match &args.sa_file {
        Some(p) => Some(StaticConfig::load(p).map_err(|e| e.to_string())?),
        None => None,
    };
    if static_cfg.is_none() && args.ring.is_none() {
        warn!("neither --sa-file nor --ring: no SA can ever be installed");
    }
    let db = Arc::new(SaDb::new());
    let mut installer = Installer::new(Arc::clone(&db));
    let counters_name = args
        .counters
        .clone()
        .or_else(|| args.ring.as_ref().map(|r| format!("{r}.counters")));
    if let Some(name) = &counters_name {
        // What a previous run left: sequence leases and windows to resume from.
        let restore = match CountersFile::open(name) {
            Ok(old) => Restore::from_snapshot(&old.snapshot()),
            Err(_) => Restore::default(),
        };
        let esp: Vec<&str> = DropReason::ALL.iter().map(|r| r.name()).collect();
        let wrk: Vec<&str> = WorkerDrop::ALL.iter().map(|r| r.name()).collect();
        let file = CountersFile::create(name, args.workers.max(1), args.counter_slots, &esp, &wrk)
            .map_err(|e| e.to_string())?;
        info!(path = %file.path().display(), resumable_sas = restore.len(), "counters file");
        installer = installer.with_state(Arc::new(file), restore);
    }

    let mut resolver = NextHopResolver::new().map_err(|e| e.to_string())?;
    let if_out = resolver
        .ifindex(&args.outside)
        .map_err(|e| format!("outside interface: {e}"))?;
    let if_in = resolver
        .ifindex(&args.inside)
        .map_err(|e| format!("inside interface: {e}"))?;
    let mut gw = GatewayAddrs::default();
    for a in resolver.interface_addrs(if_in).map_err(|e| e.to_string())? {
        match a {
            IpAddr::V4(v4) if gw.inside_v4.is_none() => gw.inside_v4 = Some(v4),
            IpAddr::V6(v6) if gw.inside_v6.is_none() && !v6.is_unicast_link_local() => {
                gw.inside_v6 = Some(v6)
            }
            _ => {}
        }
    }

    // Queues: every queue of both interfaces gets a socket (an empty XSKMAP slot would
    // silently hand that queue's packets to the kernel), dealt out to workers.
    let nq = [queues_of(&args.outside)?, queues_of(&args.inside)?];
    let workers = args.workers.max(1);
    let mut per_worker: Vec<[Vec<u32>; 2]> =
        (0..workers).map(|_| [Vec::new(), Vec::new()]).collect();
    for side in 0..2 {
        for q in 0..nq[side] {
            per_worker[q as usize % workers][side].push(q);
        }
    }
    if per_worker.iter().any(|w| w[0].is_empty()) {
        return Err(format!(
            "{workers} workers but {} has only {} queue(s): use --workers {}",
            args.outside, nq[0], nq[0]
        ));
    }

    let mut xdp = XdpSteering::open_pinned(&pin_dir, args.fail_open).map_err(|e| e.to_string())?;
    if args.fail_open {
        warn!("FAIL-OPEN: while no dataplane runs, traffic between the protected networks is forwarded IN CLEAR by the kernel");
    }
    let inherited: Vec<_> = xdp.inherited().collect();
    info!(pin_dir = %pin_dir.display(), fail_open = args.fail_open, ?inherited, "XDP maps pinned (protected prefixes left by a previous run stay protected until a policy claims them or the controller flushes)");
    let bind = match args.bind {
        Bind::Auto => BindMode::Auto,
        Bind::Copy => BindMode::Copy,
        Bind::ZeroCopy => BindMode::ZeroCopy,
    };
    let afcfg = AfXdpConfig {
        frames: args.frames,
        bind,
        ..AfXdpConfig::default()
    };
    let mut ios = Vec::new();
    for (w, q) in per_worker.iter().enumerate() {
        let io = AfXdpIo::new(afcfg, [if_out, if_in], [&q[0], &q[1]])
            .map_err(|e| format!("worker {w}: {e}"))?;
        info!(worker = w, outside_queues = ?q[0], inside_queues = ?q[1], zero_copy = io.zero_copy, "AF_XDP sockets bound ({})", if io.zero_copy { "zero-copy" } else { "copy mode" });
        for side in [Side::Outside, Side::Inside] {
            for sock in io.sockets(side) {
                xdp.register_socket(side, sock.queue(), sock)
                    .map_err(|e| e.to_string())?;
            }
        }
        ios.push(io);
    }
    if let (Some(cfg), Some(path)) = (&static_cfg, &args.sa_file) {
        install_static(&mut installer, cfg, &mut xdp)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let (sas, policies) = installer.counts();
        info!(
            sas,
            policies,
            "static SAs installed from {}",
            path.display()
        );
        if args.ring.is_none() {
            xdp.release_inherited().map_err(|e| e.to_string())?;
        }
    }
    let mut ring = match &args.ring {
        Some(name) => Some(RingEnd::open(name, args.ring_slots, &installer)?),
        None => None,
    };
    xdp.attach(Side::Outside, &args.outside, args.xdp_mode)
        .map_err(|e| e.to_string())?;
    xdp.attach(Side::Inside, &args.inside, args.xdp_mode)
        .map_err(|e| e.to_string())?;
    info!(outside = %args.outside, inside = %args.inside, mode = ?args.xdp_mode, "XDP attached");

    // Next hops: the tunnel endpoints as SAs arrive, the rest on demand.
    let hops = Arc::new(HopCache::default());
    let (ev_tx, ev_rx) = std::sync::mpsc::channel::<WorkerEvent>();

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))
            .map_err(|e| format!("signal handler: {e}"))?;
    }

    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let stats: Vec<Arc<WorkerStats>> = (0..workers)
        .map(|_| Arc::new(WorkerStats::default()))
        .collect();
    let mut threads = Vec::new();
    for (w, io) in ios.into_iter().enumerate() {
        let core = args
            .cores
            .get(w)
            .copied()
            .or_else(|| cores.get(w % cores.len().max(1)).map(|c| c.id));
        let (db, hops, st, stop, ev_tx) = (
            Arc::clone(&db),
            Arc::clone(&hops),
            Arc::clone(&stats[w]),
            Arc::clone(&stop),
            ev_tx.clone(),
        );
        let batch = args.batch;
        threads.push(
            std::thread::Builder::new()
                .name(format!("worker-{w}"))
                .spawn(move || {
                    if let Some(id) = core {
                        if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
                            warn!(worker = w, core = id, "could not pin to core");
                        }
                    }
                    let mut worker = Worker::new(io, db, hops, st, gw, batch).with_events(ev_tx);
                    worker.run(&stop);
                })
                .map_err(|e| format!("spawn worker {w}: {e}"))?,
        );
    }
    info!(
        workers,
        aes_gcm = %dataplane::crypto::gcm::GcmPath::best(),
        "forwarding; Ctrl-C or SIGTERM to stop"
    );

    // The control thread: install records, relay events, resolve next hops, write stats.
    let mut known: Vec<(Side, IpAddr)> = Vec::new();
    let mut table = HopTable::default();
    let mut remotes_seen = 0usize;
    // Written once now: its appearance tells scripts the dataplane is forwarding.
    if let Some(path) = &args.stats_file {
        write_stats(path, &stats, &installer, &xdp, nq, &table);
    }
    let mut last_stats = Instant::now();
    let mut last_refresh = Instant::now();
    let mut last_housekeeping = Instant::now() - Duration::from_secs(1);
    let mut last_export = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let mut busy = false;
        if let Some(r) = ring.as_mut() {
            busy |= r.drain(&mut installer, &mut xdp);
        }
        while let Ok(ev) = ev_rx.try_recv() {
            match ev {
                WorkerEvent::LeaseLow { reqid, spi } => installer.extend_lease(reqid, spi),
                WorkerEvent::Record(ev) => {
                    log_event(&ev);
                    if let Some(r) = ring.as_mut() {
                        r.queue(ev);
                    }
                }
            }
        }
        if let Some(r) = ring.as_mut() {
            r.flush();
        }
        for remote in installer.tunnel_remotes().skip(remotes_seen) {
            hops.request(Side::Outside, remote);
            remotes_seen += 1;
        }
        if last_housekeeping.elapsed() < Duration::from_millis(20) {
            if !busy {
                std::thread::sleep(Duration::from_millis(1));
            }
            continue;
        }
        last_housekeeping = Instant::now();
        if let Err(e) = xdp.tick(last_housekeeping) {
            warn!("releasing the prefixes a previous run left protected: {e}");
        }
        let mut wanted = hops.take_requests();
        if last_refresh.elapsed() > Duration::from_secs(2) {
            wanted.extend(known.iter().copied());
            last_refresh = Instant::now();
        }
        let mut changed = false;
        for (side, dst) in wanted {
            match resolver.resolve(dst) {
                Ok(Resolution::Ready(nh)) => {
                    let expect = if side == Side::Outside { if_out } else { if_in };
                    if nh.ifindex != expect {
                        warn!(%dst, via = %nh.ifname, "route leaves by the other interface; not forwarding there");
                        continue;
                    }
                    let hop = Hop {
                        src_mac: nh.src_mac,
                        dst_mac: nh.dst_mac,
                        mtu: nh.mtu.min(u32::from(u16::MAX)) as u16,
                    };
                    if table.get(side, dst) != Some(hop) {
                        table.map.insert((side, dst), hop);
                        changed = true;
                    }
                    if !known.contains(&(side, dst)) {
                        known.push((side, dst));
                    }
                }
                Ok(Resolution::Pending { .. }) => hops.request(side, dst),
                Ok(Resolution::Unreachable(why)) => warn!(%dst, "no next hop: {why}"),
                Err(e) => warn!(%dst, "next hop lookup failed: {e}"),
            }
        }
        if changed {
            hops.publish(table.clone());
        }
        if let Some(path) = &args.stats_file {
            if last_stats.elapsed() >= Duration::from_millis(args.stats_interval_ms) {
                write_stats(path, &stats, &installer, &xdp, nq, &table);
                last_stats = Instant::now();
            }
        }
        if last_export.elapsed() >= Duration::from_millis(args.stats_interval_ms.min(1000)) {
            installer.export(&worker_counters(&stats));
            last_export = Instant::now();
        }
    }
    info!("stopping");
    for t in threads {
        let _ = t.join();
    }
    if let Some(path) = &args.stats_file {
        write_stats(path, &stats, &installer, &xdp, nq, &table);
    }
    installer.export(&worker_counters(&stats));
    print_summary(&stats, &installer);
    Ok(())
}

fn worker_counters(stats: &[Arc<WorkerStats>]) -> Vec<WorkerCounters> {
    stats
        .iter()
        .map(|s| {
            let mut fixed = [0u64; 10];
            for (k, side) in [0usize, 1].into_iter().enumerate() {
                fixed[k * 4] = ld(&s.rx_packets[side]);
                fixed[k * 4 + 1] = ld(&s.rx_bytes[side]);
                fixed[k * 4 + 2] = ld(&s.tx_packets[side]);
                fixed[k * 4 + 3] = ld(&s.tx_bytes[side]);
            }
            fixed[8] = ld(&s.encapsulated);
            fixed[9] = ld(&s.decapsulated);
            WorkerCounters {
                fixed,
                esp_drops: s.esp_drops.iter().map(ld).collect(),
                worker_drops: s.worker_drops.iter().map(ld).collect(),
            }
        })
        .collect()
}

/// The dataplane's ends of the shared-memory ring.
struct RingEnd {
    rx: Consumer,
    tx: Producer,
    /// Records for the controller waiting for room in the ring (kept, never dropped,
    /// up to `MAX_QUEUED`; a controller that stays away longer loses the oldest events).
    queued: VecDeque<DataplaneRecord>,
    lost: u64,
    buf: zeroize::Zeroizing<Vec<u8>>,
    out: Vec<DataplaneRecord>,
    /// Held open: this process is the ring's one dataplane.
    _claim: std::fs::File,
}

const MAX_QUEUED: usize = 1 << 20;

impl RingEnd {
    fn open(name: &str, slots: u32, installer: &Installer) -> Result<RingEnd, String> {
        let claim = ShmFile::claim(name, "dataplane").map_err(|e| e.to_string())?;
        let (shm, created) =
            ShmFile::open_or_create(name, slots, SLOT_SIZE).map_err(|e| e.to_string())?;
        info!(path = %shm.path().display(), created, "control ring {}", if created { "created" } else { "attached" });
        let mut r = RingEnd {
            rx: shm.consumer(RingDir::ToDataplane),
            tx: shm.producer(RingDir::ToControl),
            queued: VecDeque::new(),
            lost: 0,
            buf: zeroize::Zeroizing::new(vec![0u8; MAX_RECORD]),
            out: Vec::new(),
            _claim: claim,
        };
        // Tell a controller that is already running to send what it wants installed.
        let (sas, policies) = installer.counts();
        let boot_id = (u64::from(std::process::id()) << 32)
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
        r.queue(DataplaneRecord::Hello {
            boot_id,
            sas: sas as u32,
            policies: policies as u32,
        });
        r.flush();
        Ok(r)
    }

    /// Apply what the controller sent; true if there was anything.
    fn drain(&mut self, installer: &mut Installer, xdp: &mut XdpSteering) -> bool {
        let mut any = false;
        for _ in 0..4096 {
            let Some(n) = self.rx.pop(&mut self.buf) else {
                break;
            };
            any = true;
            installer.apply_bytes(&self.buf[..n], xdp, &mut self.out);
            // Key bytes do not outlive the install in our buffer either.
            self.buf[..n].fill(0);
        }
        for r in self.out.drain(..) {
            self.queued.push_back(r);
        }
        any
    }

    fn queue(&mut self, r: DataplaneRecord) {
        if self.queued.len() >= MAX_QUEUED {
            self.queued.pop_front();
            self.lost += 1;
        }
        self.queued.push_back(r);
    }

    /// Push queued records while the ring has room (never blocks the control thread).
    fn flush(&mut self) {
        let mut b = [0u8; MAX_RECORD];
        while let Some(r) = self.queued.front() {
            let n = r.encode(&mut b);
            match self.tx.try_push(&b[..n]) {
                Ok(true) => {
                    self.queued.pop_front();
                }
                Ok(false) => break,
                Err(e) => {
                    warn!("dropping a record the ring cannot carry: {e}");
                    self.queued.pop_front();
                    self.lost += 1;
                }
            }
        }
    }
}

/// Events the operator should see in the log as well as the controller.
fn log_event(ev: &DataplaneRecord) {
    match ev {
        DataplaneRecord::Acquire {
            policy,
            reqid,
            flow,
        } => info!(
            policy, reqid, src = %flow.src, dst = %flow.dst, protocol = flow.protocol,
            "traffic matched policy {policy} but its SA (reqid {reqid}) is not installed: acquire"
        ),
        DataplaneRecord::UnknownSpi { spi, src, dst } => info!(
            spi = format_args!("{spi:#010x}"), %src, %dst,
            "ESP for an SPI this dataplane does not hold"
        ),
        DataplaneRecord::SaEvent {
            direction,
            reqid,
            event,
        } => {
            info!(?direction, reqid, ?event, "SA event")
        }
        _ => {}
    }
}

fn ld(a: &std::sync::atomic::AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

fn stats_json(
    stats: &[Arc<WorkerStats>],
    installer: &Installer,
    xdp: &XdpSteering,
    nq: [u32; 2],
    hops: &HopTable,
) -> serde_json::Value {
    use serde_json::json;
    let workers: Vec<_> = stats
        .iter()
        .map(|s| {
            let esp: BTreeMap<_, _> = DropReason::ALL
                .iter()
                .map(|r| (r.name(), ld(&s.esp_drops[*r as usize])))
                .filter(|x| x.1 > 0)
                .collect();
            let wd: BTreeMap<_, _> = WorkerDrop::ALL
                .iter()
                .map(|r| (r.name(), ld(&s.worker_drops[*r as usize])))
                .filter(|x| x.1 > 0)
                .collect();
            json!({
                "rx_packets": {"outside": ld(&s.rx_packets[0]), "inside": ld(&s.rx_packets[1])},
                "rx_bytes": {"outside": ld(&s.rx_bytes[0]), "inside": ld(&s.rx_bytes[1])},
                "tx_packets": {"outside": ld(&s.tx_packets[0]), "inside": ld(&s.tx_packets[1])},
                "tx_bytes": {"outside": ld(&s.tx_bytes[0]), "inside": ld(&s.tx_bytes[1])},
                "encapsulated": ld(&s.encapsulated),
                "decapsulated": ld(&s.decapsulated),
                "esp_drops": esp,
                "worker_drops": wd,
            })
        })
        .collect();
    let mut sa_list = Vec::new();
    let drops = |c: &dataplane::esp::SaCounters| {
        c.drops
            .nonzero()
            .map(|(r, n)| (r.name(), n))
            .collect::<BTreeMap<_, _>>()
    };
    // The JSON lists the first SAs only: the counters region is for many.
    for (inst, sa) in installer.outbound().take(1000) {
        let c = sa.counters();
        sa_list.push(json!({"name": inst.name, "direction": "out", "reqid": inst.reqid, "spi": format!("{:#010x}", sa.spi()), "packets": c.packets, "bytes": c.bytes, "last_seq": sa.last_seq(), "drops": drops(&c)}));
    }
    for (spi, inst) in installer.inbound().take(1000) {
        if let Some(sa) = installer.db().inbound.get(spi) {
            let c = sa.counters();
            sa_list.push(json!({"name": inst.name, "direction": "in", "reqid": inst.reqid, "spi": format!("{spi:#010x}"), "packets": c.packets, "bytes": c.bytes, "drops": drops(&c)}));
        }
    }
    let (n_sas, n_policies) = installer.counts();
    let mut x = serde_json::Map::new();
    for (side, name, n) in [
        (Side::Outside, "outside", nq[0]),
        (Side::Inside, "inside", nq[1]),
    ] {
        let m: BTreeMap<_, _> = XdpVerdict::ALL
            .iter()
            .map(|v| (v.name(), xdp.total(side, n, *v).unwrap_or(0)))
            .filter(|x| x.1 > 0)
            .collect();
        x.insert(name.into(), json!(m));
    }
    x.insert("inherited_prefixes".into(), json!(xdp.inherited().count()));
    let mut next_hops: Vec<String> = hops
        .map
        .iter()
        .map(|((side, dst), h)| {
            let mac = h
                .dst_mac
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":");
            format!(
                "{} {dst} via {mac} mtu {}",
                if *side == Side::Outside {
                    "outside"
                } else {
                    "inside"
                },
                h.mtu
            )
        })
        .collect();
    next_hops.sort();
    json!({"workers": workers, "sa_count": n_sas, "policy_count": n_policies, "sas": sa_list, "xdp": x, "next_hops": next_hops})
}

fn write_stats(
    path: &std::path::Path,
    stats: &[Arc<WorkerStats>],
    installer: &Installer,
    xdp: &XdpSteering,
    nq: [u32; 2],
    hops: &HopTable,
) {
    let v = stats_json(stats, installer, xdp, nq, hops);
    let tmp = path.with_extension("tmp");
    // Write then rename, so readers never see half a file.
    if std::fs::write(&tmp, serde_json::to_vec_pretty(&v).unwrap_or_default()).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

fn print_summary(stats: &[Arc<WorkerStats>], installer: &Installer) {
    println!("dataplane counters:");
    for (w, s) in stats.iter().enumerate() {
        println!(
            "  worker {w}: inside rx {} tx {}, outside rx {} tx {}, encapsulated {}, decapsulated {}",
            ld(&s.rx_packets[1]),
            ld(&s.tx_packets[1]),
            ld(&s.rx_packets[0]),
            ld(&s.tx_packets[0]),
            ld(&s.encapsulated),
            ld(&s.decapsulated)
        );
        for r in DropReason::ALL {
            let n = ld(&s.esp_drops[*r as usize]);
            if n > 0 {
                println!("    drop {:<20} {n}", r.name());
            }
        }
        for r in WorkerDrop::ALL {
            let n = ld(&s.worker_drops[*r as usize]);
            if n > 0 {
                println!("    drop {:<20} {n}", r.name());
            }
        }
    }
    for (inst, sa) in installer.outbound().take(20) {
        let c = sa.counters();
        println!(
            "  SA {} out spi {:#010x}: {} packets, {} bytes",
            inst.name.as_deref().unwrap_or("-"),
            sa.spi(),
            c.packets,
            c.bytes
        );
    }
    for (spi, inst) in installer.inbound().take(20) {
        if let Some(sa) = installer.db().inbound.get(spi) {
            let c = sa.counters();
            println!(
                "  SA {} in  spi {spi:#010x}: {} packets, {} bytes",
                inst.name.as_deref().unwrap_or("-"),
                c.packets,
                c.bytes
            );
        }
    }
}
