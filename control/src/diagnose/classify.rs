//! An iked error, as a finding id and evidence, at the moment it happens (the daemon keeps
//! the result in the connection's failure history for `vpnctl list` and `diagnose`).
//!
//! The match over [`IkeError`] and [`CertError`] is exhaustive on purpose: a new variant
//! does not compile until it is classified. The evidence keys are the ones
//! `docs/DIAGNOSE.md` documents per finding id (numbers as decimal strings here; `analyze`
//! turns them into JSON numbers).

use std::collections::BTreeMap;

use crate::ike::sa::notify;
use crate::ike::sa::IkeError;
use crate::pki::CertError;

/// Evidence under construction.
struct Ev(BTreeMap<String, String>);

impl Ev {
    fn new() -> Ev {
        Ev(BTreeMap::new())
    }
    fn s(mut self, k: &str, v: impl ToString) -> Ev {
        self.0.insert(k.to_string(), v.to_string());
        self
    }
    fn role(self, peer_is_initiator: bool) -> Ev {
        self.s(
            "peer_role",
            if peer_is_initiator {
                "initiator"
            } else {
                "responder"
            },
        )
    }
}

/// The finding an error points at, and its evidence by name.
pub fn classify(e: &IkeError) -> (&'static str, BTreeMap<String, String>) {
    let (id, ev) = classify_ev(e);
    (id, ev.0)
}

fn classify_ev(e: &IkeError) -> (&'static str, Ev) {
    use IkeError as E;
    let ev = Ev::new();
    match e {
        // RFC 7296 §2.7: no IKE proposal in common.
        E::NoIkeProposal { ours, theirs } => (
            ah_or("proposal-mismatch", theirs),
            ev.s("proposal", "ike")
                .s("exchange", "IKE_SA_INIT")
                .s("side", "we")
                .s("ours", ours)
                .s("theirs", theirs),
        ),
        // RFC 8221 / RFC 4301 §3.2: ESP only here.
        E::AhProposed { child, theirs } => (
            "ah-proposed",
            ev.s("child", child).s("theirs", theirs).s("side", "we"),
        ),
        E::PeerRefusedIkeProposals { ours } => (
            "proposal-mismatch",
            ev.s("proposal", "ike")
                .s("exchange", "IKE_SA_INIT")
                .s("side", "peer")
                .s("ours", ours)
                .s("notify", "NO_PROPOSAL_CHOSEN"),
        ),
        // §1.2: the initiator guessed another group; it retries with ours (a normal
        // round trip, recorded in case it never comes back).
        E::KeGroupMismatch { theirs, ours } => (
            "proposal-mismatch",
            ev.s("proposal", "ike")
                .s("exchange", "IKE_SA_INIT")
                .s("side", "we")
                .s("ours", ours)
                .s("theirs", format!("group {theirs}"))
                .s("notify", "INVALID_KE_PAYLOAD"),
        ),
        E::KeGroupNotOffered { wanted, ours } => (
            "proposal-mismatch",
            ev.s("proposal", "ike")
                .s("exchange", "IKE_SA_INIT")
                .s("side", "peer")
                .s("ours", ours)
                .s("wanted_group", wanted)
                .s("notify", "INVALID_KE_PAYLOAD"),
        ),
        E::NoEspProposal { ours, theirs } => (
            ah_or("proposal-mismatch", theirs),
            ev.s("proposal", "esp")
                .s("exchange", "IKE_AUTH")
                .s("side", "we")
                .s("ours", ours)
                .s("theirs", theirs),
        ),
        E::PeerRefusedEsp { ours } => (
            "proposal-mismatch",
            ev.s("proposal", "esp")
                .s("exchange", "IKE_AUTH")
                .s("side", "peer")
                .s("ours", ours)
                .s("notify", "NO_PROPOSAL_CHOSEN"),
        ),
        // §1.3.2: an IKE SA rekey with no proposal in common.
        E::NoIkeRekeyProposal { ours, theirs } => (
            "proposal-mismatch",
            ev.s("proposal", "ike")
                .s("exchange", "CREATE_CHILD_SA")
                .s("side", "we")
                .s("ours", ours)
                .s("theirs", theirs),
        ),
        E::PeerRefusedIkeRekey {
            notify: n,
            ours,
            current,
            ..
        } => {
            let id = match *n {
                notify::NO_PROPOSAL_CHOSEN | notify::INVALID_KE_PAYLOAD => "proposal-mismatch",
                _ => "unclassified-failure",
            };
            (
                id,
                ev.s("proposal", "ike")
                    .s("exchange", "CREATE_CHILD_SA")
                    .s("side", "peer")
                    .s("ours", ours)
                    .s("current", current)
                    .s("notify", notify::name(*n))
                    .s("kind", "PeerRefusedIkeRekey"),
            )
        }
        // A peer that breaks §2.7 (picks what we did not offer): a bug on its side.
        E::PeerChoseUnoffered { what, chosen } => (
            "unclassified-failure",
            ev.s("kind", "PeerChoseUnoffered")
                .s("proposal", what)
                .s("chosen", chosen),
        ),
        E::Malformed { what } => (
            "unclassified-failure",
            ev.s("kind", "Malformed").s("detail", what),
        ),
        E::KeyExchange { why } => (
            "unclassified-failure",
            ev.s("kind", "KeyExchange").s("detail", why),
        ),
        E::AddKe { why } => (
            "unclassified-failure",
            ev.s("kind", "AddKe").s("detail", why),
        ),
        // §2.21.2: the peer refused our AUTH.
        E::PeerRejectedAuth {
            our_id,
            peer_is_initiator,
        } => (
            "auth-rejected",
            ev.s("our_id", our_id)
                .s("notify", "AUTHENTICATION_FAILED")
                .role(*peer_is_initiator),
        ),
        // §2.15: the peer's AUTH does not verify with our pre-shared key.
        E::PeerAuthInvalid {
            peer_id,
            peer_is_initiator,
        } => (
            "psk-mismatch",
            ev.s("peer_id", peer_id).role(*peer_is_initiator),
        ),
        E::PeerUsedSignature {
            method,
            peer_is_initiator,
        } => (
            "auth-method-mismatch",
            ev.s("method", method)
                .s("expected", "psk")
                .s("side", "we")
                .role(*peer_is_initiator),
        ),
        E::PeerUsedPsk { peer_is_initiator } => (
            "auth-method-mismatch",
            ev.s("method", "psk")
                .s("expected", "pubkey")
                .s("side", "we")
                .role(*peer_is_initiator),
        ),
        E::PeerAuthMethodUnsupported {
            method,
            peer_is_initiator,
        } => (
            "auth-method-mismatch",
            ev.s("method", method)
                .s("expected", "supported")
                .s("side", "we")
                .role(*peer_is_initiator),
        ),
        E::OurAuth { why } => ("auth-method-mismatch", ev.s("side", "local").s("why", why)),
        E::PeerCert {
            error,
            peer_is_initiator,
        } => {
            let (id, ev) = cert(error, "peer");
            (id, ev.role(*peer_is_initiator))
        }
        // RFC 4945 §3.1.
        E::PeerIdNotInCert {
            id,
            subject,
            peer_is_initiator,
        } => (
            "identity-mismatch",
            ev.s("got", id)
                .s("subject", subject)
                .role(*peer_is_initiator),
        ),
        E::PeerSignatureInvalid {
            method,
            subject,
            why,
            peer_is_initiator,
        } => (
            "cert-untrusted",
            ev.s("reason", "auth signature invalid")
                .s("subject", subject)
                .s("method", method)
                .s("detail", why)
                .role(*peer_is_initiator),
        ),
        E::NoTrustAnchors => (
            "cert-untrusted",
            ev.s("reason", "no trust anchors")
                .s("detail", e.to_string()),
        ),
        E::PeerIdMismatch {
            got,
            want,
            peer_is_initiator,
        } => (
            "identity-mismatch",
            ev.s("got", got).s("want", want).role(*peer_is_initiator),
        ),
        // §2.9: traffic selectors.
        E::TsUnacceptable { proposed, allowed } => (
            "ts-mismatch",
            ev.s("side", "we").s("ours", allowed).s("theirs", proposed),
        ),
        E::PeerRefusedTs { ours } => (
            "ts-mismatch",
            ev.s("side", "peer")
                .s("ours", ours)
                .s("notify", "TS_UNACCEPTABLE"),
        ),
        E::TsNotWithin { got, ours } => (
            "ts-mismatch",
            ev.s("side", "we").s("ours", ours).s("theirs", got),
        ),
        // RFC 7296 §1.3.1 (USE_TRANSPORT_MODE): the two sides' policies differ in mode.
        E::ModeMismatch {
            peer_wants_transport,
            ours_transport,
        } => (
            "ts-mismatch",
            ev.s("side", "we")
                .s("our_mode", mode(*ours_transport))
                .s("peer_mode", mode(*peer_wants_transport)),
        ),
        E::NoChildSa => ("unclassified-failure", ev.s("kind", "NoChildSa")),
        // PFS on CREATE_CHILD_SA (§1.3.1, §3.3.3).
        E::PfsPeerWants {
            child,
            theirs,
            ours,
            ..
        } => (
            "pfs-mismatch",
            ev.s("child", child)
                .s("side", "we")
                .s("wants_pfs", "peer")
                .s("ours", ours)
                .s("theirs", theirs),
        ),
        E::PfsWeRequire { child, ours, .. } => (
            "pfs-mismatch",
            ev.s("child", child)
                .s("side", "we")
                .s("wants_pfs", "we")
                .s("ours", ours)
                .s("theirs", "no key exchange group"),
        ),
        E::PeerRefusedPfs { child, ours, .. } => (
            "pfs-mismatch",
            ev.s("child", child)
                .s("side", "peer")
                .s("wants_pfs", "we")
                .s("ours", ours)
                .s("notify", "NO_PROPOSAL_CHOSEN"),
        ),
        E::PfsKeMissing { chosen } => (
            "pfs-mismatch",
            ev.s("side", "we")
                .s("wants_pfs", "peer")
                .s("ours", chosen)
                .s("theirs", "no KE payload"),
        ),
        E::UnknownChildSa { inbound_spi } => (
            "unclassified-failure",
            ev.s("kind", "UnknownChildSa")
                .s("in_spi", format!("{inbound_spi:#010x}")),
        ),
        E::PeerNotify {
            exchange,
            notify: n,
        } => {
            let id = match *n {
                notify::AUTHENTICATION_FAILED => "auth-rejected",
                notify::NO_PROPOSAL_CHOSEN | notify::INVALID_KE_PAYLOAD => "proposal-mismatch",
                notify::TS_UNACCEPTABLE => "ts-mismatch",
                _ => "unclassified-failure",
            };
            let ev = ev
                .s("notify", notify::name(*n))
                .s("exchange", exchange)
                .s("side", "peer")
                .s("kind", "PeerNotify");
            let ev = if *exchange == "IKE_SA_INIT" && id == "proposal-mismatch" {
                ev.s("proposal", "ike")
            } else if id == "proposal-mismatch" {
                ev.s("proposal", "esp")
            } else {
                ev
            };
            (id, ev)
        }
        // §2.1, §2.4: our request went unanswered.
        E::Timeout { what, tries, peer } => {
            let id = if peer.port() == crate::ike::sa::NAT_T_PORT && *what != "IKE_SA_INIT" {
                "natt-blocked"
            } else {
                "ike-unanswered"
            };
            (
                id,
                ev.s("peer", peer)
                    .s("port", peer.port())
                    .s("exchange", what)
                    .s("direction", "out")
                    .s("tries", tries),
            )
        }
        E::PeerDead {
            probes,
            waited_ms,
            peer,
        } => (
            "peer-dead",
            ev.s("peer", peer)
                .s("probes", probes)
                .s("waited_ms", waited_ms),
        ),
        // §2.6: we answered IKE_SA_INIT, no IKE_AUTH came.
        E::HalfOpenExpired { peer, waited_ms } => (
            "ike-unanswered",
            ev.s("peer", peer)
                .s("port", peer.port())
                .s("exchange", "IKE_AUTH")
                .s("direction", "in")
                .s("waited_ms", waited_ms),
        ),
        E::NotEstablished => ("unclassified-failure", ev.s("kind", "NotEstablished")),
        E::NoSuchChild { index, count } => (
            "unclassified-failure",
            ev.s("kind", "NoSuchChild")
                .s("detail", format!("child {index} of {count}")),
        ),
        // The IKE SA's hard lifetime came before a completed rekey.
        E::Expired {
            rekey_tried,
            rekey_ms,
            over_ms,
        } => (
            "lifetime-mismatch",
            ev.s("our_rekey_s", rekey_ms / 1000)
                .s("our_life_s", (rekey_ms + over_ms) / 1000)
                .s("rekey_tried", rekey_tried),
        ),
    }
}

fn mode(transport: bool) -> &'static str {
    if transport {
        "transport"
    } else {
        "tunnel"
    }
}

/// `ah-proposed` when the peer's proposals are AH ones (RFC 8221 §3: ESP only), else `id`.
fn ah_or(id: &'static str, theirs: &str) -> &'static str {
    let ah = theirs
        .split([',', ' ', '-', ':', '(', ')', '[', ']'])
        .any(|w| w.eq_ignore_ascii_case("ah"));
    if ah {
        "ah-proposed"
    } else {
        id
    }
}

/// A refused certificate (RFC 5280 §6.1.3).
fn cert(e: &CertError, whose: &str) -> (&'static str, Ev) {
    use CertError as C;
    let ev = Ev::new();
    match e {
        C::NotYetValid {
            subject,
            not_before,
            not_after,
            now,
            ..
        } => (
            "cert-not-yet-valid",
            validity(ev, whose, subject, not_before, not_after, now, not_before),
        ),
        C::Expired {
            subject,
            not_before,
            not_after,
            now,
            ..
        } => (
            "cert-expired",
            validity(ev, whose, subject, not_before, not_after, now, not_after),
        ),
        C::Revoked {
            subject,
            serial,
            issuer,
            date,
            reason,
        } => (
            "cert-revoked",
            ev.s("subject", subject)
                .s("serial", serial)
                .s("issuer", issuer)
                .s("date", date)
                .s("reason", reason),
        ),
        C::Crl { issuer, reason } => ("cert-revoked", ev.s("issuer", issuer).s("reason", reason)),
        C::UntrustedIssuer { subject, issuer } => (
            "cert-untrusted",
            ev.s("reason", "untrusted issuer")
                .s("subject", subject)
                .s("issuer", issuer),
        ),
        C::BadSignature { subject, issuer } => (
            "cert-untrusted",
            ev.s("reason", "bad signature")
                .s("subject", subject)
                .s("issuer", issuer),
        ),
        C::Constraint { subject, reason } => (
            "cert-untrusted",
            ev.s("reason", "constraint")
                .s("subject", subject)
                .s("detail", reason),
        ),
        C::NoCertificate => ("cert-untrusted", ev.s("reason", "no certificate")),
        C::Malformed { what, reason } => (
            "cert-untrusted",
            ev.s("reason", "malformed")
                .s("detail", format!("{what}: {reason}")),
        ),
        // Our own files (read while validating: a CA or CRL file): the configuration.
        C::File { .. } | C::KeyPermissions { .. } | C::Key(_) => (
            "unclassified-failure",
            ev.s("kind", "CertFile").s("detail", e),
        ),
    }
}

fn validity(
    ev: Ev,
    whose: &str,
    subject: &str,
    not_before: &str,
    not_after: &str,
    now: &str,
    edge: &str,
) -> Ev {
    let ev = ev
        .s("whose", whose)
        .s("subject", subject)
        .s("not_before", not_before)
        .s("not_after", not_after)
        .s("clock", now);
    match (parse_utc(edge), parse_utc(now)) {
        (Some(a), Some(b)) => ev.s("skew_s", a.abs_diff(b)),
        _ => ev,
    }
}

/// "YYYY-MM-DD HH:MM:SS UTC" (as `pki` prints times) as Unix seconds.
pub fn parse_utc(s: &str) -> Option<i64> {
    let s = s.strip_suffix(" UTC")?;
    let (date, time) = s.split_once(' ')?;
    let d: Vec<i64> = date
        .split('-')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let t: Vec<i64> = time
        .split(':')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let ([y, m, day], [hh, mm, ss]) = (d.as_slice(), t.as_slice()) else {
        return None;
    };
    if !(1..=12).contains(m) || !(1..=31).contains(day) {
        return None;
    }
    Some(days_from_civil(*y, *m, *day) * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A certificate problem of ours (found by the probe), as a finding id and evidence.
pub fn classify_cert(e: &CertError, whose: &str) -> (&'static str, BTreeMap<String, String>) {
    let (id, ev) = cert(e, whose);
    (id, ev.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> std::net::SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn every_classification_is_a_catalog_id() {
        let errors = [
            IkeError::NoIkeProposal {
                ours: "aes128gcm16-prfsha256-x25519".into(),
                theirs: "aes256-sha256-prfsha256-modp2048".into(),
            },
            IkeError::PeerRefusedIkeProposals { ours: "a".into() },
            IkeError::PeerAuthInvalid {
                peer_id: "gw-b".into(),
                peer_is_initiator: true,
            },
            IkeError::Timeout {
                what: "IKE_SA_INIT",
                tries: 5,
                peer: at("192.0.2.2:500"),
            },
            IkeError::NotEstablished,
            IkeError::Expired {
                rekey_tried: true,
                rekey_ms: 3_600_000,
                over_ms: 360_000,
            },
        ];
        for e in errors {
            let (id, _) = classify(&e);
            assert!(super::super::catalog::kind(id).is_some(), "{id} for {e}");
        }
    }

    #[test]
    fn proposal_mismatch_says_who_refused_what() {
        let (id, ev) = classify(&IkeError::NoIkeProposal {
            ours: "aes128gcm16-prfsha256-x25519".into(),
            theirs: "aes256-sha256-prfsha256-modp2048".into(),
        });
        assert_eq!(id, "proposal-mismatch");
        assert_eq!(ev["side"], "we");
        assert_eq!(ev["exchange"], "IKE_SA_INIT");
        assert_eq!(ev["theirs"], "aes256-sha256-prfsha256-modp2048");
        let (id, ev) = classify(&IkeError::PeerRefusedEsp {
            ours: "aes256gcm16".into(),
        });
        assert_eq!(id, "proposal-mismatch");
        assert_eq!(
            (ev["side"].as_str(), ev["proposal"].as_str()),
            ("peer", "esp")
        );
        assert!(!ev.contains_key("theirs"));
    }

    #[test]
    fn an_ah_proposal_is_named_as_such() {
        let (id, _) = classify(&IkeError::NoEspProposal {
            ours: "aes256gcm16".into(),
            theirs: "AH: sha256".into(),
        });
        assert_eq!(id, "ah-proposed");
        let (id, _) = classify(&IkeError::NoEspProposal {
            ours: "aes256gcm16".into(),
            theirs: "aes128-sha256, chacha20poly1305".into(),
        });
        assert_eq!(id, "proposal-mismatch");
    }

    #[test]
    fn an_ike_auth_timeout_on_4500_is_natt_blocked() {
        let (id, ev) = classify(&IkeError::Timeout {
            what: "IKE_AUTH",
            tries: 3,
            peer: at("192.0.2.2:4500"),
        });
        assert_eq!(id, "natt-blocked");
        assert_eq!((ev["port"].as_str(), ev["tries"].as_str()), ("4500", "3"));
        let (id, ev) = classify(&IkeError::Timeout {
            what: "IKE_SA_INIT",
            tries: 3,
            peer: at("192.0.2.2:500"),
        });
        assert_eq!(id, "ike-unanswered");
        assert_eq!(ev["peer"], "192.0.2.2:500");
    }

    #[test]
    fn a_not_yet_valid_certificate_gives_the_skew_in_seconds() {
        let e = IkeError::PeerCert {
            error: Box::new(CertError::NotYetValid {
                subject: "CN=gw-b".into(),
                not_before: "2030-01-02 00:00:00 UTC".into(),
                not_after: "2031-01-01 00:00:00 UTC".into(),
                now: "2030-01-01 23:00:00 UTC".into(),
                off_by: "60 minutes".into(),
            }),
            peer_is_initiator: false,
        };
        let (id, ev) = classify(&e);
        assert_eq!(id, "cert-not-yet-valid");
        assert_eq!(ev["skew_s"], "3600");
        assert_eq!(ev["whose"], "peer");
        assert_eq!(ev["peer_role"], "responder");
    }

    #[test]
    fn utc_times_parse_to_unix_seconds() {
        assert_eq!(parse_utc("1970-01-01 00:00:00 UTC"), Some(0));
        assert_eq!(parse_utc("2000-03-01 00:00:01 UTC"), Some(951_868_801));
        assert_eq!(parse_utc("2024-02-29 12:00:00 UTC"), Some(1_709_208_000));
        assert_eq!(parse_utc("2024-13-01 00:00:00 UTC"), None);
        assert_eq!(parse_utc("yesterday"), None);
    }

    #[test]
    fn pfs_and_lifetime_findings_carry_numbers() {
        let (id, ev) = classify(&IkeError::PfsWeRequire {
            child: "net".into(),
            ours: "x25519".into(),
            first: "x25519".into(),
        });
        assert_eq!(id, "pfs-mismatch");
        assert_eq!(ev["wants_pfs"], "we");
        let (id, ev) = classify(&IkeError::Expired {
            rekey_tried: false,
            rekey_ms: 3_600_000,
            over_ms: 360_000,
        });
        assert_eq!(id, "lifetime-mismatch");
        assert_eq!(ev["our_rekey_s"], "3600");
        assert_eq!(ev["our_life_s"], "3960");
    }
}
