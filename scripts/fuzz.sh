#!/usr/bin/env bash
# Seed the corpora and fuzz every target of store/fuzz (buildit-store's parsers, and
# spec_yaml for buildit-lang's spec parsers) for SECONDS each (default 60), one job
# at a time. For humans and optional CI jobs; the test suite does not
# call it. Needs cargo-fuzz (`cargo install cargo-fuzz --locked`) and python3.
#
#   scripts/fuzz.sh [SECONDS]
#
# Environment: FUZZ_TARGETS (space-separated subset, default all),
# FUZZ_SANITIZER (address by default; `none` if sanitizers do not build here).
# On a stable toolchain RUSTC_BOOTSTRAP=1 unlocks the -Z flags cargo-fuzz uses.
# Exits non-zero if a target found a crash; inputs land in store/fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/../store"

seconds=${1:-60}
case $seconds in
    '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac
targets=${FUZZ_TARGETS:-nar_reader aterm narinfo store_path spec_yaml}
sanitizer=${FUZZ_SANITIZER:-address}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is not installed: cargo install cargo-fuzz --locked" >&2
    exit 2
fi
if ! rustc --version | grep -q nightly; then
    export RUSTC_BOOTSTRAP=1
fi

fuzz/seed.sh

failed=()
for t in $targets; do
    echo "=== fuzzing $t for ${seconds}s"
    if ! cargo fuzz run -s "$sanitizer" "$t" -- \
        -max_total_time="$seconds" -timeout=10 \
        -dict="$PWD/fuzz/dict/$t.dict" -print_final_stats=1; then
        failed+=("$t")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "crashes in: ${failed[*]} (see store/fuzz/artifacts/; reproduce with" \
        "'cargo fuzz run TARGET ARTIFACT' in store/)" >&2
    exit 1
fi
echo "no crashes"
