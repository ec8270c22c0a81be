#!/usr/bin/env bash
# The chaos soak (issue 16): two gateways with iked and the dataplane in network namespaces,
# short lifetimes so rekeys keep happening, traffic running, and faults at random moments
# (kill -9 of either process on either side, vpnctl reload, down/up, a NAT binding change,
# garbage and spoofed IKE_SA_INIT bursts). Asserts no clear text on the WAN, every process alive,
# memory bounded, only current SAs in the dataplanes; reports the traffic lost per fault.
# Needs root. Installs what it needs and builds (debug) first; always removes its namespaces.
#
#   scripts/soak.sh [MINUTES] [--seed N] [--out FILE] [--keep]   # default 2 minutes
#
# The seed is printed at the start and in the report; `--seed N` replays the same schedule.
# The JSON report goes to target/soak/soak.json unless --out says otherwise.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

MINUTES=2
if [[ $# -gt 0 && "$1" != -* ]]; then
    MINUTES="$1"
    shift
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "soak: needs root (network namespaces, XDP, AF_XDP); run: sudo $0" >&2
    exit 1
fi
"$ROOT/scripts/install-deps.sh"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
echo "[soak] building (debug): the workspace binaries" >&2
cargo build --quiet --workspace --bins
exec "$ROOT/.venv/bin/python" "$ROOT/scripts/soak.py" --dataplane "$TARGET/debug/dataplane" \
    --minutes "$MINUTES" "$@"
