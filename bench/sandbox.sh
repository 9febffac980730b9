#!/usr/bin/env bash
# Cost of starting the build sandbox: `true` run by buildit's sandbox, by
# bubblewrap with the same namespaces and mounts, and by a plain fork/exec.
#
# 1. In one process (the ignored test `bench_true` in tests/sandbox.rs), the
#    three alternating, N times each: the sandbox's own cost, free of process
#    start-up.
# 2. With hyperfine, if installed: whole processes. buildit's sandbox runs in
#    the test executable (`bench_one_sandbox`), so the same executable doing
#    everything but the sandbox (`bench_one_noop`) is measured too; the
#    difference is the sandbox.
#
# Usage: bench/sandbox.sh [N]   (as root; also runs as buildit-test if present)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-500}
exe=$(cargo test --release --test sandbox --no-run --message-format=json 2>/dev/null |
    grep -o '"executable":"[^"]*sandbox-[^"]*"' | cut -d'"' -f4)

# bwrap's equivalent of the spec in tests/sandbox.rs: merged-usr symlinks,
# /usr and a layer's /etc read-only, /build writable, minimal /dev, fresh
# /proc, tmpfs /tmp, read-only /, uid/gid 1000, hostname, only lo, a new
# session, the environment replaced. --unshare-all also unshares the cgroup
# namespace, which buildit does not.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/etc" "$tmp/build"
echo "from the layer" >"$tmp/etc/layer-marker"
chmod -R a+rX "$tmp"
bwrap=()
if command -v bwrap >/dev/null; then
    bwrap=(bwrap --unshare-all --unshare-user --die-with-parent --new-session
        --uid 1000 --gid 1000 --hostname localhost
        --ro-bind /usr /usr --symlink usr/bin /bin --symlink usr/sbin /sbin
        --symlink usr/lib /lib --symlink usr/lib64 /lib64
        --ro-bind "$tmp/etc" /etc --bind "$tmp/build" /build
        --dev /dev --proc /proc --tmpfs /tmp --remount-ro /
        --chdir /build --clearenv --setenv PATH /usr/bin:/bin --setenv HOME /homeless-shelter
        /usr/bin/true)
else
    echo "bwrap not installed (apt-get install bubblewrap): skipping it" >&2
fi
bwrap_lines=$(printf '%s\n' "${bwrap[@]}")
one() { echo "$exe --ignored --exact $1 --test-threads=1 -q"; }

bench() {
    echo "== as $(id -un): in one process, N=$n"
    BENCH_N=$n BENCH_BWRAP=$bwrap_lines "$exe" --ignored --exact bench_true --nocapture |
        grep ' true: '
    if command -v hyperfine >/dev/null; then
        echo "== as $(id -un): hyperfine, whole processes"
        local cmds=(-n 'plain fork/exec' /usr/bin/true)
        [ ${#bwrap[@]} -eq 0 ] || cmds+=(-n bwrap "$(printf '%q ' "${bwrap[@]}")")
        cmds+=(-n 'test executable, no sandbox' "$(one bench_one_noop)")
        cmds+=(-n 'test executable, buildit sandbox' "$(one bench_one_sandbox)")
        hyperfine -N --style basic --warmup 20 --runs "$n" "${cmds[@]}"
    else
        echo "hyperfine not installed (apt-get install hyperfine): in-process numbers only" >&2
    fi
}

bench
if [ "$(id -u)" = 0 ] && id buildit-test >/dev/null 2>&1; then
    runuser -u buildit-test -- env -i HOME=/tmp PATH=/usr/bin:/bin TMPDIR=/tmp \
        bash -c "$(declare -p n exe bwrap bwrap_lines; declare -f bench one); bench"
fi
