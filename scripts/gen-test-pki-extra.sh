#!/usr/bin/env bash
# Certificates that break one rule each, for the chain validation unit tests
# (control/src/pki/chain.rs), signed with openssl by the CAs of control/tests/data/pki
# (strongSwan's `pki` cannot write them). Run once; the output is committed.
#   kuCert.pem       EE under the intermediate with keyUsage keyEncipherment only
#   critCert.pem     EE under the intermediate with an unknown critical extension
#   undergwbCert.pem EE "issued" by gw-b, an end entity without basicConstraints cA
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
pki=$here/../control/tests/data/pki
out=${1:-$here/../control/tests/data/pki-extra}
mkdir -p "$out"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
issue() { # name subject-cn cacert cakey ext-lines
    local n=$1 cn=$2 ca=$3 cakey=$4 ext=$5
    openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/$n.key"
    openssl req -new -key "$tmp/$n.key" -subj "/C=CH/O=example/CN=$cn" -out "$tmp/$n.csr"
    printf '%s\n' "$ext" > "$tmp/$n.ext"
    openssl x509 -req -in "$tmp/$n.csr" -CA "$pki/$ca" -CAkey "$pki/$cakey" \
        -set_serial "0x$(openssl rand -hex 8)" -days 3650 \
        -extfile "$tmp/$n.ext" -sha256 -out "$out/${n}Cert.pem" 2>/dev/null
}
issue ku ku imCert.pem imKey.pem "keyUsage=critical,keyEncipherment
subjectAltName=DNS:ku.example"
issue crit crit imCert.pem imKey.pem "1.3.6.1.4.1.99999.1=critical,ASN1:NULL
subjectAltName=DNS:crit.example"
issue undergwb under-gw-b gw-bCert.pem gw-bKey.pem "subjectAltName=DNS:under.example"
echo "extra test certificates in $out"
