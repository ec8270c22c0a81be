//! The synchronisation primitives of the concurrent SA state, swapped for loom's when the
//! crate is built with `--cfg loom`, so the model checker explores every interleaving of
//! the real code (`tests/loom.rs`, run by `scripts/test.sh`).

#[cfg(loom)]
pub use loom::sync::{atomic, Mutex, MutexGuard};
#[cfg(not(loom))]
pub use std::sync::{atomic, Mutex, MutexGuard};
