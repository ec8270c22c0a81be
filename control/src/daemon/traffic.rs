//! Each SA's recent traffic, from the dataplane's counters as iked reads them (about once a
//! second): packets in the last minute and how long since the counters last moved, for
//! `vpnctl list` and `vpnctl diagnose` ("12,431 packets encrypted in the last 60 s and 0
//! decrypted"). Sans-IO: times are the daemon's clock (ms).
//!
//! Memory is bounded per SA: a sample is kept at most every [`SAMPLE_EVERY_MS`], and only
//! those needed to reach back [`WINDOW_MS`] — 14 samples (about 224 bytes) per SA direction
//! however often the counters are read.

use std::collections::{HashMap, VecDeque};

/// The window "recent" traffic is counted over.
pub const WINDOW_MS: u64 = 60_000;
/// The spacing of kept samples: the window is [`WINDOW_MS`], give or take this much.
pub const SAMPLE_EVERY_MS: u64 = 5_000;

/// One SA direction's samples: (time, packet count), oldest first.
#[derive(Debug, Default, Clone)]
struct History {
    samples: VecDeque<(u64, u64)>,
    /// The latest reading (not necessarily kept as a sample).
    latest: (u64, u64),
    /// When the packet count last changed (`None`: never seen moving).
    last_change: Option<u64>,
}

/// Recent traffic of one SA direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Recent {
    /// Packets counted within about the last [`WINDOW_MS`] (less for a younger SA: since
    /// iked first saw it).
    pub packets_window: u64,
    /// Milliseconds since the packet count last moved; `None` if it never did while iked
    /// watched (and it was zero when first seen).
    pub idle_ms: Option<u64>,
}

/// Samples per (inbound?, SPI).
#[derive(Debug, Default)]
pub struct TrafficHistory {
    by_sa: HashMap<(bool, u32), History>,
}

impl TrafficHistory {
    /// A reading of every SA the dataplane holds at `now`: `(inbound, spi, packets)`. SAs
    /// missing from it are gone from the dataplane and forgotten. `installed_at` gives when
    /// this iked installed an SA (`None`: inherited, or not ours), so an SA first read after
    /// it already carried traffic counts that traffic as recent: it all came since then.
    pub fn record(
        &mut self,
        now: u64,
        sas: impl IntoIterator<Item = (bool, u32, u64)>,
        installed_at: impl Fn(bool, u32) -> Option<u64>,
    ) {
        let mut seen = std::collections::HashSet::new();
        for (inbound, spi, packets) in sas {
            seen.insert((inbound, spi));
            let h = self.by_sa.entry((inbound, spi)).or_default();
            if h.samples.is_empty() {
                // First sight: packets already counted moved "about now" (within a reading).
                h.last_change = (packets > 0).then_some(now);
                match installed_at(inbound, spi) {
                    // Young and ours: it held 0 packets when installed (a baseline 0 at
                    // first sight said "55 packets (0 in the last 60 s, last 1 s ago)").
                    Some(t) if t <= now && now - t <= WINDOW_MS => {
                        h.samples.push_back((t, 0));
                        if now >= t + SAMPLE_EVERY_MS {
                            h.samples.push_back((now, packets));
                        }
                    }
                    // What it counted before iked watched is of unknown age.
                    _ => h.samples.push_back((now, packets)),
                }
            } else {
                if packets != h.latest.1 {
                    h.last_change = Some(now);
                }
                if h.samples
                    .back()
                    .is_some_and(|&(t, _)| now >= t + SAMPLE_EVERY_MS)
                {
                    h.samples.push_back((now, packets));
                }
            }
            h.latest = (now, packets);
            // Keep the newest sample at or before the window's start as its baseline.
            let start = now.saturating_sub(WINDOW_MS);
            while h.samples.len() >= 2 && h.samples[1].0 <= start {
                h.samples.pop_front();
            }
        }
        self.by_sa.retain(|k, _| seen.contains(k));
        if self.by_sa.capacity() > 64 && self.by_sa.len() < self.by_sa.capacity() / 4 {
            self.by_sa.shrink_to_fit();
        }
    }

    /// The recent traffic of one SA direction at `now` (`None`: not in the dataplane's last
    /// reading).
    pub fn recent(&self, now: u64, inbound: bool, spi: u32) -> Option<Recent> {
        let h = self.by_sa.get(&(inbound, spi))?;
        let base = h.samples.front().map_or(h.latest.1, |s| s.1);
        Some(Recent {
            packets_window: h.latest.1.saturating_sub(base),
            idle_ms: h.last_change.map(|t| now.saturating_sub(t)),
        })
    }

    /// SA directions tracked.
    pub fn len(&self) -> usize {
        self.by_sa.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_sa.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_last_minute_and_how_long_since_the_counters_moved() {
        let mut t = TrafficHistory::default();
        // 100 packets a second inbound for 90 s; outbound silent after the first 10 s.
        for s in 0..=90u64 {
            let out = 10 * s.min(10);
            t.record(s * 1000, [(true, 7, 100 * s), (false, 8, out)], |_, _| None);
        }
        let now = 90_000;
        let r = t.recent(now, true, 7).unwrap();
        assert!(
            (6_000..=6_500).contains(&r.packets_window),
            "about 60 s worth: {r:?}"
        );
        assert_eq!(r.idle_ms, Some(0));
        let o = t.recent(now, false, 8).unwrap();
        assert_eq!(o.packets_window, 0, "nothing outbound in the last minute");
        assert_eq!(o.idle_ms, Some(80_000), "last moved at 10 s");
        // Bounded: samples only every 5 s, and only a window's worth.
        assert!(t.by_sa[&(true, 7)].samples.len() <= 14);
    }

    #[test]
    fn a_young_sa_counts_since_first_seen_and_a_gone_one_is_forgotten() {
        let mut t = TrafficHistory::default();
        t.record(1_000, [(true, 1, 0)], |_, _| None);
        assert_eq!(
            t.recent(1_000, true, 1),
            Some(Recent {
                packets_window: 0,
                idle_ms: None
            }),
            "never moved"
        );
        t.record(2_000, [(true, 1, 50)], |_, _| None);
        t.record(3_000, [(true, 1, 80)], |_, _| None);
        assert_eq!(
            t.recent(4_500, true, 1),
            Some(Recent {
                packets_window: 80,
                idle_ms: Some(1_500)
            })
        );
        t.record(4_000, [(false, 2, 5)], |_, _| None);
        assert_eq!(t.recent(4_000, true, 1), None, "gone from the dataplane");
        assert_eq!(t.len(), 1);
        assert_eq!(t.recent(4_000, false, 2).unwrap().idle_ms, Some(0));
    }

    /// An SA this iked installed and first read after it carried traffic counts that
    /// traffic as recent; one it inherited (or an old one) does not.
    #[test]
    fn a_young_sa_first_read_with_traffic_counts_it_as_recent() {
        let mut t = TrafficHistory::default();
        let ours = |_: bool, spi: u32| (spi == 1).then_some(9_000);
        t.record(10_000, [(true, 1, 55), (true, 2, 70)], ours);
        assert_eq!(
            t.recent(10_000, true, 1),
            Some(Recent {
                packets_window: 55,
                idle_ms: Some(0)
            }),
            "installed 1 s ago: its 55 packets came within the last minute"
        );
        assert_eq!(
            t.recent(10_000, true, 2).unwrap().packets_window,
            0,
            "inherited: the age of what it counted is unknown"
        );
        t.record(11_000, [(true, 1, 60), (true, 2, 70)], ours);
        assert_eq!(t.recent(11_000, true, 1).unwrap().packets_window, 60);
        // Installed over a minute before its first reading: unknown age again.
        let mut t = TrafficHistory::default();
        t.record(70_000, [(true, 1, 55)], |_, _| Some(5_000));
        assert_eq!(t.recent(70_000, true, 1).unwrap().packets_window, 0);
        // The kept samples still stay within a window's worth.
        let mut t = TrafficHistory::default();
        for s in 1..=90u64 {
            t.record(s * 1000, [(true, 1, 10 * s)], |_, _| Some(500));
        }
        let r = t.recent(90_000, true, 1).unwrap();
        assert!((590..=660).contains(&r.packets_window), "{r:?}");
        assert!(t.by_sa[&(true, 1)].samples.len() <= 14);
    }
}
