//! The recipe repository: directories ("roots") laid out as
//! `CATEGORY/NAME/NAME-VERSION.yaml` for recipes and `build-roots/NAME.yaml` for build
//! roots. Roots are searched in order: the spec's own `recipes/`, the config's
//! `recipe-paths`, then the repository shipped with buildit. The versions of a recipe
//! are those of all roots together; for one exact version the first root that has it
//! wins, so a spec can replace a shipped recipe file by its own.
//!
//! Every directory listed and every file found is resolved with
//! [`AllowedRoots::resolve`]: a recipe or build-root file (or a directory on the way
//! to it) that is a symlink out of the spec directory, the configuration's
//! `allowed-dirs` and `recipe-paths`, and the shipped repository is refused.
//!
//! A repository remembers what it has read: each directory is listed and resolved
//! once, and each reference is looked up once, so resolving a spec costs as much as
//! the recipes it names, however many there are or however often each is named.
//! (What changes on disk while a repository is in use is not seen.)

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::inroot::{AllowedRoots, ResolveError};
use crate::model::config::{self, Config};
use crate::model::recipe::{check_recipe_ref, compare_versions, RecipeId};
use crate::yaml::{closest, short, Loc, Located, SpecError};

/// The directory of build-root definitions in a root (not a category).
pub const BUILD_ROOTS: &str = "build-roots";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repository {
    /// As given, for messages.
    roots: Vec<PathBuf>,
    /// How each root is reached: a directory trusted as it is, and the root's path
    /// below it (the spec's `recipes/` is resolved inside the spec directory).
    reached: Vec<(PathBuf, PathBuf)>,
    /// Where recipe and build-root files may resolve.
    allowed: AllowedRoots,
    /// What has been read so far.
    memo: Memo,
}

/// An entry of a listed directory, by where it resolves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    /// A file, or an entry that leads outside (listed as a file, so that looking
    /// it up says where it leads).
    File,
    /// Missing, unreadable or a symlink loop: not listed.
    Unusable,
}

/// A directory of one root, listed: names sorted, without dot files.
type Listing = Arc<[(String, Kind)]>;

#[derive(Default)]
struct MemoData {
    /// Root → its trusted directory, canonicalized (none if that failed).
    bases: HashMap<usize, Option<PathBuf>>,
    /// (root, directory below it) → where it resolves.
    resolved: HashMap<(usize, PathBuf), Result<PathBuf, ResolveError>>,
    /// (root, directory below it) → its entries.
    listed: HashMap<(usize, PathBuf), Listing>,
    /// The categories of all roots.
    categories: Option<Arc<[String]>>,
    /// Category → the recipe names of all roots, sorted.
    names: HashMap<String, Arc<[String]>>,
    /// Reference as written (trimmed) → what [`Repository::find`] said.
    found: HashMap<String, Result<FoundRecipe, NotFound>>,
}

/// The repository's memory of its directories. It is not part of what a
/// repository is: clones start afresh, and it is left out of comparisons.
#[derive(Default)]
struct Memo(Mutex<MemoData>);

impl Memo {
    fn get(&self) -> MutexGuard<'_, MemoData> {
        // A panic while holding the lock cannot leave an entry half written.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Clone for Memo {
    fn clone(&self) -> Memo {
        Memo::default()
    }
}

impl PartialEq for Memo {
    fn eq(&self, _: &Memo) -> bool {
        true
    }
}

impl Eq for Memo {}

impl fmt::Debug for Memo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Memo")
    }
}

/// A recipe file found for a reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundRecipe {
    pub id: RecipeId,
    /// The file as found under its root (for messages and the recipe's path checks).
    pub path: PathBuf,
    /// Where it resolves: what is read.
    pub real: PathBuf,
}

/// A build-root definition found by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundBuildRoot {
    pub path: PathBuf,
    pub real: PathBuf,
}

/// Why a reference matched no recipe (with what there is instead).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotFound {
    pub message: String,
    pub help: String,
}

impl NotFound {
    /// As an error pointing at where the reference was written.
    pub fn at(self, loc: &Loc) -> SpecError {
        loc.error(self.message, Some(self.help))
    }
}

impl fmt::Display for NotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.help)
    }
}

impl std::error::Error for NotFound {}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".into()
    } else {
        items.join(", ")
    }
}

impl Repository {
    /// Roots trusted as given, each allowed to hold its own files only.
    pub fn new(roots: Vec<PathBuf>) -> Repository {
        let mut allowed = AllowedRoots::new();
        for r in &roots {
            allowed.allow(r);
        }
        Repository {
            reached: roots.iter().map(|r| (r.clone(), PathBuf::new())).collect(),
            roots,
            allowed,
            memo: Memo::default(),
        }
    }

    /// The roots for a spec: `<spec>/recipes`, the config's `recipe-paths`, then the
    /// shipped repository. Their files may resolve into any of them, the spec
    /// directory and the config's `allowed-dirs`.
    pub fn for_spec(spec_dir: &Path, config: Option<&Config>, shipped: &Path) -> Repository {
        let mut roots = vec![spec_dir.join("recipes")];
        let mut reached = vec![(spec_dir.to_path_buf(), PathBuf::from("recipes"))];
        let mut allowed = AllowedRoots::new().with(spec_dir);
        if let Some(c) = config {
            for p in &c.recipe_paths {
                roots.push(p.value.clone());
                reached.push((p.value.clone(), PathBuf::new()));
                allowed.allow(&p.value);
            }
            for d in &c.allowed_dirs {
                allowed.allow(&d.value);
            }
        }
        roots.push(shipped.to_path_buf());
        reached.push((shipped.to_path_buf(), PathBuf::new()));
        allowed.allow(shipped);
        Repository {
            roots,
            reached,
            allowed,
            memo: Memo::default(),
        }
    }

    /// Where `rel` below root `i` resolves (each `rel` resolved once).
    fn resolve(&self, i: usize, rel: &Path) -> Result<PathBuf, ResolveError> {
        let key = (i, rel.to_path_buf());
        if let Some(r) = self.memo.get().resolved.get(&key) {
            return r.clone();
        }
        let (base, below) = &self.reached[i];
        let canonical = self.memo.get().bases.get(&i).cloned();
        let canonical = canonical.unwrap_or_else(|| {
            let c = std::fs::canonicalize(base).ok();
            self.memo.get().bases.insert(i, c.clone());
            c
        });
        let r = match canonical {
            Some(c) => self.allowed.resolve_from_canonical(c, &below.join(rel)),
            // Says why, as it would have.
            None => self.allowed.resolve(base, &below.join(rel)),
        };
        self.memo.get().resolved.insert(key, r.clone());
        r
    }

    /// Directory `rel` of root `i`, listed once: each entry with where it resolves.
    fn listing(&self, i: usize, rel: &Path) -> Listing {
        let key = (i, rel.to_path_buf());
        if let Some(l) = self.memo.get().listed.get(&key) {
            return l.clone();
        }
        let listing: Listing = self.read_listing(i, rel).into();
        self.memo.get().listed.insert(key, listing.clone());
        listing
    }

    /// [`Self::listing`], read from disk: a directory that is missing, unreadable or
    /// resolves outside has no entries.
    fn read_listing(&self, i: usize, rel: &Path) -> Vec<(String, Kind)> {
        let Ok(dir) = self.resolve(i, rel) else {
            return Vec::new();
        };
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut out: Vec<(String, Kind)> = rd
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| !n.starts_with('.'))
            .map(|n| {
                // `dir` was resolved: it has no symlink left to canonicalize.
                let kind = match self
                    .allowed
                    .resolve_from_canonical(dir.clone(), Path::new(&n))
                {
                    Ok(p) if p.is_dir() => Kind::Dir,
                    Ok(_) | Err(ResolveError::Outside { .. }) => Kind::File,
                    Err(_) => Kind::Unusable,
                };
                (n, kind)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Names in directory `rel` of root `i` (subdirectories or files as asked),
    /// sorted, without dot files; a directory that is missing, unreadable or
    /// resolves outside has none, and so has an entry that does.
    fn entries(&self, i: usize, rel: &Path, dirs: bool) -> Vec<String> {
        let want = if dirs { Kind::Dir } else { Kind::File };
        self.listing(i, rel)
            .iter()
            .filter(|(_, k)| *k == want)
            .map(|(n, _)| n.clone())
            .collect()
    }

    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    fn searched(&self) -> String {
        let existing: Vec<String> = self
            .roots
            .iter()
            .filter(|r| r.is_dir())
            .map(|r| r.display().to_string())
            .collect();
        if existing.is_empty() {
            "no recipe directory exists".into()
        } else {
            format!("searched {}", existing.join(", "))
        }
    }

    /// All categories of all roots.
    pub fn categories(&self) -> Vec<String> {
        self.all_categories().to_vec()
    }

    /// [`Self::categories`], sorted, merged once.
    fn all_categories(&self) -> Arc<[String]> {
        if let Some(c) = &self.memo.get().categories {
            return c.clone();
        }
        let set: BTreeSet<String> = (0..self.roots.len())
            .flat_map(|i| self.entries(i, Path::new(""), true))
            .filter(|c| c != BUILD_ROOTS)
            .collect();
        let c: Arc<[String]> = set.into_iter().collect();
        self.memo.get().categories = Some(c.clone());
        c
    }

    /// The recipe names of a category.
    pub fn names(&self, category: &str) -> Vec<String> {
        self.all_names(category).to_vec()
    }

    /// [`Self::names`], sorted, merged once per category.
    fn all_names(&self, category: &str) -> Arc<[String]> {
        if let Some(n) = self.memo.get().names.get(category) {
            return n.clone();
        }
        let set: BTreeSet<String> = (0..self.roots.len())
            .flat_map(|i| self.entries(i, Path::new(category), true))
            .collect();
        let n: Arc<[String]> = set.into_iter().collect();
        self.memo
            .get()
            .names
            .insert(category.to_string(), n.clone());
        n
    }

    /// The versions of a recipe, oldest first, each with the file of the first root
    /// that has it.
    pub fn versions(&self, category: &str, name: &str) -> Vec<(String, PathBuf)> {
        self.versions_in_roots(category, name)
            .into_iter()
            .map(|(v, path, _)| (v, path))
            .collect()
    }

    /// [`Self::versions`] with the index of the root each file is in.
    fn versions_in_roots(&self, category: &str, name: &str) -> Vec<(String, PathBuf, usize)> {
        let mut found: BTreeMap<String, (PathBuf, usize)> = BTreeMap::new();
        let prefix = format!("{name}-");
        let rel = Path::new(category).join(name);
        for (i, root) in self.roots.iter().enumerate() {
            let dir = root.join(&rel);
            for f in self.entries(i, &rel, false) {
                let Some(stem) = f.strip_suffix(".yaml") else {
                    continue;
                };
                let Some(v) = stem.strip_prefix(&prefix) else {
                    continue;
                };
                if v.starts_with(|c: char| c.is_ascii_digit()) {
                    found
                        .entry(v.to_string())
                        .or_insert_with(|| (dir.join(&f), i));
                }
            }
        }
        let mut v: Vec<(String, PathBuf, usize)> =
            found.into_iter().map(|(v, (p, i))| (v, p, i)).collect();
        v.sort_by(|a, b| compare_versions(&a.0, &b.0));
        v
    }

    /// The error for directory `rel` when, in some root, it leads outside (it is
    /// then left out of the listings, so it would only look missing).
    fn escaped(&self, rel: &Path) -> Option<NotFound> {
        (0..self.roots.len()).find_map(|i| match self.resolve(i, rel) {
            Err(e @ ResolveError::Outside { .. }) => {
                Some(self.escape(&self.roots[i].join(rel), &e))
            }
            _ => None,
        })
    }

    /// The error for a file of the repository that does not resolve inside it.
    fn escape(&self, path: &Path, e: &ResolveError) -> NotFound {
        let roots: Vec<String> = self
            .allowed
            .roots()
            .iter()
            .map(|r| r.display().to_string())
            .collect();
        NotFound {
            message: match e {
                ResolveError::Outside { resolved } => format!(
                    "{} resolves to {}, outside the spec directory and the recipe repositories",
                    path.display(),
                    resolved.display()
                ),
                other => format!("{} cannot be read: {other}", path.display()),
            },
            help: format!(
                "recipe and build-root files are read from {}; another directory can be allowed with `allowed-dirs:` or `recipe-paths:` in your {}",
                list(&roots),
                config::FILE_NAME
            ),
        }
    }

    /// The recipe for `CATEGORY/NAME-VERSION`, or the newest `CATEGORY/NAME`.
    pub fn find(&self, reference: &str) -> Result<FoundRecipe, NotFound> {
        let reference = reference.trim();
        if let Some(r) = self.memo.get().found.get(reference) {
            return r.clone();
        }
        let r = self.look_up(reference);
        self.memo
            .get()
            .found
            .insert(reference.to_string(), r.clone());
        r
    }

    /// [`Self::find`] of a trimmed reference, not remembered.
    fn look_up(&self, reference: &str) -> Result<FoundRecipe, NotFound> {
        if let Err(msg) = check_recipe_ref(reference) {
            return Err(NotFound {
                message: msg,
                help: "e.g. www-servers/nginx-1.22.1".into(),
            });
        }
        let Some((category, rest)) = reference.split_once('/') else {
            return Err(NotFound {
                message: format!("'{}' is not a recipe name", short(reference)),
                help: "e.g. www-servers/nginx-1.22.1".into(),
            });
        };
        let categories = self.all_categories();
        if categories
            .binary_search_by(|c| c.as_str().cmp(category))
            .is_err()
        {
            if let Some(e) = self.escaped(Path::new(category)) {
                return Err(e);
            }
            let cats: Vec<&str> = categories.iter().map(String::as_str).collect();
            let help = match closest(category, &cats) {
                Some(c) => format!(
                    "did you mean '{c}/{rest}'? There is no category '{category}'; the categories are: {} ({})",
                    list(&categories),
                    self.searched()
                ),
                None => format!(
                    "there is no category '{category}'; the categories are: {} ({})",
                    list(&categories),
                    self.searched()
                ),
            };
            return Err(NotFound {
                message: format!("unknown recipe '{}'", short(reference)),
                help,
            });
        }
        let names = self.all_names(category);
        // Where the name ends: the whole text, or before a '-' that starts a version.
        let mut splits: Vec<(&str, Option<&str>)> = vec![(rest, None)];
        for (i, _) in rest.match_indices('-') {
            if rest[i + 1..].starts_with(|c: char| c.is_ascii_digit()) {
                splits.push((&rest[..i], Some(&rest[i + 1..])));
            }
        }
        let known = |n: &str| names.binary_search_by(|x| x.as_str().cmp(n)).is_ok();
        let Some(&(name, version)) = splits.iter().find(|(n, _)| known(n)) else {
            for (n, _) in &splits {
                if let Some(e) = self.escaped(&Path::new(category).join(n)) {
                    return Err(e);
                }
            }
            let guess = splits.get(1).map_or(rest, |s| s.0);
            let ns: Vec<&str> = names.iter().map(String::as_str).collect();
            let tail = splits
                .get(1)
                .and_then(|s| s.1)
                .map(|v| format!("-{v}"))
                .unwrap_or_default();
            let help = match closest(guess, &ns) {
                Some(n) => format!(
                    "did you mean '{category}/{n}{tail}'? {category} has: {}",
                    list(&names)
                ),
                None => format!("{category} has: {}", list(&names)),
            };
            return Err(NotFound {
                message: format!("unknown recipe '{}'", short(reference)),
                help,
            });
        };
        let versions = self.versions_in_roots(category, name);
        let all: Vec<String> = versions.iter().map(|(v, _, _)| v.clone()).collect();
        let chosen = match version {
            None => versions.last(),
            Some(v) => versions.iter().find(|(x, _, _)| x == v),
        };
        match chosen {
            Some((v, path, i)) => {
                let file = format!("{name}-{v}.yaml");
                let rel = Path::new(category).join(name).join(file);
                let real = self.resolve(*i, &rel).map_err(|e| self.escape(path, &e))?;
                Ok(FoundRecipe {
                    id: RecipeId {
                        category: category.to_string(),
                        name: name.to_string(),
                        version: v.clone(),
                    },
                    path: path.clone(),
                    real,
                })
            }
            None if all.is_empty() => Err(NotFound {
                message: format!("the recipe {category}/{name} has no versions"),
                help: format!(
                    "its directory holds no {name}-VERSION.yaml file ({})",
                    self.searched()
                ),
            }),
            None => Err(NotFound {
                message: format!(
                    "the recipe {category}/{name} has no version {}",
                    short(version.unwrap_or(""))
                ),
                help: format!(
                    "the versions there are: {}; write {category}/{name} for the newest",
                    all.join(", ")
                ),
            }),
        }
    }

    /// [`Self::find`] for a reference the user wrote: errors point at it.
    pub fn find_at(&self, reference: &Located<String>) -> Result<FoundRecipe, SpecError> {
        self.find(reference).map_err(|e| e.at(&reference.loc))
    }

    /// All build-root names of all roots.
    pub fn build_roots(&self) -> Vec<String> {
        let set: BTreeSet<String> = (0..self.roots.len())
            .flat_map(|i| self.entries(i, Path::new(BUILD_ROOTS), false))
            .filter_map(|f| f.strip_suffix(".yaml").map(str::to_string))
            .collect();
        set.into_iter().collect()
    }

    /// `build-roots/NAME.yaml` of the first root that has it.
    pub fn build_root_path(&self, name: &Located<String>) -> Result<FoundBuildRoot, SpecError> {
        let n = name.trim();
        let valid = !n.is_empty() && !n.contains('/') && n != "." && n != "..";
        if valid {
            for (i, root) in self.roots.iter().enumerate() {
                let rel = Path::new(BUILD_ROOTS).join(format!("{n}.yaml"));
                let path = root.join(&rel);
                match self.resolve(i, &rel) {
                    Ok(real) if real.is_file() => return Ok(FoundBuildRoot { path, real }),
                    Ok(_) | Err(ResolveError::Missing { .. }) => {}
                    Err(e) => return Err(self.escape(&path, &e).at(&name.loc)),
                }
            }
        }
        let all = self.build_roots();
        let names: Vec<&str> = all.iter().map(String::as_str).collect();
        let help = match closest(n, &names) {
            Some(c) => format!("did you mean '{c}'? The build roots are: {}", list(&all)),
            None => format!("the build roots are: {} ({})", list(&all), self.searched()),
        };
        Err(name.error(format!("unknown build root '{}'", short(n)), Some(help)))
    }
}
