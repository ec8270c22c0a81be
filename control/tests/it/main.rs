//! The control crate's integration tests, one binary: each file below was a test binary of
//! its own, and each linked the whole crate and its dependencies again (one link instead of
//! thirteen). `world` is the daemon tests' virtual network and clock, `support` the IKE
//! tests' deterministic random source and SPI allocator.

mod support;
mod world;

mod daemon_chaos;
mod daemon_rekey;
mod daemon_reports;
mod daemon_rfc9611;
mod daemon_sans_io;
mod ike_certs;
mod ike_frag;
mod ike_pq;
mod ike_rekey_child;
mod ike_rekey_ike;
mod ike_sans_io;
mod json_schema;
mod readme_config;
mod sig_wycheproof;
