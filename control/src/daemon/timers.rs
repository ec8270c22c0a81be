//! The daemon core's clock: retransmissions, half-open expiry, DPD, NAT keepalives,
//! retries, inherited SAs, and log summaries.

use tracing::{debug, info};

use super::{ratelimit, EventAt};

use super::dataplane_ops::DpOp;
use super::endpoint::IkeDrop;
use super::{Action, Daemon};
use crate::ike::sa::Phase;

impl Daemon {
    /// When [`Daemon::handle_timeout`] should next run.
    pub fn poll_timeout(&self) -> Option<u64> {
        let mut t: Option<u64> = None;
        let mut at = |x: Option<u64>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        for (spi, e) in &self.sas {
            at(e.sa.poll_timeout());
            at(e.next_keepalive);
            if e.sa.phase() == Phase::Established {
                at(e.reauth_at);
            }
            if e.half_open_from.is_some() {
                at(Some(e.created + self.opts.half_open_timeout_ms));
            }
            if e.sa.phase() == Phase::Established {
                if let Some(ci) = self.conn_index(&e.conn) {
                    let delay = self.conns[ci].cfg.dpd_delay_ms;
                    if delay > 0 {
                        let idle_since = e.sa.last_heard().max(self.last_inbound(*spi, ci));
                        at(Some((idle_since + delay).max(e.dpd_not_before)));
                    }
                }
            }
        }
        for c in &self.conns {
            at(c.retry_at);
            for k in &c.children {
                at(k.stale_until);
                at(k.retiring.iter().map(|r| r.1).min());
            }
        }
        at(self.stale_deadline);
        at(self.limiter.next_summary());
        t
    }

    pub fn handle_timeout(&mut self, now: u64) {
        let due: Vec<u64> = self
            .sas
            .iter()
            .filter(|(_, e)| e.sa.poll_timeout().is_some_and(|t| t <= now))
            .map(|(s, _)| *s)
            .collect();
        for spi in due {
            if let Some(e) = self.sas.get_mut(&spi) {
                e.sa.handle_timeout(now, &mut *self.rng, &mut self.spis);
                self.settle(now, spi);
            }
        }
        // Half-open responder SAs that never saw IKE_AUTH (RFC 7296 §2.6: bounded state).
        let expired: Vec<u64> = self
            .sas
            .iter()
            .filter(|(_, e)| {
                e.half_open_from.is_some() && now >= e.created + self.opts.half_open_timeout_ms
            })
            .map(|(s, _)| *s)
            .collect();
        for spi in expired {
            *self
                .counters
                .drops
                .entry(IkeDrop::HalfOpenExpired.name())
                .or_default() += 1;
            self.forget(spi);
        }
        self.dpd(now);
        self.reauth_due(now);
        self.keepalives(now);
        let retry: Vec<usize> = (0..self.conns.len())
            .filter(|&ci| self.conns[ci].retry_at.is_some_and(|t| t <= now))
            .collect();
        for ci in retry {
            self.conns[ci].retry_at = None;
            self.ensure_up(now, ci);
        }
        self.expire_stale(now);
        self.expire_retiring(now);
        for (kind, n, period) in self.limiter.summaries(now) {
            let line = ratelimit::summary_line(kind, n, period);
            self.event(now, tracing::Level::WARN, "event", EventAt::default(), line);
        }
    }

    fn dpd(&mut self, now: u64) {
        let mut probe = Vec::new();
        for (spi, e) in &self.sas {
            if e.sa.phase() != Phase::Established {
                continue;
            }
            let Some(ci) = self.conn_index(&e.conn) else {
                continue;
            };
            let cfg = &self.conns[ci].cfg;
            if cfg.dpd_delay_ms == 0 {
                continue;
            }
            let idle_since = e.sa.last_heard().max(self.last_inbound(*spi, ci));
            if now >= idle_since + cfg.dpd_delay_ms && now >= e.dpd_not_before {
                probe.push((*spi, cfg.dpd_timeout_ms, cfg.dpd_delay_ms));
            }
        }
        for (spi, timeout, delay) in probe {
            if let Some(e) = self.sas.get_mut(&spi) {
                e.dpd_not_before = now + delay;
                if e.sa.dpd_probe(now, timeout, &mut *self.rng) {
                    self.counters.dpd_probes += 1;
                    debug!(conn = %e.conn, "no traffic from the peer for dpd_delay: liveness check (RFC 7296 §2.4)");
                }
                self.settle(now, spi);
            }
        }
    }

    fn keepalives(&mut self, now: u64) {
        let mut out = Vec::new();
        for e in self.sas.values_mut() {
            if let Some(t) = e.next_keepalive {
                if t <= now {
                    e.next_keepalive = Some(now + self.opts.nat_keepalive_ms);
                    // RFC 3948 §2.3: one 0xff byte, to the peer's NAT-T port.
                    out.push((e.sa.local(), e.sa.remote()));
                }
            }
        }
        for (from, to) in out {
            self.actions.push_back(Action::Send {
                from,
                to,
                data: vec![0xff],
            });
        }
    }

    fn expire_stale(&mut self, now: u64) {
        let all = self.stale_deadline.is_some_and(|t| t <= now);
        if all {
            self.stale_deadline = None;
        }
        let mut gone = Vec::new();
        let mut policies = Vec::new();
        for c in &mut self.conns {
            for k in &mut c.children {
                if all || k.stale_until.is_some_and(|t| t <= now) {
                    k.stale_until = None;
                    let reqid = k.cfg.reqid;
                    gone.extend(k.stale.drain(..).map(|s| (s.direction(), s.spi, reqid)));
                    if all && k.installed.is_empty() {
                        policies.append(&mut k.stale_policies);
                    }
                }
            }
        }
        if !gone.is_empty() || !policies.is_empty() {
            info!(
                sas = gone.len(),
                policies = policies.len(),
                "removing SAs inherited from the previous iked"
            );
        }
        self.delete_sas(gone);
        for id in policies {
            self.dp(DpOp::DeletePolicy(id));
        }
    }

    /// Stop: delete every IKE SA (the peers are told). Policies stay: traffic stays
    /// dropped while no daemon runs.
    pub fn shutdown(&mut self, now: u64) {
        let spis: Vec<u64> = self.sas.keys().copied().collect();
        for spi in spis {
            if let Some(e) = self.sas.get_mut(&spi) {
                e.sa.delete(now, &mut *self.rng);
            }
            self.settle(now, spi);
        }
    }
}
