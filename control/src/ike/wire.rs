//! IKEv2 messages on the wire (RFC 7296 §3): the header, the payload chain, and every
//! payload the daemon speaks, as owned `Repr`s with `parse`/`emit`. Every length is checked
//! before it is used; malformed input is an error naming what was wrong, never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// RFC 7296 §3.1: the fixed header.
pub const HEADER_LEN: usize = 28;
/// RFC 7296 §3.2: the generic payload header.
pub const PAYLOAD_HEADER_LEN: usize = 4;

/// Exchange types (RFC 7296 §3.1).
pub mod exchange {
    pub const IKE_SA_INIT: u8 = 34;
    pub const IKE_AUTH: u8 = 35;
    pub const CREATE_CHILD_SA: u8 = 36;
    pub const INFORMATIONAL: u8 = 37;
    /// RFC 9242 §3.
    pub const IKE_INTERMEDIATE: u8 = 43;
    /// RFC 9370 §2.2.4.
    pub const IKE_FOLLOWUP_KE: u8 = 44;
}

/// Payload types (RFC 7296 §3.2).
pub mod payload {
    pub const NONE: u8 = 0;
    pub const SA: u8 = 33;
    pub const KE: u8 = 34;
    pub const IDI: u8 = 35;
    pub const IDR: u8 = 36;
    pub const CERT: u8 = 37;
    pub const CERTREQ: u8 = 38;
    pub const AUTH: u8 = 39;
    pub const NONCE: u8 = 40;
    pub const NOTIFY: u8 = 41;
    pub const DELETE: u8 = 42;
    pub const VENDOR_ID: u8 = 43;
    pub const TSI: u8 = 44;
    pub const TSR: u8 = 45;
    pub const SK: u8 = 46;
    pub const CP: u8 = 47;
    pub const EAP: u8 = 48;
    /// RFC 7383 §2.5: the Encrypted Fragment payload.
    pub const SKF: u8 = 53;
}

/// Certificate encodings (RFC 7296 §3.6).
pub mod cert_encoding {
    /// X.509 Certificate - Signature: one DER certificate.
    pub const X509_SIGNATURE: u8 = 4;
}

/// Header flags (RFC 7296 §3.1).
pub mod flags {
    pub const INITIATOR: u8 = 0x08;
    pub const VERSION: u8 = 0x10;
    pub const RESPONSE: u8 = 0x20;
}

/// Why a message could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    #[error("{what}: {have} bytes, {need} needed")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("{0}: length field disagrees with the data")]
    BadLength(&'static str),
    /// RFC 7296 §2.5: an unknown payload with the critical bit set must be rejected
    /// (answered with UNSUPPORTED_CRITICAL_PAYLOAD).
    #[error("unsupported critical payload type {0}")]
    UnsupportedCritical(u8),
    #[error("IKE major version {0} (we speak 2)")]
    Version(u8),
    #[error("the encrypted payload must be the last one (RFC 7296 §3.14)")]
    SkNotLast,
    #[error("bad {0}")]
    BadField(&'static str),
}

fn need(what: &'static str, b: &[u8], n: usize) -> Result<(), WireError> {
    if b.len() < n {
        Err(WireError::Truncated {
            what,
            need: n,
            have: b.len(),
        })
    } else {
        Ok(())
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// RFC 7296 §3.1: the IKE header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub spi_i: u64,
    pub spi_r: u64,
    /// Type of the first payload.
    pub next_payload: u8,
    pub major: u8,
    pub minor: u8,
    pub exchange: u8,
    pub flags: u8,
    pub message_id: u32,
    /// Length of the whole message.
    pub length: u32,
}

impl Header {
    /// Parse the header; the version is reported, not judged (the caller answers
    /// INVALID_MAJOR_VERSION or drops an IKEv1 packet, RFC 7296 §2.5, RFC 9395).
    pub fn parse(b: &[u8]) -> Result<Header, WireError> {
        need("IKE header", b, HEADER_LEN)?;
        Ok(Header {
            spi_i: u64::from_be_bytes(b[0..8].try_into().expect("8 bytes")),
            spi_r: u64::from_be_bytes(b[8..16].try_into().expect("8 bytes")),
            next_payload: b[16],
            major: b[17] >> 4,
            minor: b[17] & 0x0f,
            exchange: b[18],
            flags: b[19],
            message_id: be32(b, 20),
            length: be32(b, 24),
        })
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.spi_i.to_be_bytes());
        out.extend_from_slice(&self.spi_r.to_be_bytes());
        out.push(self.next_payload);
        out.push(self.major << 4 | (self.minor & 0x0f));
        out.push(self.exchange);
        out.push(self.flags);
        out.extend_from_slice(&self.message_id.to_be_bytes());
        out.extend_from_slice(&self.length.to_be_bytes());
    }

    pub fn is_response(&self) -> bool {
        self.flags & flags::RESPONSE != 0
    }
    pub fn from_initiator(&self) -> bool {
        self.flags & flags::INITIATOR != 0
    }
}

/// RFC 7296 §3.3.2: one transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transform {
    /// 1 ENCR, 2 PRF, 3 INTEG, 4 KE (D-H group), 5 ESN.
    pub kind: u8,
    pub id: u16,
    /// The Key Length attribute (§3.3.5), in bits.
    pub key_len: Option<u16>,
}

/// Transform types (RFC 7296 §3.3.2).
pub mod transform {
    pub const ENCR: u8 = 1;
    pub const PRF: u8 = 2;
    pub const INTEG: u8 = 3;
    pub const KE: u8 = 4;
    pub const ESN: u8 = 5;
}

/// RFC 7296 §3.3.1: one proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    pub number: u8,
    /// 1 IKE, 3 ESP.
    pub protocol: u8,
    pub spi: Vec<u8>,
    pub transforms: Vec<Transform>,
}

/// RFC 7296 §3.5: an identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Id {
    /// 1 IPv4, 2 FQDN, 3 RFC822 (email), 5 IPv6, 11 KEY_ID.
    pub kind: u8,
    pub data: Vec<u8>,
}

/// RFC 7296 §3.10: a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    pub protocol: u8,
    pub spi: Vec<u8>,
    pub kind: u16,
    pub data: Vec<u8>,
}

/// RFC 7296 §3.11: a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    pub protocol: u8,
    pub spi_size: u8,
    pub spis: Vec<Vec<u8>>,
}

/// RFC 7296 §3.13.1: one traffic selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ts {
    pub protocol: u8,
    pub start_port: u16,
    pub end_port: u16,
    pub start: IpAddr,
    pub end: IpAddr,
}

/// A payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Sa(Vec<Proposal>),
    Ke {
        group: u16,
        data: Vec<u8>,
    },
    IdI(Id),
    IdR(Id),
    Auth {
        method: u8,
        data: Vec<u8>,
    },
    Nonce(Vec<u8>),
    Notify(Notify),
    Delete(Delete),
    VendorId(Vec<u8>),
    TsI(Vec<Ts>),
    TsR(Vec<Ts>),
    /// RFC 7296 §3.6: one certificate (`encoding` 4 = DER X.509).
    Cert {
        encoding: u8,
        data: Vec<u8>,
    },
    /// RFC 7296 §3.7: for encoding 4, `data` is a list of 20-byte SHA-1 hashes of the
    /// trusted CAs' SubjectPublicKeyInfo.
    CertReq {
        encoding: u8,
        data: Vec<u8>,
    },
    /// RFC 7296 §3.14: the encrypted payload, kept whole (IV ‖ ciphertext ‖ ICV);
    /// `first` is the type of the first payload inside.
    Sk {
        first: u8,
        body: Vec<u8>,
    },
    /// A payload we do not interpret (not critical, or we would have refused it).
    Other {
        kind: u8,
        body: Vec<u8>,
    },
}

impl Payload {
    pub fn kind(&self) -> u8 {
        match self {
            Payload::Sa(_) => payload::SA,
            Payload::Ke { .. } => payload::KE,
            Payload::IdI(_) => payload::IDI,
            Payload::IdR(_) => payload::IDR,
            Payload::Auth { .. } => payload::AUTH,
            Payload::Nonce(_) => payload::NONCE,
            Payload::Notify(_) => payload::NOTIFY,
            Payload::Delete(_) => payload::DELETE,
            Payload::VendorId(_) => payload::VENDOR_ID,
            Payload::TsI(_) => payload::TSI,
            Payload::TsR(_) => payload::TSR,
            Payload::Cert { .. } => payload::CERT,
            Payload::CertReq { .. } => payload::CERTREQ,
            Payload::Sk { .. } => payload::SK,
            Payload::Other { kind, .. } => *kind,
        }
    }

    fn parse(kind: u8, b: &[u8]) -> Result<Payload, WireError> {
        Ok(match kind {
            payload::SA => Payload::Sa(parse_proposals(b)?),
            payload::KE => {
                need("KE payload", b, 4)?;
                Payload::Ke {
                    group: be16(b, 0),
                    data: b[4..].to_vec(),
                }
            }
            payload::IDI | payload::IDR => {
                need("ID payload", b, 4)?;
                let id = Id {
                    kind: b[0],
                    data: b[4..].to_vec(),
                };
                if kind == payload::IDI {
                    Payload::IdI(id)
                } else {
                    Payload::IdR(id)
                }
            }
            payload::AUTH => {
                need("AUTH payload", b, 4)?;
                Payload::Auth {
                    method: b[0],
                    data: b[4..].to_vec(),
                }
            }
            payload::NONCE => Payload::Nonce(b.to_vec()),
            payload::CERT | payload::CERTREQ => {
                need("CERT/CERTREQ payload", b, 1)?;
                let (encoding, data) = (b[0], b[1..].to_vec());
                if kind == payload::CERT {
                    Payload::Cert { encoding, data }
                } else {
                    Payload::CertReq { encoding, data }
                }
            }
            payload::NOTIFY => {
                need("Notify payload", b, 4)?;
                let spi_size = usize::from(b[1]);
                need("Notify SPI", b, 4 + spi_size)?;
                Payload::Notify(Notify {
                    protocol: b[0],
                    kind: be16(b, 2),
                    spi: b[4..4 + spi_size].to_vec(),
                    data: b[4 + spi_size..].to_vec(),
                })
            }
            payload::DELETE => {
                need("Delete payload", b, 4)?;
                let (size, n) = (usize::from(b[1]), usize::from(be16(b, 2)));
                need("Delete SPIs", b, 4 + size * n)?;
                if b.len() != 4 + size * n {
                    return Err(WireError::BadLength("Delete payload"));
                }
                Payload::Delete(Delete {
                    protocol: b[0],
                    spi_size: b[1],
                    spis: b[4..]
                        .chunks(size.max(1))
                        .take(n)
                        .map(<[u8]>::to_vec)
                        .collect(),
                })
            }
            payload::VENDOR_ID => Payload::VendorId(b.to_vec()),
            payload::TSI => Payload::TsI(parse_ts(b)?),
            payload::TSR => Payload::TsR(parse_ts(b)?),
            k => Payload::Other {
                kind: k,
                body: b.to_vec(),
            },
        })
    }

    fn emit_body(&self, out: &mut Vec<u8>) {
        match self {
            Payload::Sa(props) => {
                for (i, p) in props.iter().enumerate() {
                    let at = out.len();
                    out.push(if i + 1 == props.len() { 0 } else { 2 });
                    out.push(0);
                    out.extend_from_slice(&[0, 0]); // length, below
                    out.push(p.number);
                    out.push(p.protocol);
                    out.push(p.spi.len() as u8);
                    out.push(p.transforms.len() as u8);
                    out.extend_from_slice(&p.spi);
                    for (j, t) in p.transforms.iter().enumerate() {
                        out.push(if j + 1 == p.transforms.len() { 0 } else { 3 });
                        out.push(0);
                        let len: u16 = if t.key_len.is_some() { 12 } else { 8 };
                        out.extend_from_slice(&len.to_be_bytes());
                        out.push(t.kind);
                        out.push(0);
                        out.extend_from_slice(&t.id.to_be_bytes());
                        if let Some(k) = t.key_len {
                            // §3.3.5: Key Length, TV format (AF bit set), attribute type 14.
                            out.extend_from_slice(&0x800eu16.to_be_bytes());
                            out.extend_from_slice(&k.to_be_bytes());
                        }
                    }
                    let len = (out.len() - at) as u16;
                    out[at + 2..at + 4].copy_from_slice(&len.to_be_bytes());
                }
            }
            Payload::Ke { group, data } => {
                out.extend_from_slice(&group.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(data);
            }
            Payload::IdI(id) | Payload::IdR(id) => {
                out.extend_from_slice(&[id.kind, 0, 0, 0]);
                out.extend_from_slice(&id.data);
            }
            Payload::Auth { method, data } => {
                out.extend_from_slice(&[*method, 0, 0, 0]);
                out.extend_from_slice(data);
            }
            Payload::Nonce(d) | Payload::VendorId(d) => out.extend_from_slice(d),
            Payload::Notify(n) => {
                out.push(n.protocol);
                out.push(n.spi.len() as u8);
                out.extend_from_slice(&n.kind.to_be_bytes());
                out.extend_from_slice(&n.spi);
                out.extend_from_slice(&n.data);
            }
            Payload::Delete(d) => {
                out.push(d.protocol);
                out.push(d.spi_size);
                out.extend_from_slice(&(d.spis.len() as u16).to_be_bytes());
                for s in &d.spis {
                    out.extend_from_slice(s);
                }
            }
            Payload::TsI(ts) | Payload::TsR(ts) => {
                out.extend_from_slice(&[ts.len() as u8, 0, 0, 0]);
                for t in ts {
                    let v6 = t.start.is_ipv6();
                    out.push(if v6 { 8 } else { 7 });
                    out.push(t.protocol);
                    out.extend_from_slice(&(if v6 { 40u16 } else { 16 }).to_be_bytes());
                    out.extend_from_slice(&t.start_port.to_be_bytes());
                    out.extend_from_slice(&t.end_port.to_be_bytes());
                    for a in [t.start, t.end] {
                        match a {
                            IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
                            IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
                        }
                    }
                }
            }
            Payload::Cert { encoding, data } | Payload::CertReq { encoding, data } => {
                out.push(*encoding);
                out.extend_from_slice(data);
            }
            Payload::Sk { body, .. } => out.extend_from_slice(body),
            Payload::Other { body, .. } => out.extend_from_slice(body),
        }
    }
}

fn parse_proposals(mut b: &[u8]) -> Result<Vec<Proposal>, WireError> {
    let mut out = Vec::new();
    loop {
        need("proposal", b, 8)?;
        let (more, len) = (b[0], usize::from(be16(b, 2)));
        if len < 8 || len > b.len() {
            return Err(WireError::BadLength("proposal"));
        }
        let p = &b[..len];
        let (spi_size, n) = (usize::from(p[6]), usize::from(p[7]));
        need("proposal SPI", p, 8 + spi_size)?;
        let mut t = &p[8 + spi_size..];
        let mut transforms = Vec::with_capacity(n);
        for _ in 0..n {
            need("transform", t, 8)?;
            let tlen = usize::from(be16(t, 2));
            if tlen < 8 || tlen > t.len() {
                return Err(WireError::BadLength("transform"));
            }
            let mut key_len = None;
            let mut attrs = &t[8..tlen];
            while !attrs.is_empty() {
                need("transform attribute", attrs, 4)?;
                let ty = be16(attrs, 0);
                if ty & 0x8000 != 0 {
                    if ty & 0x7fff == 14 {
                        key_len = Some(be16(attrs, 2));
                    }
                    attrs = &attrs[4..];
                } else {
                    // TLV attributes: none defined for IKEv2 transforms; skip.
                    let l = 4 + usize::from(be16(attrs, 2));
                    need("transform attribute", attrs, l)?;
                    attrs = &attrs[l..];
                }
            }
            transforms.push(Transform {
                kind: t[4],
                id: be16(t, 6),
                key_len,
            });
            t = &t[tlen..];
        }
        if !t.is_empty() {
            return Err(WireError::BadLength("proposal transforms"));
        }
        out.push(Proposal {
            number: p[4],
            protocol: p[5],
            spi: p[8..8 + spi_size].to_vec(),
            transforms,
        });
        b = &b[len..];
        match more {
            0 if b.is_empty() => return Ok(out),
            2 if !b.is_empty() => {}
            _ => return Err(WireError::BadField("last-proposal flag")),
        }
    }
}

fn parse_ts(b: &[u8]) -> Result<Vec<Ts>, WireError> {
    need("TS payload", b, 4)?;
    let n = usize::from(b[0]);
    let mut rest = &b[4..];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        need("traffic selector", rest, 8)?;
        let len = usize::from(be16(rest, 2));
        let addr_len = match (rest[0], len) {
            (7, 16) => 4,
            (8, 40) => 16,
            _ => return Err(WireError::BadField("traffic selector type or length")),
        };
        need("traffic selector", rest, len)?;
        let addr = |at: usize| -> IpAddr {
            if addr_len == 4 {
                IpAddr::V4(Ipv4Addr::from(be32(rest, at)))
            } else {
                let mut o = [0u8; 16];
                o.copy_from_slice(&rest[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(o))
            }
        };
        out.push(Ts {
            protocol: rest[1],
            start_port: be16(rest, 4),
            end_port: be16(rest, 6),
            start: addr(8),
            end: addr(8 + addr_len),
        });
        rest = &rest[len..];
    }
    if !rest.is_empty() {
        return Err(WireError::BadLength("TS payload"));
    }
    Ok(out)
}

/// Parse a payload chain starting with type `first` (a message body, or the decrypted
/// contents of an SK payload).
pub fn parse_chain(first: u8, mut b: &[u8]) -> Result<Vec<Payload>, WireError> {
    let mut next = first;
    let mut out = Vec::new();
    while next != payload::NONE {
        need("payload header", b, PAYLOAD_HEADER_LEN)?;
        let (following, critical, len) = (b[0], b[1] & 0x80 != 0, usize::from(be16(b, 2)));
        if len < PAYLOAD_HEADER_LEN || len > b.len() {
            return Err(WireError::BadLength("payload"));
        }
        let body = &b[PAYLOAD_HEADER_LEN..len];
        if next == payload::SK {
            // §3.14: SK is last; its "next payload" names the first payload inside.
            if len != b.len() {
                return Err(WireError::SkNotLast);
            }
            out.push(Payload::Sk {
                first: following,
                body: body.to_vec(),
            });
            return Ok(out);
        }
        let p = Payload::parse(next, body)?;
        if critical && matches!(p, Payload::Other { .. }) {
            return Err(WireError::UnsupportedCritical(next));
        }
        out.push(p);
        next = following;
        b = &b[len..];
    }
    if !b.is_empty() {
        return Err(WireError::BadLength("payload chain"));
    }
    Ok(out)
}

/// Emit a payload chain; returns the type of the first payload.
pub fn emit_chain(payloads: &[Payload], out: &mut Vec<u8>) -> u8 {
    for (i, p) in payloads.iter().enumerate() {
        let next = match p {
            Payload::Sk { first, .. } => *first,
            _ => payloads.get(i + 1).map_or(payload::NONE, Payload::kind),
        };
        let at = out.len();
        out.extend_from_slice(&[next, 0, 0, 0]);
        p.emit_body(out);
        let len = (out.len() - at) as u16;
        out[at + 2..at + 4].copy_from_slice(&len.to_be_bytes());
    }
    payloads.first().map_or(payload::NONE, Payload::kind)
}

/// A whole message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub header: Header,
    pub payloads: Vec<Payload>,
}

impl Message {
    /// Parse an IKEv2 message (IKE version checks are the caller's, on [`Header`]).
    pub fn parse(b: &[u8]) -> Result<Message, WireError> {
        let header = Header::parse(b)?;
        if header.major != 2 {
            return Err(WireError::Version(header.major));
        }
        let len = header.length as usize;
        if len < HEADER_LEN || len > b.len() {
            return Err(WireError::BadLength("IKE message"));
        }
        let payloads = parse_chain(header.next_payload, &b[HEADER_LEN..len])?;
        Ok(Message { header, payloads })
    }

    /// Emit; the header's next-payload and length fields are filled in.
    pub fn emit(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(512);
        let first = emit_chain(&self.payloads, &mut body);
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        Header {
            next_payload: first,
            length: (HEADER_LEN + body.len()) as u32,
            ..self.header
        }
        .emit(&mut out);
        out.extend_from_slice(&body);
        out
    }

    /// The first notification of type `kind`, if any.
    pub fn notify(&self, kind: u16) -> Option<&Notify> {
        self.payloads.iter().find_map(|p| match p {
            Payload::Notify(n) if n.kind == kind => Some(n),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Message {
        Message {
            header: Header {
                spi_i: 0x0102_0304_0506_0708,
                spi_r: 0,
                next_payload: 0,
                major: 2,
                minor: 0,
                exchange: exchange::IKE_SA_INIT,
                flags: flags::INITIATOR,
                message_id: 0,
                length: 0,
            },
            payloads: vec![
                Payload::Sa(vec![
                    Proposal {
                        number: 1,
                        protocol: 1,
                        spi: vec![],
                        transforms: vec![
                            Transform {
                                kind: transform::ENCR,
                                id: 20,
                                key_len: Some(128),
                            },
                            Transform {
                                kind: transform::PRF,
                                id: 5,
                                key_len: None,
                            },
                            Transform {
                                kind: transform::KE,
                                id: 31,
                                key_len: None,
                            },
                        ],
                    },
                    Proposal {
                        number: 2,
                        protocol: 1,
                        spi: vec![],
                        transforms: vec![Transform {
                            kind: transform::KE,
                            id: 19,
                            key_len: None,
                        }],
                    },
                ]),
                Payload::Ke {
                    group: 31,
                    data: vec![9; 32],
                },
                Payload::Nonce(vec![7; 32]),
                Payload::Notify(Notify {
                    protocol: 0,
                    spi: vec![],
                    kind: 16388,
                    data: vec![1; 20],
                }),
                Payload::TsI(vec![Ts {
                    protocol: 0,
                    start_port: 0,
                    end_port: 65535,
                    start: "10.1.0.0".parse().unwrap(),
                    end: "10.1.255.255".parse().unwrap(),
                }]),
                Payload::TsR(vec![Ts {
                    protocol: 6,
                    start_port: 443,
                    end_port: 443,
                    start: "2001:db8::".parse().unwrap(),
                    end: "2001:db8::ffff".parse().unwrap(),
                }]),
                Payload::Delete(Delete {
                    protocol: 3,
                    spi_size: 4,
                    spis: vec![vec![1, 2, 3, 4], vec![5, 6, 7, 8]],
                }),
                Payload::IdI(Id {
                    kind: 2,
                    data: b"gw-a.example".to_vec(),
                }),
                Payload::Auth {
                    method: 2,
                    data: vec![3; 32],
                },
            ],
        }
    }

    #[test]
    fn messages_round_trip_and_every_truncation_is_refused() {
        let m = sample();
        let bytes = m.emit();
        let back = Message::parse(&bytes).unwrap();
        assert_eq!(back.payloads, m.payloads);
        assert_eq!(back.header.length as usize, bytes.len());
        assert_eq!(back.header.next_payload, payload::SA);
        for cut in 0..bytes.len() {
            let mut b = bytes[..cut].to_vec();
            if b.len() >= HEADER_LEN {
                // Keep the header's length honest, so the chain itself is what is short.
                let l = (b.len() as u32).to_be_bytes();
                b[24..28].copy_from_slice(&l);
            }
            assert!(Message::parse(&b).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn sk_must_be_last_and_critical_unknowns_are_refused() {
        let mut m = sample();
        m.payloads = vec![
            Payload::Nonce(vec![1; 16]),
            Payload::Sk {
                first: payload::IDI,
                body: vec![0xaa; 40],
            },
        ];
        let bytes = m.emit();
        let back = Message::parse(&bytes).unwrap();
        assert_eq!(back.payloads, m.payloads);
        // An unknown payload marked critical.
        let mut body = Vec::new();
        body.extend_from_slice(&[0, 0x80, 0, 8, 1, 2, 3, 4]);
        assert_eq!(
            parse_chain(200, &body),
            Err(WireError::UnsupportedCritical(200))
        );
        body[1] = 0;
        assert!(matches!(
            parse_chain(200, &body).unwrap()[0],
            Payload::Other { kind: 200, .. }
        ));
        // IKEv1 (major 1) is reported as such.
        let mut v1 = sample().emit();
        v1[17] = 0x10;
        assert_eq!(Message::parse(&v1), Err(WireError::Version(1)));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x: u64 = 0x1234_5678;
        let base = sample().emit();
        for i in 0..50_000 {
            let mut b = base.clone();
            for _ in 0..(i % 8) + 1 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = (x as usize) % b.len();
                b[at] = (x >> 32) as u8;
            }
            let _ = Message::parse(&b);
        }
    }
}
