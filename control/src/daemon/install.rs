//! The dataplane side of the daemon core: installing and removing Child SAs and their
//! policies, following a NAT-mapped peer, records from the dataplane, and replay.

use dataplane::esp::sa::SaEvent;
use dataplane::sa::Direction;
use dataplane::shm::records::DataplaneRecord;
use tracing::{debug, info, warn};

use super::conn::InstalledChild;
use super::dataplane_ops::{acquire_reqid, narrowed_policies, sa_installs, DpOp};
use super::{ts_list, Daemon};
use crate::ike::sa::ChildSa;

impl Daemon {
    /// A Child SA is up: inbound SA, outbound SA (the newest of a reqid carries its
    /// traffic), then its narrowed policies; then what it replaces goes.
    pub(super) fn install(&mut self, now: u64, ci: usize, ike_spi: u64, child: ChildSa) {
        let Some(k) = self.conns[ci].child_by_name(&child.name) else {
            warn!(conn = %self.conns[ci].name(), child = %child.name, "a Child SA for a child we do not know: not installed");
            return;
        };
        let Some(e) = self.sas.get(&ike_spi) else {
            return;
        };
        let (nat, local, remote) = (e.sa.nat(), e.sa.local(), e.sa.remote());
        let reqid = self.conns[ci].children[k].cfg.reqid;
        let (inbound, outbound) = sa_installs(&child, reqid, nat, local, remote, false);
        self.dp(DpOp::AddSa(Box::new(inbound.clone())));
        self.dp(DpOp::AddSa(Box::new(outbound.clone())));
        let policies = narrowed_policies(reqid, &child.local_ts, &child.remote_ts);
        let c = &mut self.conns[ci].children[k];
        let mut ops = Vec::new();
        if c.narrowed != policies {
            // Same ids with other selectors must go first; the base policy covers the gap
            // (dropping, never in clear).
            for old in std::mem::take(&mut c.narrowed) {
                ops.push(DpOp::DeletePolicy(old.id));
            }
            for id in c.stale_policies.drain(..) {
                ops.push(DpOp::DeletePolicy(id));
            }
            for p in &policies {
                ops.push(DpOp::AddPolicy(p.clone()));
            }
            c.narrowed = policies;
        }
        if let Some((_, inb)) = c.negotiating {
            if inb == child.inbound_spi {
                c.negotiating = None;
            }
        }
        c.installed.push(InstalledChild {
            ike_spi,
            inbound_spi: child.inbound_spi,
            outbound_spi: child.outbound_spi,
            local_ts: child.local_ts.clone(),
            remote_ts: child.remote_ts.clone(),
            inbound,
            outbound,
            since: now,
        });
        c.last_failure = None;
        if !c.stale.is_empty() {
            c.stale_until = Some(now + self.opts.stale_grace_ms);
        }
        info!(
            conn = %self.conns[ci].name(),
            child = %child.name,
            reqid,
            inbound_spi = format_args!("{:#010x}", child.inbound_spi),
            outbound_spi = format_args!("{:#010x}", child.outbound_spi),
            local_ts = %ts_list(&child.local_ts),
            remote_ts = %ts_list(&child.remote_ts),
            "Child SA installed"
        );
        for op in ops {
            self.dp(op);
        }
    }

    /// A Child SA is gone: its narrowed policies (if no other Child SA of the child is
    /// up, so its traffic falls to the dropping base policy), then its SAs.
    pub(super) fn uninstall(&mut self, ci: usize, ike_spi: u64, inbound_spi: u32) {
        let mut ops = Vec::new();
        for c in &mut self.conns[ci].children {
            let Some(pos) = c
                .installed
                .iter()
                .position(|i| i.ike_spi == ike_spi && i.inbound_spi == inbound_spi)
            else {
                continue;
            };
            let gone = c.installed.remove(pos);
            if c.installed.is_empty() {
                for p in std::mem::take(&mut c.narrowed) {
                    ops.push(DpOp::DeletePolicy(p.id));
                }
            }
            ops.push(DpOp::DeleteSa {
                direction: Direction::Outbound,
                spi: gone.outbound_spi,
                reqid: c.cfg.reqid,
            });
            ops.push(DpOp::DeleteSa {
                direction: Direction::Inbound,
                spi: gone.inbound_spi,
                reqid: c.cfg.reqid,
            });
            self.spis.release(gone.inbound_spi);
            self.activity.remove(&gone.inbound_spi);
        }
        for op in ops {
            self.dp(op);
        }
    }

    /// The peer's address or port changed: re-point the outbound SAs of its children.
    pub(super) fn follow_peer(&mut self, ci: usize, ike_spi: u64) {
        let Some(e) = self.sas.get(&ike_spi) else {
            return;
        };
        let (nat, local, remote) = (e.sa.nat(), e.sa.local(), e.sa.remote());
        let mut ops = Vec::new();
        for c in &mut self.conns[ci].children {
            for i in c.installed.iter_mut().filter(|i| i.ike_spi == ike_spi) {
                let mut out = i.outbound.clone();
                out.update = true;
                if let dataplane::esp::Mode::Tunnel { remote: r, .. } = &mut out.config.mode {
                    *r = remote.ip();
                }
                out.config.udp_encap = nat.then_some(dataplane::esp::UdpEncap {
                    src_port: local.port(),
                    dst_port: remote.port(),
                });
                i.outbound = out.clone();
                i.outbound.update = false;
                ops.push(DpOp::AddSa(Box::new(out)));
            }
        }
        for op in ops {
            self.dp(op);
        }
    }

    /// A record from the dataplane.
    pub fn handle_dataplane(&mut self, now: u64, rec: &DataplaneRecord) {
        match rec {
            DataplaneRecord::Hello {
                boot_id,
                sas,
                policies,
            } => {
                info!(
                    boot_id,
                    sas, policies, "the dataplane (re)started: replaying every policy and Child SA"
                );
                self.replay();
            }
            DataplaneRecord::Acquire { reqid, flow, .. } => {
                let reqid = acquire_reqid(*reqid);
                let Some((ci, k)) = self.child_of_reqid(reqid) else {
                    if self.limiter.allow(now, "acquire unknown") {
                        debug!(reqid, "acquire for a reqid no child has (a policy of a previous configuration)");
                    }
                    return;
                };
                let conn = self.conns[ci].name().to_string();
                let c = &mut self.conns[ci].children[k];
                if !c.installed.is_empty() || c.negotiating.is_some() {
                    return; // packets that raced the install
                }
                if c.trapped {
                    info!(conn = %conn, child = %c.cfg.name, src = %flow.src, dst = %flow.dst,
                        "acquire: traffic for a trapped connection; initiating");
                    c.wanted = true;
                    self.ensure_up(now, ci);
                } else if self.limiter.allow(now, "acquire down") {
                    info!(conn = %conn, child = %c.cfg.name, src = %flow.src, dst = %flow.dst,
                        "traffic for a child that is down is dropped (fail-closed); `vpnctl up` brings it up");
                }
            }
            DataplaneRecord::SaEvent {
                direction,
                reqid,
                event,
            } => {
                // Lifetimes are the next issue's (rekeying); until then say what happened.
                let ev: &SaEvent = event;
                warn!(
                    ?direction,
                    reqid,
                    "dataplane SA event {ev:?}: not acted on yet (rekeying is not implemented)"
                );
            }
            DataplaneRecord::UnknownSpi { spi, src, dst } => {
                if self.limiter.allow(now, "unknown esp spi") {
                    info!(%src, %dst, "ESP for SPI {spi:#010x}, which the dataplane does not hold (dropped there)");
                }
            }
            DataplaneRecord::Ack { .. }
            | DataplaneRecord::ResyncBegin { .. }
            | DataplaneRecord::HeldSa { .. }
            | DataplaneRecord::HeldPolicy { .. }
            | DataplaneRecord::ResyncEnd { .. } => {
                debug!("dataplane record for the ring shell, not the core: {rec:?}");
            }
        }
    }

    /// Everything the dataplane should hold: base policies, each installed Child SA and
    /// its narrowed policies. Sent after a dataplane Hello (it restarted empty; sequence
    /// numbers resume above the leases it persisted).
    pub fn replay(&mut self) {
        let mut ops = Vec::new();
        for c in &self.conns {
            ops.extend(c.base_policies().into_iter().map(DpOp::AddPolicy));
            for k in &c.children {
                for i in &k.installed {
                    ops.push(DpOp::AddSa(Box::new(i.inbound.clone())));
                    ops.push(DpOp::AddSa(Box::new(i.outbound.clone())));
                }
                ops.extend(k.narrowed.iter().cloned().map(DpOp::AddPolicy));
            }
        }
        for op in ops {
            self.dp(op);
        }
    }

    /// Inbound packet counts from the dataplane's counters (DPD: a peer that sends ESP is
    /// alive).
    pub fn handle_sa_counters(&mut self, now: u64, inbound: &[(u32, u64)]) {
        for &(spi, packets) in inbound {
            let e = self.activity.entry(spi).or_insert((packets, now));
            if packets != e.0 {
                *e = (packets, now);
            }
        }
    }

    pub(super) fn last_inbound(&self, ike_spi: u64, conn: usize) -> u64 {
        self.conns[conn]
            .children
            .iter()
            .flat_map(|c| &c.installed)
            .filter(|i| i.ike_spi == ike_spi)
            .filter_map(|i| self.activity.get(&i.inbound_spi).map(|a| a.1))
            .max()
            .unwrap_or(0)
    }
}
