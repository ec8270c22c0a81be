//! X.509 for IKE (RFC 7296 §3.6, §3.7; RFC 5280 path validation as IKE needs it, RFC 4945):
//! our certificate chain and private key, the trust anchors and CRLs we check a peer's
//! chain against, and how identities match certificates.
//!
//! Parsing is `x509-cert`/`der`/`spki` (no hand-written ASN.1); the chain walk is ours
//! because the checks IKE needs (subject DN and rfc822Name identities, a clock-skew
//! allowance, errors that name the certificate and serial) do not fit rustls-webpki's model.

pub mod chain;
pub mod error;
pub mod ident;
pub mod load;
pub mod store;

pub use chain::{validate, PeerCert};
pub use error::CertError;
pub use ident::{cert_has_id, id_matches};
pub use load::{Credentials, KeyPermissions};
pub use store::TrustStore;

use std::sync::Arc;

/// How one side of a connection authenticates (swanctl `local.auth` / `remote.auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthKind {
    #[default]
    Psk,
    /// A signature with the key of an X.509 certificate (RFC 7296 §2.15, RFC 7427).
    Pubkey,
}

/// When we send our certificate (swanctl `send_cert`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SendCert {
    /// Only if the peer sent a CERTREQ (strongSwan's default).
    #[default]
    IfAsked,
    Always,
    Never,
}

/// The authentication half of a connection.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthConfig {
    pub local: AuthKind,
    pub remote: AuthKind,
    /// Our key and chain; `Some` when `local` is `Pubkey`.
    pub credentials: Option<Arc<Credentials>>,
    /// What we check the peer's chain against; `Some` when `remote` is `Pubkey`.
    pub trust: Option<Arc<TrustStore>>,
    pub send_cert: SendCert,
    /// Send CERTREQ with our trust anchors' key hashes (swanctl `send_certreq`, default yes).
    pub send_certreq: bool,
    /// How far a certificate's validity may be off our clock and still be accepted.
    pub clock_skew_s: u64,
    /// RFC 7427: announce SIGNATURE_HASH_ALGORITHMS and sign with method 14 when the peer
    /// announced it too (default). Off: neither, only the classic methods 1/9/10, like
    /// strongSwan's `charon.signature_authentication = no` (interop with old peers, tests).
    pub signature_authentication: bool,
}

/// The default clock-skew allowance: 5 minutes.
pub const DEFAULT_CLOCK_SKEW_S: u64 = 300;

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            local: AuthKind::Psk,
            remote: AuthKind::Psk,
            credentials: None,
            trust: None,
            send_cert: SendCert::IfAsked,
            send_certreq: true,
            clock_skew_s: DEFAULT_CLOCK_SKEW_S,
            signature_authentication: true,
        }
    }
}
