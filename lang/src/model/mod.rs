//! The user's spec: `container.yaml` (steps), the `pkg.yaml` of each embedded package,
//! the recipes they are based on (found in the recipe repository), and
//! `.buildit-config.yaml`. [`crate::resolve::load_spec`] reads and checks all of them and returns a
//! [`Spec`] in which every string is rendered, every package's recipe, options,
//! patches and dependencies are resolved, and every value that a later stage may still
//! have to complain about keeps where it was written ([`Loc`]).
//!
//! Nothing here builds, fetches or writes anything.

pub mod build_root;
pub mod config;
pub mod container;
pub mod inputs;
pub mod package;
pub mod recipe;
pub mod template;
pub mod trust;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::model::build_root::BuildRootDef;
use crate::yaml::SourceFile;

pub use crate::yaml::{Loc, Located, Pairs};
pub use config::Config;
pub use container::{ImageStep, SyncStep, Var};
pub use inputs::input_roots;
pub use package::{Patch, PatchSource, PkgFile, UseFlags};
pub use recipe::{DepSpec, Recipe, RecipeId, SourceSpec};

/// A dependency after resolution.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dependency {
    /// `debian:NAME`: a Debian binary package, pinned in `buildit.lock`.
    Debian(String),
    /// A recipe at an exact version; its build is `Spec::dependencies[id]`.
    Recipe(RecipeId),
}

impl fmt::Display for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dependency::Debian(n) => write!(f, "debian:{n}"),
            Dependency::Recipe(id) => id.fmt(f),
        }
    }
}

/// One package to build: a recipe with the options, patches and overrides that apply.
#[derive(Clone, Debug)]
pub struct Package {
    /// The `package:` step, or the dependency that first asked for this recipe.
    pub loc: Loc,
    pub origin: PackageOrigin,
    /// The recipe's identity (category, name and the recipe's version).
    pub id: RecipeId,
    pub recipe: Arc<Recipe>,
    pub recipe_path: PathBuf,
    /// Enabled build options: the recipe's defaults, then `use: with/without`.
    pub options: BTreeSet<String>,
    /// The version built: the recipe's, or pkg.yaml's `version:` override.
    pub version: Located<String>,
    /// What is fetched: the recipe's sources, or pkg.yaml's `source:` override.
    pub sources: Vec<SourceSpec>,
    /// pkg.yaml's patches, in the order written (applied in that order).
    pub patches: Vec<Patch>,
    /// The recipe's, then each enabled option's (recipe order), then pkg.yaml's.
    pub configure_flags: Vec<Located<String>>,
    /// Recipe + enabled options + pkg.yaml (which replaces an entry for the same
    /// recipe name), each once, in that order.
    pub build_depends: Vec<Located<Dependency>>,
    pub runtime_depends: Vec<Located<Dependency>>,
    /// The recipe's env, then enabled options' (recipe order), then pkg.yaml's; a
    /// later one wins.
    pub env: BTreeMap<String, Located<String>>,
    /// Name of the build root (`Spec::build_roots[name]`), from the recipe.
    pub build_root: Located<String>,
}

#[derive(Clone, Debug)]
pub enum PackageOrigin {
    /// `package: {type: embedded, path: ...}`: a directory with a pkg.yaml.
    Embedded { dir: PathBuf, pkg: Box<PkgFile> },
    /// `package: {recipe: CATEGORY/NAME[-VERSION]}`.
    Recipe { reference: Located<String> },
    /// Reached through another package's build- or runtime-depends (default options).
    Dependency,
}

/// A build root named by a recipe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildRoot {
    pub path: PathBuf,
    pub def: BuildRootDef,
}

/// One step of container.yaml, in file order, with its strings rendered.
#[derive(Clone, Debug)]
pub enum Step {
    Vars(Vec<Var>),
    Package(Box<Package>),
    Sync(SyncStep),
    Image(ImageStep),
}

/// A checked spec directory.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The spec directory, absolute.
    pub dir: PathBuf,
    /// container.yaml.
    pub file: Arc<SourceFile>,
    /// Every var after the last `vars` step (rendered values).
    pub vars: BTreeMap<String, String>,
    pub steps: Vec<Step>,
    /// Recipes reached through dependencies (transitively), with default options.
    pub dependencies: BTreeMap<RecipeId, Package>,
    /// Build roots named by any package above, by name.
    pub build_roots: BTreeMap<String, BuildRoot>,
    /// The configuration in effect, if one was found (it knows its path).
    pub config: Option<Config>,
    /// Configuration files passed over because they are not trusted; the caller
    /// warns about each.
    pub untrusted_configs: Vec<trust::Untrusted>,
}

impl Spec {
    /// The container's own packages (the `package:` steps), in order.
    pub fn packages(&self) -> impl Iterator<Item = &Package> {
        self.steps.iter().filter_map(|s| match s {
            Step::Package(p) => Some(&**p),
            _ => None,
        })
    }

    pub fn syncs(&self) -> impl Iterator<Item = &SyncStep> {
        self.steps.iter().filter_map(|s| match s {
            Step::Sync(s) => Some(s),
            _ => None,
        })
    }

    pub fn images(&self) -> impl Iterator<Item = &ImageStep> {
        self.steps.iter().filter_map(|s| match s {
            Step::Image(i) => Some(i),
            _ => None,
        })
    }
}
