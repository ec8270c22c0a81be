//! What the daemon holds, as the versioned JSON types of [`crate::api`]: `vpnctl status`
//! and `vpnctl list` (and the metrics built from them). Also the few things the daemon
//! keeps only to report them: socket errors the shell met, the last reload's outcome.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use tracing::Level;

use super::{Daemon, EventAt, SaEntry};
use crate::api::{
    ChildReport, ChildSaReport, ConnReport, FailureRecord, IkeSaReport, IkedStatus, ListReport,
    ReloadOutcome, SendError,
};
use crate::ike::sa::{Phase, Role};

/// (peer, error) pairs of send errors kept; the oldest goes first.
pub const SEND_ERRORS: usize = 32;

/// Seconds from `now` to `t` (ms), never negative.
fn until(now: u64, t: u64) -> f64 {
    t.saturating_sub(now) as f64 / 1000.0
}

/// Seconds from `t` to `now` (ms), never negative.
fn since(now: u64, t: u64) -> f64 {
    now.saturating_sub(t) as f64 / 1000.0
}

/// "0x1234abcd", as the dataplane's stats and `vpnctl stats` write SPIs.
pub fn esp_spi(spi: u32) -> String {
    format!("{spi:#010x}")
}

/// "00112233aabbccdd", as the event log writes IKE SPIs.
pub fn ike_spi(spi: u64) -> String {
    format!("{spi:016x}")
}

/// An IKE SA's state as `vpnctl` names it: a responder SA still waiting for IKE_AUTH is
/// "half_open" (counted against the RFC 7296 §2.6 cookie threshold), not "connecting".
fn ike_state(e: &SaEntry) -> &'static str {
    match e.sa.phase() {
        _ if e.half_open_from.is_some() => "half_open",
        Phase::Established => "established",
        Phase::Connecting => "connecting",
        Phase::Deleting => "deleting",
        Phase::Closed => "closed",
    }
}

impl Daemon {
    /// The daemon itself (the shell fills in what only it knows: pid, version, config path,
    /// socket, ring, uptime).
    pub fn status_report(&self, now: u64) -> IkedStatus {
        let mut ike_sas: BTreeMap<String, u64> =
            ["established", "connecting", "half_open", "deleting"]
                .into_iter()
                .map(|s| (s.to_string(), 0))
                .collect();
        for e in self.sas.values() {
            *ike_sas.entry(ike_state(e).to_string()).or_default() += 1;
        }
        let mut negotiations = BTreeMap::from([
            (
                "established".to_string(),
                self.counters.negotiations_established,
            ),
            (
                "failed".to_string(),
                self.counters.negotiations_failed.values().sum(),
            ),
        ]);
        for (finding, n) in &self.counters.negotiations_failed {
            negotiations.insert(format!("failed:{finding}"), *n);
        }
        IkedStatus {
            now_unix_ms: self.unix_ms(now),
            connections: self.conns.len() as u32,
            ike_sas,
            half_open: self.half_open_total as u64,
            // RFC 7296 §2.6: past the threshold every IKE_SA_INIT must carry a COOKIE.
            cookie_mode: self.half_open_total >= self.opts.cookie_threshold,
            ike_drops: self
                .counters
                .drops
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            negotiations,
            dpd_timeouts: self.counters.peers_dead,
            cookies_sent: self.counters.cookies_sent,
            last_reload: self.last_reload.clone(),
            send_errors: self.send_errors.clone(),
            ..IkedStatus::default()
        }
    }

    /// Whether a connection of this name is configured.
    pub fn has_conn(&self, name: &str) -> bool {
        self.conn_index(name).is_some()
    }

    /// Connections, IKE SAs and Child SAs (all, or the connection named). Half-open
    /// responder SAs are counted (`half_open`), not listed: under a flood of spoofed
    /// IKE_SA_INITs they would be thousands.
    pub fn list_report(&self, now: u64, conn: Option<&str>) -> ListReport {
        let connections = self
            .conns
            .iter()
            .filter(|c| conn.is_none_or(|n| n == c.name()))
            .map(|c| self.conn_report(now, c))
            .collect();
        ListReport {
            now_unix_ms: self.unix_ms(now),
            connections,
        }
    }

    fn conn_report(&self, now: u64, c: &super::conn::ConnState) -> ConnReport {
        let cc = &c.cfg.connection;
        let mine: Vec<(&u64, &SaEntry)> =
            self.sas.iter().filter(|(_, e)| e.conn == cc.name).collect();
        let half_open = mine
            .iter()
            .filter(|(_, e)| e.half_open_from.is_some())
            .count() as u64;
        let mut ike_sas: Vec<IkeSaReport> = mine
            .iter()
            .filter(|(_, e)| e.half_open_from.is_none() && e.sa.phase() != Phase::Closed)
            .map(|(_, e)| self.ike_sa_report(now, e))
            .collect();
        // Oldest first, so the listing is stable from one call to the next.
        ike_sas.sort_by(|a, b| b.age_s.total_cmp(&a.age_s).then(a.spi_i.cmp(&b.spi_i)));
        let state = if ike_sas.iter().any(|s| s.state == "established") {
            "established"
        } else if !ike_sas.is_empty() {
            "connecting"
        } else {
            "down"
        };
        let unix = |t: u64| self.unix_ms(t);
        // A child's last failure, with its classification if the connection's history has it.
        let failure = |(t, msg): &(u64, String)| {
            c.history
                .iter()
                .rev()
                .find(|r| r.at_unix_ms == unix(*t) && &r.message == msg)
                .cloned()
                .unwrap_or_else(|| FailureRecord {
                    at_unix_ms: unix(*t),
                    finding: "unclassified".into(),
                    message: msg.clone(),
                    evidence: BTreeMap::new(),
                })
        };
        let children = c
            .children
            .iter()
            .zip(&cc.children)
            .map(|(k, kc)| {
                let state = if !k.installed.is_empty() {
                    "installed"
                } else if k.negotiating.is_some() {
                    "negotiating"
                } else if k.trapped {
                    "trap"
                } else {
                    "down"
                };
                ChildReport {
                    name: k.cfg.name.clone(),
                    reqid: k.cfg.reqid,
                    state: state.into(),
                    mode: if kc.transport { "transport" } else { "tunnel" }.into(),
                    local_ts: kc.local_ts.iter().map(crate::ike::child::show_ts).collect(),
                    remote_ts: kc
                        .remote_ts
                        .iter()
                        .map(crate::ike::child::show_ts)
                        .collect(),
                    sas: k
                        .installed
                        .iter()
                        .map(|i| self.child_sa_report(now, i))
                        .collect(),
                    rekeys: k.rekeys,
                    retiring: k.retiring.len() as u32,
                    stale: k.stale.len() as u32,
                    last_failure: k.last_failure.as_ref().map(&failure),
                }
            })
            .collect();
        ConnReport {
            name: cc.name.clone(),
            state: state.into(),
            local_addrs: c.cfg.local_addrs.iter().map(|a| a.to_string()).collect(),
            remote_addrs: c.cfg.remote_addrs.iter().map(|a| a.to_string()).collect(),
            local_id: cc.local_id.clone(),
            remote_id: cc.remote_id.clone(),
            ike_sas,
            half_open,
            children,
            retry_in_s: c.retry_at.map(|t| until(now, t)),
            failures: c.history.iter().cloned().collect(),
        }
    }

    fn ike_sa_report(&self, now: u64, e: &SaEntry) -> IkeSaReport {
        let (i, r) = e.sa.spis();
        let cc = e.sa.connection();
        IkeSaReport {
            spi_i: ike_spi(i),
            spi_r: ike_spi(r),
            role: match e.sa.role() {
                Role::Initiator => "initiator",
                Role::Responder => "responder",
            }
            .into(),
            state: ike_state(e).into(),
            local: e.sa.local().to_string(),
            remote: e.sa.remote().to_string(),
            local_id: cc.local_id.clone(),
            remote_id: e.sa.peer_id().unwrap_or_else(|| cc.remote_id.clone()),
            suite: e.sa.suite().map(|s| s.to_string()),
            nat: e.sa.nat(),
            age_s: since(now, e.created),
            established_s: e.sa.established_at().map(|t| since(now, t)),
            rekey_in_s: e.sa.rekey_at().map(|t| until(now, t)),
            reauth_in_s: e.reauth_at.map(|t| until(now, t)),
            expire_in_s: e.sa.expire_at().map(|t| until(now, t)),
            rekeys: u64::from(e.sa.rekeys()),
            last_heard_s: (e.sa.phase() == Phase::Established)
                .then(|| since(now, e.sa.last_heard())),
            last_rekey_error: e.sa.ike_rekey_error().map(|x| x.to_string()),
        }
    }

    fn child_sa_report(&self, now: u64, i: &super::conn::InstalledChild) -> ChildSaReport {
        let info = self.sas.get(&i.ike_spi).and_then(|e| {
            e.sa.children()
                .iter()
                .find(|x| x.inbound_spi == i.inbound_spi)
        });
        let counts =
            |inbound: bool, spi: u32| self.traffic.get(&(inbound, spi)).copied().unwrap_or((0, 0));
        let (in_packets, in_bytes) = counts(true, i.inbound_spi);
        let (out_packets, out_bytes) = counts(false, i.outbound_spi);
        let recent_in = self
            .traffic_history
            .recent(now, true, i.inbound_spi)
            .unwrap_or_default();
        let recent_out = if i.outbound_installed {
            self.traffic_history
                .recent(now, false, i.outbound_spi)
                .unwrap_or_default()
        } else {
            Default::default()
        };
        let idle = |r: super::traffic::Recent| r.idle_ms.map(|ms| ms as f64 / 1000.0);
        ChildSaReport {
            in_spi: esp_spi(i.inbound_spi),
            out_spi: esp_spi(i.outbound_spi),
            in_in_dataplane: None,
            out_in_dataplane: None,
            outbound_installed: i.outbound_installed,
            suite: info.map(|x| x.proposal.to_string()),
            in_bytes,
            in_packets,
            out_bytes,
            out_packets,
            in_packets_60s: recent_in.packets_window,
            out_packets_60s: recent_out.packets_window,
            in_idle_s: idle(recent_in),
            out_idle_s: idle(recent_out),
            up_s: since(now, i.since),
            rekey_in_s: info.and_then(|x| x.rekey_at).map(|t| until(now, t)),
            expire_in_s: info.and_then(|x| x.expire_at).map(|t| until(now, t)),
            local_ts: i.local_ts.iter().map(crate::ike::child::show_ts).collect(),
            remote_ts: i.remote_ts.iter().map(crate::ike::child::show_ts).collect(),
            worker: i.outbound.resource,
        }
    }

    /// The shell could not send an IKE datagram to `peer` (e.g. `sendto`: Network is
    /// unreachable — no route to the peer). Counted per (peer, error) for `vpnctl status`
    /// and `vpnctl diagnose`, logged rate-limited: the retransmissions would repeat it.
    pub fn send_failed(&mut self, now: u64, peer: SocketAddr, error: &str) {
        let at = self.unix_ms(now);
        let p = peer.to_string();
        let count = match self
            .send_errors
            .iter_mut()
            .find(|x| x.peer == p && x.error == error)
        {
            Some(x) => {
                x.count += 1;
                x.last_unix_ms = at;
                x.count
            }
            None => {
                if self.send_errors.len() == SEND_ERRORS {
                    // Make room: the pair not seen for longest goes.
                    if let Some(i) = (0..self.send_errors.len())
                        .min_by_key(|&i| self.send_errors[i].last_unix_ms)
                    {
                        self.send_errors.remove(i);
                    }
                }
                self.send_errors.push(SendError {
                    peer: p,
                    error: error.to_string(),
                    count: 1,
                    last_unix_ms: at,
                });
                1
            }
        };
        if self.limiter.allow(now, "send error") {
            let conn = self
                .conns
                .iter()
                .find(|c| c.cfg.remote_addrs.contains(&peer.ip()))
                .map(|c| c.name().to_string());
            self.event(
                now,
                Level::WARN,
                "event",
                EventAt {
                    conn,
                    peer: Some(peer),
                    ike_spi: None,
                },
                format!(
                    "cannot send an IKE message to {peer}: {error} ({count} time(s); is there a route to the peer?)"
                ),
            );
        }
    }

    /// Keep the outcome of a reload for `vpnctl status`.
    pub(super) fn reloaded(&mut self, now: u64, ok: bool, message: &str) {
        self.last_reload = Some(ReloadOutcome {
            at_unix_ms: self.unix_ms(now),
            ok,
            message: message.to_string(),
        });
    }
}
