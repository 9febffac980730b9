# buildit's phase runner: the one script every source build runs, as
#   /bin/bash <this file>
# inside the build sandbox (cwd /build, $out writable). Everything it needs comes from
# the derivation's environment, so the script itself is a fixed input of every build.
set -eu -o pipefail
shopt -s nullglob

phase() { printf '\n=== buildit: %s phase\n' "$1"; }

default_unpack() {
    local s
    for s in $src; do
        case "$s" in
            *.tar.gz | *.tgz | *.tar.xz | *.txz | *.tar.bz2 | *.tbz2 | *.tar.zst | *.tar)
                tar --no-same-owner --no-same-permissions -xf "$s" ;;
            *) cp -r --no-preserve=mode "$s" "$(basename "$s" | cut -d- -f2-)" ;;
        esac
    done
    # Enter the source tree: the one directory the first source unpacked to.
    local dirs=(*/)
    if [ "${#dirs[@]}" -ne 1 ]; then
        echo "buildit: expected the sources to unpack to one directory, found: ${dirs[*]:-none}" >&2
        exit 1
    fi
    cd "${dirs[0]}"
}

default_patch() {
    local p
    for p in ${patches:-}; do
        echo "applying $p"
        patch -p1 --no-backup-if-mismatch -i "$p"
    done
}

default_configure() {
    if [ -x ./configure ]; then
        # shellcheck disable=SC2086 # flags are words
        ./configure --prefix=/usr ${configureFlags:-}
    fi
}

default_build() { make -j"${NIX_BUILD_CORES:-1}"; }
default_check() { :; }
default_install() { make install DESTDIR="$out"; }

run_phase() {
    local name=$1 var="${1}Phase"
    phase "$name"
    if [ -n "${!var:-}" ]; then
        eval "${!var}"
    else
        "default_$name"
    fi
}

cd "${TMPDIR:-/build}"
run_phase unpack
run_phase patch
run_phase configure
run_phase build
if [ -n "${doCheck:-}" ]; then run_phase check; fi
run_phase install
mkdir -p "$out"
