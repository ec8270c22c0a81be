//! Post-quantum key encapsulation for IKEv2 (ML-KEM, FIPS 203; RFC 9370 additional key
//! exchanges; draft-ietf-ipsecme-ikev2-mlkem). Filled in by the ADDKE work.
