//! Our own credentials: the certificate chain (PEM or DER files) and the private key
//! (PKCS#1, SEC1 or PKCS#8, as strongSwan's `pki` writes them), zeroized when dropped.

use std::path::Path;

use super::CertError;
use crate::ike::sig::PrivateKey;

/// Our certificate chain and its private key.
pub struct Credentials {
    /// DER certificates: ours first, then the intermediates we send.
    pub chain: Vec<Vec<u8>>,
    /// Our certificate's subject, swanctl syntax (`C=CH, O=example, CN=gw-a`).
    pub subject: String,
    pub key: PrivateKey,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("subject", &self.subject)
            .field("chain", &self.chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl PartialEq for Credentials {
    fn eq(&self, o: &Self) -> bool {
        self.chain == o.chain && self.key.public_spki_der() == o.key.public_spki_der()
    }
}

impl Credentials {
    /// Our certificate (`cert`, then intermediates from `intermediates`) and the key in
    /// `key_file`, which must belong to the certificate.
    pub fn load(
        cert: &Path,
        intermediates: &[&Path],
        key_file: &Path,
    ) -> Result<Credentials, CertError> {
        let _ = (cert, intermediates, key_file);
        Err(CertError::Key("not implemented yet".into()))
    }
}

/// Every certificate in a PEM (one or more blocks) or DER file, as DER.
pub fn read_certs(path: &Path) -> Result<Vec<Vec<u8>>, CertError> {
    let _ = path;
    Err(CertError::File {
        path: path.display().to_string(),
        reason: "not implemented yet".into(),
    })
}
