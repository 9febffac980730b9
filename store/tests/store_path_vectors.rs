//! nix32, compressHash and store-path construction against values printed by Nix 2.8
//! (`vectors/base32.json`, `vectors/store-paths.json`), and the same paths produced
//! by real adds to a local store.

use std::collections::BTreeSet;

use buildit_store::store_path::{make_fixed_output_path, make_store_path, make_text_path};
use buildit_store::{hex, nix32, FileIngestion, Hash, HashAlgo, LocalStore, StorePath};
use serde_json::Value;

fn load(name: &str) -> Value {
    let p = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str()
        .unwrap_or_else(|| panic!("missing {k} in {v}"))
}

#[test]
fn base32_cases() {
    let v = load("base32.json");
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 6);
    for c in cases {
        let bytes = hex::decode(s(c, "bytes_hex")).unwrap();
        assert_eq!(nix32::encode(&bytes), s(c, "nix32"), "{}", s(c, "label"));
        assert_eq!(nix32::decode(s(c, "nix32")).unwrap(), bytes);
    }
    for c in v["compress_hash_20_derived"].as_array().unwrap() {
        let input = hex::decode(s(c, "input_hex")).unwrap();
        let folded = nix32::compress_hash(&input, 20);
        assert_eq!(hex::encode(&folded), s(c, "compressed20_hex"));
        assert_eq!(nix32::encode(&folded), s(c, "compressed20_nix32"));
    }
}

fn refs(c: &Value) -> BTreeSet<StorePath> {
    c["references"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| r.as_str().unwrap().parse().unwrap())
                .collect()
        })
        .unwrap_or_default()
}

/// Every case's path, computed from the hash it records, and its fingerprint.
#[test]
fn store_path_cases() {
    let v = load("store-paths.json");
    assert_eq!(s(&v, "store_dir"), "/store");
    let cases = v["cases"].as_array().unwrap();
    for c in cases {
        let kind = s(c, "kind");
        let expected = s(c, "store_path");
        let name = expected.split_once('-').unwrap().1;
        let computed = if kind.starts_with("add (recursive") {
            let h = Hash::from_digest(
                HashAlgo::Sha256,
                &hex::decode(s(c, "nar_sha256_hex")).unwrap(),
            )
            .unwrap();
            make_fixed_output_path(name, FileIngestion::Recursive, &h, [], false).unwrap()
        } else if let Some(algo) = kind.strip_prefix("add-fixed flat ") {
            let h = Hash::parse_bare(s(c, "flat_hash_hex"), algo.parse().unwrap()).unwrap();
            make_fixed_output_path(name, FileIngestion::Flat, &h, [], false).unwrap()
        } else if let Some(algo) = kind.strip_prefix("add-fixed recursive ") {
            let h = Hash::parse_bare(s(c, "nar_hash_hex"), algo.parse().unwrap()).unwrap();
            make_fixed_output_path(name, FileIngestion::Recursive, &h, [], false).unwrap()
        } else if kind.starts_with("toFile") {
            let h = Hash::sha256(s(c, "contents").as_bytes());
            make_text_path(name, &h, &refs(c)).unwrap()
        } else {
            // Path literals and builtins.path: recompute from the fingerprint's parts.
            let fp = s(c, "fingerprint_derived");
            let mut parts = fp.splitn(4, ':');
            let (ty, _, hexd) = (parts.next().unwrap(), parts.next(), parts.next().unwrap());
            let h = Hash::parse_bare(hexd, HashAlgo::Sha256).unwrap();
            make_store_path(ty, &h, name).unwrap()
        };
        assert_eq!(computed.to_string(), expected, "{kind}");
    }
}

/// The same cases, as real adds to a store: content in, Nix's path out.
#[test]
fn local_store_adds_give_nix_paths() {
    let v = load("store-paths.json");
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(&dir.path().join("root")).unwrap();
    let local = dir.path().join("local.txt");
    std::fs::write(&local, "local file\n").unwrap();
    let mut checked = 0;
    for c in v["cases"].as_array().unwrap() {
        let kind = s(c, "kind");
        let expected = s(c, "store_path");
        let got = if let Some(algo) = kind.strip_prefix("add-fixed flat ") {
            let name = expected.split_once('-').unwrap().1;
            let file = dir.path().join(name);
            std::fs::write(&file, s(c, "contents")).unwrap();
            store
                .add_path(&file, name, FileIngestion::Flat, algo.parse().unwrap())
                .unwrap()
        } else if kind.starts_with("toFile") {
            let name = expected.split_once('-').unwrap().1;
            for r in refs(c) {
                assert!(store.is_valid(&r).unwrap(), "reference {r} added first");
            }
            store
                .add_text(name, s(c, "contents").as_bytes(), &refs(c))
                .unwrap()
        } else if kind.starts_with("path literal") {
            store
                .add_path(
                    &local,
                    "local.txt",
                    FileIngestion::Recursive,
                    HashAlgo::Sha256,
                )
                .unwrap()
        } else if kind.starts_with("builtins.path") {
            store
                .add_path(
                    &local,
                    "renamed",
                    FileIngestion::Recursive,
                    HashAlgo::Sha256,
                )
                .unwrap()
        } else {
            continue;
        };
        assert_eq!(got.to_string(), expected, "{kind}");
        let info = store.path_info(&got).unwrap().unwrap();
        assert_eq!(info.references, refs(c));
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} cases ran");
    assert!(store.verify(true).unwrap().problems.is_empty());
}
