#!/usr/bin/env bash
# Seed the corpora and fuzz every target of store/fuzz (buildit-store's parsers),
# lang/fuzz (buildit-lang's parsers of the user's files) and fuzz/ (the root crate's:
# .debs, Debian text, OCI layouts) for SECONDS each (default 60), one job at a time. For humans and optional CI jobs; the test suite does not
# call it. Needs cargo-fuzz (`cargo install cargo-fuzz --locked`) and python3.
#
#   scripts/fuzz.sh [SECONDS]
#
# Environment: FUZZ_TARGETS (space-separated subset, default all),
# FUZZ_SANITIZER (address by default; `none` if sanitizers do not build here).
# On a stable toolchain RUSTC_BOOTSTRAP=1 unlocks the -Z flags cargo-fuzz uses.
# Exits non-zero if a target found a crash; inputs land in
# {store,lang}/fuzz/artifacts/ and fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
case $seconds in
    '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac
store_targets="nar_reader aterm narinfo store_path"
lang_targets="spec_yaml container_yaml pkg_yaml recipe build_root config lock_file"
root_targets="deb_unpack debian_text oci_archive oci_documents"
targets=${FUZZ_TARGETS:-$store_targets $lang_targets $root_targets}
sanitizer=${FUZZ_SANITIZER:-address}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is not installed: cargo install cargo-fuzz --locked" >&2
    exit 2
fi
if ! rustc --version | grep -q nightly; then
    export RUSTC_BOOTSTRAP=1
fi

store/fuzz/seed.sh
lang/fuzz/seed.sh

failed=()
for t in $targets; do
    case " $lang_targets " in
        *" $t "*) crate=lang ;;
        *) case " $root_targets " in
            *" $t "*) crate=. ;;
            *) crate=store ;;
        esac ;;
    esac
    # The YAML targets share spec_yaml's dictionary; the root crate's have none.
    dict=$PWD/$crate/fuzz/dict/$t.dict
    [ -f "$dict" ] || dict=$PWD/$crate/fuzz/dict/spec_yaml.dict
    dict_arg=()
    [ -f "$dict" ] && dict_arg=(-dict="$dict")
    echo "=== fuzzing $t ($crate) for ${seconds}s"
    if ! (cd "$crate" && cargo fuzz run -s "$sanitizer" "$t" -- \
        -max_total_time="$seconds" -timeout=10 \
        "${dict_arg[@]}" -print_final_stats=1); then
        failed+=("$crate/$t")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "crashes in: ${failed[*]} (see CRATE/fuzz/artifacts/; reproduce with" \
        "'cargo fuzz run TARGET ARTIFACT' in store/, lang/ or the repository root)" >&2
    exit 1
fi
echo "no crashes"
