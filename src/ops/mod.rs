//! Operations behind the commands, usable without the CLI.

pub mod debian;
pub mod realise;
pub mod spec;
pub mod store;
