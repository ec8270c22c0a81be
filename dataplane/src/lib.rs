//! The dataplane of the VPN concentrator.
//!
//! - [`wire`]: typed, length-checked views over Ethernet, IPv4, IPv6, UDP and ESP headers.
//! - [`crypto`]: per-SA key state behind one seal/open interface (AES-GCM, ChaCha20-Poly1305,
//!   AES-CBC + HMAC-SHA-2).
//! - [`esp`]: the sans-IO ESP engine: batches of frames in, verdicts out.
// `unsafe` is allowed only in the AF_XDP layer (and, later, the shared-memory ring and SIMD
// kernels), each block with a SAFETY comment; everywhere else it is a compile error.
#![deny(unsafe_code)]

#[allow(unsafe_code)]
pub mod shm;

pub mod control;
pub mod crypto;
pub mod daemon;
pub mod esp;
pub mod io;
pub mod policy;
pub mod route;
pub mod sa;
pub mod sync;
pub mod wire;
pub mod worker;
