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

need_apt=()
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-venv)
if ((${#need_apt[@]})); then
    log "apt-get install ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

scapy_ok() {
    [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" - <<'PY' 2>/dev/null
import sys
import cryptography  # noqa: F401
import scapy
major, minor = (int(x) for x in scapy.VERSION.split(".")[:2])
sys.exit(0 if (major, minor) >= (2, 8) else 1)
PY
}

if scapy_ok; then
    log "scapy venv ready at $VENV"
else
    log "creating the Python venv at $VENV (scapy>=2.8, cryptography)"
    if ! python3 -m venv "$VENV" 2>/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv "$VENV"
    fi
    "$VENV/bin/pip" install -q --disable-pip-version-check 'scapy>=2.8' 'cryptography>=42'
    scapy_ok || { log "scapy install failed"; exit 1; }
fi
