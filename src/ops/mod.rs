//! Operations behind the commands, usable without the CLI.

#![forbid(unsafe_code)]

pub mod build;
pub mod cache;
pub mod check;
pub mod debian;
pub mod load;
pub mod realise;
pub mod store;
