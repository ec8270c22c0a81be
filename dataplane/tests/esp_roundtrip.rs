//! Property tests of the ESP engine: round trips over every mode × cipher × family × NAT-T
//! × ESN, tamper detection, ESN boundary crossing, exhaustion and hostile input.

mod common;

use common::*;
use dataplane::esp::{self, DropReason, Frame, InboundSa, SaEvent, Verdict};
use proptest::prelude::*;

fn all_combos() -> Vec<(Shape, &'static str, bool, bool)> {
    let mut v = Vec::new();
    for &shape in SHAPES {
        for &t in TRANSFORMS {
            for nat_t in [false, true] {
                for esn in [false, true] {
                    v.push((shape, t, nat_t, esn));
                }
            }
        }
    }
    v
}

/// Encapsulate `pkt`, check the result is ESP on the wire, decapsulate, compare.
fn round_trip(shape: Shape, t: &str, nat_t: bool, esn: bool, payload: &[u8], start_seq: u64) {
    let cfg = config(shape, t, nat_t, esn);
    let (out, mut inb) = sa_pair(&cfg);
    out.set_last_seq(start_seq);
    let pkt = udp_packet(shape.inner_v6(), payload, 0xb8 | 2);
    let mut f = frame(&pkt);
    assert_eq!(
        esp::encap(&out, &mut f),
        Verdict::Forward,
        "{shape:?} {t} nat_t={nat_t} esn={esn}"
    );
    let wire = f.data().to_vec();
    // The payload must not appear in clear on the wire.
    if payload.len() >= 16 {
        assert!(
            !wire.windows(16).any(|w| w == &payload[..16]),
            "plaintext leaked"
        );
    }
    let outer_v6 = wire[0] >> 4 == 6;
    let (ip_len, proto_at) = if outer_v6 {
        (40, 6)
    } else {
        (usize::from(wire[0] & 15) * 4, 9)
    };
    let expect_proto = if nat_t { 17 } else { 50 };
    assert_eq!(wire[proto_at], expect_proto);
    let esp_at = ip_len + if nat_t { 8 } else { 0 };
    assert_eq!(&wire[esp_at..esp_at + 4], &0x1000_0001u32.to_be_bytes());
    assert_eq!(
        &wire[esp_at + 4..esp_at + 8],
        &((start_seq + 1) as u32).to_be_bytes()
    );

    // Inbound on a fresh receiver that has already seen the sender's previous packets.
    if start_seq > 0 {
        advance_window(&mut inb, start_seq);
    }
    let mut g = Frame::with_packet(vec![0u8; BUF], 64, &wire).unwrap();
    assert_eq!(
        esp::decap(&inb, &mut g),
        Verdict::Forward,
        "{shape:?} {t} nat_t={nat_t} esn={esn}"
    );
    assert_eq!(g.data(), &pkt[..], "{shape:?} {t} nat_t={nat_t} esn={esn}");
    // A second copy is a replay.
    let mut h = Frame::with_packet(vec![0u8; BUF], 64, &wire).unwrap();
    assert_eq!(
        esp::decap(&inb, &mut h),
        Verdict::Drop(DropReason::ReplayDuplicate)
    );
    assert_eq!(inb.counters().packets, 1);
    assert_eq!(out.counters().packets, 1);
}

/// Set the receiver's window as if it had seen sequence number `seq`.
fn advance_window(inb: &mut InboundSa, seq: u64) {
    inb.restore_replay_top(seq);
}

#[test]
fn every_combination_round_trips() {
    let combos = all_combos();
    assert_eq!(combos.len(), 6 * 9 * 4);
    for (shape, t, nat_t, esn) in combos {
        for len in [0usize, 1, 2, 3, 13, 14, 15, 16, 17, 64, 1400] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x5a).collect();
            round_trip(shape, t, nat_t, esn, &payload, 0);
        }
        // Near the 32-bit boundary.
        let start = if esn { (1 << 32) - 2 } else { (1 << 32) - 3 };
        round_trip(shape, t, nat_t, esn, b"boundary", start);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_round_trips(
        combo in 0usize..(6 * 9 * 4),
        payload in proptest::collection::vec(any::<u8>(), 0..2000),
        start in prop_oneof![Just(0u64), 0u64..1_000_000, (1u64 << 32) - 100..(1u64 << 32) + 100],
    ) {
        let (shape, t, nat_t, esn) = all_combos()[combo];
        // Without ESN the counter cannot pass 2^32 - 1.
        let start = if esn { start } else { start.min((1 << 32) - 2) };
        round_trip(shape, t, nat_t, esn, &payload, start);
    }

    #[test]
    fn any_flipped_bit_in_esp_is_rejected(
        combo in 0usize..(6 * 9 * 4),
        len in 0usize..300,
        bit in any::<prop::sample::Index>(),
    ) {
        let (shape, t, nat_t, esn) = all_combos()[combo];
        let cfg = config(shape, t, nat_t, esn);
        let (out, inb) = sa_pair(&cfg);
        let pkt = udp_packet(shape.inner_v6(), &vec![7u8; len], 0);
        let mut f = frame(&pkt);
        prop_assert!(esp::encap(&out, &mut f).is_forward());
        let mut wire = f.data().to_vec();
        let ip_len = if wire[0] >> 4 == 6 { 40 } else { 20 };
        let esp_at = ip_len + if nat_t { 8 } else { 0 };
        let nbits = (wire.len() - esp_at) * 8;
        let b = esp_at * 8 + bit.index(nbits);
        wire[b / 8] ^= 1 << (b % 8);
        let mut g = Frame::with_packet(vec![0u8; BUF], 64, &wire).unwrap();
        let v = esp::decap(&inb, &mut g);
        prop_assert!(!v.is_forward(), "flipped bit {} accepted", b);
        prop_assert!(matches!(
            v,
            Verdict::Drop(DropReason::IcvFailed | DropReason::UnknownSpi | DropReason::ReplayTooOld | DropReason::Malformed)
        ), "{:?}", v);
    }

    #[test]
    fn truncated_packets_never_panic_nor_pass(
        combo in 0usize..(6 * 9 * 4),
        len in 0usize..200,
        cut in any::<prop::sample::Index>(),
    ) {
        let (shape, t, nat_t, esn) = all_combos()[combo];
        let cfg = config(shape, t, nat_t, esn);
        let (out, inb) = sa_pair(&cfg);
        let pkt = udp_packet(shape.inner_v6(), &vec![1u8; len], 0);
        let mut f = frame(&pkt);
        prop_assert!(esp::encap(&out, &mut f).is_forward());
        let wire = f.data().to_vec();
        let n = cut.index(wire.len());
        let mut g = Frame::with_packet(vec![0u8; BUF], 64, &wire[..n]).unwrap();
        prop_assert!(!esp::decap(&inb, &mut g).is_forward());
    }

    #[test]
    fn random_input_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..1600),
        prefix in 0usize..4,
        headroom in 0usize..80,
        tailroom in 0usize..40,
    ) {
        let cfg = config(SHAPES[prefix % SHAPES.len()], TRANSFORMS[prefix % TRANSFORMS.len()], prefix & 1 == 1, prefix & 2 == 2);
        let (out, inb) = sa_pair(&cfg);
        // Sometimes start with a plausible IP header so parsing gets further.
        let mut b = bytes.clone();
        if !b.is_empty() && prefix == 0 {
            b[0] = 0x45;
        }
        let mut f = Frame::with_packet(vec![0u8; headroom + b.len() + tailroom], headroom, &b).unwrap();
        let _ = esp::decap(&inb, &mut f);
        let mut f = Frame::with_packet(vec![0u8; headroom + b.len() + tailroom], headroom, &b).unwrap();
        let _ = esp::encap(&out, &mut f);
    }
}

#[test]
fn esn_crosses_2_32_in_and_out_of_order() {
    for &t in &["aes128gcm16", "chacha20poly1305", "aes256-sha512"] {
        let cfg = config(SHAPES[0], t, false, true);
        let (out, mut inb) = sa_pair(&cfg);
        out.set_last_seq((1 << 32) - 6);
        let mut wires = Vec::new();
        for i in 0..12u8 {
            let mut f = frame(&udp_packet(false, &[i; 40], 0));
            assert!(esp::encap(&out, &mut f).is_forward());
            wires.push(f.data().to_vec());
        }
        assert_eq!(out.last_seq(), (1 << 32) + 6);
        advance_window(&mut inb, (1 << 32) - 8);
        // Deliver out of order across the boundary: high first, then the low ones.
        let order = [6usize, 7, 0, 1, 8, 2, 3, 11, 4, 5, 9, 10];
        for &i in &order {
            let mut g = Frame::with_packet(vec![0u8; BUF], 64, &wires[i]).unwrap();
            assert_eq!(esp::decap(&inb, &mut g), Verdict::Forward, "{t} packet {i}");
            assert_eq!(&g.data()[28..], &[i as u8; 40]);
        }
        for &i in &order {
            let mut g = Frame::with_packet(vec![0u8; BUF], 64, &wires[i]).unwrap();
            assert_eq!(
                esp::decap(&inb, &mut g),
                Verdict::Drop(DropReason::ReplayDuplicate),
                "{t} replay {i}"
            );
        }
        assert_eq!(inb.replay_window().top(), (1 << 32) + 6);
    }
}

#[test]
fn outbound_counter_never_wraps() {
    let cfg = config(SHAPES[0], "aes128gcm16", false, false);
    let (out, _) = sa_pair(&cfg);
    out.set_last_seq(u64::from(u32::MAX) - 1);
    let pkt = udp_packet(false, b"last", 0);
    let mut f = frame(&pkt);
    assert!(esp::encap(&out, &mut f).is_forward());
    assert_eq!(
        out.poll_event(),
        Some(SaEvent::SeqNearlyExhausted { spi: out.spi() })
    );
    for _ in 0..3 {
        let mut f = frame(&pkt);
        assert_eq!(
            esp::encap(&out, &mut f),
            Verdict::Drop(DropReason::SeqExhausted)
        );
    }
    assert_eq!(out.last_seq(), u64::from(u32::MAX));
    // Reported once, however many packets hit the limit.
    assert_eq!(
        out.poll_event(),
        Some(SaEvent::SeqExhausted { spi: out.spi() })
    );
    assert_eq!(out.poll_event(), None);
    assert_eq!(out.counters().drops.get(DropReason::SeqExhausted), 3);
}

#[test]
fn oversized_and_roomless_frames_are_refused() {
    let cfg = config(SHAPES[0], "aes128gcm16", true, false);
    let (out, _) = sa_pair(&cfg);
    let big = udp_packet(false, &vec![0u8; 65_535 - 28], 0);
    let mut f = Frame::with_packet(vec![0u8; 70_000], 128, &big).unwrap();
    assert_eq!(esp::encap(&out, &mut f), Verdict::Drop(DropReason::TooBig));
    let pkt = udp_packet(false, b"abc", 0);
    let mut f = Frame::with_packet(vec![0u8; pkt.len() + 8], 8, &pkt).unwrap();
    assert_eq!(esp::encap(&out, &mut f), Verdict::Drop(DropReason::NoRoom));
    let mut f = Frame::with_packet(vec![0u8; 64 + pkt.len()], 64, &pkt).unwrap();
    assert_eq!(esp::encap(&out, &mut f), Verdict::Drop(DropReason::NoRoom));
    // Neither burned a sequence number.
    assert_eq!(out.last_seq(), 0);
}

#[test]
fn max_inner_len_is_the_exact_mtu_limit() {
    for &shape in SHAPES {
        for &t in TRANSFORMS {
            for nat_t in [false, true] {
                let cfg = config(shape, t, nat_t, false);
                let (out, _) = sa_pair(&cfg);
                let mtu = 1500;
                let max = out.max_inner_len(mtu, shape.inner_v6());
                let hdr = if shape.inner_v6() { 48 } else { 28 };
                let pkt = udp_packet(shape.inner_v6(), &vec![0u8; max - hdr], 0);
                let mut f = frame(&pkt);
                assert!(esp::encap(&out, &mut f).is_forward());
                // Transport mode keeps the inner header, which max_inner_len counts as payload.
                assert!(
                    f.len() <= mtu,
                    "{shape:?} {t} nat_t={nat_t}: {} > {mtu}",
                    f.len()
                );
                // At most one alignment unit (16 bytes for CBC) left unused.
                assert!(f.len() + 16 > mtu, "{shape:?} {t}: {} wastes room", f.len());
                // One byte more no longer fits.
                let pkt = udp_packet(shape.inner_v6(), &vec![0u8; max - hdr + 1], 0);
                let mut f = frame(&pkt);
                assert!(esp::encap(&out, &mut f).is_forward());
                assert!(
                    f.len() > mtu,
                    "{shape:?} {t} nat_t={nat_t}: max_inner_len too small"
                );
            }
        }
    }
}

/// RFC 4301 §4.4.2.1: soft limits raise a rekey event once; hard limits raise another and
/// stop the SA — exactly at the packet limit outbound, at the batch that crosses the byte
/// limit inbound.
#[test]
fn lifetimes_raise_events_and_stop_the_sa() {
    use dataplane::esp::{Lifetime, LifetimeKind};
    let mut cfg = config(SHAPES[0], "aes128gcm16", false, false);
    cfg.lifetime = Lifetime {
        soft_packets: 3,
        hard_packets: 5,
        soft_bytes: 0,
        hard_bytes: 0,
    };
    let mut in_cfg = cfg.clone();
    in_cfg.lifetime = Lifetime {
        soft_packets: 0,
        hard_packets: 0,
        soft_bytes: 100,
        hard_bytes: 200,
    };
    let (out, _) = sa_pair(&cfg);
    let (_, inb) = sa_pair(&in_cfg);
    let pkt = udp_packet(false, &[1u8; 32], 0); // 60-byte inner packets
    let mut wire = Vec::new();
    for i in 0..7 {
        let mut f = frame(&pkt);
        let v = esp::encap(&out, &mut f);
        if i < 5 {
            assert!(v.is_forward(), "packet {i}");
            wire.push(f.data().to_vec());
        } else {
            assert_eq!(v, Verdict::Drop(DropReason::SaExpired), "packet {i}");
        }
    }
    let spi = out.spi();
    assert_eq!(
        out.poll_event(),
        Some(SaEvent::SoftLifetime {
            spi,
            kind: LifetimeKind::Packets
        })
    );
    assert_eq!(
        out.poll_event(),
        Some(SaEvent::HardLifetime {
            spi,
            kind: LifetimeKind::Packets
        })
    );
    assert_eq!(out.poll_event(), None, "each raised once");
    assert!(out.is_expired());
    assert_eq!(out.last_seq(), 5, "no number past the hard limit");

    let mut accepted = 0;
    for w in &wire {
        let mut f = frame(w);
        if esp::decap(&inb, &mut f).is_forward() {
            accepted += 1;
        }
    }
    // 60 bytes each: soft at the 2nd (120 B), hard at the 4th (240 B); the 5th is refused.
    assert_eq!(accepted, 4);
    assert_eq!(inb.counters().drops.get(DropReason::SaExpired), 1);
    let kinds: Vec<_> = std::iter::from_fn(|| inb.poll_event()).collect();
    assert_eq!(
        kinds,
        vec![
            SaEvent::SoftLifetime {
                spi,
                kind: LifetimeKind::Bytes
            },
            SaEvent::HardLifetime {
                spi,
                kind: LifetimeKind::Bytes
            }
        ]
    );
}
