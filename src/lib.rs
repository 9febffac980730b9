//! buildit: package-centric, source-based, reproducible container builds.
//!
//! The binary is a thin layer (`cli`) over operations (`ops`) that sit on the
//! `buildit-store` and `buildit-lang` crates.

pub mod audit;
pub mod build;
pub mod cache;
pub mod cli;
pub mod debian;
pub mod fetch;
pub mod image;
pub mod io_util;
pub mod ops;
pub mod sandbox;
