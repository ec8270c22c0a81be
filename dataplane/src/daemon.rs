//! The dataplane process, as a library: [`run`] sets up the counters file, the installer,
//! the XDP program and the AF_XDP sockets, starts one worker per configuration, and runs the
//! control thread on the caller's thread until told to stop. The binary only parses
//! arguments and handles signals.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::control::install::{install_static, Installer, Restore};
use crate::control::ring_end::RingEnd;
use crate::control::static_sa::StaticConfig;
use crate::control::thread::ControlThread;
use crate::esp::DropReason;
use crate::io::afxdp::BindMode;
use crate::io::afxdp_io::{AfXdpConfig, AfXdpIo};
use crate::io::xdp::{AttachMode, XdpSteering};
use crate::io::Side;
use crate::route::hops::HopCache;
use crate::route::nexthop::NextHopResolver;
use crate::route::refresh::HopRefresher;
use crate::sa::sadb::SaDb;
use crate::shm::counters::CountersFile;
use crate::shm::info::{info_path, DataplaneInfo, WorkerInfo};
use crate::worker::{GatewayAddrs, Worker, WorkerDrop, WorkerEvent, WorkerStats};

/// What the dataplane runs with (the binary's arguments, resolved).
#[derive(Debug, Clone)]
pub struct Config {
    /// The outside (WAN) interface.
    pub outside: String,
    /// The inside (LAN) interface.
    pub inside: String,
    /// Static SAs and policies, installed at start.
    pub sa_file: Option<PathBuf>,
    /// The shared-memory ring to the control plane (/dev/shm/NAME).
    pub ring: Option<String>,
    /// Slots per ring direction when this process creates the ring file.
    pub ring_slots: u32,
    /// The counters file (/dev/shm/NAME).
    pub counters: Option<String>,
    /// SA slots in the counters file.
    pub counter_slots: usize,
    /// Poll-mode workers.
    pub workers: usize,
    /// CPU cores to pin the workers to, by worker (default: [`choose_cores`]: cores no
    /// other running dataplane uses first).
    pub cores: Vec<usize>,
    pub xdp_mode: AttachMode,
    pub bind: BindMode,
    /// UMEM frames per worker.
    pub frames: u32,
    /// Packets per batch.
    pub batch: usize,
    /// Entries of each AF_XDP ring.
    pub ring_size: u32,
    /// Empty polls before an idle worker blocks.
    pub idle_polls: u32,
    /// The workers' AQM: standing-queue limit in packets (0: off) and interval.
    pub aqm_limit: usize,
    pub aqm_interval: Duration,
    /// Write counters as JSON here every `stats_interval` and at exit.
    pub stats_file: Option<PathBuf>,
    pub stats_interval: Duration,
    /// bpffs directory of the pinned XDP links and maps (fail-closed across restarts).
    pub pin_dir: PathBuf,
    /// While no dataplane runs, let the kernel forward protected traffic in clear.
    pub fail_open: bool,
}

impl Config {
    /// The counters file: as given, or RING.counters with a ring.
    pub fn counters_name(&self) -> Option<String> {
        self.counters
            .clone()
            .or_else(|| self.ring.as_ref().map(|r| format!("{r}.counters")))
    }
}

/// The number of receive queues of `ifname` (at least 1).
pub fn queues_of(ifname: &str) -> Result<u32, String> {
    let dir = format!("/sys/class/net/{ifname}/queues");
    let n = std::fs::read_dir(&dir)
        .map_err(|e| format!("{dir}: {e} (does interface {ifname} exist in this namespace?)"))?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count() as u32;
    Ok(n.max(1))
}

/// Run the dataplane until `stop` is set; then stop the workers, write the counters and
/// print a summary.
pub fn run(cfg: Config, stop: Arc<AtomicBool>) -> Result<(), String> {
    // Parse the static file first: a bad file is refused before anything is attached.
    let static_cfg = match &cfg.sa_file {
        Some(p) => Some(StaticConfig::load(p).map_err(|e| e.to_string())?),
        None => None,
    };
    if static_cfg.is_none() && cfg.ring.is_none() {
        warn!("neither --sa-file nor --ring: no SA can ever be installed");
    }
    let db = Arc::new(SaDb::new());
    let mut installer = Installer::new(Arc::clone(&db));
    if let Some(name) = &cfg.counters_name() {
        // What a previous run left: sequence leases and windows to resume from.
        let restore = match CountersFile::open(name) {
            Ok(old) => {
                let snap = old.snapshot();
                if snap.torn {
                    // The previous run died mid-update: each lease read is still one it
                    // persisted before using it, so resuming from them stays safe.
                    warn!("counters file left mid-update by the previous run; resuming from it anyway");
                }
                Restore::from_snapshot(&snap)
            }
            Err(_) => Restore::default(),
        };
        let esp: Vec<&str> = DropReason::ALL.iter().map(|r| r.name()).collect();
        let wrk: Vec<&str> = WorkerDrop::ALL.iter().map(|r| r.name()).collect();
        let file = CountersFile::create(name, cfg.workers.max(1), cfg.counter_slots, &esp, &wrk)
            .map_err(|e| e.to_string())?;
        info!(path = %file.path().display(), resumable_sas = restore.len(), "counters file");
        installer = installer.with_state(Arc::new(file), restore);
    }

    let mut resolver = NextHopResolver::new().map_err(|e| e.to_string())?;
    let if_out = resolver
        .ifindex(&cfg.outside)
        .map_err(|e| format!("outside interface: {e}"))?;
    let if_in = resolver
        .ifindex(&cfg.inside)
        .map_err(|e| format!("inside interface: {e}"))?;
    let mut gw = GatewayAddrs::default();
    for a in resolver.interface_addrs(if_in).map_err(|e| e.to_string())? {
        match a {
            IpAddr::V4(v4) if gw.inside_v4.is_none() => gw.inside_v4 = Some(v4),
            IpAddr::V6(v6) if gw.inside_v6.is_none() && !v6.is_unicast_link_local() => {
                gw.inside_v6 = Some(v6)
            }
            _ => {} // further addresses (and link-local ones): the first of each family serves
        }
    }

    // Queues: every queue of both interfaces gets a socket (an empty XSKMAP slot would
    // silently hand that queue's packets to the kernel), dealt out to workers.
    let nq = [queues_of(&cfg.outside)?, queues_of(&cfg.inside)?];
    let workers = cfg.workers.max(1);
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
            cfg.outside, nq[0], nq[0]
        ));
    }

    let mut xdp =
        XdpSteering::open_pinned(&cfg.pin_dir, cfg.fail_open).map_err(|e| e.to_string())?;
    if cfg.fail_open {
        warn!("FAIL-OPEN: while no dataplane runs, traffic between the protected networks is forwarded IN CLEAR by the kernel");
    }
    let inherited: Vec<_> = xdp.inherited().collect();
    info!(pin_dir = %cfg.pin_dir.display(), fail_open = cfg.fail_open, ?inherited, "XDP maps pinned (protected prefixes left by a previous run stay protected until a policy claims them or the controller flushes)");
    let afcfg = AfXdpConfig {
        frames: cfg.frames,
        bind: cfg.bind,
        ring_size: cfg.ring_size,
        ..AfXdpConfig::default()
    };
    let mut ios = Vec::new();
    let mut info_workers = Vec::new();
    for (w, q) in per_worker.iter().enumerate() {
        let io = AfXdpIo::new(afcfg, [if_out, if_in], [&q[0], &q[1]])
            .map_err(|e| format!("worker {w}: {e}"))?;
        info!(worker = w, outside_queues = ?q[0], inside_queues = ?q[1], zero_copy = io.zero_copy, "AF_XDP sockets bound ({})", if io.zero_copy { "zero-copy" } else { "copy mode" });
        info_workers.push(WorkerInfo {
            id: w as u32,
            core: None,
            outside_queues: q[0].clone(),
            inside_queues: q[1].clone(),
            zero_copy: io.zero_copy,
        });
        for side in [Side::Outside, Side::Inside] {
            for sock in io.sockets(side) {
                xdp.register_socket(side, sock.queue(), sock)
                    .map_err(|e| e.to_string())?;
            }
        }
        ios.push(io);
    }
    if let (Some(static_cfg), Some(path)) = (&static_cfg, &cfg.sa_file) {
        install_static(&mut installer, static_cfg, &mut xdp)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let (sas, policies) = installer.counts();
        info!(
            sas,
            policies,
            "static SAs installed from {}",
            path.display()
        );
        if cfg.ring.is_none() {
            xdp.release_inherited().map_err(|e| e.to_string())?;
        }
    }
    let ring = match &cfg.ring {
        Some(name) => Some(RingEnd::open(name, cfg.ring_slots, &installer)?),
        None => None,
    };
    xdp.attach(Side::Outside, &cfg.outside, cfg.xdp_mode)
        .map_err(|e| e.to_string())?;
    xdp.attach(Side::Inside, &cfg.inside, cfg.xdp_mode)
        .map_err(|e| e.to_string())?;
    info!(outside = %cfg.outside, inside = %cfg.inside, mode = ?cfg.xdp_mode, "XDP attached");

    let hops = Arc::new(HopCache::default());
    let (ev_tx, ev_rx) = std::sync::mpsc::channel::<WorkerEvent>();
    let allowed: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .iter()
        .map(|c| c.id)
        .collect();
    let others = if cfg.cores.is_empty() {
        cores_of_other_dataplanes(Path::new("/dev/shm"))
    } else {
        Vec::new()
    };
    let chosen = choose_cores(workers, &cfg.cores, &allowed, &others);
    if cfg.cores.is_empty() {
        info!(cores = ?chosen, taken_by_other_dataplanes = ?others, "worker cores chosen (free cores first; --cores to choose)");
    }
    let stats: Vec<Arc<WorkerStats>> = (0..workers)
        .map(|_| Arc::new(WorkerStats::default()))
        .collect();
    let mut threads = Vec::new();
    for (w, io) in ios.into_iter().enumerate() {
        let core = chosen.get(w).copied().flatten();
        info_workers[w].core = core.map(|c| c as u32);
        let (db, hops, st, stop, ev_tx) = (
            Arc::clone(&db),
            Arc::clone(&hops),
            Arc::clone(&stats[w]),
            Arc::clone(&stop),
            ev_tx.clone(),
        );
        let batch = cfg.batch;
        let (idle_polls, aqm_limit, aqm_interval) =
            (cfg.idle_polls, cfg.aqm_limit, cfg.aqm_interval);
        threads.push(
            std::thread::Builder::new()
                .name(format!("worker-{w}"))
                .spawn(move || {
                    if let Some(id) = core {
                        if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
                            warn!(worker = w, core = id, "could not pin to core");
                        }
                    }
                    let mut worker = Worker::new(io, db, hops, st, gw, batch)
                        .with_events(ev_tx)
                        .with_index(w as u16)
                        .with_latency_policy(idle_polls, aqm_limit, aqm_interval);
                    worker.run(&stop);
                })
                .map_err(|e| format!("spawn worker {w}: {e}"))?,
        );
    }
    info!(
        workers,
        aes_gcm = %crate::crypto::gcm::GcmPath::best(),
        "forwarding; Ctrl-C or SIGTERM to stop"
    );
    // What `vpnctl status` shows about this process, beside the counters file.
    let info_file = cfg
        .ring
        .clone()
        .or_else(|| cfg.counters_name())
        .map(|n| info_path(&n));
    if let Some(path) = &info_file {
        let info = DataplaneInfo {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            ring: cfg.ring.clone(),
            counters: cfg.counters_name(),
            outside: cfg.outside.clone(),
            inside: cfg.inside.clone(),
            xdp_mode: match cfg.xdp_mode {
                AttachMode::Driver => "native",
                AttachMode::Skb => "generic",
            }
            .to_string(),
            bind_mode: DataplaneInfo::bind_mode_of(&info_workers).to_string(),
            workers: info_workers,
        };
        if let Err(e) = info.write(path) {
            warn!(path = %path.display(), "info file for vpnctl status not written: {e}");
        }
    }

    let mut control = ControlThread {
        installer,
        xdp,
        ring,
        events: ev_rx,
        hops,
        refresher: HopRefresher::new(resolver, [if_out, if_in]),
        stats,
        stats_file: cfg.stats_file.clone(),
        stats_interval: cfg.stats_interval,
        queues: nq,
    };
    control.run(&stop);
    info!("stopping");
    for t in threads {
        let _ = t.join();
    }
    control.finish();
    if let Some(path) = &info_file {
        let _ = std::fs::remove_file(path); // absent already: nothing to remove
    }
    Ok(())
}

/// The core of each of `workers` workers. `given` (`--cores`) wins where it names one;
/// otherwise cores of `allowed` (this process's affinity) that no other dataplane on this
/// machine uses (`taken`, one entry per worker of theirs) come first, then the least-used
/// taken ones, so two dataplanes on one machine (both gateways of the demo and benchmarks)
/// do not stack their workers on one core while another idles. Empty `allowed` (affinity
/// unknown): no pinning beyond `given`.
pub fn choose_cores(
    workers: usize,
    given: &[usize],
    allowed: &[usize],
    taken: &[usize],
) -> Vec<Option<usize>> {
    // Allowed cores ordered by how many other workers use them (stable: lower id first).
    let mut order: Vec<(usize, usize)> = allowed
        .iter()
        .map(|&c| (taken.iter().filter(|&&t| t == c).count(), c))
        .collect();
    order.sort();
    (0..workers)
        .map(|w| {
            given.get(w).copied().or_else(|| {
                // Workers past the given list take the order from its start.
                let k = w - given.len().min(w);
                (!order.is_empty()).then(|| order[k % order.len()].1)
            })
        })
        .collect()
}

/// The cores the workers of other running dataplanes are pinned to, from the info files
/// they publish in `dir` (`*.info`; see `shm::info`). Files of dead processes and of this
/// one are skipped. Best effort: two dataplanes starting at the same instant may not see
/// each other (pass `--cores` to be sure).
pub fn cores_of_other_dataplanes(dir: &Path) -> Vec<usize> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let me = std::process::id();
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".info"))
        .filter_map(|e| DataplaneInfo::read(&e.path()).ok())
        .filter(|i| i.pid != me && Path::new(&format!("/proc/{}", i.pid)).exists())
        .flat_map(|i| i.workers.into_iter().filter_map(|w| w.core))
        .map(|c| c as usize)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_cores_come_first() {
        // The other gateway's worker sits on core 0: ours goes to core 1.
        assert_eq!(choose_cores(1, &[], &[0, 1], &[0]), vec![Some(1)]);
        // Nothing else runs: worker i on core i.
        assert_eq!(choose_cores(2, &[], &[0, 1], &[]), vec![Some(0), Some(1)]);
        // Two workers, core 0 taken: the free core first, then the taken one.
        assert_eq!(choose_cores(2, &[], &[0, 1], &[0]), vec![Some(1), Some(0)]);
        // More workers than cores: round-robin over the order.
        assert_eq!(
            choose_cores(3, &[], &[0, 1], &[1]),
            vec![Some(0), Some(1), Some(0)]
        );
        // Least-used taken core first when none is free.
        assert_eq!(
            choose_cores(1, &[], &[0, 1, 2], &[0, 0, 1, 2, 2]),
            vec![Some(1)]
        );
    }

    #[test]
    fn given_cores_win_and_unknown_affinity_pins_nothing() {
        assert_eq!(choose_cores(2, &[1], &[0, 1], &[1]), vec![Some(1), Some(0)]);
        assert_eq!(choose_cores(1, &[], &[], &[0]), vec![None]);
    }

    #[test]
    fn other_dataplanes_are_read_from_their_info_files() {
        let dir = std::env::temp_dir().join(format!("dp-cores-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let worker = |core| WorkerInfo {
            core,
            ..WorkerInfo::default()
        };
        // pid 1 is alive; our own pid and a pid beyond pid_max are skipped.
        let live = DataplaneInfo {
            pid: 1,
            workers: vec![worker(Some(3)), worker(None)],
            ..DataplaneInfo::default()
        };
        live.write(&dir.join("a.info")).unwrap();
        let me = DataplaneInfo {
            pid: std::process::id(),
            workers: vec![worker(Some(5))],
            ..DataplaneInfo::default()
        };
        me.write(&dir.join("b.info")).unwrap();
        let dead = DataplaneInfo {
            pid: u32::MAX - 1,
            workers: vec![worker(Some(7))],
            ..DataplaneInfo::default()
        };
        dead.write(&dir.join("c.info")).unwrap();
        std::fs::write(dir.join("d.info"), "not json").unwrap();
        let got = cores_of_other_dataplanes(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(got, vec![3]);
    }
}
