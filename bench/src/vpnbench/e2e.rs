//! `vpnbench e2e`: one topology, one run, interleaved rounds; ours against plain forwarding,
//! strongSwan kernel-libipsec, boringtun and wireguard-go.
//!
//! The namespaces, tunnels and measurements are `scripts/vpnbench_e2e.py` (vpnlab's Lab:
//! two clients, two gateways); it writes per configuration and round the throughputs and
//! the raw RTT samples. This module runs it, turns the samples into percentiles, takes the
//! medians over rounds, computes the ratios and the goals of issue 15, prints a table and
//! writes `e2e.json`. Everything after the driver is pure ([`summarize`]) and unit-tested.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use super::cli::E2eArgs;
use super::output;
use super::schema::{BenchDoc, E2eRow, Goal, Percentiles};
use super::BenchError;

/// Every configuration, in the order tables list them.
pub const CONFIGS: [&str; 7] = [
    "plain",
    "plain-offloads",
    "ours-1w",
    "ours-2w",
    "strongswan-libipsec",
    "boringtun",
    "wireguard-go",
];

/// Ours: the configurations running our dataplane.
const OURS: [&str; 2] = ["ours-2w", "ours-1w"];

/// The peers and the factor ours must reach over each (TCP, 4 streams).
const PEER_GOALS: [(&str, f64); 3] = [
    ("strongswan-libipsec", 10.0),
    ("boringtun", 3.0),
    ("wireguard-go", 3.0),
];

/// Ours against plain forwarding with the same offloads.
const PLAIN_GOAL: f64 = 0.5;
/// RTT p99 under one saturating TCP stream, µs.
const RTT_GOAL_US: f64 = 1000.0;

/// One configuration in one round as the driver writes it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct DriverRow {
    pub config: String,
    pub round: u32,
    pub offloads: String,
    pub tcp_1_stream_gbps: f64,
    pub tcp_1_retransmits: u64,
    pub tcp_4_streams_gbps: f64,
    pub tcp_retransmits: u64,
    pub small_rx_pps: f64,
    pub small_loss_ratio: f64,
    pub small_method: String,
    pub rtt_idle_us: Vec<f64>,
    pub rtt_idle_lost: u64,
    pub rtt_loaded_us: Vec<f64>,
    pub rtt_loaded_lost: u64,
    pub rtt_loaded_gbps: f64,
    pub rtt_loaded_cpu_wait: f64,
}

/// The driver's whole output.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct DriverDoc {
    pub rows: Vec<DriverRow>,
    pub notes: Vec<String>,
    /// Configuration -> why it was skipped (its tool is missing).
    pub skipped: BTreeMap<String, String>,
    pub small_method: String,
    pub rounds: u32,
    pub seconds: f64,
}

/// Percentiles by nearest rank of `samples` (µs), and a CDF of up to ~40 points.
pub fn percentiles(samples: &[f64]) -> Percentiles {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return Percentiles::default();
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let at = |q: f64| -> f64 {
        // Nearest rank: the smallest sample with at least q of the samples at or below it.
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        v[rank - 1]
    };
    let mut cdf = Vec::new();
    for q in (1..=20)
        .map(|i| f64::from(i) * 0.05)
        .chain([0.99, 0.999, 1.0])
    {
        let x = at(q);
        let frac = v.partition_point(|s| *s <= x) as f64 / n as f64;
        if cdf.last().is_none_or(|(lx, _): &(f64, f64)| *lx < x) {
            cdf.push((x, frac));
        }
    }
    Percentiles {
        samples: n as u64,
        p50_us: at(0.50),
        p90_us: at(0.90),
        p99_us: at(0.99),
        p999_us: at(0.999),
        max_us: v[n - 1],
        cdf,
    }
}

/// The median (the mean of the two middle values for an even count); 0 for none.
pub fn median(xs: &[f64]) -> f64 {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn median_u64(xs: impl Iterator<Item = u64>) -> u64 {
    let v: Vec<f64> = xs.map(|x| x as f64).collect();
    median(&v).round() as u64
}

/// A driver row as the document's row (samples become percentiles).
pub fn to_row(d: &DriverRow) -> E2eRow {
    E2eRow {
        config: d.config.clone(),
        round: d.round,
        tcp_1_stream_gbps: d.tcp_1_stream_gbps,
        tcp_4_streams_gbps: d.tcp_4_streams_gbps,
        tcp_retransmits: d.tcp_retransmits,
        small_rx_pps: d.small_rx_pps,
        small_loss_ratio: d.small_loss_ratio,
        rtt_idle: percentiles(&d.rtt_idle_us),
        rtt_loaded: percentiles(&d.rtt_loaded_us),
        offloads: d.offloads.clone(),
        tcp_1_retransmits: d.tcp_1_retransmits,
        small_method: d.small_method.clone(),
        rtt_idle_lost: d.rtt_idle_lost,
        rtt_loaded_lost: d.rtt_loaded_lost,
        rtt_loaded_gbps: d.rtt_loaded_gbps,
        rtt_loaded_cpu_wait: d.rtt_loaded_cpu_wait,
        rounds: 1,
    }
}

/// Each percentile's median over rounds; the CDF of the round whose p99 is the (lower) median.
fn median_percentiles(ps: &[&Percentiles]) -> Percentiles {
    let f = |g: fn(&Percentiles) -> f64| median(&ps.iter().map(|p| g(p)).collect::<Vec<_>>());
    let p99 = f(|p| p.p99_us);
    let cdf = ps
        .iter()
        .min_by(|a, b| (a.p99_us - p99).abs().total_cmp(&(b.p99_us - p99).abs()))
        .map(|p| p.cdf.clone())
        .unwrap_or_default();
    Percentiles {
        samples: median_u64(ps.iter().map(|p| p.samples)),
        p50_us: f(|p| p.p50_us),
        p90_us: f(|p| p.p90_us),
        p99_us: p99,
        p999_us: f(|p| p.p999_us),
        max_us: f(|p| p.max_us),
        cdf,
    }
}

/// Per configuration (in [`CONFIGS`] order, then any other), each field's median over its
/// rounds.
pub fn medians(rows: &[E2eRow]) -> Vec<E2eRow> {
    let mut names: Vec<&str> = CONFIGS.to_vec();
    for r in rows {
        if !names.contains(&r.config.as_str()) {
            names.push(&r.config);
        }
    }
    names
        .into_iter()
        .filter_map(|name| {
            let rs: Vec<&E2eRow> = rows.iter().filter(|r| r.config == name).collect();
            let first = rs.first()?;
            let f = |g: fn(&E2eRow) -> f64| median(&rs.iter().map(|r| g(r)).collect::<Vec<_>>());
            let u = |g: fn(&E2eRow) -> u64| median_u64(rs.iter().map(|r| g(r)));
            Some(E2eRow {
                config: name.to_string(),
                round: 0,
                tcp_1_stream_gbps: f(|r| r.tcp_1_stream_gbps),
                tcp_4_streams_gbps: f(|r| r.tcp_4_streams_gbps),
                tcp_retransmits: u(|r| r.tcp_retransmits),
                small_rx_pps: f(|r| r.small_rx_pps),
                small_loss_ratio: f(|r| r.small_loss_ratio),
                rtt_idle: median_percentiles(&rs.iter().map(|r| &r.rtt_idle).collect::<Vec<_>>()),
                rtt_loaded: median_percentiles(
                    &rs.iter().map(|r| &r.rtt_loaded).collect::<Vec<_>>(),
                ),
                offloads: first.offloads.clone(),
                tcp_1_retransmits: u(|r| r.tcp_1_retransmits),
                small_method: first.small_method.clone(),
                rtt_idle_lost: u(|r| r.rtt_idle_lost),
                rtt_loaded_lost: u(|r| r.rtt_loaded_lost),
                rtt_loaded_gbps: f(|r| r.rtt_loaded_gbps),
                rtt_loaded_cpu_wait: f(|r| r.rtt_loaded_cpu_wait),
                rounds: rs.len() as u32,
            })
        })
        .collect()
}

fn find<'a>(m: &'a [E2eRow], config: &str) -> Option<&'a E2eRow> {
    m.iter().find(|r| r.config == config)
}

/// `a / b`, 0 when `b` is 0 (nothing measured).
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

/// Ours for the throughput goals: the better (TCP 4 streams) of ours-2w and ours-1w.
pub fn best_ours(m: &[E2eRow]) -> Option<&E2eRow> {
    OURS.iter()
        .filter_map(|c| find(m, c))
        .max_by(|a, b| a.tcp_4_streams_gbps.total_cmp(&b.tcp_4_streams_gbps))
}

fn kpps(r: &E2eRow) -> f64 {
    r.small_rx_pps / 1e3
}

/// The goals of issue 15 this run measured, from the median rows.
pub fn goals(m: &[E2eRow]) -> Vec<Goal> {
    let mut out = Vec::new();
    let plain = find(m, "plain");
    if let Some(ours) = best_ours(m) {
        for (peer_name, target) in PEER_GOALS {
            let Some(peer) = find(m, peer_name) else {
                continue;
            };
            let r4 = ratio(ours.tcp_4_streams_gbps, peer.tcp_4_streams_gbps);
            let r1 = ratio(ours.tcp_1_stream_gbps, peer.tcp_1_stream_gbps);
            let measured = format!(
                "TCP 4 streams: {} {:.3} Gbit/s / {} {:.3} = {:.2}x; 1 stream: {:.3} / {:.3} = {:.2}x",
                ours.config,
                ours.tcp_4_streams_gbps,
                peer.config,
                peer.tcp_4_streams_gbps,
                r4,
                ours.tcp_1_stream_gbps,
                peer.tcp_1_stream_gbps,
                r1
            );
            let met = r4 >= target;
            let reason = if met {
                String::new()
            } else {
                peer_reason(ours, peer, plain, target)
            };
            out.push(Goal {
                id: format!("e2e-vs-{peer_name}"),
                target: format!(
                    "ours >= {target}x {peer_name} (TCP, 4 streams; 1 stream the second figure)"
                ),
                measured,
                met,
                reason,
            });
        }
        if let Some(plain) = plain {
            let r4 = ratio(ours.tcp_4_streams_gbps, plain.tcp_4_streams_gbps);
            let r1 = ratio(ours.tcp_1_stream_gbps, plain.tcp_1_stream_gbps);
            let met = r4 >= PLAIN_GOAL;
            let reason = if met {
                String::new()
            } else {
                format!(
                    "ours' own cost limits: small packets ({}) ours {:.1} kpps vs plain {:.1} kpps ({:.2}x); \
                     ours {} retransmits (4 streams) vs plain {}",
                    ours.small_method,
                    kpps(ours),
                    kpps(plain),
                    ratio(ours.small_rx_pps, plain.small_rx_pps),
                    ours.tcp_retransmits,
                    plain.tcp_retransmits
                )
            };
            out.push(Goal {
                id: "e2e-vs-plain".into(),
                target: format!(
                    "ours >= {PLAIN_GOAL}x plain forwarding with the same offloads (TCP, 4 streams)"
                ),
                measured: format!(
                    "TCP 4 streams: {} {:.3} Gbit/s / plain {:.3} = {:.2}x; 1 stream: {:.3} / {:.3} = {:.2}x",
                    ours.config,
                    ours.tcp_4_streams_gbps,
                    plain.tcp_4_streams_gbps,
                    r4,
                    ours.tcp_1_stream_gbps,
                    plain.tcp_1_stream_gbps,
                    r1
                ),
                met,
                reason,
            });
        }
    }
    for name in OURS.iter().rev() {
        let Some(ours) = find(m, name) else {
            continue;
        };
        let l = &ours.rtt_loaded;
        let i = &ours.rtt_idle;
        if l.samples == 0 {
            continue;
        }
        let met = l.p99_us <= RTT_GOAL_US;
        let plain_txt = plain
            .map(|p| {
                format!(
                    "; plain forwarding under load p50/p99 {:.0}/{:.0} µs",
                    p.rtt_loaded.p50_us, p.rtt_loaded.p99_us
                )
            })
            .unwrap_or_default();
        let reason = if met {
            String::new()
        } else {
            let plain_rise = plain
                .map(|p| {
                    format!(
                        ", plain forwarding's by {:.0} µs",
                        p.rtt_loaded.p99_us - p.rtt_idle.p99_us
                    )
                })
                .unwrap_or_default();
            let cpu_wait = if ours.rtt_loaded_cpu_wait > 0.0 {
                let plain_wait = plain
                    .map(|p| {
                        format!(
                            " (plain forwarding: {:.0} %)",
                            p.rtt_loaded_cpu_wait * 100.0
                        )
                    })
                    .unwrap_or_default();
                format!(
                    "; some runnable task waited for a CPU {:.0} % of the time{plain_wait}: \
                     two busy-polling gateways, the TCP endpoints and the kernel share too few \
                     CPUs, so a worker's packets wait while it waits on the run queue (plain \
                     forwarding runs in softirq, ahead of every task); smaller rings and the \
                     AQM did not lower it (scripts/bench-latency.py)",
                    ours.rtt_loaded_cpu_wait * 100.0
                )
            } else {
                String::new()
            };
            format!(
                "packets queue in the tunnel: under load p99 rises by {:.0} µs over idle{plain_rise}; \
                 {} of the probes lost under load{cpu_wait}",
                l.p99_us - i.p99_us,
                ours.rtt_loaded_lost
            )
        };
        out.push(Goal {
            id: format!("e2e-rtt-loaded-{name}"),
            target: format!("RTT p99 <= {RTT_GOAL_US:.0} µs under one saturating TCP stream ({name})"),
            measured: format!(
                "idle p50/p99 {:.0}/{:.0} µs; under one TCP stream ({:.3} Gbit/s) p50/p99 {:.0}/{:.0} µs{plain_txt}",
                i.p50_us, i.p99_us, ours.rtt_loaded_gbps, l.p50_us, l.p99_us
            ),
            met,
            reason,
        });
    }
    out
}

/// Why ours is not `target` times `peer`, from what the run measured.
fn peer_reason(ours: &E2eRow, peer: &E2eRow, plain: Option<&E2eRow>, target: f64) -> String {
    let mut s = String::new();
    if let Some(plain) = plain {
        let cap = ratio(plain.tcp_4_streams_gbps, peer.tcp_4_streams_gbps);
        let _ = write!(
            s,
            "plain forwarding with the same offloads carries {:.3} Gbit/s, {cap:.2}x {}",
            plain.tcp_4_streams_gbps, peer.config
        );
        if cap < target {
            let _ = write!(s, " (below {target}x: the topology itself caps the ratio)");
        }
        let _ = write!(
            s,
            "; ours is at {:.2}x plain",
            ratio(ours.tcp_4_streams_gbps, plain.tcp_4_streams_gbps)
        );
    }
    let _ = write!(
        s,
        "{}small packets ({}) ours {:.1} kpps vs {} {:.1} kpps; retransmits (4 streams) ours {} vs {}",
        if s.is_empty() { "" } else { "; " },
        ours.small_method,
        kpps(ours),
        peer.config,
        kpps(peer),
        ours.tcp_retransmits,
        peer.tcp_retransmits
    );
    s
}

/// The table of medians and ratios (ours = [`best_ours`] against each row).
pub fn table(m: &[E2eRow]) -> String {
    let ours = best_ours(m);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<20} {:>6} {:>8} {:>8} {:>7} {:>9} {:>15} {:>17} {:>9} {:>9}",
        "configuration",
        "rounds",
        "TCP1 Gb",
        "TCP4 Gb",
        "retr4",
        "64B kpps",
        "RTT idle p50/99",
        "RTT loaded p50/99",
        "ours/TCP4",
        "ours/TCP1"
    );
    for r in m {
        let (r4, r1) = ours
            .map(|o| {
                (
                    ratio(o.tcp_4_streams_gbps, r.tcp_4_streams_gbps),
                    ratio(o.tcp_1_stream_gbps, r.tcp_1_stream_gbps),
                )
            })
            .unwrap_or((0.0, 0.0));
        let _ = writeln!(
            s,
            "{:<20} {:>6} {:>8.3} {:>8.3} {:>7} {:>9.1} {:>15} {:>17} {:>9.2} {:>9.2}",
            r.config,
            r.rounds,
            r.tcp_1_stream_gbps,
            r.tcp_4_streams_gbps,
            r.tcp_retransmits,
            kpps(r),
            format!("{:.0}/{:.0} µs", r.rtt_idle.p50_us, r.rtt_idle.p99_us),
            format!("{:.0}/{:.0} µs", r.rtt_loaded.p50_us, r.rtt_loaded.p99_us),
            r4,
            r1
        );
    }
    if let Some(o) = ours {
        let _ = writeln!(
            s,
            "(ours = {}, the better of ours-1w/ours-2w by TCP 4 streams)",
            o.config
        );
    }
    s
}

/// Everything after the driver: rows, medians, goals and notes into `doc`.
pub fn summarize(doc: &mut BenchDoc, driver: &DriverDoc) {
    doc.e2e = driver.rows.iter().map(to_row).collect();
    doc.e2e_median = medians(&doc.e2e);
    doc.goals = goals(&doc.e2e_median);
    doc.notes.push(format!(
        "e2e: {} round(s) of {} s per measurement, configurations interleaved (order rotated per round, \
         every other round reversed); medians over rounds, each field on its own",
        driver.rounds, driver.seconds
    ));
    if driver.small_method == "iperf3-udp64"
        || doc.e2e.iter().any(|r| r.small_method == "iperf3-udp64")
    {
        doc.notes.push(
            "e2e small packets: iperf3 UDP with 64-byte payloads at unlimited rate, 2 streams (a stand-in \
             for the AF_XDP generator; iperf3 tops out near 100 kpps, so it measures the sender as much as the tunnel)"
                .into(),
        );
    }
    if driver.small_method == "xsk" {
        doc.notes.push(
            "e2e small packets: our AF_XDP generator in client-a as fast as it goes (64-byte frames) \
             into the AF_XDP sink in client-b, through each tunnel; the generator and sink share \
             the two CPUs with both gateways"
                .into(),
        );
    }
    doc.notes.push(
        "e2e RTT: ping every 2 ms client-a -> client-b, idle and during one iperf3 TCP stream; \
         percentiles by nearest rank"
            .into(),
    );
    for (config, why) in &driver.skipped {
        if !driver
            .notes
            .iter()
            .any(|n| n.starts_with(&format!("{config} skipped")))
        {
            doc.notes.push(format!("{config} skipped: {why}"));
        }
    }
    doc.notes.extend(driver.notes.iter().cloned());
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn python() -> PathBuf {
    let venv = repo_root().join(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

pub fn run(args: &E2eArgs, out_dir: &Path, quiet: bool) -> Result<(), BenchError> {
    if let Some(recorded) = &args.driver_json {
        let text = std::fs::read_to_string(recorded)?;
        return finish(&text, out_dir, None);
    }
    for c in &args.only {
        if !CONFIGS.contains(&c.as_str()) {
            return Err(BenchError::Setup {
                what: format!("--only {c}"),
                detail: format!("unknown configuration; known: {}", CONFIGS.join(",")),
            });
        }
    }
    let wants_ours = args.only.is_empty() || args.only.iter().any(|c| c.starts_with("ours"));
    if wants_ours && !args.dataplane.exists() {
        return Err(BenchError::Setup {
            what: format!("dataplane {}", args.dataplane.display()),
            detail: "not found: cargo build --release -p dataplane --bins (or --dataplane PATH)"
                .into(),
        });
    }
    let root = repo_root();
    let peers = root.join("target/peers");
    if args.install {
        let script = root.join("scripts/install-bench-peers.sh");
        let st = Command::new("bash")
            .arg(&script)
            .env("VPNBENCH_PEERS_DIR", &peers)
            .status()?;
        if !st.success() {
            return Err(BenchError::Setup {
                what: script.display().to_string(),
                detail: format!("exited with {st}"),
            });
        }
    }
    let raw = std::env::temp_dir().join(format!("vpnbench-e2e-{}.json", std::process::id()));
    let dataplane =
        std::fs::canonicalize(&args.dataplane).unwrap_or_else(|_| args.dataplane.clone());
    let mut cmd = Command::new(python());
    cmd.arg(root.join("scripts/vpnbench_e2e.py"))
        .arg("--dataplane")
        .arg(&dataplane)
        .arg("--out")
        .arg(&raw)
        .arg("--rounds")
        .arg(args.rounds.to_string())
        .arg("--seconds")
        .arg(args.seconds.to_string())
        .arg("--boringtun")
        .arg(peers.join("bin/boringtun-cli"))
        // Small packets from our AF_XDP generator (`vpnbench xsk gen|sink`, this binary).
        .arg("--vpnbench")
        .arg(std::env::current_exe()?);
    if !args.only.is_empty() {
        cmd.arg("--only").arg(args.only.join(","));
    }
    if quiet {
        cmd.stderr(std::process::Stdio::null());
    }
    let status = cmd.status()?;
    let text = std::fs::read_to_string(&raw);
    let _ = std::fs::remove_file(&raw);
    let text = match text {
        Ok(t) => t,
        Err(e) => {
            return Err(BenchError::Setup {
                what: "scripts/vpnbench_e2e.py".into(),
                detail: format!("exited with {status} and wrote no rows: {e}"),
            })
        }
    };
    finish(&text, out_dir, Some(status))
}

/// Summarize the driver's JSON `text`, print, write `e2e.json`; an error if the driver
/// (`status`) failed, after writing what it measured.
fn finish(
    text: &str,
    out_dir: &Path,
    status: Option<std::process::ExitStatus>,
) -> Result<(), BenchError> {
    let mut doc = BenchDoc::new("e2e");
    let driver: DriverDoc =
        serde_json::from_str(text).map_err(|e| BenchError::Other(format!("driver JSON: {e}")))?;
    summarize(&mut doc, &driver);
    print!("{}", table(&doc.e2e_median));
    for g in &doc.goals {
        println!(
            "goal {}: {} — {}: {}{}",
            g.id,
            g.target,
            if g.met { "MET" } else { "MISSED" },
            g.measured,
            if g.reason.is_empty() {
                String::new()
            } else {
                format!(" (why: {})", g.reason)
            }
        );
    }
    for n in &doc.notes {
        println!("note: {n}");
    }
    output::write_doc(&doc, out_dir)?;
    if let Some(status) = status.filter(|s| !s.success()) {
        return Err(BenchError::Other(format!(
            "scripts/vpnbench_e2e.py exited with {status} (rows measured so far are written)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(config: &str, round: u32, tcp1: f64, tcp4: f64, loaded: &[f64]) -> DriverRow {
        DriverRow {
            config: config.into(),
            round,
            offloads: "off".into(),
            tcp_1_stream_gbps: tcp1,
            tcp_4_streams_gbps: tcp4,
            tcp_retransmits: 10 * u64::from(round),
            small_rx_pps: 50_000.0,
            small_method: "iperf3-udp64".into(),
            rtt_idle_us: vec![100.0; 10],
            rtt_loaded_us: loaded.to_vec(),
            rtt_loaded_cpu_wait: if config == "plain" { 0.4 } else { 0.57 },
            ..DriverRow::default()
        }
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let s: Vec<f64> = (1..=1000).map(f64::from).collect();
        let p = percentiles(&s);
        assert_eq!(p.samples, 1000);
        assert_eq!(p.p50_us, 500.0);
        assert_eq!(p.p90_us, 900.0);
        assert_eq!(p.p99_us, 990.0);
        assert_eq!(p.p999_us, 999.0);
        assert_eq!(p.max_us, 1000.0);
        assert_eq!(p.cdf.last(), Some(&(1000.0, 1.0)));
        assert!(p
            .cdf
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(percentiles(&[]), Percentiles::default());
        assert_eq!(percentiles(&[7.0]).p99_us, 7.0);
    }

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn medians_ratios_and_goals_from_recorded_rows() {
        let fast: Vec<f64> = (0..100).map(|i| 100.0 + f64::from(i)).collect(); // p99 199
        let slow: Vec<f64> = (0..100).map(|i| 1000.0 + 50.0 * f64::from(i)).collect(); // p99 5900
        let driver = DriverDoc {
            rows: vec![
                row("plain", 1, 3.0, 2.5, &fast),
                row("plain", 2, 2.0, 2.4, &fast),
                row("plain", 3, 2.2, 2.6, &fast),
                row("ours-2w", 1, 1.0, 1.3, &slow),
                row("ours-2w", 2, 0.9, 1.2, &slow),
                row("ours-2w", 3, 1.1, 1.4, &fast),
                row("ours-1w", 1, 0.8, 0.9, &fast),
                row("strongswan-libipsec", 1, 0.2, 0.26, &slow),
                row("boringtun", 1, 0.3, 0.3, &slow),
            ],
            notes: vec!["wireguard-go skipped: not installed".into()],
            skipped: [("wireguard-go".to_string(), "not installed".to_string())].into(),
            small_method: "iperf3-udp64".into(),
            rounds: 3,
            seconds: 1.0,
        };
        let mut doc = BenchDoc::new("e2e");
        summarize(&mut doc, &driver);
        assert_eq!(doc.e2e.len(), 9);
        let names: Vec<&str> = doc.e2e_median.iter().map(|r| r.config.as_str()).collect();
        assert_eq!(
            names,
            [
                "plain",
                "ours-1w",
                "ours-2w",
                "strongswan-libipsec",
                "boringtun"
            ]
        );
        let ours = &doc.e2e_median[2];
        assert_eq!(ours.rounds, 3);
        assert!((ours.tcp_4_streams_gbps - 1.3).abs() < 1e-9);
        assert!((ours.tcp_1_stream_gbps - 1.0).abs() < 1e-9);
        assert_eq!(ours.tcp_retransmits, 20);
        // Two of three rounds slow: the median p99 is the slow one.
        assert_eq!(ours.rtt_loaded.p99_us, 5900.0);
        assert_eq!(
            best_ours(&doc.e2e_median).map(|r| r.config.as_str()),
            Some("ours-2w")
        );

        let g = |id: &str| {
            doc.goals
                .iter()
                .find(|g| g.id == id)
                .unwrap_or_else(|| panic!("{id}"))
        };
        let swan = g("e2e-vs-strongswan-libipsec");
        assert!(!swan.met, "{swan:?}"); // 1.3 / 0.26 = 5x < 10x
        assert!(swan.measured.contains("= 5.00x"), "{}", swan.measured);
        assert!(swan.reason.contains("9.62x"), "{}", swan.reason); // plain 2.5 / 0.26
        let bt = g("e2e-vs-boringtun");
        assert!(bt.met, "{bt:?}"); // 1.3 / 0.3 = 4.33x
        assert!(bt.reason.is_empty());
        assert!(doc.goals.iter().all(|g| g.id != "e2e-vs-wireguard-go"));
        let plain = g("e2e-vs-plain");
        assert!(plain.met, "{plain:?}"); // 1.3 / 2.5 = 0.52
        assert!(!g("e2e-rtt-loaded-ours-2w").met);
        assert!(g("e2e-rtt-loaded-ours-2w").reason.contains("queue"));
        // The measured reason: how long runnable tasks waited for a CPU, ours and plain.
        let why = &g("e2e-rtt-loaded-ours-2w").reason;
        assert!(
            why.contains("waited for a CPU 57 % of the time (plain forwarding: 40 %)"),
            "{why}"
        );
        assert!(g("e2e-rtt-loaded-ours-1w").met);
        assert!(doc.notes.iter().any(|n| n.contains("wireguard-go skipped")));
        assert_eq!(
            doc.notes
                .iter()
                .filter(|n| n.contains("wireguard-go skipped"))
                .count(),
            1
        );

        let t = table(&doc.e2e_median);
        assert!(t.contains("strongswan-libipsec"), "{t}");
        assert!(t.contains("5.00"), "{t}");
    }
}
