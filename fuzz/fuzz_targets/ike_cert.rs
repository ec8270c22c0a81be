//! cargo-fuzz target: see `vpn_fuzz::cert::cert`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vpn_fuzz::cert::cert(data));
