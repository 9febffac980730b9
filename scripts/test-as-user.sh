#!/usr/bin/env bash
# Run the already-built test executables as an unprivileged user.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
user=buildit-test
id "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$user"
home=$(getent passwd "$user" | cut -d: -f6)

# The user must be able to reach the checkout (test data, the buildit binary).
d=$PWD
while [ "$d" != / ]; do chmod o+x "$d"; d=$(dirname "$d"); done
chmod -R o+rX .
# Tests keep shared caches (downloads, a test store) per user under cargo's
# target tmp dir: let the user create theirs, as in /tmp.
mkdir -p target/tmp && chmod 1777 target/tmp

# Each test executable with its package directory: cargo runs tests from there.
mapfile -t tests < <(cargo test --workspace --locked --no-run --message-format=json 2>/dev/null |
    grep '"profile":{[^}]*"test":true' | grep '"executable":"' |
    sed -E 's/.*"manifest_path":"([^"]*)\/Cargo.toml".*"executable":"([^"]*)".*/\1 \2/')
[ ${#tests[@]} -gt 0 ] || { echo "no test executables found" >&2; exit 1; }

repo=$PWD
log=$(mktemp)
trap 'rm -f "$log"' EXIT
passed=0 failed=0
for t in "${tests[@]}"; do
    dir=${t%% *} exe=${t#* }
    echo "== as $user: ${exe#$PWD/}"
    # CI passes through: a missing prerequisite fails there (tests/common/skip.rs).
    if (cd "$dir" && runuser -u "$user" -- env -i HOME="$home" PATH=/usr/local/bin:/usr/bin:/bin \
            TMPDIR=/tmp LANG=C.UTF-8 INSTA_WORKSPACE_ROOT="$repo" INSTA_UPDATE=no ${CI:+CI="$CI"} \
            "$exe" --test-threads=2 -q) 2>&1 | tee -a "$log"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
    fi
done
report_skips "$log" "as $user"
echo "as $user: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
