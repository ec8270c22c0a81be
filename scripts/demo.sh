#!/usr/bin/env bash
# The demo: build the dataplane and run the ESP engine on generated traffic — every mode,
# IP family and cipher — verifying each packet's round trip and showing drops by reason.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

"$ROOT/scripts/install-deps.sh"
cargo build --release --quiet -p dataplane --bin esp-demo
exec "$ROOT/target/release/esp-demo" "$@"
