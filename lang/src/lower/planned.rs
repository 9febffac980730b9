//! What lowering a spec gives: the derivations and what each package and image
//! became. Shared by `plan` (which lowers packages) and `image` (which lowers the
//! image steps over those packages), so that neither imports the other's types.

use std::collections::BTreeMap;

use buildit_store::StorePath;

use crate::lower::debian::DrvSet;
use crate::model::container::ImageFormat;
use crate::model::RecipeId;

/// One lowered package of the container (or a recipe it depends on).
#[derive(Debug, Clone)]
pub struct PlannedPackage {
    pub key: String,
    pub id: RecipeId,
    pub version: String,
    pub options: Vec<String>,
    pub drv: StorePath,
    pub out: StorePath,
    /// A package step of container.yaml (false: reached as a dependency).
    pub direct: bool,
}

/// One image of the plan.
#[derive(Debug, Clone)]
pub struct PlannedImage {
    pub format: ImageFormat,
    /// `author/name-version`, for messages.
    pub title: String,
    pub drv: StorePath,
    pub out: StorePath,
}

/// A spec lowered: every derivation (inputs first) and what each package became.
pub struct Plan {
    pub set: DrvSet,
    pub packages: Vec<PlannedPackage>,
    /// Build root name → its `.drv`.
    pub build_roots: BTreeMap<String, StorePath>,
    /// One per `image` step, in order.
    pub images: Vec<PlannedImage>,
}
