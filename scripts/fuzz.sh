#!/usr/bin/env bash
# Builds the coverage-guided fuzz targets in fuzz/ and runs each one for a
# fixed time (first argument or FUZZ_SECONDS, default 30 s) from its seeds
# (fuzz/seeds/<target>) after replaying every saved regression input
# (fuzz/regressions/<target>). A crash, panic, timeout or leak fails the
# script; libFuzzer leaves the input in fuzz/artifacts/<target>/.
#
# cargo-fuzz needs nightly features (-Zsanitizer=address); the stable
# toolchain of rust-toolchain.toml allows them with RUSTC_BOOTSTRAP=1. The
# pinned cargo-fuzz is installed into ~/.cargo/bin when missing.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SECONDS_EACH="${1:-${FUZZ_SECONDS:-30}}"
CARGO_FUZZ_VERSION="0.13.2"
export RUSTC_BOOTSTRAP=1

if [ "$(cargo fuzz --version 2>/dev/null | awk '{print $2}')" != "$CARGO_FUZZ_VERSION" ]; then
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" >&2
fi

cd "$ROOT/fuzz"
cargo fuzz build -O
for target in $(cargo fuzz list); do
    work="$ROOT/fuzz/target/corpus/$target"
    mkdir -p "$work"
    regressions="$ROOT/fuzz/regressions/$target"
    if [ -d "$regressions" ] && [ -n "$(ls -A "$regressions")" ]; then
        echo "== fuzz $target: replaying $(ls "$regressions" | wc -l) regression input(s)"
        cargo fuzz run -O "$target" "$regressions"/* -- -runs=1 >/dev/null 2>&1 || {
            echo "fuzz $target: a regression input fails again"
            cargo fuzz run -O "$target" "$regressions"/* -- -runs=1
            exit 1
        }
    fi
    echo "== fuzz $target for ${SECONDS_EACH}s"
    log="$ROOT/fuzz/target/$target.log"
    status=0
    cargo fuzz run -O "$target" "$work" "$ROOT/fuzz/seeds/$target" -- \
        -max_total_time="$SECONDS_EACH" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 >"$log" 2>&1 || status=$?
    grep -E "^(stat::number_of_executed_units|stat::new_units_added|Done)" "$log" || true
    if [ "$status" -ne 0 ]; then
        tail -n 60 "$log"
        echo "fuzz $target: FAILED (the input is under fuzz/artifacts/$target/; add it to fuzz/regressions/$target/ with the fix)"
        exit 1
    fi
done
echo "fuzz: every target ran ${SECONDS_EACH}s without a finding"
