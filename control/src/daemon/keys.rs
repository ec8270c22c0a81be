//! The keys of the live SAs for `vpnctl keys --wireshark` (RFC 7296 §2.14 SK_e/SK_a, and the
//! Child SA keys as the dataplane holds them). Only on request; never logged: the report
//! goes to the control socket's caller and nowhere else.

use std::fmt::Write;
use std::net::IpAddr;

use dataplane::crypto::{Encryption, Integrity};
use dataplane::esp::sa::Mode;
use dataplane::sa::Direction;
use dataplane::shm::records::SaInstall;

use super::Daemon;
use crate::api::{ChildKeys, IkeKeys, KeysReport};

/// The IANA name of an encryption transform (RFC 7296 §3.3.2, IANA "Transform Type 1") and
/// its key length in bits (the cipher key, without an AEAD's salt).
pub fn encr_iana(e: Encryption) -> (&'static str, u32) {
    match e {
        // RFC 4106 §8.1 (ESP), RFC 5282 §7.1 (IKEv2): AES-GCM with a 16-octet ICV.
        Encryption::AesGcm128 => ("ENCR_AES_GCM_16", 128),
        Encryption::AesGcm256 => ("ENCR_AES_GCM_16", 256),
        // RFC 7634 §2.
        Encryption::ChaCha20Poly1305 => ("ENCR_CHACHA20_POLY1305", 256),
        // RFC 3602.
        Encryption::AesCbc128 => ("ENCR_AES_CBC", 128),
        Encryption::AesCbc256 => ("ENCR_AES_CBC", 256),
    }
}

/// The IANA name of an integrity transform (IANA "Transform Type 3", RFC 4868); `None`
/// for an AEAD, which carries its own ICV.
pub fn integ_iana(i: Integrity) -> Option<&'static str> {
    match i {
        Integrity::None => None,
        Integrity::HmacSha256_128 => Some("AUTH_HMAC_SHA2_256_128"),
        Integrity::HmacSha384_192 => Some("AUTH_HMAC_SHA2_384_192"),
        Integrity::HmacSha512_256 => Some("AUTH_HMAC_SHA2_512_256"),
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}"); // writing to a String cannot fail
    }
    s
}

/// One SA of an installed Child SA, with the outer addresses its packets carry.
fn child_keys(sa: &SaInstall, ike_addrs: Option<(IpAddr, IpAddr)>) -> ChildKeys {
    let c = &sa.config;
    // Our end and the peer's: the tunnel endpoints, or in transport mode the IKE SA's.
    let ends = match c.mode {
        Mode::Tunnel { local, remote } => Some((local, remote)),
        Mode::Transport => ike_addrs,
    };
    let (src, dst, direction) = match (sa.direction, ends) {
        (Direction::Outbound, Some((l, r))) => (l.to_string(), r.to_string(), "out"),
        (Direction::Inbound, Some((l, r))) => (r.to_string(), l.to_string(), "in"),
        // Unknown ends: "*" (any), which is what Wireshark's esp_sa takes for a wildcard.
        (Direction::Outbound, None) => ("*".into(), "*".into(), "out"),
        (Direction::Inbound, None) => ("*".into(), "*".into(), "in"),
    };
    let (encr, encr_key_bits) = encr_iana(c.transform.encryption);
    ChildKeys {
        direction: direction.into(),
        spi: format!("{:08x}", c.spi),
        src,
        dst,
        encr: encr.into(),
        encr_key_bits,
        integ: integ_iana(c.transform.integrity).map(str::to_string),
        encr_key: hex(&c.keys.encryption),
        integ_key: hex(&c.keys.integrity),
        nat_t: c.udp_encap.is_some(),
    }
}

impl Daemon {
    /// The keys of every IKE SA that has derived them (from IKE_SA_INIT on, so a capture of
    /// IKE_AUTH can be decrypted) and of both SAs of every installed Child SA (the outbound
    /// one too while a rekey responder holds it back: the peer uses it already).
    pub fn keys_report(&self) -> KeysReport {
        let mut ike_sas: Vec<IkeKeys> = self
            .sas
            .values()
            .filter_map(|e| {
                let k = e.sa.key_material()?;
                let (spi_i, spi_r) = e.sa.spis();
                let (encr, encr_key_bits) = encr_iana(k.suite.encr);
                Some(IkeKeys {
                    spi_i: format!("{spi_i:016x}"),
                    spi_r: format!("{spi_r:016x}"),
                    encr: encr.into(),
                    encr_key_bits,
                    integ: integ_iana(k.suite.integ).map(str::to_string),
                    sk_ei: hex(k.sk_ei),
                    sk_er: hex(k.sk_er),
                    sk_ai: hex(k.sk_ai),
                    sk_ar: hex(k.sk_ar),
                })
            })
            .collect();
        ike_sas.sort_by(|a, b| (&a.spi_i, &a.spi_r).cmp(&(&b.spi_i, &b.spi_r)));
        let mut child_sas = Vec::new();
        for conn in &self.conns {
            for child in &conn.children {
                for i in &child.installed {
                    let ike_addrs = self
                        .sas
                        .get(&i.ike_spi)
                        .map(|e| (e.sa.local().ip(), e.sa.remote().ip()));
                    child_sas.push(child_keys(&i.inbound, ike_addrs));
                    child_sas.push(child_keys(&i.outbound, ike_addrs));
                }
            }
        }
        // The fact, never the keys: who holds the keys can decrypt, so the export is logged.
        tracing::info!(
            ike_sas = ike_sas.len(),
            child_sas = child_sas.len(),
            "keys of the live SAs handed to a control-socket client (vpnctl keys)"
        );
        KeysReport { ike_sas, child_sas }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::crypto::{EspTransform, SaKeys};
    use dataplane::esp::SaConfig;

    #[test]
    fn a_child_sa_is_reported_with_its_packets_addresses_and_the_salted_key() {
        let (l, r): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let mut cfg = SaConfig::tunnel(
            0xc0de0001,
            EspTransform::AES_GCM_128,
            SaKeys::new(&[0xab; 20], &[]),
            l,
            r,
        );
        cfg.udp_encap = Some(dataplane::esp::UdpEncap::DEFAULT);
        let inbound = SaInstall {
            direction: Direction::Inbound,
            reqid: 1,
            update: false,
            resource: None,
            config: cfg,
        };
        let k = child_keys(&inbound, None);
        assert_eq!((k.direction.as_str(), k.spi.as_str()), ("in", "c0de0001"));
        assert_eq!((k.src.as_str(), k.dst.as_str()), ("192.0.2.2", "192.0.2.1"));
        assert_eq!((k.encr.as_str(), k.encr_key_bits), ("ENCR_AES_GCM_16", 128));
        assert_eq!(k.encr_key, "ab".repeat(20), "the key with its 4-byte salt");
        assert_eq!((k.integ, k.integ_key.as_str(), k.nat_t), (None, "", true));
        // The record as the daemon keeps it prints no key bytes.
        assert!(
            !format!("{inbound:?}").contains("171"),
            "Debug printed key bytes"
        );

        let transport = SaInstall {
            direction: Direction::Outbound,
            config: SaConfig::transport(
                7,
                EspTransform::new(Encryption::AesCbc128, Integrity::HmacSha256_128).unwrap(),
                SaKeys::new(&[1; 16], &[2; 32]),
            ),
            ..inbound
        };
        let k = child_keys(&transport, Some((l, r)));
        assert_eq!((k.src.as_str(), k.dst.as_str()), ("192.0.2.1", "192.0.2.2"));
        assert_eq!(k.integ.as_deref(), Some("AUTH_HMAC_SHA2_256_128"));
        assert_eq!((k.encr_key.len(), k.integ_key.len()), (32, 64));
        assert!(!k.nat_t);
        let k = child_keys(&transport, None);
        assert_eq!((k.src.as_str(), k.dst.as_str()), ("*", "*"));
    }
}
