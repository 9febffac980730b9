#!/usr/bin/env bash
# Run the already-built test executables as an unprivileged user.
set -euo pipefail
cd "$(dirname "$0")/.."
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

mapfile -t exes < <(cargo test --workspace --locked --no-run --message-format=json 2>/dev/null |
    grep '"profile":{[^}]*"test":true' | grep -o '"executable":"[^"]*"' | cut -d'"' -f4)
[ ${#exes[@]} -gt 0 ] || { echo "no test executables found" >&2; exit 1; }

passed=0 failed=0
for exe in "${exes[@]}"; do
    echo "== as $user: ${exe#$PWD/}"
    if (runuser -u "$user" -- env -i HOME="$home" PATH=/usr/local/bin:/usr/bin:/bin \
            TMPDIR=/tmp LANG=C.UTF-8 "$exe" --test-threads=2 -q); then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
    fi
done
echo "as $user: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
