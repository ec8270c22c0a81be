//! Latency histograms: HdrHistogram (the `hdrhistogram` crate) recording nanoseconds, merged
//! across threads and processes, summarised as [`Percentiles`] in microseconds.
//!
//! Processes hand their histogram over as [`RawCounts`] (a JSON-friendly list of
//! `(value_ns, count)` pairs, one per non-empty bucket): the crate's own V2 serializer needs
//! its `serialization` feature (flate2, nom, base64), which the workspace leaves off. A bucket's
//! value re-recorded lands in the same bucket, so a round trip loses nothing the histogram kept.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::schema::Percentiles;

/// Lowest value tracked (1 ns) and highest (60 s): a latency above a minute is a bug, and is
/// clamped to the top (counted, never dropped: see [`LatencyHist::record_ns`]).
const LOWEST_NS: u64 = 1;
const HIGHEST_NS: u64 = 60_000_000_000;
/// Three significant digits: 0.1 % resolution at every magnitude.
const SIGFIG: u8 = 3;
/// Points in the CDF [`LatencyHist::to_percentiles`] returns (at most; fewer when there are
/// fewer distinct buckets).
pub const CDF_POINTS: usize = 100;

/// A latency histogram in nanoseconds.
#[derive(Debug, Clone)]
pub struct LatencyHist {
    h: Histogram<u64>,
    /// Values above [`HIGHEST_NS`], recorded as [`HIGHEST_NS`].
    clamped: u64,
}

/// A histogram's non-empty buckets, to pass between processes (JSON) or threads.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RawCounts {
    /// `(value_ns, count)` for every non-empty bucket, ascending.
    pub buckets: Vec<(u64, u64)>,
    /// Values above the top of the range, counted in the top bucket.
    pub clamped: u64,
}

impl Default for LatencyHist {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHist {
    pub fn new() -> LatencyHist {
        LatencyHist {
            // Bounds are constants inside the crate's limits: this cannot fail.
            h: Histogram::new_with_bounds(LOWEST_NS, HIGHEST_NS, SIGFIG)
                .expect("constant histogram bounds are valid"),
            clamped: 0,
        }
    }

    /// Record one latency. 0 ns (same clock tick) is recorded as 1 ns; above 60 s as 60 s
    /// and counted in `clamped`.
    pub fn record_ns(&mut self, ns: u64) {
        self.record_n_ns(ns, 1);
    }

    /// Record `n` samples of one latency.
    pub fn record_n_ns(&mut self, ns: u64, n: u64) {
        let mut v = ns.max(LOWEST_NS);
        if v > HIGHEST_NS {
            v = HIGHEST_NS;
            self.clamped += n;
        }
        // In range by construction: the crate only errors on out-of-range values.
        self.h
            .record_n(v, n)
            .expect("value clamped into the histogram's range");
    }

    pub fn samples(&self) -> u64 {
        self.h.len()
    }

    pub fn clamped(&self) -> u64 {
        self.clamped
    }

    /// Add another histogram's samples to this one.
    pub fn merge(&mut self, other: &LatencyHist) {
        // Same bounds on both sides: `add` only fails when the other's range does not fit.
        self.h.add(&other.h).expect("histograms share their bounds");
        self.clamped += other.clamped;
    }

    /// The non-empty buckets, for another process.
    pub fn to_raw(&self) -> RawCounts {
        RawCounts {
            buckets: self
                .h
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
            clamped: self.clamped,
        }
    }

    /// Rebuild from [`RawCounts`] (values outside the range are clamped, as when recording).
    pub fn from_raw(raw: &RawCounts) -> LatencyHist {
        let mut h = LatencyHist::new();
        for &(v, n) in &raw.buckets {
            h.record_n_ns(v, n);
        }
        // `clamped` in the input counts values already at the top; keep that count.
        h.clamped = h.clamped.max(raw.clamped);
        h
    }

    /// Merge histograms from several threads or processes.
    pub fn merged<'a>(hists: impl IntoIterator<Item = &'a LatencyHist>) -> LatencyHist {
        let mut out = LatencyHist::new();
        for h in hists {
            out.merge(h);
        }
        out
    }

    /// Value at a quantile (0..=1) in nanoseconds (0 when empty).
    pub fn value_at_quantile_ns(&self, q: f64) -> u64 {
        if self.h.is_empty() {
            return 0;
        }
        self.h.value_at_quantile(q)
    }

    /// p50/p90/p99/p99.9/max in µs and a CDF of at most [`CDF_POINTS`] points.
    pub fn to_percentiles(&self) -> Percentiles {
        if self.h.is_empty() {
            return Percentiles::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Percentiles {
            samples: self.h.len(),
            p50_us: us(self.h.value_at_quantile(0.50)),
            p90_us: us(self.h.value_at_quantile(0.90)),
            p99_us: us(self.h.value_at_quantile(0.99)),
            p999_us: us(self.h.value_at_quantile(0.999)),
            max_us: us(self.h.max()),
            cdf: self.cdf(CDF_POINTS),
        }
    }

    /// (latency µs, fraction at or below) at quantiles spaced for the tail: half the points
    /// evenly up to 0.9, the rest on a log scale towards 1 (0.9, 0.99, 0.999, ...), then max.
    fn cdf(&self, points: usize) -> Vec<(f64, f64)> {
        let total = self.h.len() as f64;
        let half = points / 2;
        let mut qs: Vec<f64> = (0..half).map(|i| 0.9 * i as f64 / half as f64).collect();
        let tail = points.saturating_sub(half + 1).max(1);
        for i in 0..tail {
            // 1 - 0.1 * 10^(-4 i / tail): from 0.9 up to 0.99999.
            qs.push(1.0 - 0.1 * 10f64.powf(-4.0 * i as f64 / tail as f64));
        }
        let mut out: Vec<(f64, f64)> = Vec::with_capacity(points);
        for q in qs {
            // The bucket's top, as `max()` reports it, so the last point can be the max.
            let v = self.h.highest_equivalent(self.h.value_at_quantile(q));
            let frac = self.h.count_between(0, v) as f64 / total;
            if out.last().is_some_and(|&(lv, _)| lv >= v as f64 / 1000.0) {
                continue;
            }
            out.push((v as f64 / 1000.0, frac));
        }
        let max = self.h.max() as f64 / 1000.0;
        if out.last().is_none_or(|&(lv, _)| lv < max) {
            out.push((max, 1.0));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        // 3 significant digits: within 0.1 % (and a nanosecond).
        (a - b).abs() <= b.abs() * 0.001 + 0.001
    }

    #[test]
    fn percentiles_of_1_to_10000_us() {
        let mut h = LatencyHist::new();
        for us in 1..=10_000u64 {
            h.record_ns(us * 1000);
        }
        let p = h.to_percentiles();
        assert_eq!(p.samples, 10_000);
        assert!(close(p.p50_us, 5000.0), "p50 {}", p.p50_us);
        assert!(close(p.p90_us, 9000.0), "p90 {}", p.p90_us);
        assert!(close(p.p99_us, 9900.0), "p99 {}", p.p99_us);
        assert!(close(p.p999_us, 9990.0), "p999 {}", p.p999_us);
        assert!(close(p.max_us, 10_000.0), "max {}", p.max_us);
        // The CDF ascends in both coordinates, ends at the max with 1.0, and has a sane size.
        assert!(
            p.cdf.len() >= 50 && p.cdf.len() <= CDF_POINTS + 1,
            "{}",
            p.cdf.len()
        );
        for w in p.cdf.windows(2) {
            assert!(w[0].0 < w[1].0 && w[0].1 <= w[1].1, "{w:?}");
        }
        assert_eq!(p.cdf.last().unwrap().1, 1.0);
        assert!(close(p.cdf.last().unwrap().0, 10_000.0));
        // A point's fraction is the share at or below its latency.
        let (lat, frac) = p.cdf[p.cdf.len() / 4];
        assert!((frac - lat / 10_000.0).abs() < 0.002, "{lat} {frac}");
    }

    #[test]
    fn merge_equals_recording_all_in_one() {
        let mut a = LatencyHist::new();
        let mut b = LatencyHist::new();
        let mut all = LatencyHist::new();
        for i in 0..5000u64 {
            let v = 1000 + i * 37 % 90_000;
            if i % 3 == 0 {
                a.record_ns(v)
            } else {
                b.record_ns(v)
            }
            all.record_ns(v);
        }
        b.record_ns(7_000_000);
        all.record_ns(7_000_000);
        let m = LatencyHist::merged([&a, &b]);
        assert_eq!(m.samples(), 5001);
        assert_eq!(m.to_percentiles(), all.to_percentiles());
        assert_eq!(m.to_raw(), all.to_raw());
    }

    #[test]
    fn raw_counts_round_trip_through_json() {
        let mut h = LatencyHist::new();
        for v in [0u64, 1, 999, 1000, 123_456, 5_000_000, 120_000_000_000] {
            h.record_ns(v);
        }
        assert_eq!(h.clamped(), 1);
        let json = serde_json::to_string(&h.to_raw()).unwrap();
        let back = LatencyHist::from_raw(&serde_json::from_str(&json).unwrap());
        assert_eq!(back.samples(), 7);
        assert_eq!(back.clamped(), 1);
        assert_eq!(back.to_percentiles(), h.to_percentiles());
        assert_eq!(back.to_raw(), h.to_raw());
    }

    #[test]
    fn empty_histogram_is_all_zero() {
        let h = LatencyHist::new();
        assert_eq!(h.to_percentiles(), Percentiles::default());
        assert_eq!(h.value_at_quantile_ns(0.99), 0);
        assert!(h.to_raw().buckets.is_empty());
    }

    #[test]
    fn one_sample_is_every_percentile() {
        let mut h = LatencyHist::new();
        h.record_ns(42_000);
        let p = h.to_percentiles();
        assert_eq!(p.samples, 1);
        for v in [p.p50_us, p.p90_us, p.p99_us, p.p999_us, p.max_us] {
            assert!(close(v, 42.0), "{v}");
        }
        assert_eq!(p.cdf, vec![(p.max_us, 1.0)]);
    }
}
