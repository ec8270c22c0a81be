#!/usr/bin/env bash
# Install what the demo and the tests need, idempotently. Safe to rerun.
#
#   scripts/install-deps.sh          # everything
#
# - a Python venv at .venv with scapy >= 2.8 and cryptography (Debian's python3-scapy 2.5 is
#   broken for NAT-T, so we take scapy from PyPI), used to cross-check our ESP packets.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

log() { printf '[install-deps] %s\n' "$*" >&2; }

# Debian packages, each checked by a file it installs.
need_apt=()
want() { [[ -e "$2" ]] || need_apt+=("$1"); }
want python3 /usr/bin/python3
want clang-19 /usr/bin/clang-19           # builds the XDP program (-target bpf)
want llvm-19 /usr/bin/llvm-objdump-19
want libbpf-dev /usr/include/bpf/bpf_helpers.h
want iproute2 /usr/sbin/ip                 # namespaces, veth
want ethtool /usr/sbin/ethtool             # tx checksum offload off on test veths
want iputils-ping /usr/bin/ping
want iperf3 /usr/bin/iperf3
want tcpdump /usr/bin/tcpdump
# A real NAT between namespaces (vpnlab's nat topology): nftables masquerade, and conntrack
# to flush its bindings (a changed NAT mapping mid-tunnel).
want nftables /usr/sbin/nft
want conntrack /usr/sbin/conntrack
# strongSwan, the interop peer (charon with kernel-libipsec, swanctl, chapoly/curve25519).
want strongswan-charon /usr/lib/ipsec/charon
want strongswan-swanctl /usr/sbin/swanctl
want libcharon-extra-plugins /usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so
want libstrongswan-extra-plugins /usr/lib/ipsec/plugins/libstrongswan-curve25519.so
# strongSwan's `pki`: the certificate tests make their PKI with it at run time
# (vpnlab.Pki; scripts/gen-test-pki.sh for the committed unit-test certificates).
want strongswan-pki /usr/bin/pki
# tshark: the Wireshark-keys test decrypts a capture with the files `vpnctl keys` writes.
want tshark /usr/bin/tshark
# Intel ipsec-mb, the baseline of the AES-GCM benchmark (bench/ipsecmb/shim.c links it).
want libipsec-mb-dev /usr/include/intel-ipsec-mb.h
if ((${#need_apt[@]})); then
    log "apt-get install ${need_apt[*]}"
    apt-get update -qq
    # iperf3 asks whether to start a daemon; the answer is no.
    echo "iperf3 iperf3/start_daemon boolean false" | debconf-set-selections 2>/dev/null || true
    # wireshark-common asks whether non-root users may capture; the answer is no.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# cargo-fuzz for scripts/fuzz.sh; libFuzzer builds need a nightly toolchain, so only then.
if cargo +nightly --version >/dev/null 2>&1 && ! cargo fuzz --version >/dev/null 2>&1; then
    log "cargo install cargo-fuzz (a nightly toolchain is present)"
    cargo install --locked --quiet cargo-fuzz
fi

scapy_ok() {
    [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" - <<'PY' 2>/dev/null
import sys
import cryptography  # noqa: F401
import jsonschema  # noqa: F401  (vpnctl --json against docs/schema)
import prometheus_client.parser  # noqa: F401  (the metrics endpoint, parsed)
import scapy
major, minor = (int(x) for x in scapy.VERSION.split(".")[:2])
sys.exit(0 if (major, minor) >= (2, 8) else 1)
PY
}

if scapy_ok; then
    log "scapy venv ready at $VENV"
else
    log "creating the Python venv at $VENV (scapy>=2.8, cryptography, jsonschema, prometheus_client)"
    if ! python3 -m venv "$VENV" 2>/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv "$VENV"
    fi
    "$VENV/bin/pip" install -q --disable-pip-version-check 'scapy>=2.8' 'cryptography>=42' \
        'jsonschema>=4' 'prometheus_client>=0.20'
    scapy_ok || { log "scapy install failed"; exit 1; }
fi
