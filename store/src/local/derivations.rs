//! Derivations in the store: `.drv` files are text paths whose references are their
//! inputs; the store also records which outputs each one declares.

use std::collections::BTreeSet;

use crate::derivation::{Derivation, DerivationError};
use crate::StorePath;

use super::{LocalStore, StoreError};

impl From<DerivationError> for StoreError {
    fn from(e: DerivationError) -> Self {
        StoreError::Invalid(e.to_string())
    }
}

impl LocalStore {
    /// Write a derivation (whose output paths are filled in) into the store as
    /// `<name>.drv`. Its inputs must already be valid. Returns the `.drv` path,
    /// which is the same on every machine for the same derivation.
    pub fn add_derivation(&self, drv: &Derivation) -> Result<StorePath, StoreError> {
        let aterm = drv
            .to_aterm()
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let name = format!("{}.drv", drv.name()?);
        let refs: BTreeSet<StorePath> = drv
            .input_srcs
            .iter()
            .chain(drv.input_drvs.keys())
            .cloned()
            .collect();
        let outputs: Vec<(String, StorePath)> = drv
            .outputs
            .iter()
            .filter_map(|(id, o)| Some((id.clone(), o.path()?.clone())))
            .collect();
        let path = self.add_text_with_outputs(&name, aterm.as_bytes(), &refs, &outputs)?;
        debug_assert_eq!(Some(&path), drv.drv_path().ok().as_ref());
        Ok(path)
    }

    /// Read and parse a valid `.drv` from the store.
    pub fn read_derivation(&self, path: &StorePath) -> Result<Derivation, StoreError> {
        if !path.is_derivation() {
            return Err(StoreError::Invalid(format!(
                "{path} is not a derivation (a .drv store path)"
            )));
        }
        if !self.is_valid(path)? {
            return Err(StoreError::NotValid(path.clone()));
        }
        let file = self.physical_path(path);
        let bytes = std::fs::read(&file).map_err(|e| StoreError::io(&file, e))?;
        Derivation::from_aterm(&bytes).map_err(|e| StoreError::Corrupt(format!("{path}: {e}")))
    }
}
