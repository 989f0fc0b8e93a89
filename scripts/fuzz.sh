#!/usr/bin/env bash
# Coverage-guided fuzzing of clusterdns's parsers of untrusted bytes (cargo-fuzz / libFuzzer).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#   scripts/fuzz.sh cmin [TARGET...]
#
# Runs each target (default: all six) for SECONDS_PER_TARGET (default 300), one after the
# other, at the lowest CPU priority, starting from the checked-in corpus; then minimises the
# corpus: the checked-in inputs and the new ones are merged into a fresh folder, which replaces
# fuzz/corpus/<target>/ (libFuzzer's -set_cover_merge=1 -use_counters=0: a small set of inputs
# that reaches every edge the whole set reaches), so the corpora stay small enough to check in
# and for `cargo test` to replay in seconds. `cmin` only minimises. Crashes land in
# fuzz/artifacts/<target>/ and are listed at the end; logs in fuzz/logs/. Needs cargo-fuzz
# (`cargo install cargo-fuzz`) and a nightly toolchain; without nightly, stable with
# RUSTC_BOOTSTRAP=1 does the same. CI never runs this: `cargo test` replays the corpora on
# stable.
#
# Environment: FUZZ_JOBS (default 1) parallel libFuzzer workers per target (-fork);
# FUZZ_ARGS extra libFuzzer flags.
set -euo pipefail
cd "$(dirname "$0")/.."

ALL=(query_path upstream_reply config_file corefile objects_file list_page)
secs=${1:-300}
shift || true
minimise_only=false
if [ "$secs" = cmin ]; then
    minimise_only=true
    secs=0
fi
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${ALL[@]}")

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2
    exit 1
fi
if rustup run nightly rustc --version >/dev/null 2>&1; then
    fuzz=(cargo +nightly fuzz)
else
    echo "no nightly toolchain: using stable with RUSTC_BOOTSTRAP=1" >&2
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi
# Safe Rust on every fuzzed path: AddressSanitizer would halve the speed and find nothing the
# panics and overflow checks (on by default in cargo-fuzz builds) do not.
build_flags=(--sanitizer none)

max_len() {
    case $1 in
        query_path) echo 2048 ;;
        upstream_reply) echo 8192 ;;
        *) echo 16384 ;;
    esac
}

mkdir -p fuzz/logs
stamp=$(date +%Y%m%d-%H%M%S)
for t in "${targets[@]}"; do
    corpus=fuzz/corpus/$t
    work=fuzz/target/new-corpus/$t
    mkdir -p "$corpus" "$work" "fuzz/artifacts/$t"
    log=fuzz/logs/$t-$stamp.log
    dict=()
    [ -f "fuzz/dict/$t.dict" ] && dict=(-dict="fuzz/dict/$t.dict")
    fork=()
    [ "${FUZZ_JOBS:-1}" -gt 1 ] && fork=(-fork="$FUZZ_JOBS" -ignore_crashes=1)
    if ! $minimise_only; then
        echo "== $t: ${secs}s (log: $log)"
        # New inputs go to $work; the checked-in corpus is read, not written.
        nice -n 19 "${fuzz[@]}" run "${build_flags[@]}" "$t" "$work" "$corpus" -- \
            -max_total_time="$secs" -max_len="$(max_len "$t")" -timeout=10 -rss_limit_mb=2048 \
            -print_final_stats=1 "${dict[@]}" "${fork[@]}" ${FUZZ_ARGS:-} >"$log" 2>&1 || true
        grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true
        grep -E '^Done [0-9]+ runs' "$log" || true
        if grep -qE 'panicked at|ERROR: libFuzzer|SUMMARY:' "$log"; then
            echo "   CRASH: see $log"
            grep -E 'panicked at' -A2 "$log" | head -6 || true
        fi
    fi
    # Minimise: the corpus and the new inputs into a fresh folder, which replaces the corpus
    # only when the merge went through.
    fresh=fuzz/target/min-corpus/$t
    rm -rf "$fresh"
    mkdir -p "$fresh"
    echo "== $t: minimising $(find "$corpus" "$work" -type f | wc -l) inputs"
    if nice -n 19 "${fuzz[@]}" run "${build_flags[@]}" "$t" -- -set_cover_merge=1 -use_counters=0 \
        -max_len="$(max_len "$t")" -timeout=10 -rss_limit_mb=2048 "$fresh" "$corpus" "$work" \
        >>"$log" 2>&1 && [ -n "$(ls -A "$fresh")" ]; then
        rm -rf "$corpus"
        mv "$fresh" "$corpus"
    else
        echo "   merge failed, corpus left as it was: see $log"
    fi
    rm -rf "$work"
    echo "   corpus: $(find "$corpus" -type f | wc -l) files, $(du -sh --apparent-size "$corpus" | cut -f1)"
done
echo "== crashes kept in fuzz/artifacts/:"
find fuzz/artifacts -type f 2>/dev/null | sed 's/^/   /' || true
