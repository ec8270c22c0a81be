//! What every sans-IO IKE test needs from the daemon: a deterministic random source and an
//! SPI allocator (shared by the IKE test files).
#![allow(dead_code)]

use control::ike::sa::{Random, SpiAllocator};

/// xorshift64: deterministic per seed (never 0).
pub struct Seeded(pub u64);
impl Random for Seeded {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *b = self.0 as u8;
        }
    }
}

/// The daemon's SPI allocator, as a counter.
pub struct Counter(pub u32);
impl SpiAllocator for Counter {
    fn alloc_spi(&mut self) -> u32 {
        let s = self.0;
        self.0 += 1;
        s
    }
}
