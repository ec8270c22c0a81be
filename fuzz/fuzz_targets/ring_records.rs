//! cargo-fuzz target: see `vpn_fuzz::shm::ring_records`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vpn_fuzz::shm::ring_records(data));
