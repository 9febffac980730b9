//! The recipe repository: directories ("roots") laid out as
//! `CATEGORY/NAME/NAME-VERSION.yaml` for recipes and `build-roots/NAME.yaml` for build
//! roots. Roots are searched in order: the spec's own `recipes/`, the config's
//! `recipe-paths`, then the repository shipped with buildit. The versions of a recipe
//! are those of all roots together; for one exact version the first root that has it
//! wins, so a spec can replace a shipped recipe file by its own.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use super::config::Config;
use super::recipe::{check_recipe_ref, compare_versions, RecipeId};
use super::{short, Loc, Located};
use crate::yaml::{closest, SpecError};

/// The directory of build-root definitions in a root (not a category).
pub const BUILD_ROOTS: &str = "build-roots";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repository {
    roots: Vec<PathBuf>,
}

/// A recipe file found for a reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundRecipe {
    pub id: RecipeId,
    pub path: PathBuf,
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

/// Directory entries' names (directories or files as asked), sorted; unreadable or
/// missing directories have none.
fn entries(dir: &Path, dirs: bool) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<String> = rd
        .filter_map(Result::ok)
        .filter(|e| {
            let is_dir = e.path().is_dir();
            if dirs {
                is_dir
            } else {
                !is_dir
            }
        })
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| !n.starts_with('.'))
        .collect();
    out.sort();
    out
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".into()
    } else {
        items.join(", ")
    }
}

impl Repository {
    pub fn new(roots: Vec<PathBuf>) -> Repository {
        Repository { roots }
    }

    /// The roots for a spec: `<spec>/recipes`, the config's `recipe-paths`, then the
    /// shipped repository.
    pub fn for_spec(spec_dir: &Path, config: Option<&Config>, shipped: &Path) -> Repository {
        let mut roots = vec![spec_dir.join("recipes")];
        if let Some(c) = config {
            roots.extend(c.recipe_paths.iter().map(|p| p.value.clone()));
        }
        roots.push(shipped.to_path_buf());
        Repository { roots }
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
        let set: BTreeSet<String> = self
            .roots
            .iter()
            .flat_map(|r| entries(r, true))
            .filter(|c| c != BUILD_ROOTS)
            .collect();
        set.into_iter().collect()
    }

    /// The recipe names of a category.
    pub fn names(&self, category: &str) -> Vec<String> {
        let set: BTreeSet<String> = self
            .roots
            .iter()
            .flat_map(|r| entries(&r.join(category), true))
            .collect();
        set.into_iter().collect()
    }

    /// The versions of a recipe, oldest first, each with the file of the first root
    /// that has it.
    pub fn versions(&self, category: &str, name: &str) -> Vec<(String, PathBuf)> {
        let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
        let prefix = format!("{name}-");
        for root in &self.roots {
            let dir = root.join(category).join(name);
            for f in entries(&dir, false) {
                let Some(stem) = f.strip_suffix(".yaml") else {
                    continue;
                };
                let Some(v) = stem.strip_prefix(&prefix) else {
                    continue;
                };
                if v.starts_with(|c: char| c.is_ascii_digit()) {
                    found.entry(v.to_string()).or_insert_with(|| dir.join(&f));
                }
            }
        }
        let mut v: Vec<(String, PathBuf)> = found.into_iter().collect();
        v.sort_by(|a, b| compare_versions(&a.0, &b.0));
        v
    }

    /// The recipe for `CATEGORY/NAME-VERSION`, or the newest `CATEGORY/NAME`.
    pub fn find(&self, reference: &str) -> Result<FoundRecipe, NotFound> {
        let reference = reference.trim();
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
        let categories = self.categories();
        if !categories.iter().any(|c| c == category) {
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
        let names = self.names(category);
        // Where the name ends: the whole text, or before a '-' that starts a version.
        let mut splits: Vec<(&str, Option<&str>)> = vec![(rest, None)];
        for (i, _) in rest.match_indices('-') {
            if rest[i + 1..].starts_with(|c: char| c.is_ascii_digit()) {
                splits.push((&rest[..i], Some(&rest[i + 1..])));
            }
        }
        let Some(&(name, version)) = splits.iter().find(|(n, _)| names.iter().any(|x| x == n))
        else {
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
        let versions = self.versions(category, name);
        let all: Vec<String> = versions.iter().map(|(v, _)| v.clone()).collect();
        let chosen = match version {
            None => versions.last(),
            Some(v) => versions.iter().find(|(x, _)| x == v),
        };
        match chosen {
            Some((v, path)) => Ok(FoundRecipe {
                id: RecipeId {
                    category: category.to_string(),
                    name: name.to_string(),
                    version: v.clone(),
                },
                path: path.clone(),
            }),
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
        let set: BTreeSet<String> = self
            .roots
            .iter()
            .flat_map(|r| entries(&r.join(BUILD_ROOTS), false))
            .filter_map(|f| f.strip_suffix(".yaml").map(str::to_string))
            .collect();
        set.into_iter().collect()
    }

    /// `build-roots/NAME.yaml` of the first root that has it.
    pub fn build_root_path(&self, name: &Located<String>) -> Result<PathBuf, SpecError> {
        let n = name.trim();
        let valid = !n.is_empty() && !n.contains('/') && n != "." && n != "..";
        if valid {
            for root in &self.roots {
                let p = root.join(BUILD_ROOTS).join(format!("{n}.yaml"));
                if p.is_file() {
                    return Ok(p);
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
