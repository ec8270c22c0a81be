//! `vpnctl list [CONN]`: connections, their IKE and Child SAs as iked and the dataplane hold
//! them, and their failures.
//!
//! iked says what it negotiated ([`crate::api::ListReport`]); the dataplane's counters file
//! says which SPIs it really holds and what they carried. The text reads like strongSwan's
//! `swanctl --list-sas`, and keeps the phrases scripts look for ("established", "(1 IKE
//! SA)", "child NAME: in spi", "N rekeys", "traffic for it is dropped (fail-closed)").

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

use dataplane::shm::counters::{CountersFile, CountersSnapshot};

use super::cli::Cli;
use super::{print_json, request, CmdError, Exit};
use crate::api::{ConnReport, ListReport, Request};

/// One SA direction's packet count, iked's (up to a second old) brought up to the dataplane's:
/// what it counted since iked's reading came within the last second, so it is recent too
/// and the SA moved just now. Without this, an SA at 150 000 packets a second read "344415
/// packets (313881 in the last 60 s)" when it was 2 s old: a fresh total beside iked's
/// window of a second before. A count below iked's (a restarted dataplane counts again from
/// 0) leaves no more recent than the total.
fn bring_up_to_date(total: &mut u64, recent: &mut u64, idle_s: &mut Option<f64>, dataplane: u64) {
    if dataplane > *total {
        *recent += dataplane - *total;
        *idle_s = Some(0.0);
    }
    *recent = (*recent).min(dataplane);
    *total = dataplane;
}

/// Put the dataplane's view into iked's: which SPIs it holds, and its packet and byte
/// counts (the ones that matter; iked's are up to a second old).
pub fn merge(report: &mut ListReport, dp: &CountersSnapshot) {
    let held: HashMap<(bool, String), (u64, u64)> = dp
        .sas
        .iter()
        .map(|e| {
            (
                (e.inbound, format!("{:#010x}", e.spi)),
                (e.packets, e.bytes),
            )
        })
        .collect();
    for c in &mut report.connections {
        for k in &mut c.children {
            for sa in &mut k.sas {
                let inb = held.get(&(true, sa.in_spi.clone()));
                let out = held.get(&(false, sa.out_spi.clone()));
                sa.in_in_dataplane = Some(inb.is_some());
                sa.out_in_dataplane = Some(out.is_some());
                if let Some(&(p, b)) = inb {
                    bring_up_to_date(
                        &mut sa.in_packets,
                        &mut sa.in_packets_60s,
                        &mut sa.in_idle_s,
                        p,
                    );
                    sa.in_bytes = b;
                }
                if let Some(&(p, b)) = out {
                    bring_up_to_date(
                        &mut sa.out_packets,
                        &mut sa.out_packets_60s,
                        &mut sa.out_idle_s,
                        p,
                    );
                    sa.out_bytes = b;
                }
            }
        }
    }
}

fn secs(s: f64) -> String {
    format!("{:.0} s", s.max(0.0))
}

/// "rekey in 3512 s, expires in 3960 s", or what is off.
fn timers(rekey: Option<f64>, expire: Option<f64>) -> String {
    format!(
        "{}, {}",
        rekey.map_or("no rekey".into(), |t| format!("rekey in {}", secs(t))),
        expire.map_or("no expiry".into(), |t| format!("expires in {}", secs(t)))
    )
}

/// An address without its port ("192.0.2.1:4500" → "192.0.2.1").
fn host(addr: &str) -> String {
    addr.parse::<SocketAddr>()
        .map_or_else(|_| addr.to_string(), |a| a.ip().to_string())
}

fn ago(now_ms: u64, at_ms: u64) -> String {
    format!("{} ago", secs(now_ms.saturating_sub(at_ms) as f64 / 1000.0))
}

fn conn(out: &mut String, now_ms: u64, c: &ConnReport) {
    let established: Vec<_> = c
        .ike_sas
        .iter()
        .filter(|s| s.state == "established")
        .collect();
    let best = established
        .iter()
        .min_by(|a, b| a.age_s.total_cmp(&b.age_s))
        .copied()
        .or_else(|| c.ike_sas.first());
    let (local, remote) = match best {
        Some(s) => (host(&s.local), host(&s.remote)),
        None => (
            c.local_addrs.first().cloned().unwrap_or_default(),
            c.remote_addrs.first().cloned().unwrap_or_default(),
        ),
    };
    let state = match (c.state.as_str(), best) {
        ("established", Some(s)) => format!(
            "established {} ago{}{} ({} IKE SA{})",
            secs(s.established_s.unwrap_or(s.age_s)),
            s.suite
                .as_deref()
                .map_or(String::new(), |x| format!(", {x}")),
            if s.nat { ", NAT-T" } else { "" },
            established.len(),
            if established.len() == 1 { "" } else { "s" }
        ),
        ("connecting", _) => "connecting".into(),
        _ => {
            let mut s = "down".to_string();
            if let Some(t) = c.retry_in_s {
                let _ = write!(s, " (retry in {})", secs(t));
            }
            s
        }
    };
    let _ = writeln!(
        out,
        "{}: {local} === {remote} ({} → {}), {state}",
        c.name, c.local_id, c.remote_id
    );
    for s in &c.ike_sas {
        let _ = writeln!(
            out,
            "  IKE SA {}_i {}_r ({}, {}): {} === {}{}{}",
            s.spi_i,
            s.spi_r,
            s.role,
            s.state,
            s.local,
            s.remote,
            if s.remote_id.is_empty() {
                String::new()
            } else {
                format!(" [{}]", s.remote_id)
            },
            s.suite
                .as_deref()
                .map_or(String::new(), |x| format!(", {x}"))
        );
        if s.state == "established" {
            let _ = writeln!(
                out,
                "    {}{}; {} rekeys; last heard {} ago",
                timers(s.rekey_in_s, s.expire_in_s),
                s.reauth_in_s.map_or(String::new(), |t| format!(
                    ", reauthentication in {}",
                    secs(t)
                )),
                s.rekeys,
                secs(s.last_heard_s.unwrap_or_default())
            );
        }
        if let Some(e) = &s.last_rekey_error {
            let _ = writeln!(out, "    last rekey attempt: {e}");
        }
    }
    if c.half_open > 0 {
        let _ = writeln!(
            out,
            "  {} half-open IKE SA(s): responder, waiting for IKE_AUTH",
            c.half_open
        );
    }
    if c.state != "established" {
        if let Some(f) = c.failures.last() {
            let _ = writeln!(
                out,
                "  last failure {}: {} [{}]",
                ago(now_ms, f.at_unix_ms),
                f.message,
                f.finding
            );
        }
    }
    for k in &c.children {
        for sa in &k.sas {
            let _ = writeln!(
                out,
                "  child {}: in spi {}, out spi {}{}{}, {} === {} (reqid {}, {}, up {}{})",
                k.name,
                sa.in_spi,
                sa.out_spi,
                match sa.worker {
                    Some(w) => format!(" (worker {w})"),
                    None => String::new(),
                },
                if sa.outbound_installed {
                    ""
                } else {
                    " (outbound not yet: the peer has not deleted the old SA)"
                },
                sa.local_ts.join(","),
                sa.remote_ts.join(","),
                k.reqid,
                k.mode,
                secs(sa.up_s),
                sa.suite
                    .as_deref()
                    .map_or(String::new(), |x| format!(", {x}"))
            );
            let side = |held: Option<bool>, b: u64, p: u64, p60: u64, idle: Option<f64>| {
                let mut s = format!("{b} bytes, {p} packets");
                match held {
                    Some(false) => s.push_str(" (NOT in the dataplane)"),
                    _ => {
                        let _ = write!(s, " ({p60} in the last 60 s");
                        if let Some(i) = idle {
                            let _ = write!(s, ", last {} ago", secs(i));
                        }
                        s.push(')');
                    }
                }
                s
            };
            let _ = writeln!(
                out,
                "    in {}; out {}; {}; {} rekeys",
                side(
                    sa.in_in_dataplane,
                    sa.in_bytes,
                    sa.in_packets,
                    sa.in_packets_60s,
                    sa.in_idle_s
                ),
                side(
                    if sa.outbound_installed {
                        sa.out_in_dataplane
                    } else {
                        None
                    },
                    sa.out_bytes,
                    sa.out_packets,
                    sa.out_packets_60s,
                    sa.out_idle_s
                ),
                timers(sa.rekey_in_s, sa.expire_in_s),
                k.rekeys
            );
        }
        if let (false, Some(f)) = (k.sas.is_empty(), &k.last_failure) {
            let _ = writeln!(
                out,
                "    last rekey failure {}: {}",
                ago(now_ms, f.at_unix_ms),
                f.message
            );
        }
        if k.retiring > 0 {
            let _ = writeln!(
                out,
                "  child {}: {} inbound SA(s) replaced by a rekey, kept for packets in flight",
                k.name, k.retiring
            );
        }
        if k.sas.is_empty() {
            let how = match k.state.as_str() {
                "negotiating" => "negotiating",
                "trap" => "trap: the next matching packet negotiates it",
                _ => "down",
            };
            let _ = writeln!(
                out,
                "  child {}: {how}; traffic for it is dropped (fail-closed); {} === {}",
                k.name,
                k.local_ts.join(","),
                k.remote_ts.join(",")
            );
            if let Some(f) = &k.last_failure {
                let _ = writeln!(
                    out,
                    "    last failure {}: {} [{}]",
                    ago(now_ms, f.at_unix_ms),
                    f.message,
                    f.finding
                );
            }
        }
        if k.stale > 0 {
            let _ = writeln!(
                out,
                "  child {}: {} SA(s) inherited from the previous iked, still forwarding",
                k.name, k.stale
            );
        }
    }
}

/// Text for people.
pub fn render(r: &ListReport) -> String {
    let mut out = String::new();
    for c in &r.connections {
        conn(&mut out, r.now_unix_ms, c);
    }
    if r.connections.is_empty() {
        out.push_str("no connections configured\n");
    }
    out
}

pub fn run(cli: &Cli, conn: Option<&str>) -> Result<Exit, CmdError> {
    let r = request(
        &cli.socket,
        &Request::List {
            conn: conn.map(str::to_string),
        },
    )?;
    if !r.ok {
        return Err(CmdError::failed(format!("iked refused: {}", r.text.trim())));
    }
    let mut report: ListReport = serde_json::from_value(r.data)
        .map_err(|e| CmdError::failed(format!("iked's list is not one this vpnctl reads: {e}")))?;
    // The dataplane's view, when its counters file is there (iked works without one, and
    // so does this listing).
    let ring = cli
        .ring
        .clone()
        .or_else(|| super::status::iked_status(&cli.socket).ok().map(|s| s.ring));
    if let Some(ring) = ring {
        if let Ok(f) = CountersFile::open(&super::stats::counters_name(&ring)) {
            merge(&mut report, &f.snapshot());
        }
    }
    if cli.json {
        print_json("list", &report);
    } else {
        print!("{}", render(&report));
    }
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ChildReport, ChildSaReport, FailureRecord, IkeSaReport};
    use dataplane::shm::counters::SaCounterEntry;

    fn up() -> ListReport {
        ListReport {
            now_unix_ms: 100_000,
            connections: vec![ConnReport {
                name: "gw-b".into(),
                state: "established".into(),
                local_addrs: vec!["192.0.2.1".into()],
                remote_addrs: vec!["192.0.2.2".into()],
                local_id: "a".into(),
                remote_id: "b".into(),
                ike_sas: vec![IkeSaReport {
                    spi_i: "0011223344556677".into(),
                    spi_r: "8899aabbccddeeff".into(),
                    role: "initiator".into(),
                    state: "established".into(),
                    local: "192.0.2.1:4500".into(),
                    remote: "198.51.100.7:4500".into(),
                    suite: Some("aes128gcm16-prfsha256-x25519".into()),
                    nat: true,
                    age_s: 30.0,
                    established_s: Some(29.0),
                    rekeys: 2,
                    last_heard_s: Some(1.0),
                    ..IkeSaReport::default()
                }],
                children: vec![ChildReport {
                    name: "net".into(),
                    reqid: 3,
                    state: "installed".into(),
                    mode: "tunnel".into(),
                    rekeys: 4,
                    sas: vec![ChildSaReport {
                        in_spi: "0xc0000001".into(),
                        out_spi: "0xc0000002".into(),
                        outbound_installed: true,
                        in_packets: 1,
                        local_ts: vec!["10.1.0.0/16".into()],
                        remote_ts: vec!["10.2.0.0/16".into()],
                        ..ChildSaReport::default()
                    }],
                    ..ChildReport::default()
                }],
                ..ConnReport::default()
            }],
        }
    }

    #[test]
    fn the_dataplanes_spis_and_counts_are_merged_in() {
        let mut r = up();
        let dp = CountersSnapshot {
            sas: vec![SaCounterEntry {
                spi: 0xc000_0001,
                inbound: true,
                packets: 50,
                bytes: 5000,
                ..SaCounterEntry::default()
            }],
            ..CountersSnapshot::default()
        };
        merge(&mut r, &dp);
        let sa = &r.connections[0].children[0].sas[0];
        assert_eq!(sa.in_in_dataplane, Some(true));
        assert_eq!(sa.out_in_dataplane, Some(false));
        assert_eq!((sa.in_packets, sa.in_bytes), (50, 5000));
        let t = render(&r);
        assert!(
            t.contains("out 0 bytes, 0 packets (NOT in the dataplane)"),
            "{t}"
        );
    }

    /// The dataplane's count is fresher than iked's window (read up to a second before):
    /// what came since is recent. It said "344415 packets (313881 in the last 60 s)" for an
    /// SA 2 s old, in the demo.
    #[test]
    fn packets_counted_since_ikeds_reading_are_recent() {
        let mut r = up();
        {
            let sa = &mut r.connections[0].children[0].sas[0];
            (sa.in_packets, sa.in_packets_60s, sa.in_idle_s) = (30_000, 30_000, Some(0.0));
            (sa.out_packets, sa.out_packets_60s, sa.out_idle_s) = (900, 400, Some(12.0));
        }
        let entry = |spi, inbound, packets| SaCounterEntry {
            spi,
            inbound,
            packets,
            ..SaCounterEntry::default()
        };
        let dp = CountersSnapshot {
            sas: vec![
                entry(0xc000_0001, true, 344_415),
                entry(0xc000_0002, false, 900),
            ],
            ..CountersSnapshot::default()
        };
        merge(&mut r, &dp);
        let sa = &r.connections[0].children[0].sas[0];
        assert_eq!((sa.in_packets, sa.in_packets_60s), (344_415, 344_415));
        assert_eq!(sa.in_idle_s, Some(0.0));
        // Nothing since iked's reading: its window and idle time stand.
        assert_eq!((sa.out_packets, sa.out_packets_60s), (900, 400));
        assert_eq!(sa.out_idle_s, Some(12.0));
        assert!(
            render(&r)
                .contains("in 0 bytes, 344415 packets (344415 in the last 60 s, last 0 s ago)"),
            "{}",
            render(&r)
        );

        // A restarted dataplane counts from 0 again: never more recent than the total.
        let mut r = up();
        r.connections[0].children[0].sas[0].in_packets = 5_000;
        r.connections[0].children[0].sas[0].in_packets_60s = 4_000;
        let dp = CountersSnapshot {
            sas: vec![entry(0xc000_0001, true, 10)],
            ..CountersSnapshot::default()
        };
        merge(&mut r, &dp);
        let sa = &r.connections[0].children[0].sas[0];
        assert_eq!((sa.in_packets, sa.in_packets_60s), (10, 10));
    }

    #[test]
    fn the_text_keeps_what_scripts_look_for() {
        let t = render(&up());
        for want in [
            "gw-b: 192.0.2.1 === 198.51.100.7 (a → b), established 29 s ago, aes128gcm16-prfsha256-x25519, NAT-T (1 IKE SA)",
            "IKE SA 0011223344556677_i 8899aabbccddeeff_r (initiator, established)",
            "2 rekeys; last heard 1 s ago",
            "  child net: in spi 0xc0000001, out spi 0xc0000002, 10.1.0.0/16 === 10.2.0.0/16 (reqid 3, tunnel, up 0 s",
            "    in 0 bytes, 1 packets (0 in the last 60 s); out",
            "4 rekeys",
        ] {
            assert!(t.contains(want), "{want:?} in:\n{t}");
        }
        let mut down = up();
        let c = &mut down.connections[0];
        c.state = "down".into();
        c.ike_sas.clear();
        c.retry_in_s = Some(4.0);
        c.failures.push(FailureRecord {
            at_unix_ms: 90_000,
            finding: "peer-dead".into(),
            message: "the peer is dead: no answer to 3 liveness checks".into(),
            ..FailureRecord::default()
        });
        c.children[0].sas.clear();
        c.children[0].state = "down".into();
        let t = render(&down);
        for want in [
            "gw-b: 192.0.2.1 === 192.0.2.2 (a → b), down (retry in 4 s)",
            "last failure 10 s ago: the peer is dead",
            "child net: down; traffic for it is dropped (fail-closed)",
        ] {
            assert!(t.contains(want), "{want:?} in:\n{t}");
        }
        assert!(!t.contains("established"), "{t}");
    }
}
