//! Notify message types (RFC 7296 §3.10.1) and their names for logs.

pub const UNSUPPORTED_CRITICAL_PAYLOAD: u16 = 1;
pub const INVALID_IKE_SPI: u16 = 4;
pub const INVALID_MAJOR_VERSION: u16 = 5;
pub const INVALID_SYNTAX: u16 = 7;
pub const INVALID_MESSAGE_ID: u16 = 9;
pub const INVALID_SPI: u16 = 11;
pub const NO_PROPOSAL_CHOSEN: u16 = 14;
pub const INVALID_KE_PAYLOAD: u16 = 17;
pub const AUTHENTICATION_FAILED: u16 = 24;
pub const SINGLE_PAIR_REQUIRED: u16 = 34;
pub const NO_ADDITIONAL_SAS: u16 = 35;
pub const TS_UNACCEPTABLE: u16 = 38;
pub const TEMPORARY_FAILURE: u16 = 43;
pub const CHILD_SA_NOT_FOUND: u16 = 44;
/// RFC 9370 §2.2.4: an IKE_FOLLOWUP_KE names a link the responder does not know.
pub const STATE_NOT_FOUND: u16 = 47;
/// RFC 9611 §5.2: the responder takes no more per-resource Child SAs for these selectors.
pub const TS_MAX_QUEUE: u16 = 48;
/// Types below this are errors, at or above it status (§3.10.1).
pub const FIRST_STATUS: u16 = 16384;
pub const INITIAL_CONTACT: u16 = 16384;
pub const NAT_DETECTION_SOURCE_IP: u16 = 16388;
pub const NAT_DETECTION_DESTINATION_IP: u16 = 16389;
pub const COOKIE: u16 = 16390;
pub const USE_TRANSPORT_MODE: u16 = 16391;
pub const REKEY_SA: u16 = 16393;
/// RFC 7383 §2.3.
pub const IKEV2_FRAGMENTATION_SUPPORTED: u16 = 16430;
/// RFC 7427 §4: the hash algorithms we can verify signatures with (u16 list).
pub const SIGNATURE_HASH_ALGORITHMS: u16 = 16431;
/// RFC 9242 §3.
pub const INTERMEDIATE_EXCHANGE_SUPPORTED: u16 = 16438;
/// RFC 9370 §2.2.4: the link for the next IKE_FOLLOWUP_KE.
pub const ADDITIONAL_KEY_EXCHANGE: u16 = 16441;
/// RFC 9611 §5.1: this Child SA belongs to a group of Child SAs with the same selectors,
/// each bound to a resource (a CPU, here a dataplane worker); data: an optional opaque id.
pub const SA_RESOURCE_INFO: u16 = 16444;

/// A name for logs.
pub fn name(t: u16) -> String {
    match t {
        1 => "UNSUPPORTED_CRITICAL_PAYLOAD".into(),
        4 => "INVALID_IKE_SPI".into(),
        5 => "INVALID_MAJOR_VERSION".into(),
        7 => "INVALID_SYNTAX".into(),
        9 => "INVALID_MESSAGE_ID".into(),
        11 => "INVALID_SPI".into(),
        14 => "NO_PROPOSAL_CHOSEN".into(),
        17 => "INVALID_KE_PAYLOAD".into(),
        24 => "AUTHENTICATION_FAILED".into(),
        34 => "SINGLE_PAIR_REQUIRED".into(),
        35 => "NO_ADDITIONAL_SAS".into(),
        36 => "INTERNAL_ADDRESS_FAILURE".into(),
        37 => "FAILED_CP_REQUIRED".into(),
        38 => "TS_UNACCEPTABLE".into(),
        39 => "INVALID_SELECTORS".into(),
        43 => "TEMPORARY_FAILURE".into(),
        44 => "CHILD_SA_NOT_FOUND".into(),
        47 => "STATE_NOT_FOUND".into(),
        48 => "TS_MAX_QUEUE".into(),
        16384 => "INITIAL_CONTACT".into(),
        16388 => "NAT_DETECTION_SOURCE_IP".into(),
        16389 => "NAT_DETECTION_DESTINATION_IP".into(),
        16390 => "COOKIE".into(),
        16391 => "USE_TRANSPORT_MODE".into(),
        16393 => "REKEY_SA".into(),
        16430 => "IKEV2_FRAGMENTATION_SUPPORTED".into(),
        16431 => "SIGNATURE_HASH_ALGORITHMS".into(),
        16438 => "INTERMEDIATE_EXCHANGE_SUPPORTED".into(),
        16441 => "ADDITIONAL_KEY_EXCHANGE".into(),
        16444 => "SA_RESOURCE_INFO".into(),
        t if t < FIRST_STATUS => format!("error notify {t}"),
        t => format!("status notify {t}"),
    }
}
