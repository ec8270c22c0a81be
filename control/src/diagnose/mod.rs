//! `vpnctl diagnose`: from what iked, the dataplane and the system show, one finding per
//! problem — what is happening, the evidence, what to change — each with a stable id
//! explained in `docs/DIAGNOSE.md`.
//!
//! Split like the rest of the crate: [`classify`] turns an iked error into a finding id and
//! evidence when it happens (the daemon keeps them per connection); [`analyze`] is a pure
//! function from a [`analyze::DiagnoseInput`] snapshot to findings (unit-tested with
//! made-up snapshots); [`probe`] gathers the snapshot's system part (routes, MTUs, XDP,
//! firewall rules, certificates) and is the only part that touches the machine.

pub mod analyze;
pub mod catalog;
pub mod classify;
pub mod probe;

pub use analyze::{analyze, DiagnoseInput};
pub use catalog::{FindingKind, CATALOG};
pub use classify::classify;
