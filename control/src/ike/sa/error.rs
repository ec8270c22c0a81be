//! Why an IKE SA or one of its Child SAs failed, in plain words saying which side wanted
//! what. Tests and the daemon match the variants; operators read the `Display`.

use std::net::SocketAddr;

use super::notify;
use crate::ike::sig::SigError;
use crate::pki::CertError;

/// Which peer a message is about, for the plain-words reasons.
fn side(peer_is_initiator: &bool) -> &'static str {
    if *peer_is_initiator {
        "the initiator"
    } else {
        "the responder"
    }
}

fn notify_name(t: &u16) -> String {
    notify::name(*t)
}

fn mode(transport: &bool) -> &'static str {
    if *transport {
        "transport"
    } else {
        "tunnel"
    }
}

/// A duration as swanctl writes it: "4h", "24m", "90s", "1500ms".
fn dur(ms: &u64) -> String {
    let ms = *ms;
    match ms {
        0 => "0s".into(),
        _ if ms.is_multiple_of(3_600_000) => format!("{}h", ms / 3_600_000),
        _ if ms.is_multiple_of(60_000) => format!("{}m", ms / 60_000),
        _ if ms.is_multiple_of(1000) => format!("{}s", ms / 1000),
        _ => format!("{ms}ms"),
    }
}

fn rekey_outcome(tried: &bool) -> &'static str {
    if *tried {
        "our rekey got no answer or was refused until then"
    } else {
        "no rekey was started"
    }
}

fn refusal_hint(t: &u16) -> &'static str {
    match *t {
        notify::TEMPORARY_FAILURE => "it is busy with another exchange (RFC 7296 §2.25)",
        notify::NO_PROPOSAL_CHOSEN => {
            "it accepts none of our IKE proposals now: compare its IKE proposals with ours"
        }
        notify::INVALID_KE_PAYLOAD => {
            "it wants a key exchange group none of our IKE proposals has: add it to ours"
        }
        _ => "see the peer's log",
    }
}

/// A failure of the IKE SA ([`super::Event::Failed`]) or of one Child SA
/// ([`super::Event::ChildFailed`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IkeError {
    /// Responder: none of the initiator's IKE proposals is acceptable (§2.7).
    #[error("no IKE proposal in common: the initiator offered {theirs}; we accept {ours}")]
    NoIkeProposal { ours: String, theirs: String },
    /// Initiator: the responder answered NO_PROPOSAL_CHOSEN to IKE_SA_INIT.
    #[error("responder accepted none of our IKE proposals (we offered {ours})")]
    PeerRefusedIkeProposals { ours: String },
    /// Responder: the initiator's KE is for another group than the one we chose; we asked it
    /// to retry with ours (INVALID_KE_PAYLOAD, §1.2).
    #[error("the initiator's KE is for group {theirs}; we chose {ours}: asking it to retry (INVALID_KE_PAYLOAD)")]
    KeGroupMismatch { theirs: u16, ours: String },
    /// Initiator: the responder wants a key exchange group we did not offer.
    #[error(
        "responder wants key exchange group {wanted}, which we do not offer (we offered {ours})"
    )]
    KeGroupNotOffered { wanted: String, ours: String },
    /// The peer chose a proposal we did not offer (§2.7: it must pick one of ours, whole).
    #[error("the responder chose an {what} proposal we did not offer ({chosen})")]
    PeerChoseUnoffered { what: &'static str, chosen: String },
    /// A message lacked something it must carry, or carried it badly.
    #[error("malformed message from the peer: {what}")]
    Malformed { what: String },
    /// The Diffie-Hellman exchange or the key derivation failed.
    #[error("key exchange with the peer failed: {why}")]
    KeyExchange { why: String },
    /// The additional key exchanges (RFC 9370) or IKE_INTERMEDIATE (RFC 9242) went wrong:
    /// `why` says which side wanted what.
    #[error("additional key exchange (RFC 9370): {why}")]
    AddKe { why: String },
    /// Initiator: the responder refused our AUTH (AUTHENTICATION_FAILED, in IKE_AUTH or in a
    /// separate INFORMATIONAL, §2.21.2).
    #[error("{} rejected our authentication (AUTHENTICATION_FAILED): check that it expects our ID {our_id} and our credentials (the pre-shared key, or with certificates that it trusts our CA; its log says which)", side(.peer_is_initiator))]
    PeerRejectedAuth {
        our_id: String,
        peer_is_initiator: bool,
    },
    /// The peer's AUTH payload did not verify with our pre-shared key.
    #[error("{}'s AUTH did not verify: the pre-shared key for {peer_id} differs from ours", side(.peer_is_initiator))]
    PeerAuthInvalid {
        peer_id: String,
        peer_is_initiator: bool,
    },
    /// The peer signed (RFC 7296 §2.15, RFC 7427) where this connection expects a PSK.
    #[error("{} authenticated with a signature ({method}), but this connection expects a pre-shared key from it (remote auth = psk): set remote auth = \"pubkey\" here, or make the peer use the pre-shared key", side(.peer_is_initiator))]
    PeerUsedSignature {
        method: String,
        peer_is_initiator: bool,
    },
    /// The peer used a PSK where this connection expects a certificate signature.
    #[error("{} authenticated with a pre-shared key, but this connection expects a certificate signature from it (remote auth = pubkey): set remote auth = \"psk\" here, or give the peer a certificate", side(.peer_is_initiator))]
    PeerUsedPsk { peer_is_initiator: bool },
    /// An AUTH method we do not implement (e.g. 3, DSS).
    #[error("{} authenticated with {method}, which we do not support (we accept pre-shared keys and signature methods 1, 9, 10, 11 and 14)", side(.peer_is_initiator))]
    PeerAuthMethodUnsupported {
        method: String,
        peer_is_initiator: bool,
    },
    /// The peer's certificate chain did not validate.
    #[error("{}'s certificate was refused: {error}", side(.peer_is_initiator))]
    PeerCert {
        error: Box<CertError>,
        peer_is_initiator: bool,
    },
    /// RFC 4945 §3.1: the ID the peer claims is not in its certificate.
    #[error("{} identified as {id}, but its certificate \"{subject}\" does not hold that identity (the subject DN or a subjectAltName must match it)", side(.peer_is_initiator))]
    PeerIdNotInCert {
        id: String,
        subject: String,
        peer_is_initiator: bool,
    },
    /// The AUTH signature does not verify with the key of the peer's certificate.
    #[error("{}'s AUTH signature ({method}) did not verify with the key of its certificate \"{subject}\": {why}", side(.peer_is_initiator))]
    PeerSignatureInvalid {
        method: String,
        subject: String,
        why: SigError,
        peer_is_initiator: bool,
    },
    /// remote auth = pubkey without any CA to check the peer's certificate against.
    #[error("this connection has no trusted CA certificate to check the peer's certificate with (remote cacerts, or the CA certificates in x509ca/)")]
    NoTrustAnchors,
    /// We cannot make our own AUTH payload (no credentials, or a key the peer's announced
    /// hash algorithms do not fit).
    #[error("we cannot authenticate to the peer: {why}")]
    OurAuth { why: String },
    /// The peer identified as someone this connection does not expect.
    #[error("{} identified as {got}, but this connection expects {want}", side(.peer_is_initiator))]
    PeerIdMismatch {
        got: String,
        want: String,
        peer_is_initiator: bool,
    },
    /// Responder: no ESP proposal of the chosen child is acceptable.
    #[error("no ESP proposal in common: the initiator offered {theirs}; we accept {ours}")]
    NoEspProposal { ours: String, theirs: String },
    /// Responder: the initiator proposes AH (protocol id 2 in the Child SA's SA payload)
    /// and no ESP proposal: refused with NO_PROPOSAL_CHOSEN, saying why (ESP only).
    #[error("the initiator proposes AH ({theirs}) for child {child}, and this gateway does ESP only (answered NO_PROPOSAL_CHOSEN). AH support is optional in IPsec (RFC 4301 §3.2: ESP provides the same protection where it matters) and AH cannot pass a NAT. Configure the peer for ESP instead (swanctl: esp_proposals in place of ah_proposals) with an AEAD cipher such as aes128gcm16 (RFC 8221 §5); where AH was chosen for integrity only, ESP with an AEAD gives integrity and confidentiality both (this gateway offers no ESP-NULL)")]
    AhProposed { child: String, theirs: String },
    /// Initiator: the responder answered NO_PROPOSAL_CHOSEN for the Child SA.
    #[error("the responder refused the Child SA with NO_PROPOSAL_CHOSEN: it accepts none of our ESP proposals ({ours})")]
    PeerRefusedEsp { ours: String },
    /// Responder: the initiator's traffic selectors narrow to nothing in every child (§2.9).
    #[error(
        "traffic selectors unacceptable: the initiator proposed {proposed}; we allow {allowed}"
    )]
    TsUnacceptable { proposed: String, allowed: String },
    /// Initiator: the responder answered TS_UNACCEPTABLE.
    #[error("the responder refused the Child SA with TS_UNACCEPTABLE: our traffic selectors {ours} are outside its policy")]
    PeerRefusedTs { ours: String },
    /// Initiator: the responder's narrowed selectors are not within the ones we proposed.
    #[error("the responder's traffic selectors {got} are not within ours ({ours})")]
    TsNotWithin { got: String, ours: String },
    /// The initiator wants another mode than the matching child is configured for.
    #[error("the initiator wants {} mode, this connection is {} mode", mode(.peer_wants_transport), mode(.ours_transport))]
    ModeMismatch {
        peer_wants_transport: bool,
        ours_transport: bool,
    },
    /// Initiator: the IKE_AUTH response carried neither a Child SA nor an error notify.
    #[error("the responder created no Child SA")]
    NoChildSa,
    /// Responder: the initiator wants a key exchange (PFS) on CREATE_CHILD_SA with groups the
    /// child's esp_proposals do not offer.
    #[error("the peer wants a key exchange (PFS) with {theirs} on CREATE_CHILD_SA; our esp_proposals for child {child} offer {ours}: add -{first} to esp_proposals")]
    PfsPeerWants {
        child: String,
        /// The groups the peer offered, by name.
        theirs: String,
        /// The first of them, for the hint.
        first: String,
        /// Ours ("no key exchange group" without PFS).
        ours: String,
    },
    /// Responder: our esp_proposals require a key exchange (PFS) on CREATE_CHILD_SA, the
    /// initiator offered none.
    #[error("the peer offered no key exchange (PFS) on CREATE_CHILD_SA, but our esp_proposals for child {child} require one ({ours}): add -{first} to the peer's esp_proposals, or -none to ours to make PFS optional")]
    PfsWeRequire {
        child: String,
        ours: String,
        first: String,
    },
    /// Initiator: the responder refused our CREATE_CHILD_SA that carried a key exchange.
    #[error("the responder refused the Child SA {child} on CREATE_CHILD_SA with NO_PROPOSAL_CHOSEN; we asked for a key exchange (PFS) with {ours}: if the peer does no PFS, add -none to our esp_proposals (PFS optional); else add -{first} to the peer's")]
    PeerRefusedPfs {
        child: String,
        ours: String,
        first: String,
    },
    /// Initiator: the responder answered our CREATE_CHILD_SA without the key exchange its
    /// chosen proposal needs (or with one of another group).
    #[error("the responder chose key exchange group {chosen} for the Child SA but sent no matching KE payload")]
    PfsKeMissing { chosen: String },
    /// A Child SA named by its inbound SPI that this IKE SA does not have.
    #[error("this IKE SA has no Child SA with inbound SPI {inbound_spi:#010x}")]
    UnknownChildSa { inbound_spi: u32 },
    /// The peer refused an exchange with an error notify, or sent one in an INFORMATIONAL
    /// request (§2.21.2).
    #[error("the peer sent {} in {exchange}", notify_name(.notify))]
    PeerNotify { exchange: &'static str, notify: u16 },
    /// Our request went unanswered through every retransmission (§2.1, §2.4).
    #[error("no answer from {peer} to {what} after {tries} tries: is the peer up, and does it listen on UDP {}?", .peer.port())]
    Timeout {
        what: &'static str,
        tries: u32,
        peer: SocketAddr,
    },
    /// DPD (§2.4): the liveness probe went unanswered.
    #[error("peer {peer} is dead: no answer to {probes} DPD probe(s) in {waited_ms} ms")]
    PeerDead {
        probes: u32,
        waited_ms: u64,
        peer: SocketAddr,
    },
    /// Responder: IKE_SA_INIT answered, but no IKE_AUTH came (a half-open SA, §2.6).
    #[error("half-open IKE SA with {peer} expired: no IKE_AUTH within {waited_ms} ms of our IKE_SA_INIT answer")]
    HalfOpenExpired { peer: SocketAddr, waited_ms: u64 },
    /// A Child SA was asked for while the IKE SA is not established.
    #[error("the IKE SA is not established: no Child SA can be negotiated on it")]
    NotEstablished,
    /// A Child SA was asked for by an index the connection does not have.
    #[error("the connection has no child number {index} (it has {count})")]
    NoSuchChild { index: usize, count: usize },
    /// The IKE SA reached its hard lifetime (swanctl rekey_time, or reauth_time if earlier,
    /// plus over_time) without a completed rekey: it is closed, and the daemon sets the
    /// connection up anew.
    #[error("the IKE SA reached its hard lifetime (rekey_time {} + over_time {}) without a completed rekey: {}", dur(.rekey_ms), dur(.over_ms), rekey_outcome(.rekey_tried))]
    Expired {
        rekey_tried: bool,
        rekey_ms: u64,
        over_ms: u64,
    },
    /// Responder: none of the proposals in the peer's IKE SA rekey is acceptable (§1.3.2).
    #[error("the peer's IKE SA rekey has no proposal in common with ours: it offered {theirs}; we accept {ours} (answered NO_PROPOSAL_CHOSEN; the IKE SA stays until its hard lifetime)")]
    NoIkeRekeyProposal { ours: String, theirs: String },
    /// Initiator: the peer refused our IKE SA rekey; we try again later, until the hard
    /// lifetime ends.
    #[error("the peer refused our IKE SA rekey with {}: {}. We offered {ours}; the IKE SA now uses {current}. Trying again in {}.", notify_name(.notify), refusal_hint(.notify), dur(.retry_ms))]
    PeerRefusedIkeRekey {
        notify: u16,
        ours: String,
        current: String,
        retry_ms: u64,
    },
}
