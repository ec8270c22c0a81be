//! Fixtures shared by the signature tests.

use der::Encode;

pub(super) fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

pub(super) fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/data/pki/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

pub(super) fn cert_spki(name: &str) -> Vec<u8> {
    use der::DecodePem;
    let c = x509_cert::Certificate::from_pem(fixture(name).as_bytes()).unwrap();
    c.tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .unwrap()
}
