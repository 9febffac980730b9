#!/usr/bin/env bash
# Benchmark: cost as the graph grows. A spec whose recipes form a chain (each
# build-depends on the previous one, trivial phases) at 50, 200 and 1,000 links:
#  1. `buildit eval DIR` against `nix-instantiate` of the same chain written as Nix
#     derivations (real Nix 2.8 from Debian's nix-bin, private store, logical dir
#     /store), .drv files already written on both sides (goal: growing linearly, and
#     faster than nix-instantiate at 1,000 links);
#  2. the statx and getdents64 calls of one eval (strace);
#  3. building the whole chain, per derivation: `buildit build DIR` against `nix-build`
#     of the same chain in Nix's sandbox (goal: at or below Nix's cost). Before each
#     run both chains get a new salt in their build command, so every link is built
#     afresh while the build root stays valid.
# Usage: bench/scale.sh [LINKS...]   (default: 50 200 1000; RUNS, BUILD_RUNS, BENCH_DIR;
# BUILDIT= a buildit binary to measure instead of this tree's release build)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
apt_install hyperfine nix-bin strace
if [ -n "${BUILDIT:-}" ]; then bi=$BUILDIT; else release_buildit; fi
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(50 200 1000)
dir=${BENCH_DIR:-/tmp/buildit-bench}/scale
root=$dir/root
mkdir -p "$dir"

# Nix against a throwaway store of its own (no daemon, nothing written under /nix).
export NIX_CONF_DIR=$dir/nix-etc HOME=$dir/home
export NIX_REMOTE="local?root=$dir/nix-root&store=/store"
unset NIX_PATH
mkdir -p "$NIX_CONF_DIR" "$HOME"
# Builds run in Nix's sandbox, with the host's /bin and /usr bound in for /bin/sh
# and mkdir (buildit's builds see a Debian build root in the same way).
cat >"$NIX_CONF_DIR/nix.conf" <<CONF
experimental-features = nix-command
sandbox = true
sandbox-paths = /bin /usr /lib /lib64
substituters =
build-users-group =
CONF

# The one source every link names (the phases never unpack it; a build would be fed
# it by hash with --source-dir).
mkdir -p "$dir/sources"
echo "chain source" >"$dir/sources/chain-src-1.txt"
src_sha=$(sha256sum "$dir/sources/chain-src-1.txt" | cut -d' ' -f1)

# chain DIR N: the spec (`recipes/test/lNNNNN/lNNNNN-1.yaml`, each but the first
# build-depending on the one before; container.yaml builds the last) and chain.nix.
chain() {
    local d=$1 n=$2 i
    rm -rf "$d"; mkdir -p "$d/recipes/test"
    printf 'recipe-paths: [recipes]\n' >"$d/.buildit-config.yaml"
    for i in $(seq 1 "$n"); do
        local name deps
        name=$(printf 'l%05d' "$i")
        deps="[]"
        [ "$i" -gt 1 ] && deps=$(printf '[test/l%05d]' $((i - 1)))
        mkdir -p "$d/recipes/test/$name"
        cat >"$d/recipes/test/$name/$name-1.yaml" <<YAML
name: $name
version: "1"
sources:
  - url: https://example.invalid/chain-src-1.txt
    sha256: $src_sha
build-root: debian-12-c
build-depends: $deps
runtime-depends: []
options: {}
phases:
  unpack: ':'
  configure: ':'
  build: ':'
  install: 'mkdir -p \$out && echo $i salt=0 > \$out/link'
YAML
    done
    printf -- '---\n- vars:\n    name: chain\n    version: "1"\n- package:\n    recipe: test/%s\n' \
        "$(printf 'l%05d' "$n")" >"$d/container.yaml"
    cat >"$d/chain.nix" <<NIX
# The same chain as Nix derivations: link i has link i-1 among its inputs.
let
  salt = builtins.readFile ./salt;
  link = prev: i: derivation {
    name = "l\${toString i}-1";
    system = "x86_64-linux";
    builder = "/bin/sh";
    PATH = "/bin:/usr/bin";
    args = [ "-c" "mkdir \$out && echo \${toString i} salt=\${salt} > \$out/link" ];
    inputs = if prev == null then [ ] else [ prev ];
  };
in builtins.foldl' link null (builtins.genList (i: i + 1) $n)
NIX
    echo 0 >"$d/salt"
}

# resalt.sh DIR: a new salt for both chains, so the next build builds every link.
cat >"$dir/resalt.sh" <<'SH'
s=$(date +%s%N)
find "$1/recipes" -name '*.yaml' -exec sed -i "s/salt=[0-9]*/salt=$s/" {} +
printf '%s' "$s" >"$1/salt"
SH

# One lock for all sizes: the build root is resolved (by apt) once, the chain's
# packages need nothing from Debian, so `buildit lock` only adds their entries.
lock=$dir/buildit.lock
for n in "${sizes[@]}"; do
    d=$dir/chain-$n
    chain "$d" "$n"
    [ -f "$lock" ] && cp "$lock" "$d/buildit.lock"
    "$bi" --root "$root" lock "$d" >/dev/null
    [ -f "$lock" ] || cp "$d/buildit.lock" "$lock"
    # Write every .drv once: the runs below measure evaluation, not first writes.
    "$bi" --root "$root" eval "$d" | tail -1
    nix-instantiate "$d/chain.nix" >/dev/null
done

echo "== eval: buildit eval vs nix-instantiate (.drv files already written)"
for n in "${sizes[@]}"; do
    d=$dir/chain-$n
    hyperfine -N --warmup 2 --runs "${RUNS:-10}" --export-json "$dir/eval-$n.json" \
        -n "buildit-$n" "$bi --root $root eval $d" \
        -n "nix-$n" "nix-instantiate $d/chain.nix"
done

echo "== system calls of one buildit eval"
for n in "${sizes[@]}"; do
    d=$dir/chain-$n
    strace -f -c -o "$dir/strace-$n.txt" "$bi" --root "$root" eval "$d" >/dev/null
    printf '%6s links: statx %s, getdents64 %s\n' "$n" \
        "$(awk '$NF == "statx" {print $4}' "$dir/strace-$n.txt")" \
        "$(awk '$NF == "getdents64" {print $4}' "$dir/strace-$n.txt")"
done

echo "== build: every link of the chain built afresh, buildit build vs nix-build"
for n in "${sizes[@]}"; do
    d=$dir/chain-$n
    hyperfine -N --runs "${BUILD_RUNS:-3}" --export-json "$dir/build-$n.json" \
        --prepare "bash $dir/resalt.sh $d" \
        -n "buildit-build-$n" "$bi --root $root build $d --source-dir $dir/sources --no-link -j1" \
        -n "nix-build-$n" "nix-build --no-out-link $d/chain.nix"
    python3 - "$dir/build-$n.json" "$n" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
n = int(sys.argv[2])
for x in r:
    print(f"  {x['command']:>18}: {x['mean'] * 1000 / n:6.1f} ms per derivation (mean of {len(x['times'])})")
PY
done
