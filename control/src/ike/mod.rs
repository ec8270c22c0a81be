//! IKEv2 (RFC 7296), sans-IO: the message codec first; the key derivation, the IKE and
//! Child SA state machines and the daemon shell build on it.

pub mod algnames;
pub mod auth;
pub mod child;
pub mod dh;
pub mod frag;
pub mod kem;
pub mod keys;
pub mod lifetime;
pub mod proposal;
pub mod sa;
pub mod sig;
pub mod sk;
pub mod summary;
pub mod wire;
