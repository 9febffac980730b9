//! Every parser of the user's files fed the same text: container.yaml, pkg.yaml, a
//! recipe, `.buildit-config.yaml` and a build-root definition (see `common` for
//! what is checked). The per-parser targets beside it spend all their time on one.

#![no_main]

#[path = "common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    common::container_yaml(text);
    common::pkg_yaml(text);
    common::recipe(text);
    common::config(text);
    common::build_root(text);
});
