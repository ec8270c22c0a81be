//! The IKE endpoint's front door: what an incoming datagram is, before any IKE SA sees it.
//! Stateless: the daemon core acts on the verdict (route by SPI, answer, or drop with a
//! reason that is counted and logged at a limited rate).

use std::net::SocketAddr;

use crate::ike::sa::{invalid_major_version, is_init_request, peek, NAT_T_PORT};
use crate::ike::wire::{flags, Header};

/// Why a datagram is dropped before reaching an IKE SA. Each has a counter.
macro_rules! drop_kinds {
    ($( $(#[$doc:meta])* $variant:ident => $name:literal, )*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum IkeDrop { $( $(#[$doc])* $variant, )* }
        impl IkeDrop {
            pub const ALL: &'static [IkeDrop] = &[$( IkeDrop::$variant, )*];
            /// Stable snake_case name (logs, counters).
            pub fn name(self) -> &'static str {
                match self { $( IkeDrop::$variant => $name, )* }
            }
        }
    };
}

drop_kinds! {
    /// Shorter than an IKE header, or its length field disagrees.
    NotIke => "not_ike",
    /// UDP/4500 without the non-ESP marker: ESP that reached the kernel's socket (the
    /// dataplane should have taken it), or a stray packet.
    NoMarker => "no_non_esp_marker",
    /// IKEv1 (major version 1): deprecated (RFC 9395), not spoken here.
    IkeV1 => "ikev1",
    /// No IKE SA has this SPI (a stale or forged message, RFC 7296 §2.21.4).
    UnknownSpi => "unknown_ike_spi",
    /// An IKE_SA_INIT request from an address no connection names.
    NoConnection => "no_connection",
    /// An IKE_SA_INIT request refused: too many half-open SAs from its source or in all.
    HalfOpenLimit => "half_open_limit",
    /// An IKE_SA_INIT request answered with a COOKIE (RFC 7296 §2.6), no state kept.
    CookieRequired => "cookie_challenge",
    /// A response with no request of ours behind it.
    UnexpectedResponse => "unexpected_response",
    /// Half-open responder SAs that expired without IKE_AUTH.
    HalfOpenExpired => "half_open_expired",
}

/// What to do with a datagram.
#[derive(Debug)]
pub enum Verdict<'a> {
    /// An IKE message for the SA whose SPI (ours) is given.
    ToSa {
        spi: u64,
        msg: &'a [u8],
    },
    /// An IKE_SA_INIT request: a new SA, or a retransmission of one we answered.
    InitRequest {
        spi_i: u64,
        msg: &'a [u8],
    },
    /// Answer with these bytes, keep no state (INVALID_MAJOR_VERSION, RFC 7296 §2.5).
    Answer(Vec<u8>),
    /// A NAT keepalive (RFC 3948 §2.3): nothing to do.
    Keepalive,
    Drop(IkeDrop),
}

/// Classify a datagram that arrived on `local` (port 500 or 4500).
pub fn classify(local: SocketAddr, data: &[u8]) -> Verdict<'_> {
    let msg = if local.port() == NAT_T_PORT {
        match data {
            // RFC 3948 §2.2: IKE behind the four-byte non-ESP marker.
            [0, 0, 0, 0, rest @ ..] => rest,
            [0xff] => return Verdict::Keepalive,
            _ => return Verdict::Drop(IkeDrop::NoMarker),
        }
    } else {
        data
    };
    let Some(h) = peek(msg) else {
        return Verdict::Drop(IkeDrop::NotIke);
    };
    if h.major == 1 {
        return Verdict::Drop(IkeDrop::IkeV1);
    }
    if let Some(reply) = invalid_major_version(msg) {
        return Verdict::Answer(reply);
    }
    if h.major != 2 {
        return Verdict::Drop(IkeDrop::NotIke);
    }
    if is_init_request(&h) {
        return Verdict::InitRequest {
            spi_i: h.spi_i,
            msg,
        };
    }
    Verdict::ToSa {
        spi: our_spi(&h),
        msg,
    }
}

/// Our SPI in a message: the responder's if the sender is the original initiator.
fn our_spi(h: &Header) -> u64 {
    if h.flags & flags::INITIATOR != 0 {
        h.spi_r
    } else {
        h.spi_i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(port: u16) -> SocketAddr {
        SocketAddr::new("192.0.2.1".parse().unwrap(), port)
    }

    #[test]
    fn garbage_keepalives_and_ikev1_are_told_apart() {
        assert!(matches!(
            classify(at(500), &[1, 2, 3]),
            Verdict::Drop(IkeDrop::NotIke)
        ));
        assert!(matches!(classify(at(4500), &[0xff]), Verdict::Keepalive));
        assert!(matches!(
            classify(at(4500), &[1, 2, 3, 4, 5, 6, 7, 8]),
            Verdict::Drop(IkeDrop::NoMarker)
        ));
        let mut v1 = [0u8; 28];
        v1[16] = 1; // next payload
        v1[17] = 0x10; // version 1.0
        v1[18] = 2; // IKEv1 identity protection
        v1[27] = 28;
        assert!(matches!(
            classify(at(500), &v1),
            Verdict::Drop(IkeDrop::IkeV1)
        ));
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = IkeDrop::ALL.iter().map(|d| d.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), IkeDrop::ALL.len());
    }
}
