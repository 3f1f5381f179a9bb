#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ for a bounded time each (issue #7).
#
#   scripts/fuzz.sh [TARGET...]      default: every target
#
# FUZZ_SECONDS     time per target (default 60)
# FUZZ_MAX_LEN     longest input in bytes (default 16384: past every size limit)
# FUZZ_SANITIZER   none (default: the code is safe Rust; faster) or address
# FUZZ_BUILD_JOBS  cargo build jobs (default 1: leave a core to everyone else)
#
# Exits non-zero if any target crashed; the crashing inputs are in
# fuzz/artifacts/<target>/, and each libFuzzer log in fuzz/logs/<target>.log.
set -euo pipefail
cd "$(dirname "$0")/.."

all_targets=(form feed_query verify_jws verify_jwe)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")
seconds=${FUZZ_SECONDS:-60}
max_len=${FUZZ_MAX_LEN:-16384}
sanitizer=${FUZZ_SANITIZER:-none}

for t in "${targets[@]}"; do
    if [[ ! -f fuzz/fuzz_targets/$t.rs ]]; then
        echo "unknown fuzz target '$t' (known: ${all_targets[*]})" >&2
        exit 2
    fi
done

# cargo-fuzz passes nightly-only flags; this lets the stable toolchain take them.
export RUSTC_BOOTSTRAP=1
export CARGO_BUILD_JOBS=${FUZZ_BUILD_JOBS:-1}

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# Release with debug assertions and overflow checks (cargo-fuzz's default).
flags=(--fuzz-dir fuzz --sanitizer "$sanitizer" --release --debug-assertions)
for t in "${targets[@]}"; do
    nice -n 19 cargo fuzz build "${flags[@]}" "$t"
done

mkdir -p fuzz/logs
failed=()
summary=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    # New inputs go to the first directory; seeds and kept inputs are read only.
    corpora=("fuzz/corpus/$t")
    for d in "fuzz/seeds/$t" "fuzz/regressions/$t"; do
        [[ -d $d ]] && corpora+=("$d")
    done
    # Dictionary: fuzz/dicts/<target>.dict, else the family's (verify.dict).
    extra=()
    for dict in "fuzz/dicts/$t.dict" "fuzz/dicts/${t%%_*}.dict"; do
        if [[ -f $dict ]]; then
            extra+=("-dict=$dict")
            break
        fi
    done
    marker=$(mktemp)
    log=fuzz/logs/$t.log
    echo "== fuzzing $t for ${seconds}s (log: $log)"
    status=0
    nice -n 19 cargo fuzz run "${flags[@]}" "$t" "${corpora[@]}" -- \
        -max_total_time="$seconds" -max_len="$max_len" -len_control=0 -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 "${extra[@]}" >"$log" 2>&1 || status=$?
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
    summary+=("$t: ${last:-no progress line} (exit $status)")
    if [[ $status -ne 0 ]]; then
        failed+=("$t")
        tail -n 40 "$log"
        artifact=$(find "fuzz/artifacts/$t" -type f -newer "$marker" | head -n 1)
        if [[ -n $artifact ]]; then
            cat <<EOF
!! $t crashed; the input is saved in $artifact
   replay:   RUSTC_BOOTSTRAP=1 cargo fuzz run ${flags[*]} $t $artifact
   minimize: RUSTC_BOOTSTRAP=1 cargo fuzz tmin ${flags[*]} $t $artifact
   keep it as a regression test (replayed by tests/api/fuzz_regressions.rs):
             cp $artifact fuzz/regressions/$t/
EOF
        else
            echo "!! $t failed without a crash input; see $log"
        fi
    fi
    rm -f "$marker"
done

echo "== summary (final libFuzzer line of each target)"
printf '%s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "crashed: ${failed[*]}" >&2
    exit 1
fi
