//! `.drv` parser: `Derivation::from_aterm` must never panic, and what it accepts
//! must print (`to_aterm`) and parse back to an equal derivation. An input without
//! escapes or raw tab/CR/LF characters (the only things the parser normalises)
//! must print back byte for byte, since a derivation has one byte form. The JSON
//! form and the hashing functions get the parsed derivation too.

#![no_main]

use buildit_store::derivation::{Derivation, DerivationError};
use buildit_store::Hash;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(drv) = Derivation::from_aterm(data) else {
        return;
    };
    let text = drv
        .to_aterm()
        .unwrap_or_else(|e| panic!("a parsed derivation does not print: {e}"));
    let again = Derivation::from_aterm(text.as_bytes())
        .unwrap_or_else(|e| panic!("printed derivation does not parse: {e}\n{text}"));
    assert_eq!(again, drv, "print/parse round trip changed the derivation");
    if !data
        .iter()
        .any(|b| matches!(b, b'\\' | b'\n' | b'\r' | b'\t'))
    {
        assert!(
            text.as_bytes() == data,
            "canonical input printed back differently:\n{}\n{text}",
            String::from_utf8_lossy(data)
        );
    }

    // JSON (`nix show-derivation`) round trip.
    let json = drv.to_nix_json_body();
    let from_json = Derivation::from_nix_json_body(&json)
        .unwrap_or_else(|e| panic!("JSON of a parsed derivation does not parse: {e}\n{json}"));
    assert_eq!(from_json, drv, "JSON round trip changed the derivation");

    // Hashing: must not panic; recomputed output paths must pass the check.
    let input_hash = |_: &_| Ok::<_, DerivationError>(Hash::sha256(b"input"));
    let _ = drv.drv_path();
    let _ = drv.hash_modulo(false, input_hash);
    let _ = drv.check_output_paths(input_hash);
    let mut filled = drv.clone();
    if filled.fill_output_paths(input_hash).is_ok() {
        filled
            .check_output_paths(input_hash)
            .unwrap_or_else(|e| panic!("freshly filled output paths fail the check: {e}"));
        let text = filled
            .to_aterm()
            .unwrap_or_else(|e| panic!("filled derivation does not print: {e}"));
        let again = Derivation::from_aterm(text.as_bytes())
            .unwrap_or_else(|e| panic!("filled derivation does not parse: {e}\n{text}"));
        assert_eq!(again, filled);
    }
});
