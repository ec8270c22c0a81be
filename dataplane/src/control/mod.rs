//! The dataplane's control side, on one thread beside the workers: the single writer of the
//! SA database.
//!
//! - [`install`]: the one path by which SAs and policies enter (ring records, static file).
//! - [`static_sa`]: the static SA file (TOML), parsed and encoded into ring records.

pub mod install;
pub mod static_sa;
