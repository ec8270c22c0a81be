//! What the endpoint answers without an IKE SA: COOKIE challenges (§2.6), INVALID_MAJOR_VERSION
//! (§2.5), and the header peeks it routes by.

use std::net::IpAddr;

use sha2::Digest;

use super::super::wire::{exchange, flags, payload, Header, Message, Payload, HEADER_LEN};
use super::{find_notify, notify, notify_payload};

/// RFC 7296 §2.6: stateless cookies. The responder, when loaded, answers an IKE_SA_INIT
/// without a valid cookie with one: hash(Ni | IPi | SPIi | secret).
pub struct CookieJar {
    secret: [u8; 32],
}

impl CookieJar {
    pub fn new(secret: [u8; 32]) -> CookieJar {
        CookieJar { secret }
    }

    fn cookie(&self, ni: &[u8], ip: IpAddr, spi_i: u64) -> Vec<u8> {
        let mut h = sha2::Sha256::new();
        h.update(ni);
        match ip {
            IpAddr::V4(a) => h.update(a.octets()),
            IpAddr::V6(a) => h.update(a.octets()),
        }
        h.update(spi_i.to_be_bytes());
        h.update(self.secret);
        h.finalize().to_vec()
    }

    /// `None`: the request carries a valid cookie, go on. `Some(response)`: send it and
    /// keep no state.
    pub fn check(&self, raw: &[u8], from: IpAddr) -> Option<Vec<u8>> {
        let m = Message::parse(raw).ok()?;
        let ni = m.payloads.iter().find_map(|p| match p {
            Payload::Nonce(d) => Some(d),
            _ => None,
        })?;
        let want = self.cookie(ni, from, m.header.spi_i);
        if find_notify(&m.payloads, notify::COOKIE).is_some_and(|c| c.data == want) {
            return None;
        }
        Some(
            Message {
                header: Header {
                    spi_r: 0,
                    flags: flags::RESPONSE,
                    next_payload: 0,
                    length: 0,
                    ..m.header
                },
                payloads: vec![notify_payload(notify::COOKIE, want)],
            }
            .emit(),
        )
    }
}

/// RFC 7296 §2.5: a request with a higher major version gets INVALID_MAJOR_VERSION, in a
/// version-2 header, naming the highest version we speak. `None` for anything else
/// (responses are never answered; IKEv1, major 1, is dropped by the caller).
pub fn invalid_major_version(raw: &[u8]) -> Option<Vec<u8>> {
    let h = Header::parse(raw).ok()?;
    if h.major <= 2 || h.is_response() {
        return None;
    }
    Some(
        Message {
            header: Header {
                major: 2,
                minor: 0,
                flags: flags::RESPONSE,
                next_payload: 0,
                length: 0,
                ..h
            },
            payloads: vec![notify_payload(notify::INVALID_MAJOR_VERSION, vec![0x20])],
        }
        .emit(),
    )
}

/// The header, without parsing further (dispatch).
pub fn peek(raw: &[u8]) -> Option<Header> {
    (raw.len() >= HEADER_LEN)
        .then(|| Header::parse(raw).ok())
        .flatten()
}

/// Is this an IKE_SA_INIT request (a new SA)?
pub fn is_init_request(h: &Header) -> bool {
    h.exchange == exchange::IKE_SA_INIT
        && !h.is_response()
        && h.spi_r == 0
        && h.next_payload != payload::NONE
}
