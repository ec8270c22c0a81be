//! Our own credentials: the certificate chain (PEM or DER files) and the private key
//! (PKCS#1, SEC1 or PKCS#8, as strongSwan's `pki` writes them), zeroized when dropped.

use std::path::Path;

use zeroize::Zeroizing;

use super::chain::Cert;
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

/// Whether a private key file's permissions are checked (see [`Credentials::load_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyPermissions {
    /// Refuse a key file group or others may read (the daemon's only choice).
    #[default]
    Strict,
    /// Accept it: for tests reading the fixtures, which git checks out 0644.
    AllowLooseForTests,
}

impl Credentials {
    /// Our certificate (`cert`, then intermediates from `intermediates`) and the key in
    /// `key_file`, which must belong to the certificate and be readable by its owner only.
    pub fn load(
        cert: &Path,
        intermediates: &[&Path],
        key_file: &Path,
    ) -> Result<Credentials, CertError> {
        Credentials::load_with(cert, intermediates, key_file, KeyPermissions::Strict)
    }

    /// [`Credentials::load`], choosing whether the key file's mode is checked.
    pub fn load_with(
        cert: &Path,
        intermediates: &[&Path],
        key_file: &Path,
        perms: KeyPermissions,
    ) -> Result<Credentials, CertError> {
        let mut chain = read_certs(cert)?;
        for p in intermediates {
            chain.extend(read_certs(p)?);
        }
        let key = read_key(key_file, perms)?;
        Credentials::new(chain, key).map_err(|e| match e {
            CertError::Key(reason) => CertError::Key(format!(
                "{}: {reason} ({})",
                key_file.display(),
                cert.display()
            )),
            e => e,
        })
    }

    /// Credentials from a chain (ours first) and a key, checking they belong together.
    pub fn new(chain: Vec<Vec<u8>>, key: PrivateKey) -> Result<Credentials, CertError> {
        let first = chain.first().ok_or_else(|| CertError::Malformed {
            what: "our certificate".into(),
            reason: "no certificate given".into(),
        })?;
        let c = Cert::parse(first, "our certificate")?;
        for (i, d) in chain.iter().enumerate().skip(1) {
            Cert::parse(d, &format!("intermediate {i} of our chain"))?;
        }
        if key.public_spki_der() != c.spki_der {
            return Err(CertError::Key(format!(
                "the private key does not belong to certificate \"{}\"",
                c.subject()
            )));
        }
        Ok(Credentials {
            subject: c.subject(),
            chain,
            key,
        })
    }
}

/// The file's contents, or an error naming it.
fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|e| CertError::File {
        path: path.display().to_string(),
        reason: format!("cannot read: {e}"),
    })
}

fn looks_like_pem(b: &[u8]) -> bool {
    b.windows(11).any(|w| w == b"-----BEGIN ")
}

/// Every PEM block in `text` (RFC 7468), with its label; text between blocks is ignored,
/// as openssl and strongSwan do.
pub(crate) fn pem_blocks(text: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.windows(11).position(|w| w == b"-----BEGIN ") {
        let block = &rest[start..];
        let label_end = block[11..]
            .windows(5)
            .position(|w| w == b"-----")
            .ok_or("a PEM BEGIN line is not terminated")?;
        let label = &block[11..11 + label_end];
        let mut end_line = b"-----END ".to_vec();
        end_line.extend_from_slice(label);
        end_line.extend_from_slice(b"-----");
        let end = block
            .windows(end_line.len())
            .position(|w| w == &end_line[..])
            .ok_or_else(|| format!("no {} line", String::from_utf8_lossy(&end_line)))?
            + end_line.len();
        let (label, der) =
            der::pem::decode_vec(&block[..end]).map_err(|e| format!("bad PEM: {e}"))?;
        out.push((label.to_string(), der));
        rest = &block[end..];
    }
    Ok(out)
}

/// Every certificate in a PEM (one or more blocks) or DER file, as DER.
pub fn read_certs(path: &Path) -> Result<Vec<Vec<u8>>, CertError> {
    let bytes = read(path)?;
    let bad = |reason: String| CertError::File {
        path: path.display().to_string(),
        reason,
    };
    let ders = if looks_like_pem(&bytes) {
        let blocks = pem_blocks(&bytes).map_err(bad)?;
        let certs: Vec<Vec<u8>> = blocks
            .into_iter()
            .filter(|(l, _)| l == "CERTIFICATE" || l == "X509 CERTIFICATE")
            .map(|(_, d)| d)
            .collect();
        if certs.is_empty() {
            return Err(bad("no CERTIFICATE block in this PEM file".into()));
        }
        certs
    } else {
        vec![bytes]
    };
    for (i, d) in ders.iter().enumerate() {
        Cert::parse(d, &format!("{} (certificate {})", path.display(), i + 1))?;
    }
    Ok(ders)
}

/// Every CRL in a PEM (`X509 CRL` blocks) or DER file, as DER, each checked to parse.
pub fn read_crls(path: &Path) -> Result<Vec<Vec<u8>>, CertError> {
    use der::Decode;
    let bytes = read(path)?;
    let bad = |reason: String| CertError::File {
        path: path.display().to_string(),
        reason,
    };
    let ders = if looks_like_pem(&bytes) {
        let crls: Vec<Vec<u8>> = pem_blocks(&bytes)
            .map_err(bad)?
            .into_iter()
            .filter(|(l, _)| l == "X509 CRL")
            .map(|(_, d)| d)
            .collect();
        if crls.is_empty() {
            return Err(bad("no X509 CRL block in this PEM file".into()));
        }
        crls
    } else {
        vec![bytes]
    };
    for d in &ders {
        x509_cert::crl::CertificateList::<x509_cert::certificate::Rfc5280>::from_der(d)
            .map_err(|e| bad(format!("not an X.509 CRL: {e}")))?;
    }
    Ok(ders)
}

/// Refuse a key file that group or others may read (or write).
#[cfg(unix)]
pub fn check_key_permissions(path: &Path) -> Result<(), CertError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| CertError::File {
        path: path.display().to_string(),
        reason: format!("cannot read: {e}"),
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(CertError::KeyPermissions {
            path: path.display().to_string(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
pub fn check_key_permissions(_path: &Path) -> Result<(), CertError> {
    Ok(())
}

/// A private key file: PEM (`RSA PRIVATE KEY`, `EC PRIVATE KEY`, `PRIVATE KEY`) or DER.
/// The file's bytes are wiped after parsing.
pub fn read_key(path: &Path, perms: KeyPermissions) -> Result<PrivateKey, CertError> {
    if perms == KeyPermissions::Strict {
        check_key_permissions(path)?;
    }
    let bytes = Zeroizing::new(read(path)?);
    let key = if looks_like_pem(&bytes) {
        let text = std::str::from_utf8(&bytes).map_err(|_| CertError::File {
            path: path.display().to_string(),
            reason: "a PEM file that is not text".into(),
        })?;
        PrivateKey::from_pem(text)
    } else {
        PrivateKey::from_der(&bytes)
    };
    key.map_err(|e| CertError::Key(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::chain::tests::fixture;

    #[test]
    fn certificates_read_from_pem_and_der() {
        let pem = read_certs(&fixture("gw-bCert.pem")).expect("reads");
        assert_eq!(pem.len(), 1);
        let dir = tempdir();
        let der_path = dir.join("gw-b.der");
        std::fs::write(&der_path, &pem[0]).expect("write");
        assert_eq!(read_certs(&der_path).expect("reads DER"), pem);
        // Several blocks with text around them.
        let both = dir.join("both.pem");
        let mut text = b"our chain\n".to_vec();
        text.extend(std::fs::read(fixture("gw-bCert.pem")).expect("fixture"));
        text.extend(b"and the intermediate\n");
        text.extend(std::fs::read(fixture("imCert.pem")).expect("fixture"));
        std::fs::write(&both, text).expect("write");
        let two = read_certs(&both).expect("reads");
        assert_eq!(two.len(), 2);
        assert_eq!(two[0], pem[0]);
        // Not a certificate: errors name the file.
        let e = read_certs(&fixture("gw-bKey.pem")).expect_err("a key");
        assert!(e.to_string().contains("gw-bKey.pem"), "{e}");
        let e = read_certs(&dir.join("missing.pem")).expect_err("missing");
        assert!(e.to_string().contains("missing.pem"), "{e}");
        let crl = read_crls(&fixture("im.crl.pem")).expect("crl");
        assert_eq!(crl.len(), 1);
        assert!(read_crls(&fixture("imCert.pem")).is_err());
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    /// A fresh directory under the system temp dir (removed by the test).
    pub(crate) fn tempdir() -> std::path::PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let d = std::env::temp_dir().join(format!(
            "pki-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }

    #[cfg(unix)]
    #[test]
    fn loose_key_permissions_are_refused_with_path_and_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempdir();
        let key = dir.join("gw-bKey.pem");
        std::fs::copy(fixture("gw-bKey.pem"), &key).expect("copy");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let e = Credentials::load(&fixture("gw-bCert.pem"), &[], &key).expect_err("loose");
        assert_eq!(
            e,
            CertError::KeyPermissions {
                path: key.display().to_string(),
                mode: 0o640
            }
        );
        let text = e.to_string();
        assert!(
            text.contains("gw-bKey.pem") && text.contains("640"),
            "{text}"
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(check_key_permissions(&key).is_ok());
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    #[test]
    fn credentials_load_for_every_key_type() {
        for n in ["gw-a", "gw-b", "gw-c", "gw-d"] {
            let c = Credentials::load_with(
                &fixture(&format!("{n}Cert.pem")),
                &[&fixture("imCert.pem")],
                &fixture(&format!("{n}Key.pem")),
                KeyPermissions::AllowLooseForTests,
            )
            .unwrap_or_else(|e| panic!("{n}: {e}"));
            assert_eq!(c.chain.len(), 2);
            assert_eq!(c.subject, format!("C=CH, O=example, CN={n}"));
            assert!(!format!("{c:?}").contains("PRIVATE"));
        }
        // A key that is not the certificate's.
        let e = Credentials::load_with(
            &fixture("gw-bCert.pem"),
            &[],
            &fixture("gw-cKey.pem"),
            KeyPermissions::AllowLooseForTests,
        )
        .expect_err("wrong key");
        let text = e.to_string();
        assert!(
            text.contains("gw-cKey.pem") && text.contains("does not belong"),
            "{text}"
        );
    }
}
