//! Content addresses as Nix writes them in narinfo `CA:` lines and its database.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::hash::{Hash, HashAlgo, HashError};

/// How file content is turned into a hash: the bytes of one file (`Flat`) or the NAR
/// of a tree (`Recursive`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileIngestion {
    Flat,
    Recursive,
}

impl FileIngestion {
    /// `r:` for recursive, empty for flat, as in `fixed:out:r:sha256:…` and `r:sha256`.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Flat => "",
            Self::Recursive => "r:",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ContentAddress {
    /// `text:sha256:<nix32>`; always sha256 of the file's bytes.
    Text(Hash),
    /// `fixed:[r:]algo:<nix32>`.
    Fixed(FileIngestion, Hash),
}

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ContentAddressError {
    #[error("content address '{0}' must start with 'text:' or 'fixed:'")]
    BadPrefix(String),
    #[error("text content address must use sha256, not {0}")]
    TextNotSha256(HashAlgo),
    #[error(transparent)]
    Hash(#[from] HashError),
}

impl fmt::Display for ContentAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text(h) => write!(f, "text:{}", h.to_prefixed_nix32()),
            Self::Fixed(m, h) => write!(f, "fixed:{}{}", m.prefix(), h.to_prefixed_nix32()),
        }
    }
}

impl FromStr for ContentAddress {
    type Err = ContentAddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = s.strip_prefix("text:") {
            let h = Hash::parse(rest, None)?;
            if h.algo() != HashAlgo::Sha256 {
                return Err(ContentAddressError::TextNotSha256(h.algo()));
            }
            Ok(Self::Text(h))
        } else if let Some(rest) = s.strip_prefix("fixed:") {
            match rest.strip_prefix("r:") {
                Some(r) => Ok(Self::Fixed(FileIngestion::Recursive, Hash::parse(r, None)?)),
                None => Ok(Self::Fixed(FileIngestion::Flat, Hash::parse(rest, None)?)),
            }
        } else {
            Err(ContentAddressError::BadPrefix(s.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        for s in [
            "fixed:r:sha256:1c0kx4gq6fffzjk79cvqa9ic9gqg3w7jfaxswl2y8yzv0hp5z6kd",
            "fixed:sha1:143xibwh31h9bvxzalr0sjvbbvpa6ffs",
            "text:sha256:00xyyr3fi8l6hb839bv3f7yb86yjv7xi1cgh1xnhipym4asvb4aq",
        ] {
            let ca: ContentAddress = s.parse().unwrap();
            assert_eq!(ca.to_string(), s);
        }
        assert!("blob:sha256:x".parse::<ContentAddress>().is_err());
        assert!("text:sha1:143xibwh31h9bvxzalr0sjvbbvpa6ffs"
            .parse::<ContentAddress>()
            .is_err());
    }
}
