//! The one path by which SAs and policies enter the dataplane, whoever asks: records from
//! the ring (iked, `vpnctl`) and the static SA file (encoded into the same records first).
//!
//! The installer runs on the dataplane's control thread, the single writer of the SA
//! database. It validates each record, applies it, keeps the XDP program's steering
//! prefixes equal to the union of the policies' destinations, and answers with an Ack
//! naming what was wrong when it refuses. It also answers resync requests with what it
//! holds, so a restarted controller can reconcile.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use crate::esp::{InboundSa, OutboundSa, SaError, LEASE_STEP};
use crate::policy::spd::{PrefixRefs, SpdAction, SpdError};
use crate::sa::sadb::{SaDb, SpdChange};
use crate::sa::satable::TableError;
use crate::sa::Direction;
use crate::shm::counters::{CountersFile, CountersSnapshot, WorkerCounters};
use crate::shm::records::{self, status, ControlRecord, DataplaneRecord, RecordError, SaInstall};

/// Where steering prefixes go: the XDP program's LPM map (or nowhere, in tests).
pub trait Steering {
    fn add(&mut self, prefix: (IpAddr, u8)) -> Result<(), String>;
    fn remove(&mut self, prefix: (IpAddr, u8)) -> Result<(), String>;
    /// The controller flushed every policy: drop steering this process did not install
    /// (prefixes a previous dataplane left pinned, kept protected until now).
    fn flushed(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// No XDP program (in-memory tests, benchmarks).
#[derive(Debug, Default)]
pub struct NoSteering;
impl Steering for NoSteering {
    fn add(&mut self, _: (IpAddr, u8)) -> Result<(), String> {
        Ok(())
    }
    fn remove(&mut self, _: (IpAddr, u8)) -> Result<(), String> {
        Ok(())
    }
}

/// Why a record was refused (sent back in the Ack).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    #[error("bad record: {0}")]
    Record(#[from] RecordError),
    #[error("SA {spi:#010x}: {source}")]
    Sa { spi: u32, source: SaError },
    #[error("{0}")]
    Table(#[from] TableError),
    #[error("{0}")]
    Spd(#[from] SpdError),
    #[error("reqid {0} is beyond the outbound table ({1} entries)")]
    Reqid(u32, usize),
    #[error("outbound SA {spi:#010x} with reqid {reqid} is already installed")]
    DuplicateOutbound { spi: u32, reqid: u32 },
    #[error("outbound SA {spi:#010x} with reqid {reqid} is not installed")]
    UnknownOutbound { spi: u32, reqid: u32 },
    #[error("XDP steering map: {0}")]
    Steering(String),
    #[error("the counters file has no free SA slot (all {0} in use): restart the dataplane with a larger --counter-slots")]
    NoCounterSlot(usize),
}

impl InstallError {
    pub fn status(&self) -> u16 {
        match self {
            InstallError::Record(_) => status::BAD_RECORD,
            InstallError::Table(TableError::NotFound(_))
            | InstallError::Spd(SpdError::NotFound(_))
            | InstallError::UnknownOutbound { .. } => status::NOT_FOUND,
            InstallError::Table(TableError::Duplicate(_))
            | InstallError::Spd(SpdError::Duplicate(_))
            | InstallError::DuplicateOutbound { .. } => status::DUPLICATE,
            _ => status::REFUSED,
        }
    }
}

/// What the installer knows about an installed SA (writer side only).
#[derive(Debug, Clone)]
pub struct Installed {
    pub reqid: u32,
    pub name: Option<String>,
    /// Its slot in the counters file.
    pub slot: Option<usize>,
}

/// Sequence state a previous run of the dataplane left in its counters file.
#[derive(Debug, Default, Clone)]
pub struct Restore {
    /// (reqid, SPI) → no outbound number above this was used.
    outbound: HashMap<(u32, u32), u64>,
    /// SPI → the inbound window's top.
    inbound: HashMap<u32, u64>,
}

impl Restore {
    pub fn from_snapshot(s: &CountersSnapshot) -> Restore {
        let mut r = Restore::default();
        for e in &s.sas {
            if e.inbound {
                r.inbound.insert(e.spi, e.seq);
            } else {
                r.outbound.insert((e.reqid, e.spi), e.lease.max(e.seq));
            }
        }
        r
    }
    pub fn len(&self) -> usize {
        self.outbound.len() + self.inbound.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An installed outbound SA, as the installer keeps it.
struct OutboundEntry {
    inst: Installed,
    sa: Arc<OutboundSa>,
    /// When it was installed (the installer's counter): if the SA carrying a reqid's
    /// traffic is deleted, the most recently installed one left takes over.
    order: u64,
    /// The worker it is bound to (RFC 9611 per-resource SA), or `None`: the reqid's fallback.
    resource: Option<u16>,
}

/// Applies control records to the SA database.
pub struct Installer {
    db: Arc<SaDb>,
    inbound: HashMap<u32, Installed>,
    /// Outbound SAs by (reqid, SPI), holding them so they can be listed and reported even
    /// after a rekey replaced them in the reqid slot.
    outbound: BTreeMap<(u32, u32), OutboundEntry>,
    /// The `order` of the next outbound SA installed.
    next_order: u64,
    prefixes: PrefixRefs,
    /// Names for SAs from the static file (logs and stats), by (direction, SPI).
    names: HashMap<(bool, u32), String>,
    /// Outer destinations of tunnel-mode outbound SAs, in order of first appearance.
    remotes: Vec<IpAddr>,
    remotes_known: std::collections::HashSet<IpAddr>,
    state: Option<Arc<CountersFile>>,
    free_slots: Vec<usize>,
    restore: Restore,
}

fn dir_key(d: Direction) -> bool {
    d == Direction::Inbound
}

impl Installer {
    pub fn new(db: Arc<SaDb>) -> Installer {
        Installer {
            db,
            inbound: HashMap::new(),
            outbound: BTreeMap::new(),
            next_order: 0,
            prefixes: PrefixRefs::default(),
            names: HashMap::new(),
            remotes: Vec::new(),
            remotes_known: Default::default(),
            state: None,
            free_slots: Vec::new(),
            restore: Restore::default(),
        }
    }

    /// Keep counters and sequence leases in `file`, resuming the sequence state of a
    /// previous run from `restore` when the same SAs are installed again.
    pub fn with_state(mut self, file: Arc<CountersFile>, restore: Restore) -> Installer {
        self.free_slots = (0..file.sa_slots()).rev().collect();
        self.state = Some(file);
        self.restore = restore;
        self
    }

    pub fn state(&self) -> Option<&Arc<CountersFile>> {
        self.state.as_ref()
    }

    /// A counters-file slot for a new SA: `Ok(None)` without a file; an error when the file
    /// is full (an SA without a persisted lease could reuse nonces after a restart).
    fn take_slot(&mut self) -> Result<Option<usize>, InstallError> {
        match &self.state {
            None => Ok(None),
            Some(f) => self
                .free_slots
                .pop()
                .map(Some)
                .ok_or(InstallError::NoCounterSlot(f.sa_slots())),
        }
    }

    fn free_slot(&mut self, slot: Option<usize>) {
        if let (Some(f), Some(s)) = (&self.state, slot) {
            f.clear_sa(s);
            self.free_slots.push(s);
        }
    }

    /// A worker reports an outbound SA half-way through its lease: persist a higher one,
    /// then let the SA use it.
    pub fn extend_lease(&mut self, reqid: u32, spi: u32) {
        let Some(OutboundEntry { inst, sa, .. }) = self.outbound.get(&(reqid, spi)) else {
            return;
        };
        let lease = sa.lease().max(sa.last_seq()).saturating_add(LEASE_STEP);
        if let (Some(f), Some(slot)) = (&self.state, inst.slot) {
            f.set_lease(slot, lease);
        }
        sa.set_lease(lease);
    }

    /// Write every counter to the counters file (one seqlock-protected update).
    pub fn export(&self, workers: &[WorkerCounters]) {
        let Some(f) = &self.state else { return };
        f.update(|f| {
            for (w, c) in workers.iter().enumerate() {
                f.set_worker(w, c);
            }
            for (&spi, inst) in &self.inbound {
                if let (Some(slot), Some(sa)) = (inst.slot, self.db.inbound.get(spi)) {
                    let c = sa.counters();
                    let top = sa.replay_window().top();
                    f.set_sa_counters(slot, c.packets, c.bytes, top, c.drops.as_array());
                }
            }
            for OutboundEntry { inst, sa, .. } in self.outbound.values() {
                if let Some(slot) = inst.slot {
                    let c = sa.counters();
                    f.set_sa_counters(slot, c.packets, c.bytes, sa.last_seq(), c.drops.as_array());
                }
            }
        });
    }

    pub fn db(&self) -> &Arc<SaDb> {
        &self.db
    }

    /// Give the SA that will be installed under (direction, SPI) a name for reports.
    pub fn name_sa(&mut self, direction: Direction, spi: u32, name: &str) {
        self.names
            .insert((dir_key(direction), spi), name.to_string());
    }

    /// Apply one encoded record; the Ack (and any resync answer) goes to `out`.
    pub fn apply_bytes(
        &mut self,
        rec: &[u8],
        steering: &mut dyn Steering,
        out: &mut Vec<DataplaneRecord>,
    ) {
        match records::decode(rec) {
            Ok(r) => self.apply(r, steering, out),
            Err(e) => {
                let txid = rec
                    .get(4..8)
                    .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                let e = InstallError::Record(e);
                tracing::warn!(txid, "refused a control record: {e}");
                out.push(DataplaneRecord::Ack {
                    txid,
                    status: e.status(),
                    message: e.to_string(),
                });
            }
        }
    }

    /// Apply one record; the Ack (and any resync answer) goes to `out`.
    pub fn apply(
        &mut self,
        rec: ControlRecord,
        steering: &mut dyn Steering,
        out: &mut Vec<DataplaneRecord>,
    ) {
        let txid = rec.txid();
        if let ControlRecord::Resync { txid } = rec {
            self.report(txid, out);
            return;
        }
        let r = match rec {
            ControlRecord::AddSa { sa, .. } => self.add_sa(*sa),
            ControlRecord::DeleteSa {
                direction,
                spi,
                reqid,
                ..
            } => self.delete_sa(direction, spi, reqid),
            ControlRecord::AddPolicy { rule, .. } => self.add_policy(rule, steering),
            ControlRecord::DeletePolicy { id, .. } => self.delete_policy(id, steering),
            ControlRecord::Flush { .. } => self.flush(steering),
            ControlRecord::Resync { .. } => Ok(()),
        };
        let (status, message) = match r {
            Ok(()) => (status::OK, String::new()),
            Err(e) => {
                tracing::warn!(txid, "refused: {e}");
                (e.status(), e.to_string())
            }
        };
        out.push(DataplaneRecord::Ack {
            txid,
            status,
            message,
        });
    }

    fn add_sa(&mut self, sa: SaInstall) -> Result<(), InstallError> {
        let spi = sa.config.spi;
        let name = if self.names.is_empty() {
            None
        } else {
            self.names.get(&(dir_key(sa.direction), spi)).cloned()
        };
        let bad = |source| InstallError::Sa { spi, source };
        match sa.direction {
            Direction::Inbound => {
                let new = InboundSa::new(sa.config).map_err(bad)?;
                if sa.update {
                    if let Some(old) = self.db.inbound.get(spi) {
                        // Keep the replay state across the update.
                        new.restore_replay_top(old.replay_window().top());
                        drop(old);
                        self.db.inbound.replace(spi, new)?;
                        self.db.publish_inbound(spi);
                        if let Some(i) = self.inbound.get_mut(&spi) {
                            i.reqid = sa.reqid;
                        }
                        return Ok(());
                    }
                }
                // A previous run's window: do not accept again what it accepted.
                if let Some(top) = self.restore.inbound.remove(&spi) {
                    new.restore_replay_top(top);
                }
                let slot = self.take_slot()?;
                if let Err(e) = self.db.inbound.insert(spi, new) {
                    self.free_slot(slot);
                    return Err(e.into());
                }
                self.db.publish_inbound(spi);
                if let (Some(f), Some(s)) = (&self.state, slot) {
                    f.set_sa(s, spi, true, sa.reqid, 0);
                }
                self.inbound.insert(
                    spi,
                    Installed {
                        reqid: sa.reqid,
                        name,
                        slot,
                    },
                );
                tracing::debug!(
                    spi = format_args!("{spi:#010x}"),
                    reqid = sa.reqid,
                    "inbound SA installed"
                );
            }
            Direction::Outbound => {
                let reqid = sa.reqid;
                if reqid as usize >= self.db.outbound.capacity() {
                    return Err(InstallError::Reqid(reqid, self.db.outbound.capacity()));
                }
                let resource = sa.resource;
                let new = OutboundSa::new(sa.config).map_err(bad)?;
                let slot;
                // An update replaces the SA in place: it keeps its place in the install
                // order, and carries the reqid's traffic only if the SA it replaces did.
                let mut replaces = None;
                match self.outbound.get(&(reqid, spi)) {
                    Some(old) if sa.update => {
                        new.set_last_seq(old.sa.last_seq());
                        new.set_lease(old.sa.lease());
                        slot = old.inst.slot;
                        replaces = Some((
                            old.order,
                            self.carries(reqid, old.resource, &old.sa),
                            old.resource,
                        ));
                    }
                    Some(_) => return Err(InstallError::DuplicateOutbound { spi, reqid }),
                    None => {
                        // Never reuse a number (an AES-GCM nonce) a previous run may have
                        // sent under this key: resume above its persisted lease.
                        let start = self.restore.outbound.remove(&(reqid, spi)).unwrap_or(0);
                        new.set_last_seq(start);
                        slot = self.take_slot()?;
                        if let (Some(f), Some(s)) = (&self.state, slot) {
                            let lease = start.saturating_add(LEASE_STEP);
                            // Persist first, then allow.
                            f.set_sa(s, spi, false, reqid, lease);
                            new.set_lease(lease);
                        }
                    }
                }
                if let crate::esp::Mode::Tunnel { remote, .. } = new.config().mode {
                    if self.remotes_known.insert(remote) {
                        self.remotes.push(remote);
                    }
                }
                let new = Arc::new(new);
                let order = match replaces {
                    Some((order, current, old_resource)) => {
                        if current {
                            self.carry(reqid, old_resource, Some(Arc::clone(&new)));
                        }
                        order
                    }
                    None => {
                        // The newest SA of a reqid carries its traffic (make-before-break
                        // rekey): one atomic swap, seen by every worker at its next load.
                        // A per-resource SA (RFC 9611) carries only its worker's.
                        self.carry(reqid, resource, Some(Arc::clone(&new)));
                        self.next_order += 1;
                        self.next_order
                    }
                };
                self.outbound.insert(
                    (reqid, spi),
                    OutboundEntry {
                        inst: Installed { reqid, name, slot },
                        sa: new,
                        order,
                        resource,
                    },
                );
                tracing::debug!(
                    spi = format_args!("{spi:#010x}"),
                    reqid,
                    ?resource,
                    "outbound SA installed"
                );
            }
        }
        Ok(())
    }

    fn delete_sa(
        &mut self,
        direction: Direction,
        spi: u32,
        reqid: u32,
    ) -> Result<(), InstallError> {
        match direction {
            Direction::Inbound => {
                self.db.inbound.remove(spi)?;
                self.db.retract_inbound(spi);
                let slot = self.inbound.remove(&spi).and_then(|i| i.slot);
                self.free_slot(slot);
            }
            Direction::Outbound => {
                let gone = self
                    .outbound
                    .remove(&(reqid, spi))
                    .ok_or(InstallError::UnknownOutbound { spi, reqid })?;
                self.free_slot(gone.inst.slot);
                // Deleting an SA that no longer carries the reqid's traffic (the old one
                // after a rekey) leaves the slot alone: workers never see a change.
                if self.carries(reqid, gone.resource, &gone.sa) {
                    // The most recently installed SA left takes over (e.g. the winner of
                    // a rekey collision when the redundant, newer SA is deleted) — in one
                    // swap, so no worker finds the slot empty while another SA exists.
                    // Fallback and per-resource SAs (RFC 9611) each succeed their own kind.
                    let next = self
                        .outbound
                        .range((reqid, 0)..=(reqid, u32::MAX))
                        .filter(|(_, e)| e.resource == gone.resource)
                        .max_by_key(|(_, e)| e.order)
                        .map(|(_, e)| Arc::clone(&e.sa));
                    self.carry(reqid, gone.resource, next);
                }
            }
        }
        tracing::debug!(spi = format_args!("{spi:#010x}"), ?direction, "SA deleted");
        Ok(())
    }

    /// Whether `sa` carries `reqid`'s traffic now: the fallback (`resource` `None`), or
    /// worker `resource`'s (RFC 9611).
    fn carries(&self, reqid: u32, resource: Option<u16>, sa: &Arc<OutboundSa>) -> bool {
        match resource {
            None => self.is_current(reqid, sa),
            Some(w) => self.db.outbound.is_bound(reqid, w, sa),
        }
    }

    /// Make `sa` carry `reqid`'s traffic: as the fallback, or for worker `resource` only.
    fn carry(&self, reqid: u32, resource: Option<u16>, sa: Option<Arc<OutboundSa>>) {
        match resource {
            None => {
                self.db.outbound.store(reqid, sa);
            }
            Some(w) => {
                self.db.outbound.store_bound(reqid, w, sa);
            }
        }
    }

    /// Whether `sa` is the one carrying `reqid`'s traffic now.
    fn is_current(&self, reqid: u32, sa: &Arc<OutboundSa>) -> bool {
        self.db
            .outbound
            .get(reqid)
            .as_ref()
            .and_then(|g| g.as_ref())
            .is_some_and(|c| Arc::ptr_eq(c, sa))
    }

    fn add_policy(
        &mut self,
        rule: crate::policy::spd::PolicyRule,
        steering: &mut dyn Steering,
    ) -> Result<(), InstallError> {
        if let SpdAction::Protect { reqid } = rule.action {
            if reqid as usize >= self.db.outbound.capacity() {
                return Err(InstallError::Reqid(reqid, self.db.outbound.capacity()));
            }
        }
        let rule = Arc::new(rule);
        self.db.change_spd(SpdChange::Insert(Arc::clone(&rule)))?;
        for p in self.prefixes.add(&rule) {
            steering.add(p).map_err(InstallError::Steering)?;
        }
        Ok(())
    }

    fn delete_policy(&mut self, id: u32, steering: &mut dyn Steering) -> Result<(), InstallError> {
        if let Some(rule) = self.db.change_spd(SpdChange::Remove(id))? {
            for p in self.prefixes.remove(&rule) {
                steering.remove(p).map_err(InstallError::Steering)?;
            }
        }
        Ok(())
    }

    fn flush(&mut self, steering: &mut dyn Steering) -> Result<(), InstallError> {
        self.db.change_spd(SpdChange::Clear)?;
        for p in self.prefixes.clear() {
            steering.remove(p).map_err(InstallError::Steering)?;
        }
        steering.flushed().map_err(InstallError::Steering)?;
        self.db.clear_inbound();
        for inst in std::mem::take(&mut self.inbound).into_values() {
            self.free_slot(inst.slot);
        }
        for ((reqid, _), e) in std::mem::take(&mut self.outbound) {
            self.db.outbound.store(reqid, None);
            self.free_slot(e.inst.slot);
        }
        self.db.outbound.clear_bound();
        tracing::info!("flushed every SA and policy");
        Ok(())
    }

    /// RFC-free bookkeeping: what this dataplane holds, for a controller to reconcile.
    fn report(&self, txid: u32, out: &mut Vec<DataplaneRecord>) {
        let spd = self.db.spd_snapshot();
        out.push(DataplaneRecord::ResyncBegin {
            txid,
            sas: (self.inbound.len() + self.outbound.len()) as u32,
            policies: spd.len() as u32,
        });
        let mut inbound: Vec<_> = self.inbound.iter().collect();
        inbound.sort_by_key(|(spi, _)| **spi);
        for (&spi, inst) in inbound {
            let c = self
                .db
                .inbound
                .get(spi)
                .map(|s| s.counters())
                .unwrap_or_default();
            out.push(DataplaneRecord::HeldSa {
                txid,
                direction: Direction::Inbound,
                spi,
                reqid: inst.reqid,
                packets: c.packets,
                bytes: c.bytes,
                udp_path: None,
            });
        }
        for (&(reqid, spi), OutboundEntry { sa, .. }) in &self.outbound {
            let c = sa.counters();
            out.push(DataplaneRecord::HeldSa {
                txid,
                direction: Direction::Outbound,
                spi,
                reqid,
                packets: c.packets,
                bytes: c.bytes,
                udp_path: sa.config().udp_path(),
            });
        }
        let mut rules: Vec<_> = spd.rules().collect();
        rules.sort_by_key(|r| r.id);
        for r in rules {
            let (action, reqid) = match r.action {
                SpdAction::Protect { reqid } => (0, reqid),
                SpdAction::Bypass => (1, 0),
                SpdAction::Discard => (2, 0),
            };
            out.push(DataplaneRecord::HeldPolicy {
                txid,
                id: r.id,
                reqid,
                priority: r.priority,
                action,
            });
        }
        out.push(DataplaneRecord::ResyncEnd { txid });
    }

    /// Installed inbound SAs (SPI, bookkeeping).
    pub fn inbound(&self) -> impl Iterator<Item = (u32, &Installed)> {
        self.inbound.iter().map(|(s, i)| (*s, i))
    }
    /// Installed outbound SAs.
    pub fn outbound(&self) -> impl Iterator<Item = (&Installed, &Arc<OutboundSa>)> {
        self.outbound.values().map(|e| (&e.inst, &e.sa))
    }
    pub fn counts(&self) -> (usize, usize) {
        (
            self.inbound.len() + self.outbound.len(),
            self.db.with_spd(|s| s.len()),
        )
    }
    /// Tunnel remotes in order of first appearance (append-only: callers skip what they saw),
    /// so the next-hop resolver can look them up before the first packet.
    pub fn tunnel_remotes(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.remotes.iter().copied()
    }
    /// Destination prefixes steered to the dataplane now.
    pub fn steering_prefixes(&self) -> Vec<(IpAddr, u8)> {
        self.prefixes.all().collect()
    }
}

/// Install a static file through the record path; the first refusal is returned with what
/// it concerned.
pub fn install_static(
    inst: &mut Installer,
    cfg: &crate::control::static_sa::StaticConfig,
    steering: &mut dyn Steering,
) -> Result<(), String> {
    let recs = crate::control::static_sa::to_records(cfg)?;
    let mut acks = Vec::new();
    for r in &recs {
        if let Some((d, spi, name)) = &r.sa {
            inst.name_sa(*d, *spi, name);
        }
        acks.clear();
        inst.apply_bytes(&r.bytes, steering, &mut acks);
        for a in &acks {
            if let DataplaneRecord::Ack {
                status, message, ..
            } = a
            {
                if *status != status::OK {
                    return Err(format!("{}: {message}", r.what));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{EspTransform, SaKeys};
    use crate::esp::{SaConfig, TrafficSelector};
    use crate::policy::spd::PolicyRule;
    use crate::shm::records::{encode_add_policy, encode_add_sa, encode_delete_sa, encode_resync};

    #[derive(Default)]
    struct Recorded(Vec<(bool, (IpAddr, u8))>);
    impl Steering for Recorded {
        fn add(&mut self, p: (IpAddr, u8)) -> Result<(), String> {
            self.0.push((true, p));
            Ok(())
        }
        fn remove(&mut self, p: (IpAddr, u8)) -> Result<(), String> {
            self.0.push((false, p));
            Ok(())
        }
    }

    fn sa(direction: Direction, spi: u32, reqid: u32, update: bool) -> Vec<u8> {
        let cfg = SaConfig::tunnel(
            spi,
            EspTransform::AES_GCM_128,
            SaKeys::new(&[3; 20], &[]),
            [192, 0, 2, 1].into(),
            [192, 0, 2, 2].into(),
        );
        let mut b = vec![0u8; records::MAX_RECORD];
        let n = encode_add_sa(
            &mut b,
            spi,
            &SaInstall {
                direction,
                reqid,
                update,
                resource: None,
                config: cfg,
            },
        )
        .unwrap();
        b.truncate(n);
        b
    }

    /// An outbound SA bound to worker `w` (RFC 9611 per-resource SA).
    fn bound_sa(spi: u32, reqid: u32, w: u16) -> Vec<u8> {
        let mut rec = sa(Direction::Outbound, spi, reqid, false);
        let ControlRecord::AddSa { txid, mut sa } = records::decode(&rec).unwrap() else {
            unreachable!()
        };
        sa.resource = Some(w);
        rec.resize(records::MAX_RECORD, 0);
        let n = encode_add_sa(&mut rec, txid, &sa).unwrap();
        rec.truncate(n);
        rec
    }

    #[test]
    fn per_resource_sas_carry_only_their_workers_traffic() {
        let db = Arc::new(SaDb::with_capacity(64, 16));
        let mut i = Installer::new(Arc::clone(&db));
        let (mut st, mut out) = (Recorded::default(), Vec::new());
        let spi_of = |sa: Option<Arc<OutboundSa>>| sa.map(|s| s.spi());
        let fallback = |db: &SaDb| db.outbound.get(3).and_then(|g| g.as_ref().map(|s| s.spi()));
        i.apply_bytes(&sa(Direction::Outbound, 0x100, 3, false), &mut st, &mut out);
        i.apply_bytes(&bound_sa(0x200, 3, 0), &mut st, &mut out);
        i.apply_bytes(&bound_sa(0x201, 3, 1), &mut st, &mut out);
        assert_eq!(status_of(&out).0, status::OK);
        // The bound SAs do not take the reqid's slot: the fallback still carries the rest.
        assert_eq!(fallback(&db), Some(0x100));
        assert_eq!(spi_of(db.outbound.get_bound(3, 0)), Some(0x200));
        assert_eq!(spi_of(db.outbound.get_bound(3, 1)), Some(0x201));
        assert_eq!(
            spi_of(db.outbound.get_bound(3, 2)),
            None,
            "no SA for worker 2"
        );
        assert_eq!(
            spi_of(db.outbound.get_bound(4, 0)),
            None,
            "nor for another reqid"
        );
        // A rekey of worker 1's SA: the new one takes over, deleting the old one changes
        // nothing, and the fallback is untouched throughout.
        i.apply_bytes(&bound_sa(0x301, 3, 1), &mut st, &mut out);
        assert_eq!(spi_of(db.outbound.get_bound(3, 1)), Some(0x301));
        let mut b = [0u8; 64];
        let n = encode_delete_sa(&mut b, 9, Direction::Outbound, 0x201, 3);
        i.apply_bytes(&b[..n], &mut st, &mut out);
        assert_eq!(status_of(&out).0, status::OK);
        assert_eq!(spi_of(db.outbound.get_bound(3, 1)), Some(0x301));
        assert_eq!(fallback(&db), Some(0x100));
        // Deleting worker 0's only SA sends worker 0 back to the fallback; deleting the
        // fallback leaves the bound SAs alone.
        let n = encode_delete_sa(&mut b, 10, Direction::Outbound, 0x200, 3);
        i.apply_bytes(&b[..n], &mut st, &mut out);
        assert_eq!(spi_of(db.outbound.get_bound(3, 0)), None);
        let n = encode_delete_sa(&mut b, 11, Direction::Outbound, 0x100, 3);
        i.apply_bytes(&b[..n], &mut st, &mut out);
        assert_eq!(status_of(&out).0, status::OK);
        assert_eq!(fallback(&db), None, "no bound SA became the fallback");
        assert_eq!(spi_of(db.outbound.get_bound(3, 1)), Some(0x301));
        // A flush unbinds everything.
        let n = records::encode_flush(&mut b, 12);
        i.apply_bytes(&b[..n], &mut st, &mut out);
        assert_eq!(spi_of(db.outbound.get_bound(3, 1)), None);
    }

    fn policy(id: u32, dst: &str, reqid: u32) -> Vec<u8> {
        let mut b = vec![0u8; records::MAX_RECORD];
        let n = encode_add_policy(
            &mut b,
            id,
            &PolicyRule {
                id,
                priority: 1,
                src: TrafficSelector::prefix("10.1.0.0/16").unwrap(),
                dst: TrafficSelector::prefix(dst).unwrap(),
                action: SpdAction::Protect { reqid },
            },
        );
        b.truncate(n);
        b
    }

    fn status_of(out: &[DataplaneRecord]) -> (u16, String) {
        match out.last() {
            Some(DataplaneRecord::Ack {
                status, message, ..
            }) => (*status, message.clone()),
            other => panic!("no ack: {other:?}"),
        }
    }

    #[test]
    fn installs_refusals_and_steering() {
        let db = Arc::new(SaDb::with_capacity(64, 16));
        let mut i = Installer::new(Arc::clone(&db));
        let mut st = Recorded::default();
        let mut out = Vec::new();
        i.apply_bytes(
            &sa(Direction::Inbound, 0x8000_0005, 0, false),
            &mut st,
            &mut out,
        );
        assert_eq!(status_of(&out).0, status::OK);
        assert!(db.inbound.get(0x8000_0005).is_some());
        i.apply_bytes(
            &sa(Direction::Inbound, 0x8000_0005, 0, false),
            &mut st,
            &mut out,
        );
        assert_eq!(status_of(&out).0, status::DUPLICATE);
        i.apply_bytes(
            &sa(Direction::Outbound, 0x3000, 2, false),
            &mut st,
            &mut out,
        );
        assert_eq!(status_of(&out).0, status::OK);
        assert_eq!(db.outbound.get(2).unwrap().as_ref().unwrap().spi(), 0x3000);
        // A reqid beyond the table is refused and says why.
        i.apply_bytes(
            &sa(Direction::Outbound, 0x3001, 99, false),
            &mut st,
            &mut out,
        );
        let (s, m) = status_of(&out);
        assert_eq!(s, status::REFUSED);
        assert!(m.contains("reqid 99"), "{m}");
        // Two policies to one /16: the XDP map gets it once, loses it with the last.
        i.apply_bytes(&policy(1, "10.2.0.0/16", 2), &mut st, &mut out);
        i.apply_bytes(&policy(2, "10.2.0.0/16", 2), &mut st, &mut out);
        assert_eq!(st.0, vec![(true, ("10.2.0.0".parse().unwrap(), 16))]);
        let mut b = [0u8; 64];
        let n = records::encode_delete_policy(&mut b, 7, 1);
        i.apply_bytes(&b[..n], &mut st, &mut out);
        assert_eq!(st.0.len(), 1);
        let n = records::encode_delete_policy(&mut b, 8, 2);
        i.apply_bytes(&b[..n], &mut st, &mut out);
        assert_eq!(
            st.0.last(),
            Some(&(false, ("10.2.0.0".parse().unwrap(), 16)))
        );
        // Garbage is refused with the txid it carried.
        i.apply_bytes(&[1, 0, 0, 0, 42, 0, 0, 0, 1], &mut st, &mut out);
        assert!(matches!(
            out.last(),
            Some(DataplaneRecord::Ack {
                txid: 42,
                status: status::BAD_RECORD,
                ..
            })
        ));
        // Deleting the outbound SA empties its reqid.
        let n = encode_delete_sa(&mut b, 9, Direction::Outbound, 0x3000, 2);
        i.apply_bytes(&b[..n], &mut st, &mut out);
        assert_eq!(status_of(&out).0, status::OK);
        assert!(db.outbound.get(2).is_none());
    }

    #[test]
    fn rekey_keeps_the_newest_sa_and_resync_reports_everything() {
        let db = Arc::new(SaDb::with_capacity(64, 16));
        let mut i = Installer::new(Arc::clone(&db));
        let mut st = NoSteering;
        let mut out = Vec::new();
        i.apply_bytes(
            &sa(Direction::Outbound, 0x3000, 1, false),
            &mut st,
            &mut out,
        );
        i.apply_bytes(
            &sa(Direction::Outbound, 0x3001, 1, false),
            &mut st,
            &mut out,
        );
        assert_eq!(db.outbound.get(1).unwrap().as_ref().unwrap().spi(), 0x3001);
        // Deleting the old SA after the rekey leaves the new one carrying traffic.
        let mut b = [0u8; 64];
        let n = encode_delete_sa(&mut b, 0, Direction::Outbound, 0x3000, 1);
        i.apply_bytes(&b[..n], &mut st, &mut out);
        assert_eq!(db.outbound.get(1).unwrap().as_ref().unwrap().spi(), 0x3001);
        i.apply_bytes(&sa(Direction::Inbound, 0x4000, 1, false), &mut st, &mut out);
        i.apply_bytes(&policy(5, "10.9.0.0/16", 1), &mut st, &mut out);
        out.clear();
        let n = encode_resync(&mut b, 77);
        i.apply_bytes(&b[..n], &mut st, &mut out);
        assert!(matches!(
            out[0],
            DataplaneRecord::ResyncBegin {
                txid: 77,
                sas: 2,
                policies: 1
            }
        ));
        assert!(out.iter().any(|r| matches!(
            r,
            DataplaneRecord::HeldSa {
                spi: 0x3001,
                reqid: 1,
                direction: Direction::Outbound,
                ..
            }
        )));
        assert!(out.iter().any(|r| matches!(
            r,
            DataplaneRecord::HeldSa {
                spi: 0x4000,
                direction: Direction::Inbound,
                ..
            }
        )));
        assert!(out.iter().any(|r| matches!(
            r,
            DataplaneRecord::HeldPolicy {
                id: 5,
                reqid: 1,
                ..
            }
        )));
        assert!(matches!(
            out.last(),
            Some(DataplaneRecord::ResyncEnd { txid: 77 })
        ));
    }

    /// The SA carrying a reqid's traffic: deleting it hands the reqid to the most recently
    /// installed SA left — not to the one with the highest SPI — and deleting any other
    /// leaves the slot alone; an update keeps an SA's place.
    #[test]
    fn a_deleted_current_sa_falls_back_to_the_newest_left() {
        let db = Arc::new(SaDb::with_capacity(64, 16));
        let mut i = Installer::new(Arc::clone(&db));
        let mut st = NoSteering;
        let mut out = Vec::new();
        let current = |db: &SaDb| db.outbound.get(3).map(|g| g.as_ref().unwrap().spi());
        let mut b = [0u8; 64];
        let mut delete = |i: &mut Installer, spi: u32, out: &mut Vec<DataplaneRecord>| {
            let n = encode_delete_sa(&mut b, 0, Direction::Outbound, spi, 3);
            i.apply_bytes(&b[..n], &mut NoSteering, out);
            assert_eq!(status_of(out).0, status::OK);
        };
        // Installed in this order; SPIs deliberately not in that order.
        for spi in [0x9000, 0x3000, 0x5000, 0x7000] {
            i.apply_bytes(&sa(Direction::Outbound, spi, 3, false), &mut st, &mut out);
            assert_eq!(status_of(&out).0, status::OK);
            assert_eq!(current(&db), Some(spi), "the newest carries the traffic");
        }
        // An older, non-current SA goes: nothing changes for the workers (same Arc).
        let before = db
            .outbound
            .get(3)
            .unwrap()
            .as_ref()
            .map(Arc::clone)
            .unwrap();
        delete(&mut i, 0x3000, &mut out);
        let after = db
            .outbound
            .get(3)
            .unwrap()
            .as_ref()
            .map(Arc::clone)
            .unwrap();
        assert!(Arc::ptr_eq(&before, &after));
        // An update of an older SA does not make it current; of the current one, it stays
        // current (the new object, same sequence state).
        i.apply_bytes(&sa(Direction::Outbound, 0x9000, 3, true), &mut st, &mut out);
        assert_eq!(status_of(&out).0, status::OK);
        assert_eq!(current(&db), Some(0x7000));
        before.set_last_seq(41);
        i.apply_bytes(&sa(Direction::Outbound, 0x7000, 3, true), &mut st, &mut out);
        let updated = db
            .outbound
            .get(3)
            .unwrap()
            .as_ref()
            .map(Arc::clone)
            .unwrap();
        assert!(!Arc::ptr_eq(&before, &updated));
        assert_eq!((updated.spi(), updated.last_seq()), (0x7000, 41));
        // The current SA goes (a redundant SA of a rekey collision): the newest left
        // (0x5000) takes over, not the highest SPI (0x9000, the oldest).
        delete(&mut i, 0x7000, &mut out);
        assert_eq!(current(&db), Some(0x5000));
        // The update above kept 0x9000's place: still older than 0x5000.
        delete(&mut i, 0x5000, &mut out);
        assert_eq!(current(&db), Some(0x9000));
        delete(&mut i, 0x9000, &mut out);
        assert_eq!(current(&db), None, "the last one gone: no SA");
        assert_eq!(i.outbound().count(), 0);
    }

    /// A restarted dataplane resumes outbound numbering above the persisted lease, and the
    /// lease is written to the counters file before the SA may use it.
    #[test]
    fn sequence_leases_survive_a_restart() {
        let name = format!("vpncntr-install-{}", std::process::id());
        /// Removes the counters file however the test ends.
        struct Cleanup(String);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                let _ = CountersFile::unlink(&self.0);
            }
        }
        let _cleanup = Cleanup(name.clone());
        let file = |name: &str| Arc::new(CountersFile::create(name, 1, 8, &["x"], &["y"]).unwrap());
        let db = Arc::new(SaDb::with_capacity(64, 16));
        let mut i = Installer::new(Arc::clone(&db)).with_state(file(&name), Restore::default());
        let mut out = Vec::new();
        i.apply_bytes(
            &sa(Direction::Outbound, 0x3000, 1, false),
            &mut NoSteering,
            &mut out,
        );
        let sa1 = db
            .outbound
            .get(1)
            .unwrap()
            .as_ref()
            .map(Arc::clone)
            .unwrap();
        assert_eq!(sa1.lease(), LEASE_STEP);
        sa1.set_last_seq(LEASE_STEP - 10);
        assert!(sa1.take_lease_request());
        assert!(!sa1.take_lease_request(), "asked once per lease");
        i.extend_lease(1, 0x3000);
        assert_eq!(sa1.lease(), 2 * LEASE_STEP);
        i.export(&[]);
        // "Crash": read the file as the next run would.
        let snap = CountersFile::open(&name).unwrap().snapshot();
        assert_eq!(snap.sas[0].lease, 2 * LEASE_STEP);
        let restore = Restore::from_snapshot(&snap);
        let db2 = Arc::new(SaDb::with_capacity(64, 16));
        let mut i2 = Installer::new(Arc::clone(&db2)).with_state(file(&name), restore);
        i2.apply_bytes(
            &sa(Direction::Outbound, 0x3000, 1, false),
            &mut NoSteering,
            &mut out,
        );
        let sa2 = db2
            .outbound
            .get(1)
            .unwrap()
            .as_ref()
            .map(Arc::clone)
            .unwrap();
        assert_eq!(
            sa2.last_seq(),
            2 * LEASE_STEP,
            "resumes above everything leased"
        );
    }

    /// Figures, not a check: a static file of 10k and 100k SAs (half inbound with manual
    /// SPIs, half outbound, a policy per outbound SA) parsed and installed, and 1M inbound
    /// AddSa records through the shared-memory ring with two worker replicas kept in step.
    /// `cargo test --release -p dataplane --lib install_figures -- --ignored --nocapture`
    #[test]
    #[ignore = "prints figures; run by hand in release"]
    fn install_figures() {
        use crate::shm::{RingDir, ShmFile};
        use std::fmt::Write;
        use std::time::{Duration, Instant};
        for n in [10_000usize, 100_000] {
            let mut text = String::new();
            for i in 0..n {
                let (dir, spi) = if i < n / 2 {
                    ("in", 0x1000 + i)
                } else {
                    ("out", 0x0100_0000 + i)
                };
                let _ = write!(
                    text,
                    "[[sa]]\nname = \"sa{i}\"\ndirection = \"{dir}\"\nspi = {spi}\nproposal = \"aes128gcm16\"\nenc_key = \"{:08x}0102030405060708090a0b0c0d0e0f10\"\nmode = \"tunnel\"\nlocal = \"192.0.2.1\"\nremote = \"198.51.{}.{}\"\n\n",
                    i as u32,
                    (i >> 8) & 0xff,
                    i & 0xff
                );
            }
            for i in n / 2..n {
                let d = std::net::Ipv4Addr::from(0x0a80_0000u32 + i as u32);
                let _ = write!(
                    text,
                    "[[policy]]\nsrc = \"10.1.0.0/16\"\ndst = \"{d}/32\"\naction = \"protect\"\nsa = \"sa{i}\"\n\n"
                );
            }
            let t = Instant::now();
            let cfg = crate::control::static_sa::StaticConfig::parse(
                std::path::Path::new("x.toml"),
                &text,
            )
            .unwrap();
            let parse = t.elapsed().as_secs_f64();
            let db = Arc::new(SaDb::new());
            let mut inst = Installer::new(Arc::clone(&db));
            let t = Instant::now();
            install_static(&mut inst, &cfg, &mut NoSteering).unwrap();
            let apply = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let reps: Vec<_> = (0..2).map(|_| db.replica()).collect();
            let rep = t.elapsed().as_secs_f64();
            assert_eq!(inst.counts(), (n, n - n / 2));
            assert_eq!(reps[0].data().inbound.len(), n / 2);
            eprintln!(
                "static {n} SAs: parse {parse:.3} s, install {apply:.3} s, 2 replicas {rep:.3} s, total {:.3} s",
                parse + apply + rep
            );
        }
        let n = 1_000_000usize;
        let db = Arc::new(SaDb::new());
        let mut inst = Installer::new(Arc::clone(&db));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let (mut r, stop) = (db.replica(), Arc::clone(&stop));
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        r.sync();
                        std::thread::yield_now();
                    }
                    r.sync();
                    r.data().inbound.len()
                })
            })
            .collect();
        let name = format!("vpnring-figures-{}", std::process::id());
        let shm = ShmFile::create(&name, 4096, records::SLOT_SIZE).unwrap();
        let mut p = shm.producer(RingDir::ToDataplane);
        let mut c = shm.consumer(RingDir::ToDataplane);
        let t = Instant::now();
        let producer = std::thread::spawn(move || {
            let mut b = vec![0u8; records::MAX_RECORD];
            for i in 0..n {
                let spi = crate::sa::satable::compose(1, i as u32);
                let cfg = SaConfig::tunnel(
                    spi,
                    EspTransform::AES_GCM_128,
                    SaKeys::new(&[i as u8; 20], &[]),
                    [192, 0, 2, 1].into(),
                    [198, 51, 100, 1].into(),
                );
                let sa = SaInstall {
                    direction: Direction::Inbound,
                    reqid: 0,
                    update: false,
                    resource: None,
                    config: cfg,
                };
                let k = encode_add_sa(&mut b, i as u32, &sa).unwrap();
                p.push(&b[..k], Duration::from_secs(30)).unwrap();
            }
        });
        let mut b = vec![0u8; records::MAX_RECORD];
        let mut out = Vec::new();
        let mut got = 0;
        while got < n {
            let mut drained = 0;
            while drained < 4096 {
                let Some(k) = c.pop(&mut b) else { break };
                inst.apply_bytes(&b[..k], &mut NoSteering, &mut out);
                drained += 1;
            }
            if drained == 0 {
                std::hint::spin_loop();
                continue;
            }
            got += drained;
            assert!(db.wait_replicas(Duration::from_secs(5)));
            assert!(out.iter().all(|a| matches!(
                a,
                DataplaneRecord::Ack {
                    status: status::OK,
                    ..
                }
            )));
            out.clear();
        }
        let secs = t.elapsed().as_secs_f64();
        producer.join().unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in workers {
            assert_eq!(w.join().unwrap(), n);
        }
        let _ = ShmFile::unlink(&name);
        eprintln!(
            "ring {n} inbound SAs, 2 replicas: {secs:.3} s, {:.0} installs/s",
            n as f64 / secs
        );
    }
}

/// Model checks (loom) of the outbound switch: every interleaving of a worker's loads with
/// the installer's swap-then-delete. Under loom the reqid slot is the mutex stand-in of
/// `sync::swap`, so this checks the installer's order of stores — never an intermediate
/// empty slot, never a step back to a replaced SA — taking arc-swap's atomicity as given.
/// Run with `cargo test -p dataplane --features loom --lib loom_`.
#[cfg(all(test, feature = "loom"))]
mod loom_tests {
    use super::*;
    use crate::crypto::{EspTransform, SaKeys};
    use crate::esp::SaConfig;
    use crate::shm::records::{encode_add_sa, encode_delete_sa};

    const REQID: u32 = 1;

    fn apply(i: &mut Installer, rec: &[u8]) {
        let mut out = Vec::new();
        i.apply_bytes(rec, &mut NoSteering, &mut out);
        assert!(matches!(
            out.last(),
            Some(DataplaneRecord::Ack {
                status: status::OK,
                ..
            })
        ));
    }

    fn install(i: &mut Installer, spi: u32) {
        let cfg = SaConfig::transport(spi, EspTransform::AES_GCM_128, SaKeys::new(&[3; 20], &[]));
        let mut b = vec![0u8; records::MAX_RECORD];
        let sa = SaInstall {
            direction: Direction::Outbound,
            reqid: REQID,
            update: false,
            resource: None,
            config: cfg,
        };
        let n = encode_add_sa(&mut b, spi, &sa).unwrap();
        apply(i, &b[..n]);
    }

    fn delete(i: &mut Installer, spi: u32) {
        let mut b = [0u8; 64];
        let n = encode_delete_sa(&mut b, spi, Direction::Outbound, spi, REQID);
        apply(i, &b[..n]);
    }

    /// The control side's steps against a worker loading the slot `loads` times; the
    /// worker's view must always be an SA, and its `rank` (install order, the redundant SA
    /// of a collision excluded) must never go down.
    fn check(steps: fn(&mut Installer), loads: usize, rank: fn(u32) -> Option<u32>) {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.check(move || {
            let db = Arc::new(SaDb::with_capacity(4, 4));
            let mut i = Installer::new(Arc::clone(&db));
            install(&mut i, 0x3000);
            let worker = {
                let db = Arc::clone(&db);
                loom::thread::spawn(move || {
                    let mut seen = Vec::new();
                    for _ in 0..loads {
                        let g = db.outbound.get(REQID);
                        let spi = g.as_ref().and_then(|g| g.as_ref()).map(|sa| sa.spi());
                        seen.push(spi.expect("a worker found no SA for the reqid"));
                    }
                    seen
                })
            };
            steps(&mut i);
            let seen = worker.join().unwrap();
            let ranks: Vec<u32> = seen.iter().filter_map(|&s| rank(s)).collect();
            assert!(
                ranks.windows(2).all(|w| w[0] <= w[1]),
                "went back: {seen:x?}"
            );
        });
    }

    /// A rekey in make-before-break order: install the new SA, delete the old one.
    #[test]
    fn loom_rekey_swap_then_delete_never_leaves_no_sa() {
        check(
            |i| {
                install(i, 0x2000);
                delete(i, 0x3000);
            },
            3,
            |spi| Some(0x3000 - spi),
        );
    }

    /// A collision: the redundant SA (0x9000, installed last) is deleted first, the reqid
    /// goes back to the winner (0x2000), then the old SA goes.
    #[test]
    fn loom_collision_falls_back_to_the_winner() {
        check(
            |i| {
                install(i, 0x2000);
                install(i, 0x9000);
                delete(i, 0x9000);
                delete(i, 0x3000);
            },
            3,
            |spi| (spi != 0x9000).then(|| 0x3000 - spi),
        );
    }
}
