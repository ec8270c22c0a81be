//! An iked error, as a finding id and evidence, at the moment it happens (the daemon keeps
//! the result in the connection's failure history for `vpnctl list` and `diagnose`).

use std::collections::BTreeMap;

use crate::ike::sa::IkeError;

/// The finding an error points at, and its evidence by name.
pub fn classify(e: &IkeError) -> (&'static str, BTreeMap<String, String>) {
    let _ = e;
    ("unclassified-failure", BTreeMap::new())
}
