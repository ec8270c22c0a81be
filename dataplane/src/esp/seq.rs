//! Outbound sequence numbers shared by several workers (RFC 4303 §3.3.3): each batch
//! reserves a run of consecutive numbers with one compare-and-swap, so numbers are unique
//! and increasing per SA however many workers send on it, at one atomic per batch rather
//! than per packet. Packets of concurrent batches interleave on the wire by at most a batch,
//! well inside the receiver's replay window.
//!
//! A CAS (not `fetch_add`) because the counter must stop at the limit: with ESN the limit is
//! 2^64 − 1 and an unconditional add would wrap and repeat numbers.

use crate::sync::atomic::{AtomicU64, Ordering};
use std::ops::RangeInclusive;

/// The shared counter of one outbound SA.
#[derive(Debug)]
pub struct SeqCounter {
    /// Last number handed out (0: none yet).
    last: AtomicU64,
    limit: u64,
    /// The lease: no number above it is handed out until the control thread has persisted
    /// a higher one (`u64::MAX`: no lease). See `shm::counters`.
    ceiling: AtomicU64,
}

impl SeqCounter {
    /// 32-bit sequence numbers stop at 2^32 − 1, extended ones at 2^64 − 1.
    pub fn new(esn: bool) -> SeqCounter {
        SeqCounter::with_limit(if esn { u64::MAX } else { u64::from(u32::MAX) })
    }

    pub fn with_limit(limit: u64) -> SeqCounter {
        SeqCounter {
            last: AtomicU64::new(0),
            limit,
            ceiling: AtomicU64::new(u64::MAX),
        }
    }

    /// Reserve up to `n` consecutive numbers. Fewer (or none) near the limit: the SA is then
    /// exhausted and must be rekeyed.
    pub fn reserve(&self, n: u64) -> Option<RangeInclusive<u64>> {
        let mut cur = self.last.load(Ordering::Relaxed);
        // Acquire pairs with `set_ceiling`: the lease was persisted before it was raised.
        let cap = self.limit.min(self.ceiling.load(Ordering::Acquire));
        loop {
            if cur >= cap || n == 0 {
                return None;
            }
            let end = cur.saturating_add(n).min(cap);
            // Relaxed is enough: the numbers are the only data, and the CAS makes each
            // reservation exclusive.
            match self
                .last
                .compare_exchange_weak(cur, end, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Some(cur + 1..=end),
                Err(now) => cur = now,
            }
        }
    }

    /// Continue numbering after `seq` (restoring an SA; tests near the limits).
    pub fn set_last(&self, seq: u64) {
        self.last.store(seq.min(self.limit), Ordering::Relaxed);
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Allow numbers up to `ceiling` (the persisted lease).
    pub fn set_ceiling(&self, ceiling: u64) {
        self.ceiling.store(ceiling, Ordering::Release);
    }

    pub fn ceiling(&self) -> u64 {
        self.ceiling.load(Ordering::Relaxed)
    }

    /// The last number handed out.
    pub fn last(&self) -> u64 {
        self.last.load(Ordering::Relaxed)
    }

    pub fn is_exhausted(&self) -> bool {
        self.last() >= self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn reservations_stop_exactly_at_the_limit() {
        let c = SeqCounter::with_limit(10);
        assert_eq!(c.reserve(4), Some(1..=4));
        assert_eq!(c.reserve(4), Some(5..=8));
        assert_eq!(c.reserve(4), Some(9..=10));
        assert_eq!(c.reserve(1), None);
        assert!(c.is_exhausted());
        let esn = SeqCounter::new(true);
        esn.last.store(u64::MAX - 2, Ordering::Relaxed);
        assert_eq!(esn.reserve(64), Some(u64::MAX - 1..=u64::MAX));
        assert_eq!(esn.reserve(1), None, "never wraps");
    }

    /// Several threads reserving batches never get a duplicate, and together they use every
    /// number up to the limit exactly once.
    #[test]
    fn threads_never_share_a_number() {
        const LIMIT: u64 = 2_000_000;
        let c = Arc::new(SeqCounter::with_limit(LIMIT));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let c = Arc::clone(&c);
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    let mut k = t;
                    while let Some(r) = c.reserve(1 + k % 64) {
                        got.push(r);
                        k = k.wrapping_mul(6364136223846793005).wrapping_add(1);
                    }
                    got
                })
            })
            .collect();
        let mut seen = vec![false; LIMIT as usize + 1];
        for t in threads {
            for r in t.join().unwrap() {
                for s in r {
                    assert!(!seen[s as usize], "sequence number {s} handed out twice");
                    seen[s as usize] = true;
                }
            }
        }
        assert!(!seen[0]);
        assert!(seen[1..].iter().all(|&b| b), "every number used");
    }
}
