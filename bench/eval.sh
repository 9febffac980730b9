#!/usr/bin/env bash
# Benchmark: `buildit eval samples/nginx-prod` with everything already in the store
# (goal: under 20 ms). Locks a copy of the sample first (asks apt once).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
apt_install hyperfine
release_buildit
dir=${BENCH_DIR:-/tmp/buildit-bench}/eval
rm -rf "$dir/nginx-prod"; mkdir -p "$dir"
cp -r samples/nginx-prod "$dir/nginx-prod"
"$bi" --root "$dir/root" lock "$dir/nginx-prod"
"$bi" --root "$dir/root" eval "$dir/nginx-prod" >/dev/null
hyperfine -N --warmup 3 --runs 30 -n eval "$bi --root $dir/root eval $dir/nginx-prod"
