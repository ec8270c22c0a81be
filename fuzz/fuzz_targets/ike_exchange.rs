//! cargo-fuzz target: see `vpn_fuzz::exchange::exchange`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vpn_fuzz::exchange::exchange(data));
