#!/usr/bin/env bash
# Install what the tests need and run them all: as the current user, and when that
# is root, once more as an unprivileged user (buildit must work rootless).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
need_cargo
# nix-bin: real Nix 2.8 as an oracle for formats; binutils' readelf: one for the ELF
# reader; python3 and openssl: a loopback HTTPS server for the remote-patch test;
# util-linux's setpriv: tests that mean something only unprivileged run again so.
apt_install gcc libc6-dev binutils nix-bin util-linux python3 openssl dpkg apt openssh-server openssh-client
# Builds from upstream source get their tarballs with `apt-get source`.
need_deb_src
# The independent tools that check images: umoci, oci-image-tool, skopeo, podman,
# runc, a registry, diffoscope, and appc's actool (built from Debian's Go sources).
scripts/image-tools.sh
# An S3-compatible server (moto) for the s3:// cache backend's tests.
scripts/cache-tools.sh

# A one-shot build gains nothing from incremental state, which is a third of target/.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi
# A test that skips says so (under CI it fails instead): list what was skipped.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked 2>&1 | tee "$log" || status=$?
report_skips "$log" "as $(id -un)"
[ "$status" -eq 0 ] || exit "$status"

if [ "$(id -u)" -eq 0 ]; then
    scripts/test-as-user.sh
fi
