//! Why a certificate, chain, key or CRL was refused, in words an operator can act on.

/// Why a certificate or key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// A file could not be read or parsed.
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    /// DER/PEM that is not a certificate, key or CRL.
    #[error("{what}: {reason}")]
    Malformed { what: String, reason: String },
    #[error("the peer sent no certificate")]
    NoCertificate,
    /// RFC 5280 §6.1.3 (a)(2): outside its validity period, also with the skew allowance.
    #[error("certificate \"{subject}\" is not valid yet: valid from {not_before} to {not_after}, which starts {off_by} after our clock ({now}); check the clocks")]
    NotYetValid {
        subject: String,
        not_before: String,
        not_after: String,
        now: String,
        off_by: String,
    },
    #[error("certificate \"{subject}\" has expired: valid from {not_before} to {not_after}, which ended {off_by} before our clock ({now}); check the clocks, or renew the certificate")]
    Expired {
        subject: String,
        not_before: String,
        not_after: String,
        now: String,
        off_by: String,
    },
    /// RFC 5280 §6.1.3 (a)(3).
    #[error("certificate \"{subject}\" (serial {serial}) was revoked on {date} ({reason}) by a CRL of \"{issuer}\"")]
    Revoked {
        subject: String,
        serial: String,
        issuer: String,
        date: String,
        reason: String,
    },
    #[error("certificate \"{subject}\": no trusted CA issued it (issuer \"{issuer}\" is not among our trust anchors or the intermediates sent)")]
    UntrustedIssuer { subject: String, issuer: String },
    #[error("certificate \"{subject}\": its signature by \"{issuer}\" does not verify")]
    BadSignature { subject: String, issuer: String },
    /// A CRL we hold that cannot be used (RFC 5280 §6.3.3).
    #[error("CRL of \"{issuer}\": {reason}")]
    Crl { issuer: String, reason: String },
    /// basicConstraints, pathLen, keyUsage, depth.
    #[error("certificate \"{subject}\": {reason}")]
    Constraint { subject: String, reason: String },
    /// A private key file others may read (RFC 4107 hygiene; swanctl refuses too).
    #[error(
        "{path}: the private key is readable by group or others (mode {mode:o}); chmod 600 it"
    )]
    KeyPermissions { path: String, mode: u32 },
    #[error("{0}")]
    Key(String),
}
