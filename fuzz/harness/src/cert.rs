//! `ike_cert`: what iked does with the certificates, CRLs, AUTH signatures and identities a
//! peer sends (`control::pki`, `control::ike::sig`, RFC 7296 §3.5, §3.6, §2.15, RFC 7427,
//! RFC 5280), on arbitrary DER. Never a panic; every failure is an error value (its message
//! is rendered, as the daemon logs it).
//!
//! Input: `[mode][rest]`, mode % 4:
//! - 0, a peer's CERT payloads: `rest` is `[len:2][DER]...` (the last certificate takes
//!   what is left, at most 6), validated against the test PKI's root CA and its CRL at a
//!   time inside the fixtures' validity (`pki::validate`, as `check_peer_signature` does);
//!   each certificate also goes through the helpers that read a CA file
//!   (`key_hash`, `is_self_issued`, `subject_of`, `issuers_of`). A chain that validates
//!   must describe its first certificate.
//! - 1, a CRL: `rest` is a CRL held in the trust store next to the real one, and a valid
//!   chain (gw-b, Intermediate CA) is validated against it (`check_crls` parses every CRL).
//! - 2, an AUTH payload: `[key][method][data]`, `key` picks a fixture's public key (RSA,
//!   P-256, P-384, Ed25519, P-521), or with bit 7 set `rest` is `[len:2][SPKI DER]
//!   [method][data]`; the AUTH data is verified over fixed signed octets
//!   (`PublicKey::verify_auth`). Seeds carry real signatures.
//! - 3, an identity: `[kind][data]` as a peer's ID payload, matched against configured
//!   identities (`id_matches`, wildcards and DNs) and the fixture certificates
//!   (`cert_has_id`), and shown as the log shows it (`show_id`).
use std::path::PathBuf;
use std::sync::OnceLock;

use control::ike::auth::show_id;
use control::ike::sig::PublicKey;
use control::ike::wire::Id;
use control::pki::load::read_certs;
use control::pki::{self, cert_has_id, id_matches, PeerCert, TrustStore};

/// 2027-06-01 00:00:00 UTC: inside the validity of every fixture but expired/notyet.
pub const NOW: i64 = 1_811_808_000;

/// What [`auth`] signatures are made over (the seeds sign these octets).
pub const SIGNED_OCTETS: &[u8] = b"IKE_SA_INIT message | Nr | prf(SK_pi, IDi')";

/// The test PKI (control/tests/data/pki, pki-extra).
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../control/tests/data")
        .join(name)
}

/// The first certificate of a fixture file, DER.
pub fn cert_der(name: &str) -> Vec<u8> {
    read_certs(&fixture(name))
        .expect("fixture certificate")
        .remove(0)
}

/// The end-entity keys [`auth`] picks from, by `key` byte modulo their number.
pub const KEYS: &[&str] = &[
    "pki/gw-a",       // RSA 3072
    "pki/gw-b",       // ECDSA P-256
    "pki/gw-c",       // ECDSA P-384
    "pki/gw-d",       // Ed25519
    "pki-extra/gw-e", // ECDSA P-521
];

struct Fixtures {
    store: TrustStore,
    gw_b: Vec<u8>,
    im: Vec<u8>,
    root: Vec<u8>,
    spkis: Vec<Vec<u8>>,
    peers: Vec<PeerCert>,
}

fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let store = TrustStore::load(
            &[&fixture("pki/rootCert.pem")],
            &[],
            &[&fixture("pki/im.crl.pem")],
        )
        .expect("test trust store");
        let im = cert_der("pki/imCert.pem");
        let peers: Vec<PeerCert> = KEYS[..4]
            .iter()
            .map(|k| {
                let ee = cert_der(&format!("{k}Cert.pem"));
                pki::validate(&[ee, im.clone()], &store, NOW, 0).expect("fixture chain")
            })
            .collect();
        let spkis = KEYS
            .iter()
            .map(|k| {
                let ee = cert_der(&format!("{k}Cert.pem"));
                let spki = pki::validate(&[ee.clone(), im.clone()], &store, NOW, 0)
                    .map(|p| p.spki_der)
                    .ok();
                // gw-e is under its own root (pki-extra): take its key without the chain.
                spki.unwrap_or_else(|| spki_of(&ee))
            })
            .collect();
        Fixtures {
            gw_b: cert_der("pki/gw-bCert.pem"),
            root: cert_der("pki/rootCert.pem"),
            im,
            store,
            spkis,
            peers,
        }
    })
}

/// The SubjectPublicKeyInfo of a certificate (by validating it against itself as anchor).
fn spki_of(der: &[u8]) -> Vec<u8> {
    let store = TrustStore {
        anchors: vec![der.to_vec()],
        ..Default::default()
    };
    pki::validate(&[der.to_vec()], &store, NOW, u64::MAX / 4)
        .expect("a certificate validates as its own anchor")
        .spki_der
}

/// Split `[len:2][bytes]...` into at most `max` pieces; the last takes what is left.
fn split(mut b: &[u8], max: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !b.is_empty() && out.len() < max {
        if b.len() < 2 || out.len() + 1 == max {
            out.push(b.to_vec());
            break;
        }
        let l = usize::from(u16::from_be_bytes([b[0], b[1]])).min(b.len() - 2);
        out.push(b[2..2 + l].to_vec());
        b = &b[2 + l..];
    }
    out
}

/// The `ike_cert` harness.
pub fn cert(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let f = fixtures();
    match mode % 4 {
        0 => {
            let chain = split(rest, 6);
            match pki::validate(&chain, &f.store, NOW, 300) {
                Ok(p) => assert_eq!(p.der, chain[0], "a validated chain describes another cert"),
                Err(e) => assert!(!e.to_string().is_empty()),
            }
            let cas = [f.root.clone(), f.im.clone()];
            for c in &chain {
                let _ = pki::store::key_hash(c);
                let _ = pki::store::is_self_issued(c);
                let _ = pki::store::subject_of(c);
                let up = pki::store::issuers_of(c, &cas);
                assert!(up.len() <= pki::chain::MAX_INTERMEDIATES);
            }
        }
        1 => {
            let mut store = f.store.clone();
            store.crls.push(rest.to_vec());
            let chain = [f.gw_b.clone(), f.im.clone()];
            if let Err(e) = pki::validate(&chain, &store, NOW, 300) {
                assert!(!e.to_string().is_empty());
            }
        }
        2 => {
            let (spki, rest) = match rest.split_first() {
                Some((&k, r)) if k & 0x80 == 0 => {
                    (f.spkis[usize::from(k) % f.spkis.len()].clone(), r)
                }
                Some((_, r)) if r.len() >= 2 => {
                    let l = usize::from(u16::from_be_bytes([r[0], r[1]])).min(r.len() - 2);
                    (r[2..2 + l].to_vec(), &r[2 + l..])
                }
                _ => return,
            };
            let Some((&method, auth)) = rest.split_first() else {
                return;
            };
            match PublicKey::from_spki_der(&spki) {
                Ok(key) => {
                    let _ = key.kind();
                    if let Err(e) = key.verify_auth(method, auth, SIGNED_OCTETS) {
                        assert!(!e.to_string().is_empty());
                    }
                }
                Err(e) => assert!(!e.to_string().is_empty()),
            }
        }
        _ => {
            let Some((&kind, id_data)) = rest.split_first() else {
                return;
            };
            let id = Id {
                kind,
                data: id_data.to_vec(),
            };
            let _ = show_id(&id);
            for want in [
                "%any",
                "gw-b.example",
                "*.example",
                "*@example.net",
                "192.0.2.1",
                "2001:db8::1",
                "C=CH, O=example, CN=gw-a",
                "C=CH, O=example, CN=*",
                "@#0102030405",
            ] {
                let _ = id_matches(want, &id);
            }
            for p in &f.peers {
                let _ = cert_has_id(p, &id);
            }
            let _ = pki::ident::show_dn(id_data);
        }
    }
}
