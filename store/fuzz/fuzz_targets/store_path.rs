//! The small text parsers: store paths, hashes, content addresses, nix32 and hex,
//! and signing keys and signatures. None may panic; whatever parses must print in
//! each supported form and parse back to an equal value.

#![no_main]

use buildit_store::signing::{PublicKey, SecretKey, Signature, TrustedKeys};
use buildit_store::store_path::validate_name;
use buildit_store::{hex, nix32, ContentAddress, Hash, HashAlgo, StorePath};
use libfuzzer_sys::fuzz_target;

fn check_store_path(p: &StorePath) {
    let abs = p.to_absolute();
    assert_eq!(abs, p.to_string());
    assert_eq!(StorePath::from_absolute(&abs).as_ref(), Ok(p));
    assert_eq!(abs.parse::<StorePath>().as_ref(), Ok(p));
    assert_eq!(StorePath::from_base_name(p.base_name()).as_ref(), Ok(p));
    assert_eq!(
        StorePath::split_absolute(&abs)
            .as_ref()
            .map(|(q, rest)| (q, *rest)),
        Ok((p, ""))
    );
    assert_eq!(p.base_name(), format!("{}-{}", p.hash_part(), p.name()));
    assert_eq!(validate_name(p.name()), Ok(()));
    let digest = p.digest();
    assert_eq!(StorePath::from_digest(&digest, p.name()).as_ref(), Ok(p));
    assert_eq!(nix32::encode(&digest), p.hash_part());
}

fn check_hash(h: &Hash) {
    let algo = h.algo();
    assert_eq!(h.digest().len(), algo.size());
    for form in [
        h.to_string(),
        h.to_prefixed_nix32(),
        h.to_prefixed_hex(),
        h.to_sri(),
        format!("{algo}:{}", h.to_base64()),
    ] {
        assert_eq!(Hash::parse(&form, None).as_ref(), Ok(h), "{form}");
        assert_eq!(form.parse::<Hash>().as_ref(), Ok(h), "{form}");
    }
    for bare in [h.to_hex(), h.to_nix32(), h.to_base64()] {
        assert_eq!(Hash::parse_bare(&bare, algo).as_ref(), Ok(h), "{bare}");
        assert_eq!(Hash::parse(&bare, Some(algo)).as_ref(), Ok(h), "{bare}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };

    // Store paths.
    if let Ok(p) = s.parse::<StorePath>() {
        check_store_path(&p);
    }
    if let Ok(p) = StorePath::from_base_name(s) {
        assert_eq!(p.base_name(), s);
        check_store_path(&p);
    }
    if let Ok(p) = StorePath::from_absolute(s) {
        check_store_path(&p);
    }
    if let Ok((p, rest)) = StorePath::split_absolute(s) {
        check_store_path(&p);
        assert!(s.ends_with(rest));
        if !rest.is_empty() {
            assert_eq!(format!("{}/{rest}", p.to_absolute()), s);
        }
    }
    let _ = validate_name(s);

    // Hashes, with and without a default algorithm.
    if let Ok(h) = Hash::parse(s, None) {
        check_hash(&h);
    }
    for algo in HashAlgo::ALL {
        if let Ok(h) = Hash::parse(s, Some(algo)) {
            check_hash(&h);
        }
        if let Ok(h) = Hash::parse_bare(s, algo) {
            assert_eq!(h.algo(), algo);
            check_hash(&h);
        }
    }
    if let Ok(algo) = s.parse::<HashAlgo>() {
        assert_eq!(algo.name(), s);
    }

    // Content addresses.
    if let Ok(ca) = s.parse::<ContentAddress>() {
        let printed = ca.to_string();
        assert_eq!(
            printed.parse::<ContentAddress>().as_ref(),
            Ok(&ca),
            "{printed}"
        );
        match &ca {
            ContentAddress::Text(h) => {
                assert_eq!(h.algo(), HashAlgo::Sha256);
                check_hash(h);
            }
            ContentAddress::Fixed(_, h) => check_hash(h),
        }
    }

    // nix32 and hex.
    if let Ok(bytes) = nix32::decode(s) {
        assert_eq!(nix32::encode(&bytes), s);
    }
    if let Some(bytes) = hex::decode(s) {
        assert_eq!(hex::encode(&bytes), s.to_ascii_lowercase());
    }

    // Keys and signatures (`NAME:BASE64`).
    if let Ok(sig) = s.parse::<Signature>() {
        let printed = sig.to_string();
        assert_eq!(printed.parse::<Signature>().as_ref(), Ok(&sig), "{printed}");
        assert_eq!(
            Signature::new(sig.key_name(), *sig.bytes()).as_ref(),
            Ok(&sig)
        );
    }
    if let Ok(key) = s.parse::<PublicKey>() {
        let printed = key.to_string();
        assert_eq!(printed.parse::<PublicKey>().as_ref(), Ok(&key), "{printed}");
        assert_eq!(
            PublicKey::from_bytes(key.name(), key.as_bytes()).as_ref(),
            Ok(&key)
        );
        // Verifying a garbage signature must simply fail.
        if let Ok(sig) = Signature::new(key.name(), [0x5a; 64]) {
            assert!(!key.verify(data, &sig));
        }
    }
    if let Ok(key) = s.parse::<SecretKey>() {
        let printed = key.to_string();
        let again = printed
            .parse::<SecretKey>()
            .unwrap_or_else(|e| panic!("printed secret key does not parse: {e}"));
        assert!(again == key, "secret key round trip changed the key");
        let sig = key.sign(data);
        assert!(key.to_public().verify(data, &sig));
    }
    if let Ok(keys) = s.parse::<TrustedKeys>() {
        let printed: Vec<String> = keys.keys().iter().map(ToString::to_string).collect();
        let again: TrustedKeys = printed
            .join(" ")
            .parse()
            .unwrap_or_else(|e| panic!("printed trusted keys do not parse: {e}"));
        assert_eq!(again, keys);
    }
});
