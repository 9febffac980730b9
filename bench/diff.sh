#!/usr/bin/env bash
# Benchmark: `buildit diff` of two 1 GiB trees that differ in one byte of one file,
# against hashing both trees once: `sha256sum` over every file, and buildit's own
# NAR hash (SHA-256 over the serialised tree) of each.
#
# Goal (issue: reproducibility audits, "Outputs"): within 1.5x the hashing time —
# diff reads each unchanged file once, in lock-step with its twin, and only the
# changed file again. Needs hyperfine (apt). The trees are generated once under
# $BENCH_DIR (default target/bench-diff) and reused; the page cache cannot be
# dropped here, so warm-up runs make both commands read from memory alike.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
apt_install hyperfine
release_buildit

dir=${BENCH_DIR:-target/bench-diff}
a=$dir/a b=$dir/b
if [ ! -f "$dir/.complete" ]; then
    rm -rf "$a" "$b"; mkdir -p "$a"
    # 1024 x 1 MiB of incompressible data in 32 directories.
    for d in $(seq -w 1 32); do
        mkdir -p "$a/d$d"
        for f in $(seq -w 1 32); do head -c 1M /dev/urandom > "$a/d$d/f$f"; done
    done
    cp -a "$a" "$b"
    # One byte in the middle of one file.
    printf '\xff' | dd of="$b/d17/f09" bs=1 seek=524288 conv=notrunc status=none
    touch "$dir/.complete"
fi

"$bi" diff "$a" "$b" || true

hyperfine --warmup 1 --runs "${RUNS:-5}" -i --export-json "$dir/diff.json" \
    -n "buildit diff" "$bi diff $a $b" \
    -n "sha256sum both" "find $a $b -type f -print0 | xargs -0 sha256sum >/dev/null" \
    -n "buildit NAR hash of both" "$bi store hash-path $a >/dev/null && $bi store hash-path $b >/dev/null"
