//! Following symlinks inside a root as if it were `/`: a build root on disk (fix-up
//! targets) or an image tree in memory. One walk, so both agree on `..`, absolute
//! targets and the hop limit.

#![forbid(unsafe_code)]

use std::fs;
use std::path::{Component, Path, PathBuf};

/// Symlinks followed before a path counts as a loop (Linux's `MAXSYMLINKS`).
pub const MAX_HOPS: usize = 40;

/// What a root holds at a path (relative to the root).
pub enum Entry {
    Missing,
    Link(PathBuf),
    Other,
}

/// Follow `path` through the links `lookup` reports; the path (relative to the
/// root) it ends at, or `None` if a component is missing or the links loop. `..`
/// at the top stays at the top.
pub fn resolve_with(path: &Path, mut lookup: impl FnMut(&Path) -> Entry) -> Option<PathBuf> {
    let mut todo: Vec<PathBuf> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(PathBuf::from(n)),
            Component::ParentDir => Some(PathBuf::from("..")),
            _ => None,
        })
        .rev()
        .collect();
    let mut cur = PathBuf::new();
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        if c.as_os_str() == ".." {
            cur.pop();
            continue;
        }
        let next = cur.join(&c);
        match lookup(&next) {
            Entry::Missing => return None,
            Entry::Link(target) => {
                hops += 1;
                if hops > MAX_HOPS {
                    return None;
                }
                if target.is_absolute() {
                    cur = PathBuf::new();
                }
                for tc in target.components().rev() {
                    match tc {
                        Component::Normal(n) => todo.push(PathBuf::from(n)),
                        Component::ParentDir => todo.push(PathBuf::from("..")),
                        _ => {}
                    }
                }
            }
            Entry::Other => cur = next,
        }
    }
    Some(cur)
}

/// Follow `path` (absolute, inside the tree at `root`) through symlinks on disk as
/// if `root` were `/`; `None` if it does not exist or loops.
pub fn resolve_in_root(root: &Path, path: &Path) -> Option<PathBuf> {
    resolve_with(path, |p| {
        let full = root.join(p);
        match fs::symlink_metadata(&full) {
            Err(_) => Entry::Missing,
            Ok(md) if md.file_type().is_symlink() => match fs::read_link(&full) {
                Ok(t) => Entry::Link(t),
                Err(_) => Entry::Missing,
            },
            Ok(_) => Entry::Other,
        }
    })
    .map(|p| root.join(p))
}
