//! `dataplane`: the VPN concentrator's packet engine on AF_XDP.
//!
//! Loads manually keyed SAs and policies from a TOML file, attaches the XDP program to the
//! outside (WAN) and inside (LAN) interfaces, binds an AF_XDP socket on every queue of both,
//! and runs one poll-mode worker per configured core. Exits cleanly on SIGINT/SIGTERM,
//! printing its counters; the XDP program goes away with the process.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use dataplane::afxdp::BindMode;
use dataplane::afxdp_io::{AfXdpConfig, AfXdpIo};
use dataplane::esp::{DropReason, Mode};
use dataplane::hops::{Hop, HopCache, HopTable};
use dataplane::nexthop::{NextHopResolver, Resolution};
use dataplane::sadb::SaStore;
use dataplane::static_sa::StaticConfig;
use dataplane::worker::{GatewayAddrs, Worker, WorkerDrop, WorkerStats};
use dataplane::xdp::{AttachMode, Side, XdpSteering, XdpVerdict};
use tracing::{error, info, warn};

#[derive(Parser, Debug)]
#[command(
    name = "dataplane",
    version,
    about = "IPsec ESP dataplane on AF_XDP (manually keyed SAs)"
)]
struct Args {
    /// The outside (WAN) interface: ESP arrives and leaves here.
    #[arg(long)]
    outside: String,
    /// The inside (LAN) interface: clear traffic arrives and leaves here.
    #[arg(long)]
    inside: String,
    /// TOML file of SAs and policies (see docs/ARCHITECTURE.md, "Static SAs").
    #[arg(long)]
    sa_file: PathBuf,
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
    let cfg = StaticConfig::load(&args.sa_file).map_err(|e| e.to_string())?;
    let sas = Arc::new(SaStore::from_static(&cfg)?);
    info!(
        outbound = sas.outbound.len(),
        inbound = sas.inbound.len(),
        policies = sas.spd.len(),
        "SAs loaded from {}",
        args.sa_file.display()
    );

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

    let mut xdp = XdpSteering::load().map_err(|e| e.to_string())?;
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
    for (addr, len) in sas.spd.protected_prefixes() {
        xdp.add_protected(addr, len).map_err(|e| e.to_string())?;
    }
    xdp.attach(Side::Outside, &args.outside, args.xdp_mode)
        .map_err(|e| e.to_string())?;
    xdp.attach(Side::Inside, &args.inside, args.xdp_mode)
        .map_err(|e| e.to_string())?;
    info!(outside = %args.outside, inside = %args.inside, mode = ?args.xdp_mode, "XDP attached");

    // Next hops: the tunnel endpoints now, the rest on demand.
    let hops = Arc::new(HopCache::default());
    for (_, sa) in &sas.outbound {
        if let Ok(g) = sa.lock() {
            if let Mode::Tunnel { remote, .. } = g.config().mode {
                hops.request(Side::Outside, remote);
            }
        }
    }

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
        let (sas, hops, st, stop) = (
            Arc::clone(&sas),
            Arc::clone(&hops),
            Arc::clone(&stats[w]),
            Arc::clone(&stop),
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
                    let mut worker = Worker::new(io, sas, hops, st, gw, batch);
                    worker.run(&stop);
                })
                .map_err(|e| format!("spawn worker {w}: {e}"))?,
        );
    }
    info!(workers, "forwarding; Ctrl-C or SIGTERM to stop");

    // The slow path: resolve next hops, write stats.
    let mut known: Vec<(Side, IpAddr)> = Vec::new();
    let mut table = HopTable::default();
    // Written once now: its appearance tells scripts the dataplane is forwarding.
    if let Some(path) = &args.stats_file {
        write_stats(path, &stats, &sas, &xdp, nq, &table);
    }
    let mut last_stats = Instant::now();
    let mut last_refresh = Instant::now();
    while !stop.load(Ordering::Relaxed) {
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
                write_stats(path, &stats, &sas, &xdp, nq, &table);
                last_stats = Instant::now();
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    info!("stopping");
    for t in threads {
        let _ = t.join();
    }
    if let Some(path) = &args.stats_file {
        write_stats(path, &stats, &sas, &xdp, nq, &table);
    }
    print_summary(&stats, &sas);
    Ok(())
}

fn ld(a: &std::sync::atomic::AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

fn stats_json(
    stats: &[Arc<WorkerStats>],
    sas: &SaStore,
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
    for (name, m) in &sas.outbound {
        if let Ok(g) = m.lock() {
            let c = g.counters();
            sa_list.push(json!({"name": name, "direction": "out", "spi": format!("{:#010x}", g.spi()), "packets": c.packets, "bytes": c.bytes, "last_seq": g.last_seq(),
                "drops": c.drops.nonzero().map(|(r, n)| (r.name(), n)).collect::<BTreeMap<_, _>>()}));
        }
    }
    for (name, m) in sas.inbound.values() {
        if let Ok(g) = m.lock() {
            let c = g.counters();
            sa_list.push(json!({"name": name, "direction": "in", "spi": format!("{:#010x}", g.spi()), "packets": c.packets, "bytes": c.bytes,
                "drops": c.drops.nonzero().map(|(r, n)| (r.name(), n)).collect::<BTreeMap<_, _>>()}));
        }
    }
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
    json!({"workers": workers, "sas": sa_list, "xdp": x, "next_hops": next_hops})
}

fn write_stats(
    path: &std::path::Path,
    stats: &[Arc<WorkerStats>],
    sas: &SaStore,
    xdp: &XdpSteering,
    nq: [u32; 2],
    hops: &HopTable,
) {
    let v = stats_json(stats, sas, xdp, nq, hops);
    let tmp = path.with_extension("tmp");
    // Write then rename, so readers never see half a file.
    if std::fs::write(&tmp, serde_json::to_vec_pretty(&v).unwrap_or_default()).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

fn print_summary(stats: &[Arc<WorkerStats>], sas: &SaStore) {
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
    for (name, m) in &sas.outbound {
        if let Ok(g) = m.lock() {
            println!(
                "  SA {name} out spi {:#010x}: {} packets, {} bytes",
                g.spi(),
                g.counters().packets,
                g.counters().bytes
            );
        }
    }
    for (name, m) in sas.inbound.values() {
        if let Ok(g) = m.lock() {
            println!(
                "  SA {name} in  spi {:#010x}: {} packets, {} bytes",
                g.spi(),
                g.counters().packets,
                g.counters().bytes
            );
        }
    }
}
