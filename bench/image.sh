#!/usr/bin/env bash
# Benchmark: writing the nginx-prod images from valid store paths (`realise
# --check` of the image derivations: the whole image written, hashed and compared,
# nothing registered) vs `tar -c ROOTFS | gzip` of the same tree (goal: no slower,
# and under 1 s). The first run builds nginx-prod (a few minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
apt_install hyperfine gzip tar
release_buildit
dir=${BENCH_DIR:-/tmp/buildit-bench}/image
root=$dir/root
mkdir -p "$dir/sources"
[ -f "$dir/sources/nginx_1.22.1.orig.tar.gz" ] ||
    (cd "$dir/sources" && apt-get source --download-only nginx >/dev/null 2>&1 || true)
rm -rf "$dir/nginx-prod"; cp -r samples/nginx-prod "$dir/nginx-prod"
"$bi" --root "$root" lock "$dir/nginx-prod" >/dev/null
# Images written by an older buildit would not compare equal: let them go.
rm -f "$dir/result-aci" "$dir/result-oci"
"$bi" --root "$root" store gc >/dev/null
BUILDIT_PROGRESS=plain "$bi" --root "$root" build "$dir/nginx-prod" --source-dir "$dir/sources" \
    -j2 -o "$dir/result" >/dev/null
aci_drv=$("$bi" --root "$root" store path-info --json "$dir/result-aci" | sed -n 's/.*"deriver": "\(.*\)".*/\1/p')
oci_drv=$("$bi" --root "$root" store path-info --json "$dir/result-oci" | sed -n 's/.*"deriver": "\(.*\)".*/\1/p')
# The same tree as a plain directory, for tar | gzip.
rm -rf "$dir/rootfs"; mkdir -p "$dir/rootfs"
tar -xzf "$dir"/result-aci/*.aci -C "$dir/rootfs"
du -sh "$dir/rootfs/rootfs"
hyperfine --warmup 1 --runs "${RUNS:-10}" \
    -n "buildit ACI (tar+gzip+sha512)" "$bi --root $root realise --check $aci_drv" \
    -n "buildit OCI (layers+archive)" "$bi --root $root realise --check $oci_drv" \
    -n "tar -c | gzip" "tar -C $dir/rootfs/rootfs -c . | gzip -6 > /dev/null"
