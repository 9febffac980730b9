//! narinfo files, keys and signatures written by the real Nix 2.8 (see
//! tests/vectors/README.md): parsing, byte-exact printing, fingerprints and
//! signatures must all agree with it.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use buildit_store::narinfo::{NarInfo, NixCacheInfo};
use buildit_store::signing::{PublicKey, SecretKey, SignatureError, TrustedKeys};
use buildit_store::{ContentAddress, Hash, StorePath};
use serde_json::Value;

const VECTORS: &str = include_str!("vectors/narinfo.json");

fn vectors() -> Value {
    serde_json::from_str(VECTORS).expect("narinfo.json is valid JSON")
}

fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("vector field {key} is a string"))
}

fn keys() -> (SecretKey, PublicKey) {
    let v = vectors();
    let sk: SecretKey = str_field(&v, "secret_key_file")
        .parse()
        .expect("secret key");
    let pk: PublicKey = str_field(&v, "public_key_file")
        .parse()
        .expect("public key");
    (sk, pk)
}

fn cases() -> Vec<Value> {
    let v = vectors();
    let cases = v["cases"].as_array().expect("cases array").clone();
    assert_eq!(cases.len(), 6, "the README promises 6 narinfo files");
    cases
}

fn label(case: &Value) -> String {
    format!(
        "{} ({})",
        str_field(case, "narinfo_file"),
        str_field(case, "cache")
    )
}

#[test]
fn test_key_pair() {
    let v = vectors();
    let (sk, pk) = keys();
    assert_eq!(sk.name(), "buildit-test-1");
    assert_eq!(sk.to_public(), pk);
    // Printing reproduces the files nix-store --generate-binary-cache-key wrote.
    assert_eq!(sk.to_string(), str_field(&v, "secret_key_file"));
    assert_eq!(pk.to_string(), str_field(&v, "public_key_file"));
    assert!(!format!("{sk:?}").contains(str_field(&v, "secret_key_file")));
}

#[test]
fn nix_cache_info() {
    let v = vectors();
    let text = str_field(&v, "nix_cache_info");
    let info = NixCacheInfo::parse(text).expect("nix-cache-info parses");
    assert_eq!(info.store_dir, "/store");
    assert_eq!(info.to_string(), text);
}

#[test]
fn parse_print_is_byte_exact() {
    for case in cases() {
        let text = str_field(&case, "narinfo");
        let info = NarInfo::parse(text).unwrap_or_else(|e| panic!("{}: {e}", label(&case)));
        assert_eq!(info.to_string(), text, "{}", label(&case));
        assert_eq!(
            info.store_path.to_absolute(),
            str_field(&case, "store_path")
        );
        assert_eq!(info.file_name(), str_field(&case, "narinfo_file"));
        let compression = str_field(&case, "cache")
            .strip_prefix("compression=")
            .expect("cache field is compression=…");
        assert_eq!(info.compression.as_str(), compression, "{}", label(&case));
        assert_eq!(
            info.url.ends_with(".nar.xz"),
            compression == "xz",
            "{}",
            label(&case)
        );
        if compression == "none" {
            // Uncompressed: the file is the NAR itself.
            assert_eq!(info.file_hash.as_ref(), Some(&info.nar_hash));
            assert_eq!(info.file_size, Some(info.nar_size));
        }
    }
}

#[test]
fn fingerprints_match() {
    for case in cases() {
        let info = NarInfo::parse(str_field(&case, "narinfo")).expect("parses");
        assert_eq!(
            info.fingerprint(),
            str_field(&case, "fingerprint_derived"),
            "{}",
            label(&case)
        );
    }
}

#[test]
fn signatures_verify_and_resigning_reproduces_them() {
    let (sk, pk) = keys();
    let trusted: TrustedKeys = [pk.clone()].into_iter().collect();
    for case in cases() {
        assert_eq!(
            case["signature_verified_with_public_key"],
            Value::Bool(true)
        );
        let info = NarInfo::parse(str_field(&case, "narinfo")).expect("parses");
        assert_eq!(info.sigs.len(), 1, "{}", label(&case));
        assert_eq!(info.verify(&trusted), Ok(&pk), "{}", label(&case));
        assert!(pk.verify(info.fingerprint().as_bytes(), &info.sigs[0]));

        // Ed25519 is deterministic: our signature is Nix's, byte for byte.
        let nix_sig = info.sigs[0].clone();
        assert_eq!(sk.sign(info.fingerprint().as_bytes()), nix_sig);
        let mut resigned = info.clone();
        resigned.sigs.clear();
        resigned.sign(&sk);
        assert_eq!(resigned.sigs, vec![nix_sig]);
        assert_eq!(resigned.to_string(), str_field(&case, "narinfo"));
    }
}

#[test]
fn tampering_and_other_keys_fail() {
    let (sk, pk) = keys();
    let trusted: TrustedKeys = [pk].into_iter().collect();
    let invalid = Err(SignatureError::Invalid {
        key: "buildit-test-1".into(),
    });
    for case in cases() {
        let info = NarInfo::parse(str_field(&case, "narinfo")).expect("parses");

        // One flipped bit in NarHash, via the text, as a corrupted cache would serve it.
        let mut digest = info.nar_hash.digest().to_vec();
        digest[0] ^= 1;
        let flipped = Hash::from_digest(info.nar_hash.algo(), &digest).expect("same size");
        let text = str_field(&case, "narinfo").replace(
            &format!("NarHash: {}", info.nar_hash),
            &format!("NarHash: {flipped}"),
        );
        let tampered = NarInfo::parse(&text).expect("still well-formed");
        assert_eq!(tampered.nar_hash, flipped);
        assert_eq!(tampered.verify(&trusted), invalid, "{}", label(&case));

        let mut tampered = info.clone();
        tampered.nar_size += 1;
        assert_eq!(tampered.verify(&trusted), invalid);

        // A different key under the same name: present but wrong.
        let impostor = SecretKey::from_seed("buildit-test-1", &[42; 32]).expect("key");
        let other: TrustedKeys = [impostor.to_public()].into_iter().collect();
        assert_eq!(info.verify(&other), invalid);

        // A key under another name: the signature is simply not by a trusted key.
        let stranger = SecretKey::from_seed("someone-else-1", &[1; 32]).expect("key");
        let strangers: TrustedKeys = [stranger.to_public()].into_iter().collect();
        assert_eq!(
            info.verify(&strangers),
            Err(SignatureError::Untrusted {
                signers: vec!["buildit-test-1".into()]
            })
        );

        let mut unsigned = info.clone();
        unsigned.sigs.clear();
        assert_eq!(unsigned.verify(&trusted), Err(SignatureError::Unsigned));

        // Adding our own signature keeps Nix's, and either key is then enough.
        let mut cosigned = info.clone();
        cosigned.sign(&stranger);
        assert_eq!(cosigned.sigs.len(), 2);
        assert!(cosigned.verify(&trusted).is_ok());
        assert!(cosigned.verify(&strangers).is_ok());
        let reparsed = NarInfo::parse(&cosigned.to_string()).expect("parses");
        assert_eq!(reparsed, cosigned_sorted(cosigned));
        // Re-signing with the original key replaces, not duplicates, its signature.
        let mut again = reparsed;
        again.sign(&sk);
        assert_eq!(again.sigs.len(), 2);
    }
}

/// `cosigned` with its signatures in the order printing (and parsing) puts them.
fn cosigned_sorted(mut info: NarInfo) -> NarInfo {
    info.sigs.sort_by_key(|s| s.to_string());
    info
}

#[test]
fn matches_nix_path_info_json() {
    for case in cases() {
        let info = NarInfo::parse(str_field(&case, "narinfo")).expect("parses");
        let pi = &case["nix_path_info_json"];
        let what = label(&case);
        assert_eq!(
            info.store_path.to_absolute(),
            str_field(pi, "path"),
            "{what}"
        );
        let nar_hash: Hash = str_field(pi, "narHash").parse().expect("SRI hash");
        assert_eq!(info.nar_hash, nar_hash, "{what}");
        assert_eq!(Some(info.nar_size), pi["narSize"].as_u64(), "{what}");
        let refs: Vec<StorePath> = pi["references"]
            .as_array()
            .expect("references")
            .iter()
            .map(|r| r.as_str().expect("string").parse().expect("store path"))
            .collect();
        assert_eq!(
            info.references.iter().cloned().collect::<Vec<_>>(),
            refs,
            "{what}"
        );
        match pi.get("ca").and_then(Value::as_str) {
            Some(ca) => {
                let ca: ContentAddress = ca.parse().expect("ca");
                assert_eq!(info.ca.as_ref(), Some(&ca), "{what}");
            }
            None => assert_eq!(info.ca, None, "{what}"),
        }
        // path-info reads the local store, which may know a deriver the cache entry
        // lacks (nix-store --add has none), but never a different one.
        if let (Some(d), Some(ours)) = (pi.get("deriver").and_then(Value::as_str), &info.deriver) {
            assert_eq!(ours.to_absolute(), d, "{what}");
        }
        if let Some(sigs) = pi.get("signatures").and_then(Value::as_array) {
            let theirs: Vec<&str> = sigs.iter().filter_map(Value::as_str).collect();
            for s in &info.sigs {
                assert!(theirs.contains(&s.to_string().as_str()), "{what}");
            }
        }
    }
}

#[test]
fn nars_match_their_hashes() {
    for case in cases() {
        let Some(b64) = case.get("nar_base64").and_then(Value::as_str) else {
            continue;
        };
        let info = NarInfo::parse(str_field(&case, "narinfo")).expect("parses");
        let nar = STANDARD.decode(b64).expect("base64");
        assert_eq!(nar.len() as u64, info.nar_size, "{}", label(&case));
        assert_eq!(Hash::sha256(&nar), info.nar_hash, "{}", label(&case));
        if info.compression.as_str() == "none" {
            let url_hash = info
                .url
                .strip_prefix("nar/")
                .and_then(|u| u.strip_suffix(".nar"))
                .expect("nar/<hash>.nar");
            assert_eq!(url_hash, Hash::sha256(&nar).to_nix32());
        }
    }
}

#[test]
fn every_truncation_of_every_vector_fails_cleanly_or_round_trips() {
    // Cheap stand-in for the fuzzer: no prefix of a real file may panic, and whatever
    // parses must print to something that parses to the same value.
    for case in cases() {
        let text = str_field(&case, "narinfo");
        for end in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
            if let Ok(info) = NarInfo::parse(&text[..end]) {
                let printed = info.to_string();
                assert_eq!(NarInfo::parse(&printed).as_ref(), Ok(&info));
            }
        }
    }
}
