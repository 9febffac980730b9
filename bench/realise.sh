#!/usr/bin/env bash
# Benchmarks of `buildit realise`, all in one run:
#  1. GNU hello built in the sandbox (`realise --check`: the same build without
#     registering) vs the same steps run directly on the host (goal: within 3%);
#  2. `buildit build samples/nginx-prod` when everything is valid (goal: < 30 ms).
# Sources come from `apt-get source --download-only` (Debian's orig tarballs have the
# upstream bytes). The first run builds the C build root and nginx (a few minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
apt_install hyperfine gcc make
release_buildit
dir=${BENCH_DIR:-/tmp/buildit-bench}/realise
root=$dir/root
mkdir -p "$dir/sources"
for f in hello_2.10.orig.tar.gz nginx_1.22.1.orig.tar.gz; do
    [ -f "$dir/sources/$f" ] || (cd "$dir/sources" && apt-get source --download-only "${f%%_*}" >/dev/null 2>&1 || true)
done
for s in hello nginx-prod; do
    rm -rf "${dir:?}/$s"; cp -r "samples/$s" "$dir/$s"
    "$bi" --root "$root" lock "$dir/$s" >/dev/null
    BUILDIT_PROGRESS=plain "$bi" --root "$root" build "$dir/$s" --source-dir "$dir/sources" \
        -j2 --no-link >/dev/null
done
hello_drv=$("$bi" --root "$root" eval "$dir/hello" --json | sed -n 's/.*"drv": "\(.*\)".*/\1/p')
cores=$(nproc)

# The host build runs exactly the phases of the recipe (see the recipe and
# lang/src/lower/phases.sh) with the host's compiler, also Debian 12's gcc 12.
cat >"$dir/host-build.sh" <<SH
set -e
d=\$(mktemp -d); trap 'rm -rf "\$d"' EXIT
cd "\$d"; tar --no-same-owner -xf "$dir/sources/hello_2.10.orig.tar.gz"; cd hello-2.10
./configure --prefix=/usr --disable-nls --enable-nls >/dev/null
make -j$cores >/dev/null
make install DESTDIR="\$d/out" >/dev/null
rm -f "\$d/out/usr/share/info/dir"
SH

echo "== hello: sandboxed build vs the same steps on the host"
hyperfine --warmup 1 --runs "${RUNS:-5}" \
    -n sandbox "BUILDIT_PROGRESS=plain $bi --root $root realise --check $hello_drv" \
    -n host "bash $dir/host-build.sh"

echo "== buildit build samples/nginx-prod, everything valid"
hyperfine -N --warmup 3 --runs 30 -n build-valid \
    "$bi --root $root build $dir/nginx-prod --no-link"
