//! `vpnctl keys --wireshark DIR`: the keys of the live SAs as Wireshark's `esp_sa` and
//! `ikev2_decryption_table` files. Only when asked, with a warning; never logged.
//!
//! Both files are Wireshark "UAT" tables (one record a line, comma-separated fields, strings
//! quoted, byte strings as bare hex), in the field order of Wireshark 4.0's dissectors:
//!
//! ```text
//! esp_sa (packet-ipsec.c):  protocol, src IP, dst IP, SPI, encryption algorithm,
//!                           encryption key, authentication algorithm, authentication key
//! ikev2_decryption_table (packet-isakmp.c):
//!                           SPIi, SPIr, SK_ei, SK_er, encryption algorithm,
//!                           SK_ai, SK_ar, integrity algorithm
//! ```
//! Algorithms are named by the labels of Wireshark's menus (which the file format stores).
//! Wireshark decrypts neither ESP nor IKEv2 with ChaCha20-Poly1305 (RFC 7634): such SAs are
//! left out, and said so.

use std::io::Write;
use std::path::Path;

use zeroize::Zeroizing;

use super::cli::Cli;
use super::{print_json, request, CmdError, Exit};
use crate::api::{ChildKeys, IkeKeys, KeysReport, Request};

pub const ESP_SA: &str = "esp_sa";
pub const IKEV2_TABLE: &str = "ikev2_decryption_table";

/// What the operator reads before the keys leave iked.
pub fn warning(dir: &Path) -> String {
    format!(
        "vpnctl keys: WARNING: {dir}/{ESP_SA} and {dir}/{IKEV2_TABLE} will hold the keys of \
         every live IKE and Child SA. Whoever reads them can decrypt all traffic of those SAs \
         (captured before or after) until they are rekeyed, and forge IKE messages on them. \
         They are written mode 0600; delete them as soon as the capture is read \
         (e.g. `shred -u {dir}/{ESP_SA} {dir}/{IKEV2_TABLE}`).",
        dir = dir.display()
    )
}

pub fn run(cli: &Cli, dir: &Path) -> Result<Exit, CmdError> {
    eprintln!("{}", warning(dir));
    let r = request(&cli.socket, &Request::Keys)?;
    if !r.ok {
        return Err(CmdError::failed(format!("iked refused: {}", r.text.trim())));
    }
    let report: KeysReport = serde_json::from_value(r.data)
        .map_err(|e| CmdError::failed(format!("unexpected keys report from iked: {e}")))?;
    let files = wireshark_files(&report);
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    write_private(&dir.join(ESP_SA), &files.esp_sa)?;
    write_private(&dir.join(IKEV2_TABLE), &files.ikev2)?;
    for s in &files.skipped {
        eprintln!("vpnctl keys: left out {s}");
    }
    if cli.json {
        print_json("keys", &report);
    } else {
        println!(
            "wrote {} ESP SA(s) to {} and {} IKE SA(s) to {}",
            files.esp_count,
            dir.join(ESP_SA).display(),
            files.ike_count,
            dir.join(IKEV2_TABLE).display()
        );
    }
    Ok(Exit::Ok)
}

/// Write `text` to `path` readable by its owner only: a new file (mode 0600 from its
/// creation, never wider) renamed over the old one.
fn write_private(path: &Path, text: &str) -> Result<(), CmdError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |e: std::io::Error| CmdError::failed(format!("{}: {e}", path.display()));
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    let written = f.write_all(text.as_bytes()).and_then(|()| f.sync_all());
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(())
}

/// The two files' contents (wiped when dropped) and what could not go in them.
pub struct WiresharkFiles {
    pub esp_sa: Zeroizing<String>,
    pub ikev2: Zeroizing<String>,
    pub esp_count: usize,
    pub ike_count: usize,
    /// One line per SA left out, with the reason.
    pub skipped: Vec<String>,
}

const HEADER: &str =
    "# Written by `vpnctl keys --wireshark`: keys of live SAs. Delete after use.\n";

pub fn wireshark_files(r: &KeysReport) -> WiresharkFiles {
    let mut f = WiresharkFiles {
        esp_sa: Zeroizing::new(HEADER.to_string()),
        ikev2: Zeroizing::new(HEADER.to_string()),
        esp_count: 0,
        ike_count: 0,
        skipped: Vec::new(),
    };
    for c in &r.child_sas {
        match esp_lines(c) {
            Ok(lines) => {
                f.esp_sa.push_str(&lines);
                f.esp_count += 1;
            }
            Err(why) => f.skipped.push(format!(
                "ESP SA {} ({} {} -> {}): {why}",
                c.spi, c.direction, c.src, c.dst
            )),
        }
    }
    for i in &r.ike_sas {
        match ikev2_line(i) {
            Ok(line) => {
                f.ikev2.push_str(&line);
                f.ike_count += 1;
            }
            Err(why) => f
                .skipped
                .push(format!("IKE SA {}_i {}_r: {why}", i.spi_i, i.spi_r)),
        }
    }
    f
}

const NO_CHACHA: &str = "Wireshark cannot decrypt ChaCha20-Poly1305 (RFC 7634)";

/// Wireshark's label for the encryption algorithm of an `esp_sa` record.
fn esp_encr(c: &ChildKeys) -> Result<&'static str, String> {
    match c.encr.as_str() {
        // The key with its 4-byte salt (RFC 4106 §8.1), which Wireshark expects.
        "ENCR_AES_GCM_16" => Ok("AES-GCM with 16 octet ICV [RFC4106]"),
        "ENCR_AES_CBC" => Ok("AES-CBC [RFC3602]"),
        "ENCR_CHACHA20_POLY1305" => Err(NO_CHACHA.into()),
        other => Err(format!("no Wireshark name for {other}")),
    }
}

/// Wireshark's label for the authentication algorithm of an `esp_sa` record.
fn esp_auth(integ: Option<&str>) -> Result<&'static str, String> {
    match integ {
        None => Ok("NULL"),
        Some("AUTH_HMAC_SHA2_256_128") => Ok("HMAC-SHA-256-128 [RFC4868]"),
        Some("AUTH_HMAC_SHA2_384_192") => Ok("HMAC-SHA-384-192 [RFC4868]"),
        Some("AUTH_HMAC_SHA2_512_256") => Ok("HMAC-SHA-512-256 [RFC4868]"),
        Some(other) => Err(format!("no Wireshark name for {other}")),
    }
}

/// `0x` and the hex, or nothing for no key (Wireshark's convention for key strings).
fn key(hex: &str) -> String {
    if hex.is_empty() {
        String::new()
    } else {
        format!("0x{hex}")
    }
}

/// The `esp_sa` record of one SA (two, IPv4 and IPv6, when its addresses are unknown).
fn esp_lines(c: &ChildKeys) -> Result<String, String> {
    let (encr, auth) = (esp_encr(c)?, esp_auth(c.integ.as_deref())?);
    let families: &[&str] = match c.src.parse::<std::net::IpAddr>() {
        Ok(a) if a.is_ipv4() => &["IPv4"],
        Ok(_) => &["IPv6"],
        Err(_) => &["IPv4", "IPv6"], // "*": any address of either family
    };
    let mut out = String::new();
    for fam in families {
        out.push_str(&format!(
            "\"{fam}\",\"{}\",\"{}\",\"0x{}\",\"{encr}\",\"{}\",\"{auth}\",\"{}\"\n",
            c.src,
            c.dst,
            c.spi,
            key(&c.encr_key),
            key(&c.integ_key)
        ));
    }
    Ok(out)
}

/// The `ikev2_decryption_table` record of one IKE SA.
fn ikev2_line(i: &IkeKeys) -> Result<String, String> {
    let encr = match (i.encr.as_str(), i.encr_key_bits) {
        // RFC 5282 §7.1: SK_e carries the salt; Wireshark expects it.
        ("ENCR_AES_GCM_16", 128) => "AES-GCM-128 with 16 octet ICV [RFC5282]",
        ("ENCR_AES_GCM_16", 192) => "AES-GCM-192 with 16 octet ICV [RFC5282]",
        ("ENCR_AES_GCM_16", 256) => "AES-GCM-256 with 16 octet ICV [RFC5282]",
        ("ENCR_AES_CBC", 128) => "AES-CBC-128 [RFC3602]",
        ("ENCR_AES_CBC", 192) => "AES-CBC-192 [RFC3602]",
        ("ENCR_AES_CBC", 256) => "AES-CBC-256 [RFC3602]",
        ("ENCR_CHACHA20_POLY1305", _) => return Err(NO_CHACHA.into()),
        (other, bits) => return Err(format!("no Wireshark name for {other} ({bits} bits)")),
    };
    let integ = match i.integ.as_deref() {
        None => "NONE [RFC4306]",
        Some("AUTH_HMAC_SHA2_256_128") => "HMAC_SHA2_256_128 [RFC4868]",
        Some("AUTH_HMAC_SHA2_384_192") => "HMAC_SHA2_384_192 [RFC4868]",
        Some("AUTH_HMAC_SHA2_512_256") => "HMAC_SHA2_512_256 [RFC4868]",
        Some(other) => return Err(format!("no Wireshark name for {other}")),
    };
    Ok(format!(
        "{},{},{},{},\"{encr}\",{},{},\"{integ}\"\n",
        i.spi_i, i.spi_r, i.sk_ei, i.sk_er, i.sk_ai, i.sk_ar
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> KeysReport {
        KeysReport {
            ike_sas: vec![
                IkeKeys {
                    spi_i: "0123456789abcdef".into(),
                    spi_r: "fedcba9876543210".into(),
                    encr: "ENCR_AES_GCM_16".into(),
                    encr_key_bits: 128,
                    integ: None,
                    sk_ei: "aa".repeat(20),
                    sk_er: "bb".repeat(20),
                    sk_ai: String::new(),
                    sk_ar: String::new(),
                },
                IkeKeys {
                    spi_i: "1111111111111111".into(),
                    spi_r: "2222222222222222".into(),
                    encr: "ENCR_CHACHA20_POLY1305".into(),
                    encr_key_bits: 256,
                    ..Default::default()
                },
            ],
            child_sas: vec![
                ChildKeys {
                    direction: "out".into(),
                    spi: "c0de0001".into(),
                    src: "192.0.2.1".into(),
                    dst: "192.0.2.2".into(),
                    encr: "ENCR_AES_CBC".into(),
                    encr_key_bits: 128,
                    integ: Some("AUTH_HMAC_SHA2_256_128".into()),
                    encr_key: "01".repeat(16),
                    integ_key: "02".repeat(32),
                    nat_t: false,
                },
                ChildKeys {
                    direction: "in".into(),
                    spi: "c0de0002".into(),
                    src: "2001:db8::2".into(),
                    dst: "2001:db8::1".into(),
                    encr: "ENCR_AES_GCM_16".into(),
                    encr_key_bits: 256,
                    integ: None,
                    encr_key: "03".repeat(36),
                    integ_key: String::new(),
                    nat_t: true,
                },
            ],
        }
    }

    #[test]
    fn records_are_in_wiresharks_field_order_with_its_labels() {
        let f = wireshark_files(&report());
        let esp: Vec<&str> = f.esp_sa.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            esp,
            [
                format!(
                    "\"IPv4\",\"192.0.2.1\",\"192.0.2.2\",\"0xc0de0001\",\"AES-CBC [RFC3602]\",\
                     \"0x{}\",\"HMAC-SHA-256-128 [RFC4868]\",\"0x{}\"",
                    "01".repeat(16),
                    "02".repeat(32)
                ),
                format!(
                    "\"IPv6\",\"2001:db8::2\",\"2001:db8::1\",\"0xc0de0002\",\
                     \"AES-GCM with 16 octet ICV [RFC4106]\",\"0x{}\",\"NULL\",\"\"",
                    "03".repeat(36)
                ),
            ]
        );
        let ike: Vec<&str> = f.ikev2.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            ike,
            [format!(
                "0123456789abcdef,fedcba9876543210,{},{},\
                 \"AES-GCM-128 with 16 octet ICV [RFC5282]\",,,\"NONE [RFC4306]\"",
                "aa".repeat(20),
                "bb".repeat(20)
            )]
        );
        assert_eq!((f.esp_count, f.ike_count), (2, 1));
        assert_eq!(f.skipped.len(), 1, "{:?}", f.skipped);
        assert!(
            f.skipped[0].contains("1111111111111111") && f.skipped[0].contains("ChaCha20"),
            "{:?}",
            f.skipped
        );
    }

    #[test]
    fn the_files_are_owner_only_even_over_a_wider_one() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("vpnctl-keys-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(ESP_SA);
        std::fs::write(&p, "old").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&p, "new\n").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!((mode, text.as_str()), (0o600, "new\n"));
    }

    #[test]
    fn the_warning_names_both_files_and_says_to_delete_them() {
        let w = warning(Path::new("/tmp/ws"));
        assert!(w.contains("/tmp/ws/esp_sa") && w.contains("/tmp/ws/ikev2_decryption_table"));
        assert!(w.contains("decrypt") && w.contains("delete"), "{w}");
    }
}
