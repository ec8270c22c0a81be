//! cargo-fuzz target: see `vpn_fuzz::esp::decap`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vpn_fuzz::esp::decap(data));
