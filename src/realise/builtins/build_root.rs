//! `builtin:buildroot`: the members' trees merged in order, then the fix-ups.

use std::path::PathBuf;

use buildit_store::builtins::BuildRoot;
use buildit_store::{Derivation, StorePath};

use super::{failed, Builtin};
use crate::realise::buildroot;
use crate::realise::sandboxed::Built;
use crate::realise::{BuildError, Realiser};

impl Builtin for BuildRoot {
    fn build(
        &self,
        r: &Realiser<'_>,
        drv_path: &StorePath,
        drv: &Derivation,
        check: bool,
    ) -> Result<Built, BuildError> {
        r.make_tree(drv_path, drv, check, |tmp| {
            let members: Vec<(String, PathBuf)> = self
                .members
                .iter()
                .map(|p| (p.name().to_string(), r.store.physical_path(p)))
                .collect();
            let failed = |e: buildroot::MergeError| failed(drv_path, e.to_string());
            buildroot::merge_trees(&members, tmp).map_err(failed)?;
            buildroot::apply_fixups(tmp, &self.fixups).map_err(failed)?;
            Ok(None)
        })
    }
}
