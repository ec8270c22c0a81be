//! The control plane of the VPN concentrator.
//!
//! `iked`, the IKEv2 daemon (RFC 7296), negotiates IKE and Child SAs with peers and installs
//! them into the dataplane over the shared-memory ring; `vpnctl` is the operator CLI. Both
//! arrive with later issues; this crate holds their place in the workspace layout.
#![forbid(unsafe_code)]
