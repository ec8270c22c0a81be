//! One line per IKE message, for `vpnctl trace` and iked's debug log, in the form strongSwan's
//! charon made familiar:
//!
//! ```text
//! generating IKE_AUTH request 1 [ IDi AUTH SA TSi TSr ]
//! parsed IKE_AUTH response 1 [ IDr AUTH SA TSi TSr N(AUTH_LFT) ]
//! sending packet: from 192.0.2.1:500 to 192.0.2.2:500 (240 bytes)
//! ```
//!
//! The payloads listed are those of the message as its sender wrote it: for an encrypted
//! message, the payloads inside the Encrypted payload (RFC 7296 §3.14), not `SK`. Both
//! directions use the same functions, so what one side generates reads the same as what the
//! other side parsed. Only payload types and notify types are shown: never a key, nonce,
//! identity's key material or AUTH value.

use std::net::SocketAddr;

use super::sa::notify;
use super::wire::{exchange, flags, payload, Header, Payload};

/// The exchange's name (RFC 7296 §3.1, RFC 9242, RFC 9370).
pub fn exchange_name(e: u8) -> String {
    match e {
        exchange::IKE_SA_INIT => "IKE_SA_INIT".into(),
        exchange::IKE_AUTH => "IKE_AUTH".into(),
        exchange::CREATE_CHILD_SA => "CREATE_CHILD_SA".into(),
        exchange::INFORMATIONAL => "INFORMATIONAL".into(),
        exchange::IKE_INTERMEDIATE => "IKE_INTERMEDIATE".into(),
        exchange::IKE_FOLLOWUP_KE => "IKE_FOLLOWUP_KE".into(),
        e => format!("EXCHANGE_{e}"),
    }
}

/// charon's short name of a notify type (`N(NATD_S_IP)`); the number for one it has none for.
pub fn notify_short(t: u16) -> String {
    let s = match t {
        notify::UNSUPPORTED_CRITICAL_PAYLOAD => "UNSUPP_CRIT",
        notify::INVALID_IKE_SPI => "INVAL_IKE_SPI",
        notify::INVALID_MAJOR_VERSION => "INVAL_MAJOR",
        notify::INVALID_SYNTAX => "INVAL_SYN",
        notify::INVALID_MESSAGE_ID => "INVAL_MID",
        notify::INVALID_SPI => "INVAL_SPI",
        notify::NO_PROPOSAL_CHOSEN => "NO_PROP",
        notify::INVALID_KE_PAYLOAD => "INVAL_KE",
        notify::AUTHENTICATION_FAILED => "AUTH_FAILED",
        notify::SINGLE_PAIR_REQUIRED => "SINGLE_PAIR",
        notify::NO_ADDITIONAL_SAS => "NO_ADD_SAS",
        36 => "INT_ADDR_FAIL",
        37 => "FAIL_CP_REQ",
        notify::TS_UNACCEPTABLE => "TS_UNACCEPT",
        39 => "INVAL_SEL",
        notify::TEMPORARY_FAILURE => "TEMP_FAIL",
        notify::CHILD_SA_NOT_FOUND => "NO_CHILD_SA",
        notify::STATE_NOT_FOUND => "STATE_NOT_FOUND",
        notify::INITIAL_CONTACT => "INIT_CONTACT",
        16385 => "SET_WINSIZE",
        16386 => "ADD_TS_POSS",
        16387 => "IPCOMP_SUP",
        notify::NAT_DETECTION_SOURCE_IP => "NATD_S_IP",
        notify::NAT_DETECTION_DESTINATION_IP => "NATD_D_IP",
        notify::COOKIE => "COOKIE",
        notify::USE_TRANSPORT_MODE => "USE_TRANSP",
        16392 => "HTTP_CERT_LOOK",
        notify::REKEY_SA => "REKEY_SA",
        16394 => "ESP_TFC_PAD_N",
        16395 => "NON_FIRST_FRAG",
        16396 => "MOBIKE_SUP",
        16397 => "ADD_4_ADDR",
        16398 => "ADD_6_ADDR",
        16399 => "NO_ADD_ADDR",
        16400 => "UPD_SA_ADDR",
        16401 => "COOKIE2",
        16402 => "NO_NATS",
        16403 => "AUTH_LFT",
        16404 => "MULT_AUTH",
        16405 => "AUTH_FOLLOWS",
        16406 => "REDIR_SUP",
        16407 => "REDIR",
        16408 => "REDIR_FROM",
        16417 => "EAP_ONLY",
        16418 => "CHDLESS_SUP",
        notify::IKEV2_FRAGMENTATION_SUPPORTED => "FRAG_SUP",
        notify::SIGNATURE_HASH_ALGORITHMS => "HASH_ALG",
        16432 => "CLONE_IKE_SA_SUP",
        16433 => "CLONE_IKE_SA",
        16434 => "PUZZLE",
        16435 => "USE_PPK",
        16436 => "PPK_ID",
        16437 => "NO_PPK_AUTH",
        notify::INTERMEDIATE_EXCHANGE_SUPPORTED => "IKE_INT_SUP",
        notify::ADDITIONAL_KEY_EXCHANGE => "ADD_KE",
        40960 => "INIT_TUNNEL_NOT_SUPPORTED",
        t => return format!("{t}"),
    };
    s.into()
}

/// charon's short name of a payload (`SA`, `KE`, `No`, `N(COOKIE)`, ...).
pub fn payload_short(p: &Payload) -> String {
    match p {
        Payload::Sa(_) => "SA".into(),
        Payload::Ke { .. } => "KE".into(),
        Payload::IdI(_) => "IDi".into(),
        Payload::IdR(_) => "IDr".into(),
        Payload::Auth { .. } => "AUTH".into(),
        Payload::Nonce(_) => "No".into(),
        Payload::Notify(n) => format!("N({})", notify_short(n.kind)),
        Payload::Delete(_) => "D".into(),
        Payload::VendorId(_) => "V".into(),
        Payload::TsI(_) => "TSi".into(),
        Payload::TsR(_) => "TSr".into(),
        Payload::Cert { .. } => "CERT".into(),
        Payload::CertReq { .. } => "CERTREQ".into(),
        Payload::Sk { .. } => "SK".into(),
        Payload::Other { kind, .. } => match *kind {
            payload::CP => "CP".into(),
            payload::EAP => "EAP".into(),
            payload::SKF => "EF".into(),
            k => format!("PL({k})"),
        },
    }
}

/// `IKE_AUTH request 1 [ IDi AUTH SA TSi TSr ]`: the exchange, request or response, the
/// message ID and the payloads in order.
pub fn message(h: &Header, payloads: &[Payload]) -> String {
    let dir = if h.flags & flags::RESPONSE != 0 {
        "response"
    } else {
        "request"
    };
    let mut s = format!("{} {dir} {} [ ", exchange_name(h.exchange), h.message_id);
    for p in payloads {
        s.push_str(&payload_short(p));
        s.push(' ');
    }
    s.push(']');
    s
}

/// What we are about to send (payloads before encryption).
pub fn generating(h: &Header, payloads: &[Payload]) -> String {
    format!("generating {}", message(h, payloads))
}

/// What we received (payloads after decryption).
pub fn parsed(h: &Header, payloads: &[Payload]) -> String {
    format!("parsed {}", message(h, payloads))
}

/// A datagram leaving.
pub fn sending(from: SocketAddr, to: SocketAddr, len: usize) -> String {
    format!("sending packet: from {from} to {to} ({len} bytes)")
}

/// A datagram arriving.
pub fn received(from: SocketAddr, to: SocketAddr, len: usize) -> String {
    format!("received packet: from {from} to {to} ({len} bytes)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ike::wire::{Delete, Notify};

    fn header(exch: u8, mid: u32, response: bool) -> Header {
        Header {
            spi_i: 1,
            spi_r: 2,
            next_payload: 0,
            major: 2,
            minor: 0,
            exchange: exch,
            flags: if response { flags::RESPONSE } else { 0 },
            message_id: mid,
            length: 0,
        }
    }

    fn n(kind: u16) -> Payload {
        Payload::Notify(Notify {
            protocol: 0,
            spi: vec![],
            kind,
            data: vec![0xAA; 20],
        })
    }

    #[test]
    fn messages_read_as_charon_writes_them() {
        let init = [
            Payload::Sa(vec![]),
            Payload::Ke {
                group: 31,
                data: vec![7; 32],
            },
            Payload::Nonce(vec![9; 32]),
            n(notify::NAT_DETECTION_SOURCE_IP),
            n(notify::NAT_DETECTION_DESTINATION_IP),
            n(notify::IKEV2_FRAGMENTATION_SUPPORTED),
            n(notify::SIGNATURE_HASH_ALGORITHMS),
        ];
        assert_eq!(
            generating(&header(exchange::IKE_SA_INIT, 0, false), &init),
            "generating IKE_SA_INIT request 0 [ SA KE No N(NATD_S_IP) N(NATD_D_IP) N(FRAG_SUP) N(HASH_ALG) ]"
        );
        let auth = [
            Payload::IdR(crate::ike::wire::Id {
                kind: 2,
                data: b"gw-b.example".to_vec(),
            }),
            Payload::Auth {
                method: 2,
                data: vec![1; 32],
            },
            Payload::Sa(vec![]),
            Payload::TsI(vec![]),
            Payload::TsR(vec![]),
            n(16403),
        ];
        assert_eq!(
            parsed(&header(exchange::IKE_AUTH, 1, true), &auth),
            "parsed IKE_AUTH response 1 [ IDr AUTH SA TSi TSr N(AUTH_LFT) ]"
        );
        let delete = [Payload::Delete(Delete {
            protocol: 1,
            spi_size: 0,
            spis: vec![],
        })];
        assert_eq!(
            message(&header(exchange::INFORMATIONAL, 7, false), &delete),
            "INFORMATIONAL request 7 [ D ]"
        );
        assert_eq!(
            message(&header(exchange::INFORMATIONAL, 8, true), &[]),
            "INFORMATIONAL response 8 [ ]",
            "a DPD answer is empty, as charon shows it"
        );
        assert_eq!(
            message(
                &header(43, 1, false),
                &[Payload::Other {
                    kind: 99,
                    body: vec![]
                }]
            ),
            "IKE_INTERMEDIATE request 1 [ PL(99) ]"
        );
        assert_eq!(notify_short(40000), "40000", "unknown notifies by number");
        assert_eq!(
            sending(
                "192.0.2.1:500".parse().unwrap(),
                "192.0.2.2:500".parse().unwrap(),
                240
            ),
            "sending packet: from 192.0.2.1:500 to 192.0.2.2:500 (240 bytes)"
        );
    }

    #[test]
    fn no_payload_content_reaches_the_line() {
        let secret = vec![0x5e; 32];
        let p = [
            Payload::Ke {
                group: 31,
                data: secret.clone(),
            },
            Payload::Nonce(secret.clone()),
            Payload::Auth {
                method: 2,
                data: secret,
            },
        ];
        let line = generating(&header(exchange::IKE_AUTH, 1, false), &p);
        assert!(!line.to_lowercase().contains("5e"), "{line}");
        assert!(!line.contains("94"), "{line}");
    }
}
