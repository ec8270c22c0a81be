//! ESP over IPv6 behind extension headers (RFC 8200 §4, RFC 4303 §3.1.1): hop-by-hop,
//! routing and destination options before ESP are walked and stripped with the outer
//! header; a fragment header is counted and dropped (we do not reassemble); a chain that
//! overruns the packet is `Malformed`; nothing panics.

mod common;

use common::*;
use dataplane::esp::{self, decap, encap, DropReason, Verdict};
use proptest::prelude::*;

const HBH: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const ESP: u8 = 50;
const DEST_OPTS: u8 = 60;

/// An IPv4-in-IPv6 tunnel SA pair and one ESP packet it sealed (IPv6 header, then ESP).
fn sealed() -> (esp::InboundSa, Vec<u8>, Vec<u8>) {
    let cfg = config(
        Shape::Tunnel {
            outer_v6: true,
            inner_v6: false,
        },
        "aes128gcm16",
        false,
        false,
    );
    let (out, inb) = sa_pair(&cfg);
    let inner = udp_packet(false, b"behind extension headers", 0);
    let mut f = frame(&inner);
    assert_eq!(encap(&out, &mut f), Verdict::Forward);
    let wire = f.data().to_vec();
    assert_eq!(
        wire[6], ESP,
        "the sealed packet carries ESP right after the IPv6 header"
    );
    (inb, wire, inner)
}

/// One extension header of `len8` 8-octet units (RFC 8200 §4.3 length encoding), options
/// area filled with PadN so the header is well formed.
fn ext(kind: u8, next: u8, len8: u8) -> Vec<u8> {
    let mut h = vec![0u8; (usize::from(len8) + 1) * 8];
    h[0] = next;
    match kind {
        FRAGMENT => h[1] = 0, // reserved; offset 0 and M = 0: a whole "first" fragment
        ROUTING => {
            h[1] = len8;
            h[2] = 4; // routing type (segment routing) with segments left 0: skipped
        }
        _ => {
            h[1] = len8;
            h[2] = 1; // PadN over the rest of the options area
            h[3] = (h.len() - 4) as u8;
        }
    }
    h
}

/// `wire` (IPv6 + ESP) with the chain `kinds` inserted between the IPv6 header and ESP.
fn with_chain(wire: &[u8], kinds: &[(u8, u8)]) -> Vec<u8> {
    let mut chain = Vec::new();
    for (i, &(kind, len8)) in kinds.iter().enumerate() {
        let next = kinds.get(i + 1).map_or(ESP, |k| k.0);
        let h = if kind == FRAGMENT {
            ext(FRAGMENT, next, 0)
        } else {
            ext(kind, next, len8)
        };
        chain.extend_from_slice(&h);
    }
    let mut p = wire[..40].to_vec();
    p[6] = kinds.first().map_or(ESP, |k| k.0);
    let plen = u16::from_be_bytes([p[4], p[5]]) as usize + chain.len();
    p[4..6].copy_from_slice(&(plen as u16).to_be_bytes());
    p.extend_from_slice(&chain);
    p.extend_from_slice(&wire[40..]);
    p
}

#[test]
fn esp_behind_extension_headers_is_decapsulated() {
    let chains: &[&[(u8, u8)]] = &[
        &[(DEST_OPTS, 0)],
        &[(DEST_OPTS, 2)],
        &[(HBH, 0), (DEST_OPTS, 0)],
        &[(HBH, 0), (ROUTING, 2), (DEST_OPTS, 1)],
        // Longer than the XDP program walks (6); the engine itself is bounded by the length.
        &[(DEST_OPTS, 0); 8],
    ];
    for chain in chains {
        let (inb, wire, inner) = sealed();
        let pkt = with_chain(&wire, chain);
        assert_eq!(
            esp::peek_spi(&pkt),
            Some(inb.spi()),
            "{chain:?}: SPI found behind the chain"
        );
        let mut f = frame(&pkt);
        assert_eq!(decap(&inb, &mut f), Verdict::Forward, "{chain:?}");
        assert_eq!(
            f.data(),
            &inner[..],
            "{chain:?}: the inner packet, unchanged"
        );
    }
}

#[test]
fn a_fragment_header_before_esp_is_counted_as_a_fragment() {
    let (inb, wire, _) = sealed();
    for chain in [&[(FRAGMENT, 0)][..], &[(DEST_OPTS, 0), (FRAGMENT, 0)][..]] {
        let mut f = frame(&with_chain(&wire, chain));
        assert_eq!(
            decap(&inb, &mut f),
            Verdict::Drop(DropReason::Fragment),
            "{chain:?}"
        );
    }
}

#[test]
fn a_chain_that_overruns_the_packet_is_malformed() {
    let (inb, wire, _) = sealed();
    let mut pkt = with_chain(&wire, &[(HBH, 0), (DEST_OPTS, 0)]);
    pkt[48 + 1] = 250; // destination options claim 2 KB: beyond the packet
    assert_eq!(esp::peek_spi(&pkt), None);
    let mut f = frame(&pkt);
    assert_eq!(decap(&inb, &mut f), Verdict::Drop(DropReason::Malformed));
    // Truncated inside the chain: the IPv6 payload length ends before the header does.
    let mut short = with_chain(&wire, &[(DEST_OPTS, 0)])[..44].to_vec();
    short[4..6].copy_from_slice(&4u16.to_be_bytes());
    let mut f = frame(&short);
    assert_eq!(decap(&inb, &mut f), Verdict::Drop(DropReason::Malformed));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    /// Any bytes in the chain: a verdict, never a panic, never a forward of garbage.
    #[test]
    fn garbled_chains_never_panic(kinds in proptest::collection::vec((prop_oneof![Just(HBH), Just(ROUTING), Just(DEST_OPTS), Just(FRAGMENT)], 0u8..4), 1..8),
                                  flips in proptest::collection::vec((0usize..256, any::<u8>()), 0..6)) {
        let (inb, wire, inner) = sealed();
        let mut pkt = with_chain(&wire, &kinds);
        let chain_end = pkt.len() - (wire.len() - 40);
        for (at, b) in flips {
            let i = 40 + at % (chain_end - 40);
            pkt[i] = b;
        }
        let _ = esp::peek_spi(&pkt);
        let mut f = frame(&pkt);
        if decap(&inb, &mut f) == Verdict::Forward {
            prop_assert_eq!(f.data(), &inner[..]);
        }
    }
}
