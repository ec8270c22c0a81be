//! The shared-memory file between the control process (`iked`) and the dataplane: an ABI.
//!
//! One file in /dev/shm holds a versioned header and two single-producer/single-consumer
//! rings of fixed-size slots (DPDK rte_ring layout: producer and consumer indexes on their
//! own cache lines, free-running 32-bit indexes masked by a power-of-two capacity):
//!
//! ```text
//! 0     header: magic "VPNRING\0", ABI version, slot size, capacity, ring count, file size
//! 64    ring 0 (control → dataplane): producer index line, consumer index line
//! 192   ring 1 (dataplane → control): producer index line, consumer index line
//! 320   ring 0 slots, then ring 1 slots
//! ```
//!
//! A record is visible to the consumer only once the producer has published the index past
//! it (release store after the slot is written), so a producer killed mid-write leaves no half
//! record: its successor attaches, reads the published index and overwrites the torn slot.
//! The consumer zeroes each slot after copying it out, so key bytes do not linger in shared
//! memory. A full ring is backpressure: `push` waits; nothing is dropped.
//!
//! This module is one of the few places with `unsafe` (raw access to the mapping); each block
//! says why it is sound.

pub mod counters;
pub mod info;
pub mod records;
mod ring;
mod spsc;

pub use ring::{Consumer, Producer, RingDir, ShmError, ShmFile, ABI_VERSION, MAGIC};
