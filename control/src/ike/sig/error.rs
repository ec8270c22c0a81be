//! Why a key or signature was refused.

/// Why a key or signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SigError {
    #[error("{0}")]
    Key(String),
    #[error("unsupported signature algorithm {0}")]
    Unsupported(String),
    #[error("the signature does not verify")]
    Invalid,
    /// Authentication Data or an AlgorithmIdentifier that cannot be parsed.
    #[error("malformed signature data: {0}")]
    Malformed(String),
    /// The scheme (or AUTH method) needs another kind of key than the one we have.
    #[error("a {scheme} signature cannot be made or checked with an {key} key")]
    WrongKey { scheme: String, key: String },
}

/// A DER error, said as what was being read or written.
pub(super) fn der_err(what: &str) -> impl Fn(der::Error) -> SigError + '_ {
    move |e| SigError::Malformed(format!("{what}: {e}"))
}

/// A key error, said as which key it was.
pub(super) fn key_err(what: &str) -> impl Fn(String) -> SigError + '_ {
    move |e| SigError::Key(format!("{what}: {e}"))
}
