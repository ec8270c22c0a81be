//! IKE_INTERMEDIATE (RFC 9242) carrying the additional key exchanges of an IKE SA setup
//! (RFC 9370 §2.2.1): one exchange per selected ADDKE that is not NONE, in transform type
//! order, `SK{KEi(n)}` / `SK{KEr(n)}`, message IDs 1, 2, ...; after each, all seven keys are
//! replaced (§2.2.2). Both sides chain IntAuth over every request (with SK_pi) and every
//! response (with SK_pr) in force when it was protected (RFC 9242 §3.3.2); IKE_AUTH signs
//! `IntAuth_i | IntAuth_r | IKE_AUTH message ID` after the usual octets.

use std::collections::VecDeque;
use std::net::SocketAddr;

use super::super::kem::Method;
use super::super::keys::{derive_intermediate_keys, KeyLengths, Secret};
use super::super::proposal::IkeSuite;
use super::super::sk::{intauth_octets, OpenedSk};
use super::super::wire::{self, exchange, payload, Header, Payload};
use super::init::sk_keys;
use super::{
    error_notify, first, notify, notify_payload, ChildRequest, Handshake, IkeError, IkeSa,
    IkeState, Random, Req,
};

/// What IKE_INTERMEDIATE acts on; anything else is reported.
const INTER_PAYLOADS: &[u8] = &[payload::KE];

/// The IKE_INTERMEDIATE exchanges of one IKE SA setup.
#[derive(Default)]
pub(super) struct Intermediate {
    /// The additional key exchanges still to run, in slot order.
    todo: VecDeque<Method>,
    /// How many ran.
    done: usize,
    /// RFC 9242 §3.3.2: IntAuth_iN and IntAuth_rN so far (empty before the first).
    int_i: Secret,
    int_r: Secret,
}

impl Intermediate {
    pub(super) fn new(suite: &IkeSuite) -> Intermediate {
        Intermediate {
            todo: suite.addke.iter().flatten().copied().collect(),
            ..Default::default()
        }
    }

    /// Whether every additional key exchange ran.
    pub(super) fn finished(&self) -> bool {
        self.todo.is_empty()
    }

    fn names(&self) -> String {
        self.todo
            .iter()
            .map(|m| m.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The IntAuth_xN chain step: prf(SK_px, IntAuth_x(N-1) | A | P).
fn chain(hs: &Handshake, initiator: bool, octets: &[u8]) -> Secret {
    let prf = hs.keys.suite.prf;
    let (key, prev) = if initiator {
        (&hs.sk_pi, &hs.inter.int_i)
    } else {
        (&hs.sk_pr, &hs.inter.int_r)
    };
    prf.prf(key, &[prev, octets])
}

/// RFC 9242 §3.3.2: the `A | P` of a message we seal, from the payloads as sealed.
fn sealed_octets(h: Header, inner: &[Payload]) -> Vec<u8> {
    let mut plain = Vec::new();
    let first = wire::emit_chain(inner, &mut plain);
    intauth_octets(h, first, &plain)
}

fn opened_octets(o: &OpenedSk) -> Vec<u8> {
    intauth_octets(o.header, o.first, &o.plain)
}

impl IkeSa {
    /// RFC 9370 §2.2.2: after additional key exchange n, every key is derived again from
    /// SK_d(n-1) and its shared secret.
    fn update_keys(&self, hs: &mut Handshake, secret: &[u8]) -> Result<(), IkeError> {
        let suite = hs.keys.suite;
        let lens = KeyLengths {
            enc: suite.encr.key_material_len(),
            integ: suite.integ.key_len(),
        };
        let k = derive_intermediate_keys(
            suite.prf,
            &hs.keys.sk_d,
            secret,
            &hs.ni,
            &hs.nr,
            (self.spi_i, self.spi_r),
            lens,
        );
        hs.keys = sk_keys(suite, self.role, &k)?;
        hs.sk_pi = k.sk_pi.clone();
        hs.sk_pr = k.sk_pr.clone();
        Ok(())
    }

    /// Initiator, after IKE_SA_INIT or an IKE_INTERMEDIATE: the next additional key
    /// exchange, or IKE_AUTH when none is left.
    pub(super) fn after_init(
        &mut self,
        now: u64,
        mut hs: Handshake,
        first: ChildRequest,
        initial_contact: bool,
        rng: &mut dyn Random,
    ) {
        let Some(&method) = hs.inter.todo.front() else {
            if hs.inter.done > 0 {
                // RFC 9242 §3.3.2: IntAuth = IntAuth_iN | IntAuth_rN | IKE_AUTH's MID.
                hs.int_auth = [&hs.inter.int_i[..], &hs.inter.int_r[..]].concat();
                hs.int_auth.extend_from_slice(&self.next_mid.to_be_bytes());
            }
            self.send_auth(now, hs, first, initial_contact, rng);
            return;
        };
        let pending = method.initiate(rng);
        let inner = vec![Payload::Ke {
            group: method.iana(),
            data: pending.public().to_vec(),
        }];
        let mid = self.next_mid;
        let h = self.header(exchange::IKE_INTERMEDIATE, mid, false);
        let msg = self.seal_with(&hs.keys, h, &inner, rng);
        hs.inter.int_i = chain(&hs, true, &sealed_octets(h, &inner));
        self.next_mid += 1;
        self.log(
            tracing::Level::DEBUG,
            format!(
                "IKE_INTERMEDIATE {mid}: additional key exchange with {}",
                method.name()
            ),
        );
        self.state = IkeState::InterSent {
            hs: Box::new(hs),
            first,
            initial_contact,
            pending,
        };
        self.request(now, mid, msg, Req::Intermediate);
    }

    /// Initiator: the answer to our IKE_INTERMEDIATE (matched to the request in flight).
    /// `opened`: the whole message, reassembled if it came in fragments (RFC 9242 §3.3.2
    /// computes IntAuth over the message as if it had not been fragmented).
    pub(super) fn on_intermediate_response(
        &mut self,
        now: u64,
        opened: OpenedSk,
        rng: &mut dyn Random,
    ) {
        let IkeState::InterSent {
            mut hs,
            first,
            initial_contact,
            pending,
        } = std::mem::replace(&mut self.state, IkeState::Closed)
        else {
            self.ignored("an IKE_INTERMEDIATE response outside IKE_INTERMEDIATE".into());
            return;
        };
        self.out = None;
        self.last_heard = now;
        let p = match wire::parse_chain(opened.first, &opened.plain) {
            Ok(p) => p,
            Err(e) => {
                self.fail(IkeError::Malformed {
                    what: format!("IKE_INTERMEDIATE response: {e}"),
                });
                return;
            }
        };
        hs.inter.int_r = chain(&hs, false, &opened_octets(&opened));
        if let Some(e) = error_notify(&p) {
            self.fail(IkeError::PeerNotify {
                exchange: "IKE_INTERMEDIATE",
                notify: e,
            });
            return;
        }
        self.report_unused("IKE_INTERMEDIATE", &p, INTER_PAYLOADS, &[]);
        let method = pending.method();
        let ke = p.iter().find_map(|x| match x {
            Payload::Ke { group, data } if *group == method.iana() => Some(data),
            _ => None,
        });
        let Some(data) = ke else {
            self.fail(IkeError::AddKe {
                why: format!(
                    "we sent KEi for {} in IKE_INTERMEDIATE, the responder answered without KEr for it",
                    method.name()
                ),
            });
            return;
        };
        let secret = match pending.finish(data) {
            Ok(s) => s,
            Err(e) => {
                self.fail(IkeError::KeyExchange { why: e.to_string() });
                return;
            }
        };
        if let Err(e) = self.update_keys(&mut hs, &secret) {
            self.fail(e);
            return;
        }
        hs.inter.todo.pop_front();
        hs.inter.done += 1;
        self.log(
            tracing::Level::DEBUG,
            format!(
                "additional key exchange with {} done; keys updated (RFC 9370 §2.2.2)",
                method.name()
            ),
        );
        self.after_init(now, *hs, first, initial_contact, rng);
    }

    /// Responder: an IKE_INTERMEDIATE request (message ID already checked).
    pub(super) fn on_intermediate_request(
        &mut self,
        now: u64,
        local: SocketAddr,
        remote: SocketAddr,
        hdr: Header,
        opened: OpenedSk,
        rng: &mut dyn Random,
    ) {
        self.peer_mid += 1;
        self.last_heard = now;
        let mid = hdr.message_id;
        let pending_ke =
            matches!(&self.state, IkeState::InitDone { hs, .. } if !hs.inter.finished());
        if !pending_ke {
            // No additional key exchange is due (none negotiated, all done, or the SA is
            // past IKE_AUTH): we use IKE_INTERMEDIATE for nothing else.
            self.answer(
                exchange::IKE_INTERMEDIATE,
                mid,
                local,
                remote,
                &[notify_payload(notify::INVALID_SYNTAX, vec![])],
                rng,
            );
            self.ignored(format!(
                "an IKE_INTERMEDIATE request from {remote} with no additional key exchange due: answered INVALID_SYNTAX"
            ));
            return;
        }
        let IkeState::InitDone { mut hs, .. } =
            std::mem::replace(&mut self.state, IkeState::Closed)
        else {
            return;
        };
        let Some(&method) = hs.inter.todo.front() else {
            return;
        };
        let p = wire::parse_chain(opened.first, &opened.plain);
        let ke = p
            .as_ref()
            .ok()
            .and_then(|p| first!(p, Payload::Ke { group, data } => (*group, data.clone())));
        let reply = match ke {
            Some((g, data)) if g == method.iana() => method.respond(&data, rng).map_err(|e| {
                IkeError::KeyExchange {
                    why: format!("the initiator's KEi for {}: {e}", method.name()),
                }
            }),
            Some((g, _)) => Err(IkeError::AddKe {
                why: format!(
                    "the initiator sent KEi for method {g} in IKE_INTERMEDIATE, but {} was negotiated for it",
                    method.name()
                ),
            }),
            None => Err(IkeError::AddKe {
                why: format!(
                    "the initiator's IKE_INTERMEDIATE request has no KEi (we expected {})",
                    method.name()
                ),
            }),
        };
        let (reply, secret) = match reply {
            Ok(r) => r,
            Err(err) => {
                // ss: ike_init.c answers a missing or wrong KE with INVALID_SYNTAX.
                let h = self.header(exchange::IKE_INTERMEDIATE, mid, true);
                let msg = self.seal_with(
                    &hs.keys,
                    h,
                    &[notify_payload(notify::INVALID_SYNTAX, vec![])],
                    rng,
                );
                self.respond_with(mid, local, remote, msg);
                self.fail(err);
                return;
            }
        };
        if let Ok(p) = &p {
            self.report_unused("IKE_INTERMEDIATE", p, INTER_PAYLOADS, &[]);
        }
        hs.inter.int_i = chain(&hs, true, &opened_octets(&opened));
        let inner = vec![Payload::Ke {
            group: method.iana(),
            data: reply,
        }];
        let h = self.header(exchange::IKE_INTERMEDIATE, mid, true);
        let msg = self.seal_with(&hs.keys, h, &inner, rng);
        hs.inter.int_r = chain(&hs, false, &sealed_octets(h, &inner));
        if let Err(e) = self.update_keys(&mut hs, &secret) {
            self.fail(e);
            return;
        }
        hs.inter.todo.pop_front();
        hs.inter.done += 1;
        if hs.inter.finished() {
            // IKE_AUTH must come next, with the message ID we now expect.
            hs.int_auth = [&hs.inter.int_i[..], &hs.inter.int_r[..]].concat();
            hs.int_auth.extend_from_slice(&self.peer_mid.to_be_bytes());
        }
        self.log(
            tracing::Level::DEBUG,
            format!(
                "IKE_INTERMEDIATE {mid} answered ({}); keys updated (RFC 9370 §2.2.2)",
                method.name()
            ),
        );
        let expires = now + self.half_open_ms();
        self.state = IkeState::InitDone { hs, expires };
        self.respond_with(mid, local, remote, msg);
    }

    /// Responder: IKE_AUTH arrived while additional key exchanges are still due.
    pub(super) fn auth_before_addke(&self) -> Option<IkeError> {
        match &self.state {
            IkeState::InitDone { hs, .. } if !hs.inter.finished() => Some(IkeError::AddKe {
                why: format!(
                    "the initiator sent IKE_AUTH before the additional key exchanges we agreed on ({})",
                    hs.inter.names()
                ),
            }),
            _ => None,
        }
    }

    /// Test hook: `raw`, one of our own messages, opened and sealed again with our keys
    /// after `edit` changed its payloads: a message that decrypts but differs from what we
    /// sent (RFC 9242 §3.3.2 tests: IntAuth must catch it).
    #[doc(hidden)]
    pub fn reseal_own_for_test(
        &self,
        raw: &[u8],
        edit: impl FnOnce(&mut Vec<Payload>),
        rng: &mut dyn Random,
    ) -> Option<Vec<u8>> {
        let keys = self.keys()?;
        let (h, mut p) = keys.sk_out.open(raw).ok()?;
        edit(&mut p);
        self.seal_bytes(keys, h, &p, rng)
            .datagrams
            .into_iter()
            .next()
    }
}
