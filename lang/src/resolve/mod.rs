//! Resolving a spec directory: [`load_spec`] reads `container.yaml` and
//! `.buildit-config.yaml`, finds every package's recipe in the [`Repository`] (and the
//! recipes they depend on, transitively) and the build roots they name, and returns
//! the checked [`Spec`].
//!
//! Nothing here builds, fetches or writes anything.

pub mod repository;
mod resolver;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::model::inputs::{input_roots, outside_help};
use crate::model::{container, Config, Package, Spec, Step};
use crate::yaml::{short, Loc, SourceFile, SpecError};
use resolver::Resolver;

pub use repository::Repository;

/// Which configuration file [`load_spec_with`] uses.
#[derive(Clone, Debug)]
pub enum ConfigChoice {
    /// Look for it as [`crate::model::config::find_config`] documents; the untrusted files passed
    /// over are in [`Spec::untrusted_configs`].
    Discover,
    /// This file (it must exist).
    File(PathBuf),
    /// One the caller has found and loaded already (or none).
    Loaded(Option<Box<Config>>),
    /// None at all.
    Nothing,
}

#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// The recipe repository shipped with buildit, searched last.
    pub sample_recipes: PathBuf,
    pub config: ConfigChoice,
}

/// Read and check the spec in `dir` (its `container.yaml` and everything that names),
/// with the configuration found by [`crate::model::config::find_config`].
pub fn load_spec(dir: &Path, sample_recipes: &Path) -> Result<Spec, SpecError> {
    load_spec_with(
        dir,
        &LoadOptions {
            sample_recipes: sample_recipes.to_path_buf(),
            config: ConfigChoice::Discover,
        },
    )
}

pub fn load_spec_with(dir: &Path, options: &LoadOptions) -> Result<Spec, SpecError> {
    let container_path = dir.join("container.yaml");
    if !container_path.is_file() {
        return Err(SpecError::File {
            path: dir.display().to_string(),
            message: "there is no container.yaml in this directory".into(),
            help: Some(
                "a spec directory holds container.yaml (a list of vars, package, sync and image steps) and the files it names".into(),
            ),
        });
    }
    let (config, untrusted_configs) = match &options.config {
        ConfigChoice::Discover => Config::discover(dir)?,
        ConfigChoice::File(p) => (Some(Config::load(p)?), Vec::new()),
        ConfigChoice::Loaded(c) => (c.as_deref().cloned(), Vec::new()),
        ConfigChoice::Nothing => (None, Vec::new()),
    };
    let repository = Repository::for_spec(dir, config.as_ref(), &options.sample_recipes);
    let inputs = input_roots(dir, config.as_ref());
    let container_real = inputs
        .resolve(dir, Path::new("container.yaml"))
        .map_err(|e| SpecError::File {
            path: container_path.display().to_string(),
            message: format!("container.yaml cannot be read: {e}"),
            help: Some(outside_help(&inputs)),
        })?;
    let file = Arc::new(SourceFile::read_as(&container_real, container_path)?);
    let parsed = container::parse(file.clone(), dir, &inputs)?;

    let mut resolver = Resolver {
        repo: &repository,
        inputs: &inputs,
        spec_dir: dir,
        recipes: BTreeMap::new(),
        dependencies: BTreeMap::new(),
        build_roots: BTreeMap::new(),
    };
    let mut steps = Vec::new();
    // Resolved identity of each package step → where it was and how it was written,
    // to report duplicates.
    let mut seen: BTreeMap<String, (Loc, String)> = BTreeMap::new();
    for step in parsed.steps {
        steps.push(match step {
            container::ContainerStep::Vars(v) => Step::Vars(v),
            container::ContainerStep::Sync(s) => Step::Sync(s),
            container::ContainerStep::Image(i) => Step::Image(i),
            container::ContainerStep::Package(p) => {
                let (key, pkg) = resolver.package_step(&p)?;
                let written = match &p.source {
                    container::PackageSource::Embedded { path, .. } => path.value.clone(),
                    container::PackageSource::Recipe { reference, .. } => reference.value.clone(),
                };
                if let Some((first, first_written)) = seen.get(&key) {
                    let same = if *first_written == written {
                        String::new()
                    } else {
                        format!(" ('{}', the same package)", short(first_written))
                    };
                    return Err(p.loc.error(
                        format!("the package '{}' is already in this container", short(&written)),
                        Some(format!(
                            "the package step on line {}{same} builds it too; a container holds each package once (merge the two steps)",
                            first.line
                        )),
                    ));
                }
                seen.insert(key, (p.loc.clone(), written));
                Step::Package(Box::new(pkg))
            }
        });
    }
    for step in &steps {
        if let Step::Package(p) = step {
            resolver.dependencies_of(p)?;
            resolver.build_root(p)?;
        }
    }
    let deps: Vec<Package> = resolver.dependencies.values().cloned().collect();
    for p in &deps {
        resolver.build_root(p)?;
    }
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    Ok(Spec {
        dir,
        file,
        vars: parsed.vars,
        steps,
        dependencies: resolver.dependencies,
        build_roots: resolver.build_roots,
        config,
        untrusted_configs,
    })
}
