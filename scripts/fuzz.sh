#!/usr/bin/env bash
# Run the cargo-fuzz targets (fuzz/) for a while each:
#
#   scripts/fuzz.sh [SECONDS]      # default 60 per target
#
# libFuzzer needs a nightly toolchain (sanitizer flags) and cargo-fuzz; scripts/install-deps.sh
# installs cargo-fuzz when a nightly toolchain is present. Without them this says so and
# exits 0, and the same properties still run as proptests in `cargo test`
# (dataplane/tests/gcm_engine.rs). A crash exits non-zero and leaves the input under
# fuzz/artifacts/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECONDS_PER_TARGET="${1:-60}"

if ! cargo +nightly --version >/dev/null 2>&1 || ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: SKIPPED (needs a nightly toolchain and cargo-fuzz)"
    exit 0
fi

cd "$ROOT/fuzz"
for target in $(cargo +nightly fuzz list); do
    echo "== fuzz $target for ${SECONDS_PER_TARGET}s"
    # Messages up to 9000 bytes; -len_control=100 reaches the long ones sooner.
    log="$(mktemp)"
    if ! cargo +nightly fuzz run "$target" -- \
        -max_len=9100 -len_control=100 -max_total_time="$SECONDS_PER_TARGET" >"$log" 2>&1; then
        tail -40 "$log"
        echo "fuzz $target: FAILED (input under fuzz/artifacts/$target/ if it crashed)"
        rm -f "$log"
        exit 1
    fi
    grep -E '^Done [0-9]+ runs' "$log" || tail -3 "$log"
    rm -f "$log"
    echo "fuzz $target: ok"
done
