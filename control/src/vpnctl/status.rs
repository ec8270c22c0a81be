//! `vpnctl status`: daemons up, XDP attached and how, workers and cores, rings, totals.
//!
//! iked answers for itself over its control socket; the dataplane is read from its files in
//! /dev/shm: the info file it writes at start (`RING.info`: pid, interfaces, XDP and bind
//! mode, workers) and its counters file (`RING.counters`: totals, and when it last wrote
//! them). The dataplane counts as running when the info file's pid is alive, or — with no
//! info file — when the counters are fresh.

use std::fmt::Write as _;
use std::path::Path;

use dataplane::shm::counters::CountersFile;
use dataplane::shm::info::{info_path, DataplaneInfo};
use dataplane::worker::WorkerCounter;

use super::cli::Cli;
use super::{print_json, request, CmdError, Exit};
use crate::api::{DataplaneStatus, IkedStatus, Request, StatusReport, Totals, WorkerStatus};

/// Counters not rewritten for this long: the dataplane is not running (it writes them at
/// least once a second).
pub const STALE_COUNTERS_S: f64 = 5.0;

/// Unix time now, in ns.
pub fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// iked's status, or why it does not answer.
pub fn iked_status(socket: &Path) -> Result<IkedStatus, CmdError> {
    let r = request(socket, &Request::Status)?;
    if !r.ok {
        return Err(CmdError::failed(format!("iked refused: {}", r.text.trim())));
    }
    serde_json::from_value(r.data)
        .map_err(|e| CmdError::failed(format!("iked's status is not one this vpnctl reads: {e}")))
}

/// The ring to read the dataplane's files from: `--ring`, else the one iked is attached
/// to, else the only one in /dev/shm with an info file.
pub fn ring_name(cli: &Cli) -> Result<String, CmdError> {
    if let Some(r) = &cli.ring {
        return Ok(r.clone());
    }
    let iked_err = match iked_status(&cli.socket) {
        Ok(s) if !s.ring.is_empty() => return Ok(s.ring),
        Ok(_) => "iked did not say".to_string(),
        Err(e) => e.message,
    };
    let mut found = info_files();
    if found.len() == 1 {
        return Ok(found.remove(0));
    }
    Err(CmdError::unreachable(format!(
        "which dataplane? give --ring NAME ({iked_err}; {} dataplane info file(s) in /dev/shm)",
        found.len()
    )))
}

/// Rings with an info file in /dev/shm.
fn info_files() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/dev/shm") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".info"))
                .map(str::to_string)
        })
        .collect()
}

/// Whether a process of this pid runs (in our pid namespace).
fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The dataplane of `ring` as its files show it.
pub fn dataplane_status(ring: &str, now_unix_ns: u64) -> DataplaneStatus {
    let mut d = DataplaneStatus {
        ring: ring.to_string(),
        ..DataplaneStatus::default()
    };
    let info = DataplaneInfo::read(&info_path(ring));
    let counters = CountersFile::open(&super::stats::counters_name(ring)).map(|f| f.snapshot());
    match &counters {
        Ok(s) => {
            let age = now_unix_ns.saturating_sub(s.updated_unix_ns) as f64 / 1e9;
            d.counters_age_s = Some(age);
            d.sas = s.sas.len() as u64;
            let sum =
                |c: WorkerCounter| -> u64 { s.workers.iter().map(|w| w.fixed[c as usize]).sum() };
            d.totals = Totals {
                rx_packets: sum(WorkerCounter::RxPacketsOutside)
                    + sum(WorkerCounter::RxPacketsInside),
                tx_packets: sum(WorkerCounter::TxPacketsOutside)
                    + sum(WorkerCounter::TxPacketsInside),
                encrypted_packets: sum(WorkerCounter::Encapsulated),
                decrypted_packets: sum(WorkerCounter::Decapsulated),
                dropped_packets: s
                    .workers
                    .iter()
                    .map(|w| w.esp_drops.iter().chain(&w.worker_drops).sum::<u64>())
                    .sum(),
            };
            if age > STALE_COUNTERS_S {
                d.notes.push(format!(
                    "the counters were last written {age:.0} s ago (the dataplane writes them every second)"
                ));
            }
        }
        Err(e) => d.notes.push(format!("no counters file: {e}")),
    }
    let fresh = d.counters_age_s.is_some_and(|a| a <= STALE_COUNTERS_S);
    match info {
        Ok(i) => {
            let up = alive(i.pid);
            d.running = up;
            d.pid = Some(i.pid);
            if !up {
                d.notes.push(format!(
                    "the info file names pid {}, which is not running (a dataplane that did not exit cleanly)",
                    i.pid
                ));
            }
            if up {
                d.outside = Some(i.outside);
                d.inside = Some(i.inside);
                d.xdp_mode = Some(i.xdp_mode);
                d.bind_mode = Some(i.bind_mode);
                d.workers = i
                    .workers
                    .iter()
                    .map(|w| WorkerStatus {
                        id: w.id,
                        core: w.core,
                        queue: w.outside_queues.first().copied(),
                        outside_queues: w.outside_queues.clone(),
                        inside_queues: w.inside_queues.clone(),
                    })
                    .collect();
            } else {
                d.xdp_mode = Some("none".into());
            }
        }
        Err(_) => {
            // A dataplane from before info files, or one without a ring: the counters tell.
            d.running = fresh;
            if !fresh {
                d.xdp_mode = Some("none".into());
            }
            d.notes.push(format!(
                "no info file {} (XDP and worker details unknown)",
                info_path(ring).display()
            ));
        }
    }
    d
}

fn secs(s: f64) -> String {
    let s = s.max(0.0) as u64;
    match s {
        0..=119 => format!("{s} s"),
        120..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Text for people.
pub fn render(r: &StatusReport) -> String {
    let mut out = String::new();
    match (&r.iked, &r.iked_error) {
        (Some(i), _) => {
            let _ = writeln!(
                out,
                "iked: running (pid {}, version {}, up {}), config {}, control socket {}, ring {}",
                i.pid,
                i.version,
                secs(i.uptime_s),
                i.config,
                i.control_socket,
                i.ring
            );
            let n = |k: &str| i.ike_sas.get(k).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "  {} connection(s); IKE SAs: {} established, {} connecting, {} half-open, {} deleting; cookies {}",
                i.connections,
                n("established"),
                n("connecting"),
                n("half_open"),
                n("deleting"),
                if i.cookie_mode { "required (RFC 7296 §2.6: many half-open SAs)" } else { "not required" }
            );
            let failed: Vec<String> = i
                .negotiations
                .iter()
                .filter_map(|(k, v)| k.strip_prefix("failed:").map(|f| format!("{f} {v}")))
                .collect();
            let _ = writeln!(
                out,
                "  negotiations: {} established, {} failed{}; DPD timeouts {}; cookies sent {}",
                i.negotiations.get("established").copied().unwrap_or(0),
                i.negotiations.get("failed").copied().unwrap_or(0),
                if failed.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", failed.join(", "))
                },
                i.dpd_timeouts,
                i.cookies_sent
            );
            let drops: Vec<String> = i
                .ike_drops
                .iter()
                .filter(|(_, v)| **v > 0)
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            if !drops.is_empty() {
                let _ = writeln!(out, "  IKE datagrams dropped: {}", drops.join(", "));
            }
            if let Some(l) = &i.last_reload {
                let _ = writeln!(
                    out,
                    "  last reload {} ago: {}{}",
                    secs(i.now_unix_ms.saturating_sub(l.at_unix_ms) as f64 / 1000.0),
                    if l.ok { "" } else { "FAILED: " },
                    l.message
                );
            }
            for e in &i.send_errors {
                let _ = writeln!(
                    out,
                    "  cannot send to {}: {} ({} time(s), last {} ago)",
                    e.peer,
                    e.error,
                    e.count,
                    secs(i.now_unix_ms.saturating_sub(e.last_unix_ms) as f64 / 1000.0)
                );
            }
        }
        (None, e) => {
            let _ = writeln!(
                out,
                "iked: not reachable: {}",
                e.as_deref().unwrap_or("unknown")
            );
        }
    }
    let d = &r.dataplane;
    if d.running {
        let _ = writeln!(
            out,
            "dataplane: running{}, ring {}",
            d.pid.map_or(String::new(), |p| format!(" (pid {p})")),
            d.ring
        );
        if let (Some(o), Some(i), Some(m)) = (&d.outside, &d.inside, &d.xdp_mode) {
            let _ = writeln!(
                out,
                "  XDP attached to {o} (outside) and {i} (inside) in {m} mode; AF_XDP sockets in {} mode",
                d.bind_mode.as_deref().unwrap_or("unknown")
            );
        }
        for w in &d.workers {
            let _ = writeln!(
                out,
                "  worker {}: core {}, outside queues {:?}, inside queues {:?}",
                w.id,
                w.core.map_or("not pinned".into(), |c| c.to_string()),
                w.outside_queues,
                w.inside_queues
            );
        }
    } else {
        let _ = writeln!(
            out,
            "dataplane: NOT running{}",
            if d.ring.is_empty() {
                String::new()
            } else {
                format!(" (ring {})", d.ring)
            }
        );
    }
    if d.counters_age_s.is_some() {
        let t = &d.totals;
        let _ = writeln!(
            out,
            "  totals: {} packets received, {} sent, {} encrypted, {} decrypted, {} dropped; {} SA(s); counters written {:.1} s ago",
            t.rx_packets,
            t.tx_packets,
            t.encrypted_packets,
            t.decrypted_packets,
            t.dropped_packets,
            d.sas,
            d.counters_age_s.unwrap_or_default()
        );
    }
    for n in &d.notes {
        let _ = writeln!(out, "  note: {n}");
    }
    out
}

/// The whole report, and how `vpnctl status` ends: 0 when iked answers and the dataplane
/// runs, 3 otherwise (the report is printed either way).
pub fn gather(cli: &Cli) -> (StatusReport, Exit) {
    let (iked, iked_error) = match iked_status(&cli.socket) {
        Ok(s) => (Some(s), None),
        Err(e) => (None, Some(e.message)),
    };
    let ring = cli
        .ring
        .clone()
        .or_else(|| {
            iked.as_ref()
                .map(|s| s.ring.clone())
                .filter(|r| !r.is_empty())
        })
        .or_else(|| {
            let mut f = info_files();
            (f.len() == 1).then(|| f.remove(0))
        });
    let dataplane = match &ring {
        Some(r) => dataplane_status(r, unix_ns()),
        None => DataplaneStatus {
            notes: vec!["which dataplane? iked does not answer and no --ring was given".into()],
            xdp_mode: Some("none".into()),
            ..DataplaneStatus::default()
        },
    };
    let exit = if iked.is_some() && dataplane.running {
        Exit::Ok
    } else {
        Exit::Unreachable
    };
    (
        StatusReport {
            iked,
            iked_error,
            dataplane,
        },
        exit,
    )
}

pub fn run(cli: &Cli) -> Result<Exit, CmdError> {
    let (r, exit) = gather(cli);
    if cli.json {
        print_json("status", &r);
    } else {
        print!("{}", render(&r));
    }
    Ok(exit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dataplane_without_files_is_not_running_and_says_why() {
        let d = dataplane_status("vpnctl-test-no-such-ring", unix_ns());
        assert!(!d.running);
        assert_eq!(d.xdp_mode.as_deref(), Some("none"));
        assert!(
            d.notes.iter().any(|n| n.contains("no counters file")),
            "{:?}",
            d.notes
        );
        let text = render(&StatusReport {
            iked: None,
            iked_error: Some("/run/x.sock: No such file".into()),
            dataplane: d,
        });
        assert!(text.contains("iked: not reachable: /run/x.sock"), "{text}");
        assert!(
            text.contains("dataplane: NOT running (ring vpnctl-test-no-such-ring)"),
            "{text}"
        );
    }

    #[test]
    fn a_running_system_reads_in_one_screen() {
        let mut i = IkedStatus {
            pid: 7,
            version: "0.1.0".into(),
            uptime_s: 3725.0,
            ring: "r".into(),
            connections: 2,
            now_unix_ms: 10_000,
            ..IkedStatus::default()
        };
        i.ike_sas.insert("established".into(), 2);
        i.negotiations.insert("established".into(), 3);
        i.negotiations.insert("failed".into(), 1);
        i.negotiations.insert("failed:auth-psk-mismatch".into(), 1);
        i.last_reload = Some(crate::api::ReloadOutcome {
            at_unix_ms: 4_000,
            ok: false,
            message: "bad file".into(),
        });
        let d = DataplaneStatus {
            running: true,
            pid: Some(8),
            ring: "r".into(),
            counters_age_s: Some(0.4),
            outside: Some("eth0".into()),
            inside: Some("eth1".into()),
            xdp_mode: Some("native".into()),
            bind_mode: Some("zerocopy".into()),
            workers: vec![WorkerStatus {
                id: 0,
                core: Some(2),
                queue: Some(0),
                outside_queues: vec![0],
                inside_queues: vec![0],
            }],
            ..DataplaneStatus::default()
        };
        let t = render(&StatusReport {
            iked: Some(i),
            iked_error: None,
            dataplane: d,
        });
        for want in [
            "iked: running (pid 7, version 0.1.0, up 1h02m)",
            "2 established",
            "1 failed (auth-psk-mismatch 1)",
            "last reload 6 s ago: FAILED: bad file",
            "dataplane: running (pid 8), ring r",
            "XDP attached to eth0 (outside) and eth1 (inside) in native mode; AF_XDP sockets in zerocopy mode",
            "worker 0: core 2, outside queues [0], inside queues [0]",
        ] {
            assert!(t.contains(want), "{want:?} in:\n{t}");
        }
    }
}
