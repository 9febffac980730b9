//! Binary caches: Nix binary caches for store dir `/store` (`nix-cache-info`,
//! `<hash>.narinfo` signed with ed25519 keys, `nar/<filehash>.nar[.zst|.xz]`),
//! reached through one small trait, [`Backend`], with one file per transport
//! (chosen from the URL by [`open`]). Above it, [`BinaryCache`] speaks the cache
//! format: look up and verify narinfos, substitute NARs into the store, push
//! closures.

#![forbid(unsafe_code)]

pub mod backend;
mod binary_cache;
pub mod file;
pub mod http;
mod location;
pub mod oci;
pub mod s3;
pub mod ssh;

use std::io::Read;
use std::path::Path;

pub use binary_cache::{BinaryCache, Substituted};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{url}: {message}")]
    Transport { url: String, message: String },
    #[error("{url}: writing is not supported by this transport")]
    ReadOnly { url: String },
    #[error("unsupported cache URL '{0}' (use file://, http(s)://, s3://, ssh:// or oci://)")]
    UnsupportedUrl(String),
    #[error(transparent)]
    Store(#[from] buildit_store::StoreError),
    #[error("{0}")]
    Invalid(String),
}

/// A transport: a flat namespace of keys (`nix-cache-info`, `abc….narinfo`,
/// `nar/….nar.zst`) holding bytes. Implementations must be safe to share between
/// threads.
pub trait Backend: Send + Sync {
    /// The URL the backend was opened from (for messages).
    fn url(&self) -> &str;
    /// The object under `key`, streamed; `None` when it does not exist.
    fn get(&self, key: &str) -> Result<Option<Box<dyn Read + Send>>, CacheError>;
    /// Whether `key` exists.
    fn exists(&self, key: &str) -> Result<bool, CacheError>;
    /// Store the file at `from` under `key`, replacing it; readers never see a
    /// partial object (temp name and rename where the transport allows).
    fn put(&self, key: &str, from: &Path) -> Result<(), CacheError>;
}

/// Open the backend for a cache URL: `file:///dir`, `http(s)://…`, `s3://bucket/prefix`,
/// `ssh://user@host/path`, `oci://host/repo`.
pub fn open(url: &str) -> Result<Box<dyn Backend>, CacheError> {
    backend::open(url)
}

/// An error and its causes on one line. The clients keep what a user needs in
/// the source chain: reqwest and object_store why a request could not be sent
/// (refused, unresolvable, TLS), openssh ssh's own message (a refused key, an
/// unknown host).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let m = c.to_string();
        if !message.contains(&m) {
            message.push_str(": ");
            message.push_str(&m);
        }
        cause = c.source();
    }
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What the backends' tests share.
#[cfg(test)]
pub(crate) mod testing {
    use super::Backend;
    use std::io::Read;

    /// Bytes that do not repeat (xorshift), so that a misplaced chunk shows.
    pub fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// The whole object at `key`, or `None` when the backend has none.
    pub fn read_all(b: &dyn Backend, key: &str) -> Option<Vec<u8>> {
        let mut r = b.get(key).unwrap()?;
        let mut v = Vec::new();
        r.read_to_end(&mut v).unwrap();
        Some(v)
    }
}
