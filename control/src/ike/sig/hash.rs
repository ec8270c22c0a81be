//! Hash algorithms as SIGNATURE_HASH_ALGORITHMS names them (RFC 7427 §4, RFC 8420 §2), and
//! that notify's data.

use std::fmt;

use der::asn1::ObjectIdentifier;
use sha2::Digest;

use super::oid::{OID_SHA1, OID_SHA256, OID_SHA384, OID_SHA512};

/// Hash algorithms of SIGNATURE_HASH_ALGORITHMS (RFC 7427 §4, RFC 8420 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hash {
    Sha1 = 1,
    Sha256 = 2,
    Sha384 = 3,
    Sha512 = 4,
    /// RFC 8420: no hash (Ed25519 signs the octets themselves).
    Identity = 5,
}

/// What we announce in SIGNATURE_HASH_ALGORITHMS: SHA-1 is left out (RFC 8247 §3.2: MUST
/// NOT for signatures), Identity is needed for Ed25519 (RFC 8420 §2).
pub const OUR_HASHES: [Hash; 4] = [Hash::Sha256, Hash::Sha384, Hash::Sha512, Hash::Identity];

impl Hash {
    /// The SIGNATURE_HASH_ALGORITHMS value (RFC 7427 §4).
    pub fn from_wire(v: u16) -> Option<Hash> {
        Some(match v {
            1 => Hash::Sha1,
            2 => Hash::Sha256,
            3 => Hash::Sha384,
            4 => Hash::Sha512,
            5 => Hash::Identity,
            _ => return None,
        })
    }

    pub fn wire(self) -> u16 {
        self as u16
    }

    /// The name in logs, as the IANA registry spells it.
    pub fn name(self) -> &'static str {
        match self {
            Hash::Sha1 => "SHA1",
            Hash::Sha256 => "SHA2_256",
            Hash::Sha384 => "SHA2_384",
            Hash::Sha512 => "SHA2_512",
            Hash::Identity => "IDENTITY",
        }
    }

    pub(super) fn oid(self) -> Option<ObjectIdentifier> {
        match self {
            Hash::Sha1 => Some(OID_SHA1),
            Hash::Sha256 => Some(OID_SHA256),
            Hash::Sha384 => Some(OID_SHA384),
            Hash::Sha512 => Some(OID_SHA512),
            Hash::Identity => None,
        }
    }

    pub(super) fn from_oid(oid: ObjectIdentifier) -> Option<Hash> {
        [Hash::Sha1, Hash::Sha256, Hash::Sha384, Hash::Sha512]
            .into_iter()
            .find(|h| h.oid() == Some(oid))
    }

    /// Output length in bytes (0 for Identity).
    pub fn output_len(self) -> usize {
        match self {
            Hash::Sha1 => 20,
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 64,
            Hash::Identity => 0,
        }
    }

    pub(super) fn digest(self, msg: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha1 => sha1::Sha1::digest(msg).to_vec(),
            Hash::Sha256 => sha2::Sha256::digest(msg).to_vec(),
            Hash::Sha384 => sha2::Sha384::digest(msg).to_vec(),
            Hash::Sha512 => sha2::Sha512::digest(msg).to_vec(),
            Hash::Identity => msg.to_vec(),
        }
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The SIGNATURE_HASH_ALGORITHMS notify data for `hashes` (RFC 7427 §4: a list of u16).
pub fn hash_notify_data(hashes: &[Hash]) -> Vec<u8> {
    hashes.iter().flat_map(|h| h.wire().to_be_bytes()).collect()
}

/// The hashes a SIGNATURE_HASH_ALGORITHMS notify lists, and how many values we do not
/// know (RFC 7427 §4: ignored; the caller reports them). `None` if the length is odd.
pub fn parse_hash_notify(data: &[u8]) -> Option<(Vec<Hash>, usize)> {
    if !data.len().is_multiple_of(2) {
        return None;
    }
    let mut known = Vec::new();
    let mut unknown = 0;
    for pair in data.chunks_exact(2) {
        match Hash::from_wire(u16::from_be_bytes([pair[0], pair[1]])) {
            Some(h) if !known.contains(&h) => known.push(h),
            Some(_) => {}
            None => unknown += 1,
        }
    }
    Some((known, unknown))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_notify_round_trip() {
        let d = hash_notify_data(&OUR_HASHES);
        assert_eq!(d, [0, 2, 0, 3, 0, 4, 0, 5]);
        assert_eq!(parse_hash_notify(&d), Some((OUR_HASHES.to_vec(), 0)));
        assert_eq!(
            parse_hash_notify(&[0, 1, 0, 9, 0, 2, 0, 2]),
            Some((vec![Hash::Sha1, Hash::Sha256], 1))
        );
        assert_eq!(parse_hash_notify(&[0, 1, 0]), None);
    }
}
