//! The control plane of the VPN concentrator.
//!
//! `iked`, the IKEv2 daemon (RFC 7296), negotiates IKE and Child SAs with peers and installs
//! them into the dataplane over the shared-memory ring; `vpnctl` is the operator CLI.
//! [`ring_client`] is the control end of that ring, shared by both.
#![forbid(unsafe_code)]

pub mod config;
pub mod daemon;
pub mod ike;
pub mod ring_client;
pub mod ring_pump;
pub mod shell;
