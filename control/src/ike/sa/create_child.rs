//! Child SA negotiation (RFC 7296 §1.3.1, §2.9, §2.17), the same in IKE_AUTH (the first
//! Child SA) and in CREATE_CHILD_SA (the others), with PFS (a KE payload, §1.3.1, §2.17);
//! Child SA rekeying in both roles (§1.3.3, §2.8), its collisions (§2.8.1, §2.25), and
//! the Child SAs' lifetimes.
//!
//! Make-before-break: the new Child SA's inbound half is installed (ChildRekeyed) before
//! the exchange's last message leaves; the rekey's initiator switches outbound when the
//! answer comes and then deletes the old SA; the responder switches outbound when that
//! Delete arrives (ChildOutbound), or after [`REKEY_DELETE_WAIT_MS`] without it.

use std::collections::VecDeque;
use std::net::SocketAddr;

use dataplane::crypto::SaKeys;

use super::super::algnames;
use super::super::child::{
    self, child_keys, child_keys_multi, show_ts, ChildCfg, EspProposal, KeOffer, PROTO_ESP,
};
use super::super::dh::{Group, KeyPair};
use super::super::kem::{self, Method};
use super::super::keys::Secret;
use super::super::lifetime::spread;
use super::super::proposal::{describe, PROTO_IKE};
use super::super::wire::{exchange, payload, transform, Notify, Payload, Proposal, Ts};
use super::{
    error_notify, find_notify, first, notify, notify_payload, ChildInfo, ChildRequest, ChildSa,
    Event, IkeError, IkeSa, IkeState, Queued, Random, Req, SpiAllocator,
};

/// How long the responder of a Child SA rekey waits for the initiator's Delete of the old
/// SA before it switches outbound and deletes the old SA itself.
pub const REKEY_DELETE_WAIT_MS: u64 = 30_000;
/// After TEMPORARY_FAILURE (§2.25) our rekey is retried after 2 s plus up to 3 s at random,
/// so two peers do not collide again.
const RETRY_BASE_MS: u64 = 2_000;
const RETRY_SPREAD_MS: u64 = 3_000;

fn show_all(ts: &[Ts]) -> String {
    ts.iter().map(show_ts).collect::<Vec<_>>().join(",")
}

fn offered_esp(c: &ChildCfg) -> String {
    // strongSwan's syntax, as configured.
    c.esp
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn group_names(groups: &[Group]) -> String {
    groups
        .iter()
        .map(|g| g.name())
        .collect::<Vec<_>>()
        .join(" or ")
}

/// Every group the child's proposals list, in order, once.
fn child_groups(c: &ChildCfg) -> Vec<Group> {
    let mut out = Vec::new();
    for g in c.esp.iter().flat_map(|p| p.groups.iter()) {
        if !out.contains(g) {
            out.push(*g);
        }
    }
    out
}

/// What CREATE_CHILD_SA acts on; anything else is reported.
const CHILD_PAYLOADS: &[u8] = &[
    payload::SA,
    payload::NONCE,
    payload::KE,
    payload::TSI,
    payload::TSR,
];
const CHILD_NOTIFIES: &[u16] = &[
    notify::USE_TRANSPORT_MODE,
    notify::REKEY_SA,
    notify::SA_RESOURCE_INFO,
];

/// What the responder settled on for a Child SA request.
#[derive(Debug, Clone)]
struct Choice {
    child: usize,
    number: u8,
    peer_spi: u32,
    proposal: EspProposal,
    /// Narrowed: TSi (the initiator's side), TSr (ours).
    tsi: Vec<Ts>,
    tsr: Vec<Ts>,
}

/// One CREATE_CHILD_SA of ours, queued or in flight, by its new inbound SPI.
#[derive(Debug)]
struct Pending {
    new_spi: u32,
    /// A rekey of the Child SA with this inbound SPI (§1.3.3).
    rekey_of: Option<u32>,
    /// A fresh Child SA for this one, which the peer no longer has (CHILD_SA_NOT_FOUND).
    replaces: Option<u32>,
    /// The group to send a KE for, once the peer asked for it (INVALID_KE_PAYLOAD).
    group: Option<Group>,
    ke_retried: bool,
    /// Our half of the key exchange while the request is out.
    dh: Option<KeyPair>,
}

/// A Child SA on its way out: replaced by a rekey, or the redundant one of a collision.
#[derive(Debug, Clone, Copy)]
struct Retiring {
    inbound_spi: u32,
    /// The peer rekeyed it: outbound moves to this one (ChildOutbound) when the peer's
    /// Delete comes, or at `deadline`.
    successor: Option<u32>,
    /// Our Delete of it is queued or out; ChildDown { rekeyed: true } on its answer.
    deleting: bool,
    /// Waiting for the peer's Delete until then; after, we delete it ourselves.
    deadline: Option<u64>,
}

/// The peer's rekey of a Child SA we were rekeying ourselves (§2.8.1), answered while
/// ours was out: which of the two new SAs survives is decided when ours is answered.
#[derive(Debug)]
struct PeerRekey {
    old: u32,
    new: u32,
    /// The lower of that exchange's two nonces.
    low_nonce: Vec<u8>,
}

/// The Child SAs' lifecycle beside [`IkeSa::children`]: our requests, the SAs on their
/// way out and the collisions being resolved. Every entry leaves when its exchange or
/// its Child SA ends, so it stays small however many rekeys go by.
#[derive(Debug, Default)]
pub(super) struct ChildBook {
    pending: Vec<Pending>,
    retiring: Vec<Retiring>,
    peer_rekeys: Vec<PeerRekey>,
    /// Inbound SPIs drawn for rekeys that did not happen (TEMPORARY_FAILURE, a rekey made
    /// moot): the next rekey takes one of these before it asks the allocator.
    spare: Vec<u32>,
    /// Initiator: our CREATE_CHILD_SA whose additional key exchanges run (RFC 9370 §2.2.4).
    pub(super) followup: Option<Followup>,
    /// Responder: the peer's CREATE_CHILD_SAs whose additional key exchanges run, by link.
    pub(super) peer_followups: Vec<PeerFollowup>,
    /// RFC 9611: the resource each Child SA being made is bound to, by its new inbound SPI
    /// (taken when the Child SA is made; a rekey's successor inherits its predecessor's).
    resource_for: Vec<(u32, u16)>,
    /// The Child SAs (outbound SPI, inbound SPI) this IKE SA handed to the one that
    /// replaced it (§2.8): a Delete the peer sent before it learned of the rekey may still
    /// name one here. As many as it had; gone with this IKE SA.
    moved: Vec<(u32, u32)>,
}

/// Our CREATE_CHILD_SA, answered and checked, before its keys.
#[derive(Debug)]
pub(super) struct Answered {
    req: ChildRequest,
    pend: Pending,
    collided: Option<PeerRekey>,
    ni: Vec<u8>,
    nr: Vec<u8>,
    spi: u32,
    proposal: EspProposal,
    tsi: Vec<Ts>,
    tsr: Vec<Ts>,
    transport: bool,
}

/// Initiator: the additional key exchanges of our CREATE_CHILD_SA (RFC 9370 §2.2.4).
pub(super) struct Followup {
    done: Answered,
    /// SK(0), SK(1), ... so far.
    secrets: Vec<Secret>,
    /// The methods still to run, in ADDKE type order.
    remaining: Vec<Method>,
    /// The responder's link for the next IKE_FOLLOWUP_KE.
    link: Vec<u8>,
    /// Our half of the exchange in flight.
    kem: Option<kem::Pending>,
}

impl std::fmt::Debug for Followup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Followup")
            .field("done", &self.done)
            .field("secrets", &self.secrets.len())
            .field("remaining", &self.remaining)
            .finish_non_exhaustive()
    }
}

/// Responder: the additional key exchanges of the peer's CREATE_CHILD_SA (RFC 9370 §2.2.4).
pub(super) struct PeerFollowup {
    link: Vec<u8>,
    secrets: Vec<Secret>,
    remaining: Vec<Method>,
    ni: Vec<u8>,
    nr: Vec<u8>,
    choice: Choice,
    only: Option<(usize, u32)>,
    inbound_spi: u32,
}

impl std::fmt::Debug for PeerFollowup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerFollowup")
            .field("inbound_spi", &self.inbound_spi)
            .field("secrets", &self.secrets.len())
            .field("remaining", &self.remaining)
            .finish_non_exhaustive()
    }
}

impl ChildBook {
    fn retiring(&self, spi: u32) -> Option<&Retiring> {
        self.retiring.iter().find(|r| r.inbound_spi == spi)
    }
    fn retiring_mut(&mut self, spi: u32) -> Option<&mut Retiring> {
        self.retiring.iter_mut().find(|r| r.inbound_spi == spi)
    }
    fn take_retiring(&mut self, spi: u32) -> Option<Retiring> {
        let i = self.retiring.iter().position(|r| r.inbound_spi == spi)?;
        Some(self.retiring.remove(i))
    }
    /// The inbound SPI of a Child SA moved away whose outbound SPI is `outbound`.
    pub(super) fn moved_inbound(&self, outbound: u32) -> Option<u32> {
        self.moved
            .iter()
            .find(|(o, _)| *o == outbound)
            .map(|(_, i)| *i)
    }
    fn rekeying(&self, spi: u32) -> bool {
        self.pending.iter().any(|p| p.rekey_of == Some(spi))
    }
    /// Forget every exchange and SA (the IKE SA is gone); the spare SPIs stay listed.
    pub(super) fn reset(&mut self) {
        let spare = std::mem::take(&mut self.spare);
        *self = ChildBook {
            spare,
            ..Default::default()
        };
    }
    /// Our rekey `p` ended without a Child SA: its SPI is free again (a new Child SA's SPI
    /// the daemon releases itself on ChildFailed).
    fn unused(&mut self, p: &Pending) {
        if (p.rekey_of.is_some() || p.replaces.is_some()) && !self.spare.contains(&p.new_spi) {
            self.spare.push(p.new_spi);
        }
    }
    /// How many entries it holds (tests check it stays bounded).
    pub(super) fn len(&self) -> usize {
        self.pending.len() + self.retiring.len() + self.peer_rekeys.len() + self.resource_for.len()
    }
    /// (A spare SPI reused for another rekey is bound anew, never to a stale resource.)
    fn bind(&mut self, spi: u32, resource: u16) {
        self.resource_for.retain(|(s, _)| *s != spi);
        self.resource_for.push((spi, resource));
    }
    fn bound(&self, spi: u32) -> Option<u16> {
        self.resource_for
            .iter()
            .find(|(s, _)| *s == spi)
            .map(|(_, r)| *r)
    }
    fn take_bound(&mut self, spi: u32) -> Option<u16> {
        let i = self.resource_for.iter().position(|(s, _)| *s == spi)?;
        Some(self.resource_for.remove(i).1)
    }
}

/// The peer's KE payload, by group.
fn ke_of(p: &[Payload]) -> Option<(u16, &Vec<u8>)> {
    first!(p, Payload::Ke { group, data } => (*group, data))
}

impl IkeSa {
    /// The payloads proposing a Child SA in IKE_AUTH (§1.3.1, §1.2): SA with our inbound
    /// SPI and no key exchange transforms, TSi = our side, TSr = theirs.
    pub(super) fn create_child_payloads(&self, req: ChildRequest, ni: &[u8]) -> Vec<Payload> {
        let Some(c) = self.cfg.children.get(req.child) else {
            return vec![];
        };
        let mut out = Vec::new();
        if c.transport {
            out.push(notify_payload(notify::USE_TRANSPORT_MODE, vec![]));
        }
        if c.per_resource > 0 {
            // RFC 9611 §4: the first (fallback) Child SA carries SA_RESOURCE_INFO, no data:
            // we will ask for per-resource Child SAs with these selectors. A peer that does
            // not know it ignores it (a status notify, RFC 7296 §3.10.1) and does not echo it.
            out.push(notify_payload(notify::SA_RESOURCE_INFO, vec![]));
        }
        out.push(Payload::Sa(
            c.esp
                .iter()
                .enumerate()
                .map(|(i, p)| p.without_ke().to_wire(i as u8 + 1, req.inbound_spi))
                .collect(),
        ));
        if !ni.is_empty() {
            out.push(Payload::Nonce(ni.to_vec()));
        }
        out.push(Payload::TsI(c.local_ts.clone()));
        out.push(Payload::TsR(c.remote_ts.clone()));
        out
    }

    /// Our CREATE_CHILD_SA request for `req` (a new Child SA or a rekey, §1.3.1, §1.3.3):
    /// [REKEY_SA], [USE_TRANSPORT_MODE], SA, Ni, [KEi], TSi, TSr. `None` if it is moot
    /// now (the Child SA to rekey went away meanwhile, or was rekeyed by the peer).
    pub(super) fn create_child_request(
        &mut self,
        req: ChildRequest,
        ni: &[u8],
        rng: &mut dyn Random,
    ) -> Option<Vec<Payload>> {
        let c = self.cfg.children.get(req.child)?.clone();
        let Some(pi) = self
            .book
            .pending
            .iter()
            .position(|p| p.new_spi == req.inbound_spi)
        else {
            // Not registered (cannot happen through create_child): a plain new Child SA.
            let mut p = self.create_child_payloads(req, ni);
            if let Some(i) = p.iter().position(|x| matches!(x, Payload::Sa(_))) {
                p[i] = Payload::Sa(
                    c.esp
                        .iter()
                        .enumerate()
                        .map(|(i, e)| e.to_wire(i as u8 + 1, req.inbound_spi))
                        .collect(),
                );
            }
            return Some(p);
        };
        let mut out = Vec::new();
        let (mut lts, mut rts) = (c.local_ts.clone(), c.remote_ts.clone());
        if let Some(old) = self.book.pending[pi].rekey_of {
            let gone = !self.children.iter().any(|x| x.inbound_spi == old);
            if gone || self.book.retiring(old).is_some() {
                let p = self.book.pending.remove(pi);
                self.book.unused(&p);
                self.ignored(format!(
                    "our queued rekey of Child SA {old:#010x}: it was {} meanwhile",
                    if gone {
                        "deleted"
                    } else {
                        "rekeyed by the peer"
                    }
                ));
                return None;
            }
            if let Some(o) = self.children.iter().find(|x| x.inbound_spi == old) {
                // §2.8: the new SA has the old one's selectors (as negotiated).
                lts = o.local_ts.clone();
                rts = o.remote_ts.clone();
            }
            // RFC 9611: the successor of a per-resource Child SA is bound where it was.
            match self
                .children
                .iter()
                .find(|x| x.inbound_spi == old)
                .and_then(|x| x.resource)
            {
                Some(r) => self.book.bind(req.inbound_spi, r),
                None => {
                    self.book.take_bound(req.inbound_spi);
                }
            }
            // §1.3.3: REKEY_SA names the SA being rekeyed by our inbound SPI of it (the
            // peer finds it as its outbound one), as strongSwan does.
            out.push(Payload::Notify(Notify {
                protocol: PROTO_ESP,
                spi: old.to_be_bytes().to_vec(),
                kind: notify::REKEY_SA,
                data: vec![],
            }));
        }
        if c.transport {
            out.push(notify_payload(notify::USE_TRANSPORT_MODE, vec![]));
        }
        if let Some(r) = self.book.bound(req.inbound_spi) {
            // RFC 9611 §4: a per-resource Child SA (or its rekey); the data is an opaque id
            // of our resource, for the peer's logs only.
            out.push(notify_payload(
                notify::SA_RESOURCE_INFO,
                r.to_be_bytes().to_vec(),
            ));
        } else if c.per_resource > 0 && self.book.pending[pi].rekey_of.is_none() {
            // A fresh fallback Child SA: as in IKE_AUTH.
            out.push(notify_payload(notify::SA_RESOURCE_INFO, vec![]));
        }
        // RFC 9370 §2.2.4: the proposals with additional key exchanges, each followed by
        // its twin without them when they are optional.
        let esp = EspProposal::offer(&c.esp);
        out.push(Payload::Sa(
            esp.iter()
                .enumerate()
                .map(|(i, p)| p.to_wire(i as u8 + 1, req.inbound_spi))
                .collect(),
        ));
        out.push(Payload::Nonce(ni.to_vec()));
        // PFS: a KE for the first group of our first proposal, or the one the peer asked
        // for (§1.3.1: KEi is of the group the initiator expects the responder to accept).
        let group = self.book.pending[pi]
            .group
            .or_else(|| c.esp.first().and_then(|p| p.group()));
        self.book.pending[pi].dh = None;
        if let Some(g) = group {
            let kp = super::init::keypair(g, rng);
            out.push(Payload::Ke {
                group: g.iana(),
                data: kp.public.clone(),
            });
            self.book.pending[pi].dh = Some(kp);
        }
        out.push(Payload::TsI(lts));
        out.push(Payload::TsR(rts));
        Some(out)
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
        self.book.pending.push(Pending {
            new_spi: req.inbound_spi,
            rekey_of: None,
            replaces: None,
            group: None,
            ke_retried: false,
            dh: None,
        });
        self.queue.push_back(Queued::CreateChild(req));
        self.pump(now, rng);
        Ok(())
    }

    /// RFC 9611 §4: CREATE_CHILD_SA for one more Child SA of child `req.child`, with the
    /// same selectors as its fallback, bound on our side to `resource` (a dataplane worker).
    pub fn create_resource_child(
        &mut self,
        now: u64,
        req: ChildRequest,
        resource: u16,
        rng: &mut dyn Random,
    ) -> Result<(), IkeError> {
        self.book.bind(req.inbound_spi, resource);
        let r = self.create_child(now, req, rng);
        if r.is_err() {
            self.book.take_bound(req.inbound_spi);
        }
        r
    }

    /// RFC 9611: the lowest resource of child `k` no Child SA of ours is bound to (or being
    /// made for), below its limit; `None` when all are taken (or it is off).
    fn free_resource(&self, k: usize) -> Option<u16> {
        let c = self.cfg.children.get(k)?;
        (0..c.per_resource).find(|r| {
            !self
                .children
                .iter()
                .any(|x| x.name == c.name && x.resource == Some(*r))
                && !self.book.resource_for.iter().any(|(_, b)| b == r)
        })
    }

    fn child_failed(&mut self, name: String, error: IkeError) {
        self.events.push_back(Event::ChildFailed { name, error });
    }

    /// A negotiated Child SA joins `children` (with its lifetimes from now); the caller
    /// announces it (ChildUp, or ChildRekeyed for a rekey).
    #[allow(clippy::too_many_arguments)]
    fn new_child(
        &mut self,
        now: u64,
        rng: &mut dyn Random,
        name: String,
        inbound_spi: u32,
        outbound_spi: u32,
        proposal: EspProposal,
        keys_in: SaKeys,
        keys_out: SaKeys,
        local_ts: Vec<Ts>,
        remote_ts: Vec<Ts>,
        transport: bool,
        rekeys: u32,
    ) -> ChildSa {
        let times = self
            .cfg
            .children
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.lifetime.schedule(now, rng))
            .unwrap_or_default();
        let resource = self.book.take_bound(inbound_spi);
        self.children.push(ChildInfo {
            name: name.clone(),
            inbound_spi,
            outbound_spi,
            local_ts: local_ts.clone(),
            remote_ts: remote_ts.clone(),
            transport,
            proposal: proposal.clone(),
            created_at: now,
            rekey_at: times.rekey_at,
            expire_at: times.expire_at,
            rekeys,
            resource,
        });
        ChildSa {
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
            resource,
            add_resources: false,
        }
    }

    /// Initiator: check the responder's Child SA answer against what we offered for child
    /// `c` (§2.7: one of our proposals, whole; §2.9: narrowed within ours; the mode).
    #[allow(clippy::type_complexity)]
    fn check_child_answer(
        &self,
        c: &ChildCfg,
        p: &[Payload],
        ke: KeOffer,
        exch: &'static str,
        sent_ts: (&[Ts], &[Ts]),
    ) -> Result<(u32, EspProposal, Vec<Ts>, Vec<Ts>, bool), IkeError> {
        let sa = first!(p, Payload::Sa(props) => props);
        let tsi = first!(p, Payload::TsI(t) => t);
        let tsr = first!(p, Payload::TsR(t) => t);
        let (Some(props), Some(tsi), Some(tsr)) = (sa, tsi, tsr) else {
            return Err(match error_notify(p) {
                Some(notify::NO_PROPOSAL_CHOSEN) => match ke {
                    KeOffer::Ke(Some(g)) => IkeError::PeerRefusedPfs {
                        child: c.name.clone(),
                        ours: group_names(&child_groups(c)),
                        first: g.name().into(),
                    },
                    _ => IkeError::PeerRefusedEsp {
                        ours: offered_esp(c),
                    },
                },
                Some(notify::TS_UNACCEPTABLE) => IkeError::PeerRefusedTs {
                    ours: format!("{} === {}", show_all(&c.local_ts), show_all(&c.remote_ts)),
                },
                Some(e) => IkeError::PeerNotify {
                    exchange: exch,
                    notify: e,
                },
                None => IkeError::NoChildSa,
            });
        };
        let transport = find_notify(p, notify::USE_TRANSPORT_MODE).is_some();
        let one: Option<&Proposal> = match props.as_slice() {
            [one] if one.spi.len() == 4 => Some(one),
            _ => None,
        };
        let Some((one, proposal)) =
            one.and_then(|one| EspProposal::accept_answer(&c.esp, one, ke).map(|x| (one, x)))
        else {
            return Err(IkeError::PeerChoseUnoffered {
                what: "ESP",
                chosen: props.first().map(describe).unwrap_or_default(),
            });
        };
        if !child::within(tsi, sent_ts.0) || !child::within(tsr, sent_ts.1) {
            return Err(IkeError::TsNotWithin {
                got: format!("{} === {}", show_all(tsi), show_all(tsr)),
                ours: format!("{} === {}", show_all(sent_ts.0), show_all(sent_ts.1)),
            });
        }
        if transport != c.transport {
            return Err(IkeError::ModeMismatch {
                peer_wants_transport: transport,
                ours_transport: c.transport,
            });
        }
        let spi = u32::from_be_bytes([one.spi[0], one.spi[1], one.spi[2], one.spi[3]]);
        Ok((spi, proposal, tsi.clone(), tsr.clone(), transport))
    }

    /// Initiator: the responder's answer for the first Child SA `req`, in IKE_AUTH. `ni`/`nr`
    /// are IKE_SA_INIT's nonces (§2.17).
    pub(super) fn accept_child_response(
        &mut self,
        now: u64,
        req: ChildRequest,
        ni: &[u8],
        nr: &[u8],
        p: &[Payload],
        rng: &mut dyn Random,
    ) {
        let Some(c) = self.cfg.children.get(req.child).cloned() else {
            return;
        };
        let has_sa = first!(p, Payload::Sa(s) => s).is_some();
        let checked = self.check_child_answer(
            &c,
            p,
            KeOffer::Ignore,
            "IKE_AUTH",
            (&c.local_ts, &c.remote_ts),
        );
        let (spi, proposal, tsi, tsr, transport) = match checked {
            Ok(x) => x,
            Err(e) => {
                self.child_failed(c.name, e);
                if has_sa {
                    // The responder has this Child SA up; delete it so it is not left behind.
                    self.queue.push_back(Queued::DeleteChild(req.inbound_spi));
                }
                return;
            }
        };
        let Some(keys) = self.keys() else {
            return;
        };
        let ck = child_keys(keys.suite.prf, &keys.sk_d, None, ni, nr, proposal.transform);
        let sa = self.new_child(
            now,
            rng,
            c.name,
            req.inbound_spi,
            spi,
            proposal,
            ck.r_to_i,
            ck.i_to_r,
            tsi,
            tsr,
            transport,
            0,
        );
        let mut sa = sa;
        // RFC 9611 §4: the responder echoed SA_RESOURCE_INFO: it does per-resource Child
        // SAs. One that does not know them (strongSwan 5.9) keeps just this one.
        sa.add_resources = c.per_resource > 0 && find_notify(p, notify::SA_RESOURCE_INFO).is_some();
        self.events.push_back(Event::ChildUp(sa));
    }

    /// Responder (§2.9): the first configured child (or only `only`) whose selectors narrow
    /// what the initiator proposed to something, in the mode it asked for, with an ESP
    /// proposal in common. Otherwise the error and its notify, naming the closest child.
    fn choose_child(
        &self,
        p: &[Payload],
        ke: KeOffer,
        only: Option<usize>,
    ) -> Result<Choice, Box<(String, IkeError, u16)>> {
        let props = first!(p, Payload::Sa(props) => props);
        let tsi = first!(p, Payload::TsI(t) => t);
        let tsr = first!(p, Payload::TsR(t) => t);
        let conn_name = || match only {
            Some(i) => self.cfg.children[i].name.clone(),
            None if self.cfg.children.len() == 1 => self.cfg.children[0].name.clone(),
            None => self.cfg.name.clone(),
        };
        let (Some(props), Some(tsi), Some(tsr)) = (props, tsi, tsr) else {
            return Err(Box::new((
                conn_name(),
                IkeError::Malformed {
                    what: "a Child SA request lacks SA, TSi or TSr".into(),
                },
                notify::INVALID_SYNTAX,
            )));
        };
        let transport = find_notify(p, notify::USE_TRANSPORT_MODE).is_some();
        let (mut mode_miss, mut esp_miss) = (None, None);
        for (i, c) in self.cfg.children.iter().enumerate() {
            if only.is_some_and(|o| o != i) {
                continue;
            }
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
            match EspProposal::choose(&c.esp, props, ke) {
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
            let only_ah = props.iter().any(|p| p.protocol == algnames::PROTO_AH)
                && !props.iter().any(|p| p.protocol == algnames::PROTO_ESP);
            let error = if only_ah {
                // RFC 4301 §3.2: AH is a MAY; we do ESP only, and say so rather than "no
                // proposal in common".
                IkeError::AhProposed {
                    child: c.name.clone(),
                    theirs: algnames::offered(props, describe),
                }
            } else if ke != KeOffer::Ignore && EspProposal::pfs_only_mismatch(&c.esp, props) {
                pfs_mismatch(c, props)
            } else {
                IkeError::NoEspProposal {
                    ours: offered_esp(c),
                    theirs: algnames::offered(props, describe),
                }
            };
            return Err(Box::new((
                c.name.clone(),
                error,
                notify::NO_PROPOSAL_CHOSEN,
            )));
        }
        if let Some(i) = mode_miss {
            let c = &self.cfg.children[i];
            return Err(Box::new((
                c.name.clone(),
                IkeError::ModeMismatch {
                    peer_wants_transport: transport,
                    ours_transport: c.transport,
                },
                notify::TS_UNACCEPTABLE,
            )));
        }
        let allowed = self
            .cfg
            .children
            .iter()
            .enumerate()
            .filter(|(i, _)| only.is_none_or(|o| o == *i))
            .map(|(_, c)| format!("{} === {}", show_all(&c.remote_ts), show_all(&c.local_ts)))
            .collect::<Vec<_>>()
            .join(" or ");
        Err(Box::new((
            conn_name(),
            IkeError::TsUnacceptable {
                proposed: format!("{} === {}", show_all(tsi), show_all(tsr)),
                allowed,
            },
            notify::TS_UNACCEPTABLE,
        )))
    }

    /// Responder: a Child SA request (in IKE_AUTH with `ke` = Ignore, or CREATE_CHILD_SA)
    /// answered; `ni`/`nr` are that exchange's nonces. `Ok`: the answer's payloads (with
    /// Nr and KEr in CREATE_CHILD_SA) and the new Child SA, already in `children`, for the
    /// caller to announce. `Err`: the refusal's payloads.
    #[allow(clippy::too_many_arguments)]
    fn respond_child_sa(
        &mut self,
        now: u64,
        ni: &[u8],
        nr: &[u8],
        p: &[Payload],
        ke: KeOffer,
        only: Option<(usize, u32)>,
        rng: &mut dyn Random,
        spis: &mut dyn SpiAllocator,
    ) -> Result<(Vec<Payload>, Option<ChildSa>), Vec<Payload>> {
        let ch = match self.choose_child(p, ke, only.map(|o| o.0)) {
            Ok(ch) => ch,
            Err(e) => {
                let (name, error, n) = *e;
                self.child_failed(name, error);
                return Err(vec![notify_payload(n, vec![])]);
            }
        };
        // §1.3: the chosen group must be the KE's; else INVALID_KE_PAYLOAD naming ours.
        let mut pfs = None;
        let mut ker = None;
        if let (KeOffer::Ke(k), Some(g)) = (ke, ch.proposal.group()) {
            let peer = ke_of(p).filter(|_| k == Some(g)).map(|(_, d)| d.clone());
            let Some(peer) = peer else {
                let line = format!("child {}: asking the initiator for key exchange group {} instead of {} (INVALID_KE_PAYLOAD)", self.cfg.children[ch.child].name, g.name(), k.map_or("none", |g| g.name()));
                self.log(tracing::Level::INFO, line);
                return Err(vec![notify_payload(
                    notify::INVALID_KE_PAYLOAD,
                    g.iana().to_be_bytes().to_vec(),
                )]);
            };
            let kp = super::init::keypair(g, rng);
            match kp.shared(&peer) {
                Ok(s) => pfs = Some(s),
                Err(e) => {
                    let name = self.cfg.children[ch.child].name.clone();
                    self.child_failed(name, IkeError::KeyExchange { why: e.to_string() });
                    return Err(vec![notify_payload(notify::INVALID_SYNTAX, vec![])]);
                }
            }
            ker = Some(Payload::Ke {
                group: g.iana(),
                data: kp.public.clone(),
            });
        }
        if let (KeOffer::Ke(Some(g)), None) = (ke, ch.proposal.group()) {
            // §1.3.1: a proposal without a group was chosen (PFS optional): no g^ir.
            self.log(
                tracing::Level::DEBUG,
                format!(
                    "the initiator's KE ({}) is not used: the chosen proposal has no key exchange",
                    g.name()
                ),
            );
        }
        if self.keys().is_none() {
            return Err(vec![notify_payload(notify::TEMPORARY_FAILURE, vec![])]);
        }
        let c = self.cfg.children[ch.child].clone();
        // RFC 9611 §4: a request with SA_RESOURCE_INFO while this child has its fallback
        // Child SA asks for a per-resource one; without a fallback it is the fallback.
        let asked = find_notify(p, notify::SA_RESOURCE_INFO).is_some();
        let has_fallback = self
            .children
            .iter()
            .any(|x| x.name == c.name && x.resource.is_none());
        let resource = match only {
            // A rekey's successor is bound where its predecessor was.
            Some((_, old)) => self
                .children
                .iter()
                .find(|x| x.inbound_spi == old)
                .and_then(|x| x.resource),
            None if asked && has_fallback && ke != KeOffer::Ignore => {
                match self.free_resource(ch.child) {
                    Some(r) => Some(r),
                    None => {
                        // RFC 9611 §5.2: no more for these selectors; not an error of the
                        // IKE SA, and the peer keeps what it has.
                        self.log(tracing::Level::INFO, format!("child {}: the peer asks for another per-resource Child SA beyond our {} (RFC 9611): answered TS_MAX_QUEUE", c.name, c.per_resource));
                        return Err(vec![notify_payload(notify::TS_MAX_QUEUE, vec![])]);
                    }
                }
            }
            None => None,
        };
        let inbound_spi = spis.alloc_spi();
        let mut out = Vec::new();
        if c.transport {
            out.push(notify_payload(notify::USE_TRANSPORT_MODE, vec![]));
        }
        if let Some(r) = resource {
            self.book.bind(inbound_spi, r);
        }
        if asked && c.per_resource > 0 {
            // RFC 9611 §4: the answer says we do per-resource Child SAs too.
            out.push(notify_payload(
                notify::SA_RESOURCE_INFO,
                resource
                    .map(|r| r.to_be_bytes().to_vec())
                    .unwrap_or_default(),
            ));
        }
        out.push(Payload::Sa(vec![ch
            .proposal
            .to_wire(ch.number, inbound_spi)]));
        if ke != KeOffer::Ignore {
            out.push(Payload::Nonce(nr.to_vec()));
        }
        out.extend(ker);
        out.push(Payload::TsI(ch.tsi.clone()));
        out.push(Payload::TsR(ch.tsr.clone()));
        let secrets: Vec<Secret> = pfs.into_iter().collect();
        let addke: Vec<Method> = ch.proposal.chosen_addke().into_iter().flatten().collect();
        if ke != KeOffer::Ignore && !addke.is_empty() {
            // RFC 9370 §2.2.4: the additional key exchanges follow in IKE_FOLLOWUP_KE; the
            // initiator names this exchange by the link.
            let link = self.new_followup_link(rng);
            out.push(notify_payload(
                notify::ADDITIONAL_KEY_EXCHANGE,
                link.clone(),
            ));
            self.book.peer_followups.push(PeerFollowup {
                link,
                secrets,
                remaining: addke,
                ni: ni.to_vec(),
                nr: nr.to_vec(),
                choice: ch,
                only,
                inbound_spi,
            });
            return Ok((out, None));
        }
        let sa = self.peer_child_keyed(now, rng, ch, only, inbound_spi, ni, nr, &secrets);
        Ok((out, sa))
    }

    /// A random link for the peer's next IKE_FOLLOWUP_KE (RFC 9370 §2.2.4: opaque, ours).
    fn new_followup_link(&self, rng: &mut dyn Random) -> Vec<u8> {
        let mut link = vec![0u8; 8];
        rng.fill(&mut link);
        link
    }

    /// Responder: the Child SA of the peer's request, once every key exchange ran, into
    /// `children` (the caller announces it).
    #[allow(clippy::too_many_arguments)]
    fn peer_child_keyed(
        &mut self,
        now: u64,
        rng: &mut dyn Random,
        ch: Choice,
        only: Option<(usize, u32)>,
        inbound_spi: u32,
        ni: &[u8],
        nr: &[u8],
        secrets: &[Secret],
    ) -> Option<ChildSa> {
        let keys = self.keys()?;
        let refs: Vec<&[u8]> = secrets.iter().map(|s| s.as_slice()).collect();
        let ck = child_keys_multi(
            keys.suite.prf,
            &keys.sk_d,
            &refs,
            ni,
            nr,
            ch.proposal.transform,
        );
        let c = self.cfg.children.get(ch.child)?.clone();
        let rekeys = only
            .and_then(|(_, old)| self.children.iter().find(|x| x.inbound_spi == old))
            .map_or(0, |o| o.rekeys + 1);
        Some(self.new_child(
            now,
            rng,
            c.name,
            inbound_spi,
            ch.peer_spi,
            ch.proposal,
            ck.i_to_r,
            ck.r_to_i,
            ch.tsr,
            ch.tsi,
            c.transport,
            rekeys,
        ))
    }

    /// Responder, in IKE_AUTH: the payloads about the first Child SA.
    pub(super) fn respond_child(
        &mut self,
        now: u64,
        ni: &[u8],
        nr: &[u8],
        p: &[Payload],
        rng: &mut dyn Random,
        spis: &mut dyn SpiAllocator,
    ) -> Vec<Payload> {
        match self.respond_child_sa(now, ni, nr, p, KeOffer::Ignore, None, rng, spis) {
            Ok((out, sa)) => {
                // IKE_AUTH runs no additional key exchange: the Child SA is there.
                self.events.extend(sa.map(Event::ChildUp));
                out
            }
            Err(out) => out,
        }
    }

    /// Initiator: the answer to our CREATE_CHILD_SA request (a new Child SA or a rekey).
    pub(super) fn on_create_child_response(
        &mut self,
        now: u64,
        req: ChildRequest,
        ni: &[u8],
        p: &[Payload],
        rng: &mut dyn Random,
    ) {
        let pend = match self
            .book
            .pending
            .iter()
            .position(|x| x.new_spi == req.inbound_spi)
        {
            Some(i) => self.book.pending.remove(i),
            None => Pending {
                new_spi: req.inbound_spi,
                rekey_of: None,
                replaces: None,
                group: None,
                ke_retried: false,
                dh: None,
            },
        };
        let collided = pend.rekey_of.and_then(|old| {
            let i = self.book.peer_rekeys.iter().position(|r| r.old == old)?;
            Some(self.book.peer_rekeys.remove(i))
        });
        if !matches!(self.state, IkeState::Established { .. }) {
            self.ignored("a CREATE_CHILD_SA answer while the IKE SA is going away".into());
            return;
        }
        self.report_unused("CREATE_CHILD_SA", p, CHILD_PAYLOADS, CHILD_NOTIFIES);
        let Some(c) = self.cfg.children.get(req.child).cloned() else {
            return;
        };
        // The Child SA this exchange was about, if it is still here and ours to rekey.
        let old = pend.rekey_of.or(pend.replaces);
        let old_alive = old.filter(|o| self.children.iter().any(|x| x.inbound_spi == *o));
        let has_sa = first!(p, Payload::Sa(s) => s).is_some();
        if !has_sa {
            match error_notify(p) {
                // §1.3, §3.10.1: retry once with the group the responder wants.
                Some(notify::INVALID_KE_PAYLOAD) => {
                    let wanted = find_notify(p, notify::INVALID_KE_PAYLOAD)
                        .and_then(|n| <[u8; 2]>::try_from(n.data.as_slice()).ok())
                        .map(u16::from_be_bytes);
                    let g = wanted
                        .and_then(Group::from_iana)
                        .filter(|g| child_groups(&c).contains(g));
                    match g {
                        Some(g) if !pend.ke_retried => {
                            self.log(tracing::Level::INFO, format!("child {}: the responder wants key exchange group {}: retrying with it", c.name, g.name()));
                            self.book.pending.push(Pending {
                                group: Some(g),
                                ke_retried: true,
                                dh: None,
                                ..pend
                            });
                            self.queue.push_front(Queued::CreateChild(req));
                        }
                        _ => {
                            self.book.unused(&pend);
                            let wanted = wanted.map_or("none".into(), |w| {
                                Group::from_iana(w).map_or(format!("{w}"), |g| g.name().into())
                            });
                            self.child_failed(
                                c.name.clone(),
                                IkeError::KeGroupNotOffered {
                                    wanted,
                                    ours: group_names(&child_groups(&c)),
                                },
                            );
                        }
                    }
                    return;
                }
                // §2.25: the responder is busy (rekeying the IKE SA, or this Child SA):
                // try again a little later.
                Some(notify::TEMPORARY_FAILURE) if old_alive.is_some() => {
                    let at = now + RETRY_BASE_MS + spread(RETRY_SPREAD_MS, rng);
                    if let Some(ci) = self
                        .children
                        .iter_mut()
                        .find(|x| Some(x.inbound_spi) == old_alive)
                    {
                        ci.rekey_at = Some(at);
                    }
                    self.log(tracing::Level::INFO, format!("child {}: the peer answered our Child SA rekey with TEMPORARY_FAILURE: retrying in {} ms", c.name, at - now));
                    self.book.unused(&pend);
                    return;
                }
                // §2.25: the peer no longer has the SA we rekey: make a fresh one instead,
                // which replaces it.
                Some(notify::TEMPORARY_FAILURE) if pend.rekey_of.is_some() => {
                    self.ignored(format!(
                        "TEMPORARY_FAILURE for our rekey of a Child SA that is gone meanwhile: nothing to retry (new SPI {:#010x} unused)",
                        req.inbound_spi
                    ));
                    self.book.unused(&pend);
                    return;
                }
                Some(notify::CHILD_SA_NOT_FOUND) if pend.rekey_of.is_some() => {
                    if let Some(o) = old_alive.filter(|o| self.book.retiring(*o).is_none()) {
                        self.log(tracing::Level::INFO, format!("child {}: the peer does not know the Child SA we rekey (CHILD_SA_NOT_FOUND): creating a fresh one", c.name));
                        self.book.pending.push(Pending {
                            rekey_of: None,
                            replaces: Some(o),
                            dh: None,
                            ..pend
                        });
                        self.queue.push_front(Queued::CreateChild(req));
                    } else {
                        self.ignored(format!(
                            "CHILD_SA_NOT_FOUND for our rekey of a Child SA that is gone: nothing to do (new SPI {:#010x} unused)",
                            req.inbound_spi
                        ));
                        self.book.unused(&pend);
                    }
                    return;
                }
                // RFC 9611 §5.2: the peer takes no more per-resource Child SAs: we keep
                // what we have (the workers without one use the fallback).
                Some(notify::TS_MAX_QUEUE) if self.book.bound(req.inbound_spi).is_some() => {
                    self.book.take_bound(req.inbound_spi);
                    self.log(tracing::Level::INFO, format!("child {}: the peer takes no more per-resource Child SAs (TS_MAX_QUEUE, RFC 9611)", c.name));
                    self.events.push_back(Event::ResourceRefused {
                        name: c.name.clone(),
                        inbound_spi: req.inbound_spi,
                    });
                    return;
                }
                // Any other answer without an SA (NO_PROPOSAL_CHOSEN, TS_UNACCEPTABLE, ...):
                // check_child_answer below turns it into a ChildFailed naming the notify.
                _ => {} // reported below, not here
            }
        }
        let nr = first!(p, Payload::Nonce(n) => n)
            .cloned()
            .unwrap_or_default();
        let sent_ke = KeOffer::Ke(pend.dh.as_ref().map(|k| k.group));
        let (sent_l, sent_r) =
            match old.and_then(|o| self.children.iter().find(|x| x.inbound_spi == o)) {
                Some(o) if pend.rekey_of.is_some() => (o.local_ts.clone(), o.remote_ts.clone()),
                _ => (c.local_ts.clone(), c.remote_ts.clone()),
            };
        let checked = if has_sa && !(16..=256).contains(&nr.len()) {
            Err(IkeError::Malformed {
                what: "CREATE_CHILD_SA response without a valid nonce".into(),
            })
        } else {
            self.check_child_answer(&c, p, sent_ke, "CREATE_CHILD_SA", (&sent_l, &sent_r))
        };
        // PFS: g^ir from the responder's KE of the chosen group (§2.17).
        let checked = checked.and_then(|(spi, proposal, tsi, tsr, transport)| {
            let pfs = match (proposal.group(), &pend.dh) {
                (None, _) => None,
                (Some(g), Some(kp)) => {
                    let Some((_, data)) = ke_of(p).filter(|(id, _)| *id == g.iana()) else {
                        return Err(IkeError::PfsKeMissing {
                            chosen: g.name().into(),
                        });
                    };
                    Some(
                        kp.shared(data)
                            .map_err(|e| IkeError::KeyExchange { why: e.to_string() })?,
                    )
                }
                (Some(g), None) => {
                    return Err(IkeError::PfsKeMissing {
                        chosen: g.name().into(),
                    })
                }
            };
            Ok((spi, proposal, tsi, tsr, transport, pfs))
        });
        let (spi, proposal, tsi, tsr, transport, pfs) = match checked {
            Ok(x) => x,
            Err(e) => {
                self.child_failed(c.name, e);
                self.book.unused(&pend);
                self.book.take_bound(req.inbound_spi);
                if has_sa {
                    // The responder has this Child SA up; delete it so it is not left behind.
                    self.queue.push_back(Queued::DeleteChild(req.inbound_spi));
                }
                return;
            }
        };
        let done = Answered {
            req,
            pend,
            collided,
            ni: ni.to_vec(),
            nr,
            spi,
            proposal,
            tsi,
            tsr,
            transport,
        };
        let addke: Vec<Method> = done.proposal.chosen_addke().into_iter().flatten().collect();
        if addke.is_empty() {
            self.finish_create_child(now, done, pfs.into_iter().collect(), rng);
            return;
        }
        // RFC 9370 §2.2.4: the additional key exchanges follow in IKE_FOLLOWUP_KE, each
        // naming the responder's link; the keys come after the last one.
        let Some(link) = find_notify(p, notify::ADDITIONAL_KEY_EXCHANGE).map(|n| n.data.clone())
        else {
            self.child_failed(
                c.name,
                IkeError::AddKe {
                    why: "the responder chose additional key exchanges for the Child SA but sent no ADDITIONAL_KEY_EXCHANGE link to continue them".into(),
                },
            );
            self.book.unused(&done.pend);
            self.queue
                .push_back(Queued::DeleteChild(done.req.inbound_spi));
            return;
        };
        self.book.followup = Some(Followup {
            done,
            secrets: pfs.into_iter().collect(),
            remaining: addke,
            link,
            kem: None,
        });
        self.queue.push_front(Queued::Followup);
    }

    /// Initiator: the Child SA of our CREATE_CHILD_SA, once every key exchange ran
    /// (`secrets`: SK(0) of the KE transform, then SK(1).. of the additional ones).
    fn finish_create_child(
        &mut self,
        now: u64,
        done: Answered,
        secrets: Vec<Secret>,
        rng: &mut dyn Random,
    ) {
        let Answered {
            req,
            pend,
            collided,
            ni,
            nr,
            spi,
            proposal,
            tsi,
            tsr,
            transport,
        } = done;
        let ni = ni.as_slice();
        // §2.8.1: the peer's rekey of the same SA answered while our additional key
        // exchanges ran: a collision too, decided by the CREATE_CHILD_SA exchanges' nonces.
        let collided = collided.or_else(|| {
            let old = pend.rekey_of?;
            let i = self.book.peer_rekeys.iter().position(|r| r.old == old)?;
            Some(self.book.peer_rekeys.remove(i))
        });
        let Some(c) = self.cfg.children.get(req.child).cloned() else {
            return;
        };
        let old = pend.rekey_of.or(pend.replaces);
        let old_alive = old.filter(|o| self.children.iter().any(|x| x.inbound_spi == *o));
        let Some(keys) = self.keys() else {
            return;
        };
        let refs: Vec<&[u8]> = secrets.iter().map(|s| s.as_slice()).collect();
        let ck = child_keys_multi(
            keys.suite.prf,
            &keys.sk_d,
            &refs,
            ni,
            &nr,
            proposal.transform,
        );
        if old.is_some() && old_alive.is_none() {
            // A Delete crossed our rekey (§2.8): the Child SA is gone, so is its successor.
            self.ignored(format!(
                "the answer to our rekey of a Child SA the peer deleted meanwhile: deleting the new one ({:#010x}) too",
                req.inbound_spi
            ));
            self.queue.push_back(Queued::DeleteChild(req.inbound_spi));
            self.book.unused(&pend);
            return;
        }
        let rekeys = old_alive
            .and_then(|o| self.children.iter().find(|x| x.inbound_spi == o))
            .map_or(0, |o| o.rekeys + 1);
        let sa = self.new_child(
            now,
            rng,
            c.name.clone(),
            req.inbound_spi,
            spi,
            proposal,
            ck.r_to_i,
            ck.i_to_r,
            tsi,
            tsr,
            transport,
            rekeys,
        );
        let Some(old) = old_alive else {
            self.events.push_back(Event::ChildUp(sa));
            return;
        };
        let new = sa.inbound_spi;
        if pend.replaces.is_some() {
            // The peer had lost the old SA: the fresh one takes over at once, both ways.
            self.events.push_back(Event::ChildRekeyed {
                replaces: old,
                new: sa,
                outbound_now: true,
            });
            self.child_gone(old, true, true);
            return;
        }
        // §2.8.1: both of us rekeyed it. The SA made by the exchange with the lowest of the
        // four nonces is redundant; whoever started that exchange deletes it.
        if let Some(theirs) = collided {
            let ours_low = ni.min(nr.as_slice()).to_vec();
            if ours_low < theirs.low_nonce {
                self.log(tracing::Level::INFO, format!("child {}: rekey collision: ours has the lowest nonce and is redundant; deleting it, the peer's survives", c.name));
                self.events.push_back(Event::ChildRekeyed {
                    replaces: old,
                    new: sa,
                    outbound_now: false,
                });
                self.book.retiring.push(Retiring {
                    inbound_spi: new,
                    successor: None,
                    deleting: true,
                    deadline: None,
                });
                self.queue.push_back(Queued::DeleteChild(new));
                return;
            }
            self.log(tracing::Level::INFO, format!("child {}: rekey collision: the peer's has the lowest nonce and is redundant; it deletes it, ours survives", c.name));
            // The peer's new SA is its to delete; it never carries our traffic.
            if let Some(r) = self.book.retiring_mut(theirs.new) {
                r.deadline = Some(now + REKEY_DELETE_WAIT_MS);
            } else if self.children.iter().any(|x| x.inbound_spi == theirs.new) {
                self.book.retiring.push(Retiring {
                    inbound_spi: theirs.new,
                    successor: None,
                    deleting: false,
                    deadline: Some(now + REKEY_DELETE_WAIT_MS),
                });
            }
        }
        // §2.8: outbound moves to the new SA now (the peer installed it before answering);
        // then the old one is deleted.
        self.events.push_back(Event::ChildRekeyed {
            replaces: old,
            new: sa,
            outbound_now: true,
        });
        self.book.take_retiring(old);
        self.book.retiring.push(Retiring {
            inbound_spi: old,
            successor: None,
            deleting: true,
            deadline: None,
        });
        self.queue.push_back(Queued::DeleteChild(old));
    }

    /// Responder: a CREATE_CHILD_SA request (§1.3).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_create_child_request(
        &mut self,
        now: u64,
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
        let refuse = |sa: &mut IkeSa, n: u16, data: Vec<u8>, rng: &mut dyn Random| {
            sa.answer(
                exchange::CREATE_CHILD_SA,
                mid,
                local,
                remote,
                &[notify_payload(n, data)],
                rng,
            );
        };
        let Some(ni) = first!(p, Payload::Nonce(n) => n).filter(|n| (16..=256).contains(&n.len()))
        else {
            refuse(self, notify::INVALID_SYNTAX, vec![], rng);
            self.ignored(
                "a CREATE_CHILD_SA request without a valid nonce: answered INVALID_SYNTAX".into(),
            );
            return;
        };
        let ni = ni.clone();
        // §1.3.3: REKEY_SA names the SA by the initiator's inbound SPI: our outbound one.
        let mut only = None;
        if let Some(n) = find_notify(p, notify::REKEY_SA) {
            let outb = <[u8; 4]>::try_from(n.spi.as_slice())
                .ok()
                .filter(|_| n.protocol == PROTO_ESP)
                .map(u32::from_be_bytes);
            let found = outb.and_then(|o| {
                self.children
                    .iter()
                    .find(|c| c.outbound_spi == o)
                    .map(|c| (c.name.clone(), c.inbound_spi))
            });
            let Some((name, old)) = found else {
                // §2.25: the SA to rekey does not exist (any more).
                refuse(self, notify::CHILD_SA_NOT_FOUND, vec![], rng);
                self.ignored(format!(
                    "a rekey of Child SA {} which we do not have: answered CHILD_SA_NOT_FOUND",
                    outb.map_or("(not ESP)".into(), |o| format!("{o:#010x}"))
                ));
                return;
            };
            // §2.25.1 does not cover this one: the peer rekeys again an SA whose rekey by it we
            // answered and whose Delete we await. A retransmission would have been answered
            // from our cache; this is a new exchange, so our answer never reached the peer
            // (lost, and its request then ended unanswered when the IKE SA it was on was
            // rekeyed and deleted). The successor we made exists only here: drop it and answer
            // this rekey as usual. Refusing would leave the peer on the old SA until our wait
            // ran out, and then we would delete the old SA and send on one the peer never had.
            let orphan = self
                .book
                .retiring(old)
                .filter(|r| !r.deleting && !self.book.rekeying(old))
                .and_then(|r| r.successor);
            if let Some(orphan) = orphan {
                self.log(tracing::Level::INFO, format!("child {name}: the peer rekeys Child SA {old:#010x} again: it never had our answer to its last rekey, whose SA {orphan:#010x} goes"));
                self.child_gone(orphan, false, false);
            }
            if self.ike_rekeying() || self.book.retiring(old).is_some() {
                // §2.25: the IKE SA is being rekeyed, or this Child SA is on its way out
                // (we rekeyed it already): the peer retries later, or finds it gone.
                refuse(self, notify::TEMPORARY_FAILURE, vec![], rng);
                self.log(tracing::Level::INFO, format!("child {name}: a rekey of a Child SA that is being rekeyed or deleted (or of an IKE SA being rekeyed): answered TEMPORARY_FAILURE"));
                return;
            }
            let Some(idx) = self.cfg.children.iter().position(|c| c.name == name) else {
                refuse(self, notify::CHILD_SA_NOT_FOUND, vec![], rng);
                self.ignored(format!("a rekey of Child SA {name}, no longer configured"));
                return;
            };
            only = Some((idx, old));
        }
        let ke = KeOffer::Ke(ke_of(p).map(|(g, _)| g).and_then(Group::from_iana));
        let mut nr = vec![0u8; 32];
        rng.fill(&mut nr);
        let (out, sa) = match self.respond_child_sa(now, &ni, &nr, p, ke, only, rng, spis) {
            Ok(x) => x,
            Err(out) => {
                self.answer(exchange::CREATE_CHILD_SA, mid, local, remote, &out, rng);
                return;
            }
        };
        // §2.8.1: our own rekey of it is out: a collision, decided by this exchange's
        // nonces when ours is answered.
        if let Some((_, old)) = only {
            let ours_out = match self.out.as_ref().map(|o| &o.req) {
                Some(Req::CreateChild { req, .. }) => self
                    .book
                    .pending
                    .iter()
                    .any(|x| x.new_spi == req.inbound_spi && x.rekey_of == Some(old)),
                _ => false,
            } || self
                .book
                .followup
                .as_ref()
                .is_some_and(|f| f.done.pend.rekey_of == Some(old));
            let new = match (&sa, self.book.peer_followups.last()) {
                (Some(sa), _) => Some(sa.inbound_spi),
                (None, Some(f)) => Some(f.inbound_spi),
                (None, None) => None,
            };
            if let (true, Some(new)) = (ours_out, new) {
                self.book.peer_rekeys.push(PeerRekey {
                    old,
                    new,
                    low_nonce: ni.as_slice().min(nr.as_slice()).to_vec(),
                });
            }
        }
        if let Some(sa) = sa {
            self.peer_child_up(now, sa, only);
        }
        self.answer(exchange::CREATE_CHILD_SA, mid, local, remote, &out, rng);
    }

    /// Responder: announce the peer's new Child SA (a rekey's: inbound first, before our
    /// answer leaves, outbound once the initiator deleted the old SA, §2.8).
    fn peer_child_up(&mut self, now: u64, sa: ChildSa, only: Option<(usize, u32)>) {
        match only {
            None => self.events.push_back(Event::ChildUp(sa)),
            Some((_, old)) => {
                let new = sa.inbound_spi;
                self.events.push_back(Event::ChildRekeyed {
                    replaces: old,
                    new: sa,
                    outbound_now: false,
                });
                self.book.retiring.push(Retiring {
                    inbound_spi: old,
                    successor: Some(new),
                    deleting: false,
                    deadline: Some(now + REKEY_DELETE_WAIT_MS),
                });
            }
        }
    }

    // ---- IKE_FOLLOWUP_KE (RFC 9370 §2.2.4) --------------------------------------------

    /// Initiator: the next IKE_FOLLOWUP_KE request, SK{N(ADDITIONAL_KEY_EXCHANGE, link),
    /// KEi(n)}. `None` if there is nothing to follow up (any more).
    pub(super) fn followup_request(&mut self, rng: &mut dyn Random) -> Option<Vec<Payload>> {
        if self.ike_followup_ours() {
            return self.ike_followup_request(rng);
        }
        let f = self.book.followup.as_mut()?;
        followup_payloads(&f.remaining, &f.link, &mut f.kem, rng)
    }

    /// Initiator: our followup `f` failed: the Child SA does not come, and the responder's
    /// half-made one goes.
    fn followup_failed(&mut self, f: Followup, why: String) {
        let name = self
            .cfg
            .children
            .get(f.done.req.child)
            .map_or_else(|| self.cfg.name.clone(), |c| c.name.clone());
        self.child_failed(name, IkeError::AddKe { why });
        self.book.unused(&f.done.pend);
        if matches!(self.state, IkeState::Established { .. }) {
            self.queue
                .push_back(Queued::DeleteChild(f.done.req.inbound_spi));
        }
    }

    /// Initiator: the answer to our IKE_FOLLOWUP_KE, SK{KEr(n)[, N(ADDITIONAL_KEY_EXCHANGE,
    /// link)]}: the next one, or the Child SA's keys after the last.
    pub(super) fn on_followup_response(&mut self, now: u64, p: &[Payload], rng: &mut dyn Random) {
        if self.ike_followup_ours() {
            self.report_unused(
                "IKE_FOLLOWUP_KE",
                p,
                &[payload::KE],
                &[notify::ADDITIONAL_KEY_EXCHANGE],
            );
            self.on_ike_followup_response(now, p, rng);
            return;
        }
        let Some(mut f) = self.book.followup.take() else {
            self.ignored(
                "an IKE_FOLLOWUP_KE answer with no additional key exchange of ours under way"
                    .into(),
            );
            return;
        };
        if !matches!(self.state, IkeState::Established { .. }) {
            self.ignored("an IKE_FOLLOWUP_KE answer while the IKE SA is going away".into());
            return;
        }
        self.report_unused(
            "IKE_FOLLOWUP_KE",
            p,
            &[payload::KE],
            &[notify::ADDITIONAL_KEY_EXCHANGE],
        );
        let (Some(m), Some(k)) = (f.remaining.first().copied(), f.kem.take()) else {
            self.followup_failed(f, "our additional key exchange state was lost".into());
            return;
        };
        if let Some(e) = error_notify(p) {
            let why = format!(
                "the responder refused our IKE_FOLLOWUP_KE ({}) with {}",
                m.name(),
                notify::name(e)
            );
            self.followup_failed(f, why);
            return;
        }
        let Some((_, data)) = ke_of(p).filter(|(id, _)| *id == m.iana()) else {
            let why = format!(
                "the responder's IKE_FOLLOWUP_KE answer has no KE payload for {}",
                m.name()
            );
            self.followup_failed(f, why);
            return;
        };
        let secret = match k.finish(data) {
            Ok(s) => s,
            Err(e) => {
                let why = format!("{}: {e}", m.name());
                self.followup_failed(f, why);
                return;
            }
        };
        f.secrets.push(secret);
        f.remaining.remove(0);
        if f.remaining.is_empty() {
            let Followup { done, secrets, .. } = f;
            self.finish_create_child(now, done, secrets, rng);
            return;
        }
        match find_notify(p, notify::ADDITIONAL_KEY_EXCHANGE) {
            Some(n) => {
                f.link = n.data.clone();
                self.book.followup = Some(f);
                self.queue.push_front(Queued::Followup);
            }
            None => {
                let why = "the responder sent no ADDITIONAL_KEY_EXCHANGE link for the next additional key exchange".to_string();
                self.followup_failed(f, why);
            }
        }
    }

    /// Responder: an IKE_FOLLOWUP_KE request, SK{N(ADDITIONAL_KEY_EXCHANGE, link), KEi(n)}.
    pub(super) fn on_followup_request(
        &mut self,
        now: u64,
        mid: u32,
        local: SocketAddr,
        remote: SocketAddr,
        p: &[Payload],
        rng: &mut dyn Random,
    ) {
        self.report_unused(
            "IKE_FOLLOWUP_KE",
            p,
            &[payload::KE],
            &[notify::ADDITIONAL_KEY_EXCHANGE],
        );
        if self.on_ike_followup_request(now, mid, local, remote, p, rng) {
            return;
        }
        let link = find_notify(p, notify::ADDITIONAL_KEY_EXCHANGE).map(|n| n.data.clone());
        let Some(i) = link.and_then(|l| self.book.peer_followups.iter().position(|f| f.link == l))
        else {
            // RFC 9370 §2.2.4: a link we do not know.
            self.answer(
                exchange::IKE_FOLLOWUP_KE,
                mid,
                local,
                remote,
                &[notify_payload(notify::STATE_NOT_FOUND, vec![])],
                rng,
            );
            self.ignored("an IKE_FOLLOWUP_KE naming no additional key exchange of ours: answered STATE_NOT_FOUND".into());
            return;
        };
        let mut f = self.book.peer_followups.remove(i);
        let name = self
            .cfg
            .children
            .get(f.choice.child)
            .map_or_else(|| self.cfg.name.clone(), |c| c.name.clone());
        let Some(m) = f.remaining.first().copied() else {
            return;
        };
        let reply = ke_of(p)
            .filter(|(id, _)| *id == m.iana())
            .ok_or_else(|| {
                format!(
                    "the initiator's IKE_FOLLOWUP_KE has no KE payload for {}, the method chosen",
                    m.name()
                )
            })
            .and_then(|(_, d)| m.respond(d, rng).map_err(|e| format!("{}: {e}", m.name())));
        let (data, secret) = match reply {
            Ok(x) => x,
            Err(why) => {
                self.answer(
                    exchange::IKE_FOLLOWUP_KE,
                    mid,
                    local,
                    remote,
                    &[notify_payload(notify::INVALID_SYNTAX, vec![])],
                    rng,
                );
                self.child_failed(name, IkeError::AddKe { why });
                return;
            }
        };
        f.secrets.push(secret);
        f.remaining.remove(0);
        let mut out = vec![Payload::Ke {
            group: m.iana(),
            data,
        }];
        if !f.remaining.is_empty() {
            let link = self.new_followup_link(rng);
            out.push(notify_payload(
                notify::ADDITIONAL_KEY_EXCHANGE,
                link.clone(),
            ));
            f.link = link;
            self.book.peer_followups.push(f);
            self.answer(exchange::IKE_FOLLOWUP_KE, mid, local, remote, &out, rng);
            return;
        }
        let PeerFollowup {
            secrets,
            ni,
            nr,
            choice,
            only,
            inbound_spi,
            ..
        } = f;
        // The Child SA the peer rekeys may have gone meanwhile (its Delete crossed).
        let only = only.filter(|(_, old)| self.children.iter().any(|c| c.inbound_spi == *old));
        if let Some(sa) =
            self.peer_child_keyed(now, rng, choice, only, inbound_spi, &ni, &nr, &secrets)
        {
            // Inbound first, before our last answer leaves (§2.8).
            self.peer_child_up(now, sa, only);
        }
        self.answer(exchange::IKE_FOLLOWUP_KE, mid, local, remote, &out, rng);
    }

    /// The peer deleted the Child SA with outbound SPI `outb` while its additional key
    /// exchanges were unfinished: forget them. False if there were none.
    pub(super) fn drop_peer_followup(&mut self, outb: u32) -> bool {
        let Some(i) = self
            .book
            .peer_followups
            .iter()
            .position(|f| f.choice.peer_spi == outb)
        else {
            return false;
        };
        let f = self.book.peer_followups.remove(i);
        let name = self
            .cfg
            .children
            .get(f.choice.child)
            .map_or_else(|| self.cfg.name.clone(), |c| c.name.clone());
        self.child_failed(
            name,
            IkeError::AddKe {
                why: format!(
                    "the initiator deleted the Child SA (our inbound SPI {:#010x}) before its additional key exchanges (IKE_FOLLOWUP_KE) finished",
                    f.inbound_spi
                ),
            },
        );
        true
    }

    /// Our Delete of a Child SA was answered.
    pub(super) fn on_delete_child_answer(&mut self, inbound_spi: u32) {
        if self.book.retiring(inbound_spi).is_some() {
            self.child_gone(inbound_spi, false, true);
        } else {
            self.log(
                tracing::Level::DEBUG,
                format!("the peer confirmed the delete of Child SA {inbound_spi:#010x}"),
            );
        }
    }

    /// The Child SA with this inbound SPI is gone: out of `children` and the book, with its
    /// ChildDown. False if we had no such Child SA.
    pub(super) fn child_gone(&mut self, inbound_spi: u32, by_peer: bool, rekeyed: bool) -> bool {
        let Some(i) = self
            .children
            .iter()
            .position(|c| c.inbound_spi == inbound_spi)
        else {
            return false;
        };
        let c = self.children.remove(i);
        let replaced = self.book.take_retiring(inbound_spi).is_some();
        self.book.peer_rekeys.retain(|r| r.old != inbound_spi);
        // It can no longer be anyone's successor. An old SA that waited for it:
        // - if it went as a live SA (the successor only we held, a Delete from the peer),
        //   the old one carries on as the live one (its own timers apply);
        // - if it went replaced in turn (rekeyed, or on its way out), the old one is two
        //   generations behind: the peer moved on long ago and its Delete of it was lost
        //   (sent on an IKE SA rekeyed meanwhile, say). We delete it ourselves. Kept as
        //   live, it was rekeyed as a second chain for the same child, for good (seeded
        //   chaos, control/tests/it/daemon_chaos.rs).
        let (mut stale, mut live_again) = (Vec::new(), Vec::new());
        for r in &mut self.book.retiring {
            if r.successor != Some(inbound_spi) {
                continue;
            }
            r.successor = None;
            match (r.deleting, replaced) {
                (true, _) => {} // our Delete of it is out already
                (false, true) => {
                    r.deleting = true;
                    r.deadline = None;
                    stale.push(r.inbound_spi);
                }
                (false, false) => live_again.push(r.inbound_spi),
            }
        }
        self.book
            .retiring
            .retain(|r| !live_again.contains(&r.inbound_spi));
        for old in stale {
            self.log(
                tracing::Level::INFO,
                format!("Child SA {old:#010x} waited for the peer's Delete while its successor {inbound_spi:#010x} was itself replaced: deleting it ourselves"),
            );
            self.queue.push_back(Queued::DeleteChild(old));
        }
        self.events.push_back(Event::ChildDown {
            name: c.name,
            inbound_spi: c.inbound_spi,
            outbound_spi: c.outbound_spi,
            by_peer,
            rekeyed,
        });
        true
    }

    /// The peer deleted the Child SA with this inbound SPI on the IKE SA this one replaced
    /// ([`Event::MovedChildDeleted`]): as if on this one. False if it is not here.
    pub fn peer_deleted_moved_child(&mut self, inbound_spi: u32) -> bool {
        if !self.children.iter().any(|c| c.inbound_spi == inbound_spi) {
            return false;
        }
        self.peer_deleted_child(inbound_spi);
        true
    }

    /// The peer deleted our Child SA with this inbound SPI (§1.4.1): a rekey's old SA
    /// (switch outbound to its successor first), a redundant one, or a plain delete.
    pub(super) fn peer_deleted_child(&mut self, inbound_spi: u32) {
        let retiring = self.book.retiring(inbound_spi).copied();
        let is_successor = self
            .book
            .retiring
            .iter()
            .any(|r| r.successor == Some(inbound_spi));
        if let Some(r) = retiring {
            if let Some(new) = r.successor {
                if let Some(c) = self.children.iter().find(|c| c.inbound_spi == new) {
                    let name = c.name.clone();
                    self.events.push_back(Event::ChildOutbound {
                        name,
                        inbound_spi: new,
                    });
                }
            }
            if r.deleting {
                // Our Delete of it is queued or out: no need to send it any more.
                self.queue
                    .retain(|q| *q != Queued::DeleteChild(inbound_spi));
            }
        }
        self.child_gone(inbound_spi, true, retiring.is_some() || is_successor);
    }

    // ---- Child SA lifetimes and rekeying ----------------------------------------------

    /// The earliest Child SA rekey, expiry or rekey fallback due.
    pub(super) fn child_deadline(&self) -> Option<u64> {
        if !matches!(self.state, IkeState::Established { .. }) {
            return None;
        }
        let mut t: Option<u64> = None;
        let mut at = |x: u64| t = Some(t.map_or(x, |y| y.min(x)));
        for c in &self.children {
            let retiring = self.book.retiring(c.inbound_spi);
            if let (Some(r), None) = (c.rekey_at, retiring) {
                if !self.book.rekeying(c.inbound_spi) {
                    at(r);
                }
            }
            match retiring {
                Some(r) if r.deleting => {}
                Some(r) => {
                    if let Some(d) = r.deadline.into_iter().chain(c.expire_at).min() {
                        at(d);
                    }
                }
                None => {
                    if let Some(e) = c.expire_at {
                        at(e);
                    }
                }
            }
        }
        t
    }

    /// Start the rekeys and expiries that are due, and the rekey responder's fallback.
    pub(super) fn child_timers(
        &mut self,
        now: u64,
        rng: &mut dyn Random,
        spis: &mut dyn SpiAllocator,
    ) {
        if !matches!(self.state, IkeState::Established { .. }) {
            return;
        }
        // Hard expiry first: an SA past its life is not rekeyed.
        let expired: Vec<u32> = self
            .children
            .iter()
            .filter(|c| c.expire_at.is_some_and(|e| e <= now))
            .filter(|c| self.book.retiring(c.inbound_spi).is_none())
            .map(|c| c.inbound_spi)
            .collect();
        for spi in expired {
            self.log(
                tracing::Level::INFO,
                format!("Child SA {spi:#010x} reached its life_time: deleting it"),
            );
            self.expire_child(now, spi, rng);
        }
        // The peer rekeyed and has not deleted the old SA in time (or the old one expires):
        // switch anyway and delete it ourselves. A redundant SA the peer did not delete:
        // delete it.
        let late: Vec<Retiring> = self
            .book
            .retiring
            .iter()
            .filter(|r| !r.deleting)
            .filter(|r| {
                let exp = self
                    .children
                    .iter()
                    .find(|c| c.inbound_spi == r.inbound_spi)
                    .and_then(|c| c.expire_at);
                r.deadline
                    .into_iter()
                    .chain(exp)
                    .min()
                    .is_some_and(|d| d <= now)
            })
            .copied()
            .collect();
        for r in late {
            if let Some(new) = r.successor {
                if let Some(c) = self.children.iter().find(|c| c.inbound_spi == new) {
                    let name = c.name.clone();
                    self.log(tracing::Level::INFO, format!("child {name}: the peer did not delete the Child SA it rekeyed: switching to the new one and deleting the old one ourselves"));
                    self.events.push_back(Event::ChildOutbound {
                        name,
                        inbound_spi: new,
                    });
                }
            }
            if let Some(x) = self.book.retiring_mut(r.inbound_spi) {
                x.deleting = true;
                x.successor = None;
                x.deadline = None;
            }
            self.queue.push_back(Queued::DeleteChild(r.inbound_spi));
        }
        let due: Vec<u32> = self
            .children
            .iter()
            .filter(|c| c.rekey_at.is_some_and(|r| r <= now))
            .filter(|c| self.book.retiring(c.inbound_spi).is_none())
            .filter(|c| !self.book.rekeying(c.inbound_spi))
            .map(|c| c.inbound_spi)
            .collect();
        for spi in due {
            self.log(
                tracing::Level::INFO,
                format!("Child SA {spi:#010x} reached its rekey_time: rekeying it"),
            );
            // Cannot fail: established, and the SA is ours.
            let _ = self.rekey_child(now, spi, rng, spis);
        }
        self.pump(now, rng);
    }

    /// Rekey the Child SA whose inbound SPI is `inbound_spi` now (the dataplane reached its
    /// soft byte/packet limit or its sequence numbers run short). Nothing if a rekey of it is
    /// already under way, or it was replaced already.
    pub fn rekey_child(
        &mut self,
        now: u64,
        inbound_spi: u32,
        rng: &mut dyn Random,
        spis: &mut dyn SpiAllocator,
    ) -> Result<(), IkeError> {
        if !matches!(self.state, IkeState::Established { .. }) {
            return Err(IkeError::NotEstablished);
        }
        let Some(c) = self
            .children
            .iter_mut()
            .find(|c| c.inbound_spi == inbound_spi)
        else {
            return Err(IkeError::UnknownChildSa { inbound_spi });
        };
        // Started: the timer is spent (set again if the peer asks us to retry).
        c.rekey_at = None;
        let name = c.name.clone();
        if self.book.rekeying(inbound_spi) || self.book.retiring(inbound_spi).is_some() {
            return Ok(());
        }
        let Some(child) = self.cfg.children.iter().position(|x| x.name == name) else {
            return Err(IkeError::UnknownChildSa { inbound_spi });
        };
        let new_spi = self.book.spare.pop().unwrap_or_else(|| spis.alloc_spi());
        self.book.pending.push(Pending {
            new_spi,
            rekey_of: Some(inbound_spi),
            replaces: None,
            group: None,
            ke_retried: false,
            dh: None,
        });
        self.queue.push_back(Queued::CreateChild(ChildRequest {
            child,
            inbound_spi: new_spi,
        }));
        self.pump(now, rng);
        Ok(())
    }

    /// The Child SA reached its hard limit (life_time here, bytes or packets in the
    /// dataplane): delete it (ChildDown follows; the daemon negotiates a fresh one if the
    /// child is still wanted). An old SA that a rekey replaced goes as rekeyed, its
    /// successor taking the traffic.
    pub fn expire_child(&mut self, now: u64, inbound_spi: u32, rng: &mut dyn Random) {
        match self.book.retiring(inbound_spi).copied() {
            Some(r) if r.deleting => {} // already on its way out
            Some(r) => {
                if let Some(new) = r.successor {
                    if let Some(c) = self.children.iter().find(|c| c.inbound_spi == new) {
                        let name = c.name.clone();
                        self.events.push_back(Event::ChildOutbound {
                            name,
                            inbound_spi: new,
                        });
                    }
                }
                self.child_gone(inbound_spi, false, true);
                self.send_child_delete(now, inbound_spi, rng);
            }
            None => {
                if self.child_gone(inbound_spi, false, false) {
                    self.send_child_delete(now, inbound_spi, rng);
                } else {
                    self.ignored(format!(
                        "expire_child: no Child SA with inbound SPI {inbound_spi:#010x}"
                    ));
                }
            }
        }
    }

    fn send_child_delete(&mut self, now: u64, inbound_spi: u32, rng: &mut dyn Random) {
        if matches!(self.state, IkeState::Established { .. }) {
            self.queue.push_back(Queued::DeleteChild(inbound_spi));
            self.pump(now, rng);
        }
    }

    /// An IKE SA rekey (§1.3.2, §2.8) moves this SA's Child SAs to `to` (no ChildDown),
    /// with their lifecycle: the SAs on their way out (deadlines kept), our queued Child SA
    /// requests and Deletes (they go out on `to`, in order), and the spare SPIs. A request
    /// of ours still in flight here is sent again on `to` (a Delete, a new Child SA) or
    /// restarted there (a rekey: due at once).
    #[allow(dead_code)] // for rekey_ike (issue 12, ike-rekey stream)
    pub(super) fn move_children(&mut self, now: u64, to: &mut IkeSa) {
        let mut book = std::mem::take(&mut self.book);
        let mut moved = VecDeque::new();
        self.queue.retain(|q| match q {
            Queued::CreateChild(_) | Queued::DeleteChild(_) => {
                moved.push_back(*q);
                false
            }
            _ => true,
        });
        // What was in flight here: its answer will find this SA going away.
        match self.out.as_ref().map(|o| o.req.clone()) {
            Some(Req::CreateChild { req, .. }) => {
                let rekey = book
                    .pending
                    .iter()
                    .position(|p| p.new_spi == req.inbound_spi && p.rekey_of.is_some());
                match rekey {
                    Some(i) => {
                        let p = book.pending.remove(i);
                        if let Some(c) = self
                            .children
                            .iter_mut()
                            .find(|c| Some(c.inbound_spi) == p.rekey_of)
                        {
                            c.rekey_at = Some(now);
                        }
                        book.unused(&p);
                    }
                    None => moved.push_front(Queued::CreateChild(req)),
                }
            }
            Some(Req::DeleteChild { inbound_spi }) => {
                moved.push_front(Queued::DeleteChild(inbound_spi))
            }
            // Nothing in flight, or a request about the IKE SA itself (its rekey, Delete,
            // DPD): it stays with this SA and concerns no Child SA.
            _ => {} // nothing to move
        }
        book.peer_rekeys.clear();
        // RFC 9370 §2.2.4: additional key exchanges belong to the IKE SA they started on;
        // with it rekeyed they cannot finish (the peer restarts its own, we redo ours).
        if let Some(f) = book.followup.take() {
            if let Some(c) = self
                .children
                .iter_mut()
                .find(|c| Some(c.inbound_spi) == f.done.pend.rekey_of)
            {
                c.rekey_at = Some(now);
            }
            let why = "the IKE SA was rekeyed while the Child SA's additional key exchanges (IKE_FOLLOWUP_KE) ran: the Child SA is negotiated again".to_string();
            self.followup_failed(f, why);
        }
        for f in std::mem::take(&mut book.peer_followups) {
            let name = self
                .cfg
                .children
                .get(f.choice.child)
                .map_or_else(|| self.cfg.name.clone(), |c| c.name.clone());
            self.child_failed(
                name,
                IkeError::AddKe {
                    why: "the IKE SA was rekeyed while the peer's additional key exchanges (IKE_FOLLOWUP_KE) for a Child SA ran: that Child SA was dropped".into(),
                },
            );
        }
        to.queue.extend(moved);
        self.book.moved = self
            .children
            .iter()
            .map(|c| (c.outbound_spi, c.inbound_spi))
            .collect();
        to.children.append(&mut self.children);
        to.book.pending.append(&mut book.pending);
        to.book.retiring.append(&mut book.retiring);
        to.book.spare.append(&mut book.spare);
    }

    /// Inbound SPIs this IKE SA drew from the allocator for Child SA rekeys that did not
    /// happen and holds for its next rekeys; the daemon releases them when it drops the SA.
    pub fn unused_spis(&self) -> &[u32] {
        &self.book.spare
    }

    /// Entries of the Child SA book (tests: no growth over many rekeys).
    #[doc(hidden)]
    pub fn child_book_len(&self) -> usize {
        self.book.len() + self.queue.len()
    }
}

/// The plain-words error for a CREATE_CHILD_SA that only the key exchange keeps apart.
fn pfs_mismatch(c: &ChildCfg, offered: &[Proposal]) -> IkeError {
    let mut theirs: Vec<Group> = Vec::new();
    let mut their_none = false;
    for p in offered {
        let ids: Vec<u16> = p
            .transforms
            .iter()
            .filter(|t| t.kind == transform::KE)
            .map(|t| t.id)
            .collect();
        their_none |= ids.is_empty() || ids.contains(&0);
        for g in ids.into_iter().filter_map(Group::from_iana) {
            if !theirs.contains(&g) {
                theirs.push(g);
            }
        }
    }
    let ours = child_groups(c);
    if !theirs.is_empty() && !their_none {
        IkeError::PfsPeerWants {
            child: c.name.clone(),
            theirs: group_names(&theirs),
            first: theirs[0].name().into(),
            ours: if ours.is_empty() {
                "no key exchange group".into()
            } else {
                group_names(&ours)
            },
        }
    } else {
        IkeError::PfsWeRequire {
            child: c.name.clone(),
            ours: group_names(&ours),
            first: ours.first().map_or("", |g| g.name()).into(),
        }
    }
}

/// RFC 9370 §2.2.4: an IKE_FOLLOWUP_KE request for the next of `remaining`,
/// SK{N(ADDITIONAL_KEY_EXCHANGE, link), KEi(n)}; our half is kept in `kem`. The same for a
/// Child SA's and an IKE SA rekey's additional exchanges.
pub(super) fn followup_payloads(
    remaining: &[Method],
    link: &[u8],
    kem: &mut Option<kem::Pending>,
    rng: &mut dyn Random,
) -> Option<Vec<Payload>> {
    let m = *remaining.first()?;
    let k = m.initiate(rng);
    let out = vec![
        notify_payload(notify::ADDITIONAL_KEY_EXCHANGE, link.to_vec()),
        Payload::Ke {
            group: m.iana(),
            data: k.public().to_vec(),
        },
    ];
    *kem = Some(k);
    Some(out)
}
