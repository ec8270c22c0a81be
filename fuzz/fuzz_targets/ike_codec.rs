//! cargo-fuzz target: see `vpn_fuzz::ike::codec`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vpn_fuzz::ike::codec(data));
