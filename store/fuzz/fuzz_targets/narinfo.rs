//! narinfo and nix-cache-info parsers: never panic, and for what parses, print then
//! parse gives an equal value and printing is idempotent. Signature lines go
//! through `signing`'s parser; fingerprints and verification must not panic either.

#![no_main]

use buildit_store::narinfo::{NarInfo, NixCacheInfo};
use buildit_store::signing::{SecretKey, TrustedKeys};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    if let Ok(info) = NarInfo::parse(text) {
        let printed = info.to_string();
        let again = NarInfo::parse(&printed)
            .unwrap_or_else(|e| panic!("printed narinfo does not parse: {e}\n{printed}"));
        assert_eq!(again, info, "print/parse round trip changed the narinfo");
        assert_eq!(again.to_string(), printed, "printing is not idempotent");

        let _ = info.file_name();
        let _ = info.fingerprint();
        assert!(info.verify(&TrustedKeys::new()).is_err());
        // Signing replaces the signatures under that key name and then verifies.
        let key = SecretKey::from_seed("fuzz-1", &[7; 32]).expect("valid key name");
        let mut signed = info.clone();
        signed.sign(&key);
        let trusted: TrustedKeys = [key.to_public()].into_iter().collect();
        assert!(
            signed.verify(&trusted).is_ok(),
            "fresh signature does not verify"
        );
        let signed_text = signed.to_string();
        // Printing sorts the signatures, so compare the text.
        let reparsed = NarInfo::parse(&signed_text)
            .unwrap_or_else(|e| panic!("signed narinfo does not parse: {e}\n{signed_text}"));
        assert_eq!(reparsed.to_string(), signed_text);
        assert!(reparsed.verify(&trusted).is_ok());
    }

    if let Ok(info) = NixCacheInfo::parse(text) {
        let printed = info.to_string();
        let again = NixCacheInfo::parse(&printed)
            .unwrap_or_else(|e| panic!("printed nix-cache-info does not parse: {e}\n{printed}"));
        assert_eq!(again, info);
    }
});
