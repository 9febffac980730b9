//! `buildit image …`: looking into images buildit wrote.

use std::path::Path;

pub use crate::image::inspect::{ImageInfo, LayerInfo};
pub use crate::image::layout::LayoutError;

#[derive(Debug, Clone, Copy, Default)]
pub struct InspectOptions {
    /// List every file of every layer, not only the layers.
    pub files: bool,
}

/// The images at `path` (an image output, an OCI layout directory, an
/// `oci-archive` or an `.aci` file), layer by layer.
pub fn inspect(path: &Path, options: InspectOptions) -> Result<Vec<ImageInfo>, LayoutError> {
    crate::image::inspect::inspect(path, options.files)
}
