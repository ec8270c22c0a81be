//! `vpnctl stats`: the dataplane's counters per worker and per SA, drops by reason with what
//! each reason means.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use dataplane::esp::DropReason;
use dataplane::shm::counters::{CountersFile, CountersSnapshot};
use dataplane::worker::{WorkerCounter, WorkerDrop};

use super::cli::Cli;
use super::{print_json, CmdError, Exit};
use crate::api::{DropReasonStats, SaStats, StatsReport, WorkerStats};

/// What a drop reason the counters file names means (the dataplane's own doc comment).
pub fn meaning(scope: &str, reason: &str) -> &'static str {
    let m = match scope {
        "esp" => DropReason::ALL
            .iter()
            .find(|r| r.name() == reason)
            .map(|r| r.meaning()),
        _ => WorkerDrop::ALL
            .iter()
            .find(|r| r.name() == reason)
            .map(|r| r.meaning()),
    };
    m.unwrap_or("(a reason this vpnctl does not know: it is older than the dataplane)")
}

/// The non-zero counts of `names` by name.
fn nonzero(names: &[String], values: &[u64]) -> BTreeMap<String, u64> {
    names
        .iter()
        .zip(values)
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| (r.clone(), *n))
        .collect()
}

/// A counters snapshot as a [`StatsReport`] (pure: tests build snapshots by hand).
pub fn report(ring: &str, s: &CountersSnapshot) -> StatsReport {
    let fixed = |f: &[u64; dataplane::shm::counters::WORKER_FIXED], c: WorkerCounter| f[c as usize];
    let workers = s
        .workers
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let mut drops = nonzero(&s.esp_reasons, &w.esp_drops);
            drops.extend(nonzero(&s.worker_reasons, &w.worker_drops));
            WorkerStats {
                id: i as u32,
                outside_rx: fixed(&w.fixed, WorkerCounter::RxPacketsOutside),
                outside_tx: fixed(&w.fixed, WorkerCounter::TxPacketsOutside),
                inside_rx: fixed(&w.fixed, WorkerCounter::RxPacketsInside),
                inside_tx: fixed(&w.fixed, WorkerCounter::TxPacketsInside),
                outside_rx_bytes: Some(fixed(&w.fixed, WorkerCounter::RxBytesOutside)),
                outside_tx_bytes: Some(fixed(&w.fixed, WorkerCounter::TxBytesOutside)),
                inside_rx_bytes: Some(fixed(&w.fixed, WorkerCounter::RxBytesInside)),
                inside_tx_bytes: Some(fixed(&w.fixed, WorkerCounter::TxBytesInside)),
                encrypted: fixed(&w.fixed, WorkerCounter::Encapsulated),
                decrypted: fixed(&w.fixed, WorkerCounter::Decapsulated),
                drops,
            }
        })
        .collect();
    let mut sas: Vec<SaStats> = s
        .sas
        .iter()
        .map(|e| SaStats {
            direction: if e.inbound { "in" } else { "out" }.into(),
            spi: format!("{:#010x}", e.spi),
            reqid: e.reqid,
            packets: e.packets,
            bytes: e.bytes,
            seq: e.seq,
            drops: nonzero(&s.esp_reasons, &e.drops),
        })
        .collect();
    sas.sort_by(|a, b| (a.reqid, &a.direction, &a.spi).cmp(&(b.reqid, &b.direction, &b.spi)));
    let total = |idx: usize, esp: bool| -> u64 {
        s.workers
            .iter()
            .map(|w| {
                let v = if esp { &w.esp_drops } else { &w.worker_drops };
                v.get(idx).copied().unwrap_or(0)
            })
            .sum()
    };
    let drop_reasons = s
        .esp_reasons
        .iter()
        .enumerate()
        .map(|(i, r)| (i, r, "esp"))
        .chain(
            s.worker_reasons
                .iter()
                .enumerate()
                .map(|(i, r)| (i, r, "worker")),
        )
        .map(|(i, r, scope)| DropReasonStats {
            reason: r.clone(),
            scope: scope.into(),
            total: total(i, scope == "esp"),
            meaning: meaning(scope, r).into(),
        })
        .collect();
    StatsReport {
        ring: ring.to_string(),
        updated_unix_ns: s.updated_unix_ns,
        torn: s.torn,
        workers,
        sas,
        drop_reasons,
    }
}

/// The counters file of a ring: `RING.counters`.
pub fn counters_name(ring: &str) -> String {
    format!("{ring}.counters")
}

/// The dataplane's counters file of `ring`, as a [`StatsReport`] (also used by `diagnose`
/// and compared with the metrics in tests). No file: [`super::Exit::Unreachable`].
pub fn snapshot(ring: &str) -> Result<StatsReport, CmdError> {
    let name = counters_name(ring);
    let f = CountersFile::open(&name).map_err(|e| {
        CmdError::unreachable(format!("{e} (is a dataplane running with --ring {ring}?)"))
    })?;
    Ok(report(ring, &f.snapshot()))
}

/// Text for people: totals per worker, the SAs, and every drop reason that counted, with
/// its meaning.
pub fn render(r: &StatsReport, now_unix_ns: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "dataplane counters of ring {} (/dev/shm/{}), written {:.1} s ago",
        r.ring,
        counters_name(&r.ring),
        now_unix_ns.saturating_sub(r.updated_unix_ns) as f64 / 1e9
    );
    if r.torn {
        let _ = writeln!(
            out,
            "  warning: the dataplane was writing these counters and did not finish within {} ms (killed mid-update?): they may mix two moments",
            dataplane::shm::counters::SNAPSHOT_PATIENCE.as_millis()
        );
    }
    for w in &r.workers {
        let _ = writeln!(
            out,
            "  worker {}: outside rx {} tx {}, inside rx {} tx {}, encrypted {}, decrypted {}",
            w.id, w.outside_rx, w.outside_tx, w.inside_rx, w.inside_tx, w.encrypted, w.decrypted
        );
        if !w.drops.is_empty() {
            let d: Vec<String> = w.drops.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(out, "    drops: {}", d.join(", "));
        }
    }
    let _ = writeln!(out, "  {} SA(s)", r.sas.len());
    for s in &r.sas {
        let seq = if s.direction == "in" {
            format!("window top {}", s.seq)
        } else {
            format!("seq {}", s.seq)
        };
        let _ = writeln!(
            out,
            "  {:<3} spi {} reqid {}: {} packets, {} bytes, {seq}",
            s.direction, s.spi, s.reqid, s.packets, s.bytes
        );
        if !s.drops.is_empty() {
            let d: Vec<String> = s.drops.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(out, "    drops: {}", d.join(", "));
        }
    }
    let counted: Vec<&DropReasonStats> = r.drop_reasons.iter().filter(|d| d.total > 0).collect();
    if counted.is_empty() {
        let _ = writeln!(out, "  no drops");
    } else {
        let _ = writeln!(out, "  drops by reason:");
        for d in counted {
            let _ = writeln!(out, "    {:<20} {:>12}  {}", d.reason, d.total, d.meaning);
        }
    }
    out
}

pub fn run(cli: &Cli) -> Result<Exit, CmdError> {
    let ring = super::status::ring_name(cli)?;
    let r = snapshot(&ring)?;
    if cli.json {
        print_json("stats", &r);
    } else {
        print!("{}", render(&r, super::status::unix_ns()));
    }
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::shm::counters::{SaCounterEntry, WorkerCounters, WORKER_FIXED};

    fn sample() -> CountersSnapshot {
        let esp: Vec<String> = DropReason::ALL.iter().map(|r| r.name().into()).collect();
        let wrk: Vec<String> = WorkerDrop::ALL.iter().map(|r| r.name().into()).collect();
        let mut w0 = WorkerCounters {
            fixed: [0; WORKER_FIXED],
            esp_drops: vec![0; esp.len()],
            worker_drops: vec![0; wrk.len()],
        };
        w0.fixed[WorkerCounter::Encapsulated as usize] = 7;
        w0.fixed[WorkerCounter::RxPacketsInside as usize] = 9;
        w0.esp_drops[DropReason::IcvFailed as usize] = 3;
        let mut w1 = w0.clone();
        w1.worker_drops[WorkerDrop::NoSa as usize] = 2;
        CountersSnapshot {
            torn: false,
            updated_unix_ns: 5_000_000_000,
            esp_reasons: esp.clone(),
            worker_reasons: wrk,
            workers: vec![w0, w1],
            sas: vec![SaCounterEntry {
                slot: 0,
                spi: 0xc000_0001,
                inbound: true,
                reqid: 4,
                packets: 11,
                bytes: 1100,
                seq: 11,
                lease: 0,
                drops: {
                    let mut d = vec![0; esp.len()];
                    d[DropReason::ReplayDuplicate as usize] = 1;
                    d
                },
            }],
        }
    }

    #[test]
    fn every_drop_reason_is_listed_with_its_meaning_and_total() {
        let r = report("r1", &sample());
        assert_eq!(
            r.drop_reasons.len(),
            DropReason::COUNT + WorkerDrop::COUNT,
            "every reason, counted or not"
        );
        let icv = r
            .drop_reasons
            .iter()
            .find(|d| d.reason == "icv_failed")
            .unwrap();
        assert_eq!((icv.scope.as_str(), icv.total), ("esp", 6));
        assert_eq!(icv.meaning, DropReason::IcvFailed.meaning());
        let no_sa = r.drop_reasons.iter().find(|d| d.reason == "no_sa").unwrap();
        assert_eq!((no_sa.scope.as_str(), no_sa.total), ("worker", 2));
        assert!(r.drop_reasons.iter().all(|d| !d.meaning.is_empty()));
        assert_eq!(r.workers[1].drops["no_sa"], 2);
        assert_eq!(r.workers[0].encrypted, 7);
        assert_eq!(r.workers[0].inside_rx, 9);
        assert_eq!(r.workers[0].outside_tx_bytes, Some(0));
        assert!(!r.workers[0].drops.contains_key("no_sa"), "zeros left out");
        assert_eq!(r.sas[0].spi, "0xc0000001");
        assert_eq!(r.sas[0].direction, "in");
        assert_eq!(r.sas[0].drops["replay_duplicate"], 1);
        let text = render(&r, 6_000_000_000);
        assert!(text.contains("written 1.0 s ago"), "{text}");
        assert!(
            text.contains("icv_failed") && text.contains(DropReason::IcvFailed.meaning()),
            "{text}"
        );
        assert!(
            !text.contains("bad_padding"),
            "only reasons that counted: {text}"
        );
        assert_eq!(meaning("esp", "from_the_future"), meaning("worker", "nope"));
    }

    #[test]
    fn a_torn_snapshot_is_said_in_text_and_json() {
        let r = report("r1", &sample());
        assert!(!render(&r, 6_000_000_000).contains("warning"));
        assert!(!serde_json::to_string(&r).unwrap().contains("torn"));
        let mut s = sample();
        s.torn = true;
        let r = report("r1", &s);
        let text = render(&r, 6_000_000_000);
        assert!(
            text.contains("warning: the dataplane was writing these counters"),
            "{text}"
        );
        assert!(serde_json::to_string(&r).unwrap().contains("\"torn\":true"));
    }

    #[test]
    fn a_missing_counters_file_is_unreachable() {
        let e = snapshot("vpnctl-test-no-such-ring").unwrap_err();
        assert_eq!(e.exit, Exit::Unreachable);
        assert!(
            e.message.contains("--ring vpnctl-test-no-such-ring"),
            "{}",
            e.message
        );
    }
}
