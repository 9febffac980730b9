//! `builtin:unpack-deb`: a fetched `.deb`'s file tree.

use buildit_store::builtins::UnpackDeb;
use buildit_store::{Derivation, StorePath};

use super::{failed, Builtin};
use crate::realise::sandboxed::Built;
use crate::realise::{BuildError, Realiser};

impl Builtin for UnpackDeb {
    fn build(
        &self,
        r: &Realiser<'_>,
        drv_path: &StorePath,
        drv: &Derivation,
        check: bool,
    ) -> Result<Built, BuildError> {
        r.make_tree(drv_path, drv, check, |tmp| {
            if !r.store.is_valid(&self.deb)? {
                return Err(failed(drv_path, format!("input {} is not valid", self.deb)));
            }
            crate::debian::deb::unpack_deb(&r.store.physical_path(&self.deb), tmp)
                .map_err(|e| failed(drv_path, e.to_string()))?;
            Ok(None)
        })
    }
}
