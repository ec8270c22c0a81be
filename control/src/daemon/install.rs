//! The dataplane side of the daemon core: installing and removing Child SAs and their
//! policies, following a NAT-mapped peer, records from the dataplane, and replay.

use dataplane::esp::sa::SaEvent;
use dataplane::sa::Direction;
use dataplane::shm::records::DataplaneRecord;
use tracing::{debug, info, warn};

use super::conn::InstalledChild;
use super::dataplane_ops::{acquire_reqid, narrowed_policies, sa_installs, DpOp};
use super::{ts_list, Daemon};
use crate::ike::sa::{ChildRequest, ChildSa, Role};

impl Daemon {
    /// A Child SA is up (fresh, or the successor of a rekey): inbound SA first, then — if
    /// `outbound_now` — the outbound SA (the newest of a reqid carries its traffic: one
    /// atomic swap for every worker), then its narrowed policies; then what it replaces
    /// goes. A rekey responder passes `outbound_now = false`: the outbound SA follows with
    /// [`Daemon::switch_outbound`] once the initiator deleted the old SA (RFC 7296 §2.8:
    /// until then the initiator may not have the new inbound SA).
    pub(super) fn install(
        &mut self,
        now: u64,
        ci: usize,
        ike_spi: u64,
        child: ChildSa,
        outbound_now: bool,
    ) {
        let Some(k) = self.conns[ci].child_by_name(&child.name) else {
            warn!(conn = %self.conns[ci].name(), child = %child.name, "a Child SA for a child we do not know: not installed");
            return;
        };
        let Some(e) = self.sas.get(&ike_spi) else {
            return;
        };
        let (nat, local, remote) = (e.sa.nat(), e.sa.local(), e.sa.remote());
        // A responder's new Child SA for a child another IKE SA still carries (the peer
        // reauthenticates, make-before-break): the peer installs its inbound SA only when our
        // answer arrives, so ours sends on the old SA until the peer deletes it.
        let outbound_now = outbound_now
            && !(e.sa.role() == Role::Responder
                && self.conns[ci].children[k]
                    .installed
                    .iter()
                    .any(|i| i.ike_spi != ike_spi && i.outbound_installed));
        let reqid = self.conns[ci].children[k].cfg.reqid;
        let (mut inbound, mut outbound) = sa_installs(&child, reqid, nat, local, remote, false);
        // RFC 4301 §4.4.2.1: byte and packet limits are the dataplane's to count; the soft
        // ones spread at random per SA, like the time limits.
        let limits = self.conns[ci].cfg.connection.children[k]
            .lifetime
            .dataplane(&mut *self.rng);
        inbound.config.lifetime = limits;
        outbound.config.lifetime = limits;
        let window = self.conns[ci].children[k].cfg.replay_window;
        inbound.config.replay_window = (window > 0).then_some(window);
        self.dp(DpOp::AddSa(Box::new(inbound.clone())));
        if outbound_now {
            self.dp(DpOp::AddSa(Box::new(outbound.clone())));
        }
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
            outbound_installed: outbound_now,
            since: now,
        });
        c.last_failure = None;
        if !c.stale.is_empty() {
            c.stale_until = Some(now + self.opts.stale_grace_ms);
        }
        let line = format!(
            "Child SA {} installed: in {:#010x}, out {:#010x}, {} === {}, {}, reqid {reqid}{}{}",
            child.name,
            child.inbound_spi,
            child.outbound_spi,
            ts_list(&child.local_ts),
            ts_list(&child.remote_ts),
            child.proposal,
            match child.resource {
                Some(w) => format!(", bound to worker {w} (RFC 9611)"),
                None => String::new(),
            },
            if outbound_now {
                ""
            } else {
                "; outbound after the peer deletes the old SA"
            }
        );
        let at = self.at_sa(ike_spi);
        self.event(now, tracing::Level::INFO, "event", at, line);
        for op in ops {
            self.dp(op);
        }
    }

    /// RFC 9611 §4: the fallback Child SA of child `name` is up on IKE SA `ike_spi` and the
    /// peer does per-resource Child SAs: ask for one per resource (dataplane worker), each
    /// with the fallback's selectors. Those the peer refuses (TS_MAX_QUEUE) are not retried;
    /// their workers send on the fallback.
    pub(super) fn negotiate_resources(&mut self, now: u64, ci: usize, ike_spi: u64, name: &str) {
        let Some(k) = self.conns[ci].child_by_name(name) else {
            return;
        };
        let n = self.conns[ci].cfg.connection.children[k].per_resource;
        for r in 0..n {
            let inbound_spi = self.spis.alloc(&mut *self.rng);
            let req = ChildRequest {
                child: k,
                inbound_spi,
            };
            let Some(e) = self.sas.get_mut(&ike_spi) else {
                self.spis.release(inbound_spi);
                return;
            };
            if let Err(err) = e.sa.create_resource_child(now, req, r, &mut *self.rng) {
                self.spis.release(inbound_spi);
                let line = format!("cannot ask for per-resource Child SA {r} of {name}: {err}");
                let at = self.at_sa(ike_spi);
                self.event(now, tracing::Level::WARN, "event", at, line);
                return;
            }
        }
        let line = format!("child {name}: the peer does per-resource Child SAs (RFC 9611): asking for {n}, one per dataplane worker");
        let at = self.at_sa(ike_spi);
        self.event(now, tracing::Level::INFO, "event", at, line);
    }

    /// A rekey made `child`, replacing the Child SA with inbound SPI `replaces`.
    pub(super) fn install_rekeyed(
        &mut self,
        now: u64,
        ci: usize,
        ike_spi: u64,
        replaces: u32,
        child: ChildSa,
        outbound_now: bool,
    ) {
        let name = child.name.clone();
        let new_inbound = child.inbound_spi;
        self.install(now, ci, ike_spi, child, outbound_now);
        if let Some(k) = self.conns[ci].child_by_name(&name) {
            let c = &mut self.conns[ci].children[k];
            c.rekeys += 1;
            let line = format!(
                "Child SA {name} rekeyed: {replaces:#010x} -> {new_inbound:#010x} (rekey {})",
                c.rekeys
            );
            let at = self.at_sa(ike_spi);
            self.event(now, tracing::Level::INFO, "event", at, line);
        }
        if outbound_now {
            self.retire_outbound(ci, &name, replaces);
        }
    }

    /// The old outbound SA of a rekey goes once its successor carries the traffic.
    fn retire_outbound(&mut self, ci: usize, name: &str, old_inbound: u32) {
        let Some(k) = self.conns[ci].child_by_name(name) else {
            return;
        };
        let c = &mut self.conns[ci].children[k];
        let reqid = c.cfg.reqid;
        let Some(old) = c
            .installed
            .iter_mut()
            .find(|i| i.inbound_spi == old_inbound && i.outbound_installed)
        else {
            return;
        };
        old.outbound_installed = false;
        let spi = old.outbound_spi;
        self.dp(DpOp::DeleteSa {
            direction: Direction::Outbound,
            spi,
            reqid,
        });
    }

    /// Make the Child SA with inbound SPI `inbound_spi` carry the child's outbound traffic
    /// (a rekey responder, once the initiator deleted the old SA).
    pub(super) fn switch_outbound(&mut self, ci: usize, name: &str, inbound_spi: u32) {
        let Some(k) = self.conns[ci].child_by_name(name) else {
            return;
        };
        let c = &mut self.conns[ci].children[k];
        let Some(i) = c
            .installed
            .iter_mut()
            .find(|i| i.inbound_spi == inbound_spi)
        else {
            return;
        };
        if i.outbound_installed {
            return;
        }
        i.outbound_installed = true;
        let out = i.outbound.clone();
        debug!(child = %name, outbound_spi = format_args!("{:#010x}", out.config.spi), "outbound switched to the rekeyed Child SA");
        self.dp(DpOp::AddSa(Box::new(out)));
    }

    /// The Child SA a rekey replaced is deleted (RFC 7296 §2.8): its successor takes the
    /// outbound traffic if it has not yet (never a moment without an outbound SA), the old
    /// outbound SA goes now, the old inbound SA after a grace period for packets in flight
    /// and reordered.
    pub(super) fn retire(&mut self, now: u64, ci: usize, name: &str, inbound_spi: u32) {
        let Some(k) = self.conns[ci].child_by_name(name) else {
            return;
        };
        let successor = {
            let c = &self.conns[ci].children[k];
            let any_out = c
                .installed
                .iter()
                .any(|i| i.inbound_spi != inbound_spi && i.outbound_installed);
            if any_out {
                None
            } else {
                c.installed
                    .iter()
                    .rev()
                    .find(|i| i.inbound_spi != inbound_spi)
                    .map(|i| i.inbound_spi)
            }
        };
        if let Some(s) = successor {
            self.switch_outbound(ci, name, s);
        }
        self.retire_outbound(ci, name, inbound_spi);
        let c = &mut self.conns[ci].children[k];
        let Some(pos) = c
            .installed
            .iter()
            .position(|i| i.inbound_spi == inbound_spi)
        else {
            return;
        };
        c.installed.remove(pos);
        let until = now + self.opts.rekey_grace_ms;
        c.retiring.push((inbound_spi, until));
        if c.installed.is_empty() {
            // No successor (it failed meanwhile): nothing protects this child's traffic any
            // more; the base policy drops it.
            for p in std::mem::take(&mut c.narrowed) {
                self.actions
                    .push_back(super::Action::Dataplane(DpOp::DeletePolicy(p.id)));
            }
        }
    }

    /// Delete the retired inbound SAs whose grace period is over.
    pub(super) fn expire_retiring(&mut self, now: u64) {
        let mut gone = Vec::new();
        for c in &mut self.conns {
            for k in &mut c.children {
                let reqid = k.cfg.reqid;
                k.retiring.retain(|&(spi, until)| {
                    if until > now {
                        return true;
                    }
                    gone.push((Direction::Inbound, spi, reqid));
                    false
                });
            }
        }
        self.delete_sas(gone);
    }

    /// A connection being removed or replaced (reload): the inbound SAs its rekeys retired
    /// and still keep for packets in flight, and the SAs and narrowed policies it inherited
    /// from a previous iked, go now, with its IKE SAs. Its state is about to be dropped, and
    /// with it the only record of them: nothing would ever delete them from the dataplane
    /// (the chaos soak found a retired inbound SA held for good after a reload).
    pub(super) fn release_leftovers(&mut self, ci: usize) {
        let mut gone = Vec::new();
        let mut policies = Vec::new();
        for k in &mut self.conns[ci].children {
            let reqid = k.cfg.reqid;
            gone.extend(
                k.retiring
                    .drain(..)
                    .map(|(spi, _)| (Direction::Inbound, spi, reqid)),
            );
            k.stale_until = None;
            gone.extend(k.stale.drain(..).map(|s| (s.direction(), s.spi, reqid)));
            policies.append(&mut k.stale_policies);
        }
        self.delete_sas(gone);
        for id in policies {
            self.dp(DpOp::DeletePolicy(id));
        }
    }

    /// Delete SAs (direction, SPI, reqid) that no Child SA state refers to any more from
    /// the dataplane, and give their SPIs back: the one way retired, inherited and
    /// released SAs leave.
    pub(super) fn delete_sas(&mut self, sas: Vec<(Direction, u32, u32)>) {
        for (direction, spi, reqid) in sas {
            self.dp(DpOp::DeleteSa {
                direction,
                spi,
                reqid,
            });
            self.spis.release(spi);
            self.activity.remove(&spi);
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
            } else if !c.installed.iter().any(|i| i.outbound_installed) {
                // A successor waiting for its outbound turn (a reauthentication's): it
                // takes the traffic before the old outbound SA goes.
                if let Some(next) = c.installed.last_mut() {
                    next.outbound_installed = true;
                    ops.push(DpOp::AddSa(Box::new(next.outbound.clone())));
                }
            }
            if gone.outbound_installed {
                ops.push(DpOp::DeleteSa {
                    direction: Direction::Outbound,
                    spi: gone.outbound_spi,
                    reqid: c.cfg.reqid,
                });
            }
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
                if i.outbound_installed {
                    ops.push(DpOp::AddSa(Box::new(out)));
                }
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
                self.sa_event(now, *direction, *reqid, *event);
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

    /// The dataplane counted an SA to a limit (RFC 4301 §4.4.2.1, RFC 4303 §3.3.3): soft
    /// (or sequence numbers running short) → rekey; hard → the dataplane stopped using it,
    /// so delete it unless a rekey already replaced it.
    fn sa_event(&mut self, now: u64, direction: Direction, reqid: u32, event: SaEvent) {
        let (spi, hard, what) = match event {
            SaEvent::SeqNearlyExhausted { spi } => {
                (spi, false, "sequence numbers running short".to_string())
            }
            SaEvent::SoftLifetime { spi, kind } => (spi, false, format!("soft {kind:?} limit")),
            SaEvent::SeqExhausted { spi } => (spi, true, "sequence numbers exhausted".to_string()),
            SaEvent::HardLifetime { spi, kind } => (spi, true, format!("hard {kind:?} limit")),
        };
        let inbound = direction == Direction::Inbound;
        let Some((ci, k)) = self.child_of_reqid(reqid) else {
            debug!(
                reqid,
                spi = format_args!("{spi:#010x}"),
                "SA event for a reqid no child has: {what}"
            );
            return;
        };
        let c = &self.conns[ci].children[k];
        let Some(pos) = c.installed.iter().position(|i| {
            if inbound {
                i.inbound_spi == spi
            } else {
                i.outbound_spi == spi
            }
        }) else {
            // Already replaced by a rekey or gone.
            debug!(
                reqid,
                spi = format_args!("{spi:#010x}"),
                "SA event for an SA no longer current: {what}"
            );
            return;
        };
        let (ike_spi, inbound_spi) = (c.installed[pos].ike_spi, c.installed[pos].inbound_spi);
        let newest = pos + 1 == c.installed.len();
        let name = c.cfg.name.clone();
        if !self.sas.contains_key(&ike_spi) || (hard && !newest) {
            // Gone, or (hard) a rekey has already made its successor; the old one goes
            // with its Delete.
            return;
        }
        let at = self.at_sa(ike_spi);
        if hard {
            self.event(now, tracing::Level::WARN, "event", at, format!("the dataplane stopped using Child SA {name} {spi:#010x} ({what}) before a rekey replaced it: deleting it; a new one is negotiated if the child is wanted"));
            if let Some(e) = self.sas.get_mut(&ike_spi) {
                e.sa.expire_child(now, inbound_spi, &mut *self.rng);
            }
        } else {
            self.event(
                now,
                tracing::Level::INFO,
                "event",
                at.clone(),
                format!("rekeying Child SA {name} {spi:#010x}: {what}"),
            );
            let r = match self.sas.get_mut(&ike_spi) {
                Some(e) => {
                    e.sa.rekey_child(now, inbound_spi, &mut *self.rng, &mut self.spis)
                }
                None => Ok(()),
            };
            if let Err(err) = r {
                self.event(
                    now,
                    tracing::Level::WARN,
                    "event",
                    at,
                    format!("cannot rekey Child SA {name}: {err}"),
                );
            }
        }
        self.settle(now, ike_spi);
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
                    if i.outbound_installed {
                        ops.push(DpOp::AddSa(Box::new(i.outbound.clone())));
                    }
                }
                ops.extend(k.narrowed.iter().cloned().map(DpOp::AddPolicy));
            }
        }
        for op in ops {
            self.dp(op);
        }
    }

    /// Packet and byte counts from the dataplane's counters: DPD (a peer that sends ESP is
    /// alive) and `vpnctl list`.
    pub fn handle_sa_counters(&mut self, now: u64, sas: &[super::SaTraffic]) {
        // When this iked installed an SA first read now (the outbound one of a rekey
        // responder later than `since`, with no packets before: the same baseline of 0
        // holds). Looked up only on an SA's first reading, which is rare.
        let conns = &self.conns;
        self.traffic_history.record(
            now,
            sas.iter().map(|s| (s.inbound, s.spi, s.packets)),
            |inbound, spi| {
                conns
                    .iter()
                    .flat_map(|c| &c.children)
                    .flat_map(|k| &k.installed)
                    .find(|i| {
                        spi == if inbound {
                            i.inbound_spi
                        } else {
                            i.outbound_spi
                        }
                    })
                    .map(|i| i.since)
            },
        );
        self.traffic.clear();
        for s in sas {
            self.traffic
                .insert((s.inbound, s.spi), (s.packets, s.bytes));
            if !s.inbound {
                continue;
            }
            let e = self.activity.entry(s.spi).or_insert((s.packets, now));
            if s.packets != e.0 {
                *e = (s.packets, now);
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
