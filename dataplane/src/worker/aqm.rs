//! Bounded queueing on the receive rings: CoDel's control law (RFC 8289) on persistent ring
//! occupancy.
//!
//! AF_XDP in copy mode carries no receive timestamps, so the sojourn time CoDel wants is
//! not known per packet. What the worker does know, each poll, is how many packets are
//! still waiting in a ring after it took its batch. A ring that still holds more than
//! `limit` packets after every batch for a whole `interval` has a *standing* queue (a burst
//! drains within the interval, a standing queue does not) — CoDel's "sojourn above target
//! for an interval" (RFC 8289 §3.2), with the backlog standing in for the sojourn (at the
//! worker's drain rate, `limit` packets are a fixed wait). Then, as CoDel does (§3.3,
//! §5.4), one packet is dropped at the head, and while the queue stays, the next drop
//! comes `interval / sqrt(count)` later, so a TCP sender halves its window until the
//! queue is gone. Each drop is counted (`aqm_standing_queue`).
//!
//! Pure: the caller passes the time and the backlog, so the state machine is tested
//! without a clock.

use std::time::{Duration, Instant};

/// CoDel's state for one ring (or one side's rings).
#[derive(Debug, Clone)]
pub struct Aqm {
    limit: usize,
    interval: Duration,
    /// When the backlog went above `limit` plus `interval` (None: not above).
    first_above: Option<Instant>,
    dropping: bool,
    drop_next: Option<Instant>,
    count: u32,
    last_count: u32,
}

impl Aqm {
    /// Drop when more than `limit` packets stay queued after every batch for `interval`.
    /// `limit` 0 turns the AQM off (the ring's own size bounds the queue).
    pub fn new(limit: usize, interval: Duration) -> Aqm {
        Aqm {
            limit,
            interval,
            first_above: None,
            dropping: false,
            drop_next: None,
            count: 0,
            last_count: 0,
        }
    }

    /// The backlog above which the queue counts as standing (0: off).
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// True when this AQM never drops.
    pub fn is_off(&self) -> bool {
        self.limit == 0
    }

    /// RFC 8289 §5.4's `control_law`: the next drop, `interval / sqrt(count)` after `t`.
    fn control_law(&self, t: Instant) -> Instant {
        t + self.interval.div_f64(f64::from(self.count.max(1)).sqrt())
    }

    /// After a batch was taken from the ring: `backlog` packets still wait at `now`.
    /// True if the batch's head packet should be dropped (RFC 8289 §5.5, `dodequeue` and
    /// the dropping state machine, one decision per batch).
    pub fn on_batch(&mut self, now: Instant, backlog: usize) -> bool {
        if self.is_off() {
            return false;
        }
        // §5.5 dodequeue: ok_to_drop once the queue stayed above the limit for an interval.
        let ok_to_drop = if backlog <= self.limit {
            self.first_above = None;
            false
        } else {
            match self.first_above {
                None => {
                    self.first_above = Some(now + self.interval);
                    false
                }
                Some(t) => now >= t,
            }
        };
        if self.dropping {
            if !ok_to_drop {
                self.dropping = false;
                return false;
            }
            match self.drop_next {
                Some(next) if now >= next => {
                    self.count += 1;
                    self.drop_next = Some(self.control_law(next));
                    true
                }
                _ => false,
            }
        } else if ok_to_drop {
            // §5.6: re-enter the dropping state near the previous drop rate if it was
            // recent, so a queue that comes straight back is met with the rate that worked.
            self.dropping = true;
            let delta = self.count.saturating_sub(self.last_count);
            let recent = self
                .drop_next
                .is_some_and(|n| now.saturating_duration_since(n) < self.interval * 16);
            self.count = if delta > 1 && recent { delta } else { 1 };
            self.last_count = self.count;
            self.drop_next = Some(self.control_law(now));
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_burst_that_drains_within_the_interval_is_never_dropped() {
        let mut a = Aqm::new(64, MS);
        let t0 = Instant::now();
        // 0.9 ms above the limit, then drained.
        for us in (0..900).step_by(10) {
            assert!(!a.on_batch(t0 + Duration::from_micros(us), 500));
        }
        assert!(!a.on_batch(t0 + Duration::from_micros(900), 10));
        // Above again: the interval starts over.
        assert!(!a.on_batch(t0 + Duration::from_micros(950), 500));
        assert!(!a.on_batch(t0 + Duration::from_micros(1800), 500));
    }

    #[test]
    fn a_standing_queue_is_dropped_at_a_rising_rate_until_it_goes() {
        let mut a = Aqm::new(64, MS);
        let t0 = Instant::now();
        let mut drops = Vec::new();
        for us in (0..20_000u64).step_by(10) {
            if a.on_batch(t0 + Duration::from_micros(us), 200) {
                drops.push(us);
            }
        }
        // The first drop after one interval, the next ones interval/sqrt(count) apart.
        assert_eq!(drops[0], 1000);
        assert_eq!(drops[1], 2000);
        assert_eq!(drops[2], 2710); // 1000 / sqrt(2) = 707 µs later, at the 10 µs grid
        let gaps: Vec<u64> = drops.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|&g| g <= 1000), "{gaps:?}");
        assert!(gaps.last() < Some(&300), "{gaps:?}");
        // The queue goes: no more drops, and the dropping state ends.
        let end = t0 + Duration::from_micros(20_000);
        assert!(!a.on_batch(end, 0));
        assert!(!a.on_batch(end + Duration::from_micros(500), 200));
        assert!(!a.dropping);
    }

    #[test]
    fn a_queue_that_comes_straight_back_resumes_near_the_last_rate() {
        let mut a = Aqm::new(64, MS);
        let t0 = Instant::now();
        let mut n = 0;
        for us in (0..10_000u64).step_by(10) {
            n += u32::from(a.on_batch(t0 + Duration::from_micros(us), 200));
        }
        assert!(n > 3);
        let t1 = t0 + Duration::from_micros(10_000);
        assert!(!a.on_batch(t1, 0));
        // Back above for an interval: one drop enters the dropping state with count > 1.
        assert!(!a.on_batch(t1 + Duration::from_micros(100), 200));
        assert!(a.on_batch(t1 + Duration::from_micros(1100), 200));
        assert!(a.count > 1, "count {}", a.count);
    }

    #[test]
    fn limit_zero_is_off() {
        let mut a = Aqm::new(0, MS);
        let t0 = Instant::now();
        assert!(a.is_off());
        assert!((0..100).all(|i| !a.on_batch(t0 + MS * i, 4096)));
    }
}
