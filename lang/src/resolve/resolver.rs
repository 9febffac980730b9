//! From package steps to packages: each recipe found in the repository and parsed
//! once, merged with its options and pkg.yaml, and the dependency closure walked.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Repository;
use crate::inroot::{AllowedRoots, ResolveError};
use crate::model::build_root::BuildRootDef;
use crate::model::inputs::unresolved;
use crate::model::recipe::{self, DepSpec, Recipe, RecipeId};
use crate::model::{
    container, package, BuildRoot, Dependency, Package, PackageOrigin, PkgFile, UseFlags,
};
use crate::yaml::{Loc, Located, SourceFile, SpecError};

/// Resolves package steps and their dependency closure against the repository,
/// parsing each recipe file once.
pub(super) struct Resolver<'r> {
    pub(super) repo: &'r Repository,
    /// Where the spec's own files may be.
    pub(super) inputs: &'r AllowedRoots,
    pub(super) spec_dir: &'r Path,
    pub(super) recipes: BTreeMap<PathBuf, Arc<Recipe>>,
    pub(super) dependencies: BTreeMap<RecipeId, Package>,
    pub(super) build_roots: BTreeMap<String, BuildRoot>,
}

impl Resolver<'_> {
    /// The recipe file found at `path` (resolved to `real`, which is read).
    fn recipe(&mut self, path: &Path, real: &Path) -> Result<Arc<Recipe>, SpecError> {
        if let Some(r) = self.recipes.get(path) {
            return Ok(r.clone());
        }
        let r = Arc::new(Recipe::parse(Arc::new(SourceFile::read_as(
            real,
            path.to_path_buf(),
        )?))?);
        self.recipes.insert(path.to_path_buf(), r.clone());
        Ok(r)
    }

    /// The package of one `package:` step, and the key that identifies it for the
    /// duplicate check.
    pub(super) fn package_step(
        &mut self,
        step: &container::PackageStep,
    ) -> Result<(String, Package), SpecError> {
        match &step.source {
            container::PackageSource::Embedded { path, dir } => {
                let pkg_path = dir.join("pkg.yaml");
                let no_dir = || {
                    path.error(
                        format!("there is no package directory '{}'", path.value),
                        Some("an embedded package is a directory (relative to container.yaml) that holds a pkg.yaml".into()),
                    )
                };
                let real_dir = match self.inputs.resolve(self.spec_dir, Path::new(path.trim())) {
                    Ok(d) if d.is_dir() => d,
                    Ok(_)
                    | Err(ResolveError::Missing { .. } | ResolveError::NotADirectory { .. }) => {
                        return Err(no_dir())
                    }
                    Err(e) => {
                        return Err(unresolved(path, "the package directory", &e, self.inputs))
                    }
                };
                let no_pkg = || {
                    path.error(
                        format!("'{}' has no pkg.yaml", path.value),
                        Some("an embedded package directory needs a pkg.yaml with at least `base: CATEGORY/NAME-VERSION`".into()),
                    )
                };
                let pkg_real = match self.inputs.resolve(&real_dir, Path::new("pkg.yaml")) {
                    Ok(f) if f.is_file() => f,
                    Ok(_)
                    | Err(ResolveError::Missing { .. } | ResolveError::NotADirectory { .. }) => {
                        return Err(no_pkg())
                    }
                    Err(e) => {
                        return Err(unresolved(
                            &path
                                .clone()
                                .map(|p| format!("{}/pkg.yaml", p.trim_end_matches('/'))),
                            "the package file",
                            &e,
                            self.inputs,
                        ))
                    }
                };
                let pkg_file = Arc::new(SourceFile::read_as(&pkg_real, pkg_path)?);
                let pkg = PkgFile::parse(pkg_file, dir, self.inputs)?;
                let found = self.repo.find_at(&pkg.base)?;
                let recipe = self.recipe(&found.path, &found.real)?;
                let options = package::resolve_options(&recipe, &pkg.use_flags)?;
                let mut p =
                    self.build_package(step.loc.clone(), recipe, found.path, options, Some(&pkg))?;
                let key = real_dir.display().to_string();
                p.origin = PackageOrigin::Embedded {
                    dir: dir.clone(),
                    pkg: Box::new(pkg),
                };
                Ok((key, p))
            }
            container::PackageSource::Recipe {
                reference,
                use_flags,
            } => {
                let found = self.repo.find_at(reference)?;
                let recipe = self.recipe(&found.path, &found.real)?;
                let options = package::resolve_options(&recipe, use_flags)?;
                let mut p =
                    self.build_package(step.loc.clone(), recipe, found.path, options, None)?;
                p.origin = PackageOrigin::Recipe {
                    reference: reference.clone(),
                };
                Ok((found.id.to_string(), p))
            }
        }
    }

    /// Merge a recipe, its enabled options and a pkg.yaml into one package.
    fn build_package(
        &mut self,
        loc: Loc,
        recipe: Arc<Recipe>,
        recipe_path: PathBuf,
        options: BTreeSet<String>,
        pkg: Option<&PkgFile>,
    ) -> Result<Package, SpecError> {
        let enabled: Vec<&recipe::OptionDef> = recipe
            .options
            .iter()
            .filter(|o| options.contains(o.name.as_str()))
            .collect();
        let mut configure_flags = recipe.configure_flags.clone();
        let mut build: Vec<&Located<DepSpec>> = recipe.build_depends.iter().collect();
        let mut runtime: Vec<&Located<DepSpec>> = recipe.runtime_depends.iter().collect();
        let mut env: BTreeMap<String, Located<String>> = recipe
            .env
            .iter()
            .map(|(k, v)| (k.value.clone(), v.clone()))
            .collect();
        for o in &enabled {
            configure_flags.extend(o.configure_flags.iter().cloned());
            build.extend(o.build_depends.iter());
            runtime.extend(o.runtime_depends.iter());
            for (k, v) in &o.env {
                env.insert(k.value.clone(), v.clone());
            }
        }
        let mut version = recipe.version.clone();
        let mut sources = recipe.sources.clone();
        let mut patches = Vec::new();
        let (mut pkg_build, mut pkg_runtime) = (Vec::new(), Vec::new());
        if let Some(pkg) = pkg {
            configure_flags.extend(pkg.configure_flags.iter().cloned());
            pkg_build = pkg.build_depends.iter().collect();
            pkg_runtime = pkg.runtime_depends.iter().collect();
            for (k, v) in &pkg.env {
                env.insert(k.value.clone(), v.clone());
            }
            if let (Some(v), Some(s)) = (&pkg.version, &pkg.source) {
                version = v.clone();
                sources = vec![s.clone()];
            }
            patches = pkg.patches.clone();
        }
        let build_depends = self.merge_deps(&build, &pkg_build)?;
        let runtime_depends = self.merge_deps(&runtime, &pkg_runtime)?;
        Ok(Package {
            loc,
            origin: PackageOrigin::Dependency,
            id: recipe.id.clone(),
            build_root: recipe.build_root.clone(),
            recipe,
            recipe_path,
            options,
            version,
            sources,
            patches,
            configure_flags,
            build_depends,
            runtime_depends,
            env,
        })
    }

    /// Resolve dependency specs: the recipe's (and its options') first, each once, then
    /// the pkg.yaml's, which replace an entry for the same recipe name.
    fn merge_deps(
        &mut self,
        base: &[&Located<DepSpec>],
        overrides: &[&Located<DepSpec>],
    ) -> Result<Vec<Located<Dependency>>, SpecError> {
        let mut out: Vec<Located<Dependency>> = Vec::new();
        // category/name → index in `out`, to spot two versions of one recipe.
        let mut by_name: BTreeMap<String, usize> = BTreeMap::new();
        for (is_override, d) in base
            .iter()
            .map(|d| (false, d))
            .chain(overrides.iter().map(|d| (true, d)))
        {
            let dep = match &d.value {
                DepSpec::Debian(n) => Dependency::Debian(n.clone()),
                DepSpec::Recipe(r) => {
                    let found = self.repo.find_at(&Located::new(r.clone(), d.loc.clone()))?;
                    Dependency::Recipe(found.id)
                }
            };
            if out.iter().any(|o| o.value == dep) {
                continue;
            }
            if let Dependency::Recipe(id) = &dep {
                let name = format!("{}/{}", id.category, id.name);
                if let Some(&i) = by_name.get(&name) {
                    if is_override {
                        out[i] = Located::new(dep, d.loc.clone());
                        continue;
                    }
                    return Err(d.error(
                        format!("two versions of {name} are required: {} and {id}", out[i].value),
                        Some(format!(
                            "the other one is required at {}; a package depends on one version of a recipe (write CATEGORY/NAME without a version for the newest)",
                            out[i].loc
                        )),
                    ));
                }
                by_name.insert(name, out.len());
            }
            out.push(Located::new(dep, d.loc.clone()));
        }
        Ok(out)
    }

    /// Add the recipes `p` depends on (transitively, default options) to
    /// `self.dependencies`, depth first, each dependency before the recipe that
    /// needs it. The walk keeps its own stack, so a long chain of recipes cannot
    /// overflow the thread's; the recipes on it are the chain reported in a cycle.
    pub(super) fn dependencies_of(&mut self, p: &Package) -> Result<(), SpecError> {
        /// A recipe being resolved: its dependencies, the next one to look at, and
        /// the package itself with the id it is a dependency as (none for `p`).
        struct Frame {
            id: RecipeId,
            deps: Vec<Located<Dependency>>,
            next: usize,
            package: Option<(RecipeId, Package)>,
        }
        fn frame(p: &Package) -> Frame {
            Frame {
                id: p.id.clone(),
                deps: p
                    .build_depends
                    .iter()
                    .chain(p.runtime_depends.iter())
                    .cloned()
                    .collect(),
                next: 0,
                package: None,
            }
        }
        let mut stack = vec![frame(p)];
        let mut on_stack: HashSet<RecipeId> = HashSet::from([p.id.clone()]);
        while let Some(top) = stack.last_mut() {
            let Some(d) = top.deps.get(top.next).cloned() else {
                let done = stack.pop().expect("the top frame");
                on_stack.remove(&done.id);
                if let Some((id, package)) = done.package {
                    self.dependencies.insert(id, package);
                }
                continue;
            };
            top.next += 1;
            let Dependency::Recipe(id) = &d.value else {
                continue;
            };
            if on_stack.contains(id) {
                let i = stack
                    .iter()
                    .position(|f| &f.id == id)
                    .expect("on the stack");
                let cycle: Vec<String> = stack[i..]
                    .iter()
                    .map(|f| &f.id)
                    .chain(std::iter::once(id))
                    .map(|c| c.to_string())
                    .collect();
                return Err(d.error(
                    format!("dependency cycle: {}", cycle.join(" → ")),
                    Some("a recipe cannot depend on itself, directly or through others".into()),
                ));
            }
            if self.dependencies.contains_key(id) {
                continue;
            }
            let found = self.repo.find(&id.to_string()).map_err(|e| e.at(&d.loc))?;
            let path = found.path;
            let recipe = self.recipe(&path, &found.real)?;
            let options = package::resolve_options(&recipe, &UseFlags::default())?;
            let dep = self.build_package(d.loc.clone(), recipe, path, options, None)?;
            let mut f = frame(&dep);
            on_stack.insert(dep.id.clone());
            f.package = Some((id.clone(), dep));
            stack.push(f);
        }
        Ok(())
    }

    pub(super) fn build_root(&mut self, p: &Package) -> Result<(), SpecError> {
        let name = &p.build_root;
        if self.build_roots.contains_key(name.as_str()) {
            return Ok(());
        }
        let found = self.repo.build_root_path(name)?;
        let def = BuildRootDef::parse(SourceFile::read_as(&found.real, found.path.clone())?)?;
        self.build_roots.insert(
            name.value.clone(),
            BuildRoot {
                path: found.path,
                def,
            },
        );
        Ok(())
    }
}
