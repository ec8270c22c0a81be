//! cargo-fuzz target: see `vpn_fuzz::gcm::differential`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vpn_fuzz::gcm::differential(data));
