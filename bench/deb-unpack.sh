#!/usr/bin/env bash
# Benchmark: unpack the closure of build-essential (plus the essential packages,
# which dependencies never pull in) with buildit's `.deb` unpacker, 2 at a time.
#
# Goal: the whole closure (~90 packages, ~95 MB of .debs) in under ~6 s on 2 cores.
# The .debs are downloaded once into $BUILDIT_DEB_BENCH_DIR (default
# /tmp/buildit-bench/debs) and reused. The timing itself is an #[ignore]d test in
# tests/deb_unpack.rs, run in release mode, because the unpacker has no CLI of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
need_cargo

dir=${BUILDIT_DEB_BENCH_DIR:-/tmp/buildit-bench/debs}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

essential="bash coreutils dash sed grep tar gzip diffutils findutils base-files base-passwd libc-bin debianutils"

# Resolve against an empty dpkg status so that what the host has installed does not
# shrink the closure.
resolve() {
    apt-get -s -o Dir::State::status=/dev/null -o Debug::NoLocking=1 \
        install --no-install-recommends build-essential $essential
}
if ! apt-cache policy build-essential | grep -q 'Candidate: [0-9]'; then
    apt_update_sudo=""
    [ "$(id -u)" -ne 0 ] && apt_update_sudo="sudo"
    $apt_update_sudo apt-get update -qq
fi

# "Inst NAME (VERSION Origin [arch])" or "Inst NAME [OLD] (VERSION ...)".
pins=$(resolve | sed -n 's/^Inst \([^ ]*\) \(\[[^]]*\] \)\?(\([^ ]*\) .*/\1=\3/p')
[ -n "$pins" ] || { echo "error: could not resolve the build-essential closure" >&2; exit 1; }

if [ ! -f "$dir/.complete" ] || [ "$(cat "$dir/.complete")" != "$pins" ]; then
    # Downloads land in a fresh dir first so that an interrupted run is not mistaken
    # for a complete cache.
    rm -rf "$dir.part"; mkdir -p "$dir.part"
    # apt drops privileges to _apt, which cannot write to most temp dirs; it then
    # warns and downloads as the caller, which is fine.
    (cd "$dir.part" && apt-get download $pins 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
    n=$(ls "$dir.part"/*.deb | wc -l)
    want=$(echo "$pins" | wc -l)
    [ "$n" -eq "$want" ] || { echo "error: downloaded $n of $want packages" >&2; exit 1; }
    rm -f "$dir"/*.deb
    mv "$dir.part"/*.deb "$dir/"; rmdir "$dir.part"
    echo "$pins" > "$dir/.complete"
fi

echo "$(ls "$dir"/*.deb | wc -l) packages, $(du -cb "$dir"/*.deb | tail -1 | cut -f1) bytes of .debs in $dir"
BUILDIT_DEB_BENCH_DIR=$dir cargo test --release --locked --test deb_unpack -- \
    --ignored --nocapture --exact bench_unpack_closure
