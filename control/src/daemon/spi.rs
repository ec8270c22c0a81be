//! Our inbound ESP SPIs, in the dataplane's SPI-table form.
//!
//! The dataplane finds an inbound SA by masking the slot out of its SPI (see
//! `dataplane::satable`): `1 | generation (11 bits) | slot (20 bits)`. We pick slot and
//! generation at random, so a restarted daemon does not hand out the SPIs of its previous
//! run again (same SPI, new keys: a peer or a capture would confuse the two), and skip the
//! SPIs that are in use (ours, or inherited from a previous run and still in the dataplane).

use std::collections::HashSet;

use crate::ike::sa::{Random, SpiAllocator};

const ALLOCATED: u32 = 1 << 31;
const SLOT_BITS: u32 = 20;
const GEN_BITS: u32 = 11;

/// The SPI naming `slot` with `generation` (the dataplane table's allocated form).
pub fn compose(generation: u16, slot: u32) -> u32 {
    ALLOCATED
        | ((u32::from(generation) & ((1 << GEN_BITS) - 1)) << SLOT_BITS)
        | (slot & ((1 << SLOT_BITS) - 1))
}

/// Random inbound SPIs that avoid those in use.
#[derive(Debug, Default)]
pub struct SpiPool {
    in_use: HashSet<u32>,
    reserve: Vec<u32>,
}

impl SpiPool {
    /// A fresh SPI, marked in use until [`SpiPool::release`].
    pub fn alloc(&mut self, rng: &mut dyn Random) -> u32 {
        loop {
            let mut b = [0u8; 4];
            rng.fill(&mut b);
            let r = u32::from_be_bytes(b);
            // Generation 0 is what the table gives a never-used slot: leave it to the
            // table's own allocator.
            let generation = ((r >> SLOT_BITS) & ((1 << GEN_BITS) - 1)) as u16;
            if generation == 0 {
                continue;
            }
            let spi = compose(generation, r);
            if self.in_use.insert(spi) {
                return spi;
            }
        }
    }

    /// An SPI the dataplane already holds (inherited from a previous run).
    pub fn reserve(&mut self, spi: u32) {
        self.in_use.insert(spi);
    }

    pub fn release(&mut self, spi: u32) {
        self.in_use.remove(&spi);
    }

    pub fn in_use(&self) -> usize {
        self.in_use.len()
    }
}

impl SpiPool {
    /// Draw random values for the allocations an IKE SA may make while handling one
    /// message (it borrows the daemon's random source itself meanwhile).
    pub fn refill(&mut self, rng: &mut dyn Random) {
        while self.reserve.len() < RESERVE {
            let spi = self.alloc(rng);
            self.in_use.remove(&spi);
            self.reserve.push(spi);
        }
    }
}

/// Values drawn ahead by [`SpiPool::refill`].
const RESERVE: usize = 8;

impl SpiAllocator for SpiPool {
    fn alloc_spi(&mut self) -> u32 {
        while let Some(spi) = self.reserve.pop() {
            if self.in_use.insert(spi) {
                return spi;
            }
        }
        // More Child SAs in one message than drawn ahead: derive from the last ones.
        let mut x = self.in_use.len() as u32 ^ 0x9e37_79b9;
        loop {
            x = x.wrapping_mul(0x0019_660d).wrapping_add(0x3c6e_f35f);
            let spi = compose(((x >> 20) & 0x7fe) as u16 | 1, x);
            if self.in_use.insert(spi) {
                return spi;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counter(u64);
    impl Random for Counter {
        fn fill(&mut self, buf: &mut [u8]) {
            for b in buf {
                self.0 = self
                    .0
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                *b = (self.0 >> 56) as u8;
            }
        }
    }

    #[test]
    fn spis_have_the_table_form_and_are_never_handed_out_twice() {
        let mut pool = SpiPool::default();
        let mut rng = Counter(7);
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            let spi = pool.alloc(&mut rng);
            assert!(
                spi & ALLOCATED != 0,
                "{spi:#x}: bit 31 keeps it clear of 0..255"
            );
            assert_ne!((spi >> SLOT_BITS) & 0x7ff, 0, "generation 0 is the table's");
            assert!(seen.insert(spi), "{spi:#x} twice");
        }
        assert_eq!(pool.in_use(), 10_000);
    }

    #[test]
    fn reserved_spis_are_skipped_and_released_ones_may_return() {
        let mut pool = SpiPool::default();
        let first = pool.alloc(&mut Counter(1));
        pool.release(first);
        pool.reserve(first);
        assert_ne!(
            pool.alloc(&mut Counter(1)),
            first,
            "a reserved SPI is not reused"
        );
    }

    #[test]
    fn two_runs_start_elsewhere() {
        // A restarted daemon draws from its own random source: not 0x80100001 again.
        let a = SpiPool::default().alloc(&mut Counter(1));
        let b = SpiPool::default().alloc(&mut Counter(2));
        assert_ne!(a, b);
    }

    #[test]
    fn drawn_ahead_values_serve_the_ike_sa() {
        let mut pool = SpiPool::default();
        pool.refill(&mut Counter(3));
        let a = pool.alloc_spi();
        let b = pool.alloc_spi();
        assert_ne!(a, b);
        assert_eq!(pool.in_use(), 2);
        for _ in 0..20 {
            assert!(pool.alloc_spi() & ALLOCATED != 0, "past the reserve too");
        }
    }

    #[test]
    fn compose_matches_the_layout() {
        assert_eq!(compose(1, 1), 0x8010_0001);
        assert_eq!(compose(0x7ff, 0xfffff), 0xffff_ffff);
    }
}
