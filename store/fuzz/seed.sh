#!/usr/bin/env bash
# Seeds corpus/<target>/ for every fuzz target from the Nix 2.8 test vectors in
# store/tests/vectors/*.json: NARs (nar_base64), .drv files (drv_aterm and the
# input closures), narinfo and nix-cache-info texts, and store paths, hashes,
# content addresses, keys and signatures. Files are named by the SHA-1 of their
# contents, as libFuzzer names corpus entries, so re-running adds nothing twice
# (scripts/fuzz_corpus.py).
# (The spec files' corpora are seeded by lang/fuzz/seed.sh.) Needs python3.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PYTHONPATH="$here/../../scripts" PYTHONDONTWRITEBYTECODE=1 exec python3 - "$here/../tests/vectors" "$here/corpus" <<'PY'
import base64, json, os, struct, sys

from fuzz_corpus import Corpus

vectors, corpus = sys.argv[1], Corpus(sys.argv[2])
add = corpus.add

def load(name):
    with open(os.path.join(vectors, name)) as f:
        return json.load(f)

def strings(v):
    """Every string anywhere in a JSON value, map keys included."""
    if isinstance(v, str):
        yield v
    elif isinstance(v, list):
        for x in v:
            yield from strings(x)
    elif isinstance(v, dict):
        for k, x in v.items():
            yield k
            yield from strings(x)

nar, drvs, narinfo = load("nar.json"), load("derivations.json"), load("narinfo.json")
paths, base32 = load("store-paths.json"), load("base32.json")

# nar_reader: every full NAR in the vectors.
for case in nar["cases"] + narinfo["cases"]:
    if case.get("nar_base64"):
        add("nar_reader", base64.b64decode(case["nar_base64"]))

# ...and synthetic ones, so that the round-trip checks start from more shapes
# than the vectors have: nesting, many entries, executables, symlinks, odd names
# and the length limits (255-byte names, 4095-byte targets).
def nar_str(b):
    if isinstance(b, str):
        b = b.encode()
    return struct.pack("<Q", len(b)) + b + b"\0" * (-len(b) % 8)

def nar_node(node):
    kind = node[0]
    out = nar_str("(") + nar_str("type")
    if kind == "file":
        _, contents, executable = node
        out += nar_str("regular")
        if executable:
            out += nar_str("executable") + nar_str("")
        out += nar_str("contents") + nar_str(contents)
    elif kind == "link":
        out += nar_str("symlink") + nar_str("target") + nar_str(node[1])
    else:
        out += nar_str("directory")
        for name in sorted(node[1], key=lambda n: n.encode() if isinstance(n, str) else n):
            out += nar_str("entry") + nar_str("(") + nar_str("name") + nar_str(name)
            out += nar_str("node") + nar_node(node[1][name]) + nar_str(")")
    return out + nar_str(")")

def nar_of(node):
    return nar_str("nix-archive-1") + nar_node(node)

def chain(depth, leaf):
    node = leaf
    for i in range(depth):
        node = ("dir", {"d%d" % i: node})
    return node

synthetic = [
    ("dir", {}),
    ("file", b"", True),
    ("file", bytes(range(256)), False),
    ("link", "/"),
    ("link", "x" * 4095),
    ("dir", {"x" * 255: ("file", b"a", False)}),
    ("dir", {b"\xff\x80": ("file", b"", False), "...": ("link", ".."), " a b": ("dir", {})}),
    ("dir", {"%02d" % i: ("file", b"x" * i, i % 3 == 0) for i in range(24)}),
    ("dir", {"bin": ("dir", {"sh": ("file", b"#!/bin/sh\n", True), "bash": ("link", "sh")}),
             "lib": ("link", "../lib64"), "share": ("dir", {"doc": ("dir", {})})}),
    chain(30, ("file", b"deep", False)),
    chain(8, ("dir", {"a": ("link", "b"), "b": ("file", b"1234567", True)})),
]
for node in synthetic:
    add("nar_reader", nar_of(node))

# aterm: the .drv files, their input closures and the masked forms.
for case in drvs["cases"]:
    add("aterm", case["drv_aterm"])
    for aterm in case.get("input_drv_closure", {}).values():
        add("aterm", aterm)
    masked = case.get("input_addressed_derived", {}).get("masked_aterm")
    if masked:
        add("aterm", masked)

# narinfo: the .narinfo files and nix-cache-info.
for case in narinfo["cases"]:
    add("narinfo", case["narinfo"])
add("narinfo", narinfo["nix_cache_info"])

# store_path: anything that looks like a path, hash, CA, key or signature.
sp = "store_path"
for s in strings([nar, drvs, narinfo, paths]):
    if s.startswith("/store/") and len(s) < 300 and "\n" not in s:
        add(sp, s)
        add(sp, s[len("/store/"):])
        add(sp, s + "/bin/tool")
for case in nar["cases"]:
    add(sp, "sha256:" + case["nar_sha256_hex"])
    add(sp, "sha256:" + case["nar_sha256_nix32"])
    add(sp, case["nix_hash_path"])
    add(sp, "fixed:r:sha256:" + case["nar_sha256_nix32"])
    add(sp, "text:sha256:" + case["nar_sha256_nix32"])
for case in narinfo["cases"]:
    for line in case["narinfo"].splitlines():
        key, _, value = line.partition(": ")
        if key in ("FileHash", "NarHash", "CA", "Sig", "References", "Deriver"):
            add(sp, value)
for case in base32["cases"]:
    add(sp, case["nix32"])
    add(sp, case["bytes_hex"])
add(sp, narinfo["public_key_file"].strip())
add(sp, narinfo["secret_key_file"].strip())

corpus.report(("nar_reader", "aterm", "narinfo", "store_path"))
PY
