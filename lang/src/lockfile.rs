//! `buildit.lock`: everything a spec does not pin by hash itself, pinned. Today the
//! Debian packages (name, version, architecture, sha256, size, pool file name);
//! recipes and remote patches join it with the spec front end.
//!
//! The file is pretty-printed JSON with entries sorted, so the same resolution always
//! writes the same bytes and a change shows up as a small diff.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub const LOCK_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LockFile {
    pub version: u32,
    /// Debian binary packages by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub debian: BTreeMap<String, DebianPackage>,
    /// Build roots by name: the packages their definition asks for, and the closure
    /// (all in `debian`) that resolving them gave.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub build_roots: BTreeMap<String, LockedBuildRoot>,
    /// Packages of a spec, by key (`pkgs/nginx` for an embedded package, the recipe
    /// id for the others).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub packages: BTreeMap<String, LockedPackage>,
}

/// What a spec's package needs pinned beyond its own files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LockedPackage {
    /// The recipe chosen (`CATEGORY/NAME-VERSION`).
    pub recipe: String,
    /// Debian build dependencies asked for (to notice a stale lock) …
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub build_requested: Vec<String>,
    /// … and their closure beyond the build root, sorted; each is in `debian`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub build_closure: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runtime_requested: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runtime_closure: Vec<String>,
    /// Remote patch URL → sha256 (hex), fetched once by `buildit lock`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub patches: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedBuildRoot {
    /// The definition's package list when it was locked (to notice a stale lock).
    pub requested: Vec<String>,
    /// Every package of the resolved closure, sorted; each has an entry in `debian`.
    pub packages: Vec<String>,
}

/// One exact Debian binary package: enough to fetch it from any mirror (or a local
/// directory) and check it, with the package lists gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebianPackage {
    pub version: String,
    pub architecture: String,
    /// Lowercase hex sha256 of the `.deb`.
    pub sha256: String,
    pub size: u64,
    /// Path below the archive root, e.g. `pool/main/h/hello/hello_2.10-3_amd64.deb`.
    pub filename: String,
}

impl DebianPackage {
    /// The `.deb`'s file name without directories.
    pub fn file_name(&self) -> &str {
        self.filename.rsplit('/').next().unwrap_or(&self.filename)
    }
}

#[derive(Debug, Error)]
pub enum LockError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a valid lock file: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("{path} has lock format version {found}; this buildit writes version {LOCK_VERSION}")]
    Version { path: String, found: u32 },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

impl Default for LockFile {
    fn default() -> Self {
        LockFile {
            version: LOCK_VERSION,
            debian: BTreeMap::new(),
            build_roots: BTreeMap::new(),
            packages: BTreeMap::new(),
        }
    }
}

impl LockFile {
    /// Read a lock file; a missing file is an empty lock.
    pub fn load(path: &Path) -> Result<LockFile, LockError> {
        let text = match crate::yaml::read_bounded(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LockFile::default()),
            Err(source) => {
                return Err(LockError::Read {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<LockFile, LockError> {
        let lock: LockFile = serde_json::from_str(text).map_err(|source| LockError::Parse {
            path: path.display().to_string(),
            source,
        })?;
        if lock.version != LOCK_VERSION {
            return Err(LockError::Version {
                path: path.display().to_string(),
                found: lock.version,
            });
        }
        Ok(lock)
    }

    pub fn to_text(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("lock file serialises");
        s.push('\n');
        s
    }

    /// Write atomically (temp file + rename), so a killed writer never leaves half a lock.
    pub fn save(&self, path: &Path) -> Result<(), LockError> {
        let err = |source| LockError::Write {
            path: path.display().to_string(),
            source,
        };
        let tmp = path.with_extension("lock.tmp");
        std::fs::write(&tmp, self.to_text()).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let mut lock = LockFile::default();
        lock.debian.insert(
            "hello".into(),
            DebianPackage {
                version: "2.10-3".into(),
                architecture: "amd64".into(),
                sha256: "ab".repeat(32),
                size: 53_000,
                filename: "pool/main/h/hello/hello_2.10-3_amd64.deb".into(),
            },
        );
        let text = lock.to_text();
        assert_eq!(LockFile::parse(&text, Path::new("x")).unwrap(), lock);
        assert_eq!(lock.debian["hello"].file_name(), "hello_2.10-3_amd64.deb");
        let bad = text.replace("\"version\": 1", "\"version\": 9");
        assert!(LockFile::parse(&bad, Path::new("x"))
            .unwrap_err()
            .to_string()
            .contains("version 9"));
        let unknown = text.replace("\"size\"", "\"sise\"");
        assert!(LockFile::parse(&unknown, Path::new("x")).is_err());
    }

    /// The lock file's types nest a few levels and refuse unknown fields, so
    /// deeper input is a type error at once; and serde_json would stop at 128
    /// levels anyway (buildit does not enable its `unbounded_depth`).
    #[test]
    fn deep_nesting_is_an_error() {
        for deep in [
            "[".repeat(1_000_000),
            format!("{{\"debian\": {}", "[".repeat(1_000_000)),
            format!("{{\"packages\": {{\"x\": {}", "{\"a\":".repeat(200_000)),
        ] {
            let e = LockFile::parse(&deep, Path::new("buildit.lock")).unwrap_err();
            let e = e.to_string();
            assert!(e.contains("at line 1 column"), "{e}");
        }
        let e = serde_json::from_str::<serde_json::Value>(&"[".repeat(1_000_000)).unwrap_err();
        assert!(e.to_string().contains("recursion limit exceeded"), "{e}");
    }

    #[test]
    fn oversized_lock_files_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("buildit.lock");
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(crate::yaml::MAX_FILE_BYTES + 1).unwrap();
        let e = LockFile::load(&p).unwrap_err().to_string();
        assert!(e.contains("larger than 8 MiB"), "{e}");
    }
}
