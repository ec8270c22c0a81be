#!/usr/bin/env bash
# Test certificates for the sans-IO and unit tests (control/tests/data/pki), made with
# strongSwan's own `pki` tool (Debian strongswan-pki). Run once; the output is committed so
# the tests are deterministic. The namespace interop tests make their own at run time.
#
#   root CA (ECDSA P-384) -> intermediate CA (RSA 3072) -> end entities:
#     gw-a  RSA 3072, signed with RSA-PSS     SAN gw-a.example, 10.0.0.1, gw-a@example.net
#     gw-b  ECDSA P-256                        SAN gw-b.example, 10.0.0.2
#     gw-c  ECDSA P-384                        SAN gw-c.example
#     gw-d  Ed25519                            SAN gw-d.example
#     expired (2020-2021), notyet (2040-2041), revoked (in im.crl.pem), nosan (no SAN)
#   other CA (ECDSA P-256), not trusted by anyone: other-gw under it.
set -euo pipefail
out=${1:-$(dirname "$0")/../control/tests/data/pki}
mkdir -p "$out"
cd "$out"
pki() { command pki "$@" 2> >(grep -v -e "TPM 2.0" -e "plugin .tpm." >&2); }
pki --gen --type ecdsa --size 384 --outform pem > rootKey.pem
pki --self --ca --lifetime 7300 --in rootKey.pem --dn "C=CH, O=example, CN=Root CA" --outform pem > rootCert.pem
pki --gen --type rsa --size 3072 --outform pem > imKey.pem
pki --pub --in imKey.pem | pki --issue --cacert rootCert.pem --cakey rootKey.pem \
    --ca --pathlen 0 --lifetime 7000 --dn "C=CH, O=example, CN=Intermediate CA" --outform pem > imCert.pem
issue() { # name keytype size dn [extra…]
    local n=$1 t=$2 s=$3 dn=$4; shift 4
    if [ "$t" = ed25519 ]; then pki --gen --type ed25519 --outform pem > "${n}Key.pem"
    else pki --gen --type "$t" --size "$s" --outform pem > "${n}Key.pem"; fi
    pki --pub --in "${n}Key.pem" | pki --issue --cacert imCert.pem --cakey imKey.pem \
        --dn "$dn" "$@" --outform pem > "${n}Cert.pem"
}
issue gw-a rsa 3072 "C=CH, O=example, CN=gw-a" --rsa-padding pss --lifetime 3650 \
    --san gw-a.example --san 10.0.0.1 --san gw-a@example.net --flag serverAuth
issue gw-b ecdsa 256 "C=CH, O=example, CN=gw-b" --lifetime 3650 --san gw-b.example --san 10.0.0.2
issue gw-c ecdsa 384 "C=CH, O=example, CN=gw-c" --lifetime 3650 --san gw-c.example
issue gw-d ed25519 0 "C=CH, O=example, CN=gw-d" --lifetime 3650 --san gw-d.example
issue expired ecdsa 256 "C=CH, O=example, CN=expired" --san expired.example \
    --not-before "01.01.20 00:00:00" --not-after "01.01.21 00:00:00"
issue notyet ecdsa 256 "C=CH, O=example, CN=notyet" --san notyet.example \
    --not-before "01.01.40 00:00:00" --not-after "01.01.41 00:00:00"
issue revoked ecdsa 256 "C=CH, O=example, CN=revoked" --lifetime 3650 --san revoked.example
issue nosan ecdsa 256 "C=CH, O=example, CN=nosan" --lifetime 3650
pki --signcrl --cacert imCert.pem --cakey imKey.pem --cert revokedCert.pem \
    --reason key-compromise --lifetime 3650 --outform pem > im.crl.pem
pki --gen --type ecdsa --size 256 --outform pem > otherKey.pem
pki --self --ca --lifetime 7300 --in otherKey.pem --dn "C=CH, O=other, CN=Other CA" --outform pem > otherCert.pem
pki --gen --type ecdsa --size 256 --outform pem > other-gwKey.pem
pki --pub --in other-gwKey.pem | pki --issue --cacert otherCert.pem --cakey otherKey.pem \
    --lifetime 3650 --dn "C=CH, O=other, CN=other-gw" --san other-gw.example --outform pem > other-gwCert.pem
chmod 600 ./*Key.pem
date -u +%s > generated-at
echo "test PKI in $out"
