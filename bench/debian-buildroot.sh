#!/usr/bin/env bash
# Benchmark: the C build root (samples/recipes/build-roots/debian-12-c.yaml).
#   resolve  - `buildit debian lock --build-root` (host apt)
#   cold     - fetch from a local .deb directory + unpack + merge into an empty store
#   warm     - the same command with everything valid (goal: < 50 ms)
# Goal for cold unpack of the ~95 MB closure: < 6 s on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
apt_install hyperfine
release_buildit
def=$PWD/samples/recipes/build-roots/debian-12-c.yaml
dir=${BENCH_DIR:-/tmp/buildit-bench}/buildroot
mkdir -p "$dir"
lock=$dir/buildit.lock

# Resolve once (also what the resolve timing measures), then fetch every .deb once
# into a seed store and expose them by file name for the cold runs.
hyperfine --runs 3 -n resolve "$bi --root $dir/seed debian lock --build-root $def --lock $lock"
"$bi" --root "$dir/seed" debian fetch --lock "$lock" --json > "$dir/fetched.json"
rm -rf "$dir/debs"; mkdir -p "$dir/debs"
python3 - "$dir" <<'PY'
import json, os, sys
d = sys.argv[1]
lock = json.load(open(f"{d}/buildit.lock"))
for e in json.load(open(f"{d}/fetched.json")):
    name = lock["debian"][e["name"]]["filename"].rsplit("/", 1)[1]
    os.symlink(f'{d}/seed/store/{e["path"][len("/store/"):]}', f"{d}/debs/{name}")
PY

cold="$bi --root $dir/cold debian build-root $def --lock $lock --offline --deb-dir $dir/debs -j 2"
hyperfine --runs "${RUNS:-3}" --prepare "chmod -R u+w $dir/cold 2>/dev/null; rm -rf $dir/cold" -n cold "$cold"
"$bi" --root "$dir/warm" debian build-root "$def" --lock "$lock" --offline --deb-dir "$dir/debs" >/dev/null 2>&1
hyperfine --warmup 2 --runs 20 -N -n warm \
    "$bi --root $dir/warm debian build-root $def --lock $lock --offline --deb-dir $dir/debs"
