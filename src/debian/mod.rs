//! Debian binary packages as exact, pinned inputs: resolving names to a closure of
//! exact versions (`resolve`), finding mirrors in the host's apt configuration
//! (`sources`), and reading `.deb` files (`deb`); all three read deb822 stanzas
//! with one parser (`deb822`).

#![forbid(unsafe_code)]

pub mod deb;
pub mod deb822;
pub mod resolve;
pub mod sources;
