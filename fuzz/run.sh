#!/usr/bin/env bash
# Runs the cargo-fuzz targets for a bounded time each and fails if any of
# them crashes (a panic, a failed invariant, an input running over 25 s, or
# running out of memory).
#
#   fuzz/run.sh [TARGET...] [-- LIBFUZZER_ARGS...]
#
# Environment:
#   FUZZ_SECS       seconds per target (default 60)
#   FUZZ_SANITIZER  cargo-fuzz sanitizer (default none: the code under test
#                   is safe Rust, and without ASan it runs several times
#                   faster; use `address` to include it)
#   FUZZ_NICE       niceness of the fuzzing process (default 10)
#   FUZZ_REQUIRE=1  fail, rather than skip, when nightly or cargo-fuzz is
#                   missing
#   CARGO_TARGET_DIR is honoured.
#
# New inputs go to fuzz/corpus-gen/TARGET (not committed); the committed
# seeds in fuzz/corpus/TARGET are read, never written. Crashes are saved in
# fuzz/artifacts/TARGET/ and listed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${FUZZ_SECS:-60}"
sanitizer="${FUZZ_SANITIZER:-none}"
niceness="${FUZZ_NICE:-10}"

targets=()
while (($#)); do
    if [[ "$1" == "--" ]]; then
        shift
        break
    fi
    targets+=("$1")
    shift
done
extra=("$@")

skip() {
    if [[ "${FUZZ_REQUIRE:-0}" == 1 ]]; then
        echo "fuzz/run.sh: $1" >&2
        exit 1
    fi
    echo "fuzz/run.sh: $1; skipping the fuzz runs" >&2
    exit 0
}
cargo +nightly --version >/dev/null 2>&1 || skip "no nightly toolchain"
cargo +nightly fuzz --version >/dev/null 2>&1 ||
    skip "cargo-fuzz is not installed (cargo install cargo-fuzz --locked)"

if ((${#targets[@]} == 0)); then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

failed=()
for t in "${targets[@]}"; do
    printf '\n=== fuzz %s for %ss (%s)\n' "$t" "$secs" "$(date +%T)"
    mkdir -p "fuzz/corpus-gen/$t" "fuzz/corpus/$t"
    args=(-s "$sanitizer")
    if [[ -n "${CARGO_TARGET_DIR:-}" ]]; then
        args+=(--target-dir "$CARGO_TARGET_DIR")
    fi
    if ! nice -n "$niceness" cargo +nightly fuzz run "${args[@]}" "$t" \
        "fuzz/corpus-gen/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -timeout=25 -print_final_stats=1 "${extra[@]}"; then
        failed+=("$t")
    fi
done

if ((${#failed[@]})); then
    printf '\nfuzz/run.sh: crashes in: %s\n' "${failed[*]}" >&2
    for t in "${failed[@]}"; do
        ls -1 "fuzz/artifacts/$t"/* 2>/dev/null >&2 || true
    done
    exit 1
fi
printf '\nfuzz/run.sh: %s target(s), no crash\n' "${#targets[@]}"
