//! `buildit lock DIR` and `buildit eval DIR`: a spec directory checked, pinned and
//! lowered to derivations in the store.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use buildit_lang::lockfile::{LockFile, LockedPackage};
use buildit_lang::lower::plan::{debian_names, lower_spec, package_key, remote_patches, Plan};
use buildit_lang::model::trust::Untrusted;
use buildit_lang::model::{Config, Package, Spec};
use buildit_lang::resolve::{load_spec_with, ConfigChoice, LoadOptions};
use buildit_lang::yaml::SpecError;
use buildit_store::{LocalStore, StorePath};

use crate::debian::resolve::{resolve, DebRequest, ResolveError};
use crate::ops::debian::{lock_build_root, write_derivations};

pub const LOCK_FILE: &str = "buildit.lock";

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum SpecOpError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    Lock(#[from] buildit_lang::lockfile::LockError),
    #[error(transparent)]
    Build(#[from] crate::realise::BuildError),
    #[error("remote patch {url}: {reason}")]
    Patch { url: String, reason: String },
    #[error("{path} does not exist")]
    #[diagnostic(help("`buildit lock {dir}` writes it: it pins the recipes, remote patches and Debian packages of the spec"))]
    NoLock { path: String, dir: String },
    #[error("cannot find the current directory (to look for .buildit-config.yaml): {0}")]
    CurrentDir(#[source] std::io::Error),
}

/// The recipe repository shipped with buildit: `$BUILDIT_SAMPLE_RECIPES`, else the
/// one in the source tree buildit was built from.
pub fn sample_recipes() -> PathBuf {
    std::env::var_os("BUILDIT_SAMPLE_RECIPES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/recipes"))
}

/// A spec directory: one holding container.yaml. Operands that are not are store
/// paths, `.drv`s or files.
pub fn is_spec_dir(path: &Path) -> bool {
    path.join("container.yaml").is_file()
}

/// Hears of each configuration file passed over as untrusted (the caller says so
/// to the user: a spec may then fail for want of what the file said).
pub type Warn<'a> = &'a dyn Fn(&Untrusted);

pub fn load(dir: &Path, warn: Warn<'_>) -> Result<Spec, SpecError> {
    // One spelling of the directory, whatever the user typed (`s`, `./s/`, a symlink):
    // lock keys are paths relative to it.
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    // Found here rather than by the loader, so the warnings are out even when the
    // spec then fails (perhaps for want of what the ignored file said).
    let config = config_for(&dir, warn)?;
    load_spec_with(
        &dir,
        &LoadOptions {
            sample_recipes: sample_recipes(),
            config: ConfigChoice::Loaded(config.map(Box::new)),
        },
    )
}

/// The configuration that applies in `dir` ([`Config::discover`]); `warn` hears
/// of each file passed over as untrusted.
pub fn config_for(dir: &Path, warn: Warn<'_>) -> Result<Option<Config>, SpecError> {
    let (config, ignored) = Config::discover(dir)?;
    ignored.iter().for_each(warn);
    Ok(config)
}

/// The configuration that applies to a command given no spec directory: the one
/// of the current directory, its parents, then the user's.
pub fn config_here(warn: Warn<'_>) -> Result<Option<Config>, SpecOpError> {
    let dir = std::env::current_dir().map_err(SpecOpError::CurrentDir)?;
    Ok(config_for(&dir, warn)?)
}

/// The spec's own configuration, else [`config_here`].
pub fn config_or_here(spec: Option<Config>, warn: Warn<'_>) -> Result<Option<Config>, SpecOpError> {
    match spec {
        Some(c) => Ok(Some(c)),
        None => config_here(warn),
    }
}

/// The roots of a lowered spec: its own packages (those of `package:` steps), then
/// its images; dependencies are reached through them. What `realise DIR` builds
/// and links, and what `diff` pairs.
pub fn plan_roots(plan: &Plan) -> Vec<StorePath> {
    let packages = plan.packages.iter().filter(|p| p.direct);
    packages
        .map(|p| p.drv.clone())
        .chain(plan.images.iter().map(|i| i.drv.clone()))
        .collect()
}

/// Every derivation the plan names (dependencies too), then its images: what a
/// push of the spec starts from.
pub fn plan_derivations(plan: &Plan) -> Vec<StorePath> {
    let packages = plan.packages.iter().map(|p| p.drv.clone());
    packages
        .chain(plan.images.iter().map(|i| i.drv.clone()))
        .collect()
}

fn all_packages(spec: &Spec) -> Vec<&Package> {
    spec.packages().chain(spec.dependencies.values()).collect()
}

fn requests(names: impl IntoIterator<Item = String>) -> Result<Vec<DebRequest>, ResolveError> {
    names.into_iter().map(|n| n.parse()).collect()
}

/// Pin what the spec does not pin itself. Entries that are current are kept unless
/// `update`; returns one line per change.
pub fn lock(
    spec: &Spec,
    lock: &mut LockFile,
    update: bool,
    store: &LocalStore,
    progress: &dyn Fn(&str),
) -> Result<Vec<String>, SpecOpError> {
    let mut changes = Vec::new();
    for root in spec.build_roots.values() {
        let current = lock
            .build_roots
            .get(&root.def.name)
            .is_some_and(|l| l.requested == root.def.packages);
        if update || !current {
            progress(&format!("resolving build root {}", root.def.name));
            let names = lock_build_root(&root.def, lock)?;
            changes.push(format!(
                "build root {}: {} packages",
                root.def.name,
                names.len()
            ));
        }
    }
    for p in all_packages(spec) {
        let key = package_key(spec, p);
        let build_req = debian_names(&p.build_depends);
        let runtime_req = debian_names(&p.runtime_depends);
        let old = lock.packages.get(&key).cloned().unwrap_or_default();
        let current = old.recipe == p.id.to_string()
            && old.build_requested == build_req
            && old.runtime_requested == runtime_req;
        let mut entry = old.clone();
        if update || !current {
            progress(&format!("resolving Debian packages of {key}"));
            entry = LockedPackage {
                recipe: p.id.to_string(),
                build_requested: build_req.clone(),
                runtime_requested: runtime_req.clone(),
                ..Default::default()
            };
            if !build_req.is_empty() {
                // Resolved together with the build root, so versions agree with it;
                // the root's own packages are not repeated.
                let root = &lock.build_roots[&p.build_root.value];
                let in_root: BTreeSet<&String> = root.packages.iter().collect();
                let mut want = root.requested.clone();
                want.extend(build_req.iter().cloned());
                let resolved = resolve(&requests(want)?)?;
                for (name, pkg) in resolved {
                    if !in_root.contains(&name) {
                        entry.build_closure.push(name.clone());
                        lock.debian.insert(name, pkg);
                    }
                }
            }
            if !runtime_req.is_empty() {
                for (name, pkg) in resolve(&requests(runtime_req.clone())?)? {
                    entry.runtime_closure.push(name.clone());
                    lock.debian.insert(name, pkg);
                }
            }
            entry.build_closure.sort();
            entry.runtime_closure.sort();
        }
        entry
            .patches
            .retain(|url, _| remote_patches(p).iter().any(|u| u.value == *url));
        for url in remote_patches(p) {
            if update || !entry.patches.contains_key(url.value.as_str()) {
                progress(&format!("fetching {}", url.value));
                let sha = crate::fetch::fetch_unpinned(store, &url.value).map_err(|reason| {
                    SpecOpError::Patch {
                        url: url.value.clone(),
                        reason,
                    }
                })?;
                entry.patches.insert(url.value.clone(), sha);
            }
        }
        if entry != old {
            changes.push(format!("package {key}: {}", entry.recipe));
            lock.packages.insert(key, entry);
        }
    }
    Ok(changes)
}

/// The lock beside the spec; a missing one is an error that says how to make it.
pub fn load_lock(spec: &Spec) -> Result<(LockFile, PathBuf), SpecOpError> {
    let path = spec.dir.join(LOCK_FILE);
    if !path.exists() {
        return Err(SpecOpError::NoLock {
            path: path.display().to_string(),
            dir: spec.dir.display().to_string(),
        });
    }
    Ok((LockFile::load(&path)?, path))
}

/// Lower the spec and write every derivation into the store.
pub fn eval(spec: &Spec, store: &LocalStore) -> Result<Plan, SpecOpError> {
    let (lock, _) = load_lock(spec)?;
    let plan = lower_spec(spec, &lock, LOCK_FILE, store)?;
    write_derivations(store, &plan.set)?;
    Ok(plan)
}
