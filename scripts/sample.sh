#!/usr/bin/env bash
# Build buildit and run its main job on a sample.
#
# The main job: the seed's scenario. samples/nginx-prod is locked against the host's
# apt (`buildit lock`), lowered to derivations (`buildit eval`) and built from
# upstream source in rootless sandboxes (`buildit samples/nginx-prod`): the Debian 12
# build root from pinned .debs, then nginx 1.22.1 with the https-only patch and
# `use: with: [ssl, http2]`. The nginx tarball comes from `apt-get source` (Debian's
# orig tarball has nginx.org's bytes) and is fed by hash with --source-dir. Before
# that, a store round trip on samples/store-demo.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
apt_install gcc libc6-dev
need_deb_src
release_buildit
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export BUILDIT_ROOT="$work/root"

set -x
path=$($bi store add --out-link "$work/result" samples/store-demo)
$bi store path-info --json "$path"
$bi store ls -lR "$path"
$bi store cat "$path/etc/motd"
$bi store dump "$path" > "$work/demo.nar"
$bi store restore "$work/restored" < "$work/demo.nar"
$bi store hash-path "$work/restored"
$bi store verify --check-contents
rm "$work/result"
$bi store gc

cp -r samples/nginx-prod "$work/nginx-prod"
$bi lock "$work/nginx-prod"
$bi eval "$work/nginx-prod"
drv=$($bi eval --json "$work/nginx-prod" | sed -n 's/.*"drv": "\(.*\)",/\1/p' | head -1)
$bi show-derivation "$drv" | head -40

mkdir -p "$work/sources"
(cd "$work/sources" && apt-get source --download-only nginx >/dev/null 2>&1 || true)
ls "$work/sources"/nginx_1.22.1.orig.tar.gz
$bi "$work/nginx-prod" --source-dir "$work/sources" -j2 -o "$work/nginx"
"$work/nginx/usr/sbin/nginx" -V
$bi image inspect "$work/nginx-oci"
$bi image inspect "$work/nginx-aci"
$bi realise --check "$drv"
$bi store verify --check-contents
