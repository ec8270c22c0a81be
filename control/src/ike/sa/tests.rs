//! What the public API cannot make a peer send: requests crafted with the peer's own keys
//! (an error notify in INFORMATIONAL, rekey and PFS requests, unexpected exchanges), to
//! check each is answered and acted on or reported.

use std::net::SocketAddr;

use super::super::child::{parse_ts, ChildCfg};
use super::super::proposal::PROTO_IKE;
use super::super::wire::{exchange, Payload};
use super::*;

struct Seeded(u64);
impl Random for Seeded {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *b = self.0 as u8;
        }
    }
}

struct Counter(u32);
impl SpiAllocator for Counter {
    fn alloc_spi(&mut self) -> u32 {
        self.0 += 1;
        self.0
    }
}

fn conn(initiator: bool) -> Connection {
    let (a, b): (SocketAddr, SocketAddr) = (
        "192.0.2.1:500".parse().unwrap(),
        "192.0.2.2:500".parse().unwrap(),
    );
    let (local, remote, lid, rid, lts, rts) = if initiator {
        (a, b, "gw-a", "gw-b", "10.1.0.0/16", "10.2.0.0/16")
    } else {
        (b, a, "gw-b", "gw-a", "10.2.0.0/16", "10.1.0.0/16")
    };
    Connection {
        name: "t".into(),
        local,
        remote,
        local_id: lid.into(),
        remote_id: rid.into(),
        psk: Zeroizing::new(b"k".to_vec()),
        ike: vec!["aes128gcm16-prfsha256-x25519".parse().unwrap()],
        children: vec![ChildCfg {
            per_resource: 0,
            name: "net".into(),
            esp: vec!["aes128gcm16".parse().unwrap()],
            local_ts: vec![parse_ts(lts).unwrap()],
            remote_ts: vec![parse_ts(rts).unwrap()],
            transport: false,
            lifetime: Default::default(),
        }],
        force_encap: false,
        retransmit_ms: 1000,
        retransmit_tries: 5,
        auth: Default::default(),
        fragmentation: Default::default(),
        lifetime: Default::default(),
    }
}

fn drain(sa: &mut IkeSa) -> (Vec<Vec<u8>>, Vec<Event>) {
    let (mut sends, mut rest) = (vec![], vec![]);
    while let Some(e) = sa.poll_event() {
        match e {
            Event::Send { data, .. } => sends.push(data),
            // Message summaries are tested in `ike::summary` and below.
            Event::Log { trace: true, .. } => {}
            e => rest.push(e),
        }
    }
    (sends, rest)
}

/// Two established SAs, their events drained.
fn pair(rng: &mut Seeded) -> (IkeSa, IkeSa) {
    let (ic, rc) = (conn(true), conn(false));
    let first = ChildRequest {
        child: 0,
        inbound_spi: 0x100,
    };
    let mut i = IkeSa::initiate(ic.clone(), ic.local, ic.remote, first, true, 0, rng);
    let (m, _) = drain(&mut i);
    let mut r = match IkeSa::respond(rc.clone(), rc.local, rc.remote, &m[0], 0, rng) {
        Ok(r) => r,
        Err(e) => panic!("{e:?}"),
    };
    let mut spis = Counter(0x200);
    for _ in 0..2 {
        for m in drain(&mut r).0 {
            i.handle(0, ic.local, ic.remote, &m, rng, &mut spis);
        }
        for m in drain(&mut i).0 {
            r.handle(0, rc.local, rc.remote, &m, rng, &mut spis);
        }
    }
    for m in drain(&mut r).0 {
        i.handle(0, ic.local, ic.remote, &m, rng, &mut spis);
    }
    assert_eq!(
        (i.phase(), r.phase()),
        (Phase::Established, Phase::Established)
    );
    assert_eq!((i.children().len(), r.children().len()), (1, 1));
    drain(&mut i);
    (i, r)
}

/// The one datagram of a message that was not fragmented.
fn one(mut d: Vec<Vec<u8>>) -> Vec<u8> {
    assert_eq!(d.len(), 1, "a small message goes whole");
    d.remove(0)
}

/// A request from `from` carrying anything, with its next message ID.
fn request(from: &mut IkeSa, exch: u8, payloads: &[Payload], rng: &mut Seeded) -> Vec<u8> {
    let mid = from.next_mid;
    from.next_mid += 1;
    let h = from.header(exch, mid, false);
    one(from.seal(h, payloads, rng).unwrap())
}

/// Deliver `msg` to `to` (from its peer); the answer's payloads (opened with the sender's
/// keys) and `to`'s other events.
fn deliver(
    from: &IkeSa,
    to: &mut IkeSa,
    msg: &[u8],
    rng: &mut Seeded,
) -> (Vec<Payload>, Vec<Event>) {
    let (l, r) = (to.local(), to.remote());
    to.handle(1, l, r, msg, rng, &mut Counter(0x300));
    let (sends, events) = drain(to);
    assert_eq!(sends.len(), 1, "every request gets exactly one answer");
    let keys = from.keys().unwrap();
    let (h, p) = keys.sk_in.open(&sends[0]).unwrap();
    assert!(h.is_response());
    (p, events)
}

fn has_notify(p: &[Payload], kind: u16) -> bool {
    find_notify(p, kind).is_some()
}

fn ignored(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Ignored { what } => Some(what.as_str()),
            // A refusal is reported once, as a warning line (not also as "ignored").
            Event::Log {
                level: tracing::Level::WARN,
                message,
                ..
            } => Some(message.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn an_error_notify_in_informational_tears_the_sa_down() {
    let mut rng = Seeded(3);
    let (mut i, mut r) = pair(&mut rng);
    let msg = request(
        &mut i,
        exchange::INFORMATIONAL,
        &[notify_payload(notify::TEMPORARY_FAILURE, vec![])],
        &mut rng,
    );
    let (answer, ev) = deliver(&i, &mut r, &msg, &mut rng);
    assert!(answer.is_empty(), "answered (§1.4), with nothing in it");
    assert_eq!(r.phase(), Phase::Closed);
    assert!(ev.iter().any(|e| matches!(
        e,
        Event::ChildDown {
            inbound_spi: 0x201,
            ..
        }
    )));
    assert!(ev.iter().any(|e| matches!(
        e,
        Event::Failed(IkeError::PeerNotify {
            exchange: "INFORMATIONAL",
            notify: notify::TEMPORARY_FAILURE
        })
    )));
}

#[test]
fn authentication_failed_from_the_responder_in_informational_tears_down() {
    let mut rng = Seeded(4);
    let (mut i, mut r) = pair(&mut rng);
    let msg = request(
        &mut r,
        exchange::INFORMATIONAL,
        &[notify_payload(notify::AUTHENTICATION_FAILED, vec![])],
        &mut rng,
    );
    let (_, ev) = deliver(&r, &mut i, &msg, &mut rng);
    assert_eq!(i.phase(), Phase::Closed);
    assert!(ev.iter().any(|e| matches!(
        e,
        Event::Failed(IkeError::PeerRejectedAuth {
            peer_is_initiator: false,
            ..
        })
    )));
}

#[test]
fn status_notifies_and_invalid_spi_are_reported_not_acted_on() {
    let mut rng = Seeded(5);
    let (mut i, mut r) = pair(&mut rng);
    for kind in [40000u16, notify::INVALID_SPI] {
        let msg = request(
            &mut i,
            exchange::INFORMATIONAL,
            &[notify_payload(kind, vec![0, 0, 1, 0])],
            &mut rng,
        );
        let (_, ev) = deliver(&i, &mut r, &msg, &mut rng);
        assert_eq!(r.phase(), Phase::Established, "notify {kind}");
        assert_eq!(ignored(&ev).len(), 1, "notify {kind}: {ev:?}");
    }
}

#[test]
fn a_child_rekey_request_is_answered_and_an_unknown_spi_is_not_found() {
    let mut rng = Seeded(6);
    let (mut i, mut r) = pair(&mut rng);
    let rekey = |spi: u32, i: &IkeSa| {
        // §1.3.3: REKEY_SA with the old SPI, then what a new child has.
        let mut p = vec![Payload::Notify(Notify {
            protocol: super::super::child::PROTO_ESP,
            spi: spi.to_be_bytes().to_vec(),
            kind: notify::REKEY_SA,
            data: vec![],
        })];
        p.extend(i.create_child_payloads(
            ChildRequest {
                child: 0,
                inbound_spi: 0x101,
            },
            &[7; 32],
        ));
        p
    };
    let p = rekey(0x999, &i);
    let msg = request(&mut i, exchange::CREATE_CHILD_SA, &p, &mut rng);
    let (answer, _) = deliver(&i, &mut r, &msg, &mut rng);
    assert!(has_notify(&answer, notify::CHILD_SA_NOT_FOUND), "§2.25");
    assert_eq!(r.children().len(), 1, "no new Child SA");
    let p = rekey(0x100, &i);
    let msg = request(&mut i, exchange::CREATE_CHILD_SA, &p, &mut rng);
    let (_, ev) = deliver(&i, &mut r, &msg, &mut rng);
    assert!(ev.iter().any(|e| matches!(
        e,
        Event::ChildRekeyed {
            outbound_now: false,
            ..
        }
    )));
    assert_eq!(r.children().len(), 2, "old and new until the Delete");
    assert_eq!(r.children()[1].rekeys, 1);
}

/// An IKE SA rekey request (§1.3.2) that cannot be served is answered with the notify
/// that says why, and the IKE SA stays as it is.
#[test]
fn bad_ike_rekey_requests_are_answered_with_the_reason() {
    let mut rng = Seeded(10);
    let (mut i, mut r) = pair(&mut rng);
    let ke = |group: u16, len: usize| Payload::Ke {
        group,
        data: vec![9; len],
    };
    let spi = 0x0102_0304_0506_0708;
    let cases: Vec<(Vec<Payload>, u16, &str)> = vec![
        // No KE.
        (
            vec![
                Payload::Sa(vec![i.cfg.ike[0].to_wire_with_spi(1, spi)]),
                Payload::Nonce(vec![8; 32]),
            ],
            notify::INVALID_SYNTAX,
            "without SA, a valid nonce or KE",
        ),
        // No SPI in the proposal.
        (
            vec![
                Payload::Sa(vec![i.cfg.ike[0].to_wire(1)]),
                Payload::Nonce(vec![8; 32]),
                ke(31, 32),
            ],
            notify::INVALID_SYNTAX,
            "no 8-octet SPI",
        ),
        // A proposal we do not accept: both sides' proposals named.
        (
            vec![
                Payload::Sa(vec!["aes256-sha512-modp3072"
                    .parse::<IkeProposal>()
                    .unwrap()
                    .to_wire_with_spi(1, spi)]),
                Payload::Nonce(vec![8; 32]),
                ke(15, 384),
            ],
            notify::NO_PROPOSAL_CHOSEN,
            "it offered aes256-prfsha512-sha512-modp3072; we accept aes128gcm16-prfsha256-x25519",
        ),
        // A KE for a group we did not choose: INVALID_KE_PAYLOAD naming ours.
        (
            vec![
                Payload::Sa(vec!["aes128gcm16-prfsha256-ecp256-x25519"
                    .parse::<IkeProposal>()
                    .unwrap()
                    .to_wire_with_spi(1, spi)]),
                Payload::Nonce(vec![8; 32]),
                ke(19, 64),
            ],
            notify::INVALID_KE_PAYLOAD,
            "KE for group 19; we chose x25519",
        ),
    ];
    for (p, want, says) in cases {
        let msg = request(&mut i, exchange::CREATE_CHILD_SA, &p, &mut rng);
        let (answer, ev) = deliver(&i, &mut r, &msg, &mut rng);
        assert!(has_notify(&answer, want), "{says}: {answer:?}");
        let why = ignored(&ev);
        assert!(why.len() == 1 && why[0].contains(says), "{says}: {why:?}");
        if want == notify::INVALID_KE_PAYLOAD {
            let n = find_notify(&answer, want).unwrap();
            assert_eq!(n.data, 31u16.to_be_bytes().to_vec());
        }
        assert_eq!(r.phase(), Phase::Established);
        assert!(!ev.iter().any(|e| matches!(e, Event::NewIkeSa(_))));
    }
}

#[test]
fn a_key_exchange_our_child_does_not_offer_is_refused_in_plain_words() {
    let mut rng = Seeded(7);
    let (mut i, mut r) = pair(&mut rng);
    let mut p = i.create_child_payloads(
        ChildRequest {
            child: 0,
            inbound_spi: 0x101,
        },
        &[7; 32],
    );
    // The initiator offers only x25519 (no NONE) and sends a KE for it.
    let with_group: crate::ike::child::EspProposal = "aes128gcm16-x25519".parse().unwrap();
    for x in p.iter_mut() {
        if let Payload::Sa(props) = x {
            *props = vec![with_group.to_wire(1, 0x101)];
        }
    }
    p.push(Payload::Ke {
        group: 31,
        data: vec![9; 32],
    });
    let msg = request(&mut i, exchange::CREATE_CHILD_SA, &p, &mut rng);
    let (answer, ev) = deliver(&i, &mut r, &msg, &mut rng);
    assert!(has_notify(&answer, notify::NO_PROPOSAL_CHOSEN));
    let e = ev
        .iter()
        .find_map(|e| match e {
            Event::ChildFailed { error, .. } => Some(error.to_string()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        e,
        "the peer wants a key exchange (PFS) with x25519 on CREATE_CHILD_SA; our esp_proposals for child net offer no key exchange group: add -x25519 to esp_proposals"
    );
}

#[test]
fn an_unexpected_exchange_is_answered_and_reported() {
    let mut rng = Seeded(8);
    let (mut i, mut r) = pair(&mut rng);
    let msg = request(&mut i, exchange::IKE_AUTH, &[], &mut rng);
    let (answer, ev) = deliver(&i, &mut r, &msg, &mut rng);
    assert!(has_notify(&answer, notify::INVALID_SYNTAX));
    assert_eq!(ignored(&ev).len(), 1);
    assert_eq!(r.phase(), Phase::Established);
    // An unknown exchange type, too.
    let msg = request(&mut i, 99, &[], &mut rng);
    let (answer, ev) = deliver(&i, &mut r, &msg, &mut rng);
    assert!(has_notify(&answer, notify::INVALID_SYNTAX));
    assert!(ignored(&ev)[0].contains("exchange type 99"));
}

#[test]
fn unknown_payloads_and_status_notifies_are_reported() {
    let mut rng = Seeded(9);
    let ic = conn(true);
    let first = ChildRequest {
        child: 0,
        inbound_spi: 0x100,
    };
    let i = IkeSa::initiate(ic.clone(), ic.local, ic.remote, first, false, 0, &mut rng);
    let mut m = Message::parse(i.first_message()).unwrap();
    m.payloads.push(Payload::VendorId(b"strongSwan".to_vec()));
    m.payloads.push(notify_payload(16392, vec![])); // HTTP_CERT_LOOKUP_SUPPORTED (unused)
    let rc = conn(false);
    let mut r = IkeSa::respond(rc.clone(), rc.local, rc.remote, &m.emit(), 0, &mut rng)
        .ok()
        .unwrap();
    let (sends, ev) = drain(&mut r);
    assert_eq!(sends.len(), 1, "answered all the same");
    assert_eq!(
        ignored(&ev),
        vec![
            "a vendor ID in IKE_SA_INIT",
            "status notify 16392 in IKE_SA_INIT"
        ]
    );
}

// ---- IKE SA rekey: what only a crafted peer can do (rekey_ike.rs) ----------------------

/// `i`'s IKE SA rekey request on the wire: its message ID.
fn start_ike_rekey(i: &mut IkeSa, now: u64, rng: &mut Seeded) -> u32 {
    i.rekey_ike(now, rng).unwrap();
    let (sends, _) = drain(i);
    assert_eq!(sends.len(), 1);
    let mid = i.out.as_ref().unwrap().mid;
    assert!(matches!(i.out.as_ref().unwrap().req, Req::RekeyIke));
    mid
}

/// `from`'s answer `mid` carrying `payloads`, delivered to `to` at `now`.
fn answer_with(
    from: &IkeSa,
    to: &mut IkeSa,
    mid: u32,
    payloads: &[Payload],
    now: u64,
    rng: &mut Seeded,
) -> (Vec<Vec<u8>>, Vec<Event>) {
    let h = from.header(exchange::CREATE_CHILD_SA, mid, true);
    let msg = one(from
        .seal_bytes(from.keys().unwrap(), h, payloads, rng)
        .datagrams);
    let (l, r) = (to.local(), to.remote());
    to.handle(now, l, r, &msg, rng, &mut Counter(0x400));
    drain(to)
}

#[test]
fn a_refused_ike_rekey_is_tried_again_2_to_10_s_later_naming_both_proposals() {
    let mut rng = Seeded(11);
    for kind in [notify::TEMPORARY_FAILURE, notify::NO_PROPOSAL_CHOSEN] {
        let (mut i, r) = pair(&mut rng);
        let now = 1_000_000;
        let mid = start_ike_rekey(&mut i, now, &mut rng);
        assert!(i.ike_rekeying());
        let (sends, ev) = answer_with(
            &r,
            &mut i,
            mid,
            &[notify_payload(kind, vec![])],
            now,
            &mut rng,
        );
        let why = ignored(&ev);
        assert!(
            sends.is_empty() && ev.len() == 1 && why.len() == 1,
            "one warning line and nothing else: {ev:?}"
        );
        assert_eq!(i.phase(), Phase::Established, "the IKE SA lives on");
        assert!(!i.ike_rekeying(), "child rekeys may go ahead meanwhile");
        let at = i.poll_timeout().unwrap();
        assert!((now + 2_000..=now + 10_000).contains(&at), "{at}");
        let why = i.ike_rekey_error().unwrap().to_string();
        assert!(why.contains(&notify::name(kind)), "{why}");
        assert!(
            why.contains("We offered aes128gcm16-prfsha256-x25519; the IKE SA now uses aes128gcm16-prfsha256-x25519"),
            "{why}"
        );
        // Not before its time; then a new request (the next message ID).
        i.handle_timeout(at - 1, &mut rng, &mut Counter(0x500));
        assert!(drain(&mut i).0.is_empty());
        i.handle_timeout(at, &mut rng, &mut Counter(0x500));
        assert_eq!(drain(&mut i).0.len(), 1, "tried again");
        assert_eq!(i.out.as_ref().unwrap().mid, mid + 1);
        assert!(i.ike_rekeying());
    }
}

#[test]
fn a_bad_ike_rekey_answer_is_not_used_and_tried_again() {
    let mut rng = Seeded(12);
    let (mut i, r) = pair(&mut rng);
    let mid = start_ike_rekey(&mut i, 5, &mut rng);
    // A proposal we did not offer.
    let theirs = "aes256gcm16-prfsha384-ecp384"
        .parse::<IkeProposal>()
        .unwrap()
        .to_wire_with_spi(1, 77);
    let p = [
        Payload::Sa(vec![theirs]),
        Payload::Nonce(vec![1; 32]),
        Payload::Ke {
            group: 20,
            data: vec![2; 96],
        },
    ];
    let (_, ev) = answer_with(&r, &mut i, mid, &p, 5, &mut rng);
    assert!(!ev.iter().any(|e| matches!(e, Event::NewIkeSa(_))));
    assert!(matches!(
        i.ike_rekey_error(),
        Some(IkeError::PeerChoseUnoffered { what: "IKE", .. })
    ));
    assert!(i
        .poll_timeout()
        .is_some_and(|t| (2_005..=10_005).contains(&t)));
    assert_eq!(i.phase(), Phase::Established);
}

#[test]
fn ike_rekey_requests_while_deleting_or_already_rekeyed_get_temporary_failure() {
    let mut rng = Seeded(13);
    let (mut i, mut r) = pair(&mut rng);
    let rekey = |sa: &IkeSa, spi: u64| {
        vec![
            Payload::Sa(vec![sa.cfg.ike[0].to_wire_with_spi(1, spi)]),
            Payload::Nonce(vec![8; 32]),
            Payload::Ke {
                group: 31,
                data: vec![9; 32],
            },
        ]
    };
    // r has a request of its own in flight: i's rekey is answered but held back.
    assert!(r.dpd_probe(0, 10_000, &mut rng));
    let dpd = drain(&mut r).0;
    let p = rekey(&i, 0x1111);
    let msg = request(&mut i, exchange::CREATE_CHILD_SA, &p, &mut rng);
    let (answer, ev) = deliver(&i, &mut r, &msg, &mut rng);
    assert!(find_notify(&answer, notify::NO_PROPOSAL_CHOSEN).is_none());
    assert!(
        first!(answer, Payload::Sa(s) => s).is_some(),
        "answered as usual"
    );
    assert!(
        !ev.iter().any(|e| matches!(e, Event::NewIkeSa(_))),
        "held back"
    );
    assert!(r.ike_rekeying(), "child rekeys get TEMPORARY_FAILURE now");
    // A second one from the peer (it should not): TEMPORARY_FAILURE.
    let p = rekey(&i, 0x2222);
    let msg = request(&mut i, exchange::CREATE_CHILD_SA, &p, &mut rng);
    let (answer, _) = deliver(&i, &mut r, &msg, &mut rng);
    assert!(has_notify(&answer, notify::TEMPORARY_FAILURE));
    // The peer's Delete of the old SA (crossing our DPD's answer): the new SA first.
    let del = request(
        &mut i,
        exchange::INFORMATIONAL,
        &[Payload::Delete(super::super::wire::Delete {
            protocol: PROTO_IKE,
            spi_size: 0,
            spis: vec![],
        })],
        &mut rng,
    );
    let (_, ev) = deliver(&i, &mut r, &del, &mut rng);
    let new = ev.iter().position(|e| matches!(e, Event::NewIkeSa(_)));
    let closed = ev
        .iter()
        .position(|e| matches!(e, Event::Closed { by_peer: true }));
    assert!(new.unwrap() < closed.unwrap(), "{ev:?}");
    assert!(
        !ev.iter().any(|e| matches!(e, Event::ChildDown { .. })),
        "{ev:?}"
    );
    let Some(Event::NewIkeSa(sa)) = ev.into_iter().find(|e| matches!(e, Event::NewIkeSa(_))) else {
        unreachable!()
    };
    assert_eq!(sa.spis().0, 0x1111);
    assert_eq!(sa.children().len(), 1, "the children moved");
    assert_eq!(sa.role(), Role::Responder);
    drop(dpd);
    // And an SA being deleted answers a rekey with TEMPORARY_FAILURE (§2.25.2).
    let (mut i, mut r) = pair(&mut rng);
    r.delete(0, &mut rng);
    drain(&mut r);
    let p = rekey(&i, 0x3333);
    let msg = request(&mut i, exchange::CREATE_CHILD_SA, &p, &mut rng);
    let (answer, _) = deliver(&i, &mut r, &msg, &mut rng);
    assert!(has_notify(&answer, notify::TEMPORARY_FAILURE));
}

#[test]
fn an_ike_rekey_moves_the_child_sas_with_their_rekeys_and_deletes() {
    let mut rng = Seeded(10);
    let (mut i, _r) = pair(&mut rng);
    let (mut to, _r2) = pair(&mut rng);
    to.children.clear();
    let old = i.children()[0].inbound_spi;
    // A rekey goes out (in flight), a Delete of another SA waits behind it.
    i.rekey_child(5, old, &mut rng, &mut Counter(0x500))
        .unwrap();
    i.queue.push_back(Queued::DeleteChild(0x777));
    i.move_children(9, &mut to);
    assert!(i.children().is_empty());
    assert_eq!(to.children().len(), 1);
    assert_eq!(
        to.children()[0].rekey_at,
        Some(9),
        "the rekey in flight restarts at once"
    );
    assert_eq!(to.queue, vec![Queued::DeleteChild(0x777)]);
    assert_eq!(to.unused_spis().len(), 1, "its SPI is kept for the restart");
    assert_eq!(i.child_book_len(), 0);
}

/// The trace lines of `events` (`vpnctl trace`), in order.
fn traces(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Log {
                trace: true,
                message,
                ..
            } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn each_message_is_traced_once_each_way_with_its_decrypted_payloads() {
    let mut rng = Seeded(21);
    let (ic, rc) = (conn(true), conn(false));
    let first = ChildRequest {
        child: 0,
        inbound_spi: 0x100,
    };
    let mut i = IkeSa::initiate(ic.clone(), ic.local, ic.remote, first, true, 0, &mut rng);
    let mut spis = Counter(0x200);
    let (mut ti, mut tr) = (Vec::new(), Vec::new());
    let all = |sa: &mut IkeSa, log: &mut Vec<Event>| {
        let mut sends = Vec::new();
        while let Some(e) = sa.poll_event() {
            match e {
                Event::Send { data, .. } => sends.push(data),
                e => log.push(e),
            }
        }
        sends
    };
    let m = all(&mut i, &mut ti);
    let mut r = match IkeSa::respond(rc.clone(), rc.local, rc.remote, &m[0], 0, &mut rng) {
        Ok(r) => r,
        Err(e) => panic!("{e:?}"),
    };
    for _ in 0..2 {
        for m in all(&mut r, &mut tr) {
            i.handle(0, ic.local, ic.remote, &m, &mut rng, &mut spis);
        }
        for m in all(&mut i, &mut ti) {
            r.handle(0, rc.local, rc.remote, &m, &mut rng, &mut spis);
        }
    }
    all(&mut r, &mut tr);
    assert_eq!(i.phase(), Phase::Established);
    let (ti, tr) = (traces(&ti), traces(&tr));
    let want_i = [
        "generating IKE_SA_INIT request 0 [ SA KE No N(NATD_S_IP) N(NATD_D_IP) N(HASH_ALG) N(FRAG_SUP) ]",
        "sending packet: from 192.0.2.1:500 to 192.0.2.2:500",
        "received packet: from 192.0.2.2:500 to 192.0.2.1:500",
        "parsed IKE_SA_INIT response 0 [ SA KE No N(NATD_S_IP) N(NATD_D_IP) N(HASH_ALG) N(FRAG_SUP) ]",
        "generating IKE_AUTH request 1 [ IDi AUTH N(INIT_CONTACT) SA TSi TSr ]",
        "sending packet: from 192.0.2.1:500 to 192.0.2.2:500",
        "received packet: from 192.0.2.2:500 to 192.0.2.1:500",
        "parsed IKE_AUTH response 1 [ IDr AUTH SA TSi TSr ]",
    ];
    assert_eq!(ti.len(), want_i.len(), "{ti:#?}");
    for (got, want) in ti.iter().zip(want_i) {
        assert!(got.starts_with(want), "{got} is not {want}…");
    }
    // The responder parses what the initiator generated, and the other way round.
    let inner = |l: &str, verb: &str| l.strip_prefix(verb).map(str::to_string);
    let gen_i: Vec<_> = ti.iter().filter_map(|l| inner(l, "generating ")).collect();
    let parsed_r: Vec<_> = tr.iter().filter_map(|l| inner(l, "parsed ")).collect();
    assert_eq!(gen_i, parsed_r);
    let gen_r: Vec<_> = tr.iter().filter_map(|l| inner(l, "generating ")).collect();
    let parsed_i: Vec<_> = ti.iter().filter_map(|l| inner(l, "parsed ")).collect();
    assert_eq!(gen_r, parsed_i);
}

#[test]
fn an_ah_proposal_is_refused_saying_esp_only_and_rfc_8221() {
    let mut rng = Seeded(23);
    let (mut i, mut r) = pair(&mut rng);
    drain(&mut r);
    let ah = super::super::wire::Proposal {
        number: 1,
        protocol: crate::ike::algnames::PROTO_AH,
        spi: vec![0, 0, 1, 0x50],
        transforms: vec![super::super::wire::Transform {
            kind: super::super::wire::transform::INTEG,
            id: 12,
            key_len: None,
        }],
    };
    let msg = request(
        &mut i,
        exchange::CREATE_CHILD_SA,
        &[
            Payload::Sa(vec![ah]),
            Payload::Nonce(vec![5; 32]),
            Payload::TsI(vec![parse_ts("10.1.0.0/16").unwrap()]),
            Payload::TsR(vec![parse_ts("10.2.0.0/16").unwrap()]),
        ],
        &mut rng,
    );
    let (answer, ev) = deliver(&i, &mut r, &msg, &mut rng);
    assert!(
        has_notify(&answer, notify::NO_PROPOSAL_CHOSEN),
        "{answer:?}"
    );
    let errs: Vec<&IkeError> = ev
        .iter()
        .filter_map(|e| match e {
            Event::ChildFailed { error, .. } => Some(error),
            _ => None,
        })
        .collect();
    assert_eq!(errs.len(), 1, "one failure: {ev:?}");
    let IkeError::AhProposed { child, theirs } = errs[0] else {
        panic!("not AhProposed: {:?}", errs[0]);
    };
    assert_eq!((child.as_str(), theirs.as_str()), ("net", "AH:sha256"));
    let text = errs[0].to_string();
    for want in [
        "proposes AH (AH:sha256)",
        "ESP only",
        "RFC 8221",
        "RFC 4301 §3.2",
    ] {
        assert!(text.contains(want), "{want} in {text}");
    }
    assert!(!text.contains("no ESP proposal in common"), "{text}");
    // One failure, one line: the SA hands the error over and does not log it too.
    let repeated = ev.iter().any(|e| {
        matches!(e, Event::Log { message, .. } | Event::Ignored { what: message } if message.contains("proposes AH"))
    });
    assert!(!repeated, "{ev:?}");
}

#[test]
fn a_failed_authentication_is_handed_over_once_and_not_logged_by_the_sa() {
    let mut rng = Seeded(29);
    let (ic, mut rc) = (conn(true), conn(false));
    rc.psk = Zeroizing::new(b"another key".to_vec());
    let first = ChildRequest {
        child: 0,
        inbound_spi: 0x100,
    };
    let mut i = IkeSa::initiate(ic.clone(), ic.local, ic.remote, first, true, 0, &mut rng);
    let (m, _) = drain(&mut i);
    let mut r = match IkeSa::respond(rc.clone(), rc.local, rc.remote, &m[0], 0, &mut rng) {
        Ok(r) => r,
        Err(e) => panic!("{e:?}"),
    };
    let mut spis = Counter(0x200);
    let (mut ei, mut er) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let (m, e) = drain(&mut r);
        er.extend(e);
        for m in m {
            i.handle(0, ic.local, ic.remote, &m, &mut rng, &mut spis);
        }
        let (m, e) = drain(&mut i);
        ei.extend(e);
        for m in m {
            r.handle(0, rc.local, rc.remote, &m, &mut rng, &mut spis);
        }
    }
    for (who, ev) in [("initiator", &ei), ("responder", &er)] {
        let failed: Vec<String> = ev
            .iter()
            .filter_map(|e| match e {
                Event::Failed(f) => Some(f.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(failed.len(), 1, "{who}: {ev:?}");
        let again = ev
            .iter()
            .any(|e| matches!(e, Event::Log { message, .. } if message.contains(&failed[0])));
        assert!(!again, "{who} logged its failure itself too: {ev:?}");
        // No secret at any level: the PSKs do not appear in any line.
        for e in ev.iter() {
            if let Event::Log { message, .. } = e {
                assert!(
                    !message.contains("another key") && !message.contains(" k "),
                    "{message}"
                );
            }
        }
    }
}

#[test]
fn both_ends_export_the_same_sk_keys_named_by_role_and_debug_hides_them() {
    let mut rng = Seeded(7);
    let (i, r) = pair(&mut rng);
    let (a, b) = (i.key_material().unwrap(), r.key_material().unwrap());
    assert_eq!((a.sk_ei, a.sk_er), (b.sk_ei, b.sk_er));
    assert_ne!(a.sk_ei, a.sk_er, "the two directions have their own keys");
    // AES-GCM-128: 16 key bytes and a 4-byte salt (RFC 5282 §7.1), no SK_a.
    assert_eq!((a.sk_ei.len(), a.sk_ai.len(), a.sk_ar.len()), (20, 0, 0));
    let shown = format!("{a:?}");
    assert!(shown.contains("<redacted>"), "{shown}");
    assert_eq!(
        shown,
        format!("SkMaterial {{ suite: {}, keys: <redacted> }}", a.suite)
    );
}
