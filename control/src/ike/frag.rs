//! IKE fragmentation (RFC 7383): splitting an SK-protected message into Encrypted Fragment
//! payloads that each fit a datagram, and reassembling them with limits on count, size and
//! time.
//!
//! Only SK-protected messages are split (never IKE_SA_INIT, §2.5); each fragment is its
//! own encrypted message with the same message ID, and is verified before it is kept
//! (§2.6), so a forged fragment cannot poison a set.

use super::sa::Random;
use super::sk::{OpenedFragment, OpenedSk, SkCrypto, FRAG_NUMBERS_LEN};
use super::wire::{payload, Header, HEADER_LEN, PAYLOAD_HEADER_LEN};

/// swanctl `fragmentation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FragMode {
    /// Announce support and fragment when the peer supports it (the default).
    #[default]
    Yes,
    /// Announce support (and reassemble) but never send fragments.
    Accept,
    /// Do not announce support; never send fragments (fragments received are still
    /// reassembled, as strongSwan does).
    No,
}

/// Default maximum IP datagram size for fragments (strongSwan's default since 5.5.1).
pub const DEFAULT_FRAGMENT_SIZE: usize = 1280;

/// The fragmentation half of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragConfig {
    pub mode: FragMode,
    /// The largest IP datagram a fragment may make (IP and UDP headers included).
    pub size: usize,
}

impl Default for FragConfig {
    fn default() -> Self {
        FragConfig {
            mode: FragMode::Yes,
            size: DEFAULT_FRAGMENT_SIZE,
        }
    }
}

/// RFC 7383 §2.5.3 allows up to 65535; strongSwan refuses more than 255 (`MAX_FRAGMENTS`),
/// and so do we: nothing we speak needs more.
pub const MAX_FRAGMENTS: u16 = 255;

/// The largest reassembled message we keep: a cap on what one peer can make us hold.
pub const MAX_REASSEMBLED: usize = 64 * 1024;

const IPV4_HEADER: usize = 20;
const IPV6_HEADER: usize = 40;
const UDP_HEADER: usize = 8;
/// RFC 3948 §2.2: IKE on port 4500 starts with four zero bytes.
const NON_ESP_MARKER: usize = 4;

/// Sending or receiving fragments went wrong; every variant is a fragment (or a set of
/// them) not used, counted and reported by the IKE SA.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FragError {
    #[error("fragments of at most {size} bytes (IKE header on) leave no room for data; raise fragment_size")]
    SizeTooSmall { size: usize },
    #[error("the message would need {needed} fragments; we send at most {MAX_FRAGMENTS}")]
    TooManyToSend { needed: usize },
    #[error("the peer sent fragment number {number} of {total}, which cannot be")]
    BadNumbers { number: u16, total: u16 },
    #[error("the peer announced {total} fragments; we accept at most {MAX_FRAGMENTS}")]
    TooMany { total: u16 },
    #[error("the peer sent fragment {number} of {total} again (duplicate ignored)")]
    Duplicate { number: u16, total: u16 },
    #[error(
        "the peer sent a fragment of a set of {total} while we reassemble one of {current} (RFC 7383 §2.5.2: ignored)"
    )]
    SmallerTotal { total: u16, current: u16 },
    #[error("the peer's fragments add up to more than {MAX_REASSEMBLED} bytes; set dropped")]
    TooBig,
    #[error(
        "an incomplete fragment set ({have} of {total}) went stale after {age_ms} ms; dropped"
    )]
    Expired { have: u16, total: u16, age_ms: u64 },
    #[error(
        "the peer restarted its message with {total} fragments (RFC 7383 §2.5.2); dropped the {have} of {old} we had"
    )]
    Superseded { have: u16, old: u16, total: u16 },
    #[error(
        "a fragment of message ID {mid} arrived while message ID {old} was incomplete ({have} of {total}); dropped the old set"
    )]
    Abandoned {
        mid: u32,
        old: u32,
        have: u16,
        total: u16,
    },
}

/// The largest IKE message (IKE header onward) that fits in an IP datagram of
/// `max_datagram` bytes: minus the IP header, UDP, and the non-ESP marker on port 4500
/// (strongSwan message.c `fragment`).
pub fn max_ike_len(max_datagram: usize, ipv6: bool, non_esp_marker: bool) -> usize {
    let ip = if ipv6 { IPV6_HEADER } else { IPV4_HEADER };
    let marker = if non_esp_marker { NON_ESP_MARKER } else { 0 };
    max_datagram.saturating_sub(ip + UDP_HEADER + marker)
}

/// How many bytes of inner payloads one fragment of at most `max_ike` bytes carries:
/// minus the IKE header, the SKF header with its numbers, IV and ICV, rounded down to the
/// cipher block, minus the pad length byte (RFC 7383 §2.5.1).
pub fn fragment_capacity(sk: &SkCrypto, max_ike: usize) -> usize {
    let overhead = HEADER_LEN + PAYLOAD_HEADER_LEN + FRAG_NUMBERS_LEN + sk.iv_len() + sk.icv_len();
    let room = max_ike.saturating_sub(overhead);
    let block = sk.block_len();
    (room / block * block).saturating_sub(1)
}

/// Split the inner payloads of a message (`inner`, first payload type `first`) into
/// Encrypted Fragment messages of at most `max_ike` bytes each, numbered from 1, all with
/// `header`'s message ID (RFC 7383 §2.5). Each is sealed on its own.
pub fn fragment(
    sk: &SkCrypto,
    header: Header,
    first: u8,
    inner: &[u8],
    max_ike: usize,
    rng: &mut dyn Random,
) -> Result<Vec<Vec<u8>>, FragError> {
    let cap = fragment_capacity(sk, max_ike);
    if cap == 0 {
        return Err(FragError::SizeTooSmall { size: max_ike });
    }
    let needed = inner.len().div_ceil(cap).max(1);
    let total = u16::try_from(needed)
        .ok()
        .filter(|t| *t <= MAX_FRAGMENTS)
        .ok_or(FragError::TooManyToSend { needed })?;
    let mut out = Vec::with_capacity(needed);
    let mut iv = vec![0u8; sk.iv_len()];
    for (i, piece) in inner.chunks(cap).enumerate() {
        rng.fill(&mut iv);
        let number = i as u16 + 1;
        // RFC 7383 §2.5: the first inner payload's type in fragment 1 only.
        let next = if number == 1 { first } else { 0 };
        let msg = sk
            .seal_bytes(header, next, Some((number, total)), piece, &iv)
            .map_err(|_| FragError::SizeTooSmall { size: max_ike })?;
        out.push(msg);
    }
    if inner.is_empty() {
        rng.fill(&mut iv);
        let msg = sk
            .seal_bytes(header, first, Some((1, 1)), &[], &iv)
            .map_err(|_| FragError::SizeTooSmall { size: max_ike })?;
        out.push(msg);
    }
    Ok(out)
}

/// Counters for the daemon (`vpnctl`, logs): what fragmentation did on one IKE SA.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FragStats {
    /// Messages we split, and the fragments that made (first transmissions only).
    pub messages_split: u64,
    pub fragments_sent: u64,
    /// Fragments that verified, and the messages they made whole.
    pub fragments_received: u64,
    pub messages_reassembled: u64,
    /// Fragments or sets not used (every [`FragError`] on receive).
    pub dropped: u64,
}

/// What [`Reassembler::push`] did with a verified fragment.
#[derive(Debug, Default)]
pub struct Pushed {
    /// The whole message, once its last missing fragment came.
    pub message: Option<OpenedSk>,
    /// An incomplete set this fragment made us drop (stale, restarted, another message).
    pub dropped: Option<FragError>,
}

struct Partial {
    mid: u32,
    exchange: u8,
    total: u16,
    have: u16,
    started: u64,
    header: Header,
    first: u8,
    bytes: usize,
    parts: Vec<Option<Vec<u8>>>,
}

/// Reassembly of one direction of one IKE SA (RFC 7383 §2.6): one message in progress at
/// a time, at most [`MAX_FRAGMENTS`] fragments and `max_bytes` bytes, dropped when older
/// than `max_age_ms`. Feed it only fragments that verified ([`SkCrypto::open_any`]) and
/// whose message ID the window accepts.
pub struct Reassembler {
    cur: Option<Partial>,
    max_bytes: usize,
    max_age_ms: u64,
}

impl std::fmt::Debug for Reassembler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reassembler")
            .field("mid", &self.cur.as_ref().map(|p| p.mid))
            .field("have", &self.cur.as_ref().map(|p| (p.have, p.total)))
            .finish()
    }
}

impl Reassembler {
    pub fn new(max_bytes: usize, max_age_ms: u64) -> Reassembler {
        Reassembler {
            cur: None,
            max_bytes,
            max_age_ms,
        }
    }

    /// Whether a message is partly here.
    pub fn in_progress(&self) -> bool {
        self.cur.is_some()
    }

    /// Bytes of fragment contents the set in progress holds: never more than the
    /// `max_bytes` given to [`Reassembler::new`] (what one peer can make us hold).
    pub fn held_bytes(&self) -> usize {
        self.cur.as_ref().map_or(0, |p| p.bytes)
    }

    /// Forget the set in progress (the SA moved on).
    pub fn clear(&mut self) {
        self.cur = None;
    }

    /// Add one verified fragment. `Err`: this fragment was not used.
    pub fn push(&mut self, f: OpenedFragment, now: u64) -> Result<Pushed, FragError> {
        let (number, total) = (f.number, f.total);
        // RFC 7383 §2.5.3: numbers from 1, not beyond the total.
        if number == 0 || total == 0 || number > total {
            return Err(FragError::BadNumbers { number, total });
        }
        if total > MAX_FRAGMENTS {
            return Err(FragError::TooMany { total });
        }
        let h = f.sk.header;
        let mut dropped = None;
        if let Some(p) = &self.cur {
            let age_ms = now.saturating_sub(p.started);
            if age_ms > self.max_age_ms {
                dropped = Some(FragError::Expired {
                    have: p.have,
                    total: p.total,
                    age_ms,
                });
            } else if p.mid != h.message_id || p.exchange != h.exchange {
                dropped = Some(FragError::Abandoned {
                    mid: h.message_id,
                    old: p.mid,
                    have: p.have,
                    total: p.total,
                });
            } else if total < p.total {
                // RFC 7383 §2.5.2: a smaller total is an older transmission.
                return Err(FragError::SmallerTotal {
                    total,
                    current: p.total,
                });
            } else if total > p.total {
                // RFC 7383 §2.5.2: the sender re-fragmented smaller (PMTU); start over.
                dropped = Some(FragError::Superseded {
                    have: p.have,
                    old: p.total,
                    total,
                });
            }
            if dropped.is_some() {
                self.cur = None;
            }
        }
        let p = self.cur.get_or_insert_with(|| Partial {
            mid: h.message_id,
            exchange: h.exchange,
            total,
            have: 0,
            started: now,
            header: h,
            first: 0,
            bytes: 0,
            parts: vec![None; usize::from(total)],
        });
        let slot = usize::from(number - 1);
        if p.parts[slot].is_some() {
            return Err(FragError::Duplicate { number, total });
        }
        if p.bytes + f.sk.plain.len() > self.max_bytes {
            self.cur = None;
            return Err(FragError::TooBig);
        }
        if number == 1 {
            p.first = f.sk.first;
            p.header = h;
        }
        p.bytes += f.sk.plain.len();
        p.have += 1;
        p.parts[slot] = Some(f.sk.plain);
        if p.have < p.total {
            return Ok(Pushed {
                message: None,
                dropped,
            });
        }
        let Some(p) = self.cur.take() else {
            return Ok(Pushed::default());
        };
        let mut plain = Vec::with_capacity(p.bytes);
        for part in p.parts.into_iter().flatten() {
            plain.extend_from_slice(&part);
        }
        // The header as if the message had come whole in one SK payload (what IntAuth,
        // RFC 9242 §3.3.2, computes over either way).
        let header = Header {
            next_payload: payload::SK,
            length: (HEADER_LEN + PAYLOAD_HEADER_LEN + plain.len()) as u32,
            ..p.header
        };
        Ok(Pushed {
            message: Some(OpenedSk {
                header,
                first: p.first,
                plain,
            }),
            dropped,
        })
    }
}

/// The Fragment Number of a message whose first payload is SKF, read without decrypting:
/// only to spot a retransmitted request (answered on fragment 1, RFC 7383 §2.6.1).
/// `None` for anything else.
pub fn peek_fragment_number(raw: &[u8]) -> Option<u16> {
    let at = HEADER_LEN + PAYLOAD_HEADER_LEN;
    if raw.get(16) != Some(&payload::SKF) || raw.len() < at + 2 {
        return None;
    }
    Some(u16::from_be_bytes([raw[at], raw[at + 1]]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ike::sk::Opened;
    use crate::ike::wire::{self, exchange, flags, Payload};
    use crate::test_rng::Seq;
    use dataplane::crypto::{Encryption, Integrity};

    fn header(mid: u32) -> Header {
        Header {
            spi_i: 1,
            spi_r: 2,
            next_payload: 0,
            major: 2,
            minor: 0,
            exchange: exchange::IKE_AUTH,
            flags: flags::INITIATOR,
            message_id: mid,
            length: 0,
        }
    }

    /// (name, sender's keys, receiver's keys: the same), an AEAD and a CBC+HMAC suite.
    fn suites() -> Vec<(&'static str, SkCrypto)> {
        vec![
            (
                "aes256gcm16",
                SkCrypto::new(Encryption::AesGcm256, Integrity::None, &[3; 36], &[]).unwrap(),
            ),
            (
                "aes256-sha256",
                SkCrypto::new(
                    Encryption::AesCbc256,
                    Integrity::HmacSha256_128,
                    &[3; 32],
                    &[4; 32],
                )
                .unwrap(),
            ),
        ]
    }

    fn big_inner(n: usize) -> (u8, Vec<u8>, Vec<Payload>) {
        let payloads: Vec<Payload> = (0..n).map(|i| Payload::Nonce(vec![i as u8; 100])).collect();
        let mut inner = Vec::new();
        let first = wire::emit_chain(&payloads, &mut inner);
        (first, inner, payloads)
    }

    fn open(sk: &SkCrypto, m: &[u8]) -> OpenedFragment {
        match sk.open_any(m).unwrap() {
            Opened::Fragment(f) => f,
            Opened::Whole(_) => panic!("a whole message, not a fragment"),
        }
    }

    fn reassemble(sk: &SkCrypto, frags: &[Vec<u8>], order: &[usize]) -> OpenedSk {
        let mut r = Reassembler::new(MAX_REASSEMBLED, 10_000);
        let mut done = None;
        for (k, &i) in order.iter().enumerate() {
            let p = r.push(open(sk, &frags[i]), 0).unwrap();
            assert!(p.dropped.is_none());
            assert_eq!(p.message.is_some(), k + 1 == order.len());
            done = done.or(p.message);
        }
        done.unwrap()
    }

    #[test]
    fn round_trip_in_order_and_out_of_order_for_aead_and_cbc() {
        let (first, inner, payloads) = big_inner(20);
        for (name, sk) in suites() {
            let max = max_ike_len(576, false, true);
            let frags = fragment(&sk, header(1), first, &inner, max, &mut Seq(1)).unwrap();
            assert!(frags.len() > 3, "{name}: {} fragments", frags.len());
            for (i, f) in frags.iter().enumerate() {
                assert!(
                    f.len() <= max,
                    "{name}: fragment {i} is {} > {max}",
                    f.len()
                );
                assert_eq!(peek_fragment_number(f), Some(i as u16 + 1));
                let o = open(&sk, f);
                assert_eq!((o.number, o.total), (i as u16 + 1, frags.len() as u16));
                assert_eq!(o.sk.first, if i == 0 { first } else { 0 });
            }
            let n = frags.len();
            let orders: [Vec<usize>; 2] = [(0..n).collect(), (0..n).rev().collect()];
            for order in orders {
                let m = reassemble(&sk, &frags, &order);
                assert_eq!(m.first, first);
                assert_eq!(m.plain, inner, "{name}");
                assert_eq!(m.header.message_id, 1);
                assert_eq!(m.header.next_payload, payload::SK);
                assert_eq!(wire::parse_chain(m.first, &m.plain).unwrap(), payloads);
            }
        }
    }

    #[test]
    fn fragment_sizes_fill_the_datagram_exactly() {
        let (first, inner, _) = big_inner(40);
        for (size, v6, marker, ip) in [
            (576, false, false, 20),
            (576, false, true, 20),
            (1280, true, false, 40),
            (1280, true, true, 40),
        ] {
            let max = max_ike_len(size, v6, marker);
            assert_eq!(max, size - ip - 8 - if marker { 4 } else { 0 });
            for (name, sk) in suites() {
                let frags = fragment(&sk, header(1), first, &inner, max, &mut Seq(2)).unwrap();
                let cap = fragment_capacity(&sk, max);
                let over = HEADER_LEN + 8 + sk.iv_len() + sk.icv_len();
                // Every full fragment: headers + content rounded to the block (with the
                // pad length byte) + ICV, and the largest such that fits.
                for f in &frags[..frags.len() - 1] {
                    assert_eq!(f.len(), over + cap + 1, "{name} {size} {v6} {marker}");
                    assert!(f.len() <= max);
                    assert!(f.len() + sk.block_len() > max, "{name}: room left unused");
                }
                assert_eq!(frags.len(), inner.len().div_ceil(cap));
                assert!(frags.last().unwrap().len() <= max);
            }
        }
        // AES-GCM at 576 over IPv4 on port 4500: 544 - 28 - 8 - 8 - 16 - 1 = 483.
        let gcm = &suites()[0].1;
        assert_eq!(fragment_capacity(gcm, max_ike_len(576, false, true)), 483);
        // AES-CBC + HMAC-SHA256-128: (544 - 28 - 8 - 16 - 16) = 476 → 464 - 1.
        let cbc = &suites()[1].1;
        assert_eq!(fragment_capacity(cbc, max_ike_len(576, false, true)), 463);
    }

    #[test]
    fn too_small_a_size_and_too_many_fragments_are_refused() {
        let (first, inner, _) = big_inner(3);
        let sk = &suites()[0].1;
        assert_eq!(
            fragment(sk, header(1), first, &inner, 60, &mut Seq(3)),
            Err(FragError::SizeTooSmall { size: 60 })
        );
        let huge = vec![0u8; 300 * 10];
        assert!(matches!(
            fragment(sk, header(1), first, &huge, 70, &mut Seq(3)),
            Err(FragError::TooManyToSend { .. })
        ));
    }

    #[test]
    fn duplicates_are_ignored_and_a_forged_fragment_is_refused() {
        let (first, inner, _) = big_inner(10);
        for (name, sk) in suites() {
            let frags = fragment(&sk, header(1), first, &inner, 548, &mut Seq(4)).unwrap();
            let mut r = Reassembler::new(MAX_REASSEMBLED, 10_000);
            r.push(open(&sk, &frags[0]), 0).unwrap();
            assert_eq!(r.held_bytes(), open(&sk, &frags[0]).sk.plain.len());
            assert_eq!(
                r.push(open(&sk, &frags[0]), 1).unwrap_err(),
                FragError::Duplicate {
                    number: 1,
                    total: frags.len() as u16
                }
            );
            // A changed fragment number (or anything) breaks the ICV: never reaches the set.
            let mut forged = frags[1].clone();
            forged[HEADER_LEN + 5] ^= 3;
            assert_eq!(
                sk.open_any(&forged),
                Err(crate::ike::sk::SkError::Integrity),
                "{name}"
            );
            let mut forged = frags[1].clone();
            let l = forged.len();
            forged[l - 20] ^= 1;
            assert!(sk.open_any(&forged).is_err(), "{name}");
            // A fragment sealed with other keys does not open either.
            let other =
                SkCrypto::new(Encryption::AesGcm256, Integrity::None, &[9; 36], &[]).unwrap();
            let alien = fragment(&other, header(1), first, &inner, 548, &mut Seq(4)).unwrap();
            assert!(sk.open_any(&alien[1]).is_err());
            let mut last = None;
            for f in &frags[1..] {
                last = r.push(open(&sk, f), 2).unwrap().message;
            }
            assert_eq!(last.unwrap().plain, inner);
            assert!(!r.in_progress());
        }
    }

    #[test]
    fn a_larger_total_restarts_and_a_smaller_one_is_ignored() {
        let (first, inner, _) = big_inner(10);
        let sk = &suites()[0].1;
        let small = fragment(sk, header(1), first, &inner, 548, &mut Seq(5)).unwrap();
        let smaller = fragment(sk, header(1), first, &inner, 300, &mut Seq(6)).unwrap();
        assert!(smaller.len() > small.len());
        let mut r = Reassembler::new(MAX_REASSEMBLED, 10_000);
        r.push(open(sk, &small[0]), 0).unwrap();
        // RFC 7383 §2.5.2: the sender went to smaller fragments: start over.
        let p = r.push(open(sk, &smaller[0]), 1).unwrap();
        assert_eq!(
            p.dropped,
            Some(FragError::Superseded {
                have: 1,
                old: small.len() as u16,
                total: smaller.len() as u16
            })
        );
        // A late fragment of the old, smaller total is ignored.
        assert!(matches!(
            r.push(open(sk, &small[1]), 2),
            Err(FragError::SmallerTotal { .. })
        ));
        let mut done = None;
        for f in &smaller[1..] {
            done = r.push(open(sk, f), 3).unwrap().message;
        }
        assert_eq!(done.unwrap().plain, inner);
    }

    #[test]
    fn limits_on_numbers_bytes_age_and_message_id() {
        let (first, inner, _) = big_inner(10);
        let sk = &suites()[0].1;
        let frags = fragment(sk, header(1), first, &inner, 548, &mut Seq(7)).unwrap();
        let total = frags.len() as u16;
        let mut f = open(sk, &frags[0]);
        let mut r = Reassembler::new(MAX_REASSEMBLED, 1000);
        for (number, t) in [(0, 3), (4, 3), (1, 0)] {
            f.number = number;
            f.total = t;
            assert_eq!(
                r.push(f.clone(), 0).unwrap_err(),
                FragError::BadNumbers { number, total: t }
            );
        }
        f.number = 1;
        f.total = 256;
        assert_eq!(r.push(f, 0).unwrap_err(), FragError::TooMany { total: 256 });
        // Bytes: a cap below the message size drops the set.
        let mut r = Reassembler::new(1000, 1000);
        let mut err = None;
        for f in &frags {
            if let Err(e) = r.push(open(sk, f), 0) {
                err = Some(e);
                break;
            }
        }
        assert_eq!(err, Some(FragError::TooBig));
        assert!(!r.in_progress());
        assert_eq!(r.held_bytes(), 0);
        // Age: a stale incomplete set goes when the next fragment comes.
        let mut r = Reassembler::new(MAX_REASSEMBLED, 1000);
        r.push(open(sk, &frags[0]), 0).unwrap();
        let p = r.push(open(sk, &frags[1]), 1001).unwrap();
        assert_eq!(
            p.dropped,
            Some(FragError::Expired {
                have: 1,
                total,
                age_ms: 1001
            })
        );
        // Another message ID: the old set goes, the new one starts.
        let next = fragment(sk, header(2), first, &inner, 548, &mut Seq(8)).unwrap();
        let p = r.push(open(sk, &next[0]), 1002).unwrap();
        assert!(matches!(
            p.dropped,
            Some(FragError::Abandoned { mid: 2, old: 1, .. })
        ));
    }

    #[test]
    fn peek_only_sees_fragments() {
        let sk = &suites()[0].1;
        let whole = sk
            .seal(header(1), &[Payload::Nonce(vec![1; 16])], &[0; 8])
            .unwrap();
        assert_eq!(peek_fragment_number(&whole), None);
        assert_eq!(peek_fragment_number(&[0; 10]), None);
        assert_eq!(sk.open_plain(&whole).unwrap().plain.len(), 20);
        let frag = fragment(sk, header(1), 40, &[0; 20], 548, &mut Seq(9)).unwrap();
        assert_eq!(frag.len(), 1);
        assert_eq!(
            sk.open_plain(&frag[0]),
            Err(crate::ike::sk::SkError::Fragment)
        );
    }
}
