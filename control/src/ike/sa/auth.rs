//! IKE_AUTH (RFC 7296 §1.2, §2.15): PSK authentication both ways, INITIAL_CONTACT (§2.4),
//! the first Child SA, and the AUTHENTICATION_FAILED notice when we reject the responder
//! (§2.21.2).

use super::super::auth::{auth_matches, parse_id, psk_auth, show_id, signed_octets, AUTH_PSK};
use super::super::wire::{exchange, payload, Id, Payload};
use super::{
    error_notify, find_notify, first, notify, notify_payload, ChildRequest, Event, Handshake,
    IkeError, IkeSa, IkeState, Queued, Random, Req, Role, SpiAllocator,
};

/// What IKE_AUTH acts on; anything else is reported.
const AUTH_PAYLOADS: &[u8] = &[
    payload::IDI,
    payload::IDR,
    payload::AUTH,
    payload::SA,
    payload::TSI,
    payload::TSR,
];
const AUTH_NOTIFIES: &[u16] = &[notify::INITIAL_CONTACT, notify::USE_TRANSPORT_MODE];

impl IkeSa {
    fn my_auth(&self, hs: &Handshake) -> Vec<u8> {
        let id = parse_id(&self.cfg.local_id);
        let (first, peer_nonce, sk_p) = match self.role {
            Role::Initiator => (&hs.init_request, &hs.nr, &hs.sk_pi),
            Role::Responder => (&hs.init_response, &hs.ni, &hs.sk_pr),
        };
        let prf = hs.keys.suite.prf;
        let octets = signed_octets(prf, first, peer_nonce, sk_p, &id, &hs.int_auth);
        psk_auth(prf, &self.cfg.psk, &octets).to_vec()
    }

    /// The peer's identity and AUTH payload (RFC 7296 §2.15): `None` when both are what
    /// this connection expects, else the error that says which.
    fn check_peer(&self, hs: &Handshake, id: &Id, method: u8, auth: &[u8]) -> Option<IkeError> {
        let peer_is_initiator = self.role == Role::Responder;
        if *id != parse_id(&self.cfg.remote_id) {
            Some(IkeError::PeerIdMismatch {
                got: show_id(id),
                want: self.cfg.remote_id.clone(),
                peer_is_initiator,
            })
        } else if method != AUTH_PSK || !self.peer_auth_ok(hs, id, auth) {
            Some(IkeError::PeerAuthInvalid {
                peer_id: show_id(id),
                peer_is_initiator,
            })
        } else {
            None
        }
    }

    fn peer_auth_ok(&self, hs: &Handshake, id: &Id, auth: &[u8]) -> bool {
        let (first, peer_nonce, sk_p) = match self.role {
            Role::Initiator => (&hs.init_response, &hs.ni, &hs.sk_pr),
            Role::Responder => (&hs.init_request, &hs.nr, &hs.sk_pi),
        };
        let prf = hs.keys.suite.prf;
        let octets = signed_octets(prf, first, peer_nonce, sk_p, id, &hs.int_auth);
        auth_matches(&psk_auth(prf, &self.cfg.psk, &octets), auth)
    }

    pub(super) fn send_auth(
        &mut self,
        now: u64,
        hs: Handshake,
        first: ChildRequest,
        initial_contact: bool,
        rng: &mut dyn Random,
    ) {
        let mut inner = vec![Payload::IdI(parse_id(&self.cfg.local_id))];
        inner.push(Payload::Auth {
            method: AUTH_PSK,
            data: self.my_auth(&hs),
        });
        if initial_contact {
            // §2.4: this is our only IKE SA with the peer; it may drop older ones.
            inner.push(notify_payload(notify::INITIAL_CONTACT, vec![]));
        }
        inner.extend(self.create_child_payloads(first, &[]));
        let mid = self.next_mid;
        let h = self.header(exchange::IKE_AUTH, mid, false);
        let msg = self.seal_with(&hs.keys, h, &inner, rng);
        self.next_mid += 1;
        self.state = IkeState::AuthSent {
            hs: Box::new(hs),
            first,
        };
        self.request(now, mid, msg, Req::Auth);
    }

    pub(super) fn on_auth_response(&mut self, now: u64, p: &[Payload], rng: &mut dyn Random) {
        let IkeState::AuthSent { hs, first } = std::mem::replace(&mut self.state, IkeState::Closed)
        else {
            self.ignored("an IKE_AUTH response outside IKE_AUTH".into());
            return;
        };
        self.report_unused("IKE_AUTH", p, AUTH_PAYLOADS, AUTH_NOTIFIES);
        let has_auth = p.iter().any(|x| matches!(x, Payload::Auth { .. }));
        // Without AUTH, an error notify is about the IKE SA itself (§2.21.2); with it, the
        // IKE SA is up and the notify concerns the Child SA (§2.21.3).
        if let (false, Some(e)) = (has_auth, error_notify(p)) {
            let err = match e {
                notify::AUTHENTICATION_FAILED => IkeError::PeerRejectedAuth {
                    our_id: self.cfg.local_id.clone(),
                    peer_is_initiator: false,
                },
                _ => IkeError::PeerNotify {
                    exchange: "IKE_AUTH",
                    notify: e,
                },
            };
            self.fail(err);
            return;
        }
        let idr = first!(p, Payload::IdR(i) => i);
        let auth = first!(p, Payload::Auth { method, data } => (*method, data));
        let (Some(idr), Some((method, auth))) = (idr, auth) else {
            self.fail(IkeError::Malformed {
                what: "IKE_AUTH response lacks IDr or AUTH".into(),
            });
            return;
        };
        let rejected = self.check_peer(&hs, idr, method, auth);
        if let Some(err) = rejected {
            // §2.21.2: the responder thinks the IKE SA is up; tell it otherwise in an
            // INFORMATIONAL of its own, so no IKE SA is left behind on its side.
            tracing::debug!(conn = %self.cfg.name, peer = %self.remote, "{err}; sending AUTHENTICATION_FAILED");
            self.state = IkeState::Deleting {
                keys: Box::new(hs.keys),
            };
            self.queue.clear();
            self.queue.push_back(Queued::AuthFailedNotice);
            // The notice goes out first: a daemon that drops the SA on Failed has sent it.
            self.pump(now, rng);
            self.events.push_back(Event::Failed(err));
            return;
        }
        let suite = hs.keys.suite;
        let peer_id = show_id(idr);
        let peer_initial_contact = find_notify(p, notify::INITIAL_CONTACT).is_some();
        self.state = IkeState::Established {
            keys: Box::new(hs.keys),
        };
        self.established_at = Some(now);
        self.schedule_ike_lifetime(now, rng);
        self.peer_id = Some(peer_id.clone());
        self.events.push_back(Event::Established {
            suite,
            nat: self.nat,
            peer_id: peer_id.clone(),
            peer_initial_contact,
        });
        tracing::debug!(conn = %self.cfg.name, peer = %peer_id, "IKE SA established");
        // The first Child SA (or why there is none: the IKE SA stays up, §1.2). KEYMAT from
        // the IKE_SA_INIT nonces (§2.17).
        self.accept_child_response(now, first, &hs.ni, &hs.nr, p, rng);
        self.pump(now, rng);
    }

    pub(super) fn on_auth_request(
        &mut self,
        now: u64,
        mid: u32,
        p: &[Payload],
        rng: &mut dyn Random,
        spis: &mut dyn SpiAllocator,
    ) {
        let (local, remote) = (self.local, self.remote);
        self.report_unused("IKE_AUTH", p, AUTH_PAYLOADS, AUTH_NOTIFIES);
        let idi = first!(p, Payload::IdI(i) => i);
        let auth = first!(p, Payload::Auth { method, data } => (*method, data));
        let (Some(idi), Some((method, auth))) = (idi, auth) else {
            self.answer(
                exchange::IKE_AUTH,
                mid,
                local,
                remote,
                &[notify_payload(notify::INVALID_SYNTAX, vec![])],
                rng,
            );
            self.fail(IkeError::Malformed {
                what: "IKE_AUTH request lacks IDi or AUTH".into(),
            });
            return;
        };
        let IkeState::InitDone { hs, .. } = std::mem::replace(&mut self.state, IkeState::Closed)
        else {
            return;
        };
        let rejected = self.check_peer(&hs, idi, method, auth);
        if let Some(err) = rejected {
            // §2.21.2: the error goes in the IKE_AUTH response itself.
            let h = self.header(exchange::IKE_AUTH, mid, true);
            let msg = self.seal_with(
                &hs.keys,
                h,
                &[notify_payload(notify::AUTHENTICATION_FAILED, vec![])],
                rng,
            );
            self.respond_with(mid, local, remote, msg);
            self.fail(err);
            return;
        }
        let suite = hs.keys.suite;
        let my_auth = self.my_auth(&hs);
        let (ni, nr) = (hs.ni.clone(), hs.nr.clone());
        self.state = IkeState::Established {
            keys: Box::new(hs.keys),
        };
        let peer_id = show_id(idi);
        let peer_initial_contact = find_notify(p, notify::INITIAL_CONTACT).is_some();
        self.established_at = Some(now);
        self.schedule_ike_lifetime(now, rng);
        self.peer_id = Some(peer_id.clone());
        self.events.push_back(Event::Established {
            suite,
            nat: self.nat,
            peer_id: peer_id.clone(),
            peer_initial_contact,
        });
        tracing::debug!(conn = %self.cfg.name, peer = %peer_id, initial_contact = peer_initial_contact, "IKE SA established");
        let mut out = vec![
            Payload::IdR(parse_id(&self.cfg.local_id)),
            Payload::Auth {
                method: AUTH_PSK,
                data: my_auth,
            },
        ];
        // The first Child SA, if the initiator asked for one (RFC 6023 allows none).
        if first!(p, Payload::Sa(s) => s).is_some() {
            out.extend(self.respond_child(now, &ni, &nr, p, rng, spis));
        } else {
            tracing::debug!(conn = %self.cfg.name, "IKE_AUTH without a Child SA");
        }
        self.answer(exchange::IKE_AUTH, mid, local, remote, &out, rng);
    }
}
