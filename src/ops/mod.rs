//! Operations behind the commands, usable without the CLI.

pub mod cache;
pub mod check;
pub mod debian;
pub mod realise;
pub mod spec;
pub mod store;
