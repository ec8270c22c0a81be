#!/usr/bin/env bash
# Run every test: formatting, lints, unit and property tests, known-answer tests and the
# scapy cross-check. Installs what it needs first (scripts/install-deps.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

START=$SECONDS
# A section header with the seconds since the start (CI must stay under 45 minutes).
section() { echo "== [$((SECONDS - START)) s] $*"; }

"$ROOT/scripts/install-deps.sh"

section "cargo fmt --check"
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check

section "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

section "cargo test"
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

section "loom model checks (the ring protocol, sequence reservation, the replay window)"
# The same sources built with loom's primitives (src/sync.rs); own target dir so the
# normal build is not invalidated.
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR="$ROOT/target/loom" \
    cargo test --release -p dataplane --lib loom_ 2>&1 | tee -a "$LOG"

section "fuzz seeds and regressions through every harness (stable; fuzz/tests/replay.rs)"
# Shares the workspace's target dir: only the crates whose resolved dependencies differ rebuild.
CARGO_TARGET_DIR="$ROOT/target" cargo test --manifest-path "$ROOT/fuzz/Cargo.toml" 2>&1 | tee -a "$LOG"

section "fuzz (cargo-fuzz, libFuzzer): every target briefly (scripts/fuzz.sh for long runs)"
"$ROOT/scripts/fuzz.sh" "${CI_FUZZ_SECONDS:-5}"

section "chaos soak, 2 minutes (scripts/soak.sh MINUTES for long runs)"
"$ROOT/scripts/soak.sh" "${CI_SOAK_MINUTES:-2}"

section "done"
# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { p += $4; f += $6 } END { printf "\nall tests: %d passed, %d failed\n", p, f; exit (f > 0) }' "$LOG"
