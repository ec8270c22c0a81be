//! cargo-fuzz target: see `vpn_fuzz::config::iked_config`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vpn_fuzz::config::iked_config(data));
