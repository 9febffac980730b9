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

# release_buildit: build the release binary and set $bi to its absolute path.
release_buildit() {
    need_cargo
    cargo build --release --locked --bin buildit
    bi=$PWD/target/release/buildit
}
