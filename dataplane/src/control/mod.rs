//! The dataplane's control side, on one thread beside the workers: the single writer of the
//! SA database.
//!
//! - [`install`]: the one path by which SAs and policies enter (ring records, static file).
//! - [`static_sa`]: the static SA file (TOML), parsed and encoded into ring records.
//! - [`ring_end`]: the dataplane's ends of the shared-memory ring to `iked`/`vpnctl`; it
//!   encodes the ring records for what the workers raise.
//! - [`thread`]: the control thread's loop (ring, worker events, next-hop refresh, files).
//! - [`telemetry`]: the stats file and the exit summary.

pub mod install;
pub mod ring_end;
pub mod static_sa;
pub mod telemetry;
pub mod thread;
