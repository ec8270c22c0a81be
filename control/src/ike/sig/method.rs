//! AUTH methods (RFC 7296 §3.8, RFC 4754 §3, RFC 7427 §3).

/// RSA Digital Signature: RSASSA-PKCS1-v1_5, with SHA-1 as every implementation does.
pub const RSA_SIG: u8 = 1;
pub const ECDSA_SHA256_P256: u8 = 9;
pub const ECDSA_SHA384_P384: u8 = 10;
pub const ECDSA_SHA512_P521: u8 = 11;
/// RFC 7427 Digital Signature.
pub const DIGITAL_SIGNATURE: u8 = 14;

/// Whether `m` is one of the signature methods (as opposed to PSK, 2).
pub fn is_signature(m: u8) -> bool {
    matches!(
        m,
        RSA_SIG | ECDSA_SHA256_P256 | ECDSA_SHA384_P384 | ECDSA_SHA512_P521 | DIGITAL_SIGNATURE
    )
}

/// The method's name in logs.
pub fn name(m: u8) -> String {
    match m {
        RSA_SIG => "RSA signature (1)".into(),
        2 => "pre-shared key (2)".into(),
        ECDSA_SHA256_P256 => "ECDSA P-256 (9)".into(),
        ECDSA_SHA384_P384 => "ECDSA P-384 (10)".into(),
        ECDSA_SHA512_P521 => "ECDSA P-521 (11)".into(),
        DIGITAL_SIGNATURE => "digital signature (14)".into(),
        m => format!("method {m}"),
    }
}
