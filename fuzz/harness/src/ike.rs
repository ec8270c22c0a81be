//! The IKE message codec (`control::ike::wire`, RFC 7296 §3) and IKE fragment reassembly
//! (`control::ike::frag`, RFC 7383) on arbitrary bytes.
//!
//! `ike_codec` — input: one datagram's bytes. What the codec promises (wire.rs): `parse`
//! never panics and refuses what it cannot represent; `emit` writes the canonical form
//! (reserved bits and the critical flag zero, lengths and next-payload fields recomputed,
//! unknown transform attributes and bytes after the header's length dropped). So the
//! properties are: for whatever parses, `parse(emit(m)) == m` (up to the header's length
//! field, which `emit` recomputes), and `emit` is byte-exact on its own output
//! (`emit(parse(emit(m))) == emit(m)`), which also means our canonical form is a fixpoint.
//! The same bytes also go through the other code that reads raw datagrams before any SA
//! does (the endpoint's classification, `peek`, the INVALID_MAJOR_VERSION answer, the
//! fragment-number peek, the trace summary), and, from byte 1 on, through `parse_chain` as
//! the decrypted contents of an SK payload whose first payload type is byte 0.
//!
//! `ike_frag` — see [`frag`].
use std::net::SocketAddr;

use control::daemon::endpoint::{classify, Verdict};
use control::ike::frag::{self, Reassembler, MAX_FRAGMENTS, MAX_REASSEMBLED};
use control::ike::sa::{invalid_major_version, is_init_request, peek};
use control::ike::sk::{OpenedFragment, OpenedSk};
use control::ike::summary;
use control::ike::wire::{self, Header, Message, HEADER_LEN};

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 2], port))
}

/// Assert the round-trip properties on a parsed message.
fn round_trip(m: &Message) {
    let e1 = m.emit();
    let back = Message::parse(&e1).unwrap_or_else(|e| panic!("our own emit does not parse: {e}"));
    assert_eq!(
        back.header,
        Header {
            length: e1.len() as u32,
            ..m.header
        },
        "the header changed in a round trip"
    );
    assert_eq!(
        back.payloads, m.payloads,
        "payloads changed in a round trip"
    );
    assert_eq!(back.emit(), e1, "emit is not byte-exact on its own output");
    // The summary line (vpnctl trace) of anything that parsed.
    let _ = summary::parsed(&m.header, &m.payloads);
}

/// The `ike_codec` harness.
pub fn codec(data: &[u8]) {
    if let Ok(m) = Message::parse(data) {
        assert!(m.header.major == 2);
        // A message that parsed is at least a header and fits in what came.
        assert!(m.header.length as usize >= HEADER_LEN && m.header.length as usize <= data.len());
        round_trip(&m);
    }
    // The decrypted contents of an SK payload: the same chain parser, another entry point.
    if let Some((&first, rest)) = data.split_first() {
        if let Ok(p) = wire::parse_chain(first, rest) {
            let mut out = Vec::new();
            let first2 = wire::emit_chain(&p, &mut out);
            assert_eq!(
                wire::parse_chain(first2, &out).as_ref(),
                Ok(&p),
                "an inner chain changed in a round trip"
            );
            let mut out2 = Vec::new();
            wire::emit_chain(&p, &mut out2);
            assert_eq!(out2, out);
        }
    }
    // The stateless front door: what a datagram on 500 or 4500 is before an SA sees it.
    for port in [500, 4500] {
        match classify(local(port), data) {
            Verdict::Answer(reply) => {
                let m = Message::parse(&reply).expect("INVALID_MAJOR_VERSION answer parses");
                assert!(m.header.is_response());
            }
            Verdict::InitRequest { msg, .. } | Verdict::ToSa { msg, .. } => {
                assert!(peek(msg).is_some());
            }
            Verdict::Keepalive | Verdict::Drop(_) => {}
        }
    }
    if let Some(h) = peek(data) {
        let _ = is_init_request(&h);
    }
    if let Some(reply) = invalid_major_version(data) {
        Message::parse(&reply).expect("INVALID_MAJOR_VERSION answer parses");
    }
    let _ = frag::peek_fragment_number(data);
}

/// `ike_frag`: RFC 7383 reassembly of verified fragments, fed straight to the
/// [`Reassembler`] (the ICV check before it is `ike_exchange`'s business).
///
/// Input: `[max_bytes_sel][max_age_sel]` then records
/// `[number:2][total:2][mid_sel][first][dt][len][len bytes]` until the input ends (a short
/// last record takes what is left). `max_bytes_sel` picks the byte cap (a small one, so the
/// fuzzer meets it, or [`MAX_REASSEMBLED`]), `mid_sel` bits 0–1 the message ID, bit 2 the
/// exchange, `dt` advances the clock (ms × 16).
///
/// Properties: never a panic; the set in progress never holds more than the cap; a
/// completed message is its fragments' bytes in fragment-number order (checked against a
/// model of the set kept here), its first payload type is fragment 1's, its header is
/// the SK form; duplicates, bad numbers and over-limit totals are refused.
pub fn frag(data: &[u8]) {
    let [cap_sel, age_sel, rest @ ..] = data else {
        return;
    };
    let max_bytes = if cap_sel & 1 == 0 {
        MAX_REASSEMBLED
    } else {
        64 + usize::from(*cap_sel) * 8
    };
    let max_age = u64::from(*age_sel) * 64;
    let mut r = Reassembler::new(max_bytes, max_age);
    // The model: the set in progress as (mid, exchange, total, parts), its bytes.
    struct Model {
        mid: u32,
        exchange: u8,
        total: u16,
        started: u64,
        first: Option<u8>,
        parts: Vec<Option<Vec<u8>>>,
    }
    let mut model: Option<Model> = None;
    let mut now = 0u64;
    let mut rest = rest;
    while rest.len() >= 8 {
        let number = u16::from_be_bytes([rest[0], rest[1]]);
        let total = u16::from_be_bytes([rest[2], rest[3]]);
        let (mid_sel, first, dt, len) = (rest[4], rest[5], rest[6], usize::from(rest[7]));
        let body = &rest[8..];
        let len = len.min(body.len());
        let (plain, tail) = body.split_at(len);
        rest = tail;
        now += u64::from(dt) * 16;
        let mid = u32::from(mid_sel & 3);
        let exchange = if mid_sel & 4 == 0 {
            wire::exchange::IKE_AUTH
        } else {
            wire::exchange::INFORMATIONAL
        };
        let header = Header {
            spi_i: 1,
            spi_r: 2,
            next_payload: wire::payload::SKF,
            major: 2,
            minor: 0,
            exchange,
            flags: wire::flags::INITIATOR,
            message_id: mid,
            length: 0,
        };
        let f = OpenedFragment {
            sk: OpenedSk {
                header,
                first: if number == 1 { first } else { 0 },
                plain: plain.to_vec(),
            },
            number,
            total,
        };
        let before = r.in_progress();
        let res = r.push(f, now);
        assert!(
            r.held_bytes() <= max_bytes,
            "the reassembler holds {} bytes, over its cap of {max_bytes}",
            r.held_bytes()
        );

        // The model's expectations (frag.rs `push`, RFC 7383 §2.5.2, §2.5.3).
        if number == 0 || total == 0 || number > total || total > MAX_FRAGMENTS {
            assert!(res.is_err(), "fragment {number} of {total} accepted");
            assert_eq!(
                r.in_progress(),
                before,
                "a refused fragment changed the set"
            );
            continue;
        }
        let mut replaced = false;
        if let Some(m) = &model {
            let stale = now.saturating_sub(m.started) > max_age;
            if stale || m.mid != mid || m.exchange != exchange || total > m.total {
                model = None;
                replaced = true;
            } else if total < m.total {
                assert!(res.is_err(), "a smaller total was not ignored");
                continue;
            }
        }
        let m = model.get_or_insert_with(|| Model {
            mid,
            exchange,
            total,
            started: now,
            first: None,
            parts: vec![None; usize::from(total)],
        });
        let slot = usize::from(number - 1);
        if m.parts[slot].is_some() {
            assert!(res.is_err(), "a duplicate fragment was used");
            continue;
        }
        let held: usize = m.parts.iter().flatten().map(Vec::len).sum();
        if held + plain.len() > max_bytes {
            assert!(res.is_err(), "the byte cap was not applied");
            assert!(!r.in_progress(), "a set over the cap was kept");
            model = None;
            continue;
        }
        let pushed = res.unwrap_or_else(|e| panic!("a good fragment was refused: {e}"));
        assert_eq!(
            pushed.dropped.is_some(),
            replaced,
            "a dropped set went unreported"
        );
        m.parts[slot] = Some(plain.to_vec());
        if number == 1 {
            m.first = Some(first);
        }
        let held: usize = m.parts.iter().flatten().map(Vec::len).sum();
        if m.parts.iter().any(Option::is_none) {
            assert_eq!(
                r.held_bytes(),
                held,
                "the reassembler's count differs from its parts"
            );
        }
        if m.parts.iter().all(Option::is_some) {
            let done = pushed.message.expect("the last fragment completes the set");
            let want: Vec<u8> = m.parts.iter().flatten().flatten().copied().collect();
            assert_eq!(
                done.plain, want,
                "reassembled bytes differ from the fragments"
            );
            assert_eq!(
                Some(done.first),
                m.first,
                "first payload type is not fragment 1's"
            );
            assert_eq!(done.header.next_payload, wire::payload::SK);
            assert_eq!(done.header.message_id, mid);
            assert_eq!(
                done.header.length as usize,
                HEADER_LEN + wire::PAYLOAD_HEADER_LEN + want.len()
            );
            assert!(!r.in_progress());
            model = None;
        } else {
            assert!(pushed.message.is_none(), "a message completed early");
            assert!(r.in_progress());
        }
    }
}
