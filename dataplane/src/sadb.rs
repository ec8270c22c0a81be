//! The SAs and policies a dataplane holds, shared by its workers.
//!
//! - Inbound SAs: the lock-free [`SpiTable`], by SPI.
//! - Outbound SAs: a slot per request id (`reqid`, chosen by the control plane and named by
//!   policies), each an `ArcSwapOption`: a rekey swaps in the new SA under the same reqid
//!   while workers keep sending; readers never block.
//! - Policies: one SPD replica per worker ([`SpdReplica`]), changed by messages from the
//!   control thread that each worker applies between batches. A worker's lookups touch only
//!   its own memory; a change reaches every worker within one batch.
//!
//! Only the control thread writes (see `install`). SAs removed from a table are freed —
//! and their keys zeroized by `SaCrypto`'s `ZeroizeOnDrop` — when the last worker that
//! still holds one lets go of it.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

use crate::sync::swap::{ArcSwapOption, Guard};

use crate::esp::{InboundSa, OutboundSa};
use crate::satable::SpiTable;
use crate::spd::{PolicyId, PolicyRule, Spd};

/// Request ids the outbound table holds: 0 .. `REQIDS`.
pub const REQIDS: usize = 1 << 20;

/// A change to the SPD, sent to every replica.
#[derive(Debug, Clone)]
pub enum SpdChange {
    Insert(Arc<PolicyRule>),
    Remove(PolicyId),
    Clear,
}

/// A worker's own copy of the SPD, kept in step by the control thread.
pub struct SpdReplica {
    spd: Spd,
    changes: Receiver<SpdChange>,
}

impl SpdReplica {
    /// Apply the changes sent since the last call (one atomic load when there are none).
    #[inline]
    pub fn sync(&mut self) {
        while let Ok(c) = self.changes.try_recv() {
            match c {
                // The control thread validated the change against its master copy, so
                // these cannot fail here.
                SpdChange::Insert(r) => {
                    let _ = self.spd.insert(PolicyRule::clone(&r));
                }
                SpdChange::Remove(id) => {
                    let _ = self.spd.remove(id);
                }
                SpdChange::Clear => self.spd.clear(),
            }
        }
    }

    pub fn spd(&self) -> &Spd {
        &self.spd
    }
}

/// Outbound SAs by reqid.
pub struct ReqidTable {
    slots: Box<[ArcSwapOption<OutboundSa>]>,
}

impl ReqidTable {
    fn new(n: usize) -> Self {
        ReqidTable {
            slots: (0..n).map(|_| ArcSwapOption::const_empty()).collect(),
        }
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
    spd: Mutex<(Spd, Vec<Sender<SpdChange>>)>,
}

impl Default for SaDb {
    fn default() -> Self {
        SaDb::new()
    }
}

impl SaDb {
    /// Full size: a million inbound slots and a million reqids.
    pub fn new() -> SaDb {
        SaDb::with_capacity(crate::satable::SLOTS, REQIDS)
    }

    /// A smaller database (tests).
    pub fn with_capacity(inbound_slots: usize, reqids: usize) -> SaDb {
        SaDb {
            inbound: SpiTable::with_slots(inbound_slots),
            outbound: ReqidTable::new(reqids.clamp(1, REQIDS)),
            spd: Mutex::new((Spd::new(), Vec::new())),
        }
    }

    /// A replica of the SPD for a new worker.
    pub fn spd_replica(&self) -> SpdReplica {
        let mut g = self.spd.lock().unwrap_or_else(|e| e.into_inner());
        let (tx, rx) = channel();
        g.1.push(tx);
        SpdReplica {
            spd: g.0.clone(),
            changes: rx,
        }
    }

    /// Writer: change the master SPD and, if that worked, every replica.
    pub(crate) fn change_spd(
        &self,
        c: SpdChange,
    ) -> Result<Option<PolicyRule>, crate::spd::SpdError> {
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
        // A replica whose worker has gone is dropped from the list.
        g.1.retain(|tx| tx.send(c.clone()).is_ok());
        Ok(old)
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
