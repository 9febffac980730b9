//! Paths a spec names, resolved inside the directories it may read: the spec
//! directory, the directories the user's own configuration allows, and (for recipe
//! and build-root files) the recipe repositories.
//!
//! A spec is written by whoever can change a recipe, a patch or a directory above
//! it, and buildit may run as root: `sync: {src: /etc/shadow}`, a patch named
//! `../../../../etc/shadow`, or `files/shadow` where `files -> /etc` would put a
//! host file into the store and the image. The kernel's path lookup cannot tell
//! these apart from honest paths, so [`AllowedRoots::resolve`] walks the path one
//! component at a time with `lstat` and `readlink`, following each symlink itself
//! (at most [`MAX_SYMLINK_HOPS`]), and gives up as soon as the walk would leave the
//! allowed directories: nothing outside them is ever looked at, beyond the
//! directories on the way down to them. The result has no symlink in it, so the
//! caller reads exactly what was checked.

use std::ffi::OsString;
use std::fmt;
use std::path::{Component, Path, PathBuf};

/// As Linux's `MAXSYMLINKS`: a longer chain is a loop or an attack.
pub const MAX_SYMLINK_HOPS: usize = 40;

/// Directories a path may resolve into, each absolute and without symlinks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowedRoots {
    roots: Vec<PathBuf>,
}

/// Why a path was not resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResolveError {
    /// The path leads outside every allowed directory; `resolved` is where it
    /// leads (as far as it was followed, the rest joined as written).
    Outside {
        resolved: PathBuf,
    },
    /// A component does not exist; `path` is where the walk looked for it, with
    /// the rest joined as written.
    Missing {
        path: PathBuf,
    },
    /// A component that is a file is followed by more components.
    NotADirectory {
        path: PathBuf,
    },
    /// More than [`MAX_SYMLINK_HOPS`] symlinks were followed.
    TooManyLinks {
        path: PathBuf,
    },
    Io {
        path: PathBuf,
        reason: String,
    },
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::Outside { resolved } => {
                write!(f, "it resolves to {}", resolved.display())
            }
            ResolveError::Missing { path } => write!(f, "{} does not exist", path.display()),
            ResolveError::NotADirectory { path } => {
                write!(f, "{} is not a directory", path.display())
            }
            ResolveError::TooManyLinks { path } => write!(
                f,
                "more than {MAX_SYMLINK_HOPS} symlinks are followed at {}",
                path.display()
            ),
            ResolveError::Io { path, reason } => write!(f, "{}: {reason}", path.display()),
        }
    }
}

impl std::error::Error for ResolveError {}

/// One step of a path still to walk.
enum Step {
    Root,
    Parent,
    Name(OsString),
}

/// `path`'s steps, last first (the walk pops them).
fn steps_reversed(path: &Path) -> impl Iterator<Item = Step> + '_ {
    path.components()
        .filter_map(|c| match c {
            Component::RootDir | Component::Prefix(_) => Some(Step::Root),
            Component::CurDir => None,
            Component::ParentDir => Some(Step::Parent),
            Component::Normal(n) => Some(Step::Name(n.to_os_string())),
        })
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
}

/// `at` with the steps still to walk applied as text (for messages only).
fn lexical(mut at: PathBuf, pending: &[Step]) -> PathBuf {
    for s in pending.iter().rev() {
        match s {
            Step::Root => at = PathBuf::from("/"),
            Step::Parent => {
                at.pop();
            }
            Step::Name(n) => at.push(n),
        }
    }
    at
}

impl AllowedRoots {
    pub fn new() -> AllowedRoots {
        AllowedRoots::default()
    }

    /// Allow `dir` and everything below it. `dir` itself is trusted (the spec
    /// directory, a directory of the user's configuration), so its own symlinks are
    /// followed; a directory that does not exist allows nothing.
    pub fn allow(&mut self, dir: &Path) {
        if let Ok(real) = std::fs::canonicalize(dir) {
            if real.is_dir() && !self.roots.contains(&real) {
                self.roots.push(real);
            }
        }
    }

    pub fn with(mut self, dir: &Path) -> AllowedRoots {
        self.allow(dir);
        self
    }

    /// The allowed directories, absolute and without symlinks.
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// Whether `path` (absolute, without symlinks) is in an allowed directory.
    pub fn contains(&self, path: &Path) -> bool {
        self.roots.iter().any(|r| path.starts_with(r))
    }

    /// Whether `path` is an allowed directory's ancestor: the walk passes there on
    /// its way down to it (after `..` or an absolute symlink).
    fn leads_to_a_root(&self, path: &Path) -> bool {
        self.roots.iter().any(|r| r.starts_with(path))
    }

    /// Resolve `path` (relative to `base`, or absolute) to the file or directory it
    /// names, following every symlink on the way, and require the result inside an
    /// allowed directory. `base` is a directory the caller trusts (its own symlinks
    /// are followed) and must itself be inside one.
    ///
    /// The walk never steps into anything outside the allowed directories except
    /// their own ancestors, so a path that leaves them is refused without the file
    /// it points at being touched.
    pub fn resolve(&self, base: &Path, path: &Path) -> Result<PathBuf, ResolveError> {
        let base = std::fs::canonicalize(base).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ResolveError::Missing {
                path: base.to_path_buf(),
            },
            _ => ResolveError::Io {
                path: base.to_path_buf(),
                reason: e.to_string(),
            },
        })?;
        self.resolve_from_canonical(base, path)
    }

    /// [`Self::resolve`] from a `base` that is already absolute and without symlinks
    /// (what `std::fs::canonicalize` or [`Self::resolve`] returned), so it is not
    /// canonicalized again: for a caller that resolves many paths from one directory.
    pub fn resolve_from_canonical(
        &self,
        base: PathBuf,
        path: &Path,
    ) -> Result<PathBuf, ResolveError> {
        let mut current = base;
        if !self.contains(&current) {
            return Err(ResolveError::Outside {
                resolved: lexical(current, &steps_reversed(path).collect::<Vec<_>>()),
            });
        }
        let mut pending: Vec<Step> = steps_reversed(path).collect();
        let mut hops = 0;
        while let Some(step) = pending.pop() {
            let name = match step {
                Step::Root => {
                    current = PathBuf::from("/");
                    continue;
                }
                Step::Parent => {
                    // `current` has no symlink in it, so its parent is what `..` is.
                    current.pop();
                    continue;
                }
                Step::Name(n) => n,
            };
            let next = current.join(&name);
            if !self.contains(&next) && !self.leads_to_a_root(&next) {
                return Err(ResolveError::Outside {
                    resolved: lexical(next, &pending),
                });
            }
            let meta = match std::fs::symlink_metadata(&next) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let would_be = lexical(next, &pending);
                    return Err(if self.contains(&would_be) {
                        ResolveError::Missing { path: would_be }
                    } else {
                        ResolveError::Outside { resolved: would_be }
                    });
                }
                Err(e) => {
                    return Err(ResolveError::Io {
                        path: next,
                        reason: e.to_string(),
                    })
                }
            };
            if meta.file_type().is_symlink() {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(ResolveError::TooManyLinks { path: next });
                }
                let target = std::fs::read_link(&next).map_err(|e| ResolveError::Io {
                    path: next.clone(),
                    reason: e.to_string(),
                })?;
                // The link's target is walked from the link's directory, which is
                // still `current`.
                pending.extend(steps_reversed(&target));
                continue;
            }
            if !meta.is_dir() && !pending.is_empty() {
                return Err(ResolveError::NotADirectory { path: next });
            }
            current = next;
        }
        if self.contains(&current) {
            Ok(current)
        } else {
            Err(ResolveError::Outside { resolved: current })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// `top/spec` (allowed) with `files/a.conf`, `sub/b`, and `top/outside/secret`.
    fn layout() -> (tempfile::TempDir, PathBuf, AllowedRoots) {
        let t = tempfile::tempdir().unwrap();
        let top = std::fs::canonicalize(t.path()).unwrap();
        let spec = top.join("spec");
        std::fs::create_dir_all(spec.join("files")).unwrap();
        std::fs::create_dir_all(spec.join("sub")).unwrap();
        std::fs::create_dir_all(top.join("outside")).unwrap();
        std::fs::write(spec.join("files/a.conf"), "a").unwrap();
        std::fs::write(spec.join("sub/b"), "b").unwrap();
        std::fs::write(top.join("outside/secret"), "s").unwrap();
        let roots = AllowedRoots::new().with(&spec);
        (t, spec, roots)
    }

    fn outside(r: Result<PathBuf, ResolveError>) -> PathBuf {
        match r {
            Err(ResolveError::Outside { resolved }) => resolved,
            other => panic!("expected Outside, got {other:?}"),
        }
    }

    #[test]
    fn plain_paths_resolve_inside() {
        let (_t, spec, roots) = layout();
        assert_eq!(
            roots.resolve(&spec, Path::new("./files/a.conf")).unwrap(),
            spec.join("files/a.conf")
        );
        assert_eq!(
            roots
                .resolve(&spec, Path::new("sub/../files/./a.conf"))
                .unwrap(),
            spec.join("files/a.conf")
        );
        assert_eq!(roots.resolve(&spec, Path::new(".")).unwrap(), spec);
        // An absolute path into the root is fine.
        assert_eq!(
            roots.resolve(&spec, &spec.join("sub/b")).unwrap(),
            spec.join("sub/b")
        );
        // `..` out of the root and back in.
        assert_eq!(
            roots.resolve(&spec, Path::new("../spec/sub/b")).unwrap(),
            spec.join("sub/b")
        );
    }

    #[test]
    fn escapes_are_refused() {
        let (_t, spec, roots) = layout();
        let top = spec.parent().unwrap().to_path_buf();
        assert_eq!(
            outside(roots.resolve(&spec, Path::new("/etc/shadow"))),
            Path::new("/etc/shadow")
        );
        assert_eq!(
            outside(roots.resolve(&spec, Path::new("../../../../../../../../etc/shadow"))),
            Path::new("/etc/shadow")
        );
        assert_eq!(
            outside(roots.resolve(&spec, Path::new("../outside/secret"))),
            top.join("outside/secret")
        );
        assert_eq!(outside(roots.resolve(&spec, Path::new(".."))), top);
        // A directory symlinked out.
        symlink("/etc", spec.join("files/etc")).unwrap();
        assert_eq!(
            outside(roots.resolve(&spec, Path::new("files/etc/shadow"))),
            Path::new("/etc/shadow")
        );
        // A file symlinked out, relatively and absolutely.
        symlink("../../outside/secret", spec.join("files/rel")).unwrap();
        symlink(top.join("outside/secret"), spec.join("files/abs")).unwrap();
        for l in ["files/rel", "files/abs"] {
            assert_eq!(
                outside(roots.resolve(&spec, Path::new(l))),
                top.join("outside/secret"),
                "{l}"
            );
        }
        // Missing outside is "outside", not "missing": nothing is probed there.
        assert_eq!(
            outside(roots.resolve(&spec, Path::new("../outside/nothing"))),
            top.join("outside/nothing")
        );
    }

    #[test]
    fn symlinks_that_stay_inside_are_followed() {
        let (_t, spec, roots) = layout();
        symlink("../sub", spec.join("files/to-sub")).unwrap();
        symlink(spec.join("files/a.conf"), spec.join("abs-link")).unwrap();
        symlink("files/to-sub/b", spec.join("chain")).unwrap();
        assert_eq!(
            roots.resolve(&spec, Path::new("files/to-sub/b")).unwrap(),
            spec.join("sub/b")
        );
        assert_eq!(
            roots.resolve(&spec, Path::new("abs-link")).unwrap(),
            spec.join("files/a.conf")
        );
        assert_eq!(
            roots.resolve(&spec, Path::new("chain")).unwrap(),
            spec.join("sub/b")
        );
        // `..` after a symlinked directory is the target's parent, as in the kernel.
        assert_eq!(
            roots
                .resolve(&spec, Path::new("files/to-sub/../files/a.conf"))
                .unwrap(),
            spec.join("files/a.conf")
        );
    }

    #[test]
    fn other_allowed_directories() {
        let (_t, spec, roots) = layout();
        let top = spec.parent().unwrap().to_path_buf();
        let roots = roots.with(&top.join("outside"));
        assert_eq!(
            roots
                .resolve(&spec, Path::new("../outside/secret"))
                .unwrap(),
            top.join("outside/secret")
        );
        symlink("../outside", spec.join("shared")).unwrap();
        assert_eq!(
            roots.resolve(&spec, Path::new("shared/secret")).unwrap(),
            top.join("outside/secret")
        );
    }

    #[test]
    fn loops_missing_and_files_in_the_middle() {
        let (_t, spec, roots) = layout();
        symlink("loop-b", spec.join("loop-a")).unwrap();
        symlink("loop-a", spec.join("loop-b")).unwrap();
        assert!(matches!(
            roots.resolve(&spec, Path::new("loop-a")),
            Err(ResolveError::TooManyLinks { .. })
        ));
        assert_eq!(
            roots.resolve(&spec, Path::new("files/nothing/x")),
            Err(ResolveError::Missing {
                path: spec.join("files/nothing/x")
            })
        );
        assert_eq!(
            roots.resolve(&spec, Path::new("files/a.conf/x")),
            Err(ResolveError::NotADirectory {
                path: spec.join("files/a.conf")
            })
        );
        // A dangling link inside: missing where it points.
        symlink("gone", spec.join("dangling")).unwrap();
        assert_eq!(
            roots.resolve(&spec, Path::new("dangling")),
            Err(ResolveError::Missing {
                path: spec.join("gone")
            })
        );
    }

    #[test]
    fn a_base_outside_is_refused() {
        let (_t, spec, roots) = layout();
        let top = spec.parent().unwrap().to_path_buf();
        assert_eq!(
            outside(roots.resolve(&top.join("outside"), Path::new("secret"))),
            top.join("outside/secret")
        );
        assert!(AllowedRoots::new()
            .resolve(&spec, Path::new("files/a.conf"))
            .is_err());
    }
}
