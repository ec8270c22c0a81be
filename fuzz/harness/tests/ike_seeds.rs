//! Writes the committed seeds of the IKE targets (fuzz/seeds/ike_*/) from our own code:
//! real exchanges of our initiator against our responder, messages built with the codec,
//! the test PKI's certificates, CRL and signatures. Deterministic (seeded random sources,
//! virtual clock): rerun after a wire-visible change and commit the difference.
//!
//!   cargo test -p vpn-fuzz --test ike_seeds -- --ignored
use std::path::PathBuf;

use control::ike::sig::{PrivateKey, Scheme};
use control::ike::wire::{
    self, exchange, flags, payload, Delete, Header, Id, Message, Notify, Payload, Proposal,
    Transform, Ts,
};
use vpn_fuzz::cert::{cert_der, fixture, KEYS, SIGNED_OCTETS};
use vpn_fuzz::exchange::{real_exchange, Captured, Seeded};

fn dir(target: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("seeds")
        .join(target);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(target: &str, name: &str, data: &[u8]) {
    std::fs::write(dir(target).join(name), data).unwrap();
}

fn sample() -> Message {
    Message {
        header: Header {
            spi_i: 0x0102_0304_0506_0708,
            spi_r: 0x1112_1314_1516_1718,
            next_payload: 0,
            major: 2,
            minor: 0,
            exchange: exchange::IKE_SA_INIT,
            flags: flags::INITIATOR,
            message_id: 0,
            length: 0,
        },
        payloads: vec![
            Payload::Sa(vec![
                Proposal {
                    number: 1,
                    protocol: 1,
                    spi: vec![],
                    transforms: vec![
                        Transform {
                            kind: wire::transform::ENCR,
                            id: 20,
                            key_len: Some(128),
                        },
                        Transform {
                            kind: wire::transform::PRF,
                            id: 5,
                            key_len: None,
                        },
                        Transform {
                            kind: wire::transform::KE,
                            id: 31,
                            key_len: None,
                        },
                    ],
                },
                Proposal {
                    number: 2,
                    protocol: 3,
                    spi: vec![1, 2, 3, 4],
                    transforms: vec![Transform {
                        kind: wire::transform::ESN,
                        id: 0,
                        key_len: None,
                    }],
                },
            ]),
            Payload::Ke {
                group: 31,
                data: vec![9; 32],
            },
            Payload::Nonce(vec![7; 32]),
            Payload::Notify(Notify {
                protocol: 3,
                spi: vec![1, 2, 3, 4],
                kind: 16388,
                data: vec![1; 20],
            }),
            Payload::TsI(vec![Ts {
                protocol: 0,
                start_port: 0,
                end_port: 65535,
                start: "10.1.0.0".parse().unwrap(),
                end: "10.1.255.255".parse().unwrap(),
            }]),
            Payload::TsR(vec![Ts {
                protocol: 6,
                start_port: 443,
                end_port: 443,
                start: "2001:db8::".parse().unwrap(),
                end: "2001:db8::ffff".parse().unwrap(),
            }]),
            Payload::Delete(Delete {
                protocol: 3,
                spi_size: 4,
                spis: vec![vec![1, 2, 3, 4], vec![5, 6, 7, 8]],
            }),
            Payload::IdI(Id {
                kind: 2,
                data: b"gw-a.example".to_vec(),
            }),
            Payload::Cert {
                encoding: 4,
                data: vec![0x30, 0x03, 0x02, 0x01, 0x01],
            },
            Payload::CertReq {
                encoding: 4,
                data: vec![0xab; 20],
            },
            Payload::Auth {
                method: 2,
                data: vec![3; 32],
            },
            Payload::VendorId(b"vpn fuzz".to_vec()),
            Payload::Other {
                kind: payload::CP,
                body: vec![1, 0, 0, 0],
            },
        ],
    }
}

fn chain_bytes(p: &[Payload]) -> (u8, Vec<u8>) {
    let mut out = Vec::new();
    let first = wire::emit_chain(p, &mut out);
    (first, out)
}

#[test]
#[ignore]
fn write_ike_codec_seeds() {
    for suite in 0..2 {
        for (i, c) in real_exchange(suite).iter().enumerate() {
            write("ike_codec", &format!("exchange{suite}-{i:02}"), &c.data);
            if let Some((first, plain)) = &c.inner {
                let mut b = vec![*first];
                b.extend_from_slice(plain);
                write("ike_codec", &format!("exchange{suite}-{i:02}-inner"), &b);
            }
        }
    }
    write("ike_codec", "every-payload", &sample().emit());
    let mut v1 = sample().emit();
    v1[17] = 0x10;
    write("ike_codec", "ikev1", &v1);
    let mut marker = vec![0, 0, 0, 0];
    marker.extend_from_slice(&sample().emit());
    write("ike_codec", "non-esp-marker", &marker);
}

/// One `ike_frag` record.
fn frag_rec(out: &mut Vec<u8>, number: u16, total: u16, mid: u8, first: u8, dt: u8, b: &[u8]) {
    out.extend_from_slice(&number.to_be_bytes());
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&[mid, first, dt, b.len() as u8]);
    out.extend_from_slice(b);
}

#[test]
#[ignore]
fn write_ike_frag_seeds() {
    // A real inner payload chain cut into three, in order.
    let inner = real_exchange(0)
        .into_iter()
        .find_map(|c| c.inner)
        .expect("an encrypted message");
    let (first, plain) = inner;
    let parts: Vec<&[u8]> = plain.chunks(plain.len().div_ceil(3)).collect();
    let mut s = vec![0, 255];
    for (i, p) in parts.iter().enumerate() {
        frag_rec(
            &mut s,
            i as u16 + 1,
            parts.len() as u16,
            1,
            first,
            1,
            &p[..p.len().min(255)],
        );
    }
    write("ike_frag", "in-order", &s);
    // Reversed, a duplicate, a smaller total, then another message ID and a stale set.
    let mut s = vec![0, 4];
    frag_rec(&mut s, 3, 3, 1, 0, 0, b"third");
    frag_rec(&mut s, 3, 3, 1, 0, 0, b"third again");
    frag_rec(&mut s, 1, 2, 1, 0, 0, b"older total");
    frag_rec(&mut s, 2, 3, 1, 0, 0, b"second");
    frag_rec(&mut s, 1, 3, 1, payload::IDI, 0, b"first");
    frag_rec(&mut s, 1, 2, 2, payload::NOTIFY, 0, b"next message");
    frag_rec(&mut s, 2, 2, 2, 0, 200, b"too late");
    frag_rec(&mut s, 1, 4, 5, payload::DELETE, 0, b"informational");
    frag_rec(&mut s, 2, 5, 5, 0, 0, b"re-fragmented smaller");
    write("ike_frag", "reordered-duplicate-stale", &s);
    // The byte cap: a small one, then a set that outgrows it.
    let mut s = vec![1, 255];
    for n in 1..=4 {
        frag_rec(&mut s, n, 4, 0, 33, 0, &[n as u8; 60]);
    }
    frag_rec(&mut s, 0, 4, 0, 33, 0, b"number zero");
    frag_rec(&mut s, 1, 256, 0, 33, 0, b"too many");
    write("ike_frag", "byte-cap-and-bad-numbers", &s);
}

fn prefixed(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        out.extend_from_slice(&(p.len() as u16).to_be_bytes());
        out.extend_from_slice(p);
    }
    out
}

#[test]
#[ignore]
fn write_ike_cert_seeds() {
    let im = cert_der("pki/imCert.pem");
    for name in ["gw-a", "gw-b", "revoked", "expired", "nosan"] {
        let mut s = vec![0];
        s.extend(prefixed(&[
            cert_der(&format!("pki/{name}Cert.pem")),
            im.clone(),
        ]));
        write("ike_cert", &format!("chain-{name}"), &s);
    }
    let mut s = vec![0];
    s.extend(prefixed(&[
        cert_der("pki/other-gwCert.pem"),
        cert_der("pki/otherCert.pem"),
    ]));
    write("ike_cert", "chain-untrusted", &s);
    for name in ["crit", "ku", "undergwb"] {
        let mut s = vec![0];
        s.extend(prefixed(&[
            cert_der(&format!("pki-extra/{name}Cert.pem")),
            cert_der("pki/gw-bCert.pem"),
            im.clone(),
        ]));
        write("ike_cert", &format!("chain-{name}"), &s);
    }
    let crl = control::pki::load::read_crls(&fixture("pki/im.crl.pem")).unwrap();
    let mut s = vec![1];
    s.extend_from_slice(&crl[0]);
    write("ike_cert", "crl", &s);
    for (k, name) in KEYS.iter().enumerate() {
        let pem = std::fs::read_to_string(fixture(&format!("{name}Key.pem"))).unwrap();
        let key = PrivateKey::from_pem(&pem).unwrap();
        let mut rng = Seeded(7);
        for (j, scheme) in key.kind().schemes().into_iter().enumerate().take(3) {
            let data = key
                .auth_digital_signature(scheme, SIGNED_OCTETS, &mut rng)
                .unwrap();
            let mut s = vec![2, k as u8, 14];
            s.extend_from_slice(&data);
            write("ike_cert", &format!("auth-{k}-{j}"), &s);
        }
        if let Ok((method, data)) = key.auth_classic(SIGNED_OCTETS, &mut rng) {
            let mut s = vec![2, k as u8, method];
            s.extend_from_slice(&data);
            write("ike_cert", &format!("auth-{k}-classic"), &s);
        }
        // The key given as SPKI DER instead of by number.
        let spki = key.public_spki_der();
        let data = key
            .auth_digital_signature(key.kind().schemes()[0], SIGNED_OCTETS, &mut rng)
            .unwrap();
        let mut s = vec![2, 0x80];
        s.extend(prefixed(&[spki]));
        s.push(14);
        s.extend_from_slice(&data);
        write("ike_cert", &format!("auth-{k}-spki"), &s);
    }
    let _: Option<Scheme> = None;
    for (i, (kind, data)) in [
        (2u8, b"gw-b.example".to_vec()),
        (1, vec![192, 0, 2, 1]),
        (3, b"gw-a@example.net".to_vec()),
        (
            9,
            control::pki::ident::parse_dn("C=CH, O=example, CN=gw-a").unwrap(),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let mut s = vec![3, kind];
        s.extend_from_slice(&data);
        write("ike_cert", &format!("id-{i}"), &s);
    }
}

/// One `ike_exchange` record.
fn ex_rec(out: &mut Vec<u8>, op: u8, ctl: u8, first: u8, b: &[u8]) {
    out.extend_from_slice(&[op, ctl, first]);
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

#[test]
#[ignore]
fn write_ike_exchange_seeds() {
    for suite in 0..2u8 {
        let ex: Vec<Captured> = real_exchange(usize::from(suite));
        let suite_bit = suite << 2;
        // Stage 0: a's real datagrams replayed to b raw (the daemons are deterministic, so
        // b answers as it did), then the wire delivered.
        let mut s = vec![suite_bit];
        for c in ex.iter().filter(|c| c.sender == 0) {
            ex_rec(&mut s, 0, 0, 0, &c.data);
        }
        ex_rec(&mut s, 7, 1, 0, &[]);
        write("ike_exchange", &format!("s{suite}-replay-raw"), &s);
        // Stage 0: IKE_SA_INIT floods (other SPIs): the half-open limit and cookies.
        let init = &ex[0].data;
        let mut s = vec![suite_bit];
        for n in 0..8u8 {
            let mut d = init.clone();
            d[7] ^= n + 1;
            ex_rec(&mut s, 0, 0, 0, &d);
        }
        ex_rec(&mut s, 7, 0, 60, &[]);
        ex_rec(&mut s, 0, 0, 0, init);
        write("ike_exchange", &format!("s{suite}-init-flood"), &s);
        // Stage 1: the real IKE_AUTH request's inner payloads, sealed by the harness; and
        // fragmented.
        let auth_req = ex
            .iter()
            .find(|c| c.sender == 0 && c.inner.is_some())
            .and_then(|c| c.inner.clone())
            .unwrap();
        let auth_resp = ex
            .iter()
            .find(|c| c.sender == 1 && c.inner.is_some())
            .and_then(|c| c.inner.clone())
            .unwrap();
        let mut s = vec![suite_bit | 1];
        ex_rec(&mut s, 3, 0, auth_req.0, &auth_req.1);
        ex_rec(&mut s, 7, 1, 1, &[]);
        write("ike_exchange", &format!("s{suite}-auth-request"), &s);
        let mut s = vec![suite_bit | 1];
        ex_rec(&mut s, 3 | 0x20, 8, auth_req.0, &auth_req.1);
        write(
            "ike_exchange",
            &format!("s{suite}-auth-request-fragmented-nat"),
            &s,
        );
        // Stage 1: b's real IKE_AUTH response's inner payloads, to a.
        let mut s = vec![suite_bit | 1];
        ex_rec(&mut s, 4, 0, auth_resp.0, &auth_resp.1);
        ex_rec(&mut s, 7, 1, 1, &[]);
        write("ike_exchange", &format!("s{suite}-auth-response"), &s);
        // Stage 2: INFORMATIONAL (DPD, a Delete of the Child SA, of the IKE SA), a
        // CREATE_CHILD_SA for a new child, both ways; then time for rekeys and DPD.
        let child_spi = vec![0x80, 0, 0, 9];
        let (f_del_child, del_child) = chain_bytes(&[Payload::Delete(Delete {
            protocol: 3,
            spi_size: 4,
            spis: vec![child_spi.clone()],
        })]);
        let (f_del_ike, del_ike) = chain_bytes(&[Payload::Delete(Delete {
            protocol: 1,
            spi_size: 0,
            spis: vec![],
        })]);
        let (f_new, new_child) = chain_bytes(&[
            Payload::Sa(vec![Proposal {
                number: 1,
                protocol: 3,
                spi: child_spi,
                transforms: vec![
                    Transform {
                        kind: wire::transform::ENCR,
                        id: 20,
                        key_len: Some(128),
                    },
                    Transform {
                        kind: wire::transform::ESN,
                        id: 0,
                        key_len: None,
                    },
                ],
            }]),
            Payload::Nonce(vec![5; 32]),
            Payload::TsI(vec![Ts {
                protocol: 0,
                start_port: 0,
                end_port: 65535,
                start: "10.1.0.0".parse().unwrap(),
                end: "10.1.255.255".parse().unwrap(),
            }]),
            Payload::TsR(vec![Ts {
                protocol: 0,
                start_port: 0,
                end_port: 65535,
                start: "10.2.0.0".parse().unwrap(),
                end: "10.2.255.255".parse().unwrap(),
            }]),
        ]);
        let exch_info = 2 << 3;
        let exch_ccsa = 1 << 3;
        let mut s = vec![suite_bit | 2];
        ex_rec(&mut s, 3 | exch_info, 0, 0, &[]);
        ex_rec(&mut s, 3 | exch_ccsa, 0, f_new, &new_child);
        ex_rec(&mut s, 5 | exch_ccsa, 0, f_new, &new_child);
        ex_rec(&mut s, 7, 1, 1, &[]);
        ex_rec(&mut s, 3 | exch_info, 0, f_del_child, &del_child);
        ex_rec(&mut s, 5 | exch_info, 0, f_del_child, &del_child);
        ex_rec(&mut s, 7, 1, 1, &[]);
        ex_rec(&mut s, 3 | exch_info, 0, f_del_ike, &del_ike);
        ex_rec(&mut s, 7, 1, 1, &[]);
        write(
            "ike_exchange",
            &format!("s{suite}-established-informational"),
            &s,
        );
        let mut s = vec![suite_bit | 2 | 0x80];
        for _ in 0..4 {
            ex_rec(&mut s, 7, 1, 255, &[]);
            ex_rec(&mut s, 7, 1, 0, &[]);
            ex_rec(&mut s, 7, 1, 0, &[]);
        }
        ex_rec(&mut s, 6 | exch_info, 0, 0, &[]);
        write("ike_exchange", &format!("s{suite}-established-time"), &s);
    }
}
