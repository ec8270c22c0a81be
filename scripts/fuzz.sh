#!/usr/bin/env bash
# Run the cargo-fuzz targets (fuzz/) for a while each:
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     # default 60 s per target, every target
#   FUZZ_JOBS=2 scripts/fuzz.sh 3600 ike_codec # a long local run on two cores
#   FUZZ_DEV=1 scripts/fuzz.sh 5              # unoptimised build (scripts/test.sh)
#   FUZZ_SANITIZER=none scripts/fuzz.sh 3600 ike_exchange   # no ASan (see below)
#   FUZZ_RUNS=10000000 FUZZ_JOBS=2 scripts/fuzz.sh 3600 gcm_differential
#                                             # stop at 10 M executions (SECONDS: the cap)
#
# Each target starts from its committed seeds (fuzz/seeds/<target>/) plus the corpus it grew
# before (fuzz/corpus/<target>/, not committed). A crash, a hang (-timeout, 10 s) or a leak
# (LeakSanitizer) exits non-zero and leaves the input under fuzz/artifacts/<target>/: fix the
# bug, then copy the input to fuzz/regressions/<target>/ so `cargo test --manifest-path
# fuzz/Cargo.toml` replays it forever. The executions per target are printed and appended to
# fuzz/runs.jsonl (not committed).
#
# libFuzzer needs a nightly toolchain (sanitizer flags) and cargo-fuzz; scripts/install-deps.sh
# installs cargo-fuzz when a nightly toolchain is present. Without them this says so and exits
# 0: the seeds and regressions still replay under `cargo test` (stable).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECONDS_PER_TARGET="${1:-60}"
shift || true
JOBS="${FUZZ_JOBS:-1}"

if ! cargo +nightly --version >/dev/null 2>&1 || ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: SKIPPED (needs a nightly toolchain and cargo-fuzz)"
    exit 0
fi

cd "$ROOT/fuzz"
if (($# > 0)); then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
for target in "${targets[@]}"; do
    [[ -f "fuzz_targets/$target.rs" ]] || { echo "fuzz: no target $target (cargo +nightly fuzz list)"; exit 2; }
done

# How the targets are built: optimised, with debug assertions and AddressSanitizer (long runs);
# with FUZZ_DEV=1 unoptimised (still ASan, debug assertions and overflow checks): less than half
# the build time, for scripts/test.sh's few seconds per target, where speed does not matter.
if [[ "${FUZZ_DEV:-0}" == 1 ]]; then
    build=(--dev)
else
    build=(--release --debug-assertions)
fi

# AddressSanitizer (and LeakSanitizer with it) by default. FUZZ_SANITIZER=none is for long
# runs of the targets whose code is safe Rust (control is `forbid(unsafe_code)`: ike_codec,
# ike_frag, ike_cert, ike_exchange, iked_config, static_sa_file): ASan finds nothing safe
# code can do, and costs those targets half their speed or more. Panics, hangs and
# -rss_limit_mb still stop the run. Keep ASan for the targets over unsafe code (the SIMD GCM
# kernels: gcm_differential, esp_decap; the shared-memory mapping: ring_records,
# counters_reader).
SANITIZER="${FUZZ_SANITIZER:-address}"
build+=(--sanitizer "$SANITIZER")

# One build of every target first, so the time budget below is spent fuzzing.
cargo +nightly fuzz build "${build[@]}" >/dev/null

# Executions: libFuzzer prints "stat::number_of_executed_units: N" once per process when it
# stops (the largest figure in a log is taken), or else "#N" status lines.
# Each job's log (fuzz-N.log) is one process (the run's own output copies them all: summing
# it counted every execution twice); without jobs the run's own output is the process's.
# (No match is no figure, not a failure: `|| true` under pipefail.)
executions() {
    local n
    n="$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$1" | awk '{ print $NF }' | sort -n | tail -1 || true)"
    [[ -n "$n" ]] || n="$(grep -oE '^#[0-9]+' "$1" | tr -d '#' | sort -n | tail -1 || true)"
    echo "${n:-0}"
}

total_runs=0
for target in "${targets[@]}"; do
    echo "== fuzz $target for ${SECONDS_PER_TARGET}s (jobs $JOBS, sanitizer $SANITIZER)"
    mkdir -p "corpus/$target"
    log="$(mktemp)"
    args=(-max_len=9100 -len_control=100 -timeout=10 -rss_limit_mb=2048
          -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1)
    # Several independent fuzzing processes sharing the corpus directory (-jobs, each writes
    # its log to fuzz-N.log): ike_codec ran 37 000 inputs/s on two cores this way against
    # 20 000/s in -fork mode (which restarts its children every few seconds, on corpus subsets).
    rm -f fuzz-[0-9]*.log
    ((JOBS > 1)) && args+=(-jobs="$JOBS" -workers="$JOBS")
    # A number of executions instead of a time (the time stays the cap): each job's share.
    [[ -n "${FUZZ_RUNS:-}" ]] && args+=(-runs=$(((FUZZ_RUNS + JOBS - 1) / JOBS)))
    # ike_exchange's inputs each touch tens of thousands of coverage features (two daemons,
    # their crypto): libFuzzer's entropic scheduler spent 13 % of the time on their bookkeeping
    # (perf: AddRareFeature); without it the target runs 1.6x the inputs a second (30 s each,
    # same corpus: 117 -> 187/s). ike_cert gains 13 % (294 -> 332/s): not worth the scheduler.
    [[ "$target" == ike_exchange ]] && args+=(-entropic=0)
    # Regressions first: every input a fuzzer ever found runs before the timed search.
    inputs=("corpus/$target" "seeds/$target")
    [[ -d "regressions/$target" ]] && inputs+=("regressions/$target")
    status=0
    started=$(date +%s)
    cargo +nightly fuzz run "${build[@]}" "$target" "${inputs[@]}" \
        -- "${args[@]}" >"$log" 2>&1 || status=$?
    runs=0
    job_logs=(fuzz-[0-9]*.log)
    if [[ -f "${job_logs[0]}" ]]; then
        for job_log in "${job_logs[@]}"; do
            runs=$((runs + $(executions "$job_log")))
            rm -f "$job_log"
        done
    else
        runs=$(executions "$log")
    fi
    if ((status != 0)); then
        tail -40 "$log"
        echo "fuzz $target: FAILED (the input is under fuzz/artifacts/$target/)"
        rm -f "$log"
        exit 1
    fi
    total_runs=$((total_runs + runs))
    elapsed=$(($(date +%s) - started))
    rate=$((runs / (elapsed > 0 ? elapsed : 1)))
    corpus_n="$(find "corpus/$target" -type f | wc -l)"
    echo "fuzz $target: ok, $runs executions in ${elapsed}s ($rate/s), corpus $corpus_n inputs"
    printf '{"target":"%s","seconds":%s,"jobs":%s,"build":"%s","sanitizer":"%s","executions":%s,"corpus":%s,"date":"%s"}\n' \
        "$target" "$elapsed" "$JOBS" "${build[*]}" "$SANITIZER" "$runs" "$corpus_n" "$(date -u +%FT%TZ)" >>runs.jsonl
    rm -f "$log"
done
echo "fuzz: ${#targets[@]} target(s), $total_runs executions, no crash, hang or leak"
