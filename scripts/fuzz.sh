#!/usr/bin/env bash
# Run midge's cargo-fuzz targets (fuzz/fuzz_targets/*.rs).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# SECONDS per target (default: $FUZZ_SECONDS, else 60); every target unless some
# are named. For each target it first replays fuzz/regressions/TARGET/* (inputs
# that once crashed must keep passing), then fuzzes for SECONDS starting from the
# committed seeds in fuzz/corpus/TARGET. New inputs go to a scratch corpus under
# fuzz/target/ (kept between runs, never committed). Prints executions per target
# and fails if any target crashes; the crash input is in fuzz/artifacts/TARGET/.
#
# Environment: FUZZ_SECONDS, FUZZ_DEV=1 (unoptimised build: --dev), FUZZ_RSS_MB
# (libFuzzer -rss_limit_mb, default 2048: with the address sanitizer a target
# can pass 500 MB), FUZZ_ARGS (extra libFuzzer flags).
#
# cargo-fuzz needs nightly-only rustc flags; RUSTC_BOOTSTRAP=1 lets the stable
# toolchain accept them (`cargo +nightly fuzz` works too where there is one).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-60}"
if [ $# -gt 0 ] && [[ "$1" =~ ^[0-9]+$ ]]; then
    seconds="$1"
    shift
fi
if [ $# -gt 0 ]; then
    targets=("$@")
else
    targets=()
    for f in fuzz/fuzz_targets/*.rs; do
        targets+=("$(basename "$f" .rs)")
    done
fi
rss_mb="${FUZZ_RSS_MB:-2048}"
build_flags=()
profile=release
if [ "${FUZZ_DEV:-0}" = 1 ]; then
    build_flags+=(--dev)
    profile=debug
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz (about 2 minutes)"
    cargo install cargo-fuzz
fi
export RUSTC_BOOTSTRAP=1

echo "== building ${targets[*]} ($profile)"
mkdir -p fuzz/target
for t in "${targets[@]}"; do
    if ! cargo fuzz build "${build_flags[@]}" "$t" >fuzz/target/build.log 2>&1; then
        tail -30 fuzz/target/build.log
        echo "FAILED: cannot build $t"
        exit 1
    fi
done
triple="$(rustc -vV | sed -n 's/^host: //p')"
bindir="fuzz/target/$triple/$profile"

failed=()
summary=()
for t in "${targets[@]}"; do
    bin="$bindir/$t"
    if [ ! -x "$bin" ]; then
        echo "!! $t: no binary at $bin"
        failed+=("$t")
        continue
    fi
    # Replay the regressions: each file once, no mutation.
    if compgen -G "fuzz/regressions/$t/*" >/dev/null; then
        if ! "$bin" -rss_limit_mb="$rss_mb" fuzz/regressions/"$t"/* >"fuzz/target/$t-regressions.log" 2>&1; then
            echo "!! $t: a regression input fails again:"
            grep -E 'panicked|Running:|ERROR' "fuzz/target/$t-regressions.log" | head -20
            failed+=("$t")
            continue
        fi
    fi
    work="fuzz/target/corpus/$t"
    mkdir -p "$work" "fuzz/corpus/$t"
    log="fuzz/target/$t.log"
    echo "== $t: fuzzing for ${seconds}s"
    set +e
    # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
    cargo fuzz run "${build_flags[@]}" "$t" "$work" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb="$rss_mb" -timeout=20 \
        -print_final_stats=1 ${FUZZ_ARGS:-} >"$log" 2>&1
    rc=$?
    set -e
    runs="$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1 \2/p' "$log" | tail -1)" || true
    cov="$( (grep -o 'cov: [0-9]*' "$log" || true) | tail -1 | cut -d' ' -f2)"
    ft="$( (grep -o 'ft: [0-9]*' "$log" || true) | tail -1 | cut -d' ' -f2)"
    if [ "$rc" -ne 0 ] || [ -z "$runs" ]; then
        echo "!! $t CRASHED (exit $rc); log $log"
        if grep -q -E 'panicked|ERROR: libFuzzer' "$log"; then
            grep -E -A8 'panicked|ERROR: libFuzzer' "$log" | head -30
        else
            tail -20 "$log"
        fi
        grep -E 'Test unit written to' "$log" || true
        failed+=("$t")
        summary+=("$(printf '%-14s CRASH' "$t")")
        continue
    fi
    set -- $runs
    rate=$(( $1 / ($2 > 0 ? $2 : 1) ))
    line="$(printf '%-14s %12s runs in %4ss  %9s exec/s  cov %6s  ft %6s' "$t" "$1" "$2" "$rate" "${cov:-?}" "${ft:-?}")"
    echo "   $line"
    summary+=("$line")
done

echo "== summary (${seconds}s per target, $profile)"
if [ ${#summary[@]} -gt 0 ]; then
    printf '   %s\n' "${summary[@]}"
fi
if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: ${failed[*]}"
    exit 1
fi
