//! Reauthentication (RFC 7296 §2.8.3, swanctl `reauth_time`), make-before-break: a new IKE
//! SA is negotiated from scratch (IKE_SA_INIT, IKE_AUTH: the peer proves its identity
//! again) while the old one keeps carrying traffic; once the new IKE SA holds a Child SA for
//! every child the old one held, the old Child SAs are retired (their inbound SAs kept for the
//! grace period) and the old IKE SA is deleted. No INITIAL_CONTACT on the new one: the peer
//! must not drop the old SAs before the new ones carry the traffic.

use tracing::{info, warn};

use super::Daemon;
use crate::ike::sa::Phase;

/// A failed reauthentication is tried again after this long (the old IKE SA lives on
/// until its hard limit).
const REAUTH_RETRY_MS: u64 = 30_000;

impl Daemon {
    /// Start the reauthentications that are due.
    pub(super) fn reauth_due(&mut self, now: u64) {
        let due: Vec<(u64, String)> = self
            .sas
            .iter()
            .filter(|(_, e)| {
                e.sa.phase() == Phase::Established && e.reauth_at.is_some_and(|t| t <= now)
            })
            .map(|(s, e)| (*s, e.conn.clone()))
            .collect();
        for (old, conn) in due {
            if let Some(e) = self.sas.get_mut(&old) {
                e.reauth_at = None;
            }
            let Some(ci) = self.conn_index(&conn) else {
                continue;
            };
            if self.conns[ci].reauth.is_some() {
                continue;
            }
            // The child the new IKE SA negotiates in IKE_AUTH: one the old one carries.
            let Some(k) = self.conns[ci]
                .children
                .iter()
                .position(|c| c.installed.iter().any(|i| i.ike_spi == old))
            else {
                continue;
            };
            info!(conn = %conn, "reauthenticating (reauth_time): a new IKE SA first, the old one goes once the new one carries every Child SA");
            self.conns[ci].reauth = Some(old);
            self.initiate(now, ci, k);
        }
    }

    /// The old IKE SA of a reauthentication goes once another IKE SA carries a Child SA
    /// for every child it carried.
    pub(super) fn reauth_progress(&mut self, now: u64, ci: usize) {
        let Some(old) = self.conns[ci].reauth else {
            return;
        };
        let done = self.conns[ci].children.iter().all(|c| {
            !c.installed.iter().any(|i| i.ike_spi == old)
                || c.installed.iter().any(|i| i.ike_spi != old)
        });
        if !done {
            return;
        }
        self.conns[ci].reauth = None;
        let retire: Vec<(String, u32)> = self.conns[ci]
            .children
            .iter()
            .flat_map(|c| {
                c.installed
                    .iter()
                    .filter(|i| i.ike_spi == old)
                    .map(|i| (c.cfg.name.clone(), i.inbound_spi))
            })
            .collect();
        for (name, inbound_spi) in retire {
            self.retire(now, ci, &name, inbound_spi);
        }
        let conn = self.conns[ci].name().to_string();
        info!(conn = %conn, old_spi = format_args!("{old:#018x}"), "reauthenticated: deleting the old IKE SA");
        if let Some(e) = self.sas.get_mut(&old) {
            e.sa.delete(now, &mut *self.rng);
            self.settle(now, old);
        }
    }

    /// The new IKE SA of a reauthentication failed: the old one carries on, and the
    /// reauthentication is tried again later.
    pub(super) fn reauth_failed(&mut self, now: u64, ci: usize, failed: u64) {
        let Some(old) = self.conns[ci].reauth else {
            return;
        };
        if old == failed {
            // The old one died first: nothing left to replace.
            self.conns[ci].reauth = None;
            return;
        }
        self.conns[ci].reauth = None;
        if let Some(e) = self.sas.get_mut(&old) {
            e.reauth_at = Some(now + REAUTH_RETRY_MS);
            warn!(conn = %e.conn, "reauthentication failed; the current IKE SA carries on, trying again in {} s", REAUTH_RETRY_MS / 1000);
        }
    }
}
