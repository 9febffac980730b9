//! Checking the store against its database.

use std::fmt;

use serde::Serialize;

use crate::{nar, Hash, HashAlgo, StorePath};

use super::{LocalStore, StoreError};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum VerifyProblem {
    /// Registered as valid but absent on disk.
    Missing { path: StorePath },
    /// Contents do not hash to what was registered.
    HashMismatch {
        path: StorePath,
        expected: Hash,
        actual: Hash,
    },
    SizeMismatch {
        path: StorePath,
        expected: u64,
        actual: u64,
    },
    /// The path could not be read or serialised (e.g. a device node appeared in it).
    Unreadable { path: StorePath, error: String },
    /// On disk in the store directory but not registered.
    Unregistered { name: String },
}

impl fmt::Display for VerifyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing { path } => write!(f, "{path}: registered but missing on disk"),
            Self::HashMismatch {
                path,
                expected,
                actual,
            } => write!(
                f,
                "{path}: contents changed (NAR hash {actual}, registered {expected})"
            ),
            Self::SizeMismatch {
                path,
                expected,
                actual,
            } => write!(
                f,
                "{path}: contents changed (NAR size {actual}, registered {expected})"
            ),
            Self::Unreadable { path, error } => write!(f, "{path}: cannot be read: {error}"),
            Self::Unregistered { name } => {
                write!(
                    f,
                    "{name}: present in the store directory but not registered"
                )
            }
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    pub checked: usize,
    pub problems: Vec<VerifyProblem>,
}

impl LocalStore {
    /// Check that every valid path exists and, with `check_contents`, that it still
    /// hashes to its registered NAR hash and size. Unregistered entries in the store
    /// directory are reported too (unless their writer is still at work).
    pub fn verify(&self, check_contents: bool) -> Result<VerifyReport, StoreError> {
        let mut report = VerifyReport::default();
        for path in self.valid_paths()? {
            report.checked += 1;
            let phys = self.physical_path(&path);
            if phys.symlink_metadata().is_err() {
                report.problems.push(VerifyProblem::Missing { path });
                continue;
            }
            if !check_contents {
                continue;
            }
            let info = self.require_info(&path)?;
            match nar::hash_path(&phys, HashAlgo::Sha256) {
                Ok((hash, size)) => {
                    if hash != info.nar_hash {
                        report.problems.push(VerifyProblem::HashMismatch {
                            path,
                            expected: info.nar_hash,
                            actual: hash,
                        });
                    } else if size != info.nar_size {
                        report.problems.push(VerifyProblem::SizeMismatch {
                            path,
                            expected: info.nar_size,
                            actual: size,
                        });
                    }
                }
                Err(e) => report.problems.push(VerifyProblem::Unreadable {
                    path,
                    error: e.to_string(),
                }),
            }
        }
        for name in self.invalid_on_disk()? {
            if let Ok(p) = StorePath::from_base_name(&name) {
                if self.try_lock_path(&p)?.is_none() {
                    continue; // being added right now
                }
            }
            report.problems.push(VerifyProblem::Unregistered { name });
        }
        Ok(report)
    }
}
