//! Operations behind the commands, usable without the CLI.

pub mod store;
