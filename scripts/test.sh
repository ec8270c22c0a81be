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
# Namespace tests (AF_XDP, XDP, netlink) must run here too: CI is root.
export VPN_REQUIRE_ROOT=1
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
# The e2e scenarios run our binaries: dataplane, and vpnctl from the control package (a test
# of one package does not build another package's binaries).
cargo build --workspace --bins --quiet
cargo test --workspace --all-targets --no-fail-fast 2>&1 | tee "$LOG"

echo "== loom model checks (the ring protocol, sequence reservation, the replay window)"
# The same sources built with loom's primitives (src/sync.rs); own target dir so the
# normal build is not invalidated.
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR="$ROOT/target/loom" \
    cargo test --release -p dataplane --lib loom_ 2>&1 | tee -a "$LOG"

echo "== fuzz (cargo-fuzz, libFuzzer): our AES-GCM on every path against RustCrypto"
"$ROOT/scripts/fuzz.sh" 45

# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { p += $4; f += $6 } END { printf "\nall tests: %d passed, %d failed\n", p, f; exit (f > 0) }' "$LOG"
