//! IKE SA rekeying (RFC 7296 §1.3.2, §2.8, §2.8.1, §2.18) and the IKE SA's lifetime
//! (rekey_time, over_time, rand_time). Issue 12: the ike-rekey stream fills these.

use super::{IkeError, IkeSa, Random};

impl IkeSa {
    /// When the IKE SA's own rekey or expiry is due.
    pub(super) fn ike_deadline(&self) -> Option<u64> {
        None
    }

    /// Start the IKE SA rekey, or close an SA past its hard limit, when due.
    pub(super) fn ike_timers(&mut self, now: u64, rng: &mut dyn Random) {
        let _ = (now, rng);
    }

    /// Rekey the IKE SA now (CREATE_CHILD_SA, §1.3.2): a [`super::Event::NewIkeSa`] follows
    /// with the new SA and this one's Child SAs; this one is deleted.
    pub fn rekey_ike(&mut self, now: u64, rng: &mut dyn Random) -> Result<(), IkeError> {
        let _ = (now, rng);
        Err(IkeError::NotEstablished)
    }
}

impl IkeSa {
    /// Whether an IKE SA rekey of ours or the peer's is under way (§2.25: a Child SA rekey
    /// request that arrives meanwhile is answered TEMPORARY_FAILURE).
    pub(super) fn ike_rekeying(&self) -> bool {
        false
    }
}
