#!/usr/bin/env bash
# Cost of the build sandbox: mean time of `run(true)` vs a plain fork/exec of
# `true`, measured by the ignored test `bench_true` in tests/sandbox.rs.
# Usage: bench/sandbox.sh [N]   (as root; also runs as buildit-test if present)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-500}
exe=$(cargo test --release --test sandbox --no-run --message-format=json 2>/dev/null |
    grep -o '"executable":"[^"]*sandbox-[^"]*"' | cut -d'"' -f4)
echo "== as $(id -un)"
BENCH_N=$n "$exe" --ignored --exact bench_true --nocapture | grep sandboxed
if [ "$(id -u)" = 0 ] && id buildit-test >/dev/null 2>&1; then
    echo "== as buildit-test"
    runuser -u buildit-test -- env -i HOME=/tmp PATH=/usr/bin:/bin TMPDIR=/tmp BENCH_N="$n" \
        "$exe" --ignored --exact bench_true --nocapture | grep sandboxed
fi
