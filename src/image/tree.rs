//! The file tree of an image, merged in memory from store paths (by reference: no
//! file is copied), so that every entry knows which package provides it. Packages
//! may share directories and identical files; the same path with different content
//! from two packages is an error naming both. Synced files (the user's own, from
//! `sync` steps) are laid over the packages and win.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum TreeError {
    #[error("/{path} is provided by both {first} and {second}, with different {what}")]
    Conflict {
        path: String,
        first: String,
        second: String,
        what: &'static str,
    },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: unsupported file type (only files, directories and symlinks go into images)", .0.display())]
    FileType(PathBuf),
    #[error("sync destination {0}: must be an absolute path without '..'")]
    BadDest(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> TreeError + '_ {
    move |source| TreeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    /// A regular file, read from `src` when the image is written.
    File {
        src: PathBuf,
        size: u64,
    },
    Symlink {
        target: PathBuf,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: Kind,
    /// Permission bits (no file type).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Index into [`ImageTree::providers`].
    pub provider: usize,
}

/// Paths relative to the image root (no leading `/`), sorted as they go into tars.
#[derive(Debug, Default, Clone)]
pub struct ImageTree {
    pub nodes: BTreeMap<PathBuf, Node>,
    /// Labels: store path names, or "sync" for the user's files.
    pub providers: Vec<String>,
}

impl ImageTree {
    pub fn new() -> ImageTree {
        ImageTree::default()
    }

    fn provider(&mut self, label: &str) -> usize {
        match self.providers.iter().position(|p| p == label) {
            Some(i) => i,
            None => {
                self.providers.push(label.to_string());
                self.providers.len() - 1
            }
        }
    }

    /// Merge the tree at `root` (a package's output) at the image root.
    pub fn add_tree(&mut self, label: &str, root: &Path) -> Result<(), TreeError> {
        let who = self.provider(label);
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let dir = root.join(&rel);
            for name in sorted_names(&dir)? {
                let rel = rel.join(&name);
                let src = root.join(&rel);
                let md = fs::symlink_metadata(&src).map_err(io_err(&src))?;
                let kind = if md.is_dir() {
                    stack.push(rel.clone());
                    Kind::Dir
                } else if md.file_type().is_symlink() {
                    Kind::Symlink {
                        target: fs::read_link(&src).map_err(io_err(&src))?,
                    }
                } else if md.is_file() {
                    Kind::File {
                        src: src.clone(),
                        size: md.len(),
                    }
                } else {
                    return Err(TreeError::FileType(src));
                };
                let node = Node {
                    kind,
                    mode: md.mode() & 0o7777,
                    uid: 0,
                    gid: 0,
                    provider: who,
                };
                self.merge(rel, node)?;
            }
        }
        Ok(())
    }

    fn merge(&mut self, rel: PathBuf, node: Node) -> Result<(), TreeError> {
        let Some(old) = self.nodes.get(&rel) else {
            self.nodes.insert(rel, node);
            return Ok(());
        };
        let conflict = |what| TreeError::Conflict {
            path: rel.display().to_string(),
            first: self.providers[old.provider].clone(),
            second: self.providers[node.provider].clone(),
            what,
        };
        match (&old.kind, &node.kind) {
            (Kind::Dir, Kind::Dir) => Ok(()),
            (Kind::Symlink { target: a }, Kind::Symlink { target: b }) if a == b => Ok(()),
            (Kind::Symlink { .. }, Kind::Symlink { .. }) => Err(conflict("symlink targets")),
            (Kind::File { src: a, size: sa }, Kind::File { src: b, size: sb }) => {
                if (old.mode & 0o111) != (node.mode & 0o111) {
                    return Err(conflict("modes"));
                }
                if sa != sb || !same_contents(a, b)? {
                    return Err(conflict("contents"));
                }
                Ok(())
            }
            _ => Err(conflict("types")),
        }
    }

    /// Lay the user's file or tree `src` at `dest` (absolute in the image), over
    /// whatever packages put there; missing parent directories are created (0755).
    /// `mode` replaces the permission bits of every file (directories keep 0755 and
    /// executables stay executable when `mode` has an x bit); `owner` sets uid/gid.
    pub fn add_sync(
        &mut self,
        src: &Path,
        dest: &str,
        mode: Option<u32>,
        owner: (u32, u32),
        recursive: bool,
    ) -> Result<(), TreeError> {
        let who = self.provider("sync");
        let dest_rel = relative(dest).ok_or_else(|| TreeError::BadDest(dest.to_string()))?;
        // Parents.
        let mut parent = PathBuf::new();
        for c in dest_rel.parent().into_iter().flat_map(|p| p.components()) {
            parent.push(c);
            self.nodes.entry(parent.clone()).or_insert(Node {
                kind: Kind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
                provider: who,
            });
        }
        let top = dest_rel.clone();
        let mut stack = vec![(src.to_path_buf(), dest_rel)];
        while let Some((from, to)) = stack.pop() {
            let md = fs::symlink_metadata(&from).map_err(io_err(&from))?;
            // Without `recursive`, a directory brings its own entries only.
            let descend = recursive || to == top;
            let kind = if md.is_dir() && !descend {
                continue;
            } else if md.is_dir() {
                for n in sorted_names(&from)? {
                    stack.push((from.join(&n), to.join(&n)));
                }
                Kind::Dir
            } else if md.file_type().is_symlink() {
                Kind::Symlink {
                    target: fs::read_link(&from).map_err(io_err(&from))?,
                }
            } else if md.is_file() {
                Kind::File {
                    src: from.clone(),
                    size: md.len(),
                }
            } else {
                return Err(TreeError::FileType(from));
            };
            let mode = match (&kind, mode) {
                (Kind::Dir, _) => 0o755,
                (Kind::Symlink { .. }, _) => 0o777,
                (Kind::File { .. }, Some(m)) => m & 0o7777,
                (Kind::File { .. }, None) => {
                    if md.mode() & 0o111 != 0 {
                        0o755
                    } else {
                        0o644
                    }
                }
            };
            // The user's file replaces a package's (a config file over the default);
            // a directory over a directory merges.
            if let Some(old) = self.nodes.get(&to) {
                if old.kind == Kind::Dir && kind == Kind::Dir {
                    continue;
                }
                if old.kind == Kind::Dir {
                    let prefix = to.clone();
                    self.nodes.retain(|p, _| !p.starts_with(&prefix));
                }
            }
            self.nodes.insert(
                to,
                Node {
                    kind,
                    mode,
                    uid: owner.0,
                    gid: owner.1,
                    provider: who,
                },
            );
        }
        Ok(())
    }

    /// Add a directory, file content or symlink made by buildit itself (the image
    /// base: merged-usr links, `/tmp`, `/etc/passwd`, …), unless present.
    pub fn add_base(&mut self, rel: &str, kind: Kind, mode: u32) {
        let who = self.provider("image base");
        let rel = PathBuf::from(rel);
        let mut parent = PathBuf::new();
        for c in rel.parent().into_iter().flat_map(|p| p.components()) {
            parent.push(c);
            self.nodes.entry(parent.clone()).or_insert(Node {
                kind: Kind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
                provider: who,
            });
        }
        self.nodes.entry(rel).or_insert(Node {
            kind,
            mode,
            uid: 0,
            gid: 0,
            provider: who,
        });
    }

    /// The entries one provider contributes, with the directories above them (so a
    /// layer made of them unpacks on its own).
    pub fn of_provider(&self, provider: usize) -> Vec<(&PathBuf, &Node)> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.provider == provider)
            .collect()
    }

    /// Follow `path` (absolute in the image) through the tree's symlinks; the node
    /// it ends at, if any.
    pub fn resolve(&self, path: &str) -> Option<(&PathBuf, &Node)> {
        let cur = crate::in_root::resolve_with(Path::new(path), |p| match self.nodes.get(p) {
            None => crate::in_root::Entry::Missing,
            Some(Node {
                kind: Kind::Symlink { target },
                ..
            }) => crate::in_root::Entry::Link(target.clone()),
            Some(_) => crate::in_root::Entry::Other,
        })?;
        self.nodes.get_key_value(&cur)
    }
}

/// `/a/b` → `a/b`; refuses `..` and relative paths.
fn relative(dest: &str) -> Option<PathBuf> {
    let p = Path::new(dest);
    if !p.is_absolute() {
        return None;
    }
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

fn same_contents(a: &Path, b: &Path) -> Result<bool, TreeError> {
    crate::io_util::same_file_contents(a, b)
        .map_err(|(path, source)| TreeError::Io { path, source })
}

/// The names in `dir`, sorted: the order entries go into tars.
fn sorted_names(dir: &Path) -> Result<Vec<std::ffi::OsString>, TreeError> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .map_err(io_err(dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(io_err(dir))?;
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &Path, rel: &str, body: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, body).unwrap();
    }

    #[test]
    fn packages_share_dirs_and_same_files_but_conflicts_name_both() {
        let t = tempfile::tempdir().unwrap();
        let (a, b, c) = (t.path().join("a"), t.path().join("b"), t.path().join("c"));
        put(&a, "usr/lib/x/libq.so", "q");
        put(&a, "etc/shared", "same");
        put(&b, "usr/lib/x/libr.so", "r");
        put(&b, "etc/shared", "same");
        put(&c, "etc/shared", "other");
        let mut tree = ImageTree::new();
        tree.add_tree("pkg-a-1", &a).unwrap();
        tree.add_tree("pkg-b-1", &b).unwrap();
        assert!(tree.nodes.contains_key(Path::new("usr/lib/x/libq.so")));
        assert!(tree.nodes.contains_key(Path::new("usr/lib/x/libr.so")));
        let e = tree.add_tree("pkg-c-1", &c).unwrap_err().to_string();
        assert_eq!(
            e,
            "/etc/shared is provided by both pkg-a-1 and pkg-c-1, with different contents"
        );
    }

    #[test]
    fn a_synced_file_replaces_a_packages_and_gets_its_mode_and_owner() {
        let t = tempfile::tempdir().unwrap();
        let (pkg, conf) = (t.path().join("pkg"), t.path().join("nginx.conf"));
        put(&pkg, "etc/nginx/nginx.conf", "default");
        fs::write(&conf, "mine").unwrap();
        let mut tree = ImageTree::new();
        tree.add_tree("nginx-1", &pkg).unwrap();
        tree.add_sync(&conf, "/etc/nginx/nginx.conf", Some(0o640), (0, 33), true)
            .unwrap();
        let n = &tree.nodes[Path::new("etc/nginx/nginx.conf")];
        assert_eq!((n.mode, n.uid, n.gid), (0o640, 0, 33));
        assert_eq!(tree.providers[n.provider], "sync");
        assert!(matches!(&n.kind, Kind::File { src, .. } if src == &conf));
        // New parents are made; `..` is refused.
        tree.add_sync(&conf, "/srv/www/conf", None, (0, 0), true)
            .unwrap();
        assert_eq!(tree.nodes[Path::new("srv/www")].kind, Kind::Dir);
        assert!(tree
            .add_sync(&conf, "/srv/../etc/x", None, (0, 0), true)
            .is_err());
        assert!(tree
            .add_sync(&conf, "relative", None, (0, 0), true)
            .is_err());
    }

    #[test]
    fn resolve_follows_links_inside_the_image() {
        let mut tree = ImageTree::new();
        tree.add_base(
            "lib64",
            Kind::Symlink {
                target: "usr/lib64".into(),
            },
            0o777,
        );
        tree.add_base(
            "usr/lib64/ld.so",
            Kind::Symlink {
                target: "/usr/lib/x/ld.so".into(),
            },
            0o777,
        );
        tree.add_base(
            "usr/lib/x/ld.so",
            Kind::File {
                src: "/dev/null".into(),
                size: 0,
            },
            0o755,
        );
        let (p, n) = tree.resolve("/lib64/ld.so").unwrap();
        assert_eq!(p, Path::new("usr/lib/x/ld.so"));
        assert_eq!(n.mode, 0o755);
        assert!(tree.resolve("/lib64/missing").is_none());
    }
}
