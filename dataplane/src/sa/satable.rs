//! The inbound SA table: lookup by SPI in O(1), lock-free for readers.
//!
//! The control plane allocates our inbound SPIs, so it encodes the table slot in them:
//!
//! ```text
//!  31 30        20 19                 0
//! | 1 | generation |        slot         |
//! ```
//!
//! A lookup masks out the slot, loads that slot's entry (one atomic load through
//! `arc_swap`), and compares the whole SPI: an SA that was deleted and whose slot was reused
//! has another generation, so a stale SPI misses instead of hitting the new SA. Bit 31 keeps
//! allocated SPIs clear of the reserved range 0–255 (RFC 4303 §2.1). Manually keyed SAs
//! with arbitrary SPIs go to an overflow map, replaced copy-on-write (RCU style); it is
//! consulted only when the slot misses.
//!
//! Writers (one control thread) publish new `Arc`s; readers never block and never see a
//! half-written SA. A removed SA is freed — and its keys zeroized by `SaCrypto`'s
//! `ZeroizeOnDrop` — when the last reader drops its `Arc`.

use std::collections::HashMap;
use std::sync::Arc;

use crate::sync::{Mutex, MutexGuard};

use crate::sync::swap::{ArcSwap, ArcSwapOption, Guard};

/// Slot bits in an allocated SPI: 2^20 slots (a million SAs).
pub const SLOT_BITS: u32 = 20;
pub const SLOTS: usize = 1 << SLOT_BITS;
const SLOT_MASK: u32 = (1 << SLOT_BITS) - 1;
/// Generation bits in an allocated SPI.
pub const GEN_BITS: u32 = 11;
const GEN_MASK: u16 = (1 << GEN_BITS) - 1;
const ALLOCATED: u32 = 1 << 31;

/// The allocated-form SPI for `slot` in `generation` (both truncated to their bits): what
/// the table's allocator hands out, and what a control plane that allocates inbound SPIs
/// itself must send, so that a reused slot's stale SPI misses.
#[inline]
pub fn compose(generation: u16, slot: u32) -> u32 {
    ALLOCATED | (u32::from(generation & GEN_MASK) << SLOT_BITS) | (slot & SLOT_MASK)
}

/// The generation of an allocated-form SPI.
#[inline]
pub fn generation_of(spi: u32) -> u16 {
    (spi >> SLOT_BITS) as u16 & GEN_MASK
}

/// Why an install was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TableError {
    #[error("all {SLOTS} SA slots are in use")]
    Full,
    #[error("SPI {0:#010x} is already installed")]
    Duplicate(u32),
    #[error("SPI {0:#010x} is not installed")]
    NotFound(u32),
}

/// An installed SA with its SPI, in one allocation: a lookup that hits touches the slot
/// array and this entry, nothing else.
#[doc(hidden)]
pub struct Entry<T> {
    spi: u32,
    value: T,
}

/// An owned reference to an installed SA (keeps it alive past a batch).
pub struct SaArc<T>(Arc<Entry<T>>);

impl<T> Clone for SaArc<T> {
    fn clone(&self) -> Self {
        SaArc(Arc::clone(&self.0))
    }
}

impl<T> SaArc<T> {
    pub fn spi(&self) -> u32 {
        self.0.spi
    }
}

/// Whether `spi` has the allocated form (its slot encoded in it).
#[inline]
pub fn is_allocated_form(spi: u32) -> bool {
    spi & ALLOCATED != 0
}

/// The slot an allocated-form SPI names.
#[inline]
pub fn slot_of(spi: u32) -> usize {
    (spi & SLOT_MASK) as usize
}

impl<T> std::ops::Deref for SaArc<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0.value
    }
}

/// A borrowed SA from [`SpiTable::get`]; hold it for a batch, not longer.
pub enum SaRef<T> {
    #[doc(hidden)]
    Slot(Guard<Option<Arc<Entry<T>>>>),
    #[doc(hidden)]
    Overflow(Guard<Arc<HashMap<u32, Arc<Entry<T>>>>>, u32),
}

impl<T> std::ops::Deref for SaRef<T> {
    type Target = T;
    fn deref(&self) -> &T {
        match self {
            SaRef::Slot(g) => &g.as_ref().expect("checked non-empty in get").value,
            SaRef::Overflow(m, spi) => &m.get(spi).expect("checked present in get").value,
        }
    }
}

/// SPI → `Arc<T>` with lock-free reads. `T` is the per-SA state (e.g. a locked `InboundSa`).
/// Share it in an `Arc`: workers call `get`, the control thread the writer methods.
pub struct SpiTable<T> {
    slots: Box<[ArcSwapOption<Entry<T>>]>,
    overflow: ArcSwap<HashMap<u32, Arc<Entry<T>>>>,
    /// Writer-side bookkeeping. Writers serialise on this mutex; readers never touch it.
    writer: Mutex<WriterState>,
}

struct WriterState {
    generations: Box<[u16]>,
    used: Vec<bool>,
    /// Candidate free slots (may hold used or repeated entries: checked against `used`).
    free: Vec<u32>,
    len: usize,
}

impl<T> SpiTable<T> {
    /// A table with `SLOTS` slots (allocated lazily by the OS: empty slots are null).
    pub fn new() -> Self {
        Self::with_slots(SLOTS)
    }

    /// A smaller table (tests, small deployments); `slots` ≤ `SLOTS`.
    pub fn with_slots(slots: usize) -> Self {
        let slots = slots.clamp(1, SLOTS);
        SpiTable {
            slots: (0..slots).map(|_| ArcSwapOption::const_empty()).collect(),
            overflow: ArcSwap::from_pointee(HashMap::new()),
            writer: Mutex::new(WriterState {
                generations: vec![0; slots].into_boxed_slice(),
                used: vec![false; slots],
                free: (0..slots as u32).rev().collect(),
                len: 0,
            }),
        }
    }

    fn writer(&self) -> MutexGuard<'_, WriterState> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn len(&self) -> usize {
        self.writer().len
    }
    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reader: the SA for `spi`, if installed. Lock-free: one `arc_swap` load for allocated
    /// SPIs, no reference-count traffic (the returned guard borrows the entry).
    #[inline]
    pub fn get(&self, spi: u32) -> Option<SaRef<T>> {
        if spi & ALLOCATED != 0 {
            if let Some(slot) = self.slots.get((spi & SLOT_MASK) as usize) {
                let guard = slot.load();
                if guard.as_ref().is_some_and(|e| e.spi == spi) {
                    return Some(SaRef::Slot(guard));
                }
            }
        }
        let map = self.overflow.load();
        map.contains_key(&spi).then_some(SaRef::Overflow(map, spi))
    }

    /// Reader: the SA for `spi` as an owned reference (to keep it past the current batch).
    pub fn get_arc(&self, spi: u32) -> Option<SaArc<T>> {
        match self.get(spi)? {
            SaRef::Slot(g) => g.as_ref().map(|e| SaArc(Arc::clone(e))),
            SaRef::Overflow(m, spi) => m.get(&spi).map(|e| SaArc(Arc::clone(e))),
        }
    }

    /// Writer: allocate an SPI (slot + fresh generation) for a new SA built by `make`.
    pub fn allocate(&self, make: impl FnOnce(u32) -> T) -> Result<u32, TableError> {
        let mut w = self.writer();
        let slot = loop {
            let slot = w.free.pop().ok_or(TableError::Full)?;
            if !w.used[slot as usize] {
                break slot;
            }
        };
        w.used[slot as usize] = true;
        let g = &mut w.generations[slot as usize];
        *g = (*g + 1) & GEN_MASK;
        let spi = compose(*g, slot);
        let value = make(spi);
        self.slots[slot as usize].store(Some(Arc::new(Entry { spi, value })));
        w.len += 1;
        Ok(spi)
    }

    /// Writer: install an SA under an SPI chosen elsewhere. An SPI in the allocated form
    /// (bit 31 set) whose slot is free goes into that slot — the control plane allocates
    /// our inbound SPIs this way — anything else (manual keying) into the overflow map.
    pub fn insert(&self, spi: u32, value: T) -> Result<(), TableError> {
        let mut w = self.writer();
        if self.get(spi).is_some() {
            return Err(TableError::Duplicate(spi));
        }
        if spi & ALLOCATED != 0 {
            let slot = (spi & SLOT_MASK) as usize;
            if let Some(s) = self.slots.get(slot) {
                if !w.used[slot] {
                    // The slot stays in the free list; `allocate` skips used slots.
                    w.used[slot] = true;
                    w.generations[slot] = generation_of(spi);
                    s.store(Some(Arc::new(Entry { spi, value })));
                    w.len += 1;
                    return Ok(());
                }
            }
        }
        let mut m = HashMap::clone(&self.overflow.load());
        m.insert(spi, Arc::new(Entry { spi, value }));
        self.overflow.store(Arc::new(m));
        w.len += 1;
        Ok(())
    }

    /// Writer: replace the SA under `spi` (an update that keeps the SPI). Readers see the
    /// old or the new SA, never a mix.
    pub fn replace(&self, spi: u32, value: T) -> Result<(), TableError> {
        let _w = self.writer();
        if spi & ALLOCATED != 0 {
            if let Some(s) = self.slots.get((spi & SLOT_MASK) as usize) {
                if s.load().as_ref().is_some_and(|e| e.spi == spi) {
                    s.store(Some(Arc::new(Entry { spi, value })));
                    return Ok(());
                }
            }
        }
        let cur = self.overflow.load();
        if !cur.contains_key(&spi) {
            return Err(TableError::NotFound(spi));
        }
        let mut m = HashMap::clone(&cur);
        m.insert(spi, Arc::new(Entry { spi, value }));
        self.overflow.store(Arc::new(m));
        Ok(())
    }

    /// Writer: every installed SPI (for resync reports).
    pub fn spis(&self) -> Vec<u32> {
        let _w = self.writer();
        let mut v: Vec<u32> = self
            .slots
            .iter()
            .filter_map(|s| s.load().as_ref().map(|e| e.spi))
            .collect();
        v.extend(self.overflow.load().keys().copied());
        v
    }

    /// Writer: remove every SA.
    pub fn clear(&self) {
        for spi in self.spis() {
            let _ = self.remove(spi);
        }
    }

    /// Writer: remove an SA. Readers that already hold it finish with it; it is freed (and
    /// its keys zeroized) when the last of them lets go.
    pub fn remove(&self, spi: u32) -> Result<(), TableError> {
        let mut w = self.writer();
        if spi & ALLOCATED != 0 {
            let slot = (spi & SLOT_MASK) as usize;
            if let Some(s) = self.slots.get(slot) {
                if s.load().as_ref().is_some_and(|e| e.spi == spi) {
                    s.store(None);
                    w.used[slot] = false;
                    if w.free.len() > 2 * w.used.len() {
                        // Repeated entries piled up: rebuild from the truth.
                        let free = (0..w.used.len() as u32)
                            .rev()
                            .filter(|&i| !w.used[i as usize])
                            .collect();
                        w.free = free;
                    } else {
                        w.free.push(slot as u32);
                    }
                    w.len -= 1;
                    return Ok(());
                }
            }
        }
        let cur = self.overflow.load();
        if !cur.contains_key(&spi) {
            return Err(TableError::NotFound(spi));
        }
        let mut m = HashMap::clone(&cur);
        m.remove(&spi);
        self.overflow.store(Arc::new(m));
        w.len -= 1;
        Ok(())
    }
}

/// A reader's own copy of a table: plain memory, no atomic operation on a lookup, so the
/// cache misses of independent lookups overlap (an `arc_swap` load is a locked instruction,
/// which serialises them). Each worker keeps one, updated between batches from the control
/// thread's changes. It holds a reference on each SA: a removed SA is freed — its keys
/// zeroized — once every replica has applied the removal and the table has let go.
pub struct SpiReplica<T> {
    slots: Vec<Option<SaArc<T>>>,
    overflow: HashMap<u32, SaArc<T>>,
}

impl<T> Default for SpiReplica<T> {
    fn default() -> Self {
        SpiReplica {
            slots: Vec::new(),
            overflow: HashMap::new(),
        }
    }
}

impl<T> SpiReplica<T> {
    /// A copy of everything in `table` now.
    pub fn from_table(table: &SpiTable<T>) -> Self {
        let mut r = SpiReplica {
            slots: (0..table.slots()).map(|_| None).collect(),
            overflow: HashMap::new(),
        };
        for spi in table.spis() {
            if let Some(sa) = table.get_arc(spi) {
                r.insert(spi, sa);
            }
        }
        r
    }

    /// The SA for `spi`.
    #[inline]
    pub fn get(&self, spi: u32) -> Option<&T> {
        if is_allocated_form(spi) {
            if let Some(Some(e)) = self.slots.get(slot_of(spi)) {
                if e.spi() == spi {
                    return Some(e);
                }
            }
        }
        self.overflow.get(&spi).map(|e| &**e)
    }

    /// Install or replace.
    pub fn insert(&mut self, spi: u32, sa: SaArc<T>) {
        if is_allocated_form(spi) {
            if let Some(slot) = self.slots.get_mut(slot_of(spi)) {
                if slot.as_ref().is_none_or(|e| e.spi() == spi) {
                    *slot = Some(sa);
                    return;
                }
            }
        }
        self.overflow.insert(spi, sa);
    }

    pub fn remove(&mut self, spi: u32) {
        if is_allocated_form(spi) {
            if let Some(slot) = self.slots.get_mut(slot_of(spi)) {
                if slot.as_ref().is_some_and(|e| e.spi() == spi) {
                    *slot = None;
                    return;
                }
            }
        }
        self.overflow.remove(&spi);
    }

    pub fn clear(&mut self) {
        self.slots.iter_mut().for_each(|s| *s = None);
        self.overflow.clear();
    }
}

impl<T> Default for SpiTable<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::atomic::{AtomicUsize, Ordering};

    /// An SA that counts its drops (where its keys would be zeroized).
    struct Sa {
        spi: u32,
        drops: Arc<AtomicUsize>,
    }
    impl Drop for Sa {
        fn drop(&mut self) {
            self.drops.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A reader looks up an SPI while the writer deletes that SA and reuses its slot for a
    /// new one: the reader finds the old SA or nothing — never the new SA under the old SPI —
    /// and the old SA is freed exactly once, after the reader let go of it.
    #[test]
    fn loom_stale_spi_never_hits_the_reused_slot() {
        loom::model(|| {
            let drops = Arc::new(AtomicUsize::new(0));
            let t = Arc::new(SpiTable::<Sa>::with_slots(1));
            let d = Arc::clone(&drops);
            let old = t.allocate(|spi| Sa { spi, drops: d }).unwrap();
            let reader = {
                let (t, drops) = (Arc::clone(&t), Arc::clone(&drops));
                loom::thread::spawn(move || {
                    if let Some(sa) = t.get(old) {
                        assert_eq!(sa.spi, old, "a stale SPI found another SA");
                        // While we hold it, it is not freed.
                        assert_eq!(drops.load(Ordering::SeqCst), 0);
                    }
                })
            };
            t.remove(old).unwrap();
            let d = Arc::clone(&drops);
            let new = t.allocate(|spi| Sa { spi, drops: d }).unwrap();
            assert_ne!(new, old);
            reader.join().unwrap();
            assert_eq!(
                drops.load(Ordering::SeqCst),
                1,
                "the removed SA was freed once"
            );
            assert_eq!(t.get(new).map(|s| s.spi), Some(new));
        });
    }

    /// Manually keyed SAs (the copy-on-write overflow map): a reader sees an SA whole or not
    /// at all while another is inserted and a third removed.
    #[test]
    fn loom_overflow_map_updates_are_atomic() {
        loom::model(|| {
            let drops = Arc::new(AtomicUsize::new(0));
            let t = Arc::new(SpiTable::<Sa>::with_slots(1));
            let d = Arc::clone(&drops);
            t.insert(
                0x100,
                Sa {
                    spi: 0x100,
                    drops: d,
                },
            )
            .unwrap();
            let reader = {
                let t = Arc::clone(&t);
                loom::thread::spawn(move || {
                    for spi in [0x100, 0x200] {
                        if let Some(sa) = t.get(spi) {
                            assert_eq!(sa.spi, spi);
                        }
                    }
                })
            };
            let d = Arc::clone(&drops);
            t.insert(
                0x200,
                Sa {
                    spi: 0x200,
                    drops: d,
                },
            )
            .unwrap();
            t.remove(0x100).unwrap();
            reader.join().unwrap();
            assert_eq!(drops.load(Ordering::SeqCst), 1);
            assert!(t.get(0x100).is_none() && t.get(0x200).is_some());
        });
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    #[test]
    fn compose_is_what_allocate_hands_out() {
        assert_eq!(compose(1, 1), 0x8010_0001);
        assert_eq!(
            compose(GEN_MASK + 1, SLOT_MASK + 1),
            compose(0, 0),
            "truncated"
        );
        assert_eq!(generation_of(compose(0x5a5, 7)), 0x5a5);
        assert_eq!(slot_of(compose(0x5a5, 7)), 7);
        let t: SpiTable<u8> = SpiTable::with_slots(4);
        let a = t.allocate(|_| 0).unwrap();
        assert_eq!(a, compose(1, slot_of(a) as u32));
        t.remove(a).unwrap();
        let b = t.allocate(|_| 0).unwrap();
        if slot_of(b) == slot_of(a) {
            assert_eq!(
                generation_of(b),
                2,
                "a reused slot gets the next generation"
            );
        }
    }

    #[test]
    fn allocate_lookup_remove_and_stale_generation() {
        let t: SpiTable<u32> = SpiTable::with_slots(4);
        let a = t.allocate(|spi| spi).unwrap();
        assert!(a >= 256 && a & ALLOCATED != 0);
        assert_eq!(*t.get(a).unwrap(), a);
        t.remove(a).unwrap();
        assert!(t.get(a).is_none());
        // The slot is reused with another generation: the old SPI must not find the new SA.
        let b = t.allocate(|spi| spi).unwrap();
        assert_eq!(a & SLOT_MASK, b & SLOT_MASK);
        assert_ne!(a, b);
        assert!(t.get(a).is_none());
        assert_eq!(*t.get(b).unwrap(), b);
        assert_eq!(t.remove(a), Err(TableError::NotFound(a)));
        for _ in 0..3 {
            t.allocate(|s| s).unwrap();
        }
        assert_eq!(t.allocate(|s| s), Err(TableError::Full));
    }

    #[test]
    fn manual_spis_use_the_overflow_map() {
        let t: SpiTable<&str> = SpiTable::with_slots(4);
        t.insert(0x1001, "manual").unwrap();
        assert_eq!(
            t.insert(0x1001, "again"),
            Err(TableError::Duplicate(0x1001))
        );
        assert_eq!(*t.get(0x1001).unwrap(), "manual");
        // An SPI in the allocated form takes its slot when free, with its generation...
        t.insert(0x8020_0003, "high").unwrap();
        assert_eq!(*t.get(0x8020_0003).unwrap(), "high");
        assert!(t.get(0x8000_0003).is_none(), "another generation misses");
        // ...and falls back to the map when the slot is taken.
        t.insert(0x8040_0003, "clash").unwrap();
        assert_eq!(*t.get(0x8040_0003).unwrap(), "clash");
        assert_eq!(*t.get(0x8020_0003).unwrap(), "high");
        t.replace(0x8020_0003, "updated").unwrap();
        assert_eq!(*t.get(0x8020_0003).unwrap(), "updated");
        t.remove(0x8040_0003).unwrap();
        let mut spis = t.spis();
        spis.sort();
        assert_eq!(spis, vec![0x1001, 0x8020_0003]);
        t.remove(0x1001).unwrap();
        assert!(t.get(0x1001).is_none());
        assert_eq!(t.len(), 1);
        t.clear();
        assert!(t.is_empty());
    }

    #[test]
    fn replicas_follow_the_table_and_hold_sas_until_they_let_go() {
        struct Sa(Arc<AtomicUsize>);
        impl Drop for Sa {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let drops = Arc::new(AtomicUsize::new(0));
        let t: SpiTable<Sa> = SpiTable::with_slots(4);
        let a = t.allocate(|_| Sa(Arc::clone(&drops))).unwrap();
        t.insert(0x1234, Sa(Arc::clone(&drops))).unwrap();
        let mut r = SpiReplica::from_table(&t);
        assert!(r.get(a).is_some() && r.get(0x1234).is_some());
        assert!(
            r.get(a ^ (1 << SLOT_BITS)).is_none(),
            "another generation misses"
        );
        let b = t.allocate(|_| Sa(Arc::clone(&drops))).unwrap();
        assert!(r.get(b).is_none(), "not until the change arrives");
        r.insert(b, t.get_arc(b).unwrap());
        assert!(r.get(b).is_some());
        // Removed from the table: still alive while the replica holds it.
        t.remove(a).unwrap();
        assert_eq!(drops.load(Ordering::Relaxed), 0);
        r.remove(a);
        assert_eq!(drops.load(Ordering::Relaxed), 1);
        t.remove(0x1234).unwrap();
        r.clear();
        assert_eq!(drops.load(Ordering::Relaxed), 2);
        assert!(r.get(b).is_none());
    }

    /// Readers hammer lookups while the writer installs and removes; a reader never sees an
    /// SA under the wrong SPI, and every removed SA is freed once readers let go.
    #[test]
    fn concurrent_readers_see_whole_sas_only() {
        struct Sa {
            spi: u32,
            drops: Arc<AtomicUsize>,
        }
        impl Drop for Sa {
            fn drop(&mut self) {
                self.drops.fetch_add(1, Ordering::Relaxed);
            }
        }
        let drops = Arc::new(AtomicUsize::new(0));
        let t = Arc::new(SpiTable::<Sa>::with_slots(64));
        let stop = Arc::new(AtomicBool::new(false));
        let mut readers = Vec::new();
        for r in 0..2u32 {
            let (t, stop) = (Arc::clone(&t), Arc::clone(&stop));
            readers.push(std::thread::spawn(move || {
                let mut hits = 0u64;
                let mut x = r;
                while !stop.load(Ordering::Relaxed) {
                    // Probe every slot with every generation seen so far (a cheap scan).
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    let spi = compose((x >> 8) as u16, x & 63);
                    if let Some(sa) = t.get(spi) {
                        assert_eq!(sa.spi, spi);
                        hits += 1;
                    }
                }
                hits
            }));
        }
        let mut live = Vec::new();
        let mut removed = 0;
        for round in 0..20_000 {
            let d = Arc::clone(&drops);
            if live.len() < 60 {
                live.push(t.allocate(|spi| Sa { spi, drops: d }).unwrap());
            }
            if round % 2 == 0 && !live.is_empty() {
                let victim = live.swap_remove(round % live.len());
                t.remove(victim).unwrap();
                removed += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        let hits: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
        eprintln!("{hits} concurrent hits");
        assert_eq!(
            drops.load(Ordering::Relaxed),
            removed,
            "every removed SA was freed"
        );
        assert_eq!(t.len(), live.len());
    }
}
