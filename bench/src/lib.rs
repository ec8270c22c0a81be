//! Benchmark helpers shared by the criterion benches and `vpnbench`.
#![forbid(unsafe_code)]
