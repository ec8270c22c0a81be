//! `vpnbench pipeline`: the real workers ([`Worker::poll_once`]) on zero-allocation
//! in-memory ports ([`super::pipeline_port`]), no kernel.
//!
//! Two gateways with matching SAs, as `--sa-file` would install them (the same static-file
//! path, [`install_static`]): gateway A encapsulates inside → outside, gateway B
//! decapsulates outside → inside. Three stages are measured per point:
//! - `encap`: A's workers on inner frames (prebuilt, copied into a pooled buffer per packet);
//! - `decap`: B's workers on ESP frames A produced during setup, cycled; B's inbound SAs
//!   have anti-replay off (RFC 4303 §3.4.3 allows it for manually keyed SAs) so a cycled
//!   capture is accepted — the window is still locked and updated per packet as with it on;
//! - `encap+decap`: in each thread a worker of A hands its frames to a worker of B.
//!
//! Flows: with 1 SA, 256 flows (destinations) in one policy; with *n* SAs, one flow per SA,
//! one policy each (flows are spread over the SAs by policy), interleaved, so a batch of 64
//! touches 64 SAs. Each worker runs on its own thread pinned with `core_affinity`.
//! Counts are exact: after each point the pipeline drains and every frame generated must
//! be delivered or counted as a drop; with `--packets` every frame must be delivered.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use dataplane::control::install::{install_static, Installer, NoSteering};
use dataplane::control::static_sa::StaticConfig;
use dataplane::io::Side;
use dataplane::route::hops::{Hop, HopCache, HopTable};
use dataplane::sa::sadb::SaDb;
use dataplane::worker::{GatewayAddrs, Worker, WorkerStats};

use super::cli::PipelineArgs;
use super::imix::SizeSpec;
use super::pipeline_port::{BenchPort, FrameList, Shared, Sink, Source};
use super::schema::{BenchDoc, Goal, PipelineRow};
use super::{output, BenchError};

const MAC_CA: [u8; 6] = [2, 0, 0, 0, 0xca, 0];
const MAC_GA_IN: [u8; 6] = [2, 0, 0, 0, 0xa1, 0];
const MAC_GA_OUT: [u8; 6] = [2, 0, 0, 0, 0xa2, 0];
const MAC_GB_OUT: [u8; 6] = [2, 0, 0, 0, 0xb2, 0];
const MAC_GB_IN: [u8; 6] = [2, 0, 0, 0, 0xb1, 0];
const MAC_CB: [u8; 6] = [2, 0, 0, 0, 0xcb, 0];
const GW_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const GW_B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const CLIENT_A: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 10);
/// The worker's batch (as the dataplane's default).
const BATCH: usize = 64;
/// Buffers per thread: a few batches in flight.
const POOL: usize = 256;
/// Flows when there is one SA.
const FLOWS_ONE_SA: usize = 256;
/// Tunnel MTU of the in-memory link: large enough for the IMIX's 1500-byte packets in ESP.
const LINK_MTU: u16 = 9000;

/// The three measured stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Encap,
    Decap,
    EncapDecap,
}

impl Stage {
    pub const ALL: [Stage; 3] = [Stage::Encap, Stage::Decap, Stage::EncapDecap];
    pub fn name(self) -> &'static str {
        match self {
            Stage::Encap => "encap",
            Stage::Decap => "decap",
            Stage::EncapDecap => "encap+decap",
        }
    }
}

/// How long a point runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Budget {
    Seconds(f64),
    /// Exactly this many packets in all (split over the workers); all must come out.
    Packets(u64),
}

/// Both gateways for one SA count, installed once and shared by every point.
pub struct Gateways {
    pub sas: u64,
    a_db: Arc<SaDb>,
    b_db: Arc<SaDb>,
    a_hops: Arc<HopCache>,
    b_hops: Arc<HopCache>,
    flows: Vec<Ipv4Addr>,
}

/// The destination of flow `i`: 10.2.0.0/16, from 10.2.0.1 on.
fn flow_dst(i: usize) -> Ipv4Addr {
    let n = i as u32 + 1;
    Ipv4Addr::new(10, 2, (n >> 8) as u8, n as u8)
}

const KEY: &str = "000102030405060708090a0b0c0d0e0f10111213";

/// A's static file: outbound SAs and the policies that pick them.
fn a_file(sas: u64) -> String {
    let mut s = String::with_capacity(sas as usize * 400);
    for i in 0..sas as usize {
        let dst = if sas == 1 {
            "10.2.0.0/16".to_string()
        } else {
            format!("{}/32", flow_dst(i))
        };
        s += &format!(
            "[[sa]]\nname = \"o{i}\"\ndirection = \"out\"\nspi = {spi}\nproposal = \"aes128gcm16\"\n\
             enc_key = \"{KEY}\"\nmode = \"tunnel\"\nlocal = \"{GW_A}\"\nremote = \"{GW_B}\"\n\
             local_ts = [\"10.1.0.0/16\"]\nremote_ts = [\"{dst}\"]\n\n\
             [[policy]]\nsrc = \"10.1.0.0/16\"\ndst = \"{dst}\"\naction = \"protect\"\nsa = \"o{i}\"\n\n",
            spi = 0x10000 + i
        );
    }
    s
}

/// B's static file: the matching inbound SAs, anti-replay off (see the module comment).
fn b_file(sas: u64) -> String {
    let mut s = String::with_capacity(sas as usize * 300);
    for i in 0..sas as usize {
        let dst = if sas == 1 {
            "10.2.0.0/16".to_string()
        } else {
            format!("{}/32", flow_dst(i))
        };
        s += &format!(
            "[[sa]]\nname = \"i{i}\"\ndirection = \"in\"\nspi = {spi}\nproposal = \"aes128gcm16\"\n\
             enc_key = \"{KEY}\"\nmode = \"tunnel\"\nlocal = \"{GW_B}\"\nremote = \"{GW_A}\"\n\
             replay_window = 0\nlocal_ts = [\"{dst}\"]\nremote_ts = [\"10.1.0.0/16\"]\n\n",
            spi = 0x10000 + i
        );
    }
    s
}

fn install(name: &str, text: &str, sas: u64) -> Result<Arc<SaDb>, BenchError> {
    let setup = |detail: String| BenchError::Setup {
        what: format!("gateway {name} with {sas} SAs"),
        detail,
    };
    let cfg = StaticConfig::parse(Path::new(name), text).map_err(|e| setup(e.to_string()))?;
    let slots = (2 * sas as usize).max(1024).next_power_of_two();
    let db = Arc::new(SaDb::with_capacity(slots, sas as usize + 16));
    install_static(&mut Installer::new(Arc::clone(&db)), &cfg, &mut NoSteering).map_err(setup)?;
    Ok(db)
}

impl Gateways {
    /// Install both gateways' SAs and policies and their next hops.
    pub fn new(sas: u64) -> Result<Gateways, BenchError> {
        if sas == 0 || sas > 60_000 {
            return Err(BenchError::Setup {
                what: format!("{sas} SAs"),
                detail: "the pipeline takes 1 to 60000 SAs (one /32 flow each in 10.2/16)".into(),
            });
        }
        let flows: Vec<Ipv4Addr> = (0..(sas as usize).max(if sas == 1 { FLOWS_ONE_SA } else { 0 }))
            .map(flow_dst)
            .collect();
        let a_db = install("A", &a_file(sas), sas)?;
        let b_db = install("B", &b_file(sas), sas)?;
        let hop = |src_mac, dst_mac| Hop {
            src_mac,
            dst_mac,
            mtu: LINK_MTU,
        };
        let a_hops = Arc::new(HopCache::default());
        let mut t = HopTable::default();
        t.map.insert(
            (Side::Outside, IpAddr::V4(GW_B)),
            hop(MAC_GA_OUT, MAC_GB_OUT),
        );
        t.map
            .insert((Side::Inside, IpAddr::V4(CLIENT_A)), hop(MAC_GA_IN, MAC_CA));
        a_hops.publish(t);
        let b_hops = Arc::new(HopCache::default());
        let mut t = HopTable::default();
        t.map.insert(
            (Side::Outside, IpAddr::V4(GW_A)),
            hop(MAC_GB_OUT, MAC_GA_OUT),
        );
        for &d in &flows {
            t.map
                .insert((Side::Inside, IpAddr::V4(d)), hop(MAC_GB_IN, MAC_CB));
        }
        b_hops.publish(t);
        Ok(Gateways {
            sas,
            a_db,
            b_db,
            a_hops,
            b_hops,
            flows,
        })
    }

    fn worker_a(&self, port: BenchPort) -> Worker<BenchPort> {
        gateway_worker(port, &self.a_db, &self.a_hops)
    }

    fn worker_b(&self, port: BenchPort) -> Worker<BenchPort> {
        gateway_worker(port, &self.b_db, &self.b_hops)
    }

    /// The frames for one size: inner frames for A and the ESP frames A makes of them.
    pub fn frames(&self, size: SizeSpec) -> Result<Frames, BenchError> {
        let pattern = size.pattern();
        let n = lcm(pattern.len(), self.flows.len());
        let mut inner = FrameList::default();
        for k in 0..n {
            let len = pattern[k % pattern.len()];
            inner
                .frames
                .push(inner_frame(len, self.flows[k % self.flows.len()]));
            inner.inner_len.push(len as u32);
        }
        let inner = Arc::new(inner);
        // Run A once over the list and keep what it sends.
        let sh = Shared::new(POOL, 0);
        let mut a = self.worker_a(BenchPort::new(
            sh.clone(),
            (Source::Empty, Sink::Collect),
            (
                Source::List {
                    list: Arc::clone(&inner),
                    next: 0,
                    budget: Some(n as u64),
                },
                Sink::Unexpected,
            ),
        ));
        while a.poll_once() > 0 {}
        let esp = std::mem::take(&mut sh.borrow_mut().collected);
        if esp.len() != n {
            return Err(BenchError::CountMismatch(format!(
                "setup: gateway A encapsulated {} of {n} frames ({})",
                esp.len(),
                drops_of(a.stats()).1
            )));
        }
        let esp = Arc::new(FrameList {
            frames: esp,
            inner_len: inner.inner_len.clone(),
        });
        Ok(Frames { inner, esp })
    }
}

/// The prebuilt frames of one size.
pub struct Frames {
    pub inner: Arc<FrameList>,
    pub esp: Arc<FrameList>,
}

fn lcm(a: usize, b: usize) -> usize {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    a / gcd(a, b) * b
}

/// An Ethernet frame from client A to `dst`: IPv4/UDP, `len` bytes of IP packet.
fn inner_frame(len: usize, dst: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; 14 + len];
    f[..6].copy_from_slice(&MAC_GA_IN);
    f[6..12].copy_from_slice(&MAC_CA);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..];
    dataplane::wire::Ipv4Repr {
        src: CLIENT_A,
        dst,
        protocol: 17,
        payload_len: len - 20,
        ttl: 64,
        tos: 0,
        ident: 1,
        dont_frag: false,
    }
    .emit(ip)
    .expect("the buffer holds the header");
    // UDP 5000 → 5001, checksum 0 (none, RFC 768).
    let udp_len = (len - 20) as u16;
    ip[20..22].copy_from_slice(&5000u16.to_be_bytes());
    ip[22..24].copy_from_slice(&5001u16.to_be_bytes());
    ip[24..26].copy_from_slice(&udp_len.to_be_bytes());
    f
}

/// (total drops, "name=count, ..." of the nonzero ones).
fn drops_of(s: &WorkerStats) -> (u64, String) {
    let mut total = 0;
    let mut names = Vec::new();
    for (name, n) in s.nonzero_drops() {
        total += n;
        names.push(format!("{name}={n}"));
    }
    (total, names.join(", "))
}

/// What one worker thread measured.
#[derive(Debug)]
struct ThreadResult {
    core: Option<usize>,
    /// Delivered in the timed part.
    timed: u64,
    elapsed: Duration,
    generated: u64,
    delivered: u64,
    dropped: u64,
    drop_names: String,
}

/// One measured point.
pub struct Point {
    pub size: SizeSpec,
    pub stage: Stage,
    pub workers: usize,
    pub budget: Budget,
}

/// Run one point on `workers` threads; `cores` are the cores to pin to (round-robin).
pub fn run_point(
    gw: &Gateways,
    frames: &Frames,
    p: &Point,
    cores: &[core_affinity::CoreId],
) -> Result<PipelineRow, BenchError> {
    let workers = p.workers.max(1);
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(workers + 1);
    let results: Vec<Option<ThreadResult>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|i| {
                let (stop, barrier) = (&stop, &barrier);
                let share = match p.budget {
                    Budget::Packets(n) => {
                        Some(n / workers as u64 + u64::from((i as u64) < n % workers as u64))
                    }
                    Budget::Seconds(_) => None,
                };
                let core = cores.get(i % cores.len().max(1)).copied();
                s.spawn(move || {
                    worker_thread(gw, frames, p.stage, i, workers, share, core, stop, barrier)
                })
            })
            .collect();
        barrier.wait();
        if let Budget::Seconds(secs) = p.budget {
            std::thread::sleep(Duration::from_secs_f64(secs));
            stop.store(true, Ordering::Relaxed);
        }
        handles.into_iter().map(|h| h.join().ok()).collect()
    });
    let Some(results) = results.into_iter().collect::<Option<Vec<ThreadResult>>>() else {
        return Err(BenchError::Other("a worker thread panicked".into()));
    };
    let list = match p.stage {
        Stage::Decap => &frames.esp,
        _ => &frames.inner,
    };
    let mut row = PipelineRow {
        size: p.size.label(),
        size_mix: p.size.mix(),
        stage: p.stage.name().into(),
        sas: gw.sas,
        workers,
        ..PipelineRow::default()
    };
    let mut rate = 0.0;
    let mut generated = 0;
    let mut delivered = 0;
    let mut why = Vec::new();
    for r in &results {
        row.cores.extend(r.core);
        row.packets += r.timed;
        rate += r.timed as f64 / r.elapsed.as_secs_f64().max(1e-9);
        row.seconds = row.seconds.max(r.elapsed.as_secs_f64());
        row.dropped += r.dropped;
        generated += r.generated;
        delivered += r.delivered;
        if !r.drop_names.is_empty() {
            why.push(r.drop_names.clone());
        }
        if r.generated != r.delivered + r.dropped {
            return Err(BenchError::CountMismatch(format!(
                "{} {} {} SAs {workers} workers: a thread generated {} frames, delivered {} and dropped {}: {} frames unaccounted for",
                row.stage, row.size, row.sas, r.generated, r.delivered, r.dropped,
                r.generated as i64 - (r.delivered + r.dropped) as i64
            )));
        }
    }
    if let Budget::Packets(n) = p.budget {
        if generated != n || delivered != n || row.dropped != 0 {
            return Err(BenchError::CountMismatch(format!(
                "{} {} {} SAs {workers} workers: {n} packets in, {generated} generated, {delivered} out, {} dropped ({})",
                row.stage, row.size, row.sas, row.dropped, why.join("; ")
            )));
        }
    }
    let mean = list.mean_inner_len();
    row.bytes = (row.packets as f64 * mean).round() as u64;
    row.mpps = rate / 1e6;
    row.gbps = rate * mean * 8.0 / 1e9;
    row.mpps_per_core = row.mpps / workers as f64;
    row.ns_per_packet = if rate > 0.0 {
        1e9 * workers as f64 / rate
    } else {
        0.0
    };
    Ok(row)
}

#[allow(clippy::too_many_arguments)]
fn worker_thread(
    gw: &Gateways,
    frames: &Frames,
    stage: Stage,
    i: usize,
    workers: usize,
    share: Option<u64>,
    core: Option<core_affinity::CoreId>,
    stop: &AtomicBool,
    barrier: &Barrier,
) -> ThreadResult {
    let pinned = core.filter(|c| core_affinity::set_for_current(*c));
    let sh = Shared::new(POOL, 4 * BATCH);
    let source = |list: &Arc<FrameList>| Source::List {
        list: Arc::clone(list),
        next: i * list.len() / workers,
        budget: share,
    };
    let (mut a, mut b) = match stage {
        Stage::Encap => (
            Some(gw.worker_a(BenchPort::new(
                sh.clone(),
                (Source::Empty, Sink::Deliver),
                (source(&frames.inner), Sink::Unexpected),
            ))),
            None,
        ),
        Stage::Decap => (
            None,
            Some(gw.worker_b(BenchPort::new(
                sh.clone(),
                (source(&frames.esp), Sink::Unexpected),
                (Source::Empty, Sink::Deliver),
            ))),
        ),
        Stage::EncapDecap => (
            Some(gw.worker_a(BenchPort::new(
                sh.clone(),
                (Source::Empty, Sink::Handoff),
                (source(&frames.inner), Sink::Unexpected),
            ))),
            Some(gw.worker_b(BenchPort::new(
                sh.clone(),
                (Source::Handoff, Sink::Unexpected),
                (Source::Empty, Sink::Deliver),
            ))),
        ),
    };
    let round = |a: &mut Option<Worker<BenchPort>>, b: &mut Option<Worker<BenchPort>>| {
        a.as_mut().map_or(0, |w| w.poll_once()) + b.as_mut().map_or(0, |w| w.poll_once())
    };
    // Warm up (caches, branch predictors, the replicas' first sync) when timed.
    if share.is_none() {
        for _ in 0..256 {
            round(&mut a, &mut b);
        }
    }
    barrier.wait();
    let start = Instant::now();
    let before = sh.borrow().counts.delivered;
    if share.is_some() {
        while round(&mut a, &mut b) > 0 || sh.borrow().in_handoff() > 0 {}
    } else {
        loop {
            for _ in 0..16 {
                round(&mut a, &mut b);
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
    }
    let elapsed = start.elapsed();
    let timed = sh.borrow().counts.delivered - before;
    // Drain what is in flight so every frame is accounted for.
    for w in [&mut a, &mut b].into_iter().flatten() {
        w.io.stop_sources();
    }
    while round(&mut a, &mut b) > 0 || sh.borrow().in_handoff() > 0 {}
    let mut dropped = sh.borrow().counts.port_drops;
    let mut names = Vec::new();
    for w in [&a, &b].into_iter().flatten() {
        let (n, why) = drops_of(w.stats());
        dropped += n;
        if !why.is_empty() {
            names.push(why);
        }
    }
    let c = sh.borrow().counts;
    ThreadResult {
        core: pinned.map(|c| c.id),
        timed,
        elapsed,
        generated: c.generated,
        delivered: c.delivered,
        dropped,
        drop_names: names.join(", "),
    }
}

/// A CPU-bound loop on 1 and on 2 pinned threads: how much of a second core this host
/// actually gives right now (the reason a scaling goal can be missed, measured).
pub fn cpu_scaling_baseline(cores: &[core_affinity::CoreId]) -> f64 {
    fn spin(stop: &AtomicBool) -> u64 {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..1024 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
            }
            n += 1;
        }
        std::hint::black_box(x);
        n
    }
    let run = |threads: usize| -> u64 {
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|i| {
                    let stop = &stop;
                    let core = cores.get(i % cores.len().max(1)).copied();
                    s.spawn(move || {
                        if let Some(c) = core {
                            core_affinity::set_for_current(c);
                        }
                        spin(stop)
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_millis(300));
            stop.store(true, Ordering::Relaxed);
            hs.into_iter().map(|h| h.join().unwrap_or(0)).sum()
        })
    };
    let one = run(1);
    let two = run(2);
    two as f64 / one.max(1) as f64
}

/// "pipeline with 2 workers >= 1.9x one worker", per SA count, at encap+decap.
pub fn scaling_goals(rows: &[PipelineRow], cpu_scaling: Option<f64>, load: &str) -> Vec<Goal> {
    let mut goals = Vec::new();
    let mut sas: Vec<u64> = rows.iter().map(|r| r.sas).collect();
    sas.sort_unstable();
    sas.dedup();
    for n in sas {
        let mut parts = Vec::new();
        let mut worst: Option<f64> = None;
        for size in ["64", "1420", "imix"] {
            let find = |w: usize| {
                rows.iter().find(|r| {
                    r.sas == n && r.workers == w && r.size == size && r.stage == "encap+decap"
                })
            };
            if let (Some(one), Some(two)) = (find(1), find(2)) {
                if one.mpps > 0.0 {
                    let ratio = two.mpps / one.mpps;
                    worst = Some(worst.map_or(ratio, |w: f64| w.min(ratio)));
                    let unit = if size == "imix" { "" } else { " B" };
                    parts.push(format!(
                        "{size}{unit}: {:.2}x ({:.3} → {:.3} Mpps)",
                        ratio, one.mpps, two.mpps
                    ));
                }
            }
        }
        let Some(worst) = worst else { continue };
        let met = worst >= 1.9;
        let reason = if met {
            String::new()
        } else {
            match cpu_scaling {
                Some(c) if c < 1.9 => format!(
                    "a CPU-bound loop in the same process scaled only {c:.2}x from 1 to 2 pinned threads: the host does not give two full cores ({load})"
                ),
                Some(c) if n == 1 => format!(
                    "a CPU-bound loop scaled {c:.2}x on 2 threads, so the cores were available: the workers contend on shared state (one SA's sequence counter and replay window are shared by all workers when there is 1 SA) ({load})"
                ),
                Some(c) => {
                    // With one SA per flow the workers share no SA; what grows is the
                    // working set: every packet of a batch touches another SA's state.
                    let cost = |sas: u64| {
                        rows.iter()
                            .find(|r| r.sas == sas && r.workers == 1 && r.size == "64" && r.stage == "encap+decap")
                            .map(|r| r.ns_per_packet)
                    };
                    let growth = match (cost(1), cost(n)) {
                        (Some(one), Some(many)) if one > 0.0 => format!(
                            "; one worker's 64 B packet costs {many:.0} ns with {n} SAs against {one:.0} ns with 1 SA ({:.1}x)",
                            many / one
                        ),
                        _ => String::new(),
                    };
                    format!(
                        "a CPU-bound loop scaled {c:.2}x on 2 threads, so the cores were available: with {n} SAs the workers share no SA, but each packet touches another SA's state, and two workers compete for the shared last-level cache and memory{growth} ({load})"
                    )
                }
                None => format!("not measured against a CPU baseline ({load})"),
            }
        };
        goals.push(Goal {
            id: format!("pipeline-2w-scaling-{n}sa"),
            target: format!("pipeline (encap+decap, {n} SAs) with 2 workers >= 1.9x one worker"),
            measured: format!("worst {worst:.2}x: {}", parts.join("; ")),
            met,
            reason,
        });
    }
    goals
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .map(|l| format!("load average {l}"))
        })
        .unwrap_or_else(|| "load average unknown".into())
}

/// Every point of `args`, in one document (the library entry the smoke test calls).
pub fn measure(args: &PipelineArgs, quiet: bool) -> Result<BenchDoc, BenchError> {
    let sizes = args
        .sizes
        .iter()
        .map(|s| SizeSpec::parse(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BenchError::Setup {
            what: "--sizes".into(),
            detail: e.to_string(),
        })?;
    let budget = match args.packets {
        Some(n) => Budget::Packets(n),
        None => Budget::Seconds(args.seconds),
    };
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let mut doc = BenchDoc::new("pipeline");
    let points = (args.sas.len() * sizes.len() * args.workers.len() * Stage::ALL.len()) as u64;
    let bar = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new(points);
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    };
    for &sas in &args.sas {
        bar.set_message(format!("installing {sas} SAs"));
        let gw = Gateways::new(sas)?;
        for &size in &sizes {
            let frames = gw.frames(size)?;
            for &workers in &args.workers {
                for stage in Stage::ALL {
                    bar.set_message(format!(
                        "{} {} B, {sas} SAs, {workers} workers",
                        stage.name(),
                        size.label()
                    ));
                    let row = run_point(
                        &gw,
                        &frames,
                        &Point {
                            size,
                            stage,
                            workers,
                            budget,
                        },
                        &cores,
                    )?;
                    if row.dropped > 0 {
                        doc.notes.push(format!(
                            "{} {} B {sas} SAs {workers} workers: {} packets dropped",
                            row.stage, row.size, row.dropped
                        ));
                    }
                    doc.pipeline.push(row);
                    bar.inc(1);
                }
            }
        }
    }
    bar.finish_and_clear();
    if let Some(w) = args.workers.iter().find(|&&w| w > cores.len().max(1)) {
        doc.notes.push(format!(
            "{w} workers on {} cores: workers share cores",
            cores.len()
        ));
    }
    doc.notes.push(format!(
        "pipeline: sizes are inner IP packet lengths; IMIX {}; Gbit/s counts inner bytes; ns per packet is per core (workers × time / packets); decap runs with anti-replay off on gateway B so a cycled capture is accepted (the window is still locked and updated per packet); batch {BATCH}",
        super::imix::IMIX_NAME
    ));
    // Goals from timed runs only (a --packets run checks counts, not speed).
    if matches!(budget, Budget::Seconds(_))
        && args.workers.contains(&1)
        && args.workers.contains(&2)
    {
        let load = load_average();
        let cpu = (cores.len() >= 2).then(|| cpu_scaling_baseline(&cores));
        if let Some(c) = cpu {
            doc.notes.push(format!(
                "CPU baseline: a CPU-bound loop scaled {c:.2}x from 1 to 2 pinned threads ({load})"
            ));
        }
        doc.goals = scaling_goals(&doc.pipeline, cpu, &load);
    }
    Ok(doc)
}

pub fn run(args: &PipelineArgs, out_dir: &Path, quiet: bool) -> Result<(), BenchError> {
    let doc = measure(args, quiet)?;
    if !quiet {
        print_rows(&doc.pipeline);
        for g in &doc.goals {
            println!(
                "goal {}: {} — {}{}",
                g.id,
                if g.met { "met" } else { "MISSED" },
                g.measured,
                if g.reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", g.reason)
                }
            );
        }
    }
    output::write_doc(&doc, out_dir)?;
    Ok(())
}

fn print_rows(rows: &[PipelineRow]) {
    println!(
        "{:<12} {:>5} {:>6} {:>3} {:>8} {:>8} {:>9} {:>8} {:>7}",
        "stage", "size", "SAs", "w", "Mpps", "Gbit/s", "Mpps/core", "ns/pkt", "drops"
    );
    for r in rows {
        println!(
            "{:<12} {:>5} {:>6} {:>3} {:>8.3} {:>8.2} {:>9.3} {:>8.1} {:>7}",
            r.stage,
            r.size,
            r.sas,
            r.workers,
            r.mpps,
            r.gbps,
            r.mpps_per_core,
            r.ns_per_packet,
            r.dropped
        );
    }
}

/// One worker of a gateway: its SA database and next hops, fresh counters.
fn gateway_worker(port: BenchPort, db: &Arc<SaDb>, hops: &Arc<HopCache>) -> Worker<BenchPort> {
    Worker::new(
        port,
        Arc::clone(db),
        Arc::clone(hops),
        Arc::new(WorkerStats::default()),
        GatewayAddrs::default(),
        BATCH,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_valid_ip() {
        let f = inner_frame(64, flow_dst(300));
        assert_eq!(f.len(), 78);
        let ip = dataplane::wire::Ipv4Packet::new_checked(&f[14..]).unwrap();
        assert_eq!(ip.dst(), Ipv4Addr::new(10, 2, 1, 45));
        assert_eq!(dataplane::wire::checksum::checksum(&f[14..34]), 0);
        assert_eq!(lcm(12, 256), 768);
        assert_eq!(lcm(1, 10_000), 10_000);
    }

    #[test]
    fn scaling_goal_says_met_or_why_not() {
        let row = |w: usize, mpps: f64| PipelineRow {
            size: "64".into(),
            stage: "encap+decap".into(),
            sas: 1,
            workers: w,
            mpps,
            ..PipelineRow::default()
        };
        let g = scaling_goals(&[row(1, 1.0), row(2, 1.95)], Some(1.98), "load 0.1");
        assert_eq!(g.len(), 1);
        assert!(g[0].met, "{g:?}");
        let g = scaling_goals(&[row(1, 1.0), row(2, 1.2)], Some(1.25), "load 3.0");
        assert!(!g[0].met);
        assert!(g[0].reason.contains("1.25x"), "{}", g[0].reason);
        assert!(g[0].measured.contains("1.20x"), "{}", g[0].measured);
        assert!(scaling_goals(&[row(1, 1.0)], None, "").is_empty());
        // With one SA per flow the reason is the working set, with the per-packet cost.
        let at = |sas: u64, w: usize, mpps: f64, ns: f64| PipelineRow {
            sas,
            ns_per_packet: ns,
            ..row(w, mpps)
        };
        let rows = [
            at(1, 1, 2.0, 500.0),
            at(10_000, 1, 0.5, 2000.0),
            at(10_000, 2, 0.8, 2500.0),
        ];
        let g = scaling_goals(&rows, Some(1.98), "load 0.1");
        let many = g
            .iter()
            .find(|g| g.id == "pipeline-2w-scaling-10000sa")
            .unwrap();
        assert!(!many.met);
        assert!(!many.reason.contains("1 SA's sequence"), "{}", many.reason);
        assert!(
            many.reason
                .contains("2000 ns with 10000 SAs against 500 ns with 1 SA (4.0x)"),
            "{}",
            many.reason
        );
    }
}
