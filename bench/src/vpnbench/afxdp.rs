//! `vpnbench afxdp`: our AF_XDP generator and sink (`vpnbench xsk`, [`afxdp_xsk`]) in the
//! client namespaces of the two-gateway topology, through plain kernel forwarding (the
//! reference) and through our dataplane, in one run.
//!
//! The namespaces are driven by `scripts/vpnbench_afxdp.py` (it reuses `scripts/vpnlab.py`,
//! the topology every e2e test uses), which answers one JSON line per request; what to
//! measure is decided here ([`Bench`], tested against a simulated tunnel):
//! 1. the generator as fast as it can go (received rate R, sent rate S);
//! 2. offered loads around R (0.8, 1.0, 1.2 × R, at most S): the maximum received rate is
//!    the highest of all;
//! 3. 10 %, 50 % and 90 % of that maximum, with one-way latency percentiles;
//! 4. for plain forwarding also the offered rate of ours' 50 % point, so the added latency
//!    (goal: p99 ≤ 50 µs at 50 % load) compares the two at the same offered load.
//!
//! `--smoke` (CI): a fixed count at a low rate through our tunnel; every packet must arrive
//! exactly once and the histogram must hold every one, or the run fails.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde::{Deserialize, Serialize};

use super::afxdp_xsk::{GenReport, SinkReport};
use super::cli::AfxdpArgs;
use super::hist::LatencyHist;
use super::output;
use super::schema::{AfxdpPoint, BenchDoc, Goal};
use super::BenchError;

pub use super::afxdp_xsk::xsk_main;

/// Load fractions of the maximum measured with latency.
pub const FRACTIONS: [f64; 3] = [0.1, 0.5, 0.9];
/// Offered loads probed around the unlimited run's received rate.
pub const PROBES: [f64; 3] = [0.8, 1.0, 1.2];
/// The latency goal: ours' p99 minus plain forwarding's at 50 % load, µs.
pub const ADDED_P99_GOAL_US: f64 = 50.0;
/// The smoke run: packets per size, offered rate.
pub const SMOKE_COUNT: u64 = 2_000;
pub const SMOKE_RATE: f64 = 5_000.0;

/// One generator + sink measurement.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Measured {
    pub gen: GenReport,
    pub sink: SinkReport,
}

impl Measured {
    /// The schema's row for this measurement.
    pub fn point(&self, config: &str, size: usize, load_fraction: Option<f64>) -> AfxdpPoint {
        let span = self.sink.last_ns.saturating_sub(self.sink.first_ns) as f64 / 1e9;
        let secs = self.gen.seconds.max(span);
        let sent = self.gen.sent;
        AfxdpPoint {
            config: config.into(),
            size,
            offered_pps: if self.gen.offered_pps > 0.0 {
                self.gen.offered_pps
            } else {
                self.gen.sent_pps
            },
            sent,
            received: self.sink.received,
            received_pps: if secs > 0.0 {
                self.sink.received as f64 / secs
            } else {
                0.0
            },
            loss_ratio: if sent > 0 {
                sent.saturating_sub(self.sink.received) as f64 / sent as f64
            } else {
                0.0
            },
            load_fraction,
            latency: LatencyHist::from_raw(&self.sink.hist).to_percentiles(),
        }
    }

    /// The smoke run's check: every packet sent arrived exactly once, and each one is in
    /// the histogram.
    pub fn exact(&self, expected: u64) -> Result<(), String> {
        let s = &self.sink;
        let samples = LatencyHist::from_raw(&s.hist).samples();
        let ok = self.gen.sent == expected
            && s.received == expected
            && s.duplicates == 0
            && s.negative_latency == 0
            && samples == expected;
        if ok {
            Ok(())
        } else {
            Err(format!(
                "expected {expected}: sent {}, received {}, duplicates {}, histogram samples {}, \
                 timestamps in the future {}, foreign {}",
                self.gen.sent, s.received, s.duplicates, samples, s.negative_latency, s.foreign
            ))
        }
    }
}

/// What runs the measurements: the namespace driver, or a simulation in tests.
pub trait Runner {
    /// A fresh topology: "plain" (kernel forwarding) or "ours" with `workers` workers.
    fn setup(&mut self, config: &str, workers: usize) -> Result<(), BenchError>;
    /// One generator + sink run. `rate` 0: as fast as the generator can.
    fn point(
        &mut self,
        size: usize,
        rate: f64,
        seconds: f64,
        count: Option<u64>,
    ) -> Result<Measured, BenchError>;
}

/// The measuring plan over a [`Runner`].
pub struct Bench<'r, R: Runner> {
    pub runner: &'r mut R,
    pub seconds: f64,
    pub rows: Vec<AfxdpPoint>,
    pub log: bool,
}

impl<R: Runner> Bench<'_, R> {
    fn run_point(
        &mut self,
        config: &str,
        size: usize,
        rate: f64,
        fraction: Option<f64>,
    ) -> Result<AfxdpPoint, BenchError> {
        let m = self.runner.point(size, rate, self.seconds, None)?;
        let p = m.point(config, size, fraction);
        if self.log {
            eprintln!(
                "  {config:<8} {size:>5} B offered {:>9.0} pps  received {:>9.0} pps  loss {:>6.2} %  p50 {:>8.1} µs  p99 {:>8.1} µs",
                p.offered_pps,
                p.received_pps,
                p.loss_ratio * 100.0,
                p.latency.p50_us,
                p.latency.p99_us
            );
        }
        self.rows.push(p.clone());
        Ok(p)
    }

    /// Sweep one size on the current topology: returns the maximum received rate.
    pub fn sweep(&mut self, config: &str, size: usize) -> Result<f64, BenchError> {
        let first = self.run_point(config, size, 0.0, None)?;
        let (r0, s0) = (first.received_pps, first.offered_pps);
        let mut max = r0;
        for f in PROBES {
            let rate = (r0 * f).min(s0);
            if rate <= 0.0 {
                continue;
            }
            max = max.max(self.run_point(config, size, rate, None)?.received_pps);
        }
        Ok(max)
    }

    /// 10/50/90 % of `max`; returns the 50 % point.
    pub fn fractions(
        &mut self,
        config: &str,
        size: usize,
        max: f64,
    ) -> Result<Option<AfxdpPoint>, BenchError> {
        let mut half = None;
        for f in FRACTIONS {
            let p = self.run_point(config, size, (max * f).max(1.0), Some(f))?;
            if f == 0.5 {
                half = Some(p);
            }
        }
        Ok(half)
    }
}

/// The added-latency goal from ours' 50 % points and plain's points at the same offered rate.
pub fn latency_goal(pairs: &[(usize, AfxdpPoint, AfxdpPoint)]) -> Goal {
    let mut measured = Vec::new();
    let mut met = !pairs.is_empty();
    let mut worst = f64::MIN;
    for (size, ours, plain) in pairs {
        let added = ours.latency.p99_us - plain.latency.p99_us;
        worst = worst.max(added);
        met &= added <= ADDED_P99_GOAL_US;
        measured.push(format!(
            "{size} B at {:.0} pps: p99 ours {:.1} µs, plain {:.1} µs, added {:.1} µs (p50 added {:.1} µs)",
            ours.offered_pps,
            ours.latency.p99_us,
            plain.latency.p99_us,
            added,
            ours.latency.p50_us - plain.latency.p50_us
        ));
    }
    Goal {
        id: "afxdp-added-latency-p99".into(),
        target: format!(
            "added one-way latency p99 (ours minus plain forwarding) <= {ADDED_P99_GOAL_US} µs at 50 % of ours' maximum rate"
        ),
        measured: if measured.is_empty() {
            "not measured".into()
        } else {
            measured.join("; ")
        },
        met,
        reason: if met {
            String::new()
        } else if pairs.is_empty() {
            "no 50 % point was measured".into()
        } else {
            format!(
                "worst added p99 {worst:.1} µs: on this 2-vCPU machine the generator, the sink and both \
                 gateways share two cores, so a packet waits whenever the next hop's process is not \
                 running; the tail is scheduling, the median is the per-hop cost"
            )
        },
    }
}

/// The whole run over `runner` (configs, sizes, sweep, fractions, goal).
pub fn measure<R: Runner>(
    runner: &mut R,
    args: &AfxdpArgs,
    log: bool,
) -> Result<(Vec<AfxdpPoint>, Vec<Goal>), BenchError> {
    let ours = format!("ours-{}w", args.workers);
    let mut b = Bench {
        runner,
        seconds: args.seconds,
        rows: Vec::new(),
        log,
    };
    // Ours first: plain forwarding is then also measured at ours' 50 % offered rate.
    let mut ours_half = Vec::new();
    b.runner.setup("ours", args.workers)?;
    for &size in &args.sizes {
        let max = b.sweep(&ours, size)?;
        if let Some(h) = b.fractions(&ours, size, max)? {
            ours_half.push((size, h));
        }
    }
    let mut pairs = Vec::new();
    b.runner.setup("plain", 1)?;
    for &size in &args.sizes {
        let max = b.sweep("plain", size)?;
        b.fractions("plain", size, max)?;
        if let Some((_, oh)) = ours_half.iter().find(|(s, _)| *s == size) {
            let p = b.run_point("plain", size, oh.offered_pps, None)?;
            pairs.push((size, oh.clone(), p));
        }
    }
    let goals = vec![latency_goal(&pairs)];
    Ok((b.rows, goals))
}

/// The smoke run: `SMOKE_COUNT` packets per size at `SMOKE_RATE` through our tunnel.
pub fn smoke<R: Runner>(
    runner: &mut R,
    args: &AfxdpArgs,
) -> Result<(Vec<AfxdpPoint>, Vec<String>), BenchError> {
    let config = format!("ours-{}w", args.workers);
    runner.setup("ours", args.workers)?;
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for &size in &args.sizes {
        let secs = SMOKE_COUNT as f64 / SMOKE_RATE + 5.0;
        let m = runner.point(size, SMOKE_RATE, secs, Some(SMOKE_COUNT))?;
        if let Err(e) = m.exact(SMOKE_COUNT) {
            errors.push(format!("{size} B: {e}"));
        }
        rows.push(m.point(&config, size, None));
    }
    Ok((rows, errors))
}

/// `scripts/vpnbench_afxdp.py` as a child speaking JSON lines.
pub struct Driver {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

#[derive(Debug, Deserialize)]
struct Reply {
    ok: bool,
    #[serde(default)]
    error: String,
    #[serde(flatten)]
    rest: serde_json::Value,
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("VPN_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo_root().join(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

impl Driver {
    pub fn start(dataplane: &Path) -> Result<Driver, BenchError> {
        let dataplane = dataplane.canonicalize().map_err(|e| BenchError::Setup {
            what: format!("dataplane binary {}", dataplane.display()),
            detail: e.to_string(),
        })?;
        let me = std::env::current_exe()?;
        let script = repo_root().join("scripts/vpnbench_afxdp.py");
        let mut child = Command::new(python())
            .arg(&script)
            .arg("--dataplane")
            .arg(&dataplane)
            .arg("--vpnbench")
            .arg(&me)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| BenchError::Setup {
                what: format!("{}", script.display()),
                detail: e.to_string(),
            })?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        Ok(Driver {
            child,
            stdin,
            stdout,
        })
    }

    fn call(&mut self, req: serde_json::Value) -> Result<serde_json::Value, BenchError> {
        writeln!(self.stdin, "{req}")?;
        self.stdin.flush()?;
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            return Err(BenchError::Other(format!(
                "the namespace driver exited during {req}"
            )));
        }
        let r: Reply = serde_json::from_str(&line)
            .map_err(|e| BenchError::Other(format!("driver reply {line:?}: {e}")))?;
        if !r.ok {
            return Err(BenchError::Setup {
                what: format!("driver: {req}"),
                detail: r.error,
            });
        }
        Ok(r.rest)
    }

    pub fn quit(mut self) -> Result<(), BenchError> {
        let r = self.call(serde_json::json!({"cmd": "quit"}));
        let _status = self.child.wait()?;
        r.map(|_| ())
    }
}

impl Runner for Driver {
    fn setup(&mut self, config: &str, workers: usize) -> Result<(), BenchError> {
        self.call(serde_json::json!({"cmd": "setup", "config": config, "workers": workers}))
            .map(|_| ())
    }

    fn point(
        &mut self,
        size: usize,
        rate: f64,
        seconds: f64,
        count: Option<u64>,
    ) -> Result<Measured, BenchError> {
        let v = self.call(
            serde_json::json!({"cmd": "point", "size": size, "rate": rate,
            "seconds": seconds, "count": count}),
        )?;
        serde_json::from_value(v).map_err(|e| BenchError::Other(format!("driver point: {e}")))
    }
}

/// `vpnbench afxdp`.
pub fn run(args: &AfxdpArgs, out_dir: &Path, quiet: bool) -> Result<(), BenchError> {
    let mut doc = BenchDoc::new("afxdp");
    doc.notes.push(format!(
        "{} logical CPUs: the AF_XDP generator, the sink and both gateways' dataplanes share them \
         (gateways pinned apart, generator and sink wherever the scheduler puts them); rates and \
         latency tails measure this contention as much as the dataplane. Veth AF_XDP is copy mode.",
        doc.host.logical_cpus
    ));
    doc.notes.push(
        "one-way latency: CLOCK_MONOTONIC stamped by the generator just before the tx ring, \
         read by the sink after its rx ring (both via AF_XDP); offered rates paced in batches of \
         at most 50 µs of packets (32 at most)"
            .into(),
    );
    let mut driver = Driver::start(&args.dataplane)?;
    let result = if args.smoke {
        let sizes_ok = smoke(&mut driver, args);
        match sizes_ok {
            Ok((rows, errors)) => {
                doc.afxdp = rows;
                if errors.is_empty() {
                    Ok(())
                } else {
                    doc.notes.extend(errors.iter().cloned());
                    Err(BenchError::CountMismatch(errors.join("; ")))
                }
            }
            Err(e) => Err(e),
        }
    } else {
        match measure(&mut driver, args, !quiet) {
            Ok((rows, goals)) => {
                doc.afxdp = rows;
                doc.goals = goals;
                Ok(())
            }
            Err(e) => Err(e),
        }
    };
    let quit = driver.quit();
    if !doc.afxdp.is_empty() {
        output::write_doc(&doc, out_dir)?;
    }
    if !quiet || args.smoke {
        for p in &doc.afxdp {
            println!(
                "{:<8} {:>5} B  offered {:>9.0} pps  sent {:>8}  received {:>8} ({:>9.0} pps)  loss {:.4}  p50 {:.1} µs  p99 {:.1} µs  p99.9 {:.1} µs  samples {}",
                p.config,
                p.size,
                p.offered_pps,
                p.sent,
                p.received,
                p.received_pps,
                p.loss_ratio,
                p.latency.p50_us,
                p.latency.p99_us,
                p.latency.p999_us,
                p.latency.samples
            );
        }
        for g in &doc.goals {
            println!(
                "goal {}: {} — {} ({})",
                g.id,
                if g.met { "met" } else { "MISSED" },
                g.measured,
                g.reason
            );
        }
    }
    result?;
    quit
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vpnbench::hist::LatencyHist;

    /// A tunnel that carries at most `cap` pps with latency base + queueing growing with load.
    struct Sim {
        cap: f64,
        base_ns: u64,
        gen_max: f64,
        setups: Vec<String>,
        points: Vec<(usize, f64)>,
    }

    impl Runner for Sim {
        fn setup(&mut self, config: &str, _workers: usize) -> Result<(), BenchError> {
            self.setups.push(config.into());
            // Plain forwarding: twice the capacity, half the latency.
            if config == "plain" {
                self.cap *= 2.0;
                self.base_ns /= 2;
            }
            Ok(())
        }
        fn point(
            &mut self,
            size: usize,
            rate: f64,
            seconds: f64,
            count: Option<u64>,
        ) -> Result<Measured, BenchError> {
            self.points.push((size, rate));
            let offered = if rate > 0.0 { rate } else { self.gen_max };
            let sent = count.unwrap_or((offered * seconds) as u64);
            let got_rate = offered.min(self.cap);
            let received = (sent as f64 * got_rate / offered) as u64;
            let load = got_rate / self.cap;
            let mut h = LatencyHist::new();
            for i in 0..received.min(10_000) {
                h.record_ns(self.base_ns + (load * 100_000.0) as u64 * (i % 100) / 100);
            }
            Ok(Measured {
                gen: GenReport {
                    size,
                    offered_pps: rate,
                    sent,
                    seconds,
                    sent_pps: offered,
                    ..GenReport::default()
                },
                sink: SinkReport {
                    received,
                    first_ns: 1,
                    last_ns: 1 + (seconds * 1e9) as u64,
                    hist: h.to_raw(),
                    ..SinkReport::default()
                },
            })
        }
    }

    fn args() -> AfxdpArgs {
        AfxdpArgs {
            dataplane: "x".into(),
            workers: 1,
            sizes: vec![64, 1420],
            seconds: 1.0,
            smoke: false,
        }
    }

    #[test]
    fn sweep_finds_the_capacity_and_measures_its_fractions() {
        let mut sim = Sim {
            cap: 200_000.0,
            base_ns: 40_000,
            gen_max: 900_000.0,
            setups: vec![],
            points: vec![],
        };
        let (rows, goals) = measure(&mut sim, &args(), false).unwrap();
        assert_eq!(sim.setups, ["ours", "plain"]);
        let frac = |cfg: &str, size: usize, f: f64| {
            rows.iter()
                .find(|p| p.config == cfg && p.size == size && p.load_fraction == Some(f))
                .unwrap()
                .clone()
        };
        // Ours' maximum is the capacity; its fractions are offered at 10/50/90 % of it.
        for size in [64, 1420] {
            for f in FRACTIONS {
                let p = frac("ours-1w", size, f);
                assert!((p.offered_pps - 200_000.0 * f).abs() < 1.0, "{p:?}");
                assert_eq!(p.loss_ratio, 0.0);
                assert!(p.latency.samples > 0);
            }
            // Plain forwarding: its own capacity (doubled by the simulation).
            let p = frac("plain", size, 0.5);
            assert!((p.offered_pps - 200_000.0).abs() < 1.0, "{p:?}");
        }
        // Plain was also run at ours' 50 % rate (100 kpps), outside the fractions.
        assert!(rows.iter().any(|p| p.config == "plain"
            && p.load_fraction.is_none()
            && p.offered_pps == 100_000.0));
        // The goal: ours 40 µs base vs plain 20 µs: added p99 ≈ 20 + queueing delta < 50 µs.
        assert_eq!(goals.len(), 1);
        assert!(goals[0].met, "{:?}", goals[0]);
        assert!(goals[0].measured.contains("64 B") && goals[0].measured.contains("1420 B"));
    }

    #[test]
    fn goal_missed_says_why() {
        let mk = |p99: f64| AfxdpPoint {
            offered_pps: 1000.0,
            latency: crate::vpnbench::schema::Percentiles {
                p99_us: p99,
                samples: 1,
                ..Default::default()
            },
            ..Default::default()
        };
        let g = latency_goal(&[(64, mk(120.0), mk(30.0))]);
        assert!(!g.met);
        assert!(g.measured.contains("added 90.0 µs"), "{}", g.measured);
        assert!(!g.reason.is_empty());
        let g = latency_goal(&[(64, mk(60.0), mk(30.0))]);
        assert!(g.met && g.reason.is_empty());
        assert!(!latency_goal(&[]).met);
    }

    #[test]
    fn smoke_demands_exact_counts() {
        let mut sim = Sim {
            cap: 1e9,
            base_ns: 10_000,
            gen_max: 1e6,
            setups: vec![],
            points: vec![],
        };
        let (rows, errors) = smoke(&mut sim, &args()).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(rows.len(), 2);
        assert!(rows
            .iter()
            .all(|r| r.sent == SMOKE_COUNT && r.received == SMOKE_COUNT));
        // A lossy tunnel fails it, naming the counts.
        let mut lossy = Sim {
            cap: SMOKE_RATE / 2.0,
            ..sim
        };
        let (_, errors) = smoke(&mut lossy, &args()).unwrap();
        assert_eq!(errors.len(), 2);
        assert!(errors[0].contains("received 1000"), "{errors:?}");
        // Duplicates fail it too.
        let m = Measured {
            gen: GenReport {
                sent: 3,
                ..Default::default()
            },
            sink: SinkReport {
                received: 3,
                duplicates: 1,
                hist: {
                    let mut h = LatencyHist::new();
                    h.record_n_ns(5, 3);
                    h.to_raw()
                },
                ..Default::default()
            },
        };
        assert!(m.exact(3).unwrap_err().contains("duplicates 1"));
    }
}
