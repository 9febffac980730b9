//! container.yaml (`container::parse`): steps, templates, sync sources (resolved inside the spec), images.
//! See `common` for what is checked.

#![no_main]

#[path = "common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        common::container_yaml(text);
    }
});
