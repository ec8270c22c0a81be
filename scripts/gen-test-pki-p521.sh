#!/usr/bin/env bash
# One ECDSA P-521 end entity for the P-521 tests (AUTH methods 11 and 14), made with
# strongSwan's `pki` like scripts/gen-test-pki.sh and issued by its intermediate CA; the
# existing fixtures in control/tests/data/pki are only read. Run once; the output is
# committed.
#   gw-eKey.pem   ECDSA P-521 (as `pki --gen --type ecdsa --size 521` writes it: SEC1)
#   gw-eCert.pem  SAN gw-e.example, issued by imCert.pem (RSA 3072)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
pki_dir=$here/../control/tests/data/pki
out=${1:-$here/../control/tests/data/pki-extra}
mkdir -p "$out"
pki() { command pki "$@" 2> >(grep -v -e "TPM 2.0" -e "plugin .tpm." >&2); }
pki --gen --type ecdsa --size 521 --outform pem > "$out/gw-eKey.pem"
pki --pub --in "$out/gw-eKey.pem" | pki --issue --cacert "$pki_dir/imCert.pem" \
    --cakey "$pki_dir/imKey.pem" --dn "C=CH, O=example, CN=gw-e" --lifetime 3650 \
    --san gw-e.example --outform pem > "$out/gw-eCert.pem"
echo "P-521 test certificate in $out"
