//! IKE_AUTH (RFC 7296 §1.2, §2.15): PSK and certificate authentication both ways (RFC 7427
//! digital signatures when the peer announced SIGNATURE_HASH_ALGORITHMS, else the classic
//! methods 1/9/10), CERT and CERTREQ (§3.6, §3.7), INITIAL_CONTACT (§2.4), the first Child
//! SA, and the AUTHENTICATION_FAILED notice when we reject the responder (§2.21.2).

use super::super::auth::{auth_matches, parse_id, psk_auth, show_id, signed_octets, AUTH_PSK};
use super::super::sig::{self, method as sig_method, Hash, PublicKey, OUR_HASHES};
use super::super::wire::{cert_encoding, exchange, payload, Id, Payload};
use super::{
    error_notify, find_notify, first, notify, notify_payload, ChildRequest, Event, Handshake,
    IkeError, IkeSa, IkeState, Queued, Random, Req, Role, SpiAllocator,
};
use crate::pki::{self, AuthKind, CertError, SendCert};

/// What IKE_AUTH acts on; anything else is reported (CERT and CERTREQ only when this
/// connection uses certificates: [`IkeSa::auth_used`]).
const AUTH_PAYLOADS: &[u8] = &[
    payload::IDI,
    payload::IDR,
    payload::AUTH,
    payload::SA,
    payload::TSI,
    payload::TSR,
];
const AUTH_NOTIFIES: &[u16] = &[
    notify::INITIAL_CONTACT,
    notify::USE_TRANSPORT_MODE,
    notify::SA_RESOURCE_INFO,
];

/// The subject of a DER certificate in swanctl syntax, for logs.
fn cert_subject(der: &[u8]) -> String {
    use der::{Decode, Encode};
    x509_cert::Certificate::from_der(der)
        .ok()
        .and_then(|c| c.tbs_certificate().subject().to_der().ok())
        .map_or_else(
            || format!("<unparsable certificate, {} bytes>", der.len()),
            |dn| pki::ident::show_dn(&dn),
        )
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl IkeSa {
    /// RFC 7427 §4: the hashes we verify signatures with, sent in IKE_SA_INIT both ways
    /// (unless `signature_authentication` is off).
    pub(super) fn hash_algorithms_notify(&self) -> Option<Payload> {
        self.cfg.auth.signature_authentication.then(|| {
            notify_payload(
                notify::SIGNATURE_HASH_ALGORITHMS,
                sig::hash_notify_data(&OUR_HASHES),
            )
        })
    }

    /// The peer's SIGNATURE_HASH_ALGORITHMS (RFC 7427 §4), `None` without it (or when we
    /// do not use RFC 7427 ourselves).
    pub(super) fn peer_hash_algorithms(&mut self, p: &[Payload]) -> Option<Vec<Hash>> {
        let n = find_notify(p, notify::SIGNATURE_HASH_ALGORITHMS)?;
        if !self.cfg.auth.signature_authentication {
            self.ignored(
                "the peer's SIGNATURE_HASH_ALGORITHMS (signature_authentication is off: classic AUTH methods only)"
                    .into(),
            );
            return None;
        }
        match sig::parse_hash_notify(&n.data) {
            Some((hashes, unknown)) => {
                if unknown > 0 {
                    self.ignored(format!(
                        "{unknown} unknown hash algorithm(s) in SIGNATURE_HASH_ALGORITHMS"
                    ));
                }
                let names: Vec<&str> = hashes.iter().map(|h| h.name()).collect();
                self.log(
                    tracing::Level::DEBUG,
                    format!(
                        "peer announced signature hash algorithms {}",
                        names.join(", ")
                    ),
                );
                Some(hashes)
            }
            None => {
                self.ignored("a SIGNATURE_HASH_ALGORITHMS notify of odd length".into());
                None
            }
        }
    }

    /// Our CERTREQ (RFC 7296 §3.7): SHA-1 of each trusted CA's SubjectPublicKeyInfo, when
    /// the peer authenticates with a certificate and `send_certreq` is on.
    pub(super) fn cert_request(&mut self) -> Option<Payload> {
        let a = &self.cfg.auth;
        if a.remote != AuthKind::Pubkey || !a.send_certreq {
            return None;
        }
        let trust = a.trust.as_ref()?;
        let hashes = trust.ca_key_hashes();
        if hashes.is_empty() {
            return None;
        }
        for name in trust.names_for_hashes(&hashes) {
            self.log(
                tracing::Level::DEBUG,
                format!("sending cert request for \"{name}\""),
            );
        }
        Some(Payload::CertReq {
            encoding: cert_encoding::X509_SIGNATURE,
            data: hashes.concat(),
        })
    }

    /// The CA key hashes of the peer's CERTREQ payloads in `p` (RFC 7296 §3.7); `None` if
    /// it sent none. Logs the CAs it names, as strongSwan does.
    pub(super) fn peer_cert_request(
        &mut self,
        p: &[Payload],
        exch: &'static str,
    ) -> Option<Vec<[u8; 20]>> {
        let mut out: Option<Vec<[u8; 20]>> = None;
        for x in p {
            let Payload::CertReq { encoding, data } = x else {
                continue;
            };
            if *encoding != cert_encoding::X509_SIGNATURE {
                self.ignored(format!(
                    "a CERTREQ for certificate encoding {encoding} in {exch} (we have X.509 certificates, encoding 4)"
                ));
                continue;
            }
            let list = out.get_or_insert_with(Vec::new);
            if data.len() % 20 != 0 {
                // Still a request for our certificate; the CA list is unusable.
                self.ignored(format!(
                    "the CA list of a CERTREQ in {exch}: {} bytes is not a list of 20-byte key hashes",
                    data.len()
                ));
                continue;
            }
            for c in data.chunks_exact(20) {
                let mut h = [0u8; 20];
                h.copy_from_slice(c);
                list.push(h);
            }
        }
        if let Some(list) = &out {
            let known = self
                .cfg
                .auth
                .trust
                .as_ref()
                .map(|t| t.names_for_hashes(list))
                .unwrap_or_default();
            for name in &known {
                self.log(
                    tracing::Level::DEBUG,
                    format!("received cert request for \"{name}\""),
                );
            }
            if known.len() < list.len() {
                let ids: Vec<String> = list.iter().map(|h| hex(h)).collect();
                self.log(
                    tracing::Level::DEBUG,
                    format!("received cert request for CA key IDs {}", ids.join(", ")),
                );
            }
            if list.is_empty() {
                self.log(
                    tracing::Level::DEBUG,
                    "received an empty cert request".into(),
                );
            }
        }
        out
    }

    /// Which payloads IKE_AUTH acts on for this connection.
    fn auth_used(&self) -> Vec<u8> {
        let mut used = AUTH_PAYLOADS.to_vec();
        if self.cfg.auth.remote == AuthKind::Pubkey {
            used.push(payload::CERT);
        }
        if self.cfg.auth.local == AuthKind::Pubkey {
            used.push(payload::CERTREQ);
        }
        used
    }

    /// Our CERT payloads (RFC 7296 §3.6): the end entity first, then the intermediates, as
    /// `send_cert` says (`ifasked`: only after the peer's CERTREQ).
    fn cert_payloads(&mut self, hs: &Handshake) -> Vec<Payload> {
        let a = &self.cfg.auth;
        let Some(creds) = a
            .credentials
            .as_ref()
            .filter(|_| a.local == AuthKind::Pubkey)
        else {
            return Vec::new();
        };
        let send = match a.send_cert {
            SendCert::Always => true,
            SendCert::Never => false,
            SendCert::IfAsked => hs.peer_certreq.is_some(),
        };
        if !send {
            let why = match a.send_cert {
                SendCert::Never => "send_cert = never",
                _ => "the peer sent no cert request",
            };
            self.log(
                tracing::Level::DEBUG,
                format!("not sending our certificate ({why})"),
            );
            return Vec::new();
        }
        let lines: Vec<String> = creds
            .chain
            .iter()
            .enumerate()
            .map(|(i, der)| match i {
                0 => format!("sending end entity cert \"{}\"", creds.subject),
                _ => format!("sending issuer cert \"{}\"", cert_subject(der)),
            })
            .collect();
        let certs = creds
            .chain
            .iter()
            .map(|der| Payload::Cert {
                encoding: cert_encoding::X509_SIGNATURE,
                data: der.clone(),
            })
            .collect();
        for l in lines {
            self.log(tracing::Level::INFO, l);
        }
        certs
    }

    /// Our AUTH payload (method, data), RFC 7296 §2.15: the PSK MAC, or a signature with our
    /// certificate's key: RFC 7427 (method 14) with the first of our key's schemes whose
    /// hash the peer announced, else the classic method for the key (1, 9, 10).
    fn my_auth(&mut self, hs: &Handshake, rng: &mut dyn Random) -> Result<(u8, Vec<u8>), IkeError> {
        let id = parse_id(&self.cfg.local_id);
        let (first, peer_nonce, sk_p) = match self.role {
            Role::Initiator => (&hs.init_request, &hs.nr, &hs.sk_pi),
            Role::Responder => (&hs.init_response, &hs.ni, &hs.sk_pr),
        };
        let prf = hs.keys.suite.prf;
        let octets = signed_octets(prf, first, peer_nonce, sk_p, &id, &hs.int_auth);
        if self.cfg.auth.local == AuthKind::Psk {
            return Ok((AUTH_PSK, psk_auth(prf, &self.cfg.psk, &octets).to_vec()));
        }
        let creds = self
            .cfg
            .auth
            .credentials
            .as_ref()
            .ok_or_else(|| IkeError::OurAuth {
                why: "local auth = pubkey, but no certificate and private key are loaded".into(),
            })?;
        let kind = creds.key.kind();
        let scheme = hs.peer_hashes.as_deref().and_then(|h| kind.scheme_for(h));
        let signed = match scheme {
            Some(s) => creds
                .key
                .auth_digital_signature(s, &octets, rng)
                .map(|d| (sig_method::DIGITAL_SIGNATURE, d)),
            None => creds.key.auth_classic(&octets, rng),
        };
        let (method, data) = signed.map_err(|e| IkeError::OurAuth {
            why: match &hs.peer_hashes {
                None => {
                    format!("with our {kind} key: {e} (the peer sent no SIGNATURE_HASH_ALGORITHMS)")
                }
                Some(h) => format!(
                    "with our {kind} key: {e} (the peer announced hash algorithms {})",
                    h.iter().map(|h| h.name()).collect::<Vec<_>>().join(", ")
                ),
            },
        })?;
        self.log(
            tracing::Level::DEBUG,
            format!(
                "authentication of '{}' (myself) with AUTH {}",
                self.cfg.local_id,
                sig_method::name(method)
            ),
        );
        Ok((method, data))
    }

    /// The peer's identity and AUTH payload (RFC 7296 §2.15), with its certificate when
    /// this connection expects one: `Ok` when all are what this connection expects, else
    /// the error that says which.
    fn check_peer(
        &mut self,
        now: u64,
        hs: &Handshake,
        id: &Id,
        method: u8,
        auth: &[u8],
        p: &[Payload],
    ) -> Result<(), IkeError> {
        let peer_is_initiator = self.role == Role::Responder;
        if !pki::ident::id_matches(&self.cfg.remote_id, id) {
            return Err(IkeError::PeerIdMismatch {
                got: show_id(id),
                want: self.cfg.remote_id.clone(),
                peer_is_initiator,
            });
        }
        let (first, peer_nonce, sk_p) = match self.role {
            Role::Initiator => (&hs.init_response, &hs.ni, &hs.sk_pr),
            Role::Responder => (&hs.init_request, &hs.nr, &hs.sk_pi),
        };
        let prf = hs.keys.suite.prf;
        let octets = signed_octets(prf, first, peer_nonce, sk_p, id, &hs.int_auth);
        match (self.cfg.auth.remote, method) {
            (AuthKind::Psk, AUTH_PSK) => {
                if auth_matches(&psk_auth(prf, &self.cfg.psk, &octets), auth) {
                    Ok(())
                } else {
                    Err(IkeError::PeerAuthInvalid {
                        peer_id: show_id(id),
                        peer_is_initiator,
                    })
                }
            }
            (AuthKind::Psk, m) if sig_method::is_signature(m) => Err(IkeError::PeerUsedSignature {
                method: sig_method::name(m),
                peer_is_initiator,
            }),
            (AuthKind::Pubkey, AUTH_PSK) => Err(IkeError::PeerUsedPsk { peer_is_initiator }),
            (AuthKind::Pubkey, m) if sig_method::is_signature(m) => {
                self.check_peer_signature(now, id, m, auth, &octets, p)
            }
            (_, m) => Err(IkeError::PeerAuthMethodUnsupported {
                method: sig_method::name(m),
                peer_is_initiator,
            }),
        }
    }

    /// RFC 7296 §2.15 with certificates: the peer's chain validates against our trust
    /// store at the calendar time, its end-entity certificate holds the ID (RFC 4945 §3.1),
    /// and the AUTH signature verifies with that certificate's key.
    fn check_peer_signature(
        &mut self,
        now: u64,
        id: &Id,
        method: u8,
        auth: &[u8],
        octets: &[u8],
        p: &[Payload],
    ) -> Result<(), IkeError> {
        let peer_is_initiator = self.role == Role::Responder;
        let mut certs = Vec::new();
        for x in p {
            match x {
                Payload::Cert { encoding, data } if *encoding == cert_encoding::X509_SIGNATURE => {
                    certs.push(data.clone())
                }
                Payload::Cert { encoding, .. } => self.ignored(format!(
                    "a CERT of encoding {encoding} in IKE_AUTH (we take X.509 certificates, encoding 4)"
                )),
                _ => {} // every other payload: handled (or reported by report_unused) elsewhere
            }
        }
        for (i, der) in certs.iter().enumerate() {
            let what = if i == 0 { "end entity" } else { "issuer" };
            self.log(
                tracing::Level::INFO,
                format!("received {what} cert \"{}\"", cert_subject(der)),
            );
        }
        let cert_err = |error| IkeError::PeerCert {
            error: Box::new(error),
            peer_is_initiator,
        };
        if certs.is_empty() {
            return Err(cert_err(CertError::NoCertificate));
        }
        let trust = self
            .cfg
            .auth
            .trust
            .as_ref()
            .ok_or(IkeError::NoTrustAnchors)?;
        let cert = pki::validate(
            &certs,
            trust,
            self.unix_now_s(now),
            self.cfg.auth.clock_skew_s,
        )
        .map_err(cert_err)?;
        if !pki::ident::cert_has_id(&cert, id) {
            return Err(IkeError::PeerIdNotInCert {
                id: show_id(id),
                subject: cert.subject.clone(),
                peer_is_initiator,
            });
        }
        let invalid = |why| IkeError::PeerSignatureInvalid {
            method: sig_method::name(method),
            subject: cert.subject.clone(),
            why,
            peer_is_initiator,
        };
        let key = PublicKey::from_spki_der(&cert.spki_der).map_err(invalid)?;
        let scheme = key.verify_auth(method, auth, octets).map_err(invalid)?;
        self.log(
            tracing::Level::INFO,
            format!(
                "authentication of '{}' with {scheme}, AUTH {}, successful",
                show_id(id),
                sig_method::name(method)
            ),
        );
        Ok(())
    }

    pub(super) fn send_auth(
        &mut self,
        now: u64,
        hs: Handshake,
        first: ChildRequest,
        initial_contact: bool,
        rng: &mut dyn Random,
    ) {
        let (method, data) = match self.my_auth(&hs, rng) {
            Ok(a) => a,
            Err(e) => {
                self.fail(e);
                return;
            }
        };
        // RFC 7296 §1.2: IDi, [CERT+], [CERTREQ+], [IDr], AUTH, ...
        let mut inner = vec![Payload::IdI(parse_id(&self.cfg.local_id))];
        inner.extend(self.cert_payloads(&hs));
        inner.extend(self.cert_request());
        inner.push(Payload::Auth { method, data });
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
        let used = self.auth_used();
        self.report_unused("IKE_AUTH", p, &used, AUTH_NOTIFIES);
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
        let rejected = self.check_peer(now, &hs, idr, method, auth, p);
        if let Err(err) = rejected {
            // §2.21.2: the responder thinks the IKE SA is up; tell it otherwise in an
            // INFORMATIONAL of its own, so no IKE SA is left behind on its side.
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
        let used = self.auth_used();
        self.report_unused("IKE_AUTH", p, &used, AUTH_NOTIFIES);
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
        let IkeState::InitDone { mut hs, .. } =
            std::mem::replace(&mut self.state, IkeState::Closed)
        else {
            return;
        };
        // RFC 7296 §1.2: the initiator's CERTREQ comes in its IKE_AUTH request.
        hs.peer_certreq = self.peer_cert_request(p, "IKE_AUTH");
        let checked = self.check_peer(now, &hs, idi, method, auth, p);
        // Our AUTH, before anything is committed: if we cannot sign, the initiator hears
        // AUTHENTICATION_FAILED too.
        let mine = checked.and_then(|()| self.my_auth(&hs, rng));
        if let Err(err) = &mine {
            // §2.21.2: the error goes in the IKE_AUTH response itself.
            let h = self.header(exchange::IKE_AUTH, mid, true);
            let msg = self.seal_with(
                &hs.keys,
                h,
                &[notify_payload(notify::AUTHENTICATION_FAILED, vec![])],
                rng,
            );
            self.respond_with(mid, local, remote, msg);
            self.fail(err.clone());
            return;
        }
        let Ok((my_method, my_auth)) = mine else {
            return;
        };
        let certs = self.cert_payloads(&hs);
        let suite = hs.keys.suite;
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
        // RFC 7296 §1.2: IDr, [CERT+], AUTH, ...
        let mut out = vec![Payload::IdR(parse_id(&self.cfg.local_id))];
        out.extend(certs);
        out.push(Payload::Auth {
            method: my_method,
            data: my_auth,
        });
        // The first Child SA, if the initiator asked for one (RFC 6023 allows none).
        if first!(p, Payload::Sa(s) => s).is_some() {
            out.extend(self.respond_child(now, &ni, &nr, p, rng, spis));
        } else {
            self.log(tracing::Level::DEBUG, "IKE_AUTH without a Child SA".into());
        }
        self.answer(exchange::IKE_AUTH, mid, local, remote, &out, rng);
    }
}
