//! Pre-shared-key authentication (RFC 7296 §2.15) and identities (§3.5).

use std::net::IpAddr;

use super::keys::{Prf, Secret};
use super::wire::Id;

/// AUTH method 2: shared key message integrity code.
pub const AUTH_PSK: u8 = 2;

/// Identity types (RFC 7296 §3.5).
pub mod id_type {
    pub const IPV4_ADDR: u8 = 1;
    pub const FQDN: u8 = 2;
    pub const RFC822_ADDR: u8 = 3;
    pub const IPV6_ADDR: u8 = 5;
    /// The DER of an X.501 Name (RFC 7296 §3.5; a certificate subject, RFC 4945 §3.1.5).
    pub const DER_ASN1_DN: u8 = 9;
    pub const KEY_ID: u8 = 11;
}

/// An identity as configured (swanctl-like): an address, a distinguished name in swanctl's
/// forward order (`C=CH, O=example, CN=gw-a`: anything with `=` that parses as one, as
/// strongSwan decides), `user@domain`, `@#hex` key-id, or a name (FQDN; a leading `@` is
/// dropped, as strongSwan does).
pub fn parse_id(s: &str) -> Id {
    if s.contains('=') {
        if let Ok(der) = crate::pki::ident::parse_dn(s) {
            return Id {
                kind: id_type::DER_ASN1_DN,
                data: der,
            };
        }
    }
    if let Ok(a) = s.parse::<IpAddr>() {
        return match a {
            IpAddr::V4(v4) => Id {
                kind: id_type::IPV4_ADDR,
                data: v4.octets().to_vec(),
            },
            IpAddr::V6(v6) => Id {
                kind: id_type::IPV6_ADDR,
                data: v6.octets().to_vec(),
            },
        };
    }
    if let Some(hex) = s.strip_prefix("@#") {
        let bytes: Option<Vec<u8>> = (0..hex.len())
            .step_by(2)
            .map(|i| {
                hex.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .collect();
        if let Some(b) = bytes {
            return Id {
                kind: id_type::KEY_ID,
                data: b,
            };
        }
    }
    if s.contains('@') && !s.starts_with('@') {
        return Id {
            kind: id_type::RFC822_ADDR,
            data: s.as_bytes().to_vec(),
        };
    }
    Id {
        kind: id_type::FQDN,
        data: s.trim_start_matches('@').as_bytes().to_vec(),
    }
}

/// An identity for logs, the way an operator writes it.
pub fn show_id(id: &Id) -> String {
    match (id.kind, id.data.len()) {
        (id_type::IPV4_ADDR, 4) => {
            IpAddr::from(<[u8; 4]>::try_from(&id.data[..]).expect("4 bytes")).to_string()
        }
        (id_type::IPV6_ADDR, 16) => {
            IpAddr::from(<[u8; 16]>::try_from(&id.data[..]).expect("16 bytes")).to_string()
        }
        (id_type::FQDN | id_type::RFC822_ADDR, _) => String::from_utf8_lossy(&id.data).into_owned(),
        (id_type::DER_ASN1_DN, _) => crate::pki::ident::show_dn(&id.data),
        (id_type::KEY_ID, _) => {
            let hex: String = id.data.iter().map(|b| format!("{b:02x}")).collect();
            format!("@#{hex}")
        }
        (k, _) => format!("<id type {k}, {} bytes>", id.data.len()),
    }
}

/// RFC 7296 §2.15: the octets an AUTH payload covers, for every method:
/// the sender's first message | the peer's nonce | prf(SK_p, ID body) [| IntAuth, RFC 9242
/// §3.3.2, empty without IKE_INTERMEDIATE].
pub fn signed_octets(
    prf: Prf,
    first_message: &[u8],
    peer_nonce: &[u8],
    sk_p: &[u8],
    id: &Id,
    int_auth: &[u8],
) -> Vec<u8> {
    let mut id_body = vec![id.kind, 0, 0, 0];
    id_body.extend_from_slice(&id.data);
    let maced_id = prf.prf(sk_p, &[&id_body]);
    let mut out = Vec::with_capacity(first_message.len() + peer_nonce.len() + 64);
    out.extend_from_slice(first_message);
    out.extend_from_slice(peer_nonce);
    out.extend_from_slice(&maced_id);
    out.extend_from_slice(int_auth);
    out
}

/// RFC 7296 §2.15: AUTH = prf(prf(PSK, "Key Pad for IKEv2"), <SignedOctets>).
pub fn psk_auth(prf: Prf, psk: &[u8], signed_octets: &[u8]) -> Secret {
    let key = prf.prf(psk, &[b"Key Pad for IKEv2"]);
    prf.prf(&key, &[signed_octets])
}

/// Constant-time comparison of AUTH values.
pub fn auth_matches(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_and_show_like_strongswan() {
        for (s, kind, shown) in [
            ("192.0.2.1", id_type::IPV4_ADDR, "192.0.2.1"),
            ("2001:db8::1", id_type::IPV6_ADDR, "2001:db8::1"),
            ("gw-a.example.net", id_type::FQDN, "gw-a.example.net"),
            ("@gw-b", id_type::FQDN, "gw-b"),
            ("ops@example.net", id_type::RFC822_ADDR, "ops@example.net"),
            ("@#0a0b", id_type::KEY_ID, "@#0a0b"),
            (
                "C=CH,  O=example,CN=gw-a",
                id_type::DER_ASN1_DN,
                "C=CH, O=example, CN=gw-a",
            ),
            (
                "E=ops@example.net, CN=x",
                id_type::DER_ASN1_DN,
                "E=ops@example.net, CN=x",
            ),
        ] {
            let id = parse_id(s);
            assert_eq!(id.kind, kind, "{s}");
            assert_eq!(show_id(&id), shown);
        }
    }

    #[test]
    fn psk_auth_depends_on_every_input() {
        let prf = Prf::HmacSha256;
        let id = parse_id("gw-a");
        let psk_auth = |psk: &[u8], m: &[u8], n: &[u8], skp: &[u8], id: &Id| {
            psk_auth(prf, psk, &signed_octets(prf, m, n, skp, id, &[]))
        };
        let base = psk_auth(b"secret", b"msg1", b"nonce", b"skp", &id);
        assert_eq!(base.len(), 32);
        assert!(auth_matches(
            &base,
            &psk_auth(b"secret", b"msg1", b"nonce", b"skp", &id)
        ));
        for other in [
            psk_auth(b"Secret", b"msg1", b"nonce", b"skp", &id),
            psk_auth(b"secret", b"msg2", b"nonce", b"skp", &id),
            psk_auth(b"secret", b"msg1", b"nonce2", b"skp", &id),
            psk_auth(b"secret", b"msg1", b"nonce", b"skq", &id),
            psk_auth(b"secret", b"msg1", b"nonce", b"skp", &parse_id("gw-b")),
        ] {
            assert!(!auth_matches(&base, &other));
        }
        // The definition, spelled out.
        let key = prf.prf(b"secret", &[b"Key Pad for IKEv2"]);
        let maced = prf.prf(b"skp", &[&[2, 0, 0, 0], b"gw-a"]);
        let want = prf.prf(&key, &[b"msg1", b"nonce", &maced]);
        assert_eq!(&base[..], &want[..]);
    }
}
