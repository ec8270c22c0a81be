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

use crate::esp::{InboundSa, OutboundSa, SaError};
use crate::sadb::{SaDb, SpdChange};
use crate::satable::TableError;
use crate::shm::records::{self, status, ControlRecord, DataplaneRecord, RecordError, SaInstall};
use crate::spd::{PrefixRefs, SpdAction, SpdError};
use crate::static_sa::Direction;

/// Where steering prefixes go: the XDP program's LPM map (or nowhere, in tests).
pub trait Steering {
    fn add(&mut self, prefix: (IpAddr, u8)) -> Result<(), String>;
    fn remove(&mut self, prefix: (IpAddr, u8)) -> Result<(), String>;
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
}

/// Applies control records to the SA database.
pub struct Installer {
    db: Arc<SaDb>,
    inbound: BTreeMap<u32, Installed>,
    /// Outbound SAs by (reqid, SPI), holding them so they can be listed and reported even
    /// after a rekey replaced them in the reqid slot.
    outbound: BTreeMap<(u32, u32), (Installed, Arc<OutboundSa>)>,
    prefixes: PrefixRefs,
    /// Names for SAs from the static file (logs and stats), by (direction, SPI).
    names: HashMap<(bool, u32), String>,
    /// Outer destinations of tunnel-mode outbound SAs, in order of first appearance.
    remotes: Vec<IpAddr>,
    remotes_known: std::collections::HashSet<IpAddr>,
}

fn dir_key(d: Direction) -> bool {
    d == Direction::Inbound
}

impl Installer {
    pub fn new(db: Arc<SaDb>) -> Installer {
        Installer {
            db,
            inbound: BTreeMap::new(),
            outbound: BTreeMap::new(),
            prefixes: PrefixRefs::default(),
            names: HashMap::new(),
            remotes: Vec::new(),
            remotes_known: Default::default(),
        }
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
        let name = self.names.get(&(dir_key(sa.direction), spi)).cloned();
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
                        self.inbound.insert(
                            spi,
                            Installed {
                                reqid: sa.reqid,
                                name,
                            },
                        );
                        return Ok(());
                    }
                }
                self.db.inbound.insert(spi, new)?;
                self.inbound.insert(
                    spi,
                    Installed {
                        reqid: sa.reqid,
                        name,
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
                let new = OutboundSa::new(sa.config).map_err(bad)?;
                match self.outbound.get(&(reqid, spi)) {
                    Some((_, old)) if sa.update => new.set_last_seq(old.last_seq()),
                    Some(_) => return Err(InstallError::DuplicateOutbound { spi, reqid }),
                    None => {}
                }
                if let crate::esp::Mode::Tunnel { remote, .. } = new.config().mode {
                    if self.remotes_known.insert(remote) {
                        self.remotes.push(remote);
                    }
                }
                let new = Arc::new(new);
                // The newest SA of a reqid carries its traffic (make-before-break rekey).
                self.db.outbound.store(reqid, Some(Arc::clone(&new)));
                self.outbound
                    .insert((reqid, spi), (Installed { reqid, name }, new));
                tracing::debug!(
                    spi = format_args!("{spi:#010x}"),
                    reqid,
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
                self.inbound.remove(&spi);
            }
            Direction::Outbound => {
                let (_, sa) = self
                    .outbound
                    .remove(&(reqid, spi))
                    .ok_or(InstallError::UnknownOutbound { spi, reqid })?;
                let current = self.db.outbound.get(reqid);
                if current
                    .as_ref()
                    .and_then(|g| g.as_ref())
                    .is_some_and(|c| Arc::ptr_eq(c, &sa))
                {
                    drop(current);
                    // Fall back to an older SA of the same reqid if one is still installed.
                    let older = self
                        .outbound
                        .range((reqid, 0)..=(reqid, u32::MAX))
                        .next_back()
                        .map(|(_, (_, s))| Arc::clone(s));
                    self.db.outbound.store(reqid, older);
                }
            }
        }
        tracing::debug!(spi = format_args!("{spi:#010x}"), ?direction, "SA deleted");
        Ok(())
    }

    fn add_policy(
        &mut self,
        rule: crate::spd::PolicyRule,
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
        self.db.inbound.clear();
        self.inbound.clear();
        for (reqid, _) in std::mem::take(&mut self.outbound).into_keys() {
            self.db.outbound.store(reqid, None);
        }
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
        for (&spi, inst) in &self.inbound {
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
            });
        }
        for (&(reqid, spi), (_, sa)) in &self.outbound {
            let c = sa.counters();
            out.push(DataplaneRecord::HeldSa {
                txid,
                direction: Direction::Outbound,
                spi,
                reqid,
                packets: c.packets,
                bytes: c.bytes,
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
        self.outbound.values().map(|(i, s)| (i, s))
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
    cfg: &crate::static_sa::StaticConfig,
    steering: &mut dyn Steering,
) -> Result<(), String> {
    let recs = crate::static_sa::to_records(cfg)?;
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
