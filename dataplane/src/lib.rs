//! The dataplane of the VPN concentrator.
//!
//! - [`wire`]: typed, length-checked views over Ethernet, IPv4, IPv6, UDP and ESP headers.
//! - [`crypto`]: per-SA key state behind one seal/open interface (AES-GCM, ChaCha20-Poly1305,
//!   AES-CBC + HMAC-SHA-2).
//! - [`esp`]: the sans-IO ESP engine: batches of frames in, verdicts out.
#![forbid(unsafe_code)]

pub mod crypto;
pub mod esp;
pub mod static_sa;
pub mod wire;
