//! Identities and certificates: swanctl's DN syntax (forward order, `C=CH, O=example,
//! CN=gw-b`), DN matching with strongSwan's rules (RDNs in order, `*` a wildcard), and
//! whether a certificate holds an identity (RFC 4945 §3.1: SAN for FQDN/IP/email, the
//! subject for DNs).

use der::asn1::{Any, Ia5StringRef, PrintableStringRef, TeletexStringRef, Utf8StringRef};
use der::{Decode, Encode, Tag, Tagged};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::name::{RdnSequence, RelativeDistinguishedName};

use super::PeerCert;
use crate::ike::auth::id_type;
use crate::ike::wire::Id;

/// How a value of an attribute is encoded when we build a DN from a string.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// PrintableString, or UTF8String when the value is not printable (strongSwan `atodn`).
    Printable,
    /// IA5String (email addresses, domain components).
    Ia5,
}

const EMAIL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.1");

/// The attribute names strongSwan knows (ss:identification.c `x501rdns`), the first of
/// each OID being the one we print.
const ATTRS: &[(&str, ObjectIdentifier, Kind)] = &[
    (
        "C",
        ObjectIdentifier::new_unwrap("2.5.4.6"),
        Kind::Printable,
    ),
    (
        "ST",
        ObjectIdentifier::new_unwrap("2.5.4.8"),
        Kind::Printable,
    ),
    (
        "S",
        ObjectIdentifier::new_unwrap("2.5.4.8"),
        Kind::Printable,
    ),
    (
        "L",
        ObjectIdentifier::new_unwrap("2.5.4.7"),
        Kind::Printable,
    ),
    (
        "O",
        ObjectIdentifier::new_unwrap("2.5.4.10"),
        Kind::Printable,
    ),
    (
        "OU",
        ObjectIdentifier::new_unwrap("2.5.4.11"),
        Kind::Printable,
    ),
    (
        "CN",
        ObjectIdentifier::new_unwrap("2.5.4.3"),
        Kind::Printable,
    ),
    (
        "SN",
        ObjectIdentifier::new_unwrap("2.5.4.4"),
        Kind::Printable,
    ),
    (
        "serialNumber",
        ObjectIdentifier::new_unwrap("2.5.4.5"),
        Kind::Printable,
    ),
    (
        "street",
        ObjectIdentifier::new_unwrap("2.5.4.9"),
        Kind::Printable,
    ),
    (
        "T",
        ObjectIdentifier::new_unwrap("2.5.4.12"),
        Kind::Printable,
    ),
    (
        "title",
        ObjectIdentifier::new_unwrap("2.5.4.12"),
        Kind::Printable,
    ),
    (
        "D",
        ObjectIdentifier::new_unwrap("2.5.4.13"),
        Kind::Printable,
    ),
    (
        "postalCode",
        ObjectIdentifier::new_unwrap("2.5.4.17"),
        Kind::Printable,
    ),
    (
        "N",
        ObjectIdentifier::new_unwrap("2.5.4.41"),
        Kind::Printable,
    ),
    (
        "G",
        ObjectIdentifier::new_unwrap("2.5.4.42"),
        Kind::Printable,
    ),
    (
        "I",
        ObjectIdentifier::new_unwrap("2.5.4.43"),
        Kind::Printable,
    ),
    (
        "dnQualifier",
        ObjectIdentifier::new_unwrap("2.5.4.46"),
        Kind::Printable,
    ),
    (
        "pseudonym",
        ObjectIdentifier::new_unwrap("2.5.4.65"),
        Kind::Printable,
    ),
    (
        "UID",
        ObjectIdentifier::new_unwrap("0.9.2342.19200300.100.1.1"),
        Kind::Printable,
    ),
    (
        "DC",
        ObjectIdentifier::new_unwrap("0.9.2342.19200300.100.1.25"),
        Kind::Ia5,
    ),
    (
        "E",
        ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.1"),
        Kind::Ia5,
    ),
    (
        "Email",
        ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.1"),
        Kind::Ia5,
    ),
    (
        "emailAddress",
        ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.1"),
        Kind::Ia5,
    ),
    (
        "unstructuredName",
        ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.2"),
        Kind::Ia5,
    ),
    (
        "UN",
        ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.2"),
        Kind::Ia5,
    ),
];

/// X.680 §41.4 PrintableString characters.
fn is_printable(s: &str) -> bool {
    s.bytes()
        .all(|c| c.is_ascii_alphanumeric() || b" '()+,-./:=?".contains(&c))
}

/// Split at unescaped `sep`, undoing `\x` escapes in each part.
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(n), Some(p)) = (chars.next(), parts.last_mut()) {
                    p.push(n);
                }
            }
            c if c == sep => parts.push(String::new()),
            c => {
                if let Some(p) = parts.last_mut() {
                    p.push(c);
                }
            }
        }
    }
    parts
}

/// DER of the Name for a swanctl DN string: RDNs in the order written (swanctl's forward
/// order, `C=CH, O=example, CN=gw-b`; the opposite of RFC 4514), `,` between them (`\,`
/// inside a value), names as strongSwan knows them or a dotted OID, values encoded as
/// strongSwan's `pki --dn` does (PrintableString when possible, else UTF8String; IA5String
/// for email addresses and domain components).
pub fn parse_dn(s: &str) -> Result<Vec<u8>, String> {
    let mut rdns = Vec::new();
    for part in split_unescaped(s, ',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(format!(
                "{s:?}: an empty relative name (two commas in a row?)"
            ));
        }
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: {part:?} is not NAME=VALUE"))?;
        let (key, value) = (key.trim(), value.trim());
        let (oid, kind) = match ATTRS.iter().find(|(n, _, _)| n.eq_ignore_ascii_case(key)) {
            Some((_, oid, kind)) => (*oid, *kind),
            None => (
                ObjectIdentifier::new(key).map_err(|_| {
                    format!(
                        "{s:?}: unknown attribute {key:?} (use C, ST, L, O, OU, CN, SN, \
                         serialNumber, T, G, I, UID, DC, E, or a dotted OID)"
                    )
                })?,
                Kind::Printable,
            ),
        };
        let tag = match kind {
            Kind::Ia5 if value.is_ascii() => Tag::Ia5String,
            Kind::Printable if is_printable(value) => Tag::PrintableString,
            _ => Tag::Utf8String,
        };
        let value = Any::new(tag, value.as_bytes()).map_err(|e| format!("{s:?}: {e}"))?;
        let rdn = RelativeDistinguishedName::try_from(vec![AttributeTypeAndValue { oid, value }])
            .map_err(|e| format!("{s:?}: {e}"))?;
        rdns.push(rdn);
    }
    RdnSequence::from(rdns)
        .to_der()
        .map_err(|e| format!("{s:?}: {e}"))
}

/// The text of a directory string value, if it is one we can show.
fn value_text(v: &Any) -> Option<&str> {
    match v.tag() {
        Tag::PrintableString => PrintableStringRef::try_from(v).ok().map(|s| s.as_str()),
        Tag::Utf8String => Utf8StringRef::try_from(v).ok().map(|s| s.as_str()),
        Tag::Ia5String => Ia5StringRef::try_from(v).ok().map(|s| s.as_str()),
        Tag::TeletexString => TeletexStringRef::try_from(v).ok().map(|s| s.as_str()),
        _ => None,
    }
}

fn attr_name(oid: &ObjectIdentifier) -> String {
    ATTRS
        .iter()
        .find(|(_, o, _)| o == oid)
        .map(|(n, _, _)| (*n).to_string())
        .unwrap_or_else(|| oid.to_string())
}

/// The attributes of a Name in order, RDN boundaries dropped (as strongSwan compares them).
fn attributes(der: &[u8]) -> Option<Vec<AttributeTypeAndValue>> {
    let seq = RdnSequence::from_der(der).ok()?;
    Some(seq.iter().flat_map(|rdn| rdn.iter().cloned()).collect())
}

/// A DER Name in swanctl syntax (forward order, `, ` between RDNs, `\,` for a comma in a
/// value, so [`parse_dn`] reads it back). Values that are not strings are shown as `#` and
/// their DER in hex.
pub fn show_dn(der: &[u8]) -> String {
    let Ok(seq) = RdnSequence::from_der(der) else {
        return format!("<malformed DN, {} bytes>", der.len());
    };
    let mut out = Vec::new();
    for rdn in seq.iter() {
        let mut parts = Vec::new();
        for atv in rdn.iter() {
            let value = match value_text(&atv.value) {
                Some(t) => t.replace('\\', "\\\\").replace(',', "\\,"),
                None => {
                    let d = atv.value.to_der().unwrap_or_default();
                    format!(
                        "#{}",
                        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
                    )
                }
            };
            parts.push(format!("{}={value}", attr_name(&atv.oid)));
        }
        out.push(parts.join(" + "));
    }
    out.join(", ")
}

/// strongSwan's `rdn_equals`: PrintableStrings (and email addresses in IA5String) compare
/// without case when both sides use that type, everything else byte for byte.
fn value_equals(oid: &ObjectIdentifier, a: &Any, b: &Any) -> bool {
    let (x, y) = (a.value(), b.value());
    let caseless = a.tag() == b.tag()
        && (a.tag() == Tag::PrintableString || (a.tag() == Tag::Ia5String && *oid == EMAIL));
    if caseless {
        x.eq_ignore_ascii_case(y)
    } else {
        x == y
    }
}

/// Whether the Name `got` matches `want` (both DER): the same attributes in the same order,
/// each value equal or `*` in `want` (ss:identification.c `compare_dn`).
pub fn dn_matches(want: &[u8], got: &[u8]) -> bool {
    let (Some(w), Some(g)) = (attributes(want), attributes(got)) else {
        return false;
    };
    w.len() == g.len()
        && w.iter().zip(&g).all(|(w, g)| {
            w.oid == g.oid && (w.value.value() == b"*" || value_equals(&w.oid, &w.value, &g.value))
        })
}

/// `want` with a leading `*` matches any name ending in what follows it; otherwise the
/// names are equal, ignoring case (DNS names and email addresses are caseless).
fn name_matches(want: &[u8], got: &[u8]) -> bool {
    match want.strip_prefix(b"*") {
        Some(suffix) => {
            got.len() >= suffix.len()
                && got[got.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        }
        None => want.eq_ignore_ascii_case(got),
    }
}

/// Whether the identity `got` satisfies the configured `want` (swanctl `remote.id`,
/// wildcards included: `%any`, `*`, `*.example`, `*@example.net`, `CN=*` in a DN).
pub fn id_matches(want: &str, got: &Id) -> bool {
    let want = want.trim();
    if want == "%any" || want == "*" {
        return true;
    }
    let w = crate::ike::auth::parse_id(want);
    if w.kind != got.kind {
        return false;
    }
    match w.kind {
        id_type::DER_ASN1_DN => dn_matches(&w.data, &got.data),
        id_type::FQDN | id_type::RFC822_ADDR => name_matches(&w.data, &got.data),
        _ => w.data == got.data,
    }
}

/// Whether `cert` holds `id` (RFC 4945 §3.1): a DN is the subject (strongSwan's matching
/// rules), an FQDN a dNSName, an email address an rfc822Name, an address an iPAddress of
/// subjectAltName. A key ID is never in a certificate here.
pub fn cert_has_id(cert: &PeerCert, id: &Id) -> bool {
    match id.kind {
        id_type::DER_ASN1_DN => dn_matches(&id.data, &cert.subject_der),
        id_type::FQDN => cert
            .san_dns
            .iter()
            .any(|d| d.as_bytes().eq_ignore_ascii_case(&id.data)),
        id_type::RFC822_ADDR => cert
            .san_email
            .iter()
            .any(|e| e.as_bytes().eq_ignore_ascii_case(&id.data)),
        id_type::IPV4_ADDR | id_type::IPV6_ADDR => cert.san_ip.iter().any(|a| match a {
            std::net::IpAddr::V4(v4) => v4.octets()[..] == id.data[..],
            std::net::IpAddr::V6(v6) => v6.octets()[..] == id.data[..],
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ike::auth::parse_id;

    #[test]
    fn dn_round_trips_in_forward_order_with_strongswan_types() {
        let der = parse_dn("C=CH, O=example, CN=gw-b").expect("parses");
        // The same bytes `pki --dn "C=CH, O=example, CN=gw-b"` wrote into the certificate.
        let pem = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/pki/gw-bCert.pem"
        ))
        .expect("fixture");
        let cert = x509_cert::Certificate::load_pem_chain(&pem).expect("a certificate");
        let subject = cert[0]
            .tbs_certificate()
            .subject()
            .to_der()
            .expect("encodes");
        assert_eq!(der, subject);
        assert_eq!(show_dn(&der), "C=CH, O=example, CN=gw-b");
        // Not printable: UTF8String; email: IA5String.
        let der = parse_dn("CN=Zürich, E=ops@example.net").expect("parses");
        let atvs = attributes(&der).expect("a Name");
        assert_eq!(atvs[0].value.tag(), Tag::Utf8String);
        assert_eq!(atvs[1].value.tag(), Tag::Ia5String);
        assert_eq!(show_dn(&der), "CN=Zürich, E=ops@example.net");
        // Escaped comma survives the round trip.
        let der = parse_dn(r"O=Example\, Inc., CN=x").expect("parses");
        assert_eq!(show_dn(&der), r"O=Example\, Inc., CN=x");
        assert_eq!(parse_dn(&show_dn(&der)).expect("parses"), der);
        // Dotted OIDs and errors.
        assert_eq!(
            show_dn(&parse_dn("2.5.4.3=a").expect("parses")),
            show_dn(&parse_dn("CN=a").expect("parses"))
        );
        assert!(parse_dn("C=CH,, CN=x").is_err());
        assert!(parse_dn("C=CH, nonsense").is_err());
        assert!(parse_dn("XX=1").is_err());
    }

    #[test]
    fn dn_matching_follows_strongswan() {
        let dn = |s: &str| parse_dn(s).expect("parses");
        let got = dn("C=CH, O=example, CN=gw-b");
        assert!(dn_matches(&dn("C=CH, O=example, CN=gw-b"), &got));
        // PrintableString on both sides: case does not matter.
        assert!(dn_matches(&dn("c=ch, o=EXAMPLE, cn=GW-B"), &got));
        assert!(dn_matches(&dn("C=CH, O=example, CN=*"), &got));
        assert!(!dn_matches(&dn("C=CH, O=example, CN=gw-a"), &got));
        // Order, count and attribute types matter.
        assert!(!dn_matches(&dn("CN=gw-b, O=example, C=CH"), &got));
        assert!(!dn_matches(&dn("C=CH, O=example"), &got));
        assert!(!dn_matches(&dn("C=CH, O=example, CN=gw-b, OU=x"), &got));
        assert!(!dn_matches(&dn("C=CH, OU=example, CN=gw-b"), &got));
        // UTF8String vs PrintableString: bytewise.
        let utf8 = dn("CN=Zürich");
        assert!(dn_matches(&utf8, &dn("CN=Zürich")));
        assert!(!dn_matches(&utf8, &dn("CN=zürich")));
        assert!(!dn_matches(b"\x30", &got));
    }

    #[test]
    fn ids_match_with_wildcards() {
        assert!(id_matches("gw-b.example", &parse_id("GW-B.example")));
        assert!(id_matches("*.example", &parse_id("gw-b.example")));
        assert!(!id_matches("*.example", &parse_id("gw-b.example.net")));
        assert!(id_matches("%any", &parse_id("10.0.0.1")));
        assert!(id_matches("*@example.net", &parse_id("ops@example.net")));
        assert!(id_matches("10.0.0.2", &parse_id("10.0.0.2")));
        assert!(!id_matches("10.0.0.2", &parse_id("10.0.0.3")));
        assert!(!id_matches("gw-b.example", &parse_id("10.0.0.2")));
        let dn = parse_id("C=CH, O=example, CN=gw-b");
        assert_eq!(dn.kind, id_type::DER_ASN1_DN);
        assert!(id_matches("C=CH, O=example, CN=*", &dn));
        assert!(id_matches("C=CH,O=example,CN=gw-b", &dn));
        assert!(!id_matches("C=CH, O=other, CN=*", &dn));
        assert!(!id_matches("gw-b", &dn));
    }
}
