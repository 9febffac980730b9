//! buildit: package-centric, source-based, reproducible container builds.
//!
//! The binary is a thin layer (`cli`) over operations (`ops`) that sit on the
//! `buildit-store` and `buildit-lang` crates. See docs/ARCHITECTURE.md.
//!
//! Only the sandbox may use `unsafe` (namespaces, mounts, seccomp, fork): every
//! other module tree forbids it.

#![deny(unsafe_code)]

pub mod audit;
pub mod cache;
pub mod cli;
pub mod codec;
pub mod debian;
pub mod elf;
pub mod fetch;
pub mod image;
pub mod in_root;
pub mod io_util;
pub mod ops;
pub mod realise;
#[allow(unsafe_code)]
pub mod sandbox;

/// How a unit test skips when a tool or service is missing (a failure under CI):
/// the same file as the integration tests' `common::skip`.
#[cfg(test)]
#[path = "../tests/common/skip.rs"]
pub(crate) mod test_skip;
