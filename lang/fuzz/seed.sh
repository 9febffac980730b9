#!/usr/bin/env bash
# Seeds corpus/<target>/ for every target of this crate from the user's files in
# samples/ and lang/tests/fixtures/ (dot files too): spec_yaml gets every YAML file,
# container_yaml the container.yaml files, pkg_yaml the pkg.yaml files, recipe the
# recipes, build_root the build-root definitions, config the configurations (and a
# few made here), lock_file lock files made here. Files are named by the SHA-1 of
# their contents, as libFuzzer names corpus entries, so re-running adds nothing
# twice (scripts/fuzz_corpus.py). Needs python3.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PYTHONPATH="$here/../../scripts" PYTHONDONTWRITEBYTECODE=1 exec python3 - "$here/corpus" "$here/../.." <<'PY'
import json, os, sys

from fuzz_corpus import Corpus

corpus, root = Corpus(sys.argv[1]), sys.argv[2]
add = corpus.add

def kind(path, name):
    if name == "container.yaml":
        return "container_yaml"
    if name in ("pkg.yaml", "seed-pkg.yaml") or name.startswith("seed-step"):
        return "pkg_yaml"
    if name == ".buildit-config.yaml":
        return "config"
    if os.sep + "build-roots" + os.sep in path:
        return "build_root"
    if os.sep + "recipes" + os.sep in path:
        return "recipe"
    return None

for top in ("samples", "lang/tests/fixtures"):
    for d, _, files in sorted(os.walk(os.path.join(root, top))):
        for name in sorted(files):
            if not name.endswith(".yaml"):
                continue
            path = os.path.join(d, name)
            with open(path, "rb") as f:
                data = f.read()
            add("spec_yaml", data)
            k = kind(path, name)
            if k:
                add(k, data)

configs = [
    "",
    "recipe-paths: [files]\nsource-dirs: [pkgs]\nallowed-dirs: [files/conf.d]\n"
    "mirrors:\n  gnu: [https://ftp.gnu.org/gnu, file:///srv/gnu]\n"
    "secret-key-file: keys/cache.sec\n"
    "trusted-public-keys: [cache.example.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=]\n",
    "allowed-dirs: [files/etc, ../../etc, /etc]\n",
]
for c in configs:
    add("config", c)
    add("spec_yaml", c)
container = ("- vars:\n    v: '1'\n- package:\n    recipe: www-servers/nginx-{{ v }}.22.1\n"
             "    use:\n      with: [ssl]\n      without: [http2]\n"
             "- sync:\n    src: files\n    dest: /etc/nginx\n    recursive: true\n    owner: \"0:0\"\n"
             "- sync:\n    src: files/etc/shadow\n    dest: /x\n"
             "- image:\n    type: oci\n    name: x/{{ v }}\n    content: '{\"a\": \"{{ v }}\"}'\n")
add("container_yaml", container)
add("spec_yaml", container)
add("pkg_yaml", "base: www-servers/nginx-1.22.1\npatches:\n  patches/https-only.patch: a\n"
    "  ../../files/secret: b\n  /etc/shadow: c\n")

sha = "ab" * 32
lock = {
    "version": 1,
    "debian": {"hello": {"version": "2.10-3", "architecture": "amd64", "sha256": sha,
                         "size": 53000, "filename": "pool/main/h/hello/hello_2.10-3_amd64.deb"}},
    "build-roots": {"debian-12-c": {"requested": ["gcc"], "packages": ["gcc", "libc6"]}},
    "packages": {"pkgs/nginx": {"recipe": "www-servers/nginx-1.22.1",
                                "build-requested": ["libpcre2-dev"], "build-closure": ["libpcre2-dev"],
                                "runtime-requested": [], "runtime-closure": [],
                                "patches": {"https://example.org/a.patch": sha}}},
}
add("lock_file", json.dumps(lock, indent=2) + "\n")
add("lock_file", '{\n  "version": 1\n}\n')

corpus.report(("spec_yaml", "container_yaml", "pkg_yaml", "recipe", "build_root", "config", "lock_file"))
PY
