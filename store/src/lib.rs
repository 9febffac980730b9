//! buildit's store: Nix-compatible formats (nix32, store paths, NAR, derivations,
//! narinfo, signatures) and the local store on disk (files plus SQLite metadata).
//!
//! Everything here is byte-compatible with Nix 2.8 for the store directory `/store`.

pub mod content_address;
pub mod hash;
pub mod hex;
pub mod nix32;
pub mod store_path;

pub use content_address::{ContentAddress, FileIngestion};
pub use hash::{Hash, HashAlgo, Hasher};
pub use store_path::{StorePath, STORE_DIR};
pub mod derivation;
pub mod local;
pub mod nar;
pub mod narinfo;
pub mod path_info;
pub mod signing;

pub use local::{LocalStore, StoreError};
pub use path_info::PathInfo;
