//! Operations behind the commands, usable without the CLI.

#![forbid(unsafe_code)]

pub mod build;
pub mod cache;
pub mod check;
pub mod debian;
pub mod diff;
pub mod image;
pub mod load;
pub mod push;
pub mod realise;
pub mod store;
