//! buildit's store: Nix-compatible formats (nix32, store paths, NAR, derivations,
//! narinfo, signatures) and the local store on disk (files plus SQLite metadata).
//!
//! Everything here is byte-compatible with Nix 2.8 for the store directory `/store`.

#![forbid(unsafe_code)]

pub mod builtins;
pub mod content_address;
pub mod derivation;
pub mod hash;
pub mod hex;
pub mod local;
pub mod nar;
pub mod narinfo;
pub mod nix32;
pub mod path_info;
pub mod references;
pub mod signing;
pub mod store_path;
pub mod usrmerge;

pub use content_address::{ContentAddress, FileIngestion};
pub use derivation::{Derivation, DerivationOutput};
pub use hash::{Hash, HashAlgo, Hasher};
pub use local::{LocalStore, StoreError};
pub use path_info::PathInfo;
pub use store_path::{StorePath, STORE_DIR};
