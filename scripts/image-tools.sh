#!/usr/bin/env bash
# Install the independent tools that check buildit's images (sourced or run):
#   umoci skopeo oci-image-tool podman runc uidmap docker-registry diffoscope-minimal
# from Debian's packages, and appc's actool 0.8.11, built offline from Debian's Go
# source packages into target/tools/actool (kept across runs). Quick when all is there.
# The tests find them through tests/common/images.rs and skip, saying so, without them.

_image_tools() {
    local repo
    repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    # shellcheck source=scripts/deps.sh
    . "$repo/scripts/deps.sh"
    # Other apt runs (another script, a developer) may hold dpkg's or apt's lists
    # lock for a while: wait for them rather than fail.
    local err try
    err=$(mktemp) || return 1
    for try in $(seq 60); do
        if apt_install umoci skopeo oci-image-tool podman runc uidmap docker-registry \
            diffoscope-minimal golang-go 2>"$err"; then
            cat "$err" >&2; rm -f "$err"; break
        fi
        if ! grep -q 'Could not get lock' "$err" || [ "$try" -eq 60 ]; then
            cat "$err" >&2; rm -f "$err"; return 1
        fi
        [ "$try" -eq 1 ] && echo "image-tools: apt is busy, waiting for its lock" >&2
        sleep 5
    done

    local tools=$repo/target/tools
    mkdir -p "$tools" || return 1
    # Tests also run as an unprivileged user: they must reach and run the tools.
    chmod 755 "$repo/target" "$tools" 2>/dev/null || true
    if [ -x "$tools/actool" ] && "$tools/actool" version >/dev/null 2>&1; then
        return 0
    fi

    # actool without golang-github-appc-spec-dev's large -dev closure: only the six
    # Go source .debs, unpacked into a private GOPATH, built with no network.
    local work rc=0 sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    work=$(mktemp -d) || return 1
    local debs=(golang-github-appc-spec-dev golang-go4-dev golang-github-coreos-go-semver-dev
        golang-github-spf13-pflag-dev golang-golang-x-net-dev golang-gopkg-inf.v0-dev)
    # As root, apt-get would fetch as _apt, who cannot write here: fetch as root.
    # (Each step is checked: `set -e` does not work in a subshell tested by `||`.)
    (
        cd "$work" || exit 1
        fetch() { apt-get download -q=2 -o APT::Sandbox::User=root "${debs[@]}"; }
        fetch || { $sudo apt-get update -qq && fetch; } || exit 1
        for d in ./*.deb; do dpkg-deb -x "$d" root || exit 1; done
        GO111MODULE=off GOPROXY=off GOFLAGS= GOENV=off CGO_ENABLED=0 \
            GOPATH="$work/root/usr/share/gocode" GOCACHE="$work/cache" \
            go build -o "$work/actool" github.com/appc/spec/actool || exit 1
        install -m 755 "$work/actool" "$tools/actool.new" &&
            mv -f "$tools/actool.new" "$tools/actool"
    ) || rc=$?
    chmod -R u+w "$work" 2>/dev/null
    rm -rf "$work"
    [ $rc -eq 0 ] || { echo "image-tools: building actool failed" >&2; return 1; }
    echo "image-tools: built $("$tools/actool" version 2>&1 | head -1) into $tools/actool" >&2
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    _image_tools
else
    _image_tools
fi
