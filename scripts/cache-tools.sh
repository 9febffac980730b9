#!/usr/bin/env bash
# Install what tests the binary-cache transports against real servers (sourced or run):
# moto, an S3-compatible server, from PyPI into a venv at target/tools/venv (kept
# across runs), giving target/tools/venv/bin/moto_server. Quick when all is there.
# The S3 tests (src/cache/s3.rs, tests/cache.rs) find it there; without it they skip,
# saying so, and fail under CI.

MOTO_VERSION=5.2.5

_cache_tools() {
    local repo
    repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    # shellcheck source=scripts/deps.sh
    . "$repo/scripts/deps.sh"
    local tools=$repo/target/tools
    local venv=$tools/venv
    # Debian's python, not one under a user's home (pyenv…): the venv links to its
    # interpreter, and the tests also run moto as an unprivileged user.
    local python=/usr/bin/python3
    if [ -x "$venv/bin/moto_server" ] && grep -qx 'home = /usr/bin' "$venv/pyvenv.cfg" 2>/dev/null &&
        [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("moto"))' 2>/dev/null)" = "$MOTO_VERSION" ] &&
        "$venv/bin/python" -c 'import moto.server' 2>/dev/null; then
        return 0
    fi

    # Other apt runs (another script, a developer) may hold dpkg's or apt's lists
    # lock for a while: wait for them rather than fail.
    local err try
    err=$(mktemp) || return 1
    for try in $(seq 60); do
        if apt_install python3 python3-venv 2>"$err"; then
            cat "$err" >&2; rm -f "$err"; break
        fi
        if ! grep -q 'Could not get lock' "$err" || [ "$try" -eq 60 ]; then
            cat "$err" >&2; rm -f "$err"; return 1
        fi
        [ "$try" -eq 1 ] && echo "cache-tools: apt is busy, waiting for its lock" >&2
        sleep 5
    done

    mkdir -p "$tools" || return 1
    # Tests also run as an unprivileged user: they must reach and run the tools.
    chmod 755 "$repo/target" "$tools" 2>/dev/null || true
    # A venv cannot be moved once made: build it in place, and remove it whole if
    # anything fails, so that the check above never passes on half an install.
    rm -rf "$venv"
    if ! "$python" -m venv "$venv" ||
        ! "$venv/bin/pip" install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION"; then
        rm -rf "$venv"
        echo "cache-tools: installing moto[server]==$MOTO_VERSION failed" >&2
        return 1
    fi
    chmod -R o+rX "$venv" 2>/dev/null || true
    echo "cache-tools: installed moto $MOTO_VERSION into $venv (bin/moto_server)" >&2
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    _cache_tools
else
    _cache_tools
fi
