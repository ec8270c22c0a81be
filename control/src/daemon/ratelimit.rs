//! Rate-limited logging: a flood of bad datagrams must not become a flood of log lines
//! (100k garbage datagrams once gave 65k WARN lines). Each kind of message may log a burst,
//! then is counted silently, and the count is reported in a summary line once per period
//! ([`summary_line`]): "N similar lines suppressed in the last T s".

use std::collections::BTreeMap;

/// Lines allowed per kind and period before counting silently.
const BURST: u32 = 5;
/// The period, in milliseconds.
const PERIOD_MS: u64 = 10_000;

#[derive(Debug, Default)]
struct Bucket {
    window_start: u64,
    logged: u32,
    suppressed: u64,
}

/// Per-kind limiter. Kinds are static strings ("not IKE", "unknown SPI", ...).
#[derive(Debug, Default)]
pub struct LogLimiter {
    buckets: BTreeMap<&'static str, Bucket>,
}

impl LogLimiter {
    /// Whether a line of `kind` may be logged now. When it may not, it is counted.
    pub fn allow(&mut self, now: u64, kind: &'static str) -> bool {
        let b = self.buckets.entry(kind).or_default();
        if now.saturating_sub(b.window_start) >= PERIOD_MS && b.suppressed == 0 {
            b.window_start = now;
            b.logged = 0;
        }
        if b.logged < BURST {
            b.logged += 1;
            true
        } else {
            b.suppressed += 1;
            false
        }
    }

    /// Summaries of what was suppressed in periods that have ended: (kind, count, the
    /// period's length in ms). The caller logs one line for each ([`summary_line`]).
    pub fn summaries(&mut self, now: u64) -> Vec<(&'static str, u64, u64)> {
        let mut out = Vec::new();
        for (kind, b) in &mut self.buckets {
            if now.saturating_sub(b.window_start) >= PERIOD_MS {
                if b.suppressed > 0 {
                    out.push((*kind, b.suppressed, now - b.window_start));
                }
                *b = Bucket {
                    window_start: now,
                    ..Bucket::default()
                };
            }
        }
        self.buckets.retain(|_, b| b.logged > 0 || b.suppressed > 0);
        out
    }

    /// When the next summary may be due.
    pub fn next_summary(&self) -> Option<u64> {
        self.buckets
            .values()
            .filter(|b| b.suppressed > 0)
            .map(|b| b.window_start + PERIOD_MS)
            .min()
    }
}

/// The line that ends a run of suppressed lines of `kind`.
pub fn summary_line(kind: &str, suppressed: u64, period_ms: u64) -> String {
    let s = if suppressed == 1 { "" } else { "s" };
    format!(
        "{kind}: {suppressed} similar line{s} suppressed in the last {} s",
        (period_ms + 500) / 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_silence_then_one_summary() {
        let mut l = LogLimiter::default();
        let allowed = (0..100_000).filter(|_| l.allow(1, "not IKE")).count();
        assert_eq!(allowed, BURST as usize);
        assert!(
            l.summaries(PERIOD_MS / 2).is_empty(),
            "not before the period ends"
        );
        assert_eq!(l.next_summary(), Some(PERIOD_MS));
        let sums = l.summaries(PERIOD_MS + 1);
        assert_eq!(sums, vec![("not IKE", 100_000 - 5, PERIOD_MS + 1)]);
        let (kind, n, period) = sums[0];
        assert_eq!(
            summary_line(kind, n, period),
            "not IKE: 99995 similar lines suppressed in the last 10 s"
        );
        assert_eq!(
            summary_line("ikev1", 1, 12_500),
            "ikev1: 1 similar line suppressed in the last 13 s"
        );
        assert!(l.allow(PERIOD_MS + 2, "not IKE"), "a new period logs again");
        assert_eq!(l.next_summary(), None);
    }

    #[test]
    fn kinds_are_independent() {
        let mut l = LogLimiter::default();
        for _ in 0..10 {
            l.allow(0, "a");
        }
        assert!(l.allow(0, "b"));
    }
}
