//! Security associations as the workers find them: the SA database ([`sadb`]: inbound by
//! SPI, outbound by reqid, and the SPD snapshot, with a per-worker replica) and the lock-free
//! SPI table underneath it ([`satable`]), whose allocated SPIs encode a slot and a generation
//! ([`compose`]).
//!
//! The ESP transform of one SA (keys, sequence numbers, replay window) is [`crate::esp`].

pub mod sadb;
pub mod satable;

pub use satable::compose;

/// Which way an SA carries traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}
