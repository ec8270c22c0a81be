//! Identities and certificates: swanctl's DN syntax (forward order, `C=CH, O=example,
//! CN=gw-b`), DN matching with strongSwan's rules (RDNs in order, `*` a wildcard), and
//! whether a certificate holds an identity (RFC 4945 §3.1: SAN for FQDN/IP/email, the
//! subject for DNs).

use super::PeerCert;
use crate::ike::wire::Id;

/// DER of the Name for a swanctl DN string.
pub fn parse_dn(s: &str) -> Result<Vec<u8>, String> {
    Err(format!("{s}: DN parsing not implemented yet"))
}

/// A DER Name in swanctl syntax.
pub fn show_dn(der: &[u8]) -> String {
    format!("<DN, {} bytes>", der.len())
}

/// Whether the identity `got` satisfies the configured `want` (swanctl `remote.id`,
/// wildcards included).
pub fn id_matches(want: &str, got: &Id) -> bool {
    crate::ike::auth::parse_id(want) == *got
}

/// Whether `cert` holds `id` (RFC 4945 §3.1).
pub fn cert_has_id(cert: &PeerCert, id: &Id) -> bool {
    let _ = (cert, id);
    false
}
