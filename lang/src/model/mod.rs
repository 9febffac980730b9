//! The user's spec: `container.yaml` (steps), the `pkg.yaml` of each embedded package,
//! the recipes they are based on (found in the recipe repository), and
//! `.buildit-config.yaml`. [`load_spec`] reads and checks all of them and returns a
//! [`Spec`] in which every string is rendered, every package's recipe, options,
//! patches and dependencies are resolved, and every value that a later stage may still
//! have to complain about keeps where it was written ([`Loc`]).
//!
//! Nothing here builds, fetches or writes anything.

pub mod build_root;
pub mod config;
pub mod container;
pub mod package;
pub mod recipe;
pub mod repository;
pub mod template;
pub mod trust;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{LoaderOptions, Node, Span};

use crate::inroot::{AllowedRoots, ResolveError};
use crate::model::build_root::BuildRootDef;
use crate::yaml::{did_you_mean, SourceFile, SpecError};

pub use config::Config;
pub use container::{ImageStep, SyncStep, Var};
pub use package::{Patch, PatchSource, PkgFile, UseFlags};
pub use recipe::{DepSpec, Recipe, RecipeId, SourceSpec};
pub use repository::Repository;

/// Where a value was written: file, 1-based line and column. Cheap to clone (the file
/// is shared), so it can travel with every value a later stage may report on.
#[derive(Clone)]
pub struct Loc {
    pub file: Arc<SourceFile>,
    pub line: usize,
    pub column: usize,
}

impl Loc {
    /// An error pointing here, underlining the value written here.
    pub fn error(&self, message: impl Into<String>, help: Option<String>) -> SpecError {
        let offset = self.offset();
        let len = token_len(&self.file.text, offset);
        self.file.error_span(offset, len, message, help)
    }

    /// Byte offset in the file.
    pub fn offset(&self) -> usize {
        self.file.offset(self.line, self.column)
    }

    pub fn path(&self) -> &Path {
        &self.file.path
    }

    pub(crate) fn of(file: &Arc<SourceFile>, span: &Span) -> Loc {
        // The loader gives every node a start marker; (1, 1) only guards against a
        // node built by hand.
        let (line, column) = span
            .start()
            .map(|m| (m.line(), m.column()))
            .unwrap_or((1, 1));
        Loc {
            file: file.clone(),
            line,
            column,
        }
    }
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.file.path.display(),
            self.line,
            self.column
        )
    }
}

// The file's whole text is not worth printing in every debug dump.
impl fmt::Debug for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl PartialEq for Loc {
    fn eq(&self, other: &Self) -> bool {
        self.line == other.line && self.column == other.column && self.file.path == other.file.path
    }
}
impl Eq for Loc {}

/// How long the YAML scalar starting at `offset` is, for underlining: a quoted
/// string to its closing quote, a key to its colon, a flow-list item to its `,` or
/// `]`, anything else to the end of the line (before a comment).
fn token_len(text: &str, offset: usize) -> usize {
    let Some(rest) = text.get(offset..) else {
        return 1;
    };
    let line = rest.split('\n').next().unwrap_or("");
    if let Some(q) = line.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let mut escaped = false;
        for (i, c) in line.char_indices().skip(1) {
            if c == q && !escaped {
                return i + 1;
            }
            escaped = q == '"' && c == '\\' && !escaped;
        }
        return line.len().max(1);
    }
    let mut end = line.len();
    let before = text[..offset].trim_end_matches(' ');
    if before.ends_with(['[', ',', '{']) {
        if let Some(i) = line.find([',', ']', '}']) {
            end = end.min(i);
        }
    }
    if let Some(i) = line.find(": ") {
        end = end.min(i);
    }
    if let Some(i) = line.find(" #") {
        end = end.min(i);
    }
    let token = line[..end].trim_end();
    let token = token.strip_suffix(':').unwrap_or(token);
    token.len().max(1)
}

/// `KEY: value` entries of a mapping, in file order.
pub type Pairs = Vec<(Located<String>, Located<String>)>;

/// A value and where it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located<T> {
    pub value: T,
    pub loc: Loc,
}

impl<T> Located<T> {
    pub fn new(value: T, loc: Loc) -> Self {
        Located { value, loc }
    }

    /// An error pointing at this value.
    pub fn error(&self, message: impl Into<String>, help: Option<String>) -> SpecError {
        self.loc.error(message, help)
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Located<U> {
        Located {
            value: f(self.value),
            loc: self.loc,
        }
    }
}

impl<T> Deref for Located<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: fmt::Display> fmt::Display for Located<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

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
    /// Where recipes and build roots were looked up.
    pub repository: Repository,
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

/// Which configuration file [`load_spec_with`] uses.
#[derive(Clone, Debug)]
pub enum ConfigChoice {
    /// Look for it as [`config::find_config`] documents; the untrusted files passed
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
/// with the configuration found by [`config::find_config`].
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
        repository,
    })
}

/// Where a spec's own inputs (container.yaml, sync sources, package directories,
/// pkg.yaml, local patches) may be: the spec directory and the configuration's
/// `allowed-dirs`.
pub fn input_roots(spec_dir: &Path, config: Option<&Config>) -> AllowedRoots {
    let mut roots = AllowedRoots::new().with(spec_dir);
    for d in config.iter().flat_map(|c| &c.allowed_dirs) {
        roots.allow(&d.value);
    }
    roots
}

/// The help of an error about a path that leads outside `roots`.
pub(crate) fn outside_help(roots: &AllowedRoots) -> String {
    let dirs: Vec<String> = roots
        .roots()
        .iter()
        .map(|r| r.display().to_string())
        .collect();
    let dirs = if dirs.is_empty() {
        "(none)".to_string()
    } else {
        dirs.join(", ")
    };
    format!(
        "a spec reads only what is inside its directory, symlinks followed: here {dirs}; another directory can be allowed with `allowed-dirs:` in your own {}",
        config::FILE_NAME
    )
}

/// The error for a path written in a spec (`what`: "the sync source", ...) that
/// does not resolve inside `roots`. A missing file is the caller's to explain.
pub(crate) fn unresolved(
    written: &Located<String>,
    what: &str,
    e: &ResolveError,
    roots: &AllowedRoots,
) -> SpecError {
    match e {
        ResolveError::Outside { resolved } => written.error(
            format!(
                "{what} '{}' resolves to {}, outside the spec directory",
                short(written),
                resolved.display()
            ),
            Some(outside_help(roots)),
        ),
        other => written.error(
            format!("{what} '{}' cannot be read: {other}", short(written)),
            None,
        ),
    }
}

/// Resolves package steps and their dependency closure against the repository,
/// parsing each recipe file once.
struct Resolver<'r> {
    repo: &'r Repository,
    /// Where the spec's own files may be.
    inputs: &'r AllowedRoots,
    spec_dir: &'r Path,
    recipes: BTreeMap<PathBuf, Arc<Recipe>>,
    dependencies: BTreeMap<RecipeId, Package>,
    build_roots: BTreeMap<String, BuildRoot>,
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
    fn package_step(
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
    fn dependencies_of(&mut self, p: &Package) -> Result<(), SpecError> {
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

    fn build_root(&mut self, p: &Package) -> Result<(), SpecError> {
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

// ---------------------------------------------------------------------------------
// Reading YAML nodes with positions and friendly errors.

/// What the top level of a file must be.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum TopLevel {
    Mapping,
    Sequence,
}

/// Parse a file into nodes. Duplicate keys are errors (YAML would silently keep the
/// last one); an indentation slip gets a hint that names the lines involved.
pub(crate) fn load_yaml(file: &SourceFile, top: TopLevel) -> Result<Node, SpecError> {
    file.check_bounds()?;
    if let Some(line) = second_document(&file.text) {
        return Err(file.error_at(
            line,
            1,
            "a second YAML document starts here",
            Some(
                "a spec file holds one document: remove this '---' line or the part after it"
                    .into(),
            ),
        ));
    }
    let options = LoaderOptions::default().error_on_duplicate_keys(true);
    let options = match top {
        TopLevel::Mapping => options.toplevel_mapping(),
        TopLevel::Sequence => options.toplevel_sequence(),
    };
    marked_yaml::parse_yaml_with_options(0, &file.text, options).map_err(|e| match &e {
        marked_yaml::LoadError::ScanError(m, scan) => scan_error(file, m, &scan.to_string()),
        _ => file.load_error(e),
    })
}

/// A YAML syntax error, explained from what the lines around it look like.
fn scan_error(file: &SourceFile, m: &marked_yaml::Marker, info: &str) -> SpecError {
    // The scanner's text ends in "at byte N line L column C"; the diagnostic shows
    // the position itself.
    let info = info.split(" at byte ").next().unwrap_or(info);
    if info.contains("tab") {
        if let Some(e) = tab_error(file) {
            return e;
        }
    }
    if let Some(e) = indentation_error(file, m.line()) {
        return e;
    }
    let help = if info.contains("recursion limit") {
        // The scanner's own bound on flow nesting ([[[…).
        crate::yaml::DEPTH_HELP
    } else if info.contains("quoted scalar") {
        "a quoted value needs its closing quote (\" or ')"
    } else if info.contains("flow sequence") || info.contains("flow mapping") {
        "a list written [a, b] or a mapping written {a: b} needs its closing ] or }, and commas between the items"
    } else {
        "check the indentation: a value that continues on the next line must be indented under its key, and a new key must line up with its siblings"
    };
    file.error_at(
        m.line(),
        m.column(),
        format!("this is not valid YAML: {info}"),
        Some(help.into()),
    )
}

/// The first line indented with a tab.
fn tab_error(file: &SourceFile) -> Option<SpecError> {
    let (i, l) = file.text.lines().enumerate().find(|(_, l)| {
        let lead = &l[..l.len() - l.trim_start().len()];
        lead.contains('\t')
    })?;
    let col = l.find('\t').map_or(1, |c| c + 1);
    Some(file.error_at(
        i + 1,
        col,
        "this is not valid YAML: a tab indents this line",
        Some("YAML is indented with spaces only".into()),
    ))
}

/// Indentation of a line in spaces.
fn indent_of(l: &str) -> usize {
    l.len() - l.trim_start_matches(' ').len()
}

/// The key of a `key: value` or `key:` line (after an optional `- `), and whether a
/// value follows on the same line.
fn key_of(l: &str) -> Option<(&str, bool)> {
    let body = l.trim().trim_start_matches("- ");
    if body.starts_with(['"', '\'', '#']) {
        return None;
    }
    if let Some(k) = body.strip_suffix(':') {
        return Some((k, false));
    }
    let i = body.find(": ")?;
    let value = body[i + 2..].trim();
    Some((&body[..i], !value.is_empty() && !value.starts_with('#')))
}

/// The keys that enclose line `from` (0-based): walking up, each line less indented
/// than the last one found; (column, key) pairs, innermost first.
fn enclosing_keys<'a>(lines: &[&'a str], from: usize) -> Vec<(usize, &'a str)> {
    let mut out = Vec::new();
    let mut limit = usize::MAX;
    for l in lines[..=from].iter().rev() {
        if l.trim().is_empty() || l.trim().starts_with('#') {
            continue;
        }
        let ind = indent_of(l);
        if ind < limit {
            if let Some((k, _)) = key_of(l) {
                let dash = l.trim().len() - l.trim().trim_start_matches("- ").len();
                out.push((ind + dash + 1, k));
            }
            limit = ind;
        }
        if ind == 0 {
            break;
        }
    }
    out
}

/// The commonest YAML mistakes: a key on a line indented deeper than a line whose
/// value is complete (`key: value`), or a key right after a value that stands on its
/// own line. The scanner then reports "did not find expected key" somewhere on the
/// line; point at the line and say which columns the key could line up with.
fn indentation_error(file: &SourceFile, line: usize) -> Option<SpecError> {
    let lines: Vec<&str> = file.text.lines().collect();
    let this = *lines.get(line.checked_sub(1)?)?;
    let indent = indent_of(this);
    let content = this.trim();
    let (this_key, _) = key_of(this)?;
    let (prev_no, prev) = lines[..line - 1]
        .iter()
        .enumerate()
        .rev()
        .find(|(_, l)| !l.trim().is_empty() && !l.trim().starts_with('#'))?;
    let prev_indent = indent_of(prev);
    let message = match key_of(prev) {
        Some((_, true)) if indent > prev_indent => format!(
            "this is not valid YAML: line {line} is indented deeper than line {}, whose value is already complete",
            prev_no + 1
        ),
        None if !prev.trim().starts_with("- ") && indent >= prev_indent => format!(
            "this is not valid YAML: the key on line {line} follows the value on line {} at the same indentation",
            prev_no + 1
        ),
        _ => return None,
    };
    let columns: Vec<String> = enclosing_keys(&lines, prev_no)
        .iter()
        .filter(|(col, _)| *col <= indent)
        .map(|(col, k)| format!("column {col} (beside '{}')", short(k)))
        .collect();
    let help = if columns.is_empty() {
        "the keys of one mapping start in the same column".to_string()
    } else {
        format!(
            "the keys of one mapping start in the same column: move '{}' left to {}",
            short(this_key),
            columns.join(" or ")
        )
    };
    let offset = file.offset(line, indent + 1);
    Some(file.error_span(offset, content.len(), message, Some(help)))
}

/// The line of a `---` that follows content (the loader would ignore what follows).
fn second_document(text: &str) -> Option<usize> {
    let mut content = false;
    for (i, l) in text.lines().enumerate() {
        let is_marker = l == "---" || l.starts_with("--- ");
        if is_marker && content {
            return Some(i + 1);
        }
        let t = l.trim();
        if !is_marker && !t.is_empty() && !t.starts_with('#') {
            content = true;
        }
    }
    None
}

/// A value quoted in a message, cut if long.
pub(crate) fn short(s: &str) -> String {
    const MAX: usize = 48;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let cut: String = s.chars().take(MAX - 1).collect();
        format!("{cut}…")
    }
}

/// How a node is described in "must be X, not Y" messages.
pub(crate) fn describe(node: &Node) -> String {
    match node {
        Node::Scalar(s) if is_null(s) => "empty".into(),
        Node::Scalar(s) => format!("the value '{}'", short(s.as_str())),
        Node::Sequence(_) => "a list".into(),
        Node::Mapping(_) => "a mapping (key: value lines)".into(),
    }
}

/// `key:` with nothing after it, or `~` / `null`.
pub(crate) fn is_null(s: &MarkedScalarNode) -> bool {
    s.may_coerce() && matches!(s.as_str(), "" | "~" | "null" | "Null" | "NULL")
}

/// Where a node starts. A block mapping's own marker is not where its text starts
/// (the loader puts it after the parent's colon), so a mapping is located at its
/// first key.
pub(crate) fn node_loc(file: &Arc<SourceFile>, node: &Node) -> Loc {
    match node {
        Node::Mapping(m) => match m.iter().next() {
            Some((k, _)) => Loc::of(file, k.span()),
            None => Loc::of(file, node.span()),
        },
        _ => Loc::of(file, node.span()),
    }
}

pub(crate) fn scalar(file: &Arc<SourceFile>, s: &MarkedScalarNode) -> Located<String> {
    Located::new(s.as_str().to_string(), Loc::of(file, s.span()))
}

/// A mapping whose keys were checked against the allowed ones.
pub(crate) struct Map<'a> {
    pub file: &'a Arc<SourceFile>,
    pub node: &'a MarkedMappingNode,
    /// "pkg.yaml", "the `sync` step", ... for messages.
    pub what: String,
    /// Where "missing key" errors point: the mapping's own key, or its first key.
    pub at: Loc,
}

impl<'a> Map<'a> {
    /// `node` as a mapping with only `allowed` keys. `at` is where the mapping was
    /// named (its key); `example` shows a correct value in the "wrong type" help.
    pub fn new(
        file: &'a Arc<SourceFile>,
        node: &'a Node,
        what: impl Into<String>,
        at: Loc,
        allowed: &[&str],
        example: &str,
    ) -> Result<Map<'a>, SpecError> {
        let what = what.into();
        let Node::Mapping(m) = node else {
            return Err(node_loc(file, node).error(
                format!(
                    "{what} must be a mapping of key: value lines, not {}",
                    describe(node)
                ),
                Some(format!("for example:\n{example}")),
            ));
        };
        for (k, _) in m.iter() {
            if !allowed.contains(&k.as_str()) {
                return Err(Loc::of(file, k.span()).error(
                    format!("unknown key '{}' in {what}", short(k.as_str())),
                    Some(did_you_mean(k.as_str(), allowed)),
                ));
            }
        }
        Ok(Map {
            file,
            node: m,
            what,
            at,
        })
    }

    /// The value of `key`, `None` when absent or empty (`key:`, `~`).
    pub fn get(&self, key: &str) -> Option<&'a Node> {
        match self.node.get_node(key) {
            Some(Node::Scalar(s)) if is_null(s) => None,
            other => other,
        }
    }

    pub fn key_loc(&self, key: &str) -> Loc {
        self.node
            .iter()
            .find(|(k, _)| k.as_str() == key)
            .map(|(k, _)| Loc::of(self.file, k.span()))
            .unwrap_or_else(|| self.at.clone())
    }

    fn type_error(&self, key: &str, node: &Node, want: &str, example: &str) -> SpecError {
        node_loc(self.file, node).error(
            format!(
                "'{key}' in {} must be {want}, not {}",
                self.what,
                describe(node)
            ),
            Some(format!("for example:\n{example}")),
        )
    }

    /// A string value. (Every scalar is a string to the loader: `1` and `true` too.)
    pub fn str(&self, key: &str) -> Result<Option<Located<String>>, SpecError> {
        match self.node.get_node(key) {
            None => Ok(None),
            Some(Node::Scalar(s)) if is_null(s) => Ok(None),
            Some(Node::Scalar(s)) => Ok(Some(scalar(self.file, s))),
            Some(other) => {
                Err(self.type_error(key, other, "a single value", &format!("{key}: some text")))
            }
        }
    }

    pub fn required_str(&self, key: &str, example: &str) -> Result<Located<String>, SpecError> {
        match self.str(key)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            Some(s) => Err(s.error(
                format!("'{key}' must not be empty"),
                Some(format!("for example:\n{example}")),
            )),
            None => Err(self.missing(key, example)),
        }
    }

    pub fn missing(&self, key: &str, example: &str) -> SpecError {
        let at = match self.node.get_node(key) {
            Some(n) => node_loc(self.file, n),
            None => self.at.clone(),
        };
        at.error(
            format!("{} needs '{key}:'", self.what),
            Some(format!("for example:\n{example}")),
        )
    }

    /// `true`/`false` (also `True`, `FALSE`, ...). `yes`/`no` are refused: YAML 1.1
    /// and 1.2 read them differently.
    pub fn bool(&self, key: &str) -> Result<Option<Located<bool>>, SpecError> {
        let Some(s) = self.str(key)? else {
            return Ok(None);
        };
        let v = match s.as_str() {
            "true" | "True" | "TRUE" => true,
            "false" | "False" | "FALSE" => false,
            other => {
                return Err(s.error(
                    format!("'{key}' must be true or false, not '{}'", short(other)),
                    None,
                ))
            }
        };
        Ok(Some(s.map(|_| v)))
    }

    /// A list of strings; absent or empty → empty.
    pub fn str_list(&self, key: &str, example: &str) -> Result<Vec<Located<String>>, SpecError> {
        let Some(node) = self.get(key) else {
            return Ok(Vec::new());
        };
        let Node::Sequence(seq) = node else {
            return Err(self.type_error(key, node, "a list", example));
        };
        seq.iter()
            .map(|item| match item {
                Node::Scalar(s) if !is_null(s) => Ok(scalar(self.file, s)),
                other => Err(node_loc(self.file, other).error(
                    format!(
                        "each entry of '{key}' in {} must be a single value, not {}",
                        self.what,
                        describe(other)
                    ),
                    Some(format!("for example:\n{example}")),
                )),
            })
            .collect()
    }

    /// A free-form mapping's entries, in file order; absent → empty.
    pub fn entries(
        &self,
        key: &str,
        example: &str,
    ) -> Result<Vec<(Located<String>, &'a Node)>, SpecError> {
        let Some(node) = self.get(key) else {
            return Ok(Vec::new());
        };
        let Node::Mapping(m) = node else {
            return Err(self.type_error(key, node, "a mapping (key: value lines)", example));
        };
        Ok(m.iter().map(|(k, v)| (scalar(self.file, k), v)).collect())
    }

    /// A mapping of strings to strings, in file order.
    pub fn str_map(&self, key: &str, example: &str) -> Result<Pairs, SpecError> {
        self.entries(key, example)?
            .into_iter()
            .map(|(k, v)| match v {
                Node::Scalar(s) => Ok((k, scalar(self.file, s))),
                other => Err(node_loc(self.file, other).error(
                    format!(
                        "the value of '{}' in '{key}' must be a single value, not {}",
                        short(&k.value),
                        describe(other)
                    ),
                    Some(format!("for example:\n{example}")),
                )),
            })
            .collect()
    }

    /// A nested mapping with its own allowed keys.
    pub fn map(
        &self,
        key: &str,
        allowed: &[&str],
        example: &str,
    ) -> Result<Option<Map<'a>>, SpecError> {
        let Some(node) = self.get(key) else {
            return Ok(None);
        };
        let what = format!("'{key}'");
        Map::new(self.file, node, what, self.key_loc(key), allowed, example).map(Some)
    }
}

/// A file's top-level mapping, keys checked. An empty file is an empty mapping.
pub(crate) fn top_map<'a>(
    file: &'a Arc<SourceFile>,
    node: &'a Node,
    what: &str,
    allowed: &[&str],
    example: &str,
) -> Result<Map<'a>, SpecError> {
    let at = match node {
        Node::Mapping(m) => m
            .iter()
            .next()
            .map(|(k, _)| Loc::of(file, k.span()))
            .unwrap_or_else(|| Loc::of(file, node.span())),
        _ => Loc::of(file, node.span()),
    };
    Map::new(file, node, what, at, allowed, example)
}

/// Lowercase hex sha256, pointing at the value otherwise.
pub(crate) fn check_sha256(s: &Located<String>) -> Result<String, SpecError> {
    let v = s.trim();
    if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(v.to_ascii_lowercase())
    } else {
        let what = if v.bytes().all(|b| b.is_ascii_hexdigit()) {
            format!("{} hex digits", v.len())
        } else {
            "not hex".into()
        };
        Err(s.error(
            format!("'{}' is not a sha256 ({what})", short(v)),
            Some("a sha256 is 64 hex digits, as printed by `sha256sum FILE`".into()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> SourceFile {
        SourceFile {
            path: "t.yaml".into(),
            text: text.into(),
        }
    }

    #[test]
    fn second_documents_are_refused() {
        assert_eq!(second_document("---\na: 1\n"), None);
        assert_eq!(second_document("a: 1\n---\nb: 2\n"), Some(2));
        let e = load_yaml(&file("a: 1\n---\nb: 2\n"), TopLevel::Mapping).unwrap_err();
        assert!(e.to_string().contains("second YAML document"), "{e}");
    }

    /// 30,000 and 1,000,000 levels, block and flow: located errors, no stack
    /// overflow (this runs on a test thread's small stack).
    #[test]
    fn deep_nesting_is_a_located_error() {
        let cases = [
            (
                format!("{}x\n", "- ".repeat(30_000)),
                "t.yaml:1:129",
                "nested more than 64",
            ),
            (
                format!("{}x\n", "- ".repeat(1_000_000)),
                "t.yaml:1:129",
                "nested more than 64",
            ),
            (
                format!("{}x\n", "[".repeat(30_000)),
                "t.yaml:1:256",
                "recursion limit",
            ),
            (
                format!("{}x\n", "[".repeat(1_000_000)),
                "t.yaml:1:256",
                "recursion limit",
            ),
            (
                format!("- {}x\n", "{a: ".repeat(100)),
                "t.yaml:1:",
                "nested more than 64",
            ),
        ];
        for (text, at, says) in cases {
            let e = load_yaml(&file(&text), TopLevel::Sequence).unwrap_err();
            let SpecError::At {
                message, location, ..
            } = &e
            else {
                panic!("{e:?}")
            };
            assert!(location.starts_with(at), "{location} for {}", &text[..10]);
            assert!(message.contains(says), "{message}");
        }
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let e = load_yaml(&file("a: 1\na: 2\n"), TopLevel::Mapping).unwrap_err();
        assert!(e.to_string().contains("appears twice"), "{e}");
    }

    #[test]
    fn over_indented_line_is_explained() {
        let e = load_yaml(
            &file("top:\n    a: \"x\"\n        b: y\n"),
            TopLevel::Mapping,
        )
        .unwrap_err();
        match e {
            SpecError::At {
                message,
                location,
                help,
                ..
            } => {
                assert!(
                    message.contains("line 3 is indented deeper than line 2"),
                    "{message}"
                );
                assert_eq!(location, "t.yaml:3:9");
                assert!(help
                    .unwrap()
                    .contains("column 5 (beside 'a') or column 1 (beside 'top')"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sha256_check() {
        let f = Arc::new(file("x"));
        let loc = Loc {
            file: f,
            line: 1,
            column: 1,
        };
        let ok = Located::new("AB".repeat(32), loc.clone());
        assert_eq!(check_sha256(&ok).unwrap(), "ab".repeat(32));
        assert!(check_sha256(&Located::new("abc".into(), loc.clone())).is_err());
        assert!(check_sha256(&Located::new("g".repeat(64), loc)).is_err());
    }
}
