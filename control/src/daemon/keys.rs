//! The keys of the live SAs for `vpnctl keys --wireshark` (RFC 7296 §2.14 SK_e/SK_a, and the
//! Child SA keys as the dataplane holds them). Only on request; never logged.

use super::Daemon;
use crate::api::KeysReport;

impl Daemon {
    pub fn keys_report(&self) -> KeysReport {
        KeysReport::default()
    }
}
