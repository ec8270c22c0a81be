//! IKE SA rekeying (RFC 7296 §1.3.2, §2.8, §2.8.1, §2.18, §2.25) and the IKE SA's lifetime
//! (swanctl `rekey_time`, `over_time`, `rand_time`).
//!
//! The sequence. The rekey initiator sends CREATE_CHILD_SA { SA (our IKE proposals, SPI =
//! its SPI of the new SA), Ni, KEi }; the responder answers { SA (the chosen one, its new
//! SPI), Nr, KEr }. Both derive the new keys from the old SK_d (§2.18) and make a new
//! [`IkeSa`]: fresh SPIs, message IDs from 0, the role of whoever started the rekey, this
//! SA's connection, addresses, NAT state and peer, and this SA's Child SAs (moved: no
//! ChildDown, their ESP SAs are untouched) and queued requests. The old SA emits
//! [`Event::NewIkeSa`] and turns to `Deleting`: the rekey initiator deletes it, the
//! responder waits for that Delete (and deletes it itself if it does not come).
//!
//! With additional key exchanges (RFC 9370 §2.2.4) the responder's answer also carries
//! N(ADDITIONAL_KEY_EXCHANGE, link), and one IKE_FOLLOWUP_KE per chosen ADDKE follows
//! (create_child.rs routes them here by link); the new SA and its keys (SKEYSEED =
//! prf(SK_d(old), SK(0) | Ni | Nr | SK(1) | ... | SK(n))) come after the last.
//!
//! The responder holds a new SA back while a request of its own is in flight on the old
//! one (the window is per direction, §2.3): the answer to that request (say, a Child SA the
//! peer made) still belongs to the old SA and moves with it.
//!
//! Collisions (§2.8.1): when both sides start a rekey within a round trip, both exchanges
//! complete and two new IKE SAs exist on each side. The one whose exchange has the lowest of
//! the four nonces is redundant: its initiator deletes it, it gets no children, and the
//! initiator of the other (the survivor) deletes the old SA. Both sides know all four
//! nonces, so both pick the same survivor.

use super::super::dh::{Group, KeyPair};
use super::super::kem::{self, Method};
use super::super::keys::{derive_rekeyed_ike_keys_multi, KeyLengths, Secret};
use super::super::lifetime::spread;
use super::super::proposal::{describe, IkeProposal, IkeSuite, PROTO_IKE};
use super::super::wire::{exchange, payload, Payload};
use super::init::{keypair, sk_keys};
use super::{
    error_notify, find_notify, first, notify, notify_payload, random_spi, Event, IkeError, IkeSa,
    IkeState, Queued, Random, Role, SkKeys,
};
use std::net::SocketAddr;

/// What an IKE SA rekey acts on; anything else is reported.
const REKEY_PAYLOADS: &[u8] = &[payload::SA, payload::NONCE, payload::KE];

/// A refused rekey is tried again after 2 s plus up to 8 s at random (§2.25: both peers
/// retrying in lockstep would collide again).
const RETRY_MIN_MS: u64 = 2_000;
const RETRY_SPREAD_MS: u64 = 8_000;

/// The IKE SA's lifetime and rekeying, a field of [`IkeSa`].
#[derive(Default)]
pub(super) struct IkeRekey {
    /// When this IKE SA is due for a rekey and when it expires (`None`: never).
    rekey_at: Option<u64>,
    expire_at: Option<u64>,
    /// How many rekeys its line has been through.
    rekeys: u32,
    /// Our rekey was started (it is due, or `rekey_ike` was called).
    tried: bool,
    /// Start our rekey again then (the peer refused it or answered it badly).
    retry_at: Option<u64>,
    /// The group the peer asked for with INVALID_KE_PAYLOAD.
    group: Option<Group>,
    /// Refusals of our rekey in a row: the first is logged at warn level, the rest at
    /// debug (a peer that refuses keeps refusing).
    refusals: u32,
    /// Why our last rekey failed, or why we refused the peer's, in plain words.
    last_error: Option<IkeError>,
    /// Our rekey request on the wire.
    ours: Option<Box<Ours>>,
    /// The peer's rekey, answered, held until our own request in flight is answered.
    theirs: Option<Made>,
    /// The old SA that the peer rekeyed, or a redundant SA the peer made: delete it
    /// ourselves if the peer's Delete has not come by then.
    await_delete_until: Option<u64>,
    /// Another IKE SA carries on for this one (see [`IkeSa::superseded`]).
    superseded: bool,
    /// Our rekey, answered, while its additional key exchanges run (RFC 9370 §2.2.4).
    our_followup: Option<Box<IkeFollowup>>,
    /// The peer's rekey, answered, while its additional key exchanges run.
    peer_followup: Option<Box<IkeFollowup>>,
}

/// An IKE SA rekey between its CREATE_CHILD_SA and its last IKE_FOLLOWUP_KE (RFC 9370
/// §2.2.4): what the new SA's keys need.
pub(super) struct IkeFollowup {
    suite: IkeSuite,
    /// (SPIi, SPIr) of the new SA.
    spis: (u64, u64),
    ni: Vec<u8>,
    nr: Vec<u8>,
    /// SK(0), SK(1), ... so far.
    secrets: Vec<Secret>,
    /// The methods still to run, in ADDKE type order.
    remaining: Vec<Method>,
    /// The link for the next IKE_FOLLOWUP_KE (the responder's).
    link: Vec<u8>,
    /// Initiator: our half of the exchange in flight.
    kem: Option<kem::Pending>,
}

/// Our rekey request in flight: what its answer needs.
struct Ours {
    /// Our SPI of the new IKE SA (SPIi).
    spi: u64,
    ni: Vec<u8>,
    dh: KeyPair,
}

/// A new IKE SA made by a rekey exchange, with that exchange's nonces (§2.8.1).
struct Made {
    sa: Box<IkeSa>,
    ni: Vec<u8>,
    nr: Vec<u8>,
}

impl Made {
    /// The lowest of the exchange's nonces; octet by octet, a prefix being lower (§2.8.1),
    /// which is how slices compare.
    fn lowest(&self) -> &[u8] {
        self.ni.as_slice().min(self.nr.as_slice())
    }
}

impl IkeSa {
    // ---- what the daemon reads -----------------------------------------------------

    /// How many rekeys this IKE SA's line has been through (0 for one from IKE_AUTH).
    pub fn rekeys(&self) -> u32 {
        self.ike_rk.rekeys
    }
    /// When this IKE SA is due for a rekey (daemon clock, ms); `None`: never.
    pub fn rekey_at(&self) -> Option<u64> {
        self.ike_rk.rekey_at
    }
    /// When this IKE SA expires if no rekey completes by then; `None`: never.
    pub fn expire_at(&self) -> Option<u64> {
        self.ike_rk.expire_at
    }
    /// This SA was replaced by a rekey (it emitted [`Event::NewIkeSa`] with its
    /// successor), or is the redundant SA of a rekey collision, or was made by a rekey that
    /// completed while its predecessor was being deleted: its `Closed` (by either side)
    /// ends nothing but itself, so no close_action, no reconnect. Its Child SAs, if any,
    /// moved to the successor.
    pub fn superseded(&self) -> bool {
        self.ike_rk.superseded
    }
    /// Why our last IKE SA rekey failed (refused, or answered badly; it is tried again), or
    /// why we refused the peer's, in plain words.
    pub fn ike_rekey_error(&self) -> Option<&IkeError> {
        self.ike_rk.last_error.as_ref()
    }

    // ---- lifetime ------------------------------------------------------------------

    /// The IKE SA came up (IKE_AUTH, or a rekey made it) at `now`: schedule its rekey and
    /// hard expiry from the connection's lifetime, with the random spread.
    ///
    /// `reauth_time` (make-before-break reauthentication, §2.8.3) is not run here: the
    /// schedule takes the earlier of rekey_time and reauth_time, and at that time this SA
    /// rekeys. A reauthentication makes a new IKE SA from IKE_SA_INIT with the
    /// configuration and credentials, recreates the children and then deletes this SA:
    /// that is the daemon's job (it owns connections), which it does from `established_at`
    /// and the connection's `reauth_ms`.
    pub(super) fn schedule_ike_lifetime(&mut self, now: u64, rng: &mut dyn Random) {
        let t = self.cfg.lifetime.schedule(now, rng);
        let r = &mut self.ike_rk;
        r.rekey_at = t.rekey_at;
        r.expire_at = t.expire_at;
        r.tried = false;
        r.retry_at = None;
    }

    /// When the IKE SA's own rekey or expiry is due.
    pub(super) fn ike_deadline(&self) -> Option<u64> {
        let r = &self.ike_rk;
        let mut due = vec![];
        due.extend(r.await_delete_until);
        if matches!(self.state, IkeState::Established { .. }) {
            due.extend(r.expire_at);
            // Nothing to start while a rekey is under way (a deadline in the past would
            // have the daemon call us in a loop).
            if !self.ike_rekeying() {
                due.extend(if r.tried { r.retry_at } else { r.rekey_at });
            }
        }
        due.into_iter().min()
    }

    /// Start the IKE SA rekey, or close an SA past its hard limit, when due.
    pub(super) fn ike_timers(&mut self, now: u64, rng: &mut dyn Random) {
        if let Some(t) = self.ike_rk.await_delete_until {
            if now >= t {
                self.ike_rk.await_delete_until = None;
                self.peer_did_not_delete(now, rng);
            }
        }
        if !matches!(self.state, IkeState::Established { .. }) {
            return;
        }
        if self.ike_rk.expire_at.is_some_and(|t| now >= t) {
            // The rekey did not complete in over_time (peer silent, or refusing): the SA
            // goes, the daemon sets the connection up anew.
            let l = self.cfg.lifetime;
            let base = match (l.rekey_ms, l.reauth_ms) {
                (0, a) | (a, 0) => a,
                (r, a) => r.min(a),
            };
            self.fail(IkeError::Expired {
                rekey_tried: self.ike_rk.tried,
                rekey_ms: base,
                over_ms: l.over_ms,
            });
            return;
        }
        if self.ike_rekeying() {
            return;
        }
        let r = &self.ike_rk;
        let due = if r.tried { r.retry_at } else { r.rekey_at };
        if due.is_some_and(|t| now >= t) {
            if !self.ike_rk.tried {
                self.log(tracing::Level::INFO, "IKE SA rekey due (rekey_time)".into());
            }
            // Established, and no rekey under way: this cannot fail.
            let _ = self.rekey_ike(now, rng);
        }
    }

    /// The peer did not delete an SA it should have: the old SA it rekeyed, or the
    /// redundant one of a collision it made. Delete it ourselves (either side may, §1.4.1).
    fn peer_did_not_delete(&mut self, now: u64, rng: &mut dyn Random) {
        match self.state {
            IkeState::Established { .. } => {
                self.log(
                    tracing::Level::INFO,
                    "the peer did not delete its redundant IKE SA (RFC 7296 §2.8.1); deleting it"
                        .into(),
                );
                self.delete(now, rng);
            }
            IkeState::Deleting { .. } => {
                let queued = self.queue.contains(&Queued::DeleteIke)
                    || self
                        .out
                        .as_ref()
                        .is_some_and(|o| matches!(o.req, super::Req::DeleteIke));
                if !queued {
                    self.log(
                        tracing::Level::INFO,
                        "the peer rekeyed the IKE SA but did not delete the old one; deleting it"
                            .into(),
                    );
                    self.queue.push_back(Queued::DeleteIke);
                    self.pump(now, rng);
                }
            }
            // Still negotiating or already closed: there is no SA to delete.
            _ => {} // nothing to delete
        }
    }

    // ---- rekey, as initiator -------------------------------------------------------

    /// Rekey the IKE SA now (CREATE_CHILD_SA, §1.3.2): a [`Event::NewIkeSa`] follows with
    /// the new SA and this one's Child SAs; this one is deleted. Nothing if a rekey (ours
    /// or the peer's) is already under way.
    pub fn rekey_ike(&mut self, now: u64, rng: &mut dyn Random) -> Result<(), IkeError> {
        if !matches!(self.state, IkeState::Established { .. }) {
            return Err(IkeError::NotEstablished);
        }
        if self.ike_rekeying() {
            return Ok(());
        }
        self.ike_rk.tried = true;
        self.ike_rk.retry_at = None;
        self.queue.push_back(Queued::RekeyIke);
        self.pump(now, rng);
        Ok(())
    }

    /// Our rekey request's payloads, as the window frees (`None`: not to be sent any more).
    pub(super) fn rekey_ike_request(&mut self, rng: &mut dyn Random) -> Option<Vec<Payload>> {
        if !matches!(self.state, IkeState::Established { .. }) || self.ike_rk.theirs.is_some() {
            self.ignored(
                "our queued IKE SA rekey: the IKE SA is going away, or the peer's rekey replaces it"
                    .into(),
            );
            return None;
        }
        // §1.3.2: the KE is for the first group of our first proposal, unless the peer
        // asked for another with INVALID_KE_PAYLOAD.
        let group = self
            .ike_rk
            .group
            .or_else(|| self.cfg.ike.first().and_then(|p| p.groups.first().copied()))
            .unwrap_or(Group::Curve25519);
        let spi = random_spi(rng);
        let mut ni = vec![0u8; 32];
        rng.fill(&mut ni);
        let dh = keypair(group, rng);
        let payloads = vec![
            Payload::Sa(
                // RFC 9370 §2.2.4: with the additional key exchanges, each followed by its
                // twin without them when they are optional.
                IkeProposal::offer(&self.cfg.ike)
                    .iter()
                    .enumerate()
                    .map(|(i, p)| p.to_wire_with_spi(i as u8 + 1, spi))
                    .collect(),
            ),
            Payload::Nonce(ni.clone()),
            Payload::Ke {
                group: group.iana(),
                data: dh.public.clone(),
            },
        ];
        self.log(
            tracing::Level::DEBUG,
            format!("rekeying the IKE SA with {}", group.name()),
        );
        self.ike_rk.ours = Some(Box::new(Ours { spi, ni, dh }));
        Some(payloads)
    }

    /// The answer to our rekey request.
    pub(super) fn on_rekey_ike_response(&mut self, now: u64, p: &[Payload], rng: &mut dyn Random) {
        let Some(ours) = self.ike_rk.ours.take() else {
            self.ignored("an IKE SA rekey answer with no rekey of ours under way".into());
            return;
        };
        self.report_unused("CREATE_CHILD_SA", p, REKEY_PAYLOADS, &[]);
        if let Some(n) = find_notify(p, notify::INVALID_KE_PAYLOAD) {
            // §1.3.2, §1.2: the peer wants another group; once more with it, if we offer it.
            let want = <[u8; 2]>::try_from(n.data.as_slice())
                .ok()
                .map(u16::from_be_bytes);
            let ours_too = want
                .and_then(Group::from_iana)
                .filter(|g| *g != ours.dh.group)
                .filter(|g| self.cfg.ike.iter().any(|x| x.groups.contains(g)));
            if let (Some(g), true) = (ours_too, self.ike_rk.theirs.is_none()) {
                self.log(
                    tracing::Level::INFO,
                    format!(
                        "the peer wants key exchange group {} for the IKE SA rekey; retrying",
                        g.name()
                    ),
                );
                self.ike_rk.group = Some(g);
                if matches!(self.state, IkeState::Established { .. }) {
                    self.queue.push_front(Queued::RekeyIke);
                }
                return;
            }
        }
        if let Some(e) = error_notify(p) {
            self.rekey_refused(now, e, rng);
            return;
        }
        let answer = match self.check_rekey_answer(p, &ours) {
            Ok(a) => a,
            Err(e) => {
                self.rekey_failed(now, e, rng);
                return;
            }
        };
        let (suite, peer_spi, nr, kex) = answer;
        let spis = (ours.spi, peer_spi);
        let sk0 = match ours.dh.shared(&kex) {
            Ok(s) => s,
            Err(e) => {
                self.rekey_failed(now, IkeError::KeyExchange { why: e.to_string() }, rng);
                return;
            }
        };
        let remaining: Vec<Method> = suite.addke.into_iter().flatten().collect();
        let f = IkeFollowup {
            suite,
            spis,
            ni: ours.ni,
            nr,
            secrets: vec![sk0],
            remaining,
            link: vec![],
            kem: None,
        };
        if f.remaining.is_empty() {
            self.finish_our_rekey(now, f, rng);
            return;
        }
        // RFC 9370 §2.2.4: the additional key exchanges follow in IKE_FOLLOWUP_KE.
        let Some(link) = find_notify(p, notify::ADDITIONAL_KEY_EXCHANGE).map(|n| n.data.clone())
        else {
            let e = IkeError::AddKe {
                why: "the responder chose additional key exchanges for the IKE SA rekey but sent no ADDITIONAL_KEY_EXCHANGE link to continue them".into(),
            };
            self.rekey_failed(now, e, rng);
            return;
        };
        self.ike_rk.our_followup = Some(Box::new(IkeFollowup { link, ..f }));
        self.queue.push_front(Queued::Followup);
    }

    /// Our rekey, every key exchange done: the new SA (RFC 9370 §2.2.4 keys).
    fn finish_our_rekey(&mut self, now: u64, f: IkeFollowup, rng: &mut dyn Random) {
        let keys = match self.rekey_keys(f.suite, Role::Initiator, &f.secrets, &f.ni, &f.nr, f.spis)
        {
            Ok(k) => k,
            Err(e) => {
                self.rekey_failed(now, e, rng);
                return;
            }
        };
        let made = Made {
            sa: Box::new(self.rekeyed(Role::Initiator, f.spis, keys, now, rng)),
            ni: f.ni,
            nr: f.nr,
        };
        if matches!(self.state, IkeState::Deleting { .. }) {
            // We delete this SA meanwhile (`delete` while our rekey was out): the peer has
            // the new SA up, so that one goes too.
            self.discard_new(now, made, rng);
            return;
        }
        let theirs = self.ike_rk.theirs.take();
        self.finish_rekey(now, Some(made), theirs, rng);
    }

    /// The responder's answer, checked: the suite, its SPI, Nr and KEr.
    fn check_rekey_answer(
        &self,
        p: &[Payload],
        ours: &Ours,
    ) -> Result<(IkeSuite, u64, Vec<u8>, Vec<u8>), IkeError> {
        let malformed = |what: &str| IkeError::Malformed {
            what: format!("the IKE SA rekey answer {what}"),
        };
        let sa = first!(p, Payload::Sa(s) => s);
        let nr = first!(p, Payload::Nonce(n) => n);
        let ke = first!(p, Payload::Ke { group, data } => (*group, data));
        let (Some(props), Some(nr), Some((group, kex))) = (sa, nr, ke) else {
            return Err(malformed("lacks SA, nonce or KE"));
        };
        // §2.7: the responder picks one of ours, whole.
        let (prop, suite) = match props.as_slice() {
            [one] => (
                one,
                IkeProposal::choose(&self.cfg.ike, std::slice::from_ref(one)).map(|x| x.1),
            ),
            _ => return Err(malformed("does not carry exactly one proposal")),
        };
        let Some(suite) = suite else {
            return Err(IkeError::PeerChoseUnoffered {
                what: "IKE",
                chosen: describe(prop),
            });
        };
        let spi = <[u8; 8]>::try_from(prop.spi.as_slice())
            .ok()
            .map(u64::from_be_bytes)
            .filter(|&s| s != 0)
            .ok_or_else(|| malformed("has no valid 8-octet SPI (§3.3.1)"))?;
        if !(16..=256).contains(&nr.len()) {
            return Err(malformed("has a nonce of bad length (§3.9)"));
        }
        if group != suite.group.iana() || group != ours.dh.group.iana() {
            return Err(malformed(&format!(
                "has a KE for group {group}, not the one offered and chosen ({})",
                ours.dh.group.name()
            )));
        }
        Ok((suite, spi, nr.clone(), kex.clone()))
    }

    /// The peer refused our rekey with an error notify: say so, try again later (the SA
    /// lives on until its hard lifetime).
    fn rekey_refused(&mut self, now: u64, notify: u16, rng: &mut dyn Random) {
        let retry_ms = RETRY_MIN_MS + spread(RETRY_SPREAD_MS, rng);
        let err = IkeError::PeerRefusedIkeRekey {
            notify,
            ours: self.offered_ike(),
            current: self.suite.map(|s| s.to_string()).unwrap_or_default(),
            retry_ms,
        };
        self.rekey_failed_after(now, err, retry_ms);
    }

    fn rekey_failed(&mut self, now: u64, err: IkeError, rng: &mut dyn Random) {
        let retry_ms = RETRY_MIN_MS + spread(RETRY_SPREAD_MS, rng);
        self.rekey_failed_after(now, err, retry_ms);
    }

    fn rekey_failed_after(&mut self, now: u64, err: IkeError, retry_ms: u64) {
        if self.ike_rk.theirs.is_some() {
            // The peer's own rekey, which we answered, replaces this SA: no retry needed.
            self.ignored(format!(
                "our IKE SA rekey failed ({err}); the peer's rekey replaces the SA"
            ));
            return;
        }
        self.ike_rk.refusals += 1;
        if self.ike_rk.refusals == 1 {
            self.log(tracing::Level::WARN, err.to_string());
        } else {
            self.log(
                tracing::Level::DEBUG,
                format!("{err} (refusal {})", self.ike_rk.refusals),
            );
        }
        self.ike_rk.last_error = Some(err);
        if matches!(self.state, IkeState::Established { .. }) {
            self.ike_rk.retry_at = Some(now + retry_ms);
        }
    }

    // ---- rekey, as responder -------------------------------------------------------

    /// The peer's CREATE_CHILD_SA with an IKE proposal: a rekey of this IKE SA (§1.3.2).
    /// Answered as usual even while our own rekey is out (a collision, §2.8.1, §2.25).
    pub(super) fn on_ike_rekey_request(
        &mut self,
        mid: u32,
        local: SocketAddr,
        remote: SocketAddr,
        p: &[Payload],
        rng: &mut dyn Random,
    ) {
        // `on_request` stamped the arrival of this authenticated request.
        let now = self.last_heard;
        if self.ike_rk.theirs.is_some() || self.ike_rk.peer_followup.is_some() {
            // §2.3 lets the peer have one request in flight; this would be a second rekey.
            self.answer_notify(mid, local, remote, notify::TEMPORARY_FAILURE, vec![], rng);
            self.ignored("a second IKE SA rekey from the peer before its first took effect: answered TEMPORARY_FAILURE".into());
            return;
        }
        let sa = first!(p, Payload::Sa(s) => s);
        let ni = first!(p, Payload::Nonce(n) => n).filter(|n| (16..=256).contains(&n.len()));
        let ke = first!(p, Payload::Ke { group, data } => (*group, data));
        let (Some(props), Some(ni), Some((group, kex))) = (sa, ni, ke) else {
            self.answer_notify(mid, local, remote, notify::INVALID_SYNTAX, vec![], rng);
            self.ignored(
                "an IKE SA rekey without SA, a valid nonce or KE: answered INVALID_SYNTAX".into(),
            );
            return;
        };
        let Some((number, suite)) = IkeProposal::choose_for_ke(&self.cfg.ike, props, group) else {
            let err = IkeError::NoIkeRekeyProposal {
                ours: self.offered_ike(),
                theirs: crate::ike::algnames::offered(props, describe),
            };
            self.log(tracing::Level::WARN, err.to_string());
            self.answer_notify(mid, local, remote, notify::NO_PROPOSAL_CHOSEN, vec![], rng);
            self.ike_rk.last_error = Some(err);
            return;
        };
        if suite.group.iana() != group {
            // §1.3.2, §1.2: ask for a KE of the group we chose.
            let want = suite.group.iana().to_be_bytes().to_vec();
            self.answer_notify(mid, local, remote, notify::INVALID_KE_PAYLOAD, want, rng);
            self.ignored(format!(
                "an IKE SA rekey with a KE for group {group}; we chose {}: answered INVALID_KE_PAYLOAD",
                suite.group.name()
            ));
            return;
        }
        let peer_spi = props
            .iter()
            .find(|x| x.number == number && x.protocol == PROTO_IKE)
            .and_then(|x| <[u8; 8]>::try_from(x.spi.as_slice()).ok())
            .map(u64::from_be_bytes)
            .filter(|&s| s != 0);
        let Some(peer_spi) = peer_spi else {
            self.answer_notify(mid, local, remote, notify::INVALID_SYNTAX, vec![], rng);
            self.ignored("an IKE SA rekey whose proposal has no 8-octet SPI (§3.3.1): answered INVALID_SYNTAX".into());
            return;
        };
        let spi = random_spi(rng);
        let mut nr = vec![0u8; 32];
        rng.fill(&mut nr);
        let dh = keypair(suite.group, rng);
        // §2.18: SPIi is the rekey initiator's.
        let spis = (peer_spi, spi);
        let sk0 = match dh.shared(kex) {
            Ok(s) => s,
            Err(e) => {
                self.answer_notify(mid, local, remote, notify::INVALID_SYNTAX, vec![], rng);
                self.ignored(format!(
                    "an IKE SA rekey we cannot key ({e}): answered INVALID_SYNTAX"
                ));
                return;
            }
        };
        let mut out = vec![
            Payload::Sa(vec![suite.to_wire_with_spi(number, spi)]),
            Payload::Nonce(nr.clone()),
            Payload::Ke {
                group: suite.group.iana(),
                data: dh.public.clone(),
            },
        ];
        let f = IkeFollowup {
            suite,
            spis,
            ni: ni.clone(),
            nr,
            secrets: vec![sk0],
            remaining: suite.addke.into_iter().flatten().collect(),
            link: vec![],
            kem: None,
        };
        if !f.remaining.is_empty() {
            // RFC 9370 §2.2.4: the additional key exchanges follow in IKE_FOLLOWUP_KE.
            let mut link = vec![0u8; 8];
            rng.fill(&mut link);
            out.push(notify_payload(
                notify::ADDITIONAL_KEY_EXCHANGE,
                link.clone(),
            ));
            self.answer(exchange::CREATE_CHILD_SA, mid, local, remote, &out, rng);
            self.log(
                tracing::Level::DEBUG,
                format!(
                    "answered the peer's IKE SA rekey ({suite}); additional key exchanges follow"
                ),
            );
            self.ike_rk.peer_followup = Some(Box::new(IkeFollowup { link, ..f }));
            return;
        }
        self.answer(exchange::CREATE_CHILD_SA, mid, local, remote, &out, rng);
        self.log(
            tracing::Level::DEBUG,
            format!("answered the peer's IKE SA rekey ({suite})"),
        );
        self.peer_rekey_keyed(now, f, rng);
    }

    /// The peer's rekey, every key exchange done: the new SA, held until it settles.
    fn peer_rekey_keyed(&mut self, now: u64, f: IkeFollowup, rng: &mut dyn Random) {
        let keys = match self.rekey_keys(f.suite, Role::Responder, &f.secrets, &f.ni, &f.nr, f.spis)
        {
            Ok(k) => k,
            Err(e) => {
                self.ignored(format!("the peer's IKE SA rekey could not be keyed: {e}"));
                return;
            }
        };
        let new = self.rekeyed(Role::Responder, f.spis, keys, now, rng);
        self.ike_rk.theirs = Some(Made {
            sa: Box::new(new),
            ni: f.ni,
            nr: f.nr,
        });
        self.settle_ike_rekey(now, rng, false);
    }

    /// Initiator: the next IKE_FOLLOWUP_KE of our IKE SA rekey, if one is under way.
    pub(super) fn ike_followup_request(&mut self, rng: &mut dyn Random) -> Option<Vec<Payload>> {
        let f = self.ike_rk.our_followup.as_mut()?;
        super::create_child::followup_payloads(&f.remaining, &f.link, &mut f.kem, rng)
    }

    /// Whether our IKE SA rekey's additional key exchanges are under way.
    pub(super) fn ike_followup_ours(&self) -> bool {
        self.ike_rk.our_followup.is_some()
    }

    /// Initiator: the answer to an IKE_FOLLOWUP_KE of our IKE SA rekey.
    pub(super) fn on_ike_followup_response(
        &mut self,
        now: u64,
        p: &[Payload],
        rng: &mut dyn Random,
    ) {
        let Some(mut f) = self.ike_rk.our_followup.take() else {
            return;
        };
        let (Some(m), Some(k)) = (f.remaining.first().copied(), f.kem.take()) else {
            return;
        };
        if let Some(e) = error_notify(p) {
            let why = format!(
                "the responder refused the IKE_FOLLOWUP_KE ({}) of our IKE SA rekey with {}",
                m.name(),
                notify::name(e)
            );
            self.rekey_failed(now, IkeError::AddKe { why }, rng);
            return;
        }
        let secret = ke_data(p, m)
            .ok_or_else(|| {
                format!(
                    "the responder's IKE_FOLLOWUP_KE answer has no KE payload for {}",
                    m.name()
                )
            })
            .and_then(|d| k.finish(d).map_err(|e| format!("{}: {e}", m.name())));
        let secret = match secret {
            Ok(s) => s,
            Err(why) => {
                self.rekey_failed(now, IkeError::AddKe { why }, rng);
                return;
            }
        };
        f.secrets.push(secret);
        f.remaining.remove(0);
        if f.remaining.is_empty() {
            self.finish_our_rekey(now, *f, rng);
            return;
        }
        match find_notify(p, notify::ADDITIONAL_KEY_EXCHANGE) {
            Some(n) => {
                f.link = n.data.clone();
                self.ike_rk.our_followup = Some(f);
                self.queue.push_front(Queued::Followup);
            }
            None => {
                let why = "the responder sent no ADDITIONAL_KEY_EXCHANGE link for the next additional key exchange of our IKE SA rekey".to_string();
                self.rekey_failed(now, IkeError::AddKe { why }, rng);
            }
        }
    }

    /// Responder: an IKE_FOLLOWUP_KE of the peer's IKE SA rekey, if its link is that one's.
    /// False: not ours to answer (a Child SA's, or unknown).
    pub(super) fn on_ike_followup_request(
        &mut self,
        now: u64,
        mid: u32,
        local: SocketAddr,
        remote: SocketAddr,
        p: &[Payload],
        rng: &mut dyn Random,
    ) -> bool {
        let link = find_notify(p, notify::ADDITIONAL_KEY_EXCHANGE).map(|n| n.data.clone());
        let ours =
            matches!((&self.ike_rk.peer_followup, &link), (Some(f), Some(l)) if f.link == *l);
        if !ours {
            return false;
        }
        let Some(mut f) = self.ike_rk.peer_followup.take() else {
            return false;
        };
        let Some(m) = f.remaining.first().copied() else {
            return true;
        };
        let reply = ke_data(p, m)
            .ok_or_else(|| {
                format!(
                    "the initiator's IKE_FOLLOWUP_KE has no KE payload for {}, the method chosen",
                    m.name()
                )
            })
            .and_then(|d| m.respond(d, rng).map_err(|e| format!("{}: {e}", m.name())));
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
                let e = IkeError::AddKe { why };
                self.ignored(format!("the peer's IKE SA rekey: {e}"));
                self.ike_rk.last_error = Some(e);
                return true;
            }
        };
        f.secrets.push(secret);
        f.remaining.remove(0);
        let mut out = vec![Payload::Ke {
            group: m.iana(),
            data,
        }];
        if !f.remaining.is_empty() {
            let mut link = vec![0u8; 8];
            rng.fill(&mut link);
            out.push(notify_payload(
                notify::ADDITIONAL_KEY_EXCHANGE,
                link.clone(),
            ));
            f.link = link;
            self.ike_rk.peer_followup = Some(f);
            self.answer(exchange::IKE_FOLLOWUP_KE, mid, local, remote, &out, rng);
            return true;
        }
        self.answer(exchange::IKE_FOLLOWUP_KE, mid, local, remote, &out, rng);
        self.peer_rekey_keyed(now, *f, rng);
        true
    }

    fn answer_notify(
        &mut self,
        mid: u32,
        local: SocketAddr,
        remote: SocketAddr,
        kind: u16,
        data: Vec<u8>,
        rng: &mut dyn Random,
    ) {
        let p = [notify_payload(kind, data)];
        self.answer(exchange::CREATE_CHILD_SA, mid, local, remote, &p, rng);
    }

    /// The peer's rekey we answered takes effect once our own request in flight is
    /// answered (its answer belongs to this SA), or at once when the peer deletes this SA.
    pub(super) fn settle_ike_rekey(&mut self, now: u64, rng: &mut dyn Random, peer_deletes: bool) {
        // Our own rekey's additional key exchanges still run: a collision, settled when
        // they end (RFC 9370 §2.2.4 with §2.8.1).
        let ours_running = self.ike_rk.our_followup.is_some() && !peer_deletes;
        if self.ike_rk.theirs.is_none() || ((self.out.is_some() || ours_running) && !peer_deletes) {
            return;
        }
        let Some(made) = self.ike_rk.theirs.take() else {
            return;
        };
        match self.state {
            IkeState::Established { .. } => self.finish_rekey(now, None, Some(made), rng),
            // We delete this SA meanwhile: the new one goes too.
            IkeState::Deleting { .. } => self.discard_new(now, made, rng),
            // Closed meanwhile (failed or deleted): the new SA was never handed to the
            // daemon, so dropping it here leaves nothing behind on our side; the peer's copy
            // expires with its half-open and DPD timers.
            _ => {} // dropped with `made`: nothing of it reached the daemon
        }
    }

    // ---- both ------------------------------------------------------------------------

    /// §2.18: the new SA's SK keys, from this SA's SK_d and PRF and the exchange's DH,
    /// nonces and the new SPIs.
    #[allow(clippy::too_many_arguments)]
    fn rekey_keys(
        &self,
        suite: IkeSuite,
        role: Role,
        secrets: &[Secret],
        ni: &[u8],
        nr: &[u8],
        spis: (u64, u64),
    ) -> Result<SkKeys, IkeError> {
        let old = self.keys().ok_or(IkeError::NotEstablished)?;
        // RFC 9370 §2.2.4: SKEYSEED = prf(SK_d (old), SK(0) | Ni | Nr | SK(1) | ... | SK(n)).
        let refs: Vec<&[u8]> = secrets.iter().map(|s| s.as_slice()).collect();
        let lens = KeyLengths {
            enc: suite.encr.key_material_len(),
            integ: suite.integ.key_len(),
        };
        let k = derive_rekeyed_ike_keys_multi(
            old.suite.prf,
            &old.sk_d,
            suite.prf,
            ni,
            nr,
            &refs,
            spis,
            lens,
        );
        sk_keys(suite, role, &k)
    }

    /// The IKE SA a rekey made (§2.18): fresh SPIs and keys, message IDs from 0 both ways,
    /// the role of whoever started the rekey; this SA's connection, addresses, NAT state
    /// and peer; its own lifetime. The children move in when the rekey settles.
    fn rekeyed(
        &self,
        role: Role,
        (spi_i, spi_r): (u64, u64),
        keys: SkKeys,
        now: u64,
        rng: &mut dyn Random,
    ) -> IkeSa {
        let mut sa = IkeSa::new(self.cfg.clone(), role, self.local, self.remote);
        sa.wall_base_ms = self.wall_base_ms;
        // RFC 7383 §2.3: negotiated in IKE_SA_INIT, kept across IKE SA rekeys.
        sa.frag_peer = self.frag_peer;
        sa.spi_i = spi_i;
        sa.spi_r = spi_r;
        sa.suite = Some(keys.suite);
        sa.state = IkeState::Established {
            keys: Box::new(keys),
        };
        sa.nat = self.nat;
        sa.peer_behind_nat = self.peer_behind_nat;
        sa.we_behind_nat = self.we_behind_nat;
        sa.established_at = Some(now);
        sa.last_heard = now;
        sa.peer_id = self.peer_id.clone();
        sa.ike_rk.rekeys = self.ike_rk.rekeys + 1;
        sa.schedule_ike_lifetime(now, rng);
        sa
    }

    /// A new SA made while this one is being deleted: hand it over deleting itself (the
    /// peer has it up), with no children.
    fn discard_new(&mut self, now: u64, made: Made, rng: &mut dyn Random) {
        let mut sa = made.sa;
        sa.ike_rk.superseded = true;
        sa.delete(now, rng);
        self.log(
            tracing::Level::DEBUG,
            "an IKE SA rekey completed while we delete the SA; deleting the new one too".into(),
        );
        self.events.push_back(Event::NewIkeSa(sa));
    }

    /// The rekey is done: `ours` is the SA our request made, `theirs` the one the peer's
    /// made (both: a collision, §2.8.1). The survivor takes the children and the queued
    /// requests and goes to the daemon; this SA is deleted.
    fn finish_rekey(
        &mut self,
        now: u64,
        ours: Option<Made>,
        theirs: Option<Made>,
        rng: &mut dyn Random,
    ) {
        let (winner, loser) = match (ours, theirs) {
            // §2.8.1: the SA whose exchange has the lowest of the four nonces is redundant.
            (Some(a), Some(b)) if a.lowest() < b.lowest() => (b, Some(a)),
            (Some(a), Some(b)) => (a, Some(b)),
            (Some(a), None) | (None, Some(a)) => (a, None),
            (None, None) => return,
        };
        let state = std::mem::replace(&mut self.state, IkeState::Closed);
        let IkeState::Established { keys } = state else {
            self.state = state;
            return;
        };
        self.state = IkeState::Deleting { keys };
        self.ike_rk.superseded = true;
        let mut new = winner.sa;
        let we_started = new.role == Role::Initiator;
        // The Child SAs move with their rekey state and queued requests: their ESP SAs stay
        // as they are, no ChildDown.
        self.move_children(now, &mut new);
        for q in std::mem::take(&mut self.queue) {
            match q {
                Queued::RekeyIke | Queued::DeleteIke | Queued::AuthFailedNotice => {}
                q => new.queue.push_back(q),
            }
        }
        new.pump(now, rng);
        let r = &mut self.ike_rk;
        (r.rekey_at, r.expire_at, r.retry_at, r.ours) = (None, None, None, None);
        let line = format!(
            "IKE SA rekeyed by {}: {:016x}_{:016x} -> {:016x}_{:016x}, {} Child SA(s) moved{}",
            if we_started { "us" } else { "the peer" },
            self.spi_i,
            self.spi_r,
            new.spi_i,
            new.spi_r,
            new.children.len(),
            if loser.is_some() {
                " (after a rekey collision, RFC 7296 §2.8.2)"
            } else {
                ""
            }
        );
        self.log(tracing::Level::INFO, line);
        self.events.push_back(Event::NewIkeSa(new));
        if let Some(l) = loser {
            let mut sa = l.sa;
            sa.ike_rk.superseded = true;
            if sa.role == Role::Initiator {
                // §2.8.1: we made the redundant SA, we delete it.
                sa.delete(now, rng);
            } else {
                sa.ike_rk.await_delete_until = Some(now + self.half_open_ms());
            }
            self.events.push_back(Event::NewIkeSa(sa));
        }
        if we_started {
            // §2.8: the rekey initiator deletes the old SA.
            self.queue.push_back(Queued::DeleteIke);
            self.pump(now, rng);
        } else {
            self.ike_rk.await_delete_until = Some(now + self.half_open_ms());
        }
    }

    /// Whether an IKE SA rekey of ours or the peer's is under way (§2.25: a Child SA rekey
    /// request that arrives meanwhile is answered TEMPORARY_FAILURE).
    pub(super) fn ike_rekeying(&self) -> bool {
        self.ike_rk.ours.is_some()
            || self.ike_rk.our_followup.is_some()
            || self.ike_rk.peer_followup.is_some()
            || self.ike_rk.theirs.is_some()
            || self.queue.contains(&Queued::RekeyIke)
    }
}

/// The KE payload's data for method `m`, if the payload is there and of that method.
fn ke_data(p: &[Payload], m: Method) -> Option<&[u8]> {
    p.iter().find_map(|x| match x {
        Payload::Ke { group, data } if *group == m.iana() => Some(data.as_slice()),
        _ => None,
    })
}
