#!/usr/bin/env bash
# Benchmark: NAR-hash a 1 GiB tree of mixed files, buildit vs `nix hash path`.
#
# Goal (issue 2): less CPU time (user+sys) than Nix, and >= 1.2 GB/s.
# Needs hyperfine and nix-bin (apt). The tree is generated once under $BENCH_DIR
# (default /tmp/buildit-bench) and reused.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
apt_install hyperfine nix-bin
release_buildit

dir=${BENCH_DIR:-/tmp/buildit-bench}
tree=$dir/gen1g
if [ ! -f "$tree/.complete" ]; then
    rm -rf "$tree"; mkdir -p "$tree/small"
    # 16 x 64 MiB of incompressible data, plus 2,000 small files in 20 directories.
    for i in $(seq -w 1 16); do head -c 64M /dev/urandom > "$tree/big$i"; done
    for d in $(seq -w 1 20); do
        mkdir -p "$tree/small/d$d"
        for f in $(seq -w 1 100); do head -c $((RANDOM * 4 % 60000 + 10)) /dev/urandom > "$tree/small/d$d/f$f"; done
    done
    chmod +x "$tree"/small/d01/*
    touch "$tree/.complete"
fi
rm -f "$tree/.complete.nar"
data_size=$(du -sb --apparent-size "$tree" | cut -f1)

# Nix against a throwaway store config (no daemon, nothing written).
export NIX_CONF_DIR=$dir/nix-etc NIX_REMOTE="local?root=$dir/nix-root&store=/store" HOME=$dir/home
mkdir -p "$NIX_CONF_DIR" "$HOME"
printf 'experimental-features = nix-command\nsandbox = false\nsubstituters =\nbuild-users-group =\n' > "$NIX_CONF_DIR/nix.conf"

a=$("$bi" store hash-path "$tree"); b=$(nix hash path "$tree")
echo "buildit: $a"; echo "nix:     $b"
[ "$a" = "$b" ] || { echo "hash mismatch" >&2; exit 1; }

hyperfine --warmup 1 --runs "${RUNS:-5}" --export-json "$dir/nar-hash.json" \
    -n buildit "$bi store hash-path $tree" \
    -n nix "nix hash path $tree"

python3 - "$dir/nar-hash.json" "$data_size" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); size = int(sys.argv[2])
for r in d["results"]:
    cpu = r["user"] + r["system"]
    print(f'{r["command"]:8} wall {r["median"]:.3f}s  user {r["user"]:.3f}s  sys {r["system"]:.3f}s  '
          f'cpu {cpu:.3f}s  {size / r["median"] / 1e9:.2f} GB/s wall, {size / cpu / 1e9:.2f} GB/s cpu')
PY
