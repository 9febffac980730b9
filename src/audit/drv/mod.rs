//! `buildit diff` for derivations: two derivation graphs (two `.drv`s, two spec
//! directories, two lock files) walked together, and the difference explained by its
//! causes ("option http2 turned on in nginx", "Debian package libssl3 3.0.15-1~deb12u1
//! → 3.0.16-1~deb12u1") rather than by its symptoms (every path above them changed).
//! The derivations that changed only because an input did follow, one line each.
//!
//! Causes are typed ([`Reason`], after cargo's `DirtyReason`) so that `--json` and
//! tests see the same thing people read.

mod lockfile;
mod reason;
mod render;
mod walk;

#[cfg(test)]
mod tests;

use buildit_store::{LocalStore, StoreError, StorePath};
use serde::Serialize;

pub use lockfile::diff_locks;
pub use reason::Reason;

/// A derivation that changed only because some of its inputs did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Consequence {
    /// The derivation's name (without `.drv`), e.g. `nginx-1.22.1`.
    pub name: String,
    pub old: StorePath,
    pub new: StorePath,
    /// Names of the inputs that changed (the new side's), e.g. `openssl-3.0.16`.
    pub because: Vec<String>,
}

/// Why two derivation graphs differ. `Display` is the report for people.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
pub struct DrvDiff {
    /// Each cause once, sources and patches first, then options, phases and
    /// variables, Debian packages, build roots, dependencies, images.
    pub causes: Vec<Reason>,
    /// Inputs before the derivations that use them.
    pub consequences: Vec<Consequence>,
    /// Derivations met on both sides with the same path (for a lock diff: entries
    /// that are the same).
    pub unchanged: usize,
    /// Made from lock files: `unchanged` counts lock entries.
    #[serde(skip)]
    from_locks: bool,
}

impl DrvDiff {
    pub fn is_empty(&self) -> bool {
        self.causes.is_empty() && self.consequences.is_empty()
    }

    fn sort(&mut self) {
        // Stable: within a rank, the order of the walk (roots in the order given).
        self.causes.sort_by_key(Reason::rank);
    }
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum DrvDiffError {
    #[error("cannot read derivation {path}: {source}")]
    Read {
        path: StorePath,
        #[source]
        source: StoreError,
    },
}

/// Explain how the graphs below roots `a` and `b` (`.drv` paths in `store`) differ.
/// Roots pair by what they are (package name, image title and format, …), not by
/// position; a root on one side only is a [`Reason::RootAdded`] or
/// [`Reason::RootRemoved`].
pub fn diff_derivations(
    store: &LocalStore,
    a: &[StorePath],
    b: &[StorePath],
) -> Result<DrvDiff, DrvDiffError> {
    let mut w = walk::Walker::new(store);
    w.roots(a, b)?;
    let mut d = DrvDiff {
        unchanged: w.unchanged.len(),
        causes: std::mem::take(&mut w.causes),
        consequences: std::mem::take(&mut w.consequences),
        from_locks: false,
    };
    d.sort();
    Ok(d)
}
