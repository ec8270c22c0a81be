//! Benchmark helpers shared by the criterion benches and `vpnbench`.
#![forbid(unsafe_code)]

pub mod vpnbench;

/// An IPv4/UDP packet of `len` bytes (zero payload) from 10.1.0.10 to 10.2.0.20: the inner
/// packet the ESP benchmarks encapsulate.
pub fn inner_packet(len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    dataplane::wire::Ipv4Repr {
        src: [10, 1, 0, 10].into(),
        dst: [10, 2, 0, 20].into(),
        protocol: 17,
        payload_len: len - 20,
        ttl: 64,
        tos: 0,
        ident: 1,
        dont_frag: true,
    }
    .emit(&mut p)
    .unwrap();
    p
}
