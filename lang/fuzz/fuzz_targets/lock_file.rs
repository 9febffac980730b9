//! `buildit.lock` (`LockFile::parse`, JSON): what parses prints and parses back equal.
//! See `common` for what is checked.

#![no_main]

#[path = "common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        common::lock_file(text);
    }
});
