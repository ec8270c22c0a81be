//! The fuzz harnesses, one function per cargo-fuzz target (`fuzz_targets/<name>.rs` is one
//! line calling it). They live in a library so that the seed corpus (`seeds/<name>/`) and every
//! input a fuzzer ever found (`regressions/<name>/`) replay under a plain `cargo test` on the
//! stable toolchain (`tests/replay.rs`): a finding, once fixed, stays a regression test.
//!
//! A harness must not panic on any input; it panics (an assertion) only when a property of the
//! code under test is broken. `scripts/fuzz.sh` runs the targets; docs/ARCHITECTURE.md
//! ("Fuzzing") says what each one reaches.
#![forbid(unsafe_code)]

pub mod cert;
pub mod config;
pub mod esp;
pub mod exchange;
pub mod gcm;
pub mod ike;
pub mod shm;

/// A fuzz target's name and its harness.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, by the name of its `fuzz_targets/<name>.rs` (and of its seed and regression
/// directories).
pub const TARGETS: &[Target] = &[
    ("gcm_differential", gcm::differential),
    ("esp_decap", esp::decap),
    ("ring_records", shm::ring_records),
    ("counters_reader", shm::counters_reader),
    ("iked_config", config::iked_config),
    ("static_sa_file", config::static_sa_file),
    ("ike_codec", ike::codec),
    ("ike_frag", ike::frag),
    ("ike_cert", cert::cert),
    ("ike_exchange", exchange::exchange),
];
