//! IKE_SA_INIT (RFC 7296 §1.2): the initiator's request with its COOKIE (§2.6) and
//! INVALID_KE_PAYLOAD (§1.2) retries, the responder's answer, NAT detection (§2.23) and the
//! key derivation (§2.14).

use std::net::{IpAddr, SocketAddr};

use sha1::{Digest, Sha1};
use zeroize::Zeroizing;

use super::super::dh::{Group, KeyPair};
use super::super::frag::FragMode;
use super::super::keys::{derive_ike_keys, IkeKeys, KeyLengths};
use super::super::proposal::{describe, IkeProposal, IkeSuite};
use super::super::sk::SkCrypto;
use super::super::summary;
use super::super::wire::{exchange, flags, payload, Header, Message, Payload};
use super::{
    error_notify, find_notify, first, notify, notify_payload, random_spi, ChildRequest, Connection,
    Event, Handshake, IkeError, IkeSa, IkeState, InitSent, Random, Req, Role, SkKeys, NAT_T_PORT,
};
use crate::pki::AuthKind;

/// What IKE_SA_INIT acts on; anything else is reported.
const INIT_PAYLOADS: &[u8] = &[payload::SA, payload::KE, payload::NONCE];
const INIT_NOTIFIES: &[u16] = &[
    notify::NAT_DETECTION_SOURCE_IP,
    notify::NAT_DETECTION_DESTINATION_IP,
    notify::COOKIE,
    notify::INTERMEDIATE_EXCHANGE_SUPPORTED,
    notify::SIGNATURE_HASH_ALGORITHMS,
    notify::IKEV2_FRAGMENTATION_SUPPORTED,
];
/// The response may also carry the responder's CERTREQ (RFC 7296 §1.2).
const INIT_RESPONSE_PAYLOADS: &[u8] = &[payload::SA, payload::KE, payload::NONCE, payload::CERTREQ];

fn nat_hash(spi_i: u64, spi_r: u64, addr: SocketAddr) -> Vec<u8> {
    // RFC 7296 §2.23: SHA-1(SPIi | SPIr | IP | port).
    let mut h = Sha1::new();
    h.update(spi_i.to_be_bytes());
    h.update(spi_r.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(a) => h.update(a.octets()),
        IpAddr::V6(a) => h.update(a.octets()),
    }
    h.update(addr.port().to_be_bytes());
    h.finalize().to_vec()
}

pub(super) fn keypair(group: Group, rng: &mut dyn Random) -> KeyPair {
    loop {
        let mut r = Zeroizing::new(vec![0u8; group.random_len()]);
        rng.fill(&mut r);
        if let Ok(k) = group.keypair(&r) {
            return k;
        }
    }
}

/// The SK keys of an IKE SA from its seven keys (§2.14), for our `role` in it.
pub(super) fn sk_keys(suite: IkeSuite, role: Role, k: &IkeKeys) -> Result<SkKeys, IkeError> {
    let (out_e, out_a, in_e, in_a) = match role {
        Role::Initiator => (&k.sk_ei, &k.sk_ai, &k.sk_er, &k.sk_ar),
        Role::Responder => (&k.sk_er, &k.sk_ar, &k.sk_ei, &k.sk_ai),
    };
    let bad = |e| IkeError::KeyExchange {
        why: format!("keys for {suite}: {e:?}"),
    };
    let sk_out = SkCrypto::new(suite.encr, suite.integ, out_e, out_a).map_err(bad)?;
    let sk_in = SkCrypto::new(suite.encr, suite.integ, in_e, in_a).map_err(bad)?;
    Ok(SkKeys {
        suite,
        sk_d: k.sk_d.clone(),
        sk_in,
        sk_out,
    })
}

/// What IKE_SA_INIT derived: the SK keys and what IKE_AUTH signs with.
struct Derived {
    keys: SkKeys,
    sk_pi: super::Secret,
    sk_pr: super::Secret,
}

impl IkeSa {
    /// Initiator. `first` goes in IKE_AUTH. `initial_contact`: send INITIAL_CONTACT (§2.4)
    /// in IKE_AUTH (the daemon says true when it holds no other IKE SA with this peer).
    pub fn initiate(
        cfg: Connection,
        local: SocketAddr,
        remote: SocketAddr,
        first: ChildRequest,
        initial_contact: bool,
        now: u64,
        rng: &mut dyn Random,
    ) -> IkeSa {
        let mut sa = IkeSa::new(cfg, Role::Initiator, local, remote);
        sa.spi_i = random_spi(rng);
        sa.last_heard = now;
        if first.child >= sa.cfg.children.len() {
            let count = sa.cfg.children.len();
            sa.fail(IkeError::NoSuchChild {
                index: first.child,
                count,
            });
            return sa;
        }
        let mut ni = vec![0u8; 32];
        rng.fill(&mut ni);
        let group = sa
            .cfg
            .ike
            .first()
            .and_then(|p| p.groups.first().copied())
            .unwrap_or(Group::Curve25519);
        let dh = keypair(group, rng);
        let init = InitSent {
            ni,
            dh,
            cookie: None,
            request: Vec::new(),
            first,
            initial_contact,
        };
        sa.send_init(now, init);
        sa
    }

    fn send_init(&mut self, now: u64, mut init: InitSent) {
        let mut payloads = Vec::new();
        if let Some(c) = &init.cookie {
            payloads.push(notify_payload(notify::COOKIE, c.clone())); // §2.6: first
        }
        // RFC 9370: proposals whose additional key exchanges may all be NONE go with a
        // twin without them, for peers that do not know the ADDKE transform types.
        payloads.push(Payload::Sa(
            IkeProposal::offer(&self.cfg.ike)
                .iter()
                .enumerate()
                .map(|(i, p)| p.to_wire(i as u8 + 1))
                .collect(),
        ));
        payloads.push(Payload::Ke {
            group: init.dh.group.iana(),
            data: init.dh.public.clone(),
        });
        payloads.push(Payload::Nonce(init.ni.clone()));
        payloads.extend(self.nat_notifies(0));
        if self.cfg.ike.iter().any(|p| p.has_addke()) {
            // RFC 9242 §3.2: IKE_INTERMEDIATE carries the additional key exchanges.
            payloads.push(notify_payload(
                notify::INTERMEDIATE_EXCHANGE_SUPPORTED,
                vec![],
            ));
        }
        payloads.extend(self.hash_algorithms_notify());
        if self.cfg.fragmentation.mode != FragMode::No {
            // RFC 7383 §2.3: we can receive (and with `yes` send) fragments.
            payloads.push(notify_payload(
                notify::IKEV2_FRAGMENTATION_SUPPORTED,
                vec![],
            ));
        }
        let msg = self.emit_traced(Message {
            header: self.header(exchange::IKE_SA_INIT, 0, false),
            payloads,
        });
        init.request = msg.clone();
        // Every IKE_SA_INIT retry is message 0 again (§2.6, §1.2).
        self.next_mid = 1;
        self.state = IkeState::InitSent(Box::new(init));
        // RFC 7383 §2.5: IKE_SA_INIT is never fragmented.
        self.request(now, 0, vec![msg], Req::Init);
    }

    /// Our NAT detection notifies (§2.23), over the addresses as we see them.
    fn nat_notifies(&self, spi_r: u64) -> Vec<Payload> {
        let mut src = self.local;
        if self.cfg.force_encap {
            // A hash nobody can match: the peer sees a NAT and so do we (RFC 7296 §2.23).
            src.set_port(src.port() ^ 0x5a5a);
        }
        vec![
            notify_payload(
                notify::NAT_DETECTION_SOURCE_IP,
                nat_hash(self.spi_i, spi_r, src),
            ),
            notify_payload(
                notify::NAT_DETECTION_DESTINATION_IP,
                nat_hash(self.spi_i, spi_r, self.remote),
            ),
        ]
    }

    /// RFC 7383 §2.3: whether the peer announced IKEV2_FRAGMENTATION_SUPPORTED; with
    /// `fragmentation = no` we did not (or will not) announce it, so it counts for nothing.
    fn note_peer_fragmentation(&mut self, p: &[Payload]) {
        let announced = find_notify(p, notify::IKEV2_FRAGMENTATION_SUPPORTED).is_some();
        self.frag_peer = announced && self.cfg.fragmentation.mode != FragMode::No;
        if announced && !self.frag_peer {
            self.ignored(
                "IKEV2_FRAGMENTATION_SUPPORTED in IKE_SA_INIT: this connection has fragmentation = no"
                    .into(),
            );
        }
    }

    /// Compare the peer's NAT detection hashes with the addresses the message came from and
    /// to (RFC 7296 §2.23). The hashes cover the SPIs of the message they came in: `spi_r`
    /// is 0 in the request.
    fn detect_nat(&mut self, p: &[Payload], spi_r: u64, local: SocketAddr, remote: SocketAddr) {
        let src = find_notify(p, notify::NAT_DETECTION_SOURCE_IP);
        let dst = find_notify(p, notify::NAT_DETECTION_DESTINATION_IP);
        if let (Some(s), Some(d)) = (src, dst) {
            self.peer_behind_nat = s.data != nat_hash(self.spi_i, spi_r, remote);
            self.we_behind_nat = d.data != nat_hash(self.spi_i, spi_r, local);
        }
        self.nat = self.peer_behind_nat || self.we_behind_nat || self.cfg.force_encap;
    }

    fn derive(
        &self,
        suite: IkeSuite,
        dh: &KeyPair,
        peer_public: &[u8],
        ni: &[u8],
        nr: &[u8],
    ) -> Result<Derived, IkeError> {
        let shared = dh
            .shared(peer_public)
            .map_err(|e| IkeError::KeyExchange { why: e.to_string() })?;
        let lens = KeyLengths {
            enc: suite.encr.key_material_len(),
            integ: suite.integ.key_len(),
        };
        let k = derive_ike_keys(suite.prf, ni, nr, &shared, (self.spi_i, self.spi_r), lens);
        Ok(Derived {
            keys: sk_keys(suite, self.role, &k)?,
            sk_pi: k.sk_pi.clone(),
            sk_pr: k.sk_pr.clone(),
        })
    }

    pub(super) fn offered_ike(&self) -> String {
        IkeProposal::offer(&self.cfg.ike)
            .iter()
            .enumerate()
            .map(|(i, p)| describe(&p.to_wire(i as u8 + 1)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub(super) fn on_init_response(
        &mut self,
        now: u64,
        local: SocketAddr,
        remote: SocketAddr,
        msg: &Message,
        raw: &[u8],
        rng: &mut dyn Random,
    ) {
        let IkeState::InitSent(mut init) = std::mem::replace(&mut self.state, IkeState::Closed)
        else {
            self.ignored("an IKE_SA_INIT response outside IKE_SA_INIT".into());
            return;
        };
        let p = &msg.payloads;
        let used = if self.cfg.auth.local == AuthKind::Pubkey {
            INIT_RESPONSE_PAYLOADS
        } else {
            INIT_PAYLOADS
        };
        self.report_unused("IKE_SA_INIT", p, used, INIT_NOTIFIES);
        if let Some(c) = find_notify(p, notify::COOKIE) {
            if init.cookie.is_none() {
                self.log(tracing::Level::INFO, "the responder asked for a COOKIE (RFC 7296 §2.6): sending IKE_SA_INIT again with it".into());
                // §2.6: the same request again, the cookie first.
                init.cookie = Some(c.data.clone());
                self.send_init(now, *init);
                return;
            }
            self.fail(IkeError::PeerNotify {
                exchange: "IKE_SA_INIT",
                notify: notify::COOKIE,
            });
            return;
        }
        if let Some(ke) = find_notify(p, notify::INVALID_KE_PAYLOAD) {
            let want = (ke.data.len() == 2).then(|| u16::from_be_bytes([ke.data[0], ke.data[1]]));
            let ours = want
                .and_then(Group::from_iana)
                .filter(|g| self.cfg.ike.iter().any(|x| x.groups.contains(g)));
            match ours {
                Some(g) if g != init.dh.group => {
                    self.log(tracing::Level::INFO, format!("the responder wants key exchange group {} (INVALID_KE_PAYLOAD): sending IKE_SA_INIT again with it", g.name()));
                    init.dh = keypair(g, rng);
                    self.send_init(now, *init);
                }
                _ => {
                    let wanted = want.map_or("?".into(), |w| {
                        Group::from_iana(w).map_or(format!("{w}"), |g| g.name().into())
                    });
                    let ours = self.offered_ike();
                    self.fail(IkeError::KeGroupNotOffered { wanted, ours });
                }
            }
            return;
        }
        if let Some(e) = error_notify(p) {
            let err = if e == notify::NO_PROPOSAL_CHOSEN {
                IkeError::PeerRefusedIkeProposals {
                    ours: self.offered_ike(),
                }
            } else {
                IkeError::PeerNotify {
                    exchange: "IKE_SA_INIT",
                    notify: e,
                }
            };
            self.fail(err);
            return;
        }
        let sa = first!(p, Payload::Sa(props) => props);
        let ke = first!(p, Payload::Ke { group, data } => (*group, data));
        let nr = first!(p, Payload::Nonce(d) => d);
        let (Some(props), Some((group, kex)), Some(nr)) = (sa, ke, nr) else {
            self.fail(IkeError::Malformed {
                what: "IKE_SA_INIT response lacks SA, KE or nonce".into(),
            });
            return;
        };
        // The responder must pick one of ours, whole (§2.7).
        let chosen = match props.as_slice() {
            [one] => IkeProposal::choose(&self.cfg.ike, std::slice::from_ref(one)),
            _ => None,
        };
        let Some((_, suite)) = chosen else {
            self.fail(IkeError::PeerChoseUnoffered {
                what: "IKE",
                chosen: props.first().map(describe).unwrap_or_default(),
            });
            return;
        };
        if init.dh.group.iana() != group || suite.group.iana() != group {
            self.fail(IkeError::Malformed {
                what: format!("the responder's KE is for group {group}, not the one chosen"),
            });
            return;
        }
        if !(16..=256).contains(&nr.len()) {
            self.fail(IkeError::Malformed {
                what: "the responder's nonce has a bad length (§3.9)".into(),
            });
            return;
        }
        let addke = suite.addke.iter().any(Option::is_some);
        if addke && find_notify(p, notify::INTERMEDIATE_EXCHANGE_SUPPORTED).is_none() {
            self.fail(IkeError::AddKe {
                why: format!(
                    "the responder chose {suite} but did not announce IKE_INTERMEDIATE (RFC 9242), which carries the additional key exchanges"
                ),
            });
            return;
        }
        self.spi_r = msg.header.spi_r;
        let d = match self.derive(suite, &init.dh, kex, &init.ni, nr) {
            Ok(d) => d,
            Err(e) => {
                self.fail(e);
                return;
            }
        };
        self.suite = Some(suite);
        self.last_heard = now;
        self.note_peer_fragmentation(p);
        self.detect_nat(p, self.spi_r, local, remote);
        if self.nat && self.local.port() != NAT_T_PORT {
            // §2.23: move to port 4500 from IKE_AUTH on. An exchange begun on 4500 (to the
            // port a NAT maps the peer's 4500 to) stays where it is.
            self.local.set_port(NAT_T_PORT);
            self.remote.set_port(NAT_T_PORT);
        }
        self.log(
            tracing::Level::DEBUG,
            format!(
                "IKE_SA_INIT done: {suite}, NAT {}",
                if self.nat { "found or forced" } else { "none" }
            ),
        );
        let peer_hashes = self.peer_hash_algorithms(p);
        let peer_certreq = self.peer_cert_request(p, "IKE_SA_INIT");
        let hs = Handshake {
            keys: d.keys,
            sk_pi: d.sk_pi,
            sk_pr: d.sk_pr,
            ni: std::mem::take(&mut init.ni),
            nr: nr.clone(),
            init_request: std::mem::take(&mut init.request),
            init_response: raw.to_vec(),
            int_auth: Vec::new(),
            inter: super::intermediate::Intermediate::new(&suite),
            peer_hashes,
            peer_certreq,
        };
        self.after_init(now, hs, init.first, init.initial_contact, rng);
    }

    /// Responder, for an IKE_SA_INIT request that arrived on `local` (addr + port) from
    /// `remote` (addr + port). Replies go to `remote` as it is (§2.11). `Err` carries the
    /// stateless answer and the reason (no SA is kept).
    pub fn respond(
        cfg: Connection,
        local: SocketAddr,
        remote: SocketAddr,
        raw: &[u8],
        now: u64,
        rng: &mut dyn Random,
    ) -> Result<IkeSa, Vec<Event>> {
        let mut sa = IkeSa::new(cfg, Role::Responder, local, remote);
        sa.last_heard = now;
        let reject = |sa: &mut IkeSa, hdr: Header, kind: u16, data: Vec<u8>, err: IkeError| {
            let msg = sa.emit_traced(Message {
                header: Header {
                    spi_r: 0,
                    flags: flags::RESPONSE,
                    next_payload: 0,
                    length: 0,
                    ..hdr
                },
                payloads: vec![notify_payload(kind, data)],
            });
            sa.send(msg);
            sa.events.push_back(Event::Failed(err));
            sa.events.drain(..).collect::<Vec<_>>()
        };
        sa.trace(summary::received(remote, local, raw.len()));
        let msg = match Message::parse(raw) {
            Ok(m) => {
                sa.trace(summary::parsed(&m.header, &m.payloads));
                m
            }
            Err(e) => {
                sa.events.push_back(Event::Failed(IkeError::Malformed {
                    what: format!("IKE_SA_INIT from {remote}: {e}"),
                }));
                return Err(sa.events.drain(..).collect());
            }
        };
        let hdr = msg.header;
        let p = &msg.payloads;
        sa.report_unused("IKE_SA_INIT", p, INIT_PAYLOADS, INIT_NOTIFIES);
        let sa_p = first!(p, Payload::Sa(props) => props);
        let ke = first!(p, Payload::Ke { group, data } => (*group, data));
        let ni = first!(p, Payload::Nonce(d) => d);
        let (Some(props), Some((group, kex)), Some(ni)) = (sa_p, ke, ni) else {
            return Err(reject(
                &mut sa,
                hdr,
                notify::INVALID_SYNTAX,
                vec![],
                IkeError::Malformed {
                    what: "IKE_SA_INIT without SA, KE or nonce".into(),
                },
            ));
        };
        let Some((number, suite)) = IkeProposal::choose(&sa.cfg.ike, props) else {
            let theirs = crate::ike::algnames::offered(props, describe);
            let ours = sa.offered_ike();
            return Err(reject(
                &mut sa,
                hdr,
                notify::NO_PROPOSAL_CHOSEN,
                vec![],
                IkeError::NoIkeProposal { ours, theirs },
            ));
        };
        if suite.group.iana() != group {
            return Err(reject(
                &mut sa,
                hdr,
                notify::INVALID_KE_PAYLOAD,
                suite.group.iana().to_be_bytes().to_vec(),
                IkeError::KeGroupMismatch {
                    theirs: group,
                    ours: suite.group.name().into(),
                },
            ));
        }
        let peer_inter = find_notify(p, notify::INTERMEDIATE_EXCHANGE_SUPPORTED).is_some();
        if suite.addke.iter().any(Option::is_some) && !peer_inter {
            // ss: ike_init.c refuses several key exchanges without IKE_INTERMEDIATE.
            return Err(reject(
                &mut sa,
                hdr,
                notify::NO_PROPOSAL_CHOSEN,
                vec![],
                IkeError::AddKe {
                    why: format!(
                        "the initiator proposed {suite} but did not announce IKE_INTERMEDIATE (RFC 9242), which carries the additional key exchanges"
                    ),
                },
            ));
        }
        if !(16..=256).contains(&ni.len()) {
            return Err(reject(
                &mut sa,
                hdr,
                notify::INVALID_SYNTAX,
                vec![],
                IkeError::Malformed {
                    what: "the initiator's nonce has a bad length (§3.9)".into(),
                },
            ));
        }
        sa.spi_i = hdr.spi_i;
        sa.spi_r = random_spi(rng);
        let mut nr = vec![0u8; 32];
        rng.fill(&mut nr);
        let dh = keypair(suite.group, rng);
        let d = match sa.derive(suite, &dh, kex, ni, &nr) {
            Ok(d) => d,
            Err(e) => return Err(reject(&mut sa, hdr, notify::INVALID_SYNTAX, vec![], e)),
        };
        sa.suite = Some(suite);
        sa.detect_nat(p, 0, local, remote);
        let mut payloads = vec![
            Payload::Sa(vec![suite.to_wire(number)]),
            Payload::Ke {
                group: suite.group.iana(),
                data: dh.public.clone(),
            },
            Payload::Nonce(nr.clone()),
        ];
        payloads.extend(sa.nat_notifies(sa.spi_r));
        if peer_inter && sa.cfg.ike.iter().any(|p| p.has_addke()) {
            payloads.push(notify_payload(
                notify::INTERMEDIATE_EXCHANGE_SUPPORTED,
                vec![],
            ));
        }
        payloads.extend(sa.hash_algorithms_notify());
        // RFC 7296 §1.2: the responder's CERTREQ goes in its IKE_SA_INIT response.
        payloads.extend(sa.cert_request());
        let peer_hashes = sa.peer_hash_algorithms(p);
        sa.note_peer_fragmentation(p);
        if sa.frag_peer {
            // RFC 7383 §2.3: the responder answers the initiator's announcement.
            payloads.push(notify_payload(
                notify::IKEV2_FRAGMENTATION_SUPPORTED,
                vec![],
            ));
        }
        let resp = sa.emit_traced(Message {
            header: sa.header(exchange::IKE_SA_INIT, 0, true),
            payloads,
        });
        sa.last_response = Some((0, vec![resp.clone()]));
        sa.peer_mid = 1;
        let expires = now + sa.half_open_ms();
        sa.state = IkeState::InitDone {
            hs: Box::new(Handshake {
                keys: d.keys,
                sk_pi: d.sk_pi,
                sk_pr: d.sk_pr,
                ni: ni.clone(),
                nr,
                init_request: raw.to_vec(),
                init_response: resp.clone(),
                int_auth: Vec::new(),
                inter: super::intermediate::Intermediate::new(&suite),
                peer_hashes,
                peer_certreq: None,
            }),
            expires,
        };
        // §2.11: the answer goes back to where the request came from, address and port.
        sa.send(resp);
        sa.log(
            tracing::Level::DEBUG,
            format!(
                "IKE_SA_INIT answered: {suite}, NAT {}",
                if sa.nat { "found or forced" } else { "none" }
            ),
        );
        Ok(sa)
    }

    /// The IKE_SA_INIT request we sent (tests; and the responder's view of it).
    pub fn first_message(&self) -> &[u8] {
        match &self.state {
            IkeState::InitSent(i) => &i.request,
            IkeState::InitDone { hs, .. }
            | IkeState::AuthSent { hs, .. }
            | IkeState::InterSent { hs, .. } => &hs.init_request,
            _ => &[],
        }
    }
}
