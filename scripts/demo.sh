#!/usr/bin/env bash
# The demo: a real IPsec tunnel between network namespaces, carried by our AF_XDP dataplane
# on both gateways (ping, a TCP stream with iperf3, counters, drops by reason). Needs root.
# Installs what it needs and builds first; tears everything down on exit, Ctrl-C or failure.
#
#   scripts/demo.sh [--seconds N] [--workers N]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [[ $(id -u) -ne 0 ]]; then
    echo "demo: needs root (network namespaces, XDP, AF_XDP); run: sudo $0" >&2
    exit 1
fi
"$ROOT/scripts/install-deps.sh"
echo "[demo] building the dataplane (release)" >&2
cargo build --release --quiet -p dataplane --bin dataplane --bin esp-demo -p control --bin vpnctl --bin iked
exec "$ROOT/.venv/bin/python" "$ROOT/scripts/demo.py" --dataplane "$ROOT/target/release/dataplane" "$@"
