//! appc images (ACIs): a tar holding exactly `manifest` and `rootfs/`, optionally
//! gzip- or xz-compressed, addressed by the SHA-512 of the uncompressed tar.
//!
//! The manifest is the user's own JSON (the `content` of an `image` step), so it
//! is checked here against appc 0.8.11 before anything is written. `actool
//! validate` is not enough: it accepts an empty or relative `exec`, names like
//! `example.com//x` (its code checks characters and edges, not the spec's regex)
//! and unknown fields, and knows nothing of the rootfs. Every problem is reported
//! at once, each naming its JSON path, so one edit fixes them all.
//!
//! `manifest` checks the manifest, with appc's value types in `types`; `write`
//! lays out, compresses and hashes the image.

mod manifest;
#[cfg(test)]
mod testutil;
mod types;
mod write;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use thiserror::Error;

pub use manifest::check_manifest;
pub use write::{image_id, write_aci};

/// How the tar is compressed. appc allows gzip, bzip2 and xz; bzip2 has no
/// deterministic encoder among our dependencies and gains nothing over xz.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AciCompression {
    None,
    Gzip,
    Xz,
}

impl AciCompression {
    /// The name as `compression:` spells it; `zstd` is refused with the reason,
    /// since the same key accepts it for OCI images.
    pub fn parse(name: &str) -> Result<AciCompression, AciError> {
        match name {
            "none" => Ok(AciCompression::None),
            "gzip" => Ok(AciCompression::Gzip),
            "xz" => Ok(AciCompression::Xz),
            other => Err(AciError::Compression(other.to_string())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            AciCompression::None => "none",
            AciCompression::Gzip => "gzip",
            AciCompression::Xz => "xz",
        }
    }
}

impl FromStr for AciCompression {
    type Err = AciError;
    fn from_str(s: &str) -> Result<Self, AciError> {
        AciCompression::parse(s)
    }
}

impl fmt::Display for AciCompression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Error)]
pub enum AciError {
    #[error("the ACI manifest has {} problem{}:\n{}",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Manifest { problems: Vec<String> },
    #[error("the ACI manifest is not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "an ACI cannot be compressed with '{0}': appc images are tar, gzip, bzip2 or xz \
             (actool and appc runtimes read no other); use compression: gzip, xz or none"
    )]
    Compression(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> AciError + '_ {
    move |source| AciError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_names() {
        assert_eq!(AciCompression::parse("xz").unwrap(), AciCompression::Xz);
        assert_eq!(
            "gzip".parse::<AciCompression>().unwrap(),
            AciCompression::Gzip
        );
        let e = AciCompression::parse("zstd").unwrap_err().to_string();
        assert!(e.contains("cannot be compressed with 'zstd'"), "{e}");
        assert!(e.contains("use compression: gzip, xz or none"), "{e}");
    }
}
