//! The SAs and policies a dataplane holds, shared by its workers.
//!
//! - Inbound SAs: the lock-free [`SpiTable`], by SPI (the master, for the control thread),
//!   and one [`InboundReplica`] per worker, which the workers read.
//! - Outbound SAs: a slot per request id (`reqid`, chosen by the control plane and named by
//!   policies), each an `ArcSwapOption`: a rekey swaps in the new SA under the same reqid
//!   while workers keep sending; readers never block.
//! - Policies: one SPD replica per worker (in its [`Replica`]), changed by messages from the
//!   control thread that each worker applies between batches. A worker's lookups touch only
//!   its own memory; a change reaches every worker within one batch.
//!
//! Only the control thread writes (see `install`). SAs removed from a table are freed —
//! and their keys zeroized by `SaCrypto`'s `ZeroizeOnDrop` — when the last worker that
//! still holds one lets go of it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::sync::swap::{ArcSwapOption, Guard};

use crate::esp::{InboundSa, OutboundSa};
use crate::policy::spd::{PolicyId, PolicyRule, Spd};
use crate::sa::satable::{SaArc, SpiReplica, SpiTable};

/// Request ids the outbound table holds: 0 .. `REQIDS`.
pub const REQIDS: usize = 1 << 20;

/// A change to the SPD, sent to every replica.
#[derive(Debug, Clone)]
pub enum SpdChange {
    Insert(Arc<PolicyRule>),
    Remove(PolicyId),
    Clear,
}

/// A change sent to every worker's replica, in the order the control thread made them.
#[derive(Clone)]
pub enum Change {
    Spd(SpdChange),
    /// Install or replace the inbound SA under this SPI.
    InboundInsert(u32, SaArc<InboundSa>),
    InboundRemove(u32),
    InboundClear,
}

/// A worker's own view of the inbound SAs (see [`SpiReplica`]; many SPIs at once:
/// [`SpiReplica::get_batch`]).
pub type InboundReplica = SpiReplica<InboundSa>;

impl crate::esp::InboundSaLookup for InboundReplica {
    #[inline]
    fn lookup(&self, spi: u32) -> Option<&InboundSa> {
        self.get(spi)
    }
}

/// What a worker reads: its SPD and inbound SAs.
#[derive(Default)]
pub struct ReplicaData {
    pub spd: Spd,
    pub inbound: InboundReplica,
}

/// A worker's replica and the channel that keeps it in step with the control thread.
pub struct Replica {
    data: ReplicaData,
    changes: Receiver<Change>,
    /// How many changes of the broadcast sequence this replica has applied (published for
    /// [`SaDb::wait_replicas`]).
    applied: Arc<AtomicU64>,
}

impl Replica {
    /// Apply the changes sent since the last call (one atomic load when there are none).
    #[inline]
    pub fn sync(&mut self) {
        let mut n = 0;
        while let Ok(c) = self.changes.try_recv() {
            n += 1;
            let d = &mut self.data;
            match c {
                // The control thread validated the change against its master copy, so
                // these cannot fail here.
                Change::Spd(SpdChange::Insert(r)) => {
                    let _ = d.spd.insert(PolicyRule::clone(&r));
                }
                Change::Spd(SpdChange::Remove(id)) => {
                    let _ = d.spd.remove(id);
                }
                Change::Spd(SpdChange::Clear) => d.spd.clear(),
                Change::InboundInsert(spi, sa) => d.inbound.insert(spi, sa),
                Change::InboundRemove(spi) => d.inbound.remove(spi),
                Change::InboundClear => d.inbound.clear(),
            }
        }
        if n > 0 {
            self.applied.fetch_add(n, Ordering::Release);
        }
    }

    pub fn data(&self) -> &ReplicaData {
        &self.data
    }

    /// Move the data out for a batch (so the worker can borrow it while mutating itself);
    /// give it back with [`Replica::put`].
    pub fn take(&mut self) -> ReplicaData {
        std::mem::take(&mut self.data)
    }
    pub fn put(&mut self, d: ReplicaData) {
        self.data = d;
    }

    pub fn spd(&self) -> &Spd {
        &self.data.spd
    }
}

/// Per-resource outbound SAs (RFC 9611): (reqid, worker) → the SA bound to that worker.
type Bound = std::collections::HashMap<(u32, u16), Arc<OutboundSa>>;

/// Outbound SAs by reqid.
///
/// Each reqid has one *fallback* SA in its slot, shared by every worker, and may have
/// per-resource SAs (RFC 9611 §4), each bound to one worker: worker `w` sends on the SA
/// bound to `(reqid, w)` when there is one, else on the fallback. A bound SA has one sender,
/// so its sequence counter is never contended. The bound map is small (workers × tunnels
/// using it) and changed rarely (negotiation, rekey): copy-on-write, one pointer swap.
pub struct ReqidTable {
    slots: Box<[ArcSwapOption<OutboundSa>]>,
    bound: ArcSwapOption<Bound>,
}

impl ReqidTable {
    fn new(n: usize) -> Self {
        ReqidTable {
            slots: (0..n).map(|_| ArcSwapOption::const_empty()).collect(),
            bound: ArcSwapOption::const_empty(),
        }
    }

    /// Reader: the SA bound to worker `worker` for `reqid` (RFC 9611), if any. With no
    /// per-resource SA anywhere this is one load of an empty pointer.
    #[inline]
    pub fn get_bound(&self, reqid: u32, worker: u16) -> Option<Arc<OutboundSa>> {
        let g = self.bound.load();
        g.as_ref()?.get(&(reqid, worker)).cloned()
    }

    /// Writer: bind `sa` to `(reqid, worker)` (or unbind with `None`); returns the previous
    /// one. Only the control thread writes, so load-modify-store does not race.
    pub(crate) fn store_bound(
        &self,
        reqid: u32,
        worker: u16,
        sa: Option<Arc<OutboundSa>>,
    ) -> Option<Arc<OutboundSa>> {
        let cur = self.bound.load();
        let mut map: Bound = cur.as_deref().cloned().unwrap_or_default();
        let old = match sa {
            Some(sa) => map.insert((reqid, worker), sa),
            None => map.remove(&(reqid, worker)),
        };
        self.bound.swap((!map.is_empty()).then(|| Arc::new(map)));
        old
    }

    /// Writer: every per-resource SA is gone (flush).
    pub(crate) fn clear_bound(&self) {
        self.bound.swap(None);
    }

    /// Reader (control thread, tests): the SA bound to `(reqid, worker)` is `sa`.
    pub fn is_bound(&self, reqid: u32, worker: u16, sa: &Arc<OutboundSa>) -> bool {
        self.get_bound(reqid, worker)
            .is_some_and(|b| Arc::ptr_eq(&b, sa))
    }

    /// Reader: the outbound SA for `reqid`, lock-free. Hold the guard for a batch at most.
    #[inline]
    pub fn get(&self, reqid: u32) -> Option<Guard<Option<Arc<OutboundSa>>>> {
        let g = self.slots.get(reqid as usize)?.load();
        g.is_some().then_some(g)
    }

    /// Writer: install (or swap, for a rekey) the SA under `reqid`; returns the previous one.
    pub(crate) fn store(&self, reqid: u32, sa: Option<Arc<OutboundSa>>) -> Option<Arc<OutboundSa>> {
        self.slots.get(reqid as usize)?.swap(sa)
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }
}

/// Everything the workers read.
pub struct SaDb {
    pub inbound: SpiTable<InboundSa>,
    pub outbound: ReqidTable,
    /// The master SPD and the senders to every replica, under one lock so a new replica
    /// starts from the master and misses no change.
    spd: Mutex<(Spd, Vec<Sender<Change>>)>,
    /// Changes broadcast so far, and each replica's count of those it applied.
    broadcasts: AtomicU64,
    applied: Mutex<Vec<Weak<AtomicU64>>>,
}

impl Default for SaDb {
    fn default() -> Self {
        SaDb::new()
    }
}

impl SaDb {
    /// Full size: a million inbound slots and a million reqids.
    pub fn new() -> SaDb {
        SaDb::with_capacity(crate::sa::satable::SLOTS, REQIDS)
    }

    /// A smaller database (tests).
    pub fn with_capacity(inbound_slots: usize, reqids: usize) -> SaDb {
        SaDb {
            inbound: SpiTable::with_slots(inbound_slots),
            outbound: ReqidTable::new(reqids.clamp(1, REQIDS)),
            spd: Mutex::new((Spd::new(), Vec::new())),
            broadcasts: AtomicU64::new(0),
            applied: Mutex::new(Vec::new()),
        }
    }

    /// A replica for a new worker: a copy of the master SPD and inbound SAs, and the
    /// channel that brings it every later change.
    pub fn replica(&self) -> Replica {
        let mut g = self.spd.lock().unwrap_or_else(|e| e.into_inner());
        let (tx, rx) = channel();
        g.1.push(tx);
        let inbound = SpiReplica::from_table(&self.inbound);
        // It starts from the master: every change broadcast so far is in it.
        let applied = Arc::new(AtomicU64::new(self.broadcasts.load(Ordering::Acquire)));
        self.applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::downgrade(&applied));
        Replica {
            data: ReplicaData {
                spd: g.0.clone(),
                inbound,
            },
            changes: rx,
            applied,
        }
    }

    fn broadcast(&self, senders: &mut Vec<Sender<Change>>, c: Change) {
        // A replica whose worker has gone is dropped from the list.
        senders.retain(|tx| tx.send(c.clone()).is_ok());
        self.broadcasts.fetch_add(1, Ordering::AcqRel);
    }

    /// Wait until every worker has applied the changes broadcast so far (at most
    /// `timeout`): what the control thread acknowledges is then what every worker uses. A
    /// rekey relies on it (RFC 7296 §2.8): once the controller hears the new inbound SA is
    /// installed it lets the peer send on it. Workers sync at every batch and at least every
    /// few ms when idle. Returns false on timeout (a stuck worker must not stall control).
    pub fn wait_replicas(&self, timeout: Duration) -> bool {
        let target = self.broadcasts.load(Ordering::Acquire);
        let until = Instant::now() + timeout;
        loop {
            let behind = {
                let mut list = self.applied.lock().unwrap_or_else(|e| e.into_inner());
                list.retain(|w| w.strong_count() > 0);
                list.iter()
                    .filter_map(Weak::upgrade)
                    .any(|a| a.load(Ordering::Acquire) < target)
            };
            if !behind {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    /// Writer: change the master SPD and, if that worked, every replica.
    pub(crate) fn change_spd(
        &self,
        c: SpdChange,
    ) -> Result<Option<PolicyRule>, crate::policy::spd::SpdError> {
        let mut g = self.spd.lock().unwrap_or_else(|e| e.into_inner());
        let old = match &c {
            SpdChange::Insert(r) => {
                g.0.insert(PolicyRule::clone(r))?;
                None
            }
            SpdChange::Remove(id) => Some(g.0.remove(*id)?),
            SpdChange::Clear => {
                g.0.clear();
                None
            }
        };
        self.broadcast(&mut g.1, Change::Spd(c));
        Ok(old)
    }

    /// Writer: after installing (or replacing) `spi` in the master table, hand it to every
    /// replica.
    pub(crate) fn publish_inbound(&self, spi: u32) {
        if let Some(sa) = self.inbound.get_arc(spi) {
            let mut g = self.spd.lock().unwrap_or_else(|e| e.into_inner());
            self.broadcast(&mut g.1, Change::InboundInsert(spi, sa));
        }
    }

    /// Writer: after removing `spi` from the master table, from every replica too.
    pub(crate) fn retract_inbound(&self, spi: u32) {
        let mut g = self.spd.lock().unwrap_or_else(|e| e.into_inner());
        self.broadcast(&mut g.1, Change::InboundRemove(spi));
    }

    /// Writer: every inbound SA is gone.
    pub(crate) fn clear_inbound(&self) {
        self.inbound.clear();
        let mut g = self.spd.lock().unwrap_or_else(|e| e.into_inner());
        self.broadcast(&mut g.1, Change::InboundClear);
    }

    /// A copy of the master SPD (resync reports, the stats writer).
    pub fn spd_snapshot(&self) -> Spd {
        self.spd.lock().unwrap_or_else(|e| e.into_inner()).0.clone()
    }

    /// Run `f` on the master SPD without copying it.
    pub fn with_spd<R>(&self, f: impl FnOnce(&Spd) -> R) -> R {
        f(&self.spd.lock().unwrap_or_else(|e| e.into_inner()).0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_can_wait_until_every_worker_applied_the_changes() {
        let db = SaDb::with_capacity(16, 16);
        let mut a = db.replica();
        let mut b = db.replica();
        assert!(db.wait_replicas(Duration::ZERO), "nothing changed yet");
        db.change_spd(SpdChange::Clear).unwrap();
        assert!(
            !db.wait_replicas(Duration::from_millis(1)),
            "no worker synced"
        );
        a.sync();
        assert!(!db.wait_replicas(Duration::from_millis(1)), "b has not");
        b.sync();
        assert!(db.wait_replicas(Duration::ZERO));
        // A worker that has gone is not waited for; a new one starts up to date.
        drop(b);
        db.change_spd(SpdChange::Clear).unwrap();
        let _c = db.replica();
        a.sync();
        assert!(db.wait_replicas(Duration::ZERO));
    }
}
