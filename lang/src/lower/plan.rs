//! Lowering a checked spec (`crate::model::Spec`) to derivations, with what the lock
//! file pins: build roots, Debian closures, remote patch hashes. Nothing is fetched
//! here: a missing or stale lock entry is an error that says which command fixes it.

use std::collections::{BTreeMap, BTreeSet};

use buildit_store::{LocalStore, StorePath};

use super::{lower_build, BuildSpec, Fetched, Patch};
use crate::lockfile::{LockFile, LockedPackage};
use crate::lower::debian::{lower_build_root, lower_package, DrvSet};
pub use crate::lower::planned::{Plan, PlannedImage, PlannedPackage};
use crate::model::{Dependency, Located, Package, PackageOrigin, PatchSource, RecipeId, Spec};
use crate::yaml::SpecError;

/// How the lock names a package: its directory (relative to the spec) when embedded,
/// else its recipe id.
pub fn package_key(spec: &Spec, p: &Package) -> String {
    match &p.origin {
        PackageOrigin::Embedded { dir, .. } => dir
            .strip_prefix(&spec.dir)
            .unwrap_or(dir)
            .display()
            .to_string(),
        _ => p.id.to_string(),
    }
}

/// The Debian package names among `deps`, sorted and unique.
pub fn debian_names(deps: &[Located<Dependency>]) -> Vec<String> {
    let names: BTreeSet<String> = deps
        .iter()
        .filter_map(|d| match &d.value {
            Dependency::Debian(n) => Some(n.clone()),
            Dependency::Recipe(_) => None,
        })
        .collect();
    names.into_iter().collect()
}

/// Remote patch URLs of a package, in order.
pub fn remote_patches(p: &Package) -> Vec<&Located<String>> {
    p.patches
        .iter()
        .filter(|x| matches!(x.source, PatchSource::Url(_)))
        .map(|x| &x.written)
        .collect()
}

struct Lowering<'a> {
    spec: &'a Spec,
    lock: &'a LockFile,
    lock_name: &'a str,
    store: &'a LocalStore,
    set: DrvSet,
    roots: BTreeMap<String, StorePath>,
    recipes: BTreeMap<RecipeId, StorePath>,
    in_progress: BTreeSet<RecipeId>,
    planned: Vec<PlannedPackage>,
}

impl<'a> Lowering<'a> {
    fn fix(&self) -> String {
        format!(
            "run `buildit lock {}` to update {}",
            self.spec.dir.display(),
            self.lock_name
        )
    }

    fn locked(&self, key: &str, p: &Package) -> Result<&LockedPackage, SpecError> {
        let entry = self.lock.packages.get(key).ok_or_else(|| {
            p.loc.error(
                format!("package '{key}' is not in {}", self.lock_name),
                Some(self.fix()),
            )
        })?;
        let stale = |what: &str| {
            p.loc.error(
                format!("the lock entry of package '{key}' is stale: {what} changed"),
                Some(self.fix()),
            )
        };
        if entry.recipe != p.id.to_string() {
            return Err(stale(&format!("the recipe ({} → {})", entry.recipe, p.id)));
        }
        if entry.build_requested != debian_names(&p.build_depends) {
            return Err(stale("its Debian build dependencies"));
        }
        if entry.runtime_requested != debian_names(&p.runtime_depends) {
            return Err(stale("its Debian runtime dependencies"));
        }
        for url in remote_patches(p) {
            if !entry.patches.contains_key(url.value.as_str()) {
                return Err(url.error(
                    format!(
                        "remote patch {} has no hash in {}",
                        url.value, self.lock_name
                    ),
                    Some(self.fix()),
                ));
            }
        }
        Ok(entry)
    }

    fn debian(&mut self, name: &str, p: &Package) -> Result<StorePath, SpecError> {
        let pkg = self.lock.debian.get(name).ok_or_else(|| {
            p.loc.error(
                format!("Debian package '{name}' is not in {}", self.lock_name),
                Some(self.fix()),
            )
        })?;
        lower_package(&mut self.set, name, pkg).map_err(|e| p.loc.error(e, None))
    }

    /// The `.drv` of recipe dependency `id` if it is lowered already, else its
    /// package, to lower now (it is then in progress: meeting it again is a cycle).
    fn recipe_dep(
        &mut self,
        id: &RecipeId,
        from: &Located<Dependency>,
    ) -> Result<Next<'a>, SpecError> {
        if let Some(d) = self.recipes.get(id) {
            return Ok(Next::Lowered(d.clone()));
        }
        if !self.in_progress.insert(id.clone()) {
            return Err(from.error(format!("dependency cycle through {id}"), None));
        }
        let spec = self.spec;
        let p = spec
            .dependencies
            .get(id)
            .ok_or_else(|| from.error(format!("recipe {id} was not loaded"), None))?;
        Ok(Next::Lower(p))
    }

    /// Lower package `p` and the recipes it depends on, each before the packages
    /// that need it: its build root and Debian build closure, then its recipe build
    /// dependencies, its Debian runtime closure, its recipe runtime dependencies,
    /// then the package itself. The walk keeps its own stack, so a long chain of
    /// recipes cannot overflow the thread's.
    fn package(&mut self, p: &'a Package, direct: bool) -> Result<StorePath, SpecError> {
        let mut stack = vec![self.begin(p, direct, None)?];
        loop {
            let top = stack.last_mut().expect("a package being lowered");
            let p = top.p;
            let deps = match top.stage {
                Stage::Build => &p.build_depends,
                Stage::Runtime => &p.runtime_depends,
            };
            if let Some(dep) = deps.get(top.next) {
                top.next += 1;
                let Dependency::Recipe(id) = &dep.value else {
                    continue;
                };
                match self.recipe_dep(id, dep)? {
                    Next::Lowered(drv) => top.inputs().push(drv),
                    Next::Lower(q) => {
                        let frame = self.begin(q, false, Some(id.clone()))?;
                        stack.push(frame);
                    }
                }
                continue;
            }
            if top.stage == Stage::Build {
                for name in &top.entry.runtime_closure {
                    let drv = self.debian(name, p)?;
                    top.runtime.push(drv);
                }
                top.stage = Stage::Runtime;
                top.next = 0;
                continue;
            }
            let done = stack.pop().expect("the top frame");
            let as_dependency = done.as_dependency.clone();
            let drv = self.finish(done)?;
            if let Some(id) = as_dependency {
                self.in_progress.remove(&id);
                self.recipes.insert(id, drv.clone());
            }
            match stack.last_mut() {
                Some(parent) => parent.inputs().push(drv),
                None => return Ok(drv),
            }
        }
    }

    /// Start lowering `p`: its lock entry, its build root and Debian build closure.
    fn begin(
        &mut self,
        p: &'a Package,
        direct: bool,
        as_dependency: Option<RecipeId>,
    ) -> Result<Frame<'a>, SpecError> {
        let key = package_key(self.spec, p);
        let entry = self.locked(&key, p)?.clone();
        // The build root first, then build dependencies, in a stable order.
        let root_name = p.build_root.value.clone();
        let root_drv = match self.roots.get(&root_name) {
            Some(d) => d.clone(),
            None => {
                let def = &self
                    .spec
                    .build_roots
                    .get(&root_name)
                    .ok_or_else(|| {
                        p.build_root
                            .error(format!("build root '{root_name}' was not loaded"), None)
                    })?
                    .def;
                let d = lower_build_root(&mut self.set, def, self.lock, self.lock_name)?;
                self.roots.insert(root_name, d.clone());
                d
            }
        };
        let mut build_root = vec![root_drv];
        for name in &entry.build_closure {
            build_root.push(self.debian(name, p)?);
        }
        Ok(Frame {
            p,
            direct,
            as_dependency,
            key,
            entry,
            build_root,
            runtime: Vec::new(),
            stage: Stage::Build,
            next: 0,
        })
    }

    /// Lower the package of `f`, whose inputs are all lowered.
    fn finish(&mut self, f: Frame<'a>) -> Result<StorePath, SpecError> {
        let Frame {
            p,
            direct,
            key,
            entry,
            build_root,
            runtime,
            ..
        } = f;
        let patches = p
            .patches
            .iter()
            .map(|x| match &x.source {
                PatchSource::Local(path) => Patch::Local(path.clone()),
                PatchSource::Url(url) => Patch::Remote(Fetched {
                    url: url.clone(),
                    sha256: entry.patches[url.as_str()].clone(),
                }),
            })
            .collect();
        let phases = &p.recipe.phases;
        let phases: BTreeMap<String, String> = [
            ("unpack", &phases.unpack),
            ("patch", &phases.patch),
            ("configure", &phases.configure),
            ("build", &phases.build),
            ("check", &phases.check),
            ("install", &phases.install),
        ]
        .into_iter()
        .filter_map(|(n, s)| Some((n.to_string(), s.as_ref()?.value.clone())))
        .collect();
        let options: Vec<String> = p.options.iter().cloned().collect();
        let build = BuildSpec {
            name: p.id.name.clone(),
            version: p.version.value.clone(),
            sources: p
                .sources
                .iter()
                .map(|s| Fetched {
                    url: s.url.value.clone(),
                    sha256: s.sha256.value.clone(),
                })
                .collect(),
            patches,
            options: options.clone(),
            configure_flags: p.configure_flags.iter().map(|f| f.value.clone()).collect(),
            phases,
            env: p
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.value.clone()))
                .collect(),
            build_root,
            runtime,
        };
        let drv = lower_build(&mut self.set, self.store, &build)
            .map_err(|e| p.loc.error(e.to_string(), None))?;
        let out = self.set.out(&drv).cloned().expect("build has out");
        self.planned.push(PlannedPackage {
            key,
            id: p.id.clone(),
            version: p.version.value.clone(),
            options,
            drv: drv.clone(),
            out,
            direct,
        });
        Ok(drv)
    }
}

/// What lowering a recipe dependency needs.
enum Next<'a> {
    Lowered(StorePath),
    Lower(&'a Package),
}

/// Which dependencies of a package are being lowered.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Build,
    Runtime,
}

/// A package being lowered: what it is and the inputs gathered so far.
struct Frame<'a> {
    p: &'a Package,
    direct: bool,
    /// The recipe it is lowered for as a dependency.
    as_dependency: Option<RecipeId>,
    key: String,
    entry: LockedPackage,
    /// The build root's `.drv`, then the Debian build closure's, then recipe build
    /// dependencies'.
    build_root: Vec<StorePath>,
    /// The Debian runtime closure's, then recipe runtime dependencies'.
    runtime: Vec<StorePath>,
    stage: Stage,
    /// The next dependency of `stage` to look at.
    next: usize,
}

impl Frame<'_> {
    /// Where the `.drv` of a dependency of the current stage goes.
    fn inputs(&mut self) -> &mut Vec<StorePath> {
        match self.stage {
            Stage::Build => &mut self.build_root,
            Stage::Runtime => &mut self.runtime,
        }
    }
}

/// Lower every package of `spec` (and the recipes they depend on). Local patches and
/// the phase runner are added to `store`; derivations are returned, not written.
pub fn lower_spec(
    spec: &Spec,
    lock: &LockFile,
    lock_name: &str,
    store: &LocalStore,
) -> Result<Plan, SpecError> {
    let mut l = Lowering {
        spec,
        lock,
        lock_name,
        store,
        set: DrvSet::default(),
        roots: BTreeMap::new(),
        recipes: BTreeMap::new(),
        in_progress: BTreeSet::new(),
        planned: Vec::new(),
    };
    for p in spec.packages() {
        l.package(p, true)?;
    }
    let images = crate::lower::image::lower_images(&mut l.set, store, spec, &l.planned)?;
    Ok(Plan {
        set: l.set,
        packages: l.planned,
        build_roots: l.roots,
        images,
    })
}
