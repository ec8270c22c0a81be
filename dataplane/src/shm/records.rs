//! Record formats carried by the ring (ABI version 1): control → dataplane SA installs and
//! deletes. Fixed little-endian layouts, typed views in the smoltcp style: lengths are
//! checked once in `new_checked`, then no accessor can panic.
//!
//! ```text
//! common header (8 bytes): kind u16 | flags u16 | txid u32
//! AddSa body:
//!   8  spi u32            12 encr u8 (IANA) | integ u8 (IANA) | enc key len u8 | integ key len u8
//!   16 replay window u32 (0 = off)          20 NAT-T src port u16 | dst port u16
//!   24 outer TTL u8 | #local TS u8 | #remote TS u8 | DF policy u8
//!   28 tunnel family u8 (6 = IPv6, else IPv4) | reserved [3]
//!   32 local address [16]   48 remote address [16]   (IPv4 as ::ffff:a.b.c.d)
//!   64 encryption key (+ salt) [36]   100 integrity key [64]
//!   164 traffic selectors, 40 bytes each: start [16] | end [16] | protocol u8 | v6 u8 |
//!       pad u16 | start port u16 | end port u16
//! DeleteSa body: 8 spi u32
//! ```
//!
//! Key bytes pass through caller buffers: callers keep those in `Zeroizing` storage, and the
//! ring consumer zeroes the slot itself.
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv6Addr};

use crate::crypto::{Encryption, EspTransform, Integrity, SaKeys};
use crate::esp::{DfPolicy, Mode, SaConfig, SelectorSet, TrafficSelector, UdpEncap};
use crate::static_sa::Direction;

pub const KIND_ADD_SA: u16 = 1;
pub const KIND_DELETE_SA: u16 = 2;
pub const KIND_FLUSH: u16 = 3;

const FLAG_INBOUND: u16 = 1 << 0;
const FLAG_ESN: u16 = 1 << 1;
const FLAG_NAT_T: u16 = 1 << 2;
const FLAG_TUNNEL: u16 = 1 << 3;
const FLAG_COPY_DSCP: u16 = 1 << 4;

const HEADER: usize = 8;
const TS_AT: usize = 164;
const TS_LEN: usize = 40;
/// At most this many selectors (local + remote) fit a 512-byte slot.
pub const MAX_SELECTORS: usize = 8;
/// Longest record: an AddSa with all selectors.
pub const MAX_RECORD: usize = TS_AT + MAX_SELECTORS * TS_LEN;

/// Why a record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    #[error("record truncated: {len} bytes, {need} needed")]
    Truncated { len: usize, need: usize },
    #[error("unknown record kind {0}")]
    UnknownKind(u16),
    #[error("unknown transform: encryption {encr} with a {key_len}-byte key, integrity {integ}")]
    UnknownTransform { encr: u8, integ: u8, key_len: u8 },
    #[error("bad field {0}")]
    BadField(&'static str),
    #[error("{0} traffic selectors do not fit one record (at most {MAX_SELECTORS})")]
    TooManySelectors(usize),
}

/// A decoded control record.
#[derive(Debug, Clone)]
pub enum ControlRecord {
    AddSa {
        txid: u32,
        direction: Direction,
        config: SaConfig,
    },
    DeleteSa {
        txid: u32,
        direction: Direction,
        spi: u32,
    },
    Flush {
        txid: u32,
    },
}

fn ianas(t: EspTransform) -> (u8, u8) {
    let e = match t.encryption {
        Encryption::AesGcm128 | Encryption::AesGcm256 => 20,
        Encryption::ChaCha20Poly1305 => 28,
        Encryption::AesCbc128 | Encryption::AesCbc256 => 12,
    };
    let i = match t.integrity {
        Integrity::None => 0,
        Integrity::HmacSha256_128 => 12,
        Integrity::HmacSha384_192 => 13,
        Integrity::HmacSha512_256 => 14,
    };
    (e, i)
}

fn transform_of(encr: u8, integ: u8, key_len: u8) -> Result<EspTransform, RecordError> {
    let bad = RecordError::UnknownTransform {
        encr,
        integ,
        key_len,
    };
    let e = match (encr, key_len) {
        (20, 20) => Encryption::AesGcm128,
        (20, 36) => Encryption::AesGcm256,
        (28, 36) => Encryption::ChaCha20Poly1305,
        (12, 16) => Encryption::AesCbc128,
        (12, 32) => Encryption::AesCbc256,
        _ => return Err(bad),
    };
    let i = match integ {
        0 => Integrity::None,
        12 => Integrity::HmacSha256_128,
        13 => Integrity::HmacSha384_192,
        14 => Integrity::HmacSha512_256,
        _ => return Err(bad),
    };
    EspTransform::new(e, i).map_err(|_| bad)
}

fn put_addr(b: &mut [u8], a: IpAddr) {
    let v6 = match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    b[..16].copy_from_slice(&v6.octets());
}

fn get_addr(b: &[u8], v6: bool) -> IpAddr {
    let mut o = [0u8; 16];
    o.copy_from_slice(&b[..16]);
    let a = Ipv6Addr::from(o);
    match (v6, a.to_ipv4_mapped()) {
        (false, Some(v4)) => IpAddr::V4(v4),
        _ => IpAddr::V6(a),
    }
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Encode an AddSa into `out` (at least [`MAX_RECORD`] bytes); returns its length.
pub fn encode_add_sa(
    out: &mut [u8],
    txid: u32,
    direction: Direction,
    cfg: &SaConfig,
) -> Result<usize, RecordError> {
    let sel = &cfg.selectors;
    let n = sel.local.len() + sel.remote.len();
    if n > MAX_SELECTORS {
        return Err(RecordError::TooManySelectors(n));
    }
    let len = TS_AT + n * TS_LEN;
    if out.len() < len {
        return Err(RecordError::Truncated {
            len: out.len(),
            need: len,
        });
    }
    let b = &mut out[..len];
    b.fill(0);
    let mut flags = 0;
    if direction == Direction::Inbound {
        flags |= FLAG_INBOUND;
    }
    if cfg.esn {
        flags |= FLAG_ESN;
    }
    if cfg.udp_encap.is_some() {
        flags |= FLAG_NAT_T;
    }
    if cfg.copy_dscp_on_decap {
        flags |= FLAG_COPY_DSCP;
    }
    let (local, remote) = match cfg.mode {
        Mode::Tunnel { local, remote } => {
            flags |= FLAG_TUNNEL;
            (local, remote)
        }
        Mode::Transport => (IpAddr::from([0u8; 4]), IpAddr::from([0u8; 4])),
    };
    b[0..2].copy_from_slice(&KIND_ADD_SA.to_le_bytes());
    b[2..4].copy_from_slice(&flags.to_le_bytes());
    b[4..8].copy_from_slice(&txid.to_le_bytes());
    b[8..12].copy_from_slice(&cfg.spi.to_le_bytes());
    let (e, i) = ianas(cfg.transform);
    let (ek, ik) = (&cfg.keys.encryption[..], &cfg.keys.integrity[..]);
    if ek.len() > 36 || ik.len() > 64 {
        return Err(RecordError::BadField("key length"));
    }
    b[12..16].copy_from_slice(&[e, i, ek.len() as u8, ik.len() as u8]);
    b[16..20].copy_from_slice(&cfg.replay_window.unwrap_or(0).to_le_bytes());
    let encap = cfg.udp_encap.unwrap_or(UdpEncap {
        src_port: 0,
        dst_port: 0,
    });
    b[20..22].copy_from_slice(&encap.src_port.to_le_bytes());
    b[22..24].copy_from_slice(&encap.dst_port.to_le_bytes());
    let df = match cfg.df {
        DfPolicy::Copy => 0,
        DfPolicy::Set => 1,
        DfPolicy::Clear => 2,
    };
    b[24..28].copy_from_slice(&[
        cfg.outer_ttl,
        sel.local.len() as u8,
        sel.remote.len() as u8,
        df,
    ]);
    put_addr(&mut b[32..48], local);
    put_addr(&mut b[48..64], remote);
    // Tunnel endpoint family: IPv6 iff `local` is IPv6 (v4-mapped is decoded as IPv4).
    if local.is_ipv6() {
        b[28] = 6;
    }
    b[64..64 + ek.len()].copy_from_slice(ek);
    b[100..100 + ik.len()].copy_from_slice(ik);
    for (k, t) in sel.local.iter().chain(sel.remote.iter()).enumerate() {
        let s = &mut b[TS_AT + k * TS_LEN..TS_AT + (k + 1) * TS_LEN];
        put_addr(&mut s[0..16], t.start);
        put_addr(&mut s[16..32], t.end);
        s[32] = t.protocol;
        s[33] = u8::from(t.start.is_ipv6());
        s[36..38].copy_from_slice(&t.start_port.to_le_bytes());
        s[38..40].copy_from_slice(&t.end_port.to_le_bytes());
    }
    Ok(len)
}

/// Encode a DeleteSa.
pub fn encode_delete_sa(out: &mut [u8], txid: u32, direction: Direction, spi: u32) -> usize {
    out[..12].fill(0);
    out[0..2].copy_from_slice(&KIND_DELETE_SA.to_le_bytes());
    let flags = if direction == Direction::Inbound {
        FLAG_INBOUND
    } else {
        0
    };
    out[2..4].copy_from_slice(&flags.to_le_bytes());
    out[4..8].copy_from_slice(&txid.to_le_bytes());
    out[8..12].copy_from_slice(&spi.to_le_bytes());
    12
}

/// Decode any control record.
pub fn decode(b: &[u8]) -> Result<ControlRecord, RecordError> {
    if b.len() < HEADER {
        return Err(RecordError::Truncated {
            len: b.len(),
            need: HEADER,
        });
    }
    let (kind, flags, txid) = (le16(b, 0), le16(b, 2), le32(b, 4));
    let direction = if flags & FLAG_INBOUND != 0 {
        Direction::Inbound
    } else {
        Direction::Outbound
    };
    match kind {
        KIND_FLUSH => Ok(ControlRecord::Flush { txid }),
        KIND_DELETE_SA => {
            if b.len() < 12 {
                return Err(RecordError::Truncated {
                    len: b.len(),
                    need: 12,
                });
            }
            Ok(ControlRecord::DeleteSa {
                txid,
                direction,
                spi: le32(b, 8),
            })
        }
        KIND_ADD_SA => {
            if b.len() < TS_AT {
                return Err(RecordError::Truncated {
                    len: b.len(),
                    need: TS_AT,
                });
            }
            let (nl, nr) = (usize::from(b[25]), usize::from(b[26]));
            let need = TS_AT + (nl + nr) * TS_LEN;
            if nl + nr > MAX_SELECTORS {
                return Err(RecordError::TooManySelectors(nl + nr));
            }
            if b.len() < need {
                return Err(RecordError::Truncated { len: b.len(), need });
            }
            let (ek, ik) = (usize::from(b[14]), usize::from(b[15]));
            if ek > 36 || ik > 64 {
                return Err(RecordError::BadField("key length"));
            }
            let transform = transform_of(b[12], b[13], b[14])?;
            let keys = SaKeys::new(&b[64..64 + ek], &b[100..100 + ik]);
            let outer_v6 = b[28] == 6;
            let mode = if flags & FLAG_TUNNEL != 0 {
                Mode::Tunnel {
                    local: get_addr(&b[32..48], outer_v6),
                    remote: get_addr(&b[48..64], outer_v6),
                }
            } else {
                Mode::Transport
            };
            let mut cfg = match mode {
                Mode::Tunnel { local, remote } => {
                    SaConfig::tunnel(le32(b, 8), transform, keys, local, remote)
                }
                Mode::Transport => SaConfig::transport(le32(b, 8), transform, keys),
            };
            cfg.esn = flags & FLAG_ESN != 0;
            cfg.replay_window = match le32(b, 16) {
                0 => None,
                w => Some(w),
            };
            cfg.udp_encap = (flags & FLAG_NAT_T != 0).then(|| UdpEncap {
                src_port: le16(b, 20),
                dst_port: le16(b, 22),
            });
            cfg.outer_ttl = b[24];
            cfg.df = match b[27] {
                0 => DfPolicy::Copy,
                1 => DfPolicy::Set,
                2 => DfPolicy::Clear,
                _ => return Err(RecordError::BadField("df")),
            };
            cfg.copy_dscp_on_decap = flags & FLAG_COPY_DSCP != 0;
            let mut ts = Vec::with_capacity(nl + nr);
            for k in 0..nl + nr {
                let s = &b[TS_AT + k * TS_LEN..TS_AT + (k + 1) * TS_LEN];
                let v6 = s[33] != 0;
                let t = TrafficSelector::new(
                    get_addr(&s[0..16], v6),
                    get_addr(&s[16..32], v6),
                    s[32],
                    (le16(s, 36), le16(s, 38)),
                )
                .map_err(|_| RecordError::BadField("traffic selector"))?;
                ts.push(t);
            }
            let remote = ts.split_off(nl);
            cfg.selectors = SelectorSet { local: ts, remote };
            Ok(ControlRecord::AddSa {
                txid,
                direction,
                config: cfg,
            })
        }
        k => Err(RecordError::UnknownKind(k)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t: &str, tunnel_v6: Option<bool>) -> SaConfig {
        let t: EspTransform = t.parse().unwrap();
        let keys = SaKeys::new(
            &vec![7; t.encryption.key_material_len()],
            &vec![9; t.integrity.key_len()],
        );
        let mut c = match tunnel_v6 {
            Some(false) => SaConfig::tunnel(
                0x8123_4567,
                t,
                keys,
                "192.0.2.1".parse().unwrap(),
                "192.0.2.2".parse().unwrap(),
            ),
            Some(true) => SaConfig::tunnel(
                0x8123_4567,
                t,
                keys,
                "2001:db8::1".parse().unwrap(),
                "2001:db8::2".parse().unwrap(),
            ),
            None => SaConfig::transport(0x8123_4567, t, keys),
        };
        c.esn = true;
        c.replay_window = Some(4096);
        c.udp_encap = Some(UdpEncap {
            src_port: 4500,
            dst_port: 61000,
        });
        c.df = DfPolicy::Clear;
        c.outer_ttl = 33;
        c.selectors = SelectorSet {
            local: vec![TrafficSelector::prefix("10.1.0.0/16")
                .unwrap()
                .with_protocol(6, (443, 443))],
            remote: vec![
                TrafficSelector::prefix("10.2.0.0/16").unwrap(),
                TrafficSelector::prefix("2001:db8:b::/48").unwrap(),
            ],
        };
        c
    }

    #[test]
    fn add_sa_round_trips_every_field() {
        for (t, shape) in [
            ("aes128gcm16", Some(false)),
            ("aes256gcm16", Some(true)),
            ("chacha20poly1305", None),
            ("aes256-sha512", Some(false)),
            ("aes128-sha384", None),
        ] {
            let c = sample(t, shape);
            let mut buf = [0u8; MAX_RECORD];
            let n = encode_add_sa(&mut buf, 77, Direction::Inbound, &c).unwrap();
            let ControlRecord::AddSa {
                txid,
                direction,
                config,
            } = decode(&buf[..n]).unwrap()
            else {
                panic!()
            };
            assert_eq!((txid, direction), (77, Direction::Inbound));
            assert_eq!(config.spi, c.spi);
            assert_eq!(config.transform, c.transform);
            assert_eq!(&config.keys.encryption[..], &c.keys.encryption[..]);
            assert_eq!(&config.keys.integrity[..], &c.keys.integrity[..]);
            assert_eq!(config.mode, c.mode);
            assert_eq!(
                (
                    config.esn,
                    config.replay_window,
                    config.udp_encap,
                    config.df,
                    config.outer_ttl
                ),
                (c.esn, c.replay_window, c.udp_encap, c.df, c.outer_ttl)
            );
            assert_eq!(config.selectors, c.selectors);
            // Every truncation is refused, never a panic.
            for cut in 0..n {
                assert!(decode(&buf[..cut]).is_err(), "{t}: cut at {cut}");
            }
        }
    }

    #[test]
    fn other_records_and_refusals() {
        let mut buf = [0u8; 64];
        let n = encode_delete_sa(&mut buf, 5, Direction::Outbound, 0x1234);
        assert!(matches!(
            decode(&buf[..n]),
            Ok(ControlRecord::DeleteSa {
                txid: 5,
                direction: Direction::Outbound,
                spi: 0x1234
            })
        ));
        buf[0] = 99;
        assert_eq!(decode(&buf[..n]).unwrap_err(), RecordError::UnknownKind(99));
        let mut c = sample("aes128gcm16", Some(false));
        c.selectors.local = vec![TrafficSelector::any_v4(); 9];
        let mut big = [0u8; MAX_RECORD];
        assert_eq!(
            encode_add_sa(&mut big, 1, Direction::Outbound, &c).unwrap_err(),
            RecordError::TooManySelectors(11)
        );
        let c = sample("aes128gcm16", Some(false));
        let n = encode_add_sa(&mut big, 1, Direction::Outbound, &c).unwrap();
        big[12] = 3; // ENCR_3DES
        assert!(matches!(
            decode(&big[..n]),
            Err(RecordError::UnknownTransform { encr: 3, .. })
        ));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x: u64 = 1;
        let mut buf = [0u8; MAX_RECORD];
        for _ in 0..20_000 {
            for b in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            buf[0] = (x % 4) as u8;
            buf[1] = 0;
            let _ = decode(&buf[..(x as usize % MAX_RECORD)]);
        }
    }
}
