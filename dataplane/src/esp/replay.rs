//! Anti-replay (RFC 4303 §3.4.3) and extended-sequence-number inference (RFC 4303 App. A).
//!
//! The window is an RFC 6479 ring of 64-bit words: bit `s mod N` records sequence number `s`,
//! and sliding the window forward clears only the words it passes over instead of shifting
//! the whole bitmap. One spare word beyond the configured window keeps the bits still inside
//! the window from being cleared by a slide.

/// Smallest and largest configurable window, in sequence numbers.
pub const MIN_WINDOW: u32 = 64;
pub const MAX_WINDOW: u32 = 65536;

/// Why a sequence number was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayError {
    /// Already seen.
    Duplicate,
    /// Left of the window: too old to tell.
    TooOld,
    /// Sequence number 0 is never sent (RFC 4303 §3.3.3: the first packet has 1).
    Zero,
}

/// The receive window of one inbound SA.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// Highest sequence number accepted so far (64-bit, ESN or not); 0 before the first.
    top: u64,
    /// Window size in sequence numbers.
    size: u64,
    bitmap: Box<[u64]>,
    /// `bitmap.len() - 1`; the length is a power of two.
    word_mask: u64,
}

impl ReplayWindow {
    /// A window of `size` sequence numbers, clamped to `MIN_WINDOW..=MAX_WINDOW`.
    pub fn new(size: u32) -> ReplayWindow {
        let size = size.clamp(MIN_WINDOW, MAX_WINDOW);
        // One spare word so a slide never clears bits still inside the window (RFC 6479 §2).
        let words = (size as usize / 64 + 1).next_power_of_two();
        ReplayWindow {
            top: 0,
            size: u64::from(size),
            bitmap: vec![0u64; words].into_boxed_slice(),
            word_mask: words as u64 - 1,
        }
    }

    pub fn size(&self) -> u32 {
        self.size as u32
    }

    /// The highest sequence number accepted so far.
    pub fn top(&self) -> u64 {
        self.top
    }

    fn locate(&self, seq: u64) -> (usize, u64) {
        (((seq >> 6) & self.word_mask) as usize, 1u64 << (seq & 63))
    }

    /// Forget all state and treat `seq` as the highest number seen (its bit stays clear).
    pub fn reset_top(&mut self, seq: u64) {
        self.bitmap.iter_mut().for_each(|w| *w = 0);
        self.top = seq;
    }

    /// RFC 4303 §3.4.3: the check done *before* the ICV is verified. Never changes state.
    pub fn check(&self, seq: u64) -> Result<(), ReplayError> {
        if seq == 0 {
            return Err(ReplayError::Zero);
        }
        if seq > self.top {
            return Ok(());
        }
        if seq + self.size <= self.top {
            return Err(ReplayError::TooOld);
        }
        let (w, bit) = self.locate(seq);
        if self.bitmap[w] & bit != 0 {
            Err(ReplayError::Duplicate)
        } else {
            Ok(())
        }
    }

    /// RFC 4303 §3.4.3: advance the window, called only *after* the ICV verified.
    /// Re-checks, so a caller that raced two copies of one packet still accepts it once.
    pub fn accept(&mut self, seq: u64) -> Result<(), ReplayError> {
        self.check(seq)?;
        if seq > self.top {
            let cur = self.top >> 6;
            let new = seq >> 6;
            // Clear the words the window slides over; at most the whole ring.
            let n = (new - cur).min(self.word_mask + 1);
            for i in 1..=n {
                let w = ((cur + i) & self.word_mask) as usize;
                self.bitmap[w] = 0;
            }
            self.top = seq;
        }
        let (w, bit) = self.locate(seq);
        self.bitmap[w] |= bit;
        Ok(())
    }

    /// RFC 4303 Appendix A2.2: reconstruct the full 64-bit sequence number from its low
    /// 32 bits, assuming it lies within the window or ahead of it. `None` when the number
    /// would fall before sequence number 0 (it can only be a replay or garbage).
    pub fn infer_esn(&self, seq_low: u32) -> Option<u64> {
        infer_esn_at(self.top, self.size, seq_low)
    }

    /// [`ReplayWindow::infer_esn`] as it would answer once `seq` were accepted (the window
    /// top moved up to `seq`), without changing the window: lets a batch see whether a
    /// packet's inference depends on the one before it.
    pub fn infer_esn_after(&self, seq: u64, seq_low: u32) -> Option<u64> {
        infer_esn_at(self.top.max(seq), self.size, seq_low)
    }
}

/// RFC 4303 Appendix A2.2 for a window of `w` numbers whose highest is `top`.
fn infer_esn_at(top: u64, w: u64, seq_low: u32) -> Option<u64> {
    let tl = top & 0xffff_ffff;
    let th = top >> 32;
    let sl = u64::from(seq_low);
    let hi = if tl >= w - 1 {
        // Case A: the window lies within one 2^32 block.
        if sl + w > tl {
            th
        } else {
            th + 1
        }
    } else {
        // Case B: the window spans a 2^32 boundary.
        let bottom = (tl + (1 << 32) - w + 1) & 0xffff_ffff;
        if sl >= bottom {
            th.checked_sub(1)?
        } else {
            th
        }
    };
    Some((hi << 32) | sl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_in_window_once_and_refuses_old() {
        let mut w = ReplayWindow::new(64);
        assert_eq!(w.check(0), Err(ReplayError::Zero));
        for s in [1u64, 5, 3, 100, 40, 37] {
            assert_eq!(w.accept(s), Ok(()), "{s}");
            assert_eq!(w.accept(s), Err(ReplayError::Duplicate), "{s}");
        }
        assert_eq!(w.check(36), Err(ReplayError::TooOld));
        assert_eq!(w.check(37), Err(ReplayError::Duplicate));
        assert_eq!(w.check(38), Ok(()));
        assert_eq!(w.top(), 100);
    }

    #[test]
    fn big_jump_clears_everything() {
        let mut w = ReplayWindow::new(128);
        for s in 1..=128u64 {
            w.accept(s).unwrap();
        }
        w.accept(1_000_000).unwrap();
        for s in 1_000_000 - 127..1_000_000u64 {
            assert_eq!(w.check(s), Ok(()), "{s}");
        }
    }

    #[test]
    fn infers_high_half_across_2_32() {
        let mut w = ReplayWindow::new(64);
        w.accept((1 << 32) - 10).unwrap();
        // Just below the top, same block.
        assert_eq!(w.infer_esn(u32::MAX - 20), Some((1 << 32) - 21));
        // Wrapped to the next block.
        assert_eq!(w.infer_esn(3), Some((1 << 32) + 3));
        w.accept((1 << 32) + 3).unwrap();
        // Case B: window spans the boundary; a number just before it belongs to block 0.
        assert_eq!(w.infer_esn(u32::MAX - 5), Some((1 << 32) - 6));
        assert_eq!(w.infer_esn(10), Some((1 << 32) + 10));
        // Early in block 0, a number "before 0" is impossible.
        let fresh = ReplayWindow::new(64);
        assert_eq!(fresh.infer_esn(u32::MAX), None);
        assert_eq!(fresh.infer_esn(1), Some(1));
    }
}
