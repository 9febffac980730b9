#!/usr/bin/env bash
# Build buildit and run its main job on a sample.
#
# Today the main job is: a store round trip on samples/store-demo (add the tree to a
# fresh store, show its metadata, dump and restore its NAR, verify, collect garbage),
# then the seed's scenario samples/nginx-prod locked against the host's apt and
# lowered to derivations (`buildit lock`, `buildit eval`). Building it comes with the
# sandbox (`buildit samples/nginx-prod`).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
apt_install gcc libc6-dev
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
