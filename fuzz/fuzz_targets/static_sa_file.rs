//! cargo-fuzz target: see `vpn_fuzz::config::static_sa_file`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vpn_fuzz::config::static_sa_file(data));
