//! Child SA negotiation (RFC 7296 §1.3.1, §2.9, §2.17), the same in IKE_AUTH (the first
//! Child SA) and in CREATE_CHILD_SA (the others): the initiator's proposal, the responder's
//! choice of a configured child by its selectors, narrowing, and the keys. Rekeying
//! (§1.3.2, §1.3.3) and PFS come with the next issue: such requests are answered with an
//! error notify so the peer is not left waiting.

use std::net::SocketAddr;

use dataplane::crypto::SaKeys;

use super::super::child::{self, child_keys, show_ts, ChildCfg, EspProposal};
use super::super::proposal::{describe, PROTO_IKE};
use super::super::wire::{exchange, payload, Payload, Ts};
use super::{
    error_notify, find_notify, first, notify, notify_payload, ChildInfo, ChildRequest, ChildSa,
    Event, IkeError, IkeSa, IkeState, Queued, Random, SpiAllocator,
};

fn show_all(ts: &[Ts]) -> String {
    ts.iter().map(show_ts).collect::<Vec<_>>().join(",")
}

fn offered_esp(c: &ChildCfg) -> String {
    c.esp
        .iter()
        .enumerate()
        .map(|(i, p)| describe(&p.to_wire(i as u8 + 1, 0)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What CREATE_CHILD_SA acts on; anything else is reported.
const CHILD_PAYLOADS: &[u8] = &[
    payload::SA,
    payload::NONCE,
    payload::KE,
    payload::TSI,
    payload::TSR,
];
const CHILD_NOTIFIES: &[u16] = &[notify::USE_TRANSPORT_MODE, notify::REKEY_SA];

/// What the responder settled on for a Child SA request.
struct Choice {
    child: usize,
    number: u8,
    peer_spi: u32,
    proposal: EspProposal,
    /// Narrowed: TSi (the initiator's side), TSr (ours).
    tsi: Vec<Ts>,
    tsr: Vec<Ts>,
}

impl IkeSa {
    /// The payloads proposing a Child SA (§1.3.1): SA with our inbound SPI, the nonce (not
    /// in IKE_AUTH, where `ni` is empty), TSi = our side, TSr = theirs.
    pub(super) fn create_child_payloads(&self, req: ChildRequest, ni: &[u8]) -> Vec<Payload> {
        let Some(c) = self.cfg.children.get(req.child) else {
            return vec![];
        };
        let mut out = Vec::new();
        if c.transport {
            out.push(notify_payload(notify::USE_TRANSPORT_MODE, vec![]));
        }
        out.push(Payload::Sa(
            c.esp
                .iter()
                .enumerate()
                .map(|(i, p)| p.to_wire(i as u8 + 1, req.inbound_spi))
                .collect(),
        ));
        if !ni.is_empty() {
            out.push(Payload::Nonce(ni.to_vec()));
        }
        out.push(Payload::TsI(c.local_ts.clone()));
        out.push(Payload::TsR(c.remote_ts.clone()));
        out
    }

    /// CREATE_CHILD_SA for another child of the connection (queued behind an exchange in
    /// flight; window size 1). Errors if the SA is not established.
    pub fn create_child(
        &mut self,
        now: u64,
        req: ChildRequest,
        rng: &mut dyn Random,
    ) -> Result<(), IkeError> {
        if !matches!(self.state, IkeState::Established { .. }) {
            return Err(IkeError::NotEstablished);
        }
        if req.child >= self.cfg.children.len() {
            return Err(IkeError::NoSuchChild {
                index: req.child,
                count: self.cfg.children.len(),
            });
        }
        self.queue.push_back(Queued::CreateChild(req));
        self.pump(now, rng);
        Ok(())
    }

    fn child_failed(&mut self, name: String, error: IkeError) {
        tracing::debug!(conn = %self.cfg.name, child = %name, "{error}");
        self.events.push_back(Event::ChildFailed { name, error });
    }

    #[allow(clippy::too_many_arguments)]
    fn child_up(
        &mut self,
        name: String,
        inbound_spi: u32,
        outbound_spi: u32,
        proposal: EspProposal,
        keys_in: SaKeys,
        keys_out: SaKeys,
        local_ts: Vec<Ts>,
        remote_ts: Vec<Ts>,
        transport: bool,
    ) {
        tracing::info!(
            conn = %self.cfg.name,
            child = %name,
            inbound_spi = format_args!("{inbound_spi:#010x}"),
            outbound_spi = format_args!("{outbound_spi:#010x}"),
            local_ts = %show_all(&local_ts),
            remote_ts = %show_all(&remote_ts),
            "Child SA up"
        );
        self.children.push(ChildInfo {
            name: name.clone(),
            inbound_spi,
            outbound_spi,
            local_ts: local_ts.clone(),
            remote_ts: remote_ts.clone(),
            transport,
            proposal,
            // Timers come with the lifetimes (issue 12, ike-child stream).
            created_at: 0,
            rekey_at: None,
            expire_at: None,
            rekeys: 0,
        });
        self.events.push_back(Event::ChildUp(ChildSa {
            name,
            inbound_spi,
            outbound_spi,
            proposal,
            keys_in,
            keys_out,
            local_ts,
            remote_ts,
            transport,
            local: self.local.ip(),
            remote: self.remote.ip(),
            // ESP-in-UDP to the peer's NAT-mapped port (§2.23).
            udp_encap: self.nat.then_some((self.local.port(), self.remote.port())),
        }));
    }

    /// Initiator: the responder's answer for the Child SA `req` (in IKE_AUTH or
    /// CREATE_CHILD_SA). `ni`/`nr` are that exchange's nonces (§2.17).
    pub(super) fn accept_child_response(
        &mut self,
        req: ChildRequest,
        ni: &[u8],
        nr: &[u8],
        p: &[Payload],
        exch: &'static str,
    ) {
        let Some(c) = self.cfg.children.get(req.child).cloned() else {
            return;
        };
        let sa = first!(p, Payload::Sa(props) => props);
        let tsi = first!(p, Payload::TsI(t) => t);
        let tsr = first!(p, Payload::TsR(t) => t);
        let (Some(props), Some(tsi), Some(tsr)) = (sa, tsi, tsr) else {
            let error = match error_notify(p) {
                Some(notify::NO_PROPOSAL_CHOSEN) => IkeError::PeerRefusedEsp {
                    ours: offered_esp(&c),
                },
                Some(notify::TS_UNACCEPTABLE) => IkeError::PeerRefusedTs {
                    ours: format!("{} === {}", show_all(&c.local_ts), show_all(&c.remote_ts)),
                },
                Some(e) => IkeError::PeerNotify {
                    exchange: exch,
                    notify: e,
                },
                None => IkeError::NoChildSa,
            };
            self.child_failed(c.name, error);
            return;
        };
        let transport = find_notify(p, notify::USE_TRANSPORT_MODE).is_some();
        let chosen = match props.as_slice() {
            [one] => EspProposal::choose(&c.esp, std::slice::from_ref(one)),
            _ => None,
        };
        let error = match chosen {
            None => Some(IkeError::PeerChoseUnoffered {
                what: "ESP",
                chosen: props.first().map(describe).unwrap_or_default(),
            }),
            Some(_) if !child::within(tsi, &c.local_ts) || !child::within(tsr, &c.remote_ts) => {
                Some(IkeError::TsNotWithin {
                    got: format!("{} === {}", show_all(tsi), show_all(tsr)),
                    ours: format!("{} === {}", show_all(&c.local_ts), show_all(&c.remote_ts)),
                })
            }
            Some(_) if transport != c.transport => Some(IkeError::ModeMismatch {
                peer_wants_transport: transport,
                ours_transport: c.transport,
            }),
            Some(_) => None,
        };
        let (Some((_, spi, proposal)), None) = (chosen, &error) else {
            if let Some(e) = error {
                self.child_failed(c.name, e);
            }
            // The responder has this Child SA up; delete it so it is not left behind.
            self.queue.push_back(Queued::DeleteChild(req.inbound_spi));
            return;
        };
        let Some(keys) = self.keys() else {
            return;
        };
        let ck = child_keys(keys.suite.prf, &keys.sk_d, ni, nr, proposal.transform);
        self.child_up(
            c.name,
            req.inbound_spi,
            spi,
            proposal,
            ck.r_to_i,
            ck.i_to_r,
            tsi.clone(),
            tsr.clone(),
            transport,
        );
    }

    /// Responder (§2.9): the first configured child whose selectors narrow what the
    /// initiator proposed to something, in the mode it asked for, with an ESP proposal in
    /// common. Otherwise the error and its notify, naming the closest child.
    fn choose_child(&self, p: &[Payload]) -> Result<Choice, (String, IkeError, u16)> {
        let props = first!(p, Payload::Sa(props) => props);
        let tsi = first!(p, Payload::TsI(t) => t);
        let tsr = first!(p, Payload::TsR(t) => t);
        let conn_name = || {
            if self.cfg.children.len() == 1 {
                self.cfg.children[0].name.clone()
            } else {
                self.cfg.name.clone()
            }
        };
        let (Some(props), Some(tsi), Some(tsr)) = (props, tsi, tsr) else {
            return Err((
                conn_name(),
                IkeError::Malformed {
                    what: "a Child SA request lacks SA, TSi or TSr".into(),
                },
                notify::INVALID_SYNTAX,
            ));
        };
        let transport = find_notify(p, notify::USE_TRANSPORT_MODE).is_some();
        let (mut mode_miss, mut esp_miss) = (None, None);
        for (i, c) in self.cfg.children.iter().enumerate() {
            // TSi is the initiator's side: our remote; TSr ours.
            let ni = child::narrow(tsi, &c.remote_ts);
            let nr = child::narrow(tsr, &c.local_ts);
            if ni.is_empty() || nr.is_empty() {
                continue;
            }
            if c.transport != transport {
                mode_miss.get_or_insert(i);
                continue;
            }
            match EspProposal::choose(&c.esp, props) {
                None => {
                    esp_miss.get_or_insert(i);
                }
                Some((number, peer_spi, proposal)) => {
                    return Ok(Choice {
                        child: i,
                        number,
                        peer_spi,
                        proposal,
                        tsi: ni,
                        tsr: nr,
                    })
                }
            }
        }
        if let Some(i) = esp_miss {
            let c = &self.cfg.children[i];
            return Err((
                c.name.clone(),
                IkeError::NoEspProposal {
                    ours: offered_esp(c),
                    theirs: props.iter().map(describe).collect::<Vec<_>>().join(", "),
                },
                notify::NO_PROPOSAL_CHOSEN,
            ));
        }
        if let Some(i) = mode_miss {
            let c = &self.cfg.children[i];
            return Err((
                c.name.clone(),
                IkeError::ModeMismatch {
                    peer_wants_transport: transport,
                    ours_transport: c.transport,
                },
                notify::TS_UNACCEPTABLE,
            ));
        }
        let allowed = self
            .cfg
            .children
            .iter()
            .map(|c| format!("{} === {}", show_all(&c.remote_ts), show_all(&c.local_ts)))
            .collect::<Vec<_>>()
            .join(" or ");
        Err((
            conn_name(),
            IkeError::TsUnacceptable {
                proposed: format!("{} === {}", show_all(tsi), show_all(tsr)),
                allowed,
            },
            notify::TS_UNACCEPTABLE,
        ))
    }

    /// Responder: a Child SA request (in IKE_AUTH or CREATE_CHILD_SA) answered; `ni`/`nr`
    /// are that exchange's nonces. Returns the payloads of the answer and whether the Child
    /// SA is up.
    fn respond_child_inner(
        &mut self,
        ni: &[u8],
        nr: &[u8],
        p: &[Payload],
        spis: &mut dyn SpiAllocator,
    ) -> (Vec<Payload>, bool) {
        let ch = match self.choose_child(p) {
            Ok(ch) => ch,
            Err((name, error, n)) => {
                self.child_failed(name, error);
                return (vec![notify_payload(n, vec![])], false);
            }
        };
        let Some(keys) = self.keys() else {
            return (
                vec![notify_payload(notify::TEMPORARY_FAILURE, vec![])],
                false,
            );
        };
        let ck = child_keys(keys.suite.prf, &keys.sk_d, ni, nr, ch.proposal.transform);
        let c = self.cfg.children[ch.child].clone();
        let inbound_spi = spis.alloc_spi();
        let mut out = Vec::new();
        if c.transport {
            out.push(notify_payload(notify::USE_TRANSPORT_MODE, vec![]));
        }
        out.push(Payload::Sa(vec![ch
            .proposal
            .to_wire(ch.number, inbound_spi)]));
        out.push(Payload::TsI(ch.tsi.clone()));
        out.push(Payload::TsR(ch.tsr.clone()));
        self.child_up(
            c.name,
            inbound_spi,
            ch.peer_spi,
            ch.proposal,
            ck.i_to_r,
            ck.r_to_i,
            ch.tsr,
            ch.tsi,
            c.transport,
        );
        (out, true)
    }

    /// Responder, in IKE_AUTH: the payloads about the first Child SA.
    pub(super) fn respond_child(
        &mut self,
        ni: &[u8],
        nr: &[u8],
        p: &[Payload],
        spis: &mut dyn SpiAllocator,
    ) -> Vec<Payload> {
        self.respond_child_inner(ni, nr, p, spis).0
    }

    /// Initiator: the answer to our CREATE_CHILD_SA request.
    pub(super) fn on_create_child_response(&mut self, req: ChildRequest, ni: &[u8], p: &[Payload]) {
        if !matches!(self.state, IkeState::Established { .. }) {
            self.ignored("a CREATE_CHILD_SA answer while the IKE SA is going away".into());
            return;
        }
        self.report_unused("CREATE_CHILD_SA", p, CHILD_PAYLOADS, CHILD_NOTIFIES);
        let has_sa = first!(p, Payload::Sa(s) => s).is_some();
        let nr = first!(p, Payload::Nonce(n) => n)
            .cloned()
            .unwrap_or_default();
        if has_sa && !(16..=256).contains(&nr.len()) {
            let name = self
                .cfg
                .children
                .get(req.child)
                .map_or(self.cfg.name.clone(), |c| c.name.clone());
            self.child_failed(
                name,
                IkeError::Malformed {
                    what: "CREATE_CHILD_SA response without a valid nonce".into(),
                },
            );
            self.queue.push_back(Queued::DeleteChild(req.inbound_spi));
            return;
        }
        self.accept_child_response(req, ni, &nr, p, "CREATE_CHILD_SA");
    }

    /// Responder: a CREATE_CHILD_SA request (§1.3).
    pub(super) fn on_create_child_request(
        &mut self,
        mid: u32,
        local: SocketAddr,
        remote: SocketAddr,
        p: &[Payload],
        rng: &mut dyn Random,
        spis: &mut dyn SpiAllocator,
    ) {
        self.report_unused("CREATE_CHILD_SA", p, CHILD_PAYLOADS, CHILD_NOTIFIES);
        let ike_rekey = first!(p, Payload::Sa(s) => s)
            .is_some_and(|s| s.iter().any(|x| x.protocol == PROTO_IKE));
        if ike_rekey {
            // §1.3.2: an IKE SA rekey (rekey_ike.rs).
            self.on_ike_rekey_request(mid, local, remote, p, rng);
            return;
        }
        if ike_rekey || find_notify(p, notify::REKEY_SA).is_some() {
            // §1.3.2, §1.3.3: not yet; refuse so the peer is not left waiting.
            self.answer(
                exchange::CREATE_CHILD_SA,
                mid,
                local,
                remote,
                &[notify_payload(notify::NO_PROPOSAL_CHOSEN, vec![])],
                rng,
            );
            tracing::info!(conn = %self.cfg.name, ike = ike_rekey, "the peer wants to rekey; not implemented yet: answered NO_PROPOSAL_CHOSEN");
            self.ignored("rekey not implemented yet".into());
            return;
        }
        if first!(p, Payload::Ke { .. } => ()).is_some() {
            self.answer(
                exchange::CREATE_CHILD_SA,
                mid,
                local,
                remote,
                &[notify_payload(notify::NO_PROPOSAL_CHOSEN, vec![])],
                rng,
            );
            let name = self.cfg.name.clone();
            self.child_failed(name, IkeError::PfsNotImplemented);
            return;
        }
        let Some(ni) = first!(p, Payload::Nonce(n) => n).filter(|n| (16..=256).contains(&n.len()))
        else {
            self.answer(
                exchange::CREATE_CHILD_SA,
                mid,
                local,
                remote,
                &[notify_payload(notify::INVALID_SYNTAX, vec![])],
                rng,
            );
            self.ignored(
                "a CREATE_CHILD_SA request without a valid nonce: answered INVALID_SYNTAX".into(),
            );
            return;
        };
        let ni = ni.clone();
        let mut nr = vec![0u8; 32];
        rng.fill(&mut nr);
        let (mut out, up) = self.respond_child_inner(&ni, &nr, p, spis);
        if up {
            let at = out
                .iter()
                .position(|x| matches!(x, Payload::Sa(_)))
                .map_or(0, |i| i + 1);
            out.insert(at, Payload::Nonce(nr));
        }
        self.answer(exchange::CREATE_CHILD_SA, mid, local, remote, &out, rng);
    }

    // ---- Child SA lifetimes and rekeying (issue 12: the ike-child stream fills these) --

    /// The earliest Child SA rekey or expiry due.
    pub(super) fn child_deadline(&self) -> Option<u64> {
        None
    }

    /// Start the rekeys and expiries that are due.
    pub(super) fn child_timers(
        &mut self,
        now: u64,
        rng: &mut dyn Random,
        spis: &mut dyn SpiAllocator,
    ) {
        let _ = (now, rng, spis);
    }

    /// Rekey the Child SA whose inbound SPI is `inbound_spi` now (the dataplane reached its
    /// soft byte/packet limit or its sequence numbers run short). Nothing if a rekey of it is
    /// already under way.
    pub fn rekey_child(
        &mut self,
        now: u64,
        inbound_spi: u32,
        rng: &mut dyn Random,
        spis: &mut dyn SpiAllocator,
    ) -> Result<(), IkeError> {
        let _ = (now, inbound_spi, rng, spis);
        Err(IkeError::NotEstablished)
    }

    /// The Child SA reached its hard limit in the dataplane: delete it (ChildDown follows;
    /// the daemon negotiates a fresh one if the child is still wanted).
    pub fn expire_child(&mut self, now: u64, inbound_spi: u32, rng: &mut dyn Random) {
        let _ = (now, inbound_spi, rng);
    }
}
