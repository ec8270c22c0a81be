//! The single-producer/single-consumer protocol of one ring, written once over [`RingMem`]
//! so the same code runs on the mapped file and, under the `loom` feature, on a model whose slots
//! are loom cells: the model checker then proves, for every interleaving of the small
//! cases, that the consumer reads only slots the producer finished (no data race on slot
//! memory) and that records arrive whole and in order.
//!
//! Free-running 32-bit indexes, masked by the power-of-two capacity (DPDK `rte_ring`).
//! Index 0 is the producer's, 1 the consumer's; each is written by one side only.

use std::sync::atomic::Ordering;

use super::ShmError;

/// The memory of one ring.
pub(crate) trait RingMem {
    fn capacity(&self) -> u32;
    fn max_record(&self) -> usize;
    fn load_index(&self, which: usize, o: Ordering) -> u32;
    fn store_index(&self, which: usize, v: u32, o: Ordering);
    /// Write a record into slot `i` (owned by the producer).
    fn write_slot(&self, i: u32, rec: &[u8]);
    /// Copy slot `i` out, zero it, return the length copied (owned by the consumer).
    fn take_slot(&self, i: u32, out: &mut [u8]) -> usize;
}

pub(crate) const PRODUCER: usize = 0;
pub(crate) const CONSUMER: usize = 1;

/// Append `rec` at `*next` if there is room.
pub(crate) fn try_push<M: RingMem>(m: &M, next: &mut u32, rec: &[u8]) -> Result<bool, ShmError> {
    let max = m.max_record();
    if rec.len() > max {
        return Err(ShmError::TooBig {
            len: rec.len(),
            max,
        });
    }
    // Acquire: the consumer's copy-out and zeroing of freed slots happen-before our writes.
    let cons = m.load_index(CONSUMER, Ordering::Acquire);
    if next.wrapping_sub(cons) >= m.capacity() {
        return Ok(false);
    }
    m.write_slot(*next, rec);
    *next = next.wrapping_add(1);
    // Release: the slot contents become visible before the index that covers them. A
    // producer killed before this store leaves the record invisible.
    m.store_index(PRODUCER, *next, Ordering::Release);
    Ok(true)
}

/// Take the record at `*next`, if one is published.
pub(crate) fn pop<M: RingMem>(m: &M, next: &mut u32, out: &mut [u8]) -> Option<usize> {
    // Acquire: pairs with the producer's release; the slot is fully written.
    let prod = m.load_index(PRODUCER, Ordering::Acquire);
    if prod == *next {
        return None;
    }
    let n = m.take_slot(*next, out);
    *next = next.wrapping_add(1);
    // Release: our reads and the zeroing happen-before the producer reuses the slot.
    m.store_index(CONSUMER, *next, Ordering::Release);
    Some(n)
}

#[cfg(all(test, feature = "loom"))]
mod loom_tests {
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::atomic::AtomicU32;
    use loom::sync::Arc;

    const SLOT: usize = 8;

    /// The ring in loom's memory model: slot accesses are checked for data races.
    struct Model {
        idx: [AtomicU32; 2],
        slots: Vec<UnsafeCell<[u8; SLOT]>>,
    }

    impl RingMem for Model {
        fn capacity(&self) -> u32 {
            self.slots.len() as u32
        }
        fn max_record(&self) -> usize {
            SLOT - 1
        }
        fn load_index(&self, which: usize, o: Ordering) -> u32 {
            self.idx[which].load(o)
        }
        fn store_index(&self, which: usize, v: u32, o: Ordering) {
            self.idx[which].store(v, o)
        }
        fn write_slot(&self, i: u32, rec: &[u8]) {
            let s = &self.slots[(i % self.capacity()) as usize];
            s.with_mut(|p| {
                // SAFETY: loom tracks this access; a protocol bug is reported as a race.
                let slot = unsafe { &mut *p };
                slot[0] = rec.len() as u8;
                slot[1..1 + rec.len()].copy_from_slice(rec);
            });
        }
        fn take_slot(&self, i: u32, out: &mut [u8]) -> usize {
            let s = &self.slots[(i % self.capacity()) as usize];
            s.with_mut(|p| {
                // SAFETY: as above.
                let slot = unsafe { &mut *p };
                let n = usize::from(slot[0]).min(out.len());
                out[..n].copy_from_slice(&slot[1..1 + n]);
                *slot = [0; SLOT];
                n
            })
        }
    }

    fn model(cap: usize) -> Arc<Model> {
        Arc::new(Model {
            idx: [AtomicU32::new(0), AtomicU32::new(0)],
            slots: (0..cap).map(|_| UnsafeCell::new([0; SLOT])).collect(),
        })
    }

    /// Producer and consumer on a 2-slot ring, 3 records (so slots are reused): every
    /// interleaving delivers them whole, in order, once; no slot is read while written.
    #[test]
    fn loom_ring_delivers_whole_records_in_order() {
        loom::model(|| {
            let m = model(2);
            let p = {
                let m = Arc::clone(&m);
                loom::thread::spawn(move || {
                    let mut next = 0;
                    for k in 0..3u8 {
                        let rec = [k, k ^ 0x5a, k.wrapping_mul(7)];
                        while !try_push(&*m, &mut next, &rec).unwrap() {
                            loom::thread::yield_now();
                        }
                    }
                })
            };
            let mut next = 0;
            let mut out = [0u8; SLOT];
            for k in 0..3u8 {
                let n = loop {
                    if let Some(n) = pop(&*m, &mut next, &mut out) {
                        break n;
                    }
                    loom::thread::yield_now();
                };
                assert_eq!(&out[..n], &[k, k ^ 0x5a, k.wrapping_mul(7)]);
            }
            p.join().unwrap();
        });
    }

    /// A full ring refuses (backpressure) instead of overwriting an unread record.
    #[test]
    fn loom_full_ring_never_overwrites() {
        loom::model(|| {
            let m = model(1);
            let mut pn = 0;
            assert!(try_push(&*m, &mut pn, &[1]).unwrap());
            let c = {
                let m = Arc::clone(&m);
                loom::thread::spawn(move || {
                    let mut next = 0;
                    let mut out = [0u8; SLOT];
                    let n = pop(&*m, &mut next, &mut out).expect("published");
                    (n, out[0])
                })
            };
            // Either refused (consumer not done) or accepted into the freed slot.
            let second = try_push(&*m, &mut pn, &[2]).unwrap();
            assert_eq!(
                c.join().unwrap(),
                (1, 1),
                "the first record is never overwritten"
            );
            if !second {
                assert!(try_push(&*m, &mut pn, &[2]).unwrap());
            }
        });
    }
}
