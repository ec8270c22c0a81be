//! SA lifetimes with swanctl's names and semantics (swanctl.conf(5), RFC 7296 §2.8,
//! RFC 4301 §4.4.2.1): when an IKE or Child SA is rekeyed, when it expires, and the random
//! spread that keeps both peers (and many tunnels) from rekeying at the same instant.
//!
//! Time limits are enforced here, by iked (it has the clock); byte and packet limits by the
//! dataplane, which counts the traffic and raises a soft event (rekey) and a hard one (the
//! SA stops being used) — see [`ChildLifetime::dataplane`].

use dataplane::esp::Lifetime;

use super::sa::Random;

const HOUR_MS: u64 = 3_600_000;

/// An IKE SA's lifetime (swanctl `connections.<conn>.rekey_time`, `reauth_time`,
/// `over_time`, `rand_time`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IkeLifetime {
    /// Rekey (CREATE_CHILD_SA, §1.3.2) this long after the IKE SA came up; 0: never.
    pub rekey_ms: u64,
    /// Reauthenticate (a new IKE SA, make-before-break, §2.8.3) this long after; 0: never.
    pub reauth_ms: u64,
    /// The hard limit is this long after the rekey (or reauth) time: an IKE SA whose rekey
    /// has not completed by then is closed.
    pub over_ms: u64,
    /// The rekey happens up to this much earlier, drawn at random per SA.
    pub rand_ms: u64,
}

impl Default for IkeLifetime {
    /// strongSwan's: rekey after 4 h, no reauthentication, over_time 10 % of it, rand_time
    /// equal to over_time.
    fn default() -> Self {
        IkeLifetime::from_swanctl(Some(4 * HOUR_MS), Some(0), None, None)
    }
}

impl IkeLifetime {
    /// swanctl's derived defaults for what is not given: over_time is 10 % of the larger
    /// of rekey_time and reauth_time, rand_time equals over_time.
    pub fn from_swanctl(
        rekey_ms: Option<u64>,
        reauth_ms: Option<u64>,
        over_ms: Option<u64>,
        rand_ms: Option<u64>,
    ) -> IkeLifetime {
        let rekey_ms = rekey_ms.unwrap_or(4 * HOUR_MS);
        let reauth_ms = reauth_ms.unwrap_or(0);
        let over_ms = over_ms.unwrap_or(rekey_ms.max(reauth_ms) / 10);
        let rand_ms = rand_ms.unwrap_or(over_ms);
        IkeLifetime {
            rekey_ms,
            reauth_ms,
            over_ms,
            rand_ms,
        }
    }

    /// When an IKE SA established at `now` is rekeyed, when it is reauthenticated (the
    /// daemon's business: a new IKE SA, make-before-break), and when it expires: over_time
    /// after the earlier of the two, as strongSwan.
    pub fn schedule(&self, now: u64, rng: &mut dyn Random) -> SaTimes {
        let at = |t: u64, rng: &mut dyn Random| {
            (t > 0).then(|| now + t.saturating_sub(spread(self.rand_ms.min(t), rng)))
        };
        let first = match (self.rekey_ms, self.reauth_ms) {
            (0, 0) => None,
            (0, a) | (a, 0) => Some(a),
            (r, a) => Some(r.min(a)),
        };
        SaTimes {
            rekey_at: at(self.rekey_ms, rng),
            reauth_at: at(self.reauth_ms, rng),
            expire_at: first.map(|t| now + t + self.over_ms),
        }
    }
}

/// A Child SA's lifetime (swanctl `children.<child>.rekey_time`, `life_time`,
/// `rand_time`, and the `_bytes`/`_packets` forms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildLifetime {
    /// Rekey this long after the Child SA came up; 0: never on time.
    pub rekey_ms: u64,
    /// Hard limit: the Child SA is deleted this long after it came up; 0: none.
    pub life_ms: u64,
    /// The rekey happens up to this much earlier, drawn at random per SA.
    pub rand_ms: u64,
    pub rekey_bytes: u64,
    pub life_bytes: u64,
    pub rand_bytes: u64,
    pub rekey_packets: u64,
    pub life_packets: u64,
    pub rand_packets: u64,
}

impl Default for ChildLifetime {
    /// strongSwan's: rekey after 1 h, hard limit 10 % later, rand_time the difference; no
    /// byte or packet limits.
    fn default() -> Self {
        ChildLifetime::from_swanctl(Limits::default(), Limits::default(), Limits::default())
    }
}

/// One kind of limit as configured (time in ms, bytes or packets); `None`: not given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub rekey: Option<u64>,
    pub life: Option<u64>,
    pub rand: Option<u64>,
}

/// swanctl's derivation: life defaults to rekey + 10 %, rand to life − rekey. A limit of 0
/// is off.
fn derive(l: Limits, default_rekey: u64) -> (u64, u64, u64) {
    let rekey = l.rekey.unwrap_or(default_rekey);
    let life = l.life.unwrap_or(rekey.saturating_add(rekey / 10));
    let rand = l.rand.unwrap_or(life.saturating_sub(rekey));
    (rekey, life, rand)
}

impl ChildLifetime {
    pub fn from_swanctl(time_ms: Limits, bytes: Limits, packets: Limits) -> ChildLifetime {
        let (rekey_ms, life_ms, rand_ms) = derive(time_ms, HOUR_MS);
        let (rekey_bytes, life_bytes, rand_bytes) = derive(bytes, 0);
        let (rekey_packets, life_packets, rand_packets) = derive(packets, 0);
        ChildLifetime {
            rekey_ms,
            life_ms,
            rand_ms,
            rekey_bytes,
            life_bytes,
            rand_bytes,
            rekey_packets,
            life_packets,
            rand_packets,
        }
    }

    /// When a Child SA that came up at `now` is rekeyed and when it expires.
    pub fn schedule(&self, now: u64, rng: &mut dyn Random) -> SaTimes {
        SaTimes {
            rekey_at: (self.rekey_ms > 0).then(|| {
                now + self
                    .rekey_ms
                    .saturating_sub(spread(self.rand_ms.min(self.rekey_ms), rng))
            }),
            reauth_at: None,
            expire_at: (self.life_ms > 0).then_some(now + self.life_ms),
        }
    }

    /// The byte and packet limits for the dataplane: soft (rekey, spread at random) and
    /// hard (stop using the SA).
    pub fn dataplane(&self, rng: &mut dyn Random) -> Lifetime {
        let soft = |rekey: u64, rand: u64, rng: &mut dyn Random| {
            if rekey == 0 {
                0
            } else {
                rekey.saturating_sub(spread(rand.min(rekey - 1), rng))
            }
        };
        Lifetime {
            soft_packets: soft(self.rekey_packets, self.rand_packets, rng),
            hard_packets: self.life_packets,
            soft_bytes: soft(self.rekey_bytes, self.rand_bytes, rng),
            hard_bytes: self.life_bytes,
        }
    }
}

/// When an SA is due for rekeying and when it expires (ms on the daemon's clock).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SaTimes {
    pub rekey_at: Option<u64>,
    /// IKE SAs only: when to reauthenticate (RFC 7296 §2.8.3).
    pub reauth_at: Option<u64>,
    pub expire_at: Option<u64>,
}

/// A uniform draw from `0..=max`.
pub fn spread(max: u64, rng: &mut dyn Random) -> u64 {
    if max == 0 {
        return 0;
    }
    let mut b = [0u8; 8];
    rng.fill(&mut b);
    u64::from_be_bytes(b) % (max + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_rng::Seq;

    #[test]
    fn defaults_are_strongswans() {
        let ike = IkeLifetime::default();
        assert_eq!(
            (ike.rekey_ms, ike.reauth_ms, ike.over_ms, ike.rand_ms),
            (4 * HOUR_MS, 0, 1_440_000, 1_440_000)
        );
        let c = ChildLifetime::default();
        assert_eq!(
            (c.rekey_ms, c.life_ms, c.rand_ms),
            (HOUR_MS, 3_960_000, 360_000)
        );
        assert_eq!((c.rekey_bytes, c.life_bytes, c.rekey_packets), (0, 0, 0));
    }

    #[test]
    fn rekeys_spread_below_the_rekey_time_and_expiry_is_fixed() {
        let c = ChildLifetime::from_swanctl(
            Limits {
                rekey: Some(10_000),
                life: Some(12_000),
                rand: Some(3_000),
            },
            Limits::default(),
            Limits::default(),
        );
        let mut r = Seq(7);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..500 {
            let t = c.schedule(1000, &mut r);
            let at = t.rekey_at.unwrap();
            assert!((8_000..=11_000).contains(&at), "{at}");
            assert_eq!(t.expire_at, Some(13_000));
            seen.insert(at / 500);
        }
        assert!(seen.len() >= 6, "the spread is used: {seen:?}");
        let ike = IkeLifetime::from_swanctl(Some(25_000), None, None, None);
        let t = ike.schedule(0, &mut r);
        assert!((22_500..=25_000).contains(&t.rekey_at.unwrap()));
        assert_eq!(t.expire_at, Some(27_500));
    }

    #[test]
    fn zero_means_never_and_packet_limits_reach_the_dataplane() {
        let off = Limits {
            rekey: Some(0),
            life: Some(0),
            rand: None,
        };
        let c = ChildLifetime::from_swanctl(
            off,
            Limits::default(),
            Limits {
                rekey: Some(1000),
                life: None,
                rand: Some(0),
            },
        );
        assert_eq!(c.schedule(5, &mut Seq(1)), SaTimes::default());
        let l = c.dataplane(&mut Seq(1));
        assert_eq!((l.soft_packets, l.hard_packets), (1000, 1100));
        assert_eq!((l.soft_bytes, l.hard_bytes), (0, 0));
        let never = IkeLifetime::from_swanctl(Some(0), Some(0), None, None);
        assert_eq!(never.schedule(5, &mut Seq(1)), SaTimes::default());
    }
}
