//! Debian operations behind `buildit debian …`: lock a build root's closure, fetch
//! locked `.deb`s, build a build root.

use std::path::{Path, PathBuf};

use buildit_lang::lockfile::{DebianPackage, LockFile, LockedBuildRoot};
use buildit_lang::lower::debian::{lower_build_root, lower_package, DrvSet};
use buildit_lang::model::build_root::BuildRootDef;
use buildit_store::{LocalStore, StorePath};

use crate::debian::resolve::{resolve, DebRequest, ResolveError};
use crate::fetch::Fetcher;
use crate::realise::{BuildError, Realiser, Report};

/// Where `.deb`s may come from besides the mirrors.
#[derive(Debug, Clone, Default)]
pub struct FetchOptions {
    pub deb_dirs: Vec<PathBuf>,
    pub offline: bool,
    pub jobs: usize,
}

impl FetchOptions {
    pub fn fetcher(&self) -> Fetcher {
        let mut f = Fetcher::from_host();
        // The user's directories come before apt's cache.
        let mut dirs = self.deb_dirs.clone();
        dirs.append(&mut f.local_dirs);
        f.local_dirs = dirs;
        f.offline = self.offline;
        f
    }
}

/// Resolve a build root's packages and record the closure in the lock (replacing
/// that build root's previous entry; other packages stay).
pub fn lock_build_root(
    def: &BuildRootDef,
    lock: &mut LockFile,
) -> Result<Vec<String>, ResolveError> {
    let requests = def
        .packages
        .iter()
        .map(|p| p.parse::<DebRequest>())
        .collect::<Result<Vec<_>, _>>()?;
    let resolved = resolve(&requests)?;
    let mut names = Vec::new();
    for (name, pkg) in resolved {
        names.push(name.clone());
        lock.debian.insert(name, pkg);
    }
    names.sort();
    lock.build_roots.insert(
        def.name.clone(),
        LockedBuildRoot {
            requested: def.packages.clone(),
            packages: names.clone(),
        },
    );
    Ok(names)
}

/// Write every derivation of `set` into the store, inputs first; returns their paths.
pub fn write_derivations(store: &LocalStore, set: &DrvSet) -> Result<Vec<StorePath>, BuildError> {
    let mut out = Vec::new();
    for (path, drv) in set.in_order() {
        let written = store.add_derivation(drv)?;
        debug_assert_eq!(&written, path);
        out.push(written);
    }
    Ok(out)
}

fn realise(
    store: &LocalStore,
    opts: &FetchOptions,
    targets: &[StorePath],
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Report, BuildError> {
    let fetcher = opts.fetcher();
    let lines = crate::realise::events::Lines(progress);
    let r = Realiser {
        store,
        fetcher: &fetcher,
        caches: &[],
        options: crate::realise::Options {
            jobs: opts.jobs.max(1),
            keep_going: true,
            ..Default::default()
        },
        progress: &lines,
    };
    let report = r.realise(targets)?;
    if !report.ok() {
        return Err(BuildError::Several {
            count: report.failed.len() + report.skipped.len() + report.cancelled.len(),
        });
    }
    Ok(report)
}

fn not_locked(name: &str) -> BuildError {
    BuildError::Invalid(format!(
        "package '{name}' is not in the lock file; run `buildit debian lock {name}` first"
    ))
}

/// The locked packages named (all of them when `names` is empty).
fn locked<'a>(
    lock: &'a LockFile,
    names: &'a [String],
) -> Result<Vec<(&'a String, &'a DebianPackage)>, BuildError> {
    if names.is_empty() {
        return Ok(lock.debian.iter().collect());
    }
    names
        .iter()
        .map(|n| {
            lock.debian
                .get(n)
                .map(|p| (n, p))
                .ok_or_else(|| not_locked(n))
        })
        .collect()
}

/// Write `set`, realise the named `.drv`s, and return each name with its output.
fn realise_named(
    store: &LocalStore,
    opts: &FetchOptions,
    set: &DrvSet,
    targets: Vec<(String, StorePath)>,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Vec<(String, StorePath)>, BuildError> {
    write_derivations(store, set)?;
    let drvs: Vec<StorePath> = targets.iter().map(|(_, p)| p.clone()).collect();
    realise(store, opts, &drvs, progress)?;
    Ok(targets
        .into_iter()
        .map(|(n, p)| (n, set.out(&p).cloned().expect("lowered with an out")))
        .collect())
}

/// Fetch the locked `.deb`s named (all when `names` is empty) into the store.
pub fn fetch(
    store: &LocalStore,
    lock: &LockFile,
    names: &[String],
    opts: &FetchOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Vec<(String, StorePath)>, BuildError> {
    let mut set = DrvSet::default();
    let mut targets = Vec::new();
    for (name, pkg) in locked(lock, names)? {
        let drv = buildit_lang::lower::debian::fetch_deb(pkg)
            .map_err(|m| BuildError::Invalid(format!("{name}: {m}")))?;
        let p = set
            .add(drv)
            .map_err(|e| BuildError::Invalid(e.to_string()))?;
        targets.push((name.clone(), p));
    }
    realise_named(store, opts, &set, targets, progress)
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum BuildRootError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Spec(#[from] buildit_lang::yaml::SpecError),
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// Lower, write and realise the build root of `def` from `lock`.
pub fn build_root(
    store: &LocalStore,
    def: &BuildRootDef,
    lock: &LockFile,
    lock_name: &Path,
    opts: &FetchOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(StorePath, Report), BuildRootError> {
    let mut set = DrvSet::default();
    let root = lower_build_root(&mut set, def, lock, &lock_name.display().to_string())?;
    write_derivations(store, &set)?;
    let report = realise(store, opts, std::slice::from_ref(&root), progress)?;
    let out = set.out(&root).cloned().expect("build root has out");
    Ok((out, report))
}

/// The unpacked trees of single packages (no build root), for inspection.
pub fn unpack(
    store: &LocalStore,
    lock: &LockFile,
    names: &[String],
    opts: &FetchOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Vec<(String, StorePath)>, BuildError> {
    let mut set = DrvSet::default();
    let mut targets = Vec::new();
    for (name, pkg) in locked(lock, names)? {
        let drv = lower_package(&mut set, name, pkg).map_err(BuildError::Invalid)?;
        targets.push((name.clone(), drv));
    }
    realise_named(store, opts, &set, targets, progress)
}
