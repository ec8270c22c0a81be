//! IKE_AUTH with certificates, ours against ours, sans-IO: every key type of the test PKI
//! (control/tests/data/pki: gw-a RSA-3072 with PSS, gw-b ECDSA P-256, gw-c P-384, gw-d
//! Ed25519; control/tests/data/pki-extra: gw-e P-521) in both roles, RFC 7427 method 14 and the classic methods, CERTREQ honoured,
//! and the refusals an operator meets (revoked, expired, not yet valid, an ID the
//! certificate does not hold, an untrusted CA, PSK on one side and certificates on the
//! other), each with the words the error must carry. The clock is fixed at 2027-06-01.

use std::collections::VecDeque;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use control::ike::child::{parse_ts, ChildCfg, EspProposal};
use control::ike::lifetime::{ChildLifetime, IkeLifetime, Limits};
use control::ike::sa::{peek, ChildRequest, Connection, Event, IkeError, IkeSa, Phase};
use control::ike::sig::PrivateKey;
use control::pki::{AuthConfig, AuthKind, Credentials, SendCert, TrustStore};
use zeroize::Zeroizing;

use crate::support::{Counter, Seeded};

/// 2027-06-01 00:00:00 UTC: inside every fixture's validity but expired's and notyet's.
const NOW_MS: u64 = 1_811_808_000_000;

const A: &str = "192.0.2.1:500";
const B: &str = "192.0.2.2:500";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn pem_file(name: &str) -> String {
    // gw-e (ECDSA P-521) was added later by scripts/gen-test-pki-p521.sh, under the same
    // intermediate CA.
    let dir = if name.starts_with("gw-e") {
        "pki-extra"
    } else {
        "pki"
    };
    std::fs::read_to_string(format!(
        "{}/tests/data/{dir}/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn cert_der(name: &str) -> Vec<u8> {
    let text = pem_file(name);
    let (label, der) = der::pem::decode_vec(text.as_bytes()).unwrap();
    assert_eq!(label, "CERTIFICATE");
    der
}

/// The credentials of fixture `name` (`gw-a`, …): its certificate, the intermediate CA it
/// was issued by (except under the other CA), and its key.
fn creds(name: &str) -> Arc<Credentials> {
    let mut chain = vec![cert_der(&format!("{name}Cert.pem"))];
    let org = if name.starts_with("other") {
        "other"
    } else {
        chain.push(cert_der("imCert.pem"));
        "example"
    };
    Arc::new(Credentials {
        chain,
        subject: format!("C=CH, O={org}, CN={name}"),
        key: PrivateKey::from_pem(&pem_file(&format!("{name}Key.pem"))).unwrap(),
    })
}

/// Trust in the root CA, with the intermediate's CRL (revoking `revoked`).
fn trust() -> Arc<TrustStore> {
    let (_, crl) = der::pem::decode_vec(pem_file("im.crl.pem").as_bytes()).unwrap();
    Arc::new(TrustStore {
        anchors: vec![cert_der("rootCert.pem")],
        intermediates: vec![],
        crls: vec![crl],
    })
}

fn pubkey_auth(me: &str) -> AuthConfig {
    AuthConfig {
        local: AuthKind::Pubkey,
        remote: AuthKind::Pubkey,
        credentials: Some(creds(me)),
        trust: Some(trust()),
        ..AuthConfig::default()
    }
}

fn conn(initiator: bool, local_id: &str, remote_id: &str, auth: AuthConfig) -> Connection {
    let (local, remote, lts, rts) = if initiator {
        (addr(A), addr(B), "10.1.0.0/16", "10.2.0.0/16")
    } else {
        (addr(B), addr(A), "10.2.0.0/16", "10.1.0.0/16")
    };
    Connection {
        name: "certs".into(),
        local,
        remote,
        local_id: local_id.into(),
        remote_id: remote_id.into(),
        psk: Zeroizing::new(b"a pre-shared key for the mismatch tests".to_vec()),
        ike: vec!["aes256gcm16-prfsha384-ecp384".parse().unwrap()],
        children: vec![ChildCfg {
            per_resource: 0,
            name: "net".into(),
            esp: vec!["aes256gcm16".parse::<EspProposal>().unwrap()],
            local_ts: vec![parse_ts(lts).unwrap()],
            remote_ts: vec![parse_ts(rts).unwrap()],
            transport: false,
            lifetime: ChildLifetime::from_swanctl(
                Limits {
                    rekey: Some(0),
                    ..Default::default()
                },
                Limits::default(),
                Limits::default(),
            ),
        }],
        force_encap: false,
        retransmit_ms: 1000,
        retransmit_tries: 2,
        lifetime: IkeLifetime::from_swanctl(Some(0), Some(0), None, None),
        auth,
        fragmentation: Default::default(),
    }
}

/// The initiator and (once IKE_SA_INIT arrived) the responder, both on the fixed clock,
/// and everything they logged.
struct Pair {
    now: u64,
    rng: Seeded,
    i: IkeSa,
    r: Option<IkeSa>,
    r_cfg: Connection,
    to_r: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    to_i: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    i_events: Vec<Event>,
    r_events: Vec<Event>,
    log: Arc<Mutex<Vec<u8>>>,
}

#[derive(Clone)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);
impl Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Pair {
    /// Run the whole setup (IKE_SA_INIT, IKE_AUTH, retransmissions until settled).
    fn run(i_cfg: Connection, r_cfg: Connection) -> Pair {
        let log = Arc::new(Mutex::new(Vec::new()));
        let buf = LogBuf(log.clone());
        let sub = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || buf.clone())
            .finish();
        tracing::subscriber::with_default(sub, || {
            let mut rng = Seeded(0x5eed_0000_0000_0013);
            let first = ChildRequest {
                child: 0,
                inbound_spi: 0x8000_0001,
            };
            let (l, r) = (i_cfg.local, i_cfg.remote);
            let mut i = IkeSa::initiate(i_cfg, l, r, first, true, 0, &mut rng);
            i.set_wall_clock(NOW_MS);
            let mut p = Pair {
                now: 0,
                rng,
                i,
                r: None,
                r_cfg,
                to_r: VecDeque::new(),
                to_i: VecDeque::new(),
                i_events: vec![],
                r_events: vec![],
                log,
            };
            p.settle();
            p
        })
    }

    fn collect(&mut self) {
        while let Some(e) = self.i.poll_event() {
            match e {
                Event::Send { from, to, data } => self.to_r.push_back((from, to, data)),
                e => self.i_events.push(e),
            }
        }
        if let Some(r) = self.r.as_mut() {
            while let Some(e) = r.poll_event() {
                match e {
                    Event::Send { from, to, data } => self.to_i.push_back((from, to, data)),
                    e => self.r_events.push(e),
                }
            }
        }
    }

    fn pump(&mut self) {
        let (mut i_spis, mut r_spis) = (Counter(0x8000_0101), Counter(0x8000_0002));
        for _ in 0..100 {
            self.collect();
            if self.to_r.is_empty() && self.to_i.is_empty() {
                return;
            }
            while let Some((from, to, data)) = self.to_r.pop_front() {
                let h = peek(&data).unwrap();
                if self.r.is_none() && h.exchange == control::ike::wire::exchange::IKE_SA_INIT {
                    match IkeSa::respond(
                        self.r_cfg.clone(),
                        to,
                        from,
                        &data,
                        self.now,
                        &mut self.rng,
                    ) {
                        Ok(mut r) => {
                            r.set_wall_clock(NOW_MS);
                            self.r = Some(r);
                        }
                        Err(evs) => self.r_events.extend(evs),
                    }
                } else if let Some(r) = self.r.as_mut() {
                    r.handle(self.now, to, from, &data, &mut self.rng, &mut r_spis);
                }
            }
            while let Some((from, to, data)) = self.to_i.pop_front() {
                self.i
                    .handle(self.now, to, from, &data, &mut self.rng, &mut i_spis);
            }
        }
        panic!("the exchange does not settle");
    }

    /// Deliver, and let timers fire, until nothing is left to do.
    fn settle(&mut self) {
        let (mut i_spis, mut r_spis) = (Counter(0x8000_0201), Counter(0x8000_0202));
        for _ in 0..100 {
            self.pump();
            let next = [
                self.i.poll_timeout(),
                self.r.as_ref().and_then(|r| r.poll_timeout()),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(t) = next else { return };
            self.now = self.now.max(t);
            self.i.handle_timeout(self.now, &mut self.rng, &mut i_spis);
            if let Some(r) = self.r.as_mut() {
                r.handle_timeout(self.now, &mut self.rng, &mut r_spis);
            }
        }
        panic!("timers keep firing");
    }

    /// What both SAs logged: their `Event::Log` lines (the SA hands its lines to the daemon
    /// rather than logging them itself), then anything logged through `tracing`.
    fn log(&self) -> String {
        let mut out = String::new();
        for e in self.i_events.iter().chain(&self.r_events) {
            if let Event::Log { message, .. } = e {
                out.push_str(message);
                out.push('\n');
            }
        }
        out + &String::from_utf8_lossy(&self.log.lock().unwrap())
    }

    fn established(&self) -> bool {
        let up = |ev: &[Event]| ev.iter().any(|e| matches!(e, Event::Established { .. }));
        let child = |ev: &[Event]| ev.iter().any(|e| matches!(e, Event::ChildUp(_)));
        up(&self.i_events)
            && up(&self.r_events)
            && child(&self.i_events)
            && child(&self.r_events)
            && self.i.phase() == Phase::Established
    }

    fn i_failure(&self) -> Option<&IkeError> {
        failure(&self.i_events)
    }

    fn r_failure(&self) -> Option<&IkeError> {
        failure(&self.r_events)
    }
}

fn failure(events: &[Event]) -> Option<&IkeError> {
    events.iter().find_map(|e| match e {
        Event::Failed(f) => Some(f),
        _ => None,
    })
}

fn id(name: &str) -> String {
    format!("{name}.example")
}

/// A pubkey setup between fixtures `i` and `r`.
fn pubkey_pair(i: &str, r: &str, tweak: impl Fn(&mut AuthConfig, &mut AuthConfig)) -> Pair {
    let (mut ia, mut ra) = (pubkey_auth(i), pubkey_auth(r));
    tweak(&mut ia, &mut ra);
    Pair::run(
        conn(true, &id(i), &id(r), ia),
        conn(false, &id(r), &id(i), ra),
    )
}

fn assert_contains(text: &str, words: &[&str]) {
    for w in words {
        assert!(text.contains(w), "{w:?} missing in: {text}");
    }
}

/// Every key type as initiator once and as responder once, RFC 7427 (method 14) with the
/// scheme of each key; both sides sent CERTREQ and their chain (EE + intermediate).
#[test]
fn every_key_type_in_both_roles_with_digital_signatures() {
    for (i, r, i_scheme, r_scheme) in [
        (
            "gw-a",
            "gw-b",
            "RSA-PSS with SHA2_256",
            "ECDSA with SHA2_256",
        ),
        ("gw-b", "gw-c", "ECDSA with SHA2_256", "ECDSA with SHA2_384"),
        ("gw-c", "gw-d", "ECDSA with SHA2_384", "Ed25519"),
        ("gw-d", "gw-a", "Ed25519", "RSA-PSS with SHA2_256"),
        ("gw-e", "gw-b", "ECDSA with SHA2_512", "ECDSA with SHA2_256"),
        ("gw-c", "gw-e", "ECDSA with SHA2_384", "ECDSA with SHA2_512"),
    ] {
        let p = pubkey_pair(i, r, |_, _| {});
        let log = p.log();
        assert!(
            p.established(),
            "{i} -> {r}: {:?} / {:?}\n{log}",
            p.i_failure(),
            p.r_failure()
        );
        assert_contains(
            &log,
            &[
                &format!("authentication of '{}' with {i_scheme}, AUTH digital signature (14), successful", id(i)),
                &format!("authentication of '{}' with {r_scheme}, AUTH digital signature (14), successful", id(r)),
                &format!("received end entity cert \"C=CH, O=example, CN={i}\""),
                &format!("received end entity cert \"C=CH, O=example, CN={r}\""),
                &format!("sending end entity cert \"C=CH, O=example, CN={i}\""),
                "received issuer cert \"C=CH, O=example, CN=Intermediate CA\"",
                "received cert request for \"C=CH, O=example, CN=Root CA\"",
            ],
        );
    }
}

/// A peer that announces no SIGNATURE_HASH_ALGORITHMS (signature_authentication off on
/// one side, as strongSwan's option): both sides sign with the classic method of their key
/// (1 RSA PKCS#1 SHA-1, 9 ECDSA P-256, 10 ECDSA P-384, 11 ECDSA P-521).
#[test]
fn classic_methods_without_signature_hash_algorithms() {
    for (i, r, i_method, r_method) in [
        ("gw-a", "gw-b", "RSA signature (1)", "ECDSA P-256 (9)"),
        ("gw-c", "gw-a", "ECDSA P-384 (10)", "RSA signature (1)"),
        ("gw-e", "gw-a", "ECDSA P-521 (11)", "RSA signature (1)"),
        ("gw-b", "gw-e", "ECDSA P-256 (9)", "ECDSA P-521 (11)"),
    ] {
        let p = pubkey_pair(i, r, |_, ra| ra.signature_authentication = false);
        let log = p.log();
        assert!(
            p.established(),
            "{i} -> {r}: {:?} / {:?}",
            p.i_failure(),
            p.r_failure()
        );
        assert_contains(
            &log,
            &[
                &format!("authentication of '{}' with", id(i)),
                &format!("AUTH {i_method}, successful"),
                &format!("AUTH {r_method}, successful"),
            ],
        );
        assert!(!log.contains("digital signature (14), successful"), "{log}");
    }
}

/// Ed25519 has no classic method (RFC 8420 needs RFC 7427): refused in words.
#[test]
fn ed25519_needs_the_peers_hash_announcement() {
    let p = pubkey_pair("gw-d", "gw-b", |_, ra| ra.signature_authentication = false);
    let e = p
        .i_failure()
        .expect("the initiator cannot sign")
        .to_string();
    assert_contains(
        &e,
        &[
            "cannot authenticate",
            "Ed25519",
            "SIGNATURE_HASH_ALGORITHMS",
        ],
    );
}

/// send_cert = ifasked (the default): no CERT without the peer's CERTREQ, and the peer
/// then has no certificate to check; `always` sends it unasked.
#[test]
fn certreq_is_honoured() {
    let p = pubkey_pair("gw-b", "gw-c", |_, ra| ra.send_certreq = false);
    let log = p.log();
    assert!(!log.contains("sending end entity cert"), "{log}");
    assert!(
        log.contains("not sending our certificate (")
            && log.contains("the peer sent no cert request)"),
        "{log}"
    );
    let e = p
        .r_failure()
        .expect("the responder has no certificate to check");
    assert!(
        matches!(
            e,
            IkeError::PeerCert {
                peer_is_initiator: true,
                ..
            }
        ),
        "{e:?}"
    );
    assert_contains(
        &e.to_string(),
        &["initiator's certificate was refused", "no certificate"],
    );
    let e = p
        .i_failure()
        .expect("the initiator hears AUTHENTICATION_FAILED");
    assert!(matches!(e, IkeError::PeerRejectedAuth { .. }), "{e:?}");

    let p = pubkey_pair("gw-b", "gw-c", |ia, ra| {
        ra.send_certreq = false;
        ia.send_cert = SendCert::Always;
    });
    assert!(p.established(), "{:?} / {:?}", p.i_failure(), p.r_failure());
}

/// The initiator's certificate is in the CRL.
#[test]
fn revoked_certificate_is_refused() {
    let p = pubkey_pair("revoked", "gw-b", |_, _| {});
    let e = p.r_failure().expect("refused").to_string();
    assert_contains(
        &e,
        &[
            "initiator's certificate was refused",
            "revoked",
            "CN=revoked",
            "serial",
        ],
    );
    assert!(!p.established());
}

/// Expired and not-yet-valid certificates, on either side: the clock message.
#[test]
fn expired_and_not_yet_valid_certificates_name_the_clock() {
    let p = pubkey_pair("expired", "gw-b", |_, _| {});
    let e = p.r_failure().expect("refused").to_string();
    assert_contains(
        &e,
        &["initiator's certificate", "expired", "check the clocks"],
    );

    let p = pubkey_pair("gw-b", "notyet", |_, _| {});
    let e = p.i_failure().expect("refused").to_string();
    assert_contains(
        &e,
        &[
            "responder's certificate",
            "not valid yet",
            "check the clocks",
        ],
    );
    // The responder hears of it in an AUTHENTICATION_FAILED notice (§2.21.2).
    assert!(
        matches!(p.r_failure(), Some(IkeError::PeerRejectedAuth { .. })),
        "{:?}",
        p.r_failure()
    );
}

/// The initiator claims an ID its certificate does not hold (gw-b's cert, gw-c's name).
#[test]
fn identity_not_in_the_certificate() {
    let p = Pair::run(
        conn(true, "gw-c.example", "gw-c.example", pubkey_auth("gw-b")),
        conn(false, "gw-c.example", "gw-c.example", pubkey_auth("gw-c")),
    );
    let e = p.r_failure().expect("refused");
    assert!(matches!(e, IkeError::PeerIdNotInCert { .. }), "{e:?}");
    assert_contains(
        &e.to_string(),
        &["gw-c.example", "CN=gw-b", "does not hold that identity"],
    );
}

/// A certificate from a CA the responder does not trust.
#[test]
fn untrusted_ca_is_refused() {
    let p = Pair::run(
        conn(
            true,
            "other-gw.example",
            "gw-b.example",
            pubkey_auth("other-gw"),
        ),
        conn(
            false,
            "gw-b.example",
            "other-gw.example",
            pubkey_auth("gw-b"),
        ),
    );
    let e = p.r_failure().expect("refused").to_string();
    assert_contains(
        &e,
        &[
            "initiator's certificate was refused",
            "no trusted CA",
            "Other CA",
        ],
    );
}

/// PSK on one side, certificates on the other, both ways: the message names what each
/// side used (not "the pre-shared key differs").
#[test]
fn psk_and_pubkey_mismatch_names_both_methods() {
    let psk = AuthConfig::default();
    // The initiator signs; the responder expects a PSK from it.
    let mut ia = pubkey_auth("gw-b");
    ia.remote = AuthKind::Psk;
    let mut ra = psk.clone();
    ra.local = AuthKind::Psk;
    let p = Pair::run(
        conn(true, "gw-b.example", "gw-c.example", ia),
        conn(false, "gw-c.example", "gw-b.example", ra),
    );
    let e = p.r_failure().expect("refused");
    assert!(
        matches!(
            e,
            IkeError::PeerUsedSignature {
                peer_is_initiator: true,
                ..
            }
        ),
        "{e:?}"
    );
    assert_contains(
        &e.to_string(),
        &[
            "initiator authenticated with a signature",
            "digital signature (14)",
            "expects a pre-shared key",
        ],
    );
    assert!(!e.to_string().contains("differs"));

    // The initiator uses the PSK; the responder expects a certificate signature.
    let mut ra = pubkey_auth("gw-c");
    ra.remote = AuthKind::Pubkey;
    let p = Pair::run(
        conn(true, "gw-b.example", "gw-c.example", psk.clone()),
        conn(false, "gw-c.example", "gw-b.example", ra),
    );
    let e = p.r_failure().expect("refused");
    assert!(
        matches!(
            e,
            IkeError::PeerUsedPsk {
                peer_is_initiator: true
            }
        ),
        "{e:?}"
    );
    assert_contains(
        &e.to_string(),
        &[
            "initiator authenticated with a pre-shared key",
            "expects a certificate signature",
        ],
    );
}
