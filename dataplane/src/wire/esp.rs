//! ESP headers (RFC 4303 §2).

use super::{be32, put32, WireError};

mod field {
    pub const SPI: usize = 0;
    pub const SEQ: usize = 4;
    pub const PAYLOAD: usize = 8;
}

/// SPI and sequence number.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// RFC 3948 §2.2: a UDP/4500 payload starting with four zero bytes (the non-ESP marker)
/// is IKE, not ESP. An SPI of zero is reserved (RFC 4303 §2.1), so the test is exact.
pub fn is_non_esp_marker(udp_payload: &[u8]) -> bool {
    udp_payload.len() >= 4 && udp_payload[..4] == [0, 0, 0, 0]
}

/// A view of an ESP packet: header, then the opaque protected payload.
#[derive(Debug, Clone)]
pub struct EspPacket<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> EspPacket<T> {
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        if buf.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(EspPacket { buf })
    }
    pub fn spi(&self) -> u32 {
        be32(self.buf.as_ref(), field::SPI)
    }
    /// The low 32 bits of the sequence number (the only bits on the wire, §2.2).
    pub fn seq(&self) -> u32 {
        be32(self.buf.as_ref(), field::SEQ)
    }
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[field::PAYLOAD..]
    }
}

/// ESP header fields as plain data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspRepr {
    pub spi: u32,
    pub seq: u32,
}

impl EspRepr {
    pub fn parse<T: AsRef<[u8]>>(p: &EspPacket<T>) -> EspRepr {
        EspRepr {
            spi: p.spi(),
            seq: p.seq(),
        }
    }
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        if buf.len() < HEADER_LEN {
            return Err(WireError::NoRoom);
        }
        put32(buf, field::SPI, self.spi);
        put32(buf, field::SEQ, self.seq);
        Ok(())
    }
}

/// The last two bytes of the decrypted payload (RFC 4303 §2.5, §2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspTrailer {
    pub pad_len: u8,
    pub next_header: u8,
}

impl EspTrailer {
    pub const LEN: usize = 2;

    /// Read the trailer from the end of a decrypted payload.
    pub fn parse(plaintext: &[u8]) -> Result<EspTrailer, WireError> {
        match plaintext {
            [.., pad_len, next_header] => Ok(EspTrailer {
                pad_len: *pad_len,
                next_header: *next_header,
            }),
            _ => Err(WireError::Truncated),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let r = EspRepr {
            spi: 0xdead_beef,
            seq: 7,
        };
        let mut b = [0u8; 12];
        r.emit(&mut b).unwrap();
        let p = EspPacket::new_checked(&b[..]).unwrap();
        assert_eq!(EspRepr::parse(&p), r);
        assert_eq!(p.payload().len(), 4);
        assert!(EspPacket::new_checked(&b[..7]).is_err());
    }

    #[test]
    fn marker_and_trailer() {
        assert!(is_non_esp_marker(&[0, 0, 0, 0, 1]));
        assert!(!is_non_esp_marker(&[0, 0, 0, 1]));
        assert!(!is_non_esp_marker(&[0, 0]));
        assert_eq!(
            EspTrailer::parse(&[9, 9, 2, 4]).unwrap(),
            EspTrailer {
                pad_len: 2,
                next_header: 4
            }
        );
        assert!(EspTrailer::parse(&[1]).is_err());
    }
}
