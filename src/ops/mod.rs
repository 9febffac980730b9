//! Operations behind the commands, usable without the CLI.

#![forbid(unsafe_code)]

pub mod cache;
pub mod check;
pub mod debian;
pub mod realise;
pub mod spec;
pub mod store;
