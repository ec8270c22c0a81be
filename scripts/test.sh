#!/usr/bin/env bash
# Run every test: formatting, lints, unit and property tests, known-answer tests and the
# scapy cross-check. Installs what it needs first (scripts/install-deps.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

"$ROOT/scripts/install-deps.sh"

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== cargo test"
# The scapy cross-check must run here, not skip.
export VPN_PYTHON="$ROOT/.venv/bin/python"
export VPN_REQUIRE_SCAPY=1
cargo test --workspace --all-targets
cargo test --workspace --doc
