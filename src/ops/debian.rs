//! Debian operations behind `buildit debian …`: resolve and show packages, lock
//! closures (and prune the lock), fetch locked `.deb`s, build a build root.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use buildit_lang::lockfile::{DebianPackage, LockError, LockFile, LockedBuildRoot};
use buildit_lang::lower::debian::{lower_build_root, lower_package, DrvSet};
use buildit_lang::model::build_root::BuildRootDef;
use buildit_store::{LocalStore, StorePath};

use crate::debian::resolve::{resolve, DebRequest, PackageStanza, ResolveError};
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

fn parse_requests(packages: &[String]) -> Result<Vec<DebRequest>, ResolveError> {
    packages.iter().map(|p| p.parse::<DebRequest>()).collect()
}

/// The exact closure apt would install on an empty system for `packages`
/// (`NAME`, `NAME=VERSION`, `NAME:ARCH`, optionally prefixed `debian:`), by name.
pub fn resolve_names(packages: &[String]) -> Result<Vec<(String, DebianPackage)>, ResolveError> {
    resolve(&parse_requests(packages)?)
}

/// Every version apt knows of `package` (`NAME` or `NAME:ARCH`).
pub fn show(package: &str) -> Result<Vec<PackageStanza>, ResolveError> {
    crate::debian::resolve::show(package)
}

/// `buildit debian lock`: what to resolve and where to record it.
#[derive(Debug, Clone)]
pub struct LockRequest {
    pub packages: Vec<String>,
    /// Build-root definitions whose packages are locked too, with their closure.
    pub build_roots: Vec<PathBuf>,
    /// The lock file (created if missing).
    pub lock: PathBuf,
    /// Drop locked packages that neither this closure nor a locked build root needs.
    pub update: bool,
}

#[derive(Debug)]
pub struct LockOutcome {
    /// The differences in the `debian` section, by name.
    pub changes: Vec<Change>,
    /// Packages resolved now that were already locked exactly so.
    pub unchanged: usize,
    /// The file was written (else it was up to date).
    pub written: bool,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum LockDebianError {
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    BuildRoot(#[from] buildit_lang::yaml::SpecError),
    #[error(transparent)]
    Lock(#[from] LockError),
}

/// Resolve the packages (and build roots) of `request` and record their closure
/// in the lock file, written only when it changes.
pub fn lock_debian(request: &LockRequest) -> Result<LockOutcome, LockDebianError> {
    let requests = parse_requests(&request.packages)?;
    let defs = request
        .build_roots
        .iter()
        .map(|f| BuildRootDef::load(f))
        .collect::<Result<Vec<_>, _>>()?;
    // Read the lock before apt runs: a broken lock file fails fast.
    let mut lock = LockFile::load(&request.lock)?;
    let old = lock.debian.clone();
    let mut resolved: BTreeSet<String> = BTreeSet::new();
    for def in &defs {
        resolved.extend(lock_build_root(def, &mut lock)?);
    }
    if !requests.is_empty() {
        for (name, pkg) in resolve(&requests)? {
            resolved.insert(name.clone());
            lock.debian.insert(name, pkg);
        }
    }
    if request.update {
        prune(&mut lock, &resolved);
    }
    let (changes, unchanged) = diff(&old, &lock.debian, &resolved);
    // Unreadable counts as different: the write then says why.
    let before = std::fs::read(&request.lock).ok();
    let written = before.as_deref() != Some(lock.to_text().as_bytes());
    if written {
        lock.save(&request.lock)?;
    }
    Ok(LockOutcome {
        changes,
        unchanged,
        written,
    })
}

/// One difference between the old and the new `debian` section.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    Added(String, String),
    Changed {
        name: String,
        old: DebianPackage,
        new: DebianPackage,
    },
    Removed(String, String),
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Added(n, v) => write!(f, "+ {n} {v}"),
            Change::Removed(n, v) => write!(f, "- {n} {v}"),
            Change::Changed { name, old, new } if old.version == new.version => write!(
                f,
                "~ {name} {} → {} ({}, {})",
                old.version, new.version, new.architecture, new.filename
            ),
            Change::Changed { name, old, new } => {
                write!(f, "~ {name} {} → {}", old.version, new.version)
            }
        }
    }
}

/// The differences between two `debian` sections, by name, and how many of the
/// `resolved` packages were already locked exactly as they are now.
fn diff(
    old: &BTreeMap<String, DebianPackage>,
    new: &BTreeMap<String, DebianPackage>,
    resolved: &BTreeSet<String>,
) -> (Vec<Change>, usize) {
    let mut changes = Vec::new();
    let mut unchanged = 0;
    let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for name in names {
        match (old.get(name), new.get(name)) {
            (None, Some(n)) => changes.push(Change::Added(name.clone(), n.version.clone())),
            (Some(o), None) => changes.push(Change::Removed(name.clone(), o.version.clone())),
            (Some(o), Some(n)) if o != n => changes.push(Change::Changed {
                name: name.clone(),
                old: o.clone(),
                new: n.clone(),
            }),
            (Some(_), Some(_)) if resolved.contains(name) => unchanged += 1,
            _ => {}
        }
    }
    (changes, unchanged)
}

/// Keep only the packages that `resolved` or a locked build root needs.
fn prune(lock: &mut LockFile, resolved: &BTreeSet<String>) {
    let mut keep: BTreeSet<String> = resolved.clone();
    for root in lock.build_roots.values() {
        keep.extend(root.packages.iter().cloned());
    }
    lock.debian.retain(|name, _| keep.contains(name));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(version: &str) -> DebianPackage {
        DebianPackage {
            version: version.into(),
            architecture: "amd64".into(),
            sha256: "ab".repeat(32),
            size: 1,
            filename: format!("pool/main/x/x/x_{version}_amd64.deb"),
        }
    }

    #[test]
    fn diff_and_prune() {
        let mut lock = LockFile::default();
        lock.debian.insert("old".into(), pkg("1"));
        lock.debian.insert("same".into(), pkg("2"));
        lock.debian.insert("bumped".into(), pkg("3"));
        lock.debian.insert("rooted".into(), pkg("6"));
        lock.build_roots.insert(
            "r".into(),
            buildit_lang::lockfile::LockedBuildRoot {
                requested: vec!["rooted".into()],
                packages: vec!["rooted".into()],
            },
        );
        let old = lock.debian.clone();
        let resolved: BTreeSet<String> = ["bumped", "new", "same"].map(String::from).into();
        lock.debian.insert("bumped".into(), pkg("4"));
        lock.debian.insert("new".into(), pkg("5"));

        let (changes, unchanged) = diff(&old, &lock.debian, &resolved);
        let shown: Vec<String> = changes.iter().map(|c| c.to_string()).collect();
        assert_eq!(shown, vec!["~ bumped 3 → 4", "+ new 5"]);
        assert_eq!(unchanged, 1);

        // --update: what neither the closure nor a build root needs goes.
        prune(&mut lock, &resolved);
        let (changes, _) = diff(&old, &lock.debian, &resolved);
        let shown: Vec<String> = changes.iter().map(|c| c.to_string()).collect();
        assert_eq!(shown, vec!["~ bumped 3 → 4", "+ new 5", "- old 1"]);
        assert_eq!(
            lock.debian.keys().collect::<Vec<_>>(),
            vec!["bumped", "new", "rooted", "same"]
        );

        // Same version, other file: shown as a change with the new file.
        let mut rebuilt = lock.debian.clone();
        if let Some(p) = rebuilt.get_mut("same") {
            p.sha256 = "cd".repeat(32);
        }
        let (changes, _) = diff(&lock.debian, &rebuilt, &resolved);
        assert_eq!(
            changes[0].to_string(),
            "~ same 2 → 2 (amd64, pool/main/x/x/x_2_amd64.deb)"
        );
    }
}
