//! Property tests of the anti-replay window against a plain model: a set of accepted
//! numbers and the highest one. Covers windows of 64 to 4096 and sequences around 2^32.

use std::collections::HashSet;

use dataplane::esp::replay::{ReplayError, ReplayWindow};
use proptest::prelude::*;

/// What RFC 4303 §3.4.3 says should happen to `seq`.
fn model(seen: &HashSet<u64>, top: u64, size: u64, seq: u64) -> Result<(), ReplayError> {
    if seq == 0 {
        Err(ReplayError::Zero)
    } else if seq > top {
        Ok(())
    } else if seq + size <= top {
        Err(ReplayError::TooOld)
    } else if seen.contains(&seq) {
        Err(ReplayError::Duplicate)
    } else {
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn window_matches_model(
        size in prop_oneof![Just(64u32), Just(128), Just(1000), Just(1024), Just(4096)],
        base in prop_oneof![Just(0u64), Just((1u64 << 32) - 3000), 0u64..(1 << 40)],
        steps in proptest::collection::vec(
            prop_oneof![
                // mostly forward jitter, sometimes a jump, sometimes far back
                3 => -200i64..300,
                1 => 0i64..20_000,
                1 => -10_000i64..0,
            ],
            1..400,
        ),
    ) {
        let mut w = ReplayWindow::new(size);
        w.reset_top(base);
        let mut seen = HashSet::new();
        let mut top = base;
        let mut cursor = base as i64;
        for d in steps {
            cursor = (cursor + d).max(0);
            let seq = cursor as u64;
            let want = model(&seen, top, u64::from(size), seq);
            prop_assert_eq!(w.check(seq), want, "check {}", seq);
            prop_assert_eq!(w.accept(seq), want, "accept {}", seq);
            if want.is_ok() {
                seen.insert(seq);
                top = top.max(seq);
            }
            prop_assert_eq!(w.top(), top);
        }
    }

    /// Every number in the window is accepted exactly once, whatever the order.
    #[test]
    fn each_in_window_number_accepted_once(
        size in prop_oneof![Just(64u32), Just(4096)],
        base in prop_oneof![Just(1u64), Just((1u64 << 32) - 100)],
        order in Just(()).prop_perturb(|_, mut rng| {
            let mut v: Vec<u64> = (0..64).collect();
            for i in (1..v.len()).rev() {
                let j = (rng.next_u32() as usize) % (i + 1);
                v.swap(i, j);
            }
            v
        }),
    ) {
        let mut w = ReplayWindow::new(size);
        w.reset_top(base + 63);
        for &o in &order {
            prop_assert_eq!(w.accept(base + o), Ok(()));
        }
        for &o in &order {
            prop_assert_eq!(w.accept(base + o), Err(ReplayError::Duplicate));
        }
    }

    /// ESN inference (RFC 4303 App. A): for a receiver whose window top is T, every true
    /// sequence number S within the window or up to 2^31 ahead is reconstructed from its
    /// low 32 bits alone.
    #[test]
    fn esn_inference_recovers_the_full_number(
        size in prop_oneof![Just(64u32), Just(1024), Just(4096)],
        top in prop_oneof![(1u64 << 32) - 5000..(1u64 << 32) + 5000, 5000u64..(1 << 48)],
        delta in -4095i64..(1 << 31),
    ) {
        let mut w = ReplayWindow::new(size);
        w.reset_top(top);
        let s = top as i64 + delta;
        prop_assume!(s > 0 && s + i64::from(size) > top as i64);
        prop_assert_eq!(w.infer_esn(s as u32), Some(s as u64));
    }
}
