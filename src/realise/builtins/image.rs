//! `builtin:image`; the note gives the image's ID.

use buildit_store::builtins::image::Format;
use buildit_store::builtins::Image;
use buildit_store::{Derivation, StorePath};

use super::{failed, Builtin};
use crate::realise::sandboxed::Built;
use crate::realise::{BuildError, Realiser};

impl Builtin for Image {
    fn build(
        &self,
        r: &Realiser<'_>,
        drv_path: &StorePath,
        drv: &Derivation,
        check: bool,
    ) -> Result<Built, BuildError> {
        r.make_tree(drv_path, drv, check, |tmp| {
            let scratch = r.store.temp_tree()?;
            let summary = crate::image::build::build_image(r.store, self, tmp, scratch.path())
                .map_err(|e| failed(drv_path, e.to_string()))?;
            let id = match self.format {
                Format::Aci { .. } => format!("image ID {}", summary.id),
                Format::Oci { .. } => format!("manifest {}", summary.id),
            };
            Ok(Some(match summary.merged {
                0 => id,
                n => format!(
                    "{id}; {} layers after merging the smallest neighbours {n} time(s) to stay within max-layers (no file dropped)",
                    summary.layers
                ),
            }))
        })
    }
}
