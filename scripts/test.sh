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
BUILD_LOG="$(mktemp)"
bg_build=""
cleanup() {
    # The background build is its own process group: stop all of it.
    [[ -n "$bg_build" ]] && kill -- "-$bg_build" 2>/dev/null
    rm -f "$LOG" "$BUILD_LOG"
}
trap cleanup EXIT

# The loom build and the fuzz targets' build (nightly, ASan: ~15 CPU-minutes) run in the
# background at idle priority (SCHED_IDLE: only on CPU time nothing else wants) while the
# tests below run; most of the namespace tests' time is spent waiting on the network. Their
# stages join them. The loom build has its own target dir, so the normal build is not
# invalidated. Not `setsid`: a new session is a new scheduler autogroup, which gets its fair
# share of the CPUs whatever its tasks' policy (measured: half of them, against the tests).
# Job control (`set -m`) gives it a process group of its own in this session instead.
fuzz_ok=0
if cargo +nightly --version >/dev/null 2>&1 && cargo fuzz --version >/dev/null 2>&1; then
    fuzz_ok=1
fi
set -m
chrt --idle 0 bash -c '
    set -e
    RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR="$1/target/loom" \
        cargo test --release -p dataplane --lib loom_ --no-run --quiet
    if [[ "$2" == 1 ]]; then
        cd "$1/fuzz" && cargo +nightly fuzz build --release --debug-assertions
    fi' bg-build "$ROOT" "$fuzz_ok" >"$BUILD_LOG" 2>&1 &
bg_build=$!
set +m

# The e2e scenarios run our binaries: dataplane, and vpnctl from the control package (a test
# of one package does not build another package's binaries).
cargo build --workspace --bins --quiet
cargo test --workspace --all-targets --no-fail-fast 2>&1 | tee "$LOG"

section "joining the background build (loom, fuzz targets)"
if ! wait "$bg_build"; then
    tail -60 "$BUILD_LOG"
    echo "the background build (loom, fuzz targets) failed"
    exit 1
fi
bg_build=""

section "loom model checks (the ring protocol, sequence reservation, the replay window)"
# The same sources built with loom's primitives (src/sync.rs).
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR="$ROOT/target/loom" \
    cargo test --release -p dataplane --lib loom_ 2>&1 | tee -a "$LOG"

section "fuzz (cargo-fuzz, libFuzzer): every target briefly (scripts/fuzz.sh for long runs)"
# The seeds and regressions also replay on stable in `cargo test` (fuzz/harness).
"$ROOT/scripts/fuzz.sh" "${CI_FUZZ_SECONDS:-5}"

section "chaos soak, 2 minutes (scripts/soak.sh MINUTES for long runs)"
"$ROOT/scripts/soak.sh" "${CI_SOAK_MINUTES:-2}"

section "done"
# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { p += $4; f += $6 } END { printf "\nall tests: %d passed, %d failed\n", p, f; exit (f > 0) }' "$LOG"
