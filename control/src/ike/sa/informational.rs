//! INFORMATIONAL (RFC 7296 §1.4, §2.4, §2.21.2): Deletes both ways, DPD probes, and the
//! peer's error notifies, which tear the IKE SA down.

use std::net::SocketAddr;

use super::super::child::PROTO_ESP;
use super::super::proposal::PROTO_IKE;
use super::super::wire::{exchange, Delete, Payload};
use super::{notify, Event, IkeError, IkeSa, IkeState, Queued, Random, Req};

impl IkeSa {
    /// The peer's INFORMATIONAL request: answer it (§1.4), then act on what it said.
    pub(super) fn on_informational(
        &mut self,
        mid: u32,
        local: SocketAddr,
        remote: SocketAddr,
        p: &[Payload],
        rng: &mut dyn Random,
    ) {
        let mut reply = Vec::new();
        let mut ike_deleted = false;
        let mut error = None;
        for x in p {
            match x {
                Payload::Delete(d) if d.protocol == PROTO_IKE => ike_deleted = true,
                Payload::Delete(d) if d.protocol == PROTO_ESP => {
                    let mut ours = Vec::new();
                    for spi in &d.spis {
                        let Ok(b) = <[u8; 4]>::try_from(spi.as_slice()) else {
                            self.ignored(format!("a Delete with a {}-byte ESP SPI", spi.len()));
                            continue;
                        };
                        let outb = u32::from_be_bytes(b);
                        // The peer names its inbound SPI: our outbound one.
                        match self.children.iter().find(|c| c.outbound_spi == outb) {
                            Some(c) => {
                                let inbound = c.inbound_spi;
                                // §1.4.1: answer with the SPI of our half.
                                ours.push(inbound.to_be_bytes().to_vec());
                                // A rekeyed SA's successor takes the traffic first (§2.8).
                                self.peer_deleted_child(inbound);
                            }
                            // RFC 9370 §2.2.4: a Child SA whose additional key exchanges
                            // the peer gave up (it never came up here).
                            None => {
                                // §2.8: a Delete the peer sent here before it learned of
                                // our rekey of this IKE SA, for a Child SA we moved to the
                                // new one (the peer's rekey of it answered, its Delete of
                                // the old SA late). Answered for it, and acted on where it
                                // is now. Answered empty, the old SA stayed for good: our
                                // traffic went into an SA the peer no longer had.
                                if let Some(inbound) = self.book.moved_inbound(outb) {
                                    ours.push(inbound.to_be_bytes().to_vec());
                                    self.log(
                                        tracing::Level::DEBUG,
                                        format!("the peer deleted Child SA {inbound:#010x} on this IKE SA, which we rekeyed meanwhile: passed on to the new one"),
                                    );
                                    self.events.push_back(Event::MovedChildDeleted {
                                        inbound_spi: inbound,
                                    });
                                } else if !self.drop_peer_followup(outb) {
                                    self.ignored(format!(
                                        "a Delete for ESP SPI {outb:#010x}, which is not one of ours (already gone?)"
                                    ));
                                }
                            }
                        }
                    }
                    if !ours.is_empty() {
                        reply.push(Payload::Delete(Delete {
                            protocol: PROTO_ESP,
                            spi_size: 4,
                            spis: ours,
                        }));
                    }
                }
                Payload::Delete(d) => self.ignored(format!(
                    "a Delete for protocol {}, which we do not run",
                    d.protocol
                )),
                Payload::Notify(n) if n.kind == notify::INVALID_SPI => {
                    // §3.10.1: "There is no requirement to act on it"; a stray ESP packet
                    // must not bring down the IKE SA.
                    self.ignored("an INVALID_SPI notify (no requirement to act, §3.10.1)".into());
                }
                Payload::Notify(n) if n.kind < notify::FIRST_STATUS => {
                    // §2.21.2: an error in a separate INFORMATIONAL (AUTHENTICATION_FAILED
                    // after our IKE_AUTH, or any other): the IKE SA is not usable.
                    error.get_or_insert(if n.kind == notify::AUTHENTICATION_FAILED {
                        IkeError::PeerRejectedAuth {
                            our_id: self.cfg.local_id.clone(),
                            peer_is_initiator: self.role == super::Role::Responder,
                        }
                    } else {
                        IkeError::PeerNotify {
                            exchange: "INFORMATIONAL",
                            notify: n.kind,
                        }
                    });
                }
                Payload::Notify(n) => self.ignored(format!(
                    "{} in an INFORMATIONAL request",
                    notify::name(n.kind)
                )),
                other => self.ignored(format!(
                    "payload type {} in an INFORMATIONAL request",
                    other.kind()
                )),
            }
        }
        if ike_deleted || error.is_some() {
            // §1.4.1: the answer to an IKE SA Delete is empty.
            reply.clear();
        }
        self.answer(exchange::INFORMATIONAL, mid, local, remote, &reply, rng);
        if let Some(e) = error {
            self.fail(e);
        } else if ike_deleted {
            self.children_down(true);
            self.state = IkeState::Closed;
            self.out = None;
            self.queue.clear();
            self.events.push_back(Event::Closed { by_peer: true });
        }
    }

    /// INFORMATIONAL Delete of the IKE SA (and its children: ChildDown for each at once).
    /// Before it is established there is nothing to tell the peer: Closed at once.
    pub fn delete(&mut self, now: u64, rng: &mut dyn Random) {
        let state = std::mem::replace(&mut self.state, IkeState::Closed);
        let IkeState::Established { keys } = state else {
            if let IkeState::Deleting { keys } = state {
                self.state = IkeState::Deleting { keys }; // already under way
                return;
            }
            if !matches!(state, IkeState::Closed) {
                self.children_down(false);
                self.out = None;
                self.queue.clear();
                self.events.push_back(Event::Closed { by_peer: false });
            }
            return;
        };
        self.children_down(false);
        self.state = IkeState::Deleting { keys };
        // Window size 1: the request in flight (if any) is answered first; nothing else
        // queued matters any more.
        self.queue.clear();
        self.queue.push_back(Queued::DeleteIke);
        self.pump(now, rng);
    }

    /// INFORMATIONAL Delete of one Child SA (by our inbound SPI). ChildDown follows at once.
    pub fn delete_child(&mut self, now: u64, inbound_spi: u32, rng: &mut dyn Random) {
        if !self.children.iter().any(|c| c.inbound_spi == inbound_spi) {
            self.ignored(format!(
                "delete_child: no Child SA with inbound SPI {inbound_spi:#010x}"
            ));
            return;
        }
        // The same as a hard expiry: ChildDown now, the Delete queued.
        self.expire_child(now, inbound_spi, rng);
    }

    /// DPD (§1.4, §2.4): an empty INFORMATIONAL request. If no answer within `timeout_ms`
    /// (retransmitting on the usual schedule meanwhile), the SA fails with
    /// [`IkeError::PeerDead`]. No-op (returns false) if not established or a probe is
    /// already out.
    pub fn dpd_probe(&mut self, now: u64, timeout_ms: u64, rng: &mut dyn Random) -> bool {
        if !matches!(self.state, IkeState::Established { .. })
            || self.queue.iter().any(|q| matches!(q, Queued::Dpd { .. }))
            || self
                .out
                .as_ref()
                .is_some_and(|o| matches!(o.req, Req::Dpd { .. }))
        {
            return false;
        }
        self.queue.push_back(Queued::Dpd {
            started: now,
            deadline: now + timeout_ms,
        });
        self.pump(now, rng);
        true
    }
}
