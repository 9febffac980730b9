# Sourced by the other scripts: install Debian packages that are missing.
# Rust comes from the machine (rustup); everything else from apt.

need_cargo() {
    if ! command -v cargo >/dev/null 2>&1; then
        echo "error: cargo is not installed. buildit needs Rust >= 1.85 (rustup's stable)." >&2
        exit 1
    fi
}

# apt_install PKG... : installs those not installed yet (as root, or via sudo).
apt_install() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "installing: ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# report_skips LOG WHO: list the `SKIPPED: <test>: <reason>` lines that tests wrote
# into LOG (tests/common/skip.rs; under CI a missing prerequisite fails instead), and
# how many.
report_skips() {
    local n
    n=$(grep -c 'SKIPPED: ' "$1" || true)
    echo "== skipped tests ($2): $n"
    grep -o 'SKIPPED: .*' "$1" | sed 's/^SKIPPED: /   /' || true
}

# release_buildit: build the release binary and set $bi to its absolute path.
release_buildit() {
    need_cargo
    cargo build --release --locked --bin buildit
    bi=$PWD/target/release/buildit
}

# need_deb_src: make `apt-get source` work: when no deb-src entry exists, add one that
# mirrors the host's Debian entries (deb822 `.sources` or one-line `sources.list`),
# then refresh the package lists.
need_deb_src() {
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    if grep -rqsE '^(Types:.*deb-src|deb-src )' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null; then
        return 0
    fi
    local out=/etc/apt/sources.list.d/buildit-deb-src
    if ls /etc/apt/sources.list.d/*.sources >/dev/null 2>&1; then
        cat /etc/apt/sources.list.d/*.sources | sed -E 's/^Types:.*/Types: deb-src/' | $sudo tee "$out.sources" >/dev/null
    else
        grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
            | sed -E 's/^deb /deb-src /' | $sudo tee "$out.list" >/dev/null
    fi
    echo "added deb-src entries ($out.*) for apt-get source" >&2
    $sudo apt-get update -qq
}
