//! The control plane of the VPN concentrator.
//!
//! `iked`, the IKEv2 daemon (RFC 7296), negotiates IKE and Child SAs with peers and installs
//! them into the dataplane over the shared-memory ring; `vpnctl` is the operator CLI.
//! [`ring_client`] is the control end of that ring, shared by both.
#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod daemon;
pub mod diagnose;
#[cfg(fuzzing)]
mod fuzz_memo;
pub mod ike;
pub mod logging;
pub mod metrics;
pub mod metrics_http;
pub mod pki;
pub mod ring_client;
pub mod ring_pump;
pub mod shell;
pub mod vpnctl;

/// A deterministic random source for the crate's unit tests.
#[cfg(test)]
pub(crate) mod test_rng {
    use crate::ike::sa::Random;

    /// A linear congruential generator: the same bytes for the same seed.
    pub struct Seq(pub u64);
    impl Random for Seq {
        fn fill(&mut self, buf: &mut [u8]) {
            for b in buf {
                self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1);
                *b = (self.0 >> 56) as u8;
            }
        }
    }
}
