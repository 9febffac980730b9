//! Several trees seen as one filesystem, as they would be once installed
//! together: paths resolved through symlinks across trees, never out of them.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::path::{Component, Path, PathBuf};

/// Which trees of a [`Union`] a lookup sees, and which may hold the file itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Scope {
    /// The output and the runtime trees.
    Closure,
    /// Every tree, as the build root would be installed, but the file itself must
    /// be in a provider.
    Providers,
}

/// Symlinks followed per lookup, the kernel's limit.
const MAX_SYMLINKS: u32 = 40;

/// Several trees seen as one filesystem, as they would be once installed together.
pub(super) struct Union {
    roots: Vec<PathBuf>,
    /// `roots[..closure_len]` are the output and the runtime trees; the rest are
    /// the providers, in order.
    closure_len: usize,
    cache: RefCell<HashMap<(PathBuf, Scope), Option<usize>>>,
}

/// A resolved directory: its path, and for it and each ancestor the trees in which
/// it is a real directory. Only those trees are looked into below it: following a
/// symlink on disk could lead out of its tree, so symlinks are resolved here.
#[derive(Clone)]
struct Cursor {
    dir: PathBuf,
    /// `live[i]`: the trees in which the first `i` components of `dir` are
    /// directories.
    live: Vec<Vec<usize>>,
}

impl Union {
    pub(super) fn new(roots: Vec<PathBuf>, closure_len: usize) -> Self {
        Union {
            roots,
            closure_len,
            cache: RefCell::new(HashMap::new()),
        }
    }

    /// Whether the absolute `path` names something in the output or the runtime
    /// trees.
    pub(super) fn in_closure(&self, path: &Path) -> bool {
        self.holder(path, Scope::Closure).is_some()
    }

    /// The index in `providers` of the first provider that holds `path`.
    pub(super) fn provider_of(&self, path: &Path) -> Option<usize> {
        self.holder(path, Scope::Providers)
            .map(|tree| tree - self.closure_len)
    }

    /// The first tree that `scope` accepts holding the last component of `path`
    /// (anything but a directory; a symlink counts whether or not its target
    /// exists).
    fn holder(&self, path: &Path, scope: Scope) -> Option<usize> {
        let key = (path.to_path_buf(), scope);
        if let Some(&known) = self.cache.borrow().get(&key) {
            return known;
        }
        let trees = match scope {
            Scope::Closure => (0..self.closure_len).collect(),
            Scope::Providers => (0..self.roots.len()).collect(),
        };
        let root = Cursor {
            dir: PathBuf::new(),
            live: vec![trees],
        };
        let mut pending = Vec::new();
        push_components(&mut pending, path);
        let mut budget = MAX_SYMLINKS;
        let found = self.walk(root, pending, scope, &mut budget);
        self.cache.borrow_mut().insert(key, found);
        found
    }

    fn accepts(&self, scope: Scope, tree: usize) -> bool {
        match scope {
            Scope::Closure => true,
            Scope::Providers => tree >= self.closure_len,
        }
    }

    /// Resolves `pending` (components, last first) from `at`. Where trees disagree
    /// (a directory in one, a symlink in another) every reading is tried: any
    /// holder will do for the closure, the first one counts for providers.
    fn walk(
        &self,
        mut at: Cursor,
        mut pending: Vec<OsString>,
        scope: Scope,
        budget: &mut u32,
    ) -> Option<usize> {
        let name = loop {
            // A path ending in `..`, or `/` itself, is a directory, not a file.
            let name = pending.pop()?;
            if name != ".." {
                break name;
            }
            if at.live.len() > 1 {
                at.dir.pop();
                at.live.pop();
            }
        };
        let candidate = at.dir.join(&name);
        let mut dir_in = Vec::new();
        let mut targets: Vec<PathBuf> = Vec::new();
        let mut holder = None;
        for &tree in at.live.last().expect("the root is always there") {
            let path = self.roots[tree].join(&candidate);
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                dir_in.push(tree);
                continue;
            }
            if holder.is_none() && self.accepts(scope, tree) {
                holder = Some(tree);
            }
            if meta.is_symlink() {
                if let Ok(target) = fs::read_link(&path) {
                    if !targets.contains(&target) {
                        targets.push(target);
                    }
                }
            }
        }
        if pending.is_empty() && holder.is_some() {
            return holder;
        }
        // Tree indices are in priority order, so the smallest holder wins.
        let mut best: Option<usize> = None;
        for target in targets {
            if *budget == 0 {
                break;
            }
            *budget -= 1;
            let mut next = pending.clone();
            push_components(&mut next, &target);
            let from = if target.is_absolute() {
                Cursor {
                    dir: PathBuf::new(),
                    live: vec![at.live[0].clone()],
                }
            } else {
                at.clone()
            };
            best = earliest(best, self.walk(from, next, scope, budget));
        }
        let done = best.is_some() && scope == Scope::Closure;
        if !done && !pending.is_empty() && !dir_in.is_empty() {
            at.dir.push(&name);
            at.live.push(dir_in);
            best = earliest(best, self.walk(at, pending, scope, budget));
        }
        best
    }
}

fn earliest(a: Option<usize>, b: Option<usize>) -> Option<usize> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        _ => a.or(b),
    }
}

/// Pushes the components of `path` onto a stack of pending ones, last first, so
/// that they pop in order. `/` and `.` are dropped: resolution starts at the root
/// or the current cursor anyway.
fn push_components(pending: &mut Vec<OsString>, path: &Path) {
    for c in path.components().rev() {
        match c {
            Component::Normal(n) => pending.push(n.to_os_string()),
            Component::ParentDir => pending.push(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::fixtures::{link, put};

    // --- the union of trees ---

    #[test]
    fn union_follows_symlinks_across_trees_but_not_out_of_them() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        let libs = dir.path().join("libs");
        let loops = dir.path().join("loops");
        let outside = dir.path().join("outside");
        link(&base, "lib", "usr/lib");
        link(&base, "lib64", "/usr/lib64");
        put(&libs, "usr/lib/x86_64-linux-gnu/libx.so.1.2", b"");
        link(&libs, "usr/lib/x86_64-linux-gnu/libx.so.1", "libx.so.1.2");
        // Dangling: the link is what the loader is pointed at; alternatives and
        // the like are set up later.
        link(
            &libs,
            "usr/lib/x86_64-linux-gnu/liby.so.1",
            "/etc/alternatives/y",
        );
        put(&libs, "usr/lib64/ld.so", b"");
        put(&outside, "secret/libz.so", b"");
        link(&loops, "escape", outside.to_str().unwrap());
        link(&loops, "a", "b");
        link(&loops, "b", "a");
        let union = Union::new(vec![base, libs, loops], 3);
        for (path, want) in [
            ("/lib/x86_64-linux-gnu/libx.so.1", true),
            ("/lib/x86_64-linux-gnu/liby.so.1", true),
            ("/usr/lib/../lib/x86_64-linux-gnu/libx.so.1", true),
            ("/lib64/ld.so", true),
            ("/lib/../lib64/ld.so", true),
            ("/lib/x86_64-linux-gnu/libnone.so", false),
            ("/usr/lib", false),
            ("/escape/secret/libz.so", false),
            // A loop ends the walk; the link itself is there like any other.
            ("/a/libx.so.1", false),
            ("/a", true),
        ] {
            assert_eq!(union.in_closure(Path::new(path)), want, "{path}");
        }
    }

    #[test]
    fn union_names_the_first_provider() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("out");
        let base = dir.path().join("base-files");
        let p1 = dir.path().join("p1");
        let p2 = dir.path().join("p2");
        link(&output, "abs", "/usr/lib64");
        link(&base, "lib64", "usr/lib64");
        put(&p1, "usr/lib64/libq.so", b"");
        put(&p2, "lib64/libq.so", b"");
        // base-files is a provider too: its symlink is still followed.
        let union = Union::new(vec![output, base, p2, p1], 1);
        assert_eq!(union.provider_of(Path::new("/lib64/libq.so")), Some(1));
        assert!(!union.in_closure(Path::new("/lib64/libq.so")));
        // A symlink from the closure into a provider: only providers see it there.
        assert_eq!(union.provider_of(Path::new("/abs/libq.so")), Some(2));
        assert!(!union.in_closure(Path::new("/abs/libq.so")));
    }
}
