#!/usr/bin/env bash
# Benchmarks of binary caches, in one run:
#  1. substituting nginx-prod's closure (the package and its two images) into a fresh
#     store from a loopback HTTP cache (python3's http.server), against
#     `curl | zstd -d | buildit store restore` of the same NARs;
#  2. looking up 1,000 paths the cache does not have (goal: under 1 s).
# The first run builds nginx-prod (a few minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
apt_install hyperfine curl zstd python3
release_buildit
dir=${BENCH_DIR:-/tmp/buildit-bench}/cache
root=$dir/root
mkdir -p "$dir/sources"
[ -f "$dir/sources/nginx_1.22.1.orig.tar.gz" ] ||
    (cd "$dir/sources" && apt-get source --download-only nginx >/dev/null 2>&1 || true)
rm -rf "$dir/nginx-prod"; cp -r samples/nginx-prod "$dir/nginx-prod"
"$bi" --root "$root" lock "$dir/nginx-prod" >/dev/null
mapfile -t outs < <(BUILDIT_PROGRESS=plain "$bi" --root "$root" build "$dir/nginx-prod" \
    --source-dir "$dir/sources" -j2 --no-link 2>/dev/null | sed 's|/oci$||')
rm -rf "$dir/cache" "$dir/keys"; mkdir -p "$dir/keys"
"$bi" --root "$root" store key generate bench-1 --secret-key-file "$dir/keys/sk" \
    --public-key-file "$dir/keys/pk" >/dev/null
"$bi" --root "$root" push "file://$dir/cache" "${outs[@]}" --secret-key-file "$dir/keys/sk" 2>&1 | tail -1
du -sh "$dir/cache"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(cd "$dir/cache" && exec python3 -m http.server --bind 127.0.0.1 "$port" >/dev/null 2>&1) &
server=$!
trap 'kill $server' EXIT
sleep 1
url=http://127.0.0.1:$port
pk=$(cat "$dir/keys/pk")
nars=$(ls "$dir/cache/nar" | tr "\n" " ")
cat >"$dir/curl.sh" <<SH
set -e
rm -rf "$dir/restored"; mkdir -p "$dir/restored"
for n in $nars; do
    curl -sf "$url/nar/\$n" | zstd -dq | "$bi" store restore "$dir/restored/\${n%%.*}"
done
SH
echo "== substituting the nginx-prod closure ($(echo "$nars" | wc -w) NARs)"
hyperfine --warmup 1 --runs "${RUNS:-5}" \
    --prepare "rm -rf $dir/fresh" \
    -n "buildit build (every path substituted)" \
    "$bi --root $dir/fresh build $dir/nginx-prod --no-link --cache $url --trusted-public-key $pk" \
    -n "curl | zstd -d | buildit store restore" "bash $dir/curl.sh"
echo "== 1,000 missing paths"
cargo test --release --test cache bench_lookup_1000_missing_paths -- --ignored --nocapture 2>&1 |
    grep "looked up"
